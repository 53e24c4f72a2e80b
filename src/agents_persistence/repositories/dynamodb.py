"""The DynamoDB store: PynamoDB models, conditional writes, a listing index, TTL.

One partition per thread keyed by namespace and thread id: a head item and the piece items a
save writes only when they changed (tables of earlier versions, one item per thread, keep
working); a global secondary index of heads to list a namespace newest first, DynamoDB's Time
to Live for physical expiry (reads filter expired items themselves, since the service deletes
them late). Nothing is created implicitly: call
`DynamoDBCheckpointer.create_table` once (or deploy the table with CloudFormation or
Terraform, see ``docs/dynamodb.md``).

PynamoDB is synchronous: `AsyncDynamoDBCheckpointer` runs the same calls in a bounded pool of
worker threads, through one helper.
"""

from __future__ import annotations

# First, before any driver: without the extra this raises MissingExtraError naming it.
from agents_persistence.repositories import _dynamodb_extra  # noqa: F401

# isort: split

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from agents_persistence._core import DEFAULT_NAMESPACE, Clock
from agents_persistence.base import BaseAsyncCheckpointer, BaseCheckpointer, _Common
from agents_persistence.contract import StateT
from agents_persistence.errors import DEFAULT_CALL_TIMEOUT, CallTimeoutError, ConfigurationError
from agents_persistence.models.dynamodb import ConnectionSettings
from agents_persistence.repositories._call_budget import deadline
from agents_persistence.repositories._dynamodb_budget import derive_timeouts
from agents_persistence.repositories._dynamodb_mapping import (
    parse_url,
    validate_index_shards,
    validate_table_name,
)
from agents_persistence.repositories._dynamodb_table import DynamoDBTable

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime, timedelta

    from agents_persistence._core import Record, WriteRequest
    from agents_persistence._keys import KeyProvider
    from agents_persistence.upcasting import Upcasters

__all__ = [
    "DEFAULT_MAX_STATE_BYTES",
    "SINGLE_ITEM_MAX_STATE_BYTES",
    "AsyncDynamoDBCheckpointer",
    "DynamoDBCheckpointer",
]

DEFAULT_MAX_STATE_BYTES = 32 * 1024 * 1024
"""Default ``max_state_bytes`` (32 MiB, as every store): a state is cut into items of a table
of the pieces format, so DynamoDB's 400 KB item limit does not bound it."""

SINGLE_ITEM_MAX_STATE_BYTES = 350_000
"""The default limit on a table of the single-item format (earlier versions' tables): safely
below DynamoDB's 400 KB item limit with room for the item's other attributes (a thread id of
up to 1 KB of UTF-8 is part of two keys)."""

DEFAULT_MAX_THREADS = 10
"""Default worker threads of the async twin (and HTTP connections of its client)."""

_T = TypeVar("_T")


def _count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an int of at least {minimum}, got {value!r}")
    return value


class _DynamoDBSetup(_Common[StateT]):
    """Configuration shared by both twins: settings, the table engine, `from_url`."""

    _otel_store = "dynamodb"

    default_max_state_bytes: ClassVar[int] = DEFAULT_MAX_STATE_BYTES

    def __init__(
        self,
        table_name: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_retries: int = 3,
        max_pool_connections: int = 10,
        index_shards: int = 1,
        namespace: str = DEFAULT_NAMESPACE,
        ttl: float | timedelta | None = None,
        state_type: type[StateT] | None = None,
        max_state_bytes: int | None = None,
        clock: Clock | None = None,
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
        if endpoint_url is not None and not endpoint_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"endpoint_url must start with http:// or https://: {endpoint_url!r}"
            )
        if (aws_access_key_id is None) != (aws_secret_access_key is None):
            raise ConfigurationError(
                "give both aws_access_key_id and aws_secret_access_key, or neither"
            )
        budget, connect, read = derive_timeouts(call_timeout, connect_timeout, read_timeout)
        settings = ConnectionSettings(
            table_name=validate_table_name(table_name),
            region=region,
            endpoint_url=endpoint_url,
            connect_timeout=connect,
            read_timeout=read,
            max_retries=_count(max_retries, "max_retries", 0),
            call_timeout=budget,
            max_pool_connections=_count(max_pool_connections, "max_pool_connections", 1),
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
        )
        self._table = DynamoDBTable(
            settings, self.namespace, validate_index_shards(index_shards), codec=self._core.codec
        )
        if max_state_bytes is None:
            self._table.single_item_max_bytes = SINGLE_ITEM_MAX_STATE_BYTES

    @classmethod
    def _from_url(cls, url: str, options: dict[str, Any]) -> Self:
        """`from_url` of both twins: the URL's options, overridden by the keywords not None."""
        parsed = parse_url(url)
        given = {name: value for name, value in options.items() if value is not None}
        return cls(parsed.table_name, **{**parsed.options, **given})

    @property
    def table_name(self) -> str:
        """The DynamoDB table."""
        return self._table.settings.table_name

    @property
    def settings(self) -> ConnectionSettings:
        """Table name, region, endpoint and client settings (credentials hidden from repr)."""
        return self._table.settings

    @property
    def index_shards(self) -> int:
        """How many index partitions each namespace is spread over."""
        return self._table.shards

    def __repr__(self) -> str:
        return f"{type(self).__name__}(table={self.table_name!r}, namespace={self.namespace!r})"


