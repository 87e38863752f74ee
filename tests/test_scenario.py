"""The demo scenario generator: determinism, layout, real record shape, truth and planted events.

Expected values are computed here from the raw records written (not from the generator's
own arithmetic), and compared with the ground truth.
"""

from __future__ import annotations

import gzip
import json
import re
import tomllib
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sample_logs.scenario import generate, write_bench_file
from sample_logs.truth import GroundTruth

END = datetime(2026, 11, 11, tzinfo=timezone.utc)
S = END - timedelta(hours=24)
REAL_FIELDS_SAMPLE = "vpc_lattice/lattice_http_iam_sample.ndjson"
KEY_RE = re.compile(
    r"^AWSLogs/(\d{12})/VpcLattice/AccessLogs/([a-z0-9-]+)/(\d{4})/(\d{2})/(\d{2})/(\d{2})/"
    r"\1_vpclatticeaccesslogs_\2_(sn-[0-9a-f]{17})_(\d{8}T\d{4}Z)_[0-9a-f]{8}\.log\.gz$"
)


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GroundTruth, list[dict]]:
    """A full test day at scale 0.25 and every record it wrote."""
    out = tmp_path_factory.mktemp("day")
    truth = generate(out, end=END, hours=24, seed=7, scale=0.25)
    return out, truth, _read_all(out)


def _read_all(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.rglob("*.log.gz")):
        rows.extend(json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines())
    return rows


def _ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


@pytest.mark.slow
def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", end=END, hours=2, seed=3, scale=0.2)
    b = generate(tmp_path / "b", end=END, hours=2, seed=3, scale=0.2)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 3
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert a.total_requests == b.total_requests


