# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 09: distributed training
#
# This lab goes with notebook 09. You write the pieces of data-parallel training yourself, and real processes
# check them: the tests run your code on 2 or 3 processes that talk through `torch.distributed` (gloo, on the
# CPU), and compare what they computed with one process doing the same work alone.
#
# **Learning goals.** After this lab you can
# - average gradients over ranks by hand with `all_reduce`;
# - split a dataset between ranks exactly as `DistributedSampler` does: shuffle per epoch, pad, stride;
# - write a complete DDP training script, launch it with `torchrun` on 2 processes, and save a checkpoint from
#   rank 0;
# - shard a parameter between ranks and gather it back with `all_gather`, the core move of FSDP;
# - predict how many bytes each rank sends in a DDP step with a ring all-reduce, before measuring it.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab09_distributed.ipynb` tells you what passes.
#
# Two ways of starting processes appear in the tests. `dd.run_local(fn, world_size, *args)` starts
# `world_size` CPU processes (from a fork server, never copies of this kernel), joins them in a process group
# and returns what `fn(rank, world_size, *args)` returned on each rank; `fn` and the functions it uses travel
# to them by value, which is how functions you define here get tested on several ranks. A training script
# (exercise 3) is a file, launched with `torchrun` as in the notebook.
#
# Every process in this lab computes on the CPU, even on a GPU machine: the tests compare your ranks' results
# with one CPU process to float32 rounding, and CPU results are the same on every machine.
#
# **Time.** About 75–100 minutes. Every test runs in seconds on a laptop CPU (the first `run_local` and a
# `torchrun` launch take a few seconds to start); no GPU needed.
#
# **Points.** 12 in all: gradient all-reduce 2, sharded sampler 3, DDP training script 3, parameter sharding 2,
# predicting a step's traffic 2.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import math
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torch.utils.data
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler, TensorDataset

import dlcourse
import dlcourse.distributed as dd

from dlcourse.grading.checks import check_close, check_equal, check_prediction, forbid

cfg = dlcourse.setup(seed=0)
run_tmp = tempfile.TemporaryDirectory(prefix="lab09-")   # your script and what it saves; removed at exit
run_dir = Path(run_tmp.name)


def run_script(path, nproc=2, args=()):
    """Launch a script with torchrun on ``nproc`` CPU processes (GPUs hidden: ``dd.init()`` then picks gloo on
    the CPU). An unfinished script (a rank raised NotImplementedError) raises NotImplementedError here; any other
    failure shows the failing rank's traceback."""
    try:
        return dd.launch(path, nproc=nproc, args=args, timeout=120, env={"CUDA_VISIBLE_DEVICES": ""})
    except dd.LaunchError as error:
        if error.exception == "NotImplementedError":
            raise NotImplementedError(f"the script is not finished yet:\n{error}") from None
        raise

# %% [markdown] nbgrader={"grade": false, "grade_id": "allreduce-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: averaging gradients by hand (2 points)
#
# In data-parallel training every rank holds the same model, computes the loss on its own shard of the batch
# and calls `backward()`. Now each rank's `.grad` is the gradient of *its* shard only. With equal shards and a
# mean loss, the gradient of the whole batch is the **mean of the ranks' gradients**.
#
# Write `average_gradients(model)`: afterwards every parameter's `.grad` holds, on every rank, the mean over all
# ranks of that parameter's gradient, in place. Parameters whose `.grad` is `None` (frozen or unused ones) stay
# as they are. It must work for any number of ranks. Every rank calls the function, after `backward()` and before
# `optimizer.step()`. (`dist.all_reduce` combines a tensor over all ranks, in place; look at its `op` argument.)

