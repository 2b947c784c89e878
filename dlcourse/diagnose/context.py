"""What every check of the training doctor shares: the :class:`Context` (a pristine copy of the model, the user's
loss, optimizer factory, step and evaluation function, and the scanned batches), :func:`build_context` that makes
it, and the helpers the checks use to train, score and plot.

Thresholds used by more than one check live here (:data:`SCAN_EXAMPLES`, :data:`STEP_EXAMPLES`); every other
threshold is a constant of the module of the check that uses it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

#: ``loss_fn(y_hat, y) -> loss``.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: Builds the optimizer for the given parameters, e.g. ``lambda params: torch.optim.SGD(params, lr=0.1)``.
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
#: ``train_step(model, optimizer, X, y, loss_fn) -> loss`` (a tensor or a float): one training step.
TrainStep = Callable[..., Any]


def standard_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, X: torch.Tensor, y: torch.Tensor,
                        loss_fn: LossFn) -> torch.Tensor:
    """The five lines of every training step (forward, loss, zero_grad, backward, step); returns the loss."""
    y_hat = model(X)
    loss = loss_fn(y_hat, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


#: The data checks look at no more than this many training examples (and as many validation examples).
SCAN_EXAMPLES = 8192
#: Training steps use at most this many examples of each batch (speed).
STEP_EXAMPLES = 32


@dataclass
class Context:
    """Everything the checks share: a pristine copy of the model, the user's pieces, and the scanned data."""

    model: nn.Module
    train_loader: Iterable
    val_loader: Iterable | None
    loss_fn: LossFn
    optimizer_factory: OptimizerFactory
    train_step: TrainStep | None
    evaluate_fn: Callable | None
    device: torch.device
    seed: int
    batches: list                       # scanned training batches (X, y), as the loader gave them, on the CPU
    val_batches: list | None
    classification: bool                # integer class labels (N,)
    num_classes: int | None
    cross_entropy: bool                 # the loss behaves like cross-entropy on logits
    setup_error: Exception | None = None
    notes: dict = field(default_factory=dict)

    @property
    def X(self) -> torch.Tensor:
        """All scanned training inputs in one tensor: a new copy on each call, so read it once per check."""
        return torch.cat([b[0] for b in self.batches])

    @property
    def y(self) -> torch.Tensor:
        """All scanned training targets in one tensor (a new copy on each call)."""
        return torch.cat([b[1] for b in self.batches])

    def fresh(self) -> nn.Module:
        """A deep copy of the model as the user gave it, in train mode."""
        model = copy.deepcopy(self.model)
        model.train()
        return model

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        opt = self.optimizer_factory(model.parameters())
        if not isinstance(opt, torch.optim.Optimizer):
            raise ValueError(f"optimizer_factory returned {type(opt).__name__}, not a torch.optim.Optimizer")
        return opt

    def step(self, model: nn.Module, opt: torch.optim.Optimizer, X: torch.Tensor, y: torch.Tensor,
             loss_fn: LossFn | None = None) -> float:
        """One step of the user's train_step (or the standard one); returns the loss as a float."""
        loss = (self.train_step or standard_train_step)(model, opt, X, y, loss_fn or self.loss_fn)
        return loss_value(loss)

    def batch(self, i: int, limit: int = STEP_EXAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
        """Scanned batch ``i`` (cycling), at most ``limit`` examples, on the device."""
        X, y = self.batches[i % len(self.batches)]
        return X[:limit].to(self.device), y[:limit].to(self.device)

    def examples(self, n: int, batches: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` scanned examples (of ``batches``, default the training scan), on the device."""
        Xs, ys, count = [], [], 0
        for X, y in batches if batches is not None else self.batches:
            Xs.append(X[: n - count])
            ys.append(y[: n - count])
            count += len(Xs[-1])
            if count >= n:
                break
        return torch.cat(Xs).to(self.device), torch.cat(ys).to(self.device)


def loss_value(loss) -> float:
    if isinstance(loss, torch.Tensor):
        return float(loss.detach().float().mean().item()) if loss.numel() else float("nan")
    return float(loss)


def finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def scan(loader: Iterable, limit: int, what: str) -> list:
    """Batches of ``loader`` until ``limit`` examples (CPU tensors)."""
    batches, count = [], 0
    for batch in loader:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor)
                                                                            for t in batch)):
            raise ValueError(f"the {what} must yield (X, y) pairs of tensors, not {type(batch).__name__}")
        X, y = batch
        if len(X) != len(y):
            raise ValueError(f"the {what} yields X with {len(X)} examples but y with {len(y)}")
        batches.append((X.detach().cpu(), y.detach().cpu()))
        count += len(X)
        if count >= limit:
            break
    if not batches:
        raise ValueError(f"the {what} gave no batches: is it empty?")
    return batches


def loader_generators(loader) -> list[torch.Generator]:
    """The torch.Generators a DataLoader shuffles with (its own and its sampler's), to restore afterwards."""
    found = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None),
                                                                    "sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


def is_cross_entropy(loss_fn: LossFn, y_hat: torch.Tensor, y: torch.Tensor) -> bool:
    """Does ``loss_fn`` compute cross-entropy on logits (F.cross_entropy, nn.CrossEntropyLoss or the same numbers)?"""
    if loss_fn is F.cross_entropy or isinstance(loss_fn, nn.CrossEntropyLoss):
        return True
    if y_hat.ndim != 2 or y.ndim != 1 or torch.is_floating_point(y):
        return False
    try:
        with torch.no_grad():
            probe = y_hat.detach().float()
            return bool(torch.allclose(_as_tensor(loss_fn(probe, y)), F.cross_entropy(probe, y), rtol=1e-4,
                                       atol=1e-5))
    except Exception:  # a loss that does not take these arguments is not cross-entropy
        return False


def _as_tensor(value) -> torch.Tensor:
    return value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))


class NoDropout:
    """Context manager: the model in train mode (BatchNorm uses batch statistics, as in training) with every
    Dropout switched off, so a forward pass measures what the weights have learned without dropout's noise."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.train()
        for m in self.model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
        return self.model

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode


@torch.no_grad()
def score(ctx: Context, model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float | None]:
    """(loss, accuracy or None) of ``model`` on X, y without dropout, in chunks of STEP_EXAMPLES * 4."""
    total, correct, n = 0.0, 0, 0
    with NoDropout(model):
        for start in range(0, len(X), STEP_EXAMPLES * 4):
            Xc, yc = X[start:start + STEP_EXAMPLES * 4], y[start:start + STEP_EXAMPLES * 4]
            y_hat = model(Xc)
            total += loss_value(ctx.loss_fn(y_hat, yc)) * len(Xc)
            if ctx.classification and y_hat.ndim == 2:
                correct += int((y_hat.argmax(dim=1) == yc).sum())
            n += len(Xc)
    return total / n, (correct / n if ctx.classification else None)


def new_figure(width: float = 6.0, height: float = 3.2, ncols: int = 1):
    # constrained layout is computed when the figure is drawn: building a report stays cheap
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), layout="constrained")
    return fig, axes


def close_figure(fig: Figure) -> Figure:
    plt.close(fig)  # shown once: by whoever displays finding.figure
    return fig


def pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def quoted(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def build_context(model, train_loader, loss_fn, optimizer_factory, val_loader, train_step, evaluate_fn,
                  num_classes, device, seed) -> Context:
    """Copy the model, scan the data and work out the task (classification? how many classes? cross-entropy?)."""
    pristine = copy.deepcopy(model).to(device)
    batches = scan(train_loader, SCAN_EXAMPLES, "train_loader")
    val_batches = scan(val_loader, SCAN_EXAMPLES, "val_loader") if val_loader is not None else None
    X0, y0 = batches[0]
    classification = y0.ndim == 1 and not torch.is_floating_point(y0) and not torch.is_complex(y0)
    setup_error, y_hat = None, None
    try:
        probe = copy.deepcopy(pristine).train()
        with torch.no_grad():
            y_hat = probe(X0[:STEP_EXAMPLES].to(device))
    except Exception as error:  # reported by every check that needs the model
        setup_error = error
    if num_classes is None and classification:
        labels = torch.cat([y for _, y in batches])
        num_classes = y_hat.shape[1] if isinstance(y_hat, torch.Tensor) and y_hat.ndim == 2 else \
            int(labels.max()) + 1
    cross_entropy = isinstance(y_hat, torch.Tensor) and classification and \
        is_cross_entropy(loss_fn, y_hat, y0[:STEP_EXAMPLES].to(device))
    return Context(pristine, train_loader, val_loader, loss_fn, optimizer_factory, train_step, evaluate_fn, device,
                   seed, batches, val_batches, classification, num_classes, cross_entropy, setup_error)
