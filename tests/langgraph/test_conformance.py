"""LangGraph's own conformance suite (``langgraph-checkpoint-conformance``) on the savers.

The suite calls the async API only. It runs on both twins: `AsyncSQLCheckpointSaver` runs its
native coroutines, and `SQLCheckpointSaver`'s async methods call its sync methods (``put``,
``get_tuple``, ``list``...) in a worker thread, so the second run takes the same cases through
the sync API. The Redis savers run the same way, on the test server and on a 3-master cluster.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from agents_persistence.langgraph import (
    AsyncDynamoDBCheckpointSaver,
    AsyncRedisCheckpointSaver,
    AsyncSQLCheckpointSaver,
    DynamoDBCheckpointSaver,
    RedisCheckpointSaver,
    SQLCheckpointSaver,
)
from tests.langgraph.redis_support import delete_prefix, server_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from typing import Any

    from langgraph.checkpoint.conformance.report import CapabilityReport


def _run(name: str, url: str, twin: str) -> CapabilityReport:
    async def factory() -> AsyncIterator[AsyncSQLCheckpointSaver | SQLCheckpointSaver]:
        if twin == "async":
            saver = AsyncSQLCheckpointSaver.from_url(url)
            yield saver
            await saver.aclose()
        else:
            with SQLCheckpointSaver.from_url(url) as sync_saver:
                yield sync_saver

    registered = checkpointer_test(name=name)(factory)
    return asyncio.run(validate(registered))


@pytest.mark.slow
@pytest.mark.parametrize("twin", ["async", "sync"])
def test_conformance_level_is_full(lg_url: str, twin: str) -> None:
    report = _run(f"{twin}-{uuid.uuid4().hex[:8]}", lg_url, twin)

    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert report.conformance_level() == "FULL", failures
    assert {name for name, r in report.results.items() if r.detected and r.passed} == {
        capability.value for capability in ALL_CAPABILITIES
    }, "every capability, extended ones included, is implemented and passes"


def _run_dynamodb(name: str, options: dict[str, Any], twin: str) -> CapabilityReport:
    async def factory() -> AsyncIterator[DynamoDBCheckpointSaver]:
        if twin == "async":
            saver = AsyncDynamoDBCheckpointSaver(**options)
            yield saver
            await saver.aclose()
        else:
            with DynamoDBCheckpointSaver(**options) as sync_saver:
                yield sync_saver

    registered = checkpointer_test(name=name)(factory)
    return asyncio.run(validate(registered))


@pytest.mark.slow
@pytest.mark.parametrize("twin", ["async", "sync"])
def test_dynamodb_conformance_level_is_full(dynamodb_options: dict[str, Any], twin: str) -> None:
    """The DynamoDB twins on moto: the sync one's async methods call its sync methods."""
    report = _run_dynamodb(f"dynamodb-{twin}-{uuid.uuid4().hex[:8]}", dynamodb_options, twin)

    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert report.conformance_level() == "FULL", failures
    assert {name for name, r in report.results.items() if r.detected and r.passed} == {
        capability.value for capability in ALL_CAPABILITIES
    }


def _run_redis(name: str, url: str, twin: str, prefix: str) -> CapabilityReport:
    async def factory() -> AsyncIterator[AsyncRedisCheckpointSaver | RedisCheckpointSaver]:
        if twin == "async":
            saver = AsyncRedisCheckpointSaver.from_url(url, key_prefix=prefix)
            yield saver
            await saver.aclose()
        else:
            with RedisCheckpointSaver.from_url(url, key_prefix=prefix) as sync_saver:
                yield sync_saver

    registered = checkpointer_test(name=name)(factory)
    return asyncio.run(validate(registered))


@pytest.mark.slow
@pytest.mark.parametrize("server", ["redis", "redis-cluster"])
@pytest.mark.parametrize("twin", ["async", "sync"])
def test_redis_conformance_level_is_full(server: str, twin: str) -> None:
    url = server_url(server)
    prefix = f"lgconf-{uuid.uuid4().hex[:12]}"
    try:
        report = _run_redis(f"redis-{twin}-{prefix}", url, twin, prefix)
    finally:
        delete_prefix(url, prefix)

    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert report.conformance_level() == "FULL", failures
    assert {name for name, r in report.results.items() if r.detected and r.passed} == {
        capability.value for capability in ALL_CAPABILITIES
    }, "every capability, extended ones included, is implemented and passes"
