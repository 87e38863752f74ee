"""Reports: what changed in the window, as `meshlens report` writes it, with downloads."""

from __future__ import annotations

import streamlit as st

from dashboard import data
from dashboard.state import Ctx


def render(ctx: Ctx) -> None:
    """Draw the page."""
    st.header("Report")
    st.caption(f"The report `meshlens report --since {ctx.start:%Y-%m-%dT%H:%MZ} "
               f"--until {ctx.end:%Y-%m-%dT%H:%MZ}` would write.")
    markdown = data.report_markdown(ctx.data, ctx.start, ctx.end)
    left, right = st.columns(2)
    left.download_button("Download Markdown", markdown, file_name="meshlens-report.md",
                         mime="text/markdown", key="report_md")
    if right.button("Build the HTML report (with charts)", key="report_html_build"):
        html = data.report_html(ctx.data, ctx.start, ctx.end)
        right.download_button("Download HTML", html, file_name="meshlens-report.html",
                              mime="text/html", key="report_html")
    with st.container(border=True):
        st.markdown(markdown)
