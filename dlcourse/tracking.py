"""Experiment tracking: a :func:`dlcourse.fit` callback that logs to TensorBoard, and the record of a run (its
config, the git commit, the library versions) that goes with every checkpoint.

Introduced in notebook 19. ``TensorBoardLogger`` is an ordinary fit callback (called after every epoch with the
History): it writes the epoch's scalars (losses, accuracies, the learning rate), histograms of the weights and
gradients, and at :meth:`TensorBoardLogger.close` the run's hyperparameters with its final metrics, so that
TensorBoard's HParams tab lines runs up side by side. Logs go to a folder per run under ``runs/`` (ignored by git).
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: History columns logged under "loss/" and "accuracy/" so TensorBoard draws train and val in one chart each.
_GROUPS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
           "val_acc": "accuracy/val", "lr": "lr", "grad_norm": "grad_norm", "seconds": "seconds_per_epoch"}


def git_commit(path: str | os.PathLike = ".") -> str | None:
    """The commit checked out at ``path`` (with ``-dirty`` appended when tracked files have uncommitted changes),
    or None outside a git repository or without git (e.g. on Colab after a pip install)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10,
                              check=False)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run_info(config: Mapping[str, Any], path: str | os.PathLike = ".") -> dict[str, Any]:
    """What a checkpoint needs to say how it was made: the config, the git commit, Python and torch versions.

    Plain data only, so ``load_checkpoint`` (``weights_only=True``) reads it back.
    """
    return {"config": dict(config), "git_commit": git_commit(path), "python": platform.python_version(),
            "torch": str(torch.__version__)}


class TensorBoardLogger:
    """A fit callback: ``fit(..., callbacks=[TensorBoardLogger("runs/lr-0.01", model, hparams={"lr": 0.01})])``.

    After every epoch it logs the History's last record (under ``loss/train``, ``loss/val``, ``accuracy/...``,
    ``lr``), and every ``histogram_every`` epochs (0: never) a histogram of each parameter and of its gradient
    on the epoch's last batch (kept by a tensor hook: fit sets ``.grad`` to None after every step).
    :meth:`close` writes ``hparams`` with the final metrics (``hparam/val_loss`` ...) and closes the file. Returns
    None, so it never stops training.
    """

    def __init__(self, log_dir: str | os.PathLike, model: nn.Module | None = None,
                 hparams: Mapping[str, Any] | None = None, *, histogram_every: int = 1) -> None:
        from torch.utils.tensorboard import (
            SummaryWriter,  # imported here: the package needs tensorboard only now
        )

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir))
        self.model, self.hparams, self.histogram_every = model, dict(hparams or {}), histogram_every
        self.last: dict[str, Any] = {}
        # fit sets gradients to None after each step, so keep (a reference to) each parameter's latest gradient.
        self.grads: dict[str, torch.Tensor] = {}
        self._hooks = [p.register_hook(self._keeper(name)) for name, p in (model.named_parameters() if model
                                                                             else []) if p.requires_grad]

    def _keeper(self, name: str):
        def keep(grad: torch.Tensor) -> None:
            self.grads[name] = grad
        return keep

    def __call__(self, history) -> None:
        record = history.last
        epoch = int(record["epoch"])
        for key, value in record.items():
            if key != "epoch" and value is not None:
                self.writer.add_scalar(_GROUPS.get(key, key), value, epoch)
        if self.model is not None and self.histogram_every and epoch % self.histogram_every == 0:
            for name, p in self.model.named_parameters():
                self.writer.add_histogram(f"weights/{name}", p.detach().float().cpu(), epoch)
                if name in self.grads:  # the gradient of the epoch's last batch
                    self.writer.add_histogram(f"grads/{name}", self.grads[name].detach().float().cpu(), epoch)
        self.writer.flush()
        self.last = dict(record)

    def close(self, metrics: Mapping[str, float] | None = None) -> None:
        """Write the hyperparameters with ``metrics`` (default: the last epoch's val/train loss and accuracy)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        if metrics is None:
            metrics = {f"hparam/{k}": v for k, v in self.last.items()
                       if k in ("train_loss", "val_loss", "train_acc", "val_acc") and v is not None}
        if self.hparams:
            # TensorBoard's HParams tab accepts numbers, strings and booleans; anything else is shown as text.
            shown = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in self.hparams.items()}
            for summary in hparams_summary(shown, dict(metrics)):
                self.writer.file_writer.add_summary(summary)
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, int(self.last.get("epoch", 0)))
        self.writer.close()
        for hook in self._hooks:
            hook.remove()
        self._hooks, self.grads = [], {}

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_scalars(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every scalar logged in ``log_dir``, as ``{tag: [(step, value), ...]}``, read back from the event files with
    TensorBoard's own reader (no server)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
