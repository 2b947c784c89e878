"""Training set-ups to debug: every piece a training run is made of, in one object, and a runner for it.

Introduced in notebook 13 (debugging) and used by lab 13 (bug hunt). A :class:`Setup` holds the places where a
bug can hide: the data loaders, the model, the loss, the optimizer (as a factory), the training step and the
prediction function. A broken run and its fixed twin then differ in exactly one of them, ``setup.train(...)``
runs either one the same way, and ``doctor(**setup.doctor_args())`` hands all of them to
:func:`dlcourse.diagnose.doctor`. The broken and fixed set-ups themselves are written out in the notebook and
in the lab, where the learner reads them; this module only runs them.

The default step is the five lines of every loop (:func:`standard_step`); the default prediction function puts
the model in eval mode and takes the arg-max (:func:`standard_predict`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .diagnose import standard_train_step
from .train import History, model_device, predict

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
#: ``train_step(model, optimizer, X, y, loss_fn) -> loss``: one update on one batch (the doctor's signature).
TrainStep = Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor, LossFn],
                     "torch.Tensor | float"]
#: ``predict_fn(model, loader) -> (N,) int64`` predicted class of every example of ``loader``, in order.
PredictFn = Callable[[nn.Module, Iterable], torch.Tensor]


#: The five lines of every training step (forward, loss, zero_grad, backward, step): the doctor's default step.
standard_step = standard_train_step


def standard_predict(model: nn.Module, loader: Iterable) -> torch.Tensor:
    """Predicted classes (N,) on the CPU: eval mode, no gradients, arg-max of the logits (mode restored)."""
    return predict(model, loader)[0]


class InputsOnly:
    """A loader's batches with the labels replaced by zeros, so a prediction function cannot read them.

    Iterating gives ``(X, zeros)`` pairs like the wrapped loader; ``len()`` is its number of batches.
    """

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for X, y in self.loader:
            yield X, torch.zeros(len(y), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]


def labels_of(loader: Iterable) -> torch.Tensor:
    """All labels of ``loader`` in order, (N,) on the CPU."""
    return torch.cat([torch.as_tensor(y).cpu() for _, y in loader])


@dataclass
class Setup:
    """One training run, ready to train or to examine: data, model, loss, optimizer, step and prediction.

    ``optimizer_factory(params)`` builds the optimizer (the doctor builds its own for its copies of the
    model); ``train_step`` and ``predict_fn`` default to the standard ones. ``test_loader`` (optional) is held
    out for the final score.
    """

    model: nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    optimizer_factory: OptimizerFactory
    loss_fn: LossFn = F.cross_entropy
    train_step: TrainStep = standard_step
    predict_fn: PredictFn = standard_predict
    test_loader: DataLoader | None = None
    history: History = field(default_factory=History, repr=False)

    def predict(self, loader: Iterable) -> torch.Tensor:
        """Predicted classes (N,) of ``loader``'s examples, in the order it serves them (use an unshuffled
        loader), by ``predict_fn``, which never sees the labels."""
        preds = torch.as_tensor(self.predict_fn(self.model, InputsOnly(loader))).cpu()
        if preds.ndim != 1:
            raise ValueError(f"predict_fn should return one class per example, shape (N,), "
                             f"got {tuple(preds.shape)}")
        return preds

    def accuracy(self, loader: Iterable, model: nn.Module | None = None) -> float:
        """Fraction of ``loader``'s examples whose class predicted by ``predict_fn`` (with ``model``, by
        default the set-up's) is the label. Reads the loader once, so a shuffling loader is scored right."""
        batches = list(loader)                       # one pass: predictions and labels in the same order
        if not batches:
            raise ValueError("no batches were seen: is the loader empty?")
        model = self.model if model is None else model
        preds = torch.as_tensor(self.predict_fn(model, InputsOnly(batches))).cpu()
        labels = labels_of(batches)
        if preds.shape != labels.shape:
            raise ValueError(f"predict_fn gave {tuple(preds.shape)} predictions for {len(labels)} examples")
        return (preds == labels).double().mean().item()

    def evaluate_fn(self, model: nn.Module, loader: Iterable) -> float:
        """``evaluate_fn(model, loader) -> accuracy`` as the doctor calls it: ``predict_fn`` on any model."""
        return self.accuracy(loader, model)

    def doctor_args(self) -> dict:
        """Keyword arguments for :func:`dlcourse.diagnose.doctor`: ``doctor(**setup.doctor_args())``."""
        return {"model": self.model, "train_loader": self.train_loader, "loss_fn": self.loss_fn,
                "optimizer_factory": self.optimizer_factory, "val_loader": self.val_loader,
                "train_step": self.train_step, "evaluate_fn": self.evaluate_fn}

    def train(self, num_epochs: int, *, device: torch.device | str | None = None) -> History:
        """Train for ``num_epochs`` with ``train_step`` and a fresh optimizer; return the History so far.

        Each epoch records the mean training loss (as the step returned it), the accuracy on the training and
        validation sets measured with ``predict_fn`` at the epoch's end, the lr and the seconds. A loss that
        is not finite is recorded as it is (nan or inf) and training goes on, as a plain loop would.
        Calling ``train`` again continues from the current weights with a new optimizer. Dropout and the like
        draw from torch's global generator: for a repeatable run, seed it (as a set-up function does) right
        before training.
        """
        if num_epochs < 1:
            raise ValueError(f"num_epochs must be at least 1, not {num_epochs}")
        device = torch.device(device) if device is not None else model_device(self.model)
        self.model.to(device)
        optimizer = self.optimizer_factory(self.model.parameters())
        first = len(self.history) + 1
        for epoch in range(first, first + num_epochs):
            start = time.perf_counter()
            self.model.train()
            lr = optimizer.param_groups[0]["lr"]
            total, count = 0.0, 0
            for X, y in self.train_loader:
                X, y = X.to(device), y.to(device)
                loss = self.train_step(self.model, optimizer, X, y, self.loss_fn)
                value = loss.detach() if isinstance(loss, torch.Tensor) else loss
                total += float(value) * len(y)   # read back every step: a plain loop, not a fast one
                count += len(y)
            if count == 0:
                raise ValueError("no batches were seen: is the train loader empty?")
            self.history.records.append({
                "epoch": epoch, "train_loss": total / count, "train_acc": self.accuracy(self.train_loader),
                "val_loss": None, "val_acc": self.accuracy(self.val_loader), "lr": lr,
                "seconds": time.perf_counter() - start})
        return self.history
