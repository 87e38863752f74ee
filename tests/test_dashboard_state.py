"""The dashboard's time ranges and lake fingerprint (no Streamlit server needed)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from analytics import findings
from dashboard import data, state
from meshlens.errors import ConfigError

UTC = timezone.utc
NOW = datetime(2026, 11, 28, 12, 30, 15, tzinfo=UTC)


def test_anchor_is_the_next_minute_after_now_for_a_live_lake() -> None:
    assert findings.anchor(NOW - timedelta(seconds=5), now=NOW) == datetime(2026, 11, 28, 12, 31, tzinfo=UTC)
    assert findings.anchor(None, now=NOW) == datetime(2026, 11, 28, 12, 31, tzinfo=UTC)


def test_anchor_is_the_newest_data_for_an_old_lake() -> None:
    newest = datetime(2026, 11, 10, 23, 59, 56, tzinfo=UTC)
    assert findings.anchor(newest, now=NOW) == datetime(2026, 11, 11, tzinfo=UTC)
    on_the_minute = datetime(2026, 11, 10, 23, 59, tzinfo=UTC)
    assert findings.anchor(on_the_minute, now=NOW) == on_the_minute


def test_preset_and_custom_windows() -> None:
    anchor = datetime(2026, 11, 11, tzinfo=UTC)
    day = state.window_for("24h", anchor=anchor)
    assert (day.start, day.end) == (datetime(2026, 11, 10, tzinfo=UTC), anchor)
    custom = state.window_for("custom", anchor=anchor, since="2026-11-10T09:00:00Z", until="2026-11-10T10:30:00Z")
    assert (custom.start, custom.end) == (datetime(2026, 11, 10, 9, tzinfo=UTC), datetime(2026, 11, 10, 10, 30, tzinfo=UTC))
    relative = state.window_for("custom", anchor=anchor, since="2h")
    assert (relative.start, relative.end) == (anchor - timedelta(hours=2), anchor)
    with pytest.raises(ConfigError):
        state.window_for("custom", anchor=anchor, since="2026-11-10T10:00:00Z", until="2026-11-10T09:00:00Z")
    with pytest.raises(ConfigError):
        state.window_for("custom", anchor=anchor, since="yesterday-ish")


def test_every_preset_range_parses() -> None:
    anchor = datetime(2026, 11, 11, tzinfo=UTC)
    for key in state.RANGES:
        if key != "custom":
            window = state.window_for(key, anchor=anchor)
            assert window.end == anchor and window.start < anchor


def test_lake_fingerprint_changes_when_a_file_is_published(tmp_path: Path) -> None:
    part = tmp_path / "requests" / "date=2026-11-10"
    part.mkdir(parents=True)
    before = data.lake_version(str(tmp_path))
    assert data.lake_version(str(tmp_path)) == before
    tmp = part / ".new.parquet.tmp"
    tmp.write_bytes(b"x")
    tmp.rename(part / "new.parquet")
    assert data.lake_version(str(tmp_path)) != before
