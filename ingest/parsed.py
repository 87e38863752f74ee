"""The result of parsing one chunk of lines: rows in the canonical columns, plus rejects."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass
class Parsed:
    rows: pl.DataFrame
    rejects: list[tuple[int, str, str]]
