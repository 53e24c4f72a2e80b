"""The SQL store: agent checkpoints in one table, on PostgreSQL, SQLite or MySQL/MariaDB.

`SQLCheckpointer` works on a SQLAlchemy `Engine`, `AsyncSQLCheckpointer` on an `AsyncEngine`.
Both run the same Core statements (`_sql_statements`) through the same operations (`_sql_ops`):
the async twin hands them to ``AsyncConnection.run_sync``. Their set-up (table binding,
``from_url`` engines) is shared in `_sql_setup`, their unit-of-work views live in `_sql_bound`.
The schema belongs to the library's Alembic migrations; a checkpointer never runs DDL unless
created with ``auto_migrate=True``.
"""

from __future__ import annotations

# First, before any driver: without the extra this raises MissingExtraError naming it.
from agents_persistence.repositories import _sql_extra  # noqa: F401

# isort: split

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Self, TypeVar

from sqlalchemy import Connection, Engine

from agents_persistence._core import DEFAULT_NAMESPACE
from agents_persistence.base import BaseAsyncCheckpointer, BaseCheckpointer
from agents_persistence.contract import StateT
from agents_persistence.errors import DEFAULT_CALL_TIMEOUT
from agents_persistence.models.sql import DEFAULT_TABLE_NAME

from ._sql_bound import (
    AsyncBoundSQLCheckpointer,
    AsyncSQLOps,
    BoundSQLCheckpointer,
    HotOp,
    SQLOps,
)
from ._sql_deadline import Budget, Call
from ._sql_engine import (
    PING_IDLE_AFTER,
    translate_errors,
)
from ._sql_run import Lean, lean
from ._sql_setup import SQLSetup, runner
from ._sql_statements import Statements

if TYPE_CHECKING:
    from datetime import timedelta

    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

    from agents_persistence._core import Clock
    from agents_persistence._keys import KeyProvider
    from agents_persistence.upcasting import Upcasters

__all__ = [
    "AsyncBoundSQLCheckpointer",
    "AsyncSQLCheckpointer",
    "BoundSQLCheckpointer",
    "SQLCheckpointer",
]

P = ParamSpec("P")
T = TypeVar("T")
_Op = Callable[Concatenate[Connection, Statements, str, bool, P], T]


