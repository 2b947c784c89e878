"""Grading one notebook: rebuild it around the lab source, run it in a bounded kernel, score every test cell.

The notebook that runs is assembled in the source's order: read-only and test cells come from the source by
``grade_id`` (edited, deleted, moved or turned-into-markdown ones are restored; hidden tests are put back, from a
private overlay when one is given), answer cells come from the student, and cells the student added follow the cell
they followed. Test cells report their checks (see ``checks``); the grader compares each student value with the
reference solution's value in this process, so nothing the student's code does in the kernel can change a verdict.
A test cell without checks scores its points when it runs without error (weaker: the kernel decides).
A manually graded answer (nbgrader's ``grade`` and ``solution`` with ``points``) is not scored here: it is "needs
manual grading" with 0 of its points until the instructor's mark is merged (``manual``), or "not attempted" when it
is still the blank lab's. ``Result.total`` is always the points given so far; ``manual_pending`` the points that
still await a mark.

Used by ``dlcourse grade`` (through ``batch``) and ``dlcourse check`` (the learner's self-check).
"""

from __future__ import annotations

import ast
import builtins
import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from . import cells as C
from . import checks as K
from .build import make_lab, read_notebook
from .kernel import Limits, run

PASSED, FAILED, NOT_ATTEMPTED, NOT_RUN, ERROR = "passed", "failed", "not attempted", "not run", "error"
NEEDS_MANUAL, MARKED = "needs manual grading", "marked"  # a manually graded answer before and after its mark


class ReferenceError(RuntimeError):
    """The reference solution does not score full marks in this environment: grading would be unfair."""


@dataclass
class CheckResult:
    name: str
    weight: float
    passed: bool
    message: str = ""


@dataclass
class CellResult:
    """The verdict on one test cell: passed | failed | not attempted | not run | error (partial points possible),
    or on a manually graded answer: needs manual grading | marked | not attempted | not run."""

    grade_id: str
    points: float
    max_points: float
    status: str
    message: str = ""
    checks: list[CheckResult] = field(default_factory=list)


@dataclass
class Result:
    """One submission's grade. ``status`` is "graded" or says why grading stopped early or never started."""

    student: str
    status: str
    cells: list[CellResult] = field(default_factory=list)
    notebook: str | None = None
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return round(sum(c.points for c in self.cells), 6)

    @property
    def max_points(self) -> float:
        return sum(c.max_points for c in self.cells)

    @property
    def manual_pending(self) -> float:
        """Points of manually graded answers still waiting for the instructor's mark (not in ``total`` yet)."""
        return sum(c.max_points for c in self.cells if c.status == NEEDS_MANUAL)

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total, "max_points": self.max_points,
                "manual_pending": self.manual_pending}

    @classmethod
    def from_dict(cls, data: dict) -> "Result":
        cells = [CellResult(**{**c, "checks": [CheckResult(**k) for k in c.get("checks", [])]})
                 for c in data.get("cells", [])]
        return cls(data["student"], data["status"], cells, data.get("notebook"), data.get("seconds", 0.0))


def graded_cells(source: NotebookNode) -> list[NotebookNode]:
    """The cells with points: test cells and manually graded answers, in notebook order."""
    return [c for c in source.cells if C.is_graded(c)]


# --------------------------------------------------------------------------------------------------- the source
def load_source(lab: Path | str, hidden: Path | str | None = None) -> NotebookNode:
    """The lab source to grade against; with ``hidden``, test cells found in ``hidden/<lab name>.py|.ipynb`` (by
    grade_id) replace the public ones, so the public solutions/ need not contain the hidden tests."""
    source = read_notebook(lab)
    if hidden is None:
        return source
    name = Path(lab).stem
    candidates = [Path(hidden) / f"{name}.py", Path(hidden) / f"{name}.ipynb"]
    overlay_path = next((p for p in candidates if p.exists()), None)
    if overlay_path is None:
        raise FileNotFoundError(f"no hidden tests for {name} in {hidden} (expected {name}.py or {name}.ipynb)")
    overlay = {C.grade_id(c): c for c in read_notebook(overlay_path).cells if C.is_graded(c)}
    unknown = sorted(set(overlay) - {C.grade_id(c) for c in graded_cells(source)})
    if unknown:
        raise ValueError(f"{overlay_path} has test cells the lab does not have: {unknown}")
    for cell in graded_cells(source):
        if C.grade_id(cell) in overlay:
            cell.source = overlay[C.grade_id(cell)].source
    return source


