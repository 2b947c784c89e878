"""The doctor's ``lr_range`` check: is the optimizer's learning rate far too high or too low? Short runs at the
user's lr times 1, 10, 100, 1000 give the verdict; the LR range test (:mod:`dlcourse.diagnose.lr_range`) draws
the loss against the lr next to them.
"""

from __future__ import annotations

import copy
import warnings

from matplotlib.figure import Figure

from .context import STEP_EXAMPLES, Context, close_figure, finite, new_figure, pct, score
from .lr_range import lr_range_test
from .report import Finding

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


def check_lr_range(ctx: Context) -> list[Finding]:
    """Is the optimizer's lr far too high or too low? Short runs (LR_PROBE_STEPS steps of the user's step, same
    start) at the lr times 1, 10, 100, 1000 find where training blows up (see LR_TOO_HIGH, LR_LOW_PROGRESS,
    LR_BLOWUP), and the LR range test (notebook 04) draws the loss against the lr. A loss that falls at no probed
    lr is reported as "info" (the lr is not the problem), never as a blow-up."""
    base = ctx.fresh()
    lr = ctx.optimizer(base).param_groups[0]["lr"]
    Xp, yp = ctx.examples(2 * STEP_EXAMPLES)
    before, _ = score(ctx, base, Xp, yp)
    runs: dict[float, float] = {}

    def probe(factor: float) -> None:
        """Train LR_PROBE_STEPS steps at lr * factor; record the loss on the probe batch (inf when not finite)."""
        model = copy.deepcopy(base)
        opt = ctx.optimizer(model)
        for group in opt.param_groups:
            group["lr"] = group["lr"] * factor
        for step in range(LR_PROBE_STEPS):
            if not finite(ctx.step(model, opt, *ctx.batch(step))):
                runs[factor] = float("inf")
                return
        after, _ = score(ctx, model, Xp, yp)
        runs[factor] = after if finite(after) else float("inf")

    def trains(factor: float) -> bool:        # the loss clearly fell
        return runs[factor] < before * (1 - LR_LOW_PROGRESS)

    def blows_up(factor: float) -> bool:      # the loss is not finite or clearly rose: not just "did not fall"
        return not finite(runs[factor]) or runs[factor] > before + LR_BLOWUP * abs(before)

    def search_smaller() -> None:             # a smaller lr that trains?
        factor = 1.0
        while factor > 1e-3 and not trains(factor):
            factor /= 10
            probe(factor)

    if not finite(before):
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
    progress = (before - runs[1.0]) / before if finite(runs[1.0]) and before > 0 else 0.0
    training = sorted(f for f in runs if trains(f))      # lrs that clearly train
    evidence: dict = {"lr": lr, "probe_steps": LR_PROBE_STEPS, "loss_before": before,
                      "loss_after": {f"{lr * f:.3g}": v for f, v in sorted(runs.items())},
                      "blows_up_at_factor": blew_at, "trains_at_factors": training, "progress_at_lr": progress}
    sweep = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the batches the sweep takes (it cycles them when there are fewer), not every scanned batch
            batches = [ctx.batch(i) for i in range(min(len(ctx.batches), LR_SWEEP_STEPS))]
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
                        f"{pct(progress)} ({before:.3f} -> {runs[1.0]:.3f}) while {best:.0f}x the lr brought it to "
                        f"{runs[best]:.3f}; training does not blow up even at 1000x", evidence,
                        f"raise the lr 10-100x (try {lr * 10:.2g} to {lr * 100:.2g})" +
                        (f"; the range test's steepest descent is at {sweep.suggestion:.2g}" if sweep else ""), fig)]
    where = f"blows up at {blew_at:g}x" if blew_at else "does not blow up even at 1000x"
    return [Finding("lr_range", "ok", f"lr {lr:g} trains ({before:.3f} -> {runs[1.0]:.3f} in {LR_PROBE_STEPS} "
                    f"steps) and training {where} this lr", evidence, figure=fig)]


def _lr_figure(lr: float, before: float, runs: dict[float, float], sweep) -> Figure:
    fig, (left, right) = new_figure(10, 3.4, ncols=2)
    if sweep is not None:
        left.plot(sweep.lrs, sweep.losses, color="tab:blue", alpha=0.3, label="loss (each batch)")
        left.plot(sweep.lrs, sweep.smoothed, color="tab:blue", label="smoothed")
        left.axvline(sweep.suggestion, color="tab:green", linestyle="--", label=f"steepest {sweep.suggestion:.1e}")
    left.axvline(lr, color="tab:red", label=f"your lr {lr:.1e}")
    left.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="LR range test")
    left.legend(fontsize=7)
    factors = sorted(runs)
    after = [runs[f] if finite(runs[f]) else float("nan") for f in factors]
    right.plot([lr * f for f in factors], after, "o-", color="tab:purple", label=f"after {LR_PROBE_STEPS} steps")
    right.axhline(before, color="gray", linestyle=":", label="before training")
    right.axvline(lr, color="tab:red", label="your lr")
    right.set(xscale="log", xlabel="learning rate", ylabel="loss on a fixed batch", title="short runs per lr",
              xlim=(lr * min(factors) / 3, lr * max(factors) * 3))
    right.legend(fontsize=7)
    return close_figure(fig)
