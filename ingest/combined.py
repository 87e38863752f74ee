"""nginx / Apache access logs: combined, common, vhost_combined, plus an optional request time.

Accepted layout (one line per request)::

    [vhost:port ]host ident user [time] "request" status bytes[ "referer" "user agent"[ "extra"...]][ timing]

- ``combined`` (nginx's built-in and Apache's), ``common`` (no referer / user agent) and Apache's
  ``vhost_combined`` (the leading ``vhost:port``, kept as the host hint ``_host``).
- Extra quoted fields after the user agent (nginx's ``"$http_x_forwarded_for"``) are ignored.
- The optional trailing timing field, the duration: **a number with a dot is seconds**
  (nginx ``$request_time``, always printed with a millisecond fraction, ``0.123``); **an integer
  is microseconds** (Apache ``%D``). Apache ``%T`` (whole seconds) is therefore not supported
  (it would read as microseconds); log ``%D`` instead. ``-`` means no timing.
- The time ``[17/May/2015:10:05:03 +0200]`` is converted to UTC using its offset.
- Bytes ``-`` (Apache's ``%b`` for an empty body) is stored as 0.
- A request line that is not ``METHOD target PROTOCOL`` (garbage a scanner sent, ``-``) keeps the
  row (its status is real) with method, path and protocol empty.
- The remote user (``%u``), when not ``-``, is the caller principal and marks the row
  authenticated.

Lines that do not have this shape, or whose time does not parse, are rejected with a reason.
"""

from __future__ import annotations

import re

import polars as pl

from ingest import textparse as tp
from ingest.parsed import Parsed

NAME = "combined"

_Q = r'"((?:[^"\\]|\\.)*)"'
_QNC = r'"(?:[^"\\]|\\.)*"'
PATTERN = (
    r"^(?:(?P<vhost>[^\s:\[\]]+):[0-9]+ )?"
    r"(?P<client>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    + _Q.replace("(", "(?P<request>", 1)
    + r" (?P<status>[0-9]{3}) (?P<bytes>[0-9]+|-)"
    + r"(?: " + _Q.replace("(", "(?P<referer>", 1) + " " + _Q.replace("(", "(?P<agent>", 1)
    + r"(?: " + _QNC + r")*)?"
    + r"(?: (?P<timing>[0-9]+\.[0-9]+|[0-9]+|-))?[ \t]*$"
)
FAST_PATTERN = (
    r'^(?P<client>[^ ]+) [^ ]+ (?P<user>[^ ]+) \[(?P<time>[^\]]+)\] '
    r'"(?P<method>[A-Z]+) (?P<target>[^ "?#\\]+)(?:[?#][^ "\\]*)? (?P<protocol>HTTP/[0-9.]+)" '
    r'(?P<status>[0-9]{3}) (?P<bytes>[0-9]+|-) "[^"\\]*" "(?P<agent>[^"\\]*)"(?: (?P<timing>[0-9]+(?:\.[0-9]+)?))?$'
)
"""The usual combined line (a well-formed request, no escapes): most lines match this cheaper
pattern, which also splits the request; the rest go through ``PATTERN``."""
_TIME_FORMAT = "%d/%b/%Y:%H:%M:%S %z"
_SNIFF = re.compile(PATTERN)

COLUMNS = (
    "ts", "duration_ms", "method", "path", "protocol", "status", "bytes_out", "user_agent",
    "source_ip", "caller_principal", "authenticated", "_host",
)


def sniff(head: bytes) -> bool:
    """True when most of the first lines are combined/common log lines."""
    return tp.mostly(tp.sniff_lines(head), lambda ln: _SNIFF.match(ln) is not None)


def parse(chunk: bytes, *, first_line_no: int) -> Parsed:
    """Rows and rejects of a chunk of combined-format lines."""
    frame = tp.line_frame(chunk, first_line_no=first_line_no)
    rows, rejects = tp.match_lines(
        frame, (FAST_PATTERN, PATTERN), key="time", reason="not a combined/common log line", convert=_convert
    )
    rows, bad_time = tp.split_bad(rows, pl.col("ts").is_null(), reason="unreadable time")
    return tp.parsed(rows, rejects + bad_time, columns=COLUMNS)


def _convert(m: pl.LazyFrame) -> pl.LazyFrame:
    # the fast pattern fills method/target/protocol; the full one leaves the request to split here
    request = pl.col("request").str.split(" ")
    method = request.list.get(0, null_on_oob=True)
    well_formed = request.list.len().is_in([2, 3]) & method.str.contains(r"^[A-Za-z]+$")
    protocol = request.list.get(2, null_on_oob=True)
    protocol = pl.when(well_formed & protocol.str.contains(r"^[A-Za-z]+/[0-9.]+$")).then(protocol)
    user = tp.dash_null(pl.col("user"))
    return m.with_columns(
        ts=pl.col("time").str.strptime(pl.Datetime("us", "UTC"), _TIME_FORMAT, strict=False),
        duration_ms=_duration_ms(pl.col("timing")),
        method=pl.coalesce(pl.col("method"), pl.when(well_formed).then(method.str.to_uppercase())),
        path=pl.coalesce(
            pl.col("target"), pl.when(well_formed).then(tp.path_only(request.list.get(1, null_on_oob=True)))
        ),
        protocol=pl.coalesce(pl.col("protocol"), protocol),
        status=tp.to_int(pl.col("status"), pl.Int32),
        bytes_out=pl.when(pl.col("bytes") == "-").then(0).otherwise(tp.to_int(pl.col("bytes"))),
        user_agent=tp.dash_null(pl.col("agent")),
        source_ip=pl.col("client"),
        caller_principal=user,
        authenticated=user.is_not_null(),
        _host=pl.col("vhost").str.to_lowercase(),
    )


def _duration_ms(timing: pl.Expr) -> pl.Expr:
    """Seconds when the value has a dot ($request_time), else microseconds (%D)."""
    value = timing.cast(pl.Float64, strict=False)
    return pl.when(timing.str.contains(r"\.")).then(value * 1000.0).otherwise(value / 1000.0)
