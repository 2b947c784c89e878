"""Notebook 10 (profiling and torch.compile): the from-scratch timing harness against torch.utils.benchmark, and
the profiler facts the notebook and lab 10 rely on (operator and event names that a torch upgrade could change).

``time_it`` is a compact copy of the notebook's harness (notebooks are not importable, and the lab asks learners to
write their own, so it does not belong in the package).
"""

import time
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
import torch.utils.benchmark as benchmark
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import v2


def time_it(fn, *, warmup=3, repeats=10, device=torch.device("cpu"), clock=time.perf_counter):
    """Seconds per timed call of fn(), after untimed warm-up calls; synchronises CUDA (as in notebook 10)."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    seconds = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync()
        seconds.append(clock() - start)
    return seconds


class SimulatedDevice:
    """Fake clock and device: on 'cuda' fn() only queues its work and synchronize() moves the clock past it."""

    def __init__(self, durations, gpu):
        self.durations, self.gpu = list(durations), gpu
        self.now, self.queued, self.calls, self.syncs = 0.0, 0.0, 0, 0

    def clock(self):
        return self.now

    def fn(self):
        work = self.durations[self.calls]
        self.calls += 1
        if self.gpu:
            self.queued += work
        else:
            self.now += work

    def synchronize(self, device=None):
        self.syncs += 1
        self.now, self.queued = self.now + self.queued, 0.0


def quiet_profile():
    return profile(activities=[ProfilerActivity.CPU])


# ------------------------------------------------------------------------------------------- the timing harness
def test_harness_agrees_with_torch_benchmark_on_sleep():
    nap = 0.01  # long enough that a busy machine's wake-up delays stay well inside the tolerance
    ours = sorted(time_it(lambda: time.sleep(nap), warmup=1, repeats=7))
    theirs = benchmark.Timer("time.sleep(nap)", globals={"time": time, "nap": nap}).blocked_autorange(
        min_run_time=0.05)
    assert len(ours) == 7 and ours[0] >= nap and theirs.median >= nap
    assert abs(ours[3] - theirs.median) < 0.3 * nap


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_harness_discards_warmup_and_synchronises_only_on_cuda(device_type):
    sim = SimulatedDevice([0.5, 0.2, 0.010, 0.012, 0.011], gpu=device_type == "cuda")
    with mock.patch.object(torch.cuda, "synchronize", sim.synchronize):
        times = time_it(sim.fn, warmup=2, repeats=3, device=torch.device(device_type), clock=sim.clock)
    assert sim.calls == 5
    assert times == pytest.approx([0.010, 0.012, 0.011], abs=1e-12)
    assert sim.syncs == (1 + 3 if device_type == "cuda" else 0)


def test_unsynchronised_timing_on_the_simulated_gpu_measures_nothing():
    """The simulation is faithful: leaving out the synchronisation gives zero times (only queuing)."""
    sim = SimulatedDevice([0.5, 0.010, 0.012], gpu=True)
    times = time_it(sim.fn, warmup=1, repeats=2, device=torch.device("cpu"), clock=sim.clock)  # no sync
    assert times == [0.0, 0.0] and sim.queued == pytest.approx(0.522)


# ------------------------------------------------------------------------------ profiler facts used by 10 / lab 10
def test_item_reads_are_counted_as_local_scalar_dense():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)) for _ in range(4)]

    def reads(fn):
        with quiet_profile() as prof:
            fn()
        return sum(e.count for e in prof.key_averages() if e.key == "aten::_local_scalar_dense")

    def every_step():
        for X, y in batches:
            loss = F.cross_entropy(model(X), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()

    def once():
        total = torch.zeros(())
        for X, y in batches:
            loss = F.cross_entropy(model(X), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach()
        float(total)

    assert reads(every_step) == 4
    assert reads(once) == 1


def test_self_time_names_the_working_operator_and_total_time_the_wrapper():
    # A wide input and a narrow output: the matmul does 2048 multiply-adds per element the ReLU touches, so a
    # stall of the cheap op on a busy 2-core runner (seen once in CI with 512 -> 512) cannot outweigh it.
    model = nn.Sequential(nn.Linear(2048, 64), nn.ReLU())
    X = torch.randn(256, 2048)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # several threads on a busy machine can stall the cheap ReLU
    try:
        with torch.no_grad():
            model(X)
            with quiet_profile() as prof:
                for _ in range(10):
                    model(X)
    finally:
        torch.set_num_threads(threads)
    events = prof.key_averages()
    assert max(events, key=lambda e: e.self_cpu_time_total).key == "aten::addmm"
    assert max(events, key=lambda e: e.cpu_time_total).key == "aten::linear"


def test_dataloader_and_record_function_events_appear_in_key_averages():
    class Items(Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.full((2,), float(i))

    with quiet_profile() as prof:
        for batch in DataLoader(Items(), batch_size=4):
            with record_function("step"):
                batch.sum()
    keys = {e.key: e.count for e in prof.key_averages()}
    loader = [k for k in keys if k.startswith("enumerate(DataLoader)")]
    assert keys["step"] == 3 and len(loader) == 1 and keys[loader[0]] == 4   # 3 batches + the final StopIteration


def test_chrome_trace_is_json_with_labelled_events(tmp_path):
    import json

    with quiet_profile() as prof:
        with record_function("forward"):
            torch.randn(16, 16) @ torch.randn(16, 16)
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    names = {e.get("name") for e in json.loads(path.read_text())["traceEvents"]}
    assert "forward" in names and "aten::mm" in names


# ------------------------------------------------------------------------------ the data-loading fixes of section 3
def test_batched_preprocessing_equals_per_item_preprocessing():
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    preprocess = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.GaussianBlur(kernel_size=5, sigma=1.0),
                             v2.Normalize(mean=[0.3] * 3, std=[0.3] * 3)])
    per_item = torch.stack([preprocess(image) for image in images])
    torch.testing.assert_close(preprocess(images), per_item, atol=1e-5, rtol=0)
    loader = DataLoader(TensorDataset(preprocess(images)), batch_size=4)
    torch.testing.assert_close(torch.cat([b for (b,) in loader]), per_item, atol=1e-5, rtol=0)


def test_graph_break_from_item_is_reported_by_dynamo_explain():
    def with_item(X):
        h = torch.relu(X @ X.T)
        if h.mean().item() > 1.0:
            h = h / h.mean()
        return h.sum(dim=1)

    def without_item(X):
        h = torch.relu(X @ X.T)
        return torch.where(h.mean() > 1.0, h / h.mean(), h).sum(dim=1)

    X = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(with_item(X), without_item(X))
    assert torch._dynamo.explain(with_item)(X).graph_break_count >= 1
    assert torch._dynamo.explain(without_item)(X).graph_break_count == 0


# ------------------------------------------------------------------------------------ on a GPU (notebook 10 at full)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
def test_profiler_records_device_time_on_cuda():
    a, b = torch.randn(512, 512, device="cuda"), torch.randn(512, 512, device="cuda")
    a @ b
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
    events = prof.key_averages()
    mm = next(e for e in events if e.key == "aten::mm")
    assert mm.count == 3 and mm.self_device_time_total > 0            # the GPU's own time for its kernels
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    assert kernels and max(e.self_device_time_total for e in kernels) > 0
    assert "aten::mm" in events.table(sort_by="self_device_time_total", row_limit=10)


@pytest.mark.gpu
@needs_cuda
def test_compiled_model_equals_eager_on_cuda():
    """torch.compile on CUDA (Triton kernels): the same outputs and gradients as eager, to float32 rounding."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.LayerNorm(128), nn.Linear(128, 10)).cuda()
    X = torch.randn(256, 64, device="cuda")
    y = torch.randint(0, 10, (256,), device="cuda")
    torch._dynamo.reset()
    compiled = torch.compile(model)
    eager_loss = F.cross_entropy(model(X), y)
    eager_grads = torch.autograd.grad(eager_loss, list(model.parameters()))
    compiled_loss = F.cross_entropy(compiled(X), y)
    compiled_grads = torch.autograd.grad(compiled_loss, list(model.parameters()))
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-4, atol=1e-5)
    for g, h in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(g, h, rtol=1e-3, atol=1e-5)
    torch._dynamo.reset()


