"""KNN-CAD: conformal k-nearest-neighbour anomaly detection, as a causal NAB detector candidate.

Source: Burnaev & Ishimtsev 2016, "Conformalized density- and distance-based anomaly detection in
time-series data" (arXiv:1608.04585), as NAB's ``nab/detectors/knncad/knncad_detector.py`` (published
NAB standard score 58.0). The series becomes lag vectors (the last ``DIM`` values, as in singular
spectrum analysis); a vector's nonconformity is the sum of its squared Mahalanobis distances to its
``K`` nearest neighbours in a TRAINING set of earlier vectors, with the "covariance" estimated as
(X^T X)^-1 of the training matrix (uncentred, as in NAB) and re-estimated every half probation period.
The score is inductive conformal: the fraction of the last ``TRAINING - DIM`` nonconformity scores
(the calibration scores) below the new one. After a score of at least ``ALERT_AT`` the detector emits
0.5 for ``PROBATION // 5`` points (NAB's own alert suppression). The training set is the first
``PROBATION - DIM`` vectors (its calibration scores leave-one-out) until ``2 * PROBATION`` points have
been seen; from then it slides, lagging ``PROBATION`` points behind the newest vector.

What differs from NAB:
- NAB's probationary period is 15% of the file (capped at 750 points): that needs the file length,
  which is look-ahead. Here ``PROBATION`` is a fixed number of points (750, NAB's cap, i.e. NAB's own
  value on every file of 5000 points or more); the detector emits 0 until it has seen that many.
  Chosen among 300, 500, 600 and 750 by the NAB lab's leave-one-group-out score on the tuning folders
  (11.8, 10.9, 6.6, 14.4); NAB's look-ahead length would score 42.6 there.
- NAB crashes to "Singular Matrix" and keeps the previous metric when X^T X cannot be inverted; here a
  matrix whose condition number exceeds ``MAX_CONDITION`` (e.g. a flat series) also keeps the previous
  metric (the identity at first) instead of yielding enormous, round-off-dominated distances.
- Vectorised: distances are computed in whitened coordinates (y = x L with L L^T = (X^T X)^-1) for
  blocks of consecutive points that share a metric; the result equals the point-by-point original.
KNN-CAD uses no value range, so NAB's inputMin/inputMax play no part.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view
from scipy.spatial.distance import cdist

DIM = 19  # lag-vector length (NAB: self.dim)
K = 27  # neighbours summed in the nonconformity measure (NAB: self.k)
PROBATION = 750  # points before scoring starts; NAB: min(15% of the file, 750)
ALERT_AT = 0.9965  # a conformal score at least this high starts a suppression period
SUPPRESSED_SCORE = 0.5  # what NAB emits while suppressed, for PROBATION // 5 points
MAX_CONDITION = 1e12  # X^T X more ill-conditioned than this keeps the previous metric
BLOCK = 256  # queries per distance block (speed only)


def score(frame: pl.DataFrame) -> np.ndarray:
    """Per-point anomaly score in [0, 1], higher = more anomalous."""
    values = frame["value"].cast(pl.Float64).fill_null(strategy="forward").fill_null(0.0).to_numpy()
    out = np.zeros(len(values))
    if len(values) < PROBATION:
        return out
    items = sliding_window_view(values, DIM)  # items[j] ends at point j + DIM - 1
    nonconformity, initial = _nonconformity(items, n=len(values))
    conformal = _conformal(nonconformity, initial)
    out[PROBATION - 1:] = _suppress(conformal)
    return out


def _training_start(point: int) -> int:
    """Index (into the lag vectors) of the first training vector used when scoring ``point``."""
    return max(0, point - 2 * PROBATION + 1)


def _metric_updates(n: int) -> list[int]:
    """Points at which NAB re-estimates the metric: record counts that are 0 or P//2 modulo P."""
    records = np.arange(PROBATION, n + 1)
    phase = records % PROBATION
    return list(records[(phase == 0) | (phase == PROBATION // 2)] - 1)


def _nonconformity(items: np.ndarray, *, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nonconformity of every scored point (P-1 .. n-1) and the initial leave-one-out calibration scores."""
    size = PROBATION - DIM  # training set size
    updates = _metric_updates(n) + [n]
    transform = np.eye(DIM)
    scores = np.empty(n - PROBATION + 1)
    initial = np.empty(0)
    for first, stop in zip(updates[:-1], updates[1:]):
        start = _training_start(first)
        transform = _whitening(items[start:start + size], previous=transform)
        if first == PROBATION - 1:
            initial = _leave_one_out(items[:size] @ transform)
        for lo in range(first, stop, BLOCK):
            hi = min(lo + BLOCK, stop)
            scores[lo - PROBATION + 1:hi - PROBATION + 1] = _block_scores(items, transform, lo=lo, hi=hi)
    return scores, initial


def _whitening(training: np.ndarray, *, previous: np.ndarray) -> np.ndarray:
    """L with L L^T = (X^T X)^-1, or ``previous`` when X^T X is (numerically) singular."""
    gram = training.T @ training
    eigenvalues, vectors = np.linalg.eigh(gram)
    if eigenvalues[0] <= 0 or eigenvalues[-1] > MAX_CONDITION * eigenvalues[0]:
        return previous
    return vectors / np.sqrt(eigenvalues)


def _leave_one_out(whitened: np.ndarray) -> np.ndarray:
    """Sum of the K smallest squared distances of each training vector to the others."""
    distances = cdist(whitened, whitened, "sqeuclidean")
    np.fill_diagonal(distances, np.inf)
    return np.partition(distances, K - 1, axis=1)[:, :K].sum(axis=1)


def _block_scores(items: np.ndarray, transform: np.ndarray, *, lo: int, hi: int) -> np.ndarray:
    """Nonconformity of points lo..hi-1, each against its own (sliding) training set."""
    size = PROBATION - DIM
    first, last = _training_start(lo), _training_start(hi - 1)
    pool = items[first:last + size] @ transform
    queries = items[lo - DIM + 1:hi - DIM + 1] @ transform
    distances = cdist(queries, pool, "sqeuclidean")
    offset = np.array([_training_start(p) for p in range(lo, hi)]) - first
    columns = np.arange(pool.shape[0])
    outside = (columns < offset[:, None]) | (columns >= offset[:, None] + size)
    distances[outside] = np.inf
    return np.partition(distances, K - 1, axis=1)[:, :K].sum(axis=1)


def _conformal(nonconformity: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """Fraction of the current calibration scores (a sliding window of length m) below each new score."""
    size = len(initial)
    history = np.concatenate([initial, nonconformity])
    out = np.empty(len(nonconformity))
    for lo in range(0, len(nonconformity), BLOCK):
        hi = min(lo + BLOCK, len(nonconformity))
        windows = sliding_window_view(history[lo:hi - 1 + size], size)
        out[lo:hi] = (windows < nonconformity[lo:hi, None]).sum(axis=1) / size
    return out


def _suppress(conformal: np.ndarray) -> np.ndarray:
    """NAB's alert suppression: after a score >= ALERT_AT, emit SUPPRESSED_SCORE for PROBATION // 5 points."""
    out = conformal.copy()
    remaining = -1
    for i, value in enumerate(conformal):
        if remaining > 0:
            remaining -= 1
            out[i] = SUPPRESSED_SCORE
        elif value >= ALERT_AT:
            remaining = PROBATION // 5
    return out
