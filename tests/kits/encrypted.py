"""Encrypted twins of the store kits: the same store, every checkpointer given a keyring.

`EncryptedKit` wraps a store's kit and passes ``keys=`` to each checkpointer it makes, so the
contract suite runs on encrypted storage too (kit names end in ``+encrypted``). The wrapped kit
is started first (`tests/conftest.py`); the wrapper starts nothing of its own.

With ``own_server=True`` the twin starts and stops a kit of its own (not one of the suite's),
for a store whose server slows down as it holds more data (moto). A store's kit module adds the
twin to its ``KITS`` and implements `EncryptedKit.stored_values`
through its own kit (``stored_values(namespace, thread_id)``: every head and piece value stored
for the thread, read behind the library), which `tests/test_encryption_at_rest.py` checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents_persistence.encryption import LocalKeyring

from .base import StoreKit

if TYPE_CHECKING:
    from agents_persistence import AsyncCheckpointer, Checkpointer

OLD_KEY = bytes(range(32))
NEW_KEY = bytes(range(32, 64))


def keyring(active: str = "k1", *ids: str) -> LocalKeyring:
    """A test keyring: ``k1`` and ``k2`` are fixed keys, ``active`` the one that seals."""
    known = {"k1": OLD_KEY, "k2": NEW_KEY}
    return LocalKeyring(active=active, keys={i: known[i] for i in (ids or (active,))})


class EncryptedKit(StoreKit):
    """The kit ``inner`` with every checkpointer encrypting under `keyring` (``k1``)."""

    def __init__(self, inner: StoreKit, *, own_server: bool = False) -> None:
        self.inner = inner
        self.own_server = own_server
        self.name = f"{inner.name}+encrypted"  # type: ignore[misc]
        self.db_system = inner.db_system  # type: ignore[misc]
        self.large_state_bytes = inner.large_state_bytes  # type: ignore[misc]
        self.has_server = inner.has_server  # type: ignore[misc]

    def unavailable_reason(self) -> str | None:
        return self.inner.unavailable_reason()

    def start(self) -> None:
        if self.own_server:  # else the wrapped kit is one of the suite's and starts as such
            self.inner.start()

    def stop(self) -> None:
        if self.own_server:
            self.inner.stop()

    def make(self, *, namespace: str, **options: Any) -> Checkpointer[Any]:
        options.setdefault("keys", keyring())
        return self.inner.make(namespace=namespace, **options)

    async def make_async(self, *, namespace: str, **options: Any) -> AsyncCheckpointer[Any]:
        options.setdefault("keys", keyring())
        return await self.inner.make_async(namespace=namespace, **options)

    def corrupt(self, namespace: str, thread_id: str) -> None:
        self.inner.corrupt(namespace, thread_id)

    def stored_count(self, namespace: str) -> int:
        return self.inner.stored_count(namespace)

    def stored_values(self, namespace: str, thread_id: str) -> list[bytes]:
        """Every head and piece value stored for the thread, as the store holds them."""
        return self.inner.stored_values(namespace, thread_id)

    def make_unreachable(self, *, namespace: str) -> Checkpointer[Any]:
        return self.inner.make_unreachable(namespace=namespace)

    async def make_unreachable_async(self, *, namespace: str) -> AsyncCheckpointer[Any]:
        return await self.inner.make_unreachable_async(namespace=namespace)
