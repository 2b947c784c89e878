# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 14: sequence models
#
# This lab goes with notebook 14. You write the pieces of recurrent sequence models yourself, and PyTorch checks
# each one.
#
# **Learning goals.** After this lab you can
# - write an LSTM cell from matrix products, in PyTorch's gate order, and match `nn.LSTMCell`;
# - average a loss over the real positions of a padded batch only;
# - write the attention step of a Luong encoder-decoder, and match `F.scaled_dot_product_attention`;
# - write beam search, and check it against greedy decoding and exhaustive search;
# - predict the number of parameters of a recurrent layer before counting it.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab14_sequence_models.ipynb` tells you what passes.
# Each exercise is graded on its own: a later one never calls your answer to an earlier one.
#
# **Time.** About 60–80 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 10 in all: LSTM cell 2, masked loss 2, attention step 2, beam search 2, predicting parameters 2.
#
# **Shapes.** B batch, T time steps, I input size, H hidden size, V vocabulary size, S source positions.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import itertools

import torch
import torch.nn.functional as F
from torch import nn

import dlcourse
from dlcourse.grading.checks import check_close, check_equal, check_prediction, forbid

cfg = dlcourse.setup(seed=0)
# Tests of from-scratch code switch PyTorch's built-in versions off while they call yours.
RECURRENT_FUNCTIONS = ((torch, "lstm_cell"), (torch, "lstm"), (nn.LSTMCell, "forward"), (nn.LSTM, "forward"))
NO_BUILTIN_LSTM = "write the cell from matrix products: PyTorch's LSTM is switched off while the tests call yours"
ATTENTION_FUNCTIONS = ((F, "scaled_dot_product_attention"),)
NO_BUILTIN_ATTENTION = ("write attention from tensor operations: F.scaled_dot_product_attention is switched off "
                        "while the tests call your function")


def _gradient(f, x):
    """The gradient of the number f(x) with respect to x, by autograd."""
    x = x.detach().clone().requires_grad_(True)
    return torch.autograd.grad(f(x), x)[0]


# %% [markdown] nbgrader={"grade": false, "grade_id": "lstm-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: the LSTM cell (2 points)
#
# Write `lstm_cell(x, state, W_ih, W_hh, b_ih, b_hh)` for one time step: `x` is `(B, I)`, `state` the pair
# `(h, c)` of `(B, H)` tensors, `W_ih` is `(4H, I)`, `W_hh` is `(4H, H)`, the biases `(4H,)`. It returns the new
# pair `(h, c)` and must equal `nn.LSTMCell` holding the same weights (`weight_ih`, `weight_hh`, `bias_ih`,
# `bias_hh`). PyTorch stacks the four gates in the rows in the order **input $i$, forget $f$, candidate $g$,
# output $o$**:
#
# $$c' = \sigma(f) \odot c + \sigma(i) \odot \tanh(g), \qquad h' = \sigma(o) \odot \tanh(c')$$
#
# where $(i, f, g, o)$ are the four row blocks of $W_{ih} x + b_{ih} + W_{hh} h + b_{hh}$. Stay differentiable
# and keep the inputs' dtype. PyTorch's LSTM functions are switched off while the tests call yours.

