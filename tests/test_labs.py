"""The grading self-check of every lab: the solution scores full marks, the generated lab scores 0, and plausible
wrong answers score exactly in between. Runs the real grader (a fresh kernel per submission, smoke scale)."""

import copy
import importlib.util
from pathlib import Path

import pytest

from dlcourse.grading import autograde, build
from dlcourse.grading import cells as C

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("lab*.py"))
MISTAKES_DIR = Path(__file__).parent / "lab_mistakes"


def _mistakes(stem: str) -> list:
    """The plausible wrong submissions kept in tests/lab_mistakes/<lab>.py (``MISTAKES``), or [] when none."""
    path = MISTAKES_DIR / f"{stem}.py"
    if not path.exists():
        return []
    spec = importlib.util.spec_from_file_location(f"lab_mistakes_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MISTAKES


WRONG = {source.stem: _mistakes(source.stem) for source in SOLUTIONS}


def _answered(solution, overrides=None):
    """The student lab with every answer taken from the solution, except ``overrides``."""
    lab = build.make_lab(solution)
    answers = {C.grade_id(c): c.source for c in solution.cells if C.is_solution(c)}
    answers.update(overrides or {})
    for cell in lab.cells:
        if C.is_solution(cell):
            cell.source = answers[C.grade_id(cell)]
    return lab


def _grade(solution, nb, tmp_path, name):
    path = tmp_path / f"{name}.ipynb"
    path.write_text(build.notebook_text(nb))
    return autograde.grade_notebook(solution, path, student=name, timeout=300)


def test_there_are_labs():
    assert SOLUTIONS


@pytest.mark.parametrize("source", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_scores_full_marks(source, tmp_path):
    solution = build.read_notebook(source)
    result = _grade(solution, copy.deepcopy(solution), tmp_path, "solution")
    assert result.status == "graded"
    failing = [(c.grade_id, c.status, c.message) for c in result.cells if c.status != "passed"]
    assert failing == [] and result.total == result.max_points > 0


@pytest.mark.parametrize("source", SOLUTIONS, ids=lambda p: p.stem)
def test_generated_lab_scores_zero_and_says_not_attempted(source, tmp_path):
    solution = build.read_notebook(source)
    result = _grade(solution, build.make_lab(solution), tmp_path, "blank")
    assert result.total == 0
    assert {c.status for c in result.cells} == {"not attempted"}


@pytest.mark.parametrize("source", SOLUTIONS, ids=lambda p: p.stem)
def test_each_lab_has_known_wrong_answers(source):
    assert len(WRONG.get(source.stem, [])) >= 2, f"add at least two plausible wrong submissions for {source.stem}"


@pytest.mark.parametrize("source, overrides, expected",
                         [(ROOT / "solutions" / f"{lab}.py", o, e) for lab, cases in WRONG.items() for o, e in cases],
                         ids=lambda v: "-".join(v) if isinstance(v, dict) else getattr(v, "stem", str(v)))
def test_wrong_answers_score_in_between(source, overrides, expected, tmp_path):
    solution = build.read_notebook(source)
    result = _grade(solution, _answered(solution, overrides), tmp_path, "wrong")
    assert 0 < expected < result.max_points
    assert result.total == expected, [(c.grade_id, c.status, c.message) for c in result.cells]

