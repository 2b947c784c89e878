# ---
# jupyter:
#   kernelspec:
#     display_name: Python (dlcourse)
#     language: python
#     name: dlcourse
# ---

# %% [markdown]
# # 11 · Transfer learning and LoRA
#
# Training a model from nothing needs a lot of labelled data and compute. Most real projects instead start
# from a model someone already trained on a large, related task and *adapt* it. This notebook does both kinds
# of adaptation the course can run offline: it pretrains a small CNN and a small character-level GPT itself,
# in seconds, and then adapts them to new tasks. First by fine-tuning some or all of the weights, then with
# **LoRA**, which freezes every pretrained weight and trains only a small low-rank correction. We build LoRA
# from scratch and check it against the `peft` library.
#
# **Learning goals**
# - Fine-tune a pretrained CNN with a frozen backbone, with full fine-tuning and with discriminative learning
#   rates, and compare them with training from scratch on the same budget.
# - Explain why `requires_grad_(False)` alone does not freeze a network that contains BatchNorm.
# - Write a `LoRALinear` layer (rank r, scaling alpha/r, dropout, zero-initialised B) and insert it into a
#   model by module-name pattern.
# - Count trainable parameters and measure checkpoint sizes: an adapter against a full copy of the model.
# - Merge the adapter into the base weights for inference, and unmerge it to get the base model back.
# - Do the same adaptation with `peft`, and show that it computes exactly what our version computes.
#
# **Prerequisites:** notebooks 03 (CNNs, `SmallCNN`), 04 (AdamW, parameter groups, learning-rate schedules)
# and 06 (the character-level GPT and its training on Python source).
#
# **Time:** seconds at `smoke`; a few minutes at `small` on a laptop CPU, almost all of it training the
# models; at `full` a 10-million-parameter GPT pretrains for a fixed budget of steps on a GPU, in bfloat16
# where the GPU has it (section 2 prints the budget in floating-point operations and the throughput reached, so
# you can work out what a slower GPU, e.g. Colab's T4, would take). The last cell prints how long this run took
# on your machine.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("dlcourse") is None:  # on Colab: install the course package first (about a minute)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "dlcourse[notebooks] @ git+https://github.com/dlcourse/dlcourse@main"], check=True)

import copy
import fnmatch
import math
import os
import re
import shutil
import tempfile
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

import dlcourse
from dlcourse import text
from dlcourse.models import GPT, SmallCNN, count_parameters

cfg = dlcourse.setup(seed=0)
device = cfg.device
t_start = time.perf_counter()
workdir = tempfile.mkdtemp(prefix="dlcourse11-")   # checkpoints written by this notebook


