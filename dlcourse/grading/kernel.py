"""Run one notebook in a fresh, bounded kernel: per-cell timeout, wall-clock limit and memory limit.

Whatever the notebook does — loop forever, allocate without end, call ``sys.exit()`` or ``os._exit()``, crash the
interpreter — ``run`` returns the notebook with the outputs of the cells that ran and a short reason why it stopped
early (None when it ran to the end). Errors inside cells do not stop it: they are recorded as cell outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nbformat import NotebookNode

from .sandbox import kernel_manager


@dataclass(frozen=True)
class Limits:
    """Bounds for one notebook run. ``memory_mb`` caps the kernel's data segment (None: no cap); ``threads`` sets
    the kernel's CPU threads (``OMP_NUM_THREADS``; None: inherit the environment's); ``gpu`` lets the kernel see
    the machine's GPUs (off for grading: smoke-scale labs are sized for a CPU, CPU results are the same on every
    machine, and a class's kernels do not pile onto one GPU's memory). ``sandbox`` is "bwrap" (the kernel confined
    by bubblewrap, see ``sandbox``) or "none"; ``dlcourse grade`` resolves its default to bwrap on Linux."""

    cell_timeout: float = 120.0
    submission_timeout: float = 600.0
    memory_mb: int | None = 4096
    threads: int | None = None
    gpu: bool = False
    sandbox: str = "none"


def kernel_name() -> str:
    """The course kernel when it is registered (``make lab`` does it), else the current Python's ipykernel."""
    from jupyter_client.kernelspec import KernelSpecManager

    return "dlcourse" if "dlcourse" in KernelSpecManager().find_kernel_specs() else "python3"


def _limit_kernel(memory_mb: int | None):
    """A ``preexec_fn`` for the kernel process: cap its memory and make it die with the process that started it."""
    def apply() -> None:
        if memory_mb is not None:
            import resource

            cap = memory_mb * 2 ** 20
            resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))  # RLIMIT_AS would stop torch from loading
        if sys.platform.startswith("linux"):
            import ctypes
            import signal

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphaned kernels
    return apply


def run(nb: NotebookNode, limits: Limits, env: dict[str, str], cwd: Path | str | None = None, *,
        stop_on_error: bool = False) -> tuple[NotebookNode, str | None]:
    """Execute ``nb`` in place in a new kernel with ``env`` added to the environment; return it and why it stopped.

    By default a cell that raises is recorded and the next cell runs (grading needs every test cell's verdict).
    With ``stop_on_error=True`` (``dlcourse verify``) the run stops at the first such cell, except cells tagged
    ``raises-exception``, and the reason names the cell and its error.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    deadline = time.monotonic() + limits.submission_timeout

    def cell_timeout(cell: NotebookNode) -> int:
        return max(1, int(min(limits.cell_timeout, deadline - time.monotonic())))

    with tempfile.TemporaryDirectory(prefix="dlcourse-kernel-") as tmp:
        workdir, runtime = Path(tmp) / "work", Path(tmp) / "runtime"
        workdir.mkdir()
        runtime.mkdir(mode=0o700)
        if limits.sandbox != "none":
            cwd = workdir  # a confined kernel sees only its own working folder
        km = kernel_manager(kernel_name(), limits.sandbox, workdir, runtime, gpu=limits.gpu)
        client = NotebookClient(nb, km=km, timeout_func=cell_timeout, kernel_name=km.kernel_name,
                                allow_errors=not stop_on_error,
                                resources={"metadata": {"path": str(cwd or workdir)}}, shutdown_kernel="immediate")
        try:
            # the kernel's own stderr (start-up chatter) is not the notebook's output: errors arrive as cell outputs
            threads = {} if limits.threads is None else {"OMP_NUM_THREADS": str(limits.threads),
                                                         "MKL_NUM_THREADS": str(limits.threads)}
            no_gpu = {} if limits.gpu else {"CUDA_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": ""}
            # cleanup_kc: nbclient shuts down only kernels whose manager it made itself; this one is ours
            client.execute(env={**os.environ, **threads, **no_gpu, **env}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, preexec_fn=_limit_kernel(limits.memory_mb), cleanup_kc=True)
        except CellTimeoutError:
            if time.monotonic() >= deadline - 1:
                return nb, f"timeout: the notebook ran longer than {limits.submission_timeout:g} s in all"
            return nb, f"timeout: a cell ran longer than {limits.cell_timeout:g} s"
        except DeadKernelError:
            return nb, "kernel died: the notebook exited, crashed or ran out of memory"
        except CellExecutionError as exc:
            return nb, f"error: {_first_error(nb) or exc.ename}"
        except RuntimeError as exc:  # e.g. the kernel failed to start
            return nb, f"kernel error: {exc}"
    return nb, None


def _first_error(nb: NotebookNode) -> str | None:
    """``cell N: Name: message`` for the first code cell with an error output not tagged ``raises-exception``."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "raises-exception" in cell.get("metadata", {}).get("tags", []):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                message = " ".join(str(output.get("evalue", "")).split())
                return f"cell {index}: {output.get('ename', 'Error')}: {message[:500]}"
    return None
