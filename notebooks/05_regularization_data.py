# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 05 · Regularisation and data pipelines
#
# A model with enough parameters can memorise a small training set and still fail on new data. This notebook
# first makes that failure visible, then tries the usual remedies one at a time and measures each on the same
# task: weight decay, dropout, label smoothing, early stopping, data augmentation, mixup and CutMix. It ends with
# the data side of training: class imbalance, and how fast a `DataLoader` can feed a model on this machine.
#
# **Learning goals**
# - Read overfitting from training and validation curves, and see what more data does to it.
# - Write weight decay as an L2 penalty and as AdamW's decoupled shrinkage, and match `torch.optim` exactly.
# - Write dropout from scratch (train and eval behaviour) and check it against `nn.Dropout`'s statistics.
# - Write label-smoothed cross-entropy and match `F.cross_entropy(label_smoothing=...)`.
# - Stop training early with a callback for `dlcourse.fit` that restores the best weights.
# - Augment images per item with `torchvision.transforms.v2`; mix images and labels with mixup and CutMix.
# - Handle class imbalance with a weighted loss and with a weighted sampler, and know how the two differ.
# - Measure `DataLoader` throughput for `num_workers`, `pin_memory` and `persistent_workers`, with worker
#   processes started safely (never `fork` after CUDA) from a Dataset class that lives in a module.
#
# **Prerequisites:** notebook 01 (training loop, `dlcourse.fit`, cross-entropy); a convolutional network as a
# black box (`dlcourse.models.SmallCNN`).
#
# **Time:** seconds at `smoke`; a few minutes at `small` on a laptop CPU; at `full` the same experiments run
# longer on a GPU, and the augmentation experiments of sections 6 and 7 use real photos (Fashion-MNIST, about
# 30 MB, downloaded once into a cache; `DLCOURSE_OFFLINE=1` keeps the offline shapes). The last cell prints how
# long this run took on your machine.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import copy
import inspect
import multiprocessing
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset, WeightedRandomSampler, default_collate
from torchvision.transforms import v2

import dlcourse
from dlcourse.data import Augmented

cfg = dlcourse.setup(seed=0)
device = cfg.device
t_start = time.perf_counter()

# %% [markdown]
# ## 1. Overfitting made visible
# Take the digits again, but train on only 50 of the 1257 training images (about five per class) and validate
# on the usual 270. The MLP (64 → 256 → 10) has hundreds of parameters per training example: it can fit every
# training label exactly, and it will. `train_mlp` below is the one training recipe for sections 1 to 5; only
# the regulariser changes. It returns the model and its `History`.

# %%
splits = dlcourse.data.digits(flatten=True, seed=cfg.seed)     # X (N, 64) in [0, 1], y (N,)
n_tiny = 50
tiny = Subset(splits.train, range(n_tiny))
lr = 1e-2
batch_size = 25
num_epochs = cfg.pick(smoke=20, small=100, full=200)
_, val_loader = dlcourse.data.make_loaders(tiny, splits.val, batch_size=batch_size)


def train_mlp(train_set, *, dropout: float = 0.0, weight_decay: float = 0.0, loss_fn=F.cross_entropy,
              num_epochs: int = num_epochs, callbacks=(), seed: int = cfg.seed):
    """An MLP 64 -> 256 -> 10 trained with AdamW on ``train_set`` and validated on the digits' val split."""
    torch.manual_seed(seed)
    model = dlcourse.models.mlp(64, [256], 10, dropout=dropout).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)  # AdamW's default is 0.01
    train_loader, val_loader = dlcourse.data.make_loaders(train_set, splits.val, batch_size=batch_size, seed=seed)
    history = dlcourse.fit(model, optimizer, train_loader, val_loader, num_epochs=num_epochs, loss_fn=loss_fn,
                           callbacks=callbacks, progress=False)
    return model, history


model_base, history_base = train_mlp(tiny)
gap = history_base.last["train_acc"] - history_base.last["val_acc"]
best_epoch = min(range(len(history_base)), key=lambda i: history_base["val_loss"][i]) + 1
n_params = dlcourse.models.count_parameters(model_base)
print(f"{n_params:,} parameters, {n_tiny} training images, {num_epochs} epochs: "
      f"train accuracy {history_base.last['train_acc']:.1%}, "
      f"val accuracy {history_base.last['val_acc']:.1%} (gap {gap:.1%}); "
      f"val loss lowest at epoch {best_epoch}, {min(history_base['val_loss']):.3f} -> "
      f"{history_base.last['val_loss']:.3f} at the end")
assert history_base.last["train_acc"] > 0.95 and gap > 0.1, "the MLP should memorise the 50 images"
assert history_base.last["val_loss"] > 1.1 * min(history_base["val_loss"]), "val loss should rise again"
dlcourse.viz.plot_history(history_base, title=f"MLP on {n_tiny} digits: memorised, not learned")

# %% [markdown]
# The training loss goes to almost zero; the validation loss falls for a few epochs and then **rises**, while
# validation accuracy stalls. The rising loss with a flat accuracy means the model grows ever more confident,
# including on the validation images it gets wrong. That is overfitting: what the model learns after the
# turning point is specific to the 50 training images.
#
# The most reliable remedy is more data. Same model, same recipe, more training images:

# %%
sizes = [n_tiny, 200, len(splits.train)]
rows = []
for n in sizes:
    _, h = train_mlp(Subset(splits.train, range(n)))
    rows.append((n, h.last["train_acc"], h.last["val_acc"]))
print(f"{'train images':>12} | {'train acc':>9} | {'val acc':>7} | {'gap':>6}")
for n, train_acc, val_acc in rows:
    print(f"{n:>12} | {train_acc:>9.1%} | {val_acc:>7.1%} | {train_acc - val_acc:>6.1%}")
assert rows[-1][1] - rows[-1][2] < rows[0][1] - rows[0][2], "more data should shrink the gap"

# %% [markdown]
# More data is not always available. Regularisation makes the model prefer simpler fits of the data it has.
# The next sections add one regulariser at a time to the 50-image run, and measure.
#
# ## 2. Weight decay
# **As a penalty.** Add $\frac{\lambda}{2}\lVert w\rVert^2$ to the loss. Its gradient is $\lambda w$, so a
# gradient-descent step becomes $w \leftarrow w - \text{lr}\,(\nabla L + \lambda w)$: every step also shrinks
# each weight towards zero by a fraction $\text{lr}\cdot\lambda$. Large weights survive only where the data
# keep asking for them. `torch.optim.SGD(weight_decay=λ)` adds $\lambda w$ to the gradient; check that it is
# exactly our penalty:

