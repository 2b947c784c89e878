# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 02 · Initialisation and normalisation
#
# A deep network is a long product of layers. If each layer shrinks its input a little, the signal that
# reaches the output is nothing but noise from the biases; if each layer grows it a little, the numbers
# overflow. The same happens to the gradient on its way back. This notebook measures that effect layer by
# layer, derives the weight scales that avoid it (Xavier and He), and then looks at the two architectural
# tools that made very deep networks trainable: residual connections and normalisation layers, each written
# from scratch and checked against PyTorch.
#
# **Learning goals**
# - Derive how the variance of activations changes through a linear layer and a ReLU, and from it the Xavier
#   and He initialisations; explain why all-zero weights cannot work.
# - Measure activation and gradient scales layer by layer in a deep MLP under zero, normal, Xavier, He and
#   PyTorch's default initialisation.
# - Explain why a residual connection keeps the gradient alive, and see a deep plain MLP fail where a residual
#   one learns.
# - Write BatchNorm (training and evaluation mode, running statistics), LayerNorm, GroupNorm and RMSNorm from
#   tensor operations, each equal to its `torch.nn` module, and know which axes each one averages over.
# - Avoid the classic BatchNorm bug: evaluating in training mode.
#
# **Prerequisites:** notebook 01 (the training loop, `dlcourse.fit`); mean and variance of a random variable;
# the chain rule.
#
# **Time:** seconds at `smoke`; a minute or two at `small` on a laptop CPU; at `full` the networks are deeper
# and train longer on a GPU. The last cell prints how long this run took on your machine.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import copy
import math
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
# ## 1. How a layer changes the scale of its input
# Take one linear layer $z = W h$ with $n_\text{in}$ inputs (its *fan-in*) and $n_\text{out}$ outputs (its
# *fan-out*). Suppose the weights are independent, with mean 0 and variance $\sigma^2$, and independent of the
# input. Each output is a sum of $n_\text{in}$ terms $w_{ji} h_i$, each of variance
# $\sigma^2\,\mathbb E[h_i^2]$, so
# $$\operatorname{Var}(z_j) = n_\text{in}\,\sigma^2\,\mathbb E[h^2].$$
# A ReLU zeroes the negative half of a symmetric $z$, and with it half of the second moment:
# $\mathbb E[\mathrm{relu}(z)^2] = \tfrac12 \operatorname{Var}(z)$. Put together, every Linear + ReLU layer
# multiplies the second moment of the signal by $\tfrac12 n_\text{in}\sigma^2$. After $L$ layers that factor
# is raised to the power $L$: anything other than 1 vanishes or explodes exponentially in depth.
#
# - **He** (Kaiming) initialisation picks $\sigma^2 = 2 / n_\text{in}$, which makes the factor exactly 1 for
#   ReLU.
# - **Xavier** (Glorot) initialisation was derived for activations that are close to the identity near 0
#   (tanh): the forward pass wants $\sigma^2 = 1/n_\text{in}$, the backward pass (where the roles of fan-in
#   and fan-out swap) wants $1/n_\text{out}$, and Xavier takes the compromise
#   $\sigma^2 = 2/(n_\text{in} + n_\text{out})$. For ReLU it is too small by a factor of 2 per layer.
# - **Zero** weights give zero outputs, and every unit of a layer receives the same gradient (zero, with
#   ReLU). Units that start equal stay equal: the layer behaves like a single unit. Any *constant*
#   initialisation has this symmetry problem; randomness breaks it.
#
# Both rules are a one-liner once the fan-in is known. `nn.Linear` stores its weight as (fan-out, fan-in).

