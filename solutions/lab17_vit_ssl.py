# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 17: vision transformers and contrastive learning
#
# This lab goes with notebook 17. You write the pieces that turn images into tokens and that let encoders learn
# without class labels, and reference implementations check each one.
#
# **Learning goals.** After this lab you can
# - cut images into patches and embed them, and show that this equals a strided convolution;
# - write SimCLR's NT-Xent loss from its formula;
# - write CLIP's symmetric image–text contrastive loss;
# - classify images zero-shot from the embeddings of several prompts per class;
# - predict the lowest value NT-Xent can reach for a batch size and a temperature, before measuring it.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab17_vit_ssl.ipynb` tells you what passes.
# Each exercise is graded on its own: a later one never calls your answer to an earlier one.
#
# **Time.** About 60–80 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 11 in all: patch embedding 2, NT-Xent 3, CLIP loss 2, zero-shot prediction 2, predicting the
# loss floor 2.
#
# **Shapes.** B batch, C channels, H×W image, p patch size, N = (H/p)·(W/p) patches, D embedding width;
# in the contrastive exercises N pairs of d-dimensional embeddings.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import math

import torch
import torch.nn.functional as F
from torch import nn

import dlcourse
from dlcourse.grading.checks import SOFTMAX_FUNCTIONS, check_close, check_equal, check_prediction, forbid

cfg = dlcourse.setup(seed=0)
# Tests of from-scratch code switch PyTorch's ready-made versions off while they call yours.
CONVOLUTIONS = ((F, "conv2d"), (torch, "conv2d"), (nn.Conv2d, "forward"))
NO_CONVOLUTION = "use reshapes (or F.unfold) and a matrix product: convolutions are switched off in this test"
NO_SOFTMAX = ("write the loss from its formula (torch.logsumexp is allowed): softmax, log-softmax and "
              "cross-entropy are switched off in this test")


