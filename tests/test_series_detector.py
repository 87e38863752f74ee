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
    for column in ("rank", "gate", "z_ewm_fast", "volatility", "past_rank", "discord"):
        a, b = full.get_column(column).to_numpy()[:1000], cut.get_column(column).to_numpy()[:1000]
        assert np.allclose(a, b, equal_nan=True), column
    warm = int(config.warmup_fraction * len(values))
    assert (full.get_column("discord").to_numpy()[:warm] == 0).all()  # nothing scored while learning
    assert cut.get_column("discord").to_numpy()[1000:1100].max() > 0.99  # the tripled series is a new shape


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


def test_seasonal_gate_zeroes_only_points_close_to_earlier_days():
    deviation = np.array([9.0, 9.0, 9.0, 9.0, 2.0])
    season = np.array([np.nan, 1.0, -2.9, 3.5, 8.0])  # unknown, usual, usual, unusual, unusual
    got = series_detector.seasonal_gate(deviation, season, limit=3.0)
    assert got.tolist() == [9.0, 0.0, 0.0, 9.0, 2.0]


def test_season_deviation_is_unknown_until_two_days_are_seen():
    n, period = 1000, 288
    feats = pl.DataFrame({"z_season": np.arange(n, dtype=float)})
    got = series_detector.season_deviation(feats, period=period)
    assert np.isnan(got[: 2 * period]).all() and got[2 * period:].tolist() == list(range(2 * period, n))
    assert np.isnan(series_detector.season_deviation(feats, period=0)).all()
    assert series_detector.season_period(300.0) == 288 and series_detector.season_period(86400.0) == 0


def test_a_sharp_daily_pattern_is_gated_out_after_two_days():
    day = 288
    values = np.tile(np.where(np.arange(day) < 200, 20.0, 80.0), 6)  # a square wave, one edge pair a day
    config = replace(anomalies.SeriesConfig(), n_estimators=8)
    feats = series_detector.raw_components(_frame(values), config)
    edges = np.flatnonzero(np.diff(values) != 0) + 1
    deviation, gate = feats.get_column("deviation").to_numpy(), feats.get_column("gate").to_numpy()
    assert deviation[edges].min() > 10  # each edge is a huge deviation from the rolling median...
    assert (gate[edges[edges >= 2 * day]] == 0).all()  # ...but it happens every day


@pytest.mark.slow
def test_bench_final_score_is_the_product_score():
    from bench import nab

    rng = np.random.default_rng(8)
    values = 50 + 10 * np.sin(np.arange(1500) / 288 * 2 * np.pi) + rng.normal(0, 1, 1500)
    values[1200:1230] += 80
    config = replace(anomalies.SeriesConfig(), n_estimators=8)
    frame = _frame(values)
    product = anomalies.series_scores(frame, config).get_column("score").to_numpy()
    assert np.array_equal(nab.final_score(nab.ours(frame, config), config), product)
    assert product[1200:1230].max() >= config.threshold  # and the planted bump scores


def test_level_codes_cut_the_past_rank_into_equal_bins():
    got = series_detector.level_codes(np.array([0.0, 0.19, 0.2, 0.5, 0.99, 1.0]), levels=5)
    assert got.tolist() == [0, 0, 1, 2, 4, 4]


def test_context_novelty_by_hand():
    codes = np.array([0, 1, 0, 1, 2])
    got = series_detector.context_novelty(codes, levels=3, orders=(1,), recent=2)
    # transitions: 0->1 new, 1->0 new, 0->1 seen once, 1->2 new (prefix 1 seen once before)
    assert got["novel_frac"].tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]
    assert got["novel_recent"].tolist() == [0.0, 0.5, 1.0, 0.5, 0.5]
    want = [0.0, -np.log(1 / 3), -np.log(1 / 3), -np.log(2 / 4), -np.log(1 / 4)]
    assert np.allclose(got["surprise_1"], want)


def test_knn_nonconformity_by_hand_and_a_new_shape_stands_out():
    values = np.array([0.0, 0.0, 1.0, 1.0, 3.0])
    got = series_detector.knn_nonconformity(values, np.full(5, 2.0), lags=2, k=1, memory=10)
    # vectors end at 1..4: (0,0) (0,1) (1,1) (1,3); a vector's non-overlapping earlier ones end <= its end - 2
    # end 3: (1,1) vs (0,0): RMS 1; end 4: (1,3) vs nearest of (0,0), (0,1): RMS sqrt((1+4)/2); over scale 2
    assert got[:3].tolist() == [0.0, 0.0, 0.0]
    assert np.isclose(got[3], 0.5) and np.isclose(got[4], np.sqrt(2.5) / 2)
    wave = np.sin(np.arange(700) / 5.0)
    wave[600:610] = 0.3  # a flat piece: a shape never seen before, within the usual range
    knn = series_detector.knn_nonconformity(wave, np.ones(700), lags=8, k=3, memory=300)
    assert knn[605:612].min() > 10 * knn[400:600].max()


def test_novelty_columns_are_causal():
    rng = np.random.default_rng(6)
    values = np.tile([10.0, 12.0, 15.0, 11.0], 300) + rng.normal(0, 0.3, 1200)
    config = anomalies.SeriesConfig()
    feats = series_detector.series_features(_frame(values), config)
    feats = feats.with_columns(series_detector.forecast_features(feats, config))
    later = values.copy()
    later[900:] = rng.normal(0, 50, 300)
    cut = series_detector.series_features(_frame(later), config)
    cut = cut.with_columns(series_detector.forecast_features(cut, config))
    full = pl.DataFrame(series_detector.novelty_columns(feats, config))
    changed = pl.DataFrame(series_detector.novelty_columns(cut, config))
    for column in series_detector.NOVELTY_FEATURES[1:]:
        a, b = full.get_column(column).to_numpy(), changed.get_column(column).to_numpy()
        assert np.array_equal(a[:900], b[:900]), column
        assert not np.array_equal(a[900:], b[900:]), column


@pytest.mark.slow
def test_novelty_view_is_opt_in_and_causal_end_to_end():
    rng = np.random.default_rng(3)
    values = 50 + 5 * np.sin(np.arange(1000) / 288 * 2 * np.pi) + rng.normal(0, 1, 1000)
    config = replace(anomalies.SeriesConfig(), n_estimators=8)
    assert "novelty" not in series_detector.VIEWS
    full = series_detector.raw_components(_frame(values), config, views=("context", "forecast", "novelty"))
    later = values.copy()
    later[800:] = 0.0
    cut = series_detector.raw_components(_frame(later), config, views=("context", "forecast", "novelty"))
    for column in ("rank", "knn", "novel_frac"):
        assert np.allclose(full.get_column(column).to_numpy()[:800], cut.get_column(column).to_numpy()[:800],
                           equal_nan=True), column
    assert "knn" not in series_detector.raw_components(_frame(values), config).columns


def test_bench_cache_key_changes_with_the_views():
    from bench import nab

    config = anomalies.SeriesConfig()
    trial = ("context", "forecast", "novelty")
    assert nab._cache_path("a/b.csv", config) == nab._cache_path("a/b.csv", config, views=series_detector.VIEWS)
    assert nab._cache_path("a/b.csv", config, views=trial) != nab._cache_path("a/b.csv", config)
    assert nab._cache_path("a/b.csv", config, kind="plain", views=trial) == nab._cache_path("a/b.csv", config,
                                                                                            kind="plain")
