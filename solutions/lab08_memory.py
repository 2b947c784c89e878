# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 08: training memory
#
# This lab goes with notebook 08. You predict where the memory of a training step goes, and the tests measure
# it: the real tensors of a model and its optimiser, and the tensors autograd saves for backward.
#
# **Learning goals.** After this lab you can
# - compute the bytes of parameters, gradients and Adam's state from a parameter count and a dtype;
# - write a gradient-accumulation step that gives exactly the large batch's update;
# - checkpoint the blocks of a network with `torch.utils.checkpoint`, keeping results identical and storing less;
# - predict an MLP's activation memory (what autograd saves) from its layer sizes, before measuring it.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab08_memory.ipynb` tells you what passes.
# Each exercise is graded on its own: a later one never calls your answer to an earlier one.
#
# **Time.** About 60 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 10 in all: Adam memory estimate 2, accumulation step 3, checkpointed blocks 3, activation bytes 2.
#
# **Measuring.** The tests measure with `dlcourse.memory` (notebook 08): `model_state_bytes(model, optimizer)`
# returns the bytes of the parameters, gradients and optimiser state that exist; `saved_tensor_bytes(fn,
# exclude=...)` runs `fn()` and returns the bytes of the distinct tensors autograd saved for backward, leaving
# out the storages of the tensors in `exclude` (e.g. the parameters). Bytes are counted per storage, each once.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import dlcourse
import dlcourse.memory
from dlcourse.grading.checks import check_close, check_equal, check_prediction, forbid

cfg = dlcourse.setup(seed=0)
# Tests of estimates switch the measuring helpers off while they call yours: compute, don't measure.
MEASURING = ((dlcourse.memory, "model_state_bytes"), (dlcourse.memory, "saved_tensor_bytes"),
             (dlcourse.memory, "saved_tensors"))
NO_MEASURING = ("compute the bytes from the sizes: dlcourse.memory's helpers are switched off while the tests "
                "call your function")

# %% [markdown] nbgrader={"grade": false, "grade_id": "adam-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: the memory of Adam training (2 points)
#
# Between two training steps, a model with `num_params` parameters trained with Adam holds:
#
# - the **parameters**, one number each, in the model's `dtype`;
# - the **gradients**, one `.grad` number per parameter, same dtype;
# - Adam's **optimiser state**: two buffers the size of the parameters (`exp_avg` and `exp_avg_sq`, same dtype),
#   plus one step counter per parameter *tensor*: a one-element **float32** tensor (4 bytes) each.
#
# Write `adam_memory_estimate(num_params, num_tensors, dtype)` returning a dict of **ints** (bytes) with the keys
# `"parameters"`, `"gradients"`, `"optimizer_state"` and `"total"` (the sum of the three). `num_tensors` is the
# number of parameter tensors (`len(list(model.parameters()))`). The bytes of one number of a dtype:
# `dtype.itemsize` (float32: 4, bfloat16 and float16: 2, float64: 8).
#
# The tests compare your estimate with the bytes measured after a real Adam step.

# %% nbgrader={"grade": false, "grade_id": "adam-answer", "locked": false, "schema_version": 3, "solution": true}
def adam_memory_estimate(num_params: int, num_tensors: int, dtype: torch.dtype) -> dict:
    """Bytes held between steps when training with Adam, from the sizes alone.

    num_params: number of scalar parameters P; num_tensors: number of parameter tensors; dtype: their dtype.
    Returns {"parameters": int, "gradients": int, "optimizer_state": int, "total": int}.
    """
    ### BEGIN SOLUTION
    b = dtype.itemsize                                   # bytes per number
    parameters = num_params * b
    gradients = num_params * b
    optimizer_state = 2 * num_params * b + 4 * num_tensors   # exp_avg, exp_avg_sq; float32 step per tensor
    return {"parameters": parameters, "gradients": gradients, "optimizer_state": optimizer_state,
            "total": parameters + gradients + optimizer_state}
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "adam-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _make_model(kind, dtype):
    torch.manual_seed(0)
    if kind == "mlp":
        model = dlcourse.models.mlp(64, [32], 10)
    else:
        model = dlcourse.models.SmallCNN(in_channels=1, num_classes=10, width=4, depth=2, image_size=8)
    return model.to(dtype)


