"""The single-series detector's stages (analytics/series_detector.py) and the NAB bench's plumbing."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from analytics import anomalies, series_detector

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _frame(values: np.ndarray) -> pl.DataFrame:
    stamps = [T0 + timedelta(minutes=5 * i) for i in range(len(values))]
    return pl.DataFrame({"timestamp": stamps, "value": values}, schema_overrides={"timestamp": pl.Datetime("us", "UTC")})


def test_past_rank_matches_a_brute_force_count_of_the_previous_values():
    rng = np.random.default_rng(4)
    values = rng.integers(0, 20, 2600).astype(float)  # ties on purpose
    got = series_detector.past_rank(values, window=300)
    for i in (0, 1, 7, 299, 300, 301, 1000, 1999, 2000, 2599):
        past = values[max(0, i - 300):i]
        want = 0.5 if len(past) == 0 else ((past < values[i]).sum() + 0.5 * (past == values[i]).sum()) / len(past)
        assert got[i] == want, i


@pytest.mark.slow
def test_causal_ranks_do_not_see_the_future_and_start_after_the_warm_up():
    rng = np.random.default_rng(2)
    matrix = rng.normal(size=(900, 3))
    kwargs = dict(first_fit=200, refit_every=100, train_rows=400, n_estimators=16, seed=3)
    full = series_detector.causal_ranks(matrix, **kwargs)
    changed = matrix.copy()
    changed[650:] += 40.0  # the future only
    cut = series_detector.causal_ranks(changed, **kwargs)
    assert np.isnan(full[:200]).all() and not np.isnan(full[200:]).any()
    assert np.array_equal(full[:650], cut[:650], equal_nan=True)
    assert cut[650:700].min() > 0.99  # the forest of block [600, 700) never saw a shifted row


@pytest.mark.slow
def test_raw_components_are_causal_end_to_end():
    rng = np.random.default_rng(5)
    values = 50 + 5 * np.sin(np.arange(1200) / 288 * 2 * np.pi) + rng.normal(0, 1, 1200)
    config = replace(anomalies.SeriesConfig(), n_estimators=16)
    full = series_detector.raw_components(_frame(values), config)
    later = values.copy()
    later[1000:] *= 3
    cut = series_detector.raw_components(_frame(later), config)
    for column in ("rank", "gate", "z_ewm_fast", "volatility", "past_rank"):
        a, b = full.get_column(column).to_numpy()[:1000], cut.get_column(column).to_numpy()[:1000]
        assert np.allclose(a, b, equal_nan=True), column


def test_forecast_errors_are_relative_to_the_past_scale():
    values = np.full(600, 10.0) + np.tile([0.0, 1.0], 300)  # alternating 10, 11: MAD of the past is 0.5
    values[500] = 30.0
    config = replace(anomalies.SeriesConfig(), n_estimators=8, spatial_margin=0.2)
    feats = series_detector.raw_components(_frame(values), config)
    row = feats.row(500, named=True)
    ewm_slow_before = feats.get_column("z_ewm_slow")[499]
    assert row["z_ewm_fast"] > 20 and row["z_ewm_slow"] > 20 > abs(ewm_slow_before)
    assert row["past_rank"] == 1.0 and row["spatial"]


def test_combined_score_rank_mode_gates_and_flags():
    config = replace(anomalies.SeriesConfig(), z_gate=5.0)
    rank = np.array([np.nan, 0.99, 0.99, 0.40, 0.97])
    gate = np.array([9.0, 6.0, 2.0, 9.0, 5.0])
    spatial = np.array([False, False, False, True, False])
    score = series_detector.combined_score(rank, gate, spatial, config, mode="rank")
    assert score.tolist() == [0.0, 0.99, 0.0, 1.0, 0.97]


def test_bench_alerts_equal_the_product_alerting():
    from bench import nab

    rng = np.random.default_rng(9)
    for _ in range(50):
        score = rng.random(400)
        threshold, refractory = float(rng.random()), int(rng.integers(1, 60))
        assert np.array_equal(nab.alerts(score, threshold=threshold, refractory=refractory),
                              anomalies.alerts_from_scores(score, threshold=threshold, refractory=refractory))


def test_bench_cache_key_changes_with_the_code():
    from bench import nab

    config = anomalies.SeriesConfig()
    assert nab._cache_path("a/b.csv", config, code="one") != nab._cache_path("a/b.csv", config, code="two")
    assert nab._cache_path("a/b.csv", config, kind="plain") != nab._cache_path("a/b.csv", config)
    assert nab._cache_path("a/b.csv", config) == nab._cache_path("a/b.csv", config, code=nab.code_fingerprint())
    assert nab._cache_path("a/b.csv", config) != nab._cache_path("a/b.csv", replace(config, seed=8))
