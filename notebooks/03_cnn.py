# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 03 · Convolutional networks
#
# An image is a grid of pixels in which nearby pixels belong together and the same pattern (an edge, a corner)
# can appear anywhere. A convolutional layer builds both facts into the model: each output looks only at a
# small neighbourhood, and the same small set of weights is slid over the whole image. This notebook works out
# the arithmetic of that sliding window, writes convolution and pooling from scratch, checks them against
# PyTorch, and then builds and trains the networks that use them: a LeNet-style net on digits, and a small
# residual network (standard and depthwise-separable) on images: the shapes, or real photos of clothes
# (Fashion-MNIST) at full scale.
#
# **Learning goals**
# - Compute the output size of a convolution or pooling layer from kernel size, padding, stride and dilation.
# - Write `conv2d` from scratch, first with loops and then with `unfold` (im2col) and one matrix product,
#   equal to `F.conv2d`; write max and average pooling the same way.
# - Count the parameters of a convolution, and see why it needs far fewer than a fully connected layer.
# - Build and train a LeNet-style network to at least 98 % test accuracy on digits.
# - Write a residual block with BatchNorm and a depthwise-separable convolution, compare their parameters and
#   FLOPs (checked against PyTorch's FLOP counter) and their measured speed, and train both on images.
# - Use the `channels_last` memory format and measure what it changes on your machine.
# - Look inside a trained network: filters and feature maps; and try kernels by hand in a playground.
#
# **Prerequisites:** notebook 01 (the training loop, `dlcourse.fit`) and notebook 02 (BatchNorm, residual
# connections); matrix products and tensor shapes.
#
# **Time:** seconds at `smoke`; a minute or two at `small` on a laptop CPU; at `full` the residual networks are
# wider and train on 20,000 Fashion-MNIST photos on a GPU (about 30 MB, downloaded once into a cache;
# `DLCOURSE_OFFLINE=1` keeps the shapes). The last cell prints how long this run took on your machine.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import copy
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dlcourse
from dlcourse.models import count_parameters

cfg = dlcourse.setup(seed=0)
device = cfg.device
progress = cfg.pick(smoke=False, small=True, full=True)
t_start = time.perf_counter()

# %% [markdown]
# ## 1. Why not a fully connected layer?
# Images come as tensors of shape (B, C, H, W): batch, channels (1 for grey, 3 for RGB), height, width. A
# fully connected layer from a 3×32×32 image to 16 feature maps of the same size connects every input value to
# every output value. A **convolution** with a 3×3 kernel computes each output value from the 3×3
# neighbourhood of its position in every input channel, and it uses the *same* 3×3×3 weights at every
# position. Count both:

# %%
C_in, C_out, H, W = 3, 16, 32, 32
dense = nn.Linear(C_in * H * W, C_out * H * W, device="meta")   # "meta": shapes only, no memory allocated
conv = nn.Conv2d(C_in, C_out, kernel_size=3, padding=1)
print(f"fully connected 3x32x32 -> 16x32x32: {count_parameters(dense):>12,} parameters")
print(f"3x3 convolution 3x32x32 -> 16x32x32: {count_parameters(conv):>12,} parameters "
      f"= {C_out} x ({C_in} x 3 x 3) weights + {C_out} biases")
assert count_parameters(conv) == C_out * C_in * 3 * 3 + C_out

# %% [markdown]
# Sharing the weights across positions has a second consequence: the layer is **translation equivariant**.
# Shift the input, and the output shifts by the same amount. With circular padding (the image wraps around at
# its borders) this holds exactly; with zero padding it holds everywhere except near the borders.

# %%
torch.manual_seed(cfg.seed)
conv_circular = nn.Conv2d(1, 4, kernel_size=3, padding=1, padding_mode="circular")
X = torch.randn(1, 1, 12, 12)                                 # (B, C, H, W)
shift = lambda t: torch.roll(t, shifts=(2, 3), dims=(2, 3))   # move 2 rows down, 3 columns right
with torch.no_grad():
    equivariance_gap = (conv_circular(shift(X)) - shift(conv_circular(X))).abs().max().item()
print(f"max |conv(shift(X)) - shift(conv(X))| = {equivariance_gap:.1e}")
assert equivariance_gap < 1e-5

# %% [markdown]
# ## 2. Convolution arithmetic
# Along one axis, an input of size $n$ with padding $p$ on both sides becomes $n + 2p$ long. A kernel of size
# $k$ with dilation $d$ (a gap of $d - 1$ between its taps) spans $d(k - 1) + 1$ inputs. Starting at position
# 0 and moving by the stride $s$, the window fits
# $$n_\text{out} = \left\lfloor \frac{n + 2p - d(k - 1) - 1}{s} \right\rfloor + 1$$
# times. Height and width are computed separately. Pooling layers slide a window the same way, so the formula
# covers them too (their default stride is the kernel size).

