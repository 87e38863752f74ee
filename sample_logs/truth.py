"""GroundTruth: what the scenario generator planted and exactly what it wrote.

Tests compute expected answers from here, without SQL. Names are the ones the ingest
pipeline resolves with the scenario's inventory: service and caller names in CamelCase,
``unknown`` for a caller whose principal the inventory cannot resolve, version ``v1``/``v2``
(null / None for requests denied before a target group was chosen: targetGroupArn ``-``, as
the pipeline stores them).

Tables (columnar in the JSON file, polars frames through the accessors):
- ``counts``: per (hour, caller, service, version, env, route, method, status): requests,
  bytes_in, bytes_out. ``hour`` is the UTC hour the requests started in.
- ``latency``: per (hour, service, version, env): requests and p50/p90/p95/p99 (numpy
  ``method='lower'``: the sample at index floor(q*(n-1)) of the sorted durations, a value
  that really occurred), max and mean, in milliseconds.
- ``requests``: (``keys`` holds the distinct name tuples, rows refer to them) every request written: ts (whole seconds, as in the real records), the
  resolved names, status, bytes and duration_ms. Use it for any other aggregate.
``events`` lists the planted events with exact UTC times (ISO-8601 ``...Z``) and numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

KEY_COLUMNS = ("caller", "service", "version", "env", "route", "method", "status")
COUNT_COLUMNS = ("hour", *KEY_COLUMNS, "requests", "bytes_in", "bytes_out")
LATENCY_COLUMNS = ("hour", "service", "version", "env", "requests",
                   "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms")
PERCENTILE_METHOD = "lower"


@dataclass
class GroundTruth:
    """The planted events and exact counts of one generated scenario."""

    start: str
    end: str
    hours: int
    seed: int
    scale: float
    total_requests: int
    envs: list[dict[str, Any]]
    services: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    events: list[dict[str, Any]]
    files: list[dict[str, Any]]  # path (relative to out_dir), env, lines
    counts: dict[str, list[Any]] = field(repr=False)
    latency: dict[str, list[Any]] = field(repr=False)
    requests: dict[str, list[Any]] = field(repr=False)

    # --- persistence -------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the truth as one JSON file."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        Path(path).write_text(json.dumps(data, separators=(",", ":")))

    @classmethod
    def load(cls, path: str | Path) -> GroundTruth:
        """Read a truth file written by ``save``."""
        return cls(**json.loads(Path(path).read_text()))

    # --- times -------------------------------------------------------------------------
    @property
    def start_dt(self) -> datetime:
        return parse_ts(self.start)

    @property
    def end_dt(self) -> datetime:
        return parse_ts(self.end)

    # --- frames ------------------------------------------------------------------------
    def counts_frame(self) -> pl.DataFrame:
        """Hourly counts as a polars frame (``hour`` a UTC datetime)."""
        return _with_time(pl.DataFrame(self.counts), "hour")

    def latency_frame(self) -> pl.DataFrame:
        """Hourly latency percentiles per (service, version, env)."""
        return _with_time(pl.DataFrame(self.latency), "hour")

    @cached_property
    def _requests(self) -> pl.DataFrame:
        keys = pl.DataFrame(self.requests["keys"]).with_row_index("key").with_columns(pl.col("key").cast(pl.Int64))
        rows = pl.DataFrame({k: v for k, v in self.requests.items() if k != "keys"})
        joined = rows.join(keys, on="key", how="left", maintain_order="left")
        return _with_time(joined.select("ts", *KEY_COLUMNS, "bytes_in", "bytes_out", "duration_ms"), "ts")

    def requests_frame(self) -> pl.DataFrame:
        """Every request written, one row each (``ts`` a UTC datetime, whole seconds)."""
        return self._requests

    # --- lookups -----------------------------------------------------------------------
    def event(self, kind: str) -> dict[str, Any]:
        """The first planted event of ``kind`` (KeyError when none was planted)."""
        for ev in self.events:
            if ev["kind"] == kind:
                return ev
        raise KeyError(f"no planted event of kind {kind!r} in this scenario")

    def service_names(self) -> list[str]:
        """Every Lattice service (callee) of the scenario."""
        return [s["name"] for s in self.services if s["tier"] > 0]

    def count(self, *, start: datetime | None = None, end: datetime | None = None,
              **filters: Any) -> int:
        """Requests matching ``filters`` (column=value or column=[values]) in [start, end)."""
        frame = self.requests_frame()
        return frame.filter(_predicate(start=start, end=end, filters=filters)).height

    def percentile(self, q: float, *, start: datetime | None = None, end: datetime | None = None,
                   method: str = PERCENTILE_METHOD, **filters: Any) -> float:
        """Exact latency percentile (q in 0..100) of the matching requests, numpy ``method``."""
        frame = self.requests_frame().filter(_predicate(start=start, end=end, filters=filters))
        if frame.height == 0:
            raise ValueError(f"no requests match {filters}")
        return float(np.percentile(frame["duration_ms"].to_numpy(), q, method=method))  # type: ignore[call-overload]


def parse_ts(text: str) -> datetime:
    """ISO-8601 ``...Z`` -> aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _with_time(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    if frame.height == 0 or column not in frame.columns:
        return frame
    return frame.with_columns(pl.from_epoch(pl.col(column), time_unit="s").dt.replace_time_zone("UTC"))


def _predicate(*, start: datetime | None, end: datetime | None, filters: dict[str, Any]) -> pl.Expr:
    pred = pl.lit(True)
    if start is not None:
        pred &= pl.col("ts") >= start
    if end is not None:
        pred &= pl.col("ts") < end
    for name, value in filters.items():
        if isinstance(value, (list, tuple, set, frozenset)):
            pred &= pl.col(name).is_in(list(value))
        else:
            pred &= pl.col(name) == value
    return pred
