"""OTLP files: the specification's example, protojson-style files, invalid files, conventions."""

from __future__ import annotations

import base64
import gzip
import json
import struct
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import otlp, otlp_json, otlp_proto
from meshlens import catalog, schema
from tests.traces_support import BASE_NS, make_request

SPEC_TRACE_ID = "5b8efff798038103d269b633813fc60c"


def _otlp(samples_dir: Path) -> Path:
    return samples_dir / "otlp"


def _table(data: bytes, fmt: str) -> pa.Table:
    return otlp.parse_file(data, fmt=fmt).to_table(source_format=fmt, source_file="t")


# -- the specification's example ------------------------------------------------------------

def test_spec_example_json_gives_the_hex_trace_id(samples_dir: Path) -> None:
    data = (_otlp(samples_dir) / "opentelemetry-proto_examples_trace.json").read_bytes()
    assert otlp.detect(data) == "otlp_json"
    row = _table(data, "otlp_json").to_pylist()[0]
    assert row["trace_id"] == SPEC_TRACE_ID
    assert (row["span_id"], row["parent_span_id"]) == ("eee19b7ec3c1b174", "eee19b7ec3c1b173")
    assert (row["kind"], row["service"], row["duration_ms"]) == ("SERVER", "my.service", 1000.0)


def test_spec_example_protobuf_gives_the_same_trace_id(samples_dir: Path) -> None:
    data = (_otlp(samples_dir) / "opentelemetry-proto_examples_trace.protobuf-bin").read_bytes()
    assert otlp.detect(data) == "otlp_proto"
    assert _table(data, "otlp_proto").column("trace_id").to_pylist() == [SPEC_TRACE_ID]


def test_spec_example_text_encodes_to_the_same_trace_id(samples_dir: Path) -> None:
    from google.protobuf import text_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    text = (_otlp(samples_dir) / "opentelemetry-proto_examples_trace.protobuf-text").read_text()
    message = text_format.Parse(text, ExportTraceServiceRequest())
    assert _table(message.SerializeToString(), "otlp_proto").column("trace_id").to_pylist() == [SPEC_TRACE_ID]


