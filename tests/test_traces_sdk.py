"""The real OpenTelemetry Python SDK exports a simulated multi-service app to `meshlens serve`.

Four instrumented services (one TracerProvider each, its own service.name) call each other with
W3C trace-context propagation (CLIENT span -> SERVER child); payment also calls an
uninstrumented ledger named only by ``peer.service``. Some payments fail with a recorded
exception. The simulation counts what it did; the lake must say the same.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from meshlens import catalog
from meshlens.lake import Lake
from tests.traces_support import serve

SERVICES = ("frontend", "checkout", "payment", "inventory")
OLD_CONVENTIONS = {"inventory"}  # this one still emits http.status_code / http.method / http.target
TOKEN = "sim-token"


class Simulation:
    """The app: services as functions, the network as a carrier dict; counts as ground truth."""

    def __init__(self, endpoint: str, *, seed: int) -> None:
        self.rng = random.Random(seed)
        self.propagator = TraceContextTextMapPropagator()
        self.providers = {s: self._provider(s, endpoint) for s in SERVICES}
        self.tracers = {s: p.get_tracer("simulation") for s, p in self.providers.items()}
        self.calls: Counter[tuple[str, str]] = Counter()
        self.failed_calls: Counter[tuple[str, str]] = Counter()
        self.error_spans: Counter[str] = Counter()
        self.exceptions = 0
        self.spans = 0

    def _provider(self, service: str, endpoint: str) -> TracerProvider:
        resource = Resource.create({"service.name": service, "service.version": "1.4.2",
                                    "deployment.environment.name": "sim"})
        provider = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(endpoint=endpoint, headers={"Authorization": f"Bearer {TOKEN}"},
                                    compression=Compression.Gzip, timeout=30)
        provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64, schedule_delay_millis=200))
        return provider

    def run(self, requests: int) -> None:
        for i in range(requests):
            self.handle("frontend", "/shop", None, fail=False, index=i)

    def shutdown(self) -> None:
        for provider in self.providers.values():
            provider.shutdown()  # flushes: every span is sent and acknowledged

    def call(self, caller: str, callee: str, route: str, *, fail: bool, index: int) -> int:
        attrs = _http_attrs(caller, method="POST") | {"server.address": f"{callee}.svc", "url.full": f"http://{callee}.svc{route}/{index}"}
        with self.tracers[caller].start_as_current_span(f"POST {route}", kind=SpanKind.CLIENT, attributes=attrs) as span:
            self.spans += 1
            carrier: dict[str, str] = {}
            self.propagator.inject(carrier)
            status = self.handle(callee, route, carrier, fail=fail, index=index)
            span.set_attribute(_status_key(caller), status)
            self.calls[(caller, callee)] += 1
            if status >= 400:
                span.set_status(Status(StatusCode.ERROR))
                self.failed_calls[(caller, callee)] += 1
                self.error_spans[caller] += 1
        return status

    def handle(self, service: str, route: str, carrier: dict[str, str] | None, *, fail: bool, index: int) -> int:
        context = self.propagator.extract(carrier) if carrier is not None else None
        attrs = _http_attrs(service, method="POST") | {"http.route": route}
        with self.tracers[service].start_as_current_span(f"POST {route}", context=context, kind=SpanKind.SERVER, attributes=attrs) as span:
            self.spans += 1
            status = self._work(service, fail=fail, index=index)
            if status == 500 and service == "payment":
                try:
                    raise ValueError(f"card declined for order {index}")
                except ValueError as exc:
                    span.record_exception(exc)
                    self.exceptions += 1
            span.set_attribute(_status_key(service), status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, "failed"))
                self.error_spans[service] += 1
        return status

    def _work(self, service: str, *, fail: bool, index: int) -> int:
        if service == "frontend":
            if index % 7 == 0:
                self.call("frontend", "inventory", "/stock", fail=False, index=index)
            return 200 if self.call("frontend", "checkout", "/orders", fail=False, index=index) < 500 else 502
        if service == "checkout":
            paid = self.call("checkout", "payment", "/charges", fail=self.rng.random() < 0.2, index=index)
            self.call("checkout", "inventory", "/reserve", fail=False, index=index)
            return 200 if paid < 500 else 502
        if service == "payment":
            self._ledger(index)
            return 500 if fail else 200
        return 200

    def _ledger(self, index: int) -> None:
        """An uninstrumented dependency: a CLIENT span named by peer.service, no SERVER child."""
        attrs = {"peer.service": "ledger", "net.peer.name": "ledger.internal", "db.system": "postgresql"}
        with self.tracers["payment"].start_as_current_span("INSERT ledger", kind=SpanKind.CLIENT, attributes=attrs):
            self.spans += 1
            self.calls[("payment", "ledger")] += 1


def _http_attrs(service: str, *, method: str) -> dict[str, Any]:
    return {"http.method": method} if service in OLD_CONVENTIONS else {"http.request.method": method}


def _status_key(service: str) -> str:
    return "http.status_code" if service in OLD_CONVENTIONS else "http.response.status_code"


@pytest.mark.slow
def test_sdk_export_to_serve_gives_the_simulated_graph(tmp_path: Path) -> None:
    data = tmp_path / "lake"
    served = serve(data, token=TOKEN, settings={"receiver_flush_seconds": 0.5, "receiver_flush_spans": 200})
    try:
        sim = Simulation(f"http://127.0.0.1:{served.port}/v1/traces", seed=3)
        sim.run(60)
        sim.shutdown()
    finally:
        assert served.stop(signal.SIGTERM) == 0
    conn = catalog.connect(Lake(data))

    assert conn.execute("SELECT count(*), count(DISTINCT span_id) FROM spans").fetchone() == (sim.spans, sim.spans)
    edges = conn.execute(
        "SELECT caller, callee, trace_requests, trace_errors, seen_in, callee_uninstrumented, "
        "client_p50_ms IS NOT NULL, server_p50_ms IS NOT NULL FROM edges").fetchall()
    assert {(r[0], r[1]): r[2] for r in edges} == dict(sim.calls)
    assert {(r[0], r[1]): r[3] for r in edges} == {k: sim.failed_calls.get(k, 0) for k in sim.calls}
    assert {r[4] for r in edges} == {"traces"}
    by_edge = {(r[0], r[1]): r[5:] for r in edges}
    assert by_edge[("payment", "ledger")] == (True, True, False)  # uninstrumented: client side only
    assert by_edge[("checkout", "payment")] == (False, True, True)  # both sides' latency

    errors = dict(conn.execute("SELECT service, count(*) FROM spans WHERE status_code = 'ERROR' GROUP BY service").fetchall())
    assert errors == dict(sim.error_spans)
    assert sim.failed_calls[("checkout", "payment")] > 0
    exceptions = conn.execute(
        "SELECT count(*) FROM spans WHERE exception_type = 'ValueError' AND service = 'payment' "
        "AND exception_message LIKE 'card declined%'").fetchone()
    assert exceptions == (sim.exceptions,)

    statuses = conn.execute(
        "SELECT service, count(*) FROM spans WHERE kind = 'SERVER' AND http_status IS NOT NULL AND method = 'POST' "
        "GROUP BY service").fetchall()
    assert dict(statuses)["inventory"] == sim.calls[("checkout", "inventory")] + sim.calls[("frontend", "inventory")]
    assert conn.execute("SELECT DISTINCT env, version FROM spans").fetchall() == [("sim", "1.4.2")]
    routes = {r[0] for r in conn.execute("SELECT DISTINCT route FROM spans WHERE kind = 'SERVER'").fetchall()}
    assert routes == {"/shop", "/orders", "/charges", "/reserve", "/stock"}
