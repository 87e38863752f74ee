"""RED metrics: rate, errors and duration, over any window, key and time bucket.

``red`` answers per service, edge (caller, service), route, version, env, caller principal or
any mix of them, optionally per time bucket (minute, 5m, hour, day). Errors are 5xx only;
4xx are client errors, counted and shown apart, never called failures.

Where the numbers come from (the plan, chosen per call):
- rollups (analytics.rollup) when every key and filter is one of their columns and the window
  is aligned to minutes: the narrowest family that holds them (``services_*`` by service and
  env, then ``edges_*``, then ``requests_*``; a family with nothing for the window -- never
  built -- hands over to the next), and the window tiled with the coarsest grains that fit
  (whole days from ``*_1d``, whole hours from ``*_1h``, the rest from ``*_1m``; a time bucket
  limits the grains to those that divide it). Counts, bytes, max and mean are exact there;
  percentiles come from merging sketches (``percentile_source = 'sketch'``, within 1% of the
  exact nearest-rank value);
- raw rows otherwise, and whenever the window holds at most ``exact_percentile_max_rows``
  requests: exact nearest-rank percentiles (DuckDB ``quantile_disc``, ``'exact'``).
Keys that no rollup holds (``caller_principal``) and windows not aligned to minutes always read
raw rows. When a rollup has nothing for a window that raw rows cover (it was never built), raw
rows answer. Every row carries ``n`` (requests with a duration, the sample of its percentiles)
and ``low_sample`` (n below ``min_percentile_samples``).

One service (optionally one env), keyed by nothing but service/env, over a minute-aligned window:
analytics.fastpath answers first from the ``service_cells_*`` tables (one row per time, service
and env with the cell's sketch as two lists), read with pyarrow and merged in numpy -- the same
tiles, sums and nearest-rank buckets as the ``services_*`` path below, without a DuckDB
statement (``_from_cells``). It steps aside (to the path below) when a date's cells are missing
or older than its ``services_*`` file, or when the service has no traffic in the window.

Cost of any other call (what the metrics benchmark measures): one SQL statement. DuckDB reads the
tiles' rows, summed per (group, sketch bucket) unless one ``services_*`` tile already holds one
row per (service, time, bucket); the merge is then linear numpy over rows sorted by (group,
bucket) (``merge_sketches``). Time buckets are integer arithmetic on ``epoch_us`` (no
time-zone library), and the connection keeps parsed Parquet footers (``use_metadata_cache``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import duckdb
import numpy as np
import polars as pl

from analytics import fastpath, sketch
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
    min_rows = int(cfg["exact_percentile_max_rows"])
    frame = _from_cells(conn, window=window, keys=keys, filters=filters, bucket=bucket, min_rows=min_rows)
    if frame is None:
        use_metadata_cache(conn)
        frame = _from_rollups(conn, window=window, keys=keys, filters=filters, bucket=bucket, min_rows=min_rows)
    elif frame is RAW:
        frame = None
    source = "exact" if frame is None else "sketch"
    if frame is None:
        sql, params = raw_sql(window=window, keys=keys, filters=filters, bucket=bucket)
        frame = conn.sql(sql, params=params).pl()
    return finish(frame, keys=keys, bucket=bucket, window=window, source=source,
                  min_samples=int(cfg["min_percentile_samples"]))


def _from_rollups(conn: duckdb.DuckDBPyConnection, *, window: Window, keys: list[str],
                  filters: dict[str, str], bucket: str | None, min_rows: int) -> pl.DataFrame | None:
    """Merged rollup rows, or None when raw rows must answer (no rollup, or at most min_rows)."""
    fixed = {k: filters[k] for k in keys if k in filters}  # one value: added after the merge
    read = [k for k in keys if k not in fixed]
    group = ["_g", *read] + (["bucket_start"] if bucket else [])
    for tiles in tile_plans(window=window, needed={*keys, *filters}, bucket=bucket):
        sql, params = rollup_sql(tiles, keys=read, filters=filters, bucket=bucket)
        merged = merge_sketches(conn.sql(sql, params=params).pl(), group=group)
        total = int(merged["requests"].sum() or 0)
        if total == 0:
            continue  # this rollup family was never built for the window: a wider one, then raw rows
        if total <= min_rows:  # small windows: exact, from raw rows
            return None
        return merged.with_columns(pl.lit(value, dtype=pl.String).alias(key) for key, value in fixed.items())
    return None


RAW = pl.DataFrame()
"""``_from_cells``'s answer when the window is small enough for exact percentiles from raw rows."""


