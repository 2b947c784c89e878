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
# - build a small MLP with `nn.Sequential` and train it with `dlcourse.fit`.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab01_training_loop.ipynb` tells you what passes.
#
# **Time.** About 60–90 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 10 in all: softmax 2, cross-entropy 2, SGD step 2, accuracy 1, training loop 2, MLP 1.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import copy

import torch
import torch.nn.functional as F
from torch import nn

import dlcourse

from dlcourse.grading.checks import SOFTMAX_FUNCTIONS, forbid

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
_gen = torch.Generator().manual_seed(0)
_logits = torch.randn(4, 3, generator=_gen)               # (N=4, C=3)
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _probs = softmax(_logits)
assert isinstance(_probs, torch.Tensor), f"softmax should return a tensor, not {type(_probs).__name__}"
assert _probs.shape == (4, 3), f"softmax of a (4, 3) batch should be (4, 3), got {tuple(_probs.shape)}"
assert torch.allclose(_probs.sum(dim=1), torch.ones(4), atol=1e-6), (
    f"each row of softmax must sum to 1, got row sums {_probs.sum(dim=1).tolist()}: "
    "did you normalise over dim=1 (one row per example) with keepdim=True?")
assert torch.allclose(_probs, torch.softmax(_logits, dim=1), atol=1e-6), (
    "softmax differs from torch.softmax(logits, dim=1) on small random scores: check exp and the division")

_big = torch.tensor([[1000.0, 0.0, -1000.0], [500.0, 500.0, 0.0]])   # exp(1000) overflows float32
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _probs_big = softmax(_big)
assert torch.isfinite(_probs_big).all(), (
    f"softmax of large scores gave {_probs_big.tolist()} (inf or nan): exp(1000) overflows; "
    "subtract each row's maximum (logits.max(dim=1, keepdim=True).values) before exponentiating")
assert torch.allclose(_probs_big, torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]), atol=1e-6), (
    f"softmax of {_big.tolist()} should be [[1, 0, 0], [0.5, 0.5, 0]], got {_probs_big.tolist()}")

_shifted = _logits + torch.tensor([[100.0], [-50.0], [0.0], [7.0]])   # add a different constant to each row
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    assert torch.allclose(softmax(_shifted), _probs, atol=1e-5), (
        "adding a constant to a row must not change its softmax: did you subtract the maximum of the whole "
        "tensor instead of each row's maximum?")
print("softmax: visible tests passed")

### BEGIN HIDDEN TESTS
for _seed, _shape in [(1, (1, 1)), (2, (1, 10)), (3, (7, 2)), (4, (64, 100)), (5, (3, 5))]:
    _g = torch.Generator().manual_seed(_seed)
    _z = torch.randn(*_shape, generator=_g) * 5
    with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
        _p = softmax(_z)
    assert _p.shape == _shape, f"softmax of a {_shape} batch should be {_shape}, got {tuple(_p.shape)}"
    assert torch.allclose(_p, torch.softmax(_z, dim=1), atol=1e-6), (
        f"softmax differs from torch.softmax(logits, dim=1) for a batch of shape {_shape}")

# extreme values: every row far from zero, mixed signs, and a masked (-inf) entry
_z = torch.tensor([[1e4, 1e4 - 1.0, -1e4], [-1e4, -1e4 - 2.0, -1e4 - 4.0], [3e38, 0.0, -3e38],
                   [0.0, float("-inf"), 1.0]])
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _p = softmax(_z)
assert torch.isfinite(_p).all(), (
    "softmax of extreme scores (±1e4, ±3e38, -inf) gave inf or nan: subtract each row's maximum first")
assert torch.allclose(_p, torch.softmax(_z, dim=1), atol=1e-6), (
    "softmax differs from torch.softmax(logits, dim=1) on extreme scores (±1e4, ±3e38, a -inf mask)")

# float64 in, float64 out
_z = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _p = softmax(_z)
assert _p.dtype == torch.float64, f"softmax of float64 scores should stay float64, got {_p.dtype}"
assert torch.allclose(_p, torch.softmax(_z, dim=1), atol=1e-12), "softmax of float64 scores is not accurate"

# gradients flow through it
_z = torch.randn(3, 4, generator=torch.Generator().manual_seed(7), requires_grad=True)
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _p = softmax(_z)
(_p[:, 0] * torch.arange(3.0)).sum().backward()
_z_ref = _z.detach().clone().requires_grad_(True)
(torch.softmax(_z_ref, dim=1)[:, 0] * torch.arange(3.0)).sum().backward()
assert torch.allclose(_z.grad, _z_ref.grad, atol=1e-6), (
    "the gradient through softmax differs from torch's: use differentiable tensor operations (no .detach(), "
    ".item() or NumPy)")

