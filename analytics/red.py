"""RED metrics: rate, errors and duration, over any window, key and time bucket.

``red`` answers per service, edge (caller, service), route, version, env, caller principal or
any mix of them, optionally per time bucket (minute, 5m, hour, day). Errors are 5xx only;
4xx are client errors, counted and shown apart, never called failures.

Where the numbers come from (the plan, chosen per call):
- rollups (analytics.rollup) when every key and filter is one of their columns and the window
  is aligned to minutes: the narrow ``edges_*`` before ``requests_*``, and the window tiled with
  the coarsest grains that fit (whole days from ``*_1d``, whole hours from ``*_1h``, the rest
  from ``*_1m``; a time bucket limits the grains to those that divide it). Counts, bytes, max
  and mean are exact there; percentiles come from merging sketches
  (``percentile_source = 'sketch'``, within 1% of the exact nearest-rank value);
- raw rows otherwise, and whenever the window holds at most ``exact_percentile_max_rows``
  requests: exact nearest-rank percentiles (DuckDB ``quantile_disc``, ``'exact'``).
Keys that no rollup holds (``caller_principal``) and windows not aligned to minutes always read
raw rows. When a rollup has nothing for a window that raw rows cover (it was never built), raw
rows answer. Every row carries ``n`` (requests with a duration, the sample of its percentiles)
and ``low_sample`` (n below ``min_percentile_samples``).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from datetime import datetime, timedelta, timezone

import duckdb
import polars as pl

from analytics import sketch
from analytics.rollup import GRAIN_SECONDS, LEVELS, STATUS_CLASS_SQL, Level
from meshlens import schema
from meshlens.errors import ConfigError, UnknownNameError
from meshlens.settings import Settings
from meshlens.timewin import Window

KEYS = ("service", "caller", "version", "route", "method", "env", "status_class", "caller_principal")
ALIASES = {"principal": "caller_principal", "callee": "service"}
BUCKETS = {"minute": 60, "5m": 300, "hour": 3600, "day": 86400}
QUANTILES = (("p50_ms", 0.5), ("p90_ms", 0.9), ("p95_ms", 0.95), ("p99_ms", 0.99))
METRICS = (
    "requests", "rps", "errors_5xx", "error_ratio", "client_errors_4xx", "client_error_ratio",
    "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms", "n", "bytes_in", "bytes_out",
    "percentile_source", "low_sample",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


Tile = tuple[Level, datetime, datetime]


def red(
    conn: duckdb.DuckDBPyConnection,
    *,
    window: Window,
    by: Sequence[str] = (),
    service: str | None = None,
    caller: str | None = None,
    env: str | None = None,
    bucket: str | None = None,
    settings: Settings | None = None,
) -> pl.DataFrame:
    """RED metrics per ``by`` key (and ``bucket``) over ``window``; see the module docstring."""
    keys = normalize_by(by)
    check_bucket(bucket)
    cfg = settings or Settings()
    filters = {c: v for c, v in (("service", service), ("caller", caller), ("env", env)) if v is not None}
    frame, source = None, "exact"
    tiles = tile_window(window=window, needed={*keys, *filters}, bucket=bucket)
    if tiles:
        group = ["_g", *keys] + (["bucket_start"] if bucket else [])
        sql, params = rollup_sql(tiles, keys=keys, filters=filters, bucket=bucket)
        buckets = conn.sql(sql, params=params).pl()
        # small windows (and rollups never built) are answered exactly from raw rows
        if int(buckets["r"].sum() or 0) > int(cfg["exact_percentile_max_rows"]):
            frame, source = merge_sketches(buckets, group=group), "sketch"
    if frame is None:
        sql, params = raw_sql(window=window, keys=keys, filters=filters, bucket=bucket)
        frame = conn.sql(sql, params=params).pl()
    return finish(frame, keys=keys, bucket=bucket, window=window, source=source,
                  min_samples=int(cfg["min_percentile_samples"]))


def minute_series(
    conn: duckdb.DuckDBPyConnection,
    *,
    window: Window,
    key: Sequence[str] = ("service",),
    service: str | None = None,
    env: str | None = None,
    settings: Settings | None = None,
) -> pl.DataFrame:
    """One row per (key..., minute) with traffic: requests, errors, p50/p99 and bytes."""
    frame = red(conn, window=window, by=key, service=service, env=env, bucket="minute", settings=settings)
    keys = normalize_by(key)
    return frame.select(
        *keys, pl.col("bucket_start").alias("minute"), "requests", "errors_5xx", "client_errors_4xx",
        "p50_ms", "p99_ms", (pl.col("bytes_in") + pl.col("bytes_out")).alias("bytes"),
        "n", "percentile_source", "low_sample",
    )


def latest_ts(conn: duckdb.DuckDBPyConnection) -> datetime | None:
    """The newest request start in the lake (None when it is empty)."""
    return conn.execute("SELECT max(ts) FROM requests").fetchall()[0][0]


def recent_errors(
    conn: duckdb.DuckDBPyConnection, service: str, *, window: Window, env: str | None = None, limit: int = 50
) -> pl.DataFrame:
    """The latest 5xx requests of ``service`` in the window, newest first."""
    filters = {c: v for c, v in (("service", service), ("env", env)) if v is not None}
    where, params = where_sql("ts", window=window, filters=filters)
    return conn.sql(
        "SELECT ts, caller, version, env, method, route, path, status, duration_ms, failure_reason, "
        f"request_id, trace_id FROM requests WHERE {where} AND status BETWEEN 500 AND 599 "
        f"ORDER BY ts DESC LIMIT {int(limit)}", params=params,
    ).pl()


def normalize_by(by: Sequence[str]) -> list[str]:
    """Resolve aliases (principal, callee) and reject unknown keys; order kept, no repeats."""
    if isinstance(by, str):
        by = [by]
    out: list[str] = []
    for name in by:
        col = ALIASES.get(name, name)
        if col not in KEYS:
            raise UnknownNameError("grouping key", name, [*KEYS, *ALIASES])
        if col not in out:
            out.append(col)
    return out


def check_bucket(bucket: str | None) -> None:
    """Raise ConfigError for a bucket other than minute, 5m, hour or day."""
    if bucket is not None and bucket not in BUCKETS:
        raise ConfigError(f"unknown time bucket {bucket!r}; use one of {', '.join(BUCKETS)}")


# -- planning ----------------------------------------------------------------------------------
def tile_window(*, window: Window, needed: set[str], bucket: str | None) -> list[Tile]:
    """Cover the window with the coarsest rollup grains (days, then hours, then minutes).

    Empty when no rollup holds every needed key or the window is not aligned to minutes.
    """
    family = next((dims for dims in (schema.EDGE_ROLLUP_DIMS, schema.ROLLUP_DIMS) if needed <= set(dims)), None)
    start, end = _micros(window.start), _micros(window.end)
    if family is None or start % 60_000_000 or end % 60_000_000:
        return []
    levels = {lv.grain: lv for lv in LEVELS if lv.dims == family}
    grains = [g for g in ("minute", "hour", "day")
              if bucket is None or BUCKETS[bucket] % GRAIN_SECONDS[g] == 0]
    return [(levels[g], _from_micros(lo), _from_micros(hi)) for g, lo, hi in _split(start, end, grains)]


def _split(start: int, end: int, grains: list[str]) -> list[tuple[str, int, int]]:
    """[start, end) in microseconds as (grain, lo, hi) pieces, coarsest grain in the middle."""
    if start >= end:
        return []
    grain, step = grains[-1], GRAIN_SECONDS[grains[-1]] * 1_000_000
    if len(grains) == 1:
        return [(grain, start, end)]
    lo, hi = -(-start // step) * step, end // step * step
    if lo >= hi:
        return _split(start, end, grains[:-1])
    return _split(start, lo, grains[:-1]) + [(grain, lo, hi)] + _split(hi, end, grains[:-1])


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


# -- SQL ---------------------------------------------------------------------------------------
def where_sql(time_col: str, *, window: Window, filters: dict[str, str]) -> tuple[str, list[object]]:
    """Window (with date-partition pruning) and equality filters; values are parameters."""
    last_day = (window.end - timedelta(microseconds=1)).date()
    clauses = [
        f"{time_col} >= {_ts(window.start)}", f"{time_col} < {_ts(window.end)}",
        f"date >= DATE '{window.start.date().isoformat()}'", f"date <= DATE '{last_day.isoformat()}'",
    ]
    params: list[object] = []
    for col, value in filters.items():
        clauses.append(f"{col} = ?")
        params.append(value)
    return " AND ".join(clauses), params


def bucket_sql(bucket: str, column: str) -> str:
    """SQL expression: the start of the time bucket holding ``column``."""
    if bucket == "5m":
        return f"time_bucket(INTERVAL '5 minutes', {column})"
    return f"date_trunc('{bucket}', {column})"


def raw_sql(*, window: Window, keys: list[str], filters: dict[str, str], bucket: str | None) -> tuple[str, list[object]]:
    """Exact RED metrics from raw ``requests`` rows."""
    exprs = ["1 AS _g"] + [f"{STATUS_CLASS_SQL if k == 'status_class' else k} AS {k}" for k in keys]
    if bucket:
        exprs.append(f"{bucket_sql(bucket, 'ts')} AS bucket_start")
    where, params = where_sql("ts", window=window, filters=filters)
    qs = ", ".join(str(q) for _, q in QUANTILES)
    picks = ", ".join(f"_q[{i + 1}] AS {name}" for i, (name, _) in enumerate(QUANTILES))
    sql = f"""
    SELECT * EXCLUDE (_q), {picks} FROM (
        SELECT {', '.join(exprs)},
               count(*) AS requests,
               count(*) FILTER (WHERE status BETWEEN 500 AND 599) AS errors_5xx,
               count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS client_errors_4xx,
               coalesce(sum(bytes_in), 0)::BIGINT AS bytes_in,
               coalesce(sum(bytes_out), 0)::BIGINT AS bytes_out,
               quantile_disc(duration_ms, [{qs}]) AS _q,
               max(duration_ms) AS max_ms, avg(duration_ms) AS mean_ms,
               count(duration_ms) AS n
        FROM requests WHERE {where}
        GROUP BY ALL
    )"""
    return sql, params


def rollup_sql(tiles: Sequence[Tile], *, keys: list[str], filters: dict[str, str],
               bucket: str | None) -> tuple[str, list[object]]:
    """Rollup tiles summed per (key..., bucket_start, sketch bucket ``k``): the merge's input."""
    parts, params = [], []
    for level, start, end in tiles:
        exprs = ["1 AS _g", *keys] + ([f"{bucket_sql(bucket, level.grain)} AS bucket_start"] if bucket else [])
        where, where_params = where_sql(level.grain, window=Window(start, end), filters=filters)
        parts.append(
            f"SELECT {', '.join(exprs)}, lat_key AS k, requests, errors_5xx, client_errors_4xx, bytes_in, "
            f"bytes_out, duration_count, duration_sum_ms, duration_max_ms FROM {level.name} WHERE {where}"
        )
        params += where_params
    group = ["_g", *keys] + (["bucket_start"] if bucket else [])
    sql = f"""
    SELECT {', '.join(group)}, k, sum(requests)::BIGINT AS r, sum(errors_5xx)::BIGINT AS e5,
           sum(client_errors_4xx)::BIGINT AS e4, sum(bytes_in)::BIGINT AS bi,
           sum(bytes_out)::BIGINT AS bo, sum(duration_count)::BIGINT AS c,
           sum(duration_sum_ms) AS ds, max(duration_max_ms) AS dm
    FROM ({' UNION ALL '.join(parts)}) GROUP BY ALL
    """
    return sql, params


