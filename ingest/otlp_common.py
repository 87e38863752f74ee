"""What the OTLP JSON and protobuf readers share: span columns, semantic conventions, ids.

Both readers walk an ``ExportTraceServiceRequest`` (JSON dicts or protobuf messages) and append
one span at a time to a ``SpanColumns`` (plain Python lists, one per column of
``meshlens.schema.SPANS``); ``SpanColumns.to_table`` turns them into one Arrow table in a few
vectorised steps. A span that cannot be read is not stored: it becomes a reject
``(line number, reason, raw text)`` like a bad access-log line.

Semantic conventions change names over time; each derived column reads the current name first
and the older ones after it (``ATTRIBUTE_NAMES``), so spans from old and new SDKs land in the
same columns.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from meshlens import schema

KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
"""Span kinds by their OTLP enum number."""

STATUS_CODES = ("UNSET", "OK", "ERROR")
"""Status codes by their OTLP enum number."""

SERVICE_NAME = "service.name"
SERVICE_VERSION = "service.version"
ENV_NAMES = ("deployment.environment.name", "deployment.environment")

ATTRIBUTE_NAMES: dict[str, tuple[str, ...]] = {
    "http_status": ("http.response.status_code", "http.status_code"),
    "method": ("http.request.method", "http.method"),
    "route": ("http.route",),
    "path": ("url.path", "http.target"),
    "url": ("url.full", "http.url"),
    "peer_service": ("service.peer.name", "peer.service"),
    "server_address": ("server.address", "net.peer.name"),
    "rpc_service": ("rpc.service",),
    "rpc_method": ("rpc.method",),
}
"""Span column -> attribute names, current semantic convention first."""

EXCEPTION_EVENT = "exception"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"

_INT64_MAX = 2**63 - 1


class SpanError(ValueError):
    """One span (or request) cannot be read; the message is the quarantine reason."""


@dataclass(frozen=True)
class Resource:
    """What a ResourceSpans says about the process that emitted its spans."""

    service: str
    version: str | None
    env: str | None


def resource_from_attributes(attrs: Mapping[str, Any]) -> Resource:
    """service.name, service.version and deployment.environment(.name) of a resource."""
    service = attrs.get(SERVICE_NAME)
    env = next((attrs[n] for n in ENV_NAMES if attrs.get(n) not in (None, "")), None)
    version = attrs.get(SERVICE_VERSION)
    return Resource(
        service=_text(service) or schema.UNKNOWN,
        version=_text(version),
        env=_text(env),
    )


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)


# -- ids and enums -------------------------------------------------------------------------

def id_hex(value: Any, *, nbytes: int, what: str) -> str:
    """A trace/span id as lower-case hex: from hex (the spec) or base64 (protojson style)."""
    if not isinstance(value, str):
        raise SpanError(f"{what} is not a string")
    raw: bytes | None = None
    if len(value) == 2 * nbytes:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = None
    if raw is None:
        raw = _b64(value)
    if raw is None or len(raw) != nbytes:
        raise SpanError(f"{what} {value[:64]!r} is neither {2 * nbytes} hex digits nor base64 of {nbytes} bytes")
    if not any(raw):
        raise SpanError(f"{what} is all zeros (invalid)")
    return raw.hex()


def _b64(value: str) -> bytes | None:
    try:
        return base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None


def enum_name(value: Any, names: tuple[str, ...], *, prefix: str, what: str) -> str:
    """An OTLP enum given as an integer (the spec) or a name (``SPAN_KIND_CLIENT``)."""
    if value is None:
        return names[0]
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(names):
            return names[value]
    elif isinstance(value, str):
        name = value.upper()
        name = name[len(prefix):] if name.startswith(prefix) else name
        if name in names:
            return name
        if name.isdigit() and int(name) < len(names):
            return names[int(name)]
    raise SpanError(f"unknown {what} {str(value)[:64]!r}")


def unix_nano(value: Any, *, what: str, required: bool) -> int | None:
    """A 64-bit nanosecond time given as a decimal string (the spec) or a number."""
    if value is None or value == "" or value == 0 or value == "0":
        if required:
            raise SpanError(f"{what} is missing")
        return None
    if isinstance(value, bool):
        raise SpanError(f"{what} is not a number")
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 19:
            raise SpanError(f"{what} {value[:32]!r} is not a decimal integer")
        value = int(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise SpanError(f"{what} is not finite")
        value = int(value)
    elif not isinstance(value, int):
        raise SpanError(f"{what} is not a number")
    if not 0 < value <= _INT64_MAX:
        raise SpanError(f"{what} {value} is out of range")
    return value


# -- derived columns ------------------------------------------------------------------------

def first_attr(attrs: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    """The value of the first of ``names`` present and non-empty in ``attrs``."""
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def _as_str(value: Any) -> str | None:
    if value is None or value.__class__ is str:
        return value  # type: ignore[no-any-return]
    return json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)


def _as_status(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 2**31 else None
    if isinstance(value, str) and value.isdigit() and len(value) < 10:
        return int(value)
    if isinstance(value, float) and value.is_integer() and 0 <= value < 2**31:
        return int(value)
    return None


def _path_of(path: Any, url: Any) -> str | None:
    """url.path / http.target without the query, else the path of url.full / http.url."""
    path = _as_str(path)
    if path is None:
        url = _as_str(url)
        if url is None:
            return None
        scheme_end = url.find("://")
        slash = url.find("/", scheme_end + 3) if scheme_end >= 0 else -1
        if slash < 0:
            return None
        path = url[slash:]
    if "?" in path or "#" in path:
        cut = min(i for i in (path.find("?"), path.find("#")) if i >= 0)
        return path[:cut]
    return path


_EMPTY_DERIVED = (None,) * 8


def derive(attrs: Mapping[str, Any]) -> tuple[Any, ...]:
    """http_status, method, route, path, peer_service, server_address, rpc_service, rpc_method.

    Each reads the current semantic-convention name first, then the older one
    (``ATTRIBUTE_NAMES``); written out longhand because it runs once per span.
    """
    if not attrs:
        return _EMPTY_DERIVED
    get = attrs.get
    status = get("http.response.status_code")
    if status is None:
        status = get("http.status_code")
    method = get("http.request.method") or get("http.method")
    path = get("url.path") or get("http.target")
    peer = get("service.peer.name") or get("peer.service")
    address = get("server.address") or get("net.peer.name")
    rpc_service, rpc_method = get("rpc.service"), get("rpc.method")
    if rpc_method is not None or rpc_service is not None:
        rpc_service, rpc_method = _rpc(rpc_service, rpc_method)
    return (
        None if status is None else _as_status(status),
        None if method is None else _as_str(method),
        _as_str(get("http.route") or None),
        _path_of(path, None if path else (get("url.full") or get("http.url"))),
        None if peer is None else _as_str(peer),
        None if address is None else _as_str(address),
        rpc_service,
        rpc_method,
    )


def _rpc(service: Any, method: Any) -> tuple[str | None, str | None]:
    """rpc.service and rpc.method; the new fully-qualified ``pkg.Service/Method`` is split."""
    service, method = _as_str(service or None), _as_str(method or None)
    if service is None and method and "/" in method:
        service = method.rsplit("/", 1)[0] or None
    return service, method


_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False).encode


def attributes_json(attrs: Mapping[str, Any]) -> str | None:
    """The span attributes as one JSON object (None when there are none)."""
    if not attrs:
        return None
    try:
        return _ENCODE(attrs)
    except ValueError:  # NaN/Infinity doubles: keep them as strings, JSON has no such numbers
        return _ENCODE(_finite(attrs))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# -- the columns ----------------------------------------------------------------------------

COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "service", "version", "env",
    "start_ns", "end_ns", "status_code", "status_message",
    "http_status", "method", "route", "path", "peer_service", "server_address", "rpc_service", "rpc_method",
    "exception_type", "exception_message", "attributes",
)
"""The order of the values in a span row (``SpanColumns.rows``)."""


@dataclass
class SpanColumns:
    """Spans collected as row tuples (in ``COLUMNS`` order) and/or ready Arrow tables of
    ``CORE`` (from ``ingest.otlp_columnar``), plus the rejects met on the way."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rejects: list[tuple[int, str, str]] = field(default_factory=list)
    tables: list[pa.Table] = field(default_factory=list)
    spans_rejected: int = 0
    """Spans lost to the rejects (a rejected resource loses every span it holds)."""

    def __len__(self) -> int:
        return len(self.rows) + sum(t.num_rows for t in self.tables)

    def add(
        self, resource: Resource, *, trace_id: str, span_id: str, parent_span_id: str, name: str,
        kind: str, start_ns: int, end_ns: int | None, status_code: str, status_message: str | None,
        attrs: Mapping[str, Any], exception: tuple[str | None, str | None],
    ) -> None:
        """Append one span; the derived columns are read from ``attrs``."""
        self.rows.append(
            (trace_id, span_id, parent_span_id, name, kind, resource.service, resource.version,
             resource.env, start_ns, end_ns, status_code, status_message or None)
            + derive(attrs) + exception + (attributes_json(attrs),)
        )

    def reject(self, line_no: int, reason: str, raw: str, *, spans: int = 1) -> None:
        """Record something that could not be read (holding ``spans`` spans)."""
        self.rejects.append((line_no, reason, raw[:65536]))
        self.spans_rejected += spans

    def extend(self, other: "SpanColumns") -> None:
        """Append every span and reject of ``other``."""
        self.rows.extend(other.rows)
        self.rejects.extend(other.rejects)
        self.spans_rejected += other.spans_rejected
        self.tables.extend(other.tables)

    def core_table(self) -> pa.Table:
        """Every span as one table of ``CORE`` (times still in nanoseconds)."""
        parts = list(self.tables)
        if self.rows or not parts:
            if self.rows:
                columns = dict(zip(COLUMNS, map(list, zip(*self.rows))))
            else:
                columns = {c: [] for c in COLUMNS}
            parts.append(pa.table([pa.array(columns[f.name], f.type) for f in CORE], schema=CORE))
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def to_table(self, *, source_format: str, source_file: str) -> pa.Table:
        """The spans as a table of exactly ``meshlens.schema.SPANS``."""
        core = self.core_table()
        return build_table({c: core.column(c) for c in COLUMNS}, source_format=source_format, source_file=source_file)


