"""The lab-metadata lint: the real labs pass, and each kind of malformed cell is reported."""

from pathlib import Path

import pytest

from dlcourse.grading.lint import lint_notebook, lint_paths

ROOT = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "fixtures" / "lab99_tiny.py"
GOOD_TEST = ('# %% nbgrader={"grade": true, "grade_id": "t", "locked": true, "points": 1, "schema_version": 3, '
             '"solution": false}\ncheck_equal("x is one", x, expected=1)\n')
GOOD_ANSWER = ('# %% nbgrader={"grade": false, "grade_id": "a", "locked": false, "schema_version": 3, '
               '"solution": true}\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n')


def lint_text(tmp_path, text):
    path = tmp_path / "lab00_x.py"
    path.write_text(text)
    return [p.message for p in lint_notebook(path)]


def test_every_lab_source_in_the_course_is_clean():
    labs = sorted((ROOT / "solutions").glob("lab*.py"))
    assert labs, "the course has no lab sources"
    assert [str(p) for p in lint_paths(labs)] == []


def test_the_tiny_fixture_is_clean_but_for_its_deliberate_plain_assert_cell(tmp_path):
    assert [(p.cell, p.message[:32]) for p in lint_notebook(TINY)] == [(8, "graded cell has no check call (c")]
    assert lint_text(tmp_path, GOOD_ANSWER + "\n" + GOOD_TEST) == []


@pytest.mark.parametrize("header, body, fragment", [
    ('nbgrader={"grade": true, "grade_id": "t2", "locked": true, "schema_version": 3, "solution": false}',
     "assert True", "needs \"points\" > 0"),
    ('nbgrader={"grade": true, "grade_id": "t2", "locked": true, "points": 0, "schema_version": 3, "solution": false}',
     "assert True", "needs \"points\" > 0"),
    ('nbgrader={"grade": true, "grade_id": "t2", "locked": true, "points": 1, "schema_version": 3, "solution": false}',
     "assert x == 1", "graded cell has no check call"),
    ('nbgrader={"grade": true, "grade_id": "t", "locked": true, "points": 1, "schema_version": 3, "solution": false}',
     "assert True", "duplicate grade_id 't'"),
    ('nbgrader={"grade": false, "grade_id": "x", "locked": true, "schema_version": 2, "solution": false}',
     "pass", "schema_version must be 3"),
    ('nbgrader={"grade": false, "grade_id": "x", "locked": "yes", "schema_version": 3, "solution": false}',
     "pass", "'locked' must be true or false"),
    ('nbgrader={"grade": false, "grade_id": "x", "schema_version": 3, "solution": false}', "pass", "lacks ['locked']"),
    ('nbgrader={"grade": false, "grade_id": "x", "locked": true, "schema_version": 3, "solution": false, "pts": 1}',
     "pass", "unknown nbgrader key(s) ['pts']"),
    ('nbgrader={"grade": false, "grade_id": "bad id!", "locked": true, "schema_version": 3, "solution": false}',
     "pass", "grade_id must be"),
    ('nbgrader={"grade": false, "grade_id": "x", "locked": true, "schema_version": 3, "solution": false} '
     'tags=["hidden"]', "pass", "unknown tag(s) ['hidden']"),
    ('nbgrader={"grade": false, "grade_id": "x", "locked": true, "schema_version": 3, "solution": false} '
     'tags=["nbval-skip"]', "pass", "must be used together"),
    ('nbgrader={"grade": false, "grade_id": "x", "locked": false, "schema_version": 3, "solution": true}',
     "x = 1", "has no '### BEGIN SOLUTION'"),
    ('nbgrader={"grade": false, "grade_id": "x", "locked": false, "schema_version": 3, "solution": true}',
     "### BEGIN SOLUTION\nx = 1", "never closed"),
    ('nbgrader={"grade": false, "grade_id": "x", "locked": true, "schema_version": 3, "solution": false}',
     "### BEGIN HIDDEN TESTS\nassert 1\n### END HIDDEN TESTS", "hidden-test markers in a cell that is not a test cell"),
    ('nbgrader={"grade": true, "grade_id": "x", "locked": false, "points": 1, "schema_version": 3, "solution": true}',
     "### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n### BEGIN HIDDEN TESTS\nx\n### END HIDDEN TESTS",
     "hidden-test markers in a cell that is not a test cell"),
    ('nbgrader={"grade": true, "grade_id": "x", "locked": false, "points": 1, "schema_version": 3, "solution": false}',
     "assert True", "must be locked"),
    ("", "### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "solution markers in a cell without nbgrader metadata"),
])
def test_malformed_cells_are_reported(tmp_path, header, body, fragment):
    messages = lint_text(tmp_path, GOOD_ANSWER + "\n" + GOOD_TEST + f"\n# %% {header}\n{body}\n")
    assert any(fragment in m for m in messages), messages


def test_a_lab_needs_tests_and_answers(tmp_path):
    assert any("no graded cell" in m for m in lint_text(tmp_path, GOOD_ANSWER))
    assert any("no answer cell" in m for m in lint_text(tmp_path, GOOD_TEST))


def test_unreadable_source_is_a_problem_not_a_crash(tmp_path):
    path = tmp_path / "lab00_bad.ipynb"
    path.write_text("{ not json")
    [problem] = lint_notebook(path)
    assert "not a readable notebook" in problem.message
