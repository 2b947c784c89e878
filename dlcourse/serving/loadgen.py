"""A load generator for a local model server: ``concurrency`` clients, each sending its next request as soon as the
last one is answered (a closed loop), until ``requests`` have been sent or ``max_s`` seconds have passed — bounded
both ways, so a slow or stuck server cannot hang a notebook. Latency is measured per request on the client, from
sending to the whole answer; errors are counted by status, never raised.

It runs its own event loop in a thread, so it also works inside Jupyter, whose kernel already runs one.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between the two nearest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    position = (len(xs) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(xs) - 1)
    return xs[low] + (xs[high] - xs[low]) * (position - low)


@dataclass
class LoadResult:
    """Latencies (seconds) of the answered requests, status codes of all, and the wall time of the run."""
    latencies_s: list[float]
    statuses: Counter
    wall_s: float
    rows_per_request: int

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def throughput_rows_s(self) -> float:
        return self.ok * self.rows_per_request / self.wall_s if self.wall_s else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_s, q)

    def summary(self) -> dict:
        return {"requests": sum(self.statuses.values()), "ok": self.ok, "rows/s": self.throughput_rows_s,
                "p50 ms": 1e3 * self.p(50), "p99 ms": 1e3 * self.p(99), "errors": {
                    k: v for k, v in self.statuses.items() if k != 200}}


def run_load(url: str, payload: Callable[[int], dict], *, requests: int = 200, concurrency: int = 8,
             max_s: float = 20.0, timeout_s: float = 10.0, rows_per_request: int = 1) -> LoadResult:
    """POST ``payload(i)`` to ``url`` ``requests`` times from ``concurrency`` clients (or until ``max_s``)."""
    import httpx

    latencies, statuses = [], Counter()

    async def client(counter, deadline, http):
        while True:
            i = next(counter)
            if i >= requests or time.perf_counter() > deadline:
                return
            body = payload(i)
            start = time.perf_counter()
            try:
                response = await http.post(url, json=body)
                code = response.status_code
            except httpx.TimeoutException:
                code = "timeout"
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            statuses[code] += 1
            if code == 200:
                latencies.append(time.perf_counter() - start)

    async def main():
        counter, deadline = itertools.count(), time.perf_counter() + max_s
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as http:
            start = time.perf_counter()
            await asyncio.gather(*(client(counter, deadline, http) for _ in range(concurrency)))
            return time.perf_counter() - start

    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(wall=asyncio.run(main())), daemon=True)
    thread.start()
    thread.join(max_s + timeout_s + 30)
    if "wall" not in box:
        raise TimeoutError(f"the load generator did not finish within {max_s + timeout_s + 30:.0f} s")
    return LoadResult(latencies, statuses, box["wall"], rows_per_request)
