"""The per-span OTLP protobuf reader: upb objects, one row tuple per span.

It is the reference of the columnar decoder (``ingest.otlp_columnar``) and its fallback for any
message that decoder finds unusual, so both give the same rows and the same rejects
(tests/test_traces_columnar.py checks this on random requests). Both share its attribute cache
(``ATTRIBUTES``), its reject text (``raw_text``) and its exception fields (``exception_fields``).
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf.message import DecodeError

from ingest import otlp_wire
from ingest.otlp_common import (
    EXCEPTION_EVENT,
    EXCEPTION_MESSAGE,
    EXCEPTION_TYPE,
    KINDS,
    STATUS_CODES,
    SpanColumns,
    derive,
    resource_from_attributes,
)


def read_message(message: bytes, out: SpanColumns, *, line_no: int) -> None:
    """Decode one ExportTraceServiceRequest into ``out`` (a reject when undecodable)."""
    try:
        request = otlp_wire.Request.FromString(message)
    except DecodeError as exc:
        out.reject(line_no, f"not a valid OTLP protobuf message ({exc})", raw_text(message))
        return
    read_request(request, out, line_no=line_no)


def raw_text(data: bytes) -> str:
    """A reject's raw text: the first 48 KiB of the bytes, base64."""
    return "base64:" + base64.b64encode(data[:49152]).decode("ascii")


ATTRIBUTES = otlp_wire.AttributeCache()


def read_request(request: Any, out: SpanColumns, *, line_no: int) -> None:
    """Append every span of a decoded (``otlp_wire.Request``) request to ``out``."""
    for rs in request.resource_spans:
        try:
            resource = resource_from_attributes(dict(map(ATTRIBUTES.__getitem__, rs.resource.attributes)))
        except otlp_wire.BadAttribute as exc:
            out.reject(line_no, f"resource: {exc}", raw_text(rs.SerializeToString()))
            continue
        head = (resource.service, resource.version, resource.env)
        for scope in rs.scope_spans:
            _read_spans(scope.spans, head, out, line_no)


def _read_spans(spans: Any, head: tuple[Any, ...], out: SpanColumns, line_no: int) -> None:
    """The hot loop: one row tuple per span, attributes through the cache."""
    rows, cache, lookup = out.rows, ATTRIBUTES, ATTRIBUTES.__getitem__
    for span in spans:
        trace_id, span_id, parent, kind = span.trace_id, span.span_id, span.parent_span_id, span.kind
        status = span.status
        code, start, end = status.code, span.start_time_unix_nano, span.end_time_unix_nano
        if (len(trace_id) != 16 or len(span_id) != 8 or (parent and len(parent) != 8) or not 0 < start <= _INT64_MAX
                or end > _INT64_MAX or not 0 <= kind < 6 or not 0 <= code < 3 or trace_id == _ZERO16
                or span_id == _ZERO8):
            out.reject(line_no, f"span: {_span_problem(span)}", raw_text(span.SerializeToString()))
            continue
        raws = list(span.attributes)  # materialise the bytes once: dict and JSON both read them
        try:
            attrs = dict(map(lookup, raws))
            exception = exception_fields(span.events) if span.events else _NO_EXCEPTION
        except otlp_wire.BadAttribute as exc:
            out.reject(line_no, f"span: {exc}", raw_text(span.SerializeToString()))
            continue
        rows.append(
            (trace_id.hex(), span_id.hex(), parent.hex(), span.name, KINDS[kind]) + head
            + (start, end or None, STATUS_CODES[code], status.message or None)
            + derive(attrs) + exception + ((cache.json(raws) if raws else None),)
        )


_NO_EXCEPTION = (None, None)
_ZERO16, _ZERO8 = bytes(16), bytes(8)
_INT64_MAX = 2**63 - 1  # the spans table stores nanoseconds as int64


def _span_problem(span: Any) -> str:
    """Why a span cannot be stored (the hot loop only knows that it cannot)."""
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16 or not any(trace_id):
        return f"trace_id {trace_id.hex()!r} is not 16 non-zero bytes"
    if len(span_id) != 8 or not any(span_id):
        return f"span_id {span_id.hex()!r} is not 8 non-zero bytes"
    if parent and len(parent) != 8:
        return f"parent_span_id {parent.hex()!r} is not 8 bytes"
    if not 0 <= span.kind < len(KINDS):
        return f"unknown span kind {span.kind}"
    if not 0 <= span.status.code < len(STATUS_CODES):
        return f"unknown status code {span.status.code}"
    if span.start_time_unix_nano > _INT64_MAX:
        return f"startTimeUnixNano {span.start_time_unix_nano} is out of range"
    if span.end_time_unix_nano > _INT64_MAX:
        return f"endTimeUnixNano {span.end_time_unix_nano} is out of range"
    return "startTimeUnixNano is missing"


def exception_fields(events: Any) -> tuple[str | None, str | None]:
    """exception.type and exception.message of the first ``exception`` event."""
    for event in events:
        if event.name == EXCEPTION_EVENT:
            attrs = dict(map(ATTRIBUTES.__getitem__, event.attributes))
            etype, message = attrs.get(EXCEPTION_TYPE), attrs.get(EXCEPTION_MESSAGE)
            return (None if etype is None else str(etype)), (None if message is None else str(message))
    return _NO_EXCEPTION