def print_table(header: list[str], rows: list[list]) -> None:
    """Print rows as a table with right-aligned columns (floats with 3 decimals)."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print(" | ".join(h.rjust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths)))


# %% [markdown]
# ## 1. Transfer learning: reuse what a network has learned
# The early layers of a CNN learn generic features (edges, corners, curves, colour blobs) and the last layers
# combine them into decisions about the classes of *its* task. A network pretrained on one task therefore
# holds features that are useful for a related task, and a new task with few labels can reuse them.
#
# Our experiment with `dlcourse.data.shapes`: the **source task** is to tell circles, squares and triangles
# apart, with plenty of labelled images. The **target task** is rings, crosses and stars, with only a few
# labelled images per class. The target shapes never appear in pretraining.

# %%
SOURCE, TARGET = (0, 2, 3), (1, 4, 5)      # indices into SHAPE_CLASSES
image_size = cfg.pick(smoke=16, small=24, full=32)
width = cfg.pick(smoke=8, small=16, full=32)
n_images = cfg.pick(smoke=3000, small=4000, full=30000)   # of all six classes; half are source classes
splits = dlcourse.data.shapes(n_images, 600, 1200, seed=cfg.seed, image_size=image_size)
classes = dlcourse.data.SHAPE_CLASSES


def class_subset(dataset: TensorDataset, keep: tuple[int, ...], n_per_class: int | None = None,
                 seed: int = 0) -> TensorDataset:
    """The examples whose label is in ``keep``, relabelled 0..len(keep)-1; with ``n_per_class``, only that
    many of each class, drawn with ``seed``."""
    X, y = dataset.tensors
    picked = []
    gen = torch.Generator().manual_seed(seed)
    for c in keep:
        idx = torch.nonzero(y == c).flatten()                       # positions of class c
        if n_per_class is not None:
            idx = idx[torch.randperm(len(idx), generator=gen)[:n_per_class]]
        picked.append(idx)
    idx = torch.cat(picked)
    relabel = torch.full((len(classes),), -1)
    relabel[list(keep)] = torch.arange(len(keep))
    return TensorDataset(X[idx], relabel[y[idx]])


source_train, source_val = class_subset(splits.train, SOURCE), class_subset(splits.val, SOURCE)
target_test = class_subset(splits.test, TARGET)
print(f"source task: {len(source_train)} training images of {[classes[c] for c in SOURCE]}")
print(f"target task: {[classes[c] for c in TARGET]}, {len(target_test)} test images")
preview = class_subset(splits.train, SOURCE + TARGET, n_per_class=2)
dlcourse.viz.image_grid(preview.tensors[0], preview.tensors[1], classes=[classes[c] for c in SOURCE + TARGET],
                        ncols=12, size=1.1)

# %% [markdown]
# **Pretraining** is ordinary training of `SmallCNN` on the source task (AdamW with a one-cycle schedule).
# Weight decay goes where notebook 04 (section 9) put it: on the weights that multiply inputs, the convolution
# kernels and linear weight matrices, and not on biases or normalisation scales and shifts. `AdamW`'s default
# (`weight_decay=0.01` on every parameter it is given) would decay those too, so the optimizers in this
# notebook that decay get their parameters through `dlcourse.train.decay_groups`: two groups of the trainable
# parameters, the weights of Linear and convolution layers with `weight_decay` and the rest without, with
# options such as `lr=` in both. It picks the decayed tensors by module type rather than by
# shape (notebook 04's `ndim >= 2` rule), which also keeps decay off the GPT's embedding tables in section 2: an
# embedding row is a lookup, updated only when its token occurs, while decay would shrink every row at every step.

# %%
from dlcourse.train import decay_groups, decayed_names

pretrain_epochs = cfg.pick(smoke=4, small=6, full=10)
weight_decay = 0.01                                    # AdamW's default value, now on the weights only
torch.manual_seed(cfg.seed)
pretrained_cnn = SmallCNN(3, len(SOURCE), width=width, depth=3, image_size=image_size).to(device)
train_loader, val_loader = dlcourse.data.make_loaders(source_train, source_val, batch_size=64, seed=cfg.seed)
optimizer = torch.optim.AdamW(decay_groups(pretrained_cnn, weight_decay), lr=3e-3)
kernels = {f"{n}.weight" for n, m in pretrained_cnn.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
assert decayed_names(pretrained_cnn, optimizer) == kernels, "decay on conv kernels and linear weights only"
scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, pct_start=0.2,
                                                total_steps=pretrain_epochs * len(train_loader))
history = dlcourse.fit(pretrained_cnn, optimizer, train_loader, val_loader, num_epochs=pretrain_epochs,
                       scheduler=scheduler, scheduler_step="batch", progress=False)
print(f"source task: validation accuracy {history.last['val_acc']:.1%} after {pretrain_epochs} epochs "
      f"({sum(history['seconds']):.1f} s)")
assert history.last["val_acc"] > cfg.pick(smoke=0.6, small=0.9, full=0.95)

# %% [markdown]
# **Four ways to use it** on the target task, each with a new head (a linear layer with 3 outputs, since the
# old head scores the wrong classes):
#
# | strategy | what trains | why |
# |---|---|---|
# | from scratch | a fresh `SmallCNN` | the baseline: what the few labels alone can do |
# | frozen backbone | the new head only (a "linear probe") | cheapest; good when the features already fit |
# | full fine-tuning | everything, one learning rate | most flexible; can overwrite good features |
# | discriminative learning rates | everything, smaller rates for earlier layers | keep generic features |
#
# **A trap when freezing.** `requires_grad_(False)` stops *gradients*, but BatchNorm layers also change in
# training mode: every forward pass updates their running mean and variance, which are buffers, not
# parameters. A "frozen" backbone in `train()` mode therefore drifts towards the statistics of the new data,
# and the head is trained on features that keep changing. Watch it happen:

# %%
def batchnorm_means(model: nn.Module) -> list[torch.Tensor]:
    """Copies of the running means of every BatchNorm layer of a model."""
    return [m.running_mean.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


probe = copy.deepcopy(pretrained_cnn).train()
probe.features.requires_grad_(False)
few_target = class_subset(splits.train, TARGET, n_per_class=10)
with torch.no_grad():
    probe(few_target.tensors[0].to(device))                 # one forward pass in training mode
drift = max((after - before).abs().max().item()
            for after, before in zip(batchnorm_means(probe), batchnorm_means(pretrained_cnn)))
print(f"requires_grad=False, train mode, one batch: BatchNorm running means moved by up to {drift:.3f}")
assert drift > 0 and all(not p.requires_grad for p in probe.features.parameters())

# %% [markdown]
# The fix is to keep the frozen part in eval mode, whatever mode the whole model is put in. `dlcourse.fit`
# calls `model.train()` at the start of every epoch, so we override `train()`:

# %%
class FineTuner(nn.Module):
    """A copy of a pretrained SmallCNN's features with a new linear head for ``num_classes``.

    ``freeze=True`` freezes the features completely: no gradients, and BatchNorm statistics stay fixed
    because the features stay in eval mode. (B, C, H, W) -> (B, num_classes).
    """

    def __init__(self, pretrained: SmallCNN, num_classes: int, freeze: bool = False) -> None:
        super().__init__()
        self.features = copy.deepcopy(pretrained.features)
        self.head = copy.deepcopy(pretrained.head)                # pooling, flatten, linear
        self.head[-1] = nn.Linear(self.head[-1].in_features, num_classes)
        self.freeze = freeze
        if freeze:
            self.features.requires_grad_(False)

    def train(self, mode: bool = True) -> "FineTuner":
        super().train(mode)
        if self.freeze:
            self.features.eval()                                  # keep the pretrained BatchNorm statistics
        return self

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(X))


frozen = FineTuner(pretrained_cnn, len(TARGET), freeze=True).to(device).train()
with torch.no_grad():
    frozen(few_target.tensors[0].to(device))
assert all(torch.equal(a, b) for a, b in zip(batchnorm_means(frozen), batchnorm_means(pretrained_cnn)))
print("FineTuner(freeze=True) in train mode leaves the BatchNorm statistics alone")

# %% [markdown]
# **Discriminative learning rates** are parameter groups (notebook 04): the head gets the base rate `lr`, the
# last conv block `lr · decay`, the one before `lr · decay²`, and so on down to the first block.
#
# **The same budget for all.** Every strategy gets the same number of optimizer steps, batch size, optimizer
# (AdamW) and base learning rate; only what trains, and how fast, differs. We repeat each run with a few
# seeds (different labelled examples and initialisations) and vary the number of labels per class.

# %%
lr, decay, batch_size = 3e-3, 0.3, 16
steps = cfg.pick(smoke=60, small=120, full=200)
labels_per_class = cfg.pick(smoke=(10,), small=(5, 20), full=(5, 20, 100))
seeds = range(cfg.pick(smoke=1, small=3, full=3))
STRATEGIES = ("from scratch", "frozen backbone", "full fine-tuning", "discriminative lr")


def make_model(strategy: str) -> tuple[nn.Module, list[dict]]:
    """The model for a strategy and its optimizer parameter groups (weight decay as in pretraining)."""
    if strategy == "from scratch":
        model = SmallCNN(3, len(TARGET), width=width, depth=3, image_size=image_size)
        return model.to(device), decay_groups(model, weight_decay, lr=lr)
    model = FineTuner(pretrained_cnn, len(TARGET), freeze=strategy == "frozen backbone").to(device)
    if strategy == "frozen backbone":
        return model, decay_groups(model.head, weight_decay, lr=lr)
    if strategy == "full fine-tuning":
        return model, decay_groups(model, weight_decay, lr=lr)
    blocks = [m for m in model.features if isinstance(m, nn.Sequential)]   # the conv blocks, first to last
    groups = [group for i, block in enumerate(blocks)
              for group in decay_groups(block, weight_decay, lr=lr * decay ** (len(blocks) - i))]
    return model, groups + decay_groups(model.head, weight_decay, lr=lr)


def fine_tune(strategy: str, n_per_class: int, seed: int) -> tuple[float, int, float]:
    """Train one strategy for ``steps`` steps; return test accuracy, trainable parameters and seconds."""
    train_set = class_subset(splits.train, TARGET, n_per_class, seed=seed)
    sampler = RandomSampler(train_set, num_samples=steps * batch_size,
                            generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler)     # exactly `steps` batches
    torch.manual_seed(seed)
    model, groups = make_model(strategy)
    optimizer = torch.optim.AdamW(groups)
    t0 = time.perf_counter()
    dlcourse.fit(model, optimizer, loader, num_epochs=1, progress=False)
    seconds = time.perf_counter() - t0
    accuracy = dlcourse.evaluate(model, DataLoader(target_test, batch_size=256))["acc"]
    return accuracy, count_parameters(model), seconds


results = {}                                       # (strategy, labels per class) -> list of accuracies
rows = []
for n_per_class in labels_per_class:
    for strategy in STRATEGIES:
        runs = [fine_tune(strategy, n_per_class, seed) for seed in seeds]
        accs = torch.tensor([acc for acc, _, _ in runs])
        results[strategy, n_per_class] = accs
        spread = f"± {accs.std():.3f}" if len(accs) > 1 else ""
        rows.append([n_per_class, strategy, f"{accs.mean():.3f} {spread}", f"{runs[0][1]:,}",
                     f"{sum(s for _, _, s in runs) / len(runs):.2f}"])
print(f"target task, {steps} steps of {batch_size} images each, {len(seeds)} seed(s); chance = 0.333")
print_table(["labels/class", "strategy", "test accuracy", "trainable params", "seconds/run"], rows)

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for strategy in STRATEGIES:
    means = [results[strategy, n].mean().item() for n in labels_per_class]
    ax.plot(labels_per_class, means, "o-", label=strategy)
ax.axhline(1 / len(TARGET), color="grey", linestyle="--", label="chance")
ax.set(xscale="log", xlabel="labelled images per class", ylabel="test accuracy",
       title="target task: rings, crosses, stars")
ax.set_xticks(labels_per_class, [str(n) for n in labels_per_class])
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.close(fig)
fig

# %%
fewest = labels_per_class[0]
best_pretrained = max(results[s, fewest].mean() for s in STRATEGIES[1:])
assert results["full fine-tuning", fewest].mean() > cfg.pick(smoke=0.5, small=0.6, full=0.7)
margin = cfg.pick(smoke=-0.1, small=0.1, full=0.05)          # smoke: one seed and a tiny model, no claim
assert best_pretrained > results["from scratch", fewest].mean() + margin, \
    "with few labels, starting from the pretrained features should beat starting from nothing"

# %% [markdown]
# Look for three patterns in the table and the plot (the exact numbers depend on the scale and the seeds):
# - with the fewest labels, starting from the pretrained features beats starting from nothing by a wide
#   margin, and the strategies that move those features least (frozen backbone, discriminative rates) tend
#   to do best: a handful of images is not enough to retrain every weight;
# - with more labels, fine-tuning everything pulls ahead, while the frozen backbone is capped by features
#   that were never trained to tell rings from circles;
# - training from scratch catches up as the labels grow: pretraining matters most when labels are scarce.
#
# ## 2. A pretrained character-level language model
# For LoRA we need a pretrained *transformer*. `dlcourse.models.GPT` is notebook 06's character-level GPT in
# ready-made form (learned positions, PyTorch's fused attention). We pretrain it on Python source code from
# the standard library, much as in notebook 06.
#
# The **adaptation task** is a shift of domain: the Python *documentation* that `help()` shows, which ships
# with every Python as `pydoc_data.topics` and is left out of the training corpus. It is English prose about
# Python with code examples in between: related to the pretraining text, but different enough that the base
# model is clearly worse on it. The model keeps the pretraining vocabulary; the few characters of the
# documentation it has never seen become the unknown id.

# %%
from pydoc_data.topics import topics          # the text help() shows: part of the standard library

max_chars = cfg.pick(smoke=100_000, small=500_000, full=None)    # full: the whole standard library
block_size = cfg.pick(smoke=32, small=64, full=256)
gpt_size = cfg.pick(smoke=dict(d_model=32, num_heads=2, num_layers=2),
                    small=dict(d_model=64, num_heads=4, num_layers=2),
                    full=dict(d_model=384, num_heads=6, num_layers=6))
doc_chars = cfg.pick(smoke=60_000, small=250_000, full=None)

corpus = text.python_source_corpus(max_chars, seed=cfg.seed)
tokenizer = text.CharTokenizer(corpus)
code_train, code_val = text.lm_splits(tokenizer.encode(corpus), block_size)
docs = "\n\n".join(topics[key] for key in sorted(topics))[:doc_chars]
doc_ids = tokenizer.encode(docs)
doc_train, doc_val = text.lm_splits(doc_ids, block_size, chunk_size=1024)
print(f"pretraining: {len(corpus):,} characters of Python, {tokenizer}")
print(f"adaptation: {len(docs):,} characters of documentation, "
      f"{(doc_ids == tokenizer.UNK_ID).float().mean():.2%} of them unknown to the tokenizer")
print(docs[1000:1400])


def sequence_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position: y_hat (B, T, V) logits, y (B, T) targets."""
    return F.cross_entropy(y_hat.flatten(0, 1), y.flatten())