# %%
lam = 0.1
gen = torch.Generator().manual_seed(cfg.seed)
X, y = torch.randn(32, 64, generator=gen), torch.randint(0, 10, (32,), generator=gen)   # (32, 64), (32,)
torch.manual_seed(cfg.seed)
model_penalty = nn.Linear(64, 10)
model_sgd_wd = copy.deepcopy(model_penalty)
opt_penalty = torch.optim.SGD(model_penalty.parameters(), lr=0.1)
opt_sgd_wd = torch.optim.SGD(model_sgd_wd.parameters(), lr=0.1, weight_decay=lam)
for step in range(5):
    penalty = sum(p.pow(2).sum() for p in model_penalty.parameters())              # ||w||^2, biases included
    loss = F.cross_entropy(model_penalty(X), y) + lam / 2 * penalty
    opt_penalty.zero_grad()
    loss.backward()
    opt_penalty.step()

    loss = F.cross_entropy(model_sgd_wd(X), y)
    opt_sgd_wd.zero_grad()
    loss.backward()
    opt_sgd_wd.step()
for p, q in zip(model_penalty.parameters(), model_sgd_wd.parameters()):
    assert torch.allclose(p, q, atol=1e-6)
print("5 SGD steps: loss + (λ/2)·||w||² equals SGD(weight_decay=λ)")

# %% [markdown]
# That shrinkage by exactly $\text{lr}\cdot\lambda$ per step holds for plain SGD. With **momentum**, the
# optimiser steps along a velocity, a decaying sum of past gradients: `SGD(weight_decay=λ, momentum=0.9)` still
# adds $\lambda w$ to the gradient, so it still equals the penalty in the loss, but now each step's $\lambda w$
# stays in the velocity and keeps shrinking the weights on later steps. Shrinking the weights directly,
# $w \leftarrow (1 - \text{lr}\cdot\lambda)\,w$ before each step (*decoupled* decay, next paragraph), is then a
# different update. Measured over 20 steps, without and with momentum:

# %%
def sgd_weights(decay: str, momentum: float, num_steps: int = 20) -> list[torch.Tensor]:
    """The parameters of the seeded nn.Linear(64, 10) after ``num_steps`` SGD steps (lr 0.1) on (X, y), with λ
    applied as a "penalty" in the loss, as SGD's "weight_decay", or "decoupled" (w <- (1 - lr·λ) w, then the step)."""
    torch.manual_seed(cfg.seed)
    model = nn.Linear(64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum,
                          weight_decay=lam if decay == "weight_decay" else 0.0)
    for step in range(num_steps):
        loss = F.cross_entropy(model(X), y)
        if decay == "penalty":
            loss = loss + lam / 2 * sum(p.pow(2).sum() for p in model.parameters())
        opt.zero_grad()
        loss.backward()
        if decay == "decoupled":
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1 - 0.1 * lam)
        opt.step()
    return [p.detach() for p in model.parameters()]


def largest_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a, b))


decay_differences = {}
for momentum in (0.0, 0.9):
    runs = {decay: sgd_weights(decay, momentum) for decay in ("penalty", "weight_decay", "decoupled")}
    decay_differences[momentum] = (largest_difference(runs["penalty"], runs["weight_decay"]),
                                   largest_difference(runs["penalty"], runs["decoupled"]))
    print(f"momentum {momentum}: penalty vs weight_decay {decay_differences[momentum][0]:.1e}, "
          f"penalty vs decoupled {decay_differences[momentum][1]:.1e} (largest |difference| of a weight)")
assert max(decay_differences[0.0]) < 1e-6, "plain SGD: penalty, weight_decay and decoupled decay agree"
assert decay_differences[0.9][0] < 1e-6, "with momentum, SGD's weight_decay is still the penalty"
assert decay_differences[0.9][1] > 1e-3, "with momentum, decoupled decay is a different update"

# %% [markdown]
# **Decoupled (AdamW).** Adam divides each gradient by a running estimate of its size. A penalty gradient
# $\lambda w$ gets divided too, so weights with large gradients are barely shrunk: with Adam, "L2 penalty" and
# "weight decay" are no longer the same thing. AdamW applies the shrinkage directly,
# $w \leftarrow w - \text{lr}\cdot\lambda\, w$, and then takes the Adam step from the loss gradient alone.
# Check that decomposition against `torch.optim.AdamW`:

# %%
torch.manual_seed(cfg.seed)
model_adamw = nn.Linear(64, 10)
model_manual = copy.deepcopy(model_adamw)
opt_adamw = torch.optim.AdamW(model_adamw.parameters(), lr=0.01, weight_decay=lam)
opt_adam = torch.optim.Adam(model_manual.parameters(), lr=0.01)                  # no decay of its own
for step in range(5):
    for model, opt in ((model_adamw, opt_adamw), (model_manual, opt_adam)):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
    with torch.no_grad():
        for p in model_manual.parameters():
            p.mul_(1 - 0.01 * lam)                      # the decoupled shrinkage: w <- w - lr * λ * w
    opt_adamw.step()
    opt_adam.step()
for p, q in zip(model_adamw.parameters(), model_manual.parameters()):
    assert torch.allclose(p, q, atol=1e-6)
print("5 steps: shrink by (1 - lr·λ) then Adam equals AdamW(weight_decay=λ)")

# %% [markdown]
# Now on the 50 digits. `train_mlp` uses AdamW, so `weight_decay` is the decoupled kind. We record the weights'
# norm $\lVert w\rVert$ and the final validation numbers. `train_mlp` decays every parameter, biases included;
# many recipes exclude biases and normalisation parameters by giving them a parameter group of their own with
# `weight_decay=0` (notebook 04, section 9).

# %%
def weight_norm(model: nn.Module) -> float:
    return torch.sqrt(sum(p.detach().pow(2).sum() for p in model.parameters())).item()


