"""The contract every store implements: value types and the sync and async protocols.

Applications type-hint `Checkpointer` (or `AsyncCheckpointer`) and may fake it in their own tests;
`agents_persistence.MemoryCheckpointer` is a ready-made fake that passes the same contract suite
as every real store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, Self

from pydantic import BaseModel
from typing_extensions import TypeVar

from agents_persistence.snapshot import AgentStateSnapshot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from datetime import datetime, timedelta
    from types import TracebackType

__all__ = [
    "AsyncCheckpointer",
    "Checkpoint",
    "CheckpointInfo",
    "Checkpointer",
    "StateT",
    "ThreadInfo",
    "ThreadPage",
]

StateT = TypeVar("StateT", bound=BaseModel, default=AgentStateSnapshot)
"""The pydantic model a checkpointer stores; `AgentStateSnapshot` unless ``state_type=`` says."""


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """Metadata of one stored thread.

    Attributes:
        thread_id: The conversation thread.
        version: 1 after the first save, +1 on each save.
        created_at: When the thread was first saved (UTC, aware).
        updated_at: When it was last saved (UTC, aware).
        expires_at: When it stops being visible, or ``None`` without a TTL.
        size: Size in bytes of the stored state payload (its UTF-8 JSON).
    """

    thread_id: str
    version: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    size: int


@dataclass(frozen=True, slots=True)
class ThreadInfo(CheckpointInfo):
    """One entry of a thread listing; the same fields as `CheckpointInfo`."""


@dataclass(frozen=True, slots=True)
class Checkpoint(Generic[StateT]):
    """A loaded state together with its metadata."""

    state: StateT
    info: CheckpointInfo


@dataclass(frozen=True, slots=True)
class ThreadPage:
    """One page of `list_threads`, most recently updated first.

    Attributes:
        threads: Up to ``limit`` threads.
        next_cursor: Opaque cursor for the next page, or ``None`` on the last page.
    """

    threads: list[ThreadInfo]
    next_cursor: str | None


class Checkpointer(Protocol[StateT]):
    """A synchronous store of agent states, one per thread, within one namespace."""

    @property
    def namespace(self) -> str:
        """The namespace this checkpointer reads and writes."""
        ...

    @property
    def ttl(self) -> timedelta | None:
        """Time to live applied on each save, or ``None`` to keep threads forever."""
        ...

    def save_state(
        self, thread_id: str, state: StateT, *, expected_version: int | None = None
    ) -> CheckpointInfo:
        """Store ``state`` as the thread's newest version.

        Args:
            thread_id: 1 to 256 characters, no control characters.
            state: An instance of the checkpointer's state type.
            expected_version: ``None`` writes unconditionally; ``0`` only creates; ``n`` only
                writes if the stored version is ``n``.

        Raises:
            ConflictError: ``expected_version`` does not match; nothing was written.
            StateTooLargeError: the encoded state is above ``max_state_bytes``.
            InvalidThreadIdError: the thread id is not valid.
        """
        ...

    def restore_checkpoint(
        self,
        thread_id: str,
        state: StateT,
        info: CheckpointInfo,
        *,
        expected_version: int | None = None,
    ) -> CheckpointInfo:
        """Store ``state`` with the version and timestamps of ``info`` (import, copy, backup).

        The checkpointer's TTL is not applied: the thread keeps ``info.expires_at``.
        """
        ...

    def load_state(self, thread_id: str) -> StateT | None:
        """Return the thread's state, or ``None`` if it does not exist or has expired."""
        ...

    def load_checkpoint(self, thread_id: str) -> Checkpoint[StateT] | None:
        """Return the thread's state and metadata, or ``None``."""
        ...

    def delete_thread(self, thread_id: str) -> bool:
        """Delete the thread; ``True`` if a live thread was deleted."""
        ...

    def list_threads(self, *, limit: int = 100, cursor: str | None = None) -> ThreadPage:
        """Return one page of threads, most recently updated first."""
        ...

    def iter_threads(self, *, page_size: int = 100) -> Iterator[ThreadInfo]:
        """Yield every live thread, page by page, each at most once."""
        ...

    def purge_expired(self) -> int:
        """Physically remove expired threads the store keeps; return how many were removed."""
        ...

    def close(self) -> None:
        """Release what the checkpointer opened itself (never an injected engine or client)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class AsyncCheckpointer(Protocol[StateT]):
    """The asyncio twin of `Checkpointer`: the same methods, awaited."""

    @property
    def namespace(self) -> str:
        """The namespace this checkpointer reads and writes."""
        ...

    @property
    def ttl(self) -> timedelta | None:
        """Time to live applied on each save, or ``None`` to keep threads forever."""
        ...

    async def save_state(
        self, thread_id: str, state: StateT, *, expected_version: int | None = None
    ) -> CheckpointInfo:
        """See `Checkpointer.save_state`."""
        ...

    async def restore_checkpoint(
        self,
        thread_id: str,
        state: StateT,
        info: CheckpointInfo,
        *,
        expected_version: int | None = None,
    ) -> CheckpointInfo:
        """See `Checkpointer.restore_checkpoint`."""
        ...

    async def load_state(self, thread_id: str) -> StateT | None:
        """See `Checkpointer.load_state`."""
        ...

    async def load_checkpoint(self, thread_id: str) -> Checkpoint[StateT] | None:
        """See `Checkpointer.load_checkpoint`."""
        ...

    async def delete_thread(self, thread_id: str) -> bool:
        """See `Checkpointer.delete_thread`."""
        ...

    async def list_threads(self, *, limit: int = 100, cursor: str | None = None) -> ThreadPage:
        """See `Checkpointer.list_threads`."""
        ...

    def iter_threads(self, *, page_size: int = 100) -> AsyncIterator[ThreadInfo]:
        """See `Checkpointer.iter_threads`."""
        ...

    async def purge_expired(self) -> int:
        """See `Checkpointer.purge_expired`."""
        ...

    async def close(self) -> None:
        """See `Checkpointer.close`."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
