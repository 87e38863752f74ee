"""Helpers of the dashboard tests: run a page in AppTest, start the real dashboard server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def run_page(page: str, *, timeout: float = 300, **params: str) -> Any:
    """Run the app once in AppTest on ``page`` with query parameters (the lake from $MESHLENS_DATA)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=timeout)
    at.query_params.update({"page": page, **params})
    return at.run()


def pending(at: Any) -> list[str]:
    """The placeholders of background analyses still running (dashboard.jobs.waiting_text)."""
    return [i.value for i in at.info if "… started" in i.value]


def run_until_ready(page: str, *, timeout: float = 600, **params: str) -> Any:
    """Run the page, then rerun it until no background analysis is pending (or fail)."""
    return rerun_until_ready(run_page(page, timeout=timeout, **params), timeout=timeout)


def rerun_until_ready(at: Any, *, timeout: float) -> Any:
    """Rerun an AppTest until no background analysis is pending (or fail after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while pending(at):
        assert time.monotonic() < deadline, f"still pending after {timeout} s: {pending(at)}"
        time.sleep(0.3)
        at.run()
    return at


def lake_copy(lake: Any, folder: Path) -> Path:
    """A copy of a lake the dashboard may write its findings store into (the scenario stays read-only)."""
    import shutil

    target = folder / "lake"
    shutil.copytree(lake.root, target, ignore=shutil.ignore_patterns("_findings"))
    return target


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def dashboard_server(lake: Path, *, timeout: float = 60, env: dict[str, str] | None = None) -> Iterator[str]:
    """``meshlens dashboard`` on a free loopback port; yields its base URL."""
    port = free_port()
    env = dict(os.environ, MESHLENS_DATA=str(lake), **(env or {}))
    cmd = [str(Path(sys.executable).parent / "meshlens"), "dashboard", "--data", str(lake),
           "--port", str(port)]
    process = subprocess.Popen(cmd, env=env, cwd=str(ROOT), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, timeout=timeout)
        yield url
    finally:
        _stop(process)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"dashboard exited with {process.returncode}: {output[-2000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.3)
    raise TimeoutError(f"dashboard did not answer at {url} within {timeout} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its streamlit child (their own process group, started above)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def wait_rendered(page: Any, *, timeout_ms: int = 60_000) -> None:
    """Wait until the app has finished a run and every Plotly chart has drawn."""
    page.get_by_text("Rendered in").first.wait_for(timeout=timeout_ms)
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
              && [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
                   .every(c => c.querySelector('.main-svg'))""",
        timeout=timeout_ms,
    )
    page.wait_for_timeout(300)  # let the last frame paint before a screenshot


def wait_analyses(page: Any, *, timeout_ms: int = 240_000) -> None:
    """Wait until every background-analysis placeholder was replaced by its result, then settle."""
    page.wait_for_function("() => !document.body.innerText.includes('\u2026 started')", timeout=timeout_ms)
    wait_rendered(page, timeout_ms=timeout_ms)
