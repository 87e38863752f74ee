"""Service cells: one row per (time, service, env) and a numpy fast path for one-service queries.

Dashboards constantly ask for one service's RED metrics over an hour, a day, or as a per-minute
chart. Through DuckDB each such query pays ~10 ms CPU of binding and planning plus footer reads
before it reads a row, and the ``services_*`` rollups hold one row per sketch bucket (a busy
service's day of minutes is a quarter of a million rows). This module keeps a compact table
next to them, derived in the same per-date rollup pass (no extra raw scan)::

    rollups/service_cells_1m/date=D/part.parquet   (minute, service, env)
    rollups/service_cells_1h/...  service_cells_1d/...   the same per hour / per day

one row per cell: requests, errors_5xx, client_errors_4xx, bytes_in, bytes_out, duration
count/sum/max, and the cell's latency sketch as two lists (``lat_keys`` ascending,
``lat_counts``). Files are sorted by (service, env, time) in small row groups. ``answer``
reads the few rows a query needs with pyarrow (row groups pruned by their statistics, the
parsed footer cached per (path, mtime, size)) and merges the sketches in numpy: the same
nearest-rank bucket, hence the same numbers, as analytics.red's rollup path.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analytics import rollup
from analytics.sketch import ZERO_KEY
from meshlens import schema
from meshlens.lake import Lake

SUFFIX = {"minute": "1m", "hour": "1h", "day": "1d"}
LEVELS = tuple(rollup.Level(f"service_cells_{s}", g, schema.SERVICE_ROLLUP_DIMS) for g, s in SUFFIX.items())
_BY_GRAIN = {level.grain: level for level in LEVELS}
ROW_GROUP_ROWS = {"minute": 512, "hour": 64, "day": 32}
"""Row-group sizes: a one-service query decodes a few hundred cells at most."""

_AGG = """sum(n)::BIGINT AS requests, sum(e5)::BIGINT AS errors_5xx, sum(e4)::BIGINT AS client_errors_4xx,
    sum(b_in)::BIGINT AS bytes_in, sum(b_out)::BIGINT AS bytes_out, sum(dc)::BIGINT AS duration_count,
    sum(ds) AS duration_sum_ms, max(dm) AS duration_max_ms,
    coalesce(list(k ORDER BY k) FILTER (WHERE dc > 0 AND k IS NOT NULL), []) AS lat_keys,
    coalesce(list(dc::BIGINT ORDER BY k) FILTER (WHERE dc > 0 AND k IS NOT NULL), []) AS lat_counts"""
_OUT = ("requests, errors_5xx, client_errors_4xx, bytes_in, bytes_out, duration_count, "
        "duration_sum_ms, duration_max_ms, lat_keys, lat_counts")


def cells_sql_from_stage(level: rollup.Level) -> str:
    """The cells of a grain from the rollup pass's id-space ``services_*`` temporary table."""
    stage = f"services_{SUFFIX[level.grain]}"
    return f"""
    SELECT to_timestamp(c.t * {level.seconds}) AS {level.grain}, n.service, n.env, {_OUT}
    FROM (SELECT t, svc_id, {_AGG} FROM {stage} GROUP BY t, svc_id) c JOIN svc_keys n USING (svc_id)
    ORDER BY n.service, n.env, c.t"""


def cells_sql_from_file(level: rollup.Level, path: str) -> str:
    """The cells of a grain from a published ``services_*`` Parquet file (upgrade path)."""
    g = level.grain
    source = (f"SELECT {g}, service, env, lat_key AS k, requests AS n, errors_5xx AS e5, "
              f"client_errors_4xx AS e4, bytes_in AS b_in, bytes_out AS b_out, duration_count AS dc, "
              f"duration_sum_ms AS ds, duration_max_ms AS dm FROM read_parquet({rollup._quote(path)})")
    return f"""
    SELECT {g}, service, env, {_OUT}
    FROM (SELECT {g}, service, env, {_AGG} FROM ({source}) GROUP BY ALL)
    ORDER BY service, env, {g}"""


