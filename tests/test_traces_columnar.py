"""The columnar protobuf decoder and the receiver's columnar check against the per-span reader.

``otlp_spans.read_message`` (one Python object per field per span) is the reference: for
random requests - every attribute value type, both semantic conventions, duplicate keys,
characters JSON must escape, invalid spans, events, corrupted bytes - the columnar path must
give the same table and the same rejects, and ``count_valid`` the same answer as the
per-span check. Every test runs with both wire scanners (the compiled ``ingest._otlpscan``
and the numpy one) through the ``scanner`` fixture.
"""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ingest import otlp_columnar, otlp_proto, otlp_spans, otlp_wire
from ingest.otlp_common import SpanColumns
from tests.traces_support import BASE_NS, scanner  # noqa: F401 - a fixture

KEYS = list(otlp_columnar.NAMES) + ["other", 'k"q', "ключ", ""]
STRINGS = ["", "GET", "/a/b?x=1#f", "http://h:80/p/q?z", "http://h", "svc.pkg/Method", "/x", 'a"b\\c\n',
           "ünï", "0", "200", "12345678901", "x" * 130, "ab/"]


def _value(rng: random.Random, value: AnyValue, depth: int = 0) -> None:
    pick = rng.randrange(11)
    if pick < 3:
        value.string_value = rng.choice(STRINGS + [f"/v1/orders/{rng.randrange(9999)}"])
    elif pick < 5:
        value.int_value = rng.choice([0, 200, 503, -1, 2**40, -(2**63), 2**31])
    elif pick == 5:
        value.bool_value = rng.random() < 0.5
    elif pick == 6:
        value.double_value = rng.choice([0.0, 200.0, 2.5, float("nan"), float("inf"), 1e20])
    elif pick == 7 and depth < 2:
        for _ in range(rng.randrange(3)):
            _value(rng, value.array_value.values.add(), depth + 1)
    elif pick == 8 and depth < 2:
        kv = value.kvlist_value.values.add()
        kv.key = "inner"
        _value(rng, kv.value, depth + 1)
    elif pick == 9:
        value.bytes_value = rng.randbytes(rng.randrange(5))
    # else: an empty AnyValue


def _span(rng: random.Random, span: object, bad_rate: float) -> None:
    bad = rng.random() < bad_rate
    span.trace_id = rng.randbytes(15 if bad and rng.random() < 0.5 else 16)  # type: ignore[attr-defined]
    span.span_id = bytes(8) if rng.random() < bad_rate else rng.randbytes(8)  # type: ignore[attr-defined]
    if rng.random() < 0.7:
        span.parent_span_id = rng.randbytes(8)  # type: ignore[attr-defined]
    span.name = rng.choice(["op", "POST /x", "ü", ""])  # type: ignore[attr-defined]
    span.kind = rng.choice([0, 1, 2, 3, 4, 5] + ([7] if bad else []))  # type: ignore[attr-defined]
    if rng.random() > bad_rate:
        span.start_time_unix_nano = BASE_NS + rng.randrange(10**12)  # type: ignore[attr-defined]
    if rng.random() > 0.1:
        span.end_time_unix_nano = BASE_NS + 10**12 + rng.randrange(10**9)  # type: ignore[attr-defined]
    if rng.random() < 0.3:
        span.status.code = rng.choice([0, 1, 2] + ([5] if bad else []))  # type: ignore[attr-defined]
    if rng.random() < 0.2:
        span.status.message = rng.choice(["", "boom", "ä"])  # type: ignore[attr-defined]
    for _ in range(rng.randrange(10)):
        kv = span.attributes.add()  # type: ignore[attr-defined]
        kv.key = rng.choice(KEYS)
        _value(rng, kv.value)
    if rng.random() < 0.1:
        event = span.events.add()  # type: ignore[attr-defined]
        event.name = rng.choice(["exception", "log"])
        for key in ("exception.type", "exception.message"):
            kv = event.attributes.add()
            kv.key = key
            _value(rng, kv.value)


