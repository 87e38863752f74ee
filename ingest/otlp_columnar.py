"""Columnar decoding of OTLP protobuf spans: the fast path of file ingest and the receiver.

Reading spans through the protobuf classes costs a Python object per field per span, which
is most of the time of taking traces in. This module decodes the spans of many requests at
once instead, with a protobuf wire scanner over one buffer: ``ingest/_otlpscan.c`` when it
was built (``setup.py``; it walks the outer levels too, so no Python object is made per
span, and reads the frames of a Collector file in place), else the same scanner vectorised
with numpy (upb parses the outer levels with ``spans`` declared as ``repeated bytes``, the
span bytes are joined, and the scanner takes one step per field position over all spans at
once). Both fill the same arrays; tests compare them with each other and with the
reference. Attribute ``KeyValue`` encodings are dictionary-encoded with Arrow, so each
distinct attribute is decoded once (through ``otlp_wire.AttributeCache``); the
semantic-convention columns and the attributes JSON are then gathered per span with array
operations, with the exact rules of ``otlp_common.derive`` and ``AttributeCache.json``.

Anything unusual - a scanner surprise (groups, a repeated singular field, a truncated
field), an invalid span, an undecodable attribute, bad UTF-8 - sends the whole message back
to the per-span reader (``otlp_spans.read_message``), so rejects and their reasons are
exactly those of that reader. Spans with events (rare) read their exception through upb.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import DecodeError
from numpy.lib.stride_tricks import sliding_window_view

from ingest import otlp_spans, otlp_wire
from ingest.otlp_common import KINDS, STATUS_CODES, SpanColumns, _as_status, _as_str, resource_from_attributes

try:
    COMPILED: Any = importlib.import_module("ingest._otlpscan")  # built by setup.py when a C compiler is there
except ImportError:  # pragma: no cover - depends on the build
    COMPILED = None
"""The compiled scanner (``ingest/_otlpscan.c``) or None; set it to None to force the numpy
scanner (tests and the benchmark compare both)."""


_PAD = bytes(16)
_INT64_MAX = np.uint64(2**63 - 1)
_KIND_NAMES = pa.array(KINDS, pa.string())
_STATUS_NAMES = pa.array(STATUS_CODES, pa.string())


def _rows(data: np.ndarray, offset: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` bytes at each offset, one row each (a gather of rows of a strided view,
    several times faster than fancy indexing with an offset matrix)."""
    return sliding_window_view(data, size)[offset]

# field number -> (wire type, singular); span fields the spans table reads
_SPAN_FIELDS = {1: 2, 2: 2, 4: 2, 5: 2, 6: 0, 7: 1, 8: 1, 15: 2}
_ATTRIBUTES, _EVENTS = 9, 11

NAMES = (
    "http.response.status_code", "http.status_code", "http.request.method", "http.method",
    "url.path", "http.target", "url.full", "http.url", "service.peer.name", "peer.service",
    "server.address", "net.peer.name", "rpc.service", "rpc.method", "http.route",
)
"""Attribute names the derived columns read (``otlp_common.ATTRIBUTE_NAMES``)."""
_NAME_INDEX = {name: i for i, name in enumerate(NAMES)}


# -- the wire scanner ------------------------------------------------------------------------

@dataclass
class Fields:
    """Every field met by ``scan``: parallel arrays, one entry per field occurrence."""

    row: np.ndarray
    number: np.ndarray
    wire: np.ndarray
    value: np.ndarray  # varint / fixed value (uint64)
    offset: np.ndarray  # start of a length-delimited payload
    length: np.ndarray
    bad: np.ndarray  # per row: the scanner could not walk it


def scan(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> Fields:
    """Walk the fields of ``len(starts)`` messages at once (``data`` padded with 16 zeros)."""
    n = len(starts)
    bad = np.zeros(n, dtype=bool)
    rows = np.nonzero(starts < ends)[0]
    pos, end = starts[rows].astype(np.int64), ends[rows].astype(np.int64)
    parts: list[tuple[np.ndarray, ...]] = []
    while rows.size:
        number, wire, value, offset, length, step_bad, pos = _step(data, pos, end)
        if step_bad.any():  # a bad field's payload may run past its message: never slice it
            length = np.where(step_bad, 0, length)
        parts.append((rows, number, wire, value, offset, length))
        go_on = pos < end
        if step_bad.any():
            bad[rows[step_bad]] = True
            go_on &= ~step_bad
        if not go_on.all():
            rows, pos, end = rows[go_on], pos[go_on], end[go_on]
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Fields(empty, empty, empty, empty.astype(np.uint64), empty, empty, bad)
    cols = [np.concatenate(c) for c in zip(*parts)]
    return Fields(cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], bad)


_MAX_TAG = 2**32 - 1  # upb reads tags as 32-bit varints: a longer tag does not parse
_BAD_WIRE = np.array([False, False, False, True, True, False, True, True])
"""Wire types 3 and 4 (groups, deprecated) and 6, 7 (undefined): the scanner gives up."""


def _step(data: np.ndarray, p: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, ...]:
    """One field of each message: (number, wire type, value, offset, length, bad, next pos)."""
    n = len(p)
    byte = data[p]
    if byte.max(initial=0) < 0x80:  # one-byte tags (field numbers below 16): the usual case
        tag, p, bad = byte.astype(np.int64), p + 1, np.zeros(n, dtype=bool)
    else:
        wide, p, bad = _varint(data, p)
        tag = np.minimum(wide, np.uint64(2**62)).astype(np.int64)
    wire, number = tag & 7, tag >> 3
    value = np.zeros(n, dtype=np.uint64)
    length = np.zeros(n, dtype=np.int64)
    delimited = wire == 2
    if delimited.all():
        length, p, lbad = _lengths(data, p, end)
        bad |= lbad
    else:
        _scalars(data, p, wire, value, bad)
        m = np.nonzero(delimited)[0]
        if m.size:
            length[m], p[m], lbad = _lengths(data, p[m], end[m])
            bad[m] |= lbad
    offset = p
    p = p + length
    bad |= _BAD_WIRE[wire] | (tag < 8) | (tag > _MAX_TAG) | (p > end)
    return number, wire, value, offset, length, bad, p


