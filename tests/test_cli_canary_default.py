"""`meshlens canary` without --now on a lake whose data ended earlier judges as of the end of the data."""

from __future__ import annotations

import json

import pytest

from meshlens.cli import main


def run(*args: str) -> int:
    """Run the CLI in-process; its exit status."""
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.mark.slow
def test_canary_without_now_judges_as_of_the_newest_data(scenario, capsys) -> None:
    lake, _ = scenario
    assert run("canary", "--data", str(lake.root), "--json") == 0
    out, err = capsys.readouterr()
    assert "the newest data is from 2026-11-10T23:5" in err
    payload = json.loads(out)
    assert payload["window"]["end"].startswith("2026-11-11T00:00")
    verdicts = {row[0]: row[4] for row in payload["rows"]}
    assert verdicts.get("PaymentService") in {"continue", "rollback"}


@pytest.mark.slow
def test_canary_with_now_is_not_moved(scenario, capsys) -> None:
    lake, _ = scenario
    assert run("canary", "--data", str(lake.root), "--now", "2026-11-10T08:00:00Z", "--json") == 0
    out, err = capsys.readouterr()
    assert "newest data" not in err
    assert json.loads(out)["rows"] == []  # v2 only starts taking traffic at 09:00
