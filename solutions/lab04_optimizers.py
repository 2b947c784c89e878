# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 04: optimisers and schedules
#
# This lab goes with notebook 04. You write the pieces of a modern training recipe yourself, and PyTorch checks
# each one.
#
# **Learning goals.** After this lab you can
# - write an optimiser's `step()`: AdamW, with bias correction and decoupled weight decay, equal to
#   `torch.optim.AdamW`;
# - write a warmup + cosine learning-rate schedule and drive an optimiser with it through `LambdaLR`;
# - clip gradients by their global norm exactly as `torch.nn.utils.clip_grad_norm_` does;
# - split a model's parameters into groups with and without weight decay;
# - train with a one-cycle schedule stepped every batch by `dlcourse.fit`;
# - predict how much memory an optimiser's state takes next to the model's own parameters.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab04_optimizers.ipynb` tells you what passes.
#
# **Time.** About 70–100 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 11 in all: AdamW step 3, warmup + cosine 2, gradient clipping 2, parameter groups 2, one-cycle
# training 1, the memory of an optimiser's state (predict, then measure) 1.

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
import torch.optim.adam as optim_adam
import torch.optim.adamw as optim_adamw
from torch import nn

import dlcourse

from dlcourse.grading.checks import check_accuracy, check_close, check_equal, check_prediction, forbid

cfg = dlcourse.setup(seed=0)

# Tests of from-scratch code switch PyTorch's own versions off while they call yours.
ADAM_FUNCTIONS = (
    (torch.optim.Adam, "step"), (torch.optim.AdamW, "step"), (optim_adam, "adam"), (optim_adamw, "adamw"),
    (torch.optim._functional, "adam"), (torch.optim._functional, "adamw"),
    (torch, "_fused_adam_"), (torch, "_fused_adamw_"),
)
NO_BUILTIN_ADAM = "write the update from tensor operations: torch.optim.Adam/AdamW are switched off in this test"
CLIP_FUNCTIONS = tuple(
    (owner, name) for owner in (torch.nn.utils, torch.nn.utils.clip_grad)
    for name in ("clip_grad_norm_", "clip_grad_norm", "clip_grads_with_norm_", "get_total_norm",
                 "_clip_grads_with_norm_", "_get_total_norm")
    if hasattr(owner, name)
)
NO_BUILTIN_CLIP = "compute the norm yourself: torch.nn.utils.clip_grad_norm_ and friends are switched off here"


