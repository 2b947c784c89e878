# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 05: regularisation and data pipelines
#
# This lab goes with notebook 05. You write four tools that the notebook used, and PyTorch (or
# torchvision, or scikit-learn) checks each one.
#
# **Learning goals.** After this lab you can
# - write label-smoothed cross-entropy from log-probabilities and match `F.cross_entropy(label_smoothing=...)`;
# - mix a batch of images and labels (mixup) and match `torchvision.transforms.v2.MixUp`;
# - write an early-stopping callback for `dlcourse.fit` that restores the best weights;
# - counter class imbalance with class weights for the loss and with a balanced `WeightedRandomSampler`;
# - predict the lowest loss that label smoothing allows, and see training reach it.
#
# **How it works.** Run the setup cell first. Each exercise has an instruction cell, an answer cell and a test
# cell. Replace `raise NotImplementedError()` in the answer cell with your code, then run the test cell below
# it: it passes when it finishes without an error. Don't edit the test cells; the grader runs its own copy of
# them, and some extra hidden tests. `dlcourse check labs/lab05_regularization_data.ipynb` tells you what
# passes.
#
# **Time.** About 70–100 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 11 in all: label smoothing 2, mixup 2, early stopping 3, class weights 1, balanced sampler 2, the
# lowest label-smoothed loss (predict, then measure) 1.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import copy

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset, WeightedRandomSampler
from torchvision.transforms import v2

import dlcourse

from dlcourse.grading.checks import check_close, check_equal, check_prediction, check_true, forbid

cfg = dlcourse.setup(seed=0)
# The label-smoothing tests switch torch's cross-entropy off while they call your function.
CROSS_ENTROPY_FUNCTIONS = ((F, "cross_entropy"), (F, "nll_loss"))
NO_BUILTIN_CE = ("write this from torch.log_softmax and tensor operations: F.cross_entropy and F.nll_loss are "
                 "switched off while the tests call your function")

# %% [markdown] nbgrader={"grade": false, "grade_id": "label-smoothing-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 1: label-smoothed cross-entropy (2 points)
#
# Plain cross-entropy compares the predicted distribution with a one-hot target. Label smoothing mixes that
# target with the uniform distribution over the $C$ classes:
#
# $$q_k = (1 - \varepsilon)\,[k = y] + \frac{\varepsilon}{C}, \qquad
#   L = \frac{1}{N}\sum_{i=1}^{N} \Big(-\sum_{k=1}^{C} q_{ik} \log \hat p_{ik}\Big).$$
#
# The true class gets $1 - \varepsilon + \varepsilon/C$ and **every** class, the true one included, gets
# $\varepsilon / C$ on top (not $\varepsilon/(C-1)$ spread over the wrong ones only: that is a different loss).
#
# Write `label_smoothed_cross_entropy(logits, y, eps)`, returning $L$ as a 0-dim tensor in the dtype of
# `logits`. It must equal `F.cross_entropy(logits, y, label_smoothing=eps)`, gradients included, and stay
# finite and right for logits in the thousands, where `softmax(...).log()` gives `-inf`. `torch.log_softmax` is
# allowed; `F.cross_entropy` and `F.nll_loss` are switched off while the tests call your function.

