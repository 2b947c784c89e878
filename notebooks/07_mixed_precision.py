# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 07 · Mixed precision
#
# Training in 16-bit floating point halves the bytes of every activation and, on hardware built for it, runs
# matrix products several times faster. It also changes which numbers exist: a 16-bit float has fewer exponent
# bits (a smaller range) or fewer mantissa bits (coarser steps), or both. This notebook measures what that
# costs and how the standard recipe avoids the cost: compute in 16 bits where it is safe (`torch.autocast`),
# keep the weights and their updates in 32 bits, and, for float16, scale the loss so that small gradients
# survive.
#
# **Learning goals**
# - Derive the range (largest value, smallest normal and subnormal value) and precision (machine epsilon) of
#   float32, float16 and bfloat16 from their bit layouts; check them against `torch.finfo` and by experiment.
# - Find where a real model's gradients underflow in float16 but not in bfloat16, and how a loss scale moves
#   them back into range.
# - Measure which operations `torch.autocast` runs in low precision on your device, and which it keeps in
#   float32.
# - Write dynamic loss scaling (scale, unscale, inf/NaN check, skipped step, backoff, growth) and match
#   `torch.amp.GradScaler` step for step.
# - Use the device-agnostic recipe (bfloat16 where the hardware computes it natively, float16 + `GradScaler`
#   otherwise), then `dlcourse.fit(..., amp=True)`.
# - Explain TF32, PyTorch's defaults for it (matmuls off, cuDNN convolutions on), switch it, and measure its
#   error against float64.
# - Measure the time and memory of a transformer's training step in float32 (TF32 off and on), bfloat16 and
#   float16 on the machine you run on.
#
# **Prerequisites:** notebook 01 (training loop, `dlcourse.fit`); notebook 03 helps
# (`dlcourse.models.SmallCNN`); notebook 06 (the GPT of section 7); binary numbers.
#
# **Time:** seconds at `smoke`; a minute or two at `small` on a laptop CPU; at `full`, on a GPU, about a
# minute (section 7 times a transformer with d_model 1024 and 4096 tokens per step; on a CPU that size would
# take many minutes). On Colab's T4 full scale runs too, with float16 as the recipe's choice: the T4 has
# neither bfloat16 tensor cores nor TF32, and section 7 shows what that means. The last cell prints how long
# this run took.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import math
import os
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import dlcourse
import dlcourse.memory