def assemble(source: NotebookNode, submission: NotebookNode) -> NotebookNode:
    """The notebook that is actually run: the source's structure with the student's answers in it."""
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
        restored = copy.deepcopy(cell)
        if C.is_solution(cell):
            mine = answers.get(gid)
            restored.source = mine.get("source", "") if mine is not None else C.strip_solution(cell.source,
                                                                                               cell.cell_type)
        out.append(restored)
        out.extend(extras.get(gid, []))
    for cell in out:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells = out
    return nb


def strip_expected(source: str) -> str:
    """Replace every ``expected=...`` argument of a check call by ``None``, so the kernel never holds the answer.

    Works on the syntax tree's positions, so comments and layout survive; a cell that does not parse is returned
    unchanged (it will fail on its own).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in K.CHECK_FUNCTIONS:
                spans += [kw.value for kw in node.keywords if kw.arg == "expected"]
    lines = [line.encode() for line in source.split("\n")]  # ast offsets count UTF-8 bytes
    for value in sorted(spans, key=lambda v: (v.lineno, v.col_offset), reverse=True):
        first, last = value.lineno - 1, value.end_lineno - 1
        head, tail = lines[first][:value.col_offset], lines[last][value.end_col_offset:]
        lines[first:last + 1] = [head + b"None" + tail]
    return "\n".join(line.decode() for line in lines)


def for_grading(nb: NotebookNode) -> NotebookNode:
    """The assembled notebook with ``expected=`` stripped from every test cell."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if C.is_test(cell):
            cell.source = strip_expected(cell.source)
    return nb


# ------------------------------------------------------------------------------------------------------ scoring
def _error(cell: NotebookNode) -> dict | None:
    return next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)


def _records(cell: NotebookNode) -> dict[str, dict]:
    """The check records a cell emitted, by name; a later record of the same name replaces an earlier one."""
    found: dict[str, dict] = {}
    for output in cell.get("outputs", []):
        record = output.get("data", {}).get(K.MIME) if output.get("output_type") == "display_data" else None
        if isinstance(record, dict) and isinstance(record.get("name"), str):
            found[record["name"]] = record
    return found


#: Exception names feedback may show when grading: Python's built-in ones. A student's kernel can raise any
#: class with any name and message, so when grading only these names pass, and never a message.
SAFE_ERRORS = frozenset(name for name, obj in vars(builtins).items()
                        if isinstance(obj, type) and issubclass(obj, BaseException))


def _error_text(err: dict | None, *, grading: bool = False) -> str:
    """The error a cell stopped with, for feedback. Self-check: ``Name: message`` (first line; the learner's own
    kernel). Grading: only the exception's name, and only when it is a built-in one — everything else in an error
    output (message, traceback, a class named after a line of hidden test code) came from the student's kernel."""
    if err is None:
        return ""
    name = str(err.get("ename", "Error"))
    if grading:
        return name if name in SAFE_ERRORS else "an exception"
    value = str(err.get("evalue", "")).strip().splitlines()
    return f"{name}: {value[0][:300]}" if value else name


@dataclass
class Reference:
    """What the reference solution's run recorded: per test cell, its check records (name → record)."""

    records: dict[str, dict[str, dict]]


def _walk(executed: NotebookNode):
    """Yield (test cell, unfinished) for each executed test cell; unfinished = an answer cell since the previous
    test cell raised NotImplementedError."""
    unfinished = False
    for cell in executed.cells:
        if cell.cell_type != "code" or C.is_manual(cell):  # a blank manual answer says nothing about the tests
            continue
        err = _error(cell)
        if C.is_solution(cell):
            unfinished = unfinished or (err is not None and err.get("ename") == "NotImplementedError")
        elif C.is_graded(cell):
            yield cell, unfinished
            unfinished = False


