# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 12: compression and export
#
# This lab goes with notebook 12. You write the core of each compression method yourself (the distillation
# loss, pruning masks, int8 quantisation), predict how many bytes a quantised model stores before measuring it,
# and export a model to ONNX; PyTorch, torchao and ONNX Runtime check every number.
#
# **Learning goals.** After this lab you can
# - write the temperature-scaled distillation loss, and say why it has a factor $T^2$ and why the teacher gets
#   no gradient;
# - compute magnitude-pruning masks with an exact sparsity, unstructured and structured (whole rows), and
#   reproduce `torch.nn.utils.prune`;
# - quantise a tensor to int8 and back, symmetric and asymmetric, and keep the error within `scale / 2`;
# - predict from the layer shapes how many bytes torchao's int8 and 4-bit weights take;
# - export a model to ONNX with a dynamic batch dimension and run it in ONNX Runtime with the same outputs as
#   PyTorch.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab12_compression_export.ipynb` tells you what
# passes.
#
# **Time.** About 70–100 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
# Exercises 5 and 6 need the `export` extra (`torchao`, `onnx`, `onnxscript`, `onnxruntime`), which `make lab`
# installs.
#
# **Points.** 12 in all: distillation loss 2, magnitude-pruning mask 2, structured (row) mask 1, int8
# quantisation 3, predicted bytes of a quantised model 2, ONNX export 2.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

import dlcourse
import dlcourse.quantization
from dlcourse.grading.checks import check_close, check_equal, check_prediction, check_true, forbid

cfg = dlcourse.setup(seed=0)
# The tests compare with torch.quantize_per_tensor, which warns that it is deprecated (torchao is its successor).
warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")
# Tests of from-scratch code switch torch's own versions off while they call yours.
KL_FUNCTIONS = ((F, "kl_div"), (torch, "kl_div"), (nn.KLDivLoss, "forward"))
PRUNE_FUNCTIONS = ((prune, "l1_unstructured"), (prune, "ln_structured"), (prune, "global_unstructured"),
                   (prune.L1Unstructured, "compute_mask"), (prune.LnStructured, "compute_mask"))
QUANTIZE_FUNCTIONS = ((torch, "quantize_per_tensor"), (torch, "quantize_per_tensor_dynamic"),
                      (torch, "fake_quantize_per_tensor_affine"), (torch, "dequantize"),
                      (torch.Tensor, "dequantize"), (torch.Tensor, "int_repr"))
NO_BUILTIN = "write this from tensor operations: the library function that does it is switched off in the tests"
MEASURING = ((dlcourse.quantization, "state_dict_bytes"), (dlcourse.quantization, "stored_bytes"),
             (torch, "save"))
NO_MEASURING = "predict from the layer sizes: quantising and measuring are switched off while the tests call yours"

# %% [markdown] nbgrader={"grade": false, "grade_id": "kd-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: the distillation loss (2 points)
#
# A student with logits $z_s$ learns from a teacher's logits $z_t$ and the labels $y$. Both distributions are
# softened with a temperature $T$: $p^{(T)} = \operatorname{softmax}(z / T)$ over the classes. The loss is
#
# $$L = \alpha\, T^2\, \mathrm{KL}\big(p_t^{(T)} \,\|\, p_s^{(T)}\big) + (1 - \alpha)\, \mathrm{CE}(z_s, y),
# \qquad \mathrm{KL}(p \,\|\, q) = \sum_k p_k\,(\log p_k - \log q_k),$$
#
# with the KL computed per example and **averaged over the batch**, and CE the usual cross-entropy of the
# *unsoftened* student logits (`F.cross_entropy(student_logits, y)`, also a batch mean).
#
# Write `kd_loss(student_logits, teacher_logits, y, T, alpha)`. Three things to get right:
# - the KL goes *from the teacher*: the teacher's probabilities weight the log-ratio;
# - compute log-probabilities with `F.log_softmax` (stable), not `torch.log(torch.softmax(...))`, which gives
#   `-inf` (and then `nan`) for very confident logits;
# - the teacher is fixed: **no gradient may flow into `teacher_logits`** (`.detach()` them).
#
# `F.kl_div` and `nn.KLDivLoss` are switched off while the tests call your function; `F.log_softmax` and
# `F.cross_entropy` are allowed.

# %% nbgrader={"grade": false, "grade_id": "kd-answer", "locked": false, "schema_version": 3, "solution": true}
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, T: float,
            alpha: float) -> torch.Tensor:
    """alpha * T² * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y), batch means.

    student_logits, teacher_logits: (B, C) float; y: (B,) int64 class indices; T > 0; alpha in [0, 1].
    Returns a 0-dim tensor. No gradient flows into teacher_logits.
    """
    ### BEGIN SOLUTION
    log_p_s = F.log_softmax(student_logits / T, dim=1)                     # (B, C)
    log_p_t = F.log_softmax(teacher_logits.detach() / T, dim=1)            # (B, C), a constant
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()           # () per-example KL, batch mean
    return alpha * T**2 * kl + (1 - alpha) * F.cross_entropy(student_logits, y)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "kd-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _reference_kd(z_s, z_t, y, T, alpha):
    """The distillation loss written with torch's own KL divergence."""
    kl = F.kl_div(F.log_softmax(z_s / T, dim=1), F.log_softmax(z_t / T, dim=1), reduction="batchmean",
                  log_target=True)
    return alpha * T**2 * kl + (1 - alpha) * F.cross_entropy(z_s, y)


