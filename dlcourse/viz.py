"""Plots the notebooks share: training curves from a ``History`` and an image grid with labels and predictions.

Introduced in notebook 01. Every function returns a matplotlib ``Figure`` and never calls ``plt.show()``: a notebook
shows the figure by leaving it as the cell's value; a script saves it with ``fig.savefig``.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .train import History


def _detached(fig: Figure) -> Figure:
    """Close ``fig`` in pyplot so Jupyter shows it once (as the returned value), not twice."""
    plt.close(fig)
    return fig


def plot_history(history: History, title: str | None = None) -> Figure:
    """Loss (left) and accuracy (right, when recorded) per epoch, train and validation."""
    epochs = history["epoch"]
    # Soft-label training (mixup, CutMix) records no train accuracy, but validation still has one.
    has_acc = any(v is not None for v in history["train_acc"] + history["val_acc"])
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 5, 3.5), squeeze=False)
    panels = [("loss", axes[0, 0])] + ([("acc", axes[0, 1])] if has_acc else [])
    for metric, ax in panels:
        for split, style in (("train", "-o"), ("val", "-s")):
            values = history[f"{split}_{metric}"]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _detached(fig)


def image_grid(images: torch.Tensor, labels: Sequence[int] | torch.Tensor | None = None,
               preds: Sequence[int] | torch.Tensor | None = None, classes: Sequence[str] | None = None,
               ncols: int = 8, size: float = 1.4) -> Figure:
    """Show images (N, C, H, W) or (N, H, W) in a grid, titled with label and prediction.

    A title reads ``label`` alone, or ``pred (label)`` when predictions are given; wrong predictions are red.
    """
    images = images.detach().float().cpu()  # any device, any float dtype (numpy has no bfloat16)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W) or (N, H, W), got {tuple(images.shape)}")
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.25)), squeeze=False)
    name = (lambda k: classes[int(k)]) if classes is not None else (lambda k: str(int(k)))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray")
        else:
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        if labels is not None and preds is not None:
            right = int(preds[i]) == int(labels[i])
            ax.set_title(f"{name(preds[i])} ({name(labels[i])})", fontsize=8, color="black" if right else "red")
        elif labels is not None:
            ax.set_title(name(labels[i]), fontsize=8)
    fig.tight_layout()
    return _detached(fig)
