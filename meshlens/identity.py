"""Who called, which service and version was called, in which environment.

Parsers hand over what the log carries (identity hints: ``_host``, ``_service_ref``,
``_principals``, ``_upstream_cluster``, plus ``caller_principal``, ``target_group``,
``service_network``, ``account``, ``source_ip``); ``Resolver.resolve`` turns them into the
``service``, ``version``, ``caller``, ``caller_principal`` and ``env`` columns.

Order of evidence, first match wins:

* callee: a name the parser set (Istio's cluster) -> the inventory's ``ids`` (service id or
  ARN) -> its ``hosts`` globs -> the Lattice default host name
  (``test2-0cfe1f49ff3266204.7d67968.vpc-lattice-svcs...`` is ``test2``) -> Istio
  ``outbound|port|subset|host`` -> the inventory target group's service -> the raw service id
  -> ``unknown``;
* version: the inventory target group -> a version the parser set -> the target group id;
* caller: a name the parser set -> the inventory's ``principals`` globs over every principal
  field -> the SPIFFE service account (``.../sa/<name>``) or IAM role name of the principal ->
  the inventory ``cidrs`` containing the source address -> ``unknown`` (the raw principal stays
  in ``caller_principal``, the address in ``source_ip``);
* env: the inventory ``[[env]]`` whose service network or account matches.

Resolution runs on the distinct values of the hint columns (a few hundred hosts and
principals in millions of rows), in Python, and is joined back with polars; no per-row Python.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Callable
from functools import lru_cache

import polars as pl

from meshlens.inventory import Inventory
from meshlens.schema import UNKNOWN

SEP = "\x1f"
_LATTICE_HOST = re.compile(r"^(?P<name>[a-z0-9][a-z0-9-]*?)-0[0-9a-f]{16}\.[0-9a-z]+\.vpc-lattice-svcs\.", re.I)
_SPIFFE_SA = re.compile(r"^spiffe://[^/]+/(?:.*/)?sa/(?P<name>[^/]+)")
_ROLE = re.compile(r"^arn:aws[a-z-]*:(?:sts::\d*:assumed-role|iam::\d*:role(?:/.*)?)/(?P<name>[^/]+)")
_ISTIO_CLUSTER = re.compile(r"^(?:outbound|inbound)\|\d*\|(?P<subset>[^|]*)\|(?P<host>[^|]+)$")


def _tail(ref: str) -> str:
    """``arn:...:service/svc-123`` -> ``svc-123``; an id stays as it is."""
    return ref.rsplit("/", 1)[-1]


class _Globs:
    """Patterns to names: exact values by dict, globs in order."""

    def __init__(self, pairs: list[tuple[str, str]], *, fold: bool = False) -> None:
        self.fold = fold
        self.exact: dict[str, str] = {}
        self.globs: list[tuple[str, str]] = []
        for pattern, name in pairs:
            pattern = pattern.lower() if fold else pattern
            if any(ch in pattern for ch in "*?["):
                self.globs.append((pattern, name))
            else:
                self.exact.setdefault(pattern, name)

    def match(self, value: str) -> str | None:
        value = value.lower() if self.fold else value
        if value in self.exact:
            return self.exact[value]
        return next((name for pattern, name in self.globs if fnmatch.fnmatchcase(value, pattern)), None)


class Resolver:
    """Identity resolution for one inventory (possibly empty: defaults only)."""

    def __init__(self, inventory: Inventory | None = None) -> None:
        inv = inventory or Inventory()
        self.ids = {_tail(ref): s.name for s in inv.services for ref in s.ids}
        self.hosts = _Globs([(h, s.name) for s in inv.services for h in s.hosts], fold=True)
        self.principals = _Globs([(p, s.name) for s in inv.services for p in s.principals])
        self.cidrs = sorted(
            ((ipaddress.ip_network(c, strict=False), s.name) for s in inv.services for c in s.cidrs),
            key=lambda pair: -pair[0].prefixlen,
        )
        self.groups = {_tail(tg.id): tg for tg in inv.target_groups}
        self.networks = {_tail(n): e.name for e in inv.envs for n in e.service_networks}
        self.accounts = {a: e.name for e in inv.envs for a in e.accounts}

    # -- single values (called once per distinct value) ------------------------------------
    def callee_of(self, service_ref: str | None, host: str | None, cluster: str | None) -> str | None:
        """The called service from a service id/ARN, a host name or an Istio cluster."""
        if service_ref and _tail(service_ref) in self.ids:
            return self.ids[_tail(service_ref)]
        host = (host or "").split(":")[0].rstrip(".")
        cluster_host = self._cluster_host(cluster)
        for candidate in (host, cluster_host):
            if candidate and (name := self.hosts.match(candidate)):
                return name
        if host and (m := _LATTICE_HOST.match(host)):
            return m.group("name")
        if cluster_host:
            return cluster_host.split(".")[0]
        return None

    @staticmethod
    def _cluster_host(cluster: str | None) -> str | None:
        m = _ISTIO_CLUSTER.match(cluster or "")
        return m.group("host") if m else None

    def caller_of(self, principals: list[str]) -> str | None:
        """The calling service from its principals (inventory first, then the default names)."""
        for principal in principals:
            if name := self.principals.match(principal):
                return name
        for principal in principals:
            if m := _SPIFFE_SA.match(principal) or _ROLE.match(principal):
                return m.group("name")
        return None

    def caller_of_ip(self, ip: str) -> str | None:
        """The service whose inventory CIDR holds ``ip`` (longest prefix)."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        return next((name for net, name in self.cidrs if address in net), None)

    def env_of(self, service_network: str | None, account: str | None) -> str | None:
        """The environment of a service network or account."""
        if service_network and _tail(service_network) in self.networks:
            return self.networks[_tail(service_network)]
        return self.accounts.get(account or "")

    # -- frames -----------------------------------------------------------------------------
    def resolve(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Fill service, version, caller, caller_principal, env (hint columns are left in place)."""
        frame = _ensure(frame, ("service", "version", "caller", "caller_principal", "target_group",
                                "service_network", "account", "source_ip", "_host", "_service_ref",
                                "_upstream_cluster"))
        frame = self._resolve_callee(frame)
        frame = self._resolve_version(frame)
        frame = self._resolve_caller(frame)
        env = _map_unique(frame, [pl.col("service_network"), pl.col("account")], lambda k: self.env_of(*k))
        return frame.with_columns(env=pl.coalesce(env, pl.col("env")) if "env" in frame.columns else env)

    def _resolve_callee(self, frame: pl.DataFrame) -> pl.DataFrame:
        keys = [pl.col("_service_ref"), pl.col("_host"), pl.col("_upstream_cluster")]
        found = _map_unique(frame, keys, lambda k: self.callee_of(*k))
        return frame.with_columns(service=pl.coalesce(pl.col("service"), found))

    def _resolve_version(self, frame: pl.DataFrame) -> pl.DataFrame:
        def group_field(attr: str) -> Callable[[tuple[str | None, ...]], str | None]:
            return lambda k: getattr(self.groups.get(_tail(k[0] or "")), attr, None)

        tg = [pl.col("target_group")]
        none = pl.lit(None, dtype=pl.String)
        version = _map_unique(frame, tg, group_field("version")) if self.groups else none
        owner = _map_unique(frame, tg, group_field("service")) if self.groups else none
        subset = pl.col("_upstream_cluster").str.extract(r"^(?:outbound|inbound)\|\d*\|([^|]+)\|")
        fallback = pl.col("_service_ref").str.extract(r"([^/]+)$")
        return frame.with_columns(
            version=pl.coalesce(version, pl.col("version"), subset, pl.col("target_group")),
            service=pl.coalesce(pl.col("service"), owner, fallback, pl.lit(UNKNOWN)),
        )

    def _resolve_caller(self, frame: pl.DataFrame) -> pl.DataFrame:
        principal = pl.col("caller_principal").cast(pl.String)
        if "_principals" in frame.columns:
            candidates = pl.concat_list([principal, pl.col("_principals")]).list.drop_nulls()
            frame = frame.with_columns(_pkey=candidates.list.join(SEP), caller_principal=candidates.list.first())
        else:
            frame = frame.with_columns(_pkey=principal)
        key = pl.when(pl.col("_pkey") != "").then(pl.col("_pkey"))
        by_principal = _map_unique(frame, [key], lambda k: self.caller_of(k[0].split(SEP)) if k[0] else None)
        frame = frame.with_columns(caller=pl.coalesce(pl.col("caller"), by_principal)).drop("_pkey")
        if self.cidrs:
            ip = pl.when(pl.col("caller").is_null()).then(pl.col("source_ip"))
            by_ip = _map_unique(frame, [ip], lambda k: self.caller_of_ip(k[0]) if k[0] else None)
            frame = frame.with_columns(caller=pl.coalesce(pl.col("caller"), by_ip))
        return frame.with_columns(caller=pl.col("caller").fill_null(UNKNOWN))


def _ensure(frame: pl.DataFrame, names: tuple[str, ...]) -> pl.DataFrame:
    missing = [pl.lit(None, dtype=pl.String).alias(n) for n in names if n not in frame.columns]
    return frame.with_columns(missing) if missing else frame


def _map_unique(frame: pl.DataFrame, keys: list[pl.Expr], fn: Callable[[tuple], str | None]) -> pl.Series:
    """An expression holding ``fn`` of each row's key tuple, computed once per distinct key."""
    names = [f"_k{i}" for i in range(len(keys))]
    distinct = frame.select([k.cast(pl.String).alias(n) for k, n in zip(keys, names)]).unique()
    values = [fn(row) for row in distinct.iter_rows()]
    table = distinct.with_columns(_v=pl.Series(values, dtype=pl.String))
    joined = frame.select([k.cast(pl.String).alias(n) for k, n in zip(keys, names)]).join(
        table, on=names, how="left", nulls_equal=True, maintain_order="left")
    return joined.get_column("_v")


@lru_cache(maxsize=64)
def default_resolver() -> Resolver:
    """The resolver without inventory (defaults only)."""
    return Resolver()
