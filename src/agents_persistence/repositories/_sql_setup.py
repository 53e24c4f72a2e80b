"""The SQL store's set-up, shared by both twins.

The table binding and its readiness, the engines ``from_url`` makes and how they are tuned.
No I/O until a checkpointer first connects.
"""

from __future__ import annotations

# First, before any driver: without the extra this raises MissingExtraError naming it.
from agents_persistence.repositories import _sql_extra  # noqa: F401

# isort: split

import dataclasses
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agents_persistence._core import MAX_REMEMBERED
from agents_persistence._extras import DRIVER_EXTRAS, missing_extra
from agents_persistence.errors import ConfigurationError, SchemaNotReadyError
from agents_persistence.migrations._settings import version_table
from agents_persistence.models.sql import checkpoint_table

from . import _sql_ops as ops
from ._call_budget import validate_call_timeout
from ._fair import (
    NO_ADMISSION,
    PATIENCE,
    Admission,
    FairGate,
    pool_capacity,
    sqlite_writer_gate,
)
from ._sql_deadline import bounded_timeouts, ping_guard
from ._sql_engine import (
    engine_options as build_engine_options,
)
from ._sql_engine import (
    lock_isolation_preset,
    ping_when_idle,
    schema_not_ready,
    sqlite_tuning,
    to_async_url,
    to_sync_url,
)
from ._sql_pool import reset_when_needed
from ._sql_statements import Statements, statements

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import URL

    from agents_persistence._core import Core, Record


__all__ = ["SQLSetup", "Table", "runner"]


class Pieced:
    """The threads whose state, when last read or written here, had pieces (the recent ones).

    A load of such a thread reads head and pieces in one statement at once; any other thread
    is read head first (`_sql_ops.read`). Only a guess: either way the load is exact.
    """

    __slots__ = ("_lock", "_threads")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[str, None] = {}

    def likely(self, thread_id: str) -> bool:
        """Whether the thread's state had pieces when last seen."""
        return thread_id in self._threads

    def note(self, thread_id: str, record: Record | None) -> None:
        """Remember what ``record`` (just read or written; ``None``: absent) says."""
        pieces = record is not None and record.manifest is not None and record.manifest.pieced
        if not pieces and thread_id not in self._threads:
            return  # nothing to forget (a guess only: a racing note may be missed)
        with self._lock:
            threads = self._threads
            if not pieces:
                threads.pop(thread_id, None)
                return
            threads.pop(thread_id, None)
            threads[thread_id] = None
            if len(threads) > MAX_REMEMBERED:
                del threads[next(iter(threads))]


class Table:
    """Where a checkpointer's rows live, and whether that table is known to be ready.

    Shared by both twins; holds no connection.
    """

    __slots__ = (
        "auto_migrate",
        "encrypts",
        "pieced",
        "ready",
        "schema",
        "statements",
        "table_name",
        "url",
        "whole",
    )

    def __init__(
        self,
        dialect_name: str,
        url: URL,
        table_name: str,
        schema: str | None,
        auto_migrate: bool,
        encrypts: bool = False,
    ) -> None:
        checkpoint_table(table_name, schema)  # validates both names
        version_table(table_name)  # and the length its migrations can name
        self.table_name = table_name
        self.schema = schema
        self.auto_migrate = bool(auto_migrate)
        self.statements = statements(table_name, schema, dialect_name)
        self.url = url.render_as_string(hide_password=True)
        self.ready = False
        self.whole = False
        self.encrypts = encrypts
        self.pieced = Pieced()

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
        whole = ops.shared_whole(conn, self.table_name, self.schema)
        if conn.in_transaction():
            conn.rollback()
        if whole:
            self._refuse_keys()
            self.whole = True
            self.statements = dataclasses.replace(self.statements, whole=True)

    def _refuse_keys(self) -> None:
        """A table whose states another service reads whole cannot hold sealed ones."""
        if self.encrypts:
            qualified = (
                self.table_name if self.schema is None else f"{self.schema}.{self.table_name}"
            )
            raise ConfigurationError(
                f"table {qualified!r} is shared with the Rust service, which reads each state"
                " whole from its state column (adopted with adopt_rust_table): a checkpointer"
                " with keys= cannot encrypt there. Use it without keys, or copy the threads to"
                " a table of the library's own (agents-persistence copy) and encrypt that one."
            )

    def check_joined(self, conn: Connection) -> Statements:
        """`prepare` in the caller's transaction: reads only, never migrates, ends nothing.

        Returns the statements for the dialect of ``conn`` (the caller's connection may come
        from another engine than this checkpointer's, on the same database).
        """
        if not self.ready:
            problem = ops.schema_problem(conn, self.table_name, self.schema, owned=False)
            if problem is not None:
                raise SchemaNotReadyError(self.not_ready(problem))
            whole = ops.shared_whole(conn, self.table_name, self.schema)
            if whole:
                self._refuse_keys()
            self.whole = whole
            self.ready = True
        return statements(self.table_name, self.schema, conn.dialect.name, self.whole)


