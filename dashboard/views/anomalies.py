"""Anomalies: a timeline of incidents, each with the reason in words and numbers."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, widgets
from dashboard.state import Ctx


def render(ctx: Ctx) -> None:
    """Draw the page."""
    st.header("Anomalies")
    frame = data.incidents(ctx.data, ctx.start, ctx.end, env=ctx.env, service=ctx.service)
    if frame is None or frame.height == 0:
        st.success("No incident in this window.")
        return
    st.plotly_chart(charts.timeline(frame), key="anomaly_timeline")
    for row in frame.iter_rows(named=True):
        with st.container(border=True):
            st.markdown(f"**{row.get('start')} → {row.get('end')}** · {row.get('services') or ''}")
            st.write(row.get("reason") or "")
    with st.expander("All incidents as a table"):
        widgets.table(frame, columns=data.INCIDENT_COLUMNS, key="anomaly_table")
