"""The demo scenario: a day of a 100+ service e-commerce network as VPC Lattice access logs.

``generate(out_dir, end=..., hours=24, seed=7, scale=1.0)`` writes, deterministically (same
arguments -> byte-identical files):

- gzip'd Lattice JSON lines as S3 delivers them:
  ``AWSLogs/<account>/VpcLattice/AccessLogs/<region>/YYYY/MM/DD/HH/<account>_vpclatticeaccesslogs_<region>_<sn>_<yyyyMMddTHHmmZ>_<hash>.log.gz``
  (one file per env and half hour), prod in 111111111111/us-east-1, staging in
  222222222222/us-west-2;
- ``meshlens.toml`` (the inventory) and ``policy.toml`` (allowed callers, format in
  ``sample_logs.config_files``);
- ``ground_truth.json`` (``sample_logs.truth.GroundTruth``), also returned.

Volume: about 400,000 requests per 24 h at scale 1.0 (86% prod, 14% staging).

Planted events, at offsets from the window start S (for the 24 h test day S = 00:00 UTC):
- ``canary``: PaymentService v2 takes 10% of PaymentService prod traffic from S+09:00.
- ``canary_regression``: from S+10:30 v2 has exactly 3% 5xx against v1's 1% (PaymentService
  prod's 5xx are planted exactly: 1% per version before and after S+10:30), the extra 2% all on
  POST /v1/charges/{id}.
- ``outage``: InventoryService prod S+14:00-S+14:20, exactly 60% 5xx (503/500/504); its direct
  prod callers return extra 5xx (500/502/503) to their own callers in that window.
- ``slow_dependency``: ShippingService -> CarrierGateway in prod +400 ms (normal, sd 40)
  S+16:00-S+17:00; ShippingService's POST routes that call carriers are 400 ms slower too.
- ``policy_violation``: OrdersReporting calls PaymentService in prod all day (the policy allows
  only OrderService and CheckoutService).
- ``denied``: an unknown principal (account 444444444444) calls PaymentService in prod and
  gets 403, authDeniedReason "Service", failureReason "ClientAccessDenied", targetGroupArn and
  targetIpPort "-"; sporadic all day and a burst (x40) S+12:00-S+12:30.
- ``unknown_callers``: two principals the inventory cannot resolve (one in the prod account,
  one from a vendor account) call CatalogService, ProductService and PricingService in prod.
Windows shorter than 24 h: every offset and duration is scaled by hours/24 (rounded to whole
minutes), durations to at least 10 minutes; 24 h and longer keep the exact offsets.
``generate(..., events=...)`` plants only the named events (``EVENTS``): ``()`` gives a quiet
network, ``{"canary"}`` an A/A canary (v2 at 10% with v1's exact 1% 5xx).
Also staging has callers with no principal at all (SellerPortal, ContentService,
SchedulerService): the inventory's CIDRs name them.

``write_bench_file(path, lines=..., seed=1)`` writes plain JSON lines of the same records for
the ingest benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from meshlens.errors import ConfigError
from sample_logs import records as rec
from sample_logs import traffic
from sample_logs.config_files import write_config
from sample_logs.traffic import Net, Requests
from sample_logs.truth import GroundTruth
from sample_logs.truth_build import build_truth

__all__ = ["generate", "write_bench_file", "GroundTruth", "EVENTS", "EVENT_TIMES"]

H = 3600
EVENTS = ("canary", "canary_regression", "outage", "slow_dependency", "policy_violation",
          "denied", "unknown_callers")
"""Names of the planted events (``generate(events=...)`` picks a subset)."""


EVENT_TIMES: dict[str, tuple[int, int | None]] = {
    "canary": (9 * H, None),
    "canary_regression": (10 * H + 1800, None),
    "denied_burst": (12 * H, 1800),
    "outage": (14 * H, 1200),
    "slow_dependency": (16 * H, H),
}
"""Offset from the window start and duration (None: until the end) of each planted event."""

CANARY_SHARE = 0.10
BASE_5XX = 0.01
CANARY_5XX = 0.03
OUTAGE_5XX = 0.60
SLOW_MS = 400.0
DENIED_BURST = 40.0
REGRESSION_ROUTE = ("POST", "/v1/charges/{id}")


@dataclass(frozen=True)
class Plan:
    """Epoch-second windows [start, end) of the scenario and of each planted event."""

    start: int
    end: int
    windows: dict[str, tuple[int, int]]
    events: frozenset[str] = frozenset()

    def has(self, event: str) -> bool:
        return event in self.events


def plan_events(start: int, hours: int, events: frozenset[str] = frozenset(EVENTS)) -> Plan:
    """Place the events: exact offsets for 24 h or more, scaled by hours/24 below."""
    factor = min(1.0, hours / 24)
    end = start + hours * H
    windows = {}
    for name, (offset, duration) in EVENT_TIMES.items():
        a = start + _minutes(offset * factor)
        b = end if duration is None else min(end, a + max(600, _minutes(duration * factor)))
        windows[name] = (a, b)
    return Plan(start, end, windows, frozenset(events))


def _minutes(seconds: float) -> int:
    return int(round(seconds / 60)) * 60


def generate(out_dir: str | Path, *, end: datetime, hours: int = 24, seed: int = 7,
             scale: float = 1.0, events: Iterable[str] | None = None) -> GroundTruth:
    """Write the scenario's logs, inventory, policy and ground truth into ``out_dir``.

    ``events`` plants only the named events (see EVENTS; ``()`` for a quiet network, or
    ``{"canary"}`` for an A/A canary); None plants them all.
    """
    start_s, end_s = _window(end, hours, scale)
    chosen = _chosen(events)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = Net.build(planted=chosen)
    plan = plan_events(start_s, hours, chosen)
    rng = np.random.default_rng(seed)
    req = traffic.draw(rng, net, start=start_s, minutes=hours * 60, scale=scale,
                       multiplier=_multipliers(net, plan, hours * 60))
    apply_events(rng, net, req, plan)
    traffic.finish(rng, net, req)
    files = rec.write_files(out, rng, net, req, seed=seed)
    write_config(out, net.services)
    truth = build_truth(net, req, plan, files=files, seed=seed, scale=scale, hours=hours)
    truth.save(out / "ground_truth.json")
    return truth


def _chosen(events: Iterable[str] | None) -> frozenset[str]:
    chosen = frozenset(EVENTS if events is None else events)
    if unknown := sorted(chosen - set(EVENTS)):
        raise ConfigError(f"unknown scenario event(s) {', '.join(unknown)}; known: {', '.join(EVENTS)}")
    if "canary_regression" in chosen and "canary" not in chosen:
        raise ConfigError("the canary_regression event needs the canary event")
    return chosen


def _window(end: datetime, hours: int, scale: float) -> tuple[int, int]:
    if not isinstance(end, datetime):
        raise ConfigError(f"end must be a datetime, not {type(end).__name__}")
    if hours < 1 or scale <= 0:
        raise ConfigError(f"hours must be >= 1 and scale > 0 (got hours={hours}, scale={scale})")
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    end_s = int(end.timestamp())
    return end_s - hours * H, end_s


def _multipliers(net: Net, plan: Plan, minutes: int) -> dict[int, np.ndarray]:
    """Per-minute rate multipliers of edges: the denied caller's burst."""
    minute_t = plan.start + 60 * np.arange(minutes)
    a, b = plan.windows["denied_burst"]
    burst = np.where((minute_t >= a) & (minute_t < b), DENIED_BURST, 1.0)
    return {i: burst for i, e in enumerate(net.edges) if e.kind == "denied"}


