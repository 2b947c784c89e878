# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 15 · A language model from scratch
#
# Notebook 06 built a character-level GPT. Modern open language models (Llama, Mistral, Qwen) keep the same
# skeleton but change almost every part: text is cut into sub-word tokens by byte-pair encoding, LayerNorm becomes
# RMSNorm, learned positions become rotary embeddings, several query heads share one key/value head, the MLP
# becomes a gated SwiGLU, and some models replace it by a mixture of experts. This notebook writes each of these
# pieces, checks the model against Hugging Face's Llama with the same weights, and measures what the choices cost
# and save: attention kernels, the KV cache, training throughput against the machine's peak, and how the loss
# falls with the model's size.
#
# **Learning goals**
# - Train a byte-level BPE tokenizer (pre-tokenisation, merges with deterministic ties), encode and decode any
#   Unicode text, measure its compression, and compare it with the `tokenizers` library.
# - Write a Llama-style decoder (RMSNorm, RoPE inside attention, grouped-query attention, SwiGLU, no biases, tied
#   embeddings) and get the same logits as `transformers`' `LlamaForCausalLM`, converting the RoPE convention.
# - Compare hand-written attention with `F.scaled_dot_product_attention` and its backends in time and memory.
# - Size a KV cache for grouped-query attention and measure decoding with and without it.
# - Route tokens to experts (top-k, load-balancing loss, capacity, dropped tokens).
# - Measure training throughput, estimate FLOPs with 6·N·D, compute model FLOP utilisation, and fit a small
#   scaling law.
#
# **Prerequisites:** notebook 06 (attention, RoPE, KV cache, the character corpus), notebook 07 (bfloat16) and
# notebook 10 (timing with synchronisation).
#
# **Time:** seconds at `smoke`; a few minutes at `small` on a laptop CPU (most of it BPE training and the scaling
# sweep); at `full` larger models and longer sequences on one GPU. The last cell prints how long this run took.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import math
import re
import time
from collections import Counter
from dataclasses import dataclass, replace
from itertools import pairwise

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import dlcourse
from dlcourse import text

cfg = dlcourse.setup(seed=0)
device = cfg.device
t_start = time.perf_counter()

# %% [markdown]
# ## 1. Byte-pair encoding
# A character tokenizer needs one id per character it has seen and still fails on a character it has not; a
# word tokenizer needs a huge vocabulary and fails on new words. **Byte-level BPE** starts from the 256 byte
# values, so every text (any language, emoji, binary junk) can be encoded, and then *learns* new tokens: it
# repeatedly finds the most frequent pair of adjacent tokens in the training text and adds their concatenation as
# a new token (a **merge**). Frequent words end up as one token, rare ones as a few pieces.
#
# Two details make it work in practice:
# - **Pre-tokenisation.** A regular expression first cuts the text into chunks (a word with its leading space, a
#   run of digits, a run of punctuation, whitespace) and merges never cross a chunk boundary. Otherwise the most
#   frequent pairs would glue words to the punctuation after them ("self." and "self," as separate tokens). The
#   pattern must cover every character, or text would be lost: we check that the chunks join back to the text.
# - **Deterministic ties.** Two pairs often have the same count. We take the pair with the smallest token ids, so
#   the merges depend only on the text.