class DynamoDBCheckpointer(_DynamoDBSetup[StateT], BaseCheckpointer[StateT]):
    """`Checkpointer` on a DynamoDB table through PynamoDB.

    Args:
        table_name: The table (create it with `create_table` or your infrastructure code).
        region: AWS region; ``None`` uses the standard configuration.
        endpoint_url: Custom endpoint such as ``http://localhost:4566`` (LocalStack, moto).
        aws_access_key_id: Explicit credentials; ``None`` uses the standard credential chain.
        aws_secret_access_key: Secret of explicit credentials.
        aws_session_token: Token of temporary explicit credentials.
        call_timeout: Seconds one call may take in all, requests, retries and backoff
            included (5 s by default); past it the call raises `CallTimeoutError`.
            `purge_expired` gets it per request.
        connect_timeout: Seconds to wait for a connection (``None``: 20 % of call_timeout).
        read_timeout: Seconds to wait for a response (``None``: 40 % of call_timeout).
            ``connect_timeout + read_timeout`` may not exceed ``call_timeout``.
        max_retries: Most retries after the first attempt (throttling, 5xx, network errors);
            each starts only if its backoff and one more attempt fit in ``call_timeout``.
        max_pool_connections: HTTP connections kept to the endpoint.
        index_shards: Spread each namespace over this many index partitions (1 to 64) for
            namespaces with very many writes per second; listings merge one Query per shard.
            It may be raised later, never lowered.
        namespace: Isolates this checkpointer's threads.
        ttl: Seconds (or timedelta) each save lives; ``None`` keeps threads forever.
        state_type: The pydantic model stored; `AgentStateSnapshot` by default.
        max_state_bytes: Largest encoded state accepted (default 32 MiB; 350,000 on a
            table of the single-item format, which holds a thread in one 400 KB item).
        clock: Returns the current aware time (for tests).
        keys: A key provider (`agents_persistence.encryption.LocalKeyring`, or KMS): saves are
            encrypted at rest under its active key, and sealed threads are read with any key
            it holds (see ``docs/encryption.md``). Needs a table of the pieces format: a table
            of the single-item format raises `ConfigurationError` on first use. ``None``
            stores in clear (and a sealed thread fails to load with `DecryptionError`).
        upcasters: Upgrade functions run on load for records of older schema versions of
            ``state_type`` (see `agents_persistence.upcasting`).
    """

    def __init__(
        self,
        table_name: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_retries: int = 3,
        max_pool_connections: int = 10,
        index_shards: int = 1,
        namespace: str = DEFAULT_NAMESPACE,
        ttl: float | timedelta | None = None,
        state_type: type[StateT] | None = None,
        max_state_bytes: int | None = None,
        clock: Clock | None = None,
        keys: KeyProvider | None = None,
        upcasters: Upcasters | None = None,
    ) -> None:
        super().__init__(
            table_name,
            region=region,
            endpoint_url=endpoint_url,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            call_timeout=call_timeout,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_retries=max_retries,
            max_pool_connections=max_pool_connections,
            index_shards=index_shards,
            namespace=namespace,
            ttl=ttl,
            state_type=state_type,
            max_state_bytes=max_state_bytes,
            clock=clock,
            keys=keys,
            upcasters=upcasters,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        call_timeout: float | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_retries: int | None = None,
        max_pool_connections: int | None = None,
        index_shards: int | None = None,
        namespace: str | None = None,
        ttl: float | timedelta | None = None,
        state_type: type[StateT] | None = None,
        max_state_bytes: int | None = None,
        clock: Clock | None = None,
        keys: KeyProvider | None = None,
        upcasters: Upcasters | None = None,
    ) -> Self:
        """Open a checkpointer from ``dynamodb://TABLE?region=...&endpoint=...``.

        Query keys: ``region``, ``endpoint``, ``call_timeout``, ``connect_timeout``,
        ``read_timeout``, ``retries``, ``index_shards``, ``namespace``, ``ttl``. Each keyword
        takes the constructor's meaning; one left at ``None`` takes the URL's value, else the
        constructor's default. Credentials never go in URLs: pass them here or let the
        standard AWS chain find them.
        """
        return cls._from_url(
            url,
            {
                "region": region,
                "endpoint_url": endpoint_url,
                "aws_access_key_id": aws_access_key_id,
                "aws_secret_access_key": aws_secret_access_key,
                "aws_session_token": aws_session_token,
                "call_timeout": call_timeout,
                "connect_timeout": connect_timeout,
                "read_timeout": read_timeout,
                "max_retries": max_retries,
                "max_pool_connections": max_pool_connections,
                "index_shards": index_shards,
                "namespace": namespace,
                "ttl": ttl,
                "state_type": state_type,
                "max_state_bytes": max_state_bytes,
                "clock": clock,
                "keys": keys,
                "upcasters": upcasters,
            },
        )

    def _write(self, request: WriteRequest) -> Record:
        return self._table.write(request)

    def _read(self, thread_id: str, now: datetime) -> Record | None:
        return self._table.read(thread_id, now)

    def _remove(self, thread_id: str, now: datetime) -> bool:
        return self._table.remove(thread_id, now)

    def _page(self, count: int, after: tuple[datetime, str] | None, now: datetime) -> list[Record]:
        return self._table.page(count, after, now)

    def _purge(self, now: datetime) -> int:
        return self._table.purge(now)

    def _close(self) -> None:
        self._table.close()

    def create_table(self, *, wait: bool = True, table_format: str | None = None) -> bool:
        """Create the table (on-demand billing), its index and its TTL setting if missing.

        Idempotent: an existing table is checked (key schema, index) and its TTL enabled if it
        is not yet.

        Args:
            wait: Return only once the table is active and its TTL enabled.
            table_format: ``"pieces"`` (the default for a new table: a head item plus piece
                items per thread, see ``docs/dynamodb.md``) or ``"single-item"`` (one item
                per thread, as earlier versions made). ``None`` accepts an existing table of
                either format.

        Returns:
            True if the table was created, False if it existed.

        Raises:
            SchemaNotReadyError: The table exists with another key schema or without the index.
            BackendUnavailableError: DynamoDB could not be reached.
        """
        self._open_core()
        return self._table.create_table(wait=wait, table_format=table_format)

    def delete_table(self, *, wait: bool = True) -> bool:
        """Delete the table with every namespace in it; False if it did not exist.

        Args:
            wait: Return only once the table is gone.
        """
        self._open_core()
        return self._table.delete_table(wait=wait)


