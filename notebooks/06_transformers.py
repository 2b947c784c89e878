# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 06 · Transformers
#
# A transformer is a stack of two alternating operations: *attention*, where every position of a sequence
# gathers information from the other positions, and a small MLP applied to every position on its own. This
# notebook builds attention from a matrix product and a softmax, checks every piece against PyTorch's own, and
# assembles a GPT-style language model that learns to write Python by reading the standard library's source.
#
# **Learning goals**
# - Write scaled dot-product attention with padding and causal masks, and match
#   `F.scaled_dot_product_attention`.
# - Split attention into heads, and match `nn.MultiheadAttention` given the same weights.
# - Explain why attention needs positions, and implement sinusoidal, learned and rotary (RoPE) positions.
# - Build a pre-LN transformer block (matching `nn.TransformerEncoderLayer`) and a small model from it.
# - Train an encoder to reverse and sort sequences, and read its attention maps.
# - Train a character-level language model, beat the unigram baseline by a wide margin, and sample from it
#   with temperature and top-k.
# - Speed up generation with a KV cache, measure the speed-up, and count how the work of generating grows with
#   the length, with and without the cache.
#
# **Prerequisites:** notebooks 01–05 (the training loop and `dlcourse.fit`, normalisation layers, AdamW and
# learning-rate schedules); matrix products of batched tensors.
#
# **Time:** seconds at `smoke`; a few minutes at `small` on a laptop CPU, most of it training the language
# model; at `full` a 10-million-parameter GPT trains for a fixed budget of steps on a GPU, in bfloat16 where the
# GPU has it (section 7 prints the budget in floating-point operations and the throughput your GPU reached, so
# you can work out what a slower GPU, e.g. Colab's T4, would take). The last cell prints how long this run took
# on your machine.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

import dlcourse
from dlcourse import text

cfg = dlcourse.setup(seed=0)
device = cfg.device
progress = cfg.pick(smoke=False, small=True, full=True)
t_start = time.perf_counter()

# %% [markdown]
# ## 1. Scaled dot-product attention
# Every position $i$ of a sequence has a **query** $q_i$ ("what am I looking for?"), a **key** $k_j$ ("what do
# I contain?") and a **value** $v_j$ ("what do I pass on?"), all vectors. Position $i$ scores every position
# $j$ by the dot product $q_i \cdot k_j$, turns the scores into weights with a softmax over $j$, and outputs
# the weighted average of the values:
# $$\mathrm{attention}(Q, K, V) = \mathrm{softmax}\!\Big(\frac{Q K^\top}{\sqrt{d}}\Big)\, V .$$
# Stacking the queries in the rows of $Q$ (and so on) makes this two matrix products and a softmax.
#
# **Why divide by $\sqrt{d}$?** The dot product of two vectors of $d$ independent unit-variance entries has
# variance $d$. Large scores push the softmax towards a one-hot vector, where its gradient almost vanishes;
# dividing by $\sqrt d$ brings the variance back to 1 whatever the head size.

# %%
d = 64
gen = torch.Generator().manual_seed(cfg.seed)
q, k = torch.randn(10_000, d, generator=gen), torch.randn(10_000, d, generator=gen)
dots = (q * k).sum(dim=1)                                   # 10,000 dot products
print(f"variance of q·k: {dots.var():.1f} (d = {d}); of q·k/√d: {(dots / math.sqrt(d)).var():.2f}")
assert abs(dots.var() / d - 1) < 0.1 and abs((dots / math.sqrt(d)).var() - 1) < 0.1

# %% [markdown]
# **Masks** say which keys a query may look at. We use boolean masks with `True` = "may attend", the
# convention of `F.scaled_dot_product_attention`; a masked score becomes $-\infty$, so its softmax weight is
# exactly 0.
# - A **padding mask** hides the padding at the end of shorter sequences in a batch: shape (B, 1, 1, T), the
#   same for every head and every query.
# - A **causal mask** lets position $i$ see only positions $j \le i$, so a language model cannot peek at the
#   token it must predict: a lower-triangular (T, T) matrix. With $T_q$ new queries after $T_k - T_q$ earlier
#   keys (section 10 needs this) the diagonal moves right by $T_k - T_q$.
#
# Shapes: B batch, H heads, T positions, d the size of one head.

# %%
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention.

    q: (..., T_q, d), k: (..., T_k, d), v: (..., T_k, d_v); mask: bool, broadcastable to (..., T_q, T_k),
    True where a query may attend to a key.
    Returns the output (..., T_q, d_v) and the weights (..., T_q, T_k).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))   # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))       # weight exactly 0 after the softmax
    weights = scores.softmax(dim=-1)                            # each row sums to 1 over the keys
    return weights @ v, weights                                 # (..., T_q, d_v)


def causal_mask(T_q: int, T_k: int | None = None, device=None) -> torch.Tensor:
    """(T_q, T_k) bool: query i (the last T_q of T_k positions) may attend to keys 0 .. T_k - T_q + i."""
    T_k = T_q if T_k is None else T_k
    return torch.ones(T_q, T_k, dtype=torch.bool, device=device).tril(diagonal=T_k - T_q)


