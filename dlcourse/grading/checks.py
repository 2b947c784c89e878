"""Checks for lab test cells: a learner sees an assert-like message, the grader gets values it can judge itself.

Introduced in lab 01. A test cell calls, for example::

    check_close("softmax of large logits", softmax(X), expected=torch.softmax(X, dim=1), atol=1e-6)

What happens depends on ``DLCOURSE_CHECKS`` (the grader sets it; a learner never needs to):

- unset (a learner running the lab): the check compares in the kernel and raises ``AssertionError`` with a helpful
  message on failure, exactly like an ``assert``.
- ``collect`` (``dlcourse check`` and the reference run): nothing raises; each check is emitted as a record
  (name, kind, the value, the in-kernel verdict) in the cell's output, so one failure doesn't hide the next.
- ``grade`` (``dlcourse grade``): the grader has removed every ``expected=`` argument from the test cells before
  running them, so the kernel never holds the right answer; each check only emits the student's value, and the
  grader compares it with the reference solution's value in its own process. Patching ``torch.allclose``, these
  helpers or ``builtins`` in the kernel cannot change that comparison.

``forbid`` switches library functions off while a learner's from-scratch code runs.
"""

from __future__ import annotations

import math
import numbers
import os
from contextlib import ExitStack, contextmanager
from typing import Any, Iterable, Iterator
from unittest import mock

import torch
import torch.nn.functional as F

MIME = "application/vnd.dlcourse.check+json"
MODE_ENV = "DLCOURSE_CHECKS"
#: The check functions whose ``expected=`` argument the grader strips (see autograde.strip_expected).
CHECK_FUNCTIONS = ("check_close", "check_equal", "check_true", "check_at_least", "check_accuracy", "check_prediction")
MAX_ELEMENTS = 100_000  # a check value larger than this is a lab bug: compare a summary instead

#: Every public spelling of softmax, log-softmax and cross-entropy.
SOFTMAX_FUNCTIONS: tuple[tuple[Any, str], ...] = (
    (torch, "softmax"), (torch, "log_softmax"), (torch.Tensor, "softmax"), (torch.Tensor, "log_softmax"),
    (F, "softmax"), (F, "log_softmax"), (torch.special, "softmax"), (torch.special, "log_softmax"),
    (F, "cross_entropy"), (F, "nll_loss"),
)

_MISSING = object()


@contextmanager
def forbid(targets: Iterable[tuple[Any, str]], why: str) -> Iterator[None]:
    """Inside the block, each ``(owner, name)`` raises AssertionError(``why``) when called.

    The attribute is replaced, and where it holds a plain Python function without a closure, that function's code
    is swapped too, so a learner's alias imported earlier (``from dlcourse.serving import validate as v``) is
    switched off as well. Compiled functions (torch's, numpy's) can only be replaced by name."""
    namespace: dict[str, Any] = {}
    exec(f"def forbidden(*args, **kwargs):\n    raise AssertionError({why!r})", namespace)  # no closure: swappable
    forbidden = namespace["forbidden"]
    with ExitStack() as stack:
        for owner, name in targets:
            function = getattr(owner, name)
            if type(function).__name__ == "function" and not function.__code__.co_freevars:
                original = function.__code__
                function.__code__ = forbidden.__code__
                stack.callback(setattr, function, "__code__", original)
            stack.enter_context(mock.patch.object(owner, name, forbidden))
        yield


# ----------------------------------------------------------------------------------------------- values as JSON
def encode(value: Any) -> Any:
    """A JSON-safe description of a check value that keeps its type: tensors and arrays keep dtype and shape."""
    if isinstance(value, torch.Tensor) or type(value).__module__ == "numpy" and hasattr(value, "shape"):
        is_tensor = isinstance(value, torch.Tensor)
        t = value.detach().cpu() if is_tensor else torch.as_tensor(value)
        if t.numel() > MAX_ELEMENTS:
            raise ValueError(f"check value has {t.numel()} elements; compare something smaller")
        data = t.double().flatten().tolist() if t.is_floating_point() else t.flatten().tolist()
        return {"type": "tensor" if is_tensor else "ndarray", "dtype": str(t.dtype).replace("torch.", ""),
                "shape": list(t.shape), "data": [_float(x) for x in data]}
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return {"type": type(value).__name__, "data": value}
    if isinstance(value, int):
        return {"type": "int", "data": value}
    if isinstance(value, float):
        return {"type": "float", "data": _float(value)}
    if isinstance(value, (list, tuple)):
        return {"type": type(value).__name__, "data": [encode(v) for v in value]}
    if isinstance(value, dict):
        return {"type": "dict", "data": {str(k): encode(v) for k, v in value.items()}}
    return {"type": type(value).__name__, "data": repr(value)[:200]}