def random_batches(dataset, num_steps: int, batch_size: int, seed: int) -> DataLoader:
    """A loader of exactly ``num_steps`` batches of randomly drawn windows."""
    sampler = RandomSampler(dataset, num_samples=num_steps * batch_size,
                            generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler)


@torch.no_grad()
def lm_scores(model: nn.Module, dataset) -> tuple[float, float]:
    """(mean loss in nats per character, next-character accuracy) of a language model on ``dataset``."""
    model.eval()
    total_loss, right, count = 0.0, 0, 0
    for X, y in DataLoader(dataset, batch_size=128):
        X, y = X.to(device), y.to(device)
        y_hat = model(X)                                          # (B, T, V)
        total_loss += F.cross_entropy(y_hat.flatten(0, 1), y.flatten(), reduction="sum").item()
        right += (y_hat.argmax(dim=-1) == y).sum().item()
        count += y.numel()
    return total_loss / count, right / count


pretrain_steps = cfg.pick(smoke=150, small=700, full=2500)          # the budget: optimizer steps
lm_batch_size = cfg.pick(smoke=32, small=32, full=64)
pretrain_lr = cfg.pick(smoke=1e-2, small=1e-2, full=1e-3)            # wider models want smaller rates
amp = device.type == "cuda"                                          # mixed precision on a GPU (notebook 07)
clip = cfg.pick(smoke=None, small=None, full=1.0)                    # full: a guard for the longer run
torch.manual_seed(cfg.seed)
gpt = GPT(tokenizer.vocab_size, block_size, **gpt_size).to(device)
optimizer = torch.optim.AdamW(decay_groups(gpt, 0.1), lr=pretrain_lr)     # decay: Linear weights only
linear_weights = {f"{n}.weight" for n, m in gpt.named_modules() if isinstance(m, nn.Linear)}
assert decayed_names(gpt, optimizer) == linear_weights, "no decay on embeddings, LayerNorms or biases"
loader = random_batches(code_train, pretrain_steps, lm_batch_size, cfg.seed)
scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=pretrain_lr, pct_start=0.1,
                                                total_steps=len(loader))
flops = dlcourse.models.transformer_training_flops(gpt, block_size) * pretrain_steps * lm_batch_size * block_size
history = dlcourse.fit(gpt, optimizer, loader, num_epochs=1, loss_fn=sequence_loss, scheduler=scheduler,
                       scheduler_step="batch", progress=cfg.pick(smoke=False, small=True, full=True), amp=amp,
                       clip_grad_norm=clip)
gpt.requires_grad_(False).eval()                   # the pretrained model: never trained again below

counts = torch.bincount(code_train.ids, minlength=tokenizer.vocab_size).float() + 1
unigram = -(counts / counts.sum()).log()[code_val.ids].mean().item()
base_code, base_doc = lm_scores(gpt, code_val), lm_scores(gpt, doc_val)
seconds = sum(history["seconds"])
print(f"{count_parameters(gpt, trainable_only=False):,} parameters, pretrained for {pretrain_steps} steps of "
      f"{lm_batch_size} × {block_size} characters ({flops / 1e12:,.1f} TFLOP by the 6N + 12·L·T·D rule of "
      f"notebook 06) in {seconds:.0f} s: {flops / seconds / 1e12:.2f} TFLOP/s"
      + (f" with autocast {dlcourse.config.amp_dtype(device)}" if amp else ""))
print(f"unigram baseline on Python: {unigram:.3f} nats/char")
print_table(["text", "loss (nats/char)", "next-char accuracy"],
            [["Python source (validation)", *base_code], ["documentation (validation)", *base_doc]])
assert base_code[0] < unigram - cfg.pick(smoke=0.5, small=1.2, full=1.5), "pretraining should beat unigram"
assert base_doc[0] > base_code[0], "the documentation should be harder for a model of Python source"