cfg = dlcourse.setup(seed=0)
device = cfg.device
t_start = time.perf_counter()
LOW = (torch.float16, torch.bfloat16)
NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def show_table(rows: list[tuple], header: tuple) -> None:
    """Print rows as an aligned text table."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def float32_mode() -> str:
    """What "float32" means for timings here: the TF32 switches on CUDA (section 6); nothing on a CPU."""
    return f"float32 with {dlcourse.config.tf32_status()}" if device.type == "cuda" else "no TF32 on a CPU"


# %% [markdown]
# ## 1. Three formats, bit by bit
# A binary floating-point number is stored as a sign bit, $e$ exponent bits and $m$ mantissa (fraction) bits.
# A *normal* number is $\pm 1.f \times 2^{E - \text{bias}}$, where $f$ is the $m$ fraction bits, $E$ the
# stored exponent and $\text{bias} = 2^{e-1} - 1$. The all-ones exponent is reserved for infinity and NaN; the
# all-zeros exponent for zero and the *subnormal* numbers $\pm 0.f \times 2^{1 - \text{bias}}$, which fill the
# gap between zero and the smallest normal number with ever fewer significant bits.
#
# | format | sign | exponent $e$ | mantissa $m$ |
# |---|---|---|---|
# | float32 | 1 | 8 | 23 |
# | float16 | 1 | 5 | 10 |
# | bfloat16 | 1 | 8 | 7 |
#
# bfloat16 is float32 with the last 16 mantissa bits cut off: the same range, far coarser steps. float16 keeps
# more mantissa bits but gives up three exponent bits: finer steps, far smaller range. From the layout alone:
# - largest finite value: the largest normal exponent ($2^e - 2$) with all fraction bits set, $(2 - 2^{-m})\,
#   2^{\text{bias}}$;
# - smallest normal value: $2^{1 - \text{bias}}$; smallest subnormal: $2^{1 - \text{bias} - m}$;
# - machine epsilon, the gap between 1 and the next number: $2^{-m}$.

# %%
FORMATS = {torch.float32: (8, 23), torch.float16: (5, 10), torch.bfloat16: (8, 7)}  # (exponent, mantissa)


def format_limits(exp_bits: int, mantissa_bits: int) -> dict[str, float]:
    """Range and precision of an IEEE-style binary format with these numbers of exponent and mantissa bits."""
    bias = 2 ** (exp_bits - 1) - 1
    return {
        "max": (2 - 2.0 ** -mantissa_bits) * 2.0 ** bias,
        "smallest_normal": 2.0 ** (1 - bias),
        "smallest_subnormal": 2.0 ** (1 - bias - mantissa_bits),
        "eps": 2.0 ** -mantissa_bits,
    }


rows = []
for dtype, (e, m) in FORMATS.items():
    ours, fi = format_limits(e, m), torch.finfo(dtype)
    assert ours["max"] == fi.max and ours["smallest_normal"] == fi.smallest_normal and ours["eps"] == fi.eps
    rows.append((NAMES[dtype], fi.bits, f"{ours['max']:.4g}", f"{ours['smallest_normal']:.4g}",
                 f"{ours['smallest_subnormal']:.4g}", f"{ours['eps']:.4g}", f"{m * math.log10(2):.1f}"))
show_table(rows, ("format", "bits", "max", "smallest normal", "smallest subnormal", "eps",
                  "decimal digits"))
print("\nmax, smallest normal and eps equal torch.finfo's for all three formats")

# %% [markdown]
# `torch.finfo` has no entry for the smallest subnormal, so check it by experiment: it must be representable
# (not zero), and half of it must round to zero. Every other row of the table is an experiment too, run in the
# format itself:

# %%
def experiments(dtype: torch.dtype) -> dict[str, bool]:
    """Each claim of the table above, tested with arithmetic in ``dtype``."""
    lim = format_limits(*FORMATS[dtype])
    t = lambda x: torch.tensor(x, dtype=dtype)   # noqa: E731  (a 0-dim tensor in this format)
    one, eps = t(1.0), lim["eps"]
    return {
        "1 + eps > 1": bool(one + eps > one),
        "1 + eps/2 == 1 (rounds back)": bool(one + eps / 2 == one),
        "max is finite": bool(torch.isfinite(t(lim["max"]))),
        "max * 2 == inf (overflow)": bool(t(lim["max"]) * 2 == float("inf")),
        "smallest normal / 2 > 0 (subnormal)": bool(t(lim["smallest_normal"]) / 2 > 0),
        "smallest subnormal > 0": bool(t(lim["smallest_subnormal"]) > 0),
        "smallest subnormal / 2 == 0 (underflow)": bool(t(lim["smallest_subnormal"]) / 2 == 0),
    }


results = {dtype: experiments(dtype) for dtype in FORMATS}
claims = list(results[torch.float32])
show_table([(c, *("yes" if results[d][c] else "NO" for d in FORMATS)) for c in claims],
           ("claim", *(NAMES[d] for d in FORMATS)))
assert all(all(r.values()) for r in results.values())

# %% [markdown]
# Look at the bits themselves: reinterpret the 16 bits of a float16 or bfloat16 number as an integer and print
# sign | exponent | mantissa. The smallest subnormal is a single 1 in the last mantissa bit.

# %%
def bit_string(x: float, dtype: torch.dtype) -> str:
    """sign|exponent|mantissa of ``x`` stored in the 16-bit format ``dtype``."""
    e, m = FORMATS[dtype]
    raw = torch.tensor([x], dtype=dtype).view(torch.int16).item() & 0xFFFF   # the 16 bits as an unsigned int
    bits = f"{raw:016b}"
    return f"{bits[0]}|{bits[1:1 + e]}|{bits[1 + e:]}"


for dtype in LOW:
    lim = format_limits(*FORMATS[dtype])
    print(NAMES[dtype])
    for label, x in [("1", 1.0), ("1 + eps", 1 + lim["eps"]), ("-2", -2.0), ("max", lim["max"]),
                     ("smallest normal", lim["smallest_normal"]),
                     ("smallest subnormal", lim["smallest_subnormal"])]:
        print(f"  {label:>18}: {bit_string(x, dtype)}")
assert bit_string(format_limits(5, 10)["smallest_subnormal"], torch.float16) == "0|00000|0000000001"

# %% [markdown]
# Epsilon is a *relative* step: near $x$ the gap between neighbouring numbers is about $x \cdot \varepsilon$.
# So integers stop being exact early (float16 cannot store 2049, bfloat16 cannot store 257), and, more
# important for training, a small update to a large weight can vanish. An SGD step of $10^{-4}$ on a weight of
# 1.0 is lost in both 16-bit formats, and adding $10^{-4}$ ten thousand times stalls far below 1:

# %%
rows = []
for dtype in (torch.float32, *LOW):
    t = lambda x: torch.tensor(x, dtype=dtype)   # noqa: E731
    total = t(0.0)
    for _ in range(10_000):
        total = total + t(1e-4)
    rows.append((NAMES[dtype], t(2049.0).item(), t(257.0).item(), bool(t(1.0) + t(1e-4) == t(1.0)),
                 f"{total.item():.4f}"))
show_table(rows, ("format", "2049 stored as", "257 stored as", "1 + 1e-4 == 1", "sum of 10,000 x 1e-4"))
assert abs(float(rows[0][4]) - 1) < 1e-3, "float32 adds up correctly"
assert rows[1][3] and rows[2][3] and float(rows[2][4]) < 0.1, "16-bit updates and sums stall"

# %% [markdown]
# This is why mixed precision keeps a float32 copy of the weights (the *master weights*) and applies every
# update to it: the 16-bit formats are for the bulk of the arithmetic, never for accumulating small changes.
# `torch.autocast` does exactly that: parameters stay float32, and each low-precision operation works on a
# temporary 16-bit copy.
#
# ## 2. Where gradients underflow: a real model
# Train a small CNN on the digits in float32 for a few epochs, then look at every gradient of one batch: the
# gradients of the loss with respect to each layer's output (what the backward pass computes and, under
# autocast, stores in 16 bits) and with respect to each parameter. Cast them to float16 and bfloat16 and count
# what is lost: values that become exactly zero (*flushed*), values that land among the subnormals (kept, but
# with fewer significant bits), and values that overflow to infinity.

# %%
splits = dlcourse.data.digits(seed=cfg.seed)
train_loader, val_loader, test_loader = splits.loaders(batch_size=64, seed=cfg.seed)
progress = cfg.pick(smoke=False, small=True, full=True)

torch.manual_seed(cfg.seed)
cnn = dlcourse.models.SmallCNN(in_channels=1, num_classes=10, width=16, depth=2, image_size=8).to(device)
history = dlcourse.fit(cnn, torch.optim.Adam(cnn.parameters(), lr=3e-3), train_loader, val_loader,
                       num_epochs=cfg.pick(smoke=2, small=8, full=15), progress=progress)
print(history)
assert history.last["val_acc"] > cfg.pick(smoke=0.8, small=0.95, full=0.95)


def all_gradients(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """float32 gradients of the mean loss on (X, y) w.r.t. every leaf module's output and every parameter."""
    activation_grads = []

    def keep_grad(module, inputs, output):
        output.register_hook(activation_grads.append)   # called with d loss / d output during backward

    hooks = [m.register_forward_hook(keep_grad) for m in model.modules() if not list(m.children())]
    model.zero_grad()
    try:
        F.cross_entropy(model(X), y).backward()
    finally:
        for h in hooks:
            h.remove()
    return {"activations": torch.cat([g.flatten() for g in activation_grads]),
            "parameters": torch.cat([p.grad.flatten() for p in model.parameters()])}


def cast_losses(g: torch.Tensor, dtype: torch.dtype, loss_scale: float = 1.0) -> dict[str, float]:
    """Of the non-zero float32 values in g, the fractions that flush to 0, become subnormal or overflow when
    ``g * loss_scale`` is stored in ``dtype``."""
    g = g[g != 0] * loss_scale
    c = g.to(dtype)
    tiny = torch.finfo(dtype).smallest_normal
    return {"zero": (c == 0).double().mean().item(),
            "subnormal": ((c != 0) & (c.abs() < tiny)).double().mean().item(),
            "inf": c.isinf().double().mean().item()}


n_grad = cfg.pick(smoke=256, small=512, full=1024)
X_grad, y_grad = (t[:n_grad].to(device) for t in splits.train.tensors)
grads = all_gradients(cnn, X_grad, y_grad)
settings = [(torch.bfloat16, 1.0), (torch.float16, 1.0), (torch.float16, 2.0**8), (torch.float16, 2.0**16),
            (torch.float16, 2.0**32)]
rows, lost = [], {}
for kind, g in grads.items():
    for dtype, scale in settings:
        r = cast_losses(g, dtype, scale)
        lost[kind, dtype, scale] = r
        rows.append((kind, f"{(g != 0).sum().item():,}", NAMES[dtype], f"2^{int(math.log2(scale))}",
                     f"{r['zero']:.3%}", f"{r['subnormal']:.2%}", f"{r['inf']:.3%}"))
show_table(rows, ("gradients", "non-zero", "cast to", "loss scale", "flushed to 0", "subnormal", "overflow"))

act = {key[1:]: v for key, v in lost.items() if key[0] == "activations"}
assert act[torch.float16, 1.0]["zero"] > 0, "some activation gradients flush to zero in float16"
assert act[torch.bfloat16, 1.0]["zero"] == 0, "bfloat16 has float32's range: nothing flushes"
assert act[torch.float16, 2.0**16]["zero"] < act[torch.float16, 1.0]["zero"] / 10, "scaling rescues them"
assert act[torch.float16, 2.0**16]["inf"] == 0, "2^16 is a safe scale here"
assert act[torch.float16, 2.0**32]["inf"] > 0, "too large a scale overflows"

