# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 10: profiling
#
# This lab goes with notebook 10. You write the tools of performance work yourself and use them on code with
# a problem planted in it.
#
# **Learning goals.** After this lab you can
# - write a timing harness that discards warm-up calls and waits for asynchronous GPU work before reading the
#   clock;
# - find a data-loading bottleneck with `torch.profiler` and fix it, and prove the fix with a measured speed-up;
# - profile a model and read the operator with the largest self time from `key_averages()`;
# - write a training epoch that reads the loss from the device once per epoch instead of once per step;
# - predict the floating-point operations of a training step, before counting them with `FlopCounterMode`.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab10_profiling_compile.ipynb` tells you what passes.
#
# **Time.** About 75–100 minutes. Every cell runs in seconds on a laptop CPU; no GPU needed (the GPU parts of
# the timing harness are tested with a simulated GPU).
#
# **Points.** 12 in all: timing harness 3, data-loading bottleneck 3, top operator 2, one read per epoch 2,
# predicting a step's FLOPs 2.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import copy
import time
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader, Dataset

import dlcourse

from dlcourse.grading.checks import check_at_least, check_close, check_equal, check_prediction, forbid

cfg = dlcourse.setup(seed=0)
# One thread: this lab's tensors are small, and timings and profiles are steadier on a busy machine (several
# threads wait for each other when another program takes one of their cores).
torch.set_num_threads(1)

# %% [markdown] nbgrader={"grade": false, "grade_id": "timing-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: a timing harness (3 points)
#
# Write `time_calls(fn, *, warmup, repeats, device, clock)` that returns the seconds taken by each of `repeats`
# calls of `fn()`, as a list of `repeats` floats, measuring the steady state:
#
# - first calls pay one-time costs (memory, kernel selection, compilation): `warmup` calls of `fn()` come first
#   and are not timed, and none of their work may be counted in a timed call;
# - on a GPU (`device.type == "cuda"`) work is asynchronous: `fn()` only *queues* it, and a call has finished
#   only when the GPU has done its work (`torch.cuda.synchronize(device)` waits for that). Each timing must
#   contain exactly its own call's work;
# - read the time only with the `clock` argument (default `time.perf_counter`, the clock meant for intervals),
#   and synchronise only when `device.type == "cuda"`: on a machine without CUDA, `torch.cuda.synchronize()`
#   raises.
#
# The tests use a **simulated** GPU: a fake `clock`, and a `torch.cuda.synchronize` replaced by one that
# "finishes" the queued work by moving the fake clock forward. So they can check exactly what your harness
# measured, on any machine.

# %% nbgrader={"grade": false, "grade_id": "timing-answer", "locked": false, "schema_version": 3, "solution": true}
def time_calls(fn, *, warmup: int = 3, repeats: int = 10, device: torch.device = torch.device("cpu"),
               clock=time.perf_counter) -> list[float]:
    """Seconds taken by each of ``repeats`` timed calls of ``fn()``, after ``warmup`` untimed calls.

    fn: a function of no arguments. device: where fn's work runs; on CUDA, synchronise after the warm-up and
    after every timed call. clock: a function returning the current time in seconds.
    Returns a list of ``repeats`` floats.
    """
    ### BEGIN SOLUTION
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()                                  # warm-up work must not spill into the first measurement
    seconds = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync()                              # wait for the queued GPU work before reading the clock
        seconds.append(clock() - start)
    return seconds
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "timing-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
class _SimulatedDevice:
    """A fake clock and a fake device for testing a timing harness.

    Call k of ``fn`` does ``durations[k]`` seconds of work. On a CPU the work is done during the call (the clock
    moves forward at once); on a GPU it is only queued, and ``synchronize`` moves the clock forward by all queued
    work, as waiting for a real GPU would.
    """

    def __init__(self, durations, gpu: bool) -> None:
        self.durations, self.gpu = list(durations), gpu
        self.now, self.queued, self.calls, self.syncs = 0.0, 0.0, 0, 0

    def clock(self) -> float:
        return self.now

    def fn(self) -> None:
        work = self.durations[self.calls]
        self.calls += 1
        if self.gpu:
            self.queued += work
        else:
            self.now += work

    def synchronize(self, device=None) -> None:
        self.syncs += 1
        self.now, self.queued = self.now + self.queued, 0.0