# %% [markdown]
# ## 3. LoRA: a low-rank update to frozen weights
# Full fine-tuning changes every weight matrix $W_0$ (out × in) into $W_0 + \Delta W$. The LoRA hypothesis
# (Hu et al., 2021) is that the update needed to adapt a pretrained model has **low rank**. So LoRA freezes
# $W_0$ and learns $\Delta W$ as a product of two thin matrices:
# $$y = W_0 x + b + \frac{\alpha}{r}\, B A x, \qquad A \in \mathbb{R}^{r \times \text{in}},\;
#   B \in \mathbb{R}^{\text{out} \times r},\; r \ll \min(\text{in}, \text{out}).$$
#
# - **Parameters:** $r(\text{in} + \text{out})$ instead of $\text{in} \cdot \text{out}$, for a 4096 × 4096
#   layer and $r = 8$ that is 0.4 % of the weights. The optimizer keeps its moments for these only.
# - **Initialisation:** $A$ random (like `nn.Linear`'s weights), $B = 0$. Then $BA = 0$: the adapted model
#   starts *exactly* equal to the pretrained one, and training moves it away smoothly.
# - **Scaling** $\alpha / r$: the update is divided by the rank, so that trying another rank needs little
#   retuning of the learning rate (the LoRA paper keeps $\alpha$ fixed when it varies $r$).
# - **Dropout** on the input of the low-rank branch only (the frozen path is left alone) regularises the
#   adapter.
# - **Merging:** after training, $W = W_0 + \frac{\alpha}{r} BA$ is an ordinary weight matrix, so the
#   deployed model runs exactly the original's operations (section 6 counts them); subtracting the same
#   product gives $W_0$ back.

# %%
class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-r update: y = base(x) + (alpha / r) · B A dropout(x).

    lora_A: (r, in_features), random like nn.Linear's weight; lora_B: (out_features, r), zeros, so the layer
    starts equal to ``base``. Input (..., in_features) -> (..., out_features).
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"the rank r must be at least 1, not {r}")
        self.base = base.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=weight.device,
                                               dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))     # nn.Linear's default initialisation
        self.dropout = nn.Dropout(dropout)
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """The update (alpha / r) · B A, shaped like base.weight: (out_features, in_features)."""
        return self.scaling * self.lora_B @ self.lora_A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)                                               # frozen path: W0 x + b
        if self.merged:                                                # the update is inside base.weight
            return y
        return y + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)   # never forms B A

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into base.weight: the layer becomes one matrix product (for inference)."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update again: base.weight is the pretrained weight (up to rounding)."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


# %% [markdown]
# Three checks against plain tensor arithmetic: the layer starts equal to its base; with non-zero $B$ it
# computes $W_0 x + b + \frac{\alpha}{r} B A x$; and gradients reach only $A$ and $B$. At the very first
# step only $B$ gets a gradient, because $\partial L / \partial A$ goes through $B = 0$; from the second step
# on both learn.

# %%
torch.manual_seed(cfg.seed)
linear = nn.Linear(20, 12)
layer = LoRALinear(linear, r=4, alpha=8)
x = torch.randn(5, 7, 20)                                       # any leading dimensions
assert torch.equal(layer(x), linear(x)), "B = 0: the adapted layer starts equal to the base"

with torch.no_grad():
    layer.lora_B.normal_()                                      # pretend it has been trained
expected = x @ linear.weight.T + linear.bias + (8 / 4) * x @ (layer.lora_B @ layer.lora_A).T
print(f"largest difference from W0 x + b + (alpha/r) B A x: {(layer(x) - expected).abs().max():.1e}")
assert torch.allclose(layer(x), expected, atol=1e-5)

fresh = LoRALinear(nn.Linear(20, 12), r=4, alpha=8)
fresh(x).pow(2).sum().backward()
assert fresh.base.weight.grad is None and fresh.base.bias.grad is None    # the base is frozen
assert fresh.lora_A.grad.abs().max() == 0 and fresh.lora_B.grad.abs().max() > 0
print("gradients: base none, A zero at the first step (B = 0), B non-zero")

# %% [markdown]
# ## 4. Putting adapters into a model by name
# Every module of a model has a dotted name (`named_modules()`), and LoRA libraries choose the layers to
# adapt by matching these names against a pattern. Here are the `nn.Linear` layers of our GPT:

# %%
print([name for name, module in gpt.named_modules() if isinstance(module, nn.Linear)])

# %% [markdown]
# `inject_lora` walks the model, and for every `nn.Linear` whose full name matches a regular expression,
# replaces it in its parent module by a `LoRALinear` wrapping it. Details that matter:
# - `re.fullmatch` compares the **whole** name. `re.search(r"blocks\.1", name)` would also pick
#   `blocks.10`, `blocks.11`, ... in a deeper model, and an unescaped `.` matches any character.
# - Only `nn.Linear` layers are replaced; a broad pattern like `.*attn.*` also matches the containers
#   `blocks.0.attn` and, in a model that already has adapters, their `blocks.0.attn.qkv.base`: injecting twice
#   would wrap an adapter's frozen layer in a second adapter.
# - The loop walks a **list** of the modules taken before changing anything, so it never visits the layers it
#   has just created. `model.get_submodule("blocks.0.attn")` finds the parent; `setattr(parent, "qkv", new)`
#   replaces the child (`nn.Sequential` children are named `"0"`, `"1"`, ... and work the same way).
#
# Afterwards, `mark_only_lora_trainable` freezes everything except the adapters: the embeddings, LayerNorms
# and head included.

# %%
def inject_lora(model: nn.Module, pattern: str, r: int = 8, alpha: float = 16.0, dropout: float = 0.0
                ) -> list[str]:
    """Wrap each nn.Linear whose full name matches the regex ``pattern`` in a LoRALinear; return the names."""
    replaced = []
    for name, module in list(model.named_modules()):          # a list: the model changes during the loop
        if isinstance(module, nn.Linear) and re.fullmatch(pattern, name):
            parent_name, _, child_name = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child_name, LoRALinear(module, r, alpha, dropout))
            replaced.append(name)
    if not replaced:
        raise ValueError(f"no nn.Linear layer matches {pattern!r}")
    return replaced


def mark_only_lora_trainable(model: nn.Module) -> None:
    """requires_grad = True for the LoRA parameters (names containing 'lora_'), False for all others."""
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


ATTENTION = r"blocks\.\d+\.attn\.(qkv|out)"                         # the attention projections
ALL_LINEAR = r"blocks\.\d+\.(attn\.(qkv|out)|mlp\.[02])"           # ... and the MLPs (not the head)
demo = copy.deepcopy(gpt)
print("regex :", inject_lora(demo, ATTENTION, r=4))
print("glob  :", fnmatch.translate("blocks.*.mlp.[02]"), "matches",
      [n for n, m in gpt.named_modules() if re.fullmatch(fnmatch.translate("blocks.*.mlp.[02]"), n)])
mark_only_lora_trainable(demo)
x = torch.randint(0, tokenizer.vocab_size, (2, block_size), device=device)
assert torch.equal(demo(x), gpt(x)), "freshly injected adapters change nothing"
assert len(inject_lora(copy.deepcopy(gpt), r".*attn.*")) == 2 * gpt_size["num_layers"]   # Linear layers only
print("injected again with .*attn.*:", inject_lora(demo, r".*attn.*", r=4)[:2], "... (adapters in adapters)")

# %% [markdown]
# **Counting trainable parameters.** A LoRA layer adds $r(\text{in} + \text{out})$ trainable parameters; the
# table shows what that means for this model at a few ranks (computed from the formula and checked against
# the model after injection).

