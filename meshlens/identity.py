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
        """The name of the first pattern matching ``value``, exact ones first."""
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
        self._hints = DistinctMap(list(HINTS), self._compute_hints)
        self._ips = DistinctMap(["_ip"], self._compute_ips)

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

    def resolve_row(self, key: tuple[str | None, ...]) -> tuple[str | None, ...]:
        """(service, version, caller, caller_principal, env) of one distinct tuple of hints."""
        service, version, caller, principal, principals, ref, host, cluster, tg, network, account = key
        candidates = [p for p in ([principal] + (principals or "").split(SEP)) if p]
        group = self.groups.get(_tail(tg or ""))
        subset = m.group("subset") if (m := _ISTIO_CLUSTER.match(cluster or "")) else None
        service = (service or self.callee_of(ref, host, cluster) or (group.service if group else None)
                   or (_tail(ref) if ref else None) or UNKNOWN)
        version = (group.version if group else None) or version or subset or tg
        caller = caller or self.caller_of(candidates)
        return service, version, caller, candidates[0] if candidates else None, self.env_of(network, account)

    def resolve(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Fill service, version, caller, caller_principal, env (hint columns are left in place)."""
        frame = _ensure(frame, HINTS)
        if frame.schema["_principals"] == pl.List(pl.String):
            frame = frame.with_columns(_principals=pl.col("_principals").list.join(SEP))
        frame = frame.with_columns(self._hints.apply(frame))
        if self.cidrs and "source_ip" in frame.columns:
            ip = pl.when(pl.col("caller").is_null()).then(pl.col("source_ip")).alias("_ip")
            by_ip = self._ips.apply(frame.select(ip)).get_column("_caller")
            frame = frame.with_columns(caller=pl.coalesce(pl.col("caller"), by_ip))
        return frame.with_columns(caller=pl.col("caller").fill_null(UNKNOWN))

    def _compute_hints(self, small: pl.DataFrame) -> pl.DataFrame:
        rows = [self.resolve_row(key) for key in small.iter_rows()]
        return pl.DataFrame(rows, schema=dict.fromkeys(RESOLVED, pl.String), orient="row")

    def _compute_ips(self, small: pl.DataFrame) -> pl.DataFrame:
        names = [self.caller_of_ip(v) if v else None for v in small.get_column("_ip").to_list()]
        return pl.DataFrame({"_caller": pl.Series(names, dtype=pl.String)})


HINTS = ("service", "version", "caller", "caller_principal", "_principals", "_service_ref", "_host",
         "_upstream_cluster", "target_group", "service_network", "account")
"""The columns identity reads, in the order ``resolve_row`` unpacks them."""
RESOLVED = ("service", "version", "caller", "caller_principal", "env")


def _ensure(frame: pl.DataFrame, names: tuple[str, ...]) -> pl.DataFrame:
    missing = [pl.lit(None, dtype=pl.String).alias(n) for n in names if n not in frame.columns]
    frame = frame.with_columns(missing) if missing else frame
    wrong = [pl.col(n).cast(pl.String) for n in names if frame.schema[n] not in (pl.String, pl.List(pl.String))]
    return frame.with_columns(wrong) if wrong else frame


class DistinctMap:
    """``compute`` run once per distinct tuple of ``inputs`` (remembered across frames), joined back.

    Rows are matched by a 64-bit hash of the tuple: a collision among the distinct tuples seen
    (thousands: hosts x principals x target groups) has a probability near 1e-12. The memory is
    bounded: past ``max_rows`` remembered tuples it starts again.
    """

    def __init__(self, inputs: list[str], compute: Callable[[pl.DataFrame], pl.DataFrame], *,
                 max_rows: int = 200_000) -> None:
        self.inputs, self.compute, self.max_rows = inputs, compute, max_rows
        self.table: pl.DataFrame | None = None

    def apply(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The computed columns, one row per row of ``frame``."""
        keyed = frame.select(self.inputs).with_columns(_h=pl.struct(self.inputs).hash(seed=7))
        small = keyed.unique(subset=["_h"], keep="any")
        if self.table is not None and self.table.height + small.height > self.max_rows:
            self.table = None
        if self.table is not None:
            small = small.filter(~pl.col("_h").is_in(self.table.get_column("_h").implode()))
        if small.height or self.table is None:
            derived = self.compute(small.select(self.inputs)).with_columns(small.get_column("_h"))
            self.table = derived if self.table is None else pl.concat([self.table, derived], rechunk=True)
        return keyed.select("_h").join(self.table, on="_h", how="left", maintain_order="left").drop("_h")


def on_distinct(frame: pl.DataFrame, inputs: list[str],
                compute: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
    """``compute`` run once per distinct tuple of ``inputs`` of ``frame``, joined back to every row."""
    return DistinctMap(inputs, compute).apply(frame)