def _reference_grad(z_s, z_t, y, T, alpha):
    """d(loss)/d(student logits) of the reference loss."""
    z = z_s.detach().clone().requires_grad_(True)
    return torch.autograd.grad(_reference_kd(z, z_t.detach(), y, T, alpha), z)[0]


_gen = torch.Generator().manual_seed(0)
_zs, _zt = torch.randn(6, 5, generator=_gen), 3 * torch.randn(6, 5, generator=_gen)   # (B=6, C=5)
_y = torch.randint(0, 5, (6,), generator=_gen)
with forbid(KL_FUNCTIONS, NO_BUILTIN):
    _loss = kd_loss(_zs, _zt, _y, T=2.0, alpha=0.5)
    _kd_only = kd_loss(_zs, _zt, _y, T=4.0, alpha=1.0)
    _ce_only = kd_loss(_zs, _zt, _y, T=4.0, alpha=0.0)
check_close("T=2, alpha=0.5: the loss", _loss, expected=_reference_kd(_zs, _zt, _y, 2.0, 0.5), atol=1e-5,
            weight=2, hint="alpha * T**2 * KL(teacher || student) + (1 - alpha) * CE, the KL summed over classes "
                           "and averaged over the batch")
check_close("alpha=1: the distillation term alone (T=4)", _kd_only,
            expected=_reference_kd(_zs, _zt, _y, 4.0, 1.0), atol=1e-5,
            hint="did you multiply the KL by T**2, divide both logits by T, and weight log(p_t / p_s) by the "
                 "teacher's probabilities p_t (not the student's)?")
check_close("alpha=0: plain cross-entropy", _ce_only, expected=F.cross_entropy(_zs, _y), atol=1e-6,
            hint="with alpha=0 only (1 - alpha) * F.cross_entropy(student_logits, y) is left, on the logits "
                 "without the temperature")

_zs_grad = _zs.clone().requires_grad_(True)
_zt_grad = _zt.clone().requires_grad_(True)
with forbid(KL_FUNCTIONS, NO_BUILTIN):
    _loss = kd_loss(_zs_grad, _zt_grad, _y, T=2.0, alpha=0.5)
_loss.backward()
check_close("gradient with respect to the student's logits", _zs_grad.grad,
            expected=_reference_grad(_zs, _zt, _y, 2.0, 0.5), atol=1e-6,
            hint="the loss must be computed from student_logits with differentiable tensor operations")
check_equal("no gradient reaches the teacher's logits", _zt_grad.grad is None, expected=True,
            hint="the teacher is fixed: use teacher_logits.detach() so that backward() leaves it alone")
print("kd_loss: visible tests passed")

### BEGIN HIDDEN TESTS
_cases = [((1, 2), 1.0, 0.3, 1), ((32, 10), 4.0, 0.9, 2), ((5, 7), 8.0, 0.7, 3), ((3, 4), 0.5, 0.5, 4)]
_actual, _inputs = [], []
for _shape, _T, _alpha, _seed in _cases:
    _g = torch.Generator().manual_seed(_seed)
    _a, _b = torch.randn(*_shape, generator=_g), 2 * torch.randn(*_shape, generator=_g)
    _t = torch.randint(0, _shape[1], (_shape[0],), generator=_g)
    _inputs.append((_a, _b, _t, _T, _alpha))
    with forbid(KL_FUNCTIONS, NO_BUILTIN):
        _actual.append(kd_loss(_a, _b, _t, _T, _alpha))
check_close("other batch sizes, classes, temperatures (T = 0.5 to 8) and alphas", _actual,
            expected=[_reference_kd(*_args) for _args in _inputs], atol=1e-5, weight=2,
            hint="the loss differs from the reference for another shape, temperature or alpha")

_big_s = torch.tensor([[60.0, 0.0, -60.0], [0.0, 55.0, 0.0]])            # very confident logits
_big_t = torch.tensor([[-60.0, 60.0, 0.0], [0.0, 0.0, 80.0]])
_big_y = torch.tensor([0, 1])
with forbid(KL_FUNCTIONS, NO_BUILTIN):
    _big = kd_loss(_big_s, _big_t, _big_y, T=1.0, alpha=0.5)
check_close("very confident logits (±60) give a finite, right loss", _big,
            expected=_reference_kd(_big_s, _big_t, _big_y, 1.0, 0.5), rtol=1e-4,
            hint="softmax underflows to 0 for very confident logits and log(0) = -inf: use F.log_softmax")

with forbid(KL_FUNCTIONS, NO_BUILTIN):
    _same = kd_loss(_zt, _zt, _y, T=3.0, alpha=1.0)
