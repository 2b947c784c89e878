# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 04 · Optimisers and learning-rate schedules
#
# `optimizer.step()` has been a black box so far. This notebook opens it: we write the optimisers that train
# almost every network (SGD, momentum, Nesterov, RMSProp, Adam, AdamW, Lion) as `torch.optim.Optimizer`
# subclasses, check each against PyTorch's, and watch them move on two-dimensional test functions. Then we turn
# to the learning rate itself: how to find a good one (the LR range test), how to change it during training
# (warmup + cosine, step, one-cycle), and two safety belts that every modern recipe uses: gradient clipping and
# parameter groups that keep weight decay off biases and normalisation layers.
#
# **Learning goals**
# - Read and write a `torch.optim.Optimizer`: `param_groups`, per-parameter `state`, `step()`.
# - Implement SGD with momentum and Nesterov momentum, RMSProp, Adam, AdamW and Lion from their update rules,
#   and show that they match `torch.optim` to 1e-6 over 100 steps.
# - Explain why L2 regularisation and decoupled weight decay are the same for plain SGD, but not for SGD with
#   momentum nor for Adam.
# - See on an ill-conditioned quadratic and on the Rosenbrock function what momentum and per-coordinate step
#   sizes buy.
# - Find a learning rate with `dlcourse.diagnose.lr_range_test`, and schedule it with warmup + cosine, step
#   decay or one-cycle.
# - Clip gradients by their global norm, and build parameter groups without weight decay on 1-D parameters.
#
# **Prerequisites:** notebook 01 (the training loop, `dlcourse.fit`); section 9 uses `dlcourse.models.SmallCNN`
# (conv → BatchNorm → ReLU blocks, like the networks of notebook 03) as a ready-made model. Exponential moving
# averages and the idea of a condition number help.
#
# **Time:** seconds at `smoke`; a minute or so at `small` on a laptop CPU; at `full`, on a GPU, the MLP trains
# longer and section 9's CNN trains on the shapes images. The last cell prints how long this run took on your
# machine.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import copy
import functools
import math
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import dlcourse
from dlcourse.diagnose import lr_range_test

cfg = dlcourse.setup(seed=0)
device = cfg.device
t_start = time.perf_counter()

# %% [markdown]
# ## 1. What an optimiser is
# A `torch.optim.Optimizer` holds two things:
# - `param_groups`: a list of dicts, each with a list of parameters (`"params"`) and the hyperparameters that apply
#   to them (`"lr"`, `"momentum"`, `"weight_decay"`, ...). Usually there is one group; section 9 uses two.
# - `state`: a dict from each parameter to whatever the method remembers about it between steps (a momentum
#   buffer, running averages, a step count). It is empty until the first step.
#
# `step()` reads each parameter's `.grad` and updates the parameter in place, under `torch.no_grad()`.
# `zero_grad()` clears the gradients. Learning-rate schedulers work by editing `group["lr"]` between steps.

# %%
torch.manual_seed(cfg.seed)
tiny = nn.Linear(3, 2)                                      # weight (2, 3), bias (2,)
optimizer = torch.optim.SGD(tiny.parameters(), lr=0.1, momentum=0.9)
print("groups:", [{k: v for k, v in g.items() if k != "params"} | {"params": len(g["params"])}
                  for g in optimizer.param_groups][0])
print("state before a step:", dict(optimizer.state))
F.mse_loss(tiny(torch.randn(4, 3)), torch.randn(4, 2)).backward()
optimizer.step()
print("state after one step:", {tuple(p.shape): list(s) for p, s in optimizer.state.items()})
assert set(optimizer.state[tiny.weight]) == {"momentum_buffer"}

# %% [markdown]
# Every optimiser below follows one pattern: `__init__` passes the hyperparameters to the base class as
# `defaults` (they are copied into each group), and `step()` loops over groups and parameters, creating the
# state on first use. To check one against PyTorch we train two copies of the same small network on the same
# minibatches, one with each optimiser, and compare the parameters after 100 steps. We work in float64 so that
# rounding cannot hide a wrong formula.

# %%
splits = dlcourse.data.digits(flatten=True, seed=cfg.seed)
X_check, y_check = splits.train.tensors                    # (N, 64) float32, (N,) int64
X_check = X_check.double()


def max_difference(make_ours, make_torch, num_steps: int = 100, l2_ours: float = 0.0) -> float:
    """Train two copies of one MLP for ``num_steps`` minibatches, one per optimiser; return the largest
    |difference| between their parameters at the end. Each ``make_*`` takes an iterable of parameters.
    ``l2_ours`` > 0 adds the L2 penalty l2_ours / 2 * ||θ||² to the first copy's loss."""
    torch.manual_seed(cfg.seed)
    model_a = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).double()
    model_b = copy.deepcopy(model_a)
    opt_a, opt_b = make_ours(model_a.parameters()), make_torch(model_b.parameters())
    batches = torch.Generator().manual_seed(cfg.seed)
    for _ in range(num_steps):
        idx = torch.randint(0, len(X_check), (32,), generator=batches)   # (32,) one shared minibatch
        for model, opt, l2 in ((model_a, opt_a, l2_ours), (model_b, opt_b, 0.0)):
            loss = F.cross_entropy(model(X_check[idx]), y_check[idx])
            if l2 > 0:
                loss = loss + l2 / 2 * sum(p.pow(2).sum() for p in model.parameters())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return max((a - b).abs().max().item() for a, b in zip(model_a.parameters(), model_b.parameters()))


def show_table(rows: list[tuple], header: tuple) -> None:
    """Print rows as an aligned text table."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


# %% [markdown]
# ## 2. SGD, momentum and Nesterov
# **SGD** steps against the gradient $g_t$ of step $t$: $\;\theta_t = \theta_{t-1} - \eta\, g_t$.
#
# **Momentum** keeps a velocity, a running sum of past gradients that decays by $\mu$ each step:
# $\;v_t = \mu v_{t-1} + g_t,\; \theta_t = \theta_{t-1} - \eta\, v_t$, starting from $v_1 = g_1$. Where
# successive gradients agree, steps grow up to $1/(1-\mu)$ times longer (10× for $\mu = 0.9$); where they flip
# sign, as across a narrow valley, they cancel.
#
# **Nesterov momentum** steps with $g_t + \mu v_t$ instead of $v_t$: it looks one momentum step ahead, which
# damps overshooting. This is PyTorch's formulation of the method (the original evaluates the
# gradient at a look-ahead point; the two are equivalent up to a change of variable).
#
# **Weight decay** as PyTorch's SGD implements it is L2 regularisation: adding $\frac{\lambda}{2}\|\theta\|^2$ to
# the loss adds $\lambda\theta$ to the gradient.

# %%
class SGD(torch.optim.Optimizer):
    """SGD with optional (Nesterov) momentum and L2 weight decay, following torch.optim.SGD's conventions."""

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + wd * p                           # gradient of loss + wd/2 * ||p||^2
                if mu > 0:
                    state = self.state[p]
                    if "velocity" not in state:
                        state["velocity"] = g.clone()          # v_1 = g_1
                    else:
                        state["velocity"].mul_(mu).add_(g)     # v <- mu * v + g
                    v = state["velocity"]
                    g = g + mu * v if group["nesterov"] else v
                p.sub_(lr * g)                                 # in place: the model holds this tensor


