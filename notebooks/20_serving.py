# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 20 · Serving a model
#
# A trained model is useful once other programs can ask it questions. This notebook puts a course model behind an
# HTTP API the way a small production service does: the model is exported out of Python's training code (ONNX,
# `torch.export`, int8), a FastAPI app validates every request and answers with the model's version, and a
# **dynamic batcher** collects requests that arrive close together and runs them through the model as one batch.
# A load generator then measures what that buys: throughput and tail latency (p50, p99) against the number of
# concurrent clients and the batching window, on the machine running this notebook. The last part adds what a
# notebook never needs and a service always does: warm-up, limits, back-pressure and watching the inputs drift.
#
# **Learning goals**
# - Export a model to ONNX and `torch.export`, quantise it to int8 with ONNX Runtime, and check each runtime's
#   outputs and accuracy against PyTorch's.
# - Validate requests so that bad input gets a 4xx with a reason and never crashes the server.
# - Explain the batching rule (window and maximum batch) and measure its effect on throughput and p50/p99 latency.
# - Compute latency percentiles from raw timings, and read a throughput-latency trade-off.
# - Add warm-up, back-pressure (503), a time limit (504) and an input-drift statistic, and see each work.
#
# **Prerequisites:** notebook 01 (training loop) and notebook 12 (ONNX export and ONNX Runtime).
#
# **Time:** seconds at `smoke`; about two minutes at `small` on a laptop CPU; at `full` a wider model and longer
# load tests. Every server runs in its own process on a free port of 127.0.0.1 and is stopped at the end of its
# cell; nothing leaves this machine. The last cell prints how long this run took.
#
# Needs the `serving` extra (`fastapi`, `uvicorn`, `httpx`) and the `export` extra (ONNX); `make lab` installs both.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import httpx
import matplotlib.pyplot as plt
import numpy as np
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

import dlcourse
from dlcourse import serving

cfg = dlcourse.setup(seed=0)
device = cfg.device
t_start = time.perf_counter()
workdir = Path(tempfile.mkdtemp(prefix="dlcourse-serving-"))  # model files; removed in the last cell

# %% [markdown]
# ## 1. A model worth serving, exported three ways
# The model is an MLP on the course's 8×8 digits (64 inputs, 10 classes), wider at `small` and `full` so that the
# model's own time matters next to the HTTP overhead. A server should not depend on the training code, so we
# export it:
# - **`torch.export`** (`.pt2`) captures the forward pass as a graph with its weights; the server loads it with
#   PyTorch but without the model's Python class ("eager PyTorch" below).
# - **ONNX** (`.onnx`) stores the same graph in a portable format that ONNX Runtime runs without PyTorch at all.
# - **int8**: ONNX Runtime's dynamic quantisation stores the weights as 8-bit integers (a quarter of the bytes)
#   and quantises activations on the fly.
#
# The batch dimension is exported as dynamic, so one file serves any batch size.

# %%
hidden = cfg.pick(smoke=256, small=2048, full=4096)
epochs = cfg.pick(smoke=2, small=15, full=30)
splits = dlcourse.data.digits(seed=cfg.seed, flatten=True)
train_loader, val_loader, test_loader = dlcourse.data.make_loaders(splits.train, splits.val, splits.test,
                                                                   batch_size=64, seed=cfg.seed)
model = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                            torch.nn.ReLU(), torch.nn.Linear(hidden, 10)).to(device)
history = dlcourse.fit(model, torch.optim.AdamW(model.parameters(), lr=1e-3), train_loader, val_loader,
                       num_epochs=epochs, progress=False)
model = model.cpu().eval()  # the servers below run on the CPU, like most small inference services
X_test = torch.cat([x for x, _ in test_loader]).numpy()
y_test = torch.cat([y for _, y in test_loader]).numpy()
accuracy = {"PyTorch": float((model(torch.from_numpy(X_test)).argmax(1).numpy() == y_test).mean())}
print(f"{dlcourse.models.count_parameters(model):,} parameters; test accuracy {accuracy['PyTorch']:.3f}")
assert accuracy["PyTorch"] > 0.5  # it learned the digits, even at smoke

