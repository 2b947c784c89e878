"""Deadlines and late penalties: when a submission came in, how many days late that is, and what it costs.

The rule (``LateRule``): a deadline (a time with a UTC offset; one given without an offset is read in this
machine's time zone and stored with that offset), a grace period, a penalty in percent per started day late and a
cap on the total penalty in percent. A submission up to ``grace`` after the deadline is on time. One later than that
is late by ``ceil(seconds after the deadline / 86400)`` days, counted from the deadline itself (so with a 15 minute
grace, 15 min 1 s late is 1 day late; exactly 24 h late is 1 day; 24 h 1 s is 2 days). The penalty is
``min(days * per_day, cap)`` percent of the points the student earned (never of the maximum: a late student keeps a
share of what they earned, and no score goes below 0).

A submission time without an offset (a zip entry without an extended timestamp) is read in the deadline's zone.
Everything here is pure: the raw score is never changed, only the gradebook's final column is computed from it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

DAY = 86400.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class LateRuleError(ValueError):
    """A deadline or penalty option that cannot be used; the message says what to write instead."""


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1d`` or ``0`` (a plain number is seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not match:
        raise LateRuleError(f"--grace {text!r} is not a duration: write e.g. 90s, 15m, 2h or 1d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


def parse_time(text: str, zone_of: datetime | None = None) -> datetime:
    """An ISO 8601 time; without an offset it gets ``zone_of``'s zone, or this machine's local zone."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise LateRuleError(f"{text!r} is not a time: write ISO 8601, e.g. 2026-12-01T23:59 or "
                            "2026-12-01T23:59+01:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone_of.tzinfo) if zone_of is not None else moment.astimezone()
    return moment


def _format(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class LateRule:
    deadline: datetime           # aware
    per_day: float = 0.0         # percent of the earned points deducted per started day late
    cap: float = 100.0           # the penalty never exceeds this percent
    grace: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if self.deadline.tzinfo is None:
            raise LateRuleError("the deadline needs a time zone")
        if not 0 <= self.per_day <= 100 or not 0 <= self.cap <= 100:
            raise LateRuleError(f"--late-penalty {self.per_day:g} and --late-cap {self.cap:g} must be percentages "
                                "between 0 and 100")

    @classmethod
    def from_options(cls, deadline: str | None, per_day: float | None = None, cap: float | None = None,
                     grace: str | None = None) -> "LateRule | None":
        """The rule of the command line options; None when no deadline is given (then no other option may be)."""
        if deadline is None:
            given = [name for name, value in (("--late-penalty", per_day), ("--late-cap", cap), ("--grace", grace))
                     if value is not None]
            if given:
                raise LateRuleError(f"{', '.join(given)} without --deadline: give the deadline too, e.g. "
                                    "--deadline 2026-12-01T23:59+01:00")
            return None
        return cls(parse_time(deadline), 0.0 if per_day is None else float(per_day),
                   100.0 if cap is None else float(cap), parse_duration(grace or "0"))

    def to_dict(self) -> dict:
        return {"deadline": self.deadline.isoformat(), "per_day": self.per_day, "cap": self.cap,
                "grace_seconds": self.grace.total_seconds()}

    @classmethod
    def from_dict(cls, data: dict) -> "LateRule":
        return cls(parse_time(data["deadline"]), float(data["per_day"]), float(data["cap"]),
                   timedelta(seconds=float(data["grace_seconds"])))

    def describe(self) -> str:
        return (f"deadline {self.deadline.isoformat()}, grace {_format(self.grace.total_seconds())}, "
                f"{self.per_day:g}% per day late, at most {self.cap:g}%")


@dataclass(frozen=True)
class Late:
    """One submission against the rule: how late, and what that costs on a raw score."""

    submitted: str | None   # as recorded (ISO 8601); None: no submission time known
    seconds: float          # after the deadline (negative: before it)
    days: int               # days late as the rule counts them (0: on time or inside the grace period)
    percent: float          # penalty in percent of the earned points
    raw: float
    penalty: float          # points deducted
    final: float

    def to_dict(self) -> dict:
        return {"submitted": self.submitted, "late_days": self.days, "penalty_percent": self.percent,
                "raw_total": self.raw, "penalty": self.penalty, "final_total": self.final}

    def describe(self) -> str:
        """A sentence for the student's feedback page."""
        if self.submitted is None:
            return "No submission time is known, so no late penalty was applied."
        if self.seconds <= 0:
            return f"Submitted {self.submitted}, on time."
        how = f"Submitted {self.submitted}, {_format(round(self.seconds))} after the deadline"
        if self.days == 0:
            return how + ", inside the grace period: no penalty."
        return (how + f": {self.days} day{'s' if self.days != 1 else ''} late, {self.percent:g}% deducted "
                f"({self.raw:g} - {self.penalty:g} = {self.final:g} points).")


def days_late(rule: LateRule, submitted: datetime) -> tuple[float, int]:
    """(seconds after the deadline, days late as the rule counts them)."""
    seconds = (submitted - rule.deadline).total_seconds()
    if seconds <= rule.grace.total_seconds():
        return seconds, 0
    return seconds, math.ceil(seconds / DAY)


def assess(rule: LateRule, submitted: str | None, raw: float) -> Late:
    """The late penalty on ``raw`` points for a submission made at ``submitted`` (ISO 8601, or None)."""
    if submitted is None:
        return Late(None, 0.0, 0, 0.0, raw, 0.0, raw)
    seconds, days = days_late(rule, parse_time(submitted, rule.deadline))
    percent = min(days * rule.per_day, rule.cap)
    penalty = round(raw * percent / 100, 6)
    return Late(submitted, seconds, days, percent, raw, penalty, round(raw - penalty, 6))
