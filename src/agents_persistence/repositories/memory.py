"""The in-memory store: zero configuration, for tests and development.

It passes the same contract suite as every other store, which makes it the fake applications use
in their own tests. Several checkpointers (for example in different namespaces) can share one
`MemoryStore`; each checkpointer gets a private store by default. Nothing survives the process.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, insort
from dataclasses import replace
from typing import TYPE_CHECKING, Self
from urllib.parse import urlsplit

from agents_persistence._codec import Codec, is_sealed
from agents_persistence._core import DEFAULT_NAMESPACE, Record, WriteRequest, to_epoch_micros
from agents_persistence._layout import assemble
from agents_persistence.base import BaseAsyncCheckpointer, BaseCheckpointer
from agents_persistence.contract import StateT
from agents_persistence.errors import ConfigurationError

from ._call_budget import validate_call_timeout

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from agents_persistence._core import Clock
    from agents_persistence._keys import KeyProvider
    from agents_persistence.upcasting import Upcasters

__all__ = ["AsyncMemoryCheckpointer", "MemoryCheckpointer", "MemoryStore"]

_Key = tuple[int, str]


class _Namespace:
    """Records of one namespace plus a sorted (updated_at, thread_id) index for listing.

    A record keeps its head and manifest; ``pieces`` holds each thread's piece bodies (the
    layout of `agents_persistence._layout`), shared between versions like a store's rows.
    """

    __slots__ = ("index", "pieces", "records")

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.pieces: dict[str, dict[str, bytes]] = {}
        self.index: list[_Key] = []

    def unlink(self, record: Record) -> None:
        key = (to_epoch_micros(record.updated_at), record.thread_id)
        position = bisect_left(self.index, key)
        del self.index[position]
        del self.records[record.thread_id]
        self.pieces.pop(record.thread_id, None)


class MemoryStore:
    """Process-local storage shared by the memory checkpointers that are given it. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._namespaces: dict[str, _Namespace] = {}

    def _ns(self, namespace: str) -> _Namespace:
        found = self._namespaces.get(namespace)
        if found is None:
            found = self._namespaces[namespace] = _Namespace()
        return found

    def write(self, namespace: str, request: WriteRequest, codec: Codec | None = None) -> Record:
        """Store one version atomically (see `BaseCheckpointer._write`).

        With a ``codec`` that encrypts, the head and new pieces are kept sealed, as a store
        on disk keeps them; otherwise they are kept as the layout gives them.
        """
        sealer = None if codec is None or not codec.encrypts else codec.sealer()
        with self._lock:
            ns = self._ns(namespace)
            current = ns.records.get(request.thread_id)
            if current is not None and request.is_expired(current.expires_at):
                ns.unlink(current)
                current = None
            actual = None if current is None else current.version
            request.check(actual)
            created_at = request.now if current is None else current.created_at
            layout = request.layout.against(None if current is None else current.manifest)
            new = layout.pieces
            head, manifest = layout.head, layout.manifest
            if sealer is not None:
                tid = request.thread_id
                new = {key: sealer.piece(tid, key, body) for key, body in new.items()}
                head = sealer.head(tid, layout)[0]
                manifest = manifest.redacted()
            if layout.base is None:
                pieces = dict(new)
            else:
                pieces = ns.pieces[request.thread_id].copy()
                for key in layout.drop:
                    del pieces[key]
                pieces.update(new)
            stored = Record(
                thread_id=request.thread_id,
                version=request.next_version(actual),
                created_at=request.created_at or created_at,
                updated_at=request.now,
                expires_at=request.expires_at,
                size=request.size,
                payload=head,
                manifest=manifest,
            )
            if current is not None:
                ns.unlink(current)
            ns.records[stored.thread_id] = stored
            ns.pieces[stored.thread_id] = pieces
            insort(ns.index, (to_epoch_micros(stored.updated_at), stored.thread_id))
        return replace(stored, manifest=layout.manifest, written=layout.written)

    def read(
        self, namespace: str, thread_id: str, now: datetime, codec: Codec | None = None
    ) -> Record | None:
        """The live record of a thread, or ``None`` (sealed values are opened by ``codec``)."""
        with self._lock:
            ns = self._ns(namespace)
            record = ns.records.get(thread_id)
            pieces = ns.pieces.get(thread_id, {})
        if record is None or (record.expires_at is not None and record.expires_at <= now):
            return None
        payload = record.payload
        sealed = payload is not None and is_sealed(payload)
        if payload is not None and (sealed or (codec is not None and codec.encrypts)):
            opened = (codec or Codec(namespace, None)).open(
                thread_id, payload, record.manifest, pieces
            )
            return opened.apply(record)
        if record.manifest is None or not isinstance(record.payload, bytes):
            return record
        state = assemble(thread_id, record.payload, record.manifest, pieces)
        return replace(record, payload=state)

    def remove(self, namespace: str, thread_id: str, now: datetime) -> bool:
        """Delete a thread; ``True`` if it was live."""
        with self._lock:
            ns = self._ns(namespace)
            record = ns.records.get(thread_id)
            if record is None:
                return False
            ns.unlink(record)
        return record.expires_at is None or record.expires_at > now

    def page(
        self, namespace: str, count: int, after: tuple[datetime, str] | None, now: datetime
    ) -> list[Record]:
        """Up to ``count`` live records after the ``after`` key, newest first."""
        out: list[Record] = []
        with self._lock:
            ns = self._ns(namespace)
            stop = len(ns.index) if after is None else bisect_left(ns.index, _key(after))
            for position in range(stop - 1, -1, -1):
                record = ns.records[ns.index[position][1]]
                if record.expires_at is not None and record.expires_at <= now:
                    continue
                out.append(replace(record, payload=None, manifest=None, written=0))
                if len(out) == count:
                    break
        return out

    def purge(self, namespace: str, now: datetime) -> int:
        """Remove the namespace's expired records; return how many."""
        with self._lock:
            ns = self._ns(namespace)
            expired = [
                r for r in ns.records.values() if r.expires_at is not None and r.expires_at <= now
            ]
            for record in expired:
                ns.unlink(record)
        return len(expired)

    def replace_payload(self, namespace: str, thread_id: str, payload: str) -> None:
        """Overwrite a stored payload without validation (to simulate corruption in tests)."""
        with self._lock:
            ns = self._ns(namespace)
            ns.records[thread_id] = replace(ns.records[thread_id], payload=payload, manifest=None)


