"""Anomalies with reasons: a causal isolation forest over minute feature vectors.

What is scored
    Per service and per edge (caller -> service), per minute: request rate, 5xx ratio, 4xx
    ratio, p50 and p99 latency and bytes, each turned into a deviation from the same series'
    recent baseline (the previous ``recent_minutes``) and, where at least two earlier days
    exist, from its seasonal baseline (the same minute of day on earlier days; the same minute
    of week once two earlier weeks exist). Error ratios use a binomial z (with an overdispersion
    term) so a quiet service's single error is not an outage.

Causal
    The forest that scores minute m was fitted only on minutes before the last refit boundary
    at or before m (refits every ``refit_minutes``), and its score is calibrated against the
    scores of its own training rows. Baselines use only earlier minutes. So what is flagged at
    10:31 is exactly what would have been flagged live at 10:31.

Flagged
    A minute is anomalous when the forest ranks it above ``quantile`` of its training rows
    AND at least one signal moved in the bad direction by ``z_gate`` robust deviations and by
    a practical amount (e.g. the 5xx ratio at least doubled and rose by 2 points). Improvements
    (fewer errors, lower latency) never flag. Consecutive anomalous minutes (gaps up to
    ``merge_gap_minutes``) of related series (sharing a service: a failing dependency, the edges
    into it and the callers that fail with it) become one ``Incident``.

The same forest, features and refit schedule score a single metric series (``detect_series``:
CSV or CloudWatch exports, NAB files): there the series' level and its deviations from the
recent and seasonal baselines are the features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import polars as pl
from sklearn.ensemble import IsolationForest

from analytics.series import red_minute_series
from meshlens.timewin import Window, iso

SIGNALS = ("rate", "err", "cerr", "p50", "p99", "bytes")
SIGNAL_WORDS = {"rate": "request rate", "err": "5xx ratio", "cerr": "4xx ratio",
                "p50": "p50", "p99": "p99", "bytes": "bytes"}


@dataclass(frozen=True)
class LakeConfig:
    """Knobs of the lake detector (minute series)."""

    recent_minutes: int = 60
    refit_minutes: int = 60
    warmup_minutes: int = 60
    history_days: int = 7
    train_rows: int = 20_000
    n_estimators: int = 64
    quantile: float = 0.99
    z_gate: float = 6.0
    min_minutes: int = 2
    merge_gap_minutes: int = 3
    seed: int = 7


@dataclass(frozen=True)
class SeriesConfig:
    """Knobs of the single-series detector (tuned on NAB's tuning folders only)."""

    recent_points: int = 24
    long_points: int = 288
    refit_every: int = 200
    warmup_fraction: float = 0.15
    min_warmup: int = 50
    max_train: int = 5000
    n_estimators: int = 48
    threshold: float = 0.995
    z_gate: float = 3.0
    refractory_fraction: float = 0.05
    seed: int = 7


@dataclass
class Incident:
    """Consecutive anomalous minutes of related series, with the reasons in words."""

    start: datetime
    end: datetime  # exclusive: one step after the last anomalous point
    peak: datetime
    score: float
    services: list[str] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    env: str | None = None

    @property
    def summary(self) -> str:
        """One line: when, who, why."""
        who = ", ".join(self.services[:4]) + (" ..." if len(self.services) > 4 else "")
        why = self.reasons[0] if self.reasons else "unusual traffic"
        return f"{iso(self.start)} to {iso(self.end)}: {who}: {why}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"start": iso(self.start), "end": iso(self.end), "peak": iso(self.peak),
                "score": round(self.score, 4), "services": self.services,
                "edges": [f"{a} -> {b}" for a, b in self.edges], "reasons": self.reasons,
                "series": self.series, "env": self.env}


