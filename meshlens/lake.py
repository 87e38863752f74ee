"""The lake: a directory of Hive-partitioned Parquet, the only source of truth.

Layout under the root (``--data DIR``, ``$MESHLENS_DATA`` or ``./meshlens-data``)::

    requests/date=YYYY-MM-DD/<stem>.parquet     one file per source file (or batch) and date
    spans/date=YYYY-MM-DD/<stem>.parquet
    rollups/<name>/date=YYYY-MM-DD/<stem>.parquet
    _manifest/<content_hash>.json               one entry per source file taken in
    _quarantine/<stem>.parquet                  rejected lines: file, line number, reason, raw text

A file becomes visible only when complete: it is written under a dot-prefixed temporary name
(which every reader's glob skips) and renamed into place. Taking in the same source twice is
prevented by the manifest, written last; files left by a crash before the manifest entry share
the source's stem and are removed by ``remove_stem`` before the source is taken in again.
No lock is held: readers see whole files or nothing.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from meshlens import schema

PARTITIONED = ("requests", "spans")


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    size: int
    content_hash: str
    source_format: str
    table_name: str
    rows_read: int
    rows_stored: int
    rows_rejected: int
    ingested_at: str


class Lake:
    """Paths and atomic writes of one lake directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def table_dir(self, name: str) -> Path:
        """Folder of a table: ``requests``, ``spans`` or ``rollups/<name>``."""
        return self.root / name

    def glob(self, name: str) -> str:
        """The Parquet glob of a partitioned table, for DuckDB or polars."""
        return str(self.table_dir(name) / "date=*" / "*.parquet")

    def has_files(self, name: str) -> bool:
        """True when the table has at least one published file."""
        return next(self.files(name), None) is not None

    def files(self, name: str) -> Iterator[Path]:
        """Published Parquet files of a table (temporary files excluded)."""
        folder = self.table_dir(name)
        if folder.is_dir():
            yield from (p for p in folder.rglob("*.parquet") if not p.name.startswith("."))

    def write_partitioned(
        self, name: str, table: pa.Table, *, ts_column: str, stem: str, parquet_options: dict[str, Any] | None = None,
    ) -> list[str]:
        """Write ``table`` split by the UTC date of ``ts_column``; returns the dates written.

        ``parquet_options``: extra ``pyarrow.parquet.write_table`` keywords (see ``write_file``).
        """
        if table.num_rows == 0:
            return []
        days = pc.cast(table.column(ts_column), pa.date32())  # the UTC date (strftime per row is slow)
        written = []
        unique_days = pc.unique(days).to_pylist()
        for day in unique_days:
            if day is None:
                continue
            date = day.isoformat()
            whole = len(unique_days) == 1  # one date, no nulls: no filter (it copies every column)
            part = table if whole else table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
            self.write_file(self.table_dir(name) / f"date={date}" / f"{stem}.parquet", part,
                            parquet_options=parquet_options)
            written.append(date)
        return sorted(written)

    def write_file(self, path: Path, table: pa.Table, *, parquet_options: dict[str, Any] | None = None) -> Path:
        """Write one Parquet file atomically (temporary name, fsync, rename).

        ``parquet_options`` adds ``pyarrow.parquet.write_table`` keywords to the default zstd
        (encodings only, e.g. ``use_dictionary``: the values stored are the same).
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        pq.write_table(table, tmp, compression="zstd", **(parquet_options or {}))
        _fsync_and_rename(tmp, path)
        return path

    def remove_stem(self, name: str, stem: str) -> int:
        """Delete every file of a table whose name starts with ``stem`` (crash leftovers)."""
        removed = 0
        for path in list(self.files(name)):
            if path.name.startswith(stem):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    # -- manifest -------------------------------------------------------------------------
    def manifest_dir(self) -> Path:
        return self.root / "_manifest"

    def manifest_entry(self, content_hash: str) -> ManifestEntry | None:
        """The manifest entry of a source with this content hash, if taken in before."""
        path = self.manifest_dir() / f"{content_hash}.json"
        if not path.is_file():
            return None
        return ManifestEntry(**json.loads(path.read_text(encoding="utf-8")))

    def add_manifest(self, entry: ManifestEntry) -> None:
        """Record a source as taken in (atomically)."""
        folder = self.manifest_dir()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{entry.content_hash}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(asdict(entry)), encoding="utf-8")
        _fsync_and_rename(tmp, folder / f"{entry.content_hash}.json")

    def manifest(self) -> list[ManifestEntry]:
        """Every manifest entry."""
        folder = self.manifest_dir()
        if not folder.is_dir():
            return []
        return [
            ManifestEntry(**json.loads(p.read_text(encoding="utf-8")))
            for p in sorted(folder.glob("*.json"))
        ]

    # -- quarantine -----------------------------------------------------------------------
    def quarantine_dir(self) -> Path:
        return self.root / "_quarantine"

    def add_quarantine(self, rejected: pa.Table, *, stem: str) -> None:
        """Keep rejected lines (schema.QUARANTINE) beside the lake."""
        if rejected.num_rows:
            table = schema.conform(rejected, schema.QUARANTINE)
            self.write_file(self.quarantine_dir() / f"{stem}.parquet", table)


def now_utc() -> datetime:
    """The current time, UTC (the one place that reads the clock for the lake)."""
    return datetime.now(timezone.utc)


def _fsync_and_rename(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
