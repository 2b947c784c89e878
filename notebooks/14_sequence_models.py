# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 14 · Sequence models
#
# Before attention took over, sequences were read one step at a time by a **recurrent** network: a cell that
# takes the current input and a state summarising everything so far, and returns the next state. This notebook
# writes the three classic cells (vanilla RNN, LSTM, GRU) from matrix products, checks them against PyTorch's,
# measures why plain RNNs forget, batches sequences of different lengths without letting the padding leak in,
# builds an encoder-decoder with attention that converts dates between written formats, and finally races an
# LSTM language model against notebook 06's transformer for the same number of seconds.
#
# **Learning goals**
# - Write the RNN, LSTM and GRU cells and multi-layer, bidirectional layers from them, equal to `nn.RNN`,
#   `nn.LSTM` and `nn.GRU` (outputs and gradients).
# - Measure how the gradient reaching the first input shrinks or grows with the sequence length
#   (backpropagation through time), tame explosions by clipping, and cut long sequences with truncated BPTT.
# - Pad a batch of sequences of different lengths, mask the loss, pack it with `pack_padded_sequence`, and check
#   that the padding changes nothing.
# - Train a sequence-to-sequence model with attention; compare teacher forcing with free running and greedy
#   decoding with beam search; read its attention weights.
# - Compare an LSTM and a transformer language model trained for the same time on the same text.
#
# **Prerequisites:** notebooks 01–06 (the training loop, AdamW, and attention, masks and the character corpus of
# notebook 06).
#
# **Time:** seconds at `smoke`; a few minutes at `small` on a laptop CPU, most of it training the date converter
# and the two language models; at `full` larger models on a GPU. The last cell prints how long this run took.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import datetime
import itertools
import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

import dlcourse
from dlcourse import text

cfg = dlcourse.setup(seed=0)
device = cfg.device
t_start = time.perf_counter()

# %% [markdown]
# ## 1. Three recurrent cells
# A recurrent layer applies the same **cell** at every time step $t$: it reads the input $x_t$ and the previous
# hidden state $h_{t-1}$ and returns $h_t$, which is both the output at step $t$ and the memory carried on.
# PyTorch's conventions, which we follow to be able to copy weights: each cell has an input matrix `W_ih`, a
# recurrent matrix `W_hh` and two biases, and the gates are stacked in the rows in a fixed order.
#
# - **Vanilla RNN**: $h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})$.
# - **LSTM** (Hochreiter & Schmidhuber 1997) keeps a second state, the **cell** $c_t$, that is only ever scaled
#   and added to. Four gates from the same two products, in the order input $i$, forget $f$, candidate $g$,
#   output $o$: $c_t = \sigma(f) \odot c_{t-1} + \sigma(i) \odot \tanh(g)$ and $h_t = \sigma(o) \odot \tanh(c_t)$.
# - **GRU** (Cho et al. 2014) merges the two states. Gates reset $r$, update $z$ and the candidate $n$, in that
#   order: $n = \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn}))$ and $h_t = (1 - z) \odot n + z \odot h_{t-1}$.
#   Note that $r$ multiplies the recurrent product *after* its bias: that detail is where a GRU written from a
#   textbook and PyTorch's differ.
#
# All three take `(x, state, W_ih, W_hh, b_ih, b_hh)` and return `(output, new_state)`; the LSTM's state is the
# pair `(h, c)`.

# %%
def rnn_cell(x, h, W_ih, W_hh, b_ih, b_hh):
    """x: (B, I), h: (B, H) -> (h, h)."""
    h = torch.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)
    return h, h


def lstm_cell(x, state, W_ih, W_hh, b_ih, b_hh):
    """x: (B, I), state (h, c) each (B, H) -> (h, (h, c)). Gates stacked in the rows as i, f, g, o."""
    h, c = state
    i, f, g, o = (x @ W_ih.T + b_ih + h @ W_hh.T + b_hh).chunk(4, dim=-1)   # each (B, H)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, (h, c)


def gru_cell(x, h, W_ih, W_hh, b_ih, b_hh):
    """x: (B, I), h: (B, H) -> (h, h). Gates stacked as r, z, n."""
    x_r, x_z, x_n = (x @ W_ih.T + b_ih).chunk(3, dim=-1)
    h_r, h_z, h_n = (h @ W_hh.T + b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)                       # r gates the recurrent term, bias included
    h = (1 - z) * n + z * h
    return h, h


CELLS = {"rnn": (rnn_cell, 1), "lstm": (lstm_cell, 4), "gru": (gru_cell, 3)}   # cell, number of gates


# %% [markdown]
# A **layer** runs the cell along the sequence. Two extensions:
# - **multi-layer**: layer $\ell + 1$ reads the outputs of layer $\ell$ as its inputs;
# - **bidirectional**: a second cell with its own weights reads the sequence backwards; the two outputs at each
#   step are concatenated, so the next layer's input has size $2H$, and every position sees the whole sequence.
#
# The parameters get exactly the names PyTorch uses (`weight_ih_l1_reverse`, ...), initialised like PyTorch's
# (uniform in $\pm 1/\sqrt H$), so `load_state_dict` copies weights from `nn.LSTM` into ours. The final state is
# stacked as PyTorch stacks it: (num_layers · directions, B, H), layer by layer, forward before backward.

