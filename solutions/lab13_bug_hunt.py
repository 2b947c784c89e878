# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 13: bug hunt
#
# This lab goes with notebook 13. Nine training set-ups below each hide **one** bug, each of a different kind.
# Every set-up runs without an error message: the only signs are in the numbers. For each one you
#
# 1. **name the bug**, choosing from the list `BUGS` in the setup cell (it has more names than there are
#    set-ups, so you can't get there by elimination), and
# 2. **fix it**: write `fixed_x()`, the same set-up with that one bug repaired. The test trains it for a few
#    epochs and checks its test accuracy.
#
# **Learning goals.** After this lab you can
# - read the symptoms of a training run (the loss curve, training against validation accuracy) and list the
#   causes that fit them;
# - use `dlcourse.diagnose.doctor` to test those causes, and know which bugs it cannot see;
# - find a bug in a data pipeline, a model, a loss, a training step, an optimizer setting or an evaluation
#   function, and fix it with a one-line change.
#
# **How it works.** Run the setup cell first. Each exercise has a story, the broken set-up (read-only), a cell
# that trains it and prints what you would see, then two answer cells (the name, the fix) and a test cell.
# Replace each `raise NotImplementedError()` with your answer, then run the test cell: it passes when it
# finishes without an error. Add your own cells to experiment, for example with
# `doctor(**broken_a().doctor_args())`. Don't edit the test cells; the grader runs its own copy of them, and
# some extra hidden tests (the same fix trained from another seed). `dlcourse check labs/lab13_bug_hunt.ipynb`
# tells you what passes.
#
# **Time.** About 60–90 minutes. Every cell runs in seconds on a laptop CPU at any scale; no GPU needed.
#
# **Points.** 18 in all: 2 per set-up, 1 for the name and 1 for the fix. Only the grader checks the names (a
# visible test would give them away); the visible tests check your fixes.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dlcourse
from dlcourse.bugs import Setup
from dlcourse.data import make_loaders
from dlcourse.diagnose import doctor
from dlcourse.models import mlp

from dlcourse.grading.checks import check_accuracy, check_equal

cfg = dlcourse.setup(seed=0)

splits = dlcourse.data.digits(seed=0)           # 8×8 handwritten digits in [0, 1], split by the seed
X_train, y_train = splits.train.tensors         # (1257, 1, 8, 8) float32, (1257,) int64
X_val, y_val = splits.val.tensors               # (270, 1, 8, 8), (270,)
X_test, y_test = splits.test.tensors            # (270, 1, 8, 8), (270,)
VAL, TEST = TensorDataset(X_val, y_val), TensorDataset(X_test, y_test)
BATCH_SIZE = 32
NUM_EPOCHS = 4      # the tests train every fixed set-up this long; the same at every scale


def sgd(lr: float):
    """An optimizer factory: SGD with momentum 0.9 for the parameters it is given."""
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9)


def symptoms(setup: Setup, num_epochs: int = NUM_EPOCHS) -> None:
    """Train ``setup`` and print what a learner would look at: loss and accuracies per epoch."""
    history = setup.train(num_epochs)
    print("epoch | train loss | train acc | val acc")
    for r in history.records:
        print(f"{r['epoch']:5d} | {r['train_loss']:10.4g} | {r['train_acc']:9.1%} | {r['val_acc']:7.1%}")


# The names to choose from: one of them describes each set-up's bug.
BUGS = [
    "forgot_zero_grad",
    "softmax_before_cross_entropy",
    "loss_broadcasting",
    "labels_shuffled_separately",
    "missing_model_eval",
    "normalised_with_test_statistics",
    "learning_rate_100x_too_high",
    "learning_rate_100x_too_low",
    "detached_tensor",
    "unnormalised_inputs",
    "unshuffled_training_data",
    "zero_std_division",
    "train_val_leakage",
    "dead_relu_init",
]

