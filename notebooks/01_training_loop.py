# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 01 · The training loop
#
# Almost every model in this course is trained by the same few lines: compute predictions, measure how wrong they
# are, ask autograd for the gradient, take a small step downhill, repeat. This notebook builds those lines from
# nothing, checks each piece against PyTorch, and then hands the loop to `dlcourse.fit`, which later notebooks use.
#
# **Learning goals**
# - Create tensors, and let autograd compute a gradient that you have also derived by hand.
# - Write softmax regression and its training loop from scratch: forward pass, cross-entropy, backward pass,
#   update under `torch.no_grad()`, zeroing gradients.
# - Rewrite it with `nn.Linear`, `torch.optim.SGD` and `F.cross_entropy`, and show that the numbers are the same.
# - Train with `dlcourse.fit`, read its `History`, and keep the test set for the very end.
# - Train a small MLP to at least 95 % test accuracy on handwritten digits, and see what the learning rate does.
#
# **Prerequisites:** notebook 00; matrix products, derivatives and the chain rule; what a probability
# distribution is.
#
# **Time:** seconds at `smoke`; a few minutes at most at `small` on a laptop CPU; at `full` the same models train
# longer on a GPU. The last cell prints how long this run took on your machine.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import dlcourse

cfg = dlcourse.setup(seed=0)
device = cfg.device
t_start = time.perf_counter()

# %% [markdown]
# ## 1. Tensors
# A tensor is an n-dimensional array that lives on a device (CPU or GPU) and has a `dtype`. Data come as a
# matrix `X` of shape (N, d): N examples in rows, d features in columns. A linear model gives one score per
# example with a matrix-vector product; the scalar bias `b` is *broadcast*, i.e. added to every score.

# %%
X = torch.tensor([[1.0, 2.0, 3.0],
                  [4.0, 5.0, 6.0]])      # (N=2, d=3)
w = torch.tensor([0.5, -1.0, 2.0])        # (3,)
b = torch.tensor(0.1)                     # a scalar, shape ()
z = X @ w + b                             # (2,): 1*0.5 - 2*1 + 3*2 + 0.1 = 4.6, and 9.1
print(X.shape, X.dtype, X.device, "->", z)
assert torch.allclose(z, torch.tensor([4.6, 9.1]))

# %% [markdown]
# ## 2. Autograd, checked by hand
# A tensor created with `requires_grad=True` makes PyTorch record every operation applied to it. Calling
# `.backward()` on a scalar result walks that record backwards with the chain rule and stores
# d(result)/d(tensor) in the tensor's `.grad`.
#
# Start with one variable: $f(x) = x^3 + 2x$ has $f'(x) = 3x^2 + 2$, which is 8.75 at $x = 1.5$.

# %%
x = torch.tensor(1.5, requires_grad=True)
f = x**3 + 2 * x
f.backward()
print(f"autograd: {x.grad.item()}, by hand: {3 * 1.5**2 + 2}")
assert torch.isclose(x.grad, torch.tensor(3 * 1.5**2 + 2))

# %% [markdown]
# Now a real model. **Logistic regression** predicts the probability that a label $y \in \{0, 1\}$ is 1:
# $p_i = \sigma(z_i)$ with $z_i = x_i \cdot w + b$ and $\sigma(z) = 1 / (1 + e^{-z})$. Its loss is the mean
# binary cross-entropy
# $$L = -\frac{1}{N}\sum_i \big[y_i \log p_i + (1 - y_i)\log(1 - p_i)\big].$$
# By hand: $\partial L/\partial p_i = -\frac{1}{N}\big(\frac{y_i}{p_i} - \frac{1-y_i}{1-p_i}\big)$ and
# $\sigma'(z) = \sigma(z)(1 - \sigma(z))$, so the product collapses to $\partial L/\partial z_i = (p_i - y_i)/N$.
# Since $z = Xw + b$:
# $$\nabla_w L = \frac{1}{N} X^\top (p - y), \qquad \frac{\partial L}{\partial b} = \frac{1}{N}\sum_i (p_i - y_i).$$
# Let autograd check the algebra (in float64, so rounding cannot hide a mistake):

