"""Scheduled reports: what changed in a window, written to disk, then sent to a webhook.

A report holds the incidents with their reasons (analytics.anomalies), the canary verdicts
(analytics.canary), the services and edges with the worst errors and latency, edges that
appeared or vanished against the previous window of the same length, policy violations (when a
policy file is given), and PNG charts (matplotlib, Agg) embedded in the HTML as base64.

Delivery never loses a report: the report file is written (atomically) first; the webhook
message (Slack-compatible JSON ``{"text": ...}``) is queued as a file in
``<data>/reports/outbox/`` and the whole outbox is flushed with retries and exponential
back-off; a message that still fails stays queued and is retried on the next run.

Scheduling: ``run_schedule`` runs in-process every DURATION or on a cron expression (croniter)
until stopped. For cron itself::

    0 * * * * cd /srv/meshlens && .venv/bin/meshlens report --window 1h --format html --webhook "$SLACK_URL"
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from analytics import anomalies, canary
from meshlens import timewin
from meshlens.errors import ConfigError, MeshlensError
from meshlens.lake import Lake
from meshlens.timewin import Window, iso

Poster = Callable[[str, bytes, float], int]


@dataclass(frozen=True)
class ReportOptions:
    """What the `meshlens report` command asked for."""

    fmt: str = "html"
    out: str | None = None
    webhook: str | None = None
    policy: str | None = None
    since: str | None = None
    until: str | None = None
    window: str | None = None
    now: str | None = None
    retries: int = 4
    backoff_seconds: float = 0.5
    timeout_seconds: float = 10.0


@dataclass
class Report:
    """Everything a report shows (pure data; rendered by render_md / render_html)."""

    window: Window
    incidents: list[anomalies.Incident]
    verdicts: list[canary.CanaryVerdict]
    worst_services: pl.DataFrame
    worst_edges: pl.DataFrame
    new_edges: list[tuple[str, str]]
    vanished_edges: list[tuple[str, str]]
    violations: pl.DataFrame | None
    charts: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    """Where the report went and whether the webhook took it."""

    path: Path
    sent: bool
    pending: int


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------
def build(conn: duckdb.DuckDBPyConnection, *, window: Window, policy: Any = None, charts: bool = True) -> Report:
    """Collect every section of the report for ``window``."""
    report = Report(window=window, incidents=anomalies.detect(conn, window=window),
                    verdicts=canary.judge(conn, window=window),
                    worst_services=worst(conn, window=window, key=["service", "env"]),
                    worst_edges=worst(conn, window=window, key=["caller", "service", "env"]),
                    new_edges=[], vanished_edges=[], violations=None)
    report.new_edges, report.vanished_edges = edge_changes(conn, window=window)
    if policy is not None:
        report.violations = _violations(conn, policy, window=window)
    if charts:
        report.charts = make_charts(conn, report)
    return report


def worst(conn: duckdb.DuckDBPyConnection, *, window: Window, key: list[str], limit: int = 10) -> pl.DataFrame:
    """The ``limit`` series with the most 5xx (then the slowest p99) in the window."""
    cols = ", ".join(key)
    sql = f"""
        SELECT {cols}, count(*) AS requests, count(*) FILTER (WHERE status >= 500) AS errors_5xx,
               count(*) FILTER (WHERE status >= 500) / count(*) AS error_ratio,
               quantile_cont(duration_ms, 0.5) AS p50_ms, quantile_cont(duration_ms, 0.99) AS p99_ms
        FROM requests WHERE ts >= ? AND ts < ? GROUP BY ALL
        ORDER BY errors_5xx DESC, p99_ms DESC LIMIT {int(limit)}
    """
    return conn.sql(sql, params=[window.start, window.end]).pl()


def edge_changes(conn: duckdb.DuckDBPyConnection, *, window: Window) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Edges seen in the window but not the previous one of the same length, and the reverse."""
    before = Window(window.start - (window.end - window.start), window.start)
    now, then = _edge_set(conn, window), _edge_set(conn, before)
    if not then:  # no history: every edge would be "new", which says nothing
        return [], []
    return sorted(now - then), sorted(then - now)


def _edge_set(conn: duckdb.DuckDBPyConnection, window: Window) -> set[tuple[str, str]]:
    rows = conn.sql("SELECT DISTINCT coalesce(caller, 'unknown'), service FROM requests WHERE ts >= ? AND ts < ?",
                    params=[window.start, window.end]).fetchall()
    return {(str(a), str(b)) for a, b in rows}


def _violations(conn: duckdb.DuckDBPyConnection, policy: Any, *, window: Window) -> pl.DataFrame | None:
    try:
        from analytics import security
        from analytics.policy import load_policy
    except ImportError:
        return None
    loaded = load_policy(policy) if isinstance(policy, (str, Path)) else policy
    return security.policy_violations(conn, loaded, window=window)


