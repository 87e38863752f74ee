"""The one home of every table's schema.

Parsers, queries, the NLQ prompt and the docs all name columns from here. Each table is a
pyarrow schema plus a one-line meaning per column (``COLUMN_DOCS``), which the README and the
NLQ system prompt print. The lake partitions ``requests`` and ``spans`` by ``date`` (a Hive
folder ``date=YYYY-MM-DD``); that column is not stored inside the files.
"""

from __future__ import annotations

import pyarrow as pa

UNKNOWN = "unknown"
"""Stored where a caller, service or version cannot be resolved (the raw evidence is kept)."""

TS = pa.timestamp("us", tz="UTC")

REQUESTS = pa.schema(
    [
        ("ts", TS),
        ("duration_ms", pa.float64()),
        ("caller", pa.string()),
        ("caller_principal", pa.string()),
        ("service", pa.string()),
        ("version", pa.string()),
        ("target_group", pa.string()),
        ("env", pa.string()),
        ("method", pa.string()),
        ("route", pa.string()),
        ("path", pa.string()),
        ("status", pa.int32()),
        ("bytes_in", pa.int64()),
        ("bytes_out", pa.int64()),
        ("protocol", pa.string()),
        ("user_agent", pa.string()),
        ("tls_version", pa.string()),
        ("authenticated", pa.bool_()),
        ("mtls", pa.bool_()),
        ("auth_denied_reason", pa.string()),
        ("failure_reason", pa.string()),
        ("account", pa.string()),
        ("region", pa.string()),
        ("service_network", pa.string()),
        ("source_ip", pa.string()),
        ("target_ip", pa.string()),
        ("trace_id", pa.string()),
        ("request_id", pa.string()),
        ("source_format", pa.string()),
        ("source_file", pa.string()),
        ("extra", pa.string()),
    ]
)

SPANS = pa.schema(
    [
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("parent_span_id", pa.string()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("service", pa.string()),
        ("version", pa.string()),
        ("env", pa.string()),
        ("start_ts", TS),
        ("end_ts", TS),
        ("duration_ms", pa.float64()),
        ("status_code", pa.string()),
        ("status_message", pa.string()),
        ("http_status", pa.int32()),
        ("method", pa.string()),
        ("route", pa.string()),
        ("path", pa.string()),
        ("peer_service", pa.string()),
        ("server_address", pa.string()),
        ("rpc_service", pa.string()),
        ("rpc_method", pa.string()),
        ("exception_type", pa.string()),
        ("exception_message", pa.string()),
        ("attributes", pa.string()),
        ("source_format", pa.string()),
        ("source_file", pa.string()),
    ]
)

QUARANTINE = pa.schema(
    [
        ("source_file", pa.string()),
        ("line_no", pa.int64()),
        ("reason", pa.string()),
        ("raw", pa.string()),
        ("source_format", pa.string()),
        ("rejected_at", TS),
    ]
)

MANIFEST = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("content_hash", pa.string()),
        ("source_format", pa.string()),
        ("table_name", pa.string()),
        ("rows_read", pa.int64()),
        ("rows_stored", pa.int64()),
        ("rows_rejected", pa.int64()),
        ("ingested_at", TS),
    ]
)

ROLLUP_DIMS = ("caller", "service", "version", "route", "method", "env", "status_class")
"""Key of the ``requests_*`` rollups (besides the time column)."""
EDGE_ROLLUP_DIMS = ("caller", "service", "version", "env")
"""Key of the narrower ``edges_*`` rollups, which answer per-service/edge/version questions fast."""
SERVICE_ROLLUP_DIMS = ("service", "env")
"""Key of the narrowest ``services_*`` rollups: per-service dashboards read a few rows per minute."""


