"""The planted events as the ground truth describes them: exact UTC times and measured numbers.

Every event is a dict with ``kind``, ``env``, ``service``, ``start`` and ``end`` (ISO-8601
``...Z``, half-open) plus numbers measured from the requests actually written, so that tests
can compare with what the product finds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from sample_logs.topology import UNKNOWN_PRINCIPALS
from sample_logs.traffic import Net

if TYPE_CHECKING:
    from sample_logs.scenario import Plan


def _iso(epoch: Any) -> str:
    from sample_logs.truth_build import _iso as iso

    return iso(int(epoch))


def _iso_int(value: Any) -> int:
    return int(value)


def _ratio_5xx(frame: pl.DataFrame) -> float:
    return float((frame["status"] >= 500).sum() / frame.height) if frame.height else 0.0


def _between(frame: pl.DataFrame, window: tuple[int, int]) -> pl.DataFrame:
    return frame.filter((pl.col("ts") >= window[0]) & (pl.col("ts") < window[1]))


def describe_events(net: Net, frame: pl.DataFrame, plan: Plan) -> list[dict[str, Any]]:
    """Every planted event, with its window and measured numbers."""
    prod = frame.filter(pl.col("env") == "prod")
    describe = {"canary": lambda: _canary(prod, plan), "canary_regression": lambda: _regression(prod, plan),
                "outage": lambda: _outage(net, prod, plan), "slow_dependency": lambda: _slow(prod, plan),
                "policy_violation": lambda: _violation(prod), "denied": lambda: _denied(prod, plan),
                "unknown_callers": lambda: _unknown(prod, plan)}
    return [_describe(describe[name]()) for name in describe if plan.has(name)]


def _describe(event: dict[str, Any]) -> dict[str, Any]:
    """Put a one-sentence ``description`` right after ``kind``."""
    text = DESCRIPTIONS[event["kind"]].format(**event)
    return {"kind": event["kind"], "description": text, **{k: v for k, v in event.items() if k != "kind"}}


DESCRIPTIONS = {
    "canary": "PaymentService v2 takes {traffic_share:.0%} of prod traffic from {start}",
    "canary_regression": ("PaymentService v2 has {ratio_5xx_v2:.1%} 5xx vs v1 {ratio_5xx_v1:.1%} from {start}, "
                          "extra errors on {method} {route}"),
    "outage": "InventoryService prod outage {start} to {end}: {ratio_5xx:.0%} 5xx, its callers fail too",
    "slow_dependency": "ShippingService -> CarrierGateway +{added_ms:.0f} ms in prod {start} to {end}",
    "policy_violation": "OrdersReporting calls PaymentService in prod ({requests} requests), not allowed by policy",
    "denied": "{requests} requests by an unknown principal denied (403, Service) on PaymentService",
    "unknown_callers": "{requests} prod requests from principals the inventory cannot resolve",
}


def _canary(prod: pl.DataFrame, plan: Plan) -> dict[str, Any]:
    from sample_logs.scenario import CANARY_SHARE

    a, b = plan.windows["canary"]
    pay = _between(prod.filter((pl.col("service") == "PaymentService") & pl.col("version").is_not_null()), (a, b))
    v2 = int((pay["version"] == "v2").sum())
    return {"kind": "canary", "env": "prod", "service": "PaymentService", "version": "v2",
            "baseline": "v1", "start": _iso(a), "end": _iso(b), "traffic_share": CANARY_SHARE,
            "requests_v1": pay.height - v2, "requests_v2": v2,
            "measured_share": round(v2 / pay.height, 4) if pay.height else 0.0}


def _regression(prod: pl.DataFrame, plan: Plan) -> dict[str, Any]:
    from sample_logs.scenario import BASE_5XX, CANARY_5XX, REGRESSION_ROUTE

    a, b = plan.windows["canary_regression"]
    pay = _between(prod.filter(pl.col("service") == "PaymentService"), (a, b))
    v1, v2 = pay.filter(pl.col("version") == "v1"), pay.filter(pl.col("version") == "v2")
    on_route = (pl.col("method") == REGRESSION_ROUTE[0]) & (pl.col("route") == REGRESSION_ROUTE[1])
    r1, r2 = _ratio_5xx(v1), _ratio_5xx(v2)
    return {"kind": "canary_regression", "env": "prod", "service": "PaymentService",
            "version": "v2", "baseline": "v1", "start": _iso(a), "end": _iso(b),
            "method": REGRESSION_ROUTE[0], "route": REGRESSION_ROUTE[1],
            "planted_5xx_ratio_v1": BASE_5XX, "planted_5xx_ratio_v2": CANARY_5XX,
            "requests_v1": v1.height, "requests_v2": v2.height,
            "errors_v1": int((v1["status"] >= 500).sum()), "errors_v2": int((v2["status"] >= 500).sum()),
            "ratio_5xx_v1": round(r1, 5), "ratio_5xx_v2": round(r2, 5),
            "ratio_5xx_v1_route": round(_ratio_5xx(v1.filter(on_route)), 5),
            "ratio_5xx_v2_route": round(_ratio_5xx(v2.filter(on_route)), 5),
            "error_ratio_multiple": round(r2 / r1, 3) if r1 else None}


def _outage(net: Net, prod: pl.DataFrame, plan: Plan) -> dict[str, Any]:
    from sample_logs.scenario import OUTAGE_5XX, outage_callers

    w = plan.windows["outage"]
    inv = _between(prod.filter(pl.col("service") == "InventoryService"), w)
    callers = outage_callers(net)
    measured = {c: round(_ratio_5xx(_between(prod.filter(pl.col("service") == c), w)), 4) for c in callers}
    return {"kind": "outage", "env": "prod", "service": "InventoryService", "start": _iso(w[0]),
            "end": _iso(w[1]), "planted_5xx_ratio": OUTAGE_5XX, "requests": inv.height,
            "errors_5xx": int((inv["status"] >= 500).sum()), "ratio_5xx": round(_ratio_5xx(inv), 4),
            "callers": sorted(callers), "callers_extra_5xx_ratio": callers,
            "callers_measured_5xx_ratio": measured}


def _slow(prod: pl.DataFrame, plan: Plan) -> dict[str, Any]:
    from sample_logs.scenario import SLOW_MS

    w = plan.windows["slow_dependency"]
    edge = prod.filter((pl.col("caller") == "ShippingService") & (pl.col("service") == "CarrierGateway"))
    during = _between(edge, w)
    before = edge.filter(pl.col("ts") < w[0])
    med = lambda f: float(np.percentile(f["duration_ms"].to_numpy(), 50, method="lower")) if f.height else None  # noqa: E731
    return {"kind": "slow_dependency", "env": "prod", "caller": "ShippingService",
            "service": "CarrierGateway", "start": _iso(w[0]), "end": _iso(w[1]),
            "added_ms": SLOW_MS, "requests": during.height, "p50_ms_before": med(before),
            "p50_ms_during": med(during), "also_slower": "ShippingService POST /v1/shipments, POST /v1/rates/quote"}


def _first_last(frame: pl.DataFrame) -> dict[str, Any]:
    if frame.height == 0:
        return {"requests": 0, "first": None, "last": None}
    return {"requests": frame.height, "first": _iso(frame["ts"].min()), "last": _iso(frame["ts"].max())}


def _violation(prod: pl.DataFrame) -> dict[str, Any]:
    calls = prod.filter((pl.col("caller") == "OrdersReporting") & (pl.col("service") == "PaymentService"))
    span = _first_last(calls)
    return {"kind": "policy_violation", "env": "prod", "caller": "OrdersReporting",
            "service": "PaymentService", "allowed_callers": ["OrderService", "CheckoutService"],
            "start": span["first"], "end": _iso(_iso_int(calls["ts"].max()) + 1) if calls.height else None,
            **span}


def _denied(prod: pl.DataFrame, plan: Plan) -> dict[str, Any]:
    calls = prod.filter(pl.col("status") == 403)
    burst = plan.windows["denied_burst"]
    span = _first_last(calls)
    return {"kind": "denied", "env": "prod", "service": "PaymentService", "caller": "unknown",
            "principal": UNKNOWN_PRINCIPALS["denied"], "status": 403, "auth_denied_reason": "Service",
            "failure_reason": "ClientAccessDenied", "version": None,
            "start": span["first"], "end": _iso(_iso_int(calls["ts"].max()) + 1) if calls.height else None,
            "burst_start": _iso(burst[0]), "burst_end": _iso(burst[1]),
            "burst_requests": _between(calls, burst).height, **span}


def _unknown(prod: pl.DataFrame, plan: Plan) -> dict[str, Any]:
    calls = prod.filter((pl.col("caller") == "unknown") & (pl.col("status") != 403))
    by_service = calls.group_by("service").agg(requests=pl.len()).sort("service")
    return {"kind": "unknown_callers", "env": "prod", "service": None, "caller": "unknown",
            "principals": [UNKNOWN_PRINCIPALS["legacy"], UNKNOWN_PRINCIPALS["vendor"]],
            "services": dict(zip(by_service["service"].to_list(), by_service["requests"].to_list())),
            "start": _iso(plan.start), "end": _iso(plan.end), **_first_last(calls)}
