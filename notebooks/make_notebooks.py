"""Write the SQL notebooks of ``notebooks/`` from the cells below (run after editing this file).

    .venv/bin/python notebooks/make_notebooks.py

The notebooks are committed as written here, without outputs; the test suite executes them
headless against the demo scenario (tests/test_dashboard_notebooks.py) so that they never rot.
Each reads the lake named by $MESHLENS_DATA (else ./meshlens-data, what `make demo` writes)
through the project's own DuckDB connection, ``meshlens.catalog.connect(Lake(path))``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''\
import os
from datetime import timedelta

import polars as pl

import analytics.rollup  # registers the rollup views (requests_1m, edges_1h, ...)
from analytics import red
from meshlens import catalog
from meshlens.lake import Lake
from meshlens.timewin import Window

lake = Lake(os.environ.get("MESHLENS_DATA", "meshlens-data"))
conn = catalog.connect(lake)
newest = red.latest_ts(conn)  # the newest request in the lake
assert newest is not None, f"the lake {lake.root} is empty: run `make demo` or `meshlens ingest` first"
end = newest.replace(second=0, microsecond=0) + timedelta(minutes=1)
window = Window(end - timedelta(hours=24), end)  # UTC, half-open [start, end)
print(f"lake {lake.root}; window {window}")
'''

INTRO = ("All times are UTC and windows half-open, [start, end). \"Errors\" are 5xx; 4xx are "
         "client errors, counted apart. The lake is `$MESHLENS_DATA` (else `./meshlens-data`).")

RED_AND_GRAPH = [
    new_markdown_cell("# RED metrics and the service graph\n\nRate, errors and duration per "
                      "service and per edge, and who calls whom. " + INTRO),
    new_code_cell(SETUP),
    new_markdown_cell("## The whole network, then per service\n`analytics.red.red` answers from "
                      "the rollups when it can (percentiles from merged latency sketches, within "
                      "1%) and from raw rows for small windows (exact percentiles); "
                      "`percentile_source` says which, `n` is the sample size."),
    new_code_cell("red.red(conn, window=window)"),
    new_code_cell('per_service = red.red(conn, window=window, by=["service"])\n'
                  'per_service.sort("errors_5xx", descending=True).select(\n'
                  '    "service", "requests", "errors_5xx", "error_ratio", "p50_ms", "p99_ms", "n", "low_sample").head(10)'),
    new_markdown_cell("## Per hour, by version\nAny key (service, caller, version, route, env, "
                      "caller_principal) and any bucket (minute, 5m, hour, day)."),
    new_code_cell('hourly = red.red(conn, window=window, by=["version"], service="PaymentService", bucket="hour")\n'
                  'hourly.select("bucket_start", "version", "requests", "error_ratio", "p99_ms").head(12)'),
    new_code_cell('import matplotlib.pyplot as plt\n\n'
                  'fig, ax = plt.subplots(figsize=(9, 3))\n'
                  'for (version,), part in hourly.partition_by("version", as_dict=True).items():\n'
                  '    ax.plot(part["bucket_start"], part["error_ratio"], label=f"PaymentService {version}")\n'
                  'ax.set_ylabel("5xx ratio"); ax.legend(); plt.show()'),
    new_markdown_cell("## The service graph\nNodes are services (plus `unknown` callers and "
                      "external dependencies); edges carry their RED metrics."),
    new_code_cell("from analytics import graph\n\n"
                  "g = graph.service_graph(conn, window=window)\n"
                  "g.edges.sort(\"requests\", descending=True).head(10)"),
    new_code_cell('graph.callers(conn, "PaymentService", window=window)'),
    new_markdown_cell("## The same with SQL\nThe `edges` view holds caller -> callee pairs from "
                      "logs and traces, with where each was seen."),
    new_code_cell('conn.sql("""\n'
                  '    SELECT caller, callee, log_requests, trace_requests, seen_in\n'
                  '    FROM edges WHERE callee = \'PaymentService\' ORDER BY log_requests DESC\n'
                  '""").pl()'),
]

