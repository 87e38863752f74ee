"""The Claude backend with the real anthropic SDK against a fake Messages API on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import anthropic
import pytest

from meshlens import catalog
from meshlens.settings import Settings
from nlq.ask import ask
from tests.nlq_support import NOW, fake_anthropic, text_message, tiny_lake, tool_message

GOOD_SQL = "SELECT caller, count(*) AS requests FROM requests WHERE service = 'PaymentService' GROUP BY caller ORDER BY caller"
QUESTION = "who calls PaymentService?"


@pytest.fixture()
def conn(tmp_path: Path):
    return catalog.connect(tiny_lake(tmp_path / "lake"))


def _client(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="test-key", base_url=base_url, max_retries=0, timeout=5.0)


def _settings(base_url: str = "") -> Settings:
    return Settings({"anthropic_model": "claude-test-model", "anthropic_base_url": base_url,
                     "anthropic_timeout_seconds": 5.0})


def test_success_runs_the_model_sql_through_the_guard(conn) -> None:
    with fake_anthropic([(200, tool_message(GOOD_SQL, "callers of PaymentService"))]) as (url, fake):
        answer = ask(conn, QUESTION, now=NOW, backend="claude", settings=_settings(), client=_client(url))
    assert answer.backend == "claude" and answer.error is None
    assert answer.rows == [["CheckoutService", 3], ["OrderService", 2], ["OrdersReporting", 1]]
    assert "LIMIT" in answer.sql
    body = fake.requests[0]
    assert fake.paths[0].endswith("/v1/messages")
    assert body["model"] == "claude-test-model"
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "requests" in body["system"][0]["text"] and "5xx" in body["system"][0]["text"]
    assert body["tools"][0]["name"] == "answer_with_sql"
    assert body["tool_choice"] == {"type": "tool", "name": "answer_with_sql"}
    assert QUESTION in body["messages"][0]["content"]


def test_rejected_sql_gets_one_repair_round(conn) -> None:
    script = [(200, tool_message("DROP TABLE requests", tool_id="toolu_bad")),
              (200, tool_message(GOOD_SQL, tool_id="toolu_good"))]
    with fake_anthropic(script) as (url, fake):
        answer = ask(conn, QUESTION, now=NOW, backend="claude", settings=_settings(), client=_client(url))
    assert answer.backend == "claude"
    assert len(fake.requests) == 2
    repair = fake.requests[1]["messages"]
    result = repair[-1]["content"][0]
    assert result["type"] == "tool_result" and result["is_error"] is True
    assert result["tool_use_id"] == "toolu_bad" and "rejected" in result["content"]
    assert conn.execute("SELECT count(*) FROM requests").fetchone() == (10,)


def test_server_errors_fall_back_to_the_offline_answer(conn) -> None:
    error = {"type": "error", "error": {"type": "api_error", "message": "boom"}}
    with fake_anthropic([(500, error), (529, error)]) as (url, fake):
        answer = ask(conn, QUESTION, now=NOW, backend="claude", settings=_settings(), client=_client(url))
    offline = ask(conn, QUESTION, now=NOW, backend="offline")
    assert len(fake.requests) == 2
    assert answer.backend.startswith("offline") and "fallback" in answer.backend
    assert answer.rows == offline.rows and {r[0] for r in answer.rows} == {"CheckoutService", "OrderService", "OrdersReporting"}
    assert "Claude failed twice" in answer.explanation


def test_rejected_twice_falls_back(conn) -> None:
    script = [(200, tool_message("SELECT * FROM read_csv('/etc/passwd')")), (200, text_message("no"))]
    with fake_anthropic(script) as (url, fake):
        answer = ask(conn, QUESTION, now=NOW, backend="claude", settings=_settings(), client=_client(url))
    assert len(fake.requests) == 2 and answer.backend.startswith("offline")


def test_client_built_from_settings(conn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    with fake_anthropic([(200, tool_message(GOOD_SQL))]) as (url, fake):
        answer = ask(conn, QUESTION, now=NOW, backend="claude", settings=_settings(url))
    assert answer.backend == "claude" and len(fake.requests) == 1


def test_clarifications_never_reach_the_model(conn) -> None:
    with fake_anthropic([]) as (url, fake):
        answer = ask(conn, "who calls KafkaBroker?", now=NOW, backend="claude", settings=_settings(), client=_client(url))
    assert fake.requests == [] and answer.error and "KafkaBroker" in answer.error