# %% [markdown] nbgrader={"grade": false, "grade_id": "bugs-explained", "locked": true, "schema_version": 3, "solution": false}
# ## The names in `BUGS`
#
# | name | what is wrong |
# |------|---------------|
# | `forgot_zero_grad` | gradients are never cleared, so every step adds to the gradients of all earlier batches |
# | `softmax_before_cross_entropy` | the model outputs probabilities, and a loss that expects logits applies softmax a second time |
# | `loss_broadcasting` | two tensors of different shapes broadcast inside the loss, which then compares every example with every label |
# | `labels_shuffled_separately` | inputs and labels were reordered (or built) separately: `X[i]` and `y[i]` no longer belong together |
# | `missing_model_eval` | predictions are made in training mode: dropout still drops, BatchNorm uses the batch's statistics |
# | `normalised_with_test_statistics` | the validation or test data are standardised with their own mean and std instead of the training set's |
# | `learning_rate_100x_too_high` / `_too_low` | the learning rate is about a hundred times too large / too small for this optimizer and model |
# | `detached_tensor` | part of the forward pass is cut from the autograd graph (`.detach()`, `torch.no_grad()`, `.item()`), so the layers before the cut never learn |
# | `unnormalised_inputs` | the inputs are on a scale far from what the network and the learning rate expect (e.g. 0–255) |
# | `unshuffled_training_data` | the training loader serves the examples in a fixed, structured order (e.g. sorted by class) |
# | `zero_std_division` | standardising divides by a standard deviation that is zero for some features, giving inf or nan |
# | `train_val_leakage` | validation examples also appear in the training set, so validation scores are too good |
# | `dead_relu_init` | the initial weights or biases make (almost) every ReLU output zero from the start |
#
# **How to hunt** (notebook 13 does each step in detail): look at the symptoms first (does the loss fall? is
# the first loss near $\log 10 \approx 2.3$? do training and validation accuracy agree?), run the doctor, and
# then read the code with the suspects in mind: data → model → loss → step → optimizer → evaluation. Each
# `Setup` holds those pieces (`model`, `train_loader`, `val_loader`, `test_loader`, `loss_fn`,
# `optimizer_factory`, `train_step`, `predict_fn`); the defaults are the five standard lines
# (`dlcourse.bugs.standard_step`) and an arg-max in eval mode (`dlcourse.bugs.standard_predict`).
#
# The doctor examines a set-up without changing it. Here on a healthy one, so you know what "all clear" looks
# like:

# %% nbgrader={"grade": false, "grade_id": "doctor-demo", "locked": true, "schema_version": 3, "solution": false}
def healthy(seed: int = 0) -> Setup:
    """A set-up without bugs: an MLP with SGD on the digits."""
    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(mlp(64, [64], 10), train_loader, val_loader, sgd(lr=0.05), test_loader=test_loader)


healthy_report = doctor(**healthy().doctor_args(), progress=False)
healthy_report

# %% [markdown] nbgrader={"grade": false, "grade_id": "a-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Set-up A: images straight from the files (2 points)
#
# The digits arrive as image files store them, 8-bit integers from 0 to 255. The set-up turns them into float
# tensors and trains the usual MLP.

