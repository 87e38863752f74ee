"""Ingest benchmark: `meshlens ingest` against a bare polars scan_ndjson -> sink_parquet.

Both read the same generated VPC Lattice JSON-lines file (1,000,000 lines; also 5,000,000 with
``--big``), each in its own subprocess so that peak RSS is measured per run (``ru_maxrss`` of
the child). meshlens does all its normalisation (identity, routes, schema, partitions,
manifest); polars only decodes and writes. Target: ratio >= 0.75 and flat memory.

    .venv/bin/python -m bench.ingest [--big] [--lines N] [--keep]
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

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.md"
ROOT = Path(__file__).resolve().parents[1]

_SERVICES = [f"svc{i:03d}" for i in range(120)]
_PATHS = ["/v1/charges/ch_{}", "/orders/{}", "/cart/{}/items", "/health", "/v1/users/{}/profile", "/inventory/sku-{}"]


def write_lattice_file(path: Path, *, lines: int, seed: int = 7, batch: int = 250_000) -> None:
    """A realistic VPC Lattice JSON-lines file (all 35 fields), written in batches."""
    try:
        from sample_logs.scenario import write_bench_file  # the scenario's own, when present
    except ImportError:
        write_bench_file = None
    if write_bench_file is not None:
        write_bench_file(path, lines=lines, seed=seed)
        return
    rng = np.random.default_rng(seed)
    with open(path, "wb") as out:
        for start in range(0, lines, batch):
            frame = _batch(rng, min(batch, lines - start), start)
            buffer = frame.write_ndjson()
            out.write(buffer.encode() if isinstance(buffer, str) else buffer)


def _batch(rng: np.random.Generator, n: int, offset: int) -> pl.DataFrame:
    callee = rng.integers(0, len(_SERVICES), n)
    caller = rng.integers(0, len(_SERVICES), n)
    tg = callee * 2 + (rng.random(n) < 0.1)
    status = np.where(rng.random(n) < 0.02, 503, np.where(rng.random(n) < 0.05, 404, 200))
    ids = rng.integers(1, 10**9, n)
    path_kind = rng.integers(0, len(_PATHS), n)
    seconds = (offset + np.arange(n)) * 86400 // 5_000_000
    acct = "111111111111"
    svc_name = np.array(_SERVICES)
    frame = pl.DataFrame({
        "serviceNetworkArn": [f"arn:aws:vpc-lattice:us-east-1:{acct}:servicenetwork/sn-0e05d75deabe9f290"] * n,
        "resolvedUser": [f"arn:aws:sts::{acct}:assumed-role/{svc_name[c]}-task/abc{c}" for c in caller],
        "listenerType": "-", "authDeniedReason": "-",
        "targetGroupArn": [f"arn:aws:vpc-lattice:us-east-1:{acct}:targetgroup/tg-{t:017x}" for t in tg],
        "sourceVpcArn": f"arn:aws:ec2:us-east-1:{acct}:vpc/vpc-04157e16d89eba97b",
        "destinationVpcId": "vpc-05e207e48696b69b6",
        "sourceIpPort": [f"10.{c % 250}.{i % 250}.{i % 199}:{40000 + i % 20000}" for c, i in zip(caller, ids)],
        "listenerId": "-",
        "targetIpPort": [f"172.31.{c}.{i % 250}:8080" for c, i in zip(callee, ids)],
        "failureReason": "-",
        "serviceArn": [f"arn:aws:vpc-lattice:us-east-1:{acct}:service/svc-0{c:016x}" for c in callee],
        "sourceVpcId": "vpc-04157e16d89eba97b",
        "startTime": pl.Series((1_793_577_600 + seconds) * 1_000_000).cast(pl.Datetime("us")).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "requestMethod": np.where(rng.random(n) < 0.7, "GET", "POST"),
        "requestPath": [_PATHS[k].format(i) for k, i in zip(path_kind, ids)],
        "protocol": "HTTP/1.1", "responseCode": status,
        "bytesReceived": rng.integers(100, 2000, n), "bytesSent": rng.integers(100, 20000, n),
        "duration": rng.integers(1, 400, n), "userAgent": "Go-http-client/1.1",
        "hostHeader": [f"{svc_name[c]}-0{c:016x}.7d67968.vpc-lattice-svcs.us-east-1.on.aws" for c in callee],
        "requestToTargetDuration": rng.integers(0, 5, n), "responseFromTargetDuration": rng.integers(1, 300, n),
        "sslCipher": "ECDHE-RSA-AES128-GCM-SHA256", "tlsVersion": "TLSv1.2",
    })
    frame = frame.with_columns(
        serverNameIndication=pl.col("hostHeader"), callerPrincipal=pl.col("resolvedUser"),
        callerPrincipalOrgID=pl.lit("-"), callerX509IssuerOU=pl.lit("-"), callerX509SubjectCN=pl.lit("-"),
        callerX509SANNameCN=pl.lit("-"), callerX509SANDNS=pl.lit("-"), callerX509SANURI=pl.lit("-"),
    )
    return frame


_MESHLENS_RUN = """
import sys, time, resource, json
from pathlib import Path
from meshlens.lake import Lake
from ingest.pipeline import ingest_paths
t = time.perf_counter()
s = ingest_paths(Lake(sys.argv[2]), [sys.argv[1]])
print(json.dumps({"seconds": time.perf_counter() - t, "rows": s.rows_stored, "read": s.rows_read,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_POLARS_RUN = """
import sys, time, json, resource
import polars as pl
t = time.perf_counter()
pl.scan_ndjson(sys.argv[1]).sink_parquet(sys.argv[2])
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
rows = pl.scan_parquet(sys.argv[2]).select(pl.len()).collect().item()
print(json.dumps({"seconds": seconds, "rows": rows, "peak_rss_mib": peak}))
"""


def run_child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; its JSON result (seconds, rows, its own peak RSS)."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(lines: int, work: Path) -> dict:
    """Both runs on one generated file of ``lines`` lines."""
    source = work / f"lattice_{lines}.ndjson"
    t = time.perf_counter()
    write_lattice_file(source, lines=lines)
    print(f"generated {lines:,} lines ({source.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - t:.1f} s",
          file=sys.stderr)
    bare = run_child(_POLARS_RUN, str(source), str(work / "bare.parquet"))
    mesh = run_child(_MESHLENS_RUN, str(source), str(work / f"lake_{lines}"))
    source.unlink()
    return {"lines": lines, "bare": bare, "meshlens": mesh, "mib": 0}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write bench/results/ingest.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", action="store_true", help="also 5,000,000 lines")
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    sizes = [args.lines] + ([5_000_000] if args.big else [])
    work = Path(tempfile.mkdtemp(prefix="meshlens-bench-"))
    rows = []
    try:
        for lines in sizes:
            rows.append(measure(lines, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = _table(rows)
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table + "\n", encoding="utf-8")


def _table(rows: list[dict]) -> str:
    out = ["| lines | polars scan_ndjson→sink_parquet (lines/s) | meshlens ingest (lines/s) | ratio | "
           "peak RSS polars (MiB) | peak RSS meshlens (MiB) |", "|---|---|---|---|---|---|"]
    for r in rows:
        bare = r["lines"] / r["bare"]["seconds"]
        mesh = r["lines"] / r["meshlens"]["seconds"]
        out.append(f"| {r['lines']:,} | {bare:,.0f} | {mesh:,.0f} | {mesh / bare:.2f} | "
                   f"{r['bare']['peak_rss_mib']:,.0f} | {r['meshlens']['peak_rss_mib']:,.0f} |")
    out.append(f"\n{os.cpu_count()} CPUs; polars {pl.__version__}. Both runs in fresh subprocesses.")
    return "\n".join(out)


if __name__ == "__main__":
    main()