# %% [markdown]
# Read the table top to bottom. In bfloat16 nothing flushes: its range is float32's. In float16 a large share
# of the activation gradients is subnormal and some flush to zero: the smallest normal float16 is $2^{-14}
# \approx 6 \cdot 10^{-5}$, and the gradient of a *mean* loss is divided by the batch size before it flows
# backwards; the better the model fits, the smaller its gradients get. Multiplying the loss by a **loss
# scale** $S$ multiplies every gradient by $S$ (the chain rule is linear), moving the whole distribution
# right, into float16's range; dividing by $S$ afterwards, in float32, undoes it exactly. Too large a scale
# pushes the largest gradients past float16's maximum of 65504: they become `inf`. The histogram shows both
# edges:

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5), sharey=True)
fp16 = format_limits(*FORMATS[torch.float16])
for ax, scale in zip(axes, (1.0, 2.0**16)):
    for kind, g in grads.items():
        ax.hist(torch.log2((g[g != 0] * scale).abs()).cpu().numpy(), bins=80, alpha=0.6, label=kind,
                density=True)
    ax.axvspan(-40, math.log2(fp16["smallest_subnormal"]), color="red", alpha=0.12, label="float16: 0")
    ax.axvspan(math.log2(fp16["smallest_subnormal"]), math.log2(fp16["smallest_normal"]), color="orange",
               alpha=0.12, label="float16: subnormal")
    ax.axvspan(math.log2(fp16["max"]), 40, color="purple", alpha=0.12, label="float16: inf")
    ax.set(xlim=(-40, 30), xlabel="log2 |gradient x loss scale|",
           title=f"loss scale 2^{int(math.log2(scale))}")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("density")
axes[1].legend(fontsize=8, loc="upper left")
fig.suptitle("Gradients of a trained CNN against float16's range (bfloat16's reaches 2^-133 .. 2^128)")
fig.tight_layout()
plt.close(fig)
fig

# %% [markdown]
# A fixed scale is a guess: the gradient distribution drifts during training (it shrinks as the loss falls),
# and one overflowing value ruins a step. Section 4 lets the scale adjust itself. First: which operations run
# in 16 bits at all?
#
# ## 3. What `torch.autocast` runs in low precision
# Inside `with torch.autocast(device_type, dtype=...)`, PyTorch decides per operation: some are cast *down* to
# the low-precision dtype (matrix products, where the speed is), some are cast *up* to float32 (where range or
# accuracy matters, e.g. losses), and the rest simply run in whatever dtype their inputs have. The lists
# differ between devices and PyTorch versions, so measure them here: feed each operation float32 inputs, then
# low-precision inputs, and print the output dtype.

# %%
gen = torch.Generator().manual_seed(cfg.seed)
A = torch.randn(8, 16, generator=gen).to(device)            # (8, 16) float32
B = torch.randn(16, 16, generator=gen).to(device)           # (16, 16)
img = torch.randn(2, 3, 8, 8, generator=gen).to(device)     # (2, 3, 8, 8)
labels8 = torch.randint(0, 16, (8,), generator=gen).to(device)
linear, conv = nn.Linear(16, 16).to(device), nn.Conv2d(3, 4, 3).to(device)
layer_norm, batch_norm = nn.LayerNorm(16).to(device), nn.BatchNorm2d(3).to(device)
OPS = {  # name -> function of (matrix (8, 16), image batch (2, 3, 8, 8)) in the dtype under test
    "matmul": lambda a, im: a @ B,
    "nn.Linear": lambda a, im: linear(a),
    "nn.Conv2d": lambda a, im: conv(im),
    "relu": lambda a, im: F.relu(a),
    "exp": lambda a, im: a.exp(),
    "sum": lambda a, im: a.sum(),
    "softmax": lambda a, im: F.softmax(a, dim=1),
    "log_softmax": lambda a, im: F.log_softmax(a, dim=1),
    "nn.LayerNorm": lambda a, im: layer_norm(a),
    "nn.BatchNorm2d": lambda a, im: batch_norm(im),
    "cross_entropy": lambda a, im: F.cross_entropy(a, labels8),
    "mse_loss": lambda a, im: F.mse_loss(a, torch.zeros_like(a)),
}


def autocast_dtypes(dtype: torch.dtype) -> dict[str, tuple[torch.dtype, torch.dtype]]:
    """Per op: output dtype under autocast(dtype) for float32 inputs, and for inputs already in ``dtype``."""
    out = {}
    with torch.autocast(device.type, dtype=dtype):
        for name, op in OPS.items():
            out[name] = (op(A, img).dtype, op(A.to(dtype), img.to(dtype)).dtype)
    return out


def verdict(from_fp32: torch.dtype, from_low: torch.dtype) -> str:
    if from_fp32 != torch.float32:
        return "cast down"
    return "cast up to float32" if from_low == torch.float32 else "follows its input"


measured = {dtype: autocast_dtypes(dtype) for dtype in LOW}
rows = [(name, *(f"{NAMES[measured[d][name][0]]} / {NAMES[measured[d][name][1]]}" for d in LOW),
         verdict(*measured[torch.bfloat16][name])) for name in OPS]
show_table(rows, ("op", "float16 autocast: fp32 in / fp16 in", "bfloat16 autocast: fp32 in / bf16 in",
                  "bfloat16 policy"))
print(f"\nmeasured on {device.type}, torch {torch.__version__}")
for dtype in LOW:
    for name in ("matmul", "nn.Linear", "nn.Conv2d"):
        assert measured[dtype][name][0] == dtype, f"{name} runs in {NAMES[dtype]} under autocast"
    assert measured[dtype]["cross_entropy"] == (torch.float32, torch.float32), "losses run in float32"

# %% [markdown]
# The pattern to remember: matrix products and convolutions are cast down; losses and (on some devices)
# softmax or normalisation are cast up; element-wise operations follow their inputs, which after a linear
# layer are already 16-bit. The lists are per device: PyTorch's AMP documentation puts softmax, log_softmax
# and layer_norm on CUDA's float32 list, so on a GPU expect this cell to print "cast up to float32" for them
# even from 16-bit inputs. Trust the printed table of the device you train on, not a table from memory.
#
# What autocast does *not* change is just as important: the parameters, and therefore their gradients and the
# optimizer's state, stay float32.

# %%
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16)).to(device)
with torch.autocast(device.type, dtype=torch.bfloat16):
    y_hat = model(A)
    loss = F.cross_entropy(y_hat, labels8)
loss.backward()
print(f"y_hat: {y_hat.dtype}, loss: {loss.dtype}, weight: {model[0].weight.dtype}, "
      f"weight.grad: {model[0].weight.grad.dtype}")
assert y_hat.dtype == torch.bfloat16 and loss.dtype == torch.float32
assert all(p.dtype == p.grad.dtype == torch.float32 for p in model.parameters())