# --------------------------------------------------------------------------------------
# Charts
# --------------------------------------------------------------------------------------
def make_charts(conn: duckdb.DuckDBPyConnection, report: Report) -> dict[str, bytes]:
    """PNG charts: traffic and 5xx of the incident services, 5xx ratio of every canary."""
    import matplotlib

    matplotlib.use("Agg")
    charts = {}
    services = list(dict.fromkeys(s for i in report.incidents for s in i.services[:1]))[:4]
    if not services:
        services = report.worst_services.get_column("service").head(3).to_list() if report.worst_services.height else []
    if services:
        charts["traffic.png"] = _traffic_chart(conn, report, services)
    for verdict in report.verdicts[:4]:
        charts[f"canary-{verdict.service}-{verdict.canary}.png"] = _canary_chart(conn, report.window, verdict)
    return charts


def _traffic_chart(conn: duckdb.DuckDBPyConnection, report: Report, services: list[str]) -> bytes:
    import matplotlib.pyplot as plt

    marks = ", ".join("?" for _ in services)
    frame = conn.sql(f"""
        SELECT service, time_bucket(INTERVAL 5 minute, ts) AS t, count(*) AS requests,
               count(*) FILTER (WHERE status >= 500) AS errors
        FROM requests WHERE ts >= ? AND ts < ? AND service IN ({marks}) GROUP BY ALL ORDER BY t
    """, params=[report.window.start, report.window.end, *services]).pl()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    for service in services:
        part = frame.filter(pl.col("service") == service)
        top.plot(part.get_column("t").to_list(), part.get_column("requests").to_list(), label=service)
        bottom.plot(part.get_column("t").to_list(), part.get_column("errors").to_list(), label=service)
    for incident in report.incidents:
        for axis in (top, bottom):
            axis.axvspan(incident.start, incident.end, color="red", alpha=0.15)
    top.set_ylabel("requests / 5 min")
    bottom.set_ylabel("5xx / 5 min")
    top.legend(fontsize=7)
    top.set_title("Traffic and 5xx (incidents shaded)")
    return _png(fig)


def _canary_chart(conn: duckdb.DuckDBPyConnection, window: Window, verdict: canary.CanaryVerdict) -> bytes:
    import matplotlib.pyplot as plt

    env_clause, params = ("AND env = ?", [verdict.env]) if verdict.env else ("", [])
    frame = conn.sql(f"""
        SELECT version, time_bucket(INTERVAL 30 minute, ts) AS t,
               count(*) FILTER (WHERE status >= 500) / count(*) AS ratio
        FROM requests WHERE ts >= ? AND ts < ? AND service = ? AND version IN (?, ?) {env_clause}
        GROUP BY ALL ORDER BY t
    """, params=[window.start, window.end, verdict.service, verdict.baseline, verdict.canary, *params]).pl()
    fig, axis = plt.subplots(figsize=(9, 3))
    for version in (verdict.baseline, verdict.canary):
        part = frame.filter(pl.col("version") == version)
        axis.plot(part.get_column("t").to_list(), (part.get_column("ratio") * 100).to_list(), marker=".", label=version)
    if verdict.decided_at:
        axis.axvline(verdict.decided_at, color="black", linestyle="--",  # type: ignore[arg-type]
                     label=f"{verdict.verdict} decided")
    axis.set_ylabel("5xx % / 30 min")
    axis.set_title(f"{verdict.service} canary {verdict.canary} vs {verdict.baseline}: {verdict.verdict}")
    axis.legend(fontsize=7)
    return _png(fig)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------
# Rendering (pure)
# --------------------------------------------------------------------------------------
def summary_lines(report: Report) -> list[str]:
    """The headline bullets: incidents, canaries, policy; shared by Markdown, HTML and the webhook."""
    lines = [f"{len(report.incidents)} incident(s), {len(report.verdicts)} canary verdict(s) in {report.window}"]
    lines += [f"Incident {i.summary}" for i in report.incidents[:10]]
    lines += [f"Canary {v.service} {v.canary} vs {v.baseline}: {v.verdict.upper()}: {v.evidence}" for v in report.verdicts]
    if report.violations is not None and report.violations.height:
        lines.append(f"{report.violations.height} policy violation(s), e.g. "
                     + "; ".join(f"{r['caller']} -> {r['service']} ({r['requests']})"
                                 for r in report.violations.head(3).iter_rows(named=True)))
    if report.new_edges:
        lines.append("New edges: " + ", ".join(f"{a} -> {b}" for a, b in report.new_edges[:10]))
    return lines


