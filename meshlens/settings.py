"""Settings, declared once: name, default and help text.

Values come from, in order of precedence: command-line flags (passed in by the CLI), the
environment (``MESHLENS_<NAME>`` upper-cased), the ``[settings]`` table of
``<data>/settings.toml``, then the default below. Only the CLI and the dashboard read the
environment; everything else receives a ``Settings`` object. A test checks that the README
documents every setting listed here.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlens.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("data", "meshlens-data", "the lake directory (also --data)"),
    Setting("inventory", "", "service inventory TOML; default <data>/meshlens.toml when present"),
    Setting("policy", "", "allowed-caller policy TOML; default <data>/policy.toml when present"),
    Setting("chunk_lines", 250_000, "lines parsed per batch during ingest (bounds memory)"),
    Setting("exact_percentile_max_rows", 200_000, "windows with at most this many requests get exact percentiles from raw rows"),
    Setting("min_percentile_samples", 20, "percentiles from fewer requests are flagged as unreliable"),
    Setting("receiver_host", "127.0.0.1", "address `meshlens serve` binds to"),
    Setting("receiver_port", 4318, "port `meshlens serve` listens on (OTLP/HTTP)"),
    Setting("receiver_token", "", "bearer token required by `meshlens serve`; empty means none required"),
    Setting("receiver_max_body_bytes", 64 * 1024 * 1024, "largest request body accepted by the receiver (after gunzip); larger gets 413"),
    Setting("receiver_flush_spans", 50_000, "the receiver publishes to the lake after this many spans"),
    Setting("receiver_flush_seconds", 5.0, "the receiver publishes to the lake at least this often"),
    Setting("receiver_max_pending_bytes", 256 * 1024 * 1024, "spooled bytes not yet published above which the receiver answers 503"),
    Setting("nlq_backend", "offline", "backend of `meshlens ask`: offline or claude"),
    Setting("anthropic_model", "claude-sonnet-4-5", "Claude model used by the claude backend"),
    Setting("anthropic_base_url", "", "Anthropic API base URL (empty: the SDK default)"),
    Setting("anthropic_timeout_seconds", 20.0, "timeout of one Claude request"),
    Setting("query_timeout_seconds", 10.0, "time limit of one guarded SQL query"),
    Setting("query_row_limit", 10_000, "LIMIT added to guarded queries that have none or a larger one"),
    Setting("price_region", "us-east-1", "region whose prices `meshlens cost` uses"),
    Setting("price_service_hour", 0.025, "USD per Lattice service per hour"),
    Setting("price_per_gb", 0.025, "USD per GB processed (request plus response bytes)"),
    Setting("price_per_million_requests", 0.10, "USD per million HTTP requests beyond the free tier"),
    Setting("free_requests_per_service_hour", 300_000, "requests per service per hour not charged"),
    Setting("webhook_url", "", "report webhook (Slack-compatible JSON) for `meshlens report`"),
    Setting("dashboard_host", "127.0.0.1", "address the dashboard binds to"),
    Setting("dashboard_port", 8501, "port the dashboard listens on"),
    Setting("findings_on_ingest", True, "after ingest and rollup rebuild, compute the incidents and canary verdicts of the dashboard's default window so its pages show them at once (seconds of CPU; tens at 10M requests)"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


class Settings(Mapping[str, Any]):
    """Resolved settings: a read-only mapping from name to value."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        merged = {s.name: s.default for s in SETTINGS}
        for name, value in (values or {}).items():
            if name not in _BY_NAME:
                raise UnknownNameError("setting", name, _BY_NAME)
            merged[name] = _coerce(_BY_NAME[name], value)
        self._values = merged

    def __getitem__(self, name: str) -> Any:
        if name not in self._values:
            raise UnknownNameError("setting", name, _BY_NAME)
        return self._values[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def replace(self, **changes: Any) -> "Settings":
        """A copy with ``changes`` applied (None values are ignored)."""
        values = dict(self._values)
        values.update({k: v for k, v in changes.items() if v is not None})
        return Settings(values)


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _coerce(setting: Setting, value: Any) -> Any:
    kind = type(setting.default)
    if isinstance(value, kind) or value is None:
        return value
    if kind is bool:
        return _coerce_bool(setting, value)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {setting.name}: {value!r} is not a {kind.__name__}") from None


def _coerce_bool(setting: Setting, value: Any) -> bool:
    word = str(value).strip().lower()
    if word not in _BOOLEANS:
        raise ConfigError(f"setting {setting.name}: {value!r} is not true or false")
    return _BOOLEANS[word]


def load(*, environ: Mapping[str, str], data_dir: str | Path | None = None, **flags: Any) -> Settings:
    """Resolve settings from flags, ``environ`` and ``<data>/settings.toml``."""
    values: dict[str, Any] = {}
    data = flags.get("data") or environ.get("MESHLENS_DATA") or _BY_NAME["data"].default
    path = Path(data_dir or data) / "settings.toml"
    if path.is_file():
        values.update(_read_toml(path).get("settings", {}))
    for s in SETTINGS:
        env_value = environ.get(f"MESHLENS_{s.name.upper()}")
        if env_value is not None:
            values[s.name] = env_value
    values.update({k: v for k, v in flags.items() if v is not None})
    values["data"] = str(data)
    return Settings(values)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def from_environment(**flags: Any) -> Settings:
    """Settings for the CLI and dashboard: flags over the process environment."""
    return load(environ=os.environ, **flags)
