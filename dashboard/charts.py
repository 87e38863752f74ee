"""Plotly figures for the pages: time series, bars and the service graph.

Figures only place what analytics computed: marker size is the node's request count, colour
its error ratio, edge labels the edge's rate, errors and p99 as analytics returned them. The
graph layout (where nodes sit) is presentation: services are put in columns by how far they are
from the callers nobody calls, so traffic flows left to right.
"""

from __future__ import annotations

import math
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
                                 mode="lines", name=_series_name(key[0]) if color else y))
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.2), hovermode="x unified")
    if y_format:
        fig.update_yaxes(tickformat=y_format)
    return fig


def _series_name(value: Any) -> str:
    return "(none)" if value is None else str(value)


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
                 selected: str | None = None, height: int = 760) -> go.Figure:
    """Nodes (name, kind, requests, error_ratio, size) and edges (caller, callee, label).

    Four traces whatever the size of the graph (annotations would be one object per edge and
    slow to build): edge lines, arrowheads, edge labels with hover text, and the nodes.
    """
    pairs = [(positions[e["caller"]], positions[e["callee"]]) for e in edges]
    fig = go.Figure([
        _edge_lines(pairs),
        _arrowheads(pairs, edges),
        _edge_labels(pairs, edges, labelled_edges),
        _node_trace(nodes, positions, selected=selected),
    ])
    fig.update_layout(
        height=height, showlegend=False, margin=dict(l=10, r=10, t=10, b=10),
        xaxis=dict(visible=False), yaxis=dict(visible=False), plot_bgcolor="white",
        clickmode="event+select", dragmode="pan", hovermode="closest",
    )
    return fig


Point = tuple[float, float]


def _edge_lines(pairs: list[tuple[Point, Point]]) -> go.Scatter:
    xs: list[float | None] = []
    ys: list[float | None] = []
    for (x0, y0), (x1, y1) in pairs:
        xs += [x0, x1, None]
        ys += [y0, y1, None]
    return go.Scatter(x=xs, y=ys, mode="lines", line=dict(width=0.7, color="#cbd5e1"),
                      hoverinfo="skip", name="edge lines")


def _along(a: Point, b: Point, share: float) -> Point:
    return a[0] + (b[0] - a[0]) * share, a[1] + (b[1] - a[1]) * share


def _arrowheads(pairs: list[tuple[Point, Point]], edges: list[dict[str, Any]]) -> go.Scatter:
    """A triangle 80% of the way along each edge, pointing at the callee."""
    tips = [_along(a, b, 0.8) for a, b in pairs]
    angles = [90 - math.degrees(math.atan2(b[1] - a[1], b[0] - a[0])) for a, b in pairs]
    return go.Scatter(
        x=[t[0] for t in tips], y=[t[1] for t in tips], mode="markers", name="edges",
        marker=dict(symbol="triangle-up", size=8, angle=angles,
                    color=[e.get("error_ratio") or 0.0 for e in edges], colorscale=ERROR_SCALE,
                    cmin=0, cmax=0.1),
        text=[f"{e['caller']} → {e['callee']}<br>{e['label']}" for e in edges], hoverinfo="text",
    )


def _edge_labels(pairs: list[tuple[Point, Point]], edges: list[dict[str, Any]],
                 labelled: set[tuple[str, str]]) -> go.Scatter:
    chosen = [(p, e) for p, e in zip(pairs, edges) if (e["caller"], e["callee"]) in labelled]
    mids = [_along(a, b, 0.5) for (a, b), _ in chosen]
    return go.Scatter(x=[m[0] for m in mids], y=[m[1] for m in mids], mode="text",
                      text=[e["label"] for _, e in chosen], textfont=dict(size=9, color="#475569"),
                      hoverinfo="skip", name="edge labels")


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


def timeline(frame: Any, *, start: Any = None, end: Any = None) -> go.Figure:
    """Incidents as bars from ``start`` to ``end``, one row per incident label."""
    fig = go.Figure()
    height = 90 + 45 * frame.height
    if start is not None and end is not None:
        fig.update_xaxes(range=[start, end])
    for row in frame.iter_rows(named=True):
        label = str(row.get("services") or row.get("service") or "incident")[:40]
        fig.add_trace(go.Scatter(x=[row["start"], row["end"]], y=[label, label], mode="lines+markers",
                                 line=dict(width=14, color="#dc2626"), name=label,
                                 hovertext=str(row.get("reason") or ""), hoverinfo="text+x"))
    fig.update_layout(height=height, showlegend=False, margin=dict(l=10, r=10, t=10, b=10))
    return fig