def render_md(report: Report) -> str:
    """The report as Markdown (charts referenced by file name, written beside it)."""
    parts = [f"# meshlens report {report.window}", "", *[f"- {line}" for line in summary_lines(report)], ""]
    parts += ["## Incidents", ""] + (_incident_md(report) or ["No incidents."]) + [""]
    parts += ["## Canaries", ""] + ([f"- **{v.service} {v.canary} vs {v.baseline} ({v.env})**: {v.verdict}; "
                                    f"{v.evidence}; traffic: {v.traffic.get('note')}; next weights "
                                    f"{v.next_weights}" for v in report.verdicts] or ["No live canaries."]) + [""]
    parts += ["## Worst services", "", _table_md(report.worst_services), "", "## Worst edges", "",
              _table_md(report.worst_edges), "", "## Edge changes vs the previous window", ""]
    parts += [f"- new: {a} -> {b}" for a, b in report.new_edges] + [f"- vanished: {a} -> {b}" for a, b in report.vanished_edges]
    parts += ["" if report.new_edges or report.vanished_edges else "No changes.", ""]
    if report.violations is not None:
        parts += ["## Policy violations", "", _table_md(report.violations) if report.violations.height else "None.", ""]
    parts += [f"![{name}]({name})" for name in report.charts]
    return "\n".join(parts) + "\n"


def _incident_md(report: Report) -> list[str]:
    return [f"- **{iso(i.start)} to {iso(i.end)}** (peak {iso(i.peak)}) {', '.join(i.services)}: "
            + "; ".join(i.reasons[:4]) for i in report.incidents]


