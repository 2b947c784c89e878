"""The files every grade depends on — the course package, the lab source, the hidden tests — hashed at the start
of a batch and checked after each submission, so a submission that rewrote them (possible only without the
sandbox) stops the batch instead of silently changing everyone else's grades."""

from __future__ import annotations

import hashlib
from pathlib import Path


class TamperError(RuntimeError):
    """Files the grades depend on changed during a batch; the message names them and the suspect submissions."""


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def snapshot(*roots: Path | str) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (files or folders), by path."""
    hashes = {}
    for root in roots:
        for path in _files(Path(root)):
            hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def changes(before: dict[str, str], *roots: Path | str) -> list[str]:
    """What differs from ``before``: "changed X", "added X", "removed X"."""
    after = snapshot(*roots)
    out = [f"changed {p}" for p in sorted(before) if p in after and after[p] != before[p]]
    out += [f"removed {p}" for p in sorted(before) if p not in after]
    out += [f"added {p}" for p in sorted(after) if p not in before]
    return out


def course_roots(lab: Path, hidden: Path | None) -> list[Path]:
    """The course package's folder, the lab source and (when given) its hidden-test overlay."""
    import dlcourse

    roots = [Path(dlcourse.__file__).resolve().parent, Path(lab).resolve()]
    if hidden is not None:
        roots.append(Path(hidden).resolve())
    return roots
