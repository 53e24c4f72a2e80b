"""The SQL store's operations on one synchronous `Connection`, shared by both twins.

The sync twin calls them on an `Engine` connection; the async twin runs the very same functions
through ``AsyncConnection.run_sync``, where SQLAlchemy drives the asyncio driver underneath.
Every statement goes through SQLAlchemy's `Connection`: the hot ones compiled once per dialect
and run by `fetch` (on the DBAPI cursor when no listener, logging or asyncio driver needs
SQLAlchemy's execution layer, else ``exec_driver_sql``), the rest with ``execute``, so the
application's event listeners see each of them. On SQLite, `read` and `write` may instead run on
a `Lean` connection (a pooled DBAPI connection without a `Connection`, when nothing watches the
engine's connections: `_sql_run.lean`). On the store's own connection (``owned``) each
function runs its own transaction(s) and returns the connection with nothing open; on the
caller's connection (a unit of work) it joins the caller's transaction and never commits or
rolls it back.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, inspect
from sqlalchemy.exc import DBAPIError, IntegrityError

from agents_persistence._codec import Codec
from agents_persistence._core import DEFAULT_NAMESPACE, WriteRequest, as_utc
from agents_persistence.errors import ConflictError
from agents_persistence.telemetry import note_retry

from ._sql_deadline import expired
from ._sql_engine import driver_code
from ._sql_pieces import head_record, piece_body, read_record
from ._sql_run import Conn, Lean, fetch
from ._sql_statements import (
    PURGE_BATCH,
    Statement,
    Statements,
    delta_allowed,
    record_from_row,
    whole_params,
    write_kind,
    write_params,
    written_record,
)

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Insert

    from agents_persistence._codec import Sealer
    from agents_persistence._core import Record
    from agents_persistence._layout import Layout

__all__ = [
    "CLEAR",
    "page",
    "purge",
    "read",
    "remove",
    "schema_problem",
    "shared_whole",
    "upgrade_schema",
    "write",
]

_LOCK_ATTEMPTS = 20
# MySQL/MariaDB: a deadlock (rare at READ COMMITTED: several first inserts of one thread whose
# leader rolled back), and MariaDB's "record has changed since last read" under snapshot
# isolation. Both mean "another writer got in the way": the retry starts afresh.
_RETRY_CODES = frozenset({1213, 1020})
_DUPLICATE_KEY = 1062
_DUPLICATE = re.compile(r"duplicate|unique", re.IGNORECASE)
# aiomysql cannot send bytes with PyMySQL 1.2 (it calls a helper PyMySQL removed): the pieces'
# bodies go as hexadecimal text, which the server decodes with UNHEX().
_HEX_DRIVERS = frozenset({"aiomysql"})

CLEAR = Codec(DEFAULT_NAMESPACE, None)
"""The codec of a read without keys: values in clear are read, a sealed one fails closed."""


def write(
    conn: Conn,
    stmts: Statements,
    namespace: str,
    owned: bool,
    request: WriteRequest,
    codec: Codec | None = None,
) -> Record:
    """Store one version atomically; `ConflictError` (nothing written) on a version mismatch.

    ``owned``: the connection is the store's own, each write commits its transaction; else it
    is the caller's, which the write joins and never commits. With a ``codec`` that encrypts,
    the head and pieces are sealed under one data key for the save (its retries and its full
    write after a missed delta included).
    """
    sealer = None if codec is None or not codec.encrypts else codec.sealer()
    if stmts.strategy == "upsert":
        if owned and isinstance(conn, Lean) and _alone(stmts, request):
            # The delta is one statement: on its own, it is its own transaction.
            record = conn.alone(_write_delta, conn, owned, stmts, namespace, request, sealer)
            if record is not None:
                return record
            # The stored head no longer carries the base: the state is written whole.
            with conn.begin():
                full = request.layout.full()
                return _write_full(conn, owned, stmts, namespace, request, full, sealer)
        with _transaction(conn, owned):
            return _write_upsert(conn, owned, stmts, namespace, request, sealer)
    one_statement = _upsert_any(conn, stmts, request)
    for attempt in range(1, _LOCK_ATTEMPTS + 1):
        try:
            if one_statement is not None:
                return _write_upsert_any(
                    conn, stmts, one_statement, namespace, request, owned, sealer
                )
            return _write_locked(conn, stmts, namespace, request, owned, sealer)
        except DBAPIError as exc:
            if attempt == _LOCK_ATTEMPTS or not _retryable(exc, owned) or expired():
                raise
            note_retry(
                "sql", f"write contention (code {driver_code(exc)})", attempt, request.thread_id
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _transaction(conn: Conn, owned: bool) -> contextlib.AbstractContextManager[Any]:
    """The store's own transaction on its connection; nothing on the caller's (it joins it)."""
    return conn.begin() if owned else contextlib.nullcontext()


def _rows(
    conn: Conn,
    owned: bool,
    stmts: Statements,
    key: object,
    statement: Statement,
    params: dict[str, Any],
) -> list[tuple[Any, ...]]:
    """Run a hot statement (compiled once per dialect) with `fetch`; its processed rows.

    Event listeners see the statement (`fetch` takes SQLAlchemy's path whenever one is
    attached), and driver errors come back as SQLAlchemy's `DBAPIError`, with the connection
    invalidated on a disconnect.
    """
    compiled = stmts.compiled(key, statement, conn.dialect)
    return compiled.process(fetch(conn, owned, compiled, compiled.parameters(params)))


def _write_upsert(
    conn: Conn,
    owned: bool,
    stmts: Statements,
    namespace: str,
    request: WriteRequest,
    sealer: Sealer | None,
) -> Record:
    """``upsert`` strategy: the delta if the stored head still carries its base, else whole.

    On PostgreSQL each attempt is one statement, pieces included (`Statements.combined`), so
    in autocommit each is its own transaction and a failed delta changed nothing.
    """
    if stmts.whole:
        return _write_whole(conn, owned, stmts, namespace, request)
    layout = request.layout
    if delta_allowed(request):
        record = _write_delta(conn, owned, stmts, namespace, request, sealer)
        if record is not None:
            return record
        layout = layout.full()
    return _write_full(conn, owned, stmts, namespace, request, layout, sealer)


def _alone(stmts: Statements, request: WriteRequest) -> bool:
    """Whether ``request``'s delta is one statement: the head, with no piece to add or drop."""
    layout = request.layout
    return not (stmts.whole or layout.pieces or layout.drop) and delta_allowed(request)


