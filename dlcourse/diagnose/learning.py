"""The doctor's training checks: ``overfit_batch`` (can the user's step memorise one small batch? do gradients
accumulate across steps?) and ``learnability`` (does training on some batches improve examples never trained on?
-- the check that sees labels shuffled apart from their inputs).
"""

from __future__ import annotations

import math

import torch

from .context import STEP_EXAMPLES, Context, close_figure, finite, new_figure, pct, score
from .loss import loss_broadcasts
from .numerics import NanWatch
from .report import Finding

#: Overfit one batch: OVERFIT_EXAMPLES examples, at most OVERFIT_STEPS steps of the user's step and optimizer; it
#: passes with 100 % accuracy and the loss down to OVERFIT_TARGET times its starting value.
OVERFIT_EXAMPLES, OVERFIT_STEPS, OVERFIT_TARGET = 16, 200, 0.1
#: Learnability: train LEARN_STEPS steps on some batches, then score LEARN_HOLDOUT examples never trained on. It
#: passes when their accuracy beats always predicting the most frequent class by 3 standard errors, or their loss
#: beats predicting the class frequencies by LEARN_MARGIN (relative).
LEARN_STEPS, LEARN_HOLDOUT, LEARN_MARGIN = 30, 256, 0.02


def _accumulation(ctx: Context) -> dict:
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


def _overfit(ctx: Context) -> dict:
    """Train a fresh copy on one batch of OVERFIT_EXAMPLES for up to OVERFIT_STEPS steps (cached in ctx.notes)."""
    if "overfit" in ctx.notes:
        return ctx.notes["overfit"]
    X, y = ctx.batch(0, OVERFIT_EXAMPLES)
    model = ctx.fresh()
    opt = ctx.optimizer(model)
    start, acc0 = score(ctx, model, X, y)
    before = [p.detach().clone() for p in model.parameters()]
    losses: list[float] = []
    scores: list[tuple[int, float, float | None]] = [(0, start, acc0)]
    passed = False
    with NanWatch(model) as watch:
        for step in range(1, OVERFIT_STEPS + 1):
            watch.step = step
            losses.append(ctx.step(model, opt, X, y))
            if not finite(losses[-1]):
                break
            if step % 10 == 0:
                scores.append((step, *score(ctx, model, X, y)))
                _, loss, acc = scores[-1]
                passed = loss <= OVERFIT_TARGET * start and (acc is None or acc == 1.0)
                if passed:
                    break
    finite_losses = [v for v in losses if finite(v)]
    final, acc = score(ctx, model, X, y) if losses and finite(losses[-1]) else (float("nan"), None)
    moved = max((float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before)), default=0.0)
    best = min(finite_losses, default=start)
    result = {"examples": len(X), "steps": len(losses), "start_loss": start, "final_loss": final, "final_acc": acc,
              "min_loss": best, "lr": opt.param_groups[0]["lr"], "max_weight_change": moved,
              "target_loss": OVERFIT_TARGET * start, "passed": passed, "losses": losses, "scores": scores,
              # how much of the starting loss the batch lost: memorising works when this is large
              "progress": (start - best) / start if finite(start) and start > 0 else 0.0,
              "nan_origin": watch.first, "nan_text": watch.describe() if watch.first else None}
    ctx.notes["overfit"] = result
    return result


def check_overfit_batch(ctx: Context) -> list[Finding]:
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
    fig, ax = new_figure()
    shown = [v if finite(v) else float("nan") for v in r["losses"]]
    ax.plot(range(1, len(shown) + 1), shown, label="loss at each step")
    if finite(r["target_loss"]):
        ax.axhline(r["target_loss"], color="tab:green", linestyle="--", label="target")
    if any(finite(v) and v > 0 for v in shown):
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="loss on the batch", title=f"overfitting one batch of {r['examples']}")
    ax.legend(fontsize=8)
    fig = close_figure(fig)
    what, start, final, steps = f"a batch of {r['examples']}", r["start_loss"], r["final_loss"], r["steps"]
    acc = r["final_acc"]
    if not finite(start):
        findings.append(Finding("overfit_batch", "error", f"the loss is {start} before training", evidence,
                                "see the non_finite check", fig))
    elif not r["losses"] or not finite(r["losses"][-1]):
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
                                f"{final:.4f}" + (f", accuracy {pct(acc)}" if acc is not None else ""), evidence,
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
                                    f"{start:.3f} -> {final:.3f}" + (f", accuracy {pct(acc)}" if acc is not None
                                                                     else ""), evidence,
                                    "a healthy set-up memorises a few examples quickly: check the lr (lr_range), "
                                    "the model's capacity, and bugs in the step", fig))
    return findings


