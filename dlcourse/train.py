"""One readable training loop: ``fit`` trains for some epochs and records a ``History``; ``evaluate`` scores a model;
``decay_groups`` splits parameters into AdamW groups with and without weight decay.

Introduced in notebook 01, after the same loop has been written by hand; later notebooks call it instead of copying
a loop. The loop body is the five lines every PyTorch loop has (forward, loss, zero_grad, backward, step);
everything else is bookkeeping kept off the hot path: losses are summed on the device and read once per epoch.
The options added by the scaling notebooks (mixed precision, gradient accumulation, clipping, checkpoints) wrap
those lines without changing them when switched off.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .config import amp_dtype as default_amp_dtype

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


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (the CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, loss_fn: LossFn = F.cross_entropy,
             device: torch.device | str | None = None) -> dict[str, float | None]:
    """Mean loss and accuracy (None when the task is not classification) of ``model`` over ``loader``.

    The model is put in eval mode for the pass and returned to the mode it was in.
    """
    device = torch.device(device) if device is not None else model_device(model)
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
        device: torch.device | str | None = None, progress: bool = True, callbacks: Sequence[Callback] = (),
        amp: bool = False, amp_dtype: torch.dtype | None = None, accumulate: int = 1,
        clip_grad_norm: float | None = None, checkpoint: str | os.PathLike | None = None, resume: bool = False,
        ) -> History:
    """Train ``model`` for ``num_epochs`` and return its :class:`History`.

    ``scheduler`` is stepped once per epoch (``scheduler_step="epoch"``) or once per optimizer step (``"batch"``,
    e.g. for OneCycleLR). Batches are moved to ``device`` (default: where the model's parameters are). The progress
    bar shows one bar for the whole run with the latest epoch's metrics; ``progress=False`` hides it. Each callback
    is called after every epoch with the history so far; if any returns True, training stops after that epoch.

    The options taught in the scaling notebooks (07 mixed precision, 08 memory):

    - ``amp=True`` runs the forward pass and the loss under ``torch.autocast`` in ``amp_dtype`` (default:
      :func:`dlcourse.config.amp_dtype`, bfloat16 where the device computes it natively, float16 otherwise).
      With float16 a ``torch.amp.GradScaler`` scales the loss so that small gradients do not underflow, and skips
      the steps whose gradients overflowed; bfloat16 has float32's range and needs none.
    - ``accumulate=k`` sums the gradients of ``k`` consecutive batches before each optimizer step. Each batch's
      mean loss is divided by the number of batches in its group, so with equal batch sizes one step equals one
      step on the ``k``-times larger batch (the last group of an epoch may be shorter; it still steps).
    - ``clip_grad_norm=c`` rescales the gradients (after unscaling) so that their global L2 norm is at most ``c``;
      the history then records ``grad_norm``, the mean norm before clipping over the epoch's finite steps.
    - ``checkpoint=path`` saves model, optimizer, scheduler, scaler, history and random-number state to ``path``
      after every epoch (written to a temporary file, then renamed: a crash never leaves half a checkpoint).
      With ``resume=True`` and an existing file, training continues after the saved epoch and, given the same
      model, optimizer and loaders, reproduces the uninterrupted run.
    """
    if scheduler_step not in ("epoch", "batch"):
        raise ValueError(f"scheduler_step must be 'epoch' or 'batch', not {scheduler_step!r}")
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be at least 1, not {num_epochs}")
    if not isinstance(accumulate, int) or accumulate < 1:
        raise ValueError(f"accumulate must be a whole number of batches >= 1, not {accumulate!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be positive (or None to switch clipping off), not {clip_grad_norm!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path> to resume from")
    device = torch.device(device) if device is not None else model_device(model)
    if amp_dtype is None:
        amp_dtype = default_amp_dtype(device)
    step = _Stepper(model, optimizer, scheduler if scheduler_step == "batch" else None, device, amp, amp_dtype,
                    accumulate, clip_grad_norm)
    history = History()
    if resume and Path(checkpoint).exists():
        saved = load_checkpoint(checkpoint, model, optimizer)
        _restore_run_state(saved, scheduler, step.scaler, train_loader)
        history.records = list(saved["history"])
    first_epoch = len(history) + 1
    bar = tqdm(total=max(0, num_epochs - len(history)) * len(train_loader), desc="fit", unit="batch",
               disable=not progress)
    try:
        for epoch in range(first_epoch, num_epochs + 1):
            history.records.append(_train_epoch(model, step, train_loader, val_loader, loss_fn, device, epoch, bar))
            if scheduler is not None and scheduler_step == "epoch":
                scheduler.step()
            bar.set_postfix({k: f"{v:.3f}" for k, v in history.last.items()
                             if k.endswith(("loss", "acc")) and v is not None})
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, optimizer, **_run_state(history, scheduler, step.scaler,
                                                                             train_loader))
            if any([bool(callback(history)) for callback in callbacks]):  # a list: every callback sees every epoch
                break
    finally:
        bar.close()
    return history


class _Stepper:
    """The backward pass and optimizer step of :func:`fit`, with autocast, loss scaling, accumulation, clipping."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch_scheduler, device: torch.device,
                 amp: bool, amp_dtype: torch.dtype, accumulate: int, clip_grad_norm: float | None) -> None:
        self.model, self.optimizer, self.batch_scheduler = model, optimizer, batch_scheduler
        self.autocast = torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
        self.accumulate, self.clip_grad_norm = accumulate, clip_grad_norm
        self.grad_norms: list[torch.Tensor] = []

    def backward(self, loss: torch.Tensor, group_size: int) -> None:
        self.scaler.scale(loss / group_size).backward()

    def step(self) -> None:
        if self.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            self.grad_norms.append(nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.batch_scheduler is not None:
            self.batch_scheduler.step()

    def mean_grad_norm(self) -> float | None:
        """Mean pre-clipping gradient norm over the steps since the last call (skipped, non-finite steps left out)."""
        if self.clip_grad_norm is None:
            return None
        norms = torch.stack(self.grad_norms).double() if self.grad_norms else torch.zeros(0)
        self.grad_norms = []
        finite = norms[torch.isfinite(norms)]
        return float(finite.mean()) if len(finite) else float("nan")


def _train_epoch(model: nn.Module, step: _Stepper, train_loader: DataLoader, val_loader: DataLoader | None,
                 loss_fn: LossFn, device: torch.device, epoch: int, bar) -> dict[str, float | None]:
    """One pass over ``train_loader`` (then ``val_loader``); returns the epoch's History record."""
    start = time.perf_counter()
    model.train()
    lr = step.optimizer.param_groups[0]["lr"]  # the rate the epoch starts with
    tally = _Tally()
    num_batches = len(train_loader)
    step.optimizer.zero_grad(set_to_none=True)
    for i, (X, y) in enumerate(train_loader):
        X, y = X.to(device), y.to(device)
        with step.autocast:
            y_hat = model(X)
            loss = loss_fn(y_hat, y)
        group_start = i - i % step.accumulate
        step.backward(loss, min(step.accumulate, num_batches - group_start))
        if (i + 1) % step.accumulate == 0 or i + 1 == num_batches:
            step.step()
        tally.add(loss, y_hat, y)
        bar.update()
    train_loss, train_acc = tally.result()
    record: dict[str, float | None] = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                                       "val_loss": None, "val_acc": None, "lr": lr}
    if step.clip_grad_norm is not None:
        record["grad_norm"] = step.mean_grad_norm()
    if val_loader is not None:
        scores = evaluate(model, val_loader, loss_fn, device)
        record["val_loss"], record["val_acc"] = scores["loss"], scores["acc"]
    record["seconds"] = time.perf_counter() - start
    return record


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    **extra) -> Path:
    """Save ``model`` (and ``optimizer``) state plus any ``extra`` values to ``path``; returns the path.

    Written with :func:`atomic_save`, so an interrupted save leaves the previous checkpoint intact.
    """
    state = {"model": model.state_dict(), **extra}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    return atomic_save(state, path)


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through a temporary file in the same folder and a rename: readers see the old
    file or the complete new one, never half a file. Creates missing folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    map_location: torch.device | str | None = None) -> dict:
    """Load a :func:`save_checkpoint` file into ``model`` (and ``optimizer``); returns everything it holds.

    Tensors are mapped to the model's device unless ``map_location`` says otherwise. Only plain data is
    unpickled (``weights_only=True``): a checkpoint cannot run code on load.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if map_location is None:
        map_location = model_device(model)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated or foreign files raise many different exceptions
        raise ValueError(f"{path} is not a readable checkpoint ({type(error).__name__}: {error}); the file was "
                         f"left as it is: delete or rename it to start from scratch") from error
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a dlcourse checkpoint (no 'model' entry); the file was left as it is")
    model.load_state_dict(state["model"])
    if optimizer is not None:
        if "optimizer" not in state:
            raise ValueError(f"{path} holds no optimizer state; pass optimizer=None to load the model only")
        optimizer.load_state_dict(state["optimizer"])
    return state


def _run_state(history: History, scheduler, scaler: torch.amp.GradScaler, train_loader: DataLoader) -> dict:
    """What fit needs besides model and optimizer to resume exactly where it stopped."""
    generator = getattr(train_loader, "generator", None)
    return {
        "history": history.records,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "loader": generator.get_state() if generator is not None else None},
    }


def _restore_run_state(saved: dict, scheduler, scaler: torch.amp.GradScaler, train_loader: DataLoader) -> None:
    if scheduler is not None and saved.get("scheduler") is not None:
        scheduler.load_state_dict(saved["scheduler"])
    if saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    rng = saved["rng"]
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in rng["cuda"]])
    generator = getattr(train_loader, "generator", None)
    if generator is not None and rng["loader"] is not None:
        generator.set_state(rng["loader"].cpu())


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device | str | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted class indices and true labels over ``loader``, both (N,) on the CPU."""
    device = torch.device(device) if device is not None else model_device(model)
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