def padding_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, 1, 1, T) bool: True at the first lengths[b] positions of sequence b, False on its padding."""
    return (torch.arange(T, device=lengths.device) < lengths[:, None])[:, None, None, :]


print(causal_mask(4).int(), "\n", causal_mask(2, 5).int(), "\n", padding_mask(torch.tensor([3, 5]), 5).int())

# %% [markdown]
# Now the check against PyTorch's fused kernel, with no mask, each mask, and both together (`&`). Padding masks
# only keys, so every query still has at least one real key to look at.

# %%
gen = torch.Generator().manual_seed(cfg.seed)
B, H, T, d = 2, 3, 5, 8
q, k, v = (torch.randn(B, H, T, d, generator=gen) for _ in range(3))
pad = padding_mask(torch.tensor([3, 5]), T)                      # (B, 1, 1, T)
for name, mask in [("no mask", None), ("padding", pad), ("causal", causal_mask(T)),
                   ("padding & causal", pad & causal_mask(T))]:
    ours, weights = attention(q, k, v, mask)
    torchs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    print(f"{name:>17}: largest difference {(ours - torchs).abs().max():.1e}")
    assert torch.allclose(ours, torchs, atol=1e-5)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(B, H, T))
assert torch.allclose(attention(q, k, v, causal_mask(T))[0],
                      F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5)
assert (attention(q, k, v, pad)[1][0, :, :, 3:] == 0).all()     # no weight at all on sequence 0's padding

# %% [markdown]
# **A query that may attend to nothing.** If every key of a row is masked, all its scores are $-\infty$ and the
# softmax computes $0/0$. Our `attention` returns NaN for that row, and the NaN spreads to everything computed
# from it, gradients included. PyTorch's function departs from the formula there: the version installed here
# returns zeros for such a row on the CPU, as if the query attended to nothing. Which kernel runs, and so what
# comes out, depends on the device and the version, so the cell below measures it instead of assuming. Such rows
# appear, for example, with padding at the *start* of a sequence (left padding) under a causal mask.

# %%
gen = torch.Generator().manual_seed(cfg.seed)
q1, k1, v1 = (torch.randn(1, 1, 3, 4, generator=gen) for _ in range(3))     # (B, H, T, d)
allowed = torch.tensor([[False, False, False],                              # query 0: no key at all
                        [True, True, False],
                        [True, True, True]])
ours = attention(q1, k1, v1, allowed)[0][0, 0]                              # (T, d)
torchs = F.scaled_dot_product_attention(q1, k1, v1, attn_mask=allowed)[0, 0]
print("fully masked row, our attention:          ", ours[0].tolist())
print("fully masked row, F.scaled_dot_product_attention on cpu:", torchs[0].tolist())
assert ours[0].isnan().all(), "the hand-written softmax divides 0 by 0"
assert (torchs[0] == 0).all(), "on the CPU, PyTorch returns zeros for a row with no key to attend to"
assert torch.allclose(ours[1:], torchs[1:], atol=1e-6)                      # the other rows agree
if device.type != "cpu":                                                    # other kernels: print, don't assume
    on_device = F.scaled_dot_product_attention(q1.to(device), k1.to(device), v1.to(device),
                                               attn_mask=allowed.to(device))[0, 0, 0]
    print(f"fully masked row, F.scaled_dot_product_attention on {device}:", on_device.tolist())

# %% [markdown]
# ## 2. Multi-head attention
# One attention pattern per layer is limiting: a position may want to look at the previous character *and*
# at the matching opening bracket. **Multi-head attention** projects the input $x$ (B, T, D) to queries, keys
# and values with learned linear maps, splits the D features into H heads of size D/H, runs attention in
# every head independently, concatenates the heads' outputs and mixes them with one more linear map. The cost
# is the same as one big head: only the reshaping differs.
#
# One `nn.Linear(D, 3D)` computes q, k and v at once; its weight is laid out exactly like
# `nn.MultiheadAttention`'s `in_proj_weight`, so we can copy weights across and compare.

# %%
class MultiHeadAttention(nn.Module):
    """Multi-head self-attention: (B, T, D) -> (B, T, D); keeps the last attention weights in ``weights``."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)    # q, k, v projections stacked, like in_proj_weight
        self.out = nn.Linear(d_model, d_model)        # mixes the heads' outputs
        self.weights: torch.Tensor | None = None      # (B, H, T_q, T_k) from the last forward pass

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        return x.view(B, T, self.num_heads, D // self.num_heads).transpose(1, 2)   # (B, H, T, D/H)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, H, T, d = x.shape
        return x.transpose(1, 2).reshape(B, T, H * d)                              # (B, T, D)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values, each (B, H, T, D/H)."""
        return tuple(self.split_heads(t) for t in self.qkv(x).chunk(3, dim=-1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.project(x)
        y, weights = attention(q, k, v, mask)                  # (B, H, T, D/H)
        self.weights = weights.detach()
        return self.out(self.merge_heads(y))                   # (B, T, D)


torch.manual_seed(cfg.seed)
B, T, D, H = 2, 6, 16, 4
ours = MultiHeadAttention(D, H)
reference = nn.MultiheadAttention(D, H, batch_first=True)
with torch.no_grad():
    reference.in_proj_weight.copy_(ours.qkv.weight)
    reference.in_proj_bias.copy_(ours.qkv.bias)
    reference.out_proj.weight.copy_(ours.out.weight)
    reference.out_proj.bias.copy_(ours.out.bias)

x = torch.randn(B, T, D)
lengths = torch.tensor([4, 6])
keep = padding_mask(lengths, T) & causal_mask(T)                  # (B, 1, T, T), True = may attend
y_ours = ours(x, keep)
# nn.MultiheadAttention's masks mean the opposite: True = ignore this key
y_ref, w_ref = reference(x, x, x, key_padding_mask=~padding_mask(lengths, T)[:, 0, 0],
                         attn_mask=~causal_mask(T))
print(f"output: largest difference {(y_ours - y_ref).abs().max():.1e}; "
      f"weights (mean over heads): {(ours.weights.mean(dim=1) - w_ref).abs().max():.1e}")
assert torch.allclose(y_ours, y_ref, atol=1e-5)
assert torch.allclose(ours.weights.mean(dim=1), w_ref, atol=1e-5)

# %% [markdown]
# ## 3. Where is each token? Positions
# Attention itself ignores order: shuffle the input positions and the outputs come out shuffled the same way,
# with the same values. (Check it below.) To attention, "dog bites man" and "man bites dog" are the same bag
# of words. Order has to be put in explicitly.

# %%
perm = torch.randperm(T)
with torch.no_grad():
    assert torch.allclose(ours(x[:, perm]), ours(x)[:, perm], atol=1e-6)  # permute in = permute out
print("permuting the input positions permutes the output positions: attention alone cannot see order")

# %% [markdown]
# Three ways to give a model positions:
#
# 1. **Sinusoidal** (the original transformer): add a fixed vector to the token embedding at position $p$,
#    $\;PE_{p, 2i} = \sin(p\,\omega_i)$, $PE_{p, 2i+1} = \cos(p\,\omega_i)$, with frequencies
#    $\omega_i = 10000^{-2i/D}$ from one turn per $2\pi$ positions down to very slow ones. Moving $k$
#    positions rotates every (sin, cos) pair by the angle $k\,\omega_i$, so $PE_p \cdot PE_{p+k}$ depends
#    only on $k$.
# 2. **Learned**: an `nn.Embedding(max_len, D)`, one trained vector per position, added the same way. Simple
#    and flexible, but it knows nothing about positions beyond `max_len`.
# 3. **Rotary (RoPE)**: leave the embeddings alone and instead *rotate* each pair of coordinates
#    $(x_{2i}, x_{2i+1})$ of every query and key by the angle $p\,\omega_i$. A rotation by $m\omega$ and one
#    by $n\omega$ change a dot product only through the difference: $R_m q \cdot R_n k = q \cdot R_{n-m} k$.
#    The attention scores therefore depend on *relative* positions only, and the values are not touched.

# %%
def sinusoidal_positions(T: int, D: int) -> torch.Tensor:
    """(T, D): row p is the sinusoidal encoding of position p (D even)."""
    p = torch.arange(T, dtype=torch.float32)[:, None]                       # (T, 1)
    omega = 10000 ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)      # (D/2,)
    pe = torch.zeros(T, D)
    pe[:, 0::2] = torch.sin(p * omega)
    pe[:, 1::2] = torch.cos(p * omega)
    return pe


def apply_rope(x: torch.Tensor, start: int = 0, base: float = 10000.0) -> torch.Tensor:
    """Rotary positions: rotate the pair (x[..., 2i], x[..., 2i+1]) of row t of x (..., T, d) by the angle
    (start + t) * omega_i."""
    T, d = x.shape[-2:]
    p = torch.arange(start, start + T, dtype=torch.float32, device=x.device)                 # (T,)
    omega = base ** (-torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)       # (d/2,)
    angle = p[:, None] * omega                                                               # (T, d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]                                               # (..., T, d/2)
    rotated = torch.stack([x_even * cos - x_odd * sin,
                           x_even * sin + x_odd * cos], dim=-1)                       # (..., T, d/2, 2)
    return rotated.flatten(-2)                                                        # (..., T, d)


pe = sinusoidal_positions(100, 32)
assert torch.isclose(pe[7, 2 * 3], torch.sin(torch.tensor(7 * 10000 ** (-6 / 32))))
dots = torch.stack([pe[p] @ pe[p + 5] for p in range(90)])   # PE_p · PE_{p+5} for 90 values of p
assert torch.allclose(dots, dots[0].expand(90), atol=1e-4)    # the same for every p

# %% [markdown]
# PyTorch has no RoPE function to compare with, so we check `apply_rope` against a second, independent
# formulation: a pair $(a, b)$ is the complex number $a + ib$, and rotating it by $\theta$ is multiplying by
# $e^{i\theta}$ (`torch.polar`). We also check the relative-position property and that rotations keep lengths.

# %%
def rope_complex(x: torch.Tensor, start: int = 0, base: float = 10000.0) -> torch.Tensor:
    """The same rotation computed with complex numbers: the reference for apply_rope."""
    T, d = x.shape[-2:]
    p = torch.arange(start, start + T, dtype=torch.float64)
    omega = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rotation = torch.polar(torch.ones(T, d // 2, dtype=torch.float64), p[:, None] * omega)  # e^{i p omega}
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


gen = torch.Generator().manual_seed(cfg.seed)
x = torch.randn(2, 3, 10, 16, generator=gen)                  # (B, H, T, d)
assert torch.allclose(apply_rope(x), rope_complex(x), atol=1e-5)
assert torch.allclose(apply_rope(x, start=7), rope_complex(x, start=7), atol=1e-5)
assert torch.allclose(apply_rope(x).norm(dim=-1), x.norm(dim=-1), atol=1e-5)   # a rotation keeps lengths
q1, k1 = torch.randn(16, generator=gen), torch.randn(16, generator=gen)
def rope_score(m, n):                                         # q at position m scored against k at position n
    return apply_rope(q1.expand(1, 16), start=m) @ apply_rope(k1.expand(1, 16), start=n).T
assert torch.allclose(rope_score(3, 1), rope_score(23, 21), atol=1e-4)   # only n - m matters
print("RoPE matches the complex-number rotation, keeps lengths, and scores depend on n - m only")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
axes[0].imshow(pe.T, aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
axes[0].set(xlabel="position p", ylabel="feature", title="sinusoidal encodings (fast to slow frequencies)")
scores = torch.stack([rope_score(20, n).squeeze() for n in range(41)])
axes[1].plot(range(-20, 21), scores, "-o", markersize=3)
axes[1].set(xlabel="key position − query position", ylabel="q·k after RoPE",
            title="RoPE: one q and one k at every offset")
axes[1].grid(alpha=0.3)
fig.tight_layout()
plt.close(fig)
fig

# %% [markdown]
# **Which coordinates form a pair is a convention.** Ours pairs neighbours, $(x_0, x_1), (x_2, x_3), \dots$, as
# the RoPE paper and Meta's original Llama code do. Hugging Face's Llama code in `transformers` (and the many
# models written after it) pairs coordinate $i$ with $i + d/2$ instead: it computes
# $x \cos\theta + \mathrm{rotate\_half}(x)\sin\theta$, where `rotate_half` swaps the two halves of $x$ and negates
# the one that moves to the front. The two conventions are the same rotation applied to the coordinates in another
# order. So weights trained with one of them compute *different* attention scores under the other: load such a
# checkpoint into code written for the other convention and the model runs without an error, but predicts
# badly. The cure is to permute the output features of $W_q$ and $W_k$ (within every head: even features first,
# then odd ones), which Hugging Face's script that converts Meta's Llama checkpoints does. Values and every other
# weight stay as they are: only scores between a query and a key use RoPE, and a dot product does not change
# when both vectors' coordinates are permuted alike.

# %%
def apply_rope_half(x: torch.Tensor, start: int = 0, base: float = 10000.0) -> torch.Tensor:
    """RoPE in the rotate_half convention (Hugging Face Llama): rotate the pair (x[..., i], x[..., i + d/2]) of
    row t of x (..., T, d) by the angle (start + t) * omega_i."""
    T, d = x.shape[-2:]
    p = torch.arange(start, start + T, dtype=torch.float32, device=x.device)                 # (T,)
    omega = base ** (-torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)       # (d/2,)
    angle = (p[:, None] * omega).repeat(1, 2)                     # (T, d): feature i and i + d/2 share an angle
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    rotate_half = torch.cat([-x2, x1], dim=-1)                                               # (..., T, d)
    return x * angle.cos().to(x.dtype) + rotate_half * angle.sin().to(x.dtype)


gen = torch.Generator().manual_seed(cfg.seed)
d = 16
q_head, k_head = torch.randn(2, 12, d, generator=gen)       # one head's queries and keys: (T, d) each
to_halves = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])   # features 0, 2, 4, ..., then 1, 3, ...
# the same rotation, coordinates reordered
assert torch.allclose(apply_rope_half(q_head[:, to_halves]), apply_rope(q_head)[:, to_halves], atol=1e-5)
scores = apply_rope(q_head) @ apply_rope(k_head).T                                           # (T, T)
mixed = apply_rope_half(q_head) @ apply_rope_half(k_head).T            # same weights, other convention
permuted = apply_rope_half(q_head[:, to_halves]) @ apply_rope_half(k_head[:, to_halves]).T   # W_q, W_k rows permuted
print(f"scores, other convention with the same weights: largest difference {(mixed - scores).abs().max():.2f} "
      f"(scores up to {scores.abs().max():.1f}); with permuted q/k features: {(permuted - scores).abs().max():.1e}")
assert torch.allclose(permuted, scores, atol=1e-4)
assert (mixed - scores).abs().max() > 0.1 * scores.abs().max()

# %% [markdown]
# ## 4. The pre-LN transformer block
# A block updates a **residual stream** $x$ (B, T, D) twice: attention lets positions exchange information,
# then an MLP (D → 4D → D, GELU) processes each position on its own. Each sublayer reads a LayerNorm-ed copy
# of the stream and *adds* its result back:
# $$x \leftarrow x + \mathrm{Attention}(\mathrm{LN}_1(x)), \qquad
#   x \leftarrow x + \mathrm{MLP}(\mathrm{LN}_2(x)).$$
# This is the **pre-LN** arrangement used by GPT-2 and most models since. The original transformer normalised
# *after* the addition (post-LN); pre-LN keeps an unnormalised path from the input to the output, so gradients
# reach early layers intact and deep stacks train without a careful warm-up.
#
# For the models below, attention gets two options a language model needs: RoPE on queries and keys, and a
# **KV cache** (section 10; ignore `cache` until then). `start` is the position of the first token of `x`.
#
# One more change: in training mode `SelfAttention` calls `F.scaled_dot_product_attention`, which section 1
# showed computes what our `attention` computes. Training never looks at the attention weights, and the fused
# kernel never stores the (B, H, T, T) matrix of them, which makes it faster and leaner, on a GPU above all. In
# eval mode it runs our own function and keeps the weights, so that we can plot them.

# %%
class SelfAttention(MultiHeadAttention):
    """MultiHeadAttention plus optional rotary positions and KV cache (a dict, filled in place)."""

    def __init__(self, d_model: int, num_heads: int, rope: bool = False) -> None:
        super().__init__(d_model, num_heads)
        self.rope = rope

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: dict | None = None
                ) -> torch.Tensor:
        q, k, v = self.project(x)                                 # (B, H, T, D/H) each
        start = cache["k"].size(2) if cache else 0                # positions already in the cache
        if self.rope:
            q, k = apply_rope(q, start), apply_rope(k, start)
        if cache is not None:
            if cache:                                             # keys and values of the earlier tokens
                k = torch.cat([cache["k"], k], dim=2)             # (B, H, start + T, D/H)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        if self.training and cache is None:
            # nothing looks at the weights while training: use PyTorch's fused kernel (equal to ours, section 1)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y, weights = attention(q, k, v, mask)
            self.weights = weights.detach()                       # (B, H, T_q, T_k), for plotting
        return self.out(self.merge_heads(y))


class Block(nn.Module):
    """Pre-LN transformer block: x + attention(LN(x)), then x + MLP(LN(x)). (B, T, D) -> (B, T, D)."""

    def __init__(self, d_model: int, num_heads: int, rope: bool = False) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, num_heads, rope)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: dict | None = None
                ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask, cache)
        return x + self.mlp(self.ln2(x))


