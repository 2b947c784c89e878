"""Plausible mistakes in lab 14 and the exact total each must score (out of 10), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
A test cell's points are split over its checks by weight, so a mistake can lose part of a cell's points.
"""

LSTM_GATES_IFOG = """\
def lstm_cell(x, state, W_ih, W_hh, b_ih, b_hh):
    h, c = state
    i, f, o, g = (x @ W_ih.T + b_ih + h @ W_hh.T + b_hh).chunk(4, dim=-1)  # another library's gate order
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c"""

ATTENTION_WITHOUT_MASK = """\
def luong_attention(h, W_a, enc, mask):
    scores = ((h @ W_a)[:, None, :] * enc).sum(dim=-1)
    weights = scores.softmax(dim=-1)  # the padding gets weight too
    return (weights[:, :, None] * enc).sum(dim=1), weights"""

PADDING_TARGETS_PASSED_ON = """\
def masked_cross_entropy(logits, targets, lengths):
    mask = torch.arange(targets.shape[1]) < lengths[:, None]
    losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # padding ids must be valid ids
    return (losses * mask).sum() / mask.sum()"""

UPPER_LAYERS_READ_H = """\
def recurrent_params(kind, input_size, hidden_size, num_layers, bidirectional):
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    directions = 2 if bidirectional else 1
    total = 0
    for layer in range(num_layers):
        width = input_size if layer == 0 else hidden_size  # forgets that both directions feed the next layer
        total += directions * gates * hidden_size * (width + hidden_size + 2)
    return total"""

BEAM_RANKED_BY_LAST_TOKEN = """\
def beam_search(log_probs_fn, beam_size, length):
    sequences, scores = torch.zeros(1, 0, dtype=torch.long), torch.zeros(1)
    for _ in range(length):
        log_probs = log_probs_fn(sequences)
        V = log_probs.shape[-1]
        _, best = log_probs.flatten().topk(min(beam_size, log_probs.numel()))  # ranks by the new token only
        scores = (scores[:, None] + log_probs).flatten()[best]
        sequences = torch.cat([sequences[best // V], (best % V)[:, None]], dim=1)
    return sequences, scores"""

ONE_BIAS = """\
def recurrent_params(kind, input_size, hidden_size, num_layers, bidirectional):
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    directions = 2 if bidirectional else 1
    total = 0
    for layer in range(num_layers):
        width = input_size if layer == 0 else directions * hidden_size
        total += directions * gates * hidden_size * (width + hidden_size + 1)  # PyTorch has two biases
    return total"""

MISTAKES = [
    # lstm-tests: 1 + 2 visible, 1 + 1 + 1 hidden = 6. With the gates in the order i, f, o, g only the shapes
    # pass -> 2 * 1/6.
    # attention-tests: 1 + 1 + 1 + 1 visible, 1 + 1 hidden = 6. Without the mask the shapes and the unpadded case
    # pass (2 of 6) -> 2 * 2/6.
    ({"lstm-answer": LSTM_GATES_IFOG, "attention-answer": ATTENTION_WITHOUT_MASK},
     10 - 2 * (1 - 1 / 6) - 2 * (1 - 2 / 6)),
    # masked-tests: 2 + 1 visible, 1 + 1 + 1 hidden = 6. Passing the padding's targets on to F.cross_entropy is
    # right until a padding id is not a valid class (-1): the last hidden check fails -> 2 * 5/6.
    # params-tests: 2 visible + 4 hidden set-ups. Upper layers reading H instead of 2H is right without a second
    # bidirectional layer: 3 of 6 -> 2 * 3/6.
    ({"masked-answer": PADDING_TARGETS_PASSED_ON, "params-answer": UPPER_LAYERS_READ_H},
     10 - 2 * (1 - 5 / 6) - 2 * (1 - 3 / 6)),
    # beam-tests: 1 + 2 visible, 1 + 1 + 1 + 1 hidden = 7. Ranking the extensions by the new token's log-prob
    # alone is still greedy with one beam (1 of 7); every larger beam fails.
    # params-tests: counting one bias per gate is wrong for every set-up: 0 of 6.
    ({"beam-answer": BEAM_RANKED_BY_LAST_TOKEN, "params-answer": ONE_BIAS}, 10 - 2 * (1 - 1 / 7) - 2),
]
