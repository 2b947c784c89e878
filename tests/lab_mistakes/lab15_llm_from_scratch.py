"""Plausible mistakes in lab 15 and the exact total each must score (out of 14), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
A test cell's points are split over its checks by weight (all 1 here), so a mistake can lose part of a cell's points.
"""

TIES_BY_FIRST_SEEN = """\
def train_bpe(text, num_merges):
    chunks = Counter(chunk.encode("utf-8") for chunk in pretokenize(text))
    words, counts = [list(chunk) for chunk in chunks], list(chunks.values())
    merges = {}
    for new_id in range(256, 256 + num_merges):
        pairs = Counter()
        for word, n in zip(words, counts):
            for pair in pairwise(word):
                pairs[pair] += n
        if not pairs:
            break
        best = pairs.most_common(1)[0][0]  # ties: the pair counted first, not the smallest
        merges[best] = new_id
        words = [merge_pair(word, best, new_id) for word in words]
    return merges"""

ENCODE_LEFTMOST_FIRST = """\
def encode(text, merges):
    ids_out = []
    for chunk in pretokenize(text):
        ids = list(chunk.encode("utf-8"))
        merged = True
        while merged:
            merged = False
            for i in range(len(ids) - 1):  # the leftmost mergeable pair, not the one learned first
                if (ids[i], ids[i + 1]) in merges:
                    ids = merge_pair(ids, (ids[i], ids[i + 1]), merges[ids[i], ids[i + 1]])
                    merged = True
                    break
        ids_out += ids
    return ids_out"""

RMS_NORM_IN_INPUT_DTYPE = """\
def rms_norm(x, weight, eps=1e-6):
    return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # bfloat16 stays bfloat16 throughout"""

ROPE_NEIGHBOUR_PAIRS = """\
def apply_rope(x, positions, base=10000.0):
    d = x.shape[-1]
    omega = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    angle = positions.float()[:, None] * omega
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]  # notebook 15's convention: neighbours, not halves
    return torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1).flatten(-2)"""

GQA_REPEAT_NOT_INTERLEAVE = """\
def gqa_attention(q, k, v):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)  # heads 0, 1, 0, 1 instead of 0, 0, 1, 1
    T = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1) @ v"""

SILU_ON_THE_UP_BRANCH = """\
def swiglu(x, w_gate, w_up, w_down):
    return F.linear(F.linear(x, w_gate) * F.silu(F.linear(x, w_up)), w_down)  # SiLU on the wrong branch"""

KV_BYTES_ALWAYS_FLOAT32 = """\
def kv_cache_bytes(num_layers, batch_size, seq_len, num_kv_heads, head_dim, dtype):
    return 2 * num_layers * batch_size * seq_len * num_kv_heads * head_dim * 4  # 4 bytes whatever the dtype"""

KV_BYTES_QUERY_HEADS = """\
def kv_cache_bytes(num_layers, batch_size, seq_len, num_kv_heads, head_dim, dtype):
    num_heads = 2 * num_kv_heads  # caches every query head's keys and values
    return 2 * num_layers * batch_size * seq_len * num_heads * head_dim * dtype.itemsize"""

MISTAKES = [
    # bpe-train-tests: 3 visible + 3 hidden checks = 6. most_common breaks ties by the pair counted first: every text
    # with a tie fails ('aaabdaaabac' ties (a, b) with ((aa), a) after the first merge); only 'ab ab', which has
    # none, passes -> 2 * 1/6.
    # bpe-encode-tests: 2 visible + 3 hidden = 5. Merging the leftmost mergeable pair passes the non-ASCII line
    # (few merges apply) and the empty text, and fails the Python line, the held-out source and 'abc' with bc
    # learned before ab -> 2 * 2/5.
    ({"bpe-train-answer": TIES_BY_FIRST_SEEN, "bpe-encode-answer": ENCODE_LEFTMOST_FIRST},
     14 - 2 * (1 - 1 / 6) - 2 * (1 - 2 / 5)),
    # rmsnorm-tests: 2 visible + 3 hidden = 5. Computing in the input's dtype differs only for bfloat16 input -> 2 * 4/5.
    # rope-tests: 2 + 3 = 5. Rotating neighbours instead of halves fails every comparison with
    # apply_rotary_pos_emb; the offset check is still a property of the wrong rotation, but the grader compares its
    # value with the reference run's (the rotate_half score), so it fails too -> 0.
    ({"rmsnorm-answer": RMS_NORM_IN_INPUT_DTYPE, "rope-answer": ROPE_NEIGHBOUR_PAIRS}, 14 - 2 * (1 - 4 / 5) - 2),
    # gqa-tests: 2 + 3 = 5. k.repeat tiles the heads (0, 1, 0, 1): right only where H_kv = 1 (multi-query) or
    # H_kv = H -> 2 * 2/5.
    ({"gqa-answer": GQA_REPEAT_NOT_INTERLEAVE}, 14 - 2 * (1 - 2 / 5)),
    # swiglu-tests: 1 + 2 = 3, SiLU on the up branch fails all -> 0.
    # kv-tests: 2 + 3 = 5. Always 4 bytes per number is right for the two float32 sizes only -> 2 * 2/5.
    ({"swiglu-answer": SILU_ON_THE_UP_BRANCH, "kv-answer": KV_BYTES_ALWAYS_FLOAT32}, 14 - 2 - 2 * (1 - 2 / 5)),
    # kv-tests: caching every query head doubles every size -> 0 of 5.
    ({"kv-answer": KV_BYTES_QUERY_HEADS}, 14 - 2),
]
