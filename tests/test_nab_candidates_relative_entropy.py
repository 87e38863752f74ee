"""Relative-entropy NAB candidate (bench/nab_candidates/relative_entropy.py): fidelity, causality, behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench.nab_candidates import relative_entropy as rel
from tests.nab_support import frame, noisy_sine


def _noisy_sine(n: int) -> np.ndarray:
    return noisy_sine(n, seed=5, period=60)


def _nab_transcription(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """NAB's RelativeEntropyDetector.handleRecord point by point, with the range at point i given as low/high[i]."""
    threshold = stats.chi2.isf(0.01, rel.N_BINS - 1)
    hypotheses: list[np.ndarray] = []
    counts: list[int] = []
    out = np.zeros(len(values))
    for i in range(rel.W - 1, len(values)):
        step = (high[i] - low[i]) / rel.N_BINS
        if step == 0:
            continue
        levels = [math.ceil((c - low[i]) / step) for c in values[i - rel.W + 1:i + 1]]
        p_hat = np.histogram(levels, bins=rel.N_BINS, range=(0, rel.N_BINS), density=True)[0]
        if not hypotheses:
            hypotheses.append(p_hat)
            counts.append(1)
            continue
        index, best = -1, math.inf
        for j, p in enumerate(hypotheses):
            entropy = 2 * rel.W * stats.entropy(p_hat, p)
            if entropy < threshold and entropy < best:
                index, best = j, entropy
        if index == -1:
            out[i] = 1.0
            hypotheses.append(p_hat)
            counts.append(1)
        else:
            counts[index] += 1
            out[i] = float(counts[index] <= rel.C_TH)
    return out


def test_matches_a_point_by_point_transcription_of_nab() -> None:
    values = np.round(_noisy_sine(600), 1)
    values[450:460] += 15
    low, high = rel.causal_range(values)
    expected = _nab_transcription(values, low, high)
    got = rel.score(frame(values))
    assert np.array_equal(got, expected)
    assert expected.sum() > 0


def test_causal_range_is_relearned_only_when_a_value_leaves_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rel, "RANGE_PAD", 0.25)
    low, high = rel.causal_range(np.array([10.0, 14.0, 14.5, 9.5, 20.0]))
    # 10: width 0 -> [10, 10]; 14 leaves it -> [9, 15]; 14.5 and 9.5 stay inside; 20 -> [9.5 - 2.625, 20 + 2.625]
    assert low.tolist() == [10.0, 9.0, 9.0, 9.0, 6.875]
    assert high.tolist() == [10.0, 15.0, 15.0, 15.0, 22.625]


def test_causal_scores_up_to_i_ignore_later_values() -> None:
    values = _noisy_sine(1200)
    cut = 800
    changed = values.copy()
    changed[cut + 1:] = np.random.default_rng(2).normal(-300, 50, len(values) - cut - 1)
    before, after = rel.score(frame(values)), rel.score(frame(changed))
    assert np.array_equal(before[:cut + 1], after[:cut + 1])
    assert not np.array_equal(before, after)


def test_deterministic() -> None:
    values = _noisy_sine(1000)
    assert np.array_equal(rel.score(frame(values)), rel.score(frame(values)))


@pytest.mark.parametrize("kind", ["spike", "level shift"])
def test_planted_anomaly_scores_one(kind: str) -> None:
    values = _noisy_sine(1500)
    at = 1200
    if kind == "spike":
        values[at] += 40
    else:
        values[at:] += 40
    got = rel.score(frame(values))
    assert got[at] == 1.0
    assert got[at] > got[800:at].mean()


def test_periodic_series_stops_flagging_once_learned() -> None:
    values = 50 + 10 * np.sin(np.arange(2000) * 2 * np.pi / 26)
    got = rel.score(frame(values))
    assert np.all(got[200:] == 0.0)


def test_flat_and_short_series_score_zero() -> None:
    assert np.all(rel.score(frame(np.full(500, 3.0))) == 0.0)
    assert np.all(rel.score(frame(_noisy_sine(rel.W - 1))) == 0.0)