# %%
def conv_output_size(n: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length along one axis of a convolution or pooling window over an input of length n."""
    return (n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


print(f"{'n':>3} {'k':>3} {'s':>3} {'p':>3} {'d':>3} | {'formula':>7} {'nn.Conv2d':>9}")
checked = 0
for n in (5, 8, 13, 32):
    for k in (1, 2, 3, 5):
        for s in (1, 2, 3):
            for p in (0, 1, 2):
                for d in (1, 2):
                    if n + 2 * p < d * (k - 1) + 1:
                        continue                     # the kernel does not fit: PyTorch raises an error
                    layer = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d, device="meta")
                    actual = layer(torch.empty(1, 1, n, n, device="meta")).shape[-1]
                    assert conv_output_size(n, k, s, p, d) == actual, (n, k, s, p, d)
                    if n == 13 and k in (3, 5) and p < 2:
                        ours = conv_output_size(n, k, s, p, d)
                        print(f"{n:>3} {k:>3} {s:>3} {p:>3} {d:>3} | {ours:>7} {actual:>9}")
                    checked += 1
# pooling: the same formula, with stride = kernel size by default
for n, k in [(8, 2), (7, 2), (32, 3)]:
    assert conv_output_size(n, k, stride=k) == nn.MaxPool2d(k)(torch.empty(1, 1, n, n)).shape[-1]
print(f"... the formula matched nn.Conv2d in all {checked} settings")

# %% [markdown]
# Three rules of thumb fall out of the formula: with stride 1, padding $p = d(k-1)/2$ keeps the size ("same"
# padding: $p = 1$ for a 3×3 kernel); stride 2 halves it (rounding down); and dilation widens what one output
# sees (its *receptive field*) without adding weights.
#
# ## 3. Convolution from scratch
# For output channel $o$ at position $(i, j)$, a convolution computes
# $$Y_{b,o,i,j} = \mathrm{bias}_o + \sum_{c}\sum_{u,v} W_{o,c,u,v}\; X_{b,\,c,\;s i + d u,\;s j + d v}$$
# over the padded input. (Mathematicians would flip the kernel and call this cross-correlation; deep learning
# calls it convolution, and since the weights are learned the difference does not matter.)
#
# **Version 1: a loop over output positions.** Each position takes a (B, C, k, k) patch and contracts it with
# the (C_out, C, k, k) weights over channel and kernel axes.

# %%
def conv2d_loops(X: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 stride: int = 1, padding: int = 0) -> torch.Tensor:
    """(B, C, H, W) input, (C_out, C, k, k) weight -> (B, C_out, H_out, W_out), one position at a time."""
    B, C, H, W = X.shape
    C_out, _, k, _ = weight.shape
    H_out, W_out = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    X = F.pad(X, (padding, padding, padding, padding))               # (B, C, H + 2p, W + 2p)
    Y = X.new_zeros(B, C_out, H_out, W_out)
    for i in range(H_out):
        for j in range(W_out):
            patch = X[:, :, i * stride:i * stride + k, j * stride:j * stride + k]   # (B, C, k, k)
            Y[:, :, i, j] = torch.einsum("bcuv,ocuv->bo", patch, weight)           # (B, C_out)
    return Y if bias is None else Y + bias[:, None, None]


gen = torch.Generator().manual_seed(cfg.seed)
X = torch.randn(2, 3, 9, 9, generator=gen)          # (B, C, H, W)
weight = torch.randn(4, 3, 3, 3, generator=gen)     # (C_out, C, k, k)
bias = torch.randn(4, generator=gen)
for stride, padding in [(1, 0), (1, 1), (2, 1), (3, 2)]:
    ours = conv2d_loops(X, weight, bias, stride, padding)
    reference = F.conv2d(X, weight, bias, stride=stride, padding=padding)
    assert ours.shape == reference.shape and torch.allclose(ours, reference, atol=1e-5)
print("conv2d_loops matches F.conv2d; output shape for stride 2, padding 1:", tuple(ours.shape))

# %% [markdown]
# **Version 2: unfold (im2col).** The loop above does one small contraction per output position. `F.unfold`
# instead copies every patch into a column of a matrix: for kernel k×k it turns (B, C, H, W) into (B, C·k·k,
# L), where L = H_out·W_out is the number of positions. Each column lists the patch channel by channel, row by
# row: the same order as a weight flattened to (C_out, C·k·k). The whole convolution is then **one matrix
# product**, the operation that CPUs and GPUs run fastest. Look at the columns of a tiny 1×4×4 image first:

# %%
tiny = torch.arange(16.0).reshape(1, 1, 4, 4)       # (B=1, C=1, 4, 4): pixel values 0..15
cols = F.unfold(tiny, kernel_size=2)                 # (1, 1*2*2, 3*3): nine 2x2 patches
print(tiny[0, 0].int(), "\ncolumns of unfold (one patch per column):\n", cols[0].int())
assert cols.shape == (1, 4, 9) and cols[0, :, 0].tolist() == [0, 1, 4, 5]   # the top-left patch


# %%
def conv2d_unfold(X: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride: int = 1, padding: int = 0, dilation: int = 1) -> torch.Tensor:
    """F.conv2d through im2col: (B, C, H, W) and (C_out, C, kh, kw) -> (B, C_out, H_out, W_out)."""
    B, C, H, W = X.shape
    C_out, _, kh, kw = weight.shape
    H_out = conv_output_size(H, kh, stride, padding, dilation)
    W_out = conv_output_size(W, kw, stride, padding, dilation)
    cols = F.unfold(X, (kh, kw), dilation=dilation, padding=padding, stride=stride)   # (B, C*kh*kw, L)
    Y = weight.reshape(C_out, -1) @ cols                                              # (B, C_out, L)
    if bias is not None:
        Y = Y + bias[:, None]                                                         # (C_out, 1) broadcasts
    return Y.reshape(B, C_out, H_out, W_out)


gen = torch.Generator().manual_seed(cfg.seed)
for (B, C, H, W, C_out, kh, kw, stride, padding, dilation) in [
        (2, 3, 9, 9, 4, 3, 3, 1, 0, 1), (2, 3, 9, 11, 5, 3, 3, 2, 1, 1), (1, 2, 16, 16, 3, 5, 3, 1, 2, 1),
        (3, 4, 12, 12, 2, 3, 3, 1, 2, 2), (2, 1, 8, 8, 6, 1, 1, 1, 0, 1), (1, 3, 7, 10, 2, 2, 4, 3, 1, 2)]:
    X = torch.randn(B, C, H, W, generator=gen)
    weight = torch.randn(C_out, C, kh, kw, generator=gen)
    bias = torch.randn(C_out, generator=gen)
    ours = conv2d_unfold(X, weight, bias, stride, padding, dilation)
    reference = F.conv2d(X, weight, bias, stride=stride, padding=padding, dilation=dilation)
    assert ours.shape == reference.shape and torch.allclose(ours, reference, atol=1e-4), (kh, kw, stride)
print("conv2d_unfold matches F.conv2d (rectangular kernels, stride, padding, dilation)")

# %% [markdown]
# Gradients come for free: `unfold`, the matrix product and `reshape` are all differentiable, so autograd
# gives the same gradients as PyTorch's convolution.

# %%
X = torch.randn(2, 3, 8, 8, generator=gen, requires_grad=True)
weight = torch.randn(4, 3, 3, 3, generator=gen, requires_grad=True)
grads_ours = torch.autograd.grad(conv2d_unfold(X, weight, padding=1).square().sum(), (X, weight))
grads_torch = torch.autograd.grad(F.conv2d(X, weight, padding=1).square().sum(), (X, weight))
assert all(torch.allclose(a, b, atol=1e-3) for a, b in zip(grads_ours, grads_torch))
print("gradients with respect to X and weight match F.conv2d's")

# %% [markdown]
# How fast are the three? Measured here on a batch of feature maps; the loop version pays Python's overhead at
# every output position, the unfold version pays for copying each input value k·k times, and `F.conv2d` uses
# kernels tuned for your hardware.

# %%
def sync() -> None:
    """Wait for queued GPU work, so that timings measure the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, repeats: int = 5) -> float:
    """Best wall-clock seconds over ``repeats`` calls of ``fn`` (after one warm-up call)."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


X = torch.randn(16, 32, 16, 16, device=device)        # (B, C, H, W)
weight = torch.randn(32, 32, 3, 3, device=device)      # (C_out, C, 3, 3)
with torch.no_grad():
    speeds = {
        "loops over positions": best_time(lambda: conv2d_loops(X, weight, padding=1), repeats=2),
        "unfold + matmul": best_time(lambda: conv2d_unfold(X, weight, padding=1)),
        "F.conv2d": best_time(lambda: F.conv2d(X, weight, padding=1)),
    }
print(f"3x3 conv, input {tuple(X.shape)}, 32 -> 32 channels, on {device}")
print(f"{'implementation':<22} {'ms':>8}")
for name, seconds in speeds.items():
    print(f"{name:<22} {1000 * seconds:>8.2f}")

# %% [markdown]
# ## 4. Pooling
# A pooling layer slides a window over each channel separately and keeps one summary value: the maximum (max
# pooling) or the mean (average pooling). It has no weights. With a 2×2 window and stride 2 it halves height
# and width, so later layers see a larger part of the image for the same cost, and a small shift of a feature
# inside a window does not change the maximum. Unfold gives it in three lines: put each channel's k·k window
# values on their own axis and reduce over it.

# %%
def pool2d_unfold(X: torch.Tensor, kernel_size: int, stride: int | None = None,
                  mode: str = "max") -> torch.Tensor:
    """Max or mean over k×k windows (stride defaults to k): (B, C, H, W) -> (B, C, H_out, W_out)."""
    stride = stride or kernel_size
    B, C, H, W = X.shape
    H_out, W_out = conv_output_size(H, kernel_size, stride), conv_output_size(W, kernel_size, stride)
    k2 = kernel_size * kernel_size
    cols = F.unfold(X, kernel_size, stride=stride).reshape(B, C, k2, -1)   # (B, C, k*k, L)
    pooled = cols.amax(dim=2) if mode == "max" else cols.mean(dim=2)                             # (B, C, L)
    return pooled.reshape(B, C, H_out, W_out)


X = torch.randn(2, 3, 9, 8, generator=gen)
for k, s in [(2, None), (3, None), (3, 2), (2, 1)]:
    assert torch.allclose(pool2d_unfold(X, k, s, "max"), F.max_pool2d(X, k, s))
    assert torch.allclose(pool2d_unfold(X, k, s, "mean"), F.avg_pool2d(X, k, s), atol=1e-6)
print("pool2d_unfold matches F.max_pool2d and F.avg_pool2d; 9x8 -> 2x2 pooling ->",
      tuple(pool2d_unfold(X, 2).shape[-2:]))

# %% [markdown]
# ## 5. A LeNet-style network on digits
# LeNet (LeCun and colleagues, 1989–1998) fixed the shape that image classifiers kept for two decades: a few
# blocks of convolution, nonlinearity and pooling that trade spatial size for channels, then fully connected
# layers on the flattened result. Ours adds BatchNorm after each convolution (notebook 02), which makes it
# train quickly with little tuning. For 8×8 digits two blocks are enough: 8×8 → 4×4 → 2×2.

# %%
def lenet(num_classes: int = 10, c1: int = 32, c2: int = 64, hidden: int = 128) -> nn.Sequential:
    """Two conv–BN–ReLU–pool blocks and two linear layers: (B, 1, 8, 8) digits -> (B, num_classes) logits."""
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),    # (B, c1, 8, 8)
        nn.MaxPool2d(2),                                                              # (B, c1, 4, 4)
        nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(),   # (B, c2, 4, 4)
        nn.MaxPool2d(2),                                                              # (B, c2, 2, 2)
        nn.Flatten(),                                                                 # (B, c2 * 4)
        nn.Linear(c2 * 4, hidden), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(hidden, num_classes),                                               # (B, 10) logits
    )


torch.manual_seed(cfg.seed)
model = lenet().to(device)
X = torch.zeros(1, 1, 8, 8, device=device)
print(f"{'layer':<12} {'output shape':<18} {'parameters':>10}")
for layer in model:
    X = layer(X)
    print(f"{type(layer).__name__:<12} {str(tuple(X.shape)):<18} {count_parameters(layer):>10,}")
print(f"{'total':<31} {count_parameters(model):>10,}")
size = 8
for _ in range(2):                    # conv (k=3, p=1) keeps the size, pooling halves it
    size = conv_output_size(conv_output_size(size, 3, padding=1), 2, stride=2)
assert model[:8](torch.zeros(1, 1, 8, 8, device=device)).shape == (1, 64, size, size) == (1, 64, 2, 2)

# %% [markdown]
# Training uses `dlcourse.fit` with Adam and a one-cycle schedule (the learning rate rises, then decays to
# almost zero; it is stepped every batch).

# %%
digits = dlcourse.data.digits(seed=cfg.seed)
train_loader, val_loader, test_loader = digits.loaders(batch_size=32, seed=cfg.seed)
num_epochs = cfg.pick(smoke=3, small=15, full=30)
lr = 3e-3

torch.manual_seed(cfg.seed)
model = lenet().to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=lr)
scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr,
                                                total_steps=num_epochs * len(train_loader))
history_digits = dlcourse.fit(model, optimizer, train_loader, val_loader, num_epochs=num_epochs,
                              scheduler=scheduler, scheduler_step="batch", progress=progress)
digits_test = dlcourse.evaluate(model, test_loader)
print(f"LeNet-style net on digits: {num_epochs} epochs in {sum(history_digits['seconds']):.1f} s, "
      f"validation accuracy {history_digits.last['val_acc']:.1%}, test accuracy {digits_test['acc']:.1%} "
      f"({len(digits.test)} test images)")
assert digits_test["acc"] >= cfg.pick(smoke=0.9, small=0.98, full=0.98), f"{digits_test['acc']:.1%}"
dlcourse.viz.plot_history(history_digits, title="LeNet-style CNN on digits")

# %% [markdown]
# An MLP (notebook 01) sees each image as 64 unrelated numbers; the CNN knows which pixels are neighbours and
# reuses its filters everywhere. Train an MLP with the same recipe on the same split and compare:

# %%
lenet_digits = model
torch.manual_seed(cfg.seed)
mlp_digits = dlcourse.models.mlp(64, [256], 10).to(device)          # flattens (B, 1, 8, 8) to (B, 64)
optimizer = torch.optim.Adam(mlp_digits.parameters(), lr=lr)
scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr,
                                                total_steps=num_epochs * len(train_loader))
dlcourse.fit(mlp_digits, optimizer, train_loader, val_loader, num_epochs=num_epochs, scheduler=scheduler,
             scheduler_step="batch", progress=False)
print(f"{'digits, ' + str(num_epochs) + ' epochs':<22} {'parameters':>10} {'test acc':>9} {'mistakes':>9}")
for name, net in [("MLP (64-256-10)", mlp_digits), ("LeNet-style CNN", lenet_digits)]:
    preds, labels = dlcourse.predict(net, test_loader)
    print(f"{name:<22} {count_parameters(net):>10,} {(preds == labels).float().mean().item():>9.1%} "
          f"{int((preds != labels).sum()):>9}")

# %% [markdown]
# The CNN's mistakes, if any are left, come first below (prediction, then the true label in brackets):

# %%
preds, labels = dlcourse.predict(lenet_digits, test_loader)
wrong = (preds != labels).nonzero().flatten()
print(f"{len(wrong)} mistakes out of {len(labels)} test digits")
show = torch.cat([wrong, (preds == labels).nonzero().flatten()])[:16]
dlcourse.viz.image_grid(digits.test.tensors[0][show], labels=labels[show], preds=preds[show],
                        classes=digits.classes)

# %% [markdown]
# ## 6. Residual blocks with BatchNorm
# Stacking more conv layers makes a network harder to train (notebook 02 showed why for MLPs). A **residual
# block** computes a correction $F(X)$ and adds it to its input,
# $Y = \mathrm{ReLU}(F(X) + \mathrm{shortcut}(X))$, where $F$ is conv–BN–ReLU–conv–BN. The gradient flows back
# through the addition unchanged, so each block only has to learn how its output should *differ* from its
# input.
#
# When the block changes the shape (stride 2 halves height and width, or the channel count changes), the input
# cannot be added as it is; the shortcut then becomes a 1×1 convolution with the same stride, followed by
# BatchNorm.
#
# The block takes a `conv` factory so that section 7 can swap in a different kind of 3×3 convolution.

# %%
def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Module:
    """A standard 3×3 convolution with "same" padding (no bias: a BatchNorm follows)."""
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class ResidualBlock(nn.Module):
    """ReLU(BN(conv(ReLU(BN(conv(X))))) + shortcut(X)): (B, c_in, H, W) -> (B, c_out, H/stride, W/stride)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, conv=conv3x3) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = conv(c_out, c_out, 1), nn.BatchNorm2d(c_out)
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        else:  # match the shape of the residual branch: 1x1 conv with the same stride
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(X)))      # (B, c_out, H', W')
        out = self.bn2(self.conv2(out))            # (B, c_out, H', W')
        return F.relu(out + self.shortcut(X))      # the skip connection


