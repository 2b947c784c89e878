"""Time of the similarity report for a synthetic class: fingerprinting, the pairwise comparison, the whole command.

The class answers lab 01 in rings of copiers: each ring shares one solution (the reference with its own extra
statements and constants), and each member renames its variables and adds a line of its own, so most pairs share
something and every ring's pairs score high. Prints a table; run from the repository root:
    .venv/bin/python benchmarks/similarity_time.py --students 200
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dlcourse.grading import build  # noqa: E402
from dlcourse.grading import cells as C  # noqa: E402
from dlcourse.grading import similarity as S  # noqa: E402

LAB = ROOT / "solutions" / "lab01_training_loop.py"


def _without_markers(source: str) -> str:
    return "\n".join(line for line in source.split("\n") if line.strip() not in (C.BEGIN_SOLUTION, C.END_SOLUTION))


def _vary(answer: str, rng: random.Random, extra: int) -> str:
    """Add ``extra`` statements of its own at the end of the function body, and rename its local variables."""
    lines = answer.rstrip("\n").split("\n")
    body = [i for i, line in enumerate(lines) if line.startswith("    ") and line.strip()]
    at = body[-1] if body else len(lines)
    for _ in range(extra):
        lines.insert(at, f"    tmp_{rng.randrange(10 ** 6)} = {rng.randrange(1000)} * {rng.random():.3f}")
    text = "\n".join(lines) + "\n"
    for name in ("shifted", "exp", "log_probs", "predictions", "optimizer", "epoch", "loss"):
        text = re.sub(rf"\b{name}\b", f"{name}_{rng.randrange(100)}", text)
    return text


def synthetic_class(students: int, ring: int, seed: int = 0) -> dict[str, dict[str, str]]:
    rng = random.Random(seed)
    source = build.read_notebook(LAB)
    reference = {C.grade_id(c): _without_markers(c.source) for c in source.cells if C.is_solution(c)}
    out: dict[str, dict[str, str]] = {}
    for r in range(0, students, ring):
        shared = {gid: _vary(text, rng, 3) for gid, text in reference.items()}
        for i in range(r, min(r + ring, students)):
            out[f"student{i:04d}"] = {gid: _vary(text, rng, 1) for gid, text in shared.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--ring", type=int, default=5, help="students sharing one solution")
    args = parser.parse_args()
    source = build.read_notebook(LAB)
    questions, keep = S.questions_of(source), S.lab_names(source)
    answers = synthetic_class(args.students, args.ring)

    rows = []
    start = time.perf_counter()
    for per in answers.values():
        for q in questions:
            S.fingerprints(per[q.grade_id], q.cell_type, keep)
    rows.append(("fingerprint every answer", time.perf_counter() - start, ""))
    for common in (None, args.students):
        start = time.perf_counter()
        pairs, _ = S.compare(answers, questions, keep, common=common)
        label = "compare (common = default)" if common is None else "compare (nothing common: every pair)"
        rows.append((label, time.perf_counter() - start, f"{len(pairs)} pairs share something"))

    with tempfile.TemporaryDirectory() as tmp:
        lab = build.make_lab(source)
        for student, per in answers.items():
            for cell in lab.cells:
                if C.grade_id(cell) in per:
                    cell.source = per[C.grade_id(cell)]
            (Path(tmp) / "subs" / student).mkdir(parents=True)
            (Path(tmp) / "subs" / student / f"{LAB.stem}.ipynb").write_text(build.notebook_text(lab))
        start = time.perf_counter()
        pairs = S.similarity_report(LAB, Path(tmp) / "subs", Path(tmp) / "report.html")
        size = (Path(tmp) / "report.html").stat().st_size
        rows.append(("similarity_report (read, compare, write HTML)", time.perf_counter() - start,
                     f"{sum(p.score >= 0.5 for p in pairs)} pairs >= 0.5, {size / 1e6:.1f} MB page"))

    print(f"{args.students} students, rings of {args.ring}, {len(questions)} answer cells (lab 01)")
    print(f"{'step':<48} {'seconds':>8}  note")
    for name, seconds, note in rows:
        print(f"{name:<48} {seconds:8.2f}  {note}")


if __name__ == "__main__":
    main()
