"""Combined-format benchmark: `meshlens ingest` against GoAccess on the same nginx/Apache log.

One generated combined-format file (1,000,000 lines by default), three runs in the same
invocation, each in its own subprocess so that wall time and peak RSS are its own:

- GoAccess (``goaccess FILE --log-format=COMBINED -o out.json``), the baseline;
- meshlens parse only (``ingest.combined.parse`` over 250,000-line chunks: regex, types, UTC);
- meshlens ingest (``ingest.pipeline.ingest_paths``: parse, identity, routes, schema, Parquet
  partitions, manifest), the number that counts. Target: at least 5x GoAccess lines/s.

Besides wall-clock lines/s the table shows CPU seconds (user + system of the child) and lines
per CPU-second: on a shared machine a single-threaded GoAccess and a two-core meshlens get
unequal shares of the CPU, and the CPU figures say how much work each really does. meshlens's
seconds are timed inside its process (interpreter start-up excluded; CPU time includes it).

    .venv/bin/python -m bench.combined [--lines N] [--keep] [--replicate REAL_LOG]

``--replicate ../shared/samples/apache_combined/elastic-examples_apache_logs.log`` repeats the
10,000 real Apache lines instead: few distinct paths and clients, GoAccess's best case.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

RESULTS = Path(__file__).resolve().parent / "results" / "combined.md"
ROOT = Path(__file__).resolve().parents[1]
GOACCESS = shutil.which("goaccess") or "/usr/bin/goaccess"

_PATHS = ["/v1/charges/ch_{:x}", "/v1/orders/{}", "/v1/cart/{}/items", "/healthz", "/api/v2/users/{}",
          "/static/app.{:08x}.js", "/images/kibana-search.png", "/search", "/v1/inventory/sku-{}"]
_AGENTS = ["Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
           "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15",
           "okhttp/4.12.0", "kube-probe/1.30", "Go-http-client/1.1", "curl/8.5.0"]
_METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
_ID_POOL = np.random.default_rng(1).integers(1, 10**9, 20_000)
_IP_POOL = np.array([f"{a}.{b}.{c}.{d}" for a, b, c, d in np.random.default_rng(2).integers(1, 255, (50_000, 4))])
"""Ids from 20,000 values (~100k distinct paths) and clients from 50,000 addresses, like a busy
API: GoAccess keeps every distinct URL and visitor in memory and slows to a crawl when nearly
every line is a new one, which would flatter meshlens."""


def write_combined_file(path: Path, *, lines: int, seed: int = 7, batch: int = 250_000) -> None:
    """A realistic combined-format access log, one day of traffic, written in batches."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as out:
        for start in range(0, lines, batch):
            out.write(_batch(rng, min(batch, lines - start), start, lines))


def _batch(rng: np.random.Generator, n: int, offset: int, total: int) -> str:
    seconds = (offset + np.arange(n)) * 86_400 // max(total, 1)
    stamps = pl.Series((1_793_577_600 + seconds) * 1_000_000).cast(pl.Datetime("us"))
    ids = rng.choice(_ID_POOL, n)
    kinds = rng.integers(0, len(_PATHS), n)
    status = np.where(rng.random(n) < 0.02, 503, np.where(rng.random(n) < 0.06, 404, 200))
    frame = pl.DataFrame({
        "ip": _IP_POOL[rng.integers(0, len(_IP_POOL), n)],
        "time": stamps.dt.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "method": np.array(_METHODS)[rng.integers(0, len(_METHODS), n)],
        "path": [_PATHS[k].format(i) for k, i in zip(kinds, ids)],
        "status": status,
        "bytes": rng.integers(0, 50_000, n),
        "agent": np.array(_AGENTS)[rng.integers(0, len(_AGENTS), n)],
    })
    line = pl.format('{} - - [{}] "{} {} HTTP/1.1" {} {} "-" "{}"', *[pl.col(c) for c in frame.columns])
    return "\n".join(frame.select(line).to_series().to_list()) + "\n"


