"""Manually graded answers: the instructor's marks and comments merged back into the graded output.

nbgrader's manually graded answer (``grade`` and ``solution`` with ``points``, free text or code) is not scored by
the autograder (``autograde.manual_verdict``): it is "needs manual grading" (0 of its points for now), or "not
attempted" with 0 points when the answer is still the blank lab's. So a student's total is always the points given
so far, and ``manual_pending`` in results/grades.json says how many points still await a mark.

The rubric sheets to fill come from ``rubric.export_rubric``. ``merge_marks`` reads filled sheets, checks every row
first (unknown question or student, no submission, a non-number, points out of range, two different marks for one
answer) and only when all are valid stores them in ``manual-marks.json`` and rewrites the results, feedback pages
and gradebook, every file staged first and then moved into place. The marks file is the record: grading a student
again (``dlcourse grade --force``) applies it again (``apply_marks``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from nbformat import NotebookNode

from . import cells as C
from . import gradebook
from .autograde import MARKED, NEEDS_MANUAL, NOT_ATTEMPTED, Result
from .build import read_notebook

MARKS_FILE = "manual-marks.json"
COLUMNS = ("question", "student", "answer", "max_points", "points", "comment")
MARKABLE = (NEEDS_MANUAL, MARKED, NOT_ATTEMPTED)  # a manual cell in these states has an answer to mark


class MarksError(ValueError):
    """Filled rubric sheets that cannot be merged; the message lists every problem. Nothing was written."""


@dataclass(frozen=True)
class ManualQuestion:
    grade_id: str
    points: float
    cell_type: str
    prompt: str     # the markdown cell before the answer (the question as students read it)
    reference: str  # the solution's answer
    blank: str      # the answer as handed out
    cell: NotebookNode


def manual_questions(source: NotebookNode) -> list[ManualQuestion]:
    """The lab's manually graded answer cells, in notebook order."""
    out, prompt = [], ""
    for cell in source.cells:
        if C.is_manual(cell):
            out.append(ManualQuestion(C.grade_id(cell), C.points(cell), cell.cell_type, prompt, cell.source,
                                      C.strip_solution(cell.source, cell.cell_type), cell))
        elif cell.cell_type == "markdown" and not C.is_solution(cell):
            prompt = cell.source
    return out


# -------------------------------------------------------------------------------------------------- merge
@dataclass(frozen=True)
class Mark:
    points: float
    comment: str