def _write_full(
    conn: Conn,
    owned: bool,
    stmts: Statements,
    namespace: str,
    request: WriteRequest,
    layout: Layout,
    sealer: Sealer | None,
) -> Record:
    """The state of ``layout`` written whole: the head and every piece, none of the base's."""
    arrays = stmts.combined
    params = write_params(namespace, request, layout, arrays=arrays, sealer=sealer)
    statement = stmts.write(request)
    rows = _rows(conn, owned, stmts, statement, statement, params)
    if not rows:
        live = _rows(conn, owned, stmts, "live_version", stmts.live_version, params)
        raise ConflictError(request.thread_id, params["expected"], live[0][0] if live else None)
    if not arrays:
        _write_pieces(conn, owned, stmts, params, layout, sealer)
    return written_record(request, layout, *rows[0])


def _write_delta(
    conn: Conn,
    owned: bool,
    stmts: Statements,
    namespace: str,
    request: WriteRequest,
    sealer: Sealer | None,
) -> Record | None:
    """The delta of ``request`` on its base, or ``None`` (nothing written).

    ``None`` when the stored head no longer carries that base.
    """
    layout = request.layout
    statement = stmts.delta(request)
    delta_arrays = stmts.delta_combined(layout)
    params = write_params(namespace, request, layout, arrays=delta_arrays, sealer=sealer)
    key = ("delta", write_kind(request), delta_arrays)
    rows = _rows(conn, owned, stmts, key, statement, params)
    if not rows:
        return None
    if not stmts.combined:
        _write_pieces(conn, owned, stmts, params, layout, sealer)
    return written_record(request, layout, *rows[0])


def _write_whole(
    conn: Conn, owned: bool, stmts: Statements, namespace: str, request: WriteRequest
) -> Record:
    """``upsert`` strategy on a table read whole by another service: the state in ``state``."""
    params = whole_params(namespace, request, arrays=stmts.combined)
    statement = stmts.write(request)
    rows = _rows(conn, owned, stmts, statement, statement, params)
    if not rows:
        live = _rows(conn, owned, stmts, "live_version", stmts.live_version, params)
        raise ConflictError(request.thread_id, params["expected"], live[0][0] if live else None)
    if not stmts.combined:
        _rows(conn, owned, stmts, "pieces_delete_all", stmts.pieces.delete_all, params)
    version, created_at = rows[0]
    return written_record(request, None, version, created_at, len(params["payload"]))


