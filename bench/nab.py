"""Numenta Anomaly Benchmark: NAB's scoring, implemented here, run on our detector.

Scoring (as in NAB's ``nab/sweeper.py``): every labelled anomaly has a window; a detection
inside a window earns ``tpWeight * S(pos) / S(-1)`` where S is NAB's scaled sigmoid
``2 * sigmoid(-5 * pos) - 1`` and pos runs from -1 (left edge) to 0 (right edge); only the
best (earliest) detection of a window counts; a window with no detection costs ``fnWeight``;
a detection outside every window costs ``fpWeight * S(distance past the previous window's
right edge, in window widths)`` (a full -fpWeight when no window precedes it). The first 15%
of each file (at most 750 points) is probationary and not scored. A set of files is normalised
as 100 * (raw - null) / (perfect - null), where the null detector detects nothing
(-fnWeight per window) and the perfect one hits every window at its left edge (+tpWeight each).

Checked against NAB's reference sweeper (tests/test_nab_scoring.py: a point-by-point
transcription of ``calcSweepScore``/``calcScoreByThreshold`` agrees on random detectors; the
null detector scores 0, a detection at the left edge of every window 100).

No look-ahead: the detector is ``analytics.anomalies.series_scores`` (``analytics.series_detector``:
two causal isolation forests, one over context features and one over forecast-error features,
their calibrated ranks averaged, gated by a robust deviation that must also be a deviation from
the same time on earlier days once two days are known, plus a flag when a value leaves the range
seen so far; the larger of that score and the discord rank of the shape ending at each point,
``analytics.discord``); an alert silences the series for a fraction of its length (NAB counts only
the best detection of a window, and every other flag outside a window costs). The score
stage (score mode: the ensemble rank or Numenta's anomaly likelihood of it, likelihood window, gate,
seasonal gate, range flag) is the product's: sessions 2-3 chose it with NAB's threshold optimisation
over all of them (``--search-stages`` reruns that search) and session 4 added the discord rank by the
leave-one-group-out selection of bench/nab_lab.py. By default the threshold and the quiet time are
tuned, on the tuning folders only (realKnownCause, realTraffic, artificial*), separately per profile,
and then applied unchanged, once, to realAWSCloudwatch, which is reported as evaluation.
Baseline: a plain isolation forest on (value, rolling z-score), causal with the same refit
schedule, every point over the threshold an alert, tuned the same way.

Speed: files run in a process pool with ``--jobs N`` (default 1: the machine is shared) and each file's raw detector
output (ensemble ranks, gates, values; plain-forest ranks) is cached in
bench/results/nab_cache/<kind>-<hash>/, the hash covering the raw-stage config AND the source of
the code that computes it (``code_fingerprint``), so a changed detector never reads stale
scores, while re-tuning the score stage reruns no forest. Delete that folder to force a cold run.

Views: ``--views context,forecast,novelty`` runs the detector with the opt-in novelty view (CAD OSE style
novel level contexts and KNN-CAD nonconformity; ``series_detector.novelty_columns``), written to
bench/results/nab-context-forecast-novelty.md; the product default stays context + forecast because the
novelty view did not raise the tuning-folder score (62.8 vs 63.5, standard profile).

Run: ``.venv/bin/python -m bench.nab`` (writes bench/results/nab.md).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from analytics import anomalies, discord, series_detector
from analytics.series import read_series

ROOT = Path(__file__).resolve().parents[1]
NAB_DIR = ROOT.parent / "shared" / "nab"
TUNING = ("realKnownCause", "realTraffic", "artificialWithAnomaly", "artificialNoAnomaly")
EVALUATION = ("realAWSCloudwatch",)
PROBATION_PERCENT = 0.15


@dataclass(frozen=True)
class Prepared:
    """Per-point NAB weights of one file: sweep score, window id (-1 none), scorable mask."""

    name: str
    sweep: np.ndarray
    window: np.ndarray
    scorable: np.ndarray
    windows: int
    live: tuple[int, ...] = ()


def scaled_sigmoid(position: float) -> float:
    """NAB's scaled sigmoid of a relative position in (or past) a window."""
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def prepare(name: str, timestamps: list[str], windows: list[list[str]], cost: dict[str, float]) -> Prepared:
    """NAB's per-point scores for one file (``Sweeper.calcSweepScore``)."""
    index = {t: i for i, t in enumerate(timestamps)}
    n = len(timestamps)
    sweep, window_of = np.zeros(n), np.full(n, -1)
    max_tp = scaled_sigmoid(-1.0)
    spans = [(index[_key(a)], index[_key(b)]) for a, b in windows]
    for w, (left, right) in enumerate(spans):
        width = right - left + 1
        for i in range(left, right + 1):
            sweep[i] = scaled_sigmoid(-(right - i + 1) / width) * cost["tpWeight"] / max_tp
            window_of[i] = w
    prev_right, prev_width = None, None
    span_iter = iter(spans + [(n + 1, n + 1)])
    left, right = next(span_iter)
    for i in range(n):
        if i > right:
            prev_right, prev_width = right, right - left + 1
            left, right = next(span_iter)
        if window_of[i] >= 0:
            continue
        pos = 3.0 if prev_right is None else abs(prev_right - i) / float(prev_width - 1)
        sweep[i] = scaled_sigmoid(pos) * cost["fpWeight"]
    probation = min(math.floor(PROBATION_PERCENT * n), PROBATION_PERCENT * 5000)
    scorable = np.arange(n) >= probation
    live = {int(w) for w in window_of[scorable] if w >= 0}
    return Prepared(name, sweep, window_of, scorable, len(live), tuple(sorted(live)))