# %% nbgrader={"grade": false, "grade_id": "a-code", "locked": true, "schema_version": 3, "solution": false}
def to_8bit(X: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] as an image file stores them: uint8 values 0..255."""
    return (X * 255).round().to(torch.uint8)


RAW_TRAIN, RAW_VAL, RAW_TEST = to_8bit(X_train), to_8bit(X_val), to_8bit(X_test)   # (N, 1, 8, 8) uint8


def broken_a(seed: int = 0) -> Setup:
    torch.manual_seed(seed)
    X_tr, X_va, X_te = RAW_TRAIN.float(), RAW_VAL.float(), RAW_TEST.float()      # uint8 -> float32
    train_loader, val_loader, test_loader = make_loaders(
        TensorDataset(X_tr, y_train), TensorDataset(X_va, y_val), TensorDataset(X_te, y_test),
        batch_size=BATCH_SIZE, seed=seed)
    return Setup(mlp(64, [64], 10), train_loader, val_loader, sgd(lr=0.05), test_loader=test_loader)


# %% nbgrader={"grade": false, "grade_id": "a-symptoms", "locked": true, "schema_version": 3, "solution": false}
symptoms(broken_a())

# %% [markdown] nbgrader={"grade": false, "grade_id": "a-task", "locked": true, "schema_version": 3, "solution": false}
# Set `BUG_A` to the name of the bug (a string from `BUGS`), then write `fixed_a` below: `broken_a` with that
# one bug fixed (same model, optimizer and data otherwise).

# %% nbgrader={"grade": false, "grade_id": "a-name", "locked": false, "schema_version": 3, "solution": true}
### BEGIN SOLUTION
BUG_A = "unnormalised_inputs"
### END SOLUTION

# %% nbgrader={"grade": false, "grade_id": "a-fix", "locked": false, "schema_version": 3, "solution": true}
def fixed_a(seed: int = 0) -> Setup:
    """broken_a with its bug fixed."""
    ### BEGIN SOLUTION
    torch.manual_seed(seed)
    X_tr, X_va, X_te = (X.float() / 255 for X in (RAW_TRAIN, RAW_VAL, RAW_TEST))   # back to [0, 1]
    train_loader, val_loader, test_loader = make_loaders(
        TensorDataset(X_tr, y_train), TensorDataset(X_va, y_val), TensorDataset(X_te, y_test),
        batch_size=BATCH_SIZE, seed=seed)
    return Setup(mlp(64, [64], 10), train_loader, val_loader, sgd(lr=0.05), test_loader=test_loader)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "a-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
### BEGIN HIDDEN TESTS
check_equal("the bug's name", globals().get("BUG_A"), expected="unnormalised_inputs", weight=2,
            hint="set BUG_A to one of the strings in BUGS; compare the first training loss with log(10), "
                 "about 2.3, and look at the range of the values the model is fed")
### END HIDDEN TESTS
if globals().get("BUG_A") not in BUGS:
    print("BUG_A should be one of the strings in BUGS (the grader checks which one)")
_setup = fixed_a(seed=0)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (test accuracy, seed 0)", _setup.predict(_setup.test_loader),
               expected=y_test, threshold=0.85,
               hint="after the fix the MLP should reach 85 % test accuracy in NUM_EPOCHS epochs")
print("set-up A: visible tests passed")
### BEGIN HIDDEN TESTS
_setup = fixed_a(seed=1)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (validation accuracy, seed 1)", _setup.predict(_setup.val_loader),
               expected=y_val, threshold=0.85,
               hint="trained from another seed, the fixed set-up should reach 85 % validation accuracy too")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "b-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Set-up B: a hand-written training step (2 points)
#
# Someone wrote their own training step instead of using the standard one. It runs without an error.

# %% nbgrader={"grade": false, "grade_id": "b-code", "locked": true, "schema_version": 3, "solution": false}
def step_b(model, optimizer, X, y, loss_fn):
    """One update on one batch X (B, 1, 8, 8), y (B,); returns the loss."""
    y_hat = model(X)                  # (B, 10)
    loss = loss_fn(y_hat, y)
    optimizer.zero_grad
    loss.backward()
    optimizer.step()
    return loss


def broken_b(seed: int = 0) -> Setup:
    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(mlp(64, [64], 10), train_loader, val_loader, sgd(lr=0.05), train_step=step_b,
                 test_loader=test_loader)


# %% nbgrader={"grade": false, "grade_id": "b-symptoms", "locked": true, "schema_version": 3, "solution": false}
symptoms(broken_b())

# %% [markdown] nbgrader={"grade": false, "grade_id": "b-task", "locked": true, "schema_version": 3, "solution": false}
# Set `BUG_B` to the name of the bug, then write `fixed_b`: `broken_b` with that one bug fixed. (Define any
# helper you change inside `fixed_b` or in the same cell, under a new name.)

# %% nbgrader={"grade": false, "grade_id": "b-name", "locked": false, "schema_version": 3, "solution": true}
### BEGIN SOLUTION
BUG_B = "forgot_zero_grad"
### END SOLUTION

# %% nbgrader={"grade": false, "grade_id": "b-fix", "locked": false, "schema_version": 3, "solution": true}
def fixed_b(seed: int = 0) -> Setup:
    """broken_b with its bug fixed."""
    ### BEGIN SOLUTION
    def step(model, optimizer, X, y, loss_fn):
        y_hat = model(X)
        loss = loss_fn(y_hat, y)
        optimizer.zero_grad()         # called: `optimizer.zero_grad` alone only names the method
        loss.backward()
        optimizer.step()
        return loss

    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(mlp(64, [64], 10), train_loader, val_loader, sgd(lr=0.05), train_step=step,
                 test_loader=test_loader)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "b-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
### BEGIN HIDDEN TESTS
check_equal("the bug's name", globals().get("BUG_B"), expected="forgot_zero_grad", weight=2,
            hint="set BUG_B to one of the strings in BUGS; the loss grows from epoch to epoch: what makes "
                 "every step larger than the one before?")
### END HIDDEN TESTS
if globals().get("BUG_B") not in BUGS:
    print("BUG_B should be one of the strings in BUGS (the grader checks which one)")
_setup = fixed_b(seed=0)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (test accuracy, seed 0)", _setup.predict(_setup.test_loader),
               expected=y_test, threshold=0.85,
               hint="after the fix the MLP should reach 85 % test accuracy in NUM_EPOCHS epochs")
print("set-up B: visible tests passed")
### BEGIN HIDDEN TESTS
_setup = fixed_b(seed=1)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (validation accuracy, seed 1)", _setup.predict(_setup.val_loader),
               expected=y_val, threshold=0.85,
               hint="trained from another seed, the fixed set-up should reach 85 % validation accuracy too")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "c-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Set-up C: a model that is easy to read (2 points)
#
# This model was written so that its output can be read directly as the probability of each class.

# %% nbgrader={"grade": false, "grade_id": "c-code", "locked": true, "schema_version": 3, "solution": false}
class DigitNetC(nn.Module):
    """An MLP for 8×8 digits whose output reads as class probabilities."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 10)

    def forward(self, X):                                    # X: (B, 1, 8, 8)
        return torch.softmax(self.head(self.body(X)), dim=1)   # (B, 10)


