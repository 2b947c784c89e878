"""The doctor's data checks, run before any model: ``labels`` (class counts, labels out of range, imbalance),
``inputs`` (scale, non-finite values, constant features, train vs validation preprocessing), ``leakage`` (duplicates,
validation examples seen in training) and ``shuffling`` (a shuffled loader, labels grouped in batches). They read
the scanned batches only; the thresholds are the constants below.
"""

from __future__ import annotations

import hashlib

import torch

from .context import Context, close_figure, new_figure, pct
from .report import Finding

#: Inputs whose root-mean-square value is above this are "not normalised": the first layer's gradient grows with the
#: input scale s, and its effective learning rate with s**2 (4 -> 16x). Data in [0, 1] has rms <= 1, standardised 1.
INPUT_RMS_HIGH = 4.0
#: Inputs with an rms below this carry almost no signal into a default-initialised first layer.
INPUT_RMS_LOW = 0.01
#: A feature whose rms is more than this many times the median feature's dominates the first layer.
FEATURE_SPREAD = 100.0
#: Train and validation inputs count as "processed differently" when their rms differs by more than this factor or
#: their per-feature means differ by more than VAL_SHIFT training standard deviations (norm over features / norm of
#: the stds): random splits of one data set differ by a few percent.
VAL_SCALE = 1.5
VAL_SHIFT = 0.5
#: A split is "exactly standardised" when its mean is within STANDARDISED_MEAN of 0 and its std within
#: STANDARDISED_STD of 1 (overall, or for at least half of the channels/features): only the statistics of that very
#: split do that; a split normalised with another split's statistics misses by about 1 / sqrt(examples).
STANDARDISED_MEAN, STANDARDISED_STD = 1e-3, 1e-2
#: Class imbalance worth a warning: the largest class has more than this many times the examples of the smallest.
IMBALANCE_RATIO = 10.0
#: Exact duplicate inputs inside the training set worth a warning (fraction of the examples scanned).
DUPLICATE_FRACTION = 0.01
#: Batches hold fewer than this fraction of the distinct classes that randomly drawn batches would: labels are grouped.
GROUPED_LABELS = 0.5


def check_labels(ctx: Context) -> list[Finding]:
    """Label distribution: labels out of range, a single class, missing classes, strong imbalance."""
    y = ctx.y
    if not ctx.classification:
        finite = bool(torch.isfinite(y.float()).all())
        evidence = {"shape": list(y.shape), "dtype": str(y.dtype), "examples": len(y)}
        if not finite:
            return [Finding("labels", "error", "the targets contain nan or inf", evidence,
                            "clean the targets: a non-finite target makes the loss non-finite")]
        yf = y.float()
        evidence.update(mean=float(yf.mean()), std=float(yf.std()) if yf.numel() > 1 else 0.0,
                        min=float(yf.min()), max=float(yf.max()))
        return [Finding("labels", "info", "continuous targets (regression): the class-label checks do not apply",
                        evidence)]
    C, n = ctx.num_classes, len(y)
    low, high = int(y.min()), int(y.max())
    evidence = {"examples": n, "num_classes": C, "min_label": low, "max_label": high}
    if low < 0 or high >= C:
        bad = int(((y < 0) | (y >= C)).sum())
        return [Finding("labels", "error", f"{bad} of {n} labels lie outside 0..{C - 1} (labels {low}..{high}, "
                        f"the model has {C} outputs)", evidence,
                        f"labels must be class indices 0..{C - 1}: remap them (e.g. subtract 1 if they start at 1) "
                        "or give the model one output per class")]
    counts = torch.bincount(y, minlength=C)
    evidence["counts"] = counts.tolist()
    fig, ax = new_figure()
    ax.bar(range(C), counts.tolist(), color="tab:blue")
    ax.set(xlabel="class", ylabel="examples", title=f"label distribution ({n} training examples)")
    fig = close_figure(fig)
    present = counts > 0
    if int(present.sum()) == 1:
        return [Finding("labels", "error", f"every label is class {int(counts.argmax())}", evidence,
                        "the labels were lost or overwritten: check how y is built", fig)]
    findings = []
    missing = [c for c in range(C) if counts[c] == 0]
    if missing:
        findings.append(Finding("labels", "warning", f"{len(missing)} of {C} classes never "
                                f"appear{'s' if len(missing) == 1 else ''} in {n} training labels: {missing[:10]}",
                                evidence | {"missing": missing},
                                "check the split (stratify it) or the number of model outputs", fig))
    ratio = float(counts.max()) / float(counts[present].min())
    evidence["imbalance_ratio"] = ratio
    if ratio > IMBALANCE_RATIO:
        rare = int(torch.where(present, counts, counts.max() + 1).argmin())
        findings.append(Finding("labels", "warning", f"classes are imbalanced: class {int(counts.argmax())} has "
                                f"{ratio:.0f}x the examples of class {rare} ({int(counts[rare])})", evidence,
                                "accuracy hides the rare classes: report per-class accuracy, weight the loss "
                                "(cross_entropy(weight=...)) or resample with a WeightedRandomSampler", fig))
    if not findings:
        findings.append(Finding("labels", "ok", f"{C} classes, {int(counts[present].min())} to {int(counts.max())} "
                                f"examples each (ratio {ratio:.1f})", evidence, figure=fig))
    return findings


