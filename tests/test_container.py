"""Static checks of the grading image and of the README's "Grading beyond one machine" (there is no docker here).

The Dockerfile must install what pyproject.toml asks for (torch from PyTorch's CPU index, the rest from
pyproject itself, the extras the labs need), `.dockerignore` must keep the host's environment, git history,
outputs and submissions out of the image, and every command the README's Kubernetes and SLURM examples run must
be one the `dlcourse` parser accepts: each bash block and the Indexed Job's shell script are run by a real shell
against stand-ins for `dlcourse`, `docker`, `apptainer` and `sbatch` that print the arguments `dlcourse` gets.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dlcourse.cli import build_parser
from dlcourse.grading.build import KERNELSPEC

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SECTION = "### Grading beyond one machine"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: Distributions whose CPU builds come from PyTorch's own index rather than PyPI.
PYTORCH_INDEX_PACKAGES = {"torch", "torchvision", "torchaudio"}


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group().lower()


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined the way Docker joins them."""
    instructions, current = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or (not current and not line.strip()):
            continue
        if line.endswith("\\"):
            current += line[:-1]
            continue
        keyword, _, rest = (current + line).strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def _runs() -> list[str]:
    return [args for keyword, args in dockerfile() if keyword == "RUN"]


def _arg_default(name: str) -> str:
    values = [args.partition("=")[2] for keyword, args in dockerfile() if keyword == "ARG" and
              args.partition("=")[0] == name]
    assert len(values) == 1, f"the Dockerfile should declare ARG {name}=... once"
    return values[0]


def test_the_image_is_python_311_slim_with_bubblewrap_an_ordinary_user_and_the_cli():
    instructions = dockerfile()
    assert [args for keyword, args in instructions if keyword == "FROM"] == ["python:3.11-slim"]
    assert any("apt-get install" in run and "bubblewrap" in run.split() for run in _runs())
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(re.search(rf"useradd .*\b{users[-1]}$", run) for run in _runs()), "the USER is created"
    keywords = [keyword for keyword, _ in instructions]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert [json.loads(args) for keyword, args in instructions if keyword == "ENTRYPOINT"] == [["dlcourse"]]
    # the kernel the grader starts (dlcourse.grading.kernel.kernel_name) is registered under the course's name
    assert any(f"ipykernel install --sys-prefix --name {KERNELSPEC['name']}" in run for run in _runs())


def _leaf_extras(names: list[str]) -> list[str]:
    """``names`` with every extra that only groups others (``notebooks = ["dlcourse[a,b]"]``) replaced by those, in
    order: the Dockerfile's reader pip-installs an extra's requirements, and ``dlcourse[...]`` is not one to fetch."""
    leaves = []
    for name in names:
        reqs = PYPROJECT["optional-dependencies"][name]
        if all(_name(r) == "dlcourse" for r in reqs):
            leaves += _leaf_extras([e for r in reqs for e in re.search(r"\[(.*)\]", r).group(1).split(",")])
        else:
            assert not any(_name(r) == "dlcourse" for r in reqs), f"extra {name!r} mixes packages and dlcourse[...]"
            leaves.append(name)
    return leaves


def test_torch_comes_from_the_cpu_index_and_the_rest_from_pyproject():
    assert _arg_default("TORCH_INDEX") == CPU_INDEX
    torch_runs = [i for i, run in enumerate(_runs()) if '--index-url "$TORCH_INDEX"' in run]
    assert len(torch_runs) == 1
    installed = set(_runs()[torch_runs[0]].split('--index-url "$TORCH_INDEX"')[1].split())
    wanted = {_name(r) for r in PYPROJECT["dependencies"]} & PYTORCH_INDEX_PACKAGES
    assert installed == wanted == {"torch", "torchvision"}

    # EXTRAS: the learner's `lab` extra without JupyterLab, i.e. every extra a lab imports
    lab = PYPROJECT["optional-dependencies"]["lab"]
    referenced = [r for r in lab if _name(r) == "dlcourse"]
    assert len(referenced) == 1
    lab_extras = _leaf_extras(re.search(r"\[(.*)\]", referenced[0]).group(1).split(","))
    assert {_name(r) for r in lab} - {"dlcourse"} == {"jupyterlab"}, "a new `lab` dependency: add it to the image?"
    assert _arg_default("EXTRAS").split(",") == lab_extras

    # the Dockerfile's own pyproject reader, run here: it lists every dependency and every extra's, in order
    reader = [run for run in _runs() if "tomllib" in run]
    assert len(reader) == 1 and reader[0].index("python -c") < reader[0].index("pip install --quiet -r")
    code = shlex.split(reader[0].split(">")[0])[2].replace("/tmp/pyproject.toml", str(ROOT / "pyproject.toml"))
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "EXTRAS": _arg_default("EXTRAS")},
                         capture_output=True, text=True, check=True).stdout
    extras = [r for e in lab_extras for r in PYPROJECT["optional-dependencies"][e]]
    assert out.splitlines() == PYPROJECT["dependencies"] + extras
    assert torch_runs[0] < _runs().index(reader[0]), "torch first, so pyproject's torch>= finds it installed"
    # then the course itself, editable as `make lab` installs it
    assert ("COPY", ". /course") in dockerfile()
    assert any('pip install --quiet -e ".[${EXTRAS}]"' in run for run in _runs())


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker's .dockerignore ``patterns`` (no ``!`` rules here) leave ``path`` out of the context: a
    pattern matches from the context's root, ``**`` any number of folders, and a matched folder drops its files."""
    def regex(pattern: str) -> str:
        out = re.escape(pattern.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        return out.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")

    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(re.fullmatch(regex(p), prefix) for p in patterns for prefix in prefixes)


def test_dockerignore_keeps_the_environment_history_outputs_and_submissions_out():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns)
    for path in (".venv/bin/python", ".git/HEAD", "grading-output/grades.csv", "runs/x/events", "out/grades.csv",
                 "out-3/results/a.json", "final/grades.csv", "submissions/alice/lab01_training_loop.ipynb",
                 "canvas-submissions.zip", "class/moodle.zip", "dlcourse/__pycache__/cli.cpython-311.pyc",
                 "dlcourse.egg-info/PKG-INFO", ".pytest_cache/v/cache", "notebooks/.ipynb_checkpoints/a.ipynb"):
        assert _ignored(path, patterns), f"{path} would be copied into the image"
    needed = ["pyproject.toml", "README.md", "Makefile"] + [
        p.relative_to(ROOT).as_posix() for folder in ("dlcourse", "solutions", "labs", "notebooks")
        for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert len(needed) > 50
    assert [p for p in needed if _ignored(p, patterns)] == []


# --- the README's section -------------------------------------------------------------------------------------

def _section() -> str:
    text = (ROOT / "README.md").read_text()
    assert SECTION in text
    rest = text.split(SECTION, 1)[1]
    return rest[:min(i for i in (rest.find("\n## "), rest.find("\n### "), len(rest)) if i >= 0)]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.DOTALL)