def broken_c(seed: int = 0) -> Setup:
    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(DigitNetC(), train_loader, val_loader, sgd(lr=0.05), loss_fn=F.cross_entropy,
                 test_loader=test_loader)


# %% nbgrader={"grade": false, "grade_id": "c-symptoms", "locked": true, "schema_version": 3, "solution": false}
symptoms(broken_c())

# %% [markdown] nbgrader={"grade": false, "grade_id": "c-task", "locked": true, "schema_version": 3, "solution": false}
# Set `BUG_C` to the name of the bug, then write `fixed_c`: `broken_c` with that one bug fixed. Predictions
# are the arg-max of the model's output, so they must stay meaningful.

# %% nbgrader={"grade": false, "grade_id": "c-name", "locked": false, "schema_version": 3, "solution": true}
### BEGIN SOLUTION
BUG_C = "softmax_before_cross_entropy"
### END SOLUTION

# %% nbgrader={"grade": false, "grade_id": "c-fix", "locked": false, "schema_version": 3, "solution": true}
def fixed_c(seed: int = 0) -> Setup:
    """broken_c with its bug fixed."""
    ### BEGIN SOLUTION
    class DigitNet(nn.Module):
        """The same MLP returning logits: F.cross_entropy applies (log-)softmax itself."""

        def __init__(self, hidden: int = 64) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU())
            self.head = nn.Linear(hidden, 10)

        def forward(self, X):                        # X: (B, 1, 8, 8)
            return self.head(self.body(X))           # (B, 10) logits

    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(DigitNet(), train_loader, val_loader, sgd(lr=0.05), loss_fn=F.cross_entropy,
                 test_loader=test_loader)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "c-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
### BEGIN HIDDEN TESTS
check_equal("the bug's name", globals().get("BUG_C"), expected="softmax_before_cross_entropy", weight=2,
            hint="set BUG_C to one of the strings in BUGS; what does F.cross_entropy expect as its first "
                 "argument, and what does this model return?")
### END HIDDEN TESTS
if globals().get("BUG_C") not in BUGS:
    print("BUG_C should be one of the strings in BUGS (the grader checks which one)")
_setup = fixed_c(seed=0)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (test accuracy, seed 0)", _setup.predict(_setup.test_loader),
               expected=y_test, threshold=0.85,
               hint="after the fix the MLP should reach 85 % test accuracy in NUM_EPOCHS epochs")
print("set-up C: visible tests passed")
### BEGIN HIDDEN TESTS
_setup = fixed_c(seed=1)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (validation accuracy, seed 1)", _setup.predict(_setup.val_loader),
               expected=y_val, threshold=0.85,
               hint="trained from another seed, the fixed set-up should reach 85 % validation accuracy too")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "d-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Set-up D: data as it is stored on disk (2 points)
#
# Many data sets are stored class by class. This set-up keeps that order, and keeps the batches the same in
# every epoch so that runs are reproducible.

# %% nbgrader={"grade": false, "grade_id": "d-code", "locked": true, "schema_version": 3, "solution": false}
def broken_d(seed: int = 0) -> Setup:
    torch.manual_seed(seed)
    order = y_train.argsort(stable=True)                               # class 0 first, then 1, ...
    stored = TensorDataset(X_train[order], y_train[order])             # (N, 1, 8, 8), (N,) as on disk
    train_loader = DataLoader(stored, batch_size=BATCH_SIZE)
    val_loader = DataLoader(VAL, batch_size=BATCH_SIZE)
    test_loader = DataLoader(TEST, batch_size=BATCH_SIZE)
    return Setup(mlp(64, [64], 10), train_loader, val_loader, sgd(lr=0.05), test_loader=test_loader)


# %% nbgrader={"grade": false, "grade_id": "d-symptoms", "locked": true, "schema_version": 3, "solution": false}
symptoms(broken_d())

# %% [markdown] nbgrader={"grade": false, "grade_id": "d-task", "locked": true, "schema_version": 3, "solution": false}
# Set `BUG_D` to the name of the bug, then write `fixed_d`: `broken_d` with that one bug fixed. Keep runs
# reproducible: anything random must depend only on `seed`.

# %% nbgrader={"grade": false, "grade_id": "d-name", "locked": false, "schema_version": 3, "solution": true}
### BEGIN SOLUTION
BUG_D = "unshuffled_training_data"
### END SOLUTION

