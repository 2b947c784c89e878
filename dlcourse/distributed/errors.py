"""Errors of distributed runs: :class:`LaunchError`, and how a worker's traceback travels back."""

from __future__ import annotations

import re
from typing import Sequence



class LaunchError(RuntimeError):
    """A distributed run failed: a worker raised or crashed, or the run timed out.

    ``stdout``/``stderr``: what the run printed; ``failed_rank``: the first rank that failed (None if unknown);
    ``exception``: the name of the exception that rank raised (e.g. ``"ValueError"``), if it raised one.
    """

    def __init__(self, message: str, *, stdout: str = "", stderr: str = "", returncode: int | None = None,
                 failed_rank: int | None = None, exception: str | None = None, timed_out: bool = False) -> None:
        super().__init__(message)
        self.stdout, self.stderr, self.returncode = stdout, stderr, returncode
        self.failed_rank, self.exception, self.timed_out = failed_rank, exception, timed_out


class RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the ``__cause__`` of the exception re-raised here."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


def exception_name(lines: Sequence[str]) -> str | None:
    """The exception class named by the last ``Name: message`` (or bare ``Name``) line of a traceback."""
    for line in reversed(lines):
        match = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning))\b", line)
        if match:
            return match.group(1).rsplit(".", 1)[-1]
    return None