def _measured_after_adam_step(model):
    """model_state_bytes after one real Adam step: what the estimate must match."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    X = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model(X.to(next(model.parameters()).dtype)).float().sum().backward()
    optimizer.step()
    return dlcourse.memory.model_state_bytes(model, optimizer)


def _estimate(model, dtype):
    with forbid(MEASURING, NO_MEASURING):
        return adam_memory_estimate(dlcourse.models.count_parameters(model), len(list(model.parameters())), dtype)


def _pick(d, *keys):
    return [d.get(k) if isinstance(d, dict) else None for k in keys]


_est = _estimate(_make_model("mlp", torch.float32), torch.float32)
check_equal("float32 MLP: parameters and gradients (bytes)", _pick(_est, "parameters", "gradients"),
            expected=_pick(_measured_after_adam_step(_make_model("mlp", torch.float32)), "parameters", "gradients"),
            hint="P numbers of 4 bytes each for the parameters, the same for the gradients; return ints")
check_equal("float32 MLP: Adam's state (bytes)", _pick(_est, "optimizer_state"),
            expected=_pick(_measured_after_adam_step(_make_model("mlp", torch.float32)), "optimizer_state"),
            weight=2, hint="two parameter-sized buffers, plus a 4-byte float32 step counter per parameter tensor")
check_equal("float32 MLP: total", _pick(_est, "total"),
            expected=_pick(_measured_after_adam_step(_make_model("mlp", torch.float32)), "total"),
            hint="total = parameters + gradients + optimizer_state")
check_equal("bfloat16 MLP: all four numbers", _estimate(_make_model("mlp", torch.bfloat16), torch.bfloat16),
            expected=_measured_after_adam_step(_make_model("mlp", torch.bfloat16)), weight=2,
            hint="bfloat16 numbers take dtype.itemsize = 2 bytes; Adam's step counters stay float32 (4 bytes)")
print("Adam memory estimate: visible tests passed")

### BEGIN HIDDEN TESTS
check_equal("float16 CNN: all four numbers", _estimate(_make_model("cnn", torch.float16), torch.float16),
            expected=_measured_after_adam_step(_make_model("cnn", torch.float16)),
            hint="a CNN has more parameter tensors (conv weights, BatchNorm weights and biases): one counter each")
check_equal("float64 MLP: all four numbers", _estimate(_make_model("mlp", torch.float64), torch.float64),
            expected=_measured_after_adam_step(_make_model("mlp", torch.float64)),
            hint="float64 numbers take 8 bytes; the step counters are still float32")
with forbid(MEASURING, NO_MEASURING):
    _big = adam_memory_estimate(7_000_000_000, 291, torch.bfloat16)
check_equal("7 B parameters in 291 tensors, bfloat16", _big,
            expected={"parameters": 14_000_000_000, "gradients": 14_000_000_000,
                      "optimizer_state": 28_000_001_164, "total": 56_000_001_164},
            hint="use Python ints throughout (no floats, no rounding)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "accumulation-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: an accumulation step equal to the large batch (3 points)
#
# Write `accumulation_step(model, optimizer, X, y, num_micro_batches)`: **one** optimiser step on the batch
# `(X, y)` that gives exactly the same gradients and update as `F.cross_entropy(model(X), y)` on the whole batch,
# while the model only ever runs on `num_micro_batches` equal micro-batches (`len(X)` is divisible by it), one at a
# time. Whatever `.grad` held before the call must not leak into the step; the gradients stay in `.grad`
# afterwards (the tests read them). Return the whole batch's mean loss (before the step) as a Python float.
#
# Remember that `.backward()` *adds* to `.grad`, and that the whole batch's loss is a mean over all its examples.

# %% nbgrader={"grade": false, "grade_id": "accumulation-answer", "locked": false, "schema_version": 3, "solution": true}
def accumulation_step(model: nn.Module, optimizer: torch.optim.Optimizer, X: torch.Tensor, y: torch.Tensor,
                      num_micro_batches: int) -> float:
    """One optimizer step on (X, y) computed in num_micro_batches equal micro-batches.

    X: (N, ...) inputs, y: (N,) class labels, N divisible by num_micro_batches.
    Returns the mean cross-entropy over all N examples (before the step), as a float.
    """
    ### BEGIN SOLUTION
    optimizer.zero_grad()
    total = 0.0
    for X_mb, y_mb in zip(X.chunk(num_micro_batches), y.chunk(num_micro_batches)):   # (N/k, ...) each
        loss = F.cross_entropy(model(X_mb), y_mb) / num_micro_batches
        loss.backward()                                  # .grad += gradient of this piece
        total += loss.item()
    optimizer.step()
    return total
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "accumulation-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def _problem(seed):
    """A small float64 model and a seeded batch of 24 examples (float64: rounding cannot hide a mistake)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(24, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (24,), generator=gen)
    return model, X, y


