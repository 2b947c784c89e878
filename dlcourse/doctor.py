"""The training doctor: :func:`doctor` runs, in order, the checks an experienced engineer runs on a training set-up
that misbehaves, and returns a :class:`Report` of :class:`Finding` s (what was found, the numbers behind it, a fix).

Introduced in notebook 13 (debugging). Import it from :mod:`dlcourse.diagnose`; it lives in its own module only to
keep files short. The checks, in order (each documented in its ``_check_<name>`` function; thresholds are the
constants below):

- data: ``labels`` (class distribution), ``inputs`` (scale, non-finite, constant features, train vs validation
  preprocessing), ``leakage`` (duplicates, validation examples seen in training), ``shuffling``;
- model and step: ``initial_loss`` (vs log C; softmax/ReLU at the output; broadcasting in the loss),
  ``overfit_batch``, ``learnability`` (does training help on examples not trained on -- catches labels that don't
  belong to their inputs), ``gradient_flow``, ``activations``, ``non_finite``, ``lr_range``, ``eval_mode``.

Checks that train run on deep copies with the user's optimizer factory and train step, for a bounded number of steps
(at most OVERFIT_STEPS, LEARN_STEPS, 4-5 x LR_PROBE_STEPS + LR_SWEEP_STEPS), on at most STEP_EXAMPLES examples a
step, so the whole doctor takes seconds on a small model.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torch.overrides import TorchFunctionMode

from .train import model_device

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
#: ``train_step(model, optimizer, X, y, loss_fn) -> loss`` (a tensor or a float): one training step.
TrainStep = Callable[..., Any]

#: The checks, in the order :func:`doctor` runs them.
CHECKS = ("labels", "inputs", "leakage", "shuffling", "initial_loss", "overfit_batch", "learnability",
          "gradient_flow", "activations", "non_finite", "lr_range", "eval_mode")
SEVERITIES = ("ok", "info", "warning", "error")


@dataclass
class Finding:
    """One result of one check: ``severity`` is "ok", "info", "warning" or "error"; ``evidence`` holds the numbers
    behind ``message``; ``fix`` says what to do (empty when all is well); ``figure`` shows it where a plot helps."""

    check: str
    severity: str
    message: str
    evidence: dict = field(default_factory=dict)
    fix: str = ""
    figure: Figure | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    @property
    def flagged(self) -> bool:
        return self.severity in ("warning", "error")

    def to_dict(self) -> dict:
        return {"check": self.check, "severity": self.severity, "message": self.message,
                "evidence": _plain(self.evidence), "fix": self.fix}


def _plain(value):
    """``value`` as json-serialisable plain data (tensors and numpy numbers become Python numbers and lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if hasattr(value, "item") and hasattr(value, "dtype"):   # numpy scalars
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)                                    # json has no nan/inf
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


_MARK = {"ok": "ok", "info": "info", "warning": "WARNING", "error": "ERROR"}
_COLOUR = {"ok": "#2e7d32", "info": "#1565c0", "warning": "#ef6c00", "error": "#c62828"}


@dataclass
class Report:
    """What :func:`doctor` found: ``findings`` in the order the checks ran; ``seconds`` per check."""

    findings: list[Finding] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def flagged(self) -> list[Finding]:
        """The findings with severity "warning" or "error"."""
        return [f for f in self.findings if f.flagged]

    def flags(self, name: str) -> bool:
        """True if check ``name`` produced a warning or an error."""
        if name not in CHECKS:
            raise ValueError(f"unknown check {name!r}; the checks are {', '.join(CHECKS)}")
        return any(f.check == name for f in self.flagged)

    def get(self, name: str) -> list[Finding]:
        """All findings of check ``name``."""
        return [f for f in self.findings if f.check == name]

    def to_dict(self) -> list[dict]:
        """Plain, json-serialisable data: one dict per finding."""
        return [f.to_dict() for f in self.findings]

    def __str__(self) -> str:
        if not self.findings:
            return "doctor: no checks ran"
        width = max(len(f.check) for f in self.findings)
        errors = sum(f.severity == "error" for f in self.findings)
        lines = [f"doctor: {len(self.findings)} findings, {len(self.flagged)} flagged "
                 f"({errors} error{'s' * (errors != 1)})"]
        for f in self.findings:
            lines.append(f"{f.check:<{width}}  {_MARK[f.severity]:<7}  {f.message}")
            if f.fix:
                lines.append(f"{'':<{width}}  {'':<7}  fix: {f.fix}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Report({len(self.findings)} findings, flagged: "
                f"{sorted({f.check for f in self.flagged}) or 'none'})")

    def _repr_html_(self) -> str:
        import html

        rows = []
        for f in self.findings:
            evidence = ", ".join(f"{k}={_short(v)}" for k, v in f.evidence.items())
            figure = ""
            if f.figure is not None:
                buffer = io.BytesIO()
                f.figure.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
                figure = (f'<br><img style="max-width:480px" src="data:image/png;base64,'
                          f'{base64.b64encode(buffer.getvalue()).decode()}">')
            rows.append(
                f'<tr><td style="text-align:left">{html.escape(f.check)}</td>'
                f'<td style="text-align:left;color:{_COLOUR[f.severity]};font-weight:bold">{_MARK[f.severity]}</td>'
                f'<td style="text-align:left">{html.escape(f.message)}'
                f'<br><small style="color:#555">{html.escape(evidence)}</small>{figure}</td>'
                f'<td style="text-align:left">{html.escape(f.fix)}</td></tr>')
        head = ('<tr><th style="text-align:left">check</th><th style="text-align:left">severity</th>'
                '<th style="text-align:left">finding (evidence)</th><th style="text-align:left">fix</th></tr>')
        return f"<table>{head}{''.join(rows)}</table>"


def _short(value) -> str:
    """A compact text form of an evidence value for the HTML table."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return "[" + ", ".join(_short(v) for v in value[:8]) + f", ... ({len(value)})]"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in list(value.items())[:8]) + "}"
    return str(value)


def standard_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, X: torch.Tensor, y: torch.Tensor,
                        loss_fn: LossFn) -> torch.Tensor:
    """The five lines of every training step (forward, loss, zero_grad, backward, step); returns the loss."""
    y_hat = model(X)
    loss = loss_fn(y_hat, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


# ----------------------------------------------------------------------------------------------------------------
# Thresholds. Each is a documented constant, so a notebook can show (and an exercise can change) what the doctor uses.

#: The data checks look at no more than this many training examples (and as many validation examples).
SCAN_EXAMPLES = 8192
#: Inputs whose root-mean-square value is above this are "not normalised": the first layer's gradient grows with the
#: input scale s, and its effective learning rate with s**2 (4 -> 16x). Data in [0, 1] has rms <= 1, standardised 1.
INPUT_RMS_HIGH = 4.0
#: Inputs with an rms below this carry almost no signal into a default-initialised first layer.
INPUT_RMS_LOW = 0.01
#: A feature whose rms is more than this many times the median feature's dominates the first layer.
FEATURE_SPREAD = 100.0
#: Train and validation inputs count as "processed differently" when their rms differs by more than this factor or
#: their per-feature means differ by more than VAL_SHIFT training standard deviations (norm over features / norm of
#: the stds): random splits of one data set differ by a few percent.
VAL_SCALE = 1.5
VAL_SHIFT = 0.5
#: A split is "exactly standardised" when its mean is within STANDARDISED_MEAN of 0 and its std within
#: STANDARDISED_STD of 1 (overall, or for at least half of the channels/features): only the statistics of that very
#: split do that; a split normalised with another split's statistics misses by about 1 / sqrt(examples).
STANDARDISED_MEAN, STANDARDISED_STD = 1e-3, 1e-2
#: Class imbalance worth a warning: the largest class has more than this many times the examples of the smallest.
IMBALANCE_RATIO = 10.0
#: Exact duplicate inputs inside the training set worth a warning (fraction of the examples scanned).
DUPLICATE_FRACTION = 0.01
#: Batches hold fewer than this fraction of the distinct classes that randomly drawn batches would: labels are grouped.
GROUPED_LABELS = 0.5
#: Initial cross-entropy more than this above log C: with logits of standard deviation s at initialisation the
#: expected loss is about log C + s**2 / 2, so 0.5 means the logits already spread by about 1 -- confidently wrong.
INITIAL_LOSS_EXCESS = 0.5
#: Overfit one batch: OVERFIT_EXAMPLES examples, at most OVERFIT_STEPS steps of the user's step and optimizer; it
#: passes with 100 % accuracy and the loss down to OVERFIT_TARGET times its starting value.
OVERFIT_EXAMPLES, OVERFIT_STEPS, OVERFIT_TARGET = 16, 200, 0.1
#: Learnability: train LEARN_STEPS steps on some batches, then score LEARN_HOLDOUT examples never trained on. It
#: passes when their accuracy beats always predicting the most frequent class by 3 standard errors, or their loss
#: beats predicting the class frequencies by LEARN_MARGIN (relative).
LEARN_STEPS, LEARN_HOLDOUT, LEARN_MARGIN = 30, 256, 0.02
#: A ReLU unit is dead when it outputs 0 for every example of the batch; a layer is flagged when more than
#: DEAD_FRACTION of its units are dead. tanh/sigmoid outputs are saturated when the local slope is below 2 % of its
#: maximum (|tanh| > 0.99, sigmoid outside [0.01, 0.99]); flagged above SATURATED_FRACTION of the values.
DEAD_FRACTION, SATURATED_FRACTION = 0.5, 0.5
#: Gradient flow: flagged when the relative gradient ||g|| / ||w|| of one layer is more than GRAD_SPREAD times that
#: of another (vanishing or exploding), or when one step changes a layer by more than UPDATE_RATIO times its size.
GRAD_SPREAD, UPDATE_RATIO = 1e3, 1.0
#: Non-finite values: training steps watched with forward hooks (the first under autograd's anomaly mode).
NONFINITE_STEPS = 5
#: LR check: short runs of LR_PROBE_STEPS steps from the same initialisation at the user's lr times 1, 10, 100,
#: 1000 (and 1/10, 1/100, ... when the user's lr itself does not train). A run "trains" when the loss on a fixed
#: batch ends more than LR_LOW_PROGRESS (relative) below its start; it "blows up" only when the loss is not finite or
#: ends more than LR_BLOWUP (relative) ABOVE its start -- a loss that merely fails to fall (labels that don't match
#: their inputs, a broken loss) blows up at no lr. On the course's models with SGD, momentum and Adam, healthy lrs
#: blow up first at 30-1000x; the lr is flagged as too high when it does not train while a smaller lr does, or when
#: training blows up at LR_TOO_HIGH x the lr or less (and the lr itself trains, or a smaller one does), and as too
#: low when the loss still falls at 1000x and the user's lr moved the loss by less than LR_LOW_PROGRESS while a larger
#: lr trains. When no probed lr trains, the lr is not the problem: the finding is "info". The LR range test
#: (LR_SWEEP_STEPS steps) is run for the figure and its suggestion.
LR_PROBE_STEPS, LR_TOO_HIGH, LR_LOW_PROGRESS, LR_SWEEP_STEPS = 20, 10 ** 0.5, 0.03, 30
LR_BLOWUP = 0.03
#: Examples handed to evaluate_fn by the eval-mode check (it is called twice).
EVAL_EXAMPLES = 512
#: Training steps use at most this many examples of each batch (speed).
STEP_EXAMPLES = 32


# ----------------------------------------------------------------------------------------------------------------
# Shared state and helpers


@dataclass
class _Context:
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
        return torch.cat([b[0] for b in self.batches])

    @property
    def y(self) -> torch.Tensor:
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
        return _value(loss)

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


def _value(loss) -> float:
    if isinstance(loss, torch.Tensor):
        return float(loss.detach().float().mean().item()) if loss.numel() else float("nan")
    return float(loss)


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _scan(loader: Iterable, limit: int, what: str) -> list:
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


def _loader_generators(loader) -> list[torch.Generator]:
    """The torch.Generators a DataLoader shuffles with (its own and its sampler's), to restore afterwards."""
    found = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None),
                                                                    "sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


