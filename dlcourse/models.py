"""Reference models that several notebooks reuse, so they are defined once and tested here.

Notebook 01 builds an MLP by hand and notebook 03 builds a CNN by hand; later notebooks (regularisation, mixed
precision, memory, profiling, ...) take these ready-made versions. Shapes in comments: B batch, C channels.
"""

from __future__ import annotations

from typing import Sequence

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
