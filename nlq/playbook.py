"""Diagnosis: "why is X failing?" runs a fixed playbook of queries and ranks what it finds.

The steps, each one guarded SQL (all shown in the answer):

1. errors and latency by version, 2. by route, 3. by caller, 4. by env, 5. by status class,
6. a per-minute timeline by version (onset of the errors, bursts, when a version started to take
   traffic), 7. the dependencies' errors and latency inside the bad period against outside it,
8. for a question about a canary, the verdict of analytics.canary.judge (it scans raw rows, so
   it runs only then, only when the service has two live versions, and only on a lake of at
   most ``exact_percentile_max_rows`` requests; above that the playbook's own version
   comparison from the rollups stands alone, to answer within seconds).

Findings are ranked by a score (how far a slice stands out, times how much of the errors it
explains). Blame needs evidence: a caller is named only when its own error ratio stands out
while the other callers are fine, a dependency only when its errors or latency rose in the same
period. The recommendation follows the top finding: a bad version -> roll it back; a burst in
the service itself -> look at the service in that period; a dependency -> look at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb

from meshlens.settings import Settings
from meshlens.timewin import Window, iso
from nlq import guard, sqlgen
from nlq.sqlgen import Aggregate

MIN_ERRORS = 4
STANDOUT = 2.0
BUCKET = timedelta(minutes=10)


@dataclass
class Finding:
    """One ranked observation of the playbook."""

    score: float
    kind: str
    text: str
    subject: str = ""

    def as_row(self, rank: int) -> list[Any]:
        return [rank, self.kind, self.subject, self.text]


class Runner:
    """Runs the playbook's queries through the guard and remembers their SQL."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, *, settings: Settings, rollups: bool) -> None:
        self.conn, self.settings, self.rollups = conn, settings, rollups
        self.sql: list[str] = []

    def rows(self, title: str, agg: Aggregate) -> list[dict[str, Any]]:
        sql = sqlgen.aggregate_sql(agg, rollups=self.rollups)
        self.sql.append(f"-- {title}\n{sql}")
        columns, rows = guard.run_guarded(self.conn, sql, settings=self.settings)
        return [dict(zip(columns, r)) for r in rows]


def diagnose(conn: duckdb.DuckDBPyConnection, plan: Any, *, settings: Settings, backend: str) -> Any:
    """Run the playbook for ``plan.service`` over ``plan.window`` and build the Answer."""
    from nlq.ask import Answer, rollups_available

    runner = Runner(conn, settings=settings, rollups=rollups_available(conn))
    window: Window = plan.window
    service = plan.service or _worst_canary_service(runner, window)
    if service is None:
        why = (f"No canary stands out in {window}: no service has a version with a clearly higher error "
               "ratio than its other versions. " if plan.slots.get("canary") else "")
        return Answer([], [], ";\n\n".join(runner.sql), "", backend=backend, window=window, intent="diagnosis",
                      clarification=why + "Which service? Name it, e.g. 'why is PaymentService failing?'")
    env = plan.slots.get("env")
    findings = run_steps(runner, service, window, env=env, slow=bool(plan.slots.get("slow")),
                         canary=bool(plan.slots.get("canary")))
    findings.sort(key=lambda f: -f.score)
    recommendation = recommend(service, findings)
    rows = [f.as_row(i + 1) for i, f in enumerate(findings)]
    summary = findings[0].text if findings else f"No error or latency problem stands out for {service}."
    explanation = f"Diagnosis of {service}{' in ' + env if env else ''}, {window}: {summary} Recommendation: {recommendation}"
    return Answer(["rank", "finding", "subject", "evidence"], rows, ";\n\n".join(runner.sql), explanation,
                  backend=backend, window=window, intent="diagnosis",
                  findings=[{"kind": f.kind, "subject": f.subject, "text": f.text, "score": round(f.score, 3)}
                            for f in findings],
                  recommendation=recommendation)


