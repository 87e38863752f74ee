"""The compiled wire scanner (``ingest/_otlpscan.c``) against the numpy one and the reference.

The compiled scanner is optional at run time, so both must give the same arrays; and on
random, truncated and bit-flipped bytes both must give exactly the rows and rejects of the
per-span reader (``otlp_spans.read_message``) - and never crash the process.
"""

from __future__ import annotations

import random
import shutil
import struct
import sysconfig

import numpy as np
import pytest

from ingest import otlp_columnar, otlp_proto, otlp_spans, otlp_wire
from ingest.otlp_common import SpanColumns
from tests.test_traces_columnar import _request
from tests.traces_support import make_request, scanner  # noqa: F401 - a fixture


def _reference(bodies: list[bytes]) -> SpanColumns:
    out = SpanColumns()
    for body in bodies:
        otlp_spans.read_message(body, out, line_no=1)
    return out


def _rows(columns: SpanColumns) -> list[str]:
    table = columns.core_table()
    return sorted(map(repr, zip(*[table.column(c).to_pylist() for c in table.column_names])))


def _same(got: SpanColumns, expected: SpanColumns) -> bool:
    return _rows(got) == _rows(expected) and sorted(r[1] for r in got.rejects) == sorted(r[1] for r in expected.rejects)


def _mutations(rng: random.Random, body: bytes) -> list[bytes]:
    """Truncations, bit flips, inserted and deleted bytes, and plain random bytes."""
    out = [body[:rng.randrange(len(body) + 1)] for _ in range(3)]
    for _ in range(4):
        data = bytearray(body)
        for _ in range(rng.randrange(1, 4)):
            if not data:
                break
            op, at = rng.randrange(3), rng.randrange(len(data))
            if op == 0:
                data[at] ^= 1 << rng.randrange(8)
            elif op == 1:
                data.insert(at, rng.randrange(256))
            else:
                del data[at]
        out.append(bytes(data))
    out.append(rng.randbytes(rng.randrange(1, 200)))
    out.append(b"\x0a" + bytes([rng.randrange(256)]) + rng.randbytes(rng.randrange(60)))
    return out


def test_the_compiled_scanner_is_built_where_there_is_a_compiler() -> None:
    if not (shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC") else "cc")
            or shutil.which("gcc")):
        pytest.skip("no C compiler on this machine")
    assert otlp_columnar.COMPILED is not None, "pip install -e . should have built ingest/_otlpscan.c"
    assert "OTLP" in (otlp_columnar.COMPILED.__doc__ or "")


def _decoded(spans: list[bytes]) -> otlp_columnar._Spans:
    lens = np.array([len(s) for s in spans], dtype=np.int64)
    ends = np.cumsum(lens)
    joined = b"".join(spans) + bytes(16)
    return otlp_columnar._Spans(np.frombuffer(joined, dtype=np.uint8), joined, ends - lens, ends)


def test_both_scanners_fill_the_same_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    if otlp_columnar.COMPILED is None:
        pytest.skip("ingest._otlpscan is not built")
    rng = random.Random(5)
    spans: list[bytes] = []
    for _ in range(12):
        outer = otlp_wire.OuterRequest.FromString(_request(rng, bad_rate=0.05))
        for rs in outer.resource_spans:
            for scope in rs.scope_spans:
                spans.extend(scope.spans)
    spans += [m for s in spans[:40] for m in _mutations(rng, s)]
    compiled = _decoded(spans)
    monkeypatch.setattr(otlp_columnar, "COMPILED", None)
    plain = _decoded(spans)
    good = ~plain.bad
    assert (compiled.bad == plain.bad).all()
    assert good.sum() > len(spans) // 3 and plain.bad.sum() > 20
    for number in (1, 2, 4, 5, 6, 7, 8):  # bytes fields: offset and length; scalars: the value
        parts = (1, 2) if number <= 5 else (0,)
        for part in parts:
            assert (compiled.slot[number][part][good] == plain.slot[number][part][good]).all(), number
    assert (compiled.code[good] == plain.code[good]).all()
    assert (compiled.has_events[good] == plain.has_events[good]).all()
    attrs_good = good[plain.attr_row]
    for name in ("attr_row", "attr_offset", "attr_length"):
        assert (getattr(compiled, name)[good[compiled.attr_row]] == getattr(plain, name)[attrs_good]).all(), name


