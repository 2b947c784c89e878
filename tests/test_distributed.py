"""Tests for dlcourse.distributed: torchrun launches (success, a failing rank's traceback, timeout), forked ranks
(collectives, errors, crashes, timeouts), the hand-written gradient all-reduce of notebook 09 against DDP and the
full batch, and the rank-0 helpers outside a process group.

Three torchrun launches in all (each starts Python processes that import torch: seconds); everything else forks.
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


# ----------------------------------------------------------------------------------------- single-process helpers
def test_helpers_outside_a_process_group(tmp_path, capsys, monkeypatch):
    assert dd.default_backend() == ("nccl" if torch.cuda.is_available() else "gloo")
    assert dd.is_main()
    dd.print0("only once")
    assert capsys.readouterr().out == "only once\n"
    path = dd.save0({"x": torch.arange(3)}, tmp_path / "sub" / "obj.pt")
    assert torch.equal(torch.load(path)["x"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["obj.pt"], "no temporary file is left behind"
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="must run under torchrun"):
        dd.init()


def test_torchrun_command():
    script = dd.torchrun_command("train.py", 3, ["--lr", 0.1])
    assert script[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3"]
    assert script[5:] == ["train.py", "--lr", "0.1"]
    assert dd.torchrun_command("pkg.module", 2)[5:] == ["-m", "pkg.module"]


# ------------------------------------------------------------------------------------------- torchrun launches
TRAIN_SCRIPT = """
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
import dlcourse.distributed as dd

env = dd.init()
assert env.backend == "gloo" and env.device.type == "cpu"


def average_gradients(model):
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= env.world_size


def train(use_ddp):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    net = DDP(model) if use_ddp else model
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(12, 5, generator=g), torch.randint(0, 3, (12,), generator=g)
    for _ in range(3):
        loss = F.cross_entropy(net(X.chunk(env.world_size)[env.rank]), y.chunk(env.world_size)[env.rank])
        optimizer.zero_grad()
        loss.backward()
        if not use_ddp:
            average_gradients(model)
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


hand, ddp = train(False), train(True)
print(f"rank {env.rank} of {env.world_size} done", flush=True)
dd.print0("printed by rank 0 only")
dd.save0({"hand": hand, "ddp": ddp}, f"{OUT}/params.pt")
dd.cleanup()
print("never printed: cleanup ends the process")
"""


def test_launch_two_ranks_hand_all_reduce_equals_ddp(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text(f"OUT = {str(tmp_path)!r}\n" + textwrap.dedent(TRAIN_SCRIPT))
    done = dd.launch(script, nproc=2, timeout=240)
    assert done.returncode == 0
    printed = capsys.readouterr().out
    assert "rank 0 of 2 done" in printed and "rank 1 of 2 done" in printed, "echo shows every rank's output"
    assert printed.count("printed by rank 0 only") == 1 and "never printed" not in printed
    saved = torch.load(tmp_path / "params.pt")
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
