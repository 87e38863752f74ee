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
``/images/kibana-search.png`` and ``/files/logstash-1.3.2-monolithic.jar`` are kept. Ordinary
words (``/v1/charges``, ``/healthz``, ``/api/v2/users``, ``/oauth2/idpresponse``) are kept.

Templating works on distinct paths only (a log holds far fewer distinct paths than lines), so
its cost follows the number of distinct paths; it is one polars computation for all of them.
"""

from __future__ import annotations

import polars as pl

ID = "{id}"

_STRICT_RULES = (
    r"^-?[0-9][0-9.,:_-]*$",  # numbers, dates, times, IPs, versions
    r"^(?:0x)?[0-9A-Fa-f]{8,}$",  # long hex
    r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$",  # UUID
    r"^[0-9]{4}-?[0-9]{2}-?[0-9]{2}T[0-9:.]+Z?$",  # ISO timestamps
)
_WHOLE_RULES = (
    r"^eyJ[A-Za-z0-9_=-]+(?:\.[A-Za-z0-9_=-]*){1,2}$",  # JSON web tokens
    r"^arn:",  # AWS ARNs
    r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$",  # email addresses
)
_LOOSE_RULES = (
    r"^[A-Za-z]{1,16}[-_][0-9]+$",  # ord-12345, item_7
    r"^[A-Za-z]{1,12}[0-9]{5,}$",  # user12345, INV00042 (not sysadvent2009)
    r"^[A-Za-z0-9+_-]{8,}={1,2}$",  # padded base64
)
_EXTENSION = r"\.[A-Za-z][A-Za-z0-9]{0,4}$"


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
    stripped = strip_query(paths.cast(pl.String))
    distinct = stripped.drop_nulls().unique()
    if distinct.len() == 0:
        return stripped.alias(name)
    table = pl.DataFrame({"p": distinct, "r": _template_distinct(distinct)})
    joined = pl.DataFrame({"p": stripped}).join(table, on="p", how="left", maintain_order="left")
    return joined["r"].alias(name)


def strip_query(paths: pl.Series) -> pl.Series:
    """Paths without their query string and fragment."""
    return paths.str.replace(r"[?#].*$", "")


def _template_distinct(paths: pl.Series) -> pl.Series:
    """Template distinct, query-free paths segment by segment."""
    frame = pl.DataFrame({"p": paths})
    out = frame.select(
        pl.when(pl.col("p").str.contains(r"[0-9@=]"))
        .then(pl.col("p").str.split("/").list.eval(_segment_expr(pl.element())).list.join("/"))
        .otherwise(pl.col("p"))
    )
    return out.to_series()


def _segment_expr(seg: pl.Expr) -> pl.Expr:
    """One path segment, or ``{id}`` (plus its file extension) when it looks like an id."""
    ext = seg.str.extract(f"({_EXTENSION})").fill_null("")
    stem = seg.str.replace(_EXTENSION, "")
    has_ext = ext != ""
    templated = (
        pl.when(_any_match(seg, _WHOLE_RULES))
        .then(pl.lit(ID))
        .when(_any_match(stem, _STRICT_RULES))
        .then(pl.lit(ID) + ext)
        .when(~has_ext & (_any_match(seg, _LOOSE_RULES) | _prefixed_id(seg) | _random_token(seg)))
        .then(pl.lit(ID))
        .otherwise(seg)
    )
    return pl.when(seg == "").then(seg).otherwise(templated)


def _any_match(seg: pl.Expr, rules: tuple[str, ...]) -> pl.Expr:
    return seg.str.contains("|".join(f"(?:{rule})" for rule in rules))


def _prefixed_id(seg: pl.Expr) -> pl.Expr:
    """``ch_8f3a``-style: word, separator, then 4+ alphanumerics that look random.

    Random means: starts with a digit (``8f3a``), is 6+ hex digits (``fa3bcd``), has two digit
    runs (``ab12cd34``), or an
    upper-case letter after a lower-case one (``NffrFeUfNV2Hib``), with at least one digit; so
    ``logstash-scale11x`` and ``kibana-dashboard3`` stay.
    """
    token = seg.str.extract(r"^[A-Za-z]{1,16}[-_]([A-Za-z0-9]{4,})$")
    looks_random = (
        token.str.contains(r"^[0-9]")
        | token.str.contains(r"^[0-9a-fA-F]{6,}$")
        | token.str.contains(r"[0-9][A-Za-z]+[0-9]")
        | token.str.contains(r"[a-z][A-Za-z0-9]*[A-Z]")
    )
    return (token.is_not_null() & token.str.contains(r"[0-9]") & looks_random).fill_null(False)


def _random_token(seg: pl.Expr) -> pl.Expr:
    """Base64-ish or random-looking tokens that no word resembles."""
    long_b64 = (
        (seg.str.len_chars() >= 16)
        & seg.str.contains(r"^[A-Za-z0-9+=_-]+$")
        & seg.str.contains(r"[A-Z]")
        & seg.str.contains(r"[a-z]")
        & seg.str.contains(r"[0-9]")
        & (~seg.str.contains(r"[-_]") | (seg.str.len_chars() >= 32))  # not a Capitalised-Slug-2
    )
    random_lower = (
        (seg.str.len_chars() >= 10)
        & seg.str.contains(r"^[a-z0-9]+$")
        & (seg.str.count_matches(r"[0-9]") >= 3)
        & seg.str.contains(r"[0-9][a-z]+[0-9]")
    )
    return (long_b64 | random_lower).fill_null(False)
