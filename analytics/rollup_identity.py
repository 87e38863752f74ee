"""Who called what: per-minute and per-hour rollups of callers, principals and auth outcomes.

Two rollups (schemas in meshlens.schema.IDENTITY_ROLLUPS), one Parquet file per UTC date each,
built by analytics.rollup in the same per-date pass as the RED rollups (``write_date``)::

    rollups/identity_1m/date=D/part.parquet   (minute, caller, caller_principal, service, env,
        tls_version, authenticated, mtls, denied, auth_denied_reason, failure_reason, source_ip)
    rollups/identity_1h/...                   the same key per hour

Every measure is a plain sum (min/max for ``first_seen``/``last_seen``): requests, 5xx, 4xx,
bytes in/out. There is no latency sketch, so a day holds a few rows per active
(caller, principal, service) instead of one per latency bucket. The key is what the security
view (analytics.security), the policy check, cost (per service-hour requests and bytes) and
"which principals called X" need; ``source_ip`` is kept only for unauthenticated calls (NULL
otherwise), so that their distinct caller addresses are exact without splitting every
authenticated call by address.

Readers go through ``source_sql``: the same columns (``IDENTITY_COLUMNS`` plus ``t``) from the
rollup tiles (whole hours from ``identity_1h``, the ragged ends from ``identity_1m``) when the
window is aligned to minutes and the rollup has every date that raw requests have in the window,
else from raw ``requests`` rows, one row per request. A query written once over that source
gives the same answer from either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import duckdb
import polars as pl

from analytics import rollup
from analytics.red import where_sql
from meshlens import schema
from meshlens.errors import ConfigError
from meshlens.lake import Lake
from meshlens.timewin import Window

LEVELS = (rollup.Level("identity_1m", "minute", schema.IDENTITY_DIMS),
          rollup.Level("identity_1h", "hour", schema.IDENTITY_DIMS))
"""The two identity rollups (analytics.rollup removes and rebuilds them with its own)."""

UNAUTHENTICATED_SQL = "coalesce(caller_principal, '') = '' AND NOT coalesce(mtls, false)"
"""SQL predicate over raw rows: no principal and no client certificate."""
DENIED_SQL = "coalesce(status = 403 AND coalesce(auth_denied_reason, '') <> '', false)"
"""SQL expression over raw rows: a 403 with an auth denied reason (the network refused the caller)."""

_DERIVED = {"denied": DENIED_SQL, "source_ip": f"CASE WHEN {UNAUTHENTICATED_SQL} THEN source_ip END"}
_DIM_EXPRS = ", ".join(f"{_DERIVED.get(d, d)} AS {d}" for d in schema.IDENTITY_DIMS)
_DIMS = ", ".join(schema.IDENTITY_DIMS)
_MEASURES = ("requests", "errors_5xx", "client_errors_4xx", "bytes_in", "bytes_out")
IDENTITY_COLUMNS = (*schema.IDENTITY_DIMS, *_MEASURES, "first_seen", "last_seen")
"""Columns of ``source_sql`` besides ``t`` (the minute, hour or request time)."""


_ORDER = {"minute": "{t}, service, caller, caller_principal", "hour": "service, {t}, caller, caller_principal"}
"""File order: minutes by time (they answer the ragged ends of windows: row groups skip by time),
hours by service (a one-service question skips most of the file)."""


# -- building (called by analytics.rollup._rebuild_date) ----------------------------------------
def write_date(conn: duckdb.DuckDBPyConnection, lake: Lake, date: str, files: list[str]) -> None:
    """Group one date's raw files into identity_1m and identity_1h and publish both files."""
    source = f"read_parquet([{', '.join(rollup._quote(f) for f in files)}], union_by_name = true)"
    conn.execute(f"""CREATE OR REPLACE TEMP TABLE identity_fine AS
        SELECT epoch_us(ts) // 60000000 AS m, {_DIM_EXPRS},
               count(*) AS n,
               count(*) FILTER (WHERE status BETWEEN 500 AND 599) AS e5,
               count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS e4,
               coalesce(sum(bytes_in), 0)::BIGINT AS b_in, coalesce(sum(bytes_out), 0)::BIGINT AS b_out,
               min(ts) AS f, max(ts) AS l
        FROM {source} WHERE ts IS NOT NULL GROUP BY ALL""")
    measures = ("sum(n)::BIGINT AS requests, sum(e5)::BIGINT AS errors_5xx, sum(e4)::BIGINT AS client_errors_4xx, "
                "sum(b_in)::BIGINT AS bytes_in, sum(b_out)::BIGINT AS bytes_out, min(f) AS first_seen, "
                "max(l) AS last_seen")
    for level in LEVELS:
        per = rollup.GRAIN_SECONDS[level.grain] // 60
        rollup.write_select(conn, lake, level.name, date, f"""
            SELECT to_timestamp(m // {per} * {per * 60}) AS {level.grain}, {_DIMS}, {measures}
            FROM identity_fine GROUP BY m // {per}, {_DIMS}
            ORDER BY {_ORDER[level.grain].format(t=level.grain)}""")
    conn.execute("DROP TABLE identity_fine")


