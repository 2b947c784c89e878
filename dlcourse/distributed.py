"""Distributed-training helpers: launch ``torchrun`` from Python, set up and tear down a process group on any device,
run a function on N local CPU processes, and print or save on rank 0 only.

Introduced in notebook 09 (and lab 09). Two ways to run code on several processes:

- :func:`launch` runs a real training script with ``torchrun`` (``python -m torch.distributed.run --standalone``):
  new processes, each importing the script, exactly as on a cluster. Inside the script, :func:`init` joins the
  process group (NCCL with one GPU per local rank when there are enough GPUs, else gloo on the CPU:
  :func:`backend_for`) and :func:`cleanup` leaves it.
- :func:`run_local` starts ``world_size`` processes from a fork server (never a fork of the caller, which may have
  used CUDA) and calls a function there, shipped by value with cloudpickle, with a gloo process group already set
  up; it returns what each rank returned. For small CPU experiments in a notebook or a test; it never uses a GPU.

Both raise a clear error with the failing worker's traceback when a worker fails, and kill every process they
started when they time out.
"""

from __future__ import annotations

import gc
import io
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

__all__ = [
    "DistEnv", "LaunchError", "backend_for", "cleanup", "default_backend", "init", "is_main", "launch", "print0",
    "run_local", "save0", "torchrun_command",
]


# ---------------------------------------------------------------------------------------------------- errors
class LaunchError(RuntimeError):
    """A distributed run failed: a worker raised or crashed, or the run timed out.

    ``stdout``/``stderr``: what the run printed; ``failed_rank``: the first rank that failed (None if unknown);
    ``exception``: the name of the exception that rank raised (e.g. ``"ValueError"``), if it raised one.
    """

    def __init__(self, message: str, *, stdout: str = "", stderr: str = "", returncode: int | None = None,
                 failed_rank: int | None = None, exception: str | None = None, timed_out: bool = False) -> None:
        super().__init__(message)
        self.stdout, self.stderr, self.returncode = stdout, stderr, returncode
        self.failed_rank, self.exception, self.timed_out = failed_rank, exception, timed_out


class _RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the ``__cause__`` of the exception re-raised here."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


# ------------------------------------------------------------------------------------------ inside a worker
@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job: its global ``rank``, ``local_rank`` on this machine, the ``world_size``,
    the ``device`` it computes on and the ``backend`` of the process group."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that prints, saves and logs."""
        return self.rank == 0


def backend_for(local_ranks: int = 1) -> tuple[str, str]:
    """The backend for ``local_ranks`` processes on this machine, and the devices they get, in words.

    NCCL with one GPU per rank (``cuda:LOCAL_RANK``) when CUDA has at least ``local_ranks`` GPUs; otherwise gloo
    on the CPU. NCCL cannot put two ranks on one GPU, so 2 ranks on a machine with 1 GPU run on the CPU.
    """
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and gpus >= local_ranks and dist.is_nccl_available():
        return "nccl", f"nccl, one GPU per rank (cuda:0 to cuda:{local_ranks - 1} of {gpus} GPUs)"
    if gpus:
        return "gloo", (f"gloo on the CPU: {local_ranks} ranks on this machine but {gpus} GPU"
                        f"{'s' if gpus > 1 else ''} (NCCL needs one GPU per rank)")
    return "gloo", "gloo on the CPU (no CUDA GPU)"


def default_backend(local_ranks: int | None = None) -> str:
    """:func:`backend_for` the ranks on this machine (``$LOCAL_WORLD_SIZE``, set by torchrun; else 1)."""
    return backend_for(local_ranks or int(os.environ.get("LOCAL_WORLD_SIZE", "1")))[0]


def init(backend: str | None = None, *, timeout_s: float = 300.0) -> DistEnv:
    """Join the process group of a job started by ``torchrun`` and return this process's :class:`DistEnv`.

    Reads ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
    (torchrun sets them). Without ``backend``, :func:`backend_for` chooses: NCCL and ``cuda:LOCAL_RANK`` when there
    is a GPU for every local rank, else gloo on the CPU (rank 0 says so when GPUs are left unused). ``"gloo"``
    always means the CPU; ``"nccl"`` without a GPU per rank is an error. ``timeout_s`` bounds how long a
    collective waits for the other ranks before failing.
    """
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not set: this code must run under torchrun (e.g. `python -m torch.distributed.run "
            f"--standalone --nproc-per-node=2 script.py`, or dlcourse.distributed.launch('script.py')); "
            f"inside a notebook use dlcourse.distributed.run_local")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    chosen, why = backend_for(local_ranks)
    if backend is None:
        backend = chosen
        if rank == 0 and backend == "gloo" and torch.cuda.is_available():
            print(f"dlcourse.distributed.init: {why}", flush=True)
    if backend == "nccl":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus < local_ranks:
            raise RuntimeError(f"backend 'nccl' needs one CUDA GPU per local rank: {local_ranks} ranks on this "
                               f"machine, {gpus} GPU{'' if gpus == 1 else 's'}. Use backend='gloo' (CPU) or "
                               f"fewer processes (--nproc-per-node={max(gpus, 1)}).")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)  # before any CUDA work: otherwise every rank piles onto cuda:0
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **kwargs)
    return DistEnv(rank, local_rank, world_size, device, backend)