def score(executed: NotebookNode, source: NotebookNode, stopped: str | None = None,
          reference: Reference | None = None) -> list[CellResult]:
    """One CellResult per test cell of ``source``, from the outputs of ``executed``.

    With a ``reference``, each check is judged against the reference's value here; without one (the self-check),
    the kernel's own verdicts are used. A cell whose reference has no checks passes when it ran without error.
    """
    results: dict[str, CellResult] = {}
    for cell, unfinished in _walk(executed):
        gid, max_points, err = C.grade_id(cell), C.points(cell), _error(cell)
        if cell.get("execution_count") is None:
            results[gid] = CellResult(gid, 0.0, max_points, NOT_RUN, stopped or "not executed")
            continue
        mine = _records(cell)
        grading = reference is not None
        expected = reference.records.get(gid, {}) if grading else mine
        not_attempted = unfinished or (err is not None and err.get("ename") == "NotImplementedError")
        if not expected:  # a cell without checks: it passes when it runs without error
            passed = err is None
            results[gid] = CellResult(gid, max_points if passed else 0.0, max_points,
                                      PASSED if passed else NOT_ATTEMPTED if not_attempted else FAILED,
                                      "" if passed else _error_text(err, grading=grading))
            continue
        verdicts = []
        for name, ref in expected.items():
            weight = float(ref.get("spec", {}).get("weight", 1.0))
            got = mine.get(name)
            if got is None:
                why = (f"not reached: the test stopped with {_error_text(err, grading=grading)}" if err
                       else "not reached")
                verdicts.append(CheckResult(name, weight, False, why))
            elif reference is None:
                verdicts.append(CheckResult(name, weight, bool(got.get("passed")), str(got.get("message", ""))))
            else:
                right = ref.get("expected", ref.get("actual"))
                try:
                    ok, why = K.compare(ref["kind"], got.get("actual", {}), right, ref.get("spec", {}), echo=False)
                except Exception:  # a malformed record: the student's code wrote it
                    ok, why = False, "unreadable result"
                hint = str(ref.get("hint") or "")  # from the reference run: the student's kernel cannot change it
                verdicts.append(CheckResult(name, weight, ok, "; ".join(s for s in (why, hint) if s and not ok)))
        total = sum(v.weight for v in verdicts) or 1.0
        points = round(max_points * sum(v.weight for v in verdicts if v.passed) / total, 6)
        status = PASSED if points == max_points else NOT_ATTEMPTED if not_attempted and points == 0 else FAILED
        message = "" if status == PASSED else ("the answer still raises NotImplementedError" if status == NOT_ATTEMPTED
                                               else "; ".join(f"{v.name}: {v.message}" for v in verdicts
                                                              if not v.passed))
        results[gid] = CellResult(gid, points, max_points, status, message, verdicts)
    answers = {C.grade_id(c): c.get("source", "") for c in executed.cells if C.is_manual(c)}
    return [manual_verdict(c, answers.get(C.grade_id(c), "")) if C.is_manual(c) else results.get(C.grade_id(c))
            or CellResult(C.grade_id(c), 0.0, C.points(c), NOT_RUN, stopped or "not run") for c in graded_cells(source)]


def manual_verdict(cell: NotebookNode, answer: str) -> CellResult:
    """A manually graded answer before its mark: "not attempted" (0 points) when it is blank or still as handed
    out, else "needs manual grading" (0 points until the instructor's mark is merged). Whether its code ran does
    not matter: a person reads it."""
    gid, max_points = C.grade_id(cell), C.points(cell)
    if not answer.strip() or C.is_blank_answer(answer, cell):
        return CellResult(gid, 0.0, max_points, NOT_ATTEMPTED, "no answer (the cell is as handed out): 0 points")
    return CellResult(gid, 0.0, max_points, NEEDS_MANUAL, "marked by your instructor: 0 points until then")