def _randn(seed, *shape, dtype=torch.float32):
    """A seeded standard-normal tensor."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# %% [markdown] nbgrader={"grade": false, "grade_id": "patch-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: patch embedding (2 points)
#
# A ViT cuts a `(B, C, H, W)` batch into non-overlapping `p×p` patches and maps each linearly to `D` numbers.
#
# - `patchify(X, p)` returns `(B, N, C·p·p)`: the patches in row-major order (left to right, then top to
#   bottom), each flattened **channel first, then row, then column**, the order of a convolution weight
#   `(D, C, p, p)` flattened. `H` and `W` are multiples of `p` (not necessarily equal).
# - `patch_embed(X, weight, bias, p)` with `weight` `(D, C, p, p)` and `bias` `(D,)` returns `(B, N, D)`, equal
#   to `F.conv2d(X, weight, bias, stride=p)` with its output positions flattened row by row into the token
#   dimension. It must be differentiable in `X`, `weight` and `bias`.
#
# Convolutions are switched off while the tests call your functions; `F.unfold`, `reshape` and `permute` are
# allowed.

# %% nbgrader={"grade": false, "grade_id": "patch-answer", "locked": false, "schema_version": 3, "solution": true}
def patchify(X: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C·p·p): patches row by row, each flattened channel, row, column."""
    ### BEGIN SOLUTION
    B, C, H, W = X.shape
    grid = X.reshape(B, C, H // p, p, W // p, p)              # (B, C, rows, p, cols, p)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)
    ### END SOLUTION


def patch_embed(X: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W), weight (D, C, p, p), bias (D,) -> (B, N, D), equal to a p×p convolution with stride p."""
    ### BEGIN SOLUTION
    return patchify(X, p) @ weight.reshape(len(weight), -1).T + bias
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "patch-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _conv_tokens(X, weight, bias, p):
    """The reference: a strided convolution, positions flattened row by row."""
    return F.conv2d(X, weight, bias, stride=p).flatten(2).transpose(1, 2)


_X = _randn(0, 2, 3, 8, 8)
with forbid(CONVOLUTIONS, NO_CONVOLUTION):
    _patches = patchify(_X, 4)
check_equal("patchify((2, 3, 8, 8), 4): shape (2, 4, 48)", tuple(_patches.shape), expected=(2, 4, 48),
            hint="N = (H/p)·(W/p) patches of C·p·p numbers each")
check_close("patchify: values and order", _patches, expected=F.unfold(_X, 4, stride=4).transpose(1, 2),
            atol=0.0, hint="reshape to (B, C, H/p, p, W/p, p), move the two patch-grid dimensions to the front "
                           "(after B), then flatten; each patch is flattened channel first, like a conv weight")
_w, _b = _randn(1, 5, 3, 4, 4), _randn(2, 5)
with forbid(CONVOLUTIONS, NO_CONVOLUTION):
    _tokens = patch_embed(_X, _w, _b, 4)
check_close("patch_embed equals the strided convolution", _tokens, expected=_conv_tokens(_X, _w, _b, 4),
            atol=1e-5, weight=2, hint="a matrix product of the patches with the weight flattened to (D, C·p·p), "
                                      "transposed, plus the bias")
print("patch embedding: visible tests passed")

### BEGIN HIDDEN TESTS
_cases = [(_randn(3, 1, 2, 8, 12), _randn(4, 6, 2, 4, 4), _randn(5, 6), 4),     # H != W
          (_randn(6, 3, 1, 5, 5), _randn(7, 4, 1, 1, 1), _randn(8, 4), 1),       # p = 1: every pixel a token
          (_randn(9, 2, 3, 6, 6), _randn(10, 7, 3, 6, 6), _randn(11, 7), 6)]     # one patch per image
with forbid(CONVOLUTIONS, NO_CONVOLUTION):
    _got = [(patchify(_Xc, _p), patch_embed(_Xc, _wc, _bc, _p)) for _Xc, _wc, _bc, _p in _cases]
check_close("patchify on non-square images, p = 1 and a single patch",
            [_g[0] for _g in _got], expected=[F.unfold(_c[0], _c[3], stride=_c[3]).transpose(1, 2) for _c in _cases],
            atol=0.0, hint="the patch grid has H/p rows and W/p columns, which may differ")
check_close("patch_embed on non-square images, p = 1 and a single patch", [_g[1] for _g in _got],
            expected=[_conv_tokens(*_c) for _c in _cases], atol=1e-5,
            hint="the token order is row by row over the patch grid, like conv2d(...).flatten(2)")
_Xg, _wg, _bg = (t.clone().requires_grad_(True) for t in (_randn(12, 2, 3, 8, 4), _randn(13, 5, 3, 4, 4),
                                                          _randn(14, 5)))
with forbid(CONVOLUTIONS, NO_CONVOLUTION):
    _ours = torch.autograd.grad((patch_embed(_Xg, _wg, _bg, 4) ** 2).sum(), (_Xg, _wg, _bg))
_theirs = torch.autograd.grad((_conv_tokens(_Xg, _wg, _bg, 4) ** 2).sum(), (_Xg, _wg, _bg))
check_close("patch_embed: gradients in X, weight and bias equal the convolution's", list(_ours),
            expected=list(_theirs), atol=1e-4, hint="use differentiable tensor operations only (no .detach(), no numpy)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "ntxent-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: the NT-Xent loss (3 points)
#
# SimCLR encodes two augmented views of each of N images: `z1[i]` and `z2[i]`, each `(N, d)`. Stack them into
# 2N views $z_0 … z_{2N-1}$ (first all of `z1`, then all of `z2`), so the partner of view $i$ is
# $p(i) = i + N \bmod 2N$. With $s_{ij} = \hat z_i \cdot \hat z_j$ the cosine similarity (each $z$ divided by
# its length), the loss of view $i$ is
# $$\ell_i = -\log \frac{\exp(s_{i,p(i)}/\tau)}{\sum_{k \ne i} \exp(s_{ik}/\tau)},$$
# and `nt_xent(z1, z2, temperature)` returns the mean of $\ell_i$ over all 2N views, a scalar tensor. It must
# not overflow for small temperatures, be differentiable, and leave its inputs unchanged.
#
# Softmax, log-softmax and cross-entropy are switched off while the tests call your function; `torch.logsumexp`
# is allowed. The tests compare with a reference built on `F.cross_entropy` over the similarity matrix.

# %% nbgrader={"grade": false, "grade_id": "ntxent-answer", "locked": false, "schema_version": 3, "solution": true}
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss of N positive pairs (z1[i], z2[i]), each (N, d): the mean over the 2N views."""
    ### BEGIN SOLUTION
    n = len(z1)
    z = torch.cat([z1, z2]) / torch.cat([z1, z2]).norm(dim=1, keepdim=True)   # (2N, d) unit vectors
    s = z @ z.T / temperature                                                  # (2N, 2N)
    s = s.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=s.device), float("-inf"))   # k != i
    partner = torch.arange(2 * n, device=s.device).roll(n)                    # i + N mod 2N
    positive = s[torch.arange(2 * n, device=s.device), partner]
    return (s.logsumexp(dim=1) - positive).mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ntxent-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def _nt_xent_reference(z1, z2, temperature):
    """Cross-entropy over the similarity matrix, its diagonal removed; the target of row i is its partner."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    return F.cross_entropy(logits, torch.arange(2 * n).roll(n))


_z1, _z2 = _randn(20, 4, 8), _randn(21, 4, 8)
with forbid(SOFTMAX_FUNCTIONS, NO_SOFTMAX):
    _loss = nt_xent(_z1, _z2, 0.5)
check_equal("nt_xent returns a scalar", tuple(torch.as_tensor(_loss).shape), expected=(),
            hint="average the 2N per-view losses into one number")
check_close("nt_xent, N = 4, d = 8, temperature 0.5", _loss, expected=_nt_xent_reference(_z1, _z2, 0.5),
            rtol=1e-4, atol=1e-5, weight=2,
            hint="normalise the 2N rows, divide the similarities by the temperature, leave k = i out of the sum "
                 "(the denominator has 2N - 1 terms, one of them the partner)")
print("nt_xent: visible tests passed")

### BEGIN HIDDEN TESTS
_cases = [(_randn(22, 16, 8), _randn(23, 16, 8), 0.1), (_randn(24, 2, 3), _randn(25, 2, 3), 2.0),
          (_randn(26, 32, 16), _randn(27, 32, 16), 0.02)]                     # 1/0.02 = 50: needs a stable sum
with forbid(SOFTMAX_FUNCTIONS, NO_SOFTMAX):
    _got = [nt_xent(*_c) for _c in _cases]
check_close("nt_xent for other N, d and temperatures (down to 0.02)", _got,
            expected=[_nt_xent_reference(*_c) for _c in _cases], rtol=1e-4, atol=1e-5, weight=2,
            hint="subtract the row maximum before exponentiating, or use torch.logsumexp")
_z1, _z2 = _randn(28, 6, 5), _randn(29, 6, 5)
_scale = torch.tensor([0.1, 1.0, 3.0, 10.0, 0.5, 100.0])[:, None]
with forbid(SOFTMAX_FUNCTIONS, NO_SOFTMAX):
    _scaled = nt_xent(_z1 * _scale, _z2, 0.3)
check_close("nt_xent ignores the lengths of the embeddings", _scaled, expected=_nt_xent_reference(_z1, _z2, 0.3),
            rtol=1e-4, atol=1e-5, hint="divide every embedding by its length: s is a cosine similarity")
_a, _b = _randn(30, 5, 4), _randn(31, 5, 4)
_ga, _gb = _a.clone().requires_grad_(True), _b.clone().requires_grad_(True)
with forbid(SOFTMAX_FUNCTIONS, NO_SOFTMAX):
    _ours = torch.autograd.grad(nt_xent(_ga, _gb, 0.2), (_ga, _gb))
_theirs = torch.autograd.grad(_nt_xent_reference(_ga, _gb, 0.2), (_ga, _gb))
check_close("nt_xent: gradients, and inputs unchanged", [*_ours, _ga, _gb], expected=[*_theirs, _a, _b],
            rtol=1e-4, atol=1e-5, hint="use differentiable out-of-place operations (no in-place edits of z1, z2)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "clip-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: CLIP's symmetric loss (2 points)
#
# A batch has N images and their N captions, encoded as `image_features` and `text_features` `(N, d)` (not
# normalised). CLIP normalises both to unit length and scales the cosine similarities by $e^{t}$, where
# `logit_scale` $= t$ is a learned scalar tensor (so the temperature $e^{-t}$ stays positive):
# `logits[i, j]` $= e^{t}\,\hat x_i \cdot \hat y_j$ for image $i$ and caption $j$. The loss is the average of
# two cross-entropies: each image must pick its own caption among the N (rows), and each caption its own image
# among the N (columns). `clip_loss` returns that scalar; `F.cross_entropy` is allowed.

# %% nbgrader={"grade": false, "grade_id": "clip-answer", "locked": false, "schema_version": 3, "solution": true}
def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss of N matching (image, caption) pairs; features (N, d), logit_scale a scalar."""
    ### BEGIN SOLUTION
    x, y = F.normalize(image_features, dim=1), F.normalize(text_features, dim=1)
    logits = logit_scale.exp() * x @ y.T                                    # (N images, N captions)
    targets = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "clip-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _clip_reference(x, y, t):
    """The loss written out: image i's log-softmax over the captions, caption i's over the images."""
    logits = t.exp() * (x / x.norm(dim=1, keepdim=True)) @ (y / y.norm(dim=1, keepdim=True)).T
    return -(logits.diag() - logits.logsumexp(1)).mean() / 2 - (logits.diag() - logits.logsumexp(0)).mean() / 2


