"""Cost: what the traffic would cost on VPC Lattice, per service, from the price settings."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, widgets
from dashboard.state import Ctx


def render(ctx: Ctx) -> None:
    """Draw the page."""
    st.header("Cost")
    frame, total = data.cost(ctx.data, ctx.start, ctx.end, env=ctx.env)
    if frame is None or frame.height == 0:
        st.caption("No traffic in this window.")
        return
    top_row = widgets.first_row(frame.sort(data.COST_TOTAL_COLUMN, descending=True))
    cols = st.columns(2)
    if total is not None:
        cols[0].metric("Estimated cost of the window", f"${total:,.2f}")
    cols[1].metric(f"Most expensive: {top_row['service']}", f"${top_row[data.COST_TOTAL_COLUMN]:,.2f}")
    st.caption(data.price_note(ctx.data))
    top = widgets.top(frame, data.COST_TOTAL_COLUMN, n=15)
    st.plotly_chart(charts.bars(top, x=data.COST_TOTAL_COLUMN, y="service", title="Top services (USD)"),
                    key="cost_bars")
    widgets.table(widgets.top(frame, data.COST_TOTAL_COLUMN, n=frame.height), key="cost_table")
