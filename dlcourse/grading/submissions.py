"""Finding each student's notebook: a folder per student, a flat folder with a name pattern, or an LMS zip export.

Every student found becomes a ``Submission``: either a notebook path, or a problem that becomes their status
("missing notebook", "ambiguous: 2 notebooks", ...). Odd or non-UTF-8 names are kept readable and given a safe,
unique key for output file names.

A submission also carries when it was made, for late penalties: from an LMS zip the entry's time (exact, in UTC,
when the entry has the "extended timestamp" extra field; otherwise the zip's local date and time, without a zone),
from a folder the notebook file's modification time (so copy submissions with their times kept: ``cp -p``,
``rsync -t``). From an LMS zip it carries the LMS's id too: the Canvas user id or the Moodle participant id.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

MAX_UNZIPPED_BYTES = 2 * 2 ** 30
# Canvas: "doejane_12345_67890_lab01_training_loop.ipynb" (late ones: "doejane_LATE_12345_67890_...").
CANVAS = re.compile(r"^(?P<name>[^_/]+)_(?:late_)?(?P<uid>\d+)_\d+_(?P<file>.+)$", re.IGNORECASE)
# Moodle: "Jane Doe_123456_assignsubmission_file_/lab01.ipynb" (a folder per student) or the same as a file prefix.
MOODLE = re.compile(r"^(?P<name>.+?)_(?P<uid>\d+)_assignsubmission_file_(?P<file>.*)$")


@dataclass
class Submission:
    student: str              # readable id, as written in the gradebook
    key: str                  # safe, unique file-name stem for results/ and feedback/
    path: Path | None = None  # the notebook to grade, when there is exactly one
    problem: str = ""         # why there is nothing to grade
    submitted: str | None = None  # ISO 8601 time the notebook was submitted (see above); None when unknown
    lms: str | None = None        # "canvas" or "moodle": the naming the zip entry followed
    lms_id: str | None = None     # the Canvas user id or Moodle participant id in that name


def readable(name: str) -> str:
    """A name from the file system as text: undecodable bytes become U+FFFD instead of crashing CSV writing."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def safe_key(student: str) -> str:
    """A file-name-safe key; a short hash keeps keys unique when characters had to be replaced."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", student).strip("._") or "student"
    if key != student:
        key += "-" + hashlib.sha1(student.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return key[:120]


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(int(path.stat().st_mtime), timezone.utc).isoformat()


def zip_time(member: zipfile.ZipInfo) -> str:
    """When a zip entry was written: the extended-timestamp extra field's UTC time when present (Info-ZIP, most
    LMS exports), else the entry's DOS date and time, which carries no zone (ISO 8601 without an offset)."""
    extra = member.extra
    while len(extra) >= 4:
        tag, size = struct.unpack("<HH", extra[:4])
        body = extra[4:4 + size]
        if tag == 0x5455 and len(body) >= 5 and body[0] & 1:  # "UT", flags bit 0: the modification time follows
            return datetime.fromtimestamp(struct.unpack("<i", body[1:5])[0], timezone.utc).isoformat()
        extra = extra[4 + size:]
    return datetime(*member.date_time).isoformat()


def _choose(student: str, notebooks: list[Path], lab_name: str) -> Submission:
    visible = sorted(p for p in notebooks if not p.name.startswith(".") and ".ipynb_checkpoints" not in p.parts)
    matching = [p for p in visible if p.stem.startswith(lab_name)] or visible
    if not matching:
        return Submission(student, safe_key(student), problem="missing notebook: no .ipynb submitted")
    if len(matching) > 1:
        names = ", ".join(readable(p.name) for p in matching)
        return Submission(student, safe_key(student), problem=f"ambiguous: {len(matching)} notebooks ({names})")
    return Submission(student, safe_key(student), matching[0], submitted=_mtime(matching[0]))


def from_folders(root: Path, lab_name: str) -> list[Submission]:
    """``root/<student>/*.ipynb``: one sub-folder per student."""
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out.append(_choose(readable(folder.name), list(folder.rglob("*.ipynb")), lab_name))
    return out


