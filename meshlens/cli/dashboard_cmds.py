"""`meshlens dashboard`: start the Streamlit dashboard on the lake (127.0.0.1 by default).

``launch()`` is the same thing as a function, for ``meshlens demo``: it runs
``streamlit run dashboard/app.py`` headless, without usage statistics, bound to the given
address, and either waits for it (``block=True``) or returns the running process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import click

from meshlens.cli.common import data_option, load_settings
from meshlens.errors import ConfigError

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def streamlit_command(data: str | Path, *, host: str, port: int) -> list[str]:
    """The ``streamlit run`` command line for the dashboard on ``data``."""
    return [
        sys.executable, "-m", "dashboard.serve", "run", str(APP),  # streamlit run, warmed at start
        "--server.headless", "true",
        "--server.address", host,
        "--server.port", str(int(port)),
        "--server.runOnSave", "false",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
        "--theme.base", "light",
        "--", "--data", str(data),
    ]


def launch(data: str | Path, host: str = "127.0.0.1", port: int = 8501, *,
           block: bool = True) -> subprocess.Popen[bytes] | int:
    """Start the dashboard; with ``block`` wait and return its exit status, else the process."""
    if not APP.is_file():
        raise ConfigError(f"dashboard app not found at {APP}; reinstall meshlens from a checkout")
    env = dict(os.environ, MESHLENS_DATA=str(data), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    process = subprocess.Popen(streamlit_command(data, host=host, port=port), env=env)
    if not block:
        return process
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()


@click.command("dashboard")
@data_option
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1; setting dashboard_host).")
@click.option("--port", type=int, default=None, help="Port (default 8501; setting dashboard_port).")
def dashboard(data: str | None, host: str | None, port: int | None) -> None:
    """Open the web dashboard on the lake: graph, RED, canaries, anomalies, Ask, SQL."""
    settings = load_settings(data, dashboard_host=host, dashboard_port=port)
    lake = Path(settings["data"])
    if not lake.is_dir():
        raise ConfigError(f"no lake at {lake}; run `meshlens ingest` or `meshlens demo` first, or pass --data")
    host, port = settings["dashboard_host"], settings["dashboard_port"]
    click.echo(f"meshlens dashboard on http://{host}:{port} (lake {lake}); Ctrl-C stops it", err=True)
    status = launch(lake, host, port, block=True)
    if status not in (0, -2, 130):
        sys.exit(int(status) if isinstance(status, int) else 1)


COMMANDS = [dashboard]
