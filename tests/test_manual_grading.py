"""Manually graded answers: the autograder leaves them to a person, the rubric sheets go out, the marks come back.

One small class is graded once (module fixture) on a copy of the tiny fixture lab with two manually graded answers
added (a markdown one, 2 points, and a code one, 3 points): ada answers everything, bo hands in the blank lab, cy
answers with text that would be a formula in a spreadsheet and a script in a page, dee submits nothing. Every
other test works on copies of that output folder, without a kernel, except the re-grade at the end (one student).
"""

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from dlcourse.cli import main
from dlcourse.grading import build
from dlcourse.grading import cells as C
from dlcourse.grading import manual as M
from dlcourse.grading import rubric as R
from dlcourse.grading.autograde import MARKED, NEEDS_MANUAL, NOT_ATTEMPTED, Result
from dlcourse.grading.export import ExportError, export
from dlcourse.grading.batch import grade_batch
from dlcourse.grading.kernel import Limits
from dlcourse.grading.lint import lint_notebook

TINY = Path(__file__).parent / "fixtures" / "lab99_tiny.py"
FAST = Limits(cell_timeout=60, submission_timeout=120, memory_mb=None)
MANUAL_CELLS = '''
# %% [markdown] nbgrader={"grade": false, "grade_id": "why-prompt", "locked": true, "schema_version": 3, "solution": false}
# Why is the gradient of `double` the same everywhere?

# %% [markdown] nbgrader={"grade": true, "grade_id": "why-double", "locked": false, "points": 2, "schema_version": 3, "solution": true}
# Doubling is linear: d(2x)/dx = 2 for every x.

# %% nbgrader={"grade": true, "grade_id": "describe-code", "locked": false, "points": 3, "schema_version": 3, "solution": true}
def describe(x):
    ### BEGIN SOLUTION
    return f"{x} doubled is {double(x)}"
    ### END SOLUTION
'''
RIGHT = {"double-answer": "def double(x):\n    return 2 * x", "square-answer": "def square(x):\n    return x * x",
         "halve-answer": "def halve(x):\n    return x / 2"}
CY_WHY = "=HYPERLINK(\"http://x\") <script>alert(1)</script> because it is a straight line"
CY_CODE = "def describe(x):\n    return '</pre>' + str(double(x))"
IDS = ["double-tests", "square-tests", "halve-tests", "why-double", "describe-code"]


def _notebook(lab: Path, answers: dict[str, str]) -> str:
    nb = build.make_lab(build.read_notebook(lab))
    for cell in nb.cells:
        if C.grade_id(cell) in answers:
            cell.source = answers[C.grade_id(cell)]
    return build.notebook_text(nb)


@pytest.fixture(scope="module")
def graded(tmp_path_factory, sandbox):
    """(lab, submissions, out): the class graded once; tests copy ``out`` before changing it."""
    root = tmp_path_factory.mktemp("manual")
    lab = root / "lab99_tiny.py"
    lab.write_text(TINY.read_text() + MANUAL_CELLS)
    subs = root / "subs"
    students = {"ada": {**RIGHT, "why-double": "It is linear, so the slope is 2.",
                        "describe-code": "def describe(x):\n    return 'twice ' + str(x)"},
                "bo": {},
                "cy": {"double-answer": RIGHT["double-answer"], "why-double": CY_WHY, "describe-code": CY_CODE}}
    for student, answers in students.items():
        (subs / student).mkdir(parents=True)
        (subs / student / "lab99_tiny.ipynb").write_text(_notebook(lab, answers))
    (subs / "dee").mkdir()
    out = root / "out"
    grade_batch(lab, subs, out, workers=2, limits=FAST, sandbox=sandbox, progress=False)
    return lab, subs, out


@pytest.fixture
def work(graded, tmp_path):
    """A fresh copy of the graded output folder."""
    lab, subs, out = graded
    shutil.copytree(out, tmp_path / "out")
    return lab, subs, tmp_path / "out"


def _results(out: Path) -> dict[str, Result]:
    return {p.stem: Result.from_dict(json.loads(p.read_text())) for p in sorted((out / "results").glob("*.json"))}


def _cell(result: Result, gid: str):
    return next(c for c in result.cells if c.grade_id == gid)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _sheet(path: Path, rows: list[list[str]], header=("question", "student", "answer", "max_points", "points",
                                                          "comment")) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([list(header), *rows])
    path.write_text(buffer.getvalue())
    return path


