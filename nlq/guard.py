"""The one SQL guard: every query from `ask` (both backends), `meshlens sql` and the dashboard.

Three defences, as in datasette:

1. ``check`` parses the text with sqlglot (DuckDB dialect) and lets through exactly one
   read-only SELECT (``WITH ... SELECT`` and UNION / INTERSECT / EXCEPT of selects included)
   whose tables are the allowed lake views or its own CTEs. It refuses DDL, DML, PRAGMA, SET,
   ATTACH, COPY, INSTALL, LOAD, CALL, ``SELECT ... INTO``, file and network table functions
   (read_parquet, read_csv, glob, query, ...), replacement scans (``FROM 'file.csv'``) and
   any table function but ``range``/``generate_series``/``unnest``. It adds a LIMIT, or lowers
   one above the row limit. DuckDB's own parser then confirms one SELECT statement.
2. ``run_guarded`` runs on a hardened connection (``harden``): external access disabled except
   for the lake folders the views already read (``allowed_directories``), configuration
   locked, so a query can neither read other files, reach the network, nor undo the settings.
3. A time limit: a timer thread interrupts the connection after ``query_timeout_seconds``.

DuckDB views over ``read_parquet`` stop working once ``enable_external_access = false``
unless their folders are listed in ``allowed_directories`` first; ``harden`` lists the lake
root found in the view definitions, so the views keep working and nothing else is readable.
Text inside the logs is only ever data bound into a SELECT: nothing can make a query write.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from meshlens.errors import QueryRejected

BASE_VIEWS = frozenset({"requests", "spans", "edges", "services"})
ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
BLOCKED_FUNCTION_PREFIXES = ("read_", "parquet_", "sniff_", "duckdb_", "pragma_")
BLOCKED_FUNCTIONS = frozenset({
    "glob", "query", "query_table", "getenv", "load", "install", "icu_calendar_names",
    "read_parquet", "read_csv", "read_csv_auto", "read_json", "read_json_auto", "read_ndjson",
    "read_text", "read_blob", "parquet_scan", "delta_scan", "iceberg_scan", "sqlite_scan",
    "postgres_scan", "mysql_scan", "httpfs", "http_get", "current_setting", "which_secret",
    "json_execute_serialized_sql", "checkpoint", "force_checkpoint", "export_database",
})
FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, name) for name in (
        "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "AlterColumn",
        "Command", "Pragma", "Set", "SetItem", "Copy", "Attach", "Detach", "Install", "Use",
        "Transaction", "Commit", "Rollback", "Into", "LoadData", "Describe", "Show", "Cache",
        "Uncache", "Refresh", "Grant", "Revoke", "Summarize", "Analyze", "TruncateTable",
        "Comment", "Export",
    ) if hasattr(exp, name)
)
SET_OPERATIONS: tuple[type[exp.Expression], ...] = (exp.Union, exp.Intersect, exp.Except)

logging.getLogger("sqlglot").setLevel(logging.ERROR)


def allowed_views() -> set[str]:
    """The lake views a query may read: the base views plus every registered rollup."""
    from meshlens.catalog import ROLLUP_SCHEMAS

    return set(BASE_VIEWS) | set(ROLLUP_SCHEMAS)


def check(sql: str, *, allowed: Iterable[str], row_limit: int) -> str:
    """The statement to run: ``sql`` checked as one read-only SELECT, with a LIMIT."""
    tree = _parse_one(sql)
    _check_tree(tree, allowed={a.lower() for a in allowed})
    guarded = _with_limit(_strip(sql), tree, row_limit=row_limit)
    _check_tree(_parse_one(guarded), allowed={a.lower() for a in allowed})
    _confirm_with_duckdb(guarded)
    return guarded


def _parse_one(sql: str) -> exp.Expression:
    if not isinstance(sql, str) or not sql.strip():
        raise QueryRejected("empty query: write one SELECT statement")
    try:
        trees = [t for t in sqlglot.parse(sql, read="duckdb") if t is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise QueryRejected(f"cannot parse the query: {_first_line(str(exc))}") from None
    if len(trees) != 1:
        raise QueryRejected(f"expected exactly one statement, got {len(trees)}")
    return trees[0]  # type: ignore[return-value]


def _check_tree(tree: exp.Expression, *, allowed: set[str]) -> None:
    if not isinstance(tree, (exp.Select, *SET_OPERATIONS)):
        raise QueryRejected(f"only SELECT queries are allowed, not {_kind(tree)}")
    for node in tree.walk():
        if isinstance(node, FORBIDDEN_NODES):
            raise QueryRejected(f"only read-only SELECT is allowed; found {_kind(node)}")
        if isinstance(node, exp.Func):
            _check_function(node)
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        _check_table(table, allowed=allowed, ctes=ctes)


def _check_function(node: exp.Func) -> None:
    name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
    if name in BLOCKED_FUNCTIONS or name.startswith(BLOCKED_FUNCTION_PREFIXES):
        raise QueryRejected(f"function {name}() is not allowed: queries read the lake views only")


def _check_table(table: exp.Table, *, allowed: set[str], ctes: set[str]) -> None:
    source = table.this
    if isinstance(source, exp.Func):
        name = (source.name if isinstance(source, exp.Anonymous) else source.sql_name()).lower()
        if name not in ALLOWED_TABLE_FUNCTIONS:
            raise QueryRejected(f"table function {name}() is not allowed; read the views {_list(allowed)}")
        return
    if not isinstance(source, exp.Identifier):
        raise QueryRejected(f"unsupported table source {table.sql(dialect='duckdb')[:60]!r}")
    name = table.name.lower()
    qualifier = (table.db or "").lower(), (table.catalog or "").lower()
    if qualifier[0] in ("", "main") and qualifier[1] in ("", "memory") and (name in allowed or name in ctes):
        return
    raise QueryRejected(f"table {table.sql(dialect='duckdb')!r} is not allowed; read the views {_list(allowed)}")


def _with_limit(sql: str, tree: exp.Expression, *, row_limit: int) -> str:
    """Append a LIMIT, keep a smaller literal one, or wrap the query to lower a bigger one."""
    limit = tree.args.get("limit")
    if limit is None and not tree.args.get("offset"):
        return f"{sql}\nLIMIT {int(row_limit)}"
    value = _literal_limit(limit)
    if value is not None and value <= row_limit:
        return sql
    return f"SELECT * FROM (\n{sql}\n) AS guarded_query\nLIMIT {int(row_limit)}"


def _literal_limit(limit: exp.Expression | None) -> int | None:
    if isinstance(limit, exp.Limit) and isinstance(limit.expression, exp.Literal):
        text = limit.expression.this
        options = limit.args.get("limit_options")
        percent = bool(limit.args.get("percent") or (options and options.args.get("percent")))
        if limit.expression.is_int and not percent:
            return int(text)
    return None


def _confirm_with_duckdb(sql: str) -> None:
    """Second opinion from DuckDB's own parser: exactly one SELECT statement."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRejected(f"cannot parse the query: {_first_line(str(exc))}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise QueryRejected("only one read-only SELECT statement is allowed")


