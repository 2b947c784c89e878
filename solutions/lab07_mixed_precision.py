# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 07: mixed precision
#
# This lab goes with notebook 07. You compute what a floating-point format can represent, count what a cast to
# 16 bits loses, write dynamic loss scaling yourself, and write a mixed-precision training step that runs on
# any device. PyTorch (`torch.finfo`, `torch.amp.GradScaler`, `dlcourse.fit(amp=True)`) checks each one.
#
# **Learning goals.** After this lab you can
# - derive a format's largest value, smallest normal and subnormal values and machine epsilon from its bit
#   layout;
# - count the gradients that flush to zero or overflow in a 16-bit format, and choose a loss scale;
# - implement dynamic loss scaling (scale, unscale, inf/NaN check, skipped step, backoff, growth) that behaves
#   exactly like `torch.amp.GradScaler`;
# - write a device-agnostic `torch.autocast` training step, with or without a `GradScaler`;
# - predict how much activation memory autocast saves, and measure it.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab07_mixed_precision.ipynb` tells you what passes.
#
# **Time.** About 70–100 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 12 in all: float formats 2, underflow and overflow 2, dynamic loss scaler 3, autocast training
# step 3, predicting the memory autocast saves 2.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dlcourse
import dlcourse.memory
from dlcourse.grading.checks import check_close, check_equal, check_prediction, forbid

cfg = dlcourse.setup(seed=0)
# Tests of from-scratch code switch the library versions off while they call yours.
FINFO = ((torch, "finfo"), (np, "finfo"))
NO_FINFO = "compute the limits from the bit counts: torch.finfo and np.finfo are switched off in this test"
GRAD_SCALER = ((torch.amp, "GradScaler"), (torch.amp.grad_scaler, "GradScaler"),
               (torch.cuda.amp, "GradScaler"), (torch, "_amp_foreach_non_finite_check_and_unscale_"),
               (torch, "_amp_update_scale_"))
NO_GRAD_SCALER = ("write the scaler yourself: torch.amp.GradScaler and its internal functions are switched "
                  "off while the tests call your class")

# %% [markdown] nbgrader={"grade": false, "grade_id": "formats-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: a float format from its bit layout (2 points)
#
# A binary float with $e$ exponent bits and $m$ mantissa bits stores a sign, an exponent field $E$ (an
# unsigned integer of $e$ bits) and a fraction $f$ of $m$ bits, with the exponent bias $b = 2^{e-1} - 1$:
#
# - $E$ all ones is reserved for infinity and NaN;
# - $1 \le E \le 2^e - 2$ encodes the *normal* number $\pm 1.f \times 2^{E - b}$ (binary digits $1.f$);
# - $E = 0$ encodes zero and the *subnormal* numbers $\pm 0.f \times 2^{1 - b}$.
#
# From these rules alone, write `float_format(exp_bits, mantissa_bits)` returning a dict of Python floats: the
# largest finite value `"max"`, the smallest positive normal value `"smallest_normal"`, the smallest positive
# value of all `"smallest_subnormal"`, and `"eps"`, the distance from 1 to the next larger number. float16
# is `(5, 10)`, bfloat16 `(8, 7)`, float32 `(8, 23)`. `torch.finfo` and `np.finfo` are switched off while the
# tests call your function.

# %% nbgrader={"grade": false, "grade_id": "formats-answer", "locked": false, "schema_version": 3, "solution": true}
def float_format(exp_bits: int, mantissa_bits: int) -> dict[str, float]:
    """Range and precision of an IEEE-style binary float with ``exp_bits`` exponent and ``mantissa_bits``
    fraction bits: {"max", "smallest_normal", "smallest_subnormal", "eps"}, each a Python float."""
    ### BEGIN SOLUTION
    bias = 2 ** (exp_bits - 1) - 1
    return {
        "max": (2.0 - 2.0 ** -mantissa_bits) * 2.0 ** bias,
        "smallest_normal": 2.0 ** (1 - bias),
        "smallest_subnormal": 2.0 ** (1 - bias - mantissa_bits),
        "eps": 2.0 ** -mantissa_bits,
    }
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "formats-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _limits(exp_bits, mantissa_bits):
    """Your float_format's four numbers as a list of floats [max, smallest normal, smallest subnormal, eps]."""
    with forbid(FINFO, NO_FINFO):
        d = float_format(exp_bits, mantissa_bits)
    return [float(d[k]) for k in ("max", "smallest_normal", "smallest_subnormal", "eps")]


_fp16 = _limits(5, 10)
check_close("float16 (5, 10): max", _fp16[0], expected=torch.finfo(torch.float16).max, rtol=1e-12, atol=0,
            hint="max = (2 - 2**-m) * 2**bias with bias = 2**(e-1) - 1: for float16 that is 65504")
