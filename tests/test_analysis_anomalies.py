"""Lake anomalies: the planted outage is found with the right services, times and reasons."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from analytics import anomalies
from meshlens.catalog import connect
from meshlens.timewin import Window
from tests.analysis_support import START, Plan, build_lake


def _event(truth, kind: str) -> dict:
    return next(e for e in truth.events if e["kind"] == kind)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def day_incidents(scenario):
    lake, truth = scenario
    window = Window(truth.start_dt, truth.end_dt)
    return anomalies.detect(connect(lake), window=window), truth


@pytest.mark.slow
def test_planted_outage_is_one_incident_with_the_failing_service_first(day_incidents):
    incidents, truth = day_incidents
    outage = _event(truth, "outage")
    start, end = _ts(outage["start"]), _ts(outage["end"])
    hits = [i for i in incidents if i.start < end and i.end > start]
    assert len(hits) == 1, [i.summary for i in incidents]
    hit = hits[0]
    assert hit.services[0] == outage["service"]
    assert abs((hit.start - start).total_seconds()) <= 3 * 60
    assert abs((hit.end - end).total_seconds()) <= 5 * 60
    assert hit.env == outage["env"]
    assert hit.reasons[0].startswith(f"{outage['service']} 5xx ratio")
    # callers that saw it are grouped with it, not reported as separate incidents
    assert set(hit.services) & set(outage["callers"])


@pytest.mark.slow
def test_no_incident_outside_planted_events(day_incidents):
    incidents, truth = day_incidents
    planted = [(_ts(e["start"]), _ts(e["end"])) for e in truth.events
               if e["kind"] in ("outage", "slow_dependency")]
    burst = _event(truth, "denied")
    planted.append((_ts(burst["burst_start"]), _ts(burst["burst_end"])))
    unexplained = [i for i in incidents
                   if not any(i.start < b + timedelta(minutes=10) and i.end > a for a, b in planted)]
    assert len(unexplained) <= 1, [i.summary for i in unexplained]


@pytest.mark.slow
def test_detection_is_causal_live_run_matches_batch_run(scenario, day_incidents):
    lake, truth = scenario
    incidents, _ = day_incidents
    outage = _event(truth, "outage")
    live_now = _ts(outage["start"]) + timedelta(minutes=8)
    live = anomalies.detect(connect(lake), window=Window(truth.start_dt, live_now))
    live_hit = [i for i in live if i.services and i.services[0] == outage["service"]]
    batch_hit = [i for i in incidents if i.services and i.services[0] == outage["service"]]
    assert live_hit and batch_hit
    assert live_hit[0].start == batch_hit[0].start  # what was flagged live is what the batch run flags


def test_clean_lake_raises_nothing(tmp_path):
    lake = build_lake(tmp_path / "lake", Plan(hours=5, seed=21))
    window = Window(START, START + timedelta(hours=5))
    assert anomalies.detect(connect(lake), window=window) == []


def test_outage_in_synthetic_lake_names_service_and_ratio(tmp_path):
    lake = build_lake(tmp_path / "lake", Plan(hours=4, seed=22))
    table = _with_outage(lake, service="CatalogService", start=START + timedelta(hours=3), minutes=15)
    lake.write_partitioned("requests", table, ts_column="ts", stem="outage")
    window = Window(START, START + timedelta(hours=4))
    incidents = anomalies.detect(connect(lake), window=window)
    assert len(incidents) == 1, [i.summary for i in incidents]
    inc = incidents[0]
    assert inc.services[0] == "CatalogService"
    assert "5xx ratio" in inc.reasons[0] and "baseline" in inc.reasons[0]
    assert START + timedelta(hours=3) <= inc.start <= START + timedelta(hours=3, minutes=3)
    json.dumps(inc.as_dict())


def _with_outage(lake, *, service: str, start: datetime, minutes: int):
    """Extra failing requests for ``service``: ~40 per minute, 70% 503."""
    import numpy as np
    import pyarrow as pa

    from meshlens import schema

    rng = np.random.default_rng(5)
    n = 40 * minutes
    ts = [start + timedelta(seconds=float(s)) for s in np.sort(rng.uniform(0, minutes * 60, n))]
    table = pa.table({"ts": pa.array(ts, type=pa.timestamp("us", tz="UTC")),
                      "duration_ms": rng.lognormal(np.log(40), 0.4, n), "caller": ["EdgeGateway"] * n,
                      "service": [service] * n, "version": ["v1"] * n, "env": ["prod"] * n,
                      "method": ["GET"] * n, "route": ["/v1/items/{id}"] * n,
                      "status": pa.array(np.where(rng.random(n) < 0.7, 503, 200), type=pa.int32())})
    return schema.conform(table, schema.REQUESTS)
