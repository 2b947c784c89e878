# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 01: the training loop
#
# This lab goes with notebook 01. You write the pieces of a training loop yourself, and PyTorch checks each
# one.
#
# **Learning goals.** After this lab you can
# - write a numerically stable softmax and cross-entropy from tensor operations, and check them against
#   PyTorch;
# - update parameters by hand with autograd's gradients (`torch.no_grad`, in-place updates, clearing `.grad`);
# - measure accuracy correctly (argmax over classes, a plain Python number);
# - write the five lines of every PyTorch training loop: forward, loss, `zero_grad`, `backward`, `step`;
# - build a small MLP with `nn.Sequential` and train it with `dlcourse.fit`;
# - predict the loss of an untrained classifier, the first sanity check of any training run.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab01_training_loop.ipynb` tells you what passes.
#
# **Time.** About 70–100 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 11 in all: softmax 2, cross-entropy 2, SGD step 2, accuracy 1, training loop 2, MLP 1, the
# initial loss (predict, then measure) 1.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

import dlcourse

from dlcourse.grading.checks import (SOFTMAX_FUNCTIONS, check_accuracy, check_close, check_equal, check_prediction,
                                     forbid)

cfg = dlcourse.setup(seed=0)
# Tests of from-scratch code switch torch's own versions off while they call yours.
NO_BUILTIN_SOFTMAX = ("write this from tensor operations: torch.softmax, F.softmax, log_softmax and "
                      "F.cross_entropy are switched off while the tests call your function")

# %% [markdown] nbgrader={"grade": false, "grade_id": "softmax-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: softmax (2 points)
#
# A classifier outputs one score (logit) per class; softmax turns a row of scores $z$ into probabilities:
# $\mathrm{softmax}(z)_k = e^{z_k} / \sum_j e^{z_j}$.
#
# Computed literally, this breaks on large scores: `torch.exp(torch.tensor(1000.))` is `inf`, and `inf / inf`
# is `nan`. Softmax does not change when you subtract the same number from every score in a row, so subtract
# each row's **maximum** first: the largest exponent is then $e^0 = 1$ and nothing overflows.
#
# Write `softmax(logits)` for a batch `logits` of shape `(N, C)`, normalising each row (over `dim=1`). Use
# tensor operations (`max`, `exp`, `sum`, with `keepdim=True` so that the shapes broadcast); `torch.softmax`,
# `F.softmax` and `log_softmax` are switched off while the tests call your function.

# %% nbgrader={"grade": false, "grade_id": "softmax-answer", "locked": false, "schema_version": 3, "solution": true}
def softmax(logits: torch.Tensor) -> torch.Tensor:
    """Row-wise, numerically stable softmax.

    logits: (N, C) float tensor, one row of C class scores per example.
    Returns (N, C), same dtype: non-negative probabilities, each row summing to 1.
    """
    ### BEGIN SOLUTION
    shifted = logits - logits.max(dim=1, keepdim=True).values  # (N, C); each row's largest entry is now 0
    exp = shifted.exp()                                          # (N, C); values in [0, 1], no overflow
    return exp / exp.sum(dim=1, keepdim=True)                    # (N, C) / (N, 1) -> (N, C)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "softmax-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _gradient(f, x):
    """The gradient of the number f(x) with respect to x, by autograd."""
    x = x.detach().clone().requires_grad_(True)
    return torch.autograd.grad(f(x), x)[0]


_gen = torch.Generator().manual_seed(0)
_logits = torch.randn(4, 3, generator=_gen)               # (N=4, C=3)
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _probs = softmax(_logits)
assert isinstance(_probs, torch.Tensor) and _probs.shape == (4, 3), (
    f"softmax of a (4, 3) batch should return a (4, 3) tensor, got {type(_probs).__name__} "
    f"{tuple(getattr(_probs, 'shape', ()))}")
check_close("rows sum to 1", _probs.sum(dim=1), expected=torch.ones(4), atol=1e-6,
            hint="did you normalise over dim=1 (one row per example) with keepdim=True?")
check_close("same as torch.softmax on small random scores", _probs, expected=torch.softmax(_logits, dim=1),
            atol=1e-6,
            hint="check exp and the division: each row is exp(z) / exp(z).sum(dim=1, keepdim=True)")

_big = torch.tensor([[1000.0, 0.0, -1000.0], [500.0, 500.0, 0.0]])   # exp(1000) overflows float32
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _probs_big = softmax(_big)
check_close("large scores (±1000) give finite, right probabilities", _probs_big,
            expected=torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]), atol=1e-6, weight=2,
            hint="exp(1000) overflows to inf, and inf / inf is nan: subtract each row's maximum "
                 "(logits.max(dim=1, keepdim=True).values) before exponentiating")

_shifted = _logits + torch.tensor([[100.0], [-50.0], [0.0], [7.0]])   # add a different constant to each row
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _probs_shifted = softmax(_shifted)
check_close("adding a constant to a row leaves its softmax unchanged", _probs_shifted,
            expected=torch.softmax(_logits, dim=1), atol=1e-5, weight=2,
            hint="did you subtract the maximum of the whole tensor instead of each row's maximum?")
print("softmax: visible tests passed")

