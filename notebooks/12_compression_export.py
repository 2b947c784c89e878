# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 12 · Compression and export
#
# A trained model is usually too big, too slow, or tied to the Python process that trained it. This notebook
# takes one trained network and shrinks it three ways: fewer bits per weight (quantisation, after training or
# during it), fewer weights (pruning), and a smaller network that learns from the big one (knowledge
# distillation). Then it takes the model out of Python: `torch.export` captures it as a graph, ONNX stores that
# graph in a portable file, and ONNX Runtime runs it. Every size, speed and accuracy is measured here, on the
# machine running the notebook.
#
# **Learning goals**
# - Quantise a tensor to int8 from scratch, symmetric and asymmetric (with a zero point), state the rounding
#   error bound and check it, and match `torch.quantize_per_tensor` bit for bit.
# - Quantise a model's linear layers with `torchao` (int8 weights, int8 weights and activations, int4) and
#   measure the bytes really stored, latency and accuracy.
# - Write fake quantisation with a straight-through estimator, check it against PyTorch's, and show where
#   quantisation-aware training beats quantising after training.
# - Prune by magnitude, unstructured (global and per layer) and structured (whole neurons), reproduce
#   `torch.nn.utils.prune`'s masks, and plot accuracy against sparsity.
# - Write the temperature-scaled distillation loss and train a small student that beats the same student
#   trained alone on the same budget.
# - Export with `torch.export` and to ONNX with a dynamic batch dimension, run it in ONNX Runtime, and check that
#   its outputs equal PyTorch's.
#
# **Prerequisites:** notebook 01 (training loop, `dlcourse.fit`, cross-entropy and softmax); notebook 05 helps
# (regularisation). Softmax with a temperature and the KL divergence are explained here.
#
# **Time:** seconds at `smoke`; a couple of minutes at `small` on a laptop CPU; at `full` the same experiments
# with a wider teacher, more seeds and more epochs. The last cell prints how long this run took on your machine.
#
# The quantisation and ONNX sections need the `export` extra (`torchao`, `onnx`, `onnxscript`, `onnxruntime`);
# `make lab` installs it, or `pip install "dlcourse[export]"`.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import contextlib
import copy
import importlib.util
import io
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize, prune

import dlcourse
from dlcourse.models import count_parameters, mlp

cfg = dlcourse.setup(seed=0)
device = cfg.device
t_start = time.perf_counter()
run_tmp = tempfile.TemporaryDirectory(prefix="dlcourse-12-")  # removed at the end (or when the kernel exits)
run_dir = Path(run_tmp.name)                                  # every file this notebook writes goes here
print("files go to a temporary run directory:", run_dir)

# %% [markdown]
# ## 1. A model worth compressing
# The **teacher**: an MLP on the 8×8 digits (64 pixels → two wide hidden layers → 10 logits). Every method below
# starts from this one trained model, so their numbers are comparable. Three small helpers measure what
# compression is about: the size of the saved weights on disk, the latency of a forward pass (the best of
# several repeats, because a shared machine only ever makes code *slower*), and test accuracy.
#
# The teacher trains on this notebook's device (a GPU, if there is one). Everything after that works on a CPU
# copy, `teacher_cpu`, on purpose: a model this small is deployed on a CPU, the ONNX Runtime section uses ONNX
# Runtime's CPU provider, and the sizes, latencies and masks below are then measured on the same device for every
# variant. Only the quantisation-aware training of section 3 and the distillation experiment of section 5 train
# on the device again (and packed int4, which has a kernel only on CUDA GPUs here, runs there).

# %%
splits = dlcourse.data.digits(flatten=True, seed=cfg.seed)
X_train, y_train = splits.train.tensors                  # (N_train, 64), (N_train,)
X_test, y_test = splits.test.tensors                     # (N_test, 64), (N_test,)
train_loader, val_loader, test_loader = splits.loaders(batch_size=64, seed=cfg.seed)

hidden = cfg.pick(smoke=512, small=1024, full=2048)
num_epochs = cfg.pick(smoke=6, small=20, full=40)
torch.manual_seed(cfg.seed)
teacher = mlp(64, [hidden, hidden], 10).to(device)
history = dlcourse.fit(teacher, torch.optim.Adam(teacher.parameters(), lr=1e-3), train_loader, val_loader,
                       num_epochs=num_epochs, progress=cfg.pick(smoke=False, small=True, full=True))
teacher.eval()
teacher_cpu = copy.deepcopy(teacher).cpu().eval()        # quantised variants and ONNX Runtime run on the CPU
print(teacher_cpu, f"\n{count_parameters(teacher_cpu):,} parameters")


# %%
def test_accuracy(model: nn.Module) -> float:
    """Accuracy on the digits test split (the model stays on its own device)."""
    return dlcourse.evaluate(model, test_loader)["acc"]


def size_on_disk(model: nn.Module, name: str) -> int:
    """Bytes of ``model.state_dict()`` saved with torch.save into the run directory."""
    path = run_dir / f"{name}.pt"
    torch.save(model.state_dict(), path)
    return path.stat().st_size


def latency_ms(fn, X, *, repeats: int = cfg.pick(smoke=5, small=10, full=10),
               number: int = cfg.pick(smoke=10, small=10, full=10)) -> float:
    """Milliseconds per call of ``fn(X)``: best of ``repeats`` timings of ``number`` calls, after a warm-up.

    For a CUDA tensor X the GPU is synchronised before each clock reading (its kernels run asynchronously)."""
    sync = torch.cuda.synchronize if getattr(X, "is_cuda", False) else lambda: None
    with torch.inference_mode():
        fn(X)
        best = math.inf
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            for _ in range(number):
                fn(X)
            sync()
            best = min(best, (time.perf_counter() - t0) / number)
    return 1e3 * best


def linears(model: nn.Module) -> list[nn.Linear]:
    """The model's Linear layers, in order."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def show_table(header: tuple, rows: list[tuple]) -> None:
    """Print rows as an aligned text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for i, row in enumerate((header, *rows)):
        cells = [str(x).ljust(w) if j == 0 else str(x).rjust(w) for j, (x, w) in enumerate(zip(row, widths))]
        print("  ".join(cells))
        if i == 0:
            print("  ".join("-" * w for w in widths))


teacher_acc = test_accuracy(teacher_cpu)
print(f"teacher test accuracy {teacher_acc:.1%}, "
      f"weights on disk {size_on_disk(teacher_cpu, 'teacher') / 1024:.0f} KiB")
assert teacher_acc > cfg.pick(smoke=0.9, small=0.95, full=0.95)

# %% [markdown]
# ## 2. Int8 quantisation of one tensor, from scratch
# Quantisation stores a float tensor `x` as small integers `q` plus one float `scale` and one integer
# `zero_point`, related by the affine map
# $$x \approx \hat x = \text{scale}\cdot(q - \text{zero\_point}), \qquad q = \operatorname{clamp}\big(\operatorname{round}(x/\text{scale}) + \text{zero\_point},\,-128,\,127\big).$$
# An int8 takes a quarter of a float32's bytes. Two ways to choose `scale` and `zero_point`:
#
# - **Symmetric**: `zero_point = 0` and `scale = max|x| / 127`, so $[-\max|x|, \max|x|]$ maps onto
#   $[-127, 127]$. Simple, and zero is exact. It wastes half the codes when `x` is one-sided (ReLU outputs are
#   never negative).
# - **Asymmetric** (affine): the range $[lo, hi] = [\min(x, 0), \max(x, 0)]$ maps onto all 256 codes
#   $[-128, 127]$: `scale = (hi − lo) / 255` and `zero_point = −128 − round(lo / scale)`, the integer that
#   stands for 0.0 (the range includes 0 so that zero, e.g. padding or a ReLU's output, is exact).
#
# **Error bound.** For every value inside the range, `round` moves $x/\text{scale}$ by at most ½, so
# $|x - \hat x| \le \text{scale}/2$. Values outside the range are clipped, and their error is unbounded; that is
# why the range comes from the data. To reproduce PyTorch's codes bit for bit, we compute the scale in float32
# and multiply by its reciprocal `1 / scale` instead of dividing, as PyTorch's kernels do (the two can differ by
# one code when $x/\text{scale}$ lands within rounding of a halfway point); `torch.round` rounds halves to even,
# like those kernels.