# %% nbgrader={"grade": false, "grade_id": "allreduce-answer", "locked": false, "schema_version": 3, "solution": true}
def average_gradients(model: nn.Module) -> None:
    """Replace every parameter's .grad (same shape as the parameter) by its mean over all ranks, in place."""
    ### BEGIN SOLUTION
    world_size = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)   # every rank now holds the sum over ranks
            p.grad /= world_size                             # the mean
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "allreduce-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _model_and_data(seed, n):
    """The same small MLP (same seed: same weights on every rank) and a batch: X (n, 5), y (n,)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    gen = torch.Generator().manual_seed(seed + 100)
    return model, torch.randn(n, 5, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def _full_batch_gradients(seed, n):
    """One process, the whole batch: the gradients every rank should end up with."""
    model, X, y = _model_and_data(seed, n)
    F.cross_entropy(model(X), y).backward()
    return [p.grad for p in model.parameters()]


def _averaged_on_ranks(rank, world_size, seed, n):
    """On each rank: the loss of this rank's shard, backward, then your average_gradients."""
    model, X, y = _model_and_data(seed, n)
    F.cross_entropy(model(X.chunk(world_size)[rank]), y.chunk(world_size)[rank]).backward()
    average_gradients(model)
    return [p.grad for p in model.parameters()]


_grads = dd.run_local(_averaged_on_ranks, 2, 0, 12, echo=False)
check_close("2 ranks: rank 0 ends with the full batch's gradients", _grads[0], expected=_full_batch_gradients(0, 12),
            atol=1e-6, hint="all-reduce with op=dist.ReduceOp.SUM gives the sum over ranks: divide it by "
                            "dist.get_world_size() to get the mean, in place on p.grad")
check_close("2 ranks: rank 1 ends with the full batch's gradients", _grads[1], expected=_full_batch_gradients(0, 12),
            atol=1e-6, hint="every rank must end with the same, averaged gradient")
print("average_gradients: visible tests passed")

### BEGIN HIDDEN TESTS
_grads = dd.run_local(_averaged_on_ranks, 3, 1, 12, echo=False)
check_close("3 ranks: every rank ends with the full batch's gradients", _grads,
            expected=[_full_batch_gradients(1, 12)] * 3, atol=1e-6, weight=2,
            hint="with 3 ranks, divide by 3: use dist.get_world_size(), not a fixed number")


def _frozen_on_ranks(rank, world_size):
    model, X, y = _model_and_data(2, 8)
    model[0].weight.requires_grad_(False)                         # frozen: its .grad stays None
    F.cross_entropy(model(X.chunk(world_size)[rank]), y.chunk(world_size)[rank]).backward()
    average_gradients(model)
    return [p.grad is None for p in model.parameters()], model[2].weight.grad


def _frozen_full():
    model, X, y = _model_and_data(2, 8)
    model[0].weight.requires_grad_(False)
    F.cross_entropy(model(X), y).backward()
    return [p.grad is None for p in model.parameters()], model[2].weight.grad


_frozen = dd.run_local(_frozen_on_ranks, 2, echo=False)
check_close("a frozen parameter (no .grad) is skipped; the others are averaged", _frozen,
            expected=[_frozen_full()] * 2, atol=1e-6,
            hint="skip parameters whose .grad is None (all_reduce cannot take None)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "sampler-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: a sharded sampler (3 points)
#
# A sampler yields the dataset indices a `DataLoader` reads, in order. In data-parallel training each rank
# needs its *own* part of the data, different from every other rank's, and a fresh shuffle every epoch. Write
# `ShardedSampler`, which yields exactly the indices `torch.utils.data.DistributedSampler` yields (without using
# it). For `n = len(dataset)` examples, `num_replicas` ranks and this rank's `rank`:
#
# 1. **Order.** With `shuffle=True`: `torch.randperm(n, generator=g).tolist()` with a generator seeded by
#    `seed + epoch` (`g = torch.Generator(); g.manual_seed(seed + epoch)`). With `shuffle=False`: `0, 1, …, n-1`.
# 2. **Pad** the list by repeating it from its start until its length is a multiple of `num_replicas`: the total
#    is `num_replicas * ceil(n / num_replicas)`. (If the list is shorter than the padding, repeat it as often as
#    needed.)
# 3. **Stride.** Rank `rank` takes every `num_replicas`-th index of the padded list, starting at position
#    `rank`.
#
# `len(sampler)` is the number of indices one rank yields, `ceil(n / num_replicas)`. `set_epoch(epoch)` is
# written for you: the training loop calls it at the start of every epoch so that each epoch shuffles
# differently.

# %% nbgrader={"grade": false, "grade_id": "sampler-answer", "locked": false, "schema_version": 3, "solution": true}
class ShardedSampler(Sampler):
    """Yields this rank's share of the dataset's indices: shuffled with seed + epoch, padded, strided."""

    def __init__(self, dataset, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0) -> None:
        self.n = len(dataset)
        self.num_replicas, self.rank, self.shuffle, self.seed = num_replicas, rank, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        ### BEGIN SOLUTION
        return math.ceil(self.n / self.num_replicas)
        ### END SOLUTION

    def __iter__(self):
        ### BEGIN SOLUTION
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.n, generator=g).tolist()
        else:
            indices = list(range(self.n))
        total = self.num_replicas * math.ceil(self.n / self.num_replicas)
        padding = total - len(indices)
        indices += (indices * math.ceil(padding / len(indices)))[:padding]   # repeat from the start
        return iter(indices[self.rank:total:self.num_replicas])               # every num_replicas-th, from rank
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "sampler-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
NO_DISTRIBUTED_SAMPLER = ("write ShardedSampler from torch.randperm and list operations: DistributedSampler is "
                          "switched off while the tests use yours")