def tiny_mlp(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A small MLP (10 -> 16 -> 3) the tests train; float64 so that rounding cannot hide a wrong formula."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)


def train_steps(model: nn.Module, optimizer, num_steps: int, seed: int = 0) -> None:
    """``num_steps`` optimiser steps of cross-entropy on random minibatches of 8 examples (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    for _ in range(num_steps):
        X = torch.randn(8, 10, generator=gen).to(dtype)      # (8, 10)
        y = torch.randint(0, 3, (8,), generator=gen)          # (8,)
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def weights(model: nn.Module) -> list[torch.Tensor]:
    """A model's parameters as a list of tensors: the value the checks compare."""
    return [p.detach().clone() for p in model.parameters()]


def trained_with(make_optimizer, num_steps: int, seed: int = 0, dtype: torch.dtype = torch.float64,
                 groups=None) -> list[torch.Tensor]:
    """The weights of tiny_mlp(seed) after ``num_steps`` of train_steps with ``make_optimizer(params)``.

    ``groups(model)``, when given, builds the parameter groups to pass instead of model.parameters(). Used for
    torch's reference runs, so it leaves torch's global random number generator as it found it.
    """
    with torch.random.fork_rng(devices=[]):
        model = tiny_mlp(seed, dtype)
        train_steps(model, make_optimizer(groups(model) if groups else model.parameters()), num_steps, seed)
    return weights(model)

# %% [markdown] nbgrader={"grade": false, "grade_id": "adamw-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: the AdamW step (3 points)
#
# `MyAdamW` below is a complete `torch.optim.Optimizer` except for the update itself. Complete it so that it
# trains exactly like `torch.optim.AdamW` with the same hyperparameters, over many steps and with several
# parameter groups. At step $t = 1, 2, \dots$, with gradient $g_t$ and per coordinate, AdamW keeps the moving
# averages $m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t$ and $v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2$ (both start
# at zero) and updates
#
# $$p_t = (1 - \mathrm{lr}\cdot\mathrm{wd})\,p_{t-1} - \mathrm{lr}\,\frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon},
#   \qquad \hat m_t = \frac{m_t}{1-\beta_1^t},\quad \hat v_t = \frac{v_t}{1-\beta_2^t}:$$
#
# the weight decay is *decoupled* (it shrinks the weights and never enters $m$ or $v$), and the divisions
# correct the averages' bias towards their zero start. The state entries `exp_avg` ($m$), `exp_avg_sq` ($v$)
# and `step` ($t$, an int) are created for you under PyTorch's names; keep them up to date (the tests read
# them), and change `p` in place: the model holds that very tensor. `step()` already runs under
# `torch.no_grad()`. PyTorch's Adam and AdamW are switched off while yours runs.

# %% nbgrader={"grade": false, "grade_id": "adamw-answer", "locked": false, "schema_version": 3, "solution": true}
class MyAdamW(torch.optim.Optimizer):
    """AdamW (Adam with decoupled weight decay) written out; same defaults as torch.optim.AdamW."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:                           # took no part in the loss: leave it alone
                    continue
                g = p.grad                                   # same shape as p
                state = self.state[p]
                if not state:                                # the first step for this parameter
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)      # m
                    state["exp_avg_sq"] = torch.zeros_like(p)   # v
                ### BEGIN SOLUTION
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                p.mul_(1 - lr * wd)                          # decoupled decay: on the weights, not the gradient
                m.mul_(beta1).add_((1 - beta1) * g)
                v.mul_(beta2).add_((1 - beta2) * g * g)
                m_hat = m / (1 - beta1 ** t)                 # bias corrections: m and v started at zero
                v_hat = v / (1 - beta2 ** t)
                p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
                ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "adamw-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
# 1. one step by hand: after bias correction m_hat = g and v_hat = g^2, so each coordinate moves by about lr
_p = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
_opt = MyAdamW([_p], lr=0.1, weight_decay=0.1)
_p.grad = torch.tensor([0.5, 0.1], dtype=torch.float64)
with forbid(ADAM_FUNCTIONS, NO_BUILTIN_ADAM):
    _opt.step()
check_close("one step from p = [1, -2] with g = [0.5, 0.1], lr = 0.1, wd = 0.1", _p.detach(),
            expected=torch.tensor([0.99 * 1.0 - 0.1, 0.99 * -2.0 - 0.1], dtype=torch.float64), atol=1e-6,
            hint="the first step moves each coordinate by about lr (m_hat / sqrt(v_hat) = g / |g|): check the bias "
                 "corrections 1 - beta**t with t = 1, and that the decay multiplies p by (1 - lr * wd) instead of "
                 "adding wd * p to the gradient. If p did not change at all: update it in place (p.mul_, p.sub_)")
check_close("the state after one step: step count and m = (1 - beta1) * g",
            [_opt.state[_p].get("step"), _opt.state[_p].get("exp_avg")],
            expected=[1, torch.tensor([0.05, 0.01], dtype=torch.float64)], atol=1e-12,
            hint="add 1 to state['step'] and update state['exp_avg'] in place (m.mul_(beta1).add_(...))")

# 2. twenty steps on a small network: the same parameters as torch.optim.AdamW
_model = tiny_mlp()
with forbid(ADAM_FUNCTIONS, NO_BUILTIN_ADAM):
    train_steps(_model, MyAdamW(_model.parameters(), lr=1e-2, weight_decay=0.1), num_steps=20)
check_close("20 steps on a small MLP match torch.optim.AdamW", weights(_model),
            expected=trained_with(lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1), 20),
            atol=1e-6, weight=2,
            hint="is the state updated in place (m.mul_(...).add_(...)), does t count the steps, and is eps added "
                 "after the square root?")
print("MyAdamW: visible tests passed")

### BEGIN HIDDEN TESTS
def _two_groups(m):
    """Weights with the default decay, biases with none and their own lr."""
    return [{"params": [m[0].weight, m[2].weight], "weight_decay": 0.05},
            {"params": [m[0].bias, m[2].bias], "weight_decay": 0.0, "lr": 3e-3}]


# 100 steps, two parameter groups with their own lr and weight decay, non-default betas and eps
_model = tiny_mlp(seed=1)
with forbid(ADAM_FUNCTIONS, NO_BUILTIN_ADAM):
    train_steps(_model, MyAdamW(_two_groups(_model), lr=1e-2, betas=(0.8, 0.99), eps=1e-6), 100, seed=1)
check_close("100 steps with two parameter groups and other betas and eps match torch.optim.AdamW",
            weights(_model), expected=trained_with(
                lambda ps: torch.optim.AdamW(ps, lr=1e-2, betas=(0.8, 0.99), eps=1e-6), 100, seed=1,
                groups=_two_groups), atol=1e-6, weight=2,
            hint="read lr, betas, eps and weight_decay from each group, not from the defaults")

# weight_decay = 0 is plain Adam
_model = tiny_mlp(seed=2)
with forbid(ADAM_FUNCTIONS, NO_BUILTIN_ADAM):
    train_steps(_model, MyAdamW(_model.parameters(), lr=5e-3, weight_decay=0.0), num_steps=30, seed=2)
check_close("with weight_decay=0, 30 steps match torch.optim.Adam", weights(_model),
            expected=trained_with(lambda ps: torch.optim.Adam(ps, lr=5e-3), 30, seed=2), atol=1e-6)

# a parameter without a gradient is skipped (it does not move); the default weight decay is used
_a = torch.ones(3, dtype=torch.float64, requires_grad=True)
_b = torch.ones(2, dtype=torch.float64, requires_grad=True)
_opt = MyAdamW([_a, _b], lr=0.01)
for _k in range(3):
    _a.grad = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64) * (_k + 1)
    with forbid(ADAM_FUNCTIONS, NO_BUILTIN_ADAM):
        _opt.step()


def _adamw_three_steps():
    """torch.optim.AdamW (default weight decay) on the same three gradients."""
    a = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.AdamW([a], lr=0.01)
    for k in range(3):
        a.grad = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64) * (k + 1)
        opt.step()
    return a.detach()


check_close("three steps on one tensor, a second tensor without gradient left alone, step count 3",
            [_a.detach(), _b.detach(), _opt.state[_a].get("step")],
            expected=[_adamw_three_steps(), torch.ones(2, dtype=torch.float64), 3], atol=1e-9,
            hint="skip parameters whose .grad is None, and count the steps in state['step']")

# float32 works too
_model = tiny_mlp(seed=3, dtype=torch.float32)
with forbid(ADAM_FUNCTIONS, NO_BUILTIN_ADAM):
    train_steps(_model, MyAdamW(_model.parameters(), lr=1e-2), num_steps=20, seed=3)
check_close("in float32, 20 steps match torch.optim.AdamW", weights(_model),
            expected=trained_with(lambda ps: torch.optim.AdamW(ps, lr=1e-2), 20, seed=3, dtype=torch.float32),
            atol=1e-5)
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "warmup-cosine-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: warmup + cosine (2 points)
#
# Write `warmup_cosine(step, warmup_steps, total_steps, peak_lr, min_lr=0.0)`, the learning rate to use at
# optimiser step `step` (0, 1, 2, ...):
#
# - **warmup**, for `step < warmup_steps`: rise linearly from 0, `peak_lr * step / warmup_steps` (so step 0
#   uses lr 0 and step `warmup_steps` reaches the peak);
# - **cosine decay** afterwards: with `progress = (step - warmup_steps) / (total_steps - warmup_steps)`, capped at
#   1, the lr is `min_lr + (peak_lr - min_lr) * 0.5 * (1 + cos(pi * progress))`: `peak_lr` at the end of the
#   warmup, `min_lr` at `total_steps` and after it.
#
# `warmup_steps` may be 0 (no warmup). Return a Python float. The test plugs your function into
# `torch.optim.lr_scheduler.LambdaLR` (which multiplies the optimiser's lr by the function's value) and compares
# the decay with PyTorch's own `CosineAnnealingLR`.

# %% nbgrader={"grade": false, "grade_id": "warmup-cosine-answer", "locked": false, "schema_version": 3, "solution": true}
def warmup_cosine(step: int, warmup_steps: int, total_steps: int, peak_lr: float, min_lr: float = 0.0) -> float:
    """The learning rate at optimiser step ``step``: linear warmup from 0 to peak_lr, then cosine to min_lr.

    step: 0, 1, 2, ... (values past total_steps give min_lr); 0 <= warmup_steps < total_steps.
    Returns a Python float.
    """
    ### BEGIN SOLUTION
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))   # 0 -> 1 over the decay
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "warmup-cosine-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _scheduled(make_scheduler, num_steps, base_lr):
    """The lr of each of num_steps optimiser steps under a torch scheduler (on a dummy optimiser)."""
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = make_scheduler(dummy)
    lrs = []
    for _ in range(num_steps):
        lrs.append(dummy.param_groups[0]["lr"])
        dummy.step()
        scheduler.step()
    return lrs


def _torch_warmup_cosine(warmup_steps, total_steps, peak_lr, min_lr):
    """The linear warmup, then torch's own CosineAnnealingLR from peak_lr to min_lr."""
    return [peak_lr * s / warmup_steps for s in range(warmup_steps)] + _scheduled(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total_steps - warmup_steps, eta_min=min_lr),
        total_steps - warmup_steps, peak_lr)