check_close("identical student and teacher logits: zero distillation loss, a 0-dim tensor",
            [tuple(_same.shape), _same], expected=[(), torch.tensor(0.0)], atol=1e-6,
            hint="return a 0-dim tensor (the batch mean); KL(p || p) is 0")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "magnitude-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: a magnitude-pruning mask (2 points)
#
# Unstructured magnitude pruning zeroes the weights with the smallest absolute values. Write
# `magnitude_mask(weight, sparsity)` that returns a **mask**: a tensor of `weight`'s shape and dtype, 0.0 where a
# weight is pruned and 1.0 where it is kept (the pruned weights are `weight * mask`). The rules:
#
# - exactly `k = round(sparsity * weight.numel())` entries are pruned (Python's `round`, as
#   `torch.nn.utils.prune` does): the k with the smallest `|w|`;
# - **ties**: among equal magnitudes, the entry that comes first in `weight.flatten()` is pruned first;
# - `weight` itself is not changed, and it may have any number of dimensions.
#
# A stable sort (`torch.argsort(..., stable=True)`) gives you the tie rule for free. `torch.nn.utils.prune`'s
# functions are switched off while the tests call yours.

# %% nbgrader={"grade": false, "grade_id": "magnitude-answer", "locked": false, "schema_version": 3, "solution": true}
def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """0/1 mask of weight's shape and dtype that zeroes the round(sparsity * numel) smallest |w|.

    weight: any shape; sparsity in [0, 1]. Ties are pruned in flattened order (earlier entries first).
    """
    ### BEGIN SOLUTION
    magnitudes = weight.detach().abs().flatten()                        # (n,)
    k = round(sparsity * magnitudes.numel())
    mask = torch.ones_like(magnitudes)
    mask[torch.argsort(magnitudes, stable=True)[:k]] = 0                # the k smallest; ties: first first
    return mask.view_as(weight)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "magnitude-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _prune_mask(weight, sparsity):
    """torch.nn.utils.prune's L1 (magnitude) mask for ``weight``."""
    holder = nn.Module()
    holder.weight = nn.Parameter(weight.detach().clone())
    return prune.l1_unstructured(holder, "weight", sparsity).weight_mask


_W = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))     # (out=8, in=6)
_W_before = _W.clone()
with forbid(PRUNE_FUNCTIONS, NO_BUILTIN):
    _mask = magnitude_mask(_W, 0.5)
    _mask_37 = magnitude_mask(_W, 0.37)
check_equal("shape and dtype of the mask", [tuple(_mask.shape), str(_mask.dtype)],
            expected=[(8, 6), "torch.float32"], hint="return a mask of weight's shape and dtype (1.0 / 0.0)")
check_equal("50% of an (8, 6) weight: the same mask as prune.l1_unstructured", _mask,
            expected=_prune_mask(_W, 0.5), weight=2,
            hint="0 for the 24 entries with the smallest |w|, 1 elsewhere; compare absolute values, not signed "
                 "ones")
check_equal("exactly round(sparsity * n) zeros for sparsity 0.37 of 48 (round(17.76) = 18)",
            int((_mask_37 == 0).sum()), expected=18,
            hint="k = round(sparsity * weight.numel()): Python's round, not int() (which truncates)")
check_equal("the weight itself is unchanged", _W, expected=_W_before,
            hint="build a new mask; don't modify weight in place")
print("magnitude_mask: visible tests passed")

### BEGIN HIDDEN TESTS
_ties = torch.tensor([[0.5, -0.1, 0.1, 0.3], [0.1, -0.3, 2.0, -0.5]])
with forbid(PRUNE_FUNCTIONS, NO_BUILTIN):
    _m_ties = [magnitude_mask(_ties, _s) for _s in (2 / 8, 4 / 8, 6 / 8)]
check_equal("ties are pruned in flattened order (2, 4 and 6 of 8 entries with equal magnitudes)", _m_ties,
            expected=[torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]),
                      torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]]),
                      torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])], weight=2,
            hint="among equal |w|, prune the entry that comes first in weight.flatten(): a stable sort does "
                 "this; torch.topk and a threshold (|w| > t) do not")
_conv = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
with forbid(PRUNE_FUNCTIONS, NO_BUILTIN):
    _m_conv = magnitude_mask(_conv, 0.3)
check_equal("a 4-d float64 convolution weight at 30%: prune's mask, same dtype", [str(_m_conv.dtype), _m_conv],
            expected=["torch.float64", _prune_mask(_conv, 0.3)],
            hint="the mask has weight's shape and dtype, whatever the number of dimensions")
with forbid(PRUNE_FUNCTIONS, NO_BUILTIN):
    _m_edges = [magnitude_mask(_W, 0.0), magnitude_mask(_W, 1.0)]
check_equal("sparsity 0 keeps everything, sparsity 1 prunes everything", _m_edges,
            expected=[torch.ones(8, 6), torch.zeros(8, 6)],
            hint="sparsity 0 gives an all-ones mask and sparsity 1 an all-zeros one")