# %%
# a word with an optional leading space (letters and _), up to 3 digits, punctuation, whitespace (a run of spaces
# before a word leaves its last space to the word)
PRETOKENIZE = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d]+| ?\d{1,3}| ?[^\s\w]+|\s+(?!\S)|\s+"""
pretokenize_re = re.compile(PRETOKENIZE)


def pretokenize(s: str) -> list[str]:
    return pretokenize_re.findall(s)


corpus = text.python_source_corpus(max_chars=cfg.pick(smoke=60_000, small=600_000, full=2_000_000), seed=cfg.seed)
split = int(0.9 * len(corpus))
train_text, test_text = corpus[:split], corpus[split:]
print(pretokenize("    def __init__(self, x=1234):  # naïve 😀"))
samples = ["    def __init__(self, x=1234):\n\t\treturn  'ok'", "naïve café — 東京 😀👍🏽 \x00\r\n", test_text[:2000]]
assert all("".join(pretokenize(s)) == s for s in samples), "the pattern must keep every character"


# %%
def train_bpe(s: str, num_merges: int, byte_rank: dict[int, int] | None = None) -> dict[tuple[int, int], int]:
    """Learn num_merges merges on the text s: {(left id, right id): new id}, new ids 256, 257, ... in order.

    Ties go to the smallest pair of ids; byte_rank (byte -> its place in another order) changes how bytes compare.
    """
    def rank(i: int) -> int:
        return byte_rank[i] if byte_rank is not None and i < 256 else i

    chunks = Counter(chunk.encode("utf-8") for chunk in pretokenize(s))      # each distinct chunk once, with count
    words = [list(chunk) for chunk in chunks]                               # token ids: bytes to start with
    counts = list(chunks.values())
    merges: dict[tuple[int, int], int] = {}
    for new_id in range(256, 256 + num_merges):
        pairs: Counter = Counter()
        for word, n in zip(words, counts):
            for pair in pairwise(word):
                pairs[pair] += n
        if not pairs:
            break                                                           # every chunk is a single token
        best = min(pairs, key=lambda p: (-pairs[p], rank(p[0]), rank(p[1])))   # most frequent; ties: smallest ids
        merges[best] = new_id
        words = [merge_pair(word, best, new_id) for word in words]
    return merges


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of pair in ids (left to right, no overlaps) by new_id."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """Byte-level BPE: encode applies the merges in the order they were learned, within each chunk."""

    def __init__(self, merges: dict[tuple[int, int], int]) -> None:
        self.merges = merges
        self.vocab = {i: bytes([i]) for i in range(256)}                    # id -> the bytes it stands for
        for (a, b), new_id in merges.items():
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode_chunk(self, chunk: str) -> list[int]:
        if chunk not in self._cache:
            ids = list(chunk.encode("utf-8"))
            while len(ids) > 1:
                # the pair that was merged earliest in training goes first (merge ids grow with the order)
                pair = min(pairwise(ids), key=lambda p: self.merges.get(p, math.inf))
                if pair not in self.merges:
                    break
                ids = merge_pair(ids, pair, self.merges[pair])
            self._cache[chunk] = ids
        return self._cache[chunk]

    def encode(self, s: str) -> list[int]:
        return [i for chunk in pretokenize(s) for i in self.encode_chunk(chunk)]

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")


num_merges = cfg.pick(smoke=150, small=700, full=1000)
bpe_text = train_text[:800_000]        # pure-Python training: at most 800k characters (full scale has more)
t0 = time.perf_counter()
bpe = BPETokenizer(train_bpe(bpe_text, num_merges))
print(f"{num_merges} merges learned on {len(bpe_text):,} characters in {time.perf_counter() - t0:.1f} s")
print("the first 12 merges:", [bpe.vocab[i].decode("utf-8", "replace") for i in range(256, 268)])
print("some of the last:   ", [bpe.vocab[i].decode("utf-8", "replace") for i in range(bpe.vocab_size - 8,
                                                                                       bpe.vocab_size)])
for s in samples:
    assert bpe.decode(bpe.encode(s)) == s                    # exact round trip, even for unseen characters
print(samples[0], "->", [bpe.vocab[i].decode("utf-8", "replace") for i in bpe.encode(samples[0])])

# %% [markdown]
# **Compression.** On held-out text (the last 10% of the corpus, never seen in training) we count tokens per
# text. A character tokenizer spends one token per character; BPE fewer, and a transformer's cost grows with the
# number of tokens, so the same context window holds more text.

# %%
char_tok = text.CharTokenizer(bpe_text)
test_ids = bpe.encode(test_text)
chars_per_token = len(test_text) / len(test_ids)
print(f"held-out text: {len(test_text):,} characters, {len(test_text.encode()):,} bytes")
print(f"  character tokenizer: {len(char_tok.encode(test_text)):,} tokens (vocabulary {char_tok.vocab_size})")
print(f"  our BPE:             {len(test_ids):,} tokens (vocabulary {bpe.vocab_size}): "
      f"{chars_per_token:.2f} characters per token")
assert chars_per_token > 1.8

# %% [markdown]
# **Against a library.** Hugging Face's `tokenizers` (written in Rust) trains the same algorithm. We give it the
# same pre-tokenisation regex and its byte-level alphabet: it represents each byte by a printable character (a
# space is `Ġ`, a newline `Ċ`), so we translate our merges into that alphabet to compare. Its ties are broken by
# its own ids, which order bytes differently, so where two pairs have the same count the two trainers may pick
# different ones, and from there on their merge lists can drift; we measure how much they share and how well each
# compresses.

# %%
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers


def bytes_to_unicode() -> dict[int, str]:
    """The byte-level alphabet of GPT-2 and `tokenizers`: printable bytes stand for themselves, the others get
    characters from 256 upwards."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


