"""The check helpers of lab test cells: values encoded with their type, judged alike in the kernel and the grader."""

import math

import numpy as np
import pytest
import torch

from dlcourse.grading import checks as K


def test_encode_keeps_type_shape_and_dtype():
    t = K.encode(torch.tensor([[1.0, float("nan")], [float("inf"), -2.0]]))
    assert t == {"type": "tensor", "dtype": "float32", "shape": [2, 2], "data": [1.0, "nan", "inf", -2.0]}
    assert K.encode(np.arange(3))["type"] == "ndarray"
    assert K.encode(0.5) == {"type": "float", "data": 0.5}
    assert K.encode(True) == {"type": "bool", "data": True}
    assert K.encode((1, "a"))["data"] == [{"type": "int", "data": 1}, {"type": "str", "data": "a"}]
    with pytest.raises(ValueError, match="compare something smaller"):
        K.encode(torch.zeros(K.MAX_ELEMENTS + 1))


@pytest.mark.parametrize("actual, expected, ok, fragment", [
    (torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-9]), True, ""),
    (torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]), False, "largest difference 0.5"),
    (torch.tensor([1.0, 2.0]), torch.tensor([[1.0, 2.0]]), False, "shape (2,), expected (1, 2)"),
    (torch.tensor(0.5), 0.5, False, "expected a float, got a tensor"),
    (torch.tensor([float("nan")]), torch.tensor([1.0]), False, "contains NaN"),
    ([torch.tensor(1.0), 2.0], [torch.tensor(1.0), 2.5], False, "item 1"),
    (0.75, 0.75, True, ""),
])
def test_close(actual, expected, ok, fragment):
    passed, why = K.compare("close", K.encode(actual), K.encode(expected), {"rtol": 1e-5, "atol": 1e-8})
    assert passed is ok and fragment in why


def test_close_can_require_the_dtype():
    half, full = torch.ones(3, dtype=torch.bfloat16), torch.ones(3)
    assert K.compare("close", K.encode(half), K.encode(full), {"rtol": 1e-5, "atol": 1e-8})[0] is True
    ok, why = K.compare("close", K.encode(half), K.encode(full), {"rtol": 1e-5, "atol": 1e-8, "dtype": True})
    assert ok is False and why == "dtype bfloat16, expected float32"
    ok, why = K.compare("close", K.encode([full, half]), K.encode([full, full]), {"dtype": True})
    assert ok is False and why.startswith("item 1: dtype")
    K.check_close("same dtype passes in learner mode", full, expected=torch.ones(3), dtype=True)
    with pytest.raises(AssertionError, match="dtype"):
        K.check_close("other dtype fails", half, expected=full, dtype=True)


def test_equal_true_at_least_and_accuracy():
    assert K.compare("equal", K.encode("smoke"), K.encode("smoke"), {}) == (True, "")
    assert K.compare("equal", K.encode(3), K.encode(3.0), {})[0] is False  # the type matters
    assert K.compare("true", K.encode(True), None, {}) == (True, "")
    assert K.compare("true", K.encode(1), None, {})[0] is False
    assert K.compare("at_least", K.encode(0.91), None, {"threshold": 0.9})[0] is True
    assert "below the required" in K.compare("at_least", K.encode(0.89), None, {"threshold": 0.9})[1]
    labels = K.encode(torch.tensor([0, 1, 2, 3]))
    assert K.compare("accuracy", K.encode(torch.tensor([0, 1, 2, 0])), labels, {"threshold": 0.75})[0] is True
    assert K.compare("accuracy", K.encode(torch.tensor([0, 0, 0, 0])), labels, {"threshold": 0.75})[0] is False
    assert "shape" in K.compare("accuracy", K.encode(torch.tensor([0])), labels, {"threshold": 0.5})[1]


def test_learner_mode_raises_like_an_assert(monkeypatch):
    monkeypatch.delenv(K.MODE_ENV, raising=False)
    K.check_close("fine", torch.ones(2), expected=torch.ones(2))
    with pytest.raises(AssertionError, match=r"double: values differ .*; did you multiply by 2\?"):
        K.check_close("double", torch.ones(2), expected=torch.full((2,), 2.0), hint="did you multiply by 2?")
    with pytest.raises(AssertionError, match="below the required"):
        K.check_at_least("accuracy", 0.5, 0.9)


def test_collect_and_grade_modes_emit_records(monkeypatch):
    emitted = []
    monkeypatch.setattr(K, "_emit", emitted.append)
    monkeypatch.setenv(K.MODE_ENV, "collect")
    K.check_close("a", torch.ones(2), expected=torch.zeros(2), weight=2)  # no exception in collect mode
    assert emitted[-1]["passed"] is False and emitted[-1]["expected"]["data"] == [0.0, 0.0]
    assert emitted[-1]["spec"]["weight"] == 2
    monkeypatch.setenv(K.MODE_ENV, "grade")
    K.check_close("a", torch.ones(2), expected=None)
    assert set(emitted[-1]) == {"name", "kind", "spec", "actual", "hint"}  # no verdict, no right answer


def test_forbid_switches_functions_off_and_restores_them():
    with K.forbid(K.SOFTMAX_FUNCTIONS, "write it yourself"):
        with pytest.raises(AssertionError, match="write it yourself"):
            torch.softmax(torch.zeros(1, 2), dim=1)
        with pytest.raises(AssertionError):
            torch.zeros(1, 2).log_softmax(dim=1)
    assert math.isclose(torch.softmax(torch.zeros(1, 2), dim=1)[0, 0].item(), 0.5)


def test_forbid_also_switches_off_an_alias_taken_before_the_block():
    import types

    module = types.ModuleType("reference")
    exec("def solve(x):\n    return 2 * x", module.__dict__)
    alias = module.solve  # what a learner's `from reference import solve as alias` holds
    with K.forbid([(module, "solve"), (module, "solve")], "write it yourself"):
        with pytest.raises(AssertionError, match="write it yourself"):
            alias(1)
        with pytest.raises(AssertionError, match="write it yourself"):
            module.solve(1)
    assert alias(2) == module.solve(2) == 4


def test_check_prediction_compares_as_floats_and_shows_the_gap(monkeypatch, capsys):
    monkeypatch.delenv(K.MODE_ENV, raising=False)
    K.check_prediction("init loss", 2.3, expected=torch.tensor(2.302585), rtol=0.01)
    assert "predicted 2.3, measured 2.303" in capsys.readouterr().out
    K.check_prediction("bytes", 4000, expected=4096.0, rtol=0.05)        # an int prediction of a float measurement
    with pytest.raises(AssertionError, match="bytes"):
        K.check_prediction("bytes", 3000, expected=4096, rtol=0.05)
    assert "outside" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        K.check_prediction("not a number", "about 4k", expected=4096, rtol=0.05)
    ok, _ = K.compare("close", K.encode(K._as_number(4100)), K.encode(4096.0), {"rtol": 0.01, "atol": 0.0})
    assert ok                                                            # the grader judges the same way


def test_check_prediction_prints_nothing_when_grading(monkeypatch, capsys):
    monkeypatch.setenv(K.MODE_ENV, "grade")
    emitted = []
    monkeypatch.setattr(K, "_emit", emitted.append)
    K.check_prediction("bytes", 4000, expected=None, rtol=0.05)
    assert capsys.readouterr().out == "" and emitted[0]["actual"] == K.encode(4000.0)
