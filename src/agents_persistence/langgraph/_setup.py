"""What both SQL savers share: the tables, the serializer, engines made from URLs, plan drivers.

No I/O here except in the drivers, which run a plan on a connection they are given.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agents_persistence._core import Clock, _validate_ttl, utc_now
from agents_persistence._extras import DRIVER_EXTRAS, missing_extra
from agents_persistence.errors import ConfigurationError
from agents_persistence.langgraph._plans import PAGE_SIZE, Plans
from agents_persistence.langgraph._serde import NoPickleSerializer, default_serde
from agents_persistence.langgraph._threaded import check_keep_last
from agents_persistence.migrations._settings import version_table
from agents_persistence.models.langgraph import langgraph_models
from agents_persistence.repositories._call_budget import validate_call_timeout
from agents_persistence.repositories._sql_deadline import ping_guard
from agents_persistence.repositories._sql_engine import (
    driver_code,
    ping_when_idle,
    schema_not_ready,
    sqlite_tuning,
)
from agents_persistence.repositories._sql_setup import _engine_args as engine_args
from agents_persistence.telemetry import note_retry

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator
    from datetime import timedelta

    from langgraph.checkpoint.serde.base import SerializerProtocol
    from sqlalchemy import Connection
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncConnection

    from agents_persistence.langgraph._plans import Step

__all__ = [
    "ATTEMPTS",
    "Binding",
    "Plan",
    "backoff",
    "drive",
    "drive_async",
    "make_engine",
    "owned_saver",
    "no_pickle",
    "page_counts",
    "retry_after",
]

Plan = Callable[[], "Generator[Step, Any, Any]"]
"""Makes a fresh plan: a transaction ended by a deadlock runs the operation again from its start."""

ATTEMPTS = 20
"""Transactions an operation may start when deadlocks keep ending them."""

# PostgreSQL: serialization failure, deadlock. MySQL/MariaDB: deadlock, and MariaDB's "record
# has changed since last read". Each rolls the whole transaction back: running it again is safe.
_CONTENDED_SQLSTATES = frozenset({"40001", "40P01"})
_CONTENDED_MYSQL_CODES = frozenset({1213, 1020})


def no_pickle(serde: SerializerProtocol | None) -> NoPickleSerializer:
    """The saver's serializer: `default_serde`, or ``serde`` wrapped to refuse pickle."""
    if serde is None:
        return default_serde()
    if isinstance(serde, NoPickleSerializer):
        return serde
    return NoPickleSerializer(serde)


class Binding:
    """The tables a saver works on, on the dialect of its engine, and whether they are ready."""

    __slots__ = ("auto_migrate", "plans", "ready", "schema", "table_name", "url")

    def __init__(
        self,
        engine: Engine | AsyncEngine,
        table_name: str,
        schema: str | None,
        serde: SerializerProtocol,
        auto_migrate: bool,
        keep_last: int | None = None,
        ttl: float | timedelta | None = None,
        clock: Clock | None = None,
        exclusive_writes: bool = False,
    ) -> None:
        check_keep_last(keep_last)
        models = langgraph_models(table_name, schema)  # validates both names
        version_table(table_name)  # and the length its migrations can name
        self.table_name = table_name
        self.schema = schema
        self.auto_migrate = bool(auto_migrate)
        self.url = engine.url.render_as_string(hide_password=True)
        self.plans = Plans(
            models,
            engine.dialect.name,
            serde,
            hex_blobs=engine.dialect.driver == "aiomysql",
            keep_last=keep_last,
            ttl=_validate_ttl(ttl),
            clock=clock or utc_now,
            exclusive=bool(exclusive_writes),
        )
        self.ready = False

    def with_serde(self, serde: SerializerProtocol) -> Binding:
        """The same binding with another serializer (for ``with_allowlist``)."""
        clone = Binding.__new__(Binding)
        for name in Binding.__slots__:
            setattr(clone, name, getattr(self, name))
        plans = self.plans
        clone.plans = Plans(
            plans.models,
            plans.dialect,
            serde,
            hex_blobs=plans.hex_blobs,
            keep_last=plans.keep_last,
            ttl=plans.ttl,
            clock=plans.clock,
            exclusive=plans.exclusive,
        )
        return clone

    def not_ready(self, problem: str) -> str:
        """The `SchemaNotReadyError` message for ``problem``."""
        return schema_not_ready(problem, self.url, self.table_name, self.schema)


@contextmanager
def _engine_creation(target: URL) -> Iterator[None]:
    shown = target.render_as_string(hide_password=True)
    try:
        yield
    except ImportError as exc:
        extra = DRIVER_EXTRAS.get((exc.name or "").partition(".")[0])
        if extra is not None:
            raise missing_extra(f"the LangGraph saver for {shown}", extra, exc.name) from exc
        raise ConfigurationError(f"cannot create an engine for {shown}: {exc}") from exc
    except (ArgumentError, TypeError) as exc:
        raise ConfigurationError(f"cannot create an engine for {shown}: {exc}") from exc


