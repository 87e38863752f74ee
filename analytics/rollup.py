"""Per-minute, per-hour and per-day rollups of ``requests`` with latency sketches, by DuckDB.

Nine rollups (schemas in meshlens.schema.ROLLUPS), one Parquet file per UTC date each::

    rollups/requests_1m/date=D/part.parquet   (minute, caller, service, version, route, method, env, status_class)
    rollups/requests_1h/...  requests_1d/...  the same key per hour / per day
    rollups/edges_1m/...  edges_1h/...  edges_1d/...   (time, caller, service, version, env)
    rollups/services_1m/...  services_1h/...  services_1d/...   (time, service, env)

plus ``service_cells_1m/1h/1d`` (analytics.fastpath: one row per (time, service, env) with the
sketch as two lists), derived from the ``services_*`` stage tables in the same pass.

Layout: a long table, one row per (time, key, latency bucket ``lat_key``) holding the requests,
5xx errors, 4xx client errors, bytes, duration count/sum/max of the requests of that key whose
duration fell in that bucket of analytics.sketch (``lat_key`` NULL: requests without a
duration). Every measure is a plain sum (max for the max), so a group's totals are sums over
its rows, a group's sketch is ``(lat_key, duration_count)``, and merging sketches over any set
of minutes, hours, days or keys is one ``GROUP BY ... lat_key`` with ``sum`` -- no list
unnesting, and rows of different grains can be added together (analytics.red tiles a window
with days, hours and minutes). The narrower ``edges_*`` rollups answer per-edge and per-version
questions from a fraction of the rows, and ``services_*`` (per service and env: the
dashboard's per-service panels and charts) from a fraction of those.

A date is recomputed as a whole from its raw partition in one DuckDB session: names are first
mapped to integer ids, requests grouped by (minute, key id, status class, bucket) into a
temporary table, and each rollup summed from the finest level already computed (``PARENT``),
then written with the names joined back. Files are sorted by (service, ..., time, lat_key)
with small row groups (16k rows for ``services_*``), so that a one-service query skips most of
a file and reads its rows already in the order analytics.red merges them. Each file is written under a dot-prefixed name and renamed into place: readers
see the old file or the new one, never half of one. ``update`` redoes only the dates it is
given (``meshlens ingest`` passes the dates it touched); ``rebuild`` redoes every date.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from analytics import sketch
from meshlens import catalog, schema
from meshlens.lake import Lake

catalog.ROLLUP_SCHEMAS.update(schema.ROLLUPS)

ROW_GROUP_SIZE = 65_536
SMALL_ROW_GROUP_SIZE = 16_384
"""Row groups of the ``services_*`` files: a one-service, one-hour query reads one small group."""
FILE_NAME = "part.parquet"

STATUS_CLASS_SQL = (
    "CASE WHEN status BETWEEN 100 AND 599 THEN CAST(status // 100 AS VARCHAR) || 'xx' ELSE 'none' END"
)
"""SQL expression: the status class of a raw row (the rollups store the same labels)."""


@dataclass(frozen=True)
class Level:
    """One rollup: its table name, time grain and key."""

    name: str
    grain: str  # "minute", "hour" or "day": also the name of its time column
    dims: tuple[str, ...]

    @property
    def seconds(self) -> int:
        return GRAIN_SECONDS[self.grain]


GRAIN_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
LEVELS = tuple(
    Level(f"{family}_{suffix}", grain, dims)
    for family, dims in (("requests", schema.ROLLUP_DIMS), ("edges", schema.EDGE_ROLLUP_DIMS),
                         ("services", schema.SERVICE_ROLLUP_DIMS))
    for grain, suffix in (("minute", "1m"), ("hour", "1h"), ("day", "1d"))
)
_LEVEL_BY_NAME = {level.name: level for level in LEVELS}


def update(lake: Lake, *, dates: Iterable[str]) -> list[str]:
    """Recompute the rollups of these dates (YYYY-MM-DD) only; returns the dates done."""
    done = []
    for date in sorted({str(d) for d in dates}):
        _rebuild_date(lake, date)
        done.append(date)
    return done


def rebuild(lake: Lake) -> list[str]:
    """Recompute every date's rollups and drop those of dates without raw requests."""
    raw = raw_dates(lake)
    for level in (*LEVELS, *_cells().LEVELS, *_identity().LEVELS):
        for date in _dates_under(lake.table_dir(f"rollups/{level.name}")) - set(raw):
            _remove(lake, level, date)
    return update(lake, dates=raw)