_steps = [0, 5, 9, 10, 55, 100, 150]
_lrs = [warmup_cosine(_s, 10, 100, 1.0) for _s in _steps]
check_equal("returns Python floats", sorted({type(_v).__name__ for _v in _lrs}), expected=["float"],
            hint="return a Python float (e.g. from math.cos), not a tensor or an int")
check_close("steps 0, 5, 9, 10, 55, 100 and 150 of warmup_steps=10, total_steps=100, peak_lr=1", _lrs,
            expected=[0.0, 0.5, 0.9, 1.0, 0.5, 0.0, 0.0], atol=1e-9, weight=2,
            hint="warmup: peak_lr * step / warmup_steps; then half a cosine over total_steps - warmup_steps steps, "
                 "staying at min_lr after total_steps")
check_close("the middle of the decay with peak_lr=2, min_lr=0.2", warmup_cosine(55, 10, 100, 2.0, min_lr=0.2),
            expected=1.1, atol=1e-9,
            hint="the cosine runs from peak_lr down to min_lr, not down to 0: halfway it is (2 + 0.2) / 2")

# plugged into LambdaLR, the whole schedule equals a linear warmup followed by torch's CosineAnnealingLR
_peak, _min, _warm, _total = 3e-3, 1e-5, 20, 200
_lambda_lrs = _scheduled(lambda o: torch.optim.lr_scheduler.LambdaLR(
    o, lambda s: warmup_cosine(s, _warm, _total, _peak, _min) / _peak), _total, _peak)
