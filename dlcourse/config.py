"""Set-up shared by every notebook: the scale knob, seeding, device choice and a one-line environment report.

Introduced in notebook 00. Every notebook starts with ``cfg = dlcourse.setup(seed=0)`` and takes its sizes from
``cfg.pick(smoke=..., small=..., full=...)`` instead of branching on the scale itself.

Also the device facts that several notebooks need and that must be the same everywhere: which autocast dtype the
device computes natively (:func:`amp_dtype`, notebook 07), whether TF32 is on (:func:`tf32_status`, notebooks 07
and 10), and a process start method that is safe after CUDA has been used (:func:`safe_mp_context`, notebooks 05,
09 and 10).
"""

from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass
from typing import Iterable, TypeVar

import numpy as np
import torch

SCALES = ("smoke", "small", "full")
SCALE_ENV = "DLCOURSE_SCALE"
#: Set to 1 to keep full scale on the offline datasets (a GPU machine with no network and no filled data cache).
OFFLINE_ENV = "DLCOURSE_OFFLINE"

T = TypeVar("T")


class ScaleError(ValueError):
    """An unknown value for DLCOURSE_SCALE (or the ``scale=`` argument)."""


#: The least a CUDA GPU needs for full scale: Volta or newer (tensor cores) and this much memory. Colab's T4
#: (Turing, 15 GB) qualifies; an old K80 or a small laptop GPU runs the small scale instead.
FULL_SCALE_MIN_CAPABILITY = (7, 0)
FULL_SCALE_MIN_GIB = 10.0


def gpu_fits_full_scale(index: int = 0) -> tuple[bool, str]:
    """Whether CUDA device ``index`` is up to full scale, and a reason that names the GPU (empty without CUDA)."""
    if not torch.cuda.is_available():
        return False, ""
    props = torch.cuda.get_device_properties(index)
    gib = props.total_memory / 2**30
    name = f"{props.name} (compute capability {props.major}.{props.minor}, {gib:.0f} GiB)"
    if (props.major, props.minor) < FULL_SCALE_MIN_CAPABILITY:
        return False, f"{name} is older than Volta: too slow for full scale"
    if gib < FULL_SCALE_MIN_GIB:
        return False, f"{name} has less than {FULL_SCALE_MIN_GIB:g} GiB of memory: too small for full scale"
    return True, name


def resolve_scale(scale: str | None = None) -> str:
    """Return the scale to use: the argument, else ``$DLCOURSE_SCALE``, else full on a CUDA GPU that is up to it
    (:func:`gpu_fits_full_scale`) and small otherwise."""
    source = "scale argument"
    if scale is None:
        scale = os.environ.get(SCALE_ENV) or None
        source = f"environment variable {SCALE_ENV}"
    if scale is None:
        return "full" if gpu_fits_full_scale()[0] else "small"
    value = scale.strip().lower()
    if value not in SCALES:
        raise ScaleError(
            f"{source} is {scale!r}, which is not a scale. Valid scales: {', '.join(SCALES)} "
            f"(smoke = seconds, for CI; small = minutes on a laptop CPU; full = the real run on a GPU)."
        )
    return value


def pick_device() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def amp_dtype(device: torch.device | str) -> torch.dtype:
    """The autocast dtype for mixed precision on ``device``: bfloat16 where the hardware computes it natively (CPUs
    with AVX-512 BF16 or AMX, NVIDIA Ampere and newer), float16 otherwise (older GPUs such as Colab's T4, Apple's
    MPS). float16 needs a ``GradScaler`` against gradient underflow; bfloat16 has float32's range and needs none."""
    device = torch.device(device)
    if device.type == "cuda":
        with torch.cuda.device(device.index if device.index is not None else torch.cuda.current_device()):
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16


