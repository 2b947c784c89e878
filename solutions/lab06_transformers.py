# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 06: transformers
#
# This lab goes with notebook 06. You write the core pieces of a transformer yourself, and PyTorch checks each
# one.
#
# **Learning goals.** After this lab you can
# - build causal and padding masks as boolean tensors that broadcast against attention scores;
# - write scaled dot-product attention with a mask, and match `F.scaled_dot_product_attention`;
# - split attention into heads and merge them back, and match `nn.MultiheadAttention` given the same weights;
# - apply rotary position embeddings (RoPE) to queries or keys;
# - sample the next token with a temperature and top-k filtering;
# - predict how the cost of attention grows with the sequence length, before measuring it.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab06_transformers.ipynb` tells you what passes.
# Each exercise is graded on its own: a later one never calls your answer to an earlier one.
#
# **Time.** About 75–100 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 12 in all: masks 2, attention 2, multi-head attention 2, RoPE 2, sampling 2, predicting FLOPs 2.
#
# **Shapes.** B batch, H heads, T positions (T_q queries, T_k keys), d the size of one head, D = H·d the model
# width, V the vocabulary size.

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
from dlcourse.grading.checks import check_close, check_equal, check_prediction, check_true, forbid

cfg = dlcourse.setup(seed=0)
# Tests of from-scratch attention switch PyTorch's fused versions off while they call yours.
ATTENTION_FUNCTIONS = ((F, "scaled_dot_product_attention"), (F, "multi_head_attention_forward"))
NO_BUILTIN_ATTENTION = ("write attention from tensor operations: F.scaled_dot_product_attention is switched "
                        "off while the tests call your function")

# %% [markdown] nbgrader={"grade": false, "grade_id": "masks-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: causal and padding masks (2 points)
#
# A mask says which keys each query may look at. Here a mask is a **boolean** tensor with `True` = "may
# attend", the convention of `F.scaled_dot_product_attention`.
#
# - `causal_mask(T)`: a `(T, T)` tensor whose entry `[i, j]` is `True` when `j <= i`, so that position `i` of
#   a language model sees itself and the past, never the future.
# - `padding_mask(lengths, T)`: a batch holds sequences of different lengths, padded at the end up to `T`.
#   For `lengths` of shape `(B,)`, return a `(B, 1, 1, T)` tensor that is `True` at the positions
#   `t < lengths[b]` of sequence `b` and `False` on its padding. The two singleton dimensions let it broadcast
#   against attention scores of shape `(B, H, T_q, T_k)`: the same for every head and every query.
#
# Both must have `dtype=torch.bool`, and `padding_mask` must put its result on the device of `lengths`.

# %% nbgrader={"grade": false, "grade_id": "masks-answer", "locked": false, "schema_version": 3, "solution": true}
def causal_mask(T: int) -> torch.Tensor:
    """(T, T) bool: entry [i, j] is True when j <= i (query i may attend to key j)."""
    ### BEGIN SOLUTION
    return torch.ones(T, T, dtype=torch.bool).tril()
    ### END SOLUTION


def padding_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """lengths: (B,) int64, each in [0, T]. Returns (B, 1, 1, T) bool, True at positions t < lengths[b]."""
    ### BEGIN SOLUTION
    positions = torch.arange(T, device=lengths.device)     # (T,)
    return (positions < lengths[:, None])[:, None, None, :]  # (B, T) -> (B, 1, 1, T)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "masks-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
_m = causal_mask(4)
assert isinstance(_m, torch.Tensor), f"causal_mask should return a tensor, not {type(_m).__name__}"
check_equal("causal_mask(4): lower triangular, bool", _m,
            expected=torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool),
            hint="a (T, T) bool tensor, True on and below the diagonal: row i is the query, column j the key, and "
                 "query i may see keys 0..i. Did you build the upper triangle, or return 0/1 instead of bool?")
_p = padding_mask(torch.tensor([2, 4, 0]), 4)
assert isinstance(_p, torch.Tensor), f"padding_mask should return a tensor, not {type(_p).__name__}"
check_equal("padding_mask([2, 4, 0], 4): shape (3, 1, 1, 4), bool", _p,
            expected=torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)[:, None, None, :],
            hint="True at the first lengths[b] positions of row b; add the head and query dimensions with "
                 "mask[:, None, None, :] so that it broadcasts against (B, H, T_q, T_k) scores")
print("masks: visible tests passed")

### BEGIN HIDDEN TESTS
check_equal("causal_mask of sizes 1, 2 and 7", [causal_mask(_T) for _T in (1, 2, 7)],
            expected=[torch.ones(_T, _T, dtype=torch.bool).tril() for _T in (1, 2, 7)],
            hint="causal_mask(T) is a (T, T) bool tensor, True where j <= i, for every T")