# %% nbgrader={"grade": false, "grade_id": "d-fix", "locked": false, "schema_version": 3, "solution": true}
def fixed_d(seed: int = 0) -> Setup:
    """broken_d with its bug fixed."""
    ### BEGIN SOLUTION
    torch.manual_seed(seed)
    order = y_train.argsort(stable=True)
    stored = TensorDataset(X_train[order], y_train[order])
    # shuffled every epoch, by a generator seeded from `seed`: random batches, still reproducible
    train_loader = DataLoader(stored, batch_size=BATCH_SIZE, shuffle=True,
                              generator=torch.Generator().manual_seed(seed))
    val_loader = DataLoader(VAL, batch_size=BATCH_SIZE)
    test_loader = DataLoader(TEST, batch_size=BATCH_SIZE)
    return Setup(mlp(64, [64], 10), train_loader, val_loader, sgd(lr=0.05), test_loader=test_loader)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "d-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
### BEGIN HIDDEN TESTS
check_equal("the bug's name", globals().get("BUG_D"), expected="unshuffled_training_data", weight=2,
            hint="set BUG_D to one of the strings in BUGS; what does every batch of the first tenth of an "
                 "epoch contain, and what does the model learn from the last batches?")
### END HIDDEN TESTS
if globals().get("BUG_D") not in BUGS:
    print("BUG_D should be one of the strings in BUGS (the grader checks which one)")
_setup = fixed_d(seed=0)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (test accuracy, seed 0)", _setup.predict(_setup.test_loader),
               expected=y_test, threshold=0.85,
               hint="after the fix the MLP should reach 85 % test accuracy in NUM_EPOCHS epochs")
print("set-up D: visible tests passed")
### BEGIN HIDDEN TESTS
_setup = fixed_d(seed=1)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (validation accuracy, seed 1)", _setup.predict(_setup.val_loader),
               expected=y_val, threshold=0.85,
               hint="trained from another seed, the fixed set-up should reach 85 % validation accuracy too")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "e-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Set-up E: a loss that also takes soft targets (2 points)
#
# This loss was written to accept soft targets later (mixup, label smoothing); for now it turns the class
# indices into one-hot rows.

# %% nbgrader={"grade": false, "grade_id": "e-code", "locked": true, "schema_version": 3, "solution": false}
def soft_target_loss(y_hat, y):
    """Cross-entropy of logits y_hat (B, C) against class indices y (B,), via one-hot targets."""
    log_p = torch.log_softmax(y_hat, dim=1)                         # (B, C)
    target = F.one_hot(y.view(-1, 1), y_hat.shape[1]).float()       # (B, C) one-hot rows
    return -(target * log_p).sum(dim=-1).mean()


def broken_e(seed: int = 0) -> Setup:
    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(mlp(64, [64], 10), train_loader, val_loader, sgd(lr=0.05), loss_fn=soft_target_loss,
                 test_loader=test_loader)


# %% nbgrader={"grade": false, "grade_id": "e-symptoms", "locked": true, "schema_version": 3, "solution": false}
symptoms(broken_e())

# %% [markdown] nbgrader={"grade": false, "grade_id": "e-task", "locked": true, "schema_version": 3, "solution": false}
# Set `BUG_E` to the name of the bug, then write `fixed_e`: `broken_e` with that one bug fixed (keep a
# hand-written loss, or use `F.cross_entropy`: both are the same loss once it is right).

# %% nbgrader={"grade": false, "grade_id": "e-name", "locked": false, "schema_version": 3, "solution": true}
### BEGIN SOLUTION
BUG_E = "loss_broadcasting"
### END SOLUTION

# %% nbgrader={"grade": false, "grade_id": "e-fix", "locked": false, "schema_version": 3, "solution": true}
def fixed_e(seed: int = 0) -> Setup:
    """broken_e with its bug fixed."""
    ### BEGIN SOLUTION
    def loss_fn(y_hat, y):
        log_p = torch.log_softmax(y_hat, dim=1)                     # (B, C)
        target = F.one_hot(y, y_hat.shape[1]).float()               # (B, C): y.view(-1, 1) gave (B, 1, C)
        return -(target * log_p).sum(dim=-1).mean()                 # (B,) -> ()

    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(mlp(64, [64], 10), train_loader, val_loader, sgd(lr=0.05), loss_fn=loss_fn,
                 test_loader=test_loader)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "e-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
### BEGIN HIDDEN TESTS
check_equal("the bug's name", globals().get("BUG_E"), expected="loss_broadcasting", weight=2,
            hint="set BUG_E to one of the strings in BUGS; print the shape of every intermediate tensor in "
                 "the loss for a batch of 4")