# %% [markdown]
# PyTorch's `nn.TransformerEncoderLayer` with `norm_first=True` is the same block. Copy our weights into it
# and compare (its mask convention is again `True` = blocked):

# %%
torch.manual_seed(cfg.seed)
B, T, D, H = 2, 7, 32, 4
block = Block(D, H)
reference = nn.TransformerEncoderLayer(D, H, dim_feedforward=4 * D, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
with torch.no_grad():
    reference.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
    reference.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
    for ours, theirs in [(block.attn.out, reference.self_attn.out_proj), (block.mlp[0], reference.linear1),
                         (block.mlp[2], reference.linear2), (block.ln1, reference.norm1),
                         (block.ln2, reference.norm2)]:
        theirs.weight.copy_(ours.weight)
        theirs.bias.copy_(ours.bias)
x = torch.randn(B, T, D)
for mask in (None, causal_mask(T)):
    ours = block(x, mask)
    torchs = reference(x, src_mask=None if mask is None else ~mask)
    name = "no mask" if mask is None else "causal mask"
    print(f"{name}: largest difference {(ours - torchs).abs().max():.1e}")
    assert torch.allclose(ours, torchs, atol=1e-5)

# %% [markdown]
# ## 5. A small transformer
# The whole model: token embedding → (learned or sinusoidal positions) → `num_layers` blocks → a final
# LayerNorm → a linear **head** giving one score per vocabulary entry at every position. An embedding
# (`nn.Embedding(V, D)`) is a trainable lookup table: token id $t$ becomes row $t$ of a (V, D) matrix. One
# flag switches the causal mask: on, it is a GPT-style **decoder** that predicts the next token; off, it is an
# **encoder** in which every position sees the whole sequence.
#
# `forward(idx, cache)` takes token ids (B, T) and returns logits (B, T, V). With a cache (a list of one dict
# per layer), `idx` holds only the *new* tokens, and positions continue where the cache left off.

# %%
POSITIONS = ("none", "sinusoidal", "learned", "rope")


class Transformer(nn.Module):
    """Token ids (B, T) -> logits (B, T, vocab_size). causal=True: a GPT-style decoder; False: an encoder."""

    def __init__(self, vocab_size: int, max_len: int, d_model: int = 64, num_heads: int = 4,
                 num_layers: int = 2, positions: str = "learned", causal: bool = True) -> None:
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, not {positions!r}")
        self.max_len, self.positions, self.causal = max_len, positions, causal
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model) if positions == "learned" else None
        sin_pe = sinusoidal_positions(max_len, d_model) if positions == "sinusoidal" else None
        self.register_buffer("sin_pe", sin_pe)                           # (max_len, D) or None
        self.blocks = nn.ModuleList([Block(d_model, num_heads, rope=positions == "rope")
                                     for _ in range(num_layers)])
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, idx: torch.Tensor, cache: list[dict] | None = None) -> torch.Tensor:
        T = idx.shape[1]                                                 # idx: (B, T)
        start = cache[0]["k"].size(2) if cache and cache[0] else 0      # tokens already seen
        if start + T > self.max_len:
            raise ValueError(f"{start + T} positions, but the model was built for max_len={self.max_len}")
        x = self.tok(idx)                                                # (B, T, D)
        positions = torch.arange(start, start + T, device=idx.device)   # (T,)
        if self.pos is not None:
            x = x + self.pos(positions)
        if self.sin_pe is not None:
            x = x + self.sin_pe[positions]
        mask = causal_mask(T, start + T, device=idx.device) if self.causal else None
        for i, block in enumerate(self.blocks):
            x = block(x, mask, None if cache is None else cache[i])
        return self.head(self.ln(x))                                     # (B, T, V)