hf_bpe = Tokenizer(models.BPE())
hf_bpe.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(PRETOKENIZE), behavior="isolated"),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
hf_bpe.decoder = decoders.ByteLevel()
t0 = time.perf_counter()
hf_bpe.train_from_iterator([bpe_text], trainers.BpeTrainer(
    vocab_size=256 + num_merges, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
print(f"tokenizers trained in {time.perf_counter() - t0:.2f} s")
assert hf_bpe.get_vocab_size() == bpe.vocab_size

b2u = bytes_to_unicode()
ours_as_text = {"".join(b2u[b] for b in bpe.vocab[i]) for i in range(256, bpe.vocab_size)}
theirs = set(hf_bpe.get_vocab()) - set(b2u.values())
shared = len(ours_as_text & theirs) / num_merges
hf_tokens = len(hf_bpe.encode(test_text).ids)
print(f"learned tokens in both vocabularies: {shared:.1%}")
print(f"held-out tokens: ours {len(test_ids):,}, tokenizers {hf_tokens:,} ({hf_tokens / len(test_ids) - 1:+.2%})")
assert hf_bpe.decode(hf_bpe.encode(samples[1]).ids) == samples[1]
assert shared > 0.9 and abs(hf_tokens / len(test_ids) - 1) < 0.02

# %% [markdown]
# Where do the differences come from? `tokenizers` numbers the 256 bytes in the order of their stand-in characters
# (so a space, `Ġ` = U+0120, comes after every printable byte) and breaks ties by the smallest pair in *its* ids.
# Give our trainer that order of bytes and the two merge lists become identical, merge for merge:

# %%
import json

hf_rank = {b: r for r, b in enumerate(sorted(range(256), key=lambda b: b2u[b]))}
ours_hf_order = BPETokenizer(train_bpe(bpe_text, num_merges, byte_rank=hf_rank))
ours_pairs = [("".join(b2u[x] for x in ours_hf_order.vocab[a]), "".join(b2u[x] for x in ours_hf_order.vocab[b]))
              for a, b in ours_hf_order.merges]
theirs_pairs = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                for m in json.loads(hf_bpe.to_str())["model"]["merges"]]
print(f"with the library's byte order: {sum(a == b for a, b in zip(ours_pairs, theirs_pairs))} of {num_merges} "
      f"merges equal, in the same order; held-out tokens {len(ours_hf_order.encode(test_text)):,} vs {hf_tokens:,}")
assert ours_pairs == theirs_pairs and len(ours_hf_order.encode(test_text)) == hf_tokens

# %% [markdown]
# ## 2. A Llama-style decoder
# The block of notebook 06 becomes the Llama block by five changes, each a small module below:
# - **RMSNorm** instead of LayerNorm: divide by the root mean square of the features, no mean subtracted, no bias.
#   It is cheaper and works as well; we compute it in float32 whatever the input dtype, as Llama does.
# - **RoPE inside attention**: queries and keys are rotated after the projections (notebook 06, section 3);
#   values are not.
# - **Grouped-query attention (GQA)**: `n_heads` query heads share `n_kv_heads` key/value heads, `n_heads /
#   n_kv_heads` queries per group. Fewer key/value heads mean fewer parameters and, above all, a smaller KV cache
#   (section 4). `n_kv_heads = 1` is multi-query attention, `n_kv_heads = n_heads` ordinary multi-head attention.
# - **SwiGLU** feed-forward: $W_2\,(\mathrm{SiLU}(W_1 x) \odot W_3 x)$, a gate times a linear branch.
# - **No biases** anywhere, and **tied embeddings**: the output layer reuses the token embedding matrix.

# %%
@dataclass
class LlamaCfg:
    vocab_size: int = 512
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    hidden_dim: int = 172          # SwiGLU's width; Llama uses about 8/3 · dim
    max_len: int = 256
    rope_base: float = 10000.0
    eps: float = 1e-5


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:                     # x: (..., dim)
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def rope(x: torch.Tensor, start: int, base: float) -> torch.Tensor:
    """Rotate neighbouring pairs (x[..., 2i], x[..., 2i+1]) of row t of x (B, H, T, d) by (start + t)·ω_i."""
    T, d = x.shape[-2:]
    p = torch.arange(start, start + T, dtype=torch.float32, device=x.device)
    omega = base ** (-torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)
    angle = p[:, None] * omega                                              # (T, d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1).flatten(-2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """Hand-written causal attention. q (B, H, T_q, d), k and v (B, H, T_k, d); the T_q queries are the last
    T_q of the T_k positions."""
    T_q, T_k = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])                # (B, H, T_q, T_k)
    if causal:
        allowed = torch.ones(T_q, T_k, dtype=torch.bool, device=q.device).tril(diagonal=T_k - T_q)
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1) @ v


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE and an optional KV cache (a dict filled in place)."""

    def __init__(self, c: LlamaCfg) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim, self.base = c.n_heads, c.n_kv_heads, c.dim // c.n_heads, c.rope_base
        self.wq = nn.Linear(c.dim, c.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(c.dim, c.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(c.dim, c.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(c.n_heads * self.head_dim, c.dim, bias=False)
        self.fused = False              # True: F.scaled_dot_product_attention instead of our attention

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)       # (B, H, T, d)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)    # (B, H_kv, T, d)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        start = cache["k"].shape[2] if cache else 0
        q, k = rope(q, start, self.base), rope(k, start, self.base)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v                                # the cache keeps H_kv heads only
        group = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)   # query head h uses h // group
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1 and not start)
        else:
            y = attention(q, k, v)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)      # gate
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)      # linear branch
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)      # back to dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class LlamaBlock(nn.Module):
    def __init__(self, c: LlamaCfg) -> None:
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(c.dim, c.eps), Attention(c)
        self.ffn_norm, self.ffn = RMSNorm(c.dim, c.eps), SwiGLU(c.dim, c.hidden_dim)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cache)
        return x + self.ffn(self.ffn_norm(x))


class Llama(nn.Module):
    """Token ids (B, T) -> logits (B, T, vocab_size); with a cache (one dict per layer) idx holds new tokens only."""

    def __init__(self, c: LlamaCfg) -> None:
        super().__init__()
        self.cfg = c
        self.tok = nn.Embedding(c.vocab_size, c.dim)
        self.blocks = nn.ModuleList([LlamaBlock(c) for _ in range(c.n_layers)])
        self.norm = RMSNorm(c.dim, c.eps)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: torch.Tensor, cache: list[dict] | None = None) -> torch.Tensor:
        x = self.tok(idx)                                                   # (B, T, dim)
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache[i])
        return self.norm(x) @ self.tok.weight.T                             # tied: (B, T, vocab_size)

    def set_fused(self, fused: bool) -> "Llama":
        for block in self.blocks:
            block.attn.fused = fused
        return self


# %% [markdown]
# **Checking against `transformers`.** We build a `LlamaForCausalLM` from a small `LlamaConfig` (random weights,
# nothing downloaded), copy our weights into it and compare the logits. Names map one to one (`wq` →
# `q_proj`, `w1` → `gate_proj`, `w3` → `up_proj`, `w2` → `down_proj`, ...), with one exception: **RoPE pairs**.
# Our `rope` (like Meta's original Llama code and the RoPE paper) rotates neighbouring coordinates
# $(x_{2i}, x_{2i+1})$; Hugging Face's `apply_rotary_pos_emb` uses `rotate_half`, pairing $x_i$ with
# $x_{i+d/2}$, with the same frequency $\omega_i$. The two are the same rotation with the coordinates of each head
# listed in another order, so we convert by permuting the *output rows* of $W_q$ and $W_k$ within every head:
# the even coordinates first, then the odd ones. Scores are dot products of a query and a key permuted alike, so
# they are unchanged; values and everything else stay as they are. Without the permutation the logits differ.

