"""Single-series anomaly scoring (``detect_series``): a causal forest turned into an anomaly likelihood.

Three causal stages, each reading the past only:

1. Context features per point: the level, robust deviations (median/MAD of the past) of the
   value from its recent, long and seasonal baselines, of the first difference, and of the
   short-window mean from the long-window mean (``anomalies._series_features``).
2. A raw score per point: the calibrated rank of a causal isolation forest over those features
   (``anomalies.causal_forest_scores``), plus a "spatial" flag when the value leaves the range
   seen so far by a margin.
3. Numenta's anomaly likelihood: the short-window average of raw scores is compared with the
   distribution (mean, standard deviation) of past averages over a long window; the Gaussian
   tail probability becomes a log-scaled score in [0, 1]. A raw score that is always high on a
   noisy series therefore stops alarming, while a change in how unusual the series is alarms.

The alerting (threshold, and quiet time after an alert since NAB rewards only the first
detection of a window) lives in ``analytics.anomalies``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
from scipy.special import log_ndtr

FEATURES = ("level", "z_recent", "z_long", "z_diff", "z_season", "z_short")


def raw_components(frame: pl.DataFrame, config: Any) -> pl.DataFrame:
    """Features, forest ``rank``, robust-deviation ``gate`` and ``spatial`` flag per point (causal)."""
    from analytics import anomalies  # the forest and features live with the lake detector

    feats = anomalies._series_features(frame, config)
    matrix = np.nan_to_num(feats.select(FEATURES).to_numpy(), nan=0.0, posinf=50, neginf=-50)
    matrix = np.clip(matrix, -50, 50)
    n = len(feats)
    warm = max(config.min_warmup, int(config.warmup_fraction * n))
    rank = anomalies.causal_forest_scores(matrix, np.arange(n), first_fit=warm, refit_every=config.refit_every,
                                          train_rows=config.max_train, n_estimators=config.n_estimators,
                                          seed=config.seed)
    gate = np.max(np.abs(matrix[:, 1:]), axis=1)
    spatial = spatial_flags(feats.get_column("value").to_numpy(), margin=config.spatial_margin,
                            learn=config.likelihood_learn)
    return feats.with_columns(pl.Series("rank", rank), pl.Series("gate", gate), pl.Series("spatial", spatial))


def spatial_flags(values: np.ndarray, *, margin: float, learn: int) -> np.ndarray:
    """True where the value leaves [past min, past max] by ``margin`` of the past range (after ``learn`` points)."""
    n = len(values)
    out = np.zeros(n, dtype=bool)
    if n < 2 or margin <= 0:
        return out
    hi = np.maximum.accumulate(values)[:-1]
    lo = np.minimum.accumulate(values)[:-1]
    span = hi - lo
    cur = values[1:]
    out[1:] = ((cur > hi + margin * span) | (cur < lo - margin * span)) & (span > 0)
    out[: max(learn, 1)] = False
    return out


def combined_score(rank: np.ndarray, gate: np.ndarray, spatial: np.ndarray, config: Any) -> np.ndarray:
    """Final score in [0, 1]: log-likelihood of the recent raw scores, 1.0 on a spatial anomaly, 0 under the gate."""
    score = np.zeros(len(rank))
    fitted = np.flatnonzero(~np.isnan(rank))
    if len(fitted):  # the likelihood learns from the forest's first scored point on
        first = int(fitted[0])
        score[first:] = log_likelihood(np.nan_to_num(rank[first:], nan=0.0), short=config.likelihood_short,
                                       long=config.likelihood_long, learn=config.likelihood_learn)
    score = np.where(gate >= config.z_gate, score, 0.0)
    return np.where(spatial, 1.0, score)


def log_likelihood(raw: np.ndarray, *, short: int, long: int, learn: int) -> np.ndarray:
    """Numenta's anomaly likelihood (log scale, [0, 1]) of the short average among past averages."""
    n = len(raw)
    if n == 0:
        return np.zeros(0)
    avg = pl.Series(raw).rolling_mean(window_size=short, min_samples=1)
    past = avg.shift(1)
    mean = past.rolling_mean(window_size=long, min_samples=learn).to_numpy()
    std = past.rolling_std(window_size=long, min_samples=learn).to_numpy()
    mean = np.maximum(mean, 0.03)  # Numenta's lower bounds on the fitted normal
    std = np.sqrt(np.maximum(np.nan_to_num(std, nan=0.0) ** 2, 0.0003))
    z = np.nan_to_num((avg.to_numpy() - mean) / std, nan=-10.0)
    score = np.clip(log_ndtr(-z) / math.log(1e-10), 0.0, 1.0)  # tail 1e-10 -> 1.0
    score = np.where(np.isnan(mean) | (np.arange(n) < learn), 0.0, score)
    return score