def from_pattern(root: Path, pattern: str, lab_name: str) -> list[Submission]:
    """A flat folder whose file names match ``pattern``, a regex with a ``(?P<student>...)`` group."""
    regex = re.compile(pattern)
    if "student" not in regex.groupindex:
        raise ValueError(f"--pattern {pattern!r} needs a named group (?P<student>...) for the student id")
    groups: dict[str, list[Path]] = {}
    for path in sorted(root.iterdir()):
        match = regex.search(path.name) if path.is_file() else None
        if match:
            groups.setdefault(readable(match.group("student")), []).append(path)
    if not groups:
        raise ValueError(f"no file in {root} matches --pattern {pattern!r}")
    return [_choose(student, [p for p in paths if p.suffix == ".ipynb"], lab_name)
            for student, paths in sorted(groups.items())]


def _lms_student(relative: str) -> tuple[str, str, str, str] | None:
    """(student id, file name, LMS, LMS id) from an LMS export path, or None when it follows neither convention."""
    top, _, rest = relative.partition("/")
    for candidate, file_part in ((top, rest), (relative.split("/")[-1], None)):
        for lms, regex in (("moodle", MOODLE), ("canvas", CANVAS)):
            match = regex.match(candidate)
            if match:
                return (f"{match.group('name')}_{match.group('uid')}", file_part or match.group("file"), lms,
                        match.group("uid"))
    return None


def from_zip(archive: Path, workdir: Path, lab_name: str) -> list[Submission]:
    """An LMS "download all submissions" zip (Canvas or Moodle naming), extracted safely into ``workdir``."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{archive} is not a readable zip file ({exc})") from exc
    groups: dict[str, list[Path]] = {}
    ids: dict[str, tuple[str, str]] = {}
    times: dict[Path, str] = {}
    unknown = []
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if sum(m.file_size for m in members) > MAX_UNZIPPED_BYTES:
            raise ValueError(f"{archive} unpacks to more than {MAX_UNZIPPED_BYTES >> 30} GiB: refusing to extract")
        for index, member in enumerate(members):
            name = member.filename.replace("\\", "/")
            if name.startswith("/") or ".." in name.split("/") or "__MACOSX" in name:
                continue  # absolute paths and zip-slip attempts are never extracted
            found = _lms_student(name)
            if found is None:
                unknown.append(name)
                continue
            student, file_name, lms, lms_id = found
            ids.setdefault(student, (lms, lms_id))
            target = workdir / f"{index:05d}" / (Path(file_name).name or "submission")
            times[target] = zip_time(member)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, target.open("wb") as dst:
                dst.write(src.read())
            groups.setdefault(student, []).append(target)
    if not groups:
        raise ValueError(f"{archive}: no entry follows Canvas or Moodle naming "
                         f"(e.g. {', '.join(unknown[:3]) or 'it is empty'}); unzip it and use --pattern instead")
    found = []
    for student, paths in sorted(groups.items()):
        sub = _choose(student, [p for p in paths if p.suffix == ".ipynb"], lab_name)
        sub.submitted = times.get(sub.path) if sub.path is not None else None
        sub.lms, sub.lms_id = ids[student]
        found.append(sub)
    return found


def discover(submissions: Path, lab_name: str, workdir: Path, pattern: str | None = None) -> list[Submission]:
    """Every student in ``submissions`` (a folder or a zip), each with one notebook or a problem."""
    if not submissions.exists():
        raise FileNotFoundError(f"submissions {submissions} do not exist")
    if submissions.is_file():
        found = from_zip(submissions, workdir, lab_name)
    elif pattern:
        found = from_pattern(submissions, pattern, lab_name)
    else:
        found = from_folders(submissions, lab_name)
        if not found and any(submissions.glob("*.ipynb")):
            raise ValueError(f"{submissions} holds notebooks but no student folders: use --pattern with a "
                             "(?P<student>...) group, e.g. --pattern '(?P<student>[^_]+)_lab'")
    seen: dict[str, int] = {}
    for sub in found:  # two names that map to the same key get distinct keys
        seen[sub.key] = seen.get(sub.key, 0) + 1
        if seen[sub.key] > 1:
            sub.key = f"{sub.key}-{seen[sub.key]}"
    return found
