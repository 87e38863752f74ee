"""Series readers (CSV, CloudWatch JSON) and the single-series detector."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from analytics import anomalies
from analytics.series import parse_cloudwatch, parse_csv, read_series, split_series
from meshlens.errors import InputError

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def test_csv_reads_timestamp_value_as_utc(tmp_path):
    path = tmp_path / "cpu.csv"
    path.write_text("timestamp,value\n2014-02-14 14:30:00,0.132\n2014-02-14 14:35:00,0.5\n")
    frame = read_series(path)
    assert frame.columns == ["series", "timestamp", "value"]
    assert frame.get_column("series").to_list() == ["cpu", "cpu"]
    assert frame.get_column("timestamp").to_list() == [datetime(2014, 2, 14, 14, 30, tzinfo=timezone.utc),
                                                       datetime(2014, 2, 14, 14, 35, tzinfo=timezone.utc)]
    assert frame.get_column("value").to_list() == [0.132, 0.5]


def test_csv_several_value_columns_and_epoch_times():
    frame = parse_csv("time,a,b\n1700000000,1,2\n1700000060,3,4\n")
    parts = split_series(frame)
    assert list(parts) == ["a", "b"]
    assert parts["b"].get_column("value").to_list() == [2.0, 4.0]
    assert parts["a"].get_column("timestamp")[1] == datetime.fromtimestamp(1700000060, tz=timezone.utc)


def test_csv_bad_number_names_the_line():
    with pytest.raises(InputError, match=r"<csv>:3"):
        parse_csv("timestamp,value\n2014-01-01T00:00:00Z,1\n2014-01-01T00:05:00Z,abc\n")


def test_cloudwatch_get_metric_data_several_ids_newest_first():
    doc = {"MetricDataResults": [
        {"Id": "m1", "Label": "CPUUtilization", "Timestamps": ["2026-03-01T00:10:00+00:00", "2026-03-01T00:05:00+00:00"],
         "Values": [50.0, 40.0], "StatusCode": "Complete"},
        {"Id": "m2", "Timestamps": ["2026-03-01T00:05:00Z"], "Values": [7], "StatusCode": "Complete"}],
        "Messages": []}
    frame = parse_cloudwatch(json.dumps(doc))
    parts = split_series(frame)
    assert list(parts) == ["CPUUtilization", "m2"]
    cpu = parts["CPUUtilization"]
    assert cpu.get_column("value").to_list() == [40.0, 50.0]  # sorted oldest first
    assert cpu.get_column("timestamp")[0] == T0 + timedelta(minutes=5)


def test_cloudwatch_rejects_other_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"Datapoints": []}')
    with pytest.raises(InputError, match="MetricDataResults"):
        read_series(path)


def _series(values: np.ndarray) -> pl.DataFrame:
    stamps = [T0 + timedelta(minutes=5 * i) for i in range(len(values))]
    return pl.DataFrame({"series": "cpu", "timestamp": stamps, "value": values},
                        schema_overrides={"timestamp": pl.Datetime("us", "UTC")})


def _daily_noise(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 40 + 10 * np.sin(np.arange(n) / 288 * 2 * np.pi) + rng.normal(0, 1.5, n)


@pytest.mark.slow
def test_detect_series_finds_a_planted_level_shift_at_its_time():
    values = _daily_noise(3000, seed=3)
    values[2400:2460] += 45  # planted: +45 for five hours, far outside the noise
    incidents = anomalies.detect_series(_series(values))
    planted = T0 + timedelta(minutes=5 * 2400)
    hits = [i for i in incidents if i.start <= planted + timedelta(minutes=30) and i.end >= planted]
    assert hits, [i.summary for i in incidents]
    assert hits[0].start >= planted  # causal: never before it happened
    assert "baseline" in hits[0].reasons[0] and hits[0].services == ["cpu"]


@pytest.mark.slow
def test_detect_series_finds_a_new_shape_whose_values_stay_in_range():
    rng = np.random.default_rng(3)
    steps, period, at = np.arange(3000), 144, 2400
    values = 100 + 20 * np.sin(2 * np.pi * steps / period) + rng.normal(0, 1.0, 3000)
    half = slice(at, at + period // 2)
    values[half] = 100 + 20 * np.sin(2 * np.pi * steps[half] / period)[::-1] + rng.normal(0, 1.0, period // 2)
    scored = anomalies.series_scores(_series(values).select("timestamp", "value"))
    assert scored.get_column("forest_score").to_numpy()[half].max() < anomalies.SeriesConfig().threshold
    incidents = anomalies.detect_series(_series(values))  # a half cycle run backwards: found by its shape
    planted = T0 + timedelta(minutes=5 * at)
    hits = [i for i in incidents if planted <= i.start <= planted + timedelta(minutes=5 * period // 2)]
    assert hits, [i.summary for i in incidents]
    assert "a shape never seen before" in hits[0].reasons[0]


@pytest.mark.slow
def test_detect_series_is_causal_future_points_do_not_change_past_scores():
    values = _daily_noise(2000, seed=5)
    full = anomalies.series_scores(_series(values).select("timestamp", "value"))
    values2 = values.copy()
    values2[1500:] += 100  # change only the future
    cut = anomalies.series_scores(_series(values2).select("timestamp", "value"))
    assert np.allclose(full.get_column("score").to_numpy()[:1500], cut.get_column("score").to_numpy()[:1500])


@pytest.mark.slow
def test_detect_series_on_clean_seasonal_noise_raises_at_most_one_alarm():
    incidents = anomalies.detect_series(_series(_daily_noise(3000, seed=11)))
    assert len(incidents) <= 1, [i.summary for i in incidents]


@pytest.mark.slow
def test_cli_anomalies_series_json(tmp_path, capsys):
    from meshlens.cli import main

    values = _daily_noise(3000, seed=3)
    values[2400:2460] += 45
    path = tmp_path / "cpu.csv"
    stamps = [T0 + timedelta(minutes=5 * i) for i in range(len(values))]
    path.write_text("timestamp,value\n" + "".join(f"{t:%Y-%m-%d %H:%M:%S},{v:.3f}\n" for t, v in zip(stamps, values)))
    main(["anomalies", "--series", str(path), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert payload["columns"][0] == "start" and payload["series"] == str(path)
    assert any(row[0] >= "2026-03-09T08:00:00Z" for row in payload["rows"])  # 2400 * 5 min after T0


def test_cli_anomalies_missing_file_is_one_line(capsys):
    import pytest as _pytest

    from meshlens.cli import main

    with _pytest.raises(SystemExit) as exit_info:
        main(["anomalies", "--series", "/nonexistent/x.csv"])
    assert exit_info.value.code == 1
    assert "no such file" in capsys.readouterr().err


def test_spatial_flag_fires_only_beyond_the_margin_of_the_past_range():
    from analytics.series_detector import spatial_flags

    values = np.array([0.0, 10.0, 5.0, 11.5, 12.5, -2.5, -1.0])
    flags = spatial_flags(values, margin=0.1, learn=1)
    # past range [lo, hi], margin 0.1 of (hi - lo): 11.5 > 10 + 1 yes; 12.5 > 11.5 + 1.15? no;
    # -2.5 < 0 - 1.25 yes; -1.0 < -2.5 - 1.5? no
    assert flags.tolist() == [False, False, False, True, False, True, False]


def test_likelihood_is_causal_and_rises_when_raw_scores_change():
    from analytics.series_detector import log_likelihood

    rng = np.random.default_rng(1)
    raw = rng.uniform(0.0, 0.6, 1200)
    changed = raw.copy()
    changed[1000:] = 1.0
    quiet = log_likelihood(raw, short=5, long=500, learn=100)
    loud = log_likelihood(changed, short=5, long=500, learn=100)
    assert np.array_equal(quiet[:1000], loud[:1000])  # the future does not move the past
    assert quiet[:100].max() == 0.0  # nothing during the learning period
    assert loud[1004] > 0.9 > quiet[100:].max()
