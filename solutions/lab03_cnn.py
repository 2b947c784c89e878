# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 03: convolutional networks
#
# This lab goes with notebook 03. You write the arithmetic and the core operation of a convolutional layer,
# then the two building blocks of modern CNNs, and finally a network of your own design that has to learn the
# shapes images within a fixed training budget.
#
# **Learning goals.** After this lab you can
# - compute the output size of a convolution or pooling layer from kernel size, stride, padding and dilation;
# - write a 2-D convolution as `unfold` plus one matrix product, equal to `F.conv2d` in values and gradients;
# - build a residual block with BatchNorm, including the projection shortcut used when the shape changes;
# - build a depthwise-separable convolution block and count how many weights it saves;
# - design a small CNN that trains to a target accuracy in a few seconds;
# - predict the floating-point operations of a convolution, and check them with PyTorch's FLOP counter.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab03_cnn.ipynb` tells you what passes.
#
# **Time.** About 70–100 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 12 in all: output size 1, convolution via unfold 3, residual block 2, depthwise-separable
# block 2, parameter counts 1, a CNN for shapes 2, FLOPs of a convolution (predict, then measure) 1.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import torch
import torch.nn.functional as F
from torch import nn

import dlcourse

from dlcourse.grading.checks import check_accuracy, check_close, check_equal, check_prediction, forbid

cfg = dlcourse.setup(seed=0)
# The convolution test switches PyTorch's own convolutions off while it calls yours.
CONV_FUNCTIONS = ((F, "conv2d"), (torch, "conv2d"), (torch, "convolution"), (torch, "_convolution"),
                  (nn.Conv2d, "forward"), (nn.Conv2d, "_conv_forward"))
NO_BUILTIN_CONV = ("write this with F.unfold and a matrix product: F.conv2d, torch.conv2d and nn.Conv2d are "
                   "switched off while the tests call your function")


def fill_deterministically(module: nn.Module, seed: int) -> nn.Module:
    """Overwrite every floating-point parameter and buffer of ``module``, in name order, with values drawn
    from ``seed`` (running variances positive). Tests use it: results then do not depend on creation order."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict(keep_vars=True).items()):
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=gen) + 0.5 if name.endswith("running_var") else \
                    torch.randn(tensor.shape, generator=gen) * 0.5
                tensor.copy_(values)
    return module


# %% [markdown] nbgrader={"grade": false, "grade_id": "output-size-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: output size (1 point)
#
# Along one axis, a convolution (or pooling) window of size $k$ with dilation $d$ spans $d(k-1)+1$ input
# positions. The input of length $n$ is padded by $p$ on both sides, and the window moves by the stride $s$,
# starting at position 0, for as long as it fits. So
#
# $$n_\text{out} = \left\lfloor \frac{n + 2p - d(k - 1) - 1}{s} \right\rfloor + 1 .$$
#
# Write `conv_output_size(n, kernel_size, stride=1, padding=0, dilation=1)` returning $n_\text{out}$ as a
# Python `int`. The tests compare it with the shapes that `nn.Conv2d` and `nn.MaxPool2d` really produce.

# %% nbgrader={"grade": false, "grade_id": "output-size-answer", "locked": false, "schema_version": 3, "solution": true}
def conv_output_size(n: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Number of window positions along one axis of length n (a Python int)."""
    ### BEGIN SOLUTION
    return (n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "output-size-tests", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def _conv_size(n, k, s=1, p=0, d=1):
    """What nn.Conv2d really outputs along one axis (on the meta device: shapes only, no computation)."""
    layer = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d, device="meta")
    return layer(torch.empty(1, 1, n, n, device="meta")).shape[-1]


check_equal("3x3 kernel, no padding: 32 -> ?", conv_output_size(32, 3), expected=_conv_size(32, 3),
            hint="without padding a k-wide window fits n - k + 1 times")
check_equal("'same' padding: (32, k=3, p=1) and (8, k=5, p=2)",
            [conv_output_size(32, 3, padding=1), conv_output_size(8, 5, padding=2)],
            expected=[_conv_size(32, 3, p=1), _conv_size(8, 5, p=2)],
            hint="padding adds p positions on each side: n + 2p")
check_equal("stride 2: (32, k=3, s=2, p=1) and (7, k=3, s=2)",
            [conv_output_size(32, 3, stride=2, padding=1), conv_output_size(7, 3, stride=2)],
            expected=[_conv_size(32, 3, 2, 1), _conv_size(7, 3, 2)],
            hint="divide by the stride, round down (//), then add 1")
check_equal("dilation 2: (13, k=3, d=2) and (13, k=3, s=2, p=1, d=2)",
            [conv_output_size(13, 3, dilation=2), conv_output_size(13, 3, stride=2, padding=1, dilation=2)],
            expected=[_conv_size(13, 3, d=2), _conv_size(13, 3, 2, 1, 2)],
            hint="a dilated kernel spans d * (k - 1) + 1 positions")
