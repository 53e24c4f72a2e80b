"""`SQLCheckpointSaver`: LangGraph's ``BaseCheckpointSaver`` on a synchronous SQLAlchemy engine."""

from __future__ import annotations

import copy
import itertools
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

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
    drive,
    no_pickle,
    owned_saver,
    page_counts,
    retry_after,
)
from agents_persistence.langgraph._threaded import ThreadedSaver
from agents_persistence.models.sql import DEFAULT_TABLE_NAME
from agents_persistence.repositories._sql_deadline import Budget, Call, expired
from agents_persistence.repositories._sql_engine import PING_IDLE_AFTER, translate_errors
from agents_persistence.repositories._sql_ops import schema_problem, upgrade_schema

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Sequence
    from datetime import timedelta

    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol
    from sqlalchemy.engine import URL


__all__ = ["SQLCheckpointSaver"]


class SQLCheckpointSaver(ThreadedSaver):
    """LangGraph checkpoints in the library's SQL tables (SQLite, PostgreSQL, MySQL/MariaDB).

    The tables come from the library's Alembic migrations (`setup`, ``agents-persistence db
    upgrade`` or ``alembic upgrade head``), never from ad-hoc DDL. Each call is one transaction
    (on PostgreSQL, ``get_tuple`` and ``put_writes`` are one statement each, run in autocommit).
    The async methods run the sync ones in a worker thread, so the saver also serves
    ``graph.ainvoke``; `AsyncSQLCheckpointSaver` is the native async twin.

    Args:
        engine: A SQLAlchemy `Engine` (left open by `close`; `from_url` makes an owned one).
        table_name: The library's checkpoint table the LangGraph tables are named after
            (``<table>_lg_checkpoints``, ``_lg_blobs``, ``_lg_writes``).
        schema: Their schema (PostgreSQL) or database (MySQL/MariaDB).
        serde: A LangGraph serializer; by default `default_serde` (msgpack with an allowlist).
            Whatever is given is wrapped so that pickle is refused.
        auto_migrate: Run the library's migrations on first use.
        keep_last: Retention: after each ``put``, in its transaction, keep only the newest
            ``keep_last`` checkpoints of that thread and namespace, with their writes, and the
            channel values they use; ``None`` (the default) keeps everything.
        ttl: Seconds (or a timedelta, at least 1 s) a thread lives after its last write
            (``put`` or ``put_writes``, each refreshes it). An expired thread is invisible at
            once to every saver on these tables, a write starts it afresh, and
            ``purge_expired`` deletes the rows. ``None``: no expiry.
        clock: Returns the current aware time (tests); the system's UTC clock by default.
        exclusive_writes: Write ownership: a ``put`` whose parent (the ``checkpoint_id`` of
            its config) is not the thread's latest checkpoint in that namespace raises
            `ThreadForkError` (a `ConflictError`) and writes nothing, instead of forking the
            thread; a ``put`` without a parent passes only on a thread with no checkpoint.
            Checked in the ``put``'s transaction, with the thread's row locked.
        call_timeout: Seconds one call may take in all (waiting for a connection, retries
            after deadlocks and each statement included), as on the SQL store: past it the
            call raises `CallTimeoutError`; a PostgreSQL connection that does not answer is
            cut by the store's watchdog, MySQL/MariaDB and SQLite are bounded by their driver
            timeouts. `from_url` also sets the engine's timeouts from it.

    Raises:
        ConfigurationError: Not a sync engine, invalid names, or a serializer with pickle.
    """

    def __init__(
        self,
        engine: Engine,
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
        if not isinstance(engine, Engine):
            raise ConfigurationError(
                f"SQLCheckpointSaver needs a sqlalchemy Engine, not {type(engine).__name__}"
                " (AsyncSQLCheckpointSaver takes an AsyncEngine)"
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
        self._budget = Budget(call_timeout, engine, asynchronous=False)
        # PostgreSQL: a one-statement read needs no transaction, so no BEGIN and no COMMIT.
        self._reader = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql" and self._binding.plans.single_read
            else None
        )
        self._owns_engine = False
        self._ready_lock = threading.Lock()

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
        """Create and own an engine for ``url`` (as `SQLCheckpointer.from_url`); `close` ends it.

        Plain URLs get the drivers the library ships: psycopg 3 for ``postgresql://``, PyMySQL
        for ``mysql://`` and ``mariadb://``, the standard library for ``sqlite:///path``.
        """
        options = {k: v for k, v in locals().items() if k not in ("cls", "url")}
        saver: Self = owned_saver(cls, url, asynchronous=False, options=options)
        return saver

    # --- life cycle ----------------------------------------------------------------------

    def setup(self) -> None:
        """Create or upgrade the tables with the library's migrations (Alembic), then check them."""
        binding = self._binding
        with translate_errors(binding.not_ready, action="setup"), self._engine.connect() as conn:
            upgrade_schema(conn, binding.table_name, binding.schema)
        binding.ready = False
        with self._budget.call("schema check") as call:
            self._ensure_ready(call)

    def close(self) -> None:
        """Dispose of the engine if `from_url` made it."""
        if self._owns_engine:
            self._engine.dispose()

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> Self:
        """A shallow copy whose serializer also revives ``extra_allowlist`` (LangGraph API)."""
        serde = self.serde.with_msgpack_allowlist(extra_allowlist)  # type: ignore[attr-defined]
        clone = copy.copy(self)
        clone.serde = serde
        clone._binding = self._binding.with_serde(serde)
        clone._owns_engine = False
        return clone

    def _ensure_ready(self, call: Call) -> None:
        binding = self._binding
        if binding.ready:
            return
        if not self._ready_lock.acquire(timeout=call.remaining()):
            raise TimeoutError("waiting for another call's schema check")  # CallTimeoutError
        try:
            if binding.ready:
                return
            # Migrations (auto_migrate) may rightly wait on locks: only a check is watched.
            with (
                translate_errors(binding.not_ready, action="schema check"),
                self._engine.connect() as conn,
                call.watching(conn, enabled=not binding.auto_migrate),
            ):
                if binding.auto_migrate:
                    upgrade_schema(conn, binding.table_name, binding.schema)
                problem = schema_problem(conn, binding.table_name, binding.schema)
            if problem is not None:
                raise SchemaNotReadyError(binding.not_ready(problem))
            binding.ready = True
        finally:
            self._ready_lock.release()

    def _run(
        self, plan: Plan, action: str, thread_id: str | None, *, one_statement: bool = False
    ) -> Any:
        """Run a fresh ``plan()`` in one transaction, again when a deadlock ended it.

        With ``one_statement`` (a plan that reads in one statement, but for rare fallbacks
        that need no snapshot shared with it), a PostgreSQL plan runs in autocommit instead.

        The whole call, retries included, runs within ``call_timeout``: the SQL store's
        watchdog cuts a PostgreSQL connection that does not answer by then.
        """
        with (
            translate_errors(self._binding.not_ready, thread_id, action=action),
            self._budget.call(action) as call,
        ):
            self._ensure_ready(call)
            reader = self._reader if one_statement else None
            for attempt in itertools.count(1):
                try:
                    if reader is not None:
                        with reader.connect() as conn, call.watching(conn):
                            return drive(plan(), conn)
                    with self._engine.connect() as conn, call.watching(conn), conn.begin():
                        return drive(plan(), conn)
                except DBAPIError as exc:
                    if expired() or not retry_after(exc, attempt, thread_id):
                        raise
                time.sleep(min(backoff(attempt), call.remaining()))
        raise AssertionError("unreachable")  # pragma: no cover

    # --- the saver API -------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (or its thread's latest), with values and writes."""
        plan = partial(self._binding.plans.get_tuple, config)
        result: CheckpointTuple | None = self._run(
            plan, "load", _thread(config), one_statement=True
        )
        return result

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of a thread (and namespace) if ``config`` names them.

        ``filter`` keeps the checkpoints whose metadata has each given key equal to the given
        value; ``before`` keeps those older than its checkpoint; ``limit`` caps the count. Pages
        of rows are read one transaction each, as the iteration proceeds.
        """
        plans = self._binding.plans
        remaining = limit
        count = page_counts(limit, bool(filter))
        after = None
        while remaining is None or remaining > 0:
            page = partial(plans.list_page, config, filter, before, after, count(remaining or 0))
            tuples, after = self._run(page, "list", _thread(config))
            yield from tuples[:remaining]
            if remaining is not None:
                remaining -= min(remaining, len(tuples))
            if after is None:
                return

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store ``checkpoint`` (with the values of ``new_versions``); return its config."""
        plan = partial(self._binding.plans.put, config, checkpoint, metadata, new_versions)
        stored: RunnableConfig = self._run(plan, "save", _thread(config))
        return stored

    def put_writes(
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
            if self._run(at_once, "save", _thread(config), one_statement=True):
                return
        plan = partial(plans.put_writes, config, writes, task_id, task_path)
        self._run(plan, "save", _thread(config))

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, value and write of ``thread_id``, in all namespaces."""
        self._run(partial(self._binding.plans.delete_threads, [thread_id]), "delete", thread_id)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints made by ``run_ids`` and their writes."""
        self._run(partial(self._binding.plans.delete_for_runs, run_ids), "delete", None)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, value and write of one thread to a thread that has none."""
        plan = partial(self._binding.plans.copy_thread, source_thread_id, target_thread_id)
        self._run(plan, "copy", target_thread_id)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``"keep_latest"``: keep each namespace's newest checkpoint; ``"delete"``: delete all."""
        self._run(_prune_plan(self._binding, thread_ids, strategy), "prune", None)

    def purge_expired(self) -> int:
        """Delete the rows of every expired thread, a batch per transaction; the thread count."""
        plans = self._binding.plans
        total = 0
        while True:
            deleted: int = self._run(partial(plans.purge_expired, plans.clock()), "purge", None)
            total += deleted
            if deleted < PURGE_BATCH:
                return total


def _thread(config: RunnableConfig | None) -> str | None:
    thread_id = ((config or {}).get("configurable") or {}).get("thread_id")
    return thread_id if isinstance(thread_id, str) else None


def _prune_plan(binding: Binding, thread_ids: Sequence[str], strategy: str) -> Plan:
    if strategy == "keep_latest":
        return partial(binding.plans.keep_latest, thread_ids, 1)
    if strategy == "delete":
        return partial(binding.plans.delete_threads, thread_ids)
    raise InvalidArgumentError(
        f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'"
    )