def write_date(conn: duckdb.DuckDBPyConnection, lake: Lake, date: str) -> None:
    """Publish a date's cells from the rollup pass's temporary tables (after ``services_*``)."""
    for level in LEVELS:
        _write(conn, lake, level, date, cells_sql_from_stage(level))


def _write(conn: duckdb.DuckDBPyConnection, lake: Lake, level: rollup.Level, date: str, sql: str) -> None:
    """Publish one grain's cells with pyarrow (DuckDB writes row groups of 2,048 rows at least)."""
    table = conn.sql(sql).arrow()
    if hasattr(table, "read_all"):
        table = table.read_all()
    size = ROW_GROUP_ROWS[level.grain]
    table = table.replace_schema_metadata({INDEX_KEY: json.dumps(_index(table, grain=level.grain, size=size))})
    rollup.publish(lake, level.name, date, lambda tmp: pq.write_table(
        table, tmp, row_group_size=size, compression="zstd", write_statistics=[level.grain, "service", "env"]))


INDEX_KEY = "meshlens.cells.row_groups"
"""File metadata key: the row groups' first and last (service, env, time in us) and the (service, env) runs."""


def _index(table: pa.Table, *, grain: str, size: int) -> dict[str, list[list[Any]]]:
    """``groups``: [first service, env, time, last service, env, time] of each row group of
    ``size`` rows (in file order); ``runs``: every (service, env) in the file."""
    n = table.num_rows
    firsts = list(range(0, n, size))
    lasts = [min(i + size, n) - 1 for i in firsts]
    times = pc.cast(table.column(grain), pa.int64()).to_numpy()
    services, envs = table.column("service"), table.column("env")
    groups = [[services[a].as_py(), envs[a].as_py(), int(times[a]), services[b].as_py(), envs[b].as_py(), int(times[b])]
              for a, b in zip(firsts, lasts)]
    runs = table.select(["service", "env"]).group_by(["service", "env"]).aggregate([]).to_pylist()
    return {"groups": groups, "runs": [[r["service"], r["env"]] for r in runs]}


def derive_date(lake: Lake, date: str) -> bool:
    """Build a date's cells from its published ``services_*`` files (older lakes); False if none."""
    conn = duckdb.connect(":memory:")
    try:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET enable_progress_bar = false")
        done = False
        for level in LEVELS:
            source = rollup.rollup_file(lake, f"services_{SUFFIX[level.grain]}", date)
            if source.is_file():
                _write(conn, lake, level, date, cells_sql_from_file(level, str(source)))
                done = True
        return done
    finally:
        conn.close()


# -- reading -------------------------------------------------------------------------------------
@dataclass
class _Footer:
    """A cells file's parsed footer and its row groups' first and last (service, env, time) (sorted)."""

    file: pq.ParquetFile
    lo: list[tuple[str, str, int]]
    hi: list[tuple[str, str, int]]
    envs: dict[str, list[str]]


_FOOTERS: dict[str, tuple[tuple[int, int], _Footer]] = {}
_FOOTER_CACHE_MAX = 64


def _footer(path: str, stat: os.stat_result) -> _Footer | None:
    """The cached footer of ``path`` (parsed again whenever its mtime or size changes); None without an index."""
    version = (stat.st_mtime_ns, stat.st_size)
    hit = _FOOTERS.get(path)
    if hit is not None and hit[0] == version:
        return hit[1]
    file = pq.ParquetFile(path)
    index = json.loads((file.metadata.metadata or {}).get(INDEX_KEY.encode(), b"null"))
    if index is None or any(v is None for run in index["runs"] for v in run):
        return None  # no index (not written here), or NULL names: the rollups answer
    envs: dict[str, list[str]] = {}
    for service, env in index["runs"]:
        envs.setdefault(service, []).append(env)
    groups = index["groups"]
    footer = _Footer(file, [tuple(r[:3]) for r in groups], [tuple(r[3:]) for r in groups], envs)
    if len(_FOOTERS) >= _FOOTER_CACHE_MAX:
        _FOOTERS.clear()
    _FOOTERS[path] = (version, footer)
    return footer