# the input is left alone
_z = torch.randn(2, 3, generator=torch.Generator().manual_seed(8))
_z_copy = _z.clone()
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    softmax(_z)
assert torch.equal(_z, _z_copy), "softmax must not modify its input in place"
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
# which never takes the log of 0 (the sum is at least 1). Then pick each row's entry for its label: for a
# `(N, C)` tensor `log_probs`, `log_probs[torch.arange(N), y]` has shape `(N,)`.
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
_gen = torch.Generator().manual_seed(0)
_logits = torch.randn(5, 4, generator=_gen)               # (N=5, C=4)
_y = torch.tensor([0, 3, 1, 1, 2])                         # (N,)
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _loss = cross_entropy(_logits, _y)
assert isinstance(_loss, torch.Tensor), f"cross_entropy should return a tensor, not {type(_loss).__name__}"
assert _loss.shape == (), (
    f"cross_entropy should return a single number (a 0-dim tensor), got shape {tuple(_loss.shape)}: "
    "take the .mean() over the batch")
_expected = F.cross_entropy(_logits, _y)
assert torch.allclose(_loss, _expected, atol=1e-5), (
    f"cross_entropy gave {_loss.item():.5f}, F.cross_entropy gives {_expected.item():.5f}. "
    "Is it the mean (not the sum) of -log p[i, y[i]], with the log-probability of each example's own label?")

_big = torch.tensor([[1000.0, 0.0, -1000.0], [0.0, 200.0, 100.0]])    # log(softmax) would hit log(0) here
_y_big = torch.tensor([2, 0])
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _loss_big = cross_entropy(_big, _y_big)
assert torch.isfinite(_loss_big), (
    f"cross_entropy of large scores gave {_loss_big.item()}: the label's probability rounds to 0 "
    "and log(0) = -inf. "
    "Compute log-probabilities as (z - max) - log(sum(exp(z - max))) instead of log(softmax(z))")
assert torch.allclose(_loss_big, F.cross_entropy(_big, _y_big), rtol=1e-5), (
    f"cross_entropy of large scores gave {_loss_big.item()}, expected {F.cross_entropy(_big, _y_big).item()}")

_z = _logits.clone().requires_grad_(True)
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _loss_z = cross_entropy(_z, _y)
assert _loss_z.requires_grad, (
    "the loss is cut off from autograd (it has no grad_fn): keep every step a tensor operation, "
    "no .item(), .detach(), torch.tensor(...) or NumPy")
_loss_z.backward()
_z_ref = _logits.clone().requires_grad_(True)
F.cross_entropy(_z_ref, _y).backward()
assert _z.grad is not None and torch.allclose(_z.grad, _z_ref.grad, atol=1e-6), (
    "the gradient of your loss differs from F.cross_entropy's: keep every step a tensor operation "
    "(no .item(), .detach() or NumPy) and average over the batch")
print("cross_entropy: visible tests passed")

### BEGIN HIDDEN TESTS
for _seed, (_n, _c) in [(1, (1, 1)), (2, (1, 10)), (3, (17, 2)), (4, (128, 100)), (5, (6, 6))]:
    _g = torch.Generator().manual_seed(_seed)
    _z = torch.randn(_n, _c, generator=_g) * 4
    _t = torch.randint(0, _c, (_n,), generator=_g)
    with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
        _l = cross_entropy(_z, _t)
    assert _l.shape == (), f"cross_entropy should return a 0-dim tensor for a ({_n}, {_c}) batch"
    assert torch.allclose(_l, F.cross_entropy(_z, _t), atol=1e-5), (
        f"cross_entropy differs from F.cross_entropy for a batch of shape ({_n}, {_c})")

# extreme values
_z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4 - 3.0, -1e4 + 1.0], [3e38, -3e38, 0.0], [50.0, 0.0, -50.0]])
_t = torch.tensor([1, 1, 0, 2])
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _l = cross_entropy(_z, _t)
assert torch.isfinite(_l), "cross_entropy of extreme scores (±1e4, ±3e38) is inf or nan: work in log space"
assert torch.allclose(_l, F.cross_entropy(_z, _t), rtol=1e-5), "cross_entropy is wrong on extreme scores"

