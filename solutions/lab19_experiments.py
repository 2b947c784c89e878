# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 19: experiments
#
# This lab goes with notebook 19. You write the pieces of a hyperparameter search and of a classifier's
# evaluation that libraries usually hide, and the tests compare them with scikit-learn and with a reference.
#
# **Learning goals.** After this lab you can
# - state ASHA's promotion rule precisely and apply it to a set of rung results;
# - compute macro- and micro-averaged F1 from predictions;
# - compute the expected calibration error of a classifier's probabilities;
# - fit a temperature that calibrates a classifier's logits;
# - predict the compute that successive halving spends, before measuring it.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab19_experiments.ipynb` tells you what passes.
# Each exercise is graded on its own: a later one never calls your answer to an earlier one.
#
# **Time.** About 60–80 minutes. Every cell runs in well under a second on a laptop CPU; no GPU needed.
#
# **Points.** 10 in all: ASHA's promotion rule 2, F1 2, ECE 2, temperature scaling 2, predicting successive
# halving's compute 2.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import math

import numpy as np
import sklearn.metrics
import torch
import torch.nn.functional as F

import dlcourse
from dlcourse.grading.checks import check_close, check_equal, check_prediction, check_true, forbid

cfg = dlcourse.setup(seed=0)
# Tests of from-scratch metrics switch scikit-learn's versions off while they call yours.
SKLEARN_METRICS = tuple((sklearn.metrics, name) for name in (
    "f1_score", "fbeta_score", "precision_recall_fscore_support", "confusion_matrix", "multilabel_confusion_matrix",
    "classification_report", "precision_score", "recall_score"))
NO_SKLEARN = "compute the metric from tensor operations: scikit-learn's metrics are switched off while tests call yours"