check_close("float16 (5, 10): smallest normal and eps", [_fp16[1], _fp16[3]],
            expected=[torch.finfo(torch.float16).smallest_normal, torch.finfo(torch.float16).eps], rtol=1e-12,
            atol=0, hint="smallest normal = 2**(1 - bias); eps = 2**-m")
check_close("float16 (5, 10): smallest subnormal", _fp16[2],
            expected=torch.finfo(torch.float16).smallest_normal * torch.finfo(torch.float16).eps, rtol=1e-12,
            atol=0, hint="the smallest subnormal has only the last fraction bit set: 2**(1 - bias - m)")
check_close("bfloat16 (8, 7): all four", _limits(8, 7),
            expected=[torch.finfo(torch.bfloat16).max, torch.finfo(torch.bfloat16).smallest_normal,
                      torch.finfo(torch.bfloat16).smallest_normal * torch.finfo(torch.bfloat16).eps,
                      torch.finfo(torch.bfloat16).eps], rtol=1e-12, atol=0,
            hint="bfloat16 has float32's 8 exponent bits (bias 127) and 7 mantissa bits")
print("float_format: visible tests passed")

### BEGIN HIDDEN TESTS
check_close("float32 (8, 23) and float64 (11, 52): all four", [_limits(8, 23), _limits(11, 52)],
            expected=[[torch.finfo(_t).max, torch.finfo(_t).smallest_normal,
                       torch.finfo(_t).smallest_normal * torch.finfo(_t).eps, torch.finfo(_t).eps]
                      for _t in (torch.float32, torch.float64)], rtol=1e-12, atol=0,
            hint="float32 is (8, 23) and float64 (11, 52); the formulas are the same for every format")
check_close("float8_e5m2 (5, 2): all four", _limits(5, 2),
            expected=[torch.finfo(torch.float8_e5m2).max, torch.finfo(torch.float8_e5m2).smallest_normal,
                      torch.finfo(torch.float8_e5m2).smallest_normal * torch.finfo(torch.float8_e5m2).eps,
                      torch.finfo(torch.float8_e5m2).eps], rtol=1e-12, atol=0,
            hint="an 8-bit float with 5 exponent and 2 mantissa bits follows the same IEEE rules")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "underflow-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: what a cast to 16 bits loses, and a safe loss scale (2 points)
#
# Multiplying the loss by a scale $S$ multiplies every gradient by $S$. In a 16-bit format, too small an $S$
# lets small gradients **flush** to zero; too large an $S$ makes large ones **overflow** to infinity.
#
# 1. `cast_report(g, dtype, loss_scale=1.0)`: cast `g * loss_scale` (a float32 tensor of any shape) to `dtype`
#    and return a dict with two Python ints: `"flushed"`, the number of entries that were **non-zero** in `g`
#    but are exactly 0 after the cast (entries that were already 0 do not count), and `"overflowed"`, the
#    number of entries that are ±inf after the cast. Do not modify `g`.
# 2. `largest_safe_scale(g, dtype)`: the largest power of two $S = 2^k$, with $k$ an integer from $-64$ to
#    $64$, for which `(g * S).to(dtype)` contains no infinity, as a Python float, for any `dtype` that has an
#    infinity. `g` is finite and not all zero.

# %% nbgrader={"grade": false, "grade_id": "underflow-answer", "locked": false, "schema_version": 3, "solution": true}
def cast_report(g: torch.Tensor, dtype: torch.dtype, loss_scale: float = 1.0) -> dict[str, int]:
    """{"flushed": non-zero entries of g that become 0, "overflowed": entries that become ±inf}, when g * loss_scale
    (any shape, float32) is cast to dtype."""
    ### BEGIN SOLUTION
    cast = (g * loss_scale).to(dtype)
    return {"flushed": int(((g != 0) & (cast == 0)).sum()), "overflowed": int(cast.isinf().sum())}
    ### END SOLUTION


