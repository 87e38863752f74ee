"""Relative-entropy hypothesis testing (Wang et al. 2011) as a causal NAB detector candidate.

Source: Wang, Viswanathan, Choudur, Talwar, Satterfield & Schwan, "Statistical techniques for online
anomaly detection in data centers" (IFIP/IEEE IM 2011), Figure 1, as NAB's
``nab/detectors/relative_entropy/relative_entropy_detector.py`` (published NAB standard score 54.6).
Each value is quantised into ``N_BINS`` steps of the value range; the last ``W`` quantised values form
an empirical distribution P_hat. P_hat is tested against every null hypothesis kept so far (earlier
P_hat's) with the multinomial goodness-of-fit statistic 2 W KL(P_hat || P); a hypothesis is accepted
when the statistic is below ``T``, the chi-squared (N_BINS - 1 d.o.f.) point of false-alarm
probability ``ALPHA``. When every hypothesis is rejected the point is anomalous (score 1) and P_hat
becomes a new hypothesis; when the accepted one has been seen at most ``C_TH`` times the point is
anomalous too (with NAB's C_TH = 1 this never happens: an accepted hypothesis has count >= 2).
The quantisation is NAB's: ceil((x - min) / step) in 0..N_BINS, histogrammed into N_BINS unit bins
(so the first bin holds only values equal to the minimum and the last holds steps N_BINS - 1 and N_BINS).

What differs from NAB: NAB quantises with the whole file's inputMin/inputMax (look-ahead). Here the
range is learned from the points seen so far (up to and including the current one): the seen [min, max]
widened by ``RANGE_PAD`` of its width on each side, and re-learned only when a value falls outside it.
The padding keeps the bins from moving at every new extreme (each move makes the current window unlike
every stored hypothesis, i.e. a burst of flags). A flat-so-far series (zero range) scores 0, as NAB's
flat files do. Hypotheses stored earlier keep the histogram they had when created. RANGE_PAD was chosen
among 0 (plain running min/max), 0.25 and 0.5 by the NAB lab's leave-one-group-out score on the tuning
folders (36.4, 46.0, 33.0). The histograms of all windows are computed at once (vectorised); only the
range and the hypothesis bookkeeping are loops.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats
from scipy.special import rel_entr

N_BINS = 5  # quantisation steps over the value range (NAB: N_bins)
W = 52  # window length (NAB: W)
ALPHA = 0.01  # false-alarm probability of one test; T = chi2.isf(ALPHA, N_BINS - 1) (NAB: 0.01)
C_TH = 1  # an accepted hypothesis seen at most this often still flags (NAB: c_th)
RANGE_PAD = 0.25  # causal range: seen-so-far [min, max] widened by this fraction of its width on each side


def score(frame: pl.DataFrame) -> np.ndarray:
    """Per-point anomaly score in {0, 1}, 1 = the window fits no hypothesis seen so far."""
    values = frame["value"].cast(pl.Float64).fill_null(strategy="forward").fill_null(0.0).to_numpy()
    out = np.zeros(len(values))
    if len(values) < W:
        return out
    frequencies, ranged = window_frequencies(values)
    out[W - 1:] = _test(frequencies, ranged)
    return out


def window_frequencies(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical bin frequencies of every window ending at W-1..n-1 under the range seen so far, and
    whether that range is non-zero."""
    low, high = causal_range(values)
    low, high = low[W - 1:], high[W - 1:]
    step = (high - low) / N_BINS
    ranged = step > 0
    windows = sliding_window_view(values, W)
    safe = np.where(ranged, step, 1.0)[:, None]
    levels = np.ceil((windows - low[:, None]) / safe)
    bins = np.clip(levels, 0, N_BINS - 1).astype(np.int64)  # level N_BINS shares the last bin (NAB's histogram)
    counts = np.stack([(bins == b).sum(axis=1) for b in range(N_BINS)], axis=1)
    return counts / W, ranged


def causal_range(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantisation range at every point: the seen-so-far [min, max] widened by RANGE_PAD of its width,
    re-learned only when a value falls outside the current range (so the bins rarely move)."""
    seen_low, seen_high = np.minimum.accumulate(values), np.maximum.accumulate(values)
    if RANGE_PAD == 0:
        return seen_low, seen_high
    low, high = np.empty(len(values)), np.empty(len(values))
    current = (np.inf, -np.inf)
    for i, value in enumerate(values.tolist()):
        if not current[0] <= value <= current[1]:
            pad = RANGE_PAD * (seen_high[i] - seen_low[i])
            current = (seen_low[i] - pad, seen_high[i] + pad)
        low[i], high[i] = current
    return low, high


def _test(frequencies: np.ndarray, ranged: np.ndarray) -> np.ndarray:
    """Figure 1 of Wang et al.: 1 where every hypothesis is rejected (or the accepted one is rare)."""
    threshold = stats.chi2.isf(ALPHA, N_BINS - 1)
    hypotheses = np.empty((0, N_BINS))
    seen: list[int] = []
    out = np.zeros(len(frequencies))
    for i in np.flatnonzero(ranged):
        p_hat = frequencies[i]
        if not seen:
            hypotheses, seen = p_hat[None, :], [1]
            continue
        statistic = 2 * W * rel_entr(p_hat[None, :], hypotheses).sum(axis=1)
        best = int(np.argmin(statistic))
        if statistic[best] < threshold:
            seen[best] += 1
            out[i] = float(seen[best] <= C_TH)
        else:
            out[i] = 1.0
            hypotheses = np.vstack([hypotheses, p_hat])
            seen.append(1)
    return out