_big_w = torch.randn(64, 100, generator=torch.Generator().manual_seed(2))
with forbid(PRUNE_FUNCTIONS, NO_BUILTIN):
    _m_big = [magnitude_mask(_big_w, _s) for _s in (0.1, 0.9, 0.999)]
check_equal("a (64, 100) weight at 10%, 90% and 99.9%: prune's masks", _m_big,
            expected=[_prune_mask(_big_w, _s) for _s in (0.1, 0.9, 0.999)],
            hint="the mask differs from prune.l1_unstructured's on a larger weight")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "rows-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: a structured mask: whole rows (1 point)
#
# Structured pruning removes whole output neurons: the rows of a linear layer's weight `(out, in)` with the
# smallest **L2 norm** $\sqrt{\sum_j w_{ij}^2}$. A network pruned this way can be rebuilt narrower, so it really
# gets smaller and faster.
#
# Write `row_mask(weight, amount)`: a 0/1 mask of `weight`'s shape and dtype in which exactly
# `k = round(amount * out)` whole rows are 0, those with the smallest L2 norms; among rows with equal norms, the
# lower row index is pruned first. This is `prune.ln_structured(module, "weight", amount, n=2, dim=0)`, which
# is switched off while the tests call your function.

# %% nbgrader={"grade": false, "grade_id": "rows-answer", "locked": false, "schema_version": 3, "solution": true}
def row_mask(weight: torch.Tensor, amount: float) -> torch.Tensor:
    """0/1 mask of weight's shape (out, in) and dtype zeroing the round(amount * out) rows of smallest L2 norm."""
    ### BEGIN SOLUTION
    norms = weight.detach().norm(dim=1)                                  # (out,)
    k = round(amount * len(norms))
    keep = torch.ones_like(norms)
    keep[torch.argsort(norms, stable=True)[:k]] = 0
    return keep[:, None].expand_as(weight).clone()                     # (out, in)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "rows-tests", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def _structured_mask(weight, amount):
    """torch.nn.utils.prune's mask for removing rows by L2 norm."""
    holder = nn.Module()
    holder.weight = nn.Parameter(weight.detach().clone())
    return prune.ln_structured(holder, "weight", amount, n=2, dim=0).weight_mask


_W = torch.randn(10, 7, generator=torch.Generator().manual_seed(0))   # (out=10, in=7)
with forbid(PRUNE_FUNCTIONS, NO_BUILTIN):
    _mask = row_mask(_W, 0.3)
check_equal("30% of 10 rows: the same mask as prune.ln_structured(n=2, dim=0)", _mask,
            expected=_structured_mask(_W, 0.3), weight=2,
            hint="zero the 3 whole rows with the smallest L2 norm, weight.norm(dim=1)")
_l1_vs_l2 = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.5, 0.0, 0.0, 0.0], [3.0, 3.0, 0.0, 0.0]])  # L2: 2, 2.5, 4.2
with forbid(PRUNE_FUNCTIONS, NO_BUILTIN):
    _mask = row_mask(_l1_vs_l2, 1 / 3)
check_equal("the L2 norm decides (row 0 has the larger L1 norm but the smaller L2 norm)", _mask,
            expected=torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]),
            hint="rank rows by their L2 norm sqrt(sum w**2), not by sum |w|")
print("row_mask: visible tests passed")

### BEGIN HIDDEN TESTS
_W2 = torch.randn(16, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
with forbid(PRUNE_FUNCTIONS, NO_BUILTIN):
    _masks = [row_mask(_W2, _a) for _a in (0.0, 0.25, 0.5, 1.0)]
check_equal("a float64 (16, 5) weight at 0%, 25%, 50% and 100%: prune's masks", _masks,
            expected=[_structured_mask(_W2, _a) for _a in (0.0, 0.25, 0.5, 1.0)],
            hint="the mask has weight's dtype, and round(amount * out) whole rows are 0")
_equal_rows = torch.tensor([[1.0, 0.0], [0.0, -1.0], [0.6, 0.8], [2.0, 0.0]])   # three rows of norm 1
with forbid(PRUNE_FUNCTIONS, NO_BUILTIN):
    _mask = row_mask(_equal_rows, 0.5)
check_equal("rows with equal norms: the lower index is pruned first", _mask,
            expected=torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]),
            hint="among rows with equal norms, prune the lower row index first (a stable sort)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "quant-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: int8 quantisation and its error bound (3 points)