# %%
total = count_parameters(gpt, trainable_only=False)
rows = []
for pattern_name, pattern in [("attention", ATTENTION), ("attention + MLP", ALL_LINEAR)]:
    for r in (1, 4, 16):
        model = copy.deepcopy(gpt)
        names = inject_lora(model, pattern, r=r)
        mark_only_lora_trainable(model)
        formula = sum(r * (m.in_features + m.out_features) for n, m in gpt.named_modules() if n in names)
        assert count_parameters(model) == formula
        rows.append([pattern_name, r, f"{formula:,}", f"{100 * formula / total:.2f} %"])
print(f"the pretrained model has {total:,} parameters")
print_table(["adapted layers", "r", "trainable", "of the base model"], rows)

# %% [markdown]
# ## 5. LoRA against full fine-tuning
# Now adapt the pretrained GPT to the documentation, with the same number of steps and batch size:
# - **full fine-tuning**: every parameter trains (AdamW, a one-cycle schedule);
# - **LoRA** on every linear layer of the blocks, at a couple of ranks, everything else frozen. LoRA usually
#   wants a larger learning rate than full fine-tuning: its updates start from zero and are scaled by
#   alpha / r.
#
# Besides the loss on the documentation we measure the loss on Python source after adaptation (how much of
# the pretraining the model *forgets*), the trainable parameters, and the size on disk of what must be
# saved: the whole `state_dict` for full fine-tuning, only the adapter's `lora_` tensors for LoRA (the base
# model is shared by every adapter trained from it).

# %%
adapt_steps = cfg.pick(smoke=60, small=250, full=300)
ranks = cfg.pick(smoke=(4,), small=(2, 8), full=(4, 16))
lora_alpha, lora_dropout = 16.0, 0.0       # dropout > 0 regularises, at a cost in time per step
full_lr, lora_lr = 0.3 * pretrain_lr, pretrain_lr   # LoRA's updates start at zero: a larger rate


def adapt(method: str, r: int = 0) -> tuple[nn.Module, float]:
    """Adapt a copy of the pretrained GPT to the documentation; return it and the seconds it took."""
    model = copy.deepcopy(gpt).requires_grad_(True)
    if method == "LoRA":
        inject_lora(model, ALL_LINEAR, r=r, alpha=lora_alpha, dropout=lora_dropout)
        mark_only_lora_trainable(model)
    lr = lora_lr if method == "LoRA" else full_lr
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    loader = random_batches(doc_train, adapt_steps, lm_batch_size, cfg.seed)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, pct_start=0.1,
                                                    total_steps=len(loader))
    t0 = time.perf_counter()
    dlcourse.fit(model, optimizer, loader, num_epochs=1, loss_fn=sequence_loss, scheduler=scheduler,
                 scheduler_step="batch", progress=False, amp=amp, clip_grad_norm=clip)
    return model.eval(), time.perf_counter() - t0


def saved_size(state: dict[str, torch.Tensor], filename: str) -> int:
    """Save a state dict with torch.save; return the file's size in bytes."""
    path = os.path.join(workdir, filename)
    torch.save(state, path)
    return os.path.getsize(path)


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors of a model's state dict: everything needed to rebuild it from the base model."""
    return {k: v for k, v in model.state_dict().items() if "lora_" in k}


adapted = {}
rows = [["pretrained (no adaptation)", *base_doc, base_code[0], 0,
         f"{saved_size(gpt.state_dict(), 'base.pt') / 1024:.1f}", "-"]]
for method, r in [("full", 0)] + [("LoRA", r) for r in ranks]:
    model, seconds = adapt(method, r)
    label = "full fine-tuning" if method == "full" else f"LoRA r={r}"
    adapted[label] = model
    state = model.state_dict() if method == "full" else adapter_state(model)
    size = saved_size(state, f"{method}{r}.pt")          # short names: the name is stored in the file too
    rows.append([label, *lm_scores(model, doc_val), lm_scores(model, code_val)[0],
                 f"{count_parameters(model):,}", f"{size / 1024:.1f}", f"{seconds:.1f}"])
print(f"adaptation: {adapt_steps} steps of {lm_batch_size} windows of {block_size} characters")
print_table(["model", "docs loss", "docs next-char acc", "Python loss", "trainable", "checkpoint KiB",
             "seconds"], rows)

# %%
lora_label = f"LoRA r={ranks[-1]}"
lora_doc = lm_scores(adapted[lora_label], doc_val)[0]
full_doc = lm_scores(adapted["full fine-tuning"], doc_val)[0]
# full: a pretrained model this size already reads English (the docstrings of the library): less to gain
assert lora_doc < base_doc[0] - cfg.pick(smoke=0.1, small=0.3, full=0.15), "LoRA should learn the new domain"
assert full_doc < base_doc[0] - cfg.pick(smoke=0.1, small=0.3, full=0.15)
assert base_doc[0] - lora_doc > 0.5 * (base_doc[0] - full_doc), "LoRA should get most of the gain"
assert count_parameters(adapted[lora_label]) < 0.5 * count_parameters(adapted["full fine-tuning"])

# %% [markdown]
# What to look for: LoRA gets most of the way from the pretrained model to full fine-tuning (the cell above
# checks for more than half of the gain) with a fraction of the trainable parameters, and its checkpoint is a
# small fraction of a full copy: the adapter file grows with the adapter's parameters, not the model's, one
# small file per task. Where the table has two ranks, compare them. Full fine-tuning usually reaches the
# lowest loss on the new domain; the "Python loss" column shows how much of the pretraining each method forgot
# on the way.
#
# **Compute per step.** In the forward pass a matrix product $y = x W^\top$ costs 2 FLOPs (a multiply and an
# add) per weight and token. The backward pass of full fine-tuning does two products of the same size:
# $\partial L / \partial x = (\partial L / \partial y)\, W$, which passes the gradient on to earlier layers,
# and $\partial L / \partial W = (\partial L / \partial y)^\top x$, the weight's own gradient. A frozen weight
# needs no gradient, so LoRA skips the second product; the first stays, because the adapters of earlier layers
# need the gradient that flows back through every later layer, frozen or not. Per frozen weight and token
# that is 2 + 2 FLOPs instead of 2 + 2 + 2: the matrix products of a LoRA step approach $\frac{2}{3}$ of a
# full step's when $r \ll$ in, out, plus the adapters' own thin products (their forward and backward pass,
# about $6 r (\text{in} + \text{out})$ FLOPs per layer and token). The optimizer update, elementwise work
# on every trainable parameter, shrinks to the adapters' parameters.
#
# `torch.utils.flop_counter.FlopCounterMode` counts the FLOPs of the matrix products that run inside it
# (elementwise operations are not counted; on a CPU neither is the fused attention kernel, which has no
# weights and costs both methods the same). One forward and one backward pass on the same batch:

# %%
from torch.utils._python_dispatch import TorchDispatchMode  # the hook FlopCounterMode itself is built on
from torch.utils.flop_counter import FlopCounterMode


