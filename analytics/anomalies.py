"""Anomalies with reasons: a causal isolation forest over minute feature vectors.

What is scored
    Per service and per edge (caller -> service), per minute: request rate, 5xx ratio, 4xx
    ratio, p50 and p99 latency and bytes, each turned into a deviation from the same series'
    recent baseline (the previous ``recent_minutes``) and, where at least two earlier days
    exist, from its seasonal baseline (the same minute of day on earlier days; the same minute
    of week once two earlier weeks exist). Error ratios use a binomial z (with an overdispersion
    term) so a quiet service's single error is not an outage. A slow-request test covers sparse
    series: the median minute p50 of the last ``long_minutes`` against the baseline minutes'
    median and MAD, scaled as a median of that many draws, so an edge of one request a minute
    that turns 400 ms slower is seen although no 5-minute p99 has enough requests.

Reading
    One scan (``load_minutes``): the ``edges_1m`` rollup for the dates it holds (raw
    ``requests`` only for the others and for a window end inside a minute, so a rolled-up day
    costs no raw scan), hashed to integer series ids in DuckDB against the edge list of the day
    rollup; the per-edge and per-service sums and the p50/p99 (nearest rank of the merged
    latency sketch, 1% relative error) are then one sort in numpy (the per-service merge finds
    its rows in sorted runs). Series with fewer than ``min_series_requests`` requests so far are
    left out until they reach it. Rolling statistics run per series (polars ``over``), so
    minutes of two series never mix; medians run on gap-free rows where a series' nulls lead it.
    scikit-learn (seconds of import) is imported on first use, in a background thread that
    ``detect`` starts so the import overlaps the reading and the features.

Causal
    The forest that scores minute m was fitted only on minutes before the last refit boundary
    at or before m (refits every ``refit_minutes``; only for spans that hold a minute to score),
    on ``train_rows`` earlier series-minutes of every series (one model; the features are
    per-series normalised deviations), and its score is calibrated against the scores of
    ``reference_rows`` of its own training rows. Baselines use only earlier minutes. So what
    is flagged at 10:31 is exactly what would have been flagged live at 10:31.

Flagged
    A minute is anomalous when the forest ranks it above ``quantile`` of its training rows
    AND at least one signal moved in the bad direction by ``z_gate`` robust deviations and by
    a practical amount (e.g. the 5xx ratio at least doubled and rose by 2 points). Improvements
    (fewer errors, lower latency) never flag. Once flagged, a series stays flagged while a
    signal passes at ``hold_fraction`` of the gate (hysteresis: the rank of a long incident may
    dip as it goes on). Consecutive anomalous minutes (gaps up to ``merge_gap_minutes``) of
    related series (sharing a service: a failing dependency, the edges into it and the callers
    that fail with it) become one ``Incident``; a reason names a count signal only when the
    counts are 3 sigma beyond the baseline.

The same forest and refit schedule score a single metric series (``detect_series``: CSV or
CloudWatch exports, NAB files): there the series' level and its deviations from the recent,
long, short-window and seasonal baselines are the features, and ``analytics.series_detector``
averages the ranks of two forests (context and forecast-error features), gated by a robust
deviation (optionally Numenta's anomaly likelihood of it, and a flag when a value leaves the range
seen so far); an alert silences the series for ``refractory_fraction`` of its length.
"""

from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

import duckdb
import numpy as np
import polars as pl

from analytics import sketch
from meshlens.timewin import Window, iso

SIGNALS = ("rate", "err", "cerr", "p50", "p99", "bytes")
SIGNAL_WORDS = {"rate": "request rate", "err": "5xx ratio", "cerr": "4xx ratio",
                "p50": "p50", "p99": "p99", "bytes": "bytes"}


def IsolationForest(**options: Any) -> Any:  # noqa: N802 (stands in for the class)
    """scikit-learn's IsolationForest, imported on first use: the import alone costs seconds of CPU."""
    from sklearn.ensemble import IsolationForest as forest

    return forest(**options)


def training_rows(end: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """``analytics.series_detector.training_rows`` (imported on first use: it imports scikit-learn)."""
    from analytics.series_detector import training_rows as rows

    return rows(end, limit, rng)


_WARMING: list[threading.Thread] = []


def warm_up() -> None:
    """Import scikit-learn in a background thread, overlapping the reading and feature building.

    The import is Python work under the GIL while DuckDB and polars run without it, so on two
    cores most of its second or more disappears from the wall time. ``detect`` calls this.
    """
    if "sklearn.ensemble" in sys.modules or _WARMING:
        return
    thread = threading.Thread(target=_import_forest, name="meshlens-sklearn-import", daemon=True)
    _WARMING.append(thread)
    thread.start()


def _import_forest() -> None:
    import sklearn.ensemble  # noqa: F401

    import analytics.series_detector  # noqa: F401


def _finish_warm_up() -> None:
    """Wait for the background import (an import left running at interpreter exit is unsafe)."""
    for thread in _WARMING:
        thread.join()


@dataclass(frozen=True)
class LakeConfig:
    """Knobs of the lake detector (minute series)."""

    recent_minutes: int = 120
    baseline_lag_minutes: int = 30
    smooth_minutes: int = 5
    long_minutes: int = 15  # the slow-request test of sparse series looks this far back
    refit_minutes: int = 120
    warmup_minutes: int = 90
    history_days: int = 7
    min_series_requests: int = 20  # a series is scored from the minute its count since the load start reaches this
    train_rows: int = 8192
    reference_rows: int = 2048
    n_estimators: int = 48
    quantile: float = 0.975
    z_gate: float = 5.0
    hold_fraction: float = 0.5  # an incident lasts while a signal passes at this fraction of z_gate
    min_minutes: int = 2
    merge_gap_minutes: int = 3
    seed: int = 7


@dataclass(frozen=True)
class SeriesConfig:
    """Knobs of the single-series detector (tuned on NAB's tuning folders only)."""

    recent_points: int = 24
    long_points: int = 288
    refit_every: int = 200
    warmup_fraction: float = 0.15
    min_warmup: int = 50
    max_train: int = 5000
    n_estimators: int = 48
    short_points: int = 6
    likelihood_short: int = 5  # Numenta's anomaly likelihood over the forest ranks (series_detector)
    likelihood_long: int = 2000  # used when series_detector.SCORE_MODE is "likelihood"
    likelihood_learn: int = 150
    spatial_margin: float = 0.0  # this and the next three: NAB threshold optimisation on the tuning folders
    threshold: float = 0.97  # on the two-forest ensemble rank (series_detector.SCORE_MODE "rank"; bench/nab.py)
    z_gate: float = 5.0
    refractory_fraction: float = 0.1
    seed: int = 7


@dataclass
class Incident:
    """Consecutive anomalous minutes of related series, with the reasons in words."""

    start: datetime
    end: datetime  # exclusive: one step after the last anomalous point
    peak: datetime
    score: float
    services: list[str] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    env: str | None = None

    @property
    def summary(self) -> str:
        """One line: when, who, why."""
        who = ", ".join(self.services[:4]) + (" ..." if len(self.services) > 4 else "")
        why = self.reasons[0] if self.reasons else "unusual traffic"
        return f"{iso(self.start)} to {iso(self.end)}: {who}: {why}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"start": iso(self.start), "end": iso(self.end), "peak": iso(self.peak),
                "score": round(self.score, 4), "services": self.services,
                "edges": [f"{a} -> {b}" for a, b in self.edges], "reasons": self.reasons,
                "series": self.series, "env": self.env}