#
# A float tensor `x` is stored as int8 codes `q` with a float `scale` and an integer `zero_point`:
#
# $$q = \operatorname{clamp}\big(\operatorname{round}(x / \text{scale}) + \text{zero\_point},\ -128,\ 127\big),
# \qquad \hat x = \text{scale}\cdot(q - \text{zero\_point}).$$
#
# Write `quantize_int8(x, symmetric)` returning `(q, scale, zero_point)` and `dequantize_int8(q, scale,
# zero_point)` returning $\hat x$ as float32:
#
# - **symmetric**: `zero_point = 0`, `scale = max|x| / 127`;
# - **asymmetric**: the range `[lo, hi] = [min(x.min(), 0), max(x.max(), 0)]` (it always contains 0) maps onto
#   all 256 codes: `scale = (hi - lo) / 255`, `zero_point = -128 - round(lo / scale)`;
# - if `x` is all zeros, use `scale = 1.0`;
# - `q` is a `torch.int8` tensor of `x`'s shape, `scale` a Python `float`, `zero_point` a Python `int`;
#   `torch.round` rounds halves to even, as PyTorch's quantisation does.
#
# Then inside the range every value satisfies $|x - \hat x| \le \text{scale} / 2$, which the tests check
# (up to float32 rounding). The tests compare your codes with `torch.quantize_per_tensor`, which is switched off
# (with `fake_quantize_per_tensor_affine` and `dequantize`) while they call your functions.

# %% nbgrader={"grade": false, "grade_id": "quant-answer", "locked": false, "schema_version": 3, "solution": true}
def quantize_int8(x: torch.Tensor, symmetric: bool = True) -> tuple[torch.Tensor, float, int]:
    """x (any shape, float) -> (q: int8 tensor of x's shape, scale: float, zero_point: int)."""
    ### BEGIN SOLUTION
    if symmetric:
        amax = x.abs().max()
        scale = amax / 127 if amax > 0 else torch.ones(())
        zero_point = 0
    else:
        lo, hi = x.min().clamp(max=0), x.max().clamp(min=0)             # the range always contains 0
        scale = (hi - lo) / 255 if hi > lo else torch.ones(())
        zero_point = int(-128 - torch.round(lo / scale))
    q = torch.clamp(torch.round(x / scale) + zero_point, -128, 127).to(torch.int8)
    return q, scale.item(), zero_point
    ### END SOLUTION


def dequantize_int8(q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """int8 codes q (any shape) -> float32 values scale * (q - zero_point), same shape."""
    ### BEGIN SOLUTION
    return (q.to(torch.float32) - zero_point) * scale
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "quant-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def _torch_codes(x, scale, zero_point):
    """PyTorch's int8 codes of x for a given scale and zero point."""
    return torch.quantize_per_tensor(x, scale, zero_point, torch.qint8).int_repr()


def _error_within_bound(x, q, scale, zero_point):
    """max |x - dequantized| <= scale / 2, up to float32 rounding (computed without the learner's dequantize)."""
    x_hat = (q.to(torch.float32) - zero_point) * scale
    return bool((x - x_hat).abs().max() <= scale / 2 * (1 + 1e-4))


_x = torch.randn(40, generator=torch.Generator().manual_seed(0)) * 2       # signed, like weights
with forbid(QUANTIZE_FUNCTIONS, NO_BUILTIN):
    _q, _scale, _zp = quantize_int8(_x, symmetric=True)
check_equal("symmetric: int8 codes equal torch.quantize_per_tensor's", _q,
            expected=_torch_codes(_x, (_x.abs().max() / 127).item(), 0), weight=2,
            hint="q = clamp(round(x / scale), -128, 127) as torch.int8, with scale = max|x| / 127")
check_close("symmetric: (scale, zero_point)", [_scale, _zp], expected=[(_x.abs().max() / 127).item(), 0],
            rtol=1e-6, hint="scale = max|x| / 127 as a Python float (.item()), zero_point = 0 as an int")
check_true("symmetric: every error is at most scale / 2", _error_within_bound(_x, _q, _scale, _zp),
           hint="round to the nearest code: |x - scale * q| <= scale / 2 for every value")

_h = torch.relu(torch.randn(6, 9, generator=torch.Generator().manual_seed(1)))   # one-sided, like activations
with forbid(QUANTIZE_FUNCTIONS, NO_BUILTIN):
    _q, _scale, _zp = quantize_int8(_h, symmetric=False)
check_close("asymmetric on ReLU outputs: (scale, zero_point)", [_scale, _zp],
            expected=[(_h.max() / 255).item(), -128], rtol=1e-6,
            hint="lo = min(x.min(), 0) = 0 here, so scale = hi / 255 and zero_point = -128 - round(0) = -128")
check_equal("asymmetric: int8 codes equal torch.quantize_per_tensor's", _q,
            expected=_torch_codes(_h, (_h.max() / 255).item(), -128), weight=2,
            hint="q = clamp(round(x / scale) + zero_point, -128, 127)")
check_true("asymmetric: every error is at most scale / 2", _error_within_bound(_h, _q, _scale, _zp))

_codes = torch.tensor([[-128, -3, 0], [5, 100, 127]], dtype=torch.int8)
with forbid(QUANTIZE_FUNCTIONS, NO_BUILTIN):
    _deq = dequantize_int8(_codes, 0.05, -3)
check_close("dequantize_int8 of given codes (scale 0.05, zero_point -3)", [str(_deq.dtype), _deq],
            expected=["torch.float32", (_codes.float() + 3) * 0.05], atol=1e-7, weight=2,
            hint="x_hat = scale * (q - zero_point), computed in float32 (convert q with .to(torch.float32) "
                 "first: int8 arithmetic overflows)")
print("quantize_int8 / dequantize_int8: visible tests passed")

### BEGIN HIDDEN TESTS
_xs = [torch.randn(7, 5, generator=torch.Generator().manual_seed(2)) + 1.5,                      # mostly positive
       -3 * torch.rand(50, generator=torch.Generator().manual_seed(3)) - 0.2,                   # all negative
       torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(4)) * 30]                   # 3-d, wide range
