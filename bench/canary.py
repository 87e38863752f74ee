"""Canary judge benchmark: false rollbacks of identical versions under drift, and requests to catch 3x.

Simulation (one row per minute, ``HOURS`` hours, both judges looking at every minute)
    Baseline and canary run on different instances. Per minute:
    - shared load: total traffic (``RATES``: a quiet and a busy service, req/min) x an AR(1) load
      factor (phi 0.95, sd 0.1) x a daily swing; the canary gets ``SHARE`` of it (binomial);
    - shared error shocks: the 5xx probability ``P_ERR`` x exp(AR(1), phi 0.9, sd 0.4) hits both
      groups alike (a bad dependency minute);
    - per-group drift: each group's log 5xx rate and log latency level carry their OWN AR(1)
      (phi ``DRIFT_PHI``, stationary sd ``strength`` x ``ERR_DRIFT_SD`` and x ``LAT_DRIFT_SD``):
      a slow host, a cold cache, a noisy neighbour. strength 0 is per-request iid traffic
      (what last round simulated); 1 is the default "realistic" strength (error rate wandering
      +-25%, latency level +-5%, for tens of minutes);
    - latency: lognormal, sigma 0.5 within a minute, level = shared load effect + shared AR(1) +
      the group's drift; the "slow" count is requests above the no-drift p99, the per-minute
      p99 is the nearest-rank order statistic of the group's minute (drawn from its Beta law);
    - the regression: the canary's 5xx probability x 3 from the first minute.

Judges, both re-run every minute on everything seen so far, after the same gate (200 canary
requests and 10 minutes):
- meshlens: ``analytics.canary.worse_evidence`` on the 5xx counts and on the slow counts
  (alpha 1% split over the two metrics, JudgeConfig defaults): the asymptotic confidence
  sequence of the rate ratio (variance: Poisson + an upper limit of the drift variance from a
  Kalman likelihood of the canary's per-minute share of bad requests, both metrics pooled,
  between the assumed floor and ceiling)
  excludes 1 while the estimate is at least 1.5x (slow: 2x), with at least 5 bad canary requests,
  on the whole run and on the minutes since every hour;
- Kayenta-style: NetflixACAJudge's MannWhitneyClassifier (spinnaker/spinnaker, kayenta-judge:
  confLevel 0.98, tolerance 0.25, effect size meanRatio >= 1.0) on the per-minute metric values
  of the two groups: the 5xx ratio and the p99 of each minute, all minutes so far; a metric is
  "High" when the 98% Hodges-Lehmann interval's lower end is above 0.25 x the estimate and the
  canary's mean is at least the baseline's; abort (rollback) when any metric is High.

Run: ``.venv/bin/python -m bench.canary [--kayenta-every K]`` (writes bench/results/canary.md; with K the
Kayenta-style judge, about 200 ms a simulation, runs on every K-th simulation only).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from analytics.canary import JudgeConfig, drift_bound, worse_evidence

ROOT = Path(__file__).resolve().parents[1]
HOURS, SHARE, P_ERR = 4, 0.10, 0.01
RATES = (300.0, 2000.0)  # req/min of the whole service: a quiet one and a busy one
DRIFT_PHI, ERR_DRIFT_SD, LAT_DRIFT_SD = 0.95, 0.25, 0.05
SIGMA, MU = 0.5, math.log(40.0)
STRENGTHS = (0.0, 1.0, 2.0, 3.0)
MW_CONF, MW_TOLERANCE, MW_ALLOWED_INCREASE = 0.98, 0.25, 1.0
GATE_REQUESTS, GATE_MINUTES = 200, 10


@dataclass(frozen=True)
class Minutes:
    """One simulated canary: per-minute counts of both groups and the per-minute metric values."""

    n_b: np.ndarray
    e_b: np.ndarray
    s_b: np.ndarray  # slow requests (above the no-drift p99)
    p99_b: np.ndarray
    n_c: np.ndarray
    e_c: np.ndarray
    s_c: np.ndarray
    p99_c: np.ndarray


@dataclass(frozen=True)
class Outcome:
    """First minute each judge rolled back (None: never), and canary requests seen by then."""

    ours_at: int | None
    kayenta_at: int | None
    canary_requests: np.ndarray
    kayenta_judged: bool = True


def ar1(rng: np.random.Generator, n: int, *, phi: float, sd: float) -> np.ndarray:
    """A stationary AR(1) path with lag-1 correlation phi and stationary standard deviation sd."""
    if sd == 0:
        return np.zeros(n)
    noise = rng.normal(0, sd * math.sqrt(1 - phi * phi), n)
    out, level = np.empty(n), rng.normal(0, sd)
    for i in range(n):
        level = phi * level + noise[i]
        out[i] = level
    return out


def simulate(rng: np.random.Generator, *, ratio: float, strength: float, rate: float = RATES[0],
             minutes: int = HOURS * 60) -> Minutes:
    """One canary's minutes: shared load and shocks, each group's own drift, canary 5xx x ratio."""
    t = np.arange(minutes)
    load = ar1(rng, minutes, phi=0.95, sd=0.1)
    n = rng.poisson(rate * np.exp(load) * (1 + 0.2 * np.sin(t / 1440 * 2 * np.pi)))
    n_c = rng.binomial(n, SHARE)
    n_b = n - n_c
    shock = ar1(rng, minutes, phi=0.9, sd=0.4)
    shared_lat = 0.1 * load + ar1(rng, minutes, phi=0.9, sd=0.05)
    threshold = MU + SIGMA * ndtri(0.99)
    groups = []
    for count, factor in ((n_b, 1.0), (n_c, ratio)):
        p = np.clip(P_ERR * factor * np.exp(shock + ar1(rng, minutes, phi=DRIFT_PHI, sd=strength * ERR_DRIFT_SD)), 0, 1)
        level = MU + shared_lat + ar1(rng, minutes, phi=DRIFT_PHI, sd=strength * LAT_DRIFT_SD)
        slow = rng.binomial(count, 1 - ndtr((threshold - level) / SIGMA))
        groups.append((count, rng.binomial(count, p), slow, _minute_p99(rng, count, level)))
    (nb, eb, sb, pb), (nc, ec, sc, pc) = groups
    as_float = lambda a: a.astype(float)  # noqa: E731
    return Minutes(as_float(nb), as_float(eb), as_float(sb), pb, as_float(nc), as_float(ec), as_float(sc), pc)


def _minute_p99(rng: np.random.Generator, count: np.ndarray, level: np.ndarray) -> np.ndarray:
    """The nearest-rank p99 of each minute's lognormal sample (its order statistic drawn from Beta)."""
    k = np.ceil(0.99 * np.maximum(count, 1))
    u = rng.beta(k, np.maximum(count, 1) - k + 1)
    return np.where(count > 0, np.exp(level + SIGMA * ndtri(u)), np.nan)


