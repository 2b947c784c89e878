"""The catalogue of adversarial and broken submissions: each must get exactly its score, and the batch goes on.

All of them are graded in one batch (2 workers) against tests/fixtures/lab99_tiny.py: 6 points in all —
double-tests 2 (three equally weighted checks), square-tests 3 (checks weighted 1 and 2), halve-tests 1 (a plain
assert cell, which passes when it runs without error).
"""

import copy
import json
from pathlib import Path

import nbformat
import pytest

from dlcourse.grading import build
from dlcourse.grading import cells as C
from dlcourse.grading.batch import grade_batch
from dlcourse.grading.kernel import Limits

TINY = Path(__file__).parent / "fixtures" / "lab99_tiny.py"
SOLUTION = build.read_notebook(TINY)
LAB = build.make_lab(SOLUTION)
RIGHT = {"double-answer": "def double(x):\n    return 2 * x", "square-answer": "def square(x):\n    return x * x",
         "halve-answer": "def halve(x):\n    return x / 2"}
HIDDEN_LINES = ["double(torch.tensor([-3.0, -0.5]))", "torch.arange(-2.0, 3.0)", "halve(-1.0) == -0.5"]


def answered(**overrides):
    nb = copy.deepcopy(LAB)
    answers = {**RIGHT, **{k.replace("_", "-"): v for k, v in overrides.items()}}
    for cell in nb.cells:
        if C.is_solution(cell):
            cell.source = answers[C.grade_id(cell)]
    return nb


def extra_cell(nb, after: str, source: str, cell_type: str = "code"):
    nb = copy.deepcopy(nb)
    index = next(i for i, c in enumerate(nb.cells) if C.grade_id(c) == after)
    new = nbformat.v4.new_code_cell(source) if cell_type == "code" else nbformat.v4.new_markdown_cell(source)
    nb.cells.insert(index + 1, new)
    return nb


def text(nb) -> str:
    return build.notebook_text(nb)


WRONG_DOUBLE = "def double(x):\n    return x * 2 if bool((x > 0).all()) else x  # wrong for negatives"
IDENTITY_DOUBLE = "def double(x):\n    return x"


