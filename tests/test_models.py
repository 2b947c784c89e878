"""Reference models: shapes, parameter counts, and that they learn."""

import torch
import torch.nn.functional as F
from torch import nn

from dlcourse import data, models


def test_mlp_shapes_and_parameter_count():
    model = models.mlp(64, [32, 16], 10)
    assert model(torch.randn(5, 64)).shape == (5, 10)
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)  # flattens images
    assert models.count_parameters(model) == (64 * 32 + 32) + (32 * 16 + 16) + (16 * 10 + 10)
    with_dropout = models.mlp(4, [3], 2, dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) for m in with_dropout) == 1


def test_count_parameters_respects_frozen_weights():
    model = nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    assert models.count_parameters(model) == 6
    assert models.count_parameters(model, trainable_only=False) == 8


def test_small_cnn_shapes_for_digits_and_shapes():
    shapes_model = models.SmallCNN(in_channels=3, num_classes=6)
    assert shapes_model(torch.randn(2, 3, 32, 32)).shape == (2, 6)
    digits_model = models.SmallCNN(in_channels=1, num_classes=10, width=8, depth=3, image_size=8)
    assert digits_model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    conv = [m for m in shapes_model.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in conv] == [16, 32, 64] and all(m.bias is None for m in conv)


def test_small_cnn_learns_digits_quickly():
    torch.manual_seed(0)
    splits = data.digits(seed=0)
    train, test = splits.loaders(batch_size=64, seed=0)[0], splits.loaders(batch_size=256)[2]
    model = models.SmallCNN(in_channels=1, num_classes=10, width=8, image_size=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for X, y in train:
            loss = F.cross_entropy(model(X), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        correct = sum((model(X).argmax(1) == y).sum().item() for X, y in test)
    assert correct / len(splits.test) > 0.8