def _large_batch_step(seed, make_optimizer):
    """The reference: one ordinary step on the whole batch -> (loss, gradients, parameters after the step)."""
    model, X, y = _problem(seed)
    optimizer = make_optimizer(model.parameters())
    loss = F.cross_entropy(model(X), y)
    loss.backward()
    optimizer.step()
    return [loss.item(), [p.grad.clone() for p in model.parameters()],
            [p.detach().clone() for p in model.parameters()]]


def _accumulated_step(seed, make_optimizer, k, stale_grads=False):
    """The student's step -> (loss, gradients, parameters after the step, micro-batch sizes the model saw)."""
    model, X, y = _problem(seed)
    optimizer = make_optimizer(model.parameters())
    if stale_grads:
        for p in model.parameters():
            p.grad = torch.ones_like(p)
    sizes = []
    model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    loss = accumulation_step(model, optimizer, X, y, k)
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    return [loss, grads, [p.detach().clone() for p in model.parameters()], sizes]


def _sgd(params):
    return torch.optim.SGD(params, lr=0.5)


_loss, _grads, _params, _sizes = _accumulated_step(0, _sgd, 4)
check_equal("the model sees 4 micro-batches of 6 examples", _sizes, expected=[6, 6, 6, 6],
            hint="run the model once per micro-batch (X.chunk(num_micro_batches)), never on the whole batch")
check_close("gradients equal the whole batch's", _grads, expected=_large_batch_step(0, _sgd)[1], rtol=1e-9,
            atol=1e-12, weight=2,
            hint="divide each micro-batch's mean loss by num_micro_batches before .backward(); if the gradients "
                 "are 4 times too large, the division is missing")
check_close("parameters after the step equal the whole batch's step", _params,
            expected=_large_batch_step(0, _sgd)[2], rtol=1e-9, atol=1e-12, weight=2,
            hint="one optimizer.step() after all micro-batches, not one per micro-batch")
check_close("returns the whole batch's mean loss as a float", _loss, expected=_large_batch_step(0, _sgd)[0],
            rtol=1e-9, hint="add up the divided micro-batch losses with .item(): a Python float")
print("accumulation step: visible tests passed")

### BEGIN HIDDEN TESTS
def _adam(params):
    return torch.optim.Adam(params, lr=1e-2)


_loss, _grads, _params, _sizes = _accumulated_step(1, _adam, 3)
check_close("Adam, 3 micro-batches: gradients and parameters after the step", [_grads, _params],
            expected=_large_batch_step(1, _adam)[1:], rtol=1e-9, atol=1e-12, weight=2,
            hint="with Adam too, one step on the accumulated gradient equals the whole batch's step")
