"""Single-series anomaly scoring (``detect_series``): causal isolation forests over two feature views,
and the discord rank of the series' shape.

Three causal stages, each reading the past only:

1. Feature vectors per point, in two views of the same series:
   - context: the level, robust deviations (median/MAD of the past) of the value from its
     recent, long and seasonal baselines, of the first difference, and of the short-window
     mean from the long-window mean (``series_features``);
   - forecast: prediction errors of exponentially weighted forecasts at three speeds, the
     short-window mean and the recent volatility (mean absolute first difference), all relative
     to the long-window robust scale, and the value's rank among the previous ``RANK_POINTS``.
   - novelty (opt-in: add "novelty" to ``views``; not in the default ``VIEWS``): the value's past
     rank cut into ``NOVELTY_LEVELS`` levels, the share of the level contexts (the last k+1 levels,
     k in ``NOVELTY_ORDERS``) ending at the point never seen before and its recent mean, the
     surprise of the last transition given each context (CAD OSE style), and KNN-CAD's
     nonconformity: the mean distance of the recent lag vector to its nearest earlier lag vectors.
     On NAB's tuning folders it lowered the standard score (62.8 vs 63.5 with three views), so it is off.
2. A raw score per point: the mean over the views of the calibrated rank of a causal isolation
   forest fitted on that view (refitted every ``refit_every`` points on the past only, ranked
   against its own training rows), a robust-deviation ``gate`` (the largest |deviation| among
   the context features, set to 0 where two or more earlier days are known and the value is
   within ``SEASON_GATE`` robust deviations of the same time on them: a daily pattern, however
   sharp its edges, is not an anomaly) and a "spatial" flag when the value leaves the range
   seen so far by ``spatial_margin`` of that range; and the ``discord`` rank (``analytics.discord``):
   how far the shape ending at the point is from every earlier shape, 0 while the series is learned.
   Two forests on different views vary less than one: the variance of a single forest's
   rank was what made near-equal tunings land far apart on held-out data.
3. The score (``combined_score``): ``score_mode`` "rank" uses the ensemble rank itself,
   "likelihood" Numenta's anomaly likelihood of its short-window average among past averages;
   points under the gate score 0; a spatial anomaly scores 1 when ``spatial_margin`` > 0. The series
   score (``anomalies.series_scores``) is the larger of that and the discord rank: the forests see
   levels and jumps, the discord a new shape whose values may all be in range (chosen by the NAB
   lab's leave-one-group-out score on the tuning folders, bench/nab_lab.py).

The alerting (threshold, and quiet time after an alert since NAB rewards only the first
detection of a window) lives in ``analytics.anomalies`` (``series_alerts``); the knobs that
NAB's threshold optimisation chose on the tuning folders are the defaults of ``SeriesConfig``
there and ``SCORE_MODE``/``VIEWS``/``SEASON_GATE`` here (bench/nab.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import log_ndtr
from sklearn.ensemble import IsolationForest

from analytics import discord

FEATURES = ("level", "z_recent", "z_long", "z_diff", "z_season", "z_short")
FORECAST_FEATURES = ("level", "z_long", "z_diff", "z_ewm_fast", "z_ewm_mid", "z_ewm_slow", "z_short",
                     "volatility", "z_season", "past_rank")
EWM_ALPHAS = {"z_ewm_fast": 0.5, "z_ewm_mid": 0.1, "z_ewm_slow": 0.02}
VOLATILITY_POINTS = 12
RANK_POINTS = 1000
NOVELTY_FEATURES = ("past_rank", "novel_frac", "novel_recent", "surprise_1", "surprise_2", "surprise_3", "knn")
NOVELTY_LEVELS = 6  # the value's past rank is cut into this many levels (CAD OSE style contexts)
NOVELTY_ORDERS = (1, 2, 3)  # context lengths: transitions between the last k+1 levels
NOVELTY_RECENT = 6  # points averaged in ``novel_recent``
KNN_LAGS, KNN_K, KNN_MEMORY = 8, 5, 1500  # KNN-CAD: lag-vector length, neighbours, past vectors searched
VIEWS = ("context", "forecast")  # one forest per view; the ranks are averaged ("novelty" is opt-in)
SCORE_MODE = "rank"  # "rank" or "likelihood"
SEASON_GATE = 3.0  # within this many robust deviations of the same time on earlier days, the gate is 0
REFERENCE_ROWS = 2048  # training rows a forest's scores are ranked against


def raw_components(frame: pl.DataFrame, config: Any, *, views: tuple[str, ...] = VIEWS) -> pl.DataFrame:
    """Features, ensemble forest ``rank``, robust ``deviation``, ``season``, ``gate``, ``spatial`` flag and the
    ``discord`` rank of the shape ending at each point (causal)."""
    feats = series_features(frame, config)
    feats = feats.with_columns(forecast_features(feats, config))
    n = len(feats)
    warm = max(config.min_warmup, int(config.warmup_fraction * n))
    ranks = []
    if "novelty" in views:
        feats = feats.with_columns(novelty_columns(feats, config))
    for offset, view in enumerate(views):
        matrix = view_matrix(feats, VIEW_COLUMNS[view])
        ranks.append(causal_ranks(matrix, first_fit=warm, refit_every=config.refit_every,
                                  train_rows=config.max_train, n_estimators=config.n_estimators,
                                  seed=config.seed + offset))
    rank = np.mean(ranks, axis=0)
    deviation = np.max(np.abs(view_matrix(feats, FEATURES)[:, 1:]), axis=1)
    season = season_deviation(feats, period=season_period(step_seconds(feats)))
    spatial = spatial_flags(feats.get_column("value").to_numpy(), margin=config.spatial_margin,
                            learn=config.likelihood_learn)
    shape = discord.discord_rank(feats.get_column("value").to_numpy())
    shape[:warm] = 0.0  # like the forests: nothing is scored while the series is being learned
    return feats.with_columns(pl.Series("rank", rank), pl.Series("deviation", deviation), pl.Series("season", season),
                              pl.Series("gate", seasonal_gate(deviation, season, limit=SEASON_GATE)),
                              pl.Series("spatial", spatial), pl.Series("discord", shape))


def series_features(frame: pl.DataFrame, config: Any) -> pl.DataFrame:
    """The context view: level and robust deviations from the recent, long and seasonal baselines (causal)."""
    value = pl.col("value")
    step = step_seconds(frame)
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
        ((value.rolling_mean(window_size=config.short_points, min_samples=1)
          - past.rolling_mean(window_size=config.long_points, min_samples=10)) / scale).alias("z_short"),
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


def step_seconds(frame: pl.DataFrame) -> float:
    """The median spacing of the timestamps, in seconds (0 for fewer than three points)."""
    if len(frame) < 3:
        return 0.0
    diffs = frame.get_column("timestamp").diff().drop_nulls().dt.total_seconds()
    return float(diffs.median() or 0.0)  # type: ignore[arg-type]


VIEW_COLUMNS = {"context": FEATURES, "forecast": FORECAST_FEATURES, "novelty": NOVELTY_FEATURES}


def novelty_columns(feats: pl.DataFrame, config: Any) -> list[pl.Series]:
    """The novelty view's columns (besides ``past_rank``): novel level contexts and KNN nonconformity; causal."""
    values = feats.get_column("value").to_numpy().astype(float)
    levels = level_codes(feats.get_column("past_rank").to_numpy(), levels=NOVELTY_LEVELS)
    columns = context_novelty(levels, levels=NOVELTY_LEVELS, orders=NOVELTY_ORDERS, recent=NOVELTY_RECENT)
    scale = feats.select(long_scale(config.long_points)).to_series().to_numpy()
    columns["knn"] = np.log1p(knn_nonconformity(values, scale, lags=KNN_LAGS, k=KNN_K, memory=KNN_MEMORY))
    return [pl.Series(name, column) for name, column in columns.items()]


