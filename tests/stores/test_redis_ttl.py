"""Real expiry on the shared server: a 1-second TTL, Redis removing keys, the store cleaning up.

These tests wait for Redis itself (about a second each); the contract suite covers logical
expiry with a fake clock.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence import AgentStateSnapshot, AsyncRedisCheckpointer, RedisCheckpointer

from ..conftest import _ready
from ..kits.redis import KITS, RedisKit, thread_key, wait_for

if TYPE_CHECKING:
    from ..support import Portal

KIT = next(kit for kit in KITS if kit.name == "redis")


@pytest.fixture
def kit() -> RedisKit:
    ready = _ready(KIT)
    assert isinstance(ready, RedisKit)
    return ready


@pytest.fixture
def client(kit: RedisKit) -> Any:
    return kit.client


@pytest.fixture
def ns() -> str:
    return "x" + uuid.uuid4().hex[:16]


def keys_of(client: Any, namespace: str) -> set[str]:
    pattern = f"agents_persistence:{{{namespace}}}:*"
    return {key.decode() for key in client.scan_iter(match=pattern, count=1000)}


def indexed(client: Any, namespace: str, thread_id: str) -> list[bool]:
    return [
        client.zscore(f"agents_persistence:{{{namespace}}}:{index}", thread_id) is not None
        for index in ("updated", "expires")
    ]


def test_expired_thread_leaves_no_key_after_a_purge(client: Any, ns: str) -> None:
    brief = RedisCheckpointer(client, namespace=ns, ttl=1)
    keeper = RedisCheckpointer(client, namespace=ns)  # keeps the namespace's indexes alive
    brief.save_state("brief", AgentStateSnapshot(files={"a.txt": "x" * 10_000}))
    keeper.save_state("kept", AgentStateSnapshot())
    key = thread_key(ns, "brief")
    assert 0 < client.pttl(key) <= 1000
    assert indexed(client, ns, "brief") == [True, True]

    assert wait_for(lambda: client.exists(key) == 0), "Redis never expired the hash"
    # Redis removed the hash but cannot remove sorted-set members: the store must.
    assert indexed(client, ns, "brief") == [True, True]
    assert keeper.load_state("brief") is None
    assert brief.purge_expired() == 1
    assert indexed(client, ns, "brief") == [False, False]
    assert keys_of(client, ns) == {thread_key(ns, "kept"), f"agents_persistence:{{{ns}}}:updated"}
    assert brief.purge_expired() == 0
    assert [t.thread_id for t in keeper.list_threads().threads] == ["kept"]


def test_listing_drops_an_expired_thread_without_a_purge(client: Any, ns: str) -> None:
    brief = RedisCheckpointer(client, namespace=ns, ttl=1)
    keeper = RedisCheckpointer(client, namespace=ns, ttl=3600)
    brief.save_state("brief", AgentStateSnapshot())
    keeper.save_state("kept", AgentStateSnapshot())
    assert wait_for(lambda: client.exists(thread_key(ns, "brief")) == 0)
    assert [t.thread_id for t in keeper.list_threads().threads] == ["kept"]
    assert indexed(client, ns, "brief") == [False, False]
    assert keys_of(client, ns) == {
        thread_key(ns, "kept"),
        f"agents_persistence:{{{ns}}}:updated",
        f"agents_persistence:{{{ns}}}:expires",
    }


def test_a_namespace_of_expired_threads_disappears_by_itself(client: Any, ns: str) -> None:
    cp = RedisCheckpointer(client, namespace=ns, ttl=1)
    for n in range(3):
        cp.save_state(f"t{n}", AgentStateSnapshot())
    assert len(keys_of(client, ns)) == 5
    # Nobody lists or purges: the indexes carry the TTL of their longest-lived member.
    assert wait_for(lambda: not keys_of(client, ns)), keys_of(client, ns)
    assert cp.purge_expired() == 0


def test_async_expiry_and_purge(kit: RedisKit, ns: str, portal: Portal) -> None:
    client = kit.client
    key = thread_key(ns, "brief")

    async def save() -> None:
        async with AsyncRedisCheckpointer.from_url(kit.url, namespace=ns, ttl=1) as brief:
            await brief.save_state("brief", AgentStateSnapshot())
        async with AsyncRedisCheckpointer.from_url(kit.url, namespace=ns) as keeper:
            await keeper.save_state("kept", AgentStateSnapshot())

    async def purge() -> tuple[int, list[str]]:
        async with AsyncRedisCheckpointer.from_url(kit.url, namespace=ns, ttl=1) as cp:
            removed = await cp.purge_expired()
            return removed, [t.thread_id async for t in cp.iter_threads()]

    portal.call(save)
    assert wait_for(lambda: client.exists(key) == 0)
    assert indexed(client, ns, "brief") == [True, True]
    assert portal.call(purge) == (1, ["kept"])
    assert indexed(client, ns, "brief") == [False, False]
    assert keys_of(client, ns) == {thread_key(ns, "kept"), f"agents_persistence:{{{ns}}}:updated"}
    client.delete(*keys_of(client, ns))