def merge_sketches(buckets: pl.DataFrame, *, group: list[str]) -> pl.DataFrame:
    """Per group: measures summed and percentiles read from the merged sketch (nearest rank).

    DuckDB sums the rollup rows per (group, bucket) (``rollup_sql``); the rest is a sort and a
    running sum over at most a few hundred thousand rows, which polars does with far less fixed
    cost than a DuckDB window function.
    """
    ordered = buckets.sort([*group, "k"], nulls_last=True).with_columns(
        pl.col("c").cum_sum().over(group).alias("cum"), pl.col("c").sum().over(group).alias("tot"))
    ranks = []
    for name, q in QUANTILES:
        frac = Fraction(str(q))
        rank = ((pl.col("tot") * frac.numerator + frac.denominator - 1) // frac.denominator).clip(lower_bound=1)
        ranks.append(pl.col("k").filter(pl.col("cum") >= rank).min().alias(name))
    merged = ordered.group_by(group, maintain_order=True).agg(
        pl.col("r").sum().alias("requests"), pl.col("e5").sum().alias("errors_5xx"),
        pl.col("e4").sum().alias("client_errors_4xx"), pl.col("bi").sum().alias("bytes_in"),
        pl.col("bo").sum().alias("bytes_out"), pl.col("dm").max().alias("max_ms"),
        pl.col("ds").sum().alias("_ds"), pl.col("c").sum().alias("n"), *ranks,
    )
    return merged.with_columns(
        pl.when(pl.col("n") > 0).then(pl.col("_ds") / pl.col("n")).alias("mean_ms"),
        *[_estimate(pl.col(name)).alias(name) for name, _ in QUANTILES],
    ).drop("_ds")


def _estimate(key: pl.Expr) -> pl.Expr:
    """Polars twin of sketch.estimate: the value a bucket key stands for."""
    value = 2.0 * pl.lit(sketch.GAMMA).pow(key.cast(pl.Float64)) / (sketch.GAMMA + 1.0)
    return pl.when(key == sketch.ZERO_KEY).then(pl.lit(0.0)).otherwise(value)


def _ts(moment: datetime) -> str:
    return f"TIMESTAMPTZ '{moment.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"


# -- shaping -----------------------------------------------------------------------------------
def finish(
    frame: pl.DataFrame,
    *,
    keys: list[str],
    bucket: str | None,
    window: Window,
    source: str,
    min_samples: int,
) -> pl.DataFrame:
    """Add rates, ratios, the percentile source and the low-sample flag; fix column order."""
    lead = [*keys] + (["bucket_start"] if bucket else [])
    if frame.is_empty():
        return empty_frame(keys=keys, bucket=bucket)
    frame = frame.filter(pl.col("requests") > 0)
    seconds = _seconds_expr(bucket, window)
    frame = frame.with_columns(
        (pl.col("requests") / seconds).alias("rps"),
        (pl.col("errors_5xx") / pl.col("requests")).alias("error_ratio"),
        (pl.col("client_errors_4xx") / pl.col("requests")).alias("client_error_ratio"),
        pl.lit(source).alias("percentile_source"),
        (pl.col("n") < min_samples).alias("low_sample"),
        *[pl.col(c).cast(pl.Float64) for c in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms")],
        *[pl.col(c).cast(pl.Int64) for c in ("requests", "errors_5xx", "client_errors_4xx", "n", "bytes_in", "bytes_out")],
    )
    return frame.select(*lead, *METRICS).sort(lead or ["requests"], nulls_last=True)


def _seconds_expr(bucket: str | None, window: Window) -> pl.Expr:
    if bucket is None:
        return pl.lit(window.seconds)
    start = pl.max_horizontal(pl.col("bucket_start"), pl.lit(window.start))
    end = pl.min_horizontal(pl.col("bucket_start") + pl.duration(seconds=BUCKETS[bucket]), pl.lit(window.end))
    return (end - start).dt.total_microseconds() / 1e6


def empty_frame(*, keys: list[str], bucket: str | None) -> pl.DataFrame:
    """The zero-row result with the right columns and types."""
    types: dict[str, pl.DataType] = {k: pl.String() for k in keys}
    if bucket:
        types["bucket_start"] = pl.Datetime("us", "UTC")
    for col in METRICS:
        types[col] = (pl.Int64() if col in ("requests", "errors_5xx", "client_errors_4xx", "n", "bytes_in", "bytes_out")
                      else pl.String() if col == "percentile_source"
                      else pl.Boolean() if col == "low_sample" else pl.Float64())
    return pl.DataFrame(schema=types)