# confident and right: loss near 0, not negative
_z = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _l = cross_entropy(_z, torch.tensor([0, 1]))
assert 0.0 <= _l.item() < 1e-6, f"a confident right answer should have loss near 0, got {_l.item()}"

# float64, and gradients on a bigger random batch
_g = torch.Generator().manual_seed(9)
_z = (torch.randn(32, 10, dtype=torch.float64, generator=_g) * 10).requires_grad_(True)
_t = torch.randint(0, 10, (32,), generator=_g)
with forbid(SOFTMAX_FUNCTIONS, NO_BUILTIN_SOFTMAX):
    _l = cross_entropy(_z, _t)
assert _l.dtype == torch.float64, f"cross_entropy of float64 scores should be float64, got {_l.dtype}"
_l.backward()
_z_ref = _z.detach().clone().requires_grad_(True)
F.cross_entropy(_z_ref, _t).backward()
assert torch.allclose(_l.detach(), F.cross_entropy(_z_ref.detach(), _t), atol=1e-10), (
    "cross_entropy of float64 scores is inaccurate")
assert torch.allclose(_z.grad, _z_ref.grad, atol=1e-10), "the gradient of cross_entropy differs from torch's"
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
torch.manual_seed(0)
_model = nn.Linear(5, 3)                               # weight (3, 5), bias (3,)
_ref = copy.deepcopy(_model)
_X, _y = torch.randn(8, 5), torch.randint(0, 3, (8,))
_weight_before = _model.weight
_old = [p.detach().clone() for p in _model.parameters()]

F.cross_entropy(_model(_X), _y).backward()
sgd_step(list(_model.parameters()), lr=0.1)

_opt = torch.optim.SGD(_ref.parameters(), lr=0.1)
F.cross_entropy(_ref(_X), _y).backward()
_opt.step()

assert _model.weight is _weight_before, (
    "sgd_step must update the parameter tensors in place, not replace them")
assert not all(torch.equal(p, o) for p, o in zip(_model.parameters(), _old)), (
    "the model's parameters did not change: `p = p - lr * p.grad` only rebinds the name p; "
    "update in place with `p -= lr * p.grad` inside `with torch.no_grad():`")
for (_name, _p), _p_ref in zip(_model.named_parameters(), _ref.parameters()):
    assert torch.allclose(_p, _p_ref, atol=1e-6), (
        f"{_name} after sgd_step differs from torch.optim.SGD's: "
        "the update is p - lr * p.grad (a minus sign, the learning rate times the gradient)")
    assert _p.grad is None or torch.count_nonzero(_p.grad) == 0, (
        f"{_name}.grad still holds the old gradient: set p.grad = None (or zero it) after the update, "
        "otherwise the next backward() adds to it")
    assert _p.requires_grad and _p.is_leaf, (
        f"{_name} should still be a leaf tensor that requires grad after the update: "
        "do it under torch.no_grad()")
print("sgd_step: visible tests passed")

### BEGIN HIDDEN TESTS
# several steps with a generator of parameters, on a model with two layers
torch.manual_seed(1)
_model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2))
_ref = copy.deepcopy(_model)
_opt = torch.optim.SGD(_ref.parameters(), lr=0.05)
_X, _y = torch.randn(16, 6), torch.randint(0, 2, (16,))
for _step in range(4):
    F.cross_entropy(_model(_X), _y).backward()
    _ret = sgd_step(_model.parameters(), 0.05)          # a generator, not a list
    _opt.zero_grad()
    F.cross_entropy(_ref(_X), _y).backward()
    _opt.step()
    for _p, _p_ref in zip(_model.parameters(), _ref.parameters()):
        assert torch.allclose(_p, _p_ref, atol=1e-6), (
            f"after {_step + 1} steps the parameters differ from torch.optim.SGD's: "
            "are the gradients cleared after each step, and does sgd_step work when params is a generator "
            "(model.parameters())?")
        assert _p.grad is None or torch.count_nonzero(_p.grad) == 0, (
            "gradients must be cleared after each step")
assert _ret is None, "sgd_step updates in place and returns None"

