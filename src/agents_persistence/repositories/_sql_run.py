"""How the SQL store runs a hot statement: through SQLAlchemy, or on the DBAPI cursor.

On a `Connection`, SQLAlchemy's execution layer runs it, or the DBAPI cursor does when nothing
would see the difference.

``Connection.exec_driver_sql`` costs more than the statement itself on a fast local database
(on SQLite, about 50 µs against 14 µs on the cursor). What it adds for a statement compiled
once (`Compiled`) is the execution events, logging, and error wrapping. So a hot statement
goes straight to the cursor of the connection's DBAPI connection (`Connection.connection`)
only when, checked per statement on public attributes:

- no listener of an execution event is attached to the connection, its engine, the `Engine`
  class or the dialect (``dispatch``: ``before_execute``, ``before_cursor_execute``,
  ``after_cursor_execute``, ``after_execute``; ``handle_error``, ``do_execute``,
  ``do_executemany``, ``do_execute_no_params``, ``do_setinputsizes``). Instrumentation such as
  OpenTelemetry's or Sentry's attaches these, and then every statement takes SQLAlchemy's path;
- the engine does not log statements (``echo``, or the ``sqlalchemy.engine`` logger at INFO);
- the driver is a synchronous one (the asyncio drivers run through ``run_sync`` and their
  adapted cursors: always SQLAlchemy's path).

On the cursor, a statement that writes runs in a transaction of the `Connection` (begun as
SQLAlchemy's own autobegin would), so commit, rollback and the pool's reset are SQLAlchemy's (a
read needs none: the pool's reset ends whatever the driver began); a driver error
becomes SQLAlchemy's `DBAPIError` (``DBAPIError.instance``), and a disconnect invalidates the
connection (``Connection.invalidate``), as the execution layer does. The contract suite runs on
both paths (the ``+traced`` kits attach listeners as OpenTelemetry does).

On SQLite, a load or a save on the store's own connection goes one step further when nothing
watches the engine's connections (`lean`: no listener of a `Connection` event the call could
fire, begin, commit and rollback included, nor of the dialect's, no statement logging): it runs on a
pooled DBAPI connection checked out with ``Engine.raw_connection`` (`Lean`), without a
`Connection` around it. The pool's own events (``connect``, ``checkout``, ``reset``, ...) still
run; the store's transaction is the driver's (``commit`` / ``rollback``), errors are wrapped as
above. In-process, the pool's reset on return costs nothing, which is why this is for SQLite
only: on a server, a `Connection` that committed spares the reset's round trip. A save that is
one statement (a delta of the head alone) runs there outside a transaction (`Lean.alone`):
SQLite commits a statement run on its own as it completes, which spares the driver's ``BEGIN``
and ``COMMIT``.
"""

from __future__ import annotations

import logging
import operator
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeAlias, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, StatementError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from sqlalchemy import Engine
    from sqlalchemy.engine import Dialect
    from sqlalchemy.pool import PoolProxiedConnection

    from ._sql_compiled import Compiled

__all__ = ["Conn", "Lean", "direct", "fetch", "lean"]

P = ParamSpec("P")
T = TypeVar("T")

_CONNECTION_EVENTS = (
    "before_execute",
    "after_execute",
    "before_cursor_execute",
    "after_cursor_execute",
)
_DIALECT_EVENTS = (
    "handle_error",
    "do_execute",
    "do_executemany",
    "do_execute_no_params",
    "do_setinputsizes",
)
_ENGINE_LOG = logging.getLogger("sqlalchemy.engine")
# Every `Connection` event a load or a save on the store's own connection could fire (it
# never uses savepoints, two-phase transactions or connection options): with none attached,
# nothing would see that a `Lean` call has no `Connection`.
_LEAN_EVENTS = (*_CONNECTION_EVENTS, "engine_connect", "begin", "commit", "rollback")

_lean_events = operator.attrgetter(*_LEAN_EVENTS)
_dialect_events = operator.attrgetter(*_DIALECT_EVENTS)


