"""Metric series as users have them: CSV, CloudWatch JSON, and the RED minute series of the lake.

Every reader returns a polars frame with columns ``series`` (a name), ``timestamp`` (UTC
``datetime[us]``) and ``value`` (float), sorted by series then time, so that the anomaly
detector (``analytics.anomalies.detect_series``) reads all of them the same way.

- CSV: a header naming a time column (``timestamp``, ``time``, ``ts`` or ``date``) and one or
  more value columns; each value column is one series (NAB's files are ``timestamp,value``).
  Times without an offset are read as UTC; epoch seconds/milliseconds are accepted.
- CloudWatch: what ``aws cloudwatch get-metric-data`` prints: ``MetricDataResults`` with one
  entry per query id, each with ``Timestamps`` and ``Values`` (newest first as AWS prints them;
  we sort). Several ids become several series named by ``Label`` or ``Id``.
- The lake: ``red_minute_series`` reads ``analytics.red.minute_series`` when present, else an
  equivalent private DuckDB query over the ``requests`` view.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from meshlens.errors import InputError
from meshlens.timewin import Window

SERIES_COLUMNS = ("series", "timestamp", "value")
TIME_NAMES = ("timestamp", "time", "ts", "date", "datetime")
MINUTE_COLUMNS = ("requests", "errors_5xx", "client_errors_4xx", "p50_ms", "p99_ms", "bytes")


def read_series(path: str | Path) -> pl.DataFrame:
    """Read a CSV or CloudWatch JSON metric file (chosen by content) into the series frame."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{file}: no such file")
    text = file.read_text(encoding="utf-8-sig", errors="replace")
    if text.lstrip().startswith("{"):
        return parse_cloudwatch(text, source=str(file))
    return parse_csv(text, source=str(file))


def parse_csv(text: str, *, source: str = "<csv>") -> pl.DataFrame:
    """``timestamp,value[,value2...]`` CSV text -> series frame (one series per value column)."""
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if len(rows) < 2:
        raise InputError(f"{source}: expected a header and at least one row of timestamp,value")
    header = [h.strip() for h in rows[0]]
    time_col = _time_column(header, source=source)
    value_cols = [i for i in range(len(header)) if i != time_col]
    if not value_cols:
        raise InputError(f"{source}: no value column beside {header[time_col]!r}")
    frames = []
    for col in value_cols:
        stamps, values = [], []
        for line_no, row in enumerate(rows[1:], start=2):
            stamps.append(parse_time(_cell(row, time_col), where=f"{source}:{line_no}"))
            values.append(_number(_cell(row, col), where=f"{source}:{line_no}"))
        name = header[col] if len(value_cols) > 1 else Path(source).stem
        frames.append(_frame(name, stamps, values))
    return pl.concat(frames)


