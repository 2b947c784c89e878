# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 11: LoRA from scratch
#
# This lab goes with notebook 11. You write the pieces of LoRA (low-rank adaptation) yourself, and plain
# tensor arithmetic checks each one.
#
# **Learning goals.** After this lab you can
# - write a `LoRALinear` layer: a frozen `nn.Linear` plus a trainable update $\frac{\alpha}{r} B A$, with $B$
#   initialised to zero so that the adapted layer starts equal to the base;
# - merge the update into the weights for inference, and unmerge it to get the base weights back;
# - replace the layers of a model that match a name pattern;
# - freeze everything except the adapters, and count trainable and total parameters correctly;
# - predict the FLOPs of a LoRA layer's training step, and measure them with `FlopCounterMode`.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab11_lora_transfer.ipynb` tells you what passes.
# Each exercise is graded on its own: a later one never calls your answer to an earlier one.
#
# **Time.** About 55–85 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 12 in all: `LoRALinear` 3, merge and unmerge 2, injection by name 3, freezing and counting 2,
# predicting the FLOPs of a step 2.
#
# **Notation.** A linear layer computes $y = W_0 x + b$ with $W_0$ of shape (out, in). LoRA adds
# $\frac{\alpha}{r} B A x$ with $A$ of shape (r, in) and $B$ of shape (out, r); r is the rank, alpha a scale.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import math
import re
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dlcourse
from dlcourse.grading.checks import check_close, check_equal, check_prediction, forbid
from dlcourse.models import GPT

cfg = dlcourse.setup(seed=0)


# The tests build their inputs with these two, so every run sees the same numbers.
def seeded_linear(seed: int, n_in: int, n_out: int, bias: bool = True, dtype=torch.float32) -> nn.Linear:
    """An nn.Linear with the same weights every time it is called with the same arguments."""
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out, bias=bias, dtype=dtype)


def seeded_tensors(seed: int, *shapes: tuple[int, ...], dtype=torch.float32) -> list[torch.Tensor]:
    """Standard-normal tensors of the given shapes, the same for the same seed."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=dtype) for s in shapes]

# %% [markdown] nbgrader={"grade": false, "grade_id": "lora-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: `LoRALinear` (3 points)
#
# Write a module that wraps a pretrained `nn.Linear` called `base` and computes
# $$y = \text{base}(x) + \frac{\alpha}{r}\, B A\, \text{dropout}(x).$$
#
# What the tests require of `LoRALinear(base, r, alpha, dropout=0.0)`:
# - `self.base` is the layer it was given, **frozen**: none of its parameters requires gradients; the only
#   trainable parameters are `self.lora_A` (shape `(r, base.in_features)`) and `self.lora_B` (shape
#   `(base.out_features, r)`), with the dtype and device of `base.weight`;
# - a new layer computes exactly what `base` computes: $B$ starts at zero, while $A$ starts random,
#   distributed like the weights of a fresh `nn.Linear` with the same `in_features`;
# - `self.scaling` is `alpha / r`;
# - the dropout (an `nn.Dropout` module, so that it is off in eval mode) acts on the input of the low-rank
#   branch only: the frozen path always sees `x` as it is;
# - `forward` accepts `x` of shape `(..., in_features)`, returns `(..., out_features)`, and never forms the
#   (out, in) matrix $BA$: the branch costs two thin products.

# %% nbgrader={"grade": false, "grade_id": "lora-answer", "locked": false, "schema_version": 3, "solution": true}
class LoRALinear(nn.Module):
    """base(x) + (alpha / r) · B A dropout(x), with base frozen. (..., in_features) -> (..., out_features).

    lora_A: (r, in_features), Kaiming-uniform; lora_B: (out_features, r), zeros; scaling = alpha / r.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        self.base = base
        self.base.requires_grad_(False)
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=weight.dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=weight.dtype,
                                               device=weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)
        ### END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        return self.base(x) + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "lora-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def _set_lora(layer, A, B):
    """Put given values into the layer's lora_A and lora_B (as if it had been trained)."""
    with torch.no_grad():
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)


