"""The grading self-check of every lab: the reference solution passes in this environment, the solution scores
full marks, the generated lab scores 0, and plausible wrong answers score exactly in between. Runs the real grader
(a fresh kernel per submission, smoke scale, values judged against the reference run).

One small class per lab, so pytest-xdist (``--dist loadscope``) spreads the labs over its workers.
"""

import functools
import importlib.util
from pathlib import Path

from dlcourse.grading import autograde, build
from dlcourse.grading import cells as C
from dlcourse.grading.kernel import Limits
from dlcourse.grading.sandbox import available

ROOT = Path(__file__).resolve().parents[1]
MISTAKES_DIR = Path(__file__).parent / "lab_mistakes"
# In the sandbox the grader uses by default (bubblewrap) where it runs here: every lab must grade confined.
LIMITS = Limits(cell_timeout=300, submission_timeout=900, memory_mb=None, sandbox=available()[0])


def mistakes(stem: str) -> list:
    """The plausible wrong submissions kept in tests/lab_mistakes/<lab>.py (``MISTAKES``)."""
    spec = importlib.util.spec_from_file_location(f"lab_mistakes_{stem}", MISTAKES_DIR / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MISTAKES


def answered(solution, overrides=None):
    """The student lab with every answer taken from the solution, except ``overrides``."""
    lab = build.make_lab(solution)
    answers = {C.grade_id(c): c.source for c in solution.cells if C.is_solution(c)}
    answers.update(overrides or {})
    for cell in lab.cells:
        if C.is_solution(cell):
            cell.source = answers[C.grade_id(cell)]
    return lab


@functools.lru_cache(maxsize=None)
def reference(stem: str):
    """The lab's solution and its reference run (raises ReferenceError unless it scores full marks here)."""
    solution = build.read_notebook(ROOT / "solutions" / f"{stem}.py")
    return solution, autograde.run_reference(solution, LIMITS)


def grade(stem: str, nb, tmp_path: Path, name: str):
    solution, ref = reference(stem)
    path = tmp_path / f"{name}.ipynb"
    path.write_text(build.notebook_text(nb))
    return autograde.grade_notebook(solution, path, ref, student=name, limits=LIMITS)


class LabSelfCheck:
    lab = ""

    def test_solution_scores_full_marks(self, tmp_path):
        solution, _ = reference(self.lab)
        result = grade(self.lab, answered(solution), tmp_path, "solution")
        assert result.status == "graded"
        failing = [(c.grade_id, c.status, c.message) for c in result.cells if c.status != "passed"]
        assert failing == [] and result.total == result.max_points > 0

    def test_blank_lab_scores_zero_and_says_not_attempted(self, tmp_path):
        solution, _ = reference(self.lab)
        result = grade(self.lab, build.make_lab(solution), tmp_path, "blank")
        assert result.total == 0
        assert {c.status for c in result.cells} == {"not attempted"}

    def test_plausible_mistakes_score_exactly_in_between(self, tmp_path):
        solution, _ = reference(self.lab)
        cases = mistakes(self.lab)
        assert len(cases) >= 2, f"add at least two plausible wrong submissions to tests/lab_mistakes/{self.lab}.py"
        for i, (overrides, expected) in enumerate(cases):
            result = grade(self.lab, answered(solution, overrides), tmp_path, f"mistake{i}")
            assert 0 < expected < result.max_points
            assert abs(result.total - expected) < 1e-5, (sorted(overrides), result.total, expected,
                                                          [(c.grade_id, c.status, c.message) for c in result.cells])


def test_every_lab_has_a_self_check_class():
    covered = {cls.lab for cls in LabSelfCheck.__subclasses__()}
    assert covered == {p.stem for p in (ROOT / "solutions").glob("lab*.py")}


class TestLab01(LabSelfCheck):
    lab = "lab01_training_loop"


class TestLab04(LabSelfCheck):
    lab = "lab04_optimizers"


class TestLab02(LabSelfCheck):
    lab = "lab02_init_normalization"


class TestLab03(LabSelfCheck):
    lab = "lab03_cnn"


class TestLab06(LabSelfCheck):
    lab = "lab06_transformers"


class TestLab05(LabSelfCheck):
    lab = "lab05_regularization_data"


class TestLab07(LabSelfCheck):
    lab = "lab07_mixed_precision"


class TestLab08(LabSelfCheck):
    lab = "lab08_memory"


class TestLab09(LabSelfCheck):
    lab = "lab09_distributed"


class TestLab10(LabSelfCheck):
    lab = "lab10_profiling_compile"


class TestLab11(LabSelfCheck):
    lab = "lab11_lora_transfer"


class TestLab12(LabSelfCheck):
    lab = "lab12_compression_export"


class TestLab13(LabSelfCheck):
    lab = "lab13_bug_hunt"


class TestLab14(LabSelfCheck):
    lab = "lab14_sequence_models"


class TestLab15(LabSelfCheck):
    lab = "lab15_llm_from_scratch"


class TestLab16(LabSelfCheck):
    lab = "lab16_generative"


class TestLab18(LabSelfCheck):
    lab = "lab18_graphs"


class TestLab19(LabSelfCheck):
    lab = "lab19_experiments"


class TestLab21(LabSelfCheck):
    lab = "lab21_model_parallel"


class TestLab17(LabSelfCheck):
    lab = "lab17_vit_ssl"


class TestLab20(LabSelfCheck):
    lab = "lab20_serving"