def _from_cells(conn: duckdb.DuckDBPyConnection, *, window: Window, keys: list[str],
                filters: dict[str, str], bucket: str | None, min_rows: int) -> pl.DataFrame | None:
    """One service's merged cells (analytics.fastpath), ``RAW``, or None: ask the rollups.

    The same tiles, sums and nearest-rank buckets as ``_from_rollups`` on ``services_*``, read
    with pyarrow and merged in numpy instead of through a DuckDB statement.
    """
    lake = fastpath.lake_of(conn)
    if lake is None or not fastpath.applies(keys=keys, filters=filters):
        return None
    tiles = _tiles(window=window, family=schema.SERVICE_ROLLUP_DIMS, bucket=bucket)
    if not tiles:
        return None
    plan = [(level.grain, _micros(lo), _micros(hi)) for level, lo, hi in tiles]
    group_env = "env" in keys and "env" not in filters
    got = fastpath.answer(lake, tiles=plan, service=filters["service"], env=filters.get("env"),
                          group_env=group_env, bucket_us=BUCKETS[bucket] * 1_000_000 if bucket else None)
    if got is None:
        return None
    cells, columns, group_ids = got
    total = int(cells.column("requests").to_numpy().sum()) if cells.num_rows else 0
    if total == 0:
        return None  # nothing here: the rollups decide (another family, or raw rows)
    if total <= min_rows:
        return RAW
    n_groups = int(group_ids.max()) + 1
    sums, picks = fastpath.merge(cells, group_ids=group_ids, n_groups=n_groups, quantiles=QUANTILES, ranks=_ranks)
    groups = pl.DataFrame({"_g": np.ones(n_groups, dtype=np.int32),
                           **({"env": columns["env"]} if group_env else {}),
                           **({"bucket_start": columns["bucket_start"]} if bucket else {})})
    fixed = {k: filters[k] for k in keys if k in filters}
    merged = _merged_frame(groups, sums, picks)
    return merged.with_columns(pl.lit(value, dtype=pl.String).alias(key) for key, value in fixed.items())


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


def use_metadata_cache(conn: duckdb.DuckDBPyConnection) -> None:
    """Let the connection keep parsed Parquet footers between queries.

    DuckDB re-reads a footer whenever the file's modification time is newer than its cached
    copy, and rollup files are replaced by rename (a new file, a new mtime), so a cached footer
    never outlives its file. It saves a third of a small rollup query.
    """
    conn.execute("SET parquet_metadata_cache = true")


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
FAMILIES = (schema.SERVICE_ROLLUP_DIMS, schema.EDGE_ROLLUP_DIMS, schema.ROLLUP_DIMS)
"""Keys of the rollup families, narrowest (fewest rows) first."""


def tile_plans(*, window: Window, needed: set[str], bucket: str | None) -> list[list[Tile]]:
    """The window tiled in every rollup family that holds the needed keys, narrowest first."""
    plans = [_tiles(window=window, family=dims, bucket=bucket) for dims in FAMILIES if needed <= set(dims)]
    return [plan for plan in plans if plan]


def tile_window(*, window: Window, needed: set[str], bucket: str | None) -> list[Tile]:
    """Cover the window with the coarsest grains (days, hours, minutes) of the narrowest family.

    Empty when no rollup holds every needed key or the window is not aligned to minutes.
    """
    plans = tile_plans(window=window, needed=needed, bucket=bucket)
    return plans[0] if plans else []


def _tiles(*, window: Window, family: tuple[str, ...], bucket: str | None) -> list[Tile]:
    start, end = _micros(window.start), _micros(window.end)
    if start % 60_000_000 or end % 60_000_000:
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


