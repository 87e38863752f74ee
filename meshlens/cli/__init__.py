"""The `meshlens` command line: one entry point, one subcommand per job.

Each subcommand lives in a module of this package that defines click commands and lists them
in ``COMMANDS``; ``main`` adds them to the group. A MeshlensError becomes one line on stderr
and exit status 1, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from meshlens.errors import MeshlensError

COMMAND_MODULES = (
    "meshlens.cli.lake_cmds",
    "meshlens.cli.trace_cmds",
    "meshlens.cli.metrics_cmds",
    "meshlens.cli.analysis_cmds",
    "meshlens.cli.ask_cmds",
    "meshlens.cli.dashboard_cmds",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="meshlens")
def cli() -> None:
    """meshlens: service-to-service traffic analytics over a local Parquet lake.

    \b
    Take logs in, then ask:
      meshlens ingest ./logs --inventory meshlens.toml
      meshlens services
      meshlens red --service PaymentService --window 1h
      meshlens ask "who calls PaymentService?"

    The lake is --data DIR, else $MESHLENS_DATA, else ./meshlens-data.
    """


def _register() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; user errors exit 1 with one line on stderr."""
    _register()
    try:
        cli.main(args=argv, prog_name="meshlens", standalone_mode=False)
    except MeshlensError as exc:
        click.echo(f"meshlens: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("meshlens: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(1 if exc.exit_code == 2 else exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
