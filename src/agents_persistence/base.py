"""Base classes every store subclasses: the public contract on top of five store primitives.

A store implements `_write`, `_read`, `_remove`, `_page` and `_purge` (and `_close` when it owns
connections). Validation, encoding, clocks, TTL arithmetic and cursors live in the pure
`agents_persistence._core.Core`, which both twins share, so the sync and async classes below are
thin call-throughs that differ only by ``await``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Generic, Literal, Self

from agents_persistence import telemetry
from agents_persistence._core import (
    DEFAULT_NAMESPACE,
    Clock,
    Core,
    Record,
    WriteRequest,
    validate_thread_id,
)
from agents_persistence.contract import Checkpoint, CheckpointInfo, StateT, ThreadInfo, ThreadPage
from agents_persistence.errors import CheckpointerError, ConflictError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from datetime import datetime, timedelta
    from types import TracebackType

    from agents_persistence._keys import KeyProvider
    from agents_persistence.upcasting import Upcasters

__all__ = ["BaseAsyncCheckpointer", "BaseCheckpointer", "Refresh"]

Refresh = Literal["rewritten", "current", "absent", "conflict", "stale"]
"""The outcome of `BaseCheckpointer.refresh_thread`."""

DEFAULT_MAX_STATE_BYTES = 32 * 1024 * 1024


class _Common(Generic[StateT]):
    """Settings, properties and life cycle shared by both twins."""

    default_max_state_bytes: ClassVar[int] = DEFAULT_MAX_STATE_BYTES
    _otel_store: ClassVar[str] = "custom"
    """The store's name in telemetry (``agents_persistence.store``); each store sets its own."""

    def __init__(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        ttl: float | timedelta | None = None,
        state_type: type[StateT] | None = None,
        max_state_bytes: int | None = None,
        clock: Clock | None = None,
        keys: KeyProvider | None = None,
        upcasters: Upcasters | None = None,
    ) -> None:
        self._core: Core[StateT] = Core(
            namespace=namespace,
            ttl=ttl,
            state_type=state_type,
            max_state_bytes=self.default_max_state_bytes
            if max_state_bytes is None
            else max_state_bytes,
            clock=clock,
            keys=keys,
            upcasters=upcasters,
        )
        self._closed = False

    @property
    def namespace(self) -> str:
        """The namespace this checkpointer reads and writes."""
        return self._core.namespace

    @property
    def ttl(self) -> timedelta | None:
        """Time to live applied on each save, or ``None``."""
        return self._core.ttl

    @property
    def state_type(self) -> type[StateT]:
        """The pydantic model this checkpointer stores."""
        return self._core.state_type

    @property
    def max_state_bytes(self) -> int:
        """The largest encoded state a save accepts."""
        return self._core.max_state_bytes

    @property
    def encrypts(self) -> bool:
        """Whether saves are encrypted (the checkpointer was given ``keys``)."""
        return self._core.codec.encrypts

    def _open_core(self) -> Core[StateT]:
        if self._closed:
            raise CheckpointerError(f"{type(self).__name__} is closed")
        return self._core

    def __repr__(self) -> str:
        return f"{type(self).__name__}(namespace={self.namespace!r})"


