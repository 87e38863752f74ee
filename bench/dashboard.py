"""Benchmark: how long every dashboard page takes to render at 10M requests, cold and warm.

Synthesizes one day of requests with the metrics benchmark's generator (bench.metrics:
a few hundred services, Zipf-skewed traffic, canaries), builds the rollups, then runs each page
of the dashboard in Streamlit's AppTest (the real app script, no browser) on the whole day,
**each page in a fresh Python process**:

- ``cold``: the page is the first one that process ever renders: no cached answer, no DuckDB
  connection yet, the sidebar's lists to compute too (a user opening a deep link right after
  the dashboard started). The libraries are imported before the clock starts (that is the
  server's start-up, paid once, not a page's);
- ``warm``: the same page again in the same process, within the cache time-to-live (coming
  back, changing a widget, auto-refresh).

For each run: ``script`` is the app script's own time (the "Rendered in" caption: from the
first line of the script to the page's last element, excluding the parallel fragments that
fill in beside it); ``wall`` is AppTest's whole run, fragments included (the Overview's
incidents and canaries, every Security section); ``cpu`` is the process's CPU time over the
same run (all threads), the honest figure when other work shares the machine; ``analytics``
is the sum of the cold run's uncached calls into analytics (fragments included). The slowest of
those calls are listed. AppTest's wall time also holds its own polling (tenths of a second).

Before the pages, the bench stores the default window's incidents and canary verdicts
(analytics.findings.refresh, what ``meshlens ingest`` runs after the rollups; its wall and CPU
time are reported), so ``placeholders`` is 0 when the pages read the store. The children take the
code version the store was written with (``--code``): other engineers editing analytics while
the bench runs would otherwise make the entries stale between pages. ``--no-store`` skips the store (the pages compute in the background, as before it existed).

Baseline in the same run: the calls that used to scan raw rows (security, cost, principals,
the newest request time) timed from the identity rollup and from raw rows, in one process
(``raw=True`` is the old path), wall and CPU.

    python -m bench.dashboard [--rows 10000000] [--keep DIR] [--pages Overview,Service] [--server-warm]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from analytics import findings, rollup
from bench.metrics import DAY, synthesize
from meshlens.lake import Lake
from meshlens.timewin import Window

RESULTS = Path(__file__).resolve().parent / "results" / "dashboard.md"
APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
TARGET_MS = 1000


def build_lake(root: Path, rows: int) -> Lake:
    """A lake of ``rows`` synthetic requests with rollups (reused when already built)."""
    lake = Lake(root / f"lake-{rows}")
    if not lake.has_files("requests"):
        synthesize(lake, rows=rows)
        rollup.rebuild(lake)
    elif not lake.has_files("rollups/identity_1h"):
        rollup.rebuild(lake)  # a lake built before the identity rollup existed
    return lake


# -- one page in a fresh process (the child) ---------------------------------------------------
def _preload() -> float:
    """Import what the app imports (server start-up, not a page's time); returns ms."""
    started = time.perf_counter()
    import plotly.graph_objects  # noqa: F401
    from streamlit.testing.v1 import AppTest  # noqa: F401

    import analytics.graph  # noqa: F401
    import analytics.security  # noqa: F401
    import dashboard.charts  # noqa: F401
    import dashboard.data  # noqa: F401
    import pandas  # noqa: F401
    from streamlit.components.v2.component_manager import BidiComponentManager

    # AppTest scans every installed package for Streamlit components on each new AppTest (seconds
    # on a loaded machine); a server does it once at start-up, so the bench does it once too.
    _COMPONENTS.append(BidiComponentManager())
    _COMPONENTS[0].discover_and_register_components(start_file_watching=False)
    return (time.perf_counter() - started) * 1000


_COMPONENTS: list[Any] = []


def run_page(page: str, *, params: dict[str, str], wait_ready: bool = True) -> dict[str, Any]:
    """Script ms, wall ms, CPU ms and exceptions of one AppTest run of ``page``.

    The slow analyses (incidents, canaries) run in the background (dashboard.jobs): the first
    run shows placeholders. With ``wait_ready`` the page is then rerun every 0.2 s (as the
    placeholder's fragment does in a browser) until no placeholder is left: ``ready`` is the
    time from the first run's start until the results are shown (nan when there was nothing
    to wait for), ``ready_cpu`` the process CPU over the same span.
    """
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=1800)
    at.query_params.update({"page": page, **params})
    if _COMPONENTS:
        at._bidi_component_manager = _COMPONENTS[0]
    started, cpu0 = time.perf_counter(), time.process_time()
    at.run()
    wall, cpu = (time.perf_counter() - started) * 1000, (time.process_time() - cpu0) * 1000
    script = next((float(m.group(1)) for c in at.caption
                   if (m := re.match(r"Rendered in (\d+) ms", c.value))), float("nan"))
    waiting = _pending(at)
    ready = ready_cpu = float("nan")
    while wait_ready and _pending(at):
        time.sleep(0.2)
        at.run()
    if waiting and wait_ready:
        ready, ready_cpu = (time.perf_counter() - started) * 1000, (time.process_time() - cpu0) * 1000
    return {"script": script, "wall": wall, "cpu": cpu, "errors": [e.message for e in at.exception] + [e.value for e in at.error],
            "placeholders": len(waiting), "ready": ready, "ready_cpu": ready_cpu}


