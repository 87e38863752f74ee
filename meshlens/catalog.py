"""DuckDB views over the lake: ``requests``, ``spans``, ``edges``, ``services``, the rollups.

Each process opens its own in-memory DuckDB connection and registers these views; nothing
holds a lock on the lake, so the dashboard, the command line and an ingest run side by side.
A table with no files yet is an empty view of the right columns, so every query works on an
empty lake.
"""

from __future__ import annotations

import weakref

import duckdb
import pyarrow as pa

from meshlens import schema
from meshlens.lake import Lake

LAKES: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, Lake] = weakref.WeakKeyDictionary()
"""The lake whose views each connection holds (analytics.fastpath reads its files directly)."""

ROLLUP_SCHEMAS: dict[str, pa.Schema] = {}
"""Rollup tables (folder under ``rollups/``) and their schemas; analytics registers them."""
ROLLUP_SCHEMAS.update(schema.ROLLUPS)
ROLLUP_SCHEMAS.update(schema.IDENTITY_ROLLUPS)

EDGES_SQL = """
WITH log_edges AS (
    SELECT caller, service AS callee, count(*) AS log_requests,
           min(ts) AS log_first_seen, max(ts) AS log_last_seen
    FROM requests GROUP BY ALL
),
span_pairs AS (
    -- a SERVER/CONSUMER span whose parent belongs to another service: parent -> child
    -- (client latency only when the parent is the CLIENT/PRODUCER span of the call)
    SELECT p.service AS caller, c.service AS callee, c.start_ts AS ts,
           CASE WHEN p.kind IN ('CLIENT', 'PRODUCER') THEN p.duration_ms END AS client_ms,
           c.duration_ms AS server_ms,
           (p.status_code = 'ERROR' AND p.kind IN ('CLIENT', 'PRODUCER')) OR c.status_code = 'ERROR' AS is_error,
           false AS uninstrumented
    FROM spans c JOIN spans p
      ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
    WHERE c.kind IN ('SERVER', 'CONSUMER')
      AND p.service IS DISTINCT FROM c.service
),
span_orphans AS (
    -- a CLIENT/PRODUCER span with no SERVER/CONSUMER child: an uninstrumented callee,
    -- named from the peer attributes
    SELECT p.service AS caller,
           coalesce(nullif(p.peer_service, ''), nullif(p.server_address, ''),
                    nullif(p.rpc_service, ''), 'external') AS callee,
           p.start_ts AS ts, p.duration_ms AS client_ms, CAST(NULL AS DOUBLE) AS server_ms,
           p.status_code = 'ERROR' AS is_error, true AS uninstrumented
    FROM spans p
    WHERE p.kind IN ('CLIENT', 'PRODUCER')
      AND NOT EXISTS (SELECT 1 FROM spans c
                      WHERE c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
                        AND c.kind IN ('SERVER', 'CONSUMER'))
),
trace_edges AS (
    SELECT caller, callee, count(*) AS trace_requests, count_if(is_error) AS trace_errors,
           min(ts) AS trace_first_seen, max(ts) AS trace_last_seen,
           quantile_cont(client_ms, 0.5) AS client_p50_ms,
           quantile_cont(client_ms, 0.95) AS client_p95_ms,
           quantile_cont(server_ms, 0.5) AS server_p50_ms,
           quantile_cont(server_ms, 0.95) AS server_p95_ms,
           bool_and(uninstrumented) AS callee_uninstrumented
    FROM (SELECT * FROM span_pairs UNION ALL SELECT * FROM span_orphans)
    GROUP BY caller, callee
)
SELECT coalesce(l.caller, t.caller) AS caller,
       coalesce(l.callee, t.callee) AS callee,
       coalesce(l.log_requests, 0) AS log_requests,
       coalesce(t.trace_requests, 0) AS trace_requests,
       CASE WHEN l.caller IS NOT NULL AND t.caller IS NOT NULL THEN 'both'
            WHEN l.caller IS NOT NULL THEN 'logs' ELSE 'traces' END AS seen_in,
       least(l.log_first_seen, t.trace_first_seen) AS first_seen,
       greatest(l.log_last_seen, t.trace_last_seen) AS last_seen,
       coalesce(t.trace_errors, 0) AS trace_errors,
       t.client_p50_ms, t.client_p95_ms, t.server_p50_ms, t.server_p95_ms,
       t.callee_uninstrumented
FROM log_edges l FULL OUTER JOIN trace_edges t
  ON l.caller = t.caller AND l.callee = t.callee
"""

SERVICES_SQL = """
SELECT service,
       list(DISTINCT version ORDER BY version) FILTER (WHERE version IS NOT NULL) AS versions,
       list(DISTINCT env ORDER BY env) FILTER (WHERE env IS NOT NULL) AS envs,
       count(*) AS requests,
       min(ts) AS first_seen, max(ts) AS last_seen
FROM requests GROUP BY service
"""


def connect(lake: Lake, *, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every lake view registered."""
    conn = duckdb.connect(":memory:")
    conn.execute("SET TimeZone = 'UTC'")
    if threads:
        conn.execute(f"SET threads = {int(threads)}")
    register_views(conn, lake)
    return conn


def cursor(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor of ``conn`` for one thread: the same views, UTC, and the same lake in ``LAKES``.

    A cursor shares the views but not the session settings that ``connect`` made, and it is a
    different object, so readers that look the lake up (analytics.fastpath) must find it too.
    """
    cur = conn.cursor()
    cur.execute("SET TimeZone = 'UTC'")
    if conn in LAKES:
        LAKES[cur] = LAKES[conn]
    return cur


def register_views(conn: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """(Re)create the views; call again to see partitions published since."""
    LAKES[conn] = lake
    _partitioned_view(conn, lake, "requests", schema.REQUESTS)
    _partitioned_view(conn, lake, "spans", schema.SPANS)
    for name, rollup_schema in ROLLUP_SCHEMAS.items():
        _partitioned_view(conn, lake, name, rollup_schema, folder=f"rollups/{name}")
    conn.execute(f"CREATE OR REPLACE VIEW edges AS {EDGES_SQL}")
    conn.execute(f"CREATE OR REPLACE VIEW services AS {SERVICES_SQL}")


def _partitioned_view(
    conn: duckdb.DuckDBPyConnection,
    lake: Lake,
    name: str,
    table_schema: pa.Schema,
    *,
    folder: str | None = None,
) -> None:
    folder = folder or name
    if lake.has_files(folder):
        source = (
            f"read_parquet('{lake.glob(folder)}', hive_partitioning = true, "
            f"hive_types = {{'date': DATE}}, union_by_name = true)"
        )
        conn.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {source}")
    else:
        conn.execute(f"CREATE OR REPLACE VIEW {name} AS {_empty_select(table_schema)}")


def _empty_select(table_schema: pa.Schema) -> str:
    """``SELECT NULL::type AS col, ... WHERE false`` with the schema's columns plus ``date``."""
    holder = duckdb.connect(":memory:")
    holder.register("empty_arrow", table_schema.empty_table())
    types = holder.execute("DESCRIBE empty_arrow").fetchall()
    holder.close()
    cols = [f'CAST(NULL AS {col_type}) AS "{col}"' for col, col_type, *_ in types]
    cols.append('CAST(NULL AS DATE) AS "date"')
    return f"SELECT {', '.join(cols)} WHERE false"