rows = []
for name, kwargs in [("SGD", dict(lr=0.1)),
                     ("SGD + weight decay", dict(lr=0.1, weight_decay=1e-2)),
                     ("momentum", dict(lr=0.05, momentum=0.9)),
                     ("Nesterov", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3))]:
    diff = max_difference(lambda ps: SGD(ps, **kwargs), lambda ps: torch.optim.SGD(ps, **kwargs))
    rows.append((name, "torch.optim.SGD", f"{diff:.1e}"))
    assert diff < 1e-6, f"{name}: {diff}"
show_table(rows, ("ours", "reference", "max |difference| after 100 steps"))

# %% [markdown]
# ## 3. RMSProp, Adam and AdamW
# Gradient sizes differ wildly between parameters, and one learning rate cannot suit all of them. **RMSProp**
# divides each coordinate's step by a running root-mean-square of its gradient:
# $\;s_{t} = \alpha s_{t-1} + (1-\alpha) g_t^2,\; \theta_{t+1} = \theta_t - \eta\, g_t / (\sqrt{s_t} + \epsilon)$
# (all operations per coordinate). Steps become roughly $\eta$ in size, whatever the gradient's scale.
#
# **Adam** combines this with momentum. It keeps moving averages of the gradient and of its square,
# $m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t$ and $v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2$, both starting at
# zero. Early on they are biased towards zero (after one step $m_1 = (1-\beta_1) g_1$), so Adam divides by
# $1-\beta^t$ to correct this: $\hat m_t = m_t / (1-\beta_1^t)$, $\hat v_t = v_t / (1-\beta_2^t)$, and
# $\;\theta_{t+1} = \theta_t - \eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)$.
#
# **Weight decay, two ways.** With plain SGD (no momentum), adding $\lambda\theta$ to the gradient shrinks
# every weight by the factor $(1 - \eta\lambda)$ per step: there, L2 regularisation *is* weight decay. With
# momentum it is not: $\lambda\theta$ enters the velocity together with the gradient (checked at the end of
# this section). With Adam it is not either: the $\lambda\theta$ term is divided by $\sqrt{\hat v_t}$ like the
# rest of the gradient, so weights with large gradients are barely decayed at all. **AdamW** *decouples* the
# decay from the gradient: it shrinks the weights directly, $\theta \leftarrow (1-\eta\lambda)\,\theta$, then
# takes the ordinary Adam step. That is what `torch.optim.AdamW` does, and what most recipes for large models
# use.

# %%
class RMSProp(torch.optim.Optimizer):
    """RMSProp without momentum (torch.optim.RMSprop's defaults: alpha=0.99, eps=1e-8)."""

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.zeros_like(p)
                s = state["square_avg"]
                s.mul_(alpha).add_((1 - alpha) * p.grad ** 2)   # running mean of g^2, per coordinate
                p.sub_(lr * p.grad / (s.sqrt() + eps))


class Adam(torch.optim.Optimizer):
    """Adam with bias correction; weight decay as L2 (added to the gradient), like torch.optim.Adam."""

    decoupled_weight_decay = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)      # m
                    state["exp_avg_sq"] = torch.zeros_like(p)   # v
                g = p.grad
                if self.decoupled_weight_decay:
                    p.mul_(1 - lr * wd)                         # AdamW: shrink the weights directly
                else:
                    g = g + wd * p                              # Adam: L2 term joins the gradient
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_((1 - beta1) * g)
                v.mul_(beta2).add_((1 - beta2) * g * g)
                m_hat = m / (1 - beta1 ** t)                    # bias corrections
                v_hat = v / (1 - beta2 ** t)
                p.sub_(lr * m_hat / (v_hat.sqrt() + eps))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), like torch.optim.AdamW (default decay 0.01)."""

    decoupled_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


rows = []
for ours, theirs, kwargs in [(RMSProp, torch.optim.RMSprop, dict(lr=1e-2)),
                             (Adam, torch.optim.Adam, dict(lr=1e-2)),
                             (Adam, torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2)),
                             (AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1))]:
    diff = max_difference(lambda ps: ours(ps, **kwargs), lambda ps: theirs(ps, **kwargs))
    rows.append((ours.__name__, f"torch.optim.{theirs.__name__}", str(kwargs), f"{diff:.1e}"))
    assert diff < 1e-6, f"{ours.__name__} {kwargs}: {diff}"

# The two kinds of weight decay under Adam: L2 (Adam) and decoupled (AdamW) lead to different weights.
adam_vs_adamw = max_difference(lambda ps: Adam(ps, lr=1e-2, weight_decay=0.1),
                               lambda ps: AdamW(ps, lr=1e-2, weight_decay=0.1))
rows.append(("Adam(weight_decay=0.1)", "AdamW(weight_decay=0.1)", "lr=0.01", f"{adam_vs_adamw:.1e}"))
show_table(rows, ("ours", "compared with", "settings", "max |difference| after 100 steps"))
assert adam_vs_adamw > 1e-3, "L2 regularisation and decoupled weight decay should differ under Adam"

# %% [markdown]
# The last row is not a bug: the same `weight_decay` means different things to Adam and AdamW. For plain SGD the
# two coincide: shrinking $p$ by $(1 - \eta\lambda)$ and then stepping with $g$ is exactly a step with
# $g + \lambda p$. Checked on one step:

# %%
p_l2 = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
p_dec = p_l2.detach().clone().requires_grad_()
g = torch.tensor([0.3, 0.5], dtype=torch.float64)
lr, wd = 0.1, 0.05
p_l2.grad, p_dec.grad = g.clone(), g.clone()
SGD([p_l2], lr=lr, weight_decay=wd).step()                 # p - lr * (g + wd * p)
with torch.no_grad():
    p_dec.mul_(1 - lr * wd).sub_(lr * g)                     # (1 - lr * wd) * p - lr * g
print(p_l2.detach(), p_dec.detach())
assert torch.allclose(p_l2, p_dec)

# %% [markdown]
# **With momentum they part ways.** `torch.optim.SGD(weight_decay=λ)` adds $\lambda p$ to the gradient *before*
# the momentum buffer, exactly as an L2 penalty $\frac{\lambda}{2}\|p\|^2$ in the loss would: with or without
# momentum, PyTorch's SGD weight decay *is* L2 regularisation. With momentum, though, the $\lambda p$ of each
# step stays in the velocity and keeps acting on later steps, shrinking by $\mu$ each time, like the gradient.
# **Decoupled** decay (often called SGDW) instead shrinks the weights directly, $p \leftarrow (1-\eta\lambda)p$,
# and feeds only the loss gradient into the velocity. While $p$ changes slowly, the L2 form's velocity holds
# about $\lambda p/(1-\mu)$, so it decays about $1/(1-\mu)$ times as fast as SGDW with the same λ (10 times for
# $\mu = 0.9$). Measured over 100 steps of the MLP above, in float64: SGDW with the same λ should end almost as
# far from PyTorch's run as no decay at all, and SGDW with $\lambda/(1-\mu)$ several times closer (not equal:
# the velocity remembers past weights, not only the current ones).

# %%
class SGDW(torch.optim.Optimizer):
    """SGD with momentum and decoupled weight decay: p <- (1 - lr * wd) * p, then the momentum step with the loss
    gradient alone (the decay never enters the velocity)."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.mul_(1 - lr * wd)                            # decoupled: shrink the weights directly
                g = p.grad
                if mu > 0:
                    state = self.state[p]
                    if "velocity" not in state:
                        state["velocity"] = g.clone()
                    else:
                        state["velocity"].mul_(mu).add_(g)
                    g = state["velocity"]
                p.sub_(lr * g)


