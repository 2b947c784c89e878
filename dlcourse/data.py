"""Datasets and loaders: offline ones (scikit-learn's digits, procedurally drawn "shapes") and, at full scale
only, real ones downloaded with checksums (Fashion-MNIST, CIFAR-10).

Digits are introduced in notebook 01 and shapes in notebook 00; every notebook that trains an image model uses
them. Fashion-MNIST replaces them at full scale in notebooks 03 and 05, always through
:func:`real_or_offline`, which takes the notebook's ``cfg``: smoke and small scale never touch the network or
the cache. The download itself (mirrors, SHA-256, cache directory ``$DLCOURSE_DATA_DIR``) is
:mod:`dlcourse.download`. Also here: the DataLoader helpers (:func:`make_loaders`, :func:`worker_context`,
:class:`Augmented`), which never fork a process that may have used CUDA.
"""

from __future__ import annotations

import gzip
import multiprocessing.context
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .config import OFFLINE_ENV, Config, safe_mp_context
from .download import RemoteFile, cache_path, data_dir, fetch, is_cached

SHAPE_CLASSES = ("circle", "ring", "square", "triangle", "cross", "star")
DIGIT_CLASSES = tuple(str(d) for d in range(10))


@dataclass
class Splits:
    """Train, validation and test datasets plus the class names they share."""

    train: Dataset
    val: Dataset
    test: Dataset
    classes: tuple[str, ...]
    name: str = ""

    def loaders(self, batch_size: int = 64, *, seed: int = 0, num_workers: int = 0) -> tuple[DataLoader, ...]:
        """(train, val, test) loaders; only train is shuffled, by a generator seeded with ``seed``."""
        return make_loaders(self.train, self.val, self.test, batch_size=batch_size, seed=seed,
                            num_workers=num_workers)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(getattr(self, name))}" for name in ("train", "val", "test"))
        return f"Splits({self.name + ': ' if self.name else ''}{sizes}, classes={len(self.classes)})"


def make_loaders(train: Dataset, *others: Dataset, batch_size: int = 64, seed: int = 0,
                 num_workers: int = 0) -> tuple[DataLoader, ...]:
    """One loader per dataset: the first shuffled (seeded, so runs repeat), the others in order. Workers, if any,
    start by :func:`worker_context` (never ``fork``: safe after CUDA has been used)."""
    generator = torch.Generator().manual_seed(seed)
    context = worker_context() if num_workers > 0 else None
    first = DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator, num_workers=num_workers,
                       multiprocessing_context=context)
    rest = [DataLoader(d, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                       multiprocessing_context=context) for d in others]
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
    return Splits(train, val, test, DIGIT_CLASSES, "digits")


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
    return Splits(*parts, SHAPE_CLASSES, "shapes")


def worker_context() -> multiprocessing.context.BaseContext:
    """The start method for DataLoader workers (notebook 05): :func:`dlcourse.config.safe_mp_context`, safe after
    CUDA has been used, with its fork server preloading torch, torchvision and this module. Workers forked from
    that server start in milliseconds instead of importing torch again (seconds) at the start of every epoch."""
    return safe_mp_context(preload=["torch", "torchvision.transforms.v2", __name__])