def cleanup(*, exit_process: bool = True) -> None:
    """Leave the process group cleanly at the end of a torchrun script (call it last).

    Frees unreachable objects (a DDP model's reducer holds on to the process group), waits for every rank at a
    barrier, destroys the group, flushes stdout and stderr and, with ``exit_process=True``, ends the process at once
    with ``os._exit(0)``. That last step sidesteps an intermittent abort while the interpreter shuts down gloo's
    threads after ``destroy_process_group`` ("terminate called without an active exception", exit code -6).
    Nothing after ``cleanup()`` runs: save results before it.
    """
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    if exit_process:
        os._exit(0)


def is_main() -> bool:
    """True on rank 0, or when no process group is set up (a plain single-process run)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def print0(*args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only (flushed at once, so lines from a launched job arrive in order)."""
    if is_main():
        print(*args, **{"flush": True, **kwargs})


def save0(obj: Any, path: str | os.PathLike) -> Path:
    """Rank 0 saves ``obj`` with ``torch.save`` (atomically: temporary file, then rename); then every rank waits at
    a barrier, so after ``save0`` returns the file is complete and any rank may load it."""
    from .train import atomic_save  # here, not at the top: workers that never save skip importing the loop

    path = Path(path)
    if is_main():
        atomic_save(obj, path)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return path


# ------------------------------------------------------------------------------------------------ torchrun
def torchrun_command(target: str | os.PathLike, nproc: int = 2, args: Sequence[Any] = ()) -> list[str]:
    """The ``torchrun`` command line for a script file (``*.py`` or an existing path) or a module name.

    ``--standalone`` starts a rendezvous on a free local port, so several launches can run side by side.
    Uses this Python (``sys.executable -m torch.distributed.run``), which works where the ``torchrun`` script is
    not on ``PATH`` (a notebook kernel started from a virtual environment).
    """
    target = str(target)
    is_script = target.endswith(".py") or os.path.sep in target or Path(target).is_file()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={int(nproc)}"]
    command += [target] if is_script else ["-m", target]
    return command + [str(a) for a in args]


def _rank_traceback(stderr: str, rank: int | None) -> list[str]:
    """The lines torchrun prefixed with ``[rankN]:`` for the failing rank, without the prefix."""
    if rank is None:
        return []
    prefix = f"[rank{rank}]:"
    return [line[len(prefix):].removeprefix(" ") for line in stderr.splitlines() if line.startswith(prefix)]


