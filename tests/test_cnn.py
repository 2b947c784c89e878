"""Notebook 03 (convolutional networks): its from-scratch code checked against PyTorch.

Notebooks are not importable, so each function below is a compact copy of the one in notebooks/03_cnn.py.
"""

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dlcourse.models import count_parameters


def conv_output_size(n, kernel_size, stride=1, padding=0, dilation=1):
    return (n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def conv2d_loops(X, weight, bias=None, stride=1, padding=0):
    B, C, H, W = X.shape
    C_out, _, k, _ = weight.shape
    H_out, W_out = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    X = F.pad(X, (padding,) * 4)
    Y = X.new_zeros(B, C_out, H_out, W_out)
    for i in range(H_out):
        for j in range(W_out):
            patch = X[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            Y[:, :, i, j] = torch.einsum("bcuv,ocuv->bo", patch, weight)
    return Y if bias is None else Y + bias[:, None, None]


def conv2d_unfold(X, weight, bias=None, stride=1, padding=0, dilation=1):
    B, C, H, W = X.shape
    C_out, _, kh, kw = weight.shape
    H_out = conv_output_size(H, kh, stride, padding, dilation)
    W_out = conv_output_size(W, kw, stride, padding, dilation)
    cols = F.unfold(X, (kh, kw), dilation=dilation, padding=padding, stride=stride)
    Y = weight.reshape(C_out, -1) @ cols
    if bias is not None:
        Y = Y + bias[:, None]
    return Y.reshape(B, C_out, H_out, W_out)


def pool2d_unfold(X, kernel_size, stride=None, mode="max"):
    stride = stride or kernel_size
    B, C, H, W = X.shape
    H_out, W_out = conv_output_size(H, kernel_size, stride), conv_output_size(W, kernel_size, stride)
    cols = F.unfold(X, kernel_size, stride=stride).reshape(B, C, kernel_size * kernel_size, -1)
    pooled = cols.amax(dim=2) if mode == "max" else cols.mean(dim=2)
    return pooled.reshape(B, C, H_out, W_out)


def depthwise_conv2d_unfold(X, weight, stride=1, padding=0):
    B, C, H, W = X.shape
    k = weight.shape[-1]
    H_out, W_out = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    cols = F.unfold(X, k, padding=padding, stride=stride).reshape(B, C, k * k, -1)
    return torch.einsum("bckl,ck->bcl", cols, weight.reshape(C, k * k)).reshape(B, C, H_out, W_out)


def conv3x3(c_in, c_out, stride=1):
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def separable_conv3x3(c_in, c_out, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False))


class ResidualBlock(nn.Module):
    def __init__(self, c_in, c_out, stride=1, conv=conv3x3):
        super().__init__()
        self.conv1, self.bn1 = conv(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = conv(c_out, c_out, 1), nn.BatchNorm2d(c_out)
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, X):
        out = F.relu(self.bn1(self.conv1(X)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(X))


def conv_macs(c_in, c_out, k, h_out, w_out, groups=1):
    return k * k * (c_in // groups) * c_out * h_out * w_out


def test_output_size_matches_conv2d_and_pooling():
    for n, k, s, p, d in itertools.product((1, 4, 7, 16), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2, 3)):
        if n + 2 * p < d * (k - 1) + 1:
            continue
        layer = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d, device="meta")
        assert conv_output_size(n, k, s, p, d) == layer(torch.empty(1, 1, n, n, device="meta")).shape[-1]
    for n, k, s in [(8, 2, 2), (7, 2, 2), (32, 3, 2), (9, 3, 1)]:
        assert conv_output_size(n, k, s) == F.max_pool2d(torch.empty(1, 1, n, n), k, s).shape[-1]


@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 1), (2, 1), (3, 2)])
def test_conv2d_loops_matches_torch(stride, padding):
    gen = torch.Generator().manual_seed(0)
    X, weight, bias = (torch.randn(2, 3, 9, 8, generator=gen), torch.randn(4, 3, 3, 3, generator=gen),
                       torch.randn(4, generator=gen))
    expected = F.conv2d(X, weight, bias, stride=stride, padding=padding)
    assert torch.allclose(conv2d_loops(X, weight, bias, stride, padding), expected, atol=1e-5)


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", [
    ((2, 3, 9, 9), (4, 3, 3, 3), 1, 0, 1), ((2, 3, 9, 11), (5, 3, 3, 3), 2, 1, 1),
    ((1, 2, 16, 16), (3, 2, 5, 3), 1, 2, 1), ((3, 4, 12, 12), (2, 4, 3, 3), 1, 2, 2),
    ((2, 1, 8, 8), (6, 1, 1, 1), 1, 0, 1), ((1, 3, 7, 10), (2, 3, 2, 4), 3, 1, 2)])