# %% nbgrader={"grade": false, "grade_id": "label-smoothing-answer", "locked": false, "schema_version": 3, "solution": true}
def label_smoothed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Cross-entropy against the smoothed targets q = (1 - eps) * one_hot(y) + eps / C, averaged over the batch.

    logits: (N, C) float scores; y: (N,) int64 class indices; eps: smoothing in [0, 1].
    Returns a 0-dim tensor with the dtype of ``logits``.
    """
    ### BEGIN SOLUTION
    C = logits.shape[1]
    log_p = torch.log_softmax(logits, dim=1)                        # (N, C), stable for large logits
    q = (1 - eps) * F.one_hot(y, C).to(logits.dtype) + eps / C      # (N, C), rows sum to 1
    return -(q * log_p).sum(dim=1).mean()                           # (N,) -> ()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "label-smoothing-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _gradient(f, x):
    """The gradient of the number f(x) with respect to x, by autograd."""
    x = x.detach().clone().requires_grad_(True)
    return torch.autograd.grad(f(x), x)[0]


_gen = torch.Generator().manual_seed(0)
_logits = 2 * torch.randn(6, 4, generator=_gen)            # (N=6, C=4)
_y = torch.tensor([0, 3, 1, 1, 2, 0])                      # (N,)
with forbid(CROSS_ENTROPY_FUNCTIONS, NO_BUILTIN_CE):
    _loss = label_smoothed_cross_entropy(_logits, _y, 0.1)
assert isinstance(_loss, torch.Tensor) and _loss.shape == (), (
    f"the loss should be a 0-dim tensor (the batch mean), got {getattr(_loss, 'shape', type(_loss).__name__)}")
check_close("same as F.cross_entropy(label_smoothing=0.1)", _loss,
            expected=F.cross_entropy(_logits, _y, label_smoothing=0.1), atol=1e-5, weight=2,
            hint="q = (1 - eps) * one_hot + eps / C gives eps / C to every class, the true one included (not "
                 "eps / (C - 1) to the wrong ones only); then the minus sign, the sum over classes and the mean "
                 "over the batch")

with forbid(CROSS_ENTROPY_FUNCTIONS, NO_BUILTIN_CE):
    _loss0 = label_smoothed_cross_entropy(_logits, _y, 0.0)
check_close("eps = 0 gives the plain cross-entropy", _loss0, expected=F.cross_entropy(_logits, _y), atol=1e-5,
            hint="with eps = 0 the target is one-hot and the loss is F.cross_entropy(logits, y)")

_big = torch.tensor([[1000.0, 0.0, -1000.0], [0.0, 300.0, 100.0]])     # softmax(...).log() gives -inf here
_y_big = torch.tensor([0, 1])
with forbid(CROSS_ENTROPY_FUNCTIONS, NO_BUILTIN_CE):
    _loss_big = label_smoothed_cross_entropy(_big, _y_big, 0.1)
check_close("large logits (±1000): finite and right", _loss_big,
            expected=F.cross_entropy(_big, _y_big, label_smoothing=0.1), rtol=1e-5, weight=2,
            hint="use torch.log_softmax(logits, dim=1), not softmax(...).log(): tiny probabilities round to 0 and "
                 "log(0) = -inf")

_z = _logits.clone().requires_grad_(True)
with forbid(CROSS_ENTROPY_FUNCTIONS, NO_BUILTIN_CE):
    _out = label_smoothed_cross_entropy(_z, _y, 0.2)
if _out.requires_grad:
    _out.backward()
check_close("the gradient with respect to the logits", _z.grad,
            expected=_gradient(lambda z: F.cross_entropy(z, _y, label_smoothing=0.2), _logits), atol=1e-6,
            hint="the gradient differs from F.cross_entropy's (or there is none): keep every step a tensor "
                 "operation (no .item(), .detach() or NumPy)")
print("label_smoothed_cross_entropy: visible tests passed")

### BEGIN HIDDEN TESTS
_cases = []
for _seed, (_n, _c), _eps in [(1, (1, 2), 0.1), (2, (7, 10), 0.3), (3, (64, 100), 0.05), (4, (5, 3), 1.0),
                              (5, (9, 6), 0.5)]:
    _g = torch.Generator().manual_seed(_seed)
    _cases.append((4 * torch.randn(_n, _c, generator=_g), torch.randint(0, _c, (_n,), generator=_g), _eps))
with forbid(CROSS_ENTROPY_FUNCTIONS, NO_BUILTIN_CE):
    _ls = [label_smoothed_cross_entropy(_zz, _tt, _e) for _zz, _tt, _e in _cases]
check_close("5 batch shapes and eps values", _ls,
            expected=[F.cross_entropy(_zz, _tt, label_smoothing=_e) for _zz, _tt, _e in _cases], atol=1e-5,
            weight=2, hint="shapes (1, 2), (7, 10), (64, 100), (5, 3), (9, 6) with eps 0.1, 0.3, 0.05, 1.0, 0.5 "
                           "(item 0 to 4): the loss is a 0-dim tensor, C is logits.shape[1]")

_zz = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4 - 3.0, -1e4 + 1.0], [1e30, -1e30, 0.0]])
_tt = torch.tensor([1, 1, 0])
with forbid(CROSS_ENTROPY_FUNCTIONS, NO_BUILTIN_CE):
    _l = label_smoothed_cross_entropy(_zz, _tt, 0.1)
check_close("extreme logits (±1e4, ±1e30)", _l, expected=F.cross_entropy(_zz, _tt, label_smoothing=0.1),
            rtol=1e-5, hint="the loss must be finite and right on extreme logits: use torch.log_softmax")

_g = torch.Generator().manual_seed(9)
_zz = 3 * torch.randn(16, 5, dtype=torch.float64, generator=_g)
_tt = torch.randint(0, 5, (16,), generator=_g)
_zg = _zz.clone().requires_grad_(True)
with forbid(CROSS_ENTROPY_FUNCTIONS, NO_BUILTIN_CE):
    _l = label_smoothed_cross_entropy(_zg, _tt, 0.15)
if _l.requires_grad:
    _l.backward()
check_close("float64 logits: dtype, value and gradient", [str(_l.dtype), _l.detach(), _zg.grad],
            expected=["torch.float64", F.cross_entropy(_zz, _tt, label_smoothing=0.15),
                      _gradient(lambda z: F.cross_entropy(z, _tt, label_smoothing=0.15), _zz)], atol=1e-10,
            hint="keep the logits' dtype: build q with .to(logits.dtype), not .float()")

# the minimum is at logits = log q, with value the entropy of q
_q = 0.9 * F.one_hot(torch.tensor([2, 0]), 4).double() + 0.1 / 4
with forbid(CROSS_ENTROPY_FUNCTIONS, NO_BUILTIN_CE):
    _l = label_smoothed_cross_entropy(_q.log(), torch.tensor([2, 0]), 0.1)
check_close("at logits = log q the loss is the entropy of q", _l, expected=-(_q * _q.log()).sum(dim=1).mean(),
            atol=1e-10, hint="the smoothed loss at its optimum equals the entropy of the target q")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "mixup-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 2: mixup (2 points)
#
# Mixup trains on blends of two examples. With a weight $\lambda \in [0, 1]$ and, for each example $i$ of the
# batch, a partner $j = \text{perm}[i]$ from the same batch:
#
# $$\tilde X_i = \lambda X_i + (1 - \lambda) X_{\text{perm}[i]}, \qquad
#   \tilde y_i = \lambda\,\mathrm{onehot}(y_i) + (1 - \lambda)\,\mathrm{onehot}(y_{\text{perm}[i]}).$$
#
# Write `mixup(X, y, lam, perm, num_classes)` returning `(X_mix, y_mix)`. `X` has any shape `(N, ...)`
# (images `(N, C, H, W)` or features `(N, d)`) and `X_mix` has its shape and dtype; `y_mix` is a float
# tensor `(N, num_classes)` whose rows sum to 1. `X` and `y` must be left as they are. In training, `lam` is
# drawn from $\mathrm{Beta}(\alpha, \alpha)$ and `perm` is random; here they are arguments, so that the tests
# can compare with torchvision's `v2.MixUp`, which pairs each example with the previous one
# (`perm = torch.arange(N).roll(1)`).

# %% nbgrader={"grade": false, "grade_id": "mixup-answer", "locked": false, "schema_version": 3, "solution": true}
def mixup(X: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor,
          num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend each example with its partner perm[i].

    X: (N, ...) float; y: (N,) int64 labels; lam: weight of the example itself; perm: (N,) int64 partner indices.
    Returns X_mix (N, ...) like X, and y_mix (N, num_classes) float soft labels.
    """
    ### BEGIN SOLUTION
    y_onehot = F.one_hot(y, num_classes).to(X.dtype)                     # (N, num_classes)
    X_mix = lam * X + (1 - lam) * X[perm]                                # (N, ...)
    y_mix = lam * y_onehot + (1 - lam) * y_onehot[perm]                  # (N, num_classes)
    return X_mix, y_mix
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "mixup-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _torchvision_mixup(X, y, num_classes, seed):
    """torchvision's v2.MixUp applied to (X, y), with its random weight drawn under torch.manual_seed(seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return v2.MixUp(alpha=1.0, num_classes=num_classes)(X, y)


def _one_hot(y, num_classes):
    """One-hot rows as float32."""
    return F.one_hot(y, num_classes).float()


def _torchvision_lambda(seed):
    """The weight lambda v2.MixUp draws under torch.manual_seed(seed), read from a batch of two tiny images."""
    _, y_mix = _torchvision_mixup(torch.zeros(2, 1, 1, 1), torch.tensor([0, 1]), 2, seed)
    return y_mix[0, 0].item()                        # example 0 keeps weight lambda on its own class


_gen = torch.Generator().manual_seed(0)
_X = torch.rand(8, 3, 4, 4, generator=_gen)                 # (N=8, C=3, H=4, W=4)
_y = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])                 # neighbours always differ
_X_before, _y_before = _X.clone(), _y.clone()
_lam = _torchvision_lambda(seed=0)
_out = mixup(_X, _y, _lam, torch.arange(8).roll(1), 6)      # torchvision pairs example i with example i - 1
assert isinstance(_out, tuple) and len(_out) == 2, "mixup should return a pair (X_mix, y_mix)"
_X_mix, _y_mix = _out
check_close("soft labels match torchvision's v2.MixUp", _y_mix,
            expected=_torchvision_mixup(_X, _y, 6, seed=0)[1], atol=1e-6, weight=2,
            hint="y_mix = lam * one_hot(y) + (1 - lam) * one_hot(y[perm]) as a float (N, num_classes) tensor, "
                 "with lam on the example's own label")
check_close("images match torchvision's v2.MixUp", _X_mix, expected=_torchvision_mixup(_X, _y, 6, seed=0)[0],
            atol=1e-6, weight=2, hint="X_mix = lam * X + (1 - lam) * X[perm], with X's shape")
check_equal("X and y are left unchanged", [_X, _y], expected=[_X_before, _y_before],
            hint="don't modify X or y in place (no X.mul_(...)): build new tensors")

# any pairing, not only the rolled one
_perm = torch.randperm(8, generator=_gen)
_X_mix, _y_mix = mixup(_X, _y, 0.3, _perm, 6)
check_close("a random pairing: images and soft labels", [_X_mix, _y_mix],
            expected=[0.3 * _X + 0.7 * _X[_perm], 0.3 * _one_hot(_y, 6) + 0.7 * _one_hot(_y, 6)[_perm]],
            atol=1e-6, weight=2, hint="index the partners with perm: X[perm] and one_hot(y)[perm]")
print("mixup: visible tests passed")

### BEGIN HIDDEN TESTS
# features (N, d), another number of classes, a random permutation
_g = torch.Generator().manual_seed(3)
_Xf = torch.randn(10, 5, generator=_g)
_yf = torch.randint(0, 3, (10,), generator=_g)
_pf = torch.randperm(10, generator=_g)
check_close("(N, d) features with 3 classes", list(mixup(_Xf, _yf, 0.8, _pf, 3)),
            expected=[0.8 * _Xf + 0.2 * _Xf[_pf], 0.8 * _one_hot(_yf, 3) + 0.2 * _one_hot(_yf, 3)[_pf]],
            atol=1e-6, hint="mixup must work for inputs of any shape (N, ...), e.g. (10, 5)")

# lam = 1 leaves the batch as it is; lam = 0 gives the partners
check_close("lam = 1 and lam = 0", list(mixup(_Xf, _yf, 1.0, _pf, 3)) + list(mixup(_Xf, _yf, 0.0, _pf, 3)),
            expected=[_Xf, _one_hot(_yf, 3), _Xf[_pf], _one_hot(_yf, 3)[_pf]], atol=1e-6,
            hint="lam = 1 must give the batch itself, lam = 0 the partners")

# num_classes larger than the labels present
check_close("num_classes columns even when classes are absent",
            mixup(_Xf, torch.zeros(10, dtype=torch.int64), 0.5, _pf, 7)[1],
            expected=_one_hot(torch.zeros(10, dtype=torch.int64), 7), atol=1e-6,
            hint="y_mix must have num_classes columns: F.one_hot(y, num_classes)")

# another torchvision draw, on a bigger batch of images
_Xi = torch.rand(16, 3, 8, 8, generator=_g)
_yi = torch.arange(16) % 10
check_close("16 images, 10 classes: same as v2.MixUp",
            list(mixup(_Xi, _yi, _torchvision_lambda(seed=5), torch.arange(16).roll(1), 10)),
            expected=list(_torchvision_mixup(_Xi, _yi, 10, seed=5)), atol=1e-6,
            hint="mixup differs from torchvision's v2.MixUp on a batch of 16 images")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "early-stopping-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 3: an early-stopping callback (3 points)
#
# `dlcourse.fit(..., callbacks=[...])` calls each callback after every epoch with the `History` so far and
# stops training when a callback returns `True`. `history.last` is the latest epoch's record, a dict with the
# keys `epoch` (1, 2, ...), `train_loss`, `train_acc`, `val_loss`, `val_acc`, `lr` and `seconds`.
#
# Complete `EarlyStopping(model, patience, min_delta)` so that:
# - an epoch **improves** when its `val_loss < best_loss - min_delta`; the callback exposes `best_loss` and
#   `best_epoch`, the best validation loss and its epoch so far (`float("inf")` and 0 before any epoch);
# - called after an epoch, it returns `True` (stop) once `patience` epochs in a row have not improved, and
#   then the model holds the weights of the best epoch again; otherwise it returns `False`;
# - `restore()` puts the best weights seen so far back into the model (and does nothing before any epoch).
#
# The trap: `model.state_dict()` returns the model's **live** tensors, which training keeps changing. A saved
# state that is not a copy "restores" the latest weights.

# %% nbgrader={"grade": false, "grade_id": "early-stopping-answer", "locked": false, "schema_version": 3, "solution": true}
class EarlyStopping:
    """A dlcourse.fit callback that stops when val_loss stops improving and restores the best weights."""

    def __init__(self, model: nn.Module, patience: int = 3, min_delta: float = 0.0) -> None:
        """model: the model being trained; patience: epochs without improvement before stopping;
        min_delta: how much lower than the best val_loss a new one must be to count as an improvement."""
        ### BEGIN SOLUTION
        self.model, self.patience, self.min_delta = model, patience, min_delta
        self.best_loss = float("inf")
        self.best_epoch = 0
        self.best_state = None
        self.bad_epochs = 0
        ### END SOLUTION

    def __call__(self, history: dlcourse.History) -> bool:
        """Called after every epoch; True means: stop training (the best weights are back in the model)."""
        ### BEGIN SOLUTION
        loss = history.last["val_loss"]
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = loss, history.last["epoch"], 0
            self.best_state = copy.deepcopy(self.model.state_dict())   # a copy, not the live tensors
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.restore()
            return True
        return False
        ### END SOLUTION

    def restore(self) -> None:
        """Load the best weights saved so far into the model (nothing happens if none were saved)."""
        ### BEGIN SOLUTION
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "early-stopping-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def _record(epoch, val_loss):
    """One History record as dlcourse.fit writes it."""
    return {"epoch": epoch, "train_loss": 0.1, "train_acc": 1.0, "val_loss": val_loss, "val_acc": 0.5,
            "lr": 0.01, "seconds": 0.0}


def _replay(stopper, model, val_losses):
    """Feed the callback one epoch at a time, as dlcourse.fit does; before each call, set every weight to the
    epoch number, in place (as an optimizer does). Returns the callback's answers, up to the first True."""
    history, answers = dlcourse.History(), []
    for epoch, loss in enumerate(val_losses, start=1):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(epoch))
        history.records.append(_record(epoch, loss))
        answers.append(stopper(history))
        if answers[-1]:
            break
    return answers


