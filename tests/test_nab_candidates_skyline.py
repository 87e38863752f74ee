"""Tests of the earthgecko Skyline NAB candidate (bench/nab_candidates/skyline.py).

The vectorised votes are checked against a slow reference that recomputes every algorithm from
scratch on each prefix, as NAB's earthgecko_skyline/algorithms.py does (numpy only, written from
the algorithm descriptions, not from the candidate's code).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.nab_candidates import skyline

START = datetime(2026, 1, 1)
STEP = timedelta(minutes=5)
DAY = 288  # points of 5 minutes


def _frame(values: np.ndarray, *, seconds: np.ndarray | None = None) -> pl.DataFrame:
    if seconds is None:
        seconds = np.arange(len(values)) * int(STEP.total_seconds())
    stamps = [START + timedelta(seconds=int(s)) for s in seconds]
    return pl.DataFrame({"timestamp": stamps, "value": np.asarray(values, dtype=float)})


def _noisy(n: int, *, seed: int = 1, level: float = 50.0, sigma: float = 2.0) -> np.ndarray:
    return level + sigma * np.random.default_rng(seed).normal(size=n)


# --- the slow reference: every statistic recomputed on each prefix ---------------------------


def _tail(values: np.ndarray) -> float:
    return float(values[-1]) if len(values) < 3 else float((values[-1] + values[-2] + values[-3]) / 3)


def _ref_histogram(values: np.ndarray) -> bool:
    counts, edges = np.histogram(values, bins=15)
    t = _tail(values)
    if counts[0] <= 20 and t <= edges[0]:
        return True
    return any(counts[k] <= 20 and edges[k] <= t < edges[k + 1] for k in range(1, 15))


def _ref_first_hour(seconds: np.ndarray, values: np.ndarray) -> bool:
    old = values[seconds < seconds[-1] - (86400 - 3600)]
    if len(old) < 2:
        return False
    return abs(_tail(values) - old.mean()) > 3 * old.std(ddof=1)


def _ref_stddev_from_average(values: np.ndarray) -> bool:
    return len(values) >= 2 and abs(_tail(values) - values.mean()) > 3 * values.std(ddof=1)


def _ref_mean_subtraction(values: np.ndarray) -> bool:
    earlier = values[:-1]
    return len(earlier) >= 2 and abs(values[-1] - earlier.mean()) > 3 * earlier.std(ddof=1)


def _ref_mad(values: np.ndarray) -> bool:
    median = np.median(values)
    mad = np.median(np.abs(values - median))
    return bool(mad != 0 and abs(values[-1] - median) / mad > 6)


def _ref_ewm(values: np.ndarray) -> bool:
    if len(values) < 2:
        return False
    weights = (1 - 1 / 51) ** np.arange(len(values))[::-1]
    mean = (weights * values).sum() / weights.sum()
    biased = (weights * (values - mean) ** 2).sum() / weights.sum()
    std = np.sqrt(biased * weights.sum() ** 2 / (weights.sum() ** 2 - (weights ** 2).sum()))
    return abs(values[-1] - mean) > 3 * std


def _ref_least_squares(seconds: np.ndarray, values: np.ndarray) -> bool:
    if len(values) < 3:
        return False
    x = (seconds - seconds[0]).astype(float)
    slope, intercept = np.polyfit(x, values, 1)
    errors = values - (slope * x + intercept)
    std, t = errors.std(), (errors[-1] + errors[-2] + errors[-3]) / 3
    return bool(abs(t) > 3 * std and round(std) != 0 and round(t) != 0)


def _reference_votes(seconds: np.ndarray, values: np.ndarray) -> np.ndarray:
    rows = []
    for i in range(len(values)):
        sec, val = seconds[: i + 1], values[: i + 1]
        rows.append([_ref_histogram(val), _ref_first_hour(sec, val), _ref_stddev_from_average(val),
                     _ref_mean_subtraction(val), _ref_mad(val), _ref_ewm(val), _ref_least_squares(sec, val)])
    return np.array(rows, dtype=bool).T


def _mixed_series(n: int = 420, seed: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Irregular 10-minute steps; heavy-tailed values rounded (ties, many near a threshold), with
    spikes, a dip and a level shift."""
    rng = np.random.default_rng(seed)
    seconds = np.cumsum(rng.integers(300, 900, size=n))
    values = np.round(50 + 3 * rng.standard_t(2, size=n), 1)
    values[[120, 250, 330]] += [40, -35, 60]
    values[360:] += 25
    return seconds, values


# --- tests ------------------------------------------------------------------------------------


def test_votes_match_a_from_scratch_recomputation_on_every_prefix() -> None:
    seconds, values = _mixed_series()
    expected = _reference_votes(seconds, values)
    assert expected.sum(axis=1).min() > 0  # every algorithm votes somewhere: the check can fail
    got = skyline.algorithm_votes(seconds, values)
    for name, want, have in zip(("histogram", "first_hour", "stddev_avg", "mean_sub", "mad", "ewm", "lsq"),
                                expected, got):
        assert np.array_equal(want, have), f"{name}: differs at {np.nonzero(want != have)[0][:10]}"