# %%
example = torch.from_numpy(X_test[:4])
batch = torch.export.Dim("batch", max=4096)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # exporter chatter
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, workdir / "model.pt2")
    torch.onnx.export(model, (example,), workdir / "model.onnx", dynamo=True, input_names=["x"],
                      output_names=["logits"], dynamic_shapes=({0: batch},), verbose=False, external_data=False)
    logging.disable(logging.WARNING)  # quantize_dynamic's advice to pre-process, logged on the root logger
    quantize_dynamic(workdir / "model.onnx", workdir / "model-int8.onnx", weight_type=QuantType.QInt8)
    logging.disable(logging.NOTSET)
files = {"eager PyTorch (.pt2)": workdir / "model.pt2", "ONNX Runtime": workdir / "model.onnx",
         "ONNX Runtime int8": workdir / "model-int8.onnx"}

runtimes = {name: serving.load_predict(path, threads=1)[0] for name, path in files.items()}
reference = model(torch.from_numpy(X_test)).detach().numpy()
for name, predict in runtimes.items():
    out = predict(X_test)
    accuracy[name] = float((out.argmax(1) == y_test).mean())
    print(f"{name:22s} {files[name].stat().st_size / 1e6:7.2f} MB on disk, max |logit difference| "
          f"{np.abs(out - reference).max():.2e}, test accuracy {accuracy[name]:.3f}")
assert np.abs(runtimes["ONNX Runtime"](X_test) - reference).max() < 1e-4
assert np.abs(runtimes["eager PyTorch (.pt2)"](X_test) - reference).max() < 1e-5
assert files["ONNX Runtime int8"].stat().st_size < 0.4 * files["ONNX Runtime"].stat().st_size
assert accuracy["ONNX Runtime int8"] > accuracy["PyTorch"] - 0.05  # int8 costs little accuracy here

# %% [markdown]
# ### The cost of one call, and the first call
# Before any HTTP, time each runtime on its own (one thread, the setting the servers use): per row with a batch of
# 1 and with a batch of 64. A batch of 1 pays the per-call overhead and reads every weight for one row; a batch
# reads the weights once for all its rows, which is what batching in the server exploits. The **first** call also
# pays for one-time work (allocations, kernel selection, lazy initialisation): that is why the server runs one
# **warm-up** prediction before it accepts requests.