def _float(x: Any) -> Any:
    """JSON has no NaN or infinity: spell them as strings."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _number(x: Any) -> float:
    return float(x)  # also parses the "nan", "inf" and "-inf" that _float wrote


# ------------------------------------------------------------------------------------------ comparing two values
def compare(kind: str, actual: Any, reference: Any, spec: dict, *, echo: bool = True) -> tuple[bool, str]:
    """Judge an encoded ``actual`` against an encoded ``reference`` (the right value) for a check ``kind``.

    Used in the kernel (reference = the ``expected=`` argument) and by the grader (reference = the reference
    solution's value), so both judge alike. Returns (passed, reason); the reason never contains the right value.
    ``echo=False`` (the grader) keeps everything that came from the student's kernel out of the reason — type
    names, shapes, lengths, values, differences — since a hostile kernel can encode hidden test code in any of
    them: the reason is then built from the reference and the check's spec only.
    """
    show = (lambda text: f", got {text}") if echo else (lambda text: "")
    if kind == "true":
        ok = actual.get("type") == "bool" and actual.get("data") is True
        return ok, "" if ok else "the condition is false"
    if kind == "at_least":
        if actual.get("type") not in ("int", "float", "bool") and not _scalar_tensor(actual):
            return False, "expected a number" + show(str(actual.get("type")))
        value = _number(actual["data"] if "shape" not in actual else actual["data"][0])
        ok = value >= spec["threshold"]
        return ok, "" if ok else f"{f'{value:.4g} is ' if echo else ''}below the required {spec['threshold']:.4g}"
    if kind == "accuracy":
        if actual.get("type") not in ("tensor", "ndarray") or actual.get("shape") != reference.get("shape"):
            return False, f"expected predictions of shape {reference.get('shape')}" + show(_describe(actual))
        hits = sum(int(a == b) for a, b in zip(actual["data"], reference["data"]))
        acc = hits / max(1, len(reference["data"]))
        ok = acc >= spec["threshold"]
        return ok, "" if ok else f"accuracy {f'{acc:.3f} is ' if echo else ''}below the required " \
                                 f"{spec['threshold']:.3f}"
    if actual.get("type") != reference.get("type"):
        return False, f"expected a {_describe(reference)}" + show(f"a {_describe(actual)}")
    if kind == "equal":
        ok = actual == reference
        return ok, "" if ok else "the value is not the expected one"
    if kind == "close":
        return _close(actual, reference, spec.get("rtol", 1e-5), spec.get("atol", 1e-8), spec.get("dtype", False),
                      echo)
    raise ValueError(f"unknown check kind {kind!r}")


def _scalar_tensor(v: dict) -> bool:
    return v.get("type") in ("tensor", "ndarray") and len(v.get("data", [])) == 1


def _describe(v: dict) -> str:
    if v.get("type") in ("tensor", "ndarray"):
        return f"{v['type']} of shape {tuple(v.get('shape', ()))} and dtype {v.get('dtype')}"
    if v.get("type") in ("list", "tuple"):
        return f"{v['type']} of length {len(v.get('data', []))}"
    return str(v.get("type"))


def _close(actual: dict, reference: dict, rtol: float, atol: float, dtype: bool = False,
           echo: bool = True) -> tuple[bool, str]:
    kind = actual["type"]
    if kind in ("tensor", "ndarray"):
        if actual.get("shape") != reference.get("shape"):
            got = f"shape {tuple(actual['shape'])}, " if echo else "a different shape, "
            return False, f"{got}expected {tuple(reference['shape'])}"
        if dtype and actual.get("dtype") != reference.get("dtype"):
            got = f"dtype {actual.get('dtype')}, " if echo else "a different dtype, "
            return False, f"{got}expected {reference.get('dtype')}"
        a = torch.tensor([_number(x) for x in actual["data"]], dtype=torch.float64)
        b = torch.tensor([_number(x) for x in reference["data"]], dtype=torch.float64)
        return _close_tensors(a, b, rtol, atol, echo)
    if kind in ("int", "float", "bool"):
        a = torch.tensor([_number(actual["data"])], dtype=torch.float64)
        b = torch.tensor([_number(reference["data"])], dtype=torch.float64)
        return _close_tensors(a, b, rtol, atol, echo)
    if kind in ("list", "tuple"):
        if len(actual["data"]) != len(reference["data"]):
            got = f"length {len(actual['data'])}, " if echo else "a different length, "
            return False, f"{got}expected {len(reference['data'])}"
        for i, (x, y) in enumerate(zip(actual["data"], reference["data"])):
            if x.get("type") != y.get("type"):
                return False, f"item {i}: expected a {_describe(y)}" + (f", got a {_describe(x)}" if echo else "")
            ok, why = _close(x, y, rtol, atol, dtype, echo)
            if not ok:
                return False, f"item {i}: {why}"
        return True, ""
    ok = actual == reference
    return ok, "" if ok else "the value is not the expected one"


def _close_tensors(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float,
                   echo: bool = True) -> tuple[bool, str]:
    if a.isnan().any() and not b.isnan().any():
        return False, "the result contains NaN"
    if a.isinf().any() and not b.isinf().any():
        return False, "the result contains infinity"
    ok = bool(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))
    if ok:
        return True, ""
    if not echo:
        return False, f"values differ beyond the tolerance (atol={atol:g}, rtol={rtol:g})"
    finite = a.isfinite() & b.isfinite()
    worst = (a[finite] - b[finite]).abs().max().item() if finite.any() else float("nan")
    return False, f"values differ (largest difference {worst:.3g}, tolerance atol={atol:g}, rtol={rtol:g})"


# ------------------------------------------------------------------------------------------------ the checks
def _mode() -> str:
    return os.environ.get(MODE_ENV, "")


def _emit(record: dict) -> None:
    from IPython.display import display

    verdict = {True: "passed", False: "failed", None: "recorded"}[record.get("passed")]
    display({MIME: record, "text/plain": f"check {record['name']!r}: {verdict}"}, raw=True)


def _run(kind: str, name: str, actual: Any, expected: Any, spec: dict, hint: str) -> None:
    record: dict[str, Any] = {"name": name, "kind": kind, "spec": spec, "actual": encode(actual), "hint": hint}
    mode = _mode()
    if mode == "grade":  # the grader judges; the kernel only reports the value
        _emit(record)
        return
    record["passed"], record["message"] = None, ""
    if expected is not _MISSING or kind in ("true", "at_least"):
        reference = encode(expected) if expected is not _MISSING else None
        ok, why = compare(kind, record["actual"], reference, spec)
        record["passed"], record["message"] = ok, ("" if ok else "; ".join(s for s in (why, hint) if s))
        if reference is not None:
            record["expected"] = reference  # kept by the reference run: the grader compares against it
    if mode == "collect":
        _emit(record)
    elif record["passed"] is False:
        raise AssertionError(f"{name}: {record['message']}")


def check_close(name: str, actual: Any, expected: Any = _MISSING, *, rtol: float = 1e-5, atol: float = 1e-8,
                dtype: bool = False, weight: float = 1.0, hint: str = "") -> None:
    """``actual`` equals the right value up to tolerance (tensors: same type, shape; then allclose).

    ``dtype=True`` also requires tensors and arrays (also inside lists) to have the right dtype.
    """
    spec = {"rtol": rtol, "atol": atol, "weight": weight}
    if dtype:
        spec["dtype"] = True
    _run("close", name, actual, expected, spec, hint)


def check_equal(name: str, actual: Any, expected: Any = _MISSING, *, weight: float = 1.0, hint: str = "") -> None:
    """``actual`` is exactly the right value (same type too)."""
    _run("equal", name, actual, expected, {"weight": weight}, hint)


def check_true(name: str, condition: Any, *, weight: float = 1.0, hint: str = "") -> None:
    """``condition`` is True. Weakest check: the grader can only see the boolean the kernel computed."""
    _run("true", name, bool(condition), _MISSING, {"weight": weight}, hint)


def check_at_least(name: str, value: Any, threshold: float, *, weight: float = 1.0, hint: str = "") -> None:
    """A number (e.g. an accuracy) reaches ``threshold``; the grader uses the reference's threshold."""
    _run("at_least", name, value, _MISSING, {"threshold": float(threshold), "weight": weight}, hint)


def check_accuracy(name: str, predictions: Any, expected: Any = _MISSING, *, threshold: float,
                   weight: float = 1.0, hint: str = "") -> None:
    """Predicted labels agree with the true labels ``expected`` on at least ``threshold`` of the examples.

    The grader compares the student's predictions with the labels recorded by the reference run, so faking the
    accuracy number in the kernel gains nothing.
    """
    _run("accuracy", name, predictions, expected, {"threshold": float(threshold), "weight": weight}, hint)


def _as_number(x: Any) -> Any:
    """A real number or a one-element tensor as a float; anything else unchanged (the comparison then says so)."""
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return float(x)
    if isinstance(x, torch.Tensor) and x.numel() == 1 and not x.is_complex():
        return float(x.item())
    return x


def check_prediction(name: str, predicted: Any, expected: Any = _MISSING, *, rtol: float, atol: float = 0.0,
                     weight: float = 1.0, hint: str = "") -> None:
    """A predict-then-measure question: the learner's ``predicted`` number is within ``rtol`` (or ``atol``) of the
    measured ``expected`` one. Both are compared as floats, so 3 and 3.0 are the same prediction.

    Before judging, the learner sees how far off the prediction was (the grader, which never gives the kernel the
    measurement, prints nothing). State the tolerance in the exercise text: a prediction question is only fair
    when the learner knows how close is close enough.
    """
    value = _as_number(predicted)
    measured = _as_number(expected) if expected is not _MISSING else _MISSING
    if measured is not _MISSING and _mode() != "grade" and isinstance(value, float) and isinstance(measured, float):
        off = abs(value - measured) / abs(measured) if measured else math.inf if value else 0.0
        inside = abs(value - measured) <= atol + rtol * abs(measured)
        print(f"{name}: predicted {value:.4g}, measured {measured:.4g} ({off:.1%} off; tolerance "
              f"{rtol:.0%}{f' or {atol:g}' if atol else ''}): {'within' if inside else 'outside'}")
    _run("close", name, value, measured, {"rtol": rtol, "atol": atol, "weight": weight}, hint)