# %%
class Recurrent(nn.Module):
    """An RNN, LSTM or GRU layer stack written from the cells above; batch first: x (B, T, I) ->
    (outputs (B, T, directions·H), final state (L·directions, B, H), for the LSTM the pair (h_n, c_n))."""

    def __init__(self, kind: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False) -> None:
        super().__init__()
        self.cell, gates = CELLS[kind]
        self.kind, self.hidden_size, self.num_layers = kind, hidden_size, num_layers
        self.directions = ("", "_reverse") if bidirectional else ("",)
        bound = 1 / math.sqrt(hidden_size)
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size * len(self.directions)
            for suffix in self.directions:
                for name, shape in [("weight_ih", (gates * hidden_size, width)),
                                    ("weight_hh", (gates * hidden_size, hidden_size)),
                                    ("bias_ih", (gates * hidden_size,)), ("bias_hh", (gates * hidden_size,))]:
                    self.register_parameter(f"{name}_l{layer}{suffix}",
                                            nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))

    def weights(self, layer: int, suffix: str) -> list[torch.Tensor]:
        return [getattr(self, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    def forward(self, x: torch.Tensor, state=None):
        B, T, _ = x.shape
        zeros = x.new_zeros(self.num_layers * len(self.directions), B, self.hidden_size)
        if state is None:
            state = (zeros, zeros) if self.kind == "lstm" else zeros
        finals = []                                             # one final state per (layer, direction)
        for layer in range(self.num_layers):
            outputs = []
            for d, suffix in enumerate(self.directions):
                k = layer * len(self.directions) + d            # index into the stacked states
                s = (state[0][k], state[1][k]) if self.kind == "lstm" else state[k]
                steps = range(T - 1, -1, -1) if suffix else range(T)
                out = [None] * T
                for t in steps:
                    out[t], s = self.cell(x[:, t], s, *self.weights(layer, suffix))
                outputs.append(torch.stack(out, dim=1))         # (B, T, H)
                finals.append(s)
            x = torch.cat(outputs, dim=-1)                      # (B, T, directions·H): the next layer's input
        if self.kind == "lstm":
            return x, (torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals]))
        return x, torch.stack(finals)


# %% [markdown]
# The check: for each kind, one layer and two bidirectional layers, copy PyTorch's weights into ours and
# compare outputs, final states and the gradients of a loss with respect to the input and to every weight.
# We compare in float64 on the CPU so that the comparison tests the formulas and not rounding (on a GPU, cuDNN
# may compute recurrent layers in TF32).

# %%
TORCH_LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def flat(state) -> torch.Tensor:
    return torch.cat([s.flatten() for s in state]) if isinstance(state, tuple) else state.flatten()


worst = 0.0
for kind, (layers, bidirectional) in itertools.product(CELLS, [(1, False), (2, True)]):
    torch.manual_seed(cfg.seed)
    reference = TORCH_LAYERS[kind](5, 6, num_layers=layers, bidirectional=bidirectional, batch_first=True).double()
    ours = Recurrent(kind, 5, 6, layers, bidirectional).double()
    ours.load_state_dict(reference.state_dict())                  # same names, same shapes
    x = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    readout = torch.randn(3, 7, 6 * (1 + bidirectional), dtype=torch.float64)
    results = []
    for model in (reference, ours):
        x.grad = None
        model.zero_grad()
        out, state = model(x)
        ((out * readout).sum() + flat(state).sum()).backward()
        results.append([out, flat(state), x.grad.clone()] + [p.grad for p in model.parameters()])
    diffs = [(a - b).abs().max().item() for a, b in zip(*results)]
    worst = max(worst, *diffs)
    print(f"{kind:>4}, {layers} layer(s), bidirectional={bidirectional!s:>5}: largest difference in outputs, "
          f"states and {len(diffs) - 2} gradients {max(diffs):.1e}")
    assert max(diffs) < 1e-6
assert worst < 1e-6

# %% [markdown]
# ## 2. Backpropagation through time
# Unrolled over $T$ steps, a recurrent layer is a $T$-layer-deep network that shares its weights between
# layers; backpropagation through it is called **backpropagation through time** (BPTT). The gradient from the
# last output back to the first input passes through $T - 1$ Jacobians $\partial h_t / \partial h_{t-1}$; for the
# vanilla RNN each is $\mathrm{diag}(1 - h_t^2)\, W_{hh}$. A product of $T$ such matrices shrinks or grows
# roughly geometrically: **vanishing** or **exploding** gradients.
#
# The LSTM's cell state offers a second path: $\partial c_t / \partial c_{t-1} = \sigma(f)$, a gate the network
# can hold near 1. At initialisation $\sigma(f) \approx 0.5$, so a common fix is to start the forget-gate bias
# at 1 or more (Jozefowicz et al. 2015). Below, the norm of $\partial (\text{sum of the last outputs}) /
# \partial x_0$ against the sequence length $T$, averaged over a batch, for layers with PyTorch's default
# initialisation, an LSTM whose forget bias starts at 3, and an RNN whose recurrent matrix is orthogonal times 2.

# %%
def first_input_gradient(model: nn.Module, T: int, batch_size: int = 8) -> float:
    """Mean over a batch of ||d(sum of the outputs at step T - 1) / d x_0||."""
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(batch_size, T, model.input_size, generator=gen).requires_grad_(True)
    model(x)[0][:, -1].sum().backward()
    return x.grad[:, 0].norm(dim=-1).mean().item()


hidden = 64
lengths = (1, 5, 10, 20, 50, 100)
torch.manual_seed(cfg.seed)
variants = {kind: TORCH_LAYERS[kind](16, hidden, batch_first=True) for kind in CELLS}
variants["lstm, forget bias 3"] = nn.LSTM(16, hidden, batch_first=True)
variants["rnn, W_hh = 2·orthogonal"] = nn.RNN(16, hidden, batch_first=True)
with torch.no_grad():
    variants["lstm, forget bias 3"].bias_ih_l0[hidden:2 * hidden] += 3.0      # rows of f: H .. 2H
    nn.init.orthogonal_(variants["rnn, W_hh = 2·orthogonal"].weight_hh_l0, gain=2.0)
norms = {name: [first_input_gradient(m, T) for T in lengths] for name, m in variants.items()}
print(f"{'T':>26} " + " ".join(f"{T:>8}" for T in lengths))
for name, row in norms.items():
    print(f"{name:>26} " + " ".join(f"{g:>8.1e}" for g in row))

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, row in norms.items():
    ax.semilogy(lengths, [max(g, 1e-30) for g in row], marker="o", label=name)
