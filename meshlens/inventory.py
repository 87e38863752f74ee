"""The service inventory: what the logs carry (hosts, ids, principals, addresses) -> names.

A TOML file passed with ``--inventory FILE`` or found as ``<data>/meshlens.toml``, with exactly
these tables (every key but ``name``/``id`` optional)::

    [[service]]
    name = "PaymentService"
    hosts = ["payment-service-*"]          # host header / SNI globs
    ids = ["svc-0cfe1f49ff3266204"]         # Lattice service ids or ARNs
    principals = ["spiffe://prod.mesh/ns/pay/sa/payment-service",
                  "arn:aws:sts::*:assumed-role/payment-*"]   # globs over caller principals
    cidrs = ["10.1.4.0/24"]                 # source addresses of this service when it calls others

    [[target_group]]
    id = "tg-0277f384abfefe8aa"             # id or ARN
    service = "PaymentService"
    version = "v2"

    [[env]]
    name = "prod"
    service_networks = ["sn-0e05d75deabe9f290"]   # ids or ARNs
    accounts = ["123467890123"]

``import_aws`` builds the same structure from what ``aws vpc-lattice list-services`` and
``aws vpc-lattice list-target-groups`` print (their ``items``), and ``to_toml`` writes it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshlens.errors import ConfigError, did_you_mean

_KEYS: dict[str, dict[str, type]] = {
    "service": {"name": str, "hosts": list, "ids": list, "principals": list, "cidrs": list},
    "target_group": {"id": str, "service": str, "version": str},
    "env": {"name": str, "service_networks": list, "accounts": list},
}
_REQUIRED = {"service": ("name",), "target_group": ("id",), "env": ("name",)}


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    hosts: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class TargetGroupEntry:
    id: str
    service: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class EnvEntry:
    name: str
    service_networks: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Inventory:
    """Services, target groups and environments; an empty inventory means defaults only."""

    services: tuple[ServiceEntry, ...] = ()
    target_groups: tuple[TargetGroupEntry, ...] = ()
    envs: tuple[EnvEntry, ...] = ()
    source: str = field(default="", compare=False)

    @property
    def empty(self) -> bool:
        """True when there is nothing in it (defaults only)."""
        return not (self.services or self.target_groups or self.envs)


def load(path: str | Path) -> Inventory:
    """Read and validate an inventory TOML file; ConfigError says what is wrong and where."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such inventory file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the inventory ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return from_dict(data, source=str(path))


def from_dict(data: dict[str, Any], *, source: str = "inventory") -> Inventory:
    """Validate a parsed inventory document."""
    for key in data:
        if key not in _KEYS:
            raise ConfigError(_unknown(source, key, "top-level table", _KEYS))
    tables = {kind: [_entry(source, kind, i, raw) for i, raw in enumerate(_list_of_tables(source, kind, data))]
              for kind in _KEYS}
    for tg in tables["target_group"]:
        if not tg.get("service") and not tg.get("version"):
            raise ConfigError(f"{source}: [[target_group]] {tg['id']!r} needs a service or a version")
    for svc in tables["service"]:
        for cidr in svc.get("cidrs", []):
            _check_cidr(source, svc["name"], cidr)
    return Inventory(
        services=tuple(ServiceEntry(**_tuples(e)) for e in tables["service"]),
        target_groups=tuple(TargetGroupEntry(**e) for e in tables["target_group"]),
        envs=tuple(EnvEntry(**_tuples(e)) for e in tables["env"]),
        source=source,
    )


def _list_of_tables(source: str, kind: str, data: dict[str, Any]) -> list[Any]:
    value = data.get(kind, [])
    if not isinstance(value, list):
        raise ConfigError(f"{source}: {kind} must be an array of tables, written [[{kind}]]")
    return value


def _entry(source: str, kind: str, index: int, raw: Any) -> dict[str, Any]:
    where = f"{source}: [[{kind}]] #{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} is not a table")
    for key, value in raw.items():
        if key not in _KEYS[kind]:
            raise ConfigError(_unknown(where, key, "key", _KEYS[kind]))
        expected = _KEYS[kind][key]
        if expected is list:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{where}: {key} must be a list of non-empty strings")
        elif not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {key} must be a non-empty string")
    for key in _REQUIRED[kind]:
        if key not in raw:
            raise ConfigError(f"{where}: missing {key}")
    return dict(raw)


