"""Launching a training script on several local processes with ``torchrun``, from Python, with the failing
rank's traceback in the error and every process killed on timeout."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence


from .errors import LaunchError, exception_name


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


def linux_prctl() -> Callable | None:
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
    prctl = linux_prctl()  # if the caller (e.g. a notebook kernel) dies, torchrun dies too: PR_SET_PDEATHSIG
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
        exception = exception_name(lines)
        detail = ("\n".join(lines[-tail_lines:]) if lines else _tail(stderr, tail_lines))
        who = f"rank {rank} failed" if rank is not None else "a worker failed"
        what = f" with {exception}" if exception else ""
        raise LaunchError(f"`{shown_command}` failed (exit code {proc.returncode}): {who}{what}.\n--- "
                          f"{'its traceback' if lines else 'last lines of the error output'} ---\n{detail}",
                          stdout=stdout, stderr=stderr, returncode=proc.returncode, failed_rank=rank,
                          exception=exception)
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