check_equal("padding_mask of lengths [5, 1, 3, 5] and of one full sequence",
            [padding_mask(torch.tensor([5, 1, 3, 5]), 5), padding_mask(torch.tensor([3]), 3)],
            expected=[(torch.arange(5) < torch.tensor([5, 1, 3, 5])[:, None])[:, None, None, :],
                      torch.ones(1, 1, 1, 3, dtype=torch.bool)],
            hint="padding_mask(lengths, T) is (B, 1, 1, T), True at positions t < lengths[b]")
# the mask gives the same attention as PyTorch's is_causal=True
_g = torch.Generator().manual_seed(0)
_q, _k, _v = (torch.randn(2, 3, 6, 4, generator=_g) for _ in range(3))
check_close("attention with causal_mask(6) equals is_causal=True",
            F.scaled_dot_product_attention(_q, _k, _v, attn_mask=causal_mask(6)),
            expected=F.scaled_dot_product_attention(_q, _k, _v, is_causal=True), atol=1e-6,
            hint="with True = may attend, a causal mask lets query i see keys 0..i")
_lengths = torch.tensor([2, 3])
_combined = padding_mask(_lengths, 3) & causal_mask(3)
check_equal("padding & causal masks combine to (B, 1, T, T); lengths are left unchanged",
            [_combined, _lengths],
            expected=[(torch.arange(3) < torch.tensor([2, 3])[:, None])[:, None, None, :]
                      & torch.ones(3, 3, dtype=torch.bool).tril(), torch.tensor([2, 3])],
            hint="both masks are bool and broadcast: (B, 1, 1, T) & (T, T) -> (B, 1, T, T)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "attention-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: scaled dot-product attention (2 points)
#
# $$\mathrm{attention}(Q, K, V) = \mathrm{softmax}\!\Big(\frac{Q K^\top}{\sqrt{d}}\Big)\, V$$
#
# Write `attention(q, k, v, mask=None)` for `q` of shape `(..., T_q, d)`, `k` of shape `(..., T_k, d)` and `v`
# of shape `(..., T_k, d_v)`; the leading dimensions `...` (for example `B, H`) are batch dimensions. It returns
# the output `(..., T_q, d_v)` and the weights `(..., T_q, T_k)`, and must
#
# - compute the formula above with $d$ = `q.size(-1)`, each query's weights summing to 1 over the keys;
# - give a key that `mask` forbids (`False`) a weight of **exactly** 0, for any mask that broadcasts against the
#   weights (e.g. `(T_q, T_k)` or `(B, 1, 1, T_k)`);
# - keep the inputs' dtype, leave the inputs unchanged, and stay differentiable.
#
# `torch.softmax` is allowed; `F.scaled_dot_product_attention` is switched off while the tests call your
# function.

# %% nbgrader={"grade": false, "grade_id": "attention-answer", "locked": false, "schema_version": 3, "solution": true}
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention.

    q: (..., T_q, d), k: (..., T_k, d), v: (..., T_k, d_v); mask: bool, broadcastable to (..., T_q, T_k),
    True where a query may attend to a key (None: attend everywhere).
    Returns (output (..., T_q, d_v), weights (..., T_q, T_k)).
    """
    ### BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))   # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)                            # rows sum to 1 over the keys
    return weights @ v, weights                                 # (..., T_q, d_v)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "attention-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _gradient(f, x):
    """The gradient of the number f(x) with respect to x, by autograd."""
    x = x.detach().clone().requires_grad_(True)
    return torch.autograd.grad(f(x), x)[0]


def _qkv(seed, shape_q, shape_k, d_v, dtype=torch.float32):
    """Seeded random queries (shape_q), keys (shape_k) and values (shape_k with last size d_v)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape_q, generator=g, dtype=dtype), torch.randn(*shape_k, generator=g, dtype=dtype),
            torch.randn(*shape_k[:-1], d_v, generator=g, dtype=dtype))


_q, _k, _v = _qkv(0, (2, 3, 5, 8), (2, 3, 5, 8), 6)            # d_v = 6 differs from d = 8
with forbid(ATTENTION_FUNCTIONS, NO_BUILTIN_ATTENTION):
    _result = attention(_q, _k, _v)
assert isinstance(_result, tuple) and len(_result) == 2, "attention should return a pair (output, weights)"
_out, _w = _result
check_equal("shapes of the output (B, H, T_q, d_v) and the weights (B, H, T_q, T_k)",
            [tuple(_out.shape), tuple(_w.shape)], expected=[(2, 3, 5, 6), (2, 3, 5, 5)],
            hint="scores are q @ k.transpose(-2, -1): (..., T_q, T_k); the output is weights @ v: (..., T_q, d_v)")
check_close("each row of the weights sums to 1", _w.sum(dim=-1), expected=torch.ones(2, 3, 5), atol=1e-5,
            hint="take the softmax over the keys, the last dimension")