def _worker_tracebacks(stderr: str) -> list[list[str]]:
    """Python tracebacks in the error output that are not torchrun's own report (workers that did not set up
    ``torch.distributed`` print theirs without a ``[rankN]:`` prefix)."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in stderr.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            current = [line]
            continue
        if current is None:
            continue
        current.append(line)
        if line and not line[0].isspace():  # the exception line ends the block
            text = "\n".join(current)
            if "ChildFailedError" not in text and "torch/distributed/run.py" not in text:
                blocks.append(current)
            current = None
    return blocks


def _root_cause_rank(stderr: str) -> int | None:
    """The rank torchrun names as the root cause (the first to fail), else the first rank that printed a traceback."""
    cause = re.search(r"Root Cause.*?\brank\s*:\s*(\d+)", stderr, flags=re.S)
    if cause:
        return int(cause.group(1))
    first = re.search(r"^\[rank(\d+)\]: Traceback", stderr, flags=re.M)
    return int(first.group(1)) if first else None


def _exception_name(lines: Sequence[str]) -> str | None:
    """The exception class named by the last ``Name: message`` (or bare ``Name``) line of a traceback."""
    for line in reversed(lines):
        match = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning))\b", line)
        if match:
            return match.group(1).rsplit(".", 1)[-1]
    return None


def _tail(text: str, lines: int) -> str:
    kept = text.splitlines()[-lines:]
    return "\n".join(kept)


def _kill_group(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """SIGTERM the launch's whole process group (torchrun and its workers), then SIGKILL what is left."""
    if not hasattr(os, "killpg"):  # Windows: no process groups to signal
        proc.kill()
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _prctl() -> Callable | None:
    """libc's ``prctl`` on Linux (looked up here: the child of a fork must not load libraries), else None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None).prctl


def launch(target: str | os.PathLike, nproc: int = 2, args: Sequence[Any] = (), *, timeout: float = 300.0,
           env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None, echo: bool = True,
           tail_lines: int = 40) -> subprocess.CompletedProcess:
    """Run a script or module on ``nproc`` local processes with torchrun; return the finished process.

    ``target`` is a file (``"train.py"``) or a module name (``"dlcourse.scripts.x"``); ``args`` are passed to it.
    With ``echo=True`` the workers' standard output is printed here as it arrives. Each worker gets
    ``OMP_NUM_THREADS`` = this environment's value, else CPU cores // ``nproc`` (at least 1).

    Raises :class:`LaunchError` when a worker fails (the message holds that worker's traceback, or the tail of the
    error output) or when the run takes longer than ``timeout`` seconds (then every process of the run is killed).
    """
    command = torchrun_command(target, nproc, args)
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // max(1, int(nproc))))
    run_env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1", **(env or {})}
    prctl = _prctl()  # if the caller (e.g. a notebook kernel) dies, torchrun dies too: PR_SET_PDEATHSIG
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env,
                            cwd=cwd, start_new_session=True,
                            preexec_fn=(lambda: prctl(1, signal.SIGTERM)) if prctl else None)
    out_lines: list[str] = []
    err_lines: deque[str] = deque(maxlen=2000)
    readers = [threading.Thread(target=lambda s=s, keep=keep: keep.extend(iter(s.readline, "")), daemon=True)
               for s, keep in ((proc.stdout, out_lines), (proc.stderr, err_lines))]
    for reader in readers:
        reader.start()
    shown, deadline, timed_out = 0, time.monotonic() + timeout, False
    try:
        while True:
            try:
                proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            if echo and len(out_lines) > shown:
                new, shown = out_lines[shown:], len(out_lines)
                print("".join(new), end="", flush=True)
            if time.monotonic() > deadline:
                timed_out = True
                _kill_group(proc)
                break
    except BaseException:  # e.g. KeyboardInterrupt from a notebook's stop button: leave no workers behind
        _kill_group(proc)
        raise
    for reader in readers:
        reader.join(timeout=5)
    if echo and len(out_lines) > shown:
        print("".join(out_lines[shown:]), end="", flush=True)
    stdout, stderr = "".join(out_lines), "".join(err_lines)
    shown_command = "python " + " ".join(command[1:])
    if timed_out:
        raise LaunchError(f"`{shown_command}` did not finish within {timeout:g} s and was stopped (all its processes "
                          f"killed). A rank waiting forever in a collective that another rank never reaches is the "
                          f"usual cause.\n--- last lines of the workers' error output ---\n"
                          f"{_tail(stderr, tail_lines)}", stdout=stdout, stderr=stderr, returncode=proc.returncode,
                          timed_out=True)
    if proc.returncode != 0:
        rank = _root_cause_rank(stderr)
        lines = _rank_traceback(stderr, rank) or [line for block in _worker_tracebacks(stderr)[-1:] for line in block]
        exception = _exception_name(lines)
        detail = ("\n".join(lines[-tail_lines:]) if lines else _tail(stderr, tail_lines))
        who = f"rank {rank} failed" if rank is not None else "a worker failed"
        what = f" with {exception}" if exception else ""
        raise LaunchError(f"`{shown_command}` failed (exit code {proc.returncode}): {who}{what}.\n--- "
                          f"{'its traceback' if lines else 'last lines of the error output'} ---\n{detail}",
                          stdout=stdout, stderr=stderr, returncode=proc.returncode, failed_rank=rank,
                          exception=exception)
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


# ------------------------------------------------------------------------------------------------- local ranks
#: Imported once by the fork server that starts :func:`run_local`'s ranks, so that each rank starts in a fraction
#: of a second instead of importing torch itself (DDP and FSDP import torch._dynamo on first use: seconds).
RANK_PRELOAD = ("torch", "torch.distributed", "torch._dynamo", "dlcourse.distributed")


def _cloudpickle():
    """cloudpickle (a dependency of the course; older joblib releases ship a copy of it)."""
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - an environment without the course's own dependencies
        from joblib.externals import cloudpickle  # type: ignore[no-redef]
    return cloudpickle


def _die_with_parent() -> None:
    """Linux: end this rank when the process that started it (the fork server) ends, e.g. when the kernel dies."""
    prctl = _prctl()
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
    from .config import safe_mp_context

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
        raise exc from _RemoteTraceback(f"rank {rank} of {world_size} failed:\n{text}")
    raise LaunchError(f"rank {rank} of {world_size} failed:\n{text}", failed_rank=rank,
                      exception=_exception_name(text.splitlines()))