def sequence_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position: y_hat (B, T, V) logits, y (B, T) targets."""
    return F.cross_entropy(y_hat.flatten(0, 1), y.flatten())


model = Transformer(vocab_size=10, max_len=8)
print(f"{dlcourse.models.count_parameters(model):,} parameters;",
      "logits:", tuple(model(torch.randint(0, 10, (3, 8))).shape))

# %% [markdown]
# ## 6. An encoder learns an algorithm
# `dlcourse.text.sequence_task` draws random sequences of 8 digits (0–9) and their targets: the sequence
# **reversed**, or **sorted**. The encoder predicts the target digit at every position at once. The loss is
# the mean cross-entropy over positions; we report *token accuracy* (the fraction of right digits) and the
# fraction of sequences with all 8 right.
#
# Reversal is a pure question of position: output $i$ must copy input $7 - i$. So it is a good test of the
# position schemes, and of the claim that attention without positions cannot tell order. We train the same
# encoder with each scheme.
#
# **Which weights to decay.** AdamW's weight decay pulls every parameter it is given towards zero at every step.
# As in notebook 04, biases and LayerNorm's scales and shifts get none: they set offsets and scales, not how
# strongly features interact, and pulling a LayerNorm scale towards 0 shrinks the output the layer has just
# normalised. Embedding tables get none either: decoupled decay shrinks every row at every step, while a row gets
# a gradient only at the steps where its token or position occurs, so rare characters' vectors would be pulled
# towards zero. What is left are the weight
# matrices of the `nn.Linear` layers. (Notebook 04's rule, "decay tensors with 2 or more dimensions", would still
# decay the 2-D embedding tables.) `dlcourse.train.decay_groups` builds these two groups by module type (the
# weights of Linear and convolution layers decayed), and `decayed_names` lists what an optimizer decays.

# %%
from dlcourse.train import decay_groups, decayed_names

example = Transformer(vocab_size=10, max_len=8, positions="learned")
groups = decay_groups(example, weight_decay=0.01)
linear_weights = {f"{name}.weight" for name, m in example.named_modules() if isinstance(m, nn.Linear)}
assert decayed_names(example, torch.optim.AdamW(groups)) == linear_weights
assert sum(len(g["params"]) for g in groups) == len(list(example.parameters()))       # each parameter once
print(f"decayed ({len(groups[0]['params'])} tensors):", sorted(linear_weights)[:4], "...")
print(f"not decayed ({len(groups[1]['params'])} tensors):",
      sorted(set(dict(example.named_parameters())) - linear_weights)[:6], "...")

# %%
length, vocab = 8, 10
n_train = cfg.pick(smoke=2048, small=8192, full=32768)
seq_epochs = cfg.pick(smoke=3, small=6, full=10)
seq_batch = cfg.pick(smoke=64, small=64, full=256)        # full: fewer, larger steps for a GPU
seq_size = cfg.pick(smoke=dict(d_model=32, num_layers=1), small=dict(d_model=64, num_layers=2),
                    full=dict(d_model=128, num_layers=2))


@torch.no_grad()
def token_accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(fraction of right tokens, fraction of sequences with every token right)."""
    model.eval()
    right = model(X.to(device)).argmax(dim=-1).cpu() == y   # (N, T)
    return right.float().mean().item(), right.all(dim=1).float().mean().item()


