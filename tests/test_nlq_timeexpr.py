"""The time-expression grammar: every window is worked out by hand from a fixed now."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from meshlens.timewin import Window
from nlq.timeexpr import find_all, parse

NOW = datetime(2026, 11, 10, 15, 20, tzinfo=timezone.utc)  # a Tuesday


def at(day: int, hour: int = 0, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=timezone.utc)


@pytest.mark.parametrize("text, start, end", [
    ("errors in the last hour", at(10, 14, 20), NOW),
    ("p99 over the past hour", at(10, 14, 20), NOW),
    ("last 30 minutes", at(10, 14, 50), NOW),
    ("in the past 2h", at(10, 13, 20), NOW),
    ("last 15m", at(10, 15, 5), NOW),
    ("today", at(10), NOW),
    ("yesterday", at(9), at(10)),
    ("this week", at(9), NOW),
    ("last week", at(2), at(9)),
    ("in the last week", NOW - timedelta(days=7), NOW),
    ("past 7 days", NOW - timedelta(days=7), NOW),
    ("last 3 days", NOW - timedelta(days=3), NOW),
    ("last three days", NOW - timedelta(days=3), NOW),
    ("last 24 hours", NOW - timedelta(hours=24), NOW),
    ("since 10:30", at(10, 10, 30), NOW),
    ("since 9am", at(10, 9), NOW),
    ("since 16:00", at(9, 16), NOW),  # later than now: yesterday's 16:00
    ("before 10:30", at(10), at(10, 10, 30)),
    ("on Nov 10", at(10), at(11)),
    ("on November 9th", at(9), at(10)),
    ("on 2026-11-08", at(8), at(9)),
    ("on 11/07", at(7), at(8)),
    ("between 9 and 10 this morning", at(10, 9), at(10, 10)),
    ("between 2pm and 3pm", at(10, 14), at(10, 15)),
    ("between 2 and 3 this afternoon", at(10, 14), at(10, 15)),
    ("between 14:00 and 14:30 yesterday", at(9, 14), at(9, 14, 30)),
    ("from 9 to 10 on nov 9", at(9, 9), at(9, 10)),
    ("between 11 and 1", at(10, 11), at(10, 13)),
    ("right now", NOW - timedelta(minutes=5), NOW),
    ("this month", at(1), NOW),
    ("last month", at(1, month=10), at(1)),
    ("this morning", at(10), at(10, 12)),
    ("this afternoon", at(10, 12), NOW),
    ("at 2pm", at(10, 14), at(10, 15)),
    ("at 14:05", at(10, 14, 5), at(10, 14, 6)),
    ("since 2026-11-10T09:00Z", at(10, 9), NOW),
])
def test_expression_to_window(text: str, start: datetime, end: datetime) -> None:
    assert parse(f"requests to PaymentService {text}?", now=NOW) == Window(start, end)


def test_no_expression_means_the_last_24_hours() -> None:
    assert parse("who calls PaymentService?", now=NOW) == Window(NOW - timedelta(hours=24), NOW)
    assert find_all("requests per hour to InventoryService", now=NOW) == []
    assert find_all("p99 of v2 on /v1/charges/{id}", now=NOW) == []


def test_relative_windows_and_two_windows() -> None:
    found = find_all("last hour compared to the hour before", now=NOW)
    assert found[0].window == Window(at(10, 14, 20), NOW) and found[1].relative == timedelta(hours=1)
    found = find_all("today vs yesterday", now=NOW)
    assert [f.window for f in found] == [Window(at(10), NOW), Window(at(9), at(10))]
    assert find_all("the previous 2 hours", now=NOW)[0].relative == timedelta(hours=2)


def test_spans_point_into_the_text() -> None:
    text = "errors of PaymentService since 10:30 in prod"
    (match,) = find_all(text, now=NOW)
    assert text[match.start:match.end] == "since 10:30"


@given(st.text(max_size=60))
def test_property_never_crashes_and_windows_are_ordered(text: str) -> None:
    for match in find_all(text, now=NOW):
        assert match.window is None or match.window.start < match.window.end or match.window.start >= NOW
