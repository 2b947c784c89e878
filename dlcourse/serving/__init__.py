"""Serving a trained model over HTTP (notebook 20, lab 20): a FastAPI app that validates its input, batches requests
dynamically and reports drift (``app``, ``batching``), a server in its own process on a free localhost port
(``server``), and a bounded load generator with latency percentiles (``loadgen``). Data flows one way: batching ←
app ← server; loadgen talks to any of them over HTTP only. Needs the ``serving`` extra (fastapi, uvicorn, httpx).
"""

from .app import BadRequest, DriftMonitor, make_app, validate
from .batching import Batcher, BatchStats, Overloaded, plan_batches
from .loadgen import LoadResult, percentile, run_load
from .server import ModelServer, load_predict

__all__ = [
    "BadRequest", "BatchStats", "Batcher", "DriftMonitor", "LoadResult", "ModelServer", "Overloaded", "load_predict",
    "make_app", "percentile", "plan_batches", "run_load", "validate",
]
