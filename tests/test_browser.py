"""The learner's JupyterLab in a real browser: headless Chromium (Debian's `chromium`), driven by Playwright, against
JupyterLab started exactly as `make lab` starts it, serving a throw-away workspace filled as `make lab` fills one.

Notebook 00 and 01 and lab 01 (its answers filled in from the solution, as a learner who finished it) are run with
Run → Run All Cells and saved with File → Save. Asserted: no error output in the saved files, widgets render as
widgets, an explorer's plot changes when its slider moves, figures are images, a locked cell neither takes typing
nor can be deleted, and the course's notebooks/, labs/ and solutions/ are untouched (`git status`).
"""

import json
import os
import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from labserver import ROOT, TOKEN, git_status, start_lab, stop

from dlcourse.workspace import fill

pytestmark = pytest.mark.slow

INSTALL = ("install the browser to run it: `apt-get install chromium` (Debian/Ubuntu; CI's .ci/run does this) and "
           "`pip install playwright` (in the `test` extra) - no `playwright install` download is needed")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    pytest.skip(f"no Chromium on PATH: {INSTALL}")


# JavaScript run in the page. Cells are counted in the DOM: JupyterLab 4 keeps every cell there (windowing by CSS).
PROMPTS = """() => Array.from(document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt')).map(e => e.textContent.trim())"""


def menu(page, name: str, item: str) -> None:
    """Click menu ``name`` in JupyterLab's menu bar, then its entry ``item``."""
    page.get_by_role("menuitem", name=name, exact=True).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$")).click()


def run_all(page, timeout: float = 120) -> None:
    """Run → Run All Cells in the visible notebook, then wait until every code cell has run (or execution stopped)."""
    menu(page, "Run", "Run All Cells")
    started, deadline, idle_since = time.monotonic(), time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        prompts = page.evaluate(PROMPTS)
        if prompts and all(p.startswith("[") and p[1:-2].isdigit() for p in prompts):
            return
        if any("*" in p for p in prompts):
            idle_since = None
        elif not any(p[1:-2].isdigit() for p in prompts):
            if time.monotonic() - started > 10:  # the click came before the notebook was ready: once more
                menu(page, "Run", "Run All Cells")
                started = time.monotonic()
        else:  # nothing running and not all numbered: execution stopped at an error (checked by the caller)
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 3:
                return
        time.sleep(0.25)
    raise AssertionError(f"Run All did not finish in {timeout:.0f} s: prompts {prompts}")


def save(page, path: Path) -> dict:
    """File → Save Notebook; returns the saved file once its cells hold outputs."""
    before = path.stat().st_mtime_ns
    menu(page, "File", "Save Notebook")
    deadline = time.monotonic() + 20
    while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.2)
    return json.loads(path.read_text())


def errors_in(notebook: dict) -> list[str]:
    return [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, cell in enumerate(notebook["cells"])
            for o in cell.get("outputs", []) if o["output_type"] == "error"]


def open_notebook(page, url: str, workspace: Path, rel: str) -> None:
    """Open ``rel`` and wait until JupyterLab shows every cell of the file (it renders a long notebook in steps)."""
    cells = len(json.loads((workspace / rel).read_text())["cells"])
    page.goto(f"{url}/lab/tree/{rel}?token={TOKEN}")
    page.wait_for_function("n => document.querySelectorAll("
                           "'.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell').length === n",
                           arg=cells, timeout=60_000)
    # the kernel (the registered "Python (dlcourse)") is up when the status bar says so
    page.get_by_text(re.compile(r"^Python \(dlcourse\) \| Idle$")).wait_for(timeout=60_000)


def solved_lab(course_lab: Path, solution: Path, target: Path) -> None:
    """``target``: the student lab with each answer cell replaced by the solution's cell of the same grade_id."""
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nbformat.read(solution, as_version=4).cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    lab = nbformat.read(course_lab, as_version=4)
    for cell in lab.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution") and grade_id in answers:
            cell.source = answers[grade_id]
    nbformat.write(lab, target)


