"""SQL templates over the lake views: one aggregate template and a few special shapes.

A question becomes an ``Aggregate`` (measures, group-by dimensions, filters, window, order,
limit). ``aggregate_sql`` writes it against the smallest source that answers it: the hourly
rollups (``edges_1h``, ``requests_1h``) when the window is whole hours and every dimension and
filter is a rollup key, else ``requests_1m``, else the raw ``requests`` (percentiles and exact
status codes need raw rows; a filter on the ``date`` partition lets DuckDB skip other days).
Conventions: UTC, half-open windows [start, end), an error is a 5xx answer, a 4xx is a client
error, reported apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from meshlens.timewin import Window, iso

SKETCH = "sketch"
"""``rollups`` value of a lake too big for exact percentiles from raw rows."""
ROLLUP_KEYS = frozenset({"caller", "service", "version", "route", "method", "env", "status_class"})
EDGE_KEYS = frozenset({"caller", "service", "version", "env"})
PERCENTILES = {"p50_ms": 0.5, "p90_ms": 0.9, "p95_ms": 0.95, "p99_ms": 0.99}
RAW_MEASURES = {
    "requests": "count(*)",
    "rps": "round(count(*) / {seconds}, 3)",
    "errors_5xx": "count(*) FILTER (WHERE status >= 500)",
    "error_ratio": "round(count(*) FILTER (WHERE status >= 500) / count(*), 5)",
    "client_errors_4xx": "count(*) FILTER (WHERE status BETWEEN 400 AND 499)",
    "client_error_ratio": "round(count(*) FILTER (WHERE status BETWEEN 400 AND 499) / count(*), 5)",
    "bytes_in": "sum(bytes_in)",
    "bytes_out": "sum(bytes_out)",
    "bytes_total": "sum(coalesce(bytes_in, 0) + coalesce(bytes_out, 0))",
    "mean_ms": "round(avg(duration_ms), 1)",
    "max_ms": "round(max(duration_ms), 1)",
    **{name: f"round(quantile_cont(duration_ms, {q}), 1)" for name, q in PERCENTILES.items()},
}
ROLLUP_MEASURES = {
    "requests": "coalesce(sum(requests), 0)",
    "rps": "round(coalesce(sum(requests), 0) / {seconds}, 3)",
    "errors_5xx": "coalesce(sum(errors_5xx), 0)",
    "error_ratio": "round(sum(errors_5xx) / sum(requests), 5)",
    "client_errors_4xx": "coalesce(sum(client_errors_4xx), 0)",
    "client_error_ratio": "round(sum(client_errors_4xx) / sum(requests), 5)",
    "bytes_in": "sum(bytes_in)",
    "bytes_out": "sum(bytes_out)",
    "bytes_total": "sum(bytes_in + bytes_out)",
    "mean_ms": "round(sum(duration_sum_ms) / nullif(sum(duration_count), 0), 1)",
    "max_ms": "round(max(duration_max_ms), 1)",
}
RAW_DIMS = {"hour": "date_trunc('hour', ts)", "minute": "date_trunc('minute', ts)",
            "day": "date_trunc('day', ts)",
            "status_class": "CASE WHEN status IS NULL THEN 'none' ELSE CAST(status // 100 AS VARCHAR) || 'xx' END"}


@dataclass
class Aggregate:
    """One aggregate question over ``requests``."""

    window: Window
    measures: list[str]
    dims: list[str] = field(default_factory=list)
    filters: Mapping[str, str | list[str]] = field(default_factory=dict)
    where: list[str] = field(default_factory=list)  # extra raw-only predicates (trusted templates)
    order_by: str | None = None
    descending: bool = True
    limit: int | None = None
    having_rows: bool = False


def quote(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def ts_literal(moment: datetime) -> str:
    return f"TIMESTAMPTZ '{iso(moment).replace('T', ' ').replace('Z', '+00')}'"


def choose_source(agg: Aggregate, *, rollups: bool | str) -> str:
    """The smallest table that answers ``agg``: edges_1h, requests_1h, requests_1m or requests."""
    if not rollups or agg.where or any(m not in ROLLUP_MEASURES for m in agg.measures):
        return "requests"
    keys = set(agg.dims) | set(agg.filters)
    daily = _aligned(agg.window, timedelta(days=1)) and not keys & {"minute", "hour"}
    if daily and keys - {"day"} <= EDGE_KEYS:
        return "edges_1d"
    if daily and keys - {"day"} <= ROLLUP_KEYS:
        return "requests_1d"
    hourly = _aligned(agg.window, timedelta(hours=1)) and "minute" not in keys
    if hourly and keys - {"hour", "day"} <= EDGE_KEYS:
        return "edges_1h"
    if hourly and keys - {"hour", "day"} <= ROLLUP_KEYS:
        return "requests_1h"
    minutely = _aligned(agg.window, timedelta(minutes=1))
    if minutely and keys - {"hour", "minute", "day"} <= EDGE_KEYS:
        return "edges_1m"
    if minutely and keys - {"hour", "minute", "day"} <= ROLLUP_KEYS:
        return "requests_1m"
    return "requests"


def _aligned(window: Window, step: timedelta) -> bool:
    seconds = step.total_seconds()
    return all(t.timestamp() % seconds == 0 for t in (window.start, window.end))


def time_column(source: str) -> str:
    return {"requests": "ts", "requests_1m": "minute", "edges_1m": "minute", "edges_1h": "hour", "requests_1h": "hour",
            "edges_1d": "day", "requests_1d": "day"}.get(source, "ts")


def window_predicate(source: str, window: Window) -> str:
    """``tcol >= start AND tcol < end`` plus the date-partition filter that prunes files."""
    col = time_column(source)
    last_day = (window.end - timedelta(microseconds=1)).date()
    return (f"{col} >= {ts_literal(window.start)} AND {col} < {ts_literal(window.end)} "
            f"AND date BETWEEN DATE '{window.start.date()}' AND DATE '{last_day}'")


def filter_predicates(filters: Mapping[str, str | list[str]]) -> list[str]:
    out = []
    for column, value in filters.items():
        if isinstance(value, list):
            out.append(f"{column} IN ({', '.join(quote(v) for v in value)})")
        else:
            out.append(f"{column} = {quote(value)}")
    return out


def dim_expr(dim: str, source: str) -> str:
    if source == "requests":
        return f"{RAW_DIMS[dim]} AS {dim}" if dim in RAW_DIMS else dim
    col = time_column(source)
    if dim in ("hour", "minute", "day"):
        return dim if dim == col else f"date_trunc('{dim}', {col}) AS {dim}"
    return dim


def aggregate_sql(agg: Aggregate, *, rollups: bool | str, sketch: bool = False) -> str:
    """The SELECT answering ``agg`` (from the smallest source that can).

    ``rollups`` is False (raw rows only), True (rollups for counts), or ``"sketch"`` (a big lake:
    percentiles too come from the rollups' latency sketches, within 1% of the nearest-rank
    value, instead of a scan of raw rows).
    """
    sketch = sketch or rollups == SKETCH
    pcts = [m for m in agg.measures if m in PERCENTILES]
    if sketch and rollups and pcts:
        rest = Aggregate(**{**agg.__dict__, "measures": [m for m in agg.measures if m not in PERCENTILES]})
        if choose_source(rest, rollups=True) != "requests":
            return _with_sketch_percentiles(agg, rest, pcts)
    source = choose_source(agg, rollups=rollups)
    table = ROLLUP_MEASURES if source != "requests" else RAW_MEASURES
    seconds = _bucket_seconds(agg) or max(agg.window.seconds, 1.0)
    select = [dim_expr(d, source) for d in agg.dims]
    select += [f"{table[m].format(seconds=f'{seconds:g}')} AS {m}" for m in agg.measures]
    where = [window_predicate(source, agg.window)] + filter_predicates(agg.filters) + agg.where
    sql = f"SELECT {', '.join(select)}\nFROM {source}\nWHERE {' AND '.join(where)}"
    if agg.dims:
        sql += f"\nGROUP BY {', '.join(agg.dims)}"
        if source != "requests":
            sql += "\nHAVING sum(requests) > 0"
    sql += _order(agg)
    return sql


def _with_sketch_percentiles(agg: Aggregate, rest: Aggregate, pcts: list[str]) -> str:
    """Rollup measures joined with percentiles read from the merged latency sketches."""
    from analytics import sketch

    source = choose_source(rest, rollups=True)
    plain = Aggregate(**{**rest.__dict__, "order_by": None, "limit": None,
                         "measures": rest.measures or ["requests"]})
    dims = [dim_expr(d, source) for d in agg.dims]
    names = list(agg.dims)
    where = [window_predicate(source, agg.window)] + filter_predicates(agg.filters)
    part = ", ".join(names) if names else "NULL"
    cols = [f"round({sketch.value_sql(_first_key(sketch.rank_sql(PERCENTILES[p], 'total')))}, 1) AS {p}" for p in pcts]
    joined = " AND ".join(f"a.{d} IS NOT DISTINCT FROM p.{d}" for d in names) or "true"
    order = _order(agg)
    select_cols = ", ".join([f"a.{n}" for n in names] + [f"a.{m}" if m not in PERCENTILES else f"p.{m}" for m in agg.measures])
    return (f"WITH a AS (\n{aggregate_sql(plain, rollups=True)}\n),\n"
            f"b AS (\nSELECT {', '.join(dims + ['lat_key AS key', 'sum(duration_count) AS n'])}\nFROM {source}\n"
            f"WHERE {' AND '.join(where + ['lat_key IS NOT NULL'])}\nGROUP BY ALL\n),\n"
            f"r AS (\nSELECT *, sum(n) OVER (PARTITION BY {part} ORDER BY key ROWS UNBOUNDED PRECEDING) AS cum, "
            f"sum(n) OVER (PARTITION BY {part}) AS total FROM b\n),\n"
            f"p AS (\nSELECT {', '.join(names + cols)}\nFROM r{' GROUP BY ' + ', '.join(names) if names else ''}\n)\n"
            f"SELECT {select_cols}\nFROM a JOIN p ON {joined}{order}")


def _first_key(rank: str) -> str:
    """The smallest bucket key whose cumulative count reaches ``rank``."""
    return f"min(key) FILTER (WHERE cum >= {rank})"


def _bucket_seconds(agg: Aggregate) -> float | None:
    """Seconds per row when rows are time buckets (rps of an hour is per that hour)."""
    for dim, seconds in (("minute", 60.0), ("hour", 3600.0), ("day", 86400.0)):
        if dim in agg.dims:
            return seconds
    return None


def _order(agg: Aggregate) -> str:
    if not agg.dims:
        return ""
    if agg.order_by:
        nulls = " NULLS LAST"
        return (f"\nORDER BY {agg.order_by} {'DESC' if agg.descending else 'ASC'}{nulls}, "
                f"{', '.join(agg.dims)}" + (f"\nLIMIT {agg.limit}" if agg.limit else ""))
    return f"\nORDER BY {', '.join(agg.dims)}" + (f"\nLIMIT {agg.limit}" if agg.limit else "")


def compare_windows_sql(agg: Aggregate, windows: list[tuple[str, Window]], *, rollups: bool | str) -> str:
    """The same aggregate over several labelled windows, one block of rows per window."""
    parts = []
    for label, window in windows:
        one = Aggregate(**{**agg.__dict__, "window": window, "order_by": None, "limit": None})
        inner = aggregate_sql(one, rollups=rollups)
        parts.append(f"SELECT {quote(label)} AS period, {quote(iso(window.start))} AS period_start, "
                     f"{quote(iso(window.end))} AS period_end, *\nFROM (\n{inner}\n)")
    return "\nUNION ALL\n".join(parts)


def peak_sql(agg: Aggregate, *, rollups: bool | str, grain: str = "minute") -> str:
    """The busiest ``grain`` of the window: its start, requests and requests per second."""
    per = Aggregate(window=agg.window, measures=["requests", "errors_5xx"], dims=[grain],
                    filters=agg.filters, where=agg.where)
    seconds = 60 if grain == "minute" else 3600
    return (f"SELECT {grain}, requests AS requests_per_{grain}, round(requests / {seconds}, 3) AS rps, "
            f"errors_5xx\nFROM (\n{aggregate_sql(per, rollups=rollups)}\n)\n"
            f"ORDER BY requests DESC, {grain}\nLIMIT 1")


def set_difference_sql(column: str, first: Aggregate, second: Aggregate, *, rollups: bool | str) -> str:
    """Values of ``column`` seen in ``first``'s window but not in ``second``'s."""
    a = aggregate_sql(Aggregate(window=first.window, measures=["requests"], dims=[column],
                                filters=first.filters), rollups=rollups)
    b = aggregate_sql(Aggregate(window=second.window, measures=["requests"], dims=[column],
                                filters=second.filters), rollups=rollups)
    return (f"WITH first_window AS (\n{a}\n), second_window AS (\n{b}\n)\n"
            f"SELECT f.{column}, f.requests AS requests_first_window\nFROM first_window f\n"
            f"WHERE f.{column} NOT IN (SELECT {column} FROM second_window WHERE {column} IS NOT NULL)\n"
            f"ORDER BY f.requests DESC, f.{column}")


def raw_group_sql(*, window: Window, select: list[str], group: list[str], where: list[str],
                  order: str, table: str = "requests") -> str:
    """A free-form grouped query over a raw table (principals, denied calls, exceptions)."""
    tcol = "start_ts" if table == "spans" else "ts"
    last_day = (window.end - timedelta(microseconds=1)).date()
    preds = [f"{tcol} >= {ts_literal(window.start)}", f"{tcol} < {ts_literal(window.end)}",
             f"date BETWEEN DATE '{window.start.date()}' AND DATE '{last_day}'", *where]
    sql = f"SELECT {', '.join(select)}\nFROM {table}\nWHERE {' AND '.join(preds)}"
    if group:
        sql += f"\nGROUP BY {', '.join(group)}"
    return sql + f"\nORDER BY {order}"
