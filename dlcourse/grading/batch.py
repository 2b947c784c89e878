"""Grading a class: every submission in parallel worker processes, each result saved as soon as it is known.

``grade_batch`` first grades the reference solution in the same environment (it must score full marks), then runs
up to ``workers`` submissions at a time, one kernel each. The output folder gets ``results/<student>.json`` (one
file per student, written atomically, so a re-run skips finished students and an interrupted batch resumes),
``class.json``, ``grades.csv``, ``grades.json``, ``feedback/<student>.html`` and ``grading.log``; the files besides
results/ are derived by ``gradebook`` (so a late rule or manual marks can be applied again without grading). With
``shard=(K, N)`` only the students ``shard.shard_of`` gives shard K are graded (``shard.merge`` joins the shards).

Each kernel runs in the sandbox ``limits.sandbox`` names (see ``sandbox``). Without it, three defences remain:
every worker is a subreaper and kills every process its kernel left behind before it reports (``reaper``); after
every submission the output folder is checked against what the grader wrote (a file a student's code added or
changed is removed or restored); and the course package and lab sources are hashed at the start and checked after
every submission: a change stops the batch (``integrity.TamperError``), naming the submissions that may have made
it, and nothing graded since is kept.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import cells as C
from . import integrity, manual, reaper
from .autograde import (Reference, ReferenceError, Result, grade_notebook, graded_cells, load_source, run_reference,
                        unscored)
from .gradebook import (CLASS_FILE, Entry, GradebookError, Roster, derived_files, feedback_page, gradebook_files,
                        result_bytes)
from .kernel import Limits
from .late import LateRule
from .sandbox import resolve
from .shard import shard_of
from .submissions import Submission, discover


@dataclass
class Output:
    """The output folder, with a record of every byte the grader wrote there."""

    root: Path
    written: dict[Path, bytes] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)
    preexisting: set[Path] = field(default_factory=set)  # files that were there before: never touched

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.preexisting = {p for p in self.root.rglob("*") if p.is_file()}
        log = self.root / "grading.log"
        if log.exists():  # keep the history of earlier runs
            self.log_lines = log.read_text(encoding="utf-8", errors="replace").splitlines()

    def write(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never half of one
        self.written[path] = data

    def log(self, message: str) -> None:
        self.log_lines.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}")
        self.write("grading.log", ("\n".join(self.log_lines) + "\n").encode())

    def adopt(self, path: Path) -> None:
        """Trust a file written by an earlier run of the grader (resuming)."""
        self.written[path] = path.read_bytes()

    def guard(self) -> list[str]:
        """Undo anything in the output folder the grader did not write; returns what was undone."""
        undone = []
        for path in sorted(p for p in self.root.rglob("*") if p.is_file() or p.is_symlink()):
            if path in self.preexisting and path not in self.written or path.name.endswith(".tmp"):
                continue
            if path not in self.written:
                path.unlink()
                undone.append(f"removed {path.relative_to(self.root)}")
            elif path.is_symlink() or path.read_bytes() != self.written[path]:
                path.unlink()
                path.write_bytes(self.written[path])
                undone.append(f"restored {path.relative_to(self.root)}")
        for path, data in self.written.items():
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                undone.append(f"restored {path.relative_to(self.root)}")
        return undone


def _fingerprint(source) -> str:
    """A hash of what grading depends on in the lab source: each cell's type, text and nbgrader metadata (not the
    cell ids, which are new at every read of a .py source)."""
    cells = [(c.cell_type, c.source, c.get("metadata", {}).get("nbgrader")) for c in source.cells]
    return hashlib.sha256(json.dumps(cells, sort_keys=True).encode()).hexdigest()


def _check_folder(out: Path, roster: Roster, force: bool) -> None:
    """Refuse an output folder graded for another lab version or another shard (its results would be mixed in)."""
    if not (out / CLASS_FILE).is_file():
        return
    try:
        before = Roster.read(out)
    except GradebookError:
        return  # unreadable: rewritten below
    where = lambda r: f"shard {r.shard[0]}/{r.shard[1]}" if r.shard else "the whole class"  # noqa: E731
    if before.shard != roster.shard:
        raise ValueError(f"{out} holds {where(before)} but this run grades {where(roster)}: use another --out "
                         "(nothing was graded or changed)")
    if (before.lab, before.source) != (roster.lab, roster.source) and not force:
        raise ValueError(f"{out} was graded against another version of {before.lab} (its test cells or hidden "
                         "tests differ): grade into a new --out, or add --force to grade everyone again")


def _job(source, path, reference, student, limits, conn) -> None:
    """Worker process body: grade one notebook (``path=None``: run the reference) and send the result back, after
    killing every process the kernel left behind (the worker adopts them as a subreaper)."""
    reaper.become_subreaper()
    try:
        if path is None:
            message = ("reference", run_reference(source, limits))
        else:
            message = ("result", grade_notebook(source, path, reference, student=student, limits=limits).to_dict())
    except ReferenceError as exc:
        message = ("reference-error", str(exc))
    except BaseException as exc:  # report, never hang the coordinator
        message = ("result", {"student": student, "status": f"grader error: {type(exc).__name__}", "cells": []})
    try:
        reaper.kill_descendants()
        conn.send(message)
    finally:
        conn.close()


def _context() -> mp.context.BaseContext:
    """Workers start from a clean server process (no inherited event loop or ZeroMQ state, which fork would copy),
    with the grader already imported so each worker starts fast."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["dlcourse.grading.batch"])
        return ctx
    return mp.get_context("spawn")