check_close("no mask: same as F.scaled_dot_product_attention", _out,
            expected=F.scaled_dot_product_attention(_q, _k, _v), atol=1e-5, weight=2,
            hint="scores = q @ k^T / sqrt(d) with d = q.size(-1) (did you forget the scaling?), softmax over "
                 "the last dimension, then weights @ v")

_causal = torch.ones(5, 5, dtype=torch.bool).tril()             # (T, T), True = may attend
with forbid(ATTENTION_FUNCTIONS, NO_BUILTIN_ATTENTION):
    _out, _w = attention(_q, _k, _v, _causal)
check_close("causal mask: same as F.scaled_dot_product_attention", _out,
            expected=F.scaled_dot_product_attention(_q, _k, _v, attn_mask=_causal), atol=1e-5,
            hint="set the scores where the mask is False (not where it is True) to -inf before the softmax")
check_equal("causal mask: the weights on future keys are exactly 0", _w[..., ~_causal],
            expected=torch.zeros(2, 3, 10),
            hint="fill masked scores with float('-inf') (not a large negative number) so their weight is exactly 0")

_pad = (torch.arange(5) < torch.tensor([3, 5])[:, None])[:, None, None, :]   # (B, 1, 1, T): lengths 3 and 5
with forbid(ATTENTION_FUNCTIONS, NO_BUILTIN_ATTENTION):
    _out, _w = attention(_q, _k, _v, _pad)
check_close("padding mask (B, 1, 1, T): same as F.scaled_dot_product_attention", _out,
            expected=F.scaled_dot_product_attention(_q, _k, _v, attn_mask=_pad), atol=1e-5,
            hint="the mask broadcasts against the (B, H, T_q, T_k) scores; use masked_fill(~mask, float('-inf'))")
print("attention: visible tests passed")

### BEGIN HIDDEN TESTS
# queries and keys of different lengths, and no head dimension
_cases = [_qkv(1, (4, 3, 7), (4, 9, 7), 2), _qkv(2, (1, 2, 1, 16), (1, 2, 6, 16), 5), _qkv(3, (6, 4), (6, 4), 4)]
with forbid(ATTENTION_FUNCTIONS, NO_BUILTIN_ATTENTION):
    _outs = [attention(*_c)[0] for _c in _cases]
check_close("T_q != T_k, one query, and no batch dimensions", _outs,
            expected=[F.scaled_dot_product_attention(*_c) for _c in _cases], atol=1e-5,
            hint="use only the last two dimensions (k.transpose(-2, -1), softmax(dim=-1)): any leading ones are "
                 "batch dimensions")

# float64 with padding & causal masks together, and the gradients
_q, _k, _v = _qkv(4, (2, 2, 6, 4), (2, 2, 6, 4), 4, dtype=torch.float64)
_mask = ((torch.arange(6) < torch.tensor([4, 6])[:, None])[:, None, None, :]
         & torch.ones(6, 6, dtype=torch.bool).tril())
with forbid(ATTENTION_FUNCTIONS, NO_BUILTIN_ATTENTION):
    _out = attention(_q, _k, _v, _mask)[0]
check_close("float64 with padding & causal masks (dtype, values)", [str(_out.dtype), _out],
            expected=["torch.float64", F.scaled_dot_product_attention(_q, _k, _v, attn_mask=_mask)], atol=1e-10,
            hint="keep the inputs' dtype (math.sqrt gives a Python float, which keeps it)")
_wq = torch.arange(4.0, dtype=torch.float64)


def _loss_of_q(q):
    with forbid(ATTENTION_FUNCTIONS, NO_BUILTIN_ATTENTION):
        return (attention(q, _k, _v, _mask)[0] * _wq).sum()


check_close("the gradient with respect to q", _gradient(_loss_of_q, _q),
            expected=_gradient(lambda q: (F.scaled_dot_product_attention(q, _k, _v, attn_mask=_mask) * _wq).sum(),
                               _q), atol=1e-10,
            hint="use differentiable tensor operations only (no .detach(), .item() or NumPy)")

# a large head size: without the scaling the softmax saturates
_q, _k, _v = _qkv(5, (1, 1, 4, 256), (1, 1, 4, 256), 256)
with forbid(ATTENTION_FUNCTIONS, NO_BUILTIN_ATTENTION):
    _out = attention(_q, _k, _v)[0]
check_close("a head of size 256", _out, expected=F.scaled_dot_product_attention(_q, _k, _v), atol=1e-5,
            hint="divide the scores by sqrt(d)")

# the inputs are left alone
_q, _k, _v = _qkv(6, (2, 3, 4), (2, 3, 4), 4)
with forbid(ATTENTION_FUNCTIONS, NO_BUILTIN_ATTENTION):
    attention(_q, _k, _v, torch.ones(3, 3, dtype=torch.bool).tril())
