"""NAB scoring in bench/nab.py checked against NAB's reference algorithm and hand-computed cases.

The reference below is a plain transcription of NAB's ``Sweeper.calcSweepScore`` and
``Sweeper.calcScoreByThreshold`` (numenta/NAB, nab/sweeper.py): it walks the points once,
keeps the best score per window and sums the false positives, exactly as NAB does; the bench
scorer is vectorised differently, so agreeing on random detectors is a real check.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest

from bench import nab

STANDARD = {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11}
LOW_FN = {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11}


def _stamps(n: int) -> list[str]:
    t0 = datetime(2014, 1, 1)
    return [(t0 + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(n)]


def _sigmoid_scaled(x: float) -> float:
    return -1.0 if x >= 3.0 else 2 / (1 + math.exp(5 * x)) - 1


def _reference_score(stamps: list[str], alerts: np.ndarray, windows: list[list[str]], cost: dict) -> float:
    """NAB's sweeper, point by point, for boolean alerts (threshold 0.5 on 0/1 scores)."""
    limits = [list(w) for w in windows]
    n = len(stamps)
    probation = min(math.floor(0.15 * n), 0.15 * 5000)
    points = []  # (alert, sweep score, window name)
    cur = name = width = right = prev_width = prev_right = None
    max_tp = _sigmoid_scaled(-1.0)
    for i, stamp in enumerate(stamps):
        if limits and stamp == limits[0][0]:
            cur = limits.pop(0)
            name, right = cur[0], stamps.index(cur[1])
            width = float(right - stamps.index(cur[0]) + 1)
        if cur is not None:
            weighted = _sigmoid_scaled(-(right - i + 1) / width) * cost["tpWeight"] / max_tp
        else:
            pos = 3.0 if prev_right is None else abs(prev_right - i) / float(prev_width - 1)
            weighted = _sigmoid_scaled(pos) * cost["fpWeight"]
        points.append((bool(alerts[i]), weighted, name if i >= probation else "probationary"))
        if cur is not None and stamp == cur[1]:
            prev_right, prev_width, cur, name = i, width, None, None
    scorable = [p for p in points if p[2] != "probationary"]
    parts = {"fp": 0.0}
    for _, _, win in scorable:
        if win is not None:
            parts[win] = -cost["fnWeight"]
    for alert, weighted, win in scorable:
        if not alert:
            continue
        if win is None:
            parts["fp"] += weighted
        else:
            parts[win] = max(parts[win], weighted)
    return sum(parts.values())


def _score(stamps, alerts, windows, cost) -> float:
    prep = nab.prepare("f", stamps, windows, cost)
    return nab.raw_score(prep, alerts, cost)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("cost", [STANDARD, LOW_FN])
def test_bench_scorer_matches_nab_reference_on_random_detectors(seed, cost):
    rng = np.random.default_rng(seed)
    n = 600
    stamps = _stamps(n)
    windows = [[stamps[a], stamps[a + w]] for a, w in ((50, 20), (200, 30), (380, 15), (520, 40))]
    for rate in (0.002, 0.01, 0.05):
        alerts = rng.random(n) < rate
        assert _score(stamps, alerts, windows, cost) == pytest.approx(_reference_score(stamps, alerts, windows, cost))


def test_hand_computed_true_and_false_positives():
    stamps = _stamps(100)  # probation: the first 15 points
    windows = [[stamps[40], stamps[49]]]  # width 10
    alerts = np.zeros(100, dtype=bool)
    alerts[[10, 20, 40, 58]] = True  # 10: probationary, ignored; 20: FP before any window
    # 40: left edge, full TP (1.0); 58: 9 points past the right edge = one width -> S(1) * 0.11
    expected = 1.0 - 0.11 + 0.11 * (2 / (1 + math.exp(5)) - 1)
    assert _score(stamps, alerts, windows, STANDARD) == pytest.approx(expected)
    late = np.zeros(100, dtype=bool)
    late[49] = True  # right edge: S(-0.1) / S(-1)
    assert _score(stamps, late, windows, STANDARD) == pytest.approx(math.tanh(0.25) / math.tanh(2.5))


def test_only_the_best_detection_of_a_window_counts():
    stamps = _stamps(100)
    windows = [[stamps[40], stamps[49]]]
    one, many = np.zeros(100, dtype=bool), np.zeros(100, dtype=bool)
    one[40] = True
    many[40:50] = True  # every point of the window: still one TP, no FP
    assert _score(stamps, many, windows, STANDARD) == pytest.approx(_score(stamps, one, windows, STANDARD)) == 1.0


def test_normalisation_null_is_zero_perfect_is_hundred():
    stamps = _stamps(400)
    windows = [[stamps[100], stamps[119]], [stamps[300], stamps[339]]]
    prep = nab.prepare("f", stamps, windows, STANDARD)
    null = np.zeros(400, dtype=bool)
    perfect = np.zeros(400, dtype=bool)
    perfect[[100, 300]] = True
    assert nab.normalized(nab.raw_score(prep, null, STANDARD), [prep], STANDARD) == pytest.approx(0.0)
    assert nab.normalized(nab.raw_score(prep, perfect, STANDARD), [prep], STANDARD) == pytest.approx(100.0)
    middle = np.zeros(400, dtype=bool)
    middle[[110, 320]] = True  # halfway in: S(-0.5)/S(-1) each, about 0.86
    value = nab.normalized(nab.raw_score(prep, middle, STANDARD), [prep], STANDARD)
    assert value == pytest.approx(100 * (1 + math.tanh(1.25) / math.tanh(2.5)) / 2, rel=1e-2)


def test_probation_is_fifteen_percent_capped_at_750_points():
    short, long = nab.prepare("a", _stamps(1000), [], STANDARD), nab.prepare("b", _stamps(8000), [], STANDARD)
    assert int((~short.scorable).sum()) == 150
    assert int((~long.scorable).sum()) == 750


def test_alerts_after_a_detection_are_suppressed_for_the_refractory_span():
    from analytics.anomalies import alerts_from_scores

    score = np.array([0.0, 0.9, 0.9, 0.9, 0.0, 0.9, 0.9])
    assert alerts_from_scores(score, threshold=0.5, refractory=3).tolist() == [
        False, True, False, False, False, True, False]
