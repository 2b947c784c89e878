"""The gradebook around grading: shards and their merge, deadlines and late penalties, LMS export.

One small Canvas-zip class (lab99_tiny: 3 notebooks and a student without one) is graded once whole and once as
2 shards through the command line (module fixture); every other test reads those folders or is a pure function.
"""

import json
import shutil
import struct
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dlcourse import cli
from dlcourse.grading import build, gradebook, late, shard
from dlcourse.grading.submissions import zip_time

TINY = Path(__file__).parent / "fixtures" / "lab99_tiny.py"
RULE = ["--deadline", "2026-12-01T23:59+01:00", "--late-penalty", "10", "--late-cap", "25", "--grace", "15m"]
FAST = ["--workers", "2", "--timeout", "60", "--submission-timeout", "120", "--memory-mb", "0"]
HEADER = "student,double-tests,square-tests,halve-tests,raw,submitted,late_days,penalty,total,max,status"


def _class_zip(path: Path) -> Path:
    """Canvas naming; shard_of(·, 2): fay_106 → 1, the others → 2."""
    solution = build.notebook_text(build.read_notebook(TINY))
    lab = build.make_lab(build.read_notebook(TINY))
    next(c for c in lab.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "double-answer"
         ).source = "def double(x):\n    return x + x"
    partial = build.notebook_text(lab)
    in_grace = int(datetime(2026, 12, 1, 23, 9, tzinfo=timezone.utc).timestamp())  # deadline + 10 min
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("ada_101_9001_lab99_tiny.ipynb", (2026, 12, 1, 20, 0, 0)), solution)
        info = zipfile.ZipInfo("cy_103_9003_lab99_tiny.ipynb", (2026, 12, 2, 0, 9, 0))
        info.extra = struct.pack("<HHBi", 0x5455, 5, 1, in_grace)  # Info-ZIP extended timestamp (UTC)
        zf.writestr(info, partial)
        zf.writestr(zipfile.ZipInfo("dee_104_9004_notes.txt", (2026, 12, 1, 9, 0, 0)), "no notebook")
        zf.writestr(zipfile.ZipInfo("fay_LATE_106_9006_lab99_tiny.ipynb", (2026, 12, 3, 10, 0, 0)), solution)
    return path


@pytest.fixture(scope="module")
def graded(tmp_path_factory, sandbox):
    root = tmp_path_factory.mktemp("gradebook")
    subs = _class_zip(root / "canvas.zip")
    for out, extra in (("whole", []), ("out-1", ["--shard", "1/2"]), ("out-2", ["--shard", "2/2"])):
        argv = ["grade", str(TINY), str(subs), "--out", str(root / out), "--sandbox", sandbox, *FAST, *RULE, *extra]
        assert cli.main(argv) == 0
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _untimed(data: bytes) -> object:
    """A result or grades.json without what differs between two gradings of the same notebook: the seconds it took
    and the temporary path the zip entry was extracted to."""
    value = json.loads(data)
    for record in value.get("students", [value]):
        record.pop("seconds"), record.pop("notebook")
    return value


def test_the_gradebook_shows_raw_score_lateness_penalty_and_final(graded):
    whole = graded / "whole"
    assert (whole / "grades.csv").read_text().splitlines() == [
        HEADER,
        "ada_101,2,3,1,6,2026-12-01T20:00:00,0,0,6,6,graded",                  # DOS time, read at +01:00
        "cy_103,2,0,0,2,2026-12-01T23:09:00+00:00,0,0,2,6,graded",              # 10 min late: inside the grace
        "dee_104,0,0,0,0,,,0,0,6,missing notebook: no .ipynb submitted",
        "fay_106,2,3,1,6,2026-12-03T10:00:00,2,1.2,4.8,6,graded"]              # 34 h late: 2 days, 20 %
    fay = json.loads((whole / "grades.json").read_text())["students"][3]
    assert (fay["total"], fay["final_total"], fay["late"]["late_days"], fay["late"]["penalty_percent"]) == (
        6, 4.8, 2, 20)
    page = (whole / "feedback" / "fay_106.html").read_text()
    assert "Submitted 2026-12-03T10:00:00, 1d 10h 1m after the deadline" in page
    assert "2 days late, 20% deducted (6 - 1.2 = 4.8 points)" in page and "Final score: <b>4.8 / 6</b>" in page
    assert "inside the grace period: no penalty" in (whole / "feedback" / "cy_103.html").read_text()
    entries = {e.student: e for e in gradebook.Roster.read(whole).students}
    assert (entries["cy_103"].lms, entries["cy_103"].lms_id) == ("canvas", "103")