def _write_pieces(
    conn: Conn,
    owned: bool,
    stmts: Statements,
    params: dict[str, Any],
    layout: Layout,
    sealer: Sealer | None,
) -> None:
    """After the head: remove what ``layout`` drops (every piece on a full write), add its new."""
    pieces = stmts.pieces
    tid = params["tid"]
    thread = {"ns": params["ns"], "tid": tid}
    if layout.base is None:
        _rows(conn, owned, stmts, "pieces_delete_all", pieces.delete_all, thread)
    elif layout.drop:
        if isinstance(conn, Connection):
            conn.execute(pieces.delete_some, {**thread, "drop": list(layout.drop)})
        else:  # a `Lean` connection runs compiled statements only
            one = stmts.compiled("pieces_delete_one", pieces.delete_one, conn.dialect)
            drops = [one.parameters({**thread, "key": key}) for key in layout.drop]
            fetch(conn, owned, one, drops, many=True)
    if not layout.pieces:
        return
    if conn.dialect.driver in _HEX_DRIVERS:
        compiled = stmts.compiled("pieces_insert_hex", pieces.insert_hex, conn.dialect)
        rows = [
            {**thread, "key": key, "body_hex": piece_body(tid, key, body, sealer).hex()}
            for key, body in layout.pieces.items()
        ]
    else:
        compiled = stmts.compiled("pieces_insert", pieces.insert, conn.dialect)
        rows = [
            {**thread, "key": key, "body": piece_body(tid, key, body, sealer)}
            for key, body in layout.pieces.items()
        ]
    fetch(conn, owned, compiled, [compiled.parameters(row) for row in rows], many=True)


def _upsert_any(conn: Conn, stmts: Statements, request: WriteRequest) -> Insert | None:
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
    conn: Conn,
    stmts: Statements,
    statement: Insert,
    namespace: str,
    request: WriteRequest,
    owned: bool,
    sealer: Sealer | None,
) -> Record:
    """The head in one statement; the pieces as a delta if it replaced the base, else whole.

    With a ``sealer``, a full write seals its head again (the sealed head holds the manifest,
    which differs from the delta's), under the same data key.
    """
    with _transaction(conn, owned):
        if owned and stmts.lock_isolation is not None:
            # As for the locking save: no gap locks between first saves of new threads.
            conn.exec_driver_sql(stmts.lock_isolation)
        layout = request.layout
        values = write_params(namespace, request, layout, arrays=False, sealer=sealer)
        version, created_at, token = _rows(conn, owned, stmts, "upsert_any", statement, values)[0]
        if token != layout.manifest.token:
            # The row replaced was not the base (or there was none): a full write, in the
            # same transaction, with the full layout's manifest.
            layout = layout.full()
            values = write_params(namespace, request, layout, arrays=False, sealer=sealer)
            _rows(conn, owned, stmts, "set_manifest", stmts.set_manifest, values)
        _write_pieces(conn, owned, stmts, values, layout, sealer)
    return written_record(request, layout, version, created_at)


def _write_locked(
    conn: Conn,
    stmts: Statements,
    namespace: str,
    request: WriteRequest,
    owned: bool,
    sealer: Sealer | None,
) -> Record:
    with _transaction(conn, owned):
        if owned and stmts.lock_isolation is not None:
            # Only at the start of the store's own transaction: in the caller's transaction
            # the isolation level is the caller's (MySQL refuses to change it midway).
            conn.exec_driver_sql(stmts.lock_isolation)
        thread = {"ns": namespace, "tid": request.thread_id}
        rows = _rows(conn, owned, stmts, "lock_row", stmts.lock_row, thread)
        version, created, expires, token = rows[0] if rows else (None, None, None, None)
        live = bool(rows) and not request.is_expired(None if expires is None else as_utc(expires))
        actual = version if live else None
        request.check(actual)
        layout = request.layout.against(token if live else None)
        values = write_params(namespace, request, layout, arrays=False, sealer=sealer)
        values["new_version"] = request.next_version(actual)
        values["new_created_at"] = request.created_at or (as_utc(created) if live else request.now)
        # The head first: a duplicate key (a racing first save) is then retried before any
        # piece was written.
        _rows(
            conn,
            owned,
            stmts,
            "update_row" if rows else "insert_row",
            stmts.update_row if rows else stmts.insert_row,
            values,
        )
        _write_pieces(conn, owned, stmts, values, layout, sealer)
    return written_record(request, layout, values["new_version"], values["new_created_at"])