def _is_cross_entropy(loss_fn: LossFn, y_hat: torch.Tensor, y: torch.Tensor) -> bool:
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


class _NoDropout:
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
def _score(ctx: _Context, model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float | None]:
    """(loss, accuracy or None) of ``model`` on X, y without dropout, in chunks of STEP_EXAMPLES * 4."""
    total, correct, n = 0.0, 0, 0
    with _NoDropout(model):
        for start in range(0, len(X), STEP_EXAMPLES * 4):
            Xc, yc = X[start:start + STEP_EXAMPLES * 4], y[start:start + STEP_EXAMPLES * 4]
            y_hat = model(Xc)
            total += _value(ctx.loss_fn(y_hat, yc)) * len(Xc)
            if ctx.classification and y_hat.ndim == 2:
                correct += int((y_hat.argmax(dim=1) == yc).sum())
            n += len(Xc)
    return total / n, (correct / n if ctx.classification else None)


def _figure(width: float = 6.0, height: float = 3.2, ncols: int = 1):
    # constrained layout is computed when the figure is drawn: building a report stays cheap
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), layout="constrained")
    return fig, axes


def _done(fig: Figure) -> Figure:
    plt.close(fig)  # shown once: by whoever displays finding.figure
    return fig


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _names(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ----------------------------------------------------------------------------------------------------------------
# Data checks


def _check_labels(ctx: _Context) -> list[Finding]:
    """Label distribution: labels out of range, a single class, missing classes, strong imbalance."""
    y = ctx.y
    if not ctx.classification:
        finite = bool(torch.isfinite(y.float()).all())
        evidence = {"shape": list(y.shape), "dtype": str(y.dtype), "examples": len(y)}
        if not finite:
            return [Finding("labels", "error", "the targets contain nan or inf", evidence,
                            "clean the targets: a non-finite target makes the loss non-finite")]
        yf = y.float()
        evidence.update(mean=float(yf.mean()), std=float(yf.std()) if yf.numel() > 1 else 0.0,
                        min=float(yf.min()), max=float(yf.max()))
        return [Finding("labels", "info", "continuous targets (regression): the class-label checks do not apply",
                        evidence)]
    C, n = ctx.num_classes, len(y)
    low, high = int(y.min()), int(y.max())
    evidence = {"examples": n, "num_classes": C, "min_label": low, "max_label": high}
    if low < 0 or high >= C:
        bad = int(((y < 0) | (y >= C)).sum())
        return [Finding("labels", "error", f"{bad} of {n} labels lie outside 0..{C - 1} (labels {low}..{high}, "
                        f"the model has {C} outputs)", evidence,
                        f"labels must be class indices 0..{C - 1}: remap them (e.g. subtract 1 if they start at 1) "
                        "or give the model one output per class")]
    counts = torch.bincount(y, minlength=C)
    evidence["counts"] = counts.tolist()
    fig, ax = _figure()
    ax.bar(range(C), counts.tolist(), color="tab:blue")
    ax.set(xlabel="class", ylabel="examples", title=f"label distribution ({n} training examples)")
    fig = _done(fig)
    present = counts > 0
    if int(present.sum()) == 1:
        return [Finding("labels", "error", f"every label is class {int(counts.argmax())}", evidence,
                        "the labels were lost or overwritten: check how y is built", fig)]
    findings = []
    missing = [c for c in range(C) if counts[c] == 0]
    if missing:
        findings.append(Finding("labels", "warning", f"{len(missing)} of {C} classes never "
                                f"appear{'s' if len(missing) == 1 else ''} in {n} training labels: {missing[:10]}",
                                evidence | {"missing": missing},
                                "check the split (stratify it) or the number of model outputs", fig))
    ratio = float(counts.max()) / float(counts[present].min())
    evidence["imbalance_ratio"] = ratio
    if ratio > IMBALANCE_RATIO:
        rare = int(torch.where(present, counts, counts.max() + 1).argmin())
        findings.append(Finding("labels", "warning", f"classes are imbalanced: class {int(counts.argmax())} has "
                                f"{ratio:.0f}x the examples of class {rare} ({int(counts[rare])})", evidence,
                                "accuracy hides the rare classes: report per-class accuracy, weight the loss "
                                "(cross_entropy(weight=...)) or resample with a WeightedRandomSampler", fig))
    if not findings:
        findings.append(Finding("labels", "ok", f"{C} classes, {int(counts[present].min())} to {int(counts.max())} "
                                f"examples each (ratio {ratio:.1f})", evidence, figure=fig))
    return findings


def _standardised(X: torch.Tensor) -> dict[str, bool]:
    """For each way of normalising (overall, per channel, per feature): are X's statistics exactly 0 and 1?"""
    def exact(values: torch.Tensor, dims) -> bool:
        mean = values.mean(dim=dims)
        std_pop = values.std(dim=dims, correction=0)
        std_unb = values.std(dim=dims, correction=1)
        keep = std_pop > 1e-6                       # constant features stay constant whatever the statistics
        if not bool(keep.any()):
            return False
        deviation = torch.minimum((std_pop - 1).abs(), (std_unb - 1).abs())[keep]
        hits = (mean[keep].abs() <= STANDARDISED_MEAN) & (deviation <= STANDARDISED_STD)
        # most, not all: a std clamped away from 0 (std.clamp_min(eps)) leaves near-constant features unscaled
        return bool(hits.double().mean() >= 0.5)

    flat = X.reshape(len(X), -1)
    found = {"overall": exact(flat.reshape(-1, 1), 0), "per feature": exact(flat, 0)}
    if X.ndim >= 3:
        channels = X.transpose(0, 1).reshape(X.shape[1], -1).T   # (N * H * W, C)
        found["per channel"] = exact(channels, 0)
    return found


def _check_inputs(ctx: _Context) -> list[Finding]:
    """Input statistics: non-finite values, scale (unnormalised inputs), constant features, features on very
    different scales, and (with val_loader) train and validation inputs processed differently."""
    X = ctx.X
    if not torch.is_floating_point(X):
        return [Finding("inputs", "info", f"inputs are {X.dtype} (token ids or raw integers?): statistics skipped",
                        {"dtype": str(X.dtype), "shape": list(X.shape)})]
    flat = X.reshape(len(X), -1).float()                              # (N, D)
    evidence: dict = {"examples": len(X), "shape": list(X.shape[1:])}
    bad = ~torch.isfinite(flat)
    if bool(bad.any()):
        rows = int(bad.any(dim=1).sum())
        evidence.update(nonfinite_values=int(bad.sum()), examples_with_nonfinite=rows,
                        first_feature=int(bad.any(dim=0).nonzero()[0]))
        return [Finding("inputs", "error", f"{int(bad.sum())} input values are nan or inf ({rows} of {len(X)} "
                        "examples)", evidence,
                        "fix the data pipeline: a division by a zero std (constant feature), a log of 0, or "
                        "missing values; add a small eps to divisions and impute or drop missing values")]
    rms = float(flat.pow(2).mean().sqrt())
    feature_std = flat.std(dim=0, correction=0)                       # (D,)
    feature_rms = flat.pow(2).mean(dim=0).sqrt()
    constant = feature_std == 0
    evidence.update(rms=rms, mean=float(flat.mean()), std=float(flat.std()), min=float(flat.min()),
                    max=float(flat.max()), constant_features=int(constant.sum()), features=flat.shape[1])
    findings = []
    if bool(constant.all()):
        return [Finding("inputs", "error", f"all {len(X)} inputs are identical", evidence,
                        "the inputs carry no information: check how X is built")]
    if rms > INPUT_RMS_HIGH:
        findings.append(Finding("inputs", "warning", f"inputs are not normalised: rms {rms:.3g} (values "
                                f"{evidence['min']:.3g}..{evidence['max']:.3g}, mean {evidence['mean']:.3g}); "
                                f"networks expect values of order 1", evidence,
                                "scale the inputs to about [0, 1] (e.g. pixels / 255) or standardise them with the "
                                "TRAINING set's mean and std: (X - mean) / std, the same numbers for every split"))
    elif rms < INPUT_RMS_LOW:
        findings.append(Finding("inputs", "warning", f"inputs are tiny: rms {rms:.2g}; the first layer gets almost "
                                "no signal", evidence,
                                "standardise the inputs with the training set's mean and std (scaled twice?)"))
    spread = float(feature_rms[~constant].max() / feature_rms[~constant].median().clamp_min(1e-12))
    evidence["feature_scale_spread"] = spread
    if spread > FEATURE_SPREAD:
        worst = int(torch.where(constant, torch.zeros_like(feature_rms), feature_rms).argmax())
        findings.append(Finding("inputs", "warning", f"features are on very different scales: feature {worst} has "
                                f"{spread:.0f}x the rms of the median feature", evidence,
                                "standardise each feature with the training set's mean and std"))
    if ctx.val_batches is not None:
        findings += _compare_splits(ctx, flat, evidence)
    if int(constant.sum()):
        findings.append(Finding("inputs", "info", f"{int(constant.sum())} of {flat.shape[1]} input features are "
                                "constant (they carry no information; harmless, e.g. always-blank pixels)", evidence))
    if not any(f.flagged for f in findings):
        findings.insert(0, Finding("inputs", "ok", f"inputs look normalised: rms {rms:.2f}, mean "
                                   f"{evidence['mean']:.2f}, std {evidence['std']:.2f}", evidence))
    return findings


def _compare_splits(ctx: _Context, flat: torch.Tensor, evidence: dict) -> list[Finding]:
    """Train vs validation inputs: same scale and location; normalised with the training statistics."""
    Xv = torch.cat([b[0] for b in ctx.val_batches])
    if not torch.is_floating_point(Xv) or Xv[0].numel() != flat.shape[1]:
        return [Finding("inputs", "error", f"validation inputs {list(Xv.shape[1:])} {Xv.dtype} do not match "
                        f"training inputs {evidence['shape']}", evidence, "build both splits the same way")]
    flat_v = Xv.reshape(len(Xv), -1).float()
    if not bool(torch.isfinite(flat_v).all()):
        return [Finding("inputs", "error", "validation inputs contain nan or inf", evidence,
                        "fix the validation pipeline (a division by a zero std?)")]
    mean_t, std_t = flat.mean(dim=0), flat.std(dim=0, correction=0)
    scale = float(flat_v.pow(2).mean().sqrt()) / max(evidence["rms"], 1e-12)
    shift = float((flat_v.mean(dim=0) - mean_t).norm() / std_t.norm().clamp_min(1e-12))
    evidence.update(val_rms_ratio=scale, val_mean_shift=shift)
    findings = []
    if scale > VAL_SCALE or scale < 1 / VAL_SCALE or shift > VAL_SHIFT:
        findings.append(Finding("inputs", "warning", f"validation inputs differ from training inputs: rms ratio "
                                f"{scale:.2f}, mean shift {shift:.2f} training stds -- processed differently?",
                                evidence, "apply exactly the same preprocessing to every split (normalise train, "
                                "val and test with the training set's mean and std)"))
    train_exact, val_exact = _standardised(ctx.X), _standardised(Xv)
    evidence.update(train_standardised=[k for k, v in train_exact.items() if v],
                    val_standardised=[k for k, v in val_exact.items() if v])
    for kind, exact in val_exact.items():
        if exact and not train_exact[kind]:
            findings.append(Finding("inputs", "warning", f"the validation inputs are exactly standardised ({kind}: "
                                    "mean 0, std 1) but the training inputs are not: the normalisation statistics "
                                    "were computed on the validation/test data", evidence,
                                    "compute mean and std on the TRAINING split only and apply them to every split: "
                                    "using test statistics leaks information about the test set"))
            break
        if exact and train_exact[kind]:
            findings.append(Finding("inputs", "warning", f"train and validation inputs are each exactly standardised "
                                    f"({kind}): every split was normalised with its own statistics", evidence,
                                    "compute mean and std on the training split only and apply those same numbers "
                                    "to validation and test data"))
            break
    return findings


def _row_keys(X: torch.Tensor) -> list[bytes]:
    """A 16-byte digest of each example's values: equal digests = identical examples."""
    rows = X.reshape(len(X), -1).contiguous().numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]