_loss, _grads, _params, _sizes = _accumulated_step(2, _sgd, 2, stale_grads=True)
check_close("old gradients in .grad are cleared first", [_grads, _params], expected=_large_batch_step(2, _sgd)[1:],
            rtol=1e-9, atol=1e-12, weight=2,
            hint="call optimizer.zero_grad() before the first micro-batch: .backward() adds to what is there")
_loss, _grads, _params, _sizes = _accumulated_step(3, _sgd, 24)
check_close("24 micro-batches of one example", [_loss, _grads, _params, _sizes],
            expected=[_large_batch_step(3, _sgd)[0], *_large_batch_step(3, _sgd)[1:], [1] * 24], rtol=1e-9,
            atol=1e-12, hint="every micro-batch size from 1 to the whole batch must give the same step")
_loss, _grads, _params, _sizes = _accumulated_step(4, _sgd, 1)
check_close("1 micro-batch: an ordinary step", [_loss, _grads, _params, _sizes],
            expected=[_large_batch_step(4, _sgd)[0], *_large_batch_step(4, _sgd)[1:], [24]], rtol=1e-9, atol=1e-12)
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "checkpoint-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: checkpointed blocks (3 points)
#
# Write `checkpointed_forward(blocks, x)`: run `x` through the modules in `blocks` one after the other (like
# `nn.Sequential`), using activation checkpointing (`torch.utils.checkpoint.checkpoint`, already imported as
# `checkpoint`) so that what autograd saves is **only each block's input** (one tensor of `x`'s size per block),
# while the plain forward also saves everything inside the blocks. The result and all gradients, the parameters'
# and (when it requires one) the input's, must equal the plain forward pass's, also when `x` does not require a
# gradient, the usual case for a network's input; it must also run under `torch.no_grad()`. The tests measure the
# saved bytes with `saved_tensor_bytes`.
#
# Read `checkpoint`'s documentation about `use_reentrant`: one of its two implementations gives the blocks'
# parameters no gradient when the input does not require one.

