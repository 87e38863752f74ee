"""The VPC Lattice parser: the real AWS record, CloudWatch exports, extras, bad lines, properties."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import lattice
from tests.ingest_support import lines, record


def _nonblank(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if line.strip())


def test_real_aws_record_golden(samples_dir):
    """Every field of the published AWS sample lands where a reader of the record expects it."""
    data = (samples_dir / "vpc_lattice" / "lattice_http_iam_sample.ndjson").read_bytes()
    parsed = lattice.parse(data, first_line_no=1)
    assert parsed.rejects == []
    row = parsed.rows.row(0, named=True)
    role = ("arn:aws:sts::123467890123:assumed-role/BridgeModeStack-EnvoyFrontendTaskRoleA297DB4D-wtHyfwZ8q2Ih/"
            "35eccb8b16894449acad6e96287ed1d1")
    expected = {
        "ts": datetime(2024, 8, 4, 11, 28, 40, tzinfo=timezone.utc), "duration_ms": 23.0,
        "method": "GET", "path": "/", "status": 404, "bytes_in": 135, "bytes_out": 1247,
        "protocol": "HTTP/1.1", "user_agent": "curl/8.5.0", "tls_version": "TLSv1.2",
        "auth_denied_reason": None, "failure_reason": None, "source_ip": "10.0.183.56",
        "target_ip": "172.31.9.231", "caller_principal": role, "target_group": "tg-0277f384abfefe8aa",
        "authenticated": True, "mtls": False, "account": "123467890123", "region": "ap-southeast-2",
        "service_network": "sn-0e05d75deabe9f290", "extra": None,
        "_host": "test2-0cfe1f49ff3266204.7d67968.vpc-lattice-svcs.ap-southeast-2.on.aws",
        "_service_ref": "arn:aws:vpc-lattice:ap-southeast-2:123467890123:service/svc-0cfe1f49ff3266204",
    }
    assert {k: row[k] for k in expected} == expected


def test_pretty_printed_equals_json_lines(samples_dir):
    folder = samples_dir / "vpc_lattice"
    one_line = lattice.parse((folder / "lattice_http_iam_sample.ndjson").read_bytes(), first_line_no=1)
    pretty_bytes = (folder / "lattice_http_iam_sample.pretty.json").read_bytes()
    assert lattice.whole_file(pretty_bytes)
    pretty = lattice.parse(pretty_bytes, first_line_no=1)
    assert pretty.rejects == [] and pretty.rows.equals(one_line.rows)


def test_several_pretty_objects_and_an_array():
    recs = [record(i) for i in range(3)]
    text = (json.dumps(recs[0], indent=2) + "\n" + json.dumps(recs[1:], indent=4)).encode()
    parsed = lattice.parse(text, first_line_no=1)
    assert parsed.rows.height == 3 and parsed.rejects == []


def test_cloudwatch_export_wrapper_matches_plain_lines():
    plain = lines(5)
    wrapped = b"".join(
        json.dumps({"timestamp": 1794300000000 + i, "message": line.decode()}).encode() + b"\n"
        for i, line in enumerate(plain.splitlines())
    )
    assert lattice.sniff(wrapped)
    a, b = lattice.parse(plain, first_line_no=1), lattice.parse(wrapped, first_line_no=1)
    assert b.rejects == [] and b.rows.equals(a.rows)


def test_dash_means_absent_and_denied_request():
    data = lines(1, responseCode=403, authDeniedReason="Service", failureReason="ClientAccessDenied",
                 targetIpPort="-", callerPrincipal="-", resolvedUser="Anonymous", userAgent="-")
    row = lattice.parse(data, first_line_no=1).rows.row(0, named=True)
    assert row["status"] == 403 and row["auth_denied_reason"] == "Service"
    assert row["failure_reason"] == "ClientAccessDenied"
    assert row["target_ip"] is None and row["user_agent"] is None and row["caller_principal"] is None
    assert row["authenticated"] is False


def test_x509_caller_is_mtls():
    data = lines(1, callerPrincipal="-", resolvedUser="-",
                 callerX509SANURI="spiffe://prod.mesh/ns/pay/sa/payment-service")
    row = lattice.parse(data, first_line_no=1).rows.row(0, named=True)
    assert row["mtls"] is True and row["authenticated"] is True
    assert row["_principals"] == "spiffe://prod.mesh/ns/pay/sa/payment-service"


def test_unknown_fields_go_to_extra():
    data = lines(2) + json.dumps(record(2, grpcStatusDetails={"code": 3}, newField="x")).encode() + b"\n"
    rows = lattice.parse(data, first_line_no=1).rows
    extras = rows.get_column("extra").to_list()
    assert extras[:2] == [None, None]
    assert json.loads(extras[2]) == {"grpcStatusDetails": {"code": 3}, "newField": "x"}


def test_garbage_and_truncated_lines_are_rejected_with_line_numbers():
    good = lines(3)
    truncated = lines(1, start=3)[:-40]
    data = good[:good.index(b"\n") + 1] + b"this is not json\n" + good[good.index(b"\n") + 1:] + b"\n[1, 2]\n" + truncated
    parsed = lattice.parse(data, first_line_no=100)
    assert parsed.rows.height == 3
    by_line = {no: reason for no, reason, _ in parsed.rejects}
    assert set(by_line) == {101, 105, 106}  # line 105 is [1, 2]; line 104 is blank
    assert "invalid JSON" in by_line[101] and "not a JSON object" in by_line[105]
    raw = {no: text for no, _, text in parsed.rejects}
    assert raw[101] == "this is not json"


def test_record_without_start_time_is_rejected():
    data = lines(2) + b'{"hostHeader": "x"}\n' + lines(1, startTime="yesterday")
    parsed = lattice.parse(data, first_line_no=1)
    assert parsed.rows.height == 2
    reasons = sorted((no, reason) for no, reason, _ in parsed.rejects)
    assert reasons[0][0] == 3 and "no startTime" in reasons[0][1]
    assert reasons[1][0] == 4 and "cannot read startTime" in reasons[1][1]


def test_sniff():
    assert lattice.sniff(lines(1))
    assert not lattice.sniff(b'{"foo": 1}\n')
    assert not lattice.sniff(b'127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 2326\n')


_line = st.one_of(
    st.binary(max_size=60).filter(lambda b: b"\n" not in b),
    st.builds(lambda i, code: json.dumps(record(i, responseCode=code)), st.integers(0, 10**6),
              st.one_of(st.integers(-5, 999), st.just("-"), st.text(max_size=5))).map(str.encode),
    st.dictionaries(st.sampled_from(["startTime", "duration", "hostHeader", "message", "x"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=2)),
                    max_size=4).map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_line, max_size=12), st.booleans())
def test_property_every_line_is_a_row_or_a_reject(parts, trailing_newline):
    data = b"\n".join(parts) + (b"\n" if trailing_newline else b"")
    if lattice._is_multiline(data):
        return  # pretty-printed JSON is counted per value, not per line
    parsed = lattice.parse(data, first_line_no=1)
    assert parsed.rows.height + len(parsed.rejects) == _nonblank(data)
    assert parsed.rows.get_column("ts").null_count() == 0 if parsed.rows.height else True
    assert all(isinstance(no, int) and no >= 1 for no, _, _ in parsed.rejects)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=400))
def test_property_arbitrary_bytes_never_crash(data):
    parsed = lattice.parse(data, first_line_no=1)
    assert isinstance(parsed.rows, pl.DataFrame)


def test_many_lines_fast_path_matches_line_by_line():
    data = lines(500)
    fast = lattice.parse(data, first_line_no=1)
    slow = lattice.parse(data + b"garbage\n", first_line_no=1)  # forces the line-by-line path
    assert len(slow.rejects) == 1 and slow.rows.equals(fast.rows)


@pytest.mark.parametrize("ts,expected", [
    ("2026-11-10T09:00:00Z", datetime(2026, 11, 10, 9, tzinfo=timezone.utc)),
    ("2026-11-10T09:00:00.250Z", datetime(2026, 11, 10, 9, 0, 0, 250000, tzinfo=timezone.utc)),
])
def test_start_time_forms(ts, expected):
    row = lattice.parse(lines(1, startTime=ts), first_line_no=1).rows.row(0, named=True)
    assert row["ts"] == expected
