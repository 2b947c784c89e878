# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 02: initialisation and normalisation
#
# This lab goes with notebook 02. You write He initialisation and three normalisation layers from tensor
# operations, and PyTorch's own modules check every number.
#
# **Learning goals.** After this lab you can
# - initialise a layer so that a deep ReLU network keeps the scale of its signal (He initialisation), for
#   linear and convolutional layers;
# - write BatchNorm's training-mode forward pass, including the running statistics exactly as `nn.BatchNorm1d`
#   keeps them, and its evaluation-mode forward pass;
# - write LayerNorm and RMSNorm, and say how they differ from BatchNorm and from each other;
# - predict how the scale of a signal changes through a deep ReLU network under any initialisation.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab02_init_normalization.ipynb` tells you what
# passes.
#
# **Time.** About 70–100 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 11 in all: He initialisation 2, BatchNorm in training mode 3, BatchNorm in evaluation mode 1,
# LayerNorm 2, RMSNorm 2, the signal's scale through depth (predict, then measure) 1.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import math

import torch
import torch.nn.functional as F
from torch import nn

import dlcourse
from dlcourse.grading.checks import check_close, check_equal, check_prediction, forbid

cfg = dlcourse.setup(seed=0)
# Tests of from-scratch code switch torch's own versions off while they call yours.
INIT_FUNCTIONS = ((nn.init, "kaiming_normal_"), (nn.init, "kaiming_uniform_"), (nn.init, "xavier_normal_"),
                  (nn.init, "xavier_uniform_"))
NORM_FUNCTIONS = ((F, "batch_norm"), (torch, "batch_norm"), (F, "layer_norm"), (torch, "layer_norm"),
                  (F, "rms_norm"), (torch, "rms_norm"), (F, "group_norm"), (torch, "group_norm"),
                  (F, "instance_norm"), (F, "normalize"))
NO_BUILTIN = ("write this from tensor operations (mean, var, sqrt, ...): torch's normalisation and "
              "initialisation functions are switched off while the tests call yours")

# %% [markdown] nbgrader={"grade": false, "grade_id": "he-init-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: He initialisation (2 points)
#
# Through a linear layer followed by a ReLU, the second moment of the signal is multiplied by
# $\tfrac12\, n_\text{in}\, \sigma^2$, where $n_\text{in}$ is the layer's **fan-in** (how many inputs each
# output unit sums over) and $\sigma^2$ the variance of its weights. He initialisation makes that factor 1:
#
# $$w \sim \mathcal N\big(0,\ \sigma^2 = 2 / n_\text{in}\big), \qquad \text{bias} = 0.$$
#
# Write `he_init_(layer, generator=None)` that re-initialises `layer.weight` **in place** with these samples
# and sets `layer.bias` (when there is one) to zero, then returns the layer, which must still be trainable. It
# must work for `nn.Linear`, whose weight is `(out_features, in_features)`, and for `nn.Conv2d`, whose weight
# is `(out_channels, in_channels, kh, kw)`: work out from the weight's shape how many inputs one output sums.
#
# Draw the samples from the `generator` you are given, in the weight's shape, so that a seeded run is
# reproducible and gives the same numbers as `nn.init.kaiming_normal_` with that generator (both
# `torch.randn(shape, generator=generator)` and `tensor.normal_(mean, std, generator=generator)` do).
# `nn.init.kaiming_normal_` and friends are switched off during the tests.

