"""Ask: a question in plain language; the answer, the SQL that produced it, a table and a chart."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, widgets
from dashboard.state import Ctx

EXAMPLES = ("who calls PaymentService", "why is PaymentService failing?",
            "error rate of OrderService by version today", "p99 of CheckoutService in the last hour")


def render(ctx: Ctx) -> None:
    """Draw the page."""
    st.header("Ask")
    with st.form("ask_form", border=False):
        question = st.text_input("Question", value=st.query_params.get("q", ""), key="q",
                                 placeholder=EXAMPLES[0],
                                 help="Times are UTC; no time expression means the last 24 hours; "
                                      "'error' means 5xx.")
        st.form_submit_button("Ask", type="primary")
    st.caption("Try: " + " · ".join(f"`{e}`" for e in EXAMPLES) + ". Relative times end at the "
               "end of the sidebar's window; name the env in the question (\"in prod\").")
    if question and question.strip():
        _answer(ctx, question.strip())


def _answer(ctx: Ctx, question: str) -> None:
    answer = data.ask(ctx.data, question, now=ctx.end)
    if answer.get("error"):
        st.error(answer["error"])
    if answer.get("clarification"):
        st.warning(answer["clarification"])
    if answer.get("explanation"):
        st.markdown(answer["explanation"])
    for finding in answer.get("findings") or []:
        st.markdown(f"- {finding.get('text') or finding.get('finding') or finding}")
    if answer.get("recommendation"):
        st.success(answer["recommendation"])
    meta = [f"backend: {answer.get('backend', '?')}"]
    if answer.get("window"):
        meta.append(f"window: [{answer['window'].get('start')}, {answer['window'].get('end')}) UTC")
    st.caption(" · ".join(meta))
    if answer.get("sql"):
        st.code(answer["sql"], language="sql")
    frame = answer.get("frame")
    if frame is not None and frame.height:
        widgets.table(frame, key="ask_table")
        figure = charts.auto(frame)
        if figure is not None:
            st.plotly_chart(figure, key="ask_chart")
