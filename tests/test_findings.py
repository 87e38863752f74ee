"""analytics.findings: the stored incidents and canary verdicts (round trip, staleness, writers)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from analytics import findings
from analytics.anomalies import Incident
from analytics.canary import CanaryVerdict
from meshlens.lake import Lake
from meshlens.timewin import Window

DAY = datetime(2026, 11, 10, tzinfo=timezone.utc)
WINDOW = Window(DAY, DAY + timedelta(days=1))


def publish(lake: Lake, name: str = "a") -> None:
    """Publish one small file into the requests table (as ingest does: temp name, rename)."""
    lake.write_file(lake.table_dir("requests") / "date=2026-11-10" / f"{name}.parquet",
                    pa.table({"x": [1, 2, 3]}))


def incident(n: int = 0) -> Incident:
    return Incident(start=DAY + timedelta(hours=14), end=DAY + timedelta(hours=14, minutes=20 + n),
                    peak=DAY + timedelta(hours=14, minutes=3), score=float(np.float64(0.987654321)) + n,
                    services=["InventoryService", "CheckoutService"],
                    edges=[("CheckoutService", "InventoryService")],
                    reasons=["5xx ratio 61.2% vs 0.9% usual"], series=["svc|InventoryService|prod"], env="prod")


def verdict() -> CanaryVerdict:
    return CanaryVerdict(service="PaymentService", env="prod", baseline="v1", canary="v2", verdict="rollback",
                         evidence="v2 5xx 3.1% vs v1 1.0%", decided_at=DAY + timedelta(hours=11),
                         since=DAY + timedelta(hours=10, minutes=30), start=DAY + timedelta(hours=9), end=None,
                         overall=[{"version": "v2", "requests": np.int64(1234), "p99_ms": 412.5, "nan": float("nan")}],
                         routes=[{"route": "POST /v1/charges/{id}", "ratio": 3.02}],
                         traffic={"share": 0.1, "note": "as expected"}, next_weights={"v1": 100, "v2": 0})


@pytest.fixture()
def lake(tmp_lake: Lake) -> Lake:
    publish(tmp_lake)
    return tmp_lake


def test_incidents_round_trip_exactly(lake: Lake) -> None:
    entry = findings.key(lake, "incidents", WINDOW)
    assert findings.load(lake, entry) is None
    stored = [incident(0), incident(1)]
    findings.save(lake, entry, stored)
    loaded = findings.load(lake, entry)
    assert loaded == stored
    assert isinstance(loaded[0].edges[0], tuple) and loaded[0].start.tzinfo is not None


def test_verdicts_round_trip(lake: Lake) -> None:
    entry = findings.key(lake, "canaries", WINDOW, env="prod", service="PaymentService")
    findings.save(lake, entry, [verdict()])
    (loaded,) = findings.load(lake, entry) or [None]
    original = verdict()
    assert loaded.as_dict()["decided_at"] == original.as_dict()["decided_at"] == "2026-11-10T11:00:00Z"
    assert loaded.overall[0]["requests"] == 1234 and np.isnan(loaded.overall[0]["nan"])
    assert {k: v for k, v in loaded.as_dict().items() if k != "overall"} == \
        {k: v for k, v in original.as_dict().items() if k != "overall"}


def test_every_part_of_the_key_counts(lake: Lake) -> None:
    findings.save(lake, findings.key(lake, "incidents", WINDOW), [incident()])
    later = Window(WINDOW.start, WINDOW.end + timedelta(minutes=1))
    for other in (findings.key(lake, "incidents", later), findings.key(lake, "incidents", WINDOW, env="prod"),
                  findings.key(lake, "incidents", WINDOW, service="PaymentService"),
                  findings.key(lake, "canaries", WINDOW)):
        assert findings.load(lake, other) is None


def test_new_data_makes_the_entry_stale(lake: Lake) -> None:
    before = findings.key(lake, "incidents", WINDOW)
    findings.save(lake, before, [incident()])
    publish(lake, "b")
    after = findings.key(lake, "incidents", WINDOW)
    assert after.fingerprint != before.fingerprint
    assert findings.load(lake, after) is None


def test_rewritten_rollup_makes_the_entry_stale(lake: Lake) -> None:
    before = findings.key(lake, "incidents", WINDOW)
    findings.save(lake, before, [incident()])
    lake.write_file(lake.table_dir("rollups/requests_1m") / "date=2026-11-10" / "r.parquet", pa.table({"x": [1]}))
    assert findings.load(lake, findings.key(lake, "incidents", WINDOW)) is None


def test_new_code_makes_the_entry_stale(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    findings.save(lake, findings.key(lake, "incidents", WINDOW), [incident()])
    monkeypatch.setattr(findings, "code_version", lambda: "another-version")
    assert findings.load(lake, findings.key(lake, "incidents", WINDOW)) is None


def test_the_store_is_not_data(lake: Lake) -> None:
    entry = findings.key(lake, "incidents", WINDOW)
    findings.save(lake, entry, [incident()])
    assert findings.data_fingerprint(lake) == entry.fingerprint
    assert findings.load(lake, findings.key(lake, "incidents", WINDOW)) == [incident()]


def test_an_answer_computed_on_older_data_is_not_stored(lake: Lake) -> None:
    entry = findings.key(lake, "incidents", WINDOW)
    publish(lake, "b")  # data lands while the analysis runs
    assert findings.save(lake, entry, [incident()]) is None
    assert not list(findings.store_dir(lake).glob("*.json"))


def test_saving_drops_entries_of_older_data(lake: Lake) -> None:
    old = findings.key(lake, "incidents", WINDOW)
    findings.save(lake, old, [incident()])
    publish(lake, "b")
    new = findings.key(lake, "incidents", WINDOW)
    findings.save(lake, new, [incident(1)])
    names = [p.name for p in findings.store_dir(lake).glob("*.json")]
    assert names == [new.file_name()]


def test_an_entry_with_another_key_inside_is_ignored(lake: Lake) -> None:
    entry = findings.key(lake, "incidents", WINDOW)
    path = findings.save(lake, entry, [incident()])
    assert path is not None
    payload = json.loads(path.read_text())
    payload["key"]["env"] = "staging"
    path.write_text(json.dumps(payload))
    assert findings.load(lake, entry) is None


def test_concurrent_writers_never_leave_a_torn_entry(lake: Lake) -> None:
    entry = findings.key(lake, "incidents", WINDOW)
    answers = {n: [incident(k) for k in range(n)] for n in (1, 40, 150)}
    findings.save(lake, entry, answers[1])
    seen: list[Any] = []
    stop = threading.Event()

    def write(n: int) -> None:
        for _ in range(8):
            findings.save(lake, entry, answers[n])

    def read() -> None:
        while not stop.is_set():
            seen.append(findings.load(lake, entry))

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(n,)) for n in answers]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert seen and all(s in answers.values() for s in seen)  # never missing, never half written
    assert findings.load(lake, entry) in answers.values()
    assert [p.name for p in findings.store_dir(lake).iterdir()] == [entry.file_name()]  # no temp file left


def test_anchor_is_the_next_minute_after_the_newest_data() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    latest = datetime(2026, 11, 10, 23, 59, 42, tzinfo=timezone.utc)
    assert findings.anchor(latest, now=now) == datetime(2026, 11, 11, tzinfo=timezone.utc)
    assert findings.anchor(now - timedelta(hours=1), now=now) == now - timedelta(hours=1)
    assert findings.anchor(None, now=now + timedelta(seconds=5)) == now + timedelta(minutes=1)
    window = findings.default_window(latest, now=now)
    assert (window.start, window.end) == (DAY + timedelta(days=1) - timedelta(hours=24), DAY + timedelta(days=1))


def test_refresh_of_an_empty_lake_stores_nothing(tmp_lake: Lake) -> None:
    assert findings.refresh(tmp_lake) == []


def test_refresh_never_raises(lake: Lake, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(findings, "_refresh", broken)
    assert findings.refresh(lake) == []
    assert "disk on fire" in caplog.text


def test_unknown_kind_is_refused(lake: Lake) -> None:
    with pytest.raises(ValueError, match="unknown findings kind"):
        findings.key(lake, "forecasts", WINDOW)


def test_store_lives_in_the_lake(lake: Lake) -> None:
    path = findings.save(lake, findings.key(lake, "incidents", WINDOW), [incident()])
    assert path is not None and Path(path).parent == lake.root / findings.STORE


def test_dicts_are_the_results_as_dict_without_importing_analytics(lake: Lake) -> None:
    entry = findings.key(lake, "canaries", WINDOW)
    findings.save(lake, entry, [verdict()])
    (shown,) = findings.load_dicts(lake, entry) or [None]
    expected = json.loads(json.dumps(verdict().as_dict(), default=int))
    assert {k: v for k, v in shown.items() if k != "overall"} == {k: v for k, v in expected.items() if k != "overall"}
    assert shown["overall"][0]["requests"] == 1234