def _unknown(where: str, key: str, what: str, known: Any) -> str:
    hint = did_you_mean(key, known)
    suggestion = f"; did you mean {' or '.join(hint)}?" if hint else f"; known: {', '.join(known)}"
    return f"{where}: unknown {what} {key!r}{suggestion}"


def _check_cidr(source: str, name: str, cidr: str) -> None:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise ConfigError(f"{source}: service {name!r}: {cidr!r} is not a CIDR such as 10.1.4.0/24") from None


def _tuples(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}


# -- building from the AWS CLI ------------------------------------------------------------------
_VERSION = re.compile(r"(?:^|[-_.])(v\d+[a-z0-9]*|blue|green|canary|stable)$", re.I)


def import_aws(documents: list[Any], *, source: str = "input") -> Inventory:
    """An inventory from ``aws vpc-lattice list-services`` / ``list-target-groups`` JSON."""
    services: dict[str, ServiceEntry] = {}
    groups: list[dict[str, Any]] = []
    for doc in documents:
        items = doc.get("items") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise ConfigError(f"{source}: expected the JSON printed by aws vpc-lattice list-services "
                              "or list-target-groups (an object with items)")
        for item in items:
            if not isinstance(item, dict):
                continue
            if str(item.get("id", "")).startswith("svc-") or ":service/" in str(item.get("arn", "")):
                services[str(item.get("arn") or item["id"])] = _service_from_item(item)
            elif str(item.get("id", "")).startswith("tg-") or ":targetgroup/" in str(item.get("arn", "")):
                groups.append(item)
    by_ref = {ref: s.name for s in services.values() for ref in s.ids}
    target_groups = tuple(_group_from_item(g, by_ref) for g in groups)
    return Inventory(services=tuple(services.values()), target_groups=target_groups, source=source)


def _service_from_item(item: dict[str, Any]) -> ServiceEntry:
    ids = tuple(str(v) for v in (item.get("id"), item.get("arn")) if v)
    hosts = []
    dns = (item.get("dnsEntry") or {}).get("domainName")
    for host in (dns, item.get("customDomainName")):
        if host:
            hosts.append(str(host).lower())
    name = str(item.get("name") or item.get("id"))
    return ServiceEntry(name=name, hosts=tuple(hosts), ids=ids)


def _group_from_item(item: dict[str, Any], by_ref: dict[str, str]) -> TargetGroupEntry:
    service = next((by_ref[a] for a in item.get("serviceArns", []) or [] if a in by_ref), None)
    name = str(item.get("name") or item.get("id"))
    match = _VERSION.search(name)
    version = match.group(1) if match else name
    return TargetGroupEntry(id=str(item.get("id") or item.get("arn")), service=service, version=version)


def load_json_documents(paths: list[Path]) -> list[Any]:
    """Parse each file as JSON; ConfigError names the bad file."""
    docs = []
    for path in paths:
        try:
            docs.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not JSON ({exc})") from None
    return docs


def to_toml(inventory: Inventory) -> str:
    """The inventory as TOML, in the documented layout."""
    out: list[str] = []
    for svc in inventory.services:
        out.append("[[service]]")
        out.append(f"name = {json.dumps(svc.name)}")
        for key in ("hosts", "ids", "principals", "cidrs"):
            values = getattr(svc, key)
            if values:
                out.append(f"{key} = {json.dumps(list(values))}")
        out.append("")
    for tg in inventory.target_groups:
        out.append("[[target_group]]")
        out.append(f"id = {json.dumps(tg.id)}")
        for key in ("service", "version"):
            if getattr(tg, key):
                out.append(f"{key} = {json.dumps(getattr(tg, key))}")
        out.append("")
    for env in inventory.envs:
        out.append("[[env]]")
        out.append(f"name = {json.dumps(env.name)}")
        for key in ("service_networks", "accounts"):
            if getattr(env, key):
                out.append(f"{key} = {json.dumps(list(getattr(env, key)))}")
        out.append("")
    return "\n".join(out)