check_equal("max pooling 2x2 (stride 2) of 7 pixels", conv_output_size(7, 2, stride=2),
            expected=nn.MaxPool2d(2)(torch.zeros(1, 1, 7, 7)).shape[-1],
            hint="pooling windows slide like convolution windows; a leftover row is dropped")
print("conv_output_size: visible tests passed")

### BEGIN HIDDEN TESTS
_settings = [(n, k, s, p, d) for n in (1, 5, 8, 16, 31) for k in (1, 2, 3, 5) for s in (1, 2, 3)
             for p in (0, 1, 2) for d in (1, 2, 3) if n + 2 * p >= d * (k - 1) + 1]
check_equal(f"{len(_settings)} settings of n, k, s, p, d (results as Python ints)",
            [conv_output_size(*_setting) for _setting in _settings],
            expected=[_conv_size(*_setting) for _setting in _settings], weight=2,
            hint="return (n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1 as a Python int")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "unfold-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: convolution as unfold + matrix product (3 points)
#
# A convolution with weight `W` of shape `(C_out, C, kh, kw)` computes, at every output position, the dot
# product of one `(C, kh, kw)` patch of the padded input with each of the `C_out` filters. `F.unfold` collects
# the patches: for an input `X` of shape `(B, C, H, W)` it returns `(B, C*kh*kw, L)`, one column per output
# position (`L = H_out * W_out`, positions in row-major order), each column listing its patch channel by
# channel, row by row: the same order as `W.reshape(C_out, -1)`.
#
# Write `conv2d_unfold(X, weight, bias=None, stride=1, padding=0)` that computes the convolution with
# `F.unfold` and **one** matrix product (no Python loop over positions), adds the bias (one per output channel)
# when there is one, and returns `(B, C_out, H_out, W_out)`. For `H_out` and `W_out`, write the formula of
# exercise 1 out here rather than calling `conv_output_size`, so that this exercise is graded on its own.
# Kernels may be rectangular (`kh != kw`).
#
# `F.conv2d`, `torch.conv2d` and `nn.Conv2d` are switched off while the tests call your function; they compare
# values and gradients with `F.conv2d`.

# %% nbgrader={"grade": false, "grade_id": "unfold-answer", "locked": false, "schema_version": 3, "solution": true}
def conv2d_unfold(X: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1,
                  padding: int = 0) -> torch.Tensor:
    """2-D convolution (cross-correlation, as F.conv2d) through im2col.

    X: (B, C, H, W); weight: (C_out, C, kh, kw); bias: (C_out,) or None.
    Returns (B, C_out, H_out, W_out), H_out = (H + 2 * padding - kh) // stride + 1 (W_out likewise).
    """
    ### BEGIN SOLUTION
    B, C, H, W = X.shape
    C_out, _, kh, kw = weight.shape
    H_out = (H + 2 * padding - kh) // stride + 1
    W_out = (W + 2 * padding - kw) // stride + 1
    cols = F.unfold(X, (kh, kw), padding=padding, stride=stride)   # (B, C*kh*kw, L)
    Y = weight.reshape(C_out, -1) @ cols                           # (C_out, C*kh*kw) @ (B, C*kh*kw, L)
                                                                   # -> (B, C_out, L)
    if bias is not None:
        Y = Y + bias[:, None]                                      # (C_out, 1) broadcasts over positions
    return Y.reshape(B, C_out, H_out, W_out)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "unfold-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
_gen = torch.Generator().manual_seed(0)
_X = torch.randn(2, 3, 8, 8, generator=_gen)                  # (B, C, H, W)
_W = torch.randn(4, 3, 3, 3, generator=_gen)                  # (C_out, C, k, k)
_b = torch.randn(4, generator=_gen)
with forbid(CONV_FUNCTIONS, NO_BUILTIN_CONV):
    _Y = conv2d_unfold(_X, _W, _b)
assert isinstance(_Y, torch.Tensor), f"conv2d_unfold should return a tensor, not {type(_Y).__name__}"
check_equal("output shape: (2, 3, 8, 8) input, 4 filters 3x3 -> (2, 4, 6, 6)", tuple(_Y.shape),
            expected=tuple(F.conv2d(_X, _W, _b).shape),
            hint="reshape the (B, C_out, L) product to (B, C_out, H_out, W_out)")
check_close("same values as F.conv2d (stride 1, no padding, with bias)", _Y, expected=F.conv2d(_X, _W, _b),
            atol=1e-4, weight=2,
            hint="flatten the weight to (C_out, C*kh*kw) with weight.reshape(C_out, -1) (the order of "
                 "unfold's rows), multiply it by the columns, and add bias[:, None]")

