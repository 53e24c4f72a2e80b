"""What the savers' twins share: the async API of a sync saver, the sync API of an async one."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Self

from langgraph.checkpoint.base import BaseCheckpointSaver

from agents_persistence.errors import ConfigurationError
from agents_persistence.langgraph._plans import next_version

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
    from types import TracebackType

    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
    )

__all__ = ["LoopSaver", "ThreadedSaver", "check_keep_last"]


def check_keep_last(keep_last: int | None) -> int | None:
    """``keep_last`` (retention) validated: a positive int, or ``None`` to keep everything."""
    if keep_last is not None and (
        isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1
    ):
        raise ConfigurationError(f"keep_last must be a positive int or None, not {keep_last!r}")
    return keep_last


class ThreadedSaver(BaseCheckpointSaver[str]):
    """A sync saver whose async methods run its sync ones with `asyncio.to_thread`.

    LangGraph's ``ainvoke`` then works on the sync savers too; a listing reads each item in a
    worker thread, so the event loop never waits on the store.
    """

    def close(self) -> None:
        """Release what the saver opened itself (the subclass says what)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def get_next_version(self, current: str | None, channel: None) -> str:
        """A version greater than ``current``, as a string that sorts like its counter."""
        return next_version(current)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """`get_tuple` in a worker thread."""
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """`list`, each item read in a worker thread."""
        found = self.list(config, filter=filter, before=before, limit=limit)
        done: Any = object()
        while (item := await asyncio.to_thread(next, found, done)) is not done:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """`put` in a worker thread."""
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """`put_writes` in a worker thread."""
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """`delete_thread` in a worker thread."""
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """`delete_for_runs` in a worker thread."""
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """`copy_thread` in a worker thread."""
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """`prune` in a worker thread."""
        await asyncio.to_thread(partial(self.prune, thread_ids, strategy=strategy))


class LoopSaver(BaseCheckpointSaver[str]):
    """An async saver whose sync methods run its coroutines on its event loop.

    As LangGraph's own async savers: the sync methods serve LangGraph's sync entry points
    called from another thread while the saver's loop runs; on the loop's thread they would
    block it, and raise `ConfigurationError` instead. Subclasses set ``_loop`` (the loop of
    their first call) and ``sync_twin``.
    """

    sync_twin: ClassVar[str] = "the sync saver"
    _loop: asyncio.AbstractEventLoop | None = None

    async def aclose(self) -> None:
        """Release what the saver opened itself (the subclass says what)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _sync(self, call: Coroutine[Any, Any, Any]) -> Any:
        """Run ``call`` on the saver's loop from another thread, and wait for its result."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or loop.is_closed():
            call.close()
            raise ConfigurationError(
                f"{type(self).__name__}'s sync methods run its coroutines on its event loop"
                " from another thread: call the async methods (aget_tuple, aput...) on the loop,"
                f" or use {self.sync_twin} for sync code"
            )
        return asyncio.run_coroutine_threadsafe(call, loop).result()

    def get_next_version(self, current: str | None, channel: None) -> str:
        """A version greater than ``current``, as a string that sorts like its counter."""
        return next_version(current)

    # --- sync twins: the coroutines on the saver's loop -----------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """`aget_tuple`, from a thread other than the loop's."""
        result: CheckpointTuple | None = self._sync(self.aget_tuple(config))
        return result

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """`alist`, from a thread other than the loop's."""
        pages = self.alist(config, filter=filter, before=before, limit=limit)

        async def following() -> CheckpointTuple:
            return await anext(pages)

        while True:
            try:
                item: CheckpointTuple = self._sync(following())
            except StopAsyncIteration:
                return
            yield item

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """`aput`, from a thread other than the loop's."""
        stored: RunnableConfig = self._sync(self.aput(config, checkpoint, metadata, new_versions))
        return stored

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """`aput_writes`, from a thread other than the loop's."""
        self._sync(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """`adelete_thread`, from a thread other than the loop's."""
        self._sync(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """`adelete_for_runs`, from a thread other than the loop's."""
        self._sync(self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """`acopy_thread`, from a thread other than the loop's."""
        self._sync(self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """`aprune`, from a thread other than the loop's."""
        self._sync(self.aprune(thread_ids, strategy=strategy))