wd, mu = 0.01, 0.9
sgd_wd = functools.partial(torch.optim.SGD, lr=0.05, weight_decay=wd)        # torch's weight decay
decay_rows = {
    "L2 in the loss, momentum": max_difference(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=mu),
                                               lambda ps: sgd_wd(ps, momentum=mu), l2_ours=wd),
    "SGDW, no momentum": max_difference(lambda ps: SGDW(ps, lr=0.05, weight_decay=wd), sgd_wd),
    "SGDW, momentum": max_difference(lambda ps: SGDW(ps, lr=0.05, momentum=mu, weight_decay=wd),
                                     lambda ps: sgd_wd(ps, momentum=mu)),
    "SGDW with λ/(1-μ), momentum": max_difference(
        lambda ps: SGDW(ps, lr=0.05, momentum=mu, weight_decay=wd / (1 - mu)), lambda ps: sgd_wd(ps, momentum=mu)),
    "no decay at all, momentum": max_difference(lambda ps: SGDW(ps, lr=0.05, momentum=mu),
                                                lambda ps: sgd_wd(ps, momentum=mu)),
}
show_table([(name, f"torch.optim.SGD(weight_decay={wd:g}{'' if 'no momentum' in name else ', momentum=0.9'})",
             f"{diff:.1e}") for name, diff in decay_rows.items()],
           ("ours", "compared with", "max |difference| after 100 steps"))
assert decay_rows["L2 in the loss, momentum"] < 1e-10, "torch's SGD weight decay is L2, momentum or not"
assert decay_rows["SGDW, no momentum"] < 1e-10, "without momentum, decoupled decay is L2"
assert decay_rows["SGDW, momentum"] > 1e-2, "with momentum, decoupled decay is not L2"
assert decay_rows["SGDW, momentum"] > 0.5 * decay_rows["no decay at all, momentum"]
assert decay_rows["SGDW with λ/(1-μ), momentum"] < decay_rows["SGDW, momentum"] / 3

# %% [markdown]
# ## 4. Lion
# **Lion** (Chen et al., 2023, found by a program search over update rules) keeps one moving average $m$ and
# uses only the *sign* of an interpolation between it and the new gradient, so every coordinate moves by
# exactly $\eta$ (plus decay):
# $$c_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\qquad
#   \theta_{t} = (1-\eta\lambda)\,\theta_{t-1} - \eta\,\mathrm{sign}(c_t),\qquad
#   m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t$$
# with $\beta_1 = 0.9$, $\beta_2 = 0.99$ and $m_0 = 0$. It stores one buffer per parameter (Adam stores two).
# Because its steps do not shrink with the gradient, it needs a smaller lr than Adam (the paper suggests 3–10×)
# and a correspondingly larger weight decay. PyTorch has no Lion, so we check ours against the rule computed by
# hand on two steps.

