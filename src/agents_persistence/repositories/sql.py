"""The SQL store: agent checkpoints in one table, on PostgreSQL, SQLite or MySQL/MariaDB.

`SQLCheckpointer` works on a SQLAlchemy `Engine`, `AsyncSQLCheckpointer` on an `AsyncEngine`.
Both run the same Core statements (`_sql_statements`) through the same operations (`_sql_ops`):
the async twin hands them to ``AsyncConnection.run_sync``. The schema belongs to the library's
Alembic migrations; a checkpointer never runs DDL unless created with ``auto_migrate=True``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, ParamSpec, Self, TypeVar

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agents_persistence.base import BaseAsyncCheckpointer, BaseCheckpointer
from agents_persistence.contract import StateT
from agents_persistence.errors import ConfigurationError, SchemaNotReadyError
from agents_persistence.migrations._settings import version_table
from agents_persistence.models.sql import DEFAULT_TABLE_NAME, checkpoint_table

from . import _sql_ops as ops
from ._sql_engine import (
    engine_options as build_engine_options,
)
from ._sql_engine import (
    lock_isolation_preset,
    schema_not_ready,
    sqlite_tuning,
    to_async_url,
    to_sync_url,
    translate_errors,
)
from ._sql_statements import Statements, statements

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.engine import URL

    from agents_persistence._core import Record, WriteRequest

__all__ = ["AsyncSQLCheckpointer", "SQLCheckpointer"]

P = ParamSpec("P")
T = TypeVar("T")
_Op = Callable[Concatenate[Connection, Statements, str, P], T]


class _Table:
    """Where a checkpointer's rows live, and whether that table is known to be ready.

    Shared by both twins; holds no connection.
    """

    __slots__ = ("auto_migrate", "ready", "schema", "statements", "table_name", "url")

    def __init__(
        self,
        dialect_name: str,
        url: URL,
        table_name: str,
        schema: str | None,
        auto_migrate: bool,
    ) -> None:
        checkpoint_table(table_name, schema)  # validates both names
        version_table(table_name)  # and the length its migrations can name
        self.table_name = table_name
        self.schema = schema
        self.auto_migrate = bool(auto_migrate)
        self.statements = statements(table_name, schema, dialect_name)
        self.url = url.render_as_string(hide_password=True)
        self.ready = False

    def isolation_preset(self) -> None:
        """The engine sets READ COMMITTED per connection: no ``SET TRANSACTION`` per write."""
        if self.statements.lock_isolation is not None:
            self.statements = dataclasses.replace(self.statements, lock_isolation=None)

    def not_ready(self, problem: str) -> str:
        return schema_not_ready(problem, self.url, self.table_name, self.schema)

    def prepare(self, conn: Connection) -> None:
        """Check (after migrating, with ``auto_migrate``) that the table is at head."""
        if self.auto_migrate:
            ops.upgrade_schema(conn, self.table_name, self.schema)
        problem = ops.schema_problem(conn, self.table_name, self.schema)
        if problem is not None:
            raise SchemaNotReadyError(self.not_ready(problem))


def _engine_args(
    url: str | URL,
    *,
    asynchronous: bool,
    pool_size: int,
    max_overflow: int,
    pool_timeout: float,
    connect_timeout: float,
    busy_timeout: float,
    extra: dict[str, Any] | None,
) -> tuple[URL, dict[str, Any]]:
    target = to_async_url(url) if asynchronous else to_sync_url(url)
    options = build_engine_options(
        target,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        connect_timeout=connect_timeout,
        busy_timeout=busy_timeout,
        extra=extra,
    )
    return target, options


@contextmanager
def _engine_creation(target: URL) -> Iterator[None]:
    try:
        yield
    except (ArgumentError, ImportError, TypeError) as exc:
        shown = target.render_as_string(hide_password=True)
        raise ConfigurationError(f"cannot create an engine for {shown}: {exc}") from exc


def _tune(engine: Engine, target: URL) -> None:
    if target.get_backend_name() == "sqlite" and target.database not in (None, "", ":memory:"):
        sqlite_tuning(engine, wal=True)


_E = TypeVar("_E", Engine, AsyncEngine)


def _runner(engine: _E, table: _Table) -> _E:
    """What operations connect through: autocommit where every operation is one statement."""
    if table.statements.autocommit:
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


class _SQLSetup:
    """Construction and engine ownership shared by both twins."""

    _otel_store = "sql"

    _asynchronous: ClassVar[bool]
    _table: _Table
    _owns_engine: bool

    def _attach(
        self,
        engine: Engine | AsyncEngine,
        table_name: str,
        schema: str | None,
        auto_migrate: bool,
    ) -> None:
        expected, other = (AsyncEngine, Engine) if self._asynchronous else (Engine, AsyncEngine)
        if not isinstance(engine, expected):
            raise ConfigurationError(
                f"{type(self).__name__} needs a sqlalchemy {expected.__name__}, not"
                f" {type(engine).__name__} (the other twin takes an {other.__name__})"
            )
        self._table = _Table(engine.dialect.name, engine.url, table_name, schema, auto_migrate)
        self._owns_engine = False

    @classmethod
    def from_url(
        cls,
        url: str | URL,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        busy_timeout: float = 30.0,
        auto_migrate: bool = False,
        engine_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> Self:
        """Create and own an engine for ``url``; `close` disposes it.

        Plain URLs get the drivers this library ships: ``postgresql://`` uses psycopg 3,
        ``mysql://`` and ``mariadb://`` PyMySQL (aiomysql for the async twin),
        ``sqlite:///path`` the standard library (aiosqlite for the async twin).

        Args:
            url: The database URL.
            pool_size: Connections kept open in the pool.
            max_overflow: Extra connections opened under load.
            pool_timeout: Seconds to wait for a free connection.
            connect_timeout: Seconds to wait for the server when connecting.
            busy_timeout: SQLite only: seconds a writer waits for another to finish.
            auto_migrate: Run the library's migrations on first use.
            engine_options: More ``create_engine`` keyword arguments (they win).
            **options: ``table_name``, ``schema`` and the common checkpointer options.
        """
        target, args = _engine_args(
            url,
            asynchronous=cls._asynchronous,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            connect_timeout=connect_timeout,
            busy_timeout=busy_timeout,
            extra=engine_options,
        )
        engine: Engine | AsyncEngine
        with _engine_creation(target):
            if cls._asynchronous:
                engine = create_async_engine(target, **args)
            else:
                engine = create_engine(target, **args)
        sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        _tune(sync_engine, target)
        try:
            checkpointer = cls(engine, auto_migrate=auto_migrate, **options)  # type: ignore[call-arg]
        except BaseException:
            # Nothing was connected yet: dropping the pool needs no event loop.
            sync_engine.dispose(close=False)
            raise
        checkpointer._owns_engine = True
        if lock_isolation_preset(target, args):
            checkpointer._table.isolation_preset()
        return checkpointer

    @property
    def table_name(self) -> str:
        """The checkpoint table's name."""
        return self._table.table_name