# %% nbgrader={"grade": false, "grade_id": "he-init-answer", "locked": false, "schema_version": 3, "solution": true}
def he_init_(layer: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Fill layer.weight in place with N(0, 2 / fan_in) samples drawn from ``generator``; zero layer.bias.

    layer: nn.Linear (weight (out, in)) or nn.Conv2d (weight (out, in, kh, kw)); fan_in = weight[0].numel().
    Returns the same layer.
    """
    ### BEGIN SOLUTION
    W = layer.weight
    std = math.sqrt(2.0 / W[0].numel())          # fan_in: the inputs feeding one output unit
    with torch.no_grad():
        W.normal_(0.0, std, generator=generator)
        if layer.bias is not None:
            layer.bias.zero_()
    ### END SOLUTION
    return layer


# %% nbgrader={"grade": true, "grade_id": "he-init-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
torch.manual_seed(0)
_layer = nn.Linear(400, 100)                                   # fan_in 400, fan_out 100: not square
_weight_before = _layer.weight
with forbid(INIT_FUNCTIONS, NO_BUILTIN):
    _out = he_init_(_layer, torch.Generator().manual_seed(0))
check_equal("returns the layer, with its weight filled in place",
            [_out is _layer, _layer.weight is _weight_before], expected=[True, True],
            hint="return the layer you were given, and fill its existing weight in place "
                 "(weight.normal_(...) or weight.copy_(...) under torch.no_grad()), not with a new tensor")
check_close("nn.Linear(400, 100): weight std is sqrt(2 / 400)", _layer.weight.std(),
            expected=torch.tensor(math.sqrt(2 / 400)), rtol=0.03, weight=2,
            hint=f"the target is sqrt(2 / fan_in) = {math.sqrt(2 / 400):.4f} with fan_in = 400, the inputs "
                 f"per output. sqrt(2 / 100) = {math.sqrt(2 / 100):.4f} would use the fan-out "
                 f"(weight.shape[0]); 2 / 400 = {2 / 400:.4f} would be the variance used as the standard "
                 "deviation")
check_close("weight mean 0 and bias 0", [_layer.weight.mean(), _layer.bias],
            expected=[torch.tensor(0.0), torch.zeros(100)], atol=2e-3, weight=2,
            hint="the weights are centred on 0 (mean=0.0), and the bias is set to zero")
check_equal("the weight is still a trainable leaf parameter",
            [_layer.weight.requires_grad, _layer.weight.is_leaf], expected=[True, True],
            hint="do the in-place writes under torch.no_grad()")
check_close("same numbers as nn.init.kaiming_normal_ with the same generator seed", _layer.weight,
            expected=nn.init.kaiming_normal_(torch.empty(100, 400), nonlinearity="relu",
                                             generator=torch.Generator().manual_seed(0)), atol=1e-6, weight=2,
            hint="draw the samples from the generator argument, in the weight's shape (torch.randn(W.shape, "
                 "generator=generator) * std, or W.normal_(0, std, generator=generator)), and do not reorder "
                 "them")

# a deep ReLU network initialised with he_init_ keeps the scale of its signal
torch.manual_seed(0)
_h = torch.randn(256, 128)
_second_moment_in = _h.pow(2).mean().item()
_layers = [nn.Linear(128, 128) for _ in range(30)]   # built outside forbid: nn.Linear() itself calls nn.init
with forbid(INIT_FUNCTIONS, NO_BUILTIN):
    for _layer in _layers:
        _h = torch.relu(he_init_(_layer)(_h))
_ratio = _h.pow(2).mean().item() / _second_moment_in
print(f"30 He-initialised Linear + ReLU layers: second moment of the signal x {_ratio:.3g}")
check_close("30 Linear + ReLU layers keep the signal's scale: log(second moment out / in) near 0",
            math.log(max(_ratio, 1e-300)), expected=0.0, atol=math.log(5), weight=2,
            hint="with He initialisation the second moment of the signal should stay within a factor 5 after "
                 "30 layers; a far smaller or larger factor means the weight variance is not 2 / fan_in")
print("he_init_: visible tests passed")

### BEGIN HIDDEN TESTS
# convolutions: fan_in = in_channels * kh * kw
_conv = nn.Conv2d(8, 32, kernel_size=3)                         # weight (32, 8, 3, 3), fan_in 72
with forbid(INIT_FUNCTIONS, NO_BUILTIN):
    he_init_(_conv, torch.Generator().manual_seed(1))
check_close("nn.Conv2d(8, 32, 3): same numbers as kaiming_normal_ (fan_in 8 * 3 * 3), bias 0",
            [_conv.weight, _conv.bias],
            expected=[nn.init.kaiming_normal_(torch.empty(32, 8, 3, 3), nonlinearity="relu",
                                              generator=torch.Generator().manual_seed(1)), torch.zeros(32)],
            atol=1e-6, weight=2,
            hint="for a convolution each output sums over in_channels * kh * kw = 72 inputs: fan_in is "
                 "weight[0].numel(), not weight.shape[1]")

# a layer without bias
_nobias = nn.Linear(50, 20, bias=False)
with forbid(INIT_FUNCTIONS, NO_BUILTIN):
    he_init_(_nobias, torch.Generator().manual_seed(2))
check_close("nn.Linear(50, 20, bias=False): same numbers as kaiming_normal_", _nobias.weight,
            expected=nn.init.kaiming_normal_(torch.empty(20, 50), nonlinearity="relu",
                                             generator=torch.Generator().manual_seed(2)), atol=1e-6,
            hint="a layer built with bias=False has layer.bias None: skip it")

# other shapes, large enough for the statistics
_stds = []
for _fan_in, _fan_out in [(10, 1000), (1000, 10), (64, 64)]:
    _l = nn.Linear(_fan_in, _fan_out)
    with forbid(INIT_FUNCTIONS, NO_BUILTIN):
        he_init_(_l, torch.Generator().manual_seed(_fan_in))
    _stds.append(_l.weight.std() / math.sqrt(2 / _fan_in))
check_close("nn.Linear(10, 1000), (1000, 10), (64, 64): std / sqrt(2 / fan_in) is 1", _stds,
            expected=[torch.tensor(1.0)] * 3, atol=0.06, hint="the std must be sqrt(2 / in_features)")

# same generator seed, same weights; the generator is really used
_a = he_init_(nn.Linear(30, 30), torch.Generator().manual_seed(5)).weight.detach().clone()
_b = he_init_(nn.Linear(30, 30), torch.Generator().manual_seed(5)).weight.detach().clone()
_c = he_init_(nn.Linear(30, 30), torch.Generator().manual_seed(6)).weight.detach().clone()
check_equal("the same seed gives the same weights, another seed others",
            [torch.equal(_a, _b), torch.equal(_a, _c)], expected=[True, False], weight=2,
            hint="the samples must come from the generator argument")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "bn-train-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: BatchNorm in training mode (3 points)
#
# For a batch `X` of shape `(N, C)`, BatchNorm in training mode standardises each of the C features over the
# batch, then scales and shifts it with learned per-feature parameters `gamma` and `beta` (shape `(C,)`):
#
# $$\mu = \frac1N \sum_i x_i, \qquad \sigma^2 = \frac1N \sum_i (x_i - \mu)^2, \qquad
# y_i = \gamma\, \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta .$$
#
# Note the **biased** variance (divide by $N$): `X.var(dim=0)` divides by $N - 1$ unless you pass
# `correction=0` (or `unbiased=False`).
#
# It also keeps **running statistics** for evaluation mode, updated **in place** every call with `momentum`
# $m$:
#
# $$\text{running\_mean} \leftarrow (1 - m)\,\text{running\_mean} + m\,\mu, \qquad
# \text{running\_var} \leftarrow (1 - m)\,\text{running\_var} + m\,\frac{N}{N-1}\,\sigma^2 .$$
#
# PyTorch stores the **unbiased** batch variance in `running_var` (the factor $N/(N-1)$), although it
# normalises with the biased one. The running statistics are bookkeeping, not part of the computation graph:
# update them under `torch.no_grad()` (or from `.detach()`ed values), so they never require grad.
#
# Write `batch_norm_train(X, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5)`. The tests
# compare your output, its gradients and the running statistics with `nn.BatchNorm1d` over several batches.

# %% nbgrader={"grade": false, "grade_id": "bn-train-answer", "locked": false, "schema_version": 3, "solution": true}
def batch_norm_train(X: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, running_mean: torch.Tensor,
                     running_var: torch.Tensor, momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """BatchNorm forward pass in training mode.

    X: (N, C) with N >= 2; gamma, beta: (C,) learned scale and shift.
    running_mean, running_var: (C,) buffers, updated in place (running_var with the unbiased batch variance).
    Returns Y: (N, C), normalised with the batch mean and the biased batch variance.
    """
    ### BEGIN SOLUTION
    N = X.shape[0]
    mean = X.mean(dim=0)                                   # (C,)
    var = X.var(dim=0, correction=0)                       # (C,) biased, used to normalise
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(momentum * mean)
        running_var.mul_(1 - momentum).add_(momentum * var * N / (N - 1))
    X_hat = (X - mean) / torch.sqrt(var + eps)             # (N, C), broadcasting the (C,) statistics
    return gamma * X_hat + beta
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "bn-train-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def _bn_train_runs(N, C, num_batches, momentum, eps, seed):
    """The same batches through batch_norm_train and through nn.BatchNorm1d in training mode.

    Returns two dicts (yours, torch's) of lists, one entry per batch: outputs, running means, running
    variances; plus the gradients of a random linear loss with respect to X (per batch), gamma and beta
    (accumulated over the batches).
    """
    _g = torch.Generator().manual_seed(seed)
    _bn = nn.BatchNorm1d(C, momentum=momentum, eps=eps).train()
    with torch.no_grad():
        _bn.weight.copy_(torch.randn(C, generator=_g))
        _bn.bias.copy_(torch.randn(C, generator=_g))
    _gamma = _bn.weight.detach().clone().requires_grad_(True)
    _beta = _bn.bias.detach().clone().requires_grad_(True)
    _rm, _rv = torch.zeros(C), torch.ones(C)
    yours = {"Y": [], "running_mean": [], "running_var": [], "grad_X": [], "requires_grad": []}
    ref = {"Y": [], "running_mean": [], "running_var": [], "grad_X": []}
    for _ in range(num_batches):
        _X = 3 * torch.randn(N, C, generator=_g) + torch.arange(C, dtype=torch.float32)  # feature k: mean k
        _X1, _X2 = _X.clone().requires_grad_(True), _X.clone().requires_grad_(True)
        with forbid(NORM_FUNCTIONS, NO_BUILTIN):
            _Y = batch_norm_train(_X1, _gamma, _beta, _rm, _rv, momentum=momentum, eps=eps)
        assert isinstance(_Y, torch.Tensor) and _Y.shape == (N, C), (
            f"batch_norm_train on a ({N}, {C}) batch should return a ({N}, {C}) tensor, got "
            f"{type(_Y).__name__} {tuple(getattr(_Y, 'shape', ()))}")
        _Y_ref = _bn(_X2)
        _probe = torch.randn(N, C, generator=_g)
        if _Y.requires_grad:
            (_Y * _probe).sum().backward()
        (_Y_ref * _probe).sum().backward()
        yours["Y"].append(_Y.detach().clone())
        yours["running_mean"].append(_rm.detach().clone())
        yours["running_var"].append(_rv.detach().clone())
        yours["grad_X"].append(_X1.grad if _X1.grad is not None else torch.zeros(N, C))
        yours["requires_grad"].append(_rm.requires_grad or _rv.requires_grad)
        ref["Y"].append(_Y_ref.detach().clone())
        ref["running_mean"].append(_bn.running_mean.clone())
        ref["running_var"].append(_bn.running_var.clone())
        ref["grad_X"].append(_X2.grad)
    _zeros = torch.zeros(C)
    yours["grad_params"] = [_p.grad if _p.grad is not None else _zeros for _p in (_gamma, _beta)]
    ref["grad_params"] = [_bn.weight.grad, _bn.bias.grad]
    return yours, ref


_yours, _ref = _bn_train_runs(N=16, C=5, num_batches=3, momentum=0.1, eps=1e-5, seed=0)
check_close("outputs over 3 batches match nn.BatchNorm1d in training mode", _yours["Y"], expected=_ref["Y"],
            atol=1e-4, weight=2,
            hint="normalise each feature (over dim=0, the batch) with the batch mean and the BIASED variance "
                 "(correction=0), eps inside the square root, then gamma * x_hat + beta")
check_close("running_mean after each batch", _yours["running_mean"], expected=_ref["running_mean"], atol=1e-5,
            hint="update in place: running_mean.mul_(1 - momentum).add_(momentum * batch_mean); "
                 "`running_mean = ...` only rebinds the local name")
check_close("running_var after each batch", _yours["running_var"], expected=_ref["running_var"], atol=1e-4,
            hint="update in place with the UNBIASED batch variance: the biased one times N / (N - 1)")
check_equal("the running statistics never require grad", _yours["requires_grad"], expected=[False] * 3,
            hint="update running_mean and running_var under torch.no_grad() (or from .detach()ed statistics)")
check_close("gradients with respect to X, gamma and beta", [_yours["grad_X"], _yours["grad_params"]],
            expected=[_ref["grad_X"], _ref["grad_params"]], atol=1e-4,
            hint="the batch mean and variance must stay in the graph: no .detach() or .item() in the "
                 "normalisation itself")
print("batch_norm_train: visible tests passed")

### BEGIN HIDDEN TESTS
_yours, _ref = _bn_train_runs(N=2, C=3, num_batches=2, momentum=0.1, eps=1e-5, seed=1)
check_close("the smallest batch (N=2): outputs and running statistics",
            [_yours["Y"], _yours["running_mean"], _yours["running_var"]],
            expected=[_ref["Y"], _ref["running_mean"], _ref["running_var"]], atol=1e-4,
            hint="with N=2 the unbiased variance is twice the biased one")
_yours, _ref = _bn_train_runs(N=128, C=20, num_batches=4, momentum=0.3, eps=1e-3, seed=2)
check_close("momentum=0.3 and eps=1e-3: outputs and running statistics",
            [_yours["Y"], _yours["running_mean"], _yours["running_var"]],
            expected=[_ref["Y"], _ref["running_mean"], _ref["running_var"]], atol=1e-4,
            hint="use the momentum and eps arguments, not fixed numbers")
_yours, _ref = _bn_train_runs(N=5, C=1, num_batches=6, momentum=0.01, eps=1e-5, seed=3)
check_close("one feature, momentum=0.01, 6 batches: outputs, running statistics and gradients",
            [_yours[_k] for _k in ("Y", "running_mean", "running_var", "grad_X", "grad_params")],
            expected=[_ref[_k] for _k in ("Y", "running_mean", "running_var", "grad_X", "grad_params")],
            atol=1e-4, hint="one feature (C=1), momentum=0.01")

# the buffers are the very tensors passed in (in place), and X is left alone
_X = torch.randn(10, 4, generator=torch.Generator().manual_seed(4))
_X_copy = _X.clone()
_rm, _rv = torch.zeros(4), torch.ones(4)
with forbid(NORM_FUNCTIONS, NO_BUILTIN):
    batch_norm_train(_X, torch.ones(4), torch.zeros(4), _rm, _rv)
check_close("X unchanged; running_mean and running_var updated in place", [_X, _rm, _rv],
            expected=[_X_copy, 0.1 * _X_copy.mean(dim=0), 0.9 + 0.1 * _X_copy.var(dim=0)], atol=1e-5,
            hint="update the buffers passed in (mul_/add_ or copy_), and do not modify X")

# a constant feature: variance 0, eps keeps it finite
_X = torch.cat([torch.full((8, 1), 3.0), torch.randn(8, 1, generator=torch.Generator().manual_seed(5))],
               dim=1)
with forbid(NORM_FUNCTIONS, NO_BUILTIN):
    _Y = batch_norm_train(_X, torch.ones(2), torch.zeros(2), torch.zeros(2), torch.ones(2))
check_close("a constant feature normalises to 0", _Y[:, 0], expected=torch.zeros(8), atol=1e-5,
            hint="a feature with variance 0 gives (x - mean) / sqrt(0 + eps) = 0: keep eps inside the square "
                 "root")

# float64 in, float64 out
_X = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
_ones, _zeros = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
with forbid(NORM_FUNCTIONS, NO_BUILTIN):
    _Y = batch_norm_train(_X, _ones, _zeros, _zeros.clone(), _ones.clone())
check_close("float64 batches stay float64 and accurate", [str(_Y.dtype), _Y],
            expected=["torch.float64", nn.BatchNorm1d(3).double().train()(_X)], atol=1e-10,
            hint="compute in the input's dtype (no .float())")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "bn-eval-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: BatchNorm in evaluation mode (1 point)
#
# After `model.eval()`, BatchNorm normalises with the **running** statistics it collected during training
# instead of the batch's own:
#
# $$y_i = \gamma\, \frac{x_i - \text{running\_mean}}{\sqrt{\text{running\_var} + \epsilon}} + \beta .$$
#
# Nothing is updated, and each example's output no longer depends on the rest of its batch (a batch of one
# works). Write `batch_norm_eval(X, gamma, beta, running_mean, running_var, eps=1e-5)` for `X` of shape
# `(N, C)`.

# %% nbgrader={"grade": false, "grade_id": "bn-eval-answer", "locked": false, "schema_version": 3, "solution": true}
def batch_norm_eval(X: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, running_mean: torch.Tensor,
                    running_var: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """BatchNorm forward pass in evaluation mode.

    X: (N, C), any N >= 1; gamma, beta, running_mean, running_var: (C,). Nothing is modified.
    Returns Y: (N, C) normalised with the running statistics.
    """
    ### BEGIN SOLUTION
    return gamma * (X - running_mean) / torch.sqrt(running_var + eps) + beta
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "bn-eval-tests", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def _trained_bn(C, seed, momentum=0.1, eps=1e-5):
    """An nn.BatchNorm1d in eval mode: random gamma and beta, running statistics from 5 training batches."""
    _g = torch.Generator().manual_seed(seed)
    _bn = nn.BatchNorm1d(C, momentum=momentum, eps=eps)
    with torch.no_grad():
        _bn.weight.copy_(torch.randn(C, generator=_g))
        _bn.bias.copy_(torch.randn(C, generator=_g))
        for _ in range(5):
            _bn(2 * torch.randn(32, C, generator=_g) + 1)
    return _bn.eval(), _g


_bn, _g = _trained_bn(C=6, seed=0)
_X = 2 * torch.randn(8, 6, generator=_g) + 1
_state = [_v.clone() for _v in _bn.state_dict().values()]
with forbid(NORM_FUNCTIONS, NO_BUILTIN):
    _Y = batch_norm_eval(_X, _bn.weight, _bn.bias, _bn.running_mean, _bn.running_var)
    _Y_one = batch_norm_eval(_X[:1], _bn.weight, _bn.bias, _bn.running_mean, _bn.running_var)
assert isinstance(_Y, torch.Tensor) and _Y.shape == (8, 6), (
    f"batch_norm_eval on an (8, 6) batch should return an (8, 6) tensor, got {type(_Y).__name__} "
    f"{tuple(getattr(_Y, 'shape', ()))}")
check_close("same as nn.BatchNorm1d in eval mode", _Y, expected=_bn(_X), atol=1e-5,
            hint="use running_mean and running_var (not the batch's own statistics), eps inside the square "
                 "root, then gamma * x_hat + beta")
check_close("the running statistics, gamma and beta are left unchanged", list(_bn.state_dict().values()),
            expected=_state, hint="batch_norm_eval must not update anything")
check_close("a batch of one example gives that example's output", _Y_one, expected=_bn(_X[:1]), atol=1e-5,
            hint="in evaluation mode an example's output must not depend on the rest of its batch")
print("batch_norm_eval: visible tests passed")

### BEGIN HIDDEN TESTS
_outs, _refs = [], []
for _C, _seed, _eps in [(1, 1, 1e-5), (20, 2, 1e-3), (3, 3, 0.5)]:
    _bn, _g = _trained_bn(C=_C, seed=_seed, momentum=0.3, eps=_eps)
    _X = 5 * torch.randn(50, _C, generator=_g) - 2
    with forbid(NORM_FUNCTIONS, NO_BUILTIN):
        _outs.append(batch_norm_eval(_X, _bn.weight, _bn.bias, _bn.running_mean, _bn.running_var, eps=_eps))
    _refs.append(_bn(_X))
check_close("C = 1, 20, 3 with eps = 1e-5, 1e-3, 0.5", _outs, expected=_refs, atol=1e-5,
            hint="use the eps argument")

# gradients flow to X, gamma and beta like torch's
_bn, _g = _trained_bn(C=4, seed=4)
_X1 = torch.randn(7, 4, generator=_g, requires_grad=True)
_X2 = _X1.detach().clone().requires_grad_(True)
_gamma = _bn.weight.detach().clone().requires_grad_(True)
_beta = _bn.bias.detach().clone().requires_grad_(True)
with forbid(NORM_FUNCTIONS, NO_BUILTIN):
    _Y = batch_norm_eval(_X1, _gamma, _beta, _bn.running_mean, _bn.running_var)
_probe = torch.randn(7, 4, generator=_g)
if _Y.requires_grad:
    (_Y * _probe).sum().backward()
(_bn(_X2) * _probe).sum().backward()
check_close("gradients with respect to X, gamma and beta",
            [_t.grad if _t.grad is not None else torch.zeros_like(_t) for _t in (_X1, _gamma, _beta)],
            expected=[_X2.grad, _bn.weight.grad, _bn.bias.grad], atol=1e-5,
            hint="use differentiable tensor operations (no .detach() or .item())")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "layer-norm-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: LayerNorm (2 points)
#
# LayerNorm standardises each example over its **features** instead of each feature over the batch. For `X` of
# shape `(..., D)` (a batch of vectors `(N, D)`, or of sequences `(N, T, D)`), every length-`D` vector along
# the last dimension is normalised on its own:
#
# $$\mu = \frac1D \sum_k x_k, \qquad \sigma^2 = \frac1D \sum_k (x_k - \mu)^2, \qquad
# y_k = \gamma_k\, \frac{x_k - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta_k ,$$
#
# with `gamma` and `beta` of shape `(D,)`. Again the variance is the biased one. There are no running
# statistics and no difference between training and evaluation. Use `keepdim=True` so that the `(..., 1)`
# statistics broadcast against `X`.
#
# Write `layer_norm(X, gamma, beta, eps=1e-5)`; it must equal `nn.LayerNorm(D)` with the same `gamma` (its
# `weight`) and `beta` (its `bias`).

# %% nbgrader={"grade": false, "grade_id": "layer-norm-answer", "locked": false, "schema_version": 3, "solution": true}
def layer_norm(X: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise X (..., D) over its last dimension, then scale by gamma (D,) and shift by beta (D,).

    Returns Y with the shape of X.
    """
    ### BEGIN SOLUTION
    mean = X.mean(dim=-1, keepdim=True)                    # (..., 1)
    var = X.var(dim=-1, keepdim=True, correction=0)        # (..., 1) biased
    return gamma * (X - mean) / torch.sqrt(var + eps) + beta
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "layer-norm-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _norm_runs(fn, module, shape, seed, **kwargs):
    """fn(X, *params, **kwargs) against module(X) with random parameters: (yours, torch's), each a list
    [output, gradient with respect to X, gradients with respect to the parameters]."""
    _g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _p in module.parameters():
            _p.copy_(torch.randn(_p.shape, generator=_g))
    _params = [_p.detach().clone().requires_grad_(True) for _p in module.parameters()]
    _X1 = (3 * torch.randn(shape, generator=_g) + 2).requires_grad_(True)
    _X2 = _X1.detach().clone().requires_grad_(True)
    with forbid(NORM_FUNCTIONS, NO_BUILTIN):
        _Y = fn(_X1, *_params, **kwargs)
    assert isinstance(_Y, torch.Tensor) and _Y.shape == shape, (
        f"on an input of shape {shape} the output should be a tensor of the same shape, got "
        f"{type(_Y).__name__} {tuple(getattr(_Y, 'shape', ()))}")
    _Y_ref = module(_X2)
    _probe = torch.randn(shape, generator=_g)
    if _Y.requires_grad:
        (_Y * _probe).sum().backward()
    (_Y_ref * _probe).sum().backward()
    _grads = [_t.grad if _t.grad is not None else torch.zeros_like(_t) for _t in [_X1, *_params]]
    return ([_Y.detach(), _grads[0], _grads[1:]],
            [_Y_ref.detach(), _X2.grad, [_p.grad for _p in module.parameters()]])


_yours, _ref = _norm_runs(layer_norm, nn.LayerNorm(8), (4, 8), seed=0)
check_close("same as nn.LayerNorm(8) on a (4, 8) batch", _yours[0], expected=_ref[0], atol=1e-5, weight=2,
            hint="normalise each ROW over its features (dim=-1, keepdim=True) with the BIASED variance "
                 "(correction=0: X.var() and X.std() divide by D - 1 by default), eps inside the square "
                 "root, then gamma * x_hat + beta")
check_close("gradients with respect to X, gamma and beta", _yours[1:], expected=_ref[1:], atol=1e-5,
            hint="use differentiable tensor operations (no .detach() or .item())")
_yours, _ref = _norm_runs(layer_norm, nn.LayerNorm(6), (2, 5, 6), seed=1)
check_close("same as nn.LayerNorm(6) on sequences of shape (2, 5, 6)", _yours[0], expected=_ref[0], atol=1e-5,
            hint="normalise over the LAST dimension only (dim=-1), whatever the number of leading dimensions")
print("layer_norm: visible tests passed")

### BEGIN HIDDEN TESTS
_outs, _refs = [], []
for _shape, _seed in [((1, 16), 2), ((3, 1, 7, 5), 3), ((64, 32), 4), ((2, 2), 5)]:
    _yours, _ref = _norm_runs(layer_norm, nn.LayerNorm(_shape[-1]), _shape, seed=_seed)
    _outs.append(_yours)
    _refs.append(_ref)
check_close("shapes (1, 16), (3, 1, 7, 5), (64, 32), (2, 2): outputs and gradients", _outs, expected=_refs,
            atol=1e-4, weight=2, hint="normalise over the last dimension, for any leading dimensions")
_yours, _ref = _norm_runs(layer_norm, nn.LayerNorm(4, eps=0.5), (3, 4), seed=6, eps=0.5)
check_close("eps=0.5 is used", _yours[0], expected=_ref[0], atol=1e-5,
            hint="pass eps into the square root: sqrt(var + eps)")
_X = torch.randn(6, 10, generator=torch.Generator().manual_seed(7))
with forbid(NORM_FUNCTIONS, NO_BUILTIN):
    _Y = [layer_norm(torch.full((2, 5), 7.0), torch.ones(5), torch.zeros(5)),
          layer_norm(_X, torch.ones(10), torch.zeros(10))[:1],
          layer_norm(_X[:1], torch.ones(10), torch.zeros(10))]
check_close("a constant row gives 0; an example's output does not depend on its batch", _Y,
            expected=[torch.zeros(2, 5), nn.LayerNorm(10)(_X)[:1], nn.LayerNorm(10)(_X[:1])], atol=1e-5,
            hint="each example is normalised on its own, over its features (not over the batch)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "rms-norm-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: RMSNorm (2 points)
#
# RMSNorm, used in many recent language models, simplifies LayerNorm: it does **not** subtract the mean and
# has **no** shift, only a learned scale `gamma` of shape `(D,)`. Each vector along the last dimension is
# divided by its root mean square:
#
# $$y_k = \gamma_k\, \frac{x_k}{\sqrt{\frac1D \sum_j x_j^2 + \epsilon}} .$$
#
# Write `rms_norm(X, gamma, eps=1e-6)` for `X` of shape `(..., D)`; it must equal `nn.RMSNorm(D, eps=eps)`
# with `gamma` as its `weight`.

# %% nbgrader={"grade": false, "grade_id": "rms-norm-answer", "locked": false, "schema_version": 3, "solution": true}
def rms_norm(X: torch.Tensor, gamma: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Divide X (..., D) by its root mean square over the last dimension, then scale by gamma (D,).

    Returns Y with the shape of X.
    """
    ### BEGIN SOLUTION
    mean_square = X.pow(2).mean(dim=-1, keepdim=True)      # (..., 1)
    return gamma * X / torch.sqrt(mean_square + eps)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "rms-norm-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _rms_runs(shape, seed, eps=1e-6):
    """rms_norm against nn.RMSNorm(D, eps) with a random gamma: (yours, torch's), each a list
    [output, gradient with respect to X, gradient with respect to gamma]."""
    _g = torch.Generator().manual_seed(seed)
    _module = nn.RMSNorm(shape[-1], eps=eps)
    with torch.no_grad():
        _module.weight.copy_(torch.randn(shape[-1], generator=_g))
    _gamma = _module.weight.detach().clone().requires_grad_(True)
    _X1 = (3 * torch.randn(shape, generator=_g) + 2).requires_grad_(True)
    _X2 = _X1.detach().clone().requires_grad_(True)
    with forbid(NORM_FUNCTIONS, NO_BUILTIN):
        _Y = rms_norm(_X1, _gamma, eps=eps)
    assert isinstance(_Y, torch.Tensor) and _Y.shape == shape, (
        f"rms_norm on an input of shape {shape} should return a tensor of the same shape, got "
        f"{type(_Y).__name__} {tuple(getattr(_Y, 'shape', ()))}")
    _Y_ref = _module(_X2)
    _probe = torch.randn(shape, generator=_g)
    if _Y.requires_grad:
        (_Y * _probe).sum().backward()
    (_Y_ref * _probe).sum().backward()
    _grads = [_t.grad if _t.grad is not None else torch.zeros_like(_t) for _t in (_X1, _gamma)]
    return [_Y.detach(), *_grads], [_Y_ref.detach(), _X2.grad, _module.weight.grad]


_yours, _ref = _rms_runs((4, 8), seed=0)
check_close("same as nn.RMSNorm(8, eps=1e-6) on a (4, 8) batch", _yours[0], expected=_ref[0], atol=1e-5,
            weight=2,
            hint="do NOT subtract the mean: divide X by sqrt(mean of X**2 over the last dimension + eps) "
                 "(keepdim=True), then multiply by gamma")
check_close("gradients with respect to X and gamma", _yours[1:], expected=_ref[1:], atol=1e-5,
            hint="use differentiable tensor operations (no .detach() or .item())")
_yours, _ref = _rms_runs((2, 5, 6), seed=1)
check_close("same as nn.RMSNorm(6) on sequences of shape (2, 5, 6)", _yours[0], expected=_ref[0], atol=1e-5,
            hint="use the LAST dimension only (dim=-1), whatever the number of leading dimensions")
print("rms_norm: visible tests passed")

### BEGIN HIDDEN TESTS
_outs, _refs = [], []
for _shape, _seed in [((1, 16), 2), ((3, 1, 7, 5), 3), ((64, 32), 4), ((5, 1), 5)]:
    _yours, _ref = _rms_runs(_shape, seed=_seed)
    _outs.append(_yours)
    _refs.append(_ref)
check_close("shapes (1, 16), (3, 1, 7, 5), (64, 32), (5, 1): outputs and gradients", _outs, expected=_refs,
            atol=1e-4, weight=2, hint="the root mean square over the last dimension, any leading dimensions")
_yours, _ref = _rms_runs((3, 4), seed=6, eps=0.5)
check_close("eps=0.5 is used, inside the square root", _yours[0], expected=_ref[0], atol=1e-5,
            hint="add eps to the mean square, then take the square root")
with forbid(NORM_FUNCTIONS, NO_BUILTIN):
    _Y = [rms_norm(torch.zeros(2, 3), torch.ones(3)), rms_norm(torch.full((1, 4), 3.0), torch.ones(4))]
check_close("an all-zero row stays 0; a constant row of 3s becomes all ones", _Y,
            expected=[torch.zeros(2, 3), torch.ones(1, 4)], atol=1e-5,
            hint="RMSNorm keeps the mean: x / sqrt(mean(x**2) + eps) of a constant row 3 is 1 (LayerNorm: 0)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "depth-scale-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 6: predict, then measure: the signal's scale through depth (1 point)
#
# Exercise 1 chose the weight variance that keeps the signal's scale. What happens with any other one? Take a
# stack of `depth` layers, each `nn.Linear(fan_in, fan_in, bias=False)` with weights drawn from
# $\mathcal N(0, \text{std}^2)$ and followed by a ReLU, fed with inputs whose entries are drawn from
# $\mathcal N(0, 1)$.
#
# Write `predicted_rms(depth, fan_in, std)`: your prediction of the root-mean-square of the network's output
# divided by that of its input, as a Python float (a formula: random numbers and ReLU are switched off while
# the test calls it). The test then measures it: the same ratio over 32 independently drawn networks and 32
# inputs each, so that the luck of one draw averages out. Your prediction passes when it is within **10 %** of
# the measurement, for `depth=10, fan_in=256, std=0.05` here and for other settings in the hidden tests.

# %% nbgrader={"grade": false, "grade_id": "depth-scale-answer", "locked": false, "schema_version": 3, "solution": true}
def predicted_rms(depth: int, fan_in: int, std: float) -> float:
    """Predicted RMS(output) / RMS(input) of ``depth`` bias-free Linear(fan_in, fan_in) + ReLU layers whose
    weights are drawn from N(0, std**2). A Python float."""
    ### BEGIN SOLUTION
    per_layer = 0.5 * fan_in * std**2        # factor on the second moment: sum of fan_in terms, ReLU keeps half
    return math.sqrt(per_layer**depth)       # RMS is the square root of the second moment
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "depth-scale-tests", "locked": true, "points": 1, "schema_version": 3, "solution": false}
SIMULATING = ((torch, "randn"), (torch, "normal"), (torch.Tensor, "normal_"), (torch, "relu"), (F, "relu"),
              (torch.Tensor, "relu"), (nn.Module, "__call__"))
NO_SIMULATING = ("predict with a formula: random numbers, ReLU and modules are switched off while the test calls "
                 "predicted_rms")


def _predicted(*args):
    with forbid(SIMULATING, NO_SIMULATING):
        return predicted_rms(*args)


def _measured_rms(depth, fan_in, std, networks=32, batch=32):
    """RMS(output) / RMS(input) over ``networks`` random stacks of Linear(fan_in, fan_in, bias=False) + ReLU."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(networks, batch, fan_in, generator=g)           # (networks, batch, fan_in)
    h = X
    for _ in range(depth):
        W = std * torch.randn(networks, fan_in, fan_in, generator=g)    # one (out, in) weight per network
        h = torch.relu(h @ W.transpose(1, 2))                           # (networks, batch, fan_in)
    return (h.pow(2).mean().sqrt() / X.pow(2).mean().sqrt()).item()


check_prediction("RMS ratio after 10 layers, fan_in 256, std 0.05", _predicted(10, 256, 0.05),
                 expected=_measured_rms(10, 256, 0.05), rtol=0.1,
                 hint="by what factor does one Linear layer multiply the second moment (mean square) of the "
                      "signal, and what does the ReLU do to it? Then compound over the layers, and take the "
                      "square root at the end")
print("predicted_rms: visible tests passed")

### BEGIN HIDDEN TESTS
for _args in [(5, 256, math.sqrt(2 / 256)), (8, 300, 0.06), (3, 64, 0.3)]:
    check_prediction(f"RMS ratio for depth, fan_in, std = {_args[0]}, {_args[1]}, {_args[2]:.4f}",
                     _predicted(*_args), expected=_measured_rms(*_args), rtol=0.1,
                     hint="the prediction must be a function of depth, fan_in and std")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - He initialisation draws weights from $\mathcal N(0, 2/n_\text{in})$ with the fan-in of the layer (for a
#   convolution, input channels times kernel size), so that a Linear + ReLU stack keeps its scale.
# - BatchNorm in training mode normalises each feature with the batch mean and biased variance and updates
#   running averages in place (the running variance is unbiased); in evaluation mode it uses those running
#   averages, so each example is treated on its own.
# - LayerNorm normalises each example over its features; RMSNorm only divides by the root mean square and has
#   no shift. Neither keeps running statistics.
# - Through a Linear + ReLU layer the signal's mean square is multiplied by $\tfrac12 n_\text{in}\sigma^2$; over
#   L layers that factor compounds to its L-th power, which is why only the He variance keeps deep nets usable.
#
# ## Further exercises (not graded)
#
# 1. Write `he_init_` for `mode="fan_out"` and compare it with `nn.init.kaiming_normal_(..., mode="fan_out")`.
#    For which layers do the two modes differ?
# 2. Extend `batch_norm_train` and `batch_norm_eval` to images `(N, C, H, W)` (statistics over N, H and W per
#    channel) and check them against `nn.BatchNorm2d`.
# 3. Write GroupNorm with your `layer_norm` as a building block (reshape `(N, C, H, W)` to
#    `(N, G, C // G * H * W)`), and check it against `nn.GroupNorm`.
# 4. Time `layer_norm` and `rms_norm` against `nn.LayerNorm` and `nn.RMSNorm` on a `(64, 512, 768)` tensor.
#    Which is faster, and why might the fused torch versions win?
