"""Canary: baseline vs canary over time, the verdict with its evidence, recommended weights."""

from __future__ import annotations

from typing import Any

import polars as pl
import streamlit as st

from dashboard import charts, data, jobs, widgets
from dashboard.state import Ctx
from dashboard.views.overview import bucket_for

VERDICT_COLOR = {"rollback": "red", "promote": "green", "continue": "blue"}


def render(ctx: Ctx) -> None:
    """Draw the page."""
    st.header("Canary")
    verdicts = jobs.result_or_placeholder("canaries", ctx, key="canary_list", what="Canary judge")
    if verdicts is jobs.PENDING:
        return
    if not verdicts:
        st.info("No service has two versions taking traffic at the same time in this window.")
        return
    widgets.table(data.canary_frame(verdicts), columns=data.CANARY_COLUMNS, key="canary_list")
    labels = [_label(v) for v in verdicts]
    default = next((i for i, v in enumerate(verdicts) if v["service"] == ctx.service), 0)
    chosen = st.selectbox("Canary", range(len(verdicts)), index=default, format_func=labels.__getitem__,
                          key="canary_pick")
    _detail(ctx, verdicts[chosen])


def _label(verdict: dict[str, Any]) -> str:
    return (f"{verdict['service']} ({verdict.get('env') or 'all envs'}): {verdict['canary']} vs "
            f"{verdict['baseline']}: {verdict['verdict']}")


def _detail(ctx: Ctx, verdict: dict[str, Any]) -> None:
    color = VERDICT_COLOR.get(verdict["verdict"], "gray")
    with st.container(border=True):
        st.markdown(f"### :{color}-badge[{verdict['verdict'].replace('_', ' ')}] {verdict['service']}")
        st.markdown(verdict.get("evidence") or "")
    facts = st.columns(3)
    facts[0].metric("Baseline", verdict["baseline"])
    facts[1].metric("Canary", verdict["canary"])
    facts[2].metric("Decidable since", verdict.get("decided_at") or "not yet")
    st.markdown(f"**Recommended next weights:** {data.weights_text(verdict.get('next_weights')) or '–'}")
    traffic = verdict.get("traffic") or {}
    if traffic:
        st.caption("Traffic check: " + ", ".join(f"{k}: {v}" for k, v in traffic.items()))
    series = data.red(ctx.data, ctx.start, ctx.end, by=("version",), service=verdict["service"],
                      env=verdict.get("env") or ctx.env, bucket=bucket_for(ctx))
    if series.height:
        left, right = st.columns(2)
        left.plotly_chart(charts.timeseries(series, y="error_ratio", color="version", y_format=".1%",
                                            title="5xx ratio by version"), key="can_err")
        right.plotly_chart(charts.timeseries(series, y="p99_ms", color="version",
                                             title="p99 (ms) by version"), key="can_p99")
    for title, rows, key in (("Overall", verdict.get("overall"), "can_overall"),
                             ("Per route", verdict.get("routes"), "can_routes")):
        if rows:
            st.subheader(title)
            widgets.table(pl.DataFrame(rows, infer_schema_length=None), key=key)