# %%
def seconds_per_call(predict, x, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predict(x)
        best = min(best, time.perf_counter() - start)
    return best


repeats = cfg.pick(smoke=5, small=30, full=50)
cold = {name: serving.load_predict(path, threads=1)[0] for name, path in files.items()}  # fresh sessions
print(f"{'runtime':22s} {'first call':>11s} {'batch 1, per row':>17s} {'batch 64, per row':>18s}")
per_row = {}
for name, predict in cold.items():
    start = time.perf_counter()
    predict(X_test[:1])
    first = time.perf_counter() - start
    one = seconds_per_call(predict, X_test[:1], repeats)
    many = seconds_per_call(predict, X_test[:64], repeats) / 64
    per_row[name] = (one, many)
    print(f"{name:22s} {1e3 * first:9.2f} ms {1e6 * one:14.1f} µs {1e6 * many:15.1f} µs")
assert all(many < one for one, many in per_row.values())  # a batch is cheaper per row, for every runtime

# %% [markdown]
# ## 2. The server
# `dlcourse.serving` builds the service from pieces you can read (`dlcourse/serving/`): `make_app` is the FastAPI
# app, `Batcher` the dynamic batcher, and `ModelServer` starts `python -m dlcourse.serving.server MODEL` in a
# **separate process** on a free localhost port, so the clients in this notebook do not share an interpreter with
# the server they measure. The API:
#
# - `POST /predict` with `{"inputs": [[64 numbers], ...]}` answers `{"outputs", "predictions", "model_version"}`;
# - `GET /health` answers the status, version, warm-up time, requests and batches served, and a drift statistic.
#
# Validation runs before the model sees anything: the schema (FastAPI with pydantic) rejects what is not a list
# of lists of numbers, and `serving.validate` then checks the row lengths, the batch size and finite values.

# %%
stats = workdir / "train-stats.npz"  # the training inputs' mean and standard deviation, for the drift monitor
X_train = torch.cat([x for x, _ in train_loader]).numpy()
np.savez(stats, mean=X_train.mean(0), std=X_train.std(0))

bad_requests = {
    "a row with 63 numbers": {"inputs": [[0.0] * 63]},
    "rows of different lengths": {"inputs": [[0.0] * 64, [0.0] * 32]},
    "text instead of numbers": {"inputs": [["pixel"] * 64]},
    "no inputs field": {"images": [[0.0] * 64]},
    "an empty batch": {"inputs": []},
    "300 rows (limit 256)": {"inputs": [[0.0] * 64] * 300},
}
with serving.ModelServer(files["ONNX Runtime"], version="digits-mlp-1", stats=stats) as server:
    answer = httpx.post(f"{server.url}/predict", json={"inputs": X_test[:3].tolist()}).json()
    print("good request ->", {k: v for k, v in answer.items() if k != "outputs"})
    codes = {}
    for what, body in bad_requests.items():
        response = httpx.post(f"{server.url}/predict", json=body)
        codes[what] = response.status_code
        detail = response.json()["detail"]
        print(f"{what:28s} -> {response.status_code}: {detail if isinstance(detail, str) else detail[0]['msg']}")
    nan = httpx.post(f"{server.url}/predict", content='{"inputs": [[NaN' + ", 0" * 63 + "]]}",
                     headers={"content-type": "application/json"})
    print(f"{'a NaN (JSON allows it here)':28s} -> {nan.status_code}: {nan.json()['detail']}")
    health = httpx.get(f"{server.url}/health").json()
    print("health ->", {k: health[k] for k in ("status", "model_version", "warmup_s", "requests", "rejected")})
assert answer["predictions"] == model(torch.from_numpy(X_test[:3])).argmax(1).tolist()
assert answer["model_version"] == "digits-mlp-1"
assert all(400 <= code < 500 for code in [*codes.values(), nan.status_code]) and health["status"] == "ok"

# %% [markdown]
# ## 3. Dynamic batching
# With one request at a time the model runs once per request. A **dynamic batcher** opens a batch when a request
# arrives and closes it `window` seconds later, or as soon as it holds `max_batch` rows; the whole batch runs as
# one call, and each request gets its own rows back. A request waits at most one window (plus the model time of
# the batches ahead of it). The rule is short enough to replay on a list of arrival times: `serving.plan_batches`
# is exactly what the live `Batcher` does. With requests arriving at random (a Poisson stream of 2,000 per
# second), the batches it forms:

# %%
rng = np.random.default_rng(cfg.seed)
arrivals = np.cumsum(rng.exponential(1 / 2000, size=4000))
windows_ms = [0, 1, 2, 5, 10, 20]
mean_batch = [len(arrivals) / len(serving.plan_batches(arrivals.tolist(), w / 1e3, max_batch=64))
              for w in windows_ms]
for w, b in zip(windows_ms, mean_batch):
    print(f"window {w:>2} ms: mean batch {b:5.2f} requests (rate × window + 1 = {2000 * w / 1e3 + 1:5.1f})")
assert mean_batch == sorted(mean_batch) and mean_batch[0] == 1.0  # wider window, fuller batches

# %% [markdown]
# Now the real thing: for each batching window a server, and against it a **closed-loop** load generator
# (`serving.run_load`): `concurrency` clients each send one request (one row) and the next as soon as the answer
# arrives, until a fixed number of requests or a time limit. Throughput is rows answered per second; latency is
# measured per request on the client, from sending to the full answer. Both depend on this machine and on what
# else it is doing, so read the measured numbers, not a rule: where the model's time per call dominates, fuller
# batches raise throughput; where HTTP handling dominates (a small model), the window mostly adds waiting.

# %%
server_windows_ms = cfg.pick(smoke=[0, 5], small=[0, 2, 10], full=[0, 2, 10])
concurrencies = cfg.pick(smoke=[1, 8], small=[1, 4, 16, 64], full=[1, 4, 16, 64])
n_requests = cfg.pick(smoke=16, small=400, full=1500)
rows_payload = [{"inputs": [row.tolist()]} for row in X_test]


def one_row(i):
    return rows_payload[i % len(rows_payload)]


results = {}
for window in server_windows_ms:
    with serving.ModelServer(files["ONNX Runtime"], window_s=window / 1e3, max_batch=64) as server:
        for c in concurrencies:
            batches_before = httpx.get(f"{server.url}/health").json()["batches"]
            load = serving.run_load(f"{server.url}/predict", one_row, requests=n_requests, concurrency=c,
                                    max_s=cfg.pick(smoke=10, small=20, full=30))
            batches = httpx.get(f"{server.url}/health").json()["batches"] - batches_before
            results[window, c] = {**load.summary(), "mean batch": load.ok / max(batches, 1)}
            assert load.ok == sum(load.statuses.values()), load.statuses  # every request answered
print(f"{'window':>7s} {'clients':>8s} {'rows/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'mean batch':>11s}")
for (window, c), r in results.items():
    print(f"{window:>5} ms {c:>8d} {r['rows/s']:8.0f} {r['p50 ms']:8.2f} {r['p99 ms']:8.2f} {r['mean batch']:11.2f}")
assert all(r["mean batch"] == 1 for (w, c), r in results.items() if w == 0 or c == 1)  # nothing to batch
assert results[max(server_windows_ms), max(concurrencies)]["mean batch"] > 1.5  # concurrent requests share calls

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
for window in server_windows_ms:
    ax1.plot(concurrencies, [results[window, c]["rows/s"] for c in concurrencies], "o-", label=f"window {window} ms")
    ax2.plot(concurrencies, [results[window, c]["p99 ms"] for c in concurrencies], "o-", label=f"window {window} ms")
ax1.set(xscale="log", xlabel="concurrent clients", ylabel="rows answered per second", title="throughput")
ax2.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="p99 latency (ms)", title="tail latency")
ax1.legend()
fig.tight_layout()
plt.close(fig)
fig