results = {"baseline": (model_base, history_base)}   # name -> (model, history); compared in section 4
decays = [0.0, 0.3, 3.0]
decay_runs = {wd: (model_base, history_base) if wd == 0 else train_mlp(tiny, weight_decay=wd) for wd in decays}
norms = [weight_norm(model) for model, _ in decay_runs.values()]
print(f"{'weight_decay':>12} | {'||w||':>6} | {'train acc':>9} | {'val acc':>7} | {'val loss':>8}")
for (wd, (model, h)), norm in zip(decay_runs.items(), norms):
    print(f"{wd:>12g} | {norm:>6.2f} | {h.last['train_acc']:>9.1%} | {h.last['val_acc']:>7.1%} | "
          f"{h.last['val_loss']:>8.3f}")
results[f"weight decay {decays[1]:g}"] = decay_runs[decays[1]]
assert norms[0] > norms[1] > norms[2], "stronger decay should give smaller weights"

# %% [markdown]
# ## 3. Dropout
# During training, dropout sets each activation to zero with probability $p$ and multiplies the survivors by
# $1/(1-p)$, so the expected value of every unit stays what it was. No unit can rely on one particular other
# unit being present, which discourages co-adapted, memorising features. At evaluation time dropout does
# nothing: the full network is used, and thanks to the rescaling its activations have the right size.
#
# A module knows which phase it is in through `self.training`, which `model.train()` and `model.eval()` set for
# every submodule (`dlcourse.fit` and `dlcourse.evaluate` call them for you).

# %%
def dropout(X: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Zero each entry with probability p and scale the rest by 1/(1-p) when training; identity otherwise."""
    if not training or p == 0.0:
        return X
    if p == 1.0:
        return torch.zeros_like(X)
    keep = (torch.rand_like(X) >= p).to(X.dtype)     # (same shape as X): 1 with probability 1 - p
    return X * keep / (1 - p)


class Dropout(nn.Module):
    """Our dropout as a layer, switched by model.train() / model.eval()."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return dropout(X, self.p, self.training)


# Random masks cannot match bit for bit, so compare the statistics on a million entries.
X = torch.rand(1000, 1000) + 0.5                       # (1000, 1000), values in [0.5, 1.5), mean about 1
p = 0.3
torch.manual_seed(cfg.seed)
ours, torchs = Dropout(p)(X), nn.Dropout(p)(X)
print(f"{'':>11} | {'zeros':>6} | {'mean':>6} | kept entries == X / (1 - p)")
for name, out in (("ours", ours), ("nn.Dropout", torchs)):
    kept = out != 0
    print(f"{name:>11} | {(~kept).float().mean():>6.3f} | {out.mean():>6.3f} | "
          f"{torch.allclose(out[kept], X[kept] / (1 - p))}")
    assert abs((~kept).float().mean().item() - p) < 0.005          # a fraction p of zeros
    assert abs(out.mean().item() - X.mean().item()) < 0.01         # the mean is preserved
    assert torch.allclose(out[kept], X[kept] / (1 - p))            # survivors are rescaled
print(f"{'input':>11} | {0:>6.3f} | {X.mean():>6.3f} |")
assert torch.equal(Dropout(p).eval()(X), X) and torch.equal(nn.Dropout(p).eval()(X), X)   # eval: identity

# %% [markdown]
# In train mode, two forward passes of the same input differ; in eval mode they are identical. Forgetting
# `model.eval()` before measuring a model with dropout gives noisy, pessimistic numbers.

# %%
model_do = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), Dropout(0.5), nn.Linear(256, 10))
X = splits.val.tensors[0][:8]                          # (8, 64)
model_do.train()
print("train mode, same input twice, outputs equal:", torch.equal(model_do(X), model_do(X)))
model_do.eval()
print("eval mode,  same input twice, outputs equal:", torch.equal(model_do(X), model_do(X)))
assert torch.equal(model_do(X), model_do(X))

# %% [markdown]
# Train the 50-digit MLP with dropout after the hidden layer (`dlcourse.models.mlp(dropout=...)` puts an
# `nn.Dropout` there). The training loss `fit` reports is measured with dropout on, so it is higher: the model
# has a harder time memorising.

# %%
results["dropout 0.5"] = model_drop, history_drop = train_mlp(tiny, dropout=0.5)
print(f"final train loss: without dropout {history_base.last['train_loss']:.4f}, "
      f"with dropout {history_drop.last['train_loss']:.4f}")
assert history_drop.last["train_loss"] > history_base.last["train_loss"]

# %% [markdown]
# ## 4. Label smoothing
# Cross-entropy with one-hot targets is lowest when the correct logit is infinitely larger than the others, so
# on separable training data it keeps pushing the logits apart: the overconfidence we saw in section 1. Label
# smoothing replaces the one-hot target of an example with class $y$ by a mixture with the uniform distribution
# over the $C$ classes:
# $$q_k = (1 - \varepsilon)\,[k = y] + \frac{\varepsilon}{C}, \qquad L = -\sum_k q_k \log \hat p_k .$$
# The true class gets $1 - \varepsilon + \varepsilon / C$, every other class $\varepsilon / C$.

