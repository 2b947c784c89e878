"""Similarity of the students' answers: which pairs to look at more closely for copying (never a verdict).

Each answer cell is reduced to fingerprints that survive the usual disguises. Code is parsed to a syntax tree:
every variable, argument and function name the student chose becomes ``_`` (names the lab itself imports or
defines, builtins, attribute and keyword names stay; literals stay), comments and docstrings are gone, and each
statement is its own unit, so renaming, reformatting and reordering independent statements change nothing. A cell
that does not parse falls back to its tokens, line by line. Markdown answers are lower-cased words. A fingerprint is
a run of ``K`` tokens inside one unit (a shorter unit is one fingerprint).

The fingerprints of the blank lab's cell (the starter code) are removed from every answer, so untouched blanks
are empty and never similar; so are passages more than ``common`` students share (a short exercise's usual answer
says nothing about copying: MOSS ignores such passages the same way). Two students' similarity is the Jaccard
index of their fingerprint sets over all answer cells; the report also gives it per question. Pairs are found
through an inverted index (fingerprint → students), so pairs that share nothing cost nothing.
"""

from __future__ import annotations

import ast
import builtins
import html
import keyword
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from nbformat import NotebookNode

from . import cells as C
from .answers import read_answers
from .build import read_notebook

K = 4  # tokens per fingerprint
BUILTIN_NAMES = frozenset(dir(builtins))
_TOKEN = re.compile(r"[A-Za-z_]\w*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\S")
_SKIP_FIELDS = {"ctx", "type_comment", "kind"}


@dataclass(frozen=True)
class Unit:
    """One statement (or line) of an answer: its normalised tokens and the source lines it came from."""

    tokens: tuple[str, ...]
    lines: tuple[int, int]  # first and last line, 1-based

    def shingles(self, k: int = K) -> set[int]:
        t = self.tokens
        if not t:
            return set()
        return {hash(t)} if len(t) <= k else {hash(t[i:i + k]) for i in range(len(t) - k + 1)}


# ----------------------------------------------------------------------------------------------- normalising
class _Serialiser:
    """Tokens of a syntax tree, one unit per statement, with user-chosen names replaced by ``_``."""

    def __init__(self, keep: frozenset[str]) -> None:
        self.keep = keep
        self.units: list[Unit] = []

    def statements(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value,
                                                                                                  str):
                continue  # a docstring or a bare string: prose, not code
            tokens: list[str] = []
            self.node(stmt, tokens)
            header_end = stmt.lineno if any(isinstance(v, list) and v and isinstance(v[0], ast.stmt)
                                            for _, v in ast.iter_fields(stmt)) else stmt.end_lineno or stmt.lineno
            self.units.append(Unit(tuple(tokens), (stmt.lineno, header_end)))

    def node(self, node: ast.AST, tokens: list[str]) -> None:
        if isinstance(node, ast.Name):
            tokens.append(node.id if node.id in self.keep else "_")
            return
        if isinstance(node, ast.Constant):
            tokens.append(repr(node.value)[:80])
            return
        if isinstance(node, ast.arg):
            tokens.append("_")
            return
        if isinstance(node, ast.alias):  # import torch as t: the module is kept, the alias is the student's
            tokens.append(node.name)
            return
        tokens.append(type(node).__name__)
        for name, value in ast.iter_fields(node):
            if name in _SKIP_FIELDS:
                continue
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                tokens.append("{")
                self.statements(value)  # a body is units of its own: reordering inside it is harmless too
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        self.node(item, tokens)
                    elif isinstance(item, str):  # global/nonlocal names
                        tokens.append(item if item in self.keep else "_")
            elif isinstance(value, ast.AST):
                self.node(value, tokens)
            elif isinstance(value, str):
                # attribute, keyword and import names are the API being used; other names are the student's
                # unless the lab defines them (the function the starter code asks for)
                tokens.append(value if name in ("attr", "arg", "module") or value in self.keep else "_")


def _token_units(text: str, keep: frozenset[str]) -> list[Unit]:
    """The fallback for code that does not parse: tokens per line, comments dropped, identifiers as in the tree."""
    units = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.split("#", 1)[0]
        tokens = tuple(t if not (t[0].isalpha() or t[0] == "_") or keyword.iskeyword(t) or t in keep else "_"
                       for t in _TOKEN.findall(line))
        if tokens:
            units.append(Unit(tokens, (number, number)))
    return units


