"""Manually graded answers: a rubric sheet per question out, the instructor's marks and comments back in.

nbgrader's manually graded answer (``grade`` and ``solution`` with ``points``, free text or code) is not scored by
the autograder: it records the cell as "needs manual grading" (0 of its points for now), or "not attempted" with 0
points when the answer is still the blank lab's (as nbgrader does). So a student's total is always the points
given so far, and ``manual_pending`` in results/grades.json says how many points still await marks.

``export_rubric`` writes, per manual question, ``rubric/<grade_id>.csv`` (question, student, answer excerpt,
max_points, points and comment to fill) and ``rubric/<grade_id>.html`` (the question, the reference answer and
every student's answer, escaped). ``merge_marks`` reads filled sheets, checks every row first (unknown question or
student, no submission, a non-number, points out of range, two different marks for one answer) and only when all
are valid stores them in ``manual-marks.json`` and rewrites the results, feedback pages and gradebook, each file
atomically. The marks file is the record: a later ``dlcourse grade --force`` applies it again (``apply_marks``).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nbformat import NotebookNode

from . import cells as C
from .autograde import MARKED, NEEDS_MANUAL, NOT_ATTEMPTED, Result, read_submission
from .build import read_notebook
from .feedback import render
from .gradebook import gradebook_files
from .submissions import discover

MARKS_FILE = "manual-marks.json"
COLUMNS = ("question", "student", "answer", "max_points", "points", "comment")
EXCERPT = 200  # characters of the answer in the CSV; the HTML view has all of it
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


# ------------------------------------------------------------------------------------------------- export
def _excerpt(answer: str) -> str:
    """One line of at most EXCERPT characters; a leading = + - @ is quoted so a spreadsheet shows it as text."""
    text = " ".join(answer.split())
    text = text if len(text) <= EXCERPT else text[:EXCERPT - 1] + "…"
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def read_answers(source: NotebookNode, submissions: Path | str, lab_name: str,
                 pattern: str | None = None) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Every student's answer to each manual question (a deleted cell counts as blank), and the students with
    nothing to mark and why."""
    questions = {q.grade_id: q for q in manual_questions(source)}
    answers: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dlcourse-rubric-") as tmp:
        for sub in discover(Path(submissions), lab_name, Path(tmp), pattern):
            nb, problem = read_submission(sub.path) if sub.path is not None else (None, sub.problem)
            if nb is None:
                skipped[sub.student] = problem
                continue
            mine: dict[str, str] = {}
            for cell in nb.cells:
                gid = C.grade_id(cell)
                if gid in questions and gid not in mine:  # the first copy counts, as when grading
                    mine[gid] = cell.get("source", "")
            answers[sub.student] = {gid: mine.get(gid, q.blank) for gid, q in questions.items()}
    return answers, skipped


