"""OTLP/JSON trace requests -> spans: the specification's encoding, tolerant of protojson style.

Reads one ``ExportTraceServiceRequest`` (== ``TracesData``) per file, or one per line as the
OpenTelemetry Collector's file exporter writes them (JSON Lines); a JSON array of requests is
accepted too. The JSON is walked by hand rather than with ``google.protobuf.json_format``
because ``Parse`` reads the specification's hex ids as base64 and yields garbage ids.

Accepted beyond the letter of the specification (real producers emit these):
- ids in base64 (protojson) as well as hex, in any letter case;
- enums as names (``SPAN_KIND_CLIENT``, ``STATUS_CODE_ERROR``) as well as integers;
- ``instrumentationLibrarySpans`` (very old producers) as well as ``scopeSpans``, and
  snake_case keys (``resource_spans``, ``trace_id``, ...);
- 64-bit integers as JSON numbers as well as decimal strings.

A line that is not JSON, or not a trace request, is rejected as a whole; a span with a bad id,
kind, status or start time is rejected alone. Nothing raises: every problem is a reject.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ingest.otlp_common import (
    EXCEPTION_EVENT,
    EXCEPTION_MESSAGE,
    EXCEPTION_TYPE,
    KINDS,
    STATUS_CODES,
    Resource,
    SpanColumns,
    SpanError,
    enum_name,
    id_hex,
    resource_from_attributes,
    unix_nano,
)

NAME = "otlp_json"

_RESOURCE_SPANS = ("resourceSpans", "resource_spans")
_SCOPE_SPANS = ("scopeSpans", "scope_spans", "instrumentationLibrarySpans", "instrumentation_library_spans")


def sniff(head: bytes) -> bool:
    """True when the first bytes look like OTLP/JSON traces (a JSON object with resourceSpans)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text.startswith((b"{", b"[")):
        return False
    window = text[:4096]
    return b'"resourceSpans"' in window or b'"resource_spans"' in window


def parse(data: bytes, *, first_line_no: int = 1) -> SpanColumns:
    """Every span of a file (one request, or one per line); bad parts become rejects."""
    out = SpanColumns()
    text = _decode_text(data, out, first_line_no)
    if text is None:
        return out
    whole = _loads(text)
    if whole is not _FAILED:
        for doc in whole if isinstance(whole, list) else [whole]:
            read_request(doc, out, line_no=first_line_no, raw=text)
        return out
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and _loads(lines[first]) is _FAILED and lines[first].strip() in ("{", "["):
        # pretty-printed JSON that does not parse: one reject for the file, not one per line
        out.reject(first_line_no, f"not valid JSON ({_json_error(text)})", text)
        return out
    for offset, line in enumerate(lines):
        if line.strip():
            line_no = first_line_no + offset
            doc = _loads(line)
            if doc is _FAILED:
                out.reject(line_no, "not valid JSON", line)
            else:
                read_request(doc, out, line_no=line_no, raw=line)
    return out


def parse_request(body: bytes) -> SpanColumns:
    """One OTLP/HTTP JSON body (a single request); a body that is not JSON is one reject."""
    out = SpanColumns()
    text = _decode_text(body, out, 1)
    if text is not None:
        doc = _loads(text)
        if doc is _FAILED:
            out.reject(1, "not valid JSON", text)
        else:
            read_request(doc, out, line_no=1, raw=text)
    return out


_FAILED = object()


def _json_error(text: str) -> str:
    try:
        json.loads(text)
    except ValueError as exc:
        return str(exc)
    except RecursionError:
        return "nested too deeply"
    return "no error"


def _decode_text(data: bytes, out: SpanColumns, line_no: int) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        out.reject(line_no, f"not UTF-8 text ({exc.reason} at byte {exc.start})", data[:4096].decode("utf-8", "replace"))
        return None


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _FAILED


def read_request(doc: Any, out: SpanColumns, *, line_no: int, raw: str) -> None:
    """Append the spans of one decoded request to ``out``; structural problems become rejects."""
    try:
        resource_spans = _request_list(doc)
    except SpanError as exc:
        out.reject(line_no, str(exc), raw)
        return
    for rs in resource_spans:
        try:
            resource, scopes = _resource(rs)
        except SpanError as exc:
            out.reject(line_no, str(exc), _dump(rs), spans=max(1, _span_count(rs)))
            continue
        for span in _spans(scopes, out, line_no):
            _read_span(span, resource, out, line_no)


def _request_list(doc: Any) -> list[Any]:
    if not isinstance(doc, dict):
        raise SpanError("not an OTLP trace request (expected a JSON object with resourceSpans)")
    key = next((k for k in _RESOURCE_SPANS if k in doc), None)
    if key is None:
        if doc:
            raise SpanError("not an OTLP trace request (no resourceSpans)")
        return []  # {} is a valid, empty request
    value = doc[key]
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpanError("resourceSpans is not a list")
    return value


def _resource(rs: Any) -> tuple[Resource, list[Any]]:
    if not isinstance(rs, dict):
        raise SpanError("a resourceSpans entry is not an object")
    res = rs.get("resource") or {}
    if not isinstance(res, dict):
        raise SpanError("resource is not an object")
    attrs = _attributes(res.get("attributes"))
    scopes: list[Any] = []
    for key in _SCOPE_SPANS:
        value = rs.get(key)
        if value is not None:
            if not isinstance(value, list):
                raise SpanError(f"{key} is not a list")
            scopes.extend(value)
    return resource_from_attributes(attrs), scopes


