"""Amazon VPC Lattice access logs (``VpcLatticeAccessLogs``) into canonical request rows.

Accepted shapes, mixed freely within a file:

* JSON lines, one record per line, as S3/Firehose deliver them (gzip handled upstream);
* pretty-printed records (one or several objects, or a JSON array) when the whole file is
  given as one chunk (``whole_file``);
* CloudWatch Logs exports that wrap each record as ``{"timestamp": ms, "message": "<json>"}``.

``"-"`` means absent. Every field is optional (TLS-passthrough listeners leave the HTTP ones
empty). Fields this module does not know are kept as a JSON object in ``extra``.

Fast path: the whole chunk is decoded by polars in one call with every field read as a
string, then normalised with column expressions; columns derived from ARNs, hosts and
principals are computed once per distinct value. Unknown fields are looked for in every line
of a small chunk and in a sample of a large one (see ``SAMPLE_SPREAD``). Only a chunk polars cannot decode (a garbage
line, a non-object line) is read again line by line with ``json`` to find the bad lines.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator

import polars as pl

from ingest.parsed import Parsed
from meshlens.identity import SEP, DistinctMap

NAME = "lattice"

FIELDS: tuple[str, ...] = (
    "serviceNetworkArn", "serviceArn", "targetGroupArn", "sourceVpcArn", "sourceIpPort",
    "targetIpPort", "startTime", "duration", "requestToTargetDuration",
    "responseFromTargetDuration", "requestMethod", "requestPath", "protocol", "responseCode",
    "bytesReceived", "bytesSent", "userAgent", "hostHeader", "serverNameIndication",
    "sslCipher", "tlsVersion", "callerPrincipal", "resolvedUser", "callerPrincipalOrgID",
    "callerX509SubjectCN", "callerX509SANURI", "callerX509SANDNS", "callerX509SANNameCN",
    "callerX509IssuerOU", "authDeniedReason", "failureReason", "listenerType", "listenerId",
    "destinationVpcId", "sourceVpcId", "grpcResponseCode", "requestId",
)
"""Record fields this parser knows (the real record's 35 plus documented optional ones)."""

WRAPPER = ("timestamp", "message")
"""CloudWatch Logs export envelope."""

_READ_SCHEMA = {name: pl.String for name in FIELDS + WRAPPER}
_X509 = ("callerX509SANURI", "callerX509SubjectCN", "callerX509SANDNS", "callerX509SANNameCN")
_NO_PRINCIPAL = ("-", "", "Anonymous", "anonymous", "Unknown", "unknown")
_TS_FORMATS = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%S%.f%:z")
SAMPLE_ALL_BYTES = 1 << 15
"""Chunks up to this size are checked line by line for unknown fields."""
SAMPLE_SPREAD = 128
"""Larger chunks: the first and last 16 KiB and this many lines spread between them.

Unknown fields in a larger chunk are found when a sampled line carries them; fields AWS adds
appear on every line, so they are always kept in ``extra``."""
_SNIFF_KEYS = (b'"serviceNetworkArn"', b'"targetGroupArn"', b'"callerPrincipal"',
               b'"responseFromTargetDuration"', b'"requestToTargetDuration"', b'"sourceVpcArn"')


class _Fallback(Exception):
    """The fast path cannot account for every line of a chunk."""


def sniff(head: bytes) -> bool:
    """True when the head holds JSON with VPC Lattice field names (plain or CloudWatch-wrapped)."""
    start = head.lstrip()[:1]
    if start not in (b"{", b"["):
        return False
    text = head.replace(b'\\"', b'"')  # CloudWatch wraps the record as an escaped string
    return sum(key in text for key in _SNIFF_KEYS) >= 2 and b'"startTime"' in text


def whole_file(head: bytes) -> bool:
    """True for pretty-printed JSON: the first line opens a value it does not close."""
    first = head.lstrip().split(b"\n", 1)[0].strip()
    if first[:1] not in (b"{", b"["):
        return False
    try:
        json.loads(first)
    except ValueError:
        return True
    return False


def parse(chunk: bytes, *, first_line_no: int) -> Parsed:
    """Rows of the canonical columns (plus identity hints) and one reject per unreadable line."""
    try:
        raw, line_nos = _decode_fast(chunk, first_line_no)
        raw = _with_extra_fast(raw, chunk)
    except (_Fallback, pl.exceptions.PolarsError):
        if _is_multiline(chunk):
            raw, line_nos, rejects = _decode_stream(chunk, first_line_no)
        else:
            raw, line_nos, rejects = _decode_lines(chunk, first_line_no)
        return _finish(raw, line_nos, rejects, chunk, first_line_no)
    return _finish(raw, line_nos, [], chunk, first_line_no)


# -- decoding ---------------------------------------------------------------------------------
def _decode_fast(chunk: bytes, first_line_no: int) -> tuple[pl.DataFrame, None]:
    """Polars decodes every non-blank line or raises; line numbers are found only when needed."""
    raw = pl.read_ndjson(io.BytesIO(chunk), schema=_READ_SCHEMA)
    if raw.height and raw.get_column("message").null_count() < raw.height:
        return _unwrap_fast(raw), None
    return raw.with_columns(timestamp=pl.lit(None, dtype=pl.String)), None


def _line_numbers(chunk: bytes, first_line_no: int) -> list[int]:
    """The line number of every non-blank line of ``chunk``."""
    return [first_line_no + i for i, line in enumerate(chunk.split(b"\n")) if line.strip()]


def _unwrap_fast(raw: pl.DataFrame) -> pl.DataFrame:
    """Decode CloudWatch ``message`` strings; only when every row of the chunk is wrapped."""
    if raw.get_column("message").null_count() or raw.get_column("startTime").null_count() < raw.height:
        raise _Fallback
    body = "\n".join(raw.get_column("message").to_list()).encode()
    inner = pl.read_ndjson(io.BytesIO(body), schema=_READ_SCHEMA)
    if inner.height != raw.height:
        raise _Fallback
    inner = _with_extra_fast(inner, body)
    return inner.with_columns(raw.get_column("timestamp"))


def _with_extra_fast(raw: pl.DataFrame, body: bytes) -> pl.DataFrame:
    """Add ``extra`` (unknown fields as JSON); line by line only when a sample shows some."""
    if "extra" in raw.columns:
        return raw
    if not any(_unknown_keys(line) for line in _sample_lines(body)):
        return raw.with_columns(extra=pl.lit(None, dtype=pl.String))
    try:
        extras = _extras_by_line(body)
    except ValueError:
        raise _Fallback from None
    if len(extras) != raw.height:
        raise _Fallback
    return raw.with_columns(extra=pl.Series(extras, dtype=pl.String))


def _sample_lines(body: bytes) -> Iterator[bytes]:
    """All of a small chunk; of a large one the first and last 16 KiB and a spread of lines."""
    if len(body) <= SAMPLE_ALL_BYTES:
        yield body
        return
    edge = SAMPLE_ALL_BYTES // 2
    yield body[:edge]
    yield body[-edge:]
    step = max((len(body) - 2 * edge) // SAMPLE_SPREAD, 1)
    for offset in range(edge, len(body) - edge, step):
        start = body.find(b"\n", offset) + 1
        end = body.find(b"\n", start)
        yield body[start:end if end >= 0 else len(body)]


_KEY = re.compile(rb'[{,]\s*"([^"\\]*)"\s*:')
_KNOWN_KEYS = frozenset(name.encode() for name in _READ_SCHEMA)


def _unknown_keys(text: bytes) -> bool:
    """True when ``text`` (lines of JSON) may hold a key this parser does not know.

    A regex over the raw bytes: it can take a ``,"...":`` inside a string value for a key (then
    the chunk merely takes the exact path) but it misses no real key without a quote in it.
    """
    return not _KNOWN_KEYS.issuperset(_KEY.findall(text))


def _extras_by_line(body: bytes) -> list[str | None]:
    """The ``extra`` JSON of every non-blank line of ``body`` (slow path, unknown keys seen)."""
    out: list[str | None] = []
    for line in body.split(b"\n"):
        if line.strip():
            obj = json.loads(line)
            out.append(_extra_json(obj) if isinstance(obj, dict) else None)
    return out


def _extra_json(record: dict) -> str | None:
    unknown = {k: v for k, v in record.items() if k not in _READ_SCHEMA}
    return json.dumps(unknown, sort_keys=True) if unknown else None


def _is_multiline(chunk: bytes) -> bool:
    for line in chunk.split(b"\n", 64):
        line = line.strip()
        if line:
            return whole_file(line + b"\n") or (line.startswith(b"[") and not line.endswith(b"]"))
    return False


def _decode_lines(chunk: bytes, first_line_no: int) -> tuple[pl.DataFrame, list[int], list[tuple[int, str, str]]]:
    """Line by line with ``json``: the slow path that finds and rejects the bad lines."""
    records: list[dict] = []
    line_nos: list[int] = []
    rejects: list[tuple[int, str, str]] = []
    _collect_lines(chunk, first_line_no, records, line_nos, rejects)
    return _frame(records), line_nos, rejects


def _collect_lines(chunk: bytes, first_line_no: int, records: list[dict], line_nos: list[int],
                   rejects: list[tuple[int, str, str]]) -> None:
    for offset, line in enumerate(chunk.split(b"\n")):
        if not line.strip():
            continue
        line_no = first_line_no + offset
        try:
            value = json.loads(line)
        except ValueError as exc:
            rejects.append((line_no, f"invalid JSON: {exc}", _text(line)))
            continue
        _collect(value, line_no, _text(line), records, line_nos, rejects)


def _decode_stream(chunk: bytes, first_line_no: int) -> tuple[pl.DataFrame, list[int], list[tuple[int, str, str]]]:
    """Concatenated (pretty-printed) JSON values; a broken tail is read line by line."""
    text = chunk.decode("utf-8", errors="replace")
    decoder = json.JSONDecoder()
    records: list[dict] = []
    line_nos: list[int] = []
    rejects: list[tuple[int, str, str]] = []
    pos = _skip_ws(text, 0)
    while pos < len(text):
        line_no = first_line_no + text.count("\n", 0, pos)
        try:
            value, end = decoder.raw_decode(text, pos)
        except ValueError:
            # Not a whole value from here on: read the rest line by line, so that a good line
            # after a broken opening ("{" alone) is kept and every other line is one reject.
            _collect_lines(text[pos:].encode("utf-8"), line_no, records, line_nos, rejects)
            break
        _collect(value, line_no, text[pos:end], records, line_nos, rejects)
        pos = _skip_ws(text, end)
    return _frame(records), line_nos, rejects


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n,":
        pos += 1
    return pos


def _collect(value: object, line_no: int, raw: str, records: list[dict], line_nos: list[int],
             rejects: list[tuple[int, str, str]]) -> None:
    """Add one decoded JSON value (object, CloudWatch wrapper or array of them)."""
    for item in value if isinstance(value, list) else [value]:
        record = _unwrap_one(item)
        if record is None:
            rejects.append((line_no, "not a JSON object", raw))
            continue
        records.append(record)
        line_nos.append(line_no)


def _unwrap_one(item: object) -> dict | None:
    if not isinstance(item, dict):
        return None
    message = item.get("message")
    if isinstance(message, str) and "startTime" not in item:
        try:
            inner = json.loads(message)
        except ValueError:
            return None
        if not isinstance(inner, dict):
            return None
        item = dict(inner, timestamp=item.get("timestamp"), message=None)
    else:
        item = dict(item, timestamp=None, message=None)
    record = {k: _as_text(v) for k, v in item.items() if k in _READ_SCHEMA}
    record["extra"] = _extra_json(item)
    return record


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value)


def _frame(records: list[dict]) -> pl.DataFrame:
    schema = dict(_READ_SCHEMA, extra=pl.String)
    return pl.DataFrame(records, schema=schema)


def _text(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").rstrip("\r")


# -- normalising ------------------------------------------------------------------------------
def _finish(raw: pl.DataFrame, line_nos: list[int] | None, rejects: list[tuple[int, str, str]],
            chunk: bytes, first_line_no: int) -> Parsed:
    """Normalise decoded records; records without a readable start time become rejects."""
    rows = _normalise(raw)
    bad = rows.get_column("ts").is_null()
    if bad.any():
        if line_nos is None:
            line_nos = _line_numbers(chunk, first_line_no)
        if len(line_nos) != raw.height:
            raise AssertionError("lattice: lines and records out of step")  # a bug, not bad input
        numbered = rows.with_columns(_line=pl.Series(line_nos, dtype=pl.Int64)).filter(bad)
        rejects = rejects + _time_rejects(raw.filter(bad), numbered, chunk, first_line_no)
        rows = rows.filter(~bad)
    return Parsed(rows=rows, rejects=rejects)


def _time_rejects(raw: pl.DataFrame, rows: pl.DataFrame, chunk: bytes, first_line_no: int) -> list[tuple[int, str, str]]:
    lines = chunk.split(b"\n")
    out = []
    for start, line_no in zip(raw.get_column("startTime").to_list(), rows.get_column("_line").to_list()):
        reason = "no startTime: not a VPC Lattice record" if start in (None, "-") else f"cannot read startTime {start!r}"
        index = line_no - first_line_no
        out.append((line_no, reason, _text(lines[index]) if 0 <= index < len(lines) else ""))
    return out


def _present(name: str) -> pl.Expr:
    """The field with ``"-"`` and empty strings as null."""
    col = pl.col(name)
    return pl.when(col.is_in(["-", ""]).not_()).then(col)


def _principal(name: str) -> pl.Expr:
    col = pl.col(name)
    return pl.when(col.is_in(list(_NO_PRINCIPAL)).not_()).then(col)


def _ts(frame: pl.DataFrame) -> pl.Series:
    """startTime as UTC datetimes; other ISO forms and the CloudWatch timestamp as fallbacks."""
    start = frame.get_column("startTime")
    ts = start.str.to_datetime(_TS_FORMATS[0], time_unit="us", time_zone="UTC", strict=False)
    if ts.null_count() > start.null_count() or start.null_count():
        tries = [start.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False) for f in _TS_FORMATS[1:]]
        epoch = frame.get_column("timestamp").cast(pl.Int64, strict=False)
        wrapper = pl.from_epoch(epoch, time_unit="ms").dt.replace_time_zone("UTC").cast(pl.Datetime("us", "UTC"))
        ts = pl.select(pl.coalesce(ts, *tries, wrapper)).to_series()
    return ts.alias("ts")


def _ip(name: str) -> pl.Expr:
    return _present(name).str.replace(r":\d+$", "").str.strip_chars("[]")


def _arn_part(name: str, index: int) -> pl.Expr:
    return _present(name).str.split(":").list.get(index, null_on_oob=True)


def _row_columns() -> list[pl.Expr]:
    """Columns that differ from request to request."""
    return [
        pl.col("duration").cast(pl.Float64, strict=False).alias("duration_ms"),
        _present("requestMethod").alias("method"),
        _present("requestPath").str.split_exact("?", 1).struct.field("field_0").alias("path"),
        pl.col("responseCode").cast(pl.Int32, strict=False).alias("status"),
        pl.col("bytesReceived").cast(pl.Int64, strict=False).alias("bytes_in"),
        pl.col("bytesSent").cast(pl.Int64, strict=False).alias("bytes_out"),
        _present("protocol").alias("protocol"),
        _present("userAgent").alias("user_agent"),
        _present("tlsVersion").alias("tls_version"),
        _present("authDeniedReason").alias("auth_denied_reason"),
        _present("failureReason").alias("failure_reason"),
        _ip("sourceIpPort").alias("source_ip"),
        _ip("targetIpPort").alias("target_ip"),
        _present("requestId").alias("request_id"),
        pl.col("extra"),
    ]


_DIMENSION_INPUTS = ["serviceNetworkArn", "serviceArn", "targetGroupArn", "hostHeader",
                     "serverNameIndication", "callerPrincipal", "resolvedUser", *_X509]


def _dimension_columns() -> list[pl.Expr]:
    """Columns derived from the few distinct ARNs, hosts and principals (computed once each)."""
    x509_present = pl.any_horizontal([_principal(n).is_not_null() for n in _X509])
    principal = _principal("callerPrincipal")
    return [
        principal.alias("caller_principal"),
        _present("targetGroupArn").str.extract(r"([^/]+)$").alias("target_group"),
        (principal.is_not_null() | x509_present).alias("authenticated"),
        x509_present.alias("mtls"),
        pl.coalesce(_arn_part("serviceNetworkArn", 4), _arn_part("serviceArn", 4)).alias("account"),
        pl.coalesce(_arn_part("serviceNetworkArn", 3), _arn_part("serviceArn", 3)).alias("region"),
        _present("serviceNetworkArn").str.extract(r"([^/]+)$").alias("service_network"),
        pl.coalesce(_present("hostHeader"), _present("serverNameIndication")).alias("_host"),
        _present("serviceArn").alias("_service_ref"),
        pl.concat_str([_principal(n) for n in ("resolvedUser",) + _X509], separator=SEP,
                      ignore_nulls=True).alias("_principals"),
    ]


_DIMENSIONS = DistinctMap(_DIMENSION_INPUTS, lambda small: small.select(_dimension_columns()))
"""Remembers the dimension columns of every distinct tuple seen (a pure function's memo)."""


def _normalise(raw: pl.DataFrame) -> pl.DataFrame:
    """Decoded string fields -> canonical columns plus identity hints."""
    dims = _DIMENSIONS.apply(raw)
    return pl.concat([raw.select(_row_columns()).with_columns(_ts(raw)), dims], how="horizontal")


def iter_fields() -> Iterator[str]:
    """The known record fields (for docs and tests)."""
    yield from FIELDS
