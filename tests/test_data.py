"""Tests for dlcourse.data: digits splits, the procedural shapes set, loaders, shapes' learnability, and the real
datasets of full scale (Fashion-MNIST, CIFAR-10) on tiny files written here in their real formats."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlcourse import data, download
from dlcourse.config import Config
from dlcourse.data import DIGIT_CLASSES, SHAPE_CLASSES, Splits
from dlcourse.download import RemoteFile

N_DIGITS = 1797


@pytest.fixture(scope="module")
def digit_splits() -> Splits:
    return data.digits(seed=0)


def _tensors(split) -> tuple[torch.Tensor, torch.Tensor]:
    return split.tensors  # TensorDataset: (X, y)


def _rows(X: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in X.reshape(len(X), -1)}


# --- digits -------------------------------------------------------------------------------------------------

def test_digits_split_sizes_add_up(digit_splits):
    sizes = [len(digit_splits.train), len(digit_splits.val), len(digit_splits.test)]
    assert sum(sizes) == N_DIGITS
    assert sizes == [N_DIGITS - 2 * 270, 270, 270]  # round(0.15 * 1797) = 270


def test_digits_custom_fractions():
    s = data.digits(seed=0, val_fraction=0.2, test_fraction=0.1)
    assert (len(s.train), len(s.val), len(s.test)) == (1797 - 359 - 180, 359, 180)


def test_digits_fractions_leaving_no_training_data_raise():
    with pytest.raises(ValueError, match="no training data"):
        data.digits(val_fraction=0.6, test_fraction=0.4)


def test_digits_splits_are_disjoint_and_cover_the_dataset(digit_splits):
    parts = [_rows(_tensors(split)[0]) for split in (digit_splits.train, digit_splits.val, digit_splits.test)]
    assert [len(p) for p in parts] == [len(digit_splits.train), len(digit_splits.val), len(digit_splits.test)]
    assert not parts[0] & parts[1]
    assert not parts[0] & parts[2]
    assert not parts[1] & parts[2]
    assert len(parts[0] | parts[1] | parts[2]) == N_DIGITS  # the 1797 images are all different


def test_digits_same_seed_identical_splits(digit_splits):
    again = data.digits(seed=0)
    ours = (digit_splits.train, digit_splits.val, digit_splits.test)
    for a, b in zip(ours, (again.train, again.val, again.test)):
        assert torch.equal(a.tensors[0], b.tensors[0])
        assert torch.equal(a.tensors[1], b.tensors[1])


def test_digits_different_seed_different_splits(digit_splits):
    other = data.digits(seed=1)
    assert _rows(other.test.tensors[0]) != _rows(digit_splits.test.tensors[0])
    assert not torch.equal(other.train.tensors[1], digit_splits.train.tensors[1])


def test_digits_values_shapes_and_dtypes(digit_splits):
    for split in (digit_splits.train, digit_splits.val, digit_splits.test):
        X, y = _tensors(split)
        assert X.shape == (len(split), 1, 8, 8)
        assert X.dtype == torch.float32
        assert y.shape == (len(split),)
        assert y.dtype == torch.int64
        assert X.min() >= 0.0 and X.max() <= 1.0
        assert set(y.tolist()) == set(range(10))
    X = torch.cat([digit_splits.train.tensors[0], digit_splits.val.tensors[0], digit_splits.test.tensors[0]])
    assert X.min() == 0.0 and X.max() == 1.0  # scaled by 16, the raw maximum
    assert digit_splits.classes == DIGIT_CLASSES == tuple("0123456789")


def test_digits_flatten_gives_same_data_as_rows(digit_splits):
    flat = data.digits(seed=0, flatten=True)
    X, y = flat.train.tensors
    assert X.shape == (len(flat.train), 64)
    assert X.dtype == torch.float32
    assert torch.equal(X, digit_splits.train.tensors[0].reshape(-1, 64))
    assert torch.equal(y, digit_splits.train.tensors[1])


def test_splits_repr(digit_splits):
    assert repr(digit_splits) == "Splits(digits: train=1257, val=270, test=270, classes=10)"
    assert repr(_index_splits()) == "Splits(train=100, val=37, test=23, classes=2)"


# --- shapes -------------------------------------------------------------------------------------------------

def test_shape_classes():
    assert len(SHAPE_CLASSES) >= 6
    assert len(set(SHAPE_CLASSES)) == len(SHAPE_CLASSES)


def test_make_shapes_10000_shapes_dtype_range_and_balance():
    """Vectorised, so 10000 images take seconds at most; speed is for benchmarks, never asserted here."""
    X, y = data.make_shapes(10000, seed=0)
    assert X.shape == (10000, 3, 32, 32)
    assert X.dtype == torch.float32
    assert y.shape == (10000,)
    assert y.dtype == torch.int64
    assert X.min() >= 0.0 and X.max() <= 1.0
    assert y.min() >= 0 and y.max() < len(SHAPE_CLASSES)
    counts = torch.bincount(y, minlength=len(SHAPE_CLASSES))
    expected = len(y) / len(SHAPE_CLASSES)
    assert len(counts) == len(SHAPE_CLASSES)
    assert counts.min() >= 0.9 * expected, counts  # multinomial spread is about 0.02 * expected
    assert counts.max() <= 1.1 * expected, counts


def _deviation_from_median(X: torch.Tensor) -> torch.Tensor:
    """(n, H*W): per pixel, sum over channels of |pixel - that image's per-channel median|."""
    median = X.flatten(2).median(dim=2).values  # (n, 3)
    return (X - median[:, :, None, None]).abs().sum(dim=1).flatten(1)