# %%
gen = torch.Generator().manual_seed(cfg.seed)
X = torch.randn(8, 3, generator=gen, dtype=torch.float64)              # (N, d)
y = torch.randint(0, 2, (8,), generator=gen).to(torch.float64)         # (N,) zeros and ones
w = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
b = torch.zeros((), dtype=torch.float64, requires_grad=True)

def logistic_loss(X, y, w, b):
    p = torch.sigmoid(X @ w + b)                                       # (N,)
    return -(y * p.log() + (1 - y) * (1 - p).log()).mean()

logistic_loss(X, y, w, b).backward()
with torch.no_grad():                         # the hand-derived formulas, no autograd involved
    p = torch.sigmoid(X @ w + b)
    grad_w = X.T @ (p - y) / len(y)           # (d,)
    grad_b = (p - y).mean()
print("autograd:", w.grad, b.grad, "\nby hand: ", grad_w, grad_b)
assert torch.allclose(w.grad, grad_w) and torch.allclose(b.grad, grad_b)

# %% [markdown]
# One detail matters for every training loop: `.backward()` **adds** to `.grad`; it does not overwrite it. A second
# backward pass without clearing doubles the stored gradient. That is why every loop zeroes the gradients.

# %%
logistic_loss(X, y, w, b).backward()          # a second time, without zeroing
assert torch.allclose(w.grad, 2 * grad_w)
w.grad.zero_()                                # clear in place, as every loop below does
b.grad.zero_()
assert w.grad.eq(0).all() and b.grad.eq(0).all()

# %% [markdown]
# ## 3. Softmax regression from scratch
# The digits dataset: 8×8 grey images of handwritten digits, flattened to 64 pixel values in [0, 1]. The split into
# train / validation / test is fixed by the seed.

# %%
splits = dlcourse.data.digits(flatten=True, seed=cfg.seed)
X_train, y_train = (t.to(device) for t in splits.train.tensors)   # (N_train, 64), (N_train,)
X_val, y_val = (t.to(device) for t in splits.val.tensors)
print(splits, "| X_train:", tuple(X_train.shape), "| y_train:", tuple(y_train.shape), y_train[:10].tolist())

# %% [markdown]
# **The model.** With C = 10 classes, softmax regression computes C scores (*logits*) per example,
# $z = XW + b$ with $W$ of shape (64, 10) and $b$ of shape (10,), and turns them into probabilities with the
# softmax $\;\hat p_k = e^{z_k} / \sum_j e^{z_j}$.
#
# **The loss.** Cross-entropy is minus the log-probability the model gives to the correct class, averaged over
# the batch: $L = -\frac{1}{N}\sum_i \log \hat p_{i, y_i}$. It is 0 for a confident correct prediction and grows
# without bound for a confident wrong one.
#
# **Numerical care.** $e^{z}$ overflows in float32 once $z$ is above about 88. Subtracting the row maximum from
# every logit leaves the softmax unchanged (the factor cancels) and keeps every exponent ≤ 0. We work with
# $\log \hat p$ directly: $\log \hat p_k = (z_k - m) - \log \sum_j e^{z_j - m}$, where $m = \max_j z_j$.

