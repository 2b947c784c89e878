"""The from-scratch code of notebook 12 (compression and export), checked against PyTorch.

Notebooks are not importable, so each function is a compact copy of the notebook's (they are used by notebook 12
and its lab only, so they don't belong in the package). Covered: int8 quantisation (symmetric, asymmetric,
per row) against torch's quantised tensors and fake quantisation, magnitude and structured pruning masks against
torch.nn.utils.prune, slicing pruned neurons away, the distillation loss against F.kl_div, and ONNX / torch.export
parity on a tiny model with a dynamic batch dimension. Also torchao's int8 and int4 weights against the from-scratch
per-row quantiser, the from-scratch fake quantisation (straight-through gradient) against torch's, quantisation-aware
training through a parametrisation, and which of torch's quantisation functions warn that they are deprecated.
"""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchao.quantization as torchao_quantization  # the export extra (make test installs it): missing = an error
from torch import nn
from torch.nn.utils import parametrize, prune
from torchao.quantization.granularity import PerAxis

# torch.quantize_per_tensor (and every function that makes a qint8 tensor) warns that it is deprecated (torchao is
# the successor); it is still the reference these tests compare with.
pytestmark = [pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")]


# -------------------------------------------------------------------------------- copies of the notebook's code
def quantize_symmetric(x, qmax=127.0):
    amax = x.abs().max()
    scale = amax / qmax if amax > 0 else torch.ones(())
    q = torch.clamp(torch.round(x * (1 / scale)), -128, 127).to(torch.int8)
    return q, scale.item(), 0


def quantize_asymmetric(x):
    lo, hi = x.min().clamp(max=0), x.max().clamp(min=0)
    scale = (hi - lo) / 255 if hi > lo else torch.ones(())
    zero_point = int(-128 - torch.round(lo / scale))
    q = torch.clamp(torch.round(x * (1 / scale)) + zero_point, -128, 127).to(torch.int8)
    return q, scale.item(), zero_point


def dequantize(q, scale, zero_point):
    return (q.to(torch.float32) - zero_point) * scale


def quantize_per_row(W, qmax=127.0):
    amax = W.abs().amax(dim=1, keepdim=True)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    q = torch.clamp(torch.round(W * (1.0 / scale)), -128, 127).to(torch.int8)
    return q, scale.squeeze(1)


class FakeQuantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):
        q = torch.round(x * (1 / scale)) + zero_point
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return (torch.clamp(q, qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad_output):
        (inside,) = ctx.saved_tensors
        return grad_output * inside, None, None, None, None


def fake_quantize_rows(W, bits):
    amax = W.detach().abs().amax(dim=1, keepdim=True)
    scale = torch.where(amax > 0, amax / ((2**bits - 1) / 2), torch.ones_like(amax))
    return FakeQuantize.apply(W, scale, 0, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


class FakeQuantizedWeight(nn.Module):
    def __init__(self, bits):
        super().__init__()
        self.bits = bits

    def forward(self, W):
        return fake_quantize_rows(W, self.bits)


def with_fake_quant(model, bits):
    model = copy.deepcopy(model)
    for layer in linears(model):
        parametrize.register_parametrization(layer, "weight", FakeQuantizedWeight(bits))
    return model


def quantized(model, config):
    model = copy.deepcopy(model)
    torchao_quantization.quantize_(model, config)
    return model


def magnitude_masks(weights, sparsity, scope="global"):
    if scope == "layer":
        return [magnitude_masks([w], sparsity)[0] for w in weights]
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    k = round(sparsity * magnitudes.numel())
    keep = torch.ones_like(magnitudes)
    keep[torch.argsort(magnitudes, stable=True)[:k]] = 0
    return [m.view_as(w) for m, w in zip(keep.split([w.numel() for w in weights]), weights)]


def row_mask(weight, amount):
    norms = weight.detach().norm(dim=1)
    k = round(amount * len(norms))
    keep = torch.ones_like(norms)
    keep[torch.argsort(norms, stable=True)[:k]] = 0
    return keep[:, None].expand_as(weight).clone()


def same_pruning(ours, theirs, scores):
    pruned_ours, pruned_theirs = ours == 0, theirs == 0
    if int(pruned_ours.sum()) != int(pruned_theirs.sum()):
        return False
    if not pruned_ours.any():
        return True
    free = scores == scores[pruned_ours].max()
    return torch.equal(pruned_ours[~free], pruned_theirs[~free])


def tied_at_threshold(mask, scores):
    pruned = mask == 0
    if not pruned.any() or pruned.all():
        return 0
    tied = scores == scores[pruned].max()
    return int(tied.sum()) if (tied & ~pruned).any() else 0


def linears(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def masked_copy(model, masks, *, neurons=False):
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for layer, mask in zip(linears(pruned), masks):
            layer.weight.mul_(mask)
            if neurons:
                layer.bias.mul_(mask[:, 0])
    return pruned


def shrink(model, masks):
    layers = [nn.Flatten()]
    kept_in = torch.arange(linears(model)[0].in_features)
    for i, layer in enumerate(linears(model)):
        kept_out = masks[i][:, 0].nonzero().flatten() if i < len(masks) else torch.arange(layer.out_features)
        small = nn.Linear(len(kept_in), len(kept_out))
        with torch.no_grad():
            small.weight.copy_(layer.weight[kept_out][:, kept_in])
            small.bias.copy_(layer.bias[kept_out])
        layers += [small, nn.ReLU()]
        kept_in = kept_out
    return nn.Sequential(*layers[:-1]).eval()


def kd_loss(student_logits, teacher_logits, y, T, alpha):
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / T, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return alpha * T**2 * kl + (1 - alpha) * F.cross_entropy(student_logits, y)


def _mlp(seed, sizes=(64, 48, 32, 10)):
    torch.manual_seed(seed)
    layers = [nn.Flatten()]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


# ------------------------------------------------------------------------------------------------ quantisation
TENSORS = {
    "normal": lambda g: torch.randn(64, 33, generator=g),
    "wide range": lambda g: 40 * torch.randn(1000, generator=g),
    "all positive": lambda g: torch.rand(20, 30, generator=g) * 3,
    "all negative": lambda g: -torch.rand(500, generator=g) - 0.1,
    "skewed": lambda g: torch.randn(300, generator=g) + 2.5,
}


@pytest.mark.parametrize("kind", sorted(TENSORS))
def test_symmetric_quantisation_matches_torch(kind):
    x = TENSORS[kind](torch.Generator().manual_seed(1))
    q, scale, zp = quantize_symmetric(x)
    assert q.dtype == torch.int8 and q.shape == x.shape and zp == 0
    assert math.isclose(scale, x.abs().max().item() / 127, rel_tol=1e-6)
    reference = torch.quantize_per_tensor(x, scale, 0, torch.qint8)
    assert torch.equal(q, reference.int_repr())
    assert torch.equal(dequantize(q, scale, zp), reference.dequantize())
    assert torch.equal(dequantize(q, scale, zp), torch.fake_quantize_per_tensor_affine(x, scale, 0, -128, 127))
    assert int(q.abs().max()) == 127                      # the largest magnitude lands on the last code
    assert (x - dequantize(q, scale, zp)).abs().max() <= scale / 2 * (1 + 1e-4)


@pytest.mark.parametrize("kind", sorted(TENSORS))
def test_asymmetric_quantisation_matches_torch(kind):
    x = TENSORS[kind](torch.Generator().manual_seed(2))
    q, scale, zp = quantize_asymmetric(x)
    assert q.dtype == torch.int8 and isinstance(zp, int) and -128 <= zp <= 127
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    assert math.isclose(scale, (hi - lo) / 255, rel_tol=1e-6)
    reference = torch.quantize_per_tensor(x, scale, zp, torch.qint8)
    assert torch.equal(q, reference.int_repr())
    assert torch.equal(dequantize(q, scale, zp), reference.dequantize())
    assert torch.equal(dequantize(q, scale, zp), torch.fake_quantize_per_tensor_affine(x, scale, zp, -128, 127))
    assert (x - dequantize(q, scale, zp)).abs().max() <= scale / 2 * (1 + 1e-4)
    assert dequantize(torch.tensor([zp], dtype=torch.int8), scale, zp).item() == 0.0   # zero is exact


def test_asymmetric_halves_the_error_of_one_sided_data():
    x = torch.rand(1000, generator=torch.Generator().manual_seed(3))        # like ReLU outputs: never negative
    _, s_sym, _ = quantize_symmetric(x)
    q, s_asym, zp = quantize_asymmetric(x)
    assert zp == -128 and math.isclose(s_sym / s_asym, 255 / 127, rel_tol=1e-5)


def test_all_zero_tensor():
    x = torch.zeros(5, 3)
    for quantize in (quantize_symmetric, quantize_asymmetric):
        q, scale, zp = quantize(x)
        assert scale == 1.0 and torch.equal(dequantize(q, scale, zp), x)


def test_qmax_127_5_reproduces_torchao_int8_weights():
    model = _mlp(0)
    for config in (torchao_quantization.Int8WeightOnlyConfig(),
                   torchao_quantization.Int8DynamicActivationInt8WeightConfig()):
        qmodel = quantized(model, config)
        for layer, qlayer in zip(linears(model), linears(qmodel)):
            stored = qlayer.weight
            q, scales = quantize_per_row(layer.weight.detach(), qmax=127.5)
            assert torch.equal(stored.qdata, q)
            assert torch.allclose(stored.scale.squeeze(1), scales, rtol=1e-6, atol=0)
            assert not stored.zero_point.any()
            q127, _ = quantize_per_row(layer.weight.detach())
            assert not torch.equal(stored.qdata, q127)                     # qmax=127 is a different rule
        X = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.allclose(qmodel(X), model(X), atol=0.05)


def test_which_quantisation_functions_warn():
    """The notebook's claim: creating qint8 tensors warns (deprecated); fake quantisation does not."""
    def warns(fn):
        was_always = torch.is_warn_always_enabled()
        torch.set_warn_always(True)                                 # lift the once-per-process rule
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fn()
        finally:
            torch.set_warn_always(was_always)
        return [str(w.message) for w in caught]

    x, scales, zero_points = torch.randn(4, 8), torch.full((4,), 0.1), torch.zeros(4, dtype=torch.int32)
    assert warns(lambda: torch.fake_quantize_per_tensor_affine(x, 0.1, 0, -128, 127)) == []
    assert warns(lambda: torch.fake_quantize_per_channel_affine(x, scales, zero_points, 0, -128, 127)) == []
    per_tensor = warns(lambda: torch.quantize_per_tensor(x, 0.1, 0, torch.qint8))
    per_channel = warns(lambda: torch.quantize_per_channel(x, scales.double(), zero_points.long(), 0, torch.qint8))
    assert bool(per_tensor) == bool(per_channel)                   # one warning covers both
    if torch.torch_version.TorchVersion(torch.__version__) >= "2.14":
        assert per_tensor and "deprecated" in per_tensor[0] and per_channel == per_tensor


# ---------------------------------------------------------------------------- fake quantisation and QAT
@pytest.mark.parametrize("seed, qmin, qmax, shrink", [(0, -128, 127, 1.0), (1, -8, 7, 0.3), (2, 0, 255, 0.5),
                                                      (3, -2, 1, 1.0)])
def test_fake_quantize_matches_torch_per_channel_values_and_gradient(seed, qmin, qmax, shrink):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 40, generator=gen) * 2
    steps = (qmax - qmin) / 2
    scale = shrink * x.abs().amax(dim=1) / steps                   # shrink < 1: some values are clipped
    zero_point = torch.randint(qmin // 2, qmax // 2 + 1, (6,), generator=gen, dtype=torch.int32)
    ours_x, torch_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = FakeQuantize.apply(ours_x, scale[:, None], zero_point[:, None], qmin, qmax)
    theirs = torch.fake_quantize_per_channel_affine(torch_x, scale, zero_point, 0, qmin, qmax)
    grad_output = torch.randn(x.shape, generator=gen)
    ours.backward(grad_output)
    theirs.backward(grad_output)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours_x.grad, torch_x.grad)                  # the STE, clipping mask included
    assert set(ours_x.grad.flatten().tolist()) - set(grad_output.flatten().tolist()) <= {0.0}
    if shrink < 1:
        assert (ours_x.grad == 0).any() and (ours_x.grad != 0).any()


@pytest.mark.parametrize("scale, zero_point", [(0.05, 0), (0.02, -20), (0.3, 100)])
def test_fake_quantize_matches_torch_per_tensor_values_and_gradient(scale, zero_point):
    x = torch.randn(200, generator=torch.Generator().manual_seed(4)) * 3
    ours_x, torch_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = FakeQuantize.apply(ours_x, scale, zero_point, -128, 127)
    theirs = torch.fake_quantize_per_tensor_affine(torch_x, scale, zero_point, -128, 127)
    ours.sum().backward()
    theirs.sum().backward()
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6) and torch.equal(ours_x.grad, torch_x.grad)


def test_detach_trick_differs_from_the_function_only_where_the_clamp_cuts():
    # with scale = max|w| / ((2**bits - 1) / 2) a row's largest positive weight lands on 2**(bits-1) - 1/2 and
    # rounds (half to even) one past the last code: the clamp cuts it, and only the Function knows
    W = torch.randn(10, 12, generator=torch.Generator().manual_seed(5))
    a, b = W.clone().requires_grad_(), W.clone().requires_grad_()
    out_fn = fake_quantize_rows(a, 3)
    out_trick = b + (fake_quantize_rows(b.detach(), 3) - b).detach()
    g = torch.randn(W.shape, generator=torch.Generator().manual_seed(6))
    out_fn.backward(g)
    out_trick.backward(g)
    assert torch.equal(out_fn, out_trick) and torch.equal(b.grad, g)
    clipped = a.grad == 0
    assert torch.equal(a.grad[~clipped], g[~clipped])
    row_max = W == W.amax(dim=1, keepdim=True)
    assert clipped.any() and not (clipped & ~row_max).any()         # only row maxima are ever cut


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_fake_quantize_rows_reproduces_torchao_intx_weights(bits):
    W = torch.randn(24, 32, generator=torch.Generator().manual_seed(bits))
    W[5] = 0.0                                                     # an all-zero row
    layer = nn.Linear(32, 24)
    with torch.no_grad():
        layer.weight.copy_(W)
    config = torchao_quantization.IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{bits}"),
                                                       granularity=PerAxis(0))
    stored = quantized(nn.Sequential(layer), config)[0].weight
    expected = stored.qdata.float() * stored.scale
    assert torch.allclose(fake_quantize_rows(W, bits), expected, rtol=1e-6, atol=0)
    assert stored.qdata.unique().numel() <= 2**bits


