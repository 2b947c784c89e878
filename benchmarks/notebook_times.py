"""Wall-clock minutes of every notebook (and lab solution) at the chosen scales, as the README's course map shows.

Each notebook runs top to bottom in a fresh kernel (start-up included), one at a time. Prints a table; run from
the repository root:  .venv/bin/python benchmarks/notebook_times.py --scales smoke small [--only 01 02]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from dlcourse.grading.kernel import kernel_name  # noqa: E402


def run_once(path: Path, scale: str, timeout: int) -> float:
    """Seconds to execute ``path`` at ``scale``; raises if a cell fails."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name=kernel_name(), resources={"metadata": {"path": str(ROOT)}}
                   ).execute(env={**os.environ, "DLCOURSE_SCALE": scale})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=["smoke", "small"], choices=["smoke", "small", "full"])
    parser.add_argument("--only", nargs="*", default=None, help="notebook number prefixes, e.g. 01 02")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args()
    paths = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("lab*.ipynb"))
    if args.only:
        paths = [p for p in paths if any(p.stem.removeprefix("lab").startswith(k) for k in args.only)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} CPU cores, load average {load:.1f} at start")
    print(f"| notebook | " + " | ".join(f"{s} (min)" for s in args.scales) + " |")
    print("|---|" + "---|" * len(args.scales))
    for path in paths:
        cells = []
        for scale in args.scales:
            try:
                cells.append(f"{run_once(path, scale, args.timeout) / 60:.2f}")
            except Exception as exc:  # report and go on: one broken notebook should not hide the others' times
                cells.append(f"failed ({type(exc).__name__})")
        print(f"| {path.relative_to(ROOT)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
