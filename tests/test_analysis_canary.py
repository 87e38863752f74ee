"""The canary judge: valid under continuous monitoring, finds a one-route regression."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import numpy as np
import pytest

from analytics import canary
from meshlens.catalog import connect
from meshlens.cli import main
from meshlens.timewin import Window
from tests.analysis_support import START, Plan, build_lake


def _simulate(rng, minutes: int, *, ratio: float, share: float = 0.1, rate: float = 100, p: float = 0.01):
    """Minute counts with an AR(1) load shared by both versions and common error-rate shocks."""
    load = np.exp(np.cumsum(rng.normal(0, 0.05, minutes)) * 0.5)
    shock = np.exp(rng.normal(0, 0.5, minutes))  # bad minutes hit both versions alike
    n = rng.poisson(rate * load)
    n_c = rng.binomial(n, share)
    n_b = n - n_c
    e_b = rng.binomial(n_b, np.clip(p * shock, 0, 1))
    e_c = rng.binomial(n_c, np.clip(p * shock * ratio, 0, 1))
    return [a.astype(float) for a in (n_b, e_b, n_c, e_c)]


def test_aa_canaries_checked_every_minute_almost_never_look_worse():
    rng = np.random.default_rng(0)
    alpha, false = 0.01, 0
    for _ in range(60):
        evidence = canary.worse_evidence(*_simulate(rng, 240, ratio=1.0))
        false += bool((evidence >= math.log(1 / alpha)).any())
    assert false <= 2  # expected <= 0.6 at alpha = 1%; 3 or more would be p < 0.03


def test_3x_regression_is_decided_and_covered():
    rng = np.random.default_rng(1)
    arrays = _simulate(rng, 240, ratio=3.0, rate=300)
    evidence = canary.worse_evidence(*arrays)
    assert (evidence >= math.log(100)).any()
    result = canary.confidence_sequence(*arrays, alpha=0.01)
    assert result.lower[-1] <= 3.0 <= result.upper[-1]


def test_change_point_finds_the_start_of_the_excess():
    rng = np.random.default_rng(2)
    before = _simulate(rng, 120, ratio=1.0, rate=400)
    after = _simulate(rng, 120, ratio=4.0, rate=400)
    arrays = [np.concatenate([a, b]) for a, b in zip(before, after)]
    assert abs(canary.change_point(*arrays, ratio=4.0) - 120) <= 15


@pytest.fixture(scope="module")
def regression_lake(tmp_path_factory):
    plan = Plan(hours=6, seed=4, rate_per_min=200, canary_service="PaymentService", regression_start_min=150)
    return build_lake(tmp_path_factory.mktemp("canary") / "lake", plan), plan


@pytest.mark.slow
def test_planted_route_regression_rolls_back_naming_the_route(regression_lake):
    lake, plan = regression_lake
    window = Window(START, START + timedelta(hours=plan.hours))
    verdicts = canary.judge(connect(lake), window=window)
    assert [(v.service, v.baseline, v.canary) for v in verdicts] == [("PaymentService", "v1", "v2")]
    v = verdicts[0]
    method, route = plan.regression_route
    assert v.verdict == "rollback"
    assert f"on {method} {route}" in v.evidence and "recommend rolling back v2" in v.evidence
    regression = START + timedelta(minutes=plan.regression_start_min)
    assert abs((v.since - regression).total_seconds()) <= 20 * 60
    assert regression < v.decided_at <= window.end
    assert v.next_weights == {"v1": 100, "v2": 0}
    assert v.traffic["ok"] and v.traffic["expected"] == plan.canary_share


@pytest.mark.slow
def test_identical_versions_never_roll_back(tmp_path):
    plan = Plan(hours=6, seed=5, rate_per_min=200, canary_service="PaymentService", ar_sd=0.15)
    lake = build_lake(tmp_path / "lake", plan)
    v = canary.judge(connect(lake), window=Window(START, START + timedelta(hours=6)))[0]
    assert v.verdict in ("promote", "continue")
    assert v.next_weights["v2"] >= 10


def test_too_little_canary_traffic_is_insufficient_data(tmp_path):
    plan = Plan(hours=2, seed=6, rate_per_min=20, canary_service="PaymentService", canary_share=0.02,
                canary_start_min=100)
    lake = build_lake(tmp_path / "lake", plan)
    v = canary.judge(connect(lake), window=Window(START, START + timedelta(hours=2)))[0]
    assert v.verdict == "insufficient_data"
    assert "need" in v.evidence


def test_cli_canary_json_and_named_versions(regression_lake, capsys):
    lake, plan = regression_lake
    end = START + timedelta(hours=plan.hours)
    main(["canary", "PaymentService", "--baseline", "v1", "--canary", "v2", "--data", str(lake.root),
          "--since", START.isoformat(), "--now", end.isoformat(), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert payload["columns"][:5] == ["service", "env", "baseline", "canary", "verdict"]
    assert payload["rows"][0][4] == "rollback"
    assert payload["verdicts"][0]["routes"]


def test_cli_unknown_version_is_one_line_error(regression_lake, capsys):
    lake, plan = regression_lake
    with pytest.raises(SystemExit) as exit_info:
        main(["canary", "PaymentService", "--baseline", "v1", "--canary", "v3", "--data", str(lake.root),
              "--since", START.isoformat(), "--now", (START + timedelta(hours=6)).isoformat()])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "v3" in err and "Traceback" not in err


@pytest.mark.slow
def test_demo_canary_points_at_the_planted_route(scenario):
    lake, truth = scenario
    event = next(e for e in truth.events if e["kind"] == "canary_regression")
    verdicts = canary.judge(connect(lake), window=Window(truth.start_dt, truth.end_dt))
    v = next(v for v in verdicts if v.service == event["service"] and v.env == event["env"])
    assert (v.baseline, v.canary) == (event["baseline"], event["version"])
    # at the test scale (0.25) the canary has a few hundred requests: a valid sequential test
    # may not yet be sure, but it must never promote, and must point at the planted route
    assert v.verdict in ("rollback", "continue")
    assert f"{event['method']} {event['route']}" in v.evidence
    share = next(e for e in truth.events if e["kind"] == "canary")["traffic_share"]
    assert v.traffic["expected"] == share and v.traffic["ok"]