def raw_dates(lake: Lake) -> list[str]:
    """Dates that have published raw request files."""
    return sorted(_dates_under(lake.table_dir("requests")))


def rollup_file(lake: Lake, name: str, date: str) -> Path:
    """Where a rollup's file for a date lives."""
    return lake.table_dir(f"rollups/{name}") / f"date={date}" / FILE_NAME


def _dates_under(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {
        p.name.removeprefix("date=")
        for p in folder.glob("date=*")
        if any(not f.name.startswith(".") for f in p.glob("*.parquet"))
    }


def _raw_files(lake: Lake, date: str) -> list[str]:
    folder = lake.table_dir("requests") / f"date={date}"
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.glob("*.parquet") if not p.name.startswith("."))


def _rebuild_date(lake: Lake, date: str) -> None:
    files = _raw_files(lake, date)
    if not files:
        for level in (*LEVELS, *_cells().LEVELS, *_identity().LEVELS):
            _remove(lake, level, date)
        return
    conn = duckdb.connect(":memory:")
    try:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET preserve_insertion_order = false")
        conn.execute("SET enable_progress_bar = false")
        for statement in _prepare_sql(files):
            conn.execute(statement)
        for level in LEVELS:
            conn.execute(_stage_sql(level))
            _write_level(conn, lake, level, date)
        _cells().write_date(conn, lake, date)
        _identity().write_date(conn, lake, date, files)
    finally:
        conn.close()


def _cells():  # type: ignore[no-untyped-def]
    """analytics.fastpath (the ``service_cells_*`` tables), derived from the ``services_*`` stage tables."""
    from analytics import fastpath

    return fastpath


def _identity():  # type: ignore[no-untyped-def]
    """analytics.rollup_identity, built in the same per-date pass (imported late: it imports this)."""
    from analytics import rollup_identity

    return rollup_identity


_NAME_DIMS = tuple(d for d in schema.ROLLUP_DIMS if d != "status_class")


def _prepare_sql(files: list[str]) -> list[str]:
    """Temporary tables ``keys`` (names -> integer ids) and ``fine`` (what every level sums).

    Grouping millions of rows on seven strings is the slow part of a rollup, so names are
    replaced by integer ids first: ``key_id`` per (caller, service, version, route, method, env)
    and ``edge_id`` per (caller, service, version, env), both numbered in service order so that
    sorting a rollup by id sorts it by service. ``fine`` groups by (minute since the epoch,
    key_id, status class, sketch bucket): integers only.
    """
    source = f"read_parquet([{', '.join(_quote(f) for f in files)}], union_by_name = true)"
    names = ", ".join(_NAME_DIMS)
    edge = ", ".join(schema.EDGE_ROLLUP_DIMS)
    svc = ", ".join(schema.SERVICE_ROLLUP_DIMS)
    matches = " AND ".join(f"r.{d} IS NOT DISTINCT FROM k.{d}" for d in _NAME_DIMS)
    return [
        f"""CREATE TEMP TABLE keys AS
        SELECT {names},
               row_number() OVER (ORDER BY service, caller, version, env, route, method) AS key_id,
               dense_rank() OVER (ORDER BY service, caller, version, env) AS edge_id,
               dense_rank() OVER (ORDER BY service, env) AS svc_id
        FROM (SELECT DISTINCT {names} FROM {source} WHERE ts IS NOT NULL)""",
        f"""CREATE TEMP TABLE edge_keys AS SELECT DISTINCT edge_id, {edge} FROM keys""",
        f"""CREATE TEMP TABLE svc_keys AS SELECT DISTINCT svc_id, {svc} FROM keys""",
        f"""CREATE TEMP TABLE fine AS
        SELECT epoch_us(r.ts) // 60000000 AS minute, k.key_id, k.edge_id, k.svc_id,
               CASE WHEN r.status BETWEEN 100 AND 599 THEN r.status // 100 ELSE 0 END AS sc,
               {sketch.key_sql('r.duration_ms')} AS k,
               count(*) AS n,
               count(*) FILTER (WHERE r.status BETWEEN 500 AND 599) AS e5,
               count(*) FILTER (WHERE r.status BETWEEN 400 AND 499) AS e4,
               coalesce(sum(r.bytes_in), 0)::BIGINT AS b_in,
               coalesce(sum(r.bytes_out), 0)::BIGINT AS b_out,
               count(r.duration_ms) AS dc, sum(r.duration_ms) AS ds, max(r.duration_ms) AS dm
        FROM {source} r JOIN keys k ON {matches}
        WHERE r.ts IS NOT NULL
        GROUP BY ALL""",
    ]