def long_scale(long: int) -> pl.Expr:
    """The long-window robust scale of the past values (as in the forecast view)."""
    value, past = pl.col("value"), pl.col("value").shift(1)
    long_med = past.rolling_median(window_size=long, min_samples=10)
    long_mad = (value - long_med).abs().shift(1).rolling_median(window_size=long, min_samples=10)
    return pl.max_horizontal(long_mad * 1.4826, value.abs().shift(1).rolling_mean(
        window_size=long, min_samples=3) * 0.01, pl.lit(1e-9)).alias("scale")


def level_codes(rank: np.ndarray, *, levels: int) -> np.ndarray:
    """The level (0 .. levels-1) of each point: its past rank cut into equal bins."""
    return np.clip((np.asarray(rank, dtype=float) * levels).astype(int), 0, levels - 1)


def context_novelty(codes: np.ndarray, *, levels: int, orders: tuple[int, ...], recent: int) -> dict[str, np.ndarray]:
    """Per point, from the transitions seen before it only: ``novel_frac`` (share of context orders whose
    level sequence ending here was never seen), its ``recent`` mean, and ``surprise_k`` (-log of the
    Laplace-smoothed probability of the last level given the previous k)."""
    n = len(codes)
    novel = np.zeros((n, len(orders)))
    out: dict[str, np.ndarray] = {}
    for column, order in enumerate(orders):
        surprise = np.zeros(n)
        seen: dict[tuple[int, ...], int] = {}
        prefixes: dict[tuple[int, ...], int] = {}
        for i in range(order, n):
            key = tuple(codes[i - order:i + 1].tolist())
            count, prefix = seen.get(key, 0), prefixes.get(key[:-1], 0)
            surprise[i] = -math.log((count + 1) / (prefix + levels))
            novel[i, column] = count == 0
            seen[key], prefixes[key[:-1]] = count + 1, prefix + 1
        out[f"surprise_{order}"] = surprise
    frac = novel.mean(axis=1) if orders else np.zeros(n)
    out["novel_frac"] = frac
    out["novel_recent"] = pl.Series(frac).rolling_mean(window_size=max(1, recent), min_samples=1).to_numpy()
    return {name: out[name] for name in ("novel_frac", "novel_recent", *(f"surprise_{k}" for k in orders))}