def _check_leakage(ctx: _Context) -> list[Finding]:
    """Exact duplicates inside the training set (and identical inputs with different labels), and training
    examples that reappear in the validation set."""
    keys, y = _row_keys(ctx.X), ctx.y
    n = len(keys)
    groups: dict[bytes, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    duplicates = n - len(groups)
    conflicting = sum(1 for idx in groups.values() if len(idx) > 1 and len({_label_key(y[i]) for i in idx}) > 1)
    evidence = {"train_examples": n, "train_duplicates": duplicates, "conflicting_labels": conflicting}
    findings = []
    if duplicates / n > DUPLICATE_FRACTION:
        findings.append(Finding("leakage", "warning", f"{duplicates} of {n} training examples ({_pct(duplicates / n)}) "
                                "are exact duplicates of others", evidence,
                                "drop the duplicates (they count several times in the loss), and split train/val/"
                                "test AFTER removing them, or copies end up on both sides"))
    elif duplicates:
        findings.append(Finding("leakage", "info", f"{duplicates} of {n} training examples are exact duplicates "
                                "(a few are harmless)", evidence))
    if conflicting:
        findings.append(Finding("leakage", "warning", f"{conflicting} groups of identical training inputs have "
                                "different labels", evidence,
                                "these labels are noise for the model: fix or drop the contradicting examples"))
    if ctx.val_batches is None:
        findings.append(Finding("leakage", "info", "no val_loader given: train/validation overlap not checked",
                                evidence))
    else:
        Xv = torch.cat([b[0] for b in ctx.val_batches])
        if Xv[0].shape != ctx.X[0].shape or Xv.dtype != ctx.X.dtype:
            findings.append(Finding("leakage", "info", "validation inputs are shaped differently from training "
                                    "inputs: overlap not checked", evidence))
        else:
            val_keys = _row_keys(Xv)
            overlap = sum(k in groups for k in val_keys)
            fraction = overlap / len(val_keys)
            evidence.update(val_examples=len(val_keys), val_in_train=overlap, val_in_train_fraction=fraction)
            if overlap:
                findings.append(Finding("leakage", "error" if fraction >= 0.01 else "warning",
                                        f"{overlap} of {len(val_keys)} validation examples ({_pct(fraction)}) also "
                                        "appear in the training set: validation scores overstate how well the model "
                                        "generalises", evidence,
                                        "split the data once into disjoint train/val/test sets (after removing "
                                        "duplicates), and never pass the training loader as the validation loader"))
    if not any(f.flagged for f in findings):
        where = "" if ctx.val_batches is None else f", none of {evidence['val_examples']} validation examples " \
            "appears in training"
        findings.insert(0, Finding("leakage", "ok", f"{duplicates} duplicates among {n} training examples{where}",
                                   evidence))
    return findings


def _label_key(label: torch.Tensor):
    return label.item() if label.numel() == 1 else tuple(label.reshape(-1).tolist())


def _check_shuffling(ctx: _Context) -> list[Finding]:
    """Is the training loader shuffled (a second pass starts with a different batch)? Are labels grouped inside
    batches (far fewer classes per batch than random batches would hold)?"""
    X0, y0 = ctx.batches[0]
    again = next(iter(ctx.train_loader))
    same = again[0].shape == X0.shape and torch.equal(again[0].cpu(), X0) and torch.equal(again[1].cpu(), y0)
    sampler = type(getattr(ctx.train_loader, "sampler", None)).__name__
    evidence: dict = {"sampler": sampler, "same_first_batch_each_pass": same, "batches_scanned": len(ctx.batches)}
    grouped = False
    if ctx.classification and len(ctx.batches) > 1:
        p = torch.bincount(ctx.y, minlength=ctx.num_classes).double() / len(ctx.y)
        observed = sum(len(torch.unique(y)) for _, y in ctx.batches) / len(ctx.batches)
        expected = sum(float((1 - (1 - p) ** len(y)).sum()) for _, y in ctx.batches) / len(ctx.batches)
        evidence.update(classes_per_batch=observed, expected_if_random=expected)
        grouped = observed < GROUPED_LABELS * expected
    if same and grouped:
        return [Finding("shuffling", "error", f"the training data is sorted by label and not shuffled: batches hold "
                        f"{evidence['classes_per_batch']:.1f} classes on average, random batches would hold "
                        f"{evidence['expected_if_random']:.1f}", evidence,
                        "pass shuffle=True to the training DataLoader: gradient steps on one class at a time pull "
                        "the model back and forth and it never settles")]
    if grouped:
        return [Finding("shuffling", "warning", f"batches hold {evidence['classes_per_batch']:.1f} classes on "
                        f"average where random batches would hold {evidence['expected_if_random']:.1f}: the sampler "
                        "groups examples by label", evidence,
                        "use shuffle=True (a RandomSampler) unless grouping by label is intended")]
    if same:
        return [Finding("shuffling", "warning", "the training loader gives the same order every epoch (not "
                        "shuffled)", evidence,
                        "pass shuffle=True (with a seeded generator for reproducibility) to the training DataLoader; "
                        "keep the validation loader unshuffled")]
    message = "the training loader is shuffled" + (
        f"; batches hold {evidence['classes_per_batch']:.1f} classes (random: "
        f"{evidence['expected_if_random']:.1f})" if "classes_per_batch" in evidence else "")
    return [Finding("shuffling", "ok", message, evidence)]


# ----------------------------------------------------------------------------------------------------------------
# Model checks


class _ShapeTracer(TorchFunctionMode):
    """Records torch operations whose result has more elements than ``limit`` (a broadcast blow-up)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.big = limit, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.numel() > self.limit:
            self.big.append((getattr(func, "__name__", str(func)), list(out.shape)))
        return out


def _broadcast_findings(ctx: _Context, y_hat: torch.Tensor, y: torch.Tensor) -> list[Finding]:
    """Does the loss broadcast y_hat against y into something bigger than both (e.g. (N, 1) - (N,) -> (N, N))?"""
    evidence = {"y_hat_shape": list(y_hat.shape), "y_shape": list(y.shape)}
    blown = None
    if torch.is_floating_point(y) and y_hat.shape != y.shape:
        try:
            shape = torch.broadcast_shapes(y_hat.shape, y.shape)
            if math.prod(shape) > max(y_hat.numel(), y.numel()):
                blown = list(shape)
        except RuntimeError:
            pass
    tracer = _ShapeTracer(max(y_hat.numel(), y.numel()))
    with warnings.catch_warnings(record=True) as caught, torch.no_grad(), tracer:
        warnings.simplefilter("always")
        ctx.loss_fn(y_hat.detach(), y)
    if tracer.big:
        evidence["oversized_intermediates"] = [f"{name} -> {shape}" for name, shape in tracer.big[:5]]
        blown = blown or tracer.big[0][1]
    size_warnings = [str(w.message) for w in caught if "size" in str(w.message)]
    if size_warnings:
        evidence["torch_warning"] = size_warnings[0]
    if blown is None:
        return []
    message = f"the loss broadcasts y_hat {list(y_hat.shape)} against y {list(y.shape)} into {blown}: it " \
        "compares every prediction with every target"
    if ctx.classification and y_hat.ndim == 2 and y.ndim == 1 and len(y_hat) == len(y):
        # class indices: (B, C) scores against (B,) labels is right; the loss must pick one score per example
        evidence["case"] = "class indices"
        return [Finding("initial_loss", "error", message + " (for class indices, (B, C) scores against (B,) "
                        "labels is correct: the loss must take one entry per example, not all B x B)", evidence,
                        "pick each example's own class: log_p[torch.arange(len(y)), y] or "
                        "log_p.gather(1, y.unsqueeze(1)).squeeze(1) -- not log_p[:, y] -- or simply use "
                        "F.cross_entropy(y_hat, y) on logits (F.nll_loss(log_p, y) on log-probabilities); "
                        "one-hot targets must be (B, C): F.one_hot(y, C) of y itself, not of y.view(-1, 1)")]
    pair = sorted([list(y_hat.shape), list(y.shape)], key=len)
    if len(pair[1]) == len(pair[0]) + 1 and pair[1][-1] == 1 and pair[1][:-1] == pair[0]:
        # regression-like: (N, 1) against (N,): the shapes should simply be equal
        evidence["case"] = "(N, 1) vs (N,)"
        return [Finding("initial_loss", "error", message, evidence,
                        "make the shapes equal before the loss: y_hat.squeeze(1) (or y.view(-1, 1) / "
                        "y.unsqueeze(1)); assert y_hat.shape == y.shape")]
    evidence["case"] = "other"
    return [Finding("initial_loss", "error", message, evidence,
                    "print the shape of every tensor inside the loss and make prediction and target line up "
                    "element by element (reshape/view one of them, or index the predictions with the targets "
                    "example by example) before they are combined")]


def _loss_broadcasts(ctx: _Context) -> str | None:
    """The initial_loss check's broadcasting finding (its message), or None when the loss does not broadcast.
    Taken from ctx.notes when initial_loss ran; otherwise measured here on a fresh model's outputs."""
    if "broadcast" not in ctx.notes:
        X, y = ctx.examples(STEP_EXAMPLES)
        with torch.no_grad(), _NoDropout(ctx.fresh()) as model:
            y_hat = model(X)
        ctx.notes["broadcast"] = [f.message for f in _broadcast_findings(ctx, y_hat, y)] \
            if isinstance(y_hat, torch.Tensor) else []
    found = ctx.notes["broadcast"]
    return found[0] if found else None


def _check_initial_loss(ctx: _Context) -> list[Finding]:
    """The loss before training vs its expected value (log C for cross-entropy over C classes); what the outputs
    look like (probabilities from a final softmax, only non-negative values from a final ReLU); shapes that
    broadcast inside the loss."""
    model = ctx.fresh()
    X, y = ctx.examples(512)
    with torch.no_grad():
        y_hat = torch.cat([model(X[i:i + STEP_EXAMPLES]) for i in range(0, len(X), STEP_EXAMPLES)])
        loss = _value(ctx.loss_fn(y_hat, y))
    findings = _broadcast_findings(ctx, y_hat[:STEP_EXAMPLES], y[:STEP_EXAMPLES])
    ctx.notes["broadcast"] = [f.message for f in findings]   # learnability reads it
    evidence: dict = {"initial_loss": loss, "examples": len(X), "y_hat_shape": list(y_hat.shape[1:])}
    if not _finite(loss):
        findings.append(Finding("initial_loss", "error", f"the loss is {loss} before any training", evidence,
                                "find where the nan/inf appears (see the non_finite check): the inputs, a log of 0 "
                                "or a division in the model or the loss"))
        return findings
    if not (ctx.cross_entropy and ctx.classification):
        findings.append(Finding("initial_loss", "info", f"initial loss {loss:.4g} (no reference value for this "
                                "loss; cross-entropy is compared with log C)", evidence))
        return findings
    C = y_hat.shape[1]
    expected = math.log(C)
    rows = y_hat.float()
    evidence.update(expected=expected, difference=loss - expected, num_classes=C,
                    logit_std=float(rows.std(dim=1).mean()), predicted_classes=int(len(rows.argmax(1).unique())))
    probabilities = bool((rows >= 0).all() and (rows <= 1).all() and
                         torch.allclose(rows.sum(dim=1), torch.ones(len(rows), device=rows.device), atol=1e-3))
    if probabilities:
        findings.append(Finding("initial_loss", "error", "the model outputs probabilities (every row is >= 0 and sums "
                                "to 1): it ends in a softmax, but cross_entropy applies log_softmax itself", evidence,
                                "remove the final Softmax and return logits; apply softmax only to read "
                                "probabilities off a trained model"))
    elif bool((rows > 0).all() and (rows < 1).all()):
        findings.append(Finding("initial_loss", "warning", "every output lies in (0, 1): the model ends in a sigmoid, "
                                "but cross_entropy expects unbounded logits", evidence,
                                "remove the final activation and return logits"))
    elif bool((rows >= 0).all()):
        findings.append(Finding("initial_loss", "warning", "no output is negative: the model ends in a ReLU (or the "
                                "like), so logits can't go below 0", evidence,
                                "remove the activation after the last layer: logits must be free to be negative"))
    if loss - expected > INITIAL_LOSS_EXCESS:
        findings.append(Finding("initial_loss", "warning", f"initial loss {loss:.3f} is well above log {C} = "
                                f"{expected:.3f}: the untrained network is confidently wrong (logits spread by "
                                f"{evidence['logit_std']:.2f})", evidence,
                                "initialise the last layer with small weights (e.g. multiply them by 0.01, or "
                                "zero them) so the first predictions are close to uniform"))
    elif expected - loss > INITIAL_LOSS_EXCESS:
        findings.append(Finding("initial_loss", "info", f"initial loss {loss:.3f} is well below log {C} = "
                                f"{expected:.3f}: a pretrained model? (an untrained one should start near log C)",
                                evidence))
    if not any(f.flagged for f in findings):
        findings.insert(0, Finding("initial_loss", "ok", f"initial loss {loss:.3f} is close to log {C} = "
                                   f"{expected:.3f} (uniform predictions)", evidence))
    return findings


class _NanWatch:
    """Forward hooks on every module: remembers the first module (and step) whose output holds nan or inf, whether
    its inputs were still finite, and which module was running around it. ``step`` is set by the caller."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.first, self.stack, self.step, self.handles = model, None, [], 0, []

    def __enter__(self):
        for name, m in self.model.named_modules():
            self.handles.append(m.register_forward_pre_hook(lambda m, a, name=name: self.stack.append(name) and None))
            self.handles.append(m.register_forward_hook(lambda m, a, o, name=name: self._post(m, a, o, name)))
        return self

    def _post(self, module, args, output, name) -> None:
        self.stack.pop()
        if self.first is None and _nonfinite(output):
            self.first = {"module": name or "(model)", "type": type(module).__name__, "step": self.step,
                          "inputs_finite": not _nonfinite(list(args)),
                          "inside": (self.stack[-1] or "(model)") if self.stack else None}

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def describe(self) -> str:
        where = self.first
        if where["inputs_finite"]:
            return f"module '{where['module']}' ({where['type']}) turns finite inputs into nan/inf"
        return f"nan/inf appears inside the forward of '{where['inside'] or '(model)'}' (in code between its " \
               f"modules, before '{where['module']}')"


def _accumulation(ctx: _Context) -> dict:
    """Call the user's step twice on one batch with the lr set to 0 (the weights stay put) and compare what the
    parameters' .grad holds with the gradients computed in each backward pass: the second call's gradient means
    the step zeroes gradients; the sum of both means they accumulate (optimizer.zero_grad() is missing)."""
    model = ctx.fresh()
    opt = ctx.optimizer(model)
    for group in opt.param_groups:
        group["lr"] = 0.0
    X, y = ctx.batch(0, OVERFIT_EXAMPLES)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    seen: dict[str, list[torch.Tensor]] = {n: [] for n, _ in named}
    handles = [p.register_hook(lambda g, name=name: seen[name].append(g.detach().clone()) and None)
               for name, p in named]
    try:
        ctx.step(model, opt, X, y)
        ctx.step(model, opt, X, y)
    finally:
        for h in handles:
            h.remove()
    summed = zeroed = 0.0
    for name, p in named:
        if p.grad is None or len(seen[name]) != 2:
            continue
        g1, g2 = seen[name]
        zeroed += float((p.grad - g2).pow(2).sum())
        summed += float((p.grad - g1 - g2).pow(2).sum())
    checked = sum(1 for name, p in named if p.grad is not None and len(seen[name]) == 2)
    return {"accumulates": checked > 0 and summed < 0.01 * zeroed, "params_checked": checked}


def _overfit(ctx: _Context) -> dict:
    """Train a fresh copy on one batch of OVERFIT_EXAMPLES for up to OVERFIT_STEPS steps (cached in ctx.notes)."""
    if "overfit" in ctx.notes:
        return ctx.notes["overfit"]
    X, y = ctx.batch(0, OVERFIT_EXAMPLES)
    model = ctx.fresh()
    opt = ctx.optimizer(model)
    start, acc0 = _score(ctx, model, X, y)
    before = [p.detach().clone() for p in model.parameters()]
    losses: list[float] = []
    scores: list[tuple[int, float, float | None]] = [(0, start, acc0)]
    passed = False
    with _NanWatch(model) as watch:
        for step in range(1, OVERFIT_STEPS + 1):
            watch.step = step
            losses.append(ctx.step(model, opt, X, y))
            if not _finite(losses[-1]):
                break
            if step % 10 == 0:
                scores.append((step, *_score(ctx, model, X, y)))
                _, loss, acc = scores[-1]
                passed = loss <= OVERFIT_TARGET * start and (acc is None or acc == 1.0)
                if passed:
                    break
    finite = [v for v in losses if _finite(v)]
    final, acc = _score(ctx, model, X, y) if losses and _finite(losses[-1]) else (float("nan"), None)
    moved = max((float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before)), default=0.0)
    best = min(finite, default=start)
    result = {"examples": len(X), "steps": len(losses), "start_loss": start, "final_loss": final, "final_acc": acc,
              "min_loss": best, "lr": opt.param_groups[0]["lr"], "max_weight_change": moved,
              "target_loss": OVERFIT_TARGET * start, "passed": passed, "losses": losses, "scores": scores,
              # how much of the starting loss the batch lost: memorising works when this is large
              "progress": (start - best) / start if _finite(start) and start > 0 else 0.0,
              "nan_origin": watch.first, "nan_text": watch.describe() if watch.first else None}
    ctx.notes["overfit"] = result
    return result


def _check_overfit_batch(ctx: _Context) -> list[Finding]:
    """Can the user's step drive one small batch to 100 % accuracy and a loss near 0? The surest test that the
    model, the loss and the step fit together: any working set-up memorises a few examples quickly. Also checks
    that the step zeroes gradients: two calls at lr 0 must leave the second call's gradient in .grad, not the sum."""
    findings = []
    accumulation = _accumulation(ctx)
    if accumulation["accumulates"]:
        findings.append(Finding("overfit_batch", "error", "gradients accumulate across steps: after two calls of "
                                "the training step, .grad holds the sum of both steps' gradients", accumulation,
                                "call optimizer.zero_grad() once per step (before loss.backward(), or after "
                                "optimizer.step()); if you accumulate on purpose, zero every k steps and say so"))
    r = _overfit(ctx)
    evidence = {k: v for k, v in r.items() if k not in ("losses", "scores", "nan_origin")}
    fig, ax = _figure()
    shown = [v if _finite(v) else float("nan") for v in r["losses"]]
    ax.plot(range(1, len(shown) + 1), shown, label="loss at each step")
    if _finite(r["target_loss"]):
        ax.axhline(r["target_loss"], color="tab:green", linestyle="--", label="target")
    if any(_finite(v) and v > 0 for v in shown):
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="loss on the batch", title=f"overfitting one batch of {r['examples']}")
    ax.legend(fontsize=8)
    fig = _done(fig)
    what, start, final, steps = f"a batch of {r['examples']}", r["start_loss"], r["final_loss"], r["steps"]
    acc = r["final_acc"]
    if not _finite(start):
        findings.append(Finding("overfit_batch", "error", f"the loss is {start} before training", evidence,
                                "see the non_finite check", fig))
    elif not r["losses"] or not _finite(r["losses"][-1]):
        where = f" ({r['nan_text']} at that step)" if r["nan_text"] else ""
        findings.append(Finding("overfit_batch", "error", f"the loss became {r['losses'][-1]} at step {steps} while "
                                f"overfitting {what}{where}", evidence,
                                "see the non_finite and lr_range checks: a too-high lr, a log of 0 or a division "
                                "by 0", fig))
    elif r["max_weight_change"] == 0.0:
        findings.append(Finding("overfit_batch", "error", f"{steps} training steps did not change a single weight",
                                evidence, "the step never updates the model: call optimizer.step() after "
                                "loss.backward(), don't call optimizer.zero_grad() between backward() and step(), "
                                "and build the optimizer from this model's parameters", fig))
    elif r["passed"]:
        findings.append(Finding("overfit_batch", "ok", f"memorised {what} in {steps} steps: loss {start:.3f} -> "
                                f"{final:.4f}" + (f", accuracy {_pct(acc)}" if acc is not None else ""), evidence,
                                figure=fig))
    else:
        losses, best = r["losses"], r["min_loss"]
        rebound = max(losses[losses.index(best):])
        late = [loss for step, loss, _ in r["scores"] if step >= steps - 50]   # the last 50 steps' scores
        stalled = len(late) >= 2 and late[-1] > 0.95 * late[0]
        if best >= 0.95 * start:
            findings.append(Finding("overfit_batch", "error", f"the loss did not go down on a single batch in "
                                    f"{steps} steps ({start:.3f} -> {final:.3f})", evidence,
                                    "no learning at all: is the loss detached from the model (.detach(), .item(), a "
                                    "new tensor)? are gradients reaching the weights (gradient_flow)? is the lr "
                                    "absurdly small or large (lr_range)?", fig))
        elif rebound > start and rebound > 2 * best:
            findings.append(Finding("overfit_batch", "error", f"unstable: the loss fell to {best:.3f}, then climbed "
                                    f"back to {rebound:.3f} while overfitting {what}", evidence,
                                    "the steps grow too large: a too-high lr, or gradients that accumulate because "
                                    "optimizer.zero_grad() is missing from the step", fig))
        elif acc == 1.0 and stalled:
            findings.append(Finding("overfit_batch", "error", f"accuracy reached 100 % but the loss is stuck at "
                                    f"{final:.3f} (target {r['target_loss']:.3f}): the model cannot become "
                                    "confident", evidence,
                                    "bounded outputs: a Softmax or Sigmoid at the end of the model caps how "
                                    "confident it can be -- return raw logits to cross_entropy", fig))
        else:
            findings.append(Finding("overfit_batch", "warning", f"could not overfit {what} in {steps} steps: loss "
                                    f"{start:.3f} -> {final:.3f}" + (f", accuracy {_pct(acc)}" if acc is not None
                                                                     else ""), evidence,
                                    "a healthy set-up memorises a few examples quickly: check the lr (lr_range), "
                                    "the model's capacity, and bugs in the step", fig))
    return findings


