"""`dlcourse doctor FILE.py:FUNCTION`: the training doctor from the command line, on a learner's own script."""

from __future__ import annotations

import json
import textwrap

import pytest

from dlcourse.cli import load_setup, main

SCRIPT = textwrap.dedent("""
    import torch
    from torch import nn
    import dlcourse

    def make_setup(lr=0.1, softmax=False):
        torch.manual_seed(0)
        splits = dlcourse.data.digits(flatten=True)
        train_loader, val_loader, _ = splits.loaders(batch_size=64)
        layers = [nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)] + ([nn.Softmax(dim=1)] if softmax else [])
        return {"model": nn.Sequential(*layers), "train_loader": train_loader, "val_loader": val_loader,
                "optimizer_factory": lambda params: torch.optim.SGD(params, lr=lr)}

    def broken():
        return make_setup(softmax=True)

    def not_a_dict():
        return 42
""")


@pytest.fixture()
def script(tmp_path):
    path = tmp_path / "my_run.py"
    path.write_text(SCRIPT)
    return path


def test_doctor_command_flags_a_broken_setup_and_writes_json(script, tmp_path, capsys):
    out = tmp_path / "findings.json"
    code = main(["doctor", f"{script}:broken", "--checks", "initial_loss", "--json", str(out), "--quiet"])
    assert code == 1
    findings = json.loads(out.read_text())
    assert any(f["check"] == "initial_loss" and f["severity"] == "error" for f in findings)
    assert "initial_loss" in capsys.readouterr().out


def test_doctor_command_passes_a_healthy_setup(script):
    assert main(["doctor", f"{script}:make_setup", "--checks", "labels,initial_loss,eval_mode", "--quiet"]) == 0


@pytest.mark.parametrize("spec, message", [
    ("my_run.py", "FILE.py:FUNCTION"),
    ("{script}:missing", "no function 'missing'"),
    ("{script}:not_a_dict", "must return a dict"),
    ("{dir}/absent.py:f", "no such file"),
])
def test_doctor_command_bad_setup_says_what_to_do(script, spec, message, capsys):
    spec = spec.format(script=script, dir=script.parent)
    assert main(["doctor", spec]) == 2
    assert message in capsys.readouterr().err


def test_load_setup_accepts_a_module_path():
    with pytest.raises(ValueError, match="no function"):
        load_setup("dlcourse.data:no_such_function")