# --------------------------------------------------------------------------------------
# The causal forest (shared by the lake and the single-series detector)
# --------------------------------------------------------------------------------------
def causal_forest_scores(
    features: np.ndarray,
    times: np.ndarray,
    *,
    first_fit: int,
    refit_every: int,
    train_rows: int,
    n_estimators: int,
    seed: int,
    score_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Calibrated anomaly rank in [0, 1] per row (NaN before the first fit), fitted on the past only.

    ``times`` are integer steps sorted ascending; rows at step t are scored by a forest
    trained on rows with step < the refit boundary b <= t, and ranked against that forest's
    scores of its training rows. ``score_mask`` limits scoring to rows that could matter.
    """
    out = np.full(len(times), np.nan)
    if len(times) == 0:
        return out
    boundaries = np.arange(first_fit, int(times[-1]) + 1, max(1, refit_every))
    rng = np.random.default_rng(seed)
    for left, right in zip(boundaries, np.append(boundaries[1:], np.iinfo(np.int64).max)):
        lo, hi = np.searchsorted(times, [left, right])
        if hi <= lo:
            continue
        block = np.arange(lo, hi)
        if score_mask is not None:
            block = block[score_mask[lo:hi]]
        if len(block) == 0 or lo < 16:
            continue
        train = training_rows(lo, train_rows, rng)
        out[block] = _fit_and_rank(features[train], features[block], n_estimators, seed)
    return out


def _fit_and_rank(train: np.ndarray, rows: np.ndarray, n_estimators: int, seed: int) -> np.ndarray:
    model = IsolationForest(n_estimators=n_estimators, max_samples=min(256, len(train)),
                            random_state=seed)
    model.fit(train)
    reference = np.sort(-model.score_samples(train))
    return np.searchsorted(reference, -model.score_samples(rows), side="right") / len(reference)


# --------------------------------------------------------------------------------------
# Single metric series
# --------------------------------------------------------------------------------------
def series_scores(frame: pl.DataFrame, config: SeriesConfig = SeriesConfig()) -> pl.DataFrame:
    """Per point: timestamp, value, the context features, ``rank`` (forest), ``forest_score`` (gated), ``discord``
    (shape) and ``score``, the larger of the last two, in [0, 1]."""
    from analytics import series_detector  # the series scorer builds on the forest defined here

    frame = frame.sort("timestamp").drop_nulls("value").filter(pl.col("value").is_finite())
    feats = series_detector.raw_components(frame, config)
    forest = series_detector.combined_score(feats.get_column("rank").to_numpy(), feats.get_column("gate").to_numpy(),
                                            feats.get_column("spatial").to_numpy(), config)
    score = np.maximum(forest, feats.get_column("discord").to_numpy())
    return feats.with_columns(pl.Series("forest_score", forest), pl.Series("score", score))


def series_alerts(scored: pl.DataFrame, config: SeriesConfig = SeriesConfig()) -> np.ndarray:
    """Boolean alert per point: score over threshold and not within the refractory span of the last alert."""
    score = scored.get_column("score").to_numpy()
    refractory = max(1, int(config.refractory_fraction * len(score)))
    return alerts_from_scores(score, threshold=config.threshold, refractory=refractory)


def alerts_from_scores(score: np.ndarray, *, threshold: float, refractory: int) -> np.ndarray:
    """Causal alerting: alert when score >= threshold, then stay quiet for ``refractory`` points."""
    alerts = np.zeros(len(score), dtype=bool)
    quiet_until = -1
    for index in np.flatnonzero(score >= threshold).tolist():
        if index > quiet_until:
            alerts[index] = True
            quiet_until = index + refractory
    return alerts


def detect_series(frame: pl.DataFrame, config: SeriesConfig = SeriesConfig()) -> list[Incident]:
    """Incidents of one metric series (columns timestamp, value[, series]); causal, with reasons."""
    from analytics import series_detector  # imports scikit-learn
    name = frame.get_column("series")[0] if "series" in frame.columns and len(frame) else "series"
    scored = series_scores(frame.select("timestamp", "value"), config)
    flagged = scored.get_column("score").to_numpy() >= config.threshold
    incidents = []
    step = timedelta(seconds=series_detector.step_seconds(scored) or 60)
    for lo, hi in _runs(flagged, gap=max(1, int(config.refractory_fraction * len(flagged)))):
        part = scored.slice(lo, hi - lo)
        peak = int(np.argmax(np.abs(part.get_column("z_long").to_numpy())))
        row = part.row(peak, named=True)
        incidents.append(Incident(
            start=part.get_column("timestamp")[0], end=part.get_column("timestamp")[-1] + step,
            peak=row["timestamp"], score=float(part.get_column("score").max() or 0.0),  # type: ignore[arg-type]
            services=[str(name)], reasons=[_series_reason(str(name), row, scored, lo, shape=_shape_driven(part))],
            series=[str(name)]))
    return incidents


def _series_reason(name: str, row: dict[str, Any], scored: pl.DataFrame, lo: int, *, shape: bool = False) -> str:
    before = scored.slice(max(0, lo - 288), min(288, lo)).get_column("value")
    base = float(before.median()) if len(before) else float("nan")  # type: ignore[arg-type]
    value = float(row["value"])
    ratio = f" ({value / base:.1f}x)" if base and math.isfinite(base) and base > 0 else ""
    level = (f"{_num(value)} vs {_num(base)} baseline{ratio}, "
             f"{abs(row['z_long']):.1f} robust deviations {'above' if row['z_long'] > 0 else 'below'}")
    if shape:
        return f"{name}: a shape never seen before (its last points match nothing earlier); {level}"
    return f"{name} {level}"


def _shape_driven(part: pl.DataFrame) -> bool:
    """True when the first alert of a run came from the discord rank rather than the forests."""
    first = part.row(0, named=True)
    return bool(first["discord"] > first["forest_score"])


def _runs(flags: np.ndarray, *, gap: int) -> list[tuple[int, int]]:
    """[lo, hi) index runs of True, merging runs separated by at most ``gap`` False."""
    idx = np.flatnonzero(flags)
    if len(idx) == 0:
        return []
    splits = np.flatnonzero(np.diff(idx) > gap + 1)
    starts = np.concatenate([[idx[0]], idx[splits + 1]])
    ends = np.concatenate([idx[splits], [idx[-1]]]) + 1
    return list(zip(starts.tolist(), ends.tolist()))


def _num(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


# --------------------------------------------------------------------------------------
# The lake: per-service and per-edge minute series
# --------------------------------------------------------------------------------------
LAKE_FEATURES = ("z_rate", "z_err", "z_cerr", "z_p50", "z_p99", "z_bytes", "z_slow",
                 "zs_rate", "zs_err", "zs_p99", "zw_rate", "zw_err", "zw_p99")
UPWARD_ONLY = ("z_err", "z_cerr", "z_p50", "z_p99", "z_slow", "zs_err", "zs_p99", "zw_err", "zw_p99")
MINUTE_MEASURES = ("requests", "errors_5xx", "client_errors_4xx", "bytes")
SERIES_KEYS = ("kind", "caller", "service", "env", "sid")
SERIES = "series_id"
"""Rolling statistics run per series (``over``), never across two series."""


def detect(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str | None = None,
           env: str | None = None, config: LakeConfig = LakeConfig()) -> list[Incident]:
    """Incidents in ``window`` over every service and edge (or one service and the edges into it)."""
    warm_up()
    try:
        scored = score_lake(conn, window=window, service=service, env=env, config=config)
    finally:
        _finish_warm_up()
    if scored.is_empty():
        return []
    episodes = _episodes(scored, config)
    known = scored.filter(pl.col("kind") == "edge").select("caller", "service").unique()
    return _group(episodes, config, known_edges=set(known.iter_rows()))


def score_lake(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str | None = None,
               env: str | None = None, config: LakeConfig = LakeConfig()) -> pl.DataFrame:
    """Every series-minute of ``window`` with its features, forest rank and ``flagged``.

    A series enters from the minute its requests since the load start reach
    ``min_series_requests`` (a causal rule: a live run and a later batch run agree): almost
    no signal test can pass on a quieter series, and each would cost as much as a busy one.
    """
    start = _floor_minute(window.start)
    load = Window(start - timedelta(days=config.history_days), window.end)
    minutes, series = load_minutes(conn, window=load, service=service, env=env)
    minutes = _busy_series(minutes, least=config.min_series_requests)
    dense = _dense_minutes(minutes, series, end=window.end, pad=0)
    if dense.is_empty():
        return dense
    feats = _lake_features(dense, config).filter(~pl.col("pad") & (pl.col("minute") >= start - timedelta(days=1)))
    steps = feats.get_column("step").to_numpy()
    mask = (feats.get_column("significant").to_numpy()) & (feats.get_column("minute") >= start).to_numpy()
    rank = _lake_ranks(feats, steps=steps, mask=mask, config=config)
    feats = feats.with_columns(pl.Series("rank", rank).fill_nan(None))  # NaN compares as largest in polars
    flagged = ((pl.col("rank") >= config.quantile) & pl.col("significant")).fill_null(False)
    return _hold(feats.with_columns(flagged.alias("flagged"))).filter(pl.col("minute") >= start)


def _hold(feats: pl.DataFrame) -> pl.DataFrame:
    """Keep flagging after a flagged minute while a signal still passes at the holding gate.

    Causal hysteresis: minute m stays flagged when every minute from a flagged one up to m
    ``holding``; the forest's rank may dip (it ranks against a model fitted before the
    incident) without splitting one incident into pieces. Rows are in (series, minute) order.
    """
    flagged = feats.get_column("flagged").to_numpy().astype(np.int64)
    hold = feats.get_column("holding").to_numpy() | (flagged > 0)
    sid = feats.get_column("series_id").to_numpy()
    breaks = ~hold | np.r_[True, sid[1:] != sid[:-1]]
    run_start = np.maximum.accumulate(np.where(breaks, np.arange(len(hold)), 0))
    seen = np.cumsum(flagged)
    held = hold & (seen - seen[run_start] + flagged[run_start] > 0)
    return feats.with_columns(pl.col("flagged").alias("flagged_core"), pl.Series("flagged", held))


# -- reading: one scan of the minute rollup (raw rows where it was not built) -------------------
def load_minutes(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str | None = None,
                 env: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-service and per-edge minute rows of ``window`` in one scan, and the table of series.

    Returns ``(minutes, series)``: minutes has ``series_id, minute, requests, errors_5xx,
    client_errors_4xx, bytes, p50_ms, p99_ms``; series has ``series_id`` and ``kind`` ('service'
    or 'edge'), ``caller`` ('' for a service), ``service``, ``env``, ``sid`` (the display name).
    The scan reads ``edges_1m`` for the dates it holds and raw ``requests`` only for the others
    (and for a window end inside a minute); percentiles are nearest-rank reads of the latency
    sketch (analytics.sketch, 1% relative error), merged per minute for each service and each
    edge. The list of edges comes from the day rollup (a few rows per edge) and is checked
    against the scanned rows: an edge it lacks makes the reader fall back to a full DISTINCT.
    """
    plan = _source_plan(conn, window=window, service=service, env=env)
    sql, params = _source_sql(plan)
    key = "hash(caller, service, env)"
    rows = conn.sql(f"SELECT {key} AS h, (epoch_us(minute) // 60000000)::BIGINT AS m, k, c, r, e5, e4, b "
                    f"FROM ({sql})", params=params).fetchnumpy()
    rows = {name: np.asarray(col) for name, col in rows.items()}
    edges = _edge_list(conn, plan)
    eid = _edge_ids(edges, rows["h"])
    if eid is None:  # the day rollup lacks an edge the scan holds: list the scan's own edges
        edges = conn.sql(f"SELECT DISTINCT {key} AS h, caller, service, env FROM ({sql}) {EDGE_ORDER}",
                         params=params).pl()
        eid = _edge_ids(edges, rows["h"])
    rows["eid"] = eid
    del rows["h"]
    return _minute_rows(edges.drop("h"), rows)


