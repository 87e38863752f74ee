"""Overview: network RED, the worst services and edges, open incidents and live canaries."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, jobs, widgets
from dashboard.state import Ctx

RED_TABLE = ("requests", "errors_5xx", "error_ratio", "client_errors_4xx", "p99_ms")
COUNT_TABLE = ("requests", "errors_5xx", "error_ratio", "client_errors_4xx")
"""Edges without p99: per-edge latency (a sketch merge over every edge) is on the Service graph."""


def render(ctx: Ctx) -> None:
    """Draw the page."""
    st.header("Overview")
    total = data.red(ctx.data, ctx.start, ctx.end, env=ctx.env)
    widgets.red_metrics(widgets.first_row(total))
    series = data.counts(ctx.data, ctx.start, ctx.end, env=ctx.env, bucket=bucket_for(ctx))
    if series.height:
        left, right = st.columns(2)
        left.plotly_chart(charts.timeseries(series, y="requests", title="Requests"), key="ov_req")
        right.plotly_chart(charts.timeseries(series, y="error_ratio", title="5xx ratio",
                                             y_format=".1%"), key="ov_err")
    _worst(ctx)
    _incidents_and_canaries(ctx)


def bucket_for(ctx: Ctx) -> str:
    """Chart resolution for the window: minutes up to 2 h, hours up to 2 days, then days."""
    hours = ctx.window.seconds / 3600
    return "minute" if hours <= 2 else "5m" if hours <= 12 else "hour" if hours <= 48 else "day"


def _worst(ctx: Ctx) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Top failing services")
        services = data.red(ctx.data, ctx.start, ctx.end, by=("service",), env=ctx.env)
        widgets.table(widgets.top(services, "errors_5xx"), columns=("service", *RED_TABLE),
                      key="ov_services")
    with right:
        st.subheader("Top failing edges")
        edges = data.counts(ctx.data, ctx.start, ctx.end, by=("caller", "service"), env=ctx.env)
        widgets.table(widgets.top(edges, "errors_5xx"), columns=("caller", "service", *COUNT_TABLE),
                      key="ov_edges")
        st.caption("Latency per edge: Service graph page.")


def _incidents_and_canaries(ctx: Ctx) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Incidents")
        _incidents(ctx)
    with right:
        st.subheader("Canaries")
        _canaries(ctx)


def _incidents(ctx: Ctx) -> None:
    """Anomaly detection is the slowest call: it runs in the background (dashboard.jobs)."""
    frame = jobs.result_or_placeholder("incidents", ctx, key="ov_incidents", what="Anomaly detection")
    if frame is not jobs.PENDING:
        widgets.table(frame, columns=data.INCIDENT_COLUMNS, key="ov_incidents",
                      empty="No incident in this window.")


def _canaries(ctx: Ctx) -> None:
    verdicts = jobs.result_or_placeholder("canaries", ctx, key="ov_canaries", what="Canary judge")
    if verdicts is not jobs.PENDING:
        widgets.table(data.canary_frame(verdicts), columns=data.CANARY_COLUMNS, key="ov_canaries",
                      empty="No service has two versions taking traffic.")