def _check_learnability(ctx: _Context) -> list[Finding]:
    """Does training on some batches improve the predictions on training examples never trained on? Memorising
    one batch needs no relation between inputs and labels; generalising to new examples does. Labels shuffled
    apart from their inputs (or misaligned) still memorise (overfit_batch halves its loss) but fail here: that is an
    error; failing here without memorising is a warning (fix the other findings first). With val_loader, the
    validation examples must improve too: the data are blamed ("processed or labelled differently") only when the
    validation result is worse than the held-out training result beyond sampling noise (:func:`_split_gap`);
    weak learning on both is "info". When the loss itself broadcasts (initial_loss), no data is blamed: the
    finding points at the loss."""
    n_batches = len(ctx.batches)
    held, count = 0, 0
    while held < n_batches - 1 and count < LEARN_HOLDOUT:
        count += len(ctx.batches[held][0])
        held += 1
    if held == 0 or held >= n_batches:
        return [Finding("learnability", "info", "too few training batches to hold some out: skipped",
                        {"batches": n_batches})]
    Xh, yh = ctx.examples(LEARN_HOLDOUT, ctx.batches[:held])
    train = ctx.batches[held:]
    model = ctx.fresh()
    opt = ctx.optimizer(model)
    loss0, acc0 = _score(ctx, model, Xh, yh)
    losses = []
    for step in range(LEARN_STEPS):
        X, y = train[step % len(train)]
        losses.append(ctx.step(model, opt, X[:STEP_EXAMPLES].to(ctx.device), y[:STEP_EXAMPLES].to(ctx.device)))
        if not _finite(losses[-1]):
            break
    loss1, acc1 = _score(ctx, model, Xh, yh)
    trained_y = torch.cat([y[:STEP_EXAMPLES] for _, y in train[:LEARN_STEPS]])
    evidence: dict = {"steps": len(losses), "held_out": len(Xh), "held_out_loss_before": loss0,
                      "held_out_loss_after": loss1, "held_out_acc_before": acc0, "held_out_acc_after": acc1}
    learned, baseline_text = _beats_baseline(ctx, trained_y, yh, loss1, acc1, evidence, loss0)
    val_learned = None
    if ctx.val_batches is not None and learned:
        Xv, yv = ctx.examples(LEARN_HOLDOUT, ctx.val_batches)
        vloss0, _ = _score(ctx, ctx.fresh(), Xv, yv)
        vloss, vacc = _score(ctx, model, Xv, yv)
        val_evidence: dict = {}
        val_learned, _ = _beats_baseline(ctx, trained_y, yv, vloss, vacc, val_evidence, vloss0)
        evidence.update({f"val_{k}": v for k, v in val_evidence.items()}, val_examples=len(Xv),
                        val_loss_before=vloss0, val_loss_after=vloss, val_acc_after=vacc)
    if not _finite(loss1):
        return [Finding("learnability", "error", f"the loss became non-finite after {len(losses)} steps", evidence,
                        "see the non_finite and lr_range checks")]
    broken = _loss_broadcasts(ctx)          # measured after training: the numbers above do not depend on it
    if broken:
        evidence["loss_broadcasts"] = broken
    measured = _measured(evidence)
    if not learned:
        memorises = _overfit(ctx)["progress"] >= 0.5     # one batch's loss can be halved: memorising works
        evidence["overfit_progress"] = ctx.notes["overfit"]["progress"]
        if broken:
            return [Finding("learnability", "warning", f"after {len(losses)} steps the model predicts {len(Xh)} "
                            f"unseen training examples no better than {baseline_text}; the loss itself is broken "
                            "(initial_loss: it broadcasts), which alone keeps the model from learning the task",
                            evidence, "fix the loss first (see initial_loss), then run the doctor again: this "
                            "check says nothing about the data while the loss compares the wrong pairs")]
        if memorises:
            return [Finding("learnability", "error", f"the model memorises a batch but learns nothing that carries "
                            f"over: after {len(losses)} steps it predicts {len(Xh)} unseen training examples no "
                            f"better than {baseline_text}", evidence,
                            "the labels do not belong to their inputs: were X and y shuffled or sorted separately? "
                            "check a few (X, y) pairs by eye and the code that builds y")]
        return [Finding("learnability", "warning", f"after {len(losses)} steps the model predicts {len(Xh)} unseen "
                        f"training examples no better than {baseline_text}", evidence,
                        "nothing is learned yet: fix the other findings first (lr, overfit_batch); if the model "
                        "memorises a batch but still fails here, the labels don't match the inputs")]
    if val_learned is False:
        val_text = f"validation loss {evidence['val_loss_after']:.3f}" + (
            f", accuracy {_pct(evidence['val_acc_after'])}" if evidence["val_acc_after"] is not None else "")
        gap = _split_gap(evidence)
        evidence["train_val_gap_significant"] = gap
        if gap and not broken:
            return [Finding("learnability", "warning", f"{measured}, but the validation examples do not "
                            f"improve ({val_text}): what the model learns from the training data does not hold on the "
                            "validation data", evidence,
                            "the validation data is processed or labelled differently from the training data: "
                            "use one preprocessing function (same normalisation, same label mapping) for every "
                            "split")]
        if broken:
            return [Finding("learnability", "info", f"{measured}; the validation examples do not improve "
                            f"({val_text}); "
                            "the loss itself is broken (initial_loss: it broadcasts), so these numbers say little "
                            "about the data: fix the loss first and run the doctor again", evidence)]
        return [Finding("learnability", "info", f"{measured} (just beating {baseline_text}); the validation "
                        f"examples ({val_text}) do not beat their baseline, but are within noise of the held-out "
                        "training examples: too little is learned in these steps to compare the splits", evidence)]
    if broken:
        return [Finding("learnability", "info", f"{measured}, although the loss broadcasts (see initial_loss): "
                        "fix the loss and run the doctor again", evidence)]
    message = f"after {len(losses)} steps, unseen training examples improve: loss {loss0:.3f} -> {loss1:.3f}" + \
        (f", accuracy {_pct(acc0)} -> {_pct(acc1)}" if acc1 is not None else "")
    return [Finding("learnability", "ok", message, evidence)]