CORE = pa.schema([
    (name, pa.int64() if name in ("start_ns", "end_ns") else pa.int32() if name == "http_status" else pa.string())
    for name in COLUMNS
])
"""The span columns as the readers produce them (before times, routes and source columns)."""


def build_table(cols: Mapping[str, Any], *, source_format: str, source_file: str) -> pa.Table:
    """Columns (lists or Arrow arrays, times in ns) -> a table conforming to ``schema.SPANS``."""
    n = len(cols["trace_id"])
    arrays: dict[str, Any] = {}
    start = _arrow(cols["start_ns"], pa.int64())
    end = _arrow(cols["end_ns"], pa.int64())
    arrays["start_ts"] = pc.divide(start, 1000).cast(schema.TS)
    arrays["end_ts"] = pc.divide(end, 1000).cast(schema.TS)
    arrays["duration_ms"] = pc.divide(pc.subtract(end, start).cast(pa.float64(), safe=False), 1e6)
    for fld in schema.SPANS:
        if fld.name in cols and fld.name not in arrays:
            arrays[fld.name] = _arrow(cols[fld.name], fld.type)
    arrays["route"] = _fill_routes(arrays["route"], arrays["path"])
    arrays["source_format"] = pa.repeat(pa.scalar(source_format, pa.string()), n)
    arrays["source_file"] = pa.repeat(pa.scalar(source_file, pa.string()), n)
    return pa.Table.from_arrays([arrays[f.name] for f in schema.SPANS], schema=schema.SPANS)