# --------------------------------------------------------------------------------------
# the judges
# --------------------------------------------------------------------------------------
def gate(m: Minutes) -> np.ndarray:
    """Minutes at which a judge may decide: enough canary requests and minutes."""
    return (np.cumsum(m.n_c) >= GATE_REQUESTS) & (np.arange(len(m.n_c)) + 1 >= GATE_MINUTES)


def ours(m: Minutes, config: JudgeConfig) -> int | None:
    """First minute meshlens says rollback (5xx or slow), or None."""
    alpha = config.alpha / 2
    hits = np.zeros(len(m.n_c), dtype=bool)
    metrics = [(m.n_b, m.e_b, m.n_c, m.e_c), (m.n_b, m.s_b, m.n_c, m.s_c)]
    drift = drift_bound(metrics, phi=config.drift_phi, confidence=config.drift_confidence, ceiling=config.drift_ceiling)
    for counts, margin in zip(metrics, (config.margin, config.slow_margin)):
        evidence = worse_evidence(*counts, margin=margin, prior_info=config.prior_info, drift=drift,
                                  restart_minutes=config.restart_minutes, min_events=config.min_canary_events,
                                  drift_sd=config.drift_sd, drift_phi=config.drift_phi)
        hits |= evidence >= math.log(1 / alpha)
    found = np.flatnonzero(hits & gate(m))
    return int(found[0]) if len(found) else None


def kayenta(m: Minutes) -> int | None:
    """First minute a Kayenta-style judge (Mann-Whitney per metric, re-run every minute) aborts."""
    with np.errstate(divide="ignore", invalid="ignore"):
        metrics = [(m.e_c / m.n_c, m.e_b / m.n_b), (m.p99_c, m.p99_b)]
    firsts = [_mw_first_high(c, b, gate(m)) for c, b in metrics]
    found = [f for f in firsts if f is not None]
    return min(found) if found else None