class OpCounter(TorchDispatchMode):
    """Counts the tensor operations (ATen calls: on a GPU, each at least one kernel launch) run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def pass_flops(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> dict[str, int]:
    """Matrix-product FLOPs of one forward and one backward pass of ``model`` on (X, y), and the number of
    operations of both passes together."""
    with OpCounter() as ops:
        with FlopCounterMode(display=False) as forward:
            loss = sequence_loss(model(X), y)
        with FlopCounterMode(display=False) as backward:
            loss.backward()
    model.zero_grad(set_to_none=True)
    return {"forward": forward.get_total_flops(), "backward": backward.get_total_flops(), "operations": ops.count}


lora_rank = ranks[-1]
steppers = {"full fine-tuning": copy.deepcopy(gpt).requires_grad_(True).train(),
            f"LoRA r={lora_rank}": copy.deepcopy(gpt).train()}
inject_lora(steppers[f"LoRA r={lora_rank}"], ALL_LINEAR, r=lora_rank, alpha=lora_alpha, dropout=lora_dropout)
mark_only_lora_trainable(steppers[f"LoRA r={lora_rank}"])
X, y = next(iter(random_batches(doc_train, 1, lm_batch_size, cfg.seed)))       # one training batch
X, y = X.to(device), y.to(device)                                               # (B, T) each
pass_counts = {name: pass_flops(model, X, y) for name, model in steppers.items()}
total_flops = {name: f["forward"] + f["backward"] for name, f in pass_counts.items()}
print_table(["method", "forward GFLOP", "backward GFLOP", "total GFLOP", "vs full", "operations"],
            [[name, f"{f['forward'] / 1e9:.4f}", f"{f['backward'] / 1e9:.4f}", f"{total_flops[name] / 1e9:.4f}",
              f"{total_flops[name] / total_flops['full fine-tuning']:.3f}", f["operations"]]
             for name, f in pass_counts.items()])
lora_name = f"LoRA r={lora_rank}"
full_f, lora_f = pass_counts["full fine-tuning"], pass_counts[lora_name]
assert full_f["backward"] >= 2 * full_f["forward"], "full backward: two products per forward product"
assert lora_f["forward"] > full_f["forward"] and lora_f["backward"] < full_f["backward"]
flop_ratio = total_flops[lora_name] / total_flops["full fine-tuning"]
# about 2/3 (the frozen weights' forward and dL/dx), more with the adapters' products and (counted on CUDA)
# attention's, which both methods pay alike
assert 0.6 < flop_ratio < 0.9, "LoRA skips the frozen weights' gradients: about 2/3, plus the adapters"

# %% [markdown]
# The LoRA step does fewer FLOPs: its forward pass is slightly larger (the adapters), its backward pass much
# smaller. The further $r$ is below the layer widths, the closer the ratio gets to $\frac{2}{3}$; in a model
# as narrow as this one the adapters' own products still weigh. Does the time per step follow? Time a whole
# training step (forward, backward, AdamW) of both models, and for comparison one large matrix product,
# which shows how many FLOP/s this machine reaches when the arithmetic dominates. The functions take turns,
# best of several runs each, with a synchronised clock on a GPU.

# %%
def best_times(fns: dict, repeats: int = cfg.pick(smoke=5, small=20, full=20)) -> dict[str, float]:
    """The shortest of ``repeats`` runs of each function, in seconds. The functions take turns, so a busy
    moment of the machine slows all of them alike; on a GPU we wait for the queued work before reading the
    clock."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer):
    """A function doing one training step of ``model`` on (X, y), as in ``adapt`` (autocast on a GPU)."""
    def step() -> None:
        with torch.autocast(device.type, dtype=dlcourse.config.amp_dtype(device), enabled=amp):
            loss = sequence_loss(model(X), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


optimizers = {name: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
              for name, model in steppers.items()}
step_fns = {name: training_step(model, optimizers[name]) for name, model in steppers.items()}
for step in step_fns.values():
    step()                                                          # warm-up; creates the AdamW state
n_big = cfg.pick(smoke=256, small=512, full=4096)
big_dtype = dlcourse.config.amp_dtype(device) if amp else torch.float32
big_A, big_B = (torch.randn(n_big, n_big, device=device, dtype=big_dtype) for _ in range(2))
best = best_times({**step_fns, "one large matmul": lambda: big_A @ big_B})
rates = {name: total_flops[name] / best[name] for name in step_fns}
big_rate = 2 * n_big ** 3 / best["one large matmul"]
states = {name: dlcourse.memory.model_state_bytes(model, optimizers[name]) for name, model in steppers.items()}
print_table(["training step", "ms", "GFLOP/s", "of the large matmul's rate", "grads + AdamW state"],
            [[name, f"{1000 * best[name]:.2f}", f"{rates[name] / 1e9:.1f}", f"{rates[name] / big_rate:.1%}",
              dlcourse.memory.format_bytes(states[name]["gradients"] + states[name]["optimizer_state"])]
             for name in step_fns])
print(f"one ({n_big} x {n_big}) @ ({n_big} x {n_big}) matmul in {str(big_dtype).removeprefix('torch.')}: "
      f"{1000 * best['one large matmul']:.2f} ms, {big_rate / 1e9:.1f} GFLOP/s")
print(f"LoRA / full: {flop_ratio:.2f} of the FLOPs, {best[lora_name] / best['full fine-tuning']:.2f} of the "
      f"time, {lora_f['operations'] / full_f['operations']:.2f} of the operations of forward and backward")
assert lora_f["operations"] > 1.2 * full_f["operations"], "the adapters add operations while removing FLOPs"
assert states[lora_name]["gradients"] < 0.5 * states["full fine-tuning"]["gradients"]
assert states[lora_name]["optimizer_state"] < 0.5 * states["full fine-tuning"]["optimizer_state"]

# %% [markdown]
# Read the "of the large matmul's rate" column first (FLOPs of the matrix products, from the table above,
# per second of a whole step). Where a step reaches only a small fraction of the rate this machine manages on
# one large product, its time is not spent on arithmetic but on the fixed cost of every operation (Python,
# PyTorch's dispatcher, on a GPU a kernel launch). LoRA's forward and backward passes run *more* operations
# than full fine-tuning's (the "operations" column of the FLOP table: the adapters' thin products, their
# gradients, the scaling and the additions), so its step can take as long as the full one, or longer, while
# doing fewer FLOPs. Its time can follow its FLOPs only where the products are large enough to run near the
# machine's rate. What LoRA saves at every size is in the last column: no gradients and no AdamW moments for
# the frozen weights, which on a large model is what lets fine-tuning fit on one GPU at all; and storage.
#
# **Loading an adapter** means: build the base model, inject adapters with the same pattern and rank, and
# load the small file with `strict=False` (the base weights are missing from it, on purpose). The rebuilt
# model must compute exactly what the trained one computes.

# %%
rebuilt = copy.deepcopy(gpt)
inject_lora(rebuilt, ALL_LINEAR, r=ranks[-1], alpha=lora_alpha, dropout=lora_dropout)
adapter_file = os.path.join(workdir, f"LoRA{ranks[-1]}.pt")
missing, unexpected = rebuilt.load_state_dict(torch.load(adapter_file, weights_only=True), strict=False)
assert unexpected == [] and all("lora_" not in k for k in missing), "every adapter tensor must be loaded"
x = doc_val[0][0][None].to(device)
assert torch.equal(rebuilt.eval()(x), adapted[lora_label](x))
print(f"rebuilt from the base model and a {os.path.getsize(adapter_file) / 1024:.1f} KiB adapter file: "
      f"identical outputs ({len(missing)} base tensors came from the pretrained model)")

# %% [markdown]
# What did the adapter change? The same prompt, sampled with the same seed from the pretrained model and from
# the LoRA-adapted one. (At `smoke` scale both are tiny and mostly babble; from `small` on, the pretrained
# model writes code and the adapted one drifts towards documentation prose.)

# %%
@torch.no_grad()
def sample(model: nn.Module, prompt: str, num_chars: int, temperature: float = 0.8, seed: int = 0) -> str:
    """Extend ``prompt`` by ``num_chars`` characters, sampled one at a time."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    idx = tokenizer.encode(prompt)[None].to(device)                       # (1, T)
    for _ in range(num_chars):
        logits = model(idx[:, -block_size:])[:, -1] / temperature         # (1, V)
        next_id = torch.multinomial(logits.softmax(dim=-1), 1, generator=gen)
        idx = torch.cat([idx, next_id], dim=1)
    return tokenizer.decode(idx[0].cpu())


num_chars = cfg.pick(smoke=80, small=300, full=500)
for name, model in [("pretrained", gpt), (lora_label, adapted[lora_label])]:
    print(f"──── {name} " + "─" * 50)
    print(sample(model, "The ", num_chars, seed=cfg.seed))

# %% [markdown]
# ## 6. Merge for inference, unmerge to get the base back
# An unmerged LoRA layer does three matrix products where the original did one. For deployment, merge:
# add $\frac{\alpha}{r}BA$ into each base weight. Then check two things: the merged model computes what the
# adapted one computes (up to float rounding), and unmerging restores the pretrained weights. Finally,
# `merge_and_unload` replaces every `LoRALinear` by its merged base layer, which gives back the plain model
# architecture: its `state_dict` loads into a fresh `GPT`.

# %%
def merge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every adapter and put the base nn.Linear back in its place (in place; returns the model)."""
    for name, layer in lora_layers(model).items():
        layer.merge()
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, layer.base)
    return model