# %%
def xavier_normal_(W: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill W (fan_out, fan_in) in place with N(0, 2 / (fan_in + fan_out)) samples; return W."""
    fan_out, fan_in = W.shape
    std = math.sqrt(2.0 / (fan_in + fan_out))
    with torch.no_grad():
        return W.copy_(torch.randn(W.shape, generator=generator) * std)


def he_normal_(W: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill W (fan_out, fan_in) in place with N(0, 2 / fan_in) samples (ReLU networks); return W."""
    fan_in = W.shape[1]
    with torch.no_grad():
        return W.copy_(torch.randn(W.shape, generator=generator) * math.sqrt(2.0 / fan_in))


# Same random stream, same numbers: ours and torch.nn.init must agree exactly.
def seeded() -> torch.Generator:
    return torch.Generator().manual_seed(cfg.seed)


assert torch.allclose(xavier_normal_(torch.empty(300, 200), seeded()),
                      nn.init.xavier_normal_(torch.empty(300, 200), generator=seeded()))
assert torch.allclose(he_normal_(torch.empty(300, 200), seeded()),
                      nn.init.kaiming_normal_(torch.empty(300, 200), nonlinearity="relu", generator=seeded()))
W = he_normal_(torch.empty(300, 200))
print(f"He on a (300, 200) weight: std {W.std():.4f}, target sqrt(2/200) = {math.sqrt(2 / 200):.4f}")
assert abs(W.std().item() / math.sqrt(2 / 200) - 1) < 0.02

# %% [markdown]
# Constant initialisation in action: a two-layer MLP whose weights all start at 0.1 trains for a few steps,
# yet its hidden units stay copies of each other, because they compute the same thing and receive the same
# gradient.

# %%
torch.manual_seed(cfg.seed)
X_demo, y_demo = torch.randn(32, 5), torch.randint(0, 3, (32,))
tiny = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
with torch.no_grad():
    for p in tiny.parameters():
        p.fill_(0.1)
optimizer = torch.optim.SGD(tiny.parameters(), lr=0.5)
for step in range(20):
    loss = F.cross_entropy(tiny(X_demo), y_demo)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
W1 = tiny[0].weight.detach()    # (4 hidden units, 5 inputs)
print("first-layer weights after 20 steps (one row per hidden unit):\n", W1)
assert torch.allclose(W1, W1[0].expand_as(W1)), "all hidden units should still be identical"

# %% [markdown]
# ## 2. Activations and gradients, layer by layer
# Now a deep MLP: `depth` Linear + activation layers of `width` units, then a linear head, on one batch of
# standardised digits. For each hidden layer $l$ we record the root mean square (RMS) of its output $h_l$ (the
# scale of the forward signal, the $\sqrt{\mathbb E[h^2]}$ of section 1) and of the gradient
# $\partial L / \partial h_l$ that backpropagation delivers to it. A weight's gradient is the product of the
# two (the layer's input times the gradient at its output), so if either collapses, that layer stops learning.
#
# The schemes compared: zero; normal with a fixed σ of 0.01 and of 1; Xavier; He; and PyTorch's default for
# `nn.Linear`, which draws weights *and biases* uniformly from $\pm 1/\sqrt{n_\text{in}}$: a weight variance
# of $1/(3 n_\text{in})$, six times smaller than He's.

# %%
splits = dlcourse.data.digits(flatten=True, seed=cfg.seed)
X_all, y_all = splits.train.tensors                                    # (N_train, 64), (N_train,)
X_stats = (X_all[:256] - X_all.mean(0)) / (X_all.std(0) + 1e-6)       # (256, 64): each pixel mean 0, std 1
y_stats = y_all[:256]

INITS = ("zero", "normal σ=0.01", "normal σ=1", "Xavier", "He", "PyTorch default")


def init_linear_(layer: nn.Linear, init: str) -> None:
    """Re-initialise a linear layer in place with one of INITS; zero bias, except for PyTorch's default."""
    W = layer.weight                                                   # (fan_out, fan_in)
    if init == "PyTorch default":
        layer.reset_parameters()
        return
    with torch.no_grad():
        layer.bias.zero_()
        if init == "zero":
            W.zero_()
        elif init == "normal σ=0.01":
            W.normal_(0.0, 0.01)
        elif init == "normal σ=1":
            W.normal_(0.0, 1.0)
        elif init == "Xavier":
            xavier_normal_(W)
        elif init == "He":
            he_normal_(W)
        else:
            raise ValueError(f"unknown init {init!r}; choose one of {INITS}")


def rms(t: torch.Tensor) -> float:
    """Root mean square, in float64 so that squaring 1e-30 or 1e30 neither underflows nor overflows."""
    return t.double().pow(2).mean().sqrt().item()


def signal_stats(init: str, activation: str = "relu", depth: int = 30, width: int = 128
                 ) -> tuple[list[float], list[float]]:
    """One forward and backward pass of a freshly initialised deep MLP on X_stats.

    Returns two lists of length depth: RMS of each hidden output h_l (B, width) and of its gradient dL/dh_l.
    """
    torch.manual_seed(cfg.seed)
    layers = [nn.Linear(64, width)] + [nn.Linear(width, width) for _ in range(depth - 1)]
    head = nn.Linear(width, 10)
    for layer in layers + [head]:
        init_linear_(layer, init)
    act = {"relu": torch.relu, "tanh": torch.tanh}[activation]
    h, hidden = X_stats, []
    for layer in layers:
        h = act(layer(h))                    # (B, width)
        h.retain_grad()                      # keep dL/dh for this intermediate tensor
        hidden.append(h)
    F.cross_entropy(head(h), y_stats).backward()
    return [rms(h) for h in hidden], [rms(h.grad) for h in hidden]


def plot_signal(stats: dict[str, tuple[list[float], list[float]]], activation: str):
    """Two panels, forward RMS and gradient RMS per layer, one line per init (zero is all-zero: not drawn)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for init, (forward, backward) in stats.items():
        if init == "zero":
            continue
        layers = range(1, len(forward) + 1)
        axes[0].plot(layers, forward, "-o", markersize=2, label=init)
        axes[1].plot(layers, backward, "-o", markersize=2, label=init)
    axes[0].set(title=f"forward: RMS of h_l ({activation})", ylabel="RMS")
    axes[1].set(title="backward: RMS of dL/dh_l")
    for ax in axes:
        ax.set(xlabel="layer l", yscale="log")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


depth_stats = 30   # the same at every scale: this is one forward and one backward pass
stats = {init: signal_stats(init, "relu", depth_stats) for init in INITS}
print(f"{'init':<16}{'RMS h_1':>10}{'RMS h_L':>10}{'RMS dL/dh_1':>13}{'RMS dL/dh_L':>13}")
for init, (forward, backward) in stats.items():
    print(f"{init:<16}{forward[0]:>10.1e}{forward[-1]:>10.1e}{backward[0]:>13.1e}{backward[-1]:>13.1e}")
plot_signal(stats, "relu")

# %% [markdown]
# Read the plot from left to right for the forward pass and from right to left for the backward pass (the
# gradient starts at the last layer):
# - **zero**: every activation and every gradient is exactly 0 (the table; nothing to draw on a log scale).
# - **σ = 0.01** shrinks the signal by a constant factor per layer, **σ = 1** grows it: straight lines on a
#   log scale, i.e. exponential in depth. The gradient does the same in the opposite direction.
# - **Xavier** is too small for ReLU by a factor of 2 in variance per layer, so it still vanishes, only
#   slowly.
# - **He** keeps both signals at the same scale through all layers.
# - **PyTorch's default** shrinks the part of the signal that comes from the input until what is left is made
#   by the biases; the gradient reaching the first layers is many orders of magnitude smaller than at the top.

# %%
ratio = {init: (forward[-1] / forward[0], backward[0] / backward[-1])
         for init, (forward, backward) in stats.items() if init != "zero"}
assert all(v == 0 for v in stats["zero"][0] + stats["zero"][1]), "zero init: everything is exactly 0"
assert ratio["normal σ=0.01"][0] < 1e-10 and ratio["normal σ=1"][0] > 1e10
assert ratio["Xavier"][0] < 1e-2
assert 0.2 < ratio["He"][0] < 5 and 0.1 < ratio["He"][1] < 10
assert ratio["PyTorch default"][1] < 1e-3, "default init: the gradient at layer 1 is tiny compared to layer L"

# %% [markdown]
# ### Explore: activation function and depth
# With tanh the picture changes. Near 0, tanh is the identity, so there is no factor ½ and Xavier's
# $1/n_\text{in}$-like scale is the one that holds small signals steady; the signal still shrinks slowly
# because tanh squashes larger values. He's larger weights push more units towards the flat ends of tanh. With
# σ = 1 almost every unit saturates: the forward signal is stuck near ±1 and cannot grow, but the gradient
# still explodes on its way back. Change the activation and the depth below; the plot follows.

# %%
def show_signal(activation: str, depth: int) -> dict:
    """Measure every init at this activation and depth, and display the two panels."""
    stats = {init: signal_stats(init, activation, depth) for init in INITS}
    display(plot_signal(stats, activation))
    return stats


activation_picker = widgets.ToggleButtons(options=["relu", "tanh"], value="tanh", description="activation")
depth_slider = widgets.IntSlider(value=30, min=2, max=100, step=1, description="depth",
                                 continuous_update=False)
signal_explorer = widgets.interactive(show_signal, activation=activation_picker, depth=depth_slider)
display(signal_explorer)
tanh_stats = signal_explorer.result  # the measurements behind the plot shown first (tanh, depth 30)
tanh_forward = tanh_stats["Xavier"][0]
tanh_backward = tanh_stats["normal σ=1"][1]
assert 0.05 < tanh_forward[-1] / tanh_forward[0] <= 1, "Xavier + tanh: a slow decay, not an exponential one"
assert tanh_backward[0] / tanh_backward[-1] > 1e6, "σ = 1 + tanh: the gradient explodes towards layer 1"

# %% [markdown]
# ## 3. Does the initialisation decide whether a deep network trains?
# Statistics at initialisation are a prediction; training is the test. Below, the same deep plain MLP (a stem
# layer, `depth` blocks of ReLU → Linear, a head) is trained on the digits with SGD and momentum, starting
# from PyTorch's default, Xavier and He initialisation. The blocks are written so that section 4 can add a
# residual connection and section 8 a normalisation layer without changing anything else.

# %%
NORMS = {"none": nn.Identity, "BatchNorm": nn.BatchNorm1d, "LayerNorm": nn.LayerNorm}


class Block(nn.Module):
    """Pre-activation block: norm → ReLU → Linear, plus the input when residual. (B, width) → (B, width)."""

    def __init__(self, width: int, residual: bool = False, norm: str = "none") -> None:
        super().__init__()
        self.norm = NORMS[norm](width)
        self.linear = nn.Linear(width, width)
        self.residual = residual

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.linear(torch.relu(self.norm(h)))     # (B, width)
        return h + out if self.residual else out


class DeepMLP(nn.Module):
    """Stem Linear(64 → width), ``depth`` Blocks, head norm → ReLU → Linear(width → 10). (B, 64) → (B, 10)."""

    def __init__(self, depth: int, width: int, residual: bool = False, norm: str = "none") -> None:
        super().__init__()
        self.stem = nn.Linear(64, width)
        self.blocks = nn.ModuleList([Block(width, residual, norm) for _ in range(depth)])
        self.head = nn.Sequential(NORMS[norm](width), nn.ReLU(), nn.Linear(width, 10))

    def forward(self, X: torch.Tensor, keep: list | None = None) -> torch.Tensor:
        h = self.stem(X.flatten(1))                     # (B, width)
        for block in self.blocks:
            h = block(h)
            if keep is not None:                        # collect block outputs to inspect their gradients
                h.retain_grad()
                keep.append(h)
        return self.head(h)                             # (B, 10) logits


depth = cfg.pick(smoke=20, small=30, full=50)
width = cfg.pick(smoke=64, small=64, full=128)
num_epochs = cfg.pick(smoke=3, small=20, full=40)
lr = 0.01
progress = cfg.pick(smoke=False, small=True, full=True)
batch_size = 64


def train(name: str, residual: bool = False, norm: str = "none", init: str = "PyTorch default",
          clip: float | None = None):
    """Build a DeepMLP, initialise its Linear layers with ``init``, train it (capping the gradient norm at
    ``clip`` when given); return (model, History)."""
    torch.manual_seed(cfg.seed)
    model = DeepMLP(depth, width, residual, norm)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            init_linear_(module, init)
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    train_loader, val_loader, _ = splits.loaders(batch_size=batch_size, seed=cfg.seed)  # same order each run
    history = dlcourse.fit(model, optimizer, train_loader, val_loader, num_epochs=num_epochs,
                           clip_grad_norm=clip, progress=progress)
    print(f"{name:<28} val acc {history.last['val_acc']:.1%}, train loss {history.last['train_loss']:.3f}")
    return model, history


runs = {}   # name -> History, for the comparison at the end
for init in ("PyTorch default", "Xavier", "He"):
    runs[f"plain, {init} init"] = train(f"plain, {init} init", init=init)[1]


def plot_runs(names: list[str], metric: str = "val_acc"):
    """One line per run in ``runs``: ``metric`` per epoch."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name in names:
        ax.plot(runs[name]["epoch"], runs[name][metric], "-o", markersize=3, label=name)
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=f"depth {depth}, width {width}, digits")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    plt.close(fig)
    return fig


