"""Evaluation of the offline backend on the demo scenario: tests/nlq_questions.json.

Every expected answer is computed here from the scenario's GroundTruth (its list of every
request written and its planted events), never from SQL. The suite prints accuracy by category
and fails below 90% overall (and below 75% in any category).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from meshlens import catalog
from meshlens.timewin import parse_instant
from meshlens.lake import Lake
from nlq.ask import Answer, ask, rollups_available

QUESTIONS = json.loads((Path(__file__).parent / "nlq_questions.json").read_text())
DEFAULT_NOW = "2026-11-11T00:00:00Z"
MEASURE_COLUMN = {
    "requests": "requests", "errors": "errors_5xx", "error_ratio": "error_ratio",
    "client_errors": "client_errors_4xx", "client_error_ratio": "client_error_ratio",
    "bytes_total": "bytes_total", "rps": "rps", "p50": "p50_ms", "p90": "p90_ms", "p95": "p95_ms",
    "p99": "p99_ms", "mean": "mean_ms", "max": "max_ms", "peak_minute": "requests_per_minute",
}


# -- ground truth ------------------------------------------------------------------------------

def _window(item: dict[str, Any], key: str = "window") -> tuple[datetime, datetime]:
    if key in item:
        return parse_instant(item[key][0]), parse_instant(item[key][1])
    now = parse_instant(item.get("now", DEFAULT_NOW))
    return now - timedelta(hours=24), now


def _select(frame: pl.DataFrame, where: dict[str, Any], window: tuple[datetime, datetime]) -> pl.DataFrame:
    pred = (pl.col("ts") >= window[0]) & (pl.col("ts") < window[1])
    for column, value in where.items():
        if isinstance(value, list):
            pred &= pl.col(column).is_in(value)
        elif isinstance(value, dict):
            pred &= pl.col(column) != value["ne"]
        else:
            pred &= pl.col(column) == value
    return frame.filter(pred)


def _measure(rows: pl.DataFrame, measure: str, seconds: float) -> float:
    n = rows.height
    errors = rows.filter(pl.col("status") >= 500).height
    client = rows.filter((pl.col("status") >= 400) & (pl.col("status") < 500)).height
    durations = rows["duration_ms"].to_numpy().astype(float)
    if measure.startswith("p") and measure[1:].isdigit():
        return float(np.percentile(durations, int(measure[1:]), method="linear"))
    if measure == "peak_minute":
        return float(rows.group_by(pl.col("ts").dt.truncate("1m")).len()["len"].max())
    return {
        "requests": n, "errors": errors, "error_ratio": errors / n if n else 0.0,
        "client_errors": client, "client_error_ratio": client / n if n else 0.0,
        "bytes_total": float((rows["bytes_in"] + rows["bytes_out"]).sum()), "rps": n / seconds,
        "mean": float(durations.mean()) if n else 0.0, "max": float(durations.max()) if n else 0.0,
    }[measure]


def _grouped(frame: pl.DataFrame, by: list[str], measure: str, seconds: float) -> dict[tuple[Any, ...], float]:
    if "hour" in by:
        frame = frame.with_columns(pl.col("ts").dt.truncate("1h").alias("hour"))
    out = {}
    for key, rows in frame.group_by(by):
        out[tuple(key)] = _measure(rows, measure, seconds)
    return out


# -- checkers -----------------------------------------------------------------------------------

def _col(answer: Answer, name: str) -> list[Any]:
    assert name in answer.columns, f"no column {name} in {answer.columns}"
    i = answer.columns.index(name)
    return [r[i] for r in answer.rows]


def _key(answer: Answer, by: list[str]) -> list[tuple[Any, ...]]:
    cols = [_col(answer, b) for b in by]
    return [tuple(_norm(v) for v in values) for values in zip(*cols)]


def _norm(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    return value


def _close(got: Any, expected: float, measure: str) -> bool:
    if got is None:
        return expected == 0
    if measure in ("error_ratio", "client_error_ratio"):
        return abs(float(got) - expected) <= 1e-4
    if measure in ("requests", "errors", "client_errors", "bytes_total", "peak_minute"):
        return float(got) == expected
    return abs(float(got) - expected) <= max(0.011 * abs(expected), 0.11)


def check_set(answer: Answer, item: dict[str, Any], frame: pl.DataFrame, truth: Any) -> bool:
    expected = set(_select(frame, item["where"], _window(item))[item["col"]].to_list())
    return set(_col(answer, item["col"])) == expected


def check_set_diff(answer: Answer, item: dict[str, Any], frame: pl.DataFrame, truth: Any) -> bool:
    first = set(_select(frame, item["where"], _window(item))[item["col"]].to_list())
    second = set(_select(frame, item["where"], _window(item, "window2"))[item["col"]].to_list())
    return set(_col(answer, item["col"])) == first - second


def check_pairs(answer: Answer, item: dict[str, Any], frame: pl.DataFrame, truth: Any) -> bool:
    a, b = item["a"], item["b"]
    rows = _select(frame, {}, _window(item)).filter(
        ((pl.col("caller") == a) & (pl.col("service") == b)) | ((pl.col("caller") == b) & (pl.col("service") == a)))
    expected = {tuple(k): len(v) for k, v in rows.group_by(["caller", "service"])}
    got = dict(zip(_key(answer, ["caller", "service"]), _col(answer, "requests")))
    return got == {k: float(v) for k, v in expected.items()} or got == expected


def check_scalar(answer: Answer, item: dict[str, Any], frame: pl.DataFrame, truth: Any) -> bool:
    window = _window(item)
    rows = _select(frame, item["where"], window)
    expected = _measure(rows, item["measure"], (window[1] - window[0]).total_seconds())
    return len(answer.rows) >= 1 and _close(_col(answer, MEASURE_COLUMN[item["measure"]])[0], expected, item["measure"])


def check_breakdown(answer: Answer, item: dict[str, Any], frame: pl.DataFrame, truth: Any) -> bool:
    window = _window(item)
    expected = _grouped(_select(frame, item["where"], window), item["by"], item["measure"],
                        (window[1] - window[0]).total_seconds())
    got = dict(zip(_key(answer, item["by"]), _col(answer, MEASURE_COLUMN[item["measure"]])))
    keys = {k for k in set(expected) | set(got) if (expected.get(k) or 0) != 0 or (got.get(k) or 0) != 0}
    return bool(keys) and all(_close(got.get(k), expected.get(k, 0.0), item["measure"]) for k in keys)


def check_argmax(answer: Answer, item: dict[str, Any], frame: pl.DataFrame, truth: Any) -> bool:
    window = _window(item)
    expected = _grouped(_select(frame, item["where"], window), item["by"], item["measure"], 1.0)
    best = max(expected.values())
    winners = {k for k, v in expected.items() if v == best}
    return bool(answer.rows) and _key(answer, item["by"])[0] in winners


def check_topk(answer: Answer, item: dict[str, Any], frame: pl.DataFrame, truth: Any) -> bool:
    window = _window(item)
    expected = _grouped(_select(frame, item["where"], window), item["by"], item["measure"], 1.0)
    ranked = sorted(expected.values(), reverse=True)
    cutoff = ranked[item["k"] - 1]
    must = {k for k, v in expected.items() if v > cutoff}
    may = {k for k, v in expected.items() if v >= cutoff}
    got = set(_key(answer, item["by"])[: item["k"]])
    return len(got) == item["k"] and must <= got <= may


def check_compare(answer: Answer, item: dict[str, Any], frame: pl.DataFrame, truth: Any) -> bool:
    values = []
    for key in ("window", "window2"):
        window = _window(item, key)
        values.append(_measure(_select(frame, item["where"], window), item["measure"], (window[1] - window[0]).total_seconds()))
    got = _col(answer, MEASURE_COLUMN[item["measure"]])
    return len(got) == 2 and all(_close(g, e, item["measure"]) for g, e in zip(got, values))


def check_principal(answer: Answer, item: dict[str, Any], frame: pl.DataFrame, truth: Any) -> bool:
    if not answer.rows:
        return False
    principals = _col(answer, "caller_principal")
    if "contains" in item and not any(item["contains"] in (p or "") for p in principals):
        return False
    if "event" in item:
        expected = truth.event(item["event"])["requests"]
    else:
        expected = _select(frame, item["where"], _window(item)).height
    return sum(_col(answer, "requests")) == expected


def check_last_seen(answer: Answer, item: dict[str, Any], frame: pl.DataFrame, truth: Any) -> bool:
    if not answer.rows:
        return False
    if "event" in item:
        expected = parse_instant(truth.event(item["event"])["last"])
    else:
        expected = _select(frame, item["where"], (datetime(2000, 1, 1, tzinfo=timezone.utc), parse_instant(DEFAULT_NOW)))["ts"].max()
    row = dict(zip(answer.columns, answer.rows[0]))
    return item["contains"] in row["caller_principal"] and abs((row["last_seen"] - expected).total_seconds()) < 1


def check_empty(answer: Answer, item: dict[str, Any], frame: pl.DataFrame, truth: Any) -> bool:
    reads = item.get("reads")
    return answer.rows == [] and answer.intent == item["intent"] and answer.error is None and (
        not reads or f"FROM {reads}" in answer.sql)


def check_message(answer: Answer, item: dict[str, Any], frame: pl.DataFrame, truth: Any) -> bool:
    text = (answer.clarification or "") + (answer.error or "")
    return not answer.rows and all(c in text for c in item["contains"])


BLAME = {"caller", "slow dependency", "failing dependency", "bad version"}


def check_diagnosis(answer: Answer, item: dict[str, Any], frame: pl.DataFrame, truth: Any) -> bool:
    findings = answer.findings
    if item.get("top") and (not findings or findings[0]["kind"] != item["top"] or findings[0]["subject"] != item["subject"]):
        return False
    text = " ".join(f["text"] + " " + f["subject"] for f in findings)
    if any(m not in text for m in item.get("mentions", [])):
        return False
    if item.get("recommend") and item["recommend"] not in (answer.recommendation or ""):
        return False
    allowed = {item.get("top")}
    return not (item.get("no_blame") and any(f["kind"] in BLAME - allowed for f in findings))


CHECKS = {name[len("check_"):]: fn for name, fn in globals().items() if name.startswith("check_")}


# -- the evaluation --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rollup_lake(scenario, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """A copy of the scenario lake with the rollups built (the scenario lake stays read-only)."""
    rollup = pytest.importorskip("analytics.rollup")
    lake, _ = scenario
    copy = Lake(tmp_path_factory.mktemp("nlq-rollups") / "lake")
    shutil.copytree(lake.root / "requests", copy.root / "requests")
    rollup.rebuild(copy)
    return copy


@pytest.fixture(scope="module", params=["raw", "rollups"])
def evaluated(request: pytest.FixtureRequest, scenario) -> list[tuple[dict[str, Any], bool, str]]:
    lake, truth = scenario
    if request.param == "rollups":
        lake = request.getfixturevalue("rollup_lake")
    conn = catalog.connect(lake)
    if request.param == "rollups":
        assert rollups_available(conn)
    frame = truth.requests_frame()
    results = []
    for item in QUESTIONS:
        answer = ask(conn, item["q"], now=parse_instant(item.get("now", DEFAULT_NOW)))
        try:
            ok = CHECKS[item["check"]](answer, item, frame, truth)
            note = "" if ok else f"[{answer.intent}] rows={answer.rows[:4]} {answer.error or answer.clarification or ''}"
        except (AssertionError, KeyError, TypeError, ValueError) as exc:
            ok, note = False, f"[{answer.intent}] {type(exc).__name__}: {exc}"
        results.append((item, ok, note))
    return results


@pytest.mark.slow
def test_offline_accuracy_by_category(evaluated, request: pytest.FixtureRequest,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    per: dict[str, Counter[bool]] = defaultdict(Counter)
    for item, ok, _ in evaluated:
        per[item["cat"]][ok] += 1
    lines = [f"{cat:10} {c[True]:3}/{c[True] + c[False]:3} {c[True] / (c[True] + c[False]):.0%}" for cat, c in sorted(per.items())]
    total = sum(ok for _, ok, _ in evaluated) / len(evaluated)
    failures = [f"  {item['q']!r}: {note}" for item, ok, note in evaluated if not ok]
    with capsys.disabled():
        print(f"\nNLQ offline accuracy by category ({request.node.callspec.params['evaluated']}):\n" + "\n".join(lines) + f"\noverall {total:.1%} of {len(evaluated)}")
        if failures:
            print("failures:\n" + "\n".join(failures))
    assert total >= 0.9, "\n".join(failures)
    assert all(c[True] / (c[True] + c[False]) >= 0.75 for c in per.values()), lines


def test_question_set_is_big_and_spread() -> None:
    cats = Counter(item["cat"] for item in QUESTIONS)
    assert len(QUESTIONS) >= 80
    assert {"topology", "access", "volume", "errors", "latency", "topk", "compare", "series", "spans",
            "diagnosis", "names"} <= set(cats)
    assert all(item["check"] in CHECKS for item in QUESTIONS)


@pytest.mark.slow
def test_percentiles_from_sketches_on_a_big_lake_setting(scenario, rollup_lake: Lake) -> None:
    """With exact_percentile_max_rows=0 percentiles come from the rollup sketches: within 1% of
    the nearest-rank percentile of the ground truth."""
    from meshlens.settings import Settings

    _, truth = scenario
    frame = truth.requests_frame()
    conn = catalog.connect(rollup_lake)
    settings = Settings({"exact_percentile_max_rows": 0})
    for item in [i for i in QUESTIONS if i["check"] == "scalar" and i["measure"] in ("p50", "p90", "p95", "p99")]:
        answer = ask(conn, item["q"], now=parse_instant(item.get("now", DEFAULT_NOW)), settings=settings)
        durations = _select(frame, item["where"], _window(item))["duration_ms"].to_numpy().astype(float)
        exact = float(np.percentile(durations, int(item["measure"][1:]), method="inverted_cdf"))
        got = _col(answer, MEASURE_COLUMN[item["measure"]])[0]
        assert "lat_key" in answer.sql, item["q"]
        assert abs(got - exact) <= 0.0101 * exact + 0.06, (item["q"], got, exact)
