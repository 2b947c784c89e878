"""Autograding: rebuild a submission around the lab source, run it in a fresh kernel, and score each test cell.

Used by ``dlcourse grade`` (instructors: a folder of submissions → ``grades.csv``) and ``dlcourse check``
(learners: one notebook against the visible tests). The graded notebook is assembled in the source's order:
read-only and test cells come from the source by ``grade_id`` (edited, deleted or reordered ones are restored;
hidden tests are put back), answer cells come from the student, and cells the student added stay after the cell
they followed. Each test cell scores its points when it runs without error.
"""

from __future__ import annotations

import copy
import csv
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from . import cells as C
from .build import make_lab, read_notebook

#: Set in every grading kernel: labs run at smoke scale, and can tell they are being graded.
GRADING_ENV = {"DLCOURSE_SCALE": "smoke", "NBGRADER_EXECUTION": "autograde"}
PASSED, FAILED, NOT_ATTEMPTED, NOT_RUN = "passed", "failed", "not attempted", "not run"


@dataclass
class CellResult:
    """The verdict on one test cell."""

    grade_id: str
    points: float
    max_points: float
    status: str  # passed | failed | not attempted | not run
    message: str = ""


@dataclass
class Result:
    """One submission's grade. ``status`` is "graded" or says why grading stopped early."""

    student: str
    status: str
    cells: list[CellResult] = field(default_factory=list)
    notebook: str | None = None

    @property
    def total(self) -> float:
        return sum(c.points for c in self.cells)

    @property
    def max_points(self) -> float:
        return sum(c.max_points for c in self.cells)


def graded_cells(source: NotebookNode) -> list[NotebookNode]:
    return [c for c in source.cells if C.is_graded(c)]


def kernel_name() -> str:
    """The course kernel when it is registered (``make lab`` does it), else the current Python's ipykernel."""
    from jupyter_client.kernelspec import KernelSpecManager

    return "dlcourse" if "dlcourse" in KernelSpecManager().find_kernel_specs() else "python3"


def assemble(source: NotebookNode, submission: NotebookNode) -> NotebookNode:
    """The notebook that is actually run: the source's structure with the student's answers in it.

    ``source`` is the solution (grading, hidden tests included) or the student lab (self-check). Answer cells
    are taken from ``submission`` by grade_id (the stub when missing); every other cell with nbgrader metadata is
    copied from ``source``; cells of the submission without a known grade_id follow the cell they followed there.
    """
    known = {C.grade_id(c) for c in source.cells if C.grade_id(c)}
    answers: dict[str, NotebookNode] = {}
    extras: dict[str | None, list[NotebookNode]] = {}
    anchor: str | None = None
    for cell in submission.cells:
        gid = C.grade_id(cell)
        if gid in known:
            answers.setdefault(gid, cell)  # a duplicated cell counts once: the first copy
            anchor = gid
        else:
            plain = copy.deepcopy(cell)
            plain.get("metadata", {}).pop("nbgrader", None)  # a forged test cell is just a student cell
            extras.setdefault(anchor, []).append(plain)

    nb = copy.deepcopy(source)
    out: list[NotebookNode] = list(extras.get(None, []))
    for cell in source.cells:
        gid = C.grade_id(cell)
        if "solution" in C.tags(cell) or not gid:
            continue  # solution-only cells never reach a student; free cells come from the student's copy
        if C.is_solution(cell):
            mine = answers.get(gid)
            answer = copy.deepcopy(cell)
            answer.source = mine.get("source", "") if mine is not None else C.strip_solution(cell.source,
                                                                                             cell.cell_type)
            out.append(answer)
        else:
            out.append(copy.deepcopy(cell))
        out.extend(extras.get(gid, []))
    for cell in out:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells = out
    return nb