def test_lint_accepts_manual_answers_and_nbgrader_metadata_is_kept(graded):
    lab, _, _ = graded
    assert [(p.cell, p.message[:27]) for p in lint_notebook(lab)] == [(8, "graded cell has no check ca")]
    released = build.make_lab(build.read_notebook(lab))
    why, code = (next(c for c in released.cells if C.grade_id(c) == g) for g in ("why-double", "describe-code"))
    assert (why.source, C.is_manual(why), C.is_locked(why)) == ("YOUR ANSWER HERE", True, False)
    assert code.source == "def describe(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"


def test_autograder_leaves_manual_answers_to_a_person(graded):
    _, _, out = graded
    results = _results(out)
    assert {k: (r.total, r.max_points, r.manual_pending, r.status) for k, r in results.items()} == {
        "ada": (6, 11, 5, "graded"), "bo": (0, 11, 0, "graded"), "cy": (2, 11, 5, "graded"),
        "dee": (0, 11, 0, "missing notebook: no .ipynb submitted")}
    assert [(c.grade_id, c.status, c.points) for c in results["ada"].cells][3:] == [
        ("why-double", NEEDS_MANUAL, 0), ("describe-code", NEEDS_MANUAL, 0)]
    assert [(c.status, c.message) for c in results["bo"].cells][3:] == [
        (NOT_ATTEMPTED, "no answer (the cell is as handed out): 0 points"),
        (NOT_ATTEMPTED, "no answer (the cell is as handed out): 0 points")]
    grades = json.loads((out / "grades.json").read_text())
    assert [s["manual_pending"] for s in grades["students"]] == [5, 0, 5, 0]


def test_rubric_export_writes_a_sheet_and_an_escaped_page_per_question(work):
    lab, subs, out = work
    sheets = R.export_rubric(lab, subs, out)
    assert [p.name for p in sheets] == ["why-double.csv", "describe-code.csv"]
    rows = list(csv.reader(io.StringIO(sheets[0].read_text())))
    assert rows == [list(M.COLUMNS),
                    ["why-double", "ada", "It is linear, so the slope is 2.", "2", "", ""],
                    ["why-double", "bo", "(blank)", "2", "0", "no answer"],
                    ["why-double", "cy", "'" + CY_WHY, "2", "", ""]]
    page = (out / "rubric" / "describe-code.html").read_text()
    assert "<pre>def describe(x):\n    return &#x27;&lt;/pre&gt;&#x27; + str(double(x))</pre>" in page
    why = (out / "rubric" / "why-double.html").read_text()
    assert "<script>" not in why and "&lt;script&gt;" in why
    assert "Why is the gradient of `double` the same everywhere?" in why  # the question, from the lab
    assert "<li>dee: missing notebook: no .ipynb submitted</li>" in why
    sheets[0].write_text(sheets[0].read_text() + "marks in progress\n")
    with pytest.raises(FileExistsError, match="may hold your marks"):
        R.export_rubric(lab, subs, out)
    assert sheets[0].read_text().endswith("marks in progress\n")


def test_bad_sheets_are_refused_with_every_problem_and_nothing_written(work, tmp_path):
    lab, _, out = work
    before = _snapshot(out)
    bad = _sheet(tmp_path / "bad.csv", [
        ["why-double", "ada", "", "2", "3", ""],           # above the maximum
        ["why-double", "zed", "", "2", "1", ""],           # unknown student
        ["why-double", "dee", "", "2", "1", ""],           # no submission
        ["why-double", "cy", "", "2", "two", ""],          # not a number
        ["nope", "ada", "", "2", "1", ""],                 # unknown question
        ["describe-code", "ada", "", "3", "", "great"],    # a comment without points
        ["describe-code", "cy", "", "3", "1", "ok"],
        ["describe-code", "cy", "", "3", "2", "ok"],       # marked twice, differently
        ["describe-code", "bo", "", "3", "nan", ""],
    ])
    with pytest.raises(M.MarksError) as info:
        M.merge_marks(lab, out, [bad])
    lines = str(info.value).splitlines()
    assert lines[0] == "8 problem(s) in the rubric sheets; nothing was merged:"
    assert [line.split(": ", 1)[1] for line in lines[1:]] == [
        "ada, why-double: 3 points is outside 0..2",
        "unknown student 'zed': no result in the output folder (a typo, or a student not graded yet?)",
        "dee has no submission to mark for why-double (missing notebook: no .ipynb submitted)",
        "cy, why-double: points 'two' is not a number",
        "unknown question 'nope' (manually graded here: why-double, describe-code)",
        "ada, describe-code: a comment but no points; give the points too",
        f"cy, describe-code: marked again differently (first at {bad}:8)",
        "bo, describe-code: points 'nan' is not a number"]
    assert lines[1].startswith(f"  {bad}:2: ")
    wrong_header = _sheet(tmp_path / "header.csv", [["why-double", "ada", "1"]], header=("question", "who", "pts"))
    with pytest.raises(M.MarksError, match=r"no column\(s\) \['student', 'points', 'comment'\]"):
        M.merge_marks(lab, out, [wrong_header])
    other = tmp_path / "lab98_other.py"  # another lab with the same questions: not what this folder was graded with
    other.write_text(lab.read_text())
    with pytest.raises(M.MarksError, match="holds the grades of lab99_tiny, not lab98_other"):
        M.merge_marks(other, out, [_sheet(tmp_path / "ok.csv", [["why-double", "ada", "", "2", "1", ""]])])
    assert _snapshot(out) == before
    (out / M.MARKS_FILE).write_text('{"lab": "lab99_tiny", "marks": {"why-double": {"ada": {"points": "x"}}}}')
    for attempt in (lambda: M.merge_marks(lab, out, [tmp_path / "ok.csv"]),
                    lambda: grade_batch(lab, tmp_path / "none", out, sandbox="none", progress=False)):
        with pytest.raises(M.MarksError, match="is not a marks file this version can read"):
            attempt()  # a damaged record of marks stops both before anything is written
    assert _snapshot(out) == {**before, M.MARKS_FILE: (out / M.MARKS_FILE).read_bytes()}


