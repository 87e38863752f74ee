"""The canary judge: compare a canary version with its baseline over the same minutes.

The test (valid however often it is looked at)
    Per minute t the baseline served n_b requests with e_b failures and the canary n_c with e_c.
    If failures are Poisson with a common, arbitrarily varying minute rate lambda_t (the whole
    service has a bad minute, traffic swings, autocorrelation) and the canary's rate is
    r * lambda_t, then given m_t = e_b + e_c the canary's share is binomial with
    theta_t(r) = r n_c / (r n_c + n_b). The minute rate cancels: shared shocks and autocorrelated
    traffic do not bias the test. Each minute's conditional likelihood multiplies; mixing the
    likelihood ratio over a normal prior on log r gives, for every r0, a nonnegative martingale
    under r = r0, so by Ville's inequality {r0 : mixture LR(r0) < 1/alpha} is a confidence
    sequence for r valid at every minute at once (Robbins' method of mixtures). Extra-binomial
    noise (bursts within one version) is absorbed by tempering the log-likelihood with an
    overdispersion factor phi >= 1, estimated from 5-minute blocks (Pearson chi-square at the
    fitted ratio, shrunk towards 1).
    The same test runs on "slow" counts: requests slower than the pooled p99 of their route
    (pooled over both versions, so identical versions are exchangeable).

Verdicts (alpha split by Bonferroni over the metrics and the overall + per-route tests)
    rollback          some test's lower confidence bound on r is above 1 (the canary is worse)
    promote           every overall upper bound is below ``promote_ratio`` with enough samples
    continue          neither yet
    insufficient_data the minimum-sample gate is not met (too few canary requests or minutes)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

import duckdb
import numpy as np
import polars as pl

from analytics import sketch
from meshlens.errors import MeshlensError, UnknownNameError
from meshlens.timewin import Window, iso

LOG_GRID = np.linspace(math.log(1 / 50), math.log(50), 241)
WEIGHT_LADDER = (1, 5, 10, 25, 50, 100)


@dataclass(frozen=True)
class JudgeConfig:
    """Knobs of the judge."""

    alpha: float = 0.01
    prior_sd: float = 1.0
    promote_ratio: float = 1.5
    min_canary_requests: int = 200
    min_minutes: int = 10
    min_promote_requests: int = 2_000
    block_minutes: int = 5
    share_tolerance: float = 0.25


@dataclass(frozen=True)
class SequentialResult:
    """A confidence sequence on the rate ratio r, evaluated at every minute."""

    ratio: np.ndarray  # point estimate per minute
    lower: np.ndarray
    upper: np.ndarray
    phi: float


@dataclass
class CanaryVerdict:
    """The judge's answer for one (service, baseline, canary)."""

    service: str
    env: str | None
    baseline: str
    canary: str
    verdict: str
    evidence: str
    decided_at: datetime | None
    since: datetime | None
    start: datetime | None
    end: datetime | None
    overall: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    traffic: dict[str, Any] = field(default_factory=dict)
    next_weights: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        when = lambda t: iso(t) if t else None  # noqa: E731
        return {"service": self.service, "env": self.env, "baseline": self.baseline,
                "canary": self.canary, "verdict": self.verdict, "evidence": self.evidence,
                "decided_at": when(self.decided_at), "since": when(self.since),
                "start": when(self.start), "end": when(self.end), "overall": self.overall,
                "routes": self.routes, "traffic": self.traffic, "next_weights": self.next_weights}


