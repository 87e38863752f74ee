"""The NAB lab's pooled and leave-one-group-out selection (bench/nab_lab.py), on hand-made raw scores."""

from __future__ import annotations

import numpy as np

from bench import nab, nab_lab

STANDARD = {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11}


def _prep(name: str) -> nab.Prepared:
    return nab.Prepared(name, np.zeros(10), np.full(10, -1), np.ones(10, dtype=bool), windows=1, live=(0,))


def test_lofo_scores_each_group_at_the_setting_tuned_on_the_others() -> None:
    preps = [_prep("realKnownCause/a.csv"), _prep("realTraffic/b.csv"), _prep("artificialWithAnomaly/c.csv")]
    raws = np.full((3, len(nab_lab.settings())), -1.0)  # every setting misses every window ...
    raws[0, 3], raws[1, 3], raws[2, 3] = 1.0, -1.0, 1.0  # ... except setting 3: hits a and c
    raws[1, 7], raws[2, 7] = 1.0, 0.5  # and setting 7: hits b, half of c
    result = nab_lab.report(preps, raws, STANDARD)
    assert result["setting"] == nab_lab.settings()[3]  # 1 - 1 + 1 beats -1 + 1 + 0.5
    assert result["pooled"] == 100.0 * (1.0 + 3) / 6  # raw 1 over 3 windows: (1 + 3) / (3 + 3)
    assert result["groups"] == {"realKnownCause": 100.0, "realTraffic": 0.0, "artificial": 100.0}
    # without realTraffic, setting 3 wins (2 > -0.5); without a, setting 7 wins (1.5 > 0); without c, a tie: first
    assert result["lofo"] == {"realKnownCause": 0.0, "realTraffic": 0.0, "artificial": 100.0}
    assert result["lofo_mean"] == 100.0 / 3


def test_causal_rank_is_the_mid_rank_among_earlier_scores_only() -> None:
    score = np.array([3.0, 1.0, 2.0, 2.0, 5.0, 0.0])
    ranks = nab_lab.causal_rank(score, learn=2)
    assert ranks[:2].tolist() == [0.0, 0.0]
    assert ranks[2:].tolist() == [0.5, (1 + 0.5) / 3, 1.0, 0.0]  # 2 vs {1,3}; 2 vs {1,2,3}; 5 max; 0 min
    later = score.copy()
    later[4:] = [-9.0, 9.0]
    assert nab_lab.causal_rank(later, learn=2)[:4].tolist() == ranks[:4].tolist()


def test_quiet_time_as_a_fraction_of_the_file_or_as_a_duration() -> None:
    score = np.zeros(100)
    score[[10, 15, 22, 40]] = 1.0
    assert np.flatnonzero(nab_lab.flags(score, 0.5, None, 300.0)).tolist() == [10, 15, 22, 40]
    assert np.flatnonzero(nab_lab.flags(score, 0.5, 0.1, 300.0)).tolist() == [10, 22, 40]  # 10 points quiet
    assert np.flatnonzero(nab_lab.flags(score, 0.5, "1h", 300.0)).tolist() == [10, 40]  # 12 five-minute points