def parse_cloudwatch(text: str, *, source: str = "<json>") -> pl.DataFrame:
    """``aws cloudwatch get-metric-data`` output -> series frame (one series per result id)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    results = doc.get("MetricDataResults") if isinstance(doc, dict) else None
    if not isinstance(results, list):
        raise InputError(f"{source}: no MetricDataResults; expected `aws cloudwatch get-metric-data` output")
    frames = []
    for index, result in enumerate(results):
        stamps = result.get("Timestamps") or []
        values = result.get("Values") or []
        if len(stamps) != len(values):
            raise InputError(f"{source}: result {index} has {len(stamps)} timestamps but {len(values)} values")
        name = str(result.get("Label") or result.get("Id") or f"series{index}")
        where = f"{source}: result {name}"
        frames.append(_frame(name, [parse_time(str(s), where=where) for s in stamps],
                             [_number(v, where=where) for v in values]))
    if not frames:
        raise InputError(f"{source}: MetricDataResults is empty")
    return pl.concat(frames)


def parse_time(text: str, *, where: str) -> datetime:
    """ISO-8601 (UTC when no offset) or epoch seconds / milliseconds -> aware UTC datetime."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        seconds = number / 1000.0 if number > 1e11 else number
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{where}: cannot read time {text!r}; use ISO-8601 or epoch seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def split_series(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The series frame as {name: frame(timestamp, value)} in first-seen order."""
    if "series" not in frame.columns:
        return {"series": frame.select("timestamp", "value")}
    names = frame.get_column("series").unique(maintain_order=True).to_list()
    return {n: frame.filter(pl.col("series") == n).select("timestamp", "value") for n in names}


def red_minute_series(
    conn: duckdb.DuckDBPyConnection,
    *,
    window: Window,
    key: list[str],
    service: str | None = None,
    env: str | None = None,
) -> pl.DataFrame:
    """Per (key..., minute): requests, errors_5xx, client_errors_4xx, p50_ms, p99_ms, bytes."""
    try:
        from analytics import red  # the metrics engineer's implementation, when present

        frame = red.minute_series(conn, window=window, key=key, service=service, env=env)
        return _conform_minutes(frame, key)
    except (ImportError, AttributeError):
        return _private_minute_series(conn, window=window, key=key, service=service, env=env)


def _conform_minutes(frame: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    minute = "minute" if "minute" in frame.columns else "bucket_start"
    frame = frame.rename({minute: "minute"}) if minute != "minute" else frame
    return frame.select(*key, "minute", *MINUTE_COLUMNS).with_columns(
        pl.col("minute").cast(pl.Datetime("us", "UTC")),
        *[pl.col(c).cast(pl.Float64) for c in MINUTE_COLUMNS],
    )


def _private_minute_series(
    conn: duckdb.DuckDBPyConnection,
    *,
    window: Window,
    key: list[str],
    service: str | None,
    env: str | None,
) -> pl.DataFrame:
    keys = ", ".join(f'coalesce("{k}", \'unknown\') AS "{k}"' for k in key)
    where, params = _filters(window, service=service, env=env)
    sql = f"""
        SELECT {keys}, time_bucket(INTERVAL 1 minute, ts) AS minute,
               count(*)::DOUBLE AS requests,
               count(*) FILTER (WHERE status >= 500)::DOUBLE AS errors_5xx,
               count(*) FILTER (WHERE status >= 400 AND status < 500)::DOUBLE AS client_errors_4xx,
               quantile_cont(duration_ms, 0.5) AS p50_ms,
               quantile_cont(duration_ms, 0.99) AS p99_ms,
               (sum(coalesce(bytes_in, 0)) + sum(coalesce(bytes_out, 0)))::DOUBLE AS bytes
        FROM requests WHERE {where} GROUP BY ALL ORDER BY ALL
    """
    frame = conn.sql(sql, params=params).pl()
    return _conform_minutes(frame, key)


def _filters(window: Window, *, service: str | None, env: str | None) -> tuple[str, list[Any]]:
    """Window and filters over raw ``requests`` (with date-partition pruning)."""
    from analytics.red import where_sql

    filters = {col: value for col, value in (("service", service), ("env", env)) if value}
    where, params = where_sql("ts", window=window, filters=filters)
    return where, list(params)


def _time_column(header: list[str], *, source: str) -> int:
    for index, name in enumerate(header):
        if name.lower() in TIME_NAMES:
            return index
    if len(header) >= 2:
        return 0
    raise InputError(f"{source}: no time column in header {header}; expected timestamp,value")


def _cell(row: list[str], index: int) -> str:
    return row[index] if index < len(row) else ""


def _number(value: Any, *, where: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {value!r} is not a number") from None


def _frame(name: str, stamps: list[datetime], values: list[float]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {"series": [name] * len(stamps), "timestamp": stamps, "value": values},
        schema={"series": pl.String, "timestamp": pl.Datetime("us", "UTC"), "value": pl.Float64},
    )
    return frame.sort("timestamp").unique("timestamp", keep="last", maintain_order=True)
