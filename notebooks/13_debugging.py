# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 13 · Debugging training
#
# Most training bugs raise no error. The code runs, the progress bar fills, and the numbers are wrong: a loss
# that does not move, one that turns into `nan`, accuracy stuck at chance, a validation score below what the
# model can do. This notebook teaches a method for getting from such a symptom to its cause, and then plants
# the classic bugs one at a time, each in a real training run next to its fixed twin, with the report of
# `dlcourse.diagnose.doctor` on the broken one.
#
# **Learning goals**
# - Go from a symptom (loss flat, loss exploding or `nan`, loss falling with accuracy at chance, validation
#   worse than training, slow learning) to a short list of causes, and test them in a fixed order.
# - Recognise eight classic bugs in code and in the curves they produce: a forgotten `zero_grad()`, softmax
#   before `CrossEntropyLoss`, wrong broadcasting in a loss, labels shuffled separately from the inputs, a
#   missing `model.eval()`, data normalised with test statistics, a learning rate off by 100×, a detached
#   tensor (and, on the way, a division by a zero standard deviation).
# - Run `dlcourse.diagnose.doctor` on a training set-up, read its report, and know what a clean report does
#   not prove.
#
# **Prerequisites:** notebook 01 (the training loop), 02 (BatchNorm in train and eval mode), 04 (the
# learning-rate range test) and 05 (dropout, data pipelines).
#
# **Time:** seconds at `smoke`; a minute or two at `small` on a laptop CPU; at `full` the same runs train
# longer on a GPU. The last cell prints how long this run took on your machine.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.ticker import MaxNLocator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dlcourse
from dlcourse.bugs import Setup, model_device, standard_predict, standard_step
from dlcourse.data import make_loaders
from dlcourse.diagnose import doctor
from dlcourse.models import mlp

cfg = dlcourse.setup(seed=0)
device = cfg.device
t_start = time.perf_counter()

splits = dlcourse.data.digits(seed=cfg.seed)   # 8×8 handwritten digits in [0, 1]
X_train, y_train = splits.train.tensors         # (1257, 1, 8, 8) float32, (1257,) int64
X_val, y_val = splits.val.tensors               # (270, 1, 8, 8), (270,)
X_test, y_test = splits.test.tensors            # (270, 1, 8, 8), (270,)
VAL, TEST = TensorDataset(X_val, y_val), TensorDataset(X_test, y_test)
BATCH_SIZE = 32
NUM_EPOCHS = cfg.pick(smoke=3, small=12, full=20)
LOG_C = math.log(10)                            # the loss of a uniform guess over 10 classes

# %% [markdown]
# ## 1. The method
#
# A training run is a chain: **data → model → loss → step → optimizer → evaluation**. A bug anywhere in it
# shows up at the end as one of a handful of symptoms, and each symptom has a short list of usual suspects:
#
# | symptom | usual causes | first test |
# |---------|--------------|------------|
# | loss flat near $\log C$ | learning rate far too low; no gradient reaches the weights (detached or frozen layers, dead ReLUs); the optimizer got the wrong parameters | LR range test; gradient norm per layer |
# | loss explodes or turns `nan` | learning rate too high; gradients piling up (no `zero_grad()`); inputs far from unit scale; `log(0)`, `0/0`, `sqrt` of a negative | first non-finite value, module by module; input statistics |
# | loss falls a little, accuracy at chance | labels no longer match the inputs; a loss that compares the wrong pairs (broadcasting) | overfit one batch; look at inputs and labels together |
# | validation worse than training | overfitting (a real effect, not a bug); `model.eval()` missing; evaluation data prepared differently from training data | predict twice: same answers? evaluate in eval mode |
# | learning slowly | softmax before cross-entropy; most of the network not learning (a detached tensor); poor learning rate or scaling | gradient flow; initial loss; overfit one batch |
#
# Three habits make the search short:
# 1. **Keep a healthy twin.** Compare every broken run with a run you trust, changed in one place only.
# 2. **Check what you can predict.** At the start, a classifier with $C$ classes should have a loss near
#    $\log C$. A model of any reasonable size should drive the loss on one fixed batch to almost zero.
# 3. **Go in order.** Data first (look at inputs *with* their labels), then the first loss, then one batch,
#    then gradients and activations per layer, then the learning rate, then evaluation.
#
# `dlcourse.diagnose.doctor` runs these checks in that order (their names are printed below): the data
# (label counts, input statistics, duplicates between training and validation, shuffling), the initial loss,
# overfitting one batch, whether anything learned carries over to unseen examples (*learnability*), gradients
# and activations per layer, the first non-finite value, the learning rate, and train/eval mode during
# evaluation. It needs what a training run is made of: the model, the loaders, the loss, a factory for the
# optimizer and, where a bug could hide in them, your own training step and evaluation function.
# `dlcourse.bugs.Setup` keeps exactly these pieces together, trains them (`setup.train(num_epochs)`, recording
# training loss and accuracies per epoch) and hands them to the doctor (`doctor(**setup.doctor_args())`). The
# doctor works on copies, so the set-up is unchanged afterwards.
#
# First, a healthy run: an MLP with SGD and momentum on the digits.