def largest_safe_scale(g: torch.Tensor, dtype: torch.dtype) -> float:
    """The largest 2**k (integer k in [-64, 64]) such that (g * 2**k).to(dtype) has no inf, as a Python float."""
    ### BEGIN SOLUTION
    for k in range(64, -65, -1):
        if not (g * 2.0 ** k).to(dtype).isinf().any():
            return 2.0 ** k
    raise ValueError("no power of two in [2**-64, 2**64] keeps g finite")
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "underflow-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _gradients_like(seed, n=20_000):
    """Gradient-like float32 values: random signs, magnitudes over many powers of ten, some exact zeros."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(n, generator=gen) * torch.exp(torch.randn(n, generator=gen) * 3.0 - 9.0)
    g[torch.rand(n, generator=gen) < 0.05] = 0.0   # e.g. behind a ReLU
    return g


_g = _gradients_like(0)
_g_before = _g.clone()
_reports = [cast_report(_g, torch.float16), cast_report(_g, torch.bfloat16)]
check_equal("float16 and bfloat16, loss scale 1: flushed and overflowed", _reports,
            expected=[{"flushed": int(((_g != 0) & (_g.to(_t) == 0)).sum()),
                       "overflowed": int(_g.to(_t).isinf().sum())} for _t in (torch.float16, torch.bfloat16)],
            weight=2,
            hint="count entries with g != 0 whose cast is exactly 0, and entries whose cast is inf; return Python "
                 "ints (int(...)) in a dict with the keys 'flushed' and 'overflowed'")
check_equal("float16 with loss scales 2**16 and 2**30", [cast_report(_g, torch.float16, 2.0**16),
                                                         cast_report(_g, torch.float16, 2.0**30)],
            expected=[{"flushed": int(((_g != 0) & ((_g * _s).to(torch.float16) == 0)).sum()),
                       "overflowed": int((_g * _s).to(torch.float16).isinf().sum())} for _s in (2.0**16, 2.0**30)],
            hint="multiply by loss_scale before casting; a larger scale flushes fewer values and overflows more")
check_close("cast_report leaves g unchanged", _g, expected=_gradients_like(0), rtol=0, atol=0,
            hint="compute g * loss_scale into a new tensor; don't scale g in place")
check_close("largest safe scale for float16 and bfloat16",
            [largest_safe_scale(_g, torch.float16), largest_safe_scale(_g, torch.bfloat16)],
            expected=[max(2.0**_k for _k in range(-64, 65) if not (_g * 2.0**_k).to(_t).isinf().any())
                      for _t in (torch.float16, torch.bfloat16)], rtol=0, atol=0, weight=2,
            hint="return the largest 2**k (k from -64 to 64) whose (g * 2**k).to(dtype) has no inf; for "
                 "bfloat16, whose range is float32's, that is 2**64 here")
print("cast_report, largest_safe_scale: visible tests passed")

### BEGIN HIDDEN TESTS
# the gradients of a real (seeded) MLP on the digits, a 2-D tensor
torch.manual_seed(1)
_mlp = dlcourse.models.mlp(64, [32], 10)
_X, _y = (t[:256] for t in dlcourse.data.digits(flatten=True, seed=0).train.tensors)
F.cross_entropy(_mlp(_X), _y).backward()
_w = _mlp[1].weight.grad.clone()                                   # (32, 64)
check_equal("a real MLP's weight gradient (2-D) in float16 with scales 1, 2**8, 2**24",
            [cast_report(_w, torch.float16, _s) for _s in (1.0, 2.0**8, 2.0**24)],
            expected=[{"flushed": int(((_w != 0) & ((_w * _s).to(torch.float16) == 0)).sum()),
                       "overflowed": int((_w * _s).to(torch.float16).isinf().sum())}
                      for _s in (1.0, 2.0**8, 2.0**24)],
            hint="cast_report must work on tensors of any shape")
check_equal("negative overflow counts too, zeros never flush", cast_report(torch.tensor([-1e6, 0.0, 0.0, 1e-9]),
                                                                          torch.float16),
            expected={"flushed": 1, "overflowed": 1},
            hint="-1e6 becomes -inf in float16 (count it), the zeros were zero already (don't count them), 1e-9 "
                 "flushes")
check_close("largest safe scale: a real gradient, float8_e5m2, and a tiny gradient",
            [largest_safe_scale(_w, torch.float16), largest_safe_scale(_g, torch.float8_e5m2),
             largest_safe_scale(torch.tensor([3e-12, -1e-14]), torch.float16)],
            expected=[max(2.0**_k for _k in range(-64, 65) if not (_w * 2.0**_k).to(torch.float16).isinf().any()),
                      max(2.0**_k for _k in range(-64, 65)
                          if not (_g * 2.0**_k).to(torch.float8_e5m2).isinf().any()),
                      max(2.0**_k for _k in range(-64, 65)
                          if not (torch.tensor([3e-12, -1e-14]) * 2.0**_k).to(torch.float16).isinf().any())],
            rtol=0, atol=0,
            hint="largest_safe_scale must search every k from 64 down to -64 and work for any dtype with an inf")
check_equal("largest_safe_scale returns a Python float", type(largest_safe_scale(_g, torch.float16)).__name__,
            expected="float", hint="return 2.0 ** k (a float), not a tensor or an int")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "scaler-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: dynamic loss scaling (3 points)
#
# Write `DynamicLossScaler`, a from-scratch version of `torch.amp.GradScaler` with the same methods, so that a
# training loop can use either:
#
# ```python
# loss = ...                          # the float32 loss (under autocast)
# optimizer.zero_grad()
# scaler.scale(loss).backward()       # gradients of S * loss
# scaler.step(optimizer)              # unscale, check, step or skip
# scaler.update()                     # adjust S for the next step
# ```
#
# - `__init__(init_scale, growth_factor, backoff_factor, growth_interval)`: the scale $S$ starts at
#   `init_scale`, the count of consecutive good steps at 0.
# - `get_scale()`: the current $S$ as a Python float. `scale(loss)`: return `loss * S`.
# - `unscale_(optimizer)`: divide the `.grad` of every parameter of every parameter group by $S$ (in place;
#   skip parameters whose `.grad` is `None`) and remember whether any gradient contained inf or NaN.
# - `step(optimizer)`: call `unscale_` unless it was already called since the last `update()` (a user may call
#   it first, e.g. to clip gradients); then call `optimizer.step()` only if no inf/NaN was found.
# - `update()`: after a step with inf/NaN, multiply $S$ by `backoff_factor` and set the count of good steps
#   back to zero. Otherwise add one to the count; when it reaches `growth_interval`, multiply $S$ by
#   `growth_factor` and set the count back to zero. Then forget the inf/NaN flag, ready for the next step.
#
# The tests train small models with your scaler and with `torch.amp.GradScaler` on the same seeded data, with
# `inf` and `NaN` planted in gradients at some steps, and compare the scale before every step, which steps
# were skipped, and the final weights. `GradScaler` and its internal functions are switched off while your
# class runs.

# %% nbgrader={"grade": false, "grade_id": "scaler-answer", "locked": false, "schema_version": 3, "solution": true}
class DynamicLossScaler:
    """Dynamic loss scaling with torch.amp.GradScaler's interface: scale, unscale_, step, update, get_scale."""

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000) -> None:
        ### BEGIN SOLUTION
        self.scale_factor = float(init_scale)
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval = growth_interval
        self.good_steps = 0
        self.found_inf = None          # None: not unscaled yet in this iteration
        ### END SOLUTION

    def get_scale(self) -> float:
        """The current loss scale S."""
        ### BEGIN SOLUTION
        return self.scale_factor
        ### END SOLUTION

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """loss * S."""
        ### BEGIN SOLUTION
        return loss * self.scale_factor
        ### END SOLUTION

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide every gradient by S in place, and note whether any is inf or NaN."""
        ### BEGIN SOLUTION
        found_inf = False
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        found_inf = found_inf or not bool(torch.isfinite(p.grad).all())
                        p.grad.mul_(1.0 / self.scale_factor)
        self.found_inf = found_inf
        ### END SOLUTION

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Unscale (unless already done), then optimizer.step() only if every gradient is finite."""
        ### BEGIN SOLUTION
        if self.found_inf is None:
            self.unscale_(optimizer)
        if not self.found_inf:
            optimizer.step()
        ### END SOLUTION

    def update(self) -> None:
        """Back off after inf/NaN; grow after growth_interval good steps in a row."""
        ### BEGIN SOLUTION
        if self.found_inf:
            self.scale_factor *= self.backoff_factor
            self.good_steps = 0
        else:
            self.good_steps += 1
            if self.good_steps == self.growth_interval:
                self.scale_factor *= self.growth_factor
                self.good_steps = 0
        self.found_inf = None
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "scaler-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def _scaled_run(make_scaler, num_steps, plant, seed=0, clip=None, frozen=False):
    """Train a small seeded classifier for num_steps with the scaler make_scaler() returns; plant[step] is the
    value ("inf" or "nan") written into one gradient at that step. clip: unscale_ explicitly, then clip the
    gradient norm. frozen: the first layer is frozen (its .grad stays None) and the head has two parameter groups.
    Returns [scale before each step, skipped? per step, final parameters]."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    if frozen:
        model[0].requires_grad_(False)
        groups = [{"params": [model[2].weight]}, {"params": [model[2].bias], "lr": 0.01}]
    else:
        groups = model.parameters()
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    scaler = make_scaler()
    scales, skipped = [], []
    for step in range(num_steps):
        X = torch.randn(8, 6, generator=gen)
        y = torch.randint(0, 3, (8,), generator=gen)
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        if step in plant:
            with torch.no_grad():
                model[2].weight.grad[1, 2] = float(plant[step])
        if clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        before = [p.detach().clone() for p in model.parameters()]
        scales.append(float(scaler.get_scale()))
        scaler.step(optimizer)
        scaler.update()
        skipped.append(all(torch.equal(b, p) for b, p in zip(before, model.parameters())))
    return [scales, skipped, [p.detach().clone() for p in model.parameters()]]


def _ours(num_steps, plant, **kwargs):
    """_scaled_run with your DynamicLossScaler (GradScaler switched off meanwhile)."""
    settings = {k: kwargs.pop(k) for k in ("init_scale", "growth_factor", "backoff_factor", "growth_interval")
                if k in kwargs}
    with forbid(GRAD_SCALER, NO_GRAD_SCALER):
        return _scaled_run(lambda: DynamicLossScaler(**settings), num_steps, plant, **kwargs)


# 1. the pieces: scale() and unscale_()
with forbid(GRAD_SCALER, NO_GRAD_SCALER):
    _s = DynamicLossScaler(init_scale=1024.0)
    _start = [float(_s.get_scale()), _s.scale(torch.tensor(1.5))]
check_close("get_scale() starts at init_scale; scale(1.5) = 1.5 * 1024", _start,
            expected=[1024.0, torch.tensor(1536.0)],
            hint="keep init_scale as a float and return loss * scale from scale()")

torch.manual_seed(0)
_lin = nn.Linear(4, 2)
_Xs, _ys = torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 1, 0, 1])
_opt = torch.optim.SGD(_lin.parameters(), lr=0.1)
with forbid(GRAD_SCALER, NO_GRAD_SCALER):
    _s = DynamicLossScaler(init_scale=2.0**12)
    _s.scale(F.cross_entropy(_lin(_Xs), _ys)).backward()
    _s.unscale_(_opt)
check_close("unscale_ divides every gradient by the scale", [_lin.weight.grad, _lin.bias.grad],
            expected=list(torch.autograd.grad(F.cross_entropy(_lin(_Xs), _ys), [_lin.weight, _lin.bias])),
            rtol=1e-5, atol=1e-8,
            hint="after unscale_ the .grad of every parameter should equal the gradient of the unscaled loss: "
                 "multiply each grad by 1 / scale in place")

# 2. 40 steps against torch.amp.GradScaler: a too-large start, planted inf and NaN, growth every 5 good steps
_settings = dict(init_scale=2.0**10, growth_factor=2.0, backoff_factor=0.5, growth_interval=5)
_plant = {3: "inf", 4: "inf", 11: "nan", 25: "inf"}
_run = _ours(40, _plant, **_settings)
check_close("the scale before each of 40 steps", _run[0],
            expected=_scaled_run(lambda: torch.amp.GradScaler("cpu", **_settings), 40, _plant)[0], rtol=1e-7,
            atol=0, weight=2,
            hint="after an inf/NaN step multiply the scale by backoff_factor and reset the good-step count; after "
                 "growth_interval good steps in a row multiply it by growth_factor and reset the count")
check_equal("which steps were skipped", _run[1],
            expected=_scaled_run(lambda: torch.amp.GradScaler("cpu", **_settings), 40, _plant)[1],
            hint="a step whose gradients contain inf or NaN (torch.isfinite) must not call optimizer.step(); "
                 "every other step must")
check_close("the weights after 40 steps", _run[2],
            expected=_scaled_run(lambda: torch.amp.GradScaler("cpu", **_settings), 40, _plant)[2], rtol=1e-6,
            atol=1e-7, weight=2,
            hint="the weights should match GradScaler's run: unscale every gradient before the optimizer step, "
                 "and skip the step entirely when a gradient is not finite")
print("DynamicLossScaler: visible tests passed")

### BEGIN HIDDEN TESTS
_settings = dict(init_scale=3.0 * 2.0**8, growth_factor=4.0, backoff_factor=0.25, growth_interval=3)
_plant = {0: "nan", 7: "inf", 8: "nan", 9: "inf", 20: "inf"}
check_close("other settings (init 768, growth 4, backoff 0.25, interval 3): scales, skipped, weights",
            _ours(30, _plant, seed=1, **_settings),
            expected=_scaled_run(lambda: torch.amp.GradScaler("cpu", **_settings), 30, _plant, seed=1),
            rtol=1e-6, atol=1e-7, weight=2,
            hint="use the constructor's init_scale, growth_factor, backoff_factor and growth_interval, not fixed "
                 "numbers")
check_close("a frozen layer (.grad None) and two parameter groups", _ours(20, {5: "inf"}, seed=2, frozen=True,
                                                                          growth_interval=4),
            expected=_scaled_run(lambda: torch.amp.GradScaler("cpu", growth_interval=4), 20, {5: "inf"}, seed=2,
                                 frozen=True),
            rtol=1e-6, atol=1e-7,
            hint="unscale_ must visit every parameter group and skip parameters whose .grad is None")
check_close("unscale_ called before step (gradient clipping): no double unscaling",
            _ours(20, {6: "inf"}, seed=3, clip=0.5, growth_interval=4),
            expected=_scaled_run(lambda: torch.amp.GradScaler("cpu", growth_interval=4), 20, {6: "inf"}, seed=3,
                                 clip=0.5),
            rtol=1e-6, atol=1e-7,
            hint="when unscale_ was already called in this iteration, step() must not unscale again; update() "
                 "clears that state for the next iteration")
check_close("default settings: 2**16 start, no growth within 10 steps", _ours(10, {2: "inf"}, seed=4),
            expected=_scaled_run(lambda: torch.amp.GradScaler("cpu"), 10, {2: "inf"}, seed=4), rtol=1e-6,
            atol=1e-7, hint="the defaults are init_scale=2**16, growth_factor=2, backoff_factor=0.5, "
                            "growth_interval=2000")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "amp-step-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: a mixed-precision training step for any device (3 points)
#
# Write `amp_train_step(model, optimizer, X, y, dtype, scaler=None)`: one training step with the
# cross-entropy loss on the batch `(X, y)`, in mixed precision, on whatever device `X` is on. It must
#
# - compute the forward pass and the loss under `torch.autocast` in `dtype` on `X`'s device, and with no
#   autocast at all when `dtype` is `torch.float32`;
# - keep the weights float32 (never convert the model: autocast casts per operation);
# - with a `scaler` (a `torch.amp.GradScaler`), let the scaler do its job: gradients of the scaled loss, a step
#   that is skipped when they overflow, the scale updated; without one, plain backpropagation and a step;
# - make exactly one optimizer step per call, from fresh gradients, and return the unscaled loss as a
#   Python float.
#
# The same function then runs bfloat16 on a CPU or a recent GPU, and float16 with a `GradScaler` on a GPU
# without bfloat16 tensor cores (`dlcourse.config.amp_dtype` picks). The tests train an MLP on the digits
# with your step (bfloat16 on the CPU; hidden: float16 with a `GradScaler`, and float32) and compare with
# `dlcourse.fit(..., amp=True)` on the same batches.

# %% nbgrader={"grade": false, "grade_id": "amp-step-answer", "locked": false, "schema_version": 3, "solution": true}
def amp_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, X: torch.Tensor, y: torch.Tensor,
                   dtype: torch.dtype = torch.bfloat16, scaler: torch.amp.GradScaler | None = None) -> float:
    """One training step on the batch X (B, ...) with labels y (B,) under autocast in ``dtype``; returns the loss."""
    ### BEGIN SOLUTION
    with torch.autocast(device_type=X.device.type, dtype=dtype, enabled=dtype != torch.float32):
        y_hat = model(X)                   # (B, C), low precision
        loss = F.cross_entropy(y_hat, y)   # float32
    optimizer.zero_grad()
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "amp-step-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
_digits = dlcourse.data.digits(flatten=True, seed=0)
_data = TensorDataset(*(t[:512] for t in _digits.train.tensors))   # 8 batches of 64 flattened digits
_loader = DataLoader(_data, batch_size=64, shuffle=False)


def _start_model(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return dlcourse.models.mlp(64, [64], 10)


def _step_run(dtype, num_epochs=2, scaler=None, seed=0):
    """Your amp_train_step over _loader for num_epochs: [per-step losses, final parameters, parameter dtypes]."""
    model = _start_model(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = [amp_train_step(model, optimizer, X, y, dtype, scaler) for _ in range(num_epochs) for X, y in _loader]
    return [losses, [p.detach().clone() for p in model.parameters()], [str(p.dtype) for p in model.parameters()]]


def _fit_run(dtype, num_epochs=2, seed=0):
    """dlcourse.fit(amp=...) over the same batches from the same start: [train loss per epoch, final params]."""
    model = _start_model(seed)
    history = dlcourse.fit(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), _loader,
                           num_epochs=num_epochs, amp=dtype != torch.float32, amp_dtype=dtype, progress=False)
    return [history["train_loss"], [p.detach().clone() for p in model.parameters()]]


def _autocast_loss(seed, dtype):
    """The loss of the first batch under autocast in dtype, from the starting weights."""
    X, y = next(iter(_loader))
    with torch.autocast("cpu", dtype=dtype):
        return F.cross_entropy(_start_model(seed)(X), y).item()


_bf16 = _step_run(torch.bfloat16)
check_close("the first loss is a float computed under bfloat16 autocast", _bf16[0][0],
            expected=_autocast_loss(0, torch.bfloat16), rtol=1e-6, atol=0,
            hint="run model(X) and F.cross_entropy inside torch.autocast(device_type=X.device.type, dtype=dtype) "
                 "and return loss.item() (a float32 forward pass gives a slightly different loss)")
check_close("the mean loss of each epoch equals dlcourse.fit(amp=True)'s train_loss",
            [sum(_bf16[0][:8]) / 8, sum(_bf16[0][8:]) / 8], expected=_fit_run(torch.bfloat16)[0], rtol=1e-5,
            atol=0, hint="each call should make exactly one optimizer step on its batch, with fresh gradients "
                         "(optimizer.zero_grad() before backward)")
check_close("the weights after 2 epochs equal dlcourse.fit(amp=True)'s", _bf16[1],
            expected=_fit_run(torch.bfloat16)[1], rtol=1e-6, atol=1e-7, weight=2,
            hint="forward and loss under autocast, then zero_grad, backward and step outside it")
check_equal("the parameters stay float32", _bf16[2], expected=["torch.float32"] * 4,
            hint="don't convert the model to bfloat16: autocast keeps float32 weights and casts per operation")
print("amp_train_step: visible tests passed")

### BEGIN HIDDEN TESTS
_fp16 = _step_run(torch.float16, scaler=torch.amp.GradScaler("cpu"))
check_close("float16 with a GradScaler: weights equal dlcourse.fit(amp=True, amp_dtype=float16)'s", _fp16[1],
            expected=_fit_run(torch.float16)[1], rtol=1e-6, atol=1e-7, weight=2,
            hint="with a scaler: scaler.scale(loss).backward(), scaler.step(optimizer), scaler.update()")
_model = _start_model(0)
_optimizer = torch.optim.SGD(_model.parameters(), lr=0.1, momentum=0.9)
_X0, _y0 = next(iter(_loader))
_first = amp_train_step(_model, _optimizer, _X0, _y0, torch.float16, torch.amp.GradScaler("cpu", init_scale=2.0**40))
check_close("a scale so large that float16 overflows: the step is skipped, the loss is unscaled",
            [[p.detach().clone() for p in _model.parameters()], _first],
            expected=[[p.detach().clone() for p in _start_model(0).parameters()],
                      _autocast_loss(0, torch.float16)], rtol=1e-6, atol=0,
            hint="let scaler.step(optimizer) decide whether to step (it skips on inf/NaN), and return the loss "
                 "itself, not the scaled loss")
_fp32 = _step_run(torch.float32)
check_close("float32: no autocast, same as dlcourse.fit without amp", [_fp32[0][0], _fp32[1]],
            expected=[F.cross_entropy(_start_model(0)(_X0), _y0).item(), _fit_run(torch.float32)[1]], rtol=1e-5,
            atol=1e-6, hint="with dtype=torch.float32 run without autocast (torch.autocast(..., enabled=False))")
check_equal("returns a Python float", type(_first).__name__, expected="float", hint="return loss.item()")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "memory-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: predict the activation memory autocast saves, then measure it (2 points)
#
# 16-bit numbers take half the bytes of float32 ones, so autocast is often said to halve activation memory.
# Predict what it really saves for an MLP, before measuring.
#
# The model is `dlcourse.models.mlp(in_features, hidden, num_classes)`: `nn.Linear` layers (with bias) of
# sizes `in_features -> hidden[0] -> ... -> hidden[-1] -> num_classes`, each but the last followed by
# `nn.ReLU`. A float32 batch `X` of shape `(batch_size, in_features)`, which requires no gradient, goes
# through it once: under `torch.autocast("cpu", dtype=dtype)` for bfloat16 and float16, without autocast for
# float32. The measurement is `dlcourse.memory.saved_tensor_bytes(lambda: model(X),
# exclude=model.parameters())`: the bytes of the distinct tensors autograd keeps for the backward pass, not
# counting the model's own parameters (a 16-bit copy of a parameter is another tensor, and counts).
#
# Write `autocast_saved_bytes(batch_size, in_features, hidden, num_classes, dtype)` for `dtype` float32,
# bfloat16 or float16, returning an `int`. Think about what each layer's backward pass needs, in which dtype
# it exists, whether two layers keep the same tensor, and which gradients the backward pass computes at all.
# **Tolerance:** within 2 % of the measured bytes, for the arguments below and for others the grader tries.
# `dlcourse.memory` and autograd's saved-tensor hooks are switched off while your function runs.

# %% nbgrader={"grade": false, "grade_id": "memory-answer", "locked": false, "schema_version": 3, "solution": true}
def autocast_saved_bytes(batch_size: int, in_features: int, hidden: list, num_classes: int,
                         dtype: torch.dtype) -> int:
    """Bytes autograd saves for backward in the forward pass of the MLP under autocast in ``dtype``."""
    ### BEGIN SOLUTION
    size = 4 if dtype == torch.float32 else 2
    # each Linear keeps its input (the first one: X, cast by autocast; the others: the ReLU's output, which the
    # ReLU keeps too, the same tensor): batch_size x width elements of the compute dtype
    activations = size * batch_size * (in_features + sum(hidden))
    if dtype == torch.float32:
        return activations                     # the weights it keeps are the parameters themselves
    # under autocast a Linear also keeps the 16-bit copy of its weight, but only where the gradient of its
    # input is needed: not in the first layer, whose input X needs no gradient
    widths = list(hidden) + [num_classes]
    return activations + size * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "memory-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
MEASURING = ((dlcourse.memory, "saved_tensor_bytes"), (dlcourse.memory, "saved_tensors"),
             (torch.autograd.graph.saved_tensors_hooks, "__enter__"))
NO_MEASURING = "work it out from the sizes: the memory measurements are switched off while your function runs"


def _predicted(*args):
    with forbid(MEASURING, NO_MEASURING):
        return autocast_saved_bytes(*args)


def _measured(batch_size, in_features, hidden, num_classes, dtype):
    """What autograd saves in the MLP's forward pass under autocast in dtype (float32: no autocast)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = dlcourse.models.mlp(in_features, hidden, num_classes)
        X = torch.randn(batch_size, in_features)

    def forward():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            return model(X)
    return dlcourse.memory.saved_tensor_bytes(forward, exclude=model.parameters())