def replicate_file(source: Path, path: Path, *, lines: int) -> None:
    """``source`` (a real log) repeated until the file has ``lines`` lines."""
    text = source.read_bytes()
    text = text if text.endswith(b"\n") else text + b"\n"
    per_copy = text.count(b"\n")
    with open(path, "wb") as out:
        for _ in range(lines // per_copy):
            out.write(text)
        out.write(b"".join(text.splitlines(keepends=True)[: lines % per_copy]))


_PARSE_ONLY = """
import json, sys, time
from ingest import combined, sources
path = sys.argv[1]
started = time.perf_counter()
rows = rejects = 0
with open(path, "rb") as f:
    line_no, pending = 1, b""
    while True:
        block = f.read(64 << 20)
        if not block:
            break
        block = pending + block
        cut = block.rfind(b"\\n") + 1
        chunk, pending = block[:cut], block[cut:]
        parsed = combined.parse(chunk, first_line_no=line_no)
        rows += parsed.rows.height; rejects += len(parsed.rejects)
        line_no += chunk.count(b"\\n")
    if pending:
        parsed = combined.parse(pending, first_line_no=line_no)
        rows += parsed.rows.height; rejects += len(parsed.rejects)
print(json.dumps({"seconds": time.perf_counter() - started, "rows": rows, "rejected": rejects}))
"""

_INGEST = """
import json, sys, time
from meshlens.lake import Lake
from ingest.pipeline import ingest_paths
started = time.perf_counter()
summary = ingest_paths(Lake(sys.argv[2]), [sys.argv[1]], fmt="combined")
print(json.dumps({"seconds": time.perf_counter() - started, "rows": summary.rows_stored,
                  "rejected": summary.rows_rejected}))
"""


def _run(cmd: list[str]) -> tuple[float, int, float, str]:
    """Wall seconds, peak RSS (bytes), CPU seconds (user + system) and stdout of one child."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with exit code {proc.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
    return time.perf_counter() - started, usage.ru_maxrss * 1024, cpu, out


def run_goaccess(path: Path, work: Path) -> dict[str, float]:
    """GoAccess parsing the file into its JSON report."""
    seconds, rss, cpu, _ = _run([GOACCESS, str(path), "--log-format=COMBINED", "--no-progress",
                                 "--no-global-config", "-o", str(work / "goaccess.json")])
    return {"seconds": seconds, "rss": rss, "cpu": cpu}


def run_meshlens(path: Path, work: Path, *, ingest: bool) -> dict[str, float]:
    """meshlens parse-only or full ingest, timed inside the child (no interpreter start-up)."""
    script = _INGEST if ingest else _PARSE_ONLY
    lake = work / "lake"
    shutil.rmtree(lake, ignore_errors=True)
    wall, rss, cpu, out = _run([sys.executable, "-c", script, str(path), str(lake)])
    result = json.loads(out.strip().splitlines()[-1])
    return {"seconds": result["seconds"], "wall": wall, "rss": rss, "cpu": cpu, "rows": result["rows"],
            "rejected": result["rejected"]}


def _table(lines: int, runs: dict[str, dict[str, float]]) -> str:
    """Wall-clock lines/s (the target), and lines per CPU-second (robust on a busy machine)."""
    goaccess = runs["GoAccess 1.7 (baseline)"]
    base, base_cpu = lines / goaccess["seconds"], lines / goaccess["cpu"]
    out = [f"Combined-format log, {lines:,} lines, {os.cpu_count()} cores, same run.\n",
           "| run | seconds | lines/s | x GoAccess | CPU s | lines per CPU-s | x GoAccess (CPU) | peak RSS MB |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in runs.items():
        speed, per_cpu = lines / r["seconds"], lines / r["cpu"]
        out.append(f"| {name} | {r['seconds']:.2f} | {speed:,.0f} | {speed / base:.1f}x | {r['cpu']:.1f} "
                   f"| {per_cpu:,.0f} | {per_cpu / base_cpu:.1f}x | {r['rss'] / 2**20:,.0f} |")
    return "\n".join(out) + "\n"


def _run_all(path: Path, work: Path, *, lines: int) -> dict[str, dict[str, float]]:
    """The three runs, in order; meshlens must account for every line."""
    runs = {"GoAccess 1.7 (baseline)": run_goaccess(path, work),
            "meshlens parse only": run_meshlens(path, work, ingest=False),
            "meshlens ingest (parse + identity + routes + Parquet)": run_meshlens(path, work, ingest=True)}
    for name, r in runs.items():
        if "rows" in r and r["rows"] + r["rejected"] != lines:
            raise SystemExit(f"{name}: {r['rows']} rows + {r['rejected']} rejected != {lines} lines")
    return runs


def main(argv: list[str] | None = None) -> None:
    """Generate the file, run the three contenders, print and save the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the generated file and outputs")
    parser.add_argument("--replicate", type=Path, metavar="LOG",
                        help="instead of generating, repeat this real log up to --lines lines")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="meshlens-bench-combined-"))
    try:
        path = work / "access.log"
        if args.replicate:
            replicate_file(args.replicate, path, lines=args.lines)
        else:
            write_combined_file(path, lines=args.lines)
        runs = _run_all(path, work, lines=args.lines)
        source = f"`{args.replicate.name}` repeated" if args.replicate else "generated"
        table = _table(args.lines, runs).replace("Combined-format log,", f"Combined-format log ({source}),", 1)
        print(table)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        target = RESULTS.with_name(f"combined-{args.replicate.stem}.md") if args.replicate else RESULTS
        target.write_text("## Combined logs: meshlens vs GoAccess\n\n" + table)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
