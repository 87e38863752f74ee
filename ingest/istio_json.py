"""Istio access logs in JSON (``meshConfig.accessLogEncoding: JSON``), one object per line.

Keys (Istio's ``EnvoyJSONLogFormatIstio``, in any order): start_time, route_name, method, path,
protocol, response_code, response_flags, response_code_details, connection_termination_details,
bytes_received, bytes_sent, duration, upstream_service_time, x_forwarded_for, user_agent,
request_id, authority, upstream_host, upstream_cluster, upstream_local_address,
downstream_local_address, downstream_remote_address, requested_server_name,
upstream_transport_failure_reason. Values are strings in Istio's format; numbers (newer Envoy
typed JSON) and ``null`` are accepted too, ``-`` means absent, unknown keys are ignored. The
fields mean what they mean in the text format, so the mapping to ``requests`` (callee and
version from ``outbound|port|subset|fqdn`` and so on) is ``ingest.envoy.convert``.

The whole chunk is decoded at once; when that fails, halves are decoded until the bad lines are
found (a few decodes per bad line), and those lines are rejected. A line that is valid JSON but
has no readable ``start_time`` is rejected too.
"""

from __future__ import annotations

import io
import json

import polars as pl

from ingest import envoy
from ingest import textparse as tp
from ingest.parsed import Parsed

NAME = "istio_json"

_SCHEMA = {name: pl.String for name in envoy.FIELDS}
_SIGNATURE = {"start_time", "response_code", "upstream_cluster", "authority", "response_flags",
              "downstream_remote_address", "bytes_sent", "duration", "x_forwarded_for", "upstream_host"}
"""Keys of which a line must carry several to look like Istio's JSON format."""


def sniff(head: bytes) -> bool:
    """True when most of the first lines are JSON objects with Istio's access-log keys."""
    return tp.mostly(tp.sniff_lines(head), _looks_like_istio)


def _looks_like_istio(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and len(_SIGNATURE & record.keys()) >= 5


def parse(chunk: bytes, *, first_line_no: int) -> Parsed:
    """Rows and rejects of a chunk of Istio JSON access-log lines."""
    frame = tp.line_frame(chunk, first_line_no=first_line_no)
    is_object = pl.col(tp.RAW).str.strip_chars_start(tp.BLANK).str.starts_with("{")
    objects, rejects = tp.split_bad(frame, ~is_object, reason="not a JSON object")
    records, bad = _decode(objects[tp.RAW].to_list())
    if bad:
        rejects += tp.rejects_of(objects[bad], reason="invalid JSON")
    good = objects.filter(~pl.int_range(0, objects.height).is_in(bad))
    rows = pl.concat([good, records], how="horizontal")
    rows, bad_time = tp.split_bad(envoy.convert(rows), pl.col("ts").is_null(), reason="no readable start_time")
    return tp.parsed(rows, rejects + bad_time, columns=envoy.COLUMNS)


def _decode(lines: list[str]) -> tuple[pl.DataFrame, list[int]]:
    """Records of the lines that decode (in order), and the indexes of those that do not."""
    if not lines:
        return pl.DataFrame(schema=_SCHEMA), []
    try:
        frame = pl.read_ndjson(io.BytesIO("\n".join(lines).encode()), schema=_SCHEMA)
        if frame.height == len(lines):
            return frame, []
    except Exception:  # noqa: BLE001 - any decoding failure means: look closer
        pass
    if len(lines) == 1:
        return pl.DataFrame(schema=_SCHEMA), [0]
    half = len(lines) // 2
    left, left_bad = _decode(lines[:half])
    right, right_bad = _decode(lines[half:])
    return pl.concat([left, right]), left_bad + [half + i for i in right_bad]