def _measured(evidence: dict) -> str:
    """What learnability measured on the held-out training examples, in words (no verdict)."""
    acc0, acc1 = evidence["held_out_acc_before"], evidence["held_out_acc_after"]
    return f"after {evidence['steps']} steps, {evidence['held_out']} unseen training examples went from loss " \
        f"{evidence['held_out_loss_before']:.3f} to {evidence['held_out_loss_after']:.3f}" + \
        (f", accuracy {_pct(acc0)} to {_pct(acc1)}" if acc1 is not None else "")


def _split_gap(evidence: dict) -> bool:
    """Is the validation result clearly worse than the held-out training result, beyond sampling noise? With
    accuracies: the difference exceeds 3 standard errors of a difference of two proportions; otherwise the
    validation loss must improve by less than half as much (relative) as the held-out training loss did. A model
    that barely learned shows no such gap, whatever the data."""
    acc, vacc = evidence.get("held_out_acc_after"), evidence.get("val_acc_after")
    if acc is not None and vacc is not None:
        n, m = evidence["held_out"], evidence.get("val_examples", evidence["held_out"])
        se = math.sqrt(max(acc * (1 - acc), 1e-4) / n + max(vacc * (1 - vacc), 1e-4) / m)
        return acc - vacc > 3 * se
    loss0, loss1 = evidence["held_out_loss_before"], evidence["held_out_loss_after"]
    vloss0, vloss1 = evidence["val_loss_before"], evidence["val_loss_after"]
    gain = (loss0 - loss1) / abs(loss0) if loss0 else 0.0
    vgain = (vloss0 - vloss1) / abs(vloss0) if vloss0 and _finite(vloss0) else 0.0
    return gain > 0 and vgain < 0.5 * gain


def _beats_baseline(ctx: _Context, trained_y: torch.Tensor, y: torch.Tensor, loss: float, acc: float | None,
                    evidence: dict, loss_before: float) -> tuple[bool, str]:
    """Do (loss, acc) on labels ``y`` beat the best guess that ignores the inputs? Classification: predicting the
    training class frequencies (loss) or the most frequent training class (accuracy); other tasks: the loss must
    fall by 10 x LEARN_MARGIN of its value before training."""
    y = y.cpu()
    if ctx.classification and ctx.cross_entropy:
        counts = torch.bincount(trained_y.cpu(), minlength=ctx.num_classes).double() + 1.0  # Laplace smoothing
        log_p = (counts / counts.sum()).log()
        baseline = float(-log_p[y.clamp(0, ctx.num_classes - 1)].mean())
        chance = float((y == int(counts.argmax())).double().mean())
        margin = 3 * math.sqrt(max(chance * (1 - chance), 1e-4) / len(y))
        evidence.update(baseline_loss=baseline, chance_acc=chance, acc_needed=chance + margin)
        learned = (acc is not None and acc > chance + margin) or loss < baseline * (1 - LEARN_MARGIN)
        return learned, f"guessing from the class frequencies (accuracy {_pct(chance)}, loss {baseline:.3f})"
    if ctx.classification:
        chance = float((y == int(torch.bincount(trained_y.cpu()).argmax())).double().mean())
        margin = 3 * math.sqrt(max(chance * (1 - chance), 1e-4) / len(y))
        evidence.update(chance_acc=chance, acc_needed=chance + margin)
        return acc is not None and acc > chance + margin, f"always guessing the most frequent class ({_pct(chance)})"
    evidence.update(loss_needed=(1 - 10 * LEARN_MARGIN) * loss_before)
    return loss < (1 - 10 * LEARN_MARGIN) * loss_before, f"its starting loss ({loss_before:.4g})"


def _owner(name: str) -> str:
    """The module that owns parameter ``name`` ('features.0.weight' -> 'features.0'; '' is the model itself)."""
    return name.rsplit(".", 1)[0] if "." in name else ""


def _forward_order(model: nn.Module, run: Callable[[], Any]) -> list[str]:
    """Names of the modules in the order their forward first ran during ``run()``."""
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda m, args, name=name: order.append(name) if name not in order
                                           else None) for name, m in model.named_modules()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return order


