"""The Claude backend: the model writes the SQL, the guard checks it, the offline answer backs it up.

The system prompt (cached with ``cache_control``: it is the same for every question) holds the
schema from meshlens.schema.COLUMN_DOCS, the conventions and worked examples; the question,
the present time and the names in the lake go in the user turn. The model must call the tool
``answer_with_sql`` with ``{sql, explanation}`` (optionally the window it used). The SQL then
meets the same guard as every other query. On any failure (network, timeout, no tool call,
a rejected or failing query) there is exactly one repair round that shows the model the error;
after a second failure the offline answer is returned, labelled as the fallback.

The client is passed in (``client=``) or built here from the settings (base URL, timeout, no
retries: the fallback is the retry); the SDK reads ANTHROPIC_API_KEY itself. Tests point the
real SDK at a local fake server; nothing here is ever called live by the test suite.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import duckdb

from meshlens.errors import QueryRejected
from meshlens.schema import COLUMN_DOCS
from meshlens.settings import Settings
from meshlens.timewin import Window, iso, parse_instant
from nlq import guard, timeexpr

TOOL_NAME = "answer_with_sql"
TOOL = {
    "name": TOOL_NAME,
    "description": "Answer the question with one DuckDB SELECT over the meshlens views, and say what it computes.",
    "input_schema": {
        "type": "object",
        "properties": {
            "sql": {"type": "string", "description": "One read-only DuckDB SELECT over the views listed in the system prompt."},
            "explanation": {"type": "string", "description": "One or two sentences: what the query computes, for which window."},
            "window_start": {"type": "string", "description": "ISO-8601 UTC start of the window used (inclusive)."},
            "window_end": {"type": "string", "description": "ISO-8601 UTC end of the window used (exclusive)."},
        },
        "required": ["sql", "explanation"],
    },
}
EXAMPLES = (
    ("who calls PaymentService?",
     "SELECT caller, count(*) AS requests, count(*) FILTER (WHERE status >= 500) AS errors_5xx FROM requests "
     "WHERE service = 'PaymentService' AND ts >= TIMESTAMPTZ '<start>' AND ts < TIMESTAMPTZ '<end>' "
     "GROUP BY caller ORDER BY requests DESC"),
    ("error rate of PaymentService by version in the last hour",
     "SELECT version, sum(requests) AS requests, sum(errors_5xx) AS errors_5xx, "
     "round(sum(errors_5xx) / sum(requests), 5) AS error_ratio FROM requests_1m "
     "WHERE service = 'PaymentService' AND minute >= TIMESTAMPTZ '<now - 1h>' AND minute < TIMESTAMPTZ '<now>' "
     "GROUP BY version ORDER BY version"),
    ("p99 latency of CheckoutService yesterday",
     "SELECT round(quantile_cont(duration_ms, 0.99), 1) AS p99_ms, count(*) AS requests FROM requests "
     "WHERE service = 'CheckoutService' AND ts >= TIMESTAMPTZ '<yesterday 00:00>' AND ts < TIMESTAMPTZ '<today 00:00>'"),
)


def system_prompt() -> str:
    """The cached part of the prompt: schema, conventions, examples."""
    lines = ["You translate questions about service-to-service traffic into one DuckDB SELECT.",
             "Views you may read (nothing else; no table functions, no files):"]
    for table, columns in COLUMN_DOCS.items():
        lines.append(f"- {table}: " + "; ".join(f"{c} ({doc})" for c, doc in columns.items()))
    lines += [
        "- requests_1h, edges_1m, edges_1h: like requests_1m (time column `hour` for *_1h; the edges_* "
        "rollups have only caller, service, version, env as keys). Prefer rollups for counts and error "
        "ratios; use raw `requests` for percentiles (quantile_cont(duration_ms, q)) and exact status codes.",
        "- edges: caller, callee, log_requests, trace_requests, seen_in, first_seen, last_seen (all time).",
        "- services: service, versions, envs, requests, first_seen, last_seen (all time).",
        "Conventions: all times UTC; windows are half-open [start, end); no time in the question means "
        "the 24 hours before now; an error is status >= 500 (5xx); 4xx are client errors, reported apart; "
        "error ratio = errors / requests. Filter on `date` too (the partition) to read fewer files. "
        "Service names are CamelCase exactly as listed in the user turn: never substitute a look-alike.",
        "Always answer by calling the tool. Examples:",
    ]
    lines += [f"Q: {q}\nSQL: {sql}" for q, sql in EXAMPLES]
    return "\n".join(lines)


def user_prompt(question: str, *, now: datetime, services: list[str]) -> str:
    """The per-question part: the present, the names in the lake, the question."""
    return (f"Now is {iso(now)}. Services in the lake: {', '.join(services[:400])}.\n"
            f"Question: {question}")


def make_client(settings: Settings) -> Any:
    """An Anthropic client from the settings (base URL, timeout, no retries)."""
    import anthropic

    kwargs: dict[str, Any] = {"timeout": float(settings["anthropic_timeout_seconds"]), "max_retries": 0}
    if settings["anthropic_base_url"]:
        kwargs["base_url"] = settings["anthropic_base_url"]
    return anthropic.Anthropic(**kwargs)


def request(client: Any, messages: list[dict[str, Any]], *, settings: Settings) -> Any:
    """One Messages API call that must use the tool."""
    return client.messages.create(
        model=settings["anthropic_model"], max_tokens=1024,
        system=[{"type": "text", "text": system_prompt(), "cache_control": {"type": "ephemeral"}}],
        tools=[TOOL], tool_choice={"type": "tool", "name": TOOL_NAME}, messages=messages,
    )


def tool_call(response: Any) -> tuple[str, dict[str, Any]]:
    """(tool_use id, input) of the response's tool call; ValueError when there is none."""
    for block in getattr(response, "content", []) or []:
        if getattr(block, "type", "") == "tool_use" and getattr(block, "name", "") == TOOL_NAME:
            data = dict(block.input or {})
            if not isinstance(data.get("sql"), str) or not data["sql"].strip():
                raise ValueError("the tool call has no sql")
            return block.id, data
    raise ValueError("the model did not call the tool")


