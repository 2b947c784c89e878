"""The training doctor itself: :func:`doctor` runs, in order, the checks an experienced engineer runs on a training
set-up that misbehaves, and collects their findings in a :class:`~dlcourse.diagnose.report.Report`. The registry,
:data:`CHECK_FUNCTIONS`, maps each name of :data:`~dlcourse.diagnose.report.CHECKS` to a function
``check(ctx) -> list[Finding]`` of the shared :class:`~dlcourse.diagnose.context.Context`:

- data (:mod:`.data`): ``labels``, ``inputs``, ``leakage``, ``shuffling``;
- model and step: ``initial_loss`` (:mod:`.loss`), ``overfit_batch`` and ``learnability`` (:mod:`.learning`),
  ``gradient_flow`` and ``activations`` (:mod:`.gradients`), ``non_finite`` (:mod:`.numerics`), ``lr_range``
  (:mod:`.learning_rate`), ``eval_mode`` (:mod:`.eval_mode`).

Checks that train run on deep copies with the user's optimizer factory and train step, for a bounded number of steps
(at most OVERFIT_STEPS, LEARN_STEPS, 4-5 x LR_PROBE_STEPS + LR_SWEEP_STEPS), on at most STEP_EXAMPLES examples a
step, so the whole doctor takes seconds on a small model (``benchmarks/doctor_time.py`` measures it).
"""

from __future__ import annotations

import time
import warnings
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..train import model_device
from .context import Context, LossFn, OptimizerFactory, TrainStep, build_context, loader_generators
from .data import check_inputs, check_labels, check_leakage, check_shuffling
from .eval_mode import check_eval_mode
from .gradients import check_activations, check_gradient_flow
from .learning import check_learnability, check_overfit_batch
from .learning_rate import check_lr_range
from .loss import check_initial_loss
from .numerics import check_non_finite
from .report import CHECKS, MARK, SEVERITIES, Finding, Report

#: The registry: each check's name (:data:`CHECKS`) and the function that runs it on a Context.
CHECK_FUNCTIONS: dict[str, Callable[[Context], list[Finding]]] = {
    "labels": check_labels, "inputs": check_inputs, "leakage": check_leakage, "shuffling": check_shuffling,
    "initial_loss": check_initial_loss, "overfit_batch": check_overfit_batch, "learnability": check_learnability,
    "gradient_flow": check_gradient_flow, "activations": check_activations, "non_finite": check_non_finite,
    "lr_range": check_lr_range, "eval_mode": check_eval_mode}
assert tuple(CHECK_FUNCTIONS) == CHECKS, "the registry must list every check, in the order of CHECKS"
#: The checks that only read the scanned data: they run even when the model cannot take a batch.
DATA_CHECKS = ("labels", "inputs", "leakage", "shuffling")


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
    becomes an "error" finding. Thresholds are constants of each check's module (e.g.
    :data:`dlcourse.diagnose.gradients.DEAD_FRACTION`).
    """
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; the checks are {', '.join(CHECKS)}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, not {type(model).__name__}")
    device = torch.device(device) if device is not None else model_device(model)
    generators = loader_generators(train_loader) + (loader_generators(val_loader) if val_loader is not None
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
            ctx = build_context(model, train_loader, loss_fn, optimizer_factory, val_loader, train_step,
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
                    print(f"doctor [{i:2d}] {name:<14} {MARK[worst.severity]:<7} {worst.message} "
                          f"({report.seconds[name]:.1f} s)", flush=True)
    finally:
        for g, state in zip(generators, states):
            g.set_state(state)
    return report


def _run_check(ctx: Context, name: str) -> list[Finding]:
    """Run one check; an exception (usually from the user's model, loss or step) becomes an error finding."""
    try:
        if ctx.setup_error is not None and name not in DATA_CHECKS:
            raise ctx.setup_error
        return CHECK_FUNCTIONS[name](ctx)
    except Exception as error:  # report it: a crash in the user's code is a finding too
        detached = "does not require grad" in str(error)
        return [Finding(name, "error", f"the check could not run: {type(error).__name__}: {error}",
                        {"exception": f"{type(error).__name__}: {error}"},
                        "backward() got a loss that is not connected to the model's parameters: remove the "
                        ".detach() / .item() / torch.no_grad() between the forward pass and the loss" if detached else
                        "this error comes from the model, the loss or the step as used here: run one training step "
                        "by hand to see the full traceback")]
