# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 19 · Experiments: tracking, search, evaluation
#
# A model is the result of many runs, most of them failed. This notebook is about the habits that make those
# runs worth something: recording every run so two can be compared and any one repeated, spending a compute
# budget on hyperparameters wisely, and judging a classifier by more than its accuracy.
#
# **Learning goals**
# - Make a training run repeatable bit for bit, and name what breaks it (unseeded data order, non-deterministic
#   kernels, cuDNN's benchmark mode).
# - Log runs to TensorBoard with a `dlcourse.fit` callback (scalars, histograms, learning rate, hyperparameters),
#   compare them side by side, and save the config and git commit with every checkpoint.
# - Measure why random search beats grid search when few hyperparameters matter; write asynchronous successive
#   halving (ASHA) from scratch; run Optuna (TPE sampler, median pruner) on the same budget; plot the best loss
#   found against the compute spent.
# - Compute a confusion matrix, precision, recall and F1 (macro and micro), ROC-AUC and PR-AUC, a reliability
#   diagram and the expected calibration error from scratch, equal to scikit-learn's; fix overconfidence with
#   temperature scaling; choose a decision threshold for an imbalanced task.
#
# **Prerequisites:** notebook 01 (`dlcourse.fit` and its callbacks), notebook 04 (learning rates and weight
# decay), notebook 05 (validation sets); cross-entropy and softmax.
#
# **Time:** seconds at `smoke`; about a minute at `small` on a laptop CPU, most of it the searches of sections
# 4–5; at `full` (a GPU) the searches get a larger budget. The last cell prints how long this run took.
#
# Every model here is an MLP on scikit-learn's handwritten digits (`dlcourse.data.digits`, shipped with
# scikit-learn), so nothing downloads and each training epoch takes milliseconds.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import math
import shutil
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna
import torch
import torch.nn.functional as F
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from tqdm.auto import tqdm

import dlcourse
from dlcourse import tracking
from dlcourse.data import digits
from dlcourse.models import mlp
from dlcourse.train import fit, load_checkpoint, save_checkpoint

cfg = dlcourse.setup(seed=0)
device = cfg.device
progress = cfg.pick(smoke=False, small=True, full=True)
RUNS = Path("runs") / "19_experiments"  # git ignores every runs/ folder
shutil.rmtree(RUNS, ignore_errors=True)
data = digits(flatten=True, seed=cfg.seed)
batch_size = 128
train_loader, val_loader, test_loader = data.loaders(batch_size=batch_size, seed=cfg.seed)
t_start = time.perf_counter()
print(data)

# %% [markdown]
# ## 1. Reproducibility
# A run is reproducible when running it again gives the same weights, bit for bit. Randomness enters training
# in three places: the initial weights, the order of the batches (and dropout, augmentation), and the kernels
# themselves. `dlcourse.setup(seed=...)` seeds Python's, NumPy's and torch's generators; `make_loaders` gives
# the shuffling its own seeded generator. On a GPU two more switches matter:
# - `torch.backends.cudnn.benchmark = True` times several convolution algorithms on the first batch and keeps
#   the fastest; which one wins can change from run to run, and so can the rounding.
# - Some CUDA kernels (e.g. `index_add_`, scatter, some backward passes) add floating-point numbers with atomics
#   in whatever order the threads arrive: not associative, so not repeatable.
#   `torch.use_deterministic_algorithms(True)` picks deterministic versions, or raises where there are none
#   (cuBLAS also needs `CUBLAS_WORKSPACE_CONFIG=:4096:8` set before it starts).
#
# The check: the same seeded run twice on the CPU gives identical weights; forgetting to seed the data order
# does not.

# %%
def train_once(seed: int, loader_seed: int | None, num_epochs: int = 1) -> torch.Tensor:
    """Train a digits MLP on the CPU; return all its weights as one vector."""
    torch.manual_seed(seed)
    model = mlp(64, [32], 10)
    generator = torch.Generator().manual_seed(loader_seed) if loader_seed is not None else None
    loader = torch.utils.data.DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fit(model, optimizer, loader, num_epochs=num_epochs, progress=False, device="cpu")
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach()