class BaseCheckpointer(_Common[StateT], ABC):
    """Base of every synchronous store; implements `agents_persistence.Checkpointer`."""

    @abstractmethod
    def _write(self, request: WriteRequest) -> Record:
        """Atomically store one version; raise `ConflictError` on a version mismatch."""

    @abstractmethod
    def _read(self, thread_id: str, now: datetime) -> Record | None:
        """The live record with its payload, or ``None`` (absent or expired at ``now``)."""

    @abstractmethod
    def _remove(self, thread_id: str, now: datetime) -> bool:
        """Delete the thread; ``True`` only if it was live at ``now``."""

    @abstractmethod
    def _page(self, count: int, after: tuple[datetime, str] | None, now: datetime) -> list[Record]:
        """Up to ``count`` live records (no payload) ordered by (updated_at, thread_id) desc.

        With ``after``, only records strictly before that key in this order.
        """

    @abstractmethod
    def _purge(self, now: datetime) -> int:
        """Physically remove records expired at ``now``; return how many."""

    def _close(self) -> None:
        """Release owned resources."""

    def save_state(
        self, thread_id: str, state: StateT, *, expected_version: int | None = None
    ) -> CheckpointInfo:
        """Store ``state`` as the thread's next version (see `Checkpointer.save_state`)."""
        return _run(self, "save_state", self._save_call, thread_id, state, expected_version)

    def _save_call(
        self, thread_id: str, state: StateT, expected_version: int | None
    ) -> CheckpointInfo:
        core = self._open_core()
        request = core.prepare_write(thread_id, state, expected_version)
        return self._store(core, request)

    def _store(self, core: Core[StateT], request: WriteRequest) -> CheckpointInfo:
        try:
            record = self._write(request)
        except BaseException:
            core.forget(request.thread_id)
            raise
        return _written(core, record)

    def restore_checkpoint(
        self,
        thread_id: str,
        state: StateT,
        info: CheckpointInfo,
        *,
        expected_version: int | None = None,
    ) -> CheckpointInfo:
        """Store ``state`` with the version and timestamps of ``info`` (import, copy, backup).

        The checkpointer's TTL is not applied: the thread keeps ``info.expires_at``. With
        ``expected_version`` the write is conditional exactly as in `save_state`.
        """
        return _run(
            self, "restore_checkpoint", self._restore_call, thread_id, state, info, expected_version
        )

    def _restore_call(
        self, thread_id: str, state: StateT, info: CheckpointInfo, expected_version: int | None
    ) -> CheckpointInfo:
        core = self._open_core()
        request = core.prepare_restore(thread_id, state, info, expected_version)
        return self._store(core, request)

    def load_checkpoint(self, thread_id: str) -> Checkpoint[StateT] | None:
        """The thread's state and metadata, or ``None``."""
        return _run(self, "load_checkpoint", self._load_call, thread_id)

    def load_state(self, thread_id: str) -> StateT | None:
        """The thread's state, or ``None``."""
        checkpoint = _run(self, "load_state", self._load_call, thread_id)
        return None if checkpoint is None else checkpoint.state

    def _load_call(self, thread_id: str) -> Checkpoint[StateT] | None:
        core = self._open_core()
        return core.checkpoint(self._read(_tid(thread_id), core.now()))

    def delete_thread(self, thread_id: str) -> bool:
        """Delete the thread; ``True`` if a live thread was deleted."""
        return _run(self, "delete_thread", self._delete_call, thread_id)

    def _delete_call(self, thread_id: str) -> bool:
        core = self._open_core()
        tid = _tid(thread_id)
        core.forget(tid)
        return self._remove(tid, core.now())

    def list_threads(self, *, limit: int = 100, cursor: str | None = None) -> ThreadPage:
        """One page of live threads, most recently updated first."""
        return _run(self, "list_threads", self._list_call, limit, cursor)

    def _list_call(self, limit: int, cursor: str | None) -> ThreadPage:
        core = self._open_core()
        count, after = core.page_args(limit, cursor)
        return core.page(self._page(count + 1, after, core.now()), count)

    def iter_threads(self, *, page_size: int = 100) -> Iterator[ThreadInfo]:
        """Every live thread, fetched ``page_size`` at a time (one span per page)."""
        cursor: str | None = None
        while True:
            page = _run(self, "iter_threads", self._list_call, page_size, cursor)
            yield from page.threads
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def refresh_thread(self, thread_id: str, *, dry_run: bool = False) -> Refresh:
        """Rewrite a thread as this checkpointer writes now, if it is stored otherwise.

        A thread is rewritten when it was written at an older schema version of the state
        model (its upcasters run on the way), or, with ``keys``, when any of its values is
        stored in clear or sealed under a key other than the active one. The rewrite keeps the
        version and timestamps (as `restore_checkpoint` does) and is conditional on the version
        read, so it never overwrites a concurrent save. `agents-persistence keys rotate` and
        `agents-persistence migrate-payloads` call it for every thread.

        Args:
            thread_id: The thread.
            dry_run: Read, compare and decode (so a thread that would fail to decrypt or
                upcast fails here too), but write nothing: ``"stale"`` where it would rewrite.

        Returns:
            ``"rewritten"``, ``"current"`` (nothing to do), ``"absent"`` (no live thread),
            ``"conflict"`` (a save landed in between: the thread was written by a current
            writer, or the next pass rewrites it) or, in a dry run, ``"stale"``.
        """
        return _run(self, "refresh_thread", self._refresh_call, thread_id, dry_run)

    def _refresh_call(self, thread_id: str, dry_run: bool) -> Refresh:
        core = self._open_core()
        tid = _tid(thread_id)
        record = self._read(tid, core.now())
        if record is None:
            return "absent"
        if core.is_current(record):
            return "current"
        state = core.decode(record)
        if dry_run:
            return "stale"
        request = core.prepare_restore(tid, state, record.info(), record.version)
        try:
            self._store(core, request)
        except ConflictError:
            return "conflict"
        return "rewritten"

    def purge_expired(self) -> int:
        """Physically remove expired threads; return how many were removed."""
        return _run(self, "purge_expired", self._purge_call)

    def _purge_call(self) -> int:
        return self._purge(self._open_core().now())

    def close(self) -> None:
        """Release owned connections; idempotent. Injected engines and clients stay open."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BaseAsyncCheckpointer(_Common[StateT], ABC):
    """Base of every asyncio store; implements `agents_persistence.AsyncCheckpointer`."""

    @abstractmethod
    async def _write(self, request: WriteRequest) -> Record:
        """See `BaseCheckpointer._write`."""

    @abstractmethod
    async def _read(self, thread_id: str, now: datetime) -> Record | None:
        """See `BaseCheckpointer._read`."""

    @abstractmethod
    async def _remove(self, thread_id: str, now: datetime) -> bool:
        """See `BaseCheckpointer._remove`."""

    @abstractmethod
    async def _page(
        self, count: int, after: tuple[datetime, str] | None, now: datetime
    ) -> list[Record]:
        """See `BaseCheckpointer._page`."""

    @abstractmethod
    async def _purge(self, now: datetime) -> int:
        """See `BaseCheckpointer._purge`."""

    async def _close(self) -> None:
        """Release owned resources."""

    async def save_state(
        self, thread_id: str, state: StateT, *, expected_version: int | None = None
    ) -> CheckpointInfo:
        """See `BaseCheckpointer.save_state`."""
        return await _arun(self, "save_state", self._save_call, thread_id, state, expected_version)

    async def _save_call(
        self, thread_id: str, state: StateT, expected_version: int | None
    ) -> CheckpointInfo:
        core = self._open_core()
        request = core.prepare_write(thread_id, state, expected_version)
        return await self._store(core, request)

    async def _store(self, core: Core[StateT], request: WriteRequest) -> CheckpointInfo:
        try:
            record = await self._write(request)
        except BaseException:
            core.forget(request.thread_id)
            raise
        return _written(core, record)

    async def restore_checkpoint(
        self,
        thread_id: str,
        state: StateT,
        info: CheckpointInfo,
        *,
        expected_version: int | None = None,
    ) -> CheckpointInfo:
        """See `BaseCheckpointer.restore_checkpoint`."""
        return await _arun(
            self, "restore_checkpoint", self._restore_call, thread_id, state, info, expected_version
        )

    async def _restore_call(
        self, thread_id: str, state: StateT, info: CheckpointInfo, expected_version: int | None
    ) -> CheckpointInfo:
        core = self._open_core()
        request = core.prepare_restore(thread_id, state, info, expected_version)
        return await self._store(core, request)

    async def load_checkpoint(self, thread_id: str) -> Checkpoint[StateT] | None:
        """See `BaseCheckpointer.load_checkpoint`."""
        return await _arun(self, "load_checkpoint", self._load_call, thread_id)

    async def load_state(self, thread_id: str) -> StateT | None:
        """See `BaseCheckpointer.load_state`."""
        checkpoint = await _arun(self, "load_state", self._load_call, thread_id)
        return None if checkpoint is None else checkpoint.state

    async def _load_call(self, thread_id: str) -> Checkpoint[StateT] | None:
        core = self._open_core()
        return core.checkpoint(await self._read(_tid(thread_id), core.now()))

    async def delete_thread(self, thread_id: str) -> bool:
        """See `BaseCheckpointer.delete_thread`."""
        return await _arun(self, "delete_thread", self._delete_call, thread_id)

    async def _delete_call(self, thread_id: str) -> bool:
        core = self._open_core()
        tid = _tid(thread_id)
        core.forget(tid)
        return await self._remove(tid, core.now())

    async def list_threads(self, *, limit: int = 100, cursor: str | None = None) -> ThreadPage:
        """See `BaseCheckpointer.list_threads`."""
        return await _arun(self, "list_threads", self._list_call, limit, cursor)

    async def _list_call(self, limit: int, cursor: str | None) -> ThreadPage:
        core = self._open_core()
        count, after = core.page_args(limit, cursor)
        return core.page(await self._page(count + 1, after, core.now()), count)

    async def iter_threads(self, *, page_size: int = 100) -> AsyncIterator[ThreadInfo]:
        """See `BaseCheckpointer.iter_threads`."""
        cursor: str | None = None
        while True:
            page = await _arun(self, "iter_threads", self._list_call, page_size, cursor)
            for thread in page.threads:
                yield thread
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def refresh_thread(self, thread_id: str, *, dry_run: bool = False) -> Refresh:
        """See `BaseCheckpointer.refresh_thread`."""
        return await _arun(self, "refresh_thread", self._refresh_call, thread_id, dry_run)

    async def _refresh_call(self, thread_id: str, dry_run: bool) -> Refresh:
        core = self._open_core()
        tid = _tid(thread_id)
        record = await self._read(tid, core.now())
        if record is None:
            return "absent"
        if core.is_current(record):
            return "current"
        state = core.decode(record)
        if dry_run:
            return "stale"
        request = core.prepare_restore(tid, state, record.info(), record.version)
        try:
            await self._store(core, request)
        except ConflictError:
            return "conflict"
        return "rewritten"

    async def purge_expired(self) -> int:
        """See `BaseCheckpointer.purge_expired`."""
        return await _arun(self, "purge_expired", self._purge_call)

    async def _purge_call(self) -> int:
        return await self._purge(self._open_core().now())

    async def close(self) -> None:
        """See `BaseCheckpointer.close`."""
        if not self._closed:
            self._closed = True
            await self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _written(core: Core[StateT], record: Record) -> CheckpointInfo:
    """Keep a written record's manifest for the thread's next save; report what was sent."""
    core.remember(record)
    if record.written:
        telemetry.note_written(record.written)
    return record.info()


_tid = validate_thread_id
_run = telemetry.run
_arun = telemetry.arun