def knn_nonconformity(values: np.ndarray, scale: np.ndarray, *, lags: int, k: int, memory: int,
                      block: int = 256) -> np.ndarray:
    """KNN-CAD: mean distance (RMS per lag, over ``scale``) of the lag vector ending at each point to its ``k``
    nearest among the ``memory`` earlier lag vectors that do not overlap it; 0 with fewer than ``k`` of them."""
    n = len(values)
    out = np.zeros(n)
    if n < lags:
        return out
    vectors = sliding_window_view(values.astype(float), lags)  # row r: the vector ending at r + lags - 1
    for start in range(0, len(vectors), block):
        stop = min(len(vectors), start + block)
        low = max(0, start - lags - memory + 1)
        high = stop - lags  # candidate rows < high
        if high <= low:
            continue
        diff = vectors[start:stop, None, :] - vectors[None, low:high, :]
        dist = np.sqrt((diff ** 2).mean(axis=2))
        query = np.arange(start, stop)[:, None]
        cand = np.arange(low, high)[None, :]
        dist[(cand > query - lags) | (cand < query - lags - memory + 1)] = np.inf
        kth = np.sort(np.partition(dist, min(k, dist.shape[1]) - 1, axis=1)[:, :k], axis=1) if dist.shape[1] >= k else None
        if kth is None:
            continue
        enough = np.isfinite(kth).all(axis=1)
        rows = np.arange(start, stop) + lags - 1
        safe = np.maximum(np.nan_to_num(scale[rows], nan=1e-9), 1e-9)
        out[rows] = np.where(enough, np.where(enough[:, None], kth, 0.0).mean(axis=1) / safe, 0.0)
    return out


def season_period(step_seconds: float) -> int:
    """Points per day at this step (0 when a day holds fewer than two points)."""
    period = int(round(86400 / step_seconds)) if step_seconds else 0
    return period if period >= 2 else 0


def season_deviation(feats: pl.DataFrame, *, period: int) -> np.ndarray:
    """The robust deviation from the same time on earlier days (``z_season``); NaN until two days are known."""
    n = len(feats)
    season = feats.get_column("z_season").to_numpy().astype(float)
    known = np.arange(n) >= 2 * period if period else np.zeros(n, dtype=bool)
    return np.where(known, season, np.nan)


def seasonal_gate(deviation: np.ndarray, season: np.ndarray, *, limit: float) -> np.ndarray:
    """The robust deviation, or 0 where earlier days are known and the value is within ``limit`` of them."""
    usual = ~np.isnan(season) & (np.abs(np.nan_to_num(season, nan=np.inf)) < limit)
    return np.where(usual, 0.0, deviation)


