"""How long does the training doctor take, check by check? Goal: under 10 s for a full run on each set-up.

The set-ups are notebook 13's and lab 13's (``dlcourse.bugs.Setup`` objects: the healthy MLP on the digits and the
lab's nine broken set-ups and their fixed twins, read from ``solutions/lab13_bug_hunt.py`` as the lab's tests read
them), plus ``SmallCNN()`` with its defaults on 32x32 shapes (``--cnn-train`` training images, a quarter as many for
validation), the slowest of them.

    .venv/bin/python benchmarks/doctor_time.py [--threads 1] [--clock cpu|wall] [--repeats 1] [--only healthy ...]

Prints one row per set-up: seconds per check, the total, and the checks that flagged something (so a change that
speeds the doctor up can be seen not to change its verdicts). The best of ``--repeats`` runs is kept per check.
``--clock cpu`` (the default) counts the process's CPU time, which on a shared machine with one torch thread is
steady; ``--clock wall`` is what a learner waits. With ``--threads 0`` torch keeps its default (one thread per
core): the doctor's steps use at most 32 examples, and on a busy machine those threads mostly wait for each other,
so compare ``--threads 0 --clock wall`` with ``--threads 1 --clock wall`` to see what that costs there. torch builds
its first optimizer slowly (a one-off import), so the script builds one before timing. About 15 s on one thread.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path
from typing import Callable
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dlcourse  # noqa: E402
from dlcourse.bugs import Setup  # noqa: E402
from dlcourse.diagnose import CHECKS, doctor, runner  # noqa: E402
from dlcourse.grading import build  # noqa: E402
from dlcourse.grading import cells as C  # noqa: E402

LAB = ROOT / "solutions" / "lab13_bug_hunt.py"
LETTERS = "abcdefghi"
GOAL_SECONDS = 10.0


def lab_setups() -> dict[str, Callable[[], Setup]]:
    """Lab 13's set-up functions: its healthy demo and every broken_x / fixed_x (cells executed, no training)."""
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):        # the setup cell prints the environment line
        for cell in build.read_notebook(LAB).cells:
            gid = C.grade_id(cell)
            if cell.cell_type != "code" or C.is_graded(cell) or (gid or "").endswith("-symptoms"):
                continue
            source = cell.source
            if gid == "doctor-demo":                         # keep the healthy set-up, skip the demo's doctor run
                source = source.split("\nhealthy_report")[0]
            exec(compile(source, f"lab13:{gid}", "exec"), namespace)  # noqa: S102 (the course's own source)
    setups = {"healthy": namespace["healthy"]}
    for x in LETTERS:
        setups[f"broken_{x}"] = namespace[f"broken_{x}"]
        setups[f"fixed_{x}"] = namespace[f"fixed_{x}"]
    return setups


def small_cnn(n_train: int) -> Callable[[], Setup]:
    def make() -> Setup:
        splits = dlcourse.data.shapes(n_train=n_train, n_val=max(n_train // 4, 32), n_test=8)
        train_loader, val_loader, test_loader = splits.loaders(batch_size=64)
        torch.manual_seed(0)
        return Setup(dlcourse.models.SmallCNN(), train_loader, val_loader,
                     lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9), test_loader=test_loader)
    return make


def time_doctor(setup: Setup, clock: Callable[[], float]) -> tuple[dict[str, float], float, list[str]]:
    """(seconds per check, seconds for the whole run, flagged checks) of one full doctor run on ``setup``."""
    seconds: dict[str, float] = {}

    def timed(name: str, check):
        def run(ctx):
            start = clock()
            try:
                return check(ctx)
            finally:
                seconds[name] = clock() - start
        return run

    timed_checks = {name: timed(name, check) for name, check in runner.CHECK_FUNCTIONS.items()}
    with mock.patch.dict(runner.CHECK_FUNCTIONS, timed_checks):
        start = clock()
        report = doctor(**setup.doctor_args(), progress=False)
        total = clock() - start
    return seconds, total, sorted({f.check for f in report.flagged})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cnn-train", type=int, default=4000, help="training images for the SmallCNN set-up")
    parser.add_argument("--only", nargs="*", help="set-up names (default: all)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)     # torch's one-off import, not the doctor's

    setups = lab_setups() | {"small_cnn": small_cnn(args.cnn_train)}
    names = args.only or list(setups)
    short = {name: name.replace("_", "")[:6] for name in CHECKS}
    print(f"doctor time per check, {args.clock} seconds, {torch.get_num_threads()} torch thread(s), "
          f"best of {args.repeats}; torch {torch.__version__}")
    print(f"{'set-up':<10} " + " ".join(f"{short[c]:>6}" for c in CHECKS) + f" {'total':>6}  flagged")
    worst = 0.0
    for name in names:
        best: dict[str, float] = {}
        best_total, flagged = float("inf"), []
        for _ in range(args.repeats):
            seconds, total, flagged = time_doctor(setups[name](), clock)
            best = {c: min(best.get(c, float("inf")), s) for c, s in seconds.items()}
            best_total = min(best_total, total)
        worst = max(worst, best_total)
        print(f"{name:<10} " + " ".join(f"{best.get(c, float('nan')):6.2f}" for c in CHECKS) +
              f" {best_total:6.2f}  {', '.join(flagged) or '-'}", flush=True)
    print(f"slowest full run: {worst:.2f} s (goal: under {GOAL_SECONDS:.0f} s)")


if __name__ == "__main__":
    main()
