"""``meshlens compact``: merge the small Parquet files of each partition, rows exactly kept.

Every ingest publishes at least one file per source file and date, so a lake fed by S3
deliveries (a file every few minutes) holds many small files. Compaction rewrites each
partition folder ``<table>/date=D`` into files of about ``target_rows`` rows:

1. the merged files are written into a hidden sibling folder ``.date=D.compact-<id>``;
2. the two folders are swapped in one step (Linux ``renameat2(RENAME_EXCHANGE)``), so a reader
   lists either all the old files or all the new ones, never both and never neither;
3. files that appeared in the old folder meanwhile are moved into the new one; the old
   folder is deleted.

Only files of finished sources (whose content hash is in the manifest) and earlier merged
files are merged: the files of an ingest still running keep their names, which the crash
clean-up (``Lake.remove_stem``) relies on. Where the swap call is missing (not Linux) the
merged files are renamed in, then the old ones deleted: a reader may then briefly see both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from meshlens.lake import Lake

TABLES = ("requests", "spans")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def compact_lake(lake: Lake, *, target_rows: int = 2_000_000) -> list[list[object]]:
    """Compact every partition of every table; one summary row per table."""
    finished = {entry.content_hash[:20] for entry in lake.manifest()}
    summary = []
    for table in TABLES:
        folder = lake.table_dir(table)
        parts = sorted(p for p in folder.glob("date=*") if p.is_dir()) if folder.is_dir() else []
        before = after = rows = touched = 0
        for part in parts:
            result = compact_partition(part, finished=finished, target_rows=target_rows)
            before, after, rows = before + result[0], after + result[1], rows + result[2]
            touched += result[0] != result[1]
        summary.append([table, touched, before, after, rows])
    return summary


def compact_partition(folder: Path, *, finished: set[str], target_rows: int) -> tuple[int, int, int]:
    """Merge one partition folder; returns (files before, files after, rows)."""
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
    mergeable = [p for p in files if _stem(p) in finished or p.name.startswith("compact-")]
    keep = [p for p in files if p not in mergeable]
    total = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
    groups = _groups(mergeable, target_rows=target_rows)
    if len(groups) == len(mergeable):  # nothing to merge
        return len(files), len(files), total
    staging = folder.with_name(f".{folder.name}.compact-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    for group in groups:
        _merge(group, staging / f"compact-{uuid.uuid4().hex}.parquet")
    for path in keep:
        os.link(path, staging / path.name)
    _swap_in(staging, folder, merged=set(mergeable), kept=set(keep))
    return len(files), len(groups) + len(keep), total


def _stem(path: Path) -> str:
    return path.name.split("-", 1)[0]


def _groups(files: list[Path], *, target_rows: int) -> list[list[Path]]:
    """Consecutive files packed into groups of at most ``target_rows`` rows."""
    groups: list[list[Path]] = []
    rows = 0
    for path in files:
        n = pq.ParquetFile(path).metadata.num_rows
        if not groups or rows + n > target_rows:
            groups.append([])
            rows = 0
        groups[-1].append(path)
        rows += n
    return groups


def _merge(group: list[Path], target: Path) -> None:
    """Write the rows of ``group`` to ``target`` (schemas unified by name)."""
    tables = [pq.read_table(p) for p in group]
    merged = pa.concat_tables(tables, promote_options="permissive")
    tmp = target.with_name(f".{target.name}.tmp")
    pq.write_table(merged, tmp, compression="zstd")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def _swap_in(staging: Path, folder: Path, *, merged: set[Path], kept: set[Path]) -> None:
    """Make ``staging`` the partition in one step, keeping files that arrived meanwhile."""
    if _exchange(staging, folder):
        for path in staging.glob("*.parquet"):  # staging now names the old folder
            if folder / path.name not in merged | kept and not path.name.startswith("."):
                os.replace(path, folder / path.name)  # published during the compaction
        shutil.rmtree(staging, ignore_errors=True)
        return
    for path in staging.iterdir():  # no atomic swap available: rename in, then delete
        os.replace(path, folder / path.name)
    for path in merged:
        path.unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False when unavailable."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0
