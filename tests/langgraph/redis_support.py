"""Redis for the LangGraph saver tests: the test server, or the kit's 3-master cluster.

Each test gets its own key prefix, and its keys are deleted afterwards (on every node).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
import redis
import redis.cluster

from tests.conftest import _ready
from tests.kits.redis import KITS, REDIS_URL, RedisClusterKit

if TYPE_CHECKING:
    from collections.abc import Iterator

CLUSTER_KIT = next(kit for kit in KITS if kit.name == "redis-cluster")


def server_url(server: str) -> str:
    """The URL of the test server (``"redis"``) or of the kit's cluster (``"redis-cluster"``)."""
    if server == "redis":
        return REDIS_URL
    kit = _ready(CLUSTER_KIT)
    assert isinstance(kit, RedisClusterKit)
    return kit.url


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` on the server or cluster of ``url``; how many."""
    if url.startswith("redis+cluster://"):
        client: redis.Redis[bytes] | redis.cluster.RedisCluster[bytes] = (
            redis.cluster.RedisCluster.from_url(url.replace("redis+cluster://", "redis://"))
        )
    else:
        client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for key in keys:
            client.delete(key)
        return len(keys)
    finally:
        client.close()


def count_prefix(url: str, prefix: str) -> int:
    """How many keys are under ``prefix`` on the server or cluster of ``url``."""
    if url.startswith("redis+cluster://"):
        client: redis.Redis[bytes] | redis.cluster.RedisCluster[bytes] = (
            redis.cluster.RedisCluster.from_url(url.replace("redis+cluster://", "redis://"))
        )
    else:
        client = redis.Redis.from_url(url)
    try:
        return sum(1 for _ in client.scan_iter(match=f"{prefix}:*", count=1000))
    finally:
        client.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of the test's own on the test server, deleted afterwards."""
    prefix = f"lgtest-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_prefix(REDIS_URL, prefix)