### END HIDDEN TESTS
if globals().get("BUG_E") not in BUGS:
    print("BUG_E should be one of the strings in BUGS (the grader checks which one)")
_setup = fixed_e(seed=0)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (test accuracy, seed 0)", _setup.predict(_setup.test_loader),
               expected=y_test, threshold=0.85,
               hint="after the fix the MLP should reach 85 % test accuracy in NUM_EPOCHS epochs")
print("set-up E: visible tests passed")
### BEGIN HIDDEN TESTS
_setup = fixed_e(seed=1)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (validation accuracy, seed 1)", _setup.predict(_setup.val_loader),
               expected=y_val, threshold=0.85,
               hint="trained from another seed, the fixed set-up should reach 85 % validation accuracy too")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "f-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Set-up F: BatchNorm and dropout, with a fast prediction function (2 points)
#
# A regularised MLP (BatchNorm and dropout) with its own prediction function, which skips gradient tracking
# to be fast.

# %% nbgrader={"grade": false, "grade_id": "f-code", "locked": true, "schema_version": 3, "solution": false}
@torch.no_grad()
def predict_f(model, loader):
    """The predicted class of every example of loader, in order: (N,) int64."""
    return torch.cat([model(X).argmax(dim=1) for X, _ in loader])


def broken_f(seed: int = 0) -> Setup:
    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(32, 10))
    return Setup(model, train_loader, val_loader, sgd(lr=0.05), predict_fn=predict_f, test_loader=test_loader)


# %% nbgrader={"grade": false, "grade_id": "f-symptoms", "locked": true, "schema_version": 3, "solution": false}
symptoms(broken_f())

# %% [markdown] nbgrader={"grade": false, "grade_id": "f-task", "locked": true, "schema_version": 3, "solution": false}
# Set `BUG_F` to the name of the bug, then write `fixed_f`: `broken_f` with that one bug fixed (the model
# keeps its BatchNorm and dropout). This one needs a higher bar: 90 % test accuracy.

# %% nbgrader={"grade": false, "grade_id": "f-name", "locked": false, "schema_version": 3, "solution": true}
### BEGIN SOLUTION
BUG_F = "missing_model_eval"
### END SOLUTION

# %% nbgrader={"grade": false, "grade_id": "f-fix", "locked": false, "schema_version": 3, "solution": true}
def fixed_f(seed: int = 0) -> Setup:
    """broken_f with its bug fixed."""
    ### BEGIN SOLUTION
    @torch.no_grad()
    def predict(model, loader):
        model.eval()                  # dropout off, BatchNorm uses its running statistics
        return torch.cat([model(X).argmax(dim=1) for X, _ in loader])

    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(32, 10))
    return Setup(model, train_loader, val_loader, sgd(lr=0.05), predict_fn=predict, test_loader=test_loader)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "f-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
### BEGIN HIDDEN TESTS
check_equal("the bug's name", globals().get("BUG_F"), expected="missing_model_eval", weight=2,
            hint="set BUG_F to one of the strings in BUGS; predict the same test set twice with the broken "
                 "set-up: do you get the same predictions?")
### END HIDDEN TESTS
if globals().get("BUG_F") not in BUGS:
    print("BUG_F should be one of the strings in BUGS (the grader checks which one)")
_setup = fixed_f(seed=0)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up predicts well (test accuracy, seed 0)", _setup.predict(_setup.test_loader),
               expected=y_test, threshold=0.9,
               hint="after the fix this model should reach 90 % test accuracy in NUM_EPOCHS epochs")
print("set-up F: visible tests passed")
### BEGIN HIDDEN TESTS
_setup = fixed_f(seed=1)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up predicts well (validation accuracy, seed 1)",
               _setup.predict(_setup.val_loader), expected=y_val, threshold=0.9,
               hint="trained from another seed, the fixed set-up should reach 90 % validation accuracy too")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "g-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Set-up G: Adam with a round number (2 points)
#
# Adam, with a learning rate that someone remembered from another project.

# %% nbgrader={"grade": false, "grade_id": "g-code", "locked": true, "schema_version": 3, "solution": false}
def broken_g(seed: int = 0) -> Setup:
    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(mlp(64, [64], 10), train_loader, val_loader, lambda params: torch.optim.Adam(params, lr=1.0),
                 test_loader=test_loader)


# %% nbgrader={"grade": false, "grade_id": "g-symptoms", "locked": true, "schema_version": 3, "solution": false}
symptoms(broken_g())

# %% [markdown] nbgrader={"grade": false, "grade_id": "g-task", "locked": true, "schema_version": 3, "solution": false}
# Set `BUG_G` to the name of the bug, then write `fixed_g`: `broken_g` with that one bug fixed (still Adam).