EDGE_ORDER = "ORDER BY service, env, caller"
"""Edges of one service get neighbouring ids, so the per-service merge finds its rows in sorted runs."""


def _edge_ids(edges: pl.DataFrame, row_hashes: np.ndarray) -> np.ndarray | None:
    """Index into ``edges`` of each row's edge hash; None when a hash is not in ``edges``."""
    hashes = edges.get_column("h").to_numpy()
    if len(hashes) == 0:
        return None if len(row_hashes) else np.zeros(0, dtype=np.int64)
    order = np.argsort(hashes)
    at = np.minimum(np.searchsorted(hashes, row_hashes, sorter=order), len(hashes) - 1)
    return order[at] if np.array_equal(hashes[order][at], row_hashes) else None


@dataclass(frozen=True)
class _SourcePlan:
    """Where each part of a window is read from: ``edges_1m`` for rolled dates, raw rows elsewhere."""

    filters: dict[str, str]
    rolled: list[str]  # dates read from the rollup over ``rollup_window``
    rollup_window: Window | None
    raw_windows: list[Window]  # read from raw requests (dates without a rollup, the minute holding the end)


def _source_plan(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str | None,
                 env: str | None) -> _SourcePlan:
    filters = {col: value for col, value in (("service", service), ("env", env)) if value}
    end_floor = _floor_minute(window.end)
    rolled = _rollup_dates(conn, Window(window.start, max(end_floor, window.start)))
    if not rolled or end_floor <= window.start:
        return _SourcePlan(filters, [], None, [window])
    raw: list[Window] = []
    day = window.start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < window.end:  # whole dates without a rollup, clipped to the window
        nxt = day + timedelta(days=1)
        if day.date().isoformat() not in rolled:
            _append_window(raw, Window(max(day, window.start), min(nxt, window.end)))
        day = nxt
    if end_floor < window.end:
        _append_window(raw, Window(end_floor, window.end))
    return _SourcePlan(filters, rolled, Window(window.start, end_floor), raw)


def _append_window(windows: list[Window], part: Window) -> None:
    """Add ``part`` (windows come in time order), merging it into the last one when they touch."""
    if windows and windows[-1].end >= part.start:
        windows[-1] = Window(windows[-1].start, max(windows[-1].end, part.end))
    else:
        windows.append(part)


def _source_sql(plan: _SourcePlan) -> tuple[str, list[object]]:
    """Minute sketch rows (caller, service, env, minute, k, c, r, e5, e4, b): rollup dates, then raw rows."""
    from analytics.red import where_sql  # the window/partition filter the metrics engineer maintains

    parts, params = [], []
    if plan.rollup_window is not None:
        where, p = where_sql("minute", window=plan.rollup_window, filters=plan.filters)
        parts.append(f"""
            SELECT coalesce(caller, 'unknown') AS caller, coalesce(service, '') AS service, coalesce(env, '') AS env,
                   minute, coalesce(lat_key, {sketch.ZERO_KEY})::SMALLINT AS k, duration_count AS c, requests AS r,
                   errors_5xx AS e5, client_errors_4xx AS e4, coalesce(bytes_in, 0) + coalesce(bytes_out, 0) AS b
            FROM edges_1m WHERE {where} AND date IN ({_dates_sql(plan.rolled)})""")
        params += p
    for raw in plan.raw_windows:
        where, p = where_sql("ts", window=raw, filters=plan.filters)
        parts.append(f"""
            SELECT coalesce(caller, 'unknown') AS caller, coalesce(service, '') AS service, coalesce(env, '') AS env,
                   date_trunc('minute', ts) AS minute, coalesce({sketch.key_sql('duration_ms')}, {sketch.ZERO_KEY})::SMALLINT AS k,
                   count(duration_ms) AS c, count(*) AS r,
                   count(*) FILTER (WHERE status BETWEEN 500 AND 599) AS e5,
                   count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS e4,
                   sum(coalesce(bytes_in, 0) + coalesce(bytes_out, 0)) AS b
            FROM requests WHERE {where}
            GROUP BY ALL""")
        params += p
    return " UNION ALL ".join(parts), params


