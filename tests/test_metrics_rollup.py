"""Rollups: equal to raw rows (counts exactly, sketches bucket by bucket), incremental updates."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analytics import rollup, sketch
from meshlens import catalog, schema
from meshlens.lake import Lake
from tests import metrics_lake

MEASURES = ["requests", "errors_5xx", "client_errors_4xx", "bytes_in", "bytes_out", "duration_count"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, pl.DataFrame]:
    lake = Lake(tmp_path_factory.mktemp("rollup") / "lake")
    frame = metrics_lake.build(lake)
    assert rollup.rebuild(lake) == list(metrics_lake.DATES)
    return lake, frame


def _expected(frame: pl.DataFrame, time_col: str, every: str, dims: tuple[str, ...]) -> pl.DataFrame:
    """Group totals computed with polars from the raw rows."""
    return (
        frame.with_columns(pl.col("ts").dt.truncate(every).alias(time_col), metrics_lake.status_class().alias("status_class"))
        .group_by([time_col, *dims])
        .agg(
            pl.len().alias("requests"),
            pl.col("status").is_between(500, 599).sum().alias("errors_5xx"),
            pl.col("status").is_between(400, 499).sum().alias("client_errors_4xx"),
            pl.col("bytes_in").sum(), pl.col("bytes_out").sum(),
            pl.col("duration_ms").count().alias("duration_count"),
            pl.col("duration_ms").max().alias("duration_max_ms"),
        )
    )


def _stored(lake: Lake, name: str, time_col: str, dims: tuple[str, ...]) -> pl.DataFrame:
    conn = catalog.connect(lake)
    return conn.sql(
        f"SELECT {time_col}, {', '.join(dims)}, {', '.join(f'sum({m})::BIGINT AS {m}' for m in MEASURES)}, "
        f"max(duration_max_ms) AS duration_max_ms FROM {name} GROUP BY ALL"
    ).pl()


@pytest.mark.parametrize("name", sorted(schema.ROLLUPS))
def test_every_rollup_sums_to_the_raw_rows_exactly(built: tuple[Lake, pl.DataFrame], name: str) -> None:
    lake, frame = built
    level = next(lv for lv in rollup.LEVELS if lv.name == name)
    every = {"minute": "1m", "hour": "1h", "day": "1d"}[level.grain]
    expected = _expected(frame, level.grain, every, level.dims)
    stored = _stored(lake, name, level.grain, level.dims)
    keys = [level.grain, *level.dims]
    joined = expected.join(stored, on=keys, how="full", nulls_equal=True, suffix="_rollup")
    assert joined.height == expected.height == stored.height
    for col in [*MEASURES, "duration_max_ms"]:
        assert joined[col].eq_missing(joined[f"{col}_rollup"]).all(), col


def test_minute_sketches_equal_the_sketch_of_each_groups_raw_durations(built: tuple[Lake, pl.DataFrame]) -> None:
    lake, frame = built
    dims = list(schema.ROLLUP_DIMS)
    raw = frame.filter(pl.col("duration_ms").is_not_null()).with_columns(
        pl.col("ts").dt.truncate("1m").alias("minute"), metrics_lake.status_class().alias("status_class"),
        pl.Series("lat_key", sketch.keys(frame.filter(pl.col("duration_ms").is_not_null())["duration_ms"].to_numpy())),
    ).group_by(["minute", *dims, "lat_key"]).agg(pl.len().alias("count"))
    stored = catalog.connect(lake).sql(
        f"SELECT minute, {', '.join(dims)}, lat_key, duration_count AS count FROM requests_1m "
        "WHERE lat_key IS NOT NULL").pl()
    keys = ["minute", *dims, "lat_key"]
    joined = raw.join(stored, on=keys, how="full", nulls_equal=True, suffix="_rollup")
    assert joined.height == raw.height == stored.height
    assert (joined["count"] == joined["count_rollup"]).all()


def test_update_rewrites_only_the_touched_dates(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    metrics_lake.build(lake, rows=800)
    rollup.rebuild(lake)
    first, second = (rollup.rollup_file(lake, "requests_1m", d) for d in metrics_lake.DATES)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (first, second)}
    assert rollup.update(lake, dates={"2026-11-11"}) == ["2026-11-11"]
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == before[first]
    assert second.stat().st_ino != before[second][0]
    leftovers = [p for p in lake.table_dir("rollups").rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_rebuild_drops_rollups_of_dates_without_raw_rows(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    frame = metrics_lake.build(lake, rows=800)
    rollup.rebuild(lake)
    shutil.rmtree(lake.table_dir("requests") / "date=2026-11-11")
    assert rollup.rebuild(lake) == ["2026-11-10"]
    conn = catalog.connect(lake)
    for name in schema.ROLLUPS:
        (total,) = conn.execute(f"SELECT coalesce(sum(requests), 0) FROM {name}").fetchall()[0]
        assert total == frame.filter(pl.col("ts").dt.day() == 10).height, name


def test_update_of_a_date_without_raw_rows_removes_it(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    metrics_lake.build(lake, rows=300)
    rollup.rebuild(lake)
    shutil.rmtree(lake.table_dir("requests") / "date=2026-11-10")
    rollup.update(lake, dates=["2026-11-10"])
    assert not rollup.rollup_file(lake, "edges_1h", "2026-11-10").exists()


def test_views_exist_on_an_empty_lake(tmp_path: Path) -> None:
    conn = catalog.connect(Lake(tmp_path / "empty"))
    for name, table_schema in schema.ROLLUPS.items():
        columns = [r[0] for r in conn.execute(f"DESCRIBE {name}").fetchall()]
        assert columns == [*table_schema.names, "date"]
    assert rollup.rebuild(Lake(tmp_path / "empty")) == []


def test_rollup_files_are_sorted_by_service(built: tuple[Lake, pl.DataFrame]) -> None:
    lake, _ = built
    services = pl.read_parquet(rollup.rollup_file(lake, "edges_1m", "2026-11-10"))["service"].to_list()
    assert services == sorted(services)
    assert np.isin(list(set(services)), ["PaymentService", "OrderService", "CartService"]).all()
