"""The live OTLP/HTTP trace receiver behind ``meshlens serve``.

``POST /v1/traces`` with ``application/x-protobuf`` or ``application/json`` (optionally
``Content-Encoding: gzip``) answers as the OTLP specification says::

    200  ExportTraceServiceResponse (partial_success.rejected_spans counts unreadable spans)
    400  body undecodable (bad gzip, not protobuf/JSON, not a trace request)
    401  a bearer token is configured and the request does not carry it
    404  any other path;  405 any other method on /v1/traces
    413  body above ``receiver_max_body_bytes``, before or after decompression
    415  any other content type or content encoding
    503  more than ``receiver_max_pending_bytes`` accepted but not yet published (Retry-After)

Nothing acknowledged is lost: a body is checked (decodable? exactly how many spans will be
rejected? ``otlp_proto.check_request``: a proof without decoding for plain requests, the
publishing decode itself for the others) and appended to the fsync'd spool
(``ingest.spool``, one group-committed fsync for concurrent requests) before the 200 goes
out; nothing decoded is kept in memory. When the current segment holds ``receiver_flush_spans`` spans or is
``receiver_flush_seconds`` old, the publisher thread seals it and hands it to a worker process
(``publish_segment``: decode the protobuf bodies together with ``otlp_columnar``, write the
spans under the segment's name, add the manifest entry, delete the segment), so decoding uses
the second core. On start, segments left by a
crash are replayed the same way (idempotently: the manifest says which were published).
``close`` publishes what is pending (SIGTERM does this through the CLI). Memory stays flat:
request bodies in flight plus one segment being decoded in the worker.

``Receiver`` is the transport-free core (``accept`` bodies, ``flush``, ``replay``);
``make_server`` wraps it in a threaded stdlib HTTP server.
"""

from __future__ import annotations

import functools
import hmac
import json
import multiprocessing
import os
import sys
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
from google.protobuf.message import DecodeError

from ingest import otlp, otlp_proto, spool
from ingest.otlp_common import SpanColumns
from meshlens.lake import Lake, ManifestEntry, now_utc

SOURCE_FORMAT = "otlp_http"
TRACES_PATH = "/v1/traces"
_KINDS = {"application/x-protobuf": spool.KIND_PROTOBUF, "application/protobuf": spool.KIND_PROTOBUF,
          "application/json": spool.KIND_JSON}
_CONTENT_TYPES = {spool.KIND_PROTOBUF: "application/x-protobuf", spool.KIND_JSON: "application/json"}


@dataclass(frozen=True)
class ReceiverConfig:
    """Limits and triggers (defaults from meshlens.settings)."""

    max_body_bytes: int = 64 * 1024 * 1024
    flush_spans: int = 50_000
    flush_seconds: float = 5.0
    max_pending_bytes: int = 256 * 1024 * 1024
    token: str = ""

    @classmethod
    def from_settings(cls, settings: Any) -> "ReceiverConfig":
        """The receiver_* settings."""
        return cls(
            max_body_bytes=int(settings["receiver_max_body_bytes"]),
            flush_spans=int(settings["receiver_flush_spans"]),
            flush_seconds=float(settings["receiver_flush_seconds"]),
            max_pending_bytes=int(settings["receiver_max_pending_bytes"]),
            token=str(settings["receiver_token"] or ""),
        )


@dataclass(frozen=True)
class Outcome:
    """The answer to one request: HTTP status, rejected spans, message."""

    status: int
    rejected: int = 0
    message: str = ""
    retry_after: int = 0


PublishHook = Callable[[set[str]], None]


