"""Finding submissions: student folders, a flat folder with a pattern, Canvas and Moodle zips, odd names."""

import zipfile

import pytest

from dlcourse.grading.submissions import discover, safe_key


def _touch(path, text="{}"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_folder_per_student(tmp_path):
    _touch(tmp_path / "s" / "ada" / "lab01_training_loop.ipynb")
    _touch(tmp_path / "s" / "bo" / "lab01_training_loop.ipynb")
    _touch(tmp_path / "s" / "bo" / ".ipynb_checkpoints" / "lab01_training_loop-checkpoint.ipynb")
    _touch(tmp_path / "s" / "cy" / "draft.ipynb")
    _touch(tmp_path / "s" / "cy" / "lab01_training_loop.ipynb")
    (tmp_path / "s" / "dee").mkdir()
    found = discover(tmp_path / "s", "lab01_training_loop", tmp_path / "w")
    assert [(f.student, f.path.name if f.path else f.problem) for f in found] == [
        ("ada", "lab01_training_loop.ipynb"), ("bo", "lab01_training_loop.ipynb"),
        ("cy", "lab01_training_loop.ipynb"), ("dee", "missing notebook: no .ipynb submitted")]


def test_flat_folder_needs_a_pattern_with_a_student_group(tmp_path):
    _touch(tmp_path / "s" / "ada_lab01.ipynb")
    _touch(tmp_path / "s" / "bo_lab01.ipynb")
    with pytest.raises(ValueError, match="use --pattern"):
        discover(tmp_path / "s", "lab01", tmp_path / "w")
    with pytest.raises(ValueError, match="named group"):
        discover(tmp_path / "s", "lab01", tmp_path / "w", pattern=r"(.+)_lab01")
    found = discover(tmp_path / "s", "lab01", tmp_path / "w", pattern=r"(?P<student>[^_]+)_lab01")
    assert [(f.student, f.path.name) for f in found] == [("ada", "ada_lab01.ipynb"), ("bo", "bo_lab01.ipynb")]


def test_canvas_zip(tmp_path):
    archive = tmp_path / "submissions.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("doejane_12345_67890_lab01_training_loop.ipynb", "{}")
        zf.writestr("smithbob_LATE_23456_78901_lab01_training_loop-1.ipynb", "{}")
        zf.writestr("../evil_1_2_lab01.ipynb", "{}")  # zip-slip: never extracted
    found = discover(archive, "lab01_training_loop", tmp_path / "w")
    assert [(f.student, f.path.name) for f in found] == [
        ("doejane_12345", "lab01_training_loop.ipynb"), ("smithbob_23456", "lab01_training_loop-1.ipynb")]
    assert all(tmp_path / "w" in f.path.parents for f in found)


def test_moodle_zip(tmp_path):
    archive = tmp_path / "moodle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Jane Doe_123456_assignsubmission_file_/lab01_training_loop.ipynb", "{}")
        zf.writestr("Bob Smith_234567_assignsubmission_file_/lab01.ipynb", "{}")
        zf.writestr("Bob Smith_234567_assignsubmission_file_/lab01 (copy).ipynb", "{}")
    found = discover(archive, "lab01_training_loop", tmp_path / "w")
    assert [(f.student, f.path.name if f.path else f.problem) for f in found] == [
        ("Bob Smith_234567", "ambiguous: 2 notebooks (lab01.ipynb, lab01 (copy).ipynb)"),
        ("Jane Doe_123456", "lab01_training_loop.ipynb")]
    assert found[0].key == safe_key("Bob Smith_234567") and " " not in found[0].key


def test_bad_zip_and_missing_folder_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable zip"):
        discover(bad, "lab01", tmp_path / "w")
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("notes.txt", "hi")
    with pytest.raises(ValueError, match="neither|Canvas or Moodle"):
        discover(plain, "lab01", tmp_path / "w")
    with pytest.raises(FileNotFoundError):
        discover(tmp_path / "nowhere", "lab01", tmp_path / "w")


def test_safe_keys_are_unique_and_file_name_safe():
    assert safe_key("ada") == "ada"
    odd = safe_key("Jane Doe/../é")
    assert "/" not in odd and " " not in odd and odd != safe_key("Jane Doe/../e")
    assert safe_key("..") .startswith("student")
