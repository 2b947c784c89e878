"""The ``dlcourse`` command: ``env``, ``lab``, ``sync``, ``lint``, ``check``, ``grade``, ``merge``, ``export``,
``rubric``, ``similarity``, ``verify``, ``doctor`` and ``data``.

Every sub-command prints what it did; a problem ends with a message saying what to do and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "torchvision", "numpy", "scikit-learn", "matplotlib", "jupyterlab", "ipywidgets", "jupytext",
            "nbclient", "nbval", "nbgrader")


def course_root(start: Path | None = None) -> Path:
    """The course folder: the nearest folder (from ``start``, default the current one) holding notebooks/ and
    solutions/, else the folder this package was installed from."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "notebooks").is_dir() and (folder / "solutions").is_dir():
            return folder
    return Path(__file__).resolve().parents[1]


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def cmd_env(args: argparse.Namespace) -> int:
    from .config import environment_report

    print(environment_report())
    for name in PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        print(f"  {name:<13} {version}")
    return 0


def lab_command(workspace: Path, port: int, open_browser: bool) -> list[str]:
    """The JupyterLab command line ``make lab`` runs (tests start the same one), serving ``workspace``.

    Jupytext's server extension is switched off: in the workspace a notebook is only its ``.ipynb`` (no paired
    ``.py`` is read or written, so no extra header cell appears and the file browser lists each notebook once).
    """
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={workspace}", f"--port={port}",
               "--ServerApp.port_retries=0", "--ServerApp.jpserver_extensions=jupyterlab_jupytext=False",
               "--LabApp.default_url=/lab/tree/notebooks/00_welcome.ipynb"]
    if os.name != "nt":
        # the learner's shell, not a login shell (which jupyter_server_terminals starts when make lab's output is not
        # a terminal, and whose /etc/profile resets PATH): a JupyterLab terminal then finds `dlcourse` (see
        # lab_environment)
        shell = os.environ.get("SHELL") or shutil.which("sh") or "/bin/sh"
        command.append(f"--ServerApp.terminado_settings=shell_command={[shell]!r}")
    if not open_browser:
        command.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI machines often run as root
    return command


def lab_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment JupyterLab runs in: this Python's scripts folder first on PATH, so that ``dlcourse check
    labs/...`` typed in a JupyterLab terminal finds the course's ``dlcourse`` without activating ``.venv``."""
    env = dict(os.environ if environ is None else environ)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, *[p for p in env.get("PATH", "").split(os.pathsep) if p and p != scripts]])
    return env


def cmd_lab(args: argparse.Namespace) -> int:
    from .grading.build import sync
    from .workspace import describe, fill

    root = course_root()
    report = sync(root, missing_only=True)
    for path in report.written:
        print(f"generated {_rel(path, root)}")
    workspace = Path(args.workspace).resolve() if args.workspace else root / "workspace"
    filled = fill(root, workspace)
    for line in describe(filled, _rel(workspace, root)):
        print(line)
    print(f"your work lives in {_rel(workspace, root)}/ (git ignores it; `git pull` never touches it)")
    command = lab_command(workspace, args.port, not args.no_browser)
    print("starting JupyterLab:", " ".join(command[1:]), flush=True)
    os.execve(command[0], command, lab_environment())
    return 0  # not reached


def cmd_sync(args: argparse.Namespace) -> int:
    from .coursemap import sync_readme
    from .grading.build import sync

    root = course_root()
    report = sync(root, check=args.check, missing_only=args.missing, force=args.force)
    # the README's course map is generated too (minutes from benchmarks/reports/, links); never by `--missing`
    readme_stale = False if args.missing else sync_readme(root, check=args.check)
    if args.check:
        for path in report.differing:
            print(f"out of date: {_rel(path, root)}")
        for path in report.stale:
            print(f"stale (no source): {_rel(path, root)}")
        if readme_stale:
            print("out of date: README.md (its course map differs from the notebooks and benchmarks/reports/)")
        if not report.clean or readme_stale:
            print("Generated files differ from their sources: run `dlcourse sync` (or `make sync`) and commit.")
            return 1
        print("notebooks, labs and the README's course map are in sync with their sources")
        return 0
    if readme_stale:
        print("wrote README.md (course map)")
    for path in report.written:
        print(f"wrote {_rel(path, root)}")
    for path in report.stale:
        print(f"warning: {_rel(path, root)} has no source; delete it if it is not yours")
    for path in report.kept:
        print(f"kept {_rel(path, root)}: it holds your work (outputs or edited answers). Move it elsewhere to get "
              "the new version, or run `dlcourse sync --force` to overwrite it.")
    if not report.written and not readme_stale:
        print("nothing to do: every generated file is up to date")
    return 1 if report.kept else 0