def load_marks(out: Path | str) -> dict[str, dict[str, Mark]]:
    """The marks merged so far: question → student → Mark (empty when none)."""
    path = Path(out) / MARKS_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {gid: {st: Mark(float(m["points"]), str(m.get("comment", ""))) for st, m in per.items()}
                for gid, per in data["marks"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MarksError(f"{path} is not a marks file this version can read ({type(exc).__name__}: {exc}); "
                         "restore it from a backup or delete it and merge the rubric sheets again") from None


def apply_marks(result: Result, marks: dict[str, dict[str, Mark]]) -> Result:
    """Put the instructor's marks into a graded result (in place; also returned). Cells not yet marked, and results
    without a markable answer (no submission), are left as they are."""
    for cell in result.cells:
        mark = marks.get(cell.grade_id, {}).get(result.student)
        if mark is not None and cell.status in MARKABLE:
            cell.points, cell.status, cell.message, cell.checks = mark.points, MARKED, mark.comment, []
    return result


def _number(text: str) -> float | None:
    try:
        value = float(text.strip().replace(",", ".") if text.count(",") == 1 and "." not in text else text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_sheets(sheets: list[Path | str], questions: dict[str, float],
                results: dict[str, Result]) -> dict[str, dict[str, Mark]]:
    """The marks in filled rubric sheets, every row checked against the lab and the graded results.

    Rows with empty points and comment are not marked yet and skipped. Raises MarksError listing every problem.
    """
    problems: list[str] = []
    marks: dict[str, dict[str, Mark]] = {}
    where: dict[tuple[str, str], str] = {}
    for sheet in map(Path, sheets):
        try:
            text = sheet.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark is not a column name
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{sheet}: cannot be read ({exc}); save it as UTF-8 CSV")
            continue
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in ("question", "student", "points", "comment") if c not in (reader.fieldnames or [])]
        if missing:
            problems.append(f"{sheet}: no column(s) {missing} (found {reader.fieldnames or 'none'}); keep the header "
                            f"row of the exported sheet: {','.join(COLUMNS)}")
            continue
        for row in reader:
            at = f"{sheet}:{reader.line_num}"
            gid, student = (row.get("question") or "").strip(), (row.get("student") or "").strip()
            raw, comment = (row.get("points") or "").strip(), (row.get("comment") or "").strip()
            if gid not in questions:
                problems.append(f"{at}: unknown question {gid!r} (manually graded here: {', '.join(questions)})")
                continue
            if student not in results:
                problems.append(f"{at}: unknown student {student!r}: no result in the output folder (a typo, or a "
                                "student not graded yet?)")
                continue
            if not raw:
                if comment:
                    problems.append(f"{at}: {student}, {gid}: a comment but no points; give the points too")
                continue
            cell = next((c for c in results[student].cells if c.grade_id == gid), None)
            if cell is None or cell.status not in MARKABLE:
                problems.append(f"{at}: {student} has no submission to mark for {gid} "
                                f"({results[student].status})")
                continue
            points = _number(raw)
            if points is None:
                problems.append(f"{at}: {student}, {gid}: points {raw!r} is not a number")
                continue
            if not 0 <= points <= questions[gid]:
                problems.append(f"{at}: {student}, {gid}: {points:g} points is outside 0..{questions[gid]:g}")
                continue
            mark, before = Mark(points, comment), marks.get(gid, {}).get(student)
            if before is not None and before != mark:
                problems.append(f"{at}: {student}, {gid}: marked again differently (first at {where[(gid, student)]})")
                continue
            marks.setdefault(gid, {})[student] = mark
            where[(gid, student)] = at
    if problems:
        raise MarksError(f"{len(problems)} problem(s) in the rubric sheets; nothing was merged:\n  "
                         + "\n  ".join(problems))
    return marks


def merge_marks(lab: Path | str, out: Path | str, sheets: list[Path | str]) -> dict[str, int]:
    """Merge filled rubric sheets into the graded output folder ``out``; return the marks stored per question.

    Marks merged earlier stay unless a sheet marks the same answer again (then the new mark wins). The results, the
    feedback pages and the gradebook (under the folder's late rule) are rewritten with the marks file and the log,
    all staged before any is moved into place.
    """
    lab, out = Path(lab), Path(out)
    source = read_notebook(lab)
    questions = {q.grade_id: q.points for q in manual_questions(source)}
    if not questions:
        raise ValueError(f"{lab} has no manually graded answers: nothing to merge")
    roster, stored = gradebook.read(out)
    if not stored:
        raise FileNotFoundError(f"no graded results in {out / 'results'}: run `dlcourse grade` into {out} first")
    if roster.lab != lab.stem:
        raise MarksError(f"{out} holds the grades of {roster.lab}, not {lab.stem}: give the lab it was graded with")
    new = read_sheets(sheets, questions, {r.student: r for r in stored.values()})
    marks = load_marks(out)
    for gid, per in new.items():
        marks.setdefault(gid, {}).update(per)
    files = {MARKS_FILE: json.dumps({"lab": lab.stem, "marks": {
        gid: {st: {"points": m.points, "comment": m.comment} for st, m in sorted(per.items())}
        for gid, per in sorted(marks.items())}}, indent=1, ensure_ascii=False).encode("utf-8")}
    for key, result in stored.items():
        files[f"results/{key}.json"] = gradebook.result_bytes(apply_marks(result, marks))
    files.update(gradebook.derived_files(roster, stored))
    log = out / "grading.log"
    history = log.read_bytes() if log.exists() else b""
    counts = {gid: len(per) for gid, per in new.items()}
    files["grading.log"] = history + (f"{time.strftime('%Y-%m-%d %H:%M:%S')} manual marks merged from "
                                      f"{', '.join(str(s) for s in sheets)}: "
                                      + ", ".join(f"{gid} {n}" for gid, n in counts.items()) + "\n").encode()
    gradebook.write_files(out, files)
    return counts
