"""Notebook 07's from-scratch code checked against PyTorch: float-format limits from the bit layout against
``torch.finfo`` (and by experiment), and the dynamic loss scaler against ``torch.amp.GradScaler`` step for step.

Notebooks are not importable, so compact copies of the notebook's ``format_limits`` and ``DynamicLossScaler``
live here; keep them in step with notebooks/07_mixed_precision.py.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------------------------- copies from the notebook
def format_limits(exp_bits: int, mantissa_bits: int) -> dict[str, float]:
    bias = 2 ** (exp_bits - 1) - 1
    return {"max": (2 - 2.0 ** -mantissa_bits) * 2.0 ** bias, "smallest_normal": 2.0 ** (1 - bias),
            "smallest_subnormal": 2.0 ** (1 - bias - mantissa_bits), "eps": 2.0 ** -mantissa_bits}


class DynamicLossScaler:
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.scale_factor = float(init_scale)
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval = growth_interval
        self.good_steps = 0
        self.found_inf = None

    def get_scale(self):
        return self.scale_factor

    def scale(self, loss):
        return loss * self.scale_factor

    @torch.no_grad()
    def unscale_(self, optimizer):
        inv_scale = 1.0 / self.scale_factor
        found_inf = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    found_inf = found_inf or not bool(torch.isfinite(p.grad).all())
                    p.grad.mul_(inv_scale)
        self.found_inf = found_inf

    def step(self, optimizer):
        if self.found_inf is None:
            self.unscale_(optimizer)
        if not self.found_inf:
            optimizer.step()

    def update(self):
        if self.found_inf:
            self.scale_factor *= self.backoff_factor
            self.good_steps = 0
        else:
            self.good_steps += 1
            if self.good_steps == self.growth_interval:
                if math.isfinite(self.scale_factor * self.growth_factor):
                    self.scale_factor *= self.growth_factor
                self.good_steps = 0
        self.found_inf = None


# ------------------------------------------------------------------------------------------------ float formats
IEEE_FORMATS = [(torch.float16, 5, 10), (torch.bfloat16, 8, 7), (torch.float32, 8, 23), (torch.float64, 11, 52),
                (torch.float8_e5m2, 5, 2)]


@pytest.mark.parametrize("dtype, exp_bits, mantissa_bits", IEEE_FORMATS)
def test_format_limits_match_finfo(dtype, exp_bits, mantissa_bits):
    ours, fi = format_limits(exp_bits, mantissa_bits), torch.finfo(dtype)
    assert fi.bits == 1 + exp_bits + mantissa_bits
    assert ours["max"] == fi.max
    assert ours["smallest_normal"] == fi.smallest_normal == fi.tiny
    assert ours["eps"] == fi.eps
    assert ours["smallest_subnormal"] == fi.smallest_normal * fi.eps


@pytest.mark.parametrize("dtype, exp_bits, mantissa_bits", IEEE_FORMATS[:3])
def test_format_limits_by_experiment(dtype, exp_bits, mantissa_bits):
    lim = format_limits(exp_bits, mantissa_bits)
    t = lambda x: torch.tensor(x, dtype=dtype)  # noqa: E731
    assert t(1.0) + lim["eps"] > t(1.0) and t(1.0) + lim["eps"] / 2 == t(1.0)
    assert torch.isfinite(t(lim["max"])) and torch.isinf(t(lim["max"]) * 2)
    assert t(lim["smallest_subnormal"]) > 0 and t(lim["smallest_subnormal"]) / 2 == 0
    assert 0 < t(lim["smallest_normal"]) / 2 < t(lim["smallest_normal"])       # a subnormal, not zero


def test_e4m3fn_is_not_ieee():
    """float8_e4m3fn has no infinity: its max is larger than the IEEE formula gives (notebook exercise 1)."""
    ours, fi = format_limits(4, 3), torch.finfo(torch.float8_e4m3fn)
    assert ours["smallest_normal"] == fi.smallest_normal and ours["eps"] == fi.eps
    assert ours["max"] == 240.0 and fi.max == 448.0


# ------------------------------------------------------------------------------------------------ loss scaling
def _train(scaler, num_steps, plant, *, autocast_fp16=False, clip=None, seed=0):
    """Train a small model with ``scaler``; plant[step] is written into one gradient at that step.
    Returns (scale before each step, skipped per step, final parameters)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scales, skipped = [], []
    for step in range(num_steps):
        X, y = torch.randn(16, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)
        with torch.autocast("cpu", dtype=torch.float16, enabled=autocast_fp16):
            loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        if step in plant:
            with torch.no_grad():
                model[2].weight.grad[0, 1] = plant[step]
        if clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        before = [p.detach().clone() for p in model.parameters()]
        scales.append(scaler.get_scale())
        scaler.step(optimizer)
        scaler.update()
        skipped.append(all(torch.equal(b, p) for b, p in zip(before, model.parameters())))
    return scales, skipped, [p.detach() for p in model.parameters()]


@pytest.mark.parametrize("settings, plant, extra", [
    (dict(init_scale=2.0**10, growth_interval=4), {3: float("inf"), 4: float("nan"), 12: float("inf")}, {}),
    (dict(init_scale=768.0, growth_factor=4.0, backoff_factor=0.25, growth_interval=3), {0: float("nan")}, {}),
    (dict(growth_interval=5), {6: float("inf")}, {"clip": 0.5}),
    (dict(init_scale=2.0**24, growth_interval=6), {10: float("inf")}, {"autocast_fp16": True}),  # real overflows
])
def test_scaler_matches_gradscaler_step_for_step(settings, plant, extra):
    ours = _train(DynamicLossScaler(**settings), 25, plant, **extra)
    theirs = _train(torch.amp.GradScaler("cpu", **settings), 25, plant, **extra)
    assert ours[0] == theirs[0]                                  # same scale before every step
    assert ours[1] == theirs[1]                                  # same skipped steps
    assert all(torch.equal(a, b) for a, b in zip(ours[2], theirs[2]))
    assert {s for s in plant} <= {i for i, s in enumerate(ours[1]) if s}
    changes = list(zip(ours[0], ours[0][1:]))
    assert any(b < a for a, b in changes) and any(b > a for a, b in changes)   # backoff and growth both happened


def test_scaler_skips_the_step_and_keeps_weights_finite():
    scales, skipped, params = _train(DynamicLossScaler(init_scale=8.0, growth_interval=100), 6,
                                     {2: float("inf")})
    assert skipped == [False, False, True, False, False, False]
    assert scales == [8.0, 8.0, 8.0, 4.0, 4.0, 4.0]
    assert all(torch.isfinite(p).all() for p in params)


def test_loss_scale_rescues_small_values_in_float16():
    g = torch.tensor([1e-9, 3e-8, 1e-6, 1e-3])
    assert (g.to(torch.float16) == 0).sum() == 1                 # 1e-9 is below half the smallest subnormal
    assert (g.to(torch.bfloat16) == 0).sum() == 0
    scaled = (g * 2.0**16).to(torch.float16)
    assert (scaled != 0).all() and torch.isfinite(scaled).all()
    assert torch.isinf((g * 2.0**30).to(torch.float16)).any()
