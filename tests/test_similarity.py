"""The similarity report: normalisation (names, layout, comments, statement order do not matter; literals do),
the starter code and common passages removed, exact pair order for a four-student class on lab 01, the token
fallback, and the HTML page. Pure functions and notebook files only: no kernel starts."""

import html
import re
from pathlib import Path

import pytest

from dlcourse.cli import main
from dlcourse.grading import build
from dlcourse.grading import cells as C
from dlcourse.grading import similarity as S

ROOT = Path(__file__).resolve().parents[1]
LAB01 = ROOT / "solutions" / "lab01_training_loop.py"
SOURCE = build.read_notebook(LAB01)
KEEP = S.lab_names(SOURCE)
QUESTIONS = S.questions_of(SOURCE)


def _reference() -> dict[str, str]:
    """ada: the solution's answers, markers removed."""
    return {C.grade_id(c): "\n".join(line for line in c.source.split("\n")
                                     if line.strip() not in (C.BEGIN_SOLUTION, C.END_SOLUTION))
            for c in SOURCE.cells if C.is_solution(c)}


# cy: ada's answers with every name of her own renamed, reformatted, comments and docstrings dropped, independent
# statements swapped (train loop), one expression inlined differently (mlp) and one line added (softmax).
CY = {
    "softmax-answer": '''def softmax(logits: torch.Tensor) -> torch.Tensor:
    """softmax"""
    assert logits.dim() == 2
    z = logits - logits.max(dim = 1, keepdim = True).values
    e = z.exp()
    return e / e.sum(dim=1,
                     keepdim=True)
''',
    "cross-entropy-answer": '''def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    s = logits - logits.max(dim=1, keepdim=True).values
    lp = s - s.exp().sum(dim=1, keepdim=True).log()
    return -lp[torch.arange(len(y)), y].mean()
''',
    "sgd-answer": '''def sgd_step(params, lr: float) -> None:
    with torch.no_grad():
        for w in params:
            if w.grad is None:
                continue
            w -= lr * w.grad
            w.grad = None
''',
    "accuracy-answer": '''def accuracy(y_hat: torch.Tensor, y: torch.Tensor) -> float:
    guess = y_hat.argmax(dim=1)
    return (guess == y).float().mean().item()
''',
    "train-loop-answer": '''def train_loop(model: nn.Module, train_loader, num_epochs: int, lr: float) -> nn.Module:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for ep in range(num_epochs):
        for xb, yb in train_loader:
            out = model(xb)
            l = F.cross_entropy(out, yb)
            opt.zero_grad()
            l.backward()
            opt.step()
    return model
''',
    "mlp-answer": '''def make_mlp(in_features: int, hidden: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
''',
    "initial-loss-answer": '''def initial_loss(num_classes: int) -> float:
    return math.log(num_classes)
''',
}

# bo: correct answers written independently (different functions, loops and structure).
BO = {
    "softmax-answer": '''def softmax(logits: torch.Tensor) -> torch.Tensor:
    # subtract the row maximum for stability
    m, _ = torch.max(logits, 1, keepdim=True)
    numer = torch.exp(logits - m)
    denom = torch.sum(numer, 1, keepdim=True)
    return numer / denom
''',
    "cross-entropy-answer": '''def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    lse = torch.logsumexp(logits, dim=1)
    picked = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    return (lse - picked).mean()
''',
    "sgd-answer": '''def sgd_step(params, lr: float) -> None:
    for param in params:
        if param.grad is not None:
            param.data.add_(param.grad, alpha=-lr)
            param.grad.zero_()
''',
    "accuracy-answer": '''def accuracy(y_hat: torch.Tensor, y: torch.Tensor) -> float:
    correct = 0
    for row, label in zip(y_hat, y):
        if int(torch.argmax(row)) == int(label):
            correct += 1
    return correct / len(y)
''',
    "train-loop-answer": '''def train_loop(model: nn.Module, train_loader, num_epochs: int, lr: float) -> nn.Module:
    loss_fn = nn.CrossEntropyLoss()
    sgd = torch.optim.SGD(params=model.parameters(), lr=lr)
    epoch = 0
    while epoch < num_epochs:
        for batch in train_loader:
            inputs, targets = batch
            sgd.zero_grad()
            loss_fn(model(inputs), targets).backward()
            sgd.step()
        epoch += 1
    return model
''',
    "mlp-answer": '''def make_mlp(in_features: int, hidden: int, num_classes: int) -> nn.Sequential:
    layers = [nn.Linear(in_features, hidden)]
    layers.append(nn.ReLU())
    layers.append(nn.Linear(hidden, num_classes))
    return nn.Sequential(*layers)
''',
    "initial-loss-answer": '''def initial_loss(num_classes: int) -> float:
    return -math.log(1.0 / num_classes)
''',
}