with forbid(CONV_FUNCTIONS, NO_BUILTIN_CONV):
    _Y = conv2d_unfold(_X, _W, None, stride=2, padding=1)
check_close("stride 2, padding 1, no bias", _Y, expected=F.conv2d(_X, _W, None, stride=2, padding=1),
            atol=1e-4, weight=2,
            hint="pass stride and padding to F.unfold, use the same in the output-size formula, and accept "
                 "bias=None")

_Xg = _X.clone().requires_grad_(True)
_Wg = _W.clone().requires_grad_(True)
with forbid(CONV_FUNCTIONS, NO_BUILTIN_CONV):
    _out = conv2d_unfold(_Xg, _Wg, padding=1).square().sum()
    if _out.requires_grad:
        _out.backward()
_Xr, _Wr = _X.clone().requires_grad_(True), _W.clone().requires_grad_(True)
check_close("gradients with respect to X and weight", [_Xg.grad, _Wg.grad],
            expected=list(torch.autograd.grad(F.conv2d(_Xr, _Wr, padding=1).square().sum(), (_Xr, _Wr))),
            rtol=1e-4, atol=1e-3,
            hint="use only differentiable tensor operations (unfold, @, reshape); no .detach(), .item() or "
                 "NumPy")
print("conv2d_unfold: visible tests passed")

### BEGIN HIDDEN TESTS
_cases = [((1, 2, 16, 16), (3, 2, 5, 3), 1, 2), ((2, 4, 9, 11), (5, 4, 3, 3), 3, 1),
          ((3, 1, 8, 8), (6, 1, 1, 1), 1, 0), ((2, 3, 7, 10), (2, 3, 2, 4), 2, 0),
          ((1, 5, 6, 6), (1, 5, 6, 6), 1, 0)]
_inputs = []
for _i, (_xs, _ws, _s, _p) in enumerate(_cases):
    _g = torch.Generator().manual_seed(10 + _i)
    _inputs.append((torch.randn(*_xs, generator=_g), torch.randn(*_ws, generator=_g),
                    torch.randn(_ws[0], generator=_g), _s, _p))
with forbid(CONV_FUNCTIONS, NO_BUILTIN_CONV):
    _outs = [conv2d_unfold(_x, _w, _bb, stride=_s, padding=_p) for _x, _w, _bb, _s, _p in _inputs]
check_close("rectangular kernels, 1x1 and full-size kernels, strides 1-3, padding 0-2", _outs,
            expected=[F.conv2d(_x, _w, _bb, stride=_s, padding=_p) for _x, _w, _bb, _s, _p in _inputs],
            atol=1e-4, weight=2,
            hint="kh and kw can differ: take both from weight.shape, and compute H_out and W_out separately")
_g = torch.Generator().manual_seed(20)
_x64, _w64 = torch.randn(2, 3, 7, 7, generator=_g, dtype=torch.float64), torch.randn(3, 3, 3, 3, generator=_g,
                                                                                        dtype=torch.float64)
with forbid(CONV_FUNCTIONS, NO_BUILTIN_CONV):
    _y64 = conv2d_unfold(_x64, _w64, padding=1)
check_close("float64 input stays float64 and accurate (dtype, values)", [str(_y64.dtype), _y64],
            expected=["torch.float64", F.conv2d(_x64, _w64, padding=1)], atol=1e-10,
            hint="don't convert to float32: compute in the input's dtype")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "residual-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: a residual block with BatchNorm (2 points)
#
# Write the `ResidualBlock` of notebook 03, with these attribute names (the tests load weights by name):
#
# - `conv1`: 3×3 convolution `c_in → c_out` with the block's `stride`, `padding=1`, `bias=False`; then `bn1`,
#   a `nn.BatchNorm2d(c_out)`;
# - `conv2`: 3×3 convolution `c_out → c_out`, stride 1, `padding=1`, `bias=False`; then `bn2`, a
#   `nn.BatchNorm2d(c_out)`;
# - `shortcut`: `nn.Identity()` when `stride == 1` and `c_in == c_out`; otherwise the projection
#   `nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))`, which gives
#   the input the residual branch's shape.
#
# The forward pass is
#
# $$Z = \mathrm{ReLU}(\mathrm{bn1}(\mathrm{conv1}(X))), \qquad
#   Y = \mathrm{ReLU}\big(\mathrm{bn2}(\mathrm{conv2}(Z)) + \mathrm{shortcut}(X)\big).$$
#
# Note where the last ReLU goes: *after* the addition.
#
# The convolutions need no bias because the BatchNorm right after each of them subtracts the mean anyway (and
# has its own shift, `beta`). The tests check the names and shapes of the block's parameters, then fill them
# with known values and compare your outputs with the formula, in training and in evaluation mode.

