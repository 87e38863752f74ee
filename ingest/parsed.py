"""What a format parser returns, shared by every format module.

``Parsed`` is the result of parsing one chunk of lines: rows in the canonical columns (plus
identity hints), and one ``(line number, reason, raw line)`` reject per unreadable line.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass
class Parsed:
    """Rows of one chunk and its rejected lines."""

    rows: pl.DataFrame
    rejects: list[tuple[int, str, str]]
