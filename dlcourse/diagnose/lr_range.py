"""The learning-rate range test (introduced in notebook 04): :func:`lr_range_test` trains for a hundred or so steps
while raising the lr exponentially, and returns an :class:`LRRangeResult` (losses against lrs, a suggested lr, a
plot). It leaves the model, the optimizer and torch's random state as it found them. The doctor's ``lr_range``
check (:mod:`dlcourse.diagnose.learning_rate`) draws it next to its own verdict.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from .context import LossFn, OptimizerFactory


@dataclass
class LRRangeResult:
    """What :func:`lr_range_test` measured: one entry per step taken, in order of increasing lr.

    ``smoothed`` is a centred moving average of the raw losses (each value averages the steps up to
    ``1 / (2 * smooth)`` before and after it), so it does not lag behind the sweep. ``suggestion`` is the lr where
    it falls fastest (the steepest negative slope against log lr), looking only at the part of the sweep before
    its minimum; ``min_loss_lr`` is the lr at that minimum, and ``min_loss_lr / 10`` is the other common rule of
    thumb.
    """

    lrs: list[float]        # the lr used at each step (an exponential sweep)
    losses: list[float]     # the raw training loss of each step's batch
    smoothed: list[float]   # a centred moving average of ``losses``
    suggestion: float       # lr at the steepest descent of the smoothed loss
    min_loss_lr: float      # lr at the minimum of the smoothed loss
    diverged: bool          # True when the sweep stopped early because the loss blew up
    num_steps: int          # the steps that were asked for (len(lrs) is smaller when the sweep stopped early)

    def __repr__(self) -> str:
        stop = f"stopped at step {len(self.lrs)}/{self.num_steps} (diverged)" if self.diverged else \
            f"{len(self.lrs)} steps"
        return (f"LRRangeResult(lr {self.lrs[0]:.1e}..{self.lrs[-1]:.1e}, {stop}, "
                f"suggestion={self.suggestion:.2e}, min_loss_lr={self.min_loss_lr:.2e})")

    def plot(self, title: str | None = None) -> Figure:
        """Loss against lr (log scale): raw losses, the smoothed curve, the suggestion and the minimum."""
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(self.lrs, self.losses, color="tab:blue", alpha=0.3, linewidth=1, label="loss (each batch)")
        ax.plot(self.lrs, self.smoothed, color="tab:blue", linewidth=2, label="smoothed")
        ax.axvline(self.suggestion, color="tab:green", linestyle="--",
                   label=f"suggestion (steepest) {self.suggestion:.1e}")
        ax.axvline(self.min_loss_lr, color="tab:red", linestyle=":", label=f"minimum {self.min_loss_lr:.1e}")
        finite = [v for v in self.smoothed if math.isfinite(v)]
        if finite:  # keep the interesting part in view: a diverging tail would squash the rest of the curve
            low, high = min(finite), max(finite[: int(np.argmin(finite)) + 1])
            ax.set_ylim(low - 0.1 * (high - low + 1e-12), high + 0.5 * (high - low + 1e-12))
        ax.set(xscale="log", xlabel="learning rate (log scale)", ylabel="training loss",
               title=title or "learning-rate range test")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        plt.close(fig)  # shown once, as the returned value
        return fig


def _batches(loader: Iterable) -> Iterator:
    """Batches of ``loader`` forever, starting a new pass when one ends."""
    while True:
        seen = False
        for batch in loader:
            seen = True
            yield batch
        if not seen:
            raise ValueError("train_loader gave no batches: is it empty?")


def _check_arguments(start_lr: float, end_lr: float, num_steps: int, smooth: float,
                     diverge_factor: float) -> None:
    if not (isinstance(start_lr, (int, float)) and start_lr > 0 and math.isfinite(start_lr)):
        raise ValueError(f"start_lr must be a positive number, not {start_lr!r}")
    if not (isinstance(end_lr, (int, float)) and math.isfinite(end_lr) and end_lr > start_lr):
        raise ValueError(f"end_lr must be a finite number larger than start_lr={start_lr!r}, not {end_lr!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an integer of at least 2, not {num_steps!r}")
    if not (isinstance(smooth, (int, float)) and 0 < smooth <= 1):
        raise ValueError(f"smooth is the weight of each new loss in the moving average: it must be in (0, 1] "
                         f"(1 = no smoothing), not {smooth!r}")
    if not (isinstance(diverge_factor, (int, float)) and diverge_factor > 1):
        raise ValueError(f"diverge_factor must be larger than 1 (stop when the smoothed loss exceeds "
                         f"diverge_factor x its best value), not {diverge_factor!r}")


def _centred_average(values: list[float], half_width: int) -> list[float]:
    """Mean of ``values[i - half_width : i + half_width + 1]`` (cut at the ends) for each i; inf where any
    value in the window is not finite (a diverged step)."""
    x = np.array(values, dtype=np.float64)
    x[~np.isfinite(x)] = np.inf
    return [float(x[max(0, i - half_width): i + half_width + 1].mean()) for i in range(len(x))]


def _suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(lr at the steepest descent of the smoothed loss before its minimum, lr at the minimum)."""
    values = np.array(smoothed, dtype=np.float64)
    best = int(np.argmin(values))
    if best < 2:  # the loss never went down: there is no descent to speak of
        return lrs[best], lrs[best]
    log_lr = np.log10(np.array(lrs[: best + 1]))
    slope = np.gradient(values[: best + 1], log_lr)  # d(smoothed loss) / d(log10 lr), (best + 1,)
    return lrs[int(np.argmin(slope))], lrs[best]