def _retryable(exc: DBAPIError, owned: bool) -> bool:
    if isinstance(exc, IntegrityError):
        # Only a duplicate key: a concurrent first insert of the same thread won. MySQL rolls
        # back the failed statement only, so the caller's transaction can retry it too.
        return driver_code(exc) == _DUPLICATE_KEY or bool(_DUPLICATE.search(str(exc.orig)))
    # A deadlock rolls back the whole transaction: only the store's own can start afresh.
    return owned and driver_code(exc) in _RETRY_CODES


def read(
    conn: Conn,
    stmts: Statements,
    namespace: str,
    owned: bool,
    thread_id: str,
    now: datetime,
    pieced: bool = False,
    codec: Codec = CLEAR,
) -> Record | None:
    """The live record with its whole state (head and pieces assembled), or ``None``.

    No explicit transaction: each statement is one snapshot, with nothing to BEGIN or COMMIT
    around it. The head alone first (a small state, or one stored whole, is all there); when
    its manifest names pieces, the head and every piece of the thread again in one statement
    (head ``UNION ALL`` pieces), so the state assembled is always one version's, even if
    another save replaced the head in between. ``pieced``: the state had pieces when last
    seen (`Pieced`), so the load starts with that one statement. ``codec`` opens what is
    sealed (`CLEAR`: a checkpointer without keys, for which a sealed head is `DecryptionError`).
    """
    params = {"ns": namespace, "tid": thread_id, "now": now}
    if not pieced:
        compiled = stmts.compiled("head", stmts.head, conn.dialect)
        rows = fetch(conn, owned, compiled, compiled.parameters(params), read_only=True)
        if not rows:
            return None
        record = head_record(thread_id, compiled.process(rows)[0], codec)
        if record is not None:
            return record
    compiled = stmts.compiled("read", stmts.read, conn.dialect)
    rows = fetch(conn, owned, compiled, compiled.parameters(params), read_only=True)
    # Only the head row needs the column types' processing (timestamps on SQLite).
    return read_record(thread_id, rows, compiled.process, codec)


def remove(
    conn: Connection,
    stmts: Statements,
    namespace: str,
    owned: bool,
    thread_id: str,
    now: datetime,
) -> bool:
    """Delete the thread and its pieces; ``True`` only if it was live (a leftover goes too)."""
    params = {"ns": namespace, "tid": thread_id, "now": now}
    if stmts.remove is not None:
        rows = conn.execute(stmts.remove, params).all()
        return bool(rows) and bool(rows[0][0])
    with _transaction(conn, owned):
        live = bool(conn.execute(stmts.remove_live, params).rowcount)
        if live or conn.execute(stmts.remove_expired, params).rowcount:
            conn.execute(stmts.pieces.delete_all, params)
    return live


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
    """Delete the namespace's expired rows and their pieces in batches.

    Each batch is one short transaction when ``owned``.
    """
    params: dict[str, Any] = {"ns": namespace, "now": now}
    total = 0
    while True:
        with _transaction(conn, owned):
            if stmts.purge_rows is None:
                deleted = int(conn.execute(stmts.purge, params).scalar_one())
                found = deleted
            else:
                tids = list(conn.execute(stmts.purge, params).scalars())
                found = len(tids)
                deleted = 0
                if tids:
                    batch = {**params, "tids": tids}
                    deleted = conn.execute(stmts.purge_rows, batch).rowcount
                    # Pieces of the heads just deleted; a thread saved again meanwhile has a
                    # (live) head and keeps its pieces.
                    conn.execute(stmts.pieces.delete_orphans, batch)
        total += deleted
        if found < PURGE_BATCH:
            return total


def shared_whole(conn: Connection, table_name: str, schema: str | None) -> bool:
    """Whether the table is shared with a service reading ``state`` whole (`Statements.whole`).

    A table adopted from the Rust SDK (PostgreSQL) keeps the unique index on ``thread_id`` the
    Rust service's ``ON CONFLICT (thread_id)`` needs; its saves must stay readable there.
    """
    if conn.dialect.name != "postgresql":
        return False
    from agents_persistence.migrations._filters import rust_compatibility_index_names

    marker = rust_compatibility_index_names(table_name)[1]
    indexes = inspect(conn).get_indexes(table_name, schema=schema)
    return any(index["name"] == marker for index in indexes)


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
