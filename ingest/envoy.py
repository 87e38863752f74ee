"""Envoy and Istio access logs in their default text formats (one module, format name ``envoy``).

Envoy's default format::

    [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
    %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
    "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"

Istio's adds ``%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
"%UPSTREAM_TRANSPORT_FAILURE_REASON%"`` after the flags and ``%UPSTREAM_CLUSTER_RAW%
%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
%REQUESTED_SERVER_NAME% %ROUTE_NAME%`` at the end. Both are read by one pattern; anything after
the last known field is ignored.

Identity (shared with ``ingest.istio_json``, which has the same fields as JSON keys):

- ``outbound|<port>|<subset>|<fqdn>`` (a client sidecar's line): the callee ``service`` is the
  first DNS label of a Kubernetes name (``httpbin.foo.svc.cluster.local`` -> ``httpbin``; other
  host names are kept whole, ``api.stripe.com``), ``version`` is the subset (``unknown`` when
  empty). The caller is not in the line: its address (the downstream remote address) is
  ``source_ip`` for the inventory's CIDRs.
- ``inbound|<port>|<subset>|`` (a server sidecar's line): the service and subset come from the
  mTLS server name ``outbound_.<port>_.<subset>_.<fqdn>`` when present, else the service from the
  ``:authority`` host (none when that host is an IP address, e.g. a kubelet probe); the caller's
  address is the downstream remote address.
- Other clusters (``PassthroughCluster``, Envoy without Istio): no service is set; the pipeline
  resolves it from the host hint ``_host`` (the authority without its port).
- ``source_ip`` = the downstream remote address (the immediate peer: on an outbound line the
  calling pod itself), else the first ``X-Forwarded-For`` hop (Envoy's default format).
- ``failure_reason`` = the response flags (``UH``, ``UF``, ``URX``, ...); ``status`` 0 (no
  response sent) is stored as NULL; ``_upstream_cluster`` keeps the raw cluster name.
"""

from __future__ import annotations

import re
from typing import TypeVar

import polars as pl

from ingest import textparse as tp
from ingest.parsed import Parsed
from meshlens.schema import UNKNOWN

NAME = "envoy"

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)

_Q = r'"([^"]*)"'


def _q(name: str) -> str:
    return _Q.replace("(", f"(?P<{name}>", 1)


PATTERN = (
    r'^\[(?P<start_time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>[^"\s]+)" '
    r"(?P<response_code>[0-9]+|-) (?P<response_flags>\S+)"
    r"(?: (?P<response_code_details>\S+) (?P<connection_termination_details>\S+) "
    + _q("upstream_transport_failure_reason") + ")?"
    r" (?P<bytes_received>[0-9]+|-) (?P<bytes_sent>[0-9]+|-) (?P<duration>[0-9]+|-)"
    r" (?P<upstream_service_time>[0-9]+|-) "
    + " ".join(_q(n) for n in ("x_forwarded_for", "user_agent", "request_id", "authority", "upstream_host"))
    + r"(?: (?P<upstream_cluster>\S+) (?P<upstream_local_address>\S+) (?P<downstream_local_address>\S+)"
    r" (?P<downstream_remote_address>\S+) (?P<requested_server_name>\S+) (?P<route_name>\S+))?"
    r"(?:[ \t].*)?$"
)
FIELDS = tuple(re.findall(r"\(\?P<(\w+)>", PATTERN))
"""The Envoy/Istio field names (Istio's JSON keys) this module reads."""
_SNIFF = re.compile(PATTERN)
_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.f")

COLUMNS = (
    "ts", "duration_ms", "service", "version", "method", "path", "protocol", "status",
    "bytes_in", "bytes_out", "user_agent", "failure_reason", "source_ip", "target_ip",
    "request_id", "_host", "_upstream_cluster",
)


