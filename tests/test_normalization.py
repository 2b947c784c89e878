"""Notebook 02's from-scratch initialisations and normalisation layers, checked against torch.

Notebooks are not importable, so compact copies of the notebook's functions live here (they are used by
notebook 02 only; lab 02's versions are checked by its own test cells). Keep them in step with
notebooks/02_init_normalization.py.
"""

import math

import pytest
import torch
from torch import nn


# ---- copies of the notebook's functions ---------------------------------------------------------------
def xavier_normal_(W, generator=None):
    fan_out, fan_in = W.shape
    with torch.no_grad():
        return W.copy_(torch.randn(W.shape, generator=generator) * math.sqrt(2.0 / (fan_in + fan_out)))


def he_normal_(W, generator=None):
    with torch.no_grad():
        return W.copy_(torch.randn(W.shape, generator=generator) * math.sqrt(2.0 / W.shape[1]))


def batch_norm(X, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    dims = [d for d in range(X.ndim) if d != 1]
    shape = [1, -1] + [1] * (X.ndim - 2)
    if training:
        mean = X.mean(dim=dims)
        var = X.var(dim=dims, correction=0)
        n = X.numel() // X.shape[1]
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(momentum * mean)
            running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1))
    else:
        mean, var = running_mean, running_var
    X_hat = (X - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps)
    return gamma.reshape(shape) * X_hat + beta.reshape(shape)


def layer_norm(X, gamma, beta, eps=1e-5):
    dims = tuple(range(X.ndim - gamma.ndim, X.ndim))
    mean = X.mean(dim=dims, keepdim=True)
    var = X.var(dim=dims, keepdim=True, correction=0)
    return (X - mean) / torch.sqrt(var + eps) * gamma + beta


def group_norm(X, num_groups, gamma, beta, eps=1e-5):
    N, C = X.shape[:2]
    groups = X.reshape(N, num_groups, -1)
    mean = groups.mean(dim=2, keepdim=True)
    var = groups.var(dim=2, keepdim=True, correction=0)
    X_hat = ((groups - mean) / torch.sqrt(var + eps)).reshape(X.shape)
    shape = (1, C) + (1,) * (X.ndim - 2)
    return X_hat * gamma.reshape(shape) + beta.reshape(shape)


def rms_norm(X, gamma, eps=1e-6):
    dims = tuple(range(X.ndim - gamma.ndim, X.ndim))
    return X / torch.sqrt(X.pow(2).mean(dim=dims, keepdim=True) + eps) * gamma


# ---- helpers ------------------------------------------------------------------------------------------
def _random_params(module, gen):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return [p.detach().clone().requires_grad_(True) for p in module.parameters()]


def _assert_same(fn, module, X, params, atol=1e-5):
    """fn(X) and module(X) agree in value and in the gradients of X and of the parameters."""
    X1, X2 = X.clone().requires_grad_(True), X.clone().requires_grad_(True)
    y1, y2 = fn(X1), module(X2)
    torch.testing.assert_close(y1, y2, atol=atol, rtol=1e-5)
    probe = torch.randn(y1.shape, generator=torch.Generator().manual_seed(99))
    (y1 * probe).sum().backward()
    (y2 * probe).sum().backward()
    torch.testing.assert_close(X1.grad, X2.grad, atol=atol, rtol=1e-4)
    for p1, p2 in zip(params, module.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, atol=atol, rtol=1e-4)


# ---- tests --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(300, 200), (10, 50), (64, 64)])
def test_inits_equal_torch_with_the_same_generator(shape):
    ours = xavier_normal_(torch.empty(shape), torch.Generator().manual_seed(0))
    theirs = nn.init.xavier_normal_(torch.empty(shape), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours, theirs)
    ours = he_normal_(torch.empty(shape), torch.Generator().manual_seed(1))
    theirs = nn.init.kaiming_normal_(torch.empty(shape), nonlinearity="relu",
                                     generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, theirs)


def test_he_keeps_the_second_moment_of_a_deep_relu_stack():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(512, 128, generator=gen)
    start = h.pow(2).mean()
    for _ in range(30):
        h = torch.relu(h @ he_normal_(torch.empty(128, 128), gen).T)
    assert 0.2 < (h.pow(2).mean() / start).item() < 5


@pytest.mark.parametrize("shape, module", [((32, 6), nn.BatchNorm1d(6)), ((8, 6, 5, 5), nn.BatchNorm2d(6)),
                                           ((2, 3), nn.BatchNorm1d(3)), ((4, 6, 7), nn.BatchNorm1d(6))])
def test_batch_norm_train_then_eval_equals_torch(shape, module):
    gen = torch.Generator().manual_seed(0)
    params = _random_params(module, gen)
    C = shape[1]
    running_mean, running_var = torch.zeros(C), torch.ones(C)
    module.train()
    for _ in range(4):
        X = 3 * torch.randn(shape, generator=gen) + 2
        _assert_same(lambda X: batch_norm(X, *params, running_mean, running_var, training=True),
                     module, X, params)
    torch.testing.assert_close(running_mean, module.running_mean)
    torch.testing.assert_close(running_var, module.running_var)
    assert not running_mean.requires_grad and not running_var.requires_grad
    module.eval()
    X = 3 * torch.randn(shape, generator=gen) + 2
    _assert_same(lambda X: batch_norm(X, *params, running_mean, running_var, training=False),
                 module, X, params)
    torch.testing.assert_close(running_mean, module.running_mean)   # evaluation changes nothing


@pytest.mark.parametrize("normalized_shape, shape",
                         [(16, (4, 10, 16)), ((6, 5, 5), (8, 6, 5, 5)), (3, (2, 3))])
def test_layer_norm_equals_torch(normalized_shape, shape):
    module = nn.LayerNorm(normalized_shape)
    params = _random_params(module, torch.Generator().manual_seed(0))
    X = 3 * torch.randn(shape, generator=torch.Generator().manual_seed(1)) + 2
    _assert_same(lambda X: layer_norm(X, *params), module, X, params)


@pytest.mark.parametrize("groups, shape",
                         [(3, (8, 6, 5, 5)), (1, (4, 6, 3, 3)), (6, (4, 6, 3, 3)), (2, (8, 4, 7))])
def test_group_norm_equals_torch(groups, shape):
    module = nn.GroupNorm(groups, shape[1])
    params = _random_params(module, torch.Generator().manual_seed(0))
    X = 3 * torch.randn(shape, generator=torch.Generator().manual_seed(1)) + 2
    _assert_same(lambda X: group_norm(X, groups, *params), module, X, params)


def test_group_norm_with_one_group_is_layer_norm_over_channels_and_pixels():
    X = torch.randn(8, 6, 5, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(group_norm(X, 1, torch.ones(6), torch.zeros(6)),
                               layer_norm(X, torch.ones(6, 5, 5), torch.zeros(6, 5, 5)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("normalized_shape, shape, eps", [(16, (4, 10, 16), 1e-6), ((4, 5), (3, 4, 5), 1e-6),
                                                          (8, (5, 8), 0.5)])
def test_rms_norm_equals_torch(normalized_shape, shape, eps):
    module = nn.RMSNorm(normalized_shape, eps=eps)
    params = _random_params(module, torch.Generator().manual_seed(0))
    X = 3 * torch.randn(shape, generator=torch.Generator().manual_seed(1)) + 2
    _assert_same(lambda X: rms_norm(X, *params, eps=eps), module, X, params)