plot_runs(list(runs), "train_loss")

# %%
loss_default = runs["plain, PyTorch default init"].last["train_loss"]
he_losses = runs["plain, He init"]["train_loss"]                      # one mean training loss per epoch
print(f"training loss: PyTorch default {loss_default:.3f} at the end; He {min(he_losses):.3f} at its best "
      f"epoch, {he_losses[-1]:.3f} at the end (chance level: log 10 = {math.log(10):.3f})")
assert loss_default > 2.0, "the default-initialised deep plain MLP should be stuck near chance"
assert min(he_losses) < loss_default - 0.2, "He init should get the deep plain MLP moving"

# %% [markdown]
# With the default initialisation the loss stays at $\log 10$, the loss of a uniform guess over ten classes,
# and Xavier is no better for a ReLU network this deep: no useful gradient reaches the lower layers. He
# initialisation gets training started, but look at its curve: it falls, and in longer runs (`small`, `full`)
# it also jumps back up now and then, sometimes all the way to $\log 10$, and has to start over. The right scale at the start is no
# guarantee that it stays right once the weights move. A deep plain network is very sensitive to its weights:
# now and then one step lands where the gradient is huge, the next step is huge too, and it throws the network
# back to predicting the same thing for every image. When that happens, and whether the network recovers
# before the last epoch, depends on rounding in the last bits: the same code on a GPU, or with another number
# of CPU threads, takes a different path. That is why the check above compares the *best* epoch, which says
# whether training got going, and not the last one, which is a lottery.
#
# The standard cure caps the length of every step: **gradient clipping** rescales the gradient whenever its
# norm exceeds a threshold (notebook 04 writes it from scratch; `dlcourse.fit(clip_grad_norm=...)` does it for
# us). Same He initialisation, same optimiser, gradient norm capped at 1:

# %%
_, runs["plain, He init, clipped"] = train("plain, He init, clipped", init="He", clip=1.0)
loss_he_clipped = runs["plain, He init, clipped"].last["train_loss"]
print(f"final training loss of the He-initialised plain MLP: {he_losses[-1]:.3f} unclipped, "
      f"{loss_he_clipped:.3f} clipped")
assert loss_he_clipped < loss_default - 0.5, "clipped steps should let the He-initialised MLP learn steadily"
plot_runs(["plain, He init", "plain, He init, clipped"], "train_loss")

# %% [markdown]
# Clipping does not change where training starts, only how far one step may go, so it cannot rescue the
# default initialisation: there the gradient norm stays far below 1, so clipping at 1 never acts, and a lower
# threshold only makes the steps smaller still (exercise 7). Residual connections, next, attack that problem at its root.
#
# ## 4. Residual connections
# A residual block adds its input to its output: $h_{l+1} = h_l + f_l(h_l)$. Differentiating,
# $$\frac{\partial L}{\partial h_l} = \frac{\partial L}{\partial h_{l+1}}\Big(I + \frac{\partial f_l}{\partial h_l}\Big),$$
# so the gradient at block $l$ is the gradient at block $l+1$ *plus* a correction. Unrolled over all blocks,
# the product of Jacobians that vanishes in a plain network becomes a sum that always contains the term
# $\partial L / \partial h_L$ itself: there is a path from the loss to every block that passes through no
# weights at all. Each block only has to learn a correction to the identity, and a block that is not needed
# yet can stay close to zero without blocking the blocks below it.
#
# The gradient RMS per block at initialisation, plain against residual, with PyTorch's default init:

# %%
def block_profile(residual: bool) -> tuple[list[float], list[float]]:
    """RMS of each block output h_l and of dL/dh_l, for a freshly built DeepMLP on X_stats."""
    torch.manual_seed(cfg.seed)
    model = DeepMLP(depth, width, residual)
    keep: list[torch.Tensor] = []
    F.cross_entropy(model(X_stats, keep), y_stats).backward()
    return [rms(h) for h in keep], [rms(h.grad) for h in keep]