# %%
from transformers import LlamaConfig, LlamaForCausalLM


def to_hf(model: Llama, attn_implementation: str = "eager") -> LlamaForCausalLM:
    c = model.cfg
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.hidden_dim, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads, max_position_embeddings=c.max_len,
        rms_norm_eps=c.eps, rope_theta=c.rope_base, tie_word_embeddings=True, attention_bias=False,
        mlp_bias=False, attn_implementation=attn_implementation)).eval()
    d = c.dim // c.n_heads
    halves = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])     # neighbours -> halves, per head

    def permute(w: torch.Tensor, heads: int) -> torch.Tensor:              # (heads·d, dim), rows per head
        return w.view(heads, d, -1)[:, halves].reshape_as(w)

    with torch.no_grad():
        hf.model.embed_tokens.weight.copy_(model.tok.weight)
        hf.model.norm.weight.copy_(model.norm.weight)
        for ours, theirs in zip(model.blocks, hf.model.layers):
            a, sa = ours.attn, theirs.self_attn
            sa.q_proj.weight.copy_(permute(a.wq.weight, c.n_heads))
            sa.k_proj.weight.copy_(permute(a.wk.weight, c.n_kv_heads))
            sa.v_proj.weight.copy_(a.wv.weight)
            sa.o_proj.weight.copy_(a.wo.weight)
            theirs.mlp.gate_proj.weight.copy_(ours.ffn.w1.weight)
            theirs.mlp.up_proj.weight.copy_(ours.ffn.w3.weight)
            theirs.mlp.down_proj.weight.copy_(ours.ffn.w2.weight)
            theirs.input_layernorm.weight.copy_(ours.attn_norm.weight)
            theirs.post_attention_layernorm.weight.copy_(ours.ffn_norm.weight)
    return hf


torch.manual_seed(cfg.seed)
check_cfg = LlamaCfg(vocab_size=bpe.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=172)
llama = Llama(check_cfg).eval()
with torch.no_grad():                                   # random norm scales, so a wrong norm cannot hide
    for m in llama.modules():
        if isinstance(m, RMSNorm):
            m.weight.normal_(1.0, 0.2)
hf = to_hf(llama)
ids = torch.tensor([bpe.encode(test_text[:400])[:48], bpe.encode(test_text[400:800])[:48]])   # (2, 48)
assert hf.lm_head.weight is hf.model.embed_tokens.weight                                      # tied
assert sum(p.numel() for p in hf.parameters()) == sum(p.numel() for p in llama.parameters())
with torch.no_grad():
    ours = llama(ids)
    theirs = hf(ids).logits
    fused = llama.set_fused(True)(ids)
    llama.set_fused(False)
    theirs_sdpa = to_hf(llama, "sdpa")(ids).logits
    hf_unpermuted = to_hf(llama)
    for theirs_layer, ours_block in zip(hf_unpermuted.model.layers, llama.blocks):   # no RoPE conversion
        theirs_layer.self_attn.q_proj.weight.copy_(ours_block.attn.wq.weight)
        theirs_layer.self_attn.k_proj.weight.copy_(ours_block.attn.wk.weight)
    wrong = hf_unpermuted(ids).logits
print(f"logits: ours vs LlamaForCausalLM (eager) {(ours - theirs).abs().max():.1e}, (sdpa) "
      f"{(ours - theirs_sdpa).abs().max():.1e}; our fused attention {(fused - ours).abs().max():.1e}; "
      f"without converting RoPE {(wrong - theirs).abs().max():.1e} (logits up to {theirs.abs().max():.2f})")
assert torch.allclose(ours, theirs, atol=1e-5) and torch.allclose(ours, theirs_sdpa, atol=1e-5)
assert torch.allclose(fused, ours, atol=1e-5)
assert (wrong - theirs).abs().max() > 100 * (ours - theirs).abs().max()

# %% [markdown]
# ## 3. Attention implementations
# Our `attention` materialises the (B, H, T, T) matrix of scores and keeps the softmax weights for the backward
# pass: memory grows like $T^2$. `F.scaled_dot_product_attention` (SDPA) computes the same thing with one of
# several kernels, chosen by `torch.nn.attention.sdpa_kernel`:
# - `MATH`: the formula in PyTorch operations, like ours;
# - `FLASH_ATTENTION`: processes the keys in blocks with a running softmax, never storing the T×T matrix; for the
#   backward pass it keeps only one number per query (the log-sum-exp) and recomputes the rest (CPU and GPU);
# - `EFFICIENT_ATTENTION`: the same idea in another kernel (GPU only).
#
# We time forward + backward of each available one and measure its memory in two ways: the bytes autograd saves
# for the backward pass besides the inputs q, k, v (`saved_tensors_hooks` sees every tensor saved; on any
# device), and on a GPU the peak memory above the inputs. A backend that cannot run here raises an error, which we report.

# %%
from torch.nn.attention import SDPBackend, sdpa_kernel


