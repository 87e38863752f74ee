"""Causal time-series discords: the LEFT matrix profile, the shape half of the series detector.

For the subsequence of m points that ENDS at point i, the distance to its nearest neighbour among
the subsequences lying entirely before it (the left matrix profile: Yeh et al. 2016, "Matrix
Profile I"; computed STOMP-style, Zhu et al. 2016, "Matrix Profile II": running sliding dot
products, one vectorised row per subsequence; the left half as in Zhu et al. 2017, "Matrix
Profile VII"). A large left distance is a discord: a shape never seen before (Wu & Keogh 2021).
``analytics.series_detector`` alerts on the larger of its forest score and this rank.

Choices (NAB lab, tuning folders only: bench/nab_lab.py, bench/nab_candidates/left_mp.py):
- Causal and bounded: only the past is searched, and only its last ``MAX_LAG`` subsequences
  (O(n * MAX_LAG) work); an exact dot-product refresh every ``REFRESH_EVERY`` rows bounds the
  round-off drift of the STOMP update.
- Constant subsequences (std ~ 0) follow stumpy's convention: two constant subsequences are at
  distance 0, a constant and a non-constant one at sqrt(m).
- Noise correction (De Paepe et al. 2019, "Eliminating noise in the matrix profile"): plain
  z-normalisation blows white noise up to full-size shapes, so every squared distance loses
  (2 + 2m) * noise_var / max(std_a, std_b)^2, the noise variance estimated causally as half the
  variance of the first differences seen so far.
- Several lengths (``LENGTHS``, 8 to 64 points), their ranks combined by max: no length is tuned.
- Score: each length's distance ranked among its own earlier distances (strictly below: a flat or
  exactly repeating series scores 0), in [0, 1].
- ``normalise=False`` gives the plain Euclidean distance per point (level and amplitude too).
"""

from __future__ import annotations

from bisect import bisect_left, insort

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

LENGTHS = (8, 16, 32, 64)
"""Subsequence lengths in points; one left profile per length, the largest of their ranks is the score."""
NORMALISE = True
"""True: z-normalised distance (the classic matrix profile, shape only); False: plain Euclidean."""
NOISE_CORRECTION = True
"""With NORMALISE: subtract the expected squared distance due to white noise (De Paepe et al. 2019)."""
MAX_LAG = 4000
"""How far back (in subsequences) the nearest neighbour is searched."""
REFRESH_EVERY = 256
"""Rows between exact recomputations of the sliding dot products (bounds round-off drift)."""
CONST_TOL = 1e-8
"""A subsequence is constant when its std <= CONST_TOL * max(|mean|, 1)."""
ROUNDOFF = 1e-9
"""Squared distances below ROUNDOFF times their scale are exact repeats (0), not round-off noise."""


def discord_rank(values: np.ndarray, *, normalise: bool = NORMALISE) -> np.ndarray:
    """Per point, in [0, 1]: how far the shape ending there is from every earlier shape, ranked (causal)."""
    clean = _clean(values)
    return np.vstack([_length_rank(clean, m, normalise=normalise) for m in LENGTHS]).max(axis=0)


def _length_rank(values: np.ndarray, m: int, *, normalise: bool) -> np.ndarray:
    """Causal rank of the left-profile distance of the subsequence ending at each point (0 before)."""
    out = np.zeros(len(values))
    if len(values) >= 2 * m:
        dist = left_profile(values, m=m, max_lag=MAX_LAG, normalise=normalise,
                            noise_correction=normalise and NOISE_CORRECTION)
        out[m - 1:] = causal_rank(dist)
    return out


def _clean(values: np.ndarray) -> np.ndarray:
    """Float64 copy with non-finite values replaced by the last finite one (0 at the start)."""
    x = np.asarray(values, dtype=np.float64).copy()
    for i in np.flatnonzero(~np.isfinite(x)):
        x[i] = x[i - 1] if i > 0 else 0.0
    return x


