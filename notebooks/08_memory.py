# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 08 · Where training memory goes
#
# "Out of memory" is the most common way a training run dies on a GPU. The fix is rarely a bigger GPU: it is
# knowing which of four things fills the memory — parameters, gradients, optimiser state, activations — and
# using the tool that shrinks that one. This notebook predicts each of the four with a formula, measures it on the
# machine running the notebook, and then trades memory for time twice: gradient accumulation (a large batch in
# small pieces, with exactly the same gradient) and activation checkpointing (forget activations, recompute them).
#
# **Learning goals**
# - Count the bytes of parameters, gradients and optimiser state from the parameter count and dtype (Adam keeps
#   two extra buffers per parameter), and check the count against the real tensors.
# - Measure activation memory — the tensors autograd saves for the backward pass — and predict it by hand.
# - Measure the peak memory of a whole training step, and explain the gap to the back-of-the-envelope formula.
# - Prove that gradient accumulation gives the large batch's gradient (and see the two ways to get it wrong:
#   forgetting to divide the loss, and BatchNorm); train with `dlcourse.fit(..., accumulate=k)`.
# - Use activation checkpointing (`torch.utils.checkpoint`) and measure the memory it saves and the time it costs.
#
# **Prerequisites:** notebooks 01 (training loop), 03 (CNNs, BatchNorm) and 04 (Adam); notebook 07 (mixed
# precision) helps for the bytes per dtype.
#
# **Time:** seconds at `smoke`; a couple of minutes at `small` on a laptop CPU; at `full` the models are sized for
# one GPU, where the memory figures come from CUDA's own allocator. The last cell prints how long this run took.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import copy
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import dlcourse
from dlcourse.memory import format_bytes, model_state_bytes, peak_memory, saved_tensor_bytes, saved_tensors

cfg = dlcourse.setup(seed=0)
device = cfg.device
t_start = time.perf_counter()


