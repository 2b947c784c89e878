"""Tests for dlcourse.diagnose: the LR range test's sweep, suggestion, early stop, restoring state, and errors."""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlcourse.diagnose import LRRangeResult, lr_range_test


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and two xdist workers on 2 cores must not oversubscribe them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _loader(n: int = 512, batch_size: int = 32, seed: int = 0) -> DataLoader:
    """A linearly separable 4-class problem: X (n, 8), y (n,); shuffled by a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 8, generator=g)
    y = (X @ torch.randn(8, 4, generator=g)).argmax(dim=1)
    return DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))


def _model(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(dropout), nn.BatchNorm1d(32), nn.Linear(32, 4))


def test_sweep_is_exponential_from_start_to_end_and_losses_are_recorded():
    result = lr_range_test(_model(), torch.optim.SGD, _loader(), start_lr=1e-5, end_lr=1e-1, num_steps=21)
    assert isinstance(result, LRRangeResult)
    assert not result.diverged and len(result.lrs) == len(result.losses) == len(result.smoothed) == 21
    assert math.isclose(result.lrs[0], 1e-5) and math.isclose(result.lrs[-1], 1e-1)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:])]
    assert all(math.isclose(r, 10 ** 0.2) for r in ratios)   # 4 decades in 20 equal factors
    assert all(math.isfinite(v) for v in result.losses + result.smoothed)
    assert result.num_steps == 21


def _running_average(losses: list[float], smooth: float) -> list[float]:
    """The bias-corrected exponential moving average the sweep's stop rule uses."""
    average, out = 0.0, []
    for i, value in enumerate(losses):
        average = (1 - smooth) * average + smooth * value
        out.append(average / (1 - (1 - smooth) ** (i + 1)))
    return out


def test_smoothed_curve_is_a_centred_moving_average():
    result = lr_range_test(_model(), torch.optim.SGD, _loader(), start_lr=1e-4, end_lr=1e-2, num_steps=12,
                           smooth=0.25)                                  # half-width round(1 / 0.5) = 2
    x = result.losses
    expected = [sum(x[max(0, i - 2): i + 3]) / len(x[max(0, i - 2): i + 3]) for i in range(len(x))]
    assert result.smoothed == pytest.approx(expected, rel=1e-12)
    unsmoothed = lr_range_test(_model(), torch.optim.SGD, _loader(), start_lr=1e-4, end_lr=1e-2, num_steps=10,
                               smooth=1.0)
    assert unsmoothed.smoothed == pytest.approx(unsmoothed.losses)


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    result = lr_range_test(_model(), torch.optim.SGD, _loader(), start_lr=1e-3, end_lr=1e2, num_steps=60)
    values = np.array(result.smoothed)
    best = int(np.argmin(values))
    assert best >= 2 and result.min_loss_lr == result.lrs[best]
    slopes = np.gradient(values[: best + 1], np.log10(result.lrs[: best + 1]))
    assert result.suggestion == result.lrs[int(np.argmin(slopes))]
    assert slopes.min() < 0