# --- planted events -----------------------------------------------------------------------

def apply_events(rng: np.random.Generator, net: Net, req: Requests, plan: Plan) -> None:
    """Shape versions, statuses and latency with the planted events."""
    _canary(rng, net, req, plan)
    if plan.has("outage"):
        _outage(rng, net, req, plan)
    if plan.has("slow_dependency"):
        _slow_dependency(rng, net, req, plan)


def _pick(rng: np.random.Generator, mask: np.ndarray, k: int) -> np.ndarray:
    """Exactly min(k, mask.sum()) indices where ``mask`` holds, chosen at random."""
    idx = np.flatnonzero(mask)
    k = min(k, len(idx))
    return np.sort(rng.choice(idx, k, replace=False)) if k else idx[:0]


def _set_5xx(rng: np.random.Generator, req: Requests, idx: np.ndarray,
             codes: tuple[int, ...] = traffic.SUCCESS_5XX, p: tuple[float, ...] = traffic.SUCCESS_5XX_P) -> None:
    req["status"][idx] = rng.choice(codes, len(idx), p=p)


def _in(req: Requests, window: tuple[int, int]) -> np.ndarray:
    return (req["t"] >= window[0]) & (req["t"] < window[1])


def _canary(rng: np.random.Generator, net: Net, req: Requests, plan: Plan) -> None:
    pay = (req["callee"] == net.index["PaymentService"]) & (req["env"] == 0) & (req["kind"] != 2)
    coin = rng.random(len(req["t"]))
    if plan.has("canary"):
        req["version"][pay & _in(req, plan.windows["canary"]) & (coin < CANARY_SHARE)] = 1
    baseline = pay & (req["status"] >= 500)
    req["status"][baseline] = traffic.success_codes(net)[req["route"][baseline]]
    reg = plan.windows["canary_regression"]
    periods = [(plan.start, reg[0]), reg]
    for version in (0, 1):
        for period in periods:
            group = pay & (req["version"] == version) & _in(req, period)
            _set_5xx(rng, req, _pick(rng, group & (req["status"] < 400), round(BASE_5XX * group.sum())))
    if not plan.has("canary_regression"):
        return
    v2_after = pay & (req["version"] == 1) & _in(req, reg)
    extra = round((CANARY_5XX - BASE_5XX) * v2_after.sum())
    on_route = v2_after & (req["route"] == route_id(net, "PaymentService", *REGRESSION_ROUTE))
    _set_5xx(rng, req, _pick(rng, on_route & (req["status"] < 400), extra))


