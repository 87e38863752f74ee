"""Canary judge benchmark: false rollbacks of identical versions, and requests needed to catch 3x.

Simulation (per canary, one row per minute, ``HOURS`` hours, checked every minute):
- total traffic ``RATE`` req/min times an AR(1) load factor (phi 0.95) and a daily swing;
- the canary gets ``SHARE`` of it (binomial);
- the 5xx probability of both versions is ``P_ERR`` times a shared AR(1) shock (phi 0.9, sd 0.4:
  bad minutes come in runs and hit both versions), so minute samples are autocorrelated;
- the canary's 5xx probability is multiplied by ``ratio`` (1 for A/A, 3 for the regression).

Judges, both re-run every minute on everything seen so far:
- meshlens: ``analytics.canary.worse_evidence`` (the e-process the judge uses for rollback),
  rollback when it exceeds 1/alpha, alpha = 1%, after the minimum-sample gate;
- Kayenta-style: a one-sided Mann-Whitney U test of the canary's per-minute 5xx ratios against
  the baseline's (fixed-horizon test, 95% confidence, as Kayenta's NetflixACAJudge), rollback
  when p < 0.05 at any look after the same gate.

Run: ``.venv/bin/python -m bench.canary`` (writes bench/results/canary.md).
"""

from __future__ import annotations

import math
from typing import Any
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

from analytics.canary import JudgeConfig, worse_evidence

ROOT = Path(__file__).resolve().parents[1]
HOURS, RATE, SHARE, P_ERR = 4, 200.0, 0.10, 0.01
ALPHA, MW_ALPHA = 0.01, 0.05


@dataclass(frozen=True)
class Outcome:
    """First minute each judge rolled back (None: never), and canary requests seen by then."""

    ours_at: int | None
    kayenta_at: int | None
    canary_requests: np.ndarray


def simulate(rng: np.random.Generator, *, ratio: float, minutes: int = HOURS * 60) -> tuple[np.ndarray, ...]:
    """(n_b, e_b, n_c, e_c) per minute with autocorrelated load and shared error shocks."""
    load = np.exp(_ar1(rng, minutes, phi=0.95, sd=0.05)) * (1 + 0.2 * np.sin(np.arange(minutes) / 1440 * 2 * np.pi))
    shock = np.exp(_ar1(rng, minutes, phi=0.9, sd=0.4))
    n = rng.poisson(RATE * load)
    n_c = rng.binomial(n, SHARE)
    n_b = n - n_c
    p = np.clip(P_ERR * shock, 0, 1)
    e_b = rng.binomial(n_b, p)
    e_c = rng.binomial(n_c, np.clip(p * ratio, 0, 1))
    return tuple(a.astype(float) for a in (n_b, e_b, n_c, e_c))


def _ar1(rng: np.random.Generator, n: int, *, phi: float, sd: float) -> np.ndarray:
    noise, out, level = rng.normal(0, sd, n), np.empty(n), 0.0
    for i in range(n):
        level = phi * level + noise[i]
        out[i] = level
    return out


def judge_both(arrays: tuple[np.ndarray, ...], config: JudgeConfig) -> Outcome:
    """Run both judges at every minute; return when each first said rollback."""
    n_b, e_b, n_c, e_c = arrays
    seen = np.cumsum(n_c)
    gate = (seen >= config.min_canary_requests) & (np.arange(len(n_c)) + 1 >= config.min_minutes)
    evidence = worse_evidence(n_b, e_b, n_c, e_c, prior_sd=config.prior_sd, block=config.block_minutes)
    hits = np.flatnonzero(gate & (evidence >= math.log(1 / ALPHA)))
    ours = int(hits[0]) if len(hits) else None
    ratio_b = np.where(n_b > 0, e_b / np.maximum(n_b, 1), 0.0)
    ratio_c = np.where(n_c > 0, e_c / np.maximum(n_c, 1), 0.0)
    kayenta = None
    for t in np.flatnonzero(gate):
        p = mannwhitneyu(ratio_c[: t + 1], ratio_b[: t + 1], alternative="greater", method="asymptotic").pvalue
        if p < MW_ALPHA:
            kayenta = int(t)
            break
    return Outcome(ours, kayenta, seen)


def run(n_aa: int = 500, n_regression: int = 200, seed: int = 7) -> dict[str, Any]:
    """Simulate and judge; returns the numbers of the results table."""
    rng, config = np.random.default_rng(seed), JudgeConfig(alpha=ALPHA)
    aa = [judge_both(simulate(rng, ratio=1.0), config) for _ in range(n_aa)]
    bad = [judge_both(simulate(rng, ratio=3.0), config) for _ in range(n_regression)]
    return {"aa_ours": _rate([o.ours_at for o in aa]), "aa_kayenta": _rate([o.kayenta_at for o in aa]),
            "reg_ours": _needed([(o.ours_at, o.canary_requests) for o in bad]),
            "reg_kayenta": _needed([(o.kayenta_at, o.canary_requests) for o in bad]),
            "n_aa": n_aa, "n_regression": n_regression}


def _rate(hits: list[int | None]) -> float:
    return sum(h is not None for h in hits) / len(hits)


def _needed(pairs: list[tuple[int | None, np.ndarray]]) -> dict[str, float]:
    needed = [float(seen[t]) for t, seen in pairs if t is not None]
    decided = len(needed) / len(pairs)
    if not needed:
        return {"decided": decided, "median": float("nan"), "p90": float("nan")}
    return {"decided": decided, "median": float(np.median(needed)), "p90": float(np.percentile(needed, 90))}


def main() -> str:
    """Run the benchmark and write bench/results/canary.md."""
    started = time.time()
    res = run()
    ours, kay = res["reg_ours"], res["reg_kayenta"]
    lines = ["## Canary judge (simulated, autocorrelated traffic, checked every minute)", "",
             f"{res['n_aa']} A/A canaries and {res['n_regression']} 3x-regression canaries, {HOURS} h each, "
             f"{RATE:.0f} req/min, canary share {SHARE:.0%}, baseline 5xx {P_ERR:.0%} with shared AR(1) shocks. "
             f"{time.time() - started:.0f} s.", "",
             "| judge | A/A false rollbacks | 3x regressions caught | canary requests to decide (median) | (p90) |",
             "|---|---|---|---|---|",
             f"| meshlens (mixture e-process, alpha 1%) | {res['aa_ours']:.1%} | {ours['decided']:.0%} | "
             f"{ours['median']:,.0f} | {ours['p90']:,.0f} |",
             f"| Kayenta-style Mann-Whitney re-run every minute (95%) | {res['aa_kayenta']:.1%} | {kay['decided']:.0%} | "
             f"{kay['median']:,.0f} | {kay['p90']:,.0f} |"]
    table = "\n".join(lines) + "\n"
    out = ROOT / "bench" / "results" / "canary.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table, encoding="utf-8")
    print(table)
    return table


if __name__ == "__main__":
    main()
