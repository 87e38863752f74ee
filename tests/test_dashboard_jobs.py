"""dashboard.jobs: one background run per (analysis, window, env, service, lake fingerprint)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from dashboard import data, jobs

START = datetime(2026, 11, 10, tzinfo=timezone.utc)


class Answer:
    """A stand-in analysis answer (not a dataclass: the store declines it, the job still answers)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def as_dict(self) -> dict[str, str]:
        return {"text": self.text}


@pytest.fixture()
def counted(tmp_lake: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[tuple[Any, ...]], threading.Event]:
    """(lake path, calls made, gate) with the incidents analysis replaced by a gated recorder."""
    calls: list[tuple[Any, ...]] = []
    gate = threading.Event()

    def fake(conn: Any, config: Any, start: datetime, end: datetime, **kwargs: Any) -> list[Any]:
        calls.append((start, end, kwargs))
        gate.wait(30)
        return [Answer(f"answer {len(calls)}")]

    monkeypatch.setitem(jobs.COMPUTE, "incidents", fake)
    monkeypatch.setitem(jobs.SHAPE, "incidents", lambda dicts: dicts[0]["text"])
    return str(tmp_lake.root), calls, gate


@pytest.mark.slow  # opens the catalog (seconds on a loaded machine)
def test_same_arguments_share_one_job(counted: Any) -> None:
    lake, calls, gate = counted
    first = jobs.job("incidents", lake, START, START + timedelta(hours=1), env="prod")
    again = jobs.job("incidents", lake, START, START + timedelta(hours=1), env="prod")
    other = jobs.job("incidents", lake, START, START + timedelta(hours=1), env="staging")
    assert first is again and other is not first
    assert not first.done()
    gate.set()
    assert first.future.result(timeout=30).startswith("answer")
    assert other.future.result(timeout=30).startswith("answer")
    assert len(calls) == 2  # one run per distinct key


@pytest.mark.slow
def test_new_data_starts_a_new_job(counted: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    lake, calls, gate = counted
    gate.set()
    end = START + timedelta(hours=2)
    first = jobs.job("incidents", lake, START, end)
    first.future.result(timeout=30)
    monkeypatch.setattr(data, "fingerprint", lambda _: (999, 999))
    second = jobs.job("incidents", lake, START, end)
    assert second is not first
    second.future.result(timeout=30)
    assert len(calls) == 2


@pytest.mark.parametrize(("hours", "text"), [(0.25, "15 min"), (1, "1 h"), (24, "24 h"), (7 * 24, "7 d")])
def test_span_text(hours: float, text: str) -> None:
    assert jobs.span_text(START, START + timedelta(hours=hours)) == text


def test_waiting_text_names_the_window_and_the_wait() -> None:
    done: Any = jobs.Job(("k",), future=None)  # type: ignore[arg-type]
    done.started -= 4.2
    text = jobs.waiting_text("incidents", done, start=START, end=START + timedelta(hours=24))
    assert text == "Finding incidents in 24 h of traffic… started 4 s ago"


def test_error_text_is_one_line() -> None:
    assert jobs.error_text("Canary judge", RuntimeError("boom\nTraceback ...")) == "Canary judge failed: boom"
    assert jobs.error_text("Canary judge", KeyError()) == "Canary judge failed: KeyError"


@pytest.mark.slow  # opens the catalog
def test_a_finished_job_is_stored_and_a_restarted_server_reads_it(tmp_lake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from analytics.anomalies import Incident

    lake, calls = str(tmp_lake.root), []
    found = Incident(start=START, end=START + timedelta(minutes=5), peak=START, score=1.25,
                     services=["InventoryService"], reasons=["5xx ratio 60% vs 1%"], env="prod")

    def fake(conn: Any, config: Any, start: datetime, end: datetime, **kwargs: Any) -> list[Incident]:
        calls.append(kwargs)
        return [found]

    monkeypatch.setitem(jobs.COMPUTE, "incidents", fake)
    end = START + timedelta(hours=3)
    first = jobs.job("incidents", lake, START, end, env="prod")
    frame = first.future.result(timeout=60)
    assert not first.stored and frame["services"].to_list() == ["InventoryService"]
    restarted = jobs.Runner(ThreadPoolExecutor(max_workers=1))
    monkeypatch.setattr(jobs, "runner", lambda: restarted)
    again = jobs.job("incidents", lake, START, end, env="prod")
    assert again.stored and again.done()
    assert again.result().equals(frame)
    assert len(calls) == 1  # computed once, read back after the "restart"
