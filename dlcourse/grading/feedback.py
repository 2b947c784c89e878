"""Per-student feedback as a small self-contained HTML page: per exercise the verdict, the points and why.

It is built only from verdicts, check names and messages, never from cell sources or tracebacks, so hidden tests
cannot leak through it.
"""

from __future__ import annotations

import html

from .autograde import Result
from .late import Late

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
table { border-collapse: collapse; width: 100%; } td, th { border-bottom: 1px solid #ddd; padding: .4rem; text-align: left; }
.passed { color: #1a7f37; } .failed, .error, .timeout { color: #c62828; } .not-attempted, .not-run { color: #8a6d00; }
ul { margin: .2rem 0; padding-left: 1.2rem; } small { color: #666; }
"""


def _css(status: str) -> str:
    return status.replace(" ", "-")


def render(result: Result, lab: str, late: Late | None = None) -> str:
    """The feedback page for one student; with ``late``, how late the submission was and what was deducted."""
    e = html.escape
    rows = []
    for cell in result.cells:
        details = "".join(
            f'<li class="{"passed" if c.passed else "failed"}">{"✓" if c.passed else "✗"} {e(c.name)}'
            + (f" — {e(c.message)}" if c.message and not c.passed else "") + "</li>" for c in cell.checks)
        note = f"<div>{e(cell.message)}</div>" if cell.message and not cell.checks else ""
        rows.append(f'<tr><td>{e(cell.grade_id)}</td><td class="{_css(cell.status)}">{e(cell.status)}</td>'
                    f"<td>{cell.points:g} / {cell.max_points:g}</td><td>{note}"
                    f"{'<ul>' + details + '</ul>' if details else ''}</td></tr>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(lab)}: {e(result.student)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{e(lab)}</h1>"
            f"<p><b>{e(result.student)}</b>: {result.total:g} / {result.max_points:g} points "
            f"<small>({e(result.status)})</small></p>"
            + (f"<p class='late'>{e(late.describe())} Final score: <b>{late.final:g} / {result.max_points:g}</b>"
               "</p>" if late is not None else "")
            + "<table><tr><th>exercise</th><th>verdict</th><th>points</th><th>details</th></tr>"
            + "".join(rows) + "</table></body></html>\n")