# %%
def sgd(lr: float):
    """An optimizer factory: SGD with momentum 0.9 for the parameters it is given."""
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9)


def healthy(seed: int = 0, *, lr: float = 0.05, make_model=lambda: mlp(64, [64], 10), loss_fn=F.cross_entropy,
            train_step=standard_step, predict_fn=standard_predict) -> Setup:
    """The reference set-up: digits in [0, 1], a 64-64-10 MLP, cross-entropy, the standard step, SGD with
    momentum. The keyword arguments swap in one piece, so a broken twin differs in that piece only."""
    torch.manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(TensorDataset(X_train, y_train), VAL, TEST,
                                                         batch_size=BATCH_SIZE, seed=seed)
    return Setup(make_model(), train_loader, val_loader, sgd(lr), loss_fn=loss_fn, train_step=train_step,
                 predict_fn=predict_fn, test_loader=test_loader)


def twins(broken: dlcourse.History, fixed: dlcourse.History, title: str):
    """Training loss (log scale) and validation accuracy per epoch, broken run against its fixed twin."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.2))
    for history, label, style in ((broken, "broken", "-o"), (fixed, "fixed", "-s")):
        ax_loss.plot(history["epoch"], history["train_loss"], style, markersize=4, label=label)
        ax_acc.plot(history["epoch"], history["val_acc"], style, markersize=4, label=label)
    ax_loss.axhline(LOG_C, color="grey", linestyle=":", label="log 10")
    ax_acc.axhline(0.1, color="grey", linestyle=":", label="chance")
    ax_loss.set(yscale="log", xlabel="epoch", ylabel="training loss")
    ax_acc.set(ylim=(0, 1), xlabel="epoch", ylabel="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def table(**histories: dlcourse.History) -> None:
    """First and last training loss, last training and validation accuracy of each run."""
    print(f"{'run':>10} | {'first loss':>10} | {'last loss':>10} | {'train acc':>9} | {'val acc':>7}")
    for name, h in histories.items():
        print(f"{name:>10} | {h['train_loss'][0]:10.4g} | {h['train_loss'][-1]:10.4g} | "
              f"{h.last['train_acc']:9.1%} | {h.last['val_acc']:7.1%}")


print("the doctor's checks, in order:", ", ".join(dlcourse.diagnose.CHECKS))
reports = {}   # bug -> the doctor's report on the broken set-up, summarised in section 7


def examine(bug: str, setup: Setup, expect: str):
    """Run the doctor on a fresh (untrained) set-up, keep its report under `bug`, check that the check
    `expect` raised a warning or an error, and show the report."""
    reports[bug] = report = doctor(**setup.doctor_args(), device=device, progress=False)
    print(f"flagged by: {', '.join(sorted({f.check for f in report.flagged})) or 'nothing'}")
    assert report.flags(expect), f"the doctor's {expect!r} check should flag this set-up"
    return report


history_healthy = healthy().train(NUM_EPOCHS, device=device)
table(healthy=history_healthy)
assert history_healthy.last["val_acc"] > 0.85

# %% [markdown]
# The doctor on the healthy run. Read the table from the top: each line is one check, with its verdict
# (`ok`, `info`, `warning`, `error`), what it measured and, for a problem, the fix. A healthy run should
# raise no warning: a doctor that cries wolf is soon ignored.

# %%
report_healthy = doctor(**healthy().doctor_args(), device=device, progress=False)
assert not report_healthy.flagged, [(f.check, f.message) for f in report_healthy.flagged]
report_healthy

# %% [markdown]
# ## 2. The loss does not move: a learning rate 100× too low
#
# The same run with `lr=0.0005` instead of `0.05`. Nothing else changes; the fixed twin is the healthy run.

# %%
def lr_too_low() -> Setup:
    return healthy(lr=0.0005)   # 100× below the healthy 0.05


history_broken = lr_too_low().train(NUM_EPOCHS, device=device)
table(broken=history_broken, fixed=history_healthy)
assert history_broken["train_loss"][-1] > 0.85 * LOG_C, "with lr / 100 the loss should stay near log 10"
twins(history_broken, history_healthy, "learning rate 100× too low")

# %% [markdown]
# The loss starts at $\log 10$, as it should, and barely moves. A flat loss means the weights hardly change:
# either the steps are tiny (the learning rate) or the gradient does not reach the weights. The LR range test
# from notebook 04 tells the two apart: it sweeps the learning rate and reports where the loss falls fastest.

# %%
examine("learning rate 100× too low", lr_too_low(), expect="lr_range")

# %% [markdown]
# ## 3. The loss explodes or turns `nan`
#
# ### 3a. A forgotten `zero_grad()`
# `loss.backward()` *adds* to `.grad` (notebook 01). Without clearing, the gradient used at step $t$ is the
# sum of all gradients so far, and the momentum buffer sums those sums again: the steps grow every batch.

# %%
def step_without_zero_grad(model, optimizer, X, y, loss_fn):
    """The standard step with optimizer.zero_grad() left out."""
    loss = loss_fn(model(X), y)
    loss.backward()            # adds to whatever .grad already holds
    optimizer.step()
    return loss


history_broken = healthy(train_step=step_without_zero_grad).train(NUM_EPOCHS, device=device)
table(broken=history_broken, fixed=history_healthy)
assert history_broken["train_loss"][-1] > 2 * history_broken["train_loss"][0], "the loss should grow"
twins(history_broken, history_healthy, "forgotten zero_grad()")

# %% [markdown]
# The first loss is already far above $\log 10$, because the epoch's average includes the steps that went
# wrong, and it keeps growing. The doctor calls *your* step (twice on the same batch, to see whether `.grad`
# is cleared in between, and then to overfit one batch), so a bug inside the step shows up.

# %%
examine("forgotten zero_grad()", healthy(train_step=step_without_zero_grad), expect="overfit_batch")

# %% [markdown]
# ### 3b. `nan` from the first step: dividing by a zero standard deviation
# Standardising every pixel to mean 0 and standard deviation 1 is a common first step. But some pixels of the
# digits (at the image border) are 0 in every training image: their standard deviation is 0, and
# $0 / 0$ is `nan`. One `nan` in the input makes every output of the first layer `nan`, and the loss with it.
# The fix is what scikit-learn's `StandardScaler` does: leave features with zero spread unscaled.

# %%
pixel_mean, pixel_std = X_train.mean(dim=0), X_train.std(dim=0)    # (1, 8, 8) each
print("pixels with zero standard deviation in the training set:", int((pixel_std == 0).sum()))
safe_std = torch.where(pixel_std > 0, pixel_std, torch.ones_like(pixel_std))


def standardised(scale: torch.Tensor, seed: int = 0) -> Setup:
    """The healthy set-up on inputs (X - pixel_mean) / scale, the same statistics for every split."""
    torch.manual_seed(seed)

    def prepare(X):
        return (X - pixel_mean) / scale

    loaders = make_loaders(TensorDataset(prepare(X_train), y_train), TensorDataset(prepare(X_val), y_val),
                           TensorDataset(prepare(X_test), y_test), batch_size=BATCH_SIZE, seed=seed)
    return Setup(mlp(64, [64], 10), loaders[0], loaders[1], sgd(0.05), test_loader=loaders[2])


history_broken = standardised(pixel_std).train(NUM_EPOCHS, device=device)
history_fixed = standardised(safe_std).train(NUM_EPOCHS, device=device)
table(broken=history_broken, fixed=history_fixed)
assert all(math.isnan(v) for v in history_broken["train_loss"]) and history_fixed.last["val_acc"] > 0.85
twins(history_broken, history_fixed, "standardising with a zero standard deviation")

# %% [markdown]
# A `nan` loss from the very first epoch points at the data or the forward pass, not at the optimizer: no step
# has been taken when the first loss is computed. The doctor looks for non-finite inputs and follows the first
# `nan` through the model with forward hooks.

# %%
examine("zero std (nan inputs)", standardised(pixel_std), expect="non_finite")

# %% [markdown]
# ## 4. The loss falls a little, accuracy stays at chance
#
# ### 4a. Labels shuffled separately from the inputs
# Shuffling the training set by hand, with two different permutations for `X` and `y`, turns every label into
# a random one. Nothing crashes; the network can still memorise some pairs, so the training loss creeps down
# while validation stays at chance.

# %%
def shuffled_by_hand(same_permutation: bool, seed: int = 0) -> Setup:
    """The healthy set-up after shuffling the training set by hand."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(X_train), generator=g)
    X_shuffled = X_train[perm]
    y_shuffled = y_train[perm] if same_permutation else y_train[torch.randperm(len(y_train), generator=g)]
    loaders = make_loaders(TensorDataset(X_shuffled, y_shuffled), VAL, TEST, batch_size=BATCH_SIZE, seed=seed)
    return Setup(mlp(64, [64], 10), loaders[0], loaders[1], sgd(0.05), test_loader=loaders[2])


