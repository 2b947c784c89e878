"""The from-scratch code of notebook 05 (regularisation and data pipelines), checked against PyTorch.

Notebooks are not importable, so each function is a compact copy of the notebook's (they are used by notebook 05
and its lab only, so they don't belong in the package).
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.utils.data import Subset, WeightedRandomSampler
from torchvision.transforms import v2

import dlcourse


# -------------------------------------------------------------------------------- copies of the notebook's code
def dropout(X, p, training=True):
    if not training or p == 0.0:
        return X
    if p == 1.0:
        return torch.zeros_like(X)
    keep = (torch.rand_like(X) >= p).to(X.dtype)
    return X * keep / (1 - p)


def label_smoothed_cross_entropy(logits, y, eps):
    C = logits.shape[1]
    log_p = torch.log_softmax(logits, dim=1)
    q = (1 - eps) * F.one_hot(y, C).to(logits.dtype) + eps / C
    return -(q * log_p).sum(dim=1).mean()


def weighted_cross_entropy(logits, y, weight):
    nll = -torch.log_softmax(logits, dim=1)[torch.arange(len(y)), y]
    w = weight[y]
    return (w * nll).sum() / w.sum()


def mixup(X, y, num_classes, alpha=0.4, *, lam=None, perm=None):
    if lam is None:
        lam = torch.distributions.Beta(alpha, alpha).sample().item()
    if perm is None:
        perm = torch.randperm(len(X), device=X.device)
    y_onehot = F.one_hot(y, num_classes).to(X.dtype)
    return lam * X + (1 - lam) * X[perm], lam * y_onehot + (1 - lam) * y_onehot[perm]


class EarlyStopping:
    def __init__(self, model, patience=5, min_delta=0.0):
        self.model, self.patience, self.min_delta = model, patience, min_delta
        self.best_loss = float("inf")
        self.best_epoch = 0
        self.best_state = None
        self.bad_epochs = 0

    def __call__(self, history):
        loss = history.last["val_loss"]
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = loss, history.last["epoch"], 0
            self.best_state = copy.deepcopy(self.model.state_dict())
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.restore()
            return True
        return False

    def restore(self):
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


def class_weights(y, num_classes):
    counts = torch.bincount(y, minlength=num_classes).float()
    return len(y) / (num_classes * counts)


def balanced_sampler(y, generator=None):
    weights = 1.0 / torch.bincount(y)[y].double()
    return WeightedRandomSampler(weights, num_samples=len(y), replacement=True, generator=generator)


# ------------------------------------------------------------------------------------------------------- the tests
def test_l2_penalty_equals_sgd_weight_decay():
    torch.manual_seed(0)
    X, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    a = nn.Linear(8, 3)
    b = copy.deepcopy(a)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, weight_decay=0.2)
    for _ in range(5):
        loss = F.cross_entropy(a(X), y) + 0.2 / 2 * sum(p.pow(2).sum() for p in a.parameters())
        opt_a.zero_grad()
        loss.backward()
        opt_a.step()
        opt_b.zero_grad()
        F.cross_entropy(b(X), y).backward()
        opt_b.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_adamw_is_shrink_then_adam():
    torch.manual_seed(0)
    X, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    a = nn.Linear(8, 3)
    b = copy.deepcopy(a)
    lr, lam = 0.01, 0.1
    opt_a = torch.optim.AdamW(a.parameters(), lr=lr, weight_decay=lam)
    opt_b = torch.optim.Adam(b.parameters(), lr=lr)
    for _ in range(5):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            F.cross_entropy(model(X), y).backward()
        with torch.no_grad():
            for p in b.parameters():
                p.mul_(1 - lr * lam)
        opt_a.step()
        opt_b.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)
    # and it is not Adam with an L2 penalty
    c = copy.deepcopy(b)
    opt_c = torch.optim.Adam(c.parameters(), lr=lr, weight_decay=10.0)
    opt_c.zero_grad()
    F.cross_entropy(c(X), y).backward()
    opt_c.step()
    assert not torch.allclose(c.weight, b.weight)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8])
def test_dropout_statistics_match_nn_dropout(p):
    X = torch.rand(500, 400) + 0.5
    torch.manual_seed(0)
    ours, torchs = dropout(X, p), nn.Dropout(p)(X)
    for out in (ours, torchs):
        kept = out != 0
        assert abs((~kept).float().mean().item() - p) < 0.01
        assert abs(out.mean().item() - X.mean().item()) < 0.02
        torch.testing.assert_close(out[kept], X[kept] / (1 - p))
    assert abs((ours == 0).float().mean() - (torchs == 0).float().mean()) < 0.01


def test_dropout_eval_and_edge_cases():
    X = torch.randn(4, 5)
    assert torch.equal(dropout(X, 0.5, training=False), X)
    assert torch.equal(dropout(X, 0.0), X)
    assert torch.equal(dropout(X, 1.0), torch.zeros_like(X))
    assert torch.equal(nn.Dropout(1.0)(X), torch.zeros_like(X))


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.1, 0.5, 1.0])
def test_label_smoothing_matches_torch(eps):
    gen = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(20, 7, generator=gen, dtype=torch.float64)).requires_grad_(True)
    y = torch.randint(0, 7, (20,), generator=gen)
    ours = label_smoothed_cross_entropy(logits, y, eps)
    ref_logits = logits.detach().clone().requires_grad_(True)
    ref = F.cross_entropy(ref_logits, y, label_smoothing=eps)
    torch.testing.assert_close(ours, ref)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad)


def test_label_smoothing_minimum_is_entropy_of_target():
    y = torch.tensor([0, 2, 1])
    q = 0.9 * F.one_hot(y, 4).double() + 0.1 / 4
    torch.testing.assert_close(label_smoothed_cross_entropy(q.log(), y, 0.1), -(q * q.log()).sum(dim=1).mean())


def test_weighted_cross_entropy_matches_torch():
    gen = torch.Generator().manual_seed(2)
    logits, y = torch.randn(50, 10, generator=gen), torch.randint(0, 10, (50,), generator=gen)
    weight = torch.rand(10, generator=gen) * 5
    torch.testing.assert_close(weighted_cross_entropy(logits, y, weight), F.cross_entropy(logits, y, weight=weight))
    # it is not the plain mean of the weighted losses
    plain_mean = (weight[y] * F.cross_entropy(logits, y, reduction="none")).mean()
    assert not torch.allclose(plain_mean, F.cross_entropy(logits, y, weight=weight))


def test_mixup_matches_torchvision_mixup():
    torch.manual_seed(0)
    X, y = torch.rand(8, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    X_tv, y_tv = v2.MixUp(alpha=0.4, num_classes=6)(X, y)
    lam = y_tv[0, y[0]].item()
    X_ours, y_ours = mixup(X, y, 6, lam=lam, perm=torch.arange(8).roll(1))
    torch.testing.assert_close(X_ours, X_tv)
    torch.testing.assert_close(y_ours, y_tv)


def test_mixup_random_draw_and_soft_target_loss():
    torch.manual_seed(0)
    X, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    X_mix, y_mix = mixup(X, y, 3, alpha=0.4)
    assert X_mix.shape == X.shape and y_mix.shape == (16, 3)
    torch.testing.assert_close(y_mix.sum(dim=1), torch.ones(16))
    lam, perm = 0.3, torch.randperm(16)
    _, y_mix = mixup(X, y, 3, lam=lam, perm=perm)
    logits = torch.randn(16, 3)
    torch.testing.assert_close(F.cross_entropy(logits, y_mix),
                               lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm]))


def test_cutmix_label_weight_is_fraction_of_pixels_kept():
    torch.manual_seed(3)
    X, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    X_cut, y_cut = v2.CutMix(alpha=1.0, num_classes=4)(X, y)
    kept = (X_cut == X).all(dim=1).float().mean(dim=(1, 2))
    for i in range(8):
        assert abs(kept[i].item() - y_cut[i, y[i]].item()) < 1e-6


def test_cutmix_pixels_kept_counted_with_tags_on_black_backgrounds():
    """Notebook 05's count on images that share pixel values (black backgrounds, as in Fashion-MNIST): comparing
    raw pixels overcounts what was kept; tagging image i with an offset 10 i counts it exactly."""
    X = torch.zeros(8, 1, 16, 16)
    X[:, :, 6:10, 6:10] = torch.rand(8, 1, 4, 4) + 0.1            # a small object on a black background
    y = torch.arange(8) % 4
    tags = 10.0 * torch.arange(8).reshape(-1, 1, 1, 1)
    overcounted = False
    for seed in range(5):
        torch.manual_seed(seed)
        X_cut, y_cut = v2.CutMix(alpha=1.0, num_classes=4)(X, y)
        torch.manual_seed(seed)
        X_tagged, _ = v2.CutMix(alpha=1.0, num_classes=4)(X + tags, y)
        assert torch.allclose(X_tagged - X_tagged.div(10).floor() * 10, X_cut, atol=1e-5)   # the same box
        kept = (X_tagged == X + tags).all(dim=1).float().mean(dim=(1, 2))
        raw = (X_cut == X).all(dim=1).float().mean(dim=(1, 2))
        overcounted |= bool((raw > kept + 1e-6).any())
        for i in range(8):
            if y[i] != y[i - 1]:
                assert abs(kept[i].item() - y_cut[i, y[i]].item()) < 1e-6
    assert overcounted, "the untagged count should overcount on black backgrounds"


def _record(epoch, val_loss):
    return {"epoch": epoch, "train_loss": 0.0, "train_acc": 1.0, "val_loss": val_loss, "val_acc": 0.0, "lr": 0.1,
            "seconds": 0.0}


def test_early_stopping_scripted():
    model = nn.Linear(2, 1)
    stopper = EarlyStopping(model, patience=2, min_delta=0.01)
    history, answers = dlcourse.History(), []
    for epoch, loss in enumerate([1.0, 0.8, 0.795, 0.9, 0.1], start=1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        history.records.append(_record(epoch, loss))
        answers.append(stopper(history))
        if answers[-1]:
            break
    assert answers == [False, False, False, True]      # 0.795 is not 0.01 better than 0.8
    assert stopper.best_epoch == 2 and torch.all(model.weight == 2.0)


def test_early_stopping_with_fit_restores_best_weights():
    splits = dlcourse.data.digits(flatten=True, seed=0)
    train_loader, val_loader = dlcourse.data.make_loaders(Subset(splits.train, range(50)), splits.val,
                                                          batch_size=25, seed=0)
    torch.manual_seed(0)
    model = dlcourse.models.mlp(64, [256], 10)
    stopper = EarlyStopping(model, patience=5)
    history = dlcourse.fit(model, torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0), train_loader,
                           val_loader, num_epochs=100, callbacks=[stopper], progress=False)
    assert len(history) < 100
    assert stopper.best_loss == min(history["val_loss"])
    assert abs(dlcourse.evaluate(model, val_loader)["loss"] - stopper.best_loss) < 1e-5


def test_class_weights_match_sklearn():
    gen = torch.Generator().manual_seed(4)
    y = torch.cat([torch.arange(6), torch.randint(0, 6, (300,), generator=gen) ** 2 % 6])
    expected = compute_class_weight("balanced", classes=np.arange(6), y=y.numpy())
    torch.testing.assert_close(class_weights(y, 6), torch.tensor(expected, dtype=torch.float32))


def test_balanced_sampler_draws_classes_equally():
    y = torch.cat([torch.zeros(800), torch.ones(150), 2 * torch.ones(50)]).long()
    sampler = balanced_sampler(y, generator=torch.Generator().manual_seed(0))
    drawn = torch.cat([y[torch.tensor(list(sampler))] for _ in range(10)])
    fractions = torch.bincount(drawn, minlength=3).float() / len(drawn)
    assert torch.all((fractions - 1 / 3).abs() < 0.02), fractions
    again = balanced_sampler(y, generator=torch.Generator().manual_seed(0))
    assert list(again) == list(balanced_sampler(y, generator=torch.Generator().manual_seed(0)))