def print_table(headers, rows):
    """Print rows as an aligned text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for j, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def best_times(fns, repeats):
    """Best wall-clock seconds of each function in ``fns`` over ``repeats`` rounds, after one warm-up call each.

    Each round calls every function once, in turn, so that a change in the machine's load hits them all alike;
    CUDA is synchronised around each call (its kernels run asynchronously).
    """
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            fn_times.append(time.perf_counter() - t0)
    return [min(fn_times) for fn_times in times]


print("memory measured with:", peak_memory(lambda: None, device)["method"])

# %% [markdown]
# ## 1. The state that lives between steps
# A model with $P$ parameters stored in a dtype of $b$ bytes (float32: 4, bfloat16 and float16: 2) holds, between
# two training steps:
#
# | what | bytes | why |
# |---|---|---|
# | parameters | $P\,b$ | the weights |
# | gradients | $P\,b$ | one `.grad` per parameter, filled by backward, read by the optimiser |
# | optimiser state | $s\,P\,b$ | SGD: $s = 0$; SGD with momentum: $s = 1$ (the velocity); Adam/AdamW: $s = 2$ |
#
# Adam's two buffers are the running mean of the gradient (`exp_avg`) and of its square (`exp_avg_sq`), each the
# size of the parameters. So Adam training costs $(2 + 2)\,P\,b$ bytes before a single activation is stored:
# 16 bytes per parameter in float32, four times the model itself. The optimisers keep their state in the
# parameters' dtype. `dlcourse.memory.model_state_bytes` adds up the real tensors (each storage once).

# %%
width = cfg.pick(smoke=256, small=512, full=2048)


def make_mlp(dtype=torch.float32):
    torch.manual_seed(cfg.seed)
    return dlcourse.models.mlp(64, [width, width], 10).to(device=device, dtype=dtype)


def state_estimate(num_params, bytes_per_value, optimizer_slots):
    """Bytes of parameters, gradients and optimiser state between steps: the table above."""
    return {"parameters": num_params * bytes_per_value, "gradients": num_params * bytes_per_value,
            "optimizer_state": optimizer_slots * num_params * bytes_per_value}


recipes = [  # (name, dtype, optimizer factory, state buffers per parameter)
    ("SGD, float32", torch.float32, lambda ps: torch.optim.SGD(ps, lr=0.1), 0),
    ("SGD + momentum, float32", torch.float32, lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), 1),
    ("Adam, float32", torch.float32, lambda ps: torch.optim.Adam(ps, lr=1e-3), 2),
    ("Adam, bfloat16", torch.bfloat16, lambda ps: torch.optim.Adam(ps, lr=1e-3), 2),
]
X_demo = torch.rand(32, 64, device=device)
y_demo = torch.randint(0, 10, (32,), device=device)
rows = []
for name, dtype, make_optimizer, slots in recipes:
    model = make_mlp(dtype)
    optimizer = make_optimizer(model.parameters())
    F.cross_entropy(model(X_demo.to(dtype)).float(), y_demo).backward()
    optimizer.step()                         # the optimiser creates its state at the first step
    measured = model_state_bytes(model, optimizer)
    num_params = dlcourse.models.count_parameters(model)
    estimate = state_estimate(num_params, dtype.itemsize, slots)
    rows.append([name, f"{num_params:,}", format_bytes(measured["parameters"]), format_bytes(measured["gradients"]),
                 format_bytes(estimate["optimizer_state"]), format_bytes(measured["optimizer_state"]),
                 measured["optimizer_state"] - estimate["optimizer_state"]])
    assert measured["parameters"] == estimate["parameters"] and measured["gradients"] == estimate["gradients"]
    # Adam also keeps its step count: a one-element float32 tensor per parameter tensor (6 here, 4 bytes each)
    step_bytes = 4 * len(list(model.parameters())) if slots == 2 else 0
    assert measured["optimizer_state"] == estimate["optimizer_state"] + step_bytes
print_table(["recipe", "P", "parameters", "gradients", "optimiser (formula)", "optimiser (measured)",
             "difference (B)"], rows)

# %% [markdown]
# The formula is exact up to Adam's step counters: one float32 number per parameter *tensor* (24 bytes for this
# MLP's 6 tensors), negligible. On a GPU the table is the same: these are the tensors' sizes, independent of the
# device (with `fused=True` or `capturable=True`, Adam's step counters live on the GPU too).
#
# What this means for large models is arithmetic, not measurement, but worth doing once. Mixed precision
# (notebook 07) comes in two memory layouts, and they are easy to mix up:
# - **autocast** (`torch.autocast`, what notebook 07 and `dlcourse.fit` use): the parameters, their gradients and
#   Adam's state stay float32, $4 + 4 + 8 = 16$ bytes per parameter; each matrix product works on a temporary
#   16-bit copy of its weight, which lives only during the step, next to the activations (autograd saves it for
#   backward, so section 2's `saved_tensor_bytes` counts it);
# - **16-bit weights + float32 master copy** (the layout of Megatron-LM, DeepSpeed and the ZeRO paper):
#   bfloat16 (or float16) weights and gradients for the computation, plus a float32 copy of the weights that the
#   float32 Adam state updates: $2 + 2 + 4 + 8 = 16$ bytes per parameter.
#
# Both hold 16 bytes per parameter between steps: mixed precision speeds training up, it does not shrink this part.
# The next cell measures the autocast layout on our MLP and computes the table for larger models.

# %%
model = make_mlp()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
with torch.autocast(device.type, dtype=dlcourse.config.amp_dtype(device)):     # notebook 07's recipe
    loss = F.cross_entropy(model(X_demo), y_demo)
loss.backward()
optimizer.step()
measured = model_state_bytes(model, optimizer)
num_params, step_bytes = dlcourse.models.count_parameters(model), 4 * len(list(model.parameters()))
print(f"autocast, measured: {(measured['total'] - step_bytes) / num_params:g} bytes per parameter between steps "
      f"(parameters {next(model.parameters()).dtype}, gradients {next(model.parameters()).grad.dtype})")
assert measured["total"] == (4 + 4 + 8) * num_params + step_bytes     # float32 throughout; bf16 copies are gone

bytes_per_param = {  # (parameters, gradients, master copy, Adam's two moments)
    "SGD, float32": (4, 4, 0, 0),
    "Adam, float32": (4, 4, 0, 8),
    "Adam, autocast (fp32 weights; 16-bit copies temporary)": (4, 4, 0, 8),
    "Adam, 16-bit weights + fp32 master copy": (2, 2, 4, 8),
    "Adam, pure bfloat16": (2, 2, 0, 4),
}
sizes = [("this MLP", num_params), ("GPT-2 small", 124_000_000), ("1.3 B", 1_300_000_000),
         ("7 B", 7_000_000_000)]
print_table(["recipe", "bytes/param"] + [name for name, _ in sizes],
            [[name, sum(parts)] + [format_bytes(sum(parts) * n) for _, n in sizes]
             for name, parts in bytes_per_param.items()])

P_7B, GiB, gpu_80GB = 7_000_000_000, 2**30, 80e9
grads_and_adam = P_7B * (4 + 8)                          # float32 gradients and Adam's two moments: 12 B/param
with_weights = P_7B * sum(bytes_per_param["Adam, float32"])   # ... and the float32 weights: 16 B/param
print(f"7 B parameters, Adam in float32: gradients + Adam's moments {grads_and_adam / GiB:.1f} GiB; with the "
      f"weights {with_weights / GiB:.1f} GiB; one 80 GB GPU holds {gpu_80GB / GiB:.1f} GiB")
assert 70 * GiB < grads_and_adam < 80 * GiB < 100 * GiB < with_weights < 110 * GiB
assert grads_and_adam > gpu_80GB                          # even without the weights, more than one 80 GB GPU

# %% [markdown]
# Training a 7-billion-parameter model with Adam needs 16 bytes per parameter before any activation, in float32 and
# in either mixed-precision layout: the cell above prints the total, and the gradients and Adam's moments alone
# (12 of the 16 bytes) are already more than one 80 GB GPU holds. That is why large models shard this state over
# GPUs (FSDP/ZeRO, notebook 09).
#
# ## 2. Activations: what autograd saves for backward
# The fourth kind of memory grows with the batch. To compute gradients, backward needs some tensors from the
# forward pass: a `Linear` layer $y = x W^\top + b$ needs its input $x$ for $\partial L/\partial W$ (and $W$ for
# $\partial L/\partial x$); ReLU needs its output (to know where it was positive). Autograd keeps these *saved
# tensors* alive from the forward pass until backward has used them.
#
# `saved_tensor_bytes(fn)` runs `fn` under `torch.autograd.graph.saved_tensors_hooks`, which sees every tensor
# autograd saves, and adds up their distinct storages. The weights it saves are not extra memory (they exist
# anyway), so `exclude=model.parameters()` leaves them out. For our MLP 64 → `width` → `width` → 10 the prediction
# by hand is: the input (64 numbers per example), and each ReLU's output (`width` each; the next Linear saves the
# same tensor as its input, one storage). The pre-ReLU values and the logits are not saved.

# %%
model = make_mlp()
rows = []
for batch_size in cfg.pick(smoke=[32, 128, 512], small=[64, 256, 1024, 4096], full=[256, 1024, 4096, 16384]):
    X = torch.rand(batch_size, 64, device=device)
    measured = saved_tensor_bytes(lambda: model(X), exclude=model.parameters())
    by_hand = batch_size * (64 + width + width) * 4                       # float32: 4 bytes per number
    with_weights = saved_tensor_bytes(lambda: model(X))
    rows.append([batch_size, format_bytes(by_hand), format_bytes(measured), format_bytes(with_weights)])
    assert measured == by_hand
print_table(["batch size", "activations (by hand)", "activations (measured)", "incl. saved weights"], rows)

# %% [markdown]
# Activation memory is exactly linear in the batch size; the weights that autograd also references are a constant.
# For an MLP on tiny 8×8 images the parameters dominate unless the batch is large. Convolutional networks are the
# opposite: few parameters, but every layer keeps a full feature map per example. Compare the two on one batch of
# 32×32 colour images:

# %%
batch_size = cfg.pick(smoke=64, small=128, full=256)
torch.manual_seed(cfg.seed)
cnn = dlcourse.models.SmallCNN(in_channels=3, num_classes=6, width=cfg.pick(smoke=16, small=32, full=64)).to(device)
mlp_rgb = dlcourse.models.mlp(3 * 32 * 32, [width, width], 6).to(device)
X_img = torch.rand(batch_size, 3, 32, 32, device=device)
rows, ratio = [], {}
for name, net in [("MLP", mlp_rgb), ("SmallCNN", cnn)]:
    state = 4 * dlcourse.models.count_parameters(net) * 4                 # params + grads + Adam's 2, float32
    activations = saved_tensor_bytes(lambda: net(X_img), exclude=net.parameters())
    ratio[name] = activations / state
    rows.append([name, f"{dlcourse.models.count_parameters(net):,}", format_bytes(state), format_bytes(activations),
                 f"{ratio[name]:.2f}"])
print_table([f"model (batch {batch_size})", "P", "params+grads+Adam", "activations", "activations / state"], rows)
assert ratio["SmallCNN"] > 1 > ratio["MLP"], "the CNN is activation-heavy, the MLP parameter-heavy"

# %% [markdown]
# ## 3. The whole step, measured
# Adding the four parts gives the usual back-of-the-envelope estimate of a training step's memory:
# $$M \approx \underbrace{P\,b}_{\text{params}} + \underbrace{P\,b}_{\text{grads}}
#   + \underbrace{2\,P\,b}_{\text{Adam}} + \underbrace{A(B)}_{\text{activations}}.$$
# Now measure a real step with `dlcourse.memory.peak_memory`. On CUDA it reads the allocator's own statistics
# (`torch.cuda.reset_peak_memory_stats` before, `torch.cuda.max_memory_allocated` after). On a CPU torch keeps no
# such counter, so it replays the allocation and free events that `torch.profiler` records with
# `profile_memory=True`. (`tracemalloc` does not see torch's memory, and the process's resident size depends on
# when `malloc` returns memory to the system.) Both report the peak *above* what was allocated when the step
# started; we add the state that existed before (parameters, Adam state, the batch).
#
# The step is measured after one warm-up step (so Adam's state exists, as in every later step) and after
# `optimizer.zero_grad()`, which frees the gradients (`set_to_none=True` is the default). The batch `X` is in
# memory before the step starts, so it counts once, as part of that state, and not again among the activations
# (the first layer saves its input `X` for backward: the same tensor).
#
# On a GPU the allocator adds three effects of its own, which the comparison below has to allow for:
# - **Rounding.** PyTorch's caching allocator hands out blocks in multiples of 512 bytes, so every tensor costs
#   a little more than `numel * element_size` (negligible here: a few hundred bytes on tensors of kilobytes to
#   megabytes; a cell below shows it).
# - **Workspaces.** cuBLAS and cuDNN need scratch memory. The matrix-product libraries keep theirs from their
#   first call on (here: the warm-up step, so it is in the starting state and not in the peak); a convolution
#   may take a workspace of up to tens of megabytes for the duration of one call, which the peak does include.
# - **Caching.** Freed blocks stay *reserved* by PyTorch for reuse instead of going back to the driver.
#   `max_memory_allocated` counts only blocks in use, which is what the formula predicts;
#   `max_memory_reserved` (`peak_reserved_bytes`) is what the process holds, and what runs out first.
#
# So the upper bound below allows a fixed 64 MiB on CUDA for workspaces on top of twice the formula.

# %%
def measure_step(model, optimizer, X, y):
    """Estimate and measurement of one Adam training step's memory, in bytes."""
    def step():
        F.cross_entropy(model(X), y).backward()
        optimizer.step()

    step()                                       # warm-up: creates Adam's state (and cuBLAS's workspace)
    optimizer.zero_grad()                        # frees the gradients: the state every step starts from
    before = model_state_bytes(model, optimizer)["total"] + X.nbytes + y.nbytes
    result = peak_memory(step, device)
    # what the step adds: the saved activations, except the batch, which existed before
    activations = saved_tensor_bytes(lambda: F.cross_entropy(model(X), y), exclude=[*model.parameters(), X])
    P = dlcourse.models.count_parameters(model)
    estimate = 4 * P * 4 + activations + X.nbytes + y.nbytes
    return {"estimate": estimate, "measured": before + result["peak_bytes"], "activations": activations,
            "state": 16 * P, "gradients": 4 * P}


