"""Local CPU ranks for notebooks and tests: :func:`run_local` runs a function on N processes started from a
fork server (never a fork of a caller that may have used CUDA), joined in a gloo process group."""

from __future__ import annotations

import io
import os
import pickle
import signal
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist

from .errors import LaunchError, RemoteTraceback, exception_name
from .launch import linux_prctl


#: Imported once by the fork server that starts :func:`run_local`'s ranks, so that each rank starts in a fraction
#: of a second instead of importing torch itself (DDP and FSDP import torch._dynamo on first use: seconds).
RANK_PRELOAD = ("torch", "torch.distributed", "torch._dynamo", "dlcourse.distributed.local")


def _cloudpickle():
    """cloudpickle (a dependency of the course; older joblib releases ship a copy of it)."""
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - an environment without the course's own dependencies
        from joblib.externals import cloudpickle  # type: ignore[no-redef]
    return cloudpickle


def _die_with_parent() -> None:
    """Linux: end this rank when the process that started it (the fork server) ends, e.g. when the kernel dies."""
    prctl = linux_prctl()
    if prctl:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _rank_main(job: bytes, rank: int, world_size: int, store_path: str, conn, threads: int, timeout_s: float,
               environ: dict[str, str]) -> None:
    """One rank of :func:`run_local`, in a fresh process: join the gloo group through a file store, run the
    function, send back (status, value, output, time of failure)."""
    _die_with_parent()
    os.environ.clear()
    os.environ.update(environ)  # the caller's environment now, not the server's when it started
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU ranks: no rank creates a CUDA context (the server made none)
    captured = io.StringIO()
    sys.stdout = sys.stderr = captured  # the parent prints each rank's output, prefixed with its rank
    status, value, failed_at = "ok", None, 0.0
    try:
        torch.set_num_threads(threads)
        fn, args = _cloudpickle().loads(job)
        store = dist.FileStore(store_path, world_size)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s))
        value = fn(rank, world_size, *args)
        dist.barrier()  # every rank is done with its collectives; os._exit below then ends the process group
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        status, failed_at = "error", time.time()
        text = traceback.format_exc()
        try:  # by value: an exception class defined in a notebook comes back too
            value = (_cloudpickle().dumps(exc), text)
        except Exception:  # an exception that cannot be pickled: send its traceback only
            value = (None, text)
    try:
        payload = pickle.dumps((status, value, captured.getvalue(), failed_at))
    except Exception as exc:  # the return value cannot be pickled
        payload = pickle.dumps(("error", (None, f"{type(exc).__name__}: rank {rank} returned a value that cannot "
                                          f"be sent back ({exc}); return tensors, numbers, lists or dicts"),
                                captured.getvalue(), time.time()))
    try:
        conn.send_bytes(payload)
        conn.close()
    finally:
        os._exit(0)  # skip the interpreter's shutdown: gloo's threads can abort it (PLATFORM.md)


def _rank_context():
    """The start method for ranks: never ``fork`` (see :func:`dlcourse.config.safe_mp_context`). With
    ``forkserver`` the server imports :data:`RANK_PRELOAD` once when it starts (if another user of the server
    started it first, each rank imports them itself: slower, still correct)."""
    from ..config import safe_mp_context

    return safe_mp_context(preload=RANK_PRELOAD)