def _engine_args(
    url: str | URL,
    *,
    asynchronous: bool,
    pool_size: int,
    max_overflow: int,
    pool_timeout: float | None,
    connect_timeout: float | None,
    busy_timeout: float | None,
    call_timeout: float,
    extra: dict[str, Any] | None,
) -> tuple[URL, dict[str, Any]]:
    target = to_async_url(url) if asynchronous else to_sync_url(url)
    pool_wait, connect_wait, busy_wait = bounded_timeouts(
        call_timeout, pool_timeout, connect_timeout, busy_timeout
    )
    options = build_engine_options(
        target,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_wait,
        connect_timeout=connect_wait,
        busy_timeout=busy_wait,
        call_timeout=call_timeout,
        extra=extra,
    )
    return target, options


@contextmanager
def _engine_creation(target: URL) -> Iterator[None]:
    shown = target.render_as_string(hide_password=True)
    try:
        yield
    except ImportError as exc:
        extra = DRIVER_EXTRAS.get((exc.name or "").partition(".")[0])
        if extra is not None:  # a driver this library's extras install
            raise missing_extra(f"the SQL store for {shown}", extra, exc.name) from exc
        raise ConfigurationError(f"cannot create an engine for {shown}: {exc}") from exc
    except (ArgumentError, TypeError) as exc:
        raise ConfigurationError(f"cannot create an engine for {shown}: {exc}") from exc


def _tune(
    engine: Engine,
    target: URL,
    ping_idle_after: float | None,
    call_timeout: float,
    options: dict[str, Any],
) -> None:
    if options.get("pool_reset_on_return", "rollback") is None:
        reset_when_needed(engine)
    if target.get_backend_name() == "sqlite":
        # In-process: nothing goes stale between calls, there is nothing to ping.
        if target.database not in (None, "", ":memory:"):
            sqlite_tuning(engine, wal=True)
    elif ping_idle_after is not None:
        ping_when_idle(engine, ping_idle_after, ping_guard(call_timeout))


def _admission(target: URL, args: dict[str, Any], budget: float | None = None) -> Admission:
    """First come, first served waiting for an engine ``from_url`` made (see `_fair`).

    A gate sized to the pool (``pool_size + max_overflow``, waits bounded by ``pool_timeout``,
    or by ``budget``, the call's time budget, when that is shorter: `CallTimeoutError`) and, on
    an SQLite file, the process's single-writer gate of that file (waits bounded by the busy
    timeout).
    """
    capacity = pool_capacity(args)
    timeout = args.get("pool_timeout", 30.0)
    pool = None
    if capacity is not None:
        pool = FairGate(capacity, timeout, patience=PATIENCE, budget=budget)
    writer = None
    if target.get_backend_name() == "sqlite" and target.database not in (None, "", ":memory:"):
        busy = args.get("connect_args", {}).get("timeout")
        writer = sqlite_writer_gate(target.database, busy)
    return Admission(pool, writer)


_E = TypeVar("_E", Engine, AsyncEngine)

SHOWN_ISOLATION = "READ COMMITTED"
"""The isolation of ``engine`` on a PostgreSQL checkpointer made by ``from_url`` (see
`_autocommit_engine`): PostgreSQL's default level."""