def _word_units(text: str) -> list[Unit]:
    """Prose: lower-cased words, one unit per paragraph."""
    units, start, words = [], 1, []
    for number, line in enumerate(text.split("\n") + [""], start=1):
        found = re.findall(r"\w+", line.lower())
        if found:
            start = start if words else number
            words += found
        elif words:
            units.append(Unit(tuple(words), (start, number - 1)))
            words = []
    return units


def units_of(text: str, cell_type: str = "code", keep: frozenset[str] = BUILTIN_NAMES) -> list[Unit]:
    """The normalised units of one answer (see the module docstring)."""
    if cell_type == "markdown":
        return _word_units(text)
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):  # IPython magics, a syntax error, a null byte
        return _token_units(text, keep)
    serialiser = _Serialiser(keep)
    serialiser.statements(tree.body)
    return serialiser.units


def fingerprints(text: str, cell_type: str = "code", keep: frozenset[str] = BUILTIN_NAMES) -> set[int]:
    return {s for unit in units_of(text, cell_type, keep) for s in unit.shingles()}


def lab_names(source: NotebookNode) -> frozenset[str]:
    """Names that are not the student's to choose: builtins, and what the lab's own cells import or define
    (modules, functions, classes, and the functions the starter code asks for)."""
    names = set(BUILTIN_NAMES)
    for cell in source.cells:
        if cell.cell_type != "code" or "solution" in C.tags(cell):
            continue
        text = C.strip_solution(cell.source) if C.is_solution(cell) else cell.source
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
    return frozenset(names)


# ------------------------------------------------------------------------------------------------- comparing
@dataclass
class Question:
    grade_id: str
    cell_type: str
    starter: str


@dataclass
class Pair:
    """Two students and how much of their (non-starter, non-common) answers they share."""

    a: str
    b: str
    score: float
    per_question: dict[str, float] = field(default_factory=dict)


def questions_of(source: NotebookNode) -> list[Question]:
    """The answer cells a student fills in, with the starter code the blank lab gives for each."""
    return [Question(C.grade_id(c), c.cell_type, C.strip_solution(c.source, c.cell_type)) for c in source.cells
            if C.is_solution(c) and C.grade_id(c) and "solution" not in C.tags(c)]


def compare(answers: dict[str, dict[str, str]], questions: list[Question], keep: frozenset[str] = BUILTIN_NAMES, *,
            common: int | None = None) -> tuple[list[Pair], dict[str, dict[str, set[int]]]]:
    """Every pair of students that shares something, most similar first (ties by name), and each student's
    fingerprints per question after removing the starter code and passages shared by more than ``common``
    students (default: ``default_common(len(answers))``).

    ``answers``: student → grade_id → the answer's source.
    """
    common = default_common(len(answers)) if common is None else common
    starters = {q.grade_id: fingerprints(q.starter, q.cell_type, keep) for q in questions}
    prints: dict[str, dict[str, set[int]]] = {}
    postings: dict[tuple[str, int], list[str]] = defaultdict(list)
    for student in sorted(answers):
        prints[student] = {}
        for q in questions:
            text = answers[student].get(q.grade_id)
            found = fingerprints(text, q.cell_type, keep) - starters[q.grade_id] if text else set()
            prints[student][q.grade_id] = found
            for s in found:
                postings[(q.grade_id, s)].append(student)
    shared: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (gid, s), students in postings.items():
        if len(students) > common:
            for student in students:
                prints[student][gid].discard(s)
            continue
        for i, a in enumerate(students):
            for b in students[i + 1:]:
                shared[(a, b)][gid] += 1
    sizes = {st: sum(len(p) for p in per.values()) for st, per in prints.items()}
    pairs = []
    for (a, b), per in shared.items():
        both = sum(per.values())
        per_question = {gid: n / (len(prints[a][gid]) + len(prints[b][gid]) - n) for gid, n in per.items()}
        pairs.append(Pair(a, b, both / (sizes[a] + sizes[b] - both), dict(sorted(
            per_question.items(), key=lambda kv: -kv[1]))))
    pairs.sort(key=lambda p: (-p.score, p.a, p.b))
    return pairs, prints


def default_common(students: int) -> int:
    """A passage found in more answers than this is common knowledge, not evidence: max(10, 10 % of the class)."""
    return max(10, math.ceil(students / 10))


