"""Small layout pieces the pages share: formatted metrics, tables and notes.

Formatting only (thousands separators, percent signs, units); no number is derived here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import streamlit as st

from dashboard import data

RED_COLUMNS = ("requests", "rps", "errors_5xx", "error_ratio", "client_errors_4xx",
               "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "percentile_source", "low_sample")


def count(value: Any) -> str:
    """1234567 -> '1,234,567'."""
    return "–" if value is None else f"{int(value):,}"


def pct(ratio: Any, *, digits: int = 2) -> str:
    """0.0312 -> '3.12%'."""
    return "–" if ratio is None else f"{float(ratio) * 100:.{digits}f}%"


def ms(value: Any) -> str:
    """Milliseconds, one decimal below 100 ms."""
    if value is None:
        return "–"
    value = float(value)
    return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"


def rate(value: Any) -> str:
    """Requests per second."""
    return "–" if value is None else f"{float(value):,.2f}/s"


def red_metrics(row: dict[str, Any], *, prefix: str = "") -> None:
    """One row of analytics.red.red as a line of st.metric tiles."""
    cols = st.columns(6)
    cols[0].metric(f"{prefix}Requests", count(row.get("requests")))
    cols[1].metric(f"{prefix}Rate", rate(row.get("rps")))
    cols[2].metric(f"{prefix}5xx errors", count(row.get("errors_5xx")), help="server errors")
    cols[3].metric(f"{prefix}Error ratio", pct(row.get("error_ratio")), help="5xx / requests")
    cols[4].metric(f"{prefix}4xx (client)", count(row.get("client_errors_4xx")),
                   help="client errors, never counted as failures")
    cols[5].metric(f"{prefix}p99", ms(row.get("p99_ms")), help=_sample_note(row))


def _sample_note(row: dict[str, Any]) -> str:
    source = row.get("percentile_source") or "?"
    note = f"from {count(row.get('n', row.get('requests')))} requests ({source})"
    return note + "; too few requests to trust" if row.get("low_sample") else note


def first_row(frame: Any) -> dict[str, Any]:
    """The first row of a polars frame as a dict ({} when empty)."""
    if frame is None or frame.height == 0:
        return {}
    return frame.row(0, named=True)


def table(frame: Any, *, columns: Sequence[str] | None = None, key: str | None = None,
          empty: str = "Nothing in this window.", **kwargs: Any) -> Any:
    """A dataframe with only ``columns`` (those that exist), or a note when empty."""
    if frame is None or frame.height == 0:
        st.caption(empty)
        return None
    if columns:
        frame = frame.select([c for c in columns if c in frame.columns])
    return st.dataframe(frame, hide_index=True, key=key, width="stretch",
                        column_config=_column_config(frame.columns), **kwargs)


def _column_config(columns: Sequence[str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name in columns:
        if name.endswith("_ratio"):
            config[name] = st.column_config.NumberColumn(name, format="percent")
        elif name.endswith("_ms"):
            config[name] = st.column_config.NumberColumn(name, format="%.1f")
        elif name == "rps":
            config[name] = st.column_config.NumberColumn(name, format="%.3f")
    return config


def top(frame: Any, column: str, *, n: int = 10) -> Any:
    """The ``n`` rows with the largest ``column`` (sorting only)."""
    if frame is None or column not in frame.columns:
        return frame
    return frame.sort(column, descending=True, nulls_last=True).head(n)


@contextmanager
def optional(what: str) -> Iterator[None]:
    """Run a page section; a feature missing from this build becomes a caption, not an error."""
    try:
        yield
    except data.Unavailable as exc:
        st.caption(f"{what} not available: {exc}.")
