"""Benchmark: `meshlens anomalies` (analytics.anomalies.detect) on the demo day and at 10M requests.

Two lakes, each with its rollups built:

- ``demo``: the demo scenario (``meshlens demo`` at scale 1, about 400,000 requests in 24 h,
  with the planted outage, slow dependency and canary), checked against its ground truth;
- ``10M``: one day of 10,000,000 synthetic requests (bench.metrics.synthesize, a few hundred
  services with Zipf-skewed traffic).

On each it times ``detect`` over the last 24 h twice in the same run: the current code and, as
the baseline, the detector as committed at ``--baseline-rev`` (read with ``git show``, loaded
as a module; skipped when git or the revision is not there). Wall and CPU (process time, all
threads) are both reported: the machine may be shared, and CPU time is the honest figure then.

    python -m bench.anomalies [--demo-lake DIR] [--big-lake DIR] [--keep DIR] [--baseline-rev REV]
                              [--skip-big] [--skip-baseline]

Without ``--demo-lake``/``--big-lake`` the lakes are built under ``--keep`` (default: a
temporary folder), which takes a few minutes; pass existing lakes to time only.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from meshlens import catalog
from meshlens.lake import Lake
from meshlens.timewin import Window

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "anomalies.md"
BASELINE_REV = "9ca1ae2"
"""The commit before the one-scan reader, the pruned series and the batched forest."""
BIG_ROWS = 10_000_000
BIG_END = datetime(2026, 11, 11, tzinfo=timezone.utc)


def build_demo(root: Path) -> tuple[Lake, datetime, Any]:
    """The demo scenario at scale 1 taken in with rollups; returns (lake, window end, truth)."""
    from analytics import rollup
    from ingest.pipeline import ingest_paths
    from sample_logs.scenario import GroundTruth, generate

    logs, lake = root / "demo-logs", Lake(root / "demo-lake")
    truth_file = logs / "ground_truth.json"
    if truth_file.is_file() and lake.has_files("rollups/edges_1m"):
        truth = GroundTruth.load(truth_file)
    else:
        truth = generate(logs, end=BIG_END, hours=24, seed=7, scale=1.0)
        summary = ingest_paths(lake, [logs], inventory=logs / "meshlens.toml")
        rollup.update(lake, dates=summary.dates_touched)
    return lake, truth.end_dt, truth


def build_big(root: Path) -> Lake:
    """One day of BIG_ROWS synthetic requests with rollups (reused when already there)."""
    from analytics import rollup
    from bench.metrics import synthesize

    lake = Lake(root / "lake-10M")
    if not lake.has_files("rollups/edges_1m"):
        synthesize(lake, rows=BIG_ROWS)
        rollup.rebuild(lake)
    return lake


def demo_truth(lake_dir: Path) -> Any:
    """The ground truth beside a lake made by `meshlens demo` (``_demo_logs``), if any."""
    from sample_logs.scenario import GroundTruth

    for path in (lake_dir / "_demo_logs" / "ground_truth.json", lake_dir.parent / "demo-logs" / "ground_truth.json"):
        if path.is_file():
            return GroundTruth.load(path)
    return None


def baseline_module(rev: str) -> ModuleType | None:
    """analytics/anomalies.py as committed at ``rev``, loaded under another name (None if unavailable)."""
    try:
        source = subprocess.run(["git", "show", f"{rev}:analytics/anomalies.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp(prefix="anomalies-baseline-")) / "anomalies_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("anomalies_baseline", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules["anomalies_baseline"] = module  # dataclasses look their module up while loading
    spec.loader.exec_module(module)
    return module


def time_detect(module: ModuleType, lake: Lake, end: datetime) -> tuple[float, float, list[Any]]:
    """(wall s, CPU s, incidents) of one ``detect`` over the 24 h before ``end`` on a fresh connection."""
    conn = catalog.connect(lake)
    window = Window(end - timedelta(hours=24), end)
    wall, cpu = time.perf_counter(), time.process_time()
    incidents = module.detect(conn, window=window)
    return time.perf_counter() - wall, time.process_time() - cpu, incidents


def found(incidents: list[Any], truth: Any) -> str:
    """Which planted events overlap an incident naming their service: 'outage, slow_dependency'."""
    if truth is None:
        return "n/a"
    names = []
    for event in truth.events:
        if event["kind"] not in ("outage", "slow_dependency"):
            continue
        start, end = (datetime.fromisoformat(event[k].replace("Z", "+00:00")) for k in ("start", "end"))
        if any(i.start < end and i.end > start and event["service"] in i.services for i in incidents):
            names.append(event["kind"])
    return ", ".join(names) or "none"


def run(lakes: list[tuple[str, Lake, datetime, Any]], baseline: ModuleType | None) -> list[dict[str, Any]]:
    """Time the current detector and the baseline on every lake."""
    from analytics import anomalies

    rows = []
    for name, lake, end, truth in lakes:
        requests = catalog.connect(lake).execute("SELECT count(*) FROM requests").fetchall()[0][0]
        for label, module in (("after", anomalies), ("before", baseline)):
            if module is None:
                continue
            wall, cpu, incidents = time_detect(module, lake, end)
            rows.append({"lake": name, "requests": requests, "code": label, "wall_s": wall, "cpu_s": cpu,
                         "incidents": len(incidents), "planted_found": found(incidents, truth)})
            print(f"  {name} {label}: {wall:.1f} s wall, {cpu:.1f} s CPU, {len(incidents)} incidents", flush=True)
    return rows


def to_markdown(rows: list[dict[str, Any]], *, rev: str) -> str:
    """The results table, with the speed-up of each lake's 'after' over its 'before'."""
    lines = ["# anomalies: `detect` over 24 h (wall and process CPU, same run)", "",
             f"baseline ('before'): analytics/anomalies.py at {rev}", "",
             "| lake | requests | code | wall s | CPU s | incidents | planted found |",
             "|---|---:|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['lake']} | {r['requests']:,} | {r['code']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
                     f"| {r['incidents']} | {r['planted_found']} |")
    for lake in dict.fromkeys(r["lake"] for r in rows):
        pair = {r["code"]: r for r in rows if r["lake"] == lake}
        if {"before", "after"} <= pair.keys():
            lines.append(f"\n{lake}: {pair['before']['wall_s'] / pair['after']['wall_s']:.1f}x faster wall, "
                         f"{pair['before']['cpu_s'] / pair['after']['cpu_s']:.1f}x less CPU")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-lake", type=Path, help="an existing demo lake (from `meshlens demo`)")
    parser.add_argument("--big-lake", type=Path, help="an existing 10M lake with rollups")
    parser.add_argument("--keep", type=Path, help="build the lakes here (and reuse them next time)")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-anomalies-"))
    root.mkdir(parents=True, exist_ok=True)
    lakes = [_demo_entry(args.demo_lake, root)]
    if not args.skip_big:
        big = Lake(args.big_lake) if args.big_lake else build_big(root)
        lakes.append(("10M", big, BIG_END, None))
    baseline = None if args.skip_baseline else baseline_module(args.baseline_rev)
    text = to_markdown(run(lakes, baseline), rev=args.baseline_rev if baseline else "(not run)")
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


def _demo_entry(demo_lake: Path | None, root: Path) -> tuple[str, Lake, datetime, Any]:
    if demo_lake is None:
        lake, end, truth = build_demo(root)
        return "demo day", lake, end, truth
    truth = demo_truth(demo_lake)
    lake = Lake(demo_lake)
    if truth is not None:
        return "demo day", lake, truth.end_dt, truth
    latest = catalog.connect(lake).execute("SELECT max(ts) FROM requests").fetchall()[0][0]
    end = latest.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return "demo day", lake, end, None


if __name__ == "__main__":
    main()
