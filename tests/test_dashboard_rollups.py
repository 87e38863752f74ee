"""The pages that read the identity rollup, on the demo scenario with every rollup built.

tests/test_dashboard_pages.py runs the pages on the freshly ingested scenario (no rollups: raw
rows answer); here the same day has its rollups, so Security, Cost and the Overview's edges and
chart come from them. Expected numbers come from the scenario's ground truth.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest

from analytics import rollup, rollup_identity
from meshlens import catalog
from meshlens.lake import Lake
from meshlens.timewin import Window
from tests.dashboard_support import run_page
from tests.test_dashboard_pages import assert_clean, frames, metric

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rolled(scenario: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    """(truth, query params of the whole day) on a copy of the scenario lake with its rollups."""
    lake, truth = scenario
    copy = Lake(tmp_path_factory.mktemp("rolled") / "lake")
    shutil.copytree(lake.root, copy.root)
    rollup.rebuild(copy)
    window = Window(truth.start_dt, truth.end_dt)
    assert rollup_identity.source_sql(catalog.connect(copy), window=window).origin == "rollup"
    patch = pytest.MonkeyPatch()
    patch.setenv("MESHLENS_DATA", str(copy.root))
    patch.setenv("MESHLENS_POLICY", str(lake.root.parent / "logs" / "policy.toml"))
    yield truth, {"range": "custom", "since": truth.start, "until": truth.end}
    patch.undo()


def test_security_page_from_the_rollup(rolled: Any) -> None:
    truth, params = rolled
    requests = truth.requests_frame()
    at = run_page("Security", service="PaymentService", **params)
    assert_clean(at)
    shown = frames(at)
    violations = next(f for f in shown if "allowed_callers" in f.columns)
    row = violations.filter((pl.col("caller") == "OrdersReporting") & (pl.col("service") == "PaymentService"))
    assert row["requests"].to_list() == [truth.event("policy_violation")["requests"]]
    event = truth.event("denied")
    denied = next(f for f in shown if "auth_denied_reason" in f.columns)
    assert denied.filter(pl.col("service") == event["service"])["requests"].sum() == event["requests"]
    principals = next(f for f in shown if "denied" in f.columns and "caller_principal" in f.columns)
    assert principals["requests"].sum() == requests.filter(pl.col("service") == "PaymentService").height
    by_caller = principals.group_by("caller").agg(pl.col("requests").sum())
    expected = requests.filter(pl.col("service") == "PaymentService").group_by("caller").len()
    assert dict(by_caller.iter_rows()) == dict(expected.iter_rows())
    row = principals.filter(pl.col("caller_principal") == event["principal"])
    assert row["denied"].sum() == event["requests"]


def test_cost_page_from_the_rollup(rolled: Any) -> None:
    truth, params = rolled
    bytes_per = (truth.requests_frame().group_by("service")
                 .agg((pl.col("bytes_in") + pl.col("bytes_out")).sum().alias("b")).sort("b", descending=True))
    top, top_bytes = bytes_per.row(0)
    at = run_page("Cost", **params)
    assert_clean(at)
    assert metric(at, f"Most expensive: {top}") == f"${24 * 0.025 + top_bytes / 2**30 * 0.025:,.2f}"


def test_overview_edges_from_the_rollup(rolled: Any) -> None:
    truth, params = rolled
    requests = truth.requests_frame()
    at = run_page("Overview", **params)
    assert_clean(at)
    assert metric(at, "Requests") == f"{requests.height:,}"
    edges = next(f for f in frames(at) if {"caller", "service", "errors_5xx"} <= set(f.columns)
                 and "p99_ms" not in f.columns)
    expected = requests.group_by(["caller", "service"]).agg(
        pl.len().alias("n"), (pl.col("status") >= 500).sum().alias("e5"))
    joined = edges.join(expected, on=["caller", "service"])
    assert joined.height == edges.height > 0
    assert (joined["errors_5xx"] == joined["e5"]).all() and (joined["requests"] == joined["n"]).all()
    hidden = expected.join(edges, on=["caller", "service"], how="anti")
    assert joined["e5"].min() >= hidden["e5"].max()  # the top failing edges, not any edges