_results = []
with forbid(QUANTIZE_FUNCTIONS, NO_BUILTIN):
    for _t in _xs:
        _q, _s, _z = quantize_int8(_t, symmetric=False)
        _results.append([_q, _s, _z, dequantize_int8(_q, _s, _z)])


def _asymmetric_reference(x):
    """[codes, scale, zero_point, dequantized] for asymmetric int8, from torch's quantised tensors."""
    lo, hi = x.min().clamp(max=0), x.max().clamp(min=0)
    scale = ((hi - lo) / 255).item()
    zero_point = int(-128 - torch.round(lo / scale))
    reference = torch.quantize_per_tensor(x, scale, zero_point, torch.qint8)
    return [reference.int_repr(), scale, zero_point, reference.dequantize()]


check_close("asymmetric on skewed, all-negative and 3-d tensors: codes, scale, zero point, dequantized",
            _results, expected=[_asymmetric_reference(_t) for _t in _xs], rtol=1e-6, atol=1e-6, weight=2,
            hint="the range is [min(x.min(), 0), max(x.max(), 0)]: include 0 even when all values are "
                 "positive or all negative; zero_point = -128 - round(lo / scale)")
check_true("asymmetric: errors within scale / 2 on those tensors",
           all(_error_within_bound(_t, _r[0], _r[1], _r[2]) for _t, _r in zip(_xs, _results)))
with forbid(QUANTIZE_FUNCTIONS, NO_BUILTIN):
    _zeros = [quantize_int8(torch.zeros(2, 3), symmetric=_sym) for _sym in (True, False)]
check_close("an all-zero tensor: scale 1.0, all codes equal to the zero point", _zeros,
            expected=[(torch.zeros(2, 3, dtype=torch.int8), 1.0, 0),
                      (torch.full((2, 3), -128, dtype=torch.int8), 1.0, -128)],
            hint="when x is all zeros, use scale = 1.0 (dividing by a scale of 0 gives nan)")
_w = torch.randn(300, generator=torch.Generator().manual_seed(5)) * 0.1
with forbid(QUANTIZE_FUNCTIONS, NO_BUILTIN):
    _q, _s, _z = quantize_int8(_w, symmetric=True)
    _back = dequantize_int8(_q, _s, _z)
check_close("symmetric round trip of 300 weights (dequantized values)", _back,
            expected=torch.quantize_per_tensor(_w, (_w.abs().max() / 127).item(), 0, torch.qint8).dequantize(),
            atol=1e-7, hint="quantize then dequantize should give torch's dequantized values")
check_equal("types: int8 codes, float scale, int zero point", [str(_q.dtype), type(_s).__name__,
                                                               type(_z).__name__],
            expected=["torch.int8", "float", "int"],
            hint="return q.to(torch.int8), scale as a Python float (.item() or float()), zero_point as int")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "bytes-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: predict the bytes of a quantised model (2 points)
#
# Notebook 12 quantised a model with torchao and counted what its state dict really stores. Now predict that
# number *before* measuring it. The model is an MLP `Linear(widths[0], widths[1]) → ReLU → Linear(widths[1],
# widths[2]) → … → Linear(widths[-2], widths[-1])`, every `Linear` with a bias, quantised in one of two ways:
#
# - `bits=8`: `quantize_(model, Int8WeightOnlyConfig())`;
# - `bits=4`: `quantize_(model, IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerAxis(0)))`.
#
# Both replace each weight `(out, in)` with int8-typed codes plus, per output row, one float32 scale and one
# int8 zero point (all zero, but stored); the biases stay float32. The size counted is the bytes of the tensor
# data in the state dict (`dlcourse.quantization.state_dict_bytes`: the inner tensors, not the file's overhead).
#
# Write `quantized_bytes(widths, bits)` returning that number of bytes as an int, from the widths alone.
# **Tolerance: exact** (bytes are integers). Measuring is switched off while the tests call your function; the
# test cell measures the real models and prints how far off you were.

# %% nbgrader={"grade": false, "grade_id": "bytes-answer", "locked": false, "schema_version": 3, "solution": true}
def quantized_bytes(widths: list, bits: int) -> int:
    """Bytes of tensor data in the state dict of the MLP with these widths after torchao quantisation (8 or 4 bits)."""
    ### BEGIN SOLUTION
    # codes: one int8 byte per weight at either bit width (IntxWeightOnlyConfig stores int4 values unpacked);
    # per output row: a float32 scale, an int8 zero point and a float32 bias
    return sum(n_out * n_in + n_out * (4 + 1 + 4) for n_in, n_out in zip(widths[:-1], widths[1:]))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "bytes-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