def rubric_csv(question: ManualQuestion, answers: dict[str, dict[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for student in sorted(answers):
        answer = answers[student][question.grade_id]
        blank = C.is_blank_answer(answer, question.cell)
        writer.writerow([question.grade_id, student, "(blank)" if blank else _excerpt(answer),
                         f"{question.points:g}", "0" if blank else "", "no answer" if blank else ""])
    return buffer.getvalue().encode("utf-8")


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
pre, .text { background: #f6f6f6; padding: .5rem; overflow-x: auto; white-space: pre-wrap; }
.prompt { border-left: 4px solid #4a78c2; padding-left: 1rem; } .reference { background: #eef8ee; }
h2 { font-size: 1.1rem; margin-top: 1.6rem; } small { color: #666; }
"""


def _block(text: str, cell_type: str, css: str = "") -> str:
    """An answer as escaped text: code in <pre>, prose in a pre-wrapped block (never rendered as HTML)."""
    tag = "pre" if cell_type == "code" else "div"
    classes = " ".join(c for c in ("text" if tag == "div" else "", css) if c)
    attribute = f" class='{classes}'" if classes else ""
    return f"<{tag}{attribute}>{html.escape(text)}</{tag}>"


def rubric_html(lab: str, question: ManualQuestion, answers: dict[str, dict[str, str]],
                skipped: dict[str, str]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(lab)}: {e(question.grade_id)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{e(lab)}: {e(question.grade_id)} "
             f"<small>({question.points:g} points, {len(answers)} answers)</small></h1>",
             f"<p>Mark in <code>{e(question.grade_id)}.csv</code> (points, comment), then run <code>dlcourse rubric "
             "merge</code>. Blank answers are pre-marked 0.</p>"]
    if question.prompt:
        parts.append(f"<h2>Question</h2>{_block(question.prompt, 'markdown', 'prompt')}")
    parts.append(f"<h2>Reference answer</h2>{_block(question.reference, question.cell_type, 'reference')}")
    for student in sorted(answers):
        answer = answers[student][question.grade_id]
        blank = " <small>(blank)</small>" if C.is_blank_answer(answer, question.cell) else ""
        parts.append(f"<h2 id='{e(student)}'>{e(student)}{blank}</h2>{_block(answer, question.cell_type)}")
    if skipped:
        parts.append("<h2>Nothing to mark</h2><ul>" + "".join(f"<li>{e(s)}: {e(why)}</li>"
                                                             for s, why in sorted(skipped.items())) + "</ul>")
    return "".join(parts) + "</body></html>\n"


def export_rubric(lab: Path | str, submissions: Path | str, out: Path | str, *, pattern: str | None = None,
                  force: bool = False) -> list[Path]:
    """Write ``out/rubric/<grade_id>.csv`` and ``.html`` for each manual question; return the CSV paths.

    A sheet that already exists may hold marks: it is never overwritten unless ``force``.
    """
    lab, folder = Path(lab), Path(out) / "rubric"
    source = read_notebook(lab)
    questions = manual_questions(source)
    if not questions:
        raise ValueError(f"{lab} has no manually graded answers (cells with \"grade\": true and \"solution\": true)")
    existing = [folder / f"{q.grade_id}.csv" for q in questions if (folder / f"{q.grade_id}.csv").exists()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(map(str, existing))} already exist(s) and may hold your marks: merge "
                              "them first (`dlcourse rubric merge`), or move them away, or pass --force")
    answers, skipped = read_answers(source, submissions, lab.stem, pattern)
    files = {}
    for q in questions:
        files[folder / f"{q.grade_id}.csv"] = rubric_csv(q, answers)
        files[folder / f"{q.grade_id}.html"] = rubric_html(lab.stem, q, answers, skipped).encode("utf-8")
    _write_all(files)
    return [folder / f"{q.grade_id}.csv" for q in questions]


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


def _write_all(files: dict[Path, bytes]) -> None:
    """Write every file to a temporary name first, then move each into place: an error while writing leaves the
    old files untouched."""
    staged = []
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            staged.append((tmp, path))
    except OSError:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)


def merge_marks(lab: Path | str, out: Path | str, sheets: list[Path | str]) -> dict[str, int]:
    """Merge filled rubric sheets into the graded output folder ``out``; return the marks stored per question.

    Marks merged earlier stay unless a sheet marks the same answer again (then the new mark wins).
    """
    lab, out = Path(lab), Path(out)
    source = read_notebook(lab)
    questions = {q.grade_id: q.points for q in manual_questions(source)}
    if not questions:
        raise ValueError(f"{lab} has no manually graded answers: nothing to merge")
    results: dict[str, Result] = {}
    keys: dict[str, str] = {}
    for path in sorted((out / "results").glob("*.json")):
        try:
            result = Result.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise MarksError(f"{path} is unreadable ({type(exc).__name__}); grade again before merging") from None
        results[result.student], keys[result.student] = result, path.stem
    if not results:
        raise FileNotFoundError(f"no graded results in {out / 'results'}: run `dlcourse grade` into {out} first")
    new = read_sheets(sheets, questions, results)
    marks = load_marks(out)
    for gid, per in new.items():
        marks.setdefault(gid, {}).update(per)
    files: dict[Path, bytes] = {out / MARKS_FILE: json.dumps({"lab": lab.stem, "marks": {
        gid: {st: {"points": m.points, "comment": m.comment} for st, m in sorted(per.items())}
        for gid, per in sorted(marks.items())}}, indent=1, ensure_ascii=False).encode("utf-8")}
    for student, result in results.items():
        apply_marks(result, marks)
        files[out / "results" / f"{keys[student]}.json"] = json.dumps(result.to_dict(), indent=1).encode()
        files[out / "feedback" / f"{keys[student]}.html"] = render(result, lab.stem).encode()
    ordered = _gradebook_order(out, results)
    for relative, data in gradebook_files(source, lab.stem, ordered).items():
        files[out / relative] = data
    log = out / "grading.log"
    history = log.read_bytes() if log.exists() else b""
    counts = {gid: sum(1 for st in per if st in results) for gid, per in new.items()}
    files[log] = history + (f"{time.strftime('%Y-%m-%d %H:%M:%S')} manual marks merged from "
                            f"{', '.join(str(s) for s in sheets)}: "
                            + ", ".join(f"{gid} {n}" for gid, n in counts.items()) + "\n").encode()
    _write_all(files)
    return counts


def _gradebook_order(out: Path, results: dict[str, Result]) -> list[Result]:
    """The results in the gradebook's existing order (grades.json), students it does not list at the end."""
    order: list[str] = []
    try:
        order = [s["student"] for s in json.loads((out / "grades.json").read_text(encoding="utf-8"))["students"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    rank = {student: i for i, student in enumerate(order)}
    return sorted(results.values(), key=lambda r: (rank.get(r.student, len(rank)), r.student))