def _class() -> dict[str, dict[str, str]]:
    blank = {q.grade_id: q.starter for q in QUESTIONS}  # dee hands in the lab untouched
    return {"ada": _reference(), "bo": BO, "cy": CY, "dee": blank}


def test_four_students_exact_order_copy_high_independent_low_blank_absent():
    pairs, prints = S.compare(_class(), QUESTIONS, KEEP)
    # dee shares nothing; cy's extra statement makes her a little less like bo than ada is
    assert [(p.a, p.b, round(p.score, 2)) for p in pairs] == [("ada", "cy", 0.97), ("ada", "bo", 0.11),
                                                              ("bo", "cy", 0.11)]
    copy, *independent = pairs
    assert independent[0].score > independent[1].score
    assert copy.per_question["train-loop-answer"] == 1.0  # renamed, reordered, comments gone: the same
    assert copy.per_question["softmax-answer"] < 1.0  # one added statement shows
    assert max(s for p in independent for s in p.per_question.values()) < 0.35
    assert all(not found for found in prints["dee"].values())  # the starter code alone is nothing


def test_normalisation_ignores_names_layout_comments_docstrings_and_order_but_not_literals():
    base = "def f(a, b):\n    '''Doc.'''\n    total = a * 2  # twice\n    other = b + 1\n    return total - other\n"
    disguised = ("def g(p,q):\n    rest = q+1\n\n    t = (p *\n         2)\n    return t - rest\n")
    assert S.fingerprints(base) == S.fingerprints(disguised)
    assert S.fingerprints(base) != S.fingerprints(base.replace("a * 2", "a * 3"))
    assert S.fingerprints(base) != S.fingerprints(base.replace("a * 2", "a.double()"))  # attributes are API
    keep = S.BUILTIN_NAMES | {"torch"}
    assert S.fingerprints("y = torch.ones(3)", keep=keep) != S.fingerprints("y = numpy.ones(3)", keep=keep)
    units = S.units_of(base)  # one unit per statement, each knowing its lines
    assert sorted(u.lines for u in units) == [(1, 1), (3, 3), (4, 4), (5, 5)]


def test_unparseable_answers_fall_back_to_tokens_and_markdown_to_words():
    magic = "%timeit x\ntotal = compute(a, b)  # mine\nprint(total)\n"
    renamed = "%timeit x\nsomething = compute(c, d)\nprint(something)\n"
    assert S.units_of(magic)[1] == S.Unit(("_", "=", "_", "(", "_", ",", "_", ")"), (2, 2))
    assert S.fingerprints(magic) == S.fingerprints(renamed)
    prose = "Adam keeps two moving averages.\n\nSo it needs **twice** the memory of SGD."
    assert S.fingerprints(prose, "markdown") == S.fingerprints("adam KEEPS two moving averages\n\n"
                                                               "so it needs twice the memory of sgd", "markdown")
    assert [u.lines for u in S.units_of(prose, "markdown")] == [(1, 1), (3, 3)]