def forecast_features(feats: pl.DataFrame, config: Any) -> list[pl.Series | pl.Expr]:
    """The forecast view's columns (besides those shared with the context view); causal."""
    value, past = pl.col("value"), pl.col("value").shift(1)
    long = config.long_points
    long_med = past.rolling_median(window_size=long, min_samples=10)
    long_mad = (value - long_med).abs().shift(1).rolling_median(window_size=long, min_samples=10)
    scale = pl.max_horizontal(long_mad * 1.4826, value.abs().shift(1).rolling_mean(
        window_size=long, min_samples=3) * 0.01, pl.lit(1e-9))
    diff = value - past
    diff_scale = pl.max_horizontal(diff.abs().shift(1).rolling_median(window_size=long, min_samples=10) * 1.4826,
                                   scale * 0.1)
    exprs: list[pl.Series | pl.Expr] = [
        ((value - past.ewm_mean(alpha=alpha, adjust=False, ignore_nulls=True)) / scale).alias(name)
        for name, alpha in EWM_ALPHAS.items()]
    exprs.append((diff.abs().rolling_mean(window_size=VOLATILITY_POINTS, min_samples=1) / diff_scale)
                 .log1p().alias("volatility"))
    exprs.append(pl.Series("past_rank", past_rank(feats.get_column("value").to_numpy(), window=RANK_POINTS)))
    return exprs


def view_matrix(feats: pl.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """The forest's input: the named columns, NaN as 0, deviations clipped to +-50 (the level is not)."""
    matrix = np.nan_to_num(feats.select(columns).to_numpy().astype(float), nan=0.0, posinf=50, neginf=-50)
    clipped = np.clip(matrix, -50, 50)
    clipped[:, 0] = np.nan_to_num(matrix[:, 0], nan=0.0, posinf=1e12, neginf=-1e12)
    return clipped


def past_rank(values: np.ndarray, *, window: int) -> np.ndarray:
    """Mid-rank in [0, 1] of each value among the previous ``window`` values (0.5 with no past)."""
    n = len(values)
    out = np.full(n, 0.5)
    if n < 2 or window < 1:
        return out
    padded = np.concatenate([np.full(window, np.nan), values.astype(float)])
    for start in range(0, n, 1000):
        stop = min(n, start + 1000)
        past = sliding_window_view(padded[start:stop + window - 1], window)  # row j: values[start+j-window : start+j]
        current = values[start:stop, None]
        count = (~np.isnan(past)).sum(axis=1)
        below = (past < current).sum(axis=1) + 0.5 * (past == current).sum(axis=1)
        out[start:stop] = np.where(count > 0, below / np.maximum(count, 1), 0.5)
    return out


def causal_ranks(matrix: np.ndarray, *, first_fit: int, refit_every: int, train_rows: int, n_estimators: int,
                 seed: int) -> np.ndarray:
    """Calibrated isolation-forest rank in [0, 1] per row (NaN before ``first_fit``), fitted on earlier rows only."""
    n = len(matrix)
    out = np.full(n, np.nan)
    rng = np.random.default_rng(seed)
    for left in range(max(first_fit, 16), n, max(1, refit_every)):
        right = min(n, left + max(1, refit_every))
        train = training_rows(left, train_rows, rng)
        model = IsolationForest(n_estimators=n_estimators, max_samples=min(256, len(train)), random_state=seed)
        model.fit(matrix[train])
        reference_rows = train if len(train) <= REFERENCE_ROWS else rng.choice(train, REFERENCE_ROWS, replace=False)
        reference = np.sort(-model.score_samples(matrix[reference_rows]))
        scores = -model.score_samples(matrix[left:right])
        out[left:right] = np.searchsorted(reference, scores, side="right") / len(reference)
    return out


def training_rows(end: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """The most recent rows before ``end`` (half of them), plus a random half of the older ones."""
    if end <= limit:
        return np.arange(end)
    recent = np.arange(end - limit // 2, end)
    older = rng.choice(end - limit // 2, size=limit - limit // 2, replace=False)
    return np.concatenate([older, recent])


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


def combined_score(rank: np.ndarray, gate: np.ndarray, spatial: np.ndarray, config: Any, *,
                   mode: str = SCORE_MODE) -> np.ndarray:
    """The forests' score in [0, 1]: the ensemble rank (or its likelihood), 0 under the gate, 1.0 on a spatial
    anomaly. The series score is the larger of this and the ``discord`` rank."""
    score = np.zeros(len(rank))
    fitted = np.flatnonzero(~np.isnan(rank))
    if len(fitted):
        first = int(fitted[0])
        raw = np.nan_to_num(rank[first:], nan=0.0)
        score[first:] = raw if mode == "rank" else log_likelihood(
            raw, short=config.likelihood_short, long=config.likelihood_long, learn=config.likelihood_learn)
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
