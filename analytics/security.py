"""The security view: denied requests, unauthenticated calls, TLS versions, policy violations.

All functions read raw ``requests`` rows in the window (these questions need the principal,
which no rollup keeps) and return polars frames, busiest first.
- denied: 403 answers that carry an auth denied reason (the network refused the caller);
- unauthenticated: calls with no caller principal and no client certificate;
- tls_versions: requests per TLS version ('none' for plain text);
- policy_violations: calls that break the allowed-caller policy (analytics.policy), per
  (service, env, caller) with counts and first/last time. Denied requests are not violations.
"""

from __future__ import annotations

import duckdb
import polars as pl

from analytics.policy import Policy, allowed
from analytics.red import where_sql
from meshlens.timewin import Window

_DENIED = "status = 403 AND coalesce(auth_denied_reason, '') <> ''"
_UNAUTH = "coalesce(caller_principal, '') = '' AND NOT coalesce(mtls, false)"


def _filters(service: str | None, env: str | None) -> dict[str, str]:
    return {k: v for k, v in (("service", service), ("env", env)) if v is not None}


def denied(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str | None = None,
           env: str | None = None) -> pl.DataFrame:
    """403s with an auth denied reason, per (service, env, caller, principal, reason)."""
    where, params = where_sql("ts", window=window, filters=_filters(service, env))
    return conn.sql(f"""
        SELECT service, env, caller, coalesce(caller_principal, '') AS caller_principal,
               auth_denied_reason, coalesce(failure_reason, '') AS failure_reason,
               count(*) AS requests, min(ts) AS first_seen, max(ts) AS last_seen
        FROM requests WHERE {where} AND {_DENIED}
        GROUP BY ALL ORDER BY requests DESC, service, caller""", params=params).pl()


def unauthenticated(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str | None = None,
                    env: str | None = None) -> pl.DataFrame:
    """Calls with no principal and no client certificate, per (service, env, caller)."""
    where, params = where_sql("ts", window=window, filters=_filters(service, env))
    return conn.sql(f"""
        SELECT service, env, caller, count(*) AS requests,
               count(DISTINCT source_ip) AS source_ips, min(ts) AS first_seen, max(ts) AS last_seen
        FROM requests WHERE {where} AND {_UNAUTH}
        GROUP BY ALL ORDER BY requests DESC, service, caller""", params=params).pl()


def tls_versions(conn: duckdb.DuckDBPyConnection, *, window: Window, service: str | None = None,
                 env: str | None = None) -> pl.DataFrame:
    """Requests, services and callers per TLS version ('none' for plain text)."""
    where, params = where_sql("ts", window=window, filters=_filters(service, env))
    return conn.sql(f"""
        SELECT coalesce(nullif(tls_version, ''), 'none') AS tls_version, count(*) AS requests,
               count(DISTINCT service) AS services, count(DISTINCT caller) AS callers
        FROM requests WHERE {where}
        GROUP BY ALL ORDER BY requests DESC""", params=params).pl()


def policy_violations(conn: duckdb.DuckDBPyConnection, policy: Policy, *, window: Window) -> pl.DataFrame:
    """Every (service, env, caller) that broke the policy, with counts and first/last time."""
    parts, params = [], []
    for (service, env), callers in sorted(allowed(policy).items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        where, where_params = where_sql("ts", window=window, filters=_filters(service, env))
        marks = ", ".join("?" for _ in callers) or "NULL"
        parts.append(f"""
            SELECT service, env, coalesce(caller, 'unknown') AS caller,
                   ? AS allowed_callers, count(*) AS requests,
                   min(ts) AS first_seen, max(ts) AS last_seen
            FROM requests WHERE {where} AND NOT ({_DENIED})
              AND coalesce(caller, 'unknown') NOT IN ({marks})
            GROUP BY ALL""")
        params += [", ".join(sorted(callers)), *where_params, *sorted(callers)]
    if not parts:
        return _empty_violations()
    sql = " UNION ALL ".join(parts) + " ORDER BY requests DESC, service, caller"
    return conn.sql(sql, params=params).pl()


def _empty_violations() -> pl.DataFrame:
    return pl.DataFrame(schema={
        "service": pl.String, "env": pl.String, "caller": pl.String, "allowed_callers": pl.String,
        "requests": pl.Int64, "first_seen": pl.Datetime("us", "UTC"), "last_seen": pl.Datetime("us", "UTC"),
    })

