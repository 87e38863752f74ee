"""Series for the NAB candidate tests: a five-minute frame and a noisy sine."""

from __future__ import annotations

import numpy as np
import polars as pl


def frame(values: np.ndarray) -> pl.DataFrame:
    """``timestamp`` every five minutes from 2026-01-01 and ``value``, as the NAB lab hands a candidate."""
    start = pl.datetime(2026, 1, 1)
    stamps = pl.datetime_range(start, start + pl.duration(minutes=5 * (len(values) - 1)), interval="5m", eager=True)
    return pl.DataFrame({"timestamp": stamps, "value": values.astype(float)})


def noisy_sine(n: int, *, seed: int, period: int) -> np.ndarray:
    """50 + 10 sin(2 pi t / period) + N(0, 1) noise."""
    rng = np.random.default_rng(seed)
    return 50 + 10 * np.sin(np.arange(n) * 2 * np.pi / period) + rng.normal(0, 1, n)
