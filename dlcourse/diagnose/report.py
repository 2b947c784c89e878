"""What the training doctor returns: a :class:`Report` of :class:`Finding` s, each with a severity, the numbers
behind it, a fix and (where a plot helps) a figure; printed as text, shown as an HTML table in a notebook, or turned
into plain json-serialisable data. Also the names of the checks (:data:`CHECKS`) and the severities.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field

import torch
from matplotlib.figure import Figure

#: The checks, in the order :func:`~dlcourse.diagnose.doctor` runs them (the registry in
#: :mod:`dlcourse.diagnose.runner` maps each name to its function).
CHECKS = ("labels", "inputs", "leakage", "shuffling", "initial_loss", "overfit_batch", "learnability",
          "gradient_flow", "activations", "non_finite", "lr_range", "eval_mode")
#: What a finding can say, from harmless to serious.
SEVERITIES = ("ok", "info", "warning", "error")


@dataclass
class Finding:
    """One result of one check: ``severity`` is "ok", "info", "warning" or "error"; ``evidence`` holds the numbers
    behind ``message``; ``fix`` says what to do (empty when all is well); ``figure`` shows it where a plot helps."""

    check: str
    severity: str
    message: str
    evidence: dict = field(default_factory=dict)
    fix: str = ""
    figure: Figure | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    @property
    def flagged(self) -> bool:
        return self.severity in ("warning", "error")

    def to_dict(self) -> dict:
        return {"check": self.check, "severity": self.severity, "message": self.message,
                "evidence": plain(self.evidence), "fix": self.fix}


def plain(value):
    """``value`` as json-serialisable plain data (tensors and numpy numbers become Python numbers and lists)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return plain(value.tolist())
    if hasattr(value, "item") and hasattr(value, "dtype"):   # numpy scalars
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)                                    # json has no nan/inf
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


MARK = {"ok": "ok", "info": "info", "warning": "WARNING", "error": "ERROR"}
_COLOUR = {"ok": "#2e7d32", "info": "#1565c0", "warning": "#ef6c00", "error": "#c62828"}


@dataclass
class Report:
    """What :func:`doctor` found: ``findings`` in the order the checks ran; ``seconds`` per check."""

    findings: list[Finding] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def flagged(self) -> list[Finding]:
        """The findings with severity "warning" or "error"."""
        return [f for f in self.findings if f.flagged]

    def flags(self, name: str) -> bool:
        """True if check ``name`` produced a warning or an error."""
        if name not in CHECKS:
            raise ValueError(f"unknown check {name!r}; the checks are {', '.join(CHECKS)}")
        return any(f.check == name for f in self.flagged)

    def get(self, name: str) -> list[Finding]:
        """All findings of check ``name``."""
        return [f for f in self.findings if f.check == name]

    def to_dict(self) -> list[dict]:
        """Plain, json-serialisable data: one dict per finding."""
        return [f.to_dict() for f in self.findings]

    def __str__(self) -> str:
        if not self.findings:
            return "doctor: no checks ran"
        width = max(len(f.check) for f in self.findings)
        errors = sum(f.severity == "error" for f in self.findings)
        lines = [f"doctor: {len(self.findings)} findings, {len(self.flagged)} flagged "
                 f"({errors} error{'s' * (errors != 1)})"]
        for f in self.findings:
            lines.append(f"{f.check:<{width}}  {MARK[f.severity]:<7}  {f.message}")
            if f.fix:
                lines.append(f"{'':<{width}}  {'':<7}  fix: {f.fix}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Report({len(self.findings)} findings, flagged: "
                f"{sorted({f.check for f in self.flagged}) or 'none'})")

    def _repr_html_(self) -> str:
        import html

        rows = []
        for f in self.findings:
            evidence = ", ".join(f"{k}={_short(v)}" for k, v in f.evidence.items())
            figure = ""
            if f.figure is not None:
                buffer = io.BytesIO()
                f.figure.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
                figure = (f'<br><img style="max-width:480px" src="data:image/png;base64,'
                          f'{base64.b64encode(buffer.getvalue()).decode()}">')
            rows.append(
                f'<tr><td style="text-align:left">{html.escape(f.check)}</td>'
                f'<td style="text-align:left;color:{_COLOUR[f.severity]};font-weight:bold">{MARK[f.severity]}</td>'
                f'<td style="text-align:left">{html.escape(f.message)}'
                f'<br><small style="color:#555">{html.escape(evidence)}</small>{figure}</td>'
                f'<td style="text-align:left">{html.escape(f.fix)}</td></tr>')
        head = ('<tr><th style="text-align:left">check</th><th style="text-align:left">severity</th>'
                '<th style="text-align:left">finding (evidence)</th><th style="text-align:left">fix</th></tr>')
        return f"<table>{head}{''.join(rows)}</table>"


def _short(value) -> str:
    """A compact text form of an evidence value for the HTML table."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return "[" + ", ".join(_short(v) for v in value[:8]) + f", ... ({len(value)})]"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in list(value.items())[:8]) + "}"
    return str(value)