def test_marks_merge_into_results_feedback_and_gradebook_and_survive_a_regrade(work, tmp_path, sandbox):
    lab, subs, out = work
    with pytest.raises(ExportError, match=r"2 student\(s\) have manually graded answers without a mark \(ada, cy\)"):
        export(out, "csv")  # unmarked answers would reach the LMS as 0
    assert export(out, "csv", allow_pending=True).decode().splitlines()[1] == "ada,6,11"
    first = _sheet(tmp_path / "why.csv", [["why-double", "ada", "", "2", "1,5", "Right idea; say why."],
                                          ["why-double", "cy", "", "2", "2", "<b>good</b>"],
                                          ["why-double", "bo", "(blank)", "2", "", ""]])
    assert M.merge_marks(lab, out, [first]) == {"why-double": 2}
    results = _results(out)
    assert (_cell(results["ada"], "why-double").points, _cell(results["ada"], "why-double").status) == (1.5, MARKED)
    assert {k: (r.total, r.manual_pending) for k, r in results.items()} == {
        "ada": (7.5, 3), "bo": (0, 0), "cy": (4, 3), "dee": (0, 0)}
    assert _cell(results["bo"], "why-double").status == NOT_ATTEMPTED  # an empty row is not a mark
    page = (out / "feedback" / "ada.html").read_text()
    assert "Right idea; say why." in page and "7.5 / 11" in page
    assert "&lt;b&gt;good&lt;/b&gt;" in (out / "feedback" / "cy.html").read_text()
    rows = list(csv.reader(io.StringIO((out / "grades.csv").read_text())))
    assert rows[1][:1 + len(IDS)] == ["ada", "2", "3", "1", "1.5", ""]  # a pending answer is an empty cell
    assert "manual marks merged from" in (out / "grading.log").read_text()

    second = _sheet(tmp_path / "code.csv", [["describe-code", "ada", "", "3", "3", ""]])
    assert main(["rubric", "merge", str(lab), str(second), "--out", str(out)]) == 0
    results = _results(out)
    assert (results["ada"].total, results["ada"].manual_pending) == (10.5, 0)  # the first merge's mark stays
    marks = json.loads((out / M.MARKS_FILE).read_text())["marks"]
    assert marks["why-double"]["ada"] == {"points": 1.5, "comment": "Right idea; say why."}

    (out / "results" / "ada.json").unlink()  # grade ada again: her marks come back from the marks file
    grade_batch(lab, subs, out, workers=1, limits=FAST, sandbox=sandbox, progress=False)
    again = _results(out)["ada"]
    assert (again.total, _cell(again, "why-double").message) == (10.5, "Right idea; say why.")


def test_cli_rubric_export_and_errors(work, tmp_path, capsys):
    lab, subs, out = work
    assert main(["rubric", "export", str(lab), str(subs), "--out", str(out)]) == 0
    assert "rubric/why-double.csv" in capsys.readouterr().out
    assert main(["rubric", "export", str(lab), str(subs), "--out", str(out)]) == 2
    assert "may hold your marks" in capsys.readouterr().err
    bad = _sheet(tmp_path / "bad.csv", [["why-double", "ada", "", "2", "5", ""]])
    assert main(["rubric", "merge", str(lab), str(bad), "--out", str(out)]) == 2
    assert "5 points is outside 0..2" in capsys.readouterr().err
    assert main(["rubric", "merge", str(TINY), str(bad), "--out", str(out)]) == 2
    assert "has no manually graded answers" in capsys.readouterr().err
