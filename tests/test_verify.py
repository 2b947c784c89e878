"""Tests for ``dlcourse verify``: which notebooks it picks, what it records for a notebook that passes, fails or runs
too long, the JSON report (round trip, merging, a corrupt file) and the command line.

Four real kernels in all (a few seconds each): one sequential run of three notebooks, one run with two jobs.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from dlcourse import cli
from dlcourse import verify as V


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def course(tmp_path: Path) -> Path:
    """A course folder with three notebooks (one passes, one fails, one sleeps) and one lab solution."""
    _notebook(tmp_path / "notebooks" / "01_pass.ipynb",
              "import os\nscale = os.environ['DLCOURSE_SCALE']", "assert scale == 'smoke', scale")
    _notebook(tmp_path / "notebooks" / "02_fail.ipynb", "x = 1", "raise ValueError('the model did not learn')",
              "never = True")
    _notebook(tmp_path / "notebooks" / "03_slow.ipynb", "import time\ntime.sleep(60)")
    _notebook(tmp_path / "solutions" / "lab01_pass.ipynb", "print('ok')")
    return tmp_path


def test_course_notebooks_selects_by_number(course):
    everything = [p.relative_to(course).as_posix() for p in V.course_notebooks(course)]
    assert everything == ["notebooks/01_pass.ipynb", "notebooks/02_fail.ipynb", "notebooks/03_slow.ipynb",
                          "solutions/lab01_pass.ipynb"]
    only = [p.name for p in V.course_notebooks(course, ["1", "lab02"])]
    assert only == ["01_pass.ipynb", "02_fail.ipynb", "lab01_pass.ipynb"]
    assert [p.name for p in V.course_notebooks(course, ["01"], labs=False)] == ["01_pass.ipynb"]
    with pytest.raises(ValueError, match="no notebook or lab numbered 42"):
        V.course_notebooks(course, ["42"])


def test_verify_records_pass_fail_and_timeout(course):
    seen = []
    paths = V.course_notebooks(course, labs=False)
    target = course / "reports" / "smoke.json"

    def on_result(result):
        seen.append(result)  # the report file already holds every result so far (an interrupted run keeps them)
        assert list(V.Report.from_json(target.read_text()).results) == [r.path for r in seen]

    report = V.verify(course, paths, "smoke", notebook_timeout=8, cell_timeout=8, on_result=on_result,
                      save_dir=course / "executed", report_to=target)
    results = report.results
    assert [r.path for r in seen] == ["notebooks/01_pass.ipynb", "notebooks/02_fail.ipynb", "notebooks/03_slow.ipynb"]
    assert results["notebooks/01_pass.ipynb"].status == "passed"
    assert results["notebooks/01_pass.ipynb"].error == ""
    failed = results["notebooks/02_fail.ipynb"]
    assert failed.status == "failed"
    assert failed.error == "cell 1: ValueError: the model did not learn"
    slow = results["notebooks/03_slow.ipynb"]
    assert slow.status == "timeout" and 7 <= slow.seconds < 40
    assert report.scale == "smoke" and report.device in ("cpu", "cuda", "mps") and report.device_name
    # the failing notebook stopped at the failing cell: the cell after it never ran
    executed = nbformat.read(course / "executed" / "notebooks" / "02_fail.ipynb", as_version=4)
    assert executed.cells[2].get("execution_count") is None
    assert all(r.parallel == 1 and r.measured.endswith("Z") for r in results.values())


def test_verify_runs_jobs_in_parallel_and_counts_them(course):
    paths = V.course_notebooks(course, ["01"])
    report = V.verify(course, paths, "smoke", jobs=2, notebook_timeout=60)
    assert {r.path: r.status for r in report.results.values()} == {
        "notebooks/01_pass.ipynb": "passed", "solutions/lab01_pass.ipynb": "passed"}
    assert {r.parallel for r in report.results.values()} == {2}


def test_verify_refuses_an_unknown_scale(course):
    with pytest.raises(ValueError, match="not one of smoke, small, full"):
        V.verify(course, [], "huge")


def _report(scale="small", device="cpu", name="Some CPU (2 cores)", **results) -> V.Report:
    return V.Report(scale, device, name, "2.x", "3.11",
                    {p: V.Result(p, status, seconds, measured="2026-12-04T10:00:00Z") for p, (status, seconds)
                     in results.items()})


def test_report_round_trip_and_merge(tmp_path):
    target = tmp_path / "reports" / "small-cpu-2core.json"
    V.merge_into(target, _report(**{"notebooks/01_a.ipynb": ("passed", 30.0), "notebooks/02_b.ipynb": ("failed", 5.0)}))
    merged = V.merge_into(target, _report(**{"notebooks/02_b.ipynb": ("passed", 60.0)}))
    assert {p: r.status for p, r in merged.results.items()} == {"notebooks/01_a.ipynb": "passed",
                                                                "notebooks/02_b.ipynb": "passed"}
    again = V.Report.from_json(target.read_text())
    assert again == merged
    assert again.results["notebooks/02_b.ipynb"].minutes == 1.0
    # another device's run replaces rather than mixes
    other = V.merge_into(target, _report(name="Other CPU (8 cores)", **{"notebooks/03_c.ipynb": ("passed", 1.0)}))
    assert list(other.results) == ["notebooks/03_c.ipynb"]


def test_corrupt_report_names_the_file(tmp_path):
    bad = tmp_path / "smoke-cpu-2core.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="smoke-cpu-2core.json is not a readable dlcourse verify report"):
        V.merge_into(bad, _report())
    bad.write_text(json.dumps({"dlcourse_verify": 99}))
    with pytest.raises(ValueError, match="version-1"):
        V.Report.from_json(bad.read_text(), str(bad))


def test_report_path_names_scale_and_device(tmp_path, monkeypatch):
    monkeypatch.setattr(V.os, "cpu_count", lambda: 2)
    assert V.report_path(tmp_path, "small", "cpu", "AMD EPYC (2 cores)").name == "small-cpu-2core.json"
    assert V.report_path(tmp_path, "full", "cuda", "NVIDIA H200").name == "full-nvidia-h200.json"


def test_cli_verify_writes_report_and_exit_code(course, monkeypatch, capsys):
    monkeypatch.chdir(course)
    report = course / "r.json"
    code = cli.main(["verify", "--scale", "smoke", "--only", "02", "--no-labs", "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 1
    assert "failed" in out and "ValueError: the model did not learn" in out and "0 of 1 passed" in out
    assert V.Report.from_json(report.read_text()).results["notebooks/02_fail.ipynb"].status == "failed"
    assert cli.main(["verify", "--scale", "enormous"]) == 2
    assert "not a scale" in capsys.readouterr().err