def _check_gradient_flow(ctx: _Context) -> list[Finding]:
    """One step of the user's train_step with a hook on every parameter: layers that get no gradient (detached
    or unused), frozen layers (requires_grad=False), zero or non-finite gradients, and gradients that vanish or
    explode across layers (relative gradient ||g|| / ||w|| spread over GRAD_SPREAD), or steps larger than the
    weights themselves."""
    model = ctx.fresh()
    opt = ctx.optimizer(model)
    X, y = ctx.batch(0)
    named = list(model.named_parameters())
    grads: dict[str, float] = {}
    handles = [p.register_hook(lambda g, name=name: grads.__setitem__(
        name, math.sqrt(grads.get(name, 0.0) ** 2 + float(g.detach().float().pow(2).sum()))))
        for name, p in named if p.requires_grad]
    before = {name: p.detach().clone() for name, p in named}
    error: Exception | None = None

    def run():
        nonlocal error
        try:
            ctx.step(model, opt, X, y)
        except RuntimeError as e:   # e.g. "element 0 of tensors does not require grad": the loss is detached
            error = e

    try:
        order = _forward_order(model, run)
    finally:
        for h in handles:
            h.remove()
    if error is not None:
        detached = "does not require grad" in str(error) or "does not have a grad_fn" in str(error)
        return [Finding("gradient_flow", "error", "backward failed: the loss is not connected to the model's "
                        f"parameters ({error})" if detached else f"the training step failed: {error}",
                        {"exception": f"{type(error).__name__}: {error}"},
                        "the loss must be computed from the model's output with torch operations: no .detach(), "
                        ".item(), .numpy(), torch.tensor(...) or torch.no_grad() between the forward pass and the "
                        "loss" if detached else "run one step by hand to see the full traceback")]
    layers: dict[str, dict] = {}
    for name, p in named:
        layer = layers.setdefault(_owner(name), {"params": 0, "trainable": 0, "grad_sq": 0.0, "got_grad": 0,
                                                 "weight_sq": 0.0, "update_sq": 0.0})
        layer["params"] += 1
        layer["weight_sq"] += float(before[name].float().pow(2).sum())
        layer["update_sq"] += float((p.detach() - before[name]).float().pow(2).sum())
        if p.requires_grad:
            layer["trainable"] += 1
            if name in grads:
                layer["got_grad"] += 1
                layer["grad_sq"] += grads[name] ** 2
    ranked = [n for n in order if n in layers] + [n for n in layers if n not in order]
    label = {n: n or "(model)" for n in ranked}
    frozen = [label[n] for n in ranked if layers[n]["trainable"] == 0]
    no_grad = [label[n] for n in ranked if 0 < layers[n]["trainable"] and layers[n]["got_grad"] == 0]
    unused = [label[n] for n in ranked if n not in order]
    norms = {n: math.sqrt(layers[n]["grad_sq"]) for n in ranked if layers[n]["got_grad"]}
    nonfinite = [label[n] for n, v in norms.items() if not math.isfinite(v)]
    zero = [label[n] for n, v in norms.items() if v == 0.0]
    relative = {n: v / math.sqrt(layers[n]["weight_sq"]) for n, v in norms.items()
                if math.isfinite(v) and v > 0 and layers[n]["weight_sq"] > 0}
    updates = {n: math.sqrt(layers[n]["update_sq"] / layers[n]["weight_sq"]) for n in ranked
               if layers[n]["weight_sq"] > 0}
    evidence = {"layers": [label[n] for n in ranked], "grad_norms": {label[n]: v for n, v in norms.items()},
                "relative_grad": {label[n]: v for n, v in relative.items()},
                "update_ratio": {label[n]: v for n, v in updates.items()}, "frozen": frozen, "no_grad": no_grad}
    fig, ax = _figure(max(5.0, 0.5 * len(ranked) + 2), 3.4)
    heights = [norms.get(n, 0.0) if math.isfinite(norms.get(n, 0.0)) else 0.0 for n in ranked]
    floor = min([h for h in heights if h > 0], default=1.0) / 10
    colours = ["tab:gray" if label[n] in frozen else "tab:red" if label[n] in no_grad + zero + nonfinite
               else "tab:blue" for n in ranked]
    ax.bar(range(len(ranked)), [h if h > 0 else floor for h in heights], color=colours)
    ax.set_xticks(range(len(ranked)), [label[n] for n in ranked], rotation=45, ha="right", fontsize=8)
    ax.set(yscale="log", ylabel="gradient norm", title="gradient norm per layer (forward order; red: none/zero, "
           "grey: frozen)")
    fig = _done(fig)
    findings = []
    if no_grad:
        why = f"; {_names(unused)} never ran in the forward pass" if unused else ""
        findings.append(Finding("gradient_flow", "error", f"no gradient reaches {_names(no_grad)}{why}", evidence,
                                "something cuts the graph before these layers: a .detach(), .data, .item(), "
                                "torch.no_grad() or a tensor rebuilt with torch.tensor(...) in forward(); or the "
                                "layer is never used", fig))
    if frozen:
        findings.append(Finding("gradient_flow", "warning", f"{_names(frozen)} {'is' if len(frozen) == 1 else 'are'} "
                                "frozen (requires_grad=False): these weights never train", evidence,
                                "if that is not intended (it is when fine-tuning), set requires_grad=True again "
                                "and build the optimizer after that", fig))
    if nonfinite:
        findings.append(Finding("gradient_flow", "error", f"non-finite gradients in {_names(nonfinite)}", evidence,
                                "see the non_finite check", fig))
    if zero:
        findings.append(Finding("gradient_flow", "warning", f"the gradient of {_names(zero)} is exactly zero",
                                evidence, "dead units upstream (see activations) or a multiplication by zero: "
                                "nothing reaches these weights", fig))
    if len(relative) >= 2:
        ordered = [n for n in ranked if n in relative]
        low, high = min(ordered, key=relative.get), max(ordered, key=relative.get)
        spread = relative[high] / relative[low]
        evidence["relative_grad_spread"] = spread
        if spread > GRAD_SPREAD:
            kind = "vanishing" if ordered.index(low) < ordered.index(high) else "exploding"
            findings.append(Finding("gradient_flow", "warning", f"{kind} gradients: relative gradient |g|/|w| of "
                                    f"'{label[low]}' is {spread:.0e}x smaller than of '{label[high]}'", evidence,
                                    "use ReLU-family activations with He (kaiming) initialisation, add "
                                    "normalisation layers (BatchNorm/LayerNorm) or residual connections; avoid "
                                    "deep stacks of sigmoid/tanh", fig))
    big = [label[n] for n, v in updates.items() if v > UPDATE_RATIO]
    if big:
        findings.append(Finding("gradient_flow", "warning", f"one step changed {_names(big)} by more than "
                                "its own size (update/weight ratio > 1): exploding updates", evidence,
                                "lower the lr (see lr_range) or clip gradients (clip_grad_norm_)", fig))
    if not any(f.flagged for f in findings):
        findings.insert(0, Finding("gradient_flow", "ok", f"gradients reach all {len(norms)} layers with parameters "
                                   f"(norms {min(norms.values()):.2g} to {max(norms.values()):.2g})", evidence,
                                   figure=fig))
    return findings


_ACTIVATIONS = {"relu": "relu", "relu_": "relu", "tanh": "tanh", "tanh_": "tanh", "sigmoid": "sigmoid",
                "sigmoid_": "sigmoid"}


class _ActivationTracer(TorchFunctionMode):
    """Records the output of every relu/tanh/sigmoid call (module or functional) with the module running it."""

    def __init__(self, stack: list[str]) -> None:
        super().__init__()
        self.stack, self.sites = stack, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        kind = _ACTIVATIONS.get(getattr(func, "__name__", ""))
        if kind is not None and isinstance(out, torch.Tensor) and out.ndim >= 2:
            self.sites.append((self.stack[-1] if self.stack else "", kind, out.detach()))
        return out


def _units(out: torch.Tensor) -> torch.Tensor:
    """(N, units, ...) -> (units, everything else): features for (N, D), channels for images, the last dim for
    sequences (N, T, D)."""
    if out.ndim == 3:
        return out.reshape(-1, out.shape[-1]).T
    return out.transpose(0, 1).reshape(out.shape[1], -1)


def _check_activations(ctx: _Context) -> list[Finding]:
    """One forward pass on up to 256 examples: per activation (nn.ReLU or F.relu, tanh, sigmoid), the fraction of
    dead ReLU units (0 for every example) and of saturated tanh/sigmoid outputs."""
    model = ctx.fresh()
    X, _ = ctx.examples(256)
    stack: list[str] = []
    handles = []
    for name, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(lambda m, a, name=name: stack.append(name) and None))
        handles.append(m.register_forward_hook(lambda m, a, o: stack.pop() and None))  # hooks must return None
    tracer = _ActivationTracer(stack)
    try:
        with torch.no_grad(), tracer:
            model(X)
    finally:
        for h in handles:
            h.remove()
    if not tracer.sites:
        return [Finding("activations", "info", "no relu, tanh or sigmoid call seen in the forward pass: nothing to "
                        "check", {})]
    sites, seen = [], {}
    for module, kind, out in tracer.sites:
        key = f"{module or '(model)'}: {kind}"
        seen[key] = seen.get(key, 0) + 1
        name = key if seen[key] == 1 else f"{key} #{seen[key]}"
        if kind == "relu":
            units = _units(out)
            value = float((units.amax(dim=1) <= 0).double().mean())         # dead units
        elif kind == "tanh":
            value = float((out.abs() > 0.99).double().mean())              # saturated values
        else:
            value = float(((out < 0.01) | (out > 0.99)).double().mean())
        sites.append((name, kind, value))
    evidence = {"examples": len(X), "dead_fraction": {n: v for n, k, v in sites if k == "relu"},
                "saturated_fraction": {n: v for n, k, v in sites if k != "relu"}}
    fig, ax = _figure(6, 0.3 * len(sites) + 1.4)
    ax.barh(range(len(sites)), [100 * v for _, _, v in sites],
            color=["tab:red" if v > (DEAD_FRACTION if k == "relu" else SATURATED_FRACTION) else "tab:blue"
                   for _, k, v in sites])
    ax.set_yticks(range(len(sites)), [n for n, _, _ in sites], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(100 * DEAD_FRACTION, color="gray", linestyle="--")
    ax.set(xlim=(0, 100), xlabel="% dead units (relu) / saturated values (tanh, sigmoid)",
           title="activations at initialisation")
    fig = _done(fig)
    findings = []
    dead = [(n, v) for n, k, v in sites if k == "relu" and v > DEAD_FRACTION]
    if dead:
        worst = max(v for _, v in dead)
        findings.append(Finding("activations", "error" if worst == 1.0 else "warning",
                                f"dead ReLUs: {', '.join(f'{n} {_pct(v)}' for n, v in dead[:4])} of units output 0 "
                                f"for all {len(X)} examples", evidence,
                                "a dead unit gets no gradient and never recovers: check the initialisation (a large "
                                "negative bias, or weights far too large), the input scale, and the lr; use the "
                                "default or kaiming initialisation with zero biases", fig))
    saturated = [(n, v) for n, k, v in sites if k != "relu" and v > SATURATED_FRACTION]
    if saturated:
        findings.append(Finding("activations", "warning", f"saturated activations: "
                                f"{', '.join(f'{n} {_pct(v)}' for n, v in saturated[:4])} of outputs sit on the flat "
                                "part of the curve, where the gradient is nearly 0", evidence,
                                "scale the inputs and the initial weights down (xavier/glorot initialisation for "
                                "tanh/sigmoid), or switch to ReLU-family activations", fig))
    if not findings:
        relu = [v for _, k, v in sites if k == "relu"]
        findings.append(Finding("activations", "ok", f"{len(sites)} activation{'s' * (len(sites) != 1)} healthy" +
                                (f": at most {_pct(max(relu))} dead ReLU units" if relu else ""), evidence,
                                figure=fig))
    return findings


def _nonfinite(value) -> bool:
    tensors = value if isinstance(value, (tuple, list)) else [value]
    return any(isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())
               for t in tensors)