def test_merged_shards_are_the_single_runs_gradebook(graded, tmp_path):
    one, two, whole = graded / "out-1", graded / "out-2", graded / "whole"
    assert sorted(p.stem for p in (one / "results").glob("*.json")) == ["fay_106"]
    assert sorted(p.stem for p in (two / "results").glob("*.json")) == ["ada_101", "cy_103", "dee_104"]
    merged = tmp_path / "final"
    assert cli.main(["merge", str(two), str(one), "--out", str(merged)]) == 0
    a, b = _files(whole), _files(merged)
    assert sorted(a) == sorted(b)
    for name in a:
        if name.startswith("feedback/") or name in ("grades.csv", "class.json"):
            assert a[name] == b[name], name
        elif name != "grading.log":
            assert _untimed(a[name]) == _untimed(b[name]), name
    log = (merged / "grading.log").read_text()
    assert log.index("shard 1/2") < log.index("shard 2/2") < log.index("merged 2 shards")

    # Strictly byte-identical: the whole run's own results split into two shard folders merge back into it.
    for k in (1, 2):
        part = tmp_path / f"split-{k}"
        roster = gradebook.Roster.read(whole)
        roster.shard = (k, 2)
        share = {e.key: (whole / "results" / f"{e.key}.json").read_bytes() for e in roster.students
                 if shard.shard_of(e.student, 2) == k}
        gradebook.write_files(part, {"class.json": roster.to_bytes(), "grading.log": b"",
                                     **{f"results/{key}.json": data for key, data in share.items()}})
    shard.merge([tmp_path / "split-1", tmp_path / "split-2"], tmp_path / "rejoined")
    rejoined = _files(tmp_path / "rejoined")
    assert {n: d for n, d in rejoined.items() if n != "grading.log"} == {n: d for n, d in a.items()
                                                                          if n != "grading.log"}


def test_merge_refuses_what_would_not_be_one_class(graded, tmp_path, sandbox):
    one, two, whole = graded / "out-1", graded / "out-2", graded / "whole"
    cases = {"missing shard\\(s\\) 2/2": [one], "overlapping shards": [one, one, two],
             "graded without --shard": [one, whole], "has no class.json": [one, tmp_path]}
    other = tmp_path / "other-lab"
    shutil.copytree(two, other)
    text = (other / "class.json").read_text()
    (other / "class.json").write_text(text.replace('"lab": "lab99_tiny"', '"lab": "lab98_other"'))
    cases["different labs"] = [one, other]
    gappy = tmp_path / "gappy"
    shutil.copytree(two, gappy)
    (gappy / "results" / "cy_103.json").unlink()
    cases["has not graded 1 of its students \\(cy_103\\)"] = [one, gappy]
    for message, folders in cases.items():
        with pytest.raises(shard.ShardError, match=message):
            shard.merge(folders, tmp_path / "never")
        assert not (tmp_path / "never").exists()
    with pytest.raises(shard.ShardError, match="already holds files"):
        shard.merge([one, two], whole)
    # A shard folder is never graded as another shard (their results would mix); nothing is touched.
    before = _files(one)
    assert cli.main(["grade", str(TINY), str(graded / "canvas.zip"), "--out", str(one), "--shard", "2/2",
                     "--sandbox", sandbox]) == 2
    assert _files(one) == before
    for bad in ("3/2", "0/2", "1/0", "2", "a/b"):
        with pytest.raises(shard.ShardError, match="--shard"):
            shard.parse_shard(bad)


def test_another_late_rule_is_applied_without_grading_again(graded, tmp_path, sandbox):
    folder = tmp_path / "again"
    shutil.copytree(graded / "whole", folder)
    results = {p.name: p.read_bytes() for p in (folder / "results").iterdir()}
    argv = ["grade", str(TINY), str(graded / "canvas.zip"), "--out", str(folder), "--sandbox", sandbox, *FAST,
            "--deadline", "2026-12-01T23:59+01:00", "--late-penalty", "30", "--late-cap", "50"]
    assert cli.main(argv) == 0
    log = (folder / "grading.log").read_text()
    assert log.count("reference solution scores full marks") == 1  # nobody graded again: no reference run either
    assert "late rule: deadline 2026-12-01T23:59:00+01:00, grace 0s, 30% per day late, at most 50%" in log
    assert (folder / "grades.csv").read_text().splitlines()[1:] == [
        "ada_101,2,3,1,6,2026-12-01T20:00:00,0,0,6,6,graded",
        "cy_103,2,0,0,2,2026-12-01T23:09:00+00:00,1,0.6,1.4,6,graded",          # no grace now: 1 day, 30 %
        "dee_104,0,0,0,0,,,0,0,6,missing notebook: no .ipynb submitted",
        "fay_106,2,3,1,6,2026-12-03T10:00:00,2,3,3,6,graded"]                   # 60 %, capped at 50 %
    assert {p.name: p.read_bytes() for p in (folder / "results").iterdir()} == results  # raw scores kept
    written = gradebook.rewrite(folder, late=None)  # no rule: the plain gradebook
    assert "grades.csv" in written and "feedback/fay_106.html" in written
    assert (folder / "grades.csv").read_text().splitlines()[-1] == "fay_106,2,3,1,6,6,graded"
    assert "late" not in (folder / "feedback" / "fay_106.html").read_text()


