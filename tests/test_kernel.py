"""The kernel: settings, time windows, errors, lake writes and catalog views."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from meshlens import schema, settings, timewin
from meshlens.catalog import connect
from meshlens.errors import ConfigError, UnknownNameError, did_you_mean
from meshlens.lake import Lake, ManifestEntry

README = Path(__file__).resolve().parents[1] / "README.md"
UTC = timezone.utc


def test_readme_documents_every_setting() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [s.name for s in settings.SETTINGS if f"`{s.name}`" not in text]
    assert not missing, f"README does not document settings: {missing}"


def test_settings_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text('[settings]\nreceiver_port = 1111\nquery_row_limit = 5\n')
    env = {"MESHLENS_RECEIVER_PORT": "2222"}
    resolved = settings.load(environ=env, data=str(tmp_path), query_timeout_seconds=None)
    assert resolved["receiver_port"] == 2222 and resolved["query_row_limit"] == 5
    assert settings.load(environ=env, data=str(tmp_path), receiver_port=3333)["receiver_port"] == 3333


def test_unknown_setting_suggests_the_right_one() -> None:
    with pytest.raises(UnknownNameError, match="did you mean receiver_port"):
        settings.Settings({"reciever_port": 1})


def test_bad_setting_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="receiver_port"):
        settings.Settings({"receiver_port": "eighty"})


@pytest.mark.parametrize(("given", "expected"), [("false", False), ("0", False), ("No", False), ("true", True), ("1", True)])
def test_boolean_settings_read_words_from_the_environment(tmp_path: Path, given: str, expected: bool) -> None:
    env = {"MESHLENS_FINDINGS_ON_INGEST": given}
    assert settings.load(environ=env, data=str(tmp_path))["findings_on_ingest"] is expected


def test_a_boolean_setting_refuses_other_words() -> None:
    with pytest.raises(ConfigError, match="findings_on_ingest: 'maybe' is not true or false"):
        settings.Settings({"findings_on_ingest": "maybe"})


def test_did_you_mean_is_case_insensitive() -> None:
    assert did_you_mean("paymentservise", ["PaymentService", "CartService"]) == ["PaymentService"]


def test_window_resolution_is_half_open_and_pinned() -> None:
    now = "2026-11-10T12:00:00Z"
    win = timewin.resolve(window="1h", now=now)
    assert win.start == datetime(2026, 11, 10, 11, tzinfo=UTC) and win.end == datetime(2026, 11, 10, 12, tzinfo=UTC)
    assert timewin.resolve(now=now).seconds == 86400
    assert timewin.resolve(since="2026-11-10T09:30", until="2026-11-10T10:00", now=now).seconds == 1800
    assert timewin.resolve(since="2h", now=now).start == datetime(2026, 11, 10, 10, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["yesterdayish", "1 fortnight", ""])
def test_window_errors_are_clear(bad: str) -> None:
    with pytest.raises(ConfigError):
        timewin.resolve(window=bad or "0x", now="2026-11-10T12:00:00Z")


def test_empty_window_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty window"):
        timewin.resolve(since="2026-11-10T12:00", until="2026-11-10T11:00")


def _rows(n: int, day: int) -> pa.Table:
    start = datetime(2026, 11, day, 23, 59, tzinfo=UTC)
    ts = [start + timedelta(seconds=30 * i) for i in range(n)]
    return schema.conform(
        pa.table({"ts": pa.array(ts, schema.TS), "service": ["A"] * n, "caller": ["B"] * n}),
        schema.REQUESTS,
    )


def test_write_partitioned_splits_by_utc_date_and_views_read_it(tmp_lake: Lake) -> None:
    dates = tmp_lake.write_partitioned("requests", _rows(4, 9), ts_column="ts", stem="src-1")
    assert dates == ["2026-11-09", "2026-11-10"]
    conn = connect(tmp_lake)
    got = conn.execute("SELECT date, count(*) FROM requests GROUP BY 1 ORDER BY 1").fetchall()
    assert [(d.isoformat(), n) for d, n in got] == [("2026-11-09", 2), ("2026-11-10", 2)]
    assert conn.execute("SELECT caller, callee, log_requests, seen_in FROM edges").fetchall() == [("B", "A", 4, "logs")]


def test_empty_lake_has_typed_empty_views(tmp_lake: Lake) -> None:
    conn = connect(tmp_lake)
    for view in ("requests", "spans", "edges", "services"):
        assert conn.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
    columns = [r[0] for r in conn.execute("DESCRIBE requests").fetchall()]
    assert columns == schema.REQUESTS.names + ["date"]


def test_temporary_files_are_invisible_and_remove_stem_cleans(tmp_lake: Lake) -> None:
    tmp_lake.write_partitioned("requests", _rows(2, 10), ts_column="ts", stem="src-2")
    leftover = tmp_lake.table_dir("requests") / "date=2026-11-10" / ".src-3.parquet.abc.tmp"
    leftover.write_bytes(b"half a file")
    assert connect(tmp_lake).execute("SELECT count(*) FROM requests").fetchone() == (2,)
    assert tmp_lake.remove_stem("requests", "src-2") == 1
    assert not tmp_lake.has_files("requests")


def test_manifest_round_trip(tmp_lake: Lake) -> None:
    entry = ManifestEntry("a.log", 10, "abc", "lattice", "requests", 3, 2, 1, "2026-11-10T00:00:00Z")
    assert tmp_lake.manifest_entry("abc") is None
    tmp_lake.add_manifest(entry)
    assert tmp_lake.manifest_entry("abc") == entry and tmp_lake.manifest() == [entry]


def test_every_documented_column_exists() -> None:
    for table, cols in schema.COLUMN_DOCS.items():
        names = set(getattr(schema, table.upper()).names) | {"date"}
        assert set(cols) == names, table


def test_iso_format() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", timewin.iso(datetime.now(UTC)))
