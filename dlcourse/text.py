"""Offline text and sequence data: a character corpus cut from the Python standard library's own source files,
a character tokenizer, next-character windows for language modelling, and algorithmic sequence tasks.

Introduced in notebook 06 (transformers); later notebooks (LoRA, profiling, distillation) reuse the same
corpus, tokenizer and tasks. Nothing here touches the network: every Python installation has its standard
library.

Reproducibility: :func:`python_source_corpus` returns the same text on every machine with the same CPython
version and a complete standard library. Between patch releases of one minor version (3.11.x) a few files
change; some Linux distributions split modules (tkinter, distutils, lib2to3) into separate packages, which
changes the selection. :func:`corpus_fingerprint` gives a short hash to compare two machines.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

#: Folders left out of the corpus: third-party packages (they differ between machines), test suites (which
#: include deliberately malformed files), byte-code caches and generated documentation data.
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__",
                           "pydoc_data"})
#: Files written by the interpreter's build for one platform, not part of the portable library source.
EXCLUDED_PREFIXES = ("_sysconfigdata", "config-")

SEQUENCE_TASKS = ("reverse", "sort")


# --- the corpus ---------------------------------------------------------------------------------------------

def stdlib_root() -> Path:
    """The folder that holds the standard library's ``.py`` files (e.g. ``.../lib/python3.11``)."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_source_files(root: str | Path | None = None) -> list[Path]:
    """Every ``.py`` file under ``root`` (default: :func:`stdlib_root`) outside :data:`EXCLUDED_DIRS`, sorted
    by path relative to ``root`` (with ``/`` separators, so the order is the same on every OS)."""
    root = Path(root) if root is not None else stdlib_root()
    if not root.is_dir():
        raise FileNotFoundError(f"no standard library folder at {root}")
    files = []
    for folder, subfolders, names in os.walk(root):
        # prune excluded folders in place, so os.walk never enters them (site-packages can be large)
        subfolders[:] = [d for d in subfolders
                         if d not in EXCLUDED_DIRS and not d.startswith(EXCLUDED_PREFIXES)]
        files += [Path(folder, name) for name in names
                  if name.endswith(".py") and not name.startswith(EXCLUDED_PREFIXES)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _order_key(relative: str, seed: int) -> str:
    # A hash of (seed, path) orders the files: the same on every machine, and a file added or removed
    # elsewhere does not move the others (a shuffled list would).
    return hashlib.sha256(f"{seed}:{relative}".encode()).hexdigest()


def python_source_corpus(max_chars: int | None = 1_000_000, seed: int = 0, *,
                         root: str | Path | None = None) -> str:
    """Python source code from the standard library, as one string of at most ``max_chars`` characters.

    The sorted files of :func:`stdlib_source_files` are put in an order fixed by ``seed`` (so a short corpus
    samples the whole library, not only the files whose names start with "a"), read as UTF-8, and joined with
    a blank line until ``max_chars`` is reached; the last file is cut there. Files that cannot be read or are
    not valid UTF-8 are skipped. Line endings are ``\\n`` on every OS. ``max_chars=None`` takes every file.
    """
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be positive or None, not {max_chars}")
    root = Path(root) if root is not None else stdlib_root()
    files = stdlib_source_files(root)
    files.sort(key=lambda p: _order_key(p.relative_to(root).as_posix(), seed))
    pieces: list[str] = []
    total = 0
    for path in files:
        if max_chars is not None and total >= max_chars:
            break
        try:
            text = path.read_text(encoding="utf-8")  # universal newlines: \r\n becomes \n
        except (OSError, UnicodeDecodeError):
            continue
        if not text:
            continue
        piece = text if text.endswith("\n") else text + "\n"
        pieces.append(piece + "\n")
        total += len(piece) + 1
    if not pieces:
        raise FileNotFoundError(f"no readable .py files under {root}")
    corpus = "".join(pieces)
    return corpus if max_chars is None else corpus[:max_chars]


def corpus_fingerprint(text: str) -> str:
    """The first 12 hex digits of the SHA-256 of ``text``: equal fingerprints mean equal corpora."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


# --- characters to ids and back -----------------------------------------------------------------------------

class CharTokenizer:
    """One id per character seen in a text; id 0 stands for every character outside the vocabulary.

    ``CharTokenizer(text)`` builds the vocabulary from ``text`` (sorted by code point, so it does not depend
    on the order of the text); characters seen fewer than ``min_count`` times are left out and map to the
    unknown id. ``unk=None`` makes :meth:`encode` raise on an unknown character instead.
    """

    UNK_ID = 0

    def __init__(self, text: str | Iterable[str], *, min_count: int = 1, unk: str | None = "\ufffd") -> None:
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, not {min_count}")
        if unk is not None and len(unk) != 1:
            raise ValueError(f"unk must be a single character, not {unk!r}")
        counts = Counter(text)
        chars = sorted(c for c, n in counts.items() if n >= min_count and c != unk)
        self.unk = unk
        # id 0 is the unknown marker even with unk=None (then it is never produced), so ids mean the same
        # whatever the setting
        self.itos: list[str] = [unk if unk is not None else ""] + chars
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.itos) if i != self.UNK_ID}
        # code point -> id lookup for fast encoding: sorted code points and their ids
        self._codes = np.array([ord(c) for c in chars], dtype=np.int64)   # code point of each id from 1 on
        self._ids = np.arange(1, len(chars) + 1, dtype=np.int64)

    @property
    def vocab_size(self) -> int:
        """Number of ids, the unknown one included."""
        return len(self.itos)

    def encode(self, text: str) -> torch.Tensor:
        """``text`` as a (len(text),) int64 tensor of ids."""
        utf32 = text.encode("utf-32-le", errors="surrogatepass")
        codes = np.frombuffer(utf32, dtype=np.uint32)                      # (len(text),) code points
        if len(codes) == 0:
            return torch.zeros(0, dtype=torch.int64)
        # a lookup table indexed by code point, up to the largest code point in the text or the vocabulary
        size = int(max(codes.max(), self._codes.max(initial=0))) + 1
        table = np.full(size, -1, dtype=np.int64)
        table[self._codes] = self._ids
        ids = table[codes]                                                  # (len(text),), -1 where unknown
        unknown = ids < 0
        if unknown.any():
            if self.unk is None:
                bad = sorted({chr(c) for c in codes[unknown]})
                raise ValueError(f"characters outside the vocabulary: {bad[:10]!r}"
                                 + (f" and {len(bad) - 10} more" if len(bad) > 10 else ""))
            ids[unknown] = self.UNK_ID
        return torch.from_numpy(ids)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """The text of a 1-D sequence of ids (id 0 becomes the ``unk`` character)."""
        if isinstance(ids, torch.Tensor):
            if ids.ndim != 1:
                raise ValueError(f"decode takes a 1-D sequence of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids {bad[:10]} are outside the vocabulary of size {self.vocab_size}")
        return "".join(self.itos[i] for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unk={self.unk!r})"


# --- language-modelling windows -----------------------------------------------------------------------------

class NextTokenWindows(Dataset):
    """(x, y) pairs cut from a 1-D tensor of ids, for next-token prediction.

    Window ``i`` starts at ``s = i * stride``: x = ids[s : s + block_size] and
    y = ids[s + 1 : s + block_size + 1], so y[t] is the token that follows x[t]. ``stride`` defaults to
    ``block_size`` (windows that do not overlap).
    """

    def __init__(self, ids: torch.Tensor, block_size: int, stride: int | None = None) -> None:
        if ids.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
        stride = block_size if stride is None else stride
        if block_size < 1 or stride < 1:
            raise ValueError(f"block_size and stride must be positive, got {block_size} and {stride}")
        if len(ids) < block_size + 1:
            raise ValueError(f"{len(ids)} ids are too few for one window of {block_size} (+1 target)")
        self.ids, self.block_size, self.stride = ids, block_size, stride

    def __len__(self) -> int:
        return (len(self.ids) - self.block_size - 1) // self.stride + 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        s = (i % len(self)) * self.stride
        chunk = self.ids[s:s + self.block_size + 1]   # (block_size + 1,)
        return chunk[:-1], chunk[1:]                  # x (block_size,), y (block_size,)


def split_ids(ids: torch.Tensor, val_fraction: float = 0.1, *, chunk_size: int | None = 4096
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) id tensors that share no text.

    ``ids`` is cut into chunks of ``chunk_size``; evenly spaced chunks, ``val_fraction`` of them, make up the
    validation ids and the others, in order, the training ids. Validation text thus comes from all over the
    corpus (one file can be very unlike the rest, e.g. a table of MIME types), yet no training window contains
    it. ``chunk_size=None`` keeps the last ``val_fraction`` of ``ids`` as one piece instead.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, not {val_fraction}")
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
    if chunk_size is None:
        n_val = int(round(val_fraction * len(ids)))
        return ids[:len(ids) - n_val], ids[len(ids) - n_val:]
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive or None, not {chunk_size}")
    chunks = list(ids.split(chunk_size))
    # chunk i goes to validation when floor((i + 1) * f) > floor(i * f): evenly spaced, a fraction f of them
    is_val = [int((i + 1) * val_fraction) > int(i * val_fraction) for i in range(len(chunks))]
    train = [c for c, v in zip(chunks, is_val) if not v]
    val = [c for c, v in zip(chunks, is_val) if v]
    if not train or not val:
        raise ValueError(f"{len(ids)} ids in chunks of {chunk_size} are too few to split with val_fraction "
                         f"{val_fraction}: use smaller chunks or more text")
    return torch.cat(train), torch.cat(val)


def lm_splits(ids: torch.Tensor, block_size: int, *, val_fraction: float = 0.1, chunk_size: int | None = 4096,
              stride: int | None = None) -> tuple[NextTokenWindows, NextTokenWindows]:
    """Train and validation :class:`NextTokenWindows` from one id tensor, split by :func:`split_ids`.

    ``stride`` applies to the training windows (e.g. ``block_size // 2`` for more, overlapping windows);
    validation windows never overlap.
    """
    train_ids, val_ids = split_ids(ids, val_fraction, chunk_size=chunk_size)
    return NextTokenWindows(train_ids, block_size, stride), NextTokenWindows(val_ids, block_size)


def lm_batch(ids: torch.Tensor, block_size: int, batch_size: int, *,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of windows at random positions: x and y, each (batch_size, block_size), y shifted by one."""
    if len(ids) < block_size + 1:
        raise ValueError(f"{len(ids)} ids are too few for one window of {block_size} (+1 target)")
    starts = torch.randint(0, len(ids) - block_size, (batch_size,), generator=generator)   # (B,)
    offsets = torch.arange(block_size + 1)                                                   # (T + 1,)
    chunks = ids[starts[:, None] + offsets]                                                  # (B, T + 1)
    return chunks[:, :-1], chunks[:, 1:]


# --- algorithmic sequence tasks -----------------------------------------------------------------------------

def sequence_task(kind: str = "reverse", n: int = 1000, length: int = 8, vocab_size: int = 10, seed: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random sequences and their targets: X, y both (n, length) int64 with values in [0, vocab_size).

    ``kind="reverse"``: y is X backwards. ``kind="sort"``: y is X sorted in ascending order (repeats kept).
    The same ``seed`` gives the same tensors on every machine.
    """
    if kind not in SEQUENCE_TASKS:
        raise ValueError(f"unknown sequence task {kind!r}; choose one of {', '.join(SEQUENCE_TASKS)}")
    if n < 1 or length < 1 or vocab_size < 2:
        raise ValueError(f"need n >= 1, length >= 1 and vocab_size >= 2, got {n}, {length}, {vocab_size}")
    generator = torch.Generator().manual_seed(seed)
    X = torch.randint(0, vocab_size, (n, length), generator=generator)   # (n, length)
    y = X.flip(dims=[1]) if kind == "reverse" else X.sort(dim=1).values
    return X, y
