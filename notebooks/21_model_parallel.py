# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 21 · Model parallelism: tensor, pipeline, sharded optimizer, distributed checkpoints
#
# Data parallelism (notebook 09) gives every rank the whole model. When the model, its activations or its
# optimizer state no longer fit on one device, the model itself must be split. This notebook splits it three
# ways on two CPU processes, each time checking the result against one process doing all the work:
# **tensor parallelism** cuts every weight matrix between ranks, **pipeline parallelism** gives each rank a
# slice of the layers and streams micro-batches through them, and a **sharded optimizer** (ZeRO) gives each rank
# a slice of the Adam state. Then it saves a sharded model from two ranks and loads it into one, and combines data
# and tensor parallelism on a 2-D mesh of four ranks.
#
# **Learning goals**
# - Write column- and row-parallel linear layers with the right collective in the forward and the backward pass,
#   and show a tensor-parallel MLP equals the single-process MLP in outputs and gradients; do the same with
#   `parallelize_module` on a `DeviceMesh`, and count the bytes each step communicates.
# - Run the GPipe and 1F1B pipeline schedules by hand on two stages; measure the bubble fraction against
#   (p − 1)/(m + p − 1) and the activations each schedule keeps; compare with `torch.distributed.pipelining`.
# - Write a ZeRO-1 step (each rank owns a shard of the Adam state) equal to DDP + Adam, and measure the state
#   each rank keeps.
# - Save an FSDP2 model with `torch.distributed.checkpoint` from two ranks, read what is on disk, and load it
#   into one process.
# - Say which parallelism relieves which limit, with this notebook's numbers.
#
# **Prerequisites:** notebook 09 (collectives, DDP, FSDP, `dd.run_local`) and 08 (where training memory goes).
# No GPU needed: every rank here is a CPU process started by `dd.run_local` and talking over gloo, so the checks
# compare float32 CPU results. On GPUs the same code runs with NCCL once the mesh is built on `"cuda"` and the
# process group with `dd.init()` under `torchrun` (notebook 09, section 5).
#
# **Time:** seconds at `smoke` (most of it starting processes); about a minute at `small`; `full` uses larger
# layers and more micro-batches on the same CPU ranks. The last cell prints how long this run took.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch import nn

import dlcourse
import dlcourse.distributed as dd

cfg = dlcourse.setup(seed=0)
device = cfg.device
run_tmp = tempfile.TemporaryDirectory(prefix="dlcourse-21-")  # checkpoints: removed at exit
run_dir = Path(run_tmp.name)
t_start = time.perf_counter()

d_model = cfg.pick(smoke=16, small=128, full=512)      # MLP width: d_model -> 4 d_model -> d_model
batch_size = cfg.pick(smoke=8, small=64, full=256)


