"""RED metrics against numbers computed with polars/numpy from the synthetic lake's rows."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st

from analytics import red, rollup
from analytics.sketch import LatencySketch
from meshlens import catalog
from meshlens.errors import ConfigError, UnknownNameError
from meshlens.lake import Lake
from meshlens.settings import Settings
from meshlens.timewin import Window
from tests import metrics_lake
from tests.metrics_lake import nearest_rank

UTC = timezone.utc
DAY1 = datetime(2026, 11, 10, tzinfo=UTC)
SKETCH = Settings({"exact_percentile_max_rows": 0})
QUANTILES = {"p50_ms": 0.5, "p90_ms": 0.9, "p95_ms": 0.95, "p99_ms": 0.99}


@pytest.fixture(scope="module")
def lake_rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, pl.DataFrame]:
    lake = Lake(tmp_path_factory.mktemp("red") / "lake")
    frame = metrics_lake.build(lake)
    rollup.rebuild(lake)
    return lake, frame


@pytest.fixture()
def conn(lake_rows: tuple[Lake, pl.DataFrame]):  # type: ignore[no-untyped-def]
    return catalog.connect(lake_rows[0])


def _in(frame: pl.DataFrame, window: Window) -> pl.DataFrame:
    return frame.filter((pl.col("ts") >= window.start) & (pl.col("ts") < window.end))


def _check_row(row: dict, rows: pl.DataFrame, *, seconds: float, exact: bool) -> None:
    durations = rows["duration_ms"].drop_nulls().to_numpy()
    assert row["requests"] == rows.height
    assert row["errors_5xx"] == rows.filter(pl.col("status").is_between(500, 599)).height
    assert row["client_errors_4xx"] == rows.filter(pl.col("status").is_between(400, 499)).height
    assert row["bytes_in"] == rows["bytes_in"].sum() and row["bytes_out"] == rows["bytes_out"].sum()
    assert row["n"] == durations.size
    assert row["rps"] == pytest.approx(rows.height / seconds)
    assert row["error_ratio"] == pytest.approx(row["errors_5xx"] / rows.height)
    assert row["max_ms"] == pytest.approx(durations.max())
    assert row["mean_ms"] == pytest.approx(durations.mean())
    for col, q in QUANTILES.items():
        truth = nearest_rank(durations, q)
        if exact:
            assert row[col] == truth, col
        else:
            assert abs(row[col] - truth) <= 0.01 * truth * (1 + 1e-9), col


@pytest.mark.parametrize("source", ["exact", "sketch"])
def test_per_service_over_two_days(conn, lake_rows, source: str) -> None:  # type: ignore[no-untyped-def]
    _, frame = lake_rows
    window = Window(DAY1, DAY1 + timedelta(days=2))
    result = red.red(conn, window=window, by=["service"], settings=SKETCH if source == "sketch" else None)
    assert set(result["percentile_source"]) == {source}
    assert sorted(result["service"]) == sorted(frame["service"].unique())
    for row in result.iter_rows(named=True):
        _check_row(row, frame.filter(pl.col("service") == row["service"]), seconds=window.seconds, exact=source == "exact")


@pytest.mark.parametrize("source", ["exact", "sketch"])
def test_edges_with_filters_over_a_window_tiled_by_minutes_hours_and_a_day(conn, lake_rows, source: str) -> None:  # type: ignore[no-untyped-def]
    _, frame = lake_rows
    window = Window(DAY1 + timedelta(hours=20, minutes=13), DAY1 + timedelta(days=1, hours=23, minutes=59))
    result = red.red(conn, window=window, by=["caller", "service"], env="prod", service="PaymentService",
                     settings=SKETCH if source == "sketch" else None)
    rows = _in(frame, window).filter((pl.col("env") == "prod") & (pl.col("service") == "PaymentService"))
    assert result.height == rows["caller"].n_unique()
    for row in result.iter_rows(named=True):
        _check_row(row, rows.filter(pl.col("caller") == row["caller"]), seconds=window.seconds, exact=source == "exact")


@pytest.mark.parametrize("bucket,every,seconds", [("5m", "5m", 300), ("hour", "1h", 3600), ("day", "1d", 86400)])
def test_time_buckets(conn, lake_rows, bucket: str, every: str, seconds: int) -> None:  # type: ignore[no-untyped-def]
    _, frame = lake_rows
    window = Window(DAY1 + timedelta(hours=6), DAY1 + timedelta(hours=30))
    result = red.red(conn, window=window, by=["service"], service="OrderService", bucket=bucket, settings=SKETCH)
    rows = _in(frame, window).filter(pl.col("service") == "OrderService").with_columns(
        pl.col("ts").dt.truncate(every).alias("bucket_start"))
    assert result.height == rows["bucket_start"].n_unique()
    for row in result.iter_rows(named=True):
        start = max(row["bucket_start"], window.start)
        end = min(row["bucket_start"] + timedelta(seconds=seconds), window.end)
        _check_row(row, rows.filter(pl.col("bucket_start") == row["bucket_start"]),
                   seconds=(end - start).total_seconds(), exact=False)


def test_routes_status_classes_and_null_keys(conn, lake_rows) -> None:  # type: ignore[no-untyped-def]
    _, frame = lake_rows
    window = Window(DAY1, DAY1 + timedelta(days=1))
    result = red.red(conn, window=window, by=["route", "status_class"], settings=SKETCH)
    rows = _in(frame, window).with_columns(metrics_lake.status_class().alias("status_class"))
    expected = rows.group_by(["route", "status_class"]).len()
    assert result.height == expected.height
    joined = result.join(expected, on=["route", "status_class"], nulls_equal=True)
    assert (joined["requests"] == joined["len"]).all() and joined.height == expected.height
    assert None in result["route"].to_list()


def test_principal_breakdown_reads_raw_rows(conn, lake_rows) -> None:  # type: ignore[no-untyped-def]
    _, frame = lake_rows
    window = Window(DAY1, DAY1 + timedelta(days=2))
    result = red.red(conn, window=window, by=["principal"], settings=SKETCH)
    assert set(result["percentile_source"]) == {"exact"}
    for row in result.iter_rows(named=True):
        _check_row(row, frame.filter(pl.col("caller_principal") == row["caller_principal"]),
                   seconds=window.seconds, exact=True)


def test_unaligned_window_is_exact_and_half_open(conn, lake_rows) -> None:  # type: ignore[no-untyped-def]
    _, frame = lake_rows
    ts = frame.sort("ts")["ts"]
    window = Window(ts[100], ts[2000])  # the request at ts[2000] itself is outside
    result = red.red(conn, window=window, settings=SKETCH)
    assert result["percentile_source"].to_list() == ["exact"]
    assert result["requests"][0] == frame.filter((pl.col("ts") >= ts[100]) & (pl.col("ts") < ts[2000])).height


def test_low_sample_flag(conn, lake_rows) -> None:  # type: ignore[no-untyped-def]
    _, frame = lake_rows
    window = Window(DAY1 + timedelta(hours=3), DAY1 + timedelta(hours=3, minutes=5))
    result = red.red(conn, window=window, by=["service"], settings=Settings({"min_percentile_samples": 5}))
    for row in result.iter_rows(named=True):
        n = _in(frame, window).filter(pl.col("service") == row["service"])["duration_ms"].count()
        assert row["n"] == n and row["low_sample"] == (n < 5)


def test_minute_series(conn, lake_rows) -> None:  # type: ignore[no-untyped-def]
    _, frame = lake_rows
    window = Window(DAY1 + timedelta(hours=1), DAY1 + timedelta(hours=3))
    series = red.minute_series(conn, window=window, service="PaymentService", settings=SKETCH)
    assert {"service", "minute", "requests", "errors_5xx", "client_errors_4xx", "p50_ms", "p99_ms", "bytes"} <= set(series.columns)
    rows = _in(frame, window).filter(pl.col("service") == "PaymentService").with_columns(pl.col("ts").dt.truncate("1m").alias("minute"))
    expected = rows.group_by("minute").agg(pl.len().alias("n_req"), (pl.col("bytes_in") + pl.col("bytes_out")).sum().alias("b"))
    joined = series.join(expected, on="minute")
    assert joined.height == series.height == expected.height
    assert (joined["requests"] == joined["n_req"]).all() and (joined["bytes"] == joined["b"]).all()


def test_empty_window_gives_empty_frame_with_columns(conn) -> None:  # type: ignore[no-untyped-def]
    window = Window(datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 2, tzinfo=UTC))
    result = red.red(conn, window=window, by=["service"], bucket="hour")
    assert result.is_empty() and result.columns == ["service", "bucket_start", *red.METRICS]


def test_bad_keys_and_buckets_are_user_errors(conn) -> None:  # type: ignore[no-untyped-def]
    window = Window(DAY1, DAY1 + timedelta(hours=1))
    with pytest.raises(UnknownNameError, match="did you mean service"):
        red.red(conn, window=window, by=["servce"])
    with pytest.raises(ConfigError, match="time bucket"):
        red.red(conn, window=window, bucket="2h")


def test_without_rollups_raw_rows_answer(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    frame = metrics_lake.build(lake, rows=500)
    window = Window(DAY1, DAY1 + timedelta(days=2))
    result = red.red(catalog.connect(lake), window=window, settings=SKETCH)
    assert result["requests"].to_list() == [frame.height] and result["percentile_source"][0] == "exact"


minutes = st.integers(min_value=0, max_value=4 * 1440)


@hsettings(max_examples=200, deadline=None)
@given(a=minutes, b=minutes, bucket=st.sampled_from([None, "minute", "5m", "hour", "day"]))
def test_tiles_cover_the_window_exactly_once(a: int, b: int, bucket: str | None) -> None:
    if a == b:
        return
    start, end = sorted((a, b))
    window = Window(DAY1 + timedelta(minutes=start), DAY1 + timedelta(minutes=end))
    tiles = red.tile_window(window=window, needed={"service"}, bucket=bucket)
    assert tiles[0][1] == window.start and tiles[-1][2] == window.end
    for (_, _, prev_end), (_, next_start, _) in zip(tiles, tiles[1:]):
        assert prev_end == next_start
    for level, lo, hi in tiles:
        step = rollup.GRAIN_SECONDS[level.grain]
        assert lo < hi and lo.timestamp() % step == 0 and hi.timestamp() % step == 0
        assert bucket is None or red.BUCKETS[bucket] % step == 0
        assert level.name.startswith("services_")
    assert len(tiles) <= 5
    edges = red.tile_window(window=window, needed={"caller", "service"}, bucket=bucket)
    assert [(lo, hi) for _, lo, hi in edges] == [(lo, hi) for _, lo, hi in tiles]
    assert all(level.name.startswith("edges_") for level, _, _ in edges)
    plans = red.tile_plans(window=window, needed={"env"}, bucket=bucket)
    assert [p[0][0].name.split("_")[0] for p in plans] == ["services", "edges", "requests"]
    assert red.tile_window(window=window, needed={"route"}, bucket=bucket)[0][0].name.startswith("requests_")
    assert red.tile_window(window=window, needed={"caller_principal"}, bucket=bucket) == []
    assert np.all([t[0].grain in ("minute", "hour", "day") for t in tiles])


@pytest.mark.parametrize("env", [None, "prod"])
def test_one_day_and_one_hour_per_service_from_the_services_rollup(conn, lake_rows, env: str | None) -> None:  # type: ignore[no-untyped-def]
    # one services_* tile per bucket: rows are read unsummed and merged in numpy; without an env
    # filter every service's prod and staging sketches merge (out of order), with one they do not
    _, frame = lake_rows
    rows = frame if env is None else frame.filter(pl.col("env") == env)
    for window in (Window(DAY1, DAY1 + timedelta(days=1)), Window(DAY1 + timedelta(hours=5), DAY1 + timedelta(hours=6))):
        assert red.tile_window(window=window, needed={"service"}, bucket=None)[0][0].name.startswith("services_")
        result = red.red(conn, window=window, by=["service"], env=env, settings=SKETCH)
        assert set(result["percentile_source"]) == {"sketch"}
        assert sorted(result["service"]) == sorted(_in(rows, window)["service"].unique())
        for row in result.iter_rows(named=True):
            _check_row(row, _in(rows, window).filter(pl.col("service") == row["service"]),
                       seconds=window.seconds, exact=False)


def test_minute_series_percentiles_from_the_services_rollup(conn, lake_rows) -> None:  # type: ignore[no-untyped-def]
    _, frame = lake_rows
    window = Window(DAY1 + timedelta(hours=2), DAY1 + timedelta(hours=4))
    series = red.minute_series(conn, window=window, service="PaymentService", settings=SKETCH)
    rows = _in(frame, window).filter(pl.col("service") == "PaymentService").with_columns(
        pl.col("ts").dt.truncate("1m").alias("minute"))
    assert series.height == rows["minute"].n_unique() and series["minute"].is_sorted()
    for row in series.iter_rows(named=True):
        durations = rows.filter(pl.col("minute") == row["minute"])["duration_ms"].drop_nulls().to_numpy()
        assert row["n"] == durations.size
        for col, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
            truth = nearest_rank(durations, q)
            if truth is None:
                assert row[col] is None
            else:
                assert abs(row[col] - truth) <= 0.01 * truth * (1 + 1e-9), col


def test_a_family_never_built_hands_over_to_the_next(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    frame = metrics_lake.build(lake, rows=800)
    rollup.rebuild(lake)
    window = Window(DAY1, DAY1 + timedelta(days=1))
    before = red.red(catalog.connect(lake), window=window, by=["service"], settings=SKETCH)
    for name in ("services_1m", "services_1h", "services_1d"):
        shutil.rmtree(lake.table_dir(f"rollups/{name}"))
    after = red.red(catalog.connect(lake), window=window, by=["service"], settings=SKETCH)
    assert set(after["percentile_source"]) == {"sketch"}
    exact_cols = ["service", "requests", "errors_5xx", "client_errors_4xx", "n", "bytes_in", "bytes_out",
                  "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms"]
    assert after.select(exact_cols).equals(before.select(exact_cols))
    assert np.allclose(after["mean_ms"].to_numpy(), before["mean_ms"].to_numpy())  # float sums, other order
    assert after["requests"].sum() == _in(frame, window).height


@hsettings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), groups=st.integers(1, 6), size=st.integers(1, 400))
def test_merge_sketches_equals_merging_each_groups_sketch(seed: int, groups: int, size: int) -> None:
    rng = np.random.default_rng(seed)
    keys = rng.integers(-5, 40, size=size).astype(np.int16)
    counts = rng.integers(0, 5, size=size)
    rows = pl.DataFrame({
        "g": rng.integers(0, groups, size=size), "k": keys, "r": counts + 1, "e5": counts, "e4": counts,
        "bi": counts, "bo": counts, "c": counts, "ds": counts * 1.5, "dm": rng.random(size) * 100,
    }).with_columns(pl.when(pl.col("k") == -5).then(None).otherwise(pl.col("k")).alias("k"),
                    pl.when(pl.col("k") == -5).then(0).otherwise(pl.col("c")).alias("c"))
    merged = red.merge_sketches(rows, group=["g"])
    assert sorted(merged["g"].to_list()) == sorted(rows["g"].unique().to_list())  # one row per group
    for row in merged.iter_rows(named=True):
        part = rows.filter(pl.col("g") == row["g"]).drop_nulls("k")
        whole = rollup_sketch(part["k"].to_list(), part["c"].to_list())
        assert row["n"] == whole.count and row["requests"] == rows.filter(pl.col("g") == row["g"])["r"].sum()
        for col, q in QUANTILES.items():
            assert row[col] == whole.quantile(q), col


def rollup_sketch(keys: list[int], counts: list[int]) -> LatencySketch:
    """The sketch that rollup rows (bucket key, count) stand for."""
    return LatencySketch.from_lists(keys, counts)
