"""The Redis store: redis-om hash records, sorted-set indexes, Lua scripts for atomic writes.

Runs on plain Redis 7 and Valkey (no RediSearch, no RedisJSON) and on Redis Cluster. A thread is
one hash whose key carries the namespace as a cluster hash tag; two sorted sets per namespace
list threads by ``updated_at`` and find expired ones. Every write, delete, listing and purge is
one Lua script over keys of a single slot, so a record, its index entries and its TTL always
change together. See ``docs/redis.md`` for the key layout, TTL semantics and sizing.

Both twins are thin drivers of the plans in `agents_persistence.repositories._redis_ops`.
"""

from __future__ import annotations

# First, before any driver: without the extra this raises MissingExtraError naming it.
from agents_persistence.repositories import _redis_extra  # noqa: F401

# isort: split

import asyncio
import os
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.client import NEVER_DECODE
from redis.exceptions import NoScriptError

from agents_persistence._core import DEFAULT_NAMESPACE
from agents_persistence.base import BaseAsyncCheckpointer, BaseCheckpointer
from agents_persistence.contract import StateT
from agents_persistence.errors import ConfigurationError
from agents_persistence.models.redis import (
    DEFAULT_KEY_PREFIX,
    CheckpointHash,
    KeyLayout,
    checkpoint_model,
    validate_key_prefix,
)
from agents_persistence.repositories._call_budget import deadline, require, validate_call_timeout
from agents_persistence.repositories._redis_client import open_async_client, open_client
from agents_persistence.repositories._redis_mapping import RecordMapping
from agents_persistence.repositories._redis_ops import Call, Plan, RedisOps, translate_errors

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from datetime import datetime, timedelta

    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

    from agents_persistence._codec import Codec
    from agents_persistence._core import Clock, Record, WriteRequest
    from agents_persistence._keys import KeyProvider
    from agents_persistence.upcasting import Upcasters

__all__ = ["AsyncRedisCheckpointer", "RedisCheckpointer"]

T = TypeVar("T")

_RAW = {NEVER_DECODE: True}
"""Replies undecoded whatever the client's ``decode_responses``: pieces may be compressed."""


def _client_options(named: dict[str, Any], more: Mapping[str, Any] | None) -> dict[str, Any]:
    """The client keywords of ``from_url``: its named ones plus ``client_options``."""
    extra = dict(more or {})
    clash = sorted(set(extra) & set(named))
    if clash:
        raise ConfigurationError(
            f"pass {', '.join(clash)} as from_url's own keyword, not in client_options"
        )
    return {**named, **extra}


def _bind(namespace: str, key_prefix: str, codec: Codec) -> RedisOps:
    """The plans of one namespace: the record mapping is shared, the keys are the namespace's."""
    layout = KeyLayout.of(
        checkpoint_model(key_prefix, namespace), key_prefix=key_prefix, namespace=namespace
    )
    return RedisOps(RecordMapping.of(CheckpointHash), layout, codec)


def _call_timeout(value: float | None) -> float | None:
    return None if value is None else validate_call_timeout(value)


