"""Benchmark: dashboard queries from the rollups vs the same answers by DuckDB from raw rows.

For each size (10M and 50M requests, one UTC day, a few hundred services with Zipf-skewed
traffic) it synthesizes the raw ``requests`` partition directly as Parquet (vectorized numpy,
ten time-sliced files as ingest would write them), builds the rollups, then times, side by side
in one run on a 2-thread DuckDB connection:

- ``day/services``: p95 latency and error rate per service for the whole day;
- ``hour/top``: the same for the busiest service over one hour (the worst case of its kind);
- ``hour/median``: the same for a median-traffic service over one hour;
- ``day/minutes``: the busiest service's per-minute p99 series over the day (a chart).

Rollup answers go through analytics.red with the sketch path forced (threshold 0); raw
answers are plain DuckDB SQL with ``quantile_disc``. The percentile error is the largest
relative difference between the two p95 (p99 for the series) over all rows.

    python -m bench.metrics [--sizes 10,50] [--keep DIR [--reuse]]

Times are medians of 3 runs after a warm-up; ``*_cpu_ms`` is the process CPU time (all
threads), the honest figure when other work shares the machine.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from analytics import red, rollup
from meshlens import catalog, schema
from meshlens.lake import Lake
from meshlens.settings import Settings
from meshlens.timewin import Window

DAY = datetime(2026, 11, 10, tzinfo=timezone.utc)
SERVICES = 300
FILES = 10
RESULTS = Path(__file__).resolve().parent / "results" / "metrics.md"
CPU_MS: list[float] = []
"""CPU time (all threads) of the last timed runs: on a busy machine wall time overstates."""


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
        SELECT service, date_trunc('minute', ts) AS minute, quantile_disc(duration_ms, 0.99) AS p99_ms
        FROM requests WHERE ts >= {red._ts(window.start)} AND ts < {red._ts(window.end)}
          AND service = '{service}' GROUP BY ALL""").pl()


def _timed(func: Callable[[], pl.DataFrame], *, repeat: int = 3) -> tuple[float, pl.DataFrame]:
    """Median wall time in ms over ``repeat`` runs after one warm-up run."""
    func()  # warm the OS cache and DuckDB's metadata cache
    times, cpu, result = [], [], None
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = func()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    assert result is not None
    CPU_MS.append(statistics.median(cpu) * 1000)
    return statistics.median(times) * 1000, result


def _error(fast: pl.DataFrame, exact: pl.DataFrame, *, on: list[str], col: str) -> float:
    joined = fast.join(exact, on=on, suffix="_raw")
    rel = ((joined[col] - joined[f"{col}_raw"]).abs() / joined[f"{col}_raw"]).max()
    return float(rel) if isinstance(rel, (int, float)) else 0.0


def run_size(root: Path, rows: int, *, reuse: bool = False) -> list[dict[str, Any]]:
    """Synthesize, roll up and time every query at one size (``reuse``: time an existing lake)."""
    lake = Lake(root / f"lake-{rows}")
    synth_s = build_s = float("nan")
    if not (reuse and lake.has_files("rollups/edges_1d")):
        started = time.perf_counter()
        synthesize(lake, rows=rows)
        synth_s = time.perf_counter() - started
        started = time.perf_counter()
        rollup.rebuild(lake)
        build_s = time.perf_counter() - started
    conn = catalog.connect(lake, threads=2)
    forced = Settings({"exact_percentile_max_rows": 0})
    day = Window(DAY, DAY + timedelta(days=1))
    hour = Window(DAY + timedelta(hours=14), DAY + timedelta(hours=15))
    ranked = raw_services(conn, day, None).sort("requests", descending=True)["service"]
    top, median = ranked[0], ranked[len(ranked) // 2]
    cases = [
        ("day/services", day, None),
        ("hour/top", hour, top),
        ("hour/median", hour, median),
    ]
    out = []
    for name, window, service in cases:
        fast_ms, fast = _timed(lambda: red.red(conn, window=window, by=["service"], service=service, settings=forced))
        raw_ms, exact = _timed(lambda: raw_services(conn, window, service))
        out.append(_row(rows, name, fast_ms, raw_ms, _error(fast, exact, on=["service"], col="p95_ms"),
                        fast["percentile_source"][0], synth_s, build_s))
        _check_counts(fast, exact)
    fast_ms, fast = _timed(lambda: red.minute_series(conn, window=day, service=top, settings=forced))
    raw_ms, exact = _timed(lambda: raw_minutes(conn, day, top))
    out.append(_row(rows, "day/minutes", fast_ms, raw_ms, _error(fast, exact, on=["service", "minute"], col="p99_ms"),
                    fast["percentile_source"][0], synth_s, build_s))
    conn.close()
    return out


def _check_counts(fast: pl.DataFrame, exact: pl.DataFrame) -> None:
    joined = fast.join(exact, on="service", suffix="_raw")
    assert joined.height == exact.height and (joined["requests"] == joined["requests_raw"]).all()


def _row(rows: int, name: str, fast_ms: float, raw_ms: float, err: float, source: str,
         synth_s: float, build_s: float) -> dict[str, Any]:
    raw_cpu, fast_cpu = CPU_MS[-1], CPU_MS[-2]
    return {"requests": f"{rows // 1_000_000}M", "query": name, "rollup_ms": round(fast_ms, 1),
            "raw_ms": round(raw_ms, 1), "speedup": round(raw_ms / fast_ms, 1),
            "rollup_cpu_ms": round(fast_cpu, 1), "raw_cpu_ms": round(raw_cpu, 1),
            "max_pct_error": f"{err * 100:.3f}%", "source": source,
            "synth_s": round(synth_s, 1), "rollup_build_s": round(build_s, 1)}


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
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="meshlens-bench-metrics-"))
    results: list[dict[str, Any]] = []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            results += run_size(root, size * 1_000_000, reuse=args.reuse)
            print(to_markdown(results), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    text = "# Metrics: rollups vs raw rows (2 DuckDB threads)\n\n" + to_markdown(results) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
