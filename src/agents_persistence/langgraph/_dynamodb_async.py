"""`AsyncDynamoDBCheckpointSaver`: the DynamoDB saver's calls in a bounded pool of threads."""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, Self, TypeVar

from agents_persistence.langgraph._dynamodb_sync import (
    DEFAULT_LANGGRAPH_TABLE,
    DynamoDBCheckpointSaver,
    _positive,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["DEFAULT_MAX_THREADS", "AsyncDynamoDBCheckpointSaver"]

DEFAULT_MAX_THREADS = 10
"""Default worker threads of the async twin (and HTTP connections of its client)."""

_T = TypeVar("_T")


class AsyncDynamoDBCheckpointSaver(DynamoDBCheckpointSaver):
    """The asyncio twin of `DynamoDBCheckpointSaver` (same table, same items).

    PynamoDB is synchronous: each async method runs the sync one in a pool of at most
    ``max_threads`` worker threads of its own, in the caller's context (its tracing span),
    as the async DynamoDB store does. The sync methods remain available.

    Takes the arguments of `DynamoDBCheckpointSaver`, plus:

    Args:
        table_name: The table.
        max_threads: Worker threads running PynamoDB calls; calls beyond it wait their turn.
        **options: The keywords of `DynamoDBCheckpointSaver`; ``max_pool_connections``
            defaults to ``max_threads`` (at least 10).

    A cancelled call stops waiting, but the requests its worker thread sent run to completion:
    a cancelled ``put`` may still have been stored.
    """

    def __init__(
        self,
        table_name: str = DEFAULT_LANGGRAPH_TABLE,
        *,
        max_threads: int = DEFAULT_MAX_THREADS,
        **options: Any,
    ) -> None:
        _positive(max_threads, "max_threads", 1)
        options.setdefault("max_pool_connections", max(max_threads, 10))
        super().__init__(table_name, **options)
        self._executor = ThreadPoolExecutor(
            max_threads, thread_name_prefix=f"agents-persistence-langgraph-{self.table_name}"
        )

    async def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run one blocking call in the worker pool, in the caller's context."""
        loop = asyncio.get_running_loop()
        call = partial(contextvars.copy_context().run, function, *args)
        return await loop.run_in_executor(self._executor, call)

    async def acreate_table(self, *, wait: bool = True) -> bool:
        """`create_table` in a worker thread."""
        return await self._run(partial(self.create_table, wait=wait))

    async def asetup(self) -> None:
        """`setup` in a worker thread."""
        await self._run(self.setup)

    async def adelete_table(self, *, wait: bool = True) -> bool:
        """`delete_table` in a worker thread."""
        return await self._run(partial(self.delete_table, wait=wait))

    async def apurge_expired(self) -> int:
        """`purge_expired` in a worker thread."""
        return await self._run(self.purge_expired)

    async def aclose(self) -> None:
        """Wait for running calls, then close the client's HTTP connections."""
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
