"""Benchmark: dashboard queries from the rollups vs the same answers by DuckDB from raw rows.

For each size (10M and 50M requests, one UTC day, a few hundred services with Zipf-skewed
traffic) it synthesizes the raw ``requests`` partition directly as Parquet (vectorized numpy,
ten time-sliced files as ingest would write them), builds the rollups, then times, side by side
in one run on a 2-thread DuckDB connection:

- ``day/services``: p95 latency and error rate per service for the whole day;
- ``hour/top``: the same for the busiest service over one hour (the worst case of its kind);
- ``hour/median``: the same for a median-traffic service over one hour;
- ``day/minutes``: the busiest service's per-minute p99 series over the day (a chart);
- ``hour@30/top``: the busiest service over an hour that is not hour-aligned (14:30-15:30, a
  "last hour" panel): sixty minute tiles merged, the general merge path.

Rollup answers go through analytics.red with the sketch path forced (threshold 0); raw
answers are plain DuckDB SQL with ``quantile_disc`` (per-minute buckets by integer arithmetic
on ``epoch_us(ts)``, twice as fast as ``date_trunc`` on a TIMESTAMPTZ). The percentile error is
the largest relative difference between the two p95 (p99 for the series) over all rows.

    python -m bench.metrics [--sizes 10,50] [--keep DIR [--reuse]]

Each side runs on its own fresh connection (2 DuckDB threads, Parquet footer cache on for
both, analytics.fastpath's footer cache emptied): ``cold`` is the first query of that
connection (footers not yet parsed; files in the OS cache), ``warm`` the median of 3 more runs;
``*_proc_cold_*`` is the query run first thing in a fresh Python process (after imports and
``catalog.connect``: it also pays each library's first-use set-up). ``path`` says which code
answered: ``cells`` (analytics.fastpath: one-service queries, pyarrow + numpy, no DuckDB
statement) or ``duckdb`` (the rollup SQL path). Lakes built before the ``service_cells_*``
tables existed get them derived from their ``services_*`` files (``cells_build_s``). ``*_cpu`` is the process CPU time (all
threads): on a shared machine wall time mostly measures the other work, so the CPU columns
and ``load`` (1-minute load average when the row was measured) say how to read it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from analytics import fastpath, red, rollup
from meshlens import catalog, schema
from meshlens.lake import Lake
from meshlens.settings import Settings
from meshlens.timewin import Window

DAY = datetime(2026, 11, 10, tzinfo=timezone.utc)
SERVICES = 300
FILES = 10
RESULTS = Path(__file__).resolve().parent / "results" / "metrics.md"


def synthesize(lake: Lake, *, rows: int, seed: int = 11) -> None:
    """Write ``rows`` requests of one day into ``lake`` as FILES time-sliced Parquet files."""
    rng = np.random.default_rng(seed)
    model = _service_model(rng)
    per_file = rows // FILES
    for index in range(FILES):
        table = _chunk(rng, model, rows=per_file, index=index)
        lake.write_file(lake.table_dir("requests") / f"date={DAY.date()}" / f"bench-{index:02d}.parquet", table)


def _service_model(rng: np.random.Generator) -> dict[str, Any]:
    weights = 1.0 / np.arange(1, SERVICES + 1) ** 1.1
    names = np.array([f"Svc{i:03d}" for i in range(SERVICES)] + ["unknown"])
    return {
        "names": names,
        "weights": weights / weights.sum(),
        "callers": rng.integers(0, SERVICES + 1, size=(SERVICES, 4)),
        "n_callers": rng.integers(1, 5, size=SERVICES),
        "n_routes": rng.integers(2, 9, size=SERVICES),
        "canary": rng.random(SERVICES) < 0.2,
        "median_ms": rng.lognormal(3.0, 0.8, size=SERVICES),
        "err": rng.uniform(0.001, 0.03, size=SERVICES),
    }


def _chunk(rng: np.random.Generator, m: dict[str, Any], *, rows: int, index: int) -> pa.Table:
    span_us = 86_400_000_000 // FILES
    offsets = np.sort(rng.integers(0, span_us, size=rows)) + index * span_us
    svc = rng.choice(SERVICES, size=rows, p=m["weights"])
    caller = m["callers"][svc, rng.integers(0, 4, size=rows) % m["n_callers"][svc]]
    route = rng.integers(0, 8, size=rows) % m["n_routes"][svc]
    version = np.where(m["canary"][svc] & (rng.random(rows) < 0.1), 1, 0)
    duration = m["median_ms"][svc] * rng.lognormal(0.0, 0.6, size=rows)
    tail = rng.random(rows) < 0.01
    duration[tail] *= rng.pareto(1.5, size=int(tail.sum())) + 3
    u = rng.random(rows)
    status = np.where(u < m["err"][svc], 503, np.where(u < m["err"][svc] + 0.03, 404, 200)).astype(np.int32)
    routes = np.array([f"/r{i}/{{id}}" for i in range(8)])
    columns = {
        "ts": pa.array(offsets + int(DAY.timestamp() * 1e6), type=pa.int64()).cast(schema.TS),
        "duration_ms": pa.array(np.round(duration, 3)),
        "caller": _strings(m["names"], caller),
        "service": _strings(m["names"], svc),
        "version": _strings(np.array(["v1", "v2"]), version),
        "env": _strings(np.array(["prod", "staging"]), (svc % 10 == 9).astype(np.int64)),
        "method": _strings(np.array(["GET", "POST"]), route % 2),
        "route": _strings(routes, route),
        "status": pa.array(status),
        "bytes_in": pa.array(rng.integers(100, 2_000, size=rows)),
        "bytes_out": pa.array(rng.integers(200, 20_000, size=rows)),
    }
    return schema.conform(pa.table(columns), schema.REQUESTS)


def _strings(values: np.ndarray, index: np.ndarray) -> pa.Array:
    dictionary = pa.DictionaryArray.from_arrays(pa.array(index.astype(np.int32)), pa.array(values))
    return dictionary.cast(pa.string())


# -- the queries ---------------------------------------------------------------------------------
def raw_services(conn: Any, window: Window, service: str | None) -> pl.DataFrame:
    """p95 and error rate per service straight from raw rows."""
    where = "" if service is None else f"AND service = '{service}'"
    return conn.sql(f"""
        SELECT service, quantile_disc(duration_ms, 0.95) AS p95_ms,
               count(*) FILTER (WHERE status BETWEEN 500 AND 599) / count(*) AS error_ratio,
               count(*) AS requests
        FROM requests WHERE ts >= {red._ts(window.start)} AND ts < {red._ts(window.end)} {where}
        GROUP BY service""").pl()


def raw_minutes(conn: Any, window: Window, service: str) -> pl.DataFrame:
    """The per-minute p99 series of one service from raw rows."""
    return conn.sql(f"""
        SELECT service, epoch_us(ts) // 60000000 * 60000000 AS minute, quantile_disc(duration_ms, 0.99) AS p99_ms
        FROM requests WHERE ts >= {red._ts(window.start)} AND ts < {red._ts(window.end)}
          AND service = '{service}' GROUP BY ALL""").pl().with_columns(
        pl.col("minute").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))


@dataclass
class Timing:
    """Cold (first query of a fresh connection) and warm (median of the next runs) times."""

    cold_ms: float
    cold_cpu_ms: float
    warm_ms: float
    warm_cpu_ms: float
    result: pl.DataFrame


def _timed(lake: Lake, func: Callable[[Any], pl.DataFrame], *, repeat: int = 3) -> Timing:
    """Time ``func(conn)`` on a fresh connection: the first run, then the median of ``repeat``."""
    fastpath.clear_cache()  # a fresh connection starts without parsed footers, in DuckDB and here
    conn = catalog.connect(lake, threads=2)
    conn.execute("SET parquet_metadata_cache = true")
    runs = []
    for _ in range(repeat + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = func(conn)
        runs.append(((time.perf_counter() - started) * 1000, (time.process_time() - cpu_started) * 1000))
    conn.close()
    warm = runs[1:]
    return Timing(runs[0][0], runs[0][1], statistics.median(w for w, _ in warm),
                  statistics.median(c for _, c in warm), result)


def _error(fast: pl.DataFrame, exact: pl.DataFrame, *, on: list[str], col: str) -> float:
    joined = fast.join(exact, on=on, suffix="_raw")
    rel = ((joined[col] - joined[f"{col}_raw"]).abs() / joined[f"{col}_raw"]).max()
    return float(rel) if isinstance(rel, (int, float)) else 0.0


def run_size(root: Path, rows: int, *, reuse: bool = False) -> list[dict[str, Any]]:
    """Synthesize, roll up and time every query at one size (``reuse``: time an existing lake)."""
    lake = Lake(root / f"lake-{rows}")
    synth_s = build_s = float("nan")
    if not (reuse and lake.has_files("requests")):
        started = time.perf_counter()
        synthesize(lake, rows=rows)
        synth_s = time.perf_counter() - started
    if not (reuse and lake.has_files("rollups/services_1d")):
        started = time.perf_counter()
        rollup.rebuild(lake)
        build_s = time.perf_counter() - started
    cells_s = _ensure_cells(lake)
    day = Window(DAY, DAY + timedelta(days=1))
    hour = Window(DAY + timedelta(hours=14), DAY + timedelta(hours=15))
    rolling = Window(DAY + timedelta(hours=14, minutes=30), DAY + timedelta(hours=15, minutes=30))
    conn = catalog.connect(lake, threads=2)
    ranked = conn.sql("SELECT service FROM services_1d GROUP BY ALL ORDER BY sum(requests) DESC").pl()["service"]
    conn.close()
    top, median = ranked[0], ranked[len(ranked) // 2]
    cases = [("day/services", "services", day, None), ("hour/top", "services", hour, top),
             ("hour/median", "services", hour, median), ("hour@30/top", "services", rolling, top),
             ("day/minutes", "minutes", day, top)]
    out = []
    for name, kind, window, service in cases:
        answers = fastpath.ANSWERS[0]
        fast = _timed(lake, query(f"rollup_{kind}", window, service))
        path = "cells" if fastpath.ANSWERS[0] > answers else "duckdb"
        raw = _timed(lake, query(f"raw_{kind}", window, service))
        on = ["service"] if kind == "services" else ["service", "minute"]
        if kind == "services":
            _check_counts(fast.result, raw.result)
        err = _error(fast.result, raw.result, on=on, col="p95_ms" if kind == "services" else "p99_ms")
        procs = {side: _probe(lake, f"{side}_{kind}", window, service) for side in ("rollup", "raw")}
        out.append(_row(rows, name, fast, raw, err, synth_s, build_s) | {"path": path} | _proc_columns(procs)
                   | {"cells_build_s": round(cells_s, 1)})
    return out


FORCED = Settings({"exact_percentile_max_rows": 0})
"""Rollup answers through the sketch path even for windows small enough for exact ones."""


def query(kind: str, window: Window, service: str | None) -> Callable[[Any], pl.DataFrame]:
    """The query ``kind`` (rollup_/raw_ + services/minutes) as a function of a connection."""
    if kind == "rollup_services":
        return lambda c: red.red(c, window=window, by=["service"], service=service, settings=FORCED)
    if kind == "raw_services":
        return lambda c: raw_services(c, window, service)
    assert service is not None
    if kind == "rollup_minutes":
        return lambda c: red.minute_series(c, window=window, service=service, settings=FORCED)
    return lambda c: raw_minutes(c, window, service)


def _probe(lake: Lake, kind: str, window: Window, service: str | None) -> tuple[float, float]:
    """(wall ms, CPU ms) of the query as the first one of a fresh process (imports and connect excluded)."""
    spec = json.dumps({"lake": str(lake.root), "kind": kind, "start": window.start.isoformat(),
                       "end": window.end.isoformat(), "service": service})
    done = subprocess.run([sys.executable, "-m", "bench.metrics", "--probe", spec], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parent.parent)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return got["ms"], got["cpu"]


def probe(spec: str) -> None:
    """Run one query first thing in this process and print its wall and CPU ms as JSON."""
    args = json.loads(spec)
    window = Window(datetime.fromisoformat(args["start"]), datetime.fromisoformat(args["end"]))
    func = query(args["kind"], window, args["service"])
    conn = catalog.connect(Lake(args["lake"]), threads=2)
    conn.execute("SET parquet_metadata_cache = true")
    started, cpu_started = time.perf_counter(), time.process_time()
    func(conn)
    print(json.dumps({"ms": (time.perf_counter() - started) * 1000, "cpu": (time.process_time() - cpu_started) * 1000}))


def _proc_columns(procs: dict[str, tuple[float, float]]) -> dict[str, float]:
    (fast_ms, fast_cpu), (raw_ms, raw_cpu) = procs["rollup"], procs["raw"]
    return {"rollup_proc_cold_ms": round(fast_ms, 1), "rollup_proc_cold_cpu": round(fast_cpu, 1),
            "raw_proc_cold_ms": round(raw_ms, 1), "raw_proc_cold_cpu": round(raw_cpu, 1),
            "cpu_speedup_proc_cold": round(raw_cpu / max(fast_cpu, 0.1), 1)}


def _ensure_cells(lake: Lake) -> float:
    """Derive ``service_cells_*`` from the ``services_*`` files of dates that lack them (older lakes)."""
    started = time.perf_counter()
    missing = [d for d in rollup.raw_dates(lake) if not rollup.rollup_file(lake, "service_cells_1m", d).is_file()]
    for date in missing:
        fastpath.derive_date(lake, date)
    return time.perf_counter() - started if missing else float("nan")


def _check_counts(fast: pl.DataFrame, exact: pl.DataFrame) -> None:
    joined = fast.join(exact, on="service", suffix="_raw")
    assert joined.height == exact.height and (joined["requests"] == joined["requests_raw"]).all()


def _row(rows: int, name: str, fast: Timing, raw: Timing, err: float, synth_s: float, build_s: float) -> dict[str, Any]:
    return {
        "requests": f"{rows // 1_000_000}M", "query": name,
        "rollup_cold_ms": round(fast.cold_ms, 1), "rollup_warm_ms": round(fast.warm_ms, 1),
        "raw_cold_ms": round(raw.cold_ms, 1), "raw_warm_ms": round(raw.warm_ms, 1),
        "speedup_warm": round(raw.warm_ms / fast.warm_ms, 1),
        "rollup_cold_cpu": round(fast.cold_cpu_ms, 1), "rollup_warm_cpu": round(fast.warm_cpu_ms, 1),
        "raw_cold_cpu": round(raw.cold_cpu_ms, 1), "raw_warm_cpu": round(raw.warm_cpu_ms, 1),
        "cpu_speedup_warm": round(raw.warm_cpu_ms / max(fast.warm_cpu_ms, 0.1), 1),
        "max_pct_error": f"{err * 100:.3f}%", "source": fast.result["percentile_source"][0],
        "load": round(os.getloadavg()[0], 1), "synth_s": round(synth_s, 1), "rollup_build_s": round(build_s, 1),
    }


def to_markdown(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    cols = list(results[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write bench/results/metrics.md."""
    parser = argparse.ArgumentParser(description="rollups vs raw rows")
    parser.add_argument("--sizes", default="10,50", help="millions of requests, comma-separated")
    parser.add_argument("--keep", type=Path, default=None, help="build the lakes here and keep them")
    parser.add_argument("--reuse", action="store_true", help="with --keep: time lakes already built there")
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        probe(args.probe)
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="meshlens-bench-metrics-"))
    results: list[dict[str, Any]] = []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            results += run_size(root, size * 1_000_000, reuse=args.reuse)
            print(to_markdown(results), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    text = ("# Metrics: rollups vs raw rows (2 DuckDB threads; ms; cold = first query of a fresh "
            "connection, warm = median of 3 after it, proc_cold = first query of a fresh process; "
            "*_cpu = process CPU ms)\n\n" + to_markdown(results) + "\n")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