# %%
def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """(N, C) logits -> (N, C) log-probabilities, computed without overflow."""
    shifted = logits - logits.max(dim=1, keepdim=True).values
    return shifted - shifted.exp().sum(dim=1, keepdim=True).log()


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean of -log p[i, y[i]] over the batch: (N, C) logits and (N,) class indices -> scalar."""
    rows = torch.arange(len(y), device=y.device)
    return -log_softmax(logits)[rows, y].mean()


# Check against PyTorch on ordinary logits and on huge ones, where a naive exp() would overflow.
gen = torch.Generator().manual_seed(cfg.seed)
logits = torch.randn(16, 10, generator=gen)                # (16, 10)
labels = torch.randint(0, 10, (16,), generator=gen)        # (16,)
for scale in (1.0, 1000.0):
    ours, torchs = cross_entropy(scale * logits, labels), F.cross_entropy(scale * logits, labels)
    print(f"logits x{scale:g}: ours {ours.item():.6f}, F.cross_entropy {torchs.item():.6f}")
    assert torch.allclose(ours, torchs, rtol=1e-5, atol=1e-5)
assert torch.allclose(log_softmax(logits).exp().sum(dim=1), torch.ones(16))  # each row is a distribution

# %% [markdown]
# **The loop.** Minibatch stochastic gradient descent (SGD): shuffle the training set once per epoch, cut it into
# batches of `batch_size` examples, and for every batch
# 1. forward: `y_hat = X @ W + b` (logits),
# 2. loss: `cross_entropy(y_hat, y)`,
# 3. backward: `loss.backward()` fills `W.grad` and `b.grad`,
# 4. update: `W -= lr * W.grad`, inside `torch.no_grad()` because the step itself is not part of the model and
#    must not be recorded by autograd,
# 5. zero the gradients, since the next `.backward()` would add to them.
#
# We keep the initial parameters and the shuffling seed so that section 4 can replay exactly the same run.

# %%
lr = 0.5
batch_size = 64
num_epochs = cfg.pick(smoke=2, small=10, full=30)

gen = torch.Generator().manual_seed(cfg.seed)
W = (0.01 * torch.randn(64, 10, generator=gen)).to(device).requires_grad_()  # (64, 10)
b = torch.zeros(10, device=device, requires_grad=True)                        # (10,)
W_init, b_init = W.detach().clone(), b.detach().clone()

order = torch.Generator().manual_seed(cfg.seed)   # decides the shuffling; replayed in section 4
losses_scratch = []
for epoch in range(num_epochs):
    perm = torch.randperm(len(X_train), generator=order).to(device)
    for start in range(0, len(X_train), batch_size):
        idx = perm[start:start + batch_size]
        X, y = X_train[idx], y_train[idx]         # (B, 64), (B,)
        y_hat = X @ W + b                         # 1. forward: (B, 10) logits
        loss = cross_entropy(y_hat, y)            # 2. loss
        loss.backward()                           # 3. backward
        with torch.no_grad():                     # 4. update, not recorded by autograd
            W -= lr * W.grad
            b -= lr * b.grad
        W.grad.zero_()                            # 5. clear for the next batch
        b.grad.zero_()
        losses_scratch.append(loss.item())

with torch.no_grad():
    val_acc = (((X_val @ W + b).argmax(dim=1)) == y_val).float().mean().item()
print(f"{len(losses_scratch)} steps: loss {losses_scratch[0]:.3f} -> {losses_scratch[-1]:.3f}, "
      f"validation accuracy {val_acc:.1%}")
assert sum(losses_scratch[-10:]) / 10 < 0.5 * losses_scratch[0], "the loss should at least halve"
assert val_acc > cfg.pick(smoke=0.8, small=0.9, full=0.9)

# %% [markdown]
# The first loss is close to $\log 10 \approx 2.303$: with near-zero weights every class gets probability 1/10.
# That is a useful sanity check for any classifier with C classes: its initial loss should be about $\log C$.
#
# ## 4. The same model with `nn.Module` and `torch.optim`
# PyTorch packages each piece we just wrote:
# - `nn.Linear(64, 10)` holds `weight` (stored as (10, 64), used as `X @ weight.T + bias`) and `bias`, registered
#   as parameters so that `model.parameters()` finds them;
# - `F.cross_entropy` is our log-softmax plus cross-entropy, fused and numerically stable;
# - `torch.optim.SGD` performs the update (`step()`) and the clearing (`zero_grad()`).
#
# Starting from the same parameters and shuffling the batches in the same order, it should retrace the
# from-scratch run step for step.

# %%
model = nn.Linear(64, 10).to(device)
with torch.no_grad():
    model.weight.copy_(W_init.T)
    model.bias.copy_(b_init)
optimizer = torch.optim.SGD(model.parameters(), lr=lr)

order = torch.Generator().manual_seed(cfg.seed)   # the same shuffling as before
losses_nn = []
for epoch in range(num_epochs):
    perm = torch.randperm(len(X_train), generator=order).to(device)
    for start in range(0, len(X_train), batch_size):
        idx = perm[start:start + batch_size]
        X, y = X_train[idx], y_train[idx]
        y_hat = model(X)
        loss = F.cross_entropy(y_hat, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses_nn.append(loss.item())

max_diff = max(abs(a - c) for a, c in zip(losses_scratch, losses_nn))
print(f"final loss: from scratch {losses_scratch[-1]:.5f}, nn.Module {losses_nn[-1]:.5f}; "
      f"largest difference over {len(losses_nn)} steps: {max_diff:.1e}")
assert len(losses_nn) == len(losses_scratch) and max_diff < 1e-4

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(losses_scratch, label="from scratch", linewidth=3, alpha=0.5)
ax.plot(losses_nn, "--", label="nn.Linear + optim.SGD")
ax.set(xlabel="step (one batch)", ylabel="training loss", title="Two implementations, one curve")
ax.legend()
ax.grid(alpha=0.3)
plt.close(fig)  # show it once, as the cell's value
fig

# %% [markdown]
# The per-batch loss is noisy because every batch is a different sample of the data; its trend is what matters.
#
# ## 5. `dlcourse.fit`: the loop, once and for all
# From now on the loop lives in `dlcourse.fit` (read it in `dlcourse/train.py`: its body is the five lines
# above). It adds the bookkeeping you always want: a `DataLoader` that shuffles and batches, a progress bar, and
# per epoch the mean training loss and accuracy plus the loss and accuracy on a **validation** set. It returns a
# `History`.
#
# Three splits, three jobs: *train* to fit the parameters, *validation* to choose settings (lr, epochs, model
# size), *test* only at the very end, to report a number that no decision was tuned on.

# %%
train_loader, val_loader, test_loader = splits.loaders(batch_size=batch_size, seed=cfg.seed)
progress = True  # the bar under this cell: one step per batch, the latest epoch's metrics on the right

torch.manual_seed(cfg.seed)
model = nn.Linear(64, 10).to(device)
optimizer = torch.optim.SGD(model.parameters(), lr=lr)
history = dlcourse.fit(model, optimizer, train_loader, val_loader, num_epochs=num_epochs, progress=progress)
print(history)
assert len(history) == num_epochs and history.last["val_acc"] > cfg.pick(smoke=0.8, small=0.9, full=0.9)

# %%
dlcourse.viz.plot_history(history, title="softmax regression on digits")

# %% [markdown]
# Why can validation look *better* than training early on? The training numbers are averaged over the epoch
# while the model is still improving; the validation numbers are measured once, with the model as it is at the
# end of the epoch. Only later, if the model starts to memorise its training data, does training pull ahead.
#
# Now, once, the test set:

# %%
softmax_test = dlcourse.evaluate(model, test_loader)
print(f"softmax regression, test: loss {softmax_test['loss']:.3f}, accuracy {softmax_test['acc']:.1%}")
assert softmax_test["acc"] > cfg.pick(smoke=0.8, small=0.9, full=0.9)

# %% [markdown]
# ## 6. A multilayer perceptron
# Softmax regression scores each class with one weighted sum of pixels, so each class is one fixed pixel
# template. A **multilayer perceptron** (MLP) first computes `hidden` new features, each a weighted sum of pixels
# passed through a nonlinearity (ReLU: $\max(0, z)$), and then scores the classes from those features. Without
# the nonlinearity the two layers would collapse into a single linear map, and we would be back to softmax
# regression.
#
# We train it with SGD plus *momentum*. The optimiser keeps a velocity $v \leftarrow \beta v + g$, a decaying
# **sum** of past gradients, and steps along it: $\theta \leftarrow \theta - \eta v$. It is not an average:
# while the gradient stays the same, $v$ grows towards $g / (1 - \beta)$, ten times $g$ for $\beta = 0.9$, so
# momentum also lengthens the steps (the cell below checks this on one number). Directions that agree from batch
# to batch add up, and the noise of small batches partly cancels.
#
# Unlike softmax regression, an MLP must not start from all-zero weights: every hidden unit would get the same
# gradient and they would stay identical. `nn.Linear` initialises randomly, and we seed that randomness.

# %%
beta = 0.9
theta = torch.zeros(1, requires_grad=True)
momentum_sgd = torch.optim.SGD([theta], lr=0.01, momentum=beta)
for _ in range(100):
    theta.grad = torch.ones(1)                  # the same gradient g = 1 at every step
    momentum_sgd.step()
velocity = momentum_sgd.state[theta]["momentum_buffer"].item()
print(f"velocity after 100 steps with g = 1 and beta = {beta}: {velocity:.4f}; g / (1 - beta) = {1 / (1 - beta):.1f}")
assert abs(velocity - 1 / (1 - beta)) < 1e-3, "the velocity is a decaying sum, not an average of the gradients"

# %%
hidden = cfg.pick(smoke=128, small=128, full=256)
num_epochs_mlp = cfg.pick(smoke=3, small=30, full=40)

torch.manual_seed(cfg.seed)
model = nn.Sequential(
    nn.Linear(64, hidden),   # (B, 64) -> (B, hidden)
    nn.ReLU(),
    nn.Linear(hidden, 10),   # (B, hidden) -> (B, 10) logits
).to(device)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
print(model, f"\nparameters: {sum(p.numel() for p in model.parameters()):,}")

history_mlp = dlcourse.fit(model, optimizer, train_loader, val_loader, num_epochs=num_epochs_mlp,
                           progress=progress)
print(f"{num_epochs_mlp} epochs in {sum(history_mlp['seconds']):.1f} s on {device}")
dlcourse.viz.plot_history(history_mlp, title="MLP on digits")

# %%
test_scores = dlcourse.evaluate(model, test_loader)
test_acc = test_scores["acc"]
print(f"MLP, test: loss {test_scores['loss']:.3f}, accuracy {test_acc:.1%} "
      f"(softmax regression: {softmax_test['acc']:.1%}, chance: 10%)")
assert test_acc >= cfg.pick(smoke=0.75, small=0.95, full=0.95), f"test accuracy {test_acc:.1%} is too low"

# %% [markdown]
# ## 7. Look at the predictions
# Numbers summarise; pictures show *what* goes wrong. `dlcourse.predict` returns the predicted class and the true
# label of every test example. Below, the mistakes come first (red titles: prediction, then the true label in
# brackets), followed by correct ones.

# %%
preds, labels = dlcourse.predict(model, test_loader)   # (N_test,), (N_test,)
X_test = splits.test.tensors[0]                         # (N_test, 64)
wrong = (preds != labels).nonzero().flatten()
right = (preds == labels).nonzero().flatten()
print(f"{len(wrong)} mistakes out of {len(labels)} test digits")
assert len(wrong) + len(right) == len(labels) == len(X_test)
show = torch.cat([wrong, right])[:24]
dlcourse.viz.image_grid(X_test[show].reshape(-1, 8, 8), labels=labels[show], preds=preds[show],
                        classes=splits.classes)

# %% [markdown]
# ## 8. Explore the learning rate
# The learning rate `lr` is the most important setting of the loop. The explorer below retrains softmax
# regression from zero weights with *full-batch* gradient descent (every step uses the whole training set, so
# the curve is not noisy) for a fixed number of steps, and plots the training loss on a log scale.
#
# Try it: a tiny `lr` barely moves from $\log 10$; a moderate one drops smoothly; a very large one jumps far
# above the starting loss before it settles, because each step overshoots the minimum.

# %%
num_steps = 50   # the same at every scale: one retrain takes a fraction of a second


def lr_curve(lr: float) -> list[float]:
    """Training losses of softmax regression trained by full-batch gradient descent from zero weights."""
    W = torch.zeros(64, 10, device=device, requires_grad=True)
    b = torch.zeros(10, device=device, requires_grad=True)
    losses = []
    for _ in range(num_steps):
        loss = cross_entropy(X_train @ W + b, y_train)
        loss.backward()
        with torch.no_grad():
            W -= lr * W.grad
            b -= lr * b.grad
        W.grad.zero_()
        b.grad.zero_()
        losses.append(loss.item())
    return losses


def show_lr(lr: float) -> None:
    """Retrain with this lr and display the loss curve (time measured on this machine)."""
    t0 = time.perf_counter()
    losses = lr_curve(lr)
    ms = 1000 * (time.perf_counter() - t0)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(range(1, num_steps + 1), losses)
    ax.axhline(losses[0], color="grey", linestyle=":", label="starting loss")
    ax.set(yscale="log", ylim=(0.05, 300), xlabel="step", ylabel="training loss",
           title=f"lr = {lr:.3g}: final loss {losses[-1]:.3f} (retrained in {ms:.0f} ms)")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    plt.close(fig)
    display(fig)


# The claims above, checked: a tiny lr hardly learns, a moderate one does.
assert lr_curve(1e-3)[-1] > 2.2 and lr_curve(1.0)[-1] < 0.6

# %% [markdown]
# Drag the slider: the model retrains when you release it, and the plot under the slider follows.

# %%
lr_slider = widgets.FloatLogSlider(value=1.0, base=10, min=-3, max=2, step=0.1, description="lr",
                                   continuous_update=False)
display(widgets.interactive(show_lr, lr=lr_slider))

# %% [markdown]
# ## Summary
# - Autograd records operations on tensors with `requires_grad=True`; `.backward()` fills `.grad` by the chain
#   rule, and *adds* to what is there. Hand-derived gradients agree with it (logistic regression:
#   $\nabla_w L = X^\top(p - y)/N$).
# - A training loop is forward, loss, backward, update under `torch.no_grad()`, zero the gradients.
# - Softmax plus cross-entropy must be computed stably (subtract the row maximum); `F.cross_entropy` does this
#   from logits.
# - `nn.Linear`, `F.cross_entropy` and `torch.optim.SGD` are the same computations packaged; from the same start
#   they retrace the from-scratch run.
# - `dlcourse.fit` runs the loop with validation and returns a `History`; `dlcourse.evaluate` scores the test set
#   once at the end.
# - Trained long enough (`small` and `full`), a one-hidden-layer MLP beats the linear model on digits.
# - The learning rate decides whether training crawls, converges or overshoots.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **Gradient of softmax cross-entropy.** Show by hand that for $L = $ `cross_entropy(z, y)` the gradient with
#    respect to the logits is $(\mathrm{softmax}(z) - \mathrm{onehot}(y)) / N$. Check it against autograd with
#    `torch.allclose`, then write the gradients of `W` and `b` and train section 3's model without `.backward()`.
# 2. **Forget to zero.** Remove the two `.grad.zero_()` lines from the loop in section 3. What happens to the loss,
#    and why? (Section 2 has the hint.)
# 3. **Sum or mean.** Make `cross_entropy` return the sum over the batch instead of the mean. Which `lr` gives
#    back the same training run? Why do libraries default to the mean?
# 4. **Bigger, deeper, different.** Change `hidden`, add a second hidden layer, or replace SGD by
#    `torch.optim.Adam(model.parameters(), lr=1e-3)`. Compare the validation curves (never the test set) and the
#    time per epoch measured by `history_mlp["seconds"]`.
# 5. **What gets confused?** From `preds` and `labels`, build the 10×10 confusion matrix (rows: true class,
#    columns: predicted class). Which pairs of digits does the MLP confuse most?
# 6. **Learning-rate range.** With the explorer, find the largest `lr` for which the loss never rises above its
#    starting value. Does the same `lr` work for the minibatch loop of section 3?