# --------------------------------------------------------------------------------------
# The sequential test (pure numpy; the benchmark calls it on simulated minutes)
# --------------------------------------------------------------------------------------
def loglik_path(n_b: np.ndarray, e_b: np.ndarray, n_c: np.ndarray, e_c: np.ndarray, *,
                block: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative conditional log-likelihood per (minute, ratio on LOG_GRID), tempered by phi_t."""
    live = (n_b > 0) & (n_c > 0)
    nb, nc = np.where(live, n_b, 1.0), np.where(live, n_c, 0.0)
    eb, ec = np.where(live, e_b, 0.0), np.where(live, e_c, 0.0)
    r = np.exp(LOG_GRID)
    theta = (r[None, :] * nc[:, None]) / (r[None, :] * nc[:, None] + nb[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        ll = ec[:, None] * np.log(np.where(theta > 0, theta, 1.0)) + eb[:, None] * np.log1p(-theta)
    ll = ll - ll[:, [int(np.argmin(np.abs(LOG_GRID)))]]  # relative to r = 1: each row sums to a log LR
    cum = np.cumsum(ll, axis=0)
    phis = causal_overdispersion(nb, eb, nc, ec, cum, block=block)
    return cum, phis


def confidence_sequence(n_b: np.ndarray, e_b: np.ndarray, n_c: np.ndarray, e_c: np.ndarray, *,
                        alpha: float, prior_sd: float = 1.0, block: int = 5,
                        path: tuple[np.ndarray, np.ndarray] | None = None) -> SequentialResult:
    """Anytime-valid (1 - alpha) confidence sequence on the canary/baseline failure-rate ratio."""
    cum, phis = path if path is not None else loglik_path(n_b, e_b, n_c, e_c, block=block)
    cum = cum / phis[:, None]
    r = np.exp(LOG_GRID)
    weights = np.exp(-0.5 * (LOG_GRID / prior_sd) ** 2)
    weights /= weights.sum()
    log_mix = _logsumexp(cum + np.log(weights)[None, :])
    outside = (log_mix[:, None] - cum) >= math.log(1 / alpha)  # r0 rejected at minute t
    lower, upper = _bounds(outside, r)
    ratio = r[np.argmax(cum, axis=1)] if len(cum) else np.array([])
    return SequentialResult(ratio=ratio, lower=lower, upper=upper, phi=float(phis[-1]) if len(phis) else 1.0)


def worse_evidence(n_b: np.ndarray, e_b: np.ndarray, n_c: np.ndarray, e_c: np.ndarray, *,
                   prior_sd: float = 1.0, block: int = 5, restart_minutes: int = 30,
                   path: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """log of an e-process against "the canary fails no more often than the baseline" (r <= 1).

    A mixture (half-normal prior on log r > 0) of likelihood ratios against r = 1, started
    afresh every ``restart_minutes`` and averaged with weights 1/((k+1)(k+2)) (summing to 1), so a
    regression that begins hours into the canary is not diluted by the good hours before it.
    Each started mixture is a nonnegative martingale with mean 1 under r = 1 (and a
    supermartingale under r < 1), so their average is too: rejecting when it exceeds 1/alpha is
    valid at every minute at once (Ville). ``path``: loglik_path's answer, when already computed.
    """
    cum, phis = path if path is not None else loglik_path(n_b, e_b, n_c, e_c, block=block)
    up = LOG_GRID > 0
    weights = np.exp(-0.5 * (LOG_GRID[up] / prior_sd) ** 2)
    log_w = np.log(weights / weights.sum())
    t_count = len(cum)
    out = np.full(t_count, -np.inf)
    for k, start in enumerate(range(0, t_count, restart_minutes)):
        base = cum[start - 1, up] if start > 0 else np.zeros(int(up.sum()))
        part = (cum[start:, up] - base[None, :]) / phis[start:, None]
        log_mix = _logsumexp(part + log_w[None, :]) - math.log((k + 1) * (k + 2))
        out[start:] = np.logaddexp(out[start:], log_mix)
    starts = len(range(0, t_count, restart_minutes))
    not_started = 1.0 - sum(1.0 / ((k + 1) * (k + 2)) for k in range(starts))  # weight of later starts: still 1
    return np.logaddexp(out, math.log(max(not_started, 1e-300)))


def causal_overdispersion(nb: np.ndarray, eb: np.ndarray, nc: np.ndarray, ec: np.ndarray,
                          cum: np.ndarray, *, block: int) -> np.ndarray:
    """Per minute, the overdispersion factor estimated from the blocks completed so far.

    The same numbers as calling ``overdispersion`` on every prefix of whole blocks, computed for
    all prefixes at once (one blocks-by-prefixes matrix instead of a Python loop).
    """
    phis = np.ones(len(nb))
    count = len(nb) // block
    if count < 3:
        return phis
    size = count * block
    bnb, beb, bnc, bec = (x[:size].reshape(-1, block).sum(axis=1) for x in (nb, eb, nc, ec))
    ends = np.arange(3, count + 1)  # prefixes of 3.. blocks
    r_hat = np.exp(LOG_GRID[np.argmax(cum[ends * block - 1], axis=1)])[:, None]
    m = beb + bec
    ok = ((m > 0) & (bnb > 0) & (bnc > 0))[None, :] & (np.arange(count)[None, :] < ends[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = r_hat * bnc[None, :] / (r_hat * bnc[None, :] + bnb[None, :])
        var = m[None, :] * theta * (1 - theta)
        terms = (bec[None, :] - m[None, :] * theta) ** 2 / np.maximum(var, 1e-9)
    chi2 = np.where(ok, terms, 0.0).sum(axis=1)
    n_ok = ok.sum(axis=1)
    phi = np.where(n_ok >= 3, np.maximum(1.0, (chi2 + 10.0) / (n_ok - 1 + 10.0)), 1.0)
    phis[3 * block - 1:size] = np.repeat(phi, block)[: size - (3 * block - 1)]
    phis[size:] = phi[-1]
    return phis


def overdispersion(nb: np.ndarray, eb: np.ndarray, nc: np.ndarray, ec: np.ndarray,
                   final_ll: np.ndarray, *, block: int, shrink: float = 10.0) -> float:
    """Pearson dispersion of the conditional binomial on blocks of minutes, shrunk towards 1, at least 1."""
    if len(nb) < block * 3:
        return 1.0
    r_hat = math.exp(LOG_GRID[int(np.argmax(final_ll))])
    size = len(nb) // block * block
    sums = [x[:size].reshape(-1, block).sum(axis=1) for x in (nb, eb, nc, ec)]
    bnb, beb, bnc, bec = sums
    m = beb + bec
    ok = (m > 0) & (bnb > 0) & (bnc > 0)
    if ok.sum() < 3:
        return 1.0
    theta = r_hat * bnc[ok] / (r_hat * bnc[ok] + bnb[ok])
    var = m[ok] * theta * (1 - theta)
    chi2 = float(np.sum((bec[ok] - m[ok] * theta) ** 2 / np.maximum(var, 1e-9)))
    df = int(ok.sum()) - 1
    return max(1.0, (chi2 + shrink) / (df + shrink))


def _logsumexp(matrix: np.ndarray) -> np.ndarray:
    top = matrix.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(matrix - top).sum(axis=1, keepdims=True)))[:, 0]


def _bounds(outside: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest grid ratio still inside the sequence at every minute (running intersection)."""
    inside = ~outside
    any_in = inside.any(axis=1)
    lo_idx = np.where(any_in, inside.argmax(axis=1), 0)
    hi_idx = np.where(any_in, len(r) - 1 - inside[:, ::-1].argmax(axis=1), len(r) - 1)
    lower = np.maximum.accumulate(r[lo_idx]) if len(r[lo_idx]) else r[lo_idx]
    upper = np.minimum.accumulate(r[hi_idx]) if len(r[hi_idx]) else r[hi_idx]
    return lower, upper


def first_true(flags: np.ndarray) -> int | None:
    """Index of the first True, or None."""
    hits = np.flatnonzero(flags)
    return int(hits[0]) if len(hits) else None


def change_point(n_b: np.ndarray, e_b: np.ndarray, n_c: np.ndarray, e_c: np.ndarray, ratio: float) -> int:
    """CUSUM estimate of the minute the canary's excess began (argmin of the cumulative log LR)."""
    if ratio <= 1 or len(n_b) == 0:
        return 0
    live = (n_b > 0) & (n_c > 0)
    theta0 = np.where(live, n_c / np.maximum(n_b + n_c, 1), 0.0)
    theta1 = np.where(live, ratio * n_c / np.maximum(ratio * n_c + n_b, 1e-9), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(live, e_c * np.log(theta1 / np.where(theta0 > 0, theta0, 1))
                        + e_b * np.log((1 - theta1) / (1 - theta0)), 0.0)
    path = np.concatenate([[0.0], np.cumsum(step)])
    return int(np.argmin(path[: int(np.argmax(path)) + 1]))


# --------------------------------------------------------------------------------------
# Reading the lake
# --------------------------------------------------------------------------------------
def live_versions(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str | None = None,
                  env: str | None = None, live_minutes: int = 15, rollups: bool = False) -> pl.DataFrame:
    """(service, env, version, requests, last_seen) of versions with traffic in the window's last minutes."""
    recent = window.end - timedelta(minutes=live_minutes)
    if rollups:
        return _live_versions_rollup(conn, window=window, service=service, env=env, recent=recent)
    where, params = _where(window, service=service, env=env)
    sql = f"""
        SELECT service, env, version, count(*) AS requests, max(ts) AS last_seen
        FROM requests WHERE {where} AND version IS NOT NULL AND version <> ''
        GROUP BY ALL HAVING max(ts) >= ? ORDER BY service, env, requests DESC
    """
    return conn.sql(sql, params=[*params, recent]).pl()


def canary_pairs(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str | None = None,
                 env: str | None = None, rollups: bool = False) -> list[tuple[str, str | None, str, str]]:
    """(service, env, baseline, canary) for every service with more than one live version."""
    versions = live_versions(conn, window=window, service=service, env=env, rollups=rollups)
    pairs = []
    for (svc, environment), group in versions.group_by(["service", "env"], maintain_order=True):
        names = group.sort("requests", descending=True).get_column("version").to_list()
        pairs += [(str(svc), environment, names[0], other) for other in names[1:]]
    return pairs


def minute_counts(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str, env: str | None,
                  baseline: str, canary: str, rollups: bool = False) -> pl.DataFrame:
    """Per (method, route, version, minute): requests, 5xx, slow (over the pooled route p99)."""
    if rollups:
        return _minute_counts_rollup(conn, window=window, service=service, env=env, baseline=baseline, canary=canary)
    where, params = _where(window, service=service, env=env)
    sql = f"""
        WITH base AS (SELECT method, coalesce(route, path, '') AS route, version, ts, status, duration_ms
                      FROM requests WHERE {where} AND version IN (?, ?)),
             thr AS (SELECT method, route, quantile_cont(duration_ms, 0.99) AS p99 FROM base GROUP BY ALL)
        SELECT b.method, b.route, b.version, time_bucket(INTERVAL 1 minute, b.ts) AS minute,
               count(*)::DOUBLE AS n,
               count(*) FILTER (WHERE b.status >= 500)::DOUBLE AS e,
               count(*) FILTER (WHERE b.duration_ms > t.p99)::DOUBLE AS slow
        FROM base b JOIN thr t USING (method, route) GROUP BY ALL
    """
    return conn.sql(sql, params=[*params, baseline, canary]).pl()


def latency_summary(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str, env: str | None,
                    baseline: str, canary: str, since: datetime, rollups: bool = False) -> pl.DataFrame:
    """Per (scope, version): requests, 5xx, p50, p99, and the canary's share slower than the baseline p99."""
    if rollups:
        return _latency_summary_rollup(conn, window=Window(max(since, window.start), window.end), service=service,
                                       env=env, baseline=baseline, canary=canary)
    where, params = _where(Window(max(since, window.start), window.end), service=service, env=env)
    sql = f"""
        WITH base AS (SELECT method || ' ' || coalesce(route, path, '') AS scope, version, status, duration_ms
                      FROM requests WHERE {where} AND version IN (?, ?)),
             allr AS (SELECT '' AS scope, version, status, duration_ms FROM base UNION ALL
                      SELECT scope, version, status, duration_ms FROM base),
             bp99 AS (SELECT scope, quantile_cont(duration_ms, 0.99) AS base_p99 FROM allr
                      WHERE version = ? GROUP BY scope)
        SELECT a.scope, a.version, count(*) AS requests,
               count(*) FILTER (WHERE status >= 500) AS errors_5xx,
               quantile_cont(duration_ms, 0.5) AS p50_ms, quantile_cont(duration_ms, 0.99) AS p99_ms,
               avg(CASE WHEN duration_ms > b.base_p99 THEN 1.0 ELSE 0.0 END) AS slower_than_baseline_p99
        FROM allr a LEFT JOIN bp99 b USING (scope) GROUP BY ALL
    """
    return conn.sql(sql, params=[*params, baseline, canary, baseline]).pl()


def _where(window: Window, *, service: str | None, env: str | None) -> tuple[str, list[Any]]:
    """Window and filters over raw ``requests`` (with date-partition pruning)."""
    from analytics.red import where_sql

    filters = {col: value for col, value in (("service", service), ("env", env)) if value}
    where, params = where_sql("ts", window=window, filters=filters)
    return where, list(params)


# --------------------------------------------------------------------------------------
# Reading the rollups (same answers from requests_1m / edges_1m when they cover the window)
# --------------------------------------------------------------------------------------
def rollups_cover(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str | None = None,
                  env: str | None = None) -> bool:
    """True when the window is minute-aligned and edges_1m holds exactly the raw requests of it."""
    if window.start.second or window.start.microsecond or window.end.second or window.end.microsecond:
        return False
    try:
        where, params = _rollup_where(window, service=service, env=env)
        rolled = conn.execute(f"SELECT coalesce(sum(requests), 0) FROM edges_1m WHERE {where}", params).fetchall()[0][0]
    except duckdb.Error:
        return False
    if not rolled:
        return False
    raw_where, raw_params = _where(window, service=service, env=env)
    raw = conn.execute(f"SELECT count(*) FROM requests WHERE {raw_where}", raw_params).fetchall()[0][0]
    return int(rolled) == int(raw)


def _rollup_where(window: Window, *, service: str | None, env: str | None) -> tuple[str, list[Any]]:
    """Minute window (with date pruning) and filters on a ``*_1m`` rollup."""
    last_day = (window.end - timedelta(microseconds=1)).date()
    clauses = ["minute >= ?", "minute < ?", f"date >= DATE '{window.start.date().isoformat()}'",
               f"date <= DATE '{last_day.isoformat()}'"]
    params: list[Any] = [window.start, window.end]
    for col, value in (("service", service), ("env", env)):
        if value:
            clauses.append(f"{col} = ?")
            params.append(value)
    return " AND ".join(clauses), params


def _live_versions_rollup(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str | None,
                          env: str | None, recent: datetime) -> pl.DataFrame:
    where, params = _rollup_where(window, service=service, env=env)
    sql = f"""
        SELECT service, env, version, sum(requests)::BIGINT AS requests, max(minute) AS last_seen
        FROM edges_1m WHERE {where} AND version IS NOT NULL AND version <> ''
        GROUP BY ALL HAVING max(minute) >= ? ORDER BY service, env, requests DESC
    """
    return conn.sql(sql, params=[*params, recent]).pl()


_P99_KEY_SQL = f"""
     sk AS (SELECT method, route, k, sum(c) AS c FROM base WHERE k IS NOT NULL GROUP BY ALL),
     cum AS (SELECT method, route, k, sum(c) OVER (PARTITION BY method, route ORDER BY k) AS cum,
                    sum(c) OVER (PARTITION BY method, route) AS tot FROM sk),
     thr AS (SELECT method, route, min(k) FILTER (WHERE cum >= {sketch.rank_sql(0.99, 'tot')}) AS k99
             FROM cum GROUP BY ALL)"""


def _minute_counts_rollup(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str, env: str | None,
                          baseline: str, canary: str) -> pl.DataFrame:
    """minute_counts from requests_1m: "slow" is above the sketch bucket of the pooled route p99."""
    where, params = _rollup_where(window, service=service, env=env)
    sql = f"""
        WITH base AS (SELECT method, coalesce(route, '') AS route, version, minute, lat_key AS k,
                             requests AS n, errors_5xx AS e, duration_count AS c
                      FROM requests_1m WHERE {where} AND version IN (?, ?)),
        {_P99_KEY_SQL}
        SELECT b.method, b.route, b.version, b.minute, sum(b.n)::DOUBLE AS n, sum(b.e)::DOUBLE AS e,
               coalesce(sum(b.c) FILTER (WHERE b.k > t.k99), 0)::DOUBLE AS slow
        FROM base b JOIN thr t USING (method, route) GROUP BY ALL
    """
    return conn.sql(sql, params=[*params, baseline, canary]).pl()


def _latency_summary_rollup(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str,
                            env: str | None, baseline: str, canary: str) -> pl.DataFrame:
    """latency_summary from requests_1m: percentiles and the baseline p99 from merged sketches."""
    where, params = _rollup_where(window, service=service, env=env)
    sql = f"""
        WITH base AS (SELECT method || ' ' || coalesce(route, '') AS scope, version, lat_key AS k,
                             requests AS n, errors_5xx AS e, duration_count AS c
                      FROM requests_1m WHERE {where} AND version IN (?, ?))
        SELECT scope, version, k, sum(n)::BIGINT AS n, sum(e)::BIGINT AS e, sum(c)::BIGINT AS c
        FROM (SELECT '' AS scope, version, k, n, e, c FROM base UNION ALL SELECT * FROM base) GROUP BY ALL
    """
    buckets = conn.sql(sql, params=[*params, baseline, canary]).pl()
    group = ["scope", "version"]
    keys = buckets.filter(pl.col("k").is_not_null()).sort([*group, "k"]).with_columns(
        pl.col("c").cum_sum().over(group).alias("cum"), pl.col("c").sum().over(group).alias("tot"))
    quant = keys.group_by(group).agg(*[pl.col("k").filter(pl.col("cum") >= _rank_expr(q)).min().alias(name)
                                       for name, q in (("k50", 0.5), ("k99", 0.99))])
    base_k = quant.filter(pl.col("version") == baseline).select("scope", pl.col("k99").alias("base_k"))
    slower = buckets.join(base_k, on="scope", how="left").group_by(group).agg(
        pl.col("n").sum().alias("requests"), pl.col("e").sum().alias("errors_5xx"),
        pl.col("c").filter(pl.col("k") > pl.col("base_k")).sum().alias("_slow"))
    out = slower.join(quant, on=group, how="left")
    return out.select(
        *group, "requests", "errors_5xx", _key_value(pl.col("k50")).alias("p50_ms"),
        _key_value(pl.col("k99")).alias("p99_ms"),
        (pl.col("_slow") / pl.col("requests")).cast(pl.Float64).alias("slower_than_baseline_p99"))


def _rank_expr(q: float) -> pl.Expr:
    """Nearest rank of ``q`` among ``tot`` (sketch.rank, in polars)."""
    frac = Fraction(str(q))
    return ((pl.col("tot") * frac.numerator + frac.denominator - 1) // frac.denominator).clip(lower_bound=1)


def _key_value(key: pl.Expr) -> pl.Expr:
    """The duration a sketch bucket key stands for (sketch.estimate, in polars)."""
    value = 2.0 * pl.lit(sketch.GAMMA).pow(key.cast(pl.Float64)) / (sketch.GAMMA + 1.0)
    return pl.when(key == sketch.ZERO_KEY).then(pl.lit(0.0)).otherwise(value)


def _known_versions_rollup(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str,
                           env: str | None) -> list[str]:
    where, params = _rollup_where(window, service=service, env=env)
    rows = conn.execute(f"SELECT DISTINCT version FROM edges_1m WHERE {where} AND requests > 0", params).fetchall()
    return [r[0] for r in rows if r[0] is not None]


def _envs_of_rollup(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str, env: str | None,
                    versions: tuple[str, str]) -> list[Any]:
    where, params = _rollup_where(window, service=service, env=env)
    return conn.execute(f"SELECT env, count(DISTINCT version) FROM edges_1m WHERE {where} AND version IN (?, ?) "
                        "GROUP BY env HAVING count(DISTINCT version) = 2 ORDER BY env", [*params, *versions]).fetchall()


# --------------------------------------------------------------------------------------
# Judging
# --------------------------------------------------------------------------------------
@dataclass
class _Test:
    scope: str  # "" for the whole service, else "METHOD /route"
    metric: str  # "5xx" or "slow"
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    result: SequentialResult
    rollback_at: int | None
    promote_at: int | None


def judge(conn: duckdb.DuckDBPyConnection, service: str | None = None, *, window: Window,
          env: str | None = None, baseline: str | None = None, canary: str | None = None,
          expected_share: float | None = None, config: JudgeConfig = JudgeConfig()) -> list[CanaryVerdict]:
    """Verdicts for one named pair, every canary of one service, or every service with >1 live version."""
    if (baseline is None) != (canary is None):
        raise MeshlensError("give both --baseline and --canary, or neither")
    if baseline and not service:
        raise MeshlensError("--baseline/--canary need a SERVICE")
    rollups = rollups_cover(conn, window=window, service=service, env=env)
    if baseline and canary and service:
        _check_versions(conn, window=window, service=service, env=env, names=(baseline, canary), rollups=rollups)
        envs = _envs_of(conn, window=window, service=service, env=env, versions=(baseline, canary), rollups=rollups)
        pairs = [(service, e, baseline, canary) for e in envs]
    else:
        pairs = canary_pairs(conn, window=window, service=service, env=env, rollups=rollups)
    return [judge_pair(conn, window=window, service=s, env=e, baseline=b, canary=c,
                       expected_share=expected_share, config=config, rollups=rollups) for s, e, b, c in pairs]


def judge_pair(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str, env: str | None,
               baseline: str, canary: str, expected_share: float | None = None,
               config: JudgeConfig = JudgeConfig(), rollups: bool = False) -> CanaryVerdict:
    """The verdict for one (service, env, baseline, canary) over the minutes both served traffic."""
    counts = minute_counts(conn, window=window, service=service, env=env, baseline=baseline, canary=canary,
                           rollups=rollups)
    minutes = _overlap_minutes(counts, baseline, canary)
    verdict = CanaryVerdict(service=service, env=env, baseline=baseline, canary=canary,
                            verdict="insufficient_data", evidence="", decided_at=None, since=None,
                            start=minutes[0] if minutes else None,
                            end=minutes[-1] + timedelta(minutes=1) if minutes else None)
    if not minutes:
        verdict.evidence = f"{canary} and {baseline} never served {service} in the same minute of {window}"
        return verdict
    tests = _run_tests(counts, minutes, baseline, canary, config)
    _decide(verdict, tests, minutes, config)
    _describe(conn, verdict, tests, minutes, window=window, config=config, rollups=rollups)
    verdict.traffic = traffic_share(tests[0].arrays, minutes, expected=expected_share, config=config)
    verdict.next_weights = next_weights(verdict.verdict, verdict.traffic, baseline, canary)
    return verdict


def _overlap_minutes(counts: pl.DataFrame, baseline: str, canary: str) -> list[datetime]:
    per = counts.group_by("minute", "version").agg(pl.col("n").sum())
    both = per.group_by("minute").agg(pl.col("version").n_unique().alias("k")).filter(pl.col("k") == 2)
    if both.is_empty():
        return []
    first, last = both.get_column("minute").min(), both.get_column("minute").max()
    return list(pl.datetime_range(first, last, "1m", eager=True))  # type: ignore[arg-type]


def _arrays(counts: pl.DataFrame, minutes: list[datetime], version: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    grid = pl.DataFrame({"minute": minutes}).with_columns(pl.col("minute").cast(counts.schema["minute"]))
    mine = counts.filter(pl.col("version") == version).group_by("minute").agg(pl.col("n").sum(), pl.col(column).sum())
    joined = grid.join(mine, on="minute", how="left").fill_null(0.0)
    return joined.get_column("n").to_numpy().astype(float), joined.get_column(column).to_numpy().astype(float)


def _run_tests(counts: pl.DataFrame, minutes: list[datetime], baseline: str, canary: str,
               config: JudgeConfig) -> list[_Test]:
    scoped = counts.with_columns((pl.col("method").fill_null("") + " " + pl.col("route").fill_null("")).alias("scope"))
    canary_routes = (scoped.filter(pl.col("version") == canary).group_by("scope").agg(pl.col("n").sum())
                     .sort("n", descending=True).head(20).get_column("scope").to_list())
    scopes = [""] + [s for s in canary_routes
                     if scoped.filter((pl.col("scope") == s) & (pl.col("version") == baseline)).height]
    alpha = config.alpha / (2 * len(scopes))
    tests = []
    for scope in scopes:
        part = scoped if scope == "" else scoped.filter(pl.col("scope") == scope)
        for metric, column in (("5xx", "e"), ("slow", "slow")):
            n_b, e_b = _arrays(part, minutes, baseline, column)
            n_c, e_c = _arrays(part, minutes, canary, column)
            path = loglik_path(n_b, e_b, n_c, e_c, block=config.block_minutes)
            result = confidence_sequence(n_b, e_b, n_c, e_c, alpha=alpha, prior_sd=config.prior_sd,
                                         block=config.block_minutes, path=path)
            tests.append(_make_test(scope, metric, (n_b, e_b, n_c, e_c), result, config, alpha=alpha, path=path))
    return tests


def _make_test(scope: str, metric: str, arrays: tuple[np.ndarray, ...], result: SequentialResult,
               config: JudgeConfig, *, alpha: float, path: tuple[np.ndarray, np.ndarray] | None = None) -> _Test:
    n_c = arrays[2]
    gate = (np.cumsum(n_c) >= config.min_canary_requests) & (np.arange(len(n_c)) + 1 >= config.min_minutes)
    promote_gate = np.cumsum(n_c) >= config.min_promote_requests
    evidence = worse_evidence(*arrays, prior_sd=config.prior_sd, block=config.block_minutes, path=path)  # type: ignore[misc]
    return _Test(scope, metric, arrays, result,  # type: ignore[arg-type]
                 rollback_at=first_true(gate & (evidence >= math.log(1 / alpha))),
                 promote_at=first_true(promote_gate & gate & (result.upper < config.promote_ratio)))


def _decide(verdict: CanaryVerdict, tests: list[_Test], minutes: list[datetime], config: JudgeConfig) -> None:
    bad = [t for t in tests if t.rollback_at is not None]
    overall = [t for t in tests if t.scope == ""]
    gate_met = overall[0].arrays[2].sum() >= config.min_canary_requests and len(minutes) >= config.min_minutes
    if bad:
        verdict.verdict = "rollback"
        verdict.decided_at = minutes[min(int(t.rollback_at or 0) for t in bad)] + timedelta(minutes=1)
    elif not gate_met:
        verdict.verdict = "insufficient_data"
    elif all(t.promote_at is not None for t in overall):
        verdict.verdict = "promote"
        verdict.decided_at = minutes[max(int(t.promote_at or 0) for t in overall)] + timedelta(minutes=1)
    else:
        verdict.verdict = "continue"


def _deciding_test(verdict: CanaryVerdict, tests: list[_Test]) -> _Test:
    """The test the evidence sentence quotes: the strongest rejection, else the overall 5xx test."""
    bad = [t for t in tests if t.rollback_at is not None]
    if verdict.verdict == "rollback" and bad:
        return min(bad, key=lambda t: (t.rollback_at, t.scope == ""))
    return tests[0]


def _describe(conn: duckdb.DuckDBPyConnection, verdict: CanaryVerdict, tests: list[_Test],
              minutes: list[datetime], *, window: Window, config: JudgeConfig, rollups: bool = False) -> None:
    """Fill since, the tables and the one-sentence evidence."""
    deciding = _deciding_test(verdict, tests)
    since_idx = 0
    if verdict.verdict == "rollback":
        since_idx = change_point(*deciding.arrays, ratio=float(deciding.result.ratio[-1]))
    verdict.since = minutes[since_idx]
    summary = latency_summary(conn, window=window, service=verdict.service, env=verdict.env,
                              baseline=verdict.baseline, canary=verdict.canary, since=verdict.since,
                              rollups=rollups)
    verdict.overall = _scope_rows(summary, tests, "", verdict)
    verdict.routes = [row for t in tests if t.scope and t.metric == "5xx"
                      for row in _scope_rows(summary, tests, t.scope, verdict)]
    verdict.evidence = _sentence(verdict, deciding, since_idx, config)


def _scope_rows(summary: pl.DataFrame, tests: list[_Test], scope: str, verdict: CanaryVerdict) -> list[dict[str, Any]]:
    rows = []
    for version in (verdict.baseline, verdict.canary):
        part = summary.filter((pl.col("scope") == scope) & (pl.col("version") == version))
        stats = part.row(0, named=True) if part.height else {}
        requests = int(stats.get("requests") or 0)
        row: dict[str, Any] = {"scope": scope or "(all routes)", "version": version, "requests": requests,
                               "errors_5xx": int(stats.get("errors_5xx") or 0),
                               "error_ratio": (stats.get("errors_5xx") or 0) / requests if requests else None,
                               "p50_ms": stats.get("p50_ms"), "p99_ms": stats.get("p99_ms"),
                               "slower_than_baseline_p99": stats.get("slower_than_baseline_p99")}
        if version == verdict.canary:
            for t in tests:
                if t.scope == scope:
                    key = "5xx" if t.metric == "5xx" else "slow"
                    n_b, e_b, n_c, e_c = (float(a.sum()) for a in t.arrays)
                    row[f"{key}_ratio"] = (e_c / n_c) / (e_b / n_b) if e_b and n_b and n_c else None
                    row[f"{key}_ratio_ci"] = [float(t.result.lower[-1]), float(t.result.upper[-1])]
                    row[f"{key}_rollback"] = t.rollback_at is not None
        rows.append(row)
    return rows


def _sentence(verdict: CanaryVerdict, test: _Test, since_idx: int, config: JudgeConfig) -> str:
    n_b, e_b, n_c, e_c = (a[since_idx:] for a in test.arrays)
    rate_b, rate_c = _ratio(e_b.sum(), n_b.sum()), _ratio(e_c.sum(), n_c.sum())
    where = f" on {test.scope}" if test.scope else ""
    what = "5xx rate" if test.metric == "5xx" else "share of requests slower than the route's p99"
    counts = f"n={int(n_c.sum()):,} vs {int(n_b.sum()):,}"
    b, c = verdict.baseline, verdict.canary
    since = f"{verdict.since:%H:%M}" if verdict.since else "the start"
    if verdict.verdict == "rollback":
        times = f"{rate_c / rate_b:.1f}x" if rate_b > 0 else "more than"
        return (f"{c} has {times} the {what} of {b}{where} ({_pct(rate_c)} vs {_pct(rate_b)}, {counts}) "
                f"since {since}; recommend rolling back {c}")
    lo, hi = float(test.result.lower[-1]), float(test.result.upper[-1])
    point = f"ratio {rate_c / rate_b:.2f}, " if rate_b > 0 else ""
    band = f"{point}{100 * (1 - config.alpha):.0f}% confidence sequence {lo:.2f}-{hi:.2f}"
    if verdict.verdict == "promote":
        return (f"{c} matches {b}: 5xx {_pct(rate_c)} vs {_pct(rate_b)} ({band}, {counts}), latency within "
                f"{config.promote_ratio}x; recommend promoting {c}")
    if verdict.verdict == "continue":
        return (f"no significant difference yet between {c} and {b}: 5xx {_pct(rate_c)} vs {_pct(rate_b)} "
                f"({band}, {counts}){_worst_route(verdict)}; keep watching")
    return (f"only {int(n_c.sum()):,} {c} requests over {len(n_c)} minutes "
            f"(need {config.min_canary_requests:,} and {config.min_minutes} minutes)")


def _worst_route(verdict: CanaryVerdict) -> str:
    """The route where the canary looks worst (at least 3 canary errors), as a hint."""
    rows = [r for r in verdict.routes if r["version"] == verdict.canary and r["errors_5xx"] >= 3
            and (r.get("5xx_ratio") or 0) >= 1.5]
    if not rows:
        return ""
    worst = max(rows, key=lambda r: r["5xx_ratio"])
    return f"; worst route {worst['scope']} at {worst['5xx_ratio']:.1f}x, not yet conclusive"


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%" if value >= 0.001 or value == 0 else f"{100 * value:.2f}%"


def traffic_share(arrays: tuple[np.ndarray, ...], minutes: list[datetime], *, expected: float | None,
                  config: JudgeConfig) -> dict[str, Any]:
    """Observed canary share vs the expected one (given, else the nearest standard weight), per hour too."""
    n_b, _, n_c, _ = arrays
    total = n_b + n_c
    observed = _ratio(n_c.sum(), total.sum())
    nominal = expected if expected is not None else min(WEIGHT_LADDER, key=lambda w: abs(w / 100 - observed)) / 100
    hours = [(n_c[i:i + 60].sum(), total[i:i + 60].sum(), minutes[i]) for i in range(0, len(total), 60)]
    off = [f"{t:%H:%M} {100 * _ratio(c, n):.1f}%" for c, n, t in hours if _share_off(c, n, nominal, config)]
    ok = not _share_off(n_c.sum(), total.sum(), nominal, config) and not off
    note = (f"canary share {100 * observed:.1f}% vs expected {100 * nominal:.0f}%"
            + ("" if ok else "; off in hours " + ", ".join(off[:5]) if off else ""))
    return {"expected": nominal, "expected_source": "given" if expected is not None else "nearest standard weight",
            "observed": round(observed, 4), "ok": ok, "note": note}


def _share_off(canary: float, total: float, expected: float, config: JudgeConfig) -> bool:
    """Off by more than the tolerance AND by more than 4 binomial standard deviations."""
    if total <= 0 or expected <= 0:
        return False
    sd = math.sqrt(total * expected * (1 - expected))
    gap = abs(canary - total * expected)
    return gap > config.share_tolerance * total * expected and gap > 4 * sd


def next_weights(verdict: str, traffic: dict[str, Any], baseline: str, canary: str) -> dict[str, int]:
    """Recommended traffic weights (percent) for the next step."""
    current = int(round(100 * (traffic.get("expected") or traffic.get("observed") or 0)))
    if verdict == "rollback":
        step = 0
    elif verdict == "promote":
        step = next((w for w in WEIGHT_LADDER if w > current), 100)
    else:
        step = current
    return {baseline: 100 - step, canary: step}


def _check_versions(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str, env: str | None,
                    names: tuple[str, str], rollups: bool = False) -> None:
    where, params = _where(window, service=service, env=env)
    known = (_known_versions_rollup(conn, window=window, service=service, env=env) if rollups else
             [r[0] for r in conn.execute(f"SELECT DISTINCT version FROM requests WHERE {where}", params).fetchall()
              if r[0] is not None])
    for name in names:
        if name not in known:
            raise UnknownNameError(f"version of {service} in {window}", name, known)


def _envs_of(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str, env: str | None,
             versions: tuple[str, str], rollups: bool = False) -> list[str | None]:
    if rollups:
        return [r[0] for r in _envs_of_rollup(conn, window=window, service=service, env=env, versions=versions)] or [env]
    where, params = _where(window, service=service, env=env)
    rows = conn.execute(f"SELECT env, count(DISTINCT version) FROM requests WHERE {where} AND version IN (?, ?) "
                        "GROUP BY env HAVING count(DISTINCT version) = 2 ORDER BY env", [*params, *versions]).fetchall()
    return [r[0] for r in rows] or [env]
