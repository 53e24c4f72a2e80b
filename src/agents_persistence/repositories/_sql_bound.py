"""The SQL store's primitives for both twins, and its unit of work (``cp.using(session)``).

A bound checkpointer runs the same operations (`_sql_ops`) on the caller's connection, the one
a `Session` / `AsyncSession` holds for its transaction or a `Connection` / `AsyncConnection`
given directly. It joins that transaction, never begins a second one on another pooled
connection, and never commits or rolls back: the caller's commit keeps the app's rows and the
agent's state together, the caller's rollback undoes both.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from agents_persistence.base import BaseAsyncCheckpointer, BaseCheckpointer
from agents_persistence.contract import StateT
from agents_persistence.errors import ConfigurationError, TransactionAbortedError

from . import _sql_ops as ops
from ._sql_engine import driver_code, translate_errors

if TYPE_CHECKING:
    from datetime import datetime

    from agents_persistence._core import Core, Record, WriteRequest

    from ._sql_run import Conn
    from ._sql_setup import Table
    from ._sql_statements import Statements
    from .sql import AsyncSQLCheckpointer, SQLCheckpointer

__all__ = ["AsyncBoundSQLCheckpointer", "AsyncSQLOps", "BoundSQLCheckpointer", "SQLOps"]

P = ParamSpec("P")
T = TypeVar("T")
Op = Callable[Concatenate[Connection, "Statements", str, bool, P], T]
HotOp = Callable[Concatenate["Conn", "Statements", str, bool, P], T]
"""A load or a save: it can also run on a `Lean` connection."""

# PostgreSQL: serialization failure, deadlock (the transaction is aborted). MySQL/MariaDB: a
# deadlock (InnoDB rolls the whole transaction back).
_ABORTING_SQLSTATES = frozenset({"40001", "40P01"})
_ABORTING_MYSQL_CODES = frozenset({1213})


class SQLOps:
    """The five store primitives of the sync twins, each one operation through `_run`."""

    _table: Table
    _core: Core[Any]

    @abstractmethod
    def _run(
        self, action: str, thread_id: str | None, op: Op[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``op`` on a connection, inside the store's error boundary."""

    def _run_hot(
        self,
        action: str,
        thread_id: str | None,
        op: HotOp[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`_run` for a load or a save (a checkpointer may run them on a `Lean` connection)."""
        return self._run(action, thread_id, op, *args, **kwargs)

    def _write(self, request: WriteRequest) -> Record:
        record = self._run_hot("save", request.thread_id, ops.write, request, self._core.codec)
        self._table.pieced.note(request.thread_id, record)
        return record

    def _read(self, thread_id: str, now: datetime) -> Record | None:
        pieced = self._table.pieced
        likely = pieced.likely(thread_id)
        codec = self._core.codec
        record = self._run_hot("load", thread_id, ops.read, thread_id, now, likely, codec)
        pieced.note(thread_id, record)
        return record

    def _remove(self, thread_id: str, now: datetime) -> bool:
        self._table.pieced.note(thread_id, None)
        return self._run("delete", thread_id, ops.remove, thread_id, now)

    def _page(self, count: int, after: tuple[datetime, str] | None, now: datetime) -> list[Record]:
        return self._run("listing", None, ops.page, count, after, now)

    def _purge(self, now: datetime) -> int:
        return self._run("purge", None, ops.purge, now)


class AsyncSQLOps:
    """`SQLOps` for the async twins."""

    _table: Table
    _core: Core[Any]

    @abstractmethod
    async def _run(
        self, action: str, thread_id: str | None, op: Op[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``op`` on a connection, inside the store's error boundary."""

    async def _write(self, request: WriteRequest) -> Record:
        record = await self._run("save", request.thread_id, ops.write, request, self._core.codec)
        self._table.pieced.note(request.thread_id, record)
        return record

    async def _read(self, thread_id: str, now: datetime) -> Record | None:
        pieced = self._table.pieced
        likely = pieced.likely(thread_id)
        record = await self._run(
            "load", thread_id, ops.read, thread_id, now, likely, self._core.codec
        )
        pieced.note(thread_id, record)
        return record

    async def _remove(self, thread_id: str, now: datetime) -> bool:
        self._table.pieced.note(thread_id, None)
        return await self._run("delete", thread_id, ops.remove, thread_id, now)

    async def _page(
        self, count: int, after: tuple[datetime, str] | None, now: datetime
    ) -> list[Record]:
        return await self._run("listing", None, ops.page, count, after, now)

    async def _purge(self, now: datetime) -> int:
        return await self._run("purge", None, ops.purge, now)


@contextmanager
def _boundary(table: Table, thread_id: str | None, action: str) -> Iterator[None]:
    """The store's error boundary, plus `TransactionAbortedError` for the caller.

    A deadlock or serialization failure ended the caller's transaction: the caller must know
    (typed, never retried here).
    """
    with translate_errors(table.not_ready, thread_id, action=action):
        try:
            yield
        except DBAPIError as exc:
            state = getattr(exc.orig, "sqlstate", None)
            if state in _ABORTING_SQLSTATES or driver_code(exc) in _ABORTING_MYSQL_CODES:
                raise TransactionAbortedError(
                    "the database ended the caller's transaction (deadlock or serialization"
                    f" failure): {str(exc.orig).strip().splitlines()[0]}; roll it back and run"
                    " the unit of work again"
                ) from exc
            raise


def _joined(
    conn: Connection, table: Table, namespace: str, op: Op[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    return op(conn, table.check_joined(conn), namespace, False, *args, **kwargs)


class _Joined:
    """What both bound views keep: the parent's settings and table, and the caller's target."""

    _core: Any
    _table: Table

    def _join(self, parent: Any, target: object, kinds: tuple[type, ...], wanted: str) -> None:
        if not isinstance(target, kinds):
            raise ConfigurationError(
                f"{type(parent).__name__}.using() takes a sqlalchemy {wanted}, not"
                f" {type(target).__name__}"
            )
        self._core = parent._core
        self._table = parent._table


class BoundSQLCheckpointer(_Joined, SQLOps, BaseCheckpointer[StateT]):
    """A `SQLCheckpointer` working inside the caller's transaction; see `SQLCheckpointer.using`.

    The same contract methods, on the connection of ``target``: writes join its transaction,
    which the caller commits or rolls back. `close` only retires this view.
    """

    def __init__(self, parent: SQLCheckpointer[StateT], target: Session | Connection) -> None:
        super().__init__()
        self._join(parent, target, (Session, Connection), "Session or Connection")
        self._target = target

    def _run(
        self, action: str, thread_id: str | None, op: Op[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        with _boundary(self._table, thread_id, action):
            target = self._target
            conn = target.connection() if isinstance(target, Session) else target
            return _joined(conn, self._table, self.namespace, op, *args, **kwargs)


class AsyncBoundSQLCheckpointer(_Joined, AsyncSQLOps, BaseAsyncCheckpointer[StateT]):
    """An `AsyncSQLCheckpointer` inside the caller's transaction (`AsyncSQLCheckpointer.using`)."""

    def __init__(
        self, parent: AsyncSQLCheckpointer[StateT], target: AsyncSession | AsyncConnection
    ) -> None:
        super().__init__()
        self._join(
            parent, target, (AsyncSession, AsyncConnection), "AsyncSession or AsyncConnection"
        )
        self._target = target

    async def _run(
        self, action: str, thread_id: str | None, op: Op[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        with _boundary(self._table, thread_id, action):
            target = self._target
            conn = await target.connection() if isinstance(target, AsyncSession) else target
            table, namespace = self._table, self.namespace
            return await conn.run_sync(
                lambda sync: _joined(sync, table, namespace, op, *args, **kwargs)
            )