_x, _A, _B = seeded_tensors(1, (4, 6), (2, 6), (5, 2))     # x: (N, in=6), A: (r=2, in), B: (out=5, r)
_layer = LoRALinear(seeded_linear(0, 6, 5), r=2, alpha=4.0)
check_equal("shapes of lora_A (r, in) and lora_B (out, r)",
            [tuple(_layer.lora_A.shape), tuple(_layer.lora_B.shape)], expected=[(2, 6), (5, 2)],
            hint="lora_A is (r, base.in_features), lora_B is (base.out_features, r)")
check_equal("lora_B starts at zero", _layer.lora_B.detach().clone(), expected=torch.zeros(5, 2),
            hint="initialise lora_B with zeros (and lora_A randomly), so that B A = 0 at the start")
check_equal("trainable parameters: lora_A and lora_B only",
            sorted(n for n, p in _layer.named_parameters() if p.requires_grad), expected=["lora_A", "lora_B"],
            hint="make lora_A and lora_B nn.Parameters, and freeze the base with base.requires_grad_(False)")
check_close("starts equal to the base layer", _layer(_x).detach(),
            expected=seeded_linear(0, 6, 5)(_x).detach(), atol=1e-6,
            hint="with B = 0 the low-rank branch adds nothing: the output is base(x)")
_set_lora(_layer, _A, _B)
check_close("with trained A and B: W0 x + b + (alpha / r) B A x", _layer(_x).detach(),
            expected=(seeded_linear(0, 6, 5)(_x)
                      + (4.0 / 2) * _x @ (_B @ _A).T).detach(), atol=1e-5, weight=2,
            hint="scaling = alpha / r multiplies the branch x @ A.T @ B.T (A is (r, in), B is (out, r))")
print("LoRALinear: visible tests passed")

### BEGIN HIDDEN TESTS
_bound = 1 / math.sqrt(6)                  # kaiming_uniform_ with a=sqrt(5): U(-1/sqrt(in), 1/sqrt(in))
_fresh = LoRALinear(seeded_linear(0, 6, 5), r=3, alpha=3.0)
check_equal("lora_A is random, within ±1/sqrt(in_features) like nn.Linear's weights",
            [bool(_fresh.lora_A.abs().max() <= _bound + 1e-6), bool(_fresh.lora_A.std() > 0.05)],
            expected=[True, True], hint="nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))")
_x3, _A3, _B3 = seeded_tensors(2, (2, 3, 6), (3, 6), (5, 3))         # a batch of sequences: (B, T, in)
_set_lora(_fresh, _A3, _B3)
check_close("inputs with more dimensions (B, T, in), r = 3, alpha = 3", _fresh(_x3).detach(),
            expected=(seeded_linear(0, 6, 5)(_x3)
                      + (3.0 / 3) * _x3 @ (_B3 @ _A3).T).detach(), atol=1e-5,
            hint="use x @ A.T @ B.T, which works for any leading dimensions")
_fresh(_x3).pow(2).sum().backward()
_A3g, _B3g = _A3.clone().requires_grad_(True), _B3.clone().requires_grad_(True)
check_close("gradients of lora_A and lora_B; none for the base",
            [_fresh.lora_A.grad, _fresh.lora_B.grad, _fresh.base.weight.grad is None],
            expected=list(torch.autograd.grad(
                (seeded_linear(0, 6, 5)(_x3)
                 + _x3 @ _A3g.T @ _B3g.T).pow(2).sum(), [_A3g, _B3g])) + [True], atol=1e-4,
            hint="lora_A and lora_B must be used in forward as parameters (no .detach(), no copies)")
_drop = LoRALinear(seeded_linear(0, 6, 5), r=2, alpha=4.0, dropout=1.0)
_set_lora(_drop, _A, _B)
check_close("dropout applies to the low-rank branch only (dropout=1.0 in training mode leaves base(x))",
            _drop.train()(_x).detach(), expected=seeded_linear(0, 6, 5)(_x),
            atol=1e-6,
            hint="y = base(x) + scaling * (dropout(x) @ A.T @ B.T): the frozen path is not dropped")
