"""The doctor's ``initial_loss`` check: the loss of the untrained model against its expected value (log C for
cross-entropy over C classes), what the outputs look like (a final softmax, sigmoid or ReLU) and shapes that
broadcast inside the loss (``(N, 1) - (N,) -> (N, N)``, ``log_p[:, y]``).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch.overrides import TorchFunctionMode

from .context import STEP_EXAMPLES, Context, NoDropout, finite, loss_value
from .report import Finding

#: Initial cross-entropy more than this above log C: with logits of standard deviation s at initialisation the
#: expected loss is about log C + s**2 / 2, so 0.5 means the logits already spread by about 1 -- confidently wrong.
INITIAL_LOSS_EXCESS = 0.5


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


def _broadcast_findings(ctx: Context, y_hat: torch.Tensor, y: torch.Tensor) -> list[Finding]:
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


def loss_broadcasts(ctx: Context) -> str | None:
    """The initial_loss check's broadcasting finding (its message), or None when the loss does not broadcast.
    Taken from ctx.notes when initial_loss ran; otherwise measured here on a fresh model's outputs."""
    if "broadcast" not in ctx.notes:
        X, y = ctx.examples(STEP_EXAMPLES)
        with torch.no_grad(), NoDropout(ctx.fresh()) as model:
            y_hat = model(X)
        ctx.notes["broadcast"] = [f.message for f in _broadcast_findings(ctx, y_hat, y)] \
            if isinstance(y_hat, torch.Tensor) else []
    found = ctx.notes["broadcast"]
    return found[0] if found else None


def check_initial_loss(ctx: Context) -> list[Finding]:
    """The loss before training vs its expected value (log C for cross-entropy over C classes); what the outputs
    look like (probabilities from a final softmax, only non-negative values from a final ReLU); shapes that
    broadcast inside the loss."""
    model = ctx.fresh()
    X, y = ctx.examples(512)
    with torch.no_grad():
        y_hat = torch.cat([model(X[i:i + STEP_EXAMPLES]) for i in range(0, len(X), STEP_EXAMPLES)])
        loss = loss_value(ctx.loss_fn(y_hat, y))
    findings = _broadcast_findings(ctx, y_hat[:STEP_EXAMPLES], y[:STEP_EXAMPLES])
    ctx.notes["broadcast"] = [f.message for f in findings]   # learnability reads it
    evidence: dict = {"initial_loss": loss, "examples": len(X), "y_hat_shape": list(y_hat.shape[1:])}
    if not finite(loss):
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