def _pending(at: Any) -> list[str]:
    """Placeholders of background analyses still running (dashboard.jobs.waiting_text)."""
    return [i.value for i in at.info if "\u2026 started" in i.value]


def child(page: str, *, service: str, server_warm: bool = False) -> dict[str, Any]:
    """Cold then warm run of one page in this (fresh) process.

    ``server_warm``: first visit another page (SQL: the DuckDB connection, the sidebar's lists)
    and draw one figure of each Plotly trace type the pages use (Plotly loads its validators on
    first use), as a server that has served anyone before; then the page's own first visit.
    """
    from dashboard import data

    imports = _preload()
    params = {"range": "custom", "since": DAY.isoformat(), "until": (DAY + timedelta(days=1)).isoformat(),
              "service": service}
    if server_warm:
        _warm_server(params)
    data.TIMINGS.clear()
    cold = run_page(page, params=params)
    cold["analytics"] = sum(t for _, t in data.TIMINGS) * 1000
    slowest = sorted(data.TIMINGS, key=lambda t: t[1], reverse=True)[:3]
    warm = run_page(page, params=params)
    return {"page": page, "imports_ms": imports, "cold": cold, "warm": warm,
            "slowest": ", ".join(f"{n.split('.', 1)[1]} {t * 1000:.0f}" for n, t in slowest) or "-"}


def _warm_server(params: dict[str, str]) -> None:
    import plotly.graph_objects as go

    run_page("SQL", params=params)
    for trace in (go.Scatter(x=[1], y=[1]), go.Bar(x=[1], y=["a"], orientation="h")):
        go.Figure([trace]).to_json()