def train_encoder(kind: str, positions: str) -> tuple[Transformer, float, float, float]:
    """Train an encoder on a task; return it, its validation token and sequence accuracies, and seconds."""
    X, y = text.sequence_task(kind, n_train, length, vocab, seed=cfg.seed)
    X_val, y_val = text.sequence_task(kind, 2000, length, vocab, seed=cfg.seed + 1)
    train_loader, val_loader = dlcourse.data.make_loaders(TensorDataset(X, y), TensorDataset(X_val, y_val),
                                                          batch_size=seq_batch, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = Transformer(vocab, length, num_heads=4, positions=positions, causal=False, **seq_size).to(device)
    optimizer = torch.optim.AdamW(decay_groups(model, weight_decay=0.01), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, pct_start=0.1,
                                                    total_steps=seq_epochs * len(train_loader))
    t0 = time.perf_counter()
    dlcourse.fit(model, optimizer, train_loader, val_loader, num_epochs=seq_epochs, loss_fn=sequence_loss,
                 scheduler=scheduler, scheduler_step="batch", progress=False)
    seconds = time.perf_counter() - t0
    return (model, *token_accuracy(model, X_val, y_val), seconds)


print(f"{'positions':>10} | {'token acc':>9} | {'sequence acc':>12} | {'seconds':>7}")
reverse_results = {}
for positions in cfg.pick(smoke=("none", "learned"), small=POSITIONS, full=POSITIONS):
    model, tok_acc, seq_acc, seconds = train_encoder("reverse", positions)
    reverse_results[positions] = (model, tok_acc)
    print(f"{positions:>10} | {tok_acc:>9.1%} | {seq_acc:>12.1%} | {seconds:>7.1f}")

assert reverse_results["learned"][1] >= cfg.pick(smoke=0.9, small=0.99, full=0.99)
assert reverse_results["none"][1] < 0.5, "without positions, reversal should be out of reach"

# %% [markdown]
# Without positions the encoder only knows *which* digits occur, not where: it can guess better than chance,
# but not reverse. Learned and sinusoidal positions tell every position where it is, and reversal becomes a
# lookup. RoPE only ever tells attention the *offset* between two positions, and the offset to the mirror
# position, $7 - 2i$, depends on where the query is: a single layer cannot know that, while a deeper encoder
# can work out its place from where the sequence ends. Compare the rows at your scale.
#
# Look inside the learned-position encoder: each head's attention weights for one sequence, queries in rows.

# %%
def plot_attention(weights: torch.Tensor, labels: list[str], title: str, max_heads: int = 4) -> plt.Figure:
    """Heat maps of (H, T, T) attention weights, one panel per head; row = query, column = key."""
    n = min(max_heads, len(weights))
    ncols = n if len(labels) <= 12 else min(n, 2)            # long sequences: bigger panels, two per row
    nrows = -(-n // ncols)
    size = max(3.2, 0.16 * len(labels))                      # inches per panel
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), squeeze=False)
    for h, ax in enumerate(axes.flat):
        if h >= n:
            ax.axis("off")
            continue
        ax.imshow(weights[h].cpu(), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set(title=f"head {h}", xlabel="key", ylabel="query")
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


reverser = reverse_results["learned"][0].eval()
X_show, _ = text.sequence_task("reverse", 1, length, vocab, seed=123)
with torch.no_grad():
    prediction = reverser(X_show.to(device)).argmax(dim=-1)[0].tolist()
print("input:", X_show[0].tolist(), "-> output:", prediction)
# For each layer, the largest share of attention any head puts on the mirror position (the anti-diagonal).
mirror = torch.arange(length).flip(0)                                     # key 7 - i for query i
on_mirror = [blk.attn.weights[0][:, torch.arange(length), mirror].mean(dim=1).max().item()
             for blk in reverser.blocks]
layer = max(range(len(on_mirror)), key=on_mirror.__getitem__)
print("best head's weight on the mirror position, per layer:", [round(w, 2) for w in on_mirror])
assert on_mirror[layer] > 0.5
digits = [str(t) for t in X_show[0].tolist()]
plot_attention(reverser.blocks[layer].attn.weights[0], digits, f"reversal encoder, layer {layer}")

# %% [markdown]
# One head reads along the anti-diagonal: query $i$ looks at key $7 - i$, exactly the reversal (the check
# above asserts that most of its weight is there).
#
# **Sorting** needs more than positions: output $i$ must find the $i$-th smallest digit, which depends on
# comparing every digit with every other. The same encoder learns it too.

# %%
sorter, sort_acc, sort_seq_acc, seconds = train_encoder("sort", "learned")
X_show, _ = text.sequence_task("sort", 1, length, vocab, seed=123)
with torch.no_grad():
    print("input:", X_show[0].tolist(), "-> output:", sorter(X_show.to(device)).argmax(dim=-1)[0].tolist())
print(f"sorting: token accuracy {sort_acc:.1%}, whole sequences {sort_seq_acc:.1%}, "
      f"trained in {seconds:.1f} s")
assert sort_acc >= cfg.pick(smoke=0.8, small=0.99, full=0.99)

# %% [markdown]
# ## 7. A character-level language model of Python
# Our corpus is the Python standard library's own source code: on every machine with Python, offline, and the
# same text wherever the Python version is the same (the fingerprint below lets you compare machines).
# `dlcourse.text.python_source_corpus` joins its files in an order fixed by the seed.
#
# A **character tokenizer** maps each character to an integer id (id 0 stands for anything unseen). The model
# reads windows of `block_size` characters and, at every position, predicts the next character: targets are
# the inputs shifted by one. `lm_splits` cuts the text into chunks and keeps evenly spaced ones, a tenth of
# the text, for validation, so that no training window ever contains validation text.

# %%
max_chars = cfg.pick(smoke=200_000, small=2_000_000, full=None)          # full: every file
block_size = cfg.pick(smoke=64, small=128, full=256)
corpus = text.python_source_corpus(max_chars, seed=cfg.seed)
tokenizer = text.CharTokenizer(corpus)
ids = tokenizer.encode(corpus)                                          # (len(corpus),) int64
train_set, val_set = text.lm_splits(ids, block_size, val_fraction=0.1)
print(f"{len(corpus):,} characters (fingerprint {text.corpus_fingerprint(corpus)}), {tokenizer}")
print(f"{len(train_set):,} training windows, {len(val_set):,} validation windows of {block_size} characters")
print(corpus[:300])
x0, y0 = train_set[0]
assert tokenizer.decode(x0[1:]) == tokenizer.decode(y0[:-1])            # y is x shifted by one
assert tokenizer.decode(tokenizer.encode(corpus[:1000])) == corpus[:1000]

# %% [markdown]
# **The baseline to beat.** A model that ignores the context can do no better than predicting every character
# with its frequency in the training text. Its loss, the **unigram cross-entropy**, is measured on the
# validation text (with one extra count for every character, so that no probability is zero). Predicting all
# characters as equally likely would score $\log V$.

# %%
train_ids, val_ids = train_set.ids, val_set.ids
counts = torch.bincount(train_ids, minlength=tokenizer.vocab_size).float() + 1
unigram = -(counts / counts.sum()).log()[val_ids].mean().item()
print(f"uniform: {math.log(tokenizer.vocab_size):.3f} nats/char; unigram: {unigram:.3f} nats/char "
      f"({unigram / math.log(2):.2f} bits)")
top = counts.argsort(descending=True)[:10]
print("most frequent:", [tokenizer.itos[i] for i in top])

# %% [markdown]
# Now train a small GPT with RoPE positions on it with `dlcourse.fit`, AdamW (decaying the Linear layers'
# matrices only, `decay_groups` of section 6) and a one-cycle learning-rate schedule. The training budget is a
# number of **steps** (optimizer updates of `batch_size` windows each), fixed in advance like the compute budget
# of a real training run; the size of the corpus does not change it.
# To see the validation loss fall, the steps are cut into a few *rounds* of randomly drawn windows (`fit`
# calls them epochs) with a validation pass after each.
#
# **What the budget costs.** Training a transformer costs about $6N + 12\,L\,T\,D$ floating-point operations
# (FLOPs) per token: each of the $N$ weights of the matrix products does a multiply and an add per token in
# the forward pass and twice that in the backward pass, and attention's two $T \times T$ products add
# $12\,T D$ per layer (`dlcourse.models.transformer_training_flops`). Times the tokens of the budget, that is
# the work; divided by the measured seconds, the throughput this machine reached. On a GPU, the matrix
# products run in bfloat16 under autocast (mixed precision, the topic of notebook 07) where the GPU computes
# it natively, and in float16 with loss scaling on older GPUs; on the CPU, in float32.

# %%
lm_size = cfg.pick(smoke=dict(d_model=32, num_heads=2, num_layers=1),
                   small=dict(d_model=96, num_heads=4, num_layers=3),
                   full=dict(d_model=384, num_heads=6, num_layers=6))
lm_steps, rounds = cfg.pick(smoke=(180, 3), small=(440, 4), full=(3000, 10))   # the budget: optimizer steps
lr, batch_size = cfg.pick(smoke=1e-2, small=1e-2, full=1e-3), cfg.pick(smoke=32, small=32, full=64)
clip = cfg.pick(smoke=None, small=None, full=1.0)      # full: clip the gradient norm, a guard for a long run
amp = device.type == "cuda"                            # mixed precision on a GPU (notebook 07)

steps_per_round = lm_steps // rounds
sampler = RandomSampler(train_set, num_samples=steps_per_round * batch_size,
                        generator=torch.Generator().manual_seed(cfg.seed))
train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler)
val_loader = DataLoader(val_set, batch_size=4 * batch_size)
torch.manual_seed(cfg.seed)
gpt = Transformer(tokenizer.vocab_size, block_size, positions="rope", causal=True, **lm_size).to(device)
optimizer = torch.optim.AdamW(decay_groups(gpt, weight_decay=0.1), lr=lr)
assert decayed_names(gpt, optimizer) == {f"{name}.weight" for name, m in gpt.named_modules()
                                         if isinstance(m, nn.Linear)}, "decay only the Linear layers' matrices"
scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, pct_start=0.1,
                                                total_steps=rounds * len(train_loader))
tokens = rounds * len(train_loader) * batch_size * block_size
flops = dlcourse.models.transformer_training_flops(gpt, block_size) * tokens
print(f"{dlcourse.models.count_parameters(gpt):,} parameters; {rounds} rounds of {len(train_loader)} steps of "
      f"{batch_size} × {block_size} characters = {tokens / 1e6:.1f} M characters "
      f"({tokens / len(train_ids):.1f} × the training text); about {flops / 1e12:,.1f} TFLOP"
      + (f", autocast {dlcourse.config.amp_dtype(device)}" if amp else ""))
history = dlcourse.fit(gpt, optimizer, train_loader, val_loader, num_epochs=rounds, loss_fn=sequence_loss,
                       scheduler=scheduler, scheduler_step="batch", progress=progress, amp=amp,
                       clip_grad_norm=clip)
val_loss, seconds = history.last["val_loss"], sum(history["seconds"])
print(f"validation loss {val_loss:.3f} nats/char ({val_loss / math.log(2):.2f} bits) vs unigram "
      f"{unigram:.3f}, trained in {seconds:.0f} s: {flops / seconds / 1e12:.2f} TFLOP/s "
      f"(the seconds include the validation passes)")
assert val_loss < unigram - cfg.pick(smoke=0.3, small=1.0, full=1.5), "should beat the unigram baseline"

# %%
fig = dlcourse.viz.plot_history(history, title="character-level GPT on Python source")
ax = fig.axes[0]
ax.axhline(unigram, color="grey", linestyle="--", label="unigram baseline")
ax.set(xlabel=f"round ({len(train_loader)} steps each)", ylabel="loss (nats per character)")
ax.legend()
fig

# %% [markdown]
# ## 8. Sampling: temperature and top-k
# The model gives a distribution over the next character; generating text means drawing from it, appending the
# draw, and repeating. Two knobs shape the distribution first:
# - **temperature** $\tau$ divides the logits: $\tau < 1$ sharpens the distribution (safer, more repetitive
#   text), $\tau > 1$ flattens it (more varied, more mistakes); $\tau \to 0$ is greedy decoding, the argmax.
# - **top-k** keeps only the $k$ most likely characters (the others get logit $-\infty$), cutting off the long
#   tail of unlikely ones that produce garbage.

# %%
def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row of logits (B, V) -> (B,); temperature 0 means greedy (argmax)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth_largest = logits.topk(top_k, dim=-1).values[:, -1:]                 # (B, 1)
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = logits.softmax(dim=-1)                                              # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


