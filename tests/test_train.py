"""Tests for dlcourse.train: fit's History, losses, accuracies, schedulers, determinism, evaluate, predict,
decay_groups."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlcourse.train import History, decay_groups, decayed_names, evaluate, fit, predict

KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}


def _blobs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A linearly separable 3-class problem: X (n, 4) float32, y (n,) int64."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    W = torch.randn(4, 3, generator=g)
    return X, (X @ W).argmax(dim=1)


def _loaders(batch_size: int = 16, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Train: 100 examples in batches of 16 (the last of 4), shuffled by ``seed``; val: 60, in order."""
    X, y = _blobs(160)
    train, val = TensorDataset(X[:100], y[:100]), TensorDataset(X[100:], y[100:])
    generator = torch.Generator().manual_seed(seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
            DataLoader(val, batch_size=batch_size))


def _mlp(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))


class ModeSpy(nn.Module):
    """Wraps a module and records ``self.training`` at every forward call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.inner(x)


# --- History ------------------------------------------------------------------------------------------------

def test_history_has_one_record_per_epoch_with_all_keys():
    train_loader, val_loader = _loaders()
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history = fit(model, optimizer, train_loader, val_loader, num_epochs=4, progress=False)
    assert isinstance(history, History)
    assert len(history) == len(history.records) == 4
    for record in history.records:
        assert set(record) == KEYS
        assert 0.0 <= record["train_acc"] <= 1.0 and 0.0 <= record["val_acc"] <= 1.0
        assert record["train_loss"] > 0 and record["val_loss"] > 0
        assert record["seconds"] > 0
    assert history["epoch"] == [1, 2, 3, 4]
    assert history["lr"] == [0.1] * 4
    assert history.last is history.records[-1]
    assert repr(history).startswith("History(4 epochs, last={'epoch': 4")


def test_history_without_val_loader_has_none_val_metrics():
    train_loader, _ = _loaders()
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history = fit(model, optimizer, train_loader, num_epochs=2, progress=False)
    assert history["val_loss"] == [None, None]
    assert history["val_acc"] == [None, None]
    assert all(v is not None for v in history["train_acc"])


def test_empty_history_repr():
    assert repr(History()) == "History(empty)"
    assert len(History()) == 0


def test_loss_decreases_and_accuracy_rises():
    train_loader, val_loader = _loaders()
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    history = fit(model, optimizer, train_loader, val_loader, num_epochs=8, progress=False)
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    assert history["val_loss"][-1] < 0.5 * history["val_loss"][0]
    assert history.last["train_acc"] > 0.9
    assert history.last["val_acc"] > 0.9
    assert history.last["val_acc"] > history.records[0]["val_acc"]


def test_regression_has_no_accuracy():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 3, generator=g)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3  # (64, 1) float targets
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(TensorDataset(X, y), batch_size=16, shuffle=True, generator=generator)
    val = DataLoader(TensorDataset(X[:20], y[:20]), batch_size=8)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    history = fit(model, torch.optim.SGD(model.parameters(), lr=0.05), loader, val, num_epochs=5,
                  loss_fn=F.mse_loss, progress=False)
    assert history["train_acc"] == [None] * 5
    assert history["val_acc"] == [None] * 5
    assert history["train_loss"][-1] < 0.2 * history["train_loss"][0]
    assert evaluate(model, val, F.mse_loss)["acc"] is None


def test_fit_train_loss_is_the_example_weighted_mean_of_batch_losses():
    train_loader, _ = _loaders()
    model = _mlp()
    reference = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history = fit(model, optimizer, train_loader, num_epochs=1, progress=False)
    # Replay the same epoch by hand (same loader order: a fresh generator with the same seed).
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    total, correct = 0.0, 0
    for X, y in _loaders()[0]:
        y_hat = reference(X)
        loss = F.cross_entropy(y_hat, y)
        total += loss.item() * len(y)
        correct += int((y_hat.argmax(dim=1) == y).sum())
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
    assert history.last["train_loss"] == pytest.approx(total / 100, rel=1e-6)
    assert history.last["train_acc"] == correct / 100


# --- evaluate -----------------------------------------------------------------------------------------------

def test_evaluate_regression_loss_is_exact_mean_over_examples():
    """Integer errors and batches of 4, 4, 2: every sum is exact in float32, so the mean must be exact too."""
    X = torch.tensor([[0.0], [1.0], [2.0], [3.0], [0.0], [0.0], [1.0], [4.0], [5.0], [5.0]])  # (10, 1)
    y = torch.zeros(10, 1)
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.zero_()  # y_hat = X, so the squared errors are X ** 2
    loader = DataLoader(TensorDataset(X, y), batch_size=4)
    result = evaluate(model, loader, F.mse_loss)
    expected = (X ** 2).sum().item() / 10  # 81 / 10
    mean_of_batch_means = (14 / 4 + 17 / 4 + 50 / 2) / 3  # the bug this test catches: 10.92, not 8.1
    assert result == {"loss": expected, "acc": None}
    assert expected == 8.1
    assert abs(mean_of_batch_means - expected) > 1


def test_evaluate_classification_matches_hand_computed_over_uneven_batches():
    X, y = _blobs(30, seed=2)
    torch.manual_seed(3)
    model = nn.Linear(4, 3)
    loader = DataLoader(TensorDataset(X, y), batch_size=7)  # 7, 7, 7, 7, 2
    with torch.no_grad():
        y_hat = model(X)
    expected_loss = F.cross_entropy(y_hat, y, reduction="sum").item() / 30
    n_correct = int((y_hat.argmax(dim=1) == y).sum())
    result = evaluate(model, loader)
    assert result["acc"] == n_correct / 30
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-6, abs=0)
    # The data set makes a mean of per-batch means clearly wrong, so the checks above can tell them apart.
    means = [F.cross_entropy(y_hat[i:i + 7], y[i:i + 7]).item() for i in range(0, 30, 7)]
    accs = [(y_hat[i:i + 7].argmax(dim=1) == y[i:i + 7]).float().mean().item() for i in range(0, 30, 7)]
    assert abs(sum(means) / len(means) - expected_loss) > 1e-3
    assert abs(sum(accs) / len(accs) - n_correct / 30) > 1e-3


@pytest.mark.parametrize("start_training", [True, False])
def test_evaluate_uses_eval_mode_and_restores_mode(start_training):
    spy = ModeSpy(nn.Linear(4, 3))
    spy.train(start_training)
    _, val_loader = _loaders()
    evaluate(spy, val_loader)
    assert spy.modes == [False] * len(val_loader)
    assert spy.training is start_training
    assert spy.inner.training is start_training


def test_evaluate_does_not_track_gradients():
    model = nn.Linear(4, 3)
    _, val_loader = _loaders()
    evaluate(model, val_loader)
    assert all(p.grad is None for p in model.parameters())


# --- schedulers ---------------------------------------------------------------------------------------------

def test_scheduler_stepped_per_epoch():
    train_loader, _ = _loaders()
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    history = fit(model, optimizer, train_loader, num_epochs=3, scheduler=scheduler, progress=False)
    assert scheduler.last_epoch == 3
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025])  # the lr each epoch trained with
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0125)


def test_scheduler_stepped_per_batch():
    train_loader, _ = _loaders()  # 7 batches per epoch
    assert len(train_loader) == 7
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)
    history = fit(model, optimizer, train_loader, num_epochs=3, scheduler=scheduler, scheduler_step="batch",
                  progress=False)
    assert scheduler.last_epoch == 21
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.9 ** 21)
    # What fit records today: the optimizer's lr once the epoch's batches are done: after 7, 14, 21 steps.
    assert history["lr"] == pytest.approx([0.1, 0.1 * 0.9 ** 7, 0.1 * 0.9 ** 14])  # the rate each epoch starts with


def test_scheduler_per_batch_with_one_cycle_runs_to_the_end():
    train_loader, _ = _loaders()
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.5, epochs=2, steps_per_epoch=7)
    fit(model, optimizer, train_loader, num_epochs=2, scheduler=scheduler, scheduler_step="batch",
        progress=False)
    assert scheduler.last_epoch == 14  # OneCycleLR raises if stepped more often than epochs * steps_per_epoch


@pytest.mark.parametrize("step", ["step", "Epoch", "", None])
def test_invalid_scheduler_step_raises(step):
    train_loader, _ = _loaders()
    model = _mlp()
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="scheduler_step"):
        fit(model, optimizer, train_loader, scheduler_step=step, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing trained


@pytest.mark.parametrize("num_epochs", [0, -1])
def test_invalid_num_epochs_raises(num_epochs):
    train_loader, _ = _loaders()
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="num_epochs"):
        fit(model, optimizer, train_loader, num_epochs=num_epochs, progress=False)


# --- determinism and equivalence with a hand-written loop ---------------------------------------------------

def _fit_once(seed: int, *, with_val: bool = True) -> tuple[nn.Module, History]:
    model = _mlp(seed, dropout=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_loader, val_loader = _loaders(seed=seed)
    torch.manual_seed(seed)  # dropout masks
    history = fit(model, optimizer, train_loader, val_loader if with_val else None, num_epochs=3,
                  progress=False)
    return model, history


def test_fit_is_deterministic_with_a_seed():
    a, history_a = _fit_once(0)
    b, history_b = _fit_once(0)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    assert history_a["train_loss"] == history_b["train_loss"]
    assert history_a["val_acc"] == history_b["val_acc"]
    c, _ = _fit_once(1)
    assert not torch.equal(a[0].weight, c[0].weight)


@pytest.mark.parametrize("with_val", [False, True])
def test_fit_equals_hand_written_loop(with_val):
    fitted, history = _fit_once(0, with_val=with_val)

    model = _mlp(0, dropout=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_loader, val_loader = _loaders(seed=0)
    torch.manual_seed(0)
    for _ in range(3):
        model.train()
        for X, y in train_loader:
            loss = F.cross_entropy(model(X), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if with_val:
            # The hand loop validates too: iterating a DataLoader without a generator draws one number from
            # the global RNG, which moves the next epoch's dropout masks, so both loops must do the same.
            model.eval()
            with torch.no_grad():
                for X, y in val_loader:
                    model(X)
    for (name, p), q in zip(fitted.named_parameters(), model.parameters()):
        assert torch.equal(p, q), name
    assert len(history) == 3


def test_fit_leaves_model_in_train_mode_and_validates_in_eval_mode():
    spy = ModeSpy(nn.Linear(4, 3))
    train_loader, val_loader = _loaders()
    optimizer = torch.optim.SGD(spy.parameters(), lr=0.1)
    fit(spy, optimizer, train_loader, val_loader, num_epochs=2, progress=False)
    per_epoch = [True] * len(train_loader) + [False] * len(val_loader)
    assert spy.modes == per_epoch * 2
    assert spy.training


def test_fit_accepts_device_string():
    train_loader, _ = _loaders()
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history = fit(model, optimizer, train_loader, device="cpu", progress=False)
    assert len(history) == 1


def test_progress_false_prints_nothing(capsys):
    train_loader, _ = _loaders()
    model = _mlp()
    fit(model, torch.optim.SGD(model.parameters(), lr=0.1), train_loader, num_epochs=2, progress=False)
    assert capsys.readouterr() == ("", "")


# --- predict ------------------------------------------------------------------------------------------------

def test_predict_returns_flat_predictions_and_labels_in_order():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    model.train()
    _, val_loader = _loaders()  # 60 examples in batches of 16, 16, 16, 12
    preds, labels = predict(model, val_loader)
    X, y = val_loader.dataset.tensors
    assert preds.shape == (60,) and labels.shape == (60,)
    assert preds.dtype == torch.int64
    assert torch.equal(labels, y)
    with torch.no_grad():
        assert torch.equal(preds, model(X).argmax(dim=1))
    assert preds.device.type == "cpu"
    assert model.training


# --- empty loaders ------------------------------------------------------------------------------------------

def _empty_loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.empty(0, 4), torch.empty(0, dtype=torch.int64)), batch_size=8)


def test_fit_on_empty_loader_raises_clear_error():
    model = _mlp()
    with pytest.raises(ValueError, match="no batches.*loader empty"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), _empty_loader(), progress=False)


def test_evaluate_on_empty_loader_raises_clear_error():
    model = nn.Linear(4, 3)
    model.train()
    with pytest.raises(ValueError, match="no batches.*loader empty"):
        evaluate(model, _empty_loader())
    assert model.training  # mode restored before raising


def test_predict_on_empty_loader_raises():
    # Today: torch.cat's "expected a non-empty list of Tensors"; a message naming the loader would be clearer.
    with pytest.raises(ValueError, match="empty"):
        predict(nn.Linear(4, 3), _empty_loader())


def test_callbacks_see_every_epoch_and_can_stop_training():
    torch.manual_seed(0)
    X, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    loader = DataLoader(TensorDataset(X, y), batch_size=10)
    model = nn.Linear(3, 2)
    seen_a, seen_b = [], []

    def stop_after_two(history):
        seen_a.append(len(history))
        return len(history) >= 2

    def watcher(history):
        seen_b.append(history.last["epoch"])

    history = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, num_epochs=5, progress=False,
                  callbacks=[stop_after_two, watcher])
    assert len(history) == 2 and seen_a == [1, 2] and seen_b == [1, 2]


# --- The scaling options: AMP, accumulation, clipping, checkpoints ---------------------------------------------


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("accumulate", [2, 4])
def test_accumulation_equals_the_large_batch(accumulate):
    """k batches of 8 with accumulate=k take the same step as one batch of 8k (SGD, mean loss)."""
    X, y = _blobs(64)
    small = DataLoader(TensorDataset(X, y), batch_size=8)
    large = DataLoader(TensorDataset(X, y), batch_size=8 * accumulate)
    model_a, model_b = _mlp(), _mlp()
    fit(model_a, torch.optim.SGD(model_a.parameters(), lr=0.5), small, num_epochs=3, accumulate=accumulate,
        progress=False)
    fit(model_b, torch.optim.SGD(model_b.parameters(), lr=0.5), large, num_epochs=3, progress=False)
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_accumulation_last_short_group_is_the_mean_of_its_batches():
    """5 batches with accumulate=2: groups (2, 2, 1); the lone last batch is not divided by 2."""
    X, y = _blobs(40)
    loader = DataLoader(TensorDataset(X, y), batch_size=8)
    model = _mlp()
    expected = copy.deepcopy(model)
    opt = torch.optim.SGD(expected.parameters(), lr=0.3)
    batches = list(loader)
    for group in (batches[0:2], batches[2:4], batches[4:5]):
        opt.zero_grad()
        for Xb, yb in group:
            (F.cross_entropy(expected(Xb), yb) / len(group)).backward()
        opt.step()
    fit(model, torch.optim.SGD(model.parameters(), lr=0.3), loader, accumulate=2, progress=False)
    for a, b in zip(model.parameters(), expected.parameters()):
        torch.testing.assert_close(a, b)


def test_clipping_records_the_pre_clip_norm_and_bounds_the_step():
    train, _ = _loaders()
    model = _mlp()
    before = _params(model)
    history = fit(model, torch.optim.SGD(model.parameters(), lr=1.0), train, clip_grad_norm=1e-3, progress=False)
    assert history.last["grad_norm"] > 1e-3  # the raw gradients are larger than the bound...
    moved = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert moved <= 1e-3 * len(train) + 1e-6  # ...but each of the 7 steps moved the parameters at most lr * 1e-3


def test_no_grad_norm_key_without_clipping():
    train, _ = _loaders()
    model = _mlp()
    assert "grad_norm" not in fit(model, torch.optim.SGD(model.parameters(), lr=0.1), train, progress=False).last


def test_amp_bf16_on_cpu_learns_and_stays_close_to_fp32():
    train, val = _loaders()
    model_32, model_16 = _mlp(), _mlp()
    h32 = fit(model_32, torch.optim.SGD(model_32.parameters(), lr=0.2), train, val, num_epochs=5, progress=False)
    h16 = fit(model_16, torch.optim.SGD(model_16.parameters(), lr=0.2), train, val, num_epochs=5, amp=True,
              progress=False)
    assert h16.last["val_acc"] >= 0.8
    assert abs(h16.last["train_loss"] - h32.last["train_loss"]) < 0.05  # bf16 keeps ~3 significant digits
    assert all(p.dtype == torch.float32 for p in model_16.parameters())  # autocast never changes the weights


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, needs_cuda])]


@pytest.mark.parametrize("device", DEVICES)
def test_amp_fp16_uses_a_grad_scaler_that_skips_overflowing_steps(device):
    """With float16 a GradScaler is used: a huge loss overflows, the step is skipped and the parameters stay."""
    train, _ = _loaders()
    model = _mlp().to(device)
    before = _params(model)
    huge = lambda y_hat, y: F.cross_entropy(y_hat, y) * 1e30  # noqa: E731 - inf in fp16 after scaling
    fit(model, torch.optim.SGD(model.parameters(), lr=0.1), train, loss_fn=huge, amp=True,
        amp_dtype=torch.float16, progress=False)
    for a, b in zip(model.parameters(), before):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, message", [
    ({"accumulate": 0}, "accumulate"), ({"accumulate": 1.5}, "accumulate"),
    ({"clip_grad_norm": 0.0}, "clip_grad_norm"), ({"resume": True}, "checkpoint"),
])
def test_invalid_scaling_options_raise(kwargs, message):
    train, _ = _loaders()
    model = _mlp()
    with pytest.raises(ValueError, match=message):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), train, progress=False, **kwargs)


def _resumable_run(tmp_path, num_epochs: int, *, resume: bool):
    """A run with dropout (global RNG), a shuffled loader (its own generator), momentum and a schedule."""
    train, val = _loaders()
    model = _mlp(seed=1, dropout=0.3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    history = fit(model, optimizer, train, val, num_epochs=num_epochs, scheduler=scheduler,
                  checkpoint=tmp_path / "run.pt", resume=resume, progress=False)
    return model, history


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    straight, straight_history = _resumable_run(tmp_path / "a", 4, resume=False)
    _resumable_run(tmp_path / "b", 2, resume=False)  # "interrupted" after 2 epochs
    torch.manual_seed(123)  # whatever happened in between must not matter
    resumed, resumed_history = _resumable_run(tmp_path / "b", 4, resume=True)
    assert resumed_history["epoch"] == [1, 2, 3, 4]
    assert resumed_history["train_loss"] == pytest.approx(straight_history["train_loss"], rel=1e-6)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b)


def test_resume_without_a_file_starts_fresh(tmp_path):
    _, history = _resumable_run(tmp_path, 2, resume=True)
    assert history["epoch"] == [1, 2]
    assert (tmp_path / "run.pt").exists()


def test_corrupt_checkpoint_gives_a_clear_error_and_is_kept(tmp_path):
    from dlcourse.train import load_checkpoint

    path = tmp_path / "run.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        _resumable_run(tmp_path, 2, resume=True)
    assert path.read_bytes() == b"not a checkpoint"
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt", _mlp())


def test_save_and_load_checkpoint_round_trip(tmp_path):
    from dlcourse.train import load_checkpoint, save_checkpoint

    model = _mlp(seed=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train, _ = _loaders()
    fit(model, optimizer, train, progress=False)
    save_checkpoint(tmp_path / "ckpt" / "m.pt", model, optimizer, note="hello")
    fresh = _mlp(seed=4)
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=0.01)
    state = load_checkpoint(tmp_path / "ckpt" / "m.pt", fresh, fresh_optimizer)
    assert state["note"] == "hello"
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    assert fresh_optimizer.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    assert not list((tmp_path / "ckpt").glob("*.tmp"))


# --- Mixed precision on CUDA, and the GradScaler's state in checkpoints ---------------------------------------

class OverflowFirst:
    """A loss that overflows float16 gradients on its first ``n`` calls (×1e30), then is plain cross-entropy.

    One object can serve an interrupted run and its resumption, so that both see the same sequence of losses.
    """

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return F.cross_entropy(y_hat, y) * (1e30 if self.calls <= self.n else 1.0)


def _fp16_run(tmp_path, device: str, num_epochs: int, loss_fn, *, resume: bool = False):
    train, _ = _loaders()
    model = _mlp(seed=2).to(device)
    history = fit(model, torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9), train, num_epochs=num_epochs,
                  loss_fn=loss_fn, amp=True, amp_dtype=torch.float16, checkpoint=tmp_path / "run.pt",
                  resume=resume, progress=False)
    return model, history, torch.load(tmp_path / "run.pt", weights_only=True)["scaler"]


@pytest.mark.parametrize("device", DEVICES)
def test_grad_scaler_scale_is_saved_and_restored_by_checkpoints(tmp_path, device):
    """Three overflowing steps halve the scale three times (2**16 -> 2**13); a resumed run continues from there."""
    straight, straight_history, straight_scaler = _fp16_run(tmp_path / "a", device, 4, OverflowFirst(3))
    assert straight_scaler["scale"] == 2.0**13
    loss_fn = OverflowFirst(3)                     # shared by the interrupted run and its resumption
    _, _, interrupted_scaler = _fp16_run(tmp_path / "b", device, 2, loss_fn)
    assert interrupted_scaler["scale"] == 2.0**13
    resumed, resumed_history, resumed_scaler = _fp16_run(tmp_path / "b", device, 4, loss_fn, resume=True)
    assert resumed_scaler["scale"] == 2.0**13      # a fresh scaler would have started again at 2**16
    assert resumed_history["train_loss"][2:] == pytest.approx(straight_history["train_loss"][2:], rel=1e-5)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.gpu
@needs_cuda
def test_fit_fp16_with_grad_scaler_learns_on_cuda(tmp_path):
    train, val = _loaders()
    model = _mlp().to("cuda")
    history = fit(model, torch.optim.SGD(model.parameters(), lr=0.2), train, val, num_epochs=8, amp=True,
                  amp_dtype=torch.float16, checkpoint=tmp_path / "fp16.pt", progress=False)
    assert history.last["val_acc"] >= 0.8
    assert all(p.dtype == torch.float32 and p.is_cuda for p in model.parameters())
    scaler_state = torch.load(tmp_path / "fp16.pt", weights_only=True)["scaler"]
    assert scaler_state["scale"] == 2.0**16       # enabled, and no step overflowed


@pytest.mark.gpu
@needs_cuda
def test_fit_amp_on_cuda_uses_the_native_dtype_and_learns(tmp_path):
    """amp=True picks bfloat16 (no scaler) on GPUs that compute it natively, float16 + GradScaler otherwise."""
    from dlcourse.config import amp_dtype

    dtype = amp_dtype("cuda")
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    assert dtype == (torch.bfloat16 if native else torch.float16)
    train, val = _loaders()
    model_32, model_16 = _mlp().to("cuda"), _mlp().to("cuda")
    h32 = fit(model_32, torch.optim.SGD(model_32.parameters(), lr=0.2), train, val, num_epochs=5, progress=False)
    h16 = fit(model_16, torch.optim.SGD(model_16.parameters(), lr=0.2), train, val, num_epochs=5, amp=True,
              checkpoint=tmp_path / "amp.pt", progress=False)
    assert h16.last["val_acc"] >= 0.8
    assert abs(h16.last["train_loss"] - h32.last["train_loss"]) < 0.05
    scaler_state = torch.load(tmp_path / "amp.pt", weights_only=True)["scaler"]
    assert (scaler_state == {}) == (dtype == torch.bfloat16)    # a disabled scaler saves an empty state


class _Mixed(nn.Module):
    """Every kind of parameter decay_groups sorts: an embedding, a conv, LayerNorm, a frozen and a bias-free Linear."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)                      # 2-D, but a lookup table: no decay
        self.conv = nn.Conv2d(3, 4, kernel_size=3)            # weight (4, 3, 3, 3) decayed, bias not
        self.norm = nn.LayerNorm(8)                           # 1-D scale and shift: no decay
        self.frozen = nn.Linear(8, 8).requires_grad_(False)   # in neither group
        self.head = nn.Linear(8, 3, bias=False)               # weight decayed


