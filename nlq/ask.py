"""``ask``: a plain-language question -> an Answer (rows, the SQL, the window, the conventions).

The one entry point for the CLI, the dashboard and notebooks. It reads the names in the lake
(for fuzzy matching), lets the chosen backend write SQL (offline templates, or Claude with the
offline answer as fallback), runs that SQL through the guard (nlq.guard.run_guarded) and
returns the rows with the SQL that produced them. A diagnosis question runs the playbook
(nlq.playbook). Every answer states the conventions: UTC, half-open windows, no time given
means the last 24 hours, an error is a 5xx answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import duckdb

from meshlens.errors import MeshlensError, QueryRejected
from meshlens.settings import Settings
from meshlens.timewin import Window
from nlq import guard, offline, sqlgen
from nlq.entities import Vocabulary, load_vocabulary

CONTEXT_TTL_SECONDS = 60.0
_CACHE: dict[int, tuple[duckdb.DuckDBPyConnection, float, "Context"]] = {}

CONVENTIONS = ("Times are UTC; windows are half-open [start, end); a question without a time "
               "covers the last 24 hours; an error is a 5xx answer (4xx are client errors, shown apart).")


@dataclass
class Answer:
    """What ``ask`` returns: the table, how it was obtained, and any question back."""

    columns: list[str]
    rows: list[list[Any]]
    sql: str
    explanation: str
    backend: str
    window: Window | None
    intent: str = ""
    clarification: str | None = None
    error: str | None = None
    conventions: str = CONVENTIONS
    findings: list[dict[str, Any]] = field(default_factory=list)
    recommendation: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of DESIGN.md (columns, rows, sql, explanation, backend, window, ...)."""
        out: dict[str, Any] = {
            "columns": self.columns, "rows": self.rows, "sql": self.sql,
            "explanation": self.explanation, "backend": self.backend,
            "window": self.window.as_dict() if self.window else None,
            "intent": self.intent, "conventions": self.conventions,
        }
        for key in ("clarification", "error", "recommendation"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.findings:
            out["findings"] = self.findings
        return out


def ask(
    conn: duckdb.DuckDBPyConnection,
    question: str,
    *,
    now: datetime | None = None,
    backend: str = "offline",
    settings: Settings | None = None,
    client: Any = None,
) -> Answer:
    """Answer ``question`` from the lake behind ``conn``."""
    settings = settings or Settings()
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    context = Context.load(conn, exact_max_rows=int(settings["exact_percentile_max_rows"]))
    plan = offline.translate(question, now=now, vocab=context.vocab, rollups=context.rollups,
                             identity_rollup=context.identity_rollup)
    if backend == "claude" and plan.intent not in ("clarify", "diagnosis"):
        from nlq import claude

        return claude.answer(conn, question, now=now, settings=settings, client=client,
                             fallback=lambda: run_plan(conn, plan, settings=settings, backend="offline (fallback)"),
                             context=context)
    return run_plan(conn, plan, settings=settings, backend="offline")


@dataclass
class Context:
    """What a question is read against: the lake's names and whether rollups are built."""

    vocab: Vocabulary
    rollups: bool | str  # False, True, or "sketch" (percentiles from sketches: a big lake)
    identity_rollup: bool = False  # the principal rollup (analytics.rollup_identity) holds rows

    @classmethod
    def load(cls, conn: duckdb.DuckDBPyConnection, *, exact_max_rows: int = 200_000) -> "Context":
        """The context of ``conn``, cached for a minute (names change only with an ingest)."""
        key = id(conn)
        cached = _CACHE.get(key)
        if cached and cached[0] is conn and time.monotonic() - cached[1] < CONTEXT_TTL_SECONDS:
            return cached[2]
        context = cls._read(conn, exact_max_rows=exact_max_rows)
        _CACHE[key] = (conn, time.monotonic(), context)
        return context

    @classmethod
    def _read(cls, conn: duckdb.DuckDBPyConnection, *, exact_max_rows: int) -> "Context":
        rollups: bool | str = rollups_available(conn)
        if rollups and _total_requests(conn) > exact_max_rows:
            rollups = sqlgen.SKETCH
        source = "edges_1d" if rollups else "requests"
        vocab = load_vocabulary(conn, source=source)
        if rollups:
            extra = load_vocabulary(conn, source="requests_1d")
            vocab = Vocabulary(services=vocab.services, versions=vocab.versions, routes=extra.routes,
                               envs=vocab.envs, principal_loader=lambda: _principals(conn))
        return cls(vocab, rollups, bool(rollups) and _has_rows(conn, "identity_1h"))


def _total_requests(conn: duckdb.DuckDBPyConnection) -> int:
    row = conn.execute("SELECT coalesce(sum(requests), 0) FROM edges_1h").fetchone()
    return int(row[0]) if row else 0


def _principals(conn: duckdb.DuckDBPyConnection) -> list[str]:
    rows = conn.execute("SELECT DISTINCT caller_principal FROM requests LIMIT 100000").fetchall()
    return sorted(str(r[0]) for r in rows if r[0])


def _has_rows(conn: duckdb.DuckDBPyConnection, view: str) -> bool:
    try:
        return conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM {view} LIMIT 1)").fetchone() == (1,)
    except duckdb.Error:
        return False


def rollups_available(conn: duckdb.DuckDBPyConnection) -> bool:
    """True when the hourly and minute rollups exist and hold rows."""
    views = {r[0] for r in conn.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    if not {"requests_1m", "requests_1h", "requests_1d", "edges_1m", "edges_1h", "edges_1d"} <= views:
        return False
    return _has_rows(conn, "edges_1h")


def run_plan(conn: duckdb.DuckDBPyConnection, plan: offline.Plan, *, settings: Settings, backend: str) -> Answer:
    """Run what the offline backend planned (SQL, playbook or a question back)."""
    base = dict(backend=backend, window=plan.window, intent=plan.intent)
    if plan.clarification or plan.error:
        return Answer([], [], "", plan.clarification or plan.error or "", clarification=plan.clarification,
                      error=plan.error, **base)  # type: ignore[arg-type]
    if plan.intent == "diagnosis":
        from nlq import playbook

        return playbook.diagnose(conn, plan, settings=settings, backend=backend)
    try:
        sql = guard.check(plan.sql, allowed=guard.allowed_views(), row_limit=int(settings["query_row_limit"]))
        columns, rows = guard.run_guarded(conn, sql, settings=settings)
    except QueryRejected as exc:
        return Answer([], [], plan.sql, plan.explanation, error=str(exc), **base)  # type: ignore[arg-type]
    explanation = plan.explanation + (" No rows matched." if not rows else "")
    return Answer(columns, [list(r) for r in rows], sql, explanation, **base)  # type: ignore[arg-type]


def safe_ask(conn: duckdb.DuckDBPyConnection, question: str, **kwargs: Any) -> Answer:
    """``ask`` that turns a MeshlensError into an Answer with ``error`` set (for the dashboard)."""
    try:
        return ask(conn, question, **kwargs)
    except MeshlensError as exc:
        return Answer([], [], "", "", backend=kwargs.get("backend", "offline"), window=None, error=str(exc))