forward_rms, profiles = {}, {}
for name, residual in (("plain", False), ("residual", True)):
    forward_rms[name], profiles[name] = block_profile(residual)
fig, ax = plt.subplots(figsize=(6, 3.2))
for name, profile in profiles.items():
    ax.plot(range(1, depth + 1), profile, "-o", markersize=3, label=name)
ax.set(xlabel="block l", ylabel="RMS of dL/dh_l", yscale="log",
       title=f"gradient at initialisation, depth {depth}")
ax.grid(alpha=0.3)
ax.legend()
plt.close(fig)
fig

# %%
for name in profiles:
    print(f"{name:<9} gradient RMS, block 1 / block {depth}: {profiles[name][0] / profiles[name][-1]:.1e}; "
          f"forward RMS, block {depth} / block 1: {forward_rms[name][-1] / forward_rms[name][0]:.1e}")
assert profiles["plain"][0] / profiles["plain"][-1] < 1e-3
assert profiles["residual"][0] / profiles["residual"][-1] > 0.5
assert forward_rms["residual"][-1] / forward_rms["residual"][0] > 2, "residual blocks add up: it grows"

# %% [markdown]
# Now train the plain and the residual network with the same default initialisation, the same data and the same
# optimiser, with the gradient norm capped at 1 as in the last run of section 3, so that one unlucky step cannot
# decide the comparison:

# %%
_, runs["plain"] = train("plain", clip=1.0)
_, runs["residual"] = train("residual", residual=True, clip=1.0)
dlcourse.viz.plot_history(runs["plain"], title=f"plain MLP, depth {depth}")

# %% [markdown]
# Mind the y-axes: each panel is scaled to its own data, and the plain network's loss only wobbles in the
# third decimal around $\log 10$, its accuracy around 10 %, which is chance.

# %%
dlcourse.viz.plot_history(runs["residual"], title=f"residual MLP, depth {depth}")

# %%
acc_plain, acc_res = runs["plain"].last["val_acc"], runs["residual"].last["val_acc"]
print(f"validation accuracy after {num_epochs} epochs: plain {acc_plain:.1%}, residual {acc_res:.1%}")
assert acc_plain < 0.3, "the plain network should not have learned"
assert acc_res > cfg.pick(smoke=0.5, small=0.85, full=0.85), "the residual network should learn"

# %% [markdown]
# The only difference between the two models is the `+ h` in `Block.forward`: the same parameters, the same
# initial weights. The plain network does not learn at all at this depth, while the residual one does.
#
# Residual connections fix the gradient, not the forward scale: every block *adds* to the signal, so its scale
# grows with depth (the forward ratio printed above; with He initialisation, whose branches are larger, it
# grows far faster: exercise 3). Normalisation layers take care of that.
#
# ## 5. BatchNorm from scratch
# Batch normalisation standardises every feature (channel) over the batch, then lets the network rescale it:
# $$\hat x = \frac{x - \mu_B}{\sqrt{\sigma_B^2 + \epsilon}}, \qquad y = \gamma \hat x + \beta,$$
# where $\mu_B$ and $\sigma^2_B$ are the mean and the (biased, divide-by-$n$) variance of that feature over
# the batch (for images: over the batch *and* all pixels, per channel), and $\gamma, \beta$ are learned, one
# per feature. Two modes:
# - **training**: normalise with the batch's statistics, and update *running* estimates, an exponential moving
#   average with `momentum` $m$ = 0.1: $r \leftarrow (1 - m)\,r + m\,s$. PyTorch stores the *unbiased*
#   (divide-by-$(n-1)$) batch variance in `running_var`, although it normalises with the biased one.
# - **evaluation**: normalise with the running statistics. Every example is then treated on its own, and the
#   same input always gives the same output, whatever else is in the batch.

# %%
def batch_norm(X: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, running_mean: torch.Tensor,
               running_var: torch.Tensor, training: bool, momentum: float = 0.1,
               eps: float = 1e-5) -> torch.Tensor:
    """BatchNorm of X (N, C) or (N, C, H, W) with per-channel gamma, beta, running_mean, running_var (C,).

    In training mode the running statistics are updated in place.
    """
    dims = [d for d in range(X.ndim) if d != 1]          # every axis except the channel axis
    shape = [1, -1] + [1] * (X.ndim - 2)                   # (C,) -> (1, C) or (1, C, 1, 1), to broadcast
    if training:
        mean = X.mean(dim=dims)                            # (C,)
        var = X.var(dim=dims, correction=0)                # (C,) biased: used to normalise
        n = X.numel() // X.shape[1]                        # values per channel
        with torch.no_grad():                              # the running averages are not part of the graph
            running_mean.mul_(1 - momentum).add_(momentum * mean)
            running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1))   # stored unbiased
    else:
        mean, var = running_mean, running_var
    X_hat = (X - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps)
    return gamma.reshape(shape) * X_hat + beta.reshape(shape)


class MyBatchNorm(nn.Module):
    """Holds what nn.BatchNorm1d/2d hold: learned gamma (weight) and beta (bias), and running statistics as
    buffers (saved in the state dict and moved by .to(), but not trained)."""

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.momentum, self.eps = momentum, eps

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return batch_norm(X, self.weight, self.bias, self.running_mean, self.running_var, self.training,
                          self.momentum, self.eps)


