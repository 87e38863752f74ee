"""`meshlens serve` over loopback: responses, limits, token, gzip, durability across SIGKILL."""

from __future__ import annotations

import gzip
import json
import signal
import threading
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ingest import otlp, spool
from ingest.receiver import Receiver, ReceiverConfig
from meshlens import catalog
from meshlens.lake import Lake
from tests.traces_support import make_request, serve, span_ids

NEVER = {"receiver_flush_seconds": 3600, "receiver_flush_spans": 10_000_000}


def _lake_span_ids(data: Path) -> list[str]:
    conn = catalog.connect(Lake(data))
    return [r[0] for r in conn.execute("SELECT span_id FROM spans").fetchall()]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One receiver with a small body limit, shared by the response tests."""
    data = tmp_path_factory.mktemp("serve") / "lake"
    served = serve(data, settings={**NEVER, "receiver_max_body_bytes": 200_000})
    yield served, data
    served.stop()


def test_protobuf_and_json_are_accepted(server) -> None:  # type: ignore[no-untyped-def]
    served, _ = server
    status, headers, body = served.post(make_request(service="a", spans=3, seed=11).SerializeToString())
    assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
    assert not ExportTraceServiceResponse.FromString(body).HasField("partial_success")
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "ab" * 16, "spanId": "cd" * 8, "kind": 2,
                                                          "startTimeUnixNano": "1794268800000000000"}]}]}]}
    status, headers, body = served.post(json.dumps(doc).encode(), content_type="application/json")
    assert (status, json.loads(body)) == (200, {})


def test_partial_success_counts_rejected_spans(server) -> None:  # type: ignore[no-untyped-def]
    served, _ = server
    request = make_request(service="a", spans=4, seed=12)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = b"\x00" * 16
    spans[2].span_id = b"\x01\x02"
    status, _, body = served.post(request.SerializeToString())
    response = ExportTraceServiceResponse.FromString(body)
    assert status == 200 and response.partial_success.rejected_spans == 2
    assert "trace_id" in response.partial_success.error_message
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "cd" * 8}]}]}]}
    status, _, body = served.post(json.dumps(doc).encode(), content_type="application/json")
    assert status == 200 and json.loads(body)["partialSuccess"]["rejectedSpans"] == "1"


def test_a_rejected_json_resource_counts_every_span_it_holds(server) -> None:  # type: ignore[no-untyped-def]
    served, _ = server
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "kind": 2, "startTimeUnixNano": "1794268800000000000"}
    lost = [{**span, "spanId": f"{i:016x}"} for i in range(1, 4)]
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]},
                             {"resource": "not an object", "scopeSpans": [{"spans": lost[:2]}, {"spans": lost[2:]}]}]}
    status, _, body = served.post(json.dumps(doc).encode(), content_type="application/json")
    partial = json.loads(body)["partialSuccess"]
    assert status == 200 and partial["rejectedSpans"] == "3"
    assert "resource is not an object" in partial["errorMessage"]


def test_gzip_bodies(server) -> None:  # type: ignore[no-untyped-def]
    served, _ = server
    status, _, _ = served.post_gzip(make_request(service="gz", spans=5, seed=13).SerializeToString())
    assert status == 200
    status, _, _ = served.post(b"\x1f\x8b not gzip", headers={"Content-Encoding": "gzip"})
    assert status == 400


@pytest.mark.parametrize("body,content_type", [(b"\x0a\xff\xff\xff", "application/x-protobuf"),
                                               (b"{not json", "application/json"),
                                               (b'{"resourceLogs": []}', "application/json")])
def test_undecodable_bodies_get_400(server, body: bytes, content_type: str) -> None:  # type: ignore[no-untyped-def]
    served, _ = server
    assert served.post(body, content_type=content_type)[0] == 400


def test_413_above_the_limit_also_after_gunzip(server) -> None:  # type: ignore[no-untyped-def]
    served, _ = server
    big = make_request(service="big", spans=2500, seed=14, attrs={"pad": "x" * 60}).SerializeToString()
    assert len(big) > 200_000 and len(gzip.compress(big)) < 200_000
    assert served.post(big)[0] == 413
    assert served.post_gzip(big)[0] == 413


def test_415_404_405(server) -> None:  # type: ignore[no-untyped-def]
    served, _ = server
    assert served.post(b"x", content_type="text/plain")[0] == 415
    assert served.post(b"x", headers={"Content-Encoding": "br"})[0] == 415
    assert served.post(b"x", path="/v1/logs")[0] == 404
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    conn.request("GET", "/v1/traces")
    assert conn.getresponse().status == 405


@pytest.mark.slow
def test_token_required_when_configured(tmp_path: Path) -> None:
    served = serve(tmp_path / "lake", settings=NEVER, token="s3cret")
    try:
        body = make_request(service="t", spans=2, seed=15).SerializeToString()
        status, headers, _ = served.post(body)
        assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
        assert served.post(body, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert served.post(body, headers={"Authorization": "Bearer s3cret"})[0] == 200
    finally:
        assert served.stop() == 0
    assert sorted(_lake_span_ids(tmp_path / "lake")) == sorted(span_ids(make_request(service="t", spans=2, seed=15)))


@pytest.mark.slow
def test_sigterm_publishes_pending_spans(tmp_path: Path) -> None:
    served = serve(tmp_path / "lake", settings=NEVER)
    request = make_request(service="term", spans=50, seed=16)
    assert served.post(request.SerializeToString())[0] == 200
    assert _lake_span_ids(tmp_path / "lake") == []  # nothing published before the trigger
    assert served.stop(signal.SIGTERM) == 0
    assert sorted(_lake_span_ids(tmp_path / "lake")) == sorted(span_ids(request))


@pytest.mark.slow
def test_time_trigger_publishes(tmp_path: Path) -> None:
    import time

    served = serve(tmp_path / "lake", settings={"receiver_flush_seconds": 0.3})
    try:
        request = make_request(service="timer", spans=10, seed=17)
        assert served.post(request.SerializeToString())[0] == 200
        deadline = time.monotonic() + 20
        while len(_lake_span_ids(tmp_path / "lake")) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(_lake_span_ids(tmp_path / "lake")) == sorted(span_ids(request))
    finally:
        served.stop()


@pytest.mark.slow
def test_sigkill_after_acks_loses_nothing_and_stores_nothing_twice(tmp_path: Path) -> None:
    data = tmp_path / "lake"
    served = serve(data, settings=NEVER)
    requests = [make_request(service=f"s{i % 3}", spans=40, seed=100 + i) for i in range(24)]
    acked: list[str] = []
    lock = threading.Lock()

    def send(chunk: list) -> None:  # type: ignore[type-arg]
        for request in chunk:
            if served.post(request.SerializeToString())[0] == 200:
                with lock:
                    acked.extend(span_ids(request))

    threads = [threading.Thread(target=send, args=(requests[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    served.stop(signal.SIGKILL)
    assert len(acked) == 24 * 40
    assert _lake_span_ids(data) == []  # killed before any publication: all of it is in the spool
    restarted = serve(data, settings=NEVER)  # replays the spool before listening
    assert sorted(_lake_span_ids(data)) == sorted(acked)
    assert restarted.stop() == 0
    again = serve(data, settings=NEVER)
    assert again.stop() == 0
    assert sorted(_lake_span_ids(data)) == sorted(acked)


def test_replay_after_a_crash_mid_publish_is_idempotent(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    config = ReceiverConfig(**{"flush_seconds": 3600.0, "flush_spans": 10**9})
    first = Receiver(lake, config=config)
    requests = [make_request(service="m", spans=30, seed=200 + i, start_ns=1794268800000000000 + i * 86_400 * 10**9)
                for i in range(3)]  # three dates: the publication writes three files
    for request in requests:
        assert first.accept(request.SerializeToString(), kind=spool.KIND_PROTOBUF).status == 200
    segment = first.spool.rotate()
    assert segment is not None
    # the crash: the first of three date files written, no manifest entry, segment not deleted
    partial = otlp.decode_body(requests[0].SerializeToString(), content_type="application/x-protobuf")
    otlp.publish_spans(lake, partial.to_table(source_format="otlp_http", source_file="x"), [],
                       stem=segment.name, source_file="x", source_format="otlp_http")
    assert len(_lake_span_ids(lake.root)) == 30
    second = Receiver(lake, config=config)
    assert second.replay() == 90
    assert sorted(_lake_span_ids(lake.root)) == sorted(i for r in requests for i in span_ids(r))
    assert Receiver(lake, config=config).replay() == 0


@pytest.mark.slow
def test_back_pressure_503_with_retry_after(tmp_path: Path) -> None:
    settings = {**NEVER, "receiver_max_pending_bytes": 30_000}
    served = serve(tmp_path / "lake", settings=settings)
    try:
        small = make_request(service="bp", spans=10, seed=18).SerializeToString()
        big = make_request(service="bp", spans=700, seed=19).SerializeToString()
        assert len(small) < 15_000 and len(small) + len(big) > 30_000  # pending stays under half: no early publish
        assert served.post(small)[0] == 200
        status, headers, _ = served.post(big)
        assert status == 503 and int(headers["Retry-After"]) >= 1
    finally:
        served.stop()
    assert len(_lake_span_ids(tmp_path / "lake")) == 10


def test_spool_torn_tail_is_ignored(tmp_path: Path) -> None:
    box = spool.Spool(tmp_path / "spool")
    box.append(spool.KIND_JSON, b"{}")
    box.append(spool.KIND_PROTOBUF, b"abc")
    segment = box.rotate()
    assert segment is not None
    with open(segment.path, "ab") as handle:
        handle.write(b"OTp\x00\x00\x00\x09\x00\x00")  # a record cut short by a crash
    assert list(spool.read_segment(segment.path)) == [(b"j", b"{}"), (b"p", b"abc")]


def test_acknowledgement_counts_exactly_the_spans_publishing_rejects(tmp_path: Path) -> None:
    """A span without a start time among valid spans (also one hidden behind another span's
    repeated start time): the ack's rejected count is what the lake's quarantine gets."""
    from ingest import otlp_wire
    from tests.traces_support import BASE_NS

    lake = Lake(tmp_path / "lake")
    receiver = Receiver(lake, config=ReceiverConfig(**{"flush_seconds": 3600.0, "flush_spans": 10**9}))
    plain = make_request(service="x", spans=6, seed=31)
    plain.resource_spans[0].scope_spans[0].spans[4].ClearField("start_time_unix_nano")
    hidden = make_request(service="x", spans=5, seed=32)
    hidden.resource_spans[0].scope_spans[0].spans[0].ClearField("start_time_unix_nano")
    outer = otlp_wire.OuterRequest.FromString(hidden.SerializeToString())
    spans = outer.resource_spans[0].scope_spans[0].spans
    spans[3] = spans[3] + b"\x39" + (BASE_NS + 7).to_bytes(8, "little")  # a second start time
    outcomes = [receiver.accept(body, kind=spool.KIND_PROTOBUF)
                for body in (plain.SerializeToString(), outer.SerializeToString())]
    assert [(o.status, o.rejected) for o in outcomes] == [(200, 1), (200, 1)]
    assert all("startTimeUnixNano is missing" in o.message for o in outcomes)
    receiver.flush()
    receiver.close()
    assert len(_lake_span_ids(lake.root)) == (6 - 1) + (5 - 1)
    import pyarrow.parquet as pq

    reasons = [r for f in lake.quarantine_dir().glob("*.parquet") for r in pq.read_table(f).column("reason").to_pylist()]
    assert reasons == ["span: startTimeUnixNano is missing"] * 2
