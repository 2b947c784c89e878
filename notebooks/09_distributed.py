# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 09 · Distributed training: all-reduce, DDP, torchrun and FSDP
#
# One process trains on one device. To use several devices, run one process per device, give each a different
# slice of every batch, and make them agree on each update. This notebook builds that agreement by hand with
# `torch.distributed`, replaces it by `DistributedDataParallel` (DDP), runs a real training script on two
# processes with `torchrun`, and proves — to the last few bits of float32 — that the result is the same model a
# single process would have trained on the full batch. Then it shards the parameters themselves with FSDP and
# measures what the second process buys on this machine.
#
# **Learning goals**
# - Say what a process group, rank, world size, backend and collective are; use `all_reduce`, `broadcast` and
#   `all_gather`.
# - Average gradients by hand (`all_reduce` SUM, divide by the world size) and show that it equals the gradient
#   of the full batch; then let DDP do it.
# - Write a training script for `torchrun`: process group set-up, `DistributedSampler` with `set_epoch`, DDP,
#   rank-0 logging, a checkpoint saved by rank 0 and loaded by every rank.
# - Recognise the forgotten-`set_epoch` bug from the index order each rank sees.
# - Shard parameters with FSDP2 (`fully_shard`) and check that each rank holds half of them.
# - Measure time per step with one and two processes, and explain the scaling efficiency you get.
#
# **Prerequisites:** notebooks 01 (the training loop) and 08 (where training memory goes). No GPU needed:
# everything runs on CPU processes talking over the gloo backend. On a machine with two or more GPUs the
# training script of section 5 uses NCCL and one GPU per process instead; with one GPU its two processes still
# run on the CPU (NCCL cannot put two processes on one GPU). The notebook prints what its processes ran on.
#
# **Time:** seconds at `smoke` (most of it is starting processes); a few minutes at `small`; at `full` the script
# trains a wider model for longer and, given two or more GPUs, runs on them. This notebook's lesson is
# correctness, which needs no GPU. The last cell prints how long this run took.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler

import dlcourse
import dlcourse.distributed as dd

cfg = dlcourse.setup(seed=0)
device = cfg.device
run_tmp = tempfile.TemporaryDirectory(prefix="dlcourse-09-")  # scripts, checkpoints, results: removed at exit
run_dir = Path(run_tmp.name)
t_start = time.perf_counter()


def print_table(header, rows):
    """Print rows of values under a header, one column each, aligned."""
    cells = [[str(h) for h in header]] + [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
                                          for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


# %% [markdown]
# ## 1. Data parallelism in one equation
# Every process (a **rank**, numbered 0 … W−1, where W is the **world size**) holds a full copy of the model. A
# global batch of B examples is cut into W shards of b = B/W examples; rank r computes the mean loss on its
# shard, $L_r = \frac{1}{b}\sum_{i \in r} \ell_i$, and its gradient. The gradient of the full batch's mean loss is
# the average of the ranks' gradients:
# $$\nabla \frac{1}{B}\sum_{i=1}^{B} \ell_i \;=\; \frac{1}{W}\sum_{r=0}^{W-1} \nabla L_r \qquad (B = W b).$$
# So if every rank replaces its gradient by that average and takes the same optimizer step, all copies stay
# identical, and training is exactly single-process training on batches of B. The average needs
# communication: an **all-reduce** sums a tensor over all ranks and gives every rank the result.
#
# The ranks talk through a **process group**, created by `torch.distributed.init_process_group(backend)`. The
# **backend** moves the bytes: **gloo** for CPU tensors (over TCP, here on one machine), **NCCL** for GPU
# tensors (over NVLink or InfiniBand). Operations every rank must call together — all-reduce, broadcast,
# all-gather, barrier — are **collectives**: a rank that calls one waits until all the others have called it.

# %% [markdown]
# ## 2. Processes and collectives
# `dd.run_local(fn, W)` starts W processes, puts them in one gloo process group and calls `fn(rank, world_size)`
# in each; it returns what each rank returned, and shows what each printed. It is a quick way to try
# collectives. (Real jobs are launched with `torchrun`: section 5.)
#
# The processes are not copies (forks) of this kernel: a copy of a process that has used CUDA, or run a backward
# pass with a GPU present, cannot use autograd or CUDA any more. They come from a *fork server*, a small process
# started fresh on the first call, which has imported torch but never touched a GPU (`multiprocessing`'s
# `forkserver` start method); `fn` travels to them by value (with `cloudpickle`), so functions defined in this
# notebook work. The first call starts the server (a few seconds), later ones start ranks in a fraction of a
# second.
#
# These ranks compute on the CPU by design, even on a GPU machine (they see no GPU): the checks in sections 2–4
# and 7 compare their results with this kernel's own CPU computation, exactly or to float32 rounding. The same
# checks with CUDA kernels would need a looser tolerance, since a GPU may sum in a different order from one call
# to the next.

# %%
def collectives_demo(rank, world_size):
    x = torch.full((3,), float(rank + 1))         # rank 0 holds [1, 1, 1], rank 1 holds [2, 2, 2]
    print(f"backend {dist.get_backend()}, tensors on {x.device}, GPUs this rank sees: {torch.cuda.device_count()}")
    print(f"before: {x.tolist()}")
    summed = x.clone()
    dist.all_reduce(summed, op=dist.ReduceOp.SUM)  # in place, on every rank: [1+2, ...]
    sent = x.clone()
    dist.broadcast(sent, src=0)                    # every rank receives rank 0's tensor
    gathered = [torch.empty(3) for _ in range(world_size)]
    dist.all_gather(gathered, x)                   # every rank receives every rank's tensor
    return {"all_reduce": summed, "broadcast": sent, "all_gather": torch.stack(gathered)}


start = time.perf_counter()
out = dd.run_local(collectives_demo, 2)
print(f"run_local took {time.perf_counter() - start:.2f} s (the first call also starts the fork server); this "
      f"kernel computes on {device}")
for rank, result in enumerate(out):
    print(f"rank {rank}: all_reduce {result['all_reduce'].tolist()}  broadcast {result['broadcast'].tolist()}  "
          f"all_gather {result['all_gather'].tolist()}")
assert all(torch.equal(r["all_reduce"], torch.full((3,), 3.0)) for r in out)
assert all(torch.equal(r["broadcast"], torch.ones(3)) for r in out)
assert all(torch.equal(r["all_gather"], torch.tensor([[1.0] * 3, [2.0] * 3])) for r in out)

# %% [markdown]
# ## 3. Averaging gradients by hand
# After `loss.backward()` each rank holds the gradient of *its own* shard's loss. One all-reduce per parameter
# sums the gradients over ranks, in place; dividing by the world size turns the sum into the mean. (Recent
# backends also offer `ReduceOp.AVG`; SUM followed by a division works everywhere and shows what happens.)

# %%
def average_gradients(model: nn.Module) -> None:
    """Replace every parameter's .grad by its mean over all ranks (call after backward, before step)."""
    world_size = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:                             # frozen or unused parameters have no gradient
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)  # same shape as p, now summed over ranks
            p.grad /= world_size


