"""Access logs in: one module per source format, one registry, one pipeline.

Every format is a module of this package with three names (the parser contract):

    NAME = "alb"                                   # the registry key, also ``--format``
    def sniff(head: bytes) -> bool                 # do the first ~64 KiB look like this format?
    def parse(chunk: bytes, *, first_line_no: int) -> Parsed

``parse`` turns a run of complete lines into a polars frame named as in
``meshlens.schema.REQUESTS`` (any subset) plus optional identity hints (``_host``,
``_service_ref``, ``_principals``, ``_upstream_cluster``), and one reject per line it cannot
read: every non-blank line becomes exactly one row or one reject. Optionally a module defines
``whole_file(head: bytes) -> bool`` to receive the whole file as one chunk (pretty-printed
JSON). The pipeline (``ingest.pipeline``) does the rest: identity, routes, schema, the lake.

To add a format: write ``ingest/<name>.py`` with the three names above, add its module name to
``FORMAT_MODULES`` below (the order is the order ``detect`` tries the sniffers: put the most
specific first), and add a golden sample under ``sample_logs/``; the format then appears in
``--format`` and in the test that checks every format yields exactly the REQUESTS schema.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from meshlens.errors import InputError, UnknownNameError

FORMAT_MODULES: tuple[str, ...] = ("lattice", "istio_json", "alb", "envoy", "combined")
"""Format modules, in the order ``detect`` tries them."""


def _load(names: tuple[str, ...]) -> dict[str, ModuleType]:
    formats: dict[str, ModuleType] = {}
    for name in names:
        try:
            module = importlib.import_module(f"ingest.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ingest.{name}":  # a real missing dependency, not a missing format
                raise
            continue
        formats[module.NAME] = module
    return formats


FORMATS: dict[str, ModuleType] = _load(FORMAT_MODULES)
"""The registry: format name -> module."""


def get_format(name: str) -> ModuleType:
    """The module of format ``name``; an unknown name says "Did you mean ...?"."""
    if name in FORMATS:
        return FORMATS[name]
    error = UnknownNameError("format", name, FORMATS)
    hint = f" Did you mean {' or '.join(error.suggestions)}?" if error.suggestions else ""
    error.args = (f"Unknown format '{name}'.{hint} Known formats: {', '.join(FORMATS)}.",)
    raise error


def detect(head: bytes, *, name: str = "input") -> str:
    """The name of the first format whose sniffer accepts ``head``; InputError when none does."""
    for fmt, module in FORMATS.items():
        if module.sniff(head):
            return fmt
    raise InputError(f"cannot tell the format of {name}; pass --format (one of {', '.join(FORMATS)})")


SPAN_FORMAT_MODULES: tuple[str, ...] = ("otlp_json", "otlp_proto")
"""OTLP trace formats (traces engineer): same NAME/sniff contract, but their files go to
``ingest.otlp.ingest_span_file`` and the ``spans`` table instead of ``requests``."""

SPAN_FORMATS: dict[str, ModuleType] = _load(SPAN_FORMAT_MODULES)
"""The span registry: format name -> module (try these sniffers before ``FORMATS``)."""