def sync() -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, repeats: int = 3) -> float:
    fn()                                                       # warm-up
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def saved_bytes(fn, inputs: tuple[torch.Tensor, ...]) -> int:
    """Bytes of the tensors autograd saves for the backward pass while fn() runs, each storage counted once, not
    counting the inputs (which exist anyway)."""
    storages: dict[int, int] = {}
    inputs = {t.untyped_storage().data_ptr() for t in inputs}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in inputs:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


att_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
B_att, H_att, d_att = cfg.pick(smoke=(1, 4, 64), small=(2, 8, 64), full=(2, 16, 128))
implementations = {"ours": None, "sdpa MATH": SDPBackend.MATH, "sdpa FLASH": SDPBackend.FLASH_ATTENTION,
                   "sdpa EFFICIENT": SDPBackend.EFFICIENT_ATTENTION}
results: dict[str, list] = {name: [] for name in implementations}
seq_lens = cfg.pick(smoke=(64, 128, 256), small=(256, 512, 1024, 2048), full=(512, 1024, 2048, 4096))
for T in seq_lens:
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    q, k, v = (torch.randn(B_att, H_att, T, d_att, device=device, dtype=att_dtype, generator=gen)
               .requires_grad_() for _ in range(3))
    with torch.no_grad():
        reference = attention(q, k, v)
    for name, backend in implementations.items():
        def run(backend=backend, q=q, k=k, v=v):
            if backend is None:
                return attention(q, k, v)
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        try:
            out = run()
        except RuntimeError:                                   # no kernel for this backend on this device
            results[name].append(None)
            continue
        tol = 5e-2 if att_dtype == torch.bfloat16 else 1e-4
        assert torch.allclose(out.float(), reference.float(), atol=tol), name
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run().sum().backward()
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = None
        seconds = best_time(lambda: run().sum().backward(), repeats=cfg.pick(smoke=1, small=3, full=3))
        results[name].append((T, seconds, saved_bytes(run, (q, k, v)), peak))

print(f"B={B_att}, H={H_att}, d={d_att}, {att_dtype}, causal, forward + backward on {device}")
print(f"{'implementation':>15} | {'T':>5} | {'ms':>8} | {'saved for backward (MiB)':>24} | {'peak (MiB)':>10}")
for name, rows in results.items():
    if all(r is None for r in rows):
        print(f"{name:>15} | not available on {device}")
        continue
    for T, seconds, saved, peak in (r for r in rows if r is not None):
        peak_text = "-" if peak is None else f"{peak / 2**20:.1f}"
        print(f"{name:>15} | {T:>5} | {1000 * seconds:>8.2f} | {saved / 2**20:>24.2f} | {peak_text:>10}")

# the claim: ours keeps T×T matrices for backward, flash keeps O(T)
ours_saved = [r[2] for r in results["ours"]]
assert ours_saved[-1] / ours_saved[0] > 0.5 * (seq_lens[-1] / seq_lens[0]) ** 2     # grows like T²
if results["sdpa FLASH"][-1] is not None:
    flash_saved = [r[2] for r in results["sdpa FLASH"]]
    assert flash_saved[-1] / flash_saved[0] < 1.5 * seq_lens[-1] / seq_lens[0]        # grows like T
    assert flash_saved[-1] < ours_saved[-1] / 4

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for name, rows in results.items():
    rows = [r for r in rows if r is not None]
    if rows:
        axes[0].plot([r[0] for r in rows], [1000 * r[1] for r in rows], "o-", label=name)
        axes[1].plot([r[0] for r in rows], [r[2] / 2**20 for r in rows], "o-", label=name)
axes[0].set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="ms (forward + backward)",
            title=f"time on {device}")
axes[1].set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="MiB", title="saved for backward")
for ax in axes:
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.close(fig)
fig

# %% [markdown]
# ## 4. The KV cache with grouped-query attention
# During generation the cache holds, per layer, the keys and the values of every past position:
# $2 \cdot L \cdot B \cdot T \cdot H_{kv} \cdot d$ numbers. With grouped-query attention it stores only the
# $H_{kv}$ key/value heads (the repetition to $H$ heads happens after the cache), so the cache shrinks by
# $H / H_{kv}$. We build the same model with 4, 2 and 1 key/value heads, generate, and measure the cache.
# Then we time greedy decoding with and without the cache and check the logits agree.

# %%
@torch.no_grad()
def generate(model: Llama, idx: torch.Tensor, n_new: int, use_cache: bool) -> tuple[torch.Tensor, list[dict]]:
    """Greedy decoding: idx (B, T) -> (B, T + n_new), and the cache (empty dicts without one)."""
    cache = [{} for _ in model.blocks]
    logits = model(idx, cache if use_cache else None)
    for step in range(n_new):
        next_id = logits[:, -1].argmax(dim=-1, keepdim=True)                # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)
        if step < n_new - 1:                                                # the last token is never fed back
            logits = model(next_id, cache) if use_cache else model(idx)
    return idx, cache


def cache_bytes(cache: list[dict]) -> int:
    return sum(t.nbytes for layer in cache for t in layer.values())


n_new = cfg.pick(smoke=32, small=96, full=192)
decode_cfg = cfg.pick(smoke=LlamaCfg(vocab_size=bpe.vocab_size, dim=64, n_layers=2, n_heads=4),
                      small=LlamaCfg(vocab_size=bpe.vocab_size, dim=128, n_layers=4, n_heads=8),
                      full=LlamaCfg(vocab_size=bpe.vocab_size, dim=512, n_layers=8, n_heads=8, hidden_dim=1376))