def successive_halving(configs: list, min_epochs: int, eta: int, max_epochs: int, train_to) -> object:
    """Synchronous successive halving (notebook 19): train every config to ``min_epochs``; keep the best
    ⌊n/η⌋ of the n trained at this rung and train them on (continuing, not restarting) to η times as many epochs;
    repeat while the next rung stays within ``max_epochs`` and at least one config is kept. ``train_to(config,
    epochs)`` trains ``config`` up to ``epochs`` epochs in all and returns its validation loss. Returns the config
    with the lowest loss at the last rung reached."""
    alive, epochs = list(configs), min_epochs
    losses = {id(c): train_to(c, epochs) for c in alive}
    while epochs * eta <= max_epochs and len(alive) // eta >= 1:
        alive = sorted(alive, key=lambda c: losses[id(c)])[: len(alive) // eta]
        epochs *= eta
        losses = {id(c): train_to(c, epochs) for c in alive}
    return min(alive, key=lambda c: losses[id(c)])


# %% [markdown] nbgrader={"grade": false, "grade_id": "asha-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: ASHA's promotion rule (2 points)
#
# ASHA keeps, for every rung $k$ (a number of epochs), the validation losses of the trials that have finished
# that rung: `results[k]` is a dict `{trial_id: loss}`, and `promoted[k]` the set of trial ids already promoted
# from rung $k$ to rung $k + 1$. When a worker is free, ASHA asks for the next promotion:
#
# - look at the rungs from the **highest** one that can still promote (the second to last) **down** to rung 0;
# - in rung $k$ with $n$ results, the candidates are the $\lfloor n/\eta \rfloor$ trials with the lowest losses
#   (ties broken by the smaller trial id); the first candidate in that order not yet in `promoted[k]` is
#   promoted to rung $k + 1$;
# - the first rung that has such a trial wins.
#
# Write `next_promotion(results, promoted, eta)` returning `(trial_id, k + 1)` for that trial, or `None` when
# no rung has one (ASHA then starts a new trial at rung 0). It must not change its arguments.

# %% nbgrader={"grade": false, "grade_id": "asha-answer", "locked": false, "schema_version": 3, "solution": true}
def next_promotion(results: list[dict[int, float]], promoted: list[set[int]], eta: int) -> tuple[int, int] | None:
    """results[k]: {trial id: loss at rung k}; promoted[k]: ids already promoted out of rung k.
    Returns (trial id, rung to train it to) or None."""
    ### BEGIN SOLUTION
    for k in reversed(range(len(results) - 1)):
        rung = results[k]
        top = sorted(rung, key=lambda t: (rung[t], t))[: len(rung) // eta]
        for t in top:
            if t not in promoted[k]:
                return t, k + 1
    return None
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "asha-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
_results = [{0: 0.9, 1: 0.5, 2: 0.7}, {}, {}]
check_equal("three results at rung 0, η = 3: promote the best", next_promotion(_results, [set(), set(), set()], 3),
            expected=(1, 1), hint="⌊3/3⌋ = 1 candidate: the trial with the lowest loss, promoted to rung 1")
check_equal("the best is already promoted, only ⌊3/3⌋ = 1 candidate: nothing to promote",
            next_promotion(_results, [{1}, set(), set()], 3), expected=None,
            hint="only the top ⌊n/η⌋ trials of a rung may be promoted; return None when all of them already were")
_results = [{0: 0.9, 1: 0.5, 2: 0.7, 3: 0.4, 4: 0.8, 5: 0.6}, {1: 0.45, 3: 0.3}, {}]
check_equal("six at rung 0 (two promoted), two at rung 1", next_promotion(_results, [{1, 3}, set(), set()], 3),
            expected=None,
            hint="rung 1 has ⌊2/3⌋ = 0 candidates; rung 0's top 2 (trials 3 and 1) are both promoted")
print("ASHA: visible tests passed")

### BEGIN HIDDEN TESTS
_losses = {i: (i * 7 % 10) / 10 for i in range(12)}  # lowest: 0 and 10 (0.0, tied), 3 (0.1), 6 (0.2)
_results = [_losses, {0: 0.3, 3: 0.1, 6: 0.2}, {}]
_promoted = [{0, 3, 6}, set(), set()]
_before = ([dict(r) for r in _results], [set(p) for p in _promoted])
check_equal("rung 1 promotes before rung 0 (highest rung first)", next_promotion(_results, _promoted, 3),
            expected=(3, 2), hint="look at the rungs from the highest that can promote down to rung 0")
check_equal("arguments unchanged", [_results, _promoted], expected=[_before[0], _before[1]],
            hint="return the promotion; don't record it in results or promoted")
check_equal("every candidate of every rung promoted already",
            next_promotion(_results, [{0, 3, 6, 10}, {3}, set()], 3), expected=None,
            hint="only the top ⌊n/η⌋ of each rung may be promoted, each once")
check_equal("rung 1 too small to promote, so rung 0 promotes (ties by trial id)",
            next_promotion([_losses, {0: 0.3, 3: 0.1}, {}], [{0, 3}, set(), set()], 3), expected=(10, 1),
            hint="rung 1 has ⌊2/3⌋ = 0 candidates; rung 0's top 4 by (loss, id) are trials 0, 10, 3 and 6")
check_equal("ties broken by the smaller trial id, η = 2",
            next_promotion([{5: 0.3, 2: 0.3, 7: 0.1, 1: 0.9}, {}], [{7}, set()], 2), expected=(2, 1),
            hint="sort by (loss, trial id)")
check_equal("the last rung never promotes", next_promotion([{0: 0.1, 1: 0.2, 2: 0.3}], [set()], 3),
            expected=None, hint="only rungs 0 .. len(results) - 2 can promote into a next rung")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "f1-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: macro and micro F1 (2 points)
#
# For class $c$, with TP, FP and FN counted over the examples, $F1_c = \frac{2\,TP}{2\,TP + FP + FN}$
# (defined as 0 when the denominator is 0, as scikit-learn does). **Macro**-F1 is the mean of $F1_c$ over the
# `num_classes` classes, including classes that never occur; **micro**-F1 sums TP, FP and FN over the classes
# first and then applies the formula.
#
# Write `f1_scores(y, y_hat, num_classes)` for integer tensors `y` (true) and `y_hat` (predicted) of shape `(N,)`,
# returning `(macro_f1, micro_f1)` as Python floats. scikit-learn's metrics are switched off while the tests call
# yours.

# %% nbgrader={"grade": false, "grade_id": "f1-answer", "locked": false, "schema_version": 3, "solution": true}
def f1_scores(y: torch.Tensor, y_hat: torch.Tensor, num_classes: int) -> tuple[float, float]:
    ### BEGIN SOLUTION
    cm = torch.bincount(y * num_classes + y_hat, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    tp = cm.diag().double()
    fp, fn = cm.sum(dim=0) - tp, cm.sum(dim=1) - tp
    denominator = 2 * tp + fp + fn
    f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.zeros_like(tp))
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
    return float(f1.mean()), float(micro)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "f1-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _f1(y, y_hat, num_classes):
    with forbid(SKLEARN_METRICS, NO_SKLEARN):
        return f1_scores(y, y_hat, num_classes)


def _sk_f1(y, y_hat, num_classes):
    return [sklearn.metrics.f1_score(y, y_hat, labels=range(num_classes), average=a, zero_division=0)
            for a in ("macro", "micro")]


_y, _y_hat = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2]), torch.tensor([0, 1, 1, 1, 2, 2, 0, 0])
_answer = _f1(_y, _y_hat, 3)
check_true("returns two numbers", isinstance(_answer, tuple) and len(_answer) == 2,
           hint="return (macro_f1, micro_f1)")
