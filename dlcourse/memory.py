"""Measuring training memory: where the bytes of a training step go, measured rather than guessed.

Introduced in notebook 08 (memory); notebook 07 (mixed precision) uses it to compare precisions. Three measurements:

- :func:`model_state_bytes` — the memory that lives *between* steps: parameters, gradients and optimiser state
  (Adam keeps two buffers per parameter, ``exp_avg`` and ``exp_avg_sq``, plus a scalar ``step``).
- :func:`saved_tensor_bytes` / :func:`saved_tensors` — the activations: what autograd saves during the forward pass
  for the backward pass, counted with :class:`torch.autograd.graph.saved_tensors_hooks`. Device-independent, and
  exactly what activation checkpointing reduces.
- :func:`peak_memory` — the peak of memory allocated while a function runs: CUDA's allocator statistics on a GPU;
  on a CPU, the allocation and free events of :mod:`torch.profiler` (``profile_memory=True``) replayed in time order.
  (``tracemalloc`` does not see torch's allocations, and the process's RSS depends on when ``malloc`` hands memory
  back to the system, so neither is used.)

Bytes are always counted per *storage* (the buffer a tensor is a view of), each storage once: a view keeps its whole
storage alive, and two views of one buffer cost its memory once.
"""

from __future__ import annotations

import contextlib
import os
import sys
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

__all__ = ["SavedTensors", "format_bytes", "model_state_bytes", "peak_memory", "saved_tensor_bytes",
           "saved_tensors", "tensor_bytes"]


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of the elements of ``t`` itself: ``numel * element_size`` (for a view, not its whole storage)."""
    return t.numel() * t.element_size()


def _storage(t: torch.Tensor) -> tuple[tuple[Any, ...], int]:
    """(key identifying the storage ``t`` lives in, bytes of that storage)."""
    try:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr != 0:
            return (t.device.type, t.device.index, ptr), storage.nbytes()
    except (RuntimeError, NotImplementedError):  # sparse, nested or other tensors without one plain storage
        pass
    return ("tensor", id(t)), tensor_bytes(t)


def _distinct_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen: dict[tuple[Any, ...], int] = {}
    for t in tensors:
        key, nbytes = _storage(t)
        seen[key] = nbytes
    return sum(seen.values())


def format_bytes(n: float) -> str:
    """Human-readable bytes with binary prefixes: ``format_bytes(3 * 2**20) == '3.00 MiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------------------------
# State that lives between steps: parameters, gradients, optimiser state
# ---------------------------------------------------------------------------------------------------------------

def model_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes held by ``model``'s parameters, their ``.grad``s and ``optimizer``'s state, right now.

    Returns ``{"parameters", "gradients", "optimizer_state", "total"}``. Each storage is counted once (tied weights
    once). Gradients are counted only where ``.grad`` exists (after a backward, unless ``zero_grad()`` set them to
    None); the optimizer state only once it exists (Adam creates ``exp_avg`` and ``exp_avg_sq``, one parameter-sized
    tensor each, plus a one-element ``step``, at its first ``step()``).
    """
    params = list(model.parameters())
    grads = [p.grad for p in params if p.grad is not None]
    state: list[torch.Tensor] = []
    if optimizer is not None:
        for per_param in optimizer.state.values():
            state += [v for v in per_param.values() if isinstance(v, torch.Tensor)]
    out = {"parameters": _distinct_bytes(params), "gradients": _distinct_bytes(grads),
           "optimizer_state": _distinct_bytes(state)}
    out["total"] = sum(out.values())
    return out


# ---------------------------------------------------------------------------------------------------------------
# Activations: what autograd saves for backward
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class SavedTensors:
    """What :func:`saved_tensors` counted while ``fn`` ran.

    ``peak_bytes``: the largest number of bytes held at one time by distinct storages saved for backward (a
    storage counts while at least one graph node still holds it; it is released when backward has run or the graph
    is dropped). ``total_bytes``: the bytes of every storage each time it became saved, summed: equal to
    ``peak_bytes`` unless ``fn`` released a graph before building the next (gradient accumulation: the sum over
    micro-batches). ``num_saved``: how many times autograd saved a tensor; ``num_storages``: how many storages
    became saved (one saved again after its release counts again). ``result``: what ``fn`` returned.
    """

    peak_bytes: int
    total_bytes: int
    num_saved: int
    num_storages: int
    result: Any = field(default=None, repr=False)


class _Packed:
    """What the pack hook hands autograd instead of the tensor; its death tells us the graph let go of it."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def saved_tensors(fn: Callable[[], Any], *, exclude: Iterable[torch.Tensor] = ()) -> SavedTensors:
    """Run ``fn()`` and count the tensors autograd saves for backward (see :class:`SavedTensors`).

    Which tensors count: everything autograd saves while ``fn`` runs — inputs of layers, intermediate activations,
    and also parameters (a Linear layer saves its weight to compute its input's gradient). The saved parameters are
    real references, but not *extra* memory: they exist anyway. So by default they are included (this is what the
    graph holds), and ``exclude=model.parameters()`` leaves out every storage of the given tensors, which gives the
    activation memory alone. A low-precision copy that autocast makes of a weight is a new storage, and counts.

    Activation checkpointing: a region under ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` saves
    its tensor inputs for backward (counted) and installs its own hooks inside, so the activations it will recompute
    are not saved (and not counted): the count shows exactly what checkpointing saves. Tensors that custom code
    stores on ``ctx`` directly instead of through ``save_for_backward`` are not seen.
    """
    excluded = {_storage(t)[0] for t in exclude}
    held: dict[tuple[Any, ...], list[int]] = {}  # storage key -> [references from the graph, bytes]; live only
    state = {"live": 0, "peak": 0, "total": 0, "saved": 0, "storages": 0}

    def release(key: tuple[Any, ...]) -> None:
        held[key][0] -= 1
        if held[key][0] == 0:  # the last graph node holding it is gone (its address may now be reused)
            state["live"] -= held.pop(key)[1]

    def pack(t: torch.Tensor) -> _Packed:
        state["saved"] += 1
        key, nbytes = _storage(t)
        packed = _Packed(t)
        if key in excluded:
            return packed
        if key not in held:
            held[key] = [0, nbytes]
            state["live"] += nbytes
            state["total"] += nbytes
            state["storages"] += 1
            state["peak"] = max(state["peak"], state["live"])
        held[key][0] += 1
        weakref.finalize(packed, release, key).atexit = False
        return packed

    def unpack(packed: _Packed) -> torch.Tensor:
        return packed.tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        result = fn()
    return SavedTensors(peak_bytes=state["peak"], total_bytes=state["total"], num_saved=state["saved"],
                        num_storages=state["storages"], result=result)