### BEGIN HIDDEN TESTS
_zs = [torch.randn(*_shape, generator=torch.Generator().manual_seed(_seed)) * 5
       for _seed, _shape in [(1, (1, 1)), (2, (1, 10)), (3, (7, 2)), (4, (64, 100)), (5, (3, 5))]]
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _ps = [softmax(_z) for _z in _zs]
check_close("same as torch.softmax on random batches of 5 shapes", _ps,
            expected=[torch.softmax(_z, dim=1) for _z in _zs], atol=1e-6,
            hint="softmax differs from torch.softmax(logits, dim=1) for a batch of shape (1, 1), (1, 10), "
                 "(7, 2), (64, 100) or (3, 5) (item 0 to 4): the output has the input's shape, normalised "
                 "over dim=1")

# extreme values: every row far from zero, mixed signs, and a masked (-inf) entry
_z = torch.tensor([[1e4, 1e4 - 1.0, -1e4], [-1e4, -1e4 - 2.0, -1e4 - 4.0], [3e38, 0.0, -3e38],
                   [0.0, float("-inf"), 1.0]])
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _p = softmax(_z)
check_close("extreme scores (±1e4, ±3e38, a -inf mask)", _p, expected=torch.softmax(_z, dim=1), atol=1e-6,
            weight=2,
            hint="softmax of extreme scores must be finite and right: subtract each row's maximum first")

# float64 in, float64 out
_z = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _p = softmax(_z)
check_close("float64 scores give accurate float64 probabilities (dtype, values)", [str(_p.dtype), _p],
            expected=["torch.float64", torch.softmax(_z, dim=1)], atol=1e-12,
            hint="keep the input's dtype (no .float()) and compute in it: float64 is accurate to about 1e-12")

# gradients flow through it
_z = torch.randn(3, 4, generator=torch.Generator().manual_seed(7), requires_grad=True)
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _p = softmax(_z)
_out = (_p[:, 0] * torch.arange(3.0)).sum()
if _out.requires_grad:
    _out.backward()
check_close("the gradient through softmax", _z.grad,
            expected=_gradient(lambda z: (torch.softmax(z, dim=1)[:, 0] * torch.arange(3.0)).sum(), _z),
            atol=1e-6, hint="the gradient through softmax differs from torch's (or there is none): use "
                            "differentiable tensor operations (no .detach(), .item() or NumPy)")

# the input is left alone
_z = torch.randn(2, 3, generator=torch.Generator().manual_seed(8))
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _p = softmax(_z)
check_close("leaves its input unchanged (the input, then the output)", [_z, _p],
            expected=[torch.randn(2, 3, generator=torch.Generator().manual_seed(8)),
                      torch.softmax(torch.randn(2, 3, generator=torch.Generator().manual_seed(8)), dim=1)],
            atol=1e-6,
            hint="softmax must not modify its input in place (no logits -= ...): compute on new tensors")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "cross-entropy-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: cross-entropy (2 points)
#
# The cross-entropy loss of scores $z$ for an example with true class $y$ is $-\log \mathrm{softmax}(z)_y$;
# a batch's loss is the **mean** over its examples (that is what `F.cross_entropy` returns by default).
#
# Taking the log of your softmax works on small scores but fails on large ones: the probability of a class far
# below the best one rounds to 0, and $\log 0 = -\infty$. Work in log space instead. With $m = \max_j z_j$,
#
# $$\log \mathrm{softmax}(z)_k = (z_k - m) - \log \sum_j e^{z_j - m}$$
#
# which never takes the log of 0 (the sum is at least 1). Each example then needs only the entry of its own
# label (indexing with two index tensors, or `gather`, picks one entry per row).
#
# Write `cross_entropy(logits, y)` returning a 0-dimensional tensor that autograd can differentiate. PyTorch's
# softmax, log_softmax, `F.cross_entropy` and `F.nll_loss` are switched off while the tests call your
# function.

