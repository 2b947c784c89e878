"""A model behind HTTP: FastAPI routes with validated input, a health check, the model's version in every answer,
a time limit per request, back-pressure from the batcher and a simple input-drift statistic.

Every bad request gets a 4xx with a sentence saying what was wrong; the server process never crashes on input:
- 422: not a list of rows of numbers (FastAPI's schema check), rows of different lengths, the wrong number of
  features, an empty batch, NaN or infinity;
- 413: more rows than ``max_rows`` in one request;
- 503: the batcher's queue is full (retry later), 504: no answer within ``timeout_s``.
"""


import asyncio
import math
import time
from contextlib import asynccontextmanager
from typing import Callable

import numpy as np

from .batching import Batcher, Overloaded


class BadRequest(ValueError):
    """Input the model cannot take; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def validate(rows: list, n_features: int, max_rows: int) -> np.ndarray:
    """``rows`` (a JSON list of lists of numbers) as a float32 array of shape (N, n_features), or BadRequest."""
    if not isinstance(rows, list) or not rows:
        raise BadRequest(422, "inputs must be a non-empty list of rows")
    if len(rows) > max_rows:
        raise BadRequest(413, f"{len(rows)} rows in one request; the limit is {max_rows}: split the batch")
    lengths = {len(r) if isinstance(r, list) else -1 for r in rows}
    if lengths != {n_features}:
        found = sorted(n for n in lengths if n >= 0)
        raise BadRequest(422, f"every row must be a list of {n_features} numbers; found rows of length {found}"
                         if -1 not in lengths else "every row must be a list of numbers")
    try:
        x = np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadRequest(422, "every value must be a number") from None
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise BadRequest(422, f"{bad} row(s) hold NaN or infinity")
    return x


class DriftMonitor:
    """How far recent inputs have moved from the training data: the largest |z| over features of the mean of the
    last ``window`` rows, in units of that mean's standard error under the training distribution. Around 1–3 for
    inputs like the training data; tens when a feature shifted."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, window: int = 512):
        self.mean, self.std, self.window = np.asarray(mean, np.float64), np.asarray(std, np.float64) + 1e-8, window
        self._recent: list[np.ndarray] = []
        self._count = 0

    def update(self, x: np.ndarray) -> None:
        self._recent.append(np.asarray(x, np.float64))
        self._count += len(x)
        while self._count - len(self._recent[0]) >= self.window:
            self._count -= len(self._recent.pop(0))

    def statistic(self) -> float | None:
        if not self._recent:
            return None
        x = np.concatenate(self._recent)
        return float(np.max(np.abs(x.mean(axis=0) - self.mean) / (self.std / math.sqrt(len(x)))))


def make_app(predict: Callable[[np.ndarray], np.ndarray], *, n_features: int, version: str, max_rows: int = 256,
             window_s: float = 0.0, max_batch: int = 64, max_queue: int = 4096, timeout_s: float = 5.0,
             drift: DriftMonitor | None = None):
    """The FastAPI app: ``POST /predict`` ``{"inputs": [[...], ...]}`` → ``{"outputs", "predictions",
    "model_version"}``; ``GET /health`` → status, version, warm-up time, batches run, drift. ``predict`` maps a
    float32 (N, n_features) array to (N, ...) outputs; it runs once on one row at start-up (warm-up) before the
    server accepts requests. ``window_s > 0`` batches requests dynamically (:class:`Batcher`)."""
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel

    class PredictRequest(BaseModel):
        inputs: list[list[float]]

    batcher = Batcher(predict, window_s=window_s, max_batch=max_batch, max_queue=max_queue)
    state = {"warmup_s": None, "requests": 0, "rejected": 0}

    @asynccontextmanager
    async def lifespan(app):
        start = time.perf_counter()
        await asyncio.to_thread(predict, np.zeros((1, n_features), np.float32))
        state["warmup_s"] = time.perf_counter() - start
        yield

    app = FastAPI(title="dlcourse model server", lifespan=lifespan)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model_version": version, "warmup_s": state["warmup_s"],
                "requests": state["requests"], "rejected": state["rejected"], "batches": batcher.stats.batches,
                "mean_batch": batcher.stats.mean_batch, "drift_z": drift.statistic() if drift else None}

    @app.post("/predict")
    async def predict_route(request: PredictRequest):
        state["requests"] += 1
        try:
            x = validate(request.inputs, n_features, max_rows)
            out = await asyncio.wait_for(batcher(x), timeout_s)
        except BadRequest as exc:
            state["rejected"] += 1
            raise HTTPException(exc.status, str(exc)) from None
        except Overloaded as exc:
            state["rejected"] += 1
            raise HTTPException(503, f"server busy: {exc}; retry later") from None
        except asyncio.TimeoutError:
            state["rejected"] += 1
            raise HTTPException(504, f"no answer within {timeout_s} s") from None
        if drift is not None:
            drift.update(x)
        out = np.asarray(out)
        return {"outputs": out.tolist(), "predictions": out.argmax(axis=-1).tolist() if out.ndim == 2 else None,
                "model_version": version}

    return app