def _simulate(device: torch.device, durations, warmup: int, repeats: int):
    """Run time_calls on a simulated device; returns (the simulation, what time_calls returned)."""
    sim = _SimulatedDevice(durations, gpu=device.type == "cuda")
    with mock.patch.object(torch.cuda, "synchronize", sim.synchronize), \
            mock.patch.object(torch.cuda, "is_available", lambda: True):
        times = time_calls(sim.fn, warmup=warmup, repeats=repeats, device=device, clock=sim.clock)
    return sim, times


# Two slow warm-up calls (0.5 s, 0.2 s), then four steady ones.
_cpu, _times = _simulate(torch.device("cpu"), [0.5, 0.2, 0.010, 0.012, 0.011, 0.013], warmup=2, repeats=4)
check_equal("calls fn() warmup + repeats times", _cpu.calls, expected=6,
            hint="call fn() `warmup` times before timing, then `repeats` times while timing")
check_close("on the CPU: returns the times of the 4 timed calls only", _times,
            expected=[0.010, 0.012, 0.011, 0.013], atol=1e-9, weight=2,
            hint="return a list with one float per timed call, clock() after minus clock() before; leave the "
                 "warm-up calls out, and read the time with the `clock` argument")
check_equal("no torch.cuda.synchronize() on the CPU", _cpu.syncs, expected=0,
            hint="synchronise only when device.type == 'cuda': on a machine without CUDA it raises")

_gpu, _times = _simulate(torch.device("cuda"), [0.5, 0.2, 0.010, 0.012, 0.011, 0.013], warmup=2, repeats=4)
check_close("on a (simulated) GPU: the times of the 4 timed calls, their queued work included", _times,
            expected=[0.010, 0.012, 0.011, 0.013], atol=1e-9, weight=2,
            hint="all zeros: fn() only queued the work, so synchronise before reading the clock; the first time "
                 "includes the warm-up's 0.7 s: synchronise after the warm-up too")
print("time_calls: visible tests passed")

### BEGIN HIDDEN TESTS
_gpu, _times = _simulate(torch.device("cuda", 0), [0.3, 0.1, 0.2, 0.004, 0.005], warmup=3, repeats=2)
check_close("cuda:0, 3 warm-up calls, 2 timed", [_gpu.calls, _times], expected=[5, [0.004, 0.005]], atol=1e-9,
            hint="with device cuda:0 (device.type is 'cuda'), warm up 3 times, synchronise, then time 2 calls")
_gpu, _times = _simulate(torch.device("cuda"), [0.25], warmup=0, repeats=1)
check_close("no warm-up, one timed call on a GPU", _times, expected=[0.25], atol=1e-9,
            hint="warmup=0 means no untimed calls; the one timed call must still be synchronised")
_nap = 0.005
_times = time_calls(lambda: time.sleep(_nap), warmup=1, repeats=3)
check_equal("real clock: 3 timings of time.sleep", len(_times), expected=3,
            hint="return one time per timed call")
check_at_least("real clock: each timed time.sleep(0.005) takes at least 5 ms", min(_times), 0.0049,
               hint="with the default clock (time.perf_counter) each measured sleep is at least 5 ms long")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "bottleneck-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: find and fix a data-loading bottleneck (3 points)