def _strip(sql: str) -> str:
    return re.sub(r"[\s;]+$", "", sql)


def _kind(node: exp.Expression) -> str:
    return type(node).__name__.upper()


def _list(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "syntax error"


# -- running ------------------------------------------------------------------------------

_PARQUET_PATH = re.compile(r"read_parquet\(\s*'([^']+)'", re.I)


def harden(conn: duckdb.DuckDBPyConnection) -> None:
    """Disable external access (except the lake folders the views read) and lock settings."""
    if _is_hardened(conn):
        return
    dirs = sorted(_lake_roots(conn))
    if dirs:
        literal = ", ".join("'" + d.replace("'", "''") + "'" for d in dirs)
        conn.execute(f"SET allowed_directories = [{literal}]")
    conn.execute("SET parquet_metadata_cache = true")  # before the lock: repeated questions read less
    conn.execute("SET enable_external_access = false")
    conn.execute("SET lock_configuration = true")


def _is_hardened(conn: duckdb.DuckDBPyConnection) -> bool:
    row = conn.execute("SELECT current_setting('lock_configuration')").fetchone()
    return bool(row and row[0])


def _lake_roots(conn: duckdb.DuckDBPyConnection) -> set[str]:
    """Lake roots behind the views: the folder above ``requests/`` or ``rollups/<name>/``."""
    roots = set()
    for (sql,) in conn.execute("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall():
        for path in _PARQUET_PATH.findall(sql or ""):
            folder = path.split("/date=")[0].rstrip("/")
            parent = folder.rsplit("/", 1)[0]
            if parent.endswith("/rollups"):
                parent = parent.rsplit("/", 1)[0]
            roots.add(parent.rstrip("/") + "/")
    return roots


def run_guarded(
    conn: duckdb.DuckDBPyConnection,
    sql: str,
    *,
    settings: Mapping[str, Any],
    allowed: Iterable[str] | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Check ``sql``, then run it on the hardened ``conn`` within the time limit."""
    guarded = check(sql, allowed=allowed or allowed_views(), row_limit=int(settings["query_row_limit"]))
    harden(conn)
    return _execute_with_timeout(conn, guarded, seconds=float(settings["query_timeout_seconds"]))


def _execute_with_timeout(
    conn: duckdb.DuckDBPyConnection, sql: str, *, seconds: float
) -> tuple[list[str], list[tuple[Any, ...]]]:
    timer = threading.Timer(seconds, conn.interrupt)
    timer.daemon = True
    timer.start()
    try:
        cursor = conn.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        return columns, cursor.fetchall()
    except duckdb.InterruptException:
        raise QueryRejected(f"query stopped after the time limit of {seconds:g} s; narrow the window or add filters") from None
    except duckdb.Error as exc:
        if not timer.is_alive() and "interrupt" in str(exc).lower():
            raise QueryRejected(f"query stopped after the time limit of {seconds:g} s") from None
        raise QueryRejected(f"query failed: {_first_line(str(exc))}") from None
    finally:
        timer.cancel()