# Check: draws follow softmax(logits / temperature), restricted to the top k and renormalised.
logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
gen = torch.Generator().manual_seed(cfg.seed)
draws = sample_next(logits.expand(20_000, 5), temperature=0.7, top_k=3, generator=gen)
expected = torch.zeros(5)
expected[:3] = (logits[0, :3] / 0.7).softmax(dim=0)
observed = torch.bincount(draws, minlength=5) / len(draws)
print("expected:", expected.numpy().round(3), "observed:", observed.numpy().round(3))
assert torch.allclose(observed, expected, atol=0.02) and observed[3:].sum() == 0
assert torch.equal(sample_next(logits, temperature=0), torch.tensor([0]))


@torch.no_grad()
def generate(model: Transformer, idx: torch.Tensor, num_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, use_cache: bool = False, generator: torch.Generator | None = None
             ) -> torch.Tensor:
    """Extend idx (B, T) by num_new_tokens sampled tokens -> (B, T + num_new_tokens).

    Without a cache, every step runs the model on the whole sequence so far (at most its last max_len tokens);
    with one, the first step reads the prompt and every later step only the newest token.
    """
    model.eval()
    cache = [{} for _ in model.blocks] if use_cache else None
    logits = model(idx, cache)                                      # read the prompt: (B, T, V)
    for step in range(num_new_tokens):
        next_id = sample_next(logits[:, -1], temperature, top_k, generator)   # (B,)
        idx = torch.cat([idx, next_id[:, None]], dim=1)
        if step == num_new_tokens - 1:
            break
        if use_cache:
            logits = model(next_id[:, None], cache)                 # one new position: (B, 1, V)
        else:
            logits = model(idx[:, -model.max_len:])                 # everything again
    return idx


prompt = "def "
gen = torch.Generator(device=device).manual_seed(cfg.seed)
num_chars = cfg.pick(smoke=100, small=400, full=800)
for temperature, top_k in [(0.0, None), (0.8, 10), (1.0, None)]:
    start_ids = tokenizer.encode(prompt)[None].to(device)                   # (1, len(prompt))
    out = generate(gpt, start_ids, num_chars, temperature, top_k, generator=gen)
    print(f"──── temperature {temperature}, top-k {top_k} " + "─" * 40)
    print(tokenizer.decode(out[0].cpu()))

# %% [markdown]
# Greedy decoding tends to fall into a loop, repeating the same few characters: the most likely next character
# after a run of spaces is often another space. Sampling escapes such loops at the price of occasional
# nonsense; a lower temperature or a smaller top-k trades variety for fewer mistakes.

# %% [markdown]
# ## 9. What the language model attends to
# Every head of every layer has its own attention map. Below, the heads of the last layer reading a line of
# Python (queries in rows, keys in columns; the causal mask keeps everything above the diagonal at zero).
# Patterns to look for: a head that looks at the previous character or two, one that looks back to the start
# of the current word or line, and heads that spread their attention wide. A tiny model at `smoke` scale shows
# little structure; at `small` and `full` the heads specialise.

# %%
snippet = "for key, value in self.items():"
snippet_ids = tokenizer.encode(snippet)[None].to(device)
with torch.no_grad():
    gpt.eval()(snippet_ids)
labels = [c if c != " " else "·" for c in snippet]                 # make spaces visible
plot_attention(gpt.blocks[-1].attn.weights[0], labels, "language model, last layer", max_heads=4)

# %% [markdown]
# ## 10. A KV cache for fast generation
# Generating $n$ tokens without a cache runs the model on 1, 2, …, $n$ positions, although at every step only
# the newest position is new. The two parts of the model grow differently:
# - the projections, the MLP and the output head cost the same for every position they process, so a whole
#   generation costs them $1 + 2 + \dots + n \approx n^2/2$ positions' worth: it grows like $n^2$;
# - attention at a step with $t$ positions scores $t$ queries against $t$ keys, $t^2$ pairs, and a whole
#   generation adds up $1^2 + 2^2 + \dots + n^2 \approx n^3/3$ of them: it grows like $n^3$.
#
# The keys and values of earlier positions never change (the causal mask means they never see later tokens), so
# we can keep them: the **KV cache**. Each step then computes q, k and v for the newest token only, appends its
# k and v to the cache, and attends over everything cached: one query against $t$ keys. Over a generation the
# projections and the MLP then cost $n$ positions' worth (linear in $n$) and attention $\approx n^2/2$ pairs.
# With RoPE the new token is rotated for its own position, which `SelfAttention` takes from the cache's length.
#
# The cache must not change what the model computes. The logits with and without it agree up to float
# rounding only: with one query row instead of T, the matrix products have other shapes, and the kernels (on a
# GPU especially) add up the same terms in another order, so results differ in the last bits (about 1e-6 of
# their size). Greedy decoding therefore produces the very same tokens, unless two candidates for a next
# token are within that rounding of each other, a near-tie that can send the two generations apart; the check
# below allows exactly that and nothing more. Timing both for several lengths (best of three runs each) shows
# the speed-up on this machine.

# %%
def sync() -> None:
    """Wait for queued GPU work, so timings measure the computation (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


@torch.no_grad()
def logits_with_cache(model: Transformer, idx: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Logits (B, T, V) for idx (B, T), computed the way generation does: the prompt at once, then one token at a
    time through the KV cache."""
    model.eval()
    cache = [{} for _ in model.blocks]
    steps = [model(idx[:, :prompt_len], cache)] + [model(idx[:, t:t + 1], cache)
                                                   for t in range(prompt_len, idx.shape[1])]
    return torch.cat(steps, dim=1)


@torch.no_grad()
def check_same_generation(model: Transformer, plain: torch.Tensor, cached: torch.Tensor) -> None:
    """Greedy generations with and without the cache must be equal, except after a near-tie of two logits."""
    if torch.equal(plain, cached):
        return
    t = int((plain != cached).nonzero()[0, 1])                    # the first position where they differ
    logits = model.eval()(plain[:, :t])[0, -1]                    # (V,) what both saw before position t
    gap = (logits[plain[0, t]] - logits[cached[0, t]]).abs().item()
    print(f"the generations part at position {t}, where the two best logits differ by only {gap:.1e}")
    # the logits may each be off by the tolerance of the allclose check below: 1e-4 (1 + |logit|)
    assert gap <= 2e-4 * (1 + logits.abs().max().item()), "the KV cache changed the greedy generation"


prompt_ids = tokenizer.encode("import ")[None].to(device)                 # (1, 7)
lengths_to_time = cfg.pick(smoke=(16, 56), small=(30, 60, 120), full=(60, 120, 248))
print(f"{'new tokens':>10} | {'no cache (ms)':>13} | {'KV cache (ms)':>13} | {'speed-up':>8}")
for n_new in lengths_to_time:
    plain = generate(gpt, prompt_ids, n_new, temperature=0)
    cached = generate(gpt, prompt_ids, n_new, temperature=0, use_cache=True)
    check_same_generation(gpt, plain, cached)
    t_plain = best_time(lambda n=n_new: generate(gpt, prompt_ids, n, temperature=0))
    t_cached = best_time(lambda n=n_new: generate(gpt, prompt_ids, n, temperature=0, use_cache=True))
    print(f"{n_new:>10} | {1000 * t_plain:>13.1f} | {1000 * t_cached:>13.1f} | {t_plain / t_cached:>7.1f}×")
