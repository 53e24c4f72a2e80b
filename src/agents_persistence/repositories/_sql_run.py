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
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, NoReturn

from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from ._sql_compiled import Compiled

__all__ = ["direct", "fetch"]

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
    conn: Connection,
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
    if not direct(conn, owned):
        result = conn.exec_driver_sql(compiled.sql, parameters)  # a list: executemany
        return list(result.fetchall()) if compiled.returns_rows else []
    if not read_only and not conn.in_transaction():
        conn.begin()  # what SQLAlchemy's autobegin does before a statement
    cursor = conn.connection.cursor()
    try:
        if many:
            cursor.executemany(compiled.sql, parameters)
        else:
            cursor.execute(compiled.sql, parameters)
        rows = cursor.fetchall() if compiled.returns_rows else []
    except conn.dialect.loaded_dbapi.Error as exc:
        _raise(conn, exc, compiled.sql, parameters, cursor)
    finally:
        with contextlib.suppress(conn.dialect.loaded_dbapi.Error):  # after a disconnect
            cursor.close()
    return list(rows)


def _raise(conn: Connection, exc: Exception, sql: str, parameters: Any, cursor: Any) -> NoReturn:
    """Raise ``exc`` as SQLAlchemy's execution layer would.

    Wrapped in `DBAPIError` (its parameters hidden if the engine hides them), with the
    connection invalidated on a disconnect.
    """
    dialect = conn.dialect
    disconnect = bool(dialect.is_disconnect(exc, conn.connection, cursor))  # type: ignore[arg-type]
    if disconnect:
        conn.invalidate(exc)
    raise DBAPIError.instance(
        sql,
        parameters,
        exc,
        dialect.loaded_dbapi.Error,
        hide_parameters=conn.engine.hide_parameters,
        connection_invalidated=disconnect,
        dialect=dialect,
    ) from exc
