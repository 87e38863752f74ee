"""The slow analyses (anomaly detection, the canary judge) never hold a page up.

Their answers are first looked up in the findings store (analytics.findings), which the CLI
fills when data lands (for the window the dashboard opens on) and these jobs fill for any other
window: a stored answer is shown at once. Otherwise they run in the background, in one executor
per server (``st.cache_resource``): a job is keyed by what it computes, the window, env, service
and the lake's fingerprint (``data.fingerprint``), so every session asking for the same answer
shares one run, and new data starts a new one. A page asks ``job(...)``: done, it gets the result
(the same analytics call as the CLI, through ``dashboard.data``); still running, it shows a
placeholder that refreshes itself and reruns the page once the result is there (or once another
process, e.g. ``meshlens ingest``, stored it). ``prewarm`` starts, once per server, what a first
visitor needs: the catalog connection, one Plotly figure, and the default window's incidents and
canaries.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import streamlit as st

from analytics import findings
from dashboard import data, state
from meshlens.lake import Lake, now_utc
from meshlens.timewin import Window

WORKERS = 2
NICE = 10
POLL_SECONDS = 1.0
KEEP_JOBS = 64
WHAT = {
    "incidents": "Finding incidents in {span} of traffic",
    "canaries": "Judging canaries over {span} of traffic",
}


@dataclass
class Job:
    """One background analysis: its future and when it started (monotonic seconds)."""

    key: tuple[Any, ...]
    future: Future[Any]
    started: float = field(default_factory=time.monotonic)
    stored: bool = False  # the answer came from the findings store

    def done(self) -> bool:
        """True once the result (or an error) is there."""
        return self.future.done()

    def result(self) -> Any:
        """The analysis' answer; raises the analysis' error."""
        return self.future.result()


@dataclass
class Runner:
    """The server's executor and its jobs."""

    executor: ThreadPoolExecutor
    jobs: dict[tuple[Any, ...], Job] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    conns: dict[tuple[str, Any], Any] = field(default_factory=dict)

    def submit(self, key: tuple[Any, ...], config: Any, start: datetime, end: datetime, *,
               env: str | None, service: str | None) -> Job:
        """Start the job of ``key`` (call with ``lock`` held)."""
        kind, lake, fingerprint = key[0], key[1], key[-1]
        future = self.executor.submit(self._compute, kind, lake, fingerprint, config, start, end,
                                      env=env, service=service)
        self.jobs[key] = Job(key, future)
        return self.jobs[key]

    def _compute(self, kind: str, lake: str, fingerprint: Any, config: Any, start: datetime,
                 end: datetime, **kwargs: Any) -> Any:
        entry = findings.key(Lake(lake), kind, Window(start, end), **kwargs)  # before reading data
        answer = COMPUTE[kind](self.connection(lake, fingerprint), config, start, end, **kwargs)
        _store(lake, entry, answer)
        return SHAPE[kind]([a.as_dict() for a in answer])

    def connection(self, lake: str, fingerprint: Any) -> Any:
        """The background connection of this lake version, opened in a (niced) worker thread."""
        with self.lock:
            conn = self.conns.get((lake, fingerprint))
        if conn is not None:
            return conn
        opened = data.open_connection(lake)  # outside the lock: pages submitting never wait for it
        with self.lock:
            for old in [k for k in self.conns if k[0] == lake and k[1] != fingerprint]:
                del self.conns[old]  # running jobs keep theirs alive until they finish
            return self.conns.setdefault((lake, fingerprint), opened)


def _lower_priority() -> None:
    """Worker threads run at a lower CPU priority, so pages (and DuckDB threads they start) win."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except (AttributeError, OSError):
        pass


@st.cache_resource(show_spinner=False)
def runner() -> Runner:
    """The executor every session shares (1-2 workers: the analyses are CPU-bound)."""
    return Runner(ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="meshlens-job",
                                     initializer=_lower_priority))


COMPUTE: dict[str, Callable[..., Any]] = {
    "incidents": data.detect_incidents,
    "canaries": data.judge_canaries,
}
"""The analyses: the same calls as the CLI, answering lists of Incident / CanaryVerdict."""
SHAPE: dict[str, Callable[[list[dict[str, Any]]], Any]] = {
    "incidents": data.incident_frame,
    "canaries": list,
}
"""What the pages get from the answers' ``as_dict()``: a frame of incidents, verdicts as dicts."""
log = logging.getLogger("meshlens.dashboard")


def _store(lake: str, entry: findings.Key, answer: list[Any]) -> None:
    """Keep a computed answer in the findings store (best effort: a read-only lake still works)."""
    try:
        findings.save(Lake(lake), entry, answer)
    except Exception as exc:  # noqa: BLE001 - the page has its answer either way
        log.warning("could not store %s: %s", entry.kind, exc)


def job(kind: str, lake: str, start: datetime, end: datetime, *, env: str | None = None,
        service: str | None = None) -> Job:
    """The stored, running or finished job computing ``kind`` for these arguments (started if new)."""
    key = (kind, lake, start, end, env, service, data.fingerprint(lake))
    run = runner()
    with run.lock:
        found = run.jobs.get(key)
    if found is not None and (found.stored or (found.done() and not _failed_unavailable(found))):
        return found
    stored = stored_job(key)  # not there yet, or running: maybe another process stored it since
    with run.lock:
        if stored is not None:
            run.jobs[key] = stored
        elif key not in run.jobs or _failed_unavailable(run.jobs[key]):
            run.submit(key, data.settings(lake), start, end, env=env, service=service)
        _forget_old(run, keep=key)
        return run.jobs[key]


