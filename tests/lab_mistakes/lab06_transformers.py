"""Plausible mistakes in lab 06 and the exact total each must score (out of 12), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
A test cell's points are split over its checks by weight, so a mistake can lose part of a cell's points.
"""

UPPER_TRIANGLE_MASKS = """\
def causal_mask(T):
    return torch.ones(T, T, dtype=torch.bool).triu()  # the future instead of the past


def padding_mask(lengths, T):
    positions = torch.arange(T, device=lengths.device)
    return (positions < lengths[:, None])[:, None, None, :]"""

UNSCALED_ATTENTION = """\
def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)  # forgot to divide by sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights"""

HEADS_VIEWED_WITHOUT_TRANSPOSE = """\
class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x, mask=None):
        B, T, D = x.shape
        H, d = self.num_heads, self.head_dim
        q = self.q_proj(x).view(B, H, T, d)  # mixes positions and heads (needs a view, then a transpose)
        k = self.k_proj(x).view(B, H, T, d)
        v = self.v_proj(x).view(B, H, T, d)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(y.reshape(B, T, D))"""

ROPE_ROTATE_HALF = """\
def apply_rope(x, start=0, base=10000.0):
    T, d = x.shape[-2:]
    p = torch.arange(start, start + T, dtype=torch.float32)
    omega = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    angle = p[:, None] * omega
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]  # pairs (x[i], x[i + d/2]), not neighbours
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)"""

TEMPERATURE_ON_PROBABILITIES = """\
def sample_next(logits, temperature=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(dim=-1)
    if top_k is not None:
        kth_largest = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = logits.softmax(dim=-1) / temperature  # multinomial renormalises: the temperature does nothing
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)"""

TOP_K_POSITIONS_NOT_IDS = """\
def sample_next(logits, temperature=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        logits = logits.topk(top_k, dim=-1).values  # keeps the values but loses which tokens they were
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)"""

ATTENTION_PER_HEAD_ONLY = """\
def mha_flops(batch_size, seq_len, d_model, num_heads):
    d = d_model // num_heads
    projections = 8 * batch_size * seq_len * d_model * d_model
    return projections + 4 * batch_size * seq_len * seq_len * d  # one head's products, not all H heads'"""

PROJECTIONS_ONLY = """\
def mha_flops(batch_size, seq_len, d_model, num_heads):
    return 8 * batch_size * seq_len * d_model * d_model  # the four Linear layers; attention's products forgotten"""

MISTAKES = [
    # masks-tests: checks weigh 1 + 1 visible, 1 + 1 + 1 + 1 hidden = 6. The upper triangle fails causal_mask(4),
    # "sizes 1, 2 and 7", "equals is_causal=True" and "combine to (B, 1, T, T)"; both padding checks pass
    # -> 2 * 2/6.
    # attention-tests: 1 + 1 + 2 + 1 + 1 + 1 visible, 1 + 1 + 1 + 1 + 1 hidden = 12. Without 1/sqrt(d) the
    # shapes, the row sums, the zero weights on masked keys and "inputs unchanged" still pass (4 of 12); every
    # comparison of values with F.scaled_dot_product_attention fails -> 2 * 4/12.
    ({"masks-answer": UPPER_TRIANGLE_MASKS, "attention-answer": UNSCALED_ATTENTION},
     12 - 2 * (1 - 2 / 6) - 2 * (1 - 4 / 12)),
    # mha-tests: 1 + 2 + 1 visible, 2 + 1 + 1 hidden = 8. Viewing (B, T, D) as (B, H, T, d) keeps the output
    # shape and the gradients (2 of 8) but every comparison with nn.MultiheadAttention fails -> 2 * 2/8.
    ({"mha-answer": HEADS_VIEWED_WITHOUT_TRANSPOSE}, 12 - 2 * (1 - 2 / 8)),
    # rope-tests: 1 + 1 + 1 + 1 + 2 + 1 visible, 1 + 1 + 1 + 1 + 1 hidden = 12. Rotating the pairs
    # (x[i], x[i + d/2]) is still a rotation: position 0, shape and dtype, lengths and "input unchanged" pass
    # (4 of 12), every value check fails -> 2 * 4/12.
    # sampling-tests: 1 + 1 + 5 visible, 1 + 1 + 1 + 1 + 1 hidden = 12. Dividing the probabilities by the
    # temperature does nothing after multinomial renormalises: the checks at temperature 1 (greedy, shape,
    # two frequency checks, greedy/top-1, independent rows, the generator, logits unchanged: 8 of 12) pass,
    # those at temperatures 0.5, 2, 0.7 and 1.3 fail -> 2 * 8/12.
    ({"rope-answer": ROPE_ROTATE_HALF, "sampling-answer": TEMPERATURE_ON_PROBABILITIES},
     12 - 2 * (1 - 4 / 12) - 2 * (1 - 8 / 12)),
    # sampling-tests: returning positions within the top k fails every check that filters (top_k 2 and 3,
    # top_k=1 is the argmax, top_k = V): 4 of 12 -> 2 * 8/12.
    ({"sampling-answer": TOP_K_POSITIONS_NOT_IDS}, 12 - 2 * (1 - 8 / 12)),
    # flops-tests: 2 visible + 3 hidden shapes, weight 1 each = 5. Counting one head's products is right only for
    # H = 1, the visible (1, 128, 32, 1): 1 of 5 -> 2 * 1/5.
    ({"flops-answer": ATTENTION_PER_HEAD_ONLY}, 12 - 2 * (1 - 1 / 5)),
    # flops-tests: without attention's products every shape is off (even T = 1 has 4·B·D of them): 0 of 5.
    ({"flops-answer": PROJECTIONS_ONLY}, 12 - 2),
]