def test_every_image_has_a_visible_shape():
    X, y = data.make_shapes(3000, seed=1)
    dev = _deviation_from_median(X)
    # Foreground and background differ by at least 0.55 in one channel; the noise alone (sigma 0.06) stays
    # near 0.5 at its most extreme pixel (checked on the control below).
    assert dev.max(dim=1).values.min() > 0.7
    strong = (dev > 0.5).sum(dim=1)  # (n,) pixels that clearly stand out
    for k, name in enumerate(SHAPE_CLASSES):
        assert strong[y == k].min() >= 30, f"some {name} images have almost no visible shape"
    # The check can fail: a background with the same noise and no shape has (almost) no such pixels.
    g = torch.Generator().manual_seed(0)
    blank = (torch.rand(500, 3, 1, 1, generator=g) * 0.3 + 0.06 * torch.randn(500, 3, 32, 32, generator=g))
    blank_strong = (_deviation_from_median(blank.clamp(0, 1)) > 0.5).sum(dim=1)
    assert blank_strong.max() < 5


def test_make_shapes_deterministic_by_seed():
    X1, y1 = data.make_shapes(64, seed=3)
    X2, y2 = data.make_shapes(64, seed=3)
    X3, y3 = data.make_shapes(64, seed=4)
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    assert not torch.equal(X1, X3)
    assert not torch.equal(y1, y3)


def test_make_shapes_image_size():
    X, y = data.make_shapes(5, seed=0, image_size=16)
    assert X.shape == (5, 3, 16, 16)
    assert y.shape == (5,)