torch.backends.cudnn.benchmark = False
torch.use_deterministic_algorithms(True)
try:
    run_a, run_b = train_once(seed=1, loader_seed=1), train_once(seed=1, loader_seed=1)
    torch.manual_seed(123)  # the unseeded loader draws its order from the global generator, now elsewhere
    run_c = train_once(seed=1, loader_seed=None)
finally:
    torch.use_deterministic_algorithms(False)
print(f"same seeds twice: identical weights {torch.equal(run_a, run_b)}; data order unseeded: largest weight "
      f"difference {(run_a - run_c).abs().max():.3f}")
assert torch.equal(run_a, run_b)
assert not torch.equal(run_a, run_c)

# %% [markdown]
# ## 2. Tracking runs with TensorBoard
# `dlcourse.tracking.TensorBoardLogger` is a `fit` callback (notebook 01): after every epoch it writes the
# History's last record (losses, accuracies, the learning rate) and histograms of every weight and of its
# gradient on the epoch's last batch to an event file; `close()` adds the hyperparameters with the final
# metrics, which TensorBoard's HParams tab shows as a table of runs. One folder per run, all under `runs/`, so
# `tensorboard --logdir notebooks/runs` (run in a terminal, not here) draws the runs side by side.
#
# A checkpoint without its config is a riddle. `tracking.run_info(config)` holds the config, the git commit
# (with `-dirty` when tracked files have uncommitted changes) and the library versions; we save it inside each
# checkpoint and read it back.

