"""The detector's faster paths give exactly what the plain ones give.

- rolling medians on gap-free rows (``_with_lagged_medians``) equal polars' null-skipping
  rolling median per series, whatever the nulls (leading, inside a series, none);
- the edge list read from the day rollup, and the reader's fallback when it lacks an edge;
- the split of a window between the minute rollup and raw rows (``_source_plan``).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from analytics import anomalies
from meshlens.catalog import connect
from meshlens.timewin import Window
from tests.analysis_support import START, Plan, raw_and_rolled

PLAN = Plan(hours=2, seed=41, rate_per_min=20)


def _series_frame(seed: int, *, lead_nulls: bool, holes: bool) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 400, size=12)
    sid = np.repeat(np.arange(len(lengths)), lengths)
    values = rng.normal(size=len(sid)).round(1)  # ties, as minute counts and log latencies have
    position = np.concatenate([np.arange(n) for n in lengths])
    if lead_nulls:
        values[position < np.repeat(rng.integers(0, 60, size=len(lengths)), lengths)] = np.nan
    if holes:
        values[(rng.random(len(sid)) < 0.3) & (sid % 2 == 0)] = np.nan
    return pl.DataFrame({anomalies.SERIES: sid, "x": values}).with_columns(pl.col("x").fill_nan(None))


@pytest.mark.parametrize("lead_nulls,holes", [(False, False), (True, False), (True, True), (False, True)])
@pytest.mark.parametrize("window,lag,least", [(120, 30, 30), (15, 0, 3), (7, 2, 1)])
def test_gap_free_rolling_median_equals_the_null_skipping_one(lead_nulls, holes, window, lag, least):
    frame = _series_frame(window + lag, lead_nulls=lead_nulls, holes=holes)
    got = anomalies._with_lagged_medians(frame, {"m": pl.col("x")}, window=window, lag=lag, least=least)
    # by hand: each series on its own, the median of the non-null values in [i - lag - window + 1, i - lag]
    expected = []
    for _, part in frame.group_by(anomalies.SERIES, maintain_order=True):
        x = part.get_column("x").to_numpy().astype(float)
        for i in range(len(x)):
            hi = i - lag
            seen = x[max(0, hi - window + 1): hi + 1] if hi >= 0 else np.array([])
            seen = seen[~np.isnan(seen)]
            expected.append(float(np.median(seen)) if len(seen) >= least else None)
    assert got.get_column("m").to_list() == pytest.approx(expected, nan_ok=False, abs=1e-12)


@pytest.fixture(scope="module")
def lakes(tmp_path_factory):
    """Raw rows only; with rollups; with rollups but no day rollup of edges (the reader's fallback)."""
    root = tmp_path_factory.mktemp("exact")
    raw, rolled = raw_and_rolled(root, PLAN)
    shutil.copytree(rolled.root, root / "no_day")
    shutil.rmtree(root / "no_day" / "rollups" / "edges_1d")
    from meshlens.lake import Lake

    return raw, rolled, Lake(root / "no_day")


def _named(minutes: pl.DataFrame, series: pl.DataFrame) -> pl.DataFrame:
    return minutes.join(series, on="series_id").sort("series_id", "minute")


def test_edge_list_from_the_day_rollup_or_its_fallback_gives_the_raw_reading(lakes):
    raw, rolled, no_day = lakes
    window = Window(START + timedelta(minutes=5), START + timedelta(minutes=110))
    expected = _named(*anomalies.load_minutes(connect(raw), window=window))
    assert expected.height > 0
    for lake in (rolled, no_day):
        got = _named(*anomalies.load_minutes(connect(lake), window=window))
        assert got.equals(expected.select(got.columns))  # same ids, same rows, same percentiles


def test_source_plan_reads_raw_rows_only_where_there_is_no_rollup(monkeypatch):
    day = datetime(2026, 11, 10, tzinfo=timezone.utc)
    monkeypatch.setattr(anomalies, "_rollup_dates", lambda conn, window: ["2026-11-10", "2026-11-12"])
    window = Window(day + timedelta(hours=20), day + timedelta(days=2, hours=3, seconds=30))
    plan = anomalies._source_plan(None, window=window, service="PaymentService", env=None)
    assert plan.rolled == ["2026-11-10", "2026-11-12"]
    assert plan.rollup_window == Window(window.start, day + timedelta(days=2, hours=3))
    assert plan.raw_windows == [Window(day + timedelta(days=1), day + timedelta(days=2)),
                                Window(day + timedelta(days=2, hours=3), window.end)]
    assert plan.filters == {"service": "PaymentService"}
    monkeypatch.setattr(anomalies, "_rollup_dates", lambda conn, window: [])
    assert anomalies._source_plan(None, window=window, service=None, env=None).raw_windows == [window]