def answer(conn: duckdb.DuckDBPyConnection, question: str, *, now: datetime, settings: Settings, client: Any,
           fallback: Callable[[], Any], context: Any) -> Any:
    """Ask Claude for SQL, run it guarded; one repair round; then the offline ``fallback``."""
    from nlq.ask import Answer

    try:
        client = client or make_client(settings)
    except Exception:  # noqa: BLE001 - no key or no SDK: the offline answer stands in
        return fallback()
    messages: list[dict[str, Any]] = [{"role": "user", "content": user_prompt(question, now=now, services=context.vocab.services)}]
    last_error = ""
    for attempt in range(2):
        try:
            response = request(client, messages, settings=settings)
        except Exception as exc:  # noqa: BLE001 - any API failure gets the one repair round
            last_error = f"request failed: {exc}"
            continue
        try:
            tool_id, data = tool_call(response)
        except ValueError as exc:
            messages += [{"role": "assistant", "content": _content(response)},
                         {"role": "user", "content": f"{exc}. Call the tool {TOOL_NAME} with the SQL."}]
            last_error = str(exc)
            continue
        try:
            columns, rows = guard.run_guarded(conn, data["sql"], settings=settings)
        except QueryRejected as exc:
            messages += [{"role": "assistant", "content": _content(response)},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "is_error": True,
                                                       "content": f"The query was rejected: {exc}. Fix it."}]}]
            last_error = str(exc)
            continue
        window = _window(data, question=question, now=now)
        sql = guard.check(data["sql"], allowed=guard.allowed_views(), row_limit=int(settings["query_row_limit"]))
        return Answer(columns, [list(r) for r in rows], sql, str(data.get("explanation", "")),
                      backend="claude", window=window, intent="claude")
    result = fallback()
    result.explanation = f"{result.explanation} (Claude failed twice: {last_error}; this is the offline answer.)"
    return result


def _content(response: Any) -> list[dict[str, Any]]:
    """The assistant turn to send back in the repair round."""
    out = []
    for block in getattr(response, "content", []) or []:
        if getattr(block, "type", "") == "tool_use":
            out.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
        elif getattr(block, "type", "") == "text":
            out.append({"type": "text", "text": block.text})
    return out or [{"type": "text", "text": "(no answer)"}]


def _window(data: dict[str, Any], *, question: str, now: datetime) -> Window:
    try:
        if data.get("window_start") and data.get("window_end"):
            return Window(parse_instant(data["window_start"]), parse_instant(data["window_end"]))
    except Exception:  # noqa: BLE001 - a malformed window falls back to the question's own
        pass
    return timeexpr.parse(question, now=now)
