"""Service names: check that a name the user typed exists, else suggest look-alikes."""

from __future__ import annotations

import duckdb

from meshlens.errors import UnknownNameError


def known_services(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Every service name seen as a callee or caller in requests, or in spans."""
    rows = conn.execute(
        "SELECT DISTINCT service FROM requests WHERE service IS NOT NULL "
        "UNION SELECT DISTINCT caller FROM requests WHERE caller IS NOT NULL "
        "UNION SELECT DISTINCT service FROM spans WHERE service IS NOT NULL"
    ).fetchall()
    return sorted(r[0] for r in rows)


def resolve_service(conn: duckdb.DuckDBPyConnection, name: str) -> str:
    """The stored spelling of service ``name`` (exact, else case-insensitive); raises UnknownNameError."""
    for column, table in (("service", "requests"), ("caller", "requests"), ("service", "spans")):
        hit = conn.execute(f"SELECT 1 FROM {table} WHERE {column} = ? LIMIT 1", [name]).fetchall()
        if hit:
            return name
    known = known_services(conn)
    folded = [k for k in known if k.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise UnknownNameError("service", name, known)