def _bucket_us_sql(bucket: str, column: str, grain_seconds: int | None = None) -> str:
    """SQL expression: the start of the time bucket holding ``column``, microseconds since the epoch.

    UTC buckets are whole multiples of their length since the epoch, so this is integer
    arithmetic (``date_trunc``/``time_bucket`` on a TIMESTAMPTZ go through the time-zone
    library and cost more than the rest of a rollup query).
    """
    step = BUCKETS[bucket] * 1_000_000
    if grain_seconds == BUCKETS[bucket]:
        return f"epoch_us({column})"  # already the bucket start
    return f"epoch_us({column}) // {step} * {step}"


def raw_sql(*, window: Window, keys: list[str], filters: dict[str, str], bucket: str | None) -> tuple[str, list[object]]:
    """Exact RED metrics from raw ``requests`` rows."""
    exprs = ["1 AS _g"] + [f"{STATUS_CLASS_SQL if k == 'status_class' else k} AS {k}" for k in keys]
    if bucket:
        exprs.append(f"{_bucket_us_sql(bucket, 'ts')} AS bucket_start")
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
    """Rollup rows per (key..., bucket_start, sketch bucket ``k``): the input of ``merge_sketches``.

    Rows are summed per (group, ``k``) in DuckDB, except when they are already one per group and
    bucket (``_presummed``): then they are only read, in file order. ``bucket_start`` is
    microseconds since the epoch (``finish`` makes it a timestamp).
    """
    parts, params = [], []
    for level, start, end in tiles:
        exprs = ["1 AS _g", *keys]
        if bucket:
            exprs.append(f"{_bucket_us_sql(bucket, level.grain, level.seconds)} AS bucket_start")
        where, where_params = where_sql(level.grain, window=Window(start, end), filters=filters)
        parts.append(
            f"SELECT {', '.join(exprs)}, lat_key AS k, requests AS r, errors_5xx AS e5, "
            f"client_errors_4xx AS e4, bytes_in AS bi, bytes_out AS bo, duration_count AS c, "
            f"duration_sum_ms AS ds, duration_max_ms AS dm FROM {level.name} WHERE {where}"
        )
        params += where_params
    if _presummed(tiles, bucket=bucket):
        return parts[0], params
    group = ["_g", *keys] + (["bucket_start"] if bucket else [])
    sql = f"""
    SELECT {', '.join(group)}, k, sum(r)::BIGINT AS r, sum(e5)::BIGINT AS e5, sum(e4)::BIGINT AS e4,
           sum(bi)::BIGINT AS bi, sum(bo)::BIGINT AS bo, sum(c)::BIGINT AS c, sum(ds) AS ds, max(dm) AS dm
    FROM ({' UNION ALL '.join(parts)}) GROUP BY ALL
    """
    return sql, params


def _presummed(tiles: Sequence[Tile], *, bucket: str | None) -> bool:
    """True when one ``services_*`` tile is read whole per bucket: its rows need no GROUP BY.

    A ``services_*`` row is one (time, service, env, sketch bucket), so grouping by service
    and a bucket equal to the grain (or a window of exactly one grain) merges at most the envs
    of a service; ``merge_sketches`` sorts when it must. Summing in DuckDB would cost more
    than the rows it saves.
    """
    if len(tiles) != 1 or tiles[0][0].dims != schema.SERVICE_ROLLUP_DIMS:
        return False
    level, start, end = tiles[0]
    span = (end - start).total_seconds()
    return BUCKETS[bucket] == level.seconds if bucket else span == level.seconds


_SUMS = ("r", "e5", "e4", "bi", "bo", "c")