torch.manual_seed(cfg.seed)
X = torch.randn(4, 16, 12, 12)
same, down = ResidualBlock(16, 16), ResidualBlock(16, 32, stride=2)
print("same shape:", tuple(same(X).shape), "| downsampling:", tuple(down(X).shape))
print("projection shortcut:", down.shortcut)
assert same(X).shape == X.shape and down(X).shape == (4, 32, 6, 6)

# With the last BatchNorm's scale at zero, the residual branch outputs 0 and the block is just ReLU(X):
# a freshly added block can start as (almost) the identity, a common initialisation trick.
nn.init.zeros_(same.bn2.weight)
assert torch.allclose(same(X), F.relu(X))

# %% [markdown]
# A small residual network for the 32×32 shapes: a 3×3 "stem" convolution and a 2×2 max-pool (32 → 16), three
# residual blocks (16×16, then 8×8, then 4×4, with channels doubling), global average pooling over the
# remaining positions, and a linear classifier.

# %%
class ResNetSmall(nn.Module):
    """Stem, three residual blocks, global average pooling, linear head: (B, 3, H, W) -> (B, num_classes)."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), num_classes: int = 6,
                 in_channels: int = 3, conv=conv3x3) -> None:
        super().__init__()
        w0, w1, w2 = widths
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 3, padding=1, bias=False), nn.BatchNorm2d(w0),
                                  nn.ReLU(), nn.MaxPool2d(2))                      # (B, w0, H/2, W/2)
        self.blocks = nn.Sequential(ResidualBlock(w0, w0, 1, conv),                # (B, w0, H/2, W/2)
                                    ResidualBlock(w0, w1, 2, conv),                # (B, w1, H/4, W/4)
                                    ResidualBlock(w1, w2, 2, conv))                # (B, w2, H/8, W/8)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w2, num_classes))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(X)))                              # (B, num_classes) logits


widths = cfg.pick(smoke=(16, 32, 64), small=(16, 32, 64), full=(32, 64, 128))
print(f"ResNetSmall{widths}: {count_parameters(ResNetSmall(widths)):,} parameters")
assert ResNetSmall(widths)(torch.randn(2, 3, 32, 32)).shape == (2, 6)

# %% [markdown]
# ## 7. Depthwise-separable convolutions
# A standard 3×3 convolution mixes space and channels at once: every output channel has its own 3×3 filter for
# every input channel, $k^2 C_\text{in} C_\text{out}$ weights. A **depthwise-separable** convolution (as in
# MobileNet) splits the job in two:
# 1. **depthwise**: one k×k filter per input channel, applied to that channel only (`groups=C_in`):
#    $k^2 C_\text{in}$ weights;
# 2. **pointwise**: a 1×1 convolution that mixes the channels at each position: $C_\text{in} C_\text{out}$
#    weights.
#
# The cost of a convolution in multiply-adds is (weights per output position) × (output positions),
# $k^2 \frac{C_\text{in}}{g} C_\text{out} \cdot H_\text{out} W_\text{out}$ for `groups` $g$. So both
# parameters and FLOPs shrink by the factor $\frac{1}{C_\text{out}} + \frac{1}{k^2}$, close to 9× for 3×3
# kernels and wide layers.
#
# The depthwise part can be written from scratch too: unfold, then weight each channel's k·k window values
# with that channel's own filter; no sum over channels.

# %%
def depthwise_conv2d_unfold(X: torch.Tensor, weight: torch.Tensor, stride: int = 1,
                            padding: int = 0) -> torch.Tensor:
    """Depthwise conv, one filter per channel: (B, C, H, W) and (C, 1, k, k) -> (B, C, H_out, W_out)."""
    B, C, H, W = X.shape
    k = weight.shape[-1]
    H_out, W_out = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    cols = F.unfold(X, k, padding=padding, stride=stride).reshape(B, C, k * k, -1)   # (B, C, k*k, L)
    Y = torch.einsum("bckl,ck->bcl", cols, weight.reshape(C, k * k))                  # (B, C, L)
    return Y.reshape(B, C, H_out, W_out)


def separable_conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3×3 (one filter per input channel) then pointwise 1×1; a drop-in for ``conv3x3``."""
    return nn.Sequential(nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False))