def _weights_now(model):
    """The model's weight tensor as it is now (a copy)."""
    return model.weight.detach().clone()


# 1. a scripted run: best at epoch 2, then three epochs without improvement
_model = nn.Linear(3, 2)
_stopper = EarlyStopping(_model, patience=3)
check_equal("a new callback starts with best_loss = inf and best_epoch = 0",
            [_stopper.best_loss, _stopper.best_epoch], expected=[float("inf"), 0],
            hint="start with self.best_loss = float('inf') and self.best_epoch = 0")
_answers = _replay(_stopper, _model, [1.0, 0.8, 0.9, 0.85, 0.95, 0.5])
check_equal("val losses 1.0, 0.8, 0.9, 0.85, 0.95 with patience 3: stop after epoch 5",
            [bool(a) for a in _answers], expected=[False, False, False, False, True],
            hint="an epoch improves when val_loss < best_loss - min_delta; return True once the count of epochs "
                 "without improvement reaches patience")
check_equal("best_epoch and best_loss after that run", [_stopper.best_epoch, _stopper.best_loss],
            expected=[2, 0.8], hint="record history.last['epoch'] and history.last['val_loss'] when it improves")
check_close("after stopping, the model holds epoch 2's weights", _weights_now(_model),
            expected=torch.full((2, 3), 2.0), weight=3,
            hint="save copy.deepcopy(model.state_dict()) when the loss improves (state_dict() alone returns the "
                 "live tensors, which keep changing) and load it back with model.load_state_dict before "
                 "returning True")

