"""Grades for an LMS: the final score of every student in a graded folder, as a file the LMS imports.

- ``canvas``: Canvas's gradebook import CSV: ``Student, ID, SIS User ID, SIS Login ID, Section`` and one assignment
  column. Canvas matches a row to a student by ``ID``, the Canvas user id in the "download submissions" zip's file
  names. The assignment column's header is ``NAME (ASSIGNMENT_ID)`` for an existing assignment; a header without an
  id that matches no assignment makes Canvas create a new one on import. Students come only from a Canvas zip.
- ``moodle``: the assignment's offline grading worksheet ("Upload grading worksheet"; the "Offline grading
  worksheet" feedback type must be on): ``Identifier`` ("Participant N", N the participant id in the
  "download all submissions" zip's folder names), ``Full name``, ``Grade``, ``Maximum Grade`` and ``Last modified
  (grade)``, the three columns Moodle requires. That last column is left empty, so where Moodle already holds a
  grade, tick "Allow updating records that have been modified more recently in Moodle than in the spreadsheet".
- ``csv``: ``student, score, max``, for anything else.

The score is the gradebook's final total (after the late penalty, if a rule is set), formatted like grades.csv.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .gradebook import Entry, Roster, late_of, read

FORMATS = ("canvas", "moodle", "csv")


class ExportError(ValueError):
    """A gradebook that cannot be exported in the asked format; the message says why and what to do."""


def _name(entry: Entry) -> str:
    """The student's name as the LMS zip wrote it (the id without the trailing _<LMS id>)."""
    suffix = f"_{entry.lms_id}"
    return entry.student[:-len(suffix)] if entry.lms_id and entry.student.endswith(suffix) else entry.student


def rows(out: Path | str, *, allow_pending: bool = False) -> list[tuple[Entry, float, float]]:
    """(entry, final score, max points) for every graded student, in class order. Refuses while manually graded
    answers await a mark (their points would reach the LMS as 0) unless ``allow_pending``."""
    roster, results = read(out)
    pending = [r.student for r in results.values() if r.manual_pending > 0]
    if pending and not allow_pending:
        raise ExportError(f"{len(pending)} student(s) have manually graded answers without a mark "
                          f"({', '.join(sorted(pending)[:5])}{' ...' if len(pending) > 5 else ''}): merge the marks "
                          f"first (`dlcourse rubric merge`), or pass --allow-pending to export the points given so "
                          f"far")
    found = []
    for entry in roster.students:
        result = results.get(entry.key)
        if result is None:
            continue
        late = late_of(roster, entry.key, result)
        found.append((entry, late.final if late is not None else result.total, result.max_points))
    if not found:
        raise ExportError(f"{out} holds no graded student: run `dlcourse grade` into it first")
    return found


def export(out: Path | str, fmt: str, assignment: str | None = None, *, allow_pending: bool = False) -> bytes:
    """The grade file of the graded folder ``out`` in format ``fmt`` (canvas, moodle or csv)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    table = rows(out, allow_pending=allow_pending)
    if fmt in ("canvas", "moodle"):
        foreign = [e.student for e, _, _ in table if e.lms != fmt or not e.lms_id]
        if foreign:
            raise ExportError(f"--format {fmt} needs the {fmt.capitalize()} id of every student, which only a "
                              f"{fmt.capitalize()} submissions zip gives; {len(foreign)} student(s) have none "
                              f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}). Grade from the "
                              "LMS's zip, or use --format csv")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if fmt == "canvas":
        lab = Roster.read(out).lab
        writer.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", assignment or lab])
        writer.writerows([_name(e), e.lms_id, "", "", "", f"{score:g}"] for e, score, _ in table)
    elif fmt == "moodle":
        writer.writerow(["Identifier", "Full name", "Grade", "Maximum Grade", "Last modified (grade)"])
        writer.writerows([f"Participant {e.lms_id}", _name(e), f"{score:g}", f"{top:g}", ""]
                         for e, score, top in table)
    else:
        writer.writerow(["student", "score", "max"])
        writer.writerows([e.student, f"{score:g}", f"{top:g}"] for e, score, top in table)
    return buffer.getvalue().encode("utf-8")
