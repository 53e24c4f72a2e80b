"""The SQL store's operations on one synchronous `Connection`, shared by both twins.

The sync twin calls them on an `Engine` connection; the async twin runs the very same functions
through ``AsyncConnection.run_sync``, where SQLAlchemy drives the asyncio driver underneath. Each
function owns its transaction(s), so a connection goes back to the pool with nothing open.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any, NoReturn

from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError, IntegrityError

from agents_persistence._core import WriteRequest, as_utc
from agents_persistence.errors import ConflictError
from agents_persistence.telemetry import note_retry

from ._sql_engine import driver_code
from ._sql_statements import (
    PURGE_BATCH,
    Compiled,
    Statements,
    record_from_row,
    record_from_values,
    write_params,
    written_record,
)

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Connection, Insert, Update

    from agents_persistence._core import Record

__all__ = ["page", "purge", "read", "remove", "schema_problem", "upgrade_schema", "write"]

_LOCK_ATTEMPTS = 20
# MySQL/MariaDB: a deadlock (rare at READ COMMITTED: several first inserts of one thread whose
# leader rolled back), and MariaDB's "record has changed since last read" under snapshot
# isolation. Both mean "another writer got in the way": the retry starts afresh.
_RETRY_CODES = frozenset({1213, 1020})
_DUPLICATE_KEY = 1062
# Drivers whose cursors the direct path has been verified with (SQLAlchemy's adapted cursors
# for the asyncio ones, which `AsyncConnection.run_sync` drives like sync cursors).
_DIRECT_DRIVERS = frozenset({"pysqlite", "aiosqlite", "psycopg", "pymysql", "aiomysql"})
_DUPLICATE = re.compile(r"duplicate|unique", re.IGNORECASE)


def write(conn: Connection, stmts: Statements, namespace: str, request: WriteRequest) -> Record:
    """Store one version atomically; `ConflictError` (nothing written) on a version mismatch."""
    params = write_params(namespace, request)
    if stmts.strategy == "upsert":
        statement = stmts.write(request)
        if _direct(conn):
            return _write_direct(conn, stmts, statement, params, request)
        with conn.begin():
            row = conn.execute(statement, params).first()
            if row is None:
                actual = conn.execute(stmts.live_version, params).scalar()
                raise ConflictError(request.thread_id, params["expected"], actual)
        return written_record(request, row.version, row.created_at)
    # The direct path needs the engine's own transactions at READ COMMITTED (engines the store
    # creates): with an injected engine's level unknown, SQLAlchemy runs the transaction.
    locked = (
        _write_locked_direct if stmts.lock_isolation is None and _direct(conn) else _write_locked
    )
    for attempt in range(1, _LOCK_ATTEMPTS + 1):
        try:
            return locked(conn, stmts, params, request)
        except DBAPIError as exc:
            if attempt == _LOCK_ATTEMPTS or not _retryable(exc):
                raise
            note_retry(
                "sql", f"write contention (code {driver_code(exc)})", attempt, request.thread_id
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _direct(conn: Connection) -> bool:
    """Whether hot statements may run straight on the DBAPI cursor of ``conn``.

    Only for verified drivers, and when neither the connection, the application's engine nor
    the dialect has an event listener (``before_cursor_execute`` for tracing, ``handle_error``,
    say): those fire in SQLAlchemy's execution layer, which the direct path skips. The store's
    own option engine (PostgreSQL's autocommit runner) listens to ``engine_connect`` only.
    """
    engine = conn.engine
    base = getattr(engine, "_proxied", engine)
    return conn.dialect.driver in _DIRECT_DRIVERS and not (
        conn._has_events or base._has_events or conn.dialect._has_events
    )


def _fetch(conn: Connection, compiled: Compiled, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run ``compiled`` on the DBAPI cursor of ``conn``; the rows, result processors applied.

    DBAPI errors become SQLAlchemy's `DBAPIError` (invalidating the connection on a
    disconnect), exactly what the execution layer raises, for the store's error boundary.
    """
    dbapi_connection = conn.connection
    values = compiled.parameters(params)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(compiled.sql, values)
        rows = cursor.fetchall() if cursor.description is not None else []
    except conn.dialect.loaded_dbapi.Error as exc:
        _raise_dbapi(conn, exc, compiled.sql, values, cursor)
    finally:
        cursor.close()
    return compiled.process(rows)


def _raise_dbapi(conn: Connection, exc: Exception, sql: str, values: Any, cursor: Any) -> NoReturn:
    dialect = conn.dialect
    disconnect = bool(dialect.is_disconnect(exc, conn.connection, cursor))  # type: ignore[arg-type]
    if disconnect:
        conn.invalidate(exc)
    raise DBAPIError.instance(
        sql,
        values,
        exc,
        dialect.loaded_dbapi.Error,
        connection_invalidated=disconnect,
        dialect=dialect,
    ) from exc


def _write_direct(
    conn: Connection,
    stmts: Statements,
    statement: Insert | Update,
    params: dict[str, Any],
    request: WriteRequest,
) -> Record:
    """The ``upsert`` write as one statement on the DBAPI cursor, committed unless autocommit."""
    # Nothing to roll back on a conflict or an error: no transaction of the `Connection` is
    # open, so the pool rolls the DBAPI connection back when it is returned.
    rows = _fetch(conn, stmts.compiled(statement, statement, conn.dialect), params)
    if not rows:
        live = _fetch(
            conn, stmts.compiled("live_version", stmts.live_version, conn.dialect), params
        )
        raise ConflictError(request.thread_id, params["expected"], live[0][0] if live else None)
    if not stmts.autocommit:
        dbapi_connection = conn.connection
        try:
            dbapi_connection.commit()
        except conn.dialect.loaded_dbapi.Error as exc:
            _raise_dbapi(conn, exc, "COMMIT", (), None)
    version, created_at = rows[0]
    return written_record(request, version, created_at)


def _write_locked(
    conn: Connection, stmts: Statements, params: dict[str, Any], request: WriteRequest
) -> Record:
    with conn.begin():
        if stmts.lock_isolation is not None:
            conn.exec_driver_sql(stmts.lock_isolation)
        row = conn.execute(stmts.lock_row, params).first()
        values = _locked_values(request, params, None if row is None else tuple(row))
        conn.execute(stmts.insert_row if row is None else stmts.update_row, values)
    return written_record(request, values["new_version"], values["new_created_at"])


def _locked_values(
    request: WriteRequest, params: dict[str, Any], row: tuple[Any, ...] | None
) -> dict[str, Any]:
    """The insert or update values of a locking save, given the locked row (or ``None``).

    ``row`` is ``(version, created_at, expires_at)`` as `Statements.lock_row` selects them.
    Raises `ConflictError` when ``expected_version`` does not match the live version.
    """
    version, created, expires = (None, None, None) if row is None else row[:3]
    live = row is not None and not request.is_expired(None if expires is None else as_utc(expires))
    actual = version if live else None
    request.check(actual)
    created_at = request.created_at or (as_utc(created) if live else request.now)
    return {**params, "new_version": request.next_version(actual), "new_created_at": created_at}


def _write_locked_direct(
    conn: Connection, stmts: Statements, params: dict[str, Any], request: WriteRequest
) -> Record:
    """`_write_locked` on the DBAPI cursor: the driver's implicit transaction, then COMMIT."""
    dialect = conn.dialect
    dbapi_connection = conn.connection
    try:
        rows = _fetch(conn, stmts.compiled("lock_row", stmts.lock_row, dialect), params)
        row = rows[0] if rows else None
        values = _locked_values(request, params, row)
        if row is None:
            _fetch(conn, stmts.compiled("insert_row", stmts.insert_row, dialect), values)
        else:
            _fetch(conn, stmts.compiled("update_row", stmts.update_row, dialect), values)
        try:
            dbapi_connection.commit()
        except dialect.loaded_dbapi.Error as exc:
            _raise_dbapi(conn, exc, "COMMIT", (), None)
    except BaseException:
        # Release the row lock before a retry or a conflict is reported, as `conn.begin()`
        # does; a failing rollback leaves the reset to the pool.
        if not conn.invalidated:
            with contextlib.suppress(dialect.loaded_dbapi.Error):
                dbapi_connection.rollback()
        raise
    return written_record(request, values["new_version"], values["new_created_at"])


def _retryable(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        # Only a duplicate key: a concurrent first insert of the same thread won.
        return driver_code(exc) == _DUPLICATE_KEY or bool(_DUPLICATE.search(str(exc.orig)))
    return driver_code(exc) in _RETRY_CODES


def read(
    conn: Connection, stmts: Statements, namespace: str, thread_id: str, now: datetime
) -> Record | None:
    """The live record with its payload, or ``None``."""
    params = {"ns": namespace, "tid": thread_id, "now": now}
    if _direct(conn):
        # One statement, no explicit transaction: nothing to BEGIN or COMMIT around it.
        rows = _fetch(conn, stmts.compiled("read", stmts.read, conn.dialect), params)
        return None if not rows else record_from_values(thread_id, rows[0], payload=True)
    with conn.begin():
        row = conn.execute(stmts.read, params).first()
    return None if row is None else record_from_row(row, payload=True)


def remove(
    conn: Connection, stmts: Statements, namespace: str, thread_id: str, now: datetime
) -> bool:
    """Delete the thread; ``True`` only if it was live (an expired leftover goes too)."""
    params = {"ns": namespace, "tid": thread_id, "now": now}
    with conn.begin():
        if conn.execute(stmts.remove_live, params).rowcount:
            return True
        conn.execute(stmts.remove_any, params)
    return False


def page(
    conn: Connection,
    stmts: Statements,
    namespace: str,
    count: int,
    after: tuple[datetime, str] | None,
    now: datetime,
) -> list[Record]:
    """Up to ``count`` live records without payload, newest first, strictly after ``after``."""
    params: dict[str, Any] = {"ns": namespace, "now": now, "count": count}
    statement = stmts.page_first
    if after is not None:
        statement = stmts.page_after
        params["after_at"] = after[0]
        params["after_tid"] = after[1]
    with conn.begin():
        rows = conn.execute(statement, params).all()
    return [record_from_row(row, payload=False) for row in rows]


def purge(conn: Connection, stmts: Statements, namespace: str, now: datetime) -> int:
    """Delete the namespace's expired rows in batches (one short transaction each)."""
    params = {"ns": namespace, "now": now}
    total = 0
    while True:
        with conn.begin():
            deleted = conn.execute(stmts.purge, params).rowcount
        total += deleted
        if deleted < PURGE_BATCH:
            return total


def schema_problem(conn: Connection, table_name: str, schema: str | None) -> str | None:
    """What keeps the table from being used (missing, or not at the head revision), or ``None``."""
    # Imported on first use: Alembic is only needed once per checkpointer.
    from agents_persistence import migrations

    qualified = table_name if schema is None else f"{schema}.{table_name}"
    try:
        if not inspect(conn).has_table(table_name, schema=schema):
            return f"table {qualified!r} does not exist"
        current = migrations.current_revision(conn, table_name=table_name, schema=schema)
    finally:
        conn.rollback()
    head = migrations.head_revision()
    if current is None:
        return f"table {qualified!r} exists but its migrations were never recorded"
    if current != head:
        return f"table {qualified!r} is at revision {current}; this library needs {head}"
    return None


def upgrade_schema(conn: Connection, table_name: str, schema: str | None) -> None:
    """Run the library's migrations up to head on ``conn`` (the ``auto_migrate`` opt-in)."""
    from agents_persistence import migrations

    migrations.upgrade_connection(conn, table_name=table_name, schema=schema)
    if conn.in_transaction():
        conn.commit()
