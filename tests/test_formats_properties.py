"""Property tests: no input crashes a parser, and every non-blank line is one row or one reject."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import alb, combined, envoy, istio_json

SAMPLES = Path(__file__).resolve().parents[1] / "sample_logs"
PARSERS = [alb, envoy, istio_json, combined]
SAMPLE_LINES = [
    line
    for name in ("alb.log", "envoy.log", "istio.log", "istio_json.log", "combined.log", "combined_timed.log")
    for line in (SAMPLES / name).read_bytes().split(b"\n")
    if line.strip()
]


@st.composite
def mutated_line(draw: st.DrawFn) -> bytes:
    """A real sample line with a slice replaced by arbitrary bytes or text."""
    line = draw(st.sampled_from(SAMPLE_LINES))
    start = draw(st.integers(0, len(line)))
    end = draw(st.integers(start, min(len(line), start + 40)))
    filler = draw(st.one_of(st.binary(max_size=12), st.text(max_size=12).map(str.encode)))
    return line[:start] + filler + line[end:]


chunks = st.one_of(
    st.binary(max_size=400),
    st.lists(st.one_of(mutated_line(), st.sampled_from(SAMPLE_LINES), st.sampled_from([b"", b" ", b"\r", b"\t\x0b"])),
             max_size=12).map(lambda lines: b"\n".join(lines)),
    st.lists(mutated_line(), min_size=1, max_size=6).map(lambda lines: b"\r\n".join(lines) + b"\r\n"),
)


def _check(module, chunk: bytes, first_line_no: int) -> None:  # type: ignore[no-untyped-def]
    parsed = module.parse(chunk, first_line_no=first_line_no)
    lines = chunk.split(b"\n")
    non_blank = {first_line_no + i for i, line in enumerate(lines) if line.strip()}
    rejected = [n for n, _, _ in parsed.rejects]
    assert parsed.rows.height + len(parsed.rejects) == len(non_blank)
    assert len(set(rejected)) == len(rejected) and set(rejected) <= non_blank
    assert all(reason for _, reason, _ in parsed.rejects)
    if parsed.rows.height:
        assert parsed.rows["ts"].null_count() == 0


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunk=chunks, first_line_no=st.integers(1, 10**6))
def test_no_input_crashes_any_parser_and_lines_are_accounted_for(chunk: bytes, first_line_no: int) -> None:
    for module in PARSERS:
        _check(module, chunk, first_line_no)


@settings(max_examples=60, deadline=None)
@given(chunk=chunks)
def test_sniff_never_crashes(chunk: bytes) -> None:
    for module in PARSERS:
        assert module.sniff(chunk) in (True, False)
