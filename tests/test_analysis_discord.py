"""The causal left matrix profile (analytics/discord.py) against brute force, and its discord rank."""

from __future__ import annotations

import numpy as np
import pytest

from analytics import discord


def _brute_left_profile(x: np.ndarray, *, m: int, max_lag: int, normalise: bool) -> np.ndarray:
    """Naive reference: explicit subsequences, explicit z-normalisation, every allowed neighbour."""
    count = len(x) - m + 1
    out = np.full(count, np.nan)
    for j in range(m, count):
        out[j] = _brute_row(x, j=j, m=m, max_lag=max_lag, normalise=normalise)
    return out


def _brute_row(x: np.ndarray, *, j: int, m: int, max_lag: int, normalise: bool) -> float:
    """Distance of subsequence j to its nearest neighbour starting m..max_lag points earlier."""
    a = x[j:j + m]
    past = np.array([x[j - d:j - d + m] for d in range(m, min(max_lag, j) + 1)])
    if not normalise:
        return float(np.sqrt(((past - a) ** 2).sum(axis=1) / m).min())
    flat_a, flat_past = np.ptp(a) == 0, np.ptp(past, axis=1) == 0
    if flat_a:
        return 0.0 if flat_past.any() else float(np.sqrt(m))
    za = (a - a.mean()) / a.std()
    spread = np.where(flat_past, 1.0, past.std(axis=1))
    zpast = (past - past.mean(axis=1, keepdims=True)) / spread[:, None]
    dists = np.where(flat_past, np.sqrt(m), np.linalg.norm(zpast - za, axis=1))
    return float(dists.min())


def _series_with_flat_stretches(seed: int = 3, n: int = 420) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=n)) + 100.0
    x[150:200] = 7.0  # constant stretch: constant-vs-constant and constant-vs-shape pairs
    x[300:330] = x[299]
    return x


@pytest.mark.parametrize("normalise", [True, False])
@pytest.mark.parametrize(("m", "max_lag"), [(8, 60), (16, 1000)])
def test_left_profile_matches_the_naive_definition(normalise: bool, m: int, max_lag: int) -> None:
    x = _series_with_flat_stretches()
    got = discord.left_profile(x, m=m, max_lag=max_lag, normalise=normalise)
    want = _brute_left_profile(x, m=m, max_lag=max_lag, normalise=normalise)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[:m]).all() and np.isfinite(got[m:]).all()
    np.testing.assert_allclose(got[m:], want[m:], atol=1e-5)


def test_running_update_does_not_drift_on_a_long_series() -> None:
    rng = np.random.default_rng(11)
    x = 1e4 + np.cumsum(rng.normal(size=3000))
    m = 16
    got = discord.left_profile(x, m=m, max_lag=300, normalise=True)
    for j in (m, 1000, 1255, 2999 - m + 1):  # spot checks, also far from the last exact refresh
        assert got[j] == pytest.approx(_brute_row(x, j=j, m=m, max_lag=300, normalise=True), abs=1e-5)


def test_noise_correction_subtracts_the_white_noise_share() -> None:
    rng = np.random.default_rng(4)
    x = np.sin(np.arange(500) * 2 * np.pi / 25) + 0.3 * rng.normal(size=500)
    m = 16
    got = discord.left_profile(x, m=m, max_lag=200, normalise=True, noise_correction=True)
    for j in (m, 100, 333, 500 - m):
        noise2 = np.var(np.diff(x[:j + m], prepend=x[0])) / 2  # the past's differences only
        a = x[j:j + m]
        past = np.array([x[j - d:j - d + m] for d in range(m, min(200, j) + 1)])
        za = (a - a.mean()) / a.std()
        zpast = (past - past.mean(axis=1, keepdims=True)) / past.std(axis=1, keepdims=True)
        d2 = ((zpast - za) ** 2).sum(axis=1) - (2 + 2 * m) * noise2 / np.maximum(a.std(), past.std(axis=1)) ** 2
        assert got[j] == pytest.approx(np.sqrt(max(d2.min(), 0.0)), abs=1e-5)
    plain = discord.left_profile(x, m=m, max_lag=200, normalise=True)
    assert (got[m:] < plain[m:]).all()


def test_causal_rank_counts_strictly_smaller_earlier_distances() -> None:
    dist = np.array([np.nan, 2.0, 1.0, 3.0, 2.0, 2.0, 0.5])
    # by hand: 1.0 > none of [2]; 3.0 > both of [2, 1]; 2.0 > 1 of [2, 1, 3]; ...
    want = [0.0, 0.0, 0.0, 1.0, 1 / 3, 1 / 4, 0.0]
    np.testing.assert_allclose(discord.causal_rank(dist), want)


def test_scores_up_to_i_ignore_every_later_value() -> None:
    rng = np.random.default_rng(5)
    x = np.sin(np.arange(900) * 2 * np.pi / 37) + 0.1 * rng.normal(size=900)
    cut = 611
    changed = x.copy()
    changed[cut + 1:] = rng.normal(size=len(x) - cut - 1) * 50 + 7
    full = discord.discord_rank(x)
    other = discord.discord_rank(changed)
    prefix = discord.discord_rank(x[:cut + 1])
    np.testing.assert_array_equal(full[:cut + 1], other[:cut + 1])
    np.testing.assert_array_equal(full[:cut + 1], prefix)
    assert not np.array_equal(full[cut + 1:], other[cut + 1:])  # the change did reach the later scores


def test_same_input_same_scores_in_range() -> None:
    x = _series_with_flat_stretches(seed=8, n=700)
    x[400] = np.nan  # non-finite values are carried forward, never propagated
    first, second = discord.discord_rank(x), discord.discord_rank(x)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (700,) and np.isfinite(first).all()
    assert first.min() >= 0.0 and first.max() <= 1.0


def _noisy_sine(n: int = 1600, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 10 + 3 * np.sin(np.arange(n) * 2 * np.pi / 48) + 0.2 * rng.normal(size=n)


@pytest.mark.parametrize("kind", ["spike", "level shift"])
def test_a_planted_anomaly_scores_above_everything_before_it(kind: str) -> None:
    x = _noisy_sine()
    at = 1300
    if kind == "spike":
        x[at] += 8.0
    else:
        x[at:] += 6.0
    scores = discord.discord_rank(x)
    normal = scores[400:at]  # after a warm-up, before the anomaly
    assert scores[at:at + 5].max() > normal.max()
    assert scores[at:at + 5].max() >= 0.99


def test_flat_and_exactly_periodic_series_score_zero_once_seen() -> None:
    flat = np.full(600, 4.2)
    assert (discord.discord_rank(flat) == 0).all()
    period = 40
    base = 5 + np.sin(np.arange(period) * 2 * np.pi / period) + 0.3 * np.cos(np.arange(period))
    periodic = np.tile(base, 20)
    scores = discord.discord_rank(periodic)
    warm = period + 2 * max(discord.LENGTHS)  # every length has seen one full period in its past
    assert (scores[warm:] == 0).all()


def test_short_series_score_zero() -> None:
    scores = discord.discord_rank(np.array([1.0, 5.0, 2.0]))
    np.testing.assert_array_equal(scores, np.zeros(3))