# %%
def quantize_symmetric(x: torch.Tensor, qmax: float = 127.0) -> tuple[torch.Tensor, float, int]:
    """x (any shape, float) -> (q int8 of x's shape, scale, zero_point = 0), with scale = max|x| / qmax."""
    amax = x.abs().max()                                   # () float32, like every scale below
    scale = amax / qmax if amax > 0 else torch.ones(())    # an all-zero tensor: any scale works
    q = torch.clamp(torch.round(x * (1 / scale)), -128, 127).to(torch.int8)
    return q, scale.item(), 0


def quantize_asymmetric(x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    """x (any shape, float) -> (q int8, scale, zero_point): [min(x, 0), max(x, 0)] mapped onto [-128, 127]."""
    lo, hi = x.min().clamp(max=0), x.max().clamp(min=0)   # () each: the range always contains 0
    scale = (hi - lo) / 255 if hi > lo else torch.ones(())
    zero_point = int(-128 - torch.round(lo / scale))       # the code that stands for 0.0
    q = torch.clamp(torch.round(x * (1 / scale)) + zero_point, -128, 127).to(torch.int8)
    return q, scale.item(), zero_point


def dequantize(q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """int8 codes -> float32 values scale * (q - zero_point)."""
    return (q.to(torch.float32) - zero_point) * scale


# %% [markdown]
# Check both against PyTorch's quantised tensors (`torch.quantize_per_tensor`, which stores the same int8 codes)
# and against fake quantisation (`torch.fake_quantize_per_tensor_affine`: quantise and dequantise in one float
# operation, the building block of quantisation-aware training in section 3). Quantised *tensors* (dtype
# `torch.qint8`, made by `torch.quantize_per_tensor` or `torch.quantize_per_channel`) are deprecated in favour of
# the `torchao` library, and creating one warns (once per process, unless `torch.set_warn_always(True)`); the
# fake-quantisation functions return ordinary float tensors and do not warn. The next cell records which of the
# four warn in the PyTorch you are running. All four still define what int8 means in PyTorch, so they are our
# reference.

# %%
def warns(fn) -> bool:
    """Whether calling ``fn()`` emits a warning. torch.set_warn_always(True) lifts PyTorch's once-per-process rule
    for the call, so the answer does not depend on what ran before."""
    was_always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.set_warn_always(was_always)
    return len(caught) > 0


x, scales, zero_points = torch.randn(4, 8), torch.full((4,), 0.1), torch.zeros(4, dtype=torch.int32)
deprecated = {
    "torch.quantize_per_tensor": warns(lambda: torch.quantize_per_tensor(x, 0.1, 0, torch.qint8)),
    "torch.quantize_per_channel": warns(
        lambda: torch.quantize_per_channel(x, scales.double(), zero_points.long(), 0, torch.qint8)),
    "torch.fake_quantize_per_tensor_affine": warns(
        lambda: torch.fake_quantize_per_tensor_affine(x, 0.1, 0, -128, 127)),
    "torch.fake_quantize_per_channel_affine": warns(
        lambda: torch.fake_quantize_per_channel_affine(x, scales, zero_points, 0, -128, 127)),
}
for name, warned in deprecated.items():
    print(f"{name:40} {'warns (deprecated)' if warned else 'no warning'}")
assert not deprecated["torch.fake_quantize_per_tensor_affine"]
assert not deprecated["torch.fake_quantize_per_channel_affine"]
if torch.torch_version.TorchVersion(torch.__version__) >= "2.14":   # the version this notebook was written for
    assert deprecated["torch.quantize_per_tensor"] and deprecated["torch.quantize_per_channel"]
# recorded above; from here on the quantised tensors are only a reference, so keep the output quiet
warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.*deprecated")

# %%
W1 = teacher_cpu[3].weight.detach()                                      # (hidden, hidden) second-layer weights
with torch.no_grad():
    H1 = teacher_cpu[2](teacher_cpu[1](X_test))                          # (N_test, hidden), all >= 0
rows = []
for tensor_name, x in (("weights", W1), ("ReLU activations", H1)):
    for scheme, quantize in (("symmetric", quantize_symmetric), ("asymmetric", quantize_asymmetric)):
        q, scale, zp = quantize(x)
        x_hat = dequantize(q, scale, zp)
        reference = torch.quantize_per_tensor(x, scale, zp, torch.qint8)
        assert torch.equal(q, reference.int_repr()), "the int8 codes must equal PyTorch's"
        assert torch.allclose(x_hat, reference.dequantize(), rtol=0, atol=0)
        fake = torch.fake_quantize_per_tensor_affine(x, scale, zp, -128, 127)
        assert torch.allclose(x_hat, fake, rtol=0, atol=1e-7)
        err = (x - x_hat).abs().max().item()
        assert err <= scale / 2 * (1 + 1e-4), "inside the range: error at most scale/2 (plus float rounding)"
        rows.append((tensor_name, scheme, f"{scale:.2e}", zp, f"{err:.2e}", f"{scale / 2:.2e}",
                     f"{(x - x_hat).pow(2).mean().sqrt().item():.2e}"))
show_table(("tensor", "scheme", "scale", "zero_point", "max |error|", "scale/2", "RMS error"), rows)

# %% [markdown]
# The codes equal PyTorch's exactly, and the largest error sits right at `scale/2`. On the weights the two schemes
# are close (the range is nearly symmetric). On the ReLU activations the symmetric scheme never uses the 128
# negative codes, so its scale, and its error, is about twice the asymmetric one's.
#
# **One outlier ruins a per-tensor scale.** A single large weight sets `max|x|` for the whole tensor, and every
# other weight is then rounded on a coarse grid. Giving each output row (each *channel*) its own scale fixes that
# for all rows but the outlier's: that is per-channel quantisation, the default for weights in most int8 toolkits.

# %%
def quantize_per_row(W: torch.Tensor, qmax: float = 127.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per row: W (out, in) -> (q int8 (out, in), scales (out,))."""
    amax = W.abs().amax(dim=1, keepdim=True)                              # (out, 1)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))     # (out, 1)
    q = torch.clamp(torch.round(W * (1.0 / scale)), -128, 127).to(torch.int8)
    return q, scale.squeeze(1)


W_outlier = W1.clone()
W_outlier[0, 0] = 20 * W1.abs().max()                                     # one weight twenty times the largest
q_t, s_t, _ = quantize_symmetric(W_outlier)
q_r, s_r = quantize_per_row(W_outlier)
reference = torch.quantize_per_channel(W_outlier, s_r.double(), torch.zeros(len(s_r), dtype=torch.long),
                                       axis=0, dtype=torch.qint8)
assert torch.equal(q_r, reference.int_repr())
others = torch.ones_like(W_outlier, dtype=torch.bool)
others[0] = False                                                         # every row but the outlier's
err_tensor = (W_outlier - dequantize(q_t, s_t, 0))[others].abs().mean().item()
err_row = (W_outlier - q_r.float() * s_r[:, None])[others].abs().mean().item()
zeroed = (q_t[others] == 0).float().mean().item()
print(f"mean |error| on the other rows: per-tensor {err_tensor:.2e}, per-row {err_row:.2e} "
      f"({err_tensor / err_row:.0f}x smaller); per-tensor rounds {zeroed:.0%} of them to 0")
assert err_row < err_tensor / 5

# %% [markdown]
# ## 3. Quantising a model: torchao, and training for it
# `torchao.quantization.quantize_(model, config)` replaces, in place, the weight of every `nn.Linear` with a
# *tensor subclass* that holds the quantised data and routes the layer's matrix product to code that understands
# it. The config says what is quantised:
#
# - `Int8WeightOnlyConfig()`: int8 weights with one scale per output row (per channel, symmetric). Activations
#   stay float and the product uses the dequantised weights: a smaller model, float arithmetic.
# - `Int8DynamicActivationInt8WeightConfig()`: the same weights, and each incoming batch is quantised to int8 too,
#   one scale per row of the batch from that batch's own range (*dynamic*: no calibration data). The product runs
#   on int8 codes with int32 accumulation and is scaled back to float.
# - `Int4WeightOnlyConfig(group_size=g)`: 4-bit weights, one scale per group of `g` inputs, packed two to a byte.
#   Only a dedicated kernel multiplies packed int4: the default packing calls the `mslk` kernel library,
#   `int4_packing_format="tile_packed_to_4d"` the tinygemm kernel of CUDA GPUs (bfloat16 only).
# - `IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerAxis(0))`: 1- to 8-bit weights on any device,
#   one scale per row, but each value in its own int8 byte (unpacked).
#
# (The older eager API, `torch.ao.quantization.quantize_dynamic`, is deprecated and warns on use; torchao is its
# successor.) First, what does a quantised weight hold?

# %%
pytree_log = logging.getLogger("torch.utils._pytree")
pytree_log_level = pytree_log.level
pytree_log.setLevel(logging.ERROR)        # quiet: torchao 0.18 registers an Enum the way torch 2.14 deprecates
try:
    import torchao
    from torchao.quantization import (Int4WeightOnlyConfig, Int8DynamicActivationInt8WeightConfig,
                                      Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_)
    from torchao.quantization.granularity import PerAxis
except ImportError as err:
    raise ImportError(f"{err.name} is not installed. This section quantises with torchao: install the course's "
                      f'extra with  pip install "dlcourse[export]"  (make lab does it).') from err
finally:
    pytree_log.setLevel(pytree_log_level)

from dlcourse.quantization import inner_tensors, state_dict_bytes, stored_bytes


def quantized(model: nn.Module, config) -> nn.Module:
    """A copy of ``model`` quantised by torchao with ``config`` (quantize_ itself works in place)."""
    model = copy.deepcopy(model)
    quantize_(model, config)
    return model


teacher_w8 = quantized(teacher_cpu, Int8WeightOnlyConfig())
W_q = teacher_w8[3].weight                                                # stands for W1, the (hidden, hidden) weight
print(f"torchao {torchao.__version__}: {type(W_q).__name__}, dtype {W_q.dtype}, shape {tuple(W_q.shape)}, "
      f"W_q.nbytes = {W_q.nbytes:,}")
for name, t in inner_tensors(W_q).items():
    print(f"  {name:10} {str(t.dtype):13} {str(tuple(t.shape)):12} {stored_bytes(t):>9,} bytes")
print(f"stored: {stored_bytes(W_q):,} bytes, {stored_bytes(W_q) / (4 * W1.numel()):.3f} of float32's")
q_ours, s_ours = quantize_per_row(W1, qmax=127.5)
assert torch.equal(W_q.qdata, q_ours), "torchao's codes are quantize_per_row's with qmax=127.5"
assert torch.allclose(W_q.scale.squeeze(1), s_ours, rtol=1e-6, atol=0) and not W_q.zero_point.any()
assert W_q.nbytes == 4 * W1.numel() and stored_bytes(W_q) < 0.3 * W_q.nbytes

# %% [markdown]
# int8 codes of the matrix's shape, and per output row one float32 scale and one int8 zero point (all 0: the
# scheme is symmetric). The codes are our `quantize_per_row` with `qmax=127.5`: torchao spreads
# $[-\max|w|, \max|w|]$ over all 255 steps from −128 to 127 (the largest weight lands on ±127.5, and rounding or
# the clamp puts it on −128 or 127). The subclass's own `nbytes` reports the float32 tensor it stands for, so size
# is measured by counting its inner tensors (`dlcourse.quantization.stored_bytes`, summed over a state dict by
# `state_dict_bytes`) or the file `torch.save` writes.
#
# Now the numbers that matter for each variant: bytes, latency at batch size 1 (one request at a time) and 256 (a
# batch job), and test accuracy. Latency is measured on the CPU copy, because a model this small is deployed on a
# CPU; the int4 kernels are measured separately below.

# %%
X_1, X_256 = X_test[:1], X_test[:256]
variants = {
    "fp32": teacher_cpu,
    "int8 weights": teacher_w8,
    "int8 weights + activations": quantized(teacher_cpu, Int8DynamicActivationInt8WeightConfig()),
    "int4 weights, one per byte": quantized(teacher_cpu, IntxWeightOnlyConfig(weight_dtype=torch.int4,
                                                                              granularity=PerAxis(0))),
}
measured = {name: dict(stored=state_dict_bytes(model), file=size_on_disk(model, f"variant{i}"),
                       acc=test_accuracy(model), ms_1=latency_ms(model, X_1), ms_256=latency_ms(model, X_256))
            for i, (name, model) in enumerate(variants.items())}
fp32 = measured["fp32"]
show_table(("model (torchao, on the CPU)", "state dict (KiB)", "vs fp32", "file (KiB)", "latency, batch 1 (ms)",
            "latency, batch 256 (ms)", "test accuracy"),
           [(name, f"{m['stored'] / 1024:.0f}", f"{m['stored'] / fp32['stored']:.3f}", f"{m['file'] / 1024:.0f}",
             f"{m['ms_1']:.3f}", f"{m['ms_256']:.3f}", f"{m['acc']:.1%}") for name, m in measured.items()])
for name in ("int8 weights", "int8 weights + activations"):
    assert measured[name]["stored"] < 0.3 * fp32["stored"], "int8 weights take about a quarter of the bytes"
    assert measured[name]["acc"] >= fp32["acc"] - 0.02, "int8 should cost at most a little accuracy"
assert measured["int4 weights, one per byte"]["stored"] == measured["int8 weights"]["stored"]

# %% [markdown]
# Both int8 variants store about a quarter of the float32 bytes (int8 codes, 5 bytes per row for the scale and
# zero point, float32 biases), and accuracy barely moves: the error bound of section 2 is small next to the
# margins between the logits. The int4 row separates bits from bytes: its weights take only 16 values per row, yet
# each sits in its own byte, so the model is exactly as large as int8. Only packing two values per byte halves it
# again, and that needs the int4 kernels:

# %%
def int4_packed(model: nn.Module) -> tuple[nn.Module | None, torch.dtype, str]:
    """torchao's packed int4 weight-only copy of ``model`` where this machine has a kernel for it.

    Returns (model, dtype its inputs need, "") or (None, dtype, why it could not run)."""
    if device.type == "cuda":       # tinygemm: CUDA (compute capability 8.0 or newer), bfloat16
        model, dtype = copy.deepcopy(model).to(device, torch.bfloat16), torch.bfloat16
        config = Int4WeightOnlyConfig(group_size=32, int4_packing_format="tile_packed_to_4d")
    else:                           # the default packing calls kernels from the mslk library
        model, dtype = copy.deepcopy(model), torch.float32
        config = Int4WeightOnlyConfig(group_size=32)
    try:
        quantize_(model, config)
        with torch.no_grad():
            model(X_1.to(device, dtype))
    except (ImportError, NotImplementedError, RuntimeError, ValueError) as err:
        return None, dtype, f"{type(err).__name__}: {err}"
    return model, dtype, ""


teacher_w4, w4_dtype, w4_missing = int4_packed(teacher_cpu)
if teacher_w4 is None:
    print(f"packed int4 (Int4WeightOnlyConfig) did not run on this machine ({device.type}): {w4_missing}\n"
          "  It needs an int4 kernel: the mslk library, or on a CUDA GPU the tinygemm packing this cell uses there.")
else:
    with torch.no_grad():
        w4_acc = (teacher_w4(X_test.to(device, w4_dtype)).argmax(dim=1).cpu() == y_test).float().mean().item()
    w4_bytes = state_dict_bytes(teacher_w4)
    print(f"packed int4 on {device.type} ({w4_dtype}): state dict {w4_bytes / 1024:.0f} KiB "
          f"({w4_bytes / fp32['stored']:.3f} of fp32's float32 bytes), test accuracy {w4_acc:.1%}, latency at "
          f"batch 256 {latency_ms(teacher_w4, X_256.to(device, w4_dtype)):.3f} ms (on {device.type}: not "
          "comparable with the CPU table)")
    assert w4_bytes < measured["int8 weights"]["stored"], "packed int4 is smaller than int8"

# %% [markdown]
# Speed is the least predictable column. In eager mode each torchao layer adds steps around the product
# (dequantising the weights, or quantising the batch), and the product itself runs on whatever kernel torchao
# finds for this CPU; its fast paths are written for `torch.compile` and for GPUs, which this table does not
# measure. Compare the two latency columns above: what they show is this machine's answer, not a general one.
#
# ### Quantisation-aware training
# Quantising a trained model once is **post-training quantisation** (PTQ): the model never saw the rounding. With
# $b$ bits a row has $2^b$ levels, so each bit less doubles the step and the rounding error. **Quantisation-aware
# training** (QAT) lets the model adapt: during training the forward pass uses the weights as they will be
# quantised (*fake quantisation*: quantise and dequantise, in float), so the loss sees the rounding, while the
# optimiser keeps updating the float weights underneath.
#
# One obstacle: `round` has gradient 0 almost everywhere. The **straight-through estimator** (STE) treats the
# rounding as the identity in the backward pass: the gradient passes unchanged for values inside the representable
# range and is 0 for values the clamp cut off (moving those does not change the output). That is what
# `torch.fake_quantize_per_channel_affine` computes; here it is from scratch, a `torch.autograd.Function` with its
# own backward. (The one-line version `x + (fake_quant(x) - x).detach()` lets the gradient through everywhere,
# clipped values included. With the scale below, the only weight of a row the clamp can cut is its largest
# positive one, which lands on $2^{b-1} - \tfrac12$ and rounds, half to even, one past the last code.)
#
# The weight quantiser generalises section 2's per-row int8 to $b$ bits with torchao's convention: codes in
# $[-2^{b-1}, 2^{b-1} - 1]$ and, per row, `scale = max|w| / ((2^b - 1) / 2)` (127.5 for int8, 7.5 for int4). The
# scale is a constant for the backward pass: only the weights learn.

# %%
class FakeQuantize(torch.autograd.Function):
    """Quantise and dequantise x with scale and zero_point (broadcast against x); straight-through backward."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin: int, qmax: int):
        q = torch.round(x * (1 / scale)) + zero_point                      # codes before the clamp
        ctx.save_for_backward((q >= qmin) & (q <= qmax))                   # where the gradient passes
        return (torch.clamp(q, qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad_output):
        (inside,) = ctx.saved_tensors
        return grad_output * inside, None, None, None, None               # nothing for scale, zero point, range


def fake_quantize_rows(W: torch.Tensor, bits: int) -> torch.Tensor:
    """W (out, in) fake-quantised to ``bits`` bits, symmetric, one scale per row; gradients by the STE."""
    amax = W.detach().abs().amax(dim=1, keepdim=True)                      # (out, 1), a constant
    scale = torch.where(amax > 0, amax / ((2**bits - 1) / 2), torch.ones_like(amax))
    return FakeQuantize.apply(W, scale, 0, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


# the same values and gradients as PyTorch's fake quantisation, with a scale small enough to clip some weights
scale = W1.abs().amax(dim=1) / 12                                         # (hidden,): |w| > 7.5 scale is clipped
W_ours, W_torch = W1.clone().requires_grad_(), W1.clone().requires_grad_()
fq_ours = FakeQuantize.apply(W_ours, scale[:, None], 0, -8, 7)
fq_torch = torch.fake_quantize_per_channel_affine(W_torch, scale, torch.zeros(len(scale), dtype=torch.int32), 0,
                                                  -8, 7)
grad_output = torch.randn_like(W1)
fq_ours.backward(grad_output)
fq_torch.backward(grad_output)
assert torch.equal(fq_ours, fq_torch) and torch.equal(W_ours.grad, W_torch.grad)
print(f"equal to torch.fake_quantize_per_channel_affine, values and gradients; the clamp cut "
      f"{(W_ours.grad == 0).float().mean().item():.1%} of the weights off from the gradient")
# with the scale from max|w|, the clamp cuts at most each row's largest weight
W_rows = W1.clone().requires_grad_()
fake_quantize_rows(W_rows, 4).backward(grad_output)
assert not ((W_rows.grad == 0) & (W1 != W1.amax(dim=1, keepdim=True))).any()
# and at 4 bits with scales from max|w| it reproduces torchao's int4 weights of the table above
W_int4 = variants["int4 weights, one per byte"][3].weight
assert torch.allclose(fake_quantize_rows(W1, 4), W_int4.qdata.float() * W_int4.scale, rtol=1e-6, atol=0)

# %% [markdown]
# To train through the quantiser, register it as a **parametrisation** of each linear layer's weight
# (`torch.nn.utils.parametrize`): `layer.weight` is then recomputed as `fake_quantize_rows(original, bits)` at every
# use, gradients flow to the float original, and `dlcourse.fit` trains the model unchanged. The experiment: a small
# MLP (64 → 32 → 32 → 10) trained in float, then given the same number of extra epochs two ways. **PTQ**: the extra epochs in float,
# then the weights are quantised. **QAT**: the extra epochs with the quantiser in the forward pass. Test accuracy of
# both, for several bit widths and seeds; the float model after its extra epochs is the reference.

# %%
class FakeQuantizedWeight(nn.Module):
    """A parametrisation: the weight as its ``bits``-bit per-row fake quantisation."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, W: torch.Tensor) -> torch.Tensor:
        return fake_quantize_rows(W, self.bits)


def with_fake_quant(model: nn.Module, bits: int) -> nn.Module:
    """A copy of ``model`` whose Linear weights are fake-quantised to ``bits`` bits at every use."""
    model = copy.deepcopy(model)
    for layer in linears(model):
        parametrize.register_parametrization(layer, "weight", FakeQuantizedWeight(bits))
    return model


def train(model: nn.Module, num_epochs: int) -> nn.Module:
    """Adam at lr 3e-3 (a small network trains fast) on the digits training split; returns the model in eval mode."""
    dlcourse.fit(model, torch.optim.Adam(model.parameters(), lr=3e-3), train_loader, num_epochs=num_epochs,
                 progress=False)
    return model.eval()


qat_hidden = 32                                           # a small network: 64 -> 32 -> 32 -> 10
qat_epochs, extra_epochs = cfg.pick(smoke=(6, 2), small=(15, 4), full=(20, 5))
qat_bits = cfg.pick(smoke=[8, 4, 2], small=[8, 4, 3, 2], full=[8, 4, 3, 2])
qat_seeds = list(range(cfg.pick(smoke=2, small=4, full=8)))
float_acc, ptq_acc, qat_acc = {}, {}, {}                  # keyed by seed, and (seed, bits)
for seed in qat_seeds:
    torch.manual_seed(seed)
    base = train(mlp(64, [qat_hidden, qat_hidden], 10).to(device), qat_epochs)
    longer = train(copy.deepcopy(base), extra_epochs)                         # PTQ's float model: same epochs
    float_acc[seed] = test_accuracy(longer)
    for bits in qat_bits:
        ptq_acc[seed, bits] = test_accuracy(with_fake_quant(longer, bits))      # rounded once, after training
        qat_model = train(with_fake_quant(base, bits), extra_epochs)            # trained through the rounding
        qat_acc[seed, bits] = test_accuracy(qat_model)
        if bits == min(qat_bits):
            low_bit_model = qat_model                                         # the last seed's, kept below

show_table(("weight bits", "levels per row", "PTQ", "QAT", "QAT - PTQ", "seeds where QAT is better"),
           [(bits, 2**bits, f"{np.mean([ptq_acc[s, bits] for s in qat_seeds]):.1%}",
             f"{np.mean([qat_acc[s, bits] for s in qat_seeds]):.1%}",
             f"{100 * np.mean([qat_acc[s, bits] - ptq_acc[s, bits] for s in qat_seeds]):+.1f} points",
             f"{sum(qat_acc[s, bits] > ptq_acc[s, bits] for s in qat_seeds)} of {len(qat_seeds)}")
            for bits in qat_bits])
mean_float = np.mean(list(float_acc.values()))
print(f"float model (after the same extra epochs): {mean_float:.1%}; "
      f"{count_parameters(base):,} parameters, mean over {len(qat_seeds)} seeds")
low, high_bits = min(qat_bits), max(qat_bits)
assert abs(np.mean([ptq_acc[s, high_bits] for s in qat_seeds]) - mean_float) <= 0.02, "8 bits: PTQ is enough"
ptq_low, qat_low = (np.mean([acc[s, low] for s in qat_seeds]) for acc in (ptq_acc, qat_acc))
assert qat_low - ptq_low >= 0.02, "few bits: QAT should beat PTQ"
assert qat_low - ptq_low >= 0.5 * (mean_float - ptq_low), "QAT should win back most of what PTQ loses"

# %% [markdown]
# At 8 bits, PTQ matches the float model (within 2 points, asserted): there is nothing for QAT to recover. Each bit
# less doubles the step, and at 2 bits (4 levels per row) PTQ loses clearly while QAT, trained with exactly that
# rounding, wins back at least half of the loss (asserted; usually more). In between, at 4 bits, per-row scales
# keep PTQ close on this task, and QAT has little to add: the table shows how little on your run. The price of QAT is training: a few epochs with one extra element-wise pass over the
# weights per step. torchao packages the same recipe as `torchao.quantization.qat.QATConfig` (insert fake
# quantisers, train, then convert to a real quantised model with a `quantize_` config).
#
# After training, the parametrisation is made permanent with `parametrize.remove_parametrizations(...,
# leave_parametrized=True)`: the weights are then the quantised values themselves, ready for an integer format.

# %%
for layer in linears(low_bit_model):
    parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
levels = max(int(row.unique().numel()) for layer in linears(low_bit_model) for row in layer.weight.detach())
print(f"{low}-bit QAT model (seed {qat_seeds[-1]}): at most {levels} distinct values per weight row, "
      f"test accuracy {test_accuracy(low_bit_model):.1%}")
assert levels <= 2**low and test_accuracy(low_bit_model) == qat_acc[qat_seeds[-1], low]

# %% [markdown]
# ## 4. Pruning: fewer weights
# **Magnitude pruning** sets the weights with the smallest absolute values to zero and keeps them there with a
# 0/1 *mask*. Three choices:
#
# - **unstructured, global**: rank all weights of all layers together and zero the smallest fraction `s`
#   (layers with many small weights lose more);
# - **unstructured, per layer**: zero the smallest fraction `s` of each layer separately;
# - **structured**: remove whole output neurons, the rows of a weight matrix with the smallest L2 norm
#   (and the neuron's bias, so that it outputs exactly 0).
#
# The number pruned is `round(s · n)`; among equal magnitudes, the element that comes first (in flattened order)
# is pruned first. A stable sort gives that rule directly.

# %%
def magnitude_masks(weights: list[torch.Tensor], sparsity: float, scope: str = "global") -> list[torch.Tensor]:
    """0/1 masks (each of its weight's shape and dtype) zeroing the round(sparsity * n) smallest |w|.

    scope="global" ranks all weights together (n = all of them); scope="layer" prunes each tensor on its own.
    """
    if scope == "layer":
        return [magnitude_masks([w], sparsity)[0] for w in weights]
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])    # (n,)
    k = round(sparsity * magnitudes.numel())
    keep = torch.ones_like(magnitudes)
    keep[torch.argsort(magnitudes, stable=True)[:k]] = 0                     # the k smallest; ties: first first
    return [m.view_as(w) for m, w in zip(keep.split([w.numel() for w in weights]), weights)]


def row_mask(weight: torch.Tensor, amount: float) -> torch.Tensor:
    """0/1 mask of weight's shape (out, in) zeroing the round(amount * out) rows with the smallest L2 norm."""
    norms = weight.detach().norm(dim=1)                                     # (out,)
    k = round(amount * len(norms))
    keep = torch.ones_like(norms)
    keep[torch.argsort(norms, stable=True)[:k]] = 0
    return keep[:, None].expand_as(weight).clone()                         # (out, in)


def masked_copy(model: nn.Module, masks: list[torch.Tensor], *, neurons: bool = False) -> nn.Module:
    """A copy of ``model`` whose first len(masks) Linear weights are multiplied by ``masks``.

    neurons=True also zeroes the bias of every pruned row, so a pruned neuron outputs exactly 0.
    """
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for layer, mask in zip(linears(pruned), masks):
            layer.weight.mul_(mask)
            if neurons:
                layer.bias.mul_(mask[:, 0])
    return pruned


# %% [markdown]
# `torch.nn.utils.prune` does the same with a reparametrisation: it renames `weight` to `weight_orig`, registers
# a buffer `weight_mask`, and recomputes `weight = weight_orig * weight_mask` before every forward pass. Our masks
# must prune what its masks prune, for each of the three kinds.
#
# **Ties decide what "the same" means.** `prune` picks the k smallest with `torch.topk`, which makes no promise
# about *which* of several equal values it returns. Exact ties are not rare: float32 has about 8 million values
# between one power of two and the next, so a layer of millions of weights holds many pairs with exactly the
# same magnitude (the teacher at `full` scale has about 4 million weights). When such a pair straddles the
# threshold, the k-th smallest magnitude, one of the two is pruned, and `topk` may pick either; our rule picks
# the first. Both masks are then correct, and they differ. So the check compares what the specification fixes:
# the same number pruned, and the same choice for every weight whose magnitude is *not* tied with the
# threshold; among the tied ones either choice is right. The table counts the tied weights and says whether the
# masks happened to be identical as well.

# %%
def same_pruning(ours: torch.Tensor, theirs: torch.Tensor, scores: torch.Tensor) -> bool:
    """Whether two 0/1 masks both prune the entries with the smallest ``scores`` (same shape as the masks): the
    same number of zeros, and the same choice wherever a score differs from the threshold (the largest pruned
    score). Entries tied with the threshold may be chosen either way."""
    pruned_ours, pruned_theirs = ours == 0, theirs == 0
    if int(pruned_ours.sum()) != int(pruned_theirs.sum()):
        return False
    if not pruned_ours.any():
        return True
    free = scores == scores[pruned_ours].max()                               # tied with the threshold
    return torch.equal(pruned_ours[~free], pruned_theirs[~free])


def tied_at_threshold(mask: torch.Tensor, scores: torch.Tensor) -> int:
    """How many entries share the threshold score, when that tie straddles it (some pruned, some kept)."""
    pruned = mask == 0
    if not pruned.any() or pruned.all():
        return 0
    tied = scores == scores[pruned].max()
    return int(tied.sum()) if (tied & ~pruned).any() else 0


weights = [layer.weight for layer in linears(teacher_cpu)]
magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])        # (all weights,)
hidden_layers = linears(teacher_cpu)[:-1]      # structured pruning never removes an output class
rows = []
for sparsity in (0.3, 0.7, 0.9):
    reference = copy.deepcopy(teacher_cpu)
    prune.global_unstructured([(layer, "weight") for layer in linears(reference)],
                              pruning_method=prune.L1Unstructured, amount=sparsity)
    ours = torch.cat([m.flatten() for m in magnitude_masks(weights, sparsity, "global")])
    theirs = torch.cat([layer.weight_mask.flatten() for layer in linears(reference)])
    same_global = same_pruning(ours, theirs, magnitudes)
    identical = torch.equal(ours, theirs)

    same_layer = all(
        same_pruning(ours, prune.l1_unstructured(copy.deepcopy(layer), "weight", sparsity).weight_mask,
                     layer.weight.detach().abs())
        for ours, layer in zip(magnitude_masks(weights, sparsity, "layer"), linears(teacher_cpu)))
    same_rows = all(
        same_pruning(row_mask(layer.weight, sparsity)[:, 0],
                     prune.ln_structured(copy.deepcopy(layer), "weight", sparsity, n=2, dim=0).weight_mask[:, 0],
                     layer.weight.detach().norm(dim=1))
        for layer in hidden_layers)
    rows.append((sparsity, same_global, same_layer, same_rows, tied_at_threshold(ours, magnitudes), identical))
    assert same_global and same_layer and same_rows
show_table(("sparsity", "global = prune.global_unstructured", "per layer = prune.l1_unstructured",
            "rows = prune.ln_structured", "weights tied at the global threshold", "global masks identical"), rows)

# %% [markdown]
# Our rule is deterministic, which a test (or a lab) can rely on:

# %%
w_ties = torch.tensor([[0.5, -0.1, 0.1], [0.1, 2.0, -0.5]])
mask = magnitude_masks([w_ties], 4 / 6)[0]           # prune 4 of 6: the three 0.1s, then the first of two 0.5s
print(mask)
assert torch.equal(mask, torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))

# %% [markdown]
# **Accuracy against sparsity**, without any retraining. For a fair x-axis, count the weights that are actually
# gone: for unstructured pruning the zeros; for structured pruning also the next layer's columns that read a
# removed neuron (they only ever multiply 0), i.e. the weights a smaller dense network would no longer have.

# %%
def removed_fraction_structured(masks: list[torch.Tensor]) -> float:
    """Fraction of all Linear weights gone after removing the masked neurons and the columns that read them."""
    kept_in, kept, total = 64, 0, 0
    for i, layer in enumerate(linears(teacher_cpu)):
        kept_out = int(masks[i][:, 0].sum()) if i < len(masks) else layer.out_features
        kept += kept_out * kept_in
        total += layer.weight.numel()
        kept_in = kept_out
    return 1 - kept / total


sparsities = cfg.pick(smoke=[0.0, 0.5, 0.8, 0.9, 0.95, 0.98],
                      small=[0.0, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99],
                      full=[0.0, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99])
curves = {"unstructured, global": [], "unstructured, per layer": [], "structured (neurons)": []}
for s in sparsities:
    curves["unstructured, global"].append(
        (s, test_accuracy(masked_copy(teacher_cpu, magnitude_masks(weights, s)))))
    curves["unstructured, per layer"].append(
        (s, test_accuracy(masked_copy(teacher_cpu, magnitude_masks(weights, s, "layer")))))
    masks = [row_mask(layer.weight, s) for layer in hidden_layers]
    curves["structured (neurons)"].append(
        (removed_fraction_structured(masks), test_accuracy(masked_copy(teacher_cpu, masks, neurons=True))))

fig, ax = plt.subplots(figsize=(6.5, 3.8))
for (label, points), marker in zip(curves.items(), "osD"):
    ax.plot(*zip(*points), marker=marker, markersize=4, label=label)
ax.axhline(0.1, color="grey", linestyle=":", label="chance")
ax.set(xlabel="fraction of weights removed", ylabel="test accuracy", ylim=(0, 1.02),
       title="Magnitude pruning without retraining")
ax.grid(alpha=0.3)
ax.legend(loc="lower left")
plt.close(fig)
fig

# %%
acc_at = {label: dict(points) for label, points in curves.items() if "unstructured" in label}
print(f"accuracy at 50% unstructured global sparsity: {acc_at['unstructured, global'][0.5]:.1%} "
      f"(dense {teacher_acc:.1%})")
assert acc_at["unstructured, global"][0.0] == teacher_acc
assert acc_at["unstructured, global"][0.5] >= teacher_acc - 0.02, "half the weights can go almost for free"

# %% [markdown]
# Half the weights of an over-wide network can go at almost no cost; near the end every method collapses. Ranking
# globally does better here than pruning every layer by the same fraction: it takes most from the big middle
# layer, which has the most redundant weights, and spares the small output layer. Structured pruning looks good on
# this axis because removing a neuron also removes a column of the next layer, so the weights removed grow roughly
# with the square of the neurons removed. And it is the only one of the three that makes the model smaller and
# faster *as it is*: zeros in a dense matrix still take memory and multiply-adds.
#
# **Retraining with the mask.** Accuracy lost to pruning mostly comes back with a little fine-tuning, as long as
# every layer keeps some weights (global pruning takes most from the big middle layer). With
# `torch.nn.utils.prune` the mask is part of the forward pass, so `dlcourse.fit` can train the pruned model
# unchanged: gradients reach `weight_orig`, but the pruned entries stay zero. `prune.remove` then makes the
# pruning permanent (a plain `weight` again, zeros included).

# %%
# the first sparsity of the curve above that cost more than 5 points of accuracy
high = min(s for s, acc in curves["unstructured, global"] if acc < teacher_acc - 0.05)
pruned_model = copy.deepcopy(teacher).train()
prune.global_unstructured([(layer, "weight") for layer in linears(pruned_model)],
                          pruning_method=prune.L1Unstructured, amount=high)
print("zeros per layer:",
      [f"{(layer.weight_mask == 0).float().mean().item():.1%}" for layer in linears(pruned_model)])
acc_before = test_accuracy(pruned_model)
dlcourse.fit(pruned_model, torch.optim.Adam(pruned_model.parameters(), lr=1e-3), train_loader,
             num_epochs=cfg.pick(smoke=2, small=5, full=10), progress=False)
acc_after = test_accuracy(pruned_model)
for layer in linears(pruned_model):
    prune.remove(layer, "weight")
zeros = sum(int((layer.weight == 0).sum()) for layer in linears(pruned_model))
n_weights = sum(layer.weight.numel() for layer in linears(pruned_model))
print(f"{high:.0%} of the weights pruned: test accuracy {acc_before:.1%} -> {acc_after:.1%} after fine-tuning; "
      f"zeros after prune.remove: {zeros:,} of {n_weights:,}")
assert zeros == round(high * n_weights), "fine-tuning must not revive pruned weights"
assert acc_after > acc_before

# %% [markdown]
# **Structured pruning, made real.** Removing neurons means slicing: the pruned rows of one layer and the matching
# columns of the next. The narrower network computes exactly what the masked one computes, with fewer parameters,
# fewer bytes and less time.

# %%
def shrink(model: nn.Module, masks: list[torch.Tensor]) -> nn.Sequential:
    """An MLP (Flatten, Linear, ReLU, ..., Linear) without the neurons whose rows ``masks`` zero."""
    layers: list[nn.Module] = [nn.Flatten()]
    kept_in = torch.arange(linears(model)[0].in_features)
    for i, layer in enumerate(linears(model)):
        kept_out = masks[i][:, 0].nonzero().flatten() if i < len(masks) else torch.arange(layer.out_features)
        small = nn.Linear(len(kept_in), len(kept_out))
        with torch.no_grad():
            small.weight.copy_(layer.weight[kept_out][:, kept_in])        # rows kept, columns of kept inputs
            small.bias.copy_(layer.bias[kept_out])
        layers += [small, nn.ReLU()]
        kept_in = kept_out
    return nn.Sequential(*layers[:-1]).eval()                            # no ReLU after the last layer


amount = 0.75
masks = [row_mask(layer.weight, amount) for layer in hidden_layers]
masked = masked_copy(teacher_cpu, masks, neurons=True)
narrow = shrink(teacher_cpu, masks)
with torch.no_grad():
    assert torch.allclose(narrow(X_test), masked(X_test), atol=1e-5), "slicing must not change the outputs"
show_table(("model", "parameters", "size on disk (KiB)", "latency, batch 256 (ms)", "test accuracy"),
           [(name, f"{count_parameters(m):,}", f"{size_on_disk(m, name.split()[0]) / 1024:.0f}",
             f"{latency_ms(m, X_256):.3f}", f"{test_accuracy(m):.1%}")
            for name, m in ((f"dense", teacher_cpu), (f"masked ({amount:.0%} of neurons zero)", masked),
                            (f"narrow ({amount:.0%} of neurons removed)", narrow))])
print([layer.weight.shape for layer in linears(narrow)])

# %% [markdown]
# The masked model is as big and as slow as the dense one; the narrow one is not. (Unstructured sparsity pays off
# only with sparse storage and sparse kernels, e.g. 2:4 sparsity on recent NVIDIA GPUs; that needs a GPU and is
# not measured here.)
#
# ## 5. Knowledge distillation
# A big model's predicted probabilities say more than its labels: "this 7 looks a bit like a 1, not at all like
# a 0". **Distillation** trains a small *student* to match the *teacher*'s probabilities as well as the labels.
# Softmax outputs of a confident teacher are nearly one-hot, so both are softened with a **temperature** $T$:
# $p^{(T)} = \operatorname{softmax}(z / T)$; a larger $T$ spreads probability over the other classes.

# %%
with torch.no_grad():
    z_example = teacher_cpu(X_test[:1])[0]                                # (10,) logits of one test digit
fig, axes = plt.subplots(1, 3, figsize=(10, 2.6), sharey=True)
for ax, T in zip(axes, (1, 4, 10)):
    ax.bar(range(10), torch.softmax(z_example / T, dim=0).numpy())
    ax.set(title=f"T = {T}", xlabel="class", xticks=range(10))
axes[0].set_ylabel("teacher probability")
fig.suptitle(f"The teacher's soft targets for one test digit (label {int(y_test[0])})")
fig.tight_layout()
plt.close(fig)
fig

# %% [markdown]
# The distillation loss mixes the usual cross-entropy with the KL divergence between the softened distributions:
# $$L = \alpha\, T^2\, \mathrm{KL}\big(p_t^{(T)} \,\|\, p_s^{(T)}\big) + (1 - \alpha)\, \mathrm{CE}(z_s, y),
# \qquad \mathrm{KL}(p\,\|\,q) = \sum_k p_k (\log p_k - \log q_k),$$
# averaged over the batch. The KL is taken *from the teacher's* distribution: the student is penalised where the
# teacher puts probability and the student does not. Why $T^2$? The gradient of the KL term with respect to a
# student logit is $(p_s^{(T)} - p_t^{(T)}) / T$, and for large $T$ the difference itself shrinks like $1/T$: the
# soft term's gradients scale as $1/T^2$. Multiplying by $T^2$ keeps the two terms' balance independent of $T$.

# %%
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, T: float,
            alpha: float) -> torch.Tensor:
    """alpha * T² * KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) * CE(z_s, y), averaged over the batch.

    student_logits, teacher_logits: (B, C); y: (B,) class indices. The teacher gets no gradient.
    """
    log_p_s = F.log_softmax(student_logits / T, dim=1)                     # (B, C)
    log_p_t = F.log_softmax(teacher_logits.detach() / T, dim=1)            # (B, C)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()           # () KL per example, batch mean
    return alpha * T**2 * kl + (1 - alpha) * F.cross_entropy(student_logits, y)


gen = torch.Generator().manual_seed(cfg.seed)
z_s, z_t = torch.randn(16, 10, generator=gen), 3 * torch.randn(16, 10, generator=gen)
y = torch.randint(0, 10, (16,), generator=gen)
for T, alpha in ((1.0, 0.5), (4.0, 0.9), (4.0, 1.0), (2.0, 0.0)):
    reference = (alpha * T**2 * F.kl_div(F.log_softmax(z_s / T, dim=1), F.log_softmax(z_t / T, dim=1),
                                         reduction="batchmean", log_target=True)
                 + (1 - alpha) * F.cross_entropy(z_s, y))
    assert torch.allclose(kd_loss(z_s, z_t, y, T, alpha), reference, atol=1e-6)
print("kd_loss equals alpha * T² * F.kl_div(..., reduction='batchmean', log_target=True) + (1 - alpha) * CE")

rows = []
for T in (1.0, 2.0, 4.0, 8.0, 16.0):
    z = z_s.clone().requires_grad_()
    kl = kd_loss(z, z_t, y, T, alpha=1.0) / T**2                             # the KL term alone, without T²
    (grad,) = torch.autograd.grad(kl, z)
    p_s, p_t = torch.softmax(z_s / T, dim=1), torch.softmax(z_t / T, dim=1)
    assert torch.allclose(grad, (p_s - p_t) / (T * len(z_s)), atol=1e-7)     # the formula above, per example / B
    rows.append((T, f"{grad.norm().item():.2e}", f"{T**2 * grad.norm().item():.2e}"))
show_table(("T", "|gradient| of the KL term", "the same times T²"), rows)

# %% [markdown]
# Without $T^2$ the soft term's gradient shrinks roughly like $1/T^2$; with it, it settles to a constant.
#
# **The experiment.** Distillation helps most when the student has little labelled data, so that the teacher's
# probabilities carry information the few labels don't. The student is a much smaller MLP (64 → 32 → 10); it
# trains on a random subset of `n` training images, either with cross-entropy alone or with the distillation loss
# (T = 4, α = 0.9) using the teacher's logits on those same images. Everything else is equal, and so is the
# budget: the same subset, initial weights, batch order, optimiser and number of update steps. Several seeds,
# because one run of a small model on a hundred images is noisy.

# %%
def make_student() -> nn.Sequential:
    return mlp(64, [32], 10)


student_steps = cfg.pick(smoke=150, small=300, full=600)     # the same number of updates for every run
budgets = cfg.pick(smoke=[50, 100], small=[25, 50, 100, 200, 400, 1000], full=[25, 50, 100, 200, 400, 1000])
seeds = list(range(cfg.pick(smoke=3, small=5, full=6)))
T, alpha, student_batch = 4.0, 0.9, 32


def train_student(seed: int, n: int, distill: bool) -> float:
    """Test accuracy of a student trained on n labelled images, with (distill=True) or without the teacher."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(X_train), generator=gen)[:n]
    X, y = X_train[idx].to(device), y_train[idx].to(device)               # (n, 64), (n,)
    with torch.no_grad():
        teacher_logits = teacher(X)                                       # (n, 10), computed once
    torch.manual_seed(seed)
    student = make_student().to(device)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    batches = []
    while len(batches) < student_steps:                                   # reshuffle every pass over the n images
        batches += torch.randperm(n, generator=gen).split(student_batch)
    for batch in batches[:student_steps]:
        y_hat = student(X[batch])
        if distill:
            loss = kd_loss(y_hat, teacher_logits[batch], y[batch], T, alpha)
        else:
            loss = F.cross_entropy(y_hat, y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return test_accuracy(student)


results = {(n, distill): [train_student(seed, n, distill) for seed in seeds]
           for n in budgets for distill in (False, True)}
mean = {key: float(np.mean(accs)) for key, accs in results.items()}
show_table(("labelled images", "student alone", "student + distillation", "runs where distillation is better"),
           [(n, f"{mean[n, False]:.1%}", f"{mean[n, True]:.1%}",
             f"{sum(b > a for a, b in zip(results[n, False], results[n, True]))} of {len(seeds)}")
            for n in budgets])
print(f"teacher: {count_parameters(teacher):,} parameters, {teacher_acc:.1%}; "
      f"student: {count_parameters(make_student()):,} parameters")
assert mean[100, True] >= mean[100, False], "with 100 labels, distillation should beat the student alone"

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for distill, label in ((False, "student alone"), (True, f"student + distillation (T={T:g}, α={alpha})")):
    accs = np.array([results[n, distill] for n in budgets])                 # (budgets, seeds)
    ax.errorbar(budgets, accs.mean(axis=1), yerr=accs.std(axis=1), marker="o", capsize=3, label=label)
ax.axhline(teacher_acc, color="grey", linestyle="--", label="teacher (all labels)")
ax.set(xscale="log", xlabel="labelled training images", ylabel="test accuracy",
       title=f"A {count_parameters(make_student()):,}-parameter student (mean ± std over {len(seeds)} seeds)")
ax.set_xticks(budgets, labels=[str(n) for n in budgets])
ax.minorticks_off()
ax.grid(alpha=0.3)
ax.legend(loc="lower right")
plt.close(fig)
fig

# %% [markdown]
# With few labels the teacher's soft targets are worth a lot: ten probabilities per image instead of one label,
# and a smooth target that keeps the student from memorising its few examples. As labels grow, the student alone
# catches up and the gap closes (with many labels and a fixed number of steps, the extra term can even cost a
# little). The student has about a hundredth of the teacher's parameters or less; how close it gets to the
# teacher depends on how much capacity the task really needs.
#
# ## 6. Export: the model without Python
# Training code is Python; deployment targets often are not (a C++ server, a phone, a browser). **Export** turns
# the model into a graph of tensor operations with the weights attached.
#
# **`torch.export`** traces the forward pass once with an example input and returns an `ExportedProgram`: an FX
# graph of ATen operations, the parameters, and the input shapes it is valid for. A batch dimension declared
# dynamic (`torch.export.Dim`) stays symbolic, so any batch size in its range works.
#
# The program records the device its weights were on. We export the CPU copy because the ONNX Runtime part
# below runs on the CPU; a model on a GPU exports the same way, and its program then runs on that GPU.

# %%
export_model = copy.deepcopy(teacher_cpu).eval()     # eval mode, or dropout/batch norm export as in training
X_example = X_test[:8]                               # (8, 64): any batch size > 1 works as the example
batch = torch.export.Dim("batch", min=1, max=4096)
exported = torch.export.export(export_model, (X_example,), dynamic_shapes=({0: batch},))
print(type(exported).__name__, "| inputs:", exported.graph_signature.user_inputs,
      "| ranges:", exported.range_constraints)
print("operations:", [str(node.target) for node in exported.graph.nodes if node.op == "call_function"])

with torch.no_grad():
    for n in (1, 7, 256):
        assert torch.allclose(exported.module()(X_test[:n]), export_model(X_test[:n]), atol=1e-6)

pt2_path = run_dir / "teacher.pt2"
torch.export.save(exported, pt2_path)
reloaded = torch.export.load(pt2_path)              # no Python class needed to load it, only the file
with torch.no_grad():
    assert torch.equal(reloaded.module()(X_test), export_model(X_test))
print(f"saved and reloaded {pt2_path.name} ({pt2_path.stat().st_size / 1024:.0f} KiB): same outputs")

# %% [markdown]
# Export records *one* path through the code. Python control flow that depends on the **values** in a tensor
# cannot be captured as a graph, and `torch.export` refuses it (shape-dependent branches are fine: shapes are
# known). `torch.cond` puts both branches in the graph:

# %%
class ValueBranch(nn.Module):
    def forward(self, X):
        return X * 2 if X.sum() > 0 else X - 1          # which branch depends on the data


class CondBranch(nn.Module):
    def forward(self, X):
        return torch.cond(X.sum() > 0, lambda X: X * 2, lambda X: X - 1, (X,))


shapes_log = logging.getLogger("torch.fx.experimental.symbolic_shapes")
shapes_log_level = shapes_log.level
shapes_log.setLevel(logging.ERROR)                    # quiet: the error message below says it all
try:
    with contextlib.redirect_stderr(io.StringIO()):  # on failure torch also prints the half-traced graph
        torch.export.export(ValueBranch(), (torch.ones(3),))
    refused = None
except Exception as err:  # a data-dependent guard error (or a UserError, depending on the torch version)
    refused = f"{type(err).__name__}: {str(err).splitlines()[0][:100]}"
finally:
    shapes_log.setLevel(shapes_log_level)
print("ValueBranch:", refused)
assert refused is not None, "a data-dependent branch should not export"
cond_program = torch.export.export(CondBranch(), (torch.ones(3),))
print("CondBranch exports; both branches run:", cond_program.module()(torch.ones(3)).tolist(),
      cond_program.module()(-torch.ones(3)).tolist())
assert cond_program.module()(-torch.ones(3)).tolist() == [-2.0, -2.0, -2.0]

# %% [markdown]
# **ONNX** is an open file format for such graphs; ONNX Runtime (and TensorRT, OpenVINO, browsers, phones) run it
# without PyTorch. `torch.onnx.export(..., dynamo=True)` builds it from `torch.export` (it needs the `onnxscript`
# package), names the inputs and outputs, and keeps the batch dimension dynamic. `external_data=False` keeps the
# weights inside the one `.onnx` file (large models store them next to it instead).

# %%
try:
    import onnx
    import onnxruntime as ort
    import onnxscript  # noqa: F401  (torch.onnx.export(dynamo=True) needs it)
except ImportError as err:
    raise ImportError(f"{err.name} is not installed. This section exports to ONNX and runs ONNX Runtime: install "
                      f'the course\'s extra with  pip install "dlcourse[export]"  (make lab does it).') from err

onnx_path = run_dir / "teacher.onnx"
t0 = time.perf_counter()
torch.onnx.export(export_model, (X_example,), onnx_path, dynamo=True, input_names=["X"], output_names=["logits"],
                  dynamic_shapes=({0: batch},), external_data=False, verbose=False)
print(f"exported in {time.perf_counter() - t0:.1f} s: {onnx_path.name}, "
      f"{onnx_path.stat().st_size / 1024:.0f} KiB, onnx {onnx.__version__}, onnxruntime {ort.__version__}")
onnx.checker.check_model(onnx.load(onnx_path))                            # a well-formed ONNX model

options = ort.SessionOptions()
options.intra_op_num_threads = torch.get_num_threads()        # as many threads as PyTorch: a fair timing
session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
for kind, values in (("input", session.get_inputs()), ("output", session.get_outputs())):
    print(kind, [(v.name, v.shape, v.type) for v in values])

# %% [markdown]
# Parity: for several batch sizes (the export used 8), ONNX Runtime's outputs must equal PyTorch's up to float
# rounding. Both compute in float32, but they may order additions differently, so "equal" means a tolerance.

# %%
rows = []
for n in (1, 7, 256, len(X_test)):
    X = X_test[:n]
    (logits_ort,) = session.run(["logits"], {"X": X.numpy()})             # numpy in, numpy out
    with torch.no_grad():
        logits_torch = export_model(X)
    diff = np.abs(logits_ort - logits_torch.numpy()).max()
    same_class = (logits_ort.argmax(axis=1) == logits_torch.argmax(dim=1).numpy()).mean()
    rows.append((n, logits_ort.shape, f"{diff:.1e}", f"{same_class:.0%}"))
    assert logits_ort.shape == (n, 10) and np.allclose(logits_ort, logits_torch.numpy(), atol=1e-5)
show_table(("batch size", "ONNX Runtime output", "max |ORT - PyTorch|", "same predicted class"), rows)

# %% [markdown]
# And the speed of each way to run the same teacher, measured here at batch 1 and 256, next to the size of the
# file each one needs:

# %%
runners = {
    "PyTorch eager, fp32": (export_model, lambda X: X, size_on_disk(export_model, "eager")),
    "torch.export program, fp32": (reloaded.module(), lambda X: X, pt2_path.stat().st_size),
    "ONNX Runtime, fp32": (lambda X: session.run(["logits"], {"X": X}), lambda X: X.numpy(),
                           onnx_path.stat().st_size),
    "torchao int8 weights + activations": (variants["int8 weights + activations"], lambda X: X,
                                           measured["int8 weights + activations"]["file"]),
}
show_table(("runtime", "file (KiB)", "latency, batch 1 (ms)", "latency, batch 256 (ms)"),
           [(name, f"{size / 1024:.0f}", f"{latency_ms(fn, convert(X_1)):.3f}",
             f"{latency_ms(fn, convert(X_256)):.3f}") for name, (fn, convert, size) in runners.items()])

# %% [markdown]
# For a model this small, per-call overhead dominates at batch 1 (Python dispatch in PyTorch, input/output
# conversion in ONNX Runtime), and the differences at batch 256 come from the kernels each runtime picks; they
# vary with the CPU. What does not vary is what export buys: a file that runs without the model's Python code,
# checked to give the same outputs. On a GPU you would run ONNX Runtime's CUDA or TensorRT execution provider
# (or `torch.compile` / AOTInductor on the exported program) and expect the gaps to depend on batch size even more
# strongly; nothing here measures that.
#
# ## Summary
#
# - Int8 quantisation stores `q = round(x / scale) + zero_point`; inside the range the error is at most
#   `scale / 2`. Symmetric (zero point 0) suits weights; asymmetric uses all 256 codes for one-sided data such as
#   ReLU outputs; per-channel scales protect against outliers.
# - `torchao`'s `quantize_` swaps weights for tensor subclasses: int8 makes linear layers about 4× smaller at
#   almost no accuracy cost; count the inner tensors (or the file), not the subclass's `nbytes`. 4-bit values save
#   bytes only when packed, which needs an int4 kernel. Whether any of it is faster depends on the kernels.
# - Quantisation-aware training fake-quantises the weights in the forward pass and passes gradients straight
#   through the rounding; at few bits it keeps accuracy that post-training quantisation loses.
# - Magnitude pruning removes many weights of an over-wide network for free, but only structured pruning
#   (whole neurons) makes a dense model smaller and faster; fine-tuning with the mask recovers accuracy.
# - Distillation trains a small student on the teacher's temperature-softened probabilities
#   (`T² · KL` plus cross-entropy); with few labels it clearly beats the same student trained alone.
# - `torch.export` captures an `ExportedProgram` (dynamic batch via `Dim`, no data-dependent Python branches);
#   `torch.onnx.export(dynamo=True)` writes ONNX, which ONNX Runtime runs with outputs equal to PyTorch's to
#   float rounding.
#
# ## Exercises
#
# 1. **Grouped scales.** `IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))` gives every 32
#    inputs of a row their own scale. Predict its state-dict bytes, measure them with `state_dict_bytes`, and
#    compare its accuracy with one scale per row. Then run PTQ and QAT at 2 bits with grouped scales.
# 2. **Static quantisation of activations.** Fix the activation range from a calibration batch instead of each
#    batch's own range. Measure the error for inputs inside and outside the calibration range.
# 3. **Iterative pruning.** Prune to 97 % in several steps (e.g. 50, 75, 90, 97 %) with a short fine-tune after
#    each, and compare with pruning in one step followed by the same total fine-tuning.
# 4. **Distillation without labels.** Give the student 100 labelled images plus 500 unlabelled ones that only
#    the teacher labels (use only the KL term on those). How much does it gain?
# 5. **Quantise the ONNX model.** `onnxruntime.quantization.quantize_dynamic` quantises an ONNX file directly (run
#    `python -m onnxruntime.quantization.preprocess` on the file first). Compare its size, speed and parity
#    with torchao's int8 model.
# 6. **Export the CNN.** Export `dlcourse.models.SmallCNN` trained on the shapes images to ONNX. What happens to
#    batch norm in eval mode, and does parity still hold?

# %%
run_tmp.cleanup()                                   # the saved and exported files were only for this run
print(f"notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r}")