def measure(pages: list[str], *, lake: Lake, service: str, server_warm: bool = False,
            store: bool = True) -> list[dict[str, Any]]:
    """Every page, each in its own fresh process."""
    rows = []
    env = {**os.environ, "MESHLENS_DATA": str(lake.root)}
    for page in pages:
        if not store:
            shutil.rmtree(findings.store_dir(lake), ignore_errors=True)
        extra = ["--server-warm"] if server_warm else []
        extra += ["--code", findings.code_version()]
        out = subprocess.run([sys.executable, "-m", "bench.dashboard", "--child", page, "--service", service, *extra],
                             env=env, capture_output=True, text=True, check=False,
                             cwd=Path(__file__).resolve().parents[1])
        line = next((ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("{")), None)
        if line is None:
            raise RuntimeError(f"page {page} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(line))
        print(_row(rows[-1]), flush=True)
    return rows


def precompute(lake: Lake) -> dict[str, Any]:
    """Store the default window's incidents and verdicts from scratch, as ingest does: wall, CPU."""
    shutil.rmtree(findings.store_dir(lake), ignore_errors=True)
    started, cpu = time.perf_counter(), time.process_time()
    keys = findings.refresh(lake)
    out = {"wall_ms": (time.perf_counter() - started) * 1000, "cpu_ms": (time.process_time() - cpu) * 1000,
           "window": f"{keys[0].start:%Y-%m-%d %H:%M} to {keys[0].end:%Y-%m-%d %H:%M}" if keys else "-",
           "bytes": sum(p.stat().st_size for p in findings.store_dir(lake).glob("*.json"))}
    print(f"stored the default window's findings in {out['wall_ms']:.0f} ms ({out['cpu_ms']:.0f} ms CPU)", flush=True)
    return out


# -- a real server and a real browser --------------------------------------------------------
PINNED_SERVE = ("import os; from analytics import findings; code = os.environ['BENCH_FINDINGS_CODE']; "
                "findings.code_version = lambda: code; from dashboard.serve import main; main()")
"""dashboard.serve with analytics.findings.code_version pinned to the bench's (see the docstring)."""


def real_first_visit(lake: Lake, *, page: str = "Overview", after_warm: bool = True) -> dict[str, Any]:
    """A brand-new `meshlens dashboard` (real server), its first page in headless Chromium.

    ``after_warm``: open the page once the server says it warmed up (a server started before
    anyone looks); else as soon as it answers its health check (the worst case). Returns the
    page's own "Rendered in" ms, the browser's wall ms to that caption, and the server's ages.
    """
    import socket
    import urllib.request

    from meshlens.cli.dashboard_cmds import streamlit_command
    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = Path(tempfile.mkstemp(prefix="meshlens-dashboard-", suffix=".log")[1])
    started = time.perf_counter()
    cmd = streamlit_command(lake.root, host="127.0.0.1", port=port)
    at = cmd.index("-m")
    cmd[at:at + 2] = ["-c", PINNED_SERVE]  # `python -m dashboard.serve`, with the store's code version
    env = {**os.environ, "MESHLENS_DATA": str(lake.root), "BENCH_FINDINGS_CODE": findings.code_version()}
    with open(log, "wb") as out:
        server = subprocess.Popen(["nice", *cmd], stdout=out, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200)
        healthy = time.perf_counter() - started
        if after_warm:
            _wait(lambda: "warmed up" in log.read_text(errors="replace"))
        visited = time.perf_counter() - started
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            tab = browser.new_page()
            opened = time.perf_counter()
            tab.goto(f"{url}/?page={page}")
            tab.get_by_text("Rendered in").first.wait_for(timeout=600_000)
            wall = (time.perf_counter() - opened) * 1000
            caption = tab.get_by_text("Rendered in").first.inner_text()
            pending = "\u2026 started" in tab.inner_text("body")
            browser.close()
    finally:
        _stop(server)
    found = re.search(r"Rendered in (\d+) ms", caption)
    rendered = float(found.group(1)) if found else float("nan")
    warm_line = next((ln for ln in log.read_text(errors="replace").splitlines() if "warmed up" in ln), "")
    log.unlink(missing_ok=True)
    return {"page": page, "after_warm": after_warm, "rendered_ms": rendered, "browser_ms": wall,
            "healthy_s": healthy, "visited_s": visited, "pending": pending, "warm": warm_line.split(": ")[-1]}


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group; SIGKILL it when a background analysis holds it up."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=20)


def _wait(ready: Callable[[], bool], *, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the dashboard server did not get ready")


# -- the same-run baseline: identity rollup vs raw rows ----------------------------------------
def baseline(lake: Lake) -> list[dict[str, Any]]:
    """The formerly raw-row calls, from the identity rollup and from raw rows, in one process."""
    from analytics import cost, rollup_identity, security
    from analytics.policy import parse_policy
    from meshlens import catalog
    from meshlens.settings import Settings

    conn = catalog.connect(lake)
    conn.execute("SET enable_progress_bar = false")
    window = Window(DAY, DAY + timedelta(days=1))
    policy = parse_policy('[[allow]]\nservice = "Svc000"\nenv = "prod"\ncallers = ["Svc001", "Svc002"]\n')
    calls: dict[str, Callable[[bool], Any]] = {
        "security.denied": lambda raw: security.denied(conn, window=window, raw=raw),
        "security.unauthenticated": lambda raw: security.unauthenticated(conn, window=window, raw=raw),
        "security.tls_versions": lambda raw: security.tls_versions(conn, window=window, raw=raw),
        "security.policy_violations": lambda raw: security.policy_violations(conn, policy, window=window, raw=raw),
        "security.principals(Svc000)": lambda raw: security.principals(conn, "Svc000", window=window, raw=raw),
        "cost.estimate": lambda raw: cost.estimate(conn, Settings(), window=window, raw=raw),
    }
    calls["nlq: which principals called Svc000 (SQL)"] = _nlq_principals(conn, window)
    rows = [_versus(name, fn) for name, fn in calls.items()]
    rows.append(_versus("latest_ts", lambda raw: conn.execute("SELECT max(ts) FROM requests").fetchall()
                        if raw else rollup_identity.latest_ts(conn)))
    return rows


def _nlq_principals(conn: Any, window: Window) -> Callable[[bool], Any]:
    """The SQL nlq runs for "which principals called Svc000": over the identity rollup, or raw rows."""
    from nlq import offline, sqlgen

    where = ["service = 'Svc000'"]
    rolled = offline._principals_from_rollup(window, where)
    raw = sqlgen.raw_group_sql(window=window, where=where, order="requests DESC, caller_principal",
                               select=["caller_principal", "caller", "count(*) AS requests", "min(ts) AS first_seen",
                                       "max(ts) AS last_seen"], group=["caller_principal", "caller"])
    return lambda use_raw: conn.execute(raw if use_raw else rolled).fetchall()


def _versus(name: str, fn: Callable[[bool], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"call": name}
    for label, raw in (("rollup", False), ("raw", True)):
        fn(raw)  # the first call of a query pays DuckDB's file metadata reads
        started, cpu = time.perf_counter(), time.process_time()
        fn(raw)
        out[f"{label}_ms"] = (time.perf_counter() - started) * 1000
        out[f"{label}_cpu_ms"] = (time.process_time() - cpu) * 1000
    print(_base_row(out), flush=True)
    return out


# -- output ------------------------------------------------------------------------------------
def _row(r: dict[str, Any]) -> str:
    c, w = r["cold"], r["warm"]
    met = "/".join("yes" if c[k] < TARGET_MS else "no" for k in ("script", "wall"))
    errors = "; ".join(c["errors"] + w["errors"])[:80] or "none"
    ready = "-" if not c.get("placeholders") else f"{c['ready']:.0f} ({c['ready_cpu']:.0f})"
    return (f"| {r['page']} | {c['script']:.0f} | {c['wall']:.0f} | {c['cpu']:.0f} | {c.get('placeholders', 0)} | "
            f"{ready} | {c['analytics']:.0f} | {w['script']:.0f} | "
            f"{w['wall']:.0f} | {w['cpu']:.0f} | {met} | {r['slowest']} | {errors} |")


def _base_row(r: dict[str, Any]) -> str:
    return (f"| {r['call']} | {r['rollup_ms']:.0f} | {r['rollup_cpu_ms']:.0f} | {r['raw_ms']:.0f} | "
            f"{r['raw_cpu_ms']:.0f} | {r['raw_cpu_ms'] / max(r['rollup_cpu_ms'], 1e-3):.0f}x |")


def to_markdown(rows: list[dict[str, Any]], base: list[dict[str, Any]], *, requests: int, load: str,
                server_warm: bool = False, stored: dict[str, Any] | None = None) -> str:
    """The results tables."""
    cold = ("cold = the page's first visit after another page (connection, sidebar, Plotly warm)"
            if server_warm else "cold = the first page the process renders")
    head = (f"# Dashboard page render times, {requests:,} requests (one day, rollups built)\n\n"
            f"Each page in a fresh process; {cold}; load average during the run: {load}.\n\n"
            "Render = the first run of the page (what the user sees at once: placeholders for the slow "
            "analyses); slow sections ready = from that run's start until the incidents/canaries replace "
            "their placeholders (process CPU in brackets; the analyses run in the background executor).\n\n"
            "| page | cold script ms | cold wall ms | cold CPU ms | placeholders | slow sections ready ms (CPU) | "
            "cold analytics ms | warm script ms | "
            "warm wall ms | warm CPU ms | cold < 1 s (script/wall) | slowest uncached calls, cold (ms) | errors |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|\n")
    table = head + "\n".join(_row(r) for r in rows) + "\n"
    if stored:
        table += (f"\nFindings store: the default window ({stored['window']}) stored in {stored['wall_ms']:,.0f} ms "
                  f"wall, {stored['cpu_ms']:,.0f} ms CPU (analytics.findings.refresh, run by `meshlens ingest`); "
                  f"{stored['bytes']:,} bytes.\n")
    else:
        table += "\nNo findings store: incidents and verdicts computed in the background.\n"
    if base:
        table += ("\n## Same run: identity rollup vs raw rows (the old path)\n\n"
                  "| call | rollup ms | rollup CPU ms | raw ms | raw CPU ms | CPU ratio |\n"
                  "|---|---:|---:|---:|---:|---:|\n" + "\n".join(_base_row(r) for r in base) + "\n")
    return table


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write bench/results/dashboard.md."""
    from dashboard.state import PAGES

    parser = argparse.ArgumentParser(description="dashboard page render times")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--keep", type=Path, default=None, help="build the lake here and keep it")
    parser.add_argument("--pages", default=",".join(PAGES))
    parser.add_argument("--service", default="Svc000", help="service for the Service and Canary pages")
    parser.add_argument("--no-baseline", action="store_true", help="skip the rollup vs raw table")
    parser.add_argument("--server-warm", action="store_true",
                        help="cold = a page's first visit in a server that served another page before")
    parser.add_argument("--no-store", action="store_true", help="no findings store: background jobs only")
    parser.add_argument("--code", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--real-server", action="store_true",
                        help="only: a brand-new real server's first page in headless Chromium")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.code:
            findings.code_version = lambda: args.code  # type: ignore[assignment] # see the docstring
        print(json.dumps(child(args.child, service=args.service, server_warm=args.server_warm)))
        return
    if args.real_server:
        _real_server_main(args)
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="meshlens-bench-dashboard-"))
    try:
        lake = build_lake(root, args.rows)
        loads = [_load()]
        stored = None if args.no_store else precompute(lake)
        rows = measure(args.pages.split(","), lake=lake, service=args.service, server_warm=args.server_warm,
                       store=not args.no_store)
        base = [] if args.no_baseline else baseline(lake)
        loads.append(_load())
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    text = to_markdown(rows, base, requests=args.rows, load=" then ".join(loads), server_warm=args.server_warm,
                       stored=stored)
    out = RESULTS.with_name("dashboard-server-warm.md") if args.server_warm else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


def _real_server_main(args: argparse.Namespace) -> None:
    """Each page's first visit on a brand-new real server, right at start and after its warm-up."""
    lake = build_lake(args.keep or Path(tempfile.mkdtemp(prefix="meshlens-bench-dashboard-")), args.rows)
    findings.refresh(lake)
    lines = ["| page | opened | server healthy s | opened at s | warm-up | Rendered in ms | browser ms | "
             "placeholders | load |", "|---|---|---:|---:|---|---:|---:|---|---|"]
    for page in args.pages.split(","):
        for after_warm in (True, False):
            r = real_first_visit(lake, page=page, after_warm=after_warm)
            lines.append(f"| {page} | {'after warm-up' if after_warm else 'at once'} | {r['healthy_s']:.1f} | "
                         f"{r['visited_s']:.1f} | {r['warm'] or '-'} | {r['rendered_ms']:.0f} | {r['browser_ms']:.0f} | "
                         f"{'yes' if r['pending'] else 'no'} | {_load()} |")
            print(lines[-1], flush=True)
    text = "# A brand-new real dashboard server, first page in headless Chromium\n\n" + "\n".join(lines) + "\n"
    out = RESULTS.with_name("dashboard-real-server.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