def test_conv2d_unfold_matches_torch_in_values_and_gradients(shape, kernel, stride, padding, dilation):
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(*kernel, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(kernel[0], generator=gen, dtype=torch.float64, requires_grad=True)
    ours = conv2d_unfold(X, weight, bias, stride, padding, dilation)
    expected = F.conv2d(X, weight, bias, stride=stride, padding=padding, dilation=dilation)
    assert ours.shape == expected.shape and torch.allclose(ours, expected)
    g_ours = torch.autograd.grad(ours.square().sum(), (X, weight, bias))
    g_torch = torch.autograd.grad(expected.square().sum(), (X, weight, bias))
    assert all(torch.allclose(a, b) for a, b in zip(g_ours, g_torch))


def test_unfold_column_order_matches_flattened_weights():
    cols = F.unfold(torch.arange(16.0).reshape(1, 1, 4, 4), kernel_size=2)
    assert cols.shape == (1, 4, 9) and cols[0, :, 0].tolist() == [0, 1, 4, 5] and cols[0, :, -1].tolist() == [
        10, 11, 14, 15]


@pytest.mark.parametrize("k, s", [(2, None), (3, None), (3, 2), (2, 1)])
def test_pooling_matches_torch(k, s):
    X = torch.randn(2, 3, 9, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(pool2d_unfold(X, k, s, "max"), F.max_pool2d(X, k, s))
    assert torch.allclose(pool2d_unfold(X, k, s, "mean"), F.avg_pool2d(X, k, s), atol=1e-6)


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (1, 0)])
def test_depthwise_conv_matches_grouped_conv(stride, padding):
    gen = torch.Generator().manual_seed(3)
    X, weight = torch.randn(2, 5, 9, 9, generator=gen), torch.randn(5, 1, 3, 3, generator=gen)
    expected = F.conv2d(X, weight, stride=stride, padding=padding, groups=5)
    assert torch.allclose(depthwise_conv2d_unfold(X, weight, stride, padding), expected, atol=1e-5)


def test_separable_parameters_and_flops_match_formulas_and_torch_counter():
    c, k, hw = 64, 3, 16
    X = torch.randn(1, c, hw, hw)
    for layer, params, macs in [
            (conv3x3(c, c), k * k * c * c, conv_macs(c, c, k, hw, hw)),
            (separable_conv3x3(c, c), k * k * c + c * c,
             conv_macs(c, c, k, hw, hw, groups=c) + conv_macs(c, c, 1, hw, hw))]:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            layer(X)
        assert count_parameters(layer) == params and counter.get_total_flops() == 2 * macs
    assert count_parameters(conv3x3(c, c)) / count_parameters(separable_conv3x3(c, c)) == pytest.approx(
        1 / (1 / c + 1 / k**2))


@pytest.mark.parametrize("conv", [conv3x3, separable_conv3x3])
def test_residual_block_shapes_shortcut_and_identity_start(conv):
    torch.manual_seed(0)
    X = torch.randn(4, 16, 12, 12)
    same, down = ResidualBlock(16, 16, conv=conv), ResidualBlock(16, 32, stride=2, conv=conv)
    assert isinstance(same.shortcut, nn.Identity) and isinstance(down.shortcut, nn.Sequential)
    assert same(X).shape == X.shape and down(X).shape == (4, 32, 6, 6)
    nn.init.zeros_(same.bn2.weight)            # the residual branch outputs 0: the block is ReLU(X)
    assert torch.allclose(same(X), F.relu(X))
    down.eval()
    nn.init.zeros_(down.bn2.weight)
    with torch.no_grad():
        assert torch.allclose(down(X), F.relu(down.shortcut(X)))


def test_channels_last_changes_strides_not_results():
    torch.manual_seed(0)
    model = nn.Sequential(ResidualBlock(3, 8, stride=2), ResidualBlock(8, 8)).eval()
    X = torch.rand(4, 3, 16, 16)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    X_cl = X.to(memory_format=torch.channels_last)
    assert X_cl.stride() == (3 * 16 * 16, 1, 16 * 3, 3) and torch.equal(X, X_cl)
    with torch.no_grad():
        expected = model(X)
        out = model_cl(X_cl)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, expected, atol=1e-5)


def test_smallcnn_lives_in_the_package_not_in_notebook_03():
    """Notebooks 04 and 10 once called SmallCNN 'notebook 03's': notebook 03 defines lenet and ResNetSmall."""
    import re
    from pathlib import Path

    import dlcourse.models

    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    assert "class SmallCNN" not in (notebooks / "03_cnn.py").read_text()
    assert dlcourse.models.SmallCNN.__module__ == "dlcourse.models"
    for path in sorted(notebooks.glob("*.py")):
        text = " ".join(line.lstrip("# ") for line in path.read_text().splitlines())   # sentences across lines
        assert not re.search(r"[Nn]otebook 03'?s?\W+`?SmallCNN", text), path.name
        assert not re.search(r"notebook 03 \([^)]*`SmallCNN`", text), path.name