# %%
def label_smoothed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Mean over the batch of -sum_k q_k log softmax(logits)_k, with q = (1 - eps) one_hot(y) + eps / C."""
    C = logits.shape[1]
    log_p = torch.log_softmax(logits, dim=1)                          # (N, C)
    q = (1 - eps) * F.one_hot(y, C).to(logits.dtype) + eps / C        # (N, C), each row sums to 1
    return -(q * log_p).sum(dim=1).mean()


gen = torch.Generator().manual_seed(cfg.seed)
logits = 3 * torch.randn(16, 10, generator=gen)                # (16, 10)
labels = torch.randint(0, 10, (16,), generator=gen)            # (16,)
for eps in (0.0, 0.1, 0.3):
    ours = label_smoothed_cross_entropy(logits, labels, eps)
    torchs = F.cross_entropy(logits, labels, label_smoothing=eps)
    print(f"eps = {eps}: ours {ours.item():.6f}, F.cross_entropy(label_smoothing=eps) {torchs.item():.6f}")
    assert torch.allclose(ours, torchs, atol=1e-6)

# %% [markdown]
# The smoothed loss has a finite minimiser: it is lowest when $\hat p = q$, i.e. logits equal to $\log q$ (up to
# a constant), and its value there is the entropy of $q$, not zero. The model is rewarded for being right, not
# for being infinitely sure.

# %%
eps, C = 0.1, 10
q = (1 - eps) * F.one_hot(labels, C).float() + eps / C     # (16, 10)
at_optimum = label_smoothed_cross_entropy(q.log(), labels, eps)
entropy = -(q * q.log()).sum(dim=1).mean()
print(f"loss at logits = log q: {at_optimum.item():.4f}; entropy of q: {entropy.item():.4f}")
assert torch.allclose(at_optimum, entropy, atol=1e-6)
assert label_smoothed_cross_entropy(100 * F.one_hot(labels, C).float(), labels, eps) > at_optimum  # too sure

# %% [markdown]
# Train with $\varepsilon = 0.1$ and compare the confidence (mean of the largest predicted probability) on the
# validation images. The validation loss that `fit` records now includes the smoothing, so for a fair comparison
# the table below recomputes the plain cross-entropy with `dlcourse.evaluate`.

# %%
eps = 0.1
results["label smoothing 0.1"] = train_mlp(
    tiny, loss_fn=lambda y_hat, y: F.cross_entropy(y_hat, y, label_smoothing=eps))


@torch.no_grad()
def confidence(model: nn.Module) -> float:
    """Mean over the validation images of the largest softmax probability."""
    model.eval()
    return torch.softmax(model(splits.val.tensors[0].to(device)), dim=1).max(dim=1).values.mean().item()


print(f"{'':>20} | {'train acc':>9} | {'val acc':>7} | {'val CE':>6} | {'confidence':>10}")
for name, (model, h) in results.items():
    scores = dlcourse.evaluate(model, val_loader)                   # plain cross-entropy, eval mode
    print(f"{name:>20} | {h.last['train_acc']:>9.1%} | {scores['acc']:>7.1%} | {scores['loss']:>6.3f} | "
          f"{confidence(model):>10.3f}")
assert confidence(results["label smoothing 0.1"][0]) < confidence(model_base)

# %% [markdown]
# Before reading anything into that table, measure how much the baseline alone moves when only the seed changes
# (the initial weights and the batch order):

# %%
seed_accs = [dlcourse.evaluate(train_mlp(tiny, seed=s)[0], val_loader)["acc"] for s in range(1, 4)]
seed_accs.append(dlcourse.evaluate(model_base, val_loader)["acc"])
print(f"baseline val accuracy over {len(seed_accs)} seeds: {min(seed_accs):.1%} to {max(seed_accs):.1%} "
      f"(one image of {len(splits.val)} is {1 / len(splits.val):.2%})")

# %% [markdown]
# A difference between two rows of the table that is smaller than this spread is not evidence of anything. What
# each regulariser reliably does is what we asserted: weight decay shrinks the weights, dropout makes memorising
# harder, label smoothing caps the confidence. Whether that improves validation accuracy is an empirical
# question for each task, answered on the validation set over several seeds.
#
# ## 5. Early stopping
# In section 1 the validation loss was lowest after a few epochs. Early stopping keeps the weights of that
# epoch: after every epoch, compare the validation loss with the best so far; if it improved by more than
# `min_delta`, remember a copy of the weights; if it has not improved for `patience` epochs, stop and put the
# remembered weights back.
#
# `dlcourse.fit` calls each of its `callbacks` after every epoch with the `History` so far (`history.last` is
# the latest record) and stops when one returns `True`. Two details matter in the callback:
# - `model.state_dict()` returns the model's *live* tensors; they keep changing as training goes on. The copy
#   must be a real one: `copy.deepcopy(model.state_dict())`.
# - If the epoch budget runs out before the patience does, the callback never fires; call `restore()` yourself.

# %%
class EarlyStopping:
    """A dlcourse.fit callback: stop when val_loss has not improved by more than ``min_delta`` for ``patience``
    epochs, and load the best epoch's weights back into ``model``."""

    def __init__(self, model: nn.Module, patience: int = 5, min_delta: float = 0.0) -> None:
        self.model, self.patience, self.min_delta = model, patience, min_delta
        self.best_loss = float("inf")
        self.best_epoch = 0
        self.best_state = None
        self.bad_epochs = 0                      # epochs since the last improvement

    def __call__(self, history: dlcourse.History) -> bool:
        loss = history.last["val_loss"]
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = loss, history.last["epoch"], 0
            self.best_state = copy.deepcopy(self.model.state_dict())   # a copy, not the live tensors
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.restore()
            return True
        return False

    def restore(self) -> None:
        """Load the best weights seen so far (if any) into the model."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


# %% [markdown]
# The callback needs the model before `fit` starts, so build model and optimiser here instead of in `train_mlp`.
# The epoch budget is generous on purpose: early stopping decides when to end.

# %%
budget = cfg.pick(smoke=100, small=200, full=300)
torch.manual_seed(cfg.seed)
model = dlcourse.models.mlp(64, [256], 10).to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
train_loader, val_loader = dlcourse.data.make_loaders(tiny, splits.val, batch_size=batch_size, seed=cfg.seed)
stopper = EarlyStopping(model, patience=10, min_delta=1e-3)
history_es = dlcourse.fit(model, optimizer, train_loader, val_loader, num_epochs=budget, callbacks=[stopper],
                          progress=False)
after = dlcourse.evaluate(model, val_loader)
print(f"stopped after {len(history_es)} of {budget} epochs; best val loss {stopper.best_loss:.4f} at epoch "
      f"{stopper.best_epoch}; the restored model scores val loss {after['loss']:.4f}, "
      f"accuracy {after['acc']:.1%}")
assert len(history_es) < budget, "training should have stopped early"
assert abs(after["loss"] - stopper.best_loss) < 1e-5, "the best weights should be back in the model"

# %%
fig = dlcourse.viz.plot_history(history_es, title="early stopping (dotted: the epoch whose weights we keep)")
for ax in fig.axes:
    ax.axvline(stopper.best_epoch, color="grey", linestyle=":")
fig

# %% [markdown]
# Choosing the epoch by validation loss is a decision tuned on the validation set, like any other setting. The
# test set stays untouched for the final number.
#
# ## 6. Data augmentation
# Augmentation creates new training examples from old ones by transformations that cannot change the label.
# Which transformations qualify depends on the task:
# - **shapes** (circle, ring, square, triangle, cross, star; the offline data of `smoke` and `small` scale): a
#   flipped, rotated, shifted, rescaled or recoloured shape is the same shape.
# - **Fashion-MNIST** (grey 28×28 photos of clothes in ten classes; the real data of `full` scale, downloaded
#   once with a checksum and then read from a cache): a mirrored shirt is still a shirt, and a slightly shifted,
#   tilted or rescaled one too; but clothes are photographed upright, so an upside-down trouser is an image the
#   model will never be asked about, and flips along the other axis or large rotations only waste capacity.
# - **digits**: even a flip or a half turn would change some labels (a 6 turned upside down is a 9).
#
# `torchvision.transforms.v2` applies such transformations to a tensor image (C, H, W). We apply them **per
# item**, inside `__getitem__`, so every epoch sees new random versions of each image.

# %%
n_images = cfg.pick(smoke=256, small=300, full=500)          # training images: few, so that models overfit
n_val_images = cfg.pick(smoke=128, small=500, full=2000)
images = dlcourse.data.real_or_offline(
    cfg, "fashion-mnist", n_train=n_images, n_val=n_val_images, n_test=10,
    offline=lambda: dlcourse.data.shapes(n_train=n_images, n_val=n_val_images, n_test=10, seed=cfg.seed))
print(images)

label_preserving = {
    "shapes": v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomAffine(degrees=180, translate=(0.1, 0.1), scale=(0.8, 1.15)),  # fills with black, near the background
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05),
    ]),
    "Fashion-MNIST": v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),    # the background is black too
    ]),
}
augment = label_preserving[images.name]

# %% [markdown]
# The wrapper that applies a transform on every read is a small `Dataset`. It lives in `dlcourse.data` rather
# than here, for a reason section 9 explains (worker processes must be able to import it). Its whole source:

# %%
print(inspect.getsource(Augmented))

# %%
augmented = Augmented(images.train, augment)
torch.manual_seed(cfg.seed)
n_show, n_views = 4, 7
grid, grid_labels = [], []
for i in range(n_show):
    X, y = images.train[i]
    views = [augmented[i][0] for _ in range(n_views)]
    grid += [X] + views
    grid_labels += [y] * (n_views + 1)
    assert all(v.shape == X.shape and v.dtype == X.dtype for v in views)
    assert all(not torch.equal(v, X) for v in views) and not torch.equal(views[0], views[1])
print("each row: the original image, then", n_views, "augmented views of it")
dlcourse.viz.image_grid(torch.stack(grid), labels=grid_labels, classes=images.classes, ncols=n_views + 1)

# %% [markdown]
# Train `SmallCNN` on the same few images with and without augmentation. The learning rate follows a cosine
# schedule down to zero, so that the last epoch's numbers are settled rather than a snapshot of a noisy run.
# `train_cnn` accepts a `collate_fn` for the next section.

# %%
num_epochs_cnn = cfg.pick(smoke=2, small=40, full=100)
cnn_val_loader = DataLoader(images.val, batch_size=256)
in_channels = images.train[0][0].shape[0]                      # 3 for shapes, 1 for Fashion-MNIST


def train_cnn(train_set, *, collate_fn=None, seed: int = cfg.seed):
    """SmallCNN trained with AdamW on ``train_set``, validated on the val split of ``images``."""
    torch.manual_seed(seed)
    model = dlcourse.models.SmallCNN(in_channels=in_channels, num_classes=len(images.classes)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_epochs_cnn)
    loader = DataLoader(train_set, batch_size=32, shuffle=True, collate_fn=collate_fn,
                        generator=torch.Generator().manual_seed(seed))
    history = dlcourse.fit(model, optimizer, loader, cnn_val_loader, num_epochs=num_epochs_cnn,
                           scheduler=scheduler, progress=cfg.pick(smoke=False, small=True, full=True))
    return model, history


cnn_results = {"plain": train_cnn(images.train), "augmented": train_cnn(augmented)}
for name, (model, h) in cnn_results.items():
    print(f"{name:>10}: train loss {h['train_loss'][0]:.3f} -> {h.last['train_loss']:.3f}, "
          f"val accuracy {h.last['val_acc']:.1%}")
assert cnn_results["plain"][1].last["train_loss"] < cnn_results["plain"][1]["train_loss"][0]

# %% [markdown]
# ## 7. Mixup and CutMix
# These two go further and make examples *between* classes. **Mixup** takes two examples and blends both the
# images and the one-hot labels with the same weight $\lambda \sim \mathrm{Beta}(\alpha, \alpha)$:
# $$\tilde X = \lambda X_i + (1 - \lambda) X_j, \qquad \tilde y = \lambda\, \mathrm{onehot}(y_i) +
# (1 - \lambda)\, \mathrm{onehot}(y_j).$$
# The model is trained to output $\tilde y$, a soft label; `F.cross_entropy` accepts class probabilities as the
# target. Within a batch, each example is paired with another one of the same batch (`perm`).

# %%
def mixup(X: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float = 0.4, *, lam: float | None = None,
          perm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend each example with a partner from the same batch. X: (N, ...), y: (N,) int64.

    Returns X_mix (N, ...) and soft labels y_mix (N, num_classes). ``lam`` (else drawn from Beta(alpha, alpha))
    and ``perm`` (else a random permutation) can be given, e.g. to compare with another implementation.
    """
    if lam is None:
        lam = torch.distributions.Beta(alpha, alpha).sample().item()
    if perm is None:
        perm = torch.randperm(len(X), device=X.device)
    y_onehot = F.one_hot(y, num_classes).to(X.dtype)                    # (N, C)
    return lam * X + (1 - lam) * X[perm], lam * y_onehot + (1 - lam) * y_onehot[perm]


