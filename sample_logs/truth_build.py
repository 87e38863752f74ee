"""Build the GroundTruth of a generated scenario from its request arrays.

Names are resolved the way the ingest pipeline resolves them with the scenario's inventory
(see ``sample_logs.truth``); every number is computed from the arrays that were written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from sample_logs import topology as topo
from sample_logs.traffic import Net, Requests
from sample_logs.truth import KEY_COLUMNS, LATENCY_COLUMNS, PERCENTILE_METHOD, GroundTruth

if TYPE_CHECKING:
    from sample_logs.scenario import Plan

VERSIONS: list[str | None] = ["v1", "v2", None]  # None: denied before a target group was chosen


def _take(table: list[str] | list[str | None], idx: np.ndarray) -> pl.Series:
    return pl.Series(table, dtype=pl.String).gather(pl.Series(idx, dtype=pl.UInt32))


def request_frame(net: Net, req: Requests) -> pl.DataFrame:
    """One row per written request with resolved names."""
    names = [s.name for s in net.services] + ["unknown"]
    caller = np.where(req["caller"] < 0, len(names) - 1, req["caller"])
    return pl.DataFrame({
        "ts": req["t"],
        "caller": _take(names, caller),
        "service": _take(names, req["callee"]),
        "version": _take(VERSIONS, req["version"]),
        "env": _take([e.name for e in topo.ENVS], req["env"]),
        "route": _take([r.template for _, r in net.routes], req["route"]),
        "method": _take([r.method for _, r in net.routes], req["route"]),
        "status": req["status"].astype(np.int64),
        "bytes_in": req["bytes_in"],
        "bytes_out": req["bytes_out"],
        "duration_ms": req["duration"],
    })


def counts_table(frame: pl.DataFrame) -> pl.DataFrame:
    """Requests and bytes per (hour, caller, service, version, env, route, method, status)."""
    keys = ["hour", *KEY_COLUMNS]
    return (frame.with_columns(hour=pl.col("ts") - pl.col("ts") % 3600)
            .group_by(keys).agg(requests=pl.len(), bytes_in=pl.col("bytes_in").sum(),
                                bytes_out=pl.col("bytes_out").sum())
            .sort(keys))


QUANTILES = (50, 90, 95, 99)


def latency_table(frame: pl.DataFrame) -> pl.DataFrame:
    """Exact percentiles (numpy method 'lower') per (hour, service, version, env).

    Vectorized over groups with numpy's own arithmetic for 'lower': the sorted sample at
    index floor((q / 100) * (n - 1)); a test checks it against ``np.percentile``.
    """
    keys = ["hour", "service", "version", "env"]
    ordered = frame.with_columns(hour=pl.col("ts") - pl.col("ts") % 3600).sort([*keys, "duration_ms"])
    groups = (ordered.select(keys).with_row_index("i")
              .group_by(keys, maintain_order=True).agg(first=pl.col("i").first(), n=pl.len()))
    d = ordered["duration_ms"].to_numpy().astype(float)
    first = groups["first"].to_numpy().astype(np.int64)
    n = groups["n"].to_numpy().astype(np.int64)
    out = groups.select(keys).with_columns(requests=pl.Series(n))
    for q in QUANTILES:
        index = np.floor(np.true_divide(q, 100) * (n - 1)).astype(np.int64)
        out = out.with_columns(pl.Series(f"p{q}_ms", d[first + index]))
    sums = np.add.reduceat(d, first) if len(first) else np.zeros(0)
    out = out.with_columns(max_ms=pl.Series(d[first + n - 1]), mean_ms=pl.Series(sums / n))
    return out.select(LATENCY_COLUMNS)


def _columns(frame: pl.DataFrame) -> dict[str, list[Any]]:
    return {c: frame[c].to_list() for c in frame.columns}


def build_truth(net: Net, req: Requests, plan: Plan, *, files: list[dict[str, Any]], seed: int,
                scale: float, hours: int) -> GroundTruth:
    """The GroundTruth of the written requests."""
    from sample_logs.events import describe_events

    frame = request_frame(net, req)
    keys = frame.select(KEY_COLUMNS).unique().sort(list(KEY_COLUMNS)).with_row_index("key")
    indexed = frame.join(keys, on=list(KEY_COLUMNS), how="left", maintain_order="left", nulls_equal=True)
    compact = indexed.select("ts", pl.col("key").cast(pl.Int64), "duration_ms", "bytes_in", "bytes_out")
    requests = _columns(compact)
    requests["keys"] = _columns(keys.drop("key"))  # type: ignore[assignment]
    return GroundTruth(
        start=_iso(plan.start), end=_iso(plan.end), hours=hours, seed=seed, scale=scale,
        total_requests=frame.height,
        envs=[{"name": e.name, "account": e.account, "region": e.region,
               "service_network": e.sn_id, "requests": int((frame["env"] == e.name).sum())}
              for e in topo.ENVS],
        services=[{"name": s.name, "tier": s.tier, "domain": s.domain, "auth": s.auth,
                   "versions": {k: list(v) for k, v in s.versions.items()},
                   "routes": [f"{r.method} {r.template}" for r in s.routes]} for s in net.services],
        edges=frame.group_by(["caller", "service", "env"]).agg(requests=pl.len())
        .sort(["env", "caller", "service"]).rename({"service": "callee"}).to_dicts(),
        events=describe_events(net, frame, plan),
        files=files,
        counts=_columns(counts_table(frame)),
        latency=_columns(latency_table(frame)),
        requests=requests,
    )


def _iso(epoch: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
