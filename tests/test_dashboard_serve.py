"""dashboard.serve: Streamlit's command line with a warm-up (the real server runs in the browser test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard import serve
from meshlens.cli import dashboard_cmds


def test_the_lake_is_the_apps_data_argument(tmp_path: Path) -> None:
    cmd = dashboard_cmds.streamlit_command(tmp_path, host="127.0.0.1", port=8765)
    assert cmd[1:3] == ["-m", "dashboard.serve"]
    assert serve.lake_of(cmd[3:]) == str(tmp_path)


def test_without_data_argument_the_settings_decide(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MESHLENS_DATA", str(tmp_path / "elsewhere"))
    assert serve.lake_of(["run", "app.py", "--server.port", "1"]) == str(tmp_path / "elsewhere")


def test_warm_up_of_a_missing_lake_reports_and_never_raises(tmp_path: Path) -> None:
    serve.WARMED.clear()
    seconds = serve.warm(str(tmp_path / "no-lake"), runtime_wait=0)
    assert seconds >= 0 and serve.WARMED.is_set()
