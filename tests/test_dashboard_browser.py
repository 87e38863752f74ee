"""The real dashboard in a real browser: `meshlens dashboard` on loopback, headless Chromium.

Opens every page and saves a screenshot of each to test-artifacts/screenshots/ (git-ignored,
for people to look at), asks "who calls PaymentService" in the Ask box, and clicks a service
on the graph. Skips cleanly when /usr/bin/chromium (Debian's package) or Playwright is absent;
it never downloads a browser.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import polars as pl
import pytest

from dashboard.state import PAGES
from tests.dashboard_support import (CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, dashboard_server, lake_copy,
                                     wait_analyses, wait_rendered)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser_page(scenario: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, Any]]:
    """(Playwright page, dashboard URL, truth) with the dashboard serving a copy of the scenario lake."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (install Debian's chromium package)")
    sync_api = pytest.importorskip("playwright.sync_api")
    lake, truth = scenario
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    policy = {"MESHLENS_POLICY": str(lake.root.parent / "logs" / "policy.toml")}
    served = lake_copy(lake, tmp_path_factory.mktemp("browser"))
    with dashboard_server(served, env=policy) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(240_000)
        try:
            yield page, url, truth
        finally:
            browser.close()


def _open(page: Any, url: str, name: str, **params: str) -> None:
    query = "&".join(f"{k}={quote(v)}" for k, v in {"page": name, **params}.items())
    page.goto(f"{url}/?{query}")
    wait_rendered(page, timeout_ms=240_000)
    wait_analyses(page, timeout_ms=240_000)


def _shot(page: Any, name: str) -> None:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    page.screenshot(path=str(SCREENSHOTS / f"{PAGES.index(name) + 1:02d}-{slug}.png"), full_page=True)


@pytest.mark.parametrize("name", PAGES)
def test_every_page_opens(browser_page: Any, name: str) -> None:
    page, url, _ = browser_page
    _open(page, url, name, service="PaymentService")
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.get_by_role("heading", name=name if name != "Service" else "PaymentService").first.is_visible() \
        or name in ("Reports",)
    _shot(page, name)


def test_ask_shows_the_sql_and_the_callers(browser_page: Any) -> None:
    page, url, truth = browser_page
    _open(page, url, "Ask")
    box = page.get_by_role("textbox", name="Question")
    box.fill("who calls PaymentService")
    box.press("Enter")
    page.locator('[data-testid="stCode"]').first.wait_for()
    wait_rendered(page)
    assert "SELECT" in page.locator('[data-testid="stCode"]').first.inner_text().upper()
    table = page.locator('[data-testid="stDataFrame"]').first
    table.wait_for()
    callers = set(truth.requests_frame().filter(pl.col("service") == "PaymentService")["caller"])
    for name in ("OrderService", "CheckoutService", "OrdersReporting"):
        assert name in callers
        assert page.get_by_text(name, exact=True).count() > 0 or name in _grid_text(page)
    page.screenshot(path=str(SCREENSHOTS / "07-ask-answered.png"), full_page=True)


def _grid_text(page: Any) -> str:
    """Text of the glide data grid (drawn on a canvas; its cells are mirrored for accessibility)."""
    return " ".join(page.locator('[data-testid="stDataFrame"] [role="gridcell"]').all_inner_texts())


def test_clicking_a_node_opens_its_service(browser_page: Any) -> None:
    page, url, _ = browser_page
    _open(page, url, "Service graph")
    # Plotly draws after Streamlit's "Rendered in" caption: wait for the node trace itself.
    page.wait_for_function("""() => Array.from(document.querySelectorAll('.js-plotly-plot'))
        .some(gd => (gd.data || []).some(t => t.name === 'services'))""")
    target = "PaymentService"
    point = page.evaluate(
        """(name) => {
            for (const gd of document.querySelectorAll('.js-plotly-plot')) {
                const i = (gd.data || []).findIndex(t => t.name === 'services');
                if (i < 0) continue;
                gd.scrollIntoView({block: 'center'});
                const trace = gd.data[i];
                const k = Array.from(trace.customdata).indexOf(name);
                const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
                const box = gd.getBoundingClientRect();
                return {x: box.left + xa._offset + xa.l2p(trace.x[k]),
                        y: box.top + ya._offset + ya.l2p(trace.y[k])};
            }
            return null;
        }""",
        target,
    )
    assert point, "the graph has a node trace"
    page.mouse.click(point["x"], point["y"])
    page.wait_for_url(re.compile(r"page=Service(&|$)"))
    wait_rendered(page)
    assert f"service={target}" in page.url
    assert page.get_by_role("heading", name=target).first.is_visible()
    page.screenshot(path=str(SCREENSHOTS / "02-service-graph-clicked.png"), full_page=True)