_x, _y, _t = _randn(40, 5, 8), _randn(41, 5, 8), torch.tensor(math.log(10.0))
check_close("clip_loss, N = 5, d = 8, scale 10", clip_loss(_x, _y, _t), expected=_clip_reference(_x, _y, _t),
            rtol=1e-5, atol=1e-6, weight=2,
            hint="normalise both, multiply by logit_scale.exp(), average the cross-entropies of the rows (images) "
                 "and of the columns (captions)")
print("clip_loss: visible tests passed")

### BEGIN HIDDEN TESTS
# more dimensions than pairs, a scale of 1, and the scale CLIP starts from
_cases = [(_randn(42, 3, 16) * 5, _randn(43, 3, 16), torch.tensor(0.0)),
          (_randn(44, 8, 4), _randn(45, 8, 4) * 0.1, torch.tensor(math.log(1 / 0.07)))]
check_close("clip_loss for other sizes, scales and feature lengths", [clip_loss(*_c) for _c in _cases],
            expected=[_clip_reference(*_c) for _c in _cases], rtol=1e-5, atol=1e-6,
            hint="logit_scale is a log: the scale is its exponential; both sides are normalised first")
_x = torch.eye(4) + 0.3 * _randn(46, 4, 4)                                # aligned pairs, but not symmetric
_y = torch.eye(4)
_t = torch.tensor(1.5, requires_grad=True)
_loss = clip_loss(_x, _y, _t)
_g_ours = torch.autograd.grad(_loss, _t)[0]
_t2 = torch.tensor(1.5, requires_grad=True)
_g_ref = torch.autograd.grad(_clip_reference(_x, _y, _t2), _t2)[0]
check_close("clip_loss: both directions (a batch whose two directions differ) and the gradient in logit_scale",
            [_loss.detach(), _g_ours], expected=[_clip_reference(_x, _y, torch.tensor(1.5)), _g_ref],
            rtol=1e-5, atol=1e-6, hint="average the loss over the rows (images -> captions) and over the columns "
                                       "(captions -> images); logit_scale must stay in the graph")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "zeroshot-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: zero-shot prediction with several prompts (2 points)