# %% [markdown]
# **Reading the plot.** With one client there is nothing to batch: a window only makes that client wait. As
# clients are added, the unbatched server runs one model call per request, one after another, so its latency grows
# with the queue; the batched server answers a whole window's requests with one call. p99 is the latency that 1 in
# 100 requests exceeds: it is what the slowest users see, and it grows faster than the median when a queue forms.
#
# ### PyTorch, ONNX Runtime and int8 behind the same server
# The same load against each runtime, batched (5 ms window) with many clients:

# %%
compare = cfg.pick(smoke=["ONNX Runtime int8"], small=list(files), full=list(files))
clients = max(concurrencies)
by_runtime = {}
for name in compare:
    with serving.ModelServer(files[name], window_s=0.005, max_batch=64) as server:
        load = serving.run_load(f"{server.url}/predict", one_row, requests=n_requests, concurrency=clients,
                                max_s=cfg.pick(smoke=10, small=20, full=30))
    by_runtime[name] = load.summary()
    print(f"{name:22s} {by_runtime[name]['rows/s']:8.0f} rows/s, p50 {by_runtime[name]['p50 ms']:7.2f} ms, "
          f"p99 {by_runtime[name]['p99 ms']:7.2f} ms")
assert all(r["ok"] == r["requests"] for r in by_runtime.values())