# 2. with dlcourse.fit: 50 training digits overfit quickly, so the validation loss turns upwards
_splits = dlcourse.data.digits(flatten=True, seed=0)
_train_loader, _val_loader = dlcourse.data.make_loaders(Subset(_splits.train, range(50)), _splits.val,
                                                        batch_size=25, seed=0)
torch.manual_seed(0)
_mlp = dlcourse.models.mlp(64, [256], 10)
_stopper = EarlyStopping(_mlp, patience=5)
_history = dlcourse.fit(_mlp, torch.optim.AdamW(_mlp.parameters(), lr=1e-2, weight_decay=0.0), _train_loader,
                        _val_loader, num_epochs=100, callbacks=[_stopper], progress=False)
_after = dlcourse.evaluate(_mlp, _val_loader)["loss"]
print(f"stopped after {len(_history)} epochs; best epoch {_stopper.best_epoch}, val loss {_stopper.best_loss:.4f}; "
      f"restored model: {_after:.4f}")
check_equal("with dlcourse.fit: stops patience epochs after the best one",
            [len(_history), _stopper.best_epoch],
            expected=[_history["val_loss"].index(min(_history["val_loss"])) + 1 + 5,
                      _history["val_loss"].index(min(_history["val_loss"])) + 1],
            weight=2, hint="training should stop 5 epochs (the patience) after the epoch with the lowest val_loss")