check_close("macro-F1 of a small example", float(_answer[0]), expected=_sk_f1(_y, _y_hat, 3)[0], rtol=1e-6,
            hint="the mean of the three classes' F1 = 2TP / (2TP + FP + FN)")
check_close("micro-F1 of a small example", float(_answer[1]), expected=_sk_f1(_y, _y_hat, 3)[1], rtol=1e-6,
            hint="sum TP, FP and FN over the classes, then apply the formula (it equals the accuracy here)")
print("F1: visible tests passed")

### BEGIN HIDDEN TESTS
_g = torch.Generator().manual_seed(1)
_y = torch.randint(0, 6, (500,), generator=_g)
_y_hat = torch.where(torch.rand(500, generator=_g) < 0.6, _y, torch.randint(0, 6, (500,), generator=_g))
check_close("macro and micro F1, 6 classes, 500 examples", list(_f1(_y, _y_hat, 6)), expected=_sk_f1(_y, _y_hat, 6),
            rtol=1e-6, weight=2, hint="one F1 per class, then the mean (macro); pooled counts (micro)")
_y, _y_hat = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1])
check_close("classes 2 and 3 never occur (F1 0 each, in the macro mean)", list(_f1(_y, _y_hat, 4)),
            expected=_sk_f1(_y, _y_hat, 4), rtol=1e-6, hint="a class with 2TP + FP + FN = 0 has F1 0 and still counts")
_y = torch.tensor([1, 1, 1, 1, 1, 1, 1, 1, 1, 0])
check_close("imbalanced: always predicting the majority", list(_f1(_y, torch.ones(10, dtype=torch.long), 2)),
            expected=_sk_f1(_y, torch.ones(10, dtype=torch.long), 2), rtol=1e-6,
            hint="the never-predicted class has F1 0: macro-F1 is far below the accuracy")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "ece-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: expected calibration error (2 points)
#
# For probabilities `probs` of shape `(N, C)` and labels `y` of shape `(N,)`, each example's **confidence** is
# its largest probability and it is **correct** when that class (the argmax) is `y`. Split the interval $[0, 1]$
# into `n_bins` equal bins, bin $b$ holding the confidences in $(\frac{b}{M}, \frac{b+1}{M}]$ (bin 0 also holds
# 0; $M$ = `n_bins`), exactly as scikit-learn's `calibration_curve` does. Then
# $$\mathrm{ECE} = \sum_{b} \frac{|B_b|}{N}\, \big|\mathrm{acc}(B_b) - \mathrm{conf}(B_b)\big|,$$
# with acc the fraction correct and conf the mean confidence in bin $B_b$; empty bins add nothing.
#
# Write `expected_calibration_error(probs, y, n_bins=10)` returning a Python float.