history_broken = shuffled_by_hand(False).train(NUM_EPOCHS, device=device)
history_fixed = shuffled_by_hand(True).train(NUM_EPOCHS, device=device)
table(broken=history_broken, fixed=history_fixed)
assert history_broken.last["val_acc"] < 0.25 and history_fixed.last["val_acc"] > 0.85
twins(history_broken, history_fixed, "labels shuffled separately from the inputs")

# %% [markdown]
# The cheapest test is to **look**: show a few training images with their labels.

# %%
X_shown, y_shown = next(iter(DataLoader(shuffled_by_hand(False).train_loader.dataset, batch_size=16)))
dlcourse.viz.image_grid(X_shown, labels=y_shown, classes=splits.classes)

# %% [markdown]
# Every label is a plausible digit and the label counts are unchanged, so any check that looks at the labels
# alone or at the inputs alone finds nothing, and one batch can still be memorised. What gives the bug away is
# that nothing carries over: the doctor's *learnability* check trains on a few batches and then scores
# training examples it did not train on. Random labels can be memorised but not learned.

# %%
examine("labels shuffled separately", shuffled_by_hand(False), expect="learnability")

# %% [markdown]
# ### 4b. Wrong broadcasting in a loss
# A hand-written cross-entropy that picks each example's log-probability with `log_p[:, y]`. For a batch of B,
# that is a (B, B) matrix: entry (i, j) is example i's log-probability of example j's label. Its mean rewards
# every example for predicting every label of the batch: the best answer is the batch's label frequencies,
# tilted only by 1/B towards the example's own label. Learning slows to a crawl, and accuracy stays near chance
# for a long time. The right index is `log_p[torch.arange(B), y]`, shape (B,).