X_digits = torch.rand(cfg.pick(smoke=256, small=512, full=4096), 64, device=device)
y_digits = torch.randint(0, 10, (len(X_digits),), device=device)
model = make_mlp()
mlp_step = measure_step(model, torch.optim.Adam(model.parameters(), lr=1e-3), X_digits, y_digits)
cnn_step = measure_step(cnn, torch.optim.Adam(cnn.parameters(), lr=1e-3), X_img,
                        torch.randint(0, 6, (len(X_img),), device=device))
rows = [[name, format_bytes(r["state"]), format_bytes(r["activations"]), format_bytes(r["estimate"]),
         format_bytes(r["measured"]), f"{r['measured'] / r['estimate']:.2f}"]
        for name, r in [(f"MLP, batch {len(X_digits)}", mlp_step), (f"SmallCNN, batch {len(X_img)}", cnn_step)]]
print_table(["step", "16·P", "activations", "estimate", "measured peak", "measured / estimate"], rows)
workspace_allowance = 64 * 2**20 if device.type == "cuda" else 0      # cuDNN/cuBLAS scratch memory (above)
for r in (mlp_step, cnn_step):
    # at the end of the forward pass, parameters, Adam state, batch and all activations exist together
    assert r["measured"] >= r["estimate"] - r["gradients"], "the peak holds at least everything but the gradients"
    assert r["measured"] <= 2 * r["estimate"] + workspace_allowance, "the formula gets the order of magnitude right"

