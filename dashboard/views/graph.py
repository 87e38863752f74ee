"""Service graph: who calls whom, sized by traffic, coloured by 5xx ratio; click to open a service."""

from __future__ import annotations

import math
from typing import Any

import streamlit as st

from dashboard import charts, data, state, widgets
from dashboard.state import Ctx

LABELLED_EDGES = 10
"""Edge labels drawn on the whole graph (all of them when focused on one service)."""
EDGE_COLUMNS = ("caller", "callee", "requests", "rps", "errors_5xx", "error_ratio", "p99_ms", "seen_in")


def render(ctx: Ctx) -> None:
    """Draw the page."""
    st.header("Service graph")
    graph = data.service_graph(ctx.data, ctx.start, ctx.end, env=ctx.env)
    nodes, edges = data.graph_nodes(graph), data.graph_edges(graph)
    if not nodes:
        st.info("No traffic in this window.")
        return
    focus = ctx.service if ctx.service and st.toggle(
        f"Only {ctx.service} and its neighbours", key="graph_focus") else None
    nodes, edges = _focus(nodes, edges, focus)
    st.caption("Node size: requests; colour: 5xx ratio; ✕ unknown callers, ◆ external "
               "dependencies. Edge labels: rate · 5xx · p99. Click a node to open its service.")
    _draw(nodes, edges, selected=ctx.service)
    _open_box([n["name"] for n in nodes])
    with st.expander("Edges", expanded=False):
        widgets.table(data.graph_edge_frame(graph), columns=EDGE_COLUMNS, key="graph_edges")


def _focus(nodes: list[dict[str, Any]], edges: list[dict[str, Any]], focus: str | None):  # type: ignore[no-untyped-def]
    if not focus:
        return nodes, edges
    edges = [e for e in edges if focus in (e["caller"], e["callee"])]
    keep = {focus} | {e["caller"] for e in edges} | {e["callee"] for e in edges}
    return [n for n in nodes if n["name"] in keep], edges


def _draw(nodes: list[dict[str, Any]], edges: list[dict[str, Any]], *, selected: str | None) -> None:
    biggest = max((n["requests"] or 0) for n in nodes) or 1
    for node in nodes:
        node["size"] = 10 + 40 * math.sqrt((node["requests"] or 0) / biggest)
    for edge in edges:
        edge["label"] = (f"{widgets.rate(edge['rps'])} · {widgets.pct(edge['error_ratio'])} 5xx"
                         f" · p99 {widgets.ms(edge['p99_ms'])}")
    limit = len(edges) if len(nodes) <= 20 else LABELLED_EDGES
    busiest = sorted(edges, key=lambda e: e["requests"] or 0, reverse=True)[:limit]
    positions = charts.layered_positions([n["name"] for n in nodes],
                                         [(e["caller"], e["callee"]) for e in edges])
    tallest = max(sum(1 for p in positions.values() if p[0] == x) for x, _ in positions.values())
    fig = charts.graph_figure(nodes, edges, positions=positions, selected=selected,
                              labelled_edges={(e["caller"], e["callee"]) for e in busiest},
                              height=max(420, min(1400, 24 * tallest)))
    event = st.plotly_chart(fig, key="service_graph", on_select="rerun", selection_mode="points",
                            config={"displaylogo": False, "scrollZoom": True})
    picked = _picked(event)
    if picked:
        state.go("Service", service=picked)


def _picked(event: Any) -> str | None:
    """The service name of a clicked node, if any."""
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    for point in points:
        name = point.get("customdata")
        if isinstance(name, list):
            name = name[0] if name else None
        if name:
            return str(name)
    return None


def _open_box(names: list[str]) -> None:
    left, right = st.columns([3, 1])
    choice = left.selectbox("Open a service", sorted(names), index=None, key="graph_open",
                            placeholder="type a service name")
    right.write("")
    if right.button("Open", key="graph_open_btn", disabled=not choice):
        state.go("Service", service=choice)
