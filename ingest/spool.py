"""The receiver's write-ahead spool: append-only, fsync'd segments of raw request bodies.

A request is acknowledged only after its body is in a segment file and fsync'd; segments are
published to the lake later and deleted once their manifest entry exists. After a crash every
segment still on disk is replayed; its name is the stem of the files it publishes, so a replay
after a crash in the middle of publishing replaces those files instead of adding to them.

Segment files live in ``<lake>/_spool/traces/`` and are named ``seg-<ns>-<random>.spool`` (a
name is never reused, so a stem never collides with one published before). Each record is::

    b"OT" | kind (1 byte: b"p" protobuf, b"j" JSON) | length (4 bytes, big-endian) |
    crc32 of the body (4 bytes, big-endian) | body

A record torn by a crash (short, or with a bad CRC) ends the segment: it was never fsync'd,
hence never acknowledged. Appends are group-committed: threads write under one lock and the
first to reach ``sync`` fsyncs for everyone written so far.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"OT"
_HEADER = struct.Struct(">2sc I I")
KIND_PROTOBUF = b"p"
KIND_JSON = b"j"


@dataclass
class Segment:
    """One spool file and what was written to it."""

    path: Path
    records: int = 0
    bytes: int = 0
    opened_at: float = 0.0

    @property
    def name(self) -> str:
        return self.path.stem


class Spool:
    """Append-only segments under one folder; thread-safe."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._current: Segment | None = None
        self._fd: int | None = None
        self._written = 0
        self._synced = 0

    def existing(self) -> list[Path]:
        """Segment files on disk, oldest first (to replay at start, before any append)."""
        return sorted(self.folder.glob("seg-*.spool"))

    def write(self, kind: bytes, body: bytes) -> tuple[Segment, int]:
        """Append one record (not yet durable); returns its segment and sequence number."""
        record = _HEADER.pack(MAGIC, kind, len(body), zlib.crc32(body)) + body
        with self._lock:
            if self._current is None:
                self._open()
            assert self._fd is not None and self._current is not None
            _write_all(self._fd, record)
            self._current.records += 1
            self._current.bytes += len(record)
            self._written += 1
            return self._current, self._written

    def sync(self, seq: int) -> None:
        """Return once record ``seq`` is on disk (one fsync covers every earlier write)."""
        with self._sync_lock:
            if self._synced >= seq:
                return
            with self._lock:
                target, fd = self._written, self._fd
            if fd is not None:
                os.fsync(fd)
            self._synced = max(self._synced, target)

    def append(self, kind: bytes, body: bytes) -> Segment:
        """Write and fsync one record."""
        segment, seq = self.write(kind, body)
        self.sync(seq)
        return segment

    def rotate(self) -> Segment | None:
        """Seal the current segment (fsync'd, closed) and return it; None when there is none."""
        with self._sync_lock, self._lock:
            segment, fd = self._current, self._fd
            self._current, self._fd = None, None
            if fd is not None:
                os.fsync(fd)
                os.close(fd)
            self._synced = self._written
            return segment

    def current(self) -> Segment | None:
        """The segment being appended to, if any."""
        return self._current

    def _open(self) -> None:
        name = f"seg-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.spool"
        path = self.folder / name
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fsync_dir(self.folder)  # the new name itself must survive a crash
        self._current = Segment(path=path, opened_at=time.monotonic())


def read_segment(path: Path) -> Iterator[tuple[bytes, bytes]]:
    """(kind, body) of every whole record of a segment; stops at a torn tail."""
    data = path.read_bytes()
    pos = 0
    while pos + _HEADER.size <= len(data):
        magic, kind, length, crc = _HEADER.unpack_from(data, pos)
        body = data[pos + _HEADER.size:pos + _HEADER.size + length]
        if magic != MAGIC or len(body) != length or zlib.crc32(body) != crc:
            return
        yield kind, body
        pos += _HEADER.size + length


def discard(path: Path) -> None:
    """Delete a published segment."""
    path.unlink(missing_ok=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
