"""Tests for dlcourse.bugs (the Setup that the debugging notebook and lab 13 train and examine) and for lab
13's bug hunt: the doctor must flag at least six of the lab's broken set-ups on its own, and no fixed one.

The broken and fixed set-ups are read from the lab's source, solutions/lab13_bug_hunt.py (its setup cell, the
read-only set-up cells and the answer cells), so the test examines exactly what learners see and what the
reference solution submits. Which doctor check flags which planted bug is printed (``pytest -s``) and recorded
as the test property ``doctor_flags``.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlcourse.bugs import InputsOnly, Setup, labels_of, standard_predict, standard_step
from dlcourse.grading import build
from dlcourse.grading import cells as C

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "solutions" / "lab13_bug_hunt.py"
LETTERS = "abcdefghi"


# --------------------------------------------------------------------------------------------- dlcourse.bugs
W_TRUE = torch.randn(6, 3, generator=torch.Generator().manual_seed(1234))   # (6, 3): the labelling rule


def _data(n: int = 96, seed: int = 0) -> TensorDataset:
    """A linearly separable 3-class problem, the same rule for every seed: X (n, 6), y (n,)."""
    X = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(X, (X @ W_TRUE).argmax(dim=1))


def _setup(seed: int = 0, **kwargs) -> Setup:
    torch.manual_seed(seed)
    data = _data(seed=seed)
    train = DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed))
    val = DataLoader(_data(48, seed=seed + 1), batch_size=16)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    return Setup(model, train, val, lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9), **kwargs)


def test_standard_step_is_the_five_lines():
    torch.manual_seed(0)
    model_a = nn.Linear(6, 3)
    model_b = nn.Linear(6, 3)
    model_b.load_state_dict(model_a.state_dict())
    opt_a = torch.optim.SGD(model_a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.1)
    X, y = _data(8).tensors
    for _ in range(3):  # stale gradients would make the runs differ from the second step on
        loss_a = standard_step(model_a, opt_a, X, y, F.cross_entropy)
        loss_b = F.cross_entropy(model_b(X), y)
        opt_b.zero_grad()
        loss_b.backward()
        opt_b.step()
        assert torch.allclose(loss_a, loss_b)
    assert torch.equal(model_a.weight, model_b.weight) and torch.equal(model_a.bias, model_b.bias)


def test_standard_predict_uses_eval_mode_and_restores_the_mode():
    model = nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.9))
    loader = DataLoader(_data(32), batch_size=8)
    model.train()
    first, second = standard_predict(model, loader), standard_predict(model, loader)
    assert first.shape == (32,) and first.dtype == torch.int64 and torch.equal(first, second)
    assert model.training
    with torch.no_grad():
        expected = model[0](_data(32).tensors[0]).argmax(dim=1)
    assert torch.equal(first, expected)


def test_inputs_only_hides_the_labels_and_keeps_the_inputs():
    loader = DataLoader(_data(20), batch_size=8)
    batches = list(InputsOnly(loader))
    assert len(InputsOnly(loader)) == 3 and [len(X) for X, _ in batches] == [8, 8, 4]
    assert all(not y.any() for _, y in batches)
    assert torch.equal(torch.cat([X for X, _ in batches]), _data(20).tensors[0])
    assert torch.equal(labels_of(loader), _data(20).tensors[1])


def test_accuracy_scores_a_shuffling_loader_in_one_pass():
    setup = _setup()
    setup.train(3)
    shuffled = DataLoader(_data(), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(5))
    in_order = DataLoader(_data(), batch_size=16)
    assert setup.accuracy(shuffled) == pytest.approx(setup.accuracy(in_order))
    assert setup.accuracy(in_order) > 0.8


def test_predict_fn_never_sees_labels():
    seen = []

    def spy(model, loader):
        labels = [y for _, y in loader]
        seen.extend(labels)
        return torch.cat(labels)  # "predict" the labels it was given: zeros

    setup = _setup(predict_fn=spy)
    zeros_right = (labels_of(setup.val_loader) == 0).double().mean().item()
    assert setup.accuracy(setup.val_loader) == pytest.approx(zeros_right)
    assert seen and all(not y.any() for y in seen)


def test_train_records_each_epoch_and_learns():
    setup = _setup()
    history = setup.train(4)
    assert len(history) == 4 and history["epoch"] == [1, 2, 3, 4]
    assert set(history.last) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert history["train_loss"][-1] < 0.6 * history["train_loss"][0]
    assert history.last["val_acc"] > 0.8 and history.last["lr"] == 0.2 and history.last["val_loss"] is None
    assert setup.train(1) is history and history["epoch"][-1] == 5  # a second call continues the history


def test_train_uses_the_setups_step_and_records_a_nan_loss():
    calls = []

    def nan_step(model, optimizer, X, y, loss_fn):
        calls.append(len(y))
        return torch.tensor(float("nan"))

    setup = _setup(train_step=nan_step)
    history = setup.train(1)
    assert sum(calls) == 96 and torch.isnan(torch.tensor(history.last["train_loss"]))


def test_train_is_reproducible_from_the_seed():
    # dropout draws from torch's global generator: build each set-up (which seeds it) right before training it
    first = _setup(seed=3).train(2)["train_loss"]
    second = _setup(seed=3).train(2)["train_loss"]
    assert first == second


def test_doctor_args_hold_every_piece():
    setup = _setup()
    args = setup.doctor_args()
    assert set(args) == {"model", "train_loader", "loss_fn", "optimizer_factory", "val_loader", "train_step",
                         "evaluate_fn"}
    assert args["model"] is setup.model and args["train_step"] is standard_step
    other = nn.Sequential(nn.Linear(6, 3))
    with torch.no_grad():
        other[0].weight.zero_()
        other[0].bias.copy_(torch.tensor([0.0, 0.0, 1.0]))  # always class 2
    assert args["evaluate_fn"](other, setup.val_loader) == pytest.approx(
        (labels_of(setup.val_loader) == 2).double().mean().item())


def test_errors_say_what_is_wrong():
    setup = _setup()
    with pytest.raises(ValueError, match="num_epochs"):
        setup.train(0)
    with pytest.raises(ValueError, match="empty"):
        setup.accuracy(DataLoader(TensorDataset(torch.zeros(0, 6), torch.zeros(0, dtype=torch.long))))
    bad = _setup(predict_fn=lambda model, loader: torch.zeros(3, 2))
    with pytest.raises(ValueError, match="one class per example"):
        bad.predict(bad.val_loader)


# ------------------------------------------------------------------------------------- lab 13 and the doctor
def _lab_namespace() -> dict:
    """The lab's setup cell, read-only set-up cells and reference answers, executed (no tests or training)."""
    nb = build.read_notebook(LAB)
    skip = {"doctor-demo"} | {f"{x}-symptoms" for x in LETTERS}
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):  # the setup cell prints the environment line
        for cell in nb.cells:
            gid = C.grade_id(cell)
            if cell.cell_type == "code" and not C.is_graded(cell) and gid not in skip:
                exec(compile(cell.source, f"lab13:{gid}", "exec"), namespace)  # noqa: S102 (our own source)
    return namespace