ax.set(xlabel="sequence length T", ylabel="||∂ last output / ∂ x_0||", title="gradient through time, at init")
ax.legend(fontsize=8)
plt.close(fig)
fig

# %%
assert norms["rnn"][4] < 1e-6 * norms["rnn"][0], "a default RNN forgets the first input within 50 steps"
assert norms["lstm, forget bias 3"][4] > 1e3 * norms["lstm"][4], "a forget bias of 3 keeps the gradient alive"
assert norms["rnn, W_hh = 2·orthogonal"][-1] > 1e3 * norms["rnn, W_hh = 2·orthogonal"][0], "it explodes"

# %% [markdown]
# **Clipping.** An exploding gradient makes one step so large that the weights land somewhere useless.
# `torch.nn.utils.clip_grad_norm_` rescales the whole gradient when its norm exceeds a threshold, keeping its
# direction. Below, one plain SGD step (learning rate 0.05) of the exploding RNN on a regression task (predict
# the sum of the first feature over the last three inputs), from the same start, without and with clipping at
# norm 1: how far the weights move, what fraction of hidden units end up saturated ($|h| > 0.99$, where tanh
# has no slope, so gradients through them vanish from then on).

# %%
torch.manual_seed(cfg.seed)
exploding = nn.RNN(16, hidden, batch_first=True)
head = nn.Linear(hidden, 1)
with torch.no_grad():
    nn.init.orthogonal_(exploding.weight_hh_l0, gain=2.0)
params = list(exploding.parameters()) + list(head.parameters())
start = [p.detach().clone() for p in params]
gen = torch.Generator().manual_seed(cfg.seed)
x = torch.randn(16, 50, 16, generator=gen)
y = x[:, -3:, 0].sum(dim=-1)


def regression_loss() -> torch.Tensor:
    return F.mse_loss(head(exploding(x)[0][:, -1]).squeeze(-1), y)


clip_results = {}
for clip in (None, 1.0):
    with torch.no_grad():
        for p, p0 in zip(params, start):
            p.copy_(p0)
    optimizer = torch.optim.SGD(params, lr=0.05)
    optimizer.zero_grad()
    regression_loss().backward()
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else float("inf"))  # norm before
    optimizer.step()
    moved = torch.cat([(p - p0).flatten() for p, p0 in zip(params, start)]).norm().item()
    with torch.no_grad():
        saturated = (exploding(x)[0].abs() > 0.99).float().mean().item()
    clip_results[clip] = (moved, saturated)
    print(f"clip {clip!s:>4}: gradient norm {norm:.1e}, weights moved {moved:.2g}, {saturated:.0%} of hidden "
          f"units saturated after the step")
(moved_plain, sat_plain), (moved_clip, sat_clip) = clip_results[None], clip_results[1.0]
assert moved_plain > 100 * moved_clip and abs(moved_clip - 0.05) < 1e-3    # clipped: lr × 1
assert sat_plain > 0.5 > sat_clip

# %% [markdown]
# Clipping stops the blow-up but cannot fix the vanishing side: a gradient that never reaches the first input
# carries nothing to scale up. That is what the gates are for.
#
# **Truncated BPTT.** Backpropagating through a whole book would store every hidden state. Instead, cut the
# stream into chunks of $k$ steps, carry the hidden state from one chunk into the next (the forward pass still
# sees the whole past) but `detach()` it, so that the backward pass stops at the chunk boundary. Memory then
# grows with $k$, not with the length of the stream, at the price of never learning dependencies longer than
# $k$ steps through the gradient. The check: with the state detached, the inputs of the first chunk get
# exactly no gradient from the second chunk's loss.

# %%
torch.manual_seed(cfg.seed)
lstm = nn.LSTM(4, 8, batch_first=True)
x = torch.randn(2, 20, 4, requires_grad=True)
k = 10                                                   # chunk length
for detach in (False, True):
    x.grad = None
    _, (h, c) = lstm(x[:, :k])                           # chunk 1
    if detach:
        h, c = h.detach(), c.detach()                    # truncated BPTT: the state is carried, its history not
    out, _ = lstm(x[:, k:], (h, c))                      # chunk 2
    out[:, -1].sum().backward()
    print(f"detach={detach!s:>5}: gradient norm on chunk 1's inputs {x.grad[:, :k].norm():.2e}, "
          f"on chunk 2's {x.grad[:, k:].norm():.2e}")
    assert (x.grad[:, :k].abs().sum() == 0) == detach
# the forward pass is the same either way: chunking does not change the outputs
assert torch.allclose(lstm(x[:, k:], tuple(s.detach() for s in lstm(x[:, :k])[1]))[0], lstm(x)[0][:, k:],
                      atol=1e-6)

# %% [markdown]
# Section 5 trains its LSTM language model this way.
#
# ## 3. Batches of sequences of different lengths
# Sentences, dates and programs come in different lengths. To batch them, pad the shorter ones at the end up
# to the longest (`pad_sequence`). Two things must then be kept from the padding:
# 1. **The states.** A forward layer's outputs at real positions do not depend on later padding, but its
#    *final* state is taken after the padding, and a backward layer reads the padding *first*.
#    `pack_padded_sequence` tells the layer each sequence's length; it then stops every sequence at its own
#    end (and starts the backward direction there).
# 2. **The loss.** Average only over real positions: a mask, or `ignore_index` in `F.cross_entropy`.
#
# The check: a bidirectional GRU on a padded, packed batch gives every sequence the same outputs and final
# state as running that sequence alone; without packing, it does not.