def route_id(net: Net, service: str, method: str, template: str) -> int:
    """Index of a route in ``net.routes``."""
    s = net.index[service]
    return next(k for k, (i, r) in enumerate(net.routes)
                if i == s and r.method == method and r.template == template)


OUTAGE_CODES = ((503, 500, 504), (0.7, 0.2, 0.1))
CALLER_CODES = ((500, 502, 503), (0.4, 0.3, 0.3))


def outage_callers(net: Net) -> dict[str, float]:
    """Direct prod callers of InventoryService and the extra 5xx ratio they return in the outage."""
    return {e.caller: round(min(0.45, OUTAGE_5XX * e.fanout * 0.75), 4) for e in net.edges
            if e.callee == "InventoryService" and e.env == "prod" and e.kind == "normal"}


def _outage(rng: np.random.Generator, net: Net, req: Requests, plan: Plan) -> None:
    window = plan.windows["outage"]
    hit = (req["callee"] == net.index["InventoryService"]) & (req["env"] == 0) & _in(req, window)
    failed = hit & (req["status"] >= 500)
    req["status"][failed] = traffic.success_codes(net)[req["route"][failed]]
    idx = _pick(rng, hit, round(OUTAGE_5XX * hit.sum()))
    _set_5xx(rng, req, idx, *OUTAGE_CODES)
    status = req["status"][idx]
    req["duration"][idx] = np.where(status == 503, rng.uniform(1, 8, len(idx)),
                                    np.where(status == 504, rng.uniform(2000, 5000, len(idx)),
                                             req["duration"][idx]))
    for caller, ratio in outage_callers(net).items():
        inbound = (req["callee"] == net.index[caller]) & (req["env"] == 0) & _in(req, window)
        _set_5xx(rng, req, _pick(rng, inbound & (req["status"] < 500), round(ratio * inbound.sum())),
                 *CALLER_CODES)


def _slow_dependency(rng: np.random.Generator, net: Net, req: Requests, plan: Plan) -> None:
    window = plan.windows["slow_dependency"]
    ship, carrier = net.index["ShippingService"], net.index["CarrierGateway"]
    prod = (req["env"] == 0) & _in(req, window)
    edge = prod & (req["caller"] == ship) & (req["callee"] == carrier)
    routes = [route_id(net, "ShippingService", "POST", t) for t in ("/v1/shipments", "/v1/rates/quote")]
    inbound = prod & (req["callee"] == ship) & np.isin(req["route"], routes)
    for mask in (edge, inbound):
        req["duration"][mask] += np.maximum(250.0, rng.normal(SLOW_MS, 40.0, int(mask.sum())))


# --- the benchmark file -------------------------------------------------------------------

BENCH_LINES_PER_DAY = 200_000


def write_bench_file(path: str | Path, *, lines: int, seed: int = 1) -> Path:
    """Write ``lines`` plain (uncompressed) Lattice JSON lines of realistic traffic to ``path``.

    Baseline traffic (the planted edges, no planted events), about 200,000 lines per
    simulated day ending 2026-11-11, days in order, both envs interleaved in time order.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = Net.build()
    rng = np.random.default_rng(seed)
    days = max(1, -(-lines // BENCH_LINES_PER_DAY))
    first = int(datetime(2026, 11, 11, tzinfo=timezone.utc).timestamp()) - days * 86400
    scale = BENCH_LINES_PER_DAY * 1.05 / traffic.BASE_REQUESTS_PER_DAY
    written, day = 0, 0
    with out.open("wb") as fh:
        while written < lines:
            req = traffic.draw(rng, net, start=first + day * 86400, minutes=1440, scale=scale, multiplier={})
            traffic.finish(rng, net, req)
            quota = BENCH_LINES_PER_DAY if day < days - 1 else lines - written
            order = np.argsort(req["t"], kind="stable")[:min(quota, lines - written)]
            fh.write(rec.ndjson(rec.frame(rng, net, {k: v[order] for k, v in req.items()})))
            written += len(order)
            day += 1
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m sample_logs.scenario OUT_DIR [--end ISO] [--hours] [--seed] [--scale]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sample_logs.scenario", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--end", default=None, help="window end, ISO-8601 UTC (default: this hour)")
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    end = (datetime.fromisoformat(args.end.replace("Z", "+00:00")) if args.end
           else datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0))
    truth = generate(args.out_dir, end=end, hours=args.hours, seed=args.seed, scale=args.scale)
    print(f"{truth.total_requests:,} requests in {len(truth.files)} files, {truth.start} to {truth.end}")
    for event in truth.events:
        print(f"  planted: {event['description']}")


if __name__ == "__main__":
    main()
