"""What every subcommand shares: the --data option, settings, the lake, JSON/table output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import click

from meshlens import settings as settings_mod
from meshlens import timewin
from meshlens.lake import Lake

F = Callable[..., Any]


def data_option(func: F) -> F:
    """``--data DIR``: the lake directory."""
    return click.option(
        "--data", "data", metavar="DIR", default=None,
        help="Lake directory (default: $MESHLENS_DATA, else ./meshlens-data).",
    )(func)


def json_option(func: F) -> F:
    """``--json``: print one JSON object instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object {columns, rows, ...}.")(func)


def window_options(func: F) -> F:
    """``--since``, ``--until``, ``--window``, ``--now`` (UTC, half-open windows)."""
    for opt in reversed((
        click.option("--since", metavar="TIME", help="Window start: ISO time (UTC) or a duration ago such as 2h."),
        click.option("--until", metavar="TIME", help="Window end (exclusive); default now."),
        click.option("--window", metavar="DURATION", help="Window length ending at --until/now, e.g. 15m, 1h, 7d."),
        click.option("--now", metavar="TIME", help="Pin the present (ISO, UTC) so that results are reproducible."),
    )):
        func = opt(func)
    return func


def resolve_window(since: str | None, until: str | None, window: str | None, now: str | None, **kw: Any) -> timewin.Window:
    return timewin.resolve(since=since, until=until, window=window, now=now, **kw)


def load_settings(data: str | None, **flags: Any) -> settings_mod.Settings:
    return settings_mod.from_environment(data=data, **flags)


def open_lake(data: str | None) -> Lake:
    return Lake(load_settings(data)["data"])


def to_jsonable(value: Any) -> Any:
    """JSON-safe form of a DuckDB/polars cell."""
    if isinstance(value, datetime):
        return timewin.iso(value) if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value


def emit_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    as_json: bool,
    title: str | None = None,
    extra: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> None:
    """Print a table (rich on a terminal, plain otherwise) or the JSON object of DESIGN.md."""
    if as_json:
        payload = {"columns": list(columns), "rows": [[to_jsonable(c) for c in r] for r in rows]}
        payload.update({k: to_jsonable(v) for k, v in (extra or {}).items()})
        click.echo(json.dumps(payload))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(str(col), overflow="fold")
    for row in rows:
        table.add_row(*[_cell(c) for c in row])
    console.print(table)
    for note in notes:
        console.print(note, markup=False, highlight=False)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(to_jsonable(value))


def is_terminal() -> bool:
    return sys.stderr.isatty()