# --------------------------------------------------------------------------------------
# The causal forest (shared by the lake and the single-series detector)
# --------------------------------------------------------------------------------------
def causal_forest_scores(
    features: np.ndarray,
    times: np.ndarray,
    *,
    first_fit: int,
    refit_every: int,
    train_rows: int,
    n_estimators: int,
    seed: int,
    score_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Calibrated anomaly rank in [0, 1] per row (NaN before the first fit), fitted on the past only.

    ``times`` are integer steps sorted ascending; rows at step t are scored by a forest
    trained on rows with step < the refit boundary b <= t, and ranked against that forest's
    scores of its training rows. ``score_mask`` limits scoring to rows that could matter.
    """
    out = np.full(len(times), np.nan)
    if len(times) == 0:
        return out
    boundaries = np.arange(first_fit, int(times[-1]) + 1, max(1, refit_every))
    rng = np.random.default_rng(seed)
    for left, right in zip(boundaries, np.append(boundaries[1:], np.iinfo(np.int64).max)):
        lo, hi = np.searchsorted(times, [left, right])
        if hi <= lo:
            continue
        block = np.arange(lo, hi)
        if score_mask is not None:
            block = block[score_mask[lo:hi]]
        if len(block) == 0 or lo < 16:
            continue
        train = _training_rows(lo, train_rows, rng)
        out[block] = _fit_and_rank(features[train], features[block], n_estimators, seed)
    return out


def _training_rows(end: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """The most recent rows before ``end`` (half of them), plus a random half of the older ones."""
    if end <= limit:
        return np.arange(end)
    recent = np.arange(end - limit // 2, end)
    older = rng.choice(end - limit // 2, size=limit - limit // 2, replace=False)
    return np.concatenate([older, recent])


def _fit_and_rank(train: np.ndarray, rows: np.ndarray, n_estimators: int, seed: int) -> np.ndarray:
    model = IsolationForest(n_estimators=n_estimators, max_samples=min(256, len(train)),
                            random_state=seed)
    model.fit(train)
    reference = np.sort(-model.score_samples(train))
    return np.searchsorted(reference, -model.score_samples(rows), side="right") / len(reference)


# --------------------------------------------------------------------------------------
# Single metric series
# --------------------------------------------------------------------------------------
def series_scores(frame: pl.DataFrame, config: SeriesConfig = SeriesConfig()) -> pl.DataFrame:
    """Per point: timestamp, value, the context features, ``rank`` (forest) and ``score`` in [0, 1]."""
    frame = frame.sort("timestamp").drop_nulls("value").filter(pl.col("value").is_finite())
    feats = _series_features(frame, config)
    names = ["level", "z_recent", "z_long", "z_diff", "z_season"]
    matrix = np.nan_to_num(feats.select(names).to_numpy(), nan=0.0, posinf=50, neginf=-50)
    matrix = np.clip(matrix, -50, 50)
    n = len(feats)
    warm = max(config.min_warmup, int(config.warmup_fraction * n))
    rank = causal_forest_scores(matrix, np.arange(n), first_fit=warm, refit_every=config.refit_every,
                                train_rows=config.max_train, n_estimators=config.n_estimators,
                                seed=config.seed)
    gate = np.max(np.abs(matrix[:, 1:]), axis=1)
    score = np.where(gate >= config.z_gate, np.nan_to_num(rank, nan=0.0), 0.0)
    return feats.with_columns(pl.Series("rank", rank), pl.Series("gate", gate), pl.Series("score", score))


def _series_features(frame: pl.DataFrame, config: SeriesConfig) -> pl.DataFrame:
    value = pl.col("value")
    step = _step_seconds(frame)
    period = int(round(86400 / step)) if step else 0
    past = value.shift(1)
    recent_med = past.rolling_median(window_size=config.recent_points, min_samples=3)
    long_med = past.rolling_median(window_size=config.long_points, min_samples=10)
    long_mad = (value - long_med).abs().shift(1).rolling_median(window_size=config.long_points, min_samples=10)
    scale = pl.max_horizontal(long_mad * 1.4826, value.abs().shift(1).rolling_mean(
        window_size=config.long_points, min_samples=3) * 0.01, pl.lit(1e-9))
    diff = value - past
    diff_scale = diff.abs().shift(1).rolling_median(window_size=config.long_points, min_samples=10) * 1.4826
    exprs = [
        value.alias("level"),
        ((value - recent_med) / scale).alias("z_recent"),
        ((value - long_med) / scale).alias("z_long"),
        (diff / pl.max_horizontal(diff_scale, scale * 0.1)).alias("z_diff"),
        _season_z(value, period, scale).alias("z_season"),
    ]
    return frame.with_columns(exprs).with_columns(pl.col("z_season").fill_null(0.0))


def _season_z(value: pl.Expr, period: int, scale: pl.Expr) -> pl.Expr:
    """Deviation from the median of the same time on (up to 7) earlier days; null before two days."""
    if period < 2:
        return pl.lit(None, dtype=pl.Float64)
    lags = [value.shift(period * k) for k in range(1, 8)]
    count = pl.sum_horizontal([lag.is_not_null().cast(pl.Int32) for lag in lags])
    base = pl.concat_list(lags).list.drop_nulls().list.median()
    return pl.when(count >= 2).then((value - base) / scale).otherwise(None)


def _step_seconds(frame: pl.DataFrame) -> float:
    if len(frame) < 3:
        return 0.0
    diffs = frame.get_column("timestamp").diff().drop_nulls().dt.total_seconds()
    return float(diffs.median() or 0.0)


def series_alerts(scored: pl.DataFrame, config: SeriesConfig = SeriesConfig()) -> np.ndarray:
    """Boolean alert per point: score over threshold and not within the refractory span of the last alert."""
    score = scored.get_column("score").to_numpy()
    refractory = max(1, int(config.refractory_fraction * len(score)))
    return alerts_from_scores(score, threshold=config.threshold, refractory=refractory)


def alerts_from_scores(score: np.ndarray, *, threshold: float, refractory: int) -> np.ndarray:
    """Causal alerting: alert when score >= threshold, then stay quiet for ``refractory`` points."""
    alerts = np.zeros(len(score), dtype=bool)
    quiet_until = -1
    for index in np.flatnonzero(score >= threshold):
        if index > quiet_until:
            alerts[index] = True
            quiet_until = index + refractory
    return alerts


def detect_series(frame: pl.DataFrame, config: SeriesConfig = SeriesConfig()) -> list[Incident]:
    """Incidents of one metric series (columns timestamp, value[, series]); causal, with reasons."""
    name = frame.get_column("series")[0] if "series" in frame.columns and len(frame) else "series"
    scored = series_scores(frame.select("timestamp", "value"), config)
    flagged = scored.get_column("score").to_numpy() >= config.threshold
    incidents = []
    step = timedelta(seconds=_step_seconds(scored) or 60)
    for lo, hi in _runs(flagged, gap=max(1, int(config.refractory_fraction * len(flagged)))):
        part = scored.slice(lo, hi - lo)
        peak = int(np.argmax(np.abs(part.get_column("z_long").to_numpy())))
        row = part.row(peak, named=True)
        incidents.append(Incident(
            start=part.get_column("timestamp")[0], end=part.get_column("timestamp")[-1] + step,
            peak=row["timestamp"], score=float(part.get_column("score").max() or 0.0),
            services=[str(name)], reasons=[_series_reason(str(name), row, scored, lo)],
            series=[str(name)]))
    return incidents


def _series_reason(name: str, row: dict[str, Any], scored: pl.DataFrame, lo: int) -> str:
    before = scored.slice(max(0, lo - 288), min(288, lo)).get_column("value")
    base = float(before.median()) if len(before) else float("nan")
    value = float(row["value"])
    ratio = f" ({value / base:.1f}x)" if base and math.isfinite(base) and base > 0 else ""
    return (f"{name} {_num(value)} vs {_num(base)} baseline{ratio}, "
            f"{abs(row['z_long']):.1f} robust deviations {'above' if row['z_long'] > 0 else 'below'}")


def _runs(flags: np.ndarray, *, gap: int) -> list[tuple[int, int]]:
    """[lo, hi) index runs of True, merging runs separated by at most ``gap`` False."""
    idx = np.flatnonzero(flags)
    if len(idx) == 0:
        return []
    splits = np.flatnonzero(np.diff(idx) > gap + 1)
    starts = np.concatenate([[idx[0]], idx[splits + 1]])
    ends = np.concatenate([idx[splits], [idx[-1]]]) + 1
    return list(zip(starts.tolist(), ends.tolist()))


def _num(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"