_OFF = [(torch.utils.data, "DistributedSampler"), (torch.utils.data.distributed, "DistributedSampler")]


def _torch_indices(n, num_replicas, rank, epoch=0, shuffle=True, seed=0):
    """What torch's DistributedSampler yields on this rank in this epoch."""
    sampler = DistributedSampler(range(n), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def _my_indices(n, num_replicas, rank, epoch=0, shuffle=True, seed=0):
    with forbid(_OFF, NO_DISTRIBUTED_SAMPLER):
        sampler = ShardedSampler(range(n), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)


check_equal("10 examples, 2 ranks, no shuffle: each rank's indices",
            [_my_indices(10, 2, r, shuffle=False) for r in range(2)],
            expected=[_torch_indices(10, 2, r, shuffle=False) for r in range(2)],
            hint="rank r takes positions r, r + num_replicas, r + 2 * num_replicas, ... of the list")
check_equal("10 examples, 3 ranks, no shuffle: padded to 12 by repeating from the start",
            [_my_indices(10, 3, r, shuffle=False) for r in range(3)],
            expected=[_torch_indices(10, 3, r, shuffle=False) for r in range(3)],
            hint="pad the list to 3 * ceil(10 / 3) = 12 with its first 2 indices, then stride")
check_equal("10 examples, 3 ranks, shuffled, epoch 0", [_my_indices(10, 3, r) for r in range(3)],
            expected=[_torch_indices(10, 3, r) for r in range(3)], weight=2,
            hint="shuffle with torch.randperm(n, generator=g).tolist(), g seeded with seed + epoch, before "
                 "padding and striding")
check_equal("10 examples, 3 ranks, shuffled, epoch 1 (after set_epoch(1))", [_my_indices(10, 3, r, epoch=1)
                                                                              for r in range(3)],
            expected=[_torch_indices(10, 3, r, epoch=1) for r in range(3)], weight=2,
            hint="the generator's seed is seed + self.epoch: set_epoch must change the order")
with forbid(_OFF, NO_DISTRIBUTED_SAMPLER):
    _lengths = [len(ShardedSampler(range(n), num_replicas=w, rank=0)) for n, w in [(10, 2), (10, 3), (7, 4)]]
check_equal("len(sampler) for (10 examples, 2 ranks), (10, 3), (7, 4)", _lengths, expected=[5, 4, 2],
            hint="one rank yields ceil(n / num_replicas) indices")
print("ShardedSampler: visible tests passed")

### BEGIN HIDDEN TESTS
_cases = [(1, 1, 0, 0, 0), (16, 4, 3, 2, 0), (100, 5, 2, 7, 3), (7, 2, 1, 3, 5), (2, 5, 4, 1, 0), (33, 8, 6, 4, 11)]
check_equal("more sizes, ranks, epochs and seeds (incl. fewer examples than ranks)",
            [_my_indices(n, w, r, epoch=e, seed=s) for n, w, r, e, s in _cases],
            expected=[_torch_indices(n, w, r, epoch=e, seed=s) for n, w, r, e, s in _cases], weight=2,
            hint="when the dataset is shorter than the padding (2 examples, 5 ranks), repeat the list as often "
                 "as needed")
with forbid(_OFF, NO_DISTRIBUTED_SAMPLER):
    _dataset = TensorDataset(torch.arange(20.0).reshape(10, 2), torch.arange(10))
    _batches = [[y.tolist() for _, y in DataLoader(_dataset, batch_size=3,
                                                   sampler=ShardedSampler(_dataset, num_replicas=2, rank=r, seed=4))]
                for r in range(2)]
check_equal("in a DataLoader: the labels each rank reads, batch by batch", _batches,
            expected=[[_torch_indices(10, 2, r, seed=4)[i:i + 3] for i in range(0, 5, 3)] for r in range(2)],
            hint="the sampler takes any dataset (it only needs len(dataset)) and works as DataLoader(sampler=...)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "script-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: a DDP training script, launched with torchrun (3 points)
#
# The cell below writes a training script to a file (`%%writefile`); the test cell launches it with `torchrun`
# on 2 processes. Fill in `train(env, out_dir)`: it receives `env` from `dd.init()` (`env.rank`,
# `env.world_size`, `env.is_main`). What it must achieve:
#
# - `net` is trained data-parallel with `DistributedDataParallel` for `NUM_EPOCHS` epochs of plain
#   `torch.optim.SGD(lr=LR)` on the mean cross-entropy, one step per batch of `BATCH_SIZE` examples per rank, so
#   that every rank ends with the model one process would get from the same global batches. (DDP shares `net`'s
#   parameters: keep the name `net` for the plain model, and it ends up trained.)
# - Each rank reads its own share of `dataset`, reshuffled every epoch, exactly as
#   `DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=0)` gives it
#   (the test's one-process reference uses that sampler).
# - `seen[epoch]` is the list of dataset indices this rank takes in that epoch, and `losses` this rank's loss (a
#   float) at every step, in order.
# - When training is over, `f"{out_dir}/model.pt"` holds the plain model's `state_dict()` (keys without DDP's
#   `module.` prefix), written by rank 0 only, and no rank returns before it is written.
#
# The test compares the final parameters of both ranks with one process trained on the same global batches,
# checks the indices each rank took, and loads rank 0's checkpoint. If the launch fails, the error shows the
# failing rank's traceback.

# %% nbgrader={"grade": false, "grade_id": "script-answer", "locked": false, "schema_version": 3, "solution": true}
# %%writefile {run_dir}/train_ddp.py
"""Lab 09, exercise 3: data-parallel training with DDP. Launch: torchrun --nproc-per-node=2 train_ddp.py OUT_DIR"""
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import dlcourse.distributed as dd

NUM_EPOCHS, BATCH_SIZE, LR = 3, 8, 0.2     # BATCH_SIZE examples per rank and step


def make_data() -> TensorDataset:
    """50 examples: X (50, 6), y (50,) in {0, 1, 2} (the largest of the first 3 features)."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(50, 6, generator=gen)
    return TensorDataset(X, X[:, :3].argmax(dim=1))


def make_model() -> nn.Module:
    torch.manual_seed(0)                   # the same initial weights on every rank
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def train(env: dd.DistEnv, out_dir: str):
    """Train make_model() on make_data() with DDP; return (net, seen, losses)."""
    dataset = make_data()
    net = make_model()                     # the plain model
    seen = []                              # seen[epoch]: the dataset indices this rank takes in that epoch
    losses = []                            # this rank's loss (a float) at every step
    ### BEGIN SOLUTION
    sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, sampler=sampler)
    model = DDP(net)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for epoch in range(NUM_EPOCHS):
        sampler.set_epoch(epoch)
        seen.append(list(sampler))
        for X, y in loader:
            loss = F.cross_entropy(model(X), y)
            optimizer.zero_grad()
            loss.backward()                # DDP averages the gradients over the ranks here
            optimizer.step()
            losses.append(loss.item())
    if env.is_main:
        torch.save(net.state_dict(), f"{out_dir}/model.pt")
    dist.barrier()
    ### END SOLUTION
    return net, seen, losses


if __name__ == "__main__":
    out_dir = sys.argv[1]
    env = dd.init()
    net, seen, losses = train(env, out_dir)
    # for the tests: what this rank ended with, and where it ran
    torch.save({"params": [p.detach() for p in net.parameters()], "seen": seen, "losses": losses,
                "backend": env.backend, "device": str(env.device)}, f"{out_dir}/rank{env.rank}.pt")
    dd.cleanup()


# %% nbgrader={"grade": true, "grade_id": "script-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def _sampler_indices(rank, epoch):
    """The indices torch's DistributedSampler gives this rank (of 2) in this epoch: 50 examples, seed 0."""
    sampler = DistributedSampler(range(50), num_replicas=2, rank=rank, shuffle=True, seed=0)
    sampler.set_epoch(epoch)
    return list(sampler)


def _global_batches():
    """Per epoch, per step: (rank 0's batch of indices, rank 1's batch), batches of 8 (the last of 1)."""
    epochs = []
    for epoch in range(3):
        per_rank = [_sampler_indices(rank, epoch) for rank in range(2)]
        epochs.append([(per_rank[0][i:i + 8], per_rank[1][i:i + 8]) for i in range(0, len(per_rank[0]), 8)])
    return epochs


def _one_process_run():
    """One process, no torch.distributed: each step averages the 2 ranks' mean losses, as DDP's gradients do."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(50, 6, generator=gen)
    y = X[:, :3].argmax(dim=1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    rank0_losses = []
    for batches in _global_batches():
        for batch0, batch1 in batches:
            loss0 = F.cross_entropy(model(X[batch0]), y[batch0])
            loss1 = F.cross_entropy(model(X[batch1]), y[batch1])
            optimizer.zero_grad()
            ((loss0 + loss1) / 2).backward()
            optimizer.step()
            rank0_losses.append(loss0.item())
    return {"params": [p.detach() for p in model.parameters()], "rank0_losses": rank0_losses,
            "state": {k: v.detach() for k, v in model.state_dict().items()}}


for _old in run_dir.glob("*.pt"):
    _old.unlink()                                    # results of an earlier run must not count
run_script(run_dir / "train_ddp.py", nproc=2, args=[run_dir])
_ranks = [torch.load(run_dir / f"rank{r}.pt") for r in range(2)]
print("your ranks ran with", ", ".join(f"{r.get('backend', '?')} on {r.get('device', '?')}" for r in _ranks))
check_close("rank 0's final parameters equal one process trained on the same global batches", _ranks[0]["params"],
            expected=_one_process_run()["params"], atol=1e-5, weight=2,
            hint="wrap net in DDP, use a DistributedSampler in the DataLoader, call sampler.set_epoch(epoch) at the "
                 "start of every epoch, and step SGD(lr=LR) once per batch")
check_close("rank 1's final parameters equal rank 0's", _ranks[1]["params"], expected=_one_process_run()["params"],
            atol=1e-5, hint="all ranks must end with the same model: did every rank train with DDP?")
check_equal("the indices each rank took, epoch by epoch", [_ranks[0]["seen"], _ranks[1]["seen"]],
            expected=[[_sampler_indices(r, epoch) for epoch in range(3)] for r in range(2)],
            hint="at the start of every epoch call sampler.set_epoch(epoch), then append list(sampler) to seen")
_state = torch.load(run_dir / "model.pt") if (run_dir / "model.pt").exists() else {}
check_equal("rank 0's checkpoint model.pt holds the plain model's keys", sorted(_state),
            expected=sorted(_one_process_run()["state"]),
            hint="on rank 0 only, torch.save(net.state_dict(), f'{out_dir}/model.pt') after training: the state of "
                 "net, not of the DDP wrapper, whose keys start with 'module.'")
check_close("rank 0's checkpoint holds the trained values", [_state[k] for k in sorted(_state)],
            expected=[v for _, v in sorted(_one_process_run()["state"].items())], atol=1e-5,
            hint="save the state_dict after training has finished")
print("train_ddp.py: visible tests passed")

### BEGIN HIDDEN TESTS
check_close("rank 0's loss at every step", _ranks[0]["losses"], expected=_one_process_run()["rank0_losses"],
            atol=1e-5, hint="append loss.item() of every step, in order, to losses")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "shard-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: sharding a parameter, FSDP-style (2 points)
#
# DDP keeps a full copy of every parameter on every rank. Fully sharded data parallelism (FSDP) keeps only a
# piece on each rank and gathers the full tensor just before it is needed. Write the two halves of that move:
#
# - `shard(tensor, rank, world_size)`: the flattened `tensor`, padded with zeros **at the end** to a multiple of
#   `world_size` elements and cut into `world_size` equal pieces; return piece number `rank`, a 1-D tensor of
#   `ceil(numel / world_size)` elements that owns its memory (changing it must not change `tensor`). Pure
#   computation, no communication.
# - `unshard(piece, shape)`: every rank calls it with its own piece, and every rank gets back the full tensor of
#   `shape`, without the padding. (`dist.all_gather(list_of_tensors, piece)` fills a list of one tensor like
#   `piece` per rank with every rank's piece, in rank order.)

# %% nbgrader={"grade": false, "grade_id": "shard-answer", "locked": false, "schema_version": 3, "solution": true}
def shard(tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank `rank`'s piece: (ceil(numel / world_size),) from the flattened, zero-padded tensor."""
    ### BEGIN SOLUTION
    flat = tensor.flatten()
    per_rank = math.ceil(flat.numel() / world_size)
    flat = F.pad(flat, (0, per_rank * world_size - flat.numel()))   # zeros at the end
    return flat[rank * per_rank:(rank + 1) * per_rank].clone()
    ### END SOLUTION


def unshard(piece: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """All ranks' pieces gathered in rank order, padding dropped: a tensor of `shape` (on every rank)."""
    ### BEGIN SOLUTION
    pieces = [torch.empty_like(piece) for _ in range(dist.get_world_size())]
    dist.all_gather(pieces, piece)
    return torch.cat(pieces)[:shape.numel()].reshape(shape)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "shard-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _parameter(seed, shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _torch_piece(tensor, rank, world_size):
    """The reference piece: pad the flat tensor with zeros, cut into equal chunks."""
    per_rank = -(-tensor.numel() // world_size)
    return F.pad(tensor.flatten(), (0, per_rank * world_size - tensor.numel())).chunk(world_size)[rank]


def _shard_and_gather(rank, world_size, seed, shape):
    tensor = _parameter(seed, shape)
    piece = shard(tensor, rank, world_size)
    return piece, unshard(piece, tensor.shape)


_out = dd.run_local(_shard_and_gather, 2, 0, (3, 4), echo=False)
check_close("(3, 4) on 2 ranks: each rank's piece", [piece for piece, _ in _out],
            expected=[_torch_piece(_parameter(0, (3, 4)), r, 2) for r in range(2)],
            hint="flatten, then rank r keeps elements r * 6 to (r + 1) * 6")
check_close("(3, 4) on 2 ranks: unshard gives the full tensor back on every rank", [full for _, full in _out],
            expected=[_parameter(0, (3, 4))] * 2,
            hint="all_gather into a list of world_size empty tensors, torch.cat them, keep shape.numel() elements, "
                 "reshape")
_out = dd.run_local(_shard_and_gather, 3, 1, (5, 2), echo=False)
check_close("(5, 2) on 3 ranks: pieces of 4, the last one zero-padded", [piece for piece, _ in _out],
            expected=[_torch_piece(_parameter(1, (5, 2)), r, 3) for r in range(3)],
            hint="10 elements on 3 ranks: pad to 12 with zeros at the end, pieces of 4")
check_close("(5, 2) on 3 ranks: unshard drops the padding", [full for _, full in _out],
            expected=[_parameter(1, (5, 2))] * 3,
            hint="keep the first shape.numel() elements of the gathered tensor before reshaping")
print("shard / unshard: visible tests passed")

### BEGIN HIDDEN TESTS
_out = dd.run_local(_shard_and_gather, 4, 2, (3,), echo=False)
check_close("3 elements on 4 ranks: the last rank holds only padding", _out,
            expected=[(_torch_piece(_parameter(2, (3,)), r, 4), _parameter(2, (3,))) for r in range(4)],
            hint="with fewer elements than ranks every piece has 1 element, some only padding")
_out = dd.run_local(_shard_and_gather, 2, 3, (2, 3, 5), echo=False)
check_close("a 3-D (2, 3, 5) tensor on 2 ranks", [full for _, full in _out], expected=[_parameter(3, (2, 3, 5))] * 2,
            hint="unshard must restore any shape")
_t = _parameter(4, (4, 4))
_piece = shard(_t, 1, 2)
_piece.zero_()
check_close("the piece is a copy: changing it leaves the parameter alone", _t, expected=_parameter(4, (4, 4)),
            hint="return a new tensor (e.g. .clone()), not a view into the parameter")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "traffic-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: predict the traffic of a DDP step (2 points)
#
# Predict first, measure second. In every step DDP all-reduces the gradients. NCCL, the library that does it on
# GPUs, uses a **ring** for large tensors: the `N` ranks stand in a circle and each one only ever sends to its
# right-hand neighbour and receives from its left-hand one. Each rank cuts its gradient buffer into `N` equal
# chunks. In `N - 1` rounds of *reduce-scatter*, every rank sends one chunk to the right and adds the chunk
# arriving from the left into its own copy of that chunk; afterwards each rank holds one chunk summed over all
# ranks. In `N - 1` rounds of *all-gather*, the summed chunks travel around the ring the same way, one chunk per
# rank and round, until every rank has all of them.
#
# Write `ring_allreduce_bytes(num_params, world_size, dtype)`: the number of bytes **one rank sends** in one DDP
# training step of a model with `num_params` parameters (a multiple of `world_size`) of dtype `dtype`, as an
# int. The test cell measures it: it runs one DDP step on `world_size` processes whose gradients are all-reduced
# by a ring of `dist.isend`/`dist.recv` (a communication hook, `DDP.register_comm_hook`) that counts the bytes
# each rank sends, and checks that the ring gives every rank the full batch's gradient. Some set-ups are hidden.
# **Tolerance: exact** (bytes are integers; each set-up is a separate check). Then look at the printed ratio:
# how does one rank's traffic change between 2 and 1,000 ranks?

# %% nbgrader={"grade": false, "grade_id": "traffic-answer", "locked": false, "schema_version": 3, "solution": true}
def ring_allreduce_bytes(num_params: int, world_size: int, dtype: torch.dtype) -> int:
    """Bytes one rank sends to all-reduce num_params gradients of dtype over world_size ranks with a ring."""
    ### BEGIN SOLUTION
    chunk = num_params // world_size * dtype.itemsize          # bytes of one chunk
    return 2 * (world_size - 1) * chunk                         # one chunk per round, 2 (N - 1) rounds
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "traffic-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _ring_all_reduce(flat):
    """Sum the 1-D tensor ``flat`` over all ranks, in place, with the ring algorithm; return the bytes sent."""
    rank, n = dist.get_rank(), dist.get_world_size()
    chunks = flat.tensor_split(n)                               # views into flat
    right, left = (rank + 1) % n, (rank - 1) % n
    sent = 0
    for phase in ("reduce-scatter", "all-gather"):
        for step in range(n - 1):
            if phase == "reduce-scatter":
                out, into = (rank - step) % n, (rank - step - 1) % n
            else:                                               # rank r holds the summed chunk r + 1 by now
                out, into = (rank + 1 - step) % n, (rank - step) % n
            message, received = chunks[out].clone(), torch.empty_like(chunks[into])
            request = dist.isend(message, right)
            dist.recv(received, left)
            request.wait()
            sent += message.nbytes
            if phase == "reduce-scatter":
                chunks[into].add_(received)
            else:
                chunks[into].copy_(received)
    return sent


def _mlp(sizes, dtype):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.Tanh(), nn.Linear(sizes[1], sizes[2])).to(dtype)


def _ddp_step_with_a_ring(rank, world_size, sizes, dtype):
    """One DDP step whose all-reduce is the ring above: (bytes this rank sent, parameters, the gradients are the
    full batch's)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = _mlp(sizes, dtype)
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(4 * world_size, sizes[0], generator=gen, dtype=dtype)
    y = torch.randint(0, sizes[2], (4 * world_size,), generator=gen)
    counted = {"sent": 0}

    def ring_hook(state, bucket):                               # DDP calls it for each bucket of gradients
        buffer = bucket.buffer()                                # the bucket's gradients, flattened
        state["sent"] += _ring_all_reduce(buffer)
        future = torch.futures.Future()
        future.set_result(buffer.div_(world_size))              # DDP averages: the sum / N
        return future

    ddp = DDP(model)
    ddp.register_comm_hook(counted, ring_hook)
    F.cross_entropy(ddp(X.chunk(world_size)[rank]), y.chunk(world_size)[rank]).backward()
    full = _mlp(sizes, dtype)
    F.cross_entropy(full(X), y).backward()
    same = all(torch.allclose(p.grad, q.grad, atol=1e-6) for p, q in zip(model.parameters(), full.parameters()))
    return counted["sent"], sum(p.numel() for p in model.parameters()), same


def _measured_bytes(world_size, sizes, dtype):
    """Bytes rank 0 sent in one ring-all-reduced DDP step (every rank sends the same), checked for correctness."""
    results = dd.run_local(_ddp_step_with_a_ring, world_size, sizes, dtype, echo=False)
    assert all(same for _, _, same in results), "the test's ring all-reduce gave wrong gradients"
    return results[0][0], results[0][1]


def _predicted_bytes(num_params, world_size, dtype):
    with forbid([(dd, "run_local"), (dist, "all_reduce"), (dist, "isend"), (dist, "recv")],
                "predict from the sizes: the tests switch communication off while they call your function"):
        return ring_allreduce_bytes(num_params, world_size, dtype)


for _world_size, _sizes in [(2, (6, 8, 4)), (3, (5, 8, 3))]:
    _sent, _P = _measured_bytes(_world_size, _sizes, torch.float32)
    check_prediction(f"{_P} float32 parameters on {_world_size} ranks: bytes one rank sends",
                     _predicted_bytes(_P, _world_size, torch.float32), expected=_sent, rtol=0.0,
                     hint="count the rounds (both phases) and the bytes of one chunk: num_params / world_size numbers "
                          "of dtype.itemsize bytes")
    print(f"  {_world_size} ranks: one rank sends {_sent / (4 * _P):.2f} x the gradient's {4 * _P} bytes")
print("ring_allreduce_bytes: visible tests passed")

### BEGIN HIDDEN TESTS
for _world_size, _sizes, _dtype in [(4, (6, 8, 4), torch.float32), (2, (4, 6, 2), torch.float64)]:
    _sent, _P = _measured_bytes(_world_size, _sizes, _dtype)
    _name = str(_dtype).removeprefix("torch.")
    check_prediction(f"{_P} {_name} parameters on {_world_size} ranks: bytes one rank sends",
                     _predicted_bytes(_P, _world_size, _dtype), expected=_sent, rtol=0.0,
                     hint="2 (N - 1) rounds of one chunk of num_params / N numbers, each dtype.itemsize bytes")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "traffic-discussion", "locked": true, "schema_version": 3, "solution": false}
# Each rank sends $2\,(N-1)/N$ times the gradient's bytes: the gradient itself on 2 ranks, and never more than
# twice it, however many ranks there are. (Sending every rank's whole gradient to every other rank would cost
# $N - 1$ times it.) So the time of DDP's all-reduce is set by the gradient's size and the links' bandwidth, not
# by the number of ranks, which is why data parallelism scales to many GPUs; its latency, $2\,(N-1)$ rounds,
# does grow with $N$, which is why NCCL also has tree algorithms.

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - Averaging gradients is one `all_reduce` (SUM) per parameter and a division by the world size; with equal
#   shards and a mean loss it gives every rank the full batch's gradient, which DDP computes for you in buckets
#   during `backward()`.
# - `DistributedSampler` shuffles with `seed + epoch`, pads to a multiple of the world size and strides: forget
#   `set_epoch` and every epoch repeats the first one's order.
# - A DDP script: `init_process_group`, sampler, `DDP(model)`, the usual loop, rank 0 saves the plain model's
#   `state_dict()`, a barrier, a clean exit. `torchrun` starts one copy per process.
# - FSDP keeps one padded piece of each parameter per rank and all-gathers the full tensor when it is needed.
#
# ## Further exercises (not graded)
#
# 1. Launch your script with `nproc=3` (change `run_script`'s argument). Are the final parameters still those of
#    one process? Why do the last batches of each epoch make this harder to reproduce by hand?
# 2. Remove `sampler.set_epoch(epoch)` from your script and compare `seen` between epochs.
# 3. Replace the per-parameter loop in `average_gradients` by one all-reduce of all gradients flattened into one
#    tensor. Check that it gives the same result, and time both on a model with many small layers.
# 4. Use `shard` and `unshard` to write a tiny FSDP step: keep only pieces between steps, unshard before the
#    forward pass, and shard the gradient's mean (all-reduce, then `shard`) before the update.
