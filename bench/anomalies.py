"""Benchmark: `meshlens anomalies` (analytics.anomalies.detect) on the demo day and at 10M requests.

Two lakes, each with its rollups built:

- ``demo``: the demo scenario (``meshlens demo`` at scale 1, about 400,000 requests in 24 h,
  with the planted outage, slow dependency and canary), checked against its ground truth;
- ``10M``: one day of 10,000,000 synthetic requests (bench.metrics.synthesize, a few hundred
  services with Zipf-skewed traffic).

On each it times ``detect`` over the last 24 h in the same run, ``--repeat`` times, alternating
the current code and, as the baseline, the detector as committed at ``--baseline-rev`` (read
with ``git show``, loaded as a module; skipped when git or the revision is not there), keeping
each one's best wall and CPU. Wall and CPU (process time, all threads) are both reported: the
machine may be shared, and CPU time is the honest figure then (the load average is printed).
Both see scikit-learn already imported; the whole command, imports included, is timed on the
demo lake as ``meshlens anomalies`` in a child process (CPU from the child's rusage), the
baseline through a shim that installs the baseline module first. Each lake's incident lists
are compared: "same as before" means every incident, reason and score is identical.

    python -m bench.anomalies [--demo-lake DIR] [--big-lake DIR] [--keep DIR] [--baseline-rev REV]
                              [--repeat N] [--skip-big] [--skip-baseline] [--skip-cli]

Without ``--demo-lake``/``--big-lake`` the lakes are built under ``--keep`` (default: a
temporary folder), which takes a few minutes; pass existing lakes to time only.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
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
BASELINE_REV = "123768d"
"""Session 2's detector (one scan, one forest across series); session 3 made it cheaper, same incidents."""
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


def run(lakes: list[tuple[str, Lake, datetime, Any]], baseline: ModuleType | None, *,
        repeat: int) -> list[dict[str, Any]]:
    """Time the current detector and the baseline on every lake, alternating, best of ``repeat``."""
    from analytics import anomalies

    rows = []
    for name, lake, end, truth in lakes:
        requests = catalog.connect(lake).execute("SELECT count(*) FROM requests").fetchall()[0][0]
        codes = [(label, module) for label, module in (("after", anomalies), ("before", baseline)) if module]
        best: dict[str, dict[str, Any]] = {}
        for _ in range(max(1, repeat)):
            for label, module in codes:
                wall, cpu, incidents = time_detect(module, lake, end)
                print(f"  {name} {label}: {wall:.1f} s wall, {cpu:.1f} s CPU, {len(incidents)} incidents "
                      f"(load {_load()})", flush=True)
                row = best.setdefault(label, {"lake": name, "requests": requests, "code": label, "wall_s": wall,
                                              "cpu_s": cpu, "incidents": len(incidents),
                                              "planted_found": found(incidents, truth), "_list": incidents})
                row["wall_s"], row["cpu_s"] = min(row["wall_s"], wall), min(row["cpu_s"], cpu)
        if "before" in best:
            same = _as_dicts(best["after"]["_list"]) == _as_dicts(best["before"]["_list"])
            best["after"]["same"] = "yes" if same else "NO"
        rows += [{k: v for k, v in best[label].items() if k != "_list"} for label, _ in codes]
    return rows


def _as_dicts(incidents: list[Any]) -> list[dict[str, Any]]:
    return [i.as_dict() for i in incidents]


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


SHIM = """import importlib.util, sys
spec = importlib.util.spec_from_file_location("analytics.anomalies", sys.argv.pop(1))
module = importlib.util.module_from_spec(spec)
sys.modules["analytics.anomalies"] = module
spec.loader.exec_module(module)
module.__dict__.setdefault("warm_up", lambda: None)  # the CLI of today calls it; older detectors lack it
import analytics
analytics.anomalies = module
from meshlens.cli import main
sys.argv[0] = "meshlens"
main()
"""