def test_qat_parametrisation_trains_the_float_weights_and_bakes_to_few_levels():
    model = with_fake_quant(_mlp(14).train(), bits=2)
    first = linears(model)[0]
    original = first.parametrizations.weight.original
    before = original.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(14)
    for _ in range(3):
        loss = F.cross_entropy(model(torch.randn(32, 64, generator=gen)), torch.randint(0, 10, (32,), generator=gen))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert not torch.equal(original.detach(), before)             # the STE let gradients reach the float weights
    assert all(row.unique().numel() <= 4 for row in first.weight.detach())   # but the layer uses 4 levels a row
    X = torch.randn(8, 64, generator=gen)
    with torch.no_grad():
        out = model(X)
    for layer in linears(model):
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    with torch.no_grad():
        assert torch.equal(model(X), out)
    assert all(row.unique().numel() <= 4 for layer in linears(model) for row in layer.weight.detach())


def test_per_row_quantisation_matches_quantize_per_channel():
    W = torch.randn(40, 25, generator=torch.Generator().manual_seed(4)) * 0.05
    W[3, 7] = 5.0                                                           # an outlier in row 3
    W[9] = 0.0                                                              # an all-zero row
    q, scales = quantize_per_row(W)
    reference = torch.quantize_per_channel(W, scales.double(), torch.zeros(40, dtype=torch.long), 0, torch.qint8)
    assert torch.equal(q, reference.int_repr())
    assert torch.allclose(q.float() * scales[:, None], reference.dequantize(), rtol=0, atol=0)
    _, s_tensor, _ = quantize_symmetric(W)
    others = torch.arange(40) != 3
    err_row = (W - q.float() * scales[:, None])[others].abs().mean()
    err_tensor = (W - dequantize(quantize_symmetric(W)[0], s_tensor, 0))[others].abs().mean()
    assert err_row < err_tensor / 5