# %% [markdown]
# `torchvision.transforms.v2.MixUp` implements the same idea for a batch: it draws $\lambda$ from
# $\mathrm{Beta}(\alpha, \alpha)$ and pairs example $i$ with example $i - 1$ (the batch rolled by one). We can
# read the $\lambda$ it drew from its soft labels and give ours the same $\lambda$ and pairing:

# %%
X, y = default_collate([images.train[i] for i in range(8)])      # (8, C, H, W), (8,)
C = len(images.classes)
torch.manual_seed(cfg.seed)
X_tv, y_tv = v2.MixUp(alpha=0.4, num_classes=C)(X, y)
i = next(i for i in range(len(y)) if y[i] != y[i - 1])           # an example whose partner has another class
lam_tv = y_tv[i, y[i]].item()                                    # its own class keeps weight lambda
X_ours, y_ours = mixup(X, y, C, lam=lam_tv, perm=torch.arange(len(y)).roll(1))
print(f"torchvision drew lambda = {lam_tv:.4f}; ours with the same lambda and pairing: images equal "
      f"{torch.allclose(X_ours, X_tv, atol=1e-6)}, labels equal {torch.allclose(y_ours, y_tv, atol=1e-6)}")
assert torch.allclose(X_ours, X_tv, atol=1e-6) and torch.allclose(y_ours, y_tv, atol=1e-6)

