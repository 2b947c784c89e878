"""The gradebook: per-student results in class order → the files an output folder holds, and back.

An output folder of ``dlcourse grade`` holds:

- ``results/<key>.json``: one ``Result`` per student (raw points per test cell), the record grading produced;
- ``class.json``: the ``Roster``: the lab, its test cells and maximum, every student found in class order (key,
  readable id, LMS and LMS id, submission time), the late rule, and the shard when only a share was graded;
- ``grades.csv``, ``grades.json`` and ``feedback/<key>.html``: derived from the two above by ``gradebook_files`` and
  ``feedback_page``, so they can be rewritten at any time without grading again (``rewrite``).

Interface (stable; other modules rely on it):

- ``Roster`` / ``Entry``: the class metadata; ``Roster.read(out)`` loads ``class.json``.
- ``result_bytes(result)``: how a result is stored in results/.
- ``gradebook_files(roster, results)`` → ``{"grades.csv": bytes, "grades.json": bytes}``; ``results`` maps student
  key → Result; rows follow the roster's order; students without a result are left out.
- ``feedback_page(roster, key, result)`` → the bytes of ``feedback/<key>.html`` (with the late note).
- ``read(out)`` → ``(roster, {key: Result})``: a graded folder read back.
- ``rewrite(out, results=None, late=KEEP)``: rewrite grades.csv, grades.json, every feedback page (and the given
  results, and class.json when the late rule changes) from results/, each file atomically; returns the relative
  paths written. Use it after changing results (manual marks) or to apply another late rule.
- ``late_of(roster, key, result)`` → ``late.Late`` or None: the penalty the gradebook applies to that student.

Without a late rule grades.csv is ``student, <test cells>, total, max, status``; with one it is ``student, <test
cells>, raw, submitted, late_days, penalty, total, max, status`` where ``total`` is the final score, and each
student in grades.json gains ``late`` (submission time, days late, penalty) and ``final_total``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Mapping

from .autograde import NEEDS_MANUAL, Result
from .feedback import render
from .late import Late, LateRule, assess

CLASS_FILE = "class.json"
KEEP = object()  # rewrite(): keep the late rule stored in class.json


class GradebookError(ValueError):
    """An output folder that cannot be read back; the message says what to do."""


@dataclass
class Entry:
    """One student found in the submissions."""

    key: str                        # file-name stem in results/ and feedback/
    student: str                    # readable id, as in the gradebook
    lms: str | None = None          # "canvas" or "moodle" when the submissions came from that LMS's zip
    lms_id: str | None = None       # Canvas user id / Moodle participant id from the zip's naming
    submitted: str | None = None    # ISO 8601 submission time (zip entry time or file mtime); None when unknown


@dataclass
class Roster:
    """What a gradebook needs besides the results: the lab and the class, in order."""

    lab: str                        # the lab's name, e.g. lab01_training_loop
    ids: list[str]                  # the test cells' grade ids, in notebook order
    max_points: float
    students: list[Entry] = field(default_factory=list)  # every student found, in class order
    source: str = ""                # hash of the lab source graded against (hidden tests included)
    late: LateRule | None = None
    shard: tuple[int, int] | None = None  # (K, N) when this folder holds shard K of N

    def to_bytes(self) -> bytes:
        data = {"lab": self.lab, "ids": self.ids, "max_points": self.max_points, "source": self.source,
                "late": self.late.to_dict() if self.late else None,
                "shard": f"{self.shard[0]}/{self.shard[1]}" if self.shard else None,
                "students": [asdict(e) for e in self.students]}
        return json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, where: str = CLASS_FILE) -> "Roster":
        try:
            raw = json.loads(data)
            shard = tuple(int(x) for x in raw["shard"].split("/")) if raw.get("shard") else None
            return cls(raw["lab"], list(raw["ids"]), float(raw["max_points"]), [Entry(**e) for e in raw["students"]],
                       raw.get("source", ""), LateRule.from_dict(raw["late"]) if raw.get("late") else None, shard)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise GradebookError(f"{where} is not a class file this version can read ({type(exc).__name__}: "
                                 f"{exc}); run the same `dlcourse grade` command again to rewrite it (graded "
                                 "students are kept)") from None

    @classmethod
    def read(cls, out: Path | str) -> "Roster":
        path = Path(out) / CLASS_FILE
        if not path.is_file():
            raise GradebookError(f"{out} has no {CLASS_FILE}: it is not the output of `dlcourse grade` (or of a "
                                 "version before it was written); run the same `dlcourse grade` command into it "
                                 "again, which grades nobody twice and writes it")
        return cls.from_bytes(path.read_bytes(), str(path))

    def entry(self, key: str) -> Entry | None:
        return next((e for e in self.students if e.key == key), None)


def result_bytes(result: Result) -> bytes:
    """A result as results/<key>.json stores it."""
    return json.dumps(result.to_dict(), indent=1).encode()


def late_of(roster: Roster, key: str, result: Result) -> Late | None:
    """The late penalty the gradebook applies to this student's result (None without a rule or a submission)."""
    entry = roster.entry(key)
    if roster.late is None or entry is None or entry.submitted is None:
        return None
    return assess(roster.late, entry.submitted, result.total)


