"""One readable training loop: ``fit`` trains for some epochs and records a ``History``; ``evaluate`` scores a model.

Introduced in notebook 01, after the same loop has been written by hand; later notebooks call it instead of copying
a loop. The loop body is exactly the five lines every PyTorch loop has (forward, loss, zero_grad, backward, step);
everything else is bookkeeping kept off the hot path: losses are summed on the device and read once per epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: Called after every epoch with the History so far; returning True stops training (e.g. early stopping).
Callback = Callable[["History"], "bool | None"]


@dataclass
class History:
    """Per-epoch records: ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``lr``, ``seconds``.

    ``history["val_acc"]`` gives one column as a list; ``history.last`` the final epoch's record.
    """

    records: list[dict[str, float | None]] = field(default_factory=list)

    def __getitem__(self, key: str) -> list[float | None]:
        return [r[key] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last(self) -> dict[str, float | None]:
        return self.records[-1]

    def __repr__(self) -> str:
        if not self.records:
            return "History(empty)"
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.last.items()}
        return f"History({len(self)} epochs, last={shown})"


def _is_classification(y_hat: torch.Tensor, y: torch.Tensor) -> bool:
    """Accuracy makes sense when the model outputs (N, C) scores and the targets are (N,) class indices."""
    return y_hat.ndim == 2 and y.ndim == 1 and not torch.is_floating_point(y)


class _Tally:
    """Sums loss and correct predictions over an epoch without slowing the loop down.

    Per batch it only keeps references (the detached loss, scores and labels); every ``flush_every`` batches it
    reduces them with a handful of tensor operations, on the device. Values are read back once, in :meth:`result`.
    """

    def __init__(self, flush_every: int = 32) -> None:
        self.flush_every = flush_every
        self.pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (loss (), y_hat (B, C), y (B,))
        self.loss_sum: torch.Tensor | float = 0.0   # sum over examples of the per-example loss
        self.correct: torch.Tensor | int = 0
        self.count = 0
        self.classification = True

    def add(self, loss: torch.Tensor, y_hat: torch.Tensor, y: torch.Tensor) -> None:
        self.classification = self.classification and _is_classification(y_hat, y)
        self.pending.append((loss.detach(), y_hat.detach(), y))
        self.count += len(y)
        if len(self.pending) >= self.flush_every:
            self._flush()

    @torch.no_grad()
    def _flush(self) -> None:
        if not self.pending:
            return
        losses, scores, labels = zip(*self.pending)
        sizes = torch.tensor([len(t) for t in labels], dtype=torch.float64, device=losses[0].device)
        self.loss_sum = self.loss_sum + torch.stack(losses).double() @ sizes  # loss_fn returns batch means
        if self.classification:
            self.correct = self.correct + (torch.cat(scores).argmax(dim=1) == torch.cat(labels)).sum()
        self.pending = []

    def result(self) -> tuple[float, float | None]:
        """(mean loss over examples, accuracy or None); the only place that reads values back from the device."""
        if self.count == 0:
            raise ValueError("no batches were seen: is the loader empty?")
        self._flush()
        acc = float(self.correct) / self.count if self.classification else None
        return float(self.loss_sum) / self.count, acc


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, loss_fn: LossFn = F.cross_entropy,
             device: torch.device | str | None = None) -> dict[str, float | None]:
    """Mean loss and accuracy (None when the task is not classification) of ``model`` over ``loader``.

    The model is put in eval mode for the pass and returned to the mode it was in.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    tally = _Tally()
    try:
        for X, y in loader:
            X, y = X.to(device), y.to(device)
            y_hat = model(X)
            tally.add(loss_fn(y_hat, y), y_hat, y)
    finally:
        model.train(was_training)
    loss, acc = tally.result()
    return {"loss": loss, "acc": acc}


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, train_loader: DataLoader,
        val_loader: DataLoader | None = None, *, num_epochs: int = 1, loss_fn: LossFn = F.cross_entropy,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, scheduler_step: str = "epoch",
        device: torch.device | str | None = None, progress: bool = True, callbacks: Sequence[Callback] = ()
        ) -> History:
    """Train ``model`` for ``num_epochs`` and return its :class:`History`.

    ``scheduler`` is stepped once per epoch (``scheduler_step="epoch"``) or once per batch (``"batch"``, e.g. for
    OneCycleLR). Batches are moved to ``device`` (default: where the model's parameters are). The progress bar shows
    one bar for the whole run with the latest epoch's metrics; ``progress=False`` hides it. Each callback is called
    after every epoch with the history so far; if any returns True, training stops after that epoch.
    """
    if scheduler_step not in ("epoch", "batch"):
        raise ValueError(f"scheduler_step must be 'epoch' or 'batch', not {scheduler_step!r}")
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be at least 1, not {num_epochs}")
    device = torch.device(device) if device is not None else _model_device(model)
    history = History()
    bar = tqdm(total=num_epochs * len(train_loader), desc="fit", unit="batch", disable=not progress)
    try:
        for epoch in range(1, num_epochs + 1):
            history.records.append(_train_epoch(model, optimizer, train_loader, val_loader, loss_fn, scheduler,
                                                scheduler_step, device, epoch, bar))
            bar.set_postfix({k: f"{v:.3f}" for k, v in history.last.items()
                             if k.endswith(("loss", "acc")) and v is not None})
            if any([bool(callback(history)) for callback in callbacks]):  # a list: every callback sees every epoch
                break
    finally:
        bar.close()
    return history


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, train_loader: DataLoader,
                 val_loader: DataLoader | None, loss_fn: LossFn, scheduler, scheduler_step: str,
                 device: torch.device, epoch: int, bar) -> dict[str, float | None]:
    """One pass over ``train_loader`` (then ``val_loader``); returns the epoch's History record."""
    start = time.perf_counter()
    model.train()
    lr = optimizer.param_groups[0]["lr"]  # the rate the epoch starts with
    tally = _Tally()
    for X, y in train_loader:
        X, y = X.to(device), y.to(device)
        y_hat = model(X)
        loss = loss_fn(y_hat, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None and scheduler_step == "batch":
            scheduler.step()
        tally.add(loss, y_hat, y)
        bar.update()
    if scheduler is not None and scheduler_step == "epoch":
        scheduler.step()
    train_loss, train_acc = tally.result()
    record: dict[str, float | None] = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                                       "val_loss": None, "val_acc": None, "lr": lr}
    if val_loader is not None:
        scores = evaluate(model, val_loader, loss_fn, device)
        record["val_loss"], record["val_acc"] = scores["loss"], scores["acc"]
    record["seconds"] = time.perf_counter() - start
    return record


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device | str | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted class indices and true labels over ``loader``, both (N,) on the CPU."""
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    preds, labels = [], []
    try:
        for X, y in loader:
            preds.append(model(X.to(device)).argmax(dim=1).cpu())
            labels.append(y)
    finally:
        model.train(was_training)
    if not preds:
        raise ValueError("no batches were seen: is the loader empty?")
    return torch.cat(preds), torch.cat(labels)