check_prediction("float32: 32 examples, 20 -> [64, 48] -> 10", _predicted(32, 20, [64, 48], 10, torch.float32),
                 expected=_measured(32, 20, [64, 48], 10, torch.float32), rtol=0.02,
                 hint="a Linear keeps its input for the gradient of its weight, a ReLU its output; count a tensor "
                      "two layers keep once")
check_prediction("bfloat16 autocast: the same MLP and batch", _predicted(32, 20, [64, 48], 10, torch.bfloat16),
                 expected=_measured(32, 20, [64, 48], 10, torch.bfloat16), rtol=0.02,
                 hint="autocast hands each Linear 16-bit copies of its input and of its weight; the copy of a weight "
                      "is a new tensor, kept where the backward pass needs it")
print("autocast_saved_bytes: visible tests passed")

### BEGIN HIDDEN TESTS
check_prediction("bfloat16, one example: 1, 100 -> [200] -> 10", _predicted(1, 100, [200], 10, torch.bfloat16),
                 expected=_measured(1, 100, [200], 10, torch.bfloat16), rtol=0.02,
                 hint="with one example the weight copies dominate")
check_prediction("float16, three hidden layers: 7, 9 -> [30, 20, 10] -> 5",
                 _predicted(7, 9, [30, 20, 10], 5, torch.float16),
                 expected=_measured(7, 9, [30, 20, 10], 5, torch.float16), rtol=0.02,
                 hint="float16 and bfloat16 both take 2 bytes a number")