def lr_range_test(model: nn.Module, optimizer: torch.optim.Optimizer | OptimizerFactory, train_loader: Iterable,
                  loss_fn: LossFn = F.cross_entropy, start_lr: float = 1e-7, end_lr: float = 10.0,
                  num_steps: int = 100, smooth: float = 0.05, diverge_factor: float = 4.0,
                  device: torch.device | str | None = None, train_step: Callable | None = None
                  ) -> LRRangeResult:
    """Train for up to ``num_steps`` batches while raising the lr exponentially from ``start_lr`` to ``end_lr``.

    Step i uses ``lr = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))`` in every parameter group (the
    loader is cycled if it has fewer batches). ``smooth`` sets how much the losses are smoothed (1 = not at all):
    during the sweep, an exponential moving average gives each new loss the weight ``smooth``, and the sweep stops
    early, with ``diverged=True``, once that average exceeds ``diverge_factor`` times its lowest value so far or
    the loss is not finite. Afterwards the result's ``smoothed`` curve, which the suggestion is read from, is a
    centred moving average over about ``1 / smooth`` steps: a running average would trail the sweep by as many
    steps and push the suggestion towards too large an lr.

    ``train_step(model, optimizer, X, y, loss_fn) -> loss`` (a tensor or a float), when given, replaces the standard
    step (forward, loss, zero_grad, backward, step), so that a bug inside a user's own step shows in the sweep.

    ``optimizer`` is an optimizer over ``model``'s parameters, or a factory that builds one from them (e.g.
    ``torch.optim.Adam`` or ``functools.partial(torch.optim.SGD, momentum=0.9)``). Afterwards the model's
    parameters and buffers, its train/eval mode, the optimizer's state and lrs, any gradients the parameters held,
    and torch's CPU (and, on a CUDA device, that device's) random number generator are restored: the test changes
    nothing. (A shuffling loader's own generator does advance.)
    """
    _check_arguments(start_lr, end_lr, num_steps, smooth, diverge_factor)
    if isinstance(optimizer, torch.optim.Optimizer):
        opt = optimizer
    elif callable(optimizer):
        opt = optimizer(model.parameters())
        if not isinstance(opt, torch.optim.Optimizer):
            raise ValueError(f"the optimizer factory returned {type(opt).__name__}, not a torch.optim.Optimizer")
    else:
        raise ValueError(f"optimizer must be a torch.optim.Optimizer or a function that builds one from "
                         f"model.parameters(), not {type(optimizer).__name__}")
    first = next(model.parameters(), None)
    if first is None:
        raise ValueError("the model has no parameters to train")
    device = torch.device(device) if device is not None else first.device

    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())  # holds the lrs of every group, and momentum buffers
    was_training = model.training
    grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []

    lrs: list[float] = []
    losses: list[float] = []
    diverged = False
    ratio = end_lr / start_lr
    try:
        with torch.random.fork_rng(devices=rng_devices):  # dropout and the like draw numbers: give them back
            model.train()
            batches = _batches(train_loader)
            average, best = 0.0, math.inf
            for i in range(num_steps):
                lr = start_lr * ratio ** (i / (num_steps - 1))
                for group in opt.param_groups:
                    group["lr"] = lr
                X, y = next(batches)
                X, y = X.to(device), y.to(device)
                if train_step is None:
                    loss = loss_fn(model(X), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                else:
                    loss = train_step(model, opt, X, y, loss_fn)

                # read back every step: the sweep must see a blow-up at once
                value = loss.item() if isinstance(loss, torch.Tensor) else float(loss)
                lrs.append(lr)
                losses.append(value)
                average = (1 - smooth) * average + smooth * value
                running = average / (1 - (1 - smooth) ** (i + 1))  # bias-corrected for the zero start
                if not math.isfinite(running) or running > diverge_factor * best:
                    diverged = i < num_steps - 1
                    break
                best = min(best, running)
    finally:
        model.load_state_dict(model_state)
        opt.load_state_dict(opt_state)
        for p, grad in zip(model.parameters(), grads):
            p.grad = grad
        model.train(was_training)

    smoothed = _centred_average(losses, half_width=int(round(1 / (2 * smooth))))
    suggestion, min_loss_lr = _suggest(lrs, smoothed)
    return LRRangeResult(lrs, losses, smoothed, suggestion, min_loss_lr, diverged, num_steps)
