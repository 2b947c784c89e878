"""Reading a class's answers without running anything: each student's answer cells, exactly as grading sees them.

Used by the similarity report and the rubric sheets. The rule is the grader's own (``autograde.assemble``): a
duplicated answer cell counts once (the first copy), a deleted one is the blank lab's starter.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from nbformat import NotebookNode

from . import cells as C
from .autograde import assemble, read_submission
from .submissions import discover


def read_answers(source: NotebookNode, submissions: Path | str, lab_name: str, ids: Iterable[str],
                 pattern: str | None = None) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Each student's answer (source text) to each answer cell in ``ids``, and the students left out with why (no
    notebook, an unreadable one)."""
    ids = set(ids)
    answers: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dlcourse-answers-") as tmp:
        for sub in discover(Path(submissions), lab_name, Path(tmp), pattern):
            if sub.path is None:
                skipped[sub.student] = sub.problem
                continue
            nb, problem = read_submission(sub.path)
            if nb is None:
                skipped[sub.student] = problem
                continue
            answers[sub.student] = {C.grade_id(c): c.source for c in assemble(source, nb).cells
                                    if C.grade_id(c) in ids}
    return answers, skipped