def _key(stamp: str) -> str:
    return stamp.split(".")[0]


def raw_score(prep: Prepared, alerts: np.ndarray, cost: dict[str, float]) -> float:
    """NAB raw score of boolean alerts on one file."""
    active = alerts & prep.scorable
    fp = float(prep.sweep[active & (prep.window < 0)].sum())
    total = fp
    for w in prep.live:
        hits = active & (prep.window == w)
        total += float(prep.sweep[hits].max()) if hits.any() else -cost["fnWeight"]
    return total


def normalized(raw: float, preps: list[Prepared], cost: dict[str, float]) -> float:
    """100 * (raw - null) / (perfect - null) over a set of files."""
    windows = sum(p.windows for p in preps)
    null, perfect = -cost["fnWeight"] * windows, cost["tpWeight"] * windows
    return 100.0 * (raw - null) / (perfect - null)


def load_corpus(folders: tuple[str, ...]) -> list[tuple[str, pl.DataFrame, list[list[str]]]]:
    """(relative name, series frame, windows) of every file in ``folders``."""
    labels = json.loads((NAB_DIR / "labels" / "combined_windows.json").read_text())
    out = []
    for folder in folders:
        for path in sorted((NAB_DIR / "data" / folder).glob("*.csv")):
            name = f"{folder}/{path.name}"
            out.append((name, read_series(path), labels.get(name, [])))
    return out


def _timestamps(frame: pl.DataFrame) -> list[str]:
    return frame.get_column("timestamp").dt.strftime("%Y-%m-%d %H:%M:%S").to_list()


RAW_FIELDS = ("recent_points", "long_points", "refit_every", "warmup_fraction", "min_warmup", "max_train",
              "n_estimators", "short_points", "seed")
RAW_STAGE = ("raw_components", "forecast_features", "view_matrix", "past_rank", "causal_ranks", "training_rows",
             "season_period", "season_deviation", "novelty_columns", "long_scale", "level_codes", "context_novelty",
             "knn_nonconformity")
RAW_CONSTANTS = ("FEATURES", "FORECAST_FEATURES", "EWM_ALPHAS", "VOLATILITY_POINTS", "RANK_POINTS", "VIEWS",
                 "REFERENCE_ROWS", "VIEW_COLUMNS", "NOVELTY_LEVELS", "NOVELTY_ORDERS", "NOVELTY_RECENT", "KNN_LAGS",
                 "KNN_K", "KNN_MEMORY")
CACHE = ROOT / "bench" / "results" / "nab_cache"
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def ours(frame: pl.DataFrame, config: anomalies.SeriesConfig, *,
         views: tuple[str, ...] = series_detector.VIEWS) -> np.ndarray:
    """The product detector's raw per-point components: (ensemble forest rank, robust deviation, value, seasonal
    deviation, discord rank)."""
    scored = series_detector.raw_components(frame.select("timestamp", "value"), config, views=views)
    return np.vstack([scored.get_column(c).to_numpy() for c in ("rank", "deviation", "value", "season", "discord")])


@dataclass(frozen=True)
class Stage:
    """One candidate score stage: score mode, seasonal gate and the config (gate, range flag, alerting)."""

    mode: str
    season_gate: float
    config: anomalies.SeriesConfig


