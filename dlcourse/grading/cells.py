"""The lab cell format: nbgrader schema-v3 metadata, solution and hidden-test markers, and the transformations on them.

A lab source (``solutions/labNN_topic.py``) is a Jupytext notebook whose cells carry ``nbgrader`` metadata:
answer cells (``solution: true``) hold the answer between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
test cells (``grade: true`` with ``points``) hold visible asserts and, between ``### BEGIN HIDDEN TESTS`` and
``### END HIDDEN TESTS``, tests the learner never sees. A cell that is both (``solution: true, grade: true`` with
``points``) is nbgrader's manually graded answer: free text (markdown) or code that a person marks, not a test.
These functions are pure: source text in, source text out.
"""

from __future__ import annotations

from typing import Any

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = "YOUR ANSWER HERE"

#: Cell tags a lab may use. ``solution``: the cell exists only in the solution; ``task``: a markdown cell meant for
#: the student version (the tag is dropped there); the others are read by nbval and nbclient.
KNOWN_TAGS = frozenset({"solution", "task", "raises-exception", "nbval-ignore-output", "nbval-skip", "skip-execution"})


class MarkerError(ValueError):
    """Solution or hidden-test markers that do not pair up."""


def nbgrader_meta(cell: Any) -> dict:
    """The cell's ``nbgrader`` metadata dictionary (empty when it has none)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def grade_id(cell: Any) -> str | None:
    return nbgrader_meta(cell).get("grade_id")


def is_solution(cell: Any) -> bool:
    return bool(nbgrader_meta(cell).get("solution", False))


def is_graded(cell: Any) -> bool:
    return bool(nbgrader_meta(cell).get("grade", False))


def is_manual(cell: Any) -> bool:
    """A manually graded answer: an answer cell with points, marked by a person (see ``manual``)."""
    return is_graded(cell) and is_solution(cell)


def is_test(cell: Any) -> bool:
    """An autograded test cell: graded, not an answer."""
    return is_graded(cell) and not is_solution(cell)


def is_locked(cell: Any) -> bool:
    """Locked cells (instructions, set-up, tests) are restored from the source before grading."""
    meta = nbgrader_meta(cell)
    return bool(meta.get("locked", False)) or bool(meta.get("grade", False)) and not meta.get("solution", False)


def points(cell: Any) -> float:
    return float(nbgrader_meta(cell).get("points", 0) or 0)


def tags(cell: Any) -> list[str]:
    value = cell.get("metadata", {}).get("tags", [])
    return list(value) if isinstance(value, list) else []


def replace_region(source: str, begin: str, end: str, replacement: tuple[str, ...] = ()) -> str:
    """Replace every ``begin``…``end`` region (marker lines included) by ``replacement``, indented like ``begin``.

    Markers must stand alone on their line (surrounding whitespace allowed). Raises MarkerError when regions nest,
    an end has no begin, or a begin is never closed.
    """
    out: list[str] = []
    inside_since: int | None = None
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if stripped == begin:
            if inside_since is not None:
                raise MarkerError(f"line {number}: {begin!r} inside the region opened on line {inside_since}")
            inside_since = number
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + r for r in replacement)
        elif stripped == end:
            if inside_since is None:
                raise MarkerError(f"line {number}: {end!r} without a matching {begin!r}")
            inside_since = None
        elif inside_since is None:
            out.append(line)
    if inside_since is not None:
        raise MarkerError(f"line {inside_since}: {begin!r} is never closed by {end!r}")
    return "\n".join(out)


def has_marker(source: str, marker: str) -> bool:
    return any(line.strip() == marker for line in source.split("\n"))


def strip_solution(source: str, cell_type: str = "code") -> str:
    """The student version of an answer cell: each solution region becomes the stub.

    A cell without markers is replaced whole (as nbgrader does): code by the stub, markdown by "YOUR ANSWER HERE".
    """
    if cell_type == "markdown":
        return MARKDOWN_STUB if not has_marker(source, BEGIN_SOLUTION) else replace_region(
            source, BEGIN_SOLUTION, END_SOLUTION, (MARKDOWN_STUB,))
    if not has_marker(source, BEGIN_SOLUTION):
        return "\n".join(CODE_STUB)
    return replace_region(source, BEGIN_SOLUTION, END_SOLUTION, CODE_STUB)


def is_blank_answer(answer: str, source_cell: Any) -> bool:
    """The answer is still what the lab hands out for ``source_cell`` (whitespace aside): nothing was answered.

    ``source_cell`` is the solution's cell, or the student lab's (a code answer cell without markers: already blank).
    """
    source, kind = source_cell.get("source", ""), source_cell.get("cell_type", "code")
    words = answer.split()
    return words == strip_solution(source, kind).split() or (
        kind == "code" and not has_marker(source, BEGIN_SOLUTION) and words == source.split())


def remove_hidden_tests(source: str) -> str:
    """The visible part of a test cell: hidden-test regions removed (line for line as nbgrader does)."""
    return replace_region(source, BEGIN_HIDDEN, END_HIDDEN)
