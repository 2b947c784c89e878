"""The set-up files agree with each other: pyproject, environment.yml, Makefile, .ci/run and README."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch", "torch_geometric": "pytorch_geometric"}  # pip name -> conda-forge name, where they differ


def _name_and_spec(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*(.*)$", requirement)
    return match.group(1).lower(), match.group(2).replace(" ", "")


def _learner_requirements(project: dict) -> list[str]:
    """The core dependencies plus the ``lab`` extra, with ``dlcourse[x,y]`` self-references expanded."""
    extras = project["optional-dependencies"]
    found, todo = list(project["dependencies"]), list(extras["lab"])
    while todo:
        req = todo.pop()
        if req.startswith("dlcourse["):
            todo += [r for name in req[len("dlcourse["):-1].split(",") for r in extras[name.strip()]]
        else:
            found.append(req)
    return found


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_name_and_spec(r) for r in _learner_requirements(project))
    wanted = {CONDA_NAMES.get(name, name): spec for name, spec in wanted.items()}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = dict(_name_and_spec(d) for d in env["dependencies"] if isinstance(d, str))
    for tool in ("python", "pip", "make"):
        conda.pop(tool, None)
    assert conda == wanted
    pip_lines = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_lines == ['-e ".[lab]"'], "environment.yml must install the course package from pyproject.toml"


def test_learner_environment_does_not_pull_test_tools():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    learner = " ".join(_learner_requirements(project))
    assert "nbgrader" not in learner and "pytest" not in learner
    assert any(r.startswith("nbgrader") for r in project["optional-dependencies"]["test"])


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text()
    for target in ("lab:", "test:", "sync:", "grade:", "bench:"):
        assert f"\n{target}" in makefile


def test_readme_course_map_lists_every_notebook_and_lab():
    readme = (ROOT / "README.md").read_text()
    for path in sorted((ROOT / "notebooks").glob("*.py")) + sorted((ROOT / "solutions").glob("lab*.py")):
        assert path.stem in readme, f"{path.stem} is missing from the README course map"


def test_workflows_exist_for_cpu_and_gpu():
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    gpu = yaml.safe_load((ROOT / ".github" / "workflows" / "gpu.yml").read_text())
    assert "make test" in ci
    job = next(iter(gpu["jobs"].values()))
    assert "gpu" in job["runs-on"]
    assert job["env"]["DLCOURSE_SCALE"] == "full"