check_close("through LambdaLR: linear warmup, then the same lrs as CosineAnnealingLR", _lambda_lrs,
            expected=_torch_warmup_cosine(_warm, _total, _peak, _min), rtol=1e-6, atol=1e-12, weight=2,
            hint="after the warmup the lr should equal torch.optim.lr_scheduler.CosineAnnealingLR(T_max=total_steps "
                 "- warmup_steps, eta_min=min_lr)")
print("warmup_cosine: visible tests passed")

### BEGIN HIDDEN TESTS
# no warmup: the cosine from the first step
check_close("warmup_steps=0: CosineAnnealingLR from step 0", [warmup_cosine(_s, 0, 50, 0.1, 0.001) for _s in range(50)],
            expected=_scheduled(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50, eta_min=0.001),
                                50, 0.1), rtol=1e-6, atol=1e-12)
# a warmup of one step; min_lr equal to the peak (constant after the warmup); odd sizes
check_close("warmup of one step, and a flat schedule when min_lr == peak_lr",
            [warmup_cosine(0, 1, 7, 0.5), warmup_cosine(1, 1, 7, 0.5)] + [warmup_cosine(_s, 3, 17, 0.2, 0.2)
                                                                           for _s in range(3, 30)],
            expected=[0.0, 0.5] + [0.2] * 27, atol=1e-12)
# the whole curve of an odd-sized schedule, and beyond its end
check_close("warmup 13 of 101 steps, min_lr 0.01, and 19 steps past the end",
            [warmup_cosine(_s, 13, 101, 1.0, 0.01) for _s in range(120)],
            expected=_torch_warmup_cosine(13, 101, 1.0, 0.01) + [0.01] * 19, rtol=1e-6, atol=1e-12, weight=2,
            hint="after total_steps the lr stays at min_lr")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "clip-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: clipping by global norm (2 points)
#
# Write `clip_grad_norm(parameters, max_norm)`, your own `torch.nn.utils.clip_grad_norm_`, with the same
# results: afterwards the **global** norm of the gradients, $G = \sqrt{\sum_p \|g_p\|^2}$ over all tensors
# together (one number for the whole model, not one per tensor), is at most `max_norm`. Gradients within the
# limit stay as they are (never scaled up); larger ones keep their direction: all are scaled, **in place**, by
# the one factor `min(1, max_norm / (G + 1e-6))` that PyTorch uses. Return $G$ before clipping, as a 0-dim
# tensor. Parameters without a gradient (`p.grad is None`) are skipped, and `parameters` may be a generator such
# as `model.parameters()`, which can be looped over only once.
#
# `torch.nn.utils.clip_grad_norm_` and its helpers are switched off while the tests call your function.

