"""The learner's workspace: ``make lab`` serves copies of the course's notebooks, never the course files themselves.

``workspace/`` (git-ignored, in the course folder) holds ``notebooks/*.ipynb`` and ``labs/*.ipynb`` under the same
sub-folders, so every instruction written for the course (``dlcourse check labs/lab01_training_loop.ipynb``) works
from a terminal opened there. A file is copied when the workspace lacks it and is never overwritten once the learner
may have worked in it. ``workspace/.dlcourse-workspace.json`` records the SHA-256 of each course file at copy time,
which is how a later ``make lab`` (after ``git pull``) tells the three cases apart:

- a course notebook new since the last run: copied in;
- a copy the learner never saved (its bytes are still those copied) whose course file changed: replaced by the new
  version, since nothing of the learner's is lost;
- a copy the learner saved whose course file changed: kept, and reported with how to take the new version (rename or
  delete yours, run ``make lab`` again).

Introduced for ``make lab`` (see the README's "For learners"); notebook 00 is the first file a learner opens there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

FOLDERS = ("notebooks", "labs")
MANIFEST = ".dlcourse-workspace.json"


@dataclass
class FillReport:
    """What :func:`fill` did; paths are relative to the workspace (e.g. ``labs/lab01_training_loop.ipynb``)."""

    workspace: Path
    copied: list[str] = field(default_factory=list)  # new in the workspace
    updated: list[str] = field(default_factory=list)  # an unsaved copy replaced by a newer course version
    kept: list[str] = field(default_factory=list)  # the learner's saved copy; the course has a newer version


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def course_files(root: Path) -> list[str]:
    """Every notebook and lab the course ships, relative to the course folder, e.g. ``notebooks/00_welcome.ipynb``."""
    return [f"{folder}/{p.name}" for folder in FOLDERS for p in sorted((root / folder).glob("*.ipynb"))]


def read_manifest(workspace: Path) -> dict[str, dict]:
    """``{relative path: {"sha256": course file's hash when copied}}``; empty for a new (or unreadable) manifest."""
    try:
        data = json.loads((workspace / MANIFEST).read_text())
        return dict(data.get("files", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def _write_manifest(workspace: Path, files: dict[str, dict]) -> None:
    text = json.dumps({"about": "what `dlcourse lab` copied from the course: the course file's SHA-256 at copy time",
                       "version": 1, "files": dict(sorted(files.items()))}, indent=1)
    tmp = workspace / (MANIFEST + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(workspace / MANIFEST)


def fill(root: Path, workspace: Path | None = None) -> FillReport:
    """Bring ``workspace`` (default ``root/workspace``) up to date with the course in ``root``; see the module doc."""
    root = Path(root)
    workspace = Path(workspace) if workspace is not None else root / "workspace"
    report = FillReport(workspace)
    manifest = read_manifest(workspace)
    for rel in course_files(root):
        source, target = root / rel, workspace / rel
        course_hash = _sha256(source)
        recorded = manifest.get(rel, {}).get("sha256")
        if not target.exists():
            action = report.copied
        elif recorded is None:
            # a file the manifest does not know (the manifest was deleted, or the learner put it there): adopt it
            # only when it is the course's file byte for byte; otherwise it is the learner's and stays unknown
            if _sha256(target) == course_hash:
                manifest[rel] = {"sha256": course_hash}
            continue
        elif recorded == course_hash:
            continue  # the course has not changed since the copy: whatever the learner did is theirs
        elif _sha256(target) == recorded:
            action = report.updated  # never saved by the learner: nothing of theirs to lose
        else:
            report.kept.append(rel)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        manifest[rel] = {"sha256": course_hash}
        action.append(rel)
    if report.copied or report.updated or manifest != read_manifest(workspace):
        workspace.mkdir(parents=True, exist_ok=True)
        _write_manifest(workspace, manifest)
    return report


def describe(report: FillReport, shown: str | None = None) -> list[str]:
    """The lines `dlcourse lab` prints about `report`; `shown` names the workspace in them (e.g. `workspace`)."""
    where = shown or str(report.workspace)
    lines = []
    if report.copied:
        lines.append(f"copied {len(report.copied)} notebook(s) into {where}/: " + ", ".join(report.copied))
    for rel in report.updated:
        lines.append(f"updated {where}/{rel} to the new course version (you had not saved it)")
    for rel in report.kept:
        mine = Path(rel).with_name(Path(rel).stem + "-mine.ipynb").as_posix()
        lines.append(f"kept your {where}/{rel}: the course has a newer version. To take it, rename yours (e.g. "
                     f"`mv {where}/{rel} {where}/{mine}`) and run `make lab` again.")
    return lines
