"""Each cell transformation of the lab format, on small inputs."""

import pytest

from dlcourse.grading import cells as C


def test_strip_solution_keeps_indentation_and_surroundings():
    source = "def f(x):\n    \"\"\"Doc.\"\"\"\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n    ### END SOLUTION\n"
    assert C.strip_solution(source) == (
        "def f(x):\n    \"\"\"Doc.\"\"\"\n    # YOUR CODE HERE\n    raise NotImplementedError()\n")


def test_strip_solution_handles_several_regions():
    source = "### BEGIN SOLUTION\na = 1\n### END SOLUTION\nb = 2\n  ### BEGIN SOLUTION\n  c = 3\n  ### END SOLUTION"
    assert C.strip_solution(source) == (
        "# YOUR CODE HERE\nraise NotImplementedError()\nb = 2\n  # YOUR CODE HERE\n  raise NotImplementedError()")


def test_strip_solution_without_markers_replaces_the_whole_cell():
    assert C.strip_solution("x = 42") == "# YOUR CODE HERE\nraise NotImplementedError()"
    assert C.strip_solution("The answer is 42.", "markdown") == "YOUR ANSWER HERE"
    assert C.strip_solution("Intro\n### BEGIN SOLUTION\n42\n### END SOLUTION", "markdown") == "Intro\nYOUR ANSWER HERE"


def test_remove_hidden_tests_keeps_visible_asserts_only():
    source = "assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(2) == 3\n### END HIDDEN TESTS\n"
    assert C.remove_hidden_tests(source) == "assert f(1) == 2\n"
    assert "f(2)" not in C.remove_hidden_tests(source)


def test_markers_must_stand_alone_on_their_line():
    source = "x = '### BEGIN SOLUTION'\n"
    assert C.strip_solution(source) == "# YOUR CODE HERE\nraise NotImplementedError()"  # no real marker
    assert not C.has_marker(source, C.BEGIN_SOLUTION)
    assert C.has_marker("   ### BEGIN SOLUTION   ", C.BEGIN_SOLUTION)


@pytest.mark.parametrize("source, fragment", [
    ("### BEGIN SOLUTION\na\n", "never closed"),
    ("a\n### END SOLUTION\n", "without a matching"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "inside the region"),
])
def test_unpaired_markers_raise(source, fragment):
    with pytest.raises(C.MarkerError, match=fragment):
        C.replace_region(source, C.BEGIN_SOLUTION, C.END_SOLUTION)


def test_metadata_accessors():
    graded = {"metadata": {"nbgrader": {"grade": True, "grade_id": "t", "locked": True, "points": 2,
                                        "schema_version": 3, "solution": False}, "tags": ["raises-exception"]}}
    answer = {"metadata": {"nbgrader": {"grade": False, "grade_id": "a", "locked": False, "schema_version": 3,
                                        "solution": True}}}
    plain = {"metadata": {}}
    assert (C.grade_id(graded), C.is_graded(graded), C.is_locked(graded), C.points(graded)) == ("t", True, True, 2.0)
    assert (C.is_solution(answer), C.is_locked(answer), C.points(answer)) == (True, False, 0.0)
    assert (C.grade_id(plain), C.is_graded(plain), C.tags(plain)) == (None, False, [])
    assert C.tags(graded) == ["raises-exception"]
    assert C.nbgrader_meta({"metadata": {"nbgrader": "junk"}}) == {}