# %% nbgrader={"grade": false, "grade_id": "residual-answer", "locked": false, "schema_version": 3, "solution": true}
class ResidualBlock(nn.Module):
    """(B, c_in, H, W) -> (B, c_out, H_out, W_out), H_out = (H - 1) // stride + 1 (W_out likewise)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        ### END SOLUTION

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        out = F.relu(self.bn1(self.conv1(X)))      # (B, c_out, H_out, W_out)
        out = self.bn2(self.conv2(out))            # (B, c_out, H_out, W_out)
        return F.relu(out + self.shortcut(X))      # add first, then ReLU
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "residual-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _bn_names(prefix, c):
    """(name, shape) of a BatchNorm2d(c)'s parameters and buffers."""
    return [(f"{prefix}.{n}", s) for n, s in [("bias", (c,)), ("num_batches_tracked", ()),
                                              ("running_mean", (c,)), ("running_var", (c,)),
                                              ("weight", (c,))]]


def _expected_names(c_in, c_out, stride):
    """The (name, shape) of every parameter and buffer the instructions ask for, sorted by name."""
    names = _bn_names("bn1", c_out) + _bn_names("bn2", c_out) + [("conv1.weight", (c_out, c_in, 3, 3)),
                                                                 ("conv2.weight", (c_out, c_out, 3, 3))]
    if stride != 1 or c_in != c_out:
        names += [("shortcut.0.weight", (c_out, c_in, 1, 1))] + _bn_names("shortcut.1", c_out)
    return sorted(names)


def _names(module):
    return sorted((name, tuple(t.shape)) for name, t in module.state_dict().items())


def _block_formula(state, X, stride, training):
    """The block's output computed from its weights with torch's functional operations."""
    def bn(prefix, Z):
        running_mean = state[f"{prefix}.running_mean"].clone()   # F.batch_norm updates these in training mode
        running_var = state[f"{prefix}.running_var"].clone()
        return F.batch_norm(Z, running_mean, running_var, state[f"{prefix}.weight"], state[f"{prefix}.bias"],
                            training=training)
    out = F.relu(bn("bn1", F.conv2d(X, state["conv1.weight"], stride=stride, padding=1)))
    out = bn("bn2", F.conv2d(out, state["conv2.weight"], padding=1))
    if "shortcut.0.weight" in state:
        shortcut = bn("shortcut.1", F.conv2d(X, state["shortcut.0.weight"], stride=stride))
    else:
        shortcut = X
    return F.relu(out + shortcut)


torch.manual_seed(0)
_down, _same = ResidualBlock(8, 16, stride=2), ResidualBlock(16, 16)
assert isinstance(_down, nn.Module), "ResidualBlock should be an nn.Module"
check_equal("parameters and buffers of ResidualBlock(8, 16, stride=2): names and shapes", _names(_down),
            expected=_expected_names(8, 16, 2),
            hint="conv1, bn1, conv2, bn2 and a projection shortcut (nn.Sequential of a 1x1 conv without bias "
                 "and a BatchNorm2d) when the stride or the channel count changes; convolutions without bias")
check_equal("parameters and buffers of ResidualBlock(16, 16): names and shapes", _names(_same),
            expected=_expected_names(16, 16, 1),
            hint="when the shape does not change the shortcut is nn.Identity() (it has no parameters)")

_X = torch.randn(4, 8, 10, 10, generator=torch.Generator().manual_seed(1))
fill_deterministically(_down, seed=2)
_state = {k: v.clone() for k, v in _down.state_dict().items()}
_down.train()
_Y = _down(_X)
check_close("training-mode output of ResidualBlock(8, 16, stride=2) with known weights", _Y,
            expected=_block_formula(_state, _X, 2, training=True), atol=1e-4, weight=2,
            hint="ReLU(bn2(conv2(ReLU(bn1(conv1(X))))) + shortcut(X)): conv1 has the stride, conv2 does not, "
                 "both use padding=1; the final ReLU comes after the addition")
_down.load_state_dict(_state)
_down.eval()
with torch.no_grad():
    _Y = _down(_X)
check_close("evaluation-mode output (running statistics)", _Y,
            expected=_block_formula(_state, _X, 2, training=False), atol=1e-4,
            hint="use the nn.BatchNorm2d modules themselves, so that eval() switches them to the running "
                 "statistics")

_Xs = torch.randn(2, 16, 6, 6, generator=torch.Generator().manual_seed(3))
fill_deterministically(_same, seed=4)
with torch.no_grad():
    _same.bn2.weight.zero_()
    _same.bn2.bias.zero_()
check_close("with bn2's scale and shift at 0 the identity block is ReLU(X)", _same(_Xs), expected=F.relu(_Xs),
            atol=1e-6,
            hint="the residual branch then outputs 0, so the block returns ReLU(0 + X): the shortcut adds X "
                 "itself, and the final ReLU comes after the addition")
print("ResidualBlock: visible tests passed")