# %% nbgrader={"grade": false, "grade_id": "ece-answer", "locked": false, "schema_version": 3, "solution": true}
def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, n_bins: int = 10) -> float:
    ### BEGIN SOLUTION
    confidence, pred = probs.double().max(dim=1)
    correct = (pred == y).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    bin_id = torch.bucketize(confidence, edges[1:-1])                # (edges[b], edges[b+1]]
    gap = (torch.bincount(bin_id, correct, minlength=n_bins) - torch.bincount(bin_id, confidence, minlength=n_bins))
    # |B_b|/N · |acc − conf| = |Σ_{i in B_b} (correct_i − confidence_i)| / N
    return float(gap.abs().sum() / len(y))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ece-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _ece_oracle(probs, y, n_bins):
    """ECE with the bins of scikit-learn's calibration_curve (np.searchsorted on the inner edges, side 'left')."""
    confidence, pred = probs.double().max(dim=1)
    conf, correct = confidence.numpy(), (pred == y).numpy().astype(float)
    bins = np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], conf)
    return float(sum((bins == b).mean() * abs(correct[bins == b].mean() - conf[bins == b].mean())
                     for b in np.unique(bins)))


_g = torch.Generator().manual_seed(0)
_logits = 3 * torch.randn(400, 5, generator=_g)
_y = torch.multinomial((_logits / 3).softmax(dim=1), 1, generator=_g).squeeze(1)  # labels follow softmax(z / 3)
_probs = _logits.softmax(dim=1)
_ece = expected_calibration_error(_probs, _y, 10)
check_true("returns a number", isinstance(_ece, (float, int)), hint="return a Python float (float(tensor))")
check_close("ECE of an overconfident classifier, 10 bins", _ece, expected=_ece_oracle(_probs, _y, 10), rtol=1e-6,
            hint="weight each bin's |accuracy − mean confidence| by its share of the examples")
check_close("a perfectly confident, always right classifier has ECE 0",
            expected_calibration_error(torch.eye(4), torch.arange(4), 10), expected=0.0, atol=1e-12,
            hint="confidence 1 and accuracy 1 in the top bin")
print("ECE: visible tests passed")

### BEGIN HIDDEN TESTS
check_close("ECE with 15 bins", expected_calibration_error(_probs, _y, 15), expected=_ece_oracle(_probs, _y, 15),
            rtol=1e-6, hint="n_bins equal bins between 0 and 1")
_edge = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.75, 0.25, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0],
                      [0.25, 0.75, 0.0, 0.0], [0.6, 0.4, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0]])  # exact in binary
_edge_y = torch.tensor([0, 1, 0, 1, 1, 0, 3])
check_close("confidences exactly on bin edges go to the lower bin: (b/M, (b+1)/M]",
            expected_calibration_error(_edge, _edge_y, 4), expected=_ece_oracle(_edge, _edge_y, 4), rtol=1e-9,
            weight=2, hint="with 4 bins, 0.5 belongs to (0.25, 0.5], not (0.5, 0.75]; confidence 1.0 to the last bin")
check_close("float32 probabilities and labels on their own", expected_calibration_error(_probs.float(), _y, 10),
            expected=_ece_oracle(_probs, _y, 10), rtol=1e-5, hint="work in float64 to avoid rounding")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "temperature-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: temperature scaling (2 points)
#
# Temperature scaling divides a classifier's logits by one number $T > 0$, chosen to minimise the negative
# log-likelihood (the mean cross-entropy) of the labels on held-out data. Write `fit_temperature(logits, y)`
# for logits `(N, C)` and labels `(N,)` returning that $T$ as a Python float, accurate to 0.1 % relative. Any
# method works (a gradient-based optimiser over $\log T$, a fine search, Newton's method); it must not change
# `logits`.