# %% nbgrader={"grade": false, "grade_id": "lstm-answer", "locked": false, "schema_version": 3, "solution": true}
def lstm_cell(x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], W_ih: torch.Tensor, W_hh: torch.Tensor,
              b_ih: torch.Tensor, b_hh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step: x (B, I), state (h, c) each (B, H) -> new (h, c), each (B, H)."""
    ### BEGIN SOLUTION
    h, c = state
    i, f, g, o = (x @ W_ih.T + b_ih + h @ W_hh.T + b_hh).chunk(4, dim=-1)   # each (B, H)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "lstm-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _lstm_case(seed, B, I, H, dtype=torch.float32):
    """A seeded nn.LSTMCell, an input and a state; returns (cell, x, (h, c))."""
    torch.manual_seed(seed)
    cell = nn.LSTMCell(I, H).to(dtype)
    g = torch.Generator().manual_seed(seed)
    x, h, c = (torch.randn(B, n, generator=g, dtype=dtype) for n in (I, H, H))
    return cell, x, (h, c)


def _ours(cell, x, state):
    with forbid(RECURRENT_FUNCTIONS, NO_BUILTIN_LSTM):
        return lstm_cell(x, state, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)


_cell, _x, _state = _lstm_case(0, 3, 5, 4)
_result = _ours(_cell, _x, _state)
assert isinstance(_result, tuple) and len(_result) == 2, "lstm_cell should return the pair (h, c)"
with torch.no_grad():
    _expected = _cell(_x, _state)
check_equal("shapes of h and c: (B, H)", [tuple(t.shape) for t in _result], expected=[(3, 4), (3, 4)],
            hint="the four gates are the four row blocks of a (B, 4H) pre-activation: chunk(4, dim=-1)")
check_close("h and c equal nn.LSTMCell's", [t.detach() for t in _result], expected=list(_expected), atol=1e-6,
            weight=2, hint="PyTorch's gate order is i, f, g, o; c' = σ(f)·c + σ(i)·tanh(g), h' = σ(o)·tanh(c')")
print("lstm_cell: visible tests passed")

### BEGIN HIDDEN TESTS
_cell, _x, _state = _lstm_case(1, 1, 7, 6, dtype=torch.float64)
_result = _ours(_cell, _x, _state)
with torch.no_grad():
    _expected = _cell(_x, _state)
check_close("float64, batch of 1 (dtype and values)", [str(_result[1].dtype)] + [t.detach() for t in _result],
            expected=["torch.float64"] + list(_expected), atol=1e-12,
            hint="keep the inputs' dtype; the gates are i, f, g, o")
_cell, _x, _state = _lstm_case(2, 4, 3, 5, dtype=torch.float64)
_w = torch.arange(5.0, dtype=torch.float64)
check_close("the gradients with respect to x and to the previous c",
            [_gradient(lambda x: (_ours(_cell, x, _state)[0] * _w).sum(), _x),
             _gradient(lambda c: (_ours(_cell, _x, (_state[0], c))[1] * _w).sum(), _state[1])],
            expected=[_gradient(lambda x: (_cell(x, _state)[0] * _w).sum(), _x),
                      _gradient(lambda c: (_cell(_x, (_state[0], c))[1] * _w).sum(), _state[1])], atol=1e-10,
            hint="use differentiable tensor operations only (no .detach(), .item() or in-place changes of inputs)")
# ten steps in a row
_cell, _x, _state = _lstm_case(3, 2, 4, 3)
_xs = torch.randn(10, 2, 4, generator=torch.Generator().manual_seed(3))
_s_ours, _s_ref = _state, _state
with torch.no_grad():
    for _t in range(10):
        _s_ours = _ours(_cell, _xs[_t], _s_ours)
        _s_ref = _cell(_xs[_t], _s_ref)
check_close("ten steps in a row", list(_s_ours), expected=list(_s_ref), atol=1e-5,
            hint="return (h, c) in that order, so that the output can be fed back as the next state")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "masked-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: a loss over the real positions only (2 points)
#
# A batch of `B` sequences of different lengths is padded at the end to `T` positions. The model gives logits
# `(B, T, V)`; the targets `(B, T)` hold anything at padding positions (the ids there mean nothing). Write
# `masked_cross_entropy(logits, targets, lengths)` returning the **mean cross-entropy over the real positions**
# `t < lengths[b]`: every real token counts equally, wherever it is. The padding positions, whatever their logits
# and targets hold (any finite values), must change neither the loss nor its gradient. `F.cross_entropy` is
# allowed.

# %% nbgrader={"grade": false, "grade_id": "masked-answer", "locked": false, "schema_version": 3, "solution": true}
def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over real positions. logits (B, T, V), targets (B, T) int64, lengths (B,) -> scalar."""
    ### BEGIN SOLUTION
    mask = torch.arange(targets.shape[1], device=lengths.device) < lengths[:, None]         # (B, T)
    safe_targets = targets.masked_fill(~mask, 0)                     # padding ids may be out of range
    losses = F.cross_entropy(logits.transpose(1, 2), safe_targets, reduction="none")     # (B, T)
    return (losses * mask).sum() / mask.sum()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "masked-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _masked_case(seed, lengths, T, V, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    logits = torch.randn(len(lengths), T, V, generator=g, dtype=dtype)
    targets = torch.randint(0, V, (len(lengths), T), generator=g)
    mask = torch.arange(T) < lengths[:, None]
    reference = F.cross_entropy(logits.transpose(1, 2), targets.masked_fill(~mask, -100), ignore_index=-100)
    return logits, targets, lengths, mask, reference