STANDINS = {
    # each prints the arguments `dlcourse` would get, one per line, then a line "---"
    "dlcourse": 'printf "%s\\n" "$@" ---',
    "docker": '[ "$1" = run ] || exit 0; while [ "$#" -gt 0 ]; do case "$1" in *dlcourse-grader:*) shift; '
              'exec dlcourse "$@";; esac; shift; done',
    "apptainer": 'while [ "$#" -gt 0 ]; do case "$1" in *.sif) shift; exec dlcourse "$@";; esac; shift; done',
    "sbatch": '[ "$1" = --parsable ] && { echo 1234; exit 0; }; for a; do last=$a; done; exec bash -c "$last"',
}


def _run_with_standins(script: str, shell: str, env: dict[str, str], tmp_path: Path) -> list[list[str]]:
    """The argument lists ``dlcourse`` receives when ``shell`` runs ``script`` with the stand-ins on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in STANDINS.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "USER": "ta", **env}
    run = subprocess.run([shell, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         check=False)
    assert run.returncode == 0, run.stderr
    calls = run.stdout.split("---\n")
    assert calls[-1] == ""
    return [call.splitlines() for call in calls[:-1]]


def _parse(argv: list[str]) -> dict[str, str]:
    """Check that dlcourse's own parser accepts ``argv``; return its command and options as written."""
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"the README calls `dlcourse {' '.join(argv)}`, which dlcourse's parser rejects")
    options = {a: b for a, b in zip(argv, argv[1:]) if a.startswith("--") and not b.startswith("--")}
    positional = [a for i, a in enumerate(argv[1:], 1) if not a.startswith("--") and not argv[i - 1].startswith("--")]
    return {"command": argv[0], "positional": positional, **options}


def test_the_kubernetes_manifests_parse_and_shard_the_class_one_index_per_pod(tmp_path):
    yaml = pytest.importorskip("yaml")
    jobs = [yaml.safe_load(block) for block in _blocks("yaml")]
    assert [job["kind"] for job in jobs] == ["Job", "Job"]
    grade, merge = jobs
    spec, pod = grade["spec"], grade["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"]
    n = spec["completions"]
    (container,) = pod["containers"]
    # the API server accepts procMount: Unmasked only in a pod with a user namespace of its own
    assert container["securityContext"]["procMount"] == "Unmasked" and pod["hostUsers"] is False
    assert container["command"] == ["sh", "-c"] and len(container["args"]) == 1
    outs = []
    for index in range(n):
        (argv,) = _run_with_standins(container["args"][0], "sh", {"JOB_COMPLETION_INDEX": str(index)}, tmp_path)
        args = _parse(argv)
        assert [args[k] for k in ("command", "--shard", "--out")] == ["grade", f"{index + 1}/{n}",
                                                                    f"/shared/out-{index + 1}"]
        assert args["--workers"] == container["resources"]["requests"]["cpu"]
        outs.append(args["--out"])
    (merger,) = merge["spec"]["template"]["spec"]["containers"]
    assert "command" not in merger, "the merge Job relies on the image's entrypoint"
    args = _parse(merger["args"])
    assert [args["command"], args["positional"], args["--out"]] == ["merge", outs, "/shared/final"]


def test_the_slurm_array_and_the_other_commands_call_the_cli_with_flags_it_has(tmp_path):
    blocks = _blocks("bash")
    array = [b for b in blocks if "#SBATCH --array=" in b]
    assert len(array) == 1
    n = int(re.search(r"#SBATCH --array=1-(\d+)\n", array[0]).group(1))
    assert re.search(rf"^N={n}$", array[0], flags=re.MULTILINE), "N in the script is the array's size"
    outs = []
    for task in range(1, n + 1):
        env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_CPUS_PER_TASK": "4"}
        (argv,) = _run_with_standins(array[0], "bash", env, tmp_path)
        args = _parse(argv)
        assert [args[k] for k in ("command", "--shard", "--out", "--workers")] == ["grade", f"{task}/{n}",
                                                                                f"/shared/out-{task}", "4"]
        outs.append(args["--out"])
    calls = [_parse(argv) for block in blocks if block is not array[0]
             for argv in _run_with_standins(block, "bash", {}, tmp_path)]
    assert [call["command"] for call in calls] == ["grade", "merge", "grade", "merge"]
    assert calls[-1]["positional"] == outs, "the SLURM merge takes every shard's folder"