def make_engine(
    url: str | URL,
    *,
    asynchronous: bool,
    pool_size: int,
    max_overflow: int,
    pool_timeout: float | None,
    connect_timeout: float | None,
    busy_timeout: float | None,
    call_timeout: float,
    ping_idle_after: float | None,
    extra: dict[str, Any] | None,
) -> Engine | AsyncEngine:
    """An engine for ``url`` with the SQL store's options, drivers and tuning.

    ``call_timeout`` bounds, as on the SQL store, the pool wait, connecting and SQLite's busy
    wait (timeouts left ``None`` take it; larger ones are capped by it) and the server-side
    waits (PostgreSQL's ``statement_timeout``, InnoDB lock waits, PyMySQL's reads and writes).
    The savers' calls also run under the SQL store's watchdog (`Budget`), which cuts a
    PostgreSQL connection that does not answer within the budget; so does the ping of a
    connection idle longer than ``ping_idle_after``.
    """
    call_timeout = validate_call_timeout(call_timeout)
    # The SQL store's URL mapping, drivers and options, with the savers' own tuning below.
    target, options = engine_args(
        url,
        asynchronous=asynchronous,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        connect_timeout=connect_timeout,
        busy_timeout=busy_timeout,
        call_timeout=call_timeout,
        extra=extra,
    )
    if ping_idle_after == 0:
        options.setdefault("pool_pre_ping", True)
    if options.get("pool_pre_ping"):
        ping_idle_after = None
    engine: Engine | AsyncEngine
    with _engine_creation(target):
        engine = (
            create_async_engine(target, **options)
            if asynchronous
            else create_engine(target, **options)
        )
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if target.get_backend_name() == "sqlite":
        if target.database not in (None, "", ":memory:"):
            sqlite_tuning(sync_engine, wal=True)
    elif ping_idle_after is not None:
        ping_when_idle(sync_engine, ping_idle_after, ping_guard(call_timeout))
    return engine


_ENGINE_NAMES = frozenset(
    {
        "pool_size",
        "max_overflow",
        "pool_timeout",
        "connect_timeout",
        "busy_timeout",
        "call_timeout",
        "ping_idle_after",
    }
)


def owned_saver(cls: Any, url: str | URL, *, asynchronous: bool, options: dict[str, Any]) -> Any:
    """`from_url` of both SQL savers: a saver of ``cls`` on an engine of its own for ``url``.

    ``options`` are ``from_url``'s keywords: the engine's (`make_engine`, ``engine_options``
    included) and the constructor's (``call_timeout`` goes to both). The engine is disposed
    of if the constructor refuses an argument.
    """
    engine = make_engine(
        url,
        asynchronous=asynchronous,
        extra=options["engine_options"],
        **{name: options[name] for name in _ENGINE_NAMES},
    )
    arguments = {
        name: value
        for name, value in options.items()
        if name not in _ENGINE_NAMES | {"engine_options"} or name == "call_timeout"
    }
    try:
        saver = cls(engine, **arguments)
    except BaseException:
        if isinstance(engine, AsyncEngine):
            engine.sync_engine.dispose(close=False)
        else:
            engine.dispose()
        raise
    saver._owns_engine = True
    return saver


def page_counts(limit: int | None, filtered: bool) -> Callable[[int], int]:
    """How many rows the next page reads, given how many tuples are still wanted."""

    def count(remaining: int) -> int:
        if filtered or limit is None:
            return PAGE_SIZE
        return max(1, min(remaining, PAGE_SIZE))

    return count


def retry_after(exc: DBAPIError, attempt: int, thread_id: str | None) -> bool:
    """Whether to run the operation again after ``exc`` ended its ``attempt``-th transaction."""
    contended = (
        getattr(exc.orig, "sqlstate", None) in _CONTENDED_SQLSTATES
        or driver_code(exc) in _CONTENDED_MYSQL_CODES
    )
    if not contended or attempt >= ATTEMPTS:
        return False
    note_retry("sql", f"langgraph saver contention (code {driver_code(exc)})", attempt, thread_id)
    return True


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1``: random, growing, at most 50 ms."""
    return random.uniform(0, min(0.05, 0.001 * 2**attempt))


def _outcome(result: Any) -> Any:
    return result.all() if result.returns_rows else result.rowcount


def drive(plan: Generator[Step, Any, Any], conn: Connection) -> Any:
    """Run ``plan`` on ``conn``: execute each statement it yields and send back the outcome."""
    try:
        statement, params = next(plan)
        while True:
            outcome = _outcome(conn.execute(statement, params))
            statement, params = plan.send(outcome)
    except StopIteration as stop:
        return stop.value


async def drive_async(plan: Generator[Step, Any, Any], conn: AsyncConnection) -> Any:
    """`drive` on an `AsyncConnection`."""
    try:
        statement, params = next(plan)
        while True:
            outcome = _outcome(await conn.execute(statement, params))
            statement, params = plan.send(outcome)
    except StopIteration as stop:
        return stop.value