check_close("with dlcourse.fit: the restored model has the best val loss", _after,
            expected=min(_history["val_loss"]), atol=1e-5, weight=2,
            hint="the best weights are not back in the model: deep-copy the state_dict when the loss improves and "
                 "load it when you stop")
print("EarlyStopping: visible tests passed")

### BEGIN HIDDEN TESTS
# min_delta: improvements smaller than min_delta do not count
_model = nn.Linear(2, 1)
_stopper = EarlyStopping(_model, patience=2, min_delta=0.05)
_answers = _replay(_stopper, _model, [1.0, 0.99, 0.97, 0.5])
check_equal("min_delta = 0.05: answers, best epoch, restored weights",
            [[bool(a) for a in _answers], _stopper.best_epoch, _model.weight.detach().clone()],
            expected=[[False, False, True], 1, torch.full((1, 2), 1.0)],
            hint="with min_delta = 0.05, 0.99 and 0.97 are not improvements on 1.0; with patience 2 training stops "
                 "after epoch 3 and epoch 1's weights come back")

# an improvement resets the count
_model = nn.Linear(2, 1)
_stopper = EarlyStopping(_model, patience=2)
_answers = _replay(_stopper, _model, [1.0, 1.1, 0.9, 1.2, 1.3, 1.4])
check_equal("an improvement resets the count",
            [[bool(a) for a in _answers], _stopper.best_epoch, _model.weight.detach().clone()],
            expected=[[False, False, False, False, True], 3, torch.full((1, 2), 3.0)],
            hint="after an improvement, count the epochs without improvement from zero again")