def check_against(ours: nn.Module, theirs: nn.Module, batches: list[torch.Tensor],
                  atol: float = 1e-5) -> None:
    """Run both modules on the same batches; outputs, input gradients and parameter gradients must match."""
    for X in batches:
        X1, X2 = X.clone().requires_grad_(), X.clone().requires_grad_()
        y1, y2 = ours(X1), theirs(X2)
        assert torch.allclose(y1, y2, atol=atol), f"outputs differ by {(y1 - y2).abs().max():.1e}"
        probe = torch.randn_like(y1)                       # a random linear loss, so every output matters
        (y1 * probe).sum().backward()
        (y2 * probe).sum().backward()
        assert torch.allclose(X1.grad, X2.grad, atol=atol), "input gradients differ"
    for (name, p1), p2 in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.allclose(p1.grad, p2.grad, atol=atol), f"gradients of {name} differ"


gen = torch.Generator().manual_seed(cfg.seed)
for dims, torch_bn in [((32, 6), nn.BatchNorm1d(6)), ((8, 6, 5, 5), nn.BatchNorm2d(6))]:
    ours = MyBatchNorm(6)
    with torch.no_grad():                                  # start from non-trivial gamma and beta
        for p1, p2 in zip(ours.parameters(), torch_bn.parameters()):
            p1.copy_(torch.randn(6, generator=gen))
            p2.copy_(p1)
    train_batches = [3 * torch.randn(dims, generator=gen) + 2 for _ in range(5)]   # mean 2, std 3
    check_against(ours.train(), torch_bn.train(), train_batches)
    assert torch.allclose(ours.running_mean, torch_bn.running_mean, atol=1e-5)
    assert torch.allclose(ours.running_var, torch_bn.running_var, atol=1e-5)
    check_against(ours.eval(), torch_bn.eval(), [3 * torch.randn(dims, generator=gen) + 2])
    print(f"{type(torch_bn).__name__} on {dims}: outputs, gradients and running statistics match; "
          f"running mean {ours.running_mean[:3].tolist()} ...")

# %% [markdown]
# After 5 batches with momentum 0.1 the running mean has covered only $1 - 0.9^5 \approx 41\%$ of the way from
# its initial 0 to the true mean 2: running statistics need many batches to settle, which is one more reason
# to train for a while before trusting evaluation mode.
#
# ## 6. Training mode versus evaluation mode
# In training mode an example's output depends on the other examples in its batch; in evaluation mode it does
# not. `dlcourse.evaluate` and `dlcourse.predict` call `model.eval()` for you; a hand-written evaluation loop
# must do it itself, and call `model.train()` before training again.

# %%
bn = nn.BatchNorm1d(6)
X_a = torch.randn(16, 6, generator=gen)
X_b = torch.cat([X_a[:1], 5 + torch.randn(15, 6, generator=gen)])      # same first example, other companions
bn.train()
train_diff = (bn(X_a)[0] - bn(X_b)[0]).abs().max().item()
bn.eval()
eval_diff = (bn(X_a)[0] - bn(X_b)[0]).abs().max().item()
print(f"change in example 0's output when its batch changes: training mode {train_diff:.3f}, "
      f"evaluation mode {eval_diff:.3f}")
assert train_diff > 0.5 and eval_diff == 0

# %% [markdown]
# Two more consequences. A forward pass in training mode *changes the model*: it moves the running statistics,
# so evaluating in training mode also corrupts the later evaluation-mode results. And in training mode a batch
# must hold more than one value per channel: `nn.BatchNorm1d` refuses a batch of one example.

# %%
bn.train()
before = bn.running_mean.clone()
with torch.no_grad():                                  # no_grad does not stop the running statistics
    bn(X_b)
print("running mean moved by", (bn.running_mean - before).abs().max().item())
assert not torch.equal(bn.running_mean, before)
try:
    bn(X_a[:1])
    raise AssertionError("a batch of one should fail in training mode")
except ValueError as error:
    print("batch of one in training mode:", error)

# %% [markdown]
# ## 7. LayerNorm, GroupNorm and RMSNorm
# BatchNorm's dependence on the batch is a problem for small batches, for sequences of different lengths and
# for generating text one token at a time. The alternatives normalise each example on its own, so training and
# evaluation mode do the same thing and there are no running statistics:
#
# | layer | statistics over | affine parameters | used in |
# |---|---|---|---|
# | BatchNorm | the batch (and pixels), per channel | $\gamma, \beta$ per channel | CNNs |
# | LayerNorm | the features of one example (the last dimensions) | $\gamma, \beta$ per feature | transformers, MLPs |
# | GroupNorm | groups of channels (and their pixels) of one example | $\gamma, \beta$ per channel | CNNs with small batches |
# | RMSNorm | the features of one example, no mean subtracted | $\gamma$ per feature | recent large language models |
#
# RMSNorm drops the centring and the shift: $y = \gamma \, x / \sqrt{\operatorname{mean}(x^2) + \epsilon}$. It
# is cheaper and works as well in practice for transformers. GroupNorm with one group is LayerNorm over
# (C, H, W); with one channel per group it is *InstanceNorm*.