def tf32_status() -> str:
    """Whether float32 matrix products and cuDNN convolutions may run in TF32 on CUDA (10-bit mantissa, ~1e-3
    relative error, several times faster on tensor cores): e.g. ``"TF32 matmul off, cuDNN conv on"``.

    PyTorch's defaults: matmuls off (``torch.backends.cuda.matmul.allow_tf32``, also switched on by
    ``torch.set_float32_matmul_precision("high")``), cuDNN convolutions on (``torch.backends.cudnn.allow_tf32``).
    """
    on_off = {True: "on", False: "off"}
    return (f"TF32 matmul {on_off[bool(torch.backends.cuda.matmul.allow_tf32)]}, "
            f"cuDNN conv {on_off[bool(torch.backends.cudnn.allow_tf32)]}")


_FORKSERVER_PRELOAD: set[str] = set()


def safe_mp_context(preload: Iterable[str] = ()):
    """A ``multiprocessing`` context that is safe to use after this process has used CUDA (or autograd's threads).

    ``fork`` copies a process whose CUDA driver state and worker threads cannot survive the copy: a forked child
    that touches CUDA or runs backward after its parent did fails ("Unable to handle autograd's threading in
    combination with fork-based multiprocessing") or hangs. ``forkserver`` forks children from a small server
    process started fresh (which never used CUDA), so they start quickly and safely; ``spawn`` (Windows) starts
    each child as a new Python. Either way, what a child receives is pickled: a Dataset or function must be
    importable from a module (or, for :func:`dlcourse.distributed.run_local`, pickled by value).

    ``preload`` names modules the fork server imports once when it starts, so children need not import them
    again (torch: seconds). One server serves the whole process, so every caller's modules are pooled; a module
    asked for after the server started is imported by each child instead (slower, still correct).
    """
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    _FORKSERVER_PRELOAD.update(preload)
    if _FORKSERVER_PRELOAD:
        ctx.set_forkserver_preload(sorted(_FORKSERVER_PRELOAD))
    return ctx


def offline_requested() -> bool:
    """True when ``$DLCOURSE_OFFLINE`` is set to 1/true/yes: full scale then uses the offline datasets too."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Config:
    """What a notebook needs to know about the run: seed, scale and device; ``offline`` is True when
    ``$DLCOURSE_OFFLINE`` asks full scale not to download its real datasets."""

    seed: int
    scale: str
    device: torch.device
    offline: bool = False

    def pick(self, *, smoke: T, small: T, full: T) -> T:
        """Return the value for the current scale, e.g. ``num_epochs = cfg.pick(smoke=2, small=10, full=30)``."""
        return {"smoke": smoke, "small": small, "full": full}[self.scale]

    @property
    def smoke(self) -> bool:
        """True at smoke scale (CI and the autograder)."""
        return self.scale == "smoke"


def environment_report(scale: str | None = None, device: torch.device | None = None) -> str:
    """One line: Python, torch, device (on CUDA: GPU name, memory, compute capability, native bfloat16 or not,
    TF32 switches), scale and CPU threads."""
    device = device or pick_device()
    where = str(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        bf16 = "bf16 native" if amp_dtype(device) == torch.bfloat16 else "no native bf16"
        where += (f" ({props.name}, {props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}, {bf16}, "
                  f"{tf32_status()})")
    return (
        f"python {platform.python_version()} | torch {torch.__version__} | device {where} | "
        f"scale {scale or resolve_scale()} | threads {torch.get_num_threads()}"
    )


def setup(seed: int = 0, scale: str | None = None, *, quiet: bool = False) -> Config:
    """Seed everything, choose device and scale, print the environment report, and return the :class:`Config`."""
    chosen = resolve_scale(scale)
    seed_everything(seed)
    cfg = Config(seed=seed, scale=chosen, device=pick_device(), offline=offline_requested())
    if not quiet:
        print(environment_report(cfg.scale, cfg.device))
        defaulted = scale is None and not os.environ.get(SCALE_ENV)
        fits, why = gpu_fits_full_scale() if defaulted and cfg.device.type == "cuda" else (True, "")
        if not fits:
            print(f"note: {why}; running at small scale (set {SCALE_ENV}=full before the setup cell to override)")
    return cfg