def final_score(raw: np.ndarray, config: anomalies.SeriesConfig, *, mode: str = series_detector.SCORE_MODE,
                season_gate: float = series_detector.SEASON_GATE) -> np.ndarray:
    """The detector's score from cached raw components (exactly as series_scores computes it)."""
    spatial = series_detector.spatial_flags(raw[2], margin=config.spatial_margin, learn=config.likelihood_learn)
    gate = series_detector.seasonal_gate(raw[1], raw[3], limit=season_gate)
    return np.maximum(series_detector.combined_score(raw[0], gate, spatial, config, mode=mode), raw[4])


def plain_forest(frame: pl.DataFrame, config: anomalies.SeriesConfig) -> np.ndarray:
    """Baseline: causal isolation forest on (value, rolling z-score), no context features."""
    value = pl.col("value")
    mean = value.shift(1).rolling_mean(window_size=config.recent_points, min_samples=3)
    std = value.shift(1).rolling_std(window_size=config.recent_points, min_samples=3)
    feats = frame.with_columns(((value - mean) / (std + 1e-9)).fill_null(0.0).alias("z"))
    matrix = np.clip(np.nan_to_num(feats.select("value", "z").to_numpy()), -1e9, 1e9)
    n = len(matrix)
    warm = max(config.min_warmup, int(config.warmup_fraction * n))
    rank = anomalies.causal_forest_scores(matrix, np.arange(n), first_fit=warm, refit_every=config.refit_every,
                                          train_rows=config.max_train, n_estimators=config.n_estimators,
                                          seed=config.seed)
    return np.nan_to_num(rank, nan=0.0)


def code_fingerprint(kind: str = "ours") -> str:
    """Hash of the code behind a cached raw stage: ``ours`` (detector raw stage) or ``plain`` (baseline forest)."""
    if kind == "plain":
        functions = [plain_forest, anomalies.causal_forest_scores, series_detector.training_rows, anomalies._fit_and_rank]
        constants: list[str] = []
    else:
        functions = [getattr(series_detector, f) for f in RAW_STAGE] + [
            series_detector.series_features, series_detector._season_z, ours]
        constants = [repr(getattr(series_detector, c)) for c in RAW_CONSTANTS] + [inspect.getsource(discord)]
    parts = [inspect.getsource(f) for f in functions] + constants
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:10]


def _cache_path(name: str, config: anomalies.SeriesConfig, *, kind: str = "ours", code: str | None = None,
                views: tuple[str, ...] = series_detector.VIEWS) -> Path:
    """Cache file of one NAB file's raw stage, keyed by the raw-stage config, the views AND the code behind it."""
    fields = repr([getattr(config, f) for f in RAW_FIELDS] + [kind, code or code_fingerprint(kind)]
                  + ([list(views)] if kind == "ours" else []))
    key = hashlib.sha1(fields.encode()).hexdigest()[:10]
    return CACHE / f"{kind}-{key}" / (name.replace("/", "__") + ".npy")


def _cached(kind: str, name: str, frame: pl.DataFrame, config: anomalies.SeriesConfig,
            views: tuple[str, ...] = series_detector.VIEWS) -> np.ndarray:
    path = _cache_path(name, config, kind=kind, views=views)
    if path.exists():
        return np.load(path)
    value = ours(frame, config, views=views) if kind == "ours" else plain_forest(frame, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, value)
    return value


def _run_one(args: tuple) -> tuple[str, np.ndarray, np.ndarray]:
    name, frame, config, views = args
    return name, _cached("ours", name, frame, config, views), _cached("plain", name, frame, config)