# ---------------------------------------------------------------------------------------------------- report
def _lines(text: str, units: list[Unit], hits: set[int]) -> str:
    """The answer as escaped HTML, lines from units sharing a fingerprint with the other student marked."""
    marked = set()
    for unit in units:
        if unit.shingles() & hits:
            marked.update(range(unit.lines[0], unit.lines[1] + 1))
    return "\n".join(f"<mark>{html.escape(line)}</mark>" if n in marked else html.escape(line)
                     for n, line in enumerate(text.split("\n"), start=1))


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 80rem; margin: 2rem auto; color: #222; }
table { border-collapse: collapse; } td, th { border-bottom: 1px solid #ddd; padding: .3rem .6rem; text-align: left; }
.side { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
pre { background: #f6f6f6; padding: .5rem; overflow-x: auto; white-space: pre-wrap; } mark { background: #ffe08a; }
.note { background: #eef4ff; padding: .6rem 1rem; border-left: 4px solid #4a78c2; }
"""


def render(lab: str, pairs: list[Pair], answers: dict[str, dict[str, str]], questions: list[Question],
           prints: dict[str, dict[str, set[int]]], threshold: float, common: int, skipped: dict[str, str],
           keep: frozenset[str] = BUILTIN_NAMES) -> str:
    """The report page: the pairs at or above ``threshold``, each question's answers side by side (escaped)."""
    e = html.escape
    listed = [p for p in pairs if p.score >= threshold]
    kinds = {q.grade_id: q.cell_type for q in questions}
    blank = sorted(st for st, per in prints.items() if not any(per.values()))
    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(lab)}: similar answers</title>"
            f"<style>{STYLE}</style></head><body><h1>{e(lab)}: similar answers</h1>"
            "<p class='note'><b>A place to look, not a verdict.</b> A high score says two students' answers share "
            "much of their structure once names, layout, comments and statement order are set aside. Short "
            "exercises, a hint everyone followed or working together as allowed all raise it. Read the answers "
            "before concluding anything, and ask the students.</p>"
            f"<p>{len(prints)} students compared on {len(questions)} answer cell(s); starter code removed; passages "
            f"shared by more than {common} students ignored; {len(listed)} pair(s) at or above {threshold:g} "
            f"(of {len(pairs)} sharing anything). Marked lines share normalised code with the other answer.</p>")
    if blank:
        head += f"<p>Nothing of their own to compare (blank or only common code): {e(', '.join(blank))}</p>"
    if skipped:
        head += "<p>Not compared: " + e("; ".join(f"{s} ({why})" for s, why in sorted(skipped.items()))) + "</p>"
    rows = "".join(f"<tr><td>{i}</td><td><a href='#pair-{i}'>{e(p.a)} — {e(p.b)}</a></td><td>{p.score:.2f}</td>"
                   f"<td>{e(', '.join(f'{g} {s:.2f}' for g, s in p.per_question.items()))}</td></tr>"
                   for i, p in enumerate(listed, start=1))
    body = ("<table><tr><th>#</th><th>pair</th><th>similarity</th><th>per question</th></tr>" + rows + "</table>"
            if listed else "<p>No pair reaches the threshold.</p>")
    for i, p in enumerate(listed, start=1):
        body += f"<h2 id='pair-{i}'>{i}. {e(p.a)} — {e(p.b)}: {p.score:.2f}</h2>"
        for gid, score in p.per_question.items():
            hits = prints[p.a][gid] & prints[p.b][gid]
            sides = ""
            for student in (p.a, p.b):
                text = answers[student].get(gid, "")
                sides += (f"<div><b>{e(student)}</b><pre>"
                          f"{_lines(text, units_of(text, kinds[gid], keep), hits)}</pre></div>")
            body += f"<h3>{e(gid)}: {score:.2f}</h3><div class='side'>{sides}</div>"
    return head + body + "</body></html>\n"


def similarity_report(lab: Path | str, submissions: Path | str, out: Path | str, *, threshold: float = 0.5,
                      common: int | None = None, pattern: str | None = None) -> list[Pair]:
    """Compare a class's answers to ``lab`` and write the HTML report to ``out``; return every pair that shares
    something, most similar first."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"--threshold {threshold:g}: a similarity is between 0 and 1")
    if common is not None and common < 1:
        raise ValueError(f"--common {common}: give the number of students (1 or more) a passage may appear in")
    lab = Path(lab)
    source = read_notebook(lab)
    questions = questions_of(source)
    if not questions:
        raise ValueError(f"{lab} has no answer cells (\"solution\": true) to compare")
    keep = lab_names(source)
    answers, skipped = read_answers(source, submissions, lab.stem, [q.grade_id for q in questions], pattern)
    common = default_common(len(answers)) if common is None else common
    pairs, prints = compare(answers, questions, keep, common=common)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render(lab.stem, pairs, answers, questions, prints, threshold, common, skipped, keep),
                   encoding="utf-8")
    tmp.replace(out)
    return pairs