#
# For each of C classes we wrote P captions ("a red star", "a star, top left", ...) and embedded them with the
# text encoder: `prompt_features` `(C, P, d)`. One embedding per class is built by **prompt ensembling**: scale
# each prompt embedding to unit length, average the P of a class, and scale the average to unit length again.
# `zero_shot_predict(image_features, prompt_features)` returns, for each of the N images (`image_features`
# `(N, d)`), the index of the class whose embedding has the highest cosine similarity with the image: an int64
# tensor `(N,)`.

# %% nbgrader={"grade": false, "grade_id": "zeroshot-answer", "locked": false, "schema_version": 3, "solution": true}
def zero_shot_predict(image_features: torch.Tensor, prompt_features: torch.Tensor) -> torch.Tensor:
    """image_features (N, d), prompt_features (C, P, d) -> (N,) int64 class indices."""
    ### BEGIN SOLUTION
    classes = F.normalize(F.normalize(prompt_features, dim=-1).mean(dim=1), dim=-1)   # (C, d)
    return (F.normalize(image_features, dim=-1) @ classes.T).argmax(dim=1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "zeroshot-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _zero_shot_reference(x, prompts):
    classes = prompts / prompts.norm(dim=-1, keepdim=True)
    classes = classes.mean(dim=1)
    classes = classes / classes.norm(dim=-1, keepdim=True)
    return torch.nn.functional.cosine_similarity(x[:, None], classes[None], dim=-1).argmax(dim=1)


_x, _prompts = _randn(50, 30, 8), _randn(51, 5, 1, 8)                   # one prompt per class
_pred = zero_shot_predict(_x, _prompts)
check_equal("one prompt per class: predictions (dtype and values)", [str(_pred.dtype), _pred],
            expected=["torch.int64", _zero_shot_reference(_x, _prompts)],
            hint="the class with the highest cosine similarity to each image: an argmax over the C classes")
_prompts = _randn(52, 5, 3, 8) * torch.tensor([0.2, 1.0, 6.0])[None, :, None]   # prompts of different lengths
check_equal("three prompts per class of different lengths", zero_shot_predict(_x, _prompts),
            expected=_zero_shot_reference(_x, _prompts),
            hint="normalise each prompt embedding before averaging, or the longest prompt decides alone")
print("zero_shot_predict: visible tests passed")

### BEGIN HIDDEN TESTS
_x, _prompts = _randn(53, 64, 16) * 3, _randn(54, 10, 7, 16) * _randn(55, 10, 7, 1).abs()
check_equal("64 images, 10 classes of 7 prompts with random lengths", zero_shot_predict(_x, _prompts),
            expected=_zero_shot_reference(_x, _prompts),
            hint="normalise, average over the prompts (dim=1), normalise again; then cosine similarity")
_x, _u = _randn(56, 1, 4), _randn(57, 4)
_prompts = torch.stack([_x[0] * 0.01, (_x[0] + 0.5 * _u) * 100.0])[:, None, :].repeat(1, 2, 1)   # (2, 2, 4)
check_equal("one image; the short prompt points its way, the long one nearly", zero_shot_predict(_x, _prompts),
            expected=torch.tensor([0]), hint="compare directions (cosine similarity), not raw dot products")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "floor-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: predict, then measure — how low can NT-Xent go? (2 points)
#
# Imagine a perfect encoder: both views of an image get the *same* embedding, and the embeddings of different
# images are orthogonal (possible when d ≥ N). Every positive similarity is then 1 and every negative one 0.
# Write `nt_xent_floor(batch_size, temperature)`: the NT-Xent loss of such a batch of `batch_size` pairs, as a
# float, worked out from the formula of exercise 2 (count the terms of the denominator). The test cell then
# measures it with the reference implementation on one-hot embeddings, for several batch sizes and temperatures,
# some of them hidden. **Tolerance: 0.01 % relative.** Matrix products, `F.normalize` and every softmax and
# cross-entropy are switched off while the tests call your function: compute, don't measure.
#
# Before you write it: does the floor depend on the batch size? Is it 0 at the temperature 0.5 that SimCLR used?

# %% nbgrader={"grade": false, "grade_id": "floor-answer", "locked": false, "schema_version": 3, "solution": true}
def nt_xent_floor(batch_size: int, temperature: float) -> float:
    """The NT-Xent loss when each pair's views coincide and all other views are orthogonal."""
    ### BEGIN SOLUTION
    # positive term e^{1/τ}; the other 2N - 2 views each e^0 = 1
    return math.log(1 + (2 * batch_size - 2) * math.exp(-1 / temperature))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "floor-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
MEASURING = (*SOFTMAX_FUNCTIONS, (F, "normalize"), (torch, "matmul"), (torch, "mm"), (torch.Tensor, "__matmul__"),
             (torch.Tensor, "matmul"), (torch.Tensor, "mm"), (torch, "einsum"))
NO_MEASURING = "work it out from the formula: matrix products and softmaxes are switched off in this test"


def _measured_floor(batch_size, temperature):
    """The reference NT-Xent of a batch whose pairs coincide and are orthogonal to each other (float64)."""
    z = torch.eye(batch_size, dtype=torch.float64)
    return _nt_xent_reference(z, z.clone(), temperature).item()


def _predicted_floor(*args):
    with forbid(MEASURING, NO_MEASURING):
        return nt_xent_floor(*args)


for _args in [(4, 0.5), (64, 0.1)]:
    check_prediction(f"NT-Xent floor for (batch_size, temperature) = {_args}", _predicted_floor(*_args),
                     expected=_measured_floor(*_args), rtol=1e-4,
                     hint="the denominator has 2N - 1 terms: the partner's e^{1/τ} and 2N - 2 others of e^0 = 1")
print("nt_xent_floor: visible tests passed")

### BEGIN HIDDEN TESTS
for _args in [(128, 0.5), (1, 1.0), (256, 0.07), (8, 2.0)]:
    check_prediction(f"NT-Xent floor for (batch_size, temperature) = {_args}", _predicted_floor(*_args),
                     expected=_measured_floor(*_args), rtol=1e-4,
                     hint="loss = log(1 + (number of negatives) · e^{-1/τ}); one pair has no negatives")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "floor-look", "locked": true, "schema_version": 3, "solution": false}
