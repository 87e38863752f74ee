"""OTLP traces into the lake's ``spans`` table: detection, decoding and the file path.

Two encodings, one module each (``otlp_json``, ``otlp_proto``), sharing ``otlp_common``.
``ingest/__init__.py`` lists them in ``SPAN_FORMATS``; the ingest pipeline sends a file whose
format is a span format to ``ingest_span_file`` here instead of writing ``requests``. The
rules are those of every source: a manifest entry per file (the same content twice stores
nothing twice), rejects quarantined with a reason, files published atomically, partitioned by
the UTC date of ``start_ts``.

The receiver (``ingest.receiver``) uses ``decode_body`` for request bodies and
``publish_spans`` to write a batch.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from ingest import otlp_json, otlp_proto
from ingest.otlp_common import SpanColumns, rejects_table
from meshlens import schema
from meshlens.errors import InputError, UnknownNameError
from meshlens.lake import Lake, ManifestEntry, now_utc

READERS = {otlp_json.NAME: otlp_json, otlp_proto.NAME: otlp_proto}
"""Span formats by name (the same modules as ``ingest.SPAN_FORMATS``)."""

JSON_TYPES = ("application/json",)
PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")


@dataclass
class SpanIngestResult:
    """What taking in one span file did."""

    path: str
    source_format: str
    rows_read: int = 0
    rows_stored: int = 0
    rows_rejected: int = 0
    dates_touched: set[str] = field(default_factory=set)
    skipped: bool = False


def detect(head: bytes) -> str | None:
    """The span format of a file from its first (decompressed) bytes, or None."""
    head = maybe_gunzip(head, partial=True)
    for name, module in READERS.items():
        if module.sniff(head):
            return name
    return None


def maybe_gunzip(data: bytes, *, partial: bool = False) -> bytes:
    """``data`` decompressed when it is gzip (a partial head is decompressed as far as it goes)."""
    if data[:2] != b"\x1f\x8b":
        return data
    if partial:
        return zlib.decompressobj(wbits=31).decompress(data, 1 << 20)
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"not a readable gzip file: {exc}") from None


def parse_file(data: bytes, *, fmt: str) -> SpanColumns:
    """Every span of a file's (decompressed) bytes in format ``fmt``."""
    if fmt not in READERS:
        raise UnknownNameError("span format", fmt, READERS)
    return READERS[fmt].parse(data)


def decode_body(body: bytes, *, content_type: str) -> SpanColumns:
    """The spans of one OTLP/HTTP request body (already gunzipped)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in PROTOBUF_TYPES:
        return otlp_proto.parse_request(body)
    if kind in JSON_TYPES:
        return otlp_json.parse_request(body)
    raise InputError(f"unsupported content type {content_type!r}")


def ingest_span_file(
    lake: Lake, path: str | Path, data: bytes, *, fmt: str | None = None,
    content_hash: str | None = None, size: int | None = None,
) -> SpanIngestResult:
    """Take in one OTLP file (raw or gzip bytes): spans, quarantine and manifest."""
    data = maybe_gunzip(data)
    fmt = fmt or detect(data[:65536])
    if fmt is None:
        raise InputError(f"{path}: not an OTLP trace file (neither OTLP/JSON nor OTLP protobuf)")
    content_hash = content_hash or hashlib.sha256(data).hexdigest()
    result = SpanIngestResult(path=str(path), source_format=fmt)
    if lake.manifest_entry(content_hash) is not None:
        result.skipped = True
        return result
    stem = f"{fmt}-{content_hash[:32]}"
    lake.remove_stem("spans", stem)  # leftovers of a crash before the manifest entry
    columns = parse_file(data, fmt=fmt)
    table = columns.to_table(source_format=fmt, source_file=str(path))
    result.dates_touched = set(publish_spans(lake, table, columns.rejects, stem=stem,
                                             source_file=str(path), source_format=fmt))
    result.rows_stored, result.rows_rejected = table.num_rows, len(columns.rejects)
    result.rows_read = result.rows_stored + result.rows_rejected
    lake.add_manifest(ManifestEntry(
        path=str(path), size=size if size is not None else len(data), content_hash=content_hash,
        source_format=fmt, table_name="spans", rows_read=result.rows_read,
        rows_stored=result.rows_stored, rows_rejected=result.rows_rejected,
        ingested_at=now_utc().isoformat(),
    ))
    return result


def publish_spans(
    lake: Lake, table: pa.Table, rejects: list[tuple[int, str, str]], *, stem: str,
    source_file: str, source_format: str,
) -> list[str]:
    """Write spans (partitioned by start date) and their rejects; returns the dates written."""
    if rejects:
        lake.add_quarantine(rejects_table(rejects, source_file=source_file, source_format=source_format), stem=stem)
    return lake.write_partitioned("spans", table, ts_column="start_ts", stem=stem, parquet_options=SPAN_PARQUET)


_UNIQUE_PER_SPAN = ("trace_id", "span_id", "parent_span_id", "start_ts", "end_ts", "duration_ms", "attributes")
SPAN_PARQUET = {"use_dictionary": [f.name for f in schema.SPANS if f.name not in _UNIQUE_PER_SPAN]}
"""Parquet options of span files: no dictionary for the columns (nearly) unique per span.

Parquet would build a dictionary for them and fall back to plain pages once it overflows:
wasted work and bigger files (the bench: ~1 us and ~10 bytes less per span). Encodings
only; the values stored are the same."""