def _rollup(time_column: str, dims: tuple[str, ...]) -> pa.Schema:
    """A rollup: one row per (time, key, latency bucket), every measure summable."""
    return pa.schema(
        [(time_column, TS)]
        + [(d, pa.string()) for d in dims]
        + [("lat_key", pa.int16())]
        + [(c, pa.int64()) for c in ("requests", "errors_5xx", "client_errors_4xx",
                                     "bytes_in", "bytes_out", "duration_count")]
        + [("duration_sum_ms", pa.float64()), ("duration_max_ms", pa.float64())]
    )


REQUESTS_1M = _rollup("minute", ROLLUP_DIMS)
ROLLUPS: dict[str, pa.Schema] = {
    "requests_1m": REQUESTS_1M,
    "requests_1h": _rollup("hour", ROLLUP_DIMS),
    "requests_1d": _rollup("day", ROLLUP_DIMS),
    "edges_1m": _rollup("minute", EDGE_ROLLUP_DIMS),
    "edges_1h": _rollup("hour", EDGE_ROLLUP_DIMS),
    "edges_1d": _rollup("day", EDGE_ROLLUP_DIMS),
    "services_1m": _rollup("minute", SERVICE_ROLLUP_DIMS),
    "services_1h": _rollup("hour", SERVICE_ROLLUP_DIMS),
    "services_1d": _rollup("day", SERVICE_ROLLUP_DIMS),
}
"""Rollups (folders under ``rollups/``, partitioned by ``date``), built by analytics.rollup."""

IDENTITY_DIMS = ("caller", "caller_principal", "service", "env", "tls_version", "authenticated", "mtls",
                 "denied", "auth_denied_reason", "failure_reason", "source_ip")
"""Key of the ``identity_*`` rollups: who called what, how they authenticated, whether auth denied it."""
_BOOL_DIMS = ("authenticated", "mtls", "denied")


def _identity_rollup(time_column: str) -> pa.Schema:
    """Who called what per time grain: counts, bytes and first/last request time (no latency)."""
    return pa.schema(
        [(time_column, TS)]
        + [(d, pa.bool_() if d in _BOOL_DIMS else pa.string()) for d in IDENTITY_DIMS]
        + [(c, pa.int64()) for c in ("requests", "errors_5xx", "client_errors_4xx", "bytes_in", "bytes_out")]
        + [("first_seen", TS), ("last_seen", TS)]
    )


IDENTITY_1M = _identity_rollup("minute")
IDENTITY_ROLLUPS: dict[str, pa.Schema] = {
    "identity_1m": IDENTITY_1M,
    "identity_1h": _identity_rollup("hour"),
}
"""Principal/security rollups (``rollups/identity_*``), built by analytics.rollup_identity."""

