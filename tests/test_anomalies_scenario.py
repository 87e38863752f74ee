"""Anomalies on the demo scenario: the planted slow dependency, and a quiet network that raises nothing."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from analytics import anomalies
from meshlens.catalog import connect
from meshlens.lake import Lake
from meshlens.timewin import Window


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def day(scenario):
    lake, truth = scenario
    return anomalies.detect(connect(lake), window=Window(truth.start_dt, truth.end_dt)), truth


@pytest.mark.slow
def test_slow_dependency_is_one_incident_on_the_edge_with_a_p99_reason(day):
    incidents, truth = day
    event = truth.event("slow_dependency")
    start, end = _ts(event["start"]), _ts(event["end"])
    edge = (event["caller"], event["service"])
    hits = [i for i in incidents if i.start < end and i.end > start and edge in i.edges]
    assert len(hits) == 1, [i.summary for i in incidents]
    hit = hits[0]
    assert hit.env == event["env"]
    assert abs((hit.start - start).total_seconds()) <= 10 * 60
    assert abs((hit.end - end).total_seconds()) <= 15 * 60
    reason = next(r for r in hit.reasons if r.startswith(f"{event['caller']} -> {event['service']} "))
    now, base = (float(v.replace(",", "")) for v in re.search(r"p99 ([\d,]+) ms vs ([\d,]+) ms baseline", reason).groups())
    assert 0.5 * event["added_ms"] <= now - base <= 2.0 * event["added_ms"], reason
    assert base < event["p50_ms_before"] * 4 and now > event["p50_ms_during"] * 0.9
    # the callers that were slowed with it (ShippingService and who calls it) are in the same incident
    callers = {e["caller"] for e in truth.edges if e["callee"] == event["caller"] and e["env"] == event["env"]}
    assert event["caller"] in hit.services and set(hit.services) & callers


@pytest.mark.slow
def test_outage_and_slow_dependency_are_separate_incidents(day):
    incidents, truth = day
    outage, slow = truth.event("outage"), truth.event("slow_dependency")
    for event in (outage, slow):
        start, end = _ts(event["start"]), _ts(event["end"])
        hits = [i for i in incidents if i.start < end and i.end > start and event["service"] in i.services]
        assert len(hits) == 1, (event["kind"], [i.summary for i in incidents])


@pytest.mark.slow
def test_quiet_scenario_raises_nothing(tmp_path):
    from ingest.pipeline import ingest_paths
    from sample_logs.scenario import generate

    end = datetime(2026, 11, 11, tzinfo=timezone.utc)
    truth = generate(tmp_path / "logs", end=end, hours=12, seed=11, scale=0.25, events=())
    lake = Lake(tmp_path / "lake")
    ingest_paths(lake, [tmp_path / "logs"], inventory=tmp_path / "logs" / "meshlens.toml")
    incidents = anomalies.detect(connect(lake), window=Window(truth.start_dt, truth.end_dt))
    assert incidents == [], [i.summary for i in incidents]
