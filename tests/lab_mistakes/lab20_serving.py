"""Plausible mistakes in lab 20 and the exact total each must score (out of 8), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
A test cell's points are split over its checks by weight, so a mistake can lose part of a cell's points.
"""

# Counts rows only after reading them (a 9-row request with short rows gets 422, not 413), lets bools and tuples
# through as numbers/rows, and reads "3" as 3.0: a visible check (weight 1 of 4) and the hidden one (2 of 4) fail
VALIDATE_TOO_TRUSTING = """\
def validate(rows, n_features, max_rows):
    if not isinstance(rows, list) or not rows:
        raise BadRequest(422, "inputs must be a non-empty list of rows")
    try:
        x = np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadRequest(422, "not a list of rows of numbers") from None
    if x.ndim != 2 or x.shape[1] != n_features:
        raise BadRequest(422, f"rows must have {n_features} numbers")
    if len(x) > max_rows:
        raise BadRequest(413, "too many rows")
    if not np.isfinite(x).all():
        raise BadRequest(422, "NaN or infinity")
    return x"""

# A strict window (t >= opened + window closes the batch): 3 of the 8 batching checks still pass (those without a
# request exactly at the window's edge); with it, nearest rank instead of interpolation passes 3 of 7 percentile checks
# (min/max, the empty list, a single value).
BATCH_STRICT_WINDOW = """\
def plan_batches(arrivals, window, max_batch):
    batches, current, opened = [], [], 0.0
    for i, t in enumerate(arrivals):
        if current and t >= opened + window:
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
    return batches"""

# Nearest rank instead of interpolation.
PERCENTILE_NEAREST_RANK = """\
def percentile(values, q):
    if len(values) == 0:
        raise ValueError("no values")
    xs = sorted(values)
    return float(xs[round((len(xs) - 1) * q / 100)])"""

# Forgets that the request opening the batch is in it (window // gap) and forgets max_batch: only the hidden case
# with a window shorter than the gap (1 request per batch) passes, 1 of 4 checks -> 0.5 of 2 points.
PREDICT_OFF_BY_ONE = """\
def mean_batch(gap, window, max_batch):
    return float(max(window // gap, 1))"""

MISTAKES = [
    ({"validate-answer": VALIDATE_TOO_TRUSTING}, 6.5),
    ({"batch-answer": BATCH_STRICT_WINDOW, "percentile-answer": PERCENTILE_NEAREST_RANK}, 2 + 2 * 3 / 8 + 2 * 3 / 7 + 2),
    ({"predict-answer": PREDICT_OFF_BY_ONE}, 6.5),
]