# %% nbgrader={"grade": false, "grade_id": "clip-answer", "locked": false, "schema_version": 3, "solution": true}
def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """Scale the gradients of ``parameters`` in place so that their global L2 norm is at most ``max_norm``.

    parameters: an iterable of tensors (their .grad may be None; those are skipped), e.g. model.parameters().
    Returns the global norm of the gradients before clipping, a 0-dim tensor.
    """
    ### BEGIN SOLUTION
    grads = [p.grad for p in parameters if p.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])   # (number of tensors,)
    total_norm = torch.linalg.vector_norm(norms)                          # () = sqrt(sum of squares)
    scale = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)          # never scale up
    for g in grads:
        g.mul_(scale)
    return total_norm
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "clip-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _with_grads(seed, scale=1.0):
    """A small model (seeded) whose parameters hold random gradients (seeded) times ``scale``."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * scale
    return model


def _torch_clip(seed, scale, max_norm):
    """What torch.nn.utils.clip_grad_norm_ returns and leaves in the gradients, on the same model."""
    with torch.random.fork_rng(devices=[]):
        model = _with_grads(seed, scale)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return [norm, [p.grad.clone() for p in model.parameters()]]


for _case, (_max_norm, _scale) in {"clipping needed": (1.0, 1.0), "clipping not needed": (100.0, 1.0)}.items():
    _m = _with_grads(0, _scale)
    with forbid(CLIP_FUNCTIONS, NO_BUILTIN_CLIP):
        _norm = clip_grad_norm(_m.parameters(), _max_norm)
    check_equal(f"{_case}: returns a 0-dim tensor",
                [type(_norm).__name__, _norm.dim() if isinstance(_norm, torch.Tensor) else None],
                expected=["Tensor", 0], hint="return the norm as a 0-dim tensor, e.g. from torch.linalg.vector_norm")
    check_close(f"{_case} (max_norm={_max_norm:g}): the norm returned and the gradients left, as clip_grad_norm_",
                [_norm, [_p.grad.clone() for _p in _m.parameters()]], expected=_torch_clip(0, _scale, _max_norm),
                atol=1e-6, weight=3,
                hint="return the global norm before clipping (the square root of the sum, over all tensors, of their "
                     "squared norms) and scale every gradient by the same factor min(1, max_norm / (norm + 1e-6)): "
                     "one factor for all tensors, never larger than 1")
print("clip_grad_norm: visible tests passed")

### BEGIN HIDDEN TESTS
def _mixed(seed):
    """Four float64 tensors of different shapes; three have gradients of very different sizes, one has none."""
    torch.manual_seed(seed)
    ps = [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for shape in [(3, 4), (7,), (2, 2, 2), (3,)]]
    for p, size in zip(ps[:3], (100.0, 0.01, 3.0)):
        p.grad = torch.randn_like(p) * size
    return ps


def _torch_mixed(seed, max_norm):
    with torch.random.fork_rng(devices=[]):
        ps = _mixed(seed)
        norm = torch.nn.utils.clip_grad_norm_(ps, max_norm)
    return [norm, [p.grad.clone() for p in ps[:3]], True]


_ps = _mixed(5)
with forbid(CLIP_FUNCTIONS, NO_BUILTIN_CLIP):
    _norm = clip_grad_norm(iter(_ps), 2.5)
check_close("float64 tensors of several shapes given as an iterator, one without gradient",
            [_norm, [_p.grad.clone() for _p in _ps[:3]], _ps[3].grad is None], expected=_torch_mixed(5, 2.5),
            rtol=1e-6, atol=1e-9, weight=2, hint="loop over parameters once; keep .grad = None where it is None")

# the gradients are changed in place (the same tensors)
_m = _with_grads(7, 10.0)
_ids = [id(_p.grad) for _p in _m.parameters()]
with forbid(CLIP_FUNCTIONS, NO_BUILTIN_CLIP):
    _norm = clip_grad_norm(_m.parameters(), 0.5)
check_close("scales the gradients in place", [[id(_p.grad) for _p in _m.parameters()] == _ids,
                                              [_p.grad.clone() for _p in _m.parameters()]],
            expected=[True, _torch_clip(7, 10.0, 0.5)[1]], atol=1e-7,
            hint="multiply each gradient in place (g.mul_(factor)) instead of assigning new tensors to p.grad")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "param-groups-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: parameter groups without weight decay on 1-D parameters (2 points)
#
# Weight decay should shrink weight matrices and convolution kernels, but not biases or the scale and shift of
# normalisation layers (BatchNorm, LayerNorm). A simple rule separates them: the latter are exactly the tensors
# with **one dimension** (`p.ndim <= 1`).
#
# Write `param_groups(model, weight_decay)` returning a list of **two** dicts, in this order:
# `{"params": [...tensors with p.ndim >= 2...], "weight_decay": weight_decay}` and
# `{"params": [...tensors with p.ndim <= 1...], "weight_decay": 0.0}`. Every trainable parameter appears in
# exactly one group, in the order of `model.parameters()`; frozen parameters (`requires_grad=False`) appear in
# none. Any `torch.optim` optimiser accepts this list in place of `model.parameters()`.

# %% nbgrader={"grade": false, "grade_id": "param-groups-answer", "locked": false, "schema_version": 3, "solution": true}
def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """[{"params": tensors with >= 2 dims, "weight_decay": weight_decay},
        {"params": 1-D tensors (biases, norm scales and shifts), "weight_decay": 0.0}]; trainable ones only."""
    ### BEGIN SOLUTION
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "param-groups-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _names(model, groups):
    """[len(groups), each group's weight_decay, each group's parameter names (in order)]."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [len(groups), [g.get("weight_decay") for g in groups],
            [[names.get(id(p), "?") for p in g.get("params", [])] for g in groups]]