def _mw_first_high(canary: np.ndarray, baseline: np.ndarray, allowed: np.ndarray) -> int | None:
    """First minute the MannWhitneyClassifier calls the canary High on the minutes so far."""
    z_crit = ndtri(1 - (1 - MW_CONF) / 2)
    for t in np.flatnonzero(allowed & (_mw_z(canary, baseline) > z_crit)):
        if _classify_high(canary[: t + 1], baseline[: t + 1], z_crit):
            return int(t)
    return None


def _mw_z(canary: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Per minute t, the tie-corrected, continuity-corrected Mann-Whitney z of canary > baseline (minutes <= t)."""
    ok_c, ok_b = ~np.isnan(canary), ~np.isnan(baseline)
    c, b = np.where(ok_c, canary, 0.0), np.where(ok_b, baseline, 0.0)
    cmp = (np.sign(c[:, None] - b[None, :]) + 1) / 2 * (ok_c[:, None] & ok_b[None, :])
    u = cmp.cumsum(axis=0).cumsum(axis=1).diagonal()
    m, n = np.cumsum(ok_c), np.cumsum(ok_b)
    ties = _tie_terms(c, b, ok_c, ok_b)
    total = m + n
    with np.errstate(divide="ignore", invalid="ignore"):
        var = m * n / 12 * ((total + 1) - ties / (total * (total - 1)))
        centred = u - m * n / 2
        z = (centred - 0.5 * np.sign(centred)) / np.sqrt(var)
    return np.where((m > 0) & (n > 0) & (var > 0), z, 0.0)


def _tie_terms(c: np.ndarray, b: np.ndarray, ok_c: np.ndarray, ok_b: np.ndarray) -> np.ndarray:
    """Per minute, sum of k^3 - k over the tie groups of the pooled values so far."""
    counts: dict[float, int] = {}
    total, out = 0.0, np.empty(len(c))
    for t in range(len(c)):
        for value, ok in ((c[t], ok_c[t]), (b[t], ok_b[t])):
            if ok:
                k = counts.get(value, 0)
                total += 3 * k * k + 3 * k
                counts[value] = k + 1
        out[t] = total
    return out


def _classify_high(canary: np.ndarray, baseline: np.ndarray, z_crit: float) -> bool:
    """Kayenta's rule: 98% Hodges-Lehmann interval above tolerance x |estimate|, mean ratio >= 1."""
    c, b = canary[~np.isnan(canary)], baseline[~np.isnan(baseline)]
    if len(c) == 0 or len(b) == 0 or np.unique(np.concatenate([c, b])).size == 1:
        return False
    diffs = np.sort((c[:, None] - b[None, :]).ravel())
    m, n = len(c), len(b)
    k = int(math.floor(m * n / 2 - z_crit * math.sqrt(m * n * (m + n + 1) / 12)))
    lower, estimate = diffs[max(k, 0)], float(np.median(diffs))
    mean_b = float(b.mean())
    ratio = 1.0 if mean_b == 0 else float(c.mean()) / mean_b
    return lower > MW_TOLERANCE * abs(estimate) and ratio >= MW_ALLOWED_INCREASE


# --------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------
def judge_both(m: Minutes, config: JudgeConfig, *, kayenta_too: bool = True) -> Outcome:
    """When each judge first said rollback (Kayenta only when ``kayenta_too``: it is the slow one)."""
    return Outcome(ours(m, config), kayenta(m) if kayenta_too else None, np.cumsum(m.n_c), kayenta_too)


def run(*, n_aa: int = 500, n_regression: int = 200, strengths: tuple[float, ...] = STRENGTHS,
        rates: tuple[float, ...] = RATES, seed: int = 7, config: JudgeConfig | None = None,
        kayenta_every: int = 1) -> list[dict[str, Any]]:
    """Simulate and judge at every (traffic, drift strength); one result row per pair.

    ``kayenta_every``: the Kayenta-style judge runs on every k-th simulation only (the same ones for both).
    """
    config = config or JudgeConfig(alpha=0.01)
    rows = []
    for j, rate in enumerate(rates):
        for k, strength in enumerate(strengths):
            rng = np.random.default_rng(seed + 1000 * k + 100_000 * j)
            aa = [judge_both(simulate(rng, ratio=1.0, strength=strength, rate=rate), config,
                             kayenta_too=i % kayenta_every == 0) for i in range(n_aa)]
            bad = [judge_both(simulate(rng, ratio=3.0, strength=strength, rate=rate), config,
                              kayenta_too=i % kayenta_every == 0) for i in range(n_regression)]
            kay_aa, kay_bad = [o for o in aa if o.kayenta_judged], [o for o in bad if o.kayenta_judged]
            rows.append({"rate": rate, "strength": strength, "n_aa": n_aa, "n_regression": n_regression,
                         "n_kayenta": (len(kay_aa), len(kay_bad)),
                         "aa_ours": _rate([o.ours_at for o in aa]), "aa_kayenta": _rate([o.kayenta_at for o in kay_aa]),
                         "reg_ours": _needed([(o.ours_at, o.canary_requests) for o in bad]),
                         "reg_kayenta": _needed([(o.kayenta_at, o.canary_requests) for o in kay_bad])})
            print(f"rate {rate:g} strength {strength:g} done", flush=True)
    return rows


def _rate(hits: list[int | None]) -> float:
    return sum(h is not None for h in hits) / len(hits)


def _needed(pairs: list[tuple[int | None, np.ndarray]]) -> dict[str, float]:
    needed = [float(seen[t]) for t, seen in pairs if t is not None]
    decided = len(needed) / len(pairs)
    if not needed:
        return {"decided": decided, "median": float("nan"), "p90": float("nan")}
    return {"decided": decided, "median": float(np.median(needed)), "p90": float(np.percentile(needed, 90))}


def table(rows: list[dict[str, Any]], *, seconds: float) -> str:
    """The Markdown results table."""
    first = rows[0]
    lines = ["## Canary judge (simulated, per-group autocorrelated drift, checked every minute)", "",
             f"{first['n_aa']} A/A canaries and {first['n_regression']} 3x-5xx-regression canaries per row, {HOURS} h "
             f"each, canary share {SHARE:.0%}, baseline 5xx {P_ERR:.0%}; per-group AR(1) drift (phi {DRIFT_PHI}) of "
             f"sd strength x {ERR_DRIFT_SD} in the log 5xx rate and strength x {LAT_DRIFT_SD} in the log latency "
             f"level, plus shared load and error shocks; strength 1 is the realistic default. {seconds:.0f} s.", "",
             "| service req/min | drift strength | judge | A/A false rollbacks | 3x regressions caught | "
             "canary requests to decide (median) | (p90) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        kay = "Kayenta-style Mann-Whitney" + ("" if row["n_kayenta"] == (row["n_aa"], row["n_regression"]) else
                                              " ({} A/A, {} regressions)".format(*row["n_kayenta"]))
        for name, aa, reg in (("meshlens", row["aa_ours"], row["reg_ours"]),
                              (kay, row["aa_kayenta"], row["reg_kayenta"])):
            lines.append(f"| {row['rate']:,.0f} | {row['strength']:g} | {name} | {aa:.1%} | {reg['decided']:.0%} | "
                         f"{reg['median']:,.0f} | {reg['p90']:,.0f} |")
    lines += ["", "meshlens: asymptotic confidence sequence of the 5xx and slow-request rate ratios, variance Poisson "
              "plus a drift bounded from the data (Kalman likelihood of the AR(1) drift of the canary's share "
              "of bad requests, 5xx and slow pooled, 75% upper limit, floor and ceiling) "
              "(alpha 1%), rollback when it excludes 1 with the estimate at least 1.5x (slow: 2x), restarted "
              "hourly; Kayenta-style: Mann-Whitney (98%, tolerance 0.25) on per-minute 5xx ratio and p99, "
              "re-run every minute, abort when any metric is High."]
    return "\n".join(lines) + "\n"


def main(*, kayenta_every: int = 1) -> str:
    """Run the benchmark and write bench/results/canary.md."""
    started = time.time()
    text = table(run(kayenta_every=kayenta_every), seconds=time.time() - started)
    out = ROOT / "bench" / "results" / "canary.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    return text


if __name__ == "__main__":
    import sys

    main(kayenta_every=int(sys.argv[sys.argv.index("--kayenta-every") + 1]) if "--kayenta-every" in sys.argv else 1)