#: Layers whose ``weight`` multiplies the input: the tensors weight decay is meant for.
DECAYED_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
                                               nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def decay_groups(model: nn.Module, weight_decay: float, **options) -> list[dict]:
    """Two optimizer parameter groups over ``model``'s trainable parameters, in ``model.parameters()`` order:
    the weights of Linear and convolution layers (``DECAYED_LAYERS``) with ``weight_decay``, then everything else
    (biases, normalisation scales and shifts, embedding tables, other parameters) with ``weight_decay=0``.

    Chosen by module type, not by shape: notebook 04's ``p.ndim >= 2`` rule would also decay embedding tables.
    Frozen parameters (``requires_grad=False``) are in neither group. ``options`` (e.g. ``lr=...``) go into both.
    A weight tied to an embedding (a language model's head) is a Linear weight here, so it is decayed.
    Introduced in notebook 04 (section 9); notebooks 06 and 11 build their AdamW optimizers with it.
    """
    if {"params", "weight_decay"} & options.keys():
        raise TypeError("decay_groups sets 'params' and 'weight_decay' itself; pass other options only (e.g. lr)")
    decayed = {id(m.weight) for m in model.modules() if isinstance(m, DECAYED_LAYERS)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if id(p) in decayed], "weight_decay": weight_decay, **options},
            {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0, **options}]


def decayed_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> set[str]:
    """Names of ``model``'s parameters that ``optimizer`` decays (in a group with ``weight_decay > 0``)."""
    decayed = {id(p) for group in optimizer.param_groups if group.get("weight_decay", 0) > 0 for p in group["params"]}
    return {name for name, p in model.named_parameters() if id(p) in decayed}
