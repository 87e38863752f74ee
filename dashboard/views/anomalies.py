"""Anomalies: a timeline of incidents, each with the reason in words and numbers."""

from __future__ import annotations

import polars as pl
import streamlit as st

from dashboard import charts, data, jobs, widgets
from dashboard.state import Ctx


def render(ctx: Ctx) -> None:
    """Draw the page."""
    st.header("Anomalies")
    frame = jobs.result_or_placeholder("incidents", ctx, key="anomalies", what="Anomaly detection")
    if frame is jobs.PENDING:
        st.caption("Every service and edge is scored minute by minute; the page fills in when done.")
        return
    if ctx.service and st.toggle(f"Only incidents involving {ctx.service}", key="anomaly_only"):
        frame = frame.filter(pl.col("services").str.contains(ctx.service, literal=True))
    if frame.height == 0:
        st.success("No incident in this window.")
        return
    st.caption(f"{frame.height} incident(s). An incident is a run of anomalous minutes of related "
               "services and edges; the reason comes from the features that moved most.")
    st.plotly_chart(charts.timeline(frame, start=ctx.start, end=ctx.end), key="anomaly_timeline")
    for row in frame.iter_rows(named=True):
        with st.container(border=True):
            st.markdown(f"**{row['start']:%H:%M} → {row['end']:%H:%M} UTC** ({row['start']:%Y-%m-%d}) · "
                        f"{row['services']}" + (f" · {row['env']}" if row.get("env") else ""))
            for reason in (row.get("reason") or "").split("; "):
                st.markdown(f"- {reason}")
    with st.expander("All incidents as a table"):
        widgets.table(frame, columns=data.INCIDENT_COLUMNS, key="anomaly_table")