@pytest.mark.parametrize("make_optimizer, low, high", [
    (functools.partial(torch.optim.SGD, momentum=0.9), 1e-3, 1.0),
    (torch.optim.Adam, 1e-4, 1e-1),
])
def test_suggestion_lands_in_a_sane_range_and_trains(make_optimizer, low, high):
    loader = _loader()
    result = lr_range_test(_model(), make_optimizer, loader, num_steps=100)
    assert low < result.suggestion < high, result
    assert result.suggestion <= result.min_loss_lr
    # the suggestion is a lr that trains: two epochs bring the loss well below its start
    model = _model()
    optimizer = make_optimizer(model.parameters(), lr=result.suggestion)
    X, y = loader.dataset.tensors
    start = F.cross_entropy(model(X), y).item()
    for _ in range(2):
        for Xb, yb in loader:
            loss = F.cross_entropy(model(Xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    assert F.cross_entropy(model(X), y).item() < 0.5 * start


def test_divergence_stops_the_sweep_early():
    result = lr_range_test(_model(), torch.optim.SGD, _loader(), start_lr=1e-3, end_lr=1e4, num_steps=100)
    assert result.diverged
    assert len(result.lrs) < 100 and result.lrs[-1] < 1e4
    running = _running_average(result.losses, 0.05)
    best = min(running[:-1])
    assert not math.isfinite(running[-1]) or running[-1] > 4.0 * best
    assert all(v <= 4.0 * min(running[: i + 1]) for i, v in enumerate(running[:-1]))   # the first crossing
    assert result.suggestion < result.lrs[-1] and result.min_loss_lr < result.lrs[-1]


def test_a_larger_diverge_factor_goes_further():
    kwargs = dict(start_lr=1e-3, end_lr=1e4, num_steps=100)
    strict = lr_range_test(_model(), torch.optim.SGD, _loader(), diverge_factor=1.5, **kwargs)
    lenient = lr_range_test(_model(), torch.optim.SGD, _loader(), diverge_factor=50.0, **kwargs)
    assert len(strict.lrs) < len(lenient.lrs)


def test_model_optimizer_gradients_mode_and_rng_are_restored():
    model = _model(dropout=0.2)                    # dropout draws random numbers; BatchNorm has buffers
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = _loader()
    X, y = next(iter(loader))
    F.cross_entropy(model(X), y).backward()
    optimizer.step()                                # momentum buffers exist now
    F.cross_entropy(model(X), y).backward()        # and gradients are pending
    model.eval()
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    params = list(model.parameters())
    rng = torch.get_rng_state()

    result = lr_range_test(model, optimizer, loader, num_steps=30, end_lr=1.0)

    assert len(result.lrs) > 1
    assert all(torch.equal(model_state[k], v) for k, v in model.state_dict().items())
    assert list(model.parameters()) == params and all(a is b for a, b in zip(model.parameters(), params))
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert not model.training
    after = optimizer.state_dict()
    assert after["param_groups"] == optimizer_state["param_groups"]          # lr back at 0.05
    assert optimizer.param_groups[0]["lr"] == 0.05
    for key, state in optimizer_state["state"].items():
        assert torch.equal(after["state"][key]["momentum_buffer"], state["momentum_buffer"])
    assert torch.equal(torch.get_rng_state(), rng)


def test_state_is_restored_after_divergence_to_nan():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    result = lr_range_test(model, torch.optim.SGD, _loader(), start_lr=1.0, end_lr=1e12, num_steps=50)
    assert result.diverged
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_factory_optimizer_and_a_short_loader_are_cycled():
    loader = _loader(n=64, batch_size=32)          # 2 batches, 10 steps: the loader is cycled
    result = lr_range_test(_model(), torch.optim.Adam, loader, num_steps=10, start_lr=1e-4, end_lr=1e-2)
    assert len(result.lrs) == 10


def test_plot_returns_a_figure():
    result = lr_range_test(_model(), torch.optim.SGD, _loader(), num_steps=20, start_lr=1e-4, end_lr=1.0)
    fig = result.plot(title="t")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_title() == "t"
    assert "suggestion" in repr(result)


@pytest.mark.parametrize("kwargs, message", [
    (dict(start_lr=0.0), "start_lr"),
    (dict(start_lr=-1e-3), "start_lr"),
    (dict(start_lr=1e-2, end_lr=1e-3), "end_lr"),
    (dict(end_lr=float("inf")), "end_lr"),
    (dict(num_steps=1), "num_steps"),
    (dict(num_steps=10.5), "num_steps"),
    (dict(smooth=0.0), "smooth"),
    (dict(smooth=1.5), "smooth"),
    (dict(diverge_factor=1.0), "diverge_factor"),
])
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lr_range_test(_model(), torch.optim.SGD, _loader(), **kwargs)


def test_bad_optimizer_and_empty_loader_raise_clear_errors():
    with pytest.raises(ValueError, match="optimizer"):
        lr_range_test(_model(), "adam", _loader())
    with pytest.raises(ValueError, match="torch.optim.Optimizer"):
        lr_range_test(_model(), lambda params: None, _loader())
    empty = DataLoader(TensorDataset(torch.zeros(0, 8), torch.zeros(0, dtype=torch.int64)), batch_size=4)
    model = _model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="empty"):
        lr_range_test(model, torch.optim.SGD, empty)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