X = torch.randn(2, 5, 9, 9, generator=gen)
w_depthwise = torch.randn(5, 1, 3, 3, generator=gen)
for stride, padding in [(1, 1), (2, 1), (1, 0)]:
    assert torch.allclose(depthwise_conv2d_unfold(X, w_depthwise, stride, padding),
                          F.conv2d(X, w_depthwise, stride=stride, padding=padding, groups=5), atol=1e-5)
print("depthwise_conv2d_unfold matches F.conv2d(..., groups=C)")


# %% [markdown]
# Parameters and FLOPs, by formula, by counting the layers' weights, and by PyTorch's `FlopCounterMode` (which
# counts a multiply-add as 2 FLOPs), for one layer with 64 channels in and out on a 16×16 map:

# %%
def conv_macs(c_in: int, c_out: int, k: int, h_out: int, w_out: int, groups: int = 1) -> int:
    """Multiply-adds of a k×k convolution (bias ignored)."""
    return k * k * (c_in // groups) * c_out * h_out * w_out


def measured_flops(module: nn.Module, X: torch.Tensor) -> int:
    """FLOPs of one forward pass, counted by PyTorch."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(X)
    return counter.get_total_flops()


c, k, hw = 64, 3, 16
X = torch.randn(1, c, hw, hw)
layers = {"standard 3x3": conv3x3(c, c), "depthwise-separable": separable_conv3x3(c, c)}
formulas = {"standard 3x3": (k * k * c * c, conv_macs(c, c, k, hw, hw)),
            "depthwise-separable": (k * k * c + c * c,
                                    conv_macs(c, c, k, hw, hw, groups=c) + conv_macs(c, c, 1, hw, hw))}
print(f"{'64 -> 64 channels, 16x16':<24} {'params':>8} {'formula':>8} {'MFLOPs':>8} {'formula':>8}")
for name, layer in layers.items():
    params, flops = count_parameters(layer), measured_flops(layer, X)
    params_formula, macs_formula = formulas[name]
    print(f"{name:<24} {params:>8,} {params_formula:>8,} {flops / 1e6:>8.2f} {2 * macs_formula / 1e6:>8.2f}")
    assert params == params_formula and flops == 2 * macs_formula
ratio = count_parameters(layers["standard 3x3"]) / count_parameters(layers["depthwise-separable"])
print(f"the separable layer has {ratio:.1f}x fewer parameters and FLOPs "
      f"(1 / (1/64 + 1/9) = {1 / (1 / 64 + 1 / 9):.1f})")

# %% [markdown]
# Fewer FLOPs do not automatically mean less time. A depthwise convolution does only k·k multiply-adds per
# value it reads, so it is limited by memory traffic rather than arithmetic, and libraries optimise it less
# than dense convolutions. Measure the same two networks, standard and separable, on a batch of shapes images:

# %%
batch_size_bench = cfg.pick(smoke=32, small=128, full=256)
X_bench = torch.rand(batch_size_bench, 3, 32, 32, device=device)
nets = {"standard": ResNetSmall(widths).to(device).eval(),
        "separable": ResNetSmall(widths, conv=separable_conv3x3).to(device).eval()}
print(f"ResNetSmall{widths}, forward pass of {batch_size_bench} images 3x32x32 on {device}")
print(f"{'convolutions':<12} {'params':>9} {'MFLOPs/img':>11} {'ms/batch':>9}")
for name, net in nets.items():
    with torch.no_grad():
        ms = 1000 * best_time(lambda: net(X_bench))
    flops = measured_flops(net, X_bench[:1])
    print(f"{name:<12} {count_parameters(net):>9,} {flops / 1e6:>11.2f} {ms:>9.2f}")
assert count_parameters(nets["separable"]) < count_parameters(nets["standard"]) / 2

# %% [markdown]
# ## 8. Training on images
# At `smoke` and `small` scale the images are the **shapes**: 32×32 colour images of six shapes (circle, ring,
# square, triangle, cross, star) in random colours, positions, sizes and rotations on a noisy background, drawn
# from a seed. A shape can be anywhere in the image: exactly the situation weight sharing and pooling are made
# for. At `full` scale they are real photos: **Fashion-MNIST**, 70,000 grey 28×28 pictures of clothes, shoes and
# bags in ten classes, downloaded once (about 30 MB, checked against its SHA-256) into a cache folder
# (`dlcourse data path` shows it; `DLCOURSE_OFFLINE=1` keeps full scale on the shapes). The network does not
# care which: it reads the number of input channels and classes from the data.

# %%
n_train = cfg.pick(smoke=600, small=2000, full=20000)
n_eval = cfg.pick(smoke=300, small=1000, full=2000)
images = dlcourse.data.real_or_offline(
    cfg, "fashion-mnist", n_train=n_train, n_val=n_eval,              # the official 10,000 test photos
    offline=lambda: dlcourse.data.shapes(n_train=n_train, n_val=n_eval, n_test=n_eval, seed=cfg.seed))
print(images)
X_images, y_images = images.train.tensors                                # (N, C, H, W), (N,)
in_channels, num_classes = X_images.shape[1], len(images.classes)
dlcourse.viz.image_grid(X_images[:16], labels=y_images[:16], classes=images.classes)

# %% [markdown]
# Both residual networks, standard and depthwise-separable, get the same data, schedule and number of epochs.

# %%
num_epochs_images = cfg.pick(smoke=3, small=8, full=20)
lr_images = 5e-3
batch_size = cfg.pick(smoke=16, small=64, full=128)   # smoke: small batches, so a few epochs are many steps
train_loader, val_loader, test_loader = images.loaders(batch_size=batch_size, seed=cfg.seed)


def train_resnet(conv) -> tuple[nn.Module, dlcourse.History]:
    """Train ResNetSmall with the given 3×3 convolution on ``images``; return the model and its History."""
    torch.manual_seed(cfg.seed)
    model = ResNetSmall(widths, num_classes, in_channels, conv=conv).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr_images, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr_images,
                                                    total_steps=num_epochs_images * len(train_loader))
    history = dlcourse.fit(model, optimizer, train_loader, val_loader, num_epochs=num_epochs_images,
                           scheduler=scheduler, scheduler_step="batch", progress=progress)
    return model, history


results = {}
for name, conv in [("standard", conv3x3), ("separable", separable_conv3x3)]:
    model, history = train_resnet(conv)
    results[name] = (model, history, dlcourse.evaluate(model, test_loader))

print(f"{images.name}, {len(images.train)} training images, {num_epochs_images} epochs, on {device}")
print(f"{'convolutions':<12} {'params':>9} {'train s':>8} {'val acc':>8} {'test acc':>9}")
for name, (model, history, test_scores) in results.items():
    print(f"{name:<12} {count_parameters(model):>9,} {sum(history['seconds']):>8.1f} "
          f"{history.last['val_acc']:>8.1%} {test_scores['acc']:>9.1%}")
# What "learned well" means depends on the data: the shapes are easy; on Fashion-MNIST a linear model reaches
# about 84 % and the best networks about 95 % (shirts, T-shirts, pullovers and coats are hard to tell apart).
pass_marks = {"shapes": cfg.pick(smoke=(0.5, 0.4), small=(0.9, 0.85), full=(0.95, 0.9)),
              "Fashion-MNIST": (0.86, 0.82)}                             # (standard, separable)
test_acc = results["standard"][2]["acc"]
assert test_acc >= pass_marks[images.name][0], f"test accuracy {test_acc:.1%}"
assert results["separable"][2]["acc"] >= pass_marks[images.name][1]
dlcourse.viz.plot_history(results["standard"][1], title=f"ResNetSmall (standard convolutions) on {images.name}")

# %% [markdown]
# If the validation curve jumps in an early epoch, that is BatchNorm at a high learning rate: in evaluation mode
# it uses running averages of the batch statistics, which lag behind weights that are still changing fast. As
# the one-cycle schedule lowers the learning rate, the weights settle and the two curves meet.

# %%
resnet = results["standard"][0]
preds, labels = dlcourse.predict(resnet, test_loader)
wrong = (preds != labels).nonzero().flatten()
print(f"{len(wrong)} mistakes out of {len(labels)} test images")
show = torch.cat([wrong, (preds == labels).nonzero().flatten()])[:16]
dlcourse.viz.image_grid(images.test.tensors[0][show], labels=labels[show], preds=preds[show],
                        classes=images.classes)

# %% [markdown]
# ## 9. Inside the network: filters and feature maps
# The first layer's filters act directly on pixels, so they can be drawn as tiny images. Each of the stem's
# 3×3 filters is shown as a patch (RGB for the colour shapes, grey for Fashion-MNIST; scaled to the full
# range), next to the feature maps it produces for one test image (after BatchNorm and ReLU, before pooling). A forward hook records a layer's
# output without changing the model.

# %%
def show_filters_and_maps(filters: torch.Tensor, maps: torch.Tensor, image: torch.Tensor, title: str):
    """Top row: the input image and each filter; bottom row: each filter's feature map. At most 16 filters."""
    n = min(16, len(filters))
    fig, axes = plt.subplots(2, n + 1, figsize=(1.1 * (n + 1), 2.6))
    grey = image.shape[0] == 1
    axes[0, 0].imshow(image[0] if grey else image.permute(1, 2, 0), cmap="gray" if grey else None)
    axes[0, 0].set_title("input", fontsize=8)
    for i in range(n):
        f = filters[i]
        f = (f - f.min()) / (f.max() - f.min() + 1e-8)                    # scale to [0, 1] for display
        axes[0, i + 1].imshow(f[0] if grey else f.permute(1, 2, 0), cmap="gray" if grey else None)
        axes[1, i + 1].imshow(maps[i], cmap="viridis")
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 1].set_title("filters", fontsize=8, loc="left")
    axes[1, 1].set_title("feature maps", fontsize=8, loc="left")
    fig.suptitle(title, fontsize=10)
    plt.close(fig)
    return fig


