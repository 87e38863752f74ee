"""Cached calls into analytics and nlq: the dashboard's only source of numbers.

Cached answers live until the lake changes: ``sync`` (run at the top of every page) compares a
cheap fingerprint of the lake's folders and clears the caches when new files were published.
One DuckDB connection per lake (``st.cache_resource``); each call gets its own cursor of it,
because Streamlit runs sessions in threads and one DuckDB connection serves one query at a time.
User SQL and Ask run on a second connection that nlq.guard hardens, under a lock. Every call into
analytics/nlq is cached (``st.cache_data``) on its arguments, with a short time-to-live so
that newly ingested data shows up. Nothing here computes: each function only calls the
analytics or nlq function of the same name. A feature that has not been built raises
``Unavailable``, which the pages show as a note instead of failing. The two slow analyses
(``detect_incidents``, ``judge_canaries``) take a connection instead of the lake and make no
Streamlit call: dashboard.jobs takes their answers from the findings store (analytics.findings)
or runs them in the background, and the pages show them.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import streamlit as st

from analytics.findings import STORE
from meshlens import catalog, schema
from meshlens import settings as settings_mod
from meshlens.lake import Lake
from meshlens.timewin import Window

TTL_SECONDS = 3600
SLOW_TTL_SECONDS = 3600
"""Answers are kept until the lake changes (``sync``), at most an hour."""


class Unavailable(Exception):
    """An analytics/nlq function the page needs does not exist (yet) in this build."""


@dataclass
class _Shared:
    conn: duckdb.DuckDBPyConnection
    lock: threading.Lock


@st.cache_resource(show_spinner=False)
def _shared(data: str) -> _Shared:
    _register_rollups()
    return _Shared(catalog.connect(Lake(data)), threading.Lock())


@st.cache_resource(show_spinner=False)
def _guarded(data: str) -> _Shared:
    """A second connection for user SQL and Ask: nlq.guard hardens (locks) it."""
    _register_rollups()
    return _Shared(catalog.connect(Lake(data)), threading.Lock())


def _register_rollups() -> None:
    """Importing analytics.rollup registers the rollup views (when it exists)."""
    try:
        importlib.import_module("analytics.rollup")
    except ModuleNotFoundError:
        pass


def function(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, or Unavailable when either is missing."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise Unavailable(f"{module} is not part of this build yet") from None
        raise
    fn = getattr(mod, name, None)
    if fn is None:
        raise Unavailable(f"{module}.{name} is not part of this build yet")
    return fn


def open_connection(data: str) -> _Shared:
    """A new connection of its own to the lake (the background analyses use one per lake version)."""
    _register_rollups()
    return _Shared(catalog.connect(Lake(data)), threading.Lock())


def shared(data: str) -> _Shared:
    """The lake's cached DuckDB connection (opened on first use)."""
    return _shared(data)