def _user_frame(traceback_text: str) -> str | None:
    """The innermost frame of an anomaly-mode forward traceback that is neither torch's nor the doctor's own code,
    as "file.py:12 in forward: h = self.hidden(X)"."""
    frames = re.findall(r'File "(.+?)", line (\d+), in (\S+)\n\s+(.+)', traceback_text)
    mine = ("site-packages/torch/", "dlcourse/doctor.py", "dlcourse/diagnose.py")
    users = [f for f in frames if not any(part in f[0].replace("\\", "/") for part in mine)]
    if not users:
        return None
    path, line, function, code = users[-1]
    return f"{path.replace(chr(92), '/').rsplit('/', 1)[-1]}:{line} in {function}: {code.strip()}"


def _check_non_finite(ctx: _Context) -> list[Finding]:
    """NONFINITE_STEPS training steps with forward hooks on every module: the first module whose output holds nan
    or inf (and whether its inputs were still finite), a non-finite loss from finite outputs, non-finite gradients
    (the first step runs in autograd's anomaly mode, which names the backward function) and weights. A nan that
    only appears later, while overfit_batch trained, is located by the same hooks and reported here too."""
    model = ctx.fresh()
    opt = ctx.optimizer(model)
    evidence: dict = {}
    fix_forward = ("look for log of 0 (add an eps or use log_softmax / logsumexp), division by a value that can be 0 "
                   "(add an eps), or exp of large values; if it only appears after many steps, also lower the lr")
    with _NanWatch(model) as watch:
        for step in range(1, NONFINITE_STEPS + 1):
            X, y = ctx.batch(step - 1)
            watch.step = evidence["step"] = step
            if _nonfinite(X):
                return [Finding("non_finite", "error", f"the input batch already contains nan/inf (step {step}), "
                                "before any module", evidence,
                                "fix the data (see the inputs check): a division by a zero std, a log of 0, missing "
                                "values")]
            anomaly, seen = None, []

            def recording_loss(y_hat, y):   # the user's loss, remembering its value
                loss = ctx.loss_fn(y_hat, y)
                seen.append(_value(loss))
                return loss

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    with torch.autograd.set_detect_anomaly(step == 1, check_nan=True):
                        loss = ctx.step(model, opt, X, y, recording_loss)
                except RuntimeError as e:
                    if "nan values" not in str(e):
                        raise
                    anomaly = str(e)
                    loss = seen[-1] if seen else float("nan")
            if watch.first:
                evidence.update(watch.first)
                return [Finding("non_finite", "error", f"{watch.describe()} at step {step}", evidence, fix_forward)]
            if not _finite(loss):
                evidence["loss"] = loss
                return [Finding("non_finite", "error", f"the loss is {loss} at step {step} although the model's "
                                "outputs are finite: the loss function produces it", evidence,
                                "log of 0 or division by 0 in the loss: use F.cross_entropy / log_softmax instead of "
                                "log(softmax(...)), or clamp (x.clamp_min(1e-12)) before log")]
            if anomaly is not None:
                function = anomaly.split("'")[1] if anomaly.count("'") >= 2 else "a backward function"
                trace = [str(w.message) for w in caught if "Traceback of forward call" in str(w.message)]
                evidence.update(backward_function=function, anomaly=anomaly,
                                forward_call=_user_frame(trace[0]) if trace else None)
                where = f" (its forward call: {evidence['forward_call']})" if evidence["forward_call"] else ""
                return [Finding("non_finite", "error", f"the backward pass produces nan in {function} at step "
                                f"{step} although every forward value was finite{where}", evidence,
                                "a gradient is infinite where the forward value is finite, at this operation or "
                                "just before it in the backward pass: sqrt(x) or x ** 0.5 at 0, log(0), a division "
                                "by 0 -- add an eps inside the function (e.g. torch.sqrt(x + 1e-12))")]
            bad_grads = [n for n, p in model.named_parameters() if p.grad is not None and
                         not bool(torch.isfinite(p.grad).all())]
            if bad_grads:
                evidence["params"] = bad_grads[:5]
                return [Finding("non_finite", "error", f"non-finite gradients in {_names(bad_grads)} at step {step}",
                                evidence, "a gradient overflows: lower the lr, clip gradients, add eps to "
                                "divisions/sqrt/log")]
            bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
            if bad:
                evidence["params"] = bad[:5]
                return [Finding("non_finite", "error", f"the weights became nan/inf at step {step} "
                                f"({_names(bad)})", evidence, "the update blew up: lower the lr (see lr_range) or "
                                "clip gradients")]
    later = ctx.notes.get("overfit", {}).get("nan_origin")
    if later:
        evidence.update(later)
        return [Finding("non_finite", "error", f"{ctx.notes['overfit']['nan_text']} at step {later['step']} of "
                        f"overfit_batch (the first {NONFINITE_STEPS} steps here stayed finite)", evidence,
                        fix_forward)]
    return [Finding("non_finite", "ok", f"{NONFINITE_STEPS} training steps: outputs, losses, gradients and weights "
                    "all finite", evidence)]


def _check_lr_range(ctx: _Context) -> list[Finding]:
    """Is the optimizer's lr far too high or too low? Short runs (LR_PROBE_STEPS steps of the user's step, same
    start) at the lr times 1, 10, 100, 1000 find where training blows up (see LR_TOO_HIGH, LR_LOW_PROGRESS,
    LR_BLOWUP), and the LR range test (notebook 04) draws the loss against the lr. A loss that falls at no probed
    lr is reported as "info" (the lr is not the problem), never as a blow-up."""
    from .diagnose import lr_range_test

    base = ctx.fresh()
    lr = ctx.optimizer(base).param_groups[0]["lr"]
    Xp, yp = ctx.examples(2 * STEP_EXAMPLES)
    before, _ = _score(ctx, base, Xp, yp)
    runs: dict[float, float] = {}

    def probe(factor: float) -> None:
        """Train LR_PROBE_STEPS steps at lr * factor; record the loss on the probe batch (inf when not finite)."""
        model = copy.deepcopy(base)
        opt = ctx.optimizer(model)
        for group in opt.param_groups:
            group["lr"] = group["lr"] * factor
        for step in range(LR_PROBE_STEPS):
            if not _finite(ctx.step(model, opt, *ctx.batch(step))):
                runs[factor] = float("inf")
                return
        after, _ = _score(ctx, model, Xp, yp)
        runs[factor] = after if _finite(after) else float("inf")

    def trains(factor: float) -> bool:        # the loss clearly fell
        return runs[factor] < before * (1 - LR_LOW_PROGRESS)

    def blows_up(factor: float) -> bool:      # the loss is not finite or clearly rose: not just "did not fall"
        return not _finite(runs[factor]) or runs[factor] > before + LR_BLOWUP * abs(before)

    def search_smaller() -> None:             # a smaller lr that trains?
        factor = 1.0
        while factor > 1e-3 and not trains(factor):
            factor /= 10
            probe(factor)

    if not _finite(before):
        return [Finding("lr_range", "info", f"the loss is {before} before training: no lr can be judged (see "
                        "non_finite)", {"lr": lr, "loss_before": before})]
    blew_at = None
    probe(1.0)
    fails = runs[1.0] >= before or blows_up(1.0)          # the user's lr does not lower the loss at all
    if fails:
        search_smaller()
        blew_at = 1.0 if blows_up(1.0) else None
    else:
        for factor in (10.0, 100.0, 1000.0):
            probe(factor)
            if blows_up(factor):
                blew_at = factor
                break
        if blew_at == 10.0:
            probe(LR_TOO_HIGH)
            if blows_up(LR_TOO_HIGH):
                blew_at = LR_TOO_HIGH
        if blew_at is not None and blew_at <= LR_TOO_HIGH and not trains(1.0):
            search_smaller()                              # close to the edge and barely training: smaller?
    progress = (before - runs[1.0]) / before if _finite(runs[1.0]) and before > 0 else 0.0
    training = sorted(f for f in runs if trains(f))      # lrs that clearly train
    evidence: dict = {"lr": lr, "probe_steps": LR_PROBE_STEPS, "loss_before": before,
                      "loss_after": {f"{lr * f:.3g}": v for f, v in sorted(runs.items())},
                      "blows_up_at_factor": blew_at, "trains_at_factors": training, "progress_at_lr": progress}
    sweep = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batches = [ctx.batch(i) for i in range(len(ctx.batches))]
            sweep = lr_range_test(copy.deepcopy(base), ctx.optimizer_factory, batches, ctx.loss_fn,
                                  start_lr=lr / 1e3, end_lr=lr * 1e3, num_steps=LR_SWEEP_STEPS, smooth=0.1,
                                  device=ctx.device, train_step=ctx.train_step)
        evidence.update(sweep_suggestion=sweep.suggestion, sweep_min_loss_lr=sweep.min_loss_lr)
    except Exception as e:  # the verdict does not depend on the sweep; say why there is no curve
        evidence["sweep_error"] = f"{type(e).__name__}: {e}"
    fig = _lr_figure(lr, before, runs, sweep)
    tried = f"{lr * min(runs):.2g} to {lr * max(runs):.2g}"
    if not training:
        rises = f"; the loss rises clearly only from {lr * blew_at:.2g} up" if blew_at else ""
        return [Finding("lr_range", "info", f"no probed lr ({tried}) lowers the loss in {LR_PROBE_STEPS} steps "
                        f"(loss {before:.3f} -> {runs[1.0]:.3g} at your lr){rises}: the lr is not what stops "
                        "training -- see the other findings (overfit_batch, learnability, initial_loss)", evidence,
                        figure=fig)]
    smaller = [f for f in training if f < 1]
    if (fails or (blew_at is not None and blew_at <= LR_TOO_HIGH and not trains(1.0))) and smaller:
        best = max(smaller)
        what = f"went from {before:.3f} to {runs[1.0]:.3g}" if blew_at in (None, 1.0) else \
            f"blew up at {blew_at:.2g}x this lr ({before:.3f} -> {runs[blew_at]:.3g}) and barely fell at this lr " \
            f"({runs[1.0]:.3f})"
        return [Finding("lr_range", "error", f"lr {lr:g} is too high: in {LR_PROBE_STEPS} steps the loss {what}; "
                        f"at lr {lr * best:.2g} it fell to {runs[best]:.3f}",
                        evidence, f"use about {lr * best:.2g} (or lower); if you wrote your own train_step, check "
                        "that it calls optimizer.zero_grad() every step (accumulating gradients act like a growing "
                        "lr)", fig)]
    if blew_at is not None and blew_at <= LR_TOO_HIGH and trains(1.0):
        return [Finding("lr_range", "warning", f"lr {lr:g} is close to the edge: training already blows up at "
                        f"{blew_at:.2g}x this lr (loss {before:.3f} -> {runs[blew_at]:.3g})", evidence,
                        f"use about a tenth of the lr where training blows up: ~{lr * blew_at / 10:.2g}", fig)]
    larger = [f for f in training if f > 1]
    stalls = any(runs[f] >= before for f in runs if f > 1)     # a larger lr that does not lower the loss at all
    if blew_at is None and not stalls and progress < LR_LOW_PROGRESS and larger:
        best = min(larger, key=lambda f: runs[f])
        return [Finding("lr_range", "warning", f"lr {lr:g} is too low: {LR_PROBE_STEPS} steps moved the loss by "
                        f"{_pct(progress)} ({before:.3f} -> {runs[1.0]:.3f}) while {best:.0f}x the lr brought it to "
                        f"{runs[best]:.3f}; training does not blow up even at 1000x", evidence,
                        f"raise the lr 10-100x (try {lr * 10:.2g} to {lr * 100:.2g})" +
                        (f"; the range test's steepest descent is at {sweep.suggestion:.2g}" if sweep else ""), fig)]
    where = f"blows up at {blew_at:g}x" if blew_at else "does not blow up even at 1000x"
    return [Finding("lr_range", "ok", f"lr {lr:g} trains ({before:.3f} -> {runs[1.0]:.3f} in {LR_PROBE_STEPS} "
                    f"steps) and training {where} this lr", evidence, figure=fig)]