def catalogue(out_dir: Path) -> dict[str, tuple[object, float, str]]:
    """student -> (notebook or raw bytes, exact total, status prefix)."""
    c: dict[str, tuple[object, float, str]] = {}
    c["01-solution"] = (answered(), 6, "graded")
    c["02-blank-lab"] = (LAB, 0, "graded")
    c["03-hidden-test-catches-it"] = (answered(double_answer=WRONG_DOUBLE), 6 - 2 / 3, "graded")
    # editing a test cell to do nothing: restored from the source
    edited = answered(double_answer=IDENTITY_DOUBLE)
    next(x for x in edited.cells if C.grade_id(x) == "double-tests").source = "pass"
    c["04-edited-test-cell"] = (edited, 4 + 2 / 3, "graded")
    deleted = answered()
    deleted.cells = [x for x in deleted.cells if C.grade_id(x) != "square-tests"]
    c["05-deleted-test-cell"] = (deleted, 6, "graded")
    moved = answered()
    moved.cells = [x for x in moved.cells if not C.is_solution(x)] + [x for x in moved.cells if C.is_solution(x)]
    c["06-reordered-cells"] = (moved, 6, "graded")
    to_markdown = answered(double_answer=IDENTITY_DOUBLE)
    cell = next(x for x in to_markdown.cells if C.grade_id(x) == "double-tests")
    cell.cell_type = "markdown"
    cell.pop("outputs", None)
    cell.pop("execution_count", None)
    c["07-test-cell-turned-markdown"] = (to_markdown, 4 + 2 / 3, "graded")
    forged = answered(double_answer=IDENTITY_DOUBLE)
    fake = nbformat.v4.new_code_cell("pass")
    fake.metadata["nbgrader"] = {"grade": True, "grade_id": "bonus", "locked": True, "points": 100,
                                 "schema_version": 3, "solution": False}
    forged.cells.append(fake)
    c["08-forged-graded-cell"] = (forged, 4 + 2 / 3, "graded")
    c["09-patches-torch-allclose"] = (extra_cell(answered(double_answer=IDENTITY_DOUBLE), "setup",
                                                 "import torch\ntorch.allclose = lambda *a, **k: True\n"
                                                 "torch.equal = lambda *a, **k: True"), 4 + 2 / 3, "graded")
    c["10-patches-check-helpers"] = (extra_cell(answered(double_answer=IDENTITY_DOUBLE), "setup",
                                                "import dlcourse.grading.checks as K\n"
                                                "K.compare = lambda *a, **k: (True, '')\n"
                                                "_run = K._run\n"
                                                "def cheat(kind, name, actual, expected, spec, hint):\n"
                                                "    _run(kind, name, expected, expected, spec, hint)\n"
                                                "K._run = cheat"), 1, "graded")  # only the plain assert cell
    c["11-patches-builtins-and-prints-success"] = (
        extra_cell(answered(double_answer=IDENTITY_DOUBLE, halve_answer="def halve(x):\n    return x"), "setup",
                   "import builtins, numpy.testing\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n"
                   "numpy.testing.assert_allclose = lambda *a, **k: None\n"
                   "print('All tests passed! Score: 6/6')"), 3 + 2 / 3, "graded")
    c["12-sys-exit"] = (extra_cell(answered(), "setup", "import sys\nsys.exit('bye')"), 6, "graded")
    c["13-os-exit-kills-kernel"] = (answered(square_answer="import os\nos._exit(1)"), 2, "kernel died")
    c["14-segfault"] = (answered(square_answer="import ctypes\nctypes.string_at(0)"), 2, "kernel died")
    c["15-infinite-loop"] = (answered(square_answer="while True:\n    pass"), 2, "timeout")
    c["16-memory-bomb"] = (answered(square_answer="hog = [0] * 10**10\ndef square(x):\n    return x * x"), 3,
                           "graded")
    c["17-writes-into-output-folder"] = (
        extra_cell(answered(double_answer=IDENTITY_DOUBLE), "setup",
                   f"from pathlib import Path\nout = Path({str(out_dir)!r})\n"
                   "(out / 'grades.csv').write_text('student,total\\nmallory,999\\n')\n"
                   "(out / 'results').mkdir(exist_ok=True)\n"
                   "(out / 'results' / '99-victim.json').write_text('{}')\n"
                   "(out / 'planted.txt').write_text('hello')"), 4 + 2 / 3, "graded")
    c["18-error-in-hidden-test-path"] = (
        answered(double_answer="def double(x):\n    if (x < 0).any():\n        raise ValueError('no negatives')\n"
                               "    return 2 * x"), 4 + 2 / 3, "graded")
    c["19-invalid-json"] = (b"{ this is not json", 0, "invalid notebook")
    c["20-empty-file"] = (b"", 0, "invalid notebook")
    c["21-not-utf8"] = ("ünïcode".encode("latin-1") + b'{"cells": []}', 0, "invalid notebook")
    r_notebook = answered()
    r_notebook.metadata["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    c["22-r-notebook"] = (r_notebook, 0, "wrong language")
    c["23-odd name é ü"] = (answered(), 6, "graded")
    return c


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("adversarial")
    out = root / "out"
    subs = root / "submissions"
    expected = {}
    for student, (content, total, status) in catalogue(out).items():
        (subs / student).mkdir(parents=True)
        data = content if isinstance(content, bytes) else text(content).encode()
        (subs / student / "lab99_tiny.ipynb").write_bytes(data)
        expected[student] = (total, status)
    (subs / "24-no-notebook").mkdir()
    (subs / "24-no-notebook" / "notes.txt").write_text("forgot")
    expected["24-no-notebook"] = (0, "missing notebook")
    (subs / "25-two-notebooks").mkdir()
    for name in ("lab99_tiny.ipynb", "lab99_tiny (1).ipynb"):
        (subs / "25-two-notebooks" / name).write_text(text(answered()))
    expected["25-two-notebooks"] = (0, "ambiguous: 2 notebooks")
    bad_name = (b"26-latin1-\xe9").decode("utf-8", "surrogateescape")
    (subs / bad_name).mkdir()
    (subs / bad_name / "lab99_tiny.ipynb").write_text(text(answered()))
    expected["26-latin1-\ufffd"] = (6, "graded")
    limits = Limits(cell_timeout=8, submission_timeout=120, memory_mb=2048)
    results = grade_batch(TINY, subs, out, workers=2, limits=limits, progress=False)
    return {r.student: r for r in results}, expected, out


def test_catalogue_is_large_enough(batch):
    _, expected, _ = batch
    assert len(expected) >= 15


def test_every_submission_gets_its_exact_score_and_status(batch):
    results, expected, _ = batch
    assert set(results) == set(expected)
    for student, (total, status) in expected.items():
        result = results[student]
        assert result.total == pytest.approx(total, abs=1e-5), (student, result.total, result.status,
                                                                 [(c.grade_id, c.status, c.message)
                                                                  for c in result.cells])
        assert result.status.startswith(status), (student, result.status)
        assert result.max_points == 6


def test_partial_credit_is_per_weighted_check(batch):
    results, _, _ = batch
    double = results["03-hidden-test-catches-it"].cells[0]
    assert [(k.name, k.passed) for k in double.checks] == [
        ("double of a vector", True), ("double of negatives", False), ("graded at smoke scale", True)]
    assert double.points == pytest.approx(4 / 3) and double.status == "failed"


def test_statuses_explain_what_happened(batch):
    results, _, _ = batch
    assert results["02-blank-lab"].cells[0].status == "not attempted"
    assert [c.status for c in results["13-os-exit-kills-kernel"].cells] == ["passed", "not run", "not run"]
    assert results["15-infinite-loop"].status == "timeout: a cell ran longer than 8 s"
    memory = results["16-memory-bomb"].cells[1]
    assert memory.status == "failed" and "NameError" in memory.message


def test_feedback_never_shows_hidden_test_code(batch):
    results, _, out = batch
    for path in (out / "feedback").glob("*.html"):
        page = path.read_text(encoding="utf-8")
        for line in HIDDEN_LINES:
            assert line not in page, (path.name, line)
    page = next((out / "feedback").glob("18-error-in-hidden-test-path*.html")).read_text(encoding="utf-8")
    assert "ValueError: no negatives" in page and "Traceback" not in page


def test_output_folder_tampering_is_undone(batch):
    results, expected, out = batch
    rows = (out / "grades.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "student,double-tests,square-tests,halve-tests,total,max,status"
    assert len(rows) == 1 + len(expected) and "mallory" not in "".join(rows)
    assert not (out / "planted.txt").exists() and not (out / "results" / "99-victim.json").exists()
    log = (out / "grading.log").read_text(encoding="utf-8")
    assert "removed planted.txt (written by a submission, not the grader)" in log
    data = json.loads((out / "grades.json").read_text(encoding="utf-8"))
    assert {s["student"] for s in data["students"]} == set(expected)
