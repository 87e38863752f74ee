"""The identity rollup and the security view, cost and principals read from it.

Expected values come from the synthetic rows (tests.metrics_lake, computed with polars here)
or from the scenario's ground truth; the rollup answers are also compared with the raw-row
answers of the same functions (``raw=True``) over windows that the rollup tiles differently.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analytics import cost, graph, rollup, rollup_identity, security
from analytics.policy import parse_policy
from meshlens import catalog, schema
from meshlens.lake import Lake
from meshlens.settings import Settings
from meshlens.timewin import Window
from tests import metrics_lake

DAY1 = datetime(2026, 11, 10, tzinfo=timezone.utc)
TWO_DAYS = Window(DAY1, DAY1 + timedelta(days=2))
WINDOWS = {
    "two days": TWO_DAYS,
    "ragged, across midnight": Window(DAY1 + timedelta(hours=21, minutes=13), DAY1 + timedelta(hours=26, minutes=47)),
    "inside one hour": Window(DAY1 + timedelta(hours=5, minutes=2), DAY1 + timedelta(hours=5, minutes=31)),
}
POLICY = parse_policy(metrics_lake.POLICY_TOML)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, pl.DataFrame]:
    lake = Lake(tmp_path_factory.mktemp("identity") / "lake")
    frame = metrics_lake.build(lake, rows=4000)
    rollup.rebuild(lake)
    return lake, frame


def _in(frame: pl.DataFrame, window: Window) -> pl.DataFrame:
    return frame.filter((pl.col("ts") >= window.start) & (pl.col("ts") < window.end))


def _expected_rollup(frame: pl.DataFrame, every: str) -> pl.DataFrame:
    unauth = (pl.col("caller_principal").fill_null("") == "") & ~pl.col("mtls").fill_null(False)
    denied = ((pl.col("status") == 403) & (pl.col("auth_denied_reason").fill_null("") != "")).fill_null(False)
    missing = [pl.lit(None, dtype=pl.String if d != "authenticated" else pl.Boolean).alias(d)
               for d in schema.IDENTITY_DIMS if d not in frame.columns and d != "denied"]
    return frame.with_columns(*missing).with_columns(
        pl.col("ts").dt.truncate(every).alias("t"), denied.alias("denied"),
        pl.when(unauth).then(pl.col("source_ip")).alias("source_ip"),
    ).group_by(["t", *schema.IDENTITY_DIMS]).agg(
        pl.len().alias("requests"), (pl.col("status") >= 500).sum().alias("errors_5xx"),
        pl.col("bytes_in").sum().alias("bytes_in"), pl.col("ts").min().alias("first_seen"),
        pl.col("ts").max().alias("last_seen"))


@pytest.mark.parametrize("name,every", [("identity_1m", "1m"), ("identity_1h", "1h")])
def test_identity_rollups_sum_to_the_raw_rows(built: tuple[Lake, pl.DataFrame], name: str, every: str) -> None:
    lake, frame = built
    expected = _expected_rollup(frame, every)
    time_col = schema.IDENTITY_ROLLUPS[name].names[0]
    stored = catalog.connect(lake).sql(
        f"SELECT {time_col} AS t, {', '.join(schema.IDENTITY_DIMS)}, requests, errors_5xx, bytes_in, "
        f"first_seen, last_seen FROM {name}").pl()
    keys = ["t", *schema.IDENTITY_DIMS]
    joined = expected.join(stored, on=keys, how="full", nulls_equal=True, suffix="_rollup")
    assert joined.height == expected.height == stored.height
    for col in ("requests", "errors_5xx", "bytes_in", "first_seen", "last_seen"):
        assert joined[col].eq_missing(joined[f"{col}_rollup"]).all(), col


@pytest.mark.parametrize("label", sorted(WINDOWS))
def test_rollup_and_raw_rows_give_the_same_answers(built: tuple[Lake, pl.DataFrame], label: str) -> None:
    lake, _ = built
    conn, window = catalog.connect(lake), WINDOWS[label]
    assert rollup_identity.source_sql(conn, window=window).origin == "rollup"
    calls = {
        "denied": lambda raw: security.denied(conn, window=window, raw=raw),
        "unauthenticated": lambda raw: security.unauthenticated(conn, window=window, raw=raw),
        "tls": lambda raw: security.tls_versions(conn, window=window, env="prod", raw=raw),
        "principals": lambda raw: security.principals(conn, "PaymentService", window=window, raw=raw),
        "policy": lambda raw: security.policy_violations(conn, POLICY, window=window, raw=raw),
        "cost": lambda raw: cost.estimate(conn, Settings(), window=window, raw=raw),
    }
    for name, call in calls.items():
        from_rollup, from_raw = call(False), call(True)
        assert from_rollup.height > 0 or name == "denied", name
        assert_frame_equal(from_rollup, from_raw, check_exact=False, rel_tol=1e-12), name


def test_tiles_cover_the_window_once() -> None:
    for window in WINDOWS.values():
        tiles = rollup_identity.tiles_for(window)
        assert tiles[0][1].start == window.start and tiles[-1][1].end == window.end
        assert all(a[1].end == b[1].start for a, b in zip(tiles, tiles[1:]))
        assert all(w.start.minute == 0 and w.end.minute == 0 for level, w in tiles if level.grain == "hour")
    assert rollup_identity.tiles_for(Window(DAY1 + timedelta(seconds=30), DAY1 + timedelta(hours=2))) == []


def test_security_from_the_rollup_matches_the_rows(built: tuple[Lake, pl.DataFrame]) -> None:
    lake, frame = built
    conn, window = catalog.connect(lake), WINDOWS["ragged, across midnight"]
    rows = _in(frame, window)
    unauth = security.unauthenticated(conn, window=window)
    truth = rows.filter((pl.col("caller_principal") == "") & ~pl.col("mtls")).group_by(["service", "env", "caller"]).agg(
        pl.len().alias("n"), pl.col("source_ip").n_unique().alias("ips"))
    joined = unauth.join(truth, on=["service", "env", "caller"])
    assert joined.height == truth.height == unauth.height > 0
    assert (joined["requests"] == joined["n"]).all() and (joined["source_ips"] == joined["ips"]).all()
    who = security.principals(conn, "PaymentService", window=window)
    truth = rows.filter(pl.col("service") == "PaymentService").group_by(["caller_principal", "caller"]).len()
    joined = who.join(truth, on=["caller_principal", "caller"])
    assert joined.height == truth.height == who.height and (joined["requests"] == joined["len"]).all()


def test_a_date_missing_from_the_rollup_is_read_from_raw_rows(built: tuple[Lake, pl.DataFrame], tmp_path: Path) -> None:
    lake, frame = built
    copy = Lake(tmp_path / "lake")
    shutil.copytree(lake.root, copy.root)
    shutil.rmtree(copy.table_dir("rollups/identity_1m") / "date=2026-11-11")
    conn = catalog.connect(copy)
    assert rollup_identity.source_sql(conn, window=TWO_DAYS).origin == "raw"
    assert rollup_identity.source_sql(conn, window=WINDOWS["inside one hour"]).origin == "rollup"
    tls = security.tls_versions(conn, window=TWO_DAYS)
    assert dict(zip(tls["tls_version"], tls["requests"])) == {
        ("none" if v == "" else v): n for v, n in frame.group_by("tls_version").len().iter_rows()}


@pytest.mark.slow
def test_update_keeps_the_identity_rollup_current(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    frame = metrics_lake.build(lake, rows=600)
    rollup.rebuild(lake)
    extra = metrics_lake.build(Lake(tmp_path / "other"), rows=300, seed=9)
    table = schema.conform(extra.to_arrow(compat_level=pl.CompatLevel.oldest()), schema.REQUESTS)
    lake.write_partitioned("requests", table, ts_column="ts", stem="late")
    rollup.update(lake, dates={"2026-11-10", "2026-11-11"})
    conn = catalog.connect(lake)
    total = conn.execute("SELECT sum(requests) FROM identity_1h").fetchall()[0][0]
    assert total == frame.height + extra.height
    shutil.rmtree(lake.table_dir("requests") / "date=2026-11-11")
    rollup.rebuild(lake)
    assert not rollup.rollup_file(lake, "identity_1m", "2026-11-11").exists()
    assert rollup.rollup_file(lake, "identity_1h", "2026-11-10").exists()


def test_latest_ts_from_the_rollup(built: tuple[Lake, pl.DataFrame], tmp_path: Path) -> None:
    lake, frame = built
    assert rollup_identity.latest_ts(catalog.connect(lake)) == frame["ts"].max()
    assert rollup_identity.latest_ts(catalog.connect(Lake(tmp_path / "empty"))) is None


@pytest.mark.slow
def test_trace_edges_count_the_spans_of_the_window(tmp_lake: Lake) -> None:
    from tests.test_traces_edges import T0, Trace, _write

    traces = []
    for n in range(3):
        t = Trace(n + 1)
        call = t.span("checkout", "CLIENT", parent=t.span("checkout", "SERVER"))
        t.span("payment", "SERVER", parent=call)
        t.span("payment", "CLIENT", attrs={"peer.service": "ledger"})
        traces.append(t)
    _write(tmp_lake, traces)
    conn = catalog.connect(tmp_lake)
    found = graph.trace_edges(conn, window=Window(T0, T0 + timedelta(minutes=1)))
    assert dict(zip(zip(found["caller"], found["callee"]), found["trace_requests"])) == {
        ("checkout", "payment"): 3, ("payment", "ledger"): 3}
    view = dict(conn.execute("SELECT caller || '>' || callee, trace_requests FROM edges").fetchall())
    assert view == {"checkout>payment": 3, "payment>ledger": 3}
    assert graph.trace_edges(conn, window=Window(T0 + timedelta(minutes=1), T0 + timedelta(hours=1))).is_empty()


@pytest.mark.parametrize("label", sorted(WINDOWS))
def test_counts_equal_red_counts(built: tuple[Lake, pl.DataFrame], label: str) -> None:
    from analytics import red

    lake, _ = built
    conn, window = catalog.connect(lake), WINDOWS[label]
    for by, bucket in (((), "hour"), (("env",), None), (("caller", "service"), None), ((), "5m")):
        counts = rollup_identity.counts(conn, window=window, by=by, bucket=bucket)
        expected = red.red(conn, window=window, by=list(by), bucket=bucket).select(counts.columns)
        assert_frame_equal(counts, expected, check_exact=False, rel_tol=1e-12)
        assert_frame_equal(counts, rollup_identity.counts(conn, window=window, by=by, bucket=bucket, raw=True))


def test_nlq_principals_sql_reads_the_rollup_and_agrees_with_raw_rows(built: tuple[Lake, pl.DataFrame]) -> None:
    from nlq import offline, sqlgen

    lake, frame = built
    conn, window = catalog.connect(lake), WINDOWS["ragged, across midnight"]
    where = ["service = 'PaymentService'", "env = 'prod'"]
    rolled = offline._principals_from_rollup(window, where)
    assert rolled is not None and "identity_1h" in rolled and "identity_1m" in rolled
    raw = sqlgen.raw_group_sql(window=window, where=where, order="requests DESC, caller_principal",
                               select=["caller_principal", "caller", "count(*) AS requests", "min(ts) AS first_seen",
                                       "max(ts) AS last_seen"], group=["caller_principal", "caller"])
    assert conn.execute(rolled).fetchall() == conn.execute(raw).fetchall()
    truth = _in(frame, window).filter((pl.col("service") == "PaymentService") & (pl.col("env") == "prod"))
    got = {(p, c): n for p, c, n, *_ in conn.execute(rolled).fetchall()}
    assert got == {(p, c): n for p, c, n in truth.group_by(["caller_principal", "caller"]).len().iter_rows()}