CANARY = [
    new_markdown_cell("# Follow a canary\n\nA service with two versions taking traffic at the "
                      "same time is a canary: compare the canary with the baseline over the "
                      "same minutes, overall and per route. " + INTRO),
    new_code_cell(SETUP),
    new_markdown_cell("## Which services have more than one live version?"),
    new_code_cell('versions = red.red(conn, window=window, by=["service", "version"])\n'
                  'multi = versions.group_by("service").agg(pl.col("version").sort()).filter(pl.col("version").list.len() > 1)\n'
                  'multi'),
    new_markdown_cell("## The judge's verdict\nA sequential test that stays valid however often "
                      "it is looked at; the verdict comes with its evidence, the time it became "
                      "decidable and recommended traffic weights."),
    new_code_cell("from analytics import canary\n\n"
                  "verdicts = canary.judge(conn, window=window)  # every service with more than one live version\n"
                  "for v in verdicts:\n"
                  "    print(f\"{v.service} ({v.env}) {v.canary} vs {v.baseline}: {v.verdict}\")\n"
                  "    print(\"   \", v.evidence)\n"
                  "    print(\"    next weights:\", v.next_weights)"),
    new_code_cell("# The evidence per route, for the first canary\n"
                  "pl.DataFrame(verdicts[0].routes) if verdicts and verdicts[0].routes else None"),
    new_markdown_cell("## Baseline vs canary, minute by minute"),
    new_code_cell('per_5m = red.red(conn, window=window, by=["version"], service="PaymentService", bucket="5m")\n'
                  'import matplotlib.pyplot as plt\n\n'
                  'fig, ax = plt.subplots(figsize=(9, 3))\n'
                  'for (version,), part in per_5m.partition_by("version", as_dict=True).items():\n'
                  '    ax.plot(part["bucket_start"], part["error_ratio"], label=version)\n'
                  'ax.set_ylabel("5xx ratio"); ax.legend(); plt.show()'),
    new_markdown_cell("## Per route: where the regression hides"),
    new_code_cell('red.red(conn, window=window, by=["route", "version"], service="PaymentService")\\\n'
                  '    .select("route", "version", "requests", "errors_5xx", "error_ratio", "p99_ms")\\\n'
                  '    .sort(["route", "version"])'),
]

ANOMALIES = [
    new_markdown_cell("# Anomalies and their reasons\n\nA causal isolation forest over per-service "
                      "and per-edge minute features; consecutive anomalous minutes of related "
                      "series become one incident, each with its reason in words and numbers. "
                      + INTRO),
    new_code_cell(SETUP),
    new_code_cell("from analytics import anomalies\n\n"
                  "incidents = anomalies.detect(conn, window=window)\n"
                  "for incident in incidents:\n"
                  "    print(incident.summary)"),
    new_markdown_cell("## Look at one incident's minutes"),
    new_code_cell('if incidents:\n'
                  '    first = incidents[0]\n'
                  '    around = Window(first.start - timedelta(minutes=30), first.end + timedelta(minutes=30))\n'
                  '    series = red.minute_series(conn, window=around, key=["service"], service=first.services[0])\n'
                  '    display(series.select("minute", "requests", "errors_5xx", "p99_ms").head(80))'),
    new_markdown_cell("## Any metric series\nThe same detector reads a CSV `timestamp,value` or "
                      "the JSON that `aws cloudwatch get-metric-data` prints."),
    new_code_cell('minutes = red.minute_series(conn, window=window, key=["service"], service="InventoryService")\n'
                  'series = minutes.select(pl.col("minute").alias("timestamp"), pl.col("errors_5xx").cast(pl.Float64).alias("value"))\n'
                  'series.head()'),
]