def test_json_format_parse_pitfall_is_avoided(samples_dir: Path) -> None:
    """json_format.Parse reads hex as base64; our reader must not agree with it."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    data = (_otlp(samples_dir) / "opentelemetry-proto_examples_trace.json").read_text()
    garbage = json_format.Parse(data, ExportTraceServiceRequest()).resource_spans[0].scope_spans[0].spans[0]
    assert garbage.trace_id.hex() != SPEC_TRACE_ID
    assert _table(data.encode(), "otlp_json").column("trace_id")[0].as_py() == SPEC_TRACE_ID


# -- protojson-style files (base64 ids, enum names) -------------------------------------------

@pytest.mark.parametrize("json_name,pb_name", [("trace.json", "trace.pb"), ("traces.jsonl", "traces.pb")])
def test_protojson_files_match_their_protobuf_twins(samples_dir: Path, json_name: str, pb_name: str) -> None:
    folder = _otlp(samples_dir) / "otlp2parquet"
    from_json = _table((folder / json_name).read_bytes(), "otlp_json")
    from_pb = _table((folder / pb_name).read_bytes(), "otlp_proto")
    expected_ids = _base64_span_ids(folder / json_name)
    assert sorted(from_json.column("span_id").to_pylist()) == sorted(expected_ids)
    drop = ["source_format", "source_file"]
    assert from_json.drop(drop).to_pylist() == from_pb.drop(drop).to_pylist()


def _base64_span_ids(path: Path) -> list[str]:
    """Span ids decoded independently of the reader (plain base64 of each spanId)."""
    ids = []
    for line in path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]:
        if line.strip():
            for rs in json.loads(line)["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    ids += [base64.b64decode(s["spanId"]).hex() for s in ss["spans"]]
    return ids


def test_envoy_capture_reads_old_conventions(samples_dir: Path) -> None:
    rows = _table((_otlp(samples_dir) / "otlp2parquet" / "trace.json").read_bytes(), "otlp_json").to_pylist()
    kinds = sorted(r["kind"] for r in rows)
    assert kinds == ["CLIENT", "SERVER"]
    assert {r["service"] for r in rows} == {"frontend-proxy"}
    assert all(r["http_status"] == 200 for r in rows)  # http.status_code given as the string "200"
    assert all(r["trace_id"] == "9d79b1a37f31801cd11a6706fb40d6bd" for r in rows)


def test_every_invalid_file_is_rejected_with_a_reason(samples_dir: Path) -> None:
    files = sorted((_otlp(samples_dir) / "otlp2parquet" / "invalid").glob("*.json"))
    assert files
    for path in files:
        columns = otlp.parse_file(path.read_bytes(), fmt="otlp_json")
        assert len(columns) == 0, path.name
        assert columns.rejects and all(reason for _, reason, _ in columns.rejects), path.name


def test_invalid_files_are_quarantined_by_ingest(samples_dir: Path, tmp_lake) -> None:  # type: ignore[no-untyped-def]
    for path in sorted((_otlp(samples_dir) / "otlp2parquet" / "invalid").glob("trace_*.json")):
        result = otlp.ingest_span_file(tmp_lake, path, path.read_bytes())
        assert (result.rows_stored, result.rows_rejected) == (0, 1), path.name
    import pyarrow.parquet as pq

    reasons = [r for f in tmp_lake.quarantine_dir().glob("*.parquet") for r in pq.read_table(f).column("reason").to_pylist()]
    assert len(reasons) == 3 and any("kind" in r for r in reasons) and any("traceId" in r for r in reasons)


# -- ingest_span_file ---------------------------------------------------------------------------

def test_ingest_span_file_writes_spans_once(tmp_path: Path, tmp_lake) -> None:  # type: ignore[no-untyped-def]
    request = make_request(service="checkout", spans=20, seed=1)
    path = tmp_path / "batch.pb.gz"
    path.write_bytes(gzip.compress(request.SerializeToString()))
    first = otlp.ingest_span_file(tmp_lake, path, path.read_bytes())
    second = otlp.ingest_span_file(tmp_lake, path, path.read_bytes())
    assert (first.rows_read, first.rows_stored, first.dates_touched) == (20, 20, {"2026-11-10"})
    assert second.skipped
    conn = catalog.connect(tmp_lake)
    assert conn.execute("SELECT count(*), count(DISTINCT span_id) FROM spans").fetchone() == (20, 20)


def test_collector_length_prefixed_stream(tmp_lake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    messages = [make_request(service=f"svc{i}", spans=5, seed=i).SerializeToString() for i in range(3)]
    stream = b"".join(struct.pack(">I", len(m)) + m for m in messages)
    assert otlp_proto.sniff(stream[:65536]) and not otlp_json.sniff(stream)
    table = _table(stream + b"\x00\x00\x01", "otlp_proto")  # a torn last frame
    assert table.num_rows == 15
    assert sorted(set(table.column("service").to_pylist())) == ["svc0", "svc1", "svc2"]
    assert len(otlp.parse_file(stream + b"\x00\x00\x01", fmt="otlp_proto").rejects) == 1


def test_collector_file_exporter_json_lines() -> None:
    lines = [_spec_json(trace_id=f"{i + 1:032x}", span_id=f"{i + 1:016x}") for i in range(4)]
    data = ("\n".join(json.dumps(line) for line in lines) + "\nnot json\n").encode()
    columns = otlp.parse_file(data, fmt="otlp_json")
    assert [r[0] for r in columns.rejects] == [5]
    assert columns.to_table(source_format="x", source_file="y").column("trace_id").to_pylist() == [
        f"{i + 1:032x}" for i in range(4)]


def _spec_json(*, trace_id: str, span_id: str, attrs: list[dict] | None = None, kind: object = 3,
               resource: list[dict] | None = None, events: list[dict] | None = None) -> dict:
    span = {"traceId": trace_id, "spanId": span_id, "name": "call", "kind": kind,
            "startTimeUnixNano": str(BASE_NS), "endTimeUnixNano": str(BASE_NS + 5_000_000),
            "attributes": attrs or [], "events": events or [], "status": {"code": 2, "message": "boom"}}
    return {"resourceSpans": [{"resource": {"attributes": resource or [_kv("service.name", "a")]},
                               "scopeSpans": [{"scope": {}, "spans": [span]}]}]}


def _kv(key: str, value: object) -> dict:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


@pytest.mark.parametrize("names", [
    ("http.response.status_code", "http.request.method", "url.path", "server.address", "service.peer.name",
     "deployment.environment.name"),
    ("http.status_code", "http.method", "http.target", "net.peer.name", "peer.service", "deployment.environment"),
])
def test_current_and_old_semantic_conventions(names: tuple[str, ...]) -> None:
    status, method, path, address, peer, env = names
    attrs = [_kv(status, 503), _kv(method, "POST"), _kv(path, "/v1/charges/8812?x=1"), _kv(address, "pay.local"),
             _kv(peer, "PaymentService"), _kv("rpc.method", "pay.v1.Charges/Create")]
    resource = [_kv("service.name", "CheckoutService"), _kv("service.version", "v2"), _kv(env, "prod")]
    events = [{"name": "exception", "attributes": [_kv("exception.type", "TimeoutError"), _kv("exception.message", "slow")]}]
    doc = _spec_json(trace_id="ab" * 16, span_id="cd" * 8, attrs=attrs, resource=resource, events=events)
    row = _table(json.dumps(doc).encode(), "otlp_json").to_pylist()[0]
    assert (row["http_status"], row["method"], row["path"]) == (503, "POST", "/v1/charges/8812")
    assert (row["server_address"], row["peer_service"], row["env"], row["version"]) == ("pay.local", "PaymentService", "prod", "v2")
    assert (row["rpc_service"], row["rpc_method"]) == ("pay.v1.Charges", "pay.v1.Charges/Create")
    assert (row["exception_type"], row["exception_message"]) == ("TimeoutError", "slow")
    assert (row["status_code"], row["status_message"], row["kind"]) == ("ERROR", "boom", "CLIENT")
    assert json.loads(row["attributes"])[status] == 503


def test_http_route_preferred_over_the_templated_path() -> None:
    attrs = [_kv("http.route", "/orders/{order_id}"), _kv("url.path", "/orders/17")]
    row = _table(json.dumps(_spec_json(trace_id="ab" * 16, span_id="cd" * 8, attrs=attrs)).encode(), "otlp_json").to_pylist()[0]
    assert (row["route"], row["path"]) == ("/orders/{order_id}", "/orders/17")


@pytest.mark.parametrize("kind,expected", [(1, "INTERNAL"), ("SPAN_KIND_PRODUCER", "PRODUCER"), ("CONSUMER", "CONSUMER"), (None, "UNSPECIFIED")])
def test_kinds_as_integers_or_names(kind: object, expected: str) -> None:
    doc = _spec_json(trace_id="AB" * 16, span_id="CD" * 8, kind=kind)
    assert _table(json.dumps(doc).encode(), "otlp_json").column("kind").to_pylist() == [expected]


def test_instrumentation_library_spans_and_snake_case() -> None:
    span = {"trace_id": "0102" * 8, "span_id": "0304" * 4, "name": "x", "kind": 2, "start_time_unix_nano": BASE_NS}
    doc = {"resource_spans": [{"resource": {"attributes": [_kv("service.name", "old")]},
                               "instrumentationLibrarySpans": [{"spans": [span]}]}]}
    rows = _table(json.dumps(doc).encode(), "otlp_json").to_pylist()
    assert [(r["service"], r["span_id"], r["end_ts"]) for r in rows] == [("old", "0304" * 4, None)]


@pytest.mark.parametrize("bad,reason", [
    ({"traceId": "00" * 16}, "zeros"), ({"spanId": "abc"}, "spanId"), ({"kind": 9}, "kind"),
    ({"startTimeUnixNano": "soon"}, "startTimeUnixNano"), ({"status": {"code": "STATUS_CODE_MAYBE"}}, "status"),
    ({"attributes": [{"value": {}}]}, "attribute"),
])
def test_bad_spans_are_rejected_alone(bad: dict, reason: str) -> None:
    good = _spec_json(trace_id="ab" * 16, span_id="cd" * 8)
    broken = _spec_json(trace_id="ab" * 16, span_id="ce" * 8)
    broken["resourceSpans"][0]["scopeSpans"][0]["spans"][0].update(bad)
    good["resourceSpans"] += broken["resourceSpans"]
    columns = otlp.parse_file(json.dumps(good).encode(), fmt="otlp_json")
    assert len(columns) == 1 and len(columns.rejects) == 1
    assert reason in columns.rejects[0][1]


def test_sniffers_do_not_claim_other_formats() -> None:
    lattice = b'{"serviceNetworkArn": "arn:aws:vpc-lattice:...", "requestPath": "/"}\n'
    for head in (lattice, b"\n\n\nGET / HTTP/1.1\n", b"2026-11-10T00:00:00Z foo bar\n", b""):
        assert otlp.detect(head) is None, head


def test_table_is_exactly_the_spans_schema() -> None:
    table = _table(make_request(service="x", spans=3, seed=3).SerializeToString(), "otlp_proto")
    assert table.schema.equals(schema.SPANS)
    assert otlp.parse_file(b"", fmt="otlp_proto").to_table(source_format="a", source_file="b").schema.equals(schema.SPANS)


# -- the reader never crashes --------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["resourceSpans", "scopeSpans", "spans", "resource", "attributes", "traceId", "spanId",
                         "parentSpanId", "kind", "status", "code", "key", "value", "stringValue", "intValue",
                         "arrayValue", "kvlistValue", "values", "events", "name", "startTimeUnixNano",
                         "endTimeUnixNano", "instrumentationLibrarySpans"]) | st.text(max_size=8),
        children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_json)
def test_json_reader_never_crashes(doc: object) -> None:
    data = json.dumps(doc).encode()
    columns = otlp.parse_file(data, fmt="otlp_json")
    table = columns.to_table(source_format="otlp_json", source_file="h")
    assert table.schema.equals(schema.SPANS)
    assert all(isinstance(r[1], str) and r[1] for r in columns.rejects)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300))
def test_readers_never_crash_on_arbitrary_bytes(data: bytes) -> None:
    for fmt in ("otlp_json", "otlp_proto"):
        otlp.parse_file(data, fmt=fmt).to_table(source_format=fmt, source_file="h")
    otlp.detect(data)


def test_meshlens_ingest_routes_otlp_files_to_spans(tmp_path: Path, tmp_lake) -> None:  # type: ignore[no-untyped-def]
    from ingest.pipeline import ingest_paths

    folder = tmp_path / "in"
    folder.mkdir()
    request = make_request(service="orders", spans=12, seed=21)
    (folder / "batch.pb.gz").write_bytes(gzip.compress(request.SerializeToString()))
    doc = _spec_json(trace_id="12" * 16, span_id="34" * 8)
    (folder / "traces.jsonl").write_text(json.dumps(doc) + "\n" + json.dumps(doc).replace("3434", "3535") + "\n")
    summary = ingest_paths(tmp_lake, [folder])
    assert summary.formats == {"otlp_proto": 1, "otlp_json": 1}
    assert (summary.rows_read, summary.rows_stored, summary.rows_rejected) == (14, 14, 0)
    again = ingest_paths(tmp_lake, [folder])
    assert again.files_skipped == 2 and again.rows_stored == 0
    conn = catalog.connect(tmp_lake)
    assert conn.execute("SELECT count(*) FROM spans").fetchone() == (14,)
    assert conn.execute("SELECT count(*) FROM requests").fetchone() == (0,)