def run_steps(runner: Runner, service: str, window: Window, *, env: str | None, slow: bool,
              canary: bool = False) -> list[Finding]:
    """Every step of the playbook; returns unranked findings."""
    base = {"service": service, **({"env": env} if env else {})}
    measures = ["requests", "errors_5xx", "error_ratio", "mean_ms"]
    findings: list[Finding] = []
    versions = runner.rows("errors by version", Aggregate(window, measures, ["version"], base, order_by="errors_5xx"))
    overall = {"requests": sum(v["requests"] or 0 for v in versions),
               "errors_5xx": sum(v["errors_5xx"] or 0 for v in versions)}
    bad_version = _standout(versions, "version", overall, z=2.5)
    scope = {**base, "version": bad_version} if bad_version else base
    timeline = runner.rows("timeline by minute and version",
                           Aggregate(window, ["requests", "errors_5xx", "mean_ms"], ["minute", "version"], base))
    if bad_version:
        findings.append(_version_finding(versions, bad_version, timeline))
    routes = runner.rows("errors by route", Aggregate(window, measures, ["method", "route"], scope, order_by="errors_5xx"))
    findings += _route_finding(routes, scope_label=bad_version)
    callers = runner.rows("errors by caller", Aggregate(window, measures, ["caller"], base, order_by="errors_5xx"))
    findings += _slice_finding(callers, "caller", overall, blame=True)
    if not env:
        envs = runner.rows("errors by env", Aggregate(window, measures, ["env"], base, order_by="errors_5xx"))
        findings += _slice_finding(envs, "env", overall, blame=False)
    statuses = runner.rows("answers by status class", Aggregate(window, ["requests"], ["status_class"], base, order_by="requests"))
    burst = _burst(timeline)
    if burst:
        findings.append(_burst_finding(service, burst, timeline, callers))
    slow_period = _slow_period(timeline)
    findings += _dependency_findings(runner, service, window, burst or slow_period, env=env)
    if slow_period and (slow or not findings):
        findings.append(Finding(1.0, "latency", f"{service} was slower {_span(slow_period)}: "
                                f"mean {slow_period[2]:.0f} ms against {slow_period[3]:.0f} ms otherwise", service))
    findings += _status_note(statuses, overall)
    if canary:  # the judge reads raw rows: only when the question is about a canary
        findings += _analytics_findings(runner, service, window, env=env, versions=versions)
    return findings


# -- versions, routes, slices -------------------------------------------------------------------

def _ratio(row: dict[str, Any]) -> float:
    return float(row.get("errors_5xx") or 0) / max(float(row.get("requests") or 0), 1.0)


def _standout(rows: list[dict[str, Any]], key: str, overall: dict[str, Any], *, z: float = 3.0) -> str | None:
    """The slice whose error ratio is STANDOUT times that of the rest, with enough errors."""
    best, best_factor = None, 0.0
    for row in rows:
        rest_req = float(overall.get("requests") or 0) - float(row["requests"] or 0)
        rest_err = float(overall.get("errors_5xx") or 0) - float(row["errors_5xx"] or 0)
        if rest_req <= 0 or (row["errors_5xx"] or 0) < MIN_ERRORS or row[key] in (None, "", "unknown"):
            continue
        rest_ratio = max(rest_err / rest_req, 0.5 / rest_req)
        factor = _ratio(row) / rest_ratio
        if factor >= STANDOUT and factor > best_factor and _significant(row, rest_ratio, z=z):
            best, best_factor = row[key], factor
    return best


def _significant(row: dict[str, Any], rest_ratio: float, *, z: float) -> bool:
    """More errors than the rest's ratio explains: ``z`` standard deviations (Poisson)."""
    expected = rest_ratio * float(row["requests"] or 0)
    return float(row["errors_5xx"] or 0) - expected >= z * max(expected, 1.0) ** 0.5


def _version_finding(versions: list[dict[str, Any]], bad: str, timeline: list[dict[str, Any]]) -> Finding:
    row = next(r for r in versions if r["version"] == bad)
    others = [r for r in versions if r["version"] != bad and r["version"] not in (None, "", "unknown")]
    other_req = sum(r["requests"] for r in others) or 1
    other_ratio = sum(r["errors_5xx"] for r in others) / other_req
    factor = _ratio(row) / max(other_ratio, 1e-9)
    baseline = ", ".join(str(r["version"]) for r in others) or "the other versions"
    started = _first_seen(timeline, bad)
    onset = _first_error(timeline, bad)
    text = (f"version {bad} has {factor:.1f}x the error ratio of {baseline} "
            f"({_pct(_ratio(row))} vs {_pct(other_ratio)}, {row['errors_5xx']} of {row['requests']} requests)")
    if started:
        text += f"; {bad} started taking traffic at {_hm(started)}"
    if onset:
        text += f"; its first 5xx came at {_hm(onset)}"
    return Finding(10.0 + min(factor, 20.0), "bad version", text, bad)


