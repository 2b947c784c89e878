# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 10 · Profiling and `torch.compile`
#
# "Make it faster" starts with "where does the time go?". This notebook measures first: it times code the way
# that gives honest numbers, reads `torch.profiler` tables and traces, and uses them to find two classic
# slowdowns, a data loader that cannot keep up and a hidden synchronisation in the training loop. Only then does
# it try two ways of making the model itself faster, `torch.compile` and the `channels_last` memory format, and
# measures what they cost and what they bring on the machine running the notebook.
#
# **Learning goals**
# - Explain why a plain `time.time()` loop misleads (first-call costs, asynchronous GPU work), write a timing
#   harness with warm-up and synchronisation, and check it against `torch.utils.benchmark`.
# - Profile a training step with `torch.profiler`: read `key_averages` tables (self versus total time, CPU
#   versus device time), label code regions with `record_function`, and write a trace you can open in a
#   browser; on a GPU, read from the kernel names whether a float32 product ran in TF32.
# - Find a data-loading bottleneck with the profiler and a simple timer, and fix it by precomputing or batching
#   the transform; measure what `DataLoader` workers do on your machine.
# - Recognise hidden CPU–GPU synchronisations such as `.item()` in the loop, count them, and remove them;
#   compare two GPU runs exactly with deterministic algorithms.
# - Measure `torch.compile`: compile time, speed-up for inference and for a training step (a transformer in
#   mixed precision at `full` scale), graph breaks.
# - Measure convolutions in the `channels_last` memory format against the default.
#
# **Prerequisites:** notebook 01 (training loop), notebook 03 (convolutions, memory formats; the model timed here
# is `dlcourse.models.SmallCNN`, a CNN of the same conv → BatchNorm → ReLU blocks) and
# notebook 05 (`Dataset`, `DataLoader`, transforms, `dlcourse.data.Augmented`); notebook 07 (mixed precision,
# TF32).
#
# **Time:** well under a minute at `smoke` (most of it is `torch.compile` compiling one small model); a few
# minutes at `small` on a laptop CPU; at `full`, on a GPU, one to three minutes, most of it compiling a
# transformer (longer when other programs compete for the CPU cores, since compiling runs there). The last cell
# prints how long this run took on your machine.
#
# **A word on the numbers.** Every time below is measured while the notebook runs, so it changes from run to
# run and from machine to machine, and more so on a busy machine. Compare numbers from the same run only, and
# read ratios rather than absolute values.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import copy
import json
import multiprocessing
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.utils.benchmark as benchmark
from torch import nn
from torch._dynamo.utils import counters
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

import dlcourse
from dlcourse.models import SmallCNN

cfg = dlcourse.setup(seed=0)
device = cfg.device
t_start = time.perf_counter()
run_dir = Path("runs") / "10_profiling"                 # traces go here (relative to the notebook's folder)
run_dir.mkdir(parents=True, exist_ok=True)


# On a GPU, "float32" can mean TF32 inside matmuls or convolutions (notebook 07, section 6): every float32 timing
# below says how the two switches were set. PyTorch's defaults: matmuls off, cuDNN convolutions on.
float32_mode = (f"float32 with {dlcourse.config.tf32_status()}" if device.type == "cuda"
                else "float32, no TF32 on a CPU")


def sync(device: torch.device = device) -> None:
    """Wait until all work queued on ``device`` has finished (a no-op on the CPU, which works synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def print_table(headers: list[str], rows: list[list], title: str = "") -> None:
    """Print rows under headers with aligned columns; floats get 4 significant digits."""
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    if title:
        print(title)
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


# %% [markdown]
# ## 1. Timing code correctly
# The obvious way to time something is to read the clock, run it, read the clock again. Three things go wrong:
#
# 1. **The first calls are not typical.** The first call of a model allocates memory, picks and prepares library
#    kernels (oneDNN on a CPU, cuDNN on a GPU), and with `torch.compile` it even compiles. A loop that starts
#    cold mixes these one-time costs into the average.
# 2. **GPU work is asynchronous.** On a GPU, `model(X)` only *queues* kernels and returns; the CPU reads the
#    clock while the GPU is still working. Without `torch.cuda.synchronize()` before each clock reading you
#    measure how fast Python can queue work, not how fast the GPU does it.
# 3. **The clock and the noise.** `time.time()` is wall-clock time (it can be adjusted while you measure and
#    has coarse resolution on some systems); `time.perf_counter()` is the clock meant for intervals. One
#    measurement is noisy: repeat, and report the median (typical) or the minimum (best case).
#
# First, the effect of a cold start: each of the first calls of a freshly built model, timed one by one.

# %%
width = cfg.pick(smoke=8, small=16, full=32)
batch_size = cfg.pick(smoke=32, small=64, full=256)
torch.manual_seed(cfg.seed)
model = SmallCNN(width=width).to(device).eval()
X = torch.randn(batch_size, 3, 32, 32, device=device)   # (B, C, H, W)


def forward() -> None:
    with torch.no_grad():
        model(X)


first_calls = []
for _ in range(5):
    start = time.perf_counter()
    forward()
    sync()
    first_calls.append(1000 * (time.perf_counter() - start))
print_table(["call", "ms"], [[i + 1, t] for i, t in enumerate(first_calls)],
            f"SmallCNN(width={width}) forward, batch {batch_size}, on {device} ({float32_mode}): the first five "
            "calls")

# %% [markdown]
# The first call is usually the slowest; how much depends on the machine and the library. Now the timing
# harness, written from scratch: a few warm-up calls that are not timed, a synchronisation after them (so that
# queued warm-up work does not leak into the first measurement), then each timed call followed by a
# synchronisation before the clock is read. It returns every measurement, not just one number, so you can see the
# spread.

# %%
def time_it(fn, *, warmup: int = 3, repeats: int = 10, device: torch.device = device,
            clock=time.perf_counter) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn()``, after ``warmup`` untimed calls.

    On CUDA, waits for queued GPU work after the warm-up and after every timed call, before reading ``clock``.
    """
    for _ in range(warmup):
        fn()
    sync(device)                          # warm-up work must not spill into the first measurement
    seconds = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync(device)                      # the call is finished only when the GPU says so
        seconds.append(clock() - start)
    return seconds