check_prediction("bfloat16, a large batch: 512, 64 -> [128] -> 10", _predicted(512, 64, [128], 10, torch.bfloat16),
                 expected=_measured(512, 64, [128], 10, torch.bfloat16), rtol=0.02,
                 hint="the first layer's input X is kept as a 16-bit copy")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "memory-by-batch", "locked": true, "schema_version": 3, "solution": false}
# When does autocast come close to halving the activations? The measured ratio, bfloat16 / float32, for the
# MLP of the visible tests at growing batch sizes (a ratio above 1: autocast keeps *more* than float32):

# %% nbgrader={"grade": false, "grade_id": "memory-by-batch-print", "locked": true, "schema_version": 3, "solution": false}
for _batch in (1, 32, 1024, 8192):
    _ratio = _measured(_batch, 20, [64, 48], 10, torch.bfloat16) / _measured(_batch, 20, [64, 48], 10, torch.float32)
    print(f"batch {_batch:>5}: bfloat16 / float32 = {_ratio:.2f}")

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - A format's range and precision follow from its bit counts: max $(2 - 2^{-m}) 2^{b}$, smallest normal
#   $2^{1-b}$, smallest subnormal $2^{1-b-m}$, eps $2^{-m}$, with bias $b = 2^{e-1} - 1$.
# - A loss scale moves gradients through a 16-bit format's range: too small flushes them, too large overflows.
# - Dynamic loss scaling keeps the scale just below overflow: skip and back off on inf/NaN, grow after a run
#   of good steps. Written from scratch, it reproduces `torch.amp.GradScaler` step for step.
# - A mixed-precision step: forward and loss under `torch.autocast`, backward and step outside it, with a
#   `GradScaler` for float16; the weights stay float32.
# - Autocast halves the activations a layer keeps only when they outweigh the 16-bit weight copies it keeps
#   too: with a small batch it saves little, and with a single example it keeps more bytes than float32.
#
# ## Further exercises (not graded)
#
# 1. Extend `float_format` to `torch.float8_e4m3fn`, which has no infinity and only one NaN pattern. Which of
#    the four numbers change, and why?
# 2. Run `largest_safe_scale` on the gradients of notebook 07's CNN at the start and at the end of training.
#    How does the safe scale change as the loss falls?
# 3. Add `growth_factor`-free "static" loss scaling to your scaler (a fixed `S`). With float16 on a GPU, what
#    happens when `S` is chosen too large?
# 4. Make `amp_train_step` accept `clip_grad_norm`: unscale first (`scaler.unscale_(optimizer)`), then clip.