### BEGIN HIDDEN TESTS
_cases = [(3, 3, 1), (4, 6, 1), (6, 6, 2), (5, 10, 3)]
check_equal("names and shapes for (3, 3, 1), (4, 6, 1), (6, 6, 2), (5, 10, 3)",
            [_names(ResidualBlock(*_c)) for _c in _cases], expected=[_expected_names(*_c) for _c in _cases],
            hint="a projection shortcut whenever the stride is not 1 or c_in != c_out, else nn.Identity()")
_outs, _refs = [], []
for _i, (_ci, _co, _s) in enumerate(_cases):
    _blk = fill_deterministically(ResidualBlock(_ci, _co, _s), seed=30 + _i)
    _st = {k: v.clone() for k, v in _blk.state_dict().items()}
    _x = torch.randn(3, _ci, 7, 7, generator=torch.Generator().manual_seed(40 + _i))
    _outs.append(_blk(_x))
    _refs.append(_block_formula(_st, _x, _s, training=True))
check_close("training-mode outputs for the same four blocks on 7x7 inputs", _outs, expected=_refs, atol=1e-4,
            hint="odd sizes with stride 2 and 3: conv1 and the 1x1 shortcut must use the same stride")
_blk = ResidualBlock(4, 8, 2)
_x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(50), requires_grad=True)
_blk(_x).sum().backward()
check_equal("gradients reach the input and every parameter",
            [_x.grad is not None] + [p.grad is not None for p in _blk.parameters()],
            expected=[True] * (1 + len(list(_blk.parameters()))),
            hint="use the modules in forward (no .detach(), no torch.no_grad())")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "separable-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: a depthwise-separable block (2 points)
#
# A standard 3×3 convolution has a separate 3×3 filter for every pair of input and output channels. A
# depthwise-separable convolution splits it into
#
# 1. a **depthwise** 3×3 convolution: one filter per input channel, applied to that channel only (an
#    `nn.Conv2d` with `groups=c_in`, so its weight has shape `(c_in, 1, 3, 3)`); it carries the block's
#    `stride` and, with padding 1, keeps the image size at stride 1;
# 2. a **pointwise** 1×1 convolution from `c_in` to `c_out` channels that mixes the channels at each position.
#
# Neither convolution needs a bias, since a BatchNorm follows each.
#
# Write the MobileNet-style block `DepthwiseSeparableBlock(c_in, c_out, stride=1)` with attributes
# `depthwise`, `bn1 = nn.BatchNorm2d(c_in)`, `pointwise`, `bn2 = nn.BatchNorm2d(c_out)`, computing
# $\mathrm{ReLU}(\mathrm{bn2}(\mathrm{pointwise}(\mathrm{ReLU}(\mathrm{bn1}(\mathrm{depthwise}(X))))))$.

