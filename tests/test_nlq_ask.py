"""``ask`` and ``meshlens ask`` on a lake of ten hand-written requests (answers counted by hand)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshlens import catalog
from meshlens.cli import _register, cli
from nlq.ask import CONVENTIONS, ask
from tests.nlq_support import NOW, tiny_lake


@pytest.fixture()
def lake(tmp_path: Path):
    return tiny_lake(tmp_path / "lake")


@pytest.fixture()
def conn(lake):
    return catalog.connect(lake)


def test_callers_callees_and_versions(conn) -> None:
    answer = ask(conn, "who calls PaymentService?", now=NOW)
    assert answer.columns[:2] == ["caller", "requests"]
    assert [r[:2] for r in answer.rows] == [["CheckoutService", 3], ["OrderService", 2], ["OrdersReporting", 1]]
    assert answer.window.as_dict() == {"start": "2026-11-10T00:00:00Z", "end": "2026-11-11T00:00:00Z"}
    assert "last 24 hours" in answer.explanation and answer.conventions == CONVENTIONS
    callees = ask(conn, "what does the payments svc call", now=NOW)
    assert {r[0]: r[1] for r in callees.rows} == {"PaymentGatewayAdapter": 1, "LedgerService": 1}
    versions = ask(conn, "error rate of PaymentService by version", now=NOW)
    got = {r[0]: r[1:] for r in versions.rows}
    assert got == {"v1": [4, 0, 0.0], "v2": [2, 2, 1.0]}


def test_latency_and_client_errors(conn) -> None:
    assert ask(conn, "median latency of PaymentService", now=NOW).rows[0][:2] == [6, 65.0]
    client = ask(conn, "client errors of LedgerService", now=NOW)
    assert client.rows[0][client.columns.index("client_errors_4xx")] == 1
    window = ask(conn, "how many requests did PaymentService get between 9 and 11 on Nov 10", now=NOW)
    assert window.rows[0][0] == 4
    assert window.window.as_dict() == {"start": "2026-11-10T09:00:00Z", "end": "2026-11-10T11:00:00Z"}


def test_what_it_cannot_do_is_said(conn) -> None:
    unknown = ask(conn, "who calls KafkaBroker?", now=NOW)
    assert unknown.rows == [] and unknown.error.startswith("no service named KafkaBroker")
    nothing = ask(conn, "what's the weather in Paris?", now=NOW)
    assert "cannot answer" in nothing.error and "who calls PaymentService?" in nothing.error


def test_diagnosis_on_the_tiny_lake_does_not_blame_without_evidence(conn) -> None:
    answer = ask(conn, "why is PaymentService failing?", now=NOW)
    assert answer.intent == "diagnosis" and answer.recommendation
    assert not any(f["kind"] in ("caller", "slow dependency", "failing dependency") for f in answer.findings)
    assert answer.sql.count("SELECT") >= 5


def _run(lake, *args: str) -> tuple[int, str, str]:
    _register()
    runner = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()
    result = runner.invoke(cli, ["ask", *args, "--data", str(lake.root), "--now", "2026-11-11T00:00:00Z"])
    return result.exit_code, result.stdout, getattr(result, "stderr", "")


def test_cli_json_and_table(lake) -> None:
    code, out, _ = _run(lake, "who calls PaymentService?", "--json")
    payload = json.loads(out)
    assert code == 0
    assert payload["columns"][0] == "caller" and payload["rows"][0][:2] == ["CheckoutService", 3]
    assert payload["backend"] == "offline" and "SELECT" in payload["sql"] and "LIMIT" in payload["sql"]
    assert payload["window"] == {"start": "2026-11-10T00:00:00Z", "end": "2026-11-11T00:00:00Z"}
    code, out, _ = _run(lake, "who calls PaymentService?")
    assert code == 0 and "CheckoutService" in out and "SQL:" in out and "Window: [2026-11-10T00:00:00Z" in out


def test_cli_unknown_name_exits_1(lake) -> None:
    code, out, err = _run(lake, "who calls KafkaBroker?", "--json")
    assert code == 1 and json.loads(out)["error"].startswith("no service named KafkaBroker")


def test_principals_come_from_the_identity_rollup_or_raw_rows_when_it_is_missing(tmp_path: Path) -> None:
    """A lake rolled up before the principal rollup existed still answers from raw rows."""
    import shutil

    import pyarrow as pa

    from analytics import rollup
    from meshlens import schema
    from meshlens.lake import Lake
    from tests.nlq_support import DAY

    lake = Lake(tmp_path / "lake")
    principals = ["arn:aws:iam::1:role/checkout"] * 3 + ["arn:aws:iam::1:role/orders"] * 2 + ["arn:aws:iam::1:role/cart"]
    table = pa.table({
        "ts": pa.array([DAY + timedelta(hours=9, minutes=i) for i in range(6)], schema.TS),
        "caller": ["CheckoutService"] * 3 + ["OrderService"] * 2 + ["CartService"],
        "service": ["PaymentService"] * 5 + ["InventoryService"], "env": ["prod"] * 6,
        "status": pa.array([200] * 6, pa.int32()), "duration_ms": [10.0] * 6, "caller_principal": principals,
    })
    lake.write_partitioned("requests", schema.conform(table, schema.REQUESTS), ts_column="ts", stem="p")
    rollup.rebuild(lake)
    expected = [["arn:aws:iam::1:role/checkout", "CheckoutService", 3], ["arn:aws:iam::1:role/orders", "OrderService", 2]]
    answer = ask(catalog.connect(lake), "which principals called PaymentService", now=NOW)
    assert "identity_" in answer.sql and [r[:3] for r in answer.rows] == expected
    shutil.rmtree(lake.table_dir("rollups/identity_1m"))
    shutil.rmtree(lake.table_dir("rollups/identity_1h"))
    answer = ask(catalog.connect(lake), "which principals called PaymentService", now=NOW)
    assert "identity_" not in answer.sql and [r[:3] for r in answer.rows] == expected