prompt = torch.tensor([bpe.encode(test_text[:300])[:16]] * 2, device=device)          # (B=2, 16)
print(f"{'n_kv_heads':>10} | {'parameters':>10} | {'cache bytes':>11} | {'formula':>9} | {'tokens/s cached':>15} | "
      f"{'tokens/s uncached':>17}")
for n_kv in (decode_cfg.n_heads, decode_cfg.n_heads // 2, 1):
    torch.manual_seed(cfg.seed)
    model = Llama(replace(decode_cfg, n_kv_heads=n_kv)).to(device).eval().set_fused(True)
    out, cache = generate(model, prompt, n_new, use_cache=True)
    B, T = out.shape[0], out.shape[1] - 1                    # the last token is sampled, never fed back
    formula = 2 * decode_cfg.n_layers * B * T * n_kv * (decode_cfg.dim // decode_cfg.n_heads) * 4   # float32
    assert cache_bytes(cache) == formula
    t_cached = best_time(lambda m=model: generate(m, prompt, n_new, use_cache=True), repeats=1)
    t_plain = best_time(lambda m=model: generate(m, prompt, n_new, use_cache=False), repeats=1)
    n_tokens = B * n_new
    print(f"{n_kv:>10} | {dlcourse.models.count_parameters(model):>10,} | {cache_bytes(cache):>11,} | "
          f"{formula:>9,} | {n_tokens / t_cached:>15,.0f} | {n_tokens / t_plain:>17,.0f}")

# the cache changes nothing: logits fed token by token through the cache equal one pass over everything
with torch.no_grad():
    cache = [{} for _ in model.blocks]
    stepwise = torch.cat([model(out[:, :16], cache)] + [model(out[:, t:t + 1], cache) for t in range(16, T)], dim=1)
    full_pass = model(out[:, :T])
print(f"logits through the cache vs one pass: largest difference {(stepwise - full_pass).abs().max():.1e}")
assert torch.allclose(stepwise, full_pass, atol=1e-4)

# %% [markdown]
# ## 5. A mixture of experts
# A mixture-of-experts (MoE) layer replaces the one feed-forward network by $E$ **experts** (here SwiGLUs) and a
# **router**, a linear layer giving each token a probability per expert. Each token goes to its **top-k** experts
# only, and their outputs are mixed with the router's probabilities (renormalised over the k chosen, as Mixtral
# does). Parameters grow with $E$; compute per token only with $k$.
#
# Two problems come with it. A router can send most tokens to a few experts, which then learn everything while
# the others starve: the **load-balancing loss** (Switch Transformer) $E \sum_e f_e P_e$, with $f_e$ the fraction
# of tokens sent to expert $e$ and $P_e$ the mean router probability of $e$, is smallest when both are uniform
# (then it equals $k$). And hardware wants fixed shapes: each expert processes at most
# $\text{capacity} = \lceil c \cdot k N / E \rceil$ tokens of a batch of $N$ (capacity factor $c$); the tokens
# beyond it are **dropped** by that expert (they pass on through the residual connection only).
#
# We check our loss against Mixtral's `load_balancing_loss_func` in `transformers`.

# %%
class MoE(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, n_experts: int, top_k: int, capacity_factor: float = 1.25) -> None:
        super().__init__()
        self.router = nn.Linear(dim, n_experts, bias=False)
        self.experts = nn.ModuleList([SwiGLU(dim, hidden_dim) for _ in range(n_experts)])
        self.top_k, self.capacity_factor = top_k, capacity_factor

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, dim) -> router logits (N, E), chosen experts (N, k), their mixing weights (N, k)."""
        logits = self.router(x)
        top_p, top_i = logits.softmax(dim=-1).topk(self.top_k, dim=-1)
        return logits, top_i, top_p / top_p.sum(dim=-1, keepdim=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        N, E = x.shape[0], len(self.experts)
        logits, top_i, top_w = self.route(x)
        capacity = math.ceil(self.capacity_factor * self.top_k * N / E)
        y = torch.zeros_like(x)
        kept = torch.zeros(E, dtype=torch.long)
        for e, expert in enumerate(self.experts):
            token, slot = (top_i == e).nonzero(as_tuple=True)         # tokens routed to e, in token order
            token, slot = token[:capacity], slot[:capacity]           # the first `capacity` ones fit
            kept[e] = len(token)
            if len(token):
                y.index_add_(0, token, top_w[token, slot, None] * expert(x[token]))
        routed = torch.bincount(top_i.flatten(), minlength=E)
        stats = {"logits": logits, "routed": routed, "kept": kept, "dropped": int((routed - kept).sum()),
                 "capacity": capacity}
        return y, stats


def load_balancing_loss(router_logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """E · Σ_e f_e · P_e, f_e = (tokens whose top-k include e) / N, P_e = mean router probability of e."""
    N, E = router_logits.shape
    probs = router_logits.softmax(dim=-1)
    chosen = probs.topk(top_k, dim=-1).indices
    f = torch.zeros(E).index_add_(0, chosen.flatten(), torch.ones(chosen.numel())) / N
    return E * (f * probs.mean(dim=0)).sum()


from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

gen = torch.Generator().manual_seed(cfg.seed)
for E, k in [(8, 2), (4, 1), (6, 3)]:
    router_logits = torch.randn(64, E, generator=gen) * 2
    ours_lb = load_balancing_loss(router_logits, k)
    theirs_lb = load_balancing_loss_func((router_logits,), num_experts=E, top_k=k)
    assert torch.allclose(ours_lb, theirs_lb, atol=1e-6), (E, k)
print(f"load-balancing loss equals Mixtral's (3 settings); random routing {ours_lb:.3f}")

# %% [markdown]
# To watch balancing at work we give the router a skewed input: tokens drawn around a few directions, so that at
# initialisation most of them pick the same experts. We then train only the router on the load-balancing loss
# and plot how many tokens each expert receives and how many are dropped at capacity factor 1.25.

# %%
torch.manual_seed(cfg.seed)
E, k, dim = 8, 2, 32
moe = MoE(dim, 64, n_experts=E, top_k=k)
centres = torch.randn(3, dim)
tokens = centres[torch.randint(0, 3, (512,))] + 0.3 * torch.randn(512, dim)      # (N, dim): 3 clusters
y, before = moe(tokens)
optimizer = torch.optim.Adam(moe.router.parameters(), lr=0.05)
for step in range(cfg.pick(smoke=60, small=200, full=200)):
    loss = load_balancing_loss(moe.router(tokens), k)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
with torch.no_grad():
    y, after = moe(tokens)
lb_before = load_balancing_loss(before["logits"], k).item()
lb_after = load_balancing_loss(after["logits"], k).item()
print(f"capacity {after['capacity']} tokens per expert; dropped {before['dropped']} of {k * 512} assignments at "
      f"initialisation (loss {lb_before:.2f}), {after['dropped']} after balancing (loss {lb_after:.2f}; ideal {k})")
assert lb_after < lb_before and after["dropped"] < before["dropped"]

fig, ax = plt.subplots(figsize=(7, 3))
ax.bar(torch.arange(E) - 0.2, before["routed"], width=0.4, label="initialisation")
ax.bar(torch.arange(E) + 0.2, after["routed"], width=0.4, label="after the balancing loss")
ax.axhline(after["capacity"], color="k", ls="--", lw=1, label="capacity")
ax.set(xlabel="expert", ylabel="tokens routed", title=f"expert utilisation, top-{k} of {E}")
ax.legend(fontsize=8)
fig.tight_layout()
plt.close(fig)
fig

# %% [markdown]
# ## 6. Training: throughput, FLOPs and a scaling sweep
# Training a model of $N$ parameters (those in matrix products) on $D$ tokens costs about $6ND$ floating-point
# operations: 2 per parameter and token for the forward pass (a multiply and an add) and 4 for the backward pass
# (the gradients with respect to the inputs and to the weights). Attention's own products add
# $\approx 12\, L\, T\, d_{model}$ per token (6 for $QK^\top$ and 6 for the weighted values), small while
# $T \ll d_{model}$. We count the FLOPs of one training step with `FlopCounterMode` and compare.
#
# **Model FLOP utilisation (MFU)** is the achieved FLOP/s ($6N$ · tokens/s) divided by the device's peak. On a GPU
# we use the datasheet's dense bfloat16 peak for known cards; on a CPU we *measure* a peak: the FLOP/s of a large
# float32 matrix product.

# %%
from torch.utils.flop_counter import FlopCounterMode

seq_len = cfg.pick(smoke=64, small=128, full=256)
train_ids = torch.tensor(bpe.encode(train_text[:cfg.pick(smoke=40_000, small=400_000, full=2_000_000)]))
val_ids = torch.tensor(test_ids)
print(f"training tokens: {len(train_ids):,}; validation tokens: {len(val_ids):,}")


def batch(data: torch.Tensor, batch_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=gen)
    x = torch.stack([data[s:s + seq_len] for s in starts])
    y = torch.stack([data[s + 1:s + seq_len + 1] for s in starts])
    return x.to(device), y.to(device)


def matmul_params(model: Llama) -> int:
    """Parameters used in matrix products: every Linear, and the tied embedding once (as the output layer)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)) + model.tok.weight.numel()