check_close("no dropout in eval mode", _drop.eval()(_x).detach(),
            expected=(seeded_linear(0, 6, 5)(_x)
                      + (4.0 / 2) * _x @ (_B @ _A).T).detach(), atol=1e-5,
            hint="use an nn.Dropout module (self.dropout), which does nothing in eval mode")
_x64, _A64, _B64 = seeded_tensors(3, (3, 4), (2, 4), (3, 2), dtype=torch.float64)
_double = LoRALinear(seeded_linear(0, 4, 3, bias=False, dtype=torch.float64), r=2, alpha=1.0)
_set_lora(_double, _A64, _B64)
check_close("a float64 base layer without bias: dtype and values",
            [str(_double.lora_A.dtype), str(_double.lora_B.dtype), _double(_x64).detach()],
            expected=["torch.float64", "torch.float64",
                      (seeded_linear(0, 4, 3, bias=False, dtype=torch.float64)(_x64)
                       + 0.5 * _x64 @ (_B64 @ _A64).T).detach()], atol=1e-10,
            hint="create lora_A and lora_B with dtype=base.weight.dtype (and its device)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "merge-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: merge and unmerge (2 points)
#
# After training, the update can be folded into the weight: $W = W_0 + \frac{\alpha}{r} B A$ is an ordinary
# weight matrix, so the deployed layer costs one matrix product, like the original.
#
# - `merge_lora(base, lora_A, lora_B, scaling)` returns a **new** `nn.Linear` with the same in/out features,
#   dtype and bias as `base` (no bias if `base` has none) and weight $W_0 + \text{scaling} \cdot B A$.
#   `base` itself must stay unchanged: copy, don't share, its tensors (`.clone()`).
# - `unmerge_lora(merged, lora_A, lora_B, scaling)` does the inverse: a new `nn.Linear` with weight
#   $W - \text{scaling} \cdot B A$ and the same bias.
#
# Shapes: `base.weight` is (out, in), `lora_A` is (r, in), `lora_B` is (out, r). Compute under
# `torch.no_grad()`, so the new weights are plain trainable parameters without any autograd history.

# %% nbgrader={"grade": false, "grade_id": "merge-answer", "locked": false, "schema_version": 3, "solution": true}
def merge_lora(base: nn.Linear, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> nn.Linear:
    """A new nn.Linear with weight W0 + scaling · B A and base's bias. W0 (out, in), A (r, in), B (out, r)."""
    ### BEGIN SOLUTION
    weight = base.weight
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                       dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        merged.weight.copy_(weight + scaling * lora_B @ lora_A)     # (out, r) @ (r, in) -> (out, in)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged
    ### END SOLUTION


def unmerge_lora(merged: nn.Linear, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> nn.Linear:
    """A new nn.Linear with weight W - scaling · B A and merged's bias: the inverse of merge_lora."""
    ### BEGIN SOLUTION
    return merge_lora(merged, lora_A, lora_B, -scaling)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "merge-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
_x, _A, _B = seeded_tensors(4, (4, 6), (2, 6), (5, 2))     # x: (N, in=6), A: (r=2, in), B: (out=5, r)
_base = seeded_linear(0, 6, 5).requires_grad_(False)                  # a frozen base, as inside a LoRA layer
_merged = merge_lora(_base, _A, _B, 1.5)
assert isinstance(_merged, nn.Linear), f"merge_lora should return an nn.Linear, not {type(_merged).__name__}"
check_close("the merged layer computes W0 x + b + scaling · B A x", _merged(_x).detach(),
            expected=(seeded_linear(0, 6, 5)(_x)
                      + 1.5 * _x @ (_B @ _A).T).detach(), atol=1e-5, weight=2,
            hint="the update B @ A has the weight's shape (out, in); multiply it by scaling")
check_close("the base layer is left unchanged", [_base.weight.detach(), _base.bias.detach()],
            expected=[seeded_linear(0, 6, 5).weight.detach(), seeded_linear(0, 6, 5).bias.detach()],
            hint="build a new nn.Linear and copy values into it; don't add to base.weight in place")
_restored = unmerge_lora(_merged, _A, _B, 1.5)
check_close("unmerge_lora(merge_lora(base)) gives back W0 and b",
            [_restored.weight.detach(), _restored.bias.detach()],
            expected=[seeded_linear(0, 6, 5).weight.detach(), seeded_linear(0, 6, 5).bias.detach()],
            atol=1e-6,
            hint="unmerge subtracts the same scaling · B @ A, and keeps the bias")
print("merge and unmerge: visible tests passed")

### BEGIN HIDDEN TESTS
_x64, _A64, _B64 = seeded_tensors(5, (3, 4), (3, 4), (7, 3), dtype=torch.float64)
_base64 = seeded_linear(1, 4, 7, bias=False, dtype=torch.float64)
_m64 = merge_lora(_base64, _A64, _B64, 0.25)
check_close("a float64 layer without bias: merged output, dtype and bias",
            [_m64(_x64).detach(), str(_m64.weight.dtype), _m64.bias is None],
            expected=[(seeded_linear(1, 4, 7, bias=False, dtype=torch.float64)(_x64)
                       + 0.25 * _x64 @ (_B64 @ _A64).T).detach(), "torch.float64", True], atol=1e-10,
            hint="keep the dtype of base.weight, and give the new layer a bias only if base has one")
check_close("unmerge of a float64 layer without bias",
            [unmerge_lora(_m64, _A64, _B64, 0.25).weight.detach()],
            expected=[seeded_linear(1, 4, 7, bias=False, dtype=torch.float64).weight.detach()], atol=1e-12,
            hint="subtract scaling · B @ A from the merged weight")
_b = seeded_linear(0, 6, 5)                                     # a base that requires grad
_m = merge_lora(_b, _A, _B, 1.5)
with torch.no_grad():
    _m.weight.add_(1.0)                                         # changing the merged layer ...
check_close("the merged layer's weight is a trainable leaf, not a view of the base's",
            [_m.weight.grad_fn is None, _m.weight.requires_grad, isinstance(_m.weight, nn.Parameter),
             _b.weight.detach()],
            expected=[True, True, True, seeded_linear(0, 6, 5).weight.detach()],
            hint="compute under torch.no_grad() and copy the result into a new layer's parameters")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "inject-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: adapters by module name (3 points)
#
# LoRA libraries pick the layers to adapt by matching module names against a pattern. Every module of a model
# has a dotted name (`model.named_modules()`); the `GPT` of `dlcourse.models` has, for example,
# `blocks.0.attn.qkv`, `blocks.0.attn.out`, `blocks.0.mlp.0`, `blocks.0.mlp.2`, ..., `head`.
#
# Write `inject(model, pattern, make_adapter)`: every module that is an `nn.Linear` **and** whose full
# name matches the regular expression `pattern` as a whole (`re.fullmatch`) is replaced, in place, by
# `make_adapter(linear)`, so that afterwards `model.get_submodule(name)` is the adapter wrapping that very
# layer. This must work at any depth, inside an `nn.Sequential` (children named `"0"`, `"1"`, ...) and for a
# layer of the model itself (`head`). Layers that `make_adapter` creates are never replaced in turn. Return the
# replaced names in the order of `named_modules()`; an empty list when nothing matches.

# %% nbgrader={"grade": false, "grade_id": "inject-answer", "locked": false, "schema_version": 3, "solution": true}
def inject(model: nn.Module, pattern: str, make_adapter: Callable[[nn.Linear], nn.Module]) -> list[str]:
    """Replace each nn.Linear whose full name matches ``pattern`` (re.fullmatch) by make_adapter(it).

    Returns the replaced names, in the order of model.named_modules().
    """
    ### BEGIN SOLUTION
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and re.fullmatch(pattern, name):
            parent_name, _, child_name = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child_name, make_adapter(module))
            replaced.append(name)
    return replaced
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "inject-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
class _Tag(nn.Module):
    """A stand-in adapter: remembers the layer it wraps and computes the same thing."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(x)


def _gpt(seed=0, num_layers=2):
    torch.manual_seed(seed)
    return GPT(vocab_size=11, max_len=6, d_model=8, num_heads=2, num_layers=num_layers)


def _wrapped(model):
    """Names of the _Tag modules, and whether each wraps an nn.Linear directly."""
    return [(n, type(m.base).__name__) for n, m in model.named_modules() if isinstance(m, _Tag)]


_idx = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(0))
_model = _gpt()
_originals = dict(_model.named_modules())
_names = inject(_model, r"blocks\.\d+\.attn\.(qkv|out)", _Tag)
check_equal("returns the replaced names, in order", _names,
            expected=["blocks.0.attn.qkv", "blocks.0.attn.out", "blocks.1.attn.qkv", "blocks.1.attn.out"],
            hint="go through model.named_modules() and keep the names of the nn.Linear layers that match")
check_equal("those layers are now adapters wrapping the original nn.Linear", _wrapped(_model),
            expected=[(n, "Linear") for n in ["blocks.0.attn.qkv", "blocks.0.attn.out", "blocks.1.attn.qkv",
                                              "blocks.1.attn.out"]],
            hint="setattr(parent, child_name, make_adapter(layer)) with parent = model.get_submodule(...)")
check_equal("each adapter wraps the very layer that was there", 
            [_model.get_submodule(n).base is _originals[n]
             for n in ["blocks.0.attn.qkv", "blocks.1.attn.out"]],
            expected=[True, True], hint="pass the existing layer object to make_adapter (no copies)")
check_close("the model still computes the same logits", _model(_idx).detach(),
            expected=_gpt()(_idx).detach(), atol=1e-6,
            hint="replace only the matching layers, in place, and leave the others alone")
_model = _gpt()
check_equal("layers inside an nn.Sequential (mlp.0, mlp.2) and the top-level head",
            [inject(_model, r"blocks\.1\.mlp\.\d|head", _Tag), [n for n, _ in _wrapped(_model)]],
            expected=[["blocks.1.mlp.0", "blocks.1.mlp.2", "head"]] * 2,
            hint="setattr(parent, '0', new) works for nn.Sequential; for 'head' the parent is the model "
                 "itself")
print("inject: visible tests passed")

### BEGIN HIDDEN TESTS
_model = _gpt()
check_equal("the whole name must match (re.fullmatch, not re.search)",
            [inject(_model, r"qkv|head", _Tag), inject(_gpt(), r"mlp\.0", _Tag),
             inject(_gpt(), r"blocks\.1", _Tag)],
            expected=[["head"], [], []],
            hint="re.fullmatch(pattern, name): 'qkv' does not match 'blocks.0.attn.qkv'")
_model = _gpt()
check_equal("only nn.Linear layers are replaced, and each only once (pattern '.*')",
            [inject(_model, r".*", _Tag), _wrapped(_model)],
            expected=[[f"blocks.{i}.{n}" for i in range(2)
                       for n in ("attn.qkv", "attn.out", "mlp.0", "mlp.2")] + ["head"],
                      [(f"blocks.{i}.{n}", "Linear") for i in range(2)
                       for n in ("attn.qkv", "attn.out", "mlp.0", "mlp.2")] + [("head", "Linear")]],
            hint="skip modules that are not nn.Linear (containers, LayerNorm, Embedding) and loop over a "
                 "list taken before replacing anything")
_model = _gpt(num_layers=12)
check_equal("twelve blocks: r'blocks\\.1\\..*' is block 1 only; r'blocks\\.1' names no linear layer",
            [inject(_model, r"blocks\.1\..*", _Tag), inject(_gpt(num_layers=12), r"blocks\.1", _Tag)],
            expected=[["blocks.1.attn.qkv", "blocks.1.attn.out", "blocks.1.mlp.0", "blocks.1.mlp.2"], []],
            hint="use re.fullmatch on the full dotted name: re.search(r'blocks\\.1', name) also finds blocks.10 "
                 "and blocks.11")
_model = _gpt()
check_equal("a pattern that matches only non-linear modules replaces nothing",
            [inject(_model, r"tok|ln|blocks\.0\.ln1", _Tag), _wrapped(_model)], expected=[[], []],
            hint="return an empty list when no nn.Linear matches")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "count-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: freeze all but the adapters, and count (2 points)
#
# - `mark_only_lora_trainable(model)`: set `requires_grad = True` on every parameter whose name (from
#   `model.named_parameters()`) contains `"lora_"`, and `False` on all the others, whatever they were before.
# - `count_parameters(model)`: return `(trainable, total)`, the numbers of scalar parameters (elements) that
#   require gradients, and of all parameters. Count a parameter shared by two modules (tied weights) once, and
#   count parameters only: buffers such as BatchNorm's running statistics are not parameters.
#
# Both return plain Python values: `count_parameters` a tuple of two `int`s.

# %% nbgrader={"grade": false, "grade_id": "count-answer", "locked": false, "schema_version": 3, "solution": true}
def mark_only_lora_trainable(model: nn.Module) -> None:
    """requires_grad = True for parameters whose name contains 'lora_', False for every other parameter."""
    ### BEGIN SOLUTION
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name
    ### END SOLUTION


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of scalar parameters; shared parameters counted once, buffers not at all."""
    ### BEGIN SOLUTION
    params = list(model.parameters())                      # parameters() lists a shared parameter once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "count-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
class _Adapted(nn.Module):
    """A stand-in LoRA layer: a Linear plus lora_A (r, in) and lora_B (out, r) parameters."""

    def __init__(self, n_in, n_out, r):
        super().__init__()
        self.base = nn.Linear(n_in, n_out)
        self.lora_A = nn.Parameter(torch.randn(r, n_in))
        self.lora_B = nn.Parameter(torch.zeros(n_out, r))

    def forward(self, x):
        return self.base(x) + x @ self.lora_A.T @ self.lora_B.T


def _toy(seed=0):
    """Embedding(10, 8), adapted 8->16 (r=2), ReLU, Linear 16->8, BatchNorm1d(8), adapted 8->4 (r=1)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Embedding(10, 8), _Adapted(8, 16, 2), nn.ReLU(), nn.Linear(16, 8),
                         nn.BatchNorm1d(8), _Adapted(8, 4, 1))


_model = _toy()
_model[0].requires_grad_(False)                                  # some parameters start frozen ...
_model[1].lora_B.requires_grad_(False)                           # ... including an adapter's
mark_only_lora_trainable(_model)
check_equal("trainable after mark_only_lora_trainable: the lora_ parameters, all of them",
            sorted(n for n, p in _model.named_parameters() if p.requires_grad),
            expected=["1.lora_A", "1.lora_B", "5.lora_A", "5.lora_B"],
            hint="set requires_grad on every parameter: True if 'lora_' is in its name, else False")
_counts = count_parameters(_model)
check_equal("count_parameters: (trainable, total)", _counts,
            expected=(2 * 8 + 16 * 2 + 1 * 8 + 4 * 1,
                      10 * 8 + (8 * 16 + 16) + 2 * 8 + 16 * 2 + (16 * 8 + 8) + 2 * 8 + (8 * 4 + 4) + 8 + 4),
            hint="sum p.numel() over model.parameters(); return a tuple (trainable, total) of ints")
print("freezing and counting: visible tests passed")

### BEGIN HIDDEN TESTS
_tied = GPT(vocab_size=12, max_len=4, d_model=8, num_heads=2, num_layers=1)
_tied.head.weight = _tied.tok.weight                    # weight tying: one (12, 8) matrix, used twice
_tied.head.requires_grad_(False)
check_equal("tied weights counted once", count_parameters(_tied),
            expected=(sum(p.numel() for p in _tied.parameters() if p.requires_grad),
                      sum(p.numel() for p in _tied.parameters())),
            hint="model.parameters() lists a shared parameter only once; summing over modules does not")
_bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
_bn[0].requires_grad_(False)
check_equal("buffers are not parameters, frozen parameters are not trainable", count_parameters(_bn),
            expected=(8, 24), hint="count model.parameters(), not model.state_dict() (it holds buffers too)")
_model = _toy()
mark_only_lora_trainable(_model)
mark_only_lora_trainable(_model)
check_equal("calling it twice changes nothing; the frozen model counts right",
            [sorted(n for n, p in _model.named_parameters() if p.requires_grad), count_parameters(_model)],
            expected=[["1.lora_A", "1.lora_B", "5.lora_A", "5.lora_B"], (60, 472)],
            hint="assign requires_grad (True or False) rather than toggling it")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "flops-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: predict the compute of a training step, then measure it (2 points)
#
# Notebook 11 counted the FLOPs of whole training steps. Here you predict them for one layer, on paper, before
# `torch.utils.flop_counter.FlopCounterMode` measures them. The set-up: `n_tokens` rows `x` of shape
# `(n_tokens, d_in)` go through one layer without bias, the output is reduced to a loss, and autograd runs the
# backward pass, computing every gradient it needs and no other.
#
# - `r == 0`, **full fine-tuning**: $y = x W^\top$ with a trainable $W$ of shape `(d_out, d_in)`.
# - `r > 0`, **LoRA**: $y = x W^\top + s\,(x A^\top) B^\top$ with $W$ frozen and trainable $A$ `(r, d_in)` and
#   $B$ `(d_out, r)`, the products evaluated in that order (as your `LoRALinear` does); $s$ is a number.
# - `input_grad`: whether `x` requires a gradient. It does for every layer with trainable layers before it; it
#   does not for the first layer of a LoRA model, whose input comes from frozen embeddings.
#
# Count the FLOPs of the matrix products of the forward and the backward pass together, as `FlopCounterMode`
# does: a product of an (a × b) by a (b × c) matrix costs $2abc$ (a multiply and an add each); elementwise
# work (the scaling, additions, the loss) counts nothing. Write `step_flops(n_tokens, d_in, d_out, r,
# input_grad)` returning the count as an `int`. **Tolerance:** within 1 % of the measured count, for the
# arguments below and for others the grader tries. `FlopCounterMode` is switched off while your function runs.

# %% nbgrader={"grade": false, "grade_id": "flops-answer", "locked": false, "schema_version": 3, "solution": true}
def step_flops(n_tokens: int, d_in: int, d_out: int, r: int = 0, input_grad: bool = True) -> int:
    """Matrix-product FLOPs of one forward and backward pass of a linear layer: full (r == 0) or LoRA (r > 0)."""
    ### BEGIN SOLUTION
    n = n_tokens
    product = 2 * n * d_in * d_out                     # one (n, in) @ (in, out) product
    flops = product                                    # forward: x W^T
    if input_grad:
        flops += product                               # dL/dx = dL/dy W
    if r == 0:
        return flops + product                         # dL/dW = dL/dy^T x: only when W is trainable
    flops += 2 * n * d_in * r + 2 * n * r * d_out      # forward: h = x A^T, then h B^T
    flops += 2 * n * r * d_out                         # dL/dh = (s dL/dy) B
    flops += 2 * n * r * d_out                         # dL/dB = (s dL/dy)^T h
    flops += 2 * n * r * d_in                          # dL/dA = dL/dh^T x
    if input_grad:
        flops += 2 * n * r * d_in                      # dL/dx through the branch: dL/dh A
    return flops
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "flops-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
NO_FLOP_COUNTER = "work it out on paper: FlopCounterMode is switched off while step_flops runs"


def _predicted(*args):
    with forbid(((FlopCounterMode, "__enter__"),), NO_FLOP_COUNTER):
        return step_flops(*args)


def _measured(n_tokens, d_in, d_out, r=0, input_grad=True):
    """FlopCounterMode's count for one forward and backward pass, on meta tensors (shapes only, no arithmetic)."""
    x = torch.empty(n_tokens, d_in, device="meta", requires_grad=input_grad)
    W = torch.empty(d_out, d_in, device="meta", requires_grad=r == 0)
    with FlopCounterMode(display=False) as counter:
        y = x @ W.T
        if r:
            A = torch.empty(r, d_in, device="meta", requires_grad=True)
            B = torch.empty(d_out, r, device="meta", requires_grad=True)
            y = y + 2.0 * (x @ A.T @ B.T)
        y.sum().backward()
    return counter.get_total_flops()


check_prediction("full fine-tuning: 64 tokens, 32 -> 48", _predicted(64, 32, 48, 0, True),
                 expected=_measured(64, 32, 48, 0, True), rtol=0.01,
                 hint="the backward pass of y = x W^T has two products the size of the forward one")
check_prediction("LoRA r = 4: 64 tokens, 32 -> 48, x needs a gradient", _predicted(64, 32, 48, 4, True),
                 expected=_measured(64, 32, 48, 4, True), rtol=0.01,
                 hint="a frozen W needs no gradient of its own; the gradient still flows through x W^T to x, and "
                      "the branch's two thin products have a backward pass too")
check_prediction("LoRA r = 4: 64 tokens, 32 -> 48, the first layer (x needs no gradient)",
                 _predicted(64, 32, 48, 4, False), expected=_measured(64, 32, 48, 4, False), rtol=0.01,
                 hint="without input_grad, no product computes dL/dx; dL/dA still needs the gradient of x A^T")
print("step_flops: visible tests passed")

### BEGIN HIDDEN TESTS
check_prediction("full fine-tuning of a first layer: 10 tokens, 100 -> 7", _predicted(10, 100, 7, 0, False),
                 expected=_measured(10, 100, 7, 0, False), rtol=0.01,
                 hint="without input_grad the backward pass only computes dL/dW")
check_prediction("LoRA r = 16: 128 tokens, 24 -> 200", _predicted(128, 24, 200, 16, True),
                 expected=_measured(128, 24, 200, 16, True), rtol=0.01,
                 hint="count the branch for in != out: x A^T is (n, r) from (n, in), h B^T is (n, out) from (n, r)")
check_prediction("LoRA r = 3, first layer: 50 tokens, 90 -> 20", _predicted(50, 90, 20, 3, False),
                 expected=_measured(50, 90, 20, 3, False), rtol=0.01,
                 hint="the first layer: no dL/dx, neither through W nor through the branch")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "flops-at-scale", "locked": true, "schema_version": 3, "solution": false}
# How does the saving grow with the layer? For square layers with LoRA of rank 8 on 64 tokens, the measured
# count of a LoRA step as a fraction of full fine-tuning's (a layer in the middle of a model: `input_grad`):

# %% nbgrader={"grade": false, "grade_id": "flops-at-scale-print", "locked": true, "schema_version": 3, "solution": false}
for _d in (64, 256, 1024, 4096):
    print(f"{_d:>5} x {_d:<5} r = 8: LoRA / full = "
          f"{_measured(64, _d, _d, 8, True) / _measured(64, _d, _d, 0, True):.3f}")
# 2/3 in the limit: per frozen weight and token, 2 (forward) + 2 (dL/dx) FLOPs instead of 2 + 2 + 2 (dL/dW)

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - A `LoRALinear` keeps the pretrained layer frozen and adds $\frac{\alpha}{r} B A x$; with $B = 0$ at the
#   start, the adapted model begins exactly where the pretrained one is.
# - Merging adds $\frac{\alpha}{r} B A$ to the weight (one matrix product at inference); unmerging subtracts
#   it again, giving the base weights back up to rounding.
# - Adapters go in by module name: match whole dotted names with `re.fullmatch`, replace only `nn.Linear`
#   layers, in their parent, from a list taken before changing the model.
# - Freeze by name, then count with `model.parameters()`: shared parameters once, buffers never.
# - A LoRA step skips the weight gradients of the frozen weights: per frozen weight and token 4 FLOPs instead
#   of 6, so towards $\frac{2}{3}$ of full fine-tuning's products, plus the adapters' own thin products.
#
# ## Further exercises (not graded)
#
# 1. Put your pieces together: `inject(gpt, pattern, lambda layer: LoRALinear(layer, r=4, alpha=8))`, then
#    `mark_only_lora_trainable` and `count_parameters`, on a `dlcourse.models.GPT`. Compare the counts with
#    the formula r · (in + out) per adapted layer.
# 2. Add `merge()` and `unmerge()` methods to your `LoRALinear` that change `base.weight` in place (under
#    `torch.no_grad()`) and a `merged` flag that makes `forward` skip the low-rank branch. Check that the
#    outputs before and after merging agree.
# 3. Fine-tune the GPT of notebook 11 with your LoRA on the documentation text and compare the loss with the
#    notebook's table.
# 4. Which is faster on your machine for a batch of 64 sequences: the unmerged layer (`x @ A.T @ B.T`) or
#    forming `B @ A` first? Does the answer change with r, or with in/out features of 4096?
