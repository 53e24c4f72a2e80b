"""Thread TTL of the Redis savers: refreshed by every write, invisible at once when expired.

Redis expires keys on its own clock, so the expiry itself is observed by waiting out a one
second TTL; a refresh is observed through the keys' remaining time (``PTTL``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import pytest
import redis
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)

from agents_persistence.errors import ConfigurationError
from agents_persistence.langgraph import AsyncRedisCheckpointSaver, RedisCheckpointSaver
from agents_persistence.langgraph._redis_plans import ThreadKeys
from tests.kits.redis import REDIS_URL
from tests.langgraph.redis_support import redis_prefix

if TYPE_CHECKING:
    from collections.abc import Iterator

    from langchain_core.runnables import RunnableConfig

__all__ = ["redis_prefix"]  # the fixture, imported for pytest

Pair = tuple[RedisCheckpointSaver, RedisCheckpointSaver]


@pytest.fixture
def client() -> Iterator[redis.Redis[bytes]]:
    with redis.Redis.from_url(REDIS_URL) as made:
        yield made


@pytest.fixture
def savers(redis_prefix: str) -> Iterator[Pair]:
    """A saver with a 60 s TTL, and one without a TTL, on the same keys."""
    with (
        RedisCheckpointSaver.from_url(REDIS_URL, key_prefix=redis_prefix, ttl=60) as with_ttl,
        RedisCheckpointSaver.from_url(REDIS_URL, key_prefix=redis_prefix) as without,
    ):
        yield with_ttl, without


def _put(saver: RedisCheckpointSaver, thread_id: str, value: str) -> RunnableConfig:
    checkpoint = generate_checkpoint(channel_values={"v": value}, channel_versions={"v": value})
    return saver.put(generate_config(thread_id), checkpoint, generate_metadata(), {"v": value})


def _remaining(client: redis.Redis[bytes], prefix: str, thread_id: str) -> dict[str, int]:
    """Milliseconds each existing key of the thread has left (-1: no expiry)."""
    keys = ThreadKeys(prefix).of(thread_id)
    return {key: int(client.pttl(key)) for key in keys if client.exists(key)}


def _shorten(client: redis.Redis[bytes], prefix: str, thread_id: str, ms: int) -> None:
    for key in ThreadKeys(prefix).of(thread_id):
        client.pexpire(key, ms)


def test_every_write_refreshes_the_ttl_of_every_key(
    savers: Pair, client: redis.Redis[bytes], redis_prefix: str
) -> None:
    saver, _ = savers
    thread_id = str(uuid.uuid4())
    stored = _put(saver, thread_id, "one")
    _shorten(client, redis_prefix, thread_id, 5_000)

    saver.put_writes(stored, [("v", "pending")], "task")

    left = _remaining(client, redis_prefix, thread_id)
    assert len(left) == 7, "every key but the run index (no run id)"
    assert all(55_000 < ms <= 60_000 for ms in left.values()), left
    _shorten(client, redis_prefix, thread_id, 5_000)

    _put(saver, thread_id, "two")

    assert all(55_000 < ms <= 60_000 for ms in _remaining(client, redis_prefix, thread_id).values())


def test_a_saver_without_ttl_keeps_the_threads_expiry_on_new_keys(
    savers: Pair, client: redis.Redis[bytes], redis_prefix: str
) -> None:
    with_ttl, without = savers
    thread_id = str(uuid.uuid4())
    stored = _put(with_ttl, thread_id, "one")

    without.put_writes(stored, [("v", "pending")], "task")

    left = _remaining(client, redis_prefix, thread_id)
    assert len(left) == 7
    assert all(0 < ms <= 60_000 for ms in left.values()), "the writes' keys expire with the rest"


def test_an_expired_thread_is_invisible_at_once_to_every_saver(redis_prefix: str) -> None:
    thread_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    with (
        RedisCheckpointSaver.from_url(REDIS_URL, key_prefix=redis_prefix, ttl=1) as with_ttl,
        RedisCheckpointSaver.from_url(REDIS_URL, key_prefix=redis_prefix) as without,
    ):
        stored = _put(with_ttl, thread_id, "one")
        with_ttl.put_writes(stored, [("v", "pending")], "task")
        _put(without, other, "kept")
        assert with_ttl.get_tuple(stored) is not None

        time.sleep(1.1)

        for saver in (with_ttl, without):
            assert saver.get_tuple(stored) is None
            assert saver.get_tuple(generate_config(thread_id)) is None
            assert list(saver.list(generate_config(thread_id))) == []
            listed = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
            assert thread_id not in listed
            assert other in listed, "threads without a TTL never expire"


def test_a_write_to_an_expired_thread_starts_it_afresh(
    client: redis.Redis[bytes], redis_prefix: str
) -> None:
    thread_id = str(uuid.uuid4())
    with (
        RedisCheckpointSaver.from_url(REDIS_URL, key_prefix=redis_prefix, ttl=1) as with_ttl,
        RedisCheckpointSaver.from_url(REDIS_URL, key_prefix=redis_prefix) as without,
    ):
        old = _put(with_ttl, thread_id, "old")
        time.sleep(1.1)

        _put(without, thread_id, "new")

        assert [
            t.checkpoint["channel_values"] for t in without.list(generate_config(thread_id))
        ] == [{"v": "new"}]
        assert without.get_tuple(old) is None
    assert set(_remaining(client, redis_prefix, thread_id).values()) == {-1}, "no TTL now"


def test_copying_gives_the_copy_its_own_ttl(
    savers: Pair, client: redis.Redis[bytes], redis_prefix: str
) -> None:
    with_ttl, without = savers
    source, target, untimed = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    _put(with_ttl, source, "x")
    _shorten(client, redis_prefix, source, 5_000)

    with_ttl.copy_thread(source, target)
    without.copy_thread(source, untimed)

    assert all(55_000 < ms <= 60_000 for ms in _remaining(client, redis_prefix, target).values())
    assert set(_remaining(client, redis_prefix, untimed).values()) == {-1}
    found = without.get_tuple(generate_config(target))
    assert found is not None
    assert found.checkpoint["channel_values"] == {"v": "x"}


def test_the_async_twin_expires_threads_too(redis_prefix: str) -> None:
    thread_id = str(uuid.uuid4())

    async def scenario() -> tuple[bool, bool]:
        async with AsyncRedisCheckpointSaver.from_url(
            REDIS_URL, key_prefix=redis_prefix, ttl=1
        ) as saver:
            stored = await saver.aput(generate_config(thread_id), generate_checkpoint(), {}, {})
            before = await saver.aget_tuple(stored) is not None
            await asyncio.sleep(1.1)
            after = await saver.aget_tuple(stored) is not None
            return before, after

    assert asyncio.run(scenario()) == (True, False)


@pytest.mark.parametrize("ttl", [0, 0.5, -1, "60", True])
def test_a_ttl_must_be_a_duration_of_a_second_or_more(ttl: object) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        RedisCheckpointSaver(redis.Redis(), ttl=ttl)  # type: ignore[arg-type]
