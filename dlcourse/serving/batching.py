"""Dynamic batching: requests that arrive within a short window run through the model as one batch.

The rule (the same in :func:`plan_batches`, which replays it on arrival times, and in :class:`Batcher`, which runs it
live): a batch opens when a request arrives while no batch is open; it closes ``window_s`` seconds later, or as soon
as it holds ``max_batch`` rows, whichever comes first. A request never waits more than ``window_s`` for its batch to
close (plus the time the model takes on the batches ahead of it). A bigger window means fuller batches (throughput)
and a longer wait for a lone request (latency).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


class Overloaded(RuntimeError):
    """The queue already holds ``max_queue`` rows: the caller should retry later (HTTP 503), not wait forever."""


def plan_batches(arrivals_s: list[float], window_s: float, max_batch: int, rows: list[int] | None = None
                 ) -> list[list[int]]:
    """The batches :class:`Batcher` forms for requests arriving at ``arrivals_s`` (sorted), as lists of request
    indices. ``rows[i]`` is request i's number of rows (default 1); a request is never split across batches, and
    one with more than ``max_batch`` rows runs alone."""
    rows = rows or [1] * len(arrivals_s)
    batches: list[list[int]] = []
    current: list[int] = []
    opened = filled = 0.0
    for i, t in enumerate(arrivals_s):
        if current and (t > opened + window_s or filled + rows[i] > max_batch):
            batches.append(current)
            current = []
        if not current:
            opened, filled = t, 0
        current.append(i)
        filled += rows[i]
        if filled >= max_batch:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    return batches


@dataclass
class BatchStats:
    """What the batcher did: batches run, rows run, and the model's seconds."""
    batches: int = 0
    rows: int = 0
    model_s: float = 0.0

    @property
    def mean_batch(self) -> float:
        return self.rows / self.batches if self.batches else 0.0


class Batcher:
    """Collects requests (arrays of rows) for up to ``window_s`` or ``max_batch`` rows, runs ``predict`` once on
    their concatenation in a worker thread (the event loop keeps accepting requests meanwhile) and hands each request
    its own rows of the result. ``window_s=0`` turns batching off: every request runs alone, in arrival order.

    Back-pressure: more than ``max_queue`` rows waiting raises :class:`Overloaded` at once instead of queueing
    without bound. Must be used from one running event loop (the server's)."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], *, window_s: float = 0.005, max_batch: int = 64,
                 max_queue: int = 4096):
        if window_s < 0 or max_batch < 1 or max_queue < 1:
            raise ValueError("window_s must be >= 0 and max_batch, max_queue >= 1")
        self.predict, self.window_s, self.max_batch, self.max_queue = predict, window_s, max_batch, max_queue
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._waiting_rows = 0
        self._worker: asyncio.Task | None = None

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        if self._waiting_rows + len(x) > self.max_queue:
            raise Overloaded(f"{self._waiting_rows} rows already waiting (max_queue={self.max_queue})")
        done = asyncio.get_running_loop().create_future()
        self._waiting_rows += len(x)
        await self._queue.put((time.perf_counter(), x, done))
        return await done

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch, filled, deadline = [first], len(first[1]), first[0] + self.window_s
            while filled < self.max_batch:
                if self._queue.empty():
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                else:
                    item = self._queue.get_nowait()
                if item[0] > deadline or filled + len(item[1]) > self.max_batch:
                    await self._run_batch(batch)
                    batch, filled, deadline = [item], len(item[1]), item[0] + self.window_s
                    continue
                batch.append(item)
                filled += len(item[1])
            await self._run_batch(batch)

    async def _run_batch(self, batch: list) -> None:
        xs = [x for _, x, _ in batch]
        self._waiting_rows -= sum(len(x) for x in xs)
        start = time.perf_counter()
        try:
            out = await asyncio.to_thread(self.predict, np.concatenate(xs))
        except Exception as exc:  # every request of the batch gets the error; the batcher keeps running
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.rows += len(out)
        self.stats.model_s += time.perf_counter() - start
        offsets = np.cumsum([0] + [len(x) for x in xs])
        for (_, _, done), a, b in zip(batch, offsets[:-1], offsets[1:]):
            if not done.done():  # a request that timed out has no one waiting
                done.set_result(out[a:b])
