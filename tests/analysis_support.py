"""Small synthetic lakes for the analysis tests: clean traffic, a canary, a planted regression.

Rows are drawn directly (no log files, no ingest), so a test can build a lake in a second with
exactly the traffic it needs: Poisson minute counts with a diurnal swing and an autocorrelated
(AR(1)) load factor shared by every version, so minute samples are not independent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from meshlens import schema
from meshlens.lake import Lake

START = datetime(2026, 11, 10, tzinfo=timezone.utc)
ROUTES = (("POST", "/v1/charges/{id}"), ("GET", "/v1/charges/{id}"), ("POST", "/v1/refunds"))


@dataclass
class Plan:
    """What to generate."""

    hours: int = 6
    services: tuple[str, ...] = ("PaymentService", "OrderService", "CatalogService", "CartService")
    rate_per_min: float = 40.0
    error_ratio: float = 0.01
    canary_service: str | None = None
    canary_share: float = 0.1
    canary_start_min: int = 60
    regression_start_min: int | None = None  # canary 5xx x regression_factor on one route from here
    regression_factor: float = 3.0
    regression_route: tuple[str, str] = ROUTES[0]
    seed: int = 1
    ar_phi: float = 0.9
    ar_sd: float = 0.05
    callers: dict[str, str] = field(default_factory=lambda: {"PaymentService": "OrderService",
                                                             "OrderService": "CartService"})


def draw(plan: Plan) -> pa.Table:
    """The requests of the plan as a table in the REQUESTS schema (vectorised)."""
    rng = np.random.default_rng(plan.seed)
    minutes = plan.hours * 60
    load = _ar1(rng, minutes, phi=plan.ar_phi, sd=plan.ar_sd) * (1 + 0.3 * np.sin(np.arange(minutes) / minutes * 2 * np.pi))
    parts = [_service_rows(rng, plan, service, rng.poisson(plan.rate_per_min * np.clip(load, 0.05, None)))
             for service in plan.services]
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    table = pa.table({k: pa.array(v) for k, v in columns.items() if k != "ts"})
    ts = pa.array(columns["ts"].astype("datetime64[us]"), type=pa.timestamp("us", tz="UTC"))
    return schema.conform(table.append_column("ts", ts), schema.REQUESTS)


def _ar1(rng: np.random.Generator, n: int, *, phi: float, sd: float) -> np.ndarray:
    noise = rng.normal(0, sd, n)
    out = np.empty(n)
    level = 0.0
    for i in range(n):
        level = phi * level + noise[i]
        out[i] = level
    return np.exp(out)


def _service_rows(rng: np.random.Generator, plan: Plan, service: str, counts: np.ndarray) -> dict[str, np.ndarray]:
    minute = np.repeat(np.arange(len(counts)), counts)
    n = len(minute)
    route_idx = rng.integers(len(ROUTES), size=n)
    canary_live = (service == plan.canary_service) & (minute >= plan.canary_start_min)
    is_v2 = canary_live & (rng.random(n) < plan.canary_share)
    p_err = np.full(n, plan.error_ratio)
    if plan.regression_start_min is not None:
        hit = is_v2 & (minute >= plan.regression_start_min) & (route_idx == ROUTES.index(plan.regression_route))
        p_err[hit] *= plan.regression_factor
    start = np.datetime64(START.replace(tzinfo=None), "us")
    offsets = (minute * 60_000_000 + rng.integers(0, 60_000_000, size=n)).astype("timedelta64[us]")
    return {
        "ts": start + offsets,
        "duration_ms": rng.lognormal(np.log(40), 0.4, size=n),
        "caller": np.full(n, plan.callers.get(service, "EdgeGateway"), dtype=object),
        "service": np.full(n, service, dtype=object),
        "version": np.where(is_v2, "v2", "v1").astype(object),
        "env": np.full(n, "prod", dtype=object),
        "method": np.array([m for m, _ in ROUTES], dtype=object)[route_idx],
        "route": np.array([r for _, r in ROUTES], dtype=object)[route_idx],
        "path": np.array([r.replace("{id}", "ch_1") for _, r in ROUTES], dtype=object)[route_idx],
        "status": np.where(rng.random(n) < p_err, 503, 200).astype(np.int32),
        "bytes_in": rng.integers(100, 900, size=n),
        "bytes_out": rng.integers(200, 3000, size=n),
    }


def build_lake(root, plan: Plan) -> Lake:
    """A lake under ``root`` holding the plan's requests."""
    lake = Lake(root)
    lake.write_partitioned("requests", draw(plan), ts_column="ts", stem="synthetic")
    return lake


def raw_and_rolled(root: Path, plan: Plan) -> tuple[Lake, Lake]:
    """The plan's requests twice under ``root``: raw rows only ("raw"), and with the rollups built ("rolled")."""
    from analytics import rollup

    raw, rolled = build_lake(root / "raw", plan), build_lake(root / "rolled", plan)
    rollup.update(rolled, dates=[START.date().isoformat()])
    return raw, rolled
