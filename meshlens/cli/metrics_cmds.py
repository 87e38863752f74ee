"""RED metrics, the service graph, the security view, cost and rollups on the command line.

    meshlens red [--service S] [--caller C] [--by minute|5m|hour|day|route|version|caller|env|principal]
    meshlens graph [--format table|mermaid|dot]      meshlens callers S / callees S
    meshlens policy check [--policy FILE]            meshlens cost
    meshlens rollup rebuild
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import polars as pl

from meshlens.cli.common import (
    data_option, emit_table, json_option, load_settings, open_lake, resolve_window, window_options,
)
from meshlens.errors import ConfigError
from meshlens.timewin import Window

BY_CHOICES = ("service", "minute", "5m", "hour", "day", "route", "version", "caller", "edge", "env", "principal")
_BY_KEYS = {
    "service": ["service"], "route": ["service", "method", "route"], "version": ["service", "version"],
    "caller": ["caller", "service"], "edge": ["caller", "service"], "env": ["service", "env"],
    "principal": ["caller_principal", "service"],
}
_RED_TABLE = ("requests", "rps", "errors_5xx", "error_ratio", "client_errors_4xx",
              "p50_ms", "p95_ms", "p99_ms", "max_ms", "n", "low_sample")


def _open(data: str | None) -> tuple[Any, Any]:
    from meshlens import catalog

    settings = load_settings(data)
    return catalog.connect(open_lake(data)), settings


def _window(since: str | None, until: str | None, window: str | None, now: str | None) -> Window:
    return resolve_window(since, until, window, now)


def _resolve(conn: Any, name: str | None) -> str | None:
    from analytics.services import resolve_service

    return resolve_service(conn, name) if name else None


def _emit_frame(frame: pl.DataFrame, *, as_json: bool, columns: list[str] | None = None,
                title: str | None = None, extra: dict[str, Any] | None = None,
                notes: tuple[str, ...] = ()) -> None:
    shown = frame.select(columns) if columns and not as_json else frame
    emit_table(shown.columns, shown.rows(), as_json=as_json, title=title, extra=extra, notes=notes)


# -- red ---------------------------------------------------------------------------------------
@click.command("red")
@data_option
@click.option("--service", help="Only requests to this service.")
@click.option("--caller", help="Only requests from this caller.")
@click.option("--env", help="Only this environment (prod, staging, ...).")
@click.option("--by", "by", type=click.Choice(BY_CHOICES), default="service", show_default=True,
              help="Group by a key, or by a time bucket (per service).")
@window_options
@json_option
def red_command(data: str | None, service: str | None, caller: str | None, env: str | None, by: str,
                since: str | None, until: str | None, window: str | None, now: str | None, as_json: bool) -> None:
    """Rate, errors (5xx; 4xx shown apart) and latency percentiles with their sample size."""
    from analytics.red import red

    conn, settings = _open(data)
    win = _window(since, until, window, now)
    service, caller = _resolve(conn, service), _resolve(conn, caller)
    bucket = by if by in ("minute", "5m", "hour", "day") else None
    keys = ["service"] if bucket else _BY_KEYS[by]
    frame = red(conn, window=win, by=keys, service=service, caller=caller, env=env, bucket=bucket, settings=settings)
    if not bucket:
        frame = frame.sort(["requests", *keys], descending=[True, *[False] * len(keys)])
    source = frame["percentile_source"][0] if frame.height else None
    lead = keys + (["bucket_start"] if bucket else [])
    notes = (f"window {win}; percentiles: {source or 'none'} (n = requests with a duration; "
             f"low_sample = fewer than {settings['min_percentile_samples']})",)
    _emit_frame(frame, as_json=as_json, columns=[*lead, *_RED_TABLE], title="RED metrics",
                extra={"window": win.as_dict(), "percentile_source": source}, notes=notes)


# -- graph -------------------------------------------------------------------------------------
@click.command("graph")
@data_option
@click.option("--env", help="Only this environment.")
@click.option("--format", "fmt", type=click.Choice(("table", "mermaid", "dot")), default="table", show_default=True)
@window_options
@json_option
def graph_command(data: str | None, env: str | None, fmt: str, since: str | None, until: str | None,
                  window: str | None, now: str | None, as_json: bool) -> None:
    """The service graph: edges with RED metrics and where they were seen (logs, traces)."""
    from analytics.graph import service_graph, to_dot, to_mermaid

    conn, settings = _open(data)
    win = _window(since, until, window, now)
    graph = service_graph(conn, window=win, env=env, settings=settings)
    if as_json:
        nodes = graph.nodes
        emit_table(graph.edges.columns, graph.edges.rows(), as_json=True, extra={
            "window": win.as_dict(), "nodes": {"columns": nodes.columns, "rows": [list(r) for r in nodes.rows()]},
        })
    elif fmt == "mermaid":
        click.echo(to_mermaid(graph))
    elif fmt == "dot":
        click.echo(to_dot(graph))
    else:
        _emit_frame(graph.edges, as_json=False, title="service graph", notes=(f"window {win}",),
                    columns=["caller", "callee", "requests", "error_ratio", "p95_ms", "n", "low_sample", "seen_in"])


def _neighbours(direction: str) -> click.Command:
    @click.command(direction)
    @click.argument("service")
    @data_option
    @click.option("--env", help="Only this environment.")
    @window_options
    @json_option
    def command(service: str, data: str | None, env: str | None, since: str | None, until: str | None,
                window: str | None, now: str | None, as_json: bool) -> None:
        from analytics import graph

        conn, settings = _open(data)
        win = _window(since, until, window, now)
        from analytics.services import resolve_service

        name = resolve_service(conn, service)
        func = graph.callers if direction == "callers" else graph.callees
        frame = func(conn, name, window=win, env=env, settings=settings)
        _emit_frame(frame, as_json=as_json, title=f"{direction} of {name}", extra={"window": win.as_dict()},
                    columns=["caller", "callee", "requests", "rps", "error_ratio", "p95_ms", "n", "low_sample", "seen_in"])

    command.help = f"Who {'calls SERVICE' if direction == 'callers' else 'SERVICE calls'}, with RED metrics per edge."
    return command


# -- policy, cost, rollup ----------------------------------------------------------------------
@click.group("policy")
def policy_group() -> None:
    """The allowed-caller policy."""


@policy_group.command("check")
@data_option
@click.option("--policy", "policy_path", metavar="FILE", help="Policy TOML (default: setting `policy`, else <data>/policy.toml).")
@window_options
@json_option
def policy_check(data: str | None, policy_path: str | None, since: str | None, until: str | None,
                 window: str | None, now: str | None, as_json: bool) -> None:
    """Every caller that broke the allowed-caller policy, with counts and first/last time."""
    from analytics.policy import load_policy
    from analytics.security import policy_violations

    conn, settings = _open(data)
    path = _policy_path(policy_path, settings)
    win = _window(since, until, window, now)
    frame = policy_violations(conn, load_policy(path), window=win)
    _emit_frame(frame, as_json=as_json, title="policy violations",
                extra={"window": win.as_dict(), "policy": str(path), "violations": frame.height},
                notes=(f"{frame.height} violating (service, env, caller); policy {path}; window {win}",))


def _policy_path(flag: str | None, settings: Any) -> Path:
    candidates = [flag] if flag else [settings["policy"] or None, str(Path(settings["data"]) / "policy.toml")]
    for candidate in candidates:
        if candidate and (flag or Path(candidate).is_file()):
            return Path(candidate)
    raise ConfigError("no policy file: pass --policy FILE, set MESHLENS_POLICY, or put policy.toml in the data folder")


@click.command("cost")
@data_option
@click.option("--env", help="Only this environment.")
@window_options
@json_option
def cost_command(data: str | None, env: str | None, since: str | None, until: str | None,
                 window: str | None, now: str | None, as_json: bool) -> None:
    """Estimated VPC Lattice cost per service (prices from the price_* settings)."""
    from analytics.cost import estimate

    conn, settings = _open(data)
    win = _window(since, until, window, now)
    frame = estimate(conn, settings, window=win, env=env)
    total = float(frame["cost_total"].sum()) if frame.height else 0.0
    _emit_frame(frame, as_json=as_json, title=f"VPC Lattice cost estimate ({settings['price_region']}, USD)",
                extra={"window": win.as_dict(), "total_usd": total, "region": settings["price_region"]},
                notes=(f"total ${total:,.2f} for window {win}",))


@click.group("rollup")
def rollup_group() -> None:
    """The per-minute and per-hour rollups that RED metrics read."""


@rollup_group.command("rebuild")
@data_option
@click.option("--date", "dates", multiple=True, metavar="YYYY-MM-DD", help="Only these dates (repeatable).")
def rollup_rebuild(data: str | None, dates: tuple[str, ...]) -> None:
    """Recompute the rollups from raw requests (every date, or only --date)."""
    from analytics import rollup

    lake = open_lake(data)
    done = rollup.update(lake, dates=dates) if dates else rollup.rebuild(lake)
    if load_settings(data)["findings_on_ingest"]:
        from analytics import findings

        findings.refresh(lake)  # incidents and verdicts of the dashboard's default window
    click.echo(f"rolled up {len(done)} date(s): {', '.join(done) if done else 'none'}")


COMMANDS = [red_command, graph_command, _neighbours("callers"), _neighbours("callees"),
            policy_group, cost_command, rollup_group]