def call(data: str, module: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``module.name(conn, *args, **kwargs)`` on a fresh cursor of the lake's connection."""
    return call_on(_shared(data), module, name, *args, **kwargs)


def call_on(conn: _Shared, module: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """``call`` on a connection already opened (background threads: no Streamlit calls)."""
    fn = function(module, name)
    cursor = catalog.cursor(conn.conn)
    started = time.perf_counter()
    try:
        return fn(cursor, *args, **kwargs)
    finally:
        cursor.close()
        TIMINGS.append((f"{module}.{name}", time.perf_counter() - started))
        del TIMINGS[:-50]


TIMINGS: list[tuple[str, float]] = []
"""The latest uncached calls into analytics and their durations (``?timings=1`` shows them)."""


def lake_version(data: str) -> tuple[int, int]:
    """A cheap fingerprint of the lake: (folders, newest folder or top-level file mtime).

    Files are published by renaming them into a folder, which updates that folder's mtime, so
    any new or removed file (raw data, rollups, manifest) changes the fingerprint. The findings
    store (analytics.findings.STORE) is left out, and so is the root's own mtime (creating that
    folder changes it): storing an answer is not new data. The root's files (settings.toml,
    policy.toml) count by their own mtime.
    """
    count, newest, stack = _top_level(Path(data))
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                newest = max(newest, folder.stat().st_mtime_ns)
                count += 1
                stack.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return count, newest


def _top_level(root: Path) -> tuple[int, int, list[Path]]:
    """(1 or 0 if absent, newest mtime of the root's files, the root's folders but the store)."""
    newest, folders = 0, []
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    newest = max(newest, entry.stat().st_mtime_ns)
                elif entry.name != STORE:
                    folders.append(Path(entry.path))
    except OSError:
        return 0, 0, []
    return 1, newest, folders


_SEEN: dict[str, tuple[int, int]] = {}


def fingerprint(data: str) -> tuple[int, int]:
    """The lake fingerprint ``sync`` saw last (computed when it has not run yet)."""
    return _SEEN.get(data) or lake_version(data)


def sync(data: str) -> bool:
    """Forget cached answers and re-register the views when the lake changed; True if it did."""
    version = lake_version(data)
    if _SEEN.get(data) == version:
        return False
    if data in _SEEN:
        for shared in (_shared(data), _guarded(data)):
            with shared.lock:
                catalog.register_views(shared.conn, Lake(data))
        st.cache_data.clear()
    _SEEN[data] = version
    return True


@st.cache_data(show_spinner=False)
def settings(data: str) -> settings_mod.Settings:
    """Resolved settings (environment and <data>/settings.toml), as the CLI sees them."""
    return settings_mod.from_environment(data=data)


def _window(start: datetime, end: datetime) -> Window:
    return Window(start, end)


# -- metrics (analytics.red, analytics.graph) ----------------------------------------------
@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def latest_ts(data: str) -> datetime | None:
    """Newest request time in the lake (analytics.rollup_identity.latest_ts), None when empty."""
    return call(data, "analytics.rollup_identity", "latest_ts")


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def red(data: str, start: datetime, end: datetime, *, by: tuple[str, ...] = (),
        service: str | None = None, caller: str | None = None, env: str | None = None,
        bucket: str | None = None) -> Any:
    """analytics.red.red over [start, end)."""
    return call(data, "analytics.red", "red", window=_window(start, end), by=list(by),
                service=service, caller=caller, env=env, bucket=bucket, settings=settings(data))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def counts(data: str, start: datetime, end: datetime, *, by: tuple[str, ...] = (), bucket: str | None = None,
           service: str | None = None, env: str | None = None) -> Any:
    """analytics.rollup_identity.counts: red's counts without percentiles, from the identity rollup."""
    return call(data, "analytics.rollup_identity", "counts", window=_window(start, end), by=by,
                bucket=bucket, service=service, env=env)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def service_graph(data: str, start: datetime, end: datetime, *, env: str | None = None) -> Any:
    """analytics.graph.service_graph over [start, end)."""
    return call(data, "analytics.graph", "service_graph", window=_window(start, end), env=env,
                settings=settings(data))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def callers(data: str, service: str, start: datetime, end: datetime, *, env: str | None = None) -> Any:
    """analytics.graph.callers of ``service``."""
    return call(data, "analytics.graph", "callers", service, window=_window(start, end), env=env,
                settings=settings(data))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def callees(data: str, service: str, start: datetime, end: datetime, *, env: str | None = None) -> Any:
    """analytics.graph.callees of ``service``."""
    return call(data, "analytics.graph", "callees", service, window=_window(start, end), env=env,
                settings=settings(data))


# -- user SQL and questions (nlq) -------------------------------------------------------------
@st.cache_data(ttl=TTL_SECONDS, show_spinner=False, max_entries=200)
def run_sql(data: str, sql: str) -> pl.DataFrame:
    """A user's query through nlq.guard (one read-only SELECT, LIMIT, time limit)."""
    run = function("nlq.guard", "run_guarded")
    shared = _guarded(data)
    with shared.lock:
        columns, rows = run(shared.conn, sql, settings=settings(data))
    return frame_of(columns, rows)


def frame_of(columns: list[str], rows: list[Any]) -> pl.DataFrame:
    """A polars frame of a query's columns and rows (values untouched)."""
    unique = _unique_names(columns)
    if not rows:
        return pl.DataFrame({c: [] for c in unique})
    return pl.DataFrame([list(r) for r in rows], schema=unique, orient="row", strict=False,
                        infer_schema_length=None)


def _unique_names(columns: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for col in columns:
        seen[col] = seen.get(col, 0) + 1
        names.append(col if seen[col] == 1 else f"{col}_{seen[col]}")
    return names


def schema_docs() -> dict[str, dict[str, str]]:
    """Tables and their column meanings (meshlens.schema), the rollups included."""
    _register_rollups()
    docs = dict(schema.COLUMN_DOCS)
    for name, rollup in catalog.ROLLUP_SCHEMAS.items():
        docs.setdefault(name, {f.name: str(f.type) for f in rollup})
    return docs


# -- graph ------------------------------------------------------------------------------------
def graph_nodes(graph: Any) -> list[dict[str, Any]]:
    """Nodes of analytics.graph.Graph as dicts: name, kind, requests, error_ratio, hover."""
    nodes = graph.nodes
    name = _first_present(nodes.columns, ("name", "node", "service"))
    out = []
    for row in nodes.iter_rows(named=True):
        out.append({
            "name": row[name], "kind": row.get("kind") or "service",
            "requests": row.get("requests") or 0, "error_ratio": row.get("error_ratio"),
            "hover": _hover(row[name], row),
        })
    return out


def graph_edge_frame(graph: Any) -> pl.DataFrame:
    """Edges of analytics.graph.Graph with the callee column named ``callee``."""
    edges = graph.edges
    if "callee" not in edges.columns and "service" in edges.columns:
        edges = edges.rename({"service": "callee"})
    return edges


def graph_edges(graph: Any) -> list[dict[str, Any]]:
    """Edges of analytics.graph.Graph as dicts: caller, callee, requests, rps, errors, p99."""
    return [
        {"caller": r["caller"], "callee": r["callee"], "requests": r.get("requests") or 0,
         "rps": r.get("rps"), "error_ratio": r.get("error_ratio"), "p99_ms": r.get("p99_ms"),
         "errors_5xx": r.get("errors_5xx")}
        for r in graph_edge_frame(graph).iter_rows(named=True)
    ]


def _hover(name: str, row: dict[str, Any]) -> str:
    parts = [f"<b>{name}</b>"]
    for key in ("kind", "requests", "rps", "errors_5xx", "error_ratio", "p99_ms"):
        if row.get(key) is not None:
            parts.append(f"{key}: {row[key]:,.4g}" if isinstance(row[key], float) else f"{key}: {row[key]}")
    return "<br>".join(parts)


def _first_present(columns: list[str], names: tuple[str, ...]) -> str:
    for name in names:
        if name in columns:
            return name
    raise Unavailable(f"analytics.graph nodes have none of the columns {names}")


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def recent_errors(data: str, service: str, start: datetime, end: datetime, *,
                  env: str | None = None) -> Any:
    """analytics.red.recent_errors: the latest 5xx rows of a service."""
    return call(data, "analytics.red", "recent_errors", service, window=_window(start, end), env=env)


# -- anomalies and canaries --------------------------------------------------------------------
INCIDENT_COLUMNS = ("start", "end", "peak", "services", "reason")
CANARY_COLUMNS = ("service", "env", "baseline", "canary", "verdict", "evidence", "decided_at", "weights")


def detect_incidents(conn: _Shared, config: Any, start: datetime, end: datetime, *,
                     env: str | None = None, service: str | None = None) -> list[Any]:
    """analytics.anomalies.detect over [start, end), as the CLI calls it (no Streamlit calls)."""
    return call_on(conn, "analytics.anomalies", "detect", window=_window(start, end), env=env,
                   service=service)


def incident_frame(incidents: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per incident (``Incident.as_dict()``): INCIDENT_COLUMNS, env and score."""
    return pl.DataFrame([_incident_row(i) for i in incidents], schema=_INCIDENT_SCHEMA)


_INCIDENT_SCHEMA: dict[str, Any] = {"start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC"),
                    "peak": pl.Datetime("us", "UTC"), "services": pl.String, "reason": pl.String,
                    "env": pl.String, "score": pl.Float64}


def _incident_row(incident: dict[str, Any]) -> dict[str, Any]:
    when = datetime.fromisoformat
    return {"start": when(incident["start"]), "end": when(incident["end"]), "peak": when(incident["peak"]),
            "services": ", ".join(incident["services"]), "reason": "; ".join(incident["reasons"]),
            "env": incident.get("env"), "score": incident.get("score")}


def judge_canaries(conn: _Shared, config: Any, start: datetime, end: datetime, *,
                   env: str | None = None, service: str | None = None) -> list[Any]:
    """analytics.canary.judge of every live canary (or one service's), as the CLI calls it."""
    return call_on(conn, "analytics.canary", "judge", service, window=_window(start, end), env=env)


def canary_frame(verdicts: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per canary verdict (CANARY_COLUMNS)."""
    rows = [{**{k: v.get(k) for k in CANARY_COLUMNS if k != "weights"},
             "weights": weights_text(v.get("next_weights"))}
            for v in verdicts]
    return pl.DataFrame(rows, schema={c: pl.String for c in CANARY_COLUMNS})


def weights_text(weights: dict[str, int] | None) -> str:
    """{"v1": 90, "v2": 10} -> "v1: 90%, v2: 10%"."""
    return ", ".join(f"{k}: {w}%" for k, w in (weights or {}).items())


# -- security and cost -------------------------------------------------------------------------
class NoPolicy(Exception):
    """No allowed-caller policy file is configured."""


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def denied(data: str, start: datetime, end: datetime, *, env: str | None = None) -> Any:
    """analytics.security.denied."""
    return call(data, "analytics.security", "denied", window=_window(start, end), env=env)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def unauthenticated(data: str, start: datetime, end: datetime, *, env: str | None = None) -> Any:
    """analytics.security.unauthenticated."""
    return call(data, "analytics.security", "unauthenticated", window=_window(start, end), env=env)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def tls_versions(data: str, start: datetime, end: datetime, *, env: str | None = None) -> Any:
    """analytics.security.tls_versions."""
    return call(data, "analytics.security", "tls_versions", window=_window(start, end), env=env)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def principals(data: str, service: str | None, start: datetime, end: datetime, *,
               env: str | None = None) -> Any:
    """analytics.security.principals: which principals called ``service`` (every service: None)."""
    return call(data, "analytics.security", "principals", service, window=_window(start, end), env=env)


def policy_path(data: str) -> Path | None:
    """The policy file: setting ``policy``, else <data>/policy.toml when present."""
    configured = settings(data)["policy"]
    path = Path(configured) if configured else Path(data) / "policy.toml"
    return path if path.is_file() else None


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def policy_violations(data: str, start: datetime, end: datetime, *, env: str | None = None) -> Any:
    """analytics.security.policy_violations against the configured policy (rows of ``env``)."""
    path = policy_path(data)
    if path is None:
        raise NoPolicy(f"No allowed-caller policy: put one at {Path(data) / 'policy.toml'} "
                       "or set MESHLENS_POLICY.")
    policy = function("analytics.policy", "load_policy")(path)
    frame = call(data, "analytics.security", "policy_violations", policy, window=_window(start, end))
    return frame if env is None else frame.filter(pl.col("env") == env)


COST_TOTAL_COLUMN = "cost_total"


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def cost(data: str, start: datetime, end: datetime, *, env: str | None = None) -> tuple[Any, float | None]:
    """analytics.cost.estimate per service, and analytics.cost.total of it when that exists."""
    frame = call(data, "analytics.cost", "estimate", settings(data), window=_window(start, end), env=env)
    try:
        return frame, function("analytics.cost", "total")(frame)
    except Unavailable:
        return frame, None


def price_note(data: str) -> str:
    """Which price table the estimate used."""
    s = settings(data)
    return (f"Prices ({s['price_region']}): ${s['price_service_hour']}/service-hour, "
            f"${s['price_per_gb']}/GB, ${s['price_per_million_requests']}/million requests beyond "
            f"{s['free_requests_per_service_hour']:,} per service-hour. Override in settings.toml.")


# -- reports and questions ---------------------------------------------------------------------
@st.cache_data(ttl=SLOW_TTL_SECONDS, show_spinner=False, max_entries=20)
def report(data: str, start: datetime, end: datetime, *, charts: bool = False) -> Any:
    """analytics.report.build for the window (with the configured policy, if any)."""
    path = policy_path(data)
    policy = function("analytics.policy", "load_policy")(path) if path else None
    return call(data, "analytics.report", "build", window=_window(start, end), policy=policy, charts=charts)


def report_markdown(data: str, start: datetime, end: datetime) -> str:
    """analytics.report.render_md of the window's report (no charts)."""
    return function("analytics.report", "render_md")(report(data, start, end))


def report_html(data: str, start: datetime, end: datetime) -> str:
    """analytics.report.render_html of the window's report, charts embedded."""
    return function("analytics.report", "render_html")(report(data, start, end, charts=True))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False, max_entries=200)
def ask(data: str, question: str, *, now: datetime) -> dict[str, Any]:
    """nlq.ask.safe_ask: the answer object of DESIGN.md (explanation, sql, window, ...) plus a frame."""
    fn = function("nlq.ask", "safe_ask")
    config = settings(data)
    shared = _guarded(data)
    with shared.lock:
        answer = fn(shared.conn, question, now=now, backend=config["nlq_backend"], settings=config)
    result = answer.as_dict()
    result["frame"] = frame_of(result.get("columns") or [], result.get("rows") or [])
    return result