def loss_of(model: Llama, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())


torch.manual_seed(cfg.seed)
probe = Llama(LlamaCfg(vocab_size=bpe.vocab_size, dim=64, n_layers=2, n_heads=4)).train()   # our attention
x, y = batch(train_ids, 4, torch.Generator().manual_seed(0))
x, y = x.cpu(), y.cpu()
with FlopCounterMode(display=False) as counter:
    loss_of(probe, x, y).backward()
by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
n_tokens = x.numel()
matmul_flops = by_op.get("aten.mm", 0) + by_op.get("aten.addmm", 0)
attention_flops = by_op.get("aten.bmm", 0)
print(f"counted: {matmul_flops:,} FLOPs in weight products, 6·N·D = {6 * matmul_params(probe) * n_tokens:,}; "
      f"attention {attention_flops:,} (12·L·T·d·D = {12 * 2 * seq_len * 64 * n_tokens:,})")
assert matmul_flops == 6 * matmul_params(probe) * n_tokens
assert attention_flops == 12 * probe.cfg.n_layers * seq_len * probe.cfg.dim * n_tokens

# %%
# dense (no sparsity) bfloat16 tensor-core peaks from the datasheets (SXM versions; T4: float16)
STATED_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
                    "T4": 65e12}


def peak_flops() -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name()
        for key, flops in STATED_PEAK_BF16.items():
            if key in name:
                return flops, f"stated dense bf16 peak of {name}"
    n = 1024 if device.type == "cpu" else 8192
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds = best_time(lambda: a @ b, repeats=5)
    return 2 * n**3 / seconds, f"measured: a {n}×{n} {dtype} matrix product on {device}"