# %% [markdown]
# `torch.utils.benchmark` is PyTorch's own tool for the same job: `Timer(stmt, globals=...)` runs a statement,
# `blocked_autorange` first decides how many runs make one block long enough to measure, then times blocks
# until `min_run_time` seconds have passed, synchronises CUDA for you, and returns a `Measurement` with the
# median and the interquartile range (IQR) per run. One trap: a `Timer` uses **one thread** unless you pass
# `num_threads`, while your own code uses `torch.get_num_threads()`; pass it to compare like with like.
#
# A sleeping function takes a known time, so both tools must agree on it:

# %%
nap = 0.02                                                               # seconds
calls = []
ours = time_it(lambda: calls.append(time.sleep(nap)), warmup=2, repeats=10)
theirs = benchmark.Timer("time.sleep(nap)", globals={"time": time, "nap": nap}).blocked_autorange(min_run_time=0.1)
print_table(["tool", "median ms", "min ms"],
            [["time_it (ours)", 1000 * statistics.median(ours), 1000 * min(ours)],
             ["benchmark.Timer", 1000 * theirs.median, 1000 * min(theirs.times)]],
            f"time.sleep({nap}): both should be a little above {1000 * nap:g} ms")
assert len(calls) == 2 + 10 and len(ours) == 10, "2 warm-up calls, then 10 timed ones"
assert min(ours) >= nap and theirs.median >= nap, "sleep never returns early"
assert abs(statistics.median(ours) - theirs.median) < 0.25 * nap, "the two tools should agree on a sleep"

# %% [markdown]
# Now the model's forward pass, timed three ways: the naive loop (`time.time()` around a loop that starts with
# a freshly built model: no warm-up, and no synchronisation), our harness, and `torch.utils.benchmark`.

# %%
def naive_ms(fn, n: int) -> float:
    """The naive measurement: wall-clock time of n calls divided by n, no warm-up, no synchronisation."""
    start = time.time()
    for _ in range(n):
        fn()
    return 1000 * (time.time() - start) / n


torch.manual_seed(cfg.seed)
model = SmallCNN(width=width).to(device).eval()                 # cold again: a new model
n_naive = 5
naive = naive_ms(forward, n_naive)
harness = time_it(forward, warmup=3, repeats=cfg.pick(smoke=10, small=20, full=50))
timer = benchmark.Timer("forward()", globals={"forward": forward}, num_threads=torch.get_num_threads(),
                        label="SmallCNN forward").blocked_autorange(min_run_time=cfg.pick(smoke=0.2, small=0.5,
                                                                                          full=2.0))
print_table(["method", "ms per call", "spread"],
            [[f"naive: time.time() over {n_naive} cold calls", naive, "-"],
             ["time_it: median after warm-up", 1000 * statistics.median(harness),
              f"min {1000 * min(harness):.3g}, max {1000 * max(harness):.3g}"],
             ["benchmark.Timer.blocked_autorange: median", 1000 * timer.median, f"IQR {1000 * timer.iqr:.3g}"]],
            f"SmallCNN(width={width}) forward, batch {batch_size}, {torch.get_num_threads()} thread(s), {device} "
            f"({float32_mode})")
assert len(harness) == cfg.pick(smoke=10, small=20, full=50) and all(t > 0 for t in harness)

# %% [markdown]
# On a CPU the naive number is off mainly because of the cold first call (and, on a busy machine, because one
# measurement catches whatever else the machine was doing). On a GPU it is off for a second reason: without
# synchronisation it measures only how long the CPU takes to queue the kernels. The next cell shows that on
# CUDA; on a CPU there is nothing to show, because every operation has finished when it returns.

# %%
if device.type == "cuda":
    start = time.perf_counter()
    for _ in range(20):
        forward()                                               # queued, not finished
    queued_ms = 1000 * (time.perf_counter() - start) / 20
    sync()
    finished_ms = 1000 * statistics.median(time_it(forward, repeats=20))
    print_table(["measurement", "ms per call"],
                [["no synchronisation (time to queue)", queued_ms], ["with synchronisation", finished_ms]])
else:
    print(f"skipped on {device}: CPU operations run synchronously, so a missing synchronize() changes nothing "
          "here. On a GPU, the unsynchronised loop can report a fraction of the real time.")

# %% [markdown]
# ## 2. `torch.profiler`: where does a training step spend its time?
# A timer tells you *how long*; the profiler tells you *where*. Inside `with profile(...)`, PyTorch records every
# operator call (`aten::conv2d`, `aten::addmm`, ...) with its start and end time, plus any region you label
# with `record_function("name")`. Two things to set:
#
# - `activities`: `ProfilerActivity.CPU` always; add `ProfilerActivity.CUDA` on a GPU to also record the kernels
#   as the GPU ran them.
# - `schedule(wait, warmup, active)`: skip the first steps, run the profiler without recording for a few more
#   (its own start-up costs land there), then record `active` steps. The loop calls `prof.step()` once per step.
#
# The profiler prints messages from its tracing library (Kineto) when it starts and stops; they are harmless,
# including the one that says no GPU was found.

# %%
n_profile = cfg.pick(smoke=256, small=1024, full=4096)
X_shapes, y_shapes = dlcourse.data.make_shapes(n_profile, seed=cfg.seed)   # (N, 3, 32, 32), (N,)
profile_loader = DataLoader(TensorDataset(X_shapes, y_shapes), batch_size=64, shuffle=True,
                            generator=torch.Generator().manual_seed(cfg.seed))
torch.manual_seed(cfg.seed)
train_model = SmallCNN(width=width).to(device)
optimizer = torch.optim.SGD(train_model.parameters(), lr=0.05, momentum=0.9)

activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
wait, warmup, active = 1, 1, 2
with profile(activities=activities, schedule=torch.profiler.schedule(wait=wait, warmup=warmup, active=active),
             record_shapes=True) as prof:
    for step, (X_batch, y_batch) in zip(range(wait + warmup + active), profile_loader):
        X_batch, y_batch = X_batch.to(device), y_batch.to(device)
        with record_function("forward"):
            loss = F.cross_entropy(train_model(X_batch), y_batch)
        with record_function("backward"):
            optimizer.zero_grad()
            loss.backward()
        with record_function("optimizer_step"):
            optimizer.step()
        prof.step()