COLUMN_DOCS: dict[str, dict[str, str]] = {
    "requests": {
        "ts": "request start, UTC",
        "duration_ms": "total duration in milliseconds",
        "caller": "calling service name ('unknown' when it cannot be resolved)",
        "caller_principal": "IAM ARN, SPIFFE ID or X.509 subject of the caller; empty when none",
        "service": "called service name",
        "version": "version of the called service (target group, subset or service.version)",
        "target_group": "target group id / upstream cluster that served the request",
        "env": "environment (prod, staging, ...), from the inventory",
        "method": "HTTP method",
        "route": "templated path, e.g. /v1/charges/{id}",
        "path": "raw request path without the query string",
        "status": "HTTP status code (NULL when none was sent)",
        "bytes_in": "bytes received from the caller",
        "bytes_out": "bytes sent to the caller",
        "protocol": "HTTP/1.1, HTTP/2, ...",
        "user_agent": "User-Agent header",
        "tls_version": "TLS version of the caller's connection, empty for plain text",
        "authenticated": "true when the caller presented a principal or client certificate",
        "mtls": "true when the caller presented a client certificate",
        "auth_denied_reason": "why auth denied the request (e.g. Service); empty when allowed",
        "failure_reason": "failure class (e.g. ClientAccessDenied, Envoy response flags)",
        "account": "AWS account id of the service network or caller",
        "region": "AWS region",
        "service_network": "service network id (sn-...) or mesh name",
        "source_ip": "caller address",
        "target_ip": "target address that served the request",
        "trace_id": "trace id when the log carries one",
        "request_id": "request id when the log carries one",
        "source_format": "format the row was parsed from (lattice, alb, envoy, istio_json, combined)",
        "source_file": "file the row was read from",
        "extra": "JSON object of fields the parser did not know",
        "date": "partition: UTC date of ts",
    },
    "spans": {
        "trace_id": "32 hex chars",
        "span_id": "16 hex chars",
        "parent_span_id": "16 hex chars, empty for a root span",
        "name": "span name",
        "kind": "INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER or UNSPECIFIED",
        "service": "resource service.name",
        "version": "resource service.version",
        "env": "resource deployment.environment(.name)",
        "start_ts": "span start, UTC",
        "end_ts": "span end, UTC",
        "duration_ms": "end - start in milliseconds",
        "status_code": "UNSET, OK or ERROR",
        "status_message": "status message",
        "http_status": "http.response.status_code / http.status_code",
        "method": "http.request.method / http.method",
        "route": "http.route, else templated url.path / http.target",
        "path": "url.path / http.target",
        "peer_service": "service.peer.name / peer.service",
        "server_address": "server.address / net.peer.name",
        "rpc_service": "rpc.service",
        "rpc_method": "rpc.method",
        "exception_type": "exception.type of the first exception event",
        "exception_message": "exception.message of the first exception event",
        "attributes": "JSON object of all span attributes",
        "source_format": "otlp_json, otlp_proto or otlp_http",
        "source_file": "file or receiver batch the span came from",
        "date": "partition: UTC date of start_ts",
    },
    "requests_1m": {
        "minute": "minute the requests started in, UTC (`hour` in *_1h, `day` in *_1d)",
        "caller": "calling service", "service": "called service", "version": "called version",
        "route": "templated path", "method": "HTTP method", "env": "environment",
        "status_class": "2xx, 3xx, 4xx, 5xx, 1xx or none (no status)",
        "lat_key": "latency sketch bucket (analytics.sketch, 1% relative error); NULL: no duration",
        "requests": "requests in the group and bucket (sum over lat_key for the group)",
        "errors_5xx": "requests answered 5xx (errors)",
        "client_errors_4xx": "requests answered 4xx (client errors, not failures)",
        "bytes_in": "sum of bytes_in", "bytes_out": "sum of bytes_out",
        "duration_count": "requests with a duration in this bucket (the sketch's count)",
        "duration_sum_ms": "sum of duration_ms", "duration_max_ms": "largest duration_ms",
        "date": "partition: UTC date of the minute",
    },
    "identity_1m": {
        "minute": "minute the requests started in, UTC (`hour` in identity_1h)",
        "caller": "calling service", "caller_principal": "caller's principal (NULL/empty: none)",
        "service": "called service", "env": "environment", "tls_version": "TLS version, empty: plain text",
        "authenticated": "caller presented a principal or certificate", "mtls": "client certificate",
        "denied": "403 with an auth denied reason (the network refused the caller)",
        "auth_denied_reason": "why auth denied the request", "failure_reason": "failure class",
        "source_ip": "caller address, kept only for unauthenticated calls (NULL otherwise)",
        "requests": "requests in the group", "errors_5xx": "requests answered 5xx",
        "client_errors_4xx": "requests answered 4xx", "bytes_in": "sum of bytes_in (NULL as 0)",
        "bytes_out": "sum of bytes_out (NULL as 0)", "first_seen": "earliest ts in the group",
        "last_seen": "latest ts in the group", "date": "partition: UTC date of the minute",
    },
}


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table of ``schema``."""
    return schema.empty_table()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Reorder and cast ``table`` to exactly ``schema``, filling missing columns with nulls."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)