def _dates_sql(dates: list[str]) -> str:
    return ", ".join(f"DATE '{d}'" for d in dates)


def _edge_list(conn: duckdb.DuckDBPyConnection, plan: _SourcePlan) -> pl.DataFrame:
    """(h, caller, service, env) of the edges of the plan's dates, from ``edges_1d`` and the raw windows.

    Far fewer rows than the minute scan; may hold edges without a row in the window (harmless).
    """
    from analytics.red import where_sql

    key = "hash(caller, service, env) AS h, caller, service, env"
    names = "coalesce(caller, 'unknown') AS caller, coalesce(service, '') AS service, coalesce(env, '') AS env"
    parts, params = [], []
    if plan.rollup_window is not None:
        where, p = where_sql("day", window=_whole_days(plan.rollup_window), filters=plan.filters)
        parts.append(f"SELECT {names} FROM edges_1d WHERE {where} AND date IN ({_dates_sql(plan.rolled)})")
        params += p
    for raw in plan.raw_windows:
        where, p = where_sql("ts", window=raw, filters=plan.filters)
        parts.append(f"SELECT {names} FROM requests WHERE {where}")
        params += p
    return conn.sql(f"SELECT DISTINCT {key} FROM ({' UNION ALL '.join(parts)}) {EDGE_ORDER}", params=params).pl()


