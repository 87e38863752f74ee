"""Vectorized traffic: per-minute request counts per edge, routes, versions, statuses, latency.

``Net`` turns the topology into index arrays; ``draw`` returns one numpy array per request
attribute (a ``Requests`` dict), sorted by (env, startTime). Baseline only: the planted
events are applied afterwards by ``sample_logs.scenario``.

Traffic shape: prod follows a diurnal sine peaking at 15:00 UTC (trough at 03:00, about a
third of the peak); staging follows working hours (08:00-18:00 UTC) over a low floor. Every
minute gets multiplicative log-normal noise, every edge Poisson counts around its share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sample_logs import topology as topo

Requests = dict[str, np.ndarray]

BASE_REQUESTS_PER_DAY = 400_000
"""Requests of the whole scenario (both envs) per 24 h at scale 1.0."""

SUCCESS_5XX = (500, 502, 503, 504)
SUCCESS_5XX_P = (0.5, 0.15, 0.25, 0.1)


@dataclass
class Net:
    """The topology as index arrays."""

    services: list[topo.Service]
    edges: list[topo.Edge]
    rates: np.ndarray
    index: dict[str, int]
    routes: list[tuple[int, topo.Route]]  # (service index, route)
    edge_routes: list[tuple[np.ndarray, np.ndarray]]  # per edge: route ids, probabilities

    @classmethod
    def build(cls, *, planted: frozenset[str] | None = None) -> Net:
        """The demo network (``planted``: which planted edges to include, None for all)."""
        svcs = topo.services()
        edge_list = topo.edges(svcs, planted=planted)
        index = {s.name: i for i, s in enumerate(svcs)}
        routes = [(i, r) for i, s in enumerate(svcs) for r in s.routes]
        return cls(svcs, edge_list, np.array(topo.edge_rates(edge_list)), index, routes,
                   [_edge_routes(e, index, routes) for e in edge_list])

    def env_index(self, name: str) -> int:
        return [e.name for e in topo.ENVS].index(name)

    def edge_array(self, attr: str) -> np.ndarray:
        """Per-edge integer attribute: caller/callee index (-1 unknown), env, kind code."""
        if attr == "caller":
            return np.array([self.index.get(e.caller, -1) for e in self.edges])
        if attr == "callee":
            return np.array([self.index[e.callee] for e in self.edges])
        if attr == "env":
            return np.array([self.env_index(e.env) for e in self.edges])
        return np.array([("normal", "unknown", "denied").index(e.kind) for e in self.edges])

    def route_array(self, attr: str) -> np.ndarray:
        """Per-route attribute (median_ms, sigma, req_bytes, resp_bytes, p4xx)."""
        return np.array([getattr(r, attr) for _, r in self.routes], dtype=float)


def _edge_routes(edge: topo.Edge, index: dict[str, int],
                 routes: list[tuple[int, topo.Route]]) -> tuple[np.ndarray, np.ndarray]:
    callee = index[edge.callee]
    ids = [k for k, (s, r) in enumerate(routes)
           if s == callee and (not edge.routes or f"{r.method} {r.template}" in edge.routes)]
    weights = np.array([routes[k][1].weight for k in ids])
    return np.array(ids), weights / weights.sum()


def shape(env: str, hour_of_day: np.ndarray) -> np.ndarray:
    """Relative traffic by UTC hour of day, mean 1 over a day."""
    if env == "prod":
        return 1.0 + 0.5 * np.sin(2 * np.pi * (hour_of_day - 9.0) / 24)
    working = 1 / (1 + np.exp(-(hour_of_day - 8) * 2)) * 1 / (1 + np.exp((hour_of_day - 18) * 2))
    return (0.35 + working) / 0.7504  # mean of (0.35 + working) over a day


def draw(rng: np.random.Generator, net: Net, *, start: int, minutes: int, scale: float,
         multiplier: dict[int, np.ndarray]) -> Requests:
    """Baseline requests of every edge; ``multiplier[edge]`` scales an edge per minute."""
    minute_t = start + 60 * np.arange(minutes, dtype=np.int64)
    hour_of_day = (minute_t % 86400) / 3600
    per_minute_total = BASE_REQUESTS_PER_DAY * scale / 1440
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for env in topo.ENVS:
        noise = rng.lognormal(0.0, 0.08, minutes)
        volume = per_minute_total * env.share * shape(env.name, hour_of_day) * noise
        ids = [i for i, e in enumerate(net.edges) if e.env == env.name]
        weights = net.rates[ids] / net.rates[ids].sum()
        for i, w in zip(ids, weights):
            lam = volume * w * multiplier.get(i, 1.0)
            parts.append(_edge_requests(rng, net, i, lam, minute_t))
    t = np.concatenate([p[0] for p in parts])
    edge = np.concatenate([p[1] for p in parts])
    route = np.concatenate([p[2] for p in parts])
    return _attributes(rng, net, t, edge, route)


def _edge_requests(rng: np.random.Generator, net: Net, i: int, lam: np.ndarray,
                   minute_t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = rng.poisson(lam)
    n = int(counts.sum())
    t = np.repeat(minute_t, counts) + rng.integers(0, 60, n)
    ids, probs = net.edge_routes[i]
    route = ids[rng.choice(len(ids), size=n, p=probs)] if n else ids[:0]
    return t, np.full(n, i, dtype=np.int32), route.astype(np.int32)


def _attributes(rng: np.random.Generator, net: Net, t: np.ndarray, edge: np.ndarray,
                route: np.ndarray) -> Requests:
    """Sort by (env, t) and add the per-request baseline attributes."""
    env = net.edge_array("env")[edge]
    order = np.lexsort((t, env))
    t, edge, route, env = t[order], edge[order], route[order], env[order]
    n = len(t)
    req: Requests = {"t": t, "edge": edge, "route": route, "env": env,
                     "caller": net.edge_array("caller")[edge], "callee": net.edge_array("callee")[edge],
                     "kind": net.edge_array("kind")[edge]}
    req["version"] = np.where(req["kind"] == 2, 2, 0).astype(np.int8)
    req["status"] = _statuses(rng, net, req)
    req["duration"] = _durations(rng, net, req)
    req["session"] = rng.integers(0, 3, n).astype(np.int8)
    req["src_host"] = rng.integers(10, 250, n).astype(np.int16)
    req["src_port"] = rng.integers(32768, 61000, n).astype(np.int32)
    req["tgt_host"] = rng.integers(0, 6, n).astype(np.int8)
    return req


def _statuses(rng: np.random.Generator, net: Net, req: Requests) -> np.ndarray:
    n = len(req["t"])
    methods = np.array([r.method for _, r in net.routes])[req["route"]]
    is4 = rng.random(n) < net.route_array("p4xx")[req["route"]]
    is5 = ~is4 & (rng.random(n) < _service_5xx(net)[req["callee"]])
    write = np.isin(methods, ("POST", "PUT", "PATCH"))
    code4 = np.where(write, rng.choice([400, 409, 422], n, p=[0.6, 0.2, 0.2]),
                     rng.choice([404, 429, 401], n, p=[0.85, 0.1, 0.05]))
    code5 = rng.choice(SUCCESS_5XX, n, p=SUCCESS_5XX_P)
    status = np.where(is4, code4, np.where(is5, code5, success_codes(net)[req["route"]]))
    return np.where(req["kind"] == 2, 403, status).astype(np.int16)


def success_codes(net: Net) -> np.ndarray:
    """200; 201 for a POST that creates (ends in a collection, not an id or a verb); 204 for DELETE."""
    codes = []
    for _, r in net.routes:
        last = r.pattern.rsplit("/", 1)[-1]
        creates = r.method == "POST" and not last.startswith("{") and last not in VERB_ENDINGS
        codes.append(204 if r.method == "DELETE" else 201 if creates else 200)
    return np.array(codes, dtype=np.int16)


VERB_ENDINGS = frozenset({"quote", "authorize", "token", "introspect", "batch", "rates", "labels",
                          "confirm", "graphql"})


def _service_5xx(net: Net) -> np.ndarray:
    """Baseline 5xx ratio per service: 0.1% to 0.8% (PaymentService's is planted exactly)."""
    return np.array([0.001 + (int(topo.hid("5xx/" + s.name, 4), 16) % 8) / 1000 for s in net.services])


def _durations(rng: np.random.Generator, net: Net, req: Requests) -> np.ndarray:
    """Log-normal milliseconds per route, staging 15% slower; denied requests 1-4 ms."""
    median = net.route_array("median_ms")[req["route"]] * np.where(req["env"] == 1, 1.15, 1.0)
    sigma = net.route_array("sigma")[req["route"]]
    d = rng.lognormal(np.log(median), sigma)
    return np.where(req["kind"] == 2, rng.uniform(1, 4, len(d)), d)


def finish(rng: np.random.Generator, net: Net, req: Requests) -> None:
    """Integer durations and the byte counts, once the events have shaped status and latency."""
    n = len(req["t"])
    req["duration"] = np.maximum(1, np.rint(req["duration"])).astype(np.int64)
    req_bytes = net.route_array("req_bytes")[req["route"]]
    resp_bytes = net.route_array("resp_bytes")[req["route"]]
    req["bytes_in"] = np.rint(rng.lognormal(np.log(req_bytes), 0.35)).astype(np.int64)
    ok = rng.lognormal(np.log(resp_bytes), 0.5)
    small = rng.lognormal(np.log(170), 0.25, n)
    status = req["status"]
    out = np.where((status >= 400) | (status == 204), small, ok)
    req["bytes_out"] = np.rint(out).astype(np.int64)
    extra = rng.integers(0, 3, n)
    rtt = np.minimum(req["duration"], 1 + req["bytes_in"] // 8000 + extra)
    req["rtt"] = np.where(req["kind"] == 2, 0, rtt)
    rft = np.maximum(0, req["duration"] - rtt - rng.integers(0, 3, n))
    req["rft"] = np.where(req["kind"] == 2, 0, rft)