# %% nbgrader={"grade": false, "grade_id": "g-name", "locked": false, "schema_version": 3, "solution": true}
### BEGIN SOLUTION
BUG_G = "learning_rate_100x_too_high"
### END SOLUTION

# %% nbgrader={"grade": false, "grade_id": "g-fix", "locked": false, "schema_version": 3, "solution": true}
def fixed_g(seed: int = 0) -> Setup:
    """broken_g with its bug fixed."""
    ### BEGIN SOLUTION
    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(mlp(64, [64], 10), train_loader, val_loader,
                 lambda params: torch.optim.Adam(params, lr=1e-2), test_loader=test_loader)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "g-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
### BEGIN HIDDEN TESTS
check_equal("the bug's name", globals().get("BUG_G"), expected="learning_rate_100x_too_high", weight=2,
            hint="set BUG_G to one of the strings in BUGS; the doctor's LR range test compares the lr with "
                 "the one the loss curve suggests")
### END HIDDEN TESTS
if globals().get("BUG_G") not in BUGS:
    print("BUG_G should be one of the strings in BUGS (the grader checks which one)")
_setup = fixed_g(seed=0)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (test accuracy, seed 0)", _setup.predict(_setup.test_loader),
               expected=y_test, threshold=0.85,
               hint="after the fix the MLP should reach 85 % test accuracy in NUM_EPOCHS epochs")
print("set-up G: visible tests passed")
### BEGIN HIDDEN TESTS
_setup = fixed_g(seed=1)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (validation accuracy, seed 1)", _setup.predict(_setup.val_loader),
               expected=y_val, threshold=0.85,
               hint="trained from another seed, the fixed set-up should reach 85 % validation accuracy too")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "h-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Set-up H: a balanced training set (2 points)
#
# To give every class the same weight, this set-up keeps the same number of training examples of each class
# (as many as the rarest class has).

# %% nbgrader={"grade": false, "grade_id": "h-code", "locked": true, "schema_version": 3, "solution": false}
def broken_h(seed: int = 0) -> Setup:
    torch.manual_seed(seed)
    per_class = int(torch.bincount(y_train).min())                               # examples kept per class
    idx = torch.cat([(y_train == c).nonzero().flatten()[:per_class] for c in range(10)])   # class by class
    X_bal = X_train[idx]                                                         # (10 * per_class, 1, 8, 8)
    y_bal = torch.arange(10).repeat(per_class)                                   # (10 * per_class,)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_bal, y_bal), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(mlp(64, [64], 10), train_loader, val_loader, sgd(lr=0.05), test_loader=test_loader)


# %% nbgrader={"grade": false, "grade_id": "h-symptoms", "locked": true, "schema_version": 3, "solution": false}
symptoms(broken_h())

# %% [markdown] nbgrader={"grade": false, "grade_id": "h-task", "locked": true, "schema_version": 3, "solution": false}
# Set `BUG_H` to the name of the bug, then write `fixed_h`: `broken_h` with that one bug fixed (still a
# balanced training set).

# %% nbgrader={"grade": false, "grade_id": "h-name", "locked": false, "schema_version": 3, "solution": true}
### BEGIN SOLUTION
BUG_H = "labels_shuffled_separately"
### END SOLUTION

# %% nbgrader={"grade": false, "grade_id": "h-fix", "locked": false, "schema_version": 3, "solution": true}
def fixed_h(seed: int = 0) -> Setup:
    """broken_h with its bug fixed."""
    ### BEGIN SOLUTION
    torch.manual_seed(seed)
    per_class = int(torch.bincount(y_train).min())
    idx = torch.cat([(y_train == c).nonzero().flatten()[:per_class] for c in range(10)])
    X_bal, y_bal = X_train[idx], y_train[idx]        # index both with the same idx: pairs stay together
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_bal, y_bal), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(mlp(64, [64], 10), train_loader, val_loader, sgd(lr=0.05), test_loader=test_loader)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "h-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
### BEGIN HIDDEN TESTS
check_equal("the bug's name", globals().get("BUG_H"), expected="labels_shuffled_separately", weight=2,
            hint="set BUG_H to one of the strings in BUGS; show a few training images with their labels")
### END HIDDEN TESTS
if globals().get("BUG_H") not in BUGS:
    print("BUG_H should be one of the strings in BUGS (the grader checks which one)")
_setup = fixed_h(seed=0)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (test accuracy, seed 0)", _setup.predict(_setup.test_loader),
               expected=y_test, threshold=0.85,
               hint="after the fix the MLP should reach 85 % test accuracy in NUM_EPOCHS epochs")