def cmd_lint(args: argparse.Namespace) -> int:
    from .grading.lint import lint_paths

    problems = lint_paths(args.paths or [course_root() / "solutions"])
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s): fix the lab source(s) above.")
        return 1
    print("lab metadata OK")
    return 0


def _print_result(result, title: str) -> None:
    print(title)
    width = max([len(c.grade_id) for c in result.cells] + [8])
    for c in result.cells:
        line = f"  {c.status:<14} {c.grade_id:<{width}} {c.points:g}/{c.max_points:g}"
        print(line + (f"   {c.message}" if c.message and c.status != "passed" and not c.checks else ""))
        for k in c.checks:
            if not k.passed or c.status != "passed":
                print(f"      {'ok  ' if k.passed else 'FAIL'} {k.name}" + (f": {k.message}" if k.message else ""))
    print(f"  total: {result.total:g}/{result.max_points:g}   ({result.status})")


def cmd_check(args: argparse.Namespace) -> int:
    from .grading.autograde import NEEDS_MANUAL, check
    from .grading.kernel import Limits

    path = Path(args.notebook)
    if not path.exists():
        print(f"error: {path} does not exist")
        return 2
    result = check(path, limits=Limits(cell_timeout=args.timeout, submission_timeout=args.timeout * 10))
    _print_result(result, f"Self-check of {path.name} (visible tests only; the final grade also runs hidden tests)")
    # an answer your instructor marks by hand cannot pass here, and does not fail the self-check
    return 0 if result.cells and all(c.status in ("passed", NEEDS_MANUAL) for c in result.cells) else 1