check_equal("leaves q, k and v unchanged", [_q, _k, _v], expected=list(_qkv(6, (2, 3, 4), (2, 3, 4), 4)),
            hint="no in-place operations on the inputs (q /= ..., masked_fill_ on a view of them)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "mha-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: multi-head attention (2 points)
#
# Multi-head self-attention projects the input `x` of shape `(B, T, D)` to queries, keys and values with
# three linear layers, splits the `D` features into `H` heads of size `d = D / H`, runs attention in every
# head at once, merges the heads back and applies an output projection.
#
# Complete `forward` so that the module computes what `nn.MultiheadAttention` computes with the same weights
# (the test copies yours into it and compares the outputs, with and without a mask): feature `h·d + j` of the
# projected queries, keys and values is feature `j` of head `h`, every head attends on its own, and `out_proj`
# mixes the heads' outputs, concatenated in head order. For the attention itself use
# `F.scaled_dot_product_attention(q, k, v, attn_mask=mask)` on `(B, H, T, d)` tensors (it does what your
# exercise 2 does; using it keeps this exercise independent of that one). Mind the difference between a
# `(B, T, D)` tensor *viewed* as `(B, H, T, d)` and one split into heads: only one of them keeps each position's
# features together.

# %% nbgrader={"grade": false, "grade_id": "mha-answer", "locked": false, "schema_version": 3, "solution": true}
class MultiHeadAttention(nn.Module):
    """Multi-head self-attention: x (B, T, D) -> (B, T, D)."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, D); mask: bool broadcastable to (B, H, T, T), True = may attend. Returns (B, T, D)."""
        ### BEGIN SOLUTION
        B, T, D = x.shape
        H, d = self.num_heads, self.head_dim

        def split(t):                                                 # (B, T, D) -> (B, H, T, d)
            return t.view(B, T, H, d).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)   # (B, H, T, d)
        y = y.transpose(1, 2).reshape(B, T, D)                        # merge the heads
        return self.out_proj(y)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "mha-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _reference_for(mha: MultiHeadAttention, d_model: int, num_heads: int) -> nn.MultiheadAttention:
    """nn.MultiheadAttention holding the same weights (its q, k, v projections are stacked in in_proj)."""
    ref = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        ref.out_proj.bias.copy_(mha.out_proj.bias)
    return ref


def _inputs(seed, D, H, B, T):
    """A seeded MultiHeadAttention(D, H) and a seeded input x (B, T, D)."""
    torch.manual_seed(seed)
    return MultiHeadAttention(D, H), torch.randn(B, T, D)


_mha, _x = _inputs(0, 16, 4, 2, 5)
_y = _mha(_x)
assert isinstance(_y, torch.Tensor), f"forward should return a tensor, not {type(_y).__name__}"
check_equal("the output has the input's shape (B, T, D)", tuple(_y.shape), expected=(2, 5, 16),
            hint="merge the heads back to (B, T, D) before out_proj")
check_close("same as nn.MultiheadAttention with the same weights", _y,
            expected=_reference_for(_mha, 16, 4)(_x, _x, _x, need_weights=False)[0], atol=1e-5, weight=2,
            hint="split with view(B, T, H, d) and then transpose(1, 2) (a direct view to (B, H, T, d) mixes "
                 "positions and heads), merge back the same way in reverse, and finish with out_proj")
_causal = torch.ones(5, 5, dtype=torch.bool).tril()
check_close("causal mask: same as nn.MultiheadAttention", _mha(_x, _causal),
            expected=_reference_for(_mha, 16, 4)(_x, _x, _x, attn_mask=~_causal, need_weights=False)[0],
            atol=1e-5, hint="pass the mask on: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)")
print("MultiHeadAttention: visible tests passed")

### BEGIN HIDDEN TESTS
_sizes = [(8, 1, 1, 3), (32, 8, 3, 7), (12, 3, 2, 1)]                  # (D, H, B, T)
_pairs = [_inputs(_seed, *_size) for _seed, _size in enumerate(_sizes)]
check_close("other sizes: (D, H) = (8, 1), (32, 8), (12, 3)", [_m(_xx) for _m, _xx in _pairs],
            expected=[_reference_for(_m, _D, _H)(_xx, _xx, _xx, need_weights=False)[0]
                      for (_m, _xx), (_D, _H, _B, _T) in zip(_pairs, _sizes)], atol=1e-5, weight=2,
            hint="use self.num_heads and self.head_dim, and x.shape for B, T and D: nothing fixed")
_mha, _x = _inputs(5, 16, 2, 3, 6)
_keep = torch.arange(6) < torch.tensor([6, 2, 4])[:, None]              # (B, T), True = a real token
check_close("a (B, 1, 1, T) padding mask", _mha(_x, _keep[:, None, None, :]),
            expected=_reference_for(_mha, 16, 2)(_x, _x, _x, key_padding_mask=~_keep, need_weights=False)[0],
            atol=1e-5, hint="pass the mask on to the attention unchanged")