# %%
torch.manual_seed(cfg.seed)
seq_lengths = torch.tensor([5, 3, 7, 2])
sequences = [torch.randn(int(n), 4) for n in seq_lengths]
padded = pad_sequence(sequences, batch_first=True)                      # (B, T_max, 4), zeros after the end
gru = nn.GRU(4, 6, batch_first=True, bidirectional=True)
with torch.no_grad():
    alone = [gru(s[None]) for s in sequences]                           # one sequence at a time, no padding
    packed = pack_padded_sequence(padded, seq_lengths, batch_first=True, enforce_sorted=False)
    packed_out, packed_h = gru(packed)
    packed_out, out_lengths = pad_packed_sequence(packed_out, batch_first=True)   # (B, T_max, 12)
    naive_out, naive_h = gru(padded)                                   # padding read as if it were data
naive_worst = 0.0
for b, (out_b, h_b) in enumerate(alone):
    n = int(seq_lengths[b])
    assert torch.allclose(packed_out[b, :n], out_b[0], atol=1e-6) and torch.allclose(packed_h[:, b], h_b[:, 0],
                                                                                     atol=1e-6)
    assert (packed_out[b, n:] == 0).all()                              # padding positions come back as zeros
    assert torch.allclose(naive_out[b, :n, :6], out_b[0, :, :6], atol=1e-6)   # forward half: padding comes later
    naive_worst = max(naive_worst, (naive_out[b, :n] - out_b[0]).abs().max().item(),
                      (naive_h[:, b] - h_b[:, 0]).abs().max().item())
print(f"packed: every sequence as if alone (to 1e-6); unpacked: off by up to {naive_worst:.2f}")
print(f"work: {int(seq_lengths.sum())} cell steps packed (batch sizes per step {packed.batch_sizes.tolist()}) "
      f"instead of {padded.shape[0] * padded.shape[1]} padded")
assert naive_worst > 1e-2 and torch.equal(out_lengths, seq_lengths)

# %% [markdown]
# Now the loss. For per-position logits (B, T, V) and targets (B, T), the average over the **real** positions is
# the sum over the mask divided by the number of real positions (not the mean over B·T, and not the mean of
# per-sequence means, which would weigh a short sequence's tokens more). The padding may hold anything: its
# logits and targets must change neither the loss nor the gradient.

# %%
def mask_from_lengths(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) bool, True at the first lengths[b] positions of row b."""
    return torch.arange(T, device=lengths.device) < lengths[:, None]


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over real positions. logits (B, T, V), targets (B, T), lengths (B,)."""
    mask = mask_from_lengths(lengths, targets.shape[1])                           # (B, T)
    losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")   # (B, T)
    return (losses * mask).sum() / mask.sum()


gen = torch.Generator().manual_seed(cfg.seed)
B, T, V = 4, 7, 10
logits = torch.randn(B, T, V, generator=gen, requires_grad=True)
targets = torch.randint(0, V, (B, T), generator=gen)
mask = mask_from_lengths(seq_lengths, T)
loss = masked_cross_entropy(logits, targets, seq_lengths)
reference = F.cross_entropy(logits.transpose(1, 2), targets.masked_fill(~mask, -100), ignore_index=-100)
grad = torch.autograd.grad(loss, logits)[0]
with torch.no_grad():                                     # fill the padding with garbage: nothing may change
    garbage_logits = logits.masked_fill(~mask[..., None], 1e4)
garbage_logits.requires_grad_(True)
garbage_loss = masked_cross_entropy(garbage_logits, targets.masked_fill(~mask, 3), seq_lengths)
garbage_grad = torch.autograd.grad(garbage_loss, garbage_logits)[0]
print(f"masked loss {loss:.4f}, ignore_index reference {reference:.4f}, with garbage padding {garbage_loss:.4f}")
assert torch.allclose(loss, reference) and torch.allclose(garbage_loss, loss)
assert torch.equal(grad, garbage_grad) and (grad[~mask] == 0).all()

# %% [markdown]
# ## 4. Sequence to sequence with attention: converting dates
# An **encoder-decoder** reads an input sequence and writes an output sequence of another length. Our task,
# generated on the spot: read a date written one of several ways (`14 July 2023`, `Jul 14, 2023`,
# `14/07/2023`, `friday 14 july 2023`, ...) and write it in ISO format, `2023-07-14`. The model must find the
# year, the month (as a word, an abbreviation or a number) and the day wherever the format puts them.
#
# - The **encoder**, a bidirectional GRU over the input characters, gives one vector per input position.
# - The **decoder**, a GRU cell, writes one output character per step. At every step it **attends** to the
#   encoder's vectors (Luong et al. 2015, "general" score): with decoder state $h$, the score of input position
#   $s$ is $h^\top W_a e_s$, the weights are their softmax over the real (unpadded) positions, and the
#   **context** is the weighted sum of the $e_s$. The output layer reads $[h; \text{context}]$, and the context
#   is also fed into the next step's input ("input feeding").
#
# This attention is scaled dot-product attention with queries $W_a^\top h$, keys and values $e_s$ and a scale
# of 1, so `F.scaled_dot_product_attention(..., scale=1.0)` checks it.

# %%
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december"]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
FORMATS = [
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1][:3].capitalize()} {d.day}, {d.year}",
    lambda d: f"{d.day:02d}/{d.month:02d}/{d.year}",
    lambda d: f"{WEEKDAYS[d.weekday()]} {d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1].capitalize()} {d.day} {d.year}",
    lambda d: f"{d.year}.{d.month}.{d.day}",
]


def make_dates(n: int, seed: int) -> list[tuple[str, str]]:
    """n (written date, ISO date) pairs, dates uniform in 1950-2049, formats uniform."""
    gen = torch.Generator().manual_seed(seed)
    first, days = datetime.date(1950, 1, 1), (datetime.date(2050, 1, 1) - datetime.date(1950, 1, 1)).days
    offsets = torch.randint(0, days, (n,), generator=gen).tolist()
    formats = torch.randint(0, len(FORMATS), (n,), generator=gen).tolist()
    dates = [first + datetime.timedelta(days=o) for o in offsets]
    return [(FORMATS[f](d), d.isoformat()) for d, f in zip(dates, formats)]


