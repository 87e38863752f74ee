"""Helpers of the traces tests: building OTLP requests and running `meshlens serve`."""

from __future__ import annotations

import gzip
import http.client
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2

BASE_NS = 1_794_268_800_000_000_000  # 2026-11-10T00:00:00Z


@pytest.fixture(params=["compiled", "numpy"])
def scanner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the compiled wire scanner, then with the numpy one."""
    from ingest import otlp_columnar

    if request.param == "numpy":
        monkeypatch.setattr(otlp_columnar, "COMPILED", None)
    elif otlp_columnar.COMPILED is None:
        pytest.skip("ingest._otlpscan is not built (no C compiler at install time)")
    return str(request.param)


def make_request(
    *, service: str, spans: int, seed: int, kind: int = 2, start_ns: int = BASE_NS,
    attrs: dict[str, str | int] | None = None,
) -> ExportTraceServiceRequest:
    """One request of ``spans`` spans of ``service`` with random (seeded) non-zero ids."""
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    scope = rs.scope_spans.add()
    scope.scope.name = "tests"
    for i in range(spans):
        span = scope.spans.add()
        span.trace_id = rng.randbytes(15) + b"\x01"
        span.span_id = rng.randbytes(7) + b"\x01"
        span.name = f"op{i % 7}"
        span.kind = kind
        span.start_time_unix_nano = start_ns + i * 1_000_000
        span.end_time_unix_nano = start_ns + i * 1_000_000 + 2_500_000
        for key, value in (attrs or {}).items():
            kv = span.attributes.add()
            kv.key = key
            if isinstance(value, int):
                kv.value.int_value = value
            else:
                kv.value.string_value = value
    return request


def span_ids(request: ExportTraceServiceRequest) -> list[str]:
    """Hex span ids of every span of a request."""
    return [s.span_id.hex() for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


@dataclass
class Served:
    """A running `meshlens serve` subprocess."""

    proc: subprocess.Popen[bytes]
    port: int

    def post(self, body: bytes, *, content_type: str = "application/x-protobuf",
             headers: dict[str, str] | None = None, path: str = "/v1/traces") -> tuple[int, dict[str, str], bytes]:
        """POST and return (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": content_type, **(headers or {})})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def post_gzip(self, body: bytes, **kw: object) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Encoding": "gzip", **kw.pop("headers", {})}  # type: ignore[dict-item]
        return self.post(gzip.compress(body), headers=headers, **kw)  # type: ignore[arg-type]

    def stop(self, sig: int = signal.SIGTERM, *, timeout: float = 30) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def serve(data: Path, *, settings: dict[str, object] | None = None, token: str | None = None,
          timeout: float = 60) -> Served:
    """Start `meshlens serve --port 0` on loopback and wait for its listening line."""
    env = {**os.environ, **{f"MESHLENS_{k.upper()}": str(v) for k, v in (settings or {}).items()}}
    if "receiver_token" not in (settings or {}):
        env.pop("MESHLENS_RECEIVER_TOKEN", None)
    args = [sys.executable, "-c", "from meshlens.cli import main; main()", "serve", "--data", str(data),
            "--host", "127.0.0.1", "--port", "0"]
    if token:
        args += ["--token", token]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "listening on" not in line or time.monotonic() > deadline:
        proc.kill()
        raise RuntimeError(f"meshlens serve did not start: {line!r} {proc.stderr.read().decode() if proc.stderr else ''}")
    port = int(line.rsplit(":", 1)[1].split("/", 1)[0])
    return Served(proc=proc, port=port)
