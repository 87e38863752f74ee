"""`meshlens anomalies`, `meshlens canary` and `meshlens report`.

    meshlens anomalies --window 24h --now 2026-11-11T00:00Z        incidents with reasons
    meshlens anomalies --series cpu.csv                           one exported metric series
    meshlens canary PaymentService --now 2026-11-10T12:00Z         judge every live canary
    meshlens report --window 24h --format html --out report.html --webhook URL [--every 1h]
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from meshlens.cli.common import (data_option, emit_table, json_option, load_settings, open_lake,
                                 resolve_window, window_options)
from meshlens import timewin
from meshlens.timewin import iso

INCIDENT_COLUMNS = ["start", "end", "peak", "env", "services", "edges", "reason", "score"]


def _connect(data: str | None) -> Any:
    from meshlens.catalog import connect

    return connect(open_lake(data))


def _resolve_service(conn: Any, name: str | None) -> str | None:
    """The canonical service name (did-you-mean on a typo), when analytics.services exists."""
    if not name:
        return None
    try:
        from analytics.services import resolve_service
    except ImportError:
        return name
    return resolve_service(conn, name)


@click.command("anomalies")
@data_option
@window_options
@click.option("--service", help="Only this service and the edges into it.")
@click.option("--env", help="Only this environment.")
@click.option("--series", "series_file", type=click.Path(dir_okay=False), help="Score a metric file instead: CSV timestamp,value or `aws cloudwatch get-metric-data` JSON.")
@json_option
def anomalies_cmd(data: str | None, since: str | None, until: str | None, window: str | None, now: str | None,
                  service: str | None, env: str | None, series_file: str | None, as_json: bool) -> None:
    """Unusual minutes, grouped into incidents, each with its reason in words and numbers.

    \b
    Examples:
      meshlens anomalies                               the last 24 h: every service and edge
      meshlens anomalies --service PaymentService --window 6h
      meshlens anomalies --series cpu.csv              a metric export: CSV timestamp,value
                                                       or `aws cloudwatch get-metric-data` JSON
    Each minute of each service and edge (rate, errors, latency, bytes, against its own recent and
    seasonal baseline) is scored by isolation forests fitted on the past only: what is flagged at
    10:31 is what would have been flagged live. A failing service and its callers are one incident.
    A --series file is scored by two forests and by the shape of its recent points; the reason says
    which. Without --now, on a lake whose data ended earlier, the window ends where the data does.
    """
    from analytics import anomalies

    if series_file:
        incidents = _series_incidents(series_file)
        scope: dict[str, Any] = {"series": series_file}
    else:
        conn = _connect(data)
        win = resolve_window(since, until, window, now or _end_of_data(conn, until))
        name = _resolve_service(conn, service)
        incidents = _stored_or(data, "incidents", win, env=env, service=name,
                               run=lambda: anomalies.detect(conn, window=win, service=name, env=env))
        scope = {"window": win.as_dict()}
    rows = [[iso(i.start), iso(i.end), iso(i.peak), i.env, ", ".join(i.services),
             ", ".join(f"{a} -> {b}" for a, b in i.edges), "; ".join(i.reasons[:3]), round(i.score, 4)]
            for i in incidents]
    notes = [] if incidents else ["no anomalies found"]
    emit_table(INCIDENT_COLUMNS, rows, as_json=as_json, title="Anomalies", notes=notes,
               extra={**scope, "incidents": [i.as_dict() for i in incidents]})


def _series_incidents(path: str) -> list[Any]:
    import polars as pl

    from analytics import anomalies
    from analytics.series import read_series, split_series

    incidents = []
    for name, frame in split_series(read_series(path)).items():
        incidents += anomalies.detect_series(frame.with_columns(series=pl.lit(name)))
    return incidents


CANARY_COLUMNS = ["service", "env", "baseline", "canary", "verdict", "decided_at", "since", "evidence",
                  "traffic", "next_weights"]


@click.command("canary")
@data_option
@window_options
@click.argument("service", required=False)
@click.option("--baseline", help="Baseline version (with --canary).")
@click.option("--canary", "canary_version", help="Canary version (with --baseline).")
@click.option("--env", help="Only this environment.")
@click.option("--expected-share", type=float, help="Canary traffic share it should get (0-1); default: the nearest standard weight.")
@json_option
def canary_cmd(data: str | None, since: str | None, until: str | None, window: str | None, now: str | None,
               service: str | None, baseline: str | None, canary_version: str | None, env: str | None,
               expected_share: float | None, as_json: bool) -> None:
    """Judge canaries: promote, continue, rollback or insufficient_data, with the evidence.

    \b
    Examples:
      meshlens canary                                  every service with two live versions
      meshlens canary PaymentService --baseline v1 --canary v2
      meshlens canary PaymentService --json            the per-route evidence as JSON
    The canary is compared with the baseline over the same minutes, on the 5xx ratio and latency,
    overall and per route, by a sequential test that stays valid however often you look: it rolls
    back only on evidence that holds against the ordinary drift between the two groups. The verdict
    says when it became decidable, whether the canary gets its share, and the next traffic weights.
    """
    from analytics import canary

    conn = _connect(data)
    win = resolve_window(since, until, window, now or _end_of_data(conn, until))
    name = _resolve_service(conn, service)

    def run() -> list[Any]:
        return canary.judge(conn, name, window=win, env=env, baseline=baseline, canary=canary_version,
                            expected_share=expected_share)

    pinned = baseline or canary_version or expected_share is not None
    verdicts = run() if pinned else _stored_or(data, "canaries", win, env=env, service=name, run=run)
    rows = [[v.service, v.env, v.baseline, v.canary, v.verdict, v.decided_at, v.since, v.evidence,
             v.traffic.get("note"), ", ".join(f"{k}={w}%" for k, w in v.next_weights.items())] for v in verdicts]
    notes = [] if verdicts else [f"no service with more than one live version in {win}"]
    emit_table(CANARY_COLUMNS, rows, as_json=as_json, title="Canaries", notes=notes,
               extra={"window": win.as_dict(), "verdicts": [v.as_dict() for v in verdicts]})


def _end_of_data(conn: Any, until: str | None) -> str | None:
    """When the lake's newest request is older than the clock, look as of the end of the data.

    Logs arrive late (S3 delivery takes minutes, demo data ends on the hour): without this a
    canary that was live when the data stops would look finished, and the last day's incidents
    would be cut short. The end is the next whole minute after the newest request, the end of
    the dashboard's default window (so a stored answer for it is found).
    """
    from analytics.red import latest_ts

    newest = latest_ts(conn)
    if until or newest is None or newest >= timewin.utcnow() - timedelta(minutes=15):
        return None
    click.echo(f"note: the newest data is from {timewin.iso(newest)}; looking as of then (pin it with --now)", err=True)
    return timewin.iso(newest.replace(second=0, microsecond=0) + timedelta(minutes=1))


def _stored_or(data: str | None, kind: str, win: timewin.Window, *, env: str | None, service: str | None,
               run: Any) -> list[Any]:
    """The answer kept in the lake for exactly this question (stored when the data landed, see
    analytics.findings), else ``run()``. The CLI only reads the store: it never writes the lake."""
    from analytics import findings

    lake = open_lake(data)
    stored = findings.load(lake, findings.key(lake, kind, win, env=env, service=service))
    return stored if stored is not None else run()


@click.command("report")
@data_option
@window_options
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="html", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write here (default: <data>/reports/report-<end>.<fmt>).")
@click.option("--webhook", help="POST a Slack-compatible {\"text\": ...} summary here (default: the webhook_url setting).")
@click.option("--every", help="Run again every DURATION (e.g. 1h) until stopped.")
@click.option("--cron", help="Run on this cron schedule (e.g. \"0 * * * *\") until stopped.")
@click.option("--policy", type=click.Path(dir_okay=False), help="Allowed-caller policy TOML (default: the policy setting).")
def report_cmd(data: str | None, since: str | None, until: str | None, window: str | None, now: str | None,
               fmt: str, out: str | None, webhook: str | None, every: str | None, cron: str | None,
               policy: str | None) -> None:
    """What changed: incidents, canary verdicts, worst services and edges, new/vanished edges, policy.

    \b
    Examples:
      meshlens report --window 24h --format html --out today.html
      meshlens report --every 1h --webhook https://hooks.slack.com/services/...
      meshlens report --cron "0 8 * * *" --format md
    The report is written to disk before it is sent; a webhook that is down is retried with
    back-off and the report stays on disk. For cron instead of --every, see the README.
    """
    from analytics import report

    settings = load_settings(data)
    lake = open_lake(data)
    options = report.ReportOptions(fmt=fmt, out=out, webhook=webhook or settings["webhook_url"] or None,
                                   policy=policy or settings["policy"] or None, since=since, until=until,
                                   window=window, now=now)
    if every or cron:
        report.run_schedule(lake, options, every=every, cron=cron, echo=click.echo)
        return
    result = report.run_once(lake, options)
    click.echo(f"report written to {result.path}" + (f"; sent: {result.sent}" if options.webhook else ""))


COMMANDS = [anomalies_cmd, canary_cmd, report_cmd]