class AsyncDynamoDBCheckpointer(_DynamoDBSetup[StateT], BaseAsyncCheckpointer[StateT]):
    """`AsyncCheckpointer` on a DynamoDB table: the sync calls in a bounded thread pool.

    Takes the arguments of `DynamoDBCheckpointer`, plus ``max_threads``:

    Args:
        table_name: The table.
        max_threads: Worker threads running PynamoDB calls. Calls beyond it wait their turn.
        max_pool_connections: HTTP connections kept to the endpoint; ``None`` gives
            ``max_threads`` (at least 10).

    A cancelled call stops waiting, but the request already sent by its worker thread runs to
    completion: a cancelled save may still have been stored. ``call_timeout`` counts from the
    call, the wait for a free worker thread included, and is a hard bound on the await; the
    worker's own requests keep within the same deadline.
    """

    def __init__(
        self,
        table_name: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_retries: int = 3,
        max_pool_connections: int | None = None,
        index_shards: int = 1,
        namespace: str = DEFAULT_NAMESPACE,
        ttl: float | timedelta | None = None,
        state_type: type[StateT] | None = None,
        max_state_bytes: int | None = None,
        clock: Clock | None = None,
        keys: KeyProvider | None = None,
        upcasters: Upcasters | None = None,
        max_threads: int = DEFAULT_MAX_THREADS,
    ) -> None:
        _count(max_threads, "max_threads", 1)
        super().__init__(
            table_name,
            region=region,
            endpoint_url=endpoint_url,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            call_timeout=call_timeout,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_retries=max_retries,
            index_shards=index_shards,
            namespace=namespace,
            ttl=ttl,
            state_type=state_type,
            max_state_bytes=max_state_bytes,
            clock=clock,
            keys=keys,
            upcasters=upcasters,
            max_pool_connections=(
                max(max_threads, 10) if max_pool_connections is None else max_pool_connections
            ),
        )
        self._executor = ThreadPoolExecutor(
            max_threads, thread_name_prefix=f"agents-persistence-dynamodb-{self.table_name}"
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        call_timeout: float | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_retries: int | None = None,
        max_pool_connections: int | None = None,
        index_shards: int | None = None,
        namespace: str | None = None,
        ttl: float | timedelta | None = None,
        state_type: type[StateT] | None = None,
        max_state_bytes: int | None = None,
        clock: Clock | None = None,
        keys: KeyProvider | None = None,
        upcasters: Upcasters | None = None,
        max_threads: int | None = None,
    ) -> Self:
        """Open from a ``dynamodb://`` URL; see `DynamoDBCheckpointer.from_url`."""
        return cls._from_url(
            url,
            {
                "region": region,
                "endpoint_url": endpoint_url,
                "aws_access_key_id": aws_access_key_id,
                "aws_secret_access_key": aws_secret_access_key,
                "aws_session_token": aws_session_token,
                "call_timeout": call_timeout,
                "connect_timeout": connect_timeout,
                "read_timeout": read_timeout,
                "max_retries": max_retries,
                "max_pool_connections": max_pool_connections,
                "index_shards": index_shards,
                "namespace": namespace,
                "ttl": ttl,
                "state_type": state_type,
                "max_state_bytes": max_state_bytes,
                "clock": clock,
                "keys": keys,
                "upcasters": upcasters,
                "max_threads": max_threads,
            },
        )

    async def _call(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run one blocking PynamoDB call in the worker pool: the only bridge to threads."""
        loop = asyncio.get_running_loop()
        # In the caller's context, as `asyncio.to_thread` does: the current span stays the parent
        # and the call's deadline, set here, holds in the worker too.
        call = partial(contextvars.copy_context().run, function, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    async def _bounded(self, function: Callable[..., _T], *args: Any) -> _T:
        """`_call` within ``call_timeout``, the wait for a worker included."""
        budget = self._table.settings.call_timeout
        scope = asyncio.timeout(budget)
        with deadline(budget, hard=True):
            try:
                async with scope:
                    return await self._call(function, *args)
            except TimeoutError as exc:
                if not scope.expired():
                    raise
                raise CallTimeoutError(
                    f"DynamoDB did not answer within call_timeout={budget:g} s"
                ) from exc

    async def _write(self, request: WriteRequest) -> Record:
        return await self._bounded(self._table.write, request)

    async def _read(self, thread_id: str, now: datetime) -> Record | None:
        return await self._bounded(self._table.read, thread_id, now)

    async def _remove(self, thread_id: str, now: datetime) -> bool:
        return await self._bounded(self._table.remove, thread_id, now)

    async def _page(
        self, count: int, after: tuple[datetime, str] | None, now: datetime
    ) -> list[Record]:
        return await self._bounded(self._table.page, count, after, now)

    async def _purge(self, now: datetime) -> int:
        return await self._call(self._table.purge, now)

    async def _close(self) -> None:
        # Calls still running finish before the client they use is closed.
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        self._table.close()

    async def create_table(self, *, wait: bool = True, table_format: str | None = None) -> bool:
        """See `DynamoDBCheckpointer.create_table`."""
        self._open_core()
        return await self._call(self._table.create_table, wait=wait, table_format=table_format)

    async def delete_table(self, *, wait: bool = True) -> bool:
        """See `DynamoDBCheckpointer.delete_table`."""
        self._open_core()
        return await self._call(self._table.delete_table, wait=wait)
