"""Tests for the generated course map: minutes come from verify reports (smoke and small from a CPU, full from a
GPU), hand-written topics survive regeneration, the committed README matches its reports, and every notebook's
Colab bootstrap installs from the repository and ref that the Colab links open."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

from dlcourse import coursemap as M
from dlcourse.verify import Report, Result

ROOT = Path(__file__).resolve().parents[1]


def _report(scale: str, device: str, name: str, **runs) -> Report:
    results = {}
    for key, (status, seconds, day) in runs.items():
        path = key.replace("__", "/") + ".ipynb"
        results[path] = Result(path, status, seconds, measured=f"{day}T12:00:00Z", load_average=1.5)
    return Report(scale, device, name, results=results)


def _course(tmp_path: Path) -> Path:
    for rel in ("notebooks/00_intro.ipynb", "notebooks/01_loop.ipynb", "labs/lab01_loop.ipynb",
                "solutions/lab01_loop.ipynb"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nbformat.v4.new_notebook(), tmp_path / rel)
    return tmp_path


def test_minutes_cell_takes_cpu_for_smoke_small_and_gpu_for_full():
    reports = [
        _report("smoke", "cpu", "CPU A (2 cores)", notebooks__01_loop=("passed", 12.0, "2026-12-01")),
        _report("small", "cpu", "CPU A (2 cores)", notebooks__01_loop=("failed", 30.0, "2026-12-01")),
        _report("full", "cpu", "CPU A (2 cores)", notebooks__01_loop=("passed", 999.0, "2026-12-01")),  # ignored
        _report("full", "cuda", "NVIDIA H200", notebooks__01_loop=("passed", 90.0, "2026-12-02")),
    ]
    assert M.minutes_cell(reports, "notebooks/01_loop.ipynb") == "0.20 / failed / 1.50"
    assert M.minutes_cell(reports, "notebooks/00_intro.ipynb") == "n.m. / n.m. / n.m."


def test_newest_result_wins_across_reports():
    reports = [_report("smoke", "cpu", "Old CPU (4 cores)", notebooks__00_intro=("passed", 60.0, "2026-11-01")),
               _report("smoke", "cpu", "New CPU (2 cores)", notebooks__00_intro=("passed", 6.0, "2026-12-01"))]
    assert M.minutes_cell(reports, "notebooks/00_intro.ipynb").startswith("0.10 /")


def test_render_keeps_hand_written_cells_and_regenerates_the_rest(tmp_path):
    root = _course(tmp_path)
    old = ("<!-- course-map:begin -->\n| # | Notebook | Lab | Topics | Minutes (smoke / small / full) | GPU needed? |\n"
           "|---|---|---|---|---|---|\n"
           "| 01 | [x](y) | — | loops \\| and `fit` | 9 / 9 / 9 | no (CPU) |\n<!-- course-map:end -->")
    readme = f"# Course\n\n{old}\n\nAfter.\n"
    reports = [_report("smoke", "cpu", "CPU A (2 cores)", notebooks__01_loop=("passed", 6.0, "2026-12-04"),
                       solutions__lab01_loop=("passed", 3.0, "2026-12-04"))]
    text = M.render_readme(readme, root, reports)
    assert text.startswith("# Course\n\n<!-- course-map:begin") and text.endswith(M.END + "\n\nAfter.\n")
    row01 = next(line for line in text.splitlines() if line.startswith("| 01 |"))
    assert "loops \\| and `fit`" in row01 and "| no (CPU) |" in row01
    assert "[01_loop](notebooks/01_loop.ipynb)" in row01 and "[lab01_loop](labs/lab01_loop.ipynb)" in row01
    assert "| 0.10 / n.m. / n.m. |" in row01
    assert M.colab_url("labs/lab01_loop.ipynb") in row01
    row00 = next(line for line in text.splitlines() if line.startswith("| 00 |"))
    assert "(topics to write)" in row00 and "| — |" in row00
    assert "**smoke**: 1 of 2 measured on CPU A (2 cores) (2026-12-04, load average 1.5–1.5 at start)" in text
    assert "**full**: not measured on a CUDA GPU yet" in text
    assert "Lab solutions at smoke (what the grader runs): 1 of 1 passed, 0.05–0.05 min (slowest: lab01_loop)" in text
    assert M.render_readme(text, root, reports) == text  # regenerating is stable


def test_readme_without_markers_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no course map block"):
        M.render_readme("# no map here\n", _course(tmp_path), [])


def test_committed_readme_matches_the_committed_reports():
    assert not M.sync_readme(ROOT, check=True), "README.md's course map is out of date: run `dlcourse sync`"


def test_committed_map_has_topics_for_every_notebook():
    readme = (ROOT / "README.md").read_text()
    assert "(topics to write)" not in readme and "(say)" not in readme


def test_colab_links_and_bootstraps_agree_with_the_repository():
    if sys.version_info >= (3, 11):
        import tomllib

        urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
        assert urls["Repository"] == M.REPOSITORY
    sources = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")) + sorted((ROOT / "solutions").glob("lab*.py"))
    assert sources
    for src in sources:
        text = src.read_text()
        specs = re.findall(r'"(dlcourse\[[^"]*\] @ git\+[^"]+)"', text)
        assert specs == [M.BOOTSTRAP_SPEC], f"{src.name}: its set-up cell must install {M.BOOTSTRAP_SPEC!r}"
        assert 'importlib.util.find_spec("dlcourse") is None' in text, f"{src.name}: install only when missing"
    assert f"/blob/{M.REF}/notebooks/" in (ROOT / "README.md").read_text()
