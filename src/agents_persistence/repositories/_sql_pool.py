"""The pool reset of engines the SQL store creates: roll back only what is still open.

Registers a public pool event (no I/O until a connection returns to the pool).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import event

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["reset_when_needed"]

_MYSQL_IN_TRANSACTION = 0x0001  # SERVER_STATUS_IN_TRANS of the MySQL protocol


def _driver_idle(dbapi_connection: Any) -> bool:
    """Whether the driver itself reports no open transaction (``False`` when it cannot tell).

    Public driver state only, kept by each driver from the server's replies: sqlite3's
    ``in_transaction``, psycopg's ``info.transaction_status``, PyMySQL's ``server_status``.
    """
    in_transaction = getattr(dbapi_connection, "in_transaction", None)
    if isinstance(in_transaction, bool):  # sqlite3
        return not in_transaction
    info = getattr(dbapi_connection, "info", None)
    status = getattr(info, "transaction_status", None)
    if status is not None:  # psycopg: TransactionStatus.IDLE is 0
        return bool(status == 0)
    server_status = getattr(dbapi_connection, "server_status", None)
    if isinstance(server_status, int) and getattr(dbapi_connection, "open", False) is True:
        return not server_status & _MYSQL_IN_TRANSACTION  # PyMySQL
    return False


def reset_when_needed(engine: Engine) -> None:
    """Roll back a connection on its return to the pool only when a transaction is open.

    For engines created with ``pool_reset_on_return=None`` (without this event, nothing would
    roll them back). SQLAlchemy's default reset rolls
    back every returned connection whose `Connection` did not just roll back itself: after each
    committed write that is one more round trip on MySQL/MariaDB (PyMySQL sends ``ROLLBACK``
    even with nothing to undo). This public ``reset`` pool event rolls back unless the driver
    reports that no transaction is open, so a connection still never goes back to the pool
    mid-transaction, after an error included; a failing rollback invalidates the connection,
    as SQLAlchemy's own reset does.
    """

    @event.listens_for(engine, "reset")
    def _reset(dbapi_connection: Any, connection_record: Any, reset_state: Any) -> None:
        if (
            reset_state.terminate_only
            or not reset_state.asyncio_safe
            or reset_state.transaction_was_reset
            or _driver_idle(dbapi_connection)
        ):
            return
        dbapi_connection.rollback()