def _scalars(data: np.ndarray, p: np.ndarray, wire: np.ndarray, value: np.ndarray, bad: np.ndarray) -> None:
    """Varint and fixed-size values (in place: ``value``, ``p`` advanced, ``bad``)."""
    m = np.nonzero(wire == 0)[0]
    if m.size:
        value[m], p[m], vbad = _varint(data, p[m])
        bad[m] |= vbad
    for wt, size, dtype in ((1, 8, "<u8"), (5, 4, "<u4")):
        m = np.nonzero(wire == wt)[0]
        if m.size:
            raw = _rows(data, p[m], size)
            value[m] = np.ascontiguousarray(raw).view(dtype).ravel()
            p[m] += size


def _lengths(data: np.ndarray, p: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lengths of length-delimited fields: (length, payload start, malformed)."""
    byte = data[p]
    if byte.max(initial=0) < 0x80:
        return byte.astype(np.int64), p + 1, np.zeros(len(p), dtype=bool)
    size, p, bad = _varint(data, p)
    bad |= size > (end - p).clip(0).astype(np.uint64)
    return np.where(bad, 0, size).astype(np.int64), p, bad


def _varint(data: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Base-128 varints starting at ``p``: (values, positions after them, malformed)."""
    byte = data[p]
    value = (byte & 0x7F).astype(np.uint64)
    more = np.nonzero(byte & 0x80)[0]
    size = np.ones(len(p), dtype=np.int64)
    shift = 7
    while more.size and shift < 70:
        byte = data[p[more] + size[more]]
        value[more] |= (byte & 0x7F).astype(np.uint64) << np.uint64(shift)
        size[more] += 1
        more = more[(byte & 0x80) != 0]
        shift += 7
    bad = np.zeros(len(p), dtype=bool)
    bad[more] = True
    return value, p + size, bad


# -- batches of requests ----------------------------------------------------------------------

@dataclass
class _Batch:
    """Span bytes of many requests, with their resource and message of origin.

    ``spans`` collects span bytes (numpy path) until ``finish`` joins them; the compiled
    path fills ``joined``/``starts``/``ends`` directly with slices of the messages' buffer
    (bytes or a memoryview: no padding needed there).
    """

    spans: list[bytes] = field(default_factory=list)
    heads: list[tuple[Any, ...]] = field(default_factory=list)  # per span run
    head_of_span: Any = field(default_factory=list)  # run lengths, parallel to heads (list or array)
    message_of_run: Any = field(default_factory=list)
    messages: list[tuple[bytes, int]] = field(default_factory=list)  # (bytes, line number)
    rejects: list[tuple[int, tuple[int, str, str]]] = field(default_factory=list)  # (message, reject)
    unusual: list[int] = field(default_factory=list)  # messages the per-span reader takes whole
    joined: bytes = b""
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ends: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def finish(self) -> None:
        """Join the collected span bytes (numpy path)."""
        lens = np.fromiter(map(len, self.spans), dtype=np.int64, count=len(self.spans))
        self.ends = np.cumsum(lens)
        self.starts = self.ends - lens
        self.joined = b"".join(self.spans) + _PAD

    def span_bytes(self, i: int) -> bytes:
        return bytes(self.joined[self.starts[i]:self.ends[i]])


def decode_messages(messages: list[tuple[bytes, int]], out: SpanColumns) -> None:
    """Append the spans of (message bytes, line number) pairs to ``out`` (table + rejects)."""
    if COMPILED is None:
        _finish(_gather(messages, out), out)
        return
    lens = np.fromiter((len(m) for m, _ in messages), dtype=np.int64, count=len(messages))
    ends = np.cumsum(lens)
    _finish(_gather_compiled(b"".join(m for m, _ in messages), ends - lens, ends, messages), out)


def decode_frames(data: bytes, frames: list[tuple[int, int, int]], out: SpanColumns) -> None:
    """``decode_messages`` for messages that are slices (start, end, line number) of one
    buffer, such as the frames of a Collector file: with the compiled scanner, no copy."""
    if COMPILED is None or not frames:
        decode_messages([(data[start:end], line_no) for start, end, line_no in frames], out)
        return
    low, high = frames[0][0], frames[-1][1]
    buffer = memoryview(data)[low:high]
    starts = np.fromiter((f[0] - low for f in frames), dtype=np.int64, count=len(frames))
    ends = np.fromiter((f[1] - low for f in frames), dtype=np.int64, count=len(frames))
    messages = [(buffer[start:end], line_no) for start, end, line_no in zip(starts.tolist(), ends.tolist(), (f[2] for f in frames))]
    _finish(_gather_compiled(buffer, starts, ends, messages), out)  # type: ignore[arg-type]


def _finish(batch: _Batch, out: SpanColumns) -> None:
    """Decode a gathered batch into ``out``; unusual messages go to the per-span reader."""
    if len(batch.joined) >= _MAX_JOINED:  # Arrow views address 32-bit offsets
        table, fallback = None, list(range(len(batch.messages)))
    else:
        table, fallback = _decode(batch) if len(batch.starts) else (None, [])
    redo = set(fallback) | set(batch.unusual)  # the span reader rejects those messages' resources itself
    out.rejects.extend(reject for index, reject in batch.rejects if index not in redo)
    if table is not None and table.num_rows:
        out.tables.append(table)
    for index in sorted(redo):
        message, line_no = batch.messages[index]
        otlp_spans.read_message(bytes(message), out, line_no=line_no)


def _gather(messages: list[tuple[bytes, int]], out: SpanColumns) -> _Batch:
    """The outer levels of every message through upb (the numpy path)."""
    batch = _Batch()
    for message, line_no in messages:
        _add_message(batch, message, line_no, out)
    batch.finish()
    return batch


def _gather_compiled(joined: bytes, starts: np.ndarray, ends: np.ndarray, messages: list[tuple[bytes, int]]) -> _Batch:
    """The outer levels of the messages at ``joined[starts[i]:ends[i]]`` by
    ``_otlpscan.scan_requests`` (no object per span); an unusual message, or one with a
    resource that does not decode, goes whole to the reader."""
    batch = _Batch(messages=messages, joined=joined)
    unusual = np.zeros(len(messages), dtype=np.uint8)
    sizes = (len(joined) // 128 + 64, 2 * len(messages) + 16, 2 * len(messages) + 16)
    while True:
        spans, resources, runs = (np.empty((k, size), dtype=np.int64) for k, size in zip((2, 3, 2), sizes))
        counts = COMPILED.scan_requests(batch.joined, starts, ends, unusual, spans, resources, runs)
        if all(c <= size for c, size in zip(counts, sizes)):
            break
        sizes = counts
    n_spans, n_res, n_runs = counts
    bad_message = unusual.astype(bool)
    heads = [_resource_head(batch.joined, int(off), int(size)) for off, size in zip(*resources[1:, :n_res])]
    for message, head in zip(resources[0, :n_res].tolist(), heads):
        if head is None:
            bad_message[message] = True
    batch.unusual = np.nonzero(bad_message)[0].tolist()
    run_resource = runs[0, :n_runs]
    batch.heads = [heads[r] or ("", None, None) for r in run_resource.tolist()]
    batch.head_of_span = runs[1, :n_runs]
    batch.message_of_run = resources[0, run_resource]
    batch.starts, batch.ends = spans[0, :n_spans], spans[1, :n_spans]
    return batch


_RESOURCE_HEADS: dict[bytes, tuple[Any, ...] | None] = {}


def _resource_head(joined: bytes, offset: int, size: int) -> tuple[Any, ...] | None:
    """(service, version, env) of an encoded Resource (None when it does not decode), cached."""
    raw = bytes(joined[offset:offset + size]) if offset >= 0 else b""  # not a view: the cache outlives it
    head = _RESOURCE_HEADS.get(raw, False)
    if head is not False:
        return head  # type: ignore[return-value]
    try:
        attributes = otlp_wire.ResourceOnly.FromString(raw).attributes
        resource = resource_from_attributes(dict(map(otlp_spans.ATTRIBUTES.__getitem__, attributes)))
        head = (resource.service, resource.version, resource.env)
    except (DecodeError, otlp_wire.BadAttribute):
        head = None
    if len(raw) <= 4096:  # bounded memory: at most 10,000 small resources
        if len(_RESOURCE_HEADS) >= 10_000:
            _RESOURCE_HEADS.clear()
        _RESOURCE_HEADS[raw] = head
    return head


_MAX_JOINED = 2**31 - 1024


def count_valid(body: bytes) -> int | None:
    """The number of spans of one request when decoding it will store every span, else None.

    What the receiver checks before acknowledging, with no Python object per span. It is a
    proof, not a guess: upb parses the body with every string and attribute checked
    (``otlp_wire.ValidateRequest``: every resource, name, status message, event and attribute
    will decode), and the wire scanner finds every span plain and valid (``_Spans.bad``: no
    repeated singular field, ids, times, kind and status in range) - exactly the spans the
    columnar decoder stores. None means "not proven": ``otlp_proto.check_request`` then
    decodes the body as publishing will and counts the rejected spans exactly.
    """
    try:
        otlp_wire.ValidateRequest.FromString(body)
    except DecodeError:
        return None
    if COMPILED is not None:
        batch = _gather_compiled(body, np.zeros(1, dtype=np.int64), np.full(1, len(body), dtype=np.int64), [(body, 1)])
    else:
        batch = _gather([(body, 1)], SpanColumns())
    if batch.unusual or batch.rejects or len(batch.messages) != 1 or len(batch.joined) >= _MAX_JOINED:
        return None
    if not len(batch.starts):
        return 0
    spans = _Spans(np.frombuffer(batch.joined, dtype=np.uint8), batch.joined, batch.starts, batch.ends)
    return None if spans.bad.any() else len(batch.starts)


def _add_message(batch: _Batch, message: bytes, line_no: int, out: SpanColumns) -> None:
    """Outer levels through upb; resource problems are rejected here as the span reader does."""
    try:
        request = otlp_wire.OuterRequest.FromString(message)
    except DecodeError:
        otlp_spans.read_message(message, out, line_no=line_no)  # rejects it with the reason
        return
    index = len(batch.messages)
    batch.messages.append((message, line_no))
    cache = otlp_spans.ATTRIBUTES
    for rs in request.resource_spans:
        try:
            resource = resource_from_attributes(dict(map(cache.__getitem__, rs.resource.attributes)))
        except otlp_wire.BadAttribute as exc:
            raw = otlp_spans.raw_text(rs.SerializeToString())
            batch.rejects.append((index, (line_no, f"resource: {exc}", raw[:65536])))
            continue
        head = (resource.service, resource.version, resource.env)
        for scope in rs.scope_spans:
            spans = scope.spans
            if spans:
                batch.spans.extend(spans)
                batch.heads.append(head)
                batch.head_of_span.append(len(spans))
                batch.message_of_run.append(index)


def _decode(batch: _Batch) -> tuple[pa.Table, list[int]]:
    """The spans of a batch as a table of ``otlp_common.COLUMNS``, and the messages to redo."""
    joined = batch.joined
    data = np.frombuffer(joined, dtype=np.uint8)
    runs = np.asarray(batch.head_of_span, dtype=np.int64)
    message_of = np.repeat(np.asarray(batch.message_of_run, dtype=np.int64), runs)
    decoded = _Spans(data, joined, batch.starts, batch.ends)
    bad = decoded.bad.copy()
    attrs = _Attributes(decoded, bad)
    bad |= attrs.bad_rows
    names, name_bad = decoded.strings(5)
    messages_, msg_bad = decoded.status_message()
    bad |= name_bad | msg_bad
    exceptions = _exceptions(batch, decoded.has_events, bad)
    fallback = np.unique(np.concatenate([message_of[bad], np.asarray(batch.unusual, dtype=np.int64)]))
    keep = ~np.isin(message_of, fallback)
    head_index = np.repeat(np.arange(len(runs)), runs)
    table = _table(decoded, attrs, names, messages_, exceptions, batch.heads, head_index, keep)
    return table, fallback.tolist()


class _Spans:
    """The scalar fields of every span, from one scan (and one of their Status messages).

    ``slot[number]`` holds (value, offset, length) per span of each singular field (offset
    -1 when absent); ``attr_row``/``attr_offset``/``attr_length`` every attribute, by span.
    The compiled scanner fills the same arrays as the numpy one.
    """

    def __init__(self, data: np.ndarray, joined: bytes, starts: np.ndarray, ends: np.ndarray) -> None:
        self.data, self.joined, self.n = data, joined, len(starts)
        self.slot: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        if COMPILED is not None:
            self._scan_compiled(starts, ends)
            return
        fields = self.fields = scan(data, starts, ends)
        small = np.minimum(fields.number, 255).astype(np.uint8)
        self._order = np.argsort(small, kind="stable")  # a radix sort: field occurrences by number
        self._bounds = np.searchsorted(small[self._order], np.arange(257))
        bad = fields.bad.copy()
        for number, wire in _SPAN_FIELDS.items():
            bad |= self._singular(number, wire)
        self.has_events = np.zeros(self.n, dtype=bool)
        self.has_events[fields.row[self.occurrences(_EVENTS)]] = True
        bad |= self._wrong_wire()
        self.code, status_bad = self._status_code()
        _, t_off, _ = self.slot[1]
        _, s_off, _ = self.slot[2]
        bad |= status_bad | ~self._valid(lambda ok: self._nonzero(t_off, 16, ok), lambda ok: self._nonzero(s_off, 8, ok))
        m = self.occurrences(_ATTRIBUTES)
        m = m[np.argsort(fields.row[m], kind="stable")]
        self.attr_row, self.attr_offset, self.attr_length = fields.row[m], fields.offset[m], fields.length[m]
        self.bad = bad

    def _scan_compiled(self, starts: np.ndarray, ends: np.ndarray) -> None:
        """The same arrays from ``_otlpscan.scan_spans`` (one C pass over every span)."""
        n = self.n
        cols = np.empty((COMPILED.N_SPAN_COLS, n), dtype=np.int64)
        attrs = np.empty((3, 12 * n + 16), dtype=np.int64)
        count = COMPILED.scan_spans(self.joined, starts, ends, cols, attrs)
        if count < 0:  # more attributes than guessed: once more with room for all
            attrs = np.empty((3, -count), dtype=np.int64)
            count = COMPILED.scan_spans(self.joined, starts, ends, cols, attrs)
        values = cols.view(np.uint64)  # columns in the order of the C enum (C_TRACE_OFF ... C_FLAGS)
        for number, off in ((1, 0), (2, 2), (4, 4), (5, 6)):
            self.slot[number] = (values[off], cols[off], cols[off + 1])
        for number, col in ((6, 8), (7, 9), (8, 10)):
            self.slot[number] = (values[col], cols[col], cols[col])
        self.code = values[11]
        self.status_message_slot = (cols[12], cols[13])
        flags = cols[16]
        self.has_events = (flags & 2) != 0
        self.bad = ((flags & 1) != 0) | ~self._valid(lambda ok: (flags & 4) != 0, lambda ok: (flags & 8) != 0)
        self.attr_row, self.attr_offset, self.attr_length = attrs[0, :count], attrs[1, :count], attrs[2, :count]

    def occurrences(self, number: int) -> np.ndarray:
        """Indices (in ``fields``) of every occurrence of field ``number``, in scan order."""
        return self._order[self._bounds[number]:self._bounds[number + 1]]

    def _singular(self, number: int, wire: int) -> np.ndarray:
        """Store field ``number`` per row (value, offset, length; -1 offset when absent)."""
        f = self.fields
        m = self.occurrences(number)
        rows = f.row[m]
        present = np.zeros(self.n, dtype=bool)
        present[rows] = True
        value = np.zeros(self.n, dtype=np.uint64)
        offset = np.full(self.n, -1, dtype=np.int64)
        length = np.zeros(self.n, dtype=np.int64)
        value[rows], offset[rows], length[rows] = f.value[m], f.offset[m], f.length[m]
        self.slot[number] = (value, np.where(present, offset, -1), length)
        bad = np.zeros(self.n, dtype=bool)
        bad[rows[f.wire[m] != wire]] = True
        counts = np.bincount(rows, minlength=self.n)
        bad |= counts > 1
        return bad

    def _wrong_wire(self) -> np.ndarray:
        f = self.fields
        bad = np.zeros(self.n, dtype=bool)
        for number in (_ATTRIBUTES, _EVENTS):
            m = self.occurrences(number)
            bad[f.row[m[f.wire[m] != 2]]] = True
        return bad

    def _status_code(self) -> tuple[np.ndarray, np.ndarray]:
        """Status.code per span (0 when there is no status) and rows whose Status is odd."""
        _, offset, length = self.slot[15]
        has = np.nonzero(offset >= 0)[0]
        code = np.zeros(self.n, dtype=np.uint64)
        bad = np.zeros(self.n, dtype=bool)
        self.status_message_slot = (np.full(self.n, -1, dtype=np.int64), np.zeros(self.n, dtype=np.int64))
        if not has.size:
            return code, bad
        sub = scan(self.data, offset[has], offset[has] + length[has])
        bad[has[sub.bad]] = True
        for number, wire in ((3, 0), (2, 2)):
            m = np.nonzero(sub.number == number)[0]
            rows = has[sub.row[m]]
            bad[rows[sub.wire[m] != wire]] = True
            bad |= np.bincount(rows, minlength=self.n) > 1
            if number == 3:
                code[rows] = sub.value[m]
            else:
                self.status_message_slot[0][rows] = sub.offset[m]
                self.status_message_slot[1][rows] = sub.length[m]
        return code, bad

    def _valid(self, trace_nonzero: Any, span_nonzero: Any) -> np.ndarray:
        """The span checks of ``otlp_spans._read_spans`` (failures go to that reader);
        ``*_nonzero(ok)`` say which ids hold a non-zero byte (rows ``ok`` at least)."""
        _, t_off, t_len = self.slot[1]
        _, s_off, s_len = self.slot[2]
        _, p_off, p_len = self.slot[4]
        ok = (t_off >= 0) & (t_len == 16) & (s_off >= 0) & (s_len == 8) & ((p_len == 0) | (p_len == 8))
        start, end = self.slot[7][0], self.slot[8][0]
        ok &= (start != 0) & (start <= _INT64_MAX) & (end <= _INT64_MAX)
        ok &= (self.slot[6][0] < len(KINDS)) & (self.code < len(STATUS_CODES))
        ok &= trace_nonzero(ok) & span_nonzero(ok)
        return ok

    def _nonzero(self, offset: np.ndarray, size: int, ok: np.ndarray) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        rows = np.nonzero(ok)[0]
        out[rows] = _rows(self.data, offset[rows], size).any(axis=1)
        return out

    def hex_ids(self, number: int, size: int, keep: np.ndarray) -> pa.Array:
        """Field ``number`` (ids of ``size`` bytes or absent) as lower-case hex strings."""
        _, offset, length = self.slot[number]
        offset, length = offset[keep], length[keep]
        chars: bytes | bytearray
        if COMPILED is not None:
            chars = bytearray(2 * size * int(np.count_nonzero(length == size)))
            COMPILED.hex_ids(self.joined, _int64(offset), _int64(length), size, chars)
        else:
            present = np.nonzero(length == size)[0]
            chars = _rows(self.data, offset[present], size).tobytes().hex().encode()
        widths = np.where(length == size, 2 * size, 0)
        offsets = np.zeros(len(widths) + 1, dtype=np.int32)
        np.cumsum(widths, out=offsets[1:])
        return pa.StringArray.from_buffers(len(widths), pa.py_buffer(offsets), pa.py_buffer(chars))

    def strings(self, number: int) -> tuple[pa.Array, np.ndarray]:
        """Field ``number`` as strings ("" when absent) and rows whose bytes are not UTF-8."""
        _, offset, length = self.slot[number]
        return _strings(self.joined, offset.clip(0), length, np.ones(self.n, dtype=bool))

    def status_message(self) -> tuple[pa.Array, np.ndarray]:
        """Status.message (null when absent or empty) and rows whose bytes are not UTF-8."""
        offset, length = self.status_message_slot
        return _strings(self.joined, offset.clip(0), length, length > 0)


def _strings(joined: bytes, offset: np.ndarray, length: np.ndarray, valid: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Slices of ``joined`` as a string array (null where not ``valid``) and bad-UTF-8 rows."""
    binary = _binary(joined, offset, np.where(valid, length, 0), valid, views_only=True)
    bad = np.zeros(len(offset), dtype=bool)
    try:
        return binary.cast(pa.string()), bad
    except pa.ArrowInvalid:
        for i, raw in enumerate(binary.to_pylist()):
            try:
                (raw or b"").decode("utf-8")
            except UnicodeDecodeError:
                bad[i] = True
        return pa.array([None if b or raw is None else raw.decode() for raw, b in zip(binary.to_pylist(), bad)],
                        pa.string()), bad


def _binary(joined: bytes, offset: np.ndarray, length: np.ndarray, valid: np.ndarray | None = None,
            *, views_only: bool = False) -> pa.Array:
    """Slices of ``joined`` (offset, length) as a binary array, copied by Arrow from views
    (``views_only``: the binary_view array itself, no copy)."""
    n = len(offset)
    if COMPILED is not None:
        views = np.empty((n, 4), dtype=np.int32)
        COMPILED.binary_views(joined, _int64(offset), _int64(length), views)
    else:
        views = _views(joined, offset, length)
    validity = None if valid is None or valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    array = pa.Array.from_buffers(pa.binary_view(), n, [validity, pa.py_buffer(views), pa.py_buffer(joined)])
    return array if views_only else array.cast(pa.binary())


def _int64(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.int64)


def _views(joined: bytes, offset: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Arrow binary-view structs of slices of ``joined`` (numpy)."""
    n = len(offset)
    views = np.zeros((n, 4), dtype=np.int32)
    views[:, 0] = length
    views[:, 3] = offset
    view_bytes = views.view(np.uint8)
    data = np.frombuffer(joined, dtype=np.uint8)
    prefix = _rows(data, offset, 4)
    view_bytes[:, 4:8] = prefix
    short = np.nonzero(length <= 12)[0]
    if short.size:
        inline = _rows(data, offset[short], 12)
        inline[np.arange(12) >= length[short, None]] = 0
        view_bytes[short, 4:16] = inline
    return views


# -- attributes -----------------------------------------------------------------------------

class _Attributes:
    """Every span's attributes: distinct KeyValues decoded once, columns gathered per span."""

    def __init__(self, spans: _Spans, bad: np.ndarray) -> None:
        self.n = spans.n
        self.row = spans.attr_row
        self.counts = np.bincount(self.row, minlength=spans.n)
        raws = _binary(spans.joined, spans.attr_offset, spans.attr_length, views_only=True)
        encoded = raws.dictionary_encode()
        self.ids = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        self.uniques = _Uniques(encoded.dictionary.cast(pa.binary()))
        self.bad_rows = np.zeros(spans.n, dtype=bool)
        self.bad_rows[self.row[self.uniques.bad[self.ids]]] = True

    def json(self, keep: np.ndarray) -> pa.Array:
        """The attributes JSON object of each kept span (null when it has none)."""
        keep_attr = keep[self.row]
        ids, counts = self.ids[keep_attr], self.counts[keep]
        if COMPILED is not None:
            return _join_compiled(self.uniques.fragments, ids, counts)
        offsets = np.zeros(len(counts) + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        flat = self.uniques.fragments.take(pa.array(ids))
        lists = pa.ListArray.from_arrays(pa.array(offsets), flat, mask=pa.array(counts == 0))
        return pc.binary_join_element_wise("{", pc.binary_join(lists, ","), "}", "")

    def by_name(self, keep: np.ndarray) -> np.ndarray:
        """(len(NAMES), kept spans) distinct-attribute ids, -1 when the name is absent."""
        codes = self.uniques.key_codes[self.ids]
        sel = np.nonzero(codes >= 0)[0]
        table = np.full((len(NAMES), self.n), -1, dtype=np.int64)
        table[codes[sel], self.row[sel]] = self.ids[sel]
        return table[:, keep]


def _join_compiled(fragments: pa.Array, ids: np.ndarray, counts: np.ndarray) -> pa.Array:
    """``{fragment,fragment,...}`` per span in one pass of ``_otlpscan.join_fragments``."""
    fragments = fragments.cast(pa.string())
    u = len(fragments)
    offsets = np.frombuffer(fragments.buffers()[1], dtype=np.int32, count=u + 1, offset=4 * fragments.offset)
    sizes = np.diff(offsets).astype(np.int64)
    total = int(sizes[ids].sum()) + len(ids) + int(np.count_nonzero(counts))  # commas and braces
    data = fragments.buffers()[2] or pa.py_buffer(b"")
    out_offsets = np.empty(len(counts) + 1, dtype=np.int32)
    out = bytearray(total)
    COMPILED.join_fragments(offsets.astype(np.int64) - offsets[0], memoryview(data)[offsets[0]:],
                            _int64(ids), _int64(counts), out_offsets, out)
    validity = None if counts.all() else pa.py_buffer(np.packbits(counts > 0, bitorder="little"))
    return pa.StringArray.from_buffers(len(counts), pa.py_buffer(out_offsets), pa.py_buffer(out), validity)


_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'


class _Uniques:
    """Distinct KeyValue encodings, decoded with array operations where they are plain.

    Plain means a key and a string or integer value, UTF-8, nothing to escape in JSON; the
    rest (other value types, odd encodings) goes through ``otlp_wire.AttributeCache`` one by
    one. Per distinct attribute: ``key_codes`` (index in ``NAMES`` or -1), ``fragments``
    (``"key":value``), ``text`` (``_as_str`` of the value), ``truthy``/``notnone`` and
    ``status`` (``_as_status``, for the status names); the last entry of ``text``,
    ``status``, ``truthy`` and ``notnone`` is the sentinel for an absent attribute.
    """

    def __init__(self, dictionary: pa.Array) -> None:
        u = self.u = len(dictionary)
        buffers = dictionary.buffers()
        offsets = np.frombuffer(buffers[1], dtype=np.int32, count=u + 1, offset=4 * dictionary.offset).astype(np.int64)
        self.joined = (buffers[2].to_pybytes() if buffers[2] is not None else b"") + _PAD
        data = np.frombuffer(self.joined, dtype=np.uint8)
        self.slow = np.zeros(u, dtype=bool)
        if COMPILED is not None:
            key_off, key_len, val_off, val_len, is_str, is_int, number = self._scan_compiled(offsets)
        else:
            key_off, key_len, val_off, val_len = self._key_value(data, offsets)
            is_str, is_int, number = self._any_value(data, val_off, val_len)
        self.key_codes, key_prefix = self._keys(key_off, key_len)
        self.text, fragments = self._plain(data, key_prefix, val_off, val_len, is_str, is_int, number)
        self.truthy = np.append(np.where(is_str, val_len > 0, number != 0), False)
        self.notnone = np.append(np.ones(u, dtype=bool), False)
        self.bad = np.zeros(u, dtype=bool)
        self.fragments = fragments
        self._slow_path(dictionary)
        self.status = self._status(is_int, number)
        self.text = pa.concat_arrays([self.text, pa.nulls(1, pa.string())])

    def _scan_compiled(self, offsets: np.ndarray) -> tuple[np.ndarray, ...]:
        """``_key_value`` and ``_any_value`` in one pass of ``_otlpscan.scan_keyvalues``."""
        cols = np.empty((COMPILED.N_KV_COLS, self.u), dtype=np.int64)
        COMPILED.scan_keyvalues(self.joined, _int64(offsets), cols)
        kind = cols[5]
        self.slow |= kind == 0
        return cols[0], cols[1], cols[2], cols[3], kind == 1, kind == 2, cols[4]

    def _key_value(self, data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, ...]:
        kv = scan(data, offsets[:-1], offsets[1:])
        self.slow |= kv.bad
        slots = []
        for number in (1, 2):
            m = np.nonzero(kv.number == number)[0]
            rows = kv.row[m]
            offset = np.zeros(self.u, dtype=np.int64)
            length = np.zeros(self.u, dtype=np.int64)
            offset[rows], length[rows] = kv.offset[m], kv.length[m]
            present = np.zeros(self.u, dtype=bool)
            present[rows] = True
            self.slow |= ~present | (np.bincount(rows, minlength=self.u) > 1)
            self.slow[rows[kv.wire[m] != 2]] = True
            slots += [offset, length]
        self.slow[kv.row[(kv.number != 1) & (kv.number != 2)]] = True
        return tuple(slots)

    def _any_value(self, data: np.ndarray, off: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, ...]:
        """(string?, int?, the varint) of each AnyValue; anything else is slow."""
        sub = scan(data, off, off + length)
        self.slow |= sub.bad | (np.bincount(sub.row, minlength=self.u) != 1)
        is_str = np.zeros(self.u, dtype=bool)
        is_int = np.zeros(self.u, dtype=bool)
        number = np.zeros(self.u, dtype=np.uint64)
        s = (sub.number == 1) & (sub.wire == 2)
        i = (sub.number == 3) & (sub.wire == 0)
        is_str[sub.row[s]] = True
        is_int[sub.row[i]] = True
        number[sub.row[i]] = sub.value[i]
        off[sub.row[s]] = sub.offset[s]  # the string itself
        length[sub.row[s]] = sub.length[s]
        self.slow |= ~(is_str | is_int)
        return is_str, is_int, number.view(np.int64)

    def _keys(self, off: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, pa.Array]:
        """NAMES index and the quoted ``"key":`` of each distinct attribute."""
        encoded = _binary(self.joined, off, length, views_only=True).dictionary_encode()
        keys = encoded.dictionary.cast(pa.binary()).to_pylist()
        codes, prefixes, broken = [], [], []
        for raw in keys:
            try:
                key = raw.decode("utf-8")
            except UnicodeDecodeError:
                key, bad = "", True
            else:
                bad = False
            codes.append(_NAME_INDEX.get(key, -1))
            prefixes.append(otlp_wire._QUOTE(key) + ":")
            broken.append(bad)
        index = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        self.slow |= np.asarray(broken, dtype=bool)[index] if keys else False
        return np.asarray(codes, dtype=np.int64)[index] if keys else np.zeros(0, np.int64), \
            pa.array(prefixes, pa.string()).take(pa.array(index))

    def _plain(self, data: np.ndarray, key_prefix: pa.Array, off: np.ndarray, length: np.ndarray,
               is_str: np.ndarray, is_int: np.ndarray, number: np.ndarray) -> tuple[pa.Array, pa.Array]:
        """``text`` and ``fragments`` of the plain attributes (null for the slow ones)."""
        strings, broken = _strings(self.joined, off, length, is_str & ~self.slow)
        self.slow |= broken
        escape = pc.fill_null(pc.match_substring_regex(strings, _NEEDS_ESCAPE), False)
        self.slow |= escape.to_numpy(zero_copy_only=False)
        ints = pa.array(number, mask=~is_int).cast(pa.string())
        text = pc.if_else(pa.array(is_str), strings, ints)
        quoted = pc.binary_join_element_wise('"', strings, '"', "")
        fragments = pc.binary_join_element_wise(key_prefix, pc.if_else(pa.array(is_str), quoted, ints), "")
        return text, fragments

    def _slow_path(self, dictionary: pa.Array) -> None:
        """Decode the slow distinct attributes one by one (undecodable ones are ``bad``)."""
        cache = otlp_spans.ATTRIBUTES
        slow = np.nonzero(self.slow)[0]
        if not slow.size:
            return
        self.values: dict[int, Any] = {}
        texts, frags, codes = [], [], []
        for i in slow.tolist():
            raw = dictionary[i].as_py()
            try:
                key, value = cache[raw]
            except otlp_wire.BadAttribute:
                self.bad[i] = True
                key, value, fragment = "", None, None
            else:
                fragment = cache.fragments.get(raw) or otlp_wire._fragment((key, value))
            self.values[i] = value
            texts.append(_as_str(value))
            frags.append(fragment)
            codes.append(_NAME_INDEX.get(key, -1))
            self.truthy[i], self.notnone[i] = bool(value), value is not None
        mask = pa.array(self.slow)
        self.text = pc.replace_with_mask(self.text, mask, pa.array(texts, pa.string()))
        self.fragments = pc.replace_with_mask(self.fragments, mask, pa.array(frags, pa.string()))
        self.key_codes[slow] = codes

    def _status(self, is_int: np.ndarray, number: np.ndarray) -> pa.Array:
        """``_as_status`` of the attributes named like a status code (null for the others)."""
        status: list[int | None] = [None] * (self.u + 1)
        candidates = np.nonzero((self.key_codes == 0) | (self.key_codes == 1))[0]
        slow_values = getattr(self, "values", {})
        texts = self.text.take(pa.array(candidates)).to_pylist() if candidates.size else []
        for i, text in zip(candidates.tolist(), texts):
            if self.slow[i]:
                value = slow_values.get(i)
            else:
                value = int(number[i]) if is_int[i] else text
            status[i] = _as_status(value)
        return pa.array(status, pa.int32())


# -- derived columns ------------------------------------------------------------------------

def derived_columns(uniques: _Uniques, ids: np.ndarray) -> dict[str, pa.Array]:
    """The semantic-convention columns, by the rules of ``otlp_common.derive``.

    ``ids[j]`` holds, per span, the distinct attribute of name ``NAMES[j]`` (-1: absent);
    index -1 picks the sentinel at the end of the per-distinct arrays (an absent attribute).
    """
    ix = {name: ids[i] for i, name in enumerate(NAMES)}
    text, truthy, notnone = uniques.text, uniques.truthy, uniques.notnone

    def first(a: str, b: str, test: np.ndarray) -> np.ndarray:
        return np.where(test[ix[a]], ix[a], ix[b])

    def pick(values: pa.Array, idx: np.ndarray) -> pa.Array:
        return values.take(pa.array(np.where(idx < 0, len(values) - 1, idx)))

    def if_truthy(name: str) -> np.ndarray:
        return np.where(truthy[ix[name]], ix[name], -1)

    out = {
        "http_status": pick(uniques.status, first("http.response.status_code", "http.status_code", notnone)),
        "method": pick(text, first("http.request.method", "http.method", truthy)),
        "route": pick(text, if_truthy("http.route")),
        "peer_service": pick(text, first("service.peer.name", "peer.service", truthy)),
        "server_address": pick(text, first("server.address", "net.peer.name", truthy)),
        "rpc_method": pick(text, if_truthy("rpc.method")),
    }
    path_ix = first("url.path", "http.target", truthy)
    path = _cut_query(pick(text, path_ix))
    url_ix = first("url.full", "http.url", truthy)
    url = _regex_group(pick(text, url_ix), r"(?s)^.*?://[^/]*(?P<p>/[^?#]*)")
    out["path"] = pc.if_else(pa.array(notnone[path_ix]), path, url)
    prefix = _regex_group(out["rpc_method"], r"(?s)^(?P<p>.*)/[^/]*$")
    prefix = pc.if_else(pc.equal(prefix, ""), pa.scalar(None, pa.string()), prefix)
    out["rpc_service"] = pc.if_else(pa.array(truthy[ix["rpc.service"]]), pick(text, ix["rpc.service"]), prefix)
    return out


def _cut_query(paths: pa.Array) -> pa.Array:
    """Paths without the query and fragment (``otlp_common._path_of``)."""
    if paths.null_count == len(paths):
        return paths
    if not pc.any(pc.or_(pc.match_substring(paths, "?"), pc.match_substring(paths, "#"))).as_py():
        return paths
    return pc.replace_substring_regex(paths, r"(?s)[?#].*", "", max_replacements=1)


def _regex_group(values: pa.Array, pattern: str) -> pa.Array:
    """The one named group of ``pattern`` in each value (null without a match)."""
    if values.null_count == len(values):
        return values
    return pc.struct_field(pc.extract_regex(values, pattern), [0])


def _exceptions(batch: _Batch, has_events: np.ndarray, bad: np.ndarray) -> dict[int, tuple[Any, Any]]:
    """exception (type, message) of the spans with events, through upb; odd ones set ``bad``."""
    out: dict[int, tuple[Any, Any]] = {}
    rows = np.nonzero(has_events & ~bad)[0].tolist()
    spans = [batch.span_bytes(i) for i in rows]
    try:  # one parse for all of them; when any is odd, one by one to find it
        parsed = otlp_wire.EventSpans.FromString(b"".join(_framed(span) for span in spans)).spans
    except DecodeError:
        parsed = None
    for k, i in enumerate(rows):
        try:
            events = parsed[k].events if parsed is not None else otlp_wire.EventsOnly.FromString(spans[k]).events
            out[i] = otlp_spans.exception_fields(events)
        except (DecodeError, otlp_wire.BadAttribute):
            bad[i] = True
    return out


def _framed(span: bytes) -> bytes:
    """``span`` as field 1 (length-delimited) of a message."""
    size, prefix = len(span), bytearray(b"\x0a")
    while size >= 0x80:
        prefix.append(size & 0x7F | 0x80)
        size >>= 7
    prefix.append(size)
    return bytes(prefix) + span


def _table(
    spans: _Spans, attrs: _Attributes, names: pa.Array, messages: pa.Array,
    exceptions: dict[int, tuple[Any, Any]], heads: list[tuple[Any, ...]], head_index: np.ndarray, keep: np.ndarray,
) -> pa.Table:
    """The kept spans as a table of ``otlp_common.COLUMNS`` (times still in ns)."""
    from ingest.otlp_common import COLUMNS

    kept = np.nonzero(keep)[0]
    take = pa.array(kept)
    heads_at = head_index[kept]
    cols: dict[str, Any] = {
        "trace_id": spans.hex_ids(1, 16, keep), "span_id": spans.hex_ids(2, 8, keep),
        "parent_span_id": spans.hex_ids(4, 8, keep), "name": names.take(take),
        "kind": _KIND_NAMES.take(pa.array(spans.slot[6][0][kept].astype(np.int64))),
        "start_ns": pa.array(spans.slot[7][0][kept].astype(np.int64)),
        "end_ns": _end_ns(spans.slot[8][0][kept]),
        "status_code": _STATUS_NAMES.take(pa.array(spans.code[kept].astype(np.int64))),
        "status_message": messages.take(take),
        "attributes": attrs.json(keep),
    }
    for i, name in enumerate(("service", "version", "env")):
        cols[name] = pa.array([h[i] for h in heads], pa.string()).take(pa.array(heads_at))
    cols.update(derived_columns(attrs.uniques, attrs.by_name(keep)))
    cols["exception_type"], cols["exception_message"] = _exception_columns(exceptions, keep, kept)
    return pa.table({c: cols[c] for c in COLUMNS})


def _exception_columns(
    exceptions: dict[int, tuple[Any, Any]], keep: np.ndarray, kept: np.ndarray,
) -> tuple[pa.Array, pa.Array]:
    """exception_type and exception_message of the kept spans (null where there is none)."""
    n = len(kept)
    found = sorted(i for i in exceptions if keep[i])
    if not found:
        return pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
    mask = np.zeros(n, dtype=bool)
    mask[np.searchsorted(kept, found)] = True
    mask_array = pa.array(mask)
    return tuple(  # type: ignore[return-value]
        pc.replace_with_mask(pa.nulls(n, pa.string()), mask_array, pa.array([exceptions[i][j] for i in found], pa.string()))
        for j in (0, 1)
    )


def _end_ns(end: np.ndarray) -> pa.Array:
    values = end.astype(np.int64)
    return pa.array(values, mask=values == 0)