def time_cli(lake: Lake, end: datetime, baseline_file: Path | None) -> tuple[float, float]:
    """(wall s, CPU s) of ``meshlens anomalies --json`` over the 24 h before ``end`` in a child process."""
    args = ["anomalies", "--data", str(lake.root), "--now", end.strftime("%Y-%m-%dT%H:%MZ"), "--json"]
    if baseline_file is None:
        command = [sys.executable, "-c", "from meshlens.cli import main; import sys; sys.argv[0] = 'meshlens'; main()", *args]
    else:
        command = [sys.executable, "-c", SHIM, str(baseline_file), *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_cli(lake: Lake, end: datetime, baseline: ModuleType | None, *, repeat: int) -> list[dict[str, Any]]:
    """The whole command on ``lake`` (imports included), alternating after/before, best of ``repeat``."""
    files = [("after", None)] + ([("before", Path(baseline.__file__))] if baseline and baseline.__file__ else [])
    best: dict[str, tuple[float, float]] = {}
    for _ in range(max(1, repeat)):
        for label, source in files:
            wall, cpu = time_cli(lake, end, source)
            print(f"  meshlens anomalies {label}: {wall:.1f} s wall, {cpu:.1f} s CPU (load {_load()})", flush=True)
            old = best.get(label, (wall, cpu))
            best[label] = (min(old[0], wall), min(old[1], cpu))
    return [{"code": label, "wall_s": w, "cpu_s": c} for label, (w, c) in best.items()]


def to_markdown(rows: list[dict[str, Any]], *, rev: str, cli: list[dict[str, Any]] | None = None,
                load: str = "") -> str:
    """The results table, with the speed-up of each lake's 'after' over its 'before'."""
    lines = ["# anomalies: `detect` over 24 h (wall and process CPU, same run, best of the repeats)", "",
             f"baseline ('before'): analytics/anomalies.py at {rev}; load average at the start: {load}", "",
             "| lake | requests | code | wall s | CPU s | incidents | planted found | same incidents as before |",
             "|---|---:|---|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['lake']} | {r['requests']:,} | {r['code']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
                     f"| {r['incidents']} | {r['planted_found']} | {r.get('same', '')} |")
    for lake in dict.fromkeys(r["lake"] for r in rows):
        pair = {r["code"]: r for r in rows if r["lake"] == lake}
        if {"before", "after"} <= pair.keys():
            lines.append(f"\n{lake}: {pair['before']['wall_s'] / pair['after']['wall_s']:.1f}x faster wall, "
                         f"{pair['before']['cpu_s'] / pair['after']['cpu_s']:.1f}x less CPU")
    if cli:
        lines += ["", "`meshlens anomalies --json` on the demo lake (a child process: imports, lake views, detect)", "",
                  "| code | wall s | CPU s |", "|---|---:|---:|"]
        lines += [f"| {r['code']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} |" for r in cli]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-lake", type=Path, help="an existing demo lake (from `meshlens demo`)")
    parser.add_argument("--big-lake", type=Path, help="an existing 10M lake with rollups")
    parser.add_argument("--keep", type=Path, help="build the lakes here (and reuse them next time)")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-cli", action="store_true", help="do not time the whole command")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each code per lake (best kept)")
    args = parser.parse_args(argv)
    load = _load()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-anomalies-"))
    root.mkdir(parents=True, exist_ok=True)
    lakes = [_demo_entry(args.demo_lake, root)]
    if not args.skip_big:
        big = Lake(args.big_lake) if args.big_lake else build_big(root)
        lakes.append(("10M", big, BIG_END, None))
    baseline = None if args.skip_baseline else baseline_module(args.baseline_rev)
    rows = run(lakes, baseline, repeat=args.repeat)
    cli = None if args.skip_cli else run_cli(lakes[0][1], lakes[0][2], baseline, repeat=args.repeat)
    text = to_markdown(rows, rev=args.baseline_rev if baseline else "(not run)", cli=cli, load=load)
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
