"""Source files into the lake: detect, parse in chunks, resolve identity, template routes, write.

For each input file (``ingest_paths``):

1. hash its stored bytes; a hash already in the manifest is skipped (taking a file in twice
   stores nothing twice);
2. remove files a crashed earlier attempt may have published under the same stem (the first
   20 hex digits of the hash) and that no manifest entry vouches for;
3. split it into chunks of whole lines (bounded memory: at most a chunk in flight while the
   previous one is written), parse each with its format module, resolve identity
   (``meshlens.identity``), template routes (``meshlens.routes``), conform to
   ``schema.REQUESTS`` and publish one Parquet file per chunk and date;
4. keep the rejected lines in ``_quarantine``, then write the manifest entry last.

Rows read = rows stored + rows rejected, for every file. A failure in the middle removes what
the file had published, so a file is in the lake completely or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pyarrow as pa

from ingest import FORMATS, SPAN_FORMATS, detect, get_format, sources
from ingest.parsed import Parsed
from meshlens import inventory as inventory_mod
from meshlens import schema
from meshlens.errors import InputError
from meshlens.identity import Resolver
from meshlens.lake import Lake, ManifestEntry, now_utc
from meshlens.routes import template_expr
from meshlens.settings import Settings

MAX_RAW_CHARS = 16_384
"""Quarantined lines longer than this are cut (the line number still finds the original)."""

_REQUEST_COLUMNS = {f.name for f in schema.REQUESTS}


@dataclass
class IngestSummary:
    """What one ``ingest_paths`` call did."""

    files: int = 0                 # files taken in by this call
    rows_read: int = 0
    rows_stored: int = 0
    rows_rejected: int = 0
    files_skipped: int = 0         # already taken in before (same content hash)
    dates_touched: set[str] = field(default_factory=set)
    files_ignored: list[str] = field(default_factory=list)  # found in a folder, not a log format
    formats: dict[str, int] = field(default_factory=dict)   # files taken in per format


@dataclass(frozen=True)
class Progress:
    """Passed to the progress callback after every chunk and file."""

    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    current: str


ProgressFn = Callable[[Progress], None]


@dataclass
class _Counts:
    read: int = 0
    stored: int = 0
    rejected: int = 0
    dates: set[str] = field(default_factory=set)


def ingest_paths(
    lake: Lake,
    paths: Sequence[str | Path],
    *,
    fmt: str = "auto",
    inventory: str | Path | None = None,
    progress: ProgressFn | None = None,
    settings: Settings | None = None,
) -> IngestSummary:
    """Take files, folders (recursively) and ``-`` (stdin) into the lake."""
    settings = settings or Settings()
    module = None if fmt == "auto" else (SPAN_FORMATS.get(fmt) or get_format(fmt))
    resolver = Resolver(load_inventory(lake, inventory, settings=settings))
    spool = lake.root / ".spool"
    found = sources.expand(list(paths), spool_dir=spool)
    summary = IngestSummary()
    tracker = _Tracker(found, progress)
    try:
        for source in found:
            _ingest_file(lake, source, module=module, resolver=resolver, settings=settings,
                         summary=summary, tracker=tracker)
            tracker.file_done(source)
    finally:
        for source in found:
            if source.name == "<stdin>":
                source.path.unlink(missing_ok=True)
    return summary


def load_inventory(lake: Lake, path: str | Path | None, *, settings: Settings | None = None) -> inventory_mod.Inventory:
    """The inventory named by ``path``, the ``inventory`` setting, or ``<data>/meshlens.toml``."""
    chosen = path or (settings["inventory"] if settings else "") or None
    if chosen:
        return inventory_mod.load(chosen)
    default = lake.root / "meshlens.toml"
    return inventory_mod.load(default) if default.is_file() else inventory_mod.Inventory()


class _Tracker:
    """Bytes and files done, reported to the progress callback."""

    def __init__(self, found: list[sources.Source], progress: ProgressFn | None) -> None:
        self.progress = progress
        self.total = sum(_size(s.path) for s in found)
        self.files_total = len(found)
        self.base = 0
        self.files_done = 0

    def chunk_done(self, source: sources.Source, position: int) -> None:
        """Report progress within ``source``."""
        if self.progress:
            self.progress(Progress(self.base + position, self.total, self.files_done, self.files_total, source.name))

    def file_done(self, source: sources.Source) -> None:
        """Report ``source`` finished (taken in, skipped or ignored)."""
        self.base += _size(source.path)
        self.files_done += 1
        if self.progress:
            self.progress(Progress(self.base, self.total, self.files_done, self.files_total, source.name))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _ingest_file(lake: Lake, source: sources.Source, *, module: ModuleType | None, resolver: Resolver,
                 settings: Settings, summary: IngestSummary, tracker: _Tracker) -> None:
    digest = sources.content_hash(source.path)
    if lake.manifest_entry(digest) is not None:
        summary.files_skipped += 1
        return
    span_module = _span_format(source, module)
    if span_module is not None:  # OTLP traces go to the spans table (traces engineer)
        _ingest_spans(lake, source, span_module, digest=digest, summary=summary)
        return
    head = _head(source)
    chosen = None if head is None else module or _detect(head, source)
    if head is None or chosen is None:
        summary.files_ignored.append(source.name)
        return
    stem = digest[:20]
    _remove_stem(lake, stem)
    try:
        counts = _take_in(lake, source, chosen, head=head, stem=stem, resolver=resolver,
                          settings=settings, tracker=tracker)
    except BaseException:
        _remove_stem(lake, stem)
        raise
    lake.add_manifest(ManifestEntry(
        path=source.name, size=_size(source.path), content_hash=digest, source_format=chosen.NAME,
        table_name="requests", rows_read=counts.read, rows_stored=counts.stored,
        rows_rejected=counts.rejected, ingested_at=now_utc().isoformat(),
    ))
    _add(summary, counts, chosen.NAME)


def _span_format(source: sources.Source, module: ModuleType | None) -> ModuleType | None:
    """The OTLP span format named or detected for a file (None: an access-log file)."""
    if module is not None:
        return module if module.NAME in SPAN_FORMATS else None
    try:
        with sources.Reader(source) as reader:
            head = reader.read(sources.HEAD_BYTES)
    except InputError:
        return None  # the access-log path reports unreadable files
    return next((m for m in SPAN_FORMATS.values() if m.sniff(head)), None)


def _ingest_spans(lake: Lake, source: sources.Source, module: ModuleType, *, digest: str,
                  summary: IngestSummary) -> None:
    """Take an OTLP file into ``spans`` (ingest.otlp applies the same manifest/quarantine rules)."""
    from ingest.otlp import ingest_span_file

    with sources.Reader(source) as reader:
        data = sources.read_all(reader)
    result = ingest_span_file(lake, source.name, data, fmt=module.NAME, content_hash=digest,
                              size=_size(source.path))
    _add(summary, _Counts(result.rows_read, result.rows_stored, result.rows_rejected,
                          result.dates_touched), module.NAME)


def _add(summary: IngestSummary, counts: _Counts, fmt: str) -> None:
    summary.files += 1
    summary.rows_read += counts.read
    summary.rows_stored += counts.stored
    summary.rows_rejected += counts.rejected
    summary.dates_touched |= counts.dates
    summary.formats[fmt] = summary.formats.get(fmt, 0) + 1


def _head(source: sources.Source) -> bytes | None:
    """The first decompressed bytes; None for a binary or broken file found in a folder."""
    try:
        return sources.read_head(source)
    except InputError:
        if source.explicit:
            raise
        return None


def _detect(head: bytes, source: sources.Source) -> ModuleType | None:
    """The format of a file; None for a file found in a folder that is no known log."""
    if not head.strip():
        return FORMATS.get("lattice") or next(iter(FORMATS.values()))  # empty: any parser, 0 rows
    try:
        return FORMATS[detect(head, name=source.name)]
    except InputError:
        if source.explicit:
            raise
        return None


def _remove_stem(lake: Lake, stem: str) -> None:
    lake.remove_stem("requests", stem)
    lake.remove_stem("_quarantine", stem)


def _parsed_chunks(reader: sources.Reader, module: ModuleType, head: bytes,
                   settings: Settings) -> Iterator[Parsed]:
    """The careful path: whole lines in bounded chunks, each parsed by the format module."""
    whole = getattr(module, "whole_file", None)
    if whole is not None and whole(head):
        yield module.parse(sources.read_all(reader), first_line_no=1)
        return
    for line_no, chunk in sources.chunks(reader, max_lines=int(settings["chunk_lines"])):
        yield module.parse(chunk, first_line_no=line_no)


def _take_in(lake: Lake, source: sources.Source, module: ModuleType, *, head: bytes, stem: str,
             resolver: Resolver, settings: Settings, tracker: _Tracker) -> _Counts:
    """Publish the file chunk by chunk."""
    with sources.Reader(source) as reader:
        parts = _parsed_chunks(reader, module, head, settings)
        return _publish(lake, source, module, parts, stem=stem, resolver=resolver,
                        position=lambda: reader.position, tracker=tracker)


def _publish(lake: Lake, source: sources.Source, module: ModuleType, parts: Iterator[Parsed], *,
             stem: str, resolver: Resolver, position: Callable[[], int], tracker: _Tracker) -> _Counts:
    """Normalise and write every part; writing part i overlaps parsing part i+1."""
    counts = _Counts()
    pending: Future[list[str]] | None = None
    with ThreadPoolExecutor(max_workers=1) as writer:
        for index, parsed in enumerate(parts):
            part_stem = f"{stem}-{index:05d}"
            table, rejects = to_requests(parsed, resolver=resolver, fmt=module.NAME, source_file=source.name)
            counts.read += parsed.rows.height + len(parsed.rejects)
            counts.stored += table.num_rows
            counts.rejected += len(rejects)
            _quarantine(lake, rejects, source=source.name, fmt=module.NAME, stem=part_stem)
            if pending is not None:
                counts.dates.update(pending.result())
            pending = writer.submit(lake.write_partitioned, "requests", table, ts_column="ts", stem=part_stem)
            tracker.chunk_done(source, position())
        if pending is not None:
            counts.dates.update(pending.result())
    return counts


def to_requests(parsed: Parsed, *, resolver: Resolver, fmt: str, source_file: str) -> tuple[pa.Table, list[tuple[int, str, str]]]:
    """Parsed rows as a REQUESTS table; rows without a timestamp join the rejects."""
    rows, rejects = parsed.rows, list(parsed.rejects)
    if "ts" not in rows.columns:
        rows = rows.with_columns(ts=pl.lit(None, dtype=pl.Datetime("us", "UTC")))
    missing_ts = rows.get_column("ts").is_null()
    if missing_ts.any():
        rejects.extend((0, "no timestamp", "") for _ in range(int(missing_ts.sum())))
        rows = rows.filter(~missing_ts)
    rows = resolver.resolve(rows)
    if "path" in rows.columns:
        rows = rows.with_columns(route=template_expr(pl.col("path")))
    rows = rows.with_columns(source_format=pl.lit(fmt), source_file=pl.lit(source_file))
    rows = rows.select([c for c in rows.columns if c in _REQUEST_COLUMNS])
    return schema.conform(rows.to_arrow(), schema.REQUESTS), rejects


def _quarantine(lake: Lake, rejects: list[tuple[int, str, str]], *, source: str, fmt: str, stem: str) -> None:
    if not rejects:
        return
    at = now_utc()
    table = pa.table({
        "source_file": [source] * len(rejects),
        "line_no": [r[0] for r in rejects],
        "reason": [r[1] for r in rejects],
        "raw": [r[2][:MAX_RAW_CHARS] for r in rejects],
        "source_format": [fmt] * len(rejects),
        "rejected_at": pa.array([at] * len(rejects), type=schema.TS),
    })
    lake.add_quarantine(table, stem=stem)


def stats(lake: Lake) -> dict[str, Any]:
    """Totals of the manifest: files, rows read, stored, rejected."""
    entries = lake.manifest()
    return {
        "files": len(entries),
        "rows_read": sum(e.rows_read for e in entries),
        "rows_stored": sum(e.rows_stored for e in entries),
        "rows_rejected": sum(e.rows_rejected for e in entries),
    }

