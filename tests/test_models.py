"""Reference models: shapes, parameter counts, and that they learn."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse import data, models


def test_mlp_shapes_and_parameter_count():
    model = models.mlp(64, [32, 16], 10)
    assert model(torch.randn(5, 64)).shape == (5, 10)
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)  # flattens images
    assert models.count_parameters(model) == (64 * 32 + 32) + (32 * 16 + 16) + (16 * 10 + 10)
    with_dropout = models.mlp(4, [3], 2, dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) for m in with_dropout) == 1


def test_count_parameters_respects_frozen_weights():
    model = nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    assert models.count_parameters(model) == 6
    assert models.count_parameters(model, trainable_only=False) == 8


def test_small_cnn_shapes_for_digits_and_shapes():
    shapes_model = models.SmallCNN(in_channels=3, num_classes=6)
    assert shapes_model(torch.randn(2, 3, 32, 32)).shape == (2, 6)
    digits_model = models.SmallCNN(in_channels=1, num_classes=10, width=8, depth=3, image_size=8)
    assert digits_model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    conv = [m for m in shapes_model.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in conv] == [16, 32, 64] and all(m.bias is None for m in conv)


def test_small_cnn_learns_digits_quickly():
    torch.manual_seed(0)
    splits = data.digits(seed=0)
    train, test = splits.loaders(batch_size=64, seed=0)[0], splits.loaders(batch_size=256)[2]
    model = models.SmallCNN(in_channels=1, num_classes=10, width=8, image_size=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for X, y in train:
            loss = F.cross_entropy(model(X), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        correct = sum((model(X).argmax(1) == y).sum().item() for X, y in test)
    assert correct / len(splits.test) > 0.8


def test_gpt_shapes_causality_and_max_len():
    torch.manual_seed(0)
    model = models.GPT(vocab_size=20, max_len=12, d_model=16, num_heads=2, num_layers=2).eval()
    idx = torch.randint(0, 20, (3, 12))
    logits = model(idx)
    assert logits.shape == (3, 12, 20)
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 20          # change the future of position 6
    assert torch.allclose(model(changed)[:, :7], logits[:, :7], atol=1e-6)
    assert not torch.allclose(model(changed)[:, 7:], logits[:, 7:])
    assert torch.allclose(model(idx[:, :5]), logits[:, :5], atol=1e-5)   # shorter inputs work
    try:
        model(torch.zeros(1, 13, dtype=torch.long))
    except ValueError as err:
        assert "max_len=12" in str(err)
    else:
        raise AssertionError("13 positions should be refused by a model built for 12")


def test_gpt_block_equals_torch_pre_ln_encoder_layer_with_causal_mask():
    torch.manual_seed(0)
    D, H, T = 16, 4, 6
    block = models.GPTBlock(D, H)
    reference = nn.TransformerEncoderLayer(D, H, dim_feedforward=4 * D, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
    with torch.no_grad():
        reference.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
        reference.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
        for ours, theirs in [(block.attn.out, reference.self_attn.out_proj), (block.mlp[0], reference.linear1),
                             (block.mlp[2], reference.linear2), (block.ln1, reference.norm1),
                             (block.ln2, reference.norm2)]:
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
    x = torch.randn(2, T, D)
    blocked = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)     # True = may NOT attend
    assert torch.allclose(block(x), reference(x, src_mask=blocked), atol=1e-5)


def test_gpt_learns_to_copy_the_previous_token():
    torch.manual_seed(0)
    model = models.GPT(vocab_size=8, max_len=10, d_model=32, num_heads=2, num_layers=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        X = torch.randint(0, 8, (32, 10))
        y = torch.cat([X[:, :1], X[:, :-1]], dim=1)                     # target at t: the token at t - 1
        loss = F.cross_entropy(model(X).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1


def test_transformer_training_flops_is_6n_plus_attention():
    model = models.GPT(vocab_size=20, max_len=12, d_model=16, num_heads=2, num_layers=2)
    n = models.count_parameters(model) - 20 * 16 - 12 * 16                 # minus the two lookup tables
    per_layer_matmuls = 16 * 48 + 16 * 16 + 16 * 64 + 64 * 16             # qkv, out, the MLP's two
    assert n > 2 * per_layer_matmuls + 16 * 20                              # + biases, LayerNorms, head
    assert models.transformer_training_flops(model, 12) == 6 * n + 12 * 2 * 12 * 16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpt_on_cuda_equals_cpu_and_autocast_stays_close_and_learns():
    from dlcourse.config import amp_dtype

    torch.manual_seed(0)
    model = models.GPT(vocab_size=50, max_len=64, d_model=128, num_heads=4, num_layers=2).eval()
    idx = torch.randint(0, 50, (4, 64))
    with torch.no_grad():
        cpu_logits = model(idx)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False       # IEEE float32 products: differences are rounding only
    try:
        model.cuda()
        with torch.no_grad():
            fp32 = model(idx.cuda())
            with torch.autocast("cuda", dtype=amp_dtype("cuda")):
                low = model(idx.cuda())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    # float32 on the GPU adds in another order than on the CPU: ~1e-6 relative, well inside 1e-4
    assert torch.allclose(fp32.cpu(), cpu_logits, rtol=1e-4, atol=1e-4)
    # bfloat16 keeps 8 bits of mantissa (float16 11): each product rounds by up to 2^-9 relative; through two
    # blocks the logits move by about 1 % of their scale, so allow 5 % of the largest logit
    assert low.dtype == amp_dtype("cuda")
    assert (low.float() - fp32).abs().max().item() < 0.05 * max(1.0, fp32.abs().max().item())
    # and it trains under autocast with fit (GradScaler when the dtype is float16)
    from dlcourse.train import fit

    torch.manual_seed(0)
    X = torch.randint(0, 8, (512, 10))
    y = torch.cat([X[:, :1], X[:, :-1]], dim=1)                              # copy the previous token
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=32, shuffle=True)
    gpt = models.GPT(vocab_size=8, max_len=10, d_model=32, num_heads=2, num_layers=1).cuda()
    history = fit(gpt, torch.optim.AdamW(gpt.parameters(), lr=1e-2), loader, num_epochs=10, progress=False,
                  loss_fn=lambda y_hat, y: F.cross_entropy(y_hat.flatten(0, 1), y.flatten()), amp=True)
    assert history.last["train_loss"] < 0.1
