"""The metrics commands: JSON output, formats, and one-line errors for unknown services."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from meshlens.cli import main
from meshlens.lake import Lake
from tests import metrics_lake

TWO_DAYS = ["--since", "2026-11-10T00:00:00Z", "--until", "2026-11-12T00:00:00Z"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pl.DataFrame]:
    root = tmp_path_factory.mktemp("cli") / "lake"
    frame = metrics_lake.build(Lake(root), rows=2000)
    return str(root), frame


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_rollup_rebuild_then_red_json(capsys, data) -> None:  # type: ignore[no-untyped-def]
    root, frame = data
    code, out, _ = run(capsys, "rollup", "rebuild", "--data", root)
    assert code == 0 and "2026-11-10, 2026-11-11" in out
    code, out, _ = run(capsys, "red", "--data", root, *TWO_DAYS, "--json")
    payload = json.loads(out)
    assert code == 0 and payload["window"] == {"start": "2026-11-10T00:00:00Z", "end": "2026-11-12T00:00:00Z"}
    rows = [dict(zip(payload["columns"], r)) for r in payload["rows"]]
    assert {r["service"]: r["requests"] for r in rows} == dict(frame.group_by("service").len().iter_rows())
    assert {"n", "low_sample", "percentile_source", "p95_ms", "client_errors_4xx"} <= set(payload["columns"])


def test_red_by_caller_for_one_service(capsys, data) -> None:  # type: ignore[no-untyped-def]
    root, frame = data
    code, out, _ = run(capsys, "red", "--data", root, "--service", "paymentservice", "--by", "caller", *TWO_DAYS, "--json")
    payload = json.loads(out)
    got = {r[0]: r[payload["columns"].index("requests")] for r in payload["rows"]}
    expected = dict(frame.filter(pl.col("service") == "PaymentService").group_by("caller").len().iter_rows())
    assert code == 0 and got == expected


def test_red_by_minute_with_now_and_window(capsys, data) -> None:  # type: ignore[no-untyped-def]
    root, frame = data
    code, out, _ = run(capsys, "red", "--data", root, "--by", "hour", "--service", "CartService",
                       "--now", "2026-11-10T12:00:00Z", "--window", "3h", "--json")
    payload = json.loads(out)
    assert code == 0 and len(payload["rows"]) == 3
    total = sum(r[payload["columns"].index("requests")] for r in payload["rows"])
    in_window = frame.filter((pl.col("service") == "CartService") & (pl.col("ts").dt.day() == 10)
                             & pl.col("ts").dt.hour().is_between(9, 11))
    assert total == in_window.height


def test_red_table_output_shows_sample_size(capsys, data) -> None:  # type: ignore[no-untyped-def]
    root, _ = data
    code, out, _ = run(capsys, "red", "--data", root, *TWO_DAYS)
    assert code == 0 and "low_sample" in out and "percentiles:" in out


@pytest.mark.parametrize("command", [["red", "--service", "PaymentServce"], ["callers", "PaymentServce"],
                                     ["callees", "PaymentServce"]])
def test_unknown_service_is_one_line_and_exit_1(capsys, data, command: list[str]) -> None:  # type: ignore[no-untyped-def]
    root, _ = data
    code, out, err = run(capsys, *command, "--data", root, *TWO_DAYS)
    assert code == 1 and out == ""
    assert err.strip() == "meshlens: no service named PaymentServce; did you mean PaymentService?"


def test_graph_formats(capsys, data) -> None:  # type: ignore[no-untyped-def]
    root, frame = data
    code, out, _ = run(capsys, "graph", "--data", root, *TWO_DAYS, "--format", "mermaid")
    assert code == 0 and out.startswith("graph LR")
    code, out, _ = run(capsys, "graph", "--data", root, *TWO_DAYS, "--format", "dot")
    assert code == 0 and out.startswith("digraph")
    code, out, _ = run(capsys, "graph", "--data", root, *TWO_DAYS, "--json")
    payload = json.loads(out)
    assert len(payload["rows"]) == frame.group_by(["caller", "service"]).len().height
    assert payload["nodes"]["columns"][:2] == ["node", "kind"]


def test_callers_json(capsys, data) -> None:  # type: ignore[no-untyped-def]
    root, frame = data
    code, out, _ = run(capsys, "callers", "CartService", "--data", root, *TWO_DAYS, "--json")
    payload = json.loads(out)
    assert code == 0
    assert {r[0] for r in payload["rows"]} == set(frame.filter(pl.col("service") == "CartService")["caller"])


def test_policy_check(capsys, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, frame = data
    policy = tmp_path / "policy.toml"
    policy.write_text('[[allow]]\nservice = "PaymentService"\nenv = "prod"\ncallers = ["CheckoutService"]\n')
    code, out, _ = run(capsys, "policy", "check", "--data", root, "--policy", str(policy), *TWO_DAYS, "--json")
    payload = json.loads(out)
    assert code == 0 and payload["violations"] == len(payload["rows"]) > 0
    callers = {r[payload["columns"].index("caller")] for r in payload["rows"]}
    assert "CheckoutService" not in callers and "OrdersReporting" in callers
    code, _, err = run(capsys, "policy", "check", "--data", root, "--policy", str(tmp_path / "none.toml"), *TWO_DAYS)
    assert code == 1 and "cannot read policy file" in err
    code, _, err = run(capsys, "policy", "check", "--data", root, *TWO_DAYS)
    assert code == 1 and "no policy file" in err


def test_cost_json(capsys, data) -> None:  # type: ignore[no-untyped-def]
    root, _ = data
    code, out, _ = run(capsys, "cost", "--data", root, *TWO_DAYS, "--json")
    payload = json.loads(out)
    assert code == 0 and payload["region"] == "us-east-1" and len(payload["rows"]) == 3
    total = sum(r[payload["columns"].index("cost_total")] for r in payload["rows"])
    assert payload["total_usd"] == pytest.approx(total) and total > 3 * 48 * 0.025
