"""Tests for dlcourse.distributed: torchrun launches (success, a failing rank's traceback, timeout), local ranks
(collectives, errors, crashes, timeouts, never a fork of the caller, functions defined at run time), the backend
and device :func:`init` chooses for a number of GPUs (mocked), the hand-written gradient all-reduce of notebook 09
against DDP and the full batch, and the rank-0 helpers outside a process group.

Three torchrun launches on CPU (each starts Python processes that import torch: seconds); local ranks start from
a fork server. The ``gpu`` tests at the end need CUDA (two GPUs for NCCL) and skip with a reason elsewhere.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import dlcourse.distributed as dd


# ------------------------------------------------------------------------------------- notebook 09's function
def average_gradients(model: nn.Module) -> None:
    """Notebook 09, section 3: replace every .grad by its mean over all ranks."""
    world_size = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world_size


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def _data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _train_ranks(rank: int, world_size: int, use_ddp: bool, num_steps: int = 3) -> list[torch.Tensor]:
    model = _model()
    net = DDP(model) if use_ddp else model
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    X, y = _data()
    for _ in range(num_steps):
        loss = F.cross_entropy(net(X.chunk(world_size)[rank]), y.chunk(world_size)[rank])
        optimizer.zero_grad()
        loss.backward()
        if not use_ddp:
            average_gradients(model)
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def _train_single(num_steps: int = 3) -> list[torch.Tensor]:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    X, y = _data()
    for _ in range(num_steps):
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach() for p in model.parameters()]


def _assert_close(a: list[torch.Tensor], b: list[torch.Tensor], atol: float = 1e-6) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=atol), (x - y).abs().max()


def test_hand_all_reduce_equals_ddp_and_the_full_batch(world_size=3):  # 2 ranks: the torchrun test below
    hand = dd.run_local(_train_ranks, world_size, False, echo=False)
    ddp = dd.run_local(_train_ranks, world_size, True, echo=False)
    single = _train_single()
    for rank in range(world_size):
        assert all(torch.equal(a, b) for a, b in zip(hand[rank], hand[0])), "replicas stay identical"
        _assert_close(hand[rank], ddp[rank])
        _assert_close(ddp[rank], single)


def test_average_gradients_skips_parameters_without_gradient():
    def worker(rank, world_size):
        model = _model()
        model[0].weight.requires_grad_(False)
        F.cross_entropy(model(_data()[0][rank::2]), _data()[1][rank::2]).backward()
        average_gradients(model)
        return model[0].weight.grad, model[2].bias.grad

    (frozen0, bias0), (frozen1, bias1) = dd.run_local(worker, 2, echo=False)
    assert frozen0 is None and frozen1 is None and torch.equal(bias0, bias1)


# ------------------------------------------------------------------------------------------------ run_local
def test_run_local_collectives_and_results_by_rank(capsys):
    def worker(rank, world_size):
        x = torch.tensor([float(rank + 1)])
        dist.all_reduce(x)
        gathered = [None] * world_size
        dist.all_gather_object(gathered, rank * 10)
        print(f"I am {rank}")
        return {"rank": rank, "sum": x.item(), "gathered": gathered, "world": dist.get_world_size()}

    out = dd.run_local(worker, 3)
    assert [r["rank"] for r in out] == [0, 1, 2]
    assert all(r["sum"] == 6.0 and r["gathered"] == [0, 10, 20] and r["world"] == 3 for r in out)
    printed = capsys.readouterr().out
    assert "[rank 0] I am 0" in printed and "[rank 2] I am 2" in printed


def test_run_local_world_of_one_and_extra_args():
    assert dd.run_local(lambda rank, world_size, a, b: (rank, world_size, a + b), 1, 2, 3, echo=False) == [(0, 1, 5)]


@pytest.mark.parametrize("error", [AssertionError, NotImplementedError, ValueError])
def test_run_local_reraises_the_ranks_exception_with_its_traceback(error):
    def worker(rank, world_size):
        if rank == 1:
            raise error("wrong on rank 1")
        dist.barrier()  # rank 0 waits for rank 1, which never comes: it must be stopped, not hang

    start = time.monotonic()
    with pytest.raises(error, match="wrong on rank 1") as info:
        dd.run_local(worker, 2, echo=False, timeout=60)
    assert time.monotonic() - start < 30
    cause = str(info.value.__cause__)
    assert "rank 1 of 2 failed" in cause and "Traceback" in cause and "in worker" in cause


def test_run_local_reraises_an_exception_class_defined_at_run_time():
    class NotebookError(Exception):  # like a class a learner defines in a notebook: it travels by value
        pass

    def worker(rank, world_size):
        if rank == 0:
            raise NotebookError("raised on rank 0")

    with pytest.raises(NotebookError, match="raised on rank 0"):
        dd.run_local(worker, 2, echo=False)


def test_run_local_reports_a_crash_and_a_timeout():
    with pytest.raises(dd.LaunchError, match="rank 1 of 2 died without an exception"):
        dd.run_local(lambda rank, world_size: os._exit(3) if rank == 1 else time.sleep(60), 2, echo=False)

    def stuck(rank, world_size):
        if rank == 0:
            time.sleep(60)
        dist.barrier()

    start = time.monotonic()
    with pytest.raises(dd.LaunchError, match="did not finish within 2 s") as info:
        dd.run_local(stuck, 2, echo=False, timeout=2)
    assert info.value.timed_out and time.monotonic() - start < 20


def test_run_local_needs_picklable_results():
    with pytest.raises(dd.LaunchError, match="cannot be sent back"):
        dd.run_local(lambda rank, world_size: (lambda: rank), 2, echo=False)


def test_run_local_never_forks_the_caller_and_runs_functions_defined_at_run_time(monkeypatch):
    """Like a notebook's: a closure over a local variable, a class and a lambda defined here travel by value."""
    offset = 10.0
    monkeypatch.setenv("DLCOURSE_TEST_SET_LATE", "seen")  # set after the fork server may have started

    class Doubler:
        def __call__(self, x):
            return 2 * x

    def worker(rank, world_size, scale):
        x = torch.tensor([Doubler()(rank + offset) * scale])
        dist.all_reduce(x)
        return {"sum": x.item(), "parent": os.getppid(), "pid": os.getpid(), "threads": torch.get_num_threads(),
                "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpus": torch.cuda.device_count(),
                "env": os.environ.get("DLCOURSE_TEST_SET_LATE")}

    out = dd.run_local(worker, 2, 0.5, echo=False)
    assert [r["sum"] for r in out] == [21.0, 21.0]  # (10 + 11) * 2 * 0.5
    assert all(r["parent"] != os.getpid() for r in out), "a rank is never a fork of the caller"
    if "forkserver" in __import__("multiprocessing").get_all_start_methods():
        assert out[0]["parent"] == out[1]["parent"], "both ranks come from the one fork server"
    assert all(r["cuda_visible"] == "" and r["gpus"] == 0 for r in out), "ranks see no GPU"
    assert all(r["env"] == "seen" for r in out), "ranks see the caller's environment of now"
    assert all(r["threads"] == max(1, torch.get_num_threads() // 2) for r in out)
    assert dd.run_local(lambda rank, world_size: rank * offset, 2, echo=False) == [0.0, 10.0]


# ----------------------------------------------------------------------------------------- single-process helpers
def test_helpers_outside_a_process_group(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert dd.default_backend() == ("nccl" if torch.cuda.is_available() else "gloo")
    assert dd.is_main()
    dd.print0("only once")
    assert capsys.readouterr().out == "only once\n"
    path = dd.save0({"x": torch.arange(3)}, tmp_path / "sub" / "obj.pt")
    assert torch.equal(torch.load(path)["x"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["obj.pt"], "no temporary file is left behind"
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="must run under torchrun"):
        dd.init()


def test_torchrun_command():
    script = dd.torchrun_command("train.py", 3, ["--lr", 0.1])
    assert script[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3"]
    assert script[5:] == ["train.py", "--lr", "0.1"]
    assert dd.torchrun_command("pkg.module", 2)[5:] == ["-m", "pkg.module"]


# ------------------------------------------------------------------------------------ backend for N GPUs (mocked)
def _fake_gpus(monkeypatch, gpus: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)


@pytest.mark.parametrize(("gpus", "local_ranks", "backend", "says"), [
    (0, 2, "gloo", "no CUDA GPU"),
    (1, 1, "nccl", "one GPU per rank"),
    (1, 2, "gloo", "2 ranks on this machine but 1 GPU (NCCL needs one GPU per rank)"),
    (2, 2, "nccl", "cuda:0 to cuda:1 of 2 GPUs"),
    (4, 2, "nccl", "cuda:0 to cuda:1 of 4 GPUs"),
    (2, 3, "gloo", "3 ranks on this machine but 2 GPUs"),
])
def test_backend_for_a_number_of_gpus(monkeypatch, gpus, local_ranks, backend, says):
    _fake_gpus(monkeypatch, gpus)
    chosen, why = dd.backend_for(local_ranks)
    assert chosen == backend and says in why
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_ranks))
    assert dd.default_backend() == backend


@pytest.fixture
def torchrun_env(monkeypatch):
    """Rank ``rank`` of 2 on this machine, as torchrun sets it; records what init passes to torch."""
    calls: dict = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.update(backend=backend, **kw))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.update(set_device=device))

    def as_rank(rank: int) -> dict:
        for name, value in {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": 2, "LOCAL_WORLD_SIZE": 2,
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": 29999}.items():
            monkeypatch.setenv(name, str(value))
        calls.clear()
        return calls

    return as_rank


def test_init_two_ranks_on_one_gpu_use_gloo_on_the_cpu_and_say_so(monkeypatch, torchrun_env, capsys):
    _fake_gpus(monkeypatch, 1)
    for rank in (0, 1):
        calls = torchrun_env(rank)
        env = dd.init()
        assert (env.backend, env.device, env.rank, env.local_rank) == ("gloo", torch.device("cpu"), rank, rank)
        assert calls["backend"] == "gloo" and "set_device" not in calls and "device_id" not in calls
    printed = capsys.readouterr().out
    assert printed.count("NCCL needs one GPU per rank") == 1, "rank 0 says why, once"
    torchrun_env(1)
    with pytest.raises(RuntimeError, match="one CUDA GPU per local rank: 2 ranks on this machine, 1 GPU"):
        dd.init("nccl")


def test_init_two_ranks_on_two_gpus_use_nccl_one_gpu_each(monkeypatch, torchrun_env, capsys):
    _fake_gpus(monkeypatch, 2)
    for rank in (0, 1):
        calls = torchrun_env(rank)
        env = dd.init()
        assert (env.backend, env.device) == ("nccl", torch.device("cuda", rank))
        assert calls["set_device"] == torch.device("cuda", rank) and calls["device_id"] == torch.device("cuda", rank)
        assert calls["backend"] == "nccl"
    assert capsys.readouterr().out == ""
    calls = torchrun_env(1)
    assert dd.init("gloo").device == torch.device("cpu") and calls["backend"] == "gloo", "gloo is always the CPU"


# ------------------------------------------------------------------------------------------- torchrun launches
TRAIN_SCRIPT = """
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
import dlcourse.distributed as dd

env = dd.init(BACKEND)
assert (env.backend, env.device.type) == EXPECTED, (env.backend, env.device)
assert env.device.type == "cpu" or env.device.index == env.local_rank


def average_gradients(model):
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= env.world_size


def train(use_ddp):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(env.device)
    net = DDP(model, device_ids=[env.device.index] if env.device.type == "cuda" else None) if use_ddp else model
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(12, 5, generator=g), torch.randint(0, 3, (12,), generator=g)
    X, y = X.chunk(env.world_size)[env.rank].to(env.device), y.chunk(env.world_size)[env.rank].to(env.device)
    for _ in range(3):
        loss = F.cross_entropy(net(X), y)
        optimizer.zero_grad()
        loss.backward()
        if not use_ddp:
            average_gradients(model)
        optimizer.step()
    return [p.detach().cpu() for p in model.parameters()]


hand, ddp = train(False), train(True)
print(f"rank {env.rank} of {env.world_size} done with {env.backend} on {env.device}", flush=True)
dd.print0("printed by rank 0 only")
dd.save0({"hand": hand, "ddp": ddp}, f"{OUT}/params.pt")
dd.cleanup()
print("never printed: cleanup ends the process")
"""


def _launch_train_script(tmp_path, backend, expected, **launch_kwargs):
    script = tmp_path / "train.py"
    script.write_text(f"OUT, BACKEND, EXPECTED = {str(tmp_path)!r}, {backend!r}, {expected!r}\n"
                      + textwrap.dedent(TRAIN_SCRIPT))
    done = dd.launch(script, nproc=2, timeout=240, **launch_kwargs)
    assert done.returncode == 0
    return done, torch.load(tmp_path / "params.pt")


def test_launch_two_ranks_hand_all_reduce_equals_ddp(tmp_path, capsys):
    # gloo is the CPU, also on a GPU machine: the comparison with a CPU run stays CPU against CPU
    _, saved = _launch_train_script(tmp_path, "gloo", ("gloo", "cpu"))
    printed = capsys.readouterr().out
    assert "rank 0 of 2 done" in printed and "rank 1 of 2 done" in printed, "echo shows every rank's output"
    assert printed.count("printed by rank 0 only") == 1 and "never printed" not in printed
    _assert_close(saved["hand"], saved["ddp"])
    _assert_close(saved["ddp"], _train_single())


def test_launch_failure_shows_the_failing_ranks_traceback(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text(textwrap.dedent("""
        import os
        def load_data():
            raise FileNotFoundError("no data on rank " + os.environ["RANK"])
        if os.environ["RANK"] == "1":
            load_data()
        """))
    with pytest.raises(dd.LaunchError) as info:
        dd.launch(script, nproc=2, timeout=120, echo=False)
    error = info.value
    message = str(error)
    assert "rank 1 failed with FileNotFoundError" in message
    assert "Traceback (most recent call last)" in message and "in load_data" in message
    assert "no data on rank 1" in message and "ChildFailedError" not in message
    assert error.failed_rank == 1 and error.exception == "FileNotFoundError" and error.returncode != 0


def test_launch_timeout_kills_every_process(tmp_path):
    script = tmp_path / "hangs.py"
    pids = tmp_path / "pids"
    script.write_text(textwrap.dedent(f"""
        import os, time
        with open({str(pids)!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        time.sleep(120)
        """))
    start = time.monotonic()
    with pytest.raises(dd.LaunchError, match="did not finish within 5 s") as info:
        dd.launch(script, nproc=2, timeout=5, echo=False)
    assert info.value.timed_out and time.monotonic() - start < 30
    time.sleep(0.5)
    for pid in (pids.read_text().split() if pids.exists() else []):
        status = f"/proc/{pid}/status"
        if os.path.exists(status):  # gone, or a zombie waiting to be reaped: not running any more
            with open(status) as f:
                assert "zombie" in f.read().lower(), f"worker {pid} still runs"


# ----------------------------------------------------------------------------------------------- on a CUDA GPU
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2,
                                    reason="needs two CUDA GPUs (NCCL takes one GPU per rank)")


def _use_cuda_and_autograd() -> None:
    """What a notebook kernel does before it reaches run_local: CUDA work and a backward pass on the GPU (which
    starts autograd's device threads; a fork of this process could not run backward any more)."""
    x = torch.randn(256, 256, device="cuda", requires_grad=True)
    (x @ x).sum().backward()
    torch.cuda.synchronize()


@pytest.mark.gpu
@needs_cuda
def test_run_local_after_this_process_used_cuda_and_autograd():
    _use_cuda_and_autograd()
    hand = dd.run_local(_train_ranks, 2, False, echo=False, timeout=120)
    ddp = dd.run_local(_train_ranks, 2, True, echo=False, timeout=120)
    assert all(torch.equal(a, b) for a, b in zip(hand[0], hand[1]))
    _assert_close(hand[0], ddp[0])
    _assert_close(ddp[1], _train_single())  # the ranks and this reference all compute on the CPU


RUN_LOCAL_AFTER_CUDA = """
import torch
import torch.distributed as dist
import dlcourse.distributed as dd


def worker(rank, world_size):
    model = torch.nn.Linear(4, 2)
    model(torch.full((3, 4), float(rank))).sum().backward()
    dist.all_reduce(model.bias.grad)
    return model.bias.grad.tolist(), torch.cuda.is_available()


if __name__ == "__main__":
    x = torch.randn(256, 256, device="cuda", requires_grad=True)
    (x @ x).sum().backward()
    torch.cuda.synchronize()
    print("result", dd.run_local(worker, 2, echo=False, timeout=120))
"""


@pytest.mark.gpu
@needs_cuda
def test_run_local_first_called_after_cuda_in_a_fresh_process(tmp_path):
    """As in a notebook kernel: CUDA and a backward pass first, then the first run_local starts the fork server."""
    import subprocess

    script = tmp_path / "after_cuda.py"
    script.write_text(textwrap.dedent(RUN_LOCAL_AFTER_CUDA))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "result [([6.0, 6.0], False), ([6.0, 6.0], False)]" in done.stdout  # 3 rows per rank, 2 ranks


ONE_GPU_SCRIPT = """
import json
import torch
import torch.distributed as dist
import dlcourse.distributed as dd

env = dd.init()
x = torch.full((2,), float(env.rank + 1), device=env.device)
dist.all_reduce(x)
with open(f"{OUT}/rank{env.rank}.json", "w") as f:
    json.dump({"backend": env.backend, "device": str(env.device), "sum": x.tolist()}, f)
dd.cleanup()
"""


@pytest.mark.gpu
@needs_cuda
def test_launch_two_ranks_on_one_gpu_chooses_gloo_on_the_cpu(tmp_path):
    import json

    first_gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
    script = tmp_path / "one_gpu.py"
    script.write_text(f"OUT = {str(tmp_path)!r}\n" + textwrap.dedent(ONE_GPU_SCRIPT))
    done = dd.launch(script, nproc=2, timeout=240, env={"CUDA_VISIBLE_DEVICES": first_gpu}, echo=False)
    assert "2 ranks on this machine but 1 GPU (NCCL needs one GPU per rank)" in done.stdout
    for rank in range(2):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen == {"backend": "gloo", "device": "cpu", "sum": [3.0, 3.0]}


@pytest.mark.gpu
@needs_cuda
@needs_two_gpus
def test_launch_two_ranks_on_two_gpus_uses_nccl_one_gpu_each(tmp_path, capsys):
    done, saved = _launch_train_script(tmp_path, None, ("nccl", "cuda"))
    printed = capsys.readouterr().out
    assert "rank 0 of 2 done with nccl on cuda:0" in printed and "rank 1 of 2 done with nccl on cuda:1" in printed
    # float32 on the GPU (matmuls are IEEE float32 unless TF32 is switched on; it is off by default), 3 steps of a
    # tiny MLP: only the order of the sums differs from the CPU reference, a few float32 roundings
    _assert_close(saved["hand"], saved["ddp"], atol=1e-5)
    _assert_close(saved["ddp"], _train_single(), atol=1e-5)