_MEASURES = (
    "sum(n)::BIGINT AS n, sum(e5)::BIGINT AS e5, sum(e4)::BIGINT AS e4, sum(b_in)::BIGINT AS b_in, "
    "sum(b_out)::BIGINT AS b_out, sum(dc)::BIGINT AS dc, sum(ds) AS ds, max(dm) AS dm"
)
PARENT = {"requests_1m": "fine", "requests_1h": "fine", "requests_1d": "requests_1h",
          "edges_1m": "fine", "edges_1h": "edges_1m", "edges_1d": "edges_1h",
          "services_1m": "fine", "services_1h": "services_1m", "services_1d": "services_1h"}
"""What each level is summed from: always the finest table that is already coarse enough."""


def _ids(level: Level) -> tuple[str, str, str]:
    """(id column, names table, extra key) of a level in id space."""
    if level.dims == schema.ROLLUP_DIMS:
        return "key_id", "keys", ", sc"
    if level.dims == schema.SERVICE_ROLLUP_DIMS:
        return "svc_id", "svc_keys", ""
    return "edge_id", "edge_keys", ""


def _stage_sql(level: Level) -> str:
    """CREATE the level in id space (``t`` = time in units of its grain) from its parent."""
    ident, _, extra = _ids(level)
    parent = PARENT[level.name]
    if parent == "fine" and level.grain == "minute" and extra:
        return f"CREATE TEMP TABLE {level.name} AS SELECT minute AS t, key_id, sc, k, n, e5, e4, b_in, b_out, dc, ds, dm FROM fine"
    parent_seconds = 60 if parent == "fine" else GRAIN_SECONDS[_LEVEL_BY_NAME[parent].grain]
    per = level.seconds // parent_seconds
    time_col = "minute" if parent == "fine" else "t"
    return f"""CREATE TEMP TABLE {level.name} AS
    SELECT {time_col} // {per} AS t, {ident}{extra}, k, {_MEASURES}
    FROM {parent} GROUP BY ALL"""


def _level_sql(level: Level) -> str:
    """The SELECT of one rollup file: its id-space table with names joined back, sorted."""
    ident, names_table, extra = _ids(level)
    status = ", CASE WHEN sc = 0 THEN 'none' ELSE CAST(sc AS VARCHAR) || 'xx' END AS status_class" if extra else ""
    names = ", ".join(f"n.{d}" for d in level.dims if d != "status_class")
    return f"""
    SELECT to_timestamp(t * {level.seconds}) AS {level.grain}, {names}{status}, k AS lat_key,
           n AS requests, e5 AS errors_5xx, e4 AS client_errors_4xx, b_in AS bytes_in,
           b_out AS bytes_out, dc AS duration_count, ds AS duration_sum_ms, dm AS duration_max_ms
    FROM {level.name} f JOIN {names_table} n USING ({ident})
    ORDER BY {ident}, t, k
    """


def _write_level(conn: duckdb.DuckDBPyConnection, lake: Lake, level: Level, date: str) -> None:
    write_select(conn, lake, level.name, date, _level_sql(level), row_group_size=_row_group_size(level))


def write_select(conn: duckdb.DuckDBPyConnection, lake: Lake, name: str, date: str, sql: str,
                 *, row_group_size: int = ROW_GROUP_SIZE) -> None:
    """Publish rollup ``name``'s file of ``date`` from a SELECT: written aside, then renamed in."""
    publish(lake, name, date, lambda tmp: conn.execute(
        f"COPY ({sql}) TO {_quote(str(tmp))} "
        f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {int(row_group_size)})"
    ))


def publish(lake: Lake, name: str, date: str, write: Callable[[Path], object]) -> None:
    """Publish rollup ``name``'s file of ``date``: ``write(tmp)`` writes it aside, then it is renamed in."""
    final = rollup_file(lake, name, date)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    write(tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    for stale in final.parent.glob("*.parquet"):
        if stale.name != final.name and not stale.name.startswith("."):
            stale.unlink(missing_ok=True)


def _row_group_size(level: Level) -> int:
    return SMALL_ROW_GROUP_SIZE if level.dims == schema.SERVICE_ROLLUP_DIMS else ROW_GROUP_SIZE


def _remove(lake: Lake, level: Level, date: str) -> None:
    folder = rollup_file(lake, level.name, date).parent
    for path in folder.glob("*.parquet") if folder.is_dir() else ():
        path.unlink(missing_ok=True)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
