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
started when they time out. Modules: ``worker`` (inside a job), ``launch`` (torchrun), ``local`` (local ranks),
``errors``; everything is imported here, so ``import dlcourse.distributed as dd`` is all a notebook needs.
"""

from .errors import LaunchError
from .launch import launch, torchrun_command
from .local import RANK_PRELOAD, run_local
from .worker import DistEnv, backend_for, cleanup, default_backend, init, is_main, print0, save0

__all__ = [
    "DistEnv", "LaunchError", "RANK_PRELOAD", "backend_for", "cleanup", "default_backend", "init", "is_main",
    "launch", "print0", "run_local", "save0", "torchrun_command",
]
