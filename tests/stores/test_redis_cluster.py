"""Placement on Redis Cluster: one namespace in one slot, namespaces spread over the masters.

The contract suite already runs in full on the ``redis-cluster`` kit (3 masters started for the
session); these tests look at where the keys physically are, node by node, and at the cluster
URLs of ``open_checkpointer``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from redis.crc import key_slot

from agents_persistence import (
    AgentStateSnapshot,
    AsyncRedisCheckpointer,
    RedisCheckpointer,
    open_async_checkpointer,
    open_checkpointer,
)

from ..conftest import _ready
from ..kits.redis import KITS, RedisClusterKit, thread_key

if TYPE_CHECKING:
    from ..kits.redis import RedisCluster
    from ..support import Portal

KIT = next(kit for kit in KITS if kit.name == "redis-cluster")


@pytest.fixture
def kit() -> RedisClusterKit:
    ready = _ready(KIT)
    assert isinstance(ready, RedisClusterKit)
    return ready


@pytest.fixture
def cluster(kit: RedisClusterKit) -> RedisCluster:
    assert kit.cluster is not None
    return kit.cluster


def placement(cluster: RedisCluster, pattern: str) -> dict[str, int]:
    """Every key matching ``pattern`` and the port of the master that physically holds it."""
    found: dict[str, int] = {}
    for node in cluster.nodes:
        with node.client() as direct:
            for key in direct.scan_iter(match=pattern, count=1000):
                found[key.decode()] = node.port
    return found


def test_a_namespace_lives_in_one_slot(kit: RedisClusterKit, cluster: RedisCluster) -> None:
    ns = "c" + uuid.uuid4().hex[:12]
    cp = RedisCheckpointer(kit.client, namespace=ns, ttl=600)
    for n in range(20):
        # Large enough to be stored as a head and pieces: each thread has both keys.
        big = AgentStateSnapshot(scratchpad={"n": n}, files={"f.md": "f" * 20_000})
        cp.save_state(f"thread-{n}/{{odd}}:id", big)
    keys = placement(cluster, f"agents_persistence:{{{ns}}}:*")
    assert len(keys) == 42  # 20 records, their 20 pieces hashes and the two indexes
    assert {key_slot(key.encode()) for key in keys} == {key_slot(ns.encode())}
    assert len(set(keys.values())) == 1
    assert len(cp.list_threads(limit=1000).threads) == 20
    assert cp.purge_expired() == 0


def test_namespaces_spread_over_the_masters(kit: RedisClusterKit, cluster: RedisCluster) -> None:
    suffix = uuid.uuid4().hex[:8]
    # The hash tag is the namespace alone, so these six land in slots 1 to 12518: all thirds.
    namespaces = [f"tenant-{n}" for n in range(6)]
    holders: dict[str, set[int]] = {}
    for namespace in namespaces:
        cp = RedisCheckpointer(kit.client, namespace=namespace, key_prefix=f"spread{suffix}")
        cp.save_state("t", AgentStateSnapshot())
        found = placement(cluster, f"spread{suffix}:{{{namespace}}}:*")
        assert len(found) == 2
        holders[namespace] = set(found.values())
        assert cp.delete_thread("t") is True
    assert all(len(ports) == 1 for ports in holders.values())
    assert len(set().union(*holders.values())) == 3


def test_cluster_urls(kit: RedisClusterKit, cluster: RedisCluster, portal: Portal) -> None:
    ns = "c" + uuid.uuid4().hex[:12]
    assert kit.url.startswith("redis+cluster://")
    with open_checkpointer(kit.url, namespace=ns) as cp:
        assert isinstance(cp, RedisCheckpointer)
        cp.save_state("sync", AgentStateSnapshot())

    async def scenario() -> Any:
        async with open_async_checkpointer(kit.url, namespace=ns) as acp:
            assert isinstance(acp, AsyncRedisCheckpointer)
            await acp.save_state("async", AgentStateSnapshot())
            return sorted([t.thread_id async for t in acp.iter_threads()])

    assert portal.call(scenario) == ["async", "sync"]
    assert set(placement(cluster, thread_key(ns) + "*")) == {
        thread_key(ns, "sync"),
        thread_key(ns, "async"),
    }
    with RedisCheckpointer(kit.client, namespace=ns) as cp:
        assert cp.delete_thread("sync") is True
        assert cp.delete_thread("async") is True