def _small_cnn_epoch(seed: int, item_every_step: bool) -> tuple[float, list[torch.Tensor]]:
    """Notebook 10's two loops on fixed batches: mean loss read every step or once; returns (mean, weights)."""
    from dlcourse.models import SmallCNN

    gen = torch.Generator().manual_seed(seed)
    batches = [(torch.rand(64, 3, 32, 32, generator=gen).cuda(), torch.randint(0, 6, (64,), generator=gen).cuda())
               for _ in range(12)]
    torch.manual_seed(seed)
    model = SmallCNN(width=4, depth=2).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    total = 0.0 if item_every_step else torch.zeros((), device="cuda")
    for X, y in batches:
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y) if item_every_step else loss.detach() * len(y)
    return float(total) / (64 * len(batches)), [p.detach().clone() for p in model.parameters()]


@pytest.mark.gpu
@needs_cuda
def test_cudnn_deterministic_makes_the_two_loops_of_notebook_10_agree_on_cuda():
    before = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        every, weights_every = _small_cnn_epoch(0, True)
        once, weights_once = _small_cnn_epoch(0, False)
        again, weights_again = _small_cnn_epoch(0, False)
    finally:
        torch.backends.cudnn.deterministic = before
    assert abs(every - once) < 1e-5                      # float64 in Python against float32 on the device
    assert all(torch.equal(a, b) for a, b in zip(weights_every, weights_once))
    assert again == once and all(torch.equal(a, b) for a, b in zip(weights_again, weights_once))