model = copy.deepcopy(adapted[lora_label])
X = torch.stack([doc_val[i][0] for i in range(8)]).to(device)           # (8, block_size)
with torch.no_grad():
    y_adapted = model(X)
    merge_lora(model)
    y_merged = model(X)
    unmerge_lora(model)
    y_unmerged = model(X)
base_diff = max((layer.base.weight - gpt.get_submodule(name).weight).abs().max().item()
                for name, layer in lora_layers(model).items())
print(f"merged vs adapted outputs: largest difference {(y_merged - y_adapted).abs().max():.1e}")
print(f"after unmerge, base weights vs pretrained: largest difference {base_diff:.1e}")
assert torch.allclose(y_merged, y_adapted, atol=1e-4)
assert torch.allclose(y_unmerged, y_adapted, atol=1e-5)
assert base_diff < 1e-6

shipped = merge_and_unload(copy.deepcopy(adapted[lora_label]))
plain = GPT(tokenizer.vocab_size, block_size, **gpt_size).to(device)
plain.load_state_dict(shipped.state_dict())                             # strict: the same keys as GPT
assert torch.allclose(plain.eval()(X), y_adapted, atol=1e-4)
print("merge_and_unload gives a plain GPT that computes what the adapted model computes")

# %% [markdown]
# Unmerging gives the base weights back only up to float rounding (adding then subtracting the same product
# is not exact in floating point); keep the pretrained file if you need it bit for bit.
#
# How much does merging save? Forward passes of the pretrained, the unmerged and the merged model on the same
# batch: their operations and FLOPs counted as in section 5, and their time, taking turns, best of several
# runs each.

# %%
X = torch.stack([doc_val[i % len(doc_val)][0] for i in range(64)]).to(device)   # (64, block_size)
unmerged_model = copy.deepcopy(adapted[lora_label])
merged_model = merge_and_unload(copy.deepcopy(adapted[lora_label]))
forwards = {"pretrained": lambda: gpt(X), "LoRA, unmerged": lambda: unmerged_model(X),
            "LoRA, merged": lambda: merged_model(X)}
counts = {}
with torch.no_grad():
    for name, forward in forwards.items():
        with OpCounter() as counter, FlopCounterMode(display=False) as flop_counter:
            forward()
        counts[name] = (counter.count, flop_counter.get_total_flops())
    timings = best_times(forwards)
print_table(["model", "operations", "GFLOP", "forward ms (batch of 64)", "time relative to pretrained"],
            [[name, counts[name][0], f"{counts[name][1] / 1e9:.4f}", f"{1000 * t:.2f}",
              f"{t / timings['pretrained']:.2f}×"] for name, t in timings.items()])
assert counts["LoRA, merged"] == counts["pretrained"], "merged: the very same operations and FLOPs"
assert all(u > p for u, p in zip(counts["LoRA, unmerged"], counts["pretrained"])), "unmerged: more of both"

# %% [markdown]
# The merged model is the pretrained architecture with different numbers in it: the same operations and the
# same FLOPs (asserted above), so any difference in its time is measurement noise. The unmerged one runs
# extra operations and FLOPs for its thin products; how much time they cost depends, as for the training
# steps of section 5, on whether the per-operation overhead or the arithmetic dominates at this size. Keeping
# adapters *unmerged* has a use too: one copy of the base model in memory can serve many adapters,
# switching between tasks per request.
#
# ## 7. The same with `peft`
# Hugging Face's `peft` library implements LoRA (and many relatives) for any PyTorch model, not only
# `transformers` models: `LoraConfig` says which layers (`target_modules`), the rank and alpha;
# `get_peft_model` injects the adapters and freezes the rest. We check that it computes exactly what our
# version computes: same pretrained model, same pattern, and our A and B copied into its adapters. `peft` is
# an optional extra of the course (it installs `transformers` too), and importing it takes a few seconds.

# %%
try:
    import peft
    from peft import LoraConfig, get_peft_model
except ImportError as err:
    raise ImportError('This section needs the peft package. Install it with: pip install "dlcourse[lora]" '
                      '(`make lab` installs it as part of the "lab" extra).') from err
print("peft", peft.__version__)

r, alpha = 4, 8.0
ours = copy.deepcopy(gpt)
our_names = inject_lora(ours, ALL_LINEAR, r=r, alpha=alpha)
mark_only_lora_trainable(ours)
config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=ALL_LINEAR)  # a str: re.fullmatch
theirs = get_peft_model(copy.deepcopy(gpt), config)
print(theirs.base_model.model.blocks[0].attn.qkv)

# %% [markdown]
# **Names differ.** `peft` wraps the model twice (`base_model.model.`) and keeps one `lora_A`/`lora_B`
# *per adapter name* in a `ModuleDict` (the default adapter is called `"default"`), each an `nn.Linear`
# without bias. So our `blocks.0.attn.qkv.lora_A` (a parameter) is its
# `base_model.model.blocks.0.attn.qkv.lora_A.default.weight`, with the same shape (r, in).

# %%
def peft_name(our_name: str) -> str:
    """Our parameter name -> peft's name for the same tensor."""
    layer, _, which = our_name.rpartition(".")                         # e.g. blocks.0.attn.qkv, lora_A
    return f"base_model.model.{layer}.{which}.default.weight"


our_params = {n: p for n, p in ours.named_parameters() if p.requires_grad}
their_params = {n: p for n, p in theirs.named_parameters() if p.requires_grad}
assert sorted(peft_name(n) for n in our_params) == sorted(their_params)
assert count_parameters(ours) == theirs.get_nb_trainable_parameters()[0]
print(f"same {len(our_params)} trainable tensors, {count_parameters(ours):,} trainable parameters in both")

