"""Plotly figures for the pages: time series, bars and the service graph.

Figures only place what analytics computed: marker size is the node's request count, colour
its error ratio, edge labels the edge's rate, errors and p99 as analytics returned them. The
graph layout (where nodes sit) is presentation: services are put in columns by how far they are
from the callers nobody calls, so traffic flows left to right.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import plotly.graph_objects as go

ERROR_SCALE = [[0.0, "#16a34a"], [0.1, "#eab308"], [0.5, "#dc2626"], [1.0, "#7f1d1d"]]
KIND_SYMBOL = {"service": "circle", "unknown": "x", "external": "diamond"}


def timeseries(frame: Any, *, y: str, color: str | None = None, title: str = "",
               y_format: str | None = None, height: int = 260) -> go.Figure:
    """A line per ``color`` value of ``y`` over ``bucket_start``."""
    fig = go.Figure()
    groups = frame.partition_by(color, as_dict=True, maintain_order=True) if color else {("",): frame}
    for key, part in groups.items():
        part = part.sort("bucket_start")
        fig.add_trace(go.Scatter(x=part["bucket_start"].to_list(), y=part[y].to_list(),
                                 mode="lines", name=str(key[0]) if color else y))
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.2), hovermode="x unified")
    if y_format:
        fig.update_yaxes(tickformat=y_format)
    return fig


def lines(frame: Any, *, ys: tuple[str, ...], title: str = "", height: int = 260) -> go.Figure:
    """One line per column of ``ys`` over ``bucket_start``."""
    frame = frame.sort("bucket_start")
    fig = go.Figure([go.Scatter(x=frame["bucket_start"].to_list(), y=frame[y].to_list(),
                                mode="lines", name=y) for y in ys if y in frame.columns])
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.2), hovermode="x unified")
    return fig


def bars(frame: Any, *, x: str, y: str, title: str = "", height: int = 300,
         x_format: str | None = None) -> go.Figure:
    """Horizontal bars of ``y`` labels against ``x`` values."""
    fig = go.Figure(go.Bar(x=frame[x].to_list(), y=[str(v) for v in frame[y].to_list()],
                           orientation="h"))
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40, b=10),
                      yaxis=dict(autorange="reversed"))
    if x_format:
        fig.update_xaxes(tickformat=x_format)
    return fig


def layered_positions(names: list[str], pairs: list[tuple[str, str]]) -> dict[str, tuple[float, float]]:
    """(x, y) per node: x is the longest call path from a root, y spreads each column."""
    callers_of: dict[str, set[str]] = defaultdict(set)
    for caller, callee in pairs:
        if caller != callee:
            callers_of[callee].add(caller)
    depth: dict[str, int] = {}

    def level(name: str, seen: frozenset[str]) -> int:
        if name not in depth:
            parents = [c for c in callers_of.get(name, ()) if c not in seen]
            depth[name] = 1 + max((level(p, seen | {name}) for p in parents), default=-1)
        return depth[name]

    for name in names:
        level(name, frozenset())
    columns: dict[int, list[str]] = defaultdict(list)
    for name in sorted(names):
        columns[depth[name]].append(name)
    return {name: (float(x), _spread(i, len(col)))
            for x, col in columns.items() for i, name in enumerate(col)}


def _spread(index: int, size: int) -> float:
    return 0.0 if size == 1 else 1.0 - 2.0 * index / (size - 1)


def graph_figure(nodes: list[dict[str, Any]], edges: list[dict[str, Any]], *,
                 positions: dict[str, tuple[float, float]], labelled_edges: set[tuple[str, str]],
                 selected: str | None = None, height: int = 720) -> go.Figure:
    """Nodes (name, kind, requests, error_ratio, size) and edges (caller, callee, label)."""
    fig = go.Figure()
    for edge in edges:
        _add_edge(fig, edge, positions, labelled=(edge["caller"], edge["callee"]) in labelled_edges)
    fig.add_trace(_edge_hover_trace(edges, positions))
    fig.add_trace(_node_trace(nodes, positions, selected=selected))
    fig.update_layout(
        height=height, showlegend=False, margin=dict(l=10, r=10, t=10, b=10),
        xaxis=dict(visible=False), yaxis=dict(visible=False), plot_bgcolor="white",
        clickmode="event+select", dragmode="pan", hovermode="closest",
    )
    return fig


def _add_edge(fig: go.Figure, edge: dict[str, Any], positions: dict[str, tuple[float, float]],
              *, labelled: bool) -> None:
    (x0, y0), (x1, y1) = positions[edge["caller"]], positions[edge["callee"]]
    fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y",
                       showarrow=True, arrowhead=2, arrowsize=1, arrowwidth=1,
                       arrowcolor=edge.get("color", "#94a3b8"), opacity=0.6, standoff=8, text="")
    if labelled:
        fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=edge["label"], showarrow=False,
                           font=dict(size=10, color="#334155"), bgcolor="rgba(255,255,255,0.8)")


def _edge_hover_trace(edges: list[dict[str, Any]], positions: dict[str, tuple[float, float]]) -> go.Scatter:
    """Invisible markers at edge midpoints so that every edge has a hover label."""
    mids = [((positions[e["caller"]][0] + positions[e["callee"]][0]) / 2,
             (positions[e["caller"]][1] + positions[e["callee"]][1]) / 2) for e in edges]
    return go.Scatter(
        x=[m[0] for m in mids], y=[m[1] for m in mids], mode="markers",
        marker=dict(size=6, color="rgba(148,163,184,0.25)"), name="edges",
        text=[f"{e['caller']} → {e['callee']}<br>{e['label']}" for e in edges],
        hoverinfo="text",
    )


def _node_trace(nodes: list[dict[str, Any]], positions: dict[str, tuple[float, float]], *,
                selected: str | None) -> go.Scatter:
    names = [n["name"] for n in nodes]
    return go.Scatter(
        x=[positions[n][0] for n in names], y=[positions[n][1] for n in names],
        mode="markers+text", name="services", customdata=names,
        text=names, textposition="top center", textfont=dict(size=9),
        hovertext=[n["hover"] for n in nodes], hoverinfo="text",
        marker=dict(
            size=[n["size"] for n in nodes],
            color=[n["error_ratio"] or 0.0 for n in nodes], colorscale=ERROR_SCALE, cmin=0, cmax=0.1,
            symbol=[KIND_SYMBOL.get(n["kind"], "circle") for n in nodes],
            line=dict(width=[3 if n == selected else 1 for n in names],
                      color=["#1d4ed8" if n == selected else "#1e293b" for n in names]),
            colorbar=dict(title="5xx ratio", tickformat=".0%", thickness=12),
        ),
        selected=dict(marker=dict(opacity=1.0)), unselected=dict(marker=dict(opacity=0.9)),
    )


def auto(frame: Any) -> go.Figure | None:
    """A chart that suits a query result: a line over a time column, else bars of a label column."""
    if frame is None or frame.height < 2:
        return None
    numeric = [c for c, t in frame.schema.items() if t.is_numeric()]
    temporal = [c for c, t in frame.schema.items() if t.is_temporal()]
    labels = [c for c, t in frame.schema.items() if t == pl_string()]
    if not numeric:
        return None
    if temporal:
        data = frame.sort(temporal[0])
        fig = go.Figure([go.Scatter(x=data[temporal[0]].to_list(), y=data[c].to_list(), mode="lines",
                                    name=c) for c in numeric[:3]])
        fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10))
        return fig
    if labels and frame.height <= 50:
        return bars(frame, x=numeric[0], y=labels[0], height=max(250, 22 * frame.height))
    return None


def pl_string() -> Any:
    import polars as pl

    return pl.String


def timeline(frame: Any, *, start: Any = None, end: Any = None, height: int = 260) -> go.Figure:
    """Incidents as bars from ``start`` to ``end``, one row per incident label."""
    fig = go.Figure()
    if start is not None and end is not None:
        fig.update_xaxes(range=[start, end])
    for row in frame.iter_rows(named=True):
        label = str(row.get("services") or row.get("service") or "incident")[:40]
        fig.add_trace(go.Scatter(x=[row["start"], row["end"]], y=[label, label], mode="lines+markers",
                                 line=dict(width=10, color="#dc2626"), name=label,
                                 hovertext=str(row.get("reason") or ""), hoverinfo="text+x"))
    fig.update_layout(height=height, showlegend=False, margin=dict(l=10, r=10, t=10, b=10))
    return fig
