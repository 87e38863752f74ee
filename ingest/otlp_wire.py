"""A lean, wire-compatible view of ``ExportTraceServiceRequest`` for the hot decode loop.

Reading every attribute through the generated OTLP classes costs two Python wrapper objects
per attribute (``KeyValue`` and ``AnyValue``), several times the cost of decoding the span
itself. This module declares, at import time, message types with the same field numbers as
``opentelemetry.proto`` but with ``attributes`` as ``repeated bytes``: upb hands each
``KeyValue`` over as its raw encoding, and ``AttributeCache`` maps that encoding to
``(key, value)`` and to its JSON fragment ``"key":value``. Attribute values repeat heavily
(method, status, route, host, user agent), so most lookups are one C-level dict hit; a miss
decodes the bytes with the real ``KeyValue`` class.

Only the fields meshlens stores are declared; the others are skipped as unknown fields.
Protobuf guarantees the same bytes parse identically under both declarations.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from ingest.otlp_common import _ENCODE, _finite  # one JSON encoding of attributes for both readers

_PACKAGE = "meshlens.otlpwire"
_OPT, _REP = 1, 3
_BYTES, _STRING, _MESSAGE, _INT32, _FIXED64 = 12, 9, 11, 5, 6

_MESSAGES: dict[str, list[tuple[str, int, int, int, str | None]]] = {
    "Request": [("resource_spans", 1, _MESSAGE, _REP, "ResourceSpans")],
    "ResourceSpans": [("resource", 1, _MESSAGE, _OPT, "Resource"), ("scope_spans", 2, _MESSAGE, _REP, "ScopeSpans")],
    "Resource": [("attributes", 1, _BYTES, _REP, None)],
    "ScopeSpans": [("spans", 2, _MESSAGE, _REP, "Span")],
    "Span": [
        ("trace_id", 1, _BYTES, _OPT, None), ("span_id", 2, _BYTES, _OPT, None),
        ("parent_span_id", 4, _BYTES, _OPT, None), ("name", 5, _STRING, _OPT, None),
        ("kind", 6, _INT32, _OPT, None), ("start_time_unix_nano", 7, _FIXED64, _OPT, None),
        ("end_time_unix_nano", 8, _FIXED64, _OPT, None), ("attributes", 9, _BYTES, _REP, None),
        ("events", 11, _MESSAGE, _REP, "Event"), ("status", 15, _MESSAGE, _OPT, "Status"),
    ],
    "Event": [("name", 2, _STRING, _OPT, None), ("attributes", 3, _BYTES, _REP, None)],
    "Status": [("message", 2, _STRING, _OPT, None), ("code", 3, _INT32, _OPT, None)],
}


_OUTER_MESSAGES: dict[str, list[tuple[str, int, int, int, str | None]]] = {
    "Request": [("resource_spans", 1, _MESSAGE, _REP, "ResourceSpans")],
    "ResourceSpans": [("resource", 1, _MESSAGE, _OPT, "Resource"), ("scope_spans", 2, _MESSAGE, _REP, "ScopeSpans")],
    "Resource": [("attributes", 1, _BYTES, _REP, None)],
    "ScopeSpans": [("spans", 2, _BYTES, _REP, None)],
}
"""The outer levels only: each span stays its raw bytes (``ingest.otlp_columnar`` reads them)."""

_KEYVALUE = "@KeyValue"  # the real opentelemetry.proto.common.v1.KeyValue
_VALIDATE_MESSAGES: dict[str, list[tuple[str, int, int, int, str | None]]] = {
    "Request": [("resource_spans", 1, _MESSAGE, _REP, "ResourceSpans")],
    "ResourceSpans": [("resource", 1, _MESSAGE, _OPT, "Resource"), ("scope_spans", 2, _MESSAGE, _REP, "ScopeSpans")],
    "Resource": [("attributes", 1, _MESSAGE, _REP, _KEYVALUE)],
    "ScopeSpans": [("spans", 2, _MESSAGE, _REP, "Span")],
    "Span": [
        ("name", 5, _STRING, _OPT, None), ("attributes", 9, _MESSAGE, _REP, _KEYVALUE),
        ("events", 11, _MESSAGE, _REP, "Event"), ("status", 15, _MESSAGE, _OPT, "Status"),
    ],
    "Event": [("name", 2, _STRING, _OPT, None), ("attributes", 3, _MESSAGE, _REP, _KEYVALUE)],
    "Status": [("message", 2, _STRING, _OPT, None)],
}
"""What must parse for the readers to read every span: each string is UTF-8 and each
attribute (resource, span, event) a well-formed ``KeyValue``; no Python object is kept."""

_EVENT_MESSAGES: dict[str, list[tuple[str, int, int, int, str | None]]] = {
    "Spans": [("spans", 1, _MESSAGE, _REP, "Span")],
    "Span": [("events", 11, _MESSAGE, _REP, "Event")],
    "Event": [("name", 2, _STRING, _OPT, None), ("attributes", 3, _BYTES, _REP, None)],
}


def _build(messages: dict[str, list[tuple[str, int, int, int, str | None]]], package: str,
           root: str = "Request") -> Any:
    """Register lean messages in a private descriptor pool; returns the ``root`` class."""
    proto = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package, syntax="proto3")
    for name, fields in messages.items():
        message = proto.message_type.add(name=name)
        for field_name, number, field_type, label, type_name in fields:
            added = message.field.add(name=field_name, number=number, type=field_type, label=label)
            if type_name == _KEYVALUE:
                added.type_name = "." + KeyValue.DESCRIPTOR.full_name
            elif type_name:
                added.type_name = f".{package}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    if any(type_name == _KEYVALUE for fields in messages.values() for *_, type_name in fields):
        common = descriptor_pb2.FileDescriptorProto()
        KeyValue.DESCRIPTOR.file.CopyToProto(common)
        pool.Add(common)
        proto.dependency.append(common.name)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{root}"))


Request = _build(_MESSAGES, _PACKAGE)
"""Wire-compatible ExportTraceServiceRequest with attributes as raw KeyValue bytes."""

OuterRequest = _build(_OUTER_MESSAGES, _PACKAGE + "outer")
"""Wire-compatible ExportTraceServiceRequest whose spans are raw bytes."""

ResourceOnly = _build(_OUTER_MESSAGES, _PACKAGE + "resource", root="Resource")
"""A Resource with its attributes as raw KeyValue bytes."""

ValidateRequest = _build(_VALIDATE_MESSAGES, _PACKAGE + "validate")
"""Wire-compatible ExportTraceServiceRequest whose parsing checks every string and attribute."""

EventsOnly = _build(_EVENT_MESSAGES, _PACKAGE + "events", root="Span")
"""Wire-compatible Span with only its events."""

EventSpans = _build(_EVENT_MESSAGES, _PACKAGE + "eventspans", root="Spans")
"""Many spans (as ``EventsOnly``), each framed as field 1: their events in one parse."""

_QUOTE = json.encoder.encode_basestring  # the C string quoter (ensure_ascii=False)


class BadAttribute(ValueError):
    """A KeyValue whose bytes do not decode."""


class AttributeCache(dict):  # type: ignore[type-arg]
    """KeyValue bytes -> (key, value); ``fragments`` holds bytes -> ``"key":value`` JSON."""

    max_entries = 50_000

    def __init__(self) -> None:
        super().__init__()
        self.fragments: dict[bytes, str] = {}

    def __missing__(self, raw: bytes) -> tuple[str, Any]:
        pair = _short_string_pair(raw) or _decode_pair(raw)
        if len(self) >= self.max_entries:
            self.clear()
            self.fragments.clear()
        self[raw] = pair
        self.fragments[raw] = _fragment(pair)
        return pair

    def json(self, raws: Any) -> str:
        """The JSON object of a span's attributes (call after the pairs were looked up)."""
        fragments = self.fragments
        try:
            return "{" + ",".join(map(fragments.__getitem__, raws)) + "}"
        except KeyError:  # the cache was cleared in between: rebuild the missing fragments
            return "{" + ",".join(_fragment(self[r]) for r in raws) + "}"