recorded = {}
hook = resnet.stem[2].register_forward_hook(lambda module, args, output: recorded.update(maps=output))
image = images.test.tensors[0][0]                                       # (C, H, W)
resnet.eval()
with torch.no_grad():
    resnet(image[None].to(device))
hook.remove()
stem_maps = recorded["maps"][0].cpu()                                   # (w0, H, W), after ReLU
assert stem_maps.shape == (widths[0], *image.shape[1:]) and (stem_maps >= 0).all()
show_filters_and_maps(resnet.stem[0].weight.detach().cpu(), stem_maps, image,
                      f"ResNetSmall stem on a {images.classes[int(images.test.tensors[1][0])]}")

# %% [markdown]
# Many first-layer filters become edge detectors, and on the colour shapes also colour detectors: a feature map
# lights up along the outline of the object on one side, or on one colour. Deeper layers combine these into larger patterns, but their filters
# act on feature maps rather than pixels and are hard to read directly. The LeNet-style net's 3×3 filters on a
# digit:

# %%
recorded = {}
hook = lenet_digits[2].register_forward_hook(lambda module, args, output: recorded.update(maps=output))
digit = digits.test.tensors[0][0]                                       # (1, 8, 8)
lenet_digits.eval()
with torch.no_grad():
    lenet_digits(digit[None].to(device))