def _small_cnn():
    torch.manual_seed(0)
    return dlcourse.models.SmallCNN(in_channels=3, num_classes=6, width=8, depth=2, image_size=16)


def _zero_gradient_step(model, groups):
    """One AdamW(lr=0.1) step with all-zero gradients: only weight decay moves anything. The weights after it."""
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    torch.optim.AdamW(groups, lr=0.1).step()
    return weights(model)


def _decayed_by_dimension(weight_decay):
    """The reference: a zero-gradient step where exactly the tensors with >= 2 dims were decayed."""
    with torch.random.fork_rng(devices=[]):
        model = _small_cnn()
    return [p.detach() * (1 - 0.1 * weight_decay if p.ndim >= 2 else 1.0) for p in model.parameters()]


_cnn = _small_cnn()
_groups = param_groups(_cnn, weight_decay=0.05)
check_equal("a SmallCNN: two groups, weight decays [0.05, 0.0], and which tensors are in each", _names(_cnn, _groups),
            expected=[2, [0.05, 0.0], [["features.0.0.weight", "features.2.0.weight", "head.2.weight"],
                                       ["features.0.1.weight", "features.0.1.bias", "features.2.1.weight",
                                        "features.2.1.bias", "head.2.bias"]]], weight=2,
            hint="the decay group holds the conv kernels and the linear weight (>= 2 dims); the no-decay group both "
                 "BatchNorms' weight and bias and the linear bias. BatchNorm's scale is called 'weight' but it is "
                 "1-D: sort by p.ndim, not by name")
check_close("AdamW with these groups: a zero-gradient step decays exactly the >= 2-D tensors",
            _zero_gradient_step(_cnn, _groups), expected=_decayed_by_dimension(0.05), atol=1e-7)
print("param_groups: visible tests passed")

### BEGIN HIDDEN TESTS
class _Net(nn.Module):
    """LayerNorm, an embedding (2-D: decayed), a frozen layer, and a linear layer without bias."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.frozen = nn.Linear(8, 8)
        self.out = nn.Linear(8, 3, bias=False)
        for q in self.frozen.parameters():
            q.requires_grad_(False)


_net = _Net()
check_equal("embedding, LayerNorm and a frozen layer", _names(_net, param_groups(_net, 0.1)),
            expected=[2, [0.1, 0.0], [["embed.weight", "out.weight"], ["norm.weight", "norm.bias"]]], weight=2,
            hint="LayerNorm's weight and bias are 1-D: no decay; frozen parameters (requires_grad=False) belong to "
                 "no group")
_lin = nn.Linear(4, 2, bias=False)
check_equal("a model without 1-D parameters still gives two groups, the second empty",
            _names(_lin, param_groups(_lin, 0.3)), expected=[2, [0.3, 0.0], [["weight"], []]])
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "one-cycle-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: one-cycle training with `dlcourse.fit` (1 point)
#
# Write `train_one_cycle(model, train_loader, val_loader, num_epochs, max_lr)`: train `model` with
# `dlcourse.fit` for `num_epochs` epochs (no progress bar) with `torch.optim.AdamW` under PyTorch's `OneCycleLR`
# schedule peaking at `max_lr`, where the one cycle spans the whole run and the lr changes after every batch;
# return the `History` that `fit` returns.
#
# The test checks the learning rate `fit` recorded at the start of each epoch against one-cycle's, and that an
# MLP on the digits learns.

# %% nbgrader={"grade": false, "grade_id": "one-cycle-answer", "locked": false, "schema_version": 3, "solution": true}
def train_one_cycle(model: nn.Module, train_loader, val_loader, num_epochs: int, max_lr: float):
    """Train ``model`` with AdamW under a one-cycle schedule stepped every batch; return fit's History."""
    ### BEGIN SOLUTION
    optimizer = torch.optim.AdamW(model.parameters(), lr=max_lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr,
                                                    total_steps=num_epochs * len(train_loader))
    return dlcourse.fit(model, optimizer, train_loader, val_loader, num_epochs=num_epochs, scheduler=scheduler,
                        scheduler_step="batch", progress=False)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "one-cycle-tests", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def _one_cycle_epoch_lrs(num_epochs, steps_per_epoch, max_lr):
    """The lr at the start of each epoch under OneCycleLR stepped once per batch (on a dummy optimiser)."""
    dummy = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=max_lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(dummy, max_lr=max_lr, total_steps=num_epochs * steps_per_epoch)
    lrs = []
    for _ in range(num_epochs):
        lrs.append(dummy.param_groups[0]["lr"])
        for _ in range(steps_per_epoch):
            dummy.step()
            scheduler.step()
    return lrs