def _reference_in_worker(ctx, source, limits: Limits) -> Reference:
    """Run the reference solution in a worker process, like every submission."""
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_job, args=(source, None, None, "reference", limits, send), daemon=True)
    process.start()
    send.close()
    try:
        if not receive.poll(limits.submission_timeout + 60):
            raise ReferenceError("the reference solution did not finish in time; raise --submission-timeout")
        kind, payload = receive.recv()
    except EOFError:
        raise ReferenceError(f"the reference run crashed (exit code {process.exitcode})") from None
    finally:
        reaper.kill_tree(process.pid)
        process.join(timeout=10)
    if kind == "reference":
        return payload
    raise ReferenceError(payload if kind == "reference-error" else f"the reference run failed: {payload}")


@dataclass
class Running:
    submission: Submission
    process: mp.Process
    conn: object
    started: float


def grade_batch(lab: Path | str, submissions: Path | str, out: Path | str, *, workers: int | None = None,
                hidden: Path | str | None = None, pattern: str | None = None, limits: Limits = Limits(),
                sandbox: str = "auto", force: bool = False, progress: bool = True, late: LateRule | None = None,
                shard: tuple[int, int] | None = None) -> list[Result]:
    """Grade every submission of ``lab`` found in ``submissions`` into the folder ``out``; return the results.

    ``late``: the late rule the gradebook applies (results keep raw points); ``shard=(K, N)``: grade only shard K
    of N (``shard.shard_of``), returning only those results.

    ``sandbox``: "auto" (bubblewrap on Linux; an error, never a silent fallback, when it cannot run), "bwrap" or
    "none". Raises SandboxError before grading when the sandbox is unavailable, ReferenceError (before grading
    anyone) when the reference solution does not score full marks here, and TamperError when a submission changed
    the course files.
    """
    from tqdm.auto import tqdm

    lab, submissions, out = Path(lab), Path(submissions), Path(out)
    limits = replace(limits, sandbox=resolve(sandbox))
    workers = max(1, workers or os.cpu_count() or 1)
    if limits.threads is None:  # kernels side by side must share the cores: oversubscribed torch threads crawl
        limits = replace(limits, threads=max(1, (os.cpu_count() or 1) // workers))
    source = load_source(lab, hidden)
    ids = [C.grade_id(c) for c in graded_cells(source)]
    marks = manual.load_marks(out)  # the instructor's marks of manually graded answers, merged earlier
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="dlcourse-submissions-") as tmp:
        everyone = discover(submissions, lab.stem, Path(tmp), pattern)
        roster = Roster(lab.stem, ids, sum(C.points(c) for c in graded_cells(source)),
                        [Entry(s.key, s.student, s.lms, s.lms_id, s.submitted) for s in everyone],
                        _fingerprint(source), late, shard)
        _check_folder(out, roster, force)
        found = [s for s in everyone if shard is None or shard_of(s.student, shard[1]) == shard[0]]
        output = Output(out)
        output.write(CLASS_FILE, roster.to_bytes())
        for sub in found:
            saved = out / "results" / f"{sub.key}.json"
            if saved.exists() and not force:
                try:
                    results[sub.key] = Result.from_dict(json.loads(saved.read_text(encoding="utf-8")))
                    output.adopt(saved)
                except (ValueError, KeyError, TypeError):
                    pass  # unreadable: grade again
        todo = [s for s in found if s.key not in results]
        share = f" (shard {shard[0]}/{shard[1]} of a class of {len(everyone)})" if shard else ""
        output.log(f"lab {lab.name}: {len(found)} submissions{share}, {len(found) - len(todo)} already graded, "
                   f"{len(todo)} to grade with {workers} worker(s); limits {limits}")
        output.log(f"late rule: {late.describe()}" if late else "late rule: none (no --deadline)")
        if limits.sandbox == "none":
            output.log("WARNING: kernels run WITHOUT a sandbox (--sandbox none): a submission can read any file "
                       "this user can (solutions/, hidden tests) and use the network. Grade this way only a class "
                       "you trust, or on a machine with bubblewrap.")
        roots = integrity.course_roots(lab, Path(hidden) if hidden else None)
        pristine = integrity.snapshot(*roots)
        ctx = _context()
        reference: Reference | None = None
        if any(s.path is not None for s in todo):
            reference = _reference_in_worker(ctx, source, limits)
            output.log("reference solution scores full marks in this environment")

        def tampered(suspects: list[Submission]) -> None:
            """Stop when the course files changed: keep nothing graded since the last clean check."""
            changed = integrity.changes(pristine, *roots)
            if not changed:
                return
            for job in running:
                reaper.kill_tree(job.process.pid)
            names = ", ".join(s.student for s in suspects)
            message = (f"STOPPED: the files grades depend on changed while grading {names} ({'; '.join(changed[:5])}"
                       f"{' ...' if len(changed) > 5 else ''}). Nothing was restored and no result graded since "
                       f"the last check was kept. Restore the course files (e.g. `git checkout -- dlcourse "
                       f"{lab}`), then run the same command again: it grades those students again.")
            output.log(message)
            raise integrity.TamperError(message)

        def finish(sub: Submission, result: Result) -> None:
            if sub.path is not None:
                tampered([sub, *(job.submission for job in running)])
            result.student = sub.student
            results[sub.key] = manual.apply_marks(result, marks)
            output.write(f"results/{sub.key}.json", result_bytes(result))
            output.write(f"feedback/{sub.key}.html", feedback_page(roster, sub.key, result))
            for name, data in gradebook_files(roster, results).items():
                output.write(name, data)
            output.log(f"{sub.student}: {result.total:g}/{result.max_points:g} {result.status} "
                       f"({result.seconds:g} s)")
            for what in output.guard():
                output.log(f"output folder: {what} (written by a submission, not the grader)")
            bar.update()

        bar = tqdm(total=len(todo), desc="grading", unit="student", disable=not progress)
        queue = list(todo)
        running: list[Running] = []
        backstop = limits.submission_timeout + 60  # the kernel has its own limits; this catches a stuck worker
        try:
            while queue or running:
                while queue and len(running) < workers:
                    sub = queue.pop(0)
                    if sub.path is None:
                        finish(sub, Result(sub.student, sub.problem, unscored(source, sub.problem)))
                        continue
                    receive, send = ctx.Pipe(duplex=False)
                    process = ctx.Process(target=_job, args=(source, sub.path, reference, sub.student, limits, send),
                                          daemon=True)
                    process.start()
                    send.close()
                    running.append(Running(sub, process, receive, time.monotonic()))
                for job in list(running):
                    result = None
                    if job.conn.poll(0.05):
                        try:
                            result = Result.from_dict(job.conn.recv()[1])
                        except (EOFError, OSError):
                            result = Result(job.submission.student, f"grader error: worker exited with code "
                                            f"{job.process.exitcode}", unscored(source, "grader error"))
                    elif not job.process.is_alive():
                        result = Result(job.submission.student, f"grader error: worker exited with code "
                                        f"{job.process.exitcode}", unscored(source, "grader error"))
                    elif time.monotonic() - job.started > backstop:
                        reaper.kill_tree(job.process.pid)
                        why = f"timeout: grading took longer than {backstop:g} s"
                        result = Result(job.submission.student, why, unscored(source, why))
                    if result is not None:
                        job.process.join(timeout=10)
                        running.remove(job)
                        finish(job.submission, result)
        finally:
            for job in running:  # interrupted: stop the workers; finished students are already saved
                reaper.kill_tree(job.process.pid)
            bar.close()
        for name, data in derived_files(roster, results).items():  # students graded earlier: the rule of this run
            if not (output.root / name).is_file() or (output.root / name).read_bytes() != data:
                output.write(name, data)
    return [results[s.key] for s in found]