def score_all(corpus, config, *, workers: int = 2,
              views: tuple[str, ...] = series_detector.VIEWS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Raw components of both detectors on every file (cached per file; parallel processes)."""
    jobs = sorted(((name, frame, config, views) for name, frame, _ in corpus), key=lambda job: -len(job[1]))
    if workers <= 1:
        return {name: (a, b) for name, a, b in map(_run_one, jobs)}
    # spawn, not fork: polars' thread pool does not survive a fork
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return {name: (a, b) for name, a, b in pool.map(_run_one, jobs)}


def alerts(score: np.ndarray, *, threshold: float, refractory: int) -> np.ndarray:
    """Same alerts as ``anomalies.alerts_from_scores``, one step per alert instead of per point over threshold."""
    out = np.zeros(len(score), dtype=bool)
    above = np.flatnonzero(score >= threshold)
    pos = 0
    while pos < len(above):
        index = int(above[pos])
        out[index] = True
        pos = int(np.searchsorted(above, index + refractory, side="right"))
    return out


def evaluate(preps, scores, *, threshold: float, refractory: float | None, cost) -> float:
    """Normalised NAB score of a set of files at one threshold (refractory None: every point alerts)."""
    raw = 0.0
    for prep in preps:
        score = scores[prep.name]
        if refractory is None:
            flags = score >= threshold
        else:
            flags = alerts(score, threshold=threshold, refractory=max(1, int(refractory * len(score))))
        raw += raw_score(prep, flags, cost)
    return normalized(raw, preps, cost)


GRID = np.unique(np.concatenate([np.linspace(0.02, 0.99, 98), 1 - np.logspace(-4, -2, 21), [1.0]]))


def tune(preps, scores, *, refractories, cost) -> tuple[float, float | None, float]:
    """NAB threshold optimisation (grid) on the tuning files: (threshold, refractory, score)."""
    best = (1.0, None, -1e9)
    for refractory in refractories:
        for threshold in GRID:
            value = evaluate(preps, scores, threshold=float(threshold), refractory=refractory, cost=cost)
            if value > best[2]:
                best = (float(threshold), refractory, value)
    return best


GATES = (0.0, 4.0, 5.0, 6.0)
SEASON_GATES = (0.0, 3.0)
SPATIAL = (0.0, 0.1, 0.2)
REFRACTORIES = (0.05, 0.1, 0.15)
LIKELIHOOD_LONG = (1000, 2000)


def stages(config: anomalies.SeriesConfig) -> list[Stage]:
    """Candidate score stages over gate, seasonal gate, range flag, score mode and the likelihood's long window."""
    out = []
    for gate in GATES:
        for season in SEASON_GATES:
            for margin in SPATIAL:
                trial = replace(config, z_gate=gate, spatial_margin=margin)
                out.append(Stage("rank", season, trial))
                out += [Stage("likelihood", season, replace(trial, likelihood_long=long)) for long in LIKELIHOOD_LONG]
    return out


def tune_ours(tuning, raws, config, *, cost, fixed: Stage | None = None) -> tuple[Stage, float]:
    """Threshold optimisation on the tuning files only: over (score mode, gates, range flag, likelihood
    window, quiet time, threshold), or, with ``fixed``, over quiet time and threshold only."""
    best: tuple[Stage, float] = (Stage("rank", 0.0, config), -1e9)
    names = {p.name for p in tuning}
    for stage in [fixed] if fixed else stages(config):
        scores = {name: final_score(raw, stage.config, mode=stage.mode, season_gate=stage.season_gate)
                  for name, raw in raws.items() if name in names}
        thr, refr, value = tune(tuning, scores, refractories=REFRACTORIES, cost=cost)
        if value > best[1]:
            best = (replace(stage, config=replace(stage.config, threshold=thr, refractory_fraction=float(refr or 0.0))),
                    value)
    return best


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    detector: str
    profile: str
    threshold: float
    tuning: float
    evaluation: float


def run_profile(profile: str, corpus, results, config, *, held_out: bool = True, fixed: Stage | None = None,
                views: tuple[str, ...] = series_detector.VIEWS) -> tuple[list[Row], Stage]:
    """Tune the detectors on the tuning folders for one NAB profile and score them once on the evaluation folder.

    Like NAB, a profile other than the first re-optimises only the alerting (threshold, quiet
    time) of the detector chosen for the first (``fixed``).
    """
    cost = json.loads((NAB_DIR / "profiles.json").read_text())[profile]["CostMatrix"]
    preps = {name: prepare(name, _timestamps(frame), wins, cost) for name, frame, wins in corpus}
    tuning = [preps[n] for n, *_ in corpus if n.split("/")[0] in TUNING]
    evaluation = [preps[n] for n, *_ in corpus if n.split("/")[0] in EVALUATION]

    def held(scores, threshold, refractory):
        return evaluate(evaluation, scores, threshold=threshold, refractory=refractory, cost=cost) if held_out else math.nan

    stage, tuned = tune_ours(tuning, {n: r[0] for n, r in results.items()}, config, cost=cost, fixed=fixed)
    mode, best = stage.mode, stage.config
    label = (f"meshlens: causal IF x{len(views)} views ({'+'.join(views)}) max discord rank, {mode}, gate {best.z_gate:g}, seasonal gate {stage.season_gate:g}, "
             f"range flag {best.spatial_margin:g}, quiet {best.refractory_fraction:.0%}"
             + (f", likelihood window {best.likelihood_long}" if mode == "likelihood" else ""))
    final = {n: final_score(r[0], best, mode=mode, season_gate=stage.season_gate) for n, r in results.items()}
    rows = [Row(label, profile, best.threshold, tuned, held(final, best.threshold, best.refractory_fraction))]
    plain = {n: r[1] for n, r in results.items()}
    p_thr, _, p_tuned = tune(tuning, plain, refractories=(None,), cost=cost)
    rows.append(Row("plain isolation forest on value + rolling z", profile, p_thr, p_tuned, held(plain, p_thr, None)))
    q_thr, q_refr, q_tuned = tune(tuning, plain, refractories=REFRACTORIES, cost=cost)
    rows.append(Row(f"plain isolation forest + the same quiet time ({q_refr:.0%})", profile, q_thr, q_tuned,
                    held(plain, q_thr, q_refr)))
    return rows, stage


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark and write bench/results/nab.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.nab")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (files run in parallel)")
    parser.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated NAB profiles to score")
    parser.add_argument("--views", default=",".join(series_detector.VIEWS),
                        help="comma-separated forest views (context, forecast, novelty); default: the product's")
    parser.add_argument("--search-stages", action="store_true",
                        help="search the score stage (gates, range flag, score mode) too, as sessions 2-3 chose it; "
                             "by default the product's stage is scored and only the threshold and quiet time are tuned")
    parser.add_argument("--tuning-only", action="store_true",
                        help="tune and report the tuning folders only; do not look at the evaluation folder")
    args = parser.parse_args(argv if argv is not None else [])
    config = anomalies.SeriesConfig()
    started = time.time()
    corpus = load_corpus(TUNING if args.tuning_only else TUNING + EVALUATION)
    views = tuple(v for v in args.views.split(",") if v)
    unknown = set(views) - set(series_detector.VIEW_COLUMNS)
    if unknown or not views:
        parser.error(f"unknown view(s) {sorted(unknown)}; choose from {sorted(series_detector.VIEW_COLUMNS)}")
    results = score_all(corpus, config, workers=args.jobs, views=views)
    rows: list[Row] = []
    chosen: dict[str, Stage] = {}
    for profile in args.profiles.split(","):
        product = Stage(series_detector.SCORE_MODE, series_detector.SEASON_GATE, config)
        fixed = next(iter(chosen.values()), None if args.search_stages else product)
        profile_rows, chosen[profile] = run_profile(profile, corpus, results, config, held_out=not args.tuning_only,
                                                    fixed=fixed, views=views)
        rows += profile_rows
    n_tuning = sum(1 for n, *_ in corpus if n.split("/")[0] in TUNING)
    table = _markdown(rows, time.time() - started, n_tuning, len(corpus) - n_tuning, chosen)
    suffix = "" if views == series_detector.VIEWS else "-" + "-".join(views)  # a trial never overwrites nab.md
    out = ROOT / "bench" / "results" / (("nab-tuning" if args.tuning_only else "nab") + suffix + ".md")
    if suffix:
        table = table.replace("(the product defaults)", "(a trial; not the product defaults)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table, encoding="utf-8")
    print(table)
    return table


def _markdown(rows: list[Row], seconds: float, n_tuning: int, n_eval: int, chosen) -> str:
    lines = ["## NAB (normalised score, no look-ahead)", "",
             f"Tuned on {n_tuning} files (realKnownCause, realTraffic, artificial*); "
             f"evaluated once on realAWSCloudwatch ({n_eval} files). {seconds:.0f} s.", "",
             "| detector | profile | alert threshold (tuned) | tuning folders | realAWSCloudwatch (evaluation) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.detector} | {r.profile} | {r.threshold:.4f} | {r.tuning:.1f} | {r.evaluation:.1f} |" for r in rows]
    if chosen:
        profile, stage = next(iter(chosen.items()))
        best = stage.config
        lines += ["", f"Detector chosen on the {profile} profile (the product defaults): score_mode={stage.mode}, "
                      f"season_gate={stage.season_gate:g}, threshold={best.threshold:.4f}, z_gate={best.z_gate:g}, "
                      f"spatial_margin={best.spatial_margin:g}, refractory_fraction={best.refractory_fraction:g}, "
                      f"likelihood_long={best.likelihood_long}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