class Receiver:
    """Accepts request bodies durably and publishes them to the lake in batches.

    With ``workers`` > 0 (``meshlens serve`` uses one per core, at most 2) sealed segments
    are published by worker processes, so decoding and Parquet writing run on the other cores
    while this process answers requests (segments are independent: order does not matter);
    with ``workers=0`` the publisher thread publishes in-process.
    """

    def __init__(self, lake: Lake, *, config: ReceiverConfig, on_publish: PublishHook | None = None,
                 workers: int = 0) -> None:
        self.lake, self.config, self.on_publish = lake, config, on_publish
        self.spool = spool.Spool(lake.root / "_spool" / "traces")
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._current_spans = 0
        self._unpublished_bytes = 0
        self._segment_bytes: dict[str, int] = {}
        self._inflight_bytes = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = _process_pool(workers) if workers else None
        self._futures: list[Future[tuple[int, list[str]]]] = []
        self.published_spans = 0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the publisher thread (call ``replay`` first to publish an earlier run's spool)."""
        self._thread = threading.Thread(target=self._run, name="otlp-publisher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the publisher and publish everything pending (waits for the worker)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()
        for future in list(self._futures):
            wait([future])
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # -- back-pressure ----------------------------------------------------------------------
    def reserve(self, nbytes: int) -> bool:
        """Admit a body of ``nbytes``; False when the pending bytes would pass the limit."""
        with self._lock:
            busy = self._inflight_bytes + self._unpublished_bytes
            if busy and busy + nbytes > self.config.max_pending_bytes:
                self._wake.set()
                return False
            self._inflight_bytes += nbytes
            return True

    def release(self, nbytes: int) -> None:
        """Give back a reservation once the request is done (accepted or not)."""
        with self._lock:
            self._inflight_bytes -= nbytes

    # -- accepting --------------------------------------------------------------------------
    def accept(self, body: bytes, *, kind: bytes) -> Outcome:
        """Check, spool (fsync) and count one request body; the Outcome is the response.

        The check decodes just enough to refuse an undecodable body (400) and to count the
        spans that will be rejected (partial success); the full decode happens when publishing.
        """
        try:
            spans, rejected, reasons = check_body(body, kind=kind)
        except BadBody as exc:
            return Outcome(400, message=str(exc))
        with self._lock:
            segment, seq = self.spool.write(kind, body)
            self._current_spans += spans + rejected
            self._unpublished_bytes += len(body)
            self._segment_bytes[segment.name] = self._segment_bytes.get(segment.name, 0) + len(body)
            due = self._current_spans >= self.config.flush_spans
        self.spool.sync(seq)
        if due:
            self._wake.set()
        return Outcome(200, rejected=rejected, message=_summary(rejected, reasons))

    # -- publishing -------------------------------------------------------------------------
    def flush(self) -> None:
        """Seal the current segment and publish it (in the worker, when there is one)."""
        with self._publish_lock:
            with self._lock:
                segment = self.spool.rotate()
                self._current_spans = 0
            if segment is None:
                return
            if self._pool is None:
                self._published(segment.name, publish_segment(str(self.lake.root), str(segment.path), fresh=True))
                return
            future = self._pool.submit(publish_segment, str(self.lake.root), str(segment.path), fresh=True)
            self._futures.append(future)
            future.add_done_callback(functools.partial(self._done, name=segment.name, path=segment.path))

    def replay(self) -> int:
        """Publish every segment left on disk by an earlier run; returns the spans published."""
        stored = 0
        for path in self.spool.existing():
            count, _ = publish_segment(str(self.lake.root), str(path), fresh=False)
            stored += count
        return stored

    def _done(self, future: Future[tuple[int, list[str]]], *, name: str, path: Path) -> None:
        try:
            result = future.result()
        except Exception as exc:  # the worker died: publish here, it is idempotent
            print(f"meshlens serve: worker failed on {name} ({exc}); publishing in-process", file=sys.stderr)
            result = publish_segment(str(self.lake.root), str(path), fresh=False)
        self._published(name, result)
        with self._lock:
            self._futures.remove(future)

    def _published(self, name: str, result: tuple[int, list[str]]) -> None:
        stored, dates = result
        with self._lock:
            self._unpublished_bytes -= self._segment_bytes.pop(name, 0)
            self.published_spans += stored
        if dates and self.on_publish is not None:
            self.on_publish(set(dates))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=min(0.25, self.config.flush_seconds / 4))
            self._wake.clear()
            if self._due():
                self.flush()

    def _due(self) -> bool:
        segment = self.spool.current()
        if segment is None:
            return False
        old = time.monotonic() - segment.opened_at >= self.config.flush_seconds
        return old or self._current_spans >= self.config.flush_spans or self._over_half_pending()

    def _over_half_pending(self) -> bool:
        current = self.spool.current()
        in_current = self._segment_bytes.get(current.name, 0) if current else 0
        return in_current * 2 >= self.config.max_pending_bytes


def _process_pool(workers: int) -> ProcessPoolExecutor:
    """Spawned worker processes (not forked: this process runs threads), started now.

    Each worker keeps polars and Arrow to one thread: the workers already use every core.
    """
    os.environ.setdefault("POLARS_MAX_THREADS", "1")  # inherited by the spawned workers
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_follow_parent, initargs=(os.getpid(),))
    for _ in range(workers):  # every worker imports while the receiver starts, not at a publish
        pool.submit(_warm_up)
    return pool


