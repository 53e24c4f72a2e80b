"""What a store brings to the contract suite: a kit that builds checkpointers for tests.

Every store registers one or more kits (see `tests/kits/__init__.py`). The contract suite runs
each test against every kit, sync and async, through the same `Harness`, so contract tests never
branch on the store. Differences in what a store *can* do are kit capabilities, not isinstance
checks.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from agents_persistence import AsyncCheckpointer, Checkpointer

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def tcp_reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StoreKit:
    """Builds checkpointers of one store for tests. Subclass and register in `tests/kits/`.

    Attributes:
        name: Test id prefix (``memory``, ``sqlite``, ``postgresql``, ``mariadb``, ``redis``...).
        large_state_bytes: Size of the "large file" round trip this store must handle.
        has_server: False for stores without a server (no "unreachable server" test).
        db_system: The OpenTelemetry ``db.system.name`` its checkpointers report.
    """

    name: ClassVar[str] = "?"
    db_system: ClassVar[str] = "?"
    large_state_bytes: ClassVar[int] = 1_000_000
    has_server: ClassVar[bool] = True

    def unavailable_reason(self) -> str | None:
        """``None`` when the store's server answers, else why not (the run fails in CI)."""
        return None

    def start(self) -> None:
        """Session set-up, called once before the first checkpointer (migrations, servers)."""

    def stop(self) -> None:
        """Session tear-down."""

    def make(self, *, namespace: str, **options: Any) -> Checkpointer[Any]:
        """A sync checkpointer on this store; ``options`` are ``ttl``, ``clock``... ."""
        raise NotImplementedError

    async def make_async(self, *, namespace: str, **options: Any) -> AsyncCheckpointer[Any]:
        """An async checkpointer on this store; called inside the test event loop."""
        raise NotImplementedError

    def corrupt(self, namespace: str, thread_id: str) -> None:
        """Overwrite the stored state of a thread with undecodable data, behind the library."""
        raise NotImplementedError

    def stored_count(self, namespace: str) -> int:
        """How many records of ``namespace`` physically exist (expired or not)."""
        raise NotImplementedError

    def stored_values(self, namespace: str, thread_id: str) -> list[bytes]:
        """Every head and piece value stored for a thread, read behind the library.

        Needed by the encrypted twin of the kit (`tests/kits/encrypted.py`).
        """
        raise NotImplementedError

    def make_unreachable(self, *, namespace: str) -> Checkpointer[Any]:
        """A sync checkpointer aimed at a closed port, with short timeouts."""
        raise NotImplementedError

    async def make_unreachable_async(self, *, namespace: str) -> AsyncCheckpointer[Any]:
        """An async checkpointer aimed at a closed port, with short timeouts."""
        raise NotImplementedError