#
# `SlowNormalized` below serves images normalised per channel with the mean and standard deviation of the whole
# dataset. It gives the right values, but an epoch through a `DataLoader` is far slower than it should be. Run
# the next cell: it profiles one batch and prints the operators with the largest self CPU time. Which
# operators are they, how many times are they called for one batch of 64 images, and why?
#
# Then write `FastNormalized(X, y)`: a `Dataset` whose items are **the same** as `SlowNormalized(X, y)`'s
# (same images to within 1e-5, same labels, same length) and whose epoch is much faster. The test measures one
# epoch of each through `DataLoader(dataset, batch_size=64)` and wants a speed-up of at least 3×; a good fix
# gives much more. Don't change `X` in place (the caller may still use it), and don't use worker processes:
# fix the cause.

# %% nbgrader={"grade": false, "grade_id": "bottleneck-setup", "locked": true, "schema_version": 3, "solution": false}
class SlowNormalized(Dataset):
    """Images normalised per channel with the whole dataset's mean and standard deviation.

    X: (N, C, H, W) float images; y: (N,) labels. Item i: ((C, H, W) normalised image, label).
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int):
        mean = self.X.mean(dim=(0, 2, 3))                 # (C,) over every image and pixel
        std = self.X.std(dim=(0, 2, 3))                   # (C,)
        image = (self.X[i] - mean[:, None, None]) / std[:, None, None]
        return image, self.y[i]


_X_look, _y_look = dlcourse.data.make_shapes(128, seed=0, image_size=16)      # (128, 3, 16, 16), (128,)
with profile(activities=[ProfilerActivity.CPU]) as _prof:
    next(iter(DataLoader(SlowNormalized(_X_look, _y_look), batch_size=64)))
print(_prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=6))

# %% nbgrader={"grade": false, "grade_id": "bottleneck-answer", "locked": false, "schema_version": 3, "solution": true}
class FastNormalized(Dataset):
    """The same items as SlowNormalized(X, y), served fast.

    X: (N, C, H, W) float images (not modified); y: (N,) labels. Item i: ((C, H, W) normalised image, label).
    """

    ### BEGIN SOLUTION
    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        mean = X.mean(dim=(0, 2, 3))                      # (C,) computed once, not once per item
        std = X.std(dim=(0, 2, 3))
        self.X = (X - mean[:, None, None]) / std[:, None, None]   # a new (N, C, H, W) tensor: X is unchanged
        self.y = y

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int):
        return self.X[i], self.y[i]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "bottleneck-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def _epoch_seconds(dataset, repeats: int) -> float:
    """Best time of ``repeats`` epochs through DataLoader(dataset, batch_size=64)."""
    loader = DataLoader(dataset, batch_size=64)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _batch in loader:
            pass
        best = min(best, time.perf_counter() - start)
    return best


def _items(dataset, indices):
    """The images (stacked) and the labels of the given items."""
    pairs = [dataset[i] for i in indices]
    return torch.stack([p[0] for p in pairs]), torch.stack([torch.as_tensor(p[1]) for p in pairs])


_X, _y = dlcourse.data.make_shapes(128, seed=1, image_size=16)               # (128, 3, 16, 16), (128,)
_fast = FastNormalized(_X, _y)
_images, _labels = _items(_fast, [0, 1, 100, 127])
check_equal("same length as SlowNormalized", len(_fast), expected=len(SlowNormalized(_X, _y)),
            hint="__len__ should return the number of images")
check_close("same images as SlowNormalized", _images, expected=_items(SlowNormalized(_X, _y), [0, 1, 100, 127])[0],
            atol=1e-5, weight=2,
            hint="normalise each channel with the mean and standard deviation over the whole dataset (dims 0, 2 "
                 "and 3), exactly as SlowNormalized does; torch's std is the unbiased one (correction=1)")
check_equal("same labels as SlowNormalized", _labels, expected=_items(SlowNormalized(_X, _y), [0, 1, 100, 127])[1],
            hint="item i is (image i, label y[i])")

_slow_s = _epoch_seconds(SlowNormalized(_X, _y), repeats=1)
_fast_s = _epoch_seconds(FastNormalized(_X, _y), repeats=3)
print(f"one epoch: SlowNormalized {1000 * _slow_s:.1f} ms, FastNormalized {1000 * _fast_s:.2f} ms, "
      f"speed-up {_slow_s / _fast_s:.0f}x")
check_at_least("an epoch is at least 3x faster than SlowNormalized's", _slow_s / _fast_s, 3.0, weight=3,
               hint="look at the profile above: what does __getitem__ compute that is the same for every item? "
                    "Compute it once, in __init__")
print("FastNormalized: visible tests passed")

### BEGIN HIDDEN TESTS
_X2, _y2 = dlcourse.data.make_shapes(200, seed=2, image_size=8)
_X2 = _X2[:, :1] * 3 + 1                                       # one channel, another mean and spread
_X2_before = _X2.clone()
_fast2 = FastNormalized(_X2, _y2)
check_close("one-channel images, another mean and spread: same items as SlowNormalized",
            list(_items(_fast2, [0, 57, 199])), expected=list(_items(SlowNormalized(_X2, _y2), [0, 57, 199])),
            atol=1e-5, weight=2,
            hint="FastNormalized must work for any number of channels (C), image size and statistics")
check_close("X is not changed in place", _X2, expected=_X2_before,
            hint="don't normalise X in place (X -= ... or X.sub_(...)): build a new tensor")
_X3, _y3 = dlcourse.data.make_shapes(128, seed=3, image_size=16)
_speedup = _epoch_seconds(SlowNormalized(_X3, _y3), repeats=1) / _epoch_seconds(FastNormalized(_X3, _y3), repeats=3)
check_at_least("another dataset: an epoch is at least 3x faster", _speedup, 3.0, weight=2,
               hint="an epoch of FastNormalized should be much faster than SlowNormalized's on any dataset")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "top-op-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: the most expensive operator (2 points)
#
# Write `top_operator(model, X, repeats=5)`: profile `repeats` forward passes of `model` on `X` on the CPU
# (inference: no autograd graph) with `torch.profiler`, and return the name of the operator with the largest
# **self** CPU time summed over them, as the string `key_averages()` uses (for example `"aten::relu"`). One-time
# costs of a first call must not be in the profile. Several passes make the answer robust: on a busy machine,
# one pass can be interrupted in the middle of a cheap operator. (Each entry of `prof.key_averages()` has `.key`,
# the name, and `.self_cpu_time_total`, in microseconds.)
#
# Why self time? An operator like `aten::linear` calls others (`aten::addmm`); its *total* time includes theirs,
# so sorting by total time names the wrapper, not the operator doing the work.

# %% nbgrader={"grade": false, "grade_id": "top-op-answer", "locked": false, "schema_version": 3, "solution": true}
def top_operator(model: nn.Module, X: torch.Tensor, repeats: int = 5) -> str:
    """Name of the operator with the largest self CPU time over ``repeats`` profiled forward passes model(X).

    model: any module; X: its input (on the CPU). Returns a string such as "aten::addmm".
    """
    ### BEGIN SOLUTION
    with torch.no_grad():
        model(X)                                           # warm-up, not profiled
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                model(X)
    top = max(prof.key_averages(), key=lambda event: event.self_cpu_time_total)
    return top.key
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "top-op-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
from contextlib import contextmanager


@contextmanager
def _one_thread():
    """Run on one thread: on a busy machine, a cheap multi-threaded operator can stall waiting for its threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