# %% nbgrader={"grade": false, "grade_id": "cross-entropy-answer", "locked": false, "schema_version": 3, "solution": true}
def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of scores against integer labels, computed stably in log space.

    logits: (N, C) float scores; y: (N,) int64 class indices in [0, C).
    Returns a 0-dim tensor: mean over i of -log softmax(logits)[i, y[i]].
    """
    ### BEGIN SOLUTION
    shifted = logits - logits.max(dim=1, keepdim=True).values            # (N, C), row maxima are 0
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()   # (N, C) log-softmax; the sum is >= 1
    return -log_probs[torch.arange(len(y)), y].mean()                    # (N,) -> ()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "cross-entropy-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _gradient(f, x):
    """The gradient of the number f(x) with respect to x, by autograd."""
    x = x.detach().clone().requires_grad_(True)
    return torch.autograd.grad(f(x), x)[0]


_gen = torch.Generator().manual_seed(0)
_logits = torch.randn(5, 4, generator=_gen)               # (N=5, C=4)
_y = torch.tensor([0, 3, 1, 1, 2])                         # (N,)
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _loss = cross_entropy(_logits, _y)
check_close("same as F.cross_entropy on small random scores", _loss, expected=F.cross_entropy(_logits, _y),
            atol=1e-5, weight=2,
            hint="cross_entropy returns a single number (a 0-dim tensor): the .mean() over the batch (not "
                 "the sum) of -log p[i, y[i]], with the log-probability of each example's own label")

_big = torch.tensor([[1000.0, 0.0, -1000.0], [0.0, 200.0, 100.0]])    # log(softmax) would hit log(0) here
_y_big = torch.tensor([2, 0])
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _loss_big = cross_entropy(_big, _y_big)
check_close("large scores give a finite, right loss", _loss_big, expected=F.cross_entropy(_big, _y_big),
            rtol=1e-5, weight=2,
            hint="the label's probability rounds to 0 and log(0) = -inf: compute log-probabilities as "
                 "(z - max) - log(sum(exp(z - max))) instead of log(softmax(z))")

_z = _logits.clone().requires_grad_(True)
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _loss_z = cross_entropy(_z, _y)
if isinstance(_loss_z, torch.Tensor) and _loss_z.requires_grad and _loss_z.dim() == 0:
    _loss_z.backward()
check_close("the gradient matches F.cross_entropy's", _z.grad,
            expected=_gradient(lambda z: F.cross_entropy(z, _y), _logits), atol=1e-6, weight=2,
            hint="no gradient means the loss is cut off from autograd (no grad_fn): keep every step a tensor "
                 "operation, no .item(), .detach(), torch.tensor(...) or NumPy; and average over the batch")
print("cross_entropy: visible tests passed")

### BEGIN HIDDEN TESTS
_cases = []
for _seed, (_n, _c) in [(1, (1, 1)), (2, (1, 10)), (3, (17, 2)), (4, (128, 100)), (5, (6, 6))]:
    _g = torch.Generator().manual_seed(_seed)
    _cases.append((torch.randn(_n, _c, generator=_g) * 4, torch.randint(0, _c, (_n,), generator=_g)))
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _ls = [cross_entropy(_z, _t) for _z, _t in _cases]
check_close("same as F.cross_entropy on random batches of 5 shapes", _ls,
            expected=[F.cross_entropy(_z, _t) for _z, _t in _cases], atol=1e-5,
            hint="cross_entropy differs from F.cross_entropy (or is not a 0-dim tensor) for a batch of shape "
                 "(1, 1), (1, 10), (17, 2), (128, 100) or (6, 6) (item 0 to 4)")

# extreme values
_z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4 - 3.0, -1e4 + 1.0], [3e38, -3e38, 0.0], [50.0, 0.0, -50.0]])
_t = torch.tensor([1, 1, 0, 2])
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _l = cross_entropy(_z, _t)
check_close("extreme scores (±1e4, ±3e38)", _l, expected=F.cross_entropy(_z, _t), rtol=1e-5, weight=2,
            hint="cross_entropy of extreme scores must be finite and right: work in log space")

# confident and right: loss near 0, not negative
_z = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _l = cross_entropy(_z, torch.tensor([0, 1]))
check_close("a confident right answer has a loss near 0", _l,
            expected=F.cross_entropy(_z, torch.tensor([0, 1])), atol=1e-6,
            hint="a confident right answer should have a loss near 0 (and never below 0)")

# float64, and gradients on a bigger random batch
_g = torch.Generator().manual_seed(9)
_z = (torch.randn(32, 10, dtype=torch.float64, generator=_g) * 10).requires_grad_(True)
_t = torch.randint(0, 10, (32,), generator=_g)
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _l = cross_entropy(_z, _t)
check_close("float64 scores give an accurate float64 loss (dtype, value)", [str(_l.dtype), _l],
            expected=["torch.float64", F.cross_entropy(_z.detach(), _t)], atol=1e-10,
            hint="keep the input's dtype (no .float()): float64 scores give a float64 loss, accurate to "
                 "1e-10")
if isinstance(_l, torch.Tensor) and _l.requires_grad and _l.dim() == 0:
    _l.backward()
check_close("float64 gradient matches F.cross_entropy's", _z.grad,
            expected=_gradient(lambda z: F.cross_entropy(z, _t), _z), atol=1e-10,
            hint="the gradient of cross_entropy differs from torch's")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "sgd-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: one step of gradient descent by hand (2 points)
#
# After `loss.backward()`, every parameter `p` holds its gradient in `p.grad`. Stochastic gradient descent
# moves each parameter a small step against its gradient: `p ← p − lr · p.grad`. Three details matter:
#
# 1. **Under `torch.no_grad()`.** The update is not part of the model's computation; without `no_grad`,
#    autograd refuses to change a leaf tensor that requires grad in place.
# 2. **In place.** The model holds references to its parameter tensors; `p = p - lr * p.grad` only rebinds the
#    loop variable and the model never sees the change. Use `p -= ...` (or `p.sub_(...)`).
# 3. **Clear the gradients afterwards.** `backward()` *adds* to `.grad`; set `p.grad = None` (or zero it) so
#    the next step starts from fresh gradients.
#
# Parameters whose `.grad` is `None` (they took no part in the loss) are skipped, as `torch.optim.SGD` does.
# `params` may be a generator such as `model.parameters()`: loop over it only once.

# %% nbgrader={"grade": false, "grade_id": "sgd-answer", "locked": false, "schema_version": 3, "solution": true}
def sgd_step(params, lr: float) -> None:
    """One in-place SGD update, p <- p - lr * p.grad, for each tensor in ``params``; then clear each p.grad.

    params: an iterable of leaf tensors with requires_grad=True (e.g. model.parameters()); any shape each.
    lr: learning rate. Returns None; the tensors themselves are updated.
    """
    ### BEGIN SOLUTION
    with torch.no_grad():
        for p in params:
            if p.grad is None:
                continue
            p -= lr * p.grad  # in place: the model holds this very tensor
            p.grad = None     # the next backward() starts from zero
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "sgd-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _weights(model):
    """A model's parameters as a list of tensors: the value the checks compare."""
    return [p.detach().clone() for p in model.parameters()]


