"""The doctor's ``non_finite`` check: the first module whose output holds nan or inf, a loss that turns non-finite
from finite outputs, nan born in the backward pass (located with autograd's anomaly mode), non-finite gradients and
weights. :class:`NanWatch` (forward hooks on every module) is shared with ``overfit_batch``, which trains longer.
"""

from __future__ import annotations

import re
import warnings

import torch
from torch import nn

from .context import Context, finite, loss_value, quoted
from .report import Finding

#: Non-finite values: training steps watched with forward hooks (the first under autograd's anomaly mode).
NONFINITE_STEPS = 5


class NanWatch:
    """Forward hooks on every module: remembers the first module (and step) whose output holds nan or inf, whether
    its inputs were still finite, and which module was running around it. ``step`` is set by the caller."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.first, self.stack, self.step, self.handles = model, None, [], 0, []
        self.checked: tuple[torch.Tensor, int] | None = None   # the output checked last, and its version

    def __enter__(self):
        for name, m in self.model.named_modules():
            self.handles.append(m.register_forward_pre_hook(lambda m, a, name=name: self.stack.append(name) and None))
            self.handles.append(m.register_forward_hook(lambda m, a, o, name=name: self._post(m, a, o, name)))
        return self

    def _post(self, module, args, output, name) -> None:
        self.stack.pop()
        if self.first is not None:
            return
        # A container (nn.Sequential, a block) returns the very tensor its last module returned, which was checked
        # an instant ago: skip it unless it was changed in place since (its version counter moved).
        if isinstance(output, torch.Tensor):
            if self.checked is not None and output is self.checked[0] and output._version == self.checked[1]:
                return
            self.checked = (output, output._version)
        if has_nonfinite(output):
            self.first = {"module": name or "(model)", "type": type(module).__name__, "step": self.step,
                          "inputs_finite": not has_nonfinite(list(args)),
                          "inside": (self.stack[-1] or "(model)") if self.stack else None}

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.checked = None

    def describe(self) -> str:
        where = self.first
        if where["inputs_finite"]:
            return f"module '{where['module']}' ({where['type']}) turns finite inputs into nan/inf"
        return f"nan/inf appears inside the forward of '{where['inside'] or '(model)'}' (in code between its " \
               f"modules, before '{where['module']}')"


def has_nonfinite(value) -> bool:
    tensors = value if isinstance(value, (tuple, list)) else [value]
    return any(isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())
               for t in tensors)


def _user_frame(traceback_text: str) -> str | None:
    """The innermost frame of an anomaly-mode forward traceback that is neither torch's nor the doctor's own code,
    as "file.py:12 in forward: h = self.hidden(X)"."""
    frames = re.findall(r'File "(.+?)", line (\d+), in (\S+)\n\s+(.+)', traceback_text)
    mine = ("site-packages/torch/", "dlcourse/diagnose/")
    users = [f for f in frames if not any(part in f[0].replace("\\", "/") for part in mine)]
    if not users:
        return None
    path, line, function, code = users[-1]
    return f"{path.replace(chr(92), '/').rsplit('/', 1)[-1]}:{line} in {function}: {code.strip()}"


def check_non_finite(ctx: Context) -> list[Finding]:
    """NONFINITE_STEPS training steps with forward hooks on every module: the first module whose output holds nan
    or inf (and whether its inputs were still finite), a non-finite loss from finite outputs, non-finite gradients
    (the first step runs in autograd's anomaly mode, which names the backward function) and weights. A nan that
    only appears later, while overfit_batch trained, is located by the same hooks and reported here too."""
    model = ctx.fresh()
    opt = ctx.optimizer(model)
    evidence: dict = {}
    fix_forward = ("look for log of 0 (add an eps or use log_softmax / logsumexp), division by a value that can be 0 "
                   "(add an eps), or exp of large values; if it only appears after many steps, also lower the lr")
    with NanWatch(model) as watch:
        for step in range(1, NONFINITE_STEPS + 1):
            X, y = ctx.batch(step - 1)
            watch.step = evidence["step"] = step
            if has_nonfinite(X):
                return [Finding("non_finite", "error", f"the input batch already contains nan/inf (step {step}), "
                                "before any module", evidence,
                                "fix the data (see the inputs check): a division by a zero std, a log of 0, missing "
                                "values")]
            anomaly, seen = None, []

            def recording_loss(y_hat, y):   # the user's loss, remembering its value
                loss = ctx.loss_fn(y_hat, y)
                seen.append(loss_value(loss))
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
            if not finite(loss):
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
                return [Finding("non_finite", "error", f"non-finite gradients in {quoted(bad_grads)} at step {step}",
                                evidence, "a gradient overflows: lower the lr, clip gradients, add eps to "
                                "divisions/sqrt/log")]
            bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
            if bad:
                evidence["params"] = bad[:5]
                return [Finding("non_finite", "error", f"the weights became nan/inf at step {step} "
                                f"({quoted(bad)})", evidence, "the update blew up: lower the lr (see lr_range) or "
                                "clip gradients")]
    later = ctx.notes.get("overfit", {}).get("nan_origin")
    if later:
        evidence.update(later)
        return [Finding("non_finite", "error", f"{ctx.notes['overfit']['nan_text']} at step {later['step']} of "
                        f"overfit_batch (the first {NONFINITE_STEPS} steps here stayed finite)", evidence,
                        fix_forward)]
    return [Finding("non_finite", "ok", f"{NONFINITE_STEPS} training steps: outputs, losses, gradients and weights "
                    "all finite", evidence)]
