# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 21: model parallelism
#
# This lab goes with notebook 21. You write three pieces of model-parallel training yourself — a row-parallel
# linear layer, the order of a pipeline schedule, and a ZeRO-1 optimizer step — and predict a pipeline's bubble
# before it is measured. The tests run your code on 2 CPU processes that talk through `torch.distributed`
# (gloo), started with `dd.run_local` as in notebooks 09 and 21, and compare with one process doing all the work.
#
# **Learning goals.** After this lab you can
# - compute a row-parallel linear layer from each rank's slice of the input and of the weight;
# - write the GPipe and 1F1B schedules of any stage, and check them with a small simulator;
# - predict the bubble fraction of a pipeline from its number of stages and micro-batches;
# - shard Adam's state between ranks (ZeRO-1) and still train exactly like DDP + Adam.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab21_model_parallel.ipynb` tells you what passes.
#
# `dd.run_local(fn, world_size, *args)` starts `world_size` CPU processes (never copies of this kernel), joins
# them in a process group and returns what `fn(rank, world_size, *args)` returned on each rank; the functions
# you define here travel to them by value. Every process computes on the CPU, even on a GPU machine.
#
# **Time.** About 60 minutes. Every test runs in seconds on a laptop CPU (the first `run_local` takes a few
# seconds to start); no GPU needed.
#
# **Points.** 10 in all: row-parallel linear 2, pipeline schedules 3, predicting the bubble 2, ZeRO-1 step 3.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import dlcourse
import dlcourse.distributed as dd
from dlcourse.grading.checks import check_close, check_equal, check_prediction, check_true, forbid

cfg = dlcourse.setup(seed=0)

# %% [markdown] nbgrader={"grade": false, "grade_id": "row-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: a row-parallel linear layer (2 points)
#
# A linear layer computes $Y = X W^\top + b$ with $X$ of shape (B, in) and $W$ of shape (out, in). In a
# **row-parallel** layer over W ranks, rank r holds only the r-th slice of the input features: the columns
# `X[:, cols_r]` of the input and the matching columns `W[:, cols_r]` of the weight (the slices come from
# `chunk(world_size, dim=1)`). The bias (out,) is on every rank.
#
# Write `row_parallel_linear(x_shard, w_shard, bias)` so that it returns the full $Y$ (B, out), identical on
# every rank, for any number of ranks. Each rank may only use its own slices and collectives
# (`torch.distributed`); the bias must count once in $Y$, not once per rank.