# %% nbgrader={"grade": false, "grade_id": "checkpoint-answer", "locked": false, "schema_version": 3, "solution": true}
def checkpointed_forward(blocks, x: torch.Tensor) -> torch.Tensor:
    """Apply the modules in ``blocks`` in order, each one under activation checkpointing.

    blocks: an iterable of modules (e.g. nn.ModuleList), each (B, d) -> (B, d); x: (B, d). Returns (B, d).
    """
    ### BEGIN SOLUTION
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False)   # saves only x; the block's insides are recomputed
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "checkpoint-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
class _Residual(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        return x + self.mlp(x)


def _blocks_and_input(seed, depth, x_requires_grad=False):
    torch.manual_seed(seed)
    blocks = nn.ModuleList(_Residual(8) for _ in range(depth)).double()
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return blocks, x.requires_grad_(x_requires_grad)


def _plain(blocks, x):
    for block in blocks:
        x = block(x)
    return x


def _run(forward, seed, depth, x_requires_grad=False):
    """(output, parameter gradients, input gradient) of forward(blocks, x) with the loss sum(out**2)."""
    blocks, x = _blocks_and_input(seed, depth, x_requires_grad)
    out = forward(blocks, x)
    if out.requires_grad:
        (out ** 2).sum().backward()
    return [out.detach(), [p.grad for p in blocks.parameters()], x.grad]


def _saved(forward, seed, depth):
    """Bytes autograd saves for forward(blocks, x), parameters left out."""
    blocks, x = _blocks_and_input(seed, depth)
    return dlcourse.memory.saved_tensor_bytes(lambda: forward(blocks, x), exclude=blocks.parameters())


_out, _grads, _ = _run(checkpointed_forward, 0, 3)
check_close("same output as the plain forward pass", _out, expected=_run(_plain, 0, 3)[0], rtol=1e-12, atol=1e-12,
            hint="apply every block, in order, each through checkpoint(block, x, use_reentrant=False)")
check_close("same parameter gradients as the plain forward pass", _grads, expected=_run(_plain, 0, 3)[1],
            rtol=1e-10, atol=1e-12, weight=2,
            hint="gradients missing (None)? with use_reentrant=True and an input that needs no gradient, the "
                 "blocks' parameters get none: pass use_reentrant=False")
check_equal("saves only each block's input (bytes)", _saved(checkpointed_forward, 0, 3),
            expected=3 * _blocks_and_input(0, 3)[1].nbytes, weight=2,
            hint="each of the 3 blocks should keep just its (16, 8) float64 input: checkpoint every block "
                 "separately, not the whole stack as one region, and not none of them")
check_equal("saves less than the plain forward pass",
            _saved(checkpointed_forward, 0, 3) < _saved(_plain, 0, 3), expected=True,
            hint="the plain forward saves the inputs of LayerNorm, both Linears and GELU inside every block")
print("checkpointed blocks: visible tests passed")

### BEGIN HIDDEN TESTS
check_close("an input that requires a gradient: output, parameter and input gradients",
            _run(checkpointed_forward, 1, 2, x_requires_grad=True),
            expected=_run(_plain, 1, 2, x_requires_grad=True),
            rtol=1e-10, atol=1e-12, weight=2, hint="the input's gradient must flow through the checkpoints too")
check_equal("5 blocks: saves 5 inputs (bytes)", _saved(checkpointed_forward, 2, 5),
            expected=5 * _blocks_and_input(2, 5)[1].nbytes, hint="checkpoint each block separately")
with torch.no_grad():
    _blocks, _x = _blocks_and_input(3, 2)
    _out = checkpointed_forward(_blocks, _x)
check_close("works under torch.no_grad() (evaluation)", _out, expected=_plain(*_blocks_and_input(3, 2)),
            rtol=1e-12, atol=1e-12)
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "activations-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: predicting activation memory (2 points)
#
# Predict first, measure second. An MLP `Linear(in_features, h1) → act → Linear(h1, h2) → act → … →
# Linear(h_last, out)` runs forward on a batch of `batch_size` inputs that do not require gradients. Predict the
# bytes of the tensors autograd saves for backward, **parameters not counted** (they exist anyway), each storage
# once. What is saved:
#
# - each `Linear` saves its **input** (to compute its weight's gradient) — the first one saves the batch itself;
# - `ReLU` saves its **output** (it is positive exactly where the gradient passes). That output is the next
#   `Linear`'s input: the same tensor, counted once;
# - `GELU` saves its **input** (the previous `Linear`'s output), and the next `Linear` saves GELU's output: two
#   different tensors;
# - the last `Linear`'s output (the logits) is not saved.
#
# Write `activation_bytes(batch_size, in_features, hidden, activation, dtype)`, where `hidden` is the list of
# hidden widths `[h1, h2, …]` and `activation` is `"relu"` or `"gelu"`, from the sizes alone (the measuring
# helpers are switched off while the tests call it). The test cell then measures the real MLP with
# `saved_tensor_bytes` for several set-ups, some of them hidden. **Tolerance: exact** (bytes are integers; each
# set-up is a separate check). (The output width does not matter: think about why.)

# %% nbgrader={"grade": false, "grade_id": "activations-answer", "locked": false, "schema_version": 3, "solution": true}
def activation_bytes(batch_size: int, in_features: int, hidden: list, activation: str, dtype: torch.dtype) -> int:
    """Bytes autograd saves (parameters excluded) for one forward pass of the MLP described above."""
    ### BEGIN SOLUTION
    per_hidden = {"relu": 1, "gelu": 2}[activation]      # tensors of width h saved per hidden layer
    return batch_size * dtype.itemsize * (in_features + per_hidden * sum(hidden))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "activations-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _measured_activations(batch_size, in_features, hidden, activation, dtype):
    """saved_tensor_bytes of the real MLP's forward pass, parameters excluded."""
    torch.manual_seed(0)
    widths = [in_features, *hidden]
    layers = []
    for w_in, w_out in zip(widths, widths[1:]):
        layers += [nn.Linear(w_in, w_out), nn.ReLU() if activation == "relu" else nn.GELU()]
    net = nn.Sequential(*layers, nn.Linear(widths[-1], 5)).to(dtype)
    X = torch.randn(batch_size, in_features, generator=torch.Generator().manual_seed(0)).to(dtype)
    return dlcourse.memory.saved_tensor_bytes(lambda: net(X), exclude=net.parameters())


def _predicted(*args):
    with forbid(MEASURING, NO_MEASURING):
        return activation_bytes(*args)


check_prediction("ReLU MLP, float32 (bytes)", _predicted(32, 20, [64, 48], "relu", torch.float32),
                 expected=_measured_activations(32, 20, [64, 48], "relu", torch.float32), rtol=0.0,
                 hint="the batch (32×20) plus one (32×h) tensor per hidden layer, 4 bytes each")
check_prediction("GELU MLP, float32 (bytes)", _predicted(32, 20, [64, 48], "gelu", torch.float32),
                 expected=_measured_activations(32, 20, [64, 48], "gelu", torch.float32), rtol=0.0,
                 hint="GELU saves its input, and the next Linear saves GELU's output: two tensors per hidden layer")
check_prediction("GELU MLP, bfloat16 (bytes)", _predicted(16, 12, [40], "gelu", torch.bfloat16),
                 expected=_measured_activations(16, 12, [40], "gelu", torch.bfloat16), rtol=0.0,
                 hint="bfloat16 numbers take dtype.itemsize = 2 bytes")
print("activation bytes: visible tests passed")

### BEGIN HIDDEN TESTS
check_prediction("three hidden layers, ReLU, float64 (bytes)",
                 _predicted(7, 9, [30, 20, 10], "relu", torch.float64),
                 expected=_measured_activations(7, 9, [30, 20, 10], "relu", torch.float64), rtol=0.0,
                 hint="add up every hidden layer's width")
check_prediction("one example, GELU, float16 (bytes)", _predicted(1, 64, [128, 128], "gelu", torch.float16),
                 expected=_measured_activations(1, 64, [128, 128], "gelu", torch.float16), rtol=0.0)
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - Adam training holds parameters, gradients and two state buffers: $4\,P\,b$ bytes for $P$ parameters of $b$
#   bytes, plus a 4-byte step counter per parameter tensor.
# - Gradient accumulation divides each micro-batch's mean loss by the number of micro-batches and steps once:
#   the update equals the whole batch's, with one micro-batch's activations in memory at a time.
# - `checkpoint(block, x, use_reentrant=False)` per block keeps only the blocks' inputs and recomputes the rest
#   during backward: same results, less memory, one extra forward pass of time.
# - Activation memory follows from what each layer needs for its backward pass: a Linear its input, ReLU its
#   output, GELU its input.
#
# ## Further exercises (not graded)
#
# 1. Extend `adam_memory_estimate` to the two mixed-precision layouts of notebook 08: autocast (float32 weights,
#    gradients and Adam state; 16-bit copies of the weights only during the step) and bfloat16 weights and
#    gradients with a float32 master copy and float32 Adam state. How many bytes per parameter does each hold
#    between steps? Check the autocast one with `model_state_bytes` after a step under `torch.autocast`.
# 2. Make `accumulation_step` accept micro-batches of different sizes (e.g. 10 examples as 4, 4, 2) and still
#    equal the whole batch: weight each micro-batch's loss by its share of the examples.
# 3. Add a `checkpoint_every` argument to `checkpointed_forward` and measure, with `saved_tensor_bytes` and
#    `time.perf_counter`, the saved bytes and the time of a training step for every value from 1 to the depth.
# 4. Extend `activation_bytes` to `nn.Tanh` and `nn.Sigmoid` (what do they save?) and check against
#    `dlcourse.memory.saved_tensor_bytes`. What does `nn.Dropout` save in training mode on your device?
