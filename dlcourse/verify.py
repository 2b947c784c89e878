"""``dlcourse verify``: run every notebook and lab solution at one scale in *this* environment and keep a report.

Nothing is installed and nothing is downloaded by the tool itself: it runs what is here (a laptop, Colab, a cluster
node, a GPU box), one fresh kernel per notebook, and records for each notebook whether it ran clean and how many
minutes it took, with the device it ran on. Reports are JSON files, one per (scale, device) — e.g.
``benchmarks/reports/small-cpu-2core.json`` — and a later run with ``--only`` updates its notebooks' entries and
keeps the others. The README's course map takes its minutes from these reports (:mod:`dlcourse.coursemap`).
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

REPORT_VERSION = 1
STATUSES = ("passed", "failed", "timeout", "crashed")


@dataclass
class Result:
    """One notebook's run: ``status`` is one of :data:`STATUSES`; ``error`` says which cell failed and how."""

    path: str                      # relative to the course root, e.g. "notebooks/03_cnn.ipynb"
    status: str
    seconds: float
    error: str = ""
    measured: str = ""             # ISO date and time (UTC) of the run
    commit: str = ""               # the course's git commit, when known
    load_average: float | None = None  # the machine's 1-minute load when the run started (timings are noisy)
    parallel: int = 1              # notebooks running at the same time

    @property
    def minutes(self) -> float:
        return self.seconds / 60


@dataclass
class Report:
    """Results at one ``scale`` on one device (``device`` is the kind, ``device_name`` the model)."""

    scale: str
    device: str                    # "cpu", "cuda" or "mps"
    device_name: str               # e.g. "NVIDIA H200" or "AMD EPYC 9R14 (2 cores)"
    torch: str = ""
    python: str = ""
    results: dict[str, Result] = field(default_factory=dict)

    @property
    def gpu(self) -> bool:
        return self.device == "cuda"

    def to_json(self) -> str:
        data = {"dlcourse_verify": REPORT_VERSION, **asdict(self)}
        data["results"] = {k: asdict(v) for k, v in sorted(self.results.items())}
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "report") -> "Report":
        try:
            data = json.loads(text)
            if data.get("dlcourse_verify") != REPORT_VERSION:
                raise ValueError(f"not a version-{REPORT_VERSION} dlcourse verify report")
            results = {k: Result(**v) for k, v in data["results"].items()}
            return cls(data["scale"], data["device"], data["device_name"], data.get("torch", ""),
                       data.get("python", ""), results)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source} is not a readable dlcourse verify report ({exc}); delete it or run "
                             "`dlcourse verify` again to rewrite it") from exc


# --------------------------------------------------------------------------------------------- this machine
def cpu_name() -> str:
    """The CPU model and core count, e.g. ``"AMD EPYC 9R14 (2 cores)"``."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{' '.join(model.split())} ({os.cpu_count()} cores)"


def this_device() -> tuple[str, str]:
    """(kind, name) of the device the notebooks will use here: the GPU's name on CUDA, else the CPU's."""
    from .config import pick_device

    device = pick_device()
    if device.type == "cuda":
        import torch

        return "cuda", torch.cuda.get_device_name(0)
    return device.type, cpu_name() if device.type == "cpu" else device.type


def report_path(folder: Path, scale: str, device: str, device_name: str) -> Path:
    """``folder/<scale>-<device>.json``: ``small-cpu-2core.json``, ``full-nvidia-h200.json``."""
    if device == "cpu":
        slug = f"cpu-{os.cpu_count()}core"
    else:
        slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-") or device
    return folder / f"{scale}-{slug}.json"


def git_commit(root: Path) -> str:
    """The short commit of the course checkout (with ``+`` when it has uncommitted changes), or ``""``."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if head.returncode != 0:
        return ""
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


# ----------------------------------------------------------------------------------------------- selection
def course_notebooks(root: Path, only: Iterable[str] | None = None, labs: bool = True) -> list[Path]:
    """Every ``notebooks/NN_*.ipynb`` and (with ``labs``) ``solutions/labNN_*.ipynb``, or those whose number is in
    ``only`` (``["03", "07"]``). Raises ValueError when ``only`` names a number no notebook has."""
    paths = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if labs:
        paths += sorted((root / "solutions").glob("lab[0-9][0-9]_*.ipynb"))
    if not only:
        return paths
    wanted = {str(k).removeprefix("lab").zfill(2) for k in only}
    chosen = [p for p in paths if p.stem.removeprefix("lab")[:2] in wanted]
    unknown = wanted - {p.stem.removeprefix("lab")[:2] for p in chosen}
    if unknown:
        raise ValueError(f"no notebook or lab numbered {', '.join(sorted(unknown))} in {root}")
    return chosen