torch.manual_seed(0)
_mlp = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.Tanh())
_X = torch.randn(256, 1024, generator=torch.Generator().manual_seed(0))         # (B, 1024)
with _one_thread():
    _name = top_operator(_mlp, _X)
print(f"top operator of the MLP: {_name!r}")
check_equal("an MLP's top operator (the matrix products of its Linear layers)", _name, expected="aten::addmm",
            weight=2,
            hint="return the .key of the key_averages() entry with the largest self_cpu_time_total (self time, "
                 "not cpu_time_total: aten::linear's total includes the aten::addmm it calls)")
print("top_operator: visible tests passed")

### BEGIN HIDDEN TESTS
class _Projection(nn.Module):
    """X @ W: one large matrix product without a bias (aten::mm, called by aten::matmul)."""

    def __init__(self) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(1024, 1024, generator=torch.Generator().manual_seed(1)) / 32)

    def forward(self, X):  # X: (B, 1024) -> (B, 1024)
        return X @ self.W


class _Gram(nn.Module):
    """The Gram matrices X X^T of a batch of matrices: one batched matrix product (aten::bmm)."""

    def forward(self, X):  # X: (B, n, d) -> (B, n, n)
        return torch.bmm(X, X.transpose(1, 2))


with _one_thread():
    _names = [top_operator(_Projection(), torch.randn(256, 1024, generator=torch.Generator().manual_seed(2))),
              top_operator(_Gram(), torch.randn(16, 256, 256, generator=torch.Generator().manual_seed(3)))]
