"""The dashboard reads incidents and canary verdicts from the findings store (analytics.findings).

A stored answer is shown on the page's first run, with no background job; a lake that changed
since makes the stored answer stale, and the page computes it again. Each test works on its own
copy of the scenario lake (the dashboard writes the store into the lake it shows).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import polars as pl
import pytest

from analytics import findings
from analytics.anomalies import Incident
from analytics.canary import CanaryVerdict
from meshlens.lake import Lake
from meshlens.timewin import Window
from tests.dashboard_support import pending, rerun_until_ready, run_page
from tests.test_dashboard_pages import assert_clean, frames

pytestmark = pytest.mark.slow


@pytest.fixture()
def copy(scenario: Any, tmp_path: Any) -> Iterator[tuple[Lake, Any, dict[str, str]]]:
    """(a copy of the scenario lake, truth, query params of the day), $MESHLENS_DATA set to it."""
    lake, truth = scenario
    copied = Lake(tmp_path / "lake")
    shutil.copytree(lake.root, copied.root)
    patch = pytest.MonkeyPatch()
    patch.setenv("MESHLENS_DATA", str(copied.root))
    patch.setenv("MESHLENS_POLICY", str(lake.root.parent / "logs" / "policy.toml"))
    yield copied, truth, {"range": "custom", "since": truth.start, "until": truth.end}
    patch.undo()


def day_window(truth: Any) -> Window:
    return Window(truth.start_dt, truth.end_dt)


def sentinel_incident(truth: Any) -> Incident:
    """An incident no detector would find: seeing it proves the page read the store."""
    start = truth.start_dt + timedelta(hours=3)
    return Incident(start=start, end=start + timedelta(minutes=7), peak=start + timedelta(minutes=2), score=0.5,
                    services=["StoredSentinelService"], reasons=["kept in the findings store"], env="prod")


def sentinel_verdict(truth: Any) -> CanaryVerdict:
    return CanaryVerdict(service="StoredSentinelService", env="prod", baseline="v7", canary="v8", verdict="promote",
                         evidence="from the store", decided_at=None, since=None, start=truth.start_dt, end=None,
                         next_weights={"v7": 0, "v8": 100})


def refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make both analyses fail loudly if anything runs them."""
    import analytics.anomalies
    import analytics.canary

    def never(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the analysis ran although its answer was stored")

    monkeypatch.setattr(analytics.anomalies, "detect", never)
    monkeypatch.setattr(analytics.canary, "judge", never)


def store_sentinels(lake: Lake, truth: Any) -> None:
    findings.save(lake, findings.key(lake, "incidents", day_window(truth)), [sentinel_incident(truth)])
    findings.save(lake, findings.key(lake, "canaries", day_window(truth)), [sentinel_verdict(truth)])


def publish_more_data(lake: Lake) -> None:
    """New data lands: one more requests file, published as ingest does (temporary name, rename)."""
    source = next(lake.files("requests"))
    tmp = source.with_name(f".{source.stem}-more.parquet.tmp")
    shutil.copyfile(source, tmp)
    tmp.rename(source.with_name(f"{source.stem}-more.parquet"))


def test_overview_shows_stored_incidents_and_verdicts_on_its_first_run(copy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    lake, truth, params = copy
    store_sentinels(lake, truth)
    refuse(monkeypatch)
    at = run_page("Overview", **params)
    assert_clean(at)
    assert not pending(at), [i.value for i in at.info]
    incidents = next(f for f in frames(at) if "reason" in f.columns)
    assert incidents["services"].to_list() == ["StoredSentinelService"]
    assert incidents["reason"].to_list() == ["kept in the findings store"]
    canaries = next(f for f in frames(at) if "verdict" in f.columns)
    assert canaries.select("service", "canary", "verdict").rows() == [("StoredSentinelService", "v8", "promote")]


def test_anomalies_and_canary_pages_show_the_store_at_once(copy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    lake, truth, params = copy
    store_sentinels(lake, truth)
    refuse(monkeypatch)
    anomalies = run_page("Anomalies", **params)
    assert_clean(anomalies)
    assert not pending(anomalies)
    assert "kept in the findings store" in "\n".join(m.value for m in anomalies.markdown)
    canary = run_page("Canary", **params)
    assert_clean(canary)
    assert not pending(canary)
    assert "from the store" in "\n".join(m.value for m in canary.markdown)


def test_a_changed_lake_makes_the_stored_answer_stale(copy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import analytics.anomalies

    lake, truth, params = copy
    store_sentinels(lake, truth)
    publish_more_data(lake)
    release, calls = threading.Event(), []

    def held(*args: Any, **kwargs: Any) -> list[Incident]:
        calls.append(kwargs["window"])
        release.wait(120)
        return []

    monkeypatch.setattr(analytics.anomalies, "detect", held)
    at = run_page("Anomalies", **params)
    assert_clean(at)
    assert pending(at), "the stale stored answer was shown instead of computing a new one"
    assert "kept in the findings store" not in "\n".join(m.value for m in at.markdown)
    release.set()
    rerun_until_ready(at, timeout=120)
    assert_clean(at)
    assert [s.value for s in at.success] == ["No incident in this window."]
    assert (calls[0].start, calls[0].end) == (truth.start_dt, truth.end_dt)
    # The job stored its answer under the new data's key, and dropped the stale one.
    assert findings.load(lake, findings.key(lake, "incidents", day_window(truth))) == []
    assert len(list(findings.store_dir(lake).glob("incidents-*.json"))) == 1


def test_refresh_stores_what_the_cli_computes_and_the_overview_shows_it(copy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from analytics import anomalies, canary
    from meshlens import catalog

    lake, truth, _ = copy
    keys = findings.refresh(lake)  # what `meshlens ingest` runs after the rollups
    window = day_window(truth)
    assert [(k.kind, k.start, k.end, k.env) for k in keys] == [("incidents", window.start, window.end, None),
                                                                ("canaries", window.start, window.end, None)]
    conn = catalog.connect(lake)
    expected_incidents = anomalies.detect(conn, window=window)
    expected_verdicts = canary.judge(conn, None, window=window)
    assert findings.load(lake, keys[0]) == expected_incidents
    assert [v.as_dict() for v in findings.load(lake, keys[1]) or []] == [v.as_dict() for v in expected_verdicts]
    refuse(monkeypatch)
    at = run_page("Overview")  # no range: the default window, the one refresh stored
    assert_clean(at)
    assert not pending(at)
    shown = next(f for f in frames(at) if "reason" in f.columns)
    assert shown["services"].to_list() == [", ".join(i.services) for i in expected_incidents]
    outage = truth.event("outage")
    assert shown.filter(pl.col("services").str.contains(outage["service"])).height >= 1
    verdicts = next(f for f in frames(at) if "verdict" in f.columns)
    assert sorted(verdicts["verdict"].to_list()) == sorted(v.verdict for v in expected_verdicts)
