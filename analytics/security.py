"""The security view: denied requests, unauthenticated calls, TLS versions, policy violations.

Every function reads analytics.rollup_identity's source: the ``identity_1m``/``identity_1h``
rollups (who called what, with principal, TLS and auth outcome) when they cover the window,
else raw ``requests`` rows; each query is written once over that source, so both give the same
answer. All return polars frames, busiest first.
- denied: 403 answers that carry an auth denied reason (the network refused the caller);
- unauthenticated: calls with no caller principal and no client certificate;
- tls_versions: requests per TLS version ('none' for plain text);
- policy_violations: calls that break the allowed-caller policy (analytics.policy), per
  (service, env, caller) with counts and first/last time. Denied requests are not violations;
- principals: which principals (and caller services) called a service, with counts.
"""

from __future__ import annotations

import duckdb
import polars as pl

from analytics.policy import Policy, allowed
from analytics.rollup_identity import UNAUTHENTICATED_SQL, source_sql
from meshlens.timewin import Window

_SEEN = "sum(requests)::BIGINT AS requests, min(first_seen) AS first_seen, max(last_seen) AS last_seen"


def _filters(service: str | None, env: str | None) -> dict[str, str]:
    return {k: v for k, v in (("service", service), ("env", env)) if v is not None}


def _query(conn: duckdb.DuckDBPyConnection, select: str, *, window: Window, filters: dict[str, str],
           raw: bool, params: list[object] | None = None) -> pl.DataFrame:
    """``select`` (which reads ``src``) over the window's identity source."""
    src = source_sql(conn, window=window, filters=filters, raw=raw)
    return conn.sql(f"WITH src AS ({src.sql}) {select}", params=[*src.params, *(params or [])]).pl()


def denied(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str | None = None,
           env: str | None = None, raw: bool = False) -> pl.DataFrame:
    """403s with an auth denied reason, per (service, env, caller, principal, reason)."""
    return _query(conn, f"""
        SELECT service, env, caller, coalesce(caller_principal, '') AS caller_principal,
               auth_denied_reason, coalesce(failure_reason, '') AS failure_reason, {_SEEN}
        FROM src WHERE denied
        GROUP BY ALL ORDER BY requests DESC, service, caller, caller_principal, env, auth_denied_reason,
                              failure_reason""", window=window, filters=_filters(service, env), raw=raw)


def unauthenticated(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str | None = None,
                    env: str | None = None, raw: bool = False) -> pl.DataFrame:
    """Calls with no principal and no client certificate, per (service, env, caller)."""
    return _query(conn, f"""
        SELECT service, env, caller, sum(requests)::BIGINT AS requests,
               count(DISTINCT source_ip) AS source_ips, min(first_seen) AS first_seen,
               max(last_seen) AS last_seen
        FROM src WHERE {UNAUTHENTICATED_SQL}
        GROUP BY ALL ORDER BY requests DESC, service, caller, env""",
                  window=window, filters=_filters(service, env), raw=raw)


def tls_versions(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str | None = None,
                 env: str | None = None, raw: bool = False) -> pl.DataFrame:
    """Requests, services and callers per TLS version ('none' for plain text)."""
    return _query(conn, """
        SELECT coalesce(nullif(tls_version, ''), 'none') AS tls_version, sum(requests)::BIGINT AS requests,
               count(DISTINCT service) AS services, count(DISTINCT caller) AS callers
        FROM src GROUP BY ALL ORDER BY requests DESC, tls_version""",
                  window=window, filters=_filters(service, env), raw=raw)


def principals(conn: duckdb.DuckDBPyConnection, service: str | None = None, *, window: Window,
               env: str | None = None, raw: bool = False) -> pl.DataFrame:
    """Which principals called ``service`` (every service when None): per (principal, caller)."""
    return _query(conn, f"""
        SELECT caller_principal, caller, {_SEEN}, sum(errors_5xx)::BIGINT AS errors_5xx,
               sum(requests) FILTER (WHERE denied)::BIGINT AS denied
        FROM src GROUP BY ALL ORDER BY requests DESC, caller_principal, caller""",
                  window=window, filters=_filters(service, env), raw=raw)


def policy_violations(conn: duckdb.DuckDBPyConnection, policy: Policy, *, window: Window,
                      raw: bool = False) -> pl.DataFrame:
    """Every (service, env, caller) that broke the policy, with counts and first/last time."""
    rules = sorted(allowed(policy).items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
    if not rules:
        return _empty_violations()
    values = ", ".join("(?, ?, ?::VARCHAR[])" for _ in rules)
    params: list[object] = [v for (service, env), callers in rules for v in (service, env, sorted(callers))]
    frame = _query(conn, f"""
        SELECT s.service, s.env, coalesce(s.caller, 'unknown') AS caller,
               array_to_string(r.callers, ', ') AS allowed_callers, {_SEEN}
        FROM src s JOIN (VALUES {values}) r(service, env, callers)
          ON s.service = r.service AND (r.env IS NULL OR s.env = r.env)
        WHERE NOT s.denied AND NOT list_contains(r.callers, coalesce(s.caller, 'unknown'))
        GROUP BY ALL ORDER BY requests DESC, service, caller, env, allowed_callers""",
                   window=window, filters={}, raw=raw, params=params)
    return frame if frame.height else _empty_violations()


def _empty_violations() -> pl.DataFrame:
    return pl.DataFrame(schema={
        "service": pl.String, "env": pl.String, "caller": pl.String, "allowed_callers": pl.String,
        "requests": pl.Int64, "first_seen": pl.Datetime("us", "UTC"), "last_seen": pl.Datetime("us", "UTC"),
    })