import logging

logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)   # quiet: a deprecation notice from torchao's import
try:
    import torchao.quantization as _tq
    from torchao.quantization.granularity import PerAxis
except ImportError as _err:
    raise ImportError(f'{_err.name} is not installed: pip install "dlcourse[export]" (make lab installs it)') from _err


def _measured_bytes(widths, bits):
    """state_dict_bytes of the MLP after torchao quantisation with the exercise's config for ``bits``."""
    torch.manual_seed(0)
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    _tq.quantize_(model, _tq.Int8WeightOnlyConfig() if bits == 8 else
                  _tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerAxis(0)))
    return dlcourse.quantization.state_dict_bytes(model)


def _predicted(widths, bits):
    with forbid((*MEASURING, (_tq, "quantize_")), NO_MEASURING):
        return quantized_bytes(widths, bits)


check_prediction("int8 weights, widths [64, 32, 10]", _predicted([64, 32, 10], 8),
                 expected=_measured_bytes([64, 32, 10], 8), rtol=0.0, weight=2,
                 hint="per layer: out * in one-byte codes, plus per output row a 4-byte scale, a 1-byte zero point "
                      "and a 4-byte bias")
check_prediction("4-bit weights, widths [64, 32, 10]", _predicted([64, 32, 10], 4),
                 expected=_measured_bytes([64, 32, 10], 4), rtol=0.0,
                 hint="IntxWeightOnlyConfig keeps each 4-bit code in its own int8 byte: unpacked, as notebook 12 "
                      "measured")
print("quantized_bytes: visible tests passed")

### BEGIN HIDDEN TESTS
check_prediction("int8 weights, widths [100, 300, 200, 7]", _predicted([100, 300, 200, 7], 8),
                 expected=_measured_bytes([100, 300, 200, 7], 8), rtol=0.0,
                 hint="add up every layer: out * in + 9 * out bytes each")
check_prediction("4-bit weights, widths [100, 300, 200, 7]", _predicted([100, 300, 200, 7], 4),
                 expected=_measured_bytes([100, 300, 200, 7], 4), rtol=0.0)
check_prediction("int8 weights, one layer [12, 5]", _predicted([12, 5], 8), expected=_measured_bytes([12, 5], 8),
                 rtol=0.0, hint="a single Linear(12, 5) still has its bias and per-row scale and zero point")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "bytes-after", "locked": true, "schema_version": 3, "solution": false}
# Compare with the float32 model, which stores 4 bytes per weight and bias. The cell below measures both for a
# narrow and a wide network: the wider one comes closer to a quarter, because its per-row extras are spread over
# more weights per row.

# %% nbgrader={"grade": false, "grade_id": "bytes-compare", "locked": true, "schema_version": 3, "solution": false}
_ratios = []
for _widths in ([64, 32, 10], [64, 512, 512, 10]):
    torch.manual_seed(0)
    _fp32 = dlcourse.quantization.state_dict_bytes(nn.Sequential(
        *[nn.Linear(n_in, n_out) for n_in, n_out in zip(_widths[:-1], _widths[1:])]))
    _int8 = _measured_bytes(_widths, 8)
    _ratios.append(_int8 / _fp32)
    print(f"widths {_widths}: float32 {_fp32:,} bytes, int8 {_int8:,} bytes ({_int8 / _fp32:.3f} of float32)")
assert 0.25 < _ratios[1] < _ratios[0]

# %% [markdown] nbgrader={"grade": false, "grade_id": "onnx-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 6: export to ONNX and check parity (2 points)
#
# Write two functions:
#
# - `export_onnx(model, example_X, path)` writes `model` to the ONNX file `path` with `torch.onnx.export(...,
#   dynamo=True)`. The file must hold the model as it predicts, not as it trains (dropout and batch norm behave
#   differently); name the input `"X"` and the output `"logits"`; accept **any batch size**, not only
#   `example_X`'s (`torch.export.Dim` declares a dimension dynamic); and keep the weights inside the one file (no
#   external data files next to it). `verbose=False` keeps it quiet.
# - `onnx_predict(path, X)` runs the file in ONNX Runtime on its CPU provider and returns the logits for the
#   NumPy array `X` as a NumPy array.
#
# The tests export small models, one of them handed over in training mode, and compare what *ONNX Runtime* returns
# with PyTorch's outputs in evaluation mode, for the example batch size and for others. (The exporter takes a
# second or two per model.)

# %% nbgrader={"grade": false, "grade_id": "onnx-answer", "locked": false, "schema_version": 3, "solution": true}
def export_onnx(model: nn.Module, example_X: torch.Tensor, path: str | Path) -> None:
    """Write ``model`` (in eval mode) to the ONNX file ``path``: input "X" with a dynamic batch dimension,
    output "logits", weights inside the file."""
    ### BEGIN SOLUTION
    model.eval()
    torch.onnx.export(model, (example_X,), path, dynamo=True, input_names=["X"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False)
    ### END SOLUTION


def onnx_predict(path: str | Path, X: np.ndarray) -> np.ndarray:
    """Run the ONNX file ``path`` in ONNX Runtime on X (float32, batch first); return its logits (NumPy)."""
    ### BEGIN SOLUTION
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"X": X})
    return logits
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "onnx-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
try:
    import onnx
    import onnxruntime  # noqa: F401