print("set-up H: visible tests passed")
### BEGIN HIDDEN TESTS
_setup = fixed_h(seed=1)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (validation accuracy, seed 1)", _setup.predict(_setup.val_loader),
               expected=y_val, threshold=0.85,
               hint="trained from another seed, the fixed set-up should reach 85 % validation accuracy too")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "i-instructions", "locked": true, "schema_version": 3, "solution": false}
# ## Set-up I: a feature extractor and a head (2 points)
#
# The model is split into a feature extractor and a classification head. The features are computed without
# building the autograd graph, to save memory.

# %% nbgrader={"grade": false, "grade_id": "i-code", "locked": true, "schema_version": 3, "solution": false}
class FeaturesAndHeadI(nn.Module):
    """A two-layer feature extractor and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(),
                                      nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, X):                 # X: (B, 1, 8, 8)
        with torch.no_grad():
            h = self.features(X)          # (B, 32)
        return self.head(h)               # (B, 10)


def broken_i(seed: int = 0) -> Setup:
    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(FeaturesAndHeadI(), train_loader, val_loader, sgd(lr=0.05), test_loader=test_loader)


# %% nbgrader={"grade": false, "grade_id": "i-symptoms", "locked": true, "schema_version": 3, "solution": false}
symptoms(broken_i())

# %% [markdown] nbgrader={"grade": false, "grade_id": "i-task", "locked": true, "schema_version": 3, "solution": false}
# Set `BUG_I` to the name of the bug, then write `fixed_i`: `broken_i` with that one bug fixed (same layers).

# %% nbgrader={"grade": false, "grade_id": "i-name", "locked": false, "schema_version": 3, "solution": true}
### BEGIN SOLUTION
BUG_I = "detached_tensor"
### END SOLUTION

# %% nbgrader={"grade": false, "grade_id": "i-fix", "locked": false, "schema_version": 3, "solution": true}
def fixed_i(seed: int = 0) -> Setup:
    """broken_i with its bug fixed."""
    ### BEGIN SOLUTION
    class FeaturesAndHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32),
                                          nn.ReLU())
            self.head = nn.Linear(32, 10)

        def forward(self, X):             # X: (B, 1, 8, 8)
            return self.head(self.features(X))   # the graph runs through the features: they learn too

    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(FeaturesAndHead(), train_loader, val_loader, sgd(lr=0.05), test_loader=test_loader)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "i-tests", "locked": true, "points": 2, "schema_version": 3, "solution": false}
### BEGIN HIDDEN TESTS
check_equal("the bug's name", globals().get("BUG_I"), expected="detached_tensor", weight=2,
            hint="set BUG_I to one of the strings in BUGS; after one training step, which parameters have a "
                 "gradient (p.grad)?")
### END HIDDEN TESTS
if globals().get("BUG_I") not in BUGS:
    print("BUG_I should be one of the strings in BUGS (the grader checks which one)")
_setup = fixed_i(seed=0)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (test accuracy, seed 0)", _setup.predict(_setup.test_loader),
               expected=y_test, threshold=0.85,
               hint="after the fix the model should reach 85 % test accuracy in NUM_EPOCHS epochs")
print("set-up I: visible tests passed")
### BEGIN HIDDEN TESTS
_setup = fixed_i(seed=1)
_setup.train(NUM_EPOCHS)
check_accuracy("the fixed set-up learns (validation accuracy, seed 1)", _setup.predict(_setup.val_loader),
               expected=y_val, threshold=0.85,
               hint="trained from another seed, the fixed set-up should reach 85 % validation accuracy too")
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "summary", "locked": true, "schema_version": 3, "solution": false}
# ## Summary
#
# - A bug that raises no error shows up as a symptom: a loss that grows, stays flat or sits at $\log C$; a
#   loss that falls while accuracy stays at chance; validation accuracy below what the model can do.
# - Each symptom has a short list of causes. Test them in a fixed order (data, model, loss, step, optimizer,
#   evaluation), each against a healthy twin, changing one thing at a time.
# - `dlcourse.diagnose.doctor` runs the standard checks for you. Each bug here trips at least one of them,
#   often several: the first flagged check in the doctor's order is usually closest to the cause, the later
#   ones are its consequences. Its findings narrow the search; the fix still comes from reading the code.
#
# ## Further exercises (not graded)
#
# 1. Run the doctor on every broken set-up and on your fixed ones. Which check flags which bug? Which of the
#    flags are causes and which are consequences?
# 2. Plant a bug of your own in `healthy()` from the list's unused names (`train_val_leakage`,
#    `zero_std_division`, `dead_relu_init`, ...) and see whether the doctor finds it.
# 3. Set-up B with `torch.optim.Adam` instead of SGD: does the forgotten `zero_grad()` still break training?
#    Why does Adam hide part of the damage?
