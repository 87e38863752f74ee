"""Time windows for the command line: ``--since``, ``--until``, ``--window`` and ``--now``.

All times are UTC and windows are half-open, [start, end). ``--now`` pins the present so that
results can be reproduced; without it the present is the clock. With no option at all a command
gets its own default span (usually the last 24 hours before now).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from meshlens.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day|w|week)s?\s*$", re.I)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600,
                 "d": 86400, "day": 86400, "w": 604800, "week": 604800}


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval [start, end)."""

    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"[{iso(self.start)}, {iso(self.end)})"

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def as_dict(self) -> dict[str, str]:
        return {"start": iso(self.start), "end": iso(self.end)}


def iso(moment: datetime) -> str:
    """ISO-8601 with a trailing Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``7d``, ``2w`` -> timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"cannot read duration {text!r}; use for example 15m, 1h, 7d")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])


def parse_instant(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO date or datetime (UTC when no offset is given), or a duration ago (``2h``)."""
    text = text.strip()
    if _DURATION.match(text):
        return (now or utcnow()) - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"cannot read time {text!r}; use ISO-8601 such as 2026-11-10T10:30:00Z, or 2h for two hours ago"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def resolve(
    *,
    since: str | None = None,
    until: str | None = None,
    window: str | None = None,
    now: str | datetime | None = None,
    default: timedelta = timedelta(hours=24),
) -> Window:
    """Turn the CLI time options into a Window. ``--window`` ends at ``--until`` or now."""
    present = parse_instant(now) if isinstance(now, str) else (now or utcnow())
    end = parse_instant(until, now=present) if until else present
    if since and window:
        raise ConfigError("give either --since or --window, not both")
    if since:
        start = parse_instant(since, now=present)
    else:
        start = end - (parse_duration(window) if window else default)
    if start >= end:
        raise ConfigError(f"empty window: start {iso(start)} is not before end {iso(end)}")
    return Window(start, end)