def digits_net(hidden: int) -> nn.Module:
    """64 pixels -> hidden units (tanh) -> 10 logits: (B, 64) -> (B, 10). Why tanh: end of section 4."""
    return nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10))


def make_model(seed: int = 0) -> nn.Module:
    """A small MLP for 64-pixel digits; the same seed gives the same weights on every rank."""
    torch.manual_seed(seed)
    return digits_net(32)


splits = dlcourse.data.digits(flatten=True, seed=cfg.seed)
X_all, y_all = splits.train.tensors                        # (N, 64), (N,)


def global_batch(step: int, batch_size: int = 64):
    """Global batch number `step` of the training set (in order, wrapping around): (B, 64), (B,)."""
    i = step % (len(X_all) // batch_size)
    return X_all[i * batch_size:(i + 1) * batch_size], y_all[i * batch_size:(i + 1) * batch_size]


X_batch, y_batch = global_batch(0)                         # one global batch, B = 64


def hand_gradients(rank, world_size):
    model = make_model()
    X, y = X_batch.chunk(world_size)[rank], y_batch.chunk(world_size)[rank]   # this rank's shard: (B/W, 64)
    F.cross_entropy(model(X), y).backward()
    local = [p.grad.clone() for p in model.parameters()]  # the gradient of this shard only
    average_gradients(model)
    return local, [p.grad.clone() for p in model.parameters()]


ranks = dd.run_local(hand_gradients, 2, echo=False)
reference = make_model()
F.cross_entropy(reference(X_batch), y_batch).backward()  # one process, the full batch
full_grads = [p.grad for p in reference.parameters()]


def max_diff(a, b):
    """Largest absolute difference between two lists of tensors."""
    return max((x - y).abs().max().item() for x, y in zip(a, b))


print_table(["compared", "max |difference|"], [
    ["rank 0's local gradient vs rank 1's", max_diff(ranks[0][0], ranks[1][0])],
    ["rank 0's averaged gradient vs full batch", max_diff(ranks[0][1], full_grads)],
    ["rank 1's averaged gradient vs full batch", max_diff(ranks[1][1], full_grads)],
])
for local, averaged in ranks:
    assert all(torch.allclose(g, f, atol=1e-6) for g, f in zip(averaged, full_grads))
assert max_diff(ranks[0][0], ranks[1][0]) > 1e-3, "before averaging, the ranks' gradients differ"

# %% [markdown]
# Before the all-reduce the two ranks hold different gradients: if each stepped with its own, the copies would
# drift apart after the first update. After it they hold the full batch's gradient.

# %% [markdown]
# ## 4. `DistributedDataParallel`
# DDP does the same averaging, better:
# - At construction it **broadcasts** rank 0's parameters and buffers, so all copies start equal even when the
#   ranks initialised them differently.
# - During `backward()`, hooks on the parameters put gradients into **buckets** (about 25 MB each) and start an
#   all-reduce as soon as a bucket is full, so communication overlaps the rest of the backward pass instead of
#   waiting for it.
# - It averages (divides by the world size) for you; `model.no_sync()` skips the communication on the
#   accumulation steps of gradient accumulation.
#
# First the broadcast: each rank builds its model from a *different* seed, then wraps it in DDP.

# %%
def ddp_broadcast(rank, world_size):
    model = make_model(seed=rank)                           # different initial weights on each rank
    before = model[0].weight[0, :4].detach().clone()       # model[0]: the first Linear
    ddp_model = DDP(model)                                  # broadcasts rank 0's parameters to everyone
    return before, ddp_model.module[0].weight[0, :4].detach().clone()


(before0, after0), (before1, after1) = dd.run_local(ddp_broadcast, 2, echo=False)
print(f"rank 0 before DDP {before0.tolist()}\nrank 1 before DDP {before1.tolist()}\n"
      f"rank 1 after  DDP {after1.tolist()}")
assert not torch.equal(before0, before1) and torch.equal(after0, after1) and torch.equal(after1, before0)

# %% [markdown]
# Now train for a few steps three ways from the same start — hand-averaged gradients on 2 ranks, DDP on 2
# ranks, and one process on the full batches — and compare the final parameters.

# %%
num_steps = cfg.pick(smoke=5, small=20, full=50)
lr = 0.1


def train_ranks(rank, world_size, use_ddp):
    model = make_model()
    net = DDP(model) if use_ddp else model
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    for step in range(num_steps):
        X, y = global_batch(step)
        X, y = X.chunk(world_size)[rank], y.chunk(world_size)[rank]   # this rank's half of it
        loss = F.cross_entropy(net(X), y)
        optimizer.zero_grad()
        loss.backward()                                         # DDP averages here, inside backward
        if not use_ddp:
            average_gradients(model)                            # by hand: after backward, before step
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


single = make_model()
optimizer = torch.optim.SGD(single.parameters(), lr=lr, momentum=0.9)
for step in range(num_steps):
    X, y = global_batch(step)
    loss = F.cross_entropy(single(X), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
single_params = [p.detach() for p in single.parameters()]

hand = dd.run_local(train_ranks, 2, False, echo=False)
ddp = dd.run_local(train_ranks, 2, True, echo=False)
print(f"after {num_steps} SGD steps on global batches of 64:")
print_table(["compared", "max |difference|"], [
    ["hand-averaged, rank 0 vs rank 1", max_diff(hand[0], hand[1])],
    ["DDP, rank 0 vs rank 1", max_diff(ddp[0], ddp[1])],
    ["hand-averaged vs DDP", max_diff(hand[0], ddp[0])],
    ["DDP vs one process, full batch", max_diff(ddp[0], single_params)],
])
assert max_diff(hand[0], hand[1]) == 0 and max_diff(ddp[0], ddp[1]) == 0, "replicas stay bit-identical"
assert max_diff(hand[0], ddp[0]) < 1e-5 and max_diff(ddp[0], single_params) < 1e-5

# %% [markdown]
# The replicas on the two ranks are bit-identical (they apply the same averaged gradient). Against one process
# the difference is rounding: the two halves' gradients are summed in another order than one process sums the
# full batch, and float32 addition is not associative.
#
# **Why tanh and not ReLU.** ReLU's derivative jumps from 0 to 1 at 0. Over hundreds of steps with a wide layer,
# some pre-activation eventually lands within rounding distance of 0, on one side in one run and on the other
# side in the other; that example's gradient then differs by a whole term, and the two runs part by far more
# than rounding from then on (around 1e-3 when we tried the full-scale MLP of section 5 with ReLU). They are
# still the same training, but no longer comparable to float32 rounding. Tanh is smooth, so rounding differences stay rounding
# differences: that is why every model compared across runs in this notebook uses it.

# %% [markdown]
# ## 5. A real training script, launched with `torchrun`
# Real jobs start every rank as a fresh process running the same script: `torchrun --nproc-per-node=2 train.py`
# starts two, and gives each its `RANK`, `LOCAL_RANK` (its index on this machine: which GPU to use) and
# `WORLD_SIZE` in environment variables, plus the address where they meet. Inside the script,
# `dd.init()` reads them and calls `init_process_group` (gloo on CPU; NCCL and `cuda:LOCAL_RANK` on GPUs), and
# `dd.cleanup()` leaves the group at the end.
#
# What changes compared with a single-process script:
# - **`DistributedSampler`** gives each rank a disjoint part of the dataset: it shuffles all indices with a
#   seed, pads them to a multiple of the world size, and hands rank r every W-th index starting at r. Each rank's
#   loader takes `batch_size / W` examples per step, so one step of all ranks covers one global batch.
# - **`sampler.set_epoch(epoch)`** at the start of each epoch: the shuffle's seed is `seed + epoch`.
# - **Rank 0 alone prints and saves**; the other ranks wait at a **barrier** before reading what it wrote.
# - The checkpoint holds `model.module.state_dict()`: the plain model's keys, without DDP's `module.` prefix,
#   so it loads into a model that is not wrapped. Loading passes `map_location`: a checkpoint saved from
#   `cuda:0` would otherwise put every rank's tensors on GPU 0.
#
# The script is written to a file in a temporary folder with `%%writefile`, then launched. It reads the training
# set from a file that this notebook saves first, as a real job reads prepared data from shared storage.

# %%
script = run_dir / "train_ddp.py"
data_file = run_dir / "digits_train.pt"
torch.save(splits.train.tensors, data_file)           # (X (N, 64), y (N,)) for the script to load
print(script)

# %%
# %%writefile {script}
"""Data-parallel training of an MLP on the digits with DistributedDataParallel (notebook 09).

Launch:  python -m torch.distributed.run --standalone --nproc-per-node=2 train_ddp.py --data FILE --out DIR
Every rank runs this same file; torchrun gives each its RANK, LOCAL_RANK and WORLD_SIZE.
"""
import argparse
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import dlcourse
import dlcourse.distributed as dd

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)                   # torch.save'd (X, y) training tensors
parser.add_argument("--out", required=True)                    # folder for the checkpoint and the results
parser.add_argument("--num-epochs", type=int, default=2)
parser.add_argument("--batch-size", type=int, default=64)      # the GLOBAL batch; each rank takes B / W of it
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--hidden", type=int, default=64)
parser.add_argument("--backend", default=None)                 # gloo or nccl; default: nccl with a GPU per rank
args = parser.parse_args()

env = dd.init(args.backend)          # joins the process group; env.rank, env.world_size, env.device
dd.print0(f"{env.world_size} ranks, backend {env.backend}, rank 0 on {env.device}")
assert args.batch_size % env.world_size == 0, "the global batch must split evenly over the ranks"
X_train, y_train = torch.load(args.data)                        # (N, 64) float, (N,) int64
n = len(X_train) // args.batch_size * args.batch_size           # whole global batches only
train_set = TensorDataset(X_train[:n], y_train[:n])
sampler = DistributedSampler(train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=0)
loader = DataLoader(train_set, batch_size=args.batch_size // env.world_size, sampler=sampler)

torch.manual_seed(0)                 # the same start on every rank (DDP would broadcast rank 0's anyway)
model = nn.Sequential(nn.Linear(64, args.hidden), nn.Tanh(), nn.Linear(args.hidden, 10)).to(env.device)
model = DDP(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

first_indices, losses, step_times = [], [], []
for epoch in range(args.num_epochs):
    sampler.set_epoch(epoch)         # reshuffle; without it every epoch repeats epoch 0's order
    first_indices.append(list(sampler)[:6])
    for X, y in loader:
        X, y = X.to(env.device), y.to(env.device)
        start = time.perf_counter()
        loss = F.cross_entropy(model(X), y)        # the mean over this rank's B / W examples
        optimizer.zero_grad()
        loss.backward()                            # DDP averages the gradients over the ranks in here
        optimizer.step()
        if env.device.type == "cuda":
            torch.cuda.synchronize()               # GPU work is asynchronous: wait before reading the clock
        step_times.append(time.perf_counter() - start)
        losses.append(loss.detach())
    dd.print0(f"epoch {epoch}: rank 0's last loss {losses[-1].item():.4f}")

# the global loss of every step: the mean of the ranks' means (one all-reduce for all steps, after training)
global_losses = torch.stack(losses)
dist.all_reduce(global_losses, op=dist.ReduceOp.SUM)
global_losses /= env.world_size

# how long one all-reduce of all the gradients takes on its own
grads = torch.zeros(sum(p.numel() for p in model.parameters()), device=env.device)
comm_times = []
for _ in range(10):
    start = time.perf_counter()
    dist.all_reduce(grads)
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    comm_times.append(time.perf_counter() - start)

# checkpoint: rank 0 writes, everybody waits, everybody reads (onto its own device)
checkpoint = f"{args.out}/checkpoint_{env.world_size}.pt"
if env.is_main:
    dlcourse.train.save_checkpoint(checkpoint, model.module, optimizer, epoch=args.num_epochs)
dist.barrier()                       # nobody reads the file before rank 0 has finished writing it
restored = nn.Sequential(nn.Linear(64, args.hidden), nn.Tanh(), nn.Linear(args.hidden, 10)).to(env.device)
dlcourse.train.load_checkpoint(checkpoint, restored, map_location=env.device)
assert all(torch.equal(a, b) for a, b in zip(restored.parameters(), model.module.parameters()))

orders, devices = [None] * env.world_size, [None] * env.world_size
dist.all_gather_object(orders, first_indices)      # every rank's index order, collected for rank 0's report
dist.all_gather_object(devices, str(env.device))   # where each rank computed
results = {"world_size": env.world_size, "backend": env.backend, "devices": devices,
           "losses": global_losses.cpu(), "orders": orders,
           "step_times": step_times, "comm_times": comm_times, "threads": torch.get_num_threads(),
           "params": [p.detach().cpu() for p in model.module.parameters()]}
dd.save0(results, f"{args.out}/results_{env.world_size}.pt")
dd.cleanup()                         # barrier, destroy the process group, exit

# %% [markdown]
# With a GPU for every rank the script runs on NCCL, one GPU per rank; otherwise (no GPU, or one GPU for two
# ranks) on CPU processes with gloo. `dd.backend_for(nproc)` makes that choice, and `dd.init()` inside the script
# makes the same one. `dd.launch` runs `python -m torch.distributed.run --standalone --nproc-per-node=N` (the `torchrun` command,
# through this kernel's Python, whose `bin` folder need not be on `PATH`); `--standalone` picks a free port. It
# prints what the ranks print, and if a rank fails it raises an error that shows that rank's traceback. (A plain
# `!torchrun ...` shell line would not: a failing shell command does not fail the notebook cell.)

# %%
nproc = 2
backend, why = dd.backend_for(nproc)
print(f"{nproc} processes: {why}")
num_epochs = cfg.pick(smoke=3, small=8, full=20)
hidden = cfg.pick(smoke=64, small=256, full=1024)
script_args = ["--data", data_file, "--out", run_dir, "--backend", backend, "--num-epochs", num_epochs, "--batch-size", 64,
               "--lr", 0.1, "--hidden", hidden]
start = time.perf_counter()
dd.launch(script, nproc=nproc, args=script_args, timeout=cfg.pick(smoke=180, small=600, full=1800))
launch_seconds = time.perf_counter() - start
print(f"--- {nproc} processes: {launch_seconds:.1f} s from launch to exit")
result = torch.load(run_dir / f"results_{nproc}.pt")
print(f"the ranks ran with {result['backend']} on {', '.join(result['devices'])}")
assert result["backend"] == backend and len(result["devices"]) == nproc

# %% [markdown]
# Most of those seconds are start-up: every rank imports torch, and DDP's first use imports more of it. The
# training itself is a small part.
#
# Now the claim of section 1, on the real script: two processes on 32 examples each per step against a plain
# single-process loop written right here (no `torch.distributed` at all) on batches of 64. The loop builds each
# global batch the way the sampler does: `torch.randperm` with the seed `0 + epoch`, cut into consecutive
# batches of 64. (Rank r takes every second index starting at r, 32 per step: together, the same 64.)
#
# The loop runs where the ranks ran: on the CPU when they used gloo, so that the only difference is the order of
# the sums (tolerance 1e-5); on the GPU when they used NCCL, where CUDA's kernels and NCCL's reduction order add
# their own rounding (tolerance 1e-4; float32 matmuls on CUDA are IEEE float32 unless TF32 is on, printed below).

# %%
def train_plain(num_epochs, batch_size, lr, hidden, device):
    """Single-process training on the full global batches, in the order DistributedSampler shuffles them."""
    X_train, y_train = splits.train.tensors
    n = len(X_train) // batch_size * batch_size
    torch.manual_seed(0)
    model = digits_net(hidden).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for epoch in range(num_epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0 + epoch))
        for idx in order.split(batch_size):               # (batch_size,) indices of one global batch
            loss = F.cross_entropy(model(X_train[idx].to(device)), y_train[idx].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return [p.detach().cpu() for p in model.parameters()]


plain_device = torch.device(result["devices"][0])   # the CPU (gloo) or cuda:0 (NCCL), like rank 0
if plain_device.type == "cuda":
    print(dlcourse.config.tf32_status())
plain = train_plain(num_epochs=num_epochs, batch_size=64, lr=0.1, hidden=hidden, device=plain_device)
tolerance = 1e-5 if plain_device.type == "cpu" else 1e-4
difference = max_diff(result["params"], plain)
print(f"final parameters, torchrun on {nproc} processes vs the plain loop on {plain_device}: "
      f"max |difference| {difference:.2e} (tolerance {tolerance:g})")
assert difference < tolerance
losses = result["losses"]
print(f"global loss: first step {losses[0]:.3f}, last step {losses[-1]:.3f}")
assert losses[-5:].mean() < 0.5 * losses[:5].mean(), "the loss falls: the ranks learn together"

# %% [markdown]
# The checkpoint that rank 0 saved is an ordinary one: it loads into an unwrapped model in this notebook, on
# whatever device we have, and the model it holds has learned the digits.

# %%
model = digits_net(hidden).to(device)
saved = dlcourse.train.load_checkpoint(run_dir / f"checkpoint_{nproc}.pt", model, map_location=device)
print("keys:", list(saved["model"]), "| epoch", saved["epoch"])
assert not any(k.startswith("module.") for k in saved["model"]), "saved from model.module: no DDP prefix"
test_acc = dlcourse.evaluate(model, splits.loaders(batch_size=256)[2])["acc"]
print(f"test accuracy of the checkpoint trained on {nproc} processes: {test_acc:.3f}")
assert test_acc > 0.85

# %% [markdown]
# ## 6. `DistributedSampler` and the forgotten `set_epoch`
# The sampler is pure index arithmetic: given `num_replicas` and `rank` it needs no process group, so we can
# look at what each rank would get right here. It shuffles with a generator seeded by `seed + epoch`, where
# `epoch` is whatever `set_epoch` last set — 0 if it is never called. Forget the call and every epoch replays the
# same order: the model sees the same batches in the same sequence every epoch, which usually costs accuracy and
# is easy to miss (nothing fails).

# %%
tiny_dataset = list(range(10))         # indices 0..9; 10 is not a multiple of 3 (padding below)
rows = []
for call_set_epoch in (False, True):
    for rank in range(2):
        sampler = DistributedSampler(tiny_dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        orders = []
        for epoch in range(3):
            if call_set_epoch:
                sampler.set_epoch(epoch)
            orders.append(list(sampler))
        rows.append(["yes" if call_set_epoch else "no (bug)", rank, *orders])
        assert (orders[0] == orders[1] == orders[2]) != call_set_epoch
print_table(["set_epoch?", "rank", "epoch 0", "epoch 1", "epoch 2"], rows)

print("\nthe launched run (it calls set_epoch): the first indices each rank took, per epoch")
orders = result["orders"]                          # orders[rank][epoch]: the first indices of that epoch
print_table(["epoch", *[f"rank {r}" for r in range(nproc)]],
            [[epoch, *[orders[r][epoch] for r in range(nproc)]] for epoch in range(num_epochs)])
assert orders[0][0] != orders[0][1], "with set_epoch, the order changes from epoch to epoch"

# %% [markdown]
# Padding: with 10 examples and 3 ranks, each rank gets ⌈10/3⌉ = 4 indices, so 2 examples are used twice in
# every epoch (with `drop_last=True` the sampler drops 1 instead, and each rank gets 3). With a large dataset this
# is harmless; it matters when you evaluate: a distributed validation loop counts the padded examples twice.

# %%
shards = [list(DistributedSampler(tiny_dataset, num_replicas=3, rank=r, shuffle=False)) for r in range(3)]
print("3 ranks, no shuffle:", shards)
everything = sum(shards, [])
assert sorted(set(everything)) == tiny_dataset and len(everything) == 12

# %% [markdown]
# ## 7. FSDP: shard the parameters too
# DDP keeps a full copy of the parameters, gradients and optimizer state on every rank: with Adam, notebook 08's
# 16 bytes per parameter, on each rank. **Fully Sharded Data Parallel** keeps only a 1/W slice of each on each
# rank. Before a layer's forward (and again for its backward) the ranks **all-gather** its full parameters,
# and free them right after; the gradients are **reduce-scattered**, so each rank receives the averaged
# gradient of its own slice only and updates only that slice. Same mathematics as DDP, a fraction of the memory,
# more communication.
#
# PyTorch's FSDP2 is `fully_shard(module)`: applied to each layer and then to the root, it turns every parameter
# into a `DTensor` split along dim 0 across a `DeviceMesh` of ranks. The installed torch runs it on a CPU gloo
# mesh, so here it is, on 2 ranks, with the parameters each rank holds.

# %%
def fsdp_train(rank, world_size, num_steps):
    mesh = init_device_mesh("cpu", (world_size,))     # on GPUs: init_device_mesh("cuda", ...)
    model = make_model()
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)             # each layer: one all-gather unit
    fully_shard(model, mesh=mesh)
    held = {name: (tuple(p.shape), tuple(p.to_local().shape)) for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for step in range(num_steps):
        X, y = global_batch(step)
        X, y = X.chunk(world_size)[rank], y.chunk(world_size)[rank]
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad()
        loss.backward()                               # reduce-scatter: each rank gets its slice's mean gradient
        optimizer.step()                              # updates this rank's slice only
    full = [p.full_tensor() for p in model.parameters()]   # all-gather, to compare
    return held, full


fsdp = dd.run_local(fsdp_train, 2, num_steps, echo=False)
rows, held_total = [], [0, 0]
for name in fsdp[0][0]:
    full_shape = fsdp[0][0][name][0]
    rows.append([name, full_shape, fsdp[0][0][name][1], fsdp[1][0][name][1]])
    for rank in range(2):
        held_total[rank] += torch.Size(fsdp[rank][0][name][1]).numel()
total = dlcourse.models.count_parameters(make_model())
rows.append(["total (numbers)", total, held_total[0], held_total[1]])
print_table(["parameter", "full shape", "rank 0 holds", "rank 1 holds"], rows)
print(f"\nafter {num_steps} steps, FSDP vs one process: max |difference| {max_diff(fsdp[0][1], single_params):.2e}")
assert sum(held_total) == total and all(abs(h - total / 2) < total * 0.05 for h in held_total)
assert max_diff(fsdp[0][1], single_params) < 1e-5

# %% [markdown]
# Each rank holds half the numbers (an odd size along dim 0 would give rank 0 one row more), and training gives
# the same model as one process. On GPUs, FSDP2 also takes a `MixedPrecisionPolicy` (e.g. bf16 compute with fp32 master weights)
# and an `OffloadPolicy` that parks the shards in CPU memory (that one needs an NVIDIA driver, so it is not
# run here).

# %% [markdown]
# ## 8. Scaling efficiency
# With W processes, the ideal is W times the throughput. **Scaling efficiency** = speed-up / W, where speed-up =
# (time per step on 1 process) / (time per step on W processes), for the same global batch. Below, SGD steps of
# a wider MLP are timed three ways: in this kernel (one process, no DDP, with the kernel's threads), and with
# DDP on 1 and on 2 processes from `run_local`, together with one all-reduce of all gradients on its own. Each
# rank gets this kernel's threads divided by the number of ranks (at least one), so all rows use about the same
# cores. Each set-up runs for a fixed time budget, not a fixed number of steps, so a busy machine cannot make
# this cell run long.

# %%
width = cfg.pick(smoke=256, small=1024, full=1024)
scaling_batch = cfg.pick(smoke=256, small=1024, full=1024)   # global batch, split over the processes
budget_s = cfg.pick(smoke=0.5, small=5.0, full=5.0)           # seconds of timed steps per set-up


def scaling_model():
    torch.manual_seed(0)
    return dlcourse.models.mlp(64, [width, width], 10)


def timed_steps(model, X, y, sync=False):
    """SGD steps until budget_s has passed (all ranks stop together); the median step time in seconds."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    step_times, t0 = [], time.perf_counter()
    while True:
        start = time.perf_counter()
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step_times.append(time.perf_counter() - start)
        stop = torch.tensor([float(len(step_times) >= 3 and time.perf_counter() - t0 > budget_s)])
        if sync:
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)    # every rank must take the same number of steps
        if stop.item():
            return torch.tensor(step_times[2:]).median().item()   # the first 2 steps are warm-up


def ddp_step_time(rank, world_size):
    gen = torch.Generator().manual_seed(rank)
    X = torch.randn(scaling_batch // world_size, 64, generator=gen)          # this rank's share
    y = torch.randint(0, 10, (scaling_batch // world_size,), generator=gen)
    model = DDP(scaling_model())
    step = timed_steps(model, X, y, sync=True)
    flat = torch.zeros(sum(p.numel() for p in model.parameters()))        # all gradients in one tensor
    comm_times = []
    for _ in range(5):
        start = time.perf_counter()
        dist.all_reduce(flat)
        comm_times.append(time.perf_counter() - start)
    return step, torch.tensor(comm_times).median().item(), torch.get_num_threads()


gen = torch.Generator().manual_seed(0)
X_scaling = torch.randn(scaling_batch, 64, generator=gen)
y_scaling = torch.randint(0, 10, (scaling_batch,), generator=gen)
baseline = timed_steps(scaling_model(), X_scaling, y_scaling)
rows = [["1 (this kernel, no DDP)", torch.get_num_threads(), f"{1000 * baseline:.2f} ms",
         f"{scaling_batch / baseline:.0f}", "-", "1.00", "1.00"]]
for world_size in (1, 2):
    step, comm, threads = dd.run_local(ddp_step_time, world_size, echo=False)[0]
    speed_up = baseline / step
    rows.append([f"{world_size} (run_local, DDP)", threads, f"{1000 * step:.2f} ms", f"{scaling_batch / step:.0f}",
                 f"{1000 * comm:.3f} ms", f"{speed_up:.2f}", f"{speed_up / world_size:.2f}"])
print(f"MLP 64-{width}-{width}-10 ({dlcourse.models.count_parameters(scaling_model())} parameters), global batch "
      f"{scaling_batch}, gloo; speed-up against this kernel's single process")
print_table(["processes", "threads each", "time/step", "samples/s", "one all-reduce", "speed-up", "efficiency"],
            rows)
load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "not available on this system"
print(f"CPU cores: {os.cpu_count()}; load average while measuring: {load}")

# %% [markdown]
# Read the table with the machine in mind. On a CPU, a second process adds no hardware: a single process can
# already use every core through its threads, so two processes split the same cores, do the same arithmetic,
# and add a gloo all-reduce over local TCP to every step (the "one all-reduce" column). Compare rows by the
# threads they use in all ("threads each" times processes). If this kernel runs with a single thread (CI sets
# `OMP_NUM_THREADS=1`), each rank still gets one, so two processes use twice the cores of the baseline and can
# look faster for that reason alone. On a busy machine (a load average above the number of cores) every
# row slows down, multi-threaded ones most. However the numbers fall on your machine, distributed training on one
# CPU teaches correctness, not speed.
#
# **What to expect on a multi-GPU node** (not measured here): each rank brings its own GPU, NCCL all-reduces over
# NVLink, and DDP overlaps the all-reduce of early buckets with the rest of the backward pass. For models large
# enough to keep each GPU busy, efficiency is typically close to 1; it falls when the per-GPU batch is so small
# that communication dominates, or when gradients must cross a slow network between machines. To measure it
# there, launch `train_ddp.py` on 1 and on W GPUs with the same `--batch-size` and compare the step times it
# saves (`step_times` in its results file).

# %% [markdown]
# ## Summary
# - Data parallelism: every rank holds the model, computes the gradient of its shard, and all ranks average
#   their gradients with an all-reduce (SUM, then divide by the world size). With equal shards and a mean loss
#   this is exactly the full batch's gradient: DDP matched single-process training to float32 rounding.
# - `DistributedDataParallel` broadcasts rank 0's weights at start, averages gradients in buckets during
#   `backward()` (overlapping communication with computation), and needs no change to the training loop.
# - A `torchrun` script: `init_process_group` (here `dd.init()`), `DistributedSampler` + `set_epoch(epoch)`,
#   DDP, rank-0 printing and saving of `model.module.state_dict()`, a barrier before others read,
#   `map_location` when loading, and a clean exit (`dd.cleanup()`). Launch it from Python with
#   `sys.executable -m torch.distributed.run` and fail loudly when a rank fails (`dd.launch`).
# - Without `set_epoch`, every epoch repeats the first epoch's order on every rank, silently.
# - FSDP (`fully_shard`) keeps 1/W of each parameter, gradient and optimizer state per rank, gathering full
#   layers only while they compute; same result as DDP, less memory, more communication.
# - Scaling efficiency is measured, not assumed: on shared CPU cores a second process cannot help; on a GPU node
#   each rank adds a device, and efficiency near 1 is achievable when computation dominates communication.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell), {launch_seconds:.1f} s of it in the torchrun job.")

# %% [markdown]
# ## Exercises
# 1. **The bug, for real.** Copy `train_ddp.py`, delete the `sampler.set_epoch(epoch)` line, launch it, and
#    compare the printed index orders and the final test accuracy with the original run (use `small` scale).
# 2. **Gradient accumulation with DDP.** Accumulate 2 micro-batches per step, wrapping the first backward in
#    `with model.no_sync():`. Show that the final parameters equal a run without accumulation on twice the
#    per-rank batch, and count how many all-reduces each version makes (hint: time one step of each).
# 3. **Uneven shards.** Give the ranks shards of different sizes (say 40 and 24 examples). Is the average of the
#    ranks' mean gradients still the full batch's gradient? Fix it by weighting each rank's gradient.
# 4. **Fewer, larger messages.** Rewrite `average_gradients` to flatten all gradients into one tensor
#    (`torch.cat([g.flatten() ...])`), all-reduce it once, and copy the slices back. Time both versions on a
#    model with 50 small layers.
# 5. **What FSDP gathers.** In `fsdp_train`, apply `fully_shard` only to the root model (not to each layer).
#    Does the result change? What changes in how much memory a rank needs at the peak of the forward pass?
# 6. **Weak scaling.** Keep the *per-rank* batch at 64 (global batch 64 × W) and measure samples per second for
#    1 and 2 processes. Why do people usually quote this number for large jobs?