SRC_CHARS = ["<pad>"] + sorted(set("".join(MONTHS + WEEKDAYS).lower() + "".join(MONTHS).upper()
                                   + "0123456789 ,/."))
TGT_CHARS = ["<bos>"] + list("0123456789-")
src_index = {c: i for i, c in enumerate(SRC_CHARS)}
TGT_LEN = 10                                                        # every ISO date has 10 characters


def encode_dates(pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded sources (N, S) with lengths (N,), and targets (N, 10) as ids into TGT_CHARS."""
    src = [torch.tensor([src_index[c] for c in s]) for s, _ in pairs]
    tgt = torch.tensor([[TGT_CHARS.index(c) for c in t] for _, t in pairs])
    return pad_sequence(src, batch_first=True), torch.tensor([len(s) for s in src]), tgt


train_pairs = make_dates(cfg.pick(smoke=6000, small=20000, full=50000), seed=cfg.seed)
test_pairs = make_dates(500, seed=cfg.seed + 1)
for written, iso in test_pairs[:6]:
    print(f"{written:>28} -> {iso}")

# %%
def luong_attention(h: torch.Tensor, W_a: torch.Tensor, enc: torch.Tensor, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """h (B, H_dec), W_a (H_dec, H_enc), enc (B, S, H_enc), mask (B, S) True at real positions.
    Returns context (B, H_enc) and weights (B, S)."""
    scores = torch.einsum("bh,hk,bsk->bs", h, W_a, enc)                 # h^T W_a e_s for every s
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return torch.einsum("bs,bsk->bk", weights, enc), weights


class DateConverter(nn.Module):
    """Bidirectional-GRU encoder, GRU-cell decoder with Luong attention and input feeding."""

    def __init__(self, emb: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.src_emb = nn.Embedding(len(SRC_CHARS), emb, padding_idx=0)
        self.encoder = nn.GRU(emb, hidden, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden, hidden)                    # encoder summary -> first decoder state
        self.tgt_emb = nn.Embedding(len(TGT_CHARS), emb)
        self.decoder = nn.GRUCell(emb + 2 * hidden, hidden)
        self.W_a = nn.Parameter(torch.randn(hidden, 2 * hidden) / math.sqrt(2 * hidden))
        self.out = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.Tanh(), nn.Linear(hidden, len(TGT_CHARS)))

    def encode(self, src: torch.Tensor, lengths: torch.Tensor):
        """-> the decoder's first state (state, previous context), encoder vectors (B, S, 2H), mask (B, S)."""
        packed = pack_padded_sequence(self.src_emb(src), lengths.cpu(), batch_first=True, enforce_sorted=False)
        enc, h_n = self.encoder(packed)
        enc, _ = pad_packed_sequence(enc, batch_first=True, total_length=src.shape[1])
        h = torch.tanh(self.bridge(torch.cat([h_n[0], h_n[1]], dim=-1)))        # (B, H)
        return (h, enc.new_zeros(enc.shape[0], enc.shape[2])), enc, mask_from_lengths(lengths, src.shape[1])

    def step(self, token: torch.Tensor, state, enc: torch.Tensor, mask: torch.Tensor):
        """One decoder step: previous token (B,) -> log-probabilities (B, V), new state, attention weights (B, S)."""
        h, context = state
        h = self.decoder(torch.cat([self.tgt_emb(token), context], dim=-1), h)
        context, weights = luong_attention(h, self.W_a, enc, mask)
        log_probs = self.out(torch.cat([h, context], dim=-1)).log_softmax(dim=-1)
        return log_probs, (h, context), weights

    def forward(self, src, lengths, tgt):
        """Teacher forcing: the decoder reads the true previous characters. -> log-probs (B, 10, V)."""
        state, enc, mask = self.encode(src, lengths)
        inputs = torch.cat([torch.zeros_like(tgt[:, :1]), tgt[:, :-1]], dim=1)     # <bos> then the truth
        steps = []
        for t in range(tgt.shape[1]):
            log_probs, state, _ = self.step(inputs[:, t], state, enc, mask)
            steps.append(log_probs)
        return torch.stack(steps, dim=1)


# the attention step against PyTorch's scaled dot-product attention with scale 1
gen = torch.Generator().manual_seed(cfg.seed)
h_, W_, enc_ = torch.randn(3, 5, generator=gen), torch.randn(5, 8, generator=gen), torch.randn(3, 6, 8, generator=gen)
mask_ = mask_from_lengths(torch.tensor([6, 2, 4]), 6)
context_, weights_ = luong_attention(h_, W_, enc_, mask_)
reference = F.scaled_dot_product_attention((h_ @ W_)[:, None, :], enc_, enc_, attn_mask=mask_[:, None, :],
                                           scale=1.0)[:, 0]
print(f"Luong attention vs F.scaled_dot_product_attention: largest difference {(context_ - reference).abs().max():.1e}")
assert torch.allclose(context_, reference, atol=1e-5) and (weights_[~mask_] == 0).all()

# %% [markdown]
# Training uses **teacher forcing**: at every step the decoder reads the *true* previous character, so all ten
# steps learn at once from correct prefixes. At test time there is no truth to read: **free running** feeds the
# model its own previous output, and one early mistake can derail the rest (exposure bias). We measure both:
# per-character accuracy under teacher forcing, and whole dates right when running free.

# %%
date_steps = cfg.pick(smoke=80, small=600, full=3000)
date_batch = cfg.pick(smoke=32, small=64, full=256)
src_train, len_train, tgt_train = (t.to(device) for t in encode_dates(train_pairs))
src_test, len_test, tgt_test = (t.to(device) for t in encode_dates(test_pairs))
torch.manual_seed(cfg.seed)
converter = DateConverter(**cfg.pick(smoke=dict(emb=16, hidden=32), small=dict(emb=32, hidden=64),
                                     full=dict(emb=64, hidden=128))).to(device)
optimizer = torch.optim.AdamW(converter.parameters(), lr=cfg.pick(smoke=1e-2, small=5e-3, full=3e-3))
scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=optimizer.param_groups[0]["lr"],
                                                total_steps=date_steps, pct_start=0.1)
