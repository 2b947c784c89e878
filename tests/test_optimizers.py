"""Notebook 04's from-scratch code against PyTorch: optimisers over 100 steps, schedules, clipping, param groups.

Notebooks are not importable, so the optimisers are compact copies of notebook 04's (the learner reads those);
each is checked against torch.optim to 1e-6 after 100 steps on the same minibatches. Lion has no torch version:
it is checked against its update rule computed by hand.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dlcourse


# --- compact copies of notebook 04's implementations ---------------------------------------------------------

class SGD(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + wd * p
                if mu > 0:
                    state = self.state[p]
                    if "velocity" not in state:
                        state["velocity"] = g.clone()
                    else:
                        state["velocity"].mul_(mu).add_(g)
                    v = state["velocity"]
                    g = g + mu * v if group["nesterov"] else v
                p.sub_(lr * g)


class RMSProp(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.zeros_like(p)
                s = state["square_avg"]
                s.mul_(group["alpha"]).add_((1 - group["alpha"]) * p.grad ** 2)
                p.sub_(group["lr"] * p.grad / (s.sqrt() + group["eps"]))


class Adam(torch.optim.Optimizer):
    decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
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
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                g = p.grad
                if self.decoupled_weight_decay:
                    p.mul_(1 - lr * wd)
                else:
                    g = g + wd * p
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_((1 - beta1) * g)
                v.mul_(beta2).add_((1 - beta2) * g * g)
                p.sub_(lr * (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + eps))


class AdamW(Adam):
    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
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
                c = beta1 * m + (1 - beta1) * p.grad
                p.mul_(1 - lr * wd).sub_(lr * torch.sign(c))
                m.mul_(beta2).add_((1 - beta2) * p.grad)


def warmup_cosine(step, warmup_steps, total_steps, peak_lr, min_lr=0.0):
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def clip_grad_norm(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale)
    return total_norm


def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# --- helpers ---------------------------------------------------------------------------------------------------

def _two_groups(model):
    """Weights with decay, biases without and with their own lr: exercises per-group hyperparameters."""
    return [{"params": [model[0].weight, model[2].weight]},
            {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0, "lr": 3e-3}]


def _max_difference(make_ours, make_torch, num_steps=100, dtype=torch.float64, groups=False):
    """Train two copies of one MLP on the same minibatches; the largest parameter difference at the end."""
    torch.manual_seed(0)
    model_a = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4)).to(dtype)
    model_b = copy.deepcopy(model_a)
    opt_a = make_ours(_two_groups(model_a) if groups else model_a.parameters())
    opt_b = make_torch(_two_groups(model_b) if groups else model_b.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(num_steps):
        X = torch.randn(16, 12, generator=gen).to(dtype)
        y = torch.randint(0, 4, (16,), generator=gen)
        for model, opt in ((model_a, opt_a), (model_b, opt_b)):
            loss = F.cross_entropy(model(X), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return max((a - b).abs().max().item() for a, b in zip(model_a.parameters(), model_b.parameters()))


CASES = [
    ("sgd", SGD, torch.optim.SGD, dict(lr=0.1)),
    ("sgd-wd", SGD, torch.optim.SGD, dict(lr=0.1, weight_decay=1e-2)),
    ("momentum", SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    ("nesterov", SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("rmsprop", RMSProp, torch.optim.RMSprop, dict(lr=1e-2)),
    ("rmsprop-alpha", RMSProp, torch.optim.RMSprop, dict(lr=3e-3, alpha=0.9, eps=1e-6)),
    ("adam", Adam, torch.optim.Adam, dict(lr=1e-2)),
    ("adam-l2", Adam, torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2)),
    ("adamw", AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    ("adamw-default", AdamW, torch.optim.AdamW, dict()),
]


@pytest.mark.parametrize("name, ours, theirs, kwargs", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("groups", [False, True], ids=["one-group", "two-groups"])
def test_optimizer_matches_torch_over_100_steps(name, ours, theirs, kwargs, groups):
    diff = _max_difference(lambda ps: ours(ps, **kwargs), lambda ps: theirs(ps, **kwargs), groups=groups)
    assert diff < 1e-6, f"{name}: {diff}"


@pytest.mark.parametrize("name, ours, theirs, kwargs", [CASES[3], CASES[6], CASES[8]], ids=["nesterov", "adam",
                                                                                                 "adamw"])
def test_optimizer_matches_torch_in_float32(name, ours, theirs, kwargs):
    diff = _max_difference(lambda ps: ours(ps, **kwargs), lambda ps: theirs(ps, **kwargs), dtype=torch.float32)
    assert diff < 1e-5, f"{name}: {diff}"


def test_l2_and_decoupled_decay_differ_for_adam_but_not_for_sgd():
    assert _max_difference(lambda ps: Adam(ps, lr=1e-2, weight_decay=0.1),
                           lambda ps: AdamW(ps, lr=1e-2, weight_decay=0.1)) > 1e-3
    p_l2 = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    p_l2.grad = torch.tensor([0.3, 0.5], dtype=torch.float64)
    SGD([p_l2], lr=0.1, weight_decay=0.05).step()
    decoupled = (1 - 0.1 * 0.05) * torch.tensor([1.0, -2.0], dtype=torch.float64) - 0.1 * torch.tensor([0.3, 0.5])
    assert torch.allclose(p_l2.detach(), decoupled.double())


class SGDW(torch.optim.Optimizer):
    """Notebook 04's SGD with decoupled weight decay: p <- (1 - lr * wd) p, then momentum on the loss gradient."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.mul_(1 - lr * wd)
                g = p.grad
                if mu > 0:
                    state = self.state[p]
                    state["velocity"] = g.clone() if "velocity" not in state else state["velocity"].mul_(mu).add_(g)
                    g = state["velocity"]
                p.sub_(lr * g)


