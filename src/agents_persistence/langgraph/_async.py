"""`AsyncSQLCheckpointSaver`: LangGraph's ``BaseCheckpointSaver`` on an async SQLAlchemy engine."""

from __future__ import annotations

import asyncio
import copy
import itertools
from functools import partial
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from agents_persistence._core import Clock  # noqa: TC001 - a constructor annotation
from agents_persistence.errors import (
    DEFAULT_CALL_TIMEOUT,
    ConfigurationError,
    InvalidArgumentError,
    SchemaNotReadyError,
)
from agents_persistence.langgraph._maintenance import PURGE_BATCH
from agents_persistence.langgraph._setup import (
    Binding,
    Plan,
    backoff,
    drive_async,
    no_pickle,
    owned_saver,
    page_counts,
    retry_after,
)
from agents_persistence.langgraph._threaded import LoopSaver
from agents_persistence.models.sql import DEFAULT_TABLE_NAME
from agents_persistence.repositories._sql_deadline import Budget, Call, expired
from agents_persistence.repositories._sql_engine import PING_IDLE_AFTER, translate_errors
from agents_persistence.repositories._sql_ops import schema_problem, upgrade_schema

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Sequence
    from datetime import timedelta

    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol
    from sqlalchemy import Connection
    from sqlalchemy.engine import URL


__all__ = ["AsyncSQLCheckpointSaver"]


