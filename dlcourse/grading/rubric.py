"""Rubric sheets for manually graded answers: what the instructor marks, one CSV and one HTML page per question.

``export_rubric`` writes ``OUT/rubric/<grade_id>.csv`` (question, student, answer excerpt, max_points, and the
points and comment columns to fill; a blank answer comes pre-marked 0) and ``OUT/rubric/<grade_id>.html`` (the
question as students read it, the reference answer, and every student's whole answer, escaped: code in ``<pre>``,
prose as plain text, never rendered). Answers are read without running anything, as grading reads them
(``answers``). The filled sheets go back in through ``manual.merge_marks``.
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

from . import manual as M
from .answers import read_answers
from .autograde import NOT_ATTEMPTED, manual_verdict
from .build import read_notebook
from .gradebook import write_files

EXCERPT = 200  # characters of the answer in the CSV; the HTML view has all of it


def _excerpt(answer: str) -> str:
    """One line of at most EXCERPT characters; a leading = + - @ is quoted so a spreadsheet shows it as text."""
    text = " ".join(answer.split())
    text = text if len(text) <= EXCERPT else text[:EXCERPT - 1] + "…"
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _blank(question: M.ManualQuestion, answer: str) -> bool:
    """The grader's own rule (``autograde.manual_verdict``): empty, or still as handed out."""
    return manual_verdict(question.cell, answer).status == NOT_ATTEMPTED


def rubric_csv(question: M.ManualQuestion, answers: dict[str, dict[str, str]]) -> bytes:
    """The sheet for one question: a row per student, sorted by name."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(M.COLUMNS)
    for student in sorted(answers):
        answer = answers[student][question.grade_id]
        blank = _blank(question, answer)
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


def rubric_html(lab: str, question: M.ManualQuestion, answers: dict[str, dict[str, str]],
                skipped: dict[str, str]) -> str:
    """The page for one question: the question, the reference answer, every student's answer."""
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
        blank = " <small>(blank)</small>" if _blank(question, answer) else ""
        parts.append(f"<h2 id='{e(student)}'>{e(student)}{blank}</h2>{_block(answer, question.cell_type)}")
    if skipped:
        parts.append("<h2>Nothing to mark</h2><ul>" + "".join(f"<li>{e(s)}: {e(why)}</li>"
                                                             for s, why in sorted(skipped.items())) + "</ul>")
    return "".join(parts) + "</body></html>\n"


def export_rubric(lab: Path | str, submissions: Path | str, out: Path | str, *, pattern: str | None = None,
                  force: bool = False) -> list[Path]:
    """Write ``out/rubric/<grade_id>.csv`` and ``.html`` for each manual question; return the CSV paths.

    A sheet that already exists may hold marks: nothing is written unless ``force``.
    """
    lab, folder = Path(lab), Path(out) / "rubric"
    source = read_notebook(lab)
    questions = M.manual_questions(source)
    if not questions:
        raise ValueError(f"{lab} has no manually graded answers (cells with \"grade\": true and \"solution\": true)")
    existing = [folder / f"{q.grade_id}.csv" for q in questions if (folder / f"{q.grade_id}.csv").exists()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(map(str, existing))} already exist(s) and may hold your marks: merge "
                              "them first (`dlcourse rubric merge`), or move them away, or pass --force")
    answers, skipped = read_answers(source, submissions, lab.stem, [q.grade_id for q in questions], pattern)
    files = {}
    for q in questions:
        files[f"{q.grade_id}.csv"] = rubric_csv(q, answers)
        files[f"{q.grade_id}.html"] = rubric_html(lab.stem, q, answers, skipped).encode("utf-8")
    write_files(folder, files)
    return [folder / f"{q.grade_id}.csv" for q in questions]