gen = torch.Generator().manual_seed(cfg.seed)
t0 = time.perf_counter()
converter.train()
for step in range(date_steps):
    batch = torch.randint(0, len(train_pairs), (date_batch,), generator=gen).to(device)
    log_probs = converter(src_train[batch], len_train[batch], tgt_train[batch])   # (B, 10, V)
    loss = F.nll_loss(log_probs.transpose(1, 2), tgt_train[batch])
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(converter.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
print(f"{date_steps} steps in {time.perf_counter() - t0:.1f} s, last training loss {loss.item():.3f}")


@torch.no_grad()
def greedy_decode(model: DateConverter, src, lengths):
    """Free running: each step reads the model's own previous output. -> tokens (B, 10), total log-prob (B,),
    attention weights (B, 10, S)."""
    model.eval()
    state, enc, mask = model.encode(src, lengths)
    token = torch.zeros(src.shape[0], dtype=torch.long, device=src.device)       # <bos>
    tokens, score, all_weights = [], torch.zeros(src.shape[0], device=src.device), []
    for _ in range(TGT_LEN):
        log_probs, state, weights = model.step(token, state, enc, mask)
        score = score + log_probs.max(dim=-1).values
        token = log_probs.argmax(dim=-1)
        tokens.append(token)
        all_weights.append(weights)
    return torch.stack(tokens, dim=1), score, torch.stack(all_weights, dim=1)


with torch.no_grad():
    converter.eval()
    forced_acc = (converter(src_test, len_test, tgt_test).argmax(-1) == tgt_test).float().mean().item()
greedy_tokens, greedy_scores, attention_maps = greedy_decode(converter, src_test, len_test)
free_char_acc = (greedy_tokens == tgt_test).float().mean().item()
free_date_acc = (greedy_tokens == tgt_test).all(dim=1).float().mean().item()
print(f"teacher forcing: {forced_acc:.1%} of characters right; free running: {free_char_acc:.1%} of characters, "
      f"{free_date_acc:.1%} of whole dates")
assert free_char_acc <= forced_acc + 0.02, "free running should not beat the model reading the truth"
assert forced_acc > cfg.pick(smoke=0.6, small=0.97, full=0.98)
assert free_date_acc > cfg.pick(smoke=0.0, small=0.8, full=0.9)

# %% [markdown]
# **Greedy vs beam search.** Greedy decoding takes the single most likely character at each step, which need
# not give the most likely *date*: a slightly less likely first character can lead to much more likely ones
# after it. **Beam search** keeps the `beam_size` best prefixes by total log-probability; at each step it extends
# each by every character, and keeps the `beam_size` best of those. With `beam_size = 1` it is greedy decoding;
# with `beam_size` at least $V^{L-1}$ it is an exhaustive search. The decoder state of each kept prefix must follow
# it, so we reorder the states with the index of the prefix each survivor came from.
#
# First the check against exhaustive search, on a toy model whose next-token distribution depends on the whole
# prefix, small enough to enumerate all $V^L$ sequences.

# %%
def beam_search(step, state, beam_size: int, length: int, bos: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The beam_size best sequences of exactly `length` tokens under a model given by
    step(tokens (N,), state) -> (log_probs (N, V), new state); state: a tuple of tensors with N = 1 in dim 0.
    Returns sequences (beam_size, length) and their total log-probabilities (beam_size,), best first."""
    device = state[0].device
    tokens = torch.full((1,), bos, dtype=torch.long, device=device)    # the last token of every kept prefix
    sequences = torch.zeros(1, 0, dtype=torch.long, device=device)     # (N, t) the kept prefixes
    scores = torch.zeros(1, device=device)                             # (N,) their total log-probabilities
    for _ in range(length):
        log_probs, state = step(tokens, state)                                        # (N, V)
        V = log_probs.shape[-1]
        candidates = (scores[:, None] + log_probs).flatten()                         # (N·V,)
        scores, best = candidates.topk(min(beam_size, candidates.numel()))
        parent, tokens = best // V, best % V                                          # which prefix, which token
        sequences = torch.cat([sequences[parent], tokens[:, None]], dim=1)
        state = tuple(s[parent] for s in state)                                       # states follow their prefix
    return sequences, scores


def toy_step(tokens, state):
    """A toy model over V = 4 tokens: the next distribution depends on a hash of the whole prefix."""
    (history,) = state                                                   # (N,) int64 summary of the prefix
    history = (history * 31 + tokens + 7) % 1009
    log_probs = torch.stack([torch.randn(4, generator=torch.Generator().manual_seed(int(s))) * 2
                             for s in history]).log_softmax(dim=-1)
    return log_probs, (history,)


L_toy = 4
everything = []
for seq in itertools.product(range(4), repeat=L_toy):                   # all 256 sequences
    state, total = (torch.zeros(1, dtype=torch.long),), 0.0
    for t, token in enumerate(seq):
        log_probs, state = toy_step(torch.tensor([seq[t - 1] if t else 0]), state)
        total += log_probs[0, token].item()
    everything.append((total, seq))
everything.sort(reverse=True)
beam_seqs, beam_scores = beam_search(toy_step, (torch.zeros(1, dtype=torch.long),), 4 ** (L_toy - 1), L_toy)
assert [tuple(s) for s in beam_seqs[:5].tolist()] == [s for _, s in everything[:5]]
assert torch.allclose(beam_scores[:5], torch.tensor([t for t, _ in everything[:5]]), atol=1e-5)
for beam_size in (1, 2, 4):
    seqs, scores = beam_search(toy_step, (torch.zeros(1, dtype=torch.long),), beam_size, L_toy)
    rank = [s for _, s in everything].index(tuple(seqs[0].tolist()))
    print(f"beam size {beam_size}: best found {seqs[0].tolist()} with log-prob {scores[0]:.3f} "
          f"(rank {rank + 1} of 256; the best is {everything[0][0]:.3f})")

# %% [markdown]
# Now on the date converter: beam search with 4 beams against greedy decoding, on the same test dates.

# %%
@torch.no_grad()
def beam_decode(model: DateConverter, src, length, beam_size: int):
    """Beam search for one source (S,) of the given length -> best tokens (10,) and its log-prob."""
    model.eval()
    state, enc, mask = model.encode(src[None, :length], torch.tensor([length], device=src.device))

    def step(tokens, state):
        N = tokens.shape[0]
        log_probs, new_state, _ = model.step(tokens, state, enc.expand(N, -1, -1), mask.expand(N, -1))
        return log_probs, new_state

    seqs, scores = beam_search(step, state, beam_size, TGT_LEN)
    return seqs[0], scores[0].item()


n_beam = cfg.pick(smoke=20, small=200, full=500)
beam_results = [beam_decode(converter, src_test[i], int(len_test[i]), beam_size=4) for i in range(n_beam)]
beam_tokens = torch.stack([t for t, _ in beam_results])
beam_scores = torch.tensor([s for _, s in beam_results])
beam_one = [beam_decode(converter, src_test[i], int(len_test[i]), beam_size=1) for i in range(min(n_beam, 20))]
assert all(torch.equal(t, greedy_tokens[i]) for i, (t, _) in enumerate(beam_one)), "beam 1 is greedy"
greedy_right = (greedy_tokens[:n_beam] == tgt_test[:n_beam]).all(dim=1).float().mean().item()
beam_right = (beam_tokens == tgt_test[:n_beam]).all(dim=1).float().mean().item()
changed = (beam_tokens != greedy_tokens[:n_beam]).any(dim=1).sum().item()
print(f"on {n_beam} test dates: greedy {greedy_right:.1%} right, mean log-prob "
      f"{greedy_scores[:n_beam].mean():.3f}; beam search (4) {beam_right:.1%} right, mean log-prob "
      f"{beam_scores.mean():.3f}; {changed} outputs changed")
assert beam_scores.mean() >= greedy_scores[:n_beam].cpu().mean() - 1e-4

# %% [markdown]
# On these dates beam search scores at least as well on average (asserted): it finds outputs the model itself
# finds more likely. (That is not guaranteed for every input: the greedy prefix can be pruned from the beam.) Whether that
# makes more dates *right* depends on how good the model is; a well-trained converter is already confident at
# every step, and the two agree.
#
# **What the decoder looks at.** Rows: the ten output characters; columns: the input characters. In a
# trained converter (`small` or `full`) the year's digits attend to the year and the month's digits to the
# month's letters or digits, wherever the format put them; at `smoke` the maps are still blurred.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for ax, i in zip(axes, [0, 1, 3]):
    n = int(len_test[i])
    ax.imshow(attention_maps[i, :, :n].cpu(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(n), [c if c != " " else "·" for c in test_pairs[i][0]], fontsize=7)
    ax.set_yticks(range(TGT_LEN), [TGT_CHARS[j] for j in greedy_tokens[i].tolist()], fontsize=7)
    ax.set(xlabel="input", ylabel="output (greedy)", title=test_pairs[i][0])
fig.tight_layout()
plt.close(fig)
fig

# %% [markdown]
# ## 5. An LSTM against a transformer, for the same time
# The same corpus and tokenizer as notebook 06: Python's standard library, one id per character. Two models get
# the same number of **seconds** of training on this machine, not the same number of steps, since the question
# in practice is what a budget buys:
# - an **LSTM** language model (embedding, LSTM layers, linear read-out), trained with truncated BPTT on
#   `batch_size` parallel streams of the training text, its state carried (and detached) from one chunk to the
#   next;
# - notebook 06's **GPT** (`dlcourse.models.GPT`, learned positions) on random windows of `block_size`
#   characters.
#
# Both are judged on the same validation windows, each read from an empty state, so both see the same context
# for every prediction: loss per character in nats.

# %%
max_chars = cfg.pick(smoke=200_000, small=2_000_000, full=None)
block_size = cfg.pick(smoke=64, small=128, full=256)
corpus = text.python_source_corpus(max_chars, seed=cfg.seed)
tokenizer = text.CharTokenizer(corpus)
train_ids, val_ids = text.split_ids(tokenizer.encode(corpus), val_fraction=0.1)
val_windows = text.NextTokenWindows(val_ids, block_size)
n_val = min(len(val_windows), cfg.pick(smoke=64, small=512, full=2048))
val_x = torch.stack([val_windows[i][0] for i in range(n_val)]).to(device)       # (n_val, block_size)
val_y = torch.stack([val_windows[i][1] for i in range(n_val)]).to(device)
counts = torch.bincount(train_ids, minlength=tokenizer.vocab_size).float() + 1
unigram = -(counts / counts.sum()).log()[val_ids].mean().item()
print(f"{len(corpus):,} characters (fingerprint {text.corpus_fingerprint(corpus)}), {tokenizer}; "
      f"unigram baseline {unigram:.3f} nats/char")


class LSTMLanguageModel(nn.Module):
    """Token ids (B, T) and an optional state -> logits (B, T, V) and the final state."""

    def __init__(self, vocab_size: int, d_model: int, num_layers: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.lstm = nn.LSTM(d_model, d_model, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(d_model, vocab_size)
        with torch.no_grad():                                     # forget biases at 1 (section 2)
            for name, p in self.lstm.named_parameters():
                if name.startswith("bias_ih"):
                    p[d_model:2 * d_model] = 1.0

    def forward(self, idx, state=None):
        out, state = self.lstm(self.tok(idx), state)
        return self.head(out), state


def validation_loss(model: nn.Module) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(val_x)
        logits = logits[0] if isinstance(logits, tuple) else logits
        loss = F.cross_entropy(logits.flatten(0, 1), val_y.flatten()).item()
    model.train()
    return loss


def sync() -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_for(model: nn.Module, seconds: float, batch_fn, lr: float) -> dict:
    """Train with AdamW for `seconds` of wall-clock time; batch_fn(step) -> loss. Returns a summary."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    batch_fn(0).backward()                                     # warm-up, untimed: one-off set-up costs
    optimizer.zero_grad()
    sync()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        loss = batch_fn(steps)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        steps += 1
        if steps % 8 == 0:
            sync()
    sync()
    return dict(steps=steps, seconds=time.perf_counter() - t0, val_loss=validation_loss(model),
                params=dlcourse.models.count_parameters(model))


budget = cfg.pick(smoke=1.0, small=45.0, full=120.0)                      # seconds per model
lm_batch_size = cfg.pick(smoke=32, small=32, full=128)
width, layers = cfg.pick(smoke=(48, 1), small=(128, 2), full=(512, 3))
gen = torch.Generator().manual_seed(cfg.seed)

torch.manual_seed(cfg.seed)
lstm_lm = LSTMLanguageModel(tokenizer.vocab_size, width, layers).to(device)
stream_len = len(train_ids) // lm_batch_size
streams = train_ids[:stream_len * lm_batch_size].view(lm_batch_size, stream_len).to(device)   # (B, L)
lstm_state = None


def lstm_batch(step: int) -> torch.Tensor:
    """The next chunk of every stream; the state from the previous chunk is carried in, detached."""
    global lstm_state
    start = (step * block_size) % (stream_len - block_size - 1)
    if start < block_size:                                     # back at the beginning: start from an empty state
        lstm_state = None
    x, y = streams[:, start:start + block_size], streams[:, start + 1:start + block_size + 1]
    logits, state = lstm_lm(x, lstm_state)
    lstm_state = tuple(s.detach() for s in state)              # truncated BPTT
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


torch.manual_seed(cfg.seed)
gpt = dlcourse.models.GPT(tokenizer.vocab_size, block_size, d_model=width, num_heads=4,
                          num_layers=cfg.pick(smoke=1, small=2, full=4)).to(device)


def gpt_batch(step: int) -> torch.Tensor:
    x, y = text.lm_batch(train_ids, block_size, lm_batch_size, generator=gen)
    return F.cross_entropy(gpt(x.to(device)).flatten(0, 1), y.to(device).flatten())


race = {"LSTM": train_for(lstm_lm, budget, lstm_batch, lr=cfg.pick(smoke=1e-2, small=5e-3, full=2e-3)),
        "transformer": train_for(gpt, budget, gpt_batch, lr=cfg.pick(smoke=1e-2, small=3e-3, full=1e-3))}
print(f"{'model':>12} | {'parameters':>10} | {'steps':>6} | {'characters/s':>12} | {'val loss (nats/char)':>20}")
for name, r in race.items():
    rate = r["steps"] * lm_batch_size * block_size / r["seconds"]
    print(f"{name:>12} | {r['params']:>10,} | {r['steps']:>6} | {rate:>12,.0f} | {r['val_loss']:>20.3f}")
for r in race.values():
    assert r["val_loss"] < cfg.pick(smoke=math.log(tokenizer.vocab_size), small=unigram - 0.5, full=unigram - 1.0)

# %% [markdown]
# Read the table at your scale rather than trusting a rule. The LSTM does a fixed, small amount of work per
# character but must do its steps one after another; the transformer processes all positions of a window at
# once, which suits wide hardware (a GPU) and gets more out of each second there. On a CPU with tiny models the
# race is closer. With much more time the transformer's direct access to every earlier character usually wins.
#
# ## Summary
# - An RNN cell is one matrix product of the input and one of the previous state; the LSTM adds a gated cell
#   state, the GRU a gated interpolation. Written from scratch, multi-layer and bidirectional, they match
#   PyTorch's layers in outputs and gradients.
# - BPTT multiplies one Jacobian per step: at initialisation the gradient reaching the first input falls
#   geometrically with the length (a forget bias near 1 or above slows that); a recurrent matrix with gain above
#   1 makes it explode, and clipping the gradient norm keeps training stable. Truncated BPTT carries the state
#   but not its gradient between chunks.
# - Padding must not leak: pack the batch so every sequence ends (and, backwards, starts) at its own length,
#   and average the loss over real positions only.
# - An encoder-decoder with attention learns to convert dates; it trains with teacher forcing and is used free
#   running. Beam search equals exhaustive search with enough beams and greedy decoding with one; in between it
#   found outputs at least as likely as greedy decoding, on average over the test dates.
# - For a fixed training time, the measured winner between an LSTM and a transformer depends on the hardware
#   and the budget.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **Peepholes and projections.** `nn.LSTM(proj_size=...)` projects the hidden state to a smaller size.
#    Add it to `Recurrent` and check against PyTorch.
# 2. **Gradient at a trained model.** Repeat section 2's measurement with the LSTM language model after
#    training. How far back does its gradient reach now?
# 3. **Scheduled sampling.** Train the date converter feeding its own predictions with a probability that grows
#    during training. Does free-running accuracy improve at `smoke` scale?
# 4. **Length normalisation.** Give the date converter an end-of-sequence token and variable-length outputs
#    (e.g. `14 July 2023` as the target). Why does plain beam search then prefer short outputs, and what does
#    dividing the score by the length change?
# 5. **Equal steps instead of equal time.** Train both language models for the same number of steps. Which one
#    is better per step, and which per second, on your machine?
