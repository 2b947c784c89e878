"""Inside a worker of a torchrun job: join the process group on the right backend and device, leave it
cleanly, and print or save on rank 0 only."""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


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
    from ..train import atomic_save  # here, not at the top: workers that never save skip importing the loop

    path = Path(path)
    if is_main():
        atomic_save(obj, path)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return path