# %% nbgrader={"grade": false, "grade_id": "temperature-answer", "locked": false, "schema_version": 3, "solution": true}
def fit_temperature(logits: torch.Tensor, y: torch.Tensor) -> float:
    ### BEGIN SOLUTION
    # The NLL is convex in beta = 1/T (a log-sum-exp of linear functions of beta minus a linear one): damped
    # Newton steps on beta, with first and second derivatives from autograd, reach its minimum in a few steps.
    logits = logits.detach().double()

    def nll(beta: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits * beta, y)

    beta = torch.tensor(1.0, dtype=torch.float64)
    for _ in range(100):
        beta.requires_grad_(True)
        loss = nll(beta)
        (grad,) = torch.autograd.grad(loss, beta, create_graph=True)
        (curvature,) = torch.autograd.grad(grad, beta)
        beta, step = beta.detach(), float(grad / curvature)
        while step != 0 and not (beta - step > 0 and nll(beta - step) <= loss):
            step /= 2                                    # damp: stay positive and never increase the loss
        beta = beta - step
        if abs(step) < 1e-12 * float(beta):
            break
    return 1.0 / float(beta)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "temperature-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _nll(logits, y, t):
    return float(F.cross_entropy(logits.double() / t, y))


_g = torch.Generator().manual_seed(2)
_true_logits = 2 * torch.randn(20_000, 10, generator=_g)
_y = torch.multinomial(_true_logits.softmax(dim=1), 1, generator=_g).squeeze(1)
_overconfident = 2.5 * _true_logits                  # the labels follow softmax(z); the model says softmax(2.5 z)
_copy = _overconfident.clone()
_T = fit_temperature(_overconfident, _y)
check_true("returns a positive number", isinstance(_T, (float, int)) and _T > 0, hint="return T as a float > 0")
check_close("the fitted temperature: near 2.5, the temperature the labels were drawn at", _T, expected=2.5,
            rtol=0.05, hint="minimise the cross-entropy of logits / T over T (the labels were drawn from logits / 2.5)")
check_true("the NLL at T is no higher than at T = 1 or T ± 1 %",
           _nll(_overconfident, _y, _T) <= min(_nll(_overconfident, _y, t) for t in (1.0, _T * 0.99, _T * 1.01)),
           hint="T must minimise the NLL")
check_true("logits unchanged", torch.equal(_overconfident, _copy), hint="divide into a new tensor; don't edit logits")
print("temperature: visible tests passed")

### BEGIN HIDDEN TESTS
def _t_oracle(logits, y):
    """Golden-section search for the NLL's minimum over log T in [-5, 5] (the NLL is unimodal in T)."""
    a, b, r = -5.0, 5.0, (math.sqrt(5) - 1) / 2
    for _ in range(100):
        c, d = b - r * (b - a), a + r * (b - a)
        if _nll(logits, y, math.exp(c)) < _nll(logits, y, math.exp(d)):
            b = d
        else:
            a = c
    return math.exp((a + b) / 2)


check_close("the fitted temperature minimises the NLL to 0.1 %", _T, expected=_t_oracle(_overconfident, _y),
            rtol=1e-3, weight=2, hint="minimise the NLL exactly: the minimum of this sample, not 2.5")
_underconfident = 0.5 * _true_logits[:800]
check_close("an underconfident model gets T < 1", fit_temperature(_underconfident, _y[:800]),
            expected=_t_oracle(_underconfident, _y[:800]), rtol=1e-3, weight=2,
            hint="T can be smaller than 1: allow it")
_small = 1.5 * _true_logits[:300, :4].float()
_small_y = _y[:300] % 4
check_close("float32 logits, 4 classes, 300 examples", fit_temperature(_small, _small_y),
            expected=_t_oracle(_small, _small_y), rtol=1e-3, hint="minimise the NLL exactly, wherever the minimum is")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "predict-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: predict the compute of successive halving (2 points)