_logits, _targets, _lengths, _mask, _reference = _masked_case(0, [5, 2, 7, 3], 7, 6)
_loss = masked_cross_entropy(_logits, _targets, _lengths)
assert isinstance(_loss, torch.Tensor), f"masked_cross_entropy should return a tensor, not {type(_loss).__name__}"
check_close("lengths [5, 2, 7, 3]: equals F.cross_entropy with the padding ignored", _loss, expected=_reference,
            atol=1e-6, weight=2,
            hint="sum the per-position losses over the real positions and divide by the number of real positions "
                 "(not by B·T, and not a mean of per-sequence means)")
_garbage = _logits.masked_fill(~_mask[..., None], 50.0)
check_close("garbage in the padding's logits changes nothing",
            masked_cross_entropy(_garbage, _targets.masked_fill(~_mask, 1), _lengths), expected=_reference,
            atol=1e-6, hint="the padding positions must get weight exactly 0")
print("masked_cross_entropy: visible tests passed")

### BEGIN HIDDEN TESTS
_logits, _targets, _lengths, _mask, _reference = _masked_case(1, [1, 9, 4], 9, 11, dtype=torch.float64)
check_close("float64, lengths [1, 9, 4]", masked_cross_entropy(_logits, _targets, _lengths), expected=_reference,
            atol=1e-12, hint="the mean over real positions only")
_logits, _targets, _lengths, _mask, _reference = _masked_case(2, [3, 3], 5, 4, dtype=torch.float64)
_grad = _gradient(lambda z: masked_cross_entropy(z, _targets, _lengths), _logits)
check_close("the gradient: the reference's, and exactly 0 on the padding",
            [_grad, _grad[~_mask].abs().max()],
            expected=[_gradient(lambda z: F.cross_entropy(z.transpose(1, 2), _targets.masked_fill(~_mask, -100),
                                                          ignore_index=-100), _logits), torch.tensor(0.0,
                                                                                                 dtype=torch.float64)],
            atol=1e-12, hint="multiply by the mask (or select the real positions) before averaging")
_logits, _targets, _lengths, _mask, _reference = _masked_case(3, [6, 1], 6, 5)
check_close("padding targets outside the vocabulary (e.g. -1) change nothing",
            masked_cross_entropy(_logits, _targets.masked_fill(~_mask, -1), _lengths), expected=_reference,
            atol=1e-6, hint="replace the padding's targets by a valid id (e.g. 0) before calling F.cross_entropy, "
                            "then mask its loss out")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "attention-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: the attention step of an encoder-decoder (2 points)
#
# At each output step the decoder of notebook 14 attends to the encoder's vectors $e_1, \dots, e_S$ (Luong's
# "general" score): with decoder state $h$ the score of source position $s$ is $h^\top W_a e_s$, the weights are
# the softmax of the scores over the **real** source positions (`mask` is `True` there; padded positions get
# weight exactly 0), and the context is $\sum_s w_s e_s$.
#
# Write `luong_attention(h, W_a, enc, mask)` for `h` `(B, H_dec)`, `W_a` `(H_dec, H_enc)`, `enc` `(B, S, H_enc)`
# and `mask` `(B, S)` bool, returning `(context (B, H_enc), weights (B, S))`. No scaling by $\sqrt{d}$ here.
# `F.scaled_dot_product_attention` is switched off while the tests call yours (they use it with `scale=1.0` as
# the reference).