# %%
def cross_entropy_broadcast(y_hat, y):
    log_p = torch.log_softmax(y_hat, dim=1)       # (B, C)
    return -log_p[:, y].mean()                    # (B, B): every example against every label


def cross_entropy_by_hand(y_hat, y):
    log_p = torch.log_softmax(y_hat, dim=1)       # (B, C)
    return -log_p[torch.arange(len(y)), y].mean() # (B,): each example against its own label


_y_hat, _y = torch.randn(4, 10), torch.tensor([3, 1, 4, 1])
print("shape inside the broken loss:", tuple(torch.log_softmax(_y_hat, dim=1)[:, _y].shape))
assert torch.allclose(cross_entropy_by_hand(_y_hat, _y), F.cross_entropy(_y_hat, _y))

history_broken = healthy(loss_fn=cross_entropy_broadcast).train(NUM_EPOCHS, device=device)
history_fixed = healthy(loss_fn=cross_entropy_by_hand).train(NUM_EPOCHS, device=device)
table(broken=history_broken, fixed=history_fixed)
assert history_broken.last["val_acc"] < 0.4 and history_fixed.last["val_acc"] > 0.85
twins(history_broken, history_fixed, "log_p[:, y]: a loss that broadcasts")

# %% [markdown]
# A loss that is right can be driven to almost zero on one fixed batch; this one cannot go below the entropy
# of the batch's labels, so the doctor's overfit-one-batch check fails. Before that, its initial-loss check
# traces the shapes of the tensors inside the loss and reports the broadcast itself.

