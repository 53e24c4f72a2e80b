"""The SQL store's operations on one synchronous `Connection`, shared by both twins.

The sync twin calls them on an `Engine` connection; the async twin runs the very same functions
through ``AsyncConnection.run_sync``, where SQLAlchemy drives the asyncio driver underneath.
Every statement goes through SQLAlchemy's `Connection` (``exec_driver_sql`` for the hot ones,
compiled once per dialect; ``execute`` for the rest), so the application's event listeners see
each of them. On the store's own connection (``owned``) each function runs its own
transaction(s) and returns the connection with nothing open; on the caller's connection (a unit
of work) it joins the caller's transaction and never commits or rolls it back.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError, IntegrityError

from agents_persistence._core import WriteRequest, as_utc
from agents_persistence.errors import ConflictError
from agents_persistence.telemetry import note_retry

from ._sql_deadline import expired
from ._sql_engine import driver_code
from ._sql_statements import (
    PURGE_BATCH,
    Statements,
    record_from_row,
    record_from_values,
    write_params,
    written_record,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from sqlalchemy import Connection, Insert, Select, Update

    from agents_persistence._core import Record

__all__ = ["page", "purge", "read", "remove", "schema_problem", "upgrade_schema", "write"]

_LOCK_ATTEMPTS = 20
# MySQL/MariaDB: a deadlock (rare at READ COMMITTED: several first inserts of one thread whose
# leader rolled back), and MariaDB's "record has changed since last read" under snapshot
# isolation. Both mean "another writer got in the way": the retry starts afresh.
_RETRY_CODES = frozenset({1213, 1020})
_DUPLICATE_KEY = 1062
_DUPLICATE = re.compile(r"duplicate|unique", re.IGNORECASE)


def write(
    conn: Connection, stmts: Statements, namespace: str, owned: bool, request: WriteRequest
) -> Record:
    """Store one version atomically; `ConflictError` (nothing written) on a version mismatch.

    ``owned``: the connection is the store's own, each write commits its transaction; else it
    is the caller's, which the write joins and never commits.
    """
    params = write_params(namespace, request)
    if stmts.strategy == "upsert":
        statement = stmts.write(request)
        with _transaction(conn, owned):
            rows = _rows(conn, stmts, statement, statement, params)
            if not rows:
                live = _rows(conn, stmts, "live_version", stmts.live_version, params)
                raise ConflictError(
                    request.thread_id, params["expected"], live[0][0] if live else None
                )
        version, created_at = rows[0]
        return written_record(request, version, created_at)
    one_statement = _upsert_any(conn, stmts, request)
    for attempt in range(1, _LOCK_ATTEMPTS + 1):
        try:
            if one_statement is not None:
                return _write_upsert_any(conn, stmts, one_statement, params, request, owned)
            return _write_locked(conn, stmts, params, request, owned)
        except DBAPIError as exc:
            if attempt == _LOCK_ATTEMPTS or not _retryable(exc, owned) or expired():
                raise
            note_retry(
                "sql", f"write contention (code {driver_code(exc)})", attempt, request.thread_id
            )
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def _transaction(conn: Connection, owned: bool) -> Iterator[None]:
    """The store's own transaction on its connection; nothing on the caller's (it joins it)."""
    if not owned:
        yield
        return
    with conn.begin():
        yield


def _rows(
    conn: Connection,
    stmts: Statements,
    key: object,
    statement: Select[Any] | Insert | Update,
    params: dict[str, Any],
) -> list[tuple[Any, ...]]:
    """Run a hot statement (compiled once per dialect) through ``exec_driver_sql``.

    The public execution path: the engine's and connection's event listeners see the
    statement, and driver errors come back as SQLAlchemy's `DBAPIError`, with the connection
    (or the pool, on a disconnect) invalidated as SQLAlchemy decides.
    """
    compiled = stmts.compiled(key, statement, conn.dialect)
    result = conn.exec_driver_sql(compiled.sql, compiled.parameters(params))
    if not result.returns_rows:
        return []
    return compiled.process(result.fetchall())


def _upsert_any(conn: Connection, stmts: Statements, request: WriteRequest) -> Insert | None:
    """`Statements.upsert_any` when it can perform ``request`` on ``conn``'s server, else None.

    Only for an unconditional save that restores nothing: with no version to check, the one
    statement's outcome is exact. Needs ``INSERT ... RETURNING`` (MariaDB 10.5+; not MySQL).
    """
    if (
        stmts.upsert_any is None
        or request.expected_version is not None
        or request.version is not None
        or request.created_at is not None
        or not conn.dialect.insert_returning
    ):
        return None
    return stmts.upsert_any


def _write_upsert_any(
    conn: Connection,
    stmts: Statements,
    statement: Insert,
    params: dict[str, Any],
    request: WriteRequest,
    owned: bool,
) -> Record:
    with _transaction(conn, owned):
        if owned and stmts.lock_isolation is not None:
            # As for the locking save: no gap locks between first saves of new threads.
            conn.exec_driver_sql(stmts.lock_isolation)
        rows = _rows(conn, stmts, "upsert_any", statement, params)
    version, created_at = rows[0]
    return written_record(request, version, created_at)


def _write_locked(
    conn: Connection,
    stmts: Statements,
    params: dict[str, Any],
    request: WriteRequest,
    owned: bool,
) -> Record:
    with _transaction(conn, owned):
        if owned and stmts.lock_isolation is not None:
            # Only at the start of the store's own transaction: in the caller's transaction
            # the isolation level is the caller's (MySQL refuses to change it midway).
            conn.exec_driver_sql(stmts.lock_isolation)
        rows = _rows(conn, stmts, "lock_row", stmts.lock_row, params)
        values = _locked_values(request, params, rows[0] if rows else None)
        if rows:
            _rows(conn, stmts, "update_row", stmts.update_row, values)
        else:
            _rows(conn, stmts, "insert_row", stmts.insert_row, values)
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


def _retryable(exc: DBAPIError, owned: bool) -> bool:
    if isinstance(exc, IntegrityError):
        # Only a duplicate key: a concurrent first insert of the same thread won. MySQL rolls
        # back the failed statement only, so the caller's transaction can retry it too.
        return driver_code(exc) == _DUPLICATE_KEY or bool(_DUPLICATE.search(str(exc.orig)))
    # A deadlock rolls back the whole transaction: only the store's own can start afresh.
    return owned and driver_code(exc) in _RETRY_CODES


def read(
    conn: Connection,
    stmts: Statements,
    namespace: str,
    owned: bool,
    thread_id: str,
    now: datetime,
) -> Record | None:
    """The live record with its payload, or ``None``."""
    # One statement, no explicit transaction: nothing to BEGIN or COMMIT around it.
    params = {"ns": namespace, "tid": thread_id, "now": now}
    rows = _rows(conn, stmts, "read", stmts.read, params)
    return None if not rows else record_from_values(thread_id, rows[0], payload=True)


def remove(
    conn: Connection,
    stmts: Statements,
    namespace: str,
    owned: bool,
    thread_id: str,
    now: datetime,
) -> bool:
    """Delete the thread; ``True`` only if it was live (an expired leftover goes too)."""
    params = {"ns": namespace, "tid": thread_id, "now": now}
    with _transaction(conn, owned):
        if conn.execute(stmts.remove_live, params).rowcount:
            return True
        conn.execute(stmts.remove_expired, params)
    return False


def page(
    conn: Connection,
    stmts: Statements,
    namespace: str,
    owned: bool,
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
    with _transaction(conn, owned):
        rows = conn.execute(statement, params).all()
    return [record_from_row(row, payload=False) for row in rows]


def purge(conn: Connection, stmts: Statements, namespace: str, owned: bool, now: datetime) -> int:
    """Delete the namespace's expired rows in batches (one short transaction each when owned)."""
    params = {"ns": namespace, "now": now}
    total = 0
    while True:
        with _transaction(conn, owned):
            deleted = conn.execute(stmts.purge, params).rowcount
        total += deleted
        if deleted < PURGE_BATCH:
            return total


def schema_problem(
    conn: Connection, table_name: str, schema: str | None, *, owned: bool = True
) -> str | None:
    """What keeps the table from being used (missing, or not at the head revision), or ``None``.

    Reads only. On the store's own connection (``owned``) it then ends the transaction its
    reads began; in the caller's transaction it leaves that transaction as it was.
    """
    # Imported on first use: Alembic is only needed once per checkpointer.
    from agents_persistence import migrations

    qualified = table_name if schema is None else f"{schema}.{table_name}"
    try:
        if not inspect(conn).has_table(table_name, schema=schema):
            return f"table {qualified!r} does not exist"
        current = migrations.current_revision(conn, table_name=table_name, schema=schema)
    finally:
        if owned:
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
