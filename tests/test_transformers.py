"""The from-scratch pieces of notebook 06 (transformers), checked against PyTorch.

Notebooks cannot be imported, so compact copies of the notebook's functions live here: scaled dot-product
attention with masks, multi-head attention, sinusoidal and rotary positions (both pairing conventions), the
pre-LN block, the small transformer with its KV cache, the FLOP count of generation, and sampling with
temperature and top-k. Keep them in step with the notebook. AdamW's parameter groups are dlcourse.train's
decay_groups (tested in test_train.py), checked here on the notebook's transformer.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.train import decay_groups, decayed_names


# --- copies of the notebook's code --------------------------------------------------------------------------

def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))   # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


def causal_mask(T_q, T_k=None, device=None):
    T_k = T_q if T_k is None else T_k
    return torch.ones(T_q, T_k, dtype=torch.bool, device=device).tril(diagonal=T_k - T_q)


def padding_mask(lengths, T):
    return (torch.arange(T, device=lengths.device) < lengths[:, None])[:, None, None, :]   # (B, 1, 1, T)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.weights = None

    def split_heads(self, x):
        B, T, D = x.shape
        return x.view(B, T, self.num_heads, D // self.num_heads).transpose(1, 2)

    def merge_heads(self, x):
        B, H, T, d = x.shape
        return x.transpose(1, 2).reshape(B, T, H * d)

    def project(self, x):
        return tuple(self.split_heads(t) for t in self.qkv(x).chunk(3, dim=-1))

    def forward(self, x, mask=None):
        q, k, v = self.project(x)
        y, weights = attention(q, k, v, mask)
        self.weights = weights.detach()
        return self.out(self.merge_heads(y))


def sinusoidal_positions(T, D):
    p = torch.arange(T, dtype=torch.float32)[:, None]
    omega = 10000 ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)
    pe = torch.zeros(T, D)
    pe[:, 0::2] = torch.sin(p * omega)
    pe[:, 1::2] = torch.cos(p * omega)
    return pe


def apply_rope(x, start=0, base=10000.0):
    T, d = x.shape[-2:]
    p = torch.arange(start, start + T, dtype=torch.float32, device=x.device)
    omega = base ** (-torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)
    angle = p[:, None] * omega
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1).flatten(-2)


def apply_rope_half(x, start=0, base=10000.0):
    T, d = x.shape[-2:]
    p = torch.arange(start, start + T, dtype=torch.float32, device=x.device)
    omega = base ** (-torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)
    angle = (p[:, None] * omega).repeat(1, 2)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    rotate_half = torch.cat([-x2, x1], dim=-1)
    return x * angle.cos().to(x.dtype) + rotate_half * angle.sin().to(x.dtype)


class SelfAttention(MultiHeadAttention):
    def __init__(self, d_model, num_heads, rope=False):
        super().__init__(d_model, num_heads)
        self.rope = rope

    def forward(self, x, mask=None, cache=None):
        q, k, v = self.project(x)
        start = cache["k"].size(2) if cache else 0
        if self.rope:
            q, k = apply_rope(q, start), apply_rope(k, start)
        if cache is not None:
            if cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        if self.training and cache is None:                       # the fused kernel while training
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y, weights = attention(q, k, v, mask)
            self.weights = weights.detach()
        return self.out(self.merge_heads(y))


class Block(nn.Module):
    def __init__(self, d_model, num_heads, rope=False):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, num_heads, rope)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x, mask=None, cache=None):
        x = x + self.attn(self.ln1(x), mask, cache)
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    def __init__(self, vocab_size, max_len, d_model=64, num_heads=4, num_layers=2, positions="learned",
                 causal=True):
        super().__init__()
        self.max_len, self.causal = max_len, causal
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model) if positions == "learned" else None
        sin_pe = sinusoidal_positions(max_len, d_model) if positions == "sinusoidal" else None
        self.register_buffer("sin_pe", sin_pe)
        self.blocks = nn.ModuleList([Block(d_model, num_heads, rope=positions == "rope")
                                     for _ in range(num_layers)])
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, idx, cache=None):
        T = idx.shape[1]
        start = cache[0]["k"].size(2) if cache and cache[0] else 0
        if start + T > self.max_len:
            raise ValueError(f"{start + T} positions, but the model was built for max_len={self.max_len}")
        x = self.tok(idx)
        positions = torch.arange(start, start + T, device=idx.device)
        if self.pos is not None:
            x = x + self.pos(positions)
        if self.sin_pe is not None:
            x = x + self.sin_pe[positions]
        mask = causal_mask(T, start + T, device=idx.device) if self.causal else None
        for i, block in enumerate(self.blocks):
            x = block(x, mask, None if cache is None else cache[i])
        return self.head(self.ln(x))


def sample_next(logits, temperature=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth_largest = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model, idx, num_new_tokens, temperature=1.0, top_k=None, use_cache=False, generator=None):
    model.eval()
    cache = [{} for _ in model.blocks] if use_cache else None
    logits = model(idx, cache)
    for step in range(num_new_tokens):
        next_id = sample_next(logits[:, -1], temperature, top_k, generator)
        idx = torch.cat([idx, next_id[:, None]], dim=1)
        if step == num_new_tokens - 1:
            break
        logits = model(next_id[:, None], cache) if use_cache else model(idx[:, -model.max_len:])
    return idx


def generation_flops(model, prompt_ids, n, use_cache):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        generate(model, prompt_ids[:, :1], n, temperature=0, use_cache=use_cache)
    by_op = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    attention_flops = by_op.pop("aten.bmm", 0)
    assert set(by_op) <= {"aten.addmm", "aten.mm"}, by_op
    return attention_flops, sum(by_op.values())


@torch.no_grad()
def logits_with_cache(model, idx, prompt_len):
    model.eval()
    cache = [{} for _ in model.blocks]
    steps = [model(idx[:, :prompt_len], cache)] + [model(idx[:, t:t + 1], cache)
                                                   for t in range(prompt_len, idx.shape[1])]
    return torch.cat(steps, dim=1)


@torch.no_grad()
def check_same_generation(model, plain, cached):
    if torch.equal(plain, cached):
        return
    t = int((plain != cached).nonzero()[0, 1])
    logits = model.eval()(plain[:, :t])[0, -1]
    gap = (logits[plain[0, t]] - logits[cached[0, t]]).abs().item()
    assert gap <= 2e-4 * (1 + logits.abs().max().item()), "the KV cache changed the greedy generation"


# --- attention ----------------------------------------------------------------------------------------------

def _qkv(B=2, H=3, T_q=5, T_k=5, d=8, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T_q, d, generator=gen, dtype=dtype),
            torch.randn(B, H, T_k, d, generator=gen, dtype=dtype),
            torch.randn(B, H, T_k, d + 2, generator=gen, dtype=dtype))


@pytest.mark.parametrize("which", ["none", "padding", "causal", "both"])
def test_attention_matches_sdpa(which):
    q, k, v = _qkv()
    pad = padding_mask(torch.tensor([2, 5]), 5)
    mask = {"none": None, "padding": pad, "causal": causal_mask(5), "both": pad & causal_mask(5)}[which]
    out, weights = attention(q, k, v, mask)
    assert out.shape == (2, 3, 5, 10) and weights.shape == (2, 3, 5, 5)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(2, 3, 5))
    if mask is not None:
        assert (weights[~mask.expand_as(weights)] == 0).all()


def test_attention_is_causal_and_cross_attention_masks():
    q, k, v = _qkv()
    assert torch.allclose(attention(q, k, v, causal_mask(5))[0],
                          F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5)
    # 2 new queries after 3 earlier keys: the last two rows of the square mask
    assert torch.equal(causal_mask(2, 5), causal_mask(5)[3:])
    q2, k2, v2 = _qkv(T_q=2, T_k=5)
    mask = causal_mask(2, 5)
    assert torch.allclose(attention(q2, k2, v2, mask)[0],
                          F.scaled_dot_product_attention(q2, k2, v2, attn_mask=mask), atol=1e-5)


def test_attention_float64_and_gradients_match_sdpa():
    q, k, v = (t.requires_grad_() for t in _qkv(dtype=torch.float64))
    q_ref, k_ref, v_ref = (t.detach().clone().requires_grad_() for t in (q, k, v))
    mask = causal_mask(5)
    out = attention(q, k, v, mask)[0]
    ref = F.scaled_dot_product_attention(q_ref, k_ref, v_ref, attn_mask=mask)
    assert torch.allclose(out, ref, atol=1e-12)
    (out * torch.arange(10.0, dtype=torch.float64)).sum().backward()
    (ref * torch.arange(10.0, dtype=torch.float64)).sum().backward()
    for ours, theirs in ((q, q_ref), (k, k_ref), (v, v_ref)):
        assert torch.allclose(ours.grad, theirs.grad, atol=1e-10)


def test_padding_mask_shape_and_values():
    mask = padding_mask(torch.tensor([1, 3]), 4)
    assert mask.shape == (2, 1, 1, 4) and mask.dtype == torch.bool
    assert mask[:, 0, 0].tolist() == [[True, False, False, False], [True, True, True, False]]


def test_a_fully_masked_row_is_nan_in_ours_and_zero_in_torchs_on_the_cpu():
    # notebook 06 says so, measured: the hand-written softmax computes 0/0, PyTorch's CPU kernel returns zeros
    q, k, v = _qkv(B=1, H=2, T_q=3, T_k=3, d=4)
    allowed = torch.tensor([[False, False, False], [True, True, False], [True, True, True]])
    ours = attention(q, k, v, allowed)[0]
    torchs = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    assert ours[..., 0, :].isnan().all()
    assert (torchs[..., 0, :] == 0).all()
    assert torch.allclose(ours[..., 1:, :], torchs[..., 1:, :], atol=1e-6)


# --- multi-head attention -----------------------------------------------------------------------------------

def _copy_into_reference(ours: MultiHeadAttention, reference: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        reference.in_proj_weight.copy_(ours.qkv.weight)
        reference.in_proj_bias.copy_(ours.qkv.bias)
        reference.out_proj.weight.copy_(ours.out.weight)
        reference.out_proj.bias.copy_(ours.out.bias)


@pytest.mark.parametrize("masked", [False, True])
def test_multi_head_attention_matches_nn_multihead_attention(masked):
    torch.manual_seed(0)
    B, T, D, H = 3, 6, 24, 4
    ours, reference = MultiHeadAttention(D, H), nn.MultiheadAttention(D, H, batch_first=True)
    _copy_into_reference(ours, reference)
    x = torch.randn(B, T, D)
    lengths = torch.tensor([6, 2, 4])
    if masked:
        y = ours(x, padding_mask(lengths, T) & causal_mask(T))
        y_ref, w_ref = reference(x, x, x, key_padding_mask=~padding_mask(lengths, T)[:, 0, 0],
                                 attn_mask=~causal_mask(T))
    else:
        y = ours(x)
        y_ref, w_ref = reference(x, x, x)
    assert torch.allclose(y, y_ref, atol=1e-5)
    assert torch.allclose(ours.weights.mean(dim=1), w_ref, atol=1e-5)
    y_ref_heads = reference(x, x, x, average_attn_weights=False)[1]
    if not masked:
        assert torch.allclose(ours.weights, y_ref_heads, atol=1e-5)


def test_attention_without_positions_is_permutation_equivariant():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4)
    x = torch.randn(2, 7, 16)
    perm = torch.randperm(7)
    with torch.no_grad():
        assert torch.allclose(mha(x[:, perm]), mha(x)[:, perm], atol=1e-6)


# --- positions ----------------------------------------------------------------------------------------------

def test_sinusoidal_positions_formula_and_relative_property():
    pe = sinusoidal_positions(50, 16)
    def entry(p, j):                               # the textbook formula, one number at a time
        angle = p / 10000 ** (2 * (j // 2) / 16)
        return math.sin(angle) if j % 2 == 0 else math.cos(angle)
    expected = torch.tensor([[entry(p, j) for j in range(16)] for p in range(50)])
    assert torch.allclose(pe, expected, atol=1e-5)
    dots = torch.stack([pe[p] @ pe[p + 3] for p in range(40)])
    assert torch.allclose(dots, dots[0].expand(40), atol=1e-4)


def _rope_complex(x, start=0, base=10000.0):
    T, d = x.shape[-2:]
    p = torch.arange(start, start + T, dtype=torch.float64)
    omega = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rotation = torch.polar(torch.ones(T, d // 2, dtype=torch.float64), p[:, None] * omega)
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


@pytest.mark.parametrize("start", [0, 5, 100])
def test_rope_matches_complex_rotation(start):
    x = torch.randn(2, 3, 9, 12, generator=torch.Generator().manual_seed(start))
    y = apply_rope(x, start)
    assert y.shape == x.shape
    assert torch.allclose(y, _rope_complex(x, start), atol=1e-4)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-4)
    assert torch.allclose(apply_rope(x, start)[..., 1:, :], apply_rope(x[..., 1:, :], start + 1), atol=1e-5)


def test_rope_scores_depend_on_relative_position_only():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 16, generator=gen), torch.randn(1, 16, generator=gen)
    def score(m, n):
        return (apply_rope(q, m) @ apply_rope(k, n).T).item()
    assert score(2, 7) == pytest.approx(score(40, 45), abs=1e-4)
    assert score(9, 4) == pytest.approx(score(10, 5), abs=1e-4)
    assert score(0, 0) == pytest.approx((q @ k.T).item(), abs=1e-5)


def test_rope_half_matches_hugging_face_llama():
    pytest.importorskip("transformers")
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    assert config.rope_parameters["rope_theta"] == 10000.0
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 2, 4, 10, 16, generator=gen)                 # (B, H, T, d) each
    cos, sin = LlamaRotaryEmbedding(config)(q, torch.arange(3, 13)[None].expand(2, -1))
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)
    assert torch.allclose(apply_rope_half(q, start=3), q_hf, atol=1e-5)
    assert torch.allclose(apply_rope_half(k, start=3), k_hf, atol=1e-5)


def test_the_two_rope_conventions_agree_only_after_permuting_the_features():
    gen = torch.Generator().manual_seed(0)
    d = 16
    q, k = torch.randn(2, 12, d, generator=gen)
    to_halves = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])
    assert torch.allclose(apply_rope_half(q[:, to_halves], 4), apply_rope(q, 4)[:, to_halves], atol=1e-5)
    scores = apply_rope(q) @ apply_rope(k).T
    permuted = apply_rope_half(q[:, to_halves]) @ apply_rope_half(k[:, to_halves]).T
    mixed = apply_rope_half(q) @ apply_rope_half(k).T
    assert torch.allclose(permuted, scores, atol=1e-4)
    assert (mixed - scores).abs().max() > 0.1 * scores.abs().max()


# --- the block and the model --------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_pre_ln_block_matches_transformer_encoder_layer(causal):
    torch.manual_seed(0)
    D, H, T = 32, 4, 7
    block = Block(D, H)
    reference = nn.TransformerEncoderLayer(D, H, dim_feedforward=4 * D, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
    pairs = {"attn.qkv": "self_attn.in_proj", "attn.out": "self_attn.out_proj", "mlp.0": "linear1",
             "mlp.2": "linear2", "ln1": "norm1", "ln2": "norm2"}
    with torch.no_grad():
        for ours, theirs in pairs.items():
            for suffix in ("weight", "bias"):
                name = f"{theirs}_{suffix}" if theirs == "self_attn.in_proj" else f"{theirs}.{suffix}"
                reference.get_parameter(name).copy_(block.get_parameter(f"{ours}.{suffix}"))
    x = torch.randn(2, T, D)
    mask = causal_mask(T) if causal else None
    y_ref = reference(x, src_mask=None if mask is None else ~mask)
    assert torch.allclose(block(x, mask), y_ref, atol=1e-5)


@pytest.mark.parametrize("positions", ["none", "sinusoidal", "learned", "rope"])
def test_kv_cache_gives_the_same_logits_and_tokens(positions):
    torch.manual_seed(0)
    model = Transformer(vocab_size=11, max_len=24, d_model=32, num_heads=4, num_layers=2, positions=positions)
    model.eval()
    idx = torch.randint(0, 11, (2, 20))
    with torch.no_grad():
        full = model(idx)                                              # (2, 20, 11) in one pass
        cache = [{} for _ in model.blocks]
        pieces = [model(idx[:, :6], cache)]                            # a prompt of 6, then one at a time
        pieces += [model(idx[:, t:t + 1], cache) for t in range(6, 20)]
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)
    assert torch.allclose(logits_with_cache(model, idx, 6), full, atol=1e-5)
    assert cache[0]["k"].shape == (2, 4, 20, 8)
    plain = generate(model, idx[:1, :4], 18, temperature=0)
    check_same_generation(model, plain, generate(model, idx[:1, :4], 18, temperature=0, use_cache=True))


@pytest.mark.parametrize("causal", [False, True])
def test_training_uses_the_fused_kernel_and_computes_what_eval_computes(causal):
    torch.manual_seed(0)
    model = Transformer(vocab_size=13, max_len=9, d_model=32, num_heads=4, num_layers=2, positions="rope",
                        causal=causal)
    idx = torch.randint(0, 13, (3, 9))
    attn = model.blocks[0].attn
    model.train()
    attn.weights = None
    y_train = model(idx)                                           # no dropout: train and eval agree
    assert attn.weights is None                                    # the fused kernel keeps no weights
    with torch.no_grad():
        y_eval = model.eval()(idx)
    assert attn.weights.shape == (3, 4, 9, 9)
    assert torch.allclose(y_train, y_eval, atol=1e-5)


def test_flops_rule_counts_matrix_weights_and_attention():
    from dlcourse.models import count_parameters, transformer_training_flops

    model = Transformer(vocab_size=13, max_len=16, d_model=32, num_heads=4, num_layers=3, positions="rope")
    n = count_parameters(model) - 13 * 32                          # everything but the token embedding
    assert transformer_training_flops(model, 16) == 6 * n + 12 * 3 * 16 * 32
    learned = Transformer(vocab_size=13, max_len=16, d_model=32, num_heads=4, num_layers=3, positions="learned")
    assert transformer_training_flops(learned, 16) == transformer_training_flops(model, 16)   # lookups are free


def test_decay_groups_decay_only_the_linear_matrices():
    model = Transformer(vocab_size=10, max_len=8, d_model=16, num_heads=2, num_layers=2, positions="learned")
    groups = decay_groups(model, weight_decay=0.1)
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    decayed = decayed_names(model, optimizer)
    assert decayed == {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert not decayed & {"tok.weight", "pos.weight", "ln.weight", "head.bias", "blocks.0.ln1.weight"}
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in model.parameters())
    # the old mistake, all parameters in one decayed group, is caught
    assert decayed_names(model, torch.optim.AdamW(model.parameters(), weight_decay=0.1)) != decayed


@pytest.mark.parametrize("num_layers", [1, 2])
def test_generation_flops_grow_like_n3_and_n2_without_a_cache_n2_and_n_with_one(num_layers):
    torch.manual_seed(0)
    model = Transformer(vocab_size=11, max_len=32, d_model=16, num_heads=2, num_layers=num_layers,
                        positions="rope")
    prompt = torch.tensor([[3]])
    linear_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    for n in (5, 12, 32):
        attention_plain, rest_plain = generation_flops(model, prompt, n, use_cache=False)
        attention_cached, rest_cached = generation_flops(model, prompt, n, use_cache=True)
        assert attention_plain == 4 * num_layers * 16 * sum(t * t for t in range(1, n + 1))     # ~ n^3 / 3
        assert rest_plain == 2 * linear_weights * sum(range(1, n + 1))                         # ~ n^2 / 2
        assert attention_cached == 4 * num_layers * 16 * sum(range(1, n + 1))                  # ~ n^2 / 2
        assert rest_cached == 2 * linear_weights * n


class _Scripted(nn.Module):
    """A stand-in model whose last-position logits are fixed: tokens 1 and 2 lead, ``gap`` apart."""

    def __init__(self, gap):
        super().__init__()
        self.gap = gap

    def forward(self, idx):
        logits = torch.zeros(idx.shape[0], idx.shape[1], 5)
        logits[..., 1], logits[..., 2] = 3.0, 3.0 - self.gap
        return logits


def test_generations_may_part_only_at_a_near_tie():
    plain = torch.tensor([[4, 4, 1, 1]])
    check_same_generation(_Scripted(0.5), plain, plain.clone())              # identical: fine
    check_same_generation(_Scripted(1e-6), plain, torch.tensor([[4, 4, 2, 0]]))   # part at a near-tie: fine
    with pytest.raises(AssertionError, match="KV cache"):
        check_same_generation(_Scripted(0.5), plain, torch.tensor([[4, 4, 2, 0]]))


def test_model_shapes_encoder_sees_the_future_decoder_does_not():
    torch.manual_seed(0)
    decoder = Transformer(10, 8, d_model=16, num_heads=2, num_layers=1, causal=True).eval()
    encoder = Transformer(10, 8, d_model=16, num_heads=2, num_layers=1, causal=False).eval()
    idx = torch.randint(0, 10, (3, 8))
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 10                         # change only the last token
    with torch.no_grad():
        assert decoder(idx).shape == (3, 8, 10)
        assert torch.allclose(decoder(idx)[:, :-1], decoder(changed)[:, :-1], atol=1e-6)
        assert not torch.allclose(encoder(idx)[:, :-1], encoder(changed)[:, :-1], atol=1e-6)
    with pytest.raises(ValueError, match="max_len"):
        decoder(torch.zeros(1, 9, dtype=torch.int64))


# --- sampling -----------------------------------------------------------------------------------------------

def test_sample_next_greedy_and_top_1():
    logits = torch.randn(6, 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(dim=-1))
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next(logits, temperature=1.5, top_k=1, generator=gen), logits.argmax(dim=-1))


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.5, None), (2.0, 3), (0.7, 2)])
def test_sample_next_follows_the_tempered_top_k_distribution(temperature, top_k):
    logits = torch.tensor([1.5, 0.2, -0.3, 1.0, -2.0])
    gen = torch.Generator().manual_seed(0)
    draws = sample_next(logits.expand(40_000, 5), temperature, top_k, generator=gen)
    expected = (logits / temperature).softmax(dim=0)
    if top_k is not None:
        keep = logits.topk(top_k).indices
        expected = torch.zeros(5).index_put((keep,), (logits[keep] / temperature).softmax(dim=0))
    observed = torch.bincount(draws, minlength=5) / len(draws)
    assert torch.allclose(observed, expected, atol=0.015)
    assert (observed[expected == 0] == 0).all()


# --- on a GPU -----------------------------------------------------------------------------------------------

@pytest.fixture()
def fp32_matmuls():
    """IEEE float32 matrix products on CUDA for the test (TF32 off), whatever another test switched on."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_attention_kv_cache_and_autocast_agree_with_float32(fp32_matmuls):
    # CUDA kernels add in other orders than the CPU's (and the cached path has other shapes): float32 results
    # agree to ~1e-6 relative, so the tolerances are 1e-5..1e-4, not exact equality.
    q, k, v = (t.cuda() for t in _qkv(T_q=7, T_k=7))
    mask = causal_mask(7, device="cuda")
    assert torch.allclose(attention(q, k, v, mask)[0], F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                          atol=1e-5)
    torch.manual_seed(0)
    model = Transformer(vocab_size=31, max_len=64, d_model=64, num_heads=4, num_layers=2, positions="rope")
    cpu_logits = model.eval()(torch.arange(40)[None] % 31).detach()
    model.cuda()
    idx = (torch.arange(40, device="cuda")[None] % 31)                 # (1, 40)
    with torch.no_grad():
        full = model(idx)
    assert torch.allclose(full.cpu(), cpu_logits, rtol=1e-4, atol=1e-4)
    assert torch.allclose(logits_with_cache(model, idx, 8), full, rtol=1e-4, atol=1e-4)
    plain = generate(model, idx[:, :5], 50, temperature=0)
    check_same_generation(model, plain, generate(model, idx[:, :5], 50, temperature=0, use_cache=True))
    # training mode under autocast (bfloat16 where native, else float16): the fused kernel on tensor cores.
    # An 8-bit (bf16) or 11-bit (fp16) mantissa rounds each operation by up to 2^-9 (2^-12) relative; through two
    # blocks the logits move by about 1 % of their scale: allow 5 %.
    from dlcourse.config import amp_dtype

    model.train()
    with torch.autocast("cuda", dtype=amp_dtype("cuda")):
        low = model(idx)
    assert low.dtype == amp_dtype("cuda")
    scale = full.abs().max().item()
    assert (low.float() - full).abs().max().item() < 0.05 * max(1.0, scale)
    sequence = torch.randint(0, 31, (8, 33), device="cuda")
    with torch.autocast("cuda", dtype=amp_dtype("cuda")):
        loss = F.cross_entropy(model(sequence[:, :-1]).flatten(0, 1), sequence[:, 1:].flatten())
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