def _lr_figure(lr: float, before: float, runs: dict[float, float], sweep) -> Figure:
    fig, (left, right) = _figure(10, 3.4, ncols=2)
    if sweep is not None:
        left.plot(sweep.lrs, sweep.losses, color="tab:blue", alpha=0.3, label="loss (each batch)")
        left.plot(sweep.lrs, sweep.smoothed, color="tab:blue", label="smoothed")
        left.axvline(sweep.suggestion, color="tab:green", linestyle="--", label=f"steepest {sweep.suggestion:.1e}")
    left.axvline(lr, color="tab:red", label=f"your lr {lr:.1e}")
    left.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="LR range test")
    left.legend(fontsize=7)
    factors = sorted(runs)
    finite = [runs[f] if _finite(runs[f]) else float("nan") for f in factors]
    right.plot([lr * f for f in factors], finite, "o-", color="tab:purple", label=f"after {LR_PROBE_STEPS} steps")
    right.axhline(before, color="gray", linestyle=":", label="before training")
    right.axvline(lr, color="tab:red", label="your lr")
    right.set(xscale="log", xlabel="learning rate", ylabel="loss on a fixed batch", title="short runs per lr",
              xlim=(lr * min(factors) / 3, lr * max(factors) * 3))
    right.legend(fontsize=7)
    return _done(fig)


_MODE_MODULES = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


class _Replay:
    """A bounded, fixed list of batches that otherwise looks like the loader it came from (dataset, batch_size)."""

    def __init__(self, batches: list, source) -> None:
        self._batches, self._source = batches, source

    def __iter__(self):
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)

    def __getattr__(self, name: str):
        return getattr(self._source, name)


def _check_eval_mode(ctx: _Context) -> list[Finding]:
    """With evaluate_fn: pre-hooks on every Dropout/BatchNorm module record whether they run in training mode during
    the user's evaluation, which is called twice on the same data (results must agree). Without it: two eval-mode
    forward passes must give identical outputs."""
    model = ctx.fresh()
    modes = [(name, m) for name, m in model.named_modules() if isinstance(m, _MODE_MODULES)]
    evidence: dict = {"dropout_batchnorm_modules": len(modes)}
    if ctx.evaluate_fn is None:
        X, _ = ctx.examples(STEP_EXAMPLES)
        model.eval()
        with torch.no_grad():
            same = bool(torch.equal(torch.nan_to_num(model(X)), torch.nan_to_num(model(X))))
        evidence["eval_outputs_repeat"] = same
        if not same:
            return [Finding("eval_mode", "warning", "in eval mode the model gives different outputs for the same "
                            "inputs: something random ignores model.eval()", evidence,
                            "use nn.Dropout modules, or pass training=self.training to F.dropout")]
        what = f"{len(modes)} Dropout/BatchNorm modules" if modes else "no Dropout/BatchNorm modules"
        return [Finding("eval_mode", "info", f"model.eval() gives deterministic outputs ({what}); pass "
                        "evaluate_fn=... to check your evaluation code", evidence)]
    source = ctx.val_loader if ctx.val_loader is not None else ctx.train_loader
    batches = ctx.val_batches if ctx.val_batches is not None else ctx.batches
    kept, count = [], 0
    for X, y in batches:
        kept.append((X.to(ctx.device), y.to(ctx.device)))
        count += len(X)
        if count >= EVAL_EXAMPLES:
            break
    loader = _Replay(kept, source)
    calls: list[tuple[str, bool]] = []
    handles = [m.register_forward_pre_hook(lambda m, a, name=name: calls.append((name, m.training)))
               for name, m in modes]
    try:
        first = ctx.evaluate_fn(model, loader)
        second = ctx.evaluate_fn(model, loader)
    finally:
        for h in handles:
            h.remove()
    in_train = sorted({name for name, training in calls if training})
    evidence.update(results=[_plain(first), _plain(second)], modules_in_train_mode=in_train,
                    module_calls=len(calls))
    if in_train:
        kinds = sorted({type(dict(modes)[n]).__name__ for n in in_train})
        return [Finding("eval_mode", "error", f"evaluate_fn runs {len(in_train)} {'/'.join(kinds)} module(s) in "
                        f"training mode (e.g. '{in_train[0]}'): dropout makes the evaluation random and BatchNorm "
                        "updates its statistics with evaluation data", evidence,
                        "call model.eval() at the start of the evaluation (and model.train() before training "
                        "again); evaluate under torch.no_grad()")]
    if _plain(first) != _plain(second):
        return [Finding("eval_mode", "warning", f"evaluate_fn gives different results on the same data ({first} vs "
                        f"{second})", evidence,
                        "something random runs in evaluation: F.dropout without training=self.training, random "
                        "augmentation in the validation pipeline, or a shuffled subset")]
    if not modes:
        return [Finding("eval_mode", "ok", "evaluate_fn is deterministic (the model has no Dropout/BatchNorm)",
                        evidence)]
    return [Finding("eval_mode", "ok", f"evaluate_fn runs all {len(modes)} Dropout/BatchNorm modules in eval mode "
                    f"and is deterministic ({first})", evidence)]


_CHECK_FUNCTIONS = {"labels": _check_labels, "inputs": _check_inputs, "leakage": _check_leakage,
                    "shuffling": _check_shuffling, "initial_loss": _check_initial_loss,
                    "overfit_batch": _check_overfit_batch, "learnability": _check_learnability,
                    "gradient_flow": _check_gradient_flow, "activations": _check_activations,
                    "non_finite": _check_non_finite, "lr_range": _check_lr_range, "eval_mode": _check_eval_mode}


def doctor(model: nn.Module, train_loader: Iterable, loss_fn: LossFn = F.cross_entropy,
           optimizer_factory: OptimizerFactory = lambda params: torch.optim.SGD(params, lr=0.1), *,
           val_loader: Iterable | None = None, train_step: TrainStep | None = None,
           evaluate_fn: Callable[[nn.Module, Iterable], float] | None = None, num_classes: int | None = None,
           checks: Sequence[str] | None = None, device: torch.device | str | None = None, seed: int = 0,
           progress: bool = True) -> Report:
    """Run the training doctor's checks (all of :data:`CHECKS`, in that order, or those named in ``checks``) on a
    training set-up and return a :class:`Report`.

    ``model`` is the untrained model (the doctor works on deep copies: the caller's model is untouched);
    ``train_loader`` yields (X, y); ``optimizer_factory(params)`` builds the optimizer you train with.
    ``train_step(model, optimizer, X, y, loss_fn) -> loss`` is your own step, if you have one: overfit_batch,
    learnability, gradient_flow, non_finite and lr_range run it, so bugs inside it (a missing zero_grad, a detached
    loss) show. ``evaluate_fn(model, loader) -> accuracy`` is your evaluation code, checked for train/eval mode
    mistakes. ``val_loader`` enables the train/validation comparisons. ``num_classes`` defaults to the model's
    output width (or the largest label + 1).

    Deterministic for a given ``seed``: torch's random state and the loaders' generators are seeded inside and
    restored afterwards. Each check catches its own failures: an exception raised by your code inside a check
    becomes an "error" finding. Thresholds are the module's constants (e.g. :data:`DEAD_FRACTION`).
    """
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; the checks are {', '.join(CHECKS)}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, not {type(model).__name__}")
    device = torch.device(device) if device is not None else model_device(model)
    generators = _loader_generators(train_loader) + (_loader_generators(val_loader) if val_loader is not None
                                                     else [])
    states = [g.get_state() for g in generators]
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    report = Report()
    try:
        with torch.random.fork_rng(devices=rng_devices), warnings.catch_warnings():
            # F.mse_loss warns about (N, 1) vs (N,) on every call; initial_loss reports that once, as a finding
            warnings.filterwarnings("ignore", message="Using a target size")
            torch.manual_seed(seed)
            for g in generators:
                g.manual_seed(seed)
            ctx = _build_context(model, train_loader, loss_fn, optimizer_factory, val_loader, train_step,
                                 evaluate_fn, num_classes, device, seed)
            for i, name in enumerate([n for n in CHECKS if n in names], start=1):
                torch.manual_seed(seed)
                start = time.perf_counter()
                findings = _run_check(ctx, name)
                report.findings += findings
                report.seconds[name] = time.perf_counter() - start
                if progress:
                    flagged = [f for f in findings if f.flagged]
                    worst = max(flagged, key=lambda f: SEVERITIES.index(f.severity)) if flagged else findings[0]
                    print(f"doctor [{i:2d}] {name:<14} {_MARK[worst.severity]:<7} {worst.message} "
                          f"({report.seconds[name]:.1f} s)", flush=True)
    finally:
        for g, state in zip(generators, states):
            g.set_state(state)
    return report


def _run_check(ctx: _Context, name: str) -> list[Finding]:
    """Run one check; an exception (usually from the user's model, loss or step) becomes an error finding."""
    try:
        if ctx.setup_error is not None and name not in ("labels", "inputs", "leakage", "shuffling"):
            raise ctx.setup_error
        return _CHECK_FUNCTIONS[name](ctx)
    except Exception as error:  # report it: a crash in the user's code is a finding too
        detached = "does not require grad" in str(error)
        return [Finding(name, "error", f"the check could not run: {type(error).__name__}: {error}",
                        {"exception": f"{type(error).__name__}: {error}"},
                        "backward() got a loss that is not connected to the model's parameters: remove the "
                        ".detach() / .item() / torch.no_grad() between the forward pass and the loss" if detached else
                        "this error comes from the model, the loss or the step as used here: run one training step "
                        "by hand to see the full traceback")]


def _build_context(model, train_loader, loss_fn, optimizer_factory, val_loader, train_step, evaluate_fn,
                   num_classes, device, seed) -> _Context:
    """Copy the model, scan the data and work out the task (classification? how many classes? cross-entropy?)."""
    pristine = copy.deepcopy(model).to(device)
    batches = _scan(train_loader, SCAN_EXAMPLES, "train_loader")
    val_batches = _scan(val_loader, SCAN_EXAMPLES, "val_loader") if val_loader is not None else None
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
        _is_cross_entropy(loss_fn, y_hat, y0[:STEP_EXAMPLES].to(device))
    return _Context(pristine, train_loader, val_loader, loss_fn, optimizer_factory, train_step, evaluate_fn, device,
                    seed, batches, val_batches, classification, num_classes, cross_entropy, setup_error)