gen = torch.Generator().manual_seed(cfg.seed)
with torch.no_grad():
    for name, param in our_params.items():
        if name.endswith("lora_B"):
            param.copy_(0.1 * torch.randn(param.shape, generator=gen))   # a non-zero B, as after training
        their_params[peft_name(name)].copy_(param)

X = torch.stack([doc_val[i][0] for i in range(8)]).to(device)
print(f"forward: largest difference {(ours(X) - theirs(X)).abs().max():.1e}")
assert torch.allclose(ours(X), theirs(X), atol=1e-5)

# %% [markdown]
# Same outputs; now the same training. A few SGD steps on the same batches must keep both models equal,
# because the gradients of A and B are the same too. Then merge both and compare the merged weights.

# %%
opt_ours = torch.optim.SGD(our_params.values(), lr=0.1)
opt_theirs = torch.optim.SGD(their_params.values(), lr=0.1)
loader = random_batches(doc_train, 5, 16, cfg.seed)
for X_batch, y_batch in loader:
    for model, opt in [(ours, opt_ours), (theirs, opt_theirs)]:
        loss = sequence_loss(model(X_batch.to(device)), y_batch.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
param_diff = max((p - their_params[peft_name(n)]).abs().max().item() for n, p in our_params.items())
print(f"after {len(loader)} SGD steps: largest difference in A, B {param_diff:.1e}, "
      f"in outputs {(ours(X) - theirs(X)).abs().max():.1e}")
assert param_diff < 1e-5 and torch.allclose(ours(X), theirs(X), atol=1e-5)

merged_theirs = theirs.merge_and_unload()                           # peft's merge: a plain GPT again
merged_ours = merge_and_unload(ours)
weight_diff = max((merged_ours.get_submodule(n).weight - merged_theirs.get_submodule(n).weight).abs().max()
                  .item() for n in our_names)
print(f"merged weights: largest difference {weight_diff:.1e}")
assert weight_diff < 1e-5

# %% [markdown]
# **Name matching in `peft`, and a trap.** `target_modules` given as a *string* must match a module's whole
# name (like our `re.fullmatch`); given as a *list*, each entry matches any module whose name ends in
# `.entry`. `modules_to_save` (layers to train fully and save next to the adapter, e.g. a new head) matches
# names by their *ending without a dot*: `["out"]` also hits peft's own `lora_dropout` modules, which fails or
# picks the wrong layers. Prefer full names or regular expressions. What this `peft` version does:

# %%
def peft_targets(**options) -> str:
    """Which layers get a LoRA adapter under these LoraConfig options (or the error it raises)."""
    try:
        model = get_peft_model(copy.deepcopy(gpt), LoraConfig(r=2, **options))
    except Exception as err:                     # show what happens, whatever this version does
        return f"{type(err).__name__}: {str(err).splitlines()[0][:70]}"
    return ", ".join(sorted({n.removeprefix("base_model.model.").split(".lora_")[0]
                             for n, p in model.named_parameters() if "lora_" in n}))


for options in [dict(target_modules=["out"]), dict(target_modules="out"), dict(target_modules=r".*\.out"),
                dict(target_modules=["qkv"], modules_to_save=["out"])]:
    print(f"{str(options):<50} -> {peft_targets(**options)}")

# %% [markdown]
# `peft` saves an adapter with `save_pretrained` as a `safetensors` file plus a small JSON config; compare
# its size with ours (the same tensors, a different container):

# %%
theirs = get_peft_model(copy.deepcopy(gpt), config)
theirs.save_pretrained(os.path.join(workdir, "peft_adapter"))
peft_file = os.path.join(workdir, "peft_adapter", "adapter_model.safetensors")
ours = copy.deepcopy(gpt)
inject_lora(ours, ALL_LINEAR, r=r, alpha=alpha)
sizes = {"ours (torch.save of the lora_ tensors)": saved_size(adapter_state(ours), "LoRA.pt"),
         "peft (adapter_model.safetensors)": os.path.getsize(peft_file),
         "full model (torch.save of the state_dict)": saved_size(gpt.state_dict(), "full.pt")}
print_table(["file", "KiB"], [[name, f"{size / 1024:.1f}"] for name, size in sizes.items()])

# %% [markdown]
# ## Summary
# - **Transfer learning** reuses a pretrained network's features for a new task. With few labels, starting
#   from pretrained weights beats starting from scratch on the same budget. Freeze the backbone for speed,
#   fine-tune everything for accuracy, and give earlier layers smaller learning rates to keep their generic
#   features. Freezing a network with BatchNorm needs eval mode as well as `requires_grad_(False)`.
# - **LoRA** freezes $W_0$ and learns $\Delta W = \frac{\alpha}{r} B A$ with $B = 0$ at the start, so the
#   adapted model starts equal to the base. It trains $r(\text{in} + \text{out})$ parameters per layer.
# - Adapters go in **by module name**: match `named_modules()` names against a pattern and replace the
#   `nn.Linear` in its parent; walk over a list taken before changing the model.
# - On the documentation task LoRA came close to full fine-tuning with a small fraction of the trainable
#   parameters and a checkpoint a fraction of the size (measured above).
# - A LoRA step skips the weight-gradient products of the frozen weights: per frozen weight and token 4
#   instead of 6 FLOPs, so towards $\frac{2}{3}$ of a full step's matrix products plus the adapters' own
#   (counted with `FlopCounterMode`), and AdamW updates only the adapters. On a model this small the time per
#   step does not follow, because per-operation overhead dominates and the adapters add operations; gradient
#   and optimizer memory shrink at every size.
# - **Merging** folds the update into the weights (the same operations and FLOPs as the base model);
#   **unmerging** restores the base up to rounding; `merge_and_unload` gives back the plain architecture.
# - `peft` computes exactly what our `LoRALinear` computes given the same A and B; mind how it matches names.

# %%
shutil.rmtree(workdir, ignore_errors=True)          # the checkpoints written above
print(f"This notebook ran in {time.perf_counter() - t_start:.1f} s at scale {cfg.scale!r} on {device} "
      f"(after the setup cell).")

# %% [markdown]
# ## Exercises
# 1. **Layer-wise decay.** Try `decay` = 1 (full fine-tuning), 0.1 and 0 (frozen features) in section 1 and
#    plot test accuracy against it. Then fine-tune in two stages: the head alone first, then everything. Is
#    that better than either on the same total budget?
# 2. **Which layers?** Adapt only the attention projections (`ATTENTION`), only the MLPs, and both, at the
#    same number of trainable parameters (choose the ranks). Which matters most for this domain shift?
# 3. **Rank and alpha.** Train LoRA with r = 1, 2, 4, 8, 16 at a fixed alpha, and again with alpha = 2r. How
#    does the documentation loss change with the rank? Which of the two settings lets you keep one learning
#    rate for all ranks?
# 4. **Several adapters, one base.** Train a second adapter on another text (e.g. a different part of the
#    documentation, or Python files from another seed), keep both unmerged, and write a model that switches
#    between them per batch without copying the base weights.
# 5. **LoRA for convolutions.** `peft` also adapts `nn.Conv2d`. Write a `LoRAConv2d` (A: a conv with r output
#    channels and the original kernel size, B: a 1×1 conv back to the output channels), use it to adapt the
#    CNN of section 1, and compare it with the strategies of the table.
# 6. **Forgetting.** Track the Python validation loss during adaptation for full fine-tuning and for LoRA.
#    Which forgets faster per unit of documentation loss gained?
