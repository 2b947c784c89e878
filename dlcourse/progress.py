"""A learner's progress through the labs: not started, in progress or passing its visible tests, and what to do next.

Each lab's state comes from the learner's own notebook with the engine ``dlcourse check`` uses
(``grading.autograde.check``: the lab's pristine structure with the learner's answers, visible tests only). A lab
whose answer cells all still hold the starter code is "not started" without running anything. Verdicts are cached
by the notebook's bytes and the lab's source, so a second call only runs the labs that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .grading import cells as C
from .grading.build import read_notebook

NOT_STARTED, IN_PROGRESS, PASSED, MISSING, UNREADABLE = (
    "not started", "in progress", "passed visible tests", "no notebook", "unreadable")
CACHE_VERSION = 1


@dataclass
class LabProgress:
    """One lab's state for one learner; ``points``/``max_points`` count the visible tests (None: not run)."""

    lab: str
    notebook: Path
    state: str
    points: float | None = None
    max_points: float | None = None
    todo: str = ""  # the first exercise not passing, or why the notebook could not be checked


def course_dir() -> Path:
    """The course folder this package belongs to (it holds solutions/)."""
    return Path(__file__).resolve().parents[1]


def learner_labs(start: Path | None = None) -> Path:
    """Where the learner's labs are: ``labs/`` in the nearest folder up from ``start`` (default: the current one,
    so a notebook in ``workspace/notebooks/`` finds ``workspace/labs/``), else the course's own ``workspace/labs``
    or ``labs``."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "labs").is_dir() and any((folder / "labs").glob("lab*.ipynb")):
            return folder / "labs"
    course = course_dir()
    workspace = course / "workspace" / "labs"
    return workspace if workspace.is_dir() else course / "labs"


def cache_file() -> Path:
    """``$DLCOURSE_CACHE_DIR/progress.json`` (default ``~/.cache/dlcourse``)."""
    base = os.environ.get("DLCOURSE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "dlcourse")
    return Path(base) / "progress.json"


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def _answered(notebook, source) -> bool:
    """Whether any answer cell differs from the starter the lab hands out."""
    starters = {C.grade_id(c): c for c in source.cells if C.is_solution(c)}
    return any(C.grade_id(c) in starters and not C.is_blank_answer(c.get("source", ""), starters[C.grade_id(c)])
               for c in notebook.cells)


def lab_progress(solution: Path, notebook: Path, cache: dict, *, timeout: float = 300) -> LabProgress:
    """The state of one lab; runs the learner's notebook (visible tests) only when it is answered and not cached."""
    from .grading.autograde import check, read_submission
    from .grading.build import make_lab
    from .grading.kernel import Limits

    lab = solution.stem
    if not notebook.exists():
        return LabProgress(lab, notebook, MISSING, todo=f"no {notebook.name} here")
    submission, problem = read_submission(notebook)
    if submission is None:
        return LabProgress(lab, notebook, UNREADABLE, todo=problem)
    source = make_lab(read_notebook(solution))
    if not _answered(submission, source):
        return LabProgress(lab, notebook, NOT_STARTED)
    key = _digest(notebook.read_bytes(), solution.read_bytes(), str(CACHE_VERSION).encode())
    if key not in cache:
        result = check(notebook, limits=Limits(cell_timeout=timeout, submission_timeout=timeout * 10),
                       root=solution.parents[1])
        first = next((c for c in result.cells if c.status != "passed"), None)
        cache[key] = {"points": result.total, "max_points": result.max_points,
                      "passed": bool(result.cells) and first is None,
                      "todo": f"{first.grade_id}: {first.status}" if first else ""}
    hit = cache[key]
    return LabProgress(lab, notebook, PASSED if hit["passed"] else IN_PROGRESS, hit["points"], hit["max_points"],
                       hit["todo"])


def progress(labs: Path | None = None, course: Path | None = None, *, timeout: float = 300,
             bar: bool = True) -> list[LabProgress]:
    """Every lab of the course, in course order, for the learner whose notebooks are in ``labs``."""
    from tqdm.auto import tqdm

    course = course or course_dir()
    labs = labs or learner_labs()
    solutions = sorted((course / "solutions").glob("lab*.py"))
    path = cache_file()
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    found = [lab_progress(s, labs / f"{s.stem}.ipynb", cache, timeout=timeout)
             for s in tqdm(solutions, desc="checking labs", unit="lab", disable=not bar, leave=False)]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=0), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: no cache, the answer is the same
    return found


def next_step(rows: list[LabProgress]) -> str:
    """The next thing to do: finish the first lab in progress, else start the first lab not started."""
    for row in rows:
        if row.state in (IN_PROGRESS, UNREADABLE):
            return (f"finish {row.notebook.name} ({row.todo}); `dlcourse check {row.notebook}` shows every "
                    f"failing check")
    for row in rows:
        if row.state in (NOT_STARTED, MISSING):
            number = row.lab[3:5]
            return f"read notebook {number}, then open {row.notebook.name} and answer its first exercise"
    return "every lab passes its visible tests: the final grade also runs hidden tests"


def table(rows: list[LabProgress]) -> str:
    """The progress table as text (one row per lab) and the next step."""
    width = max(len(r.lab) for r in rows) if rows else 10
    lines = [f"{'lab':<{width}}  {'state':<20}  {'visible points':>14}  to do"]
    for r in rows:
        points = "" if r.points is None else f"{r.points:g}/{r.max_points:g}"
        lines.append(f"{r.lab:<{width}}  {r.state:<20}  {points:>14}  {r.todo}".rstrip())
    passed = sum(r.state == PASSED for r in rows)
    lines += ["", f"{passed}/{len(rows)} labs pass their visible tests. Next: {next_step(rows)}"]
    return "\n".join(lines)


def show(labs: Path | str | None = None) -> None:
    """Print the progress table (notebook 00 calls this; ``dlcourse progress`` prints the same)."""
    print(table(progress(Path(labs) if labs else None)))