def _val_predictions(model, splits):
    model.eval()
    with torch.no_grad():
        return model(splits.val.tensors[0]).argmax(dim=1)


_splits = dlcourse.data.digits(flatten=True, seed=0)
_train_loader, _val_loader, _ = _splits.loaders(batch_size=64, seed=0)
_num_epochs, _max_lr = cfg.pick(smoke=3, small=5, full=8), 1e-2
torch.manual_seed(0)
_mlp = dlcourse.models.mlp(64, [64], 10)
_history = train_one_cycle(_mlp, _train_loader, _val_loader, num_epochs=_num_epochs, max_lr=_max_lr)
check_equal("returns the History of num_epochs epochs that dlcourse.fit returns",
            [type(_history).__name__, len(_history) if isinstance(_history, dlcourse.History) else None],
            expected=["History", _num_epochs], hint="return what dlcourse.fit returns")
check_close("the lr at the start of each epoch, as one-cycle stepped every batch gives it",
            list(_history["lr"]) if isinstance(_history, dlcourse.History) else None,
            expected=_one_cycle_epoch_lrs(_num_epochs, len(_train_loader), _max_lr), rtol=1e-6, weight=2,
            hint="pass scheduler_step='batch' to dlcourse.fit and total_steps=num_epochs * len(train_loader) to "
                 "OneCycleLR")
check_accuracy("the MLP reaches 85% validation accuracy", _val_predictions(_mlp, _splits),
               expected=_splits.val.tensors[1], threshold=0.85)
print("one-cycle: visible tests passed")

### BEGIN HIDDEN TESTS
# another model and other sizes: still one scheduler step per batch
_X = torch.randn(90, 5, generator=torch.Generator().manual_seed(4))
_y = (_X[:, 0] > 0).long()
_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(_X, _y), batch_size=16)   # 6 batches
torch.manual_seed(4)
_history = train_one_cycle(nn.Linear(5, 2), _loader, None, num_epochs=2, max_lr=0.05)
check_close("a linear model, 2 epochs of 6 batches, max_lr=0.05: the lr at the start of each epoch",
            list(_history["lr"]) if isinstance(_history, dlcourse.History) else None,
            expected=_one_cycle_epoch_lrs(2, 6, 0.05), rtol=1e-6)
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "state-bytes-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 6: predict, then measure: the memory of an optimiser's state (1 point)
#
# An optimiser's state lives next to the model for the whole run, and for large models it takes more memory than
# the weights themselves. Write `optimizer_state_bytes(num_parameters, optimizer, bytes_per_value=4)`: your
# prediction of the bytes held by the tensors in an optimiser's state after its first step, for a model with
# `num_parameters` parameters stored with `bytes_per_value` bytes each (4 for float32, 2 for bfloat16), where
# `optimizer` is one of
#
# - `"sgd"`: `torch.optim.SGD(params, lr=0.1)`;
# - `"momentum"`: `torch.optim.SGD(params, lr=0.1, momentum=0.9)`;
# - `"adamw"`: `torch.optim.AdamW(params)`.
#
# Return a number. It is a prediction: stepping PyTorch's optimisers and reading their state are switched off
# while the test calls it. The test then measures the bytes of every tensor in `optimizer.state_dict()["state"]`
# after one step. Your prediction passes when it is within **1 %** of the measurement (so anything smaller than
# 1 % of the total may be left out), for an MLP in float32 here and for other models in the hidden tests.