# -- reading -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """A FROM-clause subquery with ``IDENTITY_COLUMNS`` and ``t``, its parameters, and its origin."""

    sql: str
    params: list[object]
    origin: str  # "rollup" or "raw"


def source_sql(conn: duckdb.DuckDBPyConnection, *, window: Window,
               filters: dict[str, str] | None = None, raw: bool = False, hours: bool = True) -> Source:
    """The window's rows from the identity rollups when they cover it, else from raw requests.

    ``hours=False`` reads minutes only (for answers per minute or 5 minutes).
    """
    filters = filters or {}
    tiles = [] if raw else tiles_for(window, hours=hours)
    if tiles and covers(conn, window=window):
        return _rollup_source(tiles, filters)
    return _raw_source(window, filters)


def tiles_for(window: Window, *, hours: bool = True) -> list[tuple[rollup.Level, Window]]:
    """Whole hours from identity_1h (unless ``hours`` is False), the ends from identity_1m.

    Empty when the window is not aligned to minutes.
    """
    start, end = window.start.astimezone(timezone.utc), window.end.astimezone(timezone.utc)
    if start >= end or _off_minute(start) or _off_minute(end):
        return []
    lo = start if start.minute == 0 else start.replace(minute=0) + timedelta(hours=1)
    hi = end.replace(minute=0)
    if lo >= hi or not hours:
        return [(LEVELS[0], Window(start, end))]
    parts = [(LEVELS[0], Window(start, lo)), (LEVELS[1], Window(lo, hi)), (LEVELS[0], Window(hi, end))]
    return [(level, w) for level, w in parts if w.start < w.end]


def tiles_text(window: Window, *, columns: tuple[str, ...]) -> str | None:
    """The window's tiles as one literal SQL subquery (``columns`` of each), for SQL shown to a user
    (nlq); None when the window is not aligned to minutes. Coverage is the caller's to check."""
    parts = []
    for level, piece in tiles_for(window):
        where, _ = where_sql(level.grain, window=piece, filters={})
        parts.append(f"SELECT {', '.join(columns)} FROM {level.name} WHERE {where}")
    return "\n  UNION ALL ".join(parts) or None


def _off_minute(moment: datetime) -> bool:
    return bool(moment.second or moment.microsecond)


def covers(conn: duckdb.DuckDBPyConnection, *, window: Window) -> bool:
    """True when both identity rollups hold every date that raw requests hold in the window."""
    last = (window.end - timedelta(microseconds=1)).date().isoformat()
    between = f"date BETWEEN DATE '{window.start.date().isoformat()}' AND DATE '{last}'"
    rows = conn.execute(
        f"SELECT (SELECT list(DISTINCT date) FROM requests WHERE {between}), "
        + ", ".join(f"(SELECT list(DISTINCT date) FROM {lv.name} WHERE {between})" for lv in LEVELS)
    ).fetchall()[0]
    raw = set(rows[0] or [])
    return all(raw <= set(dates or []) for dates in rows[1:])


def _rollup_source(tiles: list[tuple[rollup.Level, Window]], filters: dict[str, str]) -> Source:
    parts, params = [], []
    for level, piece in tiles:
        where, where_params = where_sql(level.grain, window=piece, filters=filters)
        parts.append(f"SELECT {level.grain} AS t, {', '.join(IDENTITY_COLUMNS)} FROM {level.name} WHERE {where}")
        params += where_params
    return Source(" UNION ALL ".join(parts), params, "rollup")