# %% [markdown]
# ## 4. Dynamic loss scaling, from scratch
# Section 2 showed that float16 needs a loss scale, and that the right scale is as large as possible without
# overflowing. *Dynamic* loss scaling finds it by trial and error, on every step:
#
# 1. **scale**: backpropagate `loss * S` instead of `loss`;
# 2. **unscale**: divide every gradient by `S` (in float32), and check whether any is `inf` or NaN;
# 3. **step or skip**: if all gradients are finite, take the optimizer step; otherwise skip it (the weights
#    stay clean; a gradient that overflowed carries no usable information);
# 4. **update**: after an overflow, multiply `S` by the *backoff factor* (0.5) and reset the count of good
#    steps; after `growth_interval` consecutive good steps, multiply `S` by the *growth factor* (2).
#
# So the scale creeps up until something overflows, halves, and creeps up again: it hovers just below the
# largest safe value. The class below has `torch.amp.GradScaler`'s interface (`scale`, `unscale_`, `step`,
# `update`, `get_scale`), so the same training code runs with either.

# %%
class DynamicLossScaler:
    """Dynamic loss scaling for float16 training, with torch.amp.GradScaler's interface and defaults."""

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000) -> None:
        self.scale_factor = float(init_scale)
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval = growth_interval
        self.good_steps = 0          # consecutive steps with finite gradients
        self.found_inf = None        # set by unscale_ (True/False), cleared by update

    def get_scale(self) -> float:
        return self.scale_factor

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale_factor

    @torch.no_grad()
    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide every gradient by the scale, and note whether any of them is inf or NaN."""
        inv_scale = 1.0 / self.scale_factor
        found_inf = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    found_inf = found_inf or not bool(torch.isfinite(p.grad).all())
                    p.grad.mul_(inv_scale)
        self.found_inf = found_inf

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Unscale (unless already done), then step only if every gradient is finite."""
        if self.found_inf is None:
            self.unscale_(optimizer)
        if not self.found_inf:
            optimizer.step()

    def update(self) -> None:
        """Back off after an overflow; grow after growth_interval good steps in a row."""
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


# %% [markdown]
# Now train the same MLP twice on the digits, under float16 autocast, once with our scaler and once with
# `torch.amp.GradScaler`, from the same seed and batches. Two things force the scaler to work: an initial
# scale of $2^{24}$, far too large (the first gradients overflow float16, so the first steps are skipped while
# the scale backs off), and a planted `inf` in one gradient at a few chosen steps, standing in for a gradient
# spike. A short `growth_interval` lets us see the scale grow too. A step was skipped exactly when the scale
# went down.

# %%
digits_flat = dlcourse.data.digits(flatten=True, seed=cfg.seed)
X_flat, y_flat = (t.to(device) for t in digits_flat.train.tensors)        # (N, 64), (N,)
batches = [(X_flat[i:i + 64], y_flat[i:i + 64]) for i in range(0, len(X_flat) - 63, 64)]
num_steps = cfg.pick(smoke=40, small=80, full=120)
overflow_steps = {15, 16, 30}                          # plant an inf gradient at these steps


def train_scaled(scaler, num_steps: int) -> tuple[list[float], list[bool], list[float], nn.Module]:
    """float16-autocast training of an MLP with ``scaler``: scale per step, skipped?, losses, final model."""
    torch.manual_seed(cfg.seed)
    model = dlcourse.models.mlp(64, [128], 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scales, skipped, losses = [], [], []
    for step in range(num_steps):
        X, y = batches[step % len(batches)]
        with torch.autocast(device.type, dtype=torch.float16):
            loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        if step in overflow_steps:
            with torch.no_grad():
                model[1].weight.grad[0, 0] = float("inf")   # a planted gradient spike
        scale_before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        scales.append(scale_before)
        skipped.append(scaler.get_scale() < scale_before)
        losses.append(loss.item())
    return scales, skipped, losses, model


scaler_kwargs = dict(init_scale=2.0**24, growth_factor=2.0, backoff_factor=0.5, growth_interval=10)
ours = train_scaled(DynamicLossScaler(**scaler_kwargs), num_steps)
theirs = train_scaled(torch.amp.GradScaler(device.type, **scaler_kwargs), num_steps)
print("log2(scale) per step:", [int(math.log2(s)) for s in ours[0]])
print("skipped steps:       ", [i for i, s in enumerate(ours[1]) if s])
print(f"loss: {ours[2][0]:.3f} -> {ours[2][-1]:.3f}")
weight_diff = max((p - q).abs().max().item() for p, q in zip(ours[3].parameters(), theirs[3].parameters()))
print(f"largest weight difference after {num_steps} steps: {weight_diff:.1e}")
assert ours[0] == theirs[0], "same scale at every step"
assert ours[1] == theirs[1], "same skipped steps"
assert all(torch.allclose(p, q, rtol=1e-6, atol=1e-7) for p, q in zip(ours[3].parameters(),
                                                                      theirs[3].parameters())), "same weights"
assert overflow_steps <= {i for i, s in enumerate(ours[1]) if s} and ours[1][0], "planted and early overflows"
assert max(ours[0]) == 2.0**24 and min(ours[0]) < 2.0**24 and ours[2][-1] < ours[2][0]
print("identical to torch.amp.GradScaler: scales, skipped steps and final weights")

# %%
fig, ax = plt.subplots(figsize=(8, 3))
steps = range(num_steps)
ax.step(steps, [math.log2(s) for s in ours[0]], where="post", label="log2(scale)")
skip_at = [i for i in steps if ours[1][i]]
ax.plot(skip_at, [math.log2(ours[0][i]) for i in skip_at], "rx", markersize=8, label="skipped (overflow)")
for i in sorted(overflow_steps):
    ax.axvline(i, color="grey", linestyle=":", linewidth=1)
ax.set(xlabel="step", ylabel="log2(loss scale)", title="Dynamic loss scaling (dotted: planted inf gradients)")
ax.legend()
ax.grid(alpha=0.3)
plt.close(fig)
fig

# %% [markdown]
# The start shows the calibration: several skipped steps in a row while the scale halves down from $2^{24}$ to
# a value whose gradients fit in float16. After that, the scale grows every `growth_interval` good steps until
# it overflows again (the real GradScaler's default interval is 2000 steps, so in practice skips are rare). A
# planted `inf` costs one skipped step and one halving, nothing more: the weights never see it.
#
# ## 5. The recipe, on any device
# Which 16-bit format to compute in is a question about the hardware, and the answer prefers bfloat16: it has
# float32's range, so it needs no loss scaling at all.
# - **bfloat16** wherever the hardware computes it natively: NVIDIA GPUs from the Ampere generation on (A100,
#   RTX 30xx and later, H100, H200), and CPUs with AVX-512 BF16 or AMX instructions. On CUDA,
#   `torch.cuda.is_bf16_supported(including_emulation=False)` asks the GPU itself; without
#   `including_emulation=False` the answer is also yes on older GPUs, which run bfloat16 correctly but slowly,
#   without tensor cores.
# - **float16 plus `GradScaler`** on GPUs that have float16 tensor cores but no bfloat16 ones (Volta's V100,
#   Turing's T4 on Colab) and on Apple's MPS.
# - On a **CPU**: bfloat16 (PyTorch emulates it where the instructions are missing: slower, but correct).
#   float16 works on a CPU too, but most CPUs have no float16 arithmetic units; section 7 times a float16
#   matrix product on yours.
#
# One training step covers every case: a `GradScaler` created with `enabled=False` passes the loss through
# unchanged and calls `optimizer.step()` directly, so the code has no branch.

# %%
def amp_recipe(device: torch.device) -> tuple[torch.dtype, torch.amp.GradScaler]:
    """The autocast dtype for ``device``, and a GradScaler that is active only for float16."""
    if device.type == "cuda":
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)   # Ampere (sm_80) or newer
        dtype = torch.bfloat16 if native_bf16 else torch.float16
    elif device.type == "mps":
        dtype = torch.float16
    else:
        dtype = torch.bfloat16
    return dtype, torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def amp_step(model: nn.Module, optimizer: torch.optim.Optimizer, X: torch.Tensor, y: torch.Tensor,
             dtype: torch.dtype, scaler: torch.amp.GradScaler) -> torch.Tensor:
    """One mixed-precision training step; float32 when ``dtype`` is torch.float32."""
    with torch.autocast(X.device.type, dtype=dtype, enabled=dtype != torch.float32):
        y_hat = model(X)                     # low-precision matmuls, float32 parameters
        loss = F.cross_entropy(y_hat, y)     # float32 (autocast casts losses up)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()            # disabled scaler: loss.backward()
    scaler.step(optimizer)                   # unscale, check, step or skip
    scaler.update()
    return loss.detach()