# %% nbgrader={"grade": false, "grade_id": "state-bytes-answer", "locked": false, "schema_version": 3, "solution": true}
def optimizer_state_bytes(num_parameters: int, optimizer: str, bytes_per_value: int = 4) -> float:
    """Predicted bytes of the tensors in the optimiser's state after one step ("sgd", "momentum" or "adamw")."""
    ### BEGIN SOLUTION
    buffers_per_parameter = {"sgd": 0, "momentum": 1, "adamw": 2}[optimizer]   # none; velocity; m and v
    return buffers_per_parameter * num_parameters * bytes_per_value           # (AdamW's step counters: tiny)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "state-bytes-tests", "locked": true, "points": 1, "schema_version": 3, "solution": false}
MEASURING = ((torch.optim.Optimizer, "state_dict"), (torch.optim.SGD, "step"), (torch.optim.AdamW, "step"),
             (torch.optim.Adam, "step"))
NO_MEASURING = ("predict from the sizes: stepping torch.optim's optimisers and reading their state are switched "
                "off while the test calls optimizer_state_bytes")
MAKE_OPTIMIZER = {"sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),
                  "momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
                  "adamw": lambda ps: torch.optim.AdamW(ps)}


def _predicted(*args):
    with forbid(MEASURING, NO_MEASURING):
        return optimizer_state_bytes(*args)


def _measured_state_bytes(model, optimizer):
    """Bytes of all tensors in the optimiser's state_dict after one step on a random batch."""
    opt = MAKE_OPTIMIZER[optimizer](model.parameters())
    first = next(model.parameters())
    X = torch.randn(4, model[1].in_features, generator=torch.Generator().manual_seed(0)).to(first.dtype)
    model(X).float().pow(2).mean().backward()
    opt.step()
    return sum(t.numel() * t.element_size() for state in opt.state_dict()["state"].values()
               for t in state.values() if isinstance(t, torch.Tensor))


def _mlp(sizes, dtype=torch.float32):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return dlcourse.models.mlp(sizes[0], sizes[1:-1], sizes[-1]).to(dtype)


_n = sum(p.numel() for p in _mlp([64, 128, 10]).parameters())
print(f"an MLP 64 -> 128 -> 10 has {_n:,} parameters")
for _kind in ("sgd", "momentum", "adamw"):
    check_prediction(f"{_kind}, MLP 64 -> 128 -> 10 in float32", _predicted(_n, _kind),
                     expected=_measured_state_bytes(_mlp([64, 128, 10]), _kind), rtol=0.01,
                     hint="how many tensors of the parameters' size does each optimiser keep per parameter "
                          "tensor? Plain SGD keeps nothing; momentum keeps its velocity; AdamW ...")
print("optimizer_state_bytes: visible tests passed")

### BEGIN HIDDEN TESTS
_sizes = [100, 200, 200, 10]
_n = sum(p.numel() for p in _mlp(_sizes).parameters())
for _kind, _dtype, _bytes in [("adamw", torch.bfloat16, 2), ("momentum", torch.bfloat16, 2),
                              ("adamw", torch.float64, 8)]:
    check_prediction(f"{_kind}, MLP {_sizes} in {_dtype}", _predicted(_n, _kind, _bytes),
                     expected=_measured_state_bytes(_mlp(_sizes, _dtype), _kind), rtol=0.01,
                     hint="the state's buffers have the parameters' dtype: use bytes_per_value")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - An optimiser's `step()` is a loop over groups and parameters; AdamW keeps two moving averages per parameter,
#   corrects their start-up bias, and decays the weights directly instead of through the gradient.
# - A schedule is a function of the step count; `LambdaLR` turns any such function into a scheduler.
# - Clipping by the global norm rescales all gradients together and never scales them up.
# - Parameter groups let one optimiser treat parameters differently: no weight decay for 1-D tensors.
# - Schedules that change every batch (one-cycle, warmup + cosine) need `scheduler_step="batch"` in
#   `dlcourse.fit`.
# - Optimiser state costs memory: nothing for plain SGD, one copy of the parameters for momentum, two for
#   Adam and AdamW (plus a step counter per tensor).
#
# ## Further exercises (not graded)
#
# 1. Add an `amsgrad` option to `MyAdamW` (keep the running maximum of $\hat v$) and compare it with
#    `torch.optim.AdamW(amsgrad=True)`.
# 2. Run `dlcourse.diagnose.lr_range_test` on the MLP of exercise 5 and use its suggestion as `max_lr`. Is it
#    better or worse than 1e-2?
# 3. Log the gradient norm that your `clip_grad_norm` returns at every step of a training run. How does it change
#    over training, and when does clipping with `max_norm=1` actually bite?
# 4. Train a `SmallCNN` on the digits with and without `param_groups` (weight decay 0.1). Compare the mean absolute
#    BatchNorm scale after training.
