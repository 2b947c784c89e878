# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 15: a language model from scratch
#
# This lab goes with notebook 15. You write the pieces that turn notebook 06's GPT into a modern Llama-style
# model, and well-kept libraries check each one: Hugging Face's `tokenizers` for byte-pair encoding, and
# `transformers`' Llama code (built from a small config with random weights; nothing is downloaded) for the rest.
#
# **Learning goals.** After this lab you can
# - train byte-pair-encoding merges on a text with deterministic ties, and encode text with them;
# - write RMSNorm, rotary position embeddings in the `rotate_half` convention, grouped-query attention and a
#   SwiGLU feed-forward, equal to their `transformers` counterparts;
# - predict the size of a KV cache before measuring it.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab15_llm_from_scratch.ipynb` tells you what passes.
# Each exercise is graded on its own: a later one never calls your answer to an earlier one.
#
# **Time.** About 75–100 minutes. Every cell runs in seconds on a laptop CPU; no GPU needed.
#
# **Points.** 14 in all: BPE training 2, BPE encoding 2, RMSNorm 2, RoPE 2, grouped-query attention 2,
# SwiGLU 2, predicting KV-cache bytes 2.
#
# **Shapes.** B batch, H query heads, H_kv key/value heads, T positions, d the size of one head, D the model width.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import json
import math
import re
from collections import Counter
from itertools import pairwise

import torch
import torch.nn.functional as F
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import (
    LlamaMLP,
    LlamaModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

import dlcourse
from dlcourse.grading.checks import check_close, check_equal, check_prediction, forbid

cfg = dlcourse.setup(seed=0)

# Pre-tokenisation (notebook 15, section 1): a word with an optional leading space, up to 3 digits, punctuation,
# whitespace. Merges never cross the boundary between two chunks.
PRETOKENIZE = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d]+| ?\d{1,3}| ?[^\s\w]+|\s+(?!\S)|\s+"""


def pretokenize(text: str) -> list[str]:
    """The chunks of text, in order; they join back to text."""
    return re.findall(PRETOKENIZE, text)


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """ids with every occurrence of pair (scanning left to right, no overlaps) replaced by new_id."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def vocabulary(merges: dict[tuple[int, int], int]) -> dict[int, bytes]:
    """id -> the bytes it stands for: the 256 bytes, then one entry per merge."""
    vocab = {i: bytes([i]) for i in range(256)}
    for (a, b), new_id in merges.items():
        vocab[new_id] = vocab[a] + vocab[b]
    return vocab


# %% [markdown] nbgrader={"grade": false, "grade_id": "bpe-train-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: training BPE merges (2 points)
#
# Write `train_bpe(text, num_merges)`. Start from the UTF-8 bytes of every chunk of `pretokenize(text)` (token
# ids 0–255), then learn `num_merges` merges, one at a time: the **most frequent pair of adjacent tokens** (counted
# within chunks, over the whole text) becomes a new token with the next id, 256, 257, ..., and replaces that pair
# everywhere (`merge_pair` does that for one list of ids). **Ties**: among pairs with the same count take the
# smallest pair, comparing `(left id, right id)` as tuples. Stop early if no chunk has two tokens left.
#
# Return a dict `{(left id, right id): new id}` in the order the merges were learned. The tests compare your
# merges with those the `tokenizers` library learns on the same chunks; its ties follow its own order of bytes,
# so they use texts where the two orders agree. Hint: count each distinct chunk once, with its number of
# occurrences, or training gets slow.