def run_local(fn: Callable[..., Any], world_size: int = 2, *args: Any, timeout: float = 120.0,
              echo: bool = True) -> list[Any]:
    """Call ``fn(rank, world_size, *args)`` on ``world_size`` new local processes; return their results by rank.

    Each process joins a gloo process group (through a file store in a fresh temporary directory: no ports, so
    parallel runs never collide), so ``torch.distributed`` collectives work inside ``fn``. Results come back as a
    list indexed by rank (they must be picklable: tensors, numbers, lists, dicts). What a rank prints is shown
    after the run, prefixed with its rank (``echo=True``).

    The ranks are never forked from this process: a copy of a process that has used CUDA or autograd's threads
    fails ("Unable to handle autograd's threading in combination with fork-based multiprocessing") or hangs. They
    come from a fork server (:func:`dlcourse.config.safe_mp_context`; ``spawn`` on Windows), a small process
    started fresh that has imported torch but never touched a GPU, so a rank starts in a fraction of a second
    after the first call (which starts the server: a few seconds). ``fn`` and ``args`` travel by value with
    cloudpickle, so functions and lambdas defined in a notebook work, together with the globals they use. The
    ranks see this process's environment variables and compute on the CPU: they see no GPU
    (``CUDA_VISIBLE_DEVICES`` is empty in them), and each uses this process's torch threads divided by
    ``world_size`` (at least 1).

    If a rank raises, its exception is re-raised here with the rank's traceback attached (so an ``AssertionError``
    stays an ``AssertionError``), and the other ranks are stopped. Raises :class:`LaunchError` if a rank crashes
    without an exception or the run exceeds ``timeout`` seconds. In a script (not a notebook), call it under
    ``if __name__ == "__main__":``: each rank imports the script's main module, as with any non-fork start method.
    """
    from multiprocessing.connection import wait

    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, not {world_size}")
    job = _cloudpickle().dumps((fn, args))
    threads = max(1, torch.get_num_threads() // world_size)
    ctx = _rank_context()
    results: dict[int, Any] = {}
    outputs: dict[int, str] = {}
    failures: dict[int, tuple[float, str, Any]] = {}  # rank -> (when, status, value)
    with tempfile.TemporaryDirectory(prefix="dlcourse-ranks-") as tmp:
        procs, conns = [], {}
        try:
            for rank in range(world_size):
                receiver, sender = ctx.Pipe(duplex=False)
                conns[receiver] = rank
                proc = ctx.Process(target=_rank_main, daemon=True, args=(
                    job, rank, world_size, os.path.join(tmp, "store"), sender, threads, timeout, dict(os.environ)))
                proc.start()
                sender.close()
                procs.append(proc)
            deadline = time.monotonic() + timeout
            pending = dict(conns)
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for conn in wait(list(pending), timeout=min(left, 1.0)):
                    rank = pending.pop(conn)
                    try:
                        status, value, output, failed_at = pickle.loads(conn.recv_bytes())
                    except (EOFError, OSError):
                        status, value, output, failed_at = "crash", None, "", time.time()
                    outputs[rank] = output
                    if status == "ok":
                        results[rank] = value
                    else:
                        failures[rank] = (failed_at, status, value)
                if failures:  # the other ranks usually fail next (their peer is gone): hear them, then stop
                    deadline = min(deadline, time.monotonic() + 1.0)
        finally:  # also on KeyboardInterrupt (a notebook's stop button): leave no rank behind
            for proc in procs:
                if len(results) < world_size:
                    proc.kill()
                proc.join(timeout=5)
            for conn in conns:
                conn.close()
    if echo:
        for rank in sorted(outputs):
            for line in outputs[rank].splitlines():
                print(f"[rank {rank}] {line}")
    if failures:
        _raise_rank_failure(failures, procs, world_size)
    if len(results) < world_size:
        missing = sorted(set(range(world_size)) - set(results))
        raise LaunchError(f"ranks {missing} of {world_size} did not finish within {timeout:g} s and were stopped (a "
                          f"rank waiting in a collective that another rank never reaches is the usual cause)",
                          timed_out=True)
    return [results[rank] for rank in range(world_size)]


def _raise_rank_failure(failures: dict[int, tuple[float, str, Any]], procs: list, world_size: int) -> None:
    """Re-raise the first failing rank's exception (its traceback attached), or a :class:`LaunchError`."""
    rank = min(failures, key=lambda r: failures[r][0])  # the first to fail is the cause
    _, status, value = failures[rank]
    if status == "crash":
        code = procs[rank].exitcode
        why = f"exit code {code}"
        if code is not None and code < 0:
            why = f"killed by {signal.Signals(-code).name}"
            if -code == signal.SIGABRT:
                why += ("; gloo aborts a rank when the ranks' tensors in a collective differ in size, "
                        "see the kernel's or terminal's error output")
        elif code == 1 and getattr(sys.modules["__main__"], "__file__", None):
            why += ("; if this runs in a script, call run_local under `if __name__ == '__main__':` (each rank "
                    "imports the script)")
        raise LaunchError(f"rank {rank} of {world_size} died without an exception ({why})",
                          failed_rank=rank, returncode=code)
    blob, text = value
    exc = None
    if blob is not None:
        try:
            exc = pickle.loads(blob)
        except Exception:
            exc = None
    if isinstance(exc, BaseException):
        raise exc from RemoteTraceback(f"rank {rank} of {world_size} failed:\n{text}")
    raise LaunchError(f"rank {rank} of {world_size} failed:\n{text}", failed_rank=rank,
                      exception=exception_name(text.splitlines()))