# ------------------------------------------------------------------------------------------------------ pruning
@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9, 0.999, 1.0])
def test_global_and_per_layer_masks_match_torch_prune(sparsity):
    model = _mlp(5)
    weights = [layer.weight for layer in linears(model)]
    reference = copy.deepcopy(model)
    prune.global_unstructured([(layer, "weight") for layer in linears(reference)],
                              pruning_method=prune.L1Unstructured, amount=sparsity)
    ours = magnitude_masks(weights, sparsity)
    for mask, layer in zip(ours, linears(reference)):
        assert mask.dtype == layer.weight.dtype and torch.equal(mask, layer.weight_mask)
    n = sum(w.numel() for w in weights)
    assert sum(int((m == 0).sum()) for m in ours) == round(sparsity * n)
    for mask, layer in zip(magnitude_masks(weights, sparsity, "layer"), linears(model)):
        assert torch.equal(mask, prune.l1_unstructured(copy.deepcopy(layer), "weight", sparsity).weight_mask)


def test_ties_are_pruned_in_flattened_order():
    w = torch.tensor([[0.5, -0.1, 0.1], [0.1, 2.0, -0.5]])
    assert torch.equal(magnitude_masks([w], 4 / 6)[0], torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
    same = torch.ones(2, 5)
    assert torch.equal(magnitude_masks([same], 0.3)[0], torch.tensor([[0.0, 0.0, 0.0, 1, 1], [1, 1, 1, 1, 1]]))


def _tied_weights(seed, shape=(12, 10)):
    """Weights with many exactly equal magnitudes (a few distinct values, both signs)."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(1, 6, shape, generator=gen) * (2 * torch.randint(0, 2, shape, generator=gen) - 1)).float()


def test_topk_breaks_ties_its_own_way_and_same_pruning_allows_exactly_that():
    # what failed at full scale: prune (torch.topk) and our stable sort pick different members of a tie that
    # straddles the threshold; both masks prune a correct set
    differed = straddled = 0
    for seed in range(20):
        w = _tied_weights(seed)
        ours = magnitude_masks([w], 0.5)[0]
        theirs = prune.l1_unstructured(nn.Linear(10, 12), "weight", 0.5, importance_scores=w.abs()).weight_mask
        differed += not torch.equal(ours, theirs)
        assert same_pruning(ours, theirs, w.abs())
        if tied_at_threshold(ours, w.abs()):                           # a tie straddles the threshold
            straddled += 1
            threshold = w.abs().flatten().sort().values[round(0.5 * w.numel()) - 1]
            all_ties = (w.abs() > threshold).float()                   # prunes every tied weight: too many
            assert not same_pruning(ours, all_ties, w.abs())
        wrong = ours.clone().flatten()
        kept_large, pruned_small = w.abs().flatten().argmax(), w.abs().flatten().argmin()
        wrong[kept_large], wrong[pruned_small] = 0.0, 1.0                # same count, a wrong choice
        assert not same_pruning(ours, wrong.view_as(ours), w.abs())
    assert straddled > 10 and differed > 0, "topk should pick other tied entries than a stable sort at times"


def test_same_pruning_for_rows_and_the_untied_case():
    w = torch.tensor([[3.0, 4.0], [0.0, 5.0], [1.0, 1.0], [5.0, 0.0]])      # row norms 5, 5, 1.41, 5
    ours = row_mask(w, 0.5)[:, 0]                                     # row 2, then the first tied row (0)
    assert torch.equal(ours, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert same_pruning(ours, torch.tensor([1.0, 0.0, 0.0, 1.0]), w.norm(dim=1))   # another tied row: fine
    assert not same_pruning(ours, torch.tensor([0.0, 0.0, 1.0, 1.0]), w.norm(dim=1))  # keeps the smallest
    x = torch.tensor([0.3, 0.1, 0.2])
    assert same_pruning(torch.ones(3), torch.ones(3), x) and tied_at_threshold(torch.ones(3), x) == 0
    assert not same_pruning(torch.tensor([1.0, 0.0, 1.0]), torch.ones(3), x)


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 0.75, 1.0])
def test_row_mask_matches_ln_structured(amount):
    for layer in linears(_mlp(6))[:-1]:
        ours = row_mask(layer.weight, amount)
        reference = prune.ln_structured(copy.deepcopy(layer), "weight", amount, n=2, dim=0).weight_mask
        assert torch.equal(ours, reference)
        assert int((ours[:, 0] == 0).sum()) == round(amount * layer.out_features)
        assert ((ours == 0).all(dim=1) | (ours == 1).all(dim=1)).all()     # whole rows


def test_shrinking_pruned_neurons_keeps_the_outputs():
    model = _mlp(7)
    masks = [row_mask(layer.weight, 0.5) for layer in linears(model)[:-1]]
    masked, narrow = masked_copy(model, masks, neurons=True), shrink(model, masks)
    X = torch.randn(20, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.allclose(narrow(X), masked(X), atol=1e-6)
    assert [layer.weight.shape for layer in linears(narrow)] == [(24, 64), (16, 24), (10, 16)]


def test_finetuning_through_prune_keeps_pruned_weights_zero():
    model = _mlp(8).train()
    prune.global_unstructured([(layer, "weight") for layer in linears(model)],
                              pruning_method=prune.L1Unstructured, amount=0.8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(8)
    for _ in range(5):
        loss = F.cross_entropy(model(torch.randn(16, 64, generator=gen)), torch.randint(0, 10, (16,), generator=gen))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for layer in linears(model):
        prune.remove(layer, "weight")
    n = sum(layer.weight.numel() for layer in linears(model))
    assert sum(int((layer.weight == 0).sum()) for layer in linears(model)) == round(0.8 * n)


# ------------------------------------------------------------------------------------------------- distillation
@pytest.mark.parametrize("T, alpha", [(1.0, 0.5), (4.0, 0.9), (4.0, 1.0), (2.0, 0.0), (10.0, 0.3)])
def test_kd_loss_matches_kl_div_formula(T, alpha):
    gen = torch.Generator().manual_seed(9)
    z_s, z_t = torch.randn(12, 7, generator=gen), 3 * torch.randn(12, 7, generator=gen)
    y = torch.randint(0, 7, (12,), generator=gen)
    reference = (alpha * T**2 * F.kl_div(F.log_softmax(z_s / T, dim=1), F.log_softmax(z_t / T, dim=1),
                                         reduction="batchmean", log_target=True)
                 + (1 - alpha) * F.cross_entropy(z_s, y))
    assert torch.allclose(kd_loss(z_s, z_t, y, T, alpha), reference, atol=1e-6)
    # the same from probabilities, written out: sum_k p_t log(p_t / p_s), mean over the batch
    p_s, p_t = torch.softmax(z_s / T, dim=1), torch.softmax(z_t / T, dim=1)
    direct = alpha * T**2 * (p_t * (p_t / p_s).log()).sum(dim=1).mean() + (1 - alpha) * F.cross_entropy(z_s, y)
    assert torch.allclose(kd_loss(z_s, z_t, y, T, alpha), direct, atol=1e-5)


def test_kd_gradient_and_teacher_gets_none():
    gen = torch.Generator().manual_seed(10)
    z_s = torch.randn(8, 5, generator=gen, requires_grad=True)
    z_t = torch.randn(8, 5, generator=gen, requires_grad=True)
    y = torch.randint(0, 5, (8,), generator=gen)
    T = 3.0
    kd_loss(z_s, z_t, y, T, alpha=1.0).backward()
    expected = T * (torch.softmax(z_s / T, dim=1) - torch.softmax(z_t / T, dim=1)) / len(z_s)   # T² · (p_s-p_t)/(T·B)
    assert torch.allclose(z_s.grad, expected.detach(), atol=1e-6)
    assert z_t.grad is None
    assert kd_loss(z_t.detach(), z_t.detach(), y, T, alpha=1.0).abs() < 1e-6   # identical logits: no KL


# ------------------------------------------------------------------------------------------------------- export
def test_torch_export_with_dynamic_batch(tmp_path):
    model = _mlp(11)
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(model, (torch.randn(4, 64),), dynamic_shapes=({0: batch},))
    torch.export.save(exported, tmp_path / "m.pt2")
    reloaded = torch.export.load(tmp_path / "m.pt2")
    for n in (1, 3, 100):
        X = torch.randn(n, 64, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            assert torch.allclose(reloaded.module()(X), model(X), atol=1e-6)


def test_onnx_export_runs_in_onnxruntime_with_dynamic_batch(tmp_path):
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as err:  # the lab and test extras install it: a missing package is an error, not a skip
        raise AssertionError(f'{err.name} is missing: pip install "dlcourse[export]"') from err
    model = _mlp(12)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.randn(4, 64),), path, dynamo=True, input_names=["X"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False)
    onnx.checker.check_model(onnx.load(path))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["X"] and isinstance(session.get_inputs()[0].shape[0], str)
    for n in (1, 7, 300):
        X = torch.randn(n, 64, generator=torch.Generator().manual_seed(n))
        (out,) = session.run(["logits"], {"X": X.numpy()})
        with torch.no_grad():
            expected = model(X).numpy()
        assert out.shape == (n, 10) and np.allclose(out, expected, atol=1e-5)


# ------------------------------------------------------------------------------------------------------ on a GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_masks_on_cuda_prune_what_torch_prune_prunes():
    # the mask code is device-agnostic; on CUDA, torch.topk breaks ties its own way too, so compare with
    # same_pruning (exact outside the tie at the threshold)
    model = _mlp(5).cuda()
    weights = [layer.weight for layer in linears(model)] + [_tied_weights(3).cuda()]
    for sparsity in (0.3, 0.7, 0.9):
        for w, mask in zip(weights, magnitude_masks(weights, sparsity, "layer")):
            assert mask.device.type == "cuda"
            theirs = prune.l1_unstructured(nn.Linear(w.shape[1], w.shape[0]).cuda(), "weight", sparsity,
                                           importance_scores=w.detach().abs()).weight_mask
            assert same_pruning(mask, theirs, w.detach().abs())
        reference = copy.deepcopy(model)
        prune.global_unstructured([(layer, "weight") for layer in linears(reference)],
                                  pruning_method=prune.L1Unstructured, amount=sparsity)
        ours = torch.cat([m.flatten() for m in magnitude_masks(weights[:-1], sparsity)])
        theirs = torch.cat([layer.weight_mask.flatten() for layer in linears(reference)])
        assert same_pruning(ours, theirs, torch.cat([w.detach().abs().flatten() for w in weights[:-1]]))
        for layer in linears(model)[:-1]:
            theirs = prune.ln_structured(copy.deepcopy(layer), "weight", sparsity, n=2, dim=0).weight_mask
            assert same_pruning(row_mask(layer.weight, sparsity)[:, 0], theirs[:, 0], layer.weight.detach().norm(dim=1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_export_of_a_cuda_model_runs_on_cuda(tmp_path):
    model = _mlp(11).cuda()
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(model, (torch.randn(4, 64, device="cuda"),), dynamic_shapes=({0: batch},))
    torch.export.save(exported, tmp_path / "m.pt2")
    reloaded = torch.export.load(tmp_path / "m.pt2")
    X = torch.randn(33, 64, device="cuda")
    with torch.no_grad():
        out = reloaded.module()(X)
        assert out.device.type == "cuda"
        # the same kernels on the same device; a tolerance only in case the graph fuses differently
        assert torch.allclose(out, model(X), rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torchao_int8_and_packed_int4_on_cuda():
    # notebook 12 quantises a CPU copy for its table; on a GPU it also runs packed int4 through tinygemm
    from dlcourse.quantization import state_dict_bytes

    model = _mlp(13, sizes=(64, 128, 128, 16)).cuda()
    X = torch.randn(16, 64, device="cuda")
    int8 = quantized(model, torchao_quantization.Int8WeightOnlyConfig())
    with torch.no_grad():
        assert torch.allclose(int8(X), model(X), atol=0.05)
    int4 = copy.deepcopy(model).to(torch.bfloat16)
    torchao_quantization.quantize_(int4, torchao_quantization.Int4WeightOnlyConfig(
        group_size=32, int4_packing_format="tile_packed_to_4d"))
    with torch.no_grad():
        out = int4(X.to(torch.bfloat16)).float()
    assert out.shape == (16, 16) and torch.isfinite(out).all()
    assert (out - model(X)).abs().max() < 0.5
    assert state_dict_bytes(int4) < state_dict_bytes(int8)