def _request(rng: random.Random, *, bad_rate: float) -> bytes:
    request = ExportTraceServiceRequest()
    for _ in range(rng.randrange(1, 3)):
        rs = request.resource_spans.add()
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", rng.choice(["a", "b"])
        for _ in range(rng.randrange(1, 3)):
            scope = rs.scope_spans.add()
            for _ in range(rng.randrange(30)):
                _span(rng, scope.spans.add(), bad_rate)
    return request.SerializeToString()


def _bad_resource(body: bytes) -> bytes:
    """The first resource gets an attribute whose key is not UTF-8 (its spans are rejected)."""
    outer = otlp_wire.OuterRequest.FromString(body)
    outer.resource_spans[0].resource.attributes.append(b"\x0a\x03\xff\xfe\xfd")
    return outer.SerializeToString()


def _corrupt(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    if data:
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def _rows(columns: SpanColumns) -> list[str]:
    table = columns.core_table()  # before routes and source columns, which both paths share
    return sorted(map(repr, zip(*[table.column(c).to_pylist() for c in table.column_names])))


def _reference(bodies: list[bytes]) -> SpanColumns:
    out = SpanColumns()
    for body in bodies:
        otlp_spans.read_message(body, out, line_no=1)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("bad_rate", [0.0005, 0.03])
def test_columnar_decoder_matches_the_per_span_reader(bad_rate: float, scanner: str) -> None:
    fast_rows = 0
    for seed in range(25):
        rng = random.Random(seed)
        bodies = [_request(rng, bad_rate=bad_rate) for _ in range(rng.randrange(1, 4))]
        if seed % 5 == 0:
            bodies[0] = _corrupt(rng, bodies[0])
        if seed % 7 == 0:
            bodies[-1] = _bad_resource(bodies[-1])
        expected, got = _reference(bodies), otlp_proto.parse_requests(bodies)
        assert _rows(got) == _rows(expected), seed
        assert sorted(r[1] for r in got.rejects) == sorted(r[1] for r in expected.rejects), seed
        fast_rows += sum(t.num_rows for t in got.tables)
    assert fast_rows > 0  # the columnar path itself was exercised, not only its fallback


def test_plain_spans_take_the_columnar_path_and_odd_values_match(scanner: str) -> None:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i, (key, value) in enumerate([("http.route", 'a"b'), ("url.path", "/p?q"), ("http.status_code", 2.0),
                                      ("url.full", "http://h/x/y#f"), ("rpc.method", "pkg.S/M")]):
        span = scope.spans.add()
        span.trace_id, span.span_id = bytes([i + 1]) * 16, bytes([i + 1]) * 8
        span.start_time_unix_nano = BASE_NS
        kv = span.attributes.add()
        kv.key = key
        if isinstance(value, float):
            kv.value.double_value = value
        else:
            kv.value.string_value = value
    body = request.SerializeToString()
    got = otlp_proto.parse_requests([body])
    assert len(got.tables) == 1 and not got.rows
    table = got.to_table(source_format="f", source_file="s")
    assert table.column("route").to_pylist()[0] == 'a"b'
    assert table.column("path").to_pylist()[1:4] == ["/p", None, "/x/y"]
    assert table.column("http_status").to_pylist()[2] == 2
    assert table.column("rpc_service").to_pylist()[4] == "pkg.S"
    assert table.column("attributes").to_pylist()[0] == '{"http.route":"a\\"b"}'
    assert _rows(got) == _rows(_reference([body]))


def test_undecodable_attribute_rejects_its_span_like_the_reader(scanner: str) -> None:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(3):
        span = scope.spans.add()
        span.trace_id, span.span_id, span.start_time_unix_nano = bytes([i + 1]) * 16, bytes([i + 1]) * 8, BASE_NS
    good = request.SerializeToString()
    # a KeyValue whose key is not UTF-8: append it raw to the last span's bytes
    outer = otlp_wire.OuterRequest.FromString(good)
    spans = outer.resource_spans[0].scope_spans[0].spans
    spans[2] = spans[2] + b"\x4a\x05\x0a\x03\xff\xfe\xfd"
    body = outer.SerializeToString()
    got, expected = otlp_proto.parse_requests([body]), _reference([body])
    assert _rows(got) == _rows(expected) and len(got) == 2
    assert [r[1] for r in got.rejects] == [r[1] for r in expected.rejects] and len(got.rejects) == 1


def _reference_ack(body: bytes) -> object:
    """(stored, rejected spans) as publishing will find them, or "400" when undecodable."""
    try:
        outer = otlp_wire.OuterRequest.FromString(body)
    except DecodeError:
        return "400"
    expected = _reference([body])
    if any(not r[1].startswith(("span:", "resource:")) for r in expected.rejects):
        return "400"
    total = sum(len(scope.spans) for rs in outer.resource_spans for scope in rs.scope_spans)
    return len(expected), total - len(expected)


def _ack(body: bytes) -> object:
    try:
        stored, rejected, reasons = otlp_proto.check_request(body)
    except DecodeError:
        return "400"
    assert bool(rejected) == bool(reasons)
    return stored, rejected


def test_receiver_check_counts_exactly_what_publishing_stores(scanner: str) -> None:
    answered = 0
    for seed in range(80):
        rng = random.Random(seed)
        body = _request(rng, bad_rate=0.002)
        if seed % 4 == 0:
            body = _corrupt(rng, body)
        if seed % 9 == 0:
            body = _bad_resource(body)
        assert _ack(body) == _reference_ack(body), seed
        proven = otlp_columnar.count_valid(body)
        if proven is not None:
            assert _reference_ack(body) == (proven, 0), seed
            answered += 1
    assert answered > 25  # most requests are answered without decoding them


def _mixed(seed: int) -> ExportTraceServiceRequest:
    from tests.traces_support import make_request

    return make_request(service="m", spans=5, seed=seed, attrs={"http.route": "/r"})


def _with_span_bytes(request: ExportTraceServiceRequest, index: int, suffix: bytes) -> bytes:
    outer = otlp_wire.OuterRequest.FromString(request.SerializeToString())
    spans = outer.resource_spans[0].scope_spans[0].spans
    spans[index] = spans[index] + suffix
    return outer.SerializeToString()


def test_receiver_check_is_exact_for_mixed_requests(scanner: str) -> None:
    no_start = _mixed(1)
    no_start.resource_spans[0].scope_spans[0].spans[2].ClearField("start_time_unix_nano")
    # one span without a start time, another carrying a second start time: the lists of
    # start times still hold one entry per span
    hidden = _mixed(2)
    hidden.resource_spans[0].scope_spans[0].spans[1].ClearField("start_time_unix_nano")
    twice = _with_span_bytes(hidden, 3, b"\x39" + (BASE_NS + 5).to_bytes(8, "little"))
    huge = _mixed(3)
    huge.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano = 2**63
    bad_attribute = _with_span_bytes(_mixed(4), 4, b"\x4a\x05\x0a\x03\xff\xfe\xfd")
    bad_name = _with_span_bytes(_mixed(5), 0, b"\x2a\x02\xff\xfe")
    cases = {
        "no start": (no_start.SerializeToString(), (4, 1)),
        "hidden by a repeated start": (twice, (4, 1)),
        "start beyond int64": (huge.SerializeToString(), (4, 1)),
        "undecodable attribute": (bad_attribute, (4, 1)),
        "bad resource": (_bad_resource(_mixed(6).SerializeToString()), (0, 5)),
        "name not UTF-8": (bad_name, "400"),
    }
    for label, (body, expected) in cases.items():
        assert _reference_ack(body) == expected, label
        assert _ack(body) == expected, label
        assert otlp_columnar.count_valid(body) is None, label


def test_empty_and_spanless_requests(scanner: str) -> None:
    assert len(otlp_proto.parse_requests([b""])) == 0
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add()
    assert otlp_columnar.count_valid(request.SerializeToString()) == 0
    assert otlp_proto.parse_requests([request.SerializeToString()]).to_table(
        source_format="f", source_file="s").num_rows == 0
    assert isinstance(otlp_proto.parse(b"").core_table(), pa.Table)