def _short_string_pair(raw: bytes) -> tuple[str, str] | None:
    """The common case decoded by hand: a key and a string value, each under 128 bytes.

    Layout: 0x0A len key 0x12 len (0x0A len value). Anything else returns None.
    """
    size = len(raw)
    if size < 4 or raw[0] != 0x0A or raw[1] >= 0x80:
        return None
    end = 2 + raw[1]
    if end + 2 > size or raw[end] != 0x12 or raw[end + 1] >= 0x80 or end + 2 + raw[end + 1] != size:
        return None
    if raw[end + 1] == 0:
        return None
    if raw[end + 2] != 0x0A or raw[end + 3] >= 0x80 or end + 4 + raw[end + 3] != size:
        return None
    try:
        return raw[2:end].decode(), raw[end + 4:].decode()
    except UnicodeDecodeError:
        return None


def _decode_pair(raw: bytes) -> tuple[str, Any]:
    try:
        kv = KeyValue.FromString(raw)
    except DecodeError as exc:
        raise BadAttribute(f"an attribute does not decode ({exc})") from None
    return kv.key, any_value(kv.value)


def _fragment(pair: tuple[str, Any]) -> str:
    key, value = pair
    if value.__class__ is str:
        return _QUOTE(key) + ":" + _QUOTE(value)
    try:
        return _ENCODE({pair[0]: pair[1]})[1:-1]
    except ValueError:  # NaN or Infinity: JSON has no such numbers, keep them as text
        return _ENCODE({pair[0]: _finite(pair[1])})[1:-1]


def any_value(value: Any) -> Any:
    """An AnyValue message -> a plain Python value (bytes become base64 text)."""
    import base64

    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, which)