check_equal("a large X @ W without bias: its top operator", _names[0], expected="aten::mm",
            hint="for X @ W the work is in aten::mm; aten::matmul only calls it (sort by self time)")
check_equal("batched Gram matrices: their top operator", _names[1], expected="aten::bmm",
            hint="for torch.bmm(X, X.transpose(1, 2)) the top operator is aten::bmm")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "sync-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: one read from the device per epoch (2 points)
#
# `loss.item()` copies a number from the device to Python. On a GPU it must wait until all queued work has
# finished, so calling it every step stalls the pipeline. Write `train_epoch(model, optimizer, batches)`:
#
# - one optimiser step per `(X, y)` in `batches`, on the batch's mean `F.cross_entropy`;
# - it returns the epoch's **mean loss per example**, as a Python `float` (batches can have different sizes:
#   a batch of 7 counts less than one of 16), computed from the losses of the steps themselves;
# - it reads from the device **once** in the whole epoch, however many batches there are.
#
# The test counts device-to-host reads with the profiler: each `.item()`, `float(tensor)` or `if tensor > ...`
# shows up as an `aten::_local_scalar_dense` call. (It trains with `torch.optim.SGD`; some other optimisers read
# values themselves.)

# %% nbgrader={"grade": false, "grade_id": "sync-answer", "locked": false, "schema_version": 3, "solution": true}
def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches) -> float:
    """One epoch of training; returns the mean cross-entropy per example, reading from the device once.

    batches: an iterable of (X, y) with X (B, ...) inputs and y (B,) int64 class labels; B may vary.
    """
    ### BEGIN SOLUTION
    total = None                                          # sum of per-example losses, kept on the device
    count = 0
    for X, y in batches:
        loss = F.cross_entropy(model(X), y)               # () batch mean
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        batch_sum = loss.detach() * len(y)
        total = batch_sum if total is None else total + batch_sum
        count += len(y)
    return total.item() / count                           # the one device-to-host read
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "sync-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _batches(seed: int, sizes, features: int = 10, classes: int = 4):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, features, generator=gen), torch.randint(0, classes, (b,), generator=gen)) for b in sizes]


def _reference_epoch(model, batches, lr):
    """The epoch train_epoch should run, on a copy of model: (mean loss per example, weights after)."""
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    total, count = 0.0, 0
    for X, y in batches:
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * len(y), count + len(y)
    return total / count, [p.detach().clone() for p in model.parameters()]


