"""Tests for dlcourse.serving: the batching rule, the live batcher, input validation, drift, percentiles, and a real
server process on a free localhost port answering real HTTP requests (then stopped)."""

import asyncio
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serving extra (fastapi, uvicorn, httpx) is not installed")
import httpx  # noqa: E402

from dlcourse import serving as S  # noqa: E402


def test_plan_batches_closes_on_window_or_size():
    assert S.plan_batches([0.0, 0.001, 0.002, 0.010, 0.011], window_s=0.005, max_batch=2) == [[0, 1], [2], [3, 4]]
    assert S.plan_batches([0.0, 0.004, 0.0051, 0.006], window_s=0.005, max_batch=8) == [[0, 1], [2, 3]]
    assert S.plan_batches([0.0, 0.0, 0.0], window_s=0.0, max_batch=8) == [[0, 1, 2]]  # same instant: one batch
    assert S.plan_batches([0.0, 0.001, 0.002], window_s=1.0, max_batch=4, rows=[3, 2, 5]) == [[0], [1], [2]]
    assert S.plan_batches([], window_s=1.0, max_batch=4) == []


def test_batcher_runs_concurrent_requests_as_batches_and_returns_each_its_rows():
    sizes = []

    def predict(x):
        sizes.append(len(x))
        return x * 2

    async def main():
        batcher = S.Batcher(predict, window_s=0.05, max_batch=4)
        xs = [np.full((1, 3), i, np.float32) for i in range(10)]
        outs = await asyncio.gather(*(batcher(x) for x in xs))
        return xs, outs, batcher.stats

    xs, outs, stats = asyncio.run(main())
    assert all(np.array_equal(o, 2 * x) for x, o in zip(xs, outs))
    assert sizes == [4, 4, 2] and stats.batches == 3 and stats.mean_batch == 10 / 3


def test_batcher_refuses_when_full_and_survives_a_failing_model():
    async def main():
        batcher = S.Batcher(lambda x: x, window_s=0.05, max_batch=64, max_queue=2)
        first = asyncio.ensure_future(batcher(np.zeros((2, 1), np.float32)))
        await asyncio.sleep(0)
        with pytest.raises(S.Overloaded):
            await batcher(np.zeros((1, 1), np.float32))
        await first

        def broken(x):
            raise RuntimeError("model failed")
        failing = S.Batcher(broken, window_s=0.0)
        with pytest.raises(RuntimeError, match="model failed"):
            await failing(np.zeros((1, 1), np.float32))
        failing.predict = lambda x: x + 1  # the worker is still alive
        assert (await failing(np.zeros((1, 1), np.float32)))[0, 0] == 1

    asyncio.run(main())


@pytest.mark.parametrize("rows, status, words", [
    ([], 422, "non-empty"), ([[1.0, 2.0]], 422, "length [2]"), ([[1.0, 2.0, 3.0], [1.0]], 422, "length [1, 3]"),
    ([[1.0, float("nan"), 0.0]], 422, "NaN"), ([[0.0, 0.0, float("inf")]], 422, "infinity"),
    ([[0.0] * 3] * 5, 413, "limit is 4"), ([["a", 1, 2]], 422, "number"), ([1, 2, 3], 422, "list of numbers"),
])
def test_validate_says_what_is_wrong(rows, status, words):
    with pytest.raises(S.BadRequest) as info:
        S.validate(rows, n_features=3, max_rows=4)
    assert info.value.status == status and words in str(info.value)


def test_validate_returns_float32_rows():
    x = S.validate([[1, 2, 3], [4.5, 5, 6]], n_features=3, max_rows=4)
    assert x.dtype == np.float32 and x.shape == (2, 3)


def test_drift_statistic_is_small_in_distribution_and_large_after_a_shift():
    rng = np.random.default_rng(0)
    monitor = S.DriftMonitor(mean=np.zeros(4), std=np.ones(4), window=256)
    for _ in range(8):
        monitor.update(rng.normal(size=(64, 4)))
    assert monitor.statistic() < 4
    for _ in range(8):
        monitor.update(rng.normal(size=(64, 4)) + np.array([0, 0, 1.0, 0]))
    assert monitor.statistic() > 10


def test_percentile_equals_numpy():
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 100):
        values = list(rng.exponential(size=n))
        for q in (0, 1, 50, 90, 99, 100):
            assert S.percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-12)
    with pytest.raises(ValueError):
        S.percentile([], 50)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    example = torch.randn(2, 6)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", max=4096)},))
    path = tmp_path_factory.mktemp("model") / "model.pt2"
    torch.export.save(program, path)
    stats = path.with_suffix(".npz")
    np.savez(stats, mean=np.zeros(6), std=np.ones(6))
    return model, path, stats


def test_a_real_server_answers_validates_batches_and_stops(model_file):
    model, path, stats = model_file
    x = torch.randn(5, 6)
    with S.ModelServer(path, version="7", window_s=0.01, max_rows=16, stats=stats) as server:
        answer = httpx.post(f"{server.url}/predict", json={"inputs": x.tolist()}, timeout=30)
        assert answer.status_code == 200 and answer.json()["model_version"] == "7"
        assert np.allclose(answer.json()["outputs"], model(x).detach().numpy(), atol=1e-6)
        assert answer.json()["predictions"] == model(x).argmax(1).tolist()
        bad = {"short row": {"inputs": [[0.0] * 5]}, "text": {"inputs": [["a"] * 6]}, "no inputs": {"x": 1},
               "too many rows": {"inputs": [[0.0] * 6] * 17}}
        codes = {k: httpx.post(f"{server.url}/predict", json=v, timeout=30).status_code for k, v in bad.items()}
        assert codes == {"short row": 422, "text": 422, "no inputs": 422, "too many rows": 413}
        nan = httpx.post(f"{server.url}/predict", content='{"inputs": [[NaN, 0, 0, 0, 0, 0]]}',
                         headers={"content-type": "application/json"}, timeout=30)
        assert nan.status_code == 422 and "NaN" in nan.json()["detail"]
        timings = []
        with httpx.Client() as client:
            for _ in range(10):
                start = time.perf_counter()
                client.get(f"{server.url}/health")
                timings.append(time.perf_counter() - start)
        assert S.percentile(timings, 50) < 0.02, "TCP_NODELAY lost? ~40 ms per answer is Nagle + delayed ACK"
        load = S.run_load(f"{server.url}/predict", lambda i: {"inputs": [[float(i)] * 6]}, requests=40,
                          concurrency=8, max_s=30)
        assert load.ok == 40 and load.p(99) >= load.p(50) > 0
        health = httpx.get(f"{server.url}/health", timeout=30).json()
        assert health["status"] == "ok" and health["warmup_s"] is not None and health["drift_z"] > 10
        assert health["requests"] == 1 + 4 + 1 + 40 - 2  # "text" and "no inputs" fail the schema, before the route
        process = server.process
    assert process.poll() is not None, "the server process is stopped when the with block ends"


def test_a_server_that_cannot_start_says_why(tmp_path):
    bogus = tmp_path / "model.txt"
    bogus.write_text("not a model")
    with pytest.raises(RuntimeError, match=r"must be \.onnx"):
        with S.ModelServer(bogus, start_timeout_s=60):
            pass


def test_a_server_stops_when_its_parent_dies(model_file):
    _, path, _ = model_file
    code = (f"import dlcourse.serving as S; s = S.ModelServer({str(path)!r}).__enter__(); "
            "print(s.process.pid, flush=True); import os; os._exit(0)")
    parent = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    pid = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    assert not _alive(pid), "the orphaned server process is still running"


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
