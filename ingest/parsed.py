"""What a format parser returns, shared by every format module.

``Parsed`` is the result of parsing one chunk of lines: rows in the canonical columns (plus
identity hints), and one ``(line number, reason, raw line)`` reject per unreadable line.
``NotFast`` is raised by an optional fast whole-file reader (``scan_file``) when the file
needs the careful chunk-by-chunk path instead; the pipeline then starts the file again.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass
class Parsed:
    """Rows of one chunk and its rejected lines."""

    rows: pl.DataFrame
    rejects: list[tuple[int, str, str]]


class NotFast(Exception):
    """A fast reader cannot take this file exactly; read it chunk by chunk instead."""