def cmd_progress(args: argparse.Namespace) -> int:
    from .progress import progress, table

    labs = Path(args.labs) if args.labs else None
    if labs is not None and not labs.is_dir():
        print(f"error: {labs} is not a folder (give the folder that holds your labNN_*.ipynb notebooks)")
        return 2
    rows = progress(labs, course_root(), timeout=args.timeout)
    print(f"Labs in {rows[0].notebook.parent if rows else labs}")
    print(table(rows))
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from .grading.autograde import ReferenceError
    from .grading.batch import grade_batch
    from .grading.integrity import TamperError
    from .grading.kernel import Limits
    from .grading.late import LateRule
    from .grading.sandbox import SandboxError
    from .grading.shard import parse_shard

    shard = parse_shard(args.shard) if args.shard else None
    late = LateRule.from_options(args.deadline, args.late_penalty, args.late_cap, args.grace)
    limits = Limits(cell_timeout=args.timeout, submission_timeout=args.submission_timeout,
                    memory_mb=args.memory_mb or None, gpu=args.gpu)
    if args.sandbox == "none":
        print("WARNING: grading WITHOUT a sandbox: a submission can read solutions/ and hidden tests, write where "
              "you can, and use the network. Only for a class you trust.", file=sys.stderr)
    try:
        results = grade_batch(args.lab, args.submissions, args.out, workers=args.workers, hidden=args.hidden,
                              pattern=args.pattern, limits=limits, sandbox=args.sandbox, force=args.force,
                              late=late, shard=shard)
    except (ReferenceError, SandboxError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except TamperError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    for r in results:
        print(f"  {r.student:<24} {r.total:g}/{r.max_points:g}   {r.status}")
    print(f"graded {len(results)} submission(s){f' (shard {shard[0]}/{shard[1]})' if shard else ''}: "
          f"{Path(args.out) / 'grades.csv'}, grades.json, feedback/, grading.log")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from .grading.shard import merge

    roster = merge(args.shards, args.out)
    print(f"merged {len(args.shards)} shard(s) of {roster.lab} ({len(roster.students)} students) into "
          f"{Path(args.out) / 'grades.csv'}, grades.json, results/, feedback/, grading.log")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .grading.export import export

    data = export(args.out, args.format, args.assignment, allow_pending=args.allow_pending)
    if args.output:
        Path(args.output).write_bytes(data)
        print(f"wrote {args.output} ({args.format}, {len(data.splitlines()) - 1} student(s))")
    else:
        sys.stdout.buffer.write(data)
    return 0


def cmd_rubric(args: argparse.Namespace) -> int:
    from .grading import manual, rubric

    if args.action == "export":
        try:
            sheets = rubric.export_rubric(args.lab, args.submissions, args.out, pattern=args.pattern, force=args.force)
        except FileExistsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for sheet in sheets:
            print(f"wrote {sheet} and {sheet.with_suffix('.html').name}")
        print(f"Fill in the points and comment columns, then: dlcourse rubric merge {args.lab} "
              f"{Path(args.out) / 'rubric' / '*.csv'} --out {args.out}")
        return 0
    counts = manual.merge_marks(args.lab, args.out, args.sheets)
    for gid, n in counts.items():
        print(f"  {gid}: {n} mark(s) merged")
    print(f"results, feedback pages and gradebook in {args.out} updated; all marks so far: "
          f"{Path(args.out) / manual.MARKS_FILE}")
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    from .grading.similarity import similarity_report

    pairs = similarity_report(args.lab, args.submissions, args.out, threshold=args.threshold, common=args.common,
                              pattern=args.pattern)
    listed = [p for p in pairs if p.score >= args.threshold]
    for p in listed[:20]:
        print(f"  {p.score:.2f}  {p.a} - {p.b}")
    if len(listed) > 20:
        print(f"  ... and {len(listed) - 20} more in the report")
    print(f"{len(listed)} pair(s) at or above {args.threshold:g} (of {len(pairs)} sharing anything): {args.out}. "
          "A place to look, not a verdict: read the answers side by side there.")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from . import verify as V
    from .config import resolve_scale

    root = course_root()
    scale = resolve_scale(args.scale)
    paths = V.course_notebooks(root, args.only, labs=not args.no_labs)
    device, device_name = V.this_device()
    target = Path(args.report) if args.report else V.report_path(root / "benchmarks" / "reports", scale, device,
                                                                  device_name)
    print(f"running {len(paths)} notebook(s) at {scale} scale on {device_name}, {args.jobs} at a time; "
          f"report: {_rel(target, root)}")
    report = V.verify(root, paths, scale, jobs=args.jobs, cell_timeout=args.cell_timeout,
                      notebook_timeout=args.timeout, save_dir=Path(args.save) if args.save else None,
                      report_to=target, on_result=lambda r: print(V.format_result(r), flush=True))
    passed = sum(r.status == "passed" for r in report.results.values())
    total = sum(r.seconds for r in report.results.values()) / 60
    print(f"{passed} of {len(report.results)} passed at {scale} scale on {device_name} ({total:.1f} notebook-minutes);"
          f" report written to {_rel(target, root)}. `dlcourse sync` puts the minutes into the README.")
    return 0 if passed == len(report.results) else 1


def load_setup(spec: str) -> dict:
    """Call the set-up function named by ``FILE.py:FUNCTION`` (or ``package.module:FUNCTION``) and return its dict.

    The function takes no arguments and returns the doctor's keyword arguments: ``model`` and ``train_loader``
    (required), and any of ``loss_fn``, ``optimizer_factory``, ``val_loader``, ``train_step``, ``evaluate_fn``,
    ``num_classes``.
    """
    import importlib
    import importlib.util

    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ValueError(f"{spec!r}: give the set-up as FILE.py:FUNCTION or module:FUNCTION, e.g. "
                         "my_run.py:make_setup")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.path.insert(0, str(path.resolve().parent))  # the script's own imports resolve as when run directly
        try:
            module_spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        module = importlib.import_module(target)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ValueError(f"{target} has no function {name!r}")
    setup = factory()
    if not isinstance(setup, dict) or "model" not in setup or "train_loader" not in setup:
        raise ValueError(f"{spec} must return a dict with at least 'model' and 'train_loader' (and optionally "
                         "loss_fn, optimizer_factory, val_loader, train_step, evaluate_fn, num_classes)")
    return setup


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from .diagnose import doctor

    setup = load_setup(args.setup)
    checks = [c.strip() for c in args.checks.split(",")] if args.checks else None
    report = doctor(**setup, checks=checks, seed=args.seed, progress=not args.quiet)
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2, default=str))
        print(f"findings written to {args.json}")
    return 1 if report.flagged else 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data import REAL_DATASETS
    from .download import DownloadError, data_dir, fetch

    if args.action == "path":
        print(data_dir())
        return 0
    for name in args.names:
        _, files = REAL_DATASETS[name]
        try:
            paths = [fetch(f, name) for f in files]
        except DownloadError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: {len(paths)} file(s) verified (SHA-256) in {paths[0].parent}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlcourse", description="Tools for the dlcourse notebooks and labs.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("env", help="print the environment report").set_defaults(func=cmd_env)

    p = sub.add_parser("lab", help="copy new notebooks into your workspace and open it in JupyterLab")
    p.add_argument("--port", type=int, default=8888)
    p.add_argument("--workspace", help="the folder you work in (default: workspace/ in the course folder)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("sync", help="regenerate every .ipynb from its .py, and labs/ from solutions/")
    p.add_argument("--check", action="store_true", help="write nothing; fail if anything is out of date")
    p.add_argument("--missing", action="store_true", help="only write files that do not exist yet")
    p.add_argument("--force", action="store_true", help="overwrite labs even when they hold a learner's work")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("lint", help="check the nbgrader metadata of lab sources")
    p.add_argument("paths", nargs="*", help="lab sources or folders (default: solutions/)")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("check", help="self-check a lab notebook against its visible tests")
    p.add_argument("notebook")
    p.add_argument("--timeout", type=float, default=300, help="seconds allowed per cell (default 300)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("progress", help="your progress through the labs (visible tests) and what to do next")
    p.add_argument("labs", nargs="?", help="the folder with your lab notebooks (default: workspace/labs or labs/)")
    p.add_argument("--timeout", type=float, default=300, help="seconds allowed per cell (default 300)")
    p.set_defaults(func=cmd_progress)

    p = sub.add_parser("grade", help="autograde a class's submissions into OUT (grades.csv, feedback/, ...)")
    p.add_argument("lab", help="the lab's solution source, e.g. solutions/lab01_training_loop.py")
    p.add_argument("submissions", help="a folder with one sub-folder per student, a flat folder (with --pattern), "
                                       "or an LMS zip export (Canvas or Moodle)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--workers", type=int, default=None, help="submissions graded at once (default: CPU cores)")
    p.add_argument("--hidden", help="folder with private hidden tests (labNN_topic.py overriding test cells)")
    p.add_argument("--pattern", help="regex with a (?P<student>...) group, for a flat folder of notebooks")
    p.add_argument("--force", action="store_true", help="grade again students who already have a result")
    p.add_argument("--timeout", type=float, default=120, help="seconds allowed per cell (default 120)")
    p.add_argument("--submission-timeout", type=float, default=600,
                   help="seconds allowed per submission in all (default 600)")
    p.add_argument("--memory-mb", type=int, default=4096, help="memory cap per kernel in MiB (0: none)")
    p.add_argument("--gpu", action="store_true", help="let kernels use the GPU (default: CPU only, so a grade is "
                                                      "the same on every machine)")
    p.add_argument("--sandbox", choices=("auto", "bwrap", "none"), default="auto",
                   help="confine each kernel: auto = bubblewrap on Linux (an error if it cannot run); none = no "
                        "sandbox, only for a class you trust (default auto)")
    p.add_argument("--shard", metavar="K/N", help="grade only shard K of N (K = 1..N; a student's shard is a hash "
                                                   "of their id), then join the folders with `dlcourse merge`")
    p.add_argument("--deadline", metavar="TIME", help="ISO 8601, e.g. 2026-12-01T23:59+01:00 (no offset: this "
                                                      "machine's zone); submission times: the LMS zip entry's, or "
                                                      "the notebook file's mtime for folders")
    p.add_argument("--late-penalty", type=float, metavar="PCT", help="percent of the earned points deducted per "
                                                                     "started day late (default 0)")
    p.add_argument("--late-cap", type=float, metavar="PCT", help="the penalty never exceeds this percent "
                                                                 "(default 100)")
    p.add_argument("--grace", metavar="DURATION", help="on time up to this long after the deadline, e.g. 15m, 2h "
                                                       "(default 0); days late still count from the deadline")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("merge", help="join the folders of `dlcourse grade --shard K/N` into one gradebook")
    p.add_argument("shards", nargs="+", metavar="OUT_K", help="every shard's output folder (all N of them)")
    p.add_argument("--out", required=True, help="a new (or empty) folder for the merged gradebook")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("export", help="the final grades of a graded folder as a Canvas, Moodle or plain CSV file")
    p.add_argument("out", help="a folder written by `dlcourse grade` (or `dlcourse merge`)")
    p.add_argument("--format", required=True, choices=("canvas", "moodle", "csv"),
                   help="canvas: gradebook import CSV; moodle: the assignment's grading worksheet; csv: "
                        "student,score,max")
    p.add_argument("--assignment", help="canvas: the assignment column's header, 'NAME (ID)' for an existing "
                                        "assignment (default: the lab's name, which creates a new assignment)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: standard output)")
    p.add_argument("--allow-pending", action="store_true", help="export even while manually graded answers await "
                                                                 "a mark (they count 0)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("rubric", help="manually graded answers: export a rubric sheet per question, merge the "
                                      "filled sheets back into the grades")
    rubric_sub = p.add_subparsers(dest="action", required=True)
    q = rubric_sub.add_parser("export", help="write OUT/rubric/<question>.csv (to fill) and .html (every answer)")
    q.add_argument("lab", help="the lab's solution source")
    q.add_argument("submissions", help="the submissions, as for `dlcourse grade`")
    q.add_argument("--out", required=True, help="the grading output folder")
    q.add_argument("--pattern", help="regex with a (?P<student>...) group, for a flat folder of notebooks")
    q.add_argument("--force", action="store_true", help="overwrite existing sheets (they may hold your marks)")
    q = rubric_sub.add_parser("merge", help="merge filled sheets into results, feedback and gradebook (all rows are "
                                            "checked first: one bad row and nothing is written)")
    q.add_argument("lab", help="the lab's solution source")
    q.add_argument("sheets", nargs="+", help="filled rubric CSV files")
    q.add_argument("--out", required=True, help="the grading output folder")
    p.set_defaults(func=cmd_rubric)

    p = sub.add_parser("similarity", help="an HTML report of the pairs of students whose answers look alike "
                                          "(a place to look for copying, not a verdict)")
    p.add_argument("lab", help="the lab's solution source, e.g. solutions/lab01_training_loop.py")
    p.add_argument("submissions", help="the submissions, as for `dlcourse grade` (folders, --pattern, LMS zip)")
    p.add_argument("--out", required=True, help="the report to write, e.g. similarity.html")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="list pairs whose similarity (0..1) is at least this (default 0.5)")
    p.add_argument("--common", type=int, default=None, help="ignore passages found in more than this many "
                                                            "students' answers (default: max(10, 10%% of the class))")
    p.add_argument("--pattern", help="regex with a (?P<student>...) group, for a flat folder of notebooks")
    p.set_defaults(func=cmd_similarity)

    p = sub.add_parser("verify", help="run every notebook and lab solution at one scale here; write a report")
    p.add_argument("--scale", help="smoke, small or full (default: $DLCOURSE_SCALE, else full on a GPU, small)")
    p.add_argument("--only", nargs="+", metavar="NN", help="only these numbers, e.g. --only 03 07")
    p.add_argument("--no-labs", action="store_true", help="notebooks only, not the lab solutions")
    p.add_argument("--jobs", type=int, default=1, help="notebooks at a time (default 1: clean timings)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per notebook (default 3600)")
    p.add_argument("--cell-timeout", type=float, default=1800, help="seconds allowed per cell (default 1800)")
    p.add_argument("--report", help="report file (default: benchmarks/reports/<scale>-<device>.json, merged)")
    p.add_argument("--save", help="folder to write the executed notebooks (with outputs) into")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("doctor", help="run the training doctor on a set-up (exit 1 when it flags something)")
    p.add_argument("setup", help="FILE.py:FUNCTION (or module:FUNCTION) returning a dict with model, train_loader "
                                 "and optionally loss_fn, optimizer_factory, val_loader, train_step, evaluate_fn")
    p.add_argument("--checks", help="comma-separated subset of the checks (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the findings to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress line per check")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("data", help="the cache of real datasets for full scale: fill it (fetch) or show it (path)")
    data_sub = p.add_subparsers(dest="action", required=True)
    q = data_sub.add_parser("fetch", help="download and verify datasets into the cache (needs network)")
    q.add_argument("names", nargs="+", choices=["fashion-mnist", "cifar10"], help="datasets to fetch")
    data_sub.add_parser("path", help="print the cache folder ($DLCOURSE_DATA_DIR, else ~/.cache/dlcourse)")
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
