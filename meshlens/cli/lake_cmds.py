"""Lake commands: ``ingest``, ``services``, ``sql``, ``compact``, ``inventory import``, ``demo``."""

from __future__ import annotations

import importlib
import shutil
import time
import tomllib
from pathlib import Path
from typing import Any

import click

from meshlens.cli.common import data_option, emit_table, is_terminal, json_option, load_settings, open_lake
from meshlens.errors import MeshlensError
from meshlens.lake import Lake


def _optional(module: str) -> Any:
    """A feature module written by another part of the project, or None while it is absent."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return None
        raise


# -- ingest -------------------------------------------------------------------------------------
@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--format", "fmt", default="auto", show_default=True,
              help="Log format (auto detects it per file): lattice, alb, envoy, istio_json, combined.")
@click.option("--inventory", metavar="FILE", help="Service inventory TOML (default <data>/meshlens.toml).")
@data_option
@json_option
def ingest(paths: tuple[str, ...], fmt: str, inventory: str | None, data: str | None, as_json: bool) -> None:
    """Take access logs in: files, folders (recursively), .gz, or - for stdin."""
    settings = load_settings(data)
    lake = Lake(settings["data"])
    summary = run_ingest(lake, list(paths), fmt=fmt, inventory=inventory, settings=settings)
    rows = [[key, value] for key, value in _summary_rows(summary)]
    emit_table(["", "count"], rows, as_json=as_json, title=f"ingest into {lake.root}",
               extra={"dates_touched": sorted(summary.dates_touched), "files_ignored": summary.files_ignored},
               notes=[f"ignored (not a known log format): {name}" for name in summary.files_ignored[:20]])


def run_ingest(lake: Lake, paths: list[str], *, fmt: str, inventory: str | None, settings: Any) -> Any:
    """ingest_paths with a progress bar on a terminal, then the rollup update when available."""
    from ingest.pipeline import ingest_paths

    if is_terminal():
        summary = _with_progress(lambda cb: ingest_paths(lake, paths, fmt=fmt, inventory=inventory,
                                                         progress=cb, settings=settings))
    else:
        summary = ingest_paths(lake, paths, fmt=fmt, inventory=inventory, settings=settings)
    rollup = _optional("analytics.rollup")
    if rollup is not None and summary.dates_touched:
        rollup.update(lake, dates=summary.dates_touched)
    findings = _optional("analytics.findings")  # incidents and verdicts for the dashboard's window
    if findings is not None and summary.dates_touched and settings["findings_on_ingest"]:
        click.echo("finding incidents and canary verdicts for the dashboard "
                   "(setting findings_on_ingest=false skips this)", err=True)
        findings.refresh(lake)
    return summary


def _with_progress(run: Any) -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("ingest", total=None)

        def report(p: Any) -> None:
            """Move the bar to the bytes done."""
            name = Path(p.current).name
            bar.update(task, completed=p.bytes_done, total=p.bytes_total or None,
                       description=f"{p.files_done}/{p.files_total} {name[:40]}")

        return run(report)


def _summary_rows(summary: Any) -> list[tuple[str, int]]:
    return [
        ("files taken in", summary.files),
        ("rows read", summary.rows_read),
        ("rows stored", summary.rows_stored),
        ("rows rejected (see _quarantine)", summary.rows_rejected),
        ("files skipped (already taken in)", summary.files_skipped),
        ("files ignored (not a log)", len(summary.files_ignored)),
    ]


# -- services -----------------------------------------------------------------------------------
@click.command()
@data_option
@json_option
def services(data: str | None, as_json: bool) -> None:
    """Every service seen: its versions, environments and request count."""
    from meshlens import catalog

    conn = catalog.connect(open_lake(data))
    result = conn.execute(
        "SELECT service, versions, envs, requests, first_seen, last_seen FROM services "
        "ORDER BY requests DESC, service"
    )
    columns = [d[0] for d in result.description]
    emit_table(columns, result.fetchall(), as_json=as_json, title="services")


# -- sql ----------------------------------------------------------------------------------------
@click.command()
@click.argument("query", metavar='"SELECT ..."')
@data_option
@json_option
def sql(query: str, data: str | None, as_json: bool) -> None:
    """Run one read-only SELECT over the lake views (anything else is refused)."""
    from meshlens import catalog

    guard = _optional("nlq.guard")
    if guard is None:
        raise MeshlensError("the SQL guard (nlq/guard.py) is not installed; meshlens sql is unavailable")
    settings = load_settings(data)
    conn = catalog.connect(Lake(settings["data"]))
    columns, rows = guard.run_guarded(conn, query, settings=settings)
    emit_table(columns, rows, as_json=as_json)


# -- compact ------------------------------------------------------------------------------------
@click.command()
@click.option("--target-rows", type=int, default=2_000_000, show_default=True,
              help="Merge files of a partition into files of about this many rows.")
@data_option
@json_option
def compact(target_rows: int, data: str | None, as_json: bool) -> None:
    """Merge the small Parquet files of each partition (rows stay exactly the same)."""
    from meshlens.compaction import compact_lake

    result = compact_lake(open_lake(data), target_rows=target_rows)
    emit_table(["table", "partitions", "files_before", "files_after", "rows"], result, as_json=as_json,
               title="compact")


# -- inventory import ---------------------------------------------------------------------------
@click.group()
def inventory() -> None:
    """The service inventory (names for hosts, ids, principals and target groups)."""


@inventory.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="FILE...")
@click.option("--out", type=click.Path(path_type=Path), help="Write the TOML here (default: print it).")
def inventory_import(files: tuple[Path, ...], out: Path | None) -> None:
    """Build an inventory from `aws vpc-lattice list-services` / `list-target-groups` JSON."""
    from meshlens import inventory as inv

    built = inv.import_aws(inv.load_json_documents(list(files)), source=", ".join(map(str, files)))
    text = inv.to_toml(built)
    inv.from_dict(tomllib.loads(text))  # what we write must read back
    if out is None:
        click.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}: {len(built.services)} services, {len(built.target_groups)} target groups", err=True)


# -- demo ---------------------------------------------------------------------------------------
@click.command()
@click.option("--no-dashboard", is_flag=True, help="Stop after the summary; do not start the dashboard.")
@click.option("--hours", type=int, default=24, show_default=True, help="Hours of traffic to generate.")
@click.option("--scale", type=float, default=1.0, show_default=True, help="Traffic scale of the scenario (1.0: about 400,000 requests a day).")
@data_option
def demo(no_dashboard: bool, hours: int, scale: float, data: str | None) -> None:
    """Generate the demo scenario, take it in, print a summary, start the dashboard."""
    settings = load_settings(data)
    lake = Lake(settings["data"])
    started = time.monotonic()
    truth, logs = _generate_demo(lake, hours=hours, scale=scale)
    summary = run_ingest(lake, [str(logs)], fmt="auto", inventory=str(lake.root / "meshlens.toml"),
                         settings=settings)
    _print_demo_summary(lake, summary, truth, seconds=time.monotonic() - started)
    if not no_dashboard:
        _start_dashboard(settings)


def _generate_demo(lake: Lake, *, hours: int, scale: float) -> tuple[Any, Path]:
    scenario = _optional("sample_logs.scenario")
    if scenario is None:
        raise MeshlensError("the demo scenario generator (sample_logs/scenario.py) is not installed")
    from meshlens.timewin import utcnow

    end = utcnow().replace(minute=0, second=0, microsecond=0)
    logs = lake.root / "_demo_logs"
    if logs.exists():
        shutil.rmtree(logs)
    lake.root.mkdir(parents=True, exist_ok=True)
    truth = scenario.generate(logs, end=end, hours=hours, seed=7, scale=scale)
    for name in ("meshlens.toml", "policy.toml"):
        if (logs / name).is_file():
            shutil.copyfile(logs / name, lake.root / name)
    return truth, logs


def _print_demo_summary(lake: Lake, summary: Any, truth: Any, *, seconds: float) -> None:
    from meshlens import catalog

    conn = catalog.connect(lake)
    row = conn.execute("SELECT count(DISTINCT service), count(*) FROM requests").fetchone()
    n_services, n_requests = row if row else (0, 0)
    click.echo(f"meshlens demo: lake {lake.root}")
    click.echo(f"  {summary.files} files taken in, {summary.rows_stored:,} requests stored, "
               f"{summary.rows_rejected:,} rejected, {summary.files_skipped} already there")
    click.echo(f"  {n_services} services, {n_requests:,} requests in the lake ({seconds:.1f} s)")
    for line in _planted(truth):
        click.echo(f"  planted: {line}")
    click.echo("  try: meshlens services | meshlens red --service PaymentService | "
               "meshlens ask \"why is PaymentService failing?\"")


def _planted(truth: Any) -> list[str]:
    """One line per planted event of the scenario's ground truth."""
    out = []
    for event in getattr(truth, "events", None) or []:
        text = event.get("description") if isinstance(event, dict) else None
        out.append(str(text or event)[:200])
    return out


def _start_dashboard(settings: Any) -> None:
    dashboard_cmds = _optional("meshlens.cli.dashboard_cmds")
    if dashboard_cmds is None or not hasattr(dashboard_cmds, "launch"):
        click.echo("  (the dashboard is not installed; stopping here)")
        return
    host, port = settings["dashboard_host"], settings["dashboard_port"]
    click.echo(f"  dashboard on http://{host}:{port} (Ctrl-C stops it)")
    dashboard_cmds.launch(settings["data"], host, port, block=True)


COMMANDS = [ingest, services, sql, compact, inventory, demo]
