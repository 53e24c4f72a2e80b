"""`RedisCheckpointSaver`: LangGraph's ``BaseCheckpointSaver`` on Redis 7 without modules."""

from __future__ import annotations

# First, before any dependency: without the extras this raises MissingExtraError naming them.
from agents_persistence.langgraph import _redis_common as common

# isort: split

import copy
from typing import TYPE_CHECKING, Any, Self, cast

from redis.exceptions import NoScriptError

from agents_persistence.langgraph._redis_plans import Call, Plan, matches
from agents_persistence.langgraph._threaded import ThreadedSaver
from agents_persistence.models.redis import DEFAULT_KEY_PREFIX
from agents_persistence.repositories._call_budget import deadline, require
from agents_persistence.repositories._redis_client import open_client
from agents_persistence.repositories._redis_errors import translate_errors

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
    from datetime import timedelta

    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol

__all__ = ["RedisCheckpointSaver"]


class RedisCheckpointSaver(ThreadedSaver):
    """LangGraph checkpoints on Redis 7 or Valkey, without modules, Redis Cluster included.

    A thread is eight keys sharing its cluster hash tag (``<prefix>:lg:{<thread_id>}:...``),
    and every write is one Lua script on them: a checkpoint, its channel values, retention and
    the thread's TTL change together or not at all. Listing one thread reads sorted-set
    indexes a page at a time; listing every thread and ``delete_for_runs`` scan the keys of
    every node. The async methods run the sync ones in a worker thread;
    `AsyncRedisCheckpointSaver` is the native asyncio twin, on the same keys.

    Args:
        client: A `redis.Redis` or `redis.cluster.RedisCluster` opened with
            ``decode_responses=False`` (the default); never closed by the saver.
        key_prefix: First part of every key (``A-Z a-z 0-9 _ . -`` in ``:``-separated parts).
        serde: A LangGraph serializer; by default `default_serde` (msgpack with an allowlist).
            Whatever is given is wrapped so that pickle is refused.
        keep_last: Retention: each ``put`` keeps only the newest ``keep_last`` checkpoints of
            its thread and namespace, with their writes and the values they use; ``None``
            (the default) keeps everything.
        ttl: Seconds (or a timedelta, at least 1 s) a thread lives after its last write
            (``put`` or ``put_writes``, each refreshes it). Redis expires every key of the
            thread at the same instant: an expired thread is invisible at once, and a write
            starts it afresh. ``None``: writes keep the thread's current expiry, if any.
        call_timeout: Seconds one call may take in all; ``None`` leaves the bound to the
            client's own timeouts (`from_url` sets one, 5 s by default).
        exclusive_writes: Write ownership: a ``put`` whose parent (the ``checkpoint_id`` of
            its config) is not the thread's latest checkpoint in that namespace raises
            `ThreadForkError` (a `ConflictError`) and writes nothing, instead of forking the
            thread; a ``put`` without a parent passes only on a thread with no checkpoint.
            Checked inside the ``put`` script.

    Raises:
        ConfigurationError: invalid arguments, a client that decodes replies, or a serializer
            with pickle.
    """

    def __init__(
        self,
        client: Any,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        serde: SerializerProtocol | None = None,
        keep_last: int | None = None,
        ttl: float | timedelta | None = None,
        call_timeout: float | None = None,
        exclusive_writes: bool = False,
    ) -> None:
        common.check_client(client)
        self._plans = common.plans_for(key_prefix, serde, keep_last, ttl, exclusive_writes)
        super().__init__(serde=self._plans.serde)
        self._client = client
        self._call_timeout = common.call_timeout(call_timeout)
        self._reply_seconds = 0.0
        self._owned_close: Callable[[], None] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        serde: SerializerProtocol | None = None,
        keep_last: int | None = None,
        ttl: float | timedelta | None = None,
        call_timeout: float | None = None,
        exclusive_writes: bool = False,
        max_connections: int = 50,
        pool_timeout: float | None = None,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
        retries: int = 3,
        client_options: Mapping[str, Any] | None = None,
    ) -> Self:
        """Open a saver that owns its connection pool (closed by `close`).

        The URL forms, the time budget (``call_timeout`` and the timeouts derived from it)
        and the connection options are those of `RedisCheckpointer.from_url`: ``redis://``,
        ``rediss://``, ``redis+cluster://`` and ``rediss+cluster://``. Nothing connects
        before the first call.

        Raises:
            ConfigurationError: the URL or an option is invalid.
        """
        options = common.client_options(
            {
                "call_timeout": call_timeout,
                "max_connections": max_connections,
                "pool_timeout": pool_timeout,
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": socket_connect_timeout,
                "retries": retries,
            },
            client_options,
        )
        with translate_errors():
            client, close, limits = open_client(url, options)
        try:
            saver = cls(
                client,
                key_prefix=key_prefix,
                serde=serde,
                keep_last=keep_last,
                ttl=ttl,
                call_timeout=limits.call_timeout,
                exclusive_writes=exclusive_writes,
            )
        except BaseException:
            close()
            raise
        saver._owned_close = close
        saver._reply_seconds = limits.socket_timeout
        return saver

    # --- life cycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool if `from_url` opened it."""
        if self._owned_close is not None:
            with translate_errors():
                self._owned_close()

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> Self:
        """A shallow copy whose serializer also revives ``extra_allowlist`` (LangGraph API)."""
        serde = self.serde.with_msgpack_allowlist(extra_allowlist)  # type: ignore[attr-defined]
        clone = copy.copy(self)
        clone.serde = serde
        clone._plans = copy.copy(self._plans)
        clone._plans.serde = serde
        clone._owned_close = None
        return clone

    def _execute(self, call: Any) -> Any:
        if not isinstance(call, Call):
            return list(self._client.scan_iter(match=call.pattern, count=1000))
        script, keys = call.script, call.keys
        try:
            return self._client.evalsha(script.sha, len(keys), *keys, *call.args)
        except NoScriptError:
            return self._client.eval(script.source, len(keys), *keys, *call.args)

    def _run(self, plan: Plan) -> Any:
        """Drive ``plan`` within one ``call_timeout``."""
        with translate_errors(), deadline(self._call_timeout):
            try:
                call = next(plan)
                while True:
                    reply = self._execute(call)
                    call = plan.send(reply)
                    # Another round trip starts only while a reply wait still fits.
                    require(self._reply_seconds, "another round trip to Redis")
            except StopIteration as done:
                return done.value
            finally:
                plan.close()

    # --- the saver API -------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (or its thread's latest), with values and writes."""
        return cast("CheckpointTuple | None", self._run(self._plans.get_tuple(config)))

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
        value; ``before`` keeps those older than its checkpoint; ``limit`` caps the count.
        One thread is read a page per round trip as the iteration proceeds; without a thread,
        a scan finds the threads and each is read up to ``limit``.
        """
        thread_id, namespace, checkpoint_id, before_id = common.list_scope(config, before)
        if thread_id is not None:
            yield from self._thread_list(
                thread_id, namespace, checkpoint_id, before_id, filter, limit
            )
            return
        found: list[CheckpointTuple] = []
        for thread in self._run(self._plans.threads()):
            found += self._thread_list(thread, namespace, checkpoint_id, before_id, filter, limit)
        yield from common.newest_first(found, limit)

    def _thread_list(
        self,
        thread_id: str,
        namespace: str | None,
        checkpoint_id: str | None,
        before_id: str | None,
        wanted: dict[str, Any] | None,
        limit: int | None,
    ) -> Iterator[CheckpointTuple]:
        remaining, after = limit, None
        while remaining is None or remaining > 0:
            count = common.row_count(limit, bool(wanted), remaining)
            page = self._plans.page(thread_id, namespace, checkpoint_id, before_id, after, count)
            tuples, after = self._run(page)
            kept = [t for t in tuples if matches(t.metadata, wanted)][:remaining]
            yield from kept
            if remaining is not None:
                remaining -= len(kept)
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
        plan = self._plans.put(config, checkpoint, metadata, new_versions)
        return cast("RunnableConfig", self._run(plan))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes against the checkpoint ``config`` names."""
        self._run(self._plans.put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, value and write of ``thread_id``, in all namespaces."""
        self._run(self._plans.delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints made by ``run_ids`` and their writes (scanning the threads)."""
        self._run(self._plans.delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, value and write of one thread to a thread that has none."""
        self._run(self._plans.copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``"keep_latest"``: keep each namespace's newest checkpoint; ``"delete"``: delete all."""
        keep = common.prune_keep(strategy)
        for thread_id in thread_ids:
            if keep is None:
                self.delete_thread(thread_id)
            else:
                self._run(self._plans.keep_latest([thread_id], keep))

    # --- async twins: the sync methods in a worker thread ---------------------------------
