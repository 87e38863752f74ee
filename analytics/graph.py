"""The service graph: who calls whom, with RED metrics on every edge, as frames, Mermaid or DOT.

Nodes are the services seen in requests or spans (``kind = 'service'``), one node for callers
the inventory could not resolve (``'unknown'``), and callees or callers that appear only on the
other end of an edge: uninstrumented or external dependencies (``'external'``). Edges carry the
RED metrics of analytics.red for (caller, callee) over the window (from the ``edges_*``
rollups when they cover it, else raw rows), and ``seen_in``: ``logs``, ``traces`` or ``both``.
Trace edges are counted from the spans that started in the window, paired as the catalog's
``edges`` view pairs them (a SERVER/CONSUMER span under another service's span; a CLIENT/PRODUCER
span with no server child is a call to an uninstrumented peer). They are read from ``spans``
alone: the ``edges`` view also groups every raw request, which a dashboard cannot afford. Spans
are not split by env.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import duckdb
import polars as pl

from analytics import red as red_mod
from meshlens.schema import UNKNOWN
from meshlens.settings import Settings
from meshlens.timewin import Window

EDGE_COLUMNS = (
    "caller", "callee", "requests", "rps", "errors_5xx", "error_ratio", "client_errors_4xx",
    "p50_ms", "p95_ms", "p99_ms", "n", "low_sample", "percentile_source", "trace_requests", "seen_in",
)
NODE_COLUMNS = ("node", "kind", "requests", "rps", "error_ratio", "p95_ms", "n", "low_sample")


@dataclass(frozen=True)
class Graph:
    """Nodes and edges of the service graph over one window."""

    nodes: pl.DataFrame
    edges: pl.DataFrame


def service_graph(
    conn: duckdb.DuckDBPyConnection, *, window: Window, env: str | None = None, settings: Settings | None = None
) -> Graph:
    """Every node and edge seen in the window."""
    edges = edge_frame(conn, window=window, env=env, settings=settings)
    per_service = red_mod.red(conn, window=window, by=["service"], env=env, settings=settings)
    return Graph(nodes=node_frame(conn, edges, per_service, window=window), edges=edges)


def callers(conn: duckdb.DuckDBPyConnection, service: str, *, window: Window, env: str | None = None,
            settings: Settings | None = None) -> pl.DataFrame:
    """Edges into ``service``, busiest first."""
    edges = edge_frame(conn, window=window, env=env, settings=settings, callee=service)
    return edges.filter(pl.col("callee") == service)


def callees(conn: duckdb.DuckDBPyConnection, service: str, *, window: Window, env: str | None = None,
            settings: Settings | None = None) -> pl.DataFrame:
    """Edges out of ``service``, busiest first."""
    edges = edge_frame(conn, window=window, env=env, settings=settings, caller=service)
    return edges.filter(pl.col("caller") == service)


def edge_frame(
    conn: duckdb.DuckDBPyConnection,
    *,
    window: Window,
    env: str | None = None,
    settings: Settings | None = None,
    caller: str | None = None,
    callee: str | None = None,
) -> pl.DataFrame:
    """RED per (caller, callee) from logs, joined with trace sightings."""
    logs = red_mod.red(conn, window=window, by=["caller", "service"], env=env, caller=caller,
                       service=callee, settings=settings).rename({"service": "callee"})
    traces = trace_edges(conn, window=window)
    joined = logs.join(traces, on=["caller", "callee"], how="full", coalesce=True, nulls_equal=True)
    joined = joined.with_columns(
        pl.col("caller").fill_null(UNKNOWN), pl.col("callee").fill_null(UNKNOWN),
        pl.col("trace_requests").fill_null(0),
        pl.col("requests").fill_null(0),
        pl.when(pl.col("requests").fill_null(0) > 0)
        .then(pl.when(pl.col("trace_requests").fill_null(0) > 0).then(pl.lit("both")).otherwise(pl.lit("logs")))
        .otherwise(pl.lit("traces")).alias("seen_in"),
    )
    return joined.select(EDGE_COLUMNS).sort(["requests", "trace_requests", "caller", "callee"],
                                            descending=[True, True, False, False], nulls_last=True)


_DAY = timedelta(days=1)
_TRACE_EDGES_SQL = """
WITH s AS (SELECT * FROM spans WHERE {where}),
near AS (SELECT * FROM spans WHERE {near}),
pairs AS (
    SELECT p.service AS caller, c.service AS callee
    FROM s c JOIN near p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
    WHERE c.kind IN ('SERVER', 'CONSUMER') AND p.service IS DISTINCT FROM c.service
),
orphans AS (
    SELECT p.service AS caller,
           coalesce(nullif(p.peer_service, ''), nullif(p.server_address, ''),
                    nullif(p.rpc_service, ''), 'external') AS callee
    FROM s p
    WHERE p.kind IN ('CLIENT', 'PRODUCER')
      AND NOT EXISTS (SELECT 1 FROM near c WHERE c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
                                             AND c.kind IN ('SERVER', 'CONSUMER'))
)
SELECT caller, callee, count(*)::BIGINT AS trace_requests
FROM (SELECT * FROM pairs UNION ALL SELECT * FROM orphans) GROUP BY ALL
"""


def trace_edges(conn: duckdb.DuckDBPyConnection, *, window: Window) -> pl.DataFrame:
    """(caller, callee, trace_requests) of the spans that started in the window; empty without spans."""
    empty = pl.DataFrame(schema={"caller": pl.String, "callee": pl.String, "trace_requests": pl.Int64})
    if not conn.execute("SELECT 1 FROM spans LIMIT 1").fetchall():
        return empty
    where, _ = red_mod.where_sql("start_ts", window=window, filters={})
    # the other span of a pair started within a day of the window (requests are not that slow)
    near, _ = red_mod.where_sql("start_ts", window=Window(window.start - _DAY, window.end + _DAY), filters={})
    frame = conn.sql(_TRACE_EDGES_SQL.format(where=where, near=near)).pl()
    return frame if not frame.is_empty() else empty


def node_frame(conn: duckdb.DuckDBPyConnection, edges: pl.DataFrame, per_service: pl.DataFrame, *,
               window: Window) -> pl.DataFrame:
    """One row per node: its kind and the RED metrics of the traffic it received."""
    instrumented = set(per_service["service"].drop_nulls().to_list()) | _span_services(conn, window=window)
    names = set(edges["caller"].drop_nulls().to_list()) | set(edges["callee"].drop_nulls().to_list()) | instrumented
    kinds = pl.DataFrame(
        {"node": sorted(names), "kind": [_kind(n, instrumented) for n in sorted(names)]},
        schema={"node": pl.String, "kind": pl.String},
    )
    metrics = per_service.select(pl.col("service").alias("node"), *NODE_COLUMNS[2:])
    return kinds.join(metrics, on="node", how="left").with_columns(pl.col("requests").fill_null(0)).select(NODE_COLUMNS)


def _kind(name: str, instrumented: set[str]) -> str:
    if name in ("", UNKNOWN):
        return "unknown"
    return "service" if name in instrumented else "external"


def _span_services(conn: duckdb.DuckDBPyConnection, *, window: Window) -> set[str]:
    where, params = red_mod.where_sql("start_ts", window=window, filters={})
    rows = conn.execute(f"SELECT DISTINCT service FROM spans WHERE {where} AND service IS NOT NULL", params).fetchall()
    return {r[0] for r in rows}


# -- rendering ---------------------------------------------------------------------------------
def edge_label(row: dict[str, object]) -> str:
    """Short text of an edge: requests, 5xx ratio, p95."""
    if not row.get("requests"):
        return f"{row.get('trace_requests', 0)} spans (traces only)"
    p95 = row.get("p95_ms")
    p95_text = f", p95 {p95:.0f} ms" if isinstance(p95, float) else ""
    return f"{row['requests']} req, {100 * float(row['error_ratio'] or 0):.1f}% 5xx{p95_text}"  # type: ignore[arg-type]


def to_mermaid(graph: Graph) -> str:
    """The graph as a Mermaid flowchart (left to right)."""
    ids = {name: f"n{i}" for i, name in enumerate(graph.nodes["node"].to_list())}
    shapes = {"service": '["{}"]', "unknown": '{{{{"{}"}}}}', "external": '[("{}")]'}
    lines = ["graph LR"]
    for row in graph.nodes.iter_rows(named=True):
        lines.append(f"  {ids[row['node']]}{shapes[row['kind']].format(_escape(row['node']))}")
    for row in graph.edges.iter_rows(named=True):
        arrow = "-.->" if row["seen_in"] == "traces" else "-->"
        lines.append(f'  {ids[row["caller"]]} {arrow}|"{_escape(edge_label(row))}"| {ids[row["callee"]]}')
    return "\n".join(lines)


def to_dot(graph: Graph) -> str:
    """The graph in Graphviz DOT."""
    shapes = {"service": "box", "unknown": "diamond", "external": "cylinder"}
    lines = ["digraph meshlens {", "  rankdir=LR;"]
    for row in graph.nodes.iter_rows(named=True):
        lines.append(f'  "{_escape(row["node"])}" [shape={shapes[row["kind"]]}];')
    for row in graph.edges.iter_rows(named=True):
        style = ", style=dashed" if row["seen_in"] == "traces" else ""
        lines.append(f'  "{_escape(row["caller"])}" -> "{_escape(row["callee"])}" [label="{_escape(edge_label(row))}"{style}];')
    lines.append("}")
    return "\n".join(lines)


def _escape(text: str) -> str:
    return str(text).replace('"', "'")
