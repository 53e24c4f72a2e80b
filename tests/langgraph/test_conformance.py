"""LangGraph's own conformance suite (``langgraph-checkpoint-conformance``) on the savers.

The suite calls the async API only. It runs on both twins: `AsyncSQLCheckpointSaver` runs its
native coroutines, and `SQLCheckpointSaver`'s async methods call its sync methods (``put``,
``get_tuple``, ``list``...) in a worker thread, so the second run takes the same cases through
the sync API. The Redis savers run the same way, on the test server and on a 3-master cluster.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

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

    from langgraph.checkpoint.conformance.report import CapabilityReport


def _run(name: str, url: str, twin: str, **extra: Any) -> CapabilityReport:
    async def factory() -> AsyncIterator[AsyncSQLCheckpointSaver | SQLCheckpointSaver]:
        if twin == "async":
            saver = AsyncSQLCheckpointSaver.from_url(url, **extra)
            yield saver
            await saver.aclose()
        else:
            with SQLCheckpointSaver.from_url(url, **extra) as sync_saver:
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


def _run_dynamodb(name: str, options: dict[str, Any], twin: str, **extra: Any) -> CapabilityReport:
    async def factory() -> AsyncIterator[DynamoDBCheckpointSaver]:
        if twin == "async":
            saver = AsyncDynamoDBCheckpointSaver(**options, **extra)
            yield saver
            await saver.aclose()
        else:
            with DynamoDBCheckpointSaver(**options, **extra) as sync_saver:
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


def _run_redis(name: str, url: str, twin: str, prefix: str, **extra: Any) -> CapabilityReport:
    async def factory() -> AsyncIterator[AsyncRedisCheckpointSaver | RedisCheckpointSaver]:
        if twin == "async":
            saver = AsyncRedisCheckpointSaver.from_url(url, key_prefix=prefix, **extra)
            yield saver
            await saver.aclose()
        else:
            with RedisCheckpointSaver.from_url(url, key_prefix=prefix, **extra) as sync_saver:
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


# With write ownership, the suite's cases that store several checkpoints without a parent on
# one thread fork it by design, and are refused; every other case passes.
FORKING_CASES = {
    "list": {"test_list_metadata_filter_multiple_keys", "test_list_metadata_custom_keys"},
    "delete_for_runs": {"test_delete_for_runs_preserves_other_runs"},
}


def _assert_only_forking_cases_fail(report: CapabilityReport) -> None:
    failed = {
        name: {str(failure).split(":")[0] for failure in result.failures}
        for name, result in report.results.items()
        if result.failures
    }
    assert failed == FORKING_CASES, failed
    for name in FORKING_CASES:
        for failure in report.results[name].failures:
            assert "put expected no checkpoint yet" in str(failure), failure


@pytest.mark.slow
def test_sql_conformance_with_write_ownership(lg_url: str) -> None:
    """Every case passes with ``exclusive_writes=True`` but the ones that fork a thread."""
    report = _run(f"owned-{uuid.uuid4().hex[:8]}", lg_url, "async", exclusive_writes=True)
    _assert_only_forking_cases_fail(report)


@pytest.mark.slow
@pytest.mark.parametrize("store", ["redis", "dynamodb"])
def test_kv_conformance_with_write_ownership(store: str, request: pytest.FixtureRequest) -> None:
    """The same on Redis (the async twin) and DynamoDB (the sync twin)."""
    name = f"owned-{store}-{uuid.uuid4().hex[:8]}"
    if store == "dynamodb":
        options = request.getfixturevalue("dynamodb_options")
        report = _run_dynamodb(name, options, "sync", exclusive_writes=True)
    else:
        url, prefix = server_url("redis"), f"lgconf-{uuid.uuid4().hex[:12]}"
        try:
            report = _run_redis(name, url, "async", prefix, exclusive_writes=True)
        finally:
            delete_prefix(url, prefix)
    _assert_only_forking_cases_fail(report)
