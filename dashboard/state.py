"""What every page shares: the page, the time range, the env filter and the service, in the URL.

The sidebar widgets are bound to query parameters (``?page=Service&service=PaymentService&
range=24h&env=prod``), so every view is a deep link. Time ranges end at the *anchor*: the
present, or the newest data in the lake when the lake is older than that (so that the demo
lake shows its data). Windows are UTC and half-open, as everywhere in meshlens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import streamlit as st

from analytics import findings
from meshlens.errors import ConfigError
from meshlens.timewin import Window, iso, parse_duration, parse_instant

PAGES = (
    "Overview", "Service graph", "Service", "Canary", "Anomalies",
    "Security", "Ask", "SQL", "Reports", "Cost",
)
VIEW_MODULES = {
    "Overview": "overview", "Service graph": "graph", "Service": "service", "Canary": "canary",
    "Anomalies": "anomalies", "Security": "security", "Ask": "ask", "SQL": "sql",
    "Reports": "reports", "Cost": "cost",
}
"""Each page's module in dashboard.views."""
RANGES = ("15m", "1h", "6h", "24h", "2d", "7d", "custom")
DEFAULT_RANGE = findings.DASHBOARD_RANGE
"""The range a first visit shows: the window the CLI stores incidents and verdicts for."""
ALL_ENVS = "all"
REFRESH_SECONDS = (15, 30, 60, 300)
_GOTO = "_goto"


@dataclass(frozen=True)
class Ctx:
    """The state a page renders from."""

    data: str
    window: Window
    env: str | None
    service: str | None
    range_key: str
    anchor: datetime

    @property
    def start(self) -> datetime:
        return self.window.start

    @property
    def end(self) -> datetime:
        return self.window.end


def go(page: str, *, service: str | None = None) -> None:
    """Switch page (and service) on the next run; widgets cannot change after they are drawn."""
    target = {"page": page}
    if service is not None:
        target["service"] = service
    st.session_state[_GOTO] = target
    st.rerun()


def apply_pending_navigation() -> None:
    """Apply a ``go()`` from the previous run before any widget is drawn."""
    target = st.session_state.pop(_GOTO, None)
    if target:
        st.session_state.update(target)


def window_for(range_key: str, *, anchor: datetime, since: str = "", until: str = "") -> Window:
    """The window of a preset range ending at ``anchor``, or of a custom since/until pair."""
    if range_key == "custom":
        end = parse_instant(until, now=anchor) if until.strip() else anchor
        start = parse_instant(since, now=anchor) if since.strip() else end - timedelta(hours=24)
        if start >= end:
            raise ConfigError(f"empty window: start {iso(start)} is not before end {iso(end)}")
        return Window(start, end)
    return Window(anchor - parse_duration(range_key), anchor)


def page_selector() -> str:
    """The page radio in the sidebar (bound to ``?page=``)."""
    return st.sidebar.radio("Page", PAGES, key="page", bind="query-params", label_visibility="collapsed")


def range_selector(*, anchor: datetime) -> tuple[str, Window]:
    """The time-range picker (bound to ``?range=``, ``?since=``, ``?until=``)."""
    key = st.sidebar.selectbox(
        "Time range", RANGES, index=RANGES.index(DEFAULT_RANGE), key="range", bind="query-params",
        help=f"Ends at {iso(anchor)} (now, or the newest data when the lake is older). UTC.",
    )
    since = until = ""
    if key == "custom":
        since = st.sidebar.text_input("Since (UTC)", key="since", bind="query-params",
                                      placeholder="2026-11-10T09:00:00Z or 6h")
        until = st.sidebar.text_input("Until (UTC, exclusive)", key="until", bind="query-params",
                                      placeholder="empty: the anchor")
    return key, window_for(key, anchor=anchor, since=since, until=until)


def env_selector(envs: list[str]) -> str | None:
    """The env filter (bound to ``?env=``); None means every env."""
    choice = st.sidebar.selectbox("Environment", [ALL_ENVS, *envs], key="env", bind="query-params")
    return None if choice in (None, ALL_ENVS) else choice


def service_selector(services: list[str]) -> str | None:
    """The service picker (bound to ``?service=``); None means no service chosen."""
    # Keep a service named in the URL or chosen before even when this window has no traffic.
    for chosen in (st.query_params.get("service"), st.session_state.get("service")):
        if chosen and chosen not in services:
            services = sorted([*services, chosen])
    return st.sidebar.selectbox(
        "Service", services, index=None, key="service", bind="query-params",
        placeholder="choose a service", persist_state="session",
    )


def refresh_selector() -> int | None:
    """Optional auto-refresh: seconds between reruns, or None."""
    if not st.sidebar.toggle("Auto-refresh", key="refresh", bind="query-params"):
        return None
    return st.sidebar.selectbox("Every (seconds)", REFRESH_SECONDS, index=1, key="refresh_every")
