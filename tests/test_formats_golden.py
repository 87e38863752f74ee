"""Golden files: every shipped per-format sample parses to the rows written by hand beside it.

``sample_logs/expected/<sample stem>.json`` holds the sample's file name, its format, the
expected rows (only the non-null columns; every other column must be null) and the expected
rejects as (line number, reason).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ingest import FORMATS

SAMPLES = Path(__file__).resolve().parents[1] / "sample_logs"
GOLDEN = sorted((SAMPLES / "expected").glob("*.json"))
OURS = {"alb", "envoy", "istio_json", "combined"}


def _golden_files() -> list[Path]:
    return [g for g in GOLDEN if json.loads(g.read_text())["format"] in OURS]


def _normalize(row: dict[str, Any]) -> dict[str, Any]:
    """A parsed row as JSON-like values, nulls dropped."""
    out = {}
    for key, value in row.items():
        if value is None:
            continue
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _expected(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["ts"] = datetime.fromisoformat(row["ts"]).isoformat()
    return out


def test_every_format_has_a_golden_sample() -> None:
    formats = {json.loads(g.read_text())["format"] for g in _golden_files()}
    assert OURS <= formats
    assert OURS <= set(FORMATS)


@pytest.mark.parametrize("golden", _golden_files(), ids=lambda p: p.stem)
def test_golden(golden: Path) -> None:
    spec = json.loads(golden.read_text())
    module = FORMATS[spec["format"]]
    data = (SAMPLES / spec["sample"]).read_bytes()
    parsed = module.parse(data, first_line_no=1)
    got = [_normalize(r) for r in parsed.rows.to_dicts()]
    want = [_expected(r) for r in spec["rows"]]
    assert len(got) == len(want)
    for index, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(w), f"row {index}"
    assert [[n, reason] for n, reason, _ in parsed.rejects] == spec["rejects"]
    non_blank = [ln for ln in data.split(b"\n") if ln.strip()]
    assert len(got) + len(parsed.rejects) == len(non_blank)


@pytest.mark.parametrize("golden", _golden_files(), ids=lambda p: p.stem)
def test_golden_sample_is_detected_as_its_format(golden: Path) -> None:
    spec = json.loads(golden.read_text())
    head = (SAMPLES / spec["sample"]).read_bytes()[:65536]
    accepted = {name for name, module in FORMATS.items() if module.sniff(head)}
    assert accepted == {spec["format"]}