def _l2_in_the_loss(momentum, wd=0.01, num_steps=50):
    """Weights after training with torch's SGD and the penalty wd / 2 * ||θ||² written into the loss, next to
    torch's SGD(weight_decay=wd) and SGDW(weight_decay=wd), all with ``momentum``."""
    torch.manual_seed(0)
    start = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    runs = {}
    for name, make, l2 in [("loss", lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=momentum), wd),
                           ("torch", lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=momentum, weight_decay=wd), 0),
                           ("sgdw", lambda ps: SGDW(ps, lr=0.05, momentum=momentum, weight_decay=wd), 0)]:
        model = copy.deepcopy(start)
        opt = make(model.parameters())
        gen = torch.Generator().manual_seed(1)
        for _ in range(num_steps):
            X, y = torch.randn(16, 12, generator=gen).double(), torch.randint(0, 4, (16,), generator=gen)
            loss = F.cross_entropy(model(X), y) + l2 / 2 * sum(p.pow(2).sum() for p in model.parameters())
            opt.zero_grad()
            loss.backward()
            opt.step()
        runs[name] = torch.cat([p.detach().flatten() for p in model.parameters()])
    return runs


def test_sgd_weight_decay_is_l2_with_momentum_and_decoupled_decay_is_not():
    """Notebooks 04 and 05: for plain SGD, L2 in the loss = SGD's weight_decay = decoupled decay; with momentum
    SGD's weight_decay is still L2 (it passes through the velocity) but decoupled decay differs."""
    plain, heavy = _l2_in_the_loss(momentum=0.0), _l2_in_the_loss(momentum=0.9)
    assert (plain["loss"] - plain["torch"]).abs().max() < 1e-12
    assert (plain["sgdw"] - plain["torch"]).abs().max() < 1e-12
    assert (heavy["loss"] - heavy["torch"]).abs().max() < 1e-12
    assert (heavy["sgdw"] - heavy["torch"]).abs().max() > 1e-3


def test_parameters_without_gradient_are_skipped():
    for cls in (SGD, RMSProp, Adam, AdamW, Lion):
        a = torch.ones(2, requires_grad=True)
        b = torch.ones(2, requires_grad=True)
        a.grad = torch.tensor([0.5, -0.5])
        opt = cls([a, b], lr=0.1, **({"momentum": 0.9} if cls is SGD else {}))
        opt.step()
        assert torch.equal(b.detach(), torch.ones(2)) and b not in opt.state, cls.__name__
        assert not torch.equal(a.detach(), torch.ones(2)), cls.__name__


# --- Lion: the update rule by hand -------------------------------------------------------------------------------