class Augmented(Dataset):
    """Wraps a dataset of (X, y) pairs and applies ``transform`` to X each time an item is read (notebook 05).

    It lives in a module, not in the notebook, because DataLoader workers started safely (``forkserver`` or
    ``spawn``, see :func:`dlcourse.config.safe_mp_context`) receive the dataset pickled, and unpickling an
    object imports its class by name: a class defined in a notebook cannot be found there.
    """

    def __init__(self, base: Dataset, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        X, y = self.base[i]                 # X: (C, H, W) float in [0, 1]
        return self.transform(X), y


# --- real datasets, downloaded at full scale only --------------------------------------------------------

class DatasetNotCached(FileNotFoundError):
    """A real dataset's files are not in the cache and downloading was not allowed."""


FASHION_CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot")
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/")
#: The four files of Fashion-MNIST (checksums and sizes as in tensorflow-datasets' url_checksums).
FASHION_MNIST_FILES = {
    key: RemoteFile(name, sha256, size, tuple(base + name for base in _FASHION_MIRRORS))
    for key, name, size, sha256 in [
        ("train_images", "train-images-idx3-ubyte.gz", 26421880,
         "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        ("train_labels", "train-labels-idx1-ubyte.gz", 29515,
         "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        ("test_images", "t10k-images-idx3-ubyte.gz", 4422102,
         "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        ("test_labels", "t10k-labels-idx1-ubyte.gz", 5148,
         "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    ]
}

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: CIFAR-10's binary version: one tar.gz with data_batch_1..5.bin and test_batch.bin (170 MB).
CIFAR10_FILE = RemoteFile("cifar-10-binary.tar.gz",
                          "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd", 170052171,
                          ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",))

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (MNIST's and Fashion-MNIST's format; gzip-compressed if its name ends in .gz) as an array.

    Layout: two zero bytes, a type code, the number of dimensions n, n big-endian uint32 sizes, then the
    data."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        raw = bytearray(f.read())                    # writable, so torch.from_numpy can share it
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    if len(raw) - 4 - 4 * ndim != int(np.prod(dims)) * dtype.itemsize:
        raise ValueError(f"{path}: the header promises shape {dims}, the data do not fit it (truncated?)")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)


def read_cifar10(path: str | Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10's binary tar.gz as ((X_train, y_train), (X_test, y_test)): X uint8 (N, 3, 32, 32), y uint8
    (N,). Each record is one label byte and 3072 pixel bytes (1024 red, then green, then blue, row by row)."""
    batches: dict[str, np.ndarray] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            name = Path(member.name).name
            if member.isfile() and re.fullmatch(r"data_batch_[1-5]\.bin|test_batch\.bin", name):
                raw = bytearray(tar.extractfile(member).read())
                if len(raw) % 3073:
                    raise ValueError(f"{path}: {name} is not a whole number of 3073-byte records")
                batches[name] = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
    expected = [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]
    missing = [name for name in expected if name not in batches]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not CIFAR-10's binary version")
    train = np.concatenate([batches[name] for name in expected[:5]])
    test = batches["test_batch.bin"]
    return tuple((r[:, 1:].reshape(-1, 3, 32, 32), r[:, 0]) for r in (train, test))


def _local_files(name: str, files: list[RemoteFile], download: bool) -> list[Path]:
    """Paths of a dataset's files in the cache, fetched first when ``download``; else DatasetNotCached."""
    if download:
        return [fetch(f, name) for f in files]
    missing = [f for f in files if not is_cached(f, name)]
    if missing:
        raise DatasetNotCached(
            f"{name}: {', '.join(f.name for f in missing)} not in the cache {data_dir() / name} (or "
            f"corrupt). Fill it with `dlcourse data fetch {name}` (on a machine with network; then copy the "
            f"folder, or set $DLCOURSE_DATA_DIR), or pass download=True.")
    return [cache_path(f, name) for f in files]


def _real_splits(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, seed: int,
                 n_val: int, n_train: int | None, n_test: int | None, classes: tuple[str, ...],
                 name: str) -> Splits:
    """uint8 images (N, C, H, W) to float32 in [0, 1]: val is a seeded draw of n_val training images, train
    the rest (capped at n_train), test the official test set (a seeded draw of n_test when given)."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(X_train), generator=gen)
    if not 0 <= n_val < len(X_train):
        raise ValueError(f"n_val={n_val} must leave training data out of {len(X_train)} images")
    val_idx, train_idx = perm[:n_val], perm[n_val:][:n_train]
    test_idx = (torch.arange(len(X_test)) if n_test is None
                else torch.randperm(len(X_test), generator=gen)[:n_test])

    def part(X: np.ndarray, y: np.ndarray, idx: torch.Tensor) -> TensorDataset:
        images = torch.from_numpy(X)[idx]                                     # (n, C, H, W) uint8
        return TensorDataset(images.float().div_(255), torch.from_numpy(y.astype(np.int64))[idx])

    return Splits(part(X_train, y_train, train_idx), part(X_train, y_train, val_idx),
                  part(X_test, y_test, test_idx), classes, name)


def fashion_mnist(*, seed: int = 0, n_val: int = 10_000, n_train: int | None = None,
                  n_test: int | None = None, download: bool = False) -> Splits:
    """Zalando's Fashion-MNIST: grey 28×28 photos of clothing in ten classes, 60,000 for training and 10,000
    for testing. X: (N, 1, 28, 28) float32 in [0, 1]; y: (N,) int64 indices into FASHION_CLASSES.

    val is ``n_val`` images drawn (by ``seed``) from the official training set, train the rest (the first
    ``n_train`` of them, in that draw's order, when given), test the official test set (``n_test`` drawn when
    given). Reads the cache (``dlcourse data path``); ``download=True`` fetches missing files first. Notebooks
    call it through :func:`real_or_offline`, which downloads at full scale only.
    """
    paths = _local_files("fashion-mnist", list(FASHION_MNIST_FILES.values()), download)
    X_train, y_train, X_test, y_test = (read_idx(p) for p in paths)
    return _real_splits(X_train[:, None], y_train, X_test[:, None], y_test, seed, n_val, n_train, n_test,
                        FASHION_CLASSES, "Fashion-MNIST")


def cifar10(*, seed: int = 0, n_val: int = 5_000, n_train: int | None = None, n_test: int | None = None,
            download: bool = False) -> Splits:
    """CIFAR-10: colour 32×32 photos in ten classes, 50,000 for training and 10,000 for testing (170 MB).
    X: (N, 3, 32, 32) float32 in [0, 1]; y: (N,) int64 indices into CIFAR10_CLASSES. Splits and caching as in
    :func:`fashion_mnist`."""
    (path,) = _local_files("cifar10", [CIFAR10_FILE], download)
    (X_train, y_train), (X_test, y_test) = read_cifar10(path)
    return _real_splits(X_train, y_train, X_test, y_test, seed, n_val, n_train, n_test, CIFAR10_CLASSES,
                        "CIFAR-10")


#: Real datasets by the name ``dlcourse data fetch`` and :func:`real_or_offline` use: (loader, files).
REAL_DATASETS: dict[str, tuple[Callable[..., Splits], list[RemoteFile]]] = {
    "fashion-mnist": (fashion_mnist, list(FASHION_MNIST_FILES.values())),
    "cifar10": (cifar10, [CIFAR10_FILE]),
}


def real_or_offline(cfg: Config, name: str, offline: Callable[[], Splits], **options) -> Splits:
    """The dataset a notebook trains on: the real dataset ``name`` (a key of REAL_DATASETS) at full scale,
    else ``offline()``. The only way notebooks reach a download: smoke and small scale never touch the network
    or the cache, so their results are the same on every machine.

    At full scale the real dataset comes from the cache, downloaded into it first if needed (a machine with no
    network runs full scale from a filled cache). ``cfg.offline`` (``$DLCOURSE_OFFLINE=1``) keeps full scale on
    ``offline()``. ``options`` (e.g. ``n_train``) go to the real dataset's function with ``cfg.seed``.
    """
    loader, _ = REAL_DATASETS[name]
    if cfg.scale != "full":
        return offline()
    if cfg.offline:
        splits = offline()
        print(f"{OFFLINE_ENV} is set: full scale uses the offline {splits.name or 'dataset'} instead of {name}")
        return splits
    splits = loader(seed=cfg.seed, download=True, **options)
    print(f"full scale: {splits} from {data_dir() / name}")
    return splits