hook.remove()
show_filters_and_maps(lenet_digits[0].weight.detach().cpu(), recorded["maps"][0].cpu(), digit,
                      f"LeNet-style net, first layer, on a {int(digits.test.tensors[1][0])}")

# %% [markdown]
# ## 10. Memory format: `channels_last`
# A (B, C, H, W) tensor is stored in memory in some order. The default, *contiguous* or NCHW, keeps each
# channel's H×W map together. **`channels_last`** (NHWC) keeps the C values of each pixel together. The shape
# and every value stay the same; only the strides (how many elements to skip to move one step along each axis)
# change.

# %%
X = torch.rand(8, 16, 32, 32)
X_cl = X.to(memory_format=torch.channels_last)
print(f"{'format':<16} {'shape':<18} strides")
print(f"{'contiguous':<16} {str(tuple(X.shape)):<18} {X.stride()}")
print(f"{'channels_last':<16} {str(tuple(X_cl.shape)):<18} {X_cl.stride()}")
assert X_cl.shape == X.shape and torch.equal(X_cl, X)
assert X_cl.stride(1) == 1 and X_cl.is_contiguous(memory_format=torch.channels_last)

# %% [markdown]
# A model converts its 4-D weights with `model.to(memory_format=torch.channels_last)`; convolutions then keep
# their outputs in the same format, and the results are the same up to rounding. Which format is faster
# depends on the hardware and the library kernels, so measure one training step (forward, backward, update) of
# the residual network (on random 3×32×32 inputs) in both formats, in float32 and under bfloat16 autocast:

# %%
model_nchw = ResNetSmall(widths).to(device)
model_nhwc = copy.deepcopy(model_nchw).to(memory_format=torch.channels_last)
X_nhwc = X_bench.to(memory_format=torch.channels_last)
model_nchw.eval()
model_nhwc.eval()
# On CUDA, cuDNN runs float32 convolutions in TF32 (10-bit mantissa) by default, and the two formats may pick
# different kernels: compare them in true float32, where only the order of the additions differs.
tf32_conv = torch.backends.cudnn.allow_tf32
torch.backends.cudnn.allow_tf32 = False
try:
    with torch.no_grad():
        assert model_nhwc.stem[0](X_nhwc).is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(model_nchw(X_bench), model_nhwc(X_nhwc), atol=1e-4)
finally:
    torch.backends.cudnn.allow_tf32 = tf32_conv
print(dlcourse.config.tf32_status())

y_bench = torch.randint(0, 6, (len(X_bench),), device=device)
dtypes = [torch.float32, torch.bfloat16] if device.type in ("cpu", "cuda") else [torch.float32]


def train_step(model: nn.Module, optimizer, X: torch.Tensor, dtype: torch.dtype) -> None:
    """One forward/backward/update, under bfloat16 autocast when dtype is bfloat16."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        loss = F.cross_entropy(model(X), y_bench)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


print(f"one training step of ResNetSmall{widths}, batch of {len(X_bench)} images, on {device}")
print(f"{'precision':<10} {'contiguous ms':>14} {'channels_last ms':>17} {'ratio':>6}")
for dtype in dtypes:
    times = []
    for model, X in [(model_nchw, X_bench), (model_nhwc, X_nhwc)]:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        times.append(best_time(lambda: train_step(model, optimizer, X, dtype), repeats=3))
    print(f"{str(dtype).replace('torch.', ''):<10} {1000 * times[0]:>14.1f} {1000 * times[1]:>17.1f} "
          f"{times[0] / times[1]:>6.2f}")

# %% [markdown]
# A ratio above 1 means channels_last was faster. On a CPU the answer depends on which convolution kernels the
# library picks and can go either way at these sizes. On recent NVIDIA GPUs the picture is clearer: the
# tensor-core convolution kernels used for float16 and bfloat16 work on NHWC data, so with the default format
# the library converts layouts around every convolution, and `channels_last` removes those conversions; that
# is where it usually speeds up mixed-precision training of convolutional networks. Run this cell on a GPU to
# see it.
#
# ## 11. A kernel playground
# Before networks learned their filters, image processing used hand-made ones. Pick a preset or set the nine
# weights of a 3×3 kernel yourself and see what it does to one of section 8's images (converted to grey). The kernel is
# applied with `F.conv2d` and zero padding, so the output has the input's size.

# %%
PRESETS = {
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    "box blur": [[1 / 9] * 3] * 3,
    "gaussian blur": [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "edges (Laplacian)": [[0, -1, 0], [-1, 4, -1], [0, -1, 0]],
    "vertical edges (Sobel x)": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "horizontal edges (Sobel y)": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "emboss": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
}
grey_image = images.test.tensors[0][1].mean(dim=0)[None, None]         # (1, 1, H, W)


def apply_kernel(kernel) -> torch.Tensor:
    """Convolve the grey image with a 3×3 kernel (nested lists or a tensor); returns (H, W)."""
    weight = torch.as_tensor(kernel, dtype=torch.float32).reshape(1, 1, 3, 3)   # (C_out=1, C=1, 3, 3)
    return F.conv2d(grey_image, weight, padding=1)[0, 0]


# Quick checks: identity returns the image; a blur keeps a flat region flat; edge kernels give 0 there.
flat = torch.full((1, 1, 5, 5), 0.7)
as_weight = lambda kernel: torch.tensor(kernel, dtype=torch.float32).reshape(1, 1, 3, 3)
assert torch.allclose(apply_kernel(PRESETS["identity"]), grey_image[0, 0])
assert torch.allclose(F.conv2d(flat, as_weight(PRESETS["box blur"])), torch.full((1, 1, 3, 3), 0.7))
assert F.conv2d(flat, as_weight(PRESETS["edges (Laplacian)"])).abs().max() < 1e-6


def show_kernel(kernel) -> None:
    """Display the kernel's weights, the input image and the filtered image side by side."""
    kernel = torch.as_tensor(kernel, dtype=torch.float32).reshape(3, 3)
    out = apply_kernel(kernel)
    fig, axes = plt.subplots(1, 3, figsize=(8, 2.8))
    axes[0].imshow(kernel, cmap="coolwarm", vmin=-kernel.abs().max() - 1e-8, vmax=kernel.abs().max() + 1e-8)
    for (i, j), value in zip([(i, j) for i in range(3) for j in range(3)], kernel.flatten().tolist()):
        axes[0].text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=9)
    axes[0].set_title("kernel")
    axes[1].imshow(grey_image[0, 0], cmap="gray")
    axes[1].set_title("input")
    axes[2].imshow(out, cmap="gray")
    axes[2].set_title(f"output (range {out.min():.2f} to {out.max():.2f})")
    for ax in axes:
        ax.axis("off")
    plt.close(fig)
    display(fig)


