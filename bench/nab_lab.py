"""NAB lab: score candidate single-series detectors on NAB's tuning folders, with a leave-one-group-out estimate.

A candidate is a module ``bench/nab_candidates/<name>.py`` with ``score(frame) -> np.ndarray`` (causal, in
[0, 1]); ``ours`` is the product detector (``bench.nab.final_score`` with the product's score stage). Each
file's scores are cached in bench/results/nab_lab_cache/<name>-<hash of the module's source>/.

For one candidate (or several, combined point by point with ``--combine max|mean``) it runs NAB's threshold
optimisation (standard profile; threshold x quiet time after an alert) and prints:

- ``pooled``: the score of all tuning files at the setting tuned on them (what bench.nab reports);
- the score of each group (realKnownCause, realTraffic, artificial) at that setting;
- ``LOFO``: for each group, the setting is tuned on the other two and the group is scored with it; the mean
  of the three. Since the evaluation folder is a source the tuning never saw, this is the estimate that
  selects between candidates.

``--rank`` first replaces every candidate but ours by its causal rank (its mid-rank among its own earlier scores), so
that scores of different scales share one threshold. ``--evaluate`` (the lead's, once, on declared candidates) also scores realAWSCloudwatch at the pooled setting.

Run: ``.venv/bin/python -m bench.nab_lab ours cad_ose --combine max``.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import importlib
import inspect
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from analytics import anomalies, series_detector
from bench import nab

GROUPS = {"realKnownCause": ("realKnownCause",), "realTraffic": ("realTraffic",),
          "artificial": ("artificialWithAnomaly", "artificialNoAnomaly")}
REFRACTORIES = (None, 0.05, 0.1, 0.15)
RANK_LEARN = 50
CACHE = nab.ROOT / "bench" / "results" / "nab_lab_cache"


def _ours(frame: pl.DataFrame, name: str) -> np.ndarray:
    config = anomalies.SeriesConfig()
    return nab.final_score(nab._cached("ours", name, frame, config), config)


def _module(candidate: str):
    return importlib.import_module(f"bench.nab_candidates.{candidate}")


def _cache_file(candidate: str, name: str) -> Path:
    source = (inspect.getsource(nab) + nab.code_fingerprint() + inspect.getsource(series_detector) if candidate == "ours"
              else inspect.getsource(_module(candidate)))
    digest = hashlib.sha1(source.encode()).hexdigest()[:10]
    return CACHE / f"{candidate}-{digest}" / (name.replace("/", "__") + ".npy")


def candidate_scores(candidate: str, name: str, frame: pl.DataFrame) -> np.ndarray:
    """One candidate's per-point scores on one file (cached)."""
    path = _cache_file(candidate, name)
    if path.exists():
        return np.load(path)
    frame = frame.select("timestamp", "value")
    value = _ours(frame, name) if candidate == "ours" else np.asarray(_module(candidate).score(frame), dtype=float)
    if len(value) != len(frame) or not np.all(np.isfinite(value)):
        raise SystemExit(f"{candidate}: {name}: score must be {len(frame)} finite numbers")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, value)
    return value


def combined(candidates: list[str], name: str, frame: pl.DataFrame, how: str, *, rank: bool = False) -> np.ndarray:
    """The candidates' scores on one file, combined point by point (max or mean); with ``rank`` every candidate
    but ``ours`` (a rank already) is first replaced by its causal rank."""
    scores = [candidate_scores(c, name, frame) for c in candidates]
    stack = np.vstack([causal_rank(s) if rank and c != "ours" else s for c, s in zip(candidates, scores)])
    return stack.max(axis=0) if how == "max" else stack.mean(axis=0)


def causal_rank(score: np.ndarray, *, learn: int = RANK_LEARN) -> np.ndarray:
    """Each score's mid-rank among the scores before it (0 for the first ``learn`` points)."""
    out, seen = np.zeros(len(score)), list[float]()
    for i, value in enumerate(score):
        if i >= learn:
            below, upto = bisect.bisect_left(seen, value), bisect.bisect_right(seen, value)
            out[i] = (below + 0.5 * (upto - below)) / len(seen)
        bisect.insort(seen, value)
    return out


def settings(quiet: tuple = REFRACTORIES) -> list[tuple[float, Any]]:
    """(threshold, quiet time) pairs: a quiet time is None, a fraction of the file or a duration ("12h")."""
    return [(float(t), r) for r in quiet for t in nab.GRID]


def flags(score: np.ndarray, threshold: float, quiet: Any, step_seconds: float) -> np.ndarray:
    """Alerts at one setting: every point over the threshold, or one alert then a quiet time."""
    if quiet is None:
        return score >= threshold
    if isinstance(quiet, str):
        points = int(float(quiet.rstrip("h")) * 3600 / step_seconds)
    else:
        points = int(quiet * len(score))
    return nab.alerts(score, threshold=threshold, refractory=max(1, points))