def sniff(head: bytes) -> bool:
    """True when most of the first lines are Envoy or Istio default-format lines."""
    return tp.mostly(tp.sniff_lines(head), lambda ln: _SNIFF.match(ln) is not None)


def parse(chunk: bytes, *, first_line_no: int) -> Parsed:
    """Rows and rejects of a chunk of Envoy/Istio text access-log lines."""
    frame = tp.line_frame(chunk, first_line_no=first_line_no)
    rows, rejects = tp.match_lines(
        frame, (PATTERN,), key="start_time", reason="not an Envoy/Istio access-log line", convert=convert
    )
    rows, bad_time = tp.split_bad(rows, pl.col("ts").is_null(), reason="unreadable start time")
    return tp.parsed(rows, rejects + bad_time, columns=COLUMNS)


def convert(m: FrameT) -> FrameT:
    """Canonical columns from string columns named like Istio's JSON keys (``FIELDS``)."""
    f = {name: tp.dash_null(pl.col(name)) for name in FIELDS}
    cluster = f["upstream_cluster"].str.split("|")
    direction = cluster.list.get(0, null_on_oob=True)
    sni = f["requested_server_name"].str.extract_groups(
        r"^outbound_\.(?P<port>[0-9]*)_\.(?P<subset>[^_]*)_\.(?P<fqdn>.+)$"
    )
    authority = tp.host_of_authority(f["authority"])
    subset = (
        pl.when(direction == "outbound").then(cluster.list.get(2, null_on_oob=True))
        .when(direction == "inbound").then(sni.struct.field("subset").replace("", None))
    )
    service = (
        pl.when(direction == "outbound").then(_service_of(cluster.list.get(3, null_on_oob=True)))
        .when(direction == "inbound").then(_service_of(pl.coalesce(sni.struct.field("fqdn"), authority)))
    )
    status = tp.to_int(f["response_code"], pl.Int32)
    return m.with_columns(
        ts=_timestamp(f["start_time"]),
        duration_ms=tp.to_int(f["duration"]).cast(pl.Float64),
        service=service,
        version=pl.when(direction.is_in(["outbound", "inbound"])).then(
            pl.when(subset.is_in(["", "_"]) | subset.is_null()).then(pl.lit(UNKNOWN)).otherwise(subset)
        ),
        method=f["method"].str.to_uppercase(),
        path=tp.path_only(f["path"]),
        protocol=f["protocol"],
        status=pl.when(status > 0).then(status),
        bytes_in=tp.to_int(f["bytes_received"]),
        bytes_out=tp.to_int(f["bytes_sent"]),
        user_agent=f["user_agent"],
        failure_reason=f["response_flags"],
        source_ip=pl.coalesce(
            tp.host_of_addr(f["downstream_remote_address"]),
            f["x_forwarded_for"].str.split(",").list.first().str.strip_chars(),
        ),
        target_ip=tp.host_of_addr(f["upstream_host"]),
        request_id=f["request_id"],
        _host=authority,
        _upstream_cluster=f["upstream_cluster"],
    )


def _service_of(host: pl.Expr) -> pl.Expr:
    """First DNS label of a Kubernetes service name; other host names whole; no IP addresses."""
    host = host.str.to_lowercase()
    first = host.str.split(".").list.first()
    kube = host.str.contains(r"\.svc(?:\.|$)") | ~host.str.contains(r"\.")
    address = host.str.contains(r"^[0-9.]+$|:")
    return (
        pl.when(host.is_null() | (host == "") | address).then(None)
        .when(kube).then(first)
        .otherwise(host)
    )


def _timestamp(text: pl.Expr) -> pl.Expr:
    """START_TIME in Envoy's default form, or with an offset, as UTC."""
    tries = [text.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False) for fmt in _TIME_FORMATS[:2]]
    naive = text.str.strptime(pl.Datetime("us"), _TIME_FORMATS[2], strict=False).dt.replace_time_zone("UTC")
    return pl.coalesce(*tries, naive)
