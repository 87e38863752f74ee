"""What the traffic in a window would cost on Amazon VPC Lattice, per service.

Three charges, from the price settings (defaults: AWS's public us-east-1 prices):
- service-hours: every service that received traffic in the window is billed for every hour of
  the window (Lattice bills a provisioned service per hour, busy or not);
- data: request plus response bytes, per GB (1 GB = 2^30 bytes, as AWS bills);
- requests: per million HTTP requests beyond the free ``free_requests_per_service_hour`` in each
  service-hour (counted per UTC clock hour the window touches).

Per service-hour requests and bytes come from analytics.rollup_identity's source: the
``identity_*`` rollups when they cover the window, else raw rows (the same answer either way).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import duckdb
import polars as pl

from analytics.rollup_identity import source_sql
from meshlens.timewin import Window

GB = 2**30
COLUMNS = ("service", "requests", "billable_requests", "gb_processed", "service_hours",
           "cost_service_hours", "cost_data", "cost_requests", "cost_total")


def service_hours(conn: duckdb.DuckDBPyConnection, *, window: Window, env: str | None = None,
                  raw: bool = False) -> pl.DataFrame:
    """Requests and bytes per (service, UTC clock hour) of the window."""
    src = source_sql(conn, window=window, filters={"env": env} if env else {}, raw=raw)
    return conn.sql(f"""
        SELECT service, date_trunc('hour', t) AS hour, sum(requests)::BIGINT AS requests,
               sum(bytes_in)::BIGINT AS bytes_in, sum(bytes_out)::BIGINT AS bytes_out
        FROM ({src.sql}) GROUP BY ALL ORDER BY service, hour""", params=src.params).pl()


def estimate(conn: duckdb.DuckDBPyConnection, prices: Mapping[str, Any], *, window: Window,
             env: str | None = None, raw: bool = False) -> pl.DataFrame:
    """Per-service cost estimate (USD) of the traffic in ``window``, most expensive first."""
    hourly = service_hours(conn, window=window, env=env, raw=raw)
    if hourly.is_empty():
        return pl.DataFrame(schema={c: (pl.String if c == "service" else pl.Float64) for c in COLUMNS})
    free = int(prices["free_requests_per_service_hour"])
    hours = math.ceil(window.seconds / 3600 - 1e-9)
    per_service = hourly.group_by("service").agg(
        pl.col("requests").sum(),
        (pl.col("requests") - free).clip(lower_bound=0).sum().alias("billable_requests"),
        ((pl.col("bytes_in") + pl.col("bytes_out")).sum() / GB).alias("gb_processed"),
    )
    return per_service.with_columns(
        pl.lit(float(hours)).alias("service_hours"),
        pl.lit(hours * float(prices["price_service_hour"])).alias("cost_service_hours"),
        (pl.col("gb_processed") * float(prices["price_per_gb"])).alias("cost_data"),
        (pl.col("billable_requests") / 1e6 * float(prices["price_per_million_requests"])).alias("cost_requests"),
    ).with_columns(
        (pl.col("cost_service_hours") + pl.col("cost_data") + pl.col("cost_requests")).alias("cost_total"),
    ).select(COLUMNS).sort(["cost_total", "service"], descending=[True, False])


def total(frame: pl.DataFrame) -> float:
    """The total estimated cost (USD) of an ``estimate`` frame."""
    return float(frame["cost_total"].sum()) if frame.height else 0.0