def _reference_sgd(model, X, y, lr, steps):
    """torch.optim.SGD on a copy of ``model``, ``steps`` full-batch steps: the weights after each step."""
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    after = []
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(X), y).backward()
        optimizer.step()
        after.append(_weights(model))
    return after


torch.manual_seed(0)
_model = nn.Linear(5, 3)                               # weight (3, 5), bias (3,)
_start = copy.deepcopy(_model)                         # the starting point, for the reference update
_gen = torch.Generator().manual_seed(0)
_X, _y = torch.randn(8, 5, generator=_gen), torch.randint(0, 3, (8,), generator=_gen)
_weight_before = _model.weight

F.cross_entropy(_model(_X), _y).backward()
sgd_step(list(_model.parameters()), lr=0.1)

check_close("one step matches torch.optim.SGD", _weights(_model),
            expected=_reference_sgd(_start, _X, _y, lr=0.1, steps=1)[0], atol=1e-6, weight=2,
            hint="the update is p - lr * p.grad (a minus sign, the learning rate times the gradient). If the "
                 "parameters did not change at all: `p = p - lr * p.grad` only rebinds the name p; update in "
                 "place with `p -= lr * p.grad` inside `with torch.no_grad():`")
check_close("updates the parameter tensors in place", _weight_before,
            expected=_reference_sgd(_start, _X, _y, lr=0.1, steps=1)[0][0], atol=1e-6,
            hint="sgd_step must update the parameter tensors in place (p -= ..., p.sub_(...)), not replace "
                 "them: the model holds these very tensors")
check_equal("afterwards each .grad is cleared and each parameter is still a leaf that requires grad",
            [(_p.grad is None or int(torch.count_nonzero(_p.grad)) == 0, _p.requires_grad, _p.is_leaf)
             for _p in _model.parameters()],
            expected=[(True, True, True), (True, True, True)],
            hint="set p.grad = None (or zero it) after the update, otherwise the next backward() adds to it; "
                 "update under torch.no_grad() so that each parameter stays a leaf tensor that requires grad")
print("sgd_step: visible tests passed")

### BEGIN HIDDEN TESTS
# several steps with a generator of parameters, on a model with two layers
torch.manual_seed(1)
_model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2))
_start = copy.deepcopy(_model)
_gen = torch.Generator().manual_seed(1)
_X, _y = torch.randn(16, 6, generator=_gen), torch.randint(0, 2, (16,), generator=_gen)
_after = []
for _step in range(4):
    F.cross_entropy(_model(_X), _y).backward()
    sgd_step(_model.parameters(), 0.05)                 # a generator, not a list
    _after.append(_weights(_model))
check_close("4 steps with model.parameters() (a generator) match torch.optim.SGD", _after,
            expected=_reference_sgd(_start, _X, _y, lr=0.05, steps=4), atol=1e-6, weight=2,
            hint="after some step (item 0 to 3) the parameters differ from torch.optim.SGD's: are the "
                 "gradients cleared after each step, and does sgd_step work when params is a generator "
                 "(model.parameters()), which can be looped over only once?")