def test_shapes_splits_sizes_classes_and_determinism():
    s = data.shapes(50, 20, 30, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (50, 20, 30)
    assert s.classes == SHAPE_CLASSES
    for split in (s.train, s.val, s.test):
        X, y = split.tensors
        assert X.shape[1:] == (3, 32, 32) and X.dtype == torch.float32 and y.dtype == torch.int64
    again = data.shapes(50, 20, 30, seed=0)
    other = data.shapes(50, 20, 30, seed=1)
    assert torch.equal(s.train.tensors[0], again.train.tensors[0])
    assert torch.equal(s.test.tensors[1], again.test.tensors[1])
    assert not torch.equal(s.train.tensors[0], other.train.tensors[0])


def test_shapes_train_val_test_drawn_differently():
    s = data.shapes(40, 40, 40, seed=0)
    Xs = [split.tensors[0] for split in (s.train, s.val, s.test)]
    rows = [_rows(X) for X in Xs]
    assert not rows[0] & rows[1]
    assert not rows[0] & rows[2]
    assert not rows[1] & rows[2]
    # ...and the split is the same draw as make_shapes with seed (seed, k), so sizes don't change other splits
    assert torch.equal(s.val.tensors[0], data.make_shapes(40, seed=(0, 1))[0])
    assert torch.equal(data.shapes(10, 40, 5, seed=0).val.tensors[0], Xs[1])


# --- loaders ------------------------------------------------------------------------------------------------

def _index_splits(n_train: int = 100, n_val: int = 37, n_test: int = 23) -> Splits:
    """Splits whose labels are the example's index, so a loader's order can be read off its labels."""
    def part(n: int, start: int) -> TensorDataset:
        idx = torch.arange(start, start + n)
        return TensorDataset(idx.float()[:, None], idx)
    return Splits(part(n_train, 0), part(n_val, 1000), part(n_test, 2000), ("a", "b"))


def _order(loader) -> list[int]:
    return [int(i) for _, y in loader for i in y]


def test_loaders_batch_sizes():
    train, val, test = _index_splits().loaders(batch_size=16, seed=0)
    assert [len(y) for _, y in train] == [16] * 6 + [4]
    assert [len(y) for _, y in val] == [16, 16, 5]
    assert [len(y) for _, y in test] == [16, 7]
    assert train.batch_size == val.batch_size == test.batch_size == 16


def test_loaders_val_and_test_in_order():
    _, val, test = _index_splits().loaders(batch_size=16, seed=0)
    assert _order(val) == list(range(1000, 1037))
    assert _order(test) == list(range(2000, 2023))
    assert _order(val) == list(range(1000, 1037))  # and the same on every pass


def test_train_loader_shuffled_reproducibly():
    splits = _index_splits()
    first = splits.loaders(batch_size=16, seed=0)[0]
    epoch1, epoch2 = _order(first), _order(first)
    assert sorted(epoch1) == sorted(epoch2) == list(range(100))  # a permutation each epoch
    assert epoch1 != list(range(100))  # shuffled
    assert epoch1 != epoch2  # a new order every epoch
    again = splits.loaders(batch_size=16, seed=0)[0]
    assert _order(again) == epoch1 and _order(again) == epoch2  # a new loader with the same seed repeats both
    other = splits.loaders(batch_size=16, seed=1)[0]
    assert _order(other) != epoch1


def test_digit_loaders_batches(digit_splits):
    train, val, test = digit_splits.loaders(batch_size=100, seed=0)
    X, y = next(iter(train))
    assert X.shape == (100, 1, 8, 8) and y.shape == (100,)
    assert len(train) == 13 and len(val) == 3 and len(test) == 3  # 1257, 270, 270 examples
    assert sum(len(y) for _, y in train) == 1257
    X_val = torch.cat([X for X, _ in val])
    assert torch.equal(X_val, digit_splits.val.tensors[0])


# --- learnability -------------------------------------------------------------------------------------------

def test_shapes_are_learnable_by_a_tiny_cnn(one_thread):
    """A 1.9k-parameter CNN, a few epochs on 600 images: validation accuracy well above chance (1/6)."""
    torch.manual_seed(0)
    s = data.shapes(600, 300, 0, seed=0)
    X_val, y_val = s.val.tensors
    model = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(),      # (N, 8, 16, 16)
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),     # (N, 16, 8, 8)
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, len(SHAPE_CLASSES)),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_loader = s.loaders(batch_size=32, seed=0)[0]
    for _ in range(5):
        for X, y in train_loader:
            loss = F.cross_entropy(model(X), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        acc = (model(X_val).argmax(dim=1) == y_val).float().mean().item()
    chance = 1 / len(SHAPE_CLASSES)
    assert acc > 2 * chance, f"validation accuracy {acc:.3f} vs chance {chance:.3f}"


# --- workers and Augmented ----------------------------------------------------------------------------------

def _flip(X: torch.Tensor) -> torch.Tensor:
    return X.flip(-1)


def test_augmented_applies_the_transform_on_every_read():
    base = TensorDataset(torch.arange(12.0).reshape(3, 1, 2, 2), torch.tensor([0, 1, 2]))
    aug = data.Augmented(base, _flip)
    assert len(aug) == 3
    X, y = aug[1]
    assert torch.equal(X, base[1][0].flip(-1)) and int(y) == 1
    again = pickle.loads(pickle.dumps(aug))               # what a worker receives: importable, so picklable
    assert torch.equal(again[2][0], aug[2][0])


def test_loader_workers_use_a_start_method_that_is_safe_after_cuda():
    """Workers from the fork server (never fork) import the dataset class from dlcourse.data: seconds at most."""
    base = TensorDataset(torch.rand(40, 1, 4, 4), torch.arange(40))
    train, val = data.make_loaders(data.Augmented(base, _flip), base, batch_size=16, num_workers=1)
    assert train.multiprocessing_context.get_start_method() in ("forkserver", "spawn")
    labels = sorted(int(i) for _, y in train for i in y)
    assert labels == list(range(40))
    assert torch.equal(torch.cat([X for X, _ in val]), base.tensors[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_loader_workers_after_cuda_and_backward_with_pinned_memory():
    """Notebook 05's situation on a GPU: this process has used CUDA and run backward; workers must not be forked
    from it (a forked worker hung there). pin_memory copies to the GPU asynchronously."""
    w = torch.ones(3, device="cuda", requires_grad=True)
    (w * 2).sum().backward()                                    # CUDA initialised, autograd threads started
    base = TensorDataset(torch.rand(64, 1, 4, 4), torch.arange(64))
    train = DataLoader(data.Augmented(base, _flip), batch_size=16, shuffle=True, num_workers=2, pin_memory=True,
                       multiprocessing_context=data.worker_context())
    seen = []
    for X, y in train:
        seen += y.to("cuda", non_blocking=True).tolist()
    assert sorted(seen) == list(range(64))


# --- real datasets: formats --------------------------------------------------------------------------------

def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def test_read_idx_gzip_and_plain(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "images.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    (tmp_path / "labels").write_bytes(_idx_bytes(np.array([7, 1], dtype=np.uint8)))
    (tmp_path / "ints").write_bytes(_idx_bytes(np.array([[1, -2]], dtype=">i4"), code=0x0C))
    assert np.array_equal(data.read_idx(tmp_path / "images.gz"), images)
    assert data.read_idx(tmp_path / "labels").tolist() == [7, 1]
    assert data.read_idx(tmp_path / "ints").tolist() == [[1, -2]]


def test_read_idx_rejects_other_files_and_truncated_ones(tmp_path):
    (tmp_path / "html.gz").write_bytes(gzip.compress(b"<html>404 Not Found</html>"))
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "html.gz")
    whole = _idx_bytes(np.zeros((4, 5, 5), dtype=np.uint8))
    (tmp_path / "cut").write_bytes(whole[:-7])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "cut")


def _cifar_records(labels: list[int], start: int) -> bytes:
    """CIFAR-10 binary records whose red plane is filled with ``start + i``, green with 100, blue with 200."""
    rows = []
    for i, label in enumerate(labels):
        planes = np.concatenate([np.full(1024, start + i), np.full(1024, 100), np.full(1024, 200)])
        rows.append(np.concatenate([[label], planes]).astype(np.uint8))
    return np.stack(rows).tobytes()


def _cifar_tar(path: Path, skip: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        members = {f"data_batch_{k}.bin": _cifar_records([k, k + 1], 10 * k) for k in range(1, 6)}
        members["test_batch.bin"] = _cifar_records([9, 8, 7], 90)
        members["batches.meta.txt"] = "\n".join(data.CIFAR10_CLASSES).encode()
        for name, payload in members.items():
            if name != skip:
                info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


def test_read_cifar10_binary(tmp_path):
    (X_train, y_train), (X_test, y_test) = data.read_cifar10(_cifar_tar(tmp_path / "c.tar.gz"))
    assert X_train.shape == (10, 3, 32, 32) and X_test.shape == (3, 3, 32, 32)
    assert y_train.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6] and y_test.tolist() == [9, 8, 7]
    assert X_train[:, 0, 0, 0].tolist() == [10, 11, 20, 21, 30, 31, 40, 41, 50, 51]     # batches in order
    assert (X_test[:, 1] == 100).all() and (X_test[:, 2] == 200).all()                 # channel planes


def test_read_cifar10_missing_batch(tmp_path):
    with pytest.raises(ValueError, match="data_batch_3.bin"):
        data.read_cifar10(_cifar_tar(tmp_path / "c.tar.gz", skip="data_batch_3.bin"))


# --- real datasets: cache, splits, and never at smoke or small --------------------------------------------------

def _remote(name: str, payload: bytes, folder: Path) -> RemoteFile:
    (folder / name).write_bytes(payload)
    return RemoteFile(name, hashlib.sha256(payload).hexdigest(), len(payload), (f"http://127.0.0.1:9/{name}",))


@pytest.fixture
def fake_fashion(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST (50 training, 20 test images; pixel = index) in a cache folder of its own, with
    the real file names and checksums of the tiny files."""
    cache = tmp_path / "cache"
    folder = cache / "fashion-mnist"
    folder.mkdir(parents=True)
    monkeypatch.setenv(download.DATA_DIR_ENV, str(cache))
    monkeypatch.delenv("DLCOURSE_OFFLINE", raising=False)
    files = {}
    for split, n in (("train", 50), ("t10k", 20)):
        images = (np.arange(n, dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), dtype=np.uint8))
        labels = (np.arange(n) % 10).astype(np.uint8)
        key = "train" if split == "train" else "test"
        files[f"{key}_images"] = _remote(f"{split}-images-idx3-ubyte.gz", gzip.compress(_idx_bytes(images)),
                                         folder)
        files[f"{key}_labels"] = _remote(f"{split}-labels-idx1-ubyte.gz", gzip.compress(_idx_bytes(labels)),
                                         folder)
    files = {k: files[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}
    monkeypatch.setattr(data, "FASHION_MNIST_FILES", files)
    monkeypatch.setitem(data.REAL_DATASETS, "fashion-mnist", (data.fashion_mnist, list(files.values())))
    return folder


def test_fashion_mnist_from_the_cache(fake_fashion):
    s = data.fashion_mnist(seed=0, n_val=10)
    assert (len(s.train), len(s.val), len(s.test)) == (40, 10, 20) and s.name == "Fashion-MNIST"
    assert s.classes == data.FASHION_CLASSES and len(s.classes) == 10
    X, y = s.train.tensors
    assert X.shape == (40, 1, 28, 28) and X.dtype == torch.float32 and y.dtype == torch.int64
    index = (X[:, 0, 0, 0] * 255).round().long()                   # each tiny image's pixels hold its index
    assert torch.equal(y, index % 10)                               # labels stay with their images
    val_index = (s.val.tensors[0][:, 0, 0, 0] * 255).round().long()
    assert sorted(index.tolist() + val_index.tolist()) == list(range(50))    # disjoint, cover the train file
    assert torch.equal(s.test.tensors[1], torch.arange(20) % 10)    # the official test set, in order
    small = data.fashion_mnist(seed=0, n_val=10, n_train=15, n_test=5)
    assert (len(small.train), len(small.test)) == (15, 5)
    assert torch.equal(small.train.tensors[0], X[:15]) and torch.equal(small.val.tensors[0], s.val.tensors[0])
    assert not torch.equal(data.fashion_mnist(seed=1, n_val=10).val.tensors[1], s.val.tensors[1])


def test_fashion_mnist_missing_file_says_how_to_fill_the_cache(fake_fashion):
    (fake_fashion / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DatasetNotCached, match="dlcourse data fetch fashion-mnist") as info:
        data.fashion_mnist()
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value) and str(fake_fashion) in str(info.value)


def test_cifar10_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "cifar10"
    folder.mkdir(parents=True)
    payload = _cifar_tar(tmp_path / "c.tar.gz").read_bytes()
    monkeypatch.setattr(data, "CIFAR10_FILE", _remote("cifar-10-binary.tar.gz", payload, folder))
    s = data.cifar10(seed=0, n_val=2)
    assert (len(s.train), len(s.val), len(s.test)) == (8, 2, 3) and s.name == "CIFAR-10"
    assert s.train.tensors[0].shape == (8, 3, 32, 32) and s.train.tensors[0].max() <= 1.0
    assert torch.allclose(s.test.tensors[0][:, 2], torch.full((3, 32, 32), 200 / 255))


def _cfg(scale: str, offline: bool = False) -> Config:
    return Config(seed=0, scale=scale, device=torch.device("cpu"), offline=offline)


def _offline() -> Splits:
    return data.shapes(4, 2, 2, seed=0)


@pytest.mark.parametrize("scale", ["smoke", "small"])
def test_smoke_and_small_never_download_nor_read_the_cache(scale, fake_fashion, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("smoke and small scale must not touch the network or the cache")

    for name in ("fetch", "is_cached", "_local_files"):
        monkeypatch.setattr(data, name, forbidden)
    assert data.real_or_offline(_cfg(scale), "fashion-mnist", _offline).name == "shapes"
    with pytest.raises(KeyError):
        data.real_or_offline(_cfg(scale), "no-such-dataset", _offline)          # a typo fails at every scale


def test_full_scale_uses_the_real_dataset(fake_fashion, capsys):
    s = data.real_or_offline(_cfg("full"), "fashion-mnist", _offline, n_val=10, n_train=5)
    assert s.name == "Fashion-MNIST" and len(s.train) == 5
    assert "Fashion-MNIST" in capsys.readouterr().out


def test_full_scale_offline_keeps_the_offline_data(fake_fashion, monkeypatch, capsys):
    for name in ("fetch", "is_cached", "_local_files"):
        monkeypatch.setattr(data, name, lambda *a, **k: pytest.fail("offline: no download, no cache"))
    assert data.real_or_offline(_cfg("full", offline=True), "fashion-mnist", _offline).name == "shapes"
    assert "DLCOURSE_OFFLINE" in capsys.readouterr().out


def test_full_scale_downloads_what_is_missing(fake_fashion, monkeypatch):
    payloads = {p.name: p.read_bytes() for p in fake_fashion.iterdir()}
    (fake_fashion / "train-labels-idx1-ubyte.gz").unlink()
    fetched = []

    def fake_fetch(file: RemoteFile, subdir: str = "", **kwargs) -> Path:
        fetched.append(file.name)
        path = download.cache_path(file, subdir)
        path.write_bytes(payloads[file.name])
        return path

    monkeypatch.setattr(data, "fetch", fake_fetch)
    s = data.real_or_offline(_cfg("full"), "fashion-mnist", _offline, n_val=10)
    assert s.name == "Fashion-MNIST" and "train-labels-idx1-ubyte.gz" in fetched