def _follow_parent(parent: int) -> None:
    """Runs in each worker: one Arrow thread; exit when the receiver dies (SIGKILL orphans)."""
    pa.set_cpu_count(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(0)  # a half-published segment is replayed by the next receiver

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


def _warm_up() -> None:
    """Runs in the worker: import the decode and write path ahead of the first segment."""
    import pyarrow.parquet  # noqa: F401

    from ingest import otlp_columnar, otlp_json, otlp_proto  # noqa: F401
    from ingest.otlp_common import _template_function

    _template_function()
    time.sleep(0.2)  # hold this worker so that the next warm-up starts the other one


def publish_segment(root: str, path: str, *, fresh: bool) -> tuple[int, list[str]]:
    """Decode one sealed spool segment into the lake; returns (spans stored, dates written).

    Idempotent: a segment already in the manifest is only deleted; otherwise (unless
    ``fresh``, a segment never published before) files a crashed attempt left under the
    segment's name are removed first, then the spans, the rejects and the manifest entry are
    written and the segment is deleted.
    """
    lake, segment = Lake(root), Path(path)
    name = segment.stem
    if lake.manifest_entry(_manifest_key(name)) is not None:
        spool.discard(segment)
        return 0, []
    if not fresh:
        lake.remove_stem("spans", name)
    source_file = f"{SOURCE_FORMAT}:{name}"
    table, rejects = _decode_segment(segment, source_file=source_file)
    dates = otlp.publish_spans(lake, table, rejects, stem=name, source_file=source_file,
                               source_format=SOURCE_FORMAT)
    lake.add_manifest(ManifestEntry(
        path=source_file, size=segment.stat().st_size if segment.exists() else 0,
        content_hash=_manifest_key(name), source_format=SOURCE_FORMAT, table_name="spans",
        rows_read=table.num_rows + len(rejects), rows_stored=table.num_rows,
        rows_rejected=len(rejects), ingested_at=now_utc().isoformat(),
    ))
    spool.discard(segment)
    return table.num_rows, dates


def _decode_segment(segment: Path, *, source_file: str) -> tuple[pa.Table, list[tuple[int, str, str]]]:
    """Every span of a segment as one table: protobuf bodies are decoded together, columnar
    (``otlp_proto.parse_requests``), in runs of at most ``_DECODE_BYTES``; JSON bodies one by one."""
    columns, run, size = SpanColumns(), [], 0
    for kind, body in spool.read_segment(segment):
        if kind != spool.KIND_PROTOBUF:
            columns.extend(otlp_decode(body, kind=kind))
            continue
        run.append(body)
        size += len(body)
        if size >= _DECODE_BYTES:
            columns.extend(otlp_proto.parse_requests(run))
            run, size = [], 0
    if run:
        columns.extend(otlp_proto.parse_requests(run))
    return columns.to_table(source_format=SOURCE_FORMAT, source_file=source_file), columns.rejects


_DECODE_BYTES = 16 * 1024 * 1024


def _manifest_key(segment_name: str) -> str:
    return f"spool-{segment_name}"


def otlp_decode(body: bytes, *, kind: bytes) -> SpanColumns:
    """The spans of one request body of spool kind ``kind``."""
    return otlp.decode_body(body, content_type=_CONTENT_TYPES[kind])


def check_body(body: bytes, *, kind: bytes) -> tuple[int, int, list[str]]:
    """(spans that will be stored, spans that will not, the reasons); BadBody when undecodable.

    Protobuf counts are exact (``otlp_proto.check_request``); a JSON body is decoded whole
    (a rejected resource counts the spans it holds).
    """
    if kind == spool.KIND_PROTOBUF:
        try:
            return otlp_proto.check_request(body)
        except DecodeError as exc:
            message = str(exc)
            raise BadBody(message if message.startswith("not a valid") else f"not a valid OTLP protobuf message ({exc})") from None
    columns = otlp_decode(body, kind=kind)
    fatal = _fatal(columns)
    if fatal:
        raise BadBody(fatal)
    return len(columns), columns.spans_rejected, [r[1] for r in columns.rejects]


def _fatal(columns: SpanColumns) -> str:
    """Why a body cannot be read at all ("" when it can, possibly with rejected spans)."""
    if len(columns) or not columns.rejects:
        return ""
    request_level = [r for r in columns.rejects if not r[1].startswith("span:")]
    return request_level[0][1] if request_level else ""


def _summary(rejected: int, reasons: list[str]) -> str:
    if not rejected:
        return ""
    more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
    return f"{rejected} spans rejected: {reasons[0] if reasons else 'unreadable'}{more}"


# -- HTTP -------------------------------------------------------------------------------------

class TooLarge(Exception):
    """A body above the limit (413)."""


class BadBody(Exception):
    """A body that cannot be read (400)."""


_GRPC_CODES = {400: 3, 401: 16, 404: 5, 405: 12, 411: 3, 413: 8, 415: 3, 503: 14}


class OTLPServer(ThreadingHTTPServer):
    """A threaded HTTP server that hands bodies of POST /v1/traces to a Receiver."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], receiver: Receiver) -> None:
        super().__init__(address, _Handler)
        self.receiver = receiver


def make_server(receiver: Receiver, *, host: str, port: int) -> OTLPServer:
    """Bind the receiver's HTTP server (port 0 picks a free port: see ``server_address``)."""
    return OTLPServer((host, port), receiver)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: OTLPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: one line per request would cost more than the request."""

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        """POST /v1/traces."""
        kind = _KINDS.get(self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower())
        outcome = self._post(kind)
        self._respond(outcome, kind)

    def do_GET(self) -> None:  # noqa: N802
        """Anything but POST: 404 elsewhere, 405 on /v1/traces."""
        self._respond(Outcome(405 if self._route() == TRACES_PATH else 404, message="use POST /v1/traces"), None)

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET  # noqa: N815

    def _route(self) -> str:
        return self.path.split("?", 1)[0]

    def _post(self, kind: bytes | None) -> Outcome:
        config = self.server.receiver.config
        refusal = self._refusal(kind, config)
        if refusal is not None or kind is None:
            self._drain(config.max_body_bytes)
            return refusal or Outcome(415)
        length = self._length()
        if length is not None and length > config.max_body_bytes:
            self.close_connection = True
            return Outcome(413, message=f"body of {length} bytes is above the limit of {config.max_body_bytes}")
        return self._receive(kind, length or 0, config)

    def _refusal(self, kind: bytes | None, config: ReceiverConfig) -> Outcome | None:
        if self._route() != TRACES_PATH:
            return Outcome(404, message=f"no such path {self._route()}; OTLP traces go to {TRACES_PATH}")
        if config.token and not _authorized(self.headers.get("Authorization", ""), config.token):
            return Outcome(401, message="missing or wrong bearer token")
        if kind is None:
            return Outcome(415, message="Content-Type must be application/x-protobuf or application/json")
        if self.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity", "gzip"):
            return Outcome(415, message="Content-Encoding must be gzip or none")
        return None

    def _receive(self, kind: bytes, length: int, config: ReceiverConfig) -> Outcome:
        receiver = self.server.receiver
        if not receiver.reserve(length):
            self._drain(config.max_body_bytes)
            return Outcome(503, message="too much data pending; retry later", retry_after=1)
        reserved = length
        try:
            body = self._body(length, config.max_body_bytes)
            if self.headers.get("Content-Encoding", "").strip().lower() == "gzip":
                body = _gunzip(body, limit=config.max_body_bytes)
            if len(body) > reserved and not receiver.reserve(len(body) - reserved):
                return Outcome(503, message="too much data pending; retry later", retry_after=1)
            reserved = max(reserved, len(body))
            return receiver.accept(body, kind=kind)
        except TooLarge as exc:
            self.close_connection = True
            return Outcome(413, message=str(exc))
        except BadBody as exc:
            return Outcome(400, message=str(exc))
        finally:
            receiver.release(reserved)

    def _length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        try:
            return max(0, int(value))
        except ValueError:
            return 0

    def _body(self, length: int, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return _read_chunked(self.rfile, limit=limit)
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise BadBody(f"body ended after {len(body)} of {length} bytes")
        return body

    def _drain(self, limit: int) -> None:
        """Read an unwanted body so the connection stays usable (close it when too big)."""
        length = self._length()
        if length is None and "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return
        if length is None or length > limit:
            self.close_connection = True
            return
        self.rfile.read(length)

    def _respond(self, outcome: Outcome, kind: bytes | None) -> None:
        payload, content_type = _response_body(outcome, kind)
        self.send_response(outcome.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if outcome.retry_after:
            self.send_header("Retry-After", str(outcome.retry_after))
        if outcome.status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="meshlens"')
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)


def _authorized(header: str, token: str) -> bool:
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def _read_chunked(rfile: Any, *, limit: int) -> bytes:
    out = bytearray()
    while True:
        line = rfile.readline(65537)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadBody("bad chunked encoding") from None
        if size == 0:
            while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass
            return bytes(out)
        if len(out) + size > limit:
            raise TooLarge(f"body is above the limit of {limit} bytes")
        out += rfile.read(size)
        rfile.readline(3)


def _gunzip(body: bytes, *, limit: int) -> bytes:
    """Decompress a gzip body, refusing to produce more than ``limit`` bytes."""
    decompressor = zlib.decompressobj(wbits=31)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadBody(f"body is not valid gzip ({exc})") from None
    if len(out) > limit:
        raise TooLarge(f"body is above the limit of {limit} bytes after decompression")
    if not decompressor.eof:
        raise BadBody("gzip body is truncated")
    return out


def _response_body(outcome: Outcome, kind: bytes | None) -> tuple[bytes, str]:
    """ExportTraceServiceResponse on success, google.rpc.Status otherwise (request's encoding)."""
    if outcome.status == 200:
        return _success(outcome, kind)
    if kind == spool.KIND_PROTOBUF:
        try:
            from google.rpc.status_pb2 import Status
        except ImportError:
            pass
        else:
            status = Status(code=_GRPC_CODES.get(outcome.status, 2), message=outcome.message)
            return status.SerializeToString(), _CONTENT_TYPES[kind]
    body = {"code": _GRPC_CODES.get(outcome.status, 2), "message": outcome.message}
    return json.dumps(body).encode(), "application/json"


def _success(outcome: Outcome, kind: bytes | None) -> tuple[bytes, str]:
    if kind == spool.KIND_PROTOBUF:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        response = ExportTraceServiceResponse()
        if outcome.rejected:
            response.partial_success.rejected_spans = outcome.rejected
            response.partial_success.error_message = outcome.message
        return response.SerializeToString(), _CONTENT_TYPES[kind]
    body: dict[str, Any] = {}
    if outcome.rejected:
        body["partialSuccess"] = {"rejectedSpans": str(outcome.rejected), "errorMessage": outcome.message}
    return json.dumps(body).encode(), "application/json"
