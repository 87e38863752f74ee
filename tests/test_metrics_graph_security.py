"""Service graph, security view, allowed-caller policy and cost, against the synthetic rows."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from analytics import cost, graph, rollup, security
from analytics.policy import load_policy, parse_policy
from analytics.services import resolve_service
from meshlens import catalog
from meshlens.errors import ConfigError, UnknownNameError
from meshlens.lake import Lake
from meshlens.settings import Settings
from meshlens.timewin import Window
from tests import metrics_lake

DAY1 = datetime(2026, 11, 10, tzinfo=timezone.utc)
WINDOW = Window(DAY1, DAY1 + timedelta(days=2))
POLICY = metrics_lake.POLICY_TOML


@pytest.fixture(scope="module")
def lake_rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, pl.DataFrame]:
    lake = Lake(tmp_path_factory.mktemp("graph") / "lake")
    frame = metrics_lake.build(lake, rows=3000)
    rollup.rebuild(lake)
    return lake, frame


@pytest.fixture()
def conn(lake_rows):  # type: ignore[no-untyped-def]
    return catalog.connect(lake_rows[0])


def test_graph_nodes_and_edges(conn, lake_rows) -> None:  # type: ignore[no-untyped-def]
    _, frame = lake_rows
    g = graph.service_graph(conn, window=WINDOW)
    expected = frame.group_by(["caller", "service"]).len()
    assert g.edges.height == expected.height
    joined = g.edges.join(expected, left_on=["caller", "callee"], right_on=["caller", "service"])
    assert (joined["requests"] == joined["len"]).all()
    assert set(g.edges["seen_in"]) == {"logs"}
    kinds = dict(zip(g.nodes["node"], g.nodes["kind"]))
    assert kinds["unknown"] == "unknown"
    assert kinds["PaymentService"] == "service" and kinds["OrderService"] == "service"
    # callers that never receive traffic are uninstrumented / external
    assert kinds["CheckoutService"] == "external" and kinds["OrdersReporting"] == "external"
    payment = g.nodes.filter(pl.col("node") == "PaymentService").row(0, named=True)
    assert payment["requests"] == frame.filter(pl.col("service") == "PaymentService").height


def test_callers_and_callees(conn, lake_rows) -> None:  # type: ignore[no-untyped-def]
    _, frame = lake_rows
    into = graph.callers(conn, "PaymentService", window=WINDOW)
    assert set(into["caller"]) == set(frame.filter(pl.col("service") == "PaymentService")["caller"])
    assert set(into["callee"]) == {"PaymentService"}
    out = graph.callees(conn, "OrderService", window=WINDOW)
    assert set(out["callee"]) == set(frame.filter(pl.col("caller") == "OrderService")["service"])
    assert out["requests"].sum() == frame.filter(pl.col("caller") == "OrderService").height


def test_mermaid_and_dot(conn) -> None:  # type: ignore[no-untyped-def]
    g = graph.service_graph(conn, window=WINDOW, env="prod")
    mermaid = graph.to_mermaid(g)
    assert mermaid.startswith("graph LR") and '["PaymentService"]' in mermaid and '{{"unknown"}}' in mermaid
    assert mermaid.count("-->") == g.edges.height
    dot = graph.to_dot(g)
    assert dot.startswith("digraph") and dot.count(" -> ") == g.edges.height and dot.rstrip().endswith("}")


def test_denied_unauthenticated_and_tls(conn, lake_rows) -> None:  # type: ignore[no-untyped-def]
    _, frame = lake_rows
    denied = security.denied(conn, window=WINDOW)
    truth = frame.filter((pl.col("status") == 403) & (pl.col("auth_denied_reason") != ""))
    assert denied["requests"].sum() == truth.height > 0
    assert set(denied["auth_denied_reason"]) == {"Service"}
    unauth = security.unauthenticated(conn, window=WINDOW, service="PaymentService")
    truth = frame.filter((pl.col("caller_principal") == "") & ~pl.col("mtls") & (pl.col("service") == "PaymentService"))
    assert unauth["requests"].sum() == truth.height > 0
    tls = security.tls_versions(conn, window=WINDOW)
    counts = dict(zip(tls["tls_version"], tls["requests"]))
    assert counts["none"] == frame.filter(pl.col("tls_version") == "").height
    assert counts["TLSv1.3"] == frame.filter(pl.col("tls_version") == "TLSv1.3").height


def test_policy_violations(conn, lake_rows) -> None:  # type: ignore[no-untyped-def]
    _, frame = lake_rows
    result = security.policy_violations(conn, parse_policy(POLICY), window=WINDOW)
    allowed = (
        ((pl.col("service") == "PaymentService") & (pl.col("env") == "prod")
         & ~pl.col("caller").is_in(["CheckoutService", "OrderService"]))
        | ((pl.col("service") == "CartService") & (pl.col("caller") != "OrderService"))
    )
    not_denied = ~((pl.col("status") == 403) & (pl.col("auth_denied_reason") != "")).fill_null(False)
    truth = frame.filter(allowed & not_denied).group_by(["service", "env", "caller"]).agg(
        pl.len().alias("n"), pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"))
    joined = result.join(truth, on=["service", "env", "caller"])
    assert joined.height == truth.height == result.height
    assert (joined["requests"] == joined["n"]).all()
    assert (joined["first_seen"] == joined["first"]).all() and (joined["last_seen"] == joined["last"]).all()
    assert "OrdersReporting" in set(result["caller"]) and "unknown" in set(result["caller"])


@pytest.mark.parametrize("text,message", [
    ("[[allow]]\nservice = 'A'\n", "'callers' must be a list"),
    ("[[allow]]\ncallers = ['B']\n", "'service' must be a non-empty string"),
    ("[[allow]]\nservice = 'A'\ncallers = ['B']\nenvs = 'prod'\n", "unknown key"),
    ("allow = 3\n", "array of tables"),
    ("[[allow]\n", "not valid TOML"),
    ("[deny]\nx = 1\n", "unknown table"),
])
def test_policy_errors_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_policy(text, source="p.toml")


def test_policy_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.toml")
    (tmp_path / "p.toml").write_text(POLICY)
    assert len(load_policy(tmp_path / "p.toml").rules) == 2


def test_cost_by_hand(conn, lake_rows) -> None:  # type: ignore[no-untyped-def]
    _, frame = lake_rows
    prices = Settings({"free_requests_per_service_hour": 20, "price_per_million_requests": 1000.0})
    result = cost.estimate(conn, prices, window=WINDOW)
    row = result.filter(pl.col("service") == "PaymentService").row(0, named=True)
    rows = frame.filter(pl.col("service") == "PaymentService")
    per_hour = rows.group_by(pl.col("ts").dt.truncate("1h")).len()["len"].to_list()
    billable = sum(max(0, n - 20) for n in per_hour)
    gb = (rows["bytes_in"].sum() + rows["bytes_out"].sum()) / 2**30
    expected = 48 * 0.025 + gb * 0.025 + billable / 1e6 * 1000.0
    assert row["billable_requests"] == billable and row["service_hours"] == 48
    assert math.isclose(row["cost_total"], expected, rel_tol=1e-9)


def test_resolve_service(conn) -> None:  # type: ignore[no-untyped-def]
    assert resolve_service(conn, "PaymentService") == "PaymentService"
    assert resolve_service(conn, "paymentservice") == "PaymentService"
    assert resolve_service(conn, "OrdersReporting") == "OrdersReporting"  # a caller only
    with pytest.raises(UnknownNameError, match="no service named PaymentServce; did you mean PaymentService"):
        resolve_service(conn, "PaymentServce")


def test_latest_ts_recent_errors_and_cost_total(conn, lake_rows) -> None:  # type: ignore[no-untyped-def]
    from analytics import red

    _, frame = lake_rows
    assert red.latest_ts(conn) == frame["ts"].max()
    errors = red.recent_errors(conn, "CartService", window=WINDOW, limit=5)
    truth = frame.filter((pl.col("service") == "CartService") & pl.col("status").is_between(500, 599)).sort("ts", descending=True)
    assert errors["ts"].to_list() == truth["ts"].head(5).to_list()
    estimate = cost.estimate(conn, Settings(), window=WINDOW)
    assert cost.total(estimate) == pytest.approx(estimate["cost_total"].sum())