class AsyncSQLCheckpointSaver(LoopSaver):
    """The asyncio twin of `SQLCheckpointSaver`, on an `AsyncEngine` (same tables, same rows).

    The sync methods serve LangGraph's sync entry points called from another thread while the
    saver's event loop runs (as LangGraph's own async savers do); called on the loop's thread
    they would block it, and raise `ConfigurationError` instead.

    Args:
        engine: A SQLAlchemy `AsyncEngine` (aiosqlite, psycopg 3 async, aiomysql).
        table_name: The library's checkpoint table the LangGraph tables are named after.
        schema: Their schema (PostgreSQL) or database (MySQL/MariaDB).
        serde: A LangGraph serializer, wrapped to refuse pickle; `default_serde` by default.
        auto_migrate: Run the library's migrations on first use.
        keep_last: Retention: after each ``put``, in its transaction, keep only the newest
            ``keep_last`` checkpoints of that thread and namespace, with their writes, and the
            channel values they use; ``None`` (the default) keeps everything.
        ttl: Seconds (or a timedelta, at least 1 s) a thread lives after its last write
            (``put`` or ``put_writes``, each refreshes it). An expired thread is invisible at
            once to every saver on these tables, a write starts it afresh, and
            ``purge_expired`` deletes the rows. ``None``: no expiry.
        clock: Returns the current aware time (tests); the system's UTC clock by default.
        exclusive_writes: Write ownership, as on `SQLCheckpointSaver`: a ``put`` that would
            fork the thread raises `ThreadForkError` and writes nothing.
        call_timeout: Seconds one call may take in all, as on `SQLCheckpointSaver`
            (aiomysql calls run under an asyncio timeout of it).

    Raises:
        ConfigurationError: Not an async engine, invalid names, or a serializer with pickle.
    """

    sync_twin = "SQLCheckpointSaver"

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
        serde: SerializerProtocol | None = None,
        auto_migrate: bool = False,
        keep_last: int | None = None,
        ttl: float | timedelta | None = None,
        clock: Clock | None = None,
        exclusive_writes: bool = False,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        if not isinstance(engine, AsyncEngine):
            raise ConfigurationError(
                f"AsyncSQLCheckpointSaver needs a sqlalchemy AsyncEngine, not"
                f" {type(engine).__name__} (SQLCheckpointSaver takes an Engine)"
            )
        super().__init__(serde=no_pickle(serde))
        self._engine = engine
        self._binding = Binding(
            engine,
            table_name,
            schema,
            self.serde,
            auto_migrate,
            keep_last,
            ttl,
            clock,
            exclusive_writes,
        )
        self._budget = Budget(call_timeout, engine, asynchronous=True)
        # PostgreSQL: a one-statement plan needs no transaction, so no BEGIN and no COMMIT.
        self._reader = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql" and self._binding.plans.single_read
            else None
        )
        self._owns_engine = False
        self._ready_lock = asyncio.Lock()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    @classmethod
    def from_url(
        cls,
        url: str | URL,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_timeout: float | None = None,
        connect_timeout: float | None = None,
        busy_timeout: float | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        ping_idle_after: float | None = PING_IDLE_AFTER,
        engine_options: dict[str, Any] | None = None,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
        serde: SerializerProtocol | None = None,
        auto_migrate: bool = False,
        keep_last: int | None = None,
        ttl: float | timedelta | None = None,
        clock: Clock | None = None,
        exclusive_writes: bool = False,
    ) -> Self:
        """Create and own an async engine for ``url``; see `SQLCheckpointSaver.from_url`.

        Plain URLs get the async drivers the library ships: psycopg 3 for ``postgresql://``,
        aiomysql for ``mysql://`` and ``mariadb://``, aiosqlite for ``sqlite:///path``.
        """
        options = {k: v for k, v in locals().items() if k not in ("cls", "url")}
        saver: Self = owned_saver(cls, url, asynchronous=True, options=options)
        return saver

    # --- life cycle ----------------------------------------------------------------------

    async def asetup(self) -> None:
        """Create or upgrade the tables with the library's migrations (Alembic), then check them."""
        binding = self._binding

        def migrate(conn: Connection) -> None:
            upgrade_schema(conn, binding.table_name, binding.schema)

        with translate_errors(binding.not_ready, action="setup"):
            async with self._engine.connect() as conn:
                await conn.run_sync(migrate)
        binding.ready = False
        with self._budget.call("schema check") as call:
            await self._ensure_ready(call)

    async def aclose(self) -> None:
        """Dispose of the engine if `from_url` made it."""
        if self._owns_engine:
            await self._engine.dispose()

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> Self:
        """A shallow copy whose serializer also revives ``extra_allowlist`` (LangGraph API)."""
        serde = self.serde.with_msgpack_allowlist(extra_allowlist)  # type: ignore[attr-defined]
        clone = copy.copy(self)
        clone.serde = serde
        clone._binding = self._binding.with_serde(serde)
        clone._owns_engine = False
        return clone

    async def _ensure_ready(self, call: Call) -> None:
        binding = self._binding
        if binding.ready:
            return
        async with asyncio.timeout(call.remaining()):  # TimeoutError: CallTimeoutError
            await self._ready_lock.acquire()
        try:
            if binding.ready:
                return

            def check(conn: Connection) -> str | None:
                if binding.auto_migrate:
                    upgrade_schema(conn, binding.table_name, binding.schema)
                return schema_problem(conn, binding.table_name, binding.schema)

            # Migrations (auto_migrate) may rightly wait on locks: only a check is watched.
            with translate_errors(binding.not_ready, action="schema check"):
                async with self._engine.connect() as conn:
                    sync_conn: Any = conn.sync_connection
                    with call.watching(sync_conn, enabled=not binding.auto_migrate):
                        problem = await conn.run_sync(check)
            if problem is not None:
                raise SchemaNotReadyError(binding.not_ready(problem))
            binding.ready = True
        finally:
            self._ready_lock.release()

    async def _run(
        self, plan: Plan, action: str, thread_id: str | None, *, one_statement: bool = False
    ) -> Any:
        """Run a fresh ``plan()`` in one transaction, again when a deadlock ended it.

        With ``one_statement``, a PostgreSQL plan runs in autocommit instead (see
        `SQLCheckpointSaver._run`).

        The whole call, retries included, runs within ``call_timeout`` (see
        `SQLCheckpointSaver`; aiomysql calls under an asyncio timeout).
        """
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        with (
            translate_errors(self._binding.not_ready, thread_id, action=action),
            self._budget.call(action) as call,
        ):
            async with call.limit():
                await self._ensure_ready(call)
                reader = self._reader if one_statement else None
                engine = reader or self._engine
                for attempt in itertools.count(1):
                    try:
                        async with engine.connect() as conn:
                            sync_conn: Any = conn.sync_connection
                            with call.watching(sync_conn):
                                if reader is not None:
                                    return await drive_async(plan(), conn)
                                async with conn.begin():
                                    return await drive_async(plan(), conn)
                    except DBAPIError as exc:
                        if expired() or not retry_after(exc, attempt, thread_id):
                            raise
                    await asyncio.sleep(min(backoff(attempt), call.remaining()))
        raise AssertionError("unreachable")  # pragma: no cover

    # --- the saver API -------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (or its thread's latest), with values and writes."""
        plan = partial(self._binding.plans.get_tuple, config)
        result: CheckpointTuple | None = await self._run(
            plan, "load", _thread(config), one_statement=True
        )
        return result

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first, as `SQLCheckpointSaver.list`."""
        plans = self._binding.plans
        remaining = limit
        count = page_counts(limit, bool(filter))
        after = None
        while remaining is None or remaining > 0:
            page = partial(plans.list_page, config, filter, before, after, count(remaining or 0))
            tuples, after = await self._run(page, "list", _thread(config))
            for item in tuples[:remaining]:
                yield item
            if remaining is not None:
                remaining -= min(remaining, len(tuples))
            if after is None:
                return

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store ``checkpoint`` (with the values of ``new_versions``); return its config."""
        plan = partial(self._binding.plans.put, config, checkpoint, metadata, new_versions)
        stored: RunnableConfig = await self._run(plan, "save", _thread(config))
        return stored

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes against the checkpoint ``config`` names."""
        plans = self._binding.plans
        if self._reader is not None and plans.writes_at_once:
            at_once = partial(plans.put_writes_at_once, config, writes, task_id, task_path)
            if await self._run(at_once, "save", _thread(config), one_statement=True):
                return
        plan = partial(plans.put_writes, config, writes, task_id, task_path)
        await self._run(plan, "save", _thread(config))

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, value and write of ``thread_id``, in all namespaces."""
        await self._run(
            partial(self._binding.plans.delete_threads, [thread_id]), "delete", thread_id
        )

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints made by ``run_ids`` and their writes."""
        await self._run(partial(self._binding.plans.delete_for_runs, run_ids), "delete", None)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, value and write of one thread to a thread that has none."""
        plan = partial(self._binding.plans.copy_thread, source_thread_id, target_thread_id)
        await self._run(plan, "copy", target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``"keep_latest"``: keep each namespace's newest checkpoint; ``"delete"``: delete all."""
        if strategy == "keep_latest":
            plan = partial(self._binding.plans.keep_latest, thread_ids, 1)
        elif strategy == "delete":
            plan = partial(self._binding.plans.delete_threads, thread_ids)
        else:
            raise InvalidArgumentError(
                f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'"
            )
        await self._run(plan, "prune", None)

    async def apurge_expired(self) -> int:
        """Delete the rows of every expired thread, a batch per transaction; the thread count."""
        plans = self._binding.plans
        total = 0
        while True:
            deleted: int = await self._run(
                partial(plans.purge_expired, plans.clock()), "purge", None
            )
            total += deleted
            if deleted < PURGE_BATCH:
                return total


def _thread(config: RunnableConfig | None) -> str | None:
    thread_id = ((config or {}).get("configurable") or {}).get("thread_id")
    return thread_id if isinstance(thread_id, str) else None
