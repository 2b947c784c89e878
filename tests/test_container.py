"""Static checks of the grading image (there is no docker here).

The Dockerfile must install what pyproject.toml asks for (torch from PyTorch's CPU index, the rest from
pyproject itself, the extras the labs need), and `.dockerignore` must keep the host's environment, git history,
outputs and submissions out of the image.
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

from dlcourse.grading.build import KERNELSPEC

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
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
    lab_extras = re.search(r"\[(.*)\]", referenced[0]).group(1).split(",")
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
