"""The anomaly detector's one-scan reader: per-service and per-edge minute rows from the rollup or raw rows."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from analytics import anomalies
from meshlens.catalog import connect
from meshlens.timewin import Window
from tests.analysis_support import START, Plan, draw, raw_and_rolled

PLAN = Plan(hours=2, seed=31, rate_per_min=30)


@pytest.fixture(scope="module")
def lakes(tmp_path_factory):
    """The same requests twice: raw rows only, and with the rollups built."""
    root = tmp_path_factory.mktemp("reader")
    raw, rolled = raw_and_rolled(root, PLAN)
    return raw, rolled


def _named(minutes: pl.DataFrame, series: pl.DataFrame) -> pl.DataFrame:
    return minutes.join(series, on="series_id").drop("series_id").sort("sid", "minute")


def _nearest_rank(values: np.ndarray, q: float) -> float:
    ordered = np.sort(values)
    return float(ordered[max(1, math.ceil(q * len(ordered))) - 1])


def test_raw_rows_give_exact_counts_and_sketch_percentiles(lakes):
    raw, _ = lakes
    window = Window(START, START + timedelta(hours=2))
    got = _named(*anomalies.load_minutes(connect(raw), window=window))
    table = pl.from_arrow(draw(PLAN)).with_columns(pl.col("ts").dt.truncate("1m").alias("minute"))
    service, minute = "OrderService", START + timedelta(minutes=37)
    rows = table.filter((pl.col("service") == service) & (pl.col("minute") == minute))
    row = got.filter((pl.col("sid") == service) & (pl.col("minute") == minute)).row(0, named=True)
    assert row["kind"] == "service" and row["requests"] == rows.height
    assert row["errors_5xx"] == rows.filter(pl.col("status") >= 500).height
    durations = rows.get_column("duration_ms").to_numpy()
    for col, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
        assert row[col] == pytest.approx(_nearest_rank(durations, q), rel=0.011)
    edge = got.filter((pl.col("kind") == "edge") & (pl.col("service") == service))
    assert set(edge.get_column("sid").unique()) == {f"{PLAN.callers[service]} -> {service}"}
    assert edge.get_column("requests").sum() == table.filter(pl.col("service") == service).height


def test_rollup_and_raw_rows_read_the_same_minutes(lakes):
    raw, rolled = lakes
    window = Window(START + timedelta(minutes=10), START + timedelta(minutes=100))
    assert anomalies._rollup_dates(connect(rolled), window) == [START.date().isoformat()]
    a = _named(*anomalies.load_minutes(connect(raw), window=window))
    b = _named(*anomalies.load_minutes(connect(rolled), window=window))
    assert a.height > 0 and a.equals(b.select(a.columns))


def test_a_window_ending_inside_a_minute_reads_that_minute_from_raw_rows(lakes):
    raw, rolled = lakes
    end = START + timedelta(minutes=50, seconds=30)
    window = Window(START + timedelta(minutes=45), end)
    table = pl.from_arrow(draw(PLAN)).filter((pl.col("ts") >= START + timedelta(minutes=50)) & (pl.col("ts") < end))
    for lake in (raw, rolled):
        got = _named(*anomalies.load_minutes(connect(lake), window=window))
        last = got.filter((pl.col("kind") == "service") & (pl.col("minute") == START + timedelta(minutes=50)))
        assert last.get_column("requests").sum() == table.height


def test_service_filter_keeps_the_service_and_the_edges_into_it(lakes):
    _, rolled = lakes
    window = Window(START, START + timedelta(hours=1))
    got = _named(*anomalies.load_minutes(connect(rolled), window=window, service="PaymentService"))
    assert set(got.get_column("service").unique()) == {"PaymentService"}
    assert set(got.get_column("kind").unique()) == {"service", "edge"}
