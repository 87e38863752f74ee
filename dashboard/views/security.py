"""Security: denied requests, unauthenticated calls, TLS versions and policy violations."""

from __future__ import annotations

import streamlit as st

from dashboard import data, widgets
from dashboard.state import Ctx


def render(ctx: Ctx) -> None:
    """Draw the page."""
    st.header("Security")
    st.subheader("Policy violations")
    try:
        widgets.table(data.policy_violations(ctx.data, ctx.start, ctx.end, env=ctx.env),
                      key="sec_policy", empty="No caller broke the allowed-caller policy.")
    except data.NoPolicy as exc:
        st.caption(str(exc))
    left, right = st.columns(2)
    with left:
        st.subheader("Denied requests")
        widgets.table(data.denied(ctx.data, ctx.start, ctx.end, env=ctx.env),
                      key="sec_denied", empty="No request was denied.")
    with right:
        st.subheader("Unauthenticated calls")
        widgets.table(data.unauthenticated(ctx.data, ctx.start, ctx.end, env=ctx.env),
                      key="sec_unauth", empty="Every call was authenticated.")
    st.subheader("TLS versions")
    widgets.table(data.tls_versions(ctx.data, ctx.start, ctx.end, env=ctx.env), key="sec_tls")
