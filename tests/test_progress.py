"""`dlcourse progress`: each lab's state from the learner's notebook, a cache that makes a second call instant, the
next step, and the table notebook 00 prints. One real self-check (the tiny fixture lab); the rest needs no kernel."""

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dlcourse import progress as P
from dlcourse.grading import build
from dlcourse.grading import cells as C
from dlcourse.grading.autograde import CellResult, Result

TINY = Path(__file__).parent / "fixtures" / "lab99_tiny.py"
ROOT = Path(__file__).resolve().parents[1]


def _with_answers(nb, answers):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if C.grade_id(cell) in answers:
            cell.source = answers[C.grade_id(cell)]
    return nb


@pytest.fixture()
def course(tmp_path, monkeypatch):
    """A course with two labs (copies of the tiny lab) and a learner's labs folder; a private cache."""
    monkeypatch.setenv("DLCOURSE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "course" / "solutions").mkdir(parents=True)
    for stem in ("lab98_first", "lab99_tiny"):
        shutil.copy(TINY, tmp_path / "course" / "solutions" / f"{stem}.py")
    (tmp_path / "mine" / "labs").mkdir(parents=True)
    blank = build.make_lab(build.read_notebook(TINY))
    return tmp_path / "course", tmp_path / "mine" / "labs", blank


def test_states_cache_and_next_step(course, monkeypatch):
    root, labs, blank = course
    (labs / "lab98_first.ipynb").write_text(build.notebook_text(blank))  # untouched: no kernel needed
    partial = _with_answers(blank, {"double-answer": "def double(x):\n    return 2 * x"})
    (labs / "lab99_tiny.ipynb").write_text(build.notebook_text(partial))
    rows = P.progress(labs, root, bar=False)
    assert [(r.lab, r.state) for r in rows] == [("lab98_first", P.NOT_STARTED), ("lab99_tiny", P.IN_PROGRESS)]
    tiny = rows[1]
    assert (tiny.points, tiny.max_points) == (2, 6) and tiny.todo == "square-tests: not attempted"
    assert P.next_step(rows).startswith("finish lab99_tiny.ipynb (square-tests: not attempted)")
    text = P.table(rows)
    assert "lab99_tiny" in text and "2/6" in text and "0/2 labs pass their visible tests" in text

    # The second call runs nothing: the verdict comes from the cache, keyed by the notebook's bytes.
    def no_kernel(*args, **kwargs):
        raise AssertionError("the cache should have answered")
    monkeypatch.setattr("dlcourse.grading.autograde.check", no_kernel)
    assert [(r.state, r.points) for r in P.progress(labs, root, bar=False)] == [(P.NOT_STARTED, None),
                                                                                 (P.IN_PROGRESS, 2)]


def test_passed_missing_unreadable_and_a_changed_notebook_is_checked_again(course, monkeypatch):
    root, labs, blank = course
    calls = []

    def fake_check(notebook, *, limits, root):
        calls.append(Path(notebook).name)
        return Result("me", "graded", [CellResult("double-tests", 2, 2, "passed")])
    monkeypatch.setattr("dlcourse.grading.autograde.check", fake_check)
    done = _with_answers(blank, {"double-answer": "def double(x):\n    return x + x"})
    (labs / "lab99_tiny.ipynb").write_text(build.notebook_text(done))
    rows = P.progress(labs, root, bar=False)
    assert [r.state for r in rows] == [P.MISSING, P.PASSED] and calls == ["lab99_tiny.ipynb"]
    assert P.next_step(rows).startswith("read notebook 98, then open lab98_first.ipynb")
    (labs / "lab98_first.ipynb").write_text("{ not json")
    (labs / "lab99_tiny.ipynb").write_text(build.notebook_text(_with_answers(done, {"square-answer": "x = 1"})))
    rows = P.progress(labs, root, bar=False)
    assert rows[0].state == P.UNREADABLE and "JSON" in rows[0].todo
    assert calls == ["lab99_tiny.ipynb", "lab99_tiny.ipynb"]  # new bytes, new check
    assert P.next_step(rows).startswith("finish lab98_first.ipynb")


def test_cli_on_the_course_labs_says_what_to_do_first(tmp_path):
    """The course as shipped (blank labs): every lab is not started, nothing runs, the first step is lab 01."""
    run = subprocess.run([sys.executable, "-m", "dlcourse.cli", "progress", str(ROOT / "labs")], capture_output=True,
                         text=True, cwd=tmp_path, env={**__import__("os").environ,
                                                       "DLCOURSE_CACHE_DIR": str(tmp_path)}, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count(P.NOT_STARTED) == len(list((ROOT / "solutions").glob("lab*.py")))
    assert "Next: read notebook 01, then open lab01_training_loop.ipynb" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "dlcourse.cli", "progress", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "is not a folder" in bad.stdout
