"""The in-memory store's kit: one shared `MemoryStore` so the kit can look behind the library."""

from __future__ import annotations

from typing import Any

from agents_persistence import AsyncMemoryCheckpointer, MemoryCheckpointer, MemoryStore

from .base import StoreKit
from .encrypted import EncryptedKit


class MemoryKit(StoreKit):
    name = "memory"
    db_system = "memory"
    has_server = False

    def __init__(self) -> None:
        self.store = MemoryStore()

    def make(self, *, namespace: str, **options: Any) -> MemoryCheckpointer[Any]:
        return MemoryCheckpointer(self.store, namespace=namespace, **options)

    async def make_async(self, *, namespace: str, **options: Any) -> AsyncMemoryCheckpointer[Any]:
        return AsyncMemoryCheckpointer(self.store, namespace=namespace, **options)

    def corrupt(self, namespace: str, thread_id: str) -> None:
        self.store.replace_payload(namespace, thread_id, '{"todos": "not a list"')

    def stored_count(self, namespace: str) -> int:
        return len(self.store._ns(namespace).records)

    def stored_values(self, namespace: str, thread_id: str) -> list[bytes]:
        ns = self.store._ns(namespace)
        head = ns.records[thread_id].payload
        assert isinstance(head, bytes)
        return [head, *ns.pieces.get(thread_id, {}).values()]


KITS = [MemoryKit(), EncryptedKit(MemoryKit())]