def _route_finding(routes: list[dict[str, Any]], *, scope_label: str | None) -> list[Finding]:
    errors = sum(r["errors_5xx"] or 0 for r in routes)
    if errors < MIN_ERRORS:
        return []
    total = {"requests": sum(r["requests"] for r in routes), "errors_5xx": errors}
    keyed = [{**r, "key": f"{r['method']} {r['route']}"} for r in routes]
    bad = _standout(keyed, "key", total)
    if not bad:
        return []
    row = next(r for r in keyed if r["key"] == bad)
    share = (row["errors_5xx"] or 0) / errors
    where = f" of {scope_label}" if scope_label else ""
    return [Finding(5.0 + share * 5, "route", f"errors{where} concentrate on {bad}: {_pct(_ratio(row))} 5xx, "
                    f"{share:.0%} of the errors", bad)]


def _slice_finding(rows: list[dict[str, Any]], key: str, overall: dict[str, Any], *, blame: bool) -> list[Finding]:
    bad = _standout(rows, key, overall)
    if bad is None:
        if key == "caller" and len(rows) > 1 and sum(r["errors_5xx"] or 0 for r in rows) >= MIN_ERRORS:
            hit = sum(1 for r in rows if (r["errors_5xx"] or 0) > 0)
            return [Finding(0.5, "callers", f"errors are spread over {hit} of {len(rows)} callers: "
                            "not caused by one caller", "")]
        return []
    row = next(r for r in rows if r[key] == bad)
    verb = "only caller with an elevated error ratio" if blame else "stands out"
    return [Finding(3.0, key, f"{key} {bad} {verb}: {_pct(_ratio(row))} 5xx of {row['requests']} requests", str(bad))]


def _status_note(statuses: list[dict[str, Any]], overall: dict[str, Any]) -> list[Finding]:
    fives = sum(r["requests"] for r in statuses if r["status_class"] == "5xx")
    fours = sum(r["requests"] for r in statuses if r["status_class"] == "4xx")
    if not overall.get("requests"):
        return []
    return [Finding(0.2, "status", f"{fives} 5xx (errors) and {fours} 4xx (client errors, not failures) "
                    f"of {overall['requests']} requests", "")]


# -- timeline -------------------------------------------------------------------------------------

def _buckets(timeline: list[dict[str, Any]], version: str | None = None) -> dict[datetime, list[float]]:
    """(requests, errors, duration sum) per 10-minute bucket."""
    out: dict[datetime, list[float]] = {}
    for r in timeline:
        if version and r["version"] != version:
            continue
        minute: datetime = r["minute"]
        key = minute - timedelta(minutes=minute.minute % 10, seconds=minute.second)
        acc = out.setdefault(key, [0.0, 0.0, 0.0])
        acc[0] += r["requests"] or 0
        acc[1] += r["errors_5xx"] or 0
        acc[2] += (r["mean_ms"] or 0) * (r["requests"] or 0)
    return dict(sorted(out.items()))


def _first_seen(timeline: list[dict[str, Any]], version: str) -> datetime | None:
    times = [r["minute"] for r in timeline if r["version"] == version and (r["requests"] or 0) > 0]
    return min(times) if times else None


def _first_error(timeline: list[dict[str, Any]], version: str) -> datetime | None:
    times = [r["minute"] for r in timeline if r["version"] == version and (r["errors_5xx"] or 0) > 0]
    return min(times) if times else None


def _onset(timeline: list[dict[str, Any]], version: str) -> datetime | None:
    """The split that best separates a low error ratio before from a high one after."""
    buckets = list(_buckets(timeline, version).items())
    if len(buckets) < 3:
        return None
    best, best_gain = None, 0.0
    total_req = sum(b[1][0] for b in buckets)
    total_err = sum(b[1][1] for b in buckets)
    req = err = 0.0
    for i, (start, (r, e, _)) in enumerate(buckets[:-1]):
        req, err = req + r, err + e
        after_r, after_e = total_req - req, total_err - err
        if req < 5 or after_r < 5:
            continue
        gain = (after_e / after_r - err / req) * min(req, after_r)
        if gain > best_gain:
            best, best_gain = buckets[i + 1][0], gain
    return best


