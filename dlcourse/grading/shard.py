"""Grading a class in N shards (one per machine) and merging the shard folders into one gradebook.

Which shard grades a student depends on that student alone: shard ``sha256(student id) mod N + 1``. Adding or
removing a student (a late submission, a withdrawal) never moves anyone else to another shard, so a shard folder
graded earlier stays valid; the price is shards of unequal size for a small class.

Every shard folder's ``class.json`` lists the whole class, so ``merge`` can prove it has every shard and every
student: it refuses folders of different labs (or hidden tests), late rules, shard counts or classes, a shard
given twice or missing, a shard that has not graded all of its share or holds results outside it, and an output
folder that already holds files. It then writes results/ byte for byte as the shards stored them and derives the
rest with the same functions a single run uses, so the merged folder is the one a single run writes (grades.csv,
grades.json, class.json, results/, feedback/); grading.log is the shards' logs one after another.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import replace
from pathlib import Path

from .gradebook import GradebookError, Roster, derived_files, read_results, write_files


class ShardError(ValueError):
    """A shard spec or a set of shard folders that cannot be used; the message says what to do."""


def parse_shard(spec: str) -> tuple[int, int]:
    """``"K/N"`` → (K, N) with 1 ≤ K ≤ N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    if not match:
        raise ShardError(f"--shard {spec!r} is not K/N: write e.g. --shard 1/4 (shard 1 of 4; K counts from 1)")
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 1 <= k <= n:
        raise ShardError(f"--shard {spec}: K must be between 1 and N (N >= 1), e.g. 1/{max(n, 1)} .. "
                         f"{max(n, 1)}/{max(n, 1)}")
    return k, n


def shard_of(student: str, n: int) -> int:
    """The shard (1..n) that grades ``student`` (the readable id, as in the gradebook)."""
    digest = hashlib.sha256(student.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % n + 1


def merge(folders: list[Path | str], out: Path | str) -> Roster:
    """Merge the output folders of every shard of one class into ``out`` (new or empty); return its roster."""
    folders, out = [Path(f) for f in folders], Path(out)
    if not folders:
        raise ShardError("no shard folders given: dlcourse merge OUT_1 ... OUT_N --out OUT")
    if out.exists() and any(out.iterdir()):
        raise ShardError(f"{out} already holds files: merge into a new or empty folder (nothing was written)")
    if any(out.resolve() == f.resolve() for f in folders):
        raise ShardError(f"--out {out} is one of the shard folders: merge into a new folder")
    rosters = []
    for folder in folders:
        try:
            rosters.append(Roster.read(folder))
        except GradebookError as exc:
            raise ShardError(str(exc)) from None
    first, base = rosters[0], replace(rosters[0], shard=None)
    for folder, roster in zip(folders, rosters):
        if roster.shard is None:
            raise ShardError(f"{folder} was graded without --shard: it is a whole class already, not a shard")
        if (roster.lab, roster.source) != (first.lab, first.source):
            raise ShardError(f"{folders[0]} and {folder} graded different labs or lab versions ({first.lab} and "
                             f"{roster.lab}; same name means other tests or hidden tests): grade every shard with "
                             "the same course files")
        if roster.shard[1] != first.shard[1]:
            raise ShardError(f"{folders[0]} is shard {first.shard[0]}/{first.shard[1]} but {folder} is shard "
                             f"{roster.shard[0]}/{roster.shard[1]}: every shard must use the same N")
        if roster.students != first.students:
            raise ShardError(f"{folders[0]} and {folder} found different classes (the submissions changed between "
                             "the shards' runs?): grade every shard from the same submissions")
        if roster.late != first.late:
            raise ShardError(f"{folders[0]} and {folder} used different late rules: grade every shard with the same "
                             "--deadline/--late-penalty/--late-cap/--grace")
    n = first.shard[1]
    seen: dict[int, Path] = {}
    for folder, roster in zip(folders, rosters):
        k = roster.shard[0]
        if k in seen:
            raise ShardError(f"overlapping shards: {seen[k]} and {folder} are both shard {k}/{n}; give each once")
        seen[k] = folder
    missing = sorted(set(range(1, n + 1)) - set(seen))
    if missing:
        raise ShardError(f"missing shard(s) {', '.join(f'{k}/{n}' for k in missing)}: grade them (dlcourse grade "
                         f"... --shard K/{n} --out OUT_K), then merge all {n} folders")
    results, stored = {}, {}
    for folder, roster in sorted(zip(folders, rosters), key=lambda pair: pair[1].shard[0]):
        k = roster.shard[0]
        share = {e.key for e in roster.students if shard_of(e.student, n) == k}
        found = read_results(folder)
        outside = sorted(set(found) - share)
        if outside:
            raise ShardError(f"{folder} (shard {k}/{n}) holds results of students outside its share: "
                             f"{', '.join(outside[:5])}{' ...' if len(outside) > 5 else ''}; it was not graded "
                             "with this --shard alone: grade the shard again into a new folder")
        absent = [e.student for e in roster.students if e.key in share and e.key not in found]
        if absent:
            raise ShardError(f"{folder} (shard {k}/{n}) has not graded {len(absent)} of its students "
                             f"({', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}): run its grade "
                             "command again (it resumes), then merge")
        results.update(found)
        stored.update({key: (folder / "results" / f"{key}.json").read_bytes() for key in found})
    files = {f"results/{e.key}.json": stored[e.key] for e in base.students}
    files.update(derived_files(base, results))
    log = b"".join((folder / "grading.log").read_bytes() for folder in (seen[k] for k in range(1, n + 1))
                   if (folder / "grading.log").is_file())
    files["grading.log"] = log + (f"{time.strftime('%Y-%m-%d %H:%M:%S')} merged {n} shards into {out}: "
                                  f"{', '.join(str(seen[k]) for k in range(1, n + 1))}\n").encode()
    out.mkdir(parents=True, exist_ok=True)
    write_files(out, files)
    return base