def _moments(values: torch.Tensor, dims) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, population variance) of ``values`` over ``dims``, in two passes. As accurate as ``Tensor.std`` and, over
    the examples of an (N, D) tensor, about 4x faster: torch reduces over a strided dimension slowly."""
    mean = values.mean(dim=dims, keepdim=True)
    var = (values - mean).square_().mean(dim=dims)
    return mean.reshape(var.shape), var


def _standardised(X: torch.Tensor, per_feature: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, bool]:
    """For each way of normalising (overall, per channel, per feature): are X's statistics exactly 0 and 1?
    ``per_feature`` is (mean, population variance) of each feature of X, when already known."""
    def exact(values: torch.Tensor, dims, moments=None) -> bool:
        mean, var = moments if moments is not None else _moments(values, dims)
        n = values.numel() // max(var.numel(), 1)                    # values behind each statistic
        std_pop = var.sqrt()
        std_unb = (var * (n / max(n - 1, 1))).sqrt()
        keep = std_pop > 1e-6                       # constant features stay constant whatever the statistics
        if not bool(keep.any()):
            return False
        deviation = torch.minimum((std_pop - 1).abs(), (std_unb - 1).abs())[keep]
        hits = (mean[keep].abs() <= STANDARDISED_MEAN) & (deviation <= STANDARDISED_STD)
        # most, not all: a std clamped away from 0 (std.clamp_min(eps)) leaves near-constant features unscaled
        return bool(hits.double().mean() >= 0.5)

    flat = X.reshape(len(X), -1)
    found = {"overall": exact(flat.reshape(-1, 1), 0), "per feature": exact(flat, 0, per_feature)}
    if X.ndim >= 3:
        found["per channel"] = exact(X, (0, *range(2, X.ndim)))   # X: (N, C, ...), one statistic per channel
    return found


def check_inputs(ctx: Context) -> list[Finding]:
    """Input statistics: non-finite values, scale (unnormalised inputs), constant features, features on very
    different scales, and (with val_loader) train and validation inputs processed differently."""
    X = ctx.X
    if not torch.is_floating_point(X):
        return [Finding("inputs", "info", f"inputs are {X.dtype} (token ids or raw integers?): statistics skipped",
                        {"dtype": str(X.dtype), "shape": list(X.shape)})]
    flat = X.reshape(len(X), -1).float()                              # (N, D)
    evidence: dict = {"examples": len(X), "shape": list(X.shape[1:])}
    bad = ~torch.isfinite(flat)
    if bool(bad.any()):
        rows = int(bad.any(dim=1).sum())
        evidence.update(nonfinite_values=int(bad.sum()), examples_with_nonfinite=rows,
                        first_feature=int(bad.any(dim=0).nonzero()[0]))
        return [Finding("inputs", "error", f"{int(bad.sum())} input values are nan or inf ({rows} of {len(X)} "
                        "examples)", evidence,
                        "fix the data pipeline: a division by a zero std (constant feature), a log of 0, or "
                        "missing values; add a small eps to divisions and impute or drop missing values")]
    rms = float(flat.pow(2).mean().sqrt())
    feature_mean, feature_var = _moments(flat, 0)                     # (D,), (D,)
    feature_rms = flat.pow(2).mean(dim=0).sqrt()
    constant = (flat == flat[:1]).all(dim=0)                          # (D,): the same value in every example
    evidence.update(rms=rms, mean=float(flat.mean()), std=float(flat.std()), min=float(flat.min()),
                    max=float(flat.max()), constant_features=int(constant.sum()), features=flat.shape[1])
    findings = []
    if bool(constant.all()):
        return [Finding("inputs", "error", f"all {len(X)} inputs are identical", evidence,
                        "the inputs carry no information: check how X is built")]
    if rms > INPUT_RMS_HIGH:
        findings.append(Finding("inputs", "warning", f"inputs are not normalised: rms {rms:.3g} (values "
                                f"{evidence['min']:.3g}..{evidence['max']:.3g}, mean {evidence['mean']:.3g}); "
                                f"networks expect values of order 1", evidence,
                                "scale the inputs to about [0, 1] (e.g. pixels / 255) or standardise them with the "
                                "TRAINING set's mean and std: (X - mean) / std, the same numbers for every split"))
    elif rms < INPUT_RMS_LOW:
        findings.append(Finding("inputs", "warning", f"inputs are tiny: rms {rms:.2g}; the first layer gets almost "
                                "no signal", evidence,
                                "standardise the inputs with the training set's mean and std (scaled twice?)"))
    spread = float(feature_rms[~constant].max() / feature_rms[~constant].median().clamp_min(1e-12))
    evidence["feature_scale_spread"] = spread
    if spread > FEATURE_SPREAD:
        worst = int(torch.where(constant, torch.zeros_like(feature_rms), feature_rms).argmax())
        findings.append(Finding("inputs", "warning", f"features are on very different scales: feature {worst} has "
                                f"{spread:.0f}x the rms of the median feature", evidence,
                                "standardise each feature with the training set's mean and std"))
    if ctx.val_batches is not None:
        findings += _compare_splits(ctx, X, flat, (feature_mean, feature_var), evidence)
    if int(constant.sum()):
        findings.append(Finding("inputs", "info", f"{int(constant.sum())} of {flat.shape[1]} input features are "
                                "constant (they carry no information; harmless, e.g. always-blank pixels)", evidence))
    if not any(f.flagged for f in findings):
        findings.insert(0, Finding("inputs", "ok", f"inputs look normalised: rms {rms:.2f}, mean "
                                   f"{evidence['mean']:.2f}, std {evidence['std']:.2f}", evidence))
    return findings


def _compare_splits(ctx: Context, X: torch.Tensor, flat: torch.Tensor, moments: tuple[torch.Tensor, torch.Tensor],
                    evidence: dict) -> list[Finding]:
    """Train vs validation inputs: same scale and location; normalised with the training statistics. ``X`` and
    ``flat`` (N, D) are the training inputs, ``moments`` the (mean, population variance) of their features."""
    Xv = torch.cat([b[0] for b in ctx.val_batches])
    if not torch.is_floating_point(Xv) or Xv[0].numel() != flat.shape[1]:
        return [Finding("inputs", "error", f"validation inputs {list(Xv.shape[1:])} {Xv.dtype} do not match "
                        f"training inputs {evidence['shape']}", evidence, "build both splits the same way")]
    flat_v = Xv.reshape(len(Xv), -1).float()
    if not bool(torch.isfinite(flat_v).all()):
        return [Finding("inputs", "error", "validation inputs contain nan or inf", evidence,
                        "fix the validation pipeline (a division by a zero std?)")]
    mean_t, std_t = moments[0], moments[1].sqrt()
    scale = float(flat_v.pow(2).mean().sqrt()) / max(evidence["rms"], 1e-12)
    shift = float((flat_v.mean(dim=0) - mean_t).norm() / std_t.norm().clamp_min(1e-12))
    evidence.update(val_rms_ratio=scale, val_mean_shift=shift)
    findings = []
    if scale > VAL_SCALE or scale < 1 / VAL_SCALE or shift > VAL_SHIFT:
        findings.append(Finding("inputs", "warning", f"validation inputs differ from training inputs: rms ratio "
                                f"{scale:.2f}, mean shift {shift:.2f} training stds -- processed differently?",
                                evidence, "apply exactly the same preprocessing to every split (normalise train, "
                                "val and test with the training set's mean and std)"))
    train_exact, val_exact = _standardised(X, moments if X.dtype == flat.dtype else None), _standardised(Xv)
    evidence.update(train_standardised=[k for k, v in train_exact.items() if v],
                    val_standardised=[k for k, v in val_exact.items() if v])
    for kind, exact in val_exact.items():
        if exact and not train_exact[kind]:
            findings.append(Finding("inputs", "warning", f"the validation inputs are exactly standardised ({kind}: "
                                    "mean 0, std 1) but the training inputs are not: the normalisation statistics "
                                    "were computed on the validation/test data", evidence,
                                    "compute mean and std on the TRAINING split only and apply them to every split: "
                                    "using test statistics leaks information about the test set"))
            break
        if exact and train_exact[kind]:
            findings.append(Finding("inputs", "warning", f"train and validation inputs are each exactly standardised "
                                    f"({kind}): every split was normalised with its own statistics", evidence,
                                    "compute mean and std on the training split only and apply those same numbers "
                                    "to validation and test data"))
            break
    return findings


def _row_keys(X: torch.Tensor) -> list[bytes]:
    """A 16-byte digest of each example's values: equal digests = identical examples."""
    rows = X.reshape(len(X), -1).contiguous().numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]


