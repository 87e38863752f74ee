"""Benchmark: question -> SQL translation time, and end-to-end answer time at 10M requests.

1. Translation: every question of tests/nlq_questions.json through the offline parser against
   the demo topology's names (no lake, no SQL run); median of 5 runs each. Target < 50 ms.
2. End to end: 10M synthetic requests of one day (bench.metrics.synthesize, 300 services with
   Zipf traffic), rollups built, then ``nlq.ask.ask`` on a 2-thread DuckDB connection for one
   question per category (parse, guard, run, rows). Median of 3 warm runs, and the cold first
   run. Target < 500 ms per question, < 2 s for a diagnosis.

    python -m bench.nlq [--rows 10000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from meshlens import catalog
from meshlens.lake import Lake
from meshlens.timewin import parse_instant
from nlq import offline
from nlq.entities import Vocabulary

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "nlq.md"
QUESTIONS = ROOT / "tests" / "nlq_questions.json"
E2E = (
    ("topology", "who calls Svc000?"),
    ("topology", "what does Svc001 call?"),
    ("access", "which principals accessed Svc005?"),
    ("volume", "how many requests did Svc000 get?"),
    ("volume", "peak per-minute request rate of Svc002"),
    ("errors", "error rate of Svc000 by version"),
    ("errors", "which service had the most errors"),
    ("latency", "p99 latency of Svc000"),
    ("latency", "p95 of Svc150 between 14:00 and 15:00 on Nov 10"),
    ("topk", "top 5 services by error count"),
    ("compare", "compare Svc000 error rate in the last 12 hours with the previous 12 hours"),
    ("series", "requests per hour to Svc000"),
    ("diagnosis", "why is Svc000 failing?"),
    ("diagnosis", "why is my canary failing?"),
)


def translation_times() -> list[float]:
    """Milliseconds per question (median of 5) of the offline parser."""
    from sample_logs.topology import services

    names = [s.name for s in services()]
    vocab = Vocabulary(services=names, versions=["v1", "v2"], envs=["prod", "staging"],
                       routes=["/v1/charges/{id}", "/orders/{id}"], principals=[])
    items = json.loads(QUESTIONS.read_text())
    out = []
    for item in items:
        now = parse_instant(item.get("now", "2026-11-11T00:00:00Z"))
        offline.translate(item["q"], now=now, vocab=vocab, rollups=True)
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            offline.translate(item["q"], now=now, vocab=vocab, rollups=True)
            runs.append((time.perf_counter() - started) * 1000)
        out.append(statistics.median(runs))
    return out


def end_to_end(root: Path, rows: int) -> list[dict[str, Any]]:
    """Synthesize ``rows`` requests, build rollups, time one question per category."""
    from analytics import rollup
    from bench.metrics import DAY, synthesize
    from nlq.ask import ask

    lake = Lake(root / "lake")
    started = time.perf_counter()
    if not lake.has_files("rollups/edges_1h"):  # a kept lake (--keep) is reused as it is
        synthesize(lake, rows=rows)
        rollup.rebuild(lake)
    setup_s = time.perf_counter() - started
    conn = catalog.connect(lake, threads=2)
    now = DAY + timedelta(days=1)
    out = []
    for category, question in E2E:
        started = time.perf_counter()
        answer = ask(conn, question, now=now)
        cold = (time.perf_counter() - started) * 1000
        warm = []
        for _ in range(3):
            started = time.perf_counter()
            ask(conn, question, now=now)
            warm.append((time.perf_counter() - started) * 1000)
        target = 2000 if category == "diagnosis" else 500
        found = re.search(r"FROM\s+([a-z_0-9]+)", answer.sql)
        source = found.group(1) if found else "-"
        out.append({"category": category, "question": question, "cold_ms": round(cold, 1),
                    "warm_ms": round(statistics.median(warm), 1), "target_ms": target,
                    "ok": "yes" if statistics.median(warm) < target else "NO", "rows": len(answer.rows),
                    "source": source, "error": answer.error or ""})
    conn.close()
    print(f"setup (synthesize + rollups) {setup_s:.1f} s", flush=True)
    return out


def to_markdown(results: list[dict[str, Any]]) -> str:
    """A Markdown table of result rows."""
    cols = list(results[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run both benchmarks and write bench/results/nlq.md."""
    parser = argparse.ArgumentParser(description="NLQ translation and answer times")
    parser.add_argument("--rows", type=int, default=10_000_000, help="requests to synthesize")
    parser.add_argument("--keep", type=Path, default=None, help="build the lake here and keep it")
    args = parser.parse_args(argv)
    times = sorted(translation_times())
    summary = [{"questions": len(times), "median_ms": round(statistics.median(times), 2),
                "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2), "max_ms": round(times[-1], 2),
                "target_ms": 50, "ok": "yes" if times[-1] < 50 else "NO"}]
    print(to_markdown(summary), flush=True)
    root = args.keep or Path(tempfile.mkdtemp(prefix="meshlens-bench-nlq-"))
    try:
        e2e = end_to_end(root, args.rows)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    text = (f"# NLQ benchmark\n\n## Offline translation (question -> SQL)\n\n{to_markdown(summary)}\n\n"
            f"## End to end at {args.rows / 1e6:g}M requests (2 DuckDB threads, rollups built)\n\n"
            f"{to_markdown(e2e)}\n")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
