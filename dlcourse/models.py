"""Reference models that several notebooks reuse, so they are defined once and tested here.

Notebook 01 builds an MLP by hand and notebook 03 builds a CNN by hand; later notebooks (regularisation, mixed
precision, memory, profiling, ...) take these ready-made versions. Notebook 06 builds a GPT by hand; :class:`GPT` is
its compact ready-made version (used from notebook 11 on). Shapes in comments: B batch, C channels, T positions,
D model width, V vocabulary size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def mlp(in_features: int, hidden: Sequence[int], num_classes: int, *, dropout: float = 0.0) -> nn.Sequential:
    """Linear → ReLU (→ Dropout) blocks, then a Linear head returning logits. Input (B, in_features) or (B, ...)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3×3 conv (no bias: BatchNorm has one) → BatchNorm → ReLU; keeps height and width."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class SmallCNN(nn.Module):
    """A compact CNN for 8×8 digits or 32×32 shapes: ``depth`` conv blocks, each followed by 2×2 max-pooling
    (while the image is larger than 2×2), widths doubling from ``width``; global average pooling; a linear head.

    (B, in_channels, H, W) → (B, num_classes) logits.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 6, width: int = 16, depth: int = 3,
                 image_size: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, size = in_channels, image_size
        for i in range(depth):
            layers.append(conv_block(c, width * 2 ** i))
            c = width * 2 ** i
            if size > 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, X):  # X: (B, C, H, W)
        return self.head(self.features(X))  # (B, num_classes)


def transformer_training_flops(model: nn.Module, seq_len: int) -> int:
    """Estimated floating-point operations to train a transformer on one token (forward and backward pass).

    The usual rule 6N + 12·L·T·D (Kaplan et al. 2020; PaLM, appendix B): each of the N weights in a matrix
    product costs a multiply and an add per token in the forward pass and twice that in the backward pass, and
    attention's two (T, T) products add 12·T·D per layer (counted in full; a causal mask makes half of that
    work wasted). N leaves out the embedding tables, which are lookups, not products; the output head counts.
    Works for models with ``blocks`` (L of them) and an ``nn.Embedding`` ``tok`` of width D: :class:`GPT` and
    notebook 06's ``Transformer`` (where it is introduced; notebook 11 uses it too).
    """
    lookups = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    n = count_parameters(model, trainable_only=False) - lookups
    return 6 * n + 12 * len(model.blocks) * seq_len * model.tok.embedding_dim


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with PyTorch's fused kernel: (B, T, D) -> (B, T, D).

    ``qkv`` computes queries, keys and values in one ``nn.Linear(D, 3D)`` (laid out like
    ``nn.MultiheadAttention.in_proj_weight``); ``out`` mixes the heads' outputs.
    """

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = (t.view(B, T, self.num_heads, D // self.num_heads).transpose(1, 2)    # (B, H, T, D/H) each
                   for t in self.qkv(x).chunk(3, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)                      # (B, H, T, D/H)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class GPTBlock(nn.Module):
    """Pre-LN block: x + attention(LN(x)), then x + MLP(LN(x)) with a D -> 4D -> D GELU MLP. (B, T, D) -> (B, T, D)."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, num_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A small GPT-style decoder (notebook 06's character model, with learned positions and no KV cache).

    Token ids (B, T) with T <= ``max_len`` -> next-token logits (B, T, vocab_size). Module names, e.g. for
    picking layers by name: ``tok``, ``pos``, ``blocks.{i}.ln1``, ``blocks.{i}.attn.qkv``, ``blocks.{i}.attn.out``,
    ``blocks.{i}.ln2``, ``blocks.{i}.mlp.0``, ``blocks.{i}.mlp.2``, ``ln``, ``head``.
    """

    def __init__(self, vocab_size: int, max_len: int, d_model: int = 64, num_heads: int = 4,
                 num_layers: int = 2) -> None:
        super().__init__()
        self.max_len = max_len
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList([GPTBlock(d_model, num_heads) for _ in range(num_layers)])
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]                                                  # idx: (B, T)
        if T > self.max_len:
            raise ValueError(f"{T} positions, but the model was built for max_len={self.max_len}")
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))                                      # (B, T, V)