_mha(_x).pow(2).sum().backward()
check_equal("gradients reach all four projections",
            {_name: bool(_p.grad is not None and _p.grad.abs().sum() > 0) for _name, _p in _mha.named_parameters()},
            expected={_name: True for _name, _ in _mha.named_parameters()},
            hint="use q_proj, k_proj, v_proj and out_proj, with differentiable operations")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "rope-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: rotary position embeddings (2 points)
#
# RoPE gives attention a sense of position by *rotating* queries and keys. Split the last dimension of `x`
# (size `d`, even) into pairs `(x[..., 2i], x[..., 2i+1])` for `i = 0 .. d/2 - 1`. At position `p` rotate
# pair `i` by the angle $\theta_{p,i} = p\,\omega_i$ with $\omega_i = \text{base}^{-2i/d}$:
#
# $$\begin{aligned} y_{2i} &= x_{2i}\cos\theta_{p,i} - x_{2i+1}\sin\theta_{p,i} \\
#                   y_{2i+1} &= x_{2i}\sin\theta_{p,i} + x_{2i+1}\cos\theta_{p,i} \end{aligned}$$
#
# The positions of the `T` rows of `x` (the second-to-last dimension) are
# `start, start + 1, ..., start + T - 1` (`start > 0` is what a KV cache needs).
#
# Tips: `x[..., 0::2]` and `x[..., 1::2]` are the even and odd coordinates; an angle table of shape
# `(T, d/2)` broadcasts against them; `torch.stack([...], dim=-1)` followed by `.flatten(-2)` interleaves two
# `(..., T, d/2)` tensors back into `(..., T, d)`.
#
# Return a tensor of the same shape and dtype as `x`. Rotations keep lengths, and a query at position `m`
# scored against a key at position `n` then depends on `n - m` only: the tests check both.