class SQLCheckpointer(SQLSetup, SQLOps, BaseCheckpointer[StateT]):
    """A `Checkpointer` on a SQLAlchemy `Engine` (PostgreSQL, SQLite, MySQL/MariaDB).

    Args:
        engine: The application's engine; the checkpointer never disposes it.
        table_name: The checkpoint table (created by the library's migrations).
        schema: The table's schema (PostgreSQL) or database (MySQL), ``None`` for the default.
        auto_migrate: Run the library's migrations on first use instead of raising
            `SchemaNotReadyError` (meant for the embedded SQLite default).
        namespace: Isolates this checkpointer's threads.
        ttl: Seconds (or a timedelta) each save lives; ``None`` keeps threads forever.
        state_type: The pydantic model stored; `AgentStateSnapshot` by default.
        max_state_bytes: Largest encoded state accepted (32 MiB by default).
        clock: Returns the current aware time (tests move it by hand).
        call_timeout: Seconds one call may take (5 by default): past it, the call raises
            `CallTimeoutError`. On an engine the application made, its own pool and connect
            timeouts still apply; see docs/sql.md for what bounds what.
        keys: Encrypt what is saved (`agents_persistence.encryption`): each save's head is
            sealed into ``sealed_state`` (``state`` keeps ``{}``) and its pieces are sealed;
            rows in clear still load. ``None``: saved in clear, and loading an encrypted
            thread raises `DecryptionError`. Refused (`ConfigurationError`, at first use) on a
            table adopted from the Rust SDK, whose service reads states whole.
        upcasters: Migrations of older schema versions of the state, run on load
            (`agents_persistence.upcasting`).

    Raises:
        ConfigurationError: ``engine`` is not an `Engine`, or a name is not a valid identifier.
    """

    _asynchronous = False

    def __init__(
        self,
        engine: Engine,
        *,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
        auto_migrate: bool = False,
        namespace: str = DEFAULT_NAMESPACE,
        ttl: float | timedelta | None = None,
        state_type: type[StateT] | None = None,
        max_state_bytes: int | None = None,
        clock: Clock | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        keys: KeyProvider | None = None,
        upcasters: Upcasters | None = None,
    ) -> None:
        super().__init__(
            namespace=namespace,
            ttl=ttl,
            state_type=state_type,
            max_state_bytes=max_state_bytes,
            clock=clock,
            keys=keys,
            upcasters=upcasters,
        )
        self._attach(engine, table_name, schema, auto_migrate)
        self._engine = engine
        self._runner = runner(engine, self._table)
        self._budget = Budget(call_timeout, engine, asynchronous=self._asynchronous)
        self._prepare_lock = threading.Lock()

    @classmethod
    def from_url(
        cls,
        url: str | URL,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        pool_timeout: float | None = None,
        connect_timeout: float | None = None,
        busy_timeout: float | None = None,
        ping_idle_after: float | None = PING_IDLE_AFTER,
        engine_options: dict[str, Any] | None = None,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
        auto_migrate: bool = False,
        namespace: str = DEFAULT_NAMESPACE,
        ttl: float | timedelta | None = None,
        state_type: type[StateT] | None = None,
        max_state_bytes: int | None = None,
        clock: Clock | None = None,
        keys: KeyProvider | None = None,
        upcasters: Upcasters | None = None,
    ) -> Self:
        """Create and own an engine for ``url``; `close` disposes it.

        Plain URLs get the drivers this library ships: ``postgresql://`` uses psycopg 3,
        ``mysql://`` and ``mariadb://`` PyMySQL, ``sqlite:///path`` the standard library.

        Args:
            url: The database URL.
            pool_size: Connections kept open in the pool.
            max_overflow: Extra connections opened under load.
            call_timeout: Seconds one whole call may take, pool wait, connect, statements
                and retries included (5 by default); past it, `CallTimeoutError`.
            pool_timeout: Seconds to wait for a free connection (at most, and by default,
                ``call_timeout``).
            connect_timeout: Seconds to wait for the server when connecting (at most, and by
                default, ``call_timeout``).
            busy_timeout: SQLite only: seconds a writer waits for another to finish (at most,
                and by default, ``call_timeout``).
            ping_idle_after: Ping a pooled connection at checkout when it sat idle longer
                than this many seconds (a server restart or a dropped connection is then
                noticed before the call); ``0`` pings on every checkout (SQLAlchemy's
                ``pool_pre_ping``), ``None`` never. Not for SQLite.
            engine_options: More ``create_engine`` keyword arguments (they win).
            table_name: The checkpoint table, as in the constructor.
            schema: The table's schema or database, as in the constructor.
            auto_migrate: Run the library's migrations on first use.
            namespace: Isolates this checkpointer's threads.
            ttl: Seconds (or a timedelta) each save lives; ``None`` keeps threads forever.
            state_type: The pydantic model stored; `AgentStateSnapshot` by default.
            max_state_bytes: Largest encoded state accepted (32 MiB by default).
            clock: Returns the current aware time (tests move it by hand).
            keys: Encrypt what is saved, as in the constructor.
            upcasters: Migrations of older schema versions of the state, as in the
                constructor.

        Raises:
            ConfigurationError: the URL or an option is invalid.
            MissingExtraError: the URL's driver is not installed (names the extra).
        """
        return cls._from_url(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            call_timeout=call_timeout,
            pool_timeout=pool_timeout,
            connect_timeout=connect_timeout,
            busy_timeout=busy_timeout,
            ping_idle_after=ping_idle_after,
            engine_options=engine_options,
            table_name=table_name,
            schema=schema,
            auto_migrate=auto_migrate,
            namespace=namespace,
            ttl=ttl,
            state_type=state_type,
            max_state_bytes=max_state_bytes,
            clock=clock,
            keys=keys,
            upcasters=upcasters,
        )

    @property
    def engine(self) -> Engine:
        """The engine this checkpointer runs on."""
        return self._engine

    def using(self, target: Session | Connection) -> BoundSQLCheckpointer[StateT]:
        """This checkpointer inside the caller's transaction: a unit of work.

        The view has the same contract methods (``save_state``, ``load_state``,
        ``load_checkpoint``, ``delete_thread``, ``list_threads``, ...) and runs them on the
        connection of ``target``: a `Session` (its current transaction's connection, begun if
        needed) or a `Connection`. Its writes join that transaction; the caller commits or
        rolls back, which keeps or undoes the app's rows and the state together. It never
        commits, never takes a connection of its own and never runs DDL. See docs/sqlalchemy.md
        for what a `ConflictError` or `TransactionAbortedError` leaves behind.

        Args:
            target: The caller's `Session` or `Connection`, on this checkpointer's database.

        Raises:
            ConfigurationError: ``target`` is neither.
        """
        return BoundSQLCheckpointer(self, target)

    def _run(
        self,
        action: str,
        thread_id: str | None,
        op: _Op[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        with (
            translate_errors(self._table.not_ready, thread_id, action=action),
            self._budget.call(action) as call,
        ):
            if not self._table.ready:
                self._prepare(call)
            with self._admission.admit(action), self._runner.connect() as conn, call.watching(conn):
                return op(conn, self._table.statements, self.namespace, True, *args, **kwargs)

    def _run_hot(
        self,
        action: str,
        thread_id: str | None,
        op: HotOp[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        runner = self._runner
        if not lean(runner):
            return self._run(action, thread_id, op, *args, **kwargs)
        with (
            translate_errors(self._table.not_ready, thread_id, action=action),
            self._budget.call(action) as call,
        ):
            if not self._table.ready:
                self._prepare(call)
            with self._admission.admit(action), Lean(runner) as conn, call.watching(conn):
                return op(conn, self._table.statements, self.namespace, True, *args, **kwargs)

    def _prepare(self, call: Call) -> None:
        if not self._prepare_lock.acquire(timeout=call.remaining()):
            raise TimeoutError("waiting for another call's schema check")  # CallTimeoutError
        try:
            if not self._table.ready:
                # Migrations (auto_migrate) may rightly wait on locks: only a check is watched.
                auto = self._table.auto_migrate
                with self._engine.connect() as conn, call.watching(conn, enabled=not auto):
                    self._table.prepare(conn)
                self._table.ready = True
        finally:
            self._prepare_lock.release()

    def _close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()


class AsyncSQLCheckpointer(SQLSetup, AsyncSQLOps, BaseAsyncCheckpointer[StateT]):
    """An `AsyncCheckpointer` on a SQLAlchemy `AsyncEngine`; see `SQLCheckpointer`.

    Drivers: psycopg 3 (PostgreSQL), aiosqlite (SQLite), aiomysql (MySQL/MariaDB).

    Args:
        engine: The application's async engine; the checkpointer never disposes it.
        table_name: The checkpoint table (created by the library's migrations).
        schema: The table's schema (PostgreSQL) or database (MySQL), ``None`` for the default.
        auto_migrate: Run the library's migrations on first use instead of raising
            `SchemaNotReadyError`.
        namespace: The constructor's other keywords are those of `SQLCheckpointer`.
        ttl: Time to live of each save.
        state_type: The pydantic model stored.
        max_state_bytes: Largest encoded state accepted.
        clock: Returns the current aware time.
        call_timeout: Seconds one call may take, as in `SQLCheckpointer`.
        keys: Encrypt what is saved, as in `SQLCheckpointer`.
        upcasters: Migrations of older schema versions of the state, run on load.

    Raises:
        ConfigurationError: ``engine`` is not an `AsyncEngine`, or a name is not valid.
    """

    _asynchronous = True

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
        auto_migrate: bool = False,
        namespace: str = DEFAULT_NAMESPACE,
        ttl: float | timedelta | None = None,
        state_type: type[StateT] | None = None,
        max_state_bytes: int | None = None,
        clock: Clock | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        keys: KeyProvider | None = None,
        upcasters: Upcasters | None = None,
    ) -> None:
        super().__init__(
            namespace=namespace,
            ttl=ttl,
            state_type=state_type,
            max_state_bytes=max_state_bytes,
            clock=clock,
            keys=keys,
            upcasters=upcasters,
        )
        self._attach(engine, table_name, schema, auto_migrate)
        self._engine = engine
        self._runner = runner(engine, self._table)
        self._budget = Budget(call_timeout, engine, asynchronous=self._asynchronous)
        self._prepare_lock = asyncio.Lock()

    @classmethod
    def from_url(
        cls,
        url: str | URL,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        pool_timeout: float | None = None,
        connect_timeout: float | None = None,
        busy_timeout: float | None = None,
        ping_idle_after: float | None = PING_IDLE_AFTER,
        engine_options: dict[str, Any] | None = None,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
        auto_migrate: bool = False,
        namespace: str = DEFAULT_NAMESPACE,
        ttl: float | timedelta | None = None,
        state_type: type[StateT] | None = None,
        max_state_bytes: int | None = None,
        clock: Clock | None = None,
        keys: KeyProvider | None = None,
        upcasters: Upcasters | None = None,
    ) -> Self:
        """Create and own an async engine for ``url``; see `SQLCheckpointer.from_url`.

        Plain URLs get the async drivers this library ships: psycopg 3 for ``postgresql://``,
        aiomysql for ``mysql://`` and ``mariadb://``, aiosqlite for ``sqlite:///path``. The
        keywords (``keys`` and ``upcasters`` included) are those of `SQLCheckpointer.from_url`.
        """
        return cls._from_url(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            call_timeout=call_timeout,
            pool_timeout=pool_timeout,
            connect_timeout=connect_timeout,
            busy_timeout=busy_timeout,
            ping_idle_after=ping_idle_after,
            engine_options=engine_options,
            table_name=table_name,
            schema=schema,
            auto_migrate=auto_migrate,
            namespace=namespace,
            ttl=ttl,
            state_type=state_type,
            max_state_bytes=max_state_bytes,
            clock=clock,
            keys=keys,
            upcasters=upcasters,
        )

    @property
    def engine(self) -> AsyncEngine:
        """The async engine this checkpointer runs on."""
        return self._engine

    def using(self, target: AsyncSession | AsyncConnection) -> AsyncBoundSQLCheckpointer[StateT]:
        """This checkpointer inside the caller's transaction; see `SQLCheckpointer.using`.

        Args:
            target: The caller's `AsyncSession` or `AsyncConnection`.

        Raises:
            ConfigurationError: ``target`` is neither.
        """
        return AsyncBoundSQLCheckpointer(self, target)

    async def _run(
        self,
        action: str,
        thread_id: str | None,
        op: _Op[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        with (
            translate_errors(self._table.not_ready, thread_id, action=action),
            self._budget.call(action) as call,
        ):
            async with call.limit():
                if not self._table.ready:
                    await self._prepare(call)
                async with self._admission.admit(action), self._runner.connect() as conn:
                    with call.watching(conn.sync_connection):  # type: ignore[arg-type]
                        return await conn.run_sync(
                            op, self._table.statements, self.namespace, True, *args, **kwargs
                        )

    async def _prepare(self, call: Call) -> None:
        async with asyncio.timeout(call.remaining()):  # TimeoutError: CallTimeoutError
            await self._prepare_lock.acquire()
        try:
            if not self._table.ready:
                # Migrations (auto_migrate) may rightly wait on locks: only a check is watched.
                auto = self._table.auto_migrate
                async with self._engine.connect() as conn:
                    with call.watching(conn.sync_connection, enabled=not auto):  # type: ignore[arg-type]
                        await conn.run_sync(self._table.prepare)
                self._table.ready = True
        finally:
            self._prepare_lock.release()

    async def _close(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()
