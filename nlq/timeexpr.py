"""Time expressions of plain questions -> half-open UTC windows, relative to a given now.

A small grammar of its own, because general date parsers read "last week" and "past 3 days"
differently from how people on call mean them. The rules (all UTC, windows [start, end)):

- "right now", "currently", "at the moment"      the last 5 minutes
- "(in) the last/past N minutes|hours|days|weeks" rolling: [now - N units, now)
  ("the last hour", "past 7 days", "last 3 days", "last 24h", "past week" = 7 rolling days)
- "today", "this hour", "this week", "this month" from the start of the period to now (weeks
  start on Monday)
- "yesterday", "last week", "last month"         the previous calendar day / week / month
- "this morning|afternoon|evening", "tonight"    00-12, 12-18, 18-24 of today, capped at now
- "since 10:30", "since 9am", "after 14:00"       from that time today (yesterday if later than
  now) to now; "before 10:30" from midnight to then
- "on Nov 10", "on 2026-11-10", "on 11/10"       that whole day (the latest one not after now)
- "between 9 and 10 this morning", "from 14:00 to 14:30 yesterday", "at 2pm"  a span of a day
- "the previous hour", "the day before", "the prior 2 hours"  a *relative* window: the same
  length right before another window (used by comparisons: "last hour vs the hour before")

``find_all`` returns every expression with its character span, so the question parser can cut
them out before matching names; ``parse`` returns the first window or the default (24 hours).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from meshlens.timewin import Window

DEFAULT_SPAN = timedelta(hours=24)
NOW_SPAN = timedelta(minutes=5)
UNIT = {"second": timedelta(seconds=1), "minute": timedelta(minutes=1), "hour": timedelta(hours=1),
        "day": timedelta(days=1), "week": timedelta(weeks=1), "month": timedelta(days=30)}
UNIT_WORDS = {
    "s": "second", "sec": "second", "secs": "second", "second": "second", "seconds": "second",
    "m": "minute", "min": "minute", "mins": "minute", "minute": "minute", "minutes": "minute",
    "h": "hour", "hr": "hour", "hrs": "hour", "hour": "hour", "hours": "hour",
    "d": "day", "day": "day", "days": "day", "w": "week", "wk": "week", "wks": "week",
    "week": "week", "weeks": "week", "month": "month", "months": "month",
}
NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
                "fifteen": 15, "twenty": 20, "thirty": 30, "couple of": 2, "couple": 2, "few": 3}
MONTHS = {m: i + 1 for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
PARTS_OF_DAY = {"morning": (0, 12), "afternoon": (12, 18), "evening": (18, 24), "night": (18, 24)}

_NUM = r"(?P<n>\d+|" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")"
_UNIT = r"(?P<unit>" + "|".join(sorted(UNIT_WORDS, key=len, reverse=True)) + r")"
_CLOCK = r"(?:\d{1,2}(?::\d{2})?(?:\s*(?:am|pm|a\.m\.|p\.m\.))?|noon|midnight)"
_MONTH = r"(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DAYNUM = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_DAY_REF = (r"(?P<dayref>today|yesterday|this\s+(?:morning|afternoon|evening)|tonight|"
            r"last\s+night|on\s+\S+(?:\s+\d{1,2}(?:st|nd|rd|th)?)?)")


@dataclass(frozen=True)
class TimeMatch:
    """One time expression found in a question."""

    window: Window | None
    start: int
    end: int
    text: str
    relative: timedelta | None = None  # "the hour before": length of a window right before another


def parse(text: str, *, now: datetime, default: timedelta = DEFAULT_SPAN) -> Window:
    """The first absolute window in ``text``, else the ``default`` span ending at ``now``."""
    for match in find_all(text, now=now):
        if match.window is not None:
            return match.window
    return Window(now - default, now)


def default_window(now: datetime) -> Window:
    """The window of a question that names no time: the last 24 hours."""
    return Window(now - DEFAULT_SPAN, now)


def find_all(text: str, *, now: datetime) -> list[TimeMatch]:
    """Every time expression in ``text``, in order of appearance, non-overlapping."""
    now = now.astimezone(timezone.utc)
    lowered = text.lower()
    taken: list[TimeMatch] = []
    for pattern, build in _RULES:
        for m in pattern.finditer(lowered):
            if any(m.start() < t.end and t.start < m.end() for t in taken):
                continue
            result = build(m, now)
            if result is not None:
                window, relative = result
                taken.append(TimeMatch(window, m.start(), m.end(), text[m.start():m.end()], relative))
    return sorted(taken, key=lambda t: t.start)


# -- rules ---------------------------------------------------------------------------------

Built = tuple[Window | None, timedelta | None] | None


def _midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _number(word: str | None) -> int:
    if not word:
        return 1
    return int(word) if word.isdigit() else NUMBER_WORDS[word]


def _rolling(m: re.Match[str], now: datetime) -> Built:
    unit = UNIT_WORDS[m.group("unit")]
    span = UNIT[unit] * _number(m.group("n"))
    return Window(now - span, now), None


def _rolling_one(m: re.Match[str], now: datetime) -> Built:
    unit = UNIT_WORDS[m.group("unit")]
    return Window(now - UNIT[unit], now), None


def _compact(m: re.Match[str], now: datetime) -> Built:
    unit = UNIT_WORDS[m.group("unit")]
    return Window(now - UNIT[unit] * int(m.group("n")), now), None


def _relative(m: re.Match[str], now: datetime) -> Built:
    unit = UNIT_WORDS[m.group("unit")]
    return None, UNIT[unit] * _number(m.groupdict().get("n"))


def _right_now(m: re.Match[str], now: datetime) -> Built:
    return Window(now - NOW_SPAN, now), None


def _named_period(m: re.Match[str], now: datetime) -> Built:
    which, period = m.group("which"), m.group("period")
    start, length = _period_start(now, period)
    if which == "this":
        return Window(start, now), None
    previous = _previous_period_start(start, period)
    return Window(previous, start), None


def _period_start(now: datetime, period: str) -> tuple[datetime, timedelta]:
    if period == "hour":
        return now.replace(minute=0, second=0, microsecond=0), UNIT["hour"]
    if period == "week":
        return _midnight(now) - timedelta(days=now.weekday()), UNIT["week"]
    if period == "month":
        return _midnight(now).replace(day=1), UNIT["month"]
    if period == "year":
        return _midnight(now).replace(month=1, day=1), timedelta(days=365)
    return _midnight(now), UNIT["day"]


def _previous_period_start(start: datetime, period: str) -> datetime:
    if period == "month":
        return (start - timedelta(days=1)).replace(day=1)
    if period == "year":
        return start.replace(year=start.year - 1)
    return start - {"hour": UNIT["hour"], "week": UNIT["week"]}.get(period, UNIT["day"])


def _today(m: re.Match[str], now: datetime) -> Built:
    return Window(_midnight(now), now), None


def _yesterday(m: re.Match[str], now: datetime) -> Built:
    return Window(_midnight(now) - UNIT["day"], _midnight(now)), None


def _part_of_day(m: re.Match[str], now: datetime) -> Built:
    day = _midnight(now) - (UNIT["day"] if m.group("which") in ("last", "yesterday") else timedelta(0))
    lo, hi = PARTS_OF_DAY[m.group("part")]
    start, end = day + timedelta(hours=lo), min(day + timedelta(hours=hi), now)
    return (Window(start, end), None) if start < end else (Window(start, day + timedelta(hours=hi)), None)


def _clock(text: str, *, pm_hint: bool = False) -> timedelta | None:
    text = text.strip().replace(".", "")
    if text == "noon":
        return timedelta(hours=12)
    if text == "midnight":
        return timedelta(0)
    m = re.fullmatch(r"(\d{1,2})(?::(\d{2}))?\s*(am|pm)?", text)
    if not m:
        return None
    hour, minute = int(m.group(1)), int(m.group(2) or 0)
    if m.group(3) == "pm" and hour < 12:
        hour += 12
    elif m.group(3) == "am" and hour == 12:
        hour = 0
    elif m.group(3) is None and pm_hint and hour < 12:
        hour += 12
    if hour > 24 or minute > 59:
        return None
    return timedelta(hours=hour, minutes=minute)


def _day_of(ref: str | None, now: datetime) -> tuple[datetime, bool] | None:
    """The midnight a day reference names, and whether it implies afternoon hours."""
    if not ref or ref == "today" or ref.endswith("morning"):
        return _midnight(now), False
    if ref == "yesterday":
        return _midnight(now) - UNIT["day"], False
    if ref in ("tonight",) or ref.endswith(("afternoon", "evening")):
        return _midnight(now), True
    if ref == "last night":
        return _midnight(now) - UNIT["day"], True
    day = _calendar_day(ref.removeprefix("on").strip(), now)
    return (day, False) if day else None


def _tonight(m: re.Match[str], now: datetime) -> Built:
    start = _midnight(now) + timedelta(hours=18)
    return Window(start, max(min(now, start + timedelta(hours=6)), start + timedelta(minutes=1))), None


def _since(m: re.Match[str], now: datetime) -> Built:
    offset = _clock(m.group("t"))
    if offset is None:
        return None
    start = _midnight(now) + offset
    if start >= now:
        start -= UNIT["day"]
    if m.group("kw") == "before":
        return Window(_midnight(start), start), None
    return Window(start, now), None


def _between(m: re.Match[str], now: datetime) -> Built:
    anchor = _day_of(m.group("dayref") and re.sub(r"\s+", " ", m.group("dayref")), now)
    if anchor is None:
        return None
    day, pm = anchor
    lo, hi = _clock(m.group("a"), pm_hint=pm), _clock(m.group("b"), pm_hint=pm)
    if lo is None or hi is None:
        return None
    if hi <= lo and hi + timedelta(hours=12) > lo and not re.search(r"am|pm", m.group("b")):
        hi += timedelta(hours=12)  # "between 11 and 1" means 11:00 to 13:00
    if hi <= lo:
        return None
    return Window(day + lo, day + hi), None


def _at(m: re.Match[str], now: datetime) -> Built:
    anchor = _day_of(m.group("dayref") and re.sub(r"\s+", " ", m.group("dayref")), now)
    offset = _clock(m.group("t"), pm_hint=bool(anchor and anchor[1]))
    if anchor is None or offset is None:
        return None
    span = UNIT["minute"] if ":" in m.group("t") else UNIT["hour"]
    start = anchor[0] + offset
    if not m.group("dayref") and start >= now:
        start -= UNIT["day"]
    return Window(start, start + span), None


def _on_day(m: re.Match[str], now: datetime) -> Built:
    day = _calendar_day(m.group("date"), now)
    return (Window(day, day + UNIT["day"]), None) if day else None


def _calendar_day(text: str, now: datetime) -> datetime | None:
    """``nov 10``, ``10 november``, ``2026-11-10``, ``11/10``: the latest such day not after now."""
    text = text.strip().rstrip(",.?")
    iso = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", text)
    if iso:
        return _safe_day(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
    for pattern in (r"(?P<mon>[a-z]+)\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(?P<y>\d{4}))?",
                    r"(?P<day>\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<mon>[a-z]+)\.?(?:,?\s+(?P<y>\d{4}))?",
                    r"(?P<mon>\d{1,2})/(?P<day>\d{1,2})(?:/(?P<y>\d{4}))?"):
        m = re.fullmatch(pattern, text)
        if m:
            month = m.group("mon")
            number = int(month) if month.isdigit() else MONTHS.get(month[:3])
            if number:
                return _latest_day(number, int(m.group("day")), m.group("y"), now)
    return None


def _latest_day(month: int, day: int, year: str | None, now: datetime) -> datetime | None:
    if year:
        return _safe_day(int(year), month, day)
    candidate = _safe_day(now.year, month, day)
    if candidate and candidate > now:
        candidate = _safe_day(now.year - 1, month, day)
    return candidate


def _safe_day(year: int, month: int, day: int) -> datetime | None:
    try:
        return datetime(year, month, day, tzinfo=timezone.utc)
    except ValueError:
        return None


def _iso_since(m: re.Match[str], now: datetime) -> Built:
    moment = datetime.fromisoformat(m.group("iso").upper().replace("Z", "+00:00"))
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return (Window(moment, now), None) if moment < now else None


_DATE_WORDS = (r"(?P<date>\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}(?:/\d{4})?|" + _MONTH[:-3].replace("(?P<mon>", "(?:")
               + r"[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?(?:,?\s+\d{4})?|\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?"
               + r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?(?:,?\s+\d{4})?)")

_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str], datetime], Built]]] = [
    (re.compile(r"\b(?:since|after|from)\s+(?P<iso>\d{4}-\d{2}-\d{2}[t ]\d{2}:\d{2}(?::\d{2})?z?)"), _iso_since),
    (re.compile(r"\b(?:between|from)\s+(?P<a>" + _CLOCK + r")\s+(?:and|to|until|till|-)\s+(?P<b>" + _CLOCK
                + r")(?:\s+(?:utc|z))?(?:\s+" + _DAY_REF + r")?"), _between),
    (re.compile(r"\b(?:the\s+)?(?:previous|prior|preceding)\s+(?:(?P<n>\d+|two|three|four|five|six|seven)\s+)?"
                + _UNIT + r"\b"), _relative),
    (re.compile(r"\b(?:the\s+)?(?P<unit>hour|day|week|month)\s+before\b"), _relative),
    (re.compile(r"\b(?:in\s+|over\s+|during\s+|for\s+|within\s+)?(?:the\s+)?(?:last|past)\s+" + _NUM + r"\s*"
                + _UNIT + r"\b"), _rolling),
    (re.compile(r"\b(?:in|over|during|for|within)\s+the\s+(?:last|past)\s+" + _UNIT + r"\b"), _rolling_one),
    (re.compile(r"\b(?:the\s+)?past\s+" + _UNIT + r"\b"), _rolling_one),
    (re.compile(r"\blast\s+(?P<unit>hour|minute|day|24h)\b"), _rolling_one),
    (re.compile(r"\b(?:last|past)\s+(?P<n>\d+)(?P<unit>m|h|d|w)\b"), _compact),
    (re.compile(r"\b(?P<which>this|last)\s+(?P<period>hour|week|month|year)\b"), _named_period),
    (re.compile(r"\b(?P<which>this|last|yesterday)\s+(?P<part>morning|afternoon|evening|night)\b"), _part_of_day),
    (re.compile(r"\b(?P<which>)tonight\b"), _tonight),
    (re.compile(r"\b(?:right\s+now|currently|at\s+the\s+moment|at\s+present|just\s+now)\b"), _right_now),
    (re.compile(r"\b(?P<kw>since|after|before)\s+(?P<t>" + _CLOCK + r")(?:\s+(?:utc|z))?(?!\s*(?:minutes?|hours?|days?|/|-))"), _since),
    (re.compile(r"\b(?:on|for|during)?\s*(?:the\s+day\s+of\s+)?" + _DATE_WORDS), _on_day),
    (re.compile(r"\bat\s+(?P<t>" + _CLOCK + r")(?:\s+(?:utc|z))?(?:\s+" + _DAY_REF + r")?"), _at),
    (re.compile(r"\btoday(?:'s)?\b"), _today),
    (re.compile(r"\byesterday(?:'s)?\b"), _yesterday),
    (re.compile(r"\bnow\b"), _right_now),
]