def _run_counting_reads(model, batches, lr):
    """train_epoch under the profiler: (its result, the model's weights after, the device-to-host reads)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = train_epoch(model, optimizer, batches)
    reads = sum(e.count for e in prof.key_averages() if e.key == "aten::_local_scalar_dense")
    return result, [p.detach().clone() for p in model.parameters()], reads


torch.manual_seed(0)
_model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4))
_start = copy.deepcopy(_model)
_data = _batches(0, [16, 16, 16, 16, 7])                  # the last batch is smaller
_result, _weights_after, _reads = _run_counting_reads(_model, _data, lr=0.1)
check_close("returns the mean loss per example as a float", _result,
            expected=_reference_epoch(_start, _data, lr=0.1)[0], rtol=1e-5, weight=2,
            hint="weight each batch's mean loss by its size (the last batch has 7 examples, not 16) and divide "
                 "by the number of examples; return a Python float (.item() on the final tensor)")
check_close("the weights after the epoch match five SGD steps", _weights_after,
            expected=_reference_epoch(_start, _data, lr=0.1)[1], atol=1e-6,
            hint="one optimizer step per batch: forward, F.cross_entropy, zero_grad, backward, step")
check_equal("one device-to-host read in the whole epoch", _reads, expected=1, weight=2,
            hint="keep the running sum as a tensor (loss.detach() * len(y)) and call .item() once at the end; "
                 "0 reads means the result was never turned into a Python float")
print("train_epoch: visible tests passed")

### BEGIN HIDDEN TESTS
torch.manual_seed(1)
_model = nn.Linear(10, 4)
_start = copy.deepcopy(_model)
_data = _batches(1, [3, 20, 9, 20, 1, 20, 11])
_result, _weights_after, _reads = _run_counting_reads(_model, _data, lr=0.05)
check_close("7 batches of mixed sizes: mean loss per example and weights", [_result, _weights_after],
            expected=list(_reference_epoch(_start, _data, lr=0.05)), rtol=1e-5, atol=1e-6, weight=2,
            hint="seven batches of sizes 3 to 20: the mean loss per example, or the weights after the epoch, "
                 "differ from the reference")
check_equal("7 batches: still one device-to-host read", _reads, expected=1, weight=2,
            hint="read from the device once per epoch, however many batches it has")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "flops-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: predict the FLOPs of a training step (2 points)
#
# Predict first, measure second. Throughput in TFLOP/s, and how far it is from what the hardware can do, starts
# from a count of the work. An MLP `Linear(w0, w1) → ReLU → Linear(w1, w2) → ReLU → … → Linear(w_{L-1}, w_L)`
# makes one training step on a batch of `batch_size` inputs that do **not** require gradients: forward,
# `F.cross_entropy`, backward (no optimiser step). How many floating-point operations does
# `torch.utils.flop_counter.FlopCounterMode` count for it? It counts **matrix products only**, 2 FLOPs (a multiply
# and an add) per multiply-add, so a `(m, k) @ (k, n)` product is `2·m·k·n` FLOPs; bias additions, ReLU and the
# loss are not counted.
#
# Write `mlp_training_flops(batch_size, widths)` with `widths = [w0, w1, ..., w_L]`, returning an int, from the
# sizes alone (`FlopCounterMode` is switched off while the tests call your function). The test cell counts the
# real step for several MLPs, some of them hidden. **Tolerance: exact** (the count is an integer; each MLP is a
# separate check). Before you write it: which matrix products does backward need for one `Linear` layer, and does
# the first layer need all of them?

# %% nbgrader={"grade": false, "grade_id": "flops-answer", "locked": false, "schema_version": 3, "solution": true}
def mlp_training_flops(batch_size: int, widths: list) -> int:
    """FLOPs FlopCounterMode counts for forward + cross-entropy + backward of the MLP with these widths."""
    ### BEGIN SOLUTION
    products = [2 * batch_size * w_in * w_out for w_in, w_out in zip(widths, widths[1:])]   # one per Linear
    # forward: one product per layer; backward: the weight's gradient for every layer, and the gradient of the
    # layer's input for every layer but the first (the batch needs none)
    return sum(products) + sum(products) + sum(products[1:])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "flops-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
import torch.utils.flop_counter


def _mlp_for(widths):
    torch.manual_seed(0)
    layers = []
    for w_in, w_out in zip(widths, widths[1:]):
        layers += [nn.Linear(w_in, w_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])                          # no ReLU after the last Linear


def _counted_step(batch_size, widths):
    """FlopCounterMode's counts for one training step, by phase: {"forward": FLOPs, "backward": FLOPs}."""
    net = _mlp_for(widths)
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(batch_size, widths[0], generator=gen)
    y = torch.randint(0, widths[-1], (batch_size,), generator=gen)
    with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        loss = F.cross_entropy(net(X), y)
        forward = counter.get_total_flops()
        loss.backward()
    return {"forward": forward, "backward": counter.get_total_flops() - forward}