def _span_count(rs: Any) -> int:
    """How many spans a (rejected) resourceSpans entry holds, as far as its shape tells."""
    if not isinstance(rs, dict):
        return 0
    scopes = [scope for key in _SCOPE_SPANS if isinstance(rs.get(key), list) for scope in rs[key]]
    return sum(len(scope["spans"]) for scope in scopes
               if isinstance(scope, dict) and isinstance(scope.get("spans"), list))


def _spans(scopes: list[Any], out: SpanColumns, line_no: int) -> Iterator[Any]:
    for scope in scopes:
        spans = scope.get("spans") if isinstance(scope, dict) else None
        if not isinstance(scope, dict) or not isinstance(spans, (list, type(None))):
            out.reject(line_no, "a scopeSpans entry is not an object with a spans list", _dump(scope))
            continue
        yield from spans or ()


def _read_span(span: Any, resource: Resource, out: SpanColumns, line_no: int) -> None:
    try:
        fields = _span_fields(span)
    except SpanError as exc:
        out.reject(line_no, f"span: {exc}", _dump(span))
        return
    out.add(resource, **fields)


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _span_fields(span: Any) -> dict[str, Any]:
    if not isinstance(span, dict):
        raise SpanError("not an object")
    parent = _get(span, "parentSpanId", "parent_span_id")
    status = span.get("status") or {}
    name = span.get("name")
    if not isinstance(status, dict):
        raise SpanError("status is not an object")
    if name is not None and not isinstance(name, str):
        raise SpanError("name is not a string")
    message = status.get("message")
    return {
        "trace_id": id_hex(_get(span, "traceId", "trace_id"), nbytes=16, what="traceId"),
        "span_id": id_hex(_get(span, "spanId", "span_id"), nbytes=8, what="spanId"),
        "parent_span_id": id_hex(parent, nbytes=8, what="parentSpanId") if parent else "",
        "name": name or "",
        "kind": enum_name(span.get("kind"), KINDS, prefix="SPAN_KIND_", what="span kind"),
        "start_ns": unix_nano(_get(span, "startTimeUnixNano", "start_time_unix_nano"), what="startTimeUnixNano", required=True),
        "end_ns": unix_nano(_get(span, "endTimeUnixNano", "end_time_unix_nano"), what="endTimeUnixNano", required=False),
        "status_code": enum_name(status.get("code"), STATUS_CODES, prefix="STATUS_CODE_", what="status code"),
        "status_message": message if isinstance(message, str) else None,
        "attrs": _attributes(span.get("attributes")),
        "exception": _exception(span.get("events")),
    }


def _exception(events: Any) -> tuple[str | None, str | None]:
    """exception.type and exception.message of the first ``exception`` event."""
    if not isinstance(events, list):
        return None, None
    for event in events:
        if isinstance(event, dict) and event.get("name") == EXCEPTION_EVENT:
            attrs = _attributes(event.get("attributes"))
            etype, message = attrs.get(EXCEPTION_TYPE), attrs.get(EXCEPTION_MESSAGE)
            return (None if etype is None else str(etype)), (None if message is None else str(message))
    return None, None


def _attributes(items: Any) -> dict[str, Any]:
    """A KeyValue list -> {key: plain value}."""
    if items is None:
        return {}
    if not isinstance(items, list):
        raise SpanError("attributes is not a list")
    attrs: dict[str, Any] = {}
    for kv in items:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise SpanError("an attribute is not an object with a string key")
        attrs[kv["key"]] = any_value(kv.get("value"))
    return attrs


_SCALARS = {
    "stringValue": str, "string_value": str, "boolValue": bool, "bool_value": bool,
    "doubleValue": float, "double_value": float, "bytesValue": str, "bytes_value": str,
}


def any_value(value: Any, depth: int = 0) -> Any:
    """An AnyValue object -> a plain Python value (int64 strings become ints)."""
    if not isinstance(value, dict) or depth > 32:
        return None
    for key, val in value.items():
        if key in ("intValue", "int_value"):
            return _int(val)
        if key in _SCALARS:
            return val if isinstance(val, _SCALARS[key]) else _scalar(val)
        if key in ("arrayValue", "array_value"):
            items = val.get("values") if isinstance(val, dict) else None
            return [any_value(v, depth + 1) for v in items] if isinstance(items, list) else []
        if key in ("kvlistValue", "kvlist_value"):
            items = val.get("values") if isinstance(val, dict) else None
            return _kvlist(items, depth + 1)
    return None


def _kvlist(items: Any, depth: int) -> dict[str, Any]:
    if not isinstance(items, list):
        return {}
    return {
        kv["key"]: any_value(kv.get("value"), depth)
        for kv in items
        if isinstance(kv, dict) and isinstance(kv.get("key"), str)
    }


def _int(val: Any) -> Any:
    if isinstance(val, int) and not isinstance(val, bool):
        return val
    if isinstance(val, str):
        stripped = val.lstrip("-")
        if stripped.isdigit() and len(stripped) <= 19:
            return int(val)
    return _scalar(val)


def _scalar(val: Any) -> Any:
    """A value of an unexpected type, kept as text so nothing is lost."""
    if val is None or isinstance(val, (str, int, float, bool)):
        return val
    return _dump(val)


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)[:65536]
    except (ValueError, TypeError, RecursionError):
        return repr(value)[:65536]
