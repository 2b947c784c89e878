"""Tests for dlcourse.viz: training curves from a History and labelled image grids (headless, Agg backend)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import same_color
from matplotlib.figure import Figure

from dlcourse.train import History
from dlcourse.viz import image_grid, plot_history


def _history(*, acc: bool = True, val: bool = True, epochs: int = 3) -> History:
    records = []
    for e in range(1, epochs + 1):
        records.append({
            "epoch": e,
            "train_loss": 1.0 / e,
            "train_acc": 0.5 + 0.1 * e if acc else None,
            "val_loss": 1.2 / e if val else None,
            "val_acc": (0.45 + 0.1 * e if acc else None) if val else None,
            "lr": 0.1,
            "seconds": 0.01,
        })
    return History(records)


def _lines(ax) -> dict[str, tuple[list[float], list[float]]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


# --- plot_history -------------------------------------------------------------------------------------------

def test_plot_history_loss_and_accuracy_panels():
    history = _history()
    fig = plot_history(history, title="run 1")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_ylabel() == "loss" and acc_ax.get_ylabel() == "accuracy"
    assert loss_ax.get_xlabel() == acc_ax.get_xlabel() == "epoch"
    loss_lines, acc_lines = _lines(loss_ax), _lines(acc_ax)
    assert set(loss_lines) == set(acc_lines) == {"train", "val"}
    assert loss_lines["train"] == ([1, 2, 3], history["train_loss"])
    assert loss_lines["val"] == ([1, 2, 3], history["val_loss"])
    assert acc_lines["train"] == ([1, 2, 3], history["train_acc"])
    assert acc_lines["val"] == ([1, 2, 3], history["val_acc"])
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["train", "val"]
    assert fig._suptitle is not None and fig._suptitle.get_text() == "run 1"


def test_plot_history_without_accuracy_has_one_panel():
    fig = plot_history(_history(acc=False))
    assert len(fig.axes) == 1
    assert set(_lines(fig.axes[0])) == {"train", "val"}
    assert fig.axes[0].get_ylabel() == "loss"


def test_plot_history_soft_labels_still_show_validation_accuracy():
    """Mixup/CutMix record no train accuracy (soft targets); the accuracy panel must still show val accuracy."""
    history = _history()
    for record in history.records:
        record["train_acc"] = None
    fig = plot_history(history)
    assert len(fig.axes) == 2
    assert list(_lines(fig.axes[1])) == ["val"]


def test_plot_history_without_validation_has_train_lines_only():
    fig = plot_history(_history(val=False))
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert list(_lines(ax)) == ["train"]


def test_plot_history_no_title_by_default():
    fig = plot_history(_history())
    assert fig._suptitle is None


def test_figures_are_returned_not_left_open_in_pyplot():
    before = set(plt.get_fignums())
    plot_history(_history())
    image_grid(torch.rand(3, 8, 8))
    assert set(plt.get_fignums()) == before


# --- image_grid ---------------------------------------------------------------------------------------------

def _shown(fig: Figure) -> list:
    """The image drawn in each axes, in order, for axes that have one."""
    return [ax.images[0] for ax in fig.axes if ax.images]


@pytest.mark.parametrize("shape", [(5, 1, 8, 8), (5, 8, 8)])
def test_image_grid_grayscale(shape):
    images = torch.rand(shape)
    fig = image_grid(images, ncols=4)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 8  # 2 rows of 4
    shown = _shown(fig)
    assert len(shown) == 5
    for i, im in enumerate(shown):
        np.testing.assert_array_equal(im.get_array(), images.reshape(5, 8, 8)[i].numpy())
        assert im.get_cmap().name == "gray"
    assert all(not ax.axison for ax in fig.axes)


def test_image_grid_colour_is_channels_last_and_clamped():
    images = torch.rand(3, 3, 6, 7) * 1.4 - 0.2  # some values outside [0, 1]
    fig = image_grid(images, ncols=3)
    assert len(fig.axes) == 3
    shown = _shown(fig)
    assert len(shown) == 3
    for i, im in enumerate(shown):
        arr = np.asarray(im.get_array())
        assert arr.shape == (6, 7, 3)
        np.testing.assert_allclose(arr, images[i].permute(1, 2, 0).clamp(0, 1).numpy())


def test_image_grid_accepts_tensors_that_require_grad():
    images = torch.rand(2, 1, 4, 4, requires_grad=True)
    fig = image_grid(images)
    assert len(_shown(fig)) == 2


def test_image_grid_titles_with_labels():
    fig = image_grid(torch.rand(3, 1, 4, 4), labels=torch.tensor([2, 0, 1]), classes=["cat", "dog", "eel"])
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles == ["eel", "cat", "dog"]


def test_image_grid_titles_without_classes_use_numbers():
    fig = image_grid(torch.rand(2, 4, 4), labels=[7, 3])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["7", "3"]


def test_image_grid_predictions_titled_pred_label_wrong_in_red():
    labels = torch.tensor([0, 1, 2, 1])
    preds = torch.tensor([0, 2, 2, 0])
    fig = image_grid(torch.rand(4, 3, 4, 4), labels=labels, preds=preds, classes=["a", "b", "c"], ncols=2)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["a (a)", "c (b)", "c (c)", "a (b)"]
    wrong = [not same_color(ax.title.get_color(), "black") for ax in axes]
    assert wrong == [False, True, False, True]
    for ax, is_wrong in zip(axes, wrong):
        if is_wrong:
            assert same_color(ax.title.get_color(), "red")


def test_image_grid_no_titles_without_labels():
    fig = image_grid(torch.rand(2, 4, 4), preds=[0, 1])
    assert [ax.get_title() for ax in fig.axes] == [""] * 8


def test_image_grid_more_axes_than_images_are_blank():
    fig = image_grid(torch.rand(10, 4, 4), ncols=4)
    assert len(fig.axes) == 12
    assert [len(ax.images) for ax in fig.axes] == [1] * 10 + [0] * 2


@pytest.mark.parametrize("shape", [(8, 8), (4,), (2, 1, 1, 8, 8)])
def test_image_grid_bad_shape_raises(shape):
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        image_grid(torch.rand(shape))
