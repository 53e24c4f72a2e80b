"""Locks that serialise concurrent migration runs on one database.

Several workers often run ``upgrade()`` at start-up against the same fresh database. Each run
takes a lock named after its target table before Alembic reads the version table, so a late
arriver waits, then finds the table already at head and does nothing.

- PostgreSQL: ``pg_advisory_xact_lock`` inside the migration's transaction (DDL is
  transactional there), released only when the schema change is committed and visible.
- MySQL/MariaDB: ``GET_LOCK`` for the session (DDL commits implicitly), released afterwards.
- SQLite and others: no lock; SQLite serialises writers itself.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from agents_persistence.errors import CheckpointerError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Connection

    from agents_persistence.migrations._settings import MigrationTarget

__all__ = ["LOCK_TIMEOUT_SECONDS", "advisory_key", "lock_name", "session_lock", "transaction_lock"]

LOCK_TIMEOUT_SECONDS = 300
"""How long a MySQL/MariaDB run waits for another run's lock before giving up."""

_MYSQL_DIALECTS = ("mysql", "mariadb")


def _digest(target: MigrationTarget, database: str = "") -> bytes:
    key = f"agents_persistence.migrations:{database}:{target.qualified_name}"
    return hashlib.blake2b(key.encode(), digest_size=8).digest()


def advisory_key(target: MigrationTarget) -> int:
    """The PostgreSQL advisory lock key (signed 64 bits) of ``target``; stable across processes."""
    return int.from_bytes(_digest(target), "big", signed=True)


def lock_name(target: MigrationTarget, database: str) -> str:
    """The MySQL/MariaDB ``GET_LOCK`` name of ``target`` in ``database`` (locks are server-wide)."""
    return "agents_persistence." + _digest(target, database).hex()


def transaction_lock(connection: Connection, target: MigrationTarget) -> None:
    """On PostgreSQL, wait for the advisory lock of ``target`` until the transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(target)}
        )


@contextmanager
def session_lock(connection: Connection, target: MigrationTarget) -> Iterator[None]:
    """On MySQL/MariaDB, hold ``GET_LOCK`` for ``target`` around the block.

    Raises:
        CheckpointerError: The lock was not granted within `LOCK_TIMEOUT_SECONDS`.
    """
    if connection.dialect.name not in _MYSQL_DIALECTS:
        yield
        return
    owns_transaction = not connection.in_transaction()
    database = connection.execute(text("SELECT DATABASE()")).scalar_one_or_none() or ""
    name = lock_name(target, database)
    granted = connection.execute(
        text("SELECT GET_LOCK(:name, :timeout)"),
        {"name": name, "timeout": LOCK_TIMEOUT_SECONDS},
    ).scalar_one()
    if owns_transaction:
        # Start the migration in a fresh transaction, so that its first read of the version
        # table sees what the previous lock holder committed.
        connection.commit()
    if granted != 1:
        raise CheckpointerError(
            f"another migration of {target.qualified_name} held the lock for more than"
            f" {LOCK_TIMEOUT_SECONDS}s"
        )
    release = text("SELECT RELEASE_LOCK(:name)")
    try:
        yield
    except BaseException:
        # The server drops the lock with the session anyway; keep the original error visible.
        with suppress(SQLAlchemyError):
            connection.execute(release, {"name": name})
        raise
    connection.execute(release, {"name": name})
    if owns_transaction:
        connection.commit()