# --------------------------------------------------------------------------------------------------- running
def run_notebook(path: Path, scale: str, cell_timeout: float, notebook_timeout: float, threads: int | None,
                 save_to: Path | None = None) -> tuple[str, float, str]:
    """Run one notebook in a fresh kernel at ``scale`` (its own folder as working directory); return
    (status, seconds, error). Stops at the first failing cell. With ``save_to`` the executed notebook is written
    there, outputs included."""
    import nbformat

    from .grading.kernel import Limits, run

    nb = nbformat.read(path, as_version=4)
    limits = Limits(cell_timeout=cell_timeout, submission_timeout=notebook_timeout, memory_mb=None,
                    threads=threads, gpu=True)
    start = time.perf_counter()
    nb, stopped = run(nb, limits, {"DLCOURSE_SCALE": scale, "MPLBACKEND": "Agg"}, cwd=path.parent,
                      stop_on_error=True)
    seconds = time.perf_counter() - start
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save_to)
    if stopped is None:
        return "passed", seconds, ""
    if stopped.startswith("timeout"):
        return "timeout", seconds, stopped
    if stopped.startswith("error"):
        return "failed", seconds, stopped.removeprefix("error: ")
    return "crashed", seconds, stopped


def _load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def verify(root: Path, paths: list[Path], scale: str, *, jobs: int = 1, cell_timeout: float = 1800,
           notebook_timeout: float = 3600, save_dir: Path | None = None, report_to: Path | None = None,
           on_result: Callable[[Result], None] | None = None) -> Report:
    """Run ``paths`` at ``scale``, ``jobs`` at a time, and return a :class:`Report` for this machine.

    Each kernel gets ``OMP_NUM_THREADS`` from the environment when set, else cores ÷ ``jobs``: kernels that
    fight over cores make every notebook slower than it is. As each notebook finishes, its result is merged into
    the report file ``report_to`` (so an interrupted run keeps what finished) and passed to ``on_result``.
    """
    import sys

    import torch

    from .config import SCALES
    from .config import safe_mp_context

    if scale not in SCALES:
        raise ValueError(f"scale {scale!r} is not one of {', '.join(SCALES)}")
    jobs = max(1, min(int(jobs), len(paths) or 1))
    env_threads = os.environ.get("OMP_NUM_THREADS")
    threads = int(env_threads) if env_threads and env_threads.isdigit() else max(1, (os.cpu_count() or 1) // jobs)
    device, device_name = this_device()
    report = Report(scale, device, device_name, torch.__version__, sys.version.split()[0])
    commit = git_commit(root)

    def record(path: Path, outcome: tuple[str, float, str], started: str, load: float | None) -> None:
        status, seconds, error = outcome
        rel = path.resolve().relative_to(root.resolve()).as_posix()
        result = Result(rel, status, round(seconds, 1), error, started, commit, load, jobs)
        report.results[rel] = result
        if report_to is not None:
            merge_into(report_to, Report(report.scale, report.device, report.device_name, report.torch,
                                         report.python, {rel: result}))
        if on_result is not None:
            on_result(result)

    def args(path: Path) -> tuple:
        save_to = save_dir / path.resolve().relative_to(root.resolve()) if save_dir else None
        return path, scale, cell_timeout, notebook_timeout, threads, save_to

    if jobs == 1:
        for path in paths:
            started, load = _now(), _load_average()
            record(path, run_notebook(*args(path)), started, load)
        return report
    with ProcessPoolExecutor(max_workers=jobs, mp_context=safe_mp_context()) as pool:
        started, load = _now(), _load_average()
        futures = {pool.submit(run_notebook, *args(path)): path for path in paths}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as exc:  # the worker itself failed (not the notebook): say so, go on
                outcome = ("crashed", 0.0, f"verify worker failed: {type(exc).__name__}: {exc}")
            record(futures[future], outcome, started, load)
    return report


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_into(path: Path, report: Report) -> Report:
    """Write ``report`` to ``path``, keeping the entries of an existing report for the same scale and device that
    this run did not redo. Returns what was written."""
    merged = report
    if path.exists():
        old = Report.from_json(path.read_text(), str(path))
        if (old.scale, old.device, old.device_name) == (report.scale, report.device, report.device_name):
            merged = Report(report.scale, report.device, report.device_name, report.torch, report.python,
                            {**old.results, **report.results})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(merged.to_json())
    os.replace(partial, path)
    return merged


def format_result(result: Result) -> str:
    """One line per notebook: status, minutes, path, and the error when it failed."""
    line = f"  {result.status:<8} {result.minutes:6.2f} min  {result.path}"
    return line + (f"\n           {result.error}" if result.error else "")