def test_lion_two_steps_by_hand():
    theta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    lion = Lion([theta], lr=0.1, weight_decay=0.5)
    g1 = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    g2 = torch.tensor([-0.01, 0.05, 0.1], dtype=torch.float64)
    theta.grad = g1
    lion.step()
    # m0 = 0: c1 = 0.1 * g1, sign (+, -, +); theta <- (1 - 0.1 * 0.5) * theta - 0.1 * sign(c1)
    step1 = torch.tensor([0.85, -1.8, 0.375], dtype=torch.float64)
    assert torch.allclose(theta.detach(), step1)
    assert torch.allclose(lion.state[theta]["exp_avg"], 0.01 * g1)          # m1 = beta2 * 0 + 0.01 * g1
    theta.grad = g2
    lion.step()
    # c2 = 0.9 * m1 + 0.1 * g2 = [0.0017, -0.004, 0.028]: sign (+, -, +), not g2's (-, +, +)
    c2 = 0.9 * 0.01 * g1 + 0.1 * g2
    assert torch.equal(torch.sign(c2), torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    step2 = 0.95 * step1 - 0.1 * torch.sign(c2)
    assert torch.allclose(theta.detach(), step2)
    assert torch.allclose(theta.detach(), torch.tensor([0.7075, -1.61, 0.25625], dtype=torch.float64))
    assert torch.allclose(lion.state[theta]["exp_avg"], 0.99 * 0.01 * g1 + 0.01 * g2)


def test_lion_steps_have_size_lr_per_coordinate():
    torch.manual_seed(0)
    p = torch.randn(50, dtype=torch.float64, requires_grad=True)
    opt = Lion([p], lr=0.01)
    for _ in range(5):
        before = p.detach().clone()
        p.grad = torch.randn(50, dtype=torch.float64)
        opt.step()
        assert torch.allclose((p.detach() - before).abs(), torch.full((50,), 0.01, dtype=torch.float64))


# --- schedules, clipping, parameter groups -----------------------------------------------------------------------

def _scheduled(make_scheduler, num_steps, base_lr):
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = make_scheduler(dummy)
    lrs = []
    for _ in range(num_steps):
        lrs.append(dummy.param_groups[0]["lr"])
        dummy.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("warmup, total, peak, low", [(10, 100, 1.0, 0.0), (0, 50, 0.1, 1e-3), (7, 333, 3e-3, 3e-5)])
def test_warmup_cosine_against_torch_schedulers(warmup, total, peak, low):
    ours = [warmup_cosine(s, warmup, total, peak, low) for s in range(total)]
    cosine = _scheduled(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total - warmup, eta_min=low),
                        total - warmup, peak)
    assert ours[warmup:] == pytest.approx(cosine, rel=1e-6)
    assert ours[:warmup] == pytest.approx([peak * s / warmup for s in range(warmup)])
    via_lambda = _scheduled(lambda o: torch.optim.lr_scheduler.LambdaLR(
        o, lambda s: warmup_cosine(s, warmup, total, peak, low) / peak), total, peak)
    assert via_lambda == pytest.approx(ours, rel=1e-12, abs=1e-15)
    assert warmup_cosine(total, warmup, total, peak, low) == pytest.approx(low)
    assert warmup_cosine(total + 10, warmup, total, peak, low) == pytest.approx(low)


def test_one_cycle_with_fit_steps_the_scheduler_every_batch():
    splits = dlcourse.data.digits(flatten=True, seed=0)
    train_loader, val_loader, _ = splits.loaders(batch_size=256, seed=0)
    torch.manual_seed(0)
    model = dlcourse.models.mlp(64, [32], 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    total = 3 * len(train_loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=total)
    history = dlcourse.fit(model, optimizer, train_loader, val_loader, num_epochs=3, scheduler=scheduler,
                           scheduler_step="batch", progress=False)
    expected = _scheduled(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1e-2, total_steps=total),
                          total, 1e-2)
    assert history["lr"] == pytest.approx(expected[:: len(train_loader)], rel=1e-9)
    assert expected[-1] < expected[0] / 1000                      # the last batch: annealed far below the start


@pytest.mark.parametrize("max_norm, scale", [(1.0, 1.0), (100.0, 1.0), (0.5, 1e3)])
def test_clip_grad_norm_matches_torch(max_norm, scale):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.LayerNorm(4))
    ref = copy.deepcopy(model)
    for p, q in zip(model.parameters(), ref.parameters()):
        p.grad = torch.randn_like(p) * scale
        q.grad = p.grad.clone()
    model[0].bias.grad = ref[0].bias.grad = None                  # one parameter without gradient
    norm = clip_grad_norm(model.parameters(), max_norm)
    norm_ref = torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm)
    assert torch.allclose(norm, norm_ref)
    assert model[0].bias.grad is None
    for p, q in zip(model.parameters(), ref.parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, rtol=1e-6, atol=1e-9)
    after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert after <= max_norm * (1 + 1e-5)


def test_param_groups_split_by_dimension():
    model = dlcourse.models.SmallCNN(in_channels=1, num_classes=10, width=8, depth=2, image_size=8)
    model.head[2].bias.requires_grad_(False)                     # frozen: in no group
    groups = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in groups[0]["params"]] == ["features.0.0.weight", "features.2.0.weight",
                                                          "head.2.weight"]
    assert [names[id(p)] for p in groups[1]["params"]] == ["features.0.1.weight", "features.0.1.bias",
                                                          "features.2.1.weight", "features.2.1.bias"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    # counted by module type: conv kernels and linear weights decay; BatchNorm weight and bias do not
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(groups[0]["params"]) == convs + 1 and len(groups[1]["params"]) == 2 * norms
    optimizer = torch.optim.AdamW(groups, lr=0.1)
    old = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for p, p_old in zip(model.parameters(), old):
        factor = 1 - 0.1 * 0.05 if p.ndim >= 2 else 1.0
        assert torch.allclose(p.detach(), factor * p_old)
