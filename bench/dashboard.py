"""Benchmark: how long every dashboard page takes to render at 10M requests.

Synthesizes one day of requests with the metrics benchmark's generator (bench.metrics:
a few hundred services, Zipf-skewed traffic, canaries), builds the rollups, then runs each page
of the dashboard in Streamlit's AppTest (the real app script, no browser) on the whole day:

- ``cold``: the first visit of the page in a fresh process state (every analytics call runs;
  the caches of earlier pages, e.g. the sidebar's lists, are already filled, as for a user who
  arrives on the Overview first and then clicks through);
- ``warm``: the same page again within the cache time-to-live (what a user sees when coming
  back, changing a widget, or on auto-refresh).

The time reported is the app script's own run time (the "Rendered in" caption: from the first
line of the script to the page's last element), which excludes AppTest's start-up. The
Overview's incidents and canary sections run in parallel fragments beside the page: the script
time excludes them, the AppTest wall time includes them. Each page's slowest uncached analytics
call is reported too.

    python -m bench.dashboard [--rows 10000000] [--keep DIR] [--pages Overview,Service]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from analytics import rollup
from bench.metrics import DAY, synthesize
from meshlens.lake import Lake

RESULTS = Path(__file__).resolve().parent / "results" / "dashboard.md"
APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def build_lake(root: Path, rows: int) -> Lake:
    """A lake of ``rows`` synthetic requests with rollups (reused when already built)."""
    lake = Lake(root / f"lake-{rows}")
    if not lake.has_files("requests"):
        synthesize(lake, rows=rows)
        rollup.rebuild(lake)
    return lake


def run_page(page: str, *, params: dict[str, str]) -> tuple[float, float, list[str]]:
    """(script ms, wall ms, exceptions) of one AppTest run of ``page``."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=1800)
    at.query_params.update({"page": page, **params})
    started = time.perf_counter()
    at.run()
    wall = (time.perf_counter() - started) * 1000
    script = next((float(m.group(1)) for c in at.caption
                   if (m := re.match(r"Rendered in (\d+) ms", c.value))), float("nan"))
    return script, wall, [e.message for e in at.exception]


def measure(pages: list[str], *, service: str) -> list[dict[str, Any]]:
    """Cold and warm render time of every page on the whole synthetic day."""
    from dashboard import data

    params = {"range": "custom", "since": DAY.isoformat(), "until": (DAY + timedelta(days=1)).isoformat(),
              "service": service}
    rows = []
    for page in pages:
        data.TIMINGS.clear()
        cold, cold_wall, errors = run_page(page, params=params)
        slowest = sorted(data.TIMINGS, key=lambda t: t[1], reverse=True)[:3]
        warm, _, _ = run_page(page, params=params)
        rows.append({"page": page, "cold_ms": cold, "warm_ms": warm, "cold_wall_ms": cold_wall,
                     "slowest_call": ", ".join(f"{n.split('.', 1)[1]} {t * 1000:.0f}" for n, t in slowest) or "-", "errors": "; ".join(errors)[:80]})
        print(_row(rows[-1]), flush=True)
    return rows


def _row(r: dict[str, Any]) -> str:
    return (f"| {r['page']} | {r['cold_ms']:.0f} | {r['warm_ms']:.0f} | {r['cold_wall_ms']:.0f} | "
            f"{r['slowest_call']} | {r['errors'] or 'none'} |")


def to_markdown(rows: list[dict[str, Any]], *, requests: int) -> str:
    """The results table."""
    head = (f"# Dashboard page render times, {requests:,} requests (one day, rollups built)\n\n"
            "| page | cold ms | warm ms | cold wall ms (AppTest) | slowest uncached calls (ms) | errors |\n"
            "|---|---:|---:|---:|---|---|\n")
    return head + "\n".join(_row(r) for r in rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write bench/results/dashboard.md."""
    from dashboard.state import PAGES

    parser = argparse.ArgumentParser(description="dashboard page render times")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--keep", type=Path, default=None, help="build the lake here and keep it")
    parser.add_argument("--pages", default=",".join(PAGES))
    parser.add_argument("--service", default="Svc000", help="service for the Service and Canary pages")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="meshlens-bench-dashboard-"))
    try:
        lake = build_lake(root, args.rows)
        os.environ["MESHLENS_DATA"] = str(lake.root)
        rows = measure(args.pages.split(","), service=args.service)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    text = to_markdown(rows, requests=args.rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
