# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 20: serving
#
# This lab goes with notebook 20. You write the three pieces of a model server that decide whether it survives
# real traffic: the check every request passes before the model sees it, the rule that groups requests into
# batches, and the tail-latency number a service is judged by. The tests compare your code with the course's
# server code (`dlcourse.serving`), which is switched off while they call yours.
#
# **Learning goals.** After this lab you can
# - turn untrusted JSON into a model input or a precise 4xx answer;
# - state the dynamic-batching rule exactly and replay it on arrival times;
# - compute latency percentiles from raw timings, the way numpy does;
# - predict how full the batches get from the arrival rate and the window, before measuring it.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab20_serving.ipynb` tells you what passes.
# Each exercise is graded on its own: a later one never calls your answer to an earlier one.
#
# **Time.** About 45–60 minutes. Every cell runs in well under a second; no server is started, no GPU needed.
#
# **Points.** 8 in all: validation 2, the batching rule 2, percentiles 2, predicting the batch size 2.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import math

import numpy as np
import torch

import dlcourse
from dlcourse import serving
from dlcourse.grading.checks import check_equal, check_prediction, forbid

cfg = dlcourse.setup(seed=0)
# The course's server code, switched off while the tests call your answers (and numpy's percentiles in exercise 3).
REFERENCE = ((serving, "validate"), (serving.app, "validate"), (serving, "plan_batches"),
             (serving.batching, "plan_batches"), (serving, "percentile"), (serving.loadgen, "percentile"))
NO_REFERENCE = "write it yourself: the course's dlcourse.serving version is switched off while the tests call yours"