def print_table(header, rows):
    """Print rows of values under a header, one column each, aligned."""
    cells = [[str(h) for h in header]] + [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
                                          for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def make_mlp(seed=0):
    """The MLP every section splits: (B, d_model) -> (B, 4 d_model) -> GELU -> (B, d_model)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))


def make_batch(n=batch_size, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_model, generator=gen), torch.randn(n, d_model, generator=gen)   # X, target


def max_diff(a, b):
    """Largest absolute difference between two lists of tensors."""
    return max((x - y).abs().max().item() for x, y in zip(a, b))


# %% [markdown]
# ## 1. Tensor parallelism from scratch
# A linear layer $Y = X W^\top$ with $W$ of shape (out, in) can be split two ways over W ranks:
# - **Column-parallel**: rank r keeps the rows $W_r$ of $W$ (a slice of the *outputs*) and computes $Y_r = X
#   W_r^\top$, a slice of $Y$'s columns. It needs the full input $X$; the full output would need an all-gather.
# - **Row-parallel**: rank r keeps the columns $W_{:,r}$ of $W$ (a slice of the *inputs*) and computes $X_r
#   W_{:,r}^\top$ from its slice $X_r$ of the input's columns. The ranks' results are partial sums of $Y$: an
#   all-reduce adds them.
#
# An MLP chains the two (Megatron-LM's layout): the first layer column-parallel, the element-wise GELU on each
# rank's slice (no communication), the second layer row-parallel whose input slice is exactly what the first
# produced. One all-reduce in the forward pass. In the backward pass the mirror image: the output's gradient is
# already on every rank (identity), and the input's gradient is a partial sum again (one all-reduce). Two
# autograd functions say this: `copy_to_tp` (forward identity, backward all-reduce) and `reduce_from_tp`
# (forward all-reduce, backward identity).
#
# **Sequence parallelism** keeps the activations *outside* the MLP split by rows (tokens) instead of replicated:
# an all-gather of the rows before the first layer (its backward: a reduce-scatter), and a reduce-scatter instead
# of the all-reduce after the second (its backward: an all-gather). An all-reduce is a reduce-scatter followed by
# an all-gather, so the bytes are the same; what changes is that no rank stores the full activation.
#
# `comm` counts the bytes one rank sends, as a ring algorithm would: an all-reduce of n bytes over W ranks
# sends $2\frac{W-1}{W}n$, an all-gather or reduce-scatter of a result of n bytes sends $\frac{W-1}{W}n$.

# %%
comm = {"bytes": 0, "calls": []}           # per process: each rank counts what it sends


def count(kind, nbytes_full):
    W = dist.get_world_size()
    factor = 2 * (W - 1) / W if kind == "all_reduce" else (W - 1) / W
    comm["bytes"] += int(factor * nbytes_full)
    comm["calls"].append(kind)


def all_gather_rows(x):                    # (n, d) on each rank -> (W n, d), rank order
    out = torch.empty(dist.get_world_size() * x.shape[0], *x.shape[1:], dtype=x.dtype)
    dist.all_gather(list(out.chunk(dist.get_world_size())), x.contiguous())
    count("all_gather", out.nbytes)
    return out


def reduce_scatter_rows(x):                # (W n, d) on each rank -> this rank's n rows of the sum over ranks
    W = dist.get_world_size()
    out = torch.empty(x.shape[0] // W, *x.shape[1:], dtype=x.dtype)
    dist.reduce_scatter(out, [c.contiguous() for c in x.chunk(W)])
    count("reduce_scatter", x.nbytes)
    return out


def all_reduce(x):
    x = x.clone()
    dist.all_reduce(x)
    count("all_reduce", x.nbytes)
    return x


class CopyToTP(torch.autograd.Function):
    """Forward: identity (every rank already holds X). Backward: all-reduce the partial input gradients."""
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return all_reduce(grad)


class ReduceFromTP(torch.autograd.Function):
    """Forward: all-reduce the partial sums. Backward: identity (the output's gradient is on every rank)."""
    @staticmethod
    def forward(ctx, x):
        return all_reduce(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class GatherRows(torch.autograd.Function):
    """Sequence parallel: forward all-gather of the rows, backward reduce-scatter of their gradient."""
    @staticmethod
    def forward(ctx, x):
        return all_gather_rows(x)

    @staticmethod
    def backward(ctx, grad):
        return reduce_scatter_rows(grad)


class ScatterRows(torch.autograd.Function):
    """Sequence parallel: forward reduce-scatter of the partial sums, backward all-gather of the gradient."""
    @staticmethod
    def forward(ctx, x):
        return reduce_scatter_rows(x)

    @staticmethod
    def backward(ctx, grad):
        return all_gather_rows(grad)


class TensorParallelMLP(nn.Module):
    """This rank's part of the MLP: rows of the first weight, columns of the second (bias 2 replicated)."""

    def __init__(self, full: nn.Sequential, rank: int, world_size: int, sequence_parallel: bool = False):
        super().__init__()
        w1, b1, w2, b2 = (p.detach() for p in full.parameters())
        self.w1 = nn.Parameter(w1.chunk(world_size, dim=0)[rank].clone())   # (4d/W, d): column-parallel
        self.b1 = nn.Parameter(b1.chunk(world_size)[rank].clone())          # (4d/W,)
        self.w2 = nn.Parameter(w2.chunk(world_size, dim=1)[rank].clone())   # (d, 4d/W): row-parallel
        self.b2 = nn.Parameter(b2.clone())                                   # (d,): on every rank
        self.sequence_parallel = sequence_parallel

    def forward(self, x):                  # x: (B, d), or this rank's (B/W, d) rows with sequence parallelism
        x = GatherRows.apply(x) if self.sequence_parallel else CopyToTP.apply(x)      # (B, d)
        h = F.gelu(F.linear(x, self.w1, self.b1))                                      # (B, 4d/W): a slice
        partial = F.linear(h, self.w2)                                                 # (B, d): a partial sum
        y = ScatterRows.apply(partial) if self.sequence_parallel else ReduceFromTP.apply(partial)
        return y + self.b2                 # (B, d), or this rank's (B/W, d) rows


def tp_from_scratch(rank, world_size):
    X, target = make_batch()
    results = {}
    for sp in (False, True):
        comm["bytes"], comm["calls"] = 0, []
        model = TensorParallelMLP(make_mlp(), rank, world_size, sequence_parallel=sp)
        x = (X.chunk(world_size)[rank] if sp else X).clone().requires_grad_()
        t = target.chunk(world_size)[rank] if sp else target
        y = model(x)
        loss = F.mse_loss(y, t, reduction="sum") / X.numel()   # the mean over the full batch
        loss.backward()
        if sp:                             # b2 saw only this rank's rows: sum its gradient over ranks
            dist.all_reduce(model.b2.grad)
        results[sp] = {"y": y.detach(), "x_grad": x.grad, "grads": [p.grad for p in model.parameters()],
                       "bytes": comm["bytes"], "calls": list(comm["calls"]),
                       "param_numel": sum(p.numel() for p in model.parameters())}
    return results


tp = dd.run_local(tp_from_scratch, 2, echo=False)

reference = make_mlp()
X, target = make_batch()
X_ref = X.clone().requires_grad_()
y_ref = reference(X_ref)
F.mse_loss(y_ref, target).backward()
w1g, b1g, w2g, b2g = (p.grad for p in reference.parameters())


def expected_grads(rank, W=2):
    return [w1g.chunk(W, 0)[rank], b1g.chunk(W)[rank], w2g.chunk(W, 1)[rank], b2g]


rows = []
tp_tol = 1e-5
for sp, name in ((False, "tensor parallel"), (True, "+ sequence parallel")):
    for rank in range(2):
        r = tp[rank][sp]
        y_exp = y_ref.detach().chunk(2)[rank] if sp else y_ref.detach()
        xg_exp = X_ref.grad.chunk(2)[rank] if sp else X_ref.grad
        out_diff, grad_diff = (r["y"] - y_exp).abs().max().item(), max_diff(r["grads"], expected_grads(rank))
        xg_diff = (r["x_grad"] - xg_exp).abs().max().item()
        rows.append([name, rank, out_diff, grad_diff, xg_diff, " ".join(r["calls"]), r["bytes"]])
        assert max(out_diff, grad_diff, xg_diff) < tp_tol
print_table(["layout", "rank", "output diff", "weight grad diff", "input grad diff", "collectives (fwd, bwd)",
             "bytes sent"], rows)
act_bytes = batch_size * d_model * 4
assert tp[0][False]["bytes"] == tp[0][True]["bytes"] == 2 * act_bytes    # W = 2: 2 (W-1)/W n = n, twice
tp_params = tp[0][False]["param_numel"]
full_params = dlcourse.models.count_parameters(reference)
print(f"parameters per rank: {tp_params} of {full_params} ({tp_params / full_params:.2f}); bytes sent per step "
      f"per rank: {tp[0][False]['bytes']} = 2 x the (B, d) activation of {act_bytes} bytes")

# %% [markdown]
# Every rank's output equals the single-process output, and every shard's gradient equals the corresponding slice
# of the single-process gradient, to float32 rounding (`tp_tol`): the two ranks add the halves of a sum in another
# order than one process. The communication is two activations per step whatever the number of parameters:
# tensor parallelism trades weight memory for activation traffic, which is why it stays inside a node with fast
# links (NVLink). Sequence parallelism sends the same bytes and leaves each rank half the activations around the
# MLP.

# %% [markdown]
# ## 2. The same with `parallelize_module`
# PyTorch's tensor-parallel API does the splitting and the collectives: on a `DeviceMesh` of ranks,
# `ColwiseParallel` shards a linear's weight by output rows and `RowwiseParallel` by input columns, each weight
# becoming a `DTensor` (a tensor with a placement: `Shard(0)`, `Shard(1)` or `Replicate()`).
# `CommDebugMode` counts the collectives a step ran.

# %%
def tp_torch(rank, world_size):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.debug import CommDebugMode
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", (world_size,))           # on GPUs: init_device_mesh("cuda", ...)
    model = parallelize_module(make_mlp(), mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    X, target = make_batch()
    x = X.clone().requires_grad_()
    with CommDebugMode() as counter:
        y = model(x)
        F.mse_loss(y, target).backward()
    placements = {name: (str(p.placements[0]), tuple(p.to_local().shape)) for name, p in model.named_parameters()}
    grads = [p.grad.full_tensor() for p in model.parameters()]   # all-gathered, to compare
    y = y.wait() if hasattr(y, "wait") else y
    return {"y": y.detach().clone(), "x_grad": x.grad, "grads": grads, "placements": placements,
            "counts": {str(k).split(".")[-1]: v for k, v in counter.get_comm_counts().items()}}


tpt = dd.run_local(tp_torch, 2, echo=False)
print_table(["parameter", "placement", "rank 0 holds"], [[n, *tpt[0]["placements"][n]] for n in tpt[0]["placements"]])
print("collectives in one step:", tpt[0]["counts"])
ref_grads = [p.grad for p in reference.parameters()]
for r in tpt:
    assert (r["y"] - y_ref).abs().max() < tp_tol and max_diff(r["grads"], ref_grads) < tp_tol
    assert (r["x_grad"] - X_ref.grad).abs().max() < tp_tol
assert tpt[0]["counts"] == {"all_reduce": 2}, "the same two all-reduces as the from-scratch MLP"
print(f"parallelize_module vs one process: output diff {(tpt[0]['y'] - y_ref).abs().max():.1e}, "
      f"gradient diff {max_diff(tpt[0]['grads'], ref_grads):.1e}")

# %% [markdown]
# Same placements, same two all-reduces, same numbers. (`SequenceParallel` and the `input_layouts` /
# `output_layouts` arguments give the sequence-parallel layout of section 1.)

# %% [markdown]
# ## 3. Pipeline parallelism: GPipe and 1F1B
# Split the layers instead: stage 0 (the first linear and the GELU) on rank 0, stage 1 (the second linear and the
# loss) on rank 1. Rank 0 sends its activation forward, rank 1 sends the activation's gradient back. With one
# batch, one rank always waits for the other. Cut the batch into m **micro-batches** and the stages overlap, except
# at the start and the end: the **bubble**. With p stages, forward and backward times per micro-batch equal on every
# stage, the GPipe schedule (all forwards, then all backwards) takes m + p − 1 slots of which each stage is busy m,
# so the idle fraction is
# $$\text{bubble} = \frac{p-1}{m+p-1}.$$
# **1F1B** runs the same slots in another order: after p − r − 1 warm-up forwards, stage r alternates one forward
# and one backward. Its bubble is the same, but a stage never holds more than p − r micro-batches' activations,
# against m for GPipe.
#
# The schedules below are lists of ("F", i) and ("B", i); one function runs any of them on the two stages. To make
# the bubble visible above the cost of starting a message between processes, each forward also sleeps `slot_s`
# and each backward 2 × `slot_s` (stand-ins for a large layer's compute). The bubble is measured from the clock:
# 1 − (time a stage spent computing) / (time from the common start to the common end).

# %%
def schedule(kind, p, m, rank):
    """The order of forward ("F", i) and backward ("B", i) micro-batch steps on stage ``rank`` of ``p``."""
    if kind == "gpipe":
        return [("F", i) for i in range(m)] + [("B", i) for i in range(m)]
    warmup = min(p - rank - 1, m)                                       # 1F1B
    order = [("F", i) for i in range(warmup)]
    for i in range(m - warmup):
        order += [("F", warmup + i), ("B", i)]
    return order + [("B", i) for i in range(m - warmup, m)]


print("stage 0, GPipe:", schedule("gpipe", 2, 4, 0))
print("stage 0, 1F1B: ", schedule("1f1b", 2, 4, 0))
print("stage 1, 1F1B: ", schedule("1f1b", 2, 4, 1))

slot_s = cfg.pick(smoke=0.02, small=0.02, full=0.05)
micro_batches = cfg.pick(smoke=[1, 2, 4], small=[1, 2, 4, 8], full=[1, 2, 4, 8, 16])


def run_pipeline(rank, world_size, kind, m, stages):
    """Run one training step of the 2-stage MLP with schedule ``kind`` and m micro-batches; return the stage's
    gradients, its busy and total time, and the most micro-batches whose activations it held at once."""
    stage = stages[rank]
    X, target = make_batch()
    xs, ts = X.chunk(m), target.chunk(m)
    inputs, outputs, held, peak, busy = {}, {}, 0, 0, 0.0
    pending = []
    dist.barrier()
    t0 = time.perf_counter()
    for op, i in schedule(kind, world_size, m, rank):
        if op == "F":
            if rank == 0:
                x = xs[i]
            else:
                x = torch.empty(xs[i].shape[0], 4 * d_model)
                dist.recv(x, src=0)
                x.requires_grad_()
            start = time.perf_counter()
            y = stage(x)
            if rank == 1:                  # the last stage computes the loss: a mean over the full batch
                y = F.mse_loss(y, ts[i], reduction="sum") / X.numel()
            time.sleep(slot_s)
            busy += time.perf_counter() - start
            inputs[i], outputs[i] = x, y
            held += 1
            peak = max(peak, held)
            if rank == 0:
                pending.append(dist.isend(y.detach(), dst=1))
        else:
            grad = None
            if rank == 0:
                grad = torch.empty_like(outputs[i])
                dist.recv(grad, src=1)
            start = time.perf_counter()
            outputs[i].backward(grad)
            time.sleep(2 * slot_s)
            busy += time.perf_counter() - start
            if rank == 1:
                pending.append(dist.isend(inputs[i].grad, dst=0))
            del inputs[i], outputs[i]      # the activations of micro-batch i are freed
            held -= 1
    for request in pending:
        request.wait()
    dist.barrier()
    total = time.perf_counter() - t0
    return {"grads": [p.grad for p in stage.parameters()], "busy": busy, "total": total, "peak": peak}


def pipeline_experiments(rank, world_size):
    results = {}
    for kind in ("gpipe", "1f1b"):
        for m in micro_batches:
            full = make_mlp()
            stages = [full[:2], full[2:]]
            results[kind, m] = run_pipeline(rank, world_size, kind, m, stages)
    # the same step with torch.distributed.pipelining
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    X, target = make_batch()
    m = micro_batches[-1]
    for kind, Schedule in (("gpipe", ScheduleGPipe), ("1f1b", Schedule1F1B)):
        full = make_mlp()
        stage = PipelineStage(full[:2] if rank == 0 else full[2:], rank, world_size, torch.device("cpu"))
        sched = Schedule(stage, n_microbatches=m, loss_fn=F.mse_loss)   # it divides the gradients by m
        if rank == 0:
            sched.step(X)
        else:
            sched.step(target=target)
        results["torch", kind] = [p.grad for p in stage.submod.parameters()]
    return results


pp = dd.run_local(pipeline_experiments, 2, echo=False)
pp_grads = {rank: [p.grad for p in (reference[:2] if rank == 0 else reference[2:]).parameters()] for rank in range(2)}
rows, bubble = [], {}
for kind in ("gpipe", "1f1b"):
    for m in micro_batches:
        measured = sum(1 - pp[r][kind, m]["busy"] / pp[r][kind, m]["total"] for r in range(2)) / 2
        formula = 1 / (m + 1)
        bubble[kind, m] = measured
        diff = max(max_diff(pp[r][kind, m]["grads"], pp_grads[r]) for r in range(2))
        rows.append([kind, m, f"{measured:.3f}", f"{formula:.3f}", pp[0][kind, m]["peak"], pp[1][kind, m]["peak"],
                     f"{diff:.1e}"])
        assert diff < tp_tol, "the accumulated micro-batch gradients are the full batch's"
        assert abs(measured - formula) < 0.1, (kind, m, measured, formula)
        assert pp[0][kind, m]["peak"] == (m if kind == "gpipe" else min(2, m))
        assert pp[1][kind, m]["peak"] == (m if kind == "gpipe" else 1)
print_table(["schedule", "m", "bubble measured", "(p-1)/(m+p-1)", "stage 0 peak activations",
             "stage 1 peak activations", "grad diff"], rows)
for kind in ("gpipe", "1f1b"):
    torch_diff = max(max_diff(pp[r]["torch", kind], pp_grads[r]) for r in range(2))
    print(f"torch.distributed.pipelining {kind} ({micro_batches[-1]} micro-batches) vs one process: "
          f"gradient diff {torch_diff:.1e}")
    assert torch_diff < tp_tol

# %% [markdown]
# The bubble shrinks as m grows, as the formula says, and 1F1B has the same bubble as GPipe; what 1F1B saves is
# memory: stage 0 holds at most 2 micro-batches' activations (p − r), GPipe all m. More micro-batches thus cost
# GPipe activation memory, and cost 1F1B nothing. Both give the full batch's gradient (the micro-batch gradients
# add up), and so does `torch.distributed.pipelining`, whose `ScheduleGPipe` and `Schedule1F1B` run on gloo.

# %% [markdown]
# ## 4. A sharded optimizer: ZeRO-1
# With Adam, each parameter carries two more float32 numbers (the moments m and v): DDP stores them on every
# rank. **ZeRO-1** splits them: flatten all parameters into one vector, give rank r the r-th slice, and let each
# rank run Adam on its slice only, after the usual gradient all-reduce. Then an all-gather brings every rank the
# updated parameters. **ZeRO-2** replaces the all-reduce by a reduce-scatter (each rank only needs its slice's
# gradient), which also halves the gradient kept. The result is the same as DDP + Adam; only memory changes.

# %%
zero_steps = cfg.pick(smoke=3, small=10, full=20)
zero_lr = 1e-2
zero_tol = 1e-4   # Adam divides by sqrt(v): rounding in a near-zero gradient can move a weight by up to ~lr


def adam_update(param, grad, state, lr, betas=(0.9, 0.999), eps=1e-8):
    """One Adam step on a flat tensor, in place (state: step, m, v)."""
    state["step"] += 1
    state["m"].mul_(betas[0]).add_(grad, alpha=1 - betas[0])
    state["v"].mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
    m_hat = state["m"] / (1 - betas[0] ** state["step"])
    v_hat = state["v"] / (1 - betas[1] ** state["step"])
    param.sub_(lr * m_hat / (v_hat.sqrt() + eps))


def zero1_step(model, state, rank, world_size, lr):
    """Average the gradients, update this rank's slice of the flat parameters with Adam, all-gather the rest."""
    params = list(model.parameters())
    flat_grad = torch.cat([p.grad.flatten() for p in params])
    pad = -len(flat_grad) % world_size
    flat_grad = F.pad(flat_grad, (0, pad))
    dist.all_reduce(flat_grad)                         # ZeRO-2: reduce-scatter, keep only this rank's slice
    count("all_reduce", flat_grad.nbytes)
    flat_grad /= world_size
    flat_param = F.pad(torch.cat([p.detach().flatten() for p in params]), (0, pad))
    mine = flat_param.chunk(world_size)[rank].clone()
    adam_update(mine, flat_grad.chunk(world_size)[rank], state, lr)
    dist.all_gather(list(flat_param.chunk(world_size)), mine)
    count("all_gather", flat_param.nbytes)
    with torch.no_grad():
        for p, new in zip(params, flat_param.split([p.numel() for p in params] + [pad])):
            p.copy_(new.view_as(p))


def zero_vs_ddp(rank, world_size):
    from torch.nn.parallel import DistributedDataParallel as DDP

    X, target = make_batch()
    shard = lambda t: t.chunk(world_size)[rank]        # this rank's half of the batch
    model = make_mlp()
    numel = sum(p.numel() for p in model.parameters())
    slice_len = (numel + world_size - 1) // world_size
    state = {"step": 0, "m": torch.zeros(slice_len), "v": torch.zeros(slice_len)}
    comm["bytes"] = 0
    for _ in range(zero_steps):
        model.zero_grad()
        F.mse_loss(model(shard(X)), shard(target)).backward()
        zero1_step(model, state, rank, world_size, zero_lr)
    zero_state_bytes, zero_bytes_per_step = state["m"].nbytes + state["v"].nbytes, comm["bytes"] // zero_steps
    ddp = DDP(make_mlp())
    optimizer = torch.optim.Adam(ddp.parameters(), lr=zero_lr)
    for _ in range(zero_steps):
        optimizer.zero_grad()
        F.mse_loss(ddp(shard(X)), shard(target)).backward()
        optimizer.step()
    ddp_state_bytes = sum(t.nbytes for s in optimizer.state.values() for t in s.values() if t.dim() > 0)
    return {"zero": [p.detach() for p in model.parameters()], "ddp": [p.detach() for p in ddp.module.parameters()],
            "zero_state_bytes": zero_state_bytes, "ddp_state_bytes": ddp_state_bytes, "numel": numel,
            "zero_bytes_per_step": zero_bytes_per_step}


zero = dd.run_local(zero_vs_ddp, 2, echo=False)
zero_diff = max(max_diff(zero[r]["zero"], zero[r]["ddp"]) for r in range(2))
print(f"after {zero_steps} Adam steps, ZeRO-1 vs DDP + torch.optim.Adam: max |difference| {zero_diff:.1e}")
print_table(["rank", "Adam state bytes, DDP", "Adam state bytes, ZeRO-1"],
            [[r, zero[r]["ddp_state_bytes"], zero[r]["zero_state_bytes"]] for r in range(2)])
ddp_bytes_per_step = 2 * (2 - 1) // 2 * 4 * zero[0]["numel"]     # DDP's ring all-reduce of the gradients, W = 2
print(f"bytes one rank sends per step: ZeRO-1 {zero[0]['zero_bytes_per_step']}, DDP {ddp_bytes_per_step}")
assert zero_diff < zero_tol
assert zero[0]["zero_bytes_per_step"] == 3 * ddp_bytes_per_step // 2
assert zero[0]["ddp_state_bytes"] == 8 * zero[0]["numel"]
assert all(zero[r]["zero_state_bytes"] == 8 * ((zero[0]["numel"] + 1) // 2) for r in range(2))

# %% [markdown]
# The difference is rounding, amplified by Adam's division by $\sqrt{v}$ where a gradient is close to zero
# (`zero_tol` = 1e-4); a real mistake, such as a slice updated twice or never gathered, moves weights by about
# `zero_lr` = 1e-2 per step. Each rank keeps half the Adam state (4 + 4 bytes per parameter in its slice, against
# 8 per parameter with DDP), and training is unchanged. The extra all-gather costs as many bytes as the all-reduce's
# second half: this ZeRO-1 sends 1.5 × DDP's bytes (counted above); with a reduce-scatter instead of the all-reduce
# (ZeRO-2, and most ZeRO-1 implementations) it sends exactly what DDP sends.
# `torch.distributed.optim.ZeroRedundancyOptimizer` is PyTorch's ZeRO-1; FSDP (notebook 09) shards
# the parameters as well (ZeRO-3).

# %% [markdown]
# ## 5. Distributed checkpoints: save from 2 ranks, load into 1
# An FSDP2 model's parameters are `DTensor`s: each rank holds a shard. `torch.distributed.checkpoint` (DCP) saves
# such a state dict without gathering it: every rank writes its own shards to its own file, and rank 0 writes a
# `.metadata` file saying which piece of which tensor (offsets and sizes) lies where. Loading reads that
# metadata and fetches the pieces each reader needs, for any number of readers: here a single process with a
# plain model, no process group (resharding 2 → 1).

# %%
ckpt_dir = run_dir / "fsdp_checkpoint"


def fsdp_save(rank, world_size, path):
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world_size,))
    model = make_mlp()
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    X, target = make_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    F.mse_loss(model(X.chunk(world_size)[rank]), target.chunk(world_size)[rank]).backward()
    optimizer.step()                               # one step, so the checkpoint differs from the initial weights
    dcp.save({"model": get_model_state_dict(model)}, checkpoint_id=path)
    return {name: p.full_tensor() for name, p in model.named_parameters()}


trained = dd.run_local(fsdp_save, 2, str(ckpt_dir), echo=False)[0]
print_table(["file", "bytes"], [[f.name, f.stat().st_size] for f in sorted(ckpt_dir.iterdir())])
metadata = dcp.FileSystemReader(str(ckpt_dir)).read_metadata()
print("\nwhat .metadata says about model.0.weight:")
tensor_meta = metadata.state_dict_metadata["model.0.weight"]
for chunk in tensor_meta.chunks:
    print(f"  full size {tuple(tensor_meta.size)}: piece at offsets {tuple(chunk.offsets)}, size {tuple(chunk.sizes)}")
assert len(tensor_meta.chunks) == 2 and sorted(f.suffix for f in ckpt_dir.iterdir()).count(".distcp") == 2

single = make_mlp(seed=123)                       # other weights, one process, no process group
state = {"model": single.state_dict()}
with warnings.catch_warnings():                  # DCP warns that it loads in a single process: what we want
    warnings.simplefilter("ignore", UserWarning)
    dcp.load(state, checkpoint_id=str(ckpt_dir))
single.load_state_dict(state["model"])
load_diff = max((single.state_dict()[name] - t).abs().max().item() for name, t in trained.items())
print(f"\nloaded into one process: max |difference| from the ranks' gathered parameters {load_diff}")
assert load_diff == 0.0

# %% [markdown]
# On disk: one `.distcp` file per rank, holding that rank's shards as bytes, and `.metadata`, the map from each
# tensor's name and piece (offsets, sizes) to a file and a byte range. The loader needs no process group and no
# FSDP: it asks for full tensors, and DCP reads the two pieces of each from the two files. The same checkpoint
# would load into 4 ranks or into a tensor-parallel layout. (`torch.distributed.checkpoint.state_dict`'s
# `get_optimizer_state_dict` does the same for the optimizer.)

# %% [markdown]
# ## 6. A 2-D mesh: data × tensor parallel
# Large jobs combine the two: a `DeviceMesh` of shape (dp, tp) puts the ranks in a grid. Along `"tp"` (inside
# a node, fast links) the MLP is split with `parallelize_module`; along `"dp"` (across nodes) each pair of ranks
# sees a different half of the batch, and the gradient shards are averaged over the `"dp"` group, as in notebook
# 09. Four processes, mesh (2, 2), one SGD step, compared with one process on the full batch.

# %%
def two_d(rank, world_size):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    dp_rank = mesh.get_local_rank("dp")
    model = parallelize_module(make_mlp(), mesh["tp"], {"0": ColwiseParallel(), "2": RowwiseParallel()})
    X, target = make_batch()
    F.mse_loss(model(X.chunk(2)[dp_rank]), target.chunk(2)[dp_rank]).backward()
    for p in model.parameters():                       # data parallel: average each local shard over "dp"
        local = p.grad.to_local()
        dist.all_reduce(local, group=mesh.get_group("dp"))
        local /= 2
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    return {"coords": (dp_rank, mesh.get_local_rank("tp")),
            "params": [p.full_tensor() for p in model.parameters()],
            "held": sum(p.to_local().numel() for p in model.parameters())}


grid = dd.run_local(two_d, 4, echo=False)
one = make_mlp()
F.mse_loss(one(X), target).backward()
with torch.no_grad():
    for p in one.parameters():
        p -= 0.1 * p.grad
print_table(["rank", "(dp, tp)", "parameters held", "vs one process"],
            [[r, g["coords"], g["held"], f"{max_diff(g['params'], list(one.parameters())):.1e}"]
             for r, g in enumerate(grid)])
assert all(max_diff(g["params"], list(one.parameters())) < tp_tol for g in grid)

# %% [markdown]
# ## 7. Which parallelism relieves which limit
# Bytes per rank for this notebook's MLP and batch, with 2 ranks, taken from the runs above (float32; activation
# = the hidden (B, 4d) tensor the backward pass keeps; communication per training step, bytes one rank sends).

# %%
P = full_params
hidden_act = batch_size * 4 * d_model * 4
table = [
    ["one process", 4 * P, hidden_act, 8 * P, 0],
    ["data parallel (DDP)", 4 * P, hidden_act // 2, zero[0]["ddp_state_bytes"], ddp_bytes_per_step],
    ["ZeRO-1", 4 * P, hidden_act // 2, zero[0]["zero_state_bytes"], zero[0]["zero_bytes_per_step"]],
    ["tensor parallel", 4 * tp_params, hidden_act // 2, 8 * tp_params, tp[0][False]["bytes"]],
    ["pipeline, 2 stages", 4 * sum(p.numel() for p in reference[:2].parameters()), hidden_act,
     8 * sum(p.numel() for p in reference[:2].parameters()), hidden_act],
]
print_table(["parallelism", "parameter bytes", "activation bytes", "Adam state bytes", "bytes sent / step"], table)
assert table[3][1] < table[0][1] and table[2][3] < table[1][3] and table[3][4] < table[1][4]

# %% [markdown]
# Read it row by row (stage 0 shown for the pipeline, which with GPipe keeps all m micro-batches' activations, one
# full batch, and with 1F1B at most p of them):
# - **Data parallel** divides the activations (each rank sees B/W examples) but nothing of the model; it sends the
#   gradients every step.
# - **ZeRO** divides the optimizer state (and, as ZeRO-2/3 or FSDP, the gradients and parameters) at the same or a
#   little more traffic.
# - **Tensor parallel** divides parameters, their state and the hidden activations, and sends activations, not
#   weights: cheap for big layers and small batches, but on the critical path of every layer, so it stays on fast
#   links.
# - **Pipeline** divides the layers; it sends only the activations at the stage boundary, pays the bubble, and
#   needs many micro-batches (and 1F1B) to keep it and the memory small.

# %% [markdown]
# ## Summary
# - Column-parallel then row-parallel linear layers split an MLP with one all-reduce forward and one backward;
#   sequence parallelism turns each into a reduce-scatter plus an all-gather and keeps activations sharded. Both
#   equal the single-process MLP to float32 rounding, as does `parallelize_module`.
# - GPipe and 1F1B give the full batch's gradient with a bubble of (p − 1)/(m + p − 1), measured here; 1F1B keeps
#   at most p − r micro-batches' activations on stage r instead of m.
# - ZeRO-1 runs Adam on each rank's slice and all-gathers the parameters: the same training as DDP + Adam, half
#   the state per rank on 2 ranks.
# - `torch.distributed.checkpoint` writes one file per rank plus a metadata map, and loads into any layout,
#   here 2 ranks → 1 process.
# - A 2-D mesh combines data and tensor parallelism; large models combine all of the above.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} (after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **Row first.** Make the first layer row-parallel and the second column-parallel. Which collectives appear,
#    and how many bytes does a step send now?
# 2. **Interleaving.** Give each rank two non-adjacent stages (rank 0: layers 1 and 3) and count the slots of an
#    interleaved 1F1B schedule: how does the bubble change?
# 3. **ZeRO-2.** Replace the all-reduce in `zero1_step` by `dist.reduce_scatter`, check the result is unchanged,
#    and count the bytes sent against DDP.
# 4. **Reshard to 4.** Load the checkpoint of section 5 into an FSDP2 model on 4 ranks with `dd.run_local(..., 4)`
#    and `set_model_state_dict`, and check each rank's shard.
# 5. **Measure, don't sleep.** Remove the `time.sleep` in `run_pipeline` and make the stages large enough that
#    their compute dominates; does the measured bubble still follow the formula?