# %% nbgrader={"grade": false, "grade_id": "separable-answer", "locked": false, "schema_version": 3, "solution": true}
class DepthwiseSeparableBlock(nn.Module):
    """Depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU: (B, c_in, H, W) -> (B, c_out, H', W')."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        self.depthwise = nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        ### END SOLUTION

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        out = F.relu(self.bn1(self.depthwise(X)))     # (B, c_in, H_out, W_out): space, channel by channel
        return F.relu(self.bn2(self.pointwise(out)))  # (B, c_out, H_out, W_out): channels mixed per position
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "separable-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _separable_names(c_in, c_out):
    bn = lambda prefix, c: [(f"{prefix}.{n}", s) for n, s in [("bias", (c,)), ("num_batches_tracked", ()),
                                                              ("running_mean", (c,)), ("running_var", (c,)),
                                                              ("weight", (c,))]]
    return sorted(bn("bn1", c_in) + bn("bn2", c_out) + [("depthwise.weight", (c_in, 1, 3, 3)),
                                                          ("pointwise.weight", (c_out, c_in, 1, 1))])


def _separable_formula(state, X, stride, training):
    def bn(prefix, Z):
        running_mean = state[f"{prefix}.running_mean"].clone()   # F.batch_norm updates these in training mode
        running_var = state[f"{prefix}.running_var"].clone()
        return F.batch_norm(Z, running_mean, running_var, state[f"{prefix}.weight"], state[f"{prefix}.bias"],
                            training=training)
    depthwise = F.conv2d(X, state["depthwise.weight"], stride=stride, padding=1, groups=X.shape[1])
    out = F.relu(bn("bn1", depthwise))
    return F.relu(bn("bn2", F.conv2d(out, state["pointwise.weight"])))


torch.manual_seed(0)
_block = DepthwiseSeparableBlock(6, 12, stride=2)
assert isinstance(_block, nn.Module), "DepthwiseSeparableBlock should be an nn.Module"
check_equal("parameters and buffers of DepthwiseSeparableBlock(6, 12, stride=2): names and shapes",
            sorted((n, tuple(t.shape)) for n, t in _block.state_dict().items()),
            expected=_separable_names(6, 12),
            hint="depthwise weight (c_in, 1, 3, 3) needs groups=c_in; pointwise weight (c_out, c_in, 1, 1); "
                 "bn1 has c_in channels, bn2 c_out; no biases in the convolutions")
_X = torch.randn(4, 6, 9, 9, generator=torch.Generator().manual_seed(1))
fill_deterministically(_block, seed=2)
_state = {k: v.clone() for k, v in _block.state_dict().items()}
_block.train()
check_close("training-mode output with known weights", _block(_X),
            expected=_separable_formula(_state, _X, 2, training=True), atol=1e-4, weight=2,
            hint="ReLU(bn2(pointwise(ReLU(bn1(depthwise(X)))))): the stride and padding=1 belong to the "
                 "depthwise convolution; the pointwise one is 1x1 with stride 1")
_block.load_state_dict(_state)
_block.eval()
with torch.no_grad():
    _Y = _block(_X)
check_close("evaluation-mode output (running statistics)", _Y,
            expected=_separable_formula(_state, _X, 2, training=False), atol=1e-4,
            hint="use the nn.BatchNorm2d modules themselves, so that eval() switches them to the running "
                 "statistics")
print("DepthwiseSeparableBlock: visible tests passed")

### BEGIN HIDDEN TESTS
_cases = [(1, 4, 1), (8, 8, 1), (5, 3, 3)]
_outs, _refs = [], []
for _i, (_ci, _co, _s) in enumerate(_cases):
    _blk = fill_deterministically(DepthwiseSeparableBlock(_ci, _co, _s), seed=20 + _i)
    _st = {k: v.clone() for k, v in _blk.state_dict().items()}
    _x = torch.randn(3, _ci, 8, 7, generator=torch.Generator().manual_seed(30 + _i))
    _outs.append(_blk(_x))
    _refs.append(_separable_formula(_st, _x, _s, training=True))
check_close("outputs for (1 -> 4, stride 1), (8 -> 8, stride 1), (5 -> 3, stride 3) on 8x7 inputs", _outs,
            expected=_refs, atol=1e-4,
            hint="works for any c_in, c_out and stride, including non-square inputs")
check_equal("the depthwise convolution has groups = c_in",
            [DepthwiseSeparableBlock(_ci, _co, _s).depthwise.groups for _ci, _co, _s in _cases],
            expected=[_ci for _ci, _, _ in _cases], hint="nn.Conv2d(c_in, c_in, 3, ..., groups=c_in)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "count-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: how many weights does it save? (1 point)
#
# Count the weights (no biases, no BatchNorm) of a k×k convolution from `c_in` to `c_out` channels, standard
# and depthwise-separable (a depthwise k×k convolution followed by a pointwise 1×1 one). Write
# `conv_weight_counts(c_in, c_out, kernel_size)` returning the pair `(standard, separable)` of Python ints.
# The ratio `standard / separable` is $1 / (1/c_\text{out} + 1/k^2)$; the test computes it for 3×3 kernels
# and 256 channels.

# %% nbgrader={"grade": false, "grade_id": "count-answer", "locked": false, "schema_version": 3, "solution": true}
def conv_weight_counts(c_in: int, c_out: int, kernel_size: int) -> tuple[int, int]:
    """(weights of a standard k×k conv, weights of depthwise k×k + pointwise 1×1), biases excluded."""
    ### BEGIN SOLUTION
    standard = kernel_size * kernel_size * c_in * c_out
    separable = kernel_size * kernel_size * c_in + c_in * c_out   # depthwise + pointwise
    return standard, separable
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "count-tests", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def _count_layers(c_in, c_out, k):
    """Weights of the real layers, counted by PyTorch (meta device: no memory)."""
    standard = nn.Conv2d(c_in, c_out, k, bias=False, device="meta")
    depthwise = nn.Conv2d(c_in, c_in, k, groups=c_in, bias=False, device="meta")
    pointwise = nn.Conv2d(c_in, c_out, 1, bias=False, device="meta")
    return standard.weight.numel(), depthwise.weight.numel() + pointwise.weight.numel()


_counts = conv_weight_counts(64, 128, 3)
assert isinstance(_counts, tuple) and len(_counts) == 2, (
    "conv_weight_counts should return a pair (standard, separable)")
check_equal("standard 3x3 convolution, 64 -> 128 channels", _counts[0], expected=_count_layers(64, 128, 3)[0],
            hint="one k x k filter for every (input channel, output channel) pair")
check_equal("depthwise-separable 3x3, 64 -> 128 channels", _counts[1], expected=_count_layers(64, 128, 3)[1],
            hint="depthwise: one k x k filter per input channel; pointwise: a 1x1 filter per (input, output) "
                 "pair")
check_close("ratio standard / separable for 256 -> 256 channels, 3x3",
            conv_weight_counts(256, 256, 3)[0] / conv_weight_counts(256, 256, 3)[1],
            expected=_count_layers(256, 256, 3)[0] / _count_layers(256, 256, 3)[1], rtol=1e-9,
            hint="close to k * k = 9 for wide layers")
print("conv_weight_counts: visible tests passed")

### BEGIN HIDDEN TESTS
_cases = [(1, 1, 1), (3, 16, 3), (32, 8, 5), (7, 11, 7), (512, 512, 3)]
check_equal("five more (c_in, c_out, k), as Python ints", [conv_weight_counts(*_c) for _c in _cases],
            expected=[_count_layers(*_c) for _c in _cases],
            hint="standard = k*k*c_in*c_out; separable = k*k*c_in + c_in*c_out; return a tuple of two ints")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "cnn-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 6: a CNN that learns the shapes (2 points)
#
# Design a network for the shapes images of notebook 03: input `(B, 3, 32, 32)`, output `(B, 6)` logits, **at
# most 100,000 parameters**. `make_shapes_cnn()` builds and returns it (untrained).
#
# The test trains it with a fixed, short budget — 1,000 training images, 4 epochs, batch size 32, Adam with a
# one-cycle schedule peaking at `lr=5e-3` — and then asks for **at least 70 % accuracy** on 300 test images
# (chance is about 17 %). A fully connected network on the raw pixels does not get there; a small CNN does, and
# notebook 03's networks, scaled down to the parameter budget, are a good place to start. Try your design on the
# training data before you run the test: the test itself takes a few seconds.

# %% nbgrader={"grade": false, "grade_id": "cnn-answer", "locked": false, "schema_version": 3, "solution": true}
def make_shapes_cnn() -> nn.Module:
    """A CNN mapping (B, 3, 32, 32) images to (B, 6) logits, with at most 100,000 parameters."""
    ### BEGIN SOLUTION
    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                nn.MaxPool2d(2)]
    return nn.Sequential(
        *block(3, 16),                              # (B, 16, 16, 16)
        *block(16, 32),                             # (B, 32, 8, 8)
        *block(32, 64),                             # (B, 64, 4, 4)
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),      # (B, 64)
        nn.Linear(64, 6),                           # (B, 6) logits
    )
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "cnn-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
torch.manual_seed(0)
_model = make_shapes_cnn()
assert isinstance(_model, nn.Module), (
    f"make_shapes_cnn should return an nn.Module, got {type(_model).__name__}")
_n_params = sum(p.numel() for p in _model.parameters())
print(f"your network has {_n_params:,} parameters")
check_equal("at most 100,000 parameters", _n_params <= 100_000, expected=True,
            hint="use fewer or narrower layers; a convolution's weights do not depend on the image size, a "
                 "Linear layer on flattened feature maps does")
with torch.no_grad():
    _shape = tuple(_model.eval()(torch.zeros(2, 3, 32, 32)).shape)
check_equal("a batch of 2 images gives logits of shape (2, 6)", _shape, expected=(2, 6),
            hint="end with a Linear layer with 6 outputs (after flattening)")

_shapes = dlcourse.data.shapes(n_train=1000, n_val=10, n_test=300, seed=0)
_train_loader, _, _test_loader = _shapes.loaders(batch_size=32, seed=0)
_num_epochs = 4
_optimizer = torch.optim.Adam(_model.parameters(), lr=5e-3)
_scheduler = torch.optim.lr_scheduler.OneCycleLR(_optimizer, max_lr=5e-3,
                                                 total_steps=_num_epochs * len(_train_loader))
_history = dlcourse.fit(_model, _optimizer, _train_loader, num_epochs=_num_epochs, scheduler=_scheduler,
                        scheduler_step="batch", progress=False)
_predictions, _labels = dlcourse.predict(_model, _test_loader)
print(f"after {_num_epochs} epochs: training loss {_history.last['train_loss']:.3f}, "
      f"test accuracy {(_predictions == _labels).float().mean().item():.1%}")
check_accuracy("at least 70% test accuracy after the fixed training budget", _predictions,
               expected=_shapes.test.tensors[1], threshold=0.7, weight=2,
               hint="use convolutions with BatchNorm and pooling; make sure the last layer outputs raw "
                    "logits (no softmax)")
print("make_shapes_cnn: visible tests passed")

# %% [markdown] nbgrader={"grade": false, "grade_id": "conv-flops-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 7: predict, then measure: the FLOPs of a convolution (1 point)
#
# How much arithmetic does one convolution layer cost? Count it before PyTorch does. Write
# `predicted_conv_flops(c_in, c_out, kernel_size, n, stride=1, padding=0, groups=1)`: the floating-point
# operations of one forward pass of `nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding,
# groups=groups, bias=False)` on **one** `n`×`n` image with `c_in` channels, as PyTorch's
# `torch.utils.flop_counter.FlopCounterMode` counts them: a multiply-add is 2 FLOPs. With `groups=g`, each
# output channel sees only `c_in / g` of the input channels (notebook 03, section on depthwise convolutions).
#
# It is a prediction: PyTorch's convolutions and the FLOP counter are switched off while the test calls your
# function (your `conv_output_size` from exercise 1 may help). The test then measures the FLOPs with
# `FlopCounterMode`. Your prediction passes when it is within **1 %** of the measurement, for the layer below
# and for other strides, paddings and groups in the hidden tests.

# %% nbgrader={"grade": false, "grade_id": "conv-flops-answer", "locked": false, "schema_version": 3, "solution": true}
def predicted_conv_flops(c_in: int, c_out: int, kernel_size: int, n: int, stride: int = 1, padding: int = 0,
                         groups: int = 1) -> int:
    """FLOPs (2 per multiply-add) of a bias-free k×k Conv2d's forward pass on one n×n image."""
    ### BEGIN SOLUTION
    n_out = (n + 2 * padding - kernel_size) // stride + 1                 # output size per axis
    macs_per_output = (c_in // groups) * kernel_size * kernel_size          # one filter's weights
    return 2 * c_out * n_out * n_out * macs_per_output
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "conv-flops-tests", "locked": true, "points": 1, "schema_version": 3, "solution": false}
from torch.utils.flop_counter import FlopCounterMode