# A soft-label cross-entropy is the same blend of the two hard-label losses (the loss is linear in the target).
logits = torch.randn(8, C, generator=torch.Generator().manual_seed(cfg.seed))
perm = torch.arange(8).roll(1)
soft = F.cross_entropy(logits, y_ours)
blend = lam_tv * F.cross_entropy(logits, y) + (1 - lam_tv) * F.cross_entropy(logits, y[perm])
assert torch.allclose(soft, blend, atol=1e-6)

# %% [markdown]
# **CutMix** pastes a rectangle of the partner image into the image instead of blending everything, and sets the
# label weight to the fraction of pixels that stayed: $\lambda$ = 1 − (box area)/(image area). `v2.CutMix`
# draws the box from $\lambda \sim \mathrm{Beta}(\alpha, \alpha)$ and reports the area-corrected weight in the
# labels. Both rows below come from the same eight images, each paired with its left neighbour.

# %%
torch.manual_seed(cfg.seed)
X_cut, y_cut = v2.CutMix(alpha=1.0, num_classes=C)(X, y)
# To count the pixels each image kept, run the same CutMix (same seed: the box does not depend on the pixels)
# on images tagged by an offset of 10 per image, so a pasted pixel can never equal the one it replaced (two
# untagged images may share pixel values, e.g. a black background).
tags = 10.0 * torch.arange(len(X)).reshape(-1, 1, 1, 1)          # (8, 1, 1, 1)
torch.manual_seed(cfg.seed)
X_cut_tagged, _ = v2.CutMix(alpha=1.0, num_classes=C)(X + tags, y)
kept = (X_cut_tagged == X + tags).all(dim=1).float().mean(dim=(1, 2))   # (8,) fraction of pixels kept
for i in range(len(y)):
    if y[i] != y[i - 1]:
        assert abs(kept[i].item() - y_cut[i, y[i]].item()) < 1e-6, "label weight = fraction of pixels kept"

X_mix, y_mix = mixup(X, y, C, lam=0.6, perm=torch.arange(len(y)).roll(1))   # a clearly visible blend
fig, axes = plt.subplots(2, 8, figsize=(12, 3.6))
for row, (batch, soft_labels, title) in enumerate(((X_mix, y_mix, "mixup, λ = 0.6"), (X_cut, y_cut, "CutMix"))):
    for i, ax in enumerate(axes[row]):
        picture = batch[i].permute(1, 2, 0).clamp(0, 1).numpy()                # (H, W, C)
        ax.imshow(picture[:, :, 0] if picture.shape[2] == 1 else picture, cmap="gray")
        top = soft_labels[i].topk(2)
        ax.set_title("\n".join(f"{images.classes[k]} {w:.2f}" for w, k in zip(top.values, top.indices) if w > 0),
                     fontsize=8)
        ax.axis("off")
    axes[row, 0].text(-0.15, 0.5, title, transform=axes[row, 0].transAxes, rotation=90, va="center")
fig.tight_layout()
plt.close(fig)
fig

# %% [markdown]
# Both act on a whole batch, so they go in the loader's `collate_fn`, which turns a list of items into a batch.
# `fit` then receives soft labels; it computes the loss as usual but records no training accuracy (there is no
# single right class), so compare the validation accuracy.

# %%
cutmix = v2.CutMix(alpha=1.0, num_classes=C)
cnn_results["mixup"] = train_cnn(images.train, collate_fn=lambda batch: mixup(*default_collate(batch), C))
cnn_results["CutMix"] = train_cnn(images.train, collate_fn=lambda batch: cutmix(*default_collate(batch)))

print(f"{'':>10} | {'final val acc':>13} | {'best val acc':>12} | {'final val loss':>14}")
for name, (model, h) in cnn_results.items():
    print(f"{name:>10} | {h.last['val_acc']:>13.1%} | {max(h['val_acc']):>12.1%} | {h.last['val_loss']:>14.3f}")
assert cnn_results["mixup"][1].last["train_acc"] is None          # soft labels: no training accuracy

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, (model, h) in cnn_results.items():
    ax.plot(h["epoch"], h["val_acc"], "-o", markersize=3, label=name)
ax.set(xlabel="epoch", ylabel="val accuracy", title=f"SmallCNN on {n_images} {images.name} images")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.close(fig)
fig

# %% [markdown]
# At `smoke` the runs are far too short to compare; at `small` and `full`, compare the rows, keeping in mind
# that each is one seed. Three things to know when reading them:
# - Augmented and mixed examples are harder to fit, so these models tend to need more epochs before they pull
#   ahead; with a short budget they can even end behind the plain model.
# - CutMix's label weight counts pixels, not objects. Where the object covers a small part of the image, a
#   pasted box may hold only background and still take label weight, or cover the whole shape and leave the
#   label claiming it is there.
# - The two kinds combine: augmentation per item in the `Dataset`, mixing per batch in `collate_fn`
#   (exercise 7).
#
# ## 8. Class imbalance
# Real data sets rarely have equal class counts. Make the digits' training set imbalanced on purpose: keep all
# of class 0 and a shrinking fraction of each later class, down to a few images of class 9. The validation set
# stays balanced, so it measures every class equally.

# %%
X_all, y_all = splits.train.tensors
keep_fraction = 0.04 ** (torch.arange(10) / 9)                   # (10,) 1.0 for class 0 ... 0.04 for class 9
keep = torch.cat([torch.nonzero(y_all == c).flatten()[: max(2, int(keep_fraction[c] * (y_all == c).sum()))]
                  for c in range(10)])
imbalanced = TensorDataset(X_all[keep], y_all[keep])
counts = torch.bincount(y_all[keep], minlength=10)               # (10,) examples per class
print("examples per class:", counts.tolist())