OWN_SQL = [
    new_markdown_cell("# Write your own SQL\n\nThe lake is plain Parquet; `catalog.connect` "
                      "registers DuckDB views over it: `requests`, `spans`, `edges`, `services` "
                      "and the rollups. " + INTRO),
    new_code_cell(SETUP),
    new_markdown_cell("## The tables and what each column means"),
    new_code_cell("from meshlens.schema import COLUMN_DOCS\n\n"
                  "pl.DataFrame([{\"table\": t, \"column\": c, \"meaning\": m}\n"
                  "              for t, cols in COLUMN_DOCS.items() for c, m in cols.items()])"),
    new_markdown_cell("## Raw requests\nFilter on `ts` (and `date`, the partition column, to read "
                      "fewer files)."),
    new_code_cell('conn.sql("""\n'
                  '    SELECT service, count(*) AS requests,\n'
                  '           count(*) FILTER (WHERE status >= 500) AS errors_5xx,\n'
                  '           quantile_disc(duration_ms, 0.99) AS p99_ms\n'
                  '    FROM requests\n'
                  '    WHERE ts >= $start AND ts < $end\n'
                  '    GROUP BY service ORDER BY errors_5xx DESC LIMIT 10\n'
                  '""", params={"start": window.start, "end": window.end}).pl()'),
    new_markdown_cell("## Who was denied, and why"),
    new_code_cell('conn.sql("""\n'
                  '    SELECT caller, caller_principal, service, auth_denied_reason, failure_reason, count(*) AS n\n'
                  '    FROM requests WHERE status = 403 AND auth_denied_reason <> \'\'\n'
                  '    GROUP BY ALL ORDER BY n DESC\n'
                  '""").pl()'),
    new_markdown_cell("## The rollups\n`requests_1m` holds per-minute counts and latency "
                      "sketches keyed by caller, service, version, route, method, env and "
                      "status class: fast for long windows."),
    new_code_cell('conn.sql("""\n'
                  '    SELECT date_trunc(\'hour\', minute) AS hour, sum(requests) AS requests, sum(errors_5xx) AS errors_5xx\n'
                  '    FROM requests_1m WHERE service = \'InventoryService\'\n'
                  '    GROUP BY ALL ORDER BY hour\n'
                  '""").pl()'),
    new_markdown_cell("## The guarded path\nThe dashboard's SQL box and `meshlens sql` run through "
                      "`nlq.guard`: one read-only SELECT over the views, with a LIMIT and a time "
                      "limit. Anything else is refused."),
    new_code_cell("from meshlens.errors import QueryRejected\n"
                  "from meshlens.settings import Settings\n"
                  "from nlq import guard\n\n"
                  "safe = catalog.connect(lake)\n"
                  "columns, rows = guard.run_guarded(safe, \"SELECT count(*) FROM requests\", settings=Settings())\n"
                  "print(columns, rows)\n"
                  "try:\n"
                  "    guard.run_guarded(safe, \"DROP VIEW requests\", settings=Settings())\n"
                  "except QueryRejected as exc:\n"
                  "    print(\"refused:\", exc)"),
]

NOTEBOOKS = {
    "01_red_and_graph.ipynb": RED_AND_GRAPH,
    "02_follow_the_canary.ipynb": CANARY,
    "03_anomalies.ipynb": ANOMALIES,
    "04_your_own_sql.ipynb": OWN_SQL,
}


def build(cells: list) -> nbformat.NotebookNode:  # type: ignore[type-arg]
    """A notebook of ``cells`` with the Python 3 kernel."""
    notebook = new_notebook(cells=[nbformat.from_dict(dict(c)) for c in cells])
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:02d}"  # stable ids: regenerating changes nothing
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def main() -> None:
    """Write every notebook next to this file."""
    for name, cells in NOTEBOOKS.items():
        notebook = build(cells)
        nbformat.validate(notebook)
        nbformat.write(notebook, HERE / name)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
