"""Tests for dlcourse.text: the standard-library corpus, the character tokenizer, next-token windows and
splits, and the algorithmic sequence tasks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from dlcourse import text
from dlcourse.text import CharTokenizer, NextTokenWindows

# --- the corpus ---------------------------------------------------------------------------------------------

@pytest.fixture
def fake_stdlib(tmp_path: Path) -> Path:
    """A small folder shaped like a standard library, with files the corpus must skip."""
    root = tmp_path / "lib"
    (root / "pkg").mkdir(parents=True)
    (root / "a.py").write_text("alpha = 1\n")
    (root / "pkg" / "b.py").write_text("beta = 2")                       # no final newline
    (root / "pkg" / "__init__.py").write_text("")                        # empty: contributes nothing
    (root / "crlf.py").write_bytes(b"x = 1\r\ny = 2\r\n")                # Windows line endings
    (root / "latin1.py").write_bytes("caf\xe9 = 3\n".encode("latin-1"))  # not UTF-8: skipped
    (root / "notes.txt").write_text("not python\n")
    for skipped in ("test", "tests", "site-packages", "dist-packages", "__pycache__", "pydoc_data",
                    "config-3.11-x86_64-linux-gnu", "pkg/tests"):
        (root / skipped).mkdir(parents=True, exist_ok=True)
        (root / skipped / "skipped.py").write_text("SKIPPED = True\n")
    (root / "_sysconfigdata__linux.py").write_text("SKIPPED = True\n")  # machine-specific build data
    (root / "dir.py").mkdir()                                            # a folder named like a module
    os.symlink(root / "missing.py", root / "broken.py")                  # unreadable: a broken link
    return root


def test_stdlib_source_files_skips_tests_third_party_and_build_files(fake_stdlib):
    files = text.stdlib_source_files(fake_stdlib)
    names = [p.relative_to(fake_stdlib).as_posix() for p in files]
    assert names == sorted(names)
    assert set(names) == {"a.py", "broken.py", "crlf.py", "latin1.py", "pkg/__init__.py", "pkg/b.py"}


def test_corpus_of_fake_stdlib_reads_utf8_files_only(fake_stdlib):
    corpus = text.python_source_corpus(None, root=fake_stdlib)
    assert "alpha = 1\n" in corpus and "beta = 2\n" in corpus
    assert "x = 1\ny = 2\n" in corpus and "\r" not in corpus
    assert "SKIPPED" not in corpus and "caf" not in corpus and "not python" not in corpus
    assert len(corpus) == len("alpha = 1\n\n") + len("beta = 2\n\n") + len("x = 1\ny = 2\n\n")


def test_corpus_order_is_fixed_by_the_seed_and_stable_when_files_are_added(fake_stdlib):
    orders = {seed: text.python_source_corpus(None, seed=seed, root=fake_stdlib) for seed in range(6)}
    assert orders[0] == text.python_source_corpus(None, seed=0, root=fake_stdlib)
    assert len(set(orders.values())) > 1                                   # some seed changes the order
    before = orders[0]
    (fake_stdlib / "zzz_new.py").write_text("NEW = 1\n")
    after = text.python_source_corpus(None, seed=0, root=fake_stdlib)
    assert after.replace("NEW = 1\n\n", "") == before                     # the others keep their order


def test_corpus_without_files_or_folder_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no readable .py files"):
        text.python_source_corpus(100, root=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no standard library folder"):
        text.python_source_corpus(100, root=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="max_chars"):
        text.python_source_corpus(0)


def test_real_corpus_is_deterministic_python_of_the_requested_length():
    corpus = text.python_source_corpus(50_000, seed=0)
    assert len(corpus) == 50_000
    assert corpus == text.python_source_corpus(50_000, seed=0)
    again = text.python_source_corpus(50_000, seed=0)
    assert text.corpus_fingerprint(corpus) == text.corpus_fingerprint(again)
    assert corpus != text.python_source_corpus(50_000, seed=1)
    assert "def " in corpus and "import " in corpus and "\r" not in corpus
    # a longer corpus starts with the shorter one: the selection is a prefix of one fixed order
    assert text.python_source_corpus(80_000, seed=0).startswith(corpus)


def test_real_stdlib_files_exclude_site_packages_and_tests():
    files = text.stdlib_source_files()
    names = {p.relative_to(text.stdlib_root()).as_posix() for p in files}
    assert len(names) > 100 and "json/decoder.py" in names
    assert not any(part in text.EXCLUDED_DIRS for n in names for part in n.split("/"))


def test_corpus_fingerprint():
    assert text.corpus_fingerprint("abc") == text.corpus_fingerprint("abc")
    assert text.corpus_fingerprint("abc") != text.corpus_fingerprint("abd")
    assert len(text.corpus_fingerprint("")) == 12


# --- the tokenizer ------------------------------------------------------------------------------------------

def test_tokenizer_round_trip_and_vocabulary():
    tok = CharTokenizer("hello world")
    assert tok.itos == ["\ufffd", " ", "d", "e", "h", "l", "o", "r", "w"]   # unknown first, then sorted
    assert tok.vocab_size == 9
    ids = tok.encode("hello")
    assert ids.dtype == torch.int64 and ids.tolist() == [4, 3, 5, 5, 6]
    assert tok.decode(ids) == "hello" and tok.decode([4, 3]) == "he"
    assert tok.stoi["h"] == 4 and CharTokenizer.UNK_ID not in tok.stoi.values()
    assert CharTokenizer("dlrow olleh").itos == tok.itos                   # order of the text does not matter


def test_tokenizer_unknown_characters():
    tok = CharTokenizer("abc")
    assert tok.encode("abz€c").tolist() == [1, 2, 0, 0, 3]
    assert tok.decode(tok.encode("abz")) == "ab\ufffd"
    strict = CharTokenizer("abc", unk=None)
    assert strict.encode("cab").tolist() == [3, 1, 2]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        strict.encode("abz")


def test_tokenizer_min_count_and_unicode():
    tok = CharTokenizer("aaab€€c", min_count=2)
    assert tok.itos[1:] == ["a", "€"]
    assert tok.encode("abc€").tolist() == [1, 0, 0, 2]
    big = CharTokenizer("x\U0001f40d")                                      # a character beyond the BMP
    assert big.decode(big.encode("\U0001f40dx")) == "\U0001f40dx"
    assert tok.encode("").shape == (0,)
    assert CharTokenizer("").encode("ab").tolist() == [0, 0]


def test_tokenizer_decode_rejects_bad_ids_and_bad_arguments():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([1, 4])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="1-D"):
        tok.decode(torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="min_count"):
        CharTokenizer("abc", min_count=0)
    with pytest.raises(ValueError, match="single character"):
        CharTokenizer("abc", unk="<unk>")


def test_tokenizer_on_the_corpus_round_trips():
    corpus = text.python_source_corpus(20_000, seed=3)
    tok = CharTokenizer(corpus)
    assert tok.decode(tok.encode(corpus)) == corpus


# --- language-modelling windows and splits ------------------------------------------------------------------

def test_next_token_windows_shift_by_one():
    ids = torch.arange(20)
    ds = NextTokenWindows(ids, block_size=5)
    assert len(ds) == 3                                   # starts 0, 5, 10 (15 would need id 20)
    x, y = ds[1]
    assert x.tolist() == [5, 6, 7, 8, 9] and y.tolist() == [6, 7, 8, 9, 10]
    assert ds[-1][0].tolist() == [10, 11, 12, 13, 14]
    overlapping = NextTokenWindows(ids, block_size=5, stride=2)
    assert len(overlapping) == 8 and overlapping[7][1].tolist() == [15, 16, 17, 18, 19]
    with pytest.raises(IndexError):
        ds[3]


def test_next_token_windows_errors():
    with pytest.raises(ValueError, match="too few"):
        NextTokenWindows(torch.arange(5), block_size=5)
    with pytest.raises(ValueError, match="1-D"):
        NextTokenWindows(torch.zeros(2, 10, dtype=torch.int64), block_size=3)
    with pytest.raises(ValueError, match="positive"):
        NextTokenWindows(torch.arange(10), block_size=3, stride=0)


def test_split_ids_interleaves_chunks_without_sharing_text():
    ids = torch.arange(1000)
    train, val = text.split_ids(ids, val_fraction=0.1, chunk_size=10)
    assert len(train) + len(val) == 1000 and len(val) == 100
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)  # order kept
    assert val[:10].tolist() == list(range(90, 100))      # every tenth chunk, from all over the ids
    assert val.max() >= 990 and val.min() < 100
    tail_train, tail_val = text.split_ids(ids, val_fraction=0.25, chunk_size=None)
    assert tail_train.tolist() == list(range(750)) and tail_val.tolist() == list(range(750, 1000))


def test_split_ids_errors():
    with pytest.raises(ValueError, match="val_fraction"):
        text.split_ids(torch.arange(10), val_fraction=1.0)
    with pytest.raises(ValueError, match="too few"):
        text.split_ids(torch.arange(10), val_fraction=0.1, chunk_size=10)
    with pytest.raises(ValueError, match="chunk_size"):
        text.split_ids(torch.arange(10), chunk_size=0)


def test_lm_splits_and_lm_batch():
    ids = torch.arange(10_000)
    train, val = text.lm_splits(ids, block_size=16, val_fraction=0.1, chunk_size=100, stride=8)
    assert train.stride == 8 and val.stride == 16
    assert set(train.ids.tolist()).isdisjoint(val.ids.tolist())
    gen = torch.Generator().manual_seed(0)
    x, y = text.lm_batch(train.ids, block_size=16, batch_size=4, generator=gen)
    assert x.shape == y.shape == (4, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, _ = text.lm_batch(train.ids, 16, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="too few"):
        text.lm_batch(torch.arange(5), block_size=5, batch_size=2)


# --- sequence tasks -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", text.SEQUENCE_TASKS)
def test_sequence_task_targets(kind):
    X, y = text.sequence_task(kind, n=50, length=8, vocab_size=10, seed=0)
    assert X.shape == y.shape == (50, 8) and X.dtype == y.dtype == torch.int64
    assert X.min() >= 0 and X.max() < 10
    for row, target in zip(X.tolist(), y.tolist()):
        assert target == (row[::-1] if kind == "reverse" else sorted(row))
    X2, y2 = text.sequence_task(kind, n=50, length=8, vocab_size=10, seed=0)
    assert torch.equal(X, X2) and torch.equal(y, y2)
    assert not torch.equal(X, text.sequence_task(kind, n=50, length=8, vocab_size=10, seed=1)[0])


def test_sequence_task_errors():
    with pytest.raises(ValueError, match="unknown sequence task"):
        text.sequence_task("copy")
    with pytest.raises(ValueError, match="vocab_size"):
        text.sequence_task("sort", vocab_size=1)