# %% nbgrader={"grade": false, "grade_id": "attention-answer", "locked": false, "schema_version": 3, "solution": true}
def luong_attention(h: torch.Tensor, W_a: torch.Tensor, enc: torch.Tensor, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """h (B, H_dec), W_a (H_dec, H_enc), enc (B, S, H_enc), mask (B, S) bool -> (context (B, H_enc), weights (B, S))."""
    ### BEGIN SOLUTION
    scores = ((h @ W_a)[:, None, :] * enc).sum(dim=-1)                 # (B, S): h^T W_a e_s
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return (weights[:, :, None] * enc).sum(dim=1), weights
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "attention-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _attention_case(seed, lengths, H_dec, H_enc, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    S = int(lengths.max())
    h = torch.randn(len(lengths), H_dec, generator=g, dtype=dtype)
    W_a = torch.randn(H_dec, H_enc, generator=g, dtype=dtype) / H_enc ** 0.5
    enc = torch.randn(len(lengths), S, H_enc, generator=g, dtype=dtype)
    mask = torch.arange(S) < lengths[:, None]
    return h, W_a, enc, mask


def _reference_attention(h, W_a, enc, mask):
    return F.scaled_dot_product_attention((h @ W_a)[:, None, :], enc, enc, attn_mask=mask[:, None, :],
                                          scale=1.0)[:, 0]


def _our_attention(*args):
    with forbid(ATTENTION_FUNCTIONS, NO_BUILTIN_ATTENTION):
        return luong_attention(*args)


_case = _attention_case(0, [6, 6, 6], 5, 8)
_result = _our_attention(*_case)
assert isinstance(_result, tuple) and len(_result) == 2, "luong_attention should return (context, weights)"
check_equal("shapes: context (B, H_enc), weights (B, S)", [tuple(t.shape) for t in _result],
            expected=[(3, 8), (3, 6)], hint="scores (B, S), one per source position; context a weighted sum")
check_close("no padding: context equals scaled_dot_product_attention(scale=1)", _result[0],
            expected=_reference_attention(*_case), atol=1e-5,
            hint="score_s = h^T W_a e_s: (h @ W_a) dotted with each enc[:, s]; softmax over s; no 1/sqrt(d)")
_case = _attention_case(1, [6, 2, 4], 5, 8)
_context, _weights = _our_attention(*_case)
check_close("padded sources: context", _context, expected=_reference_attention(*_case), atol=1e-5,
            hint="set the scores of masked (False) positions to -inf before the softmax")
check_equal("padded sources: weights exactly 0 on the padding", _weights[~_case[3]], expected=torch.zeros(6),
            hint="fill masked scores with float('-inf') so their weight is exactly 0")
print("luong_attention: visible tests passed")

### BEGIN HIDDEN TESTS
_case = _attention_case(2, [3, 9, 1, 5], 7, 4, dtype=torch.float64)
_context, _weights = _our_attention(*_case)
check_close("float64, H_dec != H_enc, a source of length 1 (context, weights summing to 1)",
            [str(_context.dtype), _context, _weights.sum(dim=-1)],
            expected=["torch.float64", _reference_attention(*_case), torch.ones(4, dtype=torch.float64)],
            atol=1e-10, hint="keep the dtype; h (B, H_dec) @ W_a (H_dec, H_enc) gives the query for the keys enc")
_h, _W_a, _enc, _mask = _attention_case(3, [4, 2], 3, 5, dtype=torch.float64)
check_close("the gradient with respect to the decoder state h",
            _gradient(lambda h: _our_attention(h, _W_a, _enc, _mask)[0].sum(), _h),
            expected=_gradient(lambda h: _reference_attention(h, _W_a, _enc, _mask).sum(), _h), atol=1e-10,
            hint="use differentiable tensor operations only")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "beam-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: beam search (2 points)
#
# A model is given as a function `log_probs_fn(prefixes)`: for `prefixes` `(N, t)` int64 (the first `t` tokens
# of `N` sequences; at the first step `t = 0`, a `(1, 0)` tensor) it returns the log-probabilities `(N, V)` of the
# next token. The score of a sequence is the sum of the log-probabilities of its tokens.
#
# Write `beam_search(log_probs_fn, beam_size, length)` returning the `beam_size` best sequences of exactly
# `length` tokens that beam search finds, as `(sequences (k, length) int64, scores (k,))` sorted best first, with
# `k = min(beam_size, V ** length)`. Beam search keeps the `beam_size` best prefixes; at each step it extends
# every kept prefix by every token and keeps the `beam_size` best extensions **by total score**. Call
# `log_probs_fn` once per step on all kept prefixes. With `beam_size = 1` this is greedy decoding; with
# `beam_size >= V ** (length - 1)` it is exhaustive.

# %% nbgrader={"grade": false, "grade_id": "beam-answer", "locked": false, "schema_version": 3, "solution": true}
def beam_search(log_probs_fn, beam_size: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best sequences beam search finds: (sequences (k, length) int64, scores (k,)), best first."""
    ### BEGIN SOLUTION
    sequences = torch.zeros(1, 0, dtype=torch.long)                   # (N, t) the kept prefixes
    scores = torch.zeros(1)                                           # (N,) their total log-probabilities
    for _ in range(length):
        log_probs = log_probs_fn(sequences)                           # (N, V)
        V = log_probs.shape[-1]
        candidates = (scores[:, None] + log_probs).flatten()          # (N·V,) every extension's total
        scores, best = candidates.topk(min(beam_size, candidates.numel()))
        sequences = torch.cat([sequences[best // V], (best % V)[:, None]], dim=1)
    return sequences, scores
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "beam-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _toy_model(V, seed):
    """A model whose next-token distribution depends on the whole prefix (through a hash of it)."""
    def log_probs_fn(prefixes):
        rows = []
        for p in prefixes.tolist():
            key = seed
            for token in p:
                key = (key * 31 + token + 7) % 100_003
            rows.append(torch.randn(V, generator=torch.Generator().manual_seed(key)) * 2)
        return torch.stack(rows).log_softmax(dim=-1)
    return log_probs_fn


def _score(fn, seq):
    return sum(fn(torch.tensor([seq[:t]], dtype=torch.long))[0, seq[t]].item() for t in range(len(seq)))


def _exhaustive(fn, V, length, k):
    ranked = sorted(((_score(fn, list(s)), list(s)) for s in itertools.product(range(V), repeat=length)),
                    reverse=True)[:k]
    return torch.tensor([s for _, s in ranked]), torch.tensor([v for v, _ in ranked])


def _greedy(fn, length):
    seq, total = [], 0.0
    for _ in range(length):
        lp = fn(torch.tensor([seq], dtype=torch.long))[0]
        seq.append(int(lp.argmax()))
        total += lp.max().item()
    return torch.tensor([seq]), torch.tensor([total])


_fn = _toy_model(3, seed=0)
_result = beam_search(_fn, 1, 4)
assert isinstance(_result, tuple) and len(_result) == 2, "beam_search should return (sequences, scores)"
check_close("beam size 1 is greedy decoding (sequence, score)", list(_result), expected=list(_greedy(_fn, 4)),
            atol=1e-5, hint="with one beam, keep the single best extension at every step")
check_close("beam size 27 = 3^(4-1) is exhaustive: the 5 best of all 81 sequences",
            [t[:5] for t in beam_search(_fn, 27, 4)], expected=list(_exhaustive(_fn, 3, 4, 5)), atol=1e-5,
            weight=2, hint="rank extensions by the prefix's total score plus the new token's log-probability, over "
                           "all kept prefixes together; sort the result best first")
print("beam_search: visible tests passed")

### BEGIN HIDDEN TESTS
def _reference_beam(fn, beam_size, length):
    sequences, scores = torch.zeros(1, 0, dtype=torch.long), torch.zeros(1)
    for _ in range(length):
        lp = fn(sequences)
        V = lp.shape[-1]
        scores, best = (scores[:, None] + lp).flatten().topk(min(beam_size, lp.numel()))
        sequences = torch.cat([sequences[best // V], (best % V)[:, None]], dim=1)
    return sequences, scores


_fn = _toy_model(4, seed=5)
check_close("V = 4, length 3, beam size 64: exhaustive (all 64 sequences, best first)",
            list(beam_search(_fn, 64, 3)), expected=list(_exhaustive(_fn, 4, 3, 64)), atol=1e-5,
            hint="return min(beam_size, V ** length) sequences, sorted by score")
for _V, _seed, _beam, _length in [(4, 1, 2, 5), (5, 2, 3, 4), (3, 3, 2, 6)]:
    _fn = _toy_model(_V, _seed)
    check_close(f"V = {_V}, beam size {_beam}, length {_length}", list(beam_search(_fn, _beam, _length)),
                expected=list(_reference_beam(_fn, _beam, _length)), atol=1e-5,
                hint="keep the beam_size best extensions by total score at every step, not the best tokens per beam")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "params-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: predict, then measure: parameters of a recurrent layer (2 points)
#
# How many parameters does `nn.RNN`, `nn.LSTM` or `nn.GRU(input_size, hidden_size, num_layers=..., 
# bidirectional=...)` hold? Think about what notebook 14 showed: each direction of each layer has an input
# matrix, a recurrent matrix and **two** bias vectors, with one block of rows per gate (1 for the RNN, 4 for the
# LSTM, 3 for the GRU); and the layers above the first read the outputs of the layer below, both directions
# concatenated.
#
# Write `recurrent_params(kind, input_size, hidden_size, num_layers, bidirectional)` for `kind` in
# `"rnn"`, `"lstm"`, `"gru"`, returning that number as an int from the sizes alone (building PyTorch's
# recurrent layers is switched off while the tests call your function). The test cell then counts the parameters
# of the real layers for several set-ups, some of them hidden. **Tolerance: exact** (each set-up is a separate
# check).

# %% nbgrader={"grade": false, "grade_id": "params-answer", "locked": false, "schema_version": 3, "solution": true}
def recurrent_params(kind: str, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool) -> int:
    """Number of parameters of nn.RNN / nn.LSTM / nn.GRU with these sizes."""
    ### BEGIN SOLUTION
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    directions = 2 if bidirectional else 1
    total = 0
    for layer in range(num_layers):
        width = input_size if layer == 0 else directions * hidden_size       # what this layer reads
        total += directions * gates * hidden_size * (width + hidden_size + 2)  # W_ih, W_hh, b_ih, b_hh
    return total
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "params-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
_LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
NO_BUILDING = "predict from the sizes: building PyTorch's recurrent layers is switched off while the tests call yours"


def _measured_params(kind, input_size, hidden_size, num_layers, bidirectional):
    layer = _LAYERS[kind](input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional, device="meta")
    return sum(p.numel() for p in layer.parameters())


def _predicted_params(*setup):
    with forbid([(nn.RNNBase, "__init__")], NO_BUILDING):
        return recurrent_params(*setup)


for _setup in [("lstm", 10, 20, 1, False), ("gru", 8, 16, 2, True)]:
    check_prediction(f"parameters of {_setup}", _predicted_params(*_setup), expected=_measured_params(*_setup),
                     rtol=0.0, hint="per direction and layer: gates·H·(input width + H) weights and 2·gates·H biases; "
                                    "a layer above a bidirectional one reads 2H features")
print("recurrent_params: visible tests passed")

### BEGIN HIDDEN TESTS
for _setup in [("rnn", 3, 7, 1, False), ("lstm", 5, 4, 3, True), ("gru", 12, 6, 1, True), ("rnn", 2, 9, 2, True)]:
    check_prediction(f"parameters of {_setup}", _predicted_params(*_setup), expected=_measured_params(*_setup),
                     rtol=0.0, hint="count both biases, every gate, every direction and every layer")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "params-look", "locked": true, "schema_version": 3, "solution": false}
# Not graded: the counts for a few layers of width 256, and yours next to them.

# %% nbgrader={"grade": false, "grade_id": "params-table", "locked": true, "schema_version": 3, "solution": false}
print(f"{'set-up':>32} | {'measured':>10} | {'yours':>10}")
for _setup in [("rnn", 256, 256, 1, False), ("gru", 256, 256, 1, False), ("lstm", 256, 256, 1, False),
               ("lstm", 256, 256, 2, True)]:
    try:
        _yours = f"{recurrent_params(*_setup):,}"
    except Exception:                                    # not written yet, or failing
        _yours = "-"
    print(f"{_setup!s:>32} | {_measured_params(*_setup):>10,} | {_yours:>10}")

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - An LSTM cell is two matrix products split into four gates (i, f, g, o in PyTorch); the cell state is scaled
#   by the forget gate and added to, the output is a gated tanh of it.
# - In a padded batch, the loss is a sum over the real positions divided by their number; padding gets weight 0.
# - Luong attention scores each source position with $h^\top W_a e_s$, masks the padding and averages the
#   encoder's vectors with the softmax weights: scaled dot-product attention with a scale of 1.
# - Beam search keeps the best prefixes by total score; one beam is greedy, enough beams is exhaustive.
# - A recurrent layer holds gates·H·(input + H + 2) parameters per direction and layer.
#
# ## Further exercises (not graded)
#
# 1. Write the GRU cell the same way and match `nn.GRUCell`. Where does PyTorch's reset gate act?
# 2. Add an end-of-sequence token to `beam_search`: finished sequences stop growing and keep their score. Why
#    does it then favour short sequences, and how does dividing by the length change that?
# 3. Use `luong_attention` and `masked_cross_entropy` in notebook 14's date converter in place of its own, and
#    check that training gives the same losses.
