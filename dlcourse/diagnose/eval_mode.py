"""The doctor's ``eval_mode`` check: does the user's evaluation run Dropout and BatchNorm in eval mode, and does it
give the same result twice on the same data? (Without an evaluation function: are eval-mode outputs repeatable?)
"""

from __future__ import annotations

import torch
from torch import nn

from .context import STEP_EXAMPLES, Context
from .report import Finding, plain

#: Examples handed to evaluate_fn by the eval-mode check (it is called twice).
EVAL_EXAMPLES = 512


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


def check_eval_mode(ctx: Context) -> list[Finding]:
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
    evidence.update(results=[plain(first), plain(second)], modules_in_train_mode=in_train,
                    module_calls=len(calls))
    if in_train:
        kinds = sorted({type(dict(modes)[n]).__name__ for n in in_train})
        return [Finding("eval_mode", "error", f"evaluate_fn runs {len(in_train)} {'/'.join(kinds)} module(s) in "
                        f"training mode (e.g. '{in_train[0]}'): dropout makes the evaluation random and BatchNorm "
                        "updates its statistics with evaluation data", evidence,
                        "call model.eval() at the start of the evaluation (and model.train() before training "
                        "again); evaluate under torch.no_grad()")]
    if plain(first) != plain(second):
        return [Finding("eval_mode", "warning", f"evaluate_fn gives different results on the same data ({first} vs "
                        f"{second})", evidence,
                        "something random runs in evaluation: F.dropout without training=self.training, random "
                        "augmentation in the validation pipeline, or a shuffled subset")]
    if not modes:
        return [Finding("eval_mode", "ok", "evaluate_fn is deterministic (the model has no Dropout/BatchNorm)",
                        evidence)]
    return [Finding("eval_mode", "ok", f"evaluate_fn runs all {len(modes)} Dropout/BatchNorm modules in eval mode "
                    f"and is deterministic ({first})", evidence)]