# %% [markdown]
# The formula predicts the measured peak well; the assertions bound it from both sides. Below it is impossible:
# at the end of the forward pass the parameters, Adam's state, the batch and all saved activations exist together.
# Above it are *temporaries*, tensors that live only for a moment but may live at the moment of the peak: during
# backward, the gradient with respect to each activation sits next to the saved tensors; Adam's default `foreach`
# implementation computes its update in parameter-sized scratch tensors; convolutions may need workspaces. The
# order matters too: activations are freed during backward while gradients appear, so the two never peak at quite
# the same time. On a GPU, `max_memory_allocated` shows the same structure; `nvidia-smi` shows more (the CUDA
# context, and the memory the caching allocator has *reserved*: `peak_reserved_bytes`, which is what runs out).
#
# The allocator's rounding and caching are easy to see on a GPU: allocate tensors of a few sizes and read
# `torch.cuda.memory_allocated` (bytes in blocks handed out) and `torch.cuda.memory_reserved` (bytes held from
# the driver) before and after each.

# %%
if device.type == "cuda":
    torch.cuda.synchronize(device)
    rows = []
    for numel in (1, 128, 129, 1000, 250_000):
        allocated, reserved = torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)
        t = torch.empty(numel, device=device)                               # float32: 4 bytes a number
        grew = torch.cuda.memory_allocated(device) - allocated
        rows.append([f"{numel:,}", f"{4 * numel:,} B", f"{grew:,} B",
                     format_bytes(torch.cuda.memory_reserved(device) - reserved)])
        assert grew >= 4 * numel and grew % 512 == 0, "whole 512-byte blocks, at least the tensor's bytes"
        del t
    print_table(["float32 numbers", "tensor", "memory_allocated grew by", "memory_reserved grew by"], rows)
    print(f"now: {format_bytes(torch.cuda.memory_allocated(device))} allocated, "
          f"{format_bytes(torch.cuda.memory_reserved(device))} reserved")
else:
    print(f"skipped on {device}: the CPU has no caching allocator of PyTorch's own to inspect")

