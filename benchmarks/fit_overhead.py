"""How much slower is ``dlcourse.fit`` than the minimal loop a learner writes by hand? Goal: at most 3 %.

Both loops train the same model from the same initial weights on the same batches in the same order
(same seeds), so they do the same arithmetic: the script checks that they end with identical parameters.
What fit adds is bookkeeping (loss and accuracy summed on the device, the History, the progress bar).
Runs are interleaved (in a rotating order) and the best of ``--repeats`` is kept, because timings on a
shared 2-core machine vary 20-40 % between runs. Validation is left out of both: it is the same
``evaluate`` call either way.

    .venv/bin/python benchmarks/fit_overhead.py [--repeats 7] [--epochs 3] [--threads N] [--clock wall|cpu]

About 15 s on 2 idle cores. On a busy machine use ``--threads 1 --clock cpu``: multi-threaded torch on
oversubscribed cores slows down erratically, and wall-clock time counts the moments other jobs hold the CPU;
the process's CPU time with one thread does neither.

Prints one row per model: seconds per epoch of the hand loop, of fit (no progress bar), of fit with its
progress bar (written to a buffer, as in a notebook), and the overheads in per cent.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dlcourse import data
from dlcourse.train import fit

GOAL_PERCENT = 3.0


@dataclass
class Case:
    name: str
    make_model: Callable[[], nn.Module]
    train: Dataset
    batch_size: int
    lr: float


def cases() -> list[Case]:
    def mlp() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))

    def cnn() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (N, 16, 16, 16)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 32, 8, 8)
            nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, len(data.SHAPE_CLASSES)),
        )

    digits = data.digits(seed=0, flatten=True)              # 1257 training images, (N, 64)
    shapes = data.shapes(1024, 1, 1, seed=0)                # (N, 3, 32, 32)
    return [
        Case("MLP on digits (1257 x 64, batch 32)", mlp, digits.train, 32, 0.05),
        Case("CNN on shapes (1024 x 3x32x32, batch 64)", cnn, shapes.train, 64, 0.02),
    ]


def hand_loop(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
              num_epochs: int) -> None:
    """The loop from notebook 01: forward, loss, zero_grad, backward, step. Nothing else."""
    model.train()
    for _ in range(num_epochs):
        for X, y in loader:
            loss = F.cross_entropy(model(X), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def run_once(case: Case, variant: str, init: dict, num_epochs: int,
             clock: Callable[[], float] = time.perf_counter) -> tuple[float, nn.Module]:
    """Seconds per epoch of one variant, from the case's initial weights; returns the trained model too."""
    model = case.make_model()
    model.load_state_dict(init)
    optimizer = torch.optim.SGD(model.parameters(), lr=case.lr, momentum=0.9)
    loader = DataLoader(case.train, batch_size=case.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    start = clock()
    if variant == "hand":
        hand_loop(model, optimizer, loader, num_epochs)
    elif variant == "fit":
        fit(model, optimizer, loader, num_epochs=num_epochs, progress=False)
    else:  # "fit+bar": the default in notebooks; the bar goes to a buffer instead of the terminal
        with contextlib.redirect_stderr(io.StringIO()):
            fit(model, optimizer, loader, num_epochs=num_epochs, progress=True)
    return (clock() - start) / num_epochs, model


def same_parameters(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per variant; the best is kept")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall-clock time, or this process's CPU time (steadier on a busy machine "
                             "with --threads 1; with more threads it also counts threads spinning idle)")
    args = parser.parse_args()
    if args.repeats < 1 or args.epochs < 1:
        parser.error("--repeats and --epochs must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    load, cores = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0, os.cpu_count() or 1
    if load > cores / 2:
        # Seen on the 2-core machine: with other jobs running, 2 torch threads made small convolutions
        # about 100x slower than 1 thread.
        print(f"note: load average {load:.1f} on {cores} cores before starting; other jobs compete for the "
              f"CPU, which hurts multi-threaded runs most (try --threads 1 --clock cpu)")
    variants = ("hand", "fit", "fit+bar")
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, best of "
          f"{args.repeats} interleaved runs of {args.epochs} epochs each")
    rows = []
    for case in cases():
        torch.manual_seed(0)
        init = copy.deepcopy(case.make_model().state_dict())
        for variant in variants:  # warm-up: first-call costs (lazy imports, allocator) stay out of timings
            run_once(case, variant, init, 1)
        best = {v: float("inf") for v in variants}
        models: dict[str, nn.Module] = {}
        for r in range(args.repeats):
            for variant in variants[r % 3:] + variants[:r % 3]:  # rotate who goes first
                seconds, models[variant] = run_once(case, variant, init, args.epochs, clock)
                best[variant] = min(best[variant], seconds)
        same = all(same_parameters(models["hand"], models[v]) for v in ("fit", "fit+bar"))
        rows.append((case.name, best["hand"], best["fit"], best["fit+bar"], same))

    def pct(t: float, base: float) -> str:
        return f"{100 * (t / base - 1):+.1f} %"

    header = ("model", "hand loop s/epoch", "fit s/epoch", "overhead", "fit+bar s/epoch", "overhead",
              "same params")
    table = [header] + [(name, f"{hand:.4f}", f"{f:.4f}", pct(f, hand), f"{fb:.4f}", pct(fb, hand),
                         "yes" if same else "NO")
                        for name, hand, f, fb, same in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        cells = [cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))]
        print("  ".join(cells))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    worst = max(100 * (max(f, fb) / hand - 1) for _, hand, f, fb, _ in rows)
    verdict = "met" if worst <= GOAL_PERCENT else "NOT met"
    print(f"goal: fit at most {GOAL_PERCENT:.0f} % slower than the hand loop per epoch -> {verdict} "
          f"(worst {worst:+.1f} %)")
    if not all(same for *_, same in rows):
        raise SystemExit("fit and the hand loop ended with different parameters: the comparison is unfair")


if __name__ == "__main__":
    main()