def _ordered(roster: Roster, results: Mapping[str, Result]) -> list[tuple[str, Result]]:
    return [(e.key, results[e.key]) for e in roster.students if e.key in results]


def gradebook_files(roster: Roster, results: Mapping[str, Result]) -> dict[str, bytes]:
    """grades.csv and grades.json for ``results`` (key → Result), rows in the roster's order."""
    rows = _ordered(roster, results)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    late_columns = ["raw", "submitted", "late_days", "penalty"] if roster.late else []
    writer.writerow(["student", *roster.ids, *late_columns, "total", "max", "status"])
    students = []
    for key, r in rows:
        # a manually graded answer waiting for its mark is an empty cell, not 0 (see manual)
        by_id = {c.grade_id: "" if c.status == NEEDS_MANUAL else f"{c.points:g}" for c in r.cells}
        record = r.to_dict()
        total, extra = r.total, []
        if roster.late:
            late = late_of(roster, key, r)
            if late is not None:
                total = late.final
                extra = [f"{r.total:g}", late.submitted or "", late.days, f"{late.penalty:g}"]
                record.update(late=late.to_dict(), final_total=late.final)
            else:
                extra = [f"{r.total:g}", "", "", "0"]
                record.update(late=None, final_total=r.total)
        writer.writerow([r.student, *(by_id.get(i, "0") for i in roster.ids), *extra, f"{total:g}",
                         f"{r.max_points:g}", r.status])
        students.append(record)
    table = {"lab": roster.lab, "max_points": roster.max_points, "students": students}
    if roster.late:
        table["late_rule"] = roster.late.to_dict()
    return {"grades.csv": buffer.getvalue().encode("utf-8"), "grades.json": json.dumps(table, indent=1).encode()}


def feedback_page(roster: Roster, key: str, result: Result) -> bytes:
    """feedback/<key>.html: the verdicts, and how late the submission was and what that cost."""
    return render(result, roster.lab, late_of(roster, key, result)).encode()


def read_results(out: Path | str) -> dict[str, Result]:
    """Every readable results/<key>.json in ``out``, by key; an unreadable one is an error naming it."""
    results = {}
    for path in sorted((Path(out) / "results").glob("*.json")):
        try:
            results[path.stem] = Result.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise GradebookError(f"{path} is unreadable ({type(exc).__name__}: {exc}); delete it and run "
                                 "`dlcourse grade` again to grade that student again") from None
    return results


def read(out: Path | str) -> tuple[Roster, dict[str, Result]]:
    """A graded output folder read back: its roster and its results by key."""
    return Roster.read(out), read_results(out)


def write_files(out: Path | str, files: Mapping[str, bytes]) -> None:
    """Write ``files`` (relative path → bytes) under ``out``: all staged to temporary names first, then each moved
    into place, so a failure while writing leaves every old file as it was."""
    staged = []
    try:
        for relative, data in files.items():
            path = Path(out) / relative
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


def derived_files(roster: Roster, results: Mapping[str, Result]) -> dict[str, bytes]:
    """Everything derived from the roster and the results: class.json, grades.csv, grades.json, feedback pages."""
    files = {CLASS_FILE: roster.to_bytes(), **gradebook_files(roster, results)}
    for key, result in _ordered(roster, results):
        files[f"feedback/{key}.html"] = feedback_page(roster, key, result)
    return files


def rewrite(out: Path | str, results: Mapping[str, Result] | None = None, late: object = KEEP) -> list[str]:
    """Rewrite the gradebook of the graded folder ``out`` without grading: grades.csv, grades.json and every
    feedback page from results/ (plus ``results``, key → Result, which are stored first), under the stored late
    rule or ``late`` (a LateRule, or None for no rule; stored in class.json). Returns the relative paths written."""
    roster, stored = read(out)
    unknown = sorted(set(results or {}) - {e.key for e in roster.students})
    if unknown:
        raise GradebookError(f"results for students not in {Path(out) / CLASS_FILE}: {', '.join(unknown)}")
    if late is not KEEP:
        roster = replace(roster, late=late)
    files = {f"results/{key}.json": result_bytes(r) for key, r in (results or {}).items()}
    files.update(derived_files(roster, {**stored, **(results or {})}))
    write_files(out, files)
    return list(files)