def _predicted_flops(batch_size, widths):
    with forbid([(torch.utils.flop_counter.FlopCounterMode, "__enter__")],
                "predict from the sizes: FlopCounterMode is switched off while the tests call your function"):
        return mlp_training_flops(batch_size, list(widths))


for _batch_size, _widths in [(32, [64, 128, 10]), (8, [20, 30, 30, 5])]:
    check_prediction(f"batch {_batch_size}, widths {_widths}: FLOPs of one training step",
                     _predicted_flops(_batch_size, _widths), expected=sum(_counted_step(_batch_size, _widths).values()),
                     rtol=0.0,
                     hint="forward: one (B, w_in) @ (w_in, w_out) product per layer; backward: for each layer the "
                          "weight's gradient and, except for the first layer, the input's gradient")
print("mlp_training_flops: visible tests passed")

### BEGIN HIDDEN TESTS
for _batch_size, _widths in [(1, [784, 10]), (16, [10, 50, 50, 50, 3]), (5, [7, 3, 9])]:
    check_prediction(f"batch {_batch_size}, widths {_widths}: FLOPs of one training step",
                     _predicted_flops(_batch_size, _widths), expected=sum(_counted_step(_batch_size, _widths).values()),
                     rtol=0.0,
                     hint="every Linear layer costs 2·B·w_in·w_out per product; count one product forward and two "
                          "backward, one fewer for the first layer")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "flops-look", "locked": true, "schema_version": 3, "solution": false}
# Not graded: backward against forward, counted, for deeper and deeper MLPs of width 256. Backward needs two
# products per layer where forward needs one, so it costs twice as much, minus the first layer's input gradient,
# which matters less as the model grows deeper. This is where the rule "a training step costs 6 FLOPs per
# parameter and example" comes from: 2 forward + 4 backward.

# %% nbgrader={"grade": false, "grade_id": "flops-table", "locked": true, "schema_version": 3, "solution": false}
print(f"{'layers':>6} | {'forward FLOPs':>13} | {'backward FLOPs':>14} | {'backward / forward':>18}")
for _depth in (1, 2, 4, 16):
    _phases = _counted_step(64, [256] * (_depth + 1))
    print(f"{_depth:>6} | {_phases['forward']:>13,} | {_phases['backward']:>14,} | "
          f"{_phases['backward'] / _phases['forward']:>18.2f}")

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - A timing harness warms up, synchronises asynchronous devices before reading the clock, and returns every
#   measurement; `torch.utils.benchmark.Timer` does the same for you.
# - The profiler points at the cause of a slow loader: here, dataset-wide statistics recomputed for every item.
#   Work that is the same for every item belongs in `__init__` (or in a preprocessing step), not in
#   `__getitem__`.
# - Sort `key_averages()` by self time to find the operators that do the work.
# - Every `.item()` is a synchronisation point on a GPU: accumulate on the device and read once.
#
# ## Further exercises (not graded)
#
# 1. Use `time_calls` on a CUDA machine (Colab works) with and without the synchronisations. How far off is the
#    unsynchronised number for a large matrix product?
# 2. Profile `SlowNormalized` with `record_shapes=True` and `group_by_input_shape=True`. What shapes do the
#    expensive reductions see, and how does the cost of one epoch grow with the number of images?
# 3. Replace `torch.optim.SGD` with `torch.optim.Adam` in exercise 4's test and count the reads. Where do they
#    come from, and what does `capturable=True` change (on a GPU)?
# 4. Compile the MLP of exercise 3 with `torch.compile` and run `top_operator` on it. What do the operator names
#    look like now?