# %% nbgrader={"grade": false, "grade_id": "rope-answer", "locked": false, "schema_version": 3, "solution": true}
def apply_rope(x: torch.Tensor, start: int = 0, base: float = 10000.0) -> torch.Tensor:
    """Rotate the pairs (x[..., 2i], x[..., 2i+1]) of x (..., T, d) by (start + t) * base**(-2i/d).

    Returns a tensor of the same shape and dtype as x.
    """
    ### BEGIN SOLUTION
    T, d = x.shape[-2:]
    p = torch.arange(start, start + T, dtype=torch.float32, device=x.device)                 # (T,)
    omega = base ** (-torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)       # (d/2,)
    angle = p[:, None] * omega                                                               # (T, d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]                                               # (..., T, d/2)
    return torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1).flatten(-2)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "rope-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _rope_reference(x, start=0, base=10000.0):
    """The same rotation with complex numbers: pair (a, b) is a + ib; rotating multiplies by e^{i theta}."""
    T, d = x.shape[-2:]
    p = torch.arange(start, start + T, dtype=torch.float64)
    omega = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rotation = torch.polar(torch.ones(T, d // 2, dtype=torch.float64), p[:, None] * omega)   # (T, d/2)
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


def _randn(seed, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


_x0 = torch.tensor([[1.0, 0.0, 1.0, 0.0]])                  # T = 1 at position 0: no rotation at all
_y0 = apply_rope(_x0)
assert isinstance(_y0, torch.Tensor), f"apply_rope should return a tensor, not {type(_y0).__name__}"
check_close("position 0 leaves x unchanged", _y0, expected=torch.tensor([[1.0, 0.0, 1.0, 0.0]]), atol=1e-6,
            hint="at position 0 every angle is 0, so the output equals x")
check_close("(1, 0, 1, 0) at position 1, d = 4", apply_rope(torch.tensor([[0.0, 0.0, 0.0, 0.0],
                                                                          [1.0, 0.0, 1.0, 0.0]]))[1],
            expected=torch.tensor([math.cos(1.0), math.sin(1.0), math.cos(0.01), math.sin(0.01)]), atol=1e-5,
            hint="pair 0 turns by 1 radian and pair 1 by 100**-1 = 0.01: pairs are neighbours (x[2i], x[2i+1]), "
                 "and omega_i = base**(-2i/d)")
_x = _randn(0, 2, 3, 6, 8)                                   # (B, H, T, d)
_y = apply_rope(_x)
check_equal("keeps the shape and dtype of x", [tuple(_y.shape), str(_y.dtype)],
            expected=[(2, 3, 6, 8), "torch.float32"], hint="return a tensor like x, in x's dtype")
check_close("rotations keep the length of every vector", _y.norm(dim=-1), expected=_x.norm(dim=-1), atol=1e-4,
            hint="check the signs: y_even = x_even cos - x_odd sin, y_odd = x_even sin + x_odd cos")
check_close("same as the rotation described above (B, H, T, d) = (2, 3, 6, 8)", _y,
            expected=_rope_reference(_x), atol=1e-4, weight=2,
            hint="interleave the rotated pairs back: torch.stack([even, odd], dim=-1).flatten(-2)")
check_close("start=5: rows at positions 5, 6, ...", apply_rope(_x, start=5), expected=_rope_reference(_x, start=5),
            atol=1e-4, hint="positions are torch.arange(start, start + T)")
print("apply_rope: visible tests passed")

### BEGIN HIDDEN TESTS
_cases = [(_randn(_i, *_shape), _start)
          for _i, (_shape, _start) in enumerate([((1, 2), 0), ((5, 2), 3), ((4, 7, 16), 0), ((2, 2, 3, 32), 1000)])]
check_close("other shapes and starts", [apply_rope(_c, _s) for _c, _s in _cases],
            expected=[_rope_reference(_c, _s) for _c, _s in _cases], atol=1e-3,
            hint="d = 2, a single row, 3-D inputs and large positions must all work")
_x = _randn(7, 3, 10)
check_close("the base argument", apply_rope(_x, base=100.0), expected=_rope_reference(_x, base=100.0), atol=1e-4,
            hint="use base in omega_i = base**(-2i/d)")
_q, _k = _randn(8, 1, 16), _randn(9, 1, 16)
_pairs = [(2, 7), (30, 35), (9, 4), (10, 5)]
check_close("scores q·k at positions (m, n) depend on n - m only",
            [(apply_rope(_q, _m) @ apply_rope(_k, _n).T).item() for _m, _n in _pairs],
            expected=[(_rope_reference(_q, _m) @ _rope_reference(_k, _n).T).item() for _m, _n in _pairs],
            atol=1e-3, hint="rotate the query by its own position and the key by its own")
_x = _randn(10, 2, 5, 6, dtype=torch.float64)
_y = apply_rope(_x, 2)
check_close("float64 stays float64 and accurate (dtype, values)", [str(_y.dtype), _y],
            expected=["torch.float64", _rope_reference(_x, 2)], atol=1e-5,
            hint="convert cos and sin to x.dtype instead of converting x")
_x = _randn(11, 4, 6)
apply_rope(_x, 1)
check_equal("leaves its input unchanged", _x, expected=_randn(11, 4, 6), hint="no in-place operations on x")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "sampling-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: sampling with temperature and top-k (2 points)
#
# A language model outputs logits of shape `(B, V)` for the next token. Write
# `sample_next(logits, temperature=1.0, top_k=None, generator=None)` returning one token id per row, an int64
# tensor of shape `(B,)` of ids into the vocabulary (`0 .. V-1`, not positions within the top k):
#
# - `temperature == 0` is greedy decoding: each row's argmax, no randomness;
# - otherwise row `b` draws id `i` with probability $\mathrm{softmax}(\text{logits}_b / \text{temperature})_i$,
#   restricted to the row's `top_k` largest logits (when `top_k` is given) and renormalised over them;
# - all randomness comes from `generator` (pass it to `torch.multinomial`), so that the same seed repeats the
#   draws, and `logits` is left unchanged.

# %% nbgrader={"grade": false, "grade_id": "sampling-answer", "locked": false, "schema_version": 3, "solution": true}
def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row: logits (B, V) -> (B,) int64 ids in [0, V). temperature 0 = greedy."""
    ### BEGIN SOLUTION
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth_largest = logits.topk(top_k, dim=-1).values[:, -1:]              # (B, 1)
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = logits.softmax(dim=-1)                                           # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "sampling-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _frequencies(draws, V):
    """How often each of the V ids was drawn, as fractions."""
    return torch.bincount(draws, minlength=V).float() / len(draws)


def _expected_probs(logits, temperature, top_k=None):
    """softmax(logits / temperature) over the top_k largest logits, zero elsewhere (logits: (V,))."""
    keep = logits.topk(top_k).indices if top_k is not None else torch.arange(len(logits))
    probs = torch.zeros(len(logits))
    probs[keep] = (logits[keep] / temperature).softmax(dim=0)
    return probs


_N_DRAWS = 50_000
_logits = torch.tensor([[0.5, 2.0, -1.0, 1.0, 0.0],
                        [3.0, -2.0, 0.0, 1.0, 2.5]])        # (B=2, V=5)
_ids = sample_next(_logits, temperature=0)
assert isinstance(_ids, torch.Tensor), f"sample_next should return a tensor, not {type(_ids).__name__}"
check_equal("temperature 0 is greedy: the argmax of each row", _ids, expected=torch.tensor([1, 0]),
            hint="return logits.argmax(dim=-1) when temperature == 0")
_ids = sample_next(_logits, temperature=1.0, generator=torch.Generator().manual_seed(0))
check_equal("returns one int64 id per row", [tuple(_ids.shape), str(_ids.dtype)],
            expected=[(2,), "torch.int64"], hint="torch.multinomial(probs, 1) is (B, 1): squeeze the last dimension")

_row = _logits[0]
_gen = torch.Generator().manual_seed(1)
for _temperature, _top_k in [(1.0, None), (0.5, None), (2.0, None), (1.0, 2), (0.7, 3)]:
    _draws = sample_next(_row.expand(_N_DRAWS, 5), _temperature, _top_k, generator=_gen)
    check_close(f"frequencies of {_N_DRAWS:,} draws, temperature {_temperature}, top_k {_top_k}",
                _frequencies(_draws, 5), expected=_expected_probs(_row, _temperature, _top_k), atol=0.015,
                hint="divide the logits (not the probabilities) by the temperature, keep the top_k largest "
                     "logits (set the rest to -inf), and return vocabulary ids, not positions within the top k")
print("sample_next: visible tests passed")

### BEGIN HIDDEN TESTS
_big = torch.randn(16, 50, generator=torch.Generator().manual_seed(3))
check_equal("greedy and top_k=1 give the argmax of a (16, 50) batch",
            [sample_next(_big, temperature=0),
             sample_next(_big, temperature=3.0, top_k=1, generator=torch.Generator().manual_seed(4))],
            expected=[_big.argmax(dim=-1), _big.argmax(dim=-1)],
            hint="top_k=1 keeps only the largest logit of each row")
_two = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 4.0]]).repeat(_N_DRAWS, 1)           # (2 * _N_DRAWS, 3)
_d = sample_next(_two, 1.0, generator=torch.Generator().manual_seed(5)).view(_N_DRAWS, 2)
check_close("each row is sampled from its own distribution", [_frequencies(_d[:, 0], 3), _frequencies(_d[:, 1], 3)],
            expected=[_expected_probs(_two[0], 1.0), _expected_probs(_two[1], 1.0)], atol=0.015,
            hint="softmax over the last dimension (the vocabulary), one draw per row")
_row = torch.tensor([1.0, 0.0, -1.0, 0.5])
_draws = sample_next(_row.expand(_N_DRAWS, 4), 1.3, top_k=4, generator=torch.Generator().manual_seed(6))
check_close("top_k = V filters nothing (temperature 1.3)", _frequencies(_draws, 4),
            expected=_expected_probs(_row, 1.3), atol=0.015, hint="return vocabulary ids")
_a = sample_next(_big, 1.0, 10, generator=torch.Generator().manual_seed(7))
_b = sample_next(_big, 1.0, 10, generator=torch.Generator().manual_seed(7))
check_true("a generator seeded twice the same way repeats its draws", torch.equal(_a, _b),
           hint="pass the generator to torch.multinomial(..., generator=generator)")
sample_next(_big, 0.5, 3, generator=torch.Generator().manual_seed(8))
check_equal("leaves the logits unchanged", _big, expected=torch.randn(16, 50, generator=torch.Generator().manual_seed(3)),
            hint="no in-place operations on logits (logits /= ..., masked_fill_)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "flops-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 6: predict the cost of attention (2 points)
#
# Predict first, measure second. How many floating-point operations (FLOPs) does one forward pass of the
# multi-head self-attention of exercise 3 cost, for a batch of `B` sequences of `T` tokens, width `D` and `H`
# heads? Count what `torch.utils.flop_counter.FlopCounterMode` counts: **matrix products only**, 2 FLOPs (a
# multiply and an add) per multiply-add, so a `(m, k) @ (k, n)` product is `2·m·k·n` FLOPs; biases, the
# $1/\sqrt{d}$ scaling, masks and the softmax are not counted. The module runs four `Linear(D, D)` projections
# (queries, keys, values, output) and, in every head, the two products of attention ($QK^\top$ and the weighted
# sum of the values).
#
# Write `mha_flops(batch_size, seq_len, d_model, num_heads)` returning that number as an int, from the sizes alone
# (`FlopCounterMode` is switched off while the tests call your function). The test cell then measures it with
# `FlopCounterMode` on a real module for several shapes, some of them hidden. **Tolerance: exact** (the count is
# an integer; each shape is a separate check). Before you write it: does the number of heads matter? And when
# `T` doubles, which part doubles and which part quadruples?

# %% nbgrader={"grade": false, "grade_id": "flops-answer", "locked": false, "schema_version": 3, "solution": true}
def mha_flops(batch_size: int, seq_len: int, d_model: int, num_heads: int) -> int:
    """FLOPs of one forward pass of multi-head self-attention, as FlopCounterMode counts them."""
    ### BEGIN SOLUTION
    projections = 4 * 2 * batch_size * seq_len * d_model * d_model     # q, k, v, out: (B·T, D) @ (D, D) each
    scores_and_sum = 2 * 2 * batch_size * seq_len * seq_len * d_model   # per head 2·T·T·d, twice; H·d = D
    return projections + scores_and_sum
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "flops-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
import torch.utils.flop_counter

NO_FLOP_COUNTER = "predict from the sizes: FlopCounterMode is switched off while the tests call your function"


class _AttentionFromProducts(nn.Module):
    """Multi-head self-attention written with explicit matrix products, so that FlopCounterMode sees every one
    on any device (it does not count F.scaled_dot_product_attention's CPU kernel)."""

    def __init__(self, d_model, num_heads, device=None):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d_model, d_model, device=device)
                                                                for _ in range(4))

    def forward(self, x):                                                # x: (B, T, D)
        B, T, D = x.shape
        def split(t):                                                    # (B, T, D) -> (B, H, T, d)
            return t.view(B, T, self.num_heads, D // self.num_heads).transpose(1, 2)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        weights = (q @ k.transpose(-2, -1) / math.sqrt(D // self.num_heads)).softmax(dim=-1)   # (B, H, T, T)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(B, T, D))


def _measured_split(batch_size, seq_len, d_model, num_heads):
    """FlopCounterMode's counts for one forward pass of a real module of these sizes, by operator: {name: FLOPs}.
    On the "meta" device tensors have shapes but no data: the operators run (and are counted) without computing."""
    module = _AttentionFromProducts(d_model, num_heads, device="meta")
    with torch.no_grad(), torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        module(torch.zeros(batch_size, seq_len, d_model, device="meta"))
    return {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}


def _measured_flops(*sizes):
    return sum(_measured_split(*sizes).values())


def _predicted_flops(*sizes):
    with forbid([(torch.utils.flop_counter.FlopCounterMode, "__enter__")], NO_FLOP_COUNTER):
        return mha_flops(*sizes)


for _sizes in [(2, 16, 64, 4), (1, 128, 32, 1)]:
    check_prediction(f"FLOPs for (B, T, D, H) = {_sizes}", _predicted_flops(*_sizes),
                     expected=_measured_flops(*_sizes), rtol=0.0,
                     hint="four (B·T, D) @ (D, D) projections, plus per head a (T, d) @ (d, T) and a (T, T) @ (T, d) "
                          "product; 2 FLOPs per multiply-add")
print("mha_flops: visible tests passed")

### BEGIN HIDDEN TESTS
for _sizes in [(3, 7, 24, 3), (1, 256, 64, 8), (4, 1, 16, 2)]:
    check_prediction(f"FLOPs for (B, T, D, H) = {_sizes}", _predicted_flops(*_sizes),
                     expected=_measured_flops(*_sizes), rtol=0.0,
                     hint="the heads split D into H pieces of D/H: H heads of width D/H cost what one head of width D "
                          "costs")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "flops-look", "locked": true, "schema_version": 3, "solution": false}
# Not graded: the measured split for a model of width 512 as the sequence grows. The projections grow like `T`,
# attention's products like `T²`: they cost the same at `T = 2·D`, and beyond that attention dominates.

# %% nbgrader={"grade": false, "grade_id": "flops-table", "locked": true, "schema_version": 3, "solution": false}
print(f"{'T':>5} | {'projections (aten.addmm)':>24} | {'attention products (aten.bmm)':>29} | {'yours':>16}")
for _T in (128, 512, 1024, 2048, 8192):
    _split = _measured_split(1, _T, 512, 8)
    try:
        _yours = f"{mha_flops(1, _T, 512, 8):,}"
    except Exception:                                    # not written yet, or failing
        _yours = "-"
    print(f"{_T:>5} | {_split.get('aten.addmm', 0):>24,} | {_split.get('aten.bmm', 0):>29,} | {_yours:>16}")

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - Masks are boolean tensors that broadcast against the `(B, H, T_q, T_k)` scores: causal masks are lower
#   triangular, padding masks `(B, 1, 1, T)` hide the padding keys.
# - Attention is `softmax(QKᵀ/√d) V`; masked scores become −∞ so their weights are exactly zero.
# - Multi-head attention is the same computation on `(B, H, T, d)` tensors: split with `view` then
#   `transpose`, merge in reverse order.
# - RoPE rotates pairs of coordinates by position-dependent angles; scores then depend on relative positions.
# - Temperature divides the logits, top-k removes all but the k largest, and temperature 0 is the argmax.
#
# ## Further exercises (not graded)
#
# 1. Replace `F.scaled_dot_product_attention` in your `MultiHeadAttention` by your own `attention`, and check
#    the output does not change. Which is faster for `T = 512`? Measure it.
# 2. Write **top-p** (nucleus) sampling: keep the smallest set of tokens whose probabilities add up to at
#    least `p`. Compare samples from notebook 06's language model with top-k and top-p.
# 3. Combine `padding_mask` and `causal_mask` for a batch of two sequences of lengths 3 and 5 and print the
#    `(B, 1, T, T)` result. Which query rows of the padded sequence have every key masked, and what does
#    attention return for them?
# 4. Use `apply_rope` inside `MultiHeadAttention` (on `q` and `k` after splitting the heads) and check that
#    the attention scores of a sequence and of the same sequence shifted by 10 positions are equal.
