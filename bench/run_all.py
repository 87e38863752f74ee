"""`make bench`: run every benchmark side by side with its baseline and collect the results.

Each bench module has a ``main(argv)`` that prints a Markdown table and writes
``bench/results/<name>.md``; this runs them in turn (``--only NAME`` to pick some) and joins
their results into ``bench/results/ALL.md``.
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

BENCHES = ("ingest", "combined", "traces", "metrics", "canary", "nab", "nlq", "anomalies")
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", choices=BENCHES, help="run only this benchmark (repeatable)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.only or BENCHES:
        started = time.perf_counter()
        print(f"\n## bench.{name}\n", flush=True)
        module = importlib.import_module(f"bench.{name}")
        module.main([])
        print(f"\n({name}: {time.perf_counter() - started:.0f} s)", flush=True)
    parts = [p.read_text() for p in sorted(RESULTS.glob("*.md")) if p.name != "ALL.md"]
    (RESULTS / "ALL.md").write_text("\n\n".join(parts))


if __name__ == "__main__":
    main()