def execute(nb: NotebookNode, *, timeout: int = 120, cwd: Path | str | None = None) -> tuple[NotebookNode, str | None]:
    """Run ``nb`` top to bottom in a fresh kernel (errors do not stop it). Returns it and why it stopped early."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    with tempfile.TemporaryDirectory(prefix="dlcourse-grade-") as tmp:
        client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name(), allow_errors=True,
                                resources={"metadata": {"path": str(cwd or tmp)}})
        try:
            # the kernel's own stderr (start-up chatter) is not the student's output; errors arrive as cell outputs
            client.execute(env={**os.environ, **GRADING_ENV}, stderr=subprocess.DEVNULL)
        except CellTimeoutError:
            return nb, f"timeout: a cell ran longer than {timeout} s"
        except DeadKernelError:
            return nb, "kernel died (it exited, crashed or ran out of memory)"
    return nb, None


def _error(cell: NotebookNode) -> dict | None:
    return next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)


def score(executed: NotebookNode, source: NotebookNode, stopped: str | None = None) -> list[CellResult]:
    """One CellResult per graded cell of ``source``, read from the outputs of ``executed``."""
    results: dict[str, CellResult] = {}
    answers_unfinished = False  # did an answer cell since the previous test cell raise NotImplementedError?
    for cell in executed.cells:
        gid = C.grade_id(cell)
        if cell.cell_type != "code":
            continue
        err = _error(cell)
        if C.is_solution(cell):
            answers_unfinished = answers_unfinished or (err is not None and err.get("ename") == "NotImplementedError")
            continue
        if not C.is_graded(cell):
            continue
        max_points = C.points(cell)
        if cell.get("execution_count") is None:
            result = CellResult(gid, 0.0, max_points, NOT_RUN, stopped or "not executed")
        elif err is None:
            result = CellResult(gid, max_points, max_points, PASSED)
        elif answers_unfinished or err.get("ename") == "NotImplementedError":
            result = CellResult(gid, 0.0, max_points, NOT_ATTEMPTED, "the answer still raises NotImplementedError")
        else:
            result = CellResult(gid, 0.0, max_points, FAILED, f"{err.get('ename')}: {err.get('evalue')}".strip())
        results[gid] = result
        answers_unfinished = False
    return [results.get(C.grade_id(c)) or CellResult(C.grade_id(c), 0.0, C.points(c), NOT_RUN, stopped or "")
            for c in graded_cells(source)]


def _unscored(source: NotebookNode, why: str) -> list[CellResult]:
    return [CellResult(C.grade_id(c), 0.0, C.points(c), NOT_RUN, why) for c in graded_cells(source)]


def grade_notebook(source: NotebookNode, path: Path | str, *, student: str = "", timeout: int = 120) -> Result:
    """Grade one submitted notebook file against ``source``; never raises for a bad submission."""
    path = Path(path)
    try:
        submission = nbformat.read(path, as_version=4)
    except Exception as exc:  # invalid JSON, empty file, not a notebook, unreadable bytes
        why = f"invalid notebook: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip()
        return Result(student, why, _unscored(source, why), str(path))
    executed, stopped = execute(assemble(source, submission), timeout=timeout)
    return Result(student, stopped or "graded", score(executed, source, stopped), str(path))


def find_submission(folder: Path, lab_name: str) -> tuple[Path | None, str]:
    """The student's notebook for ``lab_name`` in ``folder``, or None and the reason."""
    notebooks = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    matching = [p for p in notebooks if p.stem.startswith(lab_name)] or notebooks
    if not matching:
        return None, f"missing notebook: no .ipynb in {folder.name}/"
    if len(matching) > 1:
        return None, f"ambiguous: {len(matching)} notebooks ({', '.join(p.name for p in matching)})"
    return matching[0], ""


def write_grades_csv(results: list[Result], source: NotebookNode, path: Path) -> None:
    """One row per student: points per test cell, total, max, status. Written to a temp file, then renamed."""
    ids = [C.grade_id(c) for c in graded_cells(source)]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["student", *ids, "total", "max", "status"])
        for r in results:
            by_id = {c.grade_id: c.points for c in r.cells}
            writer.writerow([r.student, *(f"{by_id.get(i, 0):g}" for i in ids), f"{r.total:g}",
                             f"{r.max_points:g}", r.status])
    os.replace(tmp, path)


def grade_folder(lab: Path | str, submissions: Path | str, out: Path | str, *, timeout: int = 120,
                 progress: bool = True) -> list[Result]:
    """Grade every ``SUBMISSIONS/<student>/labNN_*.ipynb`` against the solution ``lab``; write ``OUT/grades.csv``."""
    from tqdm.auto import tqdm

    lab, submissions, out = Path(lab), Path(submissions), Path(out)
    if not submissions.is_dir():
        raise FileNotFoundError(f"submissions folder {submissions} does not exist")
    source = read_notebook(lab)
    out.mkdir(parents=True, exist_ok=True)
    students = sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    results = []
    for folder in tqdm(students, desc="grading", unit="student", disable=not progress):
        path, why = find_submission(folder, lab.stem)
        if path is None:
            results.append(Result(folder.name, why, _unscored(source, why)))
        else:
            results.append(grade_notebook(source, path, student=folder.name, timeout=timeout))
        write_grades_csv(results, source, out / "grades.csv")  # after each student: an interruption loses nothing
    if not students:
        write_grades_csv(results, source, out / "grades.csv")
    return results


def lab_source_for(notebook: Path | str, root: Path | str | None = None) -> NotebookNode:
    """The pristine student lab for a learner's notebook, rebuilt from ``solutions/`` (so edits to tests don't count).

    The lab is found by the notebook's ``labNN`` prefix in the course's ``solutions/`` folder.
    """
    notebook = Path(notebook)
    roots = [Path(root)] if root else [*notebook.resolve().parents, Path(__file__).resolve().parents[2]]
    prefix = notebook.stem.split("_")[0]
    for candidate in roots:
        folder = candidate / "solutions"
        matches = sorted(folder.glob(f"{notebook.stem}.py")) or sorted(folder.glob(f"{prefix}_*.py"))
        if matches:
            return make_lab(read_notebook(matches[0]))
    raise FileNotFoundError(
        f"no lab source for {notebook.name}: expected solutions/{prefix}_*.py in the course folder "
        f"(run `dlcourse check` from inside your dlcourse clone)")


def check(notebook: Path | str, *, timeout: int = 300, root: Path | str | None = None) -> Result:
    """The learner's self-check: run ``notebook`` with the lab's visible tests and report each exercise."""
    source = lab_source_for(notebook, root)
    return grade_notebook(source, notebook, student=Path(notebook).stem, timeout=timeout)
