"""Path templating: turn raw request paths into routes with a bounded number of values.

``/v1/charges/ch_8f3a?expand=x`` becomes ``/v1/charges/{id}``. The query string and fragment
are dropped, then every path segment that looks like an identifier is replaced by ``{id}``:

- numbers, and digit runs with separators: ``12345``, ``-3.5``, ``2015-05-17``, ``10.0.0.1``,
  ``1.3.2``, ``20071210``
- UUIDs and long hex (8+ hex digits, at least one of them a number): ``73e2d6bc24d8a067``
- prefixed ids: a short word, ``-`` or ``_``, then digits (``ord-12345``, ``item_7``,
  ``logstash-1``) or 4+ random-looking letters and digits (``ch_8f3a``,
  ``svc-0cfe1f49ff3266204``, ``i-0abc123``, ``cus_NffrFeUfNV2Hib``; but ``api-v2``,
  ``kibana-dashboard3`` and ``logstash-scale11x`` stay)
- a word glued to a long number (``user12345``, ``INV00042``: 5+ digits; ``sysadvent2009`` stays)
- base64-ish tokens: 16+ characters of ``[A-Za-z0-9+=_-]`` with upper case, lower case and a
  digit (and no ``-``/``_`` below 32 characters), or ending in ``=``; JSON web tokens (``eyJ...``); ARNs; email addresses
- random-looking lower-case tokens: 10+ letters and digits with at least 3 digits in two or more
  runs (``k3j4h5g6f7d8``; ``rubygems615`` stays)

File names keep their extension and are judged on their stem with the strict rules only
(numbers, dates, hex, UUIDs): ``/files/12345.pdf`` becomes ``/files/{id}.pdf`` while
``/images/kibana-search.png`` and ``/files/logstash-1.3.2-monolithic.jar`` are kept; a content
hash in a file name is templated (``app.27138e04.js`` -> ``app.{id}.js``). Ordinary
words (``/v1/charges``, ``/healthz``, ``/api/v2/users``, ``/oauth2/idpresponse``) are kept.

Templating works on distinct paths only (a log holds far fewer distinct paths than lines), so
its cost follows the number of distinct paths; it is one polars computation for all of them.
All-digit segments are turned into ``{id}`` on every row first (one vectorised pass), so
paths that differ only by numeric ids count once, and routes of distinct paths are memoised
across calls: the rules run only on paths not seen before.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

ID = "{id}"

_STRICT_RULES = (
    r"^-?[0-9][0-9.,:_-]*$",  # numbers, dates, times, IPs, versions
    r"^(?:0x)?[0-9A-Fa-f]{8,}$",  # long hex
    r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$",  # UUID
    r"^[0-9]{4}-?[0-9]{2}-?[0-9]{2}T[0-9:.]+Z?$",  # ISO timestamps
)
_A = "[A-Za-z0-9]"
_RANDOM_TOKEN = "|".join((
    f"[0-9]{_A}{{3,}}",  # starts with a digit: 8f3a, 0cfe1f49ff3266204
    "[0-9a-fA-F]{3,}[0-9][0-9a-fA-F]*|[0-9a-fA-F]*[0-9][0-9a-fA-F]{3,}",  # hex with a digit: fa3bcd
    f"{_A}*[0-9][A-Za-z]+[0-9]{_A}*",  # two digit runs: ab12cd34
    f"{_A}*[0-9]{_A}*[a-z]{_A}*[A-Z]{_A}*",  # a digit and an upper after a lower: NffrFeUfNV2Hib
    f"{_A}*[a-z]{_A}*[A-Z]{_A}*[0-9]{_A}*",
    f"{_A}*[a-z]{_A}*[0-9]{_A}*[A-Z]{_A}*",
))
_ID_RULES = (
    r"^eyJ[A-Za-z0-9_=-]+(?:\.[A-Za-z0-9_=-]*){1,2}$",  # JSON web tokens
    r"^arn:",  # AWS ARNs
    r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$",  # email addresses
    r"^[A-Za-z]{1,16}[-_][0-9]+$",  # ord-12345, item_7
    r"^[A-Za-z]{1,12}[0-9]{5,}$",  # user12345, INV00042 (not sysadvent2009)
    r"^[A-Za-z0-9+_-]{8,}={1,2}$",  # padded base64
    f"^[A-Za-z]{{1,16}}[-_](?:{_RANDOM_TOKEN})$",  # prefixed ids: ch_8f3a, svc-0cfe..., cus_Nffr...
    # random lower case: 3+ digits in 2+ runs (k3j4h5g6f7d8; not rubygems615), 10+ long (below)
)
_RANDOM_LOWER = r"^[a-z0-9]*(?:[0-9]{2,}[a-z]+[0-9]|[0-9][a-z]+[0-9]{2,}|[0-9][a-z]+[0-9][a-z]+[0-9])[a-z0-9]*$"
_MIXED = "|".join(  # upper case, lower case and a digit, in any order
    f"[{x}].*[{y}].*[{z}]"
    for x, y, z in (("A-Z", "a-z", "0-9"), ("A-Z", "0-9", "a-z"), ("a-z", "A-Z", "0-9"),
                    ("a-z", "0-9", "A-Z"), ("0-9", "A-Z", "a-z"), ("0-9", "a-z", "A-Z"))
)
_EXTENSION = r"\.[A-Za-z][A-Za-z0-9]{0,4}$"
_HASHED_FILE = r"^(.+[.-])[0-9a-fA-F]{7,}(\.[A-Za-z][A-Za-z0-9]{0,4})$"  # app.27138e04.js


def template_path(path: str | None) -> str | None:
    """The route of one path (scalar form of :func:`template_expr`)."""
    if path is None:
        return None
    return template_series(pl.Series([path], dtype=pl.String))[0]


def template_expr(col: pl.Expr) -> pl.Expr:
    """Polars expression: the route of every path in ``col`` (null stays null)."""
    return col.map_batches(template_series, return_dtype=pl.String, is_elementwise=True)


def template_series(paths: pl.Series) -> pl.Series:
    """Routes of a series of paths, computed once per distinct path."""
    name = paths.name
    stripped = collapse_numbers(strip_query(paths.cast(pl.String)))
    # dictionary encoding: the distinct paths, and for every row the index of its path
    encoded = pc.dictionary_encode(stripped.to_arrow().cast(pa.large_string()))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    if len(encoded.dictionary) == 0:
        return stripped.alias(name)
    routes = pa.array(_cached_routes(encoded.dictionary.to_pylist()), pa.large_string())
    return pl.Series(name, pc.take(routes, encoded.indices)).cast(pl.String)


_CACHE: dict[str, str] = {}
_CACHE_SIZE = 1 << 16


def _cached_routes(distinct: list[str]) -> list[str]:
    """Routes of distinct paths, from a bounded memo of earlier calls (rules on misses only).

    After :func:`collapse_numbers` the same few distinct paths come back call after call; each
    polars call costs a fixed ~0.1 ms of CPU (thread pool), so the rules run only on new paths.
    """
    known = {p: r for p in distinct if (r := _CACHE.get(p)) is not None}
    misses = [p for p in distinct if p not in known]
    if misses:
        new = dict(zip(misses, _template_distinct(pl.Series(misses, dtype=pl.String)).to_list()))
        known.update(new)
        if len(_CACHE) + len(new) > _CACHE_SIZE:
            _CACHE.clear()  # bounded; other threads keep their own ``known``
        _CACHE.update(new)
    return [known[p] for p in distinct]


def strip_query(paths: pl.Series) -> pl.Series:
    """Paths without their query string and fragment."""
    return paths.str.replace(r"[?#].*$", "")


def collapse_numbers(paths: pl.Series) -> pl.Series:
    """Paths with most all-digit segments already ``{id}`` (what the rules make of them).

    One vectorised pass over all rows before the distinct paths are taken: paths that differ
    only by numeric ids (``/v1/orders/123``) then share one distinct path, so the per-distinct
    rules run on few. Only whole segments are replaced; the ones a pass leaves (a leading
    segment, the second of ``/1/2/``) are still templated by the rules, to the same ``{id}``.
    Regexes without capture groups: those run as a DFA, several times faster.
    """
    return paths.str.replace_all("/[0-9]+/", "/{id}/").str.replace("/[0-9]+$", "/{id}")


def _template_distinct(paths: pl.Series) -> pl.Series:
    """Template distinct, query-free paths segment by segment.

    Only segments holding a digit, ``@`` or ``=`` can be ids; the rules run on those alone and
    their results are scattered back before the segments are joined into paths again.
    """
    parts = paths.str.split("/")
    flat = parts.explode().fill_null("")
    candidates = flat.str.contains(r"[0-9@=]").arg_true()
    if candidates.len():
        flat = flat.scatter(candidates, _judge_segments(flat.gather(candidates)))
    offsets = np.concatenate([[0], np.cumsum(parts.list.len().fill_null(0).to_numpy())]).astype(np.int64)
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), flat.to_arrow().cast(pa.large_string()))
    return pl.Series(lists).list.join("/")


def _judge_segments(segments: pl.Series) -> pl.Series:
    """``_segment_expr`` of each candidate segment, run once per distinct segment.

    Segments repeat across paths (``v1``, ``api``); a segment of digits only is always an id
    (a number, with no extension: the first strict rule) and skips the rules.
    """
    encoded = pc.dictionary_encode(segments.to_arrow().cast(pa.large_string()))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    distinct = pl.Series("s", encoded.dictionary).cast(pl.String)
    others = distinct.str.contains(r"^[0-9]+$").not_().arg_true()
    judged = pl.repeat(ID, distinct.len(), dtype=pl.String, eager=True)
    if others.len():
        rest = pl.DataFrame({"s": distinct.gather(others)}).select(_segment_expr(pl.col("s"))).to_series()
        judged = judged.scatter(others, rest)
    return pl.Series(pc.take(judged.to_arrow(), encoded.indices)).cast(pl.String)


def _segment_expr(seg: pl.Expr) -> pl.Expr:
    """One path segment, or ``{id}`` (plus its file extension) when it looks like an id.

    Each rule is one regex pass (a DFA, no captures) over the candidate segments; rules that
    need a minimum length pair a regex with a cheap length test.
    """
    length = seg.str.len_chars()
    is_id = (
        seg.str.contains(_any(_ID_RULES))
        | ((length >= 10) & seg.str.contains(_RANDOM_LOWER))
        | ((length >= 16) & seg.str.contains(_MIXED) & seg.str.contains(r"^[A-Za-z0-9+=]+$"))
        | ((length >= 32) & seg.str.contains(_MIXED) & seg.str.contains(r"^[A-Za-z0-9+=_-]+$"))
    )
    ext = seg.str.extract(f"({_EXTENSION})").fill_null("")
    stem = seg.str.slice(0, length - ext.str.len_chars())
    return (
        pl.when(seg == "").then(seg)
        .when(is_id).then(pl.lit(ID))
        .when(stem.str.contains(_any(_STRICT_RULES))).then(pl.lit(ID) + ext)
        .otherwise(seg.str.replace(_HASHED_FILE, "${1}{id}${2}"))
    )


def _any(rules: tuple[str, ...]) -> str:
    return "|".join(f"(?:{rule})" for rule in rules)