# %% nbgrader={"grade": false, "grade_id": "bpe-train-answer", "locked": false, "schema_version": 3, "solution": true}
def train_bpe(text: str, num_merges: int) -> dict[tuple[int, int], int]:
    """num_merges merges learned on text: {(left id, right id): new id}, new ids 256, 257, ... in order."""
    ### BEGIN SOLUTION
    chunks = Counter(chunk.encode("utf-8") for chunk in pretokenize(text))
    words, counts = [list(chunk) for chunk in chunks], list(chunks.values())
    merges: dict[tuple[int, int], int] = {}
    for new_id in range(256, 256 + num_merges):
        pairs: Counter = Counter()
        for word, n in zip(words, counts):
            for pair in pairwise(word):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))        # most frequent, then the smallest pair
        merges[best] = new_id
        words = [merge_pair(word, best, new_id) for word in words]
    return merges
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "bpe-train-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _byte_level() -> dict[int, str]:
    """The printable stand-in character of every byte in `tokenizers`' byte-level alphabet."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


_B2U = _byte_level()
_U2B = {u: b for b, u in _B2U.items()}


def _merges_of(tok):
    """The merges of a trained `tokenizers` BPE model, as pairs of byte-level strings, in order."""
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
            for m in json.loads(tok.to_str())["model"]["merges"]]


def _library_merges(text, num_merges):
    """The merges `tokenizers` learns on the same chunks, as {(left id, right id): new id} in our ids."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(PRETOKENIZE), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=256 + num_merges, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    ids = {bytes([b]): b for b in range(256)}
    merges = {}
    for left, right in _merges_of(tok):
        a, b = bytes(_U2B[c] for c in left), bytes(_U2B[c] for c in right)
        merges[ids[a], ids[b]] = ids[a + b] = 256 + len(merges)
    return merges


def _as_list(merges):
    return list(merges.items()) if isinstance(merges, dict) else merges


_m = train_bpe("aaabdaaabac", 3)
assert isinstance(_m, dict), f"train_bpe should return a dict, not {type(_m).__name__}"
check_equal("'aaabdaaabac', 3 merges", _as_list(_m), expected=_as_list(_library_merges("aaabdaaabac", 3)),
            hint="count adjacent pairs, merge the most frequent into id 256, recount, and so on")
_text = "low-lower-lowest-newer-newest-wider-wide-widest"
check_equal(f"{_text!r}, 12 merges (ties)", _as_list(train_bpe(_text, 12)),
            expected=_as_list(_library_merges(_text, 12)),
            hint="among pairs with the same count take min(pairs) as tuples of ids; new ids count up from 256")
_text = "the theme of the thesis: then the other"
check_equal(f"{_text!r}, 8 merges (chunks)", _as_list(train_bpe(_text, 8)),
            expected=_as_list(_library_merges(_text, 8)),
            hint="count pairs within the chunks of pretokenize(text) only: ' the' is a chunk, 'the ' never")
print("train_bpe: visible tests passed")

### BEGIN HIDDEN TESTS
_source = dlcourse.text.python_source_corpus(max_chars=12_000, seed=3)
_printable = re.sub(r"[^!-~]", "~", _source)                      # printable ASCII only: the tie orders agree
check_equal("Python source (printable only), 60 merges", _as_list(train_bpe(_printable, 60)),
            expected=_as_list(_library_merges(_printable, 60)),
            hint="count every distinct chunk with its number of occurrences; ties: the smallest (left, right)")
check_equal("a text of two chunks runs out of pairs: 'ab ab', 5 merges asked", _as_list(train_bpe("ab ab", 5)),
            expected=[((97, 98), 256), ((32, 256), 257)],
            hint="stop when no chunk has two tokens left to pair")
_text = "café,crème,brûlée;café-crème"
check_equal("UTF-8 bytes of non-ASCII text, 8 merges", _as_list(train_bpe(_text, 8)),
            expected=_as_list(_library_merges(_text, 8)),
            hint="start from chunk.encode('utf-8'): bytes, not characters")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "bpe-encode-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: encoding with BPE (2 points)
#
# Write `encode(text, merges)`: the token ids of any text, given merges as `train_bpe` returns them (the tests
# pass merges trained by the reference, so this exercise does not depend on yours). Cut the text with
# `pretokenize`; within each chunk start from its UTF-8 bytes and apply merges **in the order they were
# learned**: repeatedly merge the adjacent pair that was learned earliest (smallest new id), until no adjacent
# pair is a merge. Any Unicode text must round-trip: `b"".join(vocabulary(merges)[i] for i in ids)` decodes back
# to the text. The oracle is a `tokenizers` BPE model built from the same merges.

