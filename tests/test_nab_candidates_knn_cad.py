"""KNN-CAD NAB candidate (bench/nab_candidates/knn_cad.py): fidelity to NAB's detector, causality, behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from bench.nab_candidates import knn_cad
from tests.nab_support import frame, noisy_sine


def _noisy_sine(n: int) -> np.ndarray:
    return noisy_sine(n, seed=3, period=40)


def _nab_transcription(values: np.ndarray, probation: int) -> np.ndarray:
    """NAB's KnncadDetector.handleRecord, point by point, with an explicit matrix inverse."""
    dim, k = knn_cad.DIM, knn_cad.K
    buf: list[float] = []
    training: list[np.ndarray] = []
    calibration: list[np.ndarray] = []
    scores: list[float] = []
    sigma, pred, out = np.eye(dim), -1, []
    for record, value in enumerate(values, start=1):
        buf.append(value)
        if len(buf) < dim:
            out.append(0.0)
            continue
        item = np.array(buf[-dim:])
        if record < probation:
            training.append(item)
            out.append(0.0)
            continue
        if record % probation in (0, probation // 2):
            sigma = np.linalg.inv(np.array(training).T @ np.array(training))

        def ncm(x: np.ndarray, inside: int) -> float:
            return float(np.sort([(x - t) @ sigma @ (x - t) for t in training])[:k + inside].sum())

        if not scores:
            scores = [ncm(t, 1) for t in training]
        new = ncm(item, 0)
        result = float(np.mean(np.array(scores) < new))
        if record >= 2 * probation:
            training.pop(0)
            training.append(calibration.pop(0))
        scores.pop(0)
        calibration.append(item)
        scores.append(new)
        if pred > 0:
            pred -= 1
            out.append(0.5)
            continue
        if result >= knn_cad.ALERT_AT:
            pred = probation // 5
        out.append(result)
    return np.array(out)


def test_matches_a_point_by_point_transcription_of_nab(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knn_cad, "PROBATION", 90)  # small, so the training set slides and the metric is re-estimated
    values = _noisy_sine(520)
    values[400] += 25
    expected = _nab_transcription(values, 90)
    got = knn_cad.score(frame(values))
    assert np.array_equal(got, expected)
    assert got[400] >= knn_cad.ALERT_AT  # the planted spike fires, then NAB's suppression
    assert np.all(got[401:401 + 90 // 5] == knn_cad.SUPPRESSED_SCORE)


def test_causal_scores_up_to_i_ignore_later_values() -> None:
    values = _noisy_sine(1300)
    cut = 1000
    changed = values.copy()
    changed[cut + 1:] = np.random.default_rng(9).normal(500, 100, len(values) - cut - 1)
    before, after = knn_cad.score(frame(values)), knn_cad.score(frame(changed))
    assert np.array_equal(before[:cut + 1], after[:cut + 1])
    assert not np.array_equal(before, after)


def test_deterministic() -> None:
    values = _noisy_sine(1100)
    assert np.array_equal(knn_cad.score(frame(values)), knn_cad.score(frame(values)))


def test_silent_before_the_probation_and_in_range() -> None:
    values = _noisy_sine(1100)
    got = knn_cad.score(frame(values))
    assert np.all(got[:knn_cad.PROBATION - 1] == 0.0)
    assert np.all((got >= 0) & (got <= 1))
    assert np.all(knn_cad.score(frame(values[:knn_cad.PROBATION - 1])) == 0.0)


@pytest.mark.parametrize("kind", ["spike", "level shift"])
def test_planted_anomaly_scores_high(kind: str) -> None:
    values = 50 + 10 * np.sin(np.arange(1200) * 2 * np.pi / 40)  # alone it never alerts (test below)
    at = 1000
    if kind == "spike":
        values[at] += 30
    else:
        values[at:] += 30
    got = knn_cad.score(frame(values))
    assert got[at] >= knn_cad.ALERT_AT
    assert got[knn_cad.PROBATION:at].max() < knn_cad.ALERT_AT


def test_flat_series_scores_zero_despite_a_singular_metric() -> None:
    assert np.all(knn_cad.score(frame(np.full(1100, 7.0))) == 0.0)


def test_periodic_series_never_alerts() -> None:
    values = 50 + 10 * np.sin(np.arange(1500) * 2 * np.pi / 40)
    got = knn_cad.score(frame(values))
    assert got.max() < knn_cad.ALERT_AT
