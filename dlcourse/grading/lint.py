"""Lint for lab sources: rejects metadata that nbgrader or our grader would misread, before a student sees it.

Checked per cell: nbgrader metadata is a dict with known keys and schema_version 3; ``grade_id`` present, well
formed and unique; booleans are booleans; graded cells have positive points; test cells are locked code cells that
use check helpers (not bare asserts); answer cells (manually graded ones included: ``grade`` and ``solution``) are
unlocked and have paired markers; hidden tests only in test cells; tags are known; ``nbval-skip`` and
``skip-execution`` come together.
Checked per lab: at least one graded cell and at least one answer cell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import cells as C
from .build import read_notebook
from .checks import CHECK_FUNCTIONS

NBGRADER_KEYS = {"grade", "grade_id", "locked", "points", "schema_version", "solution", "task"}
REQUIRED_KEYS = {"grade", "grade_id", "locked", "schema_version", "solution"}
GRADE_ID = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Problem:
    path: str
    cell: int  # 1-based position in the notebook; 0 for the notebook as a whole
    message: str

    def __str__(self) -> str:
        where = f"cell {self.cell}" if self.cell else "notebook"
        return f"{self.path}: {where}: {self.message}"


def _cell_problems(cell, seen_ids: dict[str, int], index: int) -> list[str]:
    problems: list[str] = []
    cell_tags = C.tags(cell)
    unknown = sorted(set(cell_tags) - C.KNOWN_TAGS)
    if unknown:
        problems.append(f"unknown tag(s) {unknown}; known tags: {sorted(C.KNOWN_TAGS)}")
    if ("nbval-skip" in cell_tags) != ("skip-execution" in cell_tags):
        problems.append("tags 'nbval-skip' and 'skip-execution' must be used together")
    if "task" in cell_tags and cell.cell_type != "markdown":
        problems.append("tag 'task' is for markdown cells only (a lab-only cell is never executed in the solution)")
    if "solution" in cell_tags and "task" in cell_tags:
        problems.append("a cell cannot be tagged both 'solution' and 'task'")

    source = cell.get("source", "")
    raw = cell.get("metadata", {}).get("nbgrader")
    has_solution_markers = C.has_marker(source, C.BEGIN_SOLUTION) or C.has_marker(source, C.END_SOLUTION)
    has_hidden_markers = C.has_marker(source, C.BEGIN_HIDDEN) or C.has_marker(source, C.END_HIDDEN)
    if raw is None:
        if has_solution_markers:
            problems.append("solution markers in a cell without nbgrader metadata (add \"solution\": true)")
        if has_hidden_markers:
            problems.append("hidden-test markers in a cell without nbgrader metadata (make it a graded cell)")
        return problems
    if not isinstance(raw, dict):
        return problems + [f"nbgrader metadata must be a JSON object, not {type(raw).__name__}"]

    missing = sorted(REQUIRED_KEYS - raw.keys())
    if missing:
        problems.append(f"nbgrader metadata lacks {missing}")
    extra = sorted(raw.keys() - NBGRADER_KEYS)
    if extra:
        problems.append(f"unknown nbgrader key(s) {extra}")
    if raw.get("schema_version") != 3:
        problems.append(f"schema_version must be 3, not {raw.get('schema_version')!r}")
    for key in ("grade", "solution", "locked"):
        if key in raw and not isinstance(raw[key], bool):
            problems.append(f"{key!r} must be true or false, not {raw[key]!r}")
    if raw.get("task"):
        problems.append("nbgrader task cells (manually graded) are not supported by the autograder")

    gid = raw.get("grade_id")
    if not isinstance(gid, str) or not GRADE_ID.match(gid):
        problems.append(f"grade_id must be a non-empty string of letters, digits, '-' and '_', not {gid!r}")
    elif gid in seen_ids:
        problems.append(f"duplicate grade_id {gid!r} (first used in cell {seen_ids[gid]})")
    else:
        seen_ids[gid] = index

    graded, solution = raw.get("grade") is True, raw.get("solution") is True
    pts = raw.get("points")
    if graded:
        if isinstance(pts, bool) or not isinstance(pts, (int, float)) or pts <= 0:
            problems.append(f"graded cell needs \"points\" > 0, not {pts!r}")
    if graded and solution:  # a manually graded answer (free text or code): marked by a person, see manual.py
        if cell.cell_type not in ("code", "markdown"):
            problems.append("a manually graded answer must be a code or markdown cell")
        if "solution" in cell_tags:
            problems.append("a manually graded answer cannot be tagged 'solution' (it would never reach students)")
    elif graded:
        if cell.cell_type != "code":
            problems.append("test cells must be code cells (a markdown cell with points is a manually graded "
                            "answer: add \"solution\": true)")
        if raw.get("locked") is not True:
            problems.append("graded (test) cells must be locked")
        if "skip-execution" in cell_tags or "raises-exception" in cell_tags:
            problems.append("a graded cell must run and must not be expected to raise (drop its skip/raises tag)")
        if not any(f"{name}(" in source for name in CHECK_FUNCTIONS):
            problems.append("graded cell has no check call (check_close, check_equal, ...): plain asserts can be "
                            "faked by the student's code; see dlcourse/grading/checks.py")
    if not graded and pts not in (None, 0):
        problems.append("\"points\" on a cell that is not graded")
    if solution:
        if raw.get("locked") is True:
            problems.append("an answer cell cannot be locked")
        if cell.cell_type == "code" and not C.has_marker(source, C.BEGIN_SOLUTION):
            problems.append(f"answer cell has no {C.BEGIN_SOLUTION!r} … {C.END_SOLUTION!r} region")
    elif has_solution_markers:
        problems.append("solution markers in a cell that is not an answer cell (\"solution\": false)")
    if has_hidden_markers and not (graded and not solution):
        problems.append("hidden-test markers in a cell that is not a test cell")
    for begin, end in ((C.BEGIN_SOLUTION, C.END_SOLUTION), (C.BEGIN_HIDDEN, C.END_HIDDEN)):
        try:
            C.replace_region(source, begin, end)
        except C.MarkerError as exc:
            problems.append(str(exc))
    return problems


def lint_notebook(path: Path | str) -> list[Problem]:
    """All problems in one lab source; an empty list means the lab is well formed."""
    path = Path(path)
    try:
        nb = read_notebook(path)
    except ValueError as exc:
        return [Problem(str(path), 0, str(exc))]
    seen: dict[str, int] = {}
    problems = [Problem(str(path), i, msg) for i, cell in enumerate(nb.cells, start=1)
                for msg in _cell_problems(cell, seen, i)]
    if not any(C.is_graded(c) for c in nb.cells):
        problems.append(Problem(str(path), 0, "no graded cell: a lab needs at least one test cell with points"))
    if not any(C.is_solution(c) for c in nb.cells):
        problems.append(Problem(str(path), 0, "no answer cell (\"solution\": true): nothing for the student to do"))
    return problems


def lint_paths(paths: list[Path | str]) -> list[Problem]:
    """Lint files and folders (every ``lab*.py`` in a folder)."""
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("lab*.py")) if p.is_dir() else [p])
    return [problem for f in files for problem in lint_notebook(f)]