def test_moving_average_votes_match_explicit_exponential_weights() -> None:
    values = np.random.default_rng(3).standard_t(1.5, size=1500)
    expected = np.array([_ref_ewm(values[: i + 1]) for i in range(len(values))])
    assert expected.sum() > 0
    assert np.array_equal(skyline.stddev_from_moving_average(values), expected)


def test_constant_history_votes_like_numpy_histogram() -> None:
    values = np.full(40, 7.0)
    seconds = np.arange(40) * 300
    assert np.array_equal(skyline.algorithm_votes(seconds, values), _reference_votes(seconds, values))


def test_causal_changing_the_future_leaves_past_scores_identical() -> None:
    values = _noisy(3 * DAY, seed=2)
    values[400] += 40
    cut = 500
    changed = values.copy()
    changed[cut + 1:] = np.random.default_rng(9).normal(size=len(values) - cut - 1) * 100 - 300
    first, second = skyline.score(_frame(values)), skyline.score(_frame(changed))
    assert np.array_equal(first[: cut + 1], second[: cut + 1])
    seconds = np.arange(len(values)) * 300
    assert np.array_equal(skyline.algorithm_votes(seconds, values)[:, : cut + 1],
                          skyline.algorithm_votes(seconds, changed)[:, : cut + 1])


def test_truncated_series_scores_like_its_prefix() -> None:
    values = _noisy(2 * DAY, seed=4)
    values[450] -= 30
    full = skyline.score(_frame(values))
    assert np.array_equal(skyline.score(_frame(values[:460])), full[:460])


def test_deterministic() -> None:
    frame = _frame(_noisy(2 * DAY, seed=6))
    assert np.array_equal(skyline.score(frame), skyline.score(frame))


def test_planted_spike_is_an_anomaly() -> None:
    values = _noisy(3 * DAY, seed=7)
    spike = 2 * DAY + 17
    values[spike] += 20 * 2.0
    scores = skyline.score(_frame(values))
    assert scores[spike] == 1.0
    assert scores[DAY:spike].sum() == 0  # nothing before it after the first day


def test_level_shift_is_an_anomaly_within_a_few_points() -> None:
    values = _noisy(3 * DAY, seed=8)
    shift = 2 * DAY
    values[shift:] += 12 * 2.0
    scores = skyline.score(_frame(values))
    hits = np.nonzero(scores[shift:])[0]
    assert len(hits) > 0 and hits[0] <= 3


def test_flat_series_scores_zero() -> None:
    assert skyline.score(_frame(np.full(2 * DAY, 3.5))).sum() == 0


def test_periodic_series_scores_low_after_its_first_day() -> None:
    n = 5 * DAY
    values = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / DAY) + np.random.default_rng(3).normal(size=n)
    scores = skyline.score(_frame(values))
    assert scores.max() <= 1.0 and scores[DAY:].sum() == 0


def test_anomaly_silences_the_series_for_the_expiration_time() -> None:
    values = _noisy(4 * DAY, seed=10)
    first, soon, late = 2 * DAY, 2 * DAY + 12 * 6, 2 * DAY + 12 * 13  # +6 h, +13 h
    for i in (first, soon, late):
        values[i] += 60
    scores = skyline.score(_frame(values))
    assert scores[first] == 1.0 and scores[soon] == 0.0 and scores[late] == 1.0


def test_consensus_counts_votes_and_expires_by_time() -> None:
    votes = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 1, 1], [1, 1, 0, 1, 0], [1, 1, 1, 1, 1],
                      [1, 0, 1, 1, 1], [0, 1, 0, 1, 1], [0, 1, 0, 0, 1]], dtype=bool)
    seconds = np.array([0, 100, 200, 300, 400])
    # counts per point: 5, 6, 3, 6, 6; an anomaly at t=0 silences t < 250 with expiration 250
    binary = skyline.consensus(votes, seconds, consensus_needed=5, expiration=250, average=False)
    assert binary.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    average = skyline.consensus(votes, seconds, consensus_needed=5, expiration=250, average=True)
    assert average.tolist() == [5 / 8, 0.0, 0.0, 6 / 8, 0.0]
    open_ = skyline.consensus(votes, seconds, consensus_needed=7, expiration=250, average=False)
    assert open_.sum() == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-20, 20), min_size=1, max_size=40), st.floats(-25, 25))
def test_kth_distance_matches_sorting(values: list[int], centre: float) -> None:
    ordered = sorted(float(v) for v in values)
    distances = sorted(abs(v - centre) for v in ordered)
    for k in range(1, len(ordered) + 1):
        assert skyline.kth_distance(ordered, centre, k) == distances[k - 1]


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_short_series(n: int) -> None:
    scores = skyline.score(_frame(np.arange(n, dtype=float)))
    assert len(scores) == n and np.all((scores >= 0) & (scores <= 1))


def test_missing_values_are_carried_forward() -> None:
    values = _noisy(DAY, seed=11)
    holed = values.copy()
    holed[[10, 11, 200]] = np.nan
    filled = values.copy()
    filled[[10, 11]], filled[200] = values[9], values[199]
    assert np.array_equal(skyline.score(_frame(holed)), skyline.score(_frame(filled)))
