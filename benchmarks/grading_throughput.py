"""Grading throughput: submissions per minute for `dlcourse grade` with 1 and 2 workers, each with the bubblewrap
sandbox (when it runs here) and without it, and for `nbgrader autograde` on the same lab when nbgrader is installed
(it is in the test extras).

Every submission is a copy of the lab answered with the solution's answers, so all of them do the full work.
Prints a table; run from the repository root:  .venv/bin/python benchmarks/grading_throughput.py --copies 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dlcourse.grading import build  # noqa: E402
from dlcourse.grading import cells as C  # noqa: E402
from dlcourse.grading.batch import grade_batch  # noqa: E402
from dlcourse.grading.kernel import Limits  # noqa: E402
from dlcourse.grading.sandbox import SandboxError, resolve  # noqa: E402


def answered_lab(solution_path: Path) -> str:
    """The student lab with the solution's answers filled in, as notebook text."""
    solution = build.read_notebook(solution_path)
    answers = {C.grade_id(c): c.source for c in solution.cells if C.is_solution(c)}
    lab = build.make_lab(solution)
    for cell in lab.cells:
        if C.is_solution(cell):
            cell.source = answers[C.grade_id(cell)]
    return build.notebook_text(lab)


def time_dlcourse(lab: Path, copies: int, workers: int, work: Path, sandbox: str) -> tuple[float, float]:
    """Seconds for the whole batch (reference run included) and the mean score."""
    subs = work / f"subs-{workers}-{sandbox}"
    text = answered_lab(lab)
    for i in range(copies):
        (subs / f"student{i:03d}").mkdir(parents=True)
        (subs / f"student{i:03d}" / f"{lab.stem}.ipynb").write_text(text)
    start = time.perf_counter()
    results = grade_batch(lab, subs, work / f"out-{workers}-{sandbox}", workers=workers, progress=False,
                          limits=Limits(cell_timeout=300, submission_timeout=900), sandbox=sandbox)
    seconds = time.perf_counter() - start
    return seconds, sum(r.total for r in results) / len(results)


def time_nbgrader(lab: Path, copies: int, work: Path) -> tuple[float, float] | None:
    """Seconds for `nbgrader autograde` of the same copies (None when nbgrader is missing or fails)."""
    if shutil.which("nbgrader", path=str(Path(sys.executable).parent)) is None:
        return None
    course = work / "nbgrader"
    name = lab.stem
    (course / "source" / name).mkdir(parents=True)
    shutil.copy(lab.with_suffix(".ipynb"), course / "source" / name / f"{name}.ipynb")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "DLCOURSE_SCALE": "smoke"}

    def nbgrader(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}"],
                              capture_output=True, text=True, env=env, cwd=course)

    if nbgrader("generate_assignment", name, "--force").returncode != 0:
        return None
    text = answered_lab(lab)
    for i in range(copies):
        folder = course / "submitted" / f"student{i:03d}" / name
        folder.mkdir(parents=True)
        (folder / f"{name}.ipynb").write_text(text)
    start = time.perf_counter()
    run = nbgrader("autograde", name, "--create", "--force")
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
        return None
    return seconds, float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default=str(ROOT / "solutions" / "lab01_training_loop.py"))
    parser.add_argument("--copies", type=int, default=8)
    args = parser.parse_args()
    lab = Path(args.lab)
    rows = []
    with tempfile.TemporaryDirectory(prefix="grading-bench-") as tmp:
        work = Path(tmp)
        try:
            sandboxes = [resolve("auto"), "none"]
        except SandboxError as exc:
            print(f"no sandbox here ({exc}): timing --sandbox none only", file=sys.stderr)
            sandboxes = ["none"]
        for workers in (1, 2):
            for sandbox in sandboxes:
                seconds, mean = time_dlcourse(lab, args.copies, workers, work, sandbox)
                rows.append((f"dlcourse grade, {workers} worker(s), sandbox {sandbox}", seconds, mean))
        nb = time_nbgrader(lab, args.copies, work)
        rows.append(("nbgrader autograde (sequential)", *nb) if nb else ("nbgrader autograde", None, None))
    print(f"lab {lab.stem}, {args.copies} submissions each, {os.cpu_count()} CPU cores "
          f"(dlcourse includes its reference run)")
    print(f"{'grader':<44} {'seconds':>8} {'subs/min':>9} {'mean score':>11}")
    for name, seconds, mean in rows:
        if seconds is None:
            print(f"{name:<44} {'n/a':>8} {'n/a':>9} {'':>11}  (not installed or failed)")
            continue
        shown = "" if mean != mean else f"{mean:g}"  # nbgrader's scores live in its database
        print(f"{name:<44} {seconds:8.1f} {60 * args.copies / seconds:9.2f} {shown:>11}")


if __name__ == "__main__":
    main()
