"""The learner's workspace (dlcourse.workspace, `dlcourse lab`): filled from the course, never overwriting the
learner's work, updated after a `git pull`, and usable by `dlcourse check`."""

import hashlib
import json
import os
from pathlib import Path

import pytest

from dlcourse import cli
from dlcourse.grading.autograde import lab_source_for
from dlcourse.workspace import MANIFEST, course_files, describe, fill, read_manifest

ROOT = Path(__file__).resolve().parents[1]


def _course(tmp_path: Path) -> Path:
    root = tmp_path / "course"
    for rel, text in {"notebooks/00_welcome.ipynb": "welcome v1", "notebooks/01_loop.ipynb": "loop v1",
                      "labs/lab01_loop.ipynb": "lab v1"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "notebooks" / "01_loop.py").write_text("# the jupytext source: never copied")
    return root


def test_first_fill_copies_every_notebook_and_lab_and_records_their_hashes(tmp_path):
    root = _course(tmp_path)
    report = fill(root)
    ws = root / "workspace"
    assert report.copied == ["notebooks/00_welcome.ipynb", "notebooks/01_loop.ipynb", "labs/lab01_loop.ipynb"]
    assert (ws / "labs" / "lab01_loop.ipynb").read_text() == "lab v1"
    assert not (ws / "notebooks" / "01_loop.py").exists()
    manifest = read_manifest(ws)
    assert set(manifest) == set(report.copied)
    assert manifest["labs/lab01_loop.ipynb"]["sha256"] == hashlib.sha256(b"lab v1").hexdigest()
    assert describe(report, "workspace") == [
        "copied 3 notebook(s) into workspace/: notebooks/00_welcome.ipynb, notebooks/01_loop.ipynb, "
        "labs/lab01_loop.ipynb"]
    # a second run changes nothing and says nothing
    before = (ws / MANIFEST).stat().st_mtime_ns
    again = fill(root)
    assert (again.copied, again.updated, again.kept) == ([], [], [])
    assert describe(again) == [] and (ws / MANIFEST).stat().st_mtime_ns == before


def test_a_course_update_adds_new_files_updates_unsaved_copies_and_keeps_the_learners_work(tmp_path):
    root = _course(tmp_path)
    ws = root / "workspace"
    fill(root)
    (ws / "notebooks" / "01_loop.ipynb").write_text("loop v1 + my notes")  # the learner saved this one
    # `git pull`: every course file changes and a notebook is new
    (root / "notebooks" / "00_welcome.ipynb").write_text("welcome v2")
    (root / "notebooks" / "01_loop.ipynb").write_text("loop v2")
    (root / "labs" / "lab01_loop.ipynb").write_text("lab v2")
    (root / "notebooks" / "02_more.ipynb").write_text("more v1")
    report = fill(root)
    assert report.copied == ["notebooks/02_more.ipynb"]
    assert report.updated == ["notebooks/00_welcome.ipynb", "labs/lab01_loop.ipynb"]
    assert report.kept == ["notebooks/01_loop.ipynb"]
    assert (ws / "notebooks" / "01_loop.ipynb").read_text() == "loop v1 + my notes"
    assert (ws / "notebooks" / "00_welcome.ipynb").read_text() == "welcome v2"
    lines = describe(report, "workspace")
    assert ("kept your workspace/notebooks/01_loop.ipynb: the course has a newer version. To take it, rename yours "
            "(e.g. `mv workspace/notebooks/01_loop.ipynb workspace/notebooks/01_loop-mine.ipynb`) and run `make lab` "
            "again.") in lines
    # it keeps saying so until the learner acts; renaming theirs brings the new version in and keeps theirs
    assert fill(root).kept == ["notebooks/01_loop.ipynb"]
    (ws / "notebooks" / "01_loop.ipynb").rename(ws / "notebooks" / "01_loop-mine.ipynb")
    report = fill(root)
    assert report.copied == ["notebooks/01_loop.ipynb"] and report.kept == []
    assert (ws / "notebooks" / "01_loop.ipynb").read_text() == "loop v2"
    assert (ws / "notebooks" / "01_loop-mine.ipynb").read_text() == "loop v1 + my notes"
    assert fill(root).kept == []


def test_without_a_manifest_identical_copies_are_adopted_and_others_left_alone(tmp_path):
    root = _course(tmp_path)
    ws = root / "workspace"
    fill(root)
    (ws / "labs" / "lab01_loop.ipynb").write_text("my answers")
    (ws / MANIFEST).unlink()
    report = fill(root)
    assert (report.copied, report.updated, report.kept) == ([], [], [])
    assert set(read_manifest(ws)) == {"notebooks/00_welcome.ipynb", "notebooks/01_loop.ipynb"}
    (root / "labs" / "lab01_loop.ipynb").write_text("lab v2")
    assert fill(root).kept == [] and (ws / "labs" / "lab01_loop.ipynb").read_text() == "my answers"
    (ws / MANIFEST).write_text("not json")
    assert read_manifest(ws) == {}


def test_the_real_course_fills_a_workspace_with_only_ipynb_files(tmp_path):
    report = fill(ROOT, tmp_path / "ws")
    assert report.copied == course_files(ROOT)
    assert any(r.startswith("labs/lab01_") for r in report.copied)
    assert any(r.startswith("notebooks/00_") for r in report.copied)
    assert {p.suffix for p in (tmp_path / "ws").rglob("*") if p.is_file()} == {".ipynb", ".json"}
    assert json.loads((tmp_path / "ws" / MANIFEST).read_text())["version"] == 1


def test_dlcourse_check_finds_the_lab_of_a_workspace_copy(tmp_path):
    fill(ROOT, tmp_path / "ws")  # outside the course folder: found through the installed package's course
    lab = lab_source_for(tmp_path / "ws" / "labs" / "lab01_training_loop.ipynb")
    assert any(c.metadata.get("nbgrader", {}).get("grade") for c in lab.cells)
    renamed = tmp_path / "ws" / "labs" / "lab01_training_loop-mine.ipynb"  # a learner's renamed copy
    (tmp_path / "ws" / "labs" / "lab01_training_loop.ipynb").rename(renamed)
    assert lab_source_for(renamed).cells[0].source == lab.cells[0].source


def test_dlcourse_lab_fills_the_workspace_and_starts_jupyterlab_there(tmp_path, monkeypatch, capsys):
    started = {}

    def fake_execve(path, argv, env):
        started.update(path=path, argv=argv, env=env)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", fake_execve)
    monkeypatch.chdir(ROOT)
    ws = tmp_path / "ws"
    with pytest.raises(SystemExit):
        cli.main(["lab", "--workspace", str(ws), "--no-browser", "--port", "8899"])
    out = capsys.readouterr().out
    assert f"copied {len(course_files(ROOT))} notebook(s) into {ws}/" in out
    assert f"--ServerApp.root_dir={ws}" in started["argv"]
    assert "--ServerApp.jpserver_extensions=jupyterlab_jupytext=False" in started["argv"]
    assert "--port=8899" in started["argv"] and "--no-browser" in started["argv"]
    # a JupyterLab terminal finds this environment's `dlcourse` first
    assert started["env"]["PATH"].split(os.pathsep)[0] == str(Path(cli.sys.executable).parent)
    with pytest.raises(SystemExit):
        cli.main(["lab", "--workspace", str(ws), "--no-browser"])
    assert "copied" not in capsys.readouterr().out