# a parameter without a gradient is skipped and left as it is
_a = torch.ones(3, requires_grad=True)
_b = torch.ones(2, requires_grad=True)
(_a * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
sgd_step([_a, _b], lr=0.5)
assert torch.allclose(_a, torch.tensor([0.5, 0.0, -0.5])), f"expected a = [0.5, 0, -0.5], got {_a.tolist()}"
assert torch.equal(_b, torch.ones(2)), "a parameter whose .grad is None must be skipped"

# lr = 0 changes nothing but still clears the gradients
_c = torch.tensor([1.0, -2.0], requires_grad=True)
(_c ** 2).sum().backward()
sgd_step([_c], lr=0.0)
assert torch.equal(_c.detach(), torch.tensor([1.0, -2.0])), "with lr=0 the parameters must not change"
assert _c.grad is None or torch.count_nonzero(_c.grad) == 0, "gradients must be cleared even when lr=0"
assert torch.is_grad_enabled(), (
    "autograd is switched off after sgd_step: use `with torch.no_grad():`, not torch.set_grad_enabled(False)")
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
_acc = accuracy(_y_hat, _y)
assert isinstance(_acc, float), (
    f"accuracy should return a Python float, got {type(_acc).__name__}: use .item() on a one-element tensor")
assert 0.0 <= _acc <= 1.0, (
    f"accuracy is a fraction between 0 and 1, got {_acc}: divide the number of right predictions by N, "
    "and don't multiply by 100")
assert abs(_acc - 0.5) < 1e-9, (
    f"2 of these 4 predictions are right, so accuracy should be 0.5, got {_acc}: the prediction is "
    "y_hat.argmax(dim=1) (over classes, not over the batch)")
assert accuracy(_y_hat, torch.tensor([1, 0, 2, 2])) == 1.0, "all four predictions right should give 1.0"
assert accuracy(_y_hat, torch.tensor([0, 1, 0, 1])) == 0.0, "all four predictions wrong should give 0.0"
_ties = torch.tensor([[1.0, 1.0, 0.0], [0.0, 3.0, 3.0]])   # tied rows: argmax predicts classes 0 and 1
assert accuracy(_ties, torch.tensor([0, 1])) == 1.0 and accuracy(_ties, torch.tensor([1, 2])) == 0.0, (
    "ties go to the first of the tied maxima, as in torch.argmax: [1, 1, 0] predicts class 0")
print("accuracy: visible tests passed")

### BEGIN HIDDEN TESTS
_g = torch.Generator().manual_seed(3)
for _n, _c in [(1, 2), (1, 10), (1000, 10), (37, 5)]:
    _s = torch.randn(_n, _c, generator=_g)
    _t = torch.randint(0, _c, (_n,), generator=_g)
    _expected = (_s.argmax(dim=1) == _t).float().mean().item()
    _a = accuracy(_s, _t)
    assert isinstance(_a, float), f"accuracy should return a Python float, got {type(_a).__name__}"
    assert abs(_a - _expected) < 1e-6, (
        f"accuracy on a random ({_n}, {_c}) batch: expected {_expected}, got {_a}")
    assert abs(accuracy(torch.softmax(_s, dim=1), _t) - _expected) < 1e-6, (
        "accuracy of probabilities must equal accuracy of the logits they come from")
# many ties, all-equal rows go to class 0
_s = torch.zeros(6, 4)
assert accuracy(_s, torch.zeros(6, dtype=torch.int64)) == 1.0, "a row of equal scores predicts class 0"
assert accuracy(_s, torch.tensor([0, 0, 0, 1, 2, 3])) == 0.5, "a row of equal scores predicts class 0"
# a batch where exactly one in three is right: no integer division
_s = torch.eye(3)
assert abs(accuracy(_s, torch.tensor([0, 2, 1])) - 1 / 3) < 1e-6, "1 right out of 3 should give 1/3"
# float64 scores
assert accuracy(torch.eye(4, dtype=torch.float64), torch.arange(4)) == 1.0, (
    "accuracy must work on float64 scores")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "train-loop-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: the training loop (2 points)
#
# Every PyTorch training loop has the same five lines per batch:
#
# ```python
# y_hat = model(X)              # 1. forward: (B, C) scores
# loss = loss_fn(y_hat, y)      # 2. loss: a 0-dim tensor, the batch mean
# optimizer.zero_grad()         # 3. clear last step's gradients (backward adds to .grad)
# loss.backward()               # 4. gradients of the loss for every parameter
# optimizer.step()              # 5. update the parameters
# ```
#
# Write `train_loop(model, train_loader, num_epochs, lr)`: create `torch.optim.SGD(model.parameters(), lr=lr)`
# **once**, then for each of `num_epochs` epochs go through every `(X, y)` batch of `train_loader` with these
# five lines, using `F.cross_entropy` as the loss. Return the model. (Here you use PyTorch's optimizer and
# loss; your own versions from exercises 1–3 do the same work, more slowly.)
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


def _reference_loop(model, loader, num_epochs, lr):
    """The loop exercise 5 asks for, to compare against."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(num_epochs):
        for X, y in loader:
            loss = F.cross_entropy(model(X), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


# 1. the loop visits every batch once per epoch, and returns the model
torch.manual_seed(0)
_X, _y = torch.randn(40, 6), torch.randint(0, 3, (40,))          # 40 examples, 6 features, 3 classes
_loader = _CountingLoader(DataLoader(TensorDataset(_X, _y), batch_size=10))   # 4 batches, fixed order
_model = nn.Linear(6, 3)
_ref = copy.deepcopy(_model)
_out = train_loop(_model, _loader, num_epochs=3, lr=0.1)
assert _loader.batches == 3 * len(_loader), (
    f"with 3 epochs of 4 batches the loop should take 12 batches, it took {_loader.batches}: loop over "
    "range(num_epochs), and inside it over every batch of train_loader")
assert _out is _model, "train_loop should return the model it trained"

# 2. the same updates as the reference loop (same data order, same initial weights)
_reference_loop(_ref, DataLoader(TensorDataset(_X, _y), batch_size=10), num_epochs=3, lr=0.1)
for _name, _p in _model.named_parameters():
    _p_ref = dict(_ref.named_parameters())[_name]
    assert torch.allclose(_p, _p_ref, atol=1e-5), (
        f"after training, {_name} differs from the reference loop's. "
        "Check that you create SGD once with lr=lr, use F.cross_entropy (the batch mean), "
        "and call optimizer.zero_grad() every step (without it, gradients pile up from batch to batch)")

# 3. softmax regression on the digits learns
_splits = dlcourse.data.digits(flatten=True, seed=0)                  # X (N, 64) in [0, 1], y (N,)
_train_loader, _, _test_loader = _splits.loaders(batch_size=64, seed=0)
torch.manual_seed(0)
_softmax_regression = nn.Linear(64, 10)
train_loop(_softmax_regression, _train_loader, num_epochs=cfg.pick(smoke=5, small=10, full=20), lr=0.5)
_test_acc = dlcourse.evaluate(_softmax_regression, _test_loader)["acc"]
print(f"softmax regression: test accuracy {_test_acc:.3f}")
assert _test_acc >= 0.85, (
    f"softmax regression reached only {_test_acc:.1%} test accuracy (expected at least 85%): is the loss "
    "decreasing? are the parameters updated every batch?")
print("train_loop: visible tests passed")

### BEGIN HIDDEN TESTS
# the learning rate is the one passed in: lr=0 changes nothing
torch.manual_seed(2)
_model = nn.Linear(6, 3)
_before = copy.deepcopy(_model.state_dict())
train_loop(_model, DataLoader(TensorDataset(_X, _y), batch_size=10), num_epochs=2, lr=0.0)
assert all(torch.equal(_model.state_dict()[k], v) for k, v in _before.items()), (
    "with lr=0 the weights must not change: pass lr to torch.optim.SGD")

# a two-layer model, other batch sizes and a last batch of a different size: same as the reference
torch.manual_seed(3)
_X2, _y2 = torch.randn(50, 8), torch.randint(0, 4, (50,))
_model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
_ref = copy.deepcopy(_model)
_loader = _CountingLoader(DataLoader(TensorDataset(_X2, _y2), batch_size=16))  # 16, 16, 16, 2
train_loop(_model, _loader, num_epochs=4, lr=0.2)
_reference_loop(_ref, DataLoader(TensorDataset(_X2, _y2), batch_size=16), num_epochs=4, lr=0.2)
assert _loader.batches == 16, f"4 epochs of 4 batches should take 16 batches, took {_loader.batches}"
for _p, _p_ref in zip(_model.parameters(), _ref.parameters()):
    assert torch.allclose(_p, _p_ref, atol=1e-5), (
        "an MLP trained with train_loop differs from the reference loop")

# one epoch is one pass
_loader = _CountingLoader(DataLoader(TensorDataset(_X2, _y2), batch_size=7))
train_loop(nn.Linear(8, 4), _loader, num_epochs=1, lr=0.1)
assert _loader.batches == 8, f"one epoch over 8 batches should take 8 batches, took {_loader.batches}"

# another split of the digits, another seed
_splits = dlcourse.data.digits(flatten=True, seed=1)
_train_loader, _, _test_loader = _splits.loaders(batch_size=64, seed=1)
torch.manual_seed(1)
_softmax_regression = nn.Linear(64, 10)
train_loop(_softmax_regression, _train_loader, num_epochs=cfg.pick(smoke=5, small=10, full=20), lr=0.5)
assert dlcourse.evaluate(_softmax_regression, _test_loader)["acc"] >= 0.85, (
    "softmax regression on another split of the digits reached less than 85% test accuracy")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "mlp-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 6: an MLP with `nn.Sequential` (1 point)
#
# Softmax regression draws straight lines between classes. A hidden layer with a nonlinearity lets the model
# bend them. Write `make_mlp(in_features, hidden, num_classes)` returning
# `nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))`.
#
# Two things to get right: the ReLU between the layers (two linear layers in a row are just one linear layer),
# and **no softmax at the end** — the model outputs raw scores (logits) and `F.cross_entropy` applies
# log-softmax itself. The test counts the parameters, checks the output shape, and trains your MLP with
# `dlcourse.fit`.

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
torch.manual_seed(0)
_mlp = make_mlp(64, 32, 10)
assert isinstance(_mlp, nn.Module), (
    f"make_mlp should return an nn.Module (nn.Sequential), got {type(_mlp).__name__}")
_n_params = sum(p.numel() for p in _mlp.parameters())
_expected = 64 * 32 + 32 + 32 * 10 + 10   # weights and biases of both layers
assert _n_params == _expected, (
    f"make_mlp(64, 32, 10) has {_n_params} parameters, expected {_expected} = 64*32 + 32 (first layer) + "
    "32*10 + 10 (second layer): one hidden layer of size `hidden`, both layers with a bias")
_out = _mlp(torch.randn(5, 64))
assert _out.shape == (5, 10), (
    f"a batch of 5 inputs should give scores of shape (5, 10), got {tuple(_out.shape)}")
assert not torch.allclose(_out.sum(dim=1), torch.ones(5), atol=1e-3), (
    "the rows of the output sum to 1: the model should return raw scores (logits); F.cross_entropy applies "
    "softmax itself, so leave it out of the model")
_x1, _x2 = torch.randn(3, 64), torch.randn(3, 64)
assert not torch.allclose(_mlp(_x1 + _x2) + _mlp(torch.zeros(3, 64)), _mlp(_x1) + _mlp(_x2), atol=1e-4), (
    "the model is affine (linear): put nn.ReLU() between the two linear layers")

_splits = dlcourse.data.digits(flatten=True, seed=0)
_train_loader, _val_loader, _test_loader = _splits.loaders(batch_size=64, seed=0)
_history = dlcourse.fit(_mlp, torch.optim.Adam(_mlp.parameters(), lr=1e-2), _train_loader, _val_loader,
                        num_epochs=cfg.pick(smoke=5, small=10, full=20), progress=False)
_test_acc = dlcourse.evaluate(_mlp, _test_loader)["acc"]
print(f"MLP: val accuracy {_history.last['val_acc']:.3f}, test accuracy {_test_acc:.3f}")
assert _test_acc >= 0.85, (
    f"the MLP reached only {_test_acc:.1%} test accuracy on the digits (expected at least 85%)")
print("make_mlp: visible tests passed")

### BEGIN HIDDEN TESTS
for _i, _h, _c in [(10, 7, 3), (2, 1, 2), (100, 50, 20)]:
    _m = make_mlp(_i, _h, _c)
    _n = sum(p.numel() for p in _m.parameters())
    assert _n == _i * _h + _h + _h * _c + _c, f"make_mlp({_i}, {_h}, {_c}) has {_n} parameters"
    assert _m(torch.randn(4, _i)).shape == (4, _c), f"make_mlp({_i}, {_h}, {_c}) gives the wrong output shape"
_m = make_mlp(4, 8, 3)
_linears = [m for m in _m.modules() if isinstance(m, nn.Linear)]
assert [(l.in_features, l.out_features) for l in _linears] == [(4, 8), (8, 3)], (
    "make_mlp should have exactly two linear layers: in_features -> hidden -> num_classes")
assert any(isinstance(m, nn.ReLU) for m in _m.modules()), "make_mlp should use nn.ReLU between the layers"
assert (_m(-100 * torch.ones(1, 4)) - _m(100 * torch.ones(1, 4))).abs().sum() > 0, "the MLP ignores its input"
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
