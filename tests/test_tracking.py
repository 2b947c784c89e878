"""dlcourse.tracking: the TensorBoard fit callback writes what the History says; run_info goes into checkpoints."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlcourse import tracking
from dlcourse.train import fit, load_checkpoint, save_checkpoint

pytest.importorskip("tensorboard")


def _tiny_run(tmp_path, **logger_options):
    torch.manual_seed(0)
    X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    loader = DataLoader(TensorDataset(X, y), batch_size=16)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    logger = tracking.TensorBoardLogger(tmp_path / "runs" / "a", model, hparams={"lr": 0.1, "opt": "sgd"},
                                        **logger_options)
    history = fit(model, optimizer, loader, loader, num_epochs=3, progress=False, callbacks=[logger])
    logger.close()
    return history, tracking.read_scalars(tmp_path / "runs" / "a")


def test_logger_writes_the_history_scalars_and_hparams(tmp_path):
    history, scalars = _tiny_run(tmp_path)
    assert [step for step, _ in scalars["loss/train"]] == [1, 2, 3]
    assert [v for _, v in scalars["loss/val"]] == pytest.approx(history["val_loss"], rel=1e-6)
    assert [v for _, v in scalars["accuracy/train"]] == pytest.approx(history["train_acc"], rel=1e-6)
    assert [v for _, v in scalars["lr"]] == pytest.approx([0.1] * 3)
    assert scalars["hparam/val_loss"][-1][1] == pytest.approx(history.last["val_loss"], rel=1e-6)


def test_logger_writes_histograms_of_weights_and_grads(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _tiny_run(tmp_path, histogram_every=2)
    events = EventAccumulator(str(tmp_path / "runs" / "a"))
    events.Reload()
    tags = events.Tags()["histograms"]
    assert {"weights/weight", "weights/bias", "grads/weight", "grads/bias"} <= set(tags)
    assert [e.step for e in events.Histograms("weights/weight")] == [2]


def test_run_info_travels_with_a_checkpoint(tmp_path):
    model = torch.nn.Linear(2, 2)
    info = tracking.run_info({"lr": 0.1, "hidden": [8, 8]})
    assert info["config"] == {"lr": 0.1, "hidden": [8, 8]} and info["torch"] == str(torch.__version__)
    save_checkpoint(tmp_path / "c.pt", model, run=info)
    assert load_checkpoint(tmp_path / "c.pt", torch.nn.Linear(2, 2))["run"] == info


def test_git_commit_is_none_outside_a_repository(tmp_path):
    assert tracking.git_commit(tmp_path) is None
    commit = tracking.git_commit()
    assert commit is None or len(commit.removesuffix("-dirty")) == 40