# %%
def layer_norm(X: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise X (..., *S) over its last gamma.ndim dims S; gamma and beta have shape S."""
    dims = tuple(range(X.ndim - gamma.ndim, X.ndim))
    mean = X.mean(dim=dims, keepdim=True)                       # (..., 1, ..., 1)
    var = X.var(dim=dims, keepdim=True, correction=0)           # biased, like BatchNorm
    return (X - mean) / torch.sqrt(var + eps) * gamma + beta


def group_norm(X: torch.Tensor, num_groups: int, gamma: torch.Tensor, beta: torch.Tensor,
               eps: float = 1e-5) -> torch.Tensor:
    """GroupNorm of X (N, C, *): statistics per example over each group of C // num_groups channels and
    their positions; gamma and beta (C,) per channel."""
    N, C = X.shape[:2]
    groups = X.reshape(N, num_groups, -1)                       # (N, G, C // G * H * W)
    mean = groups.mean(dim=2, keepdim=True)                     # (N, G, 1)
    var = groups.var(dim=2, keepdim=True, correction=0)
    X_hat = ((groups - mean) / torch.sqrt(var + eps)).reshape(X.shape)
    shape = (1, C) + (1,) * (X.ndim - 2)
    return X_hat * gamma.reshape(shape) + beta.reshape(shape)


def rms_norm(X: torch.Tensor, gamma: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Divide X (..., *S) by its root mean square over the last gamma.ndim dims S, then scale by gamma (S)."""
    dims = tuple(range(X.ndim - gamma.ndim, X.ndim))
    return X / torch.sqrt(X.pow(2).mean(dim=dims, keepdim=True) + eps) * gamma


class Wrap(nn.Module):
    """Our function with the parameters of a torch module, so check_against can compare the two."""

    def __init__(self, fn, reference: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.params = nn.ParameterList([nn.Parameter(p.detach().clone()) for p in reference.parameters()])

    def forward(self, X):
        return self.fn(X, *self.params)


def randomised(module: nn.Module) -> nn.Module:
    """The module with random (not all-ones / all-zeros) affine parameters, so they are really tested."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return module


cases = [   # (name, our function, torch module, input shape)
    ("LayerNorm(16) on (4, 10, 16)", layer_norm, nn.LayerNorm(16), (4, 10, 16)),
    ("LayerNorm((6, 5, 5)) on images", layer_norm, nn.LayerNorm((6, 5, 5)), (8, 6, 5, 5)),
    ("GroupNorm(3, 6) on images", lambda X, g, b: group_norm(X, 3, g, b), nn.GroupNorm(3, 6), (8, 6, 5, 5)),
    ("GroupNorm(2, 4) on sequences", lambda X, g, b: group_norm(X, 2, g, b), nn.GroupNorm(2, 4), (8, 4, 7)),
    ("RMSNorm(16) on (4, 10, 16)", rms_norm, nn.RMSNorm(16, eps=1e-6), (4, 10, 16)),
]
for name, fn, module, dims in cases:
    module = randomised(module)
    check_against(Wrap(fn, module), module, [3 * torch.randn(dims, generator=gen) + 2 for _ in range(2)])
    print(f"{name:<32} matches torch: outputs and gradients")

# GroupNorm with one group is LayerNorm over (C, H, W) (with identity affine parameters).
X_img = torch.randn(8, 6, 5, 5, generator=gen)
assert torch.allclose(group_norm(X_img, 1, torch.ones(6), torch.zeros(6)),
                      layer_norm(X_img, torch.ones(6, 5, 5), torch.zeros(6, 5, 5)), atol=1e-5)
# Per-example layers do not care about the rest of the batch.
ln = randomised(nn.LayerNorm(6))
assert torch.allclose(ln(X_a)[:1], ln(X_a[:1]), atol=1e-6)

# %% [markdown]
# ## 8. Depth with normalisation
# Back to the deep MLP of sections 3 and 4, now with a normalisation layer at the start of every block (the
# *pre-norm* arrangement of modern transformers): BatchNorm in the plain network, and BatchNorm or LayerNorm
# in the residual one. Same default initialisation, same optimiser, and no clipping this time: in a deep
# BatchNorm network the gradients of the first steps are enormous (norms in the thousands here), and capping
# every step at 1 leaves the plain one too little progress for this budget (exercise 8).

# %%
_, runs["plain + BatchNorm"] = train("plain + BatchNorm", norm="BatchNorm")
model_bn, runs["residual + BatchNorm"] = train("residual + BatchNorm", residual=True, norm="BatchNorm")
_, runs["residual + LayerNorm"] = train("residual + LayerNorm", residual=True, norm="LayerNorm")
compared = ["plain", "plain, He init", "plain, He init, clipped", "plain + BatchNorm", "residual",
            "residual + BatchNorm", "residual + LayerNorm"]
plot_runs(compared, "val_acc")

# %%
dlcourse.viz.plot_history(runs["residual + BatchNorm"], title=f"residual + BatchNorm MLP, depth {depth}")

# %% [markdown]
# The same runs as a table, with the time per epoch measured in this run (normalisation is not free). The
# deep plain runs are noisy from epoch to epoch, so the table also gives each run's best epoch:

# %%
print(f"{'model':<26}{'val acc':>9}{'best val acc':>14}{'train loss':>12}{'s / epoch':>11}")
for name in compared:
    history = runs[name]
    seconds = sum(history["seconds"]) / len(history)
    print(f"{name:<26}{history.last['val_acc']:>9.1%}{max(history['val_acc']):>14.1%}"
          f"{history.last['train_loss']:>12.3f}{seconds:>11.3f}")
acc_bn = runs["residual + BatchNorm"].last["val_acc"]
assert acc_bn > cfg.pick(smoke=0.8, small=0.9, full=0.9), "residual + BatchNorm should learn well"
assert max(runs["plain + BatchNorm"]["val_acc"]) > max(runs["plain"]["val_acc"]) + 0.1, \
    "BatchNorm should help the plain network"

# %% [markdown]
# BatchNorm gets even the plain network learning, because every block now sees inputs of a controlled scale
# whatever the weights do; the deeper the network, the slower it still is. Residual connections plus
# normalisation give the fastest and most reliable training: the combination that ResNets and transformers are
# built on.
#
# Finally, the evaluation-mode bug on a trained network: the test set scored by `dlcourse.evaluate`
# (evaluation mode), and by a copy of the model left in training mode, fed batches of 4 test examples.

# %%
test_loader = splits.loaders(batch_size=batch_size)[2]
test_eval = dlcourse.evaluate(model_bn, test_loader)["acc"]
forgot_eval = copy.deepcopy(model_bn).train()         # a copy: training mode changes the running statistics
X_test, y_test = (t.to(device) for t in splits.test.tensors)
with torch.no_grad():
    preds = torch.cat([forgot_eval(X_test[i:i + 4]).argmax(1) for i in range(0, len(X_test), 4)])
test_train_mode = (preds == y_test).float().mean().item()
print(f"residual + BatchNorm, test accuracy: evaluation mode {test_eval:.1%}, "
      f"training mode with batches of 4: {test_train_mode:.1%}")
assert test_eval > test_train_mode

# %% [markdown]
# ## Summary
# - Through a Linear + ReLU layer the second moment of the signal is multiplied by
#   $\tfrac12 n_\text{in}\sigma^2$; over many layers it vanishes or explodes exponentially unless that factor
#   is 1. He initialisation ($\sigma^2 = 2/n_\text{in}$) sets it to 1 for ReLU; Xavier
#   ($2/(n_\text{in} + n_\text{out})$) suits tanh.
# - Zero (or any constant) initialisation keeps all units of a layer identical forever: randomness breaks the
#   symmetry.
# - Measured layer by layer, bad initialisations make activations and gradients shrink or grow by orders of
#   magnitude; PyTorch's default `nn.Linear` initialisation is too small for deep ReLU stacks.
# - A good initialisation gets a deep plain network started, but its training stays fragile: one huge step can
#   throw it back to chance, and where that happens depends on rounding (CPU or GPU). Clipping the gradient
#   norm caps every step and makes the run steady.
# - A residual connection $h + f(h)$ gives the gradient a path around every block; deep plain networks that do
#   not train at all train well once residual.
# - BatchNorm normalises each channel over the batch in training mode, keeps running averages (an unbiased
#   variance), and uses them in evaluation mode. Forgetting `model.eval()` makes predictions depend on the
#   batch and corrupts the running statistics.
# - LayerNorm, GroupNorm and RMSNorm normalise each example on its own; our versions equal `torch.nn`'s.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **Leaky ReLU.** Derive the variance factor of a Linear + LeakyReLU layer with negative slope $a$ and the
#    initialisation that makes it 1. Check your answer against `nn.init.calculate_gain("leaky_relu", a)` and
#    with `signal_stats` after adding the activation.
# 2. **He for the backward pass.** `nn.init.kaiming_normal_(W, mode="fan_out")` keeps the *gradient* scale
#    constant instead. Add it to `INITS`. When do the two modes differ, and by how much in this notebook's
#    MLP?
# 3. **Residual without normalisation, He init.** Train `train("residual, He", residual=True, init="He")`.
#    Measure the RMS of the block outputs at initialisation: how fast does it grow with depth, and why? A
#    common fix scales each residual branch by a small factor or initialises its last layer to zero; try one.
# 4. **Folding BatchNorm.** In evaluation mode BatchNorm is a fixed affine map per feature. Train
#    `nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))` briefly on the
#    digits, then replace the first two layers by one `nn.Linear` with a new weight and bias, and check in
#    evaluation mode that the outputs do not change. Why can't the same be done in training mode?
# 5. **Small batches.** Retrain `residual + BatchNorm` with batches of 4 and then 256 (`splits.loaders`). How
#    do accuracy and time per epoch change? Does `residual + LayerNorm` suffer in the same way?
# 6. **Momentum of the running statistics.** What does `momentum=None` do in `nn.BatchNorm1d` (read its
#    docstring)? Add it to `batch_norm` and check it against torch.
# 7. **Clipping cannot fix a bad start.** Train `train("plain, clipped at 0.01", clip=0.01)` with the default
#    initialisation and record the gradient norms (`runs[...]["grad_norm"]`, the mean norm before clipping per
#    epoch). How often does clipping act, and why does the loss still not move?
# 8. **BatchNorm and clipping.** Train `train("plain + BatchNorm, clipped", norm="BatchNorm", clip=1.0)` and
#    compare its `grad_norm` in the first epoch with later ones. Why does capping the steps slow this network
#    down so much, when it helped the He-initialised one? (Hint: BatchNorm makes the loss unchanged when a
#    layer's weights are scaled, so large early steps grow the weights and thereby shrink later steps.)
