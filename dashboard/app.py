"""The meshlens dashboard (Streamlit entry point).

Run with ``meshlens dashboard [--data DIR]`` or ``streamlit run dashboard/app.py -- --data DIR``;
the lake is ``--data``, else ``$MESHLENS_DATA``, else ``./meshlens-data``. The sidebar holds the
page, the time range, the env filter and the service, all carried in the URL; each page is one
module of ``dashboard.views`` with a ``render(ctx)`` function.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

import streamlit as st

from analytics import findings
from dashboard import data, jobs, serve, state
from meshlens import settings as settings_mod
from meshlens.errors import MeshlensError
from meshlens.lake import now_utc
from meshlens.timewin import iso

VIEWS = state.VIEW_MODULES


def lake_path(argv: list[str]) -> str:
    """The lake directory: ``--data`` after ``--`` on the streamlit command line, else settings."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--data", default=None)
    known, _ = parser.parse_known_args(argv)
    return str(settings_mod.from_environment(data=known.data)["data"])


def _optional(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Sidebar lists degrade to empty when the feature is missing or the lake is empty."""
    try:
        return fn(*args, **kwargs)
    except (data.Unavailable, MeshlensError):
        return None


def sidebar(lake: str) -> state.Ctx:
    """Draw the sidebar and return the page context."""
    st.sidebar.title("meshlens")
    state.page_selector()
    anchor = findings.anchor(_optional(data.latest_ts, lake), now=now_utc())
    range_key, window = state.range_selector(anchor=anchor)
    envs = _optional(data.counts, lake, window.start, window.end, by=("env",))
    env = state.env_selector(_column(envs, "env"))
    services = _optional(data.red, lake, window.start, window.end, by=("service",), env=env)
    service = state.service_selector(_column(services, "service"))
    st.sidebar.caption(f"Window [{iso(window.start)}, {iso(window.end)}) UTC  \nLake: `{lake}`")
    return state.Ctx(data=lake, window=window, env=env, service=service, range_key=range_key, anchor=anchor)


def _column(frame, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    if frame is None or name not in frame.columns:
        return []
    return sorted(v for v in frame[name].to_list() if v)


def render_page(page: str, ctx: state.Ctx) -> None:
    """Render one page; user errors and missing features become a message, not a traceback."""
    module = importlib.import_module(f"dashboard.views.{VIEWS[page]}")
    try:
        module.render(ctx)
    except data.Unavailable as exc:
        st.info(f"Not available in this build: {exc}.")
    except MeshlensError as exc:
        st.error(str(exc))


def auto_refresh(lake: str, seconds: int | None) -> None:
    """Every ``seconds``, look for new data in the lake and rerun the whole app when there is."""
    if not seconds:
        return
    st.session_state["_last_full_run"] = time.monotonic()

    @st.fragment(run_every=seconds)
    def _tick() -> None:
        # Rerun the page only when new data arrived (sync clears the caches then).
        if time.monotonic() - st.session_state.get("_last_full_run", 0.0) >= seconds and data.sync(lake):
            st.rerun(scope="app")

    _tick()


def main() -> None:
    """The whole app, one run."""
    serve.skip_repl_check()
    st.set_page_config(page_title="meshlens", page_icon=":material/hub:", layout="wide")
    state.apply_pending_navigation()
    started = time.perf_counter()
    lake = lake_path(sys.argv[1:])
    data.sync(lake)
    try:
        ctx = sidebar(lake)
    except MeshlensError as exc:
        st.error(str(exc))
        return
    page = st.session_state.get("page") or state.PAGES[0]
    seconds = state.refresh_selector()
    render_page(page, ctx)
    jobs.prewarm(lake)  # after the page: its first visit does not share the CPU with the warming
    st.caption(f"Rendered in {(time.perf_counter() - started) * 1000:.0f} ms. Times are UTC; "
               "windows are half-open; errors mean 5xx (4xx are client errors).")
    if st.query_params.get("timings"):
        show_timings()
    auto_refresh(lake, seconds)


def show_timings() -> None:
    """The latest uncached analytics calls of this process (for measuring page speed)."""
    with st.expander("Timings of uncached analytics calls", expanded=True):
        st.table({"call": [n for n, _ in data.TIMINGS], "ms": [f"{s * 1000:.0f}" for _, s in data.TIMINGS]})


main()