# %% [markdown]
# A one-number tensor takes a whole 512-byte block; 128 numbers (512 bytes) fit one block exactly, 129 need two.
# Reserved memory grows in whole segments (2 MiB for small blocks, larger for large ones), and only when no
# cached block fits: after the first allocations it usually does not grow at all. `del t` returns the block to
# PyTorch's cache, not to the driver (`torch.cuda.empty_cache()` would).
#
# How does the peak grow with the batch? The state is fixed; activations (and the gradients flowing through them)
# grow linearly. Measured on the CNN:

# %%
batch_sizes = cfg.pick(smoke=[16, 64, 128], small=[32, 64, 128, 256, 512], full=[64, 128, 256, 512, 1024])
optimizer = torch.optim.Adam(cnn.parameters(), lr=1e-3)
sweep = []
for batch_size in batch_sizes:
    X_b = torch.rand(batch_size, 3, 32, 32, device=device)
    sweep.append(measure_step(cnn, optimizer, X_b, torch.randint(0, 6, (batch_size,), device=device)))
print_table(["batch size", "activations", "estimate", "measured peak"],
            [[b, format_bytes(r["activations"]), format_bytes(r["estimate"]), format_bytes(r["measured"])]
             for b, r in zip(batch_sizes, sweep)])
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(batch_sizes, [r["measured"] / 2**20 for r in sweep], "o-", label="measured peak")
ax.plot(batch_sizes, [r["estimate"] / 2**20 for r in sweep], "s--", label="estimate (state + activations)")
ax.plot(batch_sizes, [r["state"] / 2**20 for r in sweep], ":", label="params + grads + Adam (16·P)")
ax.set_xlabel("batch size")
ax.set_ylabel("MiB")
ax.set_title(f"SmallCNN training step on {device.type}")
ax.legend()
plt.close(fig)
slopes = [(b2["measured"] - b1["measured"]) / (n2 - n1) for b1, b2, n1, n2 in
          zip(sweep, sweep[1:], batch_sizes, batch_sizes[1:])]
print("measured bytes per extra example:", [format_bytes(s) for s in slopes],
      "| saved activations per example:", format_bytes(sweep[-1]["activations"] / batch_sizes[-1]))
assert sweep[-1]["measured"] > sweep[0]["measured"], "a larger batch needs more memory"
fig

# %% [markdown]
# ## 4. Gradient accumulation: a large batch in pieces
# When the batch you want does not fit, split it. With a mean-reduced loss over a batch of $B$ examples cut into $k$
# micro-batches of $B/k$,
# $$L = \frac{1}{B}\sum_{i=1}^{B}\ell_i = \frac{1}{k}\sum_{j=1}^{k}\underbrace{\frac{k}{B}\sum_{i \in j}\ell_i}_{L_j
#   \text{ (micro-batch mean)}}
# \quad\Longrightarrow\quad \nabla L = \sum_{j=1}^{k}\nabla\Big(\frac{L_j}{k}\Big).$$
# Since `.backward()` *adds* to `.grad` (notebook 01), calling `(L_j / k).backward()` for each micro-batch and
# stepping once leaves exactly $\nabla L$ in `.grad`, while only one micro-batch's activations exist at a time.
# Check it: the large batch's gradient against accumulation over 2, 4, 8 micro-batches — and the classic bug,
# forgetting to divide by $k$.

# %%
def accumulated_grads(model, X, y, k, divide=True):
    """Gradients of the mean loss over (X, y), computed in k equal micro-batches."""
    model.zero_grad()
    for X_mb, y_mb in zip(X.chunk(k), y.chunk(k)):         # (B/k, ...) each
        loss = F.cross_entropy(model(X_mb), y_mb)           # the micro-batch's mean loss
        (loss / k if divide else loss).backward()           # .grad += gradient of loss / k
    return [p.grad.clone() for p in model.parameters()]