def left_profile(values: np.ndarray, *, m: int, max_lag: int, normalise: bool = True,
                 noise_correction: bool = False) -> np.ndarray:
    """Left matrix profile: entry j is the distance of subsequence j to its past nearest neighbour.

    Subsequence j covers points j..j+m-1; its neighbours start at j - d for m <= d <= max_lag
    (entirely before it). Entries with no neighbour yet are NaN. ``normalise`` chooses the
    z-normalised distance; otherwise the plain Euclidean one divided by sqrt(m) (a per-point RMS).
    ``noise_correction`` (z-normalised only) removes the white-noise share of each squared distance.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x - x[0]  # a causal offset: distances ignore it, round-off improves
    windows = sliding_window_view(x, m)
    stats = _Stats(windows, noise_correction=noise_correction)
    profile = np.full(len(windows), np.nan)
    qt = np.zeros(max_lag + 1)  # qt[d] = <subsequence j, subsequence j - d>
    for j in range(m, len(windows)):
        hi = min(max_lag, j)
        if (j - m) % REFRESH_EVERY == 0:
            qt[m:hi + 1] = windows[j - hi:j - m + 1][::-1] @ windows[j]
        else:
            _advance(qt, x, j=j, m=m, hi=hi)
        nearest = _nearest_z if normalise else _nearest_raw
        profile[j] = nearest(qt[m:hi + 1], stats, j=j, m=m, hi=hi)
    return profile


class _Stats:
    """Per-subsequence mean, std, constant flag and squared norm."""

    def __init__(self, windows: np.ndarray, *, noise_correction: bool = False) -> None:
        self.mu, self.sigma = windows.mean(axis=1), windows.std(axis=1)
        self.const = self.sigma <= CONST_TOL * np.maximum(np.abs(self.mu), 1.0)
        self.norm2 = np.einsum("ij,ij->i", windows, windows)
        self.noise2 = _past_noise_variance(windows) if noise_correction else np.zeros(len(windows))


def _past_noise_variance(windows: np.ndarray) -> np.ndarray:
    """Per subsequence j: half the variance of the first differences of every point up to its end."""
    x = np.concatenate([windows[0, :-1], windows[:, -1]])
    diffs = np.diff(x, prepend=x[0])
    count = np.arange(1, len(x) + 1)
    mean = np.cumsum(diffs) / count
    var = np.maximum(np.cumsum(diffs * diffs) / count - mean * mean, 0.0)
    return var[windows.shape[1] - 1:] / 2.0


def _advance(qt: np.ndarray, x: np.ndarray, *, j: int, m: int, hi: int) -> None:
    """STOMP step: row j's dot products from row j-1's, one lag at a time (lags m..hi)."""
    top = min(hi, j - 1)  # lags already valid in row j-1
    qt[m:top + 1] += (x[j + m - 1] * x[j + m - 1 - top:j][::-1]
                      - x[j - 1] * x[j - 1 - top:j - m][::-1])
    if hi > top:  # lag j becomes valid: the neighbour is subsequence 0
        qt[hi] = x[j:j + m] @ x[0:m]


def _nearest_z(qt: np.ndarray, stats: _Stats, *, j: int, m: int, hi: int) -> float:
    """Smallest z-normalised distance of subsequence j to subsequences j-m, ..., j-hi."""
    k = slice(j - hi, j - m + 1)
    mu_k, sig_k, const_k = stats.mu[k][::-1], stats.sigma[k][::-1], stats.const[k][::-1]
    if stats.const[j]:  # stumpy's convention: constant vs constant 0, vs anything else sqrt(m)
        return 0.0 if const_k.any() else float(np.sqrt(m))
    safe = np.where(const_k, 1.0, sig_k)
    rho = (qt - m * stats.mu[j] * mu_k) / (m * stats.sigma[j] * safe)
    noise = (2.0 + 2.0 * m) * stats.noise2[j] / np.maximum(stats.sigma[j], safe) ** 2
    d2 = np.where(const_k, float(m), 2.0 * m * (1.0 - np.clip(rho, -1.0, 1.0)) - noise).min()
    return float(np.sqrt(d2)) if d2 > ROUNDOFF * m else 0.0


def _nearest_raw(qt: np.ndarray, stats: _Stats, *, j: int, m: int, hi: int) -> float:
    """Smallest plain Euclidean distance (per point, RMS) of subsequence j to j-m, ..., j-hi."""
    norm2_k = stats.norm2[j - hi:j - m + 1][::-1]
    d2 = stats.norm2[j] + norm2_k - 2.0 * qt
    best = int(np.argmin(d2))
    if d2[best] <= ROUNDOFF * (stats.norm2[j] + norm2_k[best]):
        return 0.0
    return float(np.sqrt(d2[best] / m))


def causal_rank(dist: np.ndarray) -> np.ndarray:
    """Fraction of the earlier finite distances strictly below each one; NaN (no neighbour) -> 0.

    Strict, so a distance equal to ones already seen (a flat or exactly periodic series: all 0)
    is not news and scores 0.
    """
    out = np.zeros(len(dist))
    seen: list[float] = []
    for i, d in enumerate(dist.tolist()):
        if d != d:  # NaN: no neighbour yet
            continue
        if seen:
            out[i] = bisect_left(seen, d) / len(seen)
        insort(seen, d)
    return out