# %% [markdown]
# ## 4. What production adds
# - **Warm-up.** The server runs one prediction before it prints its address (its `/health` reports the seconds),
#   so the first user does not pay for the first call measured in section 1.
# - **Back-pressure.** When requests arrive faster than the model can answer, an unbounded queue makes *every*
#   request late. The batcher refuses work beyond `max_queue` waiting rows at once with **503** (retry later),
#   which a load balancer can route elsewhere.
# - **Time limits.** A request not answered within `timeout_s` gets **504** instead of holding its connection
#   forever. A time limit shorter than the batching window is a misconfiguration: every request would time out.
# - **Input drift.** A model is only as good as the match between today's inputs and its training data.
#   `DriftMonitor` compares the mean of the last 512 input rows with the training mean, feature by feature, in
#   units of the standard error: around 1–3 for inputs like the training data, far more after a shift.
#
# Below, a server with a tiny queue gets a burst it cannot absorb, one with a time limit below its window gets a
# request, and the drift statistic watches test digits and then the same digits with their contrast halved (a
# new camera, say).

# %%
with serving.ModelServer(files["ONNX Runtime"], window_s=0.05, max_batch=64, max_queue=4) as server:
    burst = serving.run_load(f"{server.url}/predict", one_row, requests=32, concurrency=16, max_s=10)
    after = httpx.post(f"{server.url}/predict", json=one_row(0))
print("burst against max_queue=4:", dict(burst.statuses), "| a request after the burst:", after.status_code)
assert burst.statuses[503] > 0 and burst.ok > 0 and after.status_code == 200

with serving.ModelServer(files["ONNX Runtime"], window_s=0.2, timeout_s=0.05) as server:
    late = httpx.post(f"{server.url}/predict", json=one_row(0))
print(f"time limit 0.05 s, window 0.2 s: {late.status_code} {late.json()['detail']}")
assert late.status_code == 504

drift = {}
with serving.ModelServer(files["ONNX Runtime"], stats=stats) as server:
    for name, inputs in {"test digits": X_test, "contrast halved": 0.5 * X_test}.items():
        for start in range(0, 512, 64):
            rows = inputs[np.arange(start, start + 64) % len(inputs)]
            httpx.post(f"{server.url}/predict", json={"inputs": rows.tolist()})
        drift[name] = httpx.get(f"{server.url}/health").json()["drift_z"]
        print(f"{name:16s}: drift statistic {drift[name]:6.1f}")
assert drift["contrast halved"] > 3 * drift["test digits"]

# %% [markdown]
# ## Summary
# - Export decouples serving from training: ONNX Runtime and `torch.export` give PyTorch's outputs (checked above),
#   and int8 weights take about a quarter of the bytes (file sizes above) at the accuracy measured here.
# - Validate everything a client sends; answer 4xx with the reason, and keep the server up.
# - Dynamic batching trades a bounded wait (the window) for fewer, fuller model calls; whether that raises
#   throughput or only adds latency depends on how the model's time compares with the per-request overhead —
#   measure it, as the table above does for this machine.
# - Report tail latency (p99), not only the mean: queues hurt the slowest requests first.
# - Warm up before accepting traffic, refuse work you cannot finish (503), bound every wait (504), and watch
#   the inputs for drift.

# %%
shutil.rmtree(workdir, ignore_errors=True)
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **Open loop.** A closed-loop client waits for each answer, so a slow server slows its own load. Write an
#    open-loop generator that sends requests at a fixed rate (Poisson arrivals) whatever the answers, and find the
#    rate at which p99 latency explodes, with and without batching.
# 2. **Adaptive window.** Close a batch early when the queue is empty and the batch has waited at least a minimum;
#    compare p50 at one client and throughput at 64 with the fixed window.
# 3. **Two workers.** Run two server processes on two ports and a client that sends to both in turn. When does it
#    beat one server with batching, on this machine?
# 4. **Drift alarm.** Choose a threshold for the drift statistic from its values on held-out clean inputs (e.g.
#    the 99th percentile over many windows) and measure how many rows of shifted input it takes to raise it.
