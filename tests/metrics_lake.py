"""A small synthetic lake with known rows, for the metrics tests (test_metrics_*.py).

The rows are made with numpy and kept as a polars frame: tests compute every expected number
from that frame with polars/numpy, independently of DuckDB and of analytics.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import polars as pl

from meshlens import schema
from meshlens.lake import Lake

START = datetime(2026, 11, 10, tzinfo=timezone.utc)
DATES = ("2026-11-10", "2026-11-11")
POLICY_TOML = """
[[allow]]
service = "PaymentService"
env = "prod"
callers = ["CheckoutService", "OrderService"]

[[allow]]
service = "CartService"
callers = ["OrderService"]
"""
"""An allowed-caller policy that some of the lake's callers break."""


def build(lake: Lake, *, rows: int = 6000, seed: int = 5) -> pl.DataFrame:
    """Write ``rows`` requests over two days into ``lake``; returns them (the ground truth)."""
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, 2 * 86_400_000_000, size=rows)
    service = rng.choice(["PaymentService", "OrderService", "CartService"], size=rows, p=[0.5, 0.3, 0.2])
    caller = rng.choice(["CheckoutService", "OrderService", "OrdersReporting", "unknown"], size=rows)
    status = rng.choice([200, 201, 302, 404, 403, 500, 503, -1], size=rows,
                        p=[0.6, 0.1, 0.02, 0.08, 0.05, 0.08, 0.05, 0.02])
    duration = rng.lognormal(3.0, 1.2, size=rows)
    duration[rng.random(rows) < 0.02] = 0.0
    principal = np.where(caller == "unknown", "",
                         np.char.add("arn:aws:iam::111111111111:role/", caller.astype(str)))
    denied = (status == 403) & (rng.random(rows) < 0.7)
    frame = pl.DataFrame({
        "ts": (np.datetime64("2026-11-10T00:00:00", "us") + offsets.astype("timedelta64[us]")),
        "duration_ms": duration,
        "caller": caller, "caller_principal": principal, "service": service,
        "version": rng.choice(["v1", "v2"], size=rows, p=[0.8, 0.2]),
        "env": rng.choice(["prod", "staging"], size=rows, p=[0.85, 0.15]),
        "method": rng.choice(["GET", "POST"], size=rows),
        "route": pl.Series([(None, "/v1/charges/{id}", "/v1/orders")[i] for i in
                            rng.choice(3, size=rows, p=[0.05, 0.5, 0.45])], dtype=pl.String),
        "status": status,
        "bytes_in": rng.integers(0, 5_000, size=rows),
        "bytes_out": rng.integers(0, 50_000, size=rows),
        "tls_version": rng.choice(["TLSv1.3", "TLSv1.2", ""], size=rows, p=[0.7, 0.2, 0.1]),
        "mtls": rng.random(rows) < 0.3,
        "auth_denied_reason": np.where(denied, "Service", ""),
        "failure_reason": np.where(denied, "ClientAccessDenied", ""),
        "source_ip": rng.choice(["10.0.0.1", "10.0.0.2", "10.0.1.9"], size=rows),
    }).with_columns(
        pl.col("ts").dt.replace_time_zone("UTC"),
        pl.when(pl.col("status") < 0).then(None).otherwise(pl.col("status")).cast(pl.Int32).alias("status"),
        # some requests have no duration at all
        pl.when(pl.int_range(pl.len()) % 97 == 0).then(None).otherwise(pl.col("duration_ms")).alias("duration_ms"),
    )
    parts = frame.with_columns((pl.col("ts").dt.hour() // 8).alias("_part")).partition_by("_part", maintain_order=True)
    for index, part in enumerate(parts):
        table = schema.conform(part.drop("_part").to_arrow(compat_level=pl.CompatLevel.oldest()), schema.REQUESTS)
        lake.write_partitioned("requests", table, ts_column="ts", stem=f"synthetic-{index}")
    return frame


def nearest_rank(values: np.ndarray, q: float) -> float | None:
    """The exact nearest-rank quantile: sorted value at 1-based rank max(1, ceil(q*n))."""
    values = np.sort(values[~np.isnan(values)])
    if values.size == 0:
        return None
    pct = round(q * 1000)  # q has at most 3 decimals here: integer math, no float rounding
    rank = max(1, -(-values.size * pct // 1000))
    return float(values[rank - 1])


def status_class() -> pl.Expr:
    """The status class label of a row, as the rollups store it."""
    return (
        pl.when(pl.col("status").is_between(100, 599))
        .then((pl.col("status") // 100).cast(pl.String) + "xx")
        .otherwise(pl.lit("none"))
    )
