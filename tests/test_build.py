"""Generated notebooks and labs: deterministic, faithful to the source, drift detected, learners' work kept."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dlcourse.grading import build
from dlcourse.grading import cells as C

ROOT = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "fixtures" / "lab99_tiny.py"
NOTEBOOK = "# %% [markdown]\n# # A notebook\n\n# %%\nx = 1 + 1\nx\n"


@pytest.fixture
def course(tmp_path):
    for folder in ("notebooks", "solutions", "labs"):
        (tmp_path / folder).mkdir()
    (tmp_path / "notebooks" / "00_demo.py").write_text(NOTEBOOK)
    shutil.copy(TINY, tmp_path / "solutions" / "lab99_tiny.py")
    return tmp_path


def test_sync_writes_every_pair_and_is_idempotent(course):
    first = build.sync(course)
    names = sorted(p.relative_to(course).as_posix() for p in first.written)
    assert names == ["labs/lab99_tiny.ipynb", "labs/lab99_tiny.py", "notebooks/00_demo.ipynb",
                     "solutions/lab99_tiny.ipynb"]
    before = {p: p.read_bytes() for p in first.written}
    second = build.sync(course)
    assert second.written == [] and second.clean
    assert {p: p.read_bytes() for p in first.written} == before  # byte-identical


def test_generated_notebooks_have_stable_metadata_and_no_outputs(course):
    build.sync(course)
    nb = nbformat.read(course / "notebooks" / "00_demo.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata == {"kernelspec": build.KERNELSPEC, "language_info": {"name": "python"},
                           "jupytext": {"formats": "ipynb,py:percent"}}
    assert [c.id for c in nb.cells] == ["cell-000", "cell-001"]
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")


def test_student_lab_hides_solutions_and_hidden_tests_and_locks_cells(course):
    build.sync(course)
    lab = nbformat.read(course / "labs" / "lab99_tiny.ipynb", as_version=4)
    text = (course / "labs" / "lab99_tiny.ipynb").read_text()
    assert "2 * x" not in text and "double(torch.tensor([-3.0" not in text and "HIDDEN" not in text
    assert "jupytext" not in lab.metadata
    answers = [c for c in lab.cells if C.is_solution(c)]
    assert [c.source for c in answers] == [
        "def double(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()",
        "def square(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()",
        "def halve(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"]
    for cell in lab.cells:
        locked = C.is_locked(cell)
        assert cell.metadata.get("editable", True) is not locked
        assert cell.metadata.get("deletable", True) is not locked
        assert set(cell.metadata) <= set(build.LAB_CELL_METADATA)
    assert [c.id for c in lab.cells] == ["intro", "setup", "double-answer", "double-tests", "square-answer",
                                         "square-tests", "halve-answer", "halve-tests"]
    py = (course / "labs" / "lab99_tiny.py").read_text()
    assert "jupytext_version" not in py and "NotImplementedError" in py and "2 * x" not in py


def test_solution_only_cells_are_dropped_and_task_tags_removed(course):
    src = course / "solutions" / "lab99_tiny.py"
    src.write_text(src.read_text() + '\n# %% tags=["solution"]\nprint("worked example")\n'
                   '\n# %% [markdown] tags=["task"]\n# Try it on your own data.\n')
    build.sync(course)
    lab = nbformat.read(course / "labs" / "lab99_tiny.ipynb", as_version=4)
    assert not any("worked example" in c.source for c in lab.cells)
    task = [c for c in lab.cells if "own data" in c.source]
    assert len(task) == 1 and "tags" not in task[0].metadata


def test_check_reports_drift_and_stale_files_without_writing(course):
    build.sync(course)
    src = course / "notebooks" / "00_demo.py"
    src.write_text(src.read_text() + "\n# %%\ny = 3\n")
    (course / "notebooks" / "99_orphan.ipynb").write_text("{}")
    report = build.sync(course, check=True)
    assert [p.name for p in report.differing] == ["00_demo.ipynb"]
    assert [p.name for p in report.stale] == ["99_orphan.ipynb"]
    assert not report.clean and report.written == []
    assert "y = 3" not in (course / "notebooks" / "00_demo.ipynb").read_text()


def test_missing_only_fills_gaps_and_leaves_existing_files(course):
    build.sync(course)
    target = course / "notebooks" / "00_demo.ipynb"
    target.write_text(target.read_text().replace("1 + 1", "1 + 2"))
    (course / "labs" / "lab99_tiny.py").unlink()
    report = build.sync(course, missing_only=True)
    assert [p.name for p in report.written] == ["lab99_tiny.py"]
    assert "1 + 2" in target.read_text()


def test_sync_never_overwrites_a_learners_work(course):
    build.sync(course)
    lab_path = course / "labs" / "lab99_tiny.ipynb"
    lab = nbformat.read(lab_path, as_version=4)
    answer = next(c for c in lab.cells if C.grade_id(c) == "double-answer")
    answer.source = "def double(x):\n    return x + x"
    nbformat.write(lab, lab_path)
    src = course / "solutions" / "lab99_tiny.py"
    src.write_text(src.read_text().replace("# # Tiny lab", "# # Tiny lab, revised"))  # the instructor edits
    report = build.sync(course)
    assert report.kept == [lab_path]
    assert "return x + x" in lab_path.read_text()
    forced = build.sync(course, force=True)
    assert lab_path in forced.written and "return x + x" not in lab_path.read_text()


def test_unparseable_source_names_the_file(tmp_path):
    bad = tmp_path / "x.ipynb"
    bad.write_text("{ nope")
    with pytest.raises(ValueError, match="x.ipynb is not a readable notebook"):
        build.read_notebook(bad)


def test_the_committed_course_is_in_sync():
    report = build.sync(ROOT, check=True)
    assert report.clean, f"run `dlcourse sync`: differing {report.differing}, stale {report.stale}"


LABS = sorted((ROOT / "solutions").glob("lab*.py"))


@pytest.fixture(scope="module")
def nbgrader_release(tmp_path_factory) -> Path:
    """nbgrader's release of every lab, generated in one run (one assignment holding all the solution notebooks:
    nbgrader starts in seconds, so one run instead of one per lab)."""
    pytest.importorskip("nbgrader", reason="nbgrader is in the `test` extra, not installed here (a GPU box)")
    root = tmp_path_factory.mktemp("nbgrader")
    assignment = root / "source" / "labs"
    assignment.mkdir(parents=True)
    for solution in LABS:
        shutil.copy(solution.with_suffix(".ipynb"), assignment)
    env_path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"  # nbgrader runs alembic
    run = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "labs",
                          f"--CourseDirectory.root={root}", "--force"],
                         capture_output=True, text=True, env={**os.environ, "PATH": env_path}, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return root / "release" / "labs"


@pytest.mark.parametrize("solution", LABS, ids=lambda p: p.stem)
def test_real_nbgrader_generates_the_same_student_version(nbgrader_release, solution):
    """nbgrader accepts our solution notebook, and its release version has the same cells as our lab."""
    released = nbformat.read(nbgrader_release / f"{solution.stem}.ipynb", as_version=4)
    ours = nbformat.read(ROOT / "labs" / f"{solution.stem}.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in released.cells] == [(c.cell_type, c.source) for c in ours.cells]
    assert [C.grade_id(c) for c in released.cells] == [C.grade_id(c) for c in ours.cells]