def raw_matrix(preps, scores, cost, *, steps: dict[str, float], quiet: tuple = REFRACTORIES) -> np.ndarray:
    """NAB raw score per (file, setting)."""
    grid = settings(quiet)
    out = np.zeros((len(preps), len(grid)))
    for j, (threshold, refractory) in enumerate(grid):
        for i, prep in enumerate(preps):
            alerts = flags(scores[prep.name], threshold, refractory, steps[prep.name])
            out[i, j] = nab.raw_score(prep, alerts, cost)
    return out


def best_setting(raws: np.ndarray, rows: np.ndarray) -> int:
    """Index of the setting with the highest summed raw score over ``rows`` (first on ties)."""
    return int(np.argmax(raws[rows].sum(axis=0)))


def report(preps, raws, cost, *, quiet: tuple = REFRACTORIES) -> dict:
    """Pooled, per-group and leave-one-group-out scores."""
    group_of = np.array([_group(p.name) for p in preps])
    everything = np.ones(len(preps), dtype=bool)
    pooled = best_setting(raws, everything)
    out: dict[str, Any] = {"setting": settings(quiet)[pooled], "pooled": _norm(raws, everything, pooled, preps, cost), "groups": {},
           "lofo": {}}
    for group in GROUPS:
        rows = group_of == group
        out["groups"][group] = _norm(raws, rows, pooled, preps, cost)
        out["lofo"][group] = _norm(raws, rows, best_setting(raws, ~rows), preps, cost)
    out["lofo_mean"] = float(np.mean(list(out["lofo"].values())))
    return out


def _group(name: str) -> str:
    folder = name.split("/")[0]
    return next(g for g, folders in GROUPS.items() if folder in folders)


def _norm(raws, rows, setting, preps, cost) -> float:
    chosen = [p for p, keep in zip(preps, rows) if keep]
    return nab.normalized(float(raws[rows, setting].sum()), chosen, cost)


def main(argv: list[str] | None = None) -> str:
    """Score candidates on the tuning folders (and, with --evaluate, realAWSCloudwatch)."""
    parser = argparse.ArgumentParser(prog="python -m bench.nab_lab")
    parser.add_argument("candidates", nargs="+", help="'ours' or module names in bench/nab_candidates/")
    parser.add_argument("--combine", choices=("max", "mean"), default="max")
    parser.add_argument("--rank", action="store_true",
                        help="replace each candidate's score (not ours) by its causal rank before combining")
    parser.add_argument("--quiet-hours", default="",
                        help="comma-separated quiet times in hours (e.g. 6,12,24) instead of fractions of the file")
    parser.add_argument("--evaluate", action="store_true", help="also score realAWSCloudwatch (lead only, once)")
    args = parser.parse_args(argv if argv is not None else [])
    started = time.time()
    cost = json.loads((nab.NAB_DIR / "profiles.json").read_text())["standard"]["CostMatrix"]
    corpus = nab.load_corpus(nab.TUNING + (nab.EVALUATION if args.evaluate else ()))
    scores = {name: combined(args.candidates, name, frame, args.combine, rank=args.rank) for name, frame, _ in corpus}
    preps = {name: nab.prepare(name, nab._timestamps(frame), wins, cost) for name, frame, wins in corpus}
    tuning = [preps[n] for n, *_ in corpus if n.split("/")[0] in nab.TUNING]
    quiet = (None, *(f"{h}h" for h in args.quiet_hours.split(","))) if args.quiet_hours else REFRACTORIES
    steps = {name: series_detector.step_seconds(frame) or 60.0 for name, frame, _ in corpus}
    result = report(tuning, raw_matrix(tuning, scores, cost, steps=steps, quiet=quiet), cost, quiet=quiet)
    if args.evaluate:
        threshold, refractory = result["setting"]
        held = [preps[n] for n, *_ in corpus if n.split("/")[0] in nab.EVALUATION]
        raw = sum(nab.raw_score(p, flags(scores[p.name], threshold, refractory, steps[p.name]), cost) for p in held)
        result["evaluation"] = nab.normalized(raw, held, cost)
    text = _markdown(args, result, time.time() - started)
    out = nab.ROOT / "bench" / "results" / f"nab-lab-{'-'.join(args.candidates)}-{args.combine}{'-rank' if args.rank else ''}{'-quiet' if args.quiet_hours else ''}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    return text


def _markdown(args, result: dict, seconds: float) -> str:
    threshold, refractory = result["setting"]
    quiet = "none" if refractory is None else refractory if isinstance(refractory, str) else f"{refractory:.0%}"
    name = f" {args.combine} ".join(args.candidates) + (" (causal ranks)" if args.rank else "")
    lines = [f"## NAB lab: {name} (standard profile, {seconds:.0f} s)", "",
             f"pooled tuning score {result['pooled']:.1f} at threshold {threshold:.4f}, quiet time {quiet}", "",
             "| group | at the pooled setting | LOFO (tuned on the other groups) |", "|---|---|---|"]
    lines += [f"| {g} | {result['groups'][g]:.1f} | {result['lofo'][g]:.1f} |" for g in GROUPS]
    lines += [f"| **mean** | {np.mean(list(result['groups'].values())):.1f} | **{result['lofo_mean']:.1f}** |"]
    if "evaluation" in result:
        lines += ["", f"realAWSCloudwatch (evaluation, pooled setting): **{result['evaluation']:.1f}**"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