def check_leakage(ctx: Context) -> list[Finding]:
    """Exact duplicates inside the training set (and identical inputs with different labels), and training
    examples that reappear in the validation set."""
    X, y = ctx.X, ctx.y
    keys = _row_keys(X)
    n = len(keys)
    groups: dict[bytes, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    duplicates = n - len(groups)
    conflicting = sum(1 for idx in groups.values() if len(idx) > 1 and len({_label_key(y[i]) for i in idx}) > 1)
    evidence = {"train_examples": n, "train_duplicates": duplicates, "conflicting_labels": conflicting}
    findings = []
    if duplicates / n > DUPLICATE_FRACTION:
        findings.append(Finding("leakage", "warning", f"{duplicates} of {n} training examples ({pct(duplicates / n)}) "
                                "are exact duplicates of others", evidence,
                                "drop the duplicates (they count several times in the loss), and split train/val/"
                                "test AFTER removing them, or copies end up on both sides"))
    elif duplicates:
        findings.append(Finding("leakage", "info", f"{duplicates} of {n} training examples are exact duplicates "
                                "(a few are harmless)", evidence))
    if conflicting:
        findings.append(Finding("leakage", "warning", f"{conflicting} groups of identical training inputs have "
                                "different labels", evidence,
                                "these labels are noise for the model: fix or drop the contradicting examples"))
    if ctx.val_batches is None:
        findings.append(Finding("leakage", "info", "no val_loader given: train/validation overlap not checked",
                                evidence))
    else:
        Xv = torch.cat([b[0] for b in ctx.val_batches])
        if Xv[0].shape != X[0].shape or Xv.dtype != X.dtype:
            findings.append(Finding("leakage", "info", "validation inputs are shaped differently from training "
                                    "inputs: overlap not checked", evidence))
        else:
            val_keys = _row_keys(Xv)
            overlap = sum(k in groups for k in val_keys)
            fraction = overlap / len(val_keys)
            evidence.update(val_examples=len(val_keys), val_in_train=overlap, val_in_train_fraction=fraction)
            if overlap:
                findings.append(Finding("leakage", "error" if fraction >= 0.01 else "warning",
                                        f"{overlap} of {len(val_keys)} validation examples ({pct(fraction)}) also "
                                        "appear in the training set: validation scores overstate how well the model "
                                        "generalises", evidence,
                                        "split the data once into disjoint train/val/test sets (after removing "
                                        "duplicates), and never pass the training loader as the validation loader"))
    if not any(f.flagged for f in findings):
        where = "" if ctx.val_batches is None else f", none of {evidence['val_examples']} validation examples " \
            "appears in training"
        findings.insert(0, Finding("leakage", "ok", f"{duplicates} duplicates among {n} training examples{where}",
                                   evidence))
    return findings


def _label_key(label: torch.Tensor):
    return label.item() if label.numel() == 1 else tuple(label.reshape(-1).tolist())


def check_shuffling(ctx: Context) -> list[Finding]:
    """Is the training loader shuffled (a second pass starts with a different batch)? Are labels grouped inside
    batches (far fewer classes per batch than random batches would hold)?"""
    X0, y0 = ctx.batches[0]
    again = next(iter(ctx.train_loader))
    same = again[0].shape == X0.shape and torch.equal(again[0].cpu(), X0) and torch.equal(again[1].cpu(), y0)
    sampler = type(getattr(ctx.train_loader, "sampler", None)).__name__
    evidence: dict = {"sampler": sampler, "same_first_batch_each_pass": same, "batches_scanned": len(ctx.batches)}
    grouped = False
    if ctx.classification and len(ctx.batches) > 1:
        labels = ctx.y
        p = torch.bincount(labels, minlength=ctx.num_classes).double() / len(labels)
        observed = sum(len(torch.unique(y)) for _, y in ctx.batches) / len(ctx.batches)
        expected = sum(float((1 - (1 - p) ** len(y)).sum()) for _, y in ctx.batches) / len(ctx.batches)
        evidence.update(classes_per_batch=observed, expected_if_random=expected)
        grouped = observed < GROUPED_LABELS * expected
    if same and grouped:
        return [Finding("shuffling", "error", f"the training data is sorted by label and not shuffled: batches hold "
                        f"{evidence['classes_per_batch']:.1f} classes on average, random batches would hold "
                        f"{evidence['expected_if_random']:.1f}", evidence,
                        "pass shuffle=True to the training DataLoader: gradient steps on one class at a time pull "
                        "the model back and forth and it never settles")]
    if grouped:
        return [Finding("shuffling", "warning", f"batches hold {evidence['classes_per_batch']:.1f} classes on "
                        f"average where random batches would hold {evidence['expected_if_random']:.1f}: the sampler "
                        "groups examples by label", evidence,
                        "use shuffle=True (a RandomSampler) unless grouping by label is intended")]
    if same:
        return [Finding("shuffling", "warning", "the training loader gives the same order every epoch (not "
                        "shuffled)", evidence,
                        "pass shuffle=True (with a seeded generator for reproducibility) to the training DataLoader; "
                        "keep the validation loader unshuffled")]
    message = "the training loader is shuffled" + (
        f"; batches hold {evidence['classes_per_batch']:.1f} classes (random: "
        f"{evidence['expected_if_random']:.1f})" if "classes_per_batch" in evidence else "")
    return [Finding("shuffling", "ok", message, evidence)]