#
# The setup cell defines `successive_halving(configs, min_epochs, eta, max_epochs, train_to)` (read its
# docstring): every configuration is trained to `min_epochs`, the best ⌊n/η⌋ continue to η times as many
# epochs, and so on. Surviving trials **continue** training; they are not restarted.
#
# **Predict first.** Write `sh_epochs(n, min_epochs, eta, max_epochs)`: the total number of training epochs
# that `successive_halving` spends on `n` configurations, from the rule alone. Don't call `successive_halving`
# (the tests switch it off while they call yours). The tests then measure it by running `successive_halving`
# with a `train_to` that counts epochs, at the arguments below and at hidden ones. Tolerance: 1 % (the count is
# exact, so a correct formula is exactly right).

# %% nbgrader={"grade": false, "grade_id": "predict-answer", "locked": false, "schema_version": 3, "solution": true}
def sh_epochs(n: int, min_epochs: int, eta: int, max_epochs: int) -> int:
    ### BEGIN SOLUTION
    alive, epochs = n, min_epochs
    total = alive * epochs
    while epochs * eta <= max_epochs and alive // eta >= 1:
        alive //= eta
        total += alive * (epochs * eta - epochs)   # continue from epochs to epochs·η
        epochs *= eta
    return total
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "predict-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _measured_epochs(n, min_epochs, eta, max_epochs):
    done, spent = {}, [0]

    def train_to(config, epochs):
        spent[0] += epochs - done.get(config, 0)
        done[config] = epochs
        return math.sin(config)              # any loss: the count does not depend on which configs survive

    successive_halving(list(range(n)), min_epochs, eta, max_epochs, train_to)
    return spent[0]


def _predicted(*args):
    with forbid([(sys.modules[__name__], "successive_halving")], "predict from the rule: successive_halving is "
                "switched off while the tests call sh_epochs"):
        return sh_epochs(*args)


check_prediction("27 configs, 1 epoch, η = 3, up to 27 epochs", _predicted(27, 1, 3, 27),
                 expected=_measured_epochs(27, 1, 3, 27), rtol=0.01,
                 hint="27 trials × 1 epoch, then 9 trials × 2 more, 3 × 6 more, 1 × 18 more")
check_prediction("81 configs, 2 epochs, η = 3, up to 20 epochs", _predicted(81, 2, 3, 20),
                 expected=_measured_epochs(81, 2, 3, 20), rtol=0.01,
                 hint="the rungs stop at the last one within max_epochs (2, 6, 18)")
print("successive halving compute: visible tests passed")

### BEGIN HIDDEN TESTS
check_prediction("10 configs, 1 epoch, η = 2, up to 16 epochs", _predicted(10, 1, 2, 16),
                 expected=_measured_epochs(10, 1, 2, 16), rtol=0.01,
                 hint="⌊10/2⌋ = 5, ⌊5/2⌋ = 2, ⌊2/2⌋ = 1: floors at every rung")
check_prediction("5 configs, 3 epochs, η = 4, up to 100 epochs", _predicted(5, 3, 4, 100),
                 expected=_measured_epochs(5, 3, 4, 100), rtol=0.01,
                 hint="stop when fewer than η configs are left: ⌊1/4⌋ = 0")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "predict-reveal", "locked": true, "schema_version": 3, "solution": false}
# How far off were you? Below, successive halving's measured compute next to training every configuration to
# the end: with η = 3 each rung costs about as much as the first, so the total grows like $n \log_\eta n$
# epochs instead of $n \cdot$ `max_epochs`.

# %% nbgrader={"grade": false, "grade_id": "predict-show", "locked": true, "schema_version": 3, "solution": false}
for _n in (9, 27, 81, 243):
    print(f"{_n:>4} configs, 1 to 81 epochs, η = 3: {_measured_epochs(_n, 1, 3, 81):>5} epochs "
          f"(training all {_n} to 81 epochs: {_n * 81})")