def test_common_passages_and_starter_are_ignored():
    questions = [S.Question("q", "code", "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()")]
    usual = "def f(x):\n    return x * 2\n"
    rare = "def f(x):\n    y = x + x\n    return y\n"
    answers = {"a": {"q": usual}, "b": {"q": usual}, "c": {"q": usual}, "d": {"q": rare}, "e": {"q": rare}}
    pairs, _ = S.compare(answers, questions, common=10)
    assert [(p.a, p.b, p.score) for p in pairs][:2] == [("a", "b", 1.0), ("a", "c", 1.0)]
    pairs, prints = S.compare(answers, questions, common=2)  # the usual answer (3 students) says nothing
    assert [(p.a, p.b, p.score) for p in pairs] == [("d", "e", 1.0)]
    assert prints["a"] == {"q": set()}
    assert S.default_common(30) == 10 and S.default_common(200) == 20


def _submit(folder: Path, student: str, answers: dict[str, str]) -> None:
    lab = build.make_lab(SOURCE)
    for cell in lab.cells:
        if C.grade_id(cell) in answers:
            cell.source = answers[C.grade_id(cell)]
    (folder / student).mkdir(parents=True)
    (folder / student / "lab01_training_loop.ipynb").write_text(build.notebook_text(lab))


def test_report_page_lists_pairs_side_by_side_escaped(tmp_path):
    students = _class()
    students["cy"]["accuracy-answer"] = students["cy"]["accuracy-answer"].replace(
        "guess = y_hat", "tag = '</pre><script>alert(1)</script>'\n    guess = y_hat")
    for name, answers in students.items():
        if name != "dee":
            _submit(tmp_path / "subs", name, answers)
    (tmp_path / "subs" / "dee").mkdir()
    _submit(tmp_path / "subs", "eve", {})  # the blank lab
    out = tmp_path / "report" / "similarity.html"
    pairs = S.similarity_report(LAB01, tmp_path / "subs", out, threshold=0.5)
    assert [(p.a, p.b) for p in pairs] == [("ada", "cy"), ("ada", "bo"), ("bo", "cy")]
    page = out.read_text()
    assert "A place to look, not a verdict." in page
    assert "<script>" not in page and html.escape("'</pre><script>alert(1)</script>'") in page
    assert re.findall(r"<h2 id='pair-\d+'>([^<]*)</h2>", page) == ["1. ada — cy: 0.96"]  # only pairs >= 0.5
    assert "Nothing of their own to compare (blank or only common code): eve" in page
    assert "Not compared: dee (missing notebook: no .ipynb submitted)" in page
    assert "<mark>    lp = s - s.exp().sum(dim=1, keepdim=True).log()</mark>" in page  # shared lines marked
    assert S.similarity_report(LAB01, tmp_path / "subs", out, threshold=0.0) == pairs
    assert out.read_text().count("<h2 id='pair-") == 3


def test_bad_threshold_or_common_is_refused(tmp_path):
    with pytest.raises(ValueError, match="between 0 and 1"):
        S.similarity_report(LAB01, tmp_path, tmp_path / "r.html", threshold=50)
    with pytest.raises(ValueError, match="--common 0"):
        S.similarity_report(LAB01, tmp_path, tmp_path / "r.html", common=0)
    assert not (tmp_path / "r.html").exists()


def test_cli_writes_the_report_and_lists_pairs(tmp_path, capsys):
    students = _class()
    for name in ("ada", "bo", "cy"):
        _submit(tmp_path / "subs", name, students[name])
    out = tmp_path / "similarity.html"
    assert main(["similarity", str(LAB01), str(tmp_path / "subs"), "--out", str(out), "--threshold", "0.1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[:3] == ["  0.96  ada - cy", "  0.11  ada - bo", "  0.11  bo - cy"]
    assert printed[3].startswith(f"3 pair(s) at or above 0.1 (of 3 sharing anything): {out}. A place to look")
    assert "<h2 id='pair-1'>1. ada — cy: 0.96</h2>" in out.read_text()
    assert main(["similarity", str(LAB01), str(tmp_path / "subs"), "--out", str(out), "--threshold", "5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert main(["similarity", str(LAB01), str(tmp_path / "none"), "--out", str(tmp_path / "x.html")]) == 2
    assert "do not exist" in capsys.readouterr().err and not (tmp_path / "x.html").exists()
