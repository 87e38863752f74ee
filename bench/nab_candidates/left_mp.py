"""NAB lab candidate: causal time-series discords, the left matrix profile (``analytics.discord``).

Declared configuration 1 (the product's): z-normalised, noise-corrected, lengths 8/16/32/64 combined
by max. Configuration 2 sets ``NORMALISE = False`` (plain Euclidean distance per point).

NAB lab, standard profile, tuning folders (pooled / LOFO): this 62.5 / 55.7, ``ours`` max this
71.6 / 72.8 (``ours`` alone 63.5 / 64.1); with NORMALISE = False 65.9 / 65.1, ``ours`` max it
66.9 / 65.1. ``ours`` max this won the session-4 selection (README, Benchmarks).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from analytics import discord

NORMALISE = True


def score(frame: pl.DataFrame) -> np.ndarray:
    """Per-point anomaly score in [0, 1], higher = more anomalous."""
    return discord.discord_rank(frame.get_column("value").to_numpy(), normalise=NORMALISE)