def _raw_source(window: Window, filters: dict[str, str]) -> Source:
    where, params = where_sql("ts", window=window, filters=filters)
    sql = f"""SELECT ts AS t, {_DIM_EXPRS}, 1::BIGINT AS requests,
        (CASE WHEN status BETWEEN 500 AND 599 THEN 1 ELSE 0 END)::BIGINT AS errors_5xx,
        (CASE WHEN status BETWEEN 400 AND 499 THEN 1 ELSE 0 END)::BIGINT AS client_errors_4xx,
        coalesce(bytes_in, 0)::BIGINT AS bytes_in, coalesce(bytes_out, 0)::BIGINT AS bytes_out,
        ts AS first_seen, ts AS last_seen
        FROM requests WHERE {where}"""
    return Source(sql, params, "raw")


def latest_ts(conn: duckdb.DuckDBPyConnection) -> datetime | None:
    """The newest request start in the lake, from identity_1h when it has the newest date."""
    newest = conn.execute("SELECT max(date) FROM requests").fetchall()[0][0]
    if newest is None:
        return None
    rolled = conn.execute("SELECT max(date), max(last_seen) FROM identity_1h WHERE date = ?",
                          [newest]).fetchall()[0]
    if rolled[0] == newest:
        return rolled[1]
    return conn.execute("SELECT max(ts) FROM requests WHERE date = ?", [newest]).fetchall()[0][0]


# -- traffic counts (no percentiles) -----------------------------------------------------------
BUCKETS = {"minute": 60, "5m": 300, "hour": 3600, "day": 86400}
COUNT_COLUMNS = ("requests", "rps", "errors_5xx", "error_ratio", "client_errors_4xx",
                 "client_error_ratio", "bytes_in", "bytes_out")


def counts(conn: duckdb.DuckDBPyConnection, *, window: Window, by: tuple[str, ...] = (),
           bucket: str | None = None, service: str | None = None, env: str | None = None,
           raw: bool = False) -> pl.DataFrame:
    """Requests, 5xx, 4xx and bytes per ``by`` key (and time ``bucket``): analytics.red's counts
    without its percentiles, from the identity rollup (a few rows per key and hour)."""
    unknown = [k for k in by if k not in schema.IDENTITY_DIMS]
    if unknown or (bucket is not None and bucket not in BUCKETS):
        raise ConfigError(f"counts: unknown key or bucket {unknown or bucket}; keys: {', '.join(schema.IDENTITY_DIMS)}")
    filters = {k: v for k, v in (("service", service), ("env", env)) if v is not None}
    step = BUCKETS[bucket] * 1_000_000 if bucket else 0
    src = source_sql(conn, window=window, filters=filters, raw=raw, hours=not bucket or step % 3_600_000_000 == 0)
    keys = [*by] + ([f"make_timestamp(epoch_us(t) // {step} * {step}) AS bucket_start"] if bucket else [])
    frame = conn.sql(f"""
        SELECT {', '.join([*keys, ''])} sum(requests)::BIGINT AS requests,
               sum(errors_5xx)::BIGINT AS errors_5xx, sum(client_errors_4xx)::BIGINT AS client_errors_4xx,
               sum(bytes_in)::BIGINT AS bytes_in, sum(bytes_out)::BIGINT AS bytes_out
        FROM ({src.sql}) GROUP BY ALL""", params=src.params).pl()
    return _rates(frame, lead=[*by] + (["bucket_start"] if bucket else []), window=window, bucket=bucket)


def _rates(frame: pl.DataFrame, *, lead: list[str], window: Window, bucket: str | None) -> pl.DataFrame:
    """Add rps and ratios (rps over the part of each bucket inside the window)."""
    if bucket:
        start = pl.max_horizontal(pl.col("bucket_start"), pl.lit(window.start))
        end = pl.min_horizontal(pl.col("bucket_start") + pl.duration(seconds=BUCKETS[bucket]), pl.lit(window.end))
        seconds = (end - start).dt.total_microseconds() / 1e6
        frame = frame.with_columns(pl.col("bucket_start").dt.replace_time_zone("UTC"))
    else:
        seconds = pl.lit(window.seconds)
    return frame.with_columns(
        (pl.col("requests") / seconds).alias("rps"),
        (pl.col("errors_5xx") / pl.col("requests")).alias("error_ratio"),
        (pl.col("client_errors_4xx") / pl.col("requests")).alias("client_error_ratio"),
    ).select(*lead, *COUNT_COLUMNS).sort(lead or ["requests"], nulls_last=True)