def lean(engine: Engine) -> bool:
    """Whether a call on ``engine`` may run on a `Lean` connection (see the module).

    A synchronous SQLite engine that does not log statements, with no listener of a
    `Connection` event on it (or on the `Engine` class) and none of a dialect event. Checked
    at every call: a listener attached at any time takes effect from the next call.
    """
    dialect = engine.dialect
    if (
        dialect.name != "sqlite"
        or dialect.is_async
        or engine.echo
        or _ENGINE_LOG.isEnabledFor(logging.INFO)
    ):
        return False
    return not (any(_lean_events(engine.dispatch)) or any(_dialect_events(dialect.dispatch)))


class Lean:
    """A pooled DBAPI connection for one call of the store, without a `Connection` (`lean`).

    A context manager: checked out of ``engine``'s pool with ``Engine.raw_connection`` on
    creation, returned to it on exit (the pool's reset then rolls back whatever is still
    open). It offers what the store's load and save use of a `Connection`: ``dialect``,
    ``engine``, ``connection``, `begin` (the driver's transaction: committed at the end of
    the ``with`` block, rolled back on an error), `in_transaction`, `invalidate` and
    `exec_driver_sql`; driver errors come out as SQLAlchemy's `DBAPIError`.
    """

    __slots__ = ("connection", "dialect", "engine", "open")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = dialect = engine.dialect
        self.open = False
        try:
            self.connection: PoolProxiedConnection = engine.raw_connection()
        except dialect.loaded_dbapi.Error as exc:
            # As `Connection` wraps a failed connect.
            disconnect = bool(dialect.is_disconnect(exc, None, None))
            raise _wrapped(engine, exc, None, None, disconnect) from exc

    def __enter__(self) -> Lean:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.connection.close()

    def begin(self) -> _LeanTransaction:
        """Begin the store's transaction (the driver begins it with the first statement)."""
        self.open = True
        return _LeanTransaction(self)

    def in_transaction(self) -> bool:
        """Whether `begin` began a transaction not yet ended."""
        return self.open

    def alone(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn``, whose one write statement is its own transaction: no BEGIN or COMMIT.

        For a save that is a single statement: SQLite applies a statement run outside a
        transaction atomically and commits it as it completes, which spares the two statements
        that open and end the driver's transaction. The sqlite3 driver does that with its
        ``isolation_level`` set to ``None`` for the call (restored after). SQLite rolls back a
        statement that fails, its own commit included (a reader past the busy timeout without
        WAL); should a transaction still be open after an error, it is rolled back before the
        error goes on. Another driver, or a connection already in a transaction, runs ``fn``
        in a transaction of `begin` instead.
        """
        connection = self.connection
        driver: Any = connection.dbapi_connection  # sqlite3's own (a synchronous driver)
        try:
            alone = self.dialect.driver == "pysqlite" and not driver.in_transaction
            if alone:
                previous = driver.isolation_level
                driver.isolation_level = None
        except self.dialect.loaded_dbapi.Error as exc:  # a connection closed underneath
            _raise(self, exc, None, None, None)
        if not alone:
            with self.begin():
                return fn(*args, **kwargs)
        self.open = True  # no `begin` before the statement: the driver runs it on its own
        try:
            return fn(*args, **kwargs)
        except BaseException:
            # (An invalidated connection is closed: there is nothing left to roll back.)
            if connection.dbapi_connection is not None and driver.in_transaction:
                self._end(commit=False)  # invalidates a connection that cannot roll back
            raise
        finally:
            self.open = False
            if connection.dbapi_connection is not None:
                driver.isolation_level = previous

    def invalidate(self, exception: BaseException | None = None) -> None:
        """Discard the DBAPI connection: the pool replaces it."""
        self.open = False
        self.connection.invalidate(exception)

    def exec_driver_sql(self, statement: str) -> None:
        """Run ``statement`` (no parameters, no rows) on a cursor."""
        if not self.open:
            self.begin()
        cursor = self.connection.cursor()
        try:
            cursor.execute(statement)
        except self.dialect.loaded_dbapi.Error as exc:
            _raise(self, exc, statement, None, cursor)
        finally:
            _close(cursor, self.dialect)

    def _end(self, commit: bool) -> None:
        self.open = False
        connection = self.connection
        dbapi_error = self.dialect.loaded_dbapi.Error
        if commit:
            try:
                connection.commit()
                return
            except dbapi_error as exc:
                self._end(commit=False)
                _raise(self, exc, None, None, None)
        try:
            connection.rollback()
        except dbapi_error as exc:
            # As SQLAlchemy's reset does: a connection that cannot roll back is not reused.
            self.invalidate(exc)


class _LeanTransaction:
    """`Lean.begin`'s context manager: commit at the end of the block, roll back on an error."""

    __slots__ = ("lean",)

    def __init__(self, lean: Lean) -> None:
        self.lean = lean

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.lean.open:  # not already ended by an invalidation
            self.lean._end(commit=exc_type is None)


Conn: TypeAlias = "Connection | Lean"
"""What the store's load and save run on: a `Connection`, or a `Lean` one."""


def direct(conn: Connection, owned: bool) -> bool:
    """Whether a statement on ``conn`` may skip SQLAlchemy's execution layer (see the module).

    ``owned``: ``conn`` is one the store checked out itself. Its own listeners can then only
    have been added by an ``engine_connect`` listener, so unless its engine has one (as
    SQLAlchemy's own ``execution_options(isolation_level=...)`` engines do), only the engine's
    collections (and the `Engine` class's) are read, which costs a fraction of a fresh
    connection's joined ones. On the caller's connection (a unit of work) its own listeners
    always count.
    """
    dialect = conn.dialect
    engine = conn.engine
    if dialect.is_async or engine.echo or _ENGINE_LOG.isEnabledFor(logging.INFO):
        return False
    events: Any = engine.dispatch
    if not owned or events.engine_connect:
        events = conn.dispatch  # the connection's own listeners and its engine's
    if any(getattr(events, name) for name in _CONNECTION_EVENTS):
        return False
    events = dialect.dispatch
    return not any(getattr(events, name) for name in _DIALECT_EVENTS)


def fetch(
    conn: Conn,
    owned: bool,
    compiled: Compiled,
    parameters: Any,
    *,
    many: bool = False,
    read_only: bool = False,
) -> list[Any]:
    """Run ``compiled`` with the DBAPI ``parameters`` (a list of them when ``many``).

    The rows as the driver returns them (``compiled.process`` applies the column types), or
    ``[]`` for a statement that returns none. ``owned``: as for `direct`. ``read_only``: the
    statement changes nothing, so on the cursor it needs no transaction of the `Connection`
    (the pool's reset ends whatever the driver began).
    """
    if isinstance(conn, Connection) and not direct(conn, owned):
        result = conn.exec_driver_sql(compiled.sql, parameters)  # a list: executemany
        return list(result.fetchall()) if compiled.returns_rows else []
    if not read_only and not conn.in_transaction():
        conn.begin()  # what SQLAlchemy's autobegin does before a statement
    dialect = conn.dialect
    try:
        cursor = conn.connection.cursor()
    except dialect.loaded_dbapi.Error as exc:  # a connection closed underneath
        _raise(conn, exc, compiled.sql, parameters, None)
    try:
        if many:
            cursor.executemany(compiled.sql, parameters)
        else:
            cursor.execute(compiled.sql, parameters)
        rows = cursor.fetchall() if compiled.returns_rows else []
    except dialect.loaded_dbapi.Error as exc:
        _raise(conn, exc, compiled.sql, parameters, cursor)
    finally:
        _close(cursor, dialect)
    return list(rows)


def _close(cursor: Any, dialect: Dialect) -> None:
    try:  # noqa: SIM105 (on every statement: cheaper than contextlib.suppress)
        cursor.close()
    except dialect.loaded_dbapi.Error:  # after a disconnect
        pass


def _raise(conn: Conn, exc: Exception, sql: str | None, parameters: Any, cursor: Any) -> NoReturn:
    """Raise ``exc`` as SQLAlchemy's execution layer would.

    Wrapped in `DBAPIError` (its parameters hidden if the engine hides them), with the
    connection invalidated on a disconnect.
    """
    disconnect = bool(conn.dialect.is_disconnect(exc, conn.connection, cursor))  # type: ignore[arg-type]
    if disconnect:
        conn.invalidate(exc)
    raise _wrapped(conn.engine, exc, sql, parameters, disconnect) from exc


def _wrapped(
    engine: Engine, exc: Exception, sql: str | None, parameters: Any, disconnect: bool
) -> StatementError:
    dialect = engine.dialect
    return DBAPIError.instance(
        sql,
        parameters,
        exc,
        dialect.loaded_dbapi.Error,
        hide_parameters=engine.hide_parameters,
        connection_invalidated=disconnect,
        dialect=dialect,
    )