def _table_md(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "None."
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([head, rule, *rows])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return iso(value)
    return "" if value is None else str(value)


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (charts embedded as base64 PNG)."""
    esc = html.escape
    body = [f"<h1>meshlens report {esc(str(report.window))}</h1>", "<ul>"]
    body += [f"<li>{esc(line)}</li>" for line in summary_lines(report)] + ["</ul>", "<h2>Incidents</h2>"]
    body += [f"<div class='incident'><b>{esc(iso(i.start))} to {esc(iso(i.end))}</b> {esc(', '.join(i.services))}"
             f"<ul>{''.join(f'<li>{esc(r)}</li>' for r in i.reasons[:6])}</ul></div>" for i in report.incidents] or ["<p>No incidents.</p>"]
    body += ["<h2>Canaries</h2>"] + [f"<p class='verdict {esc(v.verdict)}'><b>{esc(v.service)} {esc(v.canary)}: "
                                     f"{esc(v.verdict)}</b> {esc(v.evidence)}<br>traffic: {esc(str(v.traffic.get('note')))}; "
                                     f"next weights {esc(json.dumps(v.next_weights))}</p>" for v in report.verdicts]
    body += ["<h2>Worst services</h2>", _table_html(report.worst_services), "<h2>Worst edges</h2>",
             _table_html(report.worst_edges), "<h2>Edge changes</h2><ul>"]
    body += [f"<li>new: {esc(a)} &rarr; {esc(b)}</li>" for a, b in report.new_edges]
    body += [f"<li>vanished: {esc(a)} &rarr; {esc(b)}</li>" for a, b in report.vanished_edges] + ["</ul>"]
    if report.violations is not None:
        body += ["<h2>Policy violations</h2>", _table_html(report.violations)]
    body += ["<h2>Charts</h2>"] + [f"<img alt='{esc(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                                   for name, png in report.charts.items()]
    style = "body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}.rollback{color:#b00}"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>meshlens report</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def _table_html(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "<p>None.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in frame.iter_rows())
    return f"<table><tr>{head}</tr>{rows}</table>"


# --------------------------------------------------------------------------------------
# Writing and delivery
# --------------------------------------------------------------------------------------
def write_report(report: Report, path: Path, *, fmt: str) -> Path:
    """Write the report (and, for Markdown, its PNGs beside it) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "md":
        for name, png in report.charts.items():
            _atomic_write(path.parent / name, png)
        _atomic_write(path, render_md(report).encode("utf-8"))
    else:
        _atomic_write(path, render_html(report).encode("utf-8"))
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def webhook_body(report: Report, *, path: Path) -> dict[str, str]:
    """Slack-compatible message: the summary bullets and where the full report is."""
    return {"text": "\n".join([f"*meshlens report* {report.window}", *[f"• {line}" for line in summary_lines(report)],
                               f"Full report: {path}"])}


def enqueue(outbox: Path, url: str, body: dict[str, str]) -> Path:
    """Queue one webhook message on disk (sent by flush, kept until it succeeds)."""
    outbox.mkdir(parents=True, exist_ok=True)
    name = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.json"
    path = outbox / name
    _atomic_write(path, json.dumps({"url": url, "body": body, "attempts": 0}).encode("utf-8"))
    return path


def post_json(url: str, data: bytes, timeout: float) -> int:
    """POST JSON; the one network seam of reports. Returns the HTTP status (raises OSError when unreachable)."""
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (user-given URL)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def flush(outbox: Path, *, retries: int, backoff: float, timeout: float, poster: Poster = post_json,
          sleep: Callable[[float], None] = time.sleep) -> int:
    """Send every queued message, oldest first, with exponential back-off; returns how many remain."""
    if not outbox.is_dir():
        return 0
    remaining = 0
    for path in sorted(outbox.glob("*.json")):
        entry = json.loads(path.read_text(encoding="utf-8"))
        if _send(entry, retries=retries, backoff=backoff, timeout=timeout, poster=poster, sleep=sleep):
            path.unlink(missing_ok=True)
        else:
            entry["attempts"] = int(entry.get("attempts", 0)) + retries
            _atomic_write(path, json.dumps(entry).encode("utf-8"))
            remaining += 1
    return remaining


def _send(entry: dict[str, Any], *, retries: int, backoff: float, timeout: float, poster: Poster,
          sleep: Callable[[float], None]) -> bool:
    data = json.dumps(entry["body"]).encode("utf-8")
    for attempt in range(max(1, retries)):
        try:
            status = poster(entry["url"], data, timeout)
        except (OSError, ValueError):
            status = 0
        if 200 <= status < 300:
            return True
        if 400 <= status < 500 and status not in (408, 429):
            return False  # the hook refuses this message; retrying now will not help (kept queued)
        if attempt + 1 < retries:
            sleep(backoff * (2 ** attempt))
    return False


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------
def run_once(lake: Lake, options: ReportOptions, *, poster: Poster = post_json,
             sleep: Callable[[float], None] = time.sleep) -> RunResult:
    """Build, write, queue and send one report."""
    from meshlens.catalog import connect

    window = timewin.resolve(since=options.since, until=options.until, window=options.window, now=options.now)
    conn = connect(lake)
    report = build(conn, window=window, policy=_policy_path(lake, options.policy))
    path = Path(options.out) if options.out else lake.root / "reports" / f"report-{window.end:%Y%m%dT%H%MZ}.{options.fmt}"
    write_report(report, path, fmt=options.fmt)
    outbox = lake.root / "reports" / "outbox"
    if options.webhook:
        enqueue(outbox, options.webhook, webhook_body(report, path=path))
    pending = flush(outbox, retries=options.retries, backoff=options.backoff_seconds,
                    timeout=options.timeout_seconds, poster=poster, sleep=sleep)
    return RunResult(path=path, sent=bool(options.webhook) and pending == 0, pending=pending)


def _policy_path(lake: Lake, policy: str | None) -> Path | None:
    if policy:
        if not Path(policy).is_file():
            raise ConfigError(f"policy file {policy} does not exist")
        return Path(policy)
    default = lake.root / "policy.toml"
    return default if default.is_file() else None


def next_run(moment: datetime, *, every: str | None, cron: str | None) -> datetime:
    """When the schedule fires next after ``moment``."""
    if cron:
        from croniter import croniter

        if not croniter.is_valid(cron):
            raise ConfigError(f"cannot read cron expression {cron!r}; use e.g. \"0 * * * *\"")
        return croniter(cron, moment).get_next(datetime)
    if every:
        return moment + timewin.parse_duration(every)
    raise ConfigError("give --every DURATION or --cron EXPRESSION")


def run_schedule(lake: Lake, options: ReportOptions, *, every: str | None, cron: str | None,
                 echo: Callable[[str], None] = print, max_runs: int | None = None,
                 clock: Callable[[], datetime] = timewin.utcnow,
                 sleep: Callable[[float], None] = time.sleep) -> int:
    """Run reports on the schedule until stopped (Ctrl-C) or ``max_runs``; returns the runs done."""
    if every and timewin.parse_duration(every) < timedelta(seconds=1):
        raise ConfigError("--every must be at least 1s")
    runs = 0
    try:
        while max_runs is None or runs < max_runs:
            due = next_run(clock(), every=every, cron=cron)
            echo(f"next report at {iso(due)}")
            sleep(max(0.0, (due - clock()).total_seconds()))
            try:
                result = run_once(lake, options, sleep=sleep)
                echo(f"report written to {result.path}; pending webhook messages: {result.pending}")
            except MeshlensError as exc:  # a bad run must not stop the schedule
                echo(f"report failed: {exc}")
            runs += 1
    except KeyboardInterrupt:
        echo("stopped")
    return runs
