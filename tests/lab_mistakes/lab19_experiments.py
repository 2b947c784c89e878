"""Plausible mistakes in lab 19 and the exact total each must score (out of 10), for tests/test_labs.py.

Each entry: ({answer grade_id: wrong source}, expected total). Answers not named come from the solution.
A test cell's points are split over its checks by weight, so a mistake can lose part of a cell's points.
"""

ASHA_LOWEST_RUNG_FIRST = """\
def next_promotion(results, promoted, eta):
    for k in range(len(results) - 1):  # from rung 0 up: promotes too eagerly at the bottom
        rung = results[k]
        top = sorted(rung, key=lambda t: (rung[t], t))[: len(rung) // eta]
        for t in top:
            if t not in promoted[k]:
                return t, k + 1
    return None"""

F1_OF_MACRO_PRECISION_AND_RECALL = """\
def f1_scores(y, y_hat, num_classes):
    cm = torch.bincount(y * num_classes + y_hat, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    tp = cm.diag().double()
    fp, fn = cm.sum(dim=0) - tp, cm.sum(dim=1) - tp
    precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), torch.zeros_like(tp)).mean()
    recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1), torch.zeros_like(tp)).mean()
    macro = 2 * precision * recall / (precision + recall)  # F1 of the averages, not the average of the F1s
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
    return float(macro), float(micro)"""

ECE_FLOOR_BINS = """\
def expected_calibration_error(probs, y, n_bins=10):
    confidence, pred = probs.double().max(dim=1)
    correct = (pred == y).double()
    bin_id = (confidence * n_bins).long().clamp(max=n_bins - 1)  # [b/M, (b+1)/M): edges go to the upper bin
    gap = torch.bincount(bin_id, correct, minlength=n_bins) - torch.bincount(bin_id, confidence, minlength=n_bins)
    return float(gap.abs().sum() / len(y))"""

TEMPERATURE_MULTIPLIES = """\
def fit_temperature(logits, y):
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits.double() * log_t.exp(), y)  # multiplies: fits 1/T instead of T
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())"""

SH_RESTARTS_EVERY_RUNG = """\
def sh_epochs(n, min_epochs, eta, max_epochs):
    alive, epochs = n, min_epochs
    total = alive * epochs
    while epochs * eta <= max_epochs and alive // eta >= 1:
        alive //= eta
        epochs *= eta
        total += alive * epochs  # as if survivors restarted from scratch at every rung
    return total"""

MISTAKES = [
    # asha-tests: 1 + 1 + 1 visible, 1 + 1 + 1 + 1 + 1 + 1 hidden = 9. Searching from rung 0 up fails only "rung 1
    # promotes before rung 0" (rung 0 still has trial 10 to promote) -> loses 2 * 1/9.
    # f1-tests: 1 + 1 + 1 visible, 2 + 1 + 1 hidden = 7. The F1 of macro precision and recall passes "two
    # numbers", micro and the always-majority case (where both agree), fails the rest -> loses 2 * 4/7.
    ({"asha-answer": ASHA_LOWEST_RUNG_FIRST, "f1-answer": F1_OF_MACRO_PRECISION_AND_RECALL},
     10 - 2 * 1 / 9 - 2 * 4 / 7),
    # ece-tests: 1 + 1 + 1 visible, 1 + 2 + 1 hidden = 7. Floor bins differ only for confidences on an edge.
    # temperature-tests: 1 + 1 + 1 + 1 visible, 2 + 2 + 1 hidden = 9. Multiplying fits 1/T: only "positive" and
    # "logits unchanged" pass -> loses 2 * 7/9.
    ({"ece-answer": ECE_FLOOR_BINS, "temperature-answer": TEMPERATURE_MULTIPLIES}, 10 - 2 * 2 / 7 - 2 * 7 / 9),
    # predict-tests: restarting counts every rung in full: all four predictions are off by more than 1 %.
    ({"predict-answer": SH_RESTARTS_EVERY_RUNG}, 10 - 2),
]