def test_decay_groups_split_linear_and_conv_weights_from_the_rest():
    model = _Mixed()
    groups = decay_groups(model, 0.05, lr=0.3, betas=(0.8, 0.9))
    names = {id(p): n for n, p in model.named_parameters()}
    assert [[names[id(p)] for p in g["params"]] for g in groups] == [
        ["conv.weight", "head.weight"], ["embed.weight", "conv.bias", "norm.weight", "norm.bias"]]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert all(g["lr"] == 0.3 and g["betas"] == (0.8, 0.9) for g in groups)       # options go into both groups
    optimizer = torch.optim.AdamW(groups)
    assert decayed_names(model, optimizer) == {"conv.weight", "head.weight"}
    # the rule notebook 04 starts from (p.ndim >= 2) differs exactly by the embedding table
    by_shape = {n for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2}
    assert by_shape - decayed_names(model, optimizer) == {"embed.weight"}
    # one zero-gradient AdamW step moves only the decayed tensors, each by the factor (1 - lr * weight_decay)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for n, p in model.named_parameters():
        factor = 1 - 0.3 * 0.05 if n in {"conv.weight", "head.weight"} else 1.0
        assert torch.equal(p.detach(), factor * before[n]), n
    # AdamW on model.parameters() decays everything it is given, frozen layer included
    assert decayed_names(model, torch.optim.AdamW(model.parameters(), weight_decay=0.01)) == set(before)
    with pytest.raises(TypeError, match="weight_decay"):
        decay_groups(model, 0.05, weight_decay=0.1)
