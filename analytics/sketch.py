"""A mergeable latency sketch with bounded relative error (DDSketch-like), in Python and in SQL.

A duration ``x`` (milliseconds) falls in bucket ``k = ceil(log_gamma(x))`` with
``gamma = (1 + ALPHA) / (1 - ALPHA)``; every value of bucket ``k`` lies in
``(gamma^(k-1), gamma^k]`` and the bucket's estimate ``2 * gamma^k / (gamma + 1)`` is within
``ALPHA`` (1%) of each of them. Zero (and negative) durations go to a zero bucket (``ZERO_KEY``,
estimate 0); positive values below ``MIN_VALUE_MS`` (1 ns) are counted as ``MIN_VALUE_MS``.

A sketch is a map bucket -> count, so merging is adding counts: the merge of the sketches of
parts equals the sketch of the whole, exactly. Quantiles use the nearest rank,
``rank = max(1, ceil(q * n))`` (1-based, exact rational arithmetic), which is what DuckDB's
``quantile_disc`` returns for a decimal literal ``q``: the sketch answers the estimate of the
bucket holding the value of that rank, so it is within 1% of the exact nearest-rank quantile.

The same bucketing is a SQL expression (``key_sql``), so rollups build sketches inside DuckDB:
a rollup row is one bucket of one group (``lat_key``, ``duration_count``), a window's sketch is
a ``sum`` by key, and ``rank_sql``/``value_sql`` read quantiles in SQL (analytics.red merges
with numpy: a running count over rows sorted by key, the same nearest rank).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LOG_GAMMA = math.log(GAMMA)
MIN_VALUE_MS = 1e-6
ZERO_KEY = -32768
"""Bucket of durations <= 0; the smallest SMALLINT so that it sorts before every other key."""

_LOG_GAMMA_SQL = f"{LOG_GAMMA:.17e}"  # scientific notation: DuckDB reads it as the same DOUBLE
_MIN_SQL = f"{MIN_VALUE_MS:.17e}"


def keys(values: np.ndarray | Iterable[float]) -> np.ndarray:
    """Bucket keys (int16) of durations; NaN must be removed by the caller."""
    x = np.asarray(values, dtype=np.float64)
    out = np.full(x.shape, ZERO_KEY, dtype=np.int64)
    pos = x > 0
    out[pos] = np.ceil(np.log(np.maximum(x[pos], MIN_VALUE_MS)) / LOG_GAMMA)
    return out.astype(np.int16)


def key_of(value: float) -> int:
    """The bucket key of one duration."""
    if value <= 0:
        return ZERO_KEY
    return int(math.ceil(math.log(max(value, MIN_VALUE_MS)) / LOG_GAMMA))


def estimate(key: int) -> float:
    """The value a bucket stands for (0 for the zero bucket)."""
    if key == ZERO_KEY:
        return 0.0
    return 2.0 * GAMMA**key / (GAMMA + 1.0)


def rank(q: float, n: int) -> int:
    """Nearest rank (1-based) of quantile ``q`` among ``n`` values: max(1, ceil(q*n)), exactly."""
    frac = Fraction(str(q))
    return max(1, -((-n * frac.numerator) // frac.denominator))


def key_sql(column: str) -> str:
    """SQL expression: the SMALLINT bucket key of a duration column (NULL stays NULL)."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL WHEN {column} <= 0 THEN CAST({ZERO_KEY} AS SMALLINT) "
        f"ELSE CAST(ceil(ln(greatest({column}, {_MIN_SQL})) / {_LOG_GAMMA_SQL}) AS SMALLINT) END"
    )


def value_sql(key: str) -> str:
    """SQL expression: the estimate of a bucket key column."""
    return (
        f"CASE WHEN {key} = {ZERO_KEY} THEN 0.0 "
        f"ELSE 2.0 * pow({GAMMA:.17e}, {key}) / ({GAMMA:.17e} + 1.0) END"
    )


def rank_sql(q: float, n: str) -> str:
    """SQL expression: the nearest rank of quantile ``q`` among ``n`` values (integer math)."""
    frac = Fraction(str(q))
    num, den = frac.numerator, frac.denominator
    return f"greatest(1, ({n} * {num} + {den - 1}) // {den})"


@dataclass
class LatencySketch:
    """Bucket counts of durations; merge by adding, query by nearest rank."""

    counts: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, values: Iterable[float]) -> "LatencySketch":
        """The sketch of a collection of durations (NaN ignored)."""
        x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
        x = x[~np.isnan(x)]
        uniq, cnt = np.unique(keys(x), return_counts=True)
        return cls({int(k): int(c) for k, c in zip(uniq, cnt)})

    @classmethod
    def from_lists(cls, bucket_keys: Iterable[int], bucket_counts: Iterable[int]) -> "LatencySketch":
        """A sketch from the two aligned lists a rollup row stores."""
        sketch = cls()
        for k, c in zip(bucket_keys, bucket_counts):
            sketch.counts[int(k)] = sketch.counts.get(int(k), 0) + int(c)
        return sketch

    def to_lists(self) -> tuple[list[int], list[int]]:
        """(keys, counts) sorted by key, as stored in a rollup row."""
        ordered = sorted(self.counts.items())
        return [k for k, _ in ordered], [c for _, c in ordered]

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: "LatencySketch | Mapping[int, int]") -> "LatencySketch":
        """A new sketch holding both (bucket counts added)."""
        merged = dict(self.counts)
        items = other.counts if isinstance(other, LatencySketch) else other
        for k, c in items.items():
            merged[k] = merged.get(k, 0) + c
        return LatencySketch(merged)

    def quantile(self, q: float) -> float | None:
        """Estimate of the nearest-rank quantile ``q`` (None when empty)."""
        n = self.count
        if n == 0:
            return None
        target, seen = rank(q, n), 0
        for k, c in sorted(self.counts.items()):
            seen += c
            if seen >= target:
                return estimate(k)
        raise AssertionError("unreachable: ranks never exceed the count")


def exact_quantile(values: Iterable[float], q: float) -> float | None:
    """The exact nearest-rank quantile of ``values`` (the definition the sketch approximates)."""
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return None
    return ordered[rank(q, len(ordered)) - 1]
