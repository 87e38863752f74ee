"""The one-service fast path (analytics.fastpath): same answers as the rollup sketch path."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from analytics import fastpath, red, rollup
from meshlens import catalog
from meshlens.lake import Lake
from meshlens.settings import Settings
from meshlens.timewin import Window
from tests import metrics_lake

UTC = timezone.utc
DAY1 = datetime(2026, 11, 10, tzinfo=UTC)
SKETCH = Settings({"exact_percentile_max_rows": 0})
FLOATS = ("mean_ms", "rps")


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, pl.DataFrame]:
    """metrics_lake: two days, three services, two envs, NULL and zero durations, NULL statuses."""
    lake = Lake(tmp_path_factory.mktemp("fastpath") / "lake")
    frame = metrics_lake.build(lake)
    rollup.rebuild(lake)
    return lake, frame


@pytest.fixture(scope="module")
def scenario_lake(scenario, tmp_path_factory) -> Lake:  # type: ignore[no-untyped-def]
    lake, _ = scenario
    mine = Lake(tmp_path_factory.mktemp("fastpath-scenario") / "lake")
    shutil.copytree(lake.table_dir("requests"), mine.table_dir("requests"))
    rollup.rebuild(mine)
    return mine


def _both(conn, monkeypatch, **query) -> tuple[pl.DataFrame, pl.DataFrame]:  # type: ignore[no-untyped-def]
    """(fast path answer, rollup path answer) of one red() call; only empty answers may skip the fast path."""
    calls: list[object] = []
    original = red._from_rollups
    with monkeypatch.context() as patch:
        patch.setattr(red, "_from_rollups", lambda *a, **k: calls.append(1) or original(*a, **k))
        fast = red.red(conn, settings=SKETCH, **query)
    with monkeypatch.context() as patch:
        patch.setattr(fastpath, "lake_of", lambda _conn: None)
        slow = red.red(conn, settings=SKETCH, **query)
    assert not calls or slow.is_empty(), "the fast path handed a non-empty answer over to the rollup path"
    return fast, slow


def _assert_same(fast: pl.DataFrame, slow: pl.DataFrame) -> None:
    assert fast.columns == slow.columns
    assert fast.height == slow.height
    exact = [c for c in fast.columns if c not in FLOATS]
    assert fast.select(exact).equals(slow.select(exact)), (fast, slow)
    for col in FLOATS:
        a, b = fast[col].to_numpy(), slow[col].to_numpy()
        assert np.allclose(a, b, rtol=1e-9, equal_nan=True)


def _services(conn) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return conn.sql("SELECT DISTINCT service, env FROM services_1d ORDER BY ALL").fetchall()


def test_random_windows_match_rollup_path(scenario_lake: Lake, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    conn = catalog.connect(scenario_lake)
    pairs = _services(conn)
    rng = np.random.default_rng(3)
    both_envs = [s for s in {s for s, _ in pairs} if sum(1 for t, _ in pairs if t == s) == 2]
    assert both_envs, "the scenario has services in staging and prod"
    picks = [pairs[i] for i in rng.choice(len(pairs), size=10, replace=False)] + [(both_envs[0], "prod")]
    for service, env in picks:
        start = DAY1 + timedelta(minutes=int(rng.integers(0, 1380)))
        window = Window(start, start + timedelta(minutes=int(rng.integers(1, 400))))
        for query in ({"by": ["service"]}, {"by": []}, {"by": ["service"], "env": env},
                      {"by": ["env"]}, {"by": [], "bucket": "5m"}, {"by": ["env"], "bucket": "minute"}):
            fast, slow = _both(conn, monkeypatch, window=window, service=service, **query)
            _assert_same(fast, slow)
            assert fast.height > 0 or query.get("env")


@pytest.mark.parametrize("bucket", [None, "minute", "hour", "day"])
def test_whole_day_and_hours_per_grain(scenario_lake: Lake, monkeypatch, bucket) -> None:  # type: ignore[no-untyped-def]
    conn = catalog.connect(scenario_lake)
    for service in ("PaymentService", "InventoryService"):
        for window in (Window(DAY1, DAY1 + timedelta(days=1)), Window(DAY1 + timedelta(hours=14), DAY1 + timedelta(hours=15)),
                       Window(DAY1 + timedelta(hours=9, minutes=30), DAY1 + timedelta(hours=11, minutes=30))):
            fast, slow = _both(conn, monkeypatch, window=window, by=["service"], service=service, bucket=bucket)
            _assert_same(fast, slow)
            assert fast["requests"].sum() > 0


def test_two_days_null_and_zero_durations(two_days, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    lake, rows = two_days
    conn = catalog.connect(lake)
    window = Window(DAY1 + timedelta(hours=20, minutes=7), DAY1 + timedelta(days=1, hours=3, minutes=1))
    for service in ("PaymentService", "CartService"):
        for query in ({"by": []}, {"by": ["env"], "bucket": "hour"}, {"by": ["service"], "env": "staging"},
                      {"by": ["service"], "bucket": "5m"}, {"by": [], "bucket": "minute"}):
            fast, slow = _both(conn, monkeypatch, window=window, service=service, **query)
            _assert_same(fast, slow)
        fast, _ = _both(conn, monkeypatch, window=window, service=service, by=[])
        expected = rows.filter((pl.col("service") == service) & (pl.col("ts") >= window.start) & (pl.col("ts") < window.end))
        assert fast["requests"][0] == expected.height
        assert fast["errors_5xx"][0] == expected.filter(pl.col("status").is_between(500, 599)).height
        assert fast["n"][0] == expected["duration_ms"].drop_nulls().len()


def test_absent_service_and_empty_window_fall_back(two_days) -> None:  # type: ignore[no-untyped-def]
    lake, _ = two_days
    conn = catalog.connect(lake)
    day = Window(DAY1, DAY1 + timedelta(days=1))
    assert red.red(conn, window=day, service="NoSuchService", settings=SKETCH).is_empty()
    later = Window(DAY1 + timedelta(days=5), DAY1 + timedelta(days=6))
    assert red.red(conn, window=later, service="CartService", bucket="hour", settings=SKETCH).is_empty()


def test_small_windows_stay_exact(two_days) -> None:  # type: ignore[no-untyped-def]
    lake, _ = two_days
    conn = catalog.connect(lake)
    frame = red.red(conn, window=Window(DAY1, DAY1 + timedelta(hours=2)), service="CartService")
    assert frame["percentile_source"].to_list() == ["exact"]


def test_missing_or_stale_cells_step_aside(two_days, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    lake, _ = two_days
    copy = Lake(tmp_path / "lake")
    shutil.copytree(lake.root, copy.root)
    conn = catalog.connect(copy)
    window = Window(DAY1 + timedelta(hours=3), DAY1 + timedelta(hours=5))
    before = red.red(conn, window=window, service="PaymentService", settings=SKETCH)
    cells = rollup.rollup_file(copy, "service_cells_1h", "2026-11-10")
    os.unlink(cells)
    assert fastpath.read_cells(copy, tiles=[("hour", _us(window.start), _us(window.end))],
                               service="PaymentService", env=None) is None
    _assert_same(red.red(conn, window=window, service="PaymentService", settings=SKETCH), before)
    assert fastpath.derive_date(copy, "2026-11-10")
    fast, slow = _both(conn, monkeypatch, window=window, service="PaymentService", by=[])
    _assert_same(fast, slow)
    services = rollup.rollup_file(copy, "services_1h", "2026-11-10")
    later = os.stat(cells).st_mtime_ns + 10**9
    os.utime(services, ns=(later, later))
    assert fastpath.read_cells(copy, tiles=[("hour", _us(window.start), _us(window.end))],
                               service="PaymentService", env=None) is None


def test_cells_are_sorted_with_small_row_groups(two_days) -> None:  # type: ignore[no-untyped-def]
    lake, rows = two_days
    for level in fastpath.LEVELS:
        path = rollup.rollup_file(lake, level.name, "2026-11-10")
        table = pq.read_table(path)
        frame = pl.from_arrow(table)
        assert frame.select("service", "env", level.grain).equals(frame.select("service", "env", level.grain).sort(
            "service", "env", level.grain))
        assert all(k == sorted(k) for k in frame["lat_keys"].to_list())
        day = rows.filter(pl.col("ts").dt.date() == DAY1.date())
        assert frame["requests"].sum() == day.height
        assert frame.select(pl.col("lat_counts").list.sum().sum()).item() == day["duration_ms"].drop_nulls().len()
        assert pq.ParquetFile(path).metadata.row_group(0).num_rows <= fastpath.ROW_GROUP_ROWS[level.grain]


def test_rebuild_drops_cells_of_dates_without_requests(two_days, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lake, _ = two_days
    copy = Lake(tmp_path / "lake")
    shutil.copytree(lake.root, copy.root)
    shutil.rmtree(copy.table_dir("requests") / "date=2026-11-11")
    rollup.rebuild(copy)
    assert rollup.rollup_file(copy, "service_cells_1m", "2026-11-10").is_file()
    assert not rollup.rollup_file(copy, "service_cells_1m", "2026-11-11").exists()


def _us(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000


def test_a_catalog_cursor_finds_the_lake_for_the_fast_path(scenario) -> None:
    """The dashboard queries through cursors: they must find the lake (and so the cells) too."""
    lake, _ = scenario
    conn = catalog.connect(lake)
    cur = catalog.cursor(conn)
    assert fastpath.lake_of(cur) is lake
    assert cur.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