def check_learnability(ctx: Context) -> list[Finding]:
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
    loss0, acc0 = score(ctx, model, Xh, yh)
    losses = []
    for step in range(LEARN_STEPS):
        X, y = train[step % len(train)]
        losses.append(ctx.step(model, opt, X[:STEP_EXAMPLES].to(ctx.device), y[:STEP_EXAMPLES].to(ctx.device)))
        if not finite(losses[-1]):
            break
    loss1, acc1 = score(ctx, model, Xh, yh)
    trained_y = torch.cat([y[:STEP_EXAMPLES] for _, y in train[:LEARN_STEPS]])
    evidence: dict = {"steps": len(losses), "held_out": len(Xh), "held_out_loss_before": loss0,
                      "held_out_loss_after": loss1, "held_out_acc_before": acc0, "held_out_acc_after": acc1}
    learned, baseline_text = _beats_baseline(ctx, trained_y, yh, loss1, acc1, evidence, loss0)
    val_learned = None
    if ctx.val_batches is not None and learned:
        Xv, yv = ctx.examples(LEARN_HOLDOUT, ctx.val_batches)
        vloss0, _ = score(ctx, ctx.fresh(), Xv, yv)
        vloss, vacc = score(ctx, model, Xv, yv)
        val_evidence: dict = {}
        val_learned, _ = _beats_baseline(ctx, trained_y, yv, vloss, vacc, val_evidence, vloss0)
        evidence.update({f"val_{k}": v for k, v in val_evidence.items()}, val_examples=len(Xv),
                        val_loss_before=vloss0, val_loss_after=vloss, val_acc_after=vacc)
    if not finite(loss1):
        return [Finding("learnability", "error", f"the loss became non-finite after {len(losses)} steps", evidence,
                        "see the non_finite and lr_range checks")]
    broken = loss_broadcasts(ctx)          # measured after training: the numbers above do not depend on it
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
            f", accuracy {pct(evidence['val_acc_after'])}" if evidence["val_acc_after"] is not None else "")
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
        (f", accuracy {pct(acc0)} -> {pct(acc1)}" if acc1 is not None else "")
    return [Finding("learnability", "ok", message, evidence)]


def _measured(evidence: dict) -> str:
    """What learnability measured on the held-out training examples, in words (no verdict)."""
    acc0, acc1 = evidence["held_out_acc_before"], evidence["held_out_acc_after"]
    return f"after {evidence['steps']} steps, {evidence['held_out']} unseen training examples went from loss " \
        f"{evidence['held_out_loss_before']:.3f} to {evidence['held_out_loss_after']:.3f}" + \
        (f", accuracy {pct(acc0)} to {pct(acc1)}" if acc1 is not None else "")


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
    vgain = (vloss0 - vloss1) / abs(vloss0) if vloss0 and finite(vloss0) else 0.0
    return gain > 0 and vgain < 0.5 * gain


def _beats_baseline(ctx: Context, trained_y: torch.Tensor, y: torch.Tensor, loss: float, acc: float | None,
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
        return learned, f"guessing from the class frequencies (accuracy {pct(chance)}, loss {baseline:.3f})"
    if ctx.classification:
        chance = float((y == int(torch.bincount(trained_y.cpu()).argmax())).double().mean())
        margin = 3 * math.sqrt(max(chance * (1 - chance), 1e-4) / len(y))
        evidence.update(chance_acc=chance, acc_needed=chance + margin)
        return acc is not None and acc > chance + margin, f"always guessing the most frequent class ({pct(chance)})"
    evidence.update(loss_needed=(1 - 10 * LEARN_MARGIN) * loss_before)
    return loss < (1 - 10 * LEARN_MARGIN) * loss_before, f"its starting loss ({loss_before:.4g})"
