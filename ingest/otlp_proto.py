"""OTLP protobuf trace requests -> spans: single messages and the Collector's framed stream.

A file holds either one ``ExportTraceServiceRequest`` (what ``POST /v1/traces`` with
``application/x-protobuf`` carries, and what ``.pb`` test files hold) or, as the OpenTelemetry
Collector's file exporter writes with ``format: proto``, a stream of messages each preceded by
its length as a 4-byte big-endian unsigned integer. A single request always begins with the
byte 0x0A (field 1, ``resource_spans``), a framed stream with a length whose first byte is
0x00 for any message under 16 MiB, so the first byte tells them apart.

The decode path is the hot loop of both file ingest and the receiver. Requests are decoded
columnar by ``ingest.otlp_columnar`` (many requests at once, no Python object per span); the
per-span reader (``ingest.otlp_spans``: upb objects, one row tuple per span) is its reference
and its fallback for any message the columnar decoder finds unusual, so both give the same
rows and the same rejects (tests/test_traces_columnar.py checks this on random requests).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest import otlp_columnar, otlp_wire
from ingest.otlp_common import SpanColumns
from ingest.otlp_spans import raw_text

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


def frames(data: bytes) -> Iterator[tuple[int, int, int, str]]:
    """(index, start, end, reason) of each message of a single message or a framed stream;
    a frame that cannot be read has start -1 and a reason."""
    if not data:
        return
    if data[0] == _FIELD1_LEN or len(data) < 4:
        yield 1, 0, len(data), ""
        return
    pos, index = 0, 1
    while pos < len(data):
        if pos + 4 > len(data):
            yield index, -1, -1, f"truncated length prefix at byte {pos}"
            return
        (length,) = struct.unpack_from(">I", data, pos)
        if pos + 4 + length > len(data):
            yield index, -1, -1, f"message {index} at byte {pos} claims {length} bytes, only {len(data) - pos - 4} left"
            return
        yield index, pos + 4, pos + 4 + length, ""
        pos += 4 + length
        index += 1


def parse(data: bytes, *, first_line_no: int = 1) -> SpanColumns:
    """Every span of a file; an undecodable message is one reject (its number as line).

    The spans are decoded columnar (``ingest.otlp_columnar``) in batches of messages, each
    a slice of ``data`` (no copy with the compiled scanner).
    """
    out = SpanColumns()
    batch: list[tuple[int, int, int]] = []
    size = 0
    for index, start, end, reason in frames(data):
        line_no = first_line_no + index - 1
        if start < 0:
            out.reject(line_no, reason, raw_text(data[-4096:]))
            continue
        batch.append((start, end, line_no))
        size += end - start
        if size >= BATCH_BYTES:
            otlp_columnar.decode_frames(data, batch, out)
            batch, size = [], 0
    otlp_columnar.decode_frames(data, batch, out)
    return out


BATCH_BYTES = 32 * 1024 * 1024
"""Messages decoded together (the columnar decoder holds their spans' bytes twice)."""


def parse_request(body: bytes) -> SpanColumns:
    """One OTLP/HTTP protobuf body (exactly one message)."""
    return parse_requests([body])


def parse_requests(bodies: list[bytes]) -> SpanColumns:
    """Several OTLP/HTTP protobuf bodies decoded together (each its own line 1)."""
    out = SpanColumns()
    otlp_columnar.decode_messages([(body, 1) for body in bodies], out)
    return out


def check_request(body: bytes) -> tuple[int, int, list[str]]:
    """(spans that will be stored, spans that will be rejected, reasons) of one request body.

    What the receiver does before acknowledging. ``otlp_columnar.count_valid`` proves most
    requests plain without decoding them; any other request is decoded here exactly as
    publishing will decode it, so the counts are exact (a resource that does not decode
    rejects all of its spans). DecodeError when the body is not a readable request at all.
    """
    plain = otlp_columnar.count_valid(body)
    if plain is not None:
        return plain, 0, []
    request = otlp_wire.OuterRequest.FromString(body)  # DecodeError: not protobuf (400)
    total = sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
    columns = parse_requests([body])
    stored, reasons = len(columns), [r[1] for r in columns.rejects]
    whole = [r for r in reasons if not r.startswith(("span:", "resource:"))]
    if whole:  # the message itself does not decode (e.g. a name that is not UTF-8)
        raise DecodeError(whole[0])
    return stored, total - stored, reasons
