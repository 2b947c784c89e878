"""dlcourse: helpers for the hands-on deep-learning course.

Notebooks start with ``cfg = dlcourse.setup(seed=0)``. Modules, one concept each:
``config`` (scale, seed, device), ``data`` (datasets and loaders), ``download`` (checksummed downloads into a
cache, full scale only), ``models`` (reference models), ``train`` (fit/evaluate, with AMP, accumulation, clipping
and checkpoints; AdamW's decay groups), ``text`` (offline text corpus and tokenizer), ``viz`` (figures), ``memory``
(training memory: saved tensors, peak, state bytes), ``quantization`` (bytes of torchao-quantised models),
``diagnose`` (the LR range test and the training doctor), ``bugs`` (runner for broken set-ups), ``distributed``
(launching and joining process groups), ``grading`` (lab building, lint, autograding, similarity), ``cli`` (the
``dlcourse`` command).
"""

import importlib

from .config import SCALES, Config, ScaleError, environment_report, pick_device, seed_everything, setup
from .train import History, evaluate, fit, load_checkpoint, predict, save_checkpoint

__version__ = "0.1.0"

__all__ = [
    "SCALES", "Config", "ScaleError", "environment_report", "pick_device", "seed_everything", "setup",
    "History", "evaluate", "fit", "load_checkpoint", "predict", "save_checkpoint",
    "data", "diagnose", "distributed", "memory", "models", "quantization", "text", "train", "viz",
]

# Submodules load on first use (``dlcourse.viz.plot_history``): a torchrun worker that only needs
# ``dlcourse.distributed`` does not pay for matplotlib.
_SUBMODULES = frozenset({"bugs", "data", "diagnose", "distributed", "download", "memory", "models", "quantization",
                         "text", "train", "viz"})


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'dlcourse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES)