# patience 1, and "no improvement" includes an equal loss
_model = nn.Linear(2, 1)
_stopper = EarlyStopping(_model, patience=1)
_answers = _replay(_stopper, _model, [0.7, 0.7])
check_equal("an equal loss is not an improvement", [[bool(a) for a in _answers], _model.weight.detach().clone()],
            expected=[[False, True], torch.full((1, 2), 1.0)],
            hint="an epoch improves only when val_loss < best_loss - min_delta (strictly lower)")

# a run that keeps improving never stops; restore() then gives the last (best) epoch
_model = nn.Linear(2, 1)
_stopper = EarlyStopping(_model, patience=2)
_answers = _replay(_stopper, _model, [0.9, 0.8, 0.7, 0.6])
with torch.no_grad():
    _model.weight.fill_(-1.0)
_stopper.restore()
check_equal("a run that keeps improving: never stops, restore() gives the last epoch",
            [[bool(a) for a in _answers], _stopper.best_epoch, _model.weight.detach().clone()],
            expected=[[False, False, False, False], 4, torch.full((1, 2), 4.0)],
            hint="restore() should load the best weights saved so far into the model")

# restore() before any epoch does nothing; the answers are plain booleans
_model = nn.Linear(2, 1)
_w = _model.weight.detach().clone()
EarlyStopping(_model, patience=3).restore()
check_equal("restore() without saved weights leaves the model alone", _model.weight.detach().clone(),
            expected=_w, hint="restore() must do nothing when no weights were saved yet")
_model = nn.Linear(2, 1)
_answers = _replay(EarlyStopping(_model, patience=1), _model, [0.5, 0.6])
check_equal("__call__ returns True or False (not None)", [type(a).__name__ for a in _answers],
            expected=["bool", "bool"], hint="return False explicitly when training should go on")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "class-weights-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 4: class weights for an imbalanced data set (1 point)
#
# With $n_c$ examples of class $c$, $N$ examples in all and $C$ classes, the "balanced" class weight is
#
# $$w_c = \frac{N}{C\, n_c}.$$
#
# Each class then contributes the same total weight ($n_c w_c = N / C$), and a perfectly balanced data set gets
# all weights equal to 1. Passed as `F.cross_entropy(logits, y, weight=w)`, rare classes count more in the loss.
#
# Write `class_weights(y, num_classes)` returning the `(num_classes,)` float32 tensor of $w_c$, without loops
# over the examples. Every class occurs at least once in `y`.