def _whole_days(window: Window) -> Window:
    start = window.start.replace(hour=0, minute=0, second=0, microsecond=0)
    end = (window.end - timedelta(microseconds=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return Window(start, end + timedelta(days=1))


def _rollup_dates(conn: duckdb.DuckDBPyConnection, window: Window) -> list[str]:
    """Dates of the window that the minute edge rollup holds."""
    last = (window.end - timedelta(microseconds=1)).date()
    rows = conn.execute(f"SELECT DISTINCT date FROM edges_1m WHERE date >= DATE '{window.start.date()}' "
                        f"AND date <= DATE '{last}'").fetchall()
    return sorted(str(r[0]) for r in rows if r[0] is not None)


def _ts_sql(moment: datetime) -> str:
    return f"TIMESTAMPTZ '{moment.strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"


def _minute_rows(edges: pl.DataFrame, rows: dict[str, np.ndarray]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sum the sketch rows per (edge, minute) and per (service, minute); read p50/p99.

    ``edges`` come in ``EDGE_ORDER`` and ``rows["eid"]`` indexes them. The series ids number
    the edges that have rows by (caller, service, env), then their services in order of first
    appearance, as the detector always has: the forest's training sample follows row order.
    """
    eid = np.asarray(rows.get("eid", np.zeros(0)), dtype=np.int64)
    listed = edges.with_row_index("pos").filter(pl.Series(np.bincount(eid, minlength=len(edges)) > 0))
    named = listed.sort("caller", "service", "env").with_row_index("eid")
    services = named.select("service", "env").unique(maintain_order=True).with_row_index("svc")
    named = named.join(services, on=["service", "env"], how="left", maintain_order="left")
    n_edges = len(named)
    series = pl.concat([
        named.select(pl.col("eid").cast(pl.Int64).alias("series_id"), pl.lit("edge").alias("kind"), "caller", "service", "env"),
        services.select((pl.col("svc").cast(pl.Int64) + n_edges).alias("series_id"), pl.lit("service").alias("kind"),
                        pl.lit("").alias("caller"), "service", "env")])
    sid = pl.when(pl.col("kind") == "edge").then(pl.col("caller") + " -> " + pl.col("service")).otherwise(pl.col("service"))
    series = series.with_columns(sid.alias("sid"))
    if len(eid) == 0:
        return _empty_minutes(), series
    return _merge_minutes(eid, rows, edges=edges, named=named, n_edges=n_edges), series


def _merge_minutes(eid: np.ndarray, rows: dict[str, np.ndarray], *, edges: pl.DataFrame, named: pl.DataFrame,
                   n_edges: int) -> pl.DataFrame:
    """Both merges on one sort: rows by (edge position, minute, key) are sorted runs per service."""
    pos = named.get_column("pos").to_numpy().astype(np.int64)
    edge_series = np.full(len(edges), -1, dtype=np.int64)
    edge_series[pos] = named.get_column("eid").to_numpy()
    new_service = (pl.col("service") != pl.col("service").shift()) | (pl.col("env") != pl.col("env").shift())
    service_rank = edges.select(new_service.fill_null(True).cast(pl.Int64).cum_sum() - 1).to_series().to_numpy()
    service_series = np.full(int(service_rank.max()) + 1, -1, dtype=np.int64)
    service_series[service_rank[pos]] = named.get_column("svc").to_numpy().astype(np.int64) + n_edges
    m0 = int(rows["m"].min())
    span = (int(rows["m"].max()) - m0 + 1) << 16  # key = (id * minutes + minute) * 65536 + latency key
    within = ((rows["m"] - m0) << 16) + (rows["k"].astype(np.int64) - sketch.ZERO_KEY)
    measures = {name: rows[col] for name, col in (("requests", "r"), ("errors_5xx", "e5"),
                                                  ("client_errors_4xx", "e4"), ("bytes", "b"), ("c", "c"))}
    by_edge = _sort_order(eid * span + within)
    if by_edge is not None:
        eid, within = eid[by_edge], within[by_edge]
        measures = {name: col[by_edge] for name, col in measures.items()}
    return pl.concat([_merge_sketch_rows(gid * span + within, ids=ids, span=span, m0=m0, measures=measures)
                      for gid, ids in ((eid, edge_series), (service_rank[eid], service_series))])


def _sort_order(key: np.ndarray) -> np.ndarray | None:
    """Sorting permutation of ``key`` (None when already sorted); a merge sort when it is mostly sorted runs."""
    descents = int(np.count_nonzero(key[1:] < key[:-1]))
    if descents == 0:
        return None
    return np.argsort(key, kind="stable" if descents < len(key) // 16 else "quicksort")


def _merge_sketch_rows(key: np.ndarray, *, ids: np.ndarray, span: int, m0: int,
                       measures: dict[str, np.ndarray]) -> pl.DataFrame:
    """Per (gid, minute) of ``key``: summed measures and nearest-rank p50/p99 from the merged sketch (numpy).

    ``key`` is (gid * minutes + minute) * 65536 + latency key; the output's ``series_id`` is ``ids[gid]``.
    """
    order = _sort_order(key)
    take = (lambda col: col) if order is None else (lambda col: col[order])  # noqa: E731
    key = take(key)
    group = key >> 16
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sums = {name: np.add.reduceat(take(col), starts).astype(np.float64, copy=False)
            for name, col in measures.items() if name != "c"}
    counts = take(measures["c"])
    cum = np.cumsum(counts)
    tot = np.add.reduceat(counts, starts)
    before = cum[starts] - counts[starts]
    first = key[starts]
    out = {"series_id": ids[first // span], "m": (first % span >> 16) + m0, **sums}
    for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
        frac = Fraction(str(q))
        rank = np.maximum(1, (tot * frac.numerator + frac.denominator - 1) // frac.denominator)
        at = np.minimum(np.searchsorted(cum, before + rank, side="left"), len(cum) - 1)
        value = _estimate((key[at] & 0xFFFF) + sketch.ZERO_KEY)
        out[name] = np.where(tot > 0, value, np.nan)
    frame = pl.DataFrame(out)
    return frame.with_columns(pl.from_epoch(pl.col("m") * 60, time_unit="s").dt.cast_time_unit("us")
                              .dt.replace_time_zone("UTC").alias("minute"),
                              pl.col("p50_ms").fill_nan(None), pl.col("p99_ms").fill_nan(None)).drop("m")


def _estimate(keys: np.ndarray) -> np.ndarray:
    """numpy twin of sketch.estimate."""
    value = 2.0 * np.power(sketch.GAMMA, keys.astype(np.float64)) / (sketch.GAMMA + 1.0)
    return np.where(keys == sketch.ZERO_KEY, 0.0, value)


def _empty_minutes() -> pl.DataFrame:
    return pl.DataFrame(schema={"series_id": pl.Int64, **{c: pl.Float64 for c in MINUTE_MEASURES},
                                "p50_ms": pl.Float64, "p99_ms": pl.Float64, "minute": pl.Datetime("us", "UTC")})


def _busy_series(minutes: pl.DataFrame, *, least: int) -> pl.DataFrame:
    """Each series from the minute its cumulative requests reach ``least`` (earlier minutes dropped)."""
    ordered = minutes.sort("series_id", "minute")
    return ordered.filter(pl.col("requests").cum_sum().over("series_id") >= least)


def _dense_minutes(frame: pl.DataFrame, series: pl.DataFrame, *, end: datetime, pad: int) -> pl.DataFrame:
    """Every minute from a series' first minute to the window end (zero requests where none).

    Each series is preceded by ``pad`` empty (null) rows, so that rolling windows computed over
    the whole column, series after series, never reach into the previous series: far faster
    than per-group windows, and exact because rolling statistics skip nulls. Built with numpy:
    each series owns a block of rows and its minutes are scattered into it.
    """
    if frame.is_empty():
        return frame
    sid = frame.get_column("series_id").to_numpy()
    minute = (frame.get_column("minute").dt.epoch("s").to_numpy() // 60).astype(np.int64)
    last = int(_floor_minute(end - timedelta(microseconds=1)).timestamp() // 60)
    ids, inverse = np.unique(sid, return_inverse=True)
    first = np.full(len(ids), np.iinfo(np.int64).max)
    np.minimum.at(first, inverse, minute)
    lengths = last - first + 1 + pad
    offsets = np.r_[0, np.cumsum(lengths)[:-1]]
    total = int(lengths.sum())
    owner = np.repeat(np.arange(len(ids)), lengths)
    rel = np.arange(total) - offsets[owner]  # minutes since the series' first pad row
    at = offsets[inverse] + (minute - first[inverse] + pad)
    age = rel - pad
    is_pad = age < 0
    origin = int(first.min()) - pad
    columns: dict[str, Any] = {"series_id": ids[owner], "step": first[owner] - pad + rel - origin,
                               "age": age, "pad": is_pad}
    for name in (*MINUTE_MEASURES, "p50_ms", "p99_ms"):
        values = np.full(total, 0.0 if name in MINUTE_MEASURES else np.nan)
        values[at] = frame.get_column(name).fill_null(np.nan).to_numpy()
        values[is_pad] = np.nan
        columns[name] = values
    dense = pl.DataFrame(columns).with_columns(
        *[pl.col(c).fill_nan(None) for c in (*MINUTE_MEASURES, "p50_ms", "p99_ms")],
        pl.from_epoch((pl.col("step") + origin) * 60, time_unit="s").dt.cast_time_unit("us")
        .dt.replace_time_zone("UTC").alias("minute"))
    return dense.join(series.select("series_id", *SERIES_KEYS), on="series_id", how="left", maintain_order="left")


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _lake_features(dense: pl.DataFrame, config: LakeConfig) -> pl.DataFrame:
    """Deviations of the trailing ``smooth_minutes`` from a lagged baseline (earlier minutes only).

    The baseline covers [m - lag - recent, m - lag): the lag keeps the first minutes of an
    incident out of its own baseline, so a 20-minute outage is judged against the hour before.
    """
    w, lag, k, over = config.recent_minutes, config.baseline_lag_minutes, config.smooth_minutes, ["sid", "env"]
    frame = dense.with_columns(
        pl.col("requests").rolling_sum(window_size=k, min_samples=1).over(SERIES).alias("n_k"),
        pl.col("errors_5xx").rolling_sum(window_size=k, min_samples=1).over(SERIES).alias("e_k"),
        pl.col("client_errors_4xx").rolling_sum(window_size=k, min_samples=1).over(SERIES).alias("c_k"),
        pl.col("requests").rolling_mean(window_size=k, min_samples=1).over(SERIES).log1p().alias("l_rate"),
        pl.col("bytes").rolling_mean(window_size=k, min_samples=1).over(SERIES).log1p().alias("l_bytes"),
        *[pl.col(f"{n}_ms").clip(0.01).log().forward_fill().rolling_median(window_size=k, min_samples=1)
          .over(SERIES).alias(f"l_{n}") for n in ("p50", "p99")])
    names = ("rate", "bytes", "p50", "p99")
    frame = _with_lagged_medians(frame, {f"b_{n}": pl.col(f"l_{n}") for n in names}, window=w, lag=lag)
    floors = {"rate": 0.1, "bytes": 0.1, "p50": 0.05, "p99": 0.05}
    frame = _with_lagged_medians(frame, {f"mad_{n}": (pl.col(f"l_{n}") - pl.col(f"b_{n}")).abs() for n in names},
                                 window=w, lag=lag)
    frame = frame.with_columns([pl.max_horizontal(pl.col(f"mad_{n}") * 1.4826, pl.lit(floors[n])).alias(f"s_{n}")
                                for n in names]).drop([f"mad_{n}" for n in names])
    lagged_sum = lambda col: pl.col(col).rolling_sum(window_size=w, min_samples=w // 4).shift(lag).over(SERIES)  # noqa: E731
    frame = frame.with_columns([((lagged_sum(col) + 1) / (lagged_sum("requests") + 100)).alias(f"p0_{name}")
                                for name, col in (("err", "errors_5xx"), ("cerr", "client_errors_4xx"))])
    frame = _slow_features(frame, config)
    evidence = (pl.col("n_k") / 20.0).clip(0.0, 1.0).sqrt()  # latency of few requests is weak evidence
    feats = frame.with_columns(
        _poisson_z(k).alias("z_rate"),
        ((pl.col("l_bytes") - pl.col("b_bytes")) / pl.col("s_bytes") * evidence).alias("z_bytes"),
        *[((pl.col(f"l_{n}") - pl.col(f"b_{n}")) / pl.col(f"s_{n}") * evidence).alias(f"z_{n}") for n in ("p50", "p99")],
        _binomial_z("e_k", "n_k", "p0_err").alias("z_err"),
        _binomial_z("c_k", "n_k", "p0_cerr").alias("z_cerr"),
        _binomial_z("errors_5xx", "requests", "p0_err").alias("z1_err"))
    feats = _seasonal(feats, period=1440, prefix="zs", over=over)
    feats = _seasonal(feats, period=10080, prefix="zw", over=over, max_lags=2)
    return feats.with_columns(_significance(config).alias("significant"),
                              _significance(config, holding=True).alias("holding"),
                              _minute_bad().fill_null(False).alias("minute_bad"))


def _with_lagged_medians(frame: pl.DataFrame, exprs: dict[str, pl.Expr], *, window: int, lag: int,
                         least: int | None = None) -> pl.DataFrame:
    """``frame`` plus ``_lagged_median`` of each expression (``lag`` 0: a trailing rolling median).

    Nulls cost: polars' null-skipping rolling median is about twice as slow. Baselines and the
    deviations from them are null only in a series' first minutes (too little history yet);
    without those rows every window holds the same non-null values, so the median runs on
    gap-free data and is scattered back, then shifted by ``lag`` inside the series. Series
    with nulls after a value (minutes without traffic) take the null-skipping median, alone.
    """
    least = window // 4 if least is None else least
    values = frame.select(pl.col(SERIES), **exprs)
    sid = values.get_column(SERIES).to_numpy()
    same = sid[1:] == sid[:-1]
    index = np.arange(len(sid))
    position = index - np.maximum.accumulate(np.where(np.r_[True, ~same], index, 0))  # row within its series
    columns = []
    for name in exprs:
        col = values.get_column(name)
        valid = col.is_not_null().to_numpy()
        holed = np.isin(sid, np.unique(sid[:-1][valid[:-1] & ~valid[1:] & same]))  # a null after a value
        full = np.full(len(col), np.nan)
        for rows, median in ((valid & ~holed, _rolling_median_rows), (holed, _rolling_median_rows)):
            if rows.any():
                full[rows] = median(sid[rows], col.filter(pl.Series(rows)), window=window, least=least)
        shifted = np.full(len(col), np.nan)
        shifted[lag:] = full[: len(col) - lag]
        shifted[position < lag] = np.nan
        columns.append(pl.Series(name, shifted).fill_nan(None))
    return frame.with_columns(columns)


def _rolling_median_rows(sid: np.ndarray, values: pl.Series, *, window: int, least: int) -> np.ndarray:
    """Rolling median of ``values`` within each series (NaN where fewer than ``least`` values)."""
    kept = pl.DataFrame({SERIES: sid, "v": values})
    median = kept.select(pl.col("v").rolling_median(window_size=window, min_samples=least).over(SERIES))
    return median.to_series().fill_null(np.nan).to_numpy()


def _lagged_median(expr: pl.Expr, window: int, lag: int, *, least: int | None = None) -> pl.Expr:
    """Median of the series' values in [m - lag - window, m - lag) (at least ``least`` of them).

    Computed as a rolling median shifted by ``lag`` within each series: the same window, and
    polars' fast path when the series has no gaps (a null-skipping median is ~3x slower).
    """
    least = window // 4 if least is None else least
    return expr.rolling_median(window_size=window, min_samples=least).shift(lag).over(SERIES)


def _slow_features(frame: pl.DataFrame, config: LakeConfig) -> pl.DataFrame:
    """The slow-request test: median minute p50 of the last ``long_minutes`` vs the lagged baseline.

    Each minute with traffic is one sample (its p50); the trailing median of ``m_slow`` samples
    is compared with the median and MAD of the minutes in the baseline window, scaled as a
    median of ``m_slow`` draws (1.25 sigma / sqrt(m)). A dependency of a few requests a minute
    that turns 400 ms slower for an hour is thus seen, where the 5-minute p99 has too few requests.
    """
    w, lag, long = config.recent_minutes, config.baseline_lag_minutes, config.long_minutes
    frame = frame.with_columns(pl.when(pl.col("requests") > 0).then(pl.col("p50_ms").clip(0.01).log()).alias("x_p50"))
    x = pl.col("x_p50")
    frame = _with_lagged_medians(frame, {"l_slow": x}, window=long, lag=0, least=3).with_columns(
        x.is_not_null().cast(pl.Float64).rolling_sum(window_size=long, min_samples=1).over(SERIES).alias("m_slow"),
        pl.col("requests").rolling_sum(window_size=long, min_samples=1).over(SERIES).alias("n_slow"))
    frame = _with_lagged_medians(frame, {"b_slow": x}, window=w, lag=lag, least=w // 8)
    frame = _with_lagged_medians(frame, {"mad_slow": (x - pl.col("b_slow")).abs()}, window=w, lag=lag, least=w // 8)
    frame = frame.with_columns(pl.max_horizontal(pl.col("mad_slow") * 1.4826, pl.lit(0.05)).alias("s_slow")).drop("mad_slow")
    scale = 1.25 * pl.col("s_slow") / pl.max_horizontal(pl.col("m_slow"), pl.lit(1.0)).sqrt()
    return frame.with_columns(((pl.col("l_slow") - pl.col("b_slow")) / scale).alias("z_slow"))


def _minute_bad() -> pl.Expr:
    """This minute on its own still looks bad (used to trim an incident's tail)."""
    ratio = pl.col("errors_5xx") / pl.max_horizontal(pl.col("requests"), pl.lit(1.0))
    slow = ((pl.col("p50_ms").clip(0.01).log() - pl.col("b_p50") >= math.log(1.5)) | (
        pl.col("p99_ms").clip(0.01).log() - pl.col("b_p99") >= math.log(2.0))) & (pl.col("requests") >= 5)
    sparse_slow = ((pl.col("x_p50") - pl.col("b_slow") >= math.log(1.5))
                   & (pl.col("p50_ms") - pl.col("b_slow").exp() >= 50))  # one slow minute of a sparse series
    drop = (pl.col("requests").log1p() - pl.col("b_rate") <= -math.log(2.0)) & (pl.col("b_rate") >= math.log(11.0))
    client = pl.col("client_errors_4xx") / pl.max_horizontal(pl.col("requests"), pl.lit(1.0))
    return (((pl.col("errors_5xx") >= 1) & (ratio >= 2 * pl.col("p0_err") + 0.01))
            | ((pl.col("client_errors_4xx") >= 1) & (client >= 2 * pl.col("p0_cerr") + 0.02))
            | slow.fill_null(False) | sparse_slow.fill_null(False) | drop)


def _poisson_z(k: int) -> pl.Expr:
    """Requests in the last k minutes vs the baseline rate, Poisson with 10% overdispersion."""
    expected = (pl.col("b_rate").exp() - 1) * k
    return (pl.col("n_k") - expected) / (expected + (0.1 * expected) ** 2 + 1).sqrt()


def _binomial_z(errors: str, requests: str, p0: str) -> pl.Expr:
    n, p, e = pl.col(requests), pl.col(p0), pl.col(errors)
    var = n * p * (1 - p) + (0.5 * n * p) ** 2 + 0.25
    return (e - n * p) / var.sqrt()


def _seasonal(frame: pl.DataFrame, *, period: int, prefix: str, over: list[str], max_lags: int = 7) -> pl.DataFrame:
    """Deviation from the same minute ``period`` minutes earlier (median over up to ``max_lags``), >= 2 needed."""
    if frame.is_empty() or (frame.get_column("age").max() or 0) < 2 * period:  # type: ignore[operator]
        return frame.with_columns([pl.lit(0.0).alias(f"{prefix}_{n}") for n in ("rate", "err", "p99")])
    lags = range(1, max_lags + 1)
    def lagged(col: str) -> list[pl.Expr]:  # only lags inside the same series
        return [pl.when(pl.col("age") >= period * k).then(pl.col(col).shift(period * k)) for k in lags]
    count = pl.sum_horizontal([e.is_not_null().cast(pl.Int32) for e in lagged("l_rate")])
    enough = count >= 2
    rate = (pl.col("l_rate") - pl.concat_list(lagged("l_rate")).list.drop_nulls().list.median()) / pl.col("s_rate")
    p99 = ((pl.col("l_p99") - pl.concat_list(lagged("l_p99")).list.drop_nulls().list.median()) / pl.col("s_p99")
           * (pl.col("n_k") / 20.0).clip(0.0, 1.0).sqrt())
    past_e = pl.sum_horizontal(lagged("e_k"))
    past_n = pl.sum_horizontal(lagged("n_k"))
    p0 = (past_e + 1) / (past_n + 100)
    n = pl.col("n_k")
    err = (pl.col("e_k") - n * p0) / (n * p0 * (1 - p0) + (0.5 * n * p0) ** 2 + 0.25).sqrt()
    return frame.with_columns(*[pl.when(enough).then(expr).otherwise(0.0).alias(f"{prefix}_{name}")
                                for name, expr in (("rate", rate), ("err", err), ("p99", p99))])


def _significance(config: LakeConfig, *, holding: bool = False) -> pl.Expr:
    """A signal moved the bad way by ``z_gate`` deviations (or its holding fraction) and by a practical amount."""
    gate = config.z_gate * (config.hold_fraction if holding else 1.0)
    tests = _signal_tests(config, gate=gate, holding=holding)
    return pl.any_horizontal(*[expr.fill_null(False) for expr in tests.values()])


def _signal_tests(config: LakeConfig, *, gate: float, holding: bool = False) -> dict[str, pl.Expr]:
    n = pl.col("n_k")
    least_n, least_m = (5, 3) if holding else (10, 5)  # slow test: requests and minutes with traffic
    ratio = pl.col("e_k") / pl.max_horizontal(n, pl.lit(1.0))
    cratio = pl.col("c_k") / pl.max_horizontal(n, pl.lit(1.0))
    base_rate = pl.col("b_rate").exp() - 1
    return {
        "err": (pl.col("z_err") >= gate) & (pl.col("e_k") >= 3)
        & (ratio >= 2 * pl.col("p0_err")) & (ratio - pl.col("p0_err") >= 0.02),
        "cerr": (pl.col("z_cerr") >= gate) & (pl.col("c_k") >= 5) & (n >= 20)
        & (cratio >= 2 * pl.col("p0_cerr")) & (cratio - pl.col("p0_cerr") >= 0.05),
        "p99": (pl.col("z_p99") >= gate) & (n >= 20) & (pl.col("l_p99") - pl.col("b_p99") >= math.log(1.5))
        & (pl.col("l_p99").exp() - pl.col("b_p99").exp() >= 50),
        "p50": (pl.col("z_p50") >= gate) & (n >= 20) & (pl.col("l_p50") - pl.col("b_p50") >= math.log(1.5))
        & (pl.col("l_p50").exp() - pl.col("b_p50").exp() >= 20),
        "slow": (pl.col("z_slow") >= gate) & (pl.col("n_slow") >= least_n) & (pl.col("m_slow") >= least_m)
        & (pl.col("l_slow") - pl.col("b_slow") >= math.log(1.5)) & (pl.col("l_slow").exp() - pl.col("b_slow").exp() >= 50),
        "rate": (pl.col("z_rate").abs() >= gate) & (base_rate >= 10)
        & ((pl.col("l_rate") - pl.col("b_rate")).abs() >= math.log(2.0)),
    }


def _feature_matrix(feats: pl.DataFrame) -> np.ndarray:
    cols = [pl.col(c).clip(-3.0, None) if c in UPWARD_ONLY else pl.col(c) for c in LAKE_FEATURES]
    matrix = np.nan_to_num(feats.select(cols).to_numpy(), nan=0.0, posinf=50.0, neginf=-50.0)
    return np.sign(matrix) * np.log1p(np.abs(matrix))  # compress heavy tails: rank by order of magnitude


def _lake_ranks(feats: pl.DataFrame, *, steps: np.ndarray, mask: np.ndarray, config: LakeConfig) -> np.ndarray:
    """Causal forest ranks of the ``mask`` rows (NaN elsewhere): one forest across all series.

    Refit boundaries fall every ``refit_minutes`` from the first fit; a forest is fitted only
    for a span that has a row to score, on up to ``train_rows`` rows before the boundary (the
    most recent half and a random half of the older ones), and ranks against the scores of
    ``reference_rows`` of them. Only the rows the forest sees are turned into feature vectors.
    """
    out = np.full(len(steps), np.nan)
    if len(steps) == 0 or not mask.any():
        return out
    order = np.argsort(steps, kind="stable")
    ordered = steps[order]
    first_fit = max(int(ordered[0]) + config.warmup_minutes, 0)
    first_fit += (-first_fit) % config.refit_minutes  # refit on the hour grid of the load window
    columns = feats.select(LAKE_FEATURES)
    rng = np.random.default_rng(config.seed)
    scored = steps[mask]
    lefts = np.unique(first_fit + (scored[scored >= first_fit] - first_fit) // config.refit_minutes * config.refit_minutes)
    for left in lefts.tolist():
        lo, hi = np.searchsorted(ordered, [left, left + config.refit_minutes])
        block = order[lo:hi][mask[order[lo:hi]]]
        if len(block) == 0 or lo < 16:
            continue
        train = order[training_rows(int(lo), config.train_rows, rng)]
        reference = train[rng.permutation(len(train))[: config.reference_rows]]
        out[block] = _fit_rank_rows(_feature_matrix(columns[train]), _feature_matrix(columns[reference]),
                                    _feature_matrix(columns[block]), config)
    return out


def _fit_rank_rows(train: np.ndarray, reference: np.ndarray, rows: np.ndarray, config: LakeConfig) -> np.ndarray:
    model = IsolationForest(n_estimators=config.n_estimators, max_samples=min(256, len(train)),
                            random_state=config.seed)
    model.fit(train)
    scores = -model.score_samples(np.concatenate([reference, rows]))  # one pass: each row's score is its own
    ranked = np.sort(scores[: len(reference)])
    return np.searchsorted(ranked, scores[len(reference):], side="right") / len(ranked)


# --------------------------------------------------------------------------------------
# Episodes (one series) and incidents (related series together)
# --------------------------------------------------------------------------------------
@dataclass
class _Episode:
    sid: str
    kind: str
    caller: str
    service: str
    env: str
    start: datetime
    end: datetime
    peak: datetime
    score: float
    reason: str


def _episodes(scored: pl.DataFrame, config: LakeConfig) -> list[_Episode]:
    """Runs of flagged minutes per series (gaps up to merge_gap, at least min_minutes flagged)."""
    out = []
    flagged = scored.filter(pl.col("flagged"))
    scored = scored.join(flagged.select("sid", "env").unique(), on=["sid", "env"], how="semi", maintain_order="left")
    for (sid, env), group in flagged.group_by(["sid", "env"], maintain_order=True):
        steps = group.get_column("step").to_numpy()
        for lo, hi in _step_runs(steps, gap=config.merge_gap_minutes):
            part = group.slice(lo, hi - lo)
            if int(part.get_column("flagged_core").sum()) < config.min_minutes:
                continue  # held minutes extend an incident, they do not make one
            first, last = int(steps[lo]), int(steps[hi - 1])
            reach = max(config.smooth_minutes, config.long_minutes)
            series = scored.filter((pl.col("sid") == sid) & (pl.col("env") == env)
                                   & pl.col("step").is_between(first - reach + 1, last))
            out.append(_episode(str(sid), str(env), part, _trim(series, first)))
    return out


def _trim(series: pl.DataFrame, first: int) -> pl.DataFrame:
    """From the first bad minute the smoothing window saw, to the last minute that is bad on its own.

    Walking back from the first flagged minute passes over bad minutes and over minutes without
    traffic (a sparse series is silent between its requests) and stops at a good minute.
    """
    bad = series.get_column("minute_bad").to_numpy()
    empty = (series.get_column("requests").to_numpy() == 0)
    steps = series.get_column("step").to_numpy()
    lo = int(np.searchsorted(steps, first))
    back = lo - 1
    while back >= 0 and (bad[back] or empty[back]):
        lo = back if bad[back] else lo
        back -= 1
    tail = np.flatnonzero(bad)
    hi = int(tail[-1]) + 1 if len(tail) and tail[-1] >= lo else lo + 1
    return series.slice(lo, hi - lo)


def _step_runs(steps: np.ndarray, *, gap: int) -> list[tuple[int, int]]:
    if len(steps) == 0:
        return []
    splits = np.flatnonzero(np.diff(steps) > gap + 1)
    starts = np.concatenate([[0], splits + 1])
    ends = np.concatenate([splits + 1, [len(steps)]])
    return list(zip(starts.tolist(), ends.tolist()))


def _episode(sid: str, env: str, flagged: pl.DataFrame, series: pl.DataFrame) -> _Episode:
    peak = flagged.row(int(flagged.get_column("rank").arg_max() or 0), named=True)
    first = series.row(0, named=True)
    return _Episode(sid=sid, kind=str(first["kind"]), caller=str(first["caller"]), service=str(first["service"]),
                    env=env, start=series.get_column("minute").min(),  # type: ignore[arg-type]
                    end=series.get_column("minute").max() + timedelta(minutes=1),  # type: ignore[operator,arg-type]
                    peak=peak["minute"], score=float(peak["rank"]), reason=_lake_reason(sid, series, first))


def _lake_reason(sid: str, series: pl.DataFrame, first: dict[str, Any]) -> str:
    """'PaymentService 5xx ratio 4.1% vs 0.2% baseline (20x), p99 unchanged' over the episode.

    A count signal is named only when the episode's counts could not plausibly come from the
    baseline (3 sigma): a sparse series' one extra 4xx is not a reason.
    """
    n = float(series.get_column("requests").sum())
    errors = float(series.get_column("errors_5xx").sum())
    client = float(series.get_column("client_errors_4xx").sum())
    base_rate = (_exp(first["b_rate"]) or 1.0) - 1
    parts: list[str] = []
    quiet: list[str] = []
    checks: list[tuple[str, Any, Any, str, bool]] = [
        ("err", errors / n if n else 0.0, first["p0_err"], "ratio", _beyond(errors, n * _num_or(first["p0_err"]))),
        ("cerr", client / n if n else 0.0, first["p0_cerr"], "ratio", _beyond(client, n * _num_or(first["p0_cerr"]))),
        ("p99", series.get_column("p99_ms").median(), _exp(first["b_p99"]), "ms", True),
        ("p50", series.get_column("p50_ms").median(), _exp(first["b_p50"]), "ms", True),
        ("rate", series.get_column("requests").mean(), base_rate, "rpm", _beyond(n, base_rate * len(series), both=True))]
    for name, now, base, unit, strong in checks:
        text, moved = _compare(name, now, base, unit)
        (parts if moved and strong else quiet).append(text if strong or not moved else f"{SIGNAL_WORDS[name]} unchanged")
    quiet_names = [q for q in quiet if q and q.split()[0] in ("p99", "5xx")][:1]
    return f"{sid} " + ", ".join(parts + quiet_names) if parts else f"{sid} unusual mix of traffic signals"


def _beyond(count: float, expected: float, *, both: bool = False) -> bool:
    """``count`` is 3 Poisson sigmas above ``expected`` (or below, with ``both``), and at least 3."""
    z = (count - expected) / math.sqrt(expected + 1.0)
    return (abs(z) if both else z) >= 3.0 and (count >= 3 or both)


def _num_or(value: Any, default: float = 0.0) -> float:
    return float(value) if value is not None and math.isfinite(float(value)) else default


def _compare(name: str, now: Any, base: Any, unit: str) -> tuple[str, bool]:
    word = SIGNAL_WORDS[name]
    if now is None or base is None or not math.isfinite(float(now)) or not math.isfinite(float(base)):
        return "", False
    now, base = float(now), float(base)
    factor = now / base if base > 0 else float("inf")
    if unit == "ratio":
        moved = now - base >= 0.01 and factor >= 1.5
        fmt = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    elif unit == "ms":
        moved = factor >= 1.3 and now - base >= 20
        fmt = lambda v: f"{v:,.0f} ms"  # noqa: E731
    else:
        moved = factor >= 1.5 or factor <= 1 / 1.5
        fmt = lambda v: f"{v:,.1f}/min"  # noqa: E731
    if not moved:
        return f"{word} unchanged", False
    times = f"{factor:.1f}x" if math.isfinite(factor) else "new"
    return f"{word} {fmt(now)} vs {fmt(base)} baseline ({times})", True


def _exp(value: Any) -> float | None:
    return math.exp(float(value)) if value is not None and math.isfinite(float(value)) else None


def _group(episodes: list[_Episode], config: LakeConfig, *, known_edges: set[tuple[str, str]]) -> list[Incident]:
    """Union episodes that overlap in time (within merge_gap) and share a service or call each other."""
    parent = list(range(len(episodes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    gap = timedelta(minutes=config.merge_gap_minutes)
    for i, a in enumerate(episodes):
        for j in range(i + 1, len(episodes)):
            b = episodes[j]
            if a.env == b.env and a.start <= b.end + gap and b.start <= a.end + gap and _related(a, b, known_edges):
                parent[find(i)] = find(j)
    groups: dict[int, list[_Episode]] = {}
    for i, ep in enumerate(episodes):
        groups.setdefault(find(i), []).append(ep)
    return sorted((_incident(g, known_edges) for g in groups.values()), key=lambda inc: inc.start)


def _related(a: _Episode, b: _Episode, known_edges: set[tuple[str, str]]) -> bool:
    if _names(a) & _names(b):
        return True
    return any((x, y) in known_edges or (y, x) in known_edges for x in _names(a) for y in _names(b))


def _names(ep: _Episode) -> set[str]:
    names = {ep.service} | ({ep.caller} if ep.kind == "edge" else set())
    return names - {"", "unknown", "-"}


def _incident(group: list[_Episode], known_edges: set[tuple[str, str]]) -> Incident:
    """The root first: a failing service called by other failing series, not itself calling one."""
    votes: dict[str, float] = {}
    for ep in group:
        votes[ep.service] = votes.get(ep.service, 0.0) + (2.0 if ep.kind == "service" else 1.0)
        if ep.kind == "edge":
            votes[ep.caller] = votes.get(ep.caller, 0.0) - 1.0
    failing = {ep.service for ep in group if ep.kind == "service"}
    for caller, callee in known_edges:
        if caller in failing and callee in failing and caller != callee:
            votes[callee] += 0.5
            votes[caller] -= 0.5
    services = sorted(votes, key=lambda s: (s in ("", "unknown"), -votes[s], s))
    callee_votes = votes
    ordered = sorted(group, key=lambda ep: (ep.kind != "service", -callee_votes.get(ep.service, 0), -ep.score))
    peak = max(group, key=lambda ep: ep.score)
    edges = sorted({(ep.caller, ep.service) for ep in group if ep.kind == "edge"})
    return Incident(start=min(ep.start for ep in group), end=max(ep.end for ep in group), peak=peak.peak,
                    score=peak.score, services=services, edges=edges,
                    reasons=list(dict.fromkeys(_first_per_series(ordered)))[:8], series=sorted({ep.sid for ep in group}),
                    env=group[0].env or None)


def _first_per_series(episodes: list[_Episode]) -> list[str]:
    seen: set[str] = set()
    out = []
    for ep in episodes:
        if ep.sid not in seen:
            seen.add(ep.sid)
            out.append(ep.reason)
    return out
