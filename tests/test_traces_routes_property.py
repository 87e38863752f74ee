"""Pre-collapsing numeric segments (meshlens.routes.collapse_numbers) must not change any route.

The reference is the templating without the collapse: strip the query, then the per-distinct
rules (``_template_distinct``) on every path; ``template_series`` must give the same bytes.
"""

from __future__ import annotations

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlens import routes

_SEGMENTS = st.one_of(
    st.from_regex(r"[0-9]{1,12}", fullmatch=True),
    st.from_regex(r"-?[0-9][0-9.,:_-]{0,8}", fullmatch=True),
    st.from_regex(r"[0-9a-f]{6,20}", fullmatch=True),
    st.from_regex(r"[A-Za-z]{1,8}[-_]?[0-9]{0,6}", fullmatch=True),
    st.from_regex(r"[0-9]{1,6}\.[a-z]{1,4}", fullmatch=True),
    st.sampled_from(["", "v1", "api", "{id}", "12{id}", "0", "007", "1e5", "١٢٣", "x?y=1", "#frag", "a=b", "u@x.io"]),
    st.text(alphabet="0123456789/-_.aZ?#={}", max_size=8),
    st.text(max_size=6),
)


def _reference(paths: pl.Series) -> list[str | None]:
    stripped = routes.strip_query(paths)
    return [None if p is None else routes._template_distinct(pl.Series([p], dtype=pl.String))[0]
            for p in stripped.to_list()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), st.builds(lambda lead, segs: lead + "/".join(segs),
                                              st.sampled_from(["", "/", "//"]),
                                              st.lists(_SEGMENTS, max_size=6))), min_size=1, max_size=12))
def test_collapse_keeps_every_route(paths: list[str | None]) -> None:
    series = pl.Series("path", paths, dtype=pl.String)
    assert routes.template_series(series).to_list() == _reference(series)


def test_collapse_edge_cases() -> None:
    paths = ["/1/2/3", "123", "1/2", "//1//", "/v1/orders/99?x=1", "/x/12.pdf", "/1a/2", "", "/", "/a/0/",
             "/files/12345.pdf", "/x/{id}/1", "/١٢٣/4", "/2015-05-17/7"]
    series = pl.Series("path", paths, dtype=pl.String)
    got = routes.template_series(series).to_list()
    assert got == _reference(series)
    assert got[0] == "/{id}/{id}/{id}" and got[3] == "//{id}//" and got[4] == "/v1/orders/{id}"


def test_collapse_numbers_only_touches_digit_segments() -> None:
    series = pl.Series(["/a1/22/b", "33", "/4.5/6"], dtype=pl.String)
    assert routes.collapse_numbers(series).to_list() == ["/a1/{id}/b", "33", "/4.5/{id}"]


def test_memo_stays_bounded_and_correct(monkeypatch) -> None:
    monkeypatch.setattr(routes, "_CACHE", {})
    monkeypatch.setattr(routes, "_CACHE_SIZE", 4)
    series = pl.Series("path", [f"/v1/c/ch_{i:x}a9Zk{i}q/x{i}.js" for i in range(10)] * 2, dtype=pl.String)
    assert routes.template_series(series).to_list() == _reference(series)
    assert routes.template_series(series).to_list() == _reference(series)
    assert len(routes._CACHE) <= 10  # cleared when full: never more than one call's misses
