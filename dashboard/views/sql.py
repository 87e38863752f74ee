"""SQL: a read-only editor over the lake views, through the same guard as `ask`."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, widgets
from dashboard.state import Ctx

EXAMPLE = """SELECT service, count(*) AS requests,
       count(*) FILTER (WHERE status >= 500) AS errors_5xx
FROM requests
GROUP BY service
ORDER BY errors_5xx DESC"""


def render(ctx: Ctx) -> None:
    """Draw the page."""
    st.header("SQL")
    editor, schema = st.columns([3, 2])
    with editor:
        with st.form("sql_form", border=False):
            sql = st.text_area("Query (one read-only SELECT)", value=EXAMPLE, height=220, key="sql_text")
            if st.form_submit_button("Run", type="primary"):
                st.session_state["sql_ran"] = sql
        st.caption("Runs through the SQL guard: one SELECT over the lake views, a LIMIT, a time "
                   "limit, no file or network access. The time range in the sidebar does not "
                   "apply here; filter on ts yourself.")
        sql = st.session_state.get("sql_ran", "")
        if sql.strip():
            frame = data.run_sql(ctx.data, sql)
            st.caption(f"{frame.height:,} rows")
            widgets.table(frame, key="sql_result", empty="The query returned no rows.")
            figure = charts.auto(frame)
            if figure is not None:
                st.plotly_chart(figure, key="sql_chart")
    with schema:
        _schema()


def _schema() -> None:
    st.subheader("Tables")
    for table, columns in data.schema_docs().items():
        with st.expander(table, expanded=table == "requests"):
            st.markdown("\n".join(f"- `{name}`: {doc}" for name, doc in columns.items()))