MEASURING = CONV_FUNCTIONS + ((FlopCounterMode, "__enter__"),)
NO_MEASURING = ("predict with a formula: convolutions and FlopCounterMode are switched off while the test calls "
                "predicted_conv_flops")


def _predicted(*args, **kwargs):
    with forbid(MEASURING, NO_MEASURING):
        return predicted_conv_flops(*args, **kwargs)


def _measured_conv_flops(c_in, c_out, kernel_size, n, stride=1, padding=0, groups=1):
    """FLOPs of the layer's forward pass on one image, counted by PyTorch (on the meta device: shapes only)."""
    layer = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, groups=groups, bias=False,
                      device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        layer(torch.empty(1, c_in, n, n, device="meta"))
    return counter.get_total_flops()


check_prediction("3x3 conv, 16 -> 32 channels, 32x32 image, padding 1", _predicted(16, 32, 3, 32, padding=1),
                 expected=_measured_conv_flops(16, 32, 3, 32, padding=1), rtol=0.01,
                 hint="every output value (c_out channels times the output positions) is a dot product of one "
                      "filter with one patch; a multiply-add counts as 2 FLOPs")
print("predicted_conv_flops: visible tests passed")

### BEGIN HIDDEN TESTS
for _args, _kwargs in [((16, 32, 3, 32), dict(stride=2, padding=1)), ((8, 24, 5, 17), {}),
                       ((64, 64, 3, 16), dict(padding=1, groups=64)), ((32, 8, 1, 20), dict(stride=3))]:
    check_prediction(f"conv {_args} {_kwargs}", _predicted(*_args, **_kwargs),
                     expected=_measured_conv_flops(*_args, **_kwargs), rtol=0.01,
                     hint="the prediction must follow the output size (stride, padding) and the groups")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - Output size per axis: $\lfloor (n + 2p - d(k-1) - 1)/s \rfloor + 1$, for convolution and pooling alike.