def clear_cache() -> None:
    """Forget every parsed footer (benchmarks: a cold start)."""
    _FOOTERS.clear()


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_COLUMNS = ["env", "requests", "errors_5xx", "client_errors_4xx", "bytes_in", "bytes_out",
            "duration_count", "duration_sum_ms", "duration_max_ms", "lat_keys", "lat_counts"]


def _read(footer: _Footer, *, grain: str, service: str, env: str | None, lo: int, hi: int) -> pa.Table | None:
    """The cells of ``service`` (and ``env``) with time in [lo, hi) microseconds."""
    groups: set[int] = set()
    for one_env in [env] if env is not None else footer.envs.get(service, []):
        first, last = (service, one_env, lo), (service, one_env, hi)
        for i in range(bisect.bisect_left(footer.hi, first), len(footer.lo)):
            if footer.lo[i] >= last:
                break
            groups.add(i)
    if not groups:
        return None
    table = footer.file.read_row_groups(sorted(groups), columns=[grain, "service", *_COLUMNS], use_threads=False)
    times = pc.cast(table.column(grain), pa.int64())
    mask = pc.and_(pc.equal(table.column("service"), service),
                   pc.and_(pc.greater_equal(times, lo), pc.less(times, hi)))
    if env is not None:
        mask = pc.and_(mask, pc.equal(table.column("env"), env))
    return table.append_column("_t", times).filter(mask)


def read_cells(lake: Lake, *, tiles: list[tuple[str, int, int]], service: str,
               env: str | None) -> pa.Table | None:
    """Cells of one service over tiles (grain, lo_us, hi_us); None when a date lacks its cells.

    A date whose ``services_*`` file exists but whose cells file is missing or older (a lake
    built before this table existed) makes the fast path step aside.
    """
    parts = []
    for grain, lo, hi in tiles:
        for date in _dates(lo, hi):
            path = str(rollup.rollup_file(lake, _BY_GRAIN[grain].name, date))
            source = rollup.rollup_file(lake, f"services_{SUFFIX[grain]}", date)
            stat, source_stat = _stat(path), _stat(str(source))
            if stat is None or (source_stat is not None and source_stat.st_mtime_ns > stat.st_mtime_ns):
                if source_stat is None:
                    continue  # no data that date
                return None
            footer = _footer(path, stat)
            if footer is None:
                return None
            part = _read(footer, grain=grain, service=service, env=env, lo=lo, hi=hi)
            if part is not None and part.num_rows:
                parts.append(part.drop_columns([grain, "service"]))
    return pa.concat_tables(parts) if parts else _EMPTY


_EMPTY = pa.table({"_t": pa.array([], pa.int64())})


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _dates(lo: int, hi: int) -> list[str]:
    first = (_EPOCH + timedelta(microseconds=lo)).date()
    last = (_EPOCH + timedelta(microseconds=hi - 1)).date()
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


# -- merging -------------------------------------------------------------------------------------
NO_KEY = np.iinfo(np.int32).min