# where the work runs: the device's own clock on a GPU, the CPU's otherwise
time_key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
time_name = "self device" if device.type == "cuda" else "self CPU"
print(f"SmallCNN(width={width}) training steps on {device} ({float32_mode}), sorted by {time_key}")
print(prof.key_averages().table(sort_by=time_key, row_limit=12))

# %% [markdown]
# How to read it:
# - **Self CPU** is the time spent in an operator itself; **CPU total** adds the operators it called. A
#   labelled region like `forward` has a large total and a small self time, because the work happens in the
#   `aten::` operators inside it. Sort by self time to find the operators that cost the most.
# - `# of Calls` counts calls over the recorded (`active`) steps only.
# - On a GPU, with `ProfilerActivity.CUDA` (added above when a GPU is present), the table gains **Self CUDA**
#   and **CUDA total** columns, and rows for the kernels themselves (names such as `void cudnn::...` or
#   `sm90_xmma_gemm_...`). The cell sorts by `self_device_time_total`, the time the GPU spent in each
#   operator's own kernels. The CPU columns then show the cost of *launching* those kernels, which the CPU
#   does ahead of the GPU; the device columns are what the GPU ran. (`self_cuda_time_total`, the older name,
#   is deprecated.)
#
# The same numbers are available as objects, so code can act on them. The operators with the largest self time,
# on the clock where their work runs:

# %%
events = prof.key_averages()
ops = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: getattr(e, time_key),
             reverse=True)
total_self = sum(getattr(e, time_key) for e in ops)     # operators only: labels and kernels would count twice
print_table(["operator", "calls", f"{time_name} ms", f"% of operators' {time_name}"],
            [[e.key, e.count, getattr(e, time_key) / 1000, f"{100 * getattr(e, time_key) / total_self:.1f}"]
             for e in ops[:6]], f"top operators over {active} training steps")
assert total_self > 0, f"the profiler recorded {time_name} time"
labels = {e.key: e for e in events}
assert labels["forward"].count == active and labels["optimizer_step"].count == active
conv2d = labels["aten::conv2d"]
assert conv2d.count == 3 * active, "SmallCNN has three convolutions per forward pass"

# %% [markdown]
# `record_shapes=True` lets you split an operator by input shape, here the convolutions (forward and backward):
# which layer is the expensive one?

# %%
conv_rows = [e for e in prof.key_averages(group_by_input_shape=True) if "convolution" in e.key]
conv_rows.sort(key=lambda e: getattr(e, time_key), reverse=True)
print_table(["operator", "input shapes (first two)", "calls", f"{time_name} ms"],
            [[e.key, str(e.input_shapes[:2]), e.count, getattr(e, time_key) / 1000] for e in conv_rows[:6]])
assert conv_rows, "the profiler recorded convolutions with their shapes"

# %% [markdown]
# ### A trace to look at
# A table sums over all calls; a **trace** shows every call on a time line, one row per thread (and per CUDA
# stream on a GPU). `export_chrome_trace` writes it as JSON in the Chrome trace format. To open it, use either
# - <https://ui.perfetto.dev> → "Open trace file" (the page reads the file in your browser; nothing is
#   uploaded), or
# - Chrome or Edge: type `chrome://tracing` in the address bar, then "Load".
#
# Zoom with W/S, pan with A/D. Look for the `ProfilerStep#` blocks, your `forward`/`backward`/`optimizer_step`
# labels inside them, and the gaps between operators (Python overhead). On a GPU, the CUDA stream rows show when
# the GPU was busy and when it waited for the CPU.

# %%
trace_path = run_dir / "train_step_trace.json"
prof.export_chrome_trace(str(trace_path))
assert trace_path.is_file() and trace_path.stat().st_size > 0
with open(trace_path) as f:
    trace = json.load(f)
names = {event.get("name") for event in trace["traceEvents"]}
print(f"wrote {trace_path.resolve()} ({trace_path.stat().st_size / 1e6:.2f} MB, {len(trace['traceEvents'])} "
      "events)")
assert {"forward", "backward", "optimizer_step"} <= names

# %% [markdown]
# ### What "float32" ran as: TF32 in the profiler
# On NVIDIA GPUs from Ampere on, a float32 matrix product may run on the tensor cores in TF32 (notebook 07,
# section 6: inputs rounded to 10 mantissa bits, several times faster). PyTorch's defaults: off for matmuls
# (`torch.get_float32_matmul_precision()` is `"highest"`), on for cuDNN convolutions
# (`torch.backends.cudnn.allow_tf32`), so the SmallCNN above already ran its convolutions in TF32 on such a GPU.
# The profiler shows which kernels actually ran: time one large float32 product with TF32 off and on
# (`torch.set_float32_matmul_precision("high")`, the same switch as `torch.backends.cuda.matmul.allow_tf32 =
# True`), and a bfloat16 one, and read the name of the kernel that did the work. The defaults are restored
# afterwards. A CPU has no TF32: there the cell only says so.

