"""Metrics on the demo scenario, checked against its ground truth (computed without SQL).

The session ``scenario`` lake is read-only, so its raw partitions are copied into a private
lake that gets rollups; the truth's per-request table gives every expected number.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from analytics import graph, red, rollup, security
from analytics.policy import load_policy
from meshlens import catalog
from meshlens.lake import Lake
from meshlens.settings import Settings
from meshlens.timewin import Window
from tests.metrics_lake import nearest_rank

pytestmark = pytest.mark.slow
SKETCH = Settings({"exact_percentile_max_rows": 0})
S = datetime(2026, 11, 10, tzinfo=timezone.utc)
DAY = Window(S, S + timedelta(days=1))


@pytest.fixture(scope="module")
def world(scenario, tmp_path_factory):  # type: ignore[no-untyped-def]
    lake, truth = scenario
    mine = Lake(tmp_path_factory.mktemp("metrics-scenario") / "lake")
    shutil.copytree(lake.table_dir("requests"), mine.table_dir("requests"))
    rollup.rebuild(mine)
    return catalog.connect(mine), truth, lake.root.parent / "logs"


def _between(frame: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    return frame.filter((pl.col("ts") >= start) & (pl.col("ts") < end))


def test_per_service_day_matches_truth(world) -> None:  # type: ignore[no-untyped-def]
    conn, truth, _ = world
    rows = truth.requests_frame()
    result = red.red(conn, window=DAY, by=["service"], settings=SKETCH)
    assert result["requests"].sum() == rows.height == truth.total_requests
    by_service = {s: f for (s,), f in rows.partition_by("service", as_dict=True).items()}
    assert set(result["service"]) == set(by_service)
    for row in result.iter_rows(named=True):
        part = by_service[row["service"]]
        assert row["requests"] == part.height
        assert row["errors_5xx"] == part.filter(pl.col("status").is_between(500, 599)).height
        assert row["client_errors_4xx"] == part.filter(pl.col("status").is_between(400, 499)).height
        durations = part["duration_ms"].drop_nulls().to_numpy()
        truth_p95 = nearest_rank(durations, 0.95)
        assert abs(row["p95_ms"] - truth_p95) <= 0.01 * truth_p95 * (1 + 1e-9)
        assert row["max_ms"] == pytest.approx(durations.max())


def test_exact_and_sketch_agree_on_an_hour(world) -> None:  # type: ignore[no-untyped-def]
    conn, truth, _ = world
    hour = Window(S + timedelta(hours=14), S + timedelta(hours=15))
    exact = red.red(conn, window=hour, by=["service", "env"], settings=Settings({"exact_percentile_max_rows": 10**9}))
    sketch = red.red(conn, window=hour, by=["service", "env"], settings=SKETCH)
    assert set(exact["percentile_source"]) == {"exact"} and set(sketch["percentile_source"]) == {"sketch"}
    joined = exact.join(sketch, on=["service", "env"], suffix="_s")
    assert joined.height == exact.height == sketch.height
    assert (joined["requests"] == joined["requests_s"]).all()
    rel = ((joined["p99_ms"] - joined["p99_ms_s"]).abs() / joined["p99_ms"]).max()
    assert rel is not None and rel <= 0.01 + 1e-9
    rows = _between(truth.requests_frame(), hour.start, hour.end)
    inv = rows.filter((pl.col("service") == "InventoryService") & (pl.col("env") == "prod"))
    got = exact.filter((pl.col("service") == "InventoryService") & (pl.col("env") == "prod")).row(0, named=True)
    assert got["p50_ms"] == nearest_rank(inv["duration_ms"].to_numpy(), 0.5)


def test_canary_versions(world) -> None:  # type: ignore[no-untyped-def]
    conn, truth, _ = world
    event = truth.event("canary_regression")
    start, end = (datetime.fromisoformat(event[k].replace("Z", "+00:00")) for k in ("start", "end"))
    result = red.red(conn, window=Window(start, end), by=["version"], service="PaymentService", env="prod", settings=SKETCH)
    got = {r["version"]: r for r in result.iter_rows(named=True)}
    assert got["v1"]["requests"] == event["requests_v1"] and got["v2"]["requests"] == event["requests_v2"]
    assert got["v1"]["errors_5xx"] == event["errors_v1"] and got["v2"]["errors_5xx"] == event["errors_v2"]
    assert got["v2"]["error_ratio"] > 2 * got["v1"]["error_ratio"]


def test_outage_minutes(world) -> None:  # type: ignore[no-untyped-def]
    conn, truth, _ = world
    event = truth.event("outage")
    start = datetime.fromisoformat(event["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(event["end"].replace("Z", "+00:00"))
    series = red.minute_series(conn, window=Window(start, end), service="InventoryService", env="prod")
    assert series["requests"].sum() == event["requests"] and series["errors_5xx"].sum() == event["errors_5xx"]
    rows = _between(truth.requests_frame(), start, end).filter(
        (pl.col("service") == "InventoryService") & (pl.col("env") == "prod"))
    per_minute = rows.group_by(pl.col("ts").dt.truncate("1m").alias("minute")).agg(
        (pl.col("status") >= 500).sum().alias("e"))
    joined = series.join(per_minute, on="minute")
    assert joined.height == series.height and (joined["errors_5xx"] == joined["e"]).all()


def test_policy_violation_and_denied(world) -> None:  # type: ignore[no-untyped-def]
    conn, truth, logs = world
    violation = truth.event("policy_violation")
    result = security.policy_violations(conn, load_policy(logs / "policy.toml"), window=DAY)
    row = result.filter((pl.col("caller") == "OrdersReporting") & (pl.col("service") == "PaymentService")).row(0, named=True)
    assert row["requests"] == violation["requests"]
    assert row["first_seen"].strftime("%Y-%m-%dT%H:%M:%SZ") == violation["first"]
    assert row["last_seen"].strftime("%Y-%m-%dT%H:%M:%SZ") == violation["last"]
    denied_event = truth.event("denied")
    denied = security.denied(conn, window=DAY, service="PaymentService")
    assert denied["requests"].sum() == denied_event["requests"]
    assert set(denied["auth_denied_reason"]) == {"Service"}
    rows = truth.requests_frame().filter(
        (pl.col("service") == "PaymentService") & (pl.col("env") == "prod") & (pl.col("status") != 403)
        & ~pl.col("caller").is_in(["OrderService", "CheckoutService"]))
    expected = dict(rows.group_by("caller").len().iter_rows())
    got = dict(result.filter(pl.col("service") == "PaymentService").select("caller", "requests").iter_rows())
    assert got == expected


def test_graph_edges_match_truth(world) -> None:  # type: ignore[no-untyped-def]
    conn, truth, _ = world
    g = graph.service_graph(conn, window=DAY, env="prod")
    rows = truth.requests_frame().filter(pl.col("env") == "prod")
    expected = rows.group_by(["caller", "service"]).len()
    joined = g.edges.join(expected, left_on=["caller", "callee"], right_on=["caller", "service"])
    assert joined.height == expected.height == g.edges.height
    assert (joined["requests"] == joined["len"]).all()
    kinds = dict(zip(g.nodes["node"], g.nodes["kind"]))
    assert kinds["unknown"] == "unknown" and kinds["PaymentService"] == "service"
    edge = g.edges.filter((pl.col("caller") == "OrdersReporting") & (pl.col("callee") == "PaymentService"))
    assert edge.height == 1
    assert np.isclose(edge["error_ratio"][0], edge["errors_5xx"][0] / edge["requests"][0])