@pytest.mark.slow
def test_random_and_damaged_bytes_match_the_reference_and_never_crash(scanner: str) -> None:
    checked = 0
    for seed in range(20):
        rng = random.Random(1000 + seed)
        body = _request(rng, bad_rate=0.01)
        for damaged in _mutations(rng, body):
            expected = _reference([damaged])
            assert _same(otlp_proto.parse_requests([damaged]), expected), (seed, damaged[:40])
            assert _same(otlp_proto.parse_requests([body, damaged]), _reference([body, damaged])), seed
            checked += 1
        framed = b"".join(struct.pack(">I", len(b)) + b for b in (body, body))
        for cut in (len(framed) - 1, len(framed) // 2, 7):
            otlp_proto.parse(framed[:cut])  # a truncated stream: rejects, no exception
    assert checked > 150


def test_unusual_outer_levels_go_to_the_reader(scanner: str) -> None:
    request = make_request(service="a", spans=3, seed=1)
    body = request.SerializeToString()
    rs = request.resource_spans[0]
    extra = rs.resource.SerializeToString()  # a second `resource` field: protobuf merges the two
    tagged = b"\x0a" + bytes([len(extra)]) + extra
    inner = rs.SerializeToString() + tagged
    twice = b"\x0a" + _varint(len(inner)) + inner
    wrong_wire = body + b"\x08\x01"  # field 1 as a varint: an unknown field to protobuf
    group = body + b"\x1b\x1c"  # an empty group in an unknown field
    for case in (twice, wrong_wire, group, body + body):
        assert _same(otlp_proto.parse_requests([case]), _reference([case]))
    assert len(otlp_proto.parse_requests([twice])) == 3


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_compiled_functions_refuse_bounds_outside_their_buffers() -> None:
    c = otlp_columnar.COMPILED
    if c is None:
        pytest.skip("ingest._otlpscan is not built")
    data = b"\x0a\x02ab"
    cols = np.empty((c.N_SPAN_COLS, 1), dtype=np.int64)
    attrs = np.empty((3, 4), dtype=np.int64)
    with pytest.raises(ValueError):
        c.scan_spans(data, np.array([0], dtype=np.int64), np.array([99], dtype=np.int64), cols, attrs)
    with pytest.raises(ValueError):
        c.scan_spans(data, np.array([0, 1], dtype=np.int64), np.array([4, 4], dtype=np.int64), cols, attrs)
    with pytest.raises(ValueError):
        c.binary_views(data, np.array([2], dtype=np.int64), np.array([5], dtype=np.int64), np.empty(16, np.uint8))
    with pytest.raises(ValueError):
        c.hex_ids(data, np.array([1], dtype=np.int64), np.array([8], dtype=np.int64), 8, bytearray(16))
    with pytest.raises(ValueError):
        c.scan_keyvalues(data, np.array([3, 1], dtype=np.int64), np.empty((c.N_KV_COLS, 1), dtype=np.int64))
    flags = np.zeros(1, dtype=np.uint8)
    with pytest.raises(ValueError):
        c.scan_requests(data, np.array([0], dtype=np.int64), np.array([5], dtype=np.int64), flags,
                        np.empty((2, 1), np.int64), np.empty((3, 1), np.int64), np.empty((2, 1), np.int64))
    assert c.scan_spans(data, np.array([0], dtype=np.int64), np.array([4], dtype=np.int64), cols, attrs) == 0
    assert cols[1, 0] == 2 and cols[0, 0] == 2  # the trace id field: 2 bytes at offset 2


def test_start_times_beyond_int64_are_rejected_not_a_crash(scanner: str) -> None:
    request = make_request(service="a", spans=3, seed=2)
    request.resource_spans[0].scope_spans[0].spans[1].start_time_unix_nano = 2**64 - 1
    request.resource_spans[0].scope_spans[0].spans[2].end_time_unix_nano = 2**63
    body = request.SerializeToString()
    got = otlp_proto.parse_requests([body])
    assert len(got) == 1 and sorted(r[1] for r in got.rejects) == [
        "span: endTimeUnixNano 9223372036854775808 is out of range",
        "span: startTimeUnixNano 18446744073709551615 is out of range",
    ]
    assert got.to_table(source_format="f", source_file="s").column("start_ts").to_pylist()[0] is not None
    stored, rejected, reasons = otlp_proto.check_request(body)
    assert (stored, rejected, sorted(reasons)) == (1, 2, sorted(r[1] for r in got.rejects))
