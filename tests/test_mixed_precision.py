"""Notebook 07's from-scratch code checked against PyTorch: float-format limits from the bit layout against
``torch.finfo`` (and by experiment), the dynamic loss scaler against ``torch.amp.GradScaler`` step for step, and
TF32: the rounding the notebook emulates, the switches it flips, and (on a GPU) the real thing.

Notebooks are not importable, so compact copies of the notebook's ``format_limits``, ``DynamicLossScaler`` and
``round_to_tf32`` live here; keep them in step with notebooks/07_mixed_precision.py.
"""

import math
import os

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


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


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


# ------------------------------------------------------------------------------------------------------- TF32
def test_round_to_tf32_keeps_ten_mantissa_bits_like_float16():
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 100
    r = round_to_tf32(x)
    assert (r.view(torch.int32) & 0x1FFF == 0).all()                          # the 13 low bits are cleared
    assert ((r - x).abs() <= x.abs() * 2.0**-11).all()                        # rounded, not truncated
    # inside float16's range the same 10 bits: equal to float16 rounding, except at exact ties (float16 rounds
    # them to even, the emulation away from zero)
    ties = (x.view(torch.int32) & 0x1FFF) == 0x1000
    assert torch.equal(r[~ties], x[~ties].half().float())
    assert round_to_tf32(torch.tensor([1 + 2.0**-11])).item() == 1 + 2.0**-10   # a tie rounds away from zero
    assert round_to_tf32(torch.tensor([1e30])).item() == pytest.approx(1e30, rel=2.0**-11)   # float32's range


@pytest.mark.skipif(os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE") is not None,
                    reason="TORCH_ALLOW_TF32_CUBLAS_OVERRIDE forces TF32 on in this environment")
def test_tf32_switches_round_trip_as_notebooks_07_and_10_use_them():
    """allow_tf32 = True is precision "high"; going back through set_float32_matmul_precision never leaves the
    mixed legacy/new state in which get_float32_matmul_precision raises (torch 2.9+)."""
    saved = torch.get_float32_matmul_precision()
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert torch.get_float32_matmul_precision() == "high"
        torch.set_float32_matmul_precision("highest")
        assert torch.backends.cuda.matmul.allow_tf32 is False
        for precision in ("high", "highest", "high"):                     # notebook 07's timing loop
            torch.set_float32_matmul_precision(precision)
            assert torch.backends.cuda.matmul.allow_tf32 is (precision == "high")
    finally:
        torch.set_float32_matmul_precision(saved)
    assert torch.get_float32_matmul_precision() == saved


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
                    reason="needs a CUDA GPU with TF32 (Ampere or newer)")
@pytest.mark.skipif(os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE") is not None,
                    reason="TORCH_ALLOW_TF32_CUBLAS_OVERRIDE forces TF32 on in this environment")
def test_tf32_matmul_error_on_cuda_is_float16_like():
    """Notebook 07, section 6: with TF32 on, a float32 product's error against float64 is float16-like."""
    gen = torch.Generator().manual_seed(0)
    A64 = torch.randn(1024, 1024, generator=gen, dtype=torch.float64).cuda()
    B64 = torch.randn(1024, 1024, generator=gen, dtype=torch.float64).cuda()
    C64 = A64 @ B64
    A, B = A64.float(), B64.float()

    def rel_error(C):
        return ((C.double() - C64).norm() / C64.norm()).item()

    saved = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        ieee = rel_error(A @ B)
        torch.set_float32_matmul_precision("high")
        tf32 = rel_error(A @ B)
    finally:
        torch.set_float32_matmul_precision(saved)
    emulated = rel_error(round_to_tf32(A).double() @ round_to_tf32(B).double())
    assert ieee < 1e-5 and 10 * ieee < tf32 < 1e-2
    assert 0.25 < tf32 / emulated < 4                    # the hardware rounds (or truncates) about as emulated