# - A convolution is `unfold` (every patch as a column) followed by one matrix product with the flattened
#   weights; autograd differentiates it like any other tensor code.
# - A residual block adds a shortcut to a conv–BN–ReLU–conv–BN branch and applies the last ReLU after the sum;
#   a 1×1 convolution with the same stride fixes the shortcut's shape.
# - A depthwise-separable convolution needs $k^2 c_\text{in} + c_\text{in} c_\text{out}$ weights instead of
#   $k^2 c_\text{in} c_\text{out}$.
# - A small CNN with BatchNorm and pooling learns the shapes in seconds, where an MLP on pixels cannot.
# - A convolution's forward pass costs $2\,c_\text{out} H_\text{out} W_\text{out} \cdot (c_\text{in}/g)\,k^2$
#   FLOPs: the output size, not the input size, sets the count.
#
# ## Further exercises (not graded)
#
# 1. Add `dilation` to `conv2d_unfold` (F.unfold takes it too) and check it against `F.conv2d`.
# 2. Build a `ResNetSmall` from your `ResidualBlock` and compare it with your exercise 6 network at the same
#    training budget: accuracy, parameters and time per epoch.
# 3. Replace the convolutions of your exercise 6 network by `DepthwiseSeparableBlock`s. How many parameters
#    does it save, and what happens to the accuracy?
# 4. Time `conv2d_unfold` against `F.conv2d` for growing image sizes. Where does the unfold version spend its
#    memory?