# %% nbgrader={"grade": false, "grade_id": "class-weights-answer", "locked": false, "schema_version": 3, "solution": true}
def class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Balanced class weights N / (C * n_c). y: (N,) int64 labels in [0, num_classes). Returns (num_classes,)."""
    ### BEGIN SOLUTION
    counts = torch.bincount(y, minlength=num_classes).float()    # (C,) examples per class
    return len(y) / (num_classes * counts)                       # (C,)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "class-weights-tests", "locked": true, "points": 1, "schema_version": 3, "solution": false}
_y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 1, 0])       # 8 zeros, 3 ones, 1 two
_w = class_weights(_y, 3)
check_close("same as scikit-learn's 'balanced' weights", _w,
            expected=torch.tensor(compute_class_weight("balanced", classes=np.arange(3), y=_y.numpy()),
                                  dtype=torch.float32),
            atol=1e-6, weight=2,
            hint="w_c = N / (C * n_c), with N the number of labels and n_c the count of class c, as a float32 "
                 "tensor of shape (num_classes,)")
check_close("a balanced data set gets weights of 1", class_weights(torch.arange(4).repeat(5), 4),
            expected=torch.ones(4), atol=1e-6, hint="with equal counts every weight is N / (C * N / C) = 1")
print("class_weights: visible tests passed")

### BEGIN HIDDEN TESTS
_g = torch.Generator().manual_seed(4)
_ys = [torch.cat([torch.arange(_c), torch.randint(0, _c, (200,), generator=_g) ** 2 % _c]) for _c in (2, 5, 10)]
check_close("2, 5 and 10 classes: same as scikit-learn", [class_weights(_yy, len(_yy.unique())) for _yy in _ys],
            expected=[torch.tensor(compute_class_weight("balanced", classes=np.arange(len(_yy.unique())),
                                                        y=_yy.numpy()), dtype=torch.float32) for _yy in _ys],
            atol=1e-5, hint="class_weights differs from scikit-learn's for 2, 5 or 10 classes (item 0 to 2)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "sampler-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 5: a balanced sampler (2 points)
#
# Instead of weighting the loss, change what the model sees: draw the training examples so that every class
# comes up about equally often. `torch.utils.data.WeightedRandomSampler(weights, num_samples, replacement,
# generator)` draws `num_samples` indices, index $i$ with probability proportional to `weights[i]`.
#
# Give example $i$ the weight $1 / n_{y_i}$ (one over the size of its class): each class then has the same
# total weight. Draw `num_samples = len(y)` indices per epoch **with replacement** (without it, every index is
# drawn exactly once and nothing changes), and pass `generator` on so that runs repeat. Return the sampler;
# `DataLoader(dataset, batch_size=..., sampler=sampler)` then uses it instead of `shuffle=True`.

# %% nbgrader={"grade": false, "grade_id": "sampler-answer", "locked": false, "schema_version": 3, "solution": true}
def balanced_sampler(y: torch.Tensor, generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """A sampler drawing len(y) indices with replacement, index i with probability proportional to 1 / n_{y_i}.

    y: (N,) int64 labels of the dataset, in order. generator: passed to the sampler (None: torch's global one).
    """
    ### BEGIN SOLUTION
    counts = torch.bincount(y)                          # (C,) examples per class
    weights = 1.0 / counts[y].double()                  # (N,) one weight per example
    return WeightedRandomSampler(weights, num_samples=len(y), replacement=True, generator=generator)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "sampler-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _normalised(weights):
    """Sampling probabilities from weights: the weights divided by their sum (float64)."""
    weights = torch.as_tensor(weights, dtype=torch.float64)
    return weights / weights.sum()


def _fractions(sampler, y, num_classes, epochs=1):
    """The fraction of each class among the indices the sampler draws over ``epochs`` epochs."""
    drawn = torch.cat([y[torch.tensor(list(sampler))] for _ in range(epochs)])
    return torch.bincount(drawn, minlength=num_classes).double() / len(drawn)


_y = torch.cat([torch.zeros(900, dtype=torch.int64), torch.ones(100, dtype=torch.int64)])   # 90 % class 0
_sampler = balanced_sampler(_y, generator=torch.Generator().manual_seed(0))
assert isinstance(_sampler, WeightedRandomSampler), (
    f"balanced_sampler should return a torch.utils.data.WeightedRandomSampler, got {type(_sampler).__name__}")
check_equal("draws len(y) indices per epoch, with replacement", [_sampler.num_samples, bool(_sampler.replacement)],
            expected=[1000, True],
            hint="num_samples=len(y) and replacement=True: without replacement every index comes up exactly once "
                 "per epoch, so the classes stay 90/10")
check_close("example i has weight proportional to 1 / n_{y_i}", _normalised(_sampler.weights),
            expected=_normalised(torch.where(_y == 0, 1 / 900, 1 / 100)), rtol=1e-6, weight=2,
            hint="weight each example by one over the size of its class: 1/900 for class 0, 1/100 for class 1")
_frac = _fractions(_sampler, _y, 2)
print(f"class fractions in one epoch: {_frac.tolist()} (in the data: [0.9, 0.1])")
check_close("one epoch draws both classes about equally often", _frac, expected=torch.tensor([0.5, 0.5]).double(),
            atol=0.05, weight=3, hint="the rare class should make up about half of the draws")

_loader = DataLoader(TensorDataset(torch.randn(1000, 2), _y), batch_size=100,
                     sampler=balanced_sampler(_y, generator=torch.Generator().manual_seed(1)))
check_equal("a DataLoader with the sampler gives 1000 examples per epoch", sum(len(yb) for _, yb in _loader),
            expected=1000, hint="the sampler should hand out len(y) indices")
print("balanced_sampler: visible tests passed")

### BEGIN HIDDEN TESTS
# three classes, shuffled labels: each class about a third
_g = torch.Generator().manual_seed(2)
_y3 = torch.cat([torch.zeros(600), torch.ones(300), 2 * torch.ones(100)]).long()[torch.randperm(1000, generator=_g)]
_s = balanced_sampler(_y3, generator=torch.Generator().manual_seed(3))
check_close("three classes (600, 300, 100): weights", _normalised(_s.weights),
            expected=_normalised(1.0 / torch.bincount(_y3)[_y3].double()), rtol=1e-6,
            hint="the weights should be proportional to 1 / n_{y_i} for shuffled labels too")
check_close("three classes (600, 300, 100): five epochs of draws", _fractions(_s, _y3, 3, epochs=5),
            expected=torch.full((3,), 1 / 3).double(), atol=0.03, weight=2,
            hint="with three classes each should make up about a third of the draws")

# the generator is used: same seed, same draws
_a = list(balanced_sampler(_y3, generator=torch.Generator().manual_seed(7)))
_b = list(balanced_sampler(_y3, generator=torch.Generator().manual_seed(7)))
check_true("the same seed gives the same draws", _a == _b and len(_a) == 1000,
           hint="pass the generator to WeightedRandomSampler so that the same seed gives the same draws")

# without a generator it still works
check_equal("works without a generator", len(list(balanced_sampler(torch.tensor([0, 1, 1, 1])))), expected=4,
            hint="generator=None must work (torch's global generator)")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "loss-floor-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Exercise 6: predict, then measure: how low can a label-smoothed loss go? (1 point)
#
# Plain cross-entropy can be driven towards 0 by ever larger logits. With label smoothing (exercise 1) it cannot:
# the loss has a floor above 0, and a training curve that flattens there has nothing left to learn.
#
# Write `smoothed_loss_floor(eps, num_classes)`: your prediction of the smallest value that
# `F.cross_entropy(logits, y, label_smoothing=eps)` can take for one example among `num_classes` classes, over
# all possible logits, as a Python float. It is a prediction: PyTorch's cross-entropy and optimisers are
# switched off while the test calls it. The test then **measures** the floor by training the logits of one
# example directly (Adam, 300 steps). Your prediction passes when it is within **1 %** of the measurement, for
# `eps=0.1` and 10 classes here and for other settings in the hidden tests.

# %% nbgrader={"grade": false, "grade_id": "loss-floor-answer", "locked": false, "schema_version": 3, "solution": true}
def smoothed_loss_floor(eps: float, num_classes: int) -> float:
    """Predicted minimum over all logits of the label-smoothed cross-entropy of one example (0 < eps < 1)."""
    ### BEGIN SOLUTION
    q_true = 1 - eps + eps / num_classes           # the smoothed target q; the loss is smallest when p = q,
    q_other = eps / num_classes                    # where it equals the entropy of q
    return -(q_true * np.log(q_true) + (num_classes - 1) * q_other * np.log(q_other)).item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "loss-floor-tests", "locked": true, "points": 1, "schema_version": 3, "solution": false}
MEASURING = CROSS_ENTROPY_FUNCTIONS + ((torch.optim.Adam, "step"), (torch.optim.SGD, "step"),
                                       (torch.optim.AdamW, "step"), (torch.optim.LBFGS, "step"))
NO_MEASURING = ("predict with a formula: PyTorch's cross-entropy and optimisers are switched off while the test "
                "calls smoothed_loss_floor")


def _predicted(*args):
    with forbid(MEASURING, NO_MEASURING):
        return smoothed_loss_floor(*args)


def _measured_floor(eps, num_classes, num_steps=300):
    """The label-smoothed loss of one example (label 0) after training its logits directly with Adam."""
    logits = torch.zeros(1, num_classes, requires_grad=True)
    y = torch.zeros(1, dtype=torch.int64)
    optimizer = torch.optim.Adam([logits], lr=0.1)
    for _ in range(num_steps):
        loss = F.cross_entropy(logits, y, label_smoothing=eps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return F.cross_entropy(logits, y, label_smoothing=eps).item()


check_prediction("the floor for eps=0.1 and 10 classes", _predicted(0.1, 10), expected=_measured_floor(0.1, 10),
                 rtol=0.01, hint="the loss is a cross-entropy between the target q and the prediction p: for which "
                                 "p is it smallest, and what is its value there?")
print("smoothed_loss_floor: visible tests passed")

### BEGIN HIDDEN TESTS
for _eps, _c in [(0.2, 5), (0.05, 1000), (0.02, 50)]:
    check_prediction(f"the floor for eps={_eps} and {_c} classes", _predicted(_eps, _c),
                     expected=_measured_floor(_eps, _c), rtol=0.01,
                     hint="the prediction must be a function of eps and num_classes")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - Label smoothing trains against $q = (1 - \varepsilon)\,\mathrm{onehot}(y) + \varepsilon / C$; computed from
#   `log_softmax` it is stable and matches `F.cross_entropy(label_smoothing=ε)`. Its minimum is the entropy of
#   $q$, reached when the predicted distribution equals $q$: above 0, whatever the logits.
# - Mixup blends inputs and one-hot labels with the same weight; the loss takes the soft labels as targets.
# - An early-stopping callback tracks the best validation loss, keeps a deep copy of those weights, and stops
#   after `patience` epochs without improvement, restoring them.
# - For imbalanced data, either weight the loss by $N / (C\,n_c)$ or sample examples with probability
#   proportional to $1 / n_{y_i}$, with replacement.
#
# ## Further exercises (not graded)
#
# 1. Train the notebook's 50-digit MLP with your `label_smoothed_cross_entropy` as `loss_fn` and ε from 0 to
#    0.3. How do validation accuracy and confidence change?
# 2. Write a `collate_fn` that draws `lam` from `torch.distributions.Beta(alpha, alpha)` and a random `perm`,
#    and calls your `mixup`. Train `SmallCNN` on a few hundred shapes with it.
# 3. Let `EarlyStopping` monitor `val_acc` (higher is better) through a `mode="max"` argument.
# 4. Compare `class_weights` in the loss with `balanced_sampler` on the notebook's imbalanced digits, over three
#    seeds. Which gives the better recall on the rarest class?
