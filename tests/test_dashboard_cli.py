"""`meshlens dashboard`: the command line, its defaults and its errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from meshlens.cli import dashboard_cmds

MESHLENS = str(Path(sys.executable).parent / "meshlens")


def test_streamlit_command_binds_loopback_headless_without_usage_stats(tmp_path: Path) -> None:
    cmd = dashboard_cmds.streamlit_command(tmp_path, host="127.0.0.1", port=8765)
    pairs = dict(zip(cmd, cmd[1:]))
    assert pairs["--server.address"] == "127.0.0.1"
    assert pairs["--server.port"] == "8765"
    assert pairs["--server.headless"] == "true"
    assert pairs["--browser.gatherUsageStats"] == "false"
    assert cmd[-3:] == ["--", "--data", str(tmp_path)]
    assert Path(cmd[cmd.index("run") + 1]) == dashboard_cmds.APP
    assert dashboard_cmds.APP.is_file()


def test_help_lists_options() -> None:
    out = subprocess.run([MESHLENS, "dashboard", "--help"], capture_output=True, text=True, check=True)
    for option in ("--data", "--host", "--port"):
        assert option in out.stdout


def test_missing_lake_is_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    out = subprocess.run([MESHLENS, "dashboard", "--data", str(missing)], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert "no lake at" in out.stderr and "Traceback" not in out.stderr