# %%
def make_run(lr: float, weight_decay: float, hidden: int, seed: int = 0):
    torch.manual_seed(seed)
    model = mlp(64, [hidden], 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    return model, optimizer


track_epochs = cfg.pick(smoke=3, small=15, full=30)
histories = {}
for lr in (0.01, 0.1):
    config = {"lr": lr, "weight_decay": 1e-4, "hidden": 64, "num_epochs": track_epochs, "batch_size": batch_size}
    model, optimizer = make_run(config["lr"], config["weight_decay"], config["hidden"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=track_epochs)
    with tracking.TensorBoardLogger(RUNS / f"lr={lr}", model, hparams=config) as logger:
        histories[lr] = fit(model, optimizer, train_loader, val_loader, num_epochs=track_epochs,
                            scheduler=scheduler, callbacks=[logger], progress=False)
    save_checkpoint(RUNS / f"lr={lr}" / "model.pt", model, optimizer, run=tracking.run_info(config))

saved = load_checkpoint(RUNS / "lr=0.1" / "model.pt", mlp(64, [64], 10).to(device))
print("checkpoint says:", saved["run"])
assert saved["run"]["config"]["lr"] == 0.1

# read the event files back with TensorBoard's own reader: what was logged is what fit recorded
logged = {lr: tracking.read_scalars(RUNS / f"lr={lr}") for lr in histories}
for lr, history in histories.items():
    assert np.allclose([v for _, v in logged[lr]["loss/val"]], history["val_loss"], rtol=1e-6)
    assert np.allclose([v for _, v in logged[lr]["lr"]], history["lr"], rtol=1e-6)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for lr in histories:
    for tag, style in (("loss/train", "--"), ("loss/val", "-")):
        steps, values = zip(*logged[lr][tag])
        axes[0].plot(steps, values, style, label=f"lr={lr} {tag}")
    axes[1].plot(*zip(*logged[lr]["lr"]), label=f"lr={lr}")
axes[0].set(xlabel="epoch", ylabel="loss", title="read back from the event files")
axes[1].set(xlabel="epoch", ylabel="learning rate (cosine schedule)")
axes[0].legend(fontsize=7)
axes[1].legend(fontsize=7)
plt.show()

# %% [markdown]
# ## 3. Grid search or random search?
# A grid of $k \times k$ points tries only $k$ distinct values of each hyperparameter. Random search with the
# same $k^2$ trials tries $k^2$ distinct values of every one. When one hyperparameter matters and the other
# hardly does (the usual case: the learning rate matters, much else barely), the grid wastes $k - 1$ of every
# $k$ trials repeating values of the one that counts (Bergstra and Bengio, 2012).
#
# Measured on a function with that shape, where a hyperparameter's value lies in $[0, 1]$: the loss depends
# strongly on $x_1$ and weakly on $x_2$, with the best $x_1$ placed at random. We count how far each search's
# best trial is from the true minimum (the *regret*), over many repetitions.

# %%
def toy_loss(x: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """x: (..., 2) points in [0, 1]^2; best: (..., 2) the minimum. Steep in x1, nearly flat in x2."""
    return 10 * (x[..., 0] - best[..., 0]) ** 2 + 0.1 * (x[..., 1] - best[..., 1]) ** 2


k, repeats = 4, 2000
gen = torch.Generator().manual_seed(cfg.seed)
best = torch.rand(repeats, 1, 2, generator=gen)                          # (R, 1, 2) a different optimum each time
ticks = (torch.arange(k) + 0.5) / k                                      # cell centres, the best grid there is
grid = torch.cartesian_prod(ticks, ticks)                                # (k², 2)
random_points = torch.rand(repeats, k * k, 2, generator=gen)             # (R, k², 2)
regret_grid = toy_loss(grid, best).min(dim=1).values                     # (R,)
regret_random = toy_loss(random_points, best).min(dim=1).values
print(f"{k * k} trials, mean regret: grid {regret_grid.mean():.4f}, random {regret_random.mean():.4f} "
      f"(random better in {(regret_random < regret_grid).float().mean():.0%} of {repeats} problems)")
assert regret_random.mean() < 0.75 * regret_grid.mean()

# %% [markdown]
# ## 4. The real search problem, and successive halving
# Now a real objective: the validation loss of a digits MLP after some epochs, as a function of the learning
# rate, the weight decay and the hidden width (log-uniform, log-uniform, one of four; the grid keeps the width
# at 64). The compute unit is one training epoch; every search below gets the same budget, that of $k^2$
# full-length trials.
#
# A `Trial` keeps its model and optimizer, so a trial can be trained further later: what successive halving
# needs.

# %%
max_epochs = cfg.pick(smoke=3, small=27, full=27)
k = cfg.pick(smoke=2, small=3, full=5)
budget = k * k * max_epochs                                              # epochs each search may spend
space = {"lr": (1e-3, 1.0), "weight_decay": (1e-6, 1e-1), "hidden": (16, 32, 64, 128)}


def log_uniform(low: float, high: float, u: float) -> float:
    return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))


class Trial:
    """One configuration being trained; ``train_to(epochs)`` continues training up to ``epochs`` in all."""

    def __init__(self, params: dict, seed: int) -> None:
        self.params, self.epochs, self.loss = params, 0, math.inf
        self.model, self.optimizer = make_run(params["lr"], params["weight_decay"], params["hidden"], seed)

    def train_to(self, epochs: int) -> float:
        history = fit(self.model, self.optimizer, train_loader, val_loader, num_epochs=epochs - self.epochs,
                      progress=False)
        self.epochs = epochs
        loss = history.last["val_loss"]
        self.loss = loss if math.isfinite(loss) else 10.0   # diverged: worse than chance (ln 10 ≈ 2.3)
        return self.loss


class Tracker:
    """Counts the epochs a search spends and the best validation loss found so far."""

    def __init__(self, name: str) -> None:
        self.name, self.spent, self.best, self.curve, self.trials = name, 0, math.inf, [], 0

    def record(self, epochs: int, loss: float) -> None:
        self.spent += epochs
        self.best = min(self.best, loss)
        self.curve.append((self.spent, self.best))


def grid_search() -> Tracker:
    tracker = Tracker("grid")
    lrs = [log_uniform(*space["lr"], (i + 0.5) / k) for i in range(k)]
    wds = [log_uniform(*space["weight_decay"], (i + 0.5) / k) for i in range(k)]
    for i, (lr, wd) in enumerate(tqdm(list(zip(np.repeat(lrs, k), np.tile(wds, k))), desc="grid",
                                      disable=not progress)):
        trial = Trial({"lr": float(lr), "weight_decay": float(wd), "hidden": 64}, seed=i)
        tracker.record(max_epochs, trial.train_to(max_epochs))
    return tracker


def sample_params(rng: np.random.Generator) -> dict:
    return {"lr": log_uniform(*space["lr"], rng.random()),
            "weight_decay": log_uniform(*space["weight_decay"], rng.random()),
            "hidden": int(rng.choice(space["hidden"]))}


def random_search(seed: int) -> Tracker:
    tracker, rng = Tracker("random"), np.random.default_rng(seed)
    for i in tqdm(range(k * k), desc="random", disable=not progress):
        trial = Trial(sample_params(rng), seed=i)
        tracker.record(max_epochs, trial.train_to(max_epochs))
    return tracker


searches = {"grid": grid_search(), "random": random_search(cfg.seed)}
for s in searches.values():
    print(f"{s.name:>7}: best validation loss {s.best:.4f} after {s.spent} epochs")

# %% [markdown]
# **Successive halving** starts many configurations with a small budget, keeps the best $1/\eta$ of them, gives
# those $\eta$ times more epochs, and repeats: most of the compute goes to the promising ones. With a minimum
# of $r$ epochs the *rungs* are at $r, r\eta, r\eta^2, \dots$ epochs, up to `max_epochs`.
#
# **ASHA** (asynchronous successive halving, Li et al., 2020) drops the waiting: whenever a worker is free,
#
# 1. from the highest rung down, look for a trial that is in the top $\lfloor n/\eta \rfloor$ of the $n$ trials
#    that have finished that rung and has not been promoted yet: if there is one, promote it (train it up to
#    the next rung);
# 2. otherwise start a new configuration at the lowest rung.
#
# Early promotions are made on little evidence (the top third of three trials is the best one so far), which
# is the price of never waiting. We run it with one worker; with many, each would call `next_job` when free.

# %%
def rung_epochs(min_epochs: int, eta: int, max_epochs: int) -> list[int]:
    rungs = [min_epochs]
    while rungs[-1] * eta <= max_epochs:
        rungs.append(rungs[-1] * eta)
    return rungs


def promotable(rung: dict[int, float], promoted: set[int], eta: int) -> list[int]:
    """Trial ids in the top ⌊n/η⌋ of a rung's n results (lowest loss first), not promoted yet."""
    top = sorted(rung, key=lambda t: (rung[t], t))[: len(rung) // eta]
    return [t for t in top if t not in promoted]


def asha(seed: int, eta: int = 3, min_epochs: int = 1) -> Tracker:
    tracker, rng = Tracker("ASHA"), np.random.default_rng(seed)
    rungs = rung_epochs(min_epochs, eta, max_epochs)
    results = [{} for _ in rungs]                    # results[k][trial id] = val loss at rung k
    promoted = [set() for _ in rungs]
    trials: list[Trial] = []
    bar = tqdm(total=budget, desc="ASHA", disable=not progress)
    while True:
        job = next(((ids[0], k + 1) for k in reversed(range(len(rungs) - 1))
                    if (ids := promotable(results[k], promoted[k], eta))), None)
        if job is None:                              # nothing to promote: a new configuration at the lowest rung
            trials.append(Trial(sample_params(rng), seed=len(trials)))
            job = (len(trials) - 1, 0)
        trial_id, k = job
        cost = rungs[k] - trials[trial_id].epochs
        if tracker.spent + cost > budget:
            break
        if k > 0:
            promoted[k - 1].add(trial_id)
        results[k][trial_id] = trials[trial_id].train_to(rungs[k])
        tracker.record(cost, results[k][trial_id])
        bar.update(cost)
    bar.close()
    tracker.trials = len(results[0])                # configurations trained (the last one drawn may not fit)
    tracker.rungs = {r: len(res) for r, res in zip(rungs, results)}
    return tracker


searches["ASHA"] = asha(cfg.seed)
print(f"ASHA: best validation loss {searches['ASHA'].best:.4f} after {searches['ASHA'].spent} epochs; "
      f"{searches['ASHA'].trials} configurations tried; trials per rung (epochs: count) {searches['ASHA'].rungs}")
assert searches["ASHA"].spent <= budget and searches["ASHA"].trials > k * k

# %% [markdown]
# ## 5. Optuna: a model of good configurations, and pruning
# Random search and ASHA draw configurations blindly. Optuna's default **TPE** sampler (tree-structured Parzen
# estimator) splits the finished trials into good and bad by their loss, fits a density to each, and proposes
# the point where good is most likely relative to bad. Its **median pruner** stops a trial whose loss after
# epoch $t$ is worse than the median of earlier trials at epoch $t$: the trial reports after every epoch and asks
# `trial.should_prune()`. (`optuna.pruners.HyperbandPruner` would run successive halving instead.) Same
# budget: a trial that would cross it is cut short and the study stops.

# %%
optuna.logging.set_verbosity(optuna.logging.WARNING)


def optuna_search(seed: int) -> Tracker:
    tracker = Tracker("Optuna TPE + median")
    bar = tqdm(total=budget, desc="Optuna", disable=not progress)

    def objective(trial: optuna.Trial) -> float:
        params = {"lr": trial.suggest_float("lr", *space["lr"], log=True),
                  "weight_decay": trial.suggest_float("weight_decay", *space["weight_decay"], log=True),
                  "hidden": trial.suggest_categorical("hidden", space["hidden"])}
        run = Trial(params, seed=trial.number)
        for epoch in range(1, max_epochs + 1):
            if tracker.spent >= budget:
                trial.study.stop()
                raise optuna.TrialPruned()
            loss = run.train_to(epoch)
            tracker.record(1, loss)
            bar.update()
            trial.report(loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return loss

    study = optuna.create_study(direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=3),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    study.optimize(objective, n_trials=10 * budget)  # stopped by the budget long before
    bar.close()
    tracker.trials = len(study.trials)
    tracker.pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    tracker.study = study
    return tracker


searches["Optuna"] = optuna_search(cfg.seed)
s = searches["Optuna"]
print(f"Optuna: best validation loss {s.best:.4f} after {s.spent} epochs; {s.trials} trials, {s.pruned} pruned; "
      f"best params {s.study.best_params if s.study.best_trials else None}")
assert s.spent <= budget

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for s in searches.values():
    spent, best_loss = zip(*s.curve)
    ax.step(spent, best_loss, where="post", label=f"{s.name} ({s.best:.3f})")
ax.set(xlabel="epochs spent", ylabel="best validation loss so far", yscale="log",
       title=f"same budget: {budget} epochs, at most {max_epochs} per trial")
ax.legend()
plt.show()
table = {name: s.best for name, s in searches.items()}
print("best validation loss per search:", {name: round(v, 4) for name, v in table.items()})
assert all(s.spent <= budget for s in searches.values())
assert min(table.values()) < 0.5                     # every search trains; at least one finds a good model

# %% [markdown]
# One search of each kind is one sample: a different seed can reorder them, and the differences at `smoke`
# (a budget of a few trials) are mostly luck. At `small` and `full`, ASHA and Optuna look at many more
# configurations for the same epochs. To compare search methods properly, repeat each over several seeds and
# compare the curves' means (exercise 2).
#
# ## 6. Evaluation beyond accuracy: the confusion matrix, precision, recall, F1
# We train one digits model for longer, then take its test-set predictions apart. For class $c$:
# **precision** = TP/(TP+FP) (of the examples predicted $c$, how many are), **recall** = TP/(TP+FN) (of the
# examples that are $c$, how many were found), **F1** = their harmonic mean = 2TP/(2TP+FP+FN).
# **Macro** averaging takes the mean over classes (every class counts the same); **micro** averaging sums TP, FP
# and FN over classes first (every example counts the same; for single-label classification micro-F1 is the
# accuracy).

# %%
eval_epochs = cfg.pick(smoke=30, small=60, full=100)
torch.manual_seed(cfg.seed)
model = mlp(64, [128, 128], 10).to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
history = fit(model, optimizer, train_loader, val_loader, num_epochs=eval_epochs, progress=progress)


@torch.no_grad()
def logits_and_labels(loader) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    pairs = [(model(X.to(device)).float().cpu(), y) for X, y in loader]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


val_logits, val_y = logits_and_labels(val_loader)
test_logits, test_y = logits_and_labels(test_loader)
test_pred = test_logits.argmax(dim=1)


def confusion_matrix(y: torch.Tensor, y_hat: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts: row = true class, column = predicted class."""
    return torch.bincount(y * num_classes + y_hat, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def precision_recall_f1(cm: torch.Tensor) -> dict[str, torch.Tensor | float]:
    tp = cm.diag().double()
    fp, fn = cm.sum(dim=0) - tp, cm.sum(dim=1) - tp                   # column sums: predicted; row sums: true
    safe = lambda a, b: torch.where(b > 0, a / b.clamp(min=1), torch.zeros_like(a))  # 0/0 -> 0, as sklearn
    per_class = {"precision": safe(tp, tp + fp), "recall": safe(tp, tp + fn), "f1": safe(2 * tp, 2 * tp + fp + fn)}
    micro = float(2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()))
    return {**per_class, "macro_f1": float(per_class["f1"].mean()), "micro_f1": micro}


cm = confusion_matrix(test_y, test_pred, 10)
scores = precision_recall_f1(cm)
assert np.array_equal(cm.numpy(), skm.confusion_matrix(test_y, test_pred, labels=range(10)))
p, r, f1, _ = skm.precision_recall_fscore_support(test_y, test_pred, labels=range(10), zero_division=0)
assert np.allclose(scores["precision"], p) and np.allclose(scores["recall"], r) and np.allclose(scores["f1"], f1)
assert math.isclose(scores["macro_f1"], skm.f1_score(test_y, test_pred, average="macro"), rel_tol=1e-9)
assert math.isclose(scores["micro_f1"], skm.f1_score(test_y, test_pred, average="micro"), rel_tol=1e-9)
accuracy = float((test_pred == test_y).double().mean())
assert math.isclose(scores["micro_f1"], accuracy, rel_tol=1e-9)
print(f"test accuracy {accuracy:.4f} = micro-F1 {scores['micro_f1']:.4f}; macro-F1 {scores['macro_f1']:.4f}; "
      f"equal to scikit-learn's")
print("worst class by F1:", int(scores["f1"].argmin()), f"(F1 {float(scores['f1'].min()):.3f})")
print(cm)

# %% [markdown]
# ## 7. An imbalanced task: ROC-AUC, PR-AUC and choosing a threshold
# "Is this digit a 9?" has about one positive in ten: predicting "no" always is 90 % accurate and useless. A
# classifier gives a **score** (here the model's probability of a 9); a threshold turns it into a decision, and
# every threshold trades false positives for false negatives.
# - The **ROC curve** plots the true-positive rate against the false-positive rate over all thresholds;
#   **ROC-AUC**, the area under it, is the probability that a random positive scores above a random negative.
#   It ignores how rare the positives are.
# - The **precision–recall curve** plots precision against recall; its summary, **average precision** (PR-AUC),
#   $\sum_n (R_n - R_{n-1}) P_n$ over thresholds, falls when the rare positives are buried among many
#   high-scoring negatives, which ROC-AUC hides.
#
# To make the task hard enough for the curves to show something, we use a weak scorer: a 16-unit MLP
# after two epochs.

# %%
positive = 9
torch.manual_seed(cfg.seed)
weak = mlp(64, [16], 10).to(device)
fit(weak, torch.optim.SGD(weak.parameters(), lr=0.1, momentum=0.9), train_loader, num_epochs=2, progress=False)
with torch.no_grad():
    weak.eval()
    val_score = torch.cat([weak(X.to(device)).float().softmax(dim=1)[:, positive].cpu() for X, _ in val_loader])
    test_score = torch.cat([weak(X.to(device)).float().softmax(dim=1)[:, positive].cpu() for X, _ in test_loader])
val_is9, test_is9 = (val_y == positive).long(), (test_y == positive).long()


def roc_pr(score: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor | float]:
    """ROC and precision-recall curves and their summaries; thresholds at every distinct score, high to low."""
    order = torch.argsort(score, descending=True, stable=True)
    s, y = score[order].double(), y[order].double()
    last_of_tie = torch.cat([s[1:] != s[:-1], torch.tensor([True])])   # keep one point per distinct score
    tp, fp = y.cumsum(0)[last_of_tie], (1 - y).cumsum(0)[last_of_tie]
    P, N = y.sum(), (1 - y).sum()
    tpr = torch.cat([torch.zeros(1, dtype=s.dtype), tp / P])
    fpr = torch.cat([torch.zeros(1, dtype=s.dtype), fp / N])
    precision, recall = tp / (tp + fp), tp / P
    return {"fpr": fpr, "tpr": tpr, "thresholds": s[last_of_tie], "precision": precision, "recall": recall,
            "roc_auc": float(torch.trapezoid(tpr, fpr)),
            "average_precision": float((torch.diff(recall, prepend=torch.zeros(1, dtype=s.dtype)) * precision).sum())}


curves = roc_pr(test_score, test_is9)
assert math.isclose(curves["roc_auc"], skm.roc_auc_score(test_is9, test_score), rel_tol=1e-9)
assert math.isclose(curves["average_precision"], skm.average_precision_score(test_is9, test_score), rel_tol=1e-9)
print(f"positives: {test_is9.float().mean():.1%} of the test set; always 'no' is {1 - test_is9.float().mean():.1%} "
      f"accurate. ROC-AUC {curves['roc_auc']:.4f}, average precision {curves['average_precision']:.4f} "
      f"(a random scorer: 0.5 and {test_is9.float().mean():.3f}); both equal to scikit-learn's")

# %% [markdown]
# **Choosing the threshold.** The default 0.5 is rarely right for a rare class. Choose it on the *validation*
# set for the goal at hand, here the best F1, and only then look at the test set.

# %%
def f1_at(score: torch.Tensor, y: torch.Tensor, threshold: float) -> tuple[float, float, float]:
    pred = (score >= threshold).long()
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    return float(p), float(r), float(f)


val_curves = roc_pr(val_score, val_is9)
val_f1 = 2 * val_curves["precision"] * val_curves["recall"] / (val_curves["precision"] + val_curves["recall"])
threshold = float(val_curves["thresholds"][torch.nan_to_num(val_f1).argmax()])
assert f1_at(val_score, val_is9, threshold)[2] >= f1_at(val_score, val_is9, 0.5)[2]
for name, t in (("0.5", 0.5), ("best validation F1", threshold)):
    p_, r_, f_ = f1_at(test_score, test_is9, t)
    print(f"threshold {t:.3f} ({name}): test precision {p_:.3f}, recall {r_:.3f}, F1 {f_:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].plot(curves["fpr"], curves["tpr"])
axes[0].plot([0, 1], [0, 1], ":", color="gray")
axes[0].set(xlabel="false-positive rate", ylabel="true-positive rate", title=f"ROC, AUC {curves['roc_auc']:.3f}")
axes[1].step(curves["recall"], curves["precision"], where="post")
axes[1].axhline(float(test_is9.float().mean()), ls=":", color="gray")
axes[1].set(xlabel="recall", ylabel="precision", title=f"PR, AP {curves['average_precision']:.3f}")
plt.show()

# %% [markdown]
# ## 8. Calibration and temperature scaling
# A classifier is **calibrated** when, of the predictions made with confidence 0.8, 80 % are right. The
# **reliability diagram** sorts predictions into bins by confidence (the top softmax probability) and plots
# each bin's accuracy against its mean confidence; the **expected calibration error** (ECE) is the gap averaged
# over bins, weighted by their sizes: $\mathrm{ECE} = \sum_b \frac{|B_b|}{N}\,|\mathrm{acc}(B_b) -
# \mathrm{conf}(B_b)|$. Bins here are $(\frac{b}{M}, \frac{b+1}{M}]$, the way scikit-learn's
# `calibration_curve` cuts them, so its bins check ours.
#
# Networks trained to a small training loss are usually *overconfident*. **Temperature scaling** (Guo et al.,
# 2017) divides the logits by one number $T$, fitted on the validation set by minimising the NLL; $T > 1$
# softens the probabilities. The argmax, and so the accuracy, does not change.

# %%
def reliability(probs: torch.Tensor, y: torch.Tensor, n_bins: int = 10) -> dict[str, torch.Tensor | float]:
    """probs: (N, C). Per bin: count, accuracy and mean confidence; and the ECE."""
    confidence, pred = probs.double().max(dim=1)
    correct = (pred == y).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    bin_id = torch.bucketize(confidence, edges[1:-1])                 # bin b holds (edges[b], edges[b+1]]
    count = torch.bincount(bin_id, minlength=n_bins).double()
    acc = torch.bincount(bin_id, correct, minlength=n_bins) / count.clamp(min=1)
    conf = torch.bincount(bin_id, confidence, minlength=n_bins) / count.clamp(min=1)
    return {"count": count, "acc": acc, "conf": conf, "ece": float((count / len(y) * (acc - conf).abs()).sum())}


def fit_temperature(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T); optimised over log T so T stays positive."""
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


n_bins = 10
T = fit_temperature(val_logits, val_y)
before, after = reliability(test_logits.softmax(dim=1), test_y, n_bins), \
    reliability((test_logits / T).softmax(dim=1), test_y, n_bins)
nll = {name: float(F.cross_entropy(lg, test_y)) for name, lg in (("before", test_logits), ("after", test_logits / T))}

# the bins agree with scikit-learn's calibration_curve (it drops empty bins)
confidence, pred = test_logits.softmax(dim=1).double().max(dim=1)
frac_correct, mean_conf = calibration_curve((pred == test_y).numpy(), confidence.numpy(), n_bins=n_bins)
full = before["count"] > 0
assert np.allclose(before["acc"][full], frac_correct) and np.allclose(before["conf"][full], mean_conf)
# T minimises the validation NLL: no temperature on a fine grid does better
grid_t = torch.logspace(-1, 1, 401)
grid_nll = torch.stack([F.cross_entropy(val_logits / t, val_y) for t in grid_t])
assert float(F.cross_entropy(val_logits / T, val_y)) <= float(grid_nll.min()) + 1e-6
assert torch.equal((test_logits / T).argmax(dim=1), test_pred)       # accuracy unchanged
print(f"temperature T = {T:.3f} (fitted on validation); test NLL {nll['before']:.4f} -> {nll['after']:.4f}, "
      f"test ECE {before['ece']:.4f} -> {after['ece']:.4f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, (name, rel) in zip(axes, (("before", before), (f"after, T = {T:.2f}", after))):
    centers = (torch.arange(n_bins) + 0.5) / n_bins
    ax.bar(centers, rel["acc"], width=1 / n_bins, edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    ax.plot(rel["conf"][rel["count"] > 0], rel["acc"][rel["count"] > 0], "o", color="C3", label="(conf, acc)")
    ax.set(xlabel="confidence", title=f"{name}: ECE {rel['ece']:.3f}")
axes[0].set_ylabel("accuracy in bin")
axes[0].legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Summary
# - Reproducible means bit-identical weights: seed the weights *and* the data order, switch cuDNN's benchmark
#   off and deterministic algorithms on. On the CPU the same seeded run twice gave identical weights; an unseeded
#   data order did not.
# - `dlcourse.tracking.TensorBoardLogger` plugs into `fit`'s callbacks and logs scalars, histograms, the
#   learning rate and hyperparameters, one folder per run under `runs/`; `run_info` stores the config and git
#   commit in each checkpoint. What the event files hold equals what `fit` recorded.
# - With few important hyperparameters random search beats a grid of the same size, because it tries more
#   distinct values of each (measured above on a toy problem).
# - Successive halving and ASHA spend most of the budget on the configurations that look good early; Optuna's
#   TPE sampler learns where good configurations are, and its median pruner stops hopeless trials. The plot
#   compares all four on one budget.
# - Micro-F1 is the accuracy; macro-F1 weighs every class equally. ROC-AUC ignores class imbalance, average
#   precision does not. Choose a threshold on validation data for the metric you care about.
# - The reliability diagram and ECE measure calibration; one temperature, fitted on validation data, changes
#   the confidence and leaves every prediction as it was. All metrics equal scikit-learn's.

# %%
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **Open TensorBoard.** Run `tensorboard --logdir notebooks/runs` in a terminal, compare the two runs of
#    section 2 in the Scalars and HParams tabs, and find the epoch where the weight histograms stop changing.
# 2. **Compare searches honestly.** Repeat each search of sections 3–5 over five seeds and plot the mean and
#    spread of the best-so-far curves. Which differences survive?
# 3. **Hyperband.** Replace the median pruner by `optuna.pruners.HyperbandPruner(min_resource=1,
#    max_resource=max_epochs, reduction_factor=3)`. How does it compare with your ASHA?
# 4. **Many workers.** Simulate ASHA with four workers (a queue of jobs, each finishing after its number of
#    epochs). How much sooner does it reach the same best loss?
# 5. **Per-class temperature.** Fit one temperature per class (vector scaling without bias). Does the test ECE
#    improve further, or does it overfit the validation set?
# 6. **Costs, not F1.** If a missed 9 costs ten times a false alarm, which threshold minimises the expected cost
#    on the validation set, and what does it cost on the test set?