peak, peak_source = peak_flops()
amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def train(model: Llama, steps: int, batch_size: int, lr: float = 3e-3) -> tuple[float, float]:
    """Train with AdamW and a cosine schedule; return (validation loss, tokens per second of the training)."""
    model.to(device).train().set_fused(True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = batch(train_ids, batch_size, gen)
        with amp:
            loss = loss_of(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    sync()
    seconds = time.perf_counter() - t0
    model.eval()
    val_gen = torch.Generator().manual_seed(1)
    with torch.no_grad(), amp:
        val = sum(loss_of(model, *batch(val_ids, batch_size, val_gen)).item() for _ in range(4)) / 4
    return val, steps * batch_size * seq_len / seconds


# %% [markdown]
# **The scaling sweep.** Models of 4–5 widths train on the same number of tokens; we plot the validation loss
# against $N$ and fit a power law $L = a\,N^{-\alpha}$ (a line in log–log). At this token budget the larger models
# are undertrained, so the curve bends; real scaling laws also fit an irreducible loss and vary the tokens too.

# %%
widths = cfg.pick(smoke=(16, 32, 48, 64), small=(32, 64, 96, 128, 192), full=(64, 128, 256, 384, 512))
steps, batch_size = cfg.pick(smoke=(40, 8), small=(300, 16), full=(1500, 32))
sweep = []
for width in widths:
    torch.manual_seed(cfg.seed)
    c = LlamaCfg(vocab_size=bpe.vocab_size, dim=width, n_layers=2, n_heads=max(1, width // 32) * 2,
                 n_kv_heads=max(1, width // 32), hidden_dim=int(8 / 3 * width) // 8 * 8, max_len=seq_len)
    model = Llama(c)
    val, tokens_per_s = train(model, steps, batch_size)
    N = matmul_params(model)
    sweep.append((N, val, tokens_per_s))
    print(f"dim {width:>3}: N = {N:>9,}, validation loss {val:.3f}, {tokens_per_s:>9,.0f} tokens/s, "
          f"MFU {6 * N * tokens_per_s / peak:.1%}")
print(f"peak: {peak / 1e12:.2f} TFLOP/s ({peak_source}); initial loss ln V = {math.log(bpe.vocab_size):.2f}")
Ns = torch.tensor([s[0] for s in sweep], dtype=torch.float64)
losses = torch.tensor([s[1] for s in sweep], dtype=torch.float64)
slope, intercept = torch.linalg.lstsq(torch.stack([Ns.log(), torch.ones_like(Ns)], dim=1),
                                      losses.log()[:, None]).solution.flatten().tolist()
print(f"power-law fit: L ≈ {math.exp(intercept):.2f} · N^({slope:.3f})")
assert all(v < math.log(bpe.vocab_size) - 0.4 for v in losses)          # every model learned something

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(Ns, losses, "o", label="measured")
ax.plot(Ns, math.exp(intercept) * Ns**slope, "--", label=f"fit: N^{slope:.3f}")
ax.set(xscale="log", yscale="log", xlabel="parameters N (in matrix products)", ylabel="validation loss",
       title=f"{steps * batch_size * seq_len:,} training tokens per model")
ax.legend()
fig.tight_layout()
plt.close(fig)
fig

# %% [markdown]
# ## Summary
# - Byte-level BPE encodes any text exactly; its merges, learned on Python source, cut the number of tokens by the
#   factor measured in section 1, and `tokenizers` trained on the same chunks learns the same merges once ties
#   are broken in the same order of bytes.
# - A Llama block is a pre-norm block with RMSNorm, RoPE on queries and keys, grouped-query attention, a SwiGLU
#   feed-forward, no biases and tied embeddings; with the RoPE pairing converted (a permutation of $W_q$ and
#   $W_k$ rows per head), ours gives `LlamaForCausalLM`'s logits.
# - The flash kernel keeps $O(T)$ numbers for the backward pass where the formula keeps $O(T^2)$; the times
#   measured above show what that buys on this device.
# - The KV cache holds $2 L B T H_{kv} d$ numbers: grouped-query attention divides it by $H/H_{kv}$, measured.
# - Mixture-of-experts layers route each token to k experts; a load-balancing loss and a capacity limit keep the
#   experts evenly used and the shapes fixed, at the price of dropped tokens.
# - Training costs $6ND$ FLOPs (counted exactly for the weight products); MFU compares the achieved rate with the
#   device's peak, and the sweep gives a first, rough scaling law.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **Faster BPE training.** `train_bpe` recounts every pair after each merge. Keep the pair counts and update
#    only the words that contain the merged pair; check the merges stay identical and time both.
# 2. **Special tokens.** Add an `<|endoftext|>` token that BPE never splits or merges, and separate the corpus's
#    files with it.
# 3. **Generation with `transformers`.** Load our trained weights into `LlamaForCausalLM` with `to_hf` and compare
#    `hf.generate(..., do_sample=False)` with our `generate`.
# 4. **A MoE language model.** Replace the SwiGLU of every block by `MoE` (4 experts, top-2), add the balancing
#    loss with a small coefficient to the training loss, and compare validation loss at equal compute per token.
# 5. **Scaling.** Vary the number of training tokens as well as N, and fit $L = E + A N^{-\alpha} + B D^{-\beta}$.
#    Which size is best for a fixed budget of $6ND$ FLOPs?
