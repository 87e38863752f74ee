"""AWS Application Load Balancer access logs (``.log`` / ``.log.gz`` as ALB delivers them to S3).

One request per line, space-separated, some fields double-quoted; 25 fields on 2019 lines, 29 on
later ones, 30+ today (``conn_trace_id`` and then transform fields). Fields after the 25th that
this parser does not use are accepted and ignored, whatever their number. ``-`` means absent,
``-1`` a timing that does not apply.

Mapping to ``requests``:

- ``duration_ms`` = request_processing_time + target_processing_time + response_processing_time,
  in ms, using only the terms that are not ``-1`` (null when all three are ``-1``).
- ``ts``: ALB's ``time`` is when the *response finished*; the request start is therefore
  ``ts = time - duration`` (``time`` itself when there is no duration). When a term is ``-1``
  (the target timed out or closed the connection) the duration is a lower bound and ``ts`` is
  late by the missing part. ``request_creation_time`` is not used: in AWS's own examples it
  disagrees with ``time`` by seconds on millisecond requests.
- ``status`` = elb_status_code (what the client got); ``target_group`` = target_group_arn (the
  canary version key); ``account`` and ``region`` from that ARN.
- ``method``, ``path`` (no query) and ``protocol`` from the request line; the host of its URL is
  the host hint ``_host`` (``domain_name``, the SNI, when the URL has none).
- ``trace_id``: the ``Root=1-xxxxxxxx-yyyy...`` of X-Amzn-Trace-Id written as the 32 hex digits
  OpenTelemetry uses (``xxxxxxxxyyyy...``), so requests join spans; other forms are kept as is.
- ``failure_reason`` = error_reason; ``tls_version`` = ssl_protocol; ``source_ip`` / ``target_ip``
  from client:port / target:port; ``bytes_in`` / ``bytes_out`` = received / sent bytes.
"""

from __future__ import annotations

import re

import polars as pl

from ingest import textparse as tp
from ingest.parsed import Parsed

NAME = "alb"

_Q = r'"((?:[^"\\]|\\.)*)"'


def _q(name: str) -> str:
    return _Q.replace("(", f"(?P<{name}>", 1)


PATTERN = (
    r"^(?P<type>[a-z0-9]+) (?P<time>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z) (?P<elb>\S+) "
    r"(?P<client>\S+) (?P<target>\S+) "
    r"(?P<rpt>-?[0-9.]+) (?P<tpt>-?[0-9.]+) (?P<rspt>-?[0-9.]+) "
    r"(?P<elb_status>[0-9]{3}|-) (?P<target_status>[0-9]{3}|-) (?P<received>[0-9]+|-) (?P<sent>[0-9]+|-) "
    + _q("request") + " " + _q("agent")
    + r" (?P<cipher>\S+) (?P<ssl_protocol>\S+) (?P<tg_arn>\S+) "
    + _q("trace") + " " + _q("domain") + " " + _q("cert")
    + r" (?P<rule>\S+) (?P<created>\S+) "
    + _q("actions") + " " + _q("redirect") + " " + _q("error")
    + r"(?:[ \t].*)?$"
)
_REQUEST = r"^(?P<method>[A-Za-z]+) (?P<url>\S+) (?P<protocol>[A-Za-z0-9]+/[0-9.]+)$"
_URL = r"^(?:[A-Za-z][A-Za-z0-9+.-]*://(?P<host>\[[^\]]*\]|[^/:?#]*)(?::[0-9]*)?)?(?P<path>[^?#]*)"
_TG_ARN = r"^arn:[^:]+:elasticloadbalancing:(?P<region>[^:]*):(?P<account>[0-9]*):"
_SNIFF = re.compile(PATTERN)

COLUMNS = (
    "ts", "duration_ms", "method", "path", "protocol", "status", "bytes_in", "bytes_out",
    "user_agent", "tls_version", "target_group", "account", "region", "failure_reason",
    "source_ip", "target_ip", "trace_id", "_host",
)


def sniff(head: bytes) -> bool:
    """True when most of the first lines are ALB access-log lines."""
    return tp.mostly(tp.sniff_lines(head), lambda ln: _SNIFF.match(ln) is not None)


def parse(chunk: bytes, *, first_line_no: int) -> Parsed:
    """Rows and rejects of a chunk of ALB access-log lines."""
    frame = tp.line_frame(chunk, first_line_no=first_line_no)
    rows, rejects = tp.match_lines(
        frame, (PATTERN,), key="time", reason="not an ALB access-log line", convert=_convert
    )
    rows, bad_time = tp.split_bad(rows, pl.col("ts").is_null(), reason="unreadable time")
    return tp.parsed(rows, rejects + bad_time, columns=COLUMNS)


def _convert(m: pl.LazyFrame) -> pl.LazyFrame:
    request = pl.col("request").str.extract_groups(_REQUEST)
    url = request.struct.field("url").str.extract_groups(_URL)
    tg = tp.dash_null(pl.col("tg_arn"))
    arn = tg.str.extract_groups(_TG_ARN)
    end = pl.col("time").str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%.fZ", strict=False)
    duration = _duration_ms()
    host = url.struct.field("host").str.strip_chars("[]").str.to_lowercase()
    return m.with_columns(duration_ms=duration).with_columns(
        ts=end - pl.duration(microseconds=(pl.col("duration_ms") * 1000.0).round(0).fill_null(0).cast(pl.Int64)),
        method=request.struct.field("method").str.to_uppercase(),
        path=pl.when(url.struct.field("path") != "").then(url.struct.field("path")),
        protocol=request.struct.field("protocol"),
        status=tp.to_int(pl.col("elb_status"), pl.Int32),
        bytes_in=tp.to_int(pl.col("received")),
        bytes_out=tp.to_int(pl.col("sent")),
        user_agent=tp.dash_null(pl.col("agent")),
        tls_version=tp.dash_null(pl.col("ssl_protocol")),
        target_group=tg,
        account=tp.dash_null(arn.struct.field("account")),
        region=tp.dash_null(arn.struct.field("region")),
        failure_reason=tp.dash_null(pl.col("error")),
        source_ip=tp.host_of_addr(tp.dash_null(pl.col("client"))),
        target_ip=tp.host_of_addr(tp.dash_null(pl.col("target"))),
        trace_id=_trace_id(pl.col("trace")),
        _host=pl.coalesce(tp.dash_null(host), tp.dash_null(pl.col("domain")).str.to_lowercase()),
    )


def _duration_ms() -> pl.Expr:
    """Sum of the processing times that are not -1, in ms; null when none applies."""
    terms = [pl.col(c).cast(pl.Float64, strict=False) for c in ("rpt", "tpt", "rspt")]
    valid = [pl.when(t >= 0).then(t) for t in terms]
    any_valid = pl.any_horizontal([v.is_not_null() for v in valid])
    return pl.when(any_valid).then((pl.sum_horizontal(valid) * 1000.0).round(3))


def _trace_id(field: pl.Expr) -> pl.Expr:
    """X-Ray ``Root=1-<8 hex>-<24 hex>`` as 32 hex digits; other roots as written."""
    root = tp.dash_null(field).str.extract(r"(?:^|;)Root=([^;]+)")
    xray = root.str.extract_groups(r"^1-(?P<t>[0-9a-fA-F]{8})-(?P<r>[0-9a-fA-F]{24})$")
    as_hex = (xray.struct.field("t") + xray.struct.field("r")).str.to_lowercase()
    return pl.coalesce(as_hex, root)