# %%
saved_precision = torch.get_float32_matmul_precision()
if device.type == "cuda":
    n_mm = cfg.pick(smoke=1024, small=2048, full=4096)
    A_mm = torch.randn(n_mm, n_mm, device=device)                              # (n, n) float32
    B_mm = torch.randn(n_mm, n_mm, device=device)
    mm_rows = []
    try:
        for name, dtype, precision in [("float32, TF32 off", torch.float32, "highest"),
                                       ("float32, TF32 on", torch.float32, "high"),
                                       ("bfloat16", torch.bfloat16, "highest")]:
            torch.set_float32_matmul_precision(precision)
            a, b = A_mm.to(dtype), B_mm.to(dtype)
            ms = 1000 * statistics.median(time_it(lambda: a @ b, warmup=2, repeats=10))
            with profile(activities=activities) as mm_prof:
                a @ b
                sync()
            kernels = [e for e in mm_prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
            top = max(kernels, key=lambda e: e.self_device_time_total)
            mm_rows.append([name, dlcourse.config.tf32_status().split(",")[0], ms, 2 * n_mm**3 / ms / 1e9,
                            top.key[:70]])
            assert top.self_device_time_total > 0, "the profiler timed the kernel on the GPU"
    finally:
        torch.set_float32_matmul_precision(saved_precision)                  # PyTorch's default again
    print_table(["product", "switch", "ms", "TFLOP/s", "kernel that did the work"], mm_rows,
                f"({n_mm} x {n_mm}) @ ({n_mm} x {n_mm}) on {torch.cuda.get_device_name(device)}")
else:
    print(f"skipped on {device}: TF32 exists only on NVIDIA GPUs (Ampere and newer). The switches are still "
          f"there: {dlcourse.config.tf32_status()}, precision {saved_precision!r}.")
assert torch.get_float32_matmul_precision() == saved_precision

# %% [markdown]
# On a GPU with TF32 the kernel names usually say it (for example `tf32` or `1688`/`tensorop` in the name,
# against `sgemm` or `f32f32` for plain float32), and the TF32 row reaches several times the float32 row's
# TFLOP/s: the tensor cores at work. bfloat16 is faster again. On a GPU without TF32 (before Ampere, such as
# Colab's T4) the first two rows are the same kernel. So when you report a float32 time from a GPU, say how
# the two TF32 switches were set.

# %% [markdown]
# ## 3. Finding a data-loading bottleneck
# A GPU can only train as fast as the loader feeds it. A common way to starve it: preprocessing written per image
# in `Dataset.__getitem__`. Here images are stored as `uint8`, as decoded image files would be, and each item is
# converted to float, blurred and normalised on its own, by notebook 05's `dlcourse.data.Augmented(base,
# transform)`, which applies `transform` to each item's image as it is read. (It lives in the package rather
# than in a notebook so that `DataLoader` workers can import it; more on that below.) The model is deliberately
# small, so its step is short, as it would be on a GPU.

# %%
n_items = cfg.pick(smoke=512, small=1024, full=8192)
images, labels_all = dlcourse.data.make_shapes(n_items, seed=cfg.seed + 1)
images_uint8 = (images * 255).round().to(torch.uint8)                     # (N, 3, 32, 32) uint8
preprocess = v2.Compose([
    v2.ToDtype(torch.float32, scale=True),                                # uint8 0..255 -> float 0..1
    v2.GaussianBlur(kernel_size=5, sigma=1.0),
    v2.Normalize(mean=[0.3, 0.3, 0.3], std=[0.3, 0.3, 0.3]),
])
per_item = dlcourse.data.Augmented(TensorDataset(images_uint8, labels_all), preprocess)  # item: (3, 32, 32) float


def fresh_model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(cfg.seed)
    small_model = SmallCNN(width=4, depth=2).to(device)
    return small_model, torch.optim.SGD(small_model.parameters(), lr=0.1, momentum=0.9)


def timed_epoch(loader, batch_transform=None) -> dict:
    """One training epoch; seconds spent waiting for data (loading + transform) and in the training step."""
    small_model, small_optimizer = fresh_model()
    warm_X = torch.zeros(64, 3, 32, 32, device=device)
    small_model(warm_X).sum().backward()                                  # warm-up: the first call is slow
    small_optimizer.zero_grad()
    data_s = step_s = 0.0
    mark = time.perf_counter()
    for X_batch, y_batch in loader:
        X_batch, y_batch = X_batch.to(device), y_batch.to(device)
        if batch_transform is not None:
            X_batch = batch_transform(X_batch)                            # the whole batch at once
        sync()
        now = time.perf_counter()
        data_s, mark = data_s + now - mark, now
        loss = F.cross_entropy(small_model(X_batch), y_batch)
        small_optimizer.zero_grad()
        loss.backward()
        small_optimizer.step()
        sync()
        now = time.perf_counter()
        step_s, mark = step_s + now - mark, now
    return {"data": data_s, "step": step_s, "total": data_s + step_s}


slow_loader = DataLoader(per_item, batch_size=64, shuffle=True)
slow = timed_epoch(slow_loader)
print_table(["part", "seconds", "% of epoch"],
            [[k, slow[k], f"{100 * slow[k] / slow['total']:.0f}"] for k in ("data", "step")],
            f"one epoch of {n_items} images, per-item preprocessing, on {device}")

# %% [markdown]
# A simple timer already says where the time goes. The profiler says the same and more: the `DataLoader`
# records its own `__next__` calls, so the loader shows up as a row next to our `train_step` label, and the
# operators it runs are counted with everything else. The call counts give the per-item work away: the blur is
# one `aten::conv2d` (after a reflection padding) *per image*, next to the model's few convolutions per batch,
# and the conversion to float is at least one `aten::copy_` per image.

# %%
small_model, small_optimizer = fresh_model()
n_batches_profiled = 2                      # a few batches are enough: the profiler's bookkeeping has a cost
with profile(activities=activities) as data_prof:
    for _, (X_batch, y_batch) in zip(range(n_batches_profiled), slow_loader):
        with record_function("train_step"):
            loss = F.cross_entropy(small_model(X_batch.to(device)), y_batch.to(device))
            small_optimizer.zero_grad()
            loss.backward()
            small_optimizer.step()
data_events = data_prof.key_averages()
loader_row = next(e for e in data_events if e.key.startswith("enumerate(DataLoader)"))
step_row = next(e for e in data_events if e.key == "train_step")
print_table(["region", "calls", "CPU total s"],
            [[loader_row.key[:60], loader_row.count, loader_row.cpu_time_total / 1e6],
             ["train_step", step_row.count, step_row.cpu_time_total / 1e6]])
print(data_events.table(sort_by="self_cpu_time_total", row_limit=6))   # loading is CPU work: the CPU's clock
assert loader_row.count == step_row.count == n_batches_profiled
calls = {e.key: e.count for e in data_events}
images_profiled = n_batches_profiled * slow_loader.batch_size
model_convs = sum(isinstance(m, nn.Conv2d) for m in small_model.modules())     # per forward pass
print(f"{images_profiled} images: aten::conv2d called {calls['aten::conv2d']} times ({images_profiled} blurs + "
      f"{n_batches_profiled} x {model_convs} in the model), aten::copy_ {calls['aten::copy_']} times")
assert calls["aten::conv2d"] == images_profiled + n_batches_profiled * model_convs, "one blur per image"
assert calls["aten::copy_"] >= images_profiled, "at least one conversion per image"

# %% [markdown]
# Three fixes, measured on the same epoch:
# - **Precompute** the transform once, for the whole dataset in one batched call, and train on plain tensors.
#   Right for deterministic preprocessing that fits in memory (it costs memory, and the time to do it once).
# - **Batch** the transform: load raw `uint8` images and transform each *batch* after it arrives, on the
#   device. Right when the data do not fit in memory, and for random augmentation, which must change every epoch
#   (precomputing it would freeze one random draw; note that a `v2` random transform applied to a batch draws
#   *one* set of parameters for the whole batch, so batched augmentation needs per-sample randomness written out,
#   e.g. a random flip as `torch.where(flip_mask[:, None, None, None], X.flip(-1), X)`).
# - **Workers** (`num_workers=2`): the per-item work runs in two other processes while the main process trains.
#   They can only help if there are idle cores; on a 2-core machine the workers and the training compete for the
#   same two cores, and each worker costs start-up time every epoch. How the workers start matters on a GPU:
#   `fork` copies this process, and a copy of a process that has used CUDA can hang or fail. So the loader
#   gets `multiprocessing_context=dlcourse.data.worker_context()`, a fork *server* (a clean process started
#   once, which never touches CUDA, forks the workers; `spawn` where there is none). Those workers receive the
#   dataset pickled, which is why its class must be importable from a module (notebook 05).
#
# First, check that the fixes produce the same images as the per-item version:

# %%
precomputed = preprocess(images_uint8)                                     # (N, 3, 32, 32) float, one call
per_item_first = torch.stack([per_item[i][0] for i in range(8)])
assert torch.allclose(precomputed[:8], per_item_first, atol=1e-5)
assert torch.allclose(preprocess(images_uint8[:8].to(device)).cpu(), per_item_first, atol=1e-5)

start = time.perf_counter()
preprocess(images_uint8)
precompute_s = time.perf_counter() - start

variants = [("per item in __getitem__", slow)]
variants.append(("precomputed once (plain tensors)",
                 timed_epoch(DataLoader(TensorDataset(precomputed, labels_all), batch_size=64, shuffle=True))))
variants.append(("batched, on the device",
                 timed_epoch(DataLoader(TensorDataset(images_uint8, labels_all), batch_size=64, shuffle=True),
                             batch_transform=preprocess)))
worker_context = dlcourse.data.worker_context()                            # never fork after CUDA
variants.append((f"per item, num_workers=2 ({worker_context.get_start_method()})",
                 timed_epoch(DataLoader(per_item, batch_size=64, shuffle=True, num_workers=2,
                                        multiprocessing_context=worker_context))))
print_table(["loader", "data s", "step s", "epoch s", "speed-up"],
            [[name, r["data"], r["step"], r["total"], f"{slow['total'] / r['total']:.2f}x"] for name, r in variants],
            f"one epoch of {n_items} images on {device} ({float32_mode}), {multiprocessing.cpu_count()} CPU "
            f"cores; precomputing took {precompute_s:.3f} s once")

# %% [markdown]
# Read the "data" column: per-item preprocessing pays Python and dispatch overhead for every single image,
# while the batched versions pay it once per batch. The training step ("step") is the same in every row, up to
# noise. The workers row depends on free cores: on 2 busy cores it can even be slower than no workers (each
# worker also costs its start-up every epoch, and the first epoch starts the fork server); on an 8-core laptop
# it moves the data time off the main process.
# On a GPU the step column shrinks by an order of magnitude or more while the per-item data time stays the same,
# so the loader becomes the whole story: this is the first thing to check when a GPU sits below full use.
#
# ## 4. A hidden synchronisation: `.item()` in the loop
# `loss.item()` copies one number from the device to Python. On a GPU that means *waiting until every queued
# kernel has finished*, because the loss is only known then. The CPU normally runs ahead, queuing the next
# step's kernels while the GPU works; every `.item()` stops that, and the GPU idles while the CPU prepares the
# next step. The same happens with `float(loss)`, `print(loss)`, `if loss < best:`, `.tolist()`, `.cpu()`,
# `.numpy()`, and with operations whose output size depends on the data (`torch.nonzero`, boolean masks).
#
# The cure is to keep running totals on the device and read them once per epoch (`dlcourse.fit` does this).
# Both loops below make the same updates; the profiler counts the device-to-host reads as
# `aten::_local_scalar_dense`.
#
# Since they make the same updates, their mean losses must agree, up to how the sum is added up (in float64 in
# Python, in float32 on the device: differences around 1e-7). On a GPU that needs one precaution. For some
# convolution shapes, cuDNN's fastest algorithms add partial results with atomic operations, in whatever order
# the GPU's threads finish; floating-point addition is not associative, so two runs of the *same* loop can
# differ in the last bits, and a hundred SGD steps with momentum amplify those bits. So the comparison runs
# with `torch.backends.cudnn.deterministic = True`: cuDNN then uses only algorithms that give the same bits
# every time (the switch acts at once; it is restored afterwards). The rest of this CNN is deterministic on a
# GPU anyway: matrix products on one stream, max-pooling, the global average pool (computed as a mean), the
# loss. The broader switch, `torch.use_deterministic_algorithms(True)`, also makes PyTorch raise an error for
# operations that have no deterministic version, but for matrix products it needs the environment variable
# `CUBLAS_WORKSPACE_CONFIG=:4096:8` set before CUDA is first used: too late in a notebook that already ran on
# the GPU. On a CPU every operation here is deterministic, and the switch changes nothing.

# %%
sync_batches = list(zip(precomputed.to(device).split(64), labels_all.to(device).split(64)))  # fixed batches
n_examples = len(precomputed)


def epoch_item_every_step(small_model, small_optimizer) -> float:
    total = 0.0
    for X_batch, y_batch in sync_batches:
        loss = F.cross_entropy(small_model(X_batch), y_batch)
        small_optimizer.zero_grad()
        loss.backward()
        small_optimizer.step()
        total += loss.item() * len(y_batch)             # a synchronisation every step
    return total / n_examples


def epoch_item_once(small_model, small_optimizer) -> float:
    total = torch.zeros((), device=device)
    for X_batch, y_batch in sync_batches:
        loss = F.cross_entropy(small_model(X_batch), y_batch)
        small_optimizer.zero_grad()
        loss.backward()
        small_optimizer.step()
        total += loss.detach() * len(y_batch)           # stays on the device: no synchronisation
    return total.item() / n_examples      # one synchronisation per epoch


loops = [(".item() every step", epoch_item_every_step), ("sum on device, .item() once", epoch_item_once)]
if device.type == "cuda":   # the same loop twice, with cuDNN's default (possibly non-deterministic) algorithms
    run_to_run = abs(epoch_item_once(*fresh_model()) - epoch_item_once(*fresh_model()))
    print(f"one loop run twice, cuDNN's default algorithms: mean losses differ by {run_to_run:.1e}")
deterministic_before = torch.backends.cudnn.deterministic
torch.backends.cudnn.deterministic = True          # same bits every run, for the exact comparison
try:
    reads, mean_losses = [], []
    for name, epoch_fn in loops:
        with profile(activities=activities) as sync_prof:
            mean_losses.append(epoch_fn(*fresh_model()))
        reads.append(sum(e.count for e in sync_prof.key_averages() if e.key == "aten::_local_scalar_dense"))
finally:
    torch.backends.cudnn.deterministic = deterministic_before
rows = []
for (name, epoch_fn), n_reads in zip(loops, reads):
    seconds = time_it(lambda: epoch_fn(*fresh_model()), warmup=1, repeats=cfg.pick(smoke=3, small=3, full=5))
    rows.append([name, n_reads, 1000 * min(seconds), 1000 * statistics.median(seconds)])
print_table(["loop", "device->host reads", "best ms/epoch", "median ms/epoch"], rows,
            f"{len(sync_batches)} steps per epoch on {device} ({float32_mode})")
print(f"mean losses (deterministic algorithms): {mean_losses[0]:.7f} and {mean_losses[1]:.7f}, "
      f"difference {abs(mean_losses[0] - mean_losses[1]):.1e}")
assert rows[0][1] == len(sync_batches) and rows[1][1] == 1
assert abs(mean_losses[0] - mean_losses[1]) < 1e-4, "both loops train identically"

# The loop without per-step reads still trains: a few more epochs lower the mean loss.
learner, learner_optimizer = fresh_model()
epoch_losses = [epoch_item_once(learner, learner_optimizer) for _ in range(cfg.pick(smoke=4, small=6, full=10))]
print("mean loss per epoch:", " ".join(f"{loss:.3f}" for loss in epoch_losses))
assert epoch_losses[-1] < epoch_losses[0] - 0.1, "the training loop should lower the loss"

# %% [markdown]
# On the CPU the two loops take about the same time: the CPU computes the loss itself, so reading it costs a
# few microseconds and there is no queue to drain. The count column is what matters: on a GPU, each of those
# reads stalls the pipeline once per step, which for a small, fast model can cost a large part of the step time.
# On a GPU, `torch.cuda.set_sync_debug_mode("warn")` makes PyTorch warn at every synchronising call, which
# finds them for you:

# %%
if device.type == "cuda":
    import warnings

    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        epoch_item_every_step(*fresh_model())
    torch.cuda.set_sync_debug_mode("default")
    print(f"{len(caught)} synchronisation warnings in one epoch of {len(sync_batches)} steps")
else:
    print(f"skipped on {device}: set_sync_debug_mode only exists for CUDA; the profiler count above works "
          "everywhere.")

# %% [markdown]
# ## 5. `torch.compile`
# `torch.compile(model)` returns a wrapper that, on the first call, captures the model's Python code as a graph
# (TorchDynamo), and hands it to a compiler (TorchInductor by default) which fuses operations and generates
# code: C++ with vector instructions on a CPU, Triton kernels on a GPU. Later calls with the same input shapes
# and types reuse the compiled code. Three things to measure: the **compile time** (paid on the first call, and
# again when shapes change or a guard fails), the speed of **inference**, and the speed of a **training step**
# (the backward pass is compiled too).
#
# Compiling is slow, so this section compiles one model: at `smoke` a small MLP sized for the 8×8 digits, at
# `small` a `SmallCNN` for 32×32 images, both in float32, and at `full` the course's GPT transformer
# (`dlcourse.models.GPT`, d_model 768, 4096 tokens per step) under the mixed-precision autocast of notebook 07
# (`dlcourse.config.amp_dtype`: bfloat16 on a recent GPU), which is how a transformer is trained on a GPU.
# Inputs are random: only the time matters here.
#
# The first compilation in a fresh Python environment also checks the C++ compiler and the CPU's vector
# instructions. The results of that check, and the compiled code, are cached on disk (in
# `/tmp/torchinductor_<user>` unless `TORCHINDUCTOR_CACHE_DIR` says otherwise), so a second run of this notebook
# compiles faster.

# %%
def mlp_case():
    X = torch.rand(256, 1, 8, 8)                                                   # (B, 1, 8, 8) -> (B, 10)
    return dlcourse.models.mlp(64, [256], 10), X, torch.randint(0, 10, (256,)), "MLP 64-256-10"


def cnn_case():
    X = torch.rand(64, 3, 32, 32)                                                  # (B, 3, 32, 32) -> (B, 6)
    return SmallCNN(width=16), X, torch.randint(0, 6, (64,)), "SmallCNN(width=16)"


def gpt_case():
    vocab, batch, seq_len = 128, 16, 256                                           # (B, T) -> (B*T, vocab)
    gpt = dlcourse.models.GPT(vocab, seq_len, d_model=768, num_heads=12, num_layers=2)
    tokens = torch.randint(0, vocab, (batch, seq_len))
    return (nn.Sequential(gpt, nn.Flatten(0, 1)), tokens, torch.randint(0, vocab, (batch * seq_len,)),
            f"GPT(d_model=768, 2 layers), {batch} x {seq_len} tokens")


torch.manual_seed(cfg.seed)
compile_model, X_compile, y_compile, model_name = cfg.pick(smoke=mlp_case, small=cnn_case, full=gpt_case)()
compile_model, X_compile, y_compile = compile_model.to(device), X_compile.to(device), y_compile.to(device)
compute_dtype = cfg.pick(smoke=torch.float32, small=torch.float32, full=dlcourse.config.amp_dtype(device))
autocast = torch.autocast(device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32)
compile_scaler = torch.amp.GradScaler(device.type, enabled=compute_dtype == torch.float16)   # T4: float16
precision = (str(compute_dtype).replace("torch.", "") + " autocast" if compute_dtype != torch.float32
             else float32_mode)
# How close compiled and eager outputs must be: the compiled code fuses operations and may add up in another
# order. float32 on a CPU: rounding only. On a GPU, convolutions may run in TF32 (10 mantissa bits). In 16-bit
# autocast, eager rounds every intermediate result to 16 bits while fused code keeps it in float32 registers.
agree_rtol = 5e-2 if compute_dtype != torch.float32 else (5e-3 if device.type == "cuda" else 1e-4)
compile_optimizer = torch.optim.SGD(compile_model.parameters(), lr=0.01)
min_run_time = cfg.pick(smoke=0.3, small=0.5, full=2.0)


def infer(m: nn.Module) -> torch.Tensor:
    with torch.no_grad(), autocast:
        return m(X_compile)


def train_step(m: nn.Module) -> None:
    with autocast:
        loss = F.cross_entropy(m(X_compile), y_compile)
    compile_optimizer.zero_grad()
    compile_scaler.scale(loss).backward()
    compile_scaler.step(compile_optimizer)
    compile_scaler.update()


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def median_ms(fn) -> float:
    timer = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return 1000 * timer.blocked_autorange(min_run_time=min_run_time).median


def first_call_s(fn) -> tuple[float, str]:
    """Seconds taken by the first call of a compiled function, and where its compiled code came from."""
    misses = counters["inductor"]["fxgraph_cache_miss"]   # graphs Inductor had to compile, not load from disk
    start = time.perf_counter()
    fn()
    sync()
    seconds = time.perf_counter() - start
    return seconds, "compiled now" if counters["inductor"]["fxgraph_cache_miss"] > misses else "disk cache"


torch._dynamo.reset()                                    # start from nothing compiled in this process
compiled = torch.compile(compile_model)                  # returns at once: compiling happens on the first call
compile_model.eval()
compile_s = {"inference": first_call_s(lambda: infer(compiled))}
agreement = relative_difference(infer(compiled), infer(compile_model))
print(f"compiled against eager outputs: relative difference {agreement:.1e} (allowed {agree_rtol:g})")
assert agreement < agree_rtol, "compiled and eager must agree"
eager_ms = {"inference": median_ms(lambda: infer(compile_model))}
compiled_ms = {"inference": median_ms(lambda: infer(compiled))}

compile_model.train()
compile_s["training step"] = first_call_s(lambda: train_step(compiled))
eager_ms["training step"] = median_ms(lambda: train_step(compile_model))
compiled_ms["training step"] = median_ms(lambda: train_step(compiled))

torch._dynamo.reset()                                    # forget the compiled code in memory, keep the disk cache
compiled_again = torch.compile(compile_model)
compile_model.eval()
recompile_s = first_call_s(lambda: infer(compiled_again))

rows = []
for workload in ("inference", "training step"):
    saved_ms = eager_ms[workload] - compiled_ms[workload]
    # a gain below 5 % is within the noise of these measurements: no pay-back to speak of
    payback = f"{1000 * compile_s[workload][0] / saved_ms:.0f}" if saved_ms > 0.05 * eager_ms[workload] else "never"
    rows.append([workload, eager_ms[workload], compiled_ms[workload],
                 f"{eager_ms[workload] / compiled_ms[workload]:.2f}x", compile_s[workload][0],
                 compile_s[workload][1], payback])
print_table(["workload", "eager ms", "compiled ms", "speed-up", "first call s", "code from", "calls to pay back"],
            rows, f"{model_name}, {precision}, {device}, {torch.get_num_threads()} thread(s)")
print(f"\nthe inference graph again after torch._dynamo.reset(): {recompile_s[0]:.2f} s ({recompile_s[1]}); "
      f"first time: {compile_s['inference'][0]:.2f} s ({compile_s['inference'][1]})")

# %% [markdown]
# Read the table with the compile time in mind: "calls to pay back" is the first call's time divided by the time
# saved per call, and "never" when the compiled version is not at least 5 % faster (smaller differences are
# within the noise of these measurements). "code from" says whether Inductor compiled the graph in this run or
# loaded it from the disk cache left by an earlier run: run the notebook twice and the first-call time drops.
# On a CPU, expect little or nothing for a small MLP (its time is in the matrix products, which eager PyTorch
# already hands to an optimised library, and there is little to fuse), and a modest gain, if any, for a CNN; a
# training step can even be slower. On a GPU, the transformer's matrix products run on the tensor cores either
# way (compiling does not make them faster); what compiling removes is everything around them. Eager PyTorch
# runs each element-wise operation (LayerNorm, GELU, residual additions, the casts autocast inserts, the
# optimizer's updates) as its own kernel, reading and writing its whole tensor from GPU memory, and the CPU pays
# Python and dispatch costs to launch each one; Inductor fuses chains of them into single Triton kernels. Expect
# the compiled training step to be clearly faster at `full` scale, by how much depends on the GPU, and a first
# call that costs as much as many eager steps (the "first call s" column; more when other programs compete
# for the CPU, where compiling runs). Long training runs amortise the compile time; short experiments,
# notebooks and tests usually do not.
#
# ### Graph breaks
# TorchDynamo can only capture code it understands as tensor operations. Anything that needs a concrete value
# in Python, such as the `.item()` of section 4 or a `print`, splits the graph in two: a **graph break**. Each
# break costs a return to Python and limits fusion. `torch._dynamo.explain` reports them without compiling
# anything; `torch.compile(..., fullgraph=True)` turns them into errors.

# %%
def forward_with_item(X: torch.Tensor) -> torch.Tensor:
    h = torch.relu(X @ X.T)
    if h.mean().item() > 1.0:                  # a Python decision on a tensor's value: a graph break
        h = h / h.mean()
    return h.sum(dim=1)


def forward_without_item(X: torch.Tensor) -> torch.Tensor:
    h = torch.relu(X @ X.T)
    h = torch.where(h.mean() > 1.0, h / h.mean(), h)   # the same decision, as a tensor operation
    return h.sum(dim=1)


X_small = torch.randn(16, 8)
explained = [torch._dynamo.explain(fn)(X_small) for fn in (forward_with_item, forward_without_item)]
print_table(["function", "graphs", "graph breaks", "first break reason"],
            [[fn.__name__, e.graph_count, e.graph_break_count,
              e.break_reasons[0].reason[:60] if e.break_reasons else "-"]
             for fn, e in zip((forward_with_item, forward_without_item), explained)])
assert torch.allclose(forward_with_item(X_small), forward_without_item(X_small))
assert explained[0].graph_break_count >= 1 and explained[1].graph_break_count == 0

# %% [markdown]
# ## 6. `channels_last`: the memory format of convolutions
# Notebook 03 showed that `channels_last` (NHWC) changes strides, not values. Convolution libraries have kernels
# for both layouts, and which one is faster depends on the hardware and the data type. Here one convolution layer,
# timed with `torch.utils.benchmark` in both formats, in float32 and bfloat16. Input and weights are converted
# together: a model in `channels_last` fed NCHW inputs converts them at every call.

# %%
conv_channels = cfg.pick(smoke=32, small=64, full=128)
conv_batch = cfg.pick(smoke=16, small=32, full=128)
conv = nn.Conv2d(conv_channels, conv_channels, 3, padding=1).to(device).eval()
X_conv = torch.randn(conv_batch, conv_channels, 32, 32, device=device)           # (B, C, H, W)
with torch.no_grad():
    reference = conv(X_conv)                                                     # float32, NCHW
rows = []
for dtype in (torch.float32, torch.bfloat16):
    times = {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        layer = copy.deepcopy(conv).to(dtype=dtype, memory_format=fmt)
        X_fmt = X_conv.to(dtype=dtype, memory_format=fmt)
        with torch.no_grad():
            out = layer(X_fmt)
        assert out.is_contiguous(memory_format=fmt), "the output keeps the input's memory format"
        # bfloat16 keeps about 3 significant digits; so does TF32, which GPUs may use for float32 convolutions
        tolerance = 2e-2 if dtype == torch.bfloat16 else (5e-3 if device.type == "cuda" else 1e-4)
        assert (out.float() - reference).abs().max() <= tolerance * reference.abs().max()
        timer = benchmark.Timer("with torch.no_grad(): layer(X)",
                                globals={"torch": torch, "layer": layer, "X": X_fmt},
                                num_threads=torch.get_num_threads())
        times[fmt] = 1000 * timer.blocked_autorange(min_run_time=min_run_time).median
    nchw, nhwc = times[torch.contiguous_format], times[torch.channels_last]
    rows.append([str(dtype).replace("torch.", ""), nchw, nhwc, f"{nchw / nhwc:.2f}x"])
print_table(["dtype", "NCHW ms", "NHWC (channels_last) ms", "NHWC speed-up"], rows,
            f"Conv2d({conv_channels}, {conv_channels}, 3) on ({conv_batch}, {conv_channels}, 32, 32), {device}; "
            f"float32 rows: {float32_mode}")

# %% [markdown]
# On a CPU either format can win, and the answer can change between float32 and bfloat16 and with the layer's
# size: measure on your own machine and layer sizes. On recent NVIDIA GPUs, float16 and bfloat16 convolutions run
# on tensor cores whose kernels want NHWC data; in the default format the library converts layouts around every
# convolution, so `channels_last` (for the model *and* the inputs) usually speeds up mixed-precision CNN training
# there. Combine it with `torch.compile` and the compiler can fuse the remaining layout changes away. The float32
# rows on such a GPU ran in TF32 (cuDNN's default, printed in the title), which is why they are not far behind.
#
# ## Summary
# - Time with warm-up, synchronisation (on a GPU), a monotonic clock and repeats; report a median or minimum.
#   `torch.utils.benchmark.Timer(...).blocked_autorange()` does all of that; give it `num_threads`.
# - `torch.profiler` with a `schedule` and `record_function` labels shows where a step spends its time:
#   sort `key_averages()` by self time (`self_device_time_total` for GPU work, `self_cpu_time_total` for CPU
#   work) to find the costly operators, export a trace to see the time line.
# - On a GPU, "float32" may be TF32 inside matmuls (off by default) and convolutions (on by default): the
#   profiler's kernel names show which ran; say how the switches were set when you report a float32 time.
# - A slow loader shows up as time in `enumerate(DataLoader)...__next__`. Precompute deterministic
#   preprocessing, batch the rest on the device; workers help only with idle cores.
# - Every device-to-host read (`.item()`, `print(loss)`, `if loss < ...`) synchronises; keep running sums on the
#   device and read them once. The profiler counts them as `aten::_local_scalar_dense`. Comparing two GPU runs
#   exactly needs deterministic algorithms (`torch.backends.cudnn.deterministic`).
# - `torch.compile` costs seconds to minutes up front; whether it pays back depends on model, device and run
#   length: measure both. Graph breaks (for example `.item()` inside `forward`) limit what it can do.
# - `channels_last` is a layout choice; measure it, and expect it to matter most for low-precision convolutions
#   on GPUs.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **The cost of a cold start.** Time the first call of `torch.compile(model)` with `mode="max-autotune"` (on
#    a GPU) or `dynamic=True`, and the call after changing the batch size. When does it recompile?
# 2. **Profile memory.** Pass `profile_memory=True` to the profiler in section 2 and sort by
#    `self_cpu_memory_usage`. Which operators allocate the most? Relate it to notebook 08.
# 3. **Workers, honestly.** Repeat the table of section 3 with `num_workers` 1, 2, 4 and with
#    `persistent_workers=True` over several epochs. Where is the optimum on your machine, and why?
# 4. **Batched augmentation.** Write a random horizontal flip and a random brightness change that act on a whole
#    batch with *per-sample* random parameters, and check that the flipped fraction is about one half.
# 5. **Find the break.** Put `print(h.shape)` and `h.tolist()` into `forward_without_item` and ask
#    `torch._dynamo.explain` which of them breaks the graph.
# 6. **On a GPU.** Run the notebook with `DLCOURSE_SCALE=full` on a GPU and compare each table with the CPU
#    run: which conclusions change?