# %%
examine("loss broadcasting", healthy(loss_fn=cross_entropy_broadcast), expect="initial_loss")

# %% [markdown]
# ## 5. Validation worse than training
#
# A gap between training and validation is expected once a model starts to memorise (notebook 05). Two bugs
# produce a gap, or a validation score lower than it should be, without any overfitting.
#
# ### 5a. A missing `model.eval()`
# The model below has BatchNorm and dropout; its prediction function switches off gradients but forgets
# `model.eval()`. In training mode, dropout still drops half of the hidden units and BatchNorm normalises
# with the statistics of the evaluation batch (and updates its running statistics with them).

# %%
def regularised_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(64, 10))


@torch.no_grad()
def predict_without_eval(model, loader):
    """Predicted classes (N,), in the mode the model happens to be in."""
    return torch.cat([model(X.to(model_device(model))).argmax(dim=1).cpu() for X, _ in loader])


@torch.no_grad()
def predict_in_eval_mode(model, loader):
    """Predicted classes (N,) in eval mode; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    preds = torch.cat([model(X.to(model_device(model))).argmax(dim=1).cpu() for X, _ in loader])
    model.train(was_training)
    return preds


broken = healthy(make_model=regularised_mlp, predict_fn=predict_without_eval)
fixed = healthy(make_model=regularised_mlp, predict_fn=predict_in_eval_mode)
history_broken = broken.train(NUM_EPOCHS, device=device)
history_fixed = fixed.train(NUM_EPOCHS, device=device)
table(broken=history_broken, fixed=history_fixed)
twins(history_broken, history_fixed, "predictions without model.eval()")

# %% [markdown]
# The two runs train almost identically (their losses agree closely); only the predictions differ. The
# fastest test: predict the same data twice. A model in eval mode gives the same answers every time.

# %%
first, second = broken.predict(broken.val_loader), broken.predict(broken.val_loader)
changed = (first != second).double().mean().item()
print(f"without eval(): {changed:.1%} of validation predictions change between two identical calls")
in_eval_mode = (predict_in_eval_mode(broken.model, broken.val_loader) == y_val).double().mean().item()
print(f"the broken run's model, validation accuracy: {history_broken.last['val_acc']:.1%} as its prediction "
      f"function reported it, {in_eval_mode:.1%} in eval mode")
assert changed > 0 and fixed.predict(fixed.val_loader).equal(fixed.predict(fixed.val_loader))

# %% [markdown]
# The doctor runs your evaluation function with hooks that record whether dropout and BatchNorm were in
# training mode during it:

# %%
examine("missing model.eval()", healthy(make_model=regularised_mlp, predict_fn=predict_without_eval),
        expect="eval_mode")

# %% [markdown]
# ### 5b. Data normalised with test statistics
# The training set is standardised with its own mean and standard deviation per pixel (with the zero-spread
# fix from section 3b). The bug: the evaluation data are standardised with *their own* statistics, computed
# from whatever data are being evaluated, instead of the training set's. Training is identical in both
# pipelines, so we train one model and compare the two ways of preparing the test set.

# %%
def standardise_with_own_statistics(X):
    """The bug: scale any set of images by its own per-pixel mean and std."""
    std = X.std(dim=0) if len(X) > 1 else torch.zeros_like(X[0])   # a single image has no spread
    return (X - X.mean(dim=0)) / torch.where(std > 0, std, torch.ones_like(std))


def standardise_with_train_statistics(X):
    """The fix: the training set's statistics, computed once and reused for every input."""
    return (X - pixel_mean) / safe_std


trained = standardised(safe_std)               # trains on (X_train - pixel_mean) / safe_std
trained.train(NUM_EPOCHS, device=device)


@torch.no_grad()
def test_accuracy(prepare, batch_size: int) -> float:
    """Accuracy on the test set when it arrives `batch_size` images at a time and each batch is prepared."""
    trained.model.eval()
    preds = [trained.model(prepare(X_test[i:i + batch_size]).to(device)).argmax(dim=1).cpu()
             for i in range(0, len(X_test), batch_size)]
    return (torch.cat(preds) == y_test).double().mean().item()