model = make_mlp()
big_batch = accumulated_grads(model, X_digits, y_digits, k=1)
rows = []
for k in (1, 2, 4, 8):
    right = accumulated_grads(model, X_digits, y_digits, k)
    wrong = accumulated_grads(model, X_digits, y_digits, k, divide=False)
    max_diff = max((g - g_big).abs().max().item() for g, g_big in zip(right, big_batch))
    ratio = torch.cat([w.flatten() for w in wrong]).norm() / torch.cat([g.flatten() for g in big_batch]).norm()
    activations = saved_tensor_bytes(lambda: accumulated_grads(model, X_digits, y_digits, k),
                                     exclude=[*model.parameters(), X_digits, y_digits])
    rows.append([k, len(X_digits) // k, f"{max_diff:.1e}", f"{ratio:.3f}", format_bytes(activations)])
    assert all(torch.allclose(g, g_big, rtol=1e-4, atol=1e-6) for g, g_big in zip(right, big_batch))
    assert abs(ratio - k) < 1e-3 * k
print_table(["k", "micro-batch", "max |accumulated - large batch|", "‖no division‖ / ‖right‖",
             "peak saved activations"], rows)

# %% [markdown]
# Accumulation matches the large batch to float32 rounding (the sums happen in a different order), and the peak of
# saved activations falls by the factor $k$: `saved_tensor_bytes` counts what is alive at once, and each
# micro-batch's graph is freed by its backward. (The batch itself is left out of the count: here the micro-batches
# are views of one tensor that is in memory anyway. A real accumulation loop takes its micro-batches from the data
# loader, and the large batch never exists.) Forgetting the division multiplies the gradient by exactly $k$: with
# SGD that is a $k$ times larger learning rate, silently; Adam hides most of it (it divides by the gradient's own
# scale), which is why the bug survives in real code.
#
# **The exception: BatchNorm.** The identity needs each example's loss to depend only on that example. BatchNorm
# breaks it: it normalises with the mean and variance of the batch it sees, so each micro-batch of $B/k$ is
# normalised with its own statistics — a different function from the large batch's. (Its running statistics are
# also updated $k$ times instead of once.) The CNN uses BatchNorm:

# %%
# float64 here, so that rounding (or a GPU's TF32 convolutions) can neither hide nor fake a difference
X_shapes = torch.rand(cfg.pick(smoke=32, small=128, full=256), 3, 32, 32, device=device, dtype=torch.float64)
y_shapes = torch.randint(0, 6, (len(X_shapes),), device=device)


def cnn_grads(k, norm_layers_eval=False):
    net = copy.deepcopy(cnn).double().train()
    if norm_layers_eval:   # normalise with fixed running statistics: every example independent again
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    return accumulated_grads(net, X_shapes, y_shapes, k)


def relative_difference(grads, reference):
    return (torch.cat([(g - r).flatten() for g, r in zip(grads, reference)]).norm()
            / torch.cat([r.flatten() for r in reference]).norm()).item()


difference = {}   # (BatchNorm frozen?, k) -> relative difference from the large batch's gradient
for frozen in (False, True):
    reference = cnn_grads(1, frozen)
    for k in (2, 4):
        difference[frozen, k] = relative_difference(cnn_grads(k, frozen), reference)
print_table(["SmallCNN", "relative gradient difference, k=2", "k=4"],
            [[mode] + [f"{difference[frozen, k]:.1e}" for k in (2, 4)] for mode, frozen in
             [("BatchNorm, batch statistics (train mode)", False), ("BatchNorm, running statistics", True)]])
assert difference[False, 4] > 1e-3, "with batch statistics, accumulation is a different computation"
assert difference[True, 4] < 1e-10, "with fixed statistics, it is the large batch's gradient"

# %% [markdown]
# With batch statistics the accumulated gradient differs far beyond rounding; with fixed statistics it agrees to
# float64 rounding. Not a bug: a different model (BatchNorm over smaller batches). It usually trains fine, but it is
# not the large batch; where exactness matters, use a normalisation that works per example (LayerNorm, GroupNorm).
# (Across GPUs, `nn.SyncBatchNorm` computes the statistics over all the GPUs' pieces together; for pieces processed
# one after another there is no such fix.)
#
# ### Accumulation in `dlcourse.fit`
# `dlcourse.fit(..., accumulate=k)` does exactly the loop above: each batch's mean loss divided by the number of
# batches in its group, one optimiser step per group. Train the MLP on digits three ways — large batches, the same
# batches in $k$ pieces, and small batches with a step after each — and compare the weights afterwards. For the
# groups of small batches to be exactly the large batches, the training set must divide into whole large batches,
# and both loaders shuffle with the same seed (the shuffling order does not depend on the batch size).

# %%
splits = dlcourse.data.digits(seed=cfg.seed)
k = 4
large_batch = cfg.pick(smoke=128, small=128, full=256)
num_epochs = cfg.pick(smoke=2, small=10, full=20)
n_train = len(splits.train) // large_batch * large_batch
train_set = torch.utils.data.Subset(splits.train, range(n_train))


def train_digits(batch_size, accumulate):
    torch.manual_seed(cfg.seed)
    model = dlcourse.models.mlp(64, [128], 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    train_loader, val_loader = dlcourse.data.make_loaders(train_set, splits.val, batch_size=batch_size,
                                                          seed=cfg.seed)
    history = dlcourse.fit(model, optimizer, train_loader, val_loader, num_epochs=num_epochs,
                           accumulate=accumulate, progress=False)
    return model, history


runs = {f"batch {large_batch}": train_digits(large_batch, 1),
        f"batch {large_batch // k} × accumulate {k}": train_digits(large_batch // k, k),
        f"batch {large_batch // k}, a step per batch": train_digits(large_batch // k, 1)}
reference_params = torch.cat([p.detach().flatten() for p in runs[f"batch {large_batch}"][0].parameters()])
rows = []
for name, (model, history) in runs.items():
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    rows.append([name, f"{(params - reference_params).abs().max().item():.1e}",
                 f"{history.last['val_acc']:.3f}", f"{min(history['seconds']):.2f}"])
print_table(["run", "max |weights - large-batch run|", "val accuracy", "s / epoch (best)"], rows)
accumulated_params = torch.cat([p.detach().flatten() for p in runs[f"batch {large_batch // k} × accumulate {k}"][0]
                                .parameters()])
assert torch.allclose(accumulated_params, reference_params, atol=1e-4)
assert runs[f"batch {large_batch}"][1].last["val_acc"] > 0.5, "the MLP learns digits"

# %% [markdown]
# At the end the accumulated run holds the large-batch run's weights to float32 rounding, while the run that
# steps after every small batch has gone somewhere else (four times as many, noisier steps). Accumulation buys
# memory with time: the same number of examples in smaller pieces uses the hardware less efficiently (on a GPU much
# more than on a CPU, because a small batch cannot fill the GPU's cores), so pick the largest micro-batch that fits
# and accumulate only the rest.
#
# ## 5. Activation checkpointing: forget, then recompute
# Accumulation shrinks activations by shrinking the batch. Checkpointing keeps the batch and stores fewer
# activations: a region wrapped in `torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)` runs its
# forward pass without saving anything inside it, keeping only its input; during backward it runs the forward
# again to rebuild the saved tensors it needs, then backpropagates through them. The result is the same
# computation, paid for with one extra forward pass of each checkpointed region. (`use_reentrant=False` is the
# recommended implementation: it works with inputs that do not require gradients and with `torch.autograd.grad`.)
#
# A stack of residual MLP blocks (the feed-forward half of a transformer block) shows it well: each block stores
# LayerNorm's and two Linears' inputs, the wide hidden layer included, but passes on only a `width`-sized tensor.

# %%
class ResidualBlock(nn.Module):
    """x + MLP(LayerNorm(x)): (B, d) -> (B, d), with a 4·d hidden layer."""

    def __init__(self, d):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        return x + self.mlp(x)


class DeepMLP(nn.Module):
    """``depth`` residual blocks; every ``checkpoint_every``-th block checkpointed (0: none)."""

    def __init__(self, d, depth, checkpoint_every=0):
        super().__init__()
        self.blocks = nn.ModuleList(ResidualBlock(d) for _ in range(depth))
        self.checkpoint_every = checkpoint_every

    def forward(self, x):                                            # (B, d) -> (B, d)
        for i, block in enumerate(self.blocks):
            if self.checkpoint_every and i % self.checkpoint_every == 0:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


d = cfg.pick(smoke=128, small=256, full=1024)
depth = cfg.pick(smoke=8, small=12, full=24)
X_deep = torch.randn(cfg.pick(smoke=256, small=512, full=8192), d, device=device)
torch.manual_seed(cfg.seed)
deep = DeepMLP(d, depth).to(device)


def loss_and_grads(net):
    net.zero_grad()
    y_hat = net(X_deep)
    y_hat.square().mean().backward()
    return y_hat.detach(), [p.grad.clone() for p in net.parameters()]


y_hat_plain, grads_plain = loss_and_grads(deep)
deep.checkpoint_every = 1
y_hat_ckpt, grads_ckpt = loss_and_grads(deep)
deep.checkpoint_every = 0
max_grad_diff = max((g - h).abs().max().item() for g, h in zip(grads_ckpt, grads_plain))
print(f"forward identical: {torch.equal(y_hat_ckpt, y_hat_plain)}, max gradient difference: {max_grad_diff:.1e}")
assert torch.allclose(y_hat_ckpt, y_hat_plain) and all(
    torch.allclose(g, h, rtol=1e-5, atol=1e-7) for g, h in zip(grads_ckpt, grads_plain))

# %% [markdown]
# Same outputs, same gradients: the recomputation repeats exactly the same operations (with dropout,
# `checkpoint` also restores the random-number state so that the same units are dropped). Now the price. For
# checkpointing every block, every second block, every fourth and none, measure the saved activations, the peak
# of a forward–backward step, and its time (the best of several rounds, without the profiler; each round times all
# four settings in turn, so that a machine shared with other work slows them alike):

# %%
def train_step_with(every):
    def train_step():
        deep.checkpoint_every = every
        deep.zero_grad()
        deep(X_deep).square().mean().backward()
    return train_step


settings = [0, 4, 2, 1]
seconds = best_times([train_step_with(every) for every in settings], repeats=cfg.pick(smoke=3, small=3, full=10))
tradeoff = []
for every, step_seconds in zip(settings, seconds):
    deep.checkpoint_every = every
    saved = saved_tensor_bytes(lambda: deep(X_deep), exclude=deep.parameters())
    deep.zero_grad(set_to_none=True)
    peak = peak_memory(lambda: deep(X_deep).square().mean().backward(), device, count_saved=False)["peak_bytes"]
    tradeoff.append({"every": every, "fraction": len(range(0, depth, every)) / depth if every else 0.0,
                     "saved": saved, "peak": peak, "seconds": step_seconds})
deep.checkpoint_every = 0
plain = tradeoff[0]
print(f"{depth} residual blocks of width {d}, batch {len(X_deep)}, on {device}"
      + (f" (float32 with {dlcourse.config.tf32_status()})" if device.type == "cuda" else ""))
print_table(["checkpointed blocks", "saved activations", "peak above start", "time / step", "memory", "time"],
            [[f"{r['fraction']:.0%}" + (f" (every {r['every']})" if r["every"] else ""),
              format_bytes(r["saved"]), format_bytes(r["peak"]), f"{1000 * r['seconds']:.1f} ms",
              f"{r['saved'] / plain['saved']:.2f}×", f"{r['seconds'] / plain['seconds']:.2f}×"] for r in tradeoff])
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot([1000 * r["seconds"] for r in tradeoff], [r["saved"] / 2**20 for r in tradeoff], "o-")
for r in tradeoff:
    ax.annotate(f"{r['fraction']:.0%}", (1000 * r["seconds"], r["saved"] / 2**20), textcoords="offset points",
                xytext=(5, 5))
ax.set_xlabel("time per training step (ms)")
ax.set_ylabel("saved activations (MiB)")
ax.set_title(f"Checkpointing {depth} residual blocks on {device.type}: memory against time")
plt.close(fig)
all_blocks = tradeoff[-1]
assert all_blocks["saved"] == depth * X_deep.nbytes, "checkpointing every block keeps only the blocks' inputs"
assert all_blocks["saved"] < plain["saved"] / 4 and all_blocks["peak"] < plain["peak"]
fig

# %% [markdown]
# Checkpointing every block keeps exactly one `(B, d)` input per block — the assertion above checks that to the
# byte — instead of the hidden activations, several times smaller; checkpointing a fraction of the blocks lands in
# between, linearly. The time cost is one extra forward pass of the checkpointed blocks. If backward costs twice
# the forward, that adds about a third to a step; the measured cost depends on the model and the machine (the
# recomputation runs in pieces inside backward, checkpointing has bookkeeping of its own, and for small matrices
# fixed per-operation costs dominate), so measure it, as the table does.
# On a GPU the saved memory is the same (the saved tensors do not depend on the device, and
# `max_memory_allocated` shows the peak falling with them); the relative time cost is similar for a GPU kept busy,
# and smaller for a model so small that the GPU mostly waits for Python. The "peak above start"
# column falls less than the saved activations: it also holds the gradients and, inside a checkpointed block
# during backward, that block's recomputed activations.
#
# Choosing what to checkpoint is the art: checkpoint where activations are large and cheap to recompute
# (element-wise operations, normalisations, the wide MLP layer), not where recomputing costs a big matrix product
# per byte saved. Cutting an $L$-layer chain into $\sqrt{L}$ checkpointed segments
# (`torch.utils.checkpoint.checkpoint_sequential`) keeps memory proportional to $\sqrt{L}$ for one extra forward
# pass.

# %% [markdown]
# ## Summary
# - Training memory has four parts: parameters $P\,b$, gradients $P\,b$, optimiser state $s\,P\,b$ (Adam: $s=2$;
#   plus one step counter per tensor), and activations, which grow linearly with the batch size.
#   `dlcourse.memory.model_state_bytes` measures the first three; the formula matches them to the byte.
# - Activations are the tensors autograd saves for backward; `saved_tensor_bytes` counts them, and a hand count
#   (layer inputs, ReLU outputs) matches it exactly. CNNs are activation-heavy, MLPs parameter-heavy.
# - The measured peak of a step (`peak_memory`: CUDA allocator statistics on a GPU, profiler allocation events on
#   a CPU) is above the four-part formula: temporaries such as activation gradients and optimiser scratch space.
# - Gradient accumulation with the loss divided by $k$ gives the large batch's gradient to rounding, with $1/k$ of
#   the activations; without the division it is $k$ times too large; BatchNorm makes it a different computation.
#   `dlcourse.fit(..., accumulate=k)` reproduces the large-batch run.
# - Activation checkpointing (`checkpoint(block, x, use_reentrant=False)`) gives identical results, stores only
#   the checkpointed blocks' inputs, and costs one extra forward pass of them.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **A transformer's bill.** Count parameters, gradients and AdamW state for the GPT of notebook 06 with
#    `model_state_bytes`, then measure its activations with `saved_tensor_bytes` at sequence lengths 16, 32 and 64.
#    Which part grows with the square of the sequence length, and why?
# 2. **Mixed precision and activations.** Measure `saved_tensor_bytes` of the SmallCNN's forward pass under
#    `torch.autocast(device.type, dtype=torch.bfloat16)`. Do the activations halve? Which saved tensors stay
#    float32? (Pass `exclude=cnn.parameters()` and compare with and without it: what are the new saved tensors?)
# 3. **Accumulation with unequal pieces.** Split a batch of 10 into micro-batches of 4, 4 and 2 and divide each
#    loss by 3. Is the gradient still the large batch's? Fix it by weighting each micro-batch's loss by its share of
#    the examples.
# 4. **The largest batch that fits.** From section 3's sweep, fit a straight line to the measured peak against the
#    batch size. Given a memory budget of 64 MiB, which batch size fits, and how many accumulation steps reach an
#    effective batch of 2048?
# 5. **Checkpoint the right thing.** In `ResidualBlock`, checkpoint only the `GELU` and the second Linear (the wide
#    part) instead of the whole block. Measure saved bytes and time against the table in section 5.
# 6. **BatchNorm twice.** With `checkpoint_every=1`, add a `BatchNorm1d` to `ResidualBlock` and check how many
#    times its `num_batches_tracked` grows per training step. What does recomputation do to the running statistics?