# %% [markdown]
# Choosing a preset fills the nine sliders; moving a slider updates the output.

# %%
preset_picker = widgets.Dropdown(options=list(PRESETS), value="edges (Laplacian)", description="preset")
sliders = [widgets.FloatSlider(value=PRESETS[preset_picker.value][i // 3][i % 3], min=-5, max=5, step=0.05,
                               description=f"w[{i // 3},{i % 3}]", continuous_update=False,
                               layout=widgets.Layout(width="260px")) for i in range(9)]


def load_preset(change) -> None:
    """Copy the chosen preset's weights into the sliders (which redraws the output)."""
    for i, slider in enumerate(sliders):
        slider.value = PRESETS[change["new"]][i // 3][i % 3]


preset_picker.observe(load_preset, names="value")
output = widgets.interactive_output(lambda **w: show_kernel([w[f"w{i}"] for i in range(9)]),
                                    {f"w{i}": slider for i, slider in enumerate(sliders)})
display(widgets.VBox([preset_picker, widgets.GridBox(sliders, layout=widgets.Layout(
    grid_template_columns="repeat(3, 270px)")), output]))

# %% [markdown]
# ## Summary
# - A convolution slides one small set of weights over the image: far fewer parameters than a dense layer, and
#   a shifted input gives a shifted output. Output size per axis, for pooling too:
#   $\lfloor (n + 2p - d(k-1) - 1)/s \rfloor + 1$.
# - `unfold` (im2col) turns convolution into one matrix product; written this way it equals `F.conv2d` in
#   values and gradients. Pooling is unfold plus a max or mean over each window.
# - LeNet's pattern (conv, nonlinearity, pool, repeat, then linear layers) with BatchNorm classifies the
#   digits with a low error rate (the test accuracy is asserted above).
# - A residual block adds its input to a conv–BN–ReLU–conv–BN branch; a 1×1 convolution fixes the shortcut
#   when the shape changes.
# - A depthwise-separable convolution (depthwise k×k, then pointwise 1×1) has about $1/C_\text{out} + 1/k^2$
#   of the parameters and FLOPs of a standard one; measured time shrinks less, because depthwise convolutions
#   are limited by memory traffic.
# - `channels_last` changes strides, not values. Whether it is faster depends on the hardware: measure it.
# - First-layer filters are readable (colours, edges); hand-made kernels (blur, sharpen, edges) are the same
#   operation with fixed weights.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **Receptive field.** How many input pixels can one output of the LeNet-style net's second convolution
#    see? Work it out from the layers (3×3 conv, 2×2 pool, 3×3 conv), then check by back-propagating from one
#    output value to the input and counting the non-zero gradients.
# 2. **Transposed convolution.** With `W2 = weight.reshape(C_out, -1)`, `conv2d_unfold` computes
#    `W2 @ unfold(X)`. Show that its gradient with respect to `X` is `F.fold(W2.T @ grad_Y, ...)` (with
#    `grad_Y` flattened to (B, C_out, L)), and check that this equals `F.conv_transpose2d(grad_Y, weight)`.
# 3. **Groups.** Extend `conv2d_unfold` to `groups=g` (split the channels into g groups, convolve each
#    separately) and check it against `F.conv2d(..., groups=g)`. Depthwise is the case g = C.
# 4. **Data augmentation.** Randomly shift the digits by one pixel in each epoch (pad by 1, crop 8×8 at a
#    random offset). Does the validation accuracy of the LeNet-style net improve? Does it need more epochs?
# 5. **No pooling in the stem.** Remove the stem's max-pool from `ResNetSmall`. How do parameters, FLOPs, time
#    per epoch and accuracy change? Why does the parameter count not change?
# 6. **A plain network.** Remove the skip connections (return `F.relu(out)` in `ResidualBlock`) and train with
#    more blocks per stage. At what depth does the plain network fall behind the residual one?
# 7. **channels_last on a GPU.** If you have one, run section 10 with `DLCOURSE_SCALE=full` and compare
#    float32 with bfloat16. Which combination is fastest?
