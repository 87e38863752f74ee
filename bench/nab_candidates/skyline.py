"""earthgecko Skyline as a NAB detector candidate: seven votes, a consensus, an expiration time.

Source: NAB's ``nab/detectors/earthgecko_skyline/`` (earthgecko_skyline_detector.py and
algorithms.py, contributed by earthgecko; NAB standard score 58.2), itself the "most basic
analysis" of earthgecko Skyline, a fork of Etsy Skyline's analyzer. It is NOT NAB's plain
``nab/detectors/skyline/`` port of Etsy Skyline (35.7), which averages the votes of every point.

Every point, each of seven algorithms votes "anomalous" on the whole history seen so far:

- ``histogram_bins``: the mean of the last three values falls in a bin of a 15-bin histogram of the
  history that holds at most 20 values (the original checks bin 0 only for tail <= min; kept);
- ``first_hour_average``: the tail mean lies over 3 std from the mean of the values older than
  23 h (earthgecko's version: everything older, not one hour a day ago);
- ``stddev_from_average``: the tail mean lies over 3 std from the mean of the history;
- ``mean_subtraction_cumulation``: the value lies over 3 std from the mean of the earlier values;
- ``median_absolute_deviation``: |value - median| over 6 times the median absolute deviation;
- ``stddev_from_moving_average``: |value - EWMA| over 3 EW std (pandas ewm, com 50, adjusted);
- ``least_squares``: the mean of the last three residuals of a line fitted by least squares to
  (epoch seconds, value) exceeds 3 residual std, both residual mean and std rounding to non-zero.

A point is an anomaly (score 1) when at least ``CONSENSUS`` algorithms vote, unless an anomaly
was scored less than ``EXPIRATION_SECONDS`` (12 h) before it: Skyline then does not analyse it
(score 0). ``AVERAGE_SCORE`` is earthgecko's own alternative: the number of votes / 8 (NAB's
"AVERAGESCORE"), with the same expiration.

Settings tried in bench.nab_lab (standard profile, tuning folders; LOFO = leave one group out):
NAB's published CONSENSUS 5 scores pooled 49.7 / LOFO 45.1; CONSENSUS 4 pooled 53.5 / LOFO 50.3
(the default here, chosen by LOFO); CONSENSUS 6 pooled 38.0 / LOFO 39.8; AVERAGE_SCORE (with 5)
pooled 53.5 but LOFO 16.7 (its threshold does not transfer between groups).

Causal: the original already uses only the history (the whole series so far: NAB's
``SHORTEN_TIMESERIES`` is off) and never reads NAB's inputMin/inputMax or probation length; this
port keeps it so. What differs: the history statistics are computed incrementally for all points at
once (prefix sums, a sorted list, polars' EWM) instead of from scratch at every point (identical
votes up to float round-off), the grubbs and ks_test algorithms stay off (as in NAB's default), and
timestamps are read as UTC epoch seconds (the original used the local clock).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort

import numpy as np
import polars as pl

CONSENSUS = 4
"""Votes (of the seven algorithms) needed for an anomaly (NAB's earthgecko setting: 5)."""
EXPIRATION_SECONDS = 43_200
"""After an anomaly, points are not analysed for this long (earthgecko's best NAB setting)."""
AVERAGE_SCORE = False
"""When true, the score is the vote count / 8 (earthgecko's AVERAGESCORE) instead of 0/1."""
SIGMA = 3.0
"""Standard deviations for the mean/EWMA/least-squares algorithms."""
MAD_FACTOR = 6.0
"""Median absolute deviations for median_absolute_deviation."""
HISTOGRAM_BINS = 15
"""Bins of histogram_bins' histogram of the history."""
HISTOGRAM_MAX_COUNT = 20
"""A bin holding at most this many values is a rare one."""
EWM_COM = 50
"""Centre of mass of stddev_from_moving_average's exponential weights."""
OLDER_THAN_SECONDS = 86_400 - 3_600
"""first_hour_average compares with the values older than this (23 h)."""


def score(frame: pl.DataFrame) -> np.ndarray:
    """Per-point anomaly score in [0, 1], higher = more anomalous."""
    values = _clean(frame["value"].cast(pl.Float64).to_numpy())
    seconds = frame["timestamp"].dt.epoch("s").to_numpy().astype(np.int64)
    if len(values) == 0:
        return np.zeros(0)
    votes = algorithm_votes(seconds, values)
    return consensus(votes, seconds, consensus_needed=CONSENSUS, expiration=EXPIRATION_SECONDS,
                     average=AVERAGE_SCORE)


def algorithm_votes(seconds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Boolean votes, one row per algorithm (NAB's order), one column per point."""
    tail = tail_average(values)
    return np.vstack([
        histogram_bins(values, tail),
        first_hour_average(seconds, values, tail),
        stddev_from_average(values, tail),
        mean_subtraction_cumulation(values),
        median_absolute_deviation(values),
        stddev_from_moving_average(values),
        least_squares(seconds, values),
    ])


def consensus(votes: np.ndarray, seconds: np.ndarray, *, consensus_needed: int, expiration: int,
              average: bool) -> np.ndarray:
    """Skyline's decision: an anomaly when enough algorithms vote, silenced after an anomaly."""
    counts = votes.sum(axis=0)
    out = np.zeros(len(counts))
    last_anomaly: int | None = None
    for i, (count, second) in enumerate(zip(counts.tolist(), seconds.tolist())):
        if last_anomaly is not None and last_anomaly > second - expiration:
            continue  # not analysed: an anomaly was scored within the expiration time
        if count >= consensus_needed:
            last_anomaly = second
        out[i] = count / (len(votes) + 1) if average else float(count >= consensus_needed)
    return out


def tail_average(values: np.ndarray) -> np.ndarray:
    """Mean of the last three values (the value itself for the first two points)."""
    out = values.copy()
    if len(values) >= 3:
        # Summed newest first, as the original does, so ties with the histogram edges match.
        out[2:] = (values[2:] + values[1:-1] + values[:-2]) / 3
    return out


def histogram_bins(values: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """Tail mean in a sparsely filled bin of the history's 15-bin histogram."""
    edges = _histogram_edges(values)
    inner = (edges[:, 1:HISTOGRAM_BINS] <= tail[:, None]).sum(axis=1)
    # Bin 0 is only tested for tail <= min (a quirk of the original, kept); other bins half-open.
    low = tail <= edges[:, 0]
    candidate = np.where(low, 0, np.where((inner >= 1) & (tail < edges[:, -1]), inner, -1))
    out = np.zeros(len(values), dtype=bool)
    history: list[float] = []
    for i, value in enumerate(values.tolist()):
        insort(history, value)
        k = int(candidate[i])
        if k >= 0:
            out[i] = _bin_count(history, edges[i, k], edges[i, k + 1], last=k == HISTOGRAM_BINS - 1) \
                <= HISTOGRAM_MAX_COUNT
    return out


def _histogram_edges(values: np.ndarray) -> np.ndarray:
    """numpy.histogram's bin edges over each prefix of ``values`` (one row per point)."""
    low, high = np.minimum.accumulate(values), np.maximum.accumulate(values)
    flat = low == high
    low, high = np.where(flat, low - 0.5, low), np.where(flat, high + 0.5, high)
    return np.linspace(low, high, HISTOGRAM_BINS + 1, axis=1)


def _bin_count(history: list[float], low: float, high: float, *, last: bool) -> int:
    """Values of the sorted history in [low, high) ([low, high] for the last bin)."""
    upper = bisect_right(history, high) if last else bisect_left(history, high)
    return upper - bisect_left(history, low)


def first_hour_average(seconds: np.ndarray, values: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """Tail mean over 3 std away from the values older than 23 h."""
    count = np.searchsorted(seconds, seconds - OLDER_THAN_SECONDS, side="left")
    mean, var = _prefix_moments(values)
    usable = count >= 2
    idx = np.maximum(count - 1, 0)
    return usable & (np.abs(tail - mean[idx]) > SIGMA * np.sqrt(var[idx]))


def stddev_from_average(values: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """Tail mean over 3 std away from the mean of the history."""
    mean, var = _prefix_moments(values)
    return np.abs(tail - mean) > SIGMA * np.sqrt(var)


def mean_subtraction_cumulation(values: np.ndarray) -> np.ndarray:
    """The value over 3 std away from the mean of the earlier values."""
    out = np.zeros(len(values), dtype=bool)
    if len(values) < 2:
        return out
    mean, var = _prefix_moments(values[:-1])
    out[1:] = np.abs(values[1:] - mean) > SIGMA * np.sqrt(var)
    return out


def _prefix_moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample variance (ddof 1; NaN for one point) of every prefix of ``values``."""
    # Shifted by the first value (known from the start) so that sums of squares do not cancel.
    shifted = values - values[0]
    n = np.arange(1, len(values) + 1, dtype=float)
    s1, s2 = np.cumsum(shifted), np.cumsum(shifted * shifted)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.maximum(s2 - s1 * s1 / n, 0.0) / (n - 1)
    var[0] = np.nan
    return values[0] + s1 / n, var


def median_absolute_deviation(values: np.ndarray) -> np.ndarray:
    """|value - median| over 6 median absolute deviations of the history (never when the MAD is 0)."""
    out = np.zeros(len(values), dtype=bool)
    history: list[float] = []
    for i, value in enumerate(values.tolist()):
        insort(history, value)
        median = _median(history)
        mad = _median_distance(history, median)
        out[i] = mad != 0 and abs(value - median) / mad > MAD_FACTOR
    return out


def _median(ordered: list[float]) -> float:
    """Median of a sorted list (mean of the two middle values when even)."""
    half = len(ordered) // 2
    return ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2


def _median_distance(ordered: list[float], centre: float) -> float:
    """Median of |x - centre| over a sorted list, in O(log n)."""
    n = len(ordered)
    if n % 2:
        return kth_distance(ordered, centre, n // 2 + 1)
    return (kth_distance(ordered, centre, n // 2) + kth_distance(ordered, centre, n // 2 + 1)) / 2


def kth_distance(ordered: list[float], centre: float, k: int) -> float:
    """The k-th smallest |x - centre| (k from 1) over a sorted list."""
    # The k nearest values form a window ordered[lo:lo + k]; find its start by bisection.
    lo, hi = 0, len(ordered) - k
    while lo < hi:
        mid = (lo + hi) // 2
        if centre - ordered[mid] > ordered[mid + k] - centre:
            lo = mid + 1
        else:
            hi = mid
    return max(centre - ordered[lo], ordered[lo + k - 1] - centre)


def stddev_from_moving_average(values: np.ndarray) -> np.ndarray:
    """|value - EWMA| over 3 EW standard deviations (pandas ewm, com 50, adjust, bias False)."""
    series = pl.Series(values)
    mean = series.ewm_mean(com=EWM_COM, adjust=True, min_samples=1).to_numpy()
    std = series.ewm_std(com=EWM_COM, adjust=True, bias=False, min_samples=1).fill_null(np.nan).to_numpy()
    with np.errstate(invalid="ignore"):
        return np.abs(values - mean) > SIGMA * std


def least_squares(seconds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean of the last three residuals of the history's least-squares line over 3 residual std."""
    # Shifted by the first point: the residuals of a fitted line do not change.
    x = (seconds - seconds[0]).astype(float)
    y = values - values[0]
    n = np.arange(1, len(values) + 1, dtype=float)
    mx, my = np.cumsum(x) / n, np.cumsum(y) / n
    sxx = np.cumsum(x * x) - n * mx * mx
    sxy = np.cumsum(x * y) - n * mx * my
    syy = np.cumsum(y * y) - n * my * my
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(sxx > 0, sxy / sxx, 0.0)
        std = np.sqrt(np.maximum(syy - slope * sxy, 0.0) / n)
    out = np.zeros(len(values), dtype=bool)
    if len(values) < 3:
        return out
    tail_x, tail_y = tail_average(x)[2:], tail_average(y)[2:]
    t = (tail_y - my[2:]) - slope[2:] * (tail_x - mx[2:])
    # round(v) != 0 in the original: |v| > 0.5 (Python rounds halves to even).
    out[2:] = (np.abs(t) > SIGMA * std[2:]) & (std[2:] > 0.5) & (np.abs(t) > 0.5)
    return out


def _clean(values: np.ndarray) -> np.ndarray:
    """Float64 copy with non-finite values replaced by the last finite one (0 before any)."""
    out = np.asarray(values, dtype=float).copy()
    bad = ~np.isfinite(out)
    if bad.any():
        idx = np.where(~bad, np.arange(len(out)), 0)
        np.maximum.accumulate(idx, out=idx)
        out = np.where(bad[idx] & bad, 0.0, out[idx])
    return out