# %% nbgrader={"grade": false, "grade_id": "bpe-encode-answer", "locked": false, "schema_version": 3, "solution": true}
def encode(text: str, merges: dict[tuple[int, int], int]) -> list[int]:
    """The BPE token ids of text."""
    ### BEGIN SOLUTION
    ids_out = []
    for chunk in pretokenize(text):
        ids = list(chunk.encode("utf-8"))
        while len(ids) > 1:
            pair = min(pairwise(ids), key=lambda p: merges.get(p, math.inf))   # learned earliest
            if pair not in merges:
                break
            ids = merge_pair(ids, pair, merges[pair])
        ids_out += ids
    return ids_out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "bpe-encode-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _reference_merges(text, num_merges):
    """Merges trained the way exercise 1 asks (a copy of the reference, so this test does not use yours)."""
    chunks = Counter(chunk.encode("utf-8") for chunk in pretokenize(text))
    words, counts, merges = [list(c) for c in chunks], list(chunks.values()), {}
    for new_id in range(256, 256 + num_merges):
        pairs = Counter()
        for word, n in zip(words, counts):
            for pair in pairwise(word):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges[best] = new_id
        words = [merge_pair(word, best, new_id) for word in words]
    return merges


def _library_encode(text, merges):
    """`tokenizers`' BPE model built from the same merges: the ids it gives, in our numbering."""
    vocab = vocabulary(merges)
    as_text = {i: "".join(_B2U[b] for b in v) for i, v in vocab.items()}
    tok = Tokenizer(models.BPE({s: i for i, s in as_text.items()},
                               [(as_text[a], as_text[b]) for a, b in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(PRETOKENIZE), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tok.encode(text).ids


_train = dlcourse.text.python_source_corpus(max_chars=20_000, seed=0)
_merges = _reference_merges(_train, 80)
_text = "    def __init__(self, name):\n        self.name = name  # 1234\n"
_ids = encode(_text, dict(_merges))
assert isinstance(_ids, list), f"encode should return a list of ints, not {type(_ids).__name__}"
check_equal("a line of Python", _ids, expected=_library_encode(_text, _merges),
            hint="within each chunk, merge the adjacent pair with the smallest new id first, until none is a merge")
_text = "naïve café — 東京 😀 \x00\r\n"
check_equal("non-ASCII text: ids, and the bytes join back to the text",
            [encode(_text, dict(_merges)), b"".join(vocabulary(_merges)[i] for i in encode(_text, dict(_merges)))
             .decode("utf-8")], expected=[_library_encode(_text, _merges), _text],
            hint="start from chunk.encode('utf-8'): every character becomes 1 to 4 byte tokens")
print("encode: visible tests passed")

### BEGIN HIDDEN TESTS
_held_out = dlcourse.text.python_source_corpus(max_chars=6_000, seed=5)
check_equal("held-out Python source", encode(_held_out, dict(_merges)),
            expected=_library_encode(_held_out, _merges),
            hint="apply the merges in the order learned, not the first matching pair from the left")
_tiny = {(98, 99): 256, (97, 98): 257, (97, 256): 258}                 # bc, then ab, then a(bc)
check_equal("merges in learned order: 'abc' and 'abcab' with bc, ab, a(bc)",
            [encode("abc", _tiny), encode("abcab", _tiny)],
            expected=[_library_encode("abc", _tiny), _library_encode("abcab", _tiny)],
            hint="bc was learned before ab, so 'abc' becomes a (bc) and then a(bc), never (ab) c")
check_equal("the empty text", encode("", dict(_merges)), expected=[], hint="no chunks, no ids")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "rmsnorm-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: RMSNorm (2 points)
#
# $$\mathrm{RMSNorm}(x) = \frac{x}{\sqrt{\mathrm{mean}(x^2) + \varepsilon}} \odot w$$
#
# over the last dimension: no mean subtracted, no bias. Write `rms_norm(x, weight, eps)` equal to `transformers`'
# `LlamaRMSNorm` for inputs of any dtype: it computes the mean of squares and the division in float32, casts the
# normalised `x` back to `x`'s dtype, then multiplies by `weight`. `F.rms_norm` and `nn.RMSNorm` are switched off
# while the tests call yours.

# %% nbgrader={"grade": false, "grade_id": "rmsnorm-answer", "locked": false, "schema_version": 3, "solution": true}
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x (..., D), weight (D,) -> (..., D)."""
    ### BEGIN SOLUTION
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "rmsnorm-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
NO_BUILTIN_NORM = "write RMSNorm from tensor operations: F.rms_norm is switched off while the tests call yours"
_NORMS = ((F, "rms_norm"), (torch, "rms_norm"))


def _rms_case(seed, shape, dtype, eps):
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(*shape, generator=g) + 1).to(dtype)
    w = (1 + 0.3 * torch.randn(shape[-1], generator=g)).to(dtype)
    ref = LlamaRMSNorm(shape[-1], eps=eps).to(dtype)
    with torch.no_grad():
        ref.weight.copy_(w)
    with forbid(_NORMS, NO_BUILTIN_NORM):
        ours = rms_norm(x, w, eps)
    return ours, ref(x)


_ours, _theirs = _rms_case(0, (2, 5, 16), torch.float32, 1e-6)
check_close("float32 (2, 5, 16): equals LlamaRMSNorm", _ours, expected=_theirs, atol=1e-6,
            hint="divide by sqrt(mean(x**2) + eps) over the last dimension; subtract no mean")
_ours, _theirs = _rms_case(1, (3, 8), torch.float32, 0.5)
check_close("a large eps (0.5)", _ours, expected=_theirs, atol=1e-6,
            hint="eps goes inside the square root, added to the mean of squares")
print("rms_norm: visible tests passed")

### BEGIN HIDDEN TESTS
_ours, _theirs = _rms_case(2, (2, 3, 64), torch.bfloat16, 1e-5)
check_close("bfloat16 input: dtype and values", _ours, expected=_theirs, atol=0.0, rtol=0.0, dtype=True,
            hint="compute in float32, cast the normalised x back to x.dtype, then multiply by the weight")
_ours, _theirs = _rms_case(3, (4, 1, 7), torch.float64, 1e-6)
check_close("float64, odd width", _ours, expected=_theirs, atol=1e-6,
            hint="normalise over the last dimension only")
_x = torch.randn(3, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64, requires_grad=True)
_w = torch.linspace(0.5, 1.5, 16, dtype=torch.float64)
with forbid(_NORMS, NO_BUILTIN_NORM):
    _g_ours = torch.autograd.grad((rms_norm(_x, _w, 1e-6) ** 3).sum(), _x)[0]
_ref = LlamaRMSNorm(16, eps=1e-6).double()
with torch.no_grad():
    _ref.weight.copy_(_w)
check_close("gradient with respect to x", _g_ours, expected=torch.autograd.grad((_ref(_x) ** 3).sum(), _x)[0],
            atol=1e-6, hint="use differentiable tensor operations only")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "rope-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: rotary embeddings, the `rotate_half` convention (2 points)
#
# Notebook 15 rotates neighbouring pairs $(x_{2i}, x_{2i+1})$. `transformers`' Llama pairs coordinate $i$ with
# $i + d/2$ instead. Write `apply_rope(x, positions, base)` in that convention: for `x` of shape `(B, H, T, d)` and
# integer `positions` of shape `(T,)`, rotate the pair $(x_i, x_{i+d/2})$ of row $t$ by the angle
# $p_t\,\omega_i$ with $\omega_i = \text{base}^{-2i/d}$, $i = 0, \dots, d/2 - 1$:
# $(x_i, x_{i+d/2}) \mapsto (x_i \cos\theta - x_{i+d/2} \sin\theta,\; x_i \sin\theta + x_{i+d/2} \cos\theta)$.
# Keep `x`'s dtype. The oracle is `apply_rotary_pos_emb` with `LlamaRotaryEmbedding`'s cos and sin.

# %% nbgrader={"grade": false, "grade_id": "rope-answer", "locked": false, "schema_version": 3, "solution": true}
def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """x (B, H, T, d), positions (T,) int -> x rotated, (B, H, T, d)."""
    ### BEGIN SOLUTION
    d = x.shape[-1]
    omega = base ** (-torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)     # (d/2,)
    angle = positions.to(x.device, torch.float32)[:, None] * omega                          # (T, d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "rope-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _hf_rope(x, positions, base):
    config = LlamaConfig(hidden_size=x.shape[-1] * 2, num_attention_heads=2, rope_theta=base,
                         max_position_embeddings=4096)
    cos, sin = LlamaRotaryEmbedding(config)(x, positions[None])          # (1, T, d) each
    return apply_rotary_pos_emb(x, x, cos, sin)[0]


_x = torch.randn(2, 3, 6, 16, generator=torch.Generator().manual_seed(0))
check_close("positions 0..5, d = 16: equals apply_rotary_pos_emb", apply_rope(_x, torch.arange(6)),
            expected=_hf_rope(_x, torch.arange(6), 10000.0), atol=1e-5,
            hint="pair coordinate i with i + d/2 (the two halves), not neighbours; ω_i = base^(-2i/d)")
_pos = torch.tensor([7, 8, 9, 100, 101, 300])
check_close("positions 7, 8, 9, 100, 101, 300 and base 500", apply_rope(_x, _pos, 500.0),
            expected=_hf_rope(_x, _pos, 500.0), atol=1e-4,
            hint="row t is rotated by positions[t]·ω_i, with the base given")
print("apply_rope: visible tests passed")

### BEGIN HIDDEN TESTS
_x = torch.randn(1, 2, 5, 64, generator=torch.Generator().manual_seed(1))
check_close("d = 64, positions 3..7", apply_rope(_x, torch.arange(3, 8)),
            expected=_hf_rope(_x, torch.arange(3, 8), 10000.0), atol=1e-4,
            hint="the exponent is -2i/d for i = 0 .. d/2 - 1")
_x = torch.randn(2, 1, 4, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
check_close("float64 keeps its dtype", apply_rope(_x, torch.arange(4)),
            expected=_hf_rope(_x.float(), torch.arange(4), 10000.0).double(), atol=1e-5, dtype=True,
            hint="cast cos and sin to x.dtype")
_q = torch.randn(1, 1, 1, 32, generator=torch.Generator().manual_seed(3)).expand(1, 1, 2, 32)
_k = torch.randn(1, 1, 1, 32, generator=torch.Generator().manual_seed(4)).expand(1, 1, 2, 32)
_s1 = (apply_rope(_q, torch.tensor([5, 9])) * apply_rope(_k, torch.tensor([2, 6]))).sum(-1)
check_close("scores depend on the offset only: q at 5 with k at 2 equals q at 9 with k at 6", _s1[0, 0, 0],
            expected=_s1[0, 0, 1], atol=1e-4, hint="a rotation by p·ω for each pair, the same ω for q and k")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "gqa-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: grouped-query attention (2 points)
#
# Write causal `gqa_attention(q, k, v)` for `q` of shape `(B, H, T, d)` and `k`, `v` of shape `(B, H_kv, T, d)`,
# where `H` is a multiple of `H_kv`: query heads come in `H_kv` consecutive groups of `H / H_kv`, and query head
# `h` attends with key/value head `h // (H / H_kv)`. Position `t` attends to positions `0..t`, with scores scaled
# by $1/\sqrt d$. The oracle is `F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)`, which
# is switched off while the tests call yours.

# %% nbgrader={"grade": false, "grade_id": "gqa-answer", "locked": false, "schema_version": 3, "solution": true}
def gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q (B, H, T, d), k and v (B, H_kv, T, d) -> (B, H, T, d), causal."""
    ### BEGIN SOLUTION
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)   # (B, H, T, d)
    T = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])                     # (B, H, T, T)
    allowed = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1) @ v
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "gqa-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
NO_SDPA = "write attention from tensor operations: F.scaled_dot_product_attention is off while the tests call yours"
_SDPA = ((F, "scaled_dot_product_attention"), (F, "multi_head_attention_forward"))


