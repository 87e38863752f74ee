"""The slow analyses (anomaly detection, the canary judge) run beside the pages, never before them.

One executor per server (``st.cache_resource``): a job is keyed by what it computes, the
window, env, service and the lake's fingerprint (``data.fingerprint``), so every session asking
for the same answer shares one run, and new data starts a new one. A page asks ``job(...)``:
done, it gets the result (the same analytics call as the CLI, through ``dashboard.data``);
still running, it shows a placeholder that refreshes itself and reruns the page once the result
is there. ``prewarm`` starts, once per server, what a first visitor needs: the catalog
connection, one Plotly figure, and the default window's incidents and canaries.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import streamlit as st

from dashboard import data, state
from meshlens.lake import now_utc
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
        return COMPUTE[kind](self.connection(lake, fingerprint), config, start, end, **kwargs)

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


def job(kind: str, lake: str, start: datetime, end: datetime, *, env: str | None = None,
        service: str | None = None) -> Job:
    """The running or finished job computing ``kind`` for these arguments (started if new)."""
    key = (kind, lake, start, end, env, service, data.fingerprint(lake))
    run = runner()
    with run.lock:
        found = run.jobs.get(key)
        if found is not None and not _failed_unavailable(found):
            return found
        found = run.submit(key, data.settings(lake), start, end, env=env, service=service)
        _forget_old(run, keep=key)
    return found


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
        if found.done():
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
            with run.lock:
                if key not in run.jobs:
                    run.submit(key, config, window.start, window.end, env=None, service=None)
    except Exception:  # noqa: BLE001 - warming is best effort; the pages report real errors
        return


def default_window(shared: Any) -> Window:
    """The window a first visit shows: the default range ending at the anchor (as the sidebar)."""
    latest = data.call_on(shared, "analytics.rollup_identity", "latest_ts")
    anchor = state.anchor_from(latest, now=now_utc())
    return state.window_for(state.DEFAULT_RANGE, anchor=anchor)


def _plotly_figure() -> None:
    """Plotly loads its validators on the first figure (~0.3 s): pay it before anyone waits."""
    import plotly.graph_objects as go

    for trace in (go.Scatter(x=[1], y=[1], mode="lines"), go.Bar(x=[1], y=["a"], orientation="h")):
        go.Figure([trace]).update_layout(title="warm").to_json()