# %%
class Lion(torch.optim.Optimizer):
    """Lion: sign of an interpolated momentum, decoupled weight decay."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                c = beta1 * m + (1 - beta1) * p.grad           # the direction: an interpolation
                p.mul_(1 - lr * wd).sub_(lr * torch.sign(c))   # decay, then a step of exactly lr per coordinate
                m.mul_(beta2).add_((1 - beta2) * p.grad)       # the memory: a slower average


theta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
lion = Lion([theta], lr=0.1, weight_decay=0.5)
theta.grad = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
lion.step()
# Step 1: m = 0, so c = 0.1 * g has g's signs (+, -, +); theta <- 0.95 * theta - 0.1 * sign(c).
step1 = torch.tensor([0.95 * 1.0 - 0.1, 0.95 * -2.0 + 0.1, 0.95 * 0.5 - 0.1], dtype=torch.float64)
assert torch.allclose(theta, step1), theta
theta.grad = torch.tensor([-0.01, 0.05, 0.1], dtype=torch.float64)
lion.step()
# Step 2: m = 0.01 * g1 = [0.003, -0.01, 0.02]; c = 0.9 * m + 0.1 * g2 = [0.0017, -0.004, 0.028]: the memory
# outvotes the new gradient in the first two coordinates, so sign(c) = (+, -, +) although g2 is (-, +, +).
step2 = 0.95 * step1 - 0.1 * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
print("after two Lion steps:", theta.detach(), "by hand:", step2)
assert torch.allclose(theta, step2)
assert torch.allclose(lion.state[theta]["exp_avg"],
                      0.99 * 0.01 * torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
                      + 0.01 * torch.tensor([-0.01, 0.05, 0.1], dtype=torch.float64))

# %% [markdown]
# ## 5. Trajectories on two-dimensional test functions
# A network has millions of parameters, but two of them are enough to *see* what an optimiser does. Two classic
# test functions:
# - an **ill-conditioned quadratic**, $f(x, y) = 0.05x^2 + 5y^2$: a long, narrow bowl whose curvature is 100 times
#   larger across it ($y$) than along it ($x$). Plain gradient descent is unstable once $\eta > 2/10$ (the
#   steep direction), and at that $\eta$ it crawls along the flat direction.
# - the **Rosenbrock function**, $f(x, y) = (1-x)^2 + 100(y-x^2)^2$: a curved, flat-bottomed valley with its
#   minimum at (1, 1). Finding the valley is easy; following it is hard.
#
# Each optimiser gets a learning rate that suits it on that function (tuned by hand; try others in the
# explorer below).

# %%
def quadratic(xy: torch.Tensor) -> torch.Tensor:
    """(..., 2) points -> (...) values of 0.05 x^2 + 5 y^2 (condition number 100, minimum at the origin)."""
    return 0.05 * xy[..., 0] ** 2 + 5 * xy[..., 1] ** 2


def rosenbrock(xy: torch.Tensor) -> torch.Tensor:
    """(..., 2) points -> (...) values of (1 - x)^2 + 100 (y - x^2)^2 (minimum 0 at (1, 1))."""
    return (1 - xy[..., 0]) ** 2 + 100 * (xy[..., 1] - xy[..., 0] ** 2) ** 2


OPTIMIZERS = {  # name -> (class, keyword arguments other than lr)
    "SGD": (SGD, {}), "momentum": (SGD, {"momentum": 0.9}), "Nesterov": (SGD, {"momentum": 0.9, "nesterov": True}),
    "RMSProp": (RMSProp, {}), "Adam": (Adam, {}), "Lion": (Lion, {}),
}
PROBLEMS = {  # name -> function, start, plot limits, steps, a learning rate per optimiser
    "quadratic": dict(f=quadratic, start=(-8.0, 1.0), xlim=(-9, 2), ylim=(-1.6, 1.6), num_steps=100,
                      lrs={"SGD": 0.19, "momentum": 0.1, "Nesterov": 0.1, "RMSProp": 0.1, "Adam": 0.3,
                           "Lion": 0.1}),
    "rosenbrock": dict(f=rosenbrock, start=(-1.5, 2.0), xlim=(-2, 2), ylim=(-1, 3), num_steps=300,
                       lrs={"SGD": 1e-3, "momentum": 1e-3, "Nesterov": 1e-3, "RMSProp": 1e-2, "Adam": 0.1,
                            "Lion": 1e-2}),
}


def trajectory(f, optimizer_name: str, lr: float, start: tuple[float, float], num_steps: int) -> torch.Tensor:
    """Minimise f from ``start`` with one of OPTIMIZERS; returns the visited points, (num_steps + 1, 2)."""
    cls, kwargs = OPTIMIZERS[optimizer_name]
    xy = torch.tensor(start, dtype=torch.float64, requires_grad=True)    # the two "parameters"
    opt = cls([xy], lr=lr, **kwargs)
    points = [xy.detach().clone()]
    for _ in range(num_steps):
        loss = f(xy)
        opt.zero_grad()
        loss.backward()
        opt.step()
        points.append(xy.detach().clone())
    return torch.stack(points)


def plot_trajectories(problem: str, names, lr_scale: float = 1.0, num_steps: int | None = None, ax=None):
    """Contours of the problem's function with each named optimiser's path; returns (figure, final values)."""
    spec = PROBLEMS[problem]
    f, num_steps = spec["f"], num_steps or spec["num_steps"]
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    xs, ys = np.linspace(*spec["xlim"], 200), np.linspace(*spec["ylim"], 200)
    grid = torch.tensor(np.stack(np.meshgrid(xs, ys), axis=-1))           # (200, 200, 2)
    values = f(grid).numpy()
    ax.contour(xs, ys, values, levels=np.logspace(-2, 3.5, 14), colors="grey", linewidths=0.5, alpha=0.6)
    finals = {}
    for name in names:
        lr = spec["lrs"][name] * lr_scale
        path = trajectory(f, name, lr, spec["start"], num_steps).numpy()  # (num_steps + 1, 2)
        finals[name] = float(f(torch.tensor(path[-1])))
        ax.plot(path[:, 0], path[:, 1], "-", marker=".", markersize=2, linewidth=1,
                label=f"{name} (lr {lr:.2g}): f = {finals[name]:.1e}")
    ax.plot(*spec["start"], "ko", markersize=4)
    ax.plot(*((0, 0) if problem == "quadratic" else (1, 1)), "r*", markersize=10)
    ax.set(xlim=spec["xlim"], ylim=spec["ylim"], title=f"{problem}, {num_steps} steps", xlabel="x", ylabel="y")
    ax.legend(fontsize=7, loc="lower right" if problem == "quadratic" else "upper right")
    return fig or ax.figure, finals


fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
finals_quad = plot_trajectories("quadratic", ["SGD", "momentum", "Nesterov", "Adam", "Lion"], ax=axes[0])[1]
finals_rosen = plot_trajectories("rosenbrock", ["SGD", "momentum", "Adam", "Lion"], ax=axes[1])[1]
fig.tight_layout()
plt.close(fig)
show_table([(name, *(f"{finals[name]:.1e}" if name in finals else "-" for finals in (finals_quad, finals_rosen)))
            for name in OPTIMIZERS if name in finals_quad or name in finals_rosen],
           ("optimiser", "quadratic: final f", "rosenbrock: final f"))
# What the figure shows, checked: momentum beats plain SGD by orders of magnitude on both functions.
assert finals_quad["momentum"] < finals_quad["SGD"] / 100
assert finals_rosen["momentum"] < finals_rosen["SGD"] / 10 and finals_rosen["Adam"] < finals_rosen["SGD"] / 10
fig

# %% [markdown]
# What to look for:
# - **SGD** on the quadratic zig-zags across the valley (its lr is near the stability limit of the steep
#   direction) while creeping along it; on Rosenbrock it reaches the valley floor and then barely moves.
# - **Momentum** builds up speed along the consistent direction and gets orders of magnitude closer, but its
#   velocity carries it past the minimum: it swings across the valley and back. **Nesterov**'s look-ahead brakes
#   before the overshoot, and at the same lr its path on the quadratic is almost straight.
# - **Adam** rescales each coordinate, so the steep and the flat direction get steps of similar size: the path
#   heads more directly for the minimum.
# - **Lion**'s steps are all of size lr in each coordinate, so near the minimum it keeps jittering at that
#   scale instead of settling; a decaying learning rate (section 7) fixes that.
#
# ### Explorer
# Pick a function and optimisers, and scale all their learning rates at once (×1 = the values above). Try ×2
# for SGD on the quadratic (it diverges: the steep direction is unstable above lr = 0.2), or ×3 for momentum on
# Rosenbrock.

# %%
def show_trajectories(problem: str, names, lr_scale: float, num_steps: int) -> None:
    """Draw the chosen optimisers' paths (the explorer's callback)."""
    fig, finals = plot_trajectories(problem, list(names) or ["SGD"], lr_scale, num_steps)
    plt.close(fig)
    display(fig)


explorer = widgets.interactive(
    show_trajectories,
    problem=widgets.ToggleButtons(options=list(PROBLEMS), value="rosenbrock", description="function"),
    names=widgets.SelectMultiple(options=list(OPTIMIZERS), value=("SGD", "momentum", "Adam"),
                                 description="optimisers", rows=6),
    lr_scale=widgets.FloatLogSlider(value=1.0, base=10, min=-1, max=1, step=0.05, description="lr ×",
                                    continuous_update=False),
    num_steps=widgets.IntSlider(value=300, min=10, max=1000, step=10, description="steps",
                                continuous_update=False),
)
display(explorer)

# %% [markdown]
# ## 6. Finding a learning rate: the LR range test
# The explorer shows that each optimiser has a range of learning rates that work, and that the range depends on
# the problem. The **LR range test** (Smith, 2015) measures it for a real model in one short run: train for
# about a hundred minibatches while raising the lr exponentially, from far too small to far too large, and
# record the loss. The loss first stays flat (lr too small to matter), then falls (useful range), then turns up
# and explodes (too large).
#
# `dlcourse.diagnose.lr_range_test(model, optimizer, train_loader)` does this and returns the lrs, the raw and
# smoothed losses, and a suggestion: the lr where the smoothed loss falls fastest. (It also gives `min_loss_lr`,
# the lr at the lowest smoothed loss; a tenth of it is another common rule of thumb.) It stops early when the loss
# blows up, and it restores the model and optimiser afterwards, so the test leaves no trace. Read it in
# `dlcourse/diagnose.py`.

# %%
train_loader, val_loader, test_loader = splits.loaders(batch_size=64, seed=cfg.seed)
hidden = cfg.pick(smoke=128, small=128, full=256)


def make_mlp() -> nn.Module:
    """The MLP this section and the next train, freshly initialised from the seed."""
    torch.manual_seed(cfg.seed)
    return dlcourse.models.mlp(64, [hidden], 10).to(device)


model = make_mlp()
before = copy.deepcopy(model.state_dict())
result = lr_range_test(model, functools.partial(torch.optim.AdamW, weight_decay=0.01), train_loader,
                       num_steps=100, device=device)
print(result)
assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the test must not change the model"
assert 1e-4 < result.suggestion < 1e-1, "for Adam-type optimisers useful lrs are around 1e-3"
result.plot(title="LR range test: MLP on digits, AdamW")

# %% [markdown]
# The smoothed curve is a *centred* moving average: each point averages about ten steps on either side. A running
# average of past losses (the kind used to detect the blow-up during the sweep) would trail the raw losses by
# twenty steps, almost two decades of lr here, and push the suggestion too far right.
#
# The suggestion is a starting point, not an answer: it says where the loss falls fastest during a hundred steps
# whose lr never stays put, not where long training ends up best. Still, a model trained at the suggested lr
# learns:

# %%
num_epochs = cfg.pick(smoke=3, small=20, full=60)
progress = cfg.pick(smoke=False, small=True, full=True)
lr = result.suggestion

model = make_mlp()
history_constant = dlcourse.fit(model, torch.optim.AdamW(model.parameters(), lr=lr), train_loader, val_loader,
                                num_epochs=num_epochs, progress=progress)
print(f"constant lr {lr:.2e}: {history_constant}")
assert history_constant.last["val_acc"] > cfg.pick(smoke=0.85, small=0.95, full=0.95)

# %% [markdown]
# ## 7. Learning-rate schedules
# A large lr makes fast progress early but keeps the parameters bouncing around a minimum; a small lr settles but
# is slow. Schedules give both: large first, small at the end. Three common shapes, each set per optimiser step:
# - **Step decay**: multiply the lr by `gamma` (say 0.1) every few epochs (`torch.optim.lr_scheduler.StepLR`).
# - **Warmup + cosine**: rise linearly from 0 to the peak over the first `warmup_steps`, then follow half a
#   cosine down to `min_lr` at `total_steps`. The warmup protects the first steps, when Adam's second-moment
#   estimates rest on few gradients and the weights are random; the cosine spends most time at large lrs and
#   lands softly.
# - **One-cycle** (Smith & Topin, 2017): warm up to a maximum over the first 30 % of training, then anneal far
#   below the starting value; with momentum-based optimisers it also moves the momentum (Adam's $\beta_1$)
#   opposite to the lr (`torch.optim.lr_scheduler.OneCycleLR`).
#
# PyTorch has no warmup + cosine schedule in one class, but `LambdaLR` turns any function of the step count into
# one: it sets `lr = base_lr * factor(step)`. Here is the function, written out:

# %%
def warmup_cosine(step: int, warmup_steps: int, total_steps: int, peak_lr: float, min_lr: float = 0.0) -> float:
    """The lr at optimiser step ``step`` (0, 1, ...): linear warmup 0 -> peak_lr, then cosine to min_lr."""
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))   # 0 -> 1
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def scheduled_lrs(make_scheduler, num_steps: int, base_lr: float) -> list[float]:
    """The lr of each of ``num_steps`` optimiser steps under the scheduler that ``make_scheduler(optimizer)``
    builds, recorded on a dummy one-parameter optimizer (stepped without gradients, so nothing moves)."""
    dummy = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = make_scheduler(dummy)
    lrs = []
    for _ in range(num_steps):
        lrs.append(dummy.param_groups[0]["lr"])
        dummy.step()
        scheduler.step()
    return lrs


total_steps = num_epochs * len(train_loader)
warmup_steps = max(1, total_steps // 10)
peak_lr, min_lr = lr, lr / 100

# LambdaLR with our function gives exactly our function's values ...
lambda_lrs = scheduled_lrs(lambda opt: torch.optim.lr_scheduler.LambdaLR(
    opt, lambda step: warmup_cosine(step, warmup_steps, total_steps, peak_lr, min_lr) / peak_lr),
    total_steps, peak_lr)
ours = [warmup_cosine(s, warmup_steps, total_steps, peak_lr, min_lr) for s in range(total_steps)]
assert np.allclose(lambda_lrs, ours, rtol=1e-12, atol=0)
# ... and after the warmup they agree with PyTorch's own cosine schedule, CosineAnnealingLR.
cosine_lrs = scheduled_lrs(lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(
    opt, T_max=total_steps - warmup_steps, eta_min=min_lr), total_steps - warmup_steps, peak_lr)
assert np.allclose(ours[warmup_steps:], cosine_lrs, rtol=1e-6, atol=0)
end_lr = warmup_cosine(total_steps, warmup_steps, total_steps, peak_lr, min_lr)
assert ours[0] == 0 and ours[warmup_steps] == peak_lr and math.isclose(end_lr, min_lr)
print(f"warmup + cosine: {total_steps} steps, warmup {warmup_steps}, peak {peak_lr:.2e}, min {min_lr:.2e}; "
      f"equal to LambdaLR and, after the warmup, to CosineAnnealingLR")

# %% [markdown]
# The three schedules over the same run, step by step. Step decay changes the lr once per epoch, so we give it
# epochs as its unit (`scheduler_step="epoch"` in `dlcourse.fit`); the other two change it every batch
# (`scheduler_step="batch"`).

# %%
steps_per_epoch = len(train_loader)
SCHEDULES = {  # name -> (function building a scheduler for an optimizer, when to step it)
    "constant": (None, "epoch"),
    "step": (lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, num_epochs // 3), gamma=0.1),
             "epoch"),
    "warmup + cosine": (lambda opt: torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, warmup_steps, total_steps, peak_lr, min_lr) / peak_lr), "batch"),
    "one-cycle": (lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak_lr, total_steps=total_steps),
                  "batch"),
}

fig, ax = plt.subplots(figsize=(7, 3.2))
for name, (make, unit) in SCHEDULES.items():
    if make is None:
        lrs = [peak_lr] * total_steps
    elif unit == "epoch":  # stepped once per epoch: each value holds for a whole epoch of batches
        lrs = np.repeat(scheduled_lrs(make, num_epochs, peak_lr), steps_per_epoch).tolist()
    else:
        lrs = scheduled_lrs(make, total_steps, peak_lr)
    ax.plot(lrs, label=name)
ax.set(xlabel="optimiser step (batch)", ylabel="lr", title="Learning-rate schedules")
ax.legend()
ax.grid(alpha=0.3)
plt.close(fig)
fig

# %% [markdown]
# Now train the MLP of section 6 with each schedule (AdamW, the same peak lr, the same epochs), and compare.
# Don't expect a winner on a problem this small and easy: a well-chosen constant lr is hard to beat here, and
# differences of a few thousandths in loss are within the noise of the seed. What the schedules do reliably is
# end on a settled curve: the constant run's validation loss still jumps from epoch to epoch, the annealed ones
# flatten out. One-cycle starts at a 25th of the peak, so it also starts slowest.

# %%
histories = {"constant": history_constant}
for name, (make, unit) in SCHEDULES.items():
    if make is None:
        continue
    model = make_mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr)
    scheduler = make(optimizer)
    histories[name] = dlcourse.fit(model, optimizer, train_loader, val_loader, num_epochs=num_epochs,
                                   scheduler=scheduler, scheduler_step=unit, progress=progress)
    final_lr = optimizer.param_groups[0]["lr"]
    assert final_lr < peak_lr, f"{name}: the schedule should have lowered the lr, it is {final_lr}"

show_table([(name, f"{h.last['train_loss']:.4f}", f"{h.last['val_loss']:.4f}", f"{h.last['val_acc']:.1%}",
             f"{sum(h['seconds']):.1f} s") for name, h in histories.items()],
           ("schedule", "train loss", "val loss", "val acc", "time"))
assert all(h.last["val_acc"] > cfg.pick(smoke=0.75, small=0.95, full=0.95) for h in histories.values())

fig, ax = plt.subplots(figsize=(7, 3.2))
for name, h in histories.items():
    ax.plot(h["epoch"], h["val_loss"], "-o", markersize=3, label=name)
ax.set(xlabel="epoch", ylabel="validation loss", yscale="log", title="MLP on digits, AdamW, peak lr from the test")
ax.legend()
ax.grid(alpha=0.3)
plt.close(fig)
fig

# %% [markdown]
# ## 8. Gradient clipping
# One unlucky batch, a badly scaled input or a steep wall in the loss surface can produce a gradient hundreds of
# times larger than usual, and one step with it can throw the parameters somewhere they never recover from.
# **Clipping by global norm** caps the length of the whole gradient: with $G = \sqrt{\sum_{p} \|g_p\|^2}$ over
# *all* parameters, if $G$ exceeds `max_norm` every gradient is multiplied by `max_norm / G`. The direction is
# kept; only the step length is limited. It goes between `loss.backward()` and `optimizer.step()`.
# `torch.nn.utils.clip_grad_norm_` does it and returns $G$, which is worth logging: a rising gradient norm is an
# early warning.

# %%
def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """Scale all gradients in place so their global L2 norm is at most max_norm; return the norm before."""
    grads = [p.grad for p in parameters if p.grad is not None]
    total_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)   # 1 when the norm is already small enough
    for g in grads:
        g.mul_(scale)
    return total_norm


model_a = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
model_b = copy.deepcopy(model_a)
for max_norm in (0.1, 1e3):                                      # clipping active, then inactive
    for m in (model_a, model_b):
        m.zero_grad()
        F.cross_entropy(m(X_check[:100].float()), y_check[:100]).backward()
    norm_ours = clip_grad_norm(model_a.parameters(), max_norm)
    norm_torch = torch.nn.utils.clip_grad_norm_(model_b.parameters(), max_norm)
    new_norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model_a.parameters()]))
    print(f"max_norm {max_norm:g}: norm before {norm_ours:.4f} (torch {norm_torch:.4f}), after {new_norm:.4f}")
    assert torch.allclose(norm_ours, norm_torch)
    assert all(torch.allclose(a.grad, b.grad, atol=1e-7) for a, b in zip(model_a.parameters(), model_b.parameters()))
    assert new_norm <= max_norm + 1e-4

# %% [markdown]
# On Rosenbrock, momentum with lr = 0.003 (three times section 5's value) meets the valley's steep walls at
# full speed, and the iterates fly off to infinity. Clipping the gradient norm at 10 caps the steps while the
# gradient is large (the first hundred or so, left panel) and leaves the later ones alone:

# %%
def rosenbrock_run(lr: float, max_norm: float | None, num_steps: int = 300) -> tuple[np.ndarray, list[float]]:
    """Momentum SGD on Rosenbrock from (-1.5, 2); returns the path (num_steps + 1, 2) and the gradient norms."""
    xy = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)
    opt = SGD([xy], lr=lr, momentum=0.9)
    path, norms = [xy.detach().clone()], []
    for _ in range(num_steps):
        loss = rosenbrock(xy)
        opt.zero_grad()
        loss.backward()
        norms.append(xy.grad.norm().item())
        if max_norm is not None:
            clip_grad_norm([xy], max_norm)                      # between backward() and step()
        opt.step()
        path.append(xy.detach().clone())
    return torch.stack(path).numpy(), norms


with np.errstate(all="ignore"):
    path_free, norms_free = rosenbrock_run(3e-3, None)
    path_clip, norms_clip = rosenbrock_run(3e-3, 10.0)
final_free = rosenbrock(torch.tensor(path_free[-1])).item()
final_clip = rosenbrock(torch.tensor(path_clip[-1])).item()
print(f"momentum, lr 0.003: without clipping f = {final_free:.3g}; clipped at norm 10: f = {final_clip:.2e}")
assert not math.isfinite(final_free) or final_free > 1e3, "without clipping this run should blow up"
assert final_clip < 1e-2

fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
axes[0].semilogy([n for n in norms_free if math.isfinite(n)], label="no clipping")
axes[0].semilogy(norms_clip, label="clipped at 10")
axes[0].axhline(10.0, color="grey", linestyle=":", label="max_norm")
axes[0].set(xlabel="step", ylabel="gradient norm (before clipping)", ylim=(1e-3, 1e8), title="gradient norm")
axes[0].legend()
inside = np.isfinite(path_free).all(axis=1) & (np.abs(path_free) < 5).all(axis=1)
shown = path_free[: int(np.argmin(inside)) + 1] if not inside.all() else path_free   # up to where it leaves
axes[1].plot(shown[:, 0], shown[:, 1], ".-", markersize=2, linewidth=0.8, label="no clipping")
axes[1].plot(path_clip[:, 0], path_clip[:, 1], ".-", markersize=2, linewidth=0.8, label="clipped at 10")
axes[1].plot(1, 1, "r*", markersize=10)
axes[1].set(xlim=(-2, 2), ylim=(-1, 3), title="paths (the unclipped one leaves the frame)")
axes[1].legend()
fig.tight_layout()
plt.close(fig)
fig

# %% [markdown]
# ## 9. Parameter groups: no weight decay on biases and norms
# Weight decay pulls every parameter it touches towards zero. For weight matrices and convolution kernels that
# is the point: smaller weights, smoother functions. For a **bias** or the **scale and shift of a
# normalisation layer** it is not: these are a handful of numbers that set offsets and gains, and pulling a
# BatchNorm scale towards zero just turns its channel down. The usual recipe (and what most transformer training
# code does) decays only tensors with at least two dimensions and gives 1-D tensors a group of their own with
# `weight_decay=0`. An optimiser accepts a list of groups, each a dict with `"params"` and any hyperparameters
# that differ from the defaults.

# %%
def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: tensors with >= 2 dimensions get ``weight_decay``; biases and norm parameters (1-D) get 0."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# Digits as 1×8×8 images at smoke and small scale; the 3×32×32 shapes images at full scale.
image_splits = cfg.pick(smoke=dlcourse.data.digits, small=dlcourse.data.digits, full=dlcourse.data.shapes)(
    seed=cfg.seed)
in_channels, _, image_size = image_splits.train[0][0].shape    # one example: (C, H, W)
num_classes = len(image_splits.classes)


def make_cnn() -> nn.Module:
    """dlcourse.models.SmallCNN (bias-free conv -> BatchNorm -> ReLU blocks, then a linear head), from the seed."""
    torch.manual_seed(cfg.seed)
    return dlcourse.models.SmallCNN(in_channels, num_classes, width=16, depth=cfg.pick(smoke=2, small=2, full=3),
                                    image_size=image_size).to(device)


cnn = make_cnn()
groups = param_groups(cnn, weight_decay=0.05)
names = {id(p): n for n, p in cnn.named_parameters()}
for group in groups:
    print(f"weight_decay={group['weight_decay']}: " + ", ".join(f"{names[id(p)]} {tuple(p.shape)}"
                                                                  for p in group["params"]))
# Count independently, by module type: convolution kernels and linear weights decay; BatchNorm's weight and
# bias and the linear bias do not.
convs = [m for m in cnn.modules() if isinstance(m, nn.Conv2d)]
norms = [m for m in cnn.modules() if isinstance(m, nn.BatchNorm2d)]
linears = [m for m in cnn.modules() if isinstance(m, nn.Linear)]
assert len(groups[0]["params"]) == len(convs) + len(linears)
assert len(groups[1]["params"]) == 2 * len(norms) + sum(m.bias is not None for m in linears + convs)
assert sum(len(g["params"]) for g in groups) == len(list(cnn.parameters()))

# %% [markdown]
# A quick check that the optimiser honours the groups: one AdamW step with all-zero gradients moves nothing
# except through weight decay, so the decayed tensors shrink by exactly $(1 - \eta\lambda)$ and the others stay.

# %%
optimizer = torch.optim.AdamW(groups, lr=0.1)
print([{k: v for k, v in g.items() if k in ("lr", "weight_decay")} for g in optimizer.param_groups])
old = [p.detach().clone() for p in cnn.parameters()]
for p in cnn.parameters():
    p.grad = torch.zeros_like(p)
optimizer.step()
for p, p_old in zip(cnn.parameters(), old):
    factor = 1 - 0.1 * 0.05 if p.ndim >= 2 else 1.0
    assert torch.allclose(p.detach(), factor * p_old), names[id(p)]
print("decayed tensors shrank by", 1 - 0.1 * 0.05, "and the 1-D ones did not move")

# %% [markdown]
# **Embedding tables** are 2-D, so the `ndim >= 2` rule decays them too; transformer code usually does not,
# because decoupled decay shrinks every row at every step while a row gets a gradient only in the steps where its
# token occurs, so the vectors of rare tokens are pulled towards zero. `dlcourse.train.decay_groups`, which
# notebooks 06 and 11 use, chooses by module type instead: the weights of Linear and convolution layers are
# decayed; biases, normalisation parameters and embeddings are not. On the CNN the two rules agree; on a model
# with an embedding they differ by exactly the table.

# %%
from collections import OrderedDict

from dlcourse.train import decay_groups, decayed_names


def decayed_by(groups: list[dict], model: nn.Module) -> list[str]:
    """Names of the parameters an optimizer built from ``groups`` decays."""
    return sorted(decayed_names(model, torch.optim.AdamW(groups)))


tiny_lm = nn.Sequential(OrderedDict(embed=nn.Embedding(50, 16), norm=nn.LayerNorm(16), head=nn.Linear(16, 50)))
decayed = {}   # label -> (names the ndim >= 2 rule decays, names decay_groups decays)
for label, net in (("SmallCNN", cnn), ("tiny_lm", tiny_lm)):
    by_shape, by_module = decayed_by(param_groups(net, 0.05), net), decayed_by(decay_groups(net, 0.05), net)
    decayed[label] = by_shape, by_module
    print(f"{label}\n  ndim >= 2 rule:     {by_shape}\n  decay_groups:       {by_module}\n"
          f"  only the ndim rule: {sorted(set(by_shape) - set(by_module))}")
assert decayed["SmallCNN"][0] == decayed["SmallCNN"][1]
assert set(decayed["tiny_lm"][0]) - set(decayed["tiny_lm"][1]) == {"embed.weight"}
assert set(decayed["tiny_lm"][1]) < set(decayed["tiny_lm"][0])

# %% [markdown]
# Everything together: AdamW with these parameter groups, warmup + cosine per batch, and gradient clipping by
# global norm, all through `dlcourse.fit`: `clip_grad_norm=max_norm` clips between `backward()` and `step()` (with
# `torch.nn.utils.clip_grad_norm_`) and records each epoch's mean norm *before* clipping as `grad_norm`. To see
# what the optimiser really receives, an optimizer *step pre-hook* (`register_step_pre_hook`, called at the start
# of every `optimizer.step()`, after fit has clipped) records the norm of the gradients each step uses.

# %%
num_epochs_cnn = cfg.pick(smoke=3, small=8, full=20)
image_train, image_val, image_test = image_splits.loaders(batch_size=64, seed=cfg.seed)
cnn = make_cnn()
optimizer = torch.optim.AdamW(param_groups(cnn, weight_decay=0.05), lr=3e-3)
total = num_epochs_cnn * len(image_train)
scheduler = torch.optim.lr_scheduler.LambdaLR(
    optimizer, lambda step: warmup_cosine(step, max(1, total // 10), total, peak_lr=1.0, min_lr=0.01))
max_norm = 2.0      # above the typical gradient norm: clipping should catch spikes, not every step
used_norms = []     # the global gradient norm of every optimizer step, as the step sees it


def record_used_norm(optimizer, args, kwargs) -> None:
    """Step pre-hook: the global norm of the gradients this step is about to use (after fit's clipping)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    used_norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())


hook = optimizer.register_step_pre_hook(record_used_norm)
history_cnn = dlcourse.fit(cnn, optimizer, image_train, image_val, num_epochs=num_epochs_cnn, scheduler=scheduler,
                           scheduler_step="batch", clip_grad_norm=max_norm, progress=progress)
hook.remove()
for record in history_cnn.records:
    print(f"epoch {record['epoch']}: val loss {record['val_loss']:.3f}, val acc {record['val_acc']:.1%}, "
          f"mean gradient norm before clipping {record['grad_norm']:.2f}")
at_cap = np.mean(np.array(used_norms) > (1 - 1e-3) * max_norm)
print(f"{num_epochs_cnn} epochs in {sum(history_cnn['seconds']):.1f} s; gradient norm the steps used: median "
      f"{np.median(used_norms):.2f}, max {max(used_norms):.2f} (max_norm {max_norm:g}); clipped to max_norm in "
      f"{at_cap:.0%} of the steps")
assert len(used_norms) == total, "one recorded norm per optimizer step"
assert max(used_norms) <= max_norm * (1 + 1e-5), "fit(clip_grad_norm=max_norm) bounds every step's gradient norm"
if max(history_cnn["grad_norm"]) > max_norm:      # an epoch whose mean norm was above the cap had clipped steps
    assert at_cap > 0
cnn_test = dlcourse.evaluate(cnn, image_test)
print(f"SmallCNN, test accuracy {cnn_test['acc']:.1%}")
assert cnn_test["acc"] > cfg.pick(smoke=0.7, small=0.95, full=0.9)

# %% [markdown]
# ## Summary
# - An optimiser is a loop over `param_groups` that updates each parameter in place from its gradient and its
#   `state`; SGD, momentum, Nesterov, RMSProp, Adam, AdamW and Lion are each a few lines, and ours match
#   `torch.optim` to 1e-6 over 100 steps.
# - Momentum accumulates consistent directions and cancels oscillating ones; Adam and RMSProp give each
#   coordinate its own step size; Lion takes steps of fixed size per coordinate.
# - For plain SGD, L2 regularisation and decoupled weight decay are the same update. With momentum they differ:
#   `torch.optim.SGD(weight_decay=...)` is L2 (the decay passes through the velocity), SGDW's decoupled decay is
#   not. For Adam they differ too, and AdamW's decoupled decay is the one that behaves like weight decay.
# - The LR range test (`dlcourse.diagnose.lr_range_test`) finds a working learning rate in about a hundred steps
#   and leaves the model untouched.
# - Schedules: step decay, warmup + cosine (`LambdaLR` with a small function), one-cycle (`OneCycleLR`, stepped
#   per batch: `dlcourse.fit(..., scheduler_step="batch")`).
# - Clip by global norm between `backward()` and `step()`; the returned norm is worth logging.
#   `dlcourse.fit(..., clip_grad_norm=max_norm)` does both (history key `grad_norm`).
# - Put biases and normalisation parameters (the 1-D tensors) in a parameter group with `weight_decay=0`.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **Adam without bias correction.** Remove the two divisions by $1-\beta^t$ from `Adam.step`. How large is the
#    first step compared with the corrected one (work it out for $\beta_1 = 0.9$, $\beta_2 = 0.999$), and what
#    does the change do to the trajectories of section 5?
# 2. **Momentum on the quadratic.** Theory says heavy-ball momentum converges fastest on a quadratic with
#    curvatures $\mu$ and $L$ for $\beta = \big((\sqrt{L}-\sqrt{\mu})/(\sqrt{L}+\sqrt{\mu})\big)^2$ and
#    $\eta = 4/(\sqrt{L}+\sqrt{\mu})^2$. Compute both for section 5's quadratic ($\mu = 0.1$, $L = 10$), add that
#    setting to `OPTIMIZERS`, and compare it with momentum 0.9.
# 3. **Lion on the MLP.** Train section 6's MLP with `Lion` at a tenth of the AdamW lr and ten times its weight
#    decay. Then run the LR range test with Lion: where does its suggestion land relative to AdamW's?
# 4. **Range test, read critically.** Run `lr_range_test` with `num_steps` 50, 100 and 300, and with batch sizes
#    16 and 256. How stable is the suggestion? Which rule (steepest descent or `min_loss_lr / 10`) moves less?
# 5. **Warmup matters?** Train the CNN of section 9 with `peak_lr` three times larger, with and without the
#    warmup (`warmup_steps=0`). Plot the gradient norms of the first 50 steps for both.
# 6. **Decay everything.** Put all parameters of the CNN in one group with `weight_decay=0.5` and compare, after
#    training, the mean absolute BatchNorm scale with the two-group version.