def _gqa_case(seed, B, H, H_kv, T, d, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, d, generator=g, dtype=dtype)
    k, v = (torch.randn(B, H_kv, T, d, generator=g, dtype=dtype) for _ in range(2))
    with forbid(_SDPA, NO_SDPA):
        ours = gqa_attention(q, k, v)
    return ours, F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


_ours, _theirs = _gqa_case(0, 2, 4, 2, 5, 8)
assert isinstance(_ours, torch.Tensor), f"gqa_attention should return a tensor, not {type(_ours).__name__}"
check_close("H = 4, H_kv = 2", _ours, expected=_theirs, atol=1e-5,
            hint="query head h uses key/value head h // (H / H_kv): repeat_interleave, not repeat")
_ours, _theirs = _gqa_case(1, 1, 3, 1, 6, 4)
check_close("H = 3, H_kv = 1 (multi-query)", _ours, expected=_theirs, atol=1e-5,
            hint="causal: position t sees 0..t; scale the scores by 1/sqrt(d)")
print("gqa_attention: visible tests passed")

### BEGIN HIDDEN TESTS
_ours, _theirs = _gqa_case(2, 2, 8, 2, 7, 16)
check_close("H = 8, H_kv = 2", _ours, expected=_theirs, atol=1e-5,
            hint="4 consecutive query heads share one key/value head")