# %% [markdown]
# Two remedies:
# - **Weighted loss.** Multiply example $i$'s loss by a class weight $w_{y_i}$, larger for rare classes. A
#   common choice is $w_c = N / (C\, n_c)$, which makes each class contribute equally in total (scikit-learn
#   calls it "balanced"). Note how `F.cross_entropy(weight=w)` averages: it divides by the sum of the weights
#   in the batch, not by $N$.
# - **Weighted sampler.** Keep the loss, change what the model sees: draw examples with probability
#   proportional to $1 / n_{y_i}$ (with replacement), so every class appears about equally often per epoch.
#   Rare images are then seen many times each, and common ones are skipped more often.

# %%
class_weights = len(keep) / (10 * counts.float())                # (10,) N / (C * n_c)
sklearn_weights = compute_class_weight("balanced", classes=np.arange(10), y=y_all[keep].numpy())
assert torch.allclose(class_weights, torch.tensor(sklearn_weights, dtype=torch.float32))   # scikit-learn agrees


def weighted_cross_entropy(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum_i w[y_i] * (-log p_i[y_i]) / sum_i w[y_i]: F.cross_entropy(weight=...)'s weighted mean."""
    nll = -torch.log_softmax(logits, dim=1)[torch.arange(len(y)), y]   # (N,)
    w = weight[y]                                                       # (N,)
    return (w * nll).sum() / w.sum()


gen = torch.Generator().manual_seed(cfg.seed)
logits, labels = torch.randn(32, 10, generator=gen), torch.randint(0, 10, (32,), generator=gen)
ours, torchs = weighted_cross_entropy(logits, labels, class_weights), F.cross_entropy(logits, labels,
                                                                                     weight=class_weights)
print(f"weighted cross-entropy: ours {ours.item():.6f}, F.cross_entropy(weight=w) {torchs.item():.6f}")
assert torch.allclose(ours, torchs, atol=1e-6)

sample_weights = 1.0 / counts[imbalanced.tensors[1]].double()   # (N,) one weight per example
sampler = WeightedRandomSampler(sample_weights, num_samples=len(imbalanced), replacement=True,
                                generator=torch.Generator().manual_seed(cfg.seed))
drawn = torch.bincount(imbalanced.tensors[1][torch.tensor(list(sampler))], minlength=10)
print("class counts in one epoch drawn by the sampler:", drawn.tolist())
assert drawn.min() > 0.5 * len(imbalanced) / 10, "every class should be drawn about equally often"

# %% [markdown]
# Train the same MLP three ways and measure the **recall** of each class on the validation set (the fraction of
# its images that are recognised). Plain accuracy on a balanced set is the mean recall; the rare classes are
# where the remedies should show.

# %%
num_epochs_imb = cfg.pick(smoke=15, small=40, full=60)


def recall_per_class(model: nn.Module) -> torch.Tensor:
    preds, labels = dlcourse.predict(model, val_loader)
    return torch.stack([(preds[labels == c] == c).float().mean() for c in range(10)])   # (10,)


def train_imbalanced(loader, loss_fn=F.cross_entropy):
    torch.manual_seed(cfg.seed)
    model = dlcourse.models.mlp(64, [256], 10).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dlcourse.fit(model, optimizer, loader, num_epochs=num_epochs_imb, loss_fn=loss_fn, progress=False)
    return recall_per_class(model)


weights_on_device = class_weights.to(device)
plain_loader = DataLoader(imbalanced, batch_size=batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(cfg.seed))
recalls = {
    "plain": train_imbalanced(plain_loader),
    "weighted loss": train_imbalanced(plain_loader,
                                      lambda y_hat, y: F.cross_entropy(y_hat, y, weight=weights_on_device)),
    "weighted sampler": train_imbalanced(DataLoader(imbalanced, batch_size=batch_size, sampler=sampler)),
}
print(f"{'':>16} | {'mean recall':>11} | {'classes 0-4':>11} | {'classes 7-9':>11} | recall per class")
for name, r in recalls.items():
    print(f"{name:>16} | {r.mean():>11.1%} | {r[:5].mean():>11.1%} | {r[7:].mean():>11.1%} | "
          + " ".join(f"{v:.2f}" for v in r.tolist()))
assert recalls["plain"][:5].mean() > recalls["plain"][7:].mean(), "the rare classes should suffer"

# %% [markdown]
# Both remedies aim at the rare classes; the table shows how much they gain there and what, if anything, the
# common classes pay. They are not the same: the weighted loss still sees each rare image once per epoch, with
# a big weight (noisy, large gradient steps), while the sampler shows rare images often with normal weight and
# may skip some common images in an epoch. Neither creates information: with a handful of images of class 9,
# its recall stays limited. Augmenting the rare classes can be combined with either.
#
# ## 9. How fast can the data come?
# A `DataLoader` with `num_workers=0` reads and transforms every item in the training process, between
# training steps. With `num_workers=k`, k worker processes prepare batches in parallel while the model trains.
# Two more options:
# - `pin_memory=True` puts batches in page-locked memory, from which copies to a CUDA GPU are faster and can be
#   asynchronous (`.to(device, non_blocking=True)`). Without a GPU it has nothing to speed up.
# - `persistent_workers=True` keeps the workers alive between epochs instead of starting new ones each epoch.
#
# The shapes with section 6's four random transforms per image make `__getitem__` deliberately costly. We time
# whole epochs, including the copy to `device`, for each setting.
#
# **Workers, start methods, and where the Dataset class lives.** Each worker is a separate process that needs
# the dataset object. How it gets it depends on how the process is started:
# - `fork` (the default on Linux before Python 3.14) copies this whole process. That is unsafe once the process
#   has used CUDA or run a backward pass: the copy inherits a GPU driver state and background threads that do
#   not survive the copy, and a forked worker can hang or crash. In a notebook that has touched the GPU, a
#   forked `DataLoader` worker is exactly that situation.
# - `forkserver` and `spawn` (the default on macOS and Windows) start workers from a fresh process that never
#   used CUDA, and send them the dataset **pickled**. Unpickling imports each object's class by its module and
#   name, so the class must live in an importable `.py` module: a class defined in a notebook cell exists only
#   in this kernel. That is why `Augmented` lives in `dlcourse.data`.
#
# `dlcourse.data.worker_context()` returns the safe start method (`forkserver` where it exists, else `spawn`);
# its fork server imports torch once, so each worker starts in milliseconds instead of importing torch again.
# `Splits.loaders(num_workers=...)` and `dlcourse.data.make_loaders` use it too.

# %%
n_items = cfg.pick(smoke=256, small=1024, full=2048)
loader_batch = 64
epochs_timed = cfg.pick(smoke=2, small=3, full=3)
costly = Augmented(dlcourse.data.shapes(n_train=n_items, n_val=1, n_test=1, seed=1).train,
                   label_preserving["shapes"])
context = dlcourse.data.worker_context()
print("worker start method:", context.get_start_method())


def time_epochs(num_workers: int, pin_memory: bool, persistent_workers: bool) -> list[float]:
    """Seconds per epoch (and per batch count) for one DataLoader setting."""
    loader = DataLoader(costly, batch_size=loader_batch, shuffle=True, num_workers=num_workers,
                        pin_memory=pin_memory, persistent_workers=persistent_workers,
                        multiprocessing_context=context if num_workers > 0 else None)   # never fork
    seconds = []
    for _ in range(epochs_timed):
        start, batches = time.perf_counter(), 0
        for X, y in loader:
            X, y = X.to(device, non_blocking=pin_memory), y.to(device, non_blocking=pin_memory)
            batches += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        assert batches == len(loader)
    del loader                                            # shuts persistent workers down
    return seconds


settings = [(0, False, False), (0, True, False), (1, False, False), (2, False, False), (2, True, False),
            (2, False, True)]
batches_per_epoch = -(-n_items // loader_batch)
print(f"{n_items} images, batch {loader_batch}, {epochs_timed} epochs per setting, device {device}, "
      f"{torch.get_num_threads()} torch threads, {multiprocessing.cpu_count()} CPUs")
print(f"{'num_workers':>11} | {'pin_memory':>10} | {'persistent':>10} | {'epoch 1 (s)':>11} | "
      f"{'later epochs (s)':>16} | {'batches/s':>9}")
measured = 0
for num_workers, pin, persistent in settings:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            seconds = time_epochs(num_workers, pin, persistent)
    except RuntimeError as err:                          # e.g. pinning unsupported on this platform
        print(f"{num_workers:>11} | {pin!s:>10} | skipped: {err}")
        continue
    later = sum(seconds[1:]) / len(seconds[1:])
    rate = batches_per_epoch * len(seconds) / sum(seconds)
    note = "  (pin_memory: no accelerator, ignored)" if pin and any("pin_memory" in str(w.message)
                                                                     for w in caught) else ""
    print(f"{num_workers:>11} | {pin!s:>10} | {persistent!s:>10} | {seconds[0]:>11.3f} | {later:>16.3f} | "
          f"{rate:>9.1f}{note}")
    measured += 1
assert measured >= 4

# %% [markdown]
# How to read the table on your machine:
# - Workers help when `__getitem__` costs more than the training step can hide, and only up to the number of
#   free CPU cores: on a 2-core machine the training process and two workers compete for the same two cores.
# - Starting workers costs time at the beginning of every epoch (see epoch 1 against later epochs);
#   `persistent_workers=True` pays it once. The first row with workers also pays, once, for starting the fork
#   server, which imports torch.
# - `pin_memory` matters only when batches are copied to a CUDA GPU; on a CPU it is ignored with a warning.
# - Each worker runs PyTorch with one thread, while the main process uses `torch.get_num_threads()` threads;
#   on a busy machine, threads competing for cores can make the `num_workers=0` rows slower than you expect.
# - Here the model is absent. In real training, compare the loader's batches/s with the model's steps/s: if the
#   loader is faster, more workers buy nothing.
#
# ## Summary
# - Overfitting shows as a training loss that keeps falling while the validation loss turns upwards; more data
#   shrinks the gap more reliably than anything else.
# - Weight decay shrinks weights every step. `torch.optim.SGD(weight_decay=λ)` is an L2 penalty, with or without
#   momentum; shrinking the weights directly (decoupled) is the same update only for plain SGD, not with momentum.
#   With Adam the penalty is not weight decay either, and AdamW applies the shrinkage directly,
#   $w \leftarrow w - \text{lr}\cdot\lambda\,w$.
# - Dropout zeroes activations with probability $p$ and rescales the rest by $1/(1-p)$ in training, and does
#   nothing in eval mode: always call `model.eval()` before measuring.
# - Label smoothing trains towards $q = (1-\varepsilon)\,\mathrm{onehot} + \varepsilon/C$; its loss has a finite
#   minimum and caps the model's confidence.
# - Early stopping is a callback: track the best validation loss, keep a deep copy of those weights, stop after
#   `patience` epochs without improvement and restore them.
# - Augmentation applies label-preserving random transforms per item (`transforms.v2` in `__getitem__`); mixup
#   and CutMix blend pairs of examples and their labels per batch (in `collate_fn`).
# - Imbalance: a weighted loss ($w_c = N/(C n_c)$, averaged by the weight sum) or a `WeightedRandomSampler`
#   with weights $1/n_{y_i}$; judge with per-class recall, not accuracy alone.
# - `DataLoader` workers parallelise a costly `__getitem__`; measure before you tune, on the machine you train on.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **Seeds decide.** Repeat the comparison table of section 4 with three seeds (`train_mlp(..., seed=s)`).
#    Which differences between regularisers survive? How would you report them?
# 2. **L2 with Adam.** Train the 50-digit MLP with `torch.optim.Adam(weight_decay=λ)` (an L2 penalty) and with
#    `AdamW(weight_decay=λ)` for a few values of λ. Compare the weight norms. Why are they different?
# 3. **Dropout's rescaling.** Remove the division by $1 - p$ from `dropout`. Which statistic in section 3 breaks,
#    and what happens to a trained model's validation accuracy in eval mode?
# 4. **Patience.** Run section 5 with `patience` 2, 10 and 30. At which epochs does training stop, and how do
#    the restored models compare on validation loss and accuracy?
# 5. **A bad augmentation.** Add `v2.RandomErasing(p=1.0, scale=(0.5, 0.7))` to `augment`. Look at the grid:
#    are the labels still right? What happens to validation accuracy?
# 6. **Mixup's α.** Train with α = 0.1, 0.4 and 2.0. Plot a histogram of 1000 draws of λ for each. Which α
#    changes training the most?
# 7. **Both at once.** Train `train_cnn(augmented, collate_fn=...)` with CutMix or mixup in the collate
#    function. Does it beat each alone at `small` scale? Over how many seeds would you trust the answer?
# 8. **More workers.** On a machine with more cores, extend `settings` to 4 and 8 workers. Where does the
#    batches/s curve flatten, and why?
