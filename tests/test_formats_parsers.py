"""ALB, Envoy/Istio, Istio JSON and combined parsers: real samples, format detection, edge cases."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ingest import FORMATS, SPAN_FORMATS, alb, combined, envoy, istio_json

SAMPLES = Path(__file__).resolve().parents[1] / "sample_logs"
OURS = {"alb": alb, "envoy": envoy, "istio_json": istio_json, "combined": combined}
UTC = timezone.utc


def _non_blank(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if line.strip())


def _accepting(head: bytes) -> set[str]:
    every = {**FORMATS, **SPAN_FORMATS}
    return {name for name, module in every.items() if module.sniff(head)}


# ---------------------------------------------------------------- real samples (../shared)


def test_alb_real_lines(samples_dir: Path) -> None:
    data = (samples_dir / "alb" / "aws-log-parser_alb_examples.log").read_bytes()
    parsed = alb.parse(data, first_line_no=1)
    assert parsed.rejects == []
    rows = parsed.rows.to_dicts()
    assert len(rows) == 12
    first = rows[0]
    # 0.000 + 0.001 + 0.000 s; the response finished at 22:23:00.186641, so it started 1 ms before
    assert first["duration_ms"] == pytest.approx(1.0)
    assert first["ts"] == datetime(2018, 7, 2, 22, 23, 0, 185641, tzinfo=UTC)
    assert first["path"] == "/" and first["_host"] == "www.example.com"
    assert first["trace_id"] == "5833726236d228ad5d99923122bbe354"
    assert first["target_group"].endswith(":targetgroup/my-targets/73e2d6bc24d8a067")
    assert (first["account"], first["region"]) == ("123456789012", "us-east-2")
    assert rows[1]["duration_ms"] == pytest.approx(86 + 48 + 37)
    assert rows[1]["tls_version"] == "TLSv1.2"
    assert rows[6]["failure_reason"] == "LambdaInvalidResponse" and rows[6]["status"] == 502
    assert rows[6]["target_ip"] is None
    auth = rows[10]  # 30 fields, all timings -1
    assert auth["duration_ms"] is None and auth["status"] == 401
    assert auth["ts"] == datetime(2018, 7, 2, 22, 23, 0, 186641, tzinfo=UTC)
    assert auth["failure_reason"] == "AuthInvalidAWSALBAuthNonce" and auth["target_group"] is None
    assert auth["path"] == "/oauth2/idpresponse"


def test_alb_real_gz_line(samples_dir: Path) -> None:
    data = gzip.decompress((samples_dir / "alb" / "aws-log-parser_loadbalancer_http2_entry.csv.gz").read_bytes())
    parsed = alb.parse(data, first_line_no=1)
    assert parsed.rejects == [] and parsed.rows.height == 1
    row = parsed.rows.row(0, named=True)
    assert (row["protocol"], row["status"], row["bytes_in"], row["bytes_out"]) == ("HTTP/2.0", 200, 5, 257)
    assert row["duration_ms"] == pytest.approx(2.0)
    assert _accepting(data[:65536]) == {"alb"}


def test_istio_real_pair(samples_dir: Path) -> None:
    data = (samples_dir / "envoy_istio" / "istio-docs_default_text_format_pair.log").read_bytes()
    parsed = envoy.parse(data, first_line_no=1)
    assert parsed.rejects == []
    client, server = parsed.rows.to_dicts()
    assert (client["service"], client["version"]) == ("httpbin", "unknown")
    assert client["_upstream_cluster"] == "outbound|8000||httpbin.foo.svc.cluster.local"
    assert client["request_id"] == server["request_id"] == "84961386-6d84-929d-98bd-c5aee93b5c88"
    assert (client["status"], client["duration_ms"], client["bytes_out"]) == (418, 4.0, 135)
    assert (server["service"], server["version"], server["duration_ms"]) == ("httpbin", "unknown", 3.0)
    # the server sidecar sees the client's pod address (10.44.1.23) as its downstream peer
    assert server["source_ip"] == client["source_ip"] == "10.44.1.23"
    assert client["target_ip"] == "10.44.1.27"
    assert _accepting(data) == {"envoy"}


def test_apache_real_lines(samples_dir: Path) -> None:
    data = (samples_dir / "apache_combined" / "elastic-examples_apache_logs.log").read_bytes()
    parsed = combined.parse(data, first_line_no=1)
    assert parsed.rows.height + len(parsed.rejects) == _non_blank(data) == 10_000
    # exactly one real line is cut off inside its user agent (no closing quote)
    assert [(n, r) for n, r, _ in parsed.rejects] == [(8899, "not a combined/common log line")]
    first = parsed.rows.row(0, named=True)
    assert first["ts"] == datetime(2015, 5, 17, 10, 5, 3, tzinfo=UTC)
    assert (first["source_ip"], first["status"], first["bytes_out"]) == ("83.149.9.216", 200, 203023)
    statuses = parsed.rows["status"].value_counts().sort("status")
    assert {200, 304, 404, 500}.issubset(set(statuses["status"].to_list()))
    assert _accepting(data[:65536]) == {"combined"}


def test_other_real_formats_are_not_ours(samples_dir: Path) -> None:
    lattice = (samples_dir / "vpc_lattice").glob("*")
    otlp = (samples_dir / "otlp").rglob("*.json*")
    for path in [*lattice, *otlp]:
        head = path.read_bytes()[:65536]
        for name, module in OURS.items():
            assert not module.sniff(head), (name, path.name)


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("sample", "fmt"),
    [("alb.log", "alb"), ("envoy.log", "envoy"), ("istio.log", "envoy"),
     ("istio_json.log", "istio_json"), ("combined.log", "combined"), ("combined_timed.log", "combined")],
)
def test_each_sample_is_detected_as_its_own_format(sample: str, fmt: str) -> None:
    head = (SAMPLES / sample).read_bytes()[:65536]
    assert _accepting(head) == {fmt}


def test_sniff_rejects_empty_binary_and_plain_text() -> None:
    for head in [b"", b"\n\n", bytes(range(256)) * 10, b"hello world\nthis is text\n", b"{}\n[]\n"]:
        assert not any(m.sniff(head) for m in OURS.values())


def test_sniff_ignores_a_cut_off_last_line() -> None:
    data = (SAMPLES / "combined.log").read_bytes()
    assert combined.sniff(data[: len(data) - 40])


# ---------------------------------------------------------------- combined details


def test_combined_timing_rule_dot_is_seconds_integer_is_microseconds() -> None:
    base = '10.0.0.1 - - [10/Nov/2026:09:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8" '
    lines = [base + "0.250", base + "250000", base + "-", base + "1.5", base.rstrip()]
    rows = combined.parse("\n".join(lines).encode(), first_line_no=1).rows
    assert rows["duration_ms"].to_list() == [250.0, 250.0, None, 1500.0, None]


def test_combined_common_vhost_and_ipv6() -> None:
    lines = [
        '::1 - - [10/Nov/2026:09:00:00 +0000] "GET /a HTTP/1.0" 200 12',
        'shop.example.com:443 203.0.113.5 - bob [10/Nov/2026:10:00:00 +0100] "POST /b HTTP/1.1" 201 7 "-" "x" 1234',
        '10.0.0.1 - - [10/Nov/2026:09:00:00 +0000] "GET /q?a=\\"b\\" HTTP/1.1" 200 1 "-" "agent \\"quoted\\"" "10.9.9.9"',
    ]
    parsed = combined.parse("\n".join(lines).encode(), first_line_no=1)
    assert parsed.rejects == []
    a, b, c = parsed.rows.to_dicts()
    assert (a["source_ip"], a["path"], a["user_agent"], a["bytes_out"]) == ("::1", "/a", None, 12)
    assert (b["_host"], b["source_ip"], b["caller_principal"], b["authenticated"]) == ("shop.example.com", "203.0.113.5", "bob", True)
    assert b["ts"] == datetime(2026, 11, 10, 9, 0, tzinfo=UTC) and b["duration_ms"] == pytest.approx(1.234)
    assert c["path"] == "/q" and c["user_agent"] == 'agent \\"quoted\\"'


def test_combined_bad_time_and_crlf_and_line_numbers() -> None:
    data = (
        b'10.0.0.1 - - [10/Nov/2026:09:00:00 +0000] "GET / HTTP/1.1" 200 5\r\n'
        b"\r\n"
        b'10.0.0.1 - - [99/Foo/2026:09:00:00 +0000] "GET / HTTP/1.1" 200 5\r\n'
        b"\xff\xfe garbage\n"
    )
    parsed = combined.parse(data, first_line_no=41)
    assert parsed.rows.height == 1 and parsed.rows["path"].to_list() == ["/"]
    assert [(n, r) for n, r, _ in parsed.rejects] == [(43, "unreadable time"), (44, "not a combined/common log line")]


# ---------------------------------------------------------------- ALB details


def test_alb_field_counts_25_to_33_and_unknown_trailing_fields() -> None:
    line25 = (SAMPLES / "alb.log").read_text().splitlines()[3]
    assert len(line25.split('" "')) > 1
    line29 = line25 + ' "10.1.8.21:8080" "200" "-" "-"'
    line30 = line29 + " TID_0123"
    line33 = line30 + ' "-" "-" "-"'
    line_future = line33 + ' "something" new 42'
    data = "\n".join([line25, line29, line30, line33, line_future]).encode()
    parsed = alb.parse(data, first_line_no=1)
    assert parsed.rejects == []
    assert parsed.rows.n_unique() == 1  # the extra fields change nothing we read


def test_alb_rejects_short_lines() -> None:
    line = (SAMPLES / "alb.log").read_text().splitlines()[3]
    short = line.rsplit(" ", 3)[0]  # drop the last three fields: 22 fields
    parsed = alb.parse(short.encode(), first_line_no=7)
    assert parsed.rows.height == 0 and [(n, r) for n, r, _ in parsed.rejects] == [(7, "not an ALB access-log line")]


# ---------------------------------------------------------------- Istio JSON details


def test_istio_json_same_request_as_text_gives_same_row() -> None:
    text = (
        '[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 4 4 "-" '
        '"curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" "10.44.1.27:80" '
        "outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default"
    )
    as_json = (
        '{"route_name":"default","requested_server_name":"-","downstream_remote_address":"10.44.1.23:46520",'
        '"downstream_local_address":"10.0.45.184:8000","upstream_local_address":"10.44.1.23:37652",'
        '"upstream_cluster":"outbound|8000||httpbin.foo.svc.cluster.local","upstream_host":"10.44.1.27:80",'
        '"authority":"httpbin:8000","request_id":"84961386-6d84-929d-98bd-c5aee93b5c88",'
        '"user_agent":"curl/7.73.0-DEV","x_forwarded_for":"-","upstream_service_time":"4","duration":"4",'
        '"bytes_sent":"135","bytes_received":"0","upstream_transport_failure_reason":"-",'
        '"connection_termination_details":"-","response_code_details":"via_upstream","response_flags":"-",'
        '"response_code":"418","protocol":"HTTP/1.1","path":"/status/418","method":"GET",'
        '"start_time":"2020-11-25T21:26:18.409Z"}'
    )
    from_text = envoy.parse(text.encode(), first_line_no=1).rows
    from_json = istio_json.parse(as_json.encode(), first_line_no=1).rows
    assert from_json.to_dicts() == from_text.to_dicts()
    assert _accepting(as_json.encode()) == {"istio_json"}


def test_istio_json_bad_lines_among_many_good_ones() -> None:
    good = (SAMPLES / "istio_json.log").read_text().splitlines()[0]
    lines = [good] * 500 + ["{oops"] + [good] * 300 + ["[1, 2]", "null", '{"start_time": 5}'] + [good] * 7
    parsed = istio_json.parse("\n".join(lines).encode(), first_line_no=1)
    assert parsed.rows.height == 807
    assert [(n, r) for n, r, _ in parsed.rejects] == [
        (501, "invalid JSON"), (802, "not a JSON object"), (803, "not a JSON object"),
        (804, "no readable start_time"),
    ]
