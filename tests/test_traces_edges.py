"""The `edges` view: span pairs, uninstrumented callees, messaging, and the join with logs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa

from ingest.otlp_common import SpanColumns, resource_from_attributes
from meshlens import catalog, schema
from meshlens.lake import Lake

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=timezone.utc)
T0_NS = int(T0.timestamp()) * 10**9


class Trace:
    """Builds spans by hand: (service, kind, parent) -> rows of the spans table."""

    def __init__(self, trace_no: int) -> None:
        self.trace_id = f"{trace_no:032x}"
        self.columns = SpanColumns()
        self.next_id = 1

    def span(self, service: str, kind: str, *, parent: str = "", ms: float = 10.0, error: bool = False,
             attrs: dict[str, object] | None = None) -> str:
        span_id = f"{self.next_id:04x}{int(self.trace_id, 16) % 65536:04x}{'0' * 7}1"
        self.next_id += 1
        resource = resource_from_attributes({"service.name": service})
        self.columns.add(
            resource, trace_id=self.trace_id, span_id=span_id, parent_span_id=parent, name="op", kind=kind,
            start_ns=T0_NS, end_ns=T0_NS + int(ms * 1e6), status_code="ERROR" if error else "UNSET",
            status_message=None, attrs=attrs or {}, exception=(None, None),
        )
        return span_id


def _write(lake: Lake, traces: list[Trace]) -> None:
    columns = SpanColumns()
    for trace in traces:
        columns.extend(trace.columns)
    lake.write_partitioned("spans", columns.to_table(source_format="test", source_file="t"),
                           ts_column="start_ts", stem="t")


def _edges(lake: Lake) -> dict[tuple[str, str], dict[str, object]]:
    conn = catalog.connect(lake)
    cursor = conn.execute("SELECT * FROM edges")
    names = [d[0] for d in cursor.description]
    return {(r[0], r[1]): dict(zip(names, r)) for r in cursor.fetchall()}


def test_client_server_pairs_orphans_and_messaging(tmp_lake: Lake) -> None:
    traces = []
    for n in range(4):
        t = Trace(n + 1)
        root = t.span("checkout", "SERVER")
        call = t.span("checkout", "CLIENT", parent=root, ms=30, error=n == 0)
        t.span("payment", "SERVER", parent=call, ms=20, error=n == 0)
        t.span("payment", "CLIENT", parent=t.span("payment", "INTERNAL"), attrs={"peer.service": "ledger"}, ms=5)
        t.span("checkout", "CLIENT", parent=root, attrs={"server.address": "api.stripe.com"})
        produce = t.span("checkout", "PRODUCER", parent=root)
        t.span("mailer", "CONSUMER", parent=produce)
        traces.append(t)
    no_client = Trace(99)  # a caller without client instrumentation: its INTERNAL span is the parent
    no_client.span("shipping", "SERVER", parent=no_client.span("checkout", "INTERNAL"))
    _write(tmp_lake, traces + [no_client])

    edges = _edges(tmp_lake)
    assert set(edges) == {("checkout", "payment"), ("payment", "ledger"), ("checkout", "api.stripe.com"),
                          ("checkout", "mailer"), ("checkout", "shipping")}
    pay = edges[("checkout", "payment")]
    assert (pay["trace_requests"], pay["trace_errors"], pay["seen_in"]) == (4, 1, "traces")
    assert (pay["client_p50_ms"], pay["server_p50_ms"], pay["callee_uninstrumented"]) == (30.0, 20.0, False)
    ledger = edges[("payment", "ledger")]
    assert (ledger["trace_requests"], ledger["client_p50_ms"], ledger["server_p50_ms"]) == (4, 5.0, None)
    assert ledger["callee_uninstrumented"] is True
    assert edges[("checkout", "mailer")]["trace_requests"] == 4
    shipping = edges[("checkout", "shipping")]
    assert (shipping["trace_requests"], shipping["client_p50_ms"]) == (1, None)


def test_edges_seen_in_logs_traces_or_both(tmp_lake: Lake) -> None:
    t = Trace(7)
    t.span("payment", "SERVER", parent=t.span("checkout", "CLIENT"))
    t.span("search", "SERVER", parent=t.span("frontend", "CLIENT"))
    _write(tmp_lake, [t])
    requests = pa.table({
        "ts": pa.array([T0, T0 + timedelta(minutes=1), T0], schema.TS),
        "caller": ["checkout", "checkout", "cart"], "service": ["payment", "payment", "stock"],
    })
    tmp_lake.write_partitioned("requests", schema.conform(requests, schema.REQUESTS), ts_column="ts", stem="r")
    edges = _edges(tmp_lake)
    assert {k: (v["seen_in"], v["log_requests"], v["trace_requests"]) for k, v in edges.items()} == {
        ("checkout", "payment"): ("both", 2, 1),
        ("frontend", "search"): ("traces", 0, 1),
        ("cart", "stock"): ("logs", 1, 0),
    }
    assert edges[("cart", "stock")]["callee_uninstrumented"] is None
