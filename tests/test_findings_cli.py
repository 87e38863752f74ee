"""`meshlens ingest` and `meshlens rollup rebuild` store the dashboard's default-window findings."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from analytics import anomalies, canary, findings
from meshlens import catalog
from meshlens.cli import main
from meshlens.lake import Lake
from meshlens.timewin import Window
from tests.ingest_support import run

pytestmark = pytest.mark.slow
END = datetime(2026, 11, 11, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve hours of the demo scenario (the canary and the outage are in it), small scale."""
    from sample_logs.scenario import generate

    out = tmp_path_factory.mktemp("findings-cli") / "logs"
    generate(out, end=END, hours=12, seed=7, scale=0.1)
    return out


def stored(lake: Lake) -> dict[str, Any]:
    """The default window's stored answers, by kind (None when missing)."""
    conn = catalog.connect(lake)
    from analytics.rollup_identity import latest_ts

    window = findings.default_window(latest_ts(conn), now=datetime.now(timezone.utc))
    return {kind: findings.load(lake, findings.key(lake, kind, window)) for kind in findings.KINDS} | {"window": window}


@pytest.fixture(scope="module")
def ingested(logs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(lake folder, ingest's stdout) after `meshlens ingest --json` of the logs."""
    data = tmp_path_factory.mktemp("findings-cli-lake") / "lake"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["ingest", str(logs), "--data", str(data), "--inventory", str(logs / "meshlens.toml"), "--json"])
    return data, out.getvalue()


def test_ingest_stores_what_anomalies_and_canary_answer(ingested: tuple[Path, str]) -> None:
    data, out = ingested
    assert json.loads(out)["columns"]  # stdout is still only the JSON summary
    lake = Lake(data)
    found = stored(lake)
    window: Window = found["window"]
    assert window.end == END  # the data ends at END: the dashboard's window ends there
    conn = catalog.connect(lake)
    assert found["incidents"] == anomalies.detect(conn, window=window)
    assert [v.as_dict() for v in found["canaries"]] == [v.as_dict() for v in canary.judge(conn, None, window=window)]
    assert any(v.service == "PaymentService" for v in found["canaries"])


def test_rollup_rebuild_stores_them_again(ingested: tuple[Path, str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "lake"
    shutil.copytree(ingested[0], data)  # times kept: the same data, the entries still hold
    lake = Lake(data)
    before = {p.name for p in findings.store_dir(lake).glob("*.json")}
    assert stored(lake)["incidents"] is not None
    code, _, err = run(capsys, "rollup", "rebuild", "--data", str(data))
    assert code == 0, err
    found = stored(lake)
    assert found["incidents"] is not None and found["canaries"] is not None
    after = {p.name for p in findings.store_dir(lake).glob("*.json")}
    assert len(after) == 2 and not after & before  # new rollup files: new entries, the stale ones dropped


def test_ingest_skips_the_findings_when_the_setting_says_so(logs: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHLENS_FINDINGS_ON_INGEST", "false")
    data = tmp_path / "lake"
    code, _, err = run(capsys, "ingest", str(logs), "--data", str(data), "--inventory", str(logs / "meshlens.toml"))
    assert code == 0, err
    assert Lake(data).has_files("requests")
    assert not list(findings.store_dir(Lake(data)).glob("*.json"))
    assert "finding incidents" not in err


def test_the_cli_reads_the_stored_answer_for_the_dashboards_window(ingested: tuple[Path, str],
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from meshlens.cli.common import to_jsonable

    data = ingested[0]
    found = stored(Lake(data))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("computed again although the answer is stored")

    monkeypatch.setattr(anomalies, "detect", refuse)
    monkeypatch.setattr(canary, "judge", refuse)
    code, out, err = run(capsys, "anomalies", "--data", str(data), "--json")
    assert code == 0, err
    assert "the newest data is from 2026-11-10T23:5" in err  # the data ended before the clock
    payload = json.loads(out)
    assert payload["window"]["end"].startswith("2026-11-11T00:00")
    assert payload["incidents"] == json.loads(json.dumps(to_jsonable([i.as_dict() for i in found["incidents"]])))
    code, out, err = run(capsys, "canary", "--data", str(data), "--json")
    assert code == 0, err
    verdicts = json.loads(out)["verdicts"]
    assert verdicts == json.loads(json.dumps(to_jsonable([v.as_dict() for v in found["canaries"]])))