def merge_sketches(rows: pl.DataFrame, *, group: list[str]) -> pl.DataFrame:
    """Per group: measures summed and percentiles read from the merged sketch (nearest rank).

    ``rows`` hold (group..., ``k``, measures). Sorted by (group, ``k``) -- as read from a
    rollup file they usually are already; otherwise they are sorted here -- a group is a
    contiguous run, so its sums are ``np.add.reduceat`` and the bucket holding rank ``i`` is a
    ``searchsorted`` of the running count: linear, no hash table, no window function, and a
    handful of polars calls whatever the number of groups.
    """
    if rows.is_empty():
        return _merged_frame(rows.select(group), {}, {})
    cols = _numpy_columns(rows)
    starts = _run_starts(rows, group)
    if starts is None or np.any((np.diff(cols["k"]) < 0) & (np.diff(_run_ids(starts, rows.height)) == 0)):
        rows = rows.sort([*group, "k"], nulls_last=True)
        cols, starts = _numpy_columns(rows), _run_starts(rows, group, check=False)
    assert starts is not None
    sums = {c: np.add.reduceat(cols[c], starts) for c in (*_SUMS, "ds")}
    sums["dm"] = np.fmax.reduceat(cols["dm"], starts)
    cum = np.cumsum(cols["c"])
    before = np.concatenate(([0], cum))[starts]
    picks = {}
    for name, q in QUANTILES:
        index = np.searchsorted(cum, before + _ranks(q, sums["c"]), side="left")
        picks[name] = np.where(sums["c"] > 0, cols["k"][np.minimum(index, len(cum) - 1)], NO_KEY)
    return _merged_frame(rows[starts].select(group), sums, picks)


NO_KEY = np.iinfo(np.int32).min
"""Marks a percentile of a group without durations (no sketch bucket)."""


def _numpy_columns(rows: pl.DataFrame) -> dict[str, np.ndarray]:
    """``k`` (NULL sorted last) and the measures as numpy arrays, NULLs filled, in one pass."""
    frame = rows.select(
        pl.col("k").fill_null(np.iinfo(np.int16).max).cast(pl.Int32),
        *[pl.col(c).fill_null(0).cast(pl.Int64) for c in _SUMS],
        pl.col("ds").fill_null(0.0).cast(pl.Float64), pl.col("dm").cast(pl.Float64).fill_null(np.nan),
    )
    return {c: frame.get_column(c).to_numpy() for c in frame.columns}


def _ranks(q: float, counts: np.ndarray) -> np.ndarray:
    """sketch.rank for every count at once: max(1, ceil(q * n)) in integer arithmetic."""
    frac = Fraction(str(q))
    return np.maximum(1, (counts * frac.numerator + frac.denominator - 1) // frac.denominator)


def _run_ids(starts: np.ndarray, height: int) -> np.ndarray:
    marks = np.zeros(height, dtype=np.int64)
    marks[starts] = 1
    return np.cumsum(marks)


def _run_starts(rows: pl.DataFrame, group: list[str], *, check: bool = True) -> np.ndarray | None:
    """First row of each run of equal group values; None when a group comes back later."""
    first = pl.int_range(pl.len()) == 0
    new = rows.select(pl.any_horizontal(first, *[pl.col(c).ne_missing(pl.col(c).shift(1)) for c in group]))
    starts = np.flatnonzero(new.to_series().to_numpy())
    if check and starts.size != rows[starts].select(group).n_unique():
        return None
    return starts


def _merged_frame(groups: pl.DataFrame, sums: dict[str, np.ndarray], picks: dict[str, np.ndarray]) -> pl.DataFrame:
    """The merged groups as the frame ``finish`` takes."""
    n = groups.height
    zeros = np.zeros(n, dtype=np.int64)
    count = sums.get("c", zeros)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, sums.get("ds", zeros) / np.maximum(count, 1), np.nan)
    names = {"r": "requests", "e5": "errors_5xx", "e4": "client_errors_4xx", "bi": "bytes_in",
             "bo": "bytes_out", "c": "n"}
    columns = [pl.Series(out, sums.get(c, zeros), dtype=pl.Int64) for c, out in names.items()]
    columns += [pl.Series("max_ms", sums.get("dm", np.full(n, np.nan)), dtype=pl.Float64, nan_to_null=True),
                pl.Series("mean_ms", mean, dtype=pl.Float64, nan_to_null=True)]
    for name, _ in QUANTILES:
        keys = picks.get(name, np.full(n, NO_KEY)).astype(np.float64)
        values = np.where(keys == sketch.ZERO_KEY, 0.0, 2.0 * sketch.GAMMA**keys / (sketch.GAMMA + 1.0))
        columns.append(pl.Series(name, np.where(keys == NO_KEY, np.nan, values), nan_to_null=True))
    return groups.hstack(columns)


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
    if bucket:  # microseconds since the epoch -> timestamp
        frame = frame.with_columns(pl.col("bucket_start").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
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