def stored_job(key: tuple[Any, ...]) -> Job | None:
    """A finished job holding the findings store's answer for ``key``, None when not stored."""
    kind, lake, start, end, env, service = key[:6]
    try:
        entry = findings.key(Lake(lake), kind, Window(start, end), env=env, service=service)
        answer = findings.load_dicts(Lake(lake), entry)
    except Exception as exc:  # noqa: BLE001 - an unreadable store means computing it again
        log.warning("findings store unreadable: %s", exc)
        return None
    if answer is None:
        return None
    future: Future[Any] = Future()
    future.set_result(SHAPE[kind](answer))
    return Job(key, future, stored=True)


def _failed_unavailable(found: Job) -> bool:
    """A job that failed because a feature was missing is retried (the build may have changed)."""
    return found.done() and isinstance(found.future.exception(), data.Unavailable)


def _forget_old(run: Runner, *, keep: tuple[Any, ...]) -> None:
    """Drop finished jobs of an older lake fingerprint, and the oldest beyond KEEP_JOBS."""
    for key in [k for k, j in run.jobs.items() if j.done() and k[1] == keep[1] and k[-1] != keep[-1]]:
        del run.jobs[key]
    while len(run.jobs) > KEEP_JOBS:
        oldest = min((j for j in run.jobs.values() if j.done()), key=lambda j: j.started, default=None)
        if oldest is None:
            break
        del run.jobs[oldest.key]


def span_text(start: datetime, end: datetime) -> str:
    """A window's length in words: '15 min', '24 h', '7 d'."""
    seconds = (end - start).total_seconds()
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h" if seconds < 2 * 86400 else f"{seconds / 86400:.0f} d"


def waiting_text(kind: str, found: Job, *, start: datetime, end: datetime) -> str:
    """'Finding incidents in 24 h of traffic… started 4 s ago'."""
    elapsed = time.monotonic() - found.started
    return f"{WHAT[kind].format(span=span_text(start, end))}… started {elapsed:.0f} s ago"


def error_text(what: str, exc: BaseException) -> str:
    """One line for a failed analysis: its message's first line, never a traceback."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{what} failed: {message}"


PENDING = object()
"""What ``result_or_placeholder`` returns while the job runs, or when it failed."""


def result_or_placeholder(kind: str, ctx: Any, *, key: str, what: str,
                          service: str | None = None) -> Any:
    """The job's answer for the page's window and env; else a placeholder or a one-line error."""
    found = job(kind, ctx.data, ctx.start, ctx.end, env=ctx.env, service=service)
    if not show_when_ready(kind, found, start=ctx.start, end=ctx.end, key=key):
        return PENDING
    exc = found.future.exception()
    if exc is None:
        return found.result()
    if isinstance(exc, data.Unavailable):
        st.caption(f"{what} not available: {exc}.")
    else:
        st.error(error_text(what, exc), icon=":material/error:")
    return PENDING


def show_when_ready(kind: str, found: Job, *, start: datetime, end: datetime, key: str) -> bool:
    """True when the result is there; else draw a placeholder that reruns the page once it is."""
    if found.done():
        return True
    placeholder_fragment(kind, found, start=start, end=end, key=key)
    return False


def placeholder_fragment(kind: str, found: Job, *, start: datetime, end: datetime, key: str) -> None:
    """A self-refreshing note in place of the slow section (a fragment polling the job)."""

    @st.fragment(run_every=POLL_SECONDS)
    def _poll() -> None:
        if found.done() or stored_job(found.key) is not None:  # or another process stored it
            st.rerun(scope="app")
        st.info(waiting_text(kind, found, start=start, end=end), icon=":material/hourglass_top:")

    with st.container(key=f"pending_{key}"):
        _poll()


# -- pre-warming --------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def prewarm(lake: str) -> threading.Thread:
    """Once per server and lake: warm the catalog, Plotly and the default window's analyses."""
    shared, config, run = data.shared(lake), data.settings(lake), runner()
    thread = threading.Thread(target=_prewarm, args=(lake, shared, config, run), daemon=True,
                              name="meshlens-prewarm")
    thread.start()
    return thread


def _prewarm(lake: str, shared: Any, config: Any, run: Runner) -> None:
    """The warming thread: no Streamlit calls here (it runs outside any script run)."""
    _plotly_figure()
    try:
        window = default_window(shared)
        for kind in COMPUTE:
            key = (kind, lake, window.start, window.end, None, None, data.fingerprint(lake))
            stored = None if key in run.jobs else stored_job(key)
            with run.lock:
                if stored is not None:
                    run.jobs.setdefault(key, stored)
                elif key not in run.jobs:
                    run.submit(key, config, window.start, window.end, env=None, service=None)
    except Exception:  # noqa: BLE001 - warming is best effort; the pages report real errors
        return


def default_window(shared: Any) -> Window:
    """The window a first visit shows (analytics.findings.default_window, as the sidebar's)."""
    latest = data.call_on(shared, "analytics.rollup_identity", "latest_ts")
    return findings.default_window(latest, now=now_utc())


def _plotly_figure() -> None:
    """Plotly loads its validators on the first figure (~0.3 s): pay it before anyone waits."""
    import plotly.graph_objects as go

    for trace in (go.Scatter(x=[1], y=[1], mode="lines"), go.Bar(x=[1], y=["a"], orientation="h")):
        go.Figure([trace]).update_layout(title="warm").to_json()
