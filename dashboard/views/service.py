"""Service: RED over time by version, route, caller and env; percentiles; callers and callees."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, state, widgets
from dashboard.state import Ctx
from dashboard.views.overview import bucket_for

RED_TABLE = ("requests", "rps", "errors_5xx", "error_ratio", "client_errors_4xx",
             "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "low_sample")


def render(ctx: Ctx) -> None:
    """Draw the page."""
    if not ctx.service:
        st.header("Service")
        _chooser(ctx)
        return
    st.header(ctx.service)
    total = data.red(ctx.data, ctx.start, ctx.end, service=ctx.service, env=ctx.env)
    widgets.red_metrics(widgets.first_row(total))
    sections = {
        "Over time": _over_time,
        "Versions": lambda c: _breakdown(c, "version"),
        "Routes": lambda c: _breakdown(c, "route"),
        "Callers": _callers,
        "Callees": _callees,
        "Envs": lambda c: _breakdown(c, "env"),
        "Errors": _errors,
    }
    # Only the open tab is computed (the tab is in the URL too: ?tab=Routes).
    tabs = st.tabs(list(sections), key="tab", on_change="rerun", bind="query-params")
    for tab, draw in zip(tabs, sections.values()):
        if tab.open:
            with tab:
                draw(ctx)


def _callers(ctx: Ctx) -> None:
    with widgets.optional("Callers"):
        widgets.table(data.callers(ctx.data, ctx.service, ctx.start, ctx.end, env=ctx.env),
                      key="svc_callers", empty="Nobody called it in this window.")


def _callees(ctx: Ctx) -> None:
    with widgets.optional("Callees"):
        widgets.table(data.callees(ctx.data, ctx.service, ctx.start, ctx.end, env=ctx.env),
                      key="svc_callees", empty="It called nobody in this window.")


def _chooser(ctx: Ctx) -> None:
    st.caption("Choose a service in the sidebar, or click one below or on the service graph.")
    frame = data.red(ctx.data, ctx.start, ctx.end, by=("service",), env=ctx.env)
    frame = widgets.top(frame, "requests", n=frame.height if frame is not None else 0)
    event = widgets.table(frame, columns=("service", *RED_TABLE), key="svc_choose",
                          on_select="rerun", selection_mode="single-row")
    rows = event.selection.rows if event else []
    if rows:
        state.go("Service", service=frame["service"][rows[0]])


def _over_time(ctx: Ctx) -> None:
    series = data.red(ctx.data, ctx.start, ctx.end, by=("version",), service=ctx.service,
                      env=ctx.env, bucket=bucket_for(ctx))
    if series.height == 0:
        st.caption("No requests in this window.")
        return
    left, right = st.columns(2)
    left.plotly_chart(charts.timeseries(series, y="requests", color="version",
                                        title="Requests by version"), key="svc_req")
    right.plotly_chart(charts.timeseries(series, y="error_ratio", color="version", y_format=".1%",
                                         title="5xx ratio by version"), key="svc_err")
    overall = data.red(ctx.data, ctx.start, ctx.end, service=ctx.service, env=ctx.env,
                       bucket=bucket_for(ctx))
    st.plotly_chart(charts.lines(overall, ys=("p50_ms", "p90_ms", "p95_ms", "p99_ms"),
                                 title="Latency percentiles (ms)"), key="svc_lat")


def _breakdown(ctx: Ctx, by: str) -> None:
    frame = data.red(ctx.data, ctx.start, ctx.end, by=(by,), service=ctx.service, env=ctx.env)
    widgets.table(widgets.top(frame, "requests", n=200), columns=(by, *RED_TABLE), key=f"svc_{by}")


def _errors(ctx: Ctx) -> None:
    by_status = data.red(ctx.data, ctx.start, ctx.end, by=("route", "version"),
                         service=ctx.service, env=ctx.env)
    st.subheader("Where the 5xx are")
    widgets.table(widgets.top(by_status, "errors_5xx", n=20),
                  columns=("route", "version", "requests", "errors_5xx", "error_ratio",
                           "client_errors_4xx"), key="svc_err_routes")
    st.subheader("Recent errors")
    with widgets.optional("Recent errors"):
        widgets.table(data.recent_errors(ctx.data, ctx.service, ctx.start, ctx.end, env=ctx.env),
                      key="svc_recent", empty="No 5xx in this window.")
