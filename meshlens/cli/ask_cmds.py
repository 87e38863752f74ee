"""`meshlens ask "QUESTION"`: answer a plain-language question, show the SQL and the window."""

from __future__ import annotations

from datetime import datetime

import click

from meshlens import catalog, timewin
from meshlens.cli.common import data_option, emit_table, json_option, load_settings
from meshlens.errors import ConfigError, MeshlensError
from meshlens.lake import Lake


@click.command("ask")
@click.argument("question", nargs=-1, required=True)
@click.option("--now", metavar="TIME", help="Pin the present (ISO, UTC) so that relative times are reproducible.")
@click.option("--backend", type=click.Choice(["offline", "claude"]), default=None,
              help="offline (default: keywords and templates, no network) or claude (needs ANTHROPIC_API_KEY).")
@data_option
@json_option
def ask_command(question: tuple[str, ...], now: str | None, backend: str | None, data: str | None, as_json: bool) -> None:
    """Answer QUESTION from the lake: the table, the SQL that produced it and the time window.

    \b
    Examples:
      meshlens ask "who calls PaymentService?"
      meshlens ask "error rate of the payments svc by version since 10:30"
      meshlens ask "why is PaymentService failing?" --now 2026-11-11T00:00:00Z
    Conventions: UTC, half-open windows, no time given = the last 24 hours, error = 5xx.
    """
    from nlq.ask import ask

    settings = load_settings(data)
    chosen = backend or settings["nlq_backend"]
    if chosen not in ("offline", "claude"):
        raise ConfigError(f"setting nlq_backend: {chosen!r} is not offline or claude")
    _import_rollups()
    conn = catalog.connect(Lake(settings["data"]))
    present = timewin.parse_instant(now) if now else datetime.now(timewin.utcnow().tzinfo)
    answer = ask(conn, " ".join(question), now=present, backend=chosen, settings=settings)
    _print(answer, as_json=as_json)


def _import_rollups() -> None:
    """Register the rollup views when analytics provides them (guarded: optional module)."""
    try:
        import analytics.rollup  # noqa: F401
    except ImportError:
        pass


def _print(answer: object, *, as_json: bool) -> None:
    from nlq.ask import Answer

    assert isinstance(answer, Answer)
    payload = answer.as_dict()
    extra = {k: v for k, v in payload.items() if k not in ("columns", "rows")}
    if as_json:
        emit_table(answer.columns, answer.rows, as_json=True, extra=extra)
        if answer.error:
            raise SystemExit(1)
        return
    if answer.error:
        raise MeshlensError(answer.error)
    if answer.clarification:
        click.echo(answer.clarification)
    if answer.columns:
        emit_table(answer.columns, answer.rows, as_json=False, title=answer.explanation)
    elif not (answer.clarification or answer.error):
        click.echo(answer.explanation)
    if answer.recommendation:
        click.echo(f"Recommendation: {answer.recommendation}")
    window = f"Window: {answer.window} (UTC, half-open)" if answer.window else ""
    click.echo(f"{window}\nBackend: {answer.backend}\n{answer.conventions}")
    if answer.sql:
        click.echo(f"SQL:\n{answer.sql}")


COMMANDS = [ask_command]