# %% nbgrader={"grade": false, "grade_id": "row-answer", "locked": false, "schema_version": 3, "solution": true}
def row_parallel_linear(x_shard: torch.Tensor, w_shard: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x_shard (B, in/W), w_shard (out, in/W), bias (out,) -> Y (B, out) on every rank."""
    ### BEGIN SOLUTION
    partial = x_shard @ w_shard.T          # (B, out): this rank's share of the sum over input features
    dist.all_reduce(partial)               # the sum over ranks: X W^T
    return partial + bias                  # the bias once, after the sum
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "row-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _row_case(seed, B, d_in, d_out):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(B, d_in, generator=gen), torch.randn(d_out, d_in, generator=gen),
            torch.randn(d_out, generator=gen))


_ROW_CASES = [(0, 4, 6, 3), (1, 5, 10, 7)]


def _row_on_ranks(rank, world_size):
    out = []
    for case in _ROW_CASES:
        X, W, b = _row_case(*case)
        out.append(row_parallel_linear(X.chunk(world_size, dim=1)[rank].clone(),
                                       W.chunk(world_size, dim=1)[rank].clone(), b.clone()))
    return out


_rows = dd.run_local(_row_on_ranks, 2, echo=False)
_X, _W, _b = _row_case(*_ROW_CASES[0])
check_close("2 ranks, (4, 6) input, 3 outputs: rank 0's Y", _rows[0][0], expected=F.linear(_X, _W, _b), atol=1e-6,
            hint="each rank's x_shard @ w_shard.T is a partial sum of X W^T: add the partial sums over ranks "
                 "(an all-reduce), then add the bias once")
check_close("2 ranks, (4, 6) input, 3 outputs: rank 1's Y", _rows[1][0], expected=F.linear(_X, _W, _b), atol=1e-6,
            hint="every rank must end with the same full Y")
print("row_parallel_linear: visible tests passed")

### BEGIN HIDDEN TESTS
_X, _W, _b = _row_case(*_ROW_CASES[1])
check_close("2 ranks, (5, 10) input, 7 outputs: every rank's Y", [_rows[0][1], _rows[1][1]],
            expected=[F.linear(_X, _W, _b)] * 2, atol=1e-6, weight=2,
            hint="the bias must be added once, after the all-reduce")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "schedule-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: the order of a pipeline schedule (3 points)
#
# A model is cut into p stages, stage r on rank r, and the batch into m micro-batches numbered 0 … m − 1. Each
# stage runs a forward step ("F", i) and a backward step ("B", i) for every micro-batch i. Stage r's forward of i
# needs stage r − 1's forward of i; its backward of i needs its own forward of i and stage r + 1's backward of i.
#
# Write `pipeline_schedule(kind, p, m, rank)`, the list of steps stage `rank` runs, in order:
# - `"gpipe"`: all forwards in micro-batch order, then all backwards in micro-batch order.
# - `"1f1b"`: first `min(p - rank - 1, m)` warm-up forwards; then, while forwards remain, one forward followed by
#   one backward (the backward of the oldest micro-batch not yet backward); then the remaining backwards, in order.
#   Every micro-batch appears once as "F" and once as "B", forward and backward both in increasing i.
#
# The test cell also runs your schedules through a simulator (forward 1 time unit, backward 2) that must finish
# without a deadlock; with 1F1B, stage r must never hold more than p − r micro-batches' activations.

# %% nbgrader={"grade": false, "grade_id": "schedule-answer", "locked": false, "schema_version": 3, "solution": true}
def pipeline_schedule(kind: str, p: int, m: int, rank: int) -> list[tuple[str, int]]:
    """The steps ("F", i) / ("B", i) that stage ``rank`` of ``p`` runs for ``m`` micro-batches, in order."""
    ### BEGIN SOLUTION
    if kind == "gpipe":
        return [("F", i) for i in range(m)] + [("B", i) for i in range(m)]
    warmup = min(p - rank - 1, m)
    order = [("F", i) for i in range(warmup)]
    for i in range(m - warmup):
        order += [("F", warmup + i), ("B", i)]
    return order + [("B", i) for i in range(m - warmup, m)]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "schedule-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def simulate(schedules, t_forward=1.0, t_backward=2.0):
    """Run every stage's list of steps with their dependencies; return (total time, peak activations held per
    stage). Raises AssertionError on a deadlock or a step that is missing or repeated."""
    p = len(schedules)
    done = {}                                           # (op, i, stage) -> finish time
    clock, position, held, peak = [0.0] * p, [0] * p, [0] * p, [0] * p
    while any(position[r] < len(schedules[r]) for r in range(p)):
        progressed = False
        for r in range(p):
            if position[r] == len(schedules[r]):
                continue
            op, i = schedules[r][position[r]]
            needs = [("F", i, r - 1)] if op == "F" and r > 0 else []
            if op == "B":
                needs = [("F", i, r)] + ([("B", i, r + 1)] if r < p - 1 else [])
            if all(n in done for n in needs):
                start = max([clock[r]] + [done[n] for n in needs])
                clock[r] = start + (t_forward if op == "F" else t_backward)
                assert (op, i, r) not in done, f"stage {r} runs {(op, i)} twice"
                done[op, i, r] = clock[r]
                held[r] += 1 if op == "F" else -1
                peak[r] = max(peak[r], held[r])
                position[r] += 1
                progressed = True
        assert progressed, f"deadlock: stages wait on each other at steps {position}"
    return max(clock), peak


def _valid(kind, p, m):
    scheds = [pipeline_schedule(kind, p, m, r) for r in range(p)]
    total, peak = simulate(scheds)
    complete = all(sorted(s) == sorted([("F", i) for i in range(m)] + [("B", i) for i in range(m)]) for s in scheds)
    return complete, total, peak


check_equal("GPipe, 2 stages, 4 micro-batches, stage 0", pipeline_schedule("gpipe", 2, 4, 0),
            expected=[("F", 0), ("F", 1), ("F", 2), ("F", 3), ("B", 0), ("B", 1), ("B", 2), ("B", 3)],
            hint="all forwards, then all backwards, in micro-batch order")
check_equal("1F1B, 2 stages, 4 micro-batches, stage 0", pipeline_schedule("1f1b", 2, 4, 0),
            expected=[("F", 0), ("F", 1), ("B", 0), ("F", 2), ("B", 1), ("F", 3), ("B", 2), ("B", 3)],
            hint="stage 0 of 2 warms up with min(p - rank - 1, m) = 1 forward, then alternates F and B")
check_equal("1F1B, 2 stages, 4 micro-batches, stage 1 (the last)", pipeline_schedule("1f1b", 2, 4, 1),
            expected=[("F", 0), ("B", 0), ("F", 1), ("B", 1), ("F", 2), ("B", 2), ("F", 3), ("B", 3)],
            hint="the last stage has no warm-up: each forward is followed at once by its backward")
_ok, _total, _peak = _valid("1f1b", 4, 8)
check_true("1F1B on 4 stages, 8 micro-batches: every step once, no deadlock, stage r holds at most 4 - r",
           _ok and all(_peak[r] <= 4 - r for r in range(4)),
           hint="warm-up forwards: min(p - rank - 1, m); a stage that holds more activations warms up too long")
print("pipeline_schedule: visible tests passed")

### BEGIN HIDDEN TESTS
def _reference_schedule(kind, p, m, rank):
    if kind == "gpipe":
        return [("F", i) for i in range(m)] + [("B", i) for i in range(m)]
    warmup = min(p - rank - 1, m)
    order = [("F", i) for i in range(warmup)]
    for i in range(m - warmup):
        order += [("F", warmup + i), ("B", i)]
    return order + [("B", i) for i in range(m - warmup, m)]


_cases = [(k, p, m, r) for k in ("gpipe", "1f1b") for p, m in [(4, 6), (3, 2), (5, 1)] for r in range(p)]
check_equal("GPipe and 1F1B for 3-5 stages, 1-6 micro-batches (also fewer micro-batches than stages), all stages",
            [pipeline_schedule(*c) for c in _cases], expected=[_reference_schedule(*c) for c in _cases], weight=2,
            hint="with m < p, the warm-up is min(p - rank - 1, m) forwards: all of them")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "bubble-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: predict the bubble (2 points)
#
# Run GPipe with p stages and m micro-batches, a forward taking 1 time unit and a backward 2 on every stage. The
# **bubble fraction** is the share of the total time a stage is idle: 1 − (time it computes) / (total time from the
# first forward to the last backward). Write `bubble_fraction(p, m)`, your prediction as a formula in p and m,
# without running anything. The test measures it with `simulate` for several (p, m), some hidden.
# **Tolerance: 1 %** of the measured value.

# %% nbgrader={"grade": false, "grade_id": "bubble-answer", "locked": false, "schema_version": 3, "solution": true}
def bubble_fraction(p: int, m: int) -> float:
    """The idle fraction of every stage under GPipe with p stages and m micro-batches."""
    ### BEGIN SOLUTION
    return (p - 1) / (m + p - 1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "bubble-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _measured_bubble(p, m):
    gpipe = [[("F", i) for i in range(m)] + [("B", i) for i in range(m)] for _ in range(p)]
    total, _ = simulate(gpipe)
    return 1 - m * (1.0 + 2.0) / total


def _predicted_bubble(p, m):
    with forbid([(sys.modules[__name__], "simulate"), (sys.modules[__name__], "_measured_bubble")],
                "predict from p and m: the tests switch the simulator off while they call your function"):
        return bubble_fraction(p, m)


for _p, _m in [(2, 4), (4, 4)]:
    check_prediction(f"GPipe, {_p} stages, {_m} micro-batches: bubble fraction", _predicted_bubble(_p, _m),
                     expected=_measured_bubble(_p, _m), rtol=0.01,
                     hint="count the time slots: the last micro-batch's forward starts p - 1 slots late, and its "
                          "backward needs p - 1 more to come back to stage 0")
print("bubble_fraction: visible tests passed")

### BEGIN HIDDEN TESTS
for _p, _m in [(8, 16), (3, 1)]:
    check_prediction(f"GPipe, {_p} stages, {_m} micro-batches: bubble fraction", _predicted_bubble(_p, _m),
                     expected=_measured_bubble(_p, _m), rtol=0.01, hint="(p - 1) / (m + p - 1)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "bubble-discussion", "locked": true, "schema_version": 3, "solution": false}
# 1F1B has the same bubble (check it: `simulate` the 1F1B schedules of exercise 2). What it saves is memory: stage
# r holds at most p − r micro-batches' activations instead of m. So the bubble is made small with many
# micro-batches, and 1F1B makes that affordable.

# %% nbgrader={"grade": false, "grade_id": "bubble-simulated", "locked": true, "schema_version": 3, "solution": false}
for _kind in ("gpipe", "1f1b"):
    _total, _peak = simulate([pipeline_schedule(_kind, 4, 8, r) for r in range(4)])
    print(f"{_kind}: 4 stages, 8 micro-batches: bubble {1 - 8 * 3 / _total:.3f}, peak activations per stage {_peak}")

# %% [markdown] nbgrader={"grade": false, "grade_id": "zero-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: a ZeRO-1 step (3 points)
#
# In data-parallel training with Adam, every rank keeps Adam's two moments for every parameter. ZeRO-1 shards
# them: concatenate all parameters into one flat vector of n numbers, pad it with zeros to a multiple of the world
# size W, and cut it into W equal slices; rank r keeps the Adam state of slice r only (`zero1_state` below makes
# it). Each rank computed the gradient of its own part of the batch (a mean loss over equal parts).
#
# Write `zero1_step(model, state, lr)`: after it, every rank's parameters are exactly what one step of
# `torch.optim.Adam(lr=lr)` with the full batch's gradient would give, and `state` holds Adam's moments of this
# rank's slice. Update this rank's slice with `adam_update` (given) and use collectives to get the rest; don't
# use `torch.optim.Adam`, DDP or `ZeroRedundancyOptimizer`.

# %% nbgrader={"grade": false, "grade_id": "zero-given", "locked": true, "schema_version": 3, "solution": false}
def zero1_state(model: nn.Module) -> dict:
    """Adam's state for this rank's slice: step count, first and second moments (ceil(n / W) numbers each)."""
    n = sum(p.numel() for p in model.parameters())
    slice_len = -(-n // dist.get_world_size())
    return {"step": 0, "m": torch.zeros(slice_len), "v": torch.zeros(slice_len)}


def adam_update(param: torch.Tensor, grad: torch.Tensor, state: dict, lr: float, betas=(0.9, 0.999), eps=1e-8):
    """One Adam step on the flat tensor ``param`` (in place), with its gradient and state of the same length."""
    state["step"] += 1
    state["m"].mul_(betas[0]).add_(grad, alpha=1 - betas[0])
    state["v"].mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
    m_hat = state["m"] / (1 - betas[0] ** state["step"])
    v_hat = state["v"] / (1 - betas[1] ** state["step"])
    param.sub_(lr * m_hat / (v_hat.sqrt() + eps))


# %% nbgrader={"grade": false, "grade_id": "zero-answer", "locked": false, "schema_version": 3, "solution": true}
def zero1_step(model: nn.Module, state: dict, lr: float) -> None:
    """One ZeRO-1 Adam step: this rank updates its slice of the flat parameters; all ranks end with all of them."""
    ### BEGIN SOLUTION
    rank, world_size = dist.get_rank(), dist.get_world_size()
    params = list(model.parameters())
    pad = len(state["m"]) * world_size - sum(p.numel() for p in params)
    flat_grad = F.pad(torch.cat([p.grad.flatten() for p in params]), (0, pad))
    dist.all_reduce(flat_grad)
    flat_grad /= world_size                                   # the full batch's gradient
    flat_param = F.pad(torch.cat([p.detach().flatten() for p in params]), (0, pad))
    mine = flat_param.chunk(world_size)[rank].clone()
    adam_update(mine, flat_grad.chunk(world_size)[rank], state, lr)
    dist.all_gather(list(flat_param.chunk(world_size)), mine)  # every rank's updated slice
    with torch.no_grad():
        for p, new in zip(params, flat_param.split([p.numel() for p in params] + [pad])):
            p.copy_(new.view_as(p))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "zero-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
_ZERO_STEPS, _ZERO_LR = 3, 0.05


def _zero_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))     # 39 parameters: odd, so padded


def _zero_data():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(8, 5, generator=gen), torch.randint(0, 3, (8,), generator=gen)


def _zero_on_ranks(rank, world_size):
    model = _zero_model()
    X, y = _zero_data()
    state = zero1_state(model)
    with forbid([(torch.optim, "Adam"), (torch.optim, "AdamW")], "write the step with adam_update and collectives"):
        for _ in range(_ZERO_STEPS):
            model.zero_grad()
            F.cross_entropy(model(X.chunk(world_size)[rank]), y.chunk(world_size)[rank]).backward()
            zero1_step(model, state, _ZERO_LR)
    return [p.detach() for p in model.parameters()], state["m"]


def _adam_reference():
    """One process, the full batch, torch.optim.Adam: the parameters and the flat first moment (padded to 40)."""
    model = _zero_model()
    X, y = _zero_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=_ZERO_LR)
    for _ in range(_ZERO_STEPS):
        optimizer.zero_grad()
        F.cross_entropy(model(X), y).backward()
        optimizer.step()
    m = torch.cat([optimizer.state[p]["exp_avg"].flatten() for p in model.parameters()])
    return [p.detach() for p in model.parameters()], F.pad(m, (0, 1))


_zero = dd.run_local(_zero_on_ranks, 2, echo=False)
_ref_params, _ref_m = _adam_reference()
check_close(f"2 ranks, {_ZERO_STEPS} steps: rank 0's parameters equal Adam on the full batch", _zero[0][0],
            expected=_ref_params, atol=1e-6,
            hint="average the gradients over ranks (all-reduce, / world size), update your slice with adam_update, "
                 "then all-gather every rank's updated slice and copy it back into the parameters")
check_close(f"2 ranks, {_ZERO_STEPS} steps: rank 1's parameters equal Adam on the full batch", _zero[1][0],
            expected=_ref_params, atol=1e-6,
            hint="every rank must end with every updated parameter: all-gather the slices")
print("zero1_step: visible tests passed")

### BEGIN HIDDEN TESTS
check_close("each rank's state holds Adam's first moment of its own slice (20 of the 40 padded numbers)",
            [_zero[0][1], _zero[1][1]], expected=list(_ref_m.chunk(2)), atol=1e-6, weight=2,
            hint="rank r updates slice r of the padded flat vector, with the state zero1_state made")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - A row-parallel layer turns a matrix product into partial sums, one per rank: an all-reduce adds them, and the
#   bias is added once, after it.
# - GPipe runs all forwards then all backwards; 1F1B warms up with p − r − 1 forwards and then alternates, with
#   the same bubble, (p − 1)/(m + p − 1), and at most p − r micro-batches' activations on stage r.
# - ZeRO-1 keeps 1/W of Adam's state per rank and trains exactly like DDP + Adam, at the cost of an all-gather of
#   the parameters after each step.
#
# ## Further exercises (not graded)
#
# 1. Write the column-parallel layer that feeds `row_parallel_linear` (each rank keeps rows of W) and check that
#    the pair equals a two-layer MLP with no communication between them.
# 2. Add a third kind to `pipeline_schedule`, "1f1b" with two virtual stages per rank (interleaved), and
#    measure its bubble with `simulate`.
# 3. Replace the all-reduce in `zero1_step` by a reduce-scatter (ZeRO-2) and check the tests still pass.