def merge(cells: pa.Table, *, group_ids: np.ndarray, n_groups: int,
          quantiles: tuple[tuple[str, float], ...], ranks: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per group: summed measures and the sketch bucket key of each quantile (nearest rank)."""
    sums = {}
    for out, col in (("r", "requests"), ("e5", "errors_5xx"), ("e4", "client_errors_4xx"), ("bi", "bytes_in"),
                     ("bo", "bytes_out"), ("c", "duration_count")):
        values = cells.column(col).to_numpy()
        sums[out] = np.bincount(group_ids, weights=values, minlength=n_groups).astype(np.int64)
    duration_sums = pc.fill_null(cells.column("duration_sum_ms"), 0.0).to_numpy()  # NULL: a cell without durations
    sums["ds"] = np.bincount(group_ids, weights=duration_sums, minlength=n_groups)
    dm = np.full(n_groups, np.nan)
    np.fmax.at(dm, group_ids, cells.column("duration_max_ms").to_numpy(zero_copy_only=False).astype(np.float64))
    sums["dm"] = dm
    return sums, _pick(cells, group_ids=group_ids, n_groups=n_groups, counts=sums["c"],
                       quantiles=quantiles, ranks=ranks)


def _pick(cells: pa.Table, *, group_ids: np.ndarray, n_groups: int, counts: np.ndarray,
          quantiles: tuple[tuple[str, float], ...], ranks: Any) -> dict[str, np.ndarray]:
    """The bucket holding each quantile's rank: a running count over (group, key)-sorted buckets.

    Each cell's list is sorted by key, so when every group is one cell in group order the
    flattened lists already are; otherwise they are sorted (stable) by (group, key) first.
    """
    keys_col = cells.column("lat_keys").combine_chunks()
    counts_col = cells.column("lat_counts").combine_chunks()
    keys = keys_col.values.to_numpy().astype(np.int64)
    weights = counts_col.values.to_numpy().astype(np.int64)
    if keys.size == 0:
        return {name: np.full(n_groups, NO_KEY) for name, _ in quantiles}
    owner = np.repeat(group_ids, np.diff(keys_col.offsets.to_numpy()))
    if not (n_groups == len(group_ids) and np.array_equal(group_ids, np.arange(n_groups))):
        order = np.argsort(owner * 65_536 + (keys - ZERO_KEY), kind="stable")
        keys, weights, owner = keys[order], weights[order], owner[order]
    cum = np.cumsum(weights)
    first = np.searchsorted(owner, np.arange(n_groups), side="left")
    before = np.concatenate(([0], cum))[first]
    picks = {}
    for name, q in quantiles:
        index = np.searchsorted(cum, before + ranks(q, counts), side="left")
        picks[name] = np.where(counts > 0, keys[np.minimum(index, len(cum) - 1)], NO_KEY)
    return picks


# -- one query -----------------------------------------------------------------------------------
ANSWERS = [0]
"""How many queries the cells answered in this process (the benchmark reports which path ran)."""


def lake_of(conn: duckdb.DuckDBPyConnection) -> Lake | None:
    """The lake whose views ``conn`` holds (registered by meshlens.catalog), or None."""
    from meshlens import catalog

    return catalog.LAKES.get(conn)


def applies(*, keys: list[str], filters: dict[str, str]) -> bool:
    """True for a query the cells answer: one service, optionally one env, keys among (service, env)."""
    return "service" in filters and set(filters) <= {"service", "env"} and set(keys) <= {"service", "env"}


def answer(lake: Lake, *, tiles: list[tuple[str, int, int]], service: str, env: str | None,
           group_env: bool, bucket_us: int | None) -> tuple[pa.Table, dict[str, np.ndarray], np.ndarray] | None:
    """(cells, group columns, each cell's group id) of one service over the tiles; None: ask the rollups.

    Groups are (env if ``group_env``, bucket start if ``bucket_us``), numbered in that order;
    the cells table is empty when the service has none in the window.
    """
    cells = read_cells(lake, tiles=tiles, service=service, env=env)
    if cells is None:
        return None
    ANSWERS[0] += 1
    parts: list[tuple[str, np.ndarray, np.ndarray]] = []  # (column, distinct values, each cell's index)
    if group_env and cells.num_rows:
        names, env_ids = np.unique(cells.column("env").to_numpy(zero_copy_only=False).astype(str), return_inverse=True)
        parts.append(("env", names, env_ids))
    if bucket_us and cells.num_rows:
        starts, bucket_ids = np.unique(cells.column("_t").to_numpy() // bucket_us * bucket_us, return_inverse=True)
        parts.append(("bucket_start", starts, bucket_ids))
    ids = np.zeros(cells.num_rows, dtype=np.int64)
    for _, values, part_ids in parts:
        ids = ids * len(values) + part_ids
    used, group_ids = np.unique(ids, return_inverse=True)
    columns, inner = {}, 1
    for name, values, _ in reversed(parts):
        columns[name] = values[(used // inner) % len(values)]
        inner *= len(values)
    return cells, columns, group_ids
