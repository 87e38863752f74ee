"""Canary: baseline vs canary over time, the verdict with its evidence, recommended weights."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, widgets
from dashboard.state import Ctx
from dashboard.views.overview import bucket_for

VERDICT_ICON = {"promote": ":material/check_circle:", "continue": ":material/hourglass_top:",
                "rollback": ":material/undo:", "insufficient data": ":material/help:"}


def render(ctx: Ctx) -> None:
    """Draw the page."""
    st.header("Canary")
    verdicts = data.canaries(ctx.data, ctx.start, ctx.end, env=ctx.env)
    if verdicts is None or verdicts.height == 0:
        st.info("No service has two versions taking traffic in this window.")
        return
    widgets.table(verdicts, columns=data.CANARY_COLUMNS, key="canary_list")
    services = verdicts["service"].unique(maintain_order=True).to_list()
    default = services.index(ctx.service) if ctx.service in services else 0
    service = st.selectbox("Canary of", services, index=default, key="canary_service")
    _detail(ctx, service)


def _detail(ctx: Ctx, service: str) -> None:
    verdict = data.canary_verdict(ctx.data, service, ctx.start, ctx.end, env=ctx.env)
    icon = VERDICT_ICON.get(str(verdict.get("verdict")), "")
    st.subheader(f"{icon} {service}: {verdict.get('verdict', '?')}")
    if verdict.get("evidence"):
        st.markdown(verdict["evidence"])
    facts = st.columns(4)
    facts[0].metric("Baseline", str(verdict.get("baseline", "–")))
    facts[1].metric("Canary", str(verdict.get("canary", "–")))
    facts[2].metric("Decidable since", str(verdict.get("decided_at") or "not yet"))
    facts[3].metric("Recommended weights", str(verdict.get("weights") or "–"))
    if verdict.get("traffic_check"):
        st.caption(str(verdict["traffic_check"]))
    series = data.red(ctx.data, ctx.start, ctx.end, by=("version",), service=service,
                      env=ctx.env, bucket=bucket_for(ctx))
    if series.height:
        left, right = st.columns(2)
        left.plotly_chart(charts.timeseries(series, y="error_ratio", color="version",
                                            y_format=".1%", title="5xx ratio by version"), key="can_err")
        right.plotly_chart(charts.timeseries(series, y="p99_ms", color="version",
                                             title="p99 (ms) by version"), key="can_p99")
    if verdict.get("routes") is not None:
        st.subheader("Per route")
        widgets.table(verdict["routes"], key="canary_routes")
