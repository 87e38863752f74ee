"""The lake commands: ingest, services, sql, compact, inventory import; exit codes and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ingest_support import lines, run, write_s3_layout

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def lake_with_logs(tmp_path, capsys):
    write_s3_layout(tmp_path / "logs", files=2, per_file=30)
    data = str(tmp_path / "lake")
    code, out, _ = run(capsys, "ingest", str(tmp_path / "logs"), "--data", data, "--json")
    assert code == 0
    return data, json.loads(out)


def test_ingest_json_summary(lake_with_logs):
    _, summary = lake_with_logs
    counts = dict(summary["rows"])
    assert counts["files taken in"] == 2 and counts["rows read"] == 60 and counts["rows stored"] == 60
    assert summary["dates_touched"] == ["2026-11-10"]


def test_ingest_again_reports_skipped(lake_with_logs, tmp_path, capsys):
    data, _ = lake_with_logs
    code, out, _ = run(capsys, "ingest", str(tmp_path / "logs"), "--data", data, "--json")
    counts = dict(json.loads(out)["rows"])
    assert code == 0 and counts["files skipped (already taken in)"] == 2 and counts["rows stored"] == 0


def test_services_json(lake_with_logs, capsys):
    data, _ = lake_with_logs
    code, out, _ = run(capsys, "services", "--data", data, "--json")
    payload = json.loads(out)
    assert code == 0 and payload["columns"][:4] == ["service", "versions", "envs", "requests"]
    assert payload["rows"][0][:4] == ["payments", ["tg-0277f384abfefe8aa"], None, 60]


def test_sql_select_and_refusal(lake_with_logs, capsys):
    data, _ = lake_with_logs
    code, out, _ = run(capsys, "sql", "SELECT count(*) AS n FROM requests", "--data", data, "--json")
    assert code == 0 and json.loads(out)["rows"] == [[60]]
    code, out, err = run(capsys, "sql", "DELETE FROM requests", "--data", data)
    assert code == 1 and out == "" and err.count("\n") == 1 and err.startswith("meshlens: ")


def test_compact_keeps_rows_exactly(lake_with_logs, tmp_path, capsys):
    data, _ = lake_with_logs
    (tmp_path / "more.log").write_bytes(lines(5, start=1000))
    run(capsys, "ingest", str(tmp_path / "more.log"), "--data", data)
    before = sorted(Path(data).glob("requests/date=*/*.parquet"))
    code, out, _ = run(capsys, "compact", "--data", data, "--json")
    after = sorted(Path(data).glob("requests/date=*/*.parquet"))
    assert code == 0 and len(before) == 3 and len(after) == 1
    assert json.loads(out)["rows"][0] == ["requests", 1, 3, 1, 65]
    code, out, _ = run(capsys, "sql", "SELECT count(*), count(DISTINCT ts), sum(bytes_in) FROM requests",
                       "--data", data, "--json")
    expected_bytes = sum(100 + i for i in range(60)) + sum(100 + i for i in range(1000, 1005))
    assert json.loads(out)["rows"] == [[65, 65, expected_bytes]]


@pytest.mark.parametrize("args,message", [
    (["ingest", "no/such/file.log"], "no/such/file.log: no such file or directory"),
    (["ingest", "README.md", "--format", "lattic"], "Unknown format 'lattic'. Did you mean lattice?"),
    (["ingest", "pyproject.toml"], "cannot tell the format of pyproject.toml; pass --format"),
    (["ingest", "README.md", "--inventory", "nope.toml"], "nope.toml: no such inventory file"),
])
def test_user_errors_exit_1_with_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = run(capsys, *args, "--data", str(tmp_path / "lake"))
    assert code == 1 and err.count("\n") == 1 and message in err and "Traceback" not in err


def test_bad_gzip_from_a_real_process_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.log.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate")
    proc = subprocess.run([sys.executable, "-c", "from meshlens.cli import main; main()", "ingest", str(bad), "--format", "lattice",
                           "--data", str(tmp_path / "lake")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("meshlens: ") and "unreadable gzip" in proc.stderr


def test_inventory_import(tmp_path, capsys):
    services = {"items": [{"arn": "arn:aws:vpc-lattice:us-east-1:1:service/svc-0abc", "id": "svc-0abc",
                           "name": "cart", "dnsEntry": {"domainName": "cart-0abc.x.vpc-lattice-svcs.us-east-1.on.aws"}}]}
    (tmp_path / "s.json").write_text(json.dumps(services))
    out_file = tmp_path / "inv.toml"
    code, _, err = run(capsys, "inventory", "import", str(tmp_path / "s.json"), "--out", str(out_file))
    assert code == 0 and "1 services" in err
    assert 'name = "cart"' in out_file.read_text()
    code, _, err = run(capsys, "inventory", "import", str(tmp_path / "missing.json"))
    assert code == 1 and "missing.json: no such file" in err


@pytest.mark.slow
def test_demo_without_dashboard(tmp_path, capsys):
    data = tmp_path / "lake"
    code, out, err = run(capsys, "demo", "--no-dashboard", "--hours", "2", "--scale", "0.05", "--data", str(data))
    assert code == 0, err
    assert (data / "meshlens.toml").is_file() and (data / "policy.toml").is_file()
    assert "planted: PaymentService v2" in out
    stored = int(out.split(" requests stored")[0].split()[-1].replace(",", ""))
    code, sql_out, _ = run(capsys, "sql", "SELECT count(*) FROM requests", "--data", str(data), "--json")
    assert stored > 0 and json.loads(sql_out)["rows"] == [[stored]]