@pytest.fixture(scope="module")
def lab() -> dict:
    return _lab_namespace()


def test_lab_names_one_bug_of_a_different_kind_per_setup(lab):
    names = [lab[f"BUG_{x.upper()}"] for x in LETTERS]
    assert len(LETTERS) >= 8 and len(set(names)) == len(names)          # every set-up a different kind
    assert set(names) <= set(lab["BUGS"]) and len(lab["BUGS"]) > len(names)   # not a matching by elimination
    assert len(set(lab["BUGS"])) == len(lab["BUGS"])


def _reports(lab: dict, kind: str) -> dict:
    """The doctor's report on every ``kind`` ("broken" or "fixed") set-up of the lab, by its bug's name."""
    from dlcourse.diagnose import doctor

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {lab[f"BUG_{x.upper()}"]: doctor(**lab[f"{kind}_{x}"]().doctor_args(), progress=False)
                for x in LETTERS}
    finally:
        torch.set_num_threads(before)


def _flagged(report) -> list[str]:
    return sorted({finding.check for finding in report.flagged})


# Two classes, so that pytest-xdist (--dist loadscope) can run the broken and fixed set-ups on two workers.
class TestDoctorOnBrokenSetups:
    def test_doctor_flags_at_least_six_broken_setups_on_its_own(self, lab, record_property):
        flags = {bug: _flagged(report) for bug, report in _reports(lab, "broken").items()}
        record_property("doctor_flags", flags)
        print("\nplanted bug -> doctor checks that flag it")
        for bug, checks in flags.items():
            print(f"  {bug:32s} {', '.join(checks) or '(not flagged)'}")
        assert sum(bool(checks) for checks in flags.values()) >= 6, flags


class TestDoctorOnFixedSetups:
    def test_doctor_flags_none_of_the_fixed_setups(self, lab):
        false_alarms = {bug: [(f.check, f.severity, f.message) for f in report.flagged]
                        for bug, report in _reports(lab, "fixed").items()}
        assert all(not found for found in false_alarms.values()), false_alarms