class SQLCheckpointer(_SQLSetup, BaseCheckpointer[StateT]):
    """A `Checkpointer` on a SQLAlchemy `Engine` (PostgreSQL, SQLite, MySQL/MariaDB).

    Args:
        engine: The application's engine; the checkpointer never disposes it.
        table_name: The checkpoint table (created by the library's migrations).
        schema: The table's schema (PostgreSQL) or database (MySQL), ``None`` for the default.
        auto_migrate: Run the library's migrations on first use instead of raising
            `SchemaNotReadyError` (meant for the embedded SQLite default).
        **options: ``namespace``, ``ttl``, ``state_type``, ``max_state_bytes``, ``clock``.

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
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._attach(engine, table_name, schema, auto_migrate)
        self._engine = engine
        self._runner = _runner(engine, self._table)
        self._prepare_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The engine this checkpointer runs on."""
        return self._engine

    def _run(
        self,
        action: str,
        thread_id: str | None,
        op: _Op[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        with translate_errors(self._table.not_ready, thread_id, action=action):
            if not self._table.ready:
                self._prepare()
            with self._runner.connect() as conn:
                return op(conn, self._table.statements, self.namespace, *args, **kwargs)

    def _prepare(self) -> None:
        with self._prepare_lock:
            if not self._table.ready:
                with self._engine.connect() as conn:
                    self._table.prepare(conn)
                self._table.ready = True

    def _write(self, request: WriteRequest) -> Record:
        return self._run("save", request.thread_id, ops.write, request)

    def _read(self, thread_id: str, now: datetime) -> Record | None:
        return self._run("load", thread_id, ops.read, thread_id, now)

    def _remove(self, thread_id: str, now: datetime) -> bool:
        return self._run("delete", thread_id, ops.remove, thread_id, now)

    def _page(self, count: int, after: tuple[datetime, str] | None, now: datetime) -> list[Record]:
        return self._run("listing", None, ops.page, count, after, now)

    def _purge(self, now: datetime) -> int:
        return self._run("purge", None, ops.purge, now)

    def _close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()


class AsyncSQLCheckpointer(_SQLSetup, BaseAsyncCheckpointer[StateT]):
    """An `AsyncCheckpointer` on a SQLAlchemy `AsyncEngine`; see `SQLCheckpointer`.

    Drivers: psycopg 3 (PostgreSQL), aiosqlite (SQLite), aiomysql (MySQL/MariaDB).

    Args:
        engine: The application's async engine; the checkpointer never disposes it.
        table_name: The checkpoint table (created by the library's migrations).
        schema: The table's schema (PostgreSQL) or database (MySQL), ``None`` for the default.
        auto_migrate: Run the library's migrations on first use instead of raising
            `SchemaNotReadyError`.
        **options: ``namespace``, ``ttl``, ``state_type``, ``max_state_bytes``, ``clock``.

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
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._attach(engine, table_name, schema, auto_migrate)
        self._engine = engine
        self._runner = _runner(engine, self._table)
        self._prepare_lock = asyncio.Lock()

    @property
    def engine(self) -> AsyncEngine:
        """The async engine this checkpointer runs on."""
        return self._engine

    async def _run(
        self,
        action: str,
        thread_id: str | None,
        op: _Op[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        with translate_errors(self._table.not_ready, thread_id, action=action):
            if not self._table.ready:
                await self._prepare()
            async with self._runner.connect() as conn:
                return await conn.run_sync(
                    op, self._table.statements, self.namespace, *args, **kwargs
                )

    async def _prepare(self) -> None:
        async with self._prepare_lock:
            if not self._table.ready:
                async with self._engine.connect() as conn:
                    await conn.run_sync(self._table.prepare)
                self._table.ready = True

    async def _write(self, request: WriteRequest) -> Record:
        return await self._run("save", request.thread_id, ops.write, request)

    async def _read(self, thread_id: str, now: datetime) -> Record | None:
        return await self._run("load", thread_id, ops.read, thread_id, now)

    async def _remove(self, thread_id: str, now: datetime) -> bool:
        return await self._run("delete", thread_id, ops.remove, thread_id, now)

    async def _page(
        self, count: int, after: tuple[datetime, str] | None, now: datetime
    ) -> list[Record]:
        return await self._run("listing", None, ops.page, count, after, now)

    async def _purge(self, now: datetime) -> int:
        return await self._run("purge", None, ops.purge, now)

    async def _close(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()