def _burst(timeline: list[dict[str, Any]]) -> tuple[datetime, datetime, float, float] | None:
    """A run of 10-minute buckets with an error ratio far above the rest: (start, end, ratio, rest)."""
    buckets = _buckets(timeline)
    if not buckets:
        return None
    total_r = sum(b[0] for b in buckets.values())
    total_e = sum(b[1] for b in buckets.values())
    hot = [k for k, (r, e, _) in buckets.items()
           if e >= 3 and r > 0 and e / r > max(5 * total_e / max(total_r, 1), 0.1)]
    if not hot:
        return None
    start, end = min(hot), max(hot) + BUCKET
    inside = [v for k, v in buckets.items() if start <= k < end]
    outside = [v for k, v in buckets.items() if not start <= k < end]
    ratio = sum(v[1] for v in inside) / max(sum(v[0] for v in inside), 1)
    rest = sum(v[1] for v in outside) / max(sum(v[0] for v in outside), 1)
    return start, end, ratio, rest


def _slow_period(timeline: list[dict[str, Any]]) -> tuple[datetime, datetime, float, float] | None:
    """The contiguous run of buckets slowest against the median bucket: (start, end, mean, rest)."""
    buckets = {k: v for k, v in _buckets(timeline).items() if v[0] >= 3}
    if len(buckets) < 6:
        return None
    keys = sorted(buckets)
    means = {k: buckets[k][2] / buckets[k][0] for k in keys}
    median = sorted(means.values())[len(means) // 2]
    best, best_excess, run, excess = None, 0.0, [], 0.0
    for k in keys:
        if means[k] > 1.5 * median:
            run.append(k)
            excess += (means[k] - median) * buckets[k][0]
            if excess > best_excess:
                best, best_excess = list(run), excess
        else:
            run, excess = [], 0.0
    if not best or len(best) < 2 or len(best) > len(keys) // 3:
        return None
    start, end = best[0], best[-1] + BUCKET
    inside = [v for k, v in buckets.items() if start <= k < end]
    outside = [v for k, v in buckets.items() if not start <= k < end]
    mean_in = sum(v[2] for v in inside) / max(sum(v[0] for v in inside), 1)
    mean_out = sum(v[2] for v in outside) / max(sum(v[0] for v in outside), 1)
    return start, end, mean_in, mean_out


def _burst_finding(service: str, burst: tuple[datetime, datetime, float, float], timeline: list[dict[str, Any]],
                   callers: list[dict[str, Any]]) -> Finding:
    start, end, ratio, rest = burst
    versions = sorted({str(r["version"]) for r in timeline if start <= r["minute"] < end and r["errors_5xx"]})
    n_callers = sum(1 for c in callers if (c["errors_5xx"] or 0) > 0)
    text = (f"{service} failed {_span((start, end))}: {_pct(ratio)} 5xx against {_pct(rest)} otherwise, "
            f"on version(s) {', '.join(versions) or '-'}, seen by {n_callers} caller(s): the problem is in "
            f"{service} or below it, not in one caller")
    return Finding(8.0 + min(ratio / max(rest, 1e-3), 50) / 10, "error burst", text, service)


def _dependency_findings(runner: Runner, service: str, window: Window,
                         period: tuple[datetime, datetime, float, float] | None, *, env: str | None) -> list[Finding]:
    """Dependencies whose errors or latency rose in the bad period (evidence, not guesses)."""
    if period is None:
        return []
    inside = Window(period[0], period[1])
    base = {"caller": service, **({"env": env} if env else {})}
    measures = ["requests", "errors_5xx", "error_ratio", "mean_ms"]
    during = runner.rows("dependencies during the bad period", Aggregate(inside, measures, ["service"], base))
    before = Window(window.start, period[0]) if period[0] - window.start >= period[1] - period[0] else Window(period[1], window.end)
    usual = {r["service"]: r for r in runner.rows("dependencies outside it", Aggregate(before, measures, ["service"], base))}
    out = []
    for row in during:
        ref = usual.get(row["service"])
        if not ref or (row["requests"] or 0) < 15:
            continue
        slower = (row["mean_ms"] or 0) / max(ref["mean_ms"] or 0, 1e-6)
        worse = _ratio(row) - _ratio(ref)
        if slower >= 1.8:
            out.append(Finding(9.0 + min(slower, 10) / 10, "slow dependency",
                               f"dependency {row['service']} was {slower:.1f}x slower {_span(period)} "
                               f"(mean {row['mean_ms']:.0f} ms vs {ref['mean_ms']:.0f} ms)", row["service"]))
        elif worse >= 0.1 and (row["errors_5xx"] or 0) >= MIN_ERRORS:
            out.append(Finding(8.5, "failing dependency",
                               f"dependency {row['service']} failed too {_span(period)}: {_pct(_ratio(row))} 5xx "
                               f"vs {_pct(_ratio(ref))} before", row["service"]))
    return out


def _analytics_findings(runner: Runner, service: str, window: Window, *, env: str | None,
                        versions: list[dict[str, Any]]) -> list[Finding]:
    """The canary judge's verdicts (analytics.canary), when the service runs two versions."""
    live = [v for v in versions if v["version"] not in (None, "", "unknown") and (v["requests"] or 0) > 0]
    if len(live) < 2 or _lake_requests(runner) > int(runner.settings["exact_percentile_max_rows"]):
        return []  # the judge scans raw rows: only on a lake small enough to scan in a moment
    try:
        from analytics import canary
    except ImportError:
        return []
    try:
        verdicts = canary.judge(runner.conn, service, window=window, env=env)
    except Exception:  # noqa: BLE001 - the playbook must answer even when an analytic fails
        return []
    out = []
    for v in verdicts:
        kind = getattr(v, "verdict", "")
        score = 9.5 if kind == "rollback" else 0.8
        text = f"canary judge ({getattr(v, 'env', '') or 'all envs'}): {v.canary} vs {v.baseline}: {kind}; {v.evidence}"
        out.append(Finding(score, "canary verdict", text, str(v.canary)))
    return out


def _lake_requests(runner: Runner) -> int:
    """Requests in the whole lake (from the daily rollup when built, else the raw rows)."""
    table = "edges_1d" if runner.rollups else "requests"
    column = "sum(requests)" if runner.rollups else "count(*)"
    row = runner.conn.execute(f"SELECT coalesce({column}, 0) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def _worst_canary_service(runner: Runner, window: Window) -> str | None:
    """For "why is my canary failing": the service whose non-majority version fails most."""
    rows = runner.rows("versions of every service", Aggregate(window, ["requests", "errors_5xx", "error_ratio"],
                                                              ["service", "version"], {}))
    by_service: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["version"] not in (None, "", "unknown"):
            by_service.setdefault(r["service"], []).append(r)
    best, best_factor = None, 1.0
    for name, versions in by_service.items():
        if len(versions) < 2:
            continue
        total = {"requests": sum(v["requests"] for v in versions), "errors_5xx": sum(v["errors_5xx"] for v in versions)}
        minority = min(versions, key=lambda v: v["requests"])
        rest = max(total["errors_5xx"] - minority["errors_5xx"], 0.5) / max(total["requests"] - minority["requests"], 1)
        factor = _ratio(minority) / rest
        if factor > best_factor and _significant(minority, rest, z=2.5):
            best, best_factor = name, factor
    return best


def recommend(service: str, findings: list[Finding]) -> str:
    """One recommendation that follows the strongest finding."""
    if not findings:
        return f"nothing stands out; {service} looks healthy in this window."
    top = findings[0]
    if top.kind == "bad version" or (top.kind == "canary verdict" and ": rollback;" in top.text):
        return f"roll back {service} {top.subject} (shift its traffic to the other version) and look at the failing route."
    if top.kind in ("slow dependency", "failing dependency"):
        return f"look at {top.subject}: {service}'s problem follows it."
    if top.kind == "error burst":
        return f"look at {service} itself (deployments, hosts, its own dependencies) in that period."
    if top.kind == "caller":
        return f"look at what caller {top.subject} sends; other callers are fine."
    return f"no single cause stands out; start from the top finding ({top.kind})."


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _hm(moment: datetime) -> str:
    return iso(moment)[11:16] + "Z"


def _span(period: tuple[datetime, datetime, Any, Any] | tuple[datetime, datetime]) -> str:
    return f"from {_hm(period[0])} to {_hm(period[1])}"
