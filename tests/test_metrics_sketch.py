"""The latency sketch: merge laws, the 1% bound on skewed data, and SQL == Python bucketing."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics import sketch
from analytics.sketch import LatencySketch, exact_quantile

QS = st.sampled_from([0.5, 0.9, 0.95, 0.99, 0.999, 0.01, 0.25, 0.75])
durations = st.lists(
    st.one_of(st.floats(min_value=0.001, max_value=3.6e6, allow_nan=False), st.just(0.0)),
    min_size=1, max_size=300,
)


def _sample(kind: str, seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "lognormal":
        return rng.lognormal(3.0, 1.5, n)
    if kind == "bimodal":
        fast, slow = rng.normal(5.0, 1.0, n), rng.normal(800.0, 50.0, n)
        return np.abs(np.where(rng.random(n) < 0.8, fast, slow)) + 0.01
    return (rng.pareto(1.2, n) + 1.0) * 2.0  # heavy tail


@settings(deadline=None)
@given(values=durations, cut=st.integers(min_value=0, max_value=300), data=st.data())
def test_merging_parts_equals_the_sketch_of_the_whole(values: list[float], cut: int, data: st.DataObject) -> None:
    cut = min(cut, len(values))
    second = data.draw(st.integers(min_value=cut, max_value=len(values)))
    parts = [values[:cut], values[cut:second], values[second:]]
    merged = LatencySketch()
    for part in parts:
        merged = merged.merge(LatencySketch.of(part))
    assert merged.counts == LatencySketch.of(values).counts
    assert merged.count == len(values)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["lognormal", "bimodal", "pareto"]), seed=st.integers(0, 10_000),
       n=st.integers(1, 5_000), q=QS)
def test_quantiles_stay_within_one_percent_of_exact(kind: str, seed: int, n: int, q: float) -> None:
    values = _sample(kind, seed, n)
    exact = exact_quantile(values.tolist(), q)
    estimate = LatencySketch.of(values).quantile(q)
    assert exact is not None and estimate is not None
    assert abs(estimate - exact) <= sketch.ALPHA * exact * (1 + 1e-9)


@settings(deadline=None)
@given(values=durations, q=QS)
def test_any_sample_quantile_is_within_the_bound(values: list[float], q: float) -> None:
    exact = exact_quantile(values, q)
    estimate = LatencySketch.of(values).quantile(q)
    assert exact is not None and estimate is not None
    assert abs(estimate - exact) <= sketch.ALPHA * exact * (1 + 1e-9)


def test_zero_and_sub_millisecond_values() -> None:
    s = LatencySketch.of([0.0, 0.0, 0.0005, 0.02])
    assert s.counts[sketch.ZERO_KEY] == 2
    assert s.quantile(0.5) == 0.0
    assert abs(s.quantile(0.75) - 0.0005) <= 0.01 * 0.0005
    assert abs(s.quantile(1.0) - 0.02) <= 0.01 * 0.02
    assert LatencySketch().quantile(0.5) is None


def test_nearest_rank_is_exact_integer_arithmetic() -> None:
    # ceil(0.95 * 20) = 19 although 0.95 * 20 is not exactly 19 in floating point
    assert sketch.rank(0.95, 20) == 19
    assert sketch.rank(0.5, 1) == 1 and sketch.rank(0.0, 10) == 1 and sketch.rank(1.0, 10) == 10
    assert [sketch.rank(0.99, n) for n in (1, 100, 101)] == [1, 99, 100]


@settings(deadline=None, max_examples=30)
@given(values=st.lists(st.floats(min_value=1e-7, max_value=1e8, allow_nan=False), min_size=1, max_size=200))
def test_sql_bucket_keys_equal_python_keys(values: list[float]) -> None:
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t (d DOUBLE)")
    conn.executemany("INSERT INTO t VALUES (?)", [[v] for v in values + [0.0]])
    got = [r[0] for r in conn.execute(f"SELECT {sketch.key_sql('d')} FROM t").fetchall()]
    assert got == [sketch.key_of(v) for v in values + [0.0]]
    assert got[:-1] == sketch.keys(np.array(values)).tolist()


def test_bucket_boundaries_agree_between_sql_and_python() -> None:
    edges = sketch.GAMMA ** np.arange(-700, 1000, dtype=np.float64)
    values = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf)])
    conn = duckdb.connect()
    conn.register("t", {"d": values})
    got = conn.execute(f"SELECT {sketch.key_sql('d')} AS k FROM t").fetchnumpy()["k"]
    assert (got == sketch.keys(values)).all()


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_exact_definition_is_duckdb_quantile_disc(q: float) -> None:
    conn = duckdb.connect()
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 10, 19, 20, 21, 100, 101, 1234):
        values = rng.lognormal(2, 1, n)
        conn.register("t", {"d": values})
        [(got,)] = conn.execute(f"SELECT quantile_disc(d, {q}) FROM t").fetchall()
        assert got == exact_quantile(values.tolist(), q)
        ranks = conn.execute(f"SELECT {sketch.rank_sql(q, str(n))}").fetchall()
        assert ranks == [(sketch.rank(q, n),)]


def test_sketch_round_trips_through_lists() -> None:
    s = LatencySketch.of([1.0, 2.0, 2.0, 0.0, 500.0])
    keys, counts = s.to_lists()
    assert keys == sorted(keys) and sum(counts) == 5
    assert LatencySketch.from_lists(keys, counts) == s
    assert sketch.estimate(sketch.ZERO_KEY) == 0.0
    assert abs(sketch.estimate(sketch.key_of(123.4)) - 123.4) <= 1.234
