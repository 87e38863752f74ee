"""Security: policy violations, denied requests, unauthenticated calls, TLS versions, principals.

Every section reads the identity rollup (raw rows only when it does not cover the window); each
still runs in a parallel fragment, so that a window the rollup cannot answer does not hold up
the page: each table fills in when its answer arrives.
"""

from __future__ import annotations

import streamlit as st

from dashboard import data, widgets
from dashboard.state import Ctx


def render(ctx: Ctx) -> None:
    """Draw the page."""
    st.header("Security")
    st.subheader("Policy violations")
    _violations(ctx)
    left, right = st.columns(2)
    with left:
        st.subheader("Denied requests")
        _denied(ctx)
    with right:
        st.subheader("Unauthenticated calls")
        _unauthenticated(ctx)
    st.subheader("TLS versions")
    _tls(ctx)
    st.subheader(f"Principals calling {ctx.service}" if ctx.service else "Principals")
    _principals(ctx)


@st.fragment(parallel=True)
def _violations(ctx: Ctx) -> None:
    try:
        widgets.table(data.policy_violations(ctx.data, ctx.start, ctx.end, env=ctx.env),
                      key="sec_policy", empty="No caller broke the allowed-caller policy.")
    except data.NoPolicy as exc:
        st.caption(str(exc))


@st.fragment(parallel=True)
def _denied(ctx: Ctx) -> None:
    widgets.table(data.denied(ctx.data, ctx.start, ctx.end, env=ctx.env),
                  key="sec_denied", empty="No request was denied.")


@st.fragment(parallel=True)
def _unauthenticated(ctx: Ctx) -> None:
    widgets.table(data.unauthenticated(ctx.data, ctx.start, ctx.end, env=ctx.env),
                  key="sec_unauth", empty="Every call was authenticated.")


@st.fragment(parallel=True)
def _tls(ctx: Ctx) -> None:
    widgets.table(data.tls_versions(ctx.data, ctx.start, ctx.end, env=ctx.env), key="sec_tls")


@st.fragment(parallel=True)
def _principals(ctx: Ctx) -> None:
    widgets.table(data.principals(ctx.data, ctx.service, ctx.start, ctx.end, env=ctx.env),
                  key="sec_principals", empty="No request in this window.")