def test_a_learner_runs_notebooks_00_and_01_and_lab_01_in_jupyterlab(tmp_path):
    executable = chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason=f"Playwright is not installed: {INSTALL}")
    workspace, runtime = tmp_path / "workspace", tmp_path / "runtime"
    runtime.mkdir()
    fill(ROOT, workspace)
    lab = "labs/lab01_training_loop.ipynb"
    solved_lab(ROOT / lab, ROOT / "solutions" / "lab01_training_loop.ipynb", workspace / lab)
    before = git_status()
    server, url = start_lab(workspace, runtime, DLCOURSE_SCALE="smoke",
                            OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            def run_clean(rel: str):
                """Open ``rel`` in the workspace, Run All, save, assert no error output; the visible panel."""
                open_notebook(page, url, workspace, rel)
                run_all(page)
                saved = save(page, workspace / rel)
                assert errors_in(saved) == [], f"{rel}: {errors_in(saved)}"
                return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")

            try:
                # notebook 00: runs clean, draws figures as images, shows a real slider
                panel = run_clean("notebooks/00_welcome.ipynb")
                assert panel.locator(".jp-OutputArea-output img").count() >= 2, "figures are not shown as images"
                assert panel.locator(".widget-slider").count() >= 1, "the slider is not rendered as a widget"
                outputs = " ".join(panel.locator(".jp-OutputArea").all_inner_texts())
                assert "IntSlider(" not in outputs, "a widget shows as its text repr"

                # notebook 01: runs clean; moving the learning-rate explorer's slider redraws its plot
                panel = run_clean("notebooks/01_training_loop.ipynb")
                explorer = panel.locator(".jp-Cell", has=page.locator(".widget-slider")).first
                explorer.scroll_into_view_if_needed()
                images = explorer.locator(".jp-OutputArea-output img")
                assert images.count() >= 1, "the explorer shows no plot"
                plot_before = images.first.get_attribute("src")
                handle = explorer.locator(".widget-slider .noUi-handle").first
                box = handle.bounding_box()
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                page.mouse.down()
                page.mouse.move(box["x"] - 60, box["y"] + box["height"] / 2, steps=5)
                page.mouse.up()
                page.wait_for_function(
                    """([cell, before]) => { const img = cell.querySelector('.jp-OutputArea-output img');
                                             return img && img.getAttribute('src') !== before; }""",
                    arg=[explorer.element_handle(), plot_before], timeout=30_000)

                # lab 01 (answers filled in): runs clean; a locked test cell takes no typing and is not deleted
                open_notebook(page, url, workspace, lab)
                panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
                cells_before = panel.locator(".jp-Cell").count()
                on_disk = json.loads((workspace / lab).read_text())["cells"]
                tests = next(i for i, c in enumerate(on_disk) if c["metadata"].get("nbgrader", {}).get("grade"))
                locked = panel.locator(".jp-Cell").nth(tests)  # the first graded (locked) test cell
                source_before = locked.locator(".cm-content").inner_text()
                locked.locator(".cm-content").click()
                page.keyboard.type("x = 1  # edited\n")
                assert locked.locator(".cm-content").inner_text() == source_before, "a locked cell took typing"
                page.keyboard.press("Escape")  # command mode, the cell selected
                page.keyboard.press("d")
                page.keyboard.press("d")
                assert panel.locator(".jp-Cell").count() == cells_before, "a locked cell was deleted"
                run_all(page)
                saved = save(page, workspace / lab)
                assert errors_in(saved) == [], f"{lab}: {errors_in(saved)}"
                assert sum(c["cell_type"] == "code" and bool(c.get("outputs")) for c in saved["cells"]) >= 1
                locked_on_disk = [c for c in saved["cells"] if c["metadata"].get("nbgrader", {}).get("locked")]
                assert all(c["metadata"].get("editable") is False for c in locked_on_disk if c["cell_type"] == "code")
                assert "edited" not in json.dumps(saved)
                assert "Generated by" not in json.dumps(saved["cells"][0]), "the lab header shows as a cell"
                # the control: the same typing does reach an answer cell (after the save: it is not kept)
                answer = next(i for i, c in enumerate(saved["cells"]) if c["metadata"].get("nbgrader", {}).get(
                    "solution"))
                editor = panel.locator(".jp-Cell").nth(answer).locator(".cm-content")
                editor.click()
                page.keyboard.type("x = 1  # edited\n")
                assert "# edited" in editor.inner_text(), "typing did not reach an editable cell"
            finally:
                if os.environ.get("DLCOURSE_BROWSER_SCREENSHOT"):
                    page.screenshot(path=os.environ["DLCOURSE_BROWSER_SCREENSHOT"], full_page=True)
                browser.close()
    finally:
        stop(server)
    if before is not None:
        assert git_status() == before, "JupyterLab changed the course's notebooks, labs or solutions"