def test_other_seed_other_traffic(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", end=END, hours=1, seed=1, scale=0.2)
    b = generate(tmp_path / "b", end=END, hours=1, seed=2, scale=0.2)
    assert a.requests["ts"] != b.requests["ts"]


@pytest.mark.slow
def test_s3_layout(day) -> None:
    out, truth, _ = day
    paths = [p.relative_to(out).as_posix() for p in out.rglob("*.log.gz")]
    assert len(paths) == len(truth.files) >= 48
    seen_envs = set()
    for rel in paths:
        m = KEY_RE.match(rel)
        assert m, rel
        account, region, y, mo, d, h, sn, stamp = m.groups()
        assert stamp.startswith(f"{y}{mo}{d}T{h}")
        env = {e["account"]: e for e in truth.envs}[account]
        assert (region, sn) == (env["region"], env["service_network"])
        seen_envs.add((account, region))
    assert seen_envs == {("111111111111", "us-east-1"), ("222222222222", "us-west-2")}
    for name in ("meshlens.toml", "policy.toml", "ground_truth.json"):
        assert (out / name).is_file()


@pytest.mark.slow
def test_records_have_the_real_fields_and_types(day, samples_dir: Path) -> None:
    real = json.loads((samples_dir / REAL_FIELDS_SAMPLE).read_text().splitlines()[0])
    _, _, rows = day
    for row in rows[:: max(1, len(rows) // 5000)]:
        assert list(row) == list(real)
        for key, value in row.items():
            assert type(value) is type(real[key]), (key, value)
            assert value != "" and value is not None, key


@pytest.mark.slow
def test_record_values_are_plausible(day) -> None:
    _, _, rows = day
    sample = rows[:: max(1, len(rows) // 3000)]
    for row in sample:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", row["startTime"])
        assert S <= _ts(row["startTime"]) < END
        assert row["duration"] >= row["requestToTargetDuration"] + row["responseFromTargetDuration"]
        assert re.fullmatch(r"[a-z0-9-]+-[0-9a-f]{17}\.[0-9a-f]{7}\.vpc-lattice-svcs\.[a-z0-9-]+\.on\.aws",
                            row["hostHeader"])
        assert row["hostHeader"].split("-")[-1].split(".")[0] in row["serviceArn"] or \
            row["serviceArn"].endswith(row["hostHeader"].split(".")[0].rsplit("-", 1)[1])
        assert row["callerPrincipal"].startswith(("arn:aws:sts::", "arn:aws:iam::")) or row["callerPrincipal"] == "-"
    uris = {r["callerX509SANURI"] for r in sample}
    assert any(u.startswith("spiffe://") for u in uris)
    statuses = Counter(r["responseCode"] // 100 for r in rows)
    assert statuses[2] / len(rows) > 0.9 and statuses[4] > 0 and statuses[5] > 0


@pytest.mark.slow
def test_truth_counts_add_up_to_lines_written(day) -> None:
    out, truth, rows = day
    counts = truth.counts_frame()
    assert int(counts["requests"].sum()) == len(rows) == truth.total_requests
    assert sum(f["lines"] for f in truth.files) == len(rows)
    assert int(counts["bytes_out"].sum()) == sum(r["bytesSent"] for r in rows)
    assert int(counts["bytes_in"].sum()) == sum(r["bytesReceived"] for r in rows)
    by_status = Counter(r["responseCode"] for r in rows)
    truth_status = {s: n for s, n in counts.group_by("status").agg(n=pl.col("requests").sum()).iter_rows()}
    assert truth_status == dict(by_status)
    reloaded = GroundTruth.load(out / "ground_truth.json")
    assert reloaded.counts == truth.counts and reloaded.events == truth.events


@pytest.mark.slow
def test_truth_latency_matches_the_records(day) -> None:
    out, truth, rows = day
    lat = truth.latency_frame()
    row = lat.filter((lat["service"] == "PaymentService") & (lat["env"] == "prod")
                     & (lat["version"] == "v1")).sort("requests", descending=True).row(0, named=True)
    hour = row["hour"]
    versions = _versions(out)
    durations = [r["duration"] for r in _payment_prod(rows, out)
                 if r["targetGroupArn"] != "-" and versions[r["targetGroupArn"].rsplit("/", 1)[1]] == "v1"
                 and _ts(r["startTime"]).replace(minute=0, second=0) == hour]
    assert len(durations) == row["requests"]
    assert row["p99_ms"] == float(np.percentile(durations, 99, method="lower"))
    assert row["p50_ms"] == float(np.percentile(durations, 50, method="lower"))
    assert row["max_ms"] == max(durations)
    assert truth.percentile(99, service="PaymentService", env="prod", version="v1", start=hour,
                            end=hour + timedelta(hours=1)) == row["p99_ms"]


def _inventory(out: Path) -> dict:
    return tomllib.loads((out / "meshlens.toml").read_text())


@pytest.mark.slow
def test_inventory_parses_and_covers_every_service(day) -> None:
    out, truth, rows = day
    inv = _inventory(out)
    names = {s["name"] for s in inv["service"]}
    assert len(truth.service_names()) >= 100
    assert set(truth.service_names()) <= names
    for svc in inv["service"]:
        assert set(svc) <= {"name", "hosts", "ids", "principals", "cidrs"}
    tgs = {t["id"]: (t["service"], t["version"]) for t in inv["target_group"]}
    assert sorted(v for s, v in tgs.values() if s == "PaymentService") == ["v1", "v1", "v2"]
    envs = {e["name"]: e for e in inv["env"]}
    assert envs["prod"]["accounts"] == ["111111111111"] and envs["staging"]["accounts"] == ["222222222222"]
    ids = {i for s in inv["service"] for i in s.get("ids", [])}
    for row in rows[:: max(1, len(rows) // 2000)]:
        assert row["serviceArn"].rsplit("/", 1)[1] in ids
        assert row["targetGroupArn"] == "-" or row["targetGroupArn"].rsplit("/", 1)[1] in tgs


@pytest.mark.slow
def test_policy_parses(day) -> None:
    out, _, _ = day
    policy = tomllib.loads((out / "policy.toml").read_text())
    rules = {(r["service"], r["env"]): set(r["callers"]) for r in policy["allow"]}
    assert rules[("PaymentService", "prod")] == {"OrderService", "CheckoutService"}


def _payment_prod(rows: list[dict], out: Path) -> list[dict]:
    inv = _inventory(out)
    pay = next(s for s in inv["service"] if s["name"] == "PaymentService")
    return [r for r in rows if r["serviceArn"].rsplit("/", 1)[1] in pay["ids"]
            and r["serviceNetworkArn"].split(":")[4] == "111111111111"]


def _versions(out: Path) -> dict[str, str]:
    return {t["id"]: t["version"] for t in _inventory(out)["target_group"]}


@pytest.mark.slow
def test_canary_share_and_error_ratio_from_raw_records(day) -> None:
    out, truth, rows = day
    versions = _versions(out)
    pay = [r for r in _payment_prod(rows, out) if r["targetGroupArn"] != "-"]
    version = lambda r: versions[r["targetGroupArn"].rsplit("/", 1)[1]]  # noqa: E731
    before = [r for r in pay if _ts(r["startTime"]) < S + timedelta(hours=9)]
    assert before and all(version(r) == "v1" for r in before)
    after = [r for r in pay if _ts(r["startTime"]) >= S + timedelta(hours=9)]
    share = sum(version(r) == "v2" for r in after) / len(after)
    assert 0.08 <= share <= 0.12
    late = [r for r in pay if _ts(r["startTime"]) >= S + timedelta(hours=10, minutes=30)]
    ratio = {v: sum(r["responseCode"] >= 500 for r in late if version(r) == v)
             / sum(version(r) == v for r in late) for v in ("v1", "v2")}
    assert 0.007 <= ratio["v1"] <= 0.013
    assert 2.5 <= ratio["v2"] / ratio["v1"] <= 3.5
    v2_errors = [r for r in late if version(r) == "v2" and r["responseCode"] >= 500]
    on_route = [r for r in v2_errors if r["requestMethod"] == "POST"
                and re.fullmatch(r"/v1/charges/ch_[0-9a-f]+", r["requestPath"])]
    assert len(on_route) / len(v2_errors) >= 0.6
    event = truth.event("canary_regression")
    assert event["start"] == "2026-11-10T10:30:00Z"
    assert event["errors_v2"] == len(v2_errors)


@pytest.mark.slow
def test_outage_from_raw_records(day) -> None:
    out, truth, rows = day
    inv = {s["name"]: s for s in _inventory(out)["service"]}
    ids = set(inv["InventoryService"]["ids"])
    a, b = S + timedelta(hours=14), S + timedelta(hours=14, minutes=20)
    hits = [r for r in rows if r["serviceArn"].rsplit("/", 1)[1] in ids
            and r["serviceNetworkArn"].split(":")[4] == "111111111111" and a <= _ts(r["startTime"]) < b]
    ratio = sum(r["responseCode"] >= 500 for r in hits) / len(hits)
    assert 0.55 <= ratio <= 0.65
    event = truth.event("outage")
    assert (event["start"], event["end"]) == ("2026-11-10T14:00:00Z", "2026-11-10T14:20:00Z")
    assert event["requests"] == len(hits) and "CheckoutService" in event["callers"]
    checkout = set(inv["CheckoutService"]["ids"])
    checkout_hits = [r for r in rows if r["serviceArn"].rsplit("/", 1)[1] in checkout
                     and r["serviceNetworkArn"].split(":")[4] == "111111111111" and a <= _ts(r["startTime"]) < b]
    assert sum(r["responseCode"] >= 500 for r in checkout_hits) / len(checkout_hits) > 0.2


@pytest.mark.slow
def test_slow_dependency_from_raw_records(day) -> None:
    out, truth, rows = day
    inv = {s["name"]: s for s in _inventory(out)["service"]}
    carrier = set(inv["CarrierGateway"]["ids"])
    role = "prod-ShippingService-TaskRole-"
    edge = [r for r in rows if r["serviceArn"].rsplit("/", 1)[1] in carrier and role in r["callerPrincipal"]]
    a, b = S + timedelta(hours=16), S + timedelta(hours=17)
    during = [r["duration"] for r in edge if a <= _ts(r["startTime"]) < b]
    outside = [r["duration"] for r in edge if not a <= _ts(r["startTime"]) < b]
    assert 300 <= np.median(during) - np.median(outside) <= 500
    assert truth.event("slow_dependency")["requests"] == len(during)


@pytest.mark.slow
def test_denied_and_unknown_callers_from_raw_records(day) -> None:
    out, truth, rows = day
    inv = _inventory(out)
    denied = [r for r in rows if r["responseCode"] == 403]
    assert denied and all(r["authDeniedReason"] == "Service" and r["failureReason"] == "ClientAccessDenied"
                          and r["targetIpPort"] == "-" for r in denied)
    assert len(denied) == truth.event("denied")["requests"]
    assert all(r["authDeniedReason"] == "-" for r in rows if r["responseCode"] != 403)
    known = [re.compile(p.replace("*", ".*")) for s in inv["service"] for p in s["principals"]]
    principals = {r["callerPrincipal"] for r in rows if r["callerPrincipal"] != "-"}
    unknown = {p for p in principals if not any(k.fullmatch(p) for k in known)}
    assert truth.event("denied")["principal"] in unknown
    assert set(truth.event("unknown_callers")["principals"]) <= unknown
    assert len(unknown) == 3


@pytest.mark.slow
def test_policy_violation_present(day) -> None:
    out, truth, rows = day
    pay = _payment_prod(rows, out)
    callers = Counter(r["callerPrincipal"].split("/")[1].split("-")[1] for r in pay
                      if r["callerPrincipal"].startswith("arn:aws:sts::111111111111:assumed-role/prod-"))
    callers.update(r["callerX509SANURI"].rsplit("/", 1)[1] for r in pay if r["callerX509SANURI"] != "-")
    assert set(callers) == {"OrderService", "checkout-service", "OrdersReporting"}
    assert callers["OrdersReporting"] == truth.event("policy_violation")["requests"] > 20


def test_latency_table_is_numpy_lower_for_every_group(day) -> None:
    _, truth, _ = day
    frame = truth.requests_frame().with_columns(hour=pl.col("ts").dt.truncate("1h"))
    expected = frame.group_by(["hour", "service", "version", "env"]).agg(pl.col("duration_ms"))
    table = {(r["hour"], r["service"], r["version"], r["env"]): r for r in truth.latency_frame().iter_rows(named=True)}
    assert len(table) == expected.height
    for row in expected.iter_rows(named=True):
        got = table[(row["hour"], row["service"], row["version"], row["env"])]
        d = np.asarray(row["duration_ms"], dtype=float)
        assert got["requests"] == len(d)
        for q in (50, 90, 95, 99):
            assert got[f"p{q}_ms"] == float(np.percentile(d, q, method="lower")), (row["service"], q)
        assert got["max_ms"] == d.max() and got["mean_ms"] == pytest.approx(d.mean())


def test_quiet_network_has_no_events(tmp_path: Path) -> None:
    truth = generate(tmp_path, end=END, hours=24, seed=7, scale=0.05, events=())
    frame = truth.requests_frame()
    assert truth.events == []
    assert set(frame["version"].unique()) == {"v1"}
    assert (frame["caller"] == "unknown").sum() == 0 and (frame["status"] == 403).sum() == 0
    inv = frame.filter((pl.col("service") == "InventoryService") & (pl.col("env") == "prod"))
    assert (inv["status"] >= 500).mean() < 0.05


@pytest.mark.slow
def test_aa_canary_has_equal_error_ratios(tmp_path: Path) -> None:
    truth = generate(tmp_path, end=END, hours=24, seed=7, scale=0.25, events={"canary"})
    pay = truth.requests_frame().filter((pl.col("service") == "PaymentService") & (pl.col("env") == "prod")
                                        & (pl.col("ts") >= S + timedelta(hours=9)))
    ratio = {v: float((pay.filter(pl.col("version") == v)["status"] >= 500).mean()) for v in ("v1", "v2")}
    assert ratio["v2"] == pytest.approx(ratio["v1"], abs=0.004)
    assert [e["kind"] for e in truth.events] == ["canary"]


def test_unknown_event_name_is_refused(tmp_path: Path) -> None:
    from meshlens.errors import MeshlensError

    with pytest.raises(MeshlensError, match="unknown scenario event"):
        generate(tmp_path, end=END, hours=1, scale=0.1, events={"meteor"})


def test_two_days_keep_exact_event_times(tmp_path: Path) -> None:
    truth = generate(tmp_path, end=END, hours=48, seed=7, scale=0.02)
    assert truth.event("outage")["start"] == "2026-11-09T14:00:00Z"
    assert truth.event("canary")["end"] == "2026-11-11T00:00:00Z"
    days = {p.parts[-5:-2] for p in (tmp_path / "AWSLogs").rglob("*.log.gz")}
    assert {d[2] for d in days} == {"09", "10"}


def test_short_window_places_events_proportionally(tmp_path: Path) -> None:
    truth = generate(tmp_path, end=END, hours=2, seed=5, scale=0.5)
    outage = truth.event("outage")
    assert outage["start"] == "2026-11-10T23:10:00Z"  # 22:00 + 14/24 * 2 h
    assert outage["end"] == "2026-11-10T23:20:00Z"  # at least 10 minutes
    assert truth.start == "2026-11-10T22:00:00Z" and truth.end == "2026-11-11T00:00:00Z"


def test_bench_file(tmp_path: Path, samples_dir: Path) -> None:
    path = write_bench_file(tmp_path / "bench.ndjson", lines=5000, seed=1)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 5000
    real = json.loads((samples_dir / REAL_FIELDS_SAMPLE).read_text().splitlines()[0])
    assert list(json.loads(lines[0])) == list(real)
