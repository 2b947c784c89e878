"""Offline datasets and loaders: scikit-learn's digits and a procedurally generated "shapes" image set.

Introduced in notebook 01 (digits) and used by every notebook that trains an image model. Nothing here touches the
network: digits ship inside the scikit-learn wheel, shapes are drawn from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

SHAPE_CLASSES = ("circle", "ring", "square", "triangle", "cross", "star")
DIGIT_CLASSES = tuple(str(d) for d in range(10))


@dataclass
class Splits:
    """Train, validation and test datasets plus the class names they share."""

    train: Dataset
    val: Dataset
    test: Dataset
    classes: tuple[str, ...]

    def loaders(self, batch_size: int = 64, *, seed: int = 0, num_workers: int = 0) -> tuple[DataLoader, ...]:
        """(train, val, test) loaders; only train is shuffled, by a generator seeded with ``seed``."""
        return make_loaders(self.train, self.val, self.test, batch_size=batch_size, seed=seed,
                            num_workers=num_workers)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(getattr(self, name))}" for name in ("train", "val", "test"))
        return f"Splits({sizes}, classes={len(self.classes)})"


def make_loaders(train: Dataset, *others: Dataset, batch_size: int = 64, seed: int = 0,
                 num_workers: int = 0) -> tuple[DataLoader, ...]:
    """One loader per dataset: the first shuffled (seeded, so runs repeat), the others in order."""
    generator = torch.Generator().manual_seed(seed)
    first = DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator, num_workers=num_workers)
    rest = [DataLoader(d, batch_size=batch_size, shuffle=False, num_workers=num_workers) for d in others]
    return (first, *rest)


def _split(X: torch.Tensor, y: torch.Tensor, fractions: tuple[float, float], seed: int) -> list[TensorDataset]:
    """Shuffle with ``seed`` and cut into train/val/test by the (val, test) fractions."""
    n = len(X)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val, n_test = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    n_train = n - n_val - n_test
    if n_train <= 0:
        raise ValueError(f"fractions {fractions} leave no training data out of {n} examples")
    parts = perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]
    return [TensorDataset(X[idx], y[idx]) for idx in parts]


def digits(*, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15,
           flatten: bool = False) -> Splits:
    """scikit-learn's 1797 handwritten digits (8×8, ten classes) as float tensors in [0, 1].

    X: (N, 1, 8, 8), or (N, 64) with ``flatten=True``; y: (N,) int64. The split is fixed by ``seed``.
    """
    from sklearn.datasets import load_digits  # ships inside the scikit-learn wheel: no download

    bunch = load_digits()
    X = torch.tensor(bunch.images, dtype=torch.float32) / 16.0  # (1797, 8, 8), pixel values were 0..16
    X = X.reshape(len(X), -1) if flatten else X.unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    train, val, test = _split(X, y, (val_fraction, test_fraction), seed)
    return Splits(train, val, test, DIGIT_CLASSES)


def _shape_masks(label: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean masks (N, H, W) for each example's shape, given coordinates (u, v) in its own unit frame."""
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    masks = np.zeros(u.shape, dtype=bool)
    tests = {
        "circle": lambda i: r[i] <= 1.0,
        "ring": lambda i: (r[i] <= 1.0) & (r[i] >= 0.55),
        "square": lambda i: np.maximum(np.abs(u[i]), np.abs(v[i])) <= 0.78,
        # an equilateral triangle: inside all three half-planes whose normals point away from the vertices
        "triangle": lambda i: np.all(
            [u[i] * np.cos(a) + v[i] * np.sin(a) <= 0.5 for a in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)], axis=0),
        "cross": lambda i: ((np.abs(u[i]) <= 0.3) & (np.abs(v[i]) <= 0.95))
        | ((np.abs(v[i]) <= 0.3) & (np.abs(u[i]) <= 0.95)),
        "star": lambda i: r[i] <= 0.5 + 0.5 * np.cos(5 * theta[i]) ** 2,
    }
    for k, name in enumerate(SHAPE_CLASSES):
        idx = np.flatnonzero(label == k)
        if len(idx):
            masks[idx] = tests[name](idx)
    return masks


def make_shapes(n: int, *, seed: int | tuple[int, ...] = 0, image_size: int = 32, noise: float = 0.06) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` labelled shape images, deterministically from ``seed``.

    Each image has one shape of a random class, colour, centre, size and rotation on a dark, noisy background.
    Returns X: (n, 3, image_size, image_size) float32 in [0, 1] and y: (n,) int64 indices into SHAPE_CLASSES.
    """
    rng = np.random.default_rng(seed)
    s = image_size
    label = rng.integers(0, len(SHAPE_CLASSES), size=n)
    radius = rng.uniform(0.2, 0.42, size=n) * s                       # (n,) in pixels
    cx = rng.uniform(radius, s - radius)                              # keep the shape inside the frame
    cy = rng.uniform(radius, s - radius)
    angle = rng.uniform(0, 2 * np.pi, size=n)
    # Bright foreground, dark background: every image has a clearly visible shape.
    fg = rng.uniform(0.55, 1.0, size=(n, 3)) * rng.choice([0.5, 1.0], size=(n, 3))
    fg[np.arange(n), rng.integers(0, 3, size=n)] = rng.uniform(0.85, 1.0, size=n)  # at least one strong channel
    bg = rng.uniform(0.0, 0.3, size=(n, 3))

    f32 = np.float32
    grid = np.arange(s, dtype=f32) + f32(0.5)
    inv_r = (1.0 / radius).astype(f32)[:, None, None]
    dx = (grid[None, None, :] - cx.astype(f32)[:, None, None]) * inv_r  # (n, 1, s)
    dy = (grid[None, :, None] - cy.astype(f32)[:, None, None]) * inv_r  # (n, s, 1)
    cos, sin = np.cos(angle).astype(f32)[:, None, None], np.sin(angle).astype(f32)[:, None, None]
    u = cos * dx + sin * dy                                           # (n, s, s) rotated coordinates
    v = cos * dy - sin * dx
    mask = _shape_masks(label, u, v)[:, None]                         # (n, 1, s, s)

    img = np.where(mask, fg.astype(f32)[:, :, None, None], bg.astype(f32)[:, :, None, None])  # (n, 3, s, s)
    img += rng.standard_normal(size=img.shape, dtype=f32) * f32(noise)
    np.clip(img, 0.0, 1.0, out=img)
    return torch.from_numpy(img), torch.from_numpy(label.astype(np.int64))


def shapes(n_train: int = 4000, n_val: int = 1000, n_test: int = 1000, *, seed: int = 0,
           image_size: int = 32) -> Splits:
    """Train/val/test splits of :func:`make_shapes`; split k is drawn from the seed (seed, k)."""
    parts = []
    for offset, n in enumerate((n_train, n_val, n_test)):
        X, y = make_shapes(n, seed=(seed, offset), image_size=image_size)
        parts.append(TensorDataset(X, y))
    return Splits(*parts, SHAPE_CLASSES)