class RedisCheckpointer(BaseCheckpointer[StateT]):
    """Redis `Checkpointer` on a `redis.Redis` or `redis.cluster.RedisCluster` client.

    Args:
        client: The client to use; it is never closed by the checkpointer. Responses may be
            decoded or not (``decode_responses``), the store reads both.
        namespace: Isolates this checkpointer's threads; also the cluster hash tag, so one
            namespace lives in one slot.
        ttl: Time to live applied on each save (seconds or a timedelta, at least 1 second);
            ``None`` keeps threads until deleted.
        state_type: The pydantic model stored; `AgentStateSnapshot` by default.
        max_state_bytes: Largest encoded state accepted (32 MiB by default).
        clock: Returns the current aware time (tests move it by hand).
        key_prefix: First part of every key, ``agents_persistence`` by default.
        call_timeout: Seconds one call may take in all; ``None`` (the default here) leaves
            the bound to your client's own timeouts and retries. With a number, a call that
            needs another round trip past it raises `CallTimeoutError` (a blocking read
            itself is bounded only by the client's ``socket_timeout``). `from_url` sets one
            and derives the client's timeouts from it.
        keys: A key provider (`agents_persistence.encryption`): saves are encrypted at rest
            under its active key, the head sealed in the ``state`` field and every piece
            sealed (see docs/security.md); ``None`` stores them in clear. Records stored in
            clear keep loading with keys; a sealed one read without keys raises
            `DecryptionError`. Listing, TTL and purges never need keys.
        upcasters: Upgrade functions for records written at older schema versions of
            ``state_type`` (`agents_persistence.upcasting`).

    Example:
        >>> import redis
        >>> cp = RedisCheckpointer(redis.Redis(), namespace="support-bot", ttl=86400)
    """

    _otel_store = "redis"

    def __init__(
        self,
        client: redis.Redis[Any] | redis.cluster.RedisCluster[Any],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        ttl: float | timedelta | None = None,
        state_type: type[StateT] | None = None,
        max_state_bytes: int | None = None,
        clock: Clock | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        call_timeout: float | None = None,
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
        self._key_prefix = validate_key_prefix(key_prefix)
        self._ops = _bind(self.namespace, self._key_prefix, self._core.codec)
        # Typed loosely on purpose: the types-redis stubs redis-om installs predate redis-py 5.
        self._client: Any = cast("Any", client)
        self._owned_close: Callable[[], None] | None = None
        self._call_timeout = _call_timeout(call_timeout)
        self._reply_seconds = 0.0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        ttl: float | timedelta | None = None,
        state_type: type[StateT] | None = None,
        max_state_bytes: int | None = None,
        clock: Clock | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        call_timeout: float | None = None,
        max_connections: int = 50,
        pool_timeout: float | None = None,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
        retries: int = 3,
        client_options: Mapping[str, Any] | None = None,
        keys: KeyProvider | None = None,
        upcasters: Upcasters | None = None,
    ) -> Self:
        """Open a checkpointer that owns its connection pool (closed by `close`).

        Nothing connects before the first call, so an unreachable server raises
        `BackendUnavailableError` from that call, not from here.

        Args:
            url: ``redis://host:port/db``, ``rediss://`` (TLS), ``redis+cluster://host:port`` or
                ``rediss+cluster://host:port``; redis-py query options are honoured.
            namespace: Isolates this checkpointer's threads (see the constructor).
            ttl: Time to live applied on each save; ``None`` keeps threads until deleted.
            state_type: The pydantic model stored; `AgentStateSnapshot` by default.
            max_state_bytes: Largest encoded state accepted (32 MiB by default).
            clock: Returns the current aware time (tests move it by hand).
            key_prefix: First part of every key.
            call_timeout: Seconds one call may take in all: pool wait, connecting, replies
                and retries (``None``: the URL's ``call_timeout``, else
                `agents_persistence.errors.DEFAULT_CALL_TIMEOUT`, 5 s). Past it the call
                raises `CallTimeoutError`.
            max_connections: Pool size (per node on a cluster).
            pool_timeout: Seconds a call waits for a free pooled connection.
            socket_timeout: Seconds a command waits for its reply.
            socket_connect_timeout: Seconds a connection attempt waits.
            retries: Most reconnection attempts per command, with exponential backoff (50 ms
                doubling up to 0.5 s), after a timeout or a dropped connection; each starts
                only if its backoff, a reconnection and a reply still fit in ``call_timeout``.
            client_options: Other redis-py client keywords, such as ``ssl_ca_certs`` or
                ``username`` and ``password``.
            keys: A key provider: saves are encrypted at rest (see the constructor).
            upcasters: Upgrade functions for older schema versions (see the constructor).

        The three timeouts (keywords, else the URL's query options, else derived) add up to
        at most ``call_timeout``; those not given share what the others leave, 40 % pool
        wait, 20 % connect, 40 % reply (2 s, 1 s and 2 s of the default 5 s). See
        ``docs/redis.md``, "Time budget".

        Raises:
            ConfigurationError: the URL or an option is invalid, or the timeouts given exceed
                ``call_timeout``.
        """
        options = _client_options(
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
            checkpointer = cls(
                client,
                namespace=namespace,
                ttl=ttl,
                state_type=state_type,
                max_state_bytes=max_state_bytes,
                clock=clock,
                key_prefix=key_prefix,
                call_timeout=limits.call_timeout,
                keys=keys,
                upcasters=upcasters,
            )
        except BaseException:
            close()
            raise
        checkpointer._owned_close = close
        checkpointer._reply_seconds = limits.socket_timeout
        return checkpointer

    @property
    def key_prefix(self) -> str:
        """First part of every key this checkpointer uses."""
        return self._key_prefix

    def _execute(self, call: Call) -> Any:
        run = self._client.execute_command
        script = call.script
        try:
            return run("EVALSHA", script.sha, len(call.keys), *call.keys, *call.args, **_RAW)
        except NoScriptError:
            return run("EVAL", script.source, len(call.keys), *call.keys, *call.args, **_RAW)

    def _run(self, plan: Plan[T], *, per_round_trip: bool = False) -> T:
        """Drive ``plan`` within one ``call_timeout`` (or one per round trip, for purges)."""
        budget, each = (None, self._call_timeout) if per_round_trip else (self._call_timeout, None)
        with translate_errors(), deadline(budget):
            try:
                call = next(plan)
                while True:
                    with deadline(each):
                        reply = self._execute(call)
                    call = plan.send(reply)
                    # Another round trip starts only while a reply wait still fits.
                    require(self._reply_seconds, "another round trip to Redis")
            except StopIteration as done:
                return cast("T", done.value)
            finally:
                plan.close()

    def _write(self, request: WriteRequest) -> Record:
        return self._run(self._ops.write(request, os.urandom(16).hex(), self._core.now()))

    def _read(self, thread_id: str, now: datetime) -> Record | None:
        return self._run(self._ops.read(thread_id, now))

    def _remove(self, thread_id: str, now: datetime) -> bool:
        return self._run(self._ops.remove(thread_id, now))

    def _page(self, count: int, after: tuple[datetime, str] | None, now: datetime) -> list[Record]:
        return self._run(self._ops.page(count, after, now))

    def _purge(self, now: datetime) -> int:
        # Each batch removed stays removed: a long backlog gets a budget per batch.
        return self._run(self._ops.purge(now), per_round_trip=True)

    def _close(self) -> None:
        if self._owned_close is not None:
            with translate_errors():
                self._owned_close()


class AsyncRedisCheckpointer(BaseAsyncCheckpointer[StateT]):
    """Redis `AsyncCheckpointer` on a `redis.asyncio.Redis` or asyncio `RedisCluster` client.

    The same arguments, storage and semantics as `RedisCheckpointer`; both can share data.
    ``call_timeout`` is a hard bound here, with your own client too: the call is cancelled
    when it runs out (redis-py then drops the connection it was using).
    """

    _otel_store = "redis"

    def __init__(
        self,
        client: redis.asyncio.Redis[Any] | redis.asyncio.cluster.RedisCluster[Any],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        ttl: float | timedelta | None = None,
        state_type: type[StateT] | None = None,
        max_state_bytes: int | None = None,
        clock: Clock | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        call_timeout: float | None = None,
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
        self._key_prefix = validate_key_prefix(key_prefix)
        self._ops = _bind(self.namespace, self._key_prefix, self._core.codec)
        # Typed loosely on purpose: the types-redis stubs redis-om installs predate redis-py 5.
        self._client: Any = cast("Any", client)
        self._owned_close: Callable[[], Awaitable[None]] | None = None
        self._call_timeout = _call_timeout(call_timeout)
        self._discover: Callable[[], Awaitable[object]] | None = (
            self._client.initialize if isinstance(client, AsyncRedisCluster) else None
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        ttl: float | timedelta | None = None,
        state_type: type[StateT] | None = None,
        max_state_bytes: int | None = None,
        clock: Clock | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        call_timeout: float | None = None,
        max_connections: int = 50,
        pool_timeout: float | None = None,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
        retries: int = 3,
        client_options: Mapping[str, Any] | None = None,
        keys: KeyProvider | None = None,
        upcasters: Upcasters | None = None,
    ) -> Self:
        """Open a checkpointer that owns its connection pool; see `RedisCheckpointer.from_url`."""
        options = _client_options(
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
        checkpointer = cls(
            client,
            namespace=namespace,
            ttl=ttl,
            state_type=state_type,
            max_state_bytes=max_state_bytes,
            clock=clock,
            key_prefix=key_prefix,
            call_timeout=limits.call_timeout,
            keys=keys,
            upcasters=upcasters,
        )
        checkpointer._owned_close = close
        return checkpointer

    @property
    def key_prefix(self) -> str:
        """First part of every key this checkpointer uses."""
        return self._key_prefix

    async def _execute(self, call: Call) -> Any:
        run = self._client.execute_command
        script = call.script
        try:
            return await run("EVALSHA", script.sha, len(call.keys), *call.keys, *call.args, **_RAW)
        except NoScriptError:
            return await run("EVAL", script.source, len(call.keys), *call.keys, *call.args, **_RAW)

    async def _run(self, plan: Plan[T], *, per_round_trip: bool = False) -> T:
        """Drive ``plan`` within one ``call_timeout`` (or one per round trip, for purges).

        The budget is a hard bound here: `asyncio.timeout` cancels the call when it runs out
        (its `TimeoutError` becomes `CallTimeoutError`); the deadline keeps retries within it.
        """
        budget, each = (None, self._call_timeout) if per_round_trip else (self._call_timeout, None)
        with translate_errors(), deadline(budget, hard=True):
            async with asyncio.timeout(budget):
                return await self._drive(plan, each)

    async def _drive(self, plan: Plan[T], each: float | None) -> T:
        if self._discover is not None:
            # redis-py's asyncio cluster sends commands issued while it (re)discovers the
            # cluster to arbitrary nodes; a burst of MOVED replies then makes it close
            # every connection, failing concurrent calls. Discovering first avoids that;
            # it returns at once when the slot map is already known.
            await self._discover()
        try:
            call = next(plan)
            while True:
                with deadline(each, hard=True):
                    async with asyncio.timeout(each):
                        reply = await self._execute(call)
                call = plan.send(reply)
        except StopIteration as done:
            return cast("T", done.value)
        finally:
            plan.close()

    async def _write(self, request: WriteRequest) -> Record:
        return await self._run(self._ops.write(request, os.urandom(16).hex(), self._core.now()))

    async def _read(self, thread_id: str, now: datetime) -> Record | None:
        return await self._run(self._ops.read(thread_id, now))

    async def _remove(self, thread_id: str, now: datetime) -> bool:
        return await self._run(self._ops.remove(thread_id, now))

    async def _page(
        self, count: int, after: tuple[datetime, str] | None, now: datetime
    ) -> list[Record]:
        return await self._run(self._ops.page(count, after, now))

    async def _purge(self, now: datetime) -> int:
        # Each batch removed stays removed: a long backlog gets a budget per batch.
        return await self._run(self._ops.purge(now), per_round_trip=True)

    async def _close(self) -> None:
        if self._owned_close is not None:
            with translate_errors():
                await self._owned_close()