# Not graded: the measured floor for SimCLR's batch sizes and temperatures. At τ = 0.5 the loss stays above 3
# even for a perfect encoder with 128 pairs per batch, so a "high" final loss need not mean a bad encoder; a
# lower temperature lowers the floor and sharpens the push on hard negatives (notebook 17, section 5).

# %% nbgrader={"grade": false, "grade_id": "floor-table", "locked": true, "schema_version": 3, "solution": false}
print(f"{'N':>5} | " + " | ".join(f"tau={_tau:<5g}" for _tau in (0.05, 0.1, 0.5, 1.0)))
for _n in (16, 128, 1024):
    print(f"{_n:>5} | " + " | ".join(f"{_measured_floor(_n, _tau):>9.4f}" for _tau in (0.05, 0.1, 0.5, 1.0)))
assert _measured_floor(128, 0.5) > 3

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - Patchifying is a reshape and a permute; a linear map of the patches is exactly a p×p convolution with stride
#   p, which is how ViTs implement their patch embedding.
# - NT-Xent is a (2N − 1)-way classification per view: find your partner among all other views, by cosine
#   similarity divided by a temperature.
# - CLIP's loss is the same idea across two encoders, used in both directions: images pick captions, captions
#   pick images.
# - Zero-shot classification compares an image with one (ensembled) caption embedding per class.
# - With a temperature, even a perfect encoder leaves NT-Xent above zero: log(1 + (2N − 2)·e^{−1/τ}).
#
# ## Further exercises (not graded)
#
# 1. Check that `patch_embed` followed by `patchify`'s inverse (`F.fold`) can rebuild the image when D = C·p·p
#    and the weight is the identity.
# 2. Write the *supervised* contrastive loss (SupCon): all views with the same label are positives. How does it
#    reduce to NT-Xent when every label is different?
# 3. Train notebook 17's CLIP model with prompt-ensembled class embeddings for zero-shot shape classification.
#    Does ensembling beat the single best prompt?
