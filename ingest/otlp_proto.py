"""OTLP protobuf trace requests -> spans: single messages and the Collector's framed stream.

A file holds either one ``ExportTraceServiceRequest`` (what ``POST /v1/traces`` with
``application/x-protobuf`` carries, and what ``.pb`` test files hold) or, as the OpenTelemetry
Collector's file exporter writes with ``format: proto``, a stream of messages each preceded by
its length as a 4-byte big-endian unsigned integer. A single request always begins with the
byte 0x0A (field 1, ``resource_spans``), a framed stream with a length whose first byte is
0x00 for any message under 16 MiB, so the first byte tells them apart.

The decode path is the hot loop of both file ingest and the receiver: it walks the upb
message objects once, appending to column lists, and touches each attribute once.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.otlp_common import (
    EXCEPTION_EVENT,
    EXCEPTION_MESSAGE,
    EXCEPTION_TYPE,
    KINDS,
    STATUS_CODES,
    SpanColumns,
    resource_from_attributes,
)

NAME = "otlp_proto"

_FIELD1_LEN = 0x0A  # tag of field 1, wire type 2 (length-delimited)
_RESOURCE_TAGS = (0x0A, 0x12, 0x1A)  # ResourceSpans fields 1-3, length-delimited


def sniff(head: bytes) -> bool:
    """True when the first bytes look like an OTLP protobuf trace request or framed stream."""
    if len(head) >= 5 and head[0] != _FIELD1_LEN:
        (length,) = struct.unpack_from(">I", head)
        return 0 < length < 1 << 30 and _looks_like_request(head[4:4 + length], whole=length <= len(head) - 4)
    return _looks_like_request(head, whole=False)


def _looks_like_request(head: bytes, *, whole: bool) -> bool:
    """The bytes start like ResourceSpans field 1; when complete, they must parse."""
    if len(head) < 3 or head[0] != _FIELD1_LEN:
        return False
    length, pos = _varint(head, 1)
    if length is None or length < 2 or head[pos:pos + 1] not in (b"\x0a", b"\x12", b"\x1a"):
        return False
    if whole or pos + length <= len(head):
        end = len(head) if whole else pos + length
        try:
            ExportTraceServiceRequest.FromString(head[:end])
        except DecodeError:
            return False
    return _is_binary(head)


def _is_binary(head: bytes) -> bool:
    """Text files never hold NUL or most control bytes; ids and varints almost always do."""
    sample = head[:65536]
    return any(b < 0x09 or 0x0E <= b < 0x20 for b in sample) or not _is_utf8(sample)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _varint(data: bytes, pos: int) -> tuple[int | None, int]:
    result = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return result, pos
        shift += 7
    return None, pos


def messages(data: bytes) -> Iterator[tuple[int, bytes | None, str]]:
    """(index, message bytes or None, reason) for a single message or a framed stream."""
    if not data:
        return
    if data[0] == _FIELD1_LEN or len(data) < 4:
        yield 1, data, ""
        return
    pos, index = 0, 1
    while pos < len(data):
        if pos + 4 > len(data):
            yield index, None, f"truncated length prefix at byte {pos}"
            return
        (length,) = struct.unpack_from(">I", data, pos)
        if pos + 4 + length > len(data):
            yield index, None, f"message {index} at byte {pos} claims {length} bytes, only {len(data) - pos - 4} left"
            return
        yield index, data[pos + 4:pos + 4 + length], ""
        pos += 4 + length
        index += 1


def parse(data: bytes, *, first_line_no: int = 1) -> SpanColumns:
    """Every span of a file; an undecodable message is one reject (its number as line)."""
    out = SpanColumns()
    for index, message, reason in messages(data):
        line_no = first_line_no + index - 1
        if message is None:
            out.reject(line_no, reason, _raw(data[-4096:]))
            continue
        read_message(message, out, line_no=line_no)
    return out


def parse_request(body: bytes) -> SpanColumns:
    """One OTLP/HTTP protobuf body (exactly one message)."""
    out = SpanColumns()
    read_message(body, out, line_no=1)
    return out


def read_message(message: bytes, out: SpanColumns, *, line_no: int) -> None:
    """Decode one ExportTraceServiceRequest into ``out`` (a reject when undecodable)."""
    try:
        request = ExportTraceServiceRequest.FromString(message)
    except DecodeError as exc:
        out.reject(line_no, f"not a valid OTLP protobuf message ({exc})", _raw(message))
        return
    read_request(request, out, line_no=line_no)


def _raw(data: bytes) -> str:
    return "base64:" + base64.b64encode(data[:49152]).decode("ascii")


def read_request(request: Any, out: SpanColumns, *, line_no: int) -> None:
    """Append every span of a decoded request to ``out``."""
    for rs in request.resource_spans:
        resource = resource_from_attributes(attributes(rs.resource.attributes))
        for scope in rs.scope_spans:
            for span in scope.spans:
                _read_span(span, resource, out, line_no)


def _read_span(span: Any, resource: Any, out: SpanColumns, line_no: int) -> None:
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    reason = _bad_ids(trace_id, span_id, parent) or _bad_enums(span)
    if not reason and not span.start_time_unix_nano:
        reason = "startTimeUnixNano is missing"
    if reason:
        out.reject(line_no, f"span: {reason}", _raw(span.SerializeToString()))
        return
    status = span.status
    out.add(
        resource, trace_id=trace_id.hex(), span_id=span_id.hex(), parent_span_id=parent.hex(),
        name=span.name, kind=KINDS[span.kind], start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano or None, status_code=STATUS_CODES[status.code],
        status_message=status.message, attrs=attributes(span.attributes),
        exception=_exception(span.events) if span.events else (None, None),
    )


def _bad_ids(trace_id: bytes, span_id: bytes, parent: bytes) -> str:
    if len(trace_id) != 16 or not any(trace_id):
        return f"trace_id {trace_id.hex()!r} is not 16 non-zero bytes"
    if len(span_id) != 8 or not any(span_id):
        return f"span_id {span_id.hex()!r} is not 8 non-zero bytes"
    if parent and len(parent) != 8:
        return f"parent_span_id {parent.hex()!r} is not 8 bytes"
    return ""


def _bad_enums(span: Any) -> str:
    if not 0 <= span.kind < len(KINDS):
        return f"unknown span kind {span.kind}"
    if not 0 <= span.status.code < len(STATUS_CODES):
        return f"unknown status code {span.status.code}"
    return ""


def _exception(events: Any) -> tuple[str | None, str | None]:
    for event in events:
        if event.name == EXCEPTION_EVENT:
            attrs = attributes(event.attributes)
            etype, message = attrs.get(EXCEPTION_TYPE), attrs.get(EXCEPTION_MESSAGE)
            return (None if etype is None else str(etype)), (None if message is None else str(message))
    return None, None


def attributes(items: Any) -> dict[str, Any]:
    """A repeated KeyValue -> {key: plain value}."""
    return {kv.key: any_value(kv.value) for kv in items}


def any_value(value: Any) -> Any:
    """An AnyValue message -> a plain Python value (bytes become base64 text)."""
    text = value.string_value
    if text:
        return text
    which = value.WhichOneof("value")
    if which is None or which == "string_value":
        return None if which is None else ""
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, which)