class BadRequest(ValueError):
    """A request the model cannot take; ``status`` is the HTTP status the server answers with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def outcome(validate, rows, n_features=4, max_rows=8):
    """What validate does with rows: ("ok", shape, dtype) or ("rejected", HTTP status)."""
    try:
        x = validate(rows, n_features, max_rows)
    except (BadRequest, serving.BadRequest) as exc:
        return ("rejected", exc.status)
    return ("ok", list(np.shape(x)), str(getattr(x, "dtype", type(x).__name__)))


# %% [markdown] nbgrader={"grade": false, "grade_id": "validate-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: validating a request (2 points)
#
# The server receives `rows`, whatever the client's JSON held: it should be a list of rows, each a list of
# `n_features` numbers. Write `validate(rows, n_features, max_rows)` that returns the rows as a float32 numpy
# array of shape `(N, n_features)`, or raises `BadRequest(status, message)` with a message saying what was wrong:
#
# - **422** (unprocessable) when `rows` is not a non-empty list, when a row is not a list of exactly `n_features`
#   items, when an item is not a number (`bool` counts as not a number here, strings too), or when a value is NaN
#   or infinite;
# - **413** (payload too large) when there are more than `max_rows` rows — checked before looking inside the rows,
#   so an oversize request is refused without reading it.
#
# It must never raise anything else: any input gets an array or a `BadRequest`.

# %% nbgrader={"grade": false, "grade_id": "validate-answer", "locked": false, "schema_version": 3, "solution": true}
def validate(rows, n_features: int, max_rows: int) -> np.ndarray:
    ### BEGIN SOLUTION
    if not isinstance(rows, list) or not rows:
        raise BadRequest(422, "inputs must be a non-empty list of rows")
    if len(rows) > max_rows:
        raise BadRequest(413, f"{len(rows)} rows; the limit is {max_rows}")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != n_features:
            raise BadRequest(422, f"row {i} must be a list of {n_features} numbers")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
            raise BadRequest(422, f"row {i} holds something that is not a number")
    x = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(x).all():
        raise BadRequest(422, "NaN or infinity in the input")
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "validate-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _outcomes(cases):
    with forbid(REFERENCE, NO_REFERENCE):
        return [outcome(validate, rows) for rows in cases]


_good = [[[1, 2, 3, 4]], [[0.5, -1.0, 2.0, 3.0], [1, 2, 3, 4]]]
_bad = [[], [[1, 2, 3]], [[1, 2, 3, 4], [1, 2, 3]], [[1, 2, "3", 4]], [[1, 2, float("nan"), 4]],
        [[1, 2, 3, 4]] * 9, "not a list"]
check_equal("valid rows give float32 arrays of shape (N, 4)", _outcomes(_good),
            expected=[outcome(serving.validate, rows) for rows in _good],
            hint="np.asarray(rows, dtype=np.float32) once every check has passed")
check_equal("each bad request gets its status (422, 422, 422, 422, 422, 413, 422)", _outcomes(_bad),
            expected=[("rejected", s) for s in (422, 422, 422, 422, 422, 413, 422)],
            hint="raise BadRequest(status, message); 413 only for too many rows")
print("validate: visible tests passed")

### BEGIN HIDDEN TESTS
_hidden = [None, {"rows": 1}, [1, 2, 3, 4], [[1, 2, 3, 4, 5]], [[True, 0, 0, 0]], [[0, 0, 0, float("inf")]],
           [[0, 0, 0, -float("inf")]], [[None, 0, 0, 0]], [[[0], 0, 0, 0]], [[1, 2, 3]] * 9, [(1, 2, 3, 4)],
           [[1e30, -1e30, 0, 7]], [[0, 0, 0, 0]] * 8]
check_equal("hidden: odd payloads (None, dicts, flat lists, bools, inf, nested, oversize and short)",
            _outcomes(_hidden),
            expected=[("rejected", 422)] * 9 + [("rejected", 413), ("rejected", 422), ("ok", [1, 4], "float32"),
                                                ("ok", [8, 4], "float32")],
            weight=2, hint="check the type of every row and value; count rows before anything else")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "batch-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: the batching rule (2 points)
#
# Requests arrive at times `arrivals` (milliseconds, sorted; equal times allowed), one row each. The batcher opens
# a batch when a request arrives and no batch is open. The batch closes when `window` ms have passed since it
# opened — a request arriving exactly at `opened + window` still joins — or as soon as it holds `max_batch`
# requests; the next request then opens a new batch. Write `plan_batches(arrivals, window, max_batch)` that
# returns the batches as lists of request indices, in order (the model's own time is ignored here).

# %% nbgrader={"grade": false, "grade_id": "batch-answer", "locked": false, "schema_version": 3, "solution": true}
def plan_batches(arrivals: list[float], window: float, max_batch: int) -> list[list[int]]:
    ### BEGIN SOLUTION
    batches, current, opened = [], [], 0.0
    for i, t in enumerate(arrivals):
        if current and t > opened + window:
            batches.append(current)
            current = []
        if not current:
            opened = t
        current.append(i)
        if len(current) == max_batch:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    return batches
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "batch-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _plan(arrivals, window, max_batch):
    with forbid(REFERENCE, NO_REFERENCE):
        return plan_batches(list(arrivals), window, max_batch)


def _reference_plan(arrivals, window, max_batch):
    return serving.plan_batches(list(arrivals), window, max_batch)    # any unit of time: here milliseconds


_cases = [([0, 1, 2, 10, 11], 5, 2), ([0, 4, 5, 6], 5, 8), ([0, 0, 0], 0, 8), ([], 5, 4)]
for _arrivals, _window, _max in _cases:
    check_equal(f"arrivals {_arrivals}, window {_window} ms, max_batch {_max}", _plan(_arrivals, _window, _max),
                expected=_reference_plan(_arrivals, _window, _max),
                hint="close the open batch when t > opened + window or when it is full; the next request opens one")
print("plan_batches: visible tests passed")

### BEGIN HIDDEN TESTS
_g = np.random.default_rng(20)
for _n, _rate, _window, _max in [(200, 1.0, 3, 4), (300, 0.2, 10, 64), (100, 5.0, 0, 8), (50, 0.5, 1000, 7)]:
    _arrivals = np.floor(np.cumsum(_g.exponential(1 / _rate, size=_n))).tolist()   # whole ms: ties happen
    check_equal(f"hidden: {_n} Poisson arrivals, window {_window} ms, max_batch {_max}",
                _plan(_arrivals, _window, _max), expected=_reference_plan(_arrivals, _window, _max),
                hint="equal arrival times, a window of 0 and a full batch at the window's edge all follow the rule")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "percentile-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: latency percentiles (2 points)
#
# A load test gives one latency per request. The q-th percentile is the value below which q % of them fall; with
# few values it has to be interpolated. Write `percentile(values, q)` (q from 0 to 100) equal to numpy's default,
# `np.percentile(values, q)`: sort the values, find the position `(n - 1) · q / 100` and interpolate linearly
# between the two values around it. numpy's and torch's percentile and quantile functions are switched off while
# the tests call yours. Raise `ValueError` for an empty list.

# %% nbgrader={"grade": false, "grade_id": "percentile-answer", "locked": false, "schema_version": 3, "solution": true}
def percentile(values: list[float], q: float) -> float:
    ### BEGIN SOLUTION
    if len(values) == 0:
        raise ValueError("no values")
    xs = sorted(values)
    position = (len(xs) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(xs) - 1)
    return float(xs[low] + (xs[high] - xs[low]) * (position - low))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "percentile-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
_QUANTILES = ((np, "percentile"), (np, "quantile"), (np, "nanpercentile"), (np, "nanquantile"),
              (torch, "quantile"), (torch, "nanquantile"))


def _percentiles(values, qs):
    with forbid(REFERENCE + _QUANTILES, "interpolate yourself: numpy's and torch's quantiles are switched off"):
        return [percentile(list(values), q) for q in qs]


_timings = [0.012, 0.011, 0.013, 0.250, 0.012, 0.014, 0.011, 0.012, 0.015, 0.013]   # seconds, one slow request
check_equal("p50, p90 and p99 of ten timings with one outlier",
            [round(v, 12) for v in _percentiles(_timings, (50, 90, 99))],
            expected=[round(float(np.percentile(_timings, q)), 12) for q in (50, 90, 99)],
            hint="sort, position (n - 1) * q / 100, interpolate between floor and floor + 1")
check_equal("p0 and p100 are the minimum and the maximum", _percentiles([3.0, 1.0, 2.0], (0, 100)),
            expected=[1.0, 3.0], hint="at q = 100 the position is the last index: don't read past it")
try:
    percentile([], 50)
    _empty = "no error"
except ValueError:
    _empty = "ValueError"
except Exception as exc:  # noqa: BLE001 (any other exception is a wrong answer, reported by name)
    _empty = type(exc).__name__
check_equal("an empty list raises ValueError", _empty, expected="ValueError", hint="raise ValueError(...)")
print("percentile: visible tests passed")

### BEGIN HIDDEN TESTS
_g = np.random.default_rng(21)
for _n in (1, 2, 7, 1000):
    _values = _g.lognormal(-4, 1, size=_n).tolist()
    _qs = (0, 1, 25, 50, 90, 99, 99.9, 100)
    check_equal(f"hidden: {_n} log-normal latencies, 8 percentiles",
                [round(v, 12) for v in _percentiles(_values, _qs)],
                expected=[round(float(np.percentile(_values, q)), 12) for q in _qs],
                hint="one value: every percentile is that value; interpolate for fractional positions")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "predict-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Predict, then measure: how full do the batches get? (2 points)
#
# Requests arrive steadily, one every `gap` ms (times 0, gap, 2·gap, ..., a long stream), and the server batches
# them with the rule of exercise 2. **Predict first.** Write `mean_batch(gap, window, max_batch)`: the mean
# number of requests per batch, from the rule alone (`gap`, `window` are whole milliseconds, `gap ≥ 1`). Don't
# call `plan_batches` or the course's version (they are switched off while the tests call yours). The tests then
# measure it by batching 1,200 such arrivals at the arguments below and at hidden ones. Tolerance: 2 % (a long
# stream's last batch may be partial).

# %% nbgrader={"grade": false, "grade_id": "predict-answer", "locked": false, "schema_version": 3, "solution": true}
def mean_batch(gap: int, window: int, max_batch: int) -> float:
    ### BEGIN SOLUTION
    return float(min(max_batch, window // gap + 1))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "predict-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _measured_mean_batch(gap, window, max_batch, n=1200):
    return n / len(serving.plan_batches([i * gap for i in range(n)], window, max_batch))


def _predicted(*args):
    with forbid(REFERENCE + ((sys.modules[__name__], "plan_batches"),),
                "predict from the rule: plan_batches is switched off while the tests call mean_batch"):
        return mean_batch(*args)


check_prediction("one request every 2 ms, window 5 ms, max_batch 64", _predicted(2, 5, 64),
                 expected=_measured_mean_batch(2, 5, 64), rtol=0.02,
                 hint="a batch opened at t takes every request up to t + window, itself included")
check_prediction("one request every 1 ms, window 20 ms, max_batch 8", _predicted(1, 20, 8),
                 expected=_measured_mean_batch(1, 20, 8), rtol=0.02,
                 hint="a batch also closes when it is full")
print("mean batch: visible tests passed")

### BEGIN HIDDEN TESTS
check_prediction("hidden: one request every 3 ms, window 10 ms, max_batch 32", _predicted(3, 10, 32),
                 expected=_measured_mean_batch(3, 10, 32), rtol=0.02, hint="count the arrivals in [t, t + window]")
check_prediction("hidden: one request every 5 ms, window 4 ms, max_batch 16", _predicted(5, 4, 16),
                 expected=_measured_mean_batch(5, 4, 16), rtol=0.02,
                 hint="a window shorter than the gap batches nothing")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "predict-reveal", "locked": true, "schema_version": 3, "solution": false}
# How close were you? The measured mean batch size against the window, for one request every 2 ms:

# %% nbgrader={"grade": false, "grade_id": "predict-show", "locked": true, "schema_version": 3, "solution": false}
for _w in (0, 1, 2, 5, 10, 50, 200):
    print(f"window {_w:>3} ms: measured {_measured_mean_batch(2, _w, 64):6.2f} requests per batch")
