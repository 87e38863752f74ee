"""The canary judge reads every pair from one query over the minute rollup, with the raw answers."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from analytics import canary, rollup
from meshlens.catalog import connect
from meshlens.timewin import Window
from tests.analysis_support import START, Plan, build_lake

pytestmark = pytest.mark.slow  # builds a lake and its rollups (several seconds on a loaded machine)


@pytest.fixture(scope="module")
def two_canaries(tmp_path_factory):
    """PaymentService with a late 5x regression on one route, CartService an identical canary; rollups built.

    6 h (was 5): the drift-robust judge does not assume the groups' drift away, and this thin route
    (about 0.25 canary 5xx a minute) is not decidable 3 h after the regression in this draw.
    """
    plan = Plan(hours=6, seed=12, rate_per_min=150, canary_service="PaymentService", regression_start_min=120,
                regression_factor=5.0)
    lake = build_lake(tmp_path_factory.mktemp("canary_rollups") / "lake", plan)
    other = Plan(hours=6, seed=13, rate_per_min=150, canary_service="CartService", services=("CartService",))
    from tests.analysis_support import draw

    lake.write_partitioned("requests", draw(other), ts_column="ts", stem="cart")
    rollup.rebuild(lake)
    return lake, plan


def _window(plan: Plan) -> Window:
    return Window(START, START + timedelta(hours=plan.hours))


def test_rollups_cover_the_window(two_canaries):
    lake, plan = two_canaries
    assert canary.rollups_cover(connect(lake), window=_window(plan))


def test_one_rollup_query_gives_the_raw_minute_counts(two_canaries):
    lake, plan = two_canaries
    conn, window = connect(lake), _window(plan)
    pairs = canary.canary_pairs(conn, window=window, rollups=True)
    assert sorted(p[0] for p in pairs) == ["CartService", "PaymentService"]
    fast = canary.pair_counts(conn, pairs, window=window, rollups=True)
    raw = canary.pair_counts(conn, pairs, window=window, rollups=False)
    assert fast.keys() == raw.keys()
    for key in raw:
        cols = ["version", "method", "route", "minute"]
        a = fast[key].sort(cols).select(*cols, "n", "e")
        b = raw[key].sort(cols).select(*cols, "n", "e")
        assert a.equals(b)  # requests and 5xx per (version, route, minute) exactly
        # "slow" is above the sketch bucket of the route p99 (1% relative error): close to the exact count
        assert abs(fast[key]["slow"].sum() - raw[key]["slow"].sum()) <= 0.25 * raw[key]["slow"].sum() + 5


def test_all_services_at_once_match_one_service_at_a_time(two_canaries):
    lake, plan = two_canaries
    conn, window = connect(lake), _window(plan)
    together = {v.service: v for v in canary.judge(conn, window=window)}
    for service in ("PaymentService", "CartService"):
        alone = canary.judge(conn, service, window=window)[0]
        both = together[service]
        assert (alone.verdict, alone.decided_at, alone.evidence) == (both.verdict, both.decided_at, both.evidence)
        assert alone.overall == both.overall and alone.routes == both.routes


def test_rollup_and_raw_verdicts_agree(two_canaries):
    lake, plan = two_canaries
    conn, window = connect(lake), _window(plan)
    fast = {v.service: v for v in canary.judge(conn, window=window)}
    pairs = canary.canary_pairs(conn, window=window)
    raw = {v.service: v for v in canary.judge_pairs(conn, pairs, window=window, rollups=False)}
    method, route = plan.regression_route
    assert fast["PaymentService"].verdict == raw["PaymentService"].verdict == "rollback"
    assert f"on {method} {route}" in fast["PaymentService"].evidence
    assert fast["CartService"].verdict in ("promote", "continue")
    assert raw["CartService"].verdict in ("promote", "continue")
    for name in fast:
        f_rows = {(r["scope"], r["version"]): r for r in fast[name].overall + fast[name].routes}
        r_rows = {(r["scope"], r["version"]): r for r in raw[name].overall + raw[name].routes}
        assert f_rows.keys() == r_rows.keys()
        for key, row in r_rows.items():
            assert f_rows[key]["requests"] == row["requests"] and f_rows[key]["errors_5xx"] == row["errors_5xx"]
            assert f_rows[key]["p99_ms"] == pytest.approx(row["p99_ms"], rel=0.05)


def test_grid_sums_every_route_into_the_overall_row(two_canaries):
    lake, plan = two_canaries
    conn, window = connect(lake), _window(plan)
    pairs = [p for p in canary.canary_pairs(conn, window=window, rollups=True) if p[0] == "PaymentService"]
    frame = canary._pair_frame(canary.pair_counts(conn, pairs, window=window, rollups=True)[pairs[0][:2]], "v1", "v2")
    minutes = canary._overlap_minutes(frame, "v1", "v2")
    scopes = [""] + canary._route_scopes(frame, "v1", "v2")
    grid = canary._grid(frame, minutes, "v1", "v2", scopes)
    assert len(scopes) == 4  # the three routes of the plan
    np.testing.assert_allclose(grid["n"][0], grid["n"][1:].sum(axis=0))
    inside = frame.filter(frame["minute"] >= minutes[0])
    assert grid["n"].sum() == pytest.approx(2 * inside["n"].sum())  # overall + per-route copies


def test_cli_judges_every_canary_from_the_rollups(two_canaries, capsys):
    import json

    from meshlens.cli import main

    lake, plan = two_canaries
    window = _window(plan)
    main(["canary", "--data", str(lake.root), "--since", window.start.isoformat(), "--now",
          window.end.isoformat(), "--json"])
    payload = json.loads(capsys.readouterr().out)
    verdicts = {row[0]: row[4] for row in payload["rows"]}
    assert verdicts["PaymentService"] == "rollback" and verdicts["CartService"] in ("promote", "continue")
    assert all(v["traffic"]["ok"] for v in payload["verdicts"])