_ours, _theirs = _gqa_case(3, 1, 6, 3, 9, 8, torch.float64)
check_close("H = 6, H_kv = 3, float64", _ours, expected=_theirs, atol=1e-10,
            hint="keep the inputs' dtype")
_ours, _theirs = _gqa_case(4, 2, 4, 4, 5, 8)
check_close("H_kv = H: ordinary multi-head attention", _ours, expected=_theirs, atol=1e-5,
            hint="a group of 1 repeats nothing")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "swiglu-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 6: the SwiGLU feed-forward (2 points)
#
# Llama's feed-forward is $W_\text{down}\,\big(\mathrm{SiLU}(W_\text{gate}\, x) \odot W_\text{up}\, x\big)$, without
# biases. Write `swiglu(x, w_gate, w_up, w_down)` for `x` of shape `(..., D)`, `w_gate` and `w_up` of shape
# `(F, D)` and `w_down` of shape `(D, F)` (laid out like `nn.Linear` weights: output features first). The oracle is
# `transformers`' `LlamaMLP` holding the same weights.

# %% nbgrader={"grade": false, "grade_id": "swiglu-answer", "locked": false, "schema_version": 3, "solution": true}
def swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """x (..., D); w_gate, w_up (F, D); w_down (D, F) -> (..., D)."""
    ### BEGIN SOLUTION
    return F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "swiglu-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _swiglu_case(seed, shape, hidden):
    torch.manual_seed(seed)
    mlp = LlamaMLP(LlamaConfig(hidden_size=shape[-1], intermediate_size=hidden, num_attention_heads=1,
                               num_key_value_heads=1, mlp_bias=False))
    x = torch.randn(*shape)
    ours = swiglu(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
    return ours, mlp(x)


_ours, _theirs = _swiglu_case(0, (2, 5, 16), 40)
assert isinstance(_ours, torch.Tensor), f"swiglu should return a tensor, not {type(_ours).__name__}"
check_close("(2, 5, 16) with F = 40: equals LlamaMLP", _ours, expected=_theirs, atol=1e-5,
            hint="SiLU on the gate branch only, times the up branch, then the down projection")
print("swiglu: visible tests passed")

### BEGIN HIDDEN TESTS
_ours, _theirs = _swiglu_case(1, (7, 32), 88)
check_close("(7, 32) with F = 88", _ours, expected=_theirs, atol=1e-5,
            hint="a weight of shape (out, in) maps x with x @ w.T")
_ours, _theirs = _swiglu_case(2, (1, 2, 3, 8), 8)
check_close("four dimensions, F = D", _ours, expected=_theirs, atol=1e-5,
            hint="work on the last dimension only")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "kv-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 7: predict the size of a KV cache (2 points)
#
# While a model generates, its KV cache keeps the keys and the values of every position seen so far, in every
# layer. Write `kv_cache_bytes(num_layers, batch_size, seq_len, num_kv_heads, head_dim, dtype)`: the bytes
# `transformers`' `LlamaForCausalLM` holds in its cache after reading `batch_size` sequences of `seq_len` tokens,
# for a model with that many layers, `num_kv_heads` key/value heads (and twice as many query heads) of size
# `head_dim`, its weights in `dtype`. Work it out from the sizes, as an exact `int`: **tolerance 0**. The tests
# then measure it, with other sizes in the hidden tests; running the model inside your function is switched off.

# %% nbgrader={"grade": false, "grade_id": "kv-answer", "locked": false, "schema_version": 3, "solution": true}
def kv_cache_bytes(num_layers: int, batch_size: int, seq_len: int, num_kv_heads: int, head_dim: int,
                   dtype: torch.dtype) -> int:
    """Bytes of keys and values cached by a Llama model of these sizes after reading (batch_size, seq_len) ids."""
    ### BEGIN SOLUTION
    return 2 * num_layers * batch_size * seq_len * num_kv_heads * head_dim * dtype.itemsize
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "kv-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
NO_MODEL = "predict from the sizes: running the Llama model is switched off inside kv_cache_bytes"
_RUNNING = ((LlamaForCausalLM, "forward"), (LlamaModel, "forward"))


def _measured_cache_bytes(num_layers, batch_size, seq_len, num_kv_heads, head_dim, dtype):
    """Run a LlamaForCausalLM of these sizes with random weights and add up the bytes of its cache."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=2 * num_kv_heads * head_dim, intermediate_size=32,
                         num_hidden_layers=num_layers, num_attention_heads=2 * num_kv_heads,
                         num_key_value_heads=num_kv_heads, max_position_embeddings=max(seq_len, 16))
    model = LlamaForCausalLM(config).to(dtype).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 64, (batch_size, seq_len)), use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


def _predicted(*sizes):
    with forbid(_RUNNING, NO_MODEL):
        return kv_cache_bytes(*sizes)


for _sizes in [(2, 3, 10, 2, 8, torch.float32), (1, 1, 7, 1, 16, torch.bfloat16)]:
    check_prediction(f"cache bytes for (layers, B, T, H_kv, d, dtype) = {_sizes}", _predicted(*_sizes),
                     expected=_measured_cache_bytes(*_sizes), rtol=0.0,
                     hint="keys and values, per layer, per sequence, per position, per key/value head: head_dim "
                          "numbers of dtype.itemsize bytes each")
print("kv_cache_bytes: visible tests passed")

### BEGIN HIDDEN TESTS
for _sizes in [(3, 2, 5, 4, 4, torch.float16), (4, 1, 12, 1, 8, torch.float64), (1, 4, 3, 3, 2, torch.float32)]:
    check_prediction(f"cache bytes for (layers, B, T, H_kv, d, dtype) = {_sizes}", _predicted(*_sizes),
                     expected=_measured_cache_bytes(*_sizes), rtol=0.0,
                     hint="only the key/value heads are cached: the query heads are not")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "kv-look", "locked": true, "schema_version": 3, "solution": false}
# Not graded: what your formula says about real sizes. A Llama-3-8B-like model has 32 layers, 32 query heads and
# 8 key/value heads of size 128; in bfloat16 a single 8192-token sequence then needs the cache below, and four
# times as much with one key/value head per query head.

# %% nbgrader={"grade": false, "grade_id": "kv-table", "locked": true, "schema_version": 3, "solution": false}
for _kv_heads in (32, 8, 1):
    try:
        _gib = f"{kv_cache_bytes(32, 1, 8192, _kv_heads, 128, torch.bfloat16) / 2**30:.2f} GiB"
    except Exception:                                    # not written yet, or failing
        _gib = "-"
    print(f"{_kv_heads:>2} key/value heads: {_gib}")

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - BPE learns merges by counting adjacent pairs within pre-tokenised chunks; encoding applies them in the order
#   learned, and any text round-trips because the base vocabulary is the 256 bytes.
# - RMSNorm divides by the root mean square (in float32), RoPE rotates pairs of coordinates (which pairs is a
#   convention), grouped-query attention lets consecutive query heads share a key/value head, and SwiGLU gates one
#   linear branch with the SiLU of another.
# - The KV cache holds 2 · layers · B · T · H_kv · d numbers: grouped-query attention shrinks it by H / H_kv.
#
# ## Further exercises (not graded)
#
# 1. Put `rms_norm`, `apply_rope`, `gqa_attention` and `swiglu` together into one Llama block, copy the weights of
#    a `LlamaDecoderLayer` into it, and compare the outputs.
# 2. Make `train_bpe` faster by updating the pair counts only for the chunks that contain the merged pair.
# 3. Write a top-2 mixture-of-experts router with the load-balancing loss of notebook 15 and compare the loss with
#    `transformers.models.mixtral.modeling_mixtral.load_balancing_loss_func`.