def _arrow(values: Any, typ: pa.DataType) -> Any:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values if values.type == typ else values.cast(typ)
    return pa.array(values, typ)


def _fill_routes(route: Any, path: Any) -> Any:
    """http.route where given, else the templated path (meshlens.routes when available).

    Only the paths of spans without a route are templated.
    """
    template = _template_function()
    missing = pc.and_(pc.is_null(route), pc.is_valid(path))
    if template is None or not pc.any(missing).as_py():
        return route
    todo = pc.filter(path, missing)
    templated = template(todo if isinstance(todo, pa.ChunkedArray) else pa.chunked_array([todo]))
    route = route.combine_chunks() if isinstance(route, pa.ChunkedArray) else route
    missing = missing.combine_chunks() if isinstance(missing, pa.ChunkedArray) else missing
    return pc.replace_with_mask(route, missing, templated)


@functools.cache
def _template_function() -> Callable[[pa.ChunkedArray], pa.Array] | None:
    """Vectorised meshlens.routes.template_series, imported lazily (None while it is absent)."""
    try:
        import polars as pl

        from meshlens.routes import template_series
    except ImportError:
        return None

    def template(paths: pa.ChunkedArray) -> pa.Array:
        series = template_series(pl.Series("path", paths, dtype=pl.String))
        return series.to_arrow().cast(pa.string())

    return template


def rejects_table(rejects: list[tuple[int, str, str]], *, source_file: str, source_format: str) -> pa.Table:
    """Rejects as a ``schema.QUARANTINE`` table."""
    from meshlens.lake import now_utc

    n = len(rejects)
    return pa.Table.from_pydict(
        {
            "source_file": [source_file] * n,
            "line_no": [r[0] for r in rejects],
            "reason": [r[1] for r in rejects],
            "raw": [r[2] for r in rejects],
            "source_format": [source_format] * n,
            "rejected_at": [now_utc()] * n,
        },
        schema=schema.QUARANTINE,
    )
