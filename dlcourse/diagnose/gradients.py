"""The doctor's per-layer checks: ``gradient_flow`` (one step with a hook on every parameter: layers without a
gradient, frozen layers, zero or non-finite gradients, vanishing or exploding gradients, oversized updates) and
``activations`` (dead ReLU units, saturated tanh/sigmoid outputs at initialisation).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .context import Context, close_figure, new_figure, pct, quoted
from .report import Finding

#: A ReLU unit is dead when it outputs 0 for every example of the batch; a layer is flagged when more than
#: DEAD_FRACTION of its units are dead. tanh/sigmoid outputs are saturated when the local slope is below 2 % of its
#: maximum (|tanh| > 0.99, sigmoid outside [0.01, 0.99]); flagged above SATURATED_FRACTION of the values.
DEAD_FRACTION, SATURATED_FRACTION = 0.5, 0.5
#: Gradient flow: flagged when the relative gradient ||g|| / ||w|| of one layer is more than GRAD_SPREAD times that
#: of another (vanishing or exploding), or when one step changes a layer by more than UPDATE_RATIO times its size.
GRAD_SPREAD, UPDATE_RATIO = 1e3, 1.0


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


def check_gradient_flow(ctx: Context) -> list[Finding]:
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
    fig, ax = new_figure(max(5.0, 0.5 * len(ranked) + 2), 3.4)
    heights = [norms.get(n, 0.0) if math.isfinite(norms.get(n, 0.0)) else 0.0 for n in ranked]
    floor = min([h for h in heights if h > 0], default=1.0) / 10
    colours = ["tab:gray" if label[n] in frozen else "tab:red" if label[n] in no_grad + zero + nonfinite
               else "tab:blue" for n in ranked]
    ax.bar(range(len(ranked)), [h if h > 0 else floor for h in heights], color=colours)
    ax.set_xticks(range(len(ranked)), [label[n] for n in ranked], rotation=45, ha="right", fontsize=8)
    ax.set(yscale="log", ylabel="gradient norm", title="gradient norm per layer (forward order; red: none/zero, "
           "grey: frozen)")
    fig = close_figure(fig)
    findings = []
    if no_grad:
        why = f"; {quoted(unused)} never ran in the forward pass" if unused else ""
        findings.append(Finding("gradient_flow", "error", f"no gradient reaches {quoted(no_grad)}{why}", evidence,
                                "something cuts the graph before these layers: a .detach(), .data, .item(), "
                                "torch.no_grad() or a tensor rebuilt with torch.tensor(...) in forward(); or the "
                                "layer is never used", fig))
    if frozen:
        findings.append(Finding("gradient_flow", "warning", f"{quoted(frozen)} {'is' if len(frozen) == 1 else 'are'} "
                                "frozen (requires_grad=False): these weights never train", evidence,
                                "if that is not intended (it is when fine-tuning), set requires_grad=True again "
                                "and build the optimizer after that", fig))
    if nonfinite:
        findings.append(Finding("gradient_flow", "error", f"non-finite gradients in {quoted(nonfinite)}", evidence,
                                "see the non_finite check", fig))
    if zero:
        findings.append(Finding("gradient_flow", "warning", f"the gradient of {quoted(zero)} is exactly zero",
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
        findings.append(Finding("gradient_flow", "warning", f"one step changed {quoted(big)} by more than "
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


def check_activations(ctx: Context) -> list[Finding]:
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
    fig, ax = new_figure(6, 0.3 * len(sites) + 1.4)
    ax.barh(range(len(sites)), [100 * v for _, _, v in sites],
            color=["tab:red" if v > (DEAD_FRACTION if k == "relu" else SATURATED_FRACTION) else "tab:blue"
                   for _, k, v in sites])
    ax.set_yticks(range(len(sites)), [n for n, _, _ in sites], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(100 * DEAD_FRACTION, color="gray", linestyle="--")
    ax.set(xlim=(0, 100), xlabel="% dead units (relu) / saturated values (tanh, sigmoid)",
           title="activations at initialisation")
    fig = close_figure(fig)
    findings = []
    dead = [(n, v) for n, k, v in sites if k == "relu" and v > DEAD_FRACTION]
    if dead:
        worst = max(v for _, v in dead)
        findings.append(Finding("activations", "error" if worst == 1.0 else "warning",
                                f"dead ReLUs: {', '.join(f'{n} {pct(v)}' for n, v in dead[:4])} of units output 0 "
                                f"for all {len(X)} examples", evidence,
                                "a dead unit gets no gradient and never recovers: check the initialisation (a large "
                                "negative bias, or weights far too large), the input scale, and the lr; use the "
                                "default or kaiming initialisation with zero biases", fig))
    saturated = [(n, v) for n, k, v in sites if k != "relu" and v > SATURATED_FRACTION]
    if saturated:
        findings.append(Finding("activations", "warning", f"saturated activations: "
                                f"{', '.join(f'{n} {pct(v)}' for n, v in saturated[:4])} of outputs sit on the flat "
                                "part of the curve, where the gradient is nearly 0", evidence,
                                "scale the inputs and the initial weights down (xavier/glorot initialisation for "
                                "tanh/sigmoid), or switch to ReLU-family activations", fig))
    if not findings:
        relu = [v for _, k, v in sites if k == "relu"]
        findings.append(Finding("activations", "ok", f"{len(sites)} activation{'s' * (len(sites) != 1)} healthy" +
                                (f": at most {pct(max(relu))} dead ReLU units" if relu else ""), evidence,
                                figure=fig))
    return findings