amp_dtype, _ = amp_recipe(device)
assert amp_dtype == dlcourse.config.amp_dtype(device), "dlcourse.fit(amp=True) makes the same choice"
print(f"recipe on {device.type}: autocast in {NAMES[amp_dtype]}, GradScaler "
      f"{'on' if amp_dtype == torch.float16 else 'off'}")
if device.type == "cuda":
    major, minor = torch.cuda.get_device_capability(device)
    print(f"{torch.cuda.get_device_name(device)}, compute capability {major}.{minor}: bfloat16 native "
          f"{torch.cuda.is_bf16_supported(including_emulation=False)}, bfloat16 at all (emulation included) "
          f"{torch.cuda.is_bf16_supported()}")

# %% [markdown]
# Train the digits MLP with the step above in all three precisions, from the same start. float16 plus
# `GradScaler` runs here too: the MLP is small enough that even a CPU without float16 units gets through it.
# (The seconds column of a float32 run on a GPU depends on TF32, section 6; the table says how it was set.)

# %%
num_epochs_mlp = cfg.pick(smoke=3, small=15, full=30)
flat_train, flat_val, _ = digits_flat.loaders(batch_size=64, seed=cfg.seed)
rows, final = [], {}
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    torch.manual_seed(cfg.seed)
    model = dlcourse.models.mlp(64, [128], 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    t0 = time.perf_counter()
    for epoch in range(num_epochs_mlp):
        for X, y in flat_train:
            loss = amp_step(model, optimizer, X.to(device), y.to(device), dtype, scaler)
    seconds = time.perf_counter() - t0
    scores = dlcourse.evaluate(model, flat_val)
    final[dtype] = scores["acc"]
    rows.append((NAMES[dtype], "on" if scaler.is_enabled() else "off", f"{loss.item():.4f}",
                 f"{scores['acc']:.1%}", f"{seconds:.2f}"))
print(f"digits MLP, {num_epochs_mlp} epochs on {device} ({float32_mode()})")
show_table(rows, ("precision", "GradScaler", "last batch loss", "val accuracy", "seconds"))
assert all(acc > cfg.pick(smoke=0.85, small=0.93, full=0.93) for acc in final.values())
assert all(abs(final[dtype] - final[torch.float32]) < 0.05 for dtype in LOW), "same accuracy in all three"

# %% [markdown]
# All three land at the same accuracy: the mixed-precision recipe changes the arithmetic, not what the model
# learns. (The times of this small MLP say little; section 7 times a model large enough to show the hardware.)
#
# `dlcourse.fit` has the recipe built in: `amp=True` takes the dtype from `dlcourse.config.amp_dtype(device)`,
# which decides exactly as `amp_recipe` does (or takes `amp_dtype=`), wraps the forward pass and loss in
# autocast and uses a `GradScaler` exactly when the dtype is float16. Here it trains the CNN of section 2
# again, next to a float32 run:

# %%
rows, fit_acc = [], {}
for amp in (False, True):
    torch.manual_seed(cfg.seed)
    model = dlcourse.models.SmallCNN(in_channels=1, num_classes=10, width=16, depth=2, image_size=8)
    model = model.to(device)
    hist = dlcourse.fit(model, torch.optim.Adam(model.parameters(), lr=3e-3), train_loader, val_loader,
                        num_epochs=cfg.pick(smoke=2, small=8, full=15), amp=amp, progress=progress)
    fit_acc[amp] = dlcourse.evaluate(model, test_loader)["acc"]
    rows.append((f"amp={amp}", NAMES[amp_dtype] if amp else "float32", f"{hist.last['train_loss']:.4f}",
                 f"{hist.last['val_acc']:.1%}", f"{fit_acc[amp]:.1%}", f"{sum(hist['seconds']):.1f}"))
print(f"SmallCNN on digits, on {device} ({float32_mode()})")
show_table(rows, ("fit", "compute dtype", "train loss", "val accuracy", "test accuracy", "seconds"))
assert fit_acc[True] > cfg.pick(smoke=0.8, small=0.95, full=0.95)
assert abs(fit_acc[True] - fit_acc[False]) < 0.05

# %% [markdown]
# ## 6. TF32: the float32 that isn't
# NVIDIA GPUs from Ampere on (compute capability 8.0 and later) have a third option between float32 and the
# 16-bit formats, used only *inside* matrix products: **TF32** ("TensorFloat-32"). Its numbers have float32's
# 8 exponent bits and float16's 10 mantissa bits (19 bits in all). With TF32 switched on, a float32 matrix
# product rounds its inputs to 10 mantissa bits, multiplies them on the tensor cores and adds the products up
# in float32. Tensors stay float32 in memory, nothing in your code changes, and the products run several times
# faster than on the GPU's ordinary float32 units; the price is float16's precision in every input.
#
# Whether a "float32" run on a GPU really is float32 therefore depends on two switches, with PyTorch defaults
# that differ:
#
# - matrix products (`nn.Linear`, `@`, attention): `torch.backends.cuda.matmul.allow_tf32`, or
#   `torch.set_float32_matmul_precision("high")`; PyTorch's default: **off** (precision `"highest"`);
# - cuDNN convolutions: `torch.backends.cudnn.allow_tf32`; PyTorch's default: **on**.
#
# So a float32 CNN on an Ampere-or-newer GPU already computes its convolutions in TF32, while a float32
# transformer does not, unless you ask. `dlcourse.config.tf32_status()` says how both are set (the environment
# report of the setup cell prints it on CUDA). The two matmul switches are one setting: `allow_tf32 = True` is
# `set_float32_matmul_precision("high")` (`"medium"` also allows bfloat16 inside float32 matmuls). Use one of
# them consistently: in recent PyTorch versions, switching on with `set_float32_matmul_precision("high")` and
# off with `allow_tf32 = False` leaves a mixed state that `torch.get_float32_matmul_precision()` refuses to
# report. Below, every change goes through `set_float32_matmul_precision`, and the defaults are restored at
# the end. The switches exist on every PyTorch build, so this cell runs on a CPU too; only a GPU acts on them.
# (A container can also force TF32 on with the environment variable `TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1`; the
# cell reports what it finds.)

# %%
saved_precision = torch.get_float32_matmul_precision()
saved_status = dlcourse.config.tf32_status()
print(f"now: torch.get_float32_matmul_precision() = {saved_precision!r}; {saved_status}")
torch.backends.cuda.matmul.allow_tf32 = True
print(f"after allow_tf32 = True: precision {torch.get_float32_matmul_precision()!r}")
assert torch.get_float32_matmul_precision() == "high", "allow_tf32 = True is precision 'high'"
torch.set_float32_matmul_precision("highest")
print(f"after set_float32_matmul_precision('highest'): {dlcourse.config.tf32_status()}")
tf32_can_be_off = not torch.backends.cuda.matmul.allow_tf32
if not tf32_can_be_off:
    print("TF32 stays on for matmuls: TORCH_ALLOW_TF32_CUBLAS_OVERRIDE="
          f"{os.environ.get('TORCH_ALLOW_TF32_CUBLAS_OVERRIDE')!r} forces it in this environment")
torch.set_float32_matmul_precision(saved_precision)
assert dlcourse.config.tf32_status() == saved_status, "defaults restored"

# %% [markdown]
# What does TF32 cost in accuracy? Measure it against float64 on a matrix product. Any machine can *emulate*
# TF32: round each float32 input to 10 mantissa bits (add half of the last kept bit to the bit pattern, then
# clear the 13 dropped bits), and multiply the rounded inputs exactly. Hardware may instead *truncate* (clear
# the dropped bits without rounding), so the cell emulates that too. On a GPU from Ampere on, the cell also
# runs the real thing: the same product with TF32 switched on, and a bfloat16 product for comparison. The
# error is relative, $\lVert C - C_{64} \rVert / \lVert C_{64} \rVert$, against the product computed in
# float64.

# %%
def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 values rounded to TF32's 10 mantissa bits (to nearest, ties away from zero), still float32."""
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)   # + half the lowest kept bit, clear 13 bits


