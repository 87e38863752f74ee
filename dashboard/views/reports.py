"""Reports: what changed in the window, as `meshlens report` writes it, with downloads."""

from __future__ import annotations

import streamlit as st

from dashboard import data
from dashboard.state import Ctx


def render(ctx: Ctx) -> None:
    """Draw the page."""
    st.header("Reports")
    st.caption(f"What `meshlens report --since {ctx.start:%Y-%m-%dT%H:%MZ} --until {ctx.end:%Y-%m-%dT%H:%MZ}` "
               "writes: incidents with their reasons, canary verdicts, the worst services and edges, "
               "new and vanished edges, policy violations. Building it scores anomalies and judges "
               "canaries, so it runs when asked.")
    if "report_for" not in st.session_state or st.session_state["report_for"] != (ctx.start, ctx.end):
        if not st.button("Build the report for this window", type="primary", key="report_build"):
            return
        st.session_state["report_for"] = (ctx.start, ctx.end)
    with st.spinner("Building the report..."):
        markdown = data.report_markdown(ctx.data, ctx.start, ctx.end)
    left, right = st.columns(2)
    left.download_button("Download Markdown", markdown, file_name="meshlens-report.md",
                         mime="text/markdown", key="report_md")
    if right.button("Build the HTML report with charts", key="report_html_build"):
        with st.spinner("Drawing the charts..."):
            html = data.report_html(ctx.data, ctx.start, ctx.end)
        right.download_button("Download HTML", html, file_name="meshlens-report.html",
                              mime="text/html", key="report_html")
    with st.container(border=True):
        st.markdown(markdown)