def saved_tensor_bytes(fn: Callable[[], Any], *, exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct tensors autograd saved for backward while ``fn()`` ran (peak held at one time).

    Example: ``saved_tensor_bytes(lambda: model(X))`` — or ``lambda: loss_fn(model(X), y)`` to include the loss's
    own saved tensors. Parameters count too unless ``exclude=model.parameters()``; see :func:`saved_tensors`.
    """
    return saved_tensors(fn, exclude=exclude).peak_bytes


# ---------------------------------------------------------------------------------------------------------------
# Peak memory while a function runs
# ---------------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ log lines bypass ``sys.stderr``) for the duration of the block."""
    sys.stderr.flush()
    try:
        saved_fd = os.dup(2)
    except OSError:  # no file descriptor 2 (a detached process): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved_fd, 2)
        os.close(saved_fd)


def _cpu_allocation_peak(fn: Callable[[], Any]) -> tuple[int, int]:
    """(peak, net) bytes allocated by torch on the CPU while ``fn`` runs, relative to the start."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # kineto logs "profiler_start/stop" lines on every use; fn's own errors still show
        prof.__enter__()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.__exit__(None, None, None)
    results = getattr(getattr(prof, "profiler", None), "kineto_results", None)
    if results is None:
        raise RuntimeError(f"torch {torch.__version__}'s profiler does not expose its allocation events here; "
                           "measure CPU activations with saved_tensor_bytes instead")
    events = []
    for e in results.events():  # every allocation (+) and free (-), with a timestamp
        if e.name() == "[memory]" and str(e.device_type()) == "DeviceType.CPU":
            events.append((e.start_ns(), e.nbytes()))
    events.sort(key=lambda ev: ev[0])
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak, live


def peak_memory(fn: Callable[[], Any], device: torch.device | str | None = None, *,
                count_saved: bool = True) -> dict[str, Any]:
    """Run ``fn()`` once and measure the memory it needed on ``device`` (default: CUDA if available, else CPU).

    Returns a dict:

    - ``"method"``: how it was measured (name this in any table you print);
    - ``"peak_bytes"``: the peak of allocated memory while ``fn`` ran, *above* what was allocated when it started
      (parameters, data and optimiser state that already existed are not in it; what ``fn`` creates is);
    - ``"net_bytes"``: allocated at the end minus at the start (e.g. gradients that ``fn`` created and kept);
    - ``"start_bytes"``: allocated when ``fn`` started (CUDA: ``memory_allocated``; None on the CPU, where torch
      keeps no running total);
    - ``"saved_bytes"``: peak bytes saved for backward (:func:`saved_tensor_bytes`, saved parameters included),
      if ``count_saved``.

    On CUDA: ``torch.cuda.reset_peak_memory_stats`` and ``max_memory_allocated`` around ``fn`` (after a
    synchronise), plus ``"peak_reserved_bytes"`` (what the caching allocator took from the driver). Elsewhere: the
    allocation and free events that :mod:`torch.profiler` records with ``profile_memory=True``, replayed in time
    order. Both count what goes through torch's allocator; memory a library allocates on its own (e.g. some oneDNN
    scratch buffers on the CPU) is missing. Running under the profiler makes ``fn`` slower: do not time it here.

    On the CPU the profiler only knows the size of blocks allocated while it runs: if ``fn`` frees a tensor that
    existed before (e.g. ``optimizer.zero_grad()`` dropping the last step's gradients), that free is not seen and
    the peak comes out too high. So free such tensors before measuring: call ``optimizer.zero_grad()`` outside
    ``fn`` and measure forward, backward and ``optimizer.step()``.
    """
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    saved: list[int] = []

    def run() -> None:
        if count_saved:
            saved.append(saved_tensor_bytes(fn))
        else:
            fn()

    out: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        out.update(method="torch.cuda.max_memory_allocated",
                   peak_bytes=torch.cuda.max_memory_allocated(device) - start,
                   net_bytes=torch.cuda.memory_allocated(device) - start, start_bytes=start,
                   peak_reserved_bytes=torch.cuda.max_memory_reserved(device))
    else:
        peak, net = _cpu_allocation_peak(run)
        method = "torch.profiler allocation events (CPU)"
        if device.type != "cpu":
            method += f"; {device.type} allocations not measured"
        out.update(method=method, peak_bytes=peak, net_bytes=net, start_bytes=None)
    if count_saved:
        out["saved_bytes"] = saved[0]
    return out
