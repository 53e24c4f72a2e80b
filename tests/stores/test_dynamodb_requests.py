"""What the DynamoDB store sends: strongly consistent reads, index queries and never a scan,
conditional puts, sharded listings, and a bounded number of worker threads in the async twin."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agents_persistence import AgentStateSnapshot

from ..conftest import new_namespace
from ..kits.dynamodb import SINGLE_ITEM_KIT, DynamoDBKit, record_requests, started
from ..support import FakeClock, Harness, Portal


@pytest.fixture
def kit() -> DynamoDBKit:
    """A DynamoDB kit with a table of the single-item format, also behind the harness."""
    return started(SINGLE_ITEM_KIT)


def test_loads_are_strongly_consistent(harness: Harness) -> None:
    cp = harness.make()
    cp.save_state("t", AgentStateSnapshot())
    calls = record_requests(cp)
    cp.load_state("t")
    cp.load_checkpoint("missing")
    assert [(op, params.get("ConsistentRead")) for op, params, _ in calls] == [
        ("GetItem", True),
        ("GetItem", True),
    ]


def test_listing_and_purge_query_the_index_and_never_scan(harness: Harness) -> None:
    clock = FakeClock()
    cp = harness.make(ttl=60, clock=clock)
    for n in range(5):
        cp.save_state(f"t{n}", AgentStateSnapshot())
    calls = record_requests(cp)
    page = cp.list_threads(limit=2)
    cp.list_threads(limit=2, cursor=page.next_cursor)
    assert len(list(cp.iter_threads(page_size=2))) == 5
    clock.advance(60)
    assert cp.purge_expired() == 5
    operations = {op for op, _, _ in calls}
    assert "Scan" not in operations
    queries = [params for op, params, _ in calls if op == "Query"]
    assert len(queries) >= 6
    assert all(params["IndexName"] == "by_updated" for params in queries)
    assert all(params["ScanIndexForward"] is False for params in queries)


def test_saves_are_conditional_puts(harness: Harness) -> None:
    first = harness.make()
    calls = record_requests(first)
    first.save_state("t", AgentStateSnapshot())  # new thread: tried as a create
    first.save_state("t", AgentStateSnapshot())  # this checkpointer wrote version 1
    # The table's format is read once per checkpointer, from its key schema.
    assert [op for op, _, _ in calls] == ["DescribeTable", "PutItem", "PutItem"]
    assert all("ConditionExpression" in params for _, params, _ in calls[1:])

    second = harness.make()
    calls = record_requests(second)
    assert second.save_state("t", AgentStateSnapshot()).version == 3
    # Knowing nothing of "t", it tries a create, reads the item, then writes on condition.
    assert [op for op, _, _ in calls] == ["DescribeTable", "PutItem", "GetItem", "PutItem"]
    assert calls[2][1]["ConsistentRead"] is True


def test_large_states_of_unknown_threads_are_read_first(harness: Harness) -> None:
    # A failed conditional put is charged like a write of the item: above 4 KB, guessing
    # "new thread" wrongly costs more than reading first.
    large = AgentStateSnapshot(files={"f": "x" * 5000})
    first = harness.make()
    calls = record_requests(first)
    assert first.save_state("t", large).version == 1
    assert first.save_state("t", large).version == 2
    assert [op for op, _, _ in calls] == ["DescribeTable", "GetItem", "PutItem", "PutItem"]

    second = harness.make()
    calls = record_requests(second)
    assert second.save_state("t", large).version == 3
    assert second.save_state("new", large, expected_version=0).version == 1
    assert [op for op, _, _ in calls] == ["DescribeTable", "GetItem", "PutItem", "PutItem"]


def _lose_first_put_reply(cp: Any) -> list[int]:
    """Apply the next PutItem at the server, then fail it as a read timeout: the client retries."""
    import urllib3
    from botocore.exceptions import ReadTimeoutError

    lost: list[int] = []

    def send(request: Any, **_: Any) -> None:
        if not lost:
            reply = urllib3.request("POST", request.url, body=request.body, headers=request.headers)
            lost.append(reply.status)
            raise ReadTimeoutError(endpoint_url=request.url)

    inner = getattr(cp, "inner", cp)
    client = inner._table.connection.connection.client
    client.meta.events.register("before-send.dynamodb.PutItem", send)
    return lost


def test_a_retried_put_that_was_applied_counts_once(kit: DynamoDBKit, harness: Harness) -> None:
    cp = harness.make(max_retries=1)
    cp.save_state("t", AgentStateSnapshot(scratchpad={"n": 1}))
    lost = _lose_first_put_reply(cp)
    assert cp.save_state("t", AgentStateSnapshot(scratchpad={"n": 2})).version == 2
    assert lost == [200]
    lost = _lose_first_put_reply(cp)
    info = cp.save_state("t", AgentStateSnapshot(scratchpad={"n": 3}), expected_version=2)
    assert info.version == 3
    assert lost == [200]
    checkpoint = cp.load_checkpoint("t")
    assert checkpoint.info.version == 3
    assert checkpoint.state == AgentStateSnapshot(scratchpad={"n": 3})


def test_long_non_ascii_thread_ids_fit_the_index_key(kit: DynamoDBKit, harness: Harness) -> None:
    cp = harness.make()
    long_ids = ["😀" * 256, "😀" * 255 + "x", "é" * 256]
    for thread_id in long_ids:
        cp.save_state(thread_id, AgentStateSnapshot(scratchpad={"id": thread_id[-1]}))
    for thread_id in long_ids:
        assert cp.load_state(thread_id) == AgentStateSnapshot(scratchpad={"id": thread_id[-1]})
        item = kit.client.get_item(
            TableName=kit.table, Key={"pk": {"S": f"{harness.namespace}#{thread_id}"}}
        )["Item"]
        assert len(item["list_sk"]["S"].encode()) <= 1024
    listed = [t.thread_id for t in cp.iter_threads(page_size=1)]
    assert sorted(listed) == sorted(long_ids)


def _sharded_listing(harness: Harness, shards: int) -> tuple[Any, list[str]]:
    clock = FakeClock()
    cp = harness.make(index_shards=shards, clock=clock)
    expected = []
    for n in range(40):
        if n % 4 == 0:
            clock.advance(1)  # runs of equal timestamps: ties across shards
        cp.save_state(f"t{n:02d}", AgentStateSnapshot())
        expected.append((clock(), f"t{n:02d}"))
    return cp, [tid for _, tid in sorted(expected, reverse=True)]


def test_index_shards_spread_a_namespace_and_list_in_order(
    kit: DynamoDBKit, harness: Harness
) -> None:
    cp, expected = _sharded_listing(harness, 4)
    partitions = {
        item["list_pk"]["S"]
        for page in kit.client.get_paginator("scan").paginate(
            TableName=kit.table,
            FilterExpression="begins_with(pk, :p)",
            ExpressionAttributeValues={":p": {"S": f"{harness.namespace}#"}},
        )
        for item in page["Items"]
    }
    assert len(partitions) == 4
    for page_size in (1, 3, 40):
        assert [t.thread_id for t in cp.iter_threads(page_size=page_size)] == expected


def test_raising_index_shards_keeps_existing_threads_listed(harness: Harness) -> None:
    _, expected = _sharded_listing(harness, 1)
    for shards in (3, 8):
        wider = harness.make(index_shards=shards)
        assert [t.thread_id for t in wider.iter_threads(page_size=7)] == expected


def test_async_calls_run_in_a_bounded_pool(kit: DynamoDBKit, portal: Portal) -> None:
    async def burst() -> tuple[list[int], list[tuple[str, dict[str, Any], str]]]:
        cp = await kit.make_async(namespace=new_namespace(), max_threads=2)
        calls = record_requests(cp)
        try:
            infos = await asyncio.gather(
                *(cp.save_state(f"t{n}", AgentStateSnapshot()) for n in range(12))
            )
            listed = await cp.list_threads()
            assert len(listed.threads) == 12
        finally:
            await cp.close()
        return [info.version for info in infos], calls

    versions, calls = portal.call(burst)
    assert versions == [1] * 12
    threads = {thread for _, _, thread in calls}
    assert 1 <= len(threads) <= 2
    assert all(name.startswith("agents-persistence-dynamodb") for name in threads)


def test_purge_gives_each_query_page_a_budget_of_its_own(kit: DynamoDBKit) -> None:
    """A backlog behind pages of live threads (which the filter empties) is purged whole.

    Each Query page is slowed down before it is sent; three pages in one budget would not fit
    in ``call_timeout`` (3 x 1.1 s > 3 s: the third request would be refused), one page per
    budget does, with almost 2 s left for moto's answer on a busy machine.
    """
    clock = FakeClock()
    cp = kit.make(namespace=new_namespace(), ttl=60, clock=clock, call_timeout=3.0)
    old = kit.make(namespace=cp.namespace, ttl=60, clock=FakeClock(), call_timeout=3.0)
    try:
        for n in range(5):  # expired first: the oldest, read last (newest first)
            old.save_state(f"old-{n}", AgentStateSnapshot())
        clock.advance(3600)
        for n in range(230):  # live: 2 full pages of 100 before the expired ones
            cp.save_state(f"live-{n}", AgentStateSnapshot())
        client = cp._table.connection.connection.client  # the kit's own test hook, as above
        queries: list[float] = []

        def slow_page(params: dict[str, Any], model: Any, **_: Any) -> None:
            if model.name == "Query":
                queries.append(time.monotonic())
                time.sleep(1.1)

        client.meta.events.register("provide-client-params.dynamodb.Query", slow_page)
        assert cp.purge_expired() == 5
        assert len(queries) >= 3
        assert {t.thread_id for t in cp.iter_threads()} == {f"live-{n}" for n in range(230)}
    finally:
        cp.close()
        old.close()
