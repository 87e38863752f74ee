"""The allowed-caller policy file: which callers may call a service, per env.

Format (TOML)::

    [[allow]]
    service = "PaymentService"          # the callee
    env = "prod"                        # optional: omit for every env
    callers = ["OrderService", "CheckoutService"]

A request to that service in that env from any other caller, an unresolved ('unknown') caller
included, breaks the policy. Several rules for the same service and env add their callers up.
Requests the network itself denied (403 with an auth denied reason) are reported by
analytics.security.denied, not as violations. Services without a rule may be called by anyone.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlens.errors import ConfigError

_KEYS = {"service", "env", "callers"}


@dataclass(frozen=True)
class Rule:
    """Only ``callers`` may call ``service`` in ``env`` (None: every env)."""

    service: str
    env: str | None
    callers: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    """The rules of one policy file."""

    rules: tuple[Rule, ...]
    source: str = "<memory>"


def load_policy(path: str | Path) -> Policy:
    """Read and check a policy file; every problem is a ConfigError naming the file and rule."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc.strerror or exc}") from None
    return parse_policy(text, source=str(path))


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    """Parse policy TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(data) - {"allow"}
    if unknown:
        raise ConfigError(f"{source}: unknown table(s) {', '.join(sorted(unknown))}; a policy has only [[allow]] rules")
    entries = data.get("allow", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: 'allow' must be an array of tables, written [[allow]]")
    return Policy(tuple(_rule(entry, source=source, number=i + 1) for i, entry in enumerate(entries)), source)


def _rule(entry: Any, *, source: str, number: int) -> Rule:
    where = f"{source}: [[allow]] rule {number}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    extra = set(entry) - _KEYS
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}; use service, env, callers")
    service = entry.get("service")
    if not isinstance(service, str) or not service:
        raise ConfigError(f"{where}: 'service' must be a non-empty string")
    env = entry.get("env")
    if env is not None and (not isinstance(env, str) or not env):
        raise ConfigError(f"{where}: 'env' must be a non-empty string (omit it for every env)")
    callers = entry.get("callers")
    if not isinstance(callers, list) or not all(isinstance(c, str) and c for c in callers):
        raise ConfigError(f"{where}: 'callers' must be a list of service names, e.g. [\"OrderService\"]")
    return Rule(service=service, env=env, callers=tuple(callers))


def allowed(policy: Policy) -> dict[tuple[str, str | None], set[str]]:
    """(service, env) -> allowed callers, rules for the same pair merged."""
    out: dict[tuple[str, str | None], set[str]] = {}
    for rule in policy.rules:
        out.setdefault((rule.service, rule.env), set()).update(rule.callers)
    return out
