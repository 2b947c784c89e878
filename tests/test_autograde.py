"""The autograder on a tiny lab: restoring cells, scoring, statuses and the gradebook, one batch for speed."""

import copy
import csv
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dlcourse.grading import autograde, build
from dlcourse.grading import cells as C

TINY = Path(__file__).parent / "fixtures" / "lab99_tiny.py"


def _cell(nb, gid):
    return next(c for c in nb.cells if C.grade_id(c) == gid)


def _answer(nb, gid, source):
    nb = copy.deepcopy(nb)
    _cell(nb, gid).source = source
    return nb


def _submissions():
    """student -> notebook text (or raw text for broken files), with the exact total each must score (max 5)."""
    solution = build.read_notebook(TINY)
    lab = build.make_lab(solution)
    full = _answer(_answer(lab, "double-answer", "def double(x):\n    return 2 * x"),
                   "square-answer", "def square(x):\n    return x * x")
    subs = {}
    subs["solution"] = (build.notebook_text(full), 5)
    subs["blank"] = (build.notebook_text(lab), 0)
    # passes the visible test, fails the hidden one: partial credit
    subs["wrong-double"] = (build.notebook_text(_answer(full, "double-answer", "def double(x):\n    return x + 2")), 3)
    # only one exercise done
    subs["half"] = (build.notebook_text(_answer(lab, "square-answer", "def square(x):\n    return x ** 2")), 3)
    # edits a test cell to do nothing: restored from the source, so the blank answer still scores 0 there
    edited = _answer(lab, "double-tests", "pass")
    subs["edited-test"] = (build.notebook_text(edited), 0)
    # deletes a test cell: re-inserted
    deleted = copy.deepcopy(full)
    deleted.cells = [c for c in deleted.cells if C.grade_id(c) != "square-tests"]
    subs["deleted-test"] = (build.notebook_text(deleted), 5)
    # moves the answers below the tests: rebuilt in the source's order
    moved = copy.deepcopy(full)
    answers = [c for c in moved.cells if C.is_solution(c)]
    moved.cells = [c for c in moved.cells if not C.is_solution(c)] + answers
    subs["reordered"] = (build.notebook_text(moved), 5)
    # forges a graded cell with many points, and adds a crashing cell of its own
    forged = copy.deepcopy(lab)
    fake = nbformat.v4.new_code_cell("assert True")
    fake.metadata["nbgrader"] = {"grade": True, "grade_id": "bonus", "locked": True, "points": 100,
                                 "schema_version": 3, "solution": False}
    forged.cells.append(fake)
    forged.cells.insert(3, nbformat.v4.new_code_cell("1 / 0"))
    subs["forged"] = (build.notebook_text(_answer(forged, "square-answer", "def square(x):\n    return x * x")), 3)
    subs["invalid-json"] = ("{ this is not json", 0)
    subs["empty-file"] = ("", 0)
    return subs


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    subs = root / "submissions"
    expected = {}
    for student, (text, total) in _submissions().items():
        (subs / student).mkdir(parents=True)
        (subs / student / "lab99_tiny.ipynb").write_text(text)
        expected[student] = total
    (subs / "no-notebook").mkdir()
    (subs / "no-notebook" / "notes.txt").write_text("forgot to upload")
    expected["no-notebook"] = 0
    (subs / "two-notebooks").mkdir()
    for name in ("lab99_tiny.ipynb", "lab99_tiny (1).ipynb"):
        (subs / "two-notebooks" / name).write_text(_submissions()["solution"][0])
    expected["two-notebooks"] = 0
    results = autograde.grade_folder(TINY, subs, root / "out", timeout=60, progress=False)
    return {r.student: r for r in results}, expected, root / "out"


def test_every_submission_gets_its_exact_score(graded):
    results, expected, _ = graded
    assert {s: r.total for s, r in results.items()} == expected
    assert all(r.max_points == 5 for r in results.values())


def test_cell_verdicts_and_messages(graded):
    results, _, _ = graded
    assert [c.status for c in results["solution"].cells] == ["passed", "passed"]
    assert [c.status for c in results["blank"].cells] == ["not attempted", "not attempted"]
    double = results["wrong-double"].cells[0]
    assert (double.status, double.message) == ("failed", "AssertionError: double(-3) should be -6")
    assert [c.grade_id for c in results["forged"].cells] == ["double-tests", "square-tests"]


def test_broken_submissions_get_a_clear_status(graded):
    results, _, _ = graded
    assert results["invalid-json"].status.startswith("invalid notebook")
    assert results["empty-file"].status.startswith("invalid notebook")
    assert results["no-notebook"].status.startswith("missing notebook")
    assert results["two-notebooks"].status.startswith("ambiguous: 2 notebooks")
    assert results["solution"].status == "graded"


def test_gradebook_csv_has_one_row_per_student(graded):
    results, expected, out = graded
    with (out / "grades.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["student"] for r in rows] == sorted(expected)
    assert list(rows[0]) == ["student", "double-tests", "square-tests", "total", "max", "status"]
    by_student = {r["student"]: r for r in rows}
    assert by_student["wrong-double"]["double-tests"] == "0" and by_student["wrong-double"]["square-tests"] == "3"
    assert {s: float(r["total"]) for s, r in by_student.items()} == expected


def test_a_cell_that_never_finishes_costs_only_what_was_not_graded():
    solution = build.read_notebook(TINY)
    lab = build.make_lab(solution)
    stuck = _answer(_answer(lab, "double-answer", "def double(x):\n    return 2 * x"),
                    "square-answer", "import time\ntime.sleep(60)")
    executed, stopped = autograde.execute(autograde.assemble(solution, stuck), timeout=3)
    assert stopped.startswith("timeout")
    cells = autograde.score(executed, solution, stopped)
    assert [(c.status, c.points) for c in cells] == [("passed", 2.0), ("not run", 0.0)]


def test_check_uses_the_visible_tests_of_the_pristine_lab(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "lab99_tiny.py").write_text(TINY.read_text())
    lab = build.make_lab(build.read_notebook(TINY))
    mine = _answer(lab, "double-answer", "def double(x):\n    return x + 2")  # passes the visible test only
    _cell(mine, "square-tests").source = "pass"  # tampering with a visible test does not help
    path = tmp_path / "work" / "lab99_tiny.ipynb"
    path.parent.mkdir()
    path.write_text(build.notebook_text(mine))
    result = autograde.check(path, root=tmp_path)
    assert [(c.grade_id, c.status) for c in result.cells] == [("double-tests", "passed"),
                                                              ("square-tests", "not attempted")]


def test_check_without_a_course_says_where_it_looked(tmp_path):
    path = tmp_path / "lab42_unknown.ipynb"
    path.write_text("{}")
    with pytest.raises(FileNotFoundError, match="solutions/lab42_"):
        autograde.lab_source_for(path, root=tmp_path)


def test_cli_grade_writes_the_gradebook_and_check_reports(tmp_path):
    lab = build.make_lab(build.read_notebook(TINY))
    (tmp_path / "subs" / "ada").mkdir(parents=True)
    (tmp_path / "subs" / "ada" / "lab99_tiny.ipynb").write_text(build.notebook_text(lab))
    dlcourse = str(Path(sys.executable).parent / "dlcourse")
    run = subprocess.run([dlcourse, "grade", str(TINY), str(tmp_path / "subs"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "grades.csv").read_text().splitlines()[1] == "ada,0,0,0,5,graded"
    missing = subprocess.run([dlcourse, "grade", str(TINY), str(tmp_path / "nowhere"), "--out", str(tmp_path)],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
