"""Reading inputs: paths, directories, gzip, stdin, and splitting them into chunks of lines.

Paths are expanded in order: a directory is walked recursively (sorted; hidden entries
skipped), ``-`` is standard input (spooled to a temporary file first, so that it has a content
hash like any file). Gzip is recognised by its magic bytes, never by the file name, since S3
and Firehose names vary. A chunk is a run of whole lines of bounded size; the last line of a
file needs no newline (a truncated last line is a line like any other and usually becomes a
reject). Everything a user can get wrong raises InputError with the file name in the message.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import sys
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from meshlens.errors import InputError

HEAD_BYTES = 64 * 1024
CHUNK_BYTES = 24 * 1024 * 1024
"""Bytes read per chunk. Below glibc's 32 MiB mmap ceiling, so the buffers are reused from the
heap instead of being mapped (and page-faulted) afresh for every chunk."""
WHOLE_FILE_MAX_BYTES = 512 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
_READ_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile)


@dataclass(frozen=True)
class Source:
    """One input file: where it is, the name stored in source_file, how it was named."""

    path: Path
    name: str
    explicit: bool  # named on the command line (not found by walking a directory)


def expand(paths: Sequence[str | Path], *, spool_dir: Path) -> list[Source]:
    """Every input file named by ``paths``; a missing path raises InputError before any work."""
    sources: list[Source] = []
    for raw in paths:
        if str(raw) == "-":
            sources.append(Source(spool_stdin(spool_dir), "<stdin>", True))
            continue
        path = Path(raw)
        if path.is_dir():
            sources.extend(Source(p, str(p), False) for p in _walk(path))
        elif path.is_file():
            sources.append(Source(path, str(path), True))
        elif path.exists():
            raise InputError(f"{path}: not a regular file or directory")
        else:
            raise InputError(f"{path}: no such file or directory")
    return sources


def _walk(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).parts
        if any(part.startswith(".") for part in rel) or not path.is_file():
            continue
        yield path


def spool_stdin(spool_dir: Path) -> Path:
    """Copy standard input to a temporary file (deleted by the caller) and return its path."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=spool_dir, prefix=".stdin-", delete=False)
    with handle:
        shutil.copyfileobj(sys.stdin.buffer, handle, 4 * 1024 * 1024)
    return Path(handle.name)


def content_hash(path: Path) -> str:
    """Hex digest of the file's bytes as stored (compressed files are hashed compressed)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha1").hexdigest()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def is_gzip(path: Path) -> bool:
    """True when the file starts with the gzip magic bytes."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


class Reader:
    """A file opened for reading, decompressed when gzip; ``position`` is in stored bytes."""

    def __init__(self, source: Source) -> None:
        self.source = source
        try:
            self.raw: BinaryIO = open(source.path, "rb")
        except OSError as exc:
            raise InputError(f"{source.name}: cannot read ({exc.strerror or exc})") from None
        self.gzip = self.raw.read(2) == GZIP_MAGIC
        self.raw.seek(0)
        self.stream: BinaryIO = gzip.GzipFile(fileobj=self.raw) if self.gzip else self.raw  # type: ignore[assignment]

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.close()
        self.raw.close()

    @property
    def position(self) -> int:
        """Bytes of the stored (possibly compressed) file read so far."""
        return self.raw.tell()

    def read(self, size: int) -> bytes:
        """Up to ``size`` decompressed bytes; a broken gzip raises InputError."""
        try:
            return self.stream.read(size)
        except _READ_ERRORS as exc:
            kind = "an unreadable gzip file" if self.gzip else "unreadable"
            raise InputError(f"{self.source.name}: {kind} ({exc})") from None


def read_head(source: Source, *, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` decompressed bytes; InputError for a binary or unreadable file."""
    with Reader(source) as reader:
        head = reader.read(size)
    if looks_binary(head):
        raise InputError(f"{source.name}: a binary file, not a text log")
    return head


def looks_binary(head: bytes) -> bool:
    """Control bytes or invalid UTF-8 in >10% of the head: not a log (a stray one is a bad line)."""
    sample = head[:4096]
    if not sample:
        return False
    control = sum(1 for b in sample if b < 0x20 and b not in (9, 10, 13))
    invalid = sample.decode("utf-8", errors="replace").count("\ufffd")
    return max(control, invalid) > len(sample) // 10


def chunks(reader: Reader, *, max_bytes: int | None = None, max_lines: int = 250_000) -> Iterator[tuple[int, bytes]]:
    """Yield ``(first_line_no, chunk)`` of whole lines, each at most ~``max_bytes``/``max_lines``."""
    max_bytes = max_bytes or CHUNK_BYTES
    line_no = 1
    carry = b""
    while True:
        block = reader.read(max_bytes)
        if not block:
            if carry:
                yield line_no, carry
            return
        cut = block.rfind(b"\n") + 1
        if cut == 0:  # no line ends in this block: keep reading
            carry += block
            continue
        piece = b"".join((carry, memoryview(block)[:cut])) if carry or cut < len(block) else block
        carry = block[cut:]
        del block
        for part, lines in _split_lines(piece, max_lines=max_lines):
            yield line_no, part
            line_no += lines


def count_lines(data: bytes, *, block: int = 1 << 20) -> int:
    """Number of newlines; numpy over 1 MiB slices (no large temporary), ~2x bytes.count."""
    array = np.frombuffer(data, dtype=np.uint8)
    return sum(int(np.count_nonzero(array[i:i + block] == 10)) for i in range(0, len(array), block))


def _split_lines(data: bytes, *, max_lines: int) -> Iterator[tuple[bytes, int]]:
    """``data`` (and its line count) in pieces of at most ``max_lines`` lines."""
    total = count_lines(data)
    if total <= max_lines:
        yield data, total
        return
    start = 0
    while start < len(data):
        pos = start - 1
        for _ in range(max_lines):
            pos = data.find(b"\n", pos + 1)
            if pos < 0:
                break
        end = len(data) if pos < 0 else pos + 1
        yield data[start:end], data.count(b"\n", start, end)
        start = end


def read_all(reader: Reader) -> bytes:
    """The whole decompressed file (for formats that need it); InputError when too large."""
    data = reader.read(WHOLE_FILE_MAX_BYTES + 1)
    if len(data) > WHOLE_FILE_MAX_BYTES:
        raise InputError(
            f"{reader.source.name}: pretty-printed JSON larger than {WHOLE_FILE_MAX_BYTES >> 20} MiB; "
            "convert it to JSON lines (one object per line)"
        )
    return data