except ImportError as _err:
    raise ImportError(f'{_err.name} is not installed: pip install "dlcourse[export]" '
                      f"(make lab installs it)") from _err


def _torch_logits(model, X):
    """PyTorch's logits for the NumPy batch X, in eval mode, as NumPy."""
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(X)).numpy()


_tmp = tempfile.TemporaryDirectory(prefix="lab12-")   # removed at the end, or when the kernel exits
_dir = Path(_tmp.name)
torch.manual_seed(0)
_mlp = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
_gen = np.random.default_rng(0)
_X4, _X1, _X9 = (_gen.standard_normal((_n, 12)).astype(np.float32) for _n in (4, 1, 9))
export_onnx(_mlp, torch.from_numpy(_X4), _dir / "mlp.onnx")
_graph = onnx.load(_dir / "mlp.onnx").graph
check_equal("input and output names", [[_i.name for _i in _graph.input], [_o.name for _o in _graph.output]],
            expected=[["X"], ["logits"]], hint='pass input_names=["X"], output_names=["logits"]')
check_close("ONNX Runtime equals PyTorch on the example batch (4 rows)", onnx_predict(_dir / "mlp.onnx", _X4),
            expected=_torch_logits(_mlp, _X4), atol=1e-5, weight=2,
            hint="onnx_predict should return session.run(...)'s logits for the input named X, as a NumPy array")
check_close("the batch dimension is dynamic: 1 row and 9 rows",
            [onnx_predict(_dir / "mlp.onnx", _X1), onnx_predict(_dir / "mlp.onnx", _X9)],
            expected=[_torch_logits(_mlp, _X1), _torch_logits(_mlp, _X9)], atol=1e-5, weight=2,
            hint='declare the batch dimension dynamic: dynamic_shapes=({0: torch.export.Dim("batch")},)')
print("export_onnx / onnx_predict: visible tests passed")

### BEGIN HIDDEN TESTS
torch.manual_seed(1)
_cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
_cnn.train()
_images = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
_cnn(_images)                                  # one training-mode pass: batch norm's running statistics move
_cnn.train()                                   # handed over in training mode, as after a training loop
_I3, _I6 = (_gen.standard_normal((_n, 1, 8, 8)).astype(np.float32) for _n in (3, 6))
export_onnx(_cnn, torch.from_numpy(_I3), _dir / "cnn.onnx")
check_close("a CNN with batch norm and dropout, handed over in training mode: eval-mode outputs, 3 and 6 images",
            [onnx_predict(_dir / "cnn.onnx", _I3), onnx_predict(_dir / "cnn.onnx", _I6)],
            expected=[_torch_logits(_cnn, _I3), _torch_logits(_cnn, _I6)], atol=1e-4, weight=2,
            hint="call model.eval() before exporting: in training mode dropout is random and batch norm uses "
                 "the batch's statistics")
check_equal("the weights are inside the .onnx file (no external data files)",
            sorted(_p.name for _p in _dir.iterdir()), expected=["cnn.onnx", "mlp.onnx"],
            hint="pass external_data=False")
### END HIDDEN TESTS
_tmp.cleanup()                                 # the exported files were only for this test

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - Distillation: $\alpha T^2\,\mathrm{KL}(p_t^{(T)} \| p_s^{(T)}) + (1-\alpha)\,\mathrm{CE}$, from
#   log-softmaxes, averaged over the batch, with the teacher detached; $T^2$ keeps the soft term's gradients
#   from shrinking as $T$ grows.
# - Pruning masks: exactly `round(s · n)` zeros, chosen by |w| (unstructured) or by row norm (structured), with a
#   stated rule for ties; only structured pruning lets you rebuild a smaller dense layer.
# - Int8: `q = clamp(round(x / scale) + zero_point)`; symmetric for signed data, asymmetric for one-sided data;
#   inside the range the error is at most `scale / 2`.
# - A quantised model's bytes follow from its shapes: one byte per code (unless the codes are packed), plus a
#   scale and a zero point per row, plus float biases. Fewer bits save bytes only when the storage packs them.
# - Export: eval mode, named inputs and outputs, a dynamic batch dimension, and a parity check of the runtime's
#   outputs against PyTorch's before trusting the file.
#
# ## Further exercises (not graded)
#
# 1. Use your `magnitude_mask` with `prune.custom_from_mask` to prune a trained MLP and fine-tune it. Does the
#    sparsity stay exact?
# 2. Quantise each row of a weight matrix separately with your `quantize_int8`. How much smaller is the error
#    when one row holds an outlier?
# 3. Time `onnx_predict` with the session created once versus on every call. What dominates for one image?