with torch.no_grad():
    no_cache = gpt.eval()(plain)                                            # (1, T, V): all positions at once
with_cache = logits_with_cache(gpt, plain, prompt_ids.shape[1])
print(f"logits with and without the cache: largest difference {(with_cache - no_cache).abs().max():.1e} "
      f"(largest logit {no_cache.abs().max():.1f})")
assert torch.allclose(with_cache, no_cache, rtol=1e-4, atol=1e-4)

# %% [markdown]
# The gain grows with the number of generated tokens; for a few tokens with a tiny model, the cache's
# bookkeeping (a `torch.cat` per layer and step) can cost more than it saves.
#
# Times depend on the machine; the work does not. `torch.utils.flop_counter.FlopCounterMode` counts the
# floating-point operations of every matrix product that runs (2 per multiply-add). In eval mode our attention
# is two batched products (`aten.bmm`: $QK^\top$ and the weighted sum of values); everything else is a `Linear`
# layer (`aten.addmm`). Counting both for generations of several lengths from a one-token prompt, and fitting a
# line to log FLOPs against log $n$, gives each curve's growth exponent. (`FlopCounterMode` does not count
# `F.scaled_dot_product_attention` on the CPU in this version: one more reason this section runs our own
# attention.)

# %%
from torch.utils.flop_counter import FlopCounterMode


def generation_flops(model: Transformer, n: int, use_cache: bool) -> tuple[int, int]:
    """FLOPs of generating n tokens greedily from a one-token prompt: (attention's products, all the rest)."""
    with FlopCounterMode(display=False) as counter:
        generate(model, prompt_ids[:, :1], n, temperature=0, use_cache=use_cache)
    by_op = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    attention_flops = by_op.pop("aten.bmm", 0)
    assert set(by_op) <= {"aten.addmm", "aten.mm"}, by_op                  # the rest: Linear layers only
    return attention_flops, sum(by_op.values())


def growth_exponent(ns, values) -> float:
    """Slope of the least-squares line through (log n, log value)."""
    x, y = torch.tensor(ns, dtype=torch.float64).log(), torch.tensor(values, dtype=torch.float64).log()
    return (((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()


ns = cfg.pick(smoke=(8, 16, 32), small=(16, 32, 64, 128), full=(32, 64, 128, 256))   # at most max_len
counts = {use_cache: [generation_flops(gpt, n, use_cache) for n in ns] for use_cache in (False, True)}
L, D = len(gpt.blocks), gpt.tok.embedding_dim
linear_weights = sum(m.weight.numel() for m in gpt.modules() if isinstance(m, nn.Linear))
print(f"{'n':>5} | {'no cache: attention':>19} | {'rest':>12} | {'KV cache: attention':>19} | {'rest':>10}")
for i, n in enumerate(ns):
    (a_plain, r_plain), (a_cached, r_cached) = counts[False][i], counts[True][i]
    print(f"{n:>5} | {a_plain:>19,} | {r_plain:>12,} | {a_cached:>19,} | {r_cached:>10,}")
    # the sums above, exactly: 4·L·D FLOPs per query-key pair, 2 per Linear weight and position
    assert a_plain == 4 * L * D * sum(t * t for t in range(1, n + 1))
    assert r_plain == 2 * linear_weights * sum(range(1, n + 1))
    assert a_cached == 4 * L * D * sum(range(1, n + 1)) and r_cached == 2 * linear_weights * n
exponents = {(use_cache, part): growth_exponent(ns, [c[j] for c in counts[use_cache]])
             for use_cache in (False, True) for j, part in enumerate(("attention", "rest"))}
for (use_cache, part), e in exponents.items():
    print(f"{'KV cache' if use_cache else 'no cache'}, {part:>9}: FLOPs grow like n^{e:.2f}")
assert 2.7 < exponents[False, "attention"] < 3.0 and 1.8 < exponents[False, "rest"] < 2.0
assert 1.8 < exponents[True, "attention"] < 2.0 and abs(exponents[True, "rest"] - 1) < 1e-9

# %% [markdown]
# The fitted exponents sit a little below 3 and 2 because the sums are $n^3/3 + n^2/2 + \dots$ and
# $n^2/2 + n/2$, whose lower terms still matter at these lengths. With or without a cache, attention's share of
# the work grows in proportion to $n$, so in long generations attention dominates whatever the model's width.
#
# The cache costs memory instead: two tensors of shape (B, H, T, D/H) per layer, growing with every token. For
# large models serving many users this, not compute, limits the batch size; multi-query and grouped-query
# attention (several query heads sharing one key/value head) shrink it.
#
# ## Summary
# - Attention is `softmax(QKᵀ/√d) V`: two matrix products and a softmax. Masks set scores to −∞: padding masks
#   hide padding keys, causal masks hide the future. Ours equals `F.scaled_dot_product_attention`.
# - Multi-head attention projects to H smaller heads, attends in each, and mixes the results; with the same
#   weights ours equals `nn.MultiheadAttention`.
# - Attention ignores order. Positions come in as added vectors (sinusoidal, learned) or as rotations of
#   queries and keys (RoPE, which makes scores depend on relative positions only).
# - A pre-LN block adds attention and an MLP to a residual stream, each reading a LayerNorm-ed copy.
# - Without a causal mask the model is an encoder: it learns reversal (given positions) and sorting. With one
#   it is a GPT: trained on Python source, it goes well below the unigram baseline and writes Python-looking
#   text.
# - Temperature and top-k shape the sampling distribution; temperature 0 is greedy.
# - Without a cache, generating $n$ tokens costs the projections and MLP $\sim n^2$ and attention $\sim n^3$
#   FLOPs. A KV cache keeps keys and values of past tokens, so each new token costs one position of projections
#   and MLP plus one query's attention over the cache ($\sim n$ and $\sim n^2$ in all, counted above); the
#   logits equal the uncached ones up to float rounding, and the speed-up is measured above.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **Post-LN.** Write a post-LN block (`x = LN(x + attention(x))`, then the same for the MLP), check it
#    against `nn.TransformerEncoderLayer(norm_first=False)`, and train the language model with it at the same
#    learning rate. What happens with more layers or a higher learning rate?
# 2. **Longer than trained.** Generate past `block_size` with the learned-position encoder and with the RoPE
#    language model (build it with a larger `max_len` and the same weights). Which one still runs, and which
#    one still writes sensible code?
# 3. **A faster cache.** `torch.cat` copies the whole cache at every step. Preallocate (B, H, max_len, D/H)
#    tensors and write into them instead, check the generations stay identical, and time it against the table
#    of section 10.
# 4. **Heads.** Train the language model with 1, 2 and 4 heads of the same total width. Does the validation
#    loss change? Plot each head's attention on the snippet of section 9 and describe what they do.
# 5. **Sorting longer sequences.** Train the sorter on length 8 and test it on length 12 (with a larger
#    `max_len`). Which position scheme generalises, if any?
# 6. **Grouped-query attention.** Let 4 query heads share 2 (or 1) key/value heads. How many parameters and
#    how much cache memory does that save, and how much validation loss does it cost?