print(f"{'test images at a time':>21} | {'own statistics':>14} | {'training statistics':>19}")
rows = {}
for batch_size in (len(X_test), 64, 8, 2, 1):
    rows[batch_size] = (test_accuracy(standardise_with_own_statistics, batch_size),
                        test_accuracy(standardise_with_train_statistics, batch_size))
    print(f"{batch_size:>21} | {rows[batch_size][0]:14.1%} | {rows[batch_size][1]:19.1%}")
assert len({acc for _, acc in rows.values()}) == 1, "with fixed statistics, batching changes no prediction"
assert rows[1][0] < 0.5 < rows[len(X_test)][0]

# %% [markdown]
# Scored as one block, the test set gives the same number with both pipelines: that is why this bug survives
# every benchmark. But a prediction must not depend on which other images happen to be in the batch. With
# their own statistics, a few test images at a time are scaled differently from anything the model was trained
# on, and a single image (a real user's request) has no spread at all: every pixel becomes 0 and the model
# answers with one class for everything. With the training statistics, every batch size gives the same answer.
# The same holds for the validation set during development, and for data that drift after deployment: the
# training statistics belong to the model, like its weights (store them with it).
#
# The doctor cannot watch how data are prepared, but it can spot the fingerprint this bug leaves: validation
# inputs that are *exactly* standardised, just like the training inputs, can only have been scaled with their
# own statistics. Its report on a set-up whose validation data were prepared that way:

# %%
def validation_with_own_statistics() -> Setup:
    """Training data standardised with the training statistics, validation data with their own."""
    setup = standardised(safe_std)
    setup.val_loader = DataLoader(TensorDataset(standardise_with_own_statistics(X_val), y_val),
                                  batch_size=BATCH_SIZE)
    return setup


examine("normalised with test statistics", validation_with_own_statistics(), expect="inputs")

# %% [markdown]
# ## 6. Learning slowly
#
# ### 6a. Softmax before `CrossEntropyLoss`
# `F.cross_entropy` (and `nn.CrossEntropyLoss`) expects **logits** and applies log-softmax itself. A model
# that ends in `nn.Softmax` feeds it probabilities, which are squashed a second time: all inputs to the loss
# lie in [0, 1], so the loss can never go below $-\log\big(e / (e + 9)\big) \approx 1.46$ for 10 classes,
# and its gradients are small. The model learns, slowly, and stalls.

# %%
def mlp_with_softmax() -> nn.Module:
    return nn.Sequential(*mlp(64, [64], 10), nn.Softmax(dim=1))   # the healthy MLP with a softmax on top


history_broken = healthy(make_model=mlp_with_softmax).train(NUM_EPOCHS, device=device)
table(broken=history_broken, fixed=history_healthy)
print(f"lowest possible loss with probabilities as logits: {-math.log(math.e / (math.e + 9)):.3f}")
# the bound is reached only by a one-hot output, and float32 rounds it to 2e-9 below the exact value
assert min(history_broken["train_loss"]) > -math.log(math.e / (math.e + 9)) - 1e-6
twins(history_broken, history_healthy, "softmax before cross-entropy")

# %%
examine("softmax before cross-entropy", healthy(make_model=mlp_with_softmax), expect="initial_loss")

# %% [markdown]
# ### 6b. A detached tensor
# The model below keeps its features for later inspection, and by mistake feeds the *detached* copy to the
# head. `.detach()` cuts the autograd graph: the head still learns, but no gradient reaches the feature
# layers, which stay at their random initial weights. The same happens with `torch.no_grad()` around part of
# the forward pass, or a round trip through `.item()` or NumPy.

# %%
class FeaturesAndHead(nn.Module):
    """Two feature layers and a linear head; keeps the last features for inspection."""

    def __init__(self, detach: bool) -> None:
        super().__init__()
        self.detach = detach
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(),
                                      nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, 10)
        self.last_features = None

    def forward(self, X):                       # X: (B, 1, 8, 8)
        h = self.features(X)                    # (B, 32)
        self.last_features = h.detach()         # for inspection: fine
        return self.head(self.last_features if self.detach else h)   # the bug: the detached copy


