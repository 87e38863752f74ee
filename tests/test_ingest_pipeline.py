"""The ingest pipeline: layouts, the manifest, the quarantine, crashes, readers, schemas."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ingest
from ingest.pipeline import ingest_paths
from meshlens import catalog, schema
from meshlens.errors import InputError, UnknownNameError
from meshlens.lake import Lake
from meshlens.settings import Settings
from tests.ingest_support import lines, record, write_s3_layout

ROOT = Path(__file__).resolve().parents[1]


def _count(lake: Lake, where: str = "true") -> int:
    return catalog.connect(lake).execute(f"SELECT count(*) FROM requests WHERE {where}").fetchone()[0]


def test_s3_gzip_layout_walked_recursively(tmp_path, tmp_lake):
    write_s3_layout(tmp_path / "logs", files=3, per_file=40)
    (tmp_path / "logs" / "README.txt").write_text("not a log\n")
    summary = ingest_paths(tmp_lake, [tmp_path / "logs"])
    assert (summary.files, summary.rows_read, summary.rows_stored, summary.rows_rejected) == (3, 120, 120, 0)
    assert summary.files_ignored == [str(tmp_path / "logs" / "README.txt")]
    assert summary.dates_touched == {"2026-11-10"}
    assert _count(tmp_lake) == 120


def test_same_file_twice_stores_nothing_twice(tmp_path, tmp_lake):
    path = tmp_path / "a.log"
    path.write_bytes(lines(25))
    first = ingest_paths(tmp_lake, [path])
    copy = tmp_path / "copy.log"
    copy.write_bytes(path.read_bytes())
    second = ingest_paths(tmp_lake, [path, copy])
    assert first.rows_stored == 25 and second.files_skipped == 2 and second.rows_stored == 0
    assert _count(tmp_lake) == 25
    assert len(tmp_lake.manifest()) == 1


def test_rows_and_lake_columns(tmp_path, tmp_lake):
    path = tmp_path / "a.log"
    path.write_bytes(lines(3))
    ingest_paths(tmp_lake, [path])
    conn = catalog.connect(tmp_lake)
    row = conn.execute("SELECT service, caller, version, route, path, source_format, source_file "
                       "FROM requests ORDER BY ts LIMIT 1").fetchone()
    assert row == ("payments", "orders-task-role", "tg-0277f384abfefe8aa", "/v1/charges/{id}",
                   "/v1/charges/ch_000000", "lattice", str(path))


def test_pipeline_output_is_exactly_the_requests_schema(tmp_path, tmp_lake):
    path = tmp_path / "a.log"
    path.write_bytes(lines(3))
    ingest_paths(tmp_lake, [path])
    for file in tmp_lake.files("requests"):
        assert pq.read_schema(file).remove_metadata() == schema.REQUESTS


SAMPLES = {"alb": "alb.log", "envoy": "envoy.log", "istio_json": "istio_json.log", "combined": "combined.log"}


@pytest.mark.parametrize("fmt", sorted(ingest.FORMATS))
def test_every_registered_format_yields_the_requests_schema(fmt, tmp_path):
    if fmt == "lattice":
        source = tmp_path / "lattice.log"
        source.write_bytes(lines(5))
    else:
        source = ROOT / "sample_logs" / SAMPLES.get(fmt, f"{fmt}.log")
        if not source.is_file():
            pytest.skip(f"no shipped sample for {fmt}")
    lake = Lake(tmp_path / "lake")
    summary = ingest_paths(lake, [source], fmt=fmt)
    assert summary.rows_read == summary.rows_stored + summary.rows_rejected
    assert summary.rows_stored > 0
    files = list(lake.files("requests"))
    assert files and all(pq.read_schema(f).remove_metadata() == schema.REQUESTS for f in files)
    formats = catalog.connect(lake).execute("SELECT DISTINCT source_format FROM requests").fetchall()
    assert formats == [(fmt,)]


def test_garbage_among_good_lines_is_quarantined(tmp_path, tmp_lake):
    data = lines(4) + b"\x01garbage\n" + lines(4, start=4)[:-30]  # and a truncated last line
    path = tmp_path / "mixed.log"
    path.write_bytes(data)
    summary = ingest_paths(tmp_lake, [path], fmt="lattice")
    assert (summary.rows_read, summary.rows_stored, summary.rows_rejected) == (9, 7, 2)
    quarantine = duckdb.sql(f"SELECT line_no, source_file FROM '{tmp_lake.quarantine_dir()}/*.parquet' ORDER BY 1").fetchall()
    assert quarantine == [(5, str(path)), (9, str(path))]
    entry = tmp_lake.manifest()[0]
    assert (entry.rows_read, entry.rows_stored, entry.rows_rejected) == (9, 7, 2)


def test_chunked_file_line_numbers_are_exact(tmp_path, tmp_lake):
    data = lines(10) + b"bad one\n" + lines(10, start=10) + b"\n\nbad two\n" + lines(3, start=20)
    path = tmp_path / "x.log.gz"
    path.write_bytes(gzip.compress(data))
    summary = ingest_paths(tmp_lake, [path], settings=Settings({"chunk_lines": 4}))
    assert (summary.rows_stored, summary.rows_rejected) == (23, 2)
    rows = duckdb.sql(f"SELECT line_no FROM '{tmp_lake.quarantine_dir()}/*.parquet' ORDER BY 1").fetchall()
    assert rows == [(11,), (24,)]
    assert _count(tmp_lake) == 23


def test_missing_file_is_a_clear_error(tmp_lake):
    with pytest.raises(InputError, match="nope.log: no such file"):
        ingest_paths(tmp_lake, ["nope.log"])


def test_bad_gzip_is_a_clear_error(tmp_path, tmp_lake):
    path = tmp_path / "broken.log.gz"
    path.write_bytes(gzip.compress(lines(200))[:300])
    with pytest.raises(InputError, match="broken.log.gz: an unreadable gzip file"):
        ingest_paths(tmp_lake, [path], fmt="lattice")
    assert not tmp_lake.has_files("requests") and tmp_lake.manifest() == []


def test_binary_file_is_a_clear_error(tmp_path, tmp_lake):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10)
    with pytest.raises(InputError, match="image.png: a binary file"):
        ingest_paths(tmp_lake, [path])


def test_unknown_format_suggests(tmp_path, tmp_lake):
    path = tmp_path / "a.log"
    path.write_bytes(lines(1))
    with pytest.raises(UnknownNameError, match="Unknown format 'lattic'. Did you mean lattice?"):
        ingest_paths(tmp_lake, [path], fmt="lattic")


def test_undetectable_file_names_the_options(tmp_path, tmp_lake):
    path = tmp_path / "notes.txt"
    path.write_text("hello\nworld\n")
    with pytest.raises(InputError, match=r"cannot tell the format of .*notes.txt; pass --format \(one of lattice"):
        ingest_paths(tmp_lake, [path])


def test_stdin(tmp_path):
    lake_dir = tmp_path / "lake"
    code = ("import sys; from meshlens.lake import Lake; from ingest.pipeline import ingest_paths; "
            "s = ingest_paths(Lake(sys.argv[1]), ['-']); print(s.rows_stored, s.files)")
    proc = subprocess.run([sys.executable, "-c", code, str(lake_dir)], input=lines(7), capture_output=True,
                          cwd=ROOT, check=True)
    assert proc.stdout.split() == [b"7", b"1"]
    assert not list((lake_dir / ".spool").glob("*"))


def test_pretty_printed_file(samples_dir, tmp_lake):
    summary = ingest_paths(tmp_lake, [samples_dir / "vpc_lattice" / "lattice_http_iam_sample.pretty.json"])
    assert (summary.rows_read, summary.rows_stored) == (1, 1)


def test_progress_reaches_the_total(tmp_path, tmp_lake):
    write_s3_layout(tmp_path / "logs", files=2, per_file=10)
    seen = []
    ingest_paths(tmp_lake, [tmp_path / "logs"], progress=seen.append)
    assert seen[-1].bytes_done == seen[-1].bytes_total > 0 and seen[-1].files_done == 2


_KILL_TARGET = """
import sys
from meshlens.lake import Lake
from meshlens.settings import Settings
from ingest.pipeline import ingest_paths
ingest_paths(Lake(sys.argv[1]), [sys.argv[2]], settings=Settings({"chunk_lines": int(sys.argv[3])}))
"""


@pytest.mark.slow
def test_killed_ingest_then_rerun_gives_exact_counts(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    total = 0
    for f in range(6):
        (logs / f"part{f}.log").write_bytes(lines(3000, start=f * 3000))
        total += 3000
    lake = Lake(tmp_path / "lake")
    proc = subprocess.Popen([sys.executable, "-c", _KILL_TARGET, str(lake.root), str(logs), "100"], cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(lake.files("requests"))) < 45:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(lake.manifest())
    assert finished < 6, "the ingest finished before it was killed; the test proves nothing"
    summary = ingest_paths(lake, [logs])
    assert summary.files_skipped == finished
    assert _count(lake) == total
    assert catalog.connect(lake).execute("SELECT count(DISTINCT ts) FROM requests").fetchone()[0] == total


@pytest.mark.slow
def test_reader_during_write_sees_only_whole_files(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for f in range(8):
        (logs / f"part{f}.log.gz").write_bytes(gzip.compress(lines(2000, start=f * 2000)))
    lake = Lake(tmp_path / "lake")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ingest_paths(lake, [logs], settings=Settings({"chunk_lines": 250}))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writer = threading.Thread(target=run)
    writer.start()
    counts = []
    while writer.is_alive():
        conn = catalog.connect(lake)  # a fresh reader: lists the files published so far
        counts.append(conn.execute("SELECT count(*) FROM requests").fetchone()[0])
        conn.close()
    writer.join()
    assert not errors
    assert all(c % 250 == 0 for c in counts), "a reader saw part of a file"
    assert counts == sorted(counts) and _count(lake) == 16000
    assert len(set(counts)) > 2, "the reader never overlapped the writer"


def test_unknown_field_survives_to_the_lake(tmp_path, tmp_lake):
    path = tmp_path / "a.log"
    path.write_bytes(json.dumps(record(0, brandNewField=7)).encode() + b"\n")
    ingest_paths(tmp_lake, [path])
    extra = catalog.connect(tmp_lake).execute("SELECT extra FROM requests").fetchone()[0]
    assert json.loads(extra) == {"brandNewField": 7}


_piece = st.one_of(
    st.builds(lambda i: lines(1, start=i), st.integers(0, 5000)),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ") + b"\n"),
    st.just(b"\n"),
)


@pytest.mark.slow
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_piece, max_size=8), st.booleans())
def test_property_rows_read_equals_stored_plus_rejected(tmp_path_factory, pieces, gzipped):
    data = lines(1) + b"".join(pieces)  # a good first line, so that the format is detected
    folder = tmp_path_factory.mktemp("prop")
    path = folder / ("x.log.gz" if gzipped else "x.log")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    lake = Lake(folder / "lake")
    summary = ingest_paths(lake, [path], fmt="lattice", settings=Settings({"chunk_lines": 3}))
    nonblank = sum(1 for line in data.split(b"\n") if line.strip())
    assert summary.rows_read == summary.rows_stored + summary.rows_rejected == nonblank
    assert _count(lake) == summary.rows_stored


def test_a_lone_opening_brace_loses_no_good_line_after_it(tmp_path, tmp_lake):
    # Found by the property test: "{" starting a chunk made the rest of the chunk one reject.
    path = tmp_path / "x.log"
    path.write_bytes(lines(3) + b"{\n" + lines(1, start=3))
    summary = ingest_paths(tmp_lake, [path], fmt="lattice", settings=Settings({"chunk_lines": 3}))
    assert (summary.rows_read, summary.rows_stored, summary.rows_rejected) == (5, 4, 1)
    assert _count(tmp_lake) == 4