def truncate_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 values with the 13 bits TF32 drops set to zero (rounded towards zero), still float32."""
    return (x.contiguous().view(torch.int32) & ~0x1FFF).view(torch.float32)


# 1 + 2^-11 lies halfway between the TF32 neighbours 1 and 1 + 2^-10: a tie, which goes away from zero
ties = round_to_tf32(torch.tensor([1 + 2**-11, -(1 + 2**-11), 1 + 2**-12, 1 + 2**-11 + 2**-20]))
assert ties.tolist() == [1 + 2**-10, -(1 + 2**-10), 1.0, 1 + 2**-10], "to nearest, ties away from zero"
assert truncate_to_tf32(torch.tensor([1 + 2**-10 - 2**-20])).item() == 1.0


n_mm = cfg.pick(smoke=512, small=1024, full=1024)
gen = torch.Generator().manual_seed(cfg.seed)
A64 = torch.randn(n_mm, n_mm, generator=gen, dtype=torch.float64).to(device)     # (n, n)
B64 = torch.randn(n_mm, n_mm, generator=gen, dtype=torch.float64).to(device)
C64 = A64 @ B64                                                                   # the reference
A32, B32 = A64.float(), B64.float()


def rel_error(C: torch.Tensor) -> float:
    return ((C.double() - C64).norm() / C64.norm()).item()


torch.set_float32_matmul_precision("highest")
errors = {"float32 (IEEE)": rel_error(A32 @ B32),
          "TF32, emulated (inputs rounded to 10 bits)": rel_error(round_to_tf32(A32).double()
                                                                  @ round_to_tf32(B32).double()),
          "TF32, emulated (inputs truncated to 10 bits)": rel_error(truncate_to_tf32(A32).double()
                                                                    @ truncate_to_tf32(B32).double()),
          "float16 inputs, emulated": rel_error(A32.half().double() @ B32.half().double()),
          "bfloat16 inputs, emulated": rel_error(A32.bfloat16().double() @ B32.bfloat16().double())}
has_tf32 = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)
if has_tf32:
    torch.set_float32_matmul_precision("high")
    errors["TF32 on this GPU (precision 'high')"] = rel_error(A32 @ B32)
    torch.set_float32_matmul_precision("highest")
    errors["bfloat16 matmul on this GPU"] = rel_error(A32.bfloat16() @ B32.bfloat16())
torch.set_float32_matmul_precision(saved_precision)
print(f"({n_mm} x {n_mm}) @ ({n_mm} x {n_mm}) on {device}, relative error against float64:")
show_table([(name, f"{e:.2e}", f"{e / errors['float32 (IEEE)']:.0f}x") for name, e in errors.items()],
           ("product", "relative error", "vs float32"))
tf32_error = errors["TF32, emulated (inputs rounded to 10 bits)"]
assert tf32_error > 100 * errors["float32 (IEEE)"], "hundreds of times float32's error"
tf32_vs_fp16 = tf32_error / errors["float16 inputs, emulated"]
assert abs(tf32_vs_fp16 - 1) < 0.1, "TF32 keeps float16's 10 mantissa bits"
bf16_vs_fp16 = errors["bfloat16 inputs, emulated"] / errors["float16 inputs, emulated"]
truncated_vs_rounded = errors["TF32, emulated (inputs truncated to 10 bits)"] / tf32_error
print(f"bfloat16 / float16 inputs: {bf16_vs_fp16:.1f}x the error (3 fewer mantissa bits: 2^3 = 8); "
      f"truncated / rounded TF32 inputs: {truncated_vs_rounded:.1f}x")
assert 6 < bf16_vs_fp16 < 10 and truncated_vs_rounded > 1.5
if has_tf32 and tf32_can_be_off:
    gpu_vs_emulated = errors["TF32 on this GPU (precision 'high')"] / tf32_error
    print(f"TF32 on this GPU / emulated with rounding: {gpu_vs_emulated:.2f}x")
    assert 0.5 < gpu_vs_emulated < 4, "the GPU used TF32: float16-like input precision"

# Gradient noise, for scale: the gradients of section 2's CNN on two different batches of 64 digits
X_train, y_train = splits.train.tensors
g1, g2 = (all_gradients(cnn, X_train[i:i + 64].to(device), y_train[i:i + 64].to(device))["parameters"]
          for i in (0, 64))
batch_noise = ((g1 - g2).norm() / ((g1 + g2) / 2).norm()).item()
print(f"two batches of 64 digits: the CNN's gradients differ by {batch_noise:.2f} (relative), "
      f"{batch_noise / tf32_error:,.0f}x TF32's relative error")
assert batch_noise > 100 * tf32_error, "gradient noise dwarfs TF32's rounding"
assert dlcourse.config.tf32_status() == saved_status, "defaults restored"

# %% [markdown]
# TF32's error is float16's (same 10 mantissa bits) and hundreds of times float32's (the last column), yet
# the relative error itself (the table's second row) is small next to the noise every gradient already
# carries: the CNN's gradients on two batches of 64 digits differ by far more (the line below the table).
# That is why TF32 costs training little. It matters where float32 is used *for* its precision: solving
# ill-conditioned linear systems, checking gradients numerically, comparing two implementations to 1e-6.
# bfloat16 inputs, with three fewer mantissa bits, lose about $2^3 = 8$ times more (printed). On a GPU the
# cell prints the measured TF32 error divided by the emulated one: about 1 where the hardware rounds its
# inputs to nearest like the emulation, nearer the truncated row's ratio where it drops the extra bits.
#
# ## 7. Time and memory per precision: a transformer step
# Tensor cores pay off only when the matrix products are large. A small CNN on 32×32 images is dominated by
# fixed costs per operation (launching a GPU kernel, Python, the dispatcher), which no number format reduces:
# its step takes about as long in every precision. So this section times one training step of a transformer,
# the course's `dlcourse.models.GPT`, whose time goes into products of shape (tokens × d_model) @ (d_model ×
# 4·d_model). At `full` scale, d_model is 1024 and a step processes 4096 tokens: products of 4096 × 1024 by
# 1024 × 4096, large enough to keep a GPU's tensor cores busy. The tokens are random: only the time and the
# memory matter here.
#
# Each step is timed as the best of several repeats after two warm-up steps, on CUDA with
# `torch.cuda.synchronize()` before each clock reading (GPU work is asynchronous). Every precision is timed
# once per round, in turn, so that a change in the machine's load hits them all alike. On a GPU the table has
# four timed rows: float32 with TF32 off (true float32), float32 with TF32 on, bfloat16 autocast (left out on
# a GPU without bfloat16 tensor cores), and float16 autocast with a `GradScaler`. On a CPU it has two: TF32
# does not exist there, and float16 is left out of the step timings because most CPUs lack float16
# arithmetic units (its memory is measured; the cell times one of the model's matrix products in float16
# instead, so you see what float16 costs on this CPU).
#
# Memory: autocast does not shrink the parameters (they stay float32); it shrinks the *activations*, the
# tensors autograd saves for the backward pass. `dlcourse.memory.saved_tensor_bytes` counts them on any
# device; on CUDA, `dlcourse.memory.peak_memory` also reports the allocator's peak
# (`torch.cuda.max_memory_allocated`) for the forward and backward pass.

# %%
d_model = cfg.pick(smoke=64, small=256, full=1024)
num_heads = cfg.pick(smoke=4, small=4, full=16)
num_layers = cfg.pick(smoke=2, small=2, full=4)
batch_size, seq_len = cfg.pick(smoke=(8, 32), small=(8, 128), full=(8, 512))
vocab_size = 128
repeats = cfg.pick(smoke=3, small=3, full=10)

torch.manual_seed(cfg.seed)
gpt = nn.Sequential(dlcourse.models.GPT(vocab_size, seq_len, d_model=d_model, num_heads=num_heads,
                                        num_layers=num_layers),
                    nn.Flatten(0, 1)).to(device)                    # (B, T) -> (B*T, vocab) logits
gpt_optimizer = torch.optim.AdamW(gpt.parameters(), lr=1e-4, weight_decay=0.0)   # timing only: no decay
gen = torch.Generator().manual_seed(cfg.seed)
tokens = torch.randint(0, vocab_size, (batch_size, seq_len), generator=gen).to(device)        # (B, T)
targets = torch.randint(0, vocab_size, (batch_size * seq_len,), generator=gen).to(device)    # (B*T,)
n_params = dlcourse.models.count_parameters(gpt)
# training FLOPs per token: 6 per weight of the matrix products, plus attention's T x T products (notebook 06)
step_flops = batch_size * seq_len * dlcourse.models.transformer_training_flops(gpt[0], seq_len)
print(f"GPT: d_model {d_model}, {num_layers} layers, {n_params / 1e6:.1f} M parameters; "
      f"{batch_size} x {seq_len} = {batch_size * seq_len} tokens per step; "
      f"about {step_flops / 1e9:.3g} GFLOP per training step")


def sync() -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_in(dtype: torch.dtype, tf32: bool):
    """A training step of ``gpt`` in ``dtype`` (float32: TF32 matmuls if ``tf32``), with its own scaler."""
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step() -> None:
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        amp_step(gpt, gpt_optimizer, tokens, targets, dtype, scaler)
    return step


def best_step_times(steps: dict[str, object], repeats: int) -> dict[str, float]:
    """Best seconds per call of each step function, timed in rounds (each round calls every step once)."""
    for step in steps.values():
        step()
        step()                                      # warm-up: memory, kernel choice, the scaler's first scale
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(repeats):
        for name, step in steps.items():
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


settings = {"float32": (torch.float32, False), "bfloat16 autocast": (torch.bfloat16, False)}
if device.type == "cuda":
    true_fp32 = "float32, TF32 off" if tf32_can_be_off else "float32 (TF32 forced on by the environment)"
    settings = {true_fp32: (torch.float32, False), "float32, TF32 on": (torch.float32, True),
                "bfloat16 autocast": (torch.bfloat16, False),
                "float16 autocast + GradScaler": (torch.float16, False)}
    if amp_dtype == torch.float16:            # no bfloat16 tensor cores (T4, V100): no bfloat16 row
        del settings["bfloat16 autocast"]
try:
    times = best_step_times({name: step_in(*s) for name, s in settings.items()}, repeats)
finally:
    torch.set_float32_matmul_precision(saved_precision)           # PyTorch's default again
baseline = next(iter(times))                                        # true float32


def forward_loss(dtype: torch.dtype) -> torch.Tensor:
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        return F.cross_entropy(gpt(tokens), targets)


timed = {dtype for dtype, _ in settings.values()}
mem = {}                                 # every timed dtype; off CUDA, float16 too (measured, not timed)
for dtype in [d for d in (torch.float32, *LOW[::-1]) if d in timed or device.type != "cuda"]:
    mem[dtype] = {"saved": dlcourse.memory.saved_tensor_bytes(lambda: forward_loss(dtype),
                                                              exclude=gpt.parameters())}
    if device.type == "cuda":
        gpt_optimizer.zero_grad(set_to_none=True)               # so the gradients are created inside the peak
        mem[dtype]["peak"] = dlcourse.memory.peak_memory(lambda: forward_loss(dtype).backward(), device,
                                                         count_saved=False)["peak_bytes"]

rows = []
for name, (dtype, tf32) in settings.items():
    rows.append((name, f"{1000 * times[name]:.2f}", f"{times[baseline] / times[name]:.2f}x",
                 f"{step_flops / times[name] / 1e12:.3g}",
                 dlcourse.memory.format_bytes(mem[dtype]["saved"]),
                 dlcourse.memory.format_bytes(mem[dtype]["peak"]) if "peak" in mem[dtype] else "CUDA only"))
if torch.float16 not in timed:                                      # float16 on a CPU: memory only
    rows.append(("float16 autocast (not timed)", "-", "-", "-", dlcourse.memory.format_bytes(
        mem[torch.float16]["saved"]), "CUDA only"))
print(f"one training step (forward, loss, backward, AdamW) on {device}, best of {repeats}; "
      f"cuDNN convolutions: none in this model")
show_table(rows, ("precision", "step ms", f"speed-up vs {baseline}", "TFLOP/s", "saved for backward",
                  "peak of forward+backward"))
if torch.float16 not in timed:                  # a CPU: what float16 costs, on one of the model's products
    h = torch.randn(batch_size * seq_len, d_model, generator=gen).to(device)          # (B*T, D)
    w = torch.randn(d_model, 4 * d_model, generator=gen).to(device)                   # (D, 4D)
    operands = {dt: (h.to(dt), w.to(dt)) for dt in FORMATS}
    matmul_times = best_step_times({NAMES[dt]: (lambda a=a, b=b: a @ b) for dt, (a, b) in operands.items()},
                                   repeats)
    print(f"one ({batch_size * seq_len} x {d_model}) @ ({d_model} x {4 * d_model}) product on {device}: "
          + ", ".join(f"{name} {1000 * t:.2f} ms ({t / matmul_times['float32']:.1f}x float32)"
                      for name, t in matmul_times.items()))
saved_ratio = mem[amp_dtype]["saved"] / mem[torch.float32]["saved"]
print(f"saved for backward, {NAMES[amp_dtype]} autocast / float32: {saved_ratio:.2f}")
assert 0.5 < saved_ratio < 0.8, "16-bit activations are smaller, but by less than 2x"
if torch.bfloat16 in mem:
    saved_16 = mem[torch.bfloat16]["saved"]
    assert abs(mem[torch.float16]["saved"] - saved_16) <= 0.01 * saved_16, "both 16-bit formats: 2 bytes a number"
big_enough = cfg.pick(smoke=False, small=False, full=True)       # tensor cores need the full-scale matmuls
if device.type == "cuda" and amp_dtype == torch.bfloat16 and tf32_can_be_off and big_enough:
    # matmuls of 4096 x 1024 by 1024 x 4096: bfloat16 tensor cores against the GPU's plain float32 units
    assert times["bfloat16 autocast"] < times["float32, TF32 off"], "tensor cores should win at this size"
assert dlcourse.config.tf32_status() == saved_status, "defaults restored"

# %% [markdown]
# What to read from the table:
# - **Speed.** On a GPU from Ampere on, true float32 runs on the ordinary float32 units, while TF32, bfloat16
#   and float16 run on the tensor cores (bfloat16 and float16 also move half the bytes): that is where the
#   speed-up column's gains come from at `full` scale, and the cell asserts that bfloat16 beats true float32
#   there. The TFLOP/s column says how close each comes to the GPU's rated peak; at `smoke` and `small` scale
#   it shows how far from that peak a small model stays. On a GPU without bfloat16 tensor cores (a T4) there
#   is no bfloat16 row, and TF32 does not exist there either, which is why the recipe picks float16. On a
#   CPU, bfloat16 can only gain where the processor has bfloat16 instructions (AVX-512 BF16, AMX): the
#   speed-up column says what yours does, and the line below the table what a float16 product costs.
# - **Memory.** The activations saved for backward shrink by less than 2× (ratio printed and asserted),
#   because not everything saved is a 16-bit float: the residual stream that every LayerNorm saves, the loss's
#   log-probabilities and attention's log-sum-exp statistics stay float32, and the bfloat16 copies autocast
#   makes of the weights are new tensors (they count too). The peak falls with the activations, but the
#   float32 gradients are in it at full size.
#
# ## Summary
# - float32 (8 exponent, 23 mantissa bits), float16 (5, 10) and bfloat16 (8, 7): max $(2 - 2^{-m})
#   2^{\text{bias}}$, smallest normal $2^{1-\text{bias}}$, smallest subnormal $2^{1-\text{bias}-m}$, eps
#   $2^{-m}$. bfloat16 has float32's range but only about 2 decimal digits; float16 has about 3 digits and a
#   range of $6 \cdot 10^{-8}$ to 65504.
# - Small updates vanish in 16 bits, so weights and their updates stay float32 (autocast never touches them).
# - A real model's backward pass produces gradients below float16's normal range; some flush to zero. A loss
#   scale shifts them into range; bfloat16 needs none.
# - `torch.autocast` casts matmuls and convolutions down, losses up, and lets the rest follow their inputs;
#   the exact lists depend on the device: print them.
# - Dynamic loss scaling: scale, unscale, check for inf/NaN, skip the step and back off on overflow, grow
#   after a run of good steps. Ours matches `torch.amp.GradScaler` exactly.
# - Recipe: bfloat16 where the hardware computes it natively (Ampere and newer GPUs,
#   `torch.cuda.is_bf16_supported(including_emulation=False)`; CPUs), float16 + `GradScaler` otherwise (T4,
#   V100); `dlcourse.config.amp_dtype(device)` decides and `dlcourse.fit(..., amp=True)` uses it.
# - TF32 runs float32 matmuls on tensor cores with float16's input precision (10 mantissa bits, a relative
#   error of order $2^{-11}$ per input): off by default for matmuls
#   (`torch.set_float32_matmul_precision("high")` switches it on), on by default for cuDNN convolutions. Say
#   which when you report a float32 time.
# - Whether low precision is faster depends on the hardware and on the size of the matrix products: measure
#   time and memory on the machine you train on, with a model of the size you train.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **float8.** PyTorch has `torch.float8_e5m2` (5 exponent, 2 mantissa bits) and `torch.float8_e4m3fn` (4,
#    3). Compute their limits with `format_limits` and compare with `torch.finfo`. One of them disagrees on
#    the maximum: find out why (hint: what does "fn" say about infinities?).
# 2. **Stochastic rounding.** Section 1 showed that adding $10^{-4}$ to a bfloat16 number stalls. Round each
#    sum up or down at random, with probabilities given by the distance to the two neighbours. Does the sum of
#    10,000 additions now reach about 1 on average?
# 3. **Scale over training.** Record `scaler.get_scale()` after every step of a longer float16 run (on a GPU,
#    or with the MLP on a CPU) with the default `growth_interval`. How often is a step skipped?
# 4. **Clipping with a scaler.** Gradient clipping must see the *unscaled* gradients. Add
#    `torch.nn.utils.clip_grad_norm_` to `amp_step` in the right place (`scaler.unscale_` first) and check
#    that our `DynamicLossScaler` still matches `GradScaler` (then compare with `dlcourse.fit(...,
#    clip_grad_norm=...)`).
# 5. **Where does the time go?** Time the forward pass and the backward pass of section 7's transformer
#    separately in each precision. Which one gains more from bfloat16 on your machine?
# 6. **Where tensor cores start to pay.** Repeat section 7's table for d_model 128, 256, 512 and 1024 (keep
#    the tokens per step fixed) and plot the bfloat16 speed-up against d_model. Where does it cross 1 on your
#    GPU?
# 7. **Pure bfloat16.** Convert the whole model with `model.to(torch.bfloat16)` (no float32 master weights)
#    and train the digits MLP with plain SGD and a small learning rate. Compare with autocast, and explain the
#    difference with section 1's last table.