broken = healthy(make_model=lambda: FeaturesAndHead(detach=True))
fixed = healthy(make_model=lambda: FeaturesAndHead(detach=False))
history_broken = broken.train(NUM_EPOCHS, device=device)
history_fixed = fixed.train(NUM_EPOCHS, device=device)
table(broken=history_broken, fixed=history_fixed)
without_grad = [name for name, p in broken.model.named_parameters() if p.grad is None]
print("parameters that never received a gradient:", without_grad)
assert without_grad == ["features.1.weight", "features.1.bias", "features.3.weight", "features.3.bias"]
twins(history_broken, history_fixed, "a detached tensor in the forward pass")

# %%
examine("detached tensor", healthy(make_model=lambda: FeaturesAndHead(detach=True)), expect="gradient_flow")

# %% [markdown]
# ## 7. What the doctor saw
#
# Every broken run of this notebook, with the checks that raised a warning or an error on it:

# %%
print(f"{'bug':>32} | flagged by")
for bug, report in reports.items():
    flagged = sorted({f.check for f in report.flagged})
    print(f"{bug:>32} | {', '.join(flagged) if flagged else '(nothing)'}")
caught = [bug for bug, report in reports.items() if report.flagged]
print(f"\ncaught {len(caught)} of {len(reports)}; the healthy run: "
      f"{[f.check for f in report_healthy.flagged] or 'nothing flagged'}")

# %% [markdown]
# Three lessons in this table. The doctor catches these bugs with cheap, generic tests (a few batches, a short
# LR sweep, hooks on the modules); it does not need to know what the bug is. Most bugs trip more than one
# check, and the first flagged check in the chain's order is usually closest to the cause: the later ones
# (a failed overfit, a learning rate that "does not work") are often consequences. And a clean report is not a
# proof: the checks are tests with thresholds on a few hundred steps. A bug that appears only after many
# epochs, only in code the doctor is not given (a data pipeline run at deployment, a metric computed
# elsewhere), or that happens to pass a threshold, needs the method: a healthy twin, and a look at the data
# with its labels.
#
# Slow training in wall-clock time (rather than in epochs) is a different problem, with a different tool:
# a profiler shows where the time goes (notebook 10).

# %% [markdown]
# ## Summary
# - Start from the symptom, list its usual causes, and test them in order: data → model → loss → step →
#   optimizer → evaluation. Compare with a healthy twin; change one thing at a time.
# - Predictable numbers are free tests: the first loss near $\log C$; one batch overfit to almost zero loss;
#   identical predictions from two identical evaluation calls.
# - A flat loss: a learning rate far too low, or no gradient reaching the weights (`.detach()`,
#   `torch.no_grad()`, frozen layers). Find the learning rate with the LR range test.
# - An exploding loss or `nan`: gradients that are never cleared (`optimizer.zero_grad()`, with the
#   parentheses), a learning rate far too high, or a `nan` produced in the data or the forward pass (a zero
#   standard deviation, `log(0)`).
# - Loss falling with accuracy at chance: inputs and labels that no longer match, or a loss that broadcasts
#   (`log_p[:, y]` is (B, B)); print the shape of every tensor in a hand-written loss.
# - Validation below what the model can do: `model.eval()` missing, or evaluation data prepared with their own
#   statistics. Statistics of the training set belong to the model.
# - `F.cross_entropy` takes logits: no softmax in the model.
# - `dlcourse.diagnose.doctor(**setup.doctor_args())` runs all the checks in order; it flagged every bug here,
#   usually by several checks, the first of which is closest to the cause. A clean report is not a proof.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **Adam hides a bug.** Repeat section 3a with `torch.optim.Adam(params, lr=1e-3)`. Does the forgotten
#    `zero_grad()` still make the loss explode? Explain with Adam's update rule why the damage is smaller.
# 2. **Too high.** Run the healthy set-up with `lr=5.0`. Which symptom do you see, and what does the doctor's
#    LR range check report?
# 3. **Leakage.** Build a validation set that contains 100 training images. Which check of the doctor flags
#    it? What happens to the validation accuracy, and why is that worse than a low one?
# 4. **Dead from the start.** Initialise the first layer's biases to −5 (`nn.init.constant_`). Which
#    symptom, which doctor check?
# 5. **Learnability by hand.** Write your own test for section 4a: train a fresh model for 30 steps on half of
#    the training set and score it on the other half. Why does it expose the shuffled labels when overfitting
#    one batch does not? Compare with the doctor's `learnability` finding.
# 6. **Your own bug.** Plant a bug that the doctor does not flag and that is not in this notebook. What
#    symptom does it produce, and which test from section 1 finds it?
