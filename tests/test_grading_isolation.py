"""The grader's isolation: the bubblewrap sandbox, the reaper and the integrity check, each on its own, then the
two defences that must hold without the sandbox (``--sandbox none``) in real batches."""

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import psutil
import pytest
from test_grading_adversarial import IDENTITY_DOUBLE, TINY, answered, daemon_cell, daemons_alive, extra_cell, text

from dlcourse.grading import integrity, sandbox
from dlcourse.grading.batch import grade_batch
from dlcourse.grading.kernel import Limits, run

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------------- sandbox
def test_sandbox_modes_are_checked():
    assert sandbox.resolve("none") == "none"
    with pytest.raises(sandbox.SandboxError, match="unknown sandbox 'docker'"):
        sandbox.resolve("docker")


def test_auto_never_falls_back_silently(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    if sys.platform.startswith("linux"):
        with pytest.raises(sandbox.SandboxError, match="apt-get install bubblewrap"):
            sandbox.resolve("auto")
    assert sandbox.available()[0] == "none" and "bubblewrap" in sandbox.available()[1]


CONFINED = textwrap.dedent("""
    import json, os, pathlib, socket, sys
    import dlcourse
    found = {}
    found["solutions"] = (pathlib.Path(dlcourse.__file__).resolve().parents[1] / "solutions").exists()
    try:
        pathlib.Path(dlcourse.__file__).with_name("planted.py").write_text("x = 1")
        found["package_writable"] = True
    except OSError:
        found["package_writable"] = False
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
        found["network"] = True
    except OSError:
        found["network"] = False
    socket.getaddrinfo(socket.gethostname(), None)  # torchrun and gloo need the host name to resolve
    found["processes"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    found["home"] = str(pathlib.Path.home())
    found["tmp_writable"] = pathlib.Path("/tmp/x").write_text("ok") == 2
    print(json.dumps(found))
""")


def test_a_confined_process_sees_only_what_a_kernel_needs(bwrap, tmp_path):
    work, runtime = tmp_path / "work", tmp_path / "runtime"
    work.mkdir()
    runtime.mkdir()
    (work / "probe.py").write_text(CONFINED)
    server = socket.create_server(("127.0.0.1", 0))
    try:
        done = subprocess.run([*sandbox.bwrap_prefix(work, runtime), sys.executable, "probe.py",
                               str(server.getsockname()[1])], capture_output=True, text=True, timeout=120)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert (REPO / "solutions").exists() and not found["solutions"]
    assert not found["package_writable"] and not (REPO / "dlcourse" / "planted.py").exists()
    assert not found["network"]
    assert len(found["processes"]) <= 3  # bwrap's init, python, maybe a helper: nothing of the host's
    assert found["home"] == str(work) and found["tmp_writable"]


@pytest.mark.parametrize("mode", ["none", "bwrap"])
def test_a_finished_run_leaves_no_process(mode, request):
    if mode == "bwrap":
        request.getfixturevalue("bwrap")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb, stopped = run(nb, Limits(sandbox=mode, submission_timeout=120), {})
    assert stopped is None and nb.cells[0].outputs[0]["text"] == "42\n"
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()


# -------------------------------------------------------------------------------------------------------- reaper
LEAVE_A_DAEMON = textwrap.dedent("""
    import os, sys, time
    import psutil
    from dlcourse.grading import reaper
    assert reaper.become_subreaper()
    if os.fork() == 0:                      # a child that double-forks a session leader and exits
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)  # reaper-test-daemon"])
        os._exit(0)
    os.wait()
    time.sleep(0.5)
    me = psutil.Process()
    orphans = [p.pid for p in me.children(recursive=True)]
    killed = reaper.kill_descendants()
    print(len(orphans), killed, len(me.children(recursive=True)))
""")


def test_the_subreaper_adopts_and_kills_a_double_forked_daemon():
    done = subprocess.run([sys.executable, "-c", LEAVE_A_DAEMON], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1", "0"]  # the orphan was adopted (not init's), killed, and reaped
    assert not [p for p in psutil.process_iter(["cmdline"]) if "reaper-test-daemon" in " ".join(
        p.info["cmdline"] or [])]


# ----------------------------------------------------------------------------------------------------- integrity
def test_integrity_names_changed_added_and_removed_files(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("a = 1")
    (tmp_path / "pkg" / "b.py").write_text("b = 1")
    (tmp_path / "lab.py").write_text("lab")
    before = integrity.snapshot(tmp_path / "pkg", tmp_path / "lab.py")
    assert integrity.changes(before, tmp_path / "pkg", tmp_path / "lab.py") == []
    (tmp_path / "pkg" / "a.py").write_text("a = 2")
    (tmp_path / "pkg" / "b.py").unlink()
    (tmp_path / "pkg" / "c.py").write_text("c")
    assert integrity.changes(before, tmp_path / "pkg", tmp_path / "lab.py") == [
        f"changed {tmp_path / 'pkg' / 'a.py'}", f"removed {tmp_path / 'pkg' / 'b.py'}",
        f"added {tmp_path / 'pkg' / 'c.py'}"]


def test_course_roots_are_the_package_the_lab_and_the_overlay(tmp_path):
    roots = integrity.course_roots(TINY, tmp_path)
    assert roots == [REPO / "dlcourse", TINY.resolve(), tmp_path.resolve()]


# ------------------------------------------------------------------------------------- batches without a sandbox
def write_class(root: Path, notebooks: dict) -> Path:
    for student, nb in notebooks.items():
        (root / student).mkdir(parents=True)
        (root / student / "lab99_tiny.ipynb").write_text(text(nb))
    return root


LIMITS = Limits(cell_timeout=20, submission_timeout=120, memory_mb=2048)


def test_without_the_sandbox_a_daemon_dies_before_its_result_is_written(tmp_path):
    out = tmp_path / "out"
    subs = write_class(tmp_path / "subs", {
        "a-daemon": extra_cell(answered(double_answer=IDENTITY_DOUBLE), "setup", daemon_cell(out)),
        "b-honest": answered()})
    results = grade_batch(TINY, subs, out, workers=1, limits=LIMITS, sandbox="none", progress=False)
    assert [(r.student, round(r.total, 4)) for r in results] == [("a-daemon", 4.6667), ("b-honest", 6)]
    assert daemons_alive() == []
    assert "mallory" not in (out / "grades.csv").read_text() + (out / "grades.json").read_text()
    assert "WARNING: kernels run WITHOUT a sandbox" in (out / "grading.log").read_text()


def test_without_the_sandbox_rewriting_course_files_stops_the_batch(tmp_path, monkeypatch):
    """A canary stands in for the course package (the real one must not be touched by a test): the student who
    appends to it is named, nothing graded after the last clean check is kept, and a re-run after restoring it
    grades the rest."""
    canary = tmp_path / "course" / "package.py"
    canary.parent.mkdir()
    canary.write_text("honest = True\n")
    monkeypatch.setattr(integrity, "course_roots", lambda lab, hidden: [canary.parent, Path(lab).resolve()])
    sabotage = f"with open({str(canary)!r}, 'a') as f:\n    f.write('honest = False\\n')"
    subs = write_class(tmp_path / "subs", {"a-honest": answered(),
                                           "b-saboteur": extra_cell(answered(), "setup", sabotage),
                                           "c-honest": answered()})
    out = tmp_path / "out"
    with pytest.raises(integrity.TamperError, match="changed while grading b-saboteur") as caught:
        grade_batch(TINY, subs, out, workers=1, limits=LIMITS, sandbox="none", progress=False)
    assert str(canary) in str(caught.value) and "Nothing was restored" in str(caught.value)
    assert canary.read_text() == "honest = True\nhonest = False\n"  # left for the instructor to see
    assert sorted(p.stem for p in (out / "results").glob("*.json")) == ["a-honest"]
    assert "STOPPED" in (out / "grading.log").read_text()
    canary.write_text("honest = True\n")
    (subs / "b-saboteur" / "lab99_tiny.ipynb").write_text(text(answered()))  # e.g. after talking to them
    results = grade_batch(TINY, subs, out, workers=1, limits=LIMITS, sandbox="none", progress=False)
    assert [(r.student, r.total) for r in results] == [("a-honest", 6), ("b-saboteur", 6), ("c-honest", 6)]
