"""Every dashboard page in Streamlit's AppTest on the demo scenario: no exception, right numbers.

Expected numbers come from the scenario's ground truth (the requests the generator wrote),
never from the lake.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest

from dashboard.state import PAGES
from tests.dashboard_support import run_page

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def day(scenario: Any) -> Iterator[tuple[Any, Any, dict[str, str]]]:
    """(lake, truth, query params of the scenario's whole day), with $MESHLENS_DATA set."""
    lake, truth = scenario
    patch = pytest.MonkeyPatch()
    patch.setenv("MESHLENS_DATA", str(lake.root))
    params = {"range": "custom", "since": truth.start, "until": truth.end}
    yield lake, truth, params
    patch.undo()


def metric(at: Any, label: str) -> str:
    """The value of the st.metric tile called ``label``."""
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r} in {[m.label for m in at.metric]}"
    return values[0]


def assert_clean(at: Any) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any("Rendered in" in c.value for c in at.caption)


def frames(at: Any) -> list[pl.DataFrame]:
    """Every st.dataframe shown, as polars frames."""
    return [pl.from_pandas(d.value) for d in at.dataframe]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(day: Any, page: str) -> None:
    _, _, params = day
    at = run_page(page, service="PaymentService", **params)
    assert_clean(at)
    assert at.session_state["page"] == page


def test_overview_shows_the_days_totals(day: Any) -> None:
    _, truth, params = day
    requests = truth.requests_frame()
    at = run_page("Overview", **params)
    assert_clean(at)
    assert metric(at, "Requests") == f"{requests.height:,}"
    assert metric(at, "5xx errors") == f"{requests.filter(pl.col('status') >= 500).height:,}"
    client = requests.filter((pl.col("status") >= 400) & (pl.col("status") < 500)).height
    assert metric(at, "4xx (client)") == f"{client:,}"


def test_overview_ranks_the_service_with_most_5xx_first(day: Any) -> None:
    _, truth, params = day
    errors = (truth.requests_frame().filter(pl.col("status") >= 500)
              .group_by("service").len().sort("len", descending=True))
    at = run_page("Overview", **params)
    services = next(f for f in frames(at) if "service" in f.columns and "caller" not in f.columns)
    assert services["service"][0] == errors["service"][0]
    assert services["errors_5xx"][0] == errors["len"][0]


def test_env_filter_applies(day: Any) -> None:
    _, truth, params = day
    staging = truth.requests_frame().filter(pl.col("env") == "staging").height
    at = run_page("Overview", env="staging", **params)
    assert_clean(at)
    assert metric(at, "Requests") == f"{staging:,}"


def test_service_page_by_version(day: Any) -> None:
    _, truth, params = day
    payment = truth.requests_frame().filter(pl.col("service") == "PaymentService")
    at = run_page("Service", service="PaymentService", **params)
    assert_clean(at)
    assert metric(at, "Requests") == f"{payment.height:,}"
    versions = next(f for f in frames(at) if "version" in f.columns and "route" not in f.columns)
    # Requests denied before a target group was chosen have no version (truth: 'unknown').
    expected = dict(payment.filter(pl.col("version").is_in(["v1", "v2"])).group_by("version").len().iter_rows())
    shown = dict(zip(versions["version"], versions["requests"]))
    assert {v: shown.get(v) for v in expected} == expected


def test_service_page_without_service_lists_services(day: Any) -> None:
    _, truth, params = day
    at = run_page("Service", **params)
    assert_clean(at)
    listed = set(frames(at)[0]["service"])
    assert listed == set(truth.requests_frame()["service"].unique())


def test_sql_page_runs_through_the_guard(day: Any) -> None:
    _, truth, params = day
    at = run_page("SQL", **params)
    at.text_area(key="sql_text").set_value("SELECT count(*) AS n FROM requests")
    at.button[0].click().run()
    assert_clean(at)
    assert frames(at)[0]["n"][0] == truth.requests_frame().height
    at.text_area(key="sql_text").set_value("DROP VIEW requests")
    at.button[0].click().run()
    assert at.error and "SELECT" in at.error[0].value