def test_export_canvas_moodle_and_csv(graded, tmp_path):
    from dlcourse.grading.export import ExportError, export

    whole = graded / "whole"
    assert export(whole, "canvas").decode() == (
        "Student,ID,SIS User ID,SIS Login ID,Section,lab99_tiny\r\n"
        "ada,101,,,,6\r\ncy,103,,,,2\r\ndee,104,,,,0\r\nfay,106,,,,4.8\r\n")
    assert export(whole, "canvas", "Lab 99 (4242)").decode().splitlines()[0].endswith(",Lab 99 (4242)")
    with pytest.raises(ExportError, match="needs the Moodle id of every student.*4 student\\(s\\)"):
        export(whole, "moodle")  # a Canvas class
    moodle = tmp_path / "moodle-class"  # the same class as if from a Moodle zip (participant ids)
    shutil.copytree(whole, moodle)
    (moodle / "class.json").write_text((moodle / "class.json").read_text().replace('"canvas"', '"moodle"'))
    target = tmp_path / "moodle.csv"
    assert cli.main(["export", str(moodle), "--format", "moodle", "-o", str(target)]) == 0
    assert target.read_bytes().decode() == ("Identifier,Full name,Grade,Maximum Grade,Last modified (grade)\r\n"
                                             "Participant 101,ada,6,6,\r\nParticipant 103,cy,2,6,\r\n"
                                             "Participant 104,dee,0,6,\r\nParticipant 106,fay,4.8,6,\r\n")
    assert export(whole, "csv").decode() == ("student,score,max\r\nada_101,6,6\r\ncy_103,2,6\r\ndee_104,0,6\r\n"
                                             "fay_106,4.8,6\r\n")
    # A class graded from folders has no LMS ids: Canvas and Moodle files cannot be made, csv can.
    folder = tmp_path / "from-folders"
    roster = gradebook.Roster.read(whole)
    for entry in roster.students:
        entry.lms = entry.lms_id = None
    gradebook.write_files(folder, {"class.json": roster.to_bytes(), "results/ada_101.json":
                                   (whole / "results" / "ada_101.json").read_bytes()})
    with pytest.raises(ExportError, match="needs the Canvas id of every student.*1 student\\(s\\).*ada_101"):
        export(folder, "canvas")
    assert export(folder, "csv").decode() == "student,score,max\r\nada_101,6,6\r\n"
    with pytest.raises(gradebook.GradebookError, match="no class.json"):
        export(tmp_path, "csv")


def test_late_penalty_at_the_edges():
    deadline = datetime(2026, 12, 1, 23, 59, tzinfo=timezone(timedelta(hours=1)))
    rule = late.LateRule(deadline, per_day=10, cap=25, grace=timedelta(minutes=15))

    def after(**delta) -> late.Late:
        return late.assess(rule, (deadline + timedelta(**delta)).isoformat(), 8.0)

    assert (after(minutes=-1).days, after(minutes=-1).final) == (0, 8)
    assert (after(minutes=15).days, after(minutes=15).final) == (0, 8)                     # the grace's last second
    assert (after(minutes=15, seconds=1).days, after(minutes=15, seconds=1).final) == (1, 7.2)
    assert (after(days=1).days, after(days=1).penalty) == (1, 0.8)                         # exactly one day
    assert (after(days=1, seconds=1).days, after(days=1, seconds=1).final) == (2, 6.4)
    assert (after(days=30).days, after(days=30).percent, after(days=30).final) == (30, 25, 6)  # the cap
    assert late.assess(rule, "2026-12-02T00:14:00", 8).days == 0   # no offset: the deadline's zone (+01:00)
    assert late.assess(rule, None, 8).describe().startswith("No submission time")
    assert late.LateRule.from_dict(rule.to_dict()) == rule
    assert late.parse_duration("2h") == timedelta(hours=2) and late.parse_duration("90") == timedelta(seconds=90)
    for bad, message in ((lambda: late.parse_duration("15 minutes"), "not a duration"),
                         (lambda: late.parse_time("tomorrow"), "not a time"),
                         (lambda: late.LateRule.from_options(None, 10), "--late-penalty without --deadline"),
                         (lambda: late.LateRule.from_options("2026-12-01T23:59", 120), "between 0 and 100")):
        with pytest.raises(late.LateRuleError, match=message):
            bad()


def test_zip_times_and_shards_are_stable():
    info = zipfile.ZipInfo("a.ipynb", (2026, 12, 1, 12, 30, 0))
    assert zip_time(info) == "2026-12-01T12:30:00"
    info.extra = b"\x01\x00\x04\x00abcd" + struct.pack("<HHBi", 0x5455, 5, 1, 0)  # an unrelated field first
    assert zip_time(info) == "1970-01-01T00:00:00+00:00"
    students = [f"student_{i}" for i in range(200)]
    before = {s: shard.shard_of(s, 4) for s in students}
    assert set(before.values()) == {1, 2, 3, 4}
    assert {s: shard.shard_of(s, 4) for s in [*students, "new_1", "new_2"] if s in before} == before
