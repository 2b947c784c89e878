"""Grading one notebook: assembly, stripping the answers out of test cells, hidden overlays, the reference run,
the learner's self-check and the command line. The adversarial catalogue is in test_grading_adversarial.py."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dlcourse.grading import autograde, build
from dlcourse.grading import cells as C
from dlcourse.grading.batch import grade_batch
from dlcourse.grading.kernel import Limits

TINY = Path(__file__).parent / "fixtures" / "lab99_tiny.py"
FAST = Limits(cell_timeout=60, submission_timeout=120, memory_mb=None)


def _cell(nb, gid):
    return next(c for c in nb.cells if C.grade_id(c) == gid)


def _answer(nb, gid, source):
    nb = copy.deepcopy(nb)
    _cell(nb, gid).source = source
    return nb


def test_strip_expected_removes_every_answer_and_keeps_the_rest():
    source = ("check_close('a', f(x), expected=torch.softmax(x, 1), atol=1e-6)  # keep me\n"
              "K.check_equal('b', g(),\n    expected={'k': [1,\n 2]}, weight=2)\n"
              "check_true('c', h())\nother(expected=5)\nassert 'é' == 'é'; check_close('é', 1, expected=1)")
    stripped = autograde.strip_expected(source)
    assert stripped == ("check_close('a', f(x), expected=None, atol=1e-6)  # keep me\n"
                        "K.check_equal('b', g(),\n    expected=None, weight=2)\n"
                        "check_true('c', h())\nother(expected=5)\nassert 'é' == 'é'; check_close('é', 1, expected=None)")
    assert autograde.strip_expected("this is not python (") == "this is not python ("


def test_assemble_restores_structure_and_keeps_student_extras():
    solution = build.read_notebook(TINY)
    lab = build.make_lab(solution)
    mine = _answer(lab, "double-answer", "def double(x):\n    return x + x")
    mine.cells.insert(3, nbformat.v4.new_code_cell("print('my scratch work')"))
    _cell(mine, "double-tests").source = "pass"
    nb = autograde.assemble(solution, mine)
    sources = [c.source for c in nb.cells]
    assert sources[2] == "def double(x):\n    return x + x"
    assert sources[3] == "print('my scratch work')"
    assert _cell(nb, "double-tests").source == _cell(solution, "double-tests").source  # hidden tests are back
    assert [C.grade_id(c) for c in nb.cells if C.grade_id(c)] == [C.grade_id(c) for c in solution.cells]


def test_hidden_overlay_replaces_public_test_cells(tmp_path):
    public = tmp_path / "lab99_tiny.py"
    text = TINY.read_text()
    public.write_text(text.replace('check_close("square of a range"', 'pass  # check_close("square of a range"'))
    private = tmp_path / "private"
    private.mkdir()
    (private / "lab99_tiny.py").write_text(text)
    merged = autograde.load_source(public, hidden=private)
    assert "square of a range" in _cell(merged, "square-tests").source
    assert 'pass  # check_close' not in _cell(merged, "square-tests").source
    with pytest.raises(FileNotFoundError, match="no hidden tests for lab99_tiny"):
        autograde.load_source(public, hidden=tmp_path / "nowhere")


def test_reference_that_fails_here_stops_grading_with_the_reason(tmp_path):
    broken = tmp_path / "lab99_tiny.py"
    broken.write_text(TINY.read_text().replace("return x * x", "return x * x + 1"))
    with pytest.raises(autograde.ReferenceError, match=r"square-tests: failed \(square of 3: values differ"):
        autograde.run_reference(build.read_notebook(broken), FAST)


def test_self_check_uses_the_visible_tests_of_the_pristine_lab(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "lab99_tiny.py").write_text(TINY.read_text())
    lab = build.make_lab(build.read_notebook(TINY))
    mine = _answer(lab, "double-answer", "def double(x):\n    return x * 2 if bool((x > 0).all()) else x")
    mine = _answer(mine, "halve-answer", "def halve(x):\n    return x / 2")
    _cell(mine, "square-tests").source = "pass"  # tampering with a visible test does not help
    path = tmp_path / "work" / "lab99_tiny.ipynb"
    path.parent.mkdir()
    path.write_text(build.notebook_text(mine))
    result = autograde.check(path, root=tmp_path, limits=FAST)
    assert [(c.grade_id, c.status) for c in result.cells] == [
        ("double-tests", "passed"), ("square-tests", "not attempted"), ("halve-tests", "passed")]
    assert [k.name for k in result.cells[0].checks] == ["double of a vector"]  # visible checks only


def test_check_without_a_course_says_where_it_looked(tmp_path):
    path = tmp_path / "lab42_unknown.ipynb"
    path.write_text("{}")
    with pytest.raises(FileNotFoundError, match="solutions/lab42_"):
        autograde.lab_source_for(path, root=tmp_path)


def test_batch_resumes_and_force_regrades(tmp_path, sandbox):
    lab = build.make_lab(build.read_notebook(TINY))
    for student in ("ada", "bo"):
        (tmp_path / "subs" / student).mkdir(parents=True)
        (tmp_path / "subs" / student / "lab99_tiny.ipynb").write_text(build.notebook_text(lab))
    out = tmp_path / "out"
    first = grade_batch(TINY, tmp_path / "subs", out, workers=2, limits=FAST, sandbox=sandbox, progress=False)
    assert [(r.student, r.total, r.status) for r in first] == [("ada", 0, "graded"), ("bo", 0, "graded")]
    saved = json.loads((out / "results" / "ada.json").read_text())
    saved["status"] = "graded (kept)"
    (out / "results" / "ada.json").write_text(json.dumps(saved))
    (out / "notes.txt").write_text("the instructor's own file")
    again = grade_batch(TINY, tmp_path / "subs", out, workers=2, limits=FAST, sandbox=sandbox, progress=False)
    assert again[0].status == "graded (kept)"  # finished students are not graded twice
    assert (out / "notes.txt").read_text() == "the instructor's own file"  # nothing of the instructor's is lost
    forced = grade_batch(TINY, tmp_path / "subs", out, workers=1, limits=FAST, force=True, sandbox=sandbox,
                         progress=False)
    assert forced[0].status == "graded"
    assert (out / "grading.log").read_text().count("reference solution scores full marks") == 2


def test_cli_grade_and_check_exit_codes(tmp_path, sandbox):
    solution = build.read_notebook(TINY)
    (tmp_path / "subs" / "ada").mkdir(parents=True)
    (tmp_path / "subs" / "ada" / "lab99_tiny.ipynb").write_text(build.notebook_text(build.make_lab(solution)))
    dlcourse = str(Path(sys.executable).parent / "dlcourse")
    run = subprocess.run([dlcourse, "grade", str(TINY), str(tmp_path / "subs"), "--out", str(tmp_path / "out"),
                          "--workers", "1", "--sandbox", sandbox], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "grades.csv").read_text().splitlines()[1] == "ada,0,0,0,0,6,graded"
    assert (tmp_path / "out" / "feedback" / "ada.html").exists()
    missing = subprocess.run([dlcourse, "grade", str(TINY), str(tmp_path / "nowhere"), "--out", str(tmp_path)],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "do not exist" in missing.stderr
    broken = tmp_path / "lab99_tiny.py"
    broken.write_text(TINY.read_text().replace("return x / 2", "return x / 3"))
    refused = subprocess.run([dlcourse, "grade", str(broken), str(tmp_path / "subs"), "--out",
                              str(tmp_path / "out2"), "--sandbox", sandbox], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 3 and "halve-tests" in refused.stderr and "nobody is graded" in refused.stderr


def test_kernel_threads_follow_the_limits():
    """Kernels graded side by side get a share of the cores (oversubscribed torch threads run many times slower)."""
    from dlcourse.grading.kernel import run

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, torch; print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())")])
    executed, stopped = run(nb, Limits(cell_timeout=60, submission_timeout=120, memory_mb=None, threads=1),
                            {})
    assert stopped is None
    assert executed.cells[0].outputs[0]["text"].split() == ["1", "1"]


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_grading_kernel_uses_cuda_under_the_memory_cap():
    """RLIMIT_DATA caps the kernel's heap, not the GPU's memory or CUDA's virtual reservations: a grading kernel
    must still initialise CUDA, train a step there and report a check (labs at full scale on a GPU box)."""
    from dlcourse.grading import kernel

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import torch\nx = torch.randn(2048, 2048, device='cuda', requires_grad=True)\n"
        "(x @ x).sum().backward()\ntorch.cuda.synchronize()\nprint('grad', x.grad.device, float(x.grad.norm()) > 0)")]
    nb, stopped = kernel.run(nb, Limits(cell_timeout=120, submission_timeout=180, memory_mb=4096, gpu=True),
                             env={}, stop_on_error=True)
    assert stopped is None, stopped
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert "grad cuda:0 True" in text


def test_grading_kernels_see_no_gpu_unless_asked(monkeypatch):
    """Grades must not depend on the machine: by default a kernel is told there is no GPU (checked through the
    environment it receives, so this runs on CPU CI too); ``Limits(gpu=True)`` (``dlcourse grade --gpu``,
    ``dlcourse verify``) passes the machine's GPUs through."""
    from dlcourse.grading import kernel

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os\nprint(repr(os.environ.get('CUDA_VISIBLE_DEVICES')))")]
    seen = []
    for gpu in (False, True):
        ran, stopped = kernel.run(copy.deepcopy(nb), Limits(cell_timeout=60, submission_timeout=90, memory_mb=None,
                                                            gpu=gpu), env={}, stop_on_error=True)
        assert stopped is None, stopped
        seen.append(ran.cells[0].outputs[0]["text"].strip())
    assert seen == ["''", "'0'"]
