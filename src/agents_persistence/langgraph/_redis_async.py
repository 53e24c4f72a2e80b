"""`AsyncRedisCheckpointSaver`: the asyncio twin of `RedisCheckpointSaver`, on the same keys."""

from __future__ import annotations

# First, before any dependency: without the extras this raises MissingExtraError naming them.
from agents_persistence.langgraph import _redis_common as common

# isort: split

import asyncio
import copy
from typing import TYPE_CHECKING, Any, Self, cast

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import NoScriptError

from agents_persistence.langgraph._redis_plans import Call, Plan, matches
from agents_persistence.langgraph._threaded import LoopSaver
from agents_persistence.models.redis import DEFAULT_KEY_PREFIX
from agents_persistence.repositories._call_budget import deadline
from agents_persistence.repositories._redis_client import open_async_client
from agents_persistence.repositories._redis_errors import translate_errors

if TYPE_CHECKING:
    from collections.abc import (
        AsyncIterator,
        Awaitable,
        Callable,
        Collection,
        Mapping,
        Sequence,
    )
    from datetime import timedelta

    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol

__all__ = ["AsyncRedisCheckpointSaver"]


class AsyncRedisCheckpointSaver(LoopSaver):
    """The asyncio twin of `RedisCheckpointSaver`: the same arguments, keys and semantics.

    Takes a `redis.asyncio.Redis` or asyncio `RedisCluster` client (``decode_responses``
    off). ``call_timeout`` is a hard bound here: the call is cancelled when it runs out. The
    sync methods run the coroutines on the saver's event loop from another thread (as
    LangGraph's async savers do).
    """

    sync_twin = "RedisCheckpointSaver"

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
        self._owned_close: Callable[[], Awaitable[None]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._discover: Callable[[], Awaitable[object]] | None = (
            client.initialize if isinstance(client, AsyncRedisCluster) else None
        )

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
        """Open a saver that owns its connection pool; see `RedisCheckpointSaver.from_url`."""
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
            client, close, limits = open_async_client(url, options)
        # Nothing is connected before the first call, so a refused option leaks nothing here.
        saver = cls(
            client,
            key_prefix=key_prefix,
            serde=serde,
            keep_last=keep_last,
            ttl=ttl,
            call_timeout=limits.call_timeout,
            exclusive_writes=exclusive_writes,
        )
        saver._owned_close = close
        return saver

    # --- life cycle ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pool if `from_url` opened it."""
        if self._owned_close is not None:
            with translate_errors():
                await self._owned_close()

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> Self:
        """A shallow copy whose serializer also revives ``extra_allowlist`` (LangGraph API)."""
        serde = self.serde.with_msgpack_allowlist(extra_allowlist)  # type: ignore[attr-defined]
        clone = copy.copy(self)
        clone.serde = serde
        clone._plans = copy.copy(self._plans)
        clone._plans.serde = serde
        clone._owned_close = None
        return clone

    async def _execute(self, call: Any) -> Any:
        if not isinstance(call, Call):
            return [key async for key in self._client.scan_iter(match=call.pattern, count=1000)]
        script, keys = call.script, call.keys
        try:
            return await self._client.evalsha(script.sha, len(keys), *keys, *call.args)
        except NoScriptError:
            return await self._client.eval(script.source, len(keys), *keys, *call.args)

    async def _run(self, plan: Plan) -> Any:
        """Drive ``plan`` within one ``call_timeout``, cancelled when it runs out."""
        self._loop = asyncio.get_running_loop()
        budget = self._call_timeout
        with translate_errors(), deadline(budget, hard=True):
            async with asyncio.timeout(budget):
                if self._discover is not None:
                    # As the Redis store: discover the slots first, so that commands are not
                    # sent to arbitrary nodes while the asyncio cluster discovers them.
                    await self._discover()
                try:
                    call = next(plan)
                    while True:
                        call = plan.send(await self._execute(call))
                except StopIteration as done:
                    return done.value
                finally:
                    plan.close()

    # --- the saver API -------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (or its thread's latest), with values and writes."""
        return cast("CheckpointTuple | None", await self._run(self._plans.get_tuple(config)))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first; see `RedisCheckpointSaver.list`."""
        thread_id, namespace, checkpoint_id, before_id = common.list_scope(config, before)
        if thread_id is not None:
            async for item in self._thread_list(
                thread_id, namespace, checkpoint_id, before_id, filter, limit
            ):
                yield item
            return
        found: list[CheckpointTuple] = []
        for thread in await self._run(self._plans.threads()):
            found += [
                item
                async for item in self._thread_list(
                    thread, namespace, checkpoint_id, before_id, filter, limit
                )
            ]
        for item in common.newest_first(found, limit):
            yield item

    async def _thread_list(
        self,
        thread_id: str,
        namespace: str | None,
        checkpoint_id: str | None,
        before_id: str | None,
        wanted: dict[str, Any] | None,
        limit: int | None,
    ) -> AsyncIterator[CheckpointTuple]:
        remaining, after = limit, None
        while remaining is None or remaining > 0:
            count = common.row_count(limit, bool(wanted), remaining)
            page = self._plans.page(thread_id, namespace, checkpoint_id, before_id, after, count)
            tuples, after = await self._run(page)
            kept = [t for t in tuples if matches(t.metadata, wanted)][:remaining]
            for item in kept:
                yield item
            if remaining is not None:
                remaining -= len(kept)
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
        plan = self._plans.put(config, checkpoint, metadata, new_versions)
        return cast("RunnableConfig", await self._run(plan))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes against the checkpoint ``config`` names."""
        await self._run(self._plans.put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, value and write of ``thread_id``, in all namespaces."""
        await self._run(self._plans.delete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints made by ``run_ids`` and their writes (scanning the threads)."""
        await self._run(self._plans.delete_for_runs(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, value and write of one thread to a thread that has none."""
        await self._run(self._plans.copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``"keep_latest"``: keep each namespace's newest checkpoint; ``"delete"``: delete all."""
        keep = common.prune_keep(strategy)
        for thread_id in thread_ids:
            if keep is None:
                await self.adelete_thread(thread_id)
            else:
                await self._run(self._plans.keep_latest([thread_id], keep))