def _key(after: tuple[datetime, str]) -> _Key:
    return (to_epoch_micros(after[0]), after[1])


def _check_url(url: str) -> None:
    if not isinstance(url, str) or urlsplit(url).scheme != "memory":
        raise ConfigurationError(f"not a memory:// URL: {url!r:.120}")


class MemoryCheckpointer(BaseCheckpointer[StateT]):
    """In-memory `Checkpointer`.

    Args:
        store: Storage to share with other checkpointers; a private one by default.
        namespace: Isolates this checkpointer's threads.
        ttl: Seconds (or a timedelta) each save lives; ``None`` keeps threads forever.
        state_type: The pydantic model stored; `AgentStateSnapshot` by default.
        max_state_bytes: Largest encoded state accepted (32 MiB by default).
        clock: Returns the current aware time (tests move it by hand).
        keys: A key provider: saves are encrypted under its active key (see
            docs/security.md); ``None`` stores them in clear.
        upcasters: Upgrade functions for records of older schema versions of ``state_type``.
    """

    _otel_store = "memory"

    def __init__(
        self,
        store: MemoryStore | None = None,
        *,
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
        self.store = MemoryStore() if store is None else store

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
        call_timeout: float | None = None,
        keys: KeyProvider | None = None,
        upcasters: Upcasters | None = None,
    ) -> Self:
        """Open a private store from ``memory://`` (the URL carries no settings).

        Args:
            url: ``memory://``.
            namespace: See the constructor, as are the other keywords.
            ttl: Time to live of each save.
            state_type: The pydantic model stored.
            max_state_bytes: Largest encoded state accepted.
            clock: Returns the current aware time.
            call_timeout: Accepted, and checked, like every store's time budget per call, so
                one configuration opens any URL; a memory call does no I/O and never waits
                longer than other calls hold the store's lock.
            keys: A key provider (encryption at rest).
            upcasters: Upgrade functions for older schema versions.

        Raises:
            ConfigurationError: the URL is not ``memory://``, or ``call_timeout`` is not a
                positive number.
        """
        _check_url(url)
        if call_timeout is not None:
            validate_call_timeout(call_timeout)
        return cls(
            namespace=namespace,
            ttl=ttl,
            state_type=state_type,
            max_state_bytes=max_state_bytes,
            clock=clock,
            keys=keys,
            upcasters=upcasters,
        )

    def _write(self, request: WriteRequest) -> Record:
        return self.store.write(self.namespace, request, self._core.codec)

    def _read(self, thread_id: str, now: datetime) -> Record | None:
        return self.store.read(self.namespace, thread_id, now, self._core.codec)

    def _remove(self, thread_id: str, now: datetime) -> bool:
        return self.store.remove(self.namespace, thread_id, now)

    def _page(self, count: int, after: tuple[datetime, str] | None, now: datetime) -> list[Record]:
        return self.store.page(self.namespace, count, after, now)

    def _purge(self, now: datetime) -> int:
        return self.store.purge(self.namespace, now)


class AsyncMemoryCheckpointer(BaseAsyncCheckpointer[StateT]):
    """In-memory `AsyncCheckpointer`; the same storage and options as `MemoryCheckpointer`."""

    _otel_store = "memory"

    def __init__(
        self,
        store: MemoryStore | None = None,
        *,
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
        self.store = MemoryStore() if store is None else store

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
        call_timeout: float | None = None,
        keys: KeyProvider | None = None,
        upcasters: Upcasters | None = None,
    ) -> Self:
        """See `MemoryCheckpointer.from_url`."""
        _check_url(url)
        if call_timeout is not None:
            validate_call_timeout(call_timeout)
        return cls(
            namespace=namespace,
            ttl=ttl,
            state_type=state_type,
            max_state_bytes=max_state_bytes,
            clock=clock,
            keys=keys,
            upcasters=upcasters,
        )

    async def _write(self, request: WriteRequest) -> Record:
        return self.store.write(self.namespace, request, self._core.codec)

    async def _read(self, thread_id: str, now: datetime) -> Record | None:
        return self.store.read(self.namespace, thread_id, now, self._core.codec)

    async def _remove(self, thread_id: str, now: datetime) -> bool:
        return self.store.remove(self.namespace, thread_id, now)

    async def _page(
        self, count: int, after: tuple[datetime, str] | None, now: datetime
    ) -> list[Record]:
        return self.store.page(self.namespace, count, after, now)

    async def _purge(self, now: datetime) -> int:
        return self.store.purge(self.namespace, now)