def unscored(source: NotebookNode, why: str) -> list[CellResult]:
    return [CellResult(C.grade_id(c), 0.0, C.points(c), NOT_RUN, why) for c in graded_cells(source)]


# ------------------------------------------------------------------------------------------------------ running
GRADE_ENV = {"DLCOURSE_SCALE": "smoke", "NBGRADER_EXECUTION": "autograde", K.MODE_ENV: "grade"}
COLLECT_ENV = {**GRADE_ENV, K.MODE_ENV: "collect"}


def run_reference(source: NotebookNode, limits: Limits = Limits()) -> Reference:
    """Run the reference solution (with hidden tests) in this environment; it must score full marks.

    Raises ReferenceError naming every test cell or check that failed, so a missing package or a broken lab stops
    the batch before anyone gets an unfair zero.
    """
    executed, stopped = run(assemble(source, source), limits, COLLECT_ENV)
    cells = score(executed, source, stopped)
    problems = [f"{c.grade_id}: {c.status}" + (f" ({c.message})" if c.message else "") for c in cells
                if c.status not in (PASSED, NEEDS_MANUAL)]
    if stopped:
        problems.insert(0, stopped)
    if problems:
        raise ReferenceError("the reference solution does not score full marks in this environment, so nobody is "
                             "graded: " + "; ".join(problems) + ". Fix the environment (e.g. install what the "
                             "lab imports) or the lab, then grade again.")
    return Reference({C.grade_id(cell): _records(cell) for cell, _ in _walk(executed)})


def _language(nb: NotebookNode) -> str:
    meta = nb.get("metadata", {})
    return str(meta.get("kernelspec", {}).get("language") or meta.get("language_info", {}).get("name")
               or "python").lower()


def read_submission(path: Path) -> tuple[NotebookNode | None, str]:
    """The submitted notebook, or None and a status saying what is wrong with the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, f"unreadable file: {exc.strerror}"
    if not raw.strip():
        return None, "invalid notebook: the file is empty"
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
    except UnicodeDecodeError:
        return None, "invalid notebook: the file is not UTF-8 text"
    except Exception as exc:  # invalid JSON or not a notebook
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return None, f"invalid notebook: {type(exc).__name__}: {first}".rstrip(": ")
    if _language(nb) != "python":
        return None, f"wrong language: the notebook is for {_language(nb)}, the lab is Python"
    return nb, ""


def grade_notebook(source: NotebookNode, path: Path | str, reference: Reference | None, *, student: str = "",
                   limits: Limits = Limits()) -> Result:
    """Grade one submitted file; never raises for a bad submission. ``reference=None`` → self-check verdicts."""
    import time

    start = time.monotonic()
    path = Path(path)
    submission, problem = read_submission(path)
    if submission is None:
        return Result(student, problem, unscored(source, problem), str(path))
    nb = assemble(source, submission)
    if reference is not None:
        nb = for_grading(nb)
    executed, stopped = run(nb, limits, GRADE_ENV if reference is not None else COLLECT_ENV)
    cells = score(executed, source, stopped, reference)
    return Result(student, stopped or "graded", cells, str(path), round(time.monotonic() - start, 2))


# ---------------------------------------------------------------------------------------------- the self-check
def lab_source_for(notebook: Path | str, root: Path | str | None = None) -> NotebookNode:
    """The pristine student lab for a learner's notebook, rebuilt from ``solutions/`` (so edits to tests don't count).

    Found by the notebook's ``labNN`` prefix in the course's ``solutions/`` folder.
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


def check(notebook: Path | str, *, limits: Limits = Limits(cell_timeout=300, submission_timeout=1800),
          root: Path | str | None = None) -> Result:
    """The learner's self-check: run ``notebook`` with the lab's visible tests and report each exercise."""
    source = lab_source_for(notebook, root)
    return grade_notebook(source, notebook, None, student=Path(notebook).stem, limits=limits)
