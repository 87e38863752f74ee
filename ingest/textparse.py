"""Shared machinery of the line-oriented access-log parsers (ALB, Envoy/Istio, combined).

A chunk of bytes becomes a frame of (line_no, raw) with blank lines dropped; one anchored
regex with named groups is applied to every line at once (``str.extract_groups``); lines it
does not match, and lines whose fields fail to convert, become rejects with a reason. Every
non-blank line therefore ends up as exactly one row or one reject.

A line is blank when nothing but ``BLANK`` characters remain (the ASCII whitespace Python's
``bytes.strip()`` removes); lines are split on ``\\n`` only and a trailing ``\\r`` is dropped.
Bytes that are not UTF-8 are replaced with U+FFFD rather than failing the chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ingest.parsed import Parsed

BLANK = " \t\n\r\x0b\x0c"
LINE_NO, RAW = "_line_no", "_raw"
_BLANK_LINE = r"^[ \t\n\r\x0b\x0c]*$"
Rejects = list[tuple[int, str, str]]


def line_frame(chunk: bytes, *, first_line_no: int) -> pl.DataFrame:
    """The non-blank lines of ``chunk`` as (``_line_no``, ``_raw``)."""
    text = chunk.decode("utf-8", errors="replace")
    if text.endswith("\n"):
        text = text[:-1]  # the usual last newline ends a line, it does not start one
    # pyarrow splits one large string into lines several times faster than polars or Python
    pieces = pc.split_pattern(pa.array([text], type=pa.large_string()), "\n")
    lines = pl.Series(RAW, pc.list_flatten(pieces)).cast(pl.String)
    if "\r" in text:
        lines = lines.str.strip_chars_end("\r")
    frame = pl.DataFrame({LINE_NO: pl.int_range(first_line_no, first_line_no + lines.len(), eager=True), RAW: lines})
    blank = lines.str.contains(_BLANK_LINE)
    return frame.filter(~blank) if blank.any() else frame


def match_lines(
    frame: pl.DataFrame,
    patterns: Sequence[str],
    *,
    key: str,
    reason: str,
    convert: Callable[[pl.LazyFrame], pl.LazyFrame] | None = None,
) -> tuple[pl.DataFrame, Rejects]:
    """Apply the first pattern to every line, each next one to the lines still unmatched.

    Patterns are anchored and share their named groups (a group a pattern lacks is null);
    group ``key`` is non-null on every match. A fast pattern for the usual shape followed by a
    thorough one for the rest keeps the common case quick (regex captures cost more than the
    lines they skip). ``convert`` (group columns -> canonical columns) runs in the same lazy
    query, so that on big chunks regexes and conversions are spread over all cores.
    """
    names = list(dict.fromkeys(n for p in patterns for n in re.findall(r"\(\?P<(\w+)>", p)))
    matched: list[pl.DataFrame] = []
    rest = frame
    for pattern in patterns:
        groups = _extract(rest, pattern, names=names, convert=convert)
        hit = groups[key].is_not_null()
        if hit.all():
            matched.append(groups)
            rest = rest.clear()
            break
        matched.append(groups.filter(hit))
        rest = rest.filter(~hit)
    rows = pl.concat(matched, how="vertical_relaxed")
    if sum(1 for part in matched if part.height) > 1:
        rows = rows.sort(LINE_NO)  # keep the lines' order
    return rows, rejects_of(rest, reason=reason)


PARALLEL_MIN_LINES = 20_000
"""From this many lines on, a chunk runs on the streaming engine (all cores, in slices)."""


def _extract(
    frame: pl.DataFrame,
    pattern: str,
    *,
    names: list[str],
    convert: Callable[[pl.LazyFrame], pl.LazyFrame] | None,
) -> pl.DataFrame:
    """Named groups of ``pattern`` as columns (all of ``names``), then ``convert``."""
    own = set(re.findall(r"\(\?P<(\w+)>", pattern))
    lazy = frame.lazy().with_columns(pl.col(RAW).str.extract_groups(pattern).alias("_m")).unnest("_m")
    lazy = lazy.with_columns(pl.lit(None, dtype=pl.String).alias(n) for n in names if n not in own)
    lazy = lazy.select(LINE_NO, RAW, *names)  # one column order for every pattern
    if convert is not None:
        lazy = convert(lazy)
    if frame.height >= PARALLEL_MIN_LINES:
        return lazy.collect(engine="streaming")
    return lazy.collect(engine="in-memory")


def split_bad(frame: pl.DataFrame, bad: pl.Expr, *, reason: str) -> tuple[pl.DataFrame, Rejects]:
    """Rows where ``bad`` is false, and the others as rejects with ``reason``."""
    flag = frame.select(bad.fill_null(True)).to_series()
    if not flag.any():
        return frame, []
    return frame.filter(~flag), rejects_of(frame.filter(flag), reason=reason)


def rejects_of(frame: pl.DataFrame, *, reason: str) -> Rejects:
    """(line number, reason, raw line) for every row of ``frame``."""
    return [(n, reason, raw) for n, raw in zip(frame[LINE_NO].to_list(), frame[RAW].to_list())]


def parsed(rows: pl.DataFrame, rejects: Iterable[tuple[int, str, str]], *, columns: Sequence[str]) -> Parsed:
    """A :class:`Parsed` with rows in ``columns`` order and rejects sorted by line number."""
    return Parsed(rows=rows.select(columns), rejects=sorted(rejects, key=lambda r: r[0]))


def dash_null(expr: pl.Expr) -> pl.Expr:
    """``-`` and the empty string mean absent."""
    return pl.when(expr.is_in(["-", ""])).then(None).otherwise(expr)


def to_int(expr: pl.Expr, dtype: type[pl.DataType] | pl.DataType = pl.Int64) -> pl.Expr:
    """Integer value, null for ``-``, empty or out of range."""
    return expr.cast(dtype, strict=False)


def host_of_addr(expr: pl.Expr) -> pl.Expr:
    """The address part of ``ip:port``, ``[v6]:port``, ``tcp://ip:port`` or a bare address."""
    expr = expr.str.replace(r"^[A-Za-z][A-Za-z0-9+.-]*://", "")
    return (
        pl.when(expr.str.starts_with("["))
        .then(expr.str.extract(r"^\[([^\]]*)\]"))
        .when(expr.str.count_matches(":") == 1)
        .then(expr.str.replace(r":[0-9]*$", ""))
        .otherwise(expr)
    )


def host_of_authority(expr: pl.Expr) -> pl.Expr:
    """Host of a ``host:port`` authority (IPv6 brackets removed), lower-cased."""
    return host_of_addr(expr).str.to_lowercase()


def path_only(expr: pl.Expr) -> pl.Expr:
    """Request target without its query string and fragment."""
    return expr.str.replace(r"[?#].*$", "")


def sniff_lines(head: bytes, *, limit: int = 20) -> list[str]:
    """Up to ``limit`` complete non-blank lines of ``head`` (a cut-off last line is dropped)."""
    text = head.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if len(lines) > 1 and not text.endswith("\n"):
        lines = lines[:-1]
    return [ln.rstrip("\r") for ln in lines if ln.strip(BLANK)][:limit]


def mostly(lines: list[str], predicate: Callable[[str], bool]) -> bool:
    """True when there are lines and at least 80% of them satisfy ``predicate``."""
    if not lines:
        return False
    hits = sum(1 for ln in lines if predicate(ln))
    return hits >= 0.8 * len(lines)