def _speed_options(target: URL, args: dict[str, Any]) -> bool:
    """Engine choices of ``from_url`` made for speed, set in ``args`` unless the caller chose.

    On a server, no unconditional rollback on return to the pool (`reset_when_needed`, which
    `_tune` registers, rolls back when a transaction is open; SQLite's in-process rollback
    costs less than the event that would skip it). Returns `_autocommit_engine`.
    """
    if target.get_backend_name() != "sqlite":
        args.setdefault("pool_reset_on_return", None)
    return _autocommit_engine(target, args)


def _autocommit_engine(target: URL, args: dict[str, Any]) -> bool:
    """Whether ``from_url`` creates its PostgreSQL engine in AUTOCOMMIT (and sets ``args``).

    Every operation of the store is one statement there (`runner`). Switching a pooled
    connection to AUTOCOMMIT and back at each checkout costs SQLAlchemy and psycopg about 40 µs
    of CPU per call; an engine created in AUTOCOMMIT does it once per connection. The
    checkpointer then shows the application (``engine``, and the schema check or migration
    on first use) a view of that engine at `SHOWN_ISOLATION`, so transactions there stay
    transactions. Not when ``engine_options`` chose an isolation level.
    """
    if target.get_backend_name() != "postgresql" or "isolation_level" in args:
        return False
    args["isolation_level"] = "AUTOCOMMIT"
    return True


def runner(engine: _E, table: Table) -> _E:
    """What operations connect through: autocommit where every operation is one statement."""
    if table.statements.autocommit:
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


class SQLSetup:
    """Construction and engine ownership shared by both twins."""

    _otel_store = "sql"

    _asynchronous: ClassVar[bool]
    _table: Table
    _core: Core[Any]
    _owns_engine: bool
    _admission: Admission = NO_ADMISSION

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
        self._table = Table(
            engine.dialect.name,
            engine.url,
            table_name,
            schema,
            auto_migrate,
            encrypts=self._core.codec.encrypts,
        )
        self._owns_engine = False

    @classmethod
    def _from_url(
        cls,
        url: str | URL,
        *,
        pool_size: int,
        max_overflow: int,
        pool_timeout: float | None,
        connect_timeout: float | None,
        busy_timeout: float | None,
        ping_idle_after: float | None,
        engine_options: dict[str, Any] | None,
        call_timeout: float,
        **options: Any,
    ) -> Self:
        """`from_url` of both twins; ``options`` are the constructor's, named by its caller."""
        call_timeout = validate_call_timeout(call_timeout)
        target, args = _engine_args(
            url,
            asynchronous=cls._asynchronous,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            connect_timeout=connect_timeout,
            busy_timeout=busy_timeout,
            call_timeout=call_timeout,
            extra=engine_options,
        )
        if ping_idle_after == 0:
            args.setdefault("pool_pre_ping", True)
        if args.get("pool_pre_ping"):
            ping_idle_after = None  # the pool pings every checkout already
        autocommit = _speed_options(target, args)
        engine: Engine | AsyncEngine
        with _engine_creation(target):
            if cls._asynchronous:
                engine = create_async_engine(target, **args)
            else:
                engine = create_engine(target, **args)
        sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        _tune(sync_engine, target, ping_idle_after, call_timeout, args)
        shown = engine.execution_options(isolation_level=SHOWN_ISOLATION) if autocommit else engine
        try:
            checkpointer = cls(shown, call_timeout=call_timeout, **options)  # type: ignore[call-arg]
        except BaseException:
            # Nothing was connected yet: dropping the pool needs no event loop.
            sync_engine.dispose(close=False)
            raise
        if autocommit:
            # Already AUTOCOMMIT: no switch per checkout (each twin sets `_runner` in __init__).
            checkpointer._runner = engine  # type: ignore[attr-defined]
        checkpointer._owns_engine = True
        checkpointer._admission = _admission(target, args, call_timeout)
        if lock_isolation_preset(target, args):
            checkpointer._table.isolation_preset()
        return checkpointer

    @property
    def table_name(self) -> str:
        """The checkpoint table's name."""
        return self._table.table_name