# a parameter without a gradient is skipped and left as it is
_a = torch.ones(3, requires_grad=True)
_b = torch.ones(2, requires_grad=True)
(_a * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
sgd_step([_a, _b], lr=0.5)
check_close("skips a parameter whose .grad is None (a, then b)", [_a.detach(), _b.detach()],
            expected=[torch.tensor([0.5, 0.0, -0.5]), torch.ones(2)],
            hint="a = [1, 1, 1] with gradient [1, 2, 3] and lr=0.5 becomes [0.5, 0, -0.5]; b has no gradient "
                 "(.grad is None) and must be skipped")

# lr = 0 changes nothing but still clears the gradients
_c = torch.tensor([1.0, -2.0], requires_grad=True)
(_c ** 2).sum().backward()
_ret = sgd_step([_c], lr=0.0)
check_equal("lr=0: no change, gradient cleared, returns None, autograd still on",
            [_c.detach().clone(), _c.grad is None or int(torch.count_nonzero(_c.grad)) == 0, _ret,
             torch.is_grad_enabled()],
            expected=[torch.tensor([1.0, -2.0]), True, None, True],
            hint="with lr=0 the parameters must not change, but the gradients are still cleared; sgd_step "
                 "updates in place and returns None; use `with torch.no_grad():`, not "
                 "torch.set_grad_enabled(False), so that autograd is on again afterwards")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "accuracy-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: accuracy (1 point)
#
# A classifier's prediction for an example is the class with the highest score: `y_hat.argmax(dim=1)`.
# Accuracy is the fraction of examples whose prediction equals the label.
#
# Return a **Python float** between 0 and 1 (`0.75`, not `75` and not `tensor(0.75)`): `.item()` turns a
# one-element tensor into a Python number. Comparing two integer tensors gives booleans; turn them into floats
# before taking a mean. Ties go to the class `torch.argmax` picks (the first of the tied maxima).

# %% nbgrader={"grade": false, "grade_id": "accuracy-answer", "locked": false, "schema_version": 3, "solution": true}
def accuracy(y_hat: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows of ``y_hat`` whose argmax equals the label.

    y_hat: (N, C) scores (logits or probabilities); y: (N,) int64 labels. Returns a Python float in [0, 1].
    """
    ### BEGIN SOLUTION
    predictions = y_hat.argmax(dim=1)                  # (N,) predicted class per example
    return (predictions == y).float().mean().item()    # (N,) bool -> float -> () -> Python float
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "accuracy-tests", "locked": true, "points": 1, "schema_version": 3, "solution": false}
_y_hat = torch.tensor([[0.1, 0.9, 0.0],      # predicts 1
                       [2.0, -1.0, 0.5],     # predicts 0
                       [0.2, 0.3, 0.5],      # predicts 2
                       [5.0, 6.0, 7.0]])     # predicts 2
_y = torch.tensor([1, 0, 1, 0])
check_close("2 right out of 4 gives 0.5", accuracy(_y_hat, _y), expected=0.5, atol=1e-9, weight=2,
            hint="accuracy is a Python float (use .item() on a one-element tensor) between 0 and 1: "
                 "divide the number of right predictions by N, and don't multiply by 100. The prediction "
                 "is y_hat.argmax(dim=1) (over classes, not over the batch)")
check_close("all right gives 1.0, all wrong gives 0.0",
            [accuracy(_y_hat, torch.tensor([1, 0, 2, 2])), accuracy(_y_hat, torch.tensor([0, 1, 0, 1]))],
            expected=[1.0, 0.0], atol=1e-9,
            hint="all four predictions right should give 1.0 and all four wrong 0.0, as Python floats")
_ties = torch.tensor([[1.0, 1.0, 0.0], [0.0, 3.0, 3.0]])   # tied rows: argmax predicts classes 0 and 1
check_close("ties go to the first of the tied maxima",
            [accuracy(_ties, torch.tensor([0, 1])), accuracy(_ties, torch.tensor([1, 2]))],
            expected=[1.0, 0.0], atol=1e-9,
            hint="ties go to the first of the tied maxima, as in torch.argmax: [1, 1, 0] predicts class 0")
print("accuracy: visible tests passed")

### BEGIN HIDDEN TESTS
_g = torch.Generator().manual_seed(3)
_cases = []
for _n, _c in [(1, 2), (1, 10), (1000, 10), (37, 5)]:
    _s = torch.randn(_n, _c, generator=_g)
    _cases.append((_s, torch.randint(0, _c, (_n,), generator=_g)))
check_close("random batches of shapes (1, 2), (1, 10), (1000, 10), (37, 5)",
            [accuracy(_s, _t) for _s, _t in _cases],
            expected=[(_s.argmax(dim=1) == _t).float().mean().item() for _s, _t in _cases], atol=1e-6,
            hint="accuracy on random batches (item 0 to 3) is wrong or not a Python float")
check_close("probabilities give the accuracy of their logits",
            [accuracy(torch.softmax(_s, dim=1), _t) for _s, _t in _cases],
            expected=[(_s.argmax(dim=1) == _t).float().mean().item() for _s, _t in _cases], atol=1e-6,
            hint="accuracy of probabilities must equal accuracy of the logits they come from")
# many ties: all-equal rows go to class 0
_s = torch.zeros(6, 4)
check_close("rows of equal scores predict class 0",
            [accuracy(_s, torch.zeros(6, dtype=torch.int64)), accuracy(_s, torch.tensor([0, 0, 0, 1, 2, 3]))],
            expected=[1.0, 0.5], atol=1e-9, hint="a row of equal scores predicts class 0")
# a batch where exactly one in three is right: no integer division
check_close("1 right out of 3 gives 1/3", accuracy(torch.eye(3), torch.tensor([0, 2, 1])), expected=1 / 3,
            atol=1e-6, hint="1 right out of 3 should give 1/3: no integer division")
# float64 scores
check_close("float64 scores", accuracy(torch.eye(4, dtype=torch.float64), torch.arange(4)), expected=1.0,
            atol=1e-9, hint="accuracy must work on float64 scores")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "train-loop-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: the training loop (2 points)
#
# Write `train_loop(model, train_loader, num_epochs, lr)`, which trains `model` by mini-batch SGD and returns
# it: `num_epochs` passes over `train_loader`, one `torch.optim.SGD` step with learning rate `lr` per batch, on
# the batch's mean cross-entropy (`F.cross_entropy`). Each step must follow the gradient of its own batch only,
# and the optimiser must live for the whole run. (Here you use PyTorch's optimizer and loss; your own versions
# from exercises 1–3 do the same work, more slowly.)
#
# The test replays your run with a reference loop, batch by batch, and compares the weights, so "almost SGD"
# does not pass. Notebook 01, sections 3 and 4, shows what one step involves.
#
# The test trains softmax regression, `nn.Linear(64, 10)`, on the flattened 8×8 digits: one linear layer whose
# scores go through softmax inside the loss. It should reach well over 85 % test accuracy in a few epochs.

# %% nbgrader={"grade": false, "grade_id": "train-loop-answer", "locked": false, "schema_version": 3, "solution": true}
def train_loop(model: nn.Module, train_loader, num_epochs: int, lr: float) -> nn.Module:
    """Train ``model`` with mini-batch SGD on the cross-entropy loss and return it.

    model: maps X (B, D) to class scores (B, C).
    train_loader: an iterable of (X, y) batches, X (B, D) float32 and y (B,) int64; iterate it once per epoch.
    num_epochs: passes over train_loader. lr: the learning rate of torch.optim.SGD.
    """
    ### BEGIN SOLUTION
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for epoch in range(num_epochs):
        for X, y in train_loader:
            y_hat = model(X)                  # (B, C) scores
            loss = F.cross_entropy(y_hat, y)  # () mean over the batch
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    ### END SOLUTION
    return model


# %% nbgrader={"grade": true, "grade_id": "train-loop-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
from torch.utils.data import DataLoader, TensorDataset


class _CountingLoader:
    """Wraps a loader and counts the batches it hands out."""

    def __init__(self, loader):
        self.loader, self.batches = loader, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.batches += 1
            yield batch


def _weights(model):
    """A model's parameters as a list of tensors (the value the checks compare); anything else as it is."""
    return [p.detach().clone() for p in model.parameters()] if isinstance(model, nn.Module) else model


def _reference_train(model, X, y, batch_size, num_epochs, lr):
    """The loop exercise 5 asks for, run on a copy of ``model`` over (X, y) in order: its final weights."""
    model = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):  # iterating a DataLoader draws from torch's global generator
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(num_epochs):
            for X_batch, y_batch in DataLoader(TensorDataset(X, y), batch_size=batch_size):
                loss = F.cross_entropy(model(X_batch), y_batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return _weights(model)


def _test_predictions(model, splits):
    """The model's predicted class for each example of the test split."""
    model.eval()
    with torch.no_grad():
        return model(splits.test.tensors[0]).argmax(dim=1)


# 1. the loop takes every batch once per epoch, returns the model, and makes the reference loop's updates
_gen = torch.Generator().manual_seed(0)
_X, _y = torch.randn(40, 6, generator=_gen), torch.randint(0, 3, (40,), generator=_gen)   # 6 features
torch.manual_seed(0)
_model = nn.Linear(6, 3)
_start = copy.deepcopy(_model)                                  # the starting point, for the reference loop
_loader = _CountingLoader(DataLoader(TensorDataset(_X, _y), batch_size=10))   # 4 batches, fixed order
_out = train_loop(_model, _loader, num_epochs=3, lr=0.1)
check_equal("3 epochs of 4 batches take 12 batches", _loader.batches, expected=12,
            hint="loop over range(num_epochs), and inside it over every batch of train_loader")
check_close("the returned model's weights match the reference loop's", _weights(_out),
            expected=_reference_train(_start, _X, _y, batch_size=10, num_epochs=3, lr=0.1),
            atol=1e-5, weight=2,
            hint="return the model you trained; create SGD once with lr=lr, use F.cross_entropy (the batch "
                 "mean), and call optimizer.zero_grad() every step (without it, gradients pile up from batch "
                 "to batch)")

# 2. softmax regression on the digits learns
_splits = dlcourse.data.digits(flatten=True, seed=0)                  # X (N, 64) in [0, 1], y (N,)
_train_loader, _, _test_loader = _splits.loaders(batch_size=64, seed=0)
torch.manual_seed(0)
_softmax_regression = nn.Linear(64, 10)
train_loop(_softmax_regression, _train_loader, num_epochs=cfg.pick(smoke=5, small=10, full=20), lr=0.5)
print(f"softmax regression: test accuracy {dlcourse.evaluate(_softmax_regression, _test_loader)['acc']:.3f}")
check_accuracy("softmax regression reaches 85% test accuracy on the digits",
               _test_predictions(_softmax_regression, _splits), expected=_splits.test.tensors[1],
               threshold=0.85, weight=2,
               hint="is the loss decreasing? are the parameters updated every batch?")
print("train_loop: visible tests passed")

### BEGIN HIDDEN TESTS
# the learning rate is the one passed in: lr=0 changes nothing, while lr=0.1 from the same start trains (one
# check, so that a loop that returns without training earns nothing for leaving the weights alone)
def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(_weights(a), _weights(b), strict=True))


def _loss(model):
    with torch.no_grad():
        return F.cross_entropy(model(_X), _y).item()


torch.manual_seed(2)
_start = nn.Linear(6, 3)
_still, _moved = copy.deepcopy(_start), copy.deepcopy(_start)
train_loop(_still, DataLoader(TensorDataset(_X, _y), batch_size=10), num_epochs=2, lr=0.0)
train_loop(_moved, DataLoader(TensorDataset(_X, _y), batch_size=10), num_epochs=2, lr=0.1)
check_equal("lr=0 leaves the weights unchanged; lr=0.1 from the same start changes them and lowers the loss",
            {"lr=0: weights unchanged": _same(_still, _start), "lr=0.1: weights changed": not _same(_moved, _start),
             "lr=0.1: loss lowered": _loss(_moved) < _loss(_start)},
            expected={"lr=0: weights unchanged": True, "lr=0.1: weights changed": True, "lr=0.1: loss lowered": True},
            hint="with lr=0 the weights must not change (pass lr to torch.optim.SGD); with lr > 0 every step must "
                 "move them downhill")

# a two-layer model, other batch sizes and a last batch of a different size: same as the reference
_gen = torch.Generator().manual_seed(3)
_X2, _y2 = torch.randn(50, 8, generator=_gen), torch.randint(0, 4, (50,), generator=_gen)
torch.manual_seed(3)
_model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
_start = copy.deepcopy(_model)
_loader = _CountingLoader(DataLoader(TensorDataset(_X2, _y2), batch_size=16))  # 16, 16, 16, 2
train_loop(_model, _loader, num_epochs=4, lr=0.2)
check_close("an MLP, batches of 16, 16, 16 and 2: weights match the reference loop's", _weights(_model),
            expected=_reference_train(_start, _X2, _y2, batch_size=16, num_epochs=4, lr=0.2),
            atol=1e-5, weight=2,
            hint="an MLP trained with train_loop differs from the reference loop")

# one epoch is one pass
_loader_one = _CountingLoader(DataLoader(TensorDataset(_X2, _y2), batch_size=7))
train_loop(nn.Linear(8, 4), _loader_one, num_epochs=1, lr=0.1)
check_equal("batches taken: 4 epochs of 4 batches, then 1 epoch of 8", [_loader.batches, _loader_one.batches],
            expected=[16, 8], hint="each epoch takes every batch of train_loader exactly once")

# another split of the digits, another seed
_splits = dlcourse.data.digits(flatten=True, seed=1)
_train_loader, _, _test_loader = _splits.loaders(batch_size=64, seed=1)
torch.manual_seed(1)
_softmax_regression = nn.Linear(64, 10)
train_loop(_softmax_regression, _train_loader, num_epochs=cfg.pick(smoke=5, small=10, full=20), lr=0.5)
check_accuracy("softmax regression reaches 85% on another split of the digits",
               _test_predictions(_softmax_regression, _splits), expected=_splits.test.tensors[1],
               threshold=0.85,
               hint="softmax regression on another split of the digits reached less than 85% test accuracy")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "mlp-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 6: an MLP with `nn.Sequential` (1 point)
#
# Softmax regression draws straight lines between classes. A hidden layer with a nonlinearity lets the model
# bend them. Write `make_mlp(in_features, hidden, num_classes)`: an `nn.Sequential` MLP with one hidden layer of
# `hidden` ReLU units (both layers `nn.Linear` with a bias, created input side first) that maps `(N,
# in_features)` inputs to `(N, num_classes)` scores suitable for `F.cross_entropy`, and contains nothing else.
# The test counts the parameters, checks the output shape, compares the predictions with a reference MLP made
# from the same seed, and trains your MLP with `dlcourse.fit`.

# %% nbgrader={"grade": false, "grade_id": "mlp-answer", "locked": false, "schema_version": 3, "solution": true}
def make_mlp(in_features: int, hidden: int, num_classes: int) -> nn.Sequential:
    """Linear(in_features -> hidden), ReLU, Linear(hidden -> num_classes).

    Input X (N, in_features) -> logits (N, num_classes); no softmax at the end.
    """
    ### BEGIN SOLUTION
    return nn.Sequential(
        nn.Linear(in_features, hidden),   # (N, in_features) -> (N, hidden)
        nn.ReLU(),
        nn.Linear(hidden, num_classes),   # (N, hidden) -> (N, num_classes)
    )
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "mlp-tests", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def _reference_mlp(seed, in_features, hidden, num_classes):
    """Linear -> ReLU -> Linear created right after torch.manual_seed(seed), as make_mlp's layers would be."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


torch.manual_seed(0)
_mlp = make_mlp(64, 32, 10)
assert isinstance(_mlp, nn.Module), (
    f"make_mlp should return an nn.Module (nn.Sequential), got {type(_mlp).__name__}")
_gen = torch.Generator().manual_seed(0)
_X5, _X100 = torch.randn(5, 64, generator=_gen), torch.randn(100, 64, generator=_gen)
check_equal("make_mlp(64, 32, 10) has 64*32 + 32 + 32*10 + 10 parameters",
            sum(p.numel() for p in _mlp.parameters()), expected=64 * 32 + 32 + 32 * 10 + 10,
            hint="64*32 + 32 (first layer) + 32*10 + 10 (second layer): one hidden layer of size `hidden`, "
                 "both layers with a bias")
_out = _mlp(_X5)
check_equal("a batch of 5 inputs gives scores of shape (5, 10)", tuple(_out.shape), expected=(5, 10),
            hint="the model maps (N, in_features) to (N, num_classes)")
check_equal("predictions match Linear -> ReLU -> Linear made with the same seed", _mlp(_X100).argmax(dim=1),
            expected=_reference_mlp(0, 64, 32, 10)(_X100).argmax(dim=1), weight=2,
            hint="two linear layers in a row are just one linear (affine) layer: put nn.ReLU() between them")
check_close("returns raw scores (logits), not probabilities", _out,
            expected=_reference_mlp(0, 64, 32, 10)(_X5), atol=1e-5,
            hint="if the rows of your output sum to 1, the model applies softmax: the model should return "
                 "raw scores (logits); F.cross_entropy applies softmax itself, so leave it out of the model")

_splits = dlcourse.data.digits(flatten=True, seed=0)
_train_loader, _val_loader, _test_loader = _splits.loaders(batch_size=64, seed=0)
_history = dlcourse.fit(_mlp, torch.optim.Adam(_mlp.parameters(), lr=1e-2), _train_loader, _val_loader,
                        num_epochs=cfg.pick(smoke=5, small=10, full=20), progress=False)
_test_acc = dlcourse.evaluate(_mlp, _test_loader)["acc"]
print(f"MLP: val accuracy {_history.last['val_acc']:.3f}, test accuracy {_test_acc:.3f}")
_mlp.eval()
with torch.no_grad():
    _predictions = _mlp(_splits.test.tensors[0]).argmax(dim=1)
check_accuracy("the trained MLP reaches 85% test accuracy on the digits", _predictions,
               expected=_splits.test.tensors[1], threshold=0.85, weight=2,
               hint="the MLP should reach at least 85% test accuracy on the digits")
print("make_mlp: visible tests passed")

### BEGIN HIDDEN TESTS
_sizes = []
for _i, _h, _c in [(10, 7, 3), (2, 1, 2), (100, 50, 20)]:
    _m = make_mlp(_i, _h, _c)
    _sizes.append((sum(p.numel() for p in _m.parameters()),
                   tuple(_m(torch.randn(4, _i, generator=torch.Generator().manual_seed(_i))).shape)))
check_equal("make_mlp(10, 7, 3), (2, 1, 2), (100, 50, 20): parameter counts and output shapes", _sizes,
            expected=[(_i * _h + _h + _h * _c + _c, (4, _c))
                      for _i, _h, _c in [(10, 7, 3), (2, 1, 2), (100, 50, 20)]],
            hint="make_mlp(i, h, c) has i*h + h + h*c + c parameters and maps (4, i) inputs to (4, c) scores")
torch.manual_seed(5)
_m = make_mlp(4, 8, 3)
check_equal("make_mlp(4, 8, 3) is Linear(4 -> 8), ReLU, Linear(8 -> 3)",
            [(type(_l).__name__, getattr(_l, "in_features", None), getattr(_l, "out_features", None))
             for _l in _m.modules() if not list(_l.children())],
            expected=[("Linear", 4, 8), ("ReLU", None, None), ("Linear", 8, 3)],
            hint="make_mlp should have exactly two linear layers, in_features -> hidden -> num_classes, with "
                 "nn.ReLU() between them and nothing else (no softmax at the end)")
check_close("scores for inputs of -100 and +100 (the model uses its input)",
            _m(torch.tensor([[-100.0] * 4, [100.0] * 4])),
            expected=_reference_mlp(5, 4, 8, 3)(torch.tensor([[-100.0] * 4, [100.0] * 4])),
            hint="the MLP's scores should depend on its input, as Linear -> ReLU -> Linear's do")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "initial-loss-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 7: predict, then measure: the loss before training (1 point)
#
# Before you train a new classifier, know what its first loss should be: a first loss far from it points to a
# bug (labels shifted, a softmax inside the model, a broken initialisation) before a single step is taken. With
# PyTorch's default initialisation, a fresh network's scores (logits) are all small.
#
# Write `initial_loss(num_classes)`: your prediction, as a formula, of the mean cross-entropy of an untrained
# classifier with `num_classes` classes, returned as a Python float. It is a prediction: PyTorch's modules and
# cross-entropy are switched off while the test calls it. The test then **measures** the loss of freshly
# initialised MLPs (64 → 32 → `num_classes`, built with `dlcourse.models.mlp`) on the digits' training images
# with random labels. Your prediction passes when it is within **3 %** of the measurement, for 10 classes here
# and for other numbers of classes in the hidden tests.

# %% nbgrader={"grade": false, "grade_id": "initial-loss-answer", "locked": false, "schema_version": 3, "solution": true}
def initial_loss(num_classes: int) -> float:
    """Predicted mean cross-entropy of an untrained classifier with ``num_classes`` classes (a Python float)."""
    ### BEGIN SOLUTION
    return math.log(num_classes)   # small logits: softmax is about uniform, and -log(1 / C) = log C
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "initial-loss-tests", "locked": true, "points": 1, "schema_version": 3, "solution": false}
MEASURING = SOFTMAX_FUNCTIONS + ((nn.Module, "__call__"),)
NO_MEASURING = ("predict with a formula: calling modules and PyTorch's softmax and cross-entropy is switched off "
                "while the test calls initial_loss")


def _predicted(num_classes):
    with forbid(MEASURING, NO_MEASURING):
        return initial_loss(num_classes)


def _measured_initial_loss(num_classes):
    """Mean cross-entropy of a fresh MLP 64 -> 32 -> num_classes on the digits' training images, random labels."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = dlcourse.models.mlp(64, [32], num_classes)
    X = dlcourse.data.digits(flatten=True, seed=0).train.tensors[0]                      # (N, 64)
    y = torch.randint(0, num_classes, (len(X),), generator=torch.Generator().manual_seed(num_classes))
    with torch.no_grad():
        return F.cross_entropy(model(X), y).item()


check_prediction("the first loss of a 10-class classifier", _predicted(10), expected=_measured_initial_loss(10),
                 rtol=0.03, hint="small logits give an almost uniform softmax: what is -log of the probability "
                                 "each class then gets?")
print("initial_loss: visible tests passed")

### BEGIN HIDDEN TESTS
for _c in (2, 100, 1000):
    check_prediction(f"the first loss of a {_c}-class classifier", _predicted(_c),
                     expected=_measured_initial_loss(_c), rtol=0.03,
                     hint="the prediction must work for any number of classes: a function of num_classes")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - Softmax and cross-entropy must be computed stably: subtract the row maximum, and work with
#   log-probabilities.
# - A parameter update happens in place, under `torch.no_grad()`, and the gradients are cleared before the
#   next `backward()`; `torch.optim.SGD` does exactly this.
# - Accuracy compares the argmax over classes with the labels and is reported as a plain number.
# - Forward, loss, `zero_grad`, `backward`, `step`: every training loop in this course, `dlcourse.fit`
#   included, is these five lines plus bookkeeping.
# - An untrained classifier with C classes starts at a loss of about $\log C$: check it before training.
#
# ## Further exercises (not graded)
#
# 1. Train softmax regression with your own `cross_entropy` and `sgd_step` instead of PyTorch's. Is the result
#    the same? How much slower is it?
# 2. Remove `optimizer.zero_grad()` from your loop. What happens to the loss, and why does it still learn a
#    bit?
# 3. Try learning rates from 0.01 to 10 for softmax regression. Which diverge? Plot the final accuracy.
# 4. Make the MLP wider and deeper. When does test accuracy stop improving while training accuracy keeps
#    rising?
