"""The DynamoDB pieces format on moto: what a save writes, what a load reads, crashes, limits.

A thread is a partition: a head item plus piece items. These tests look behind the library
(boto3, recorded requests) to check that a save writes what changed and that a crash between
the requests of a large save leaves the previous version whole.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from agents_persistence import (
    AgentMessage,
    AgentStateSnapshot,
    CorruptStateError,
    DynamoDBCheckpointer,
    TextContent,
    TodoItem,
)

from ..conftest import new_namespace
from ..kits.dynamodb import PIECES_KIT, DynamoDBKit, noise, record_requests, started
from ..support import FakeClock


@pytest.fixture
def kit() -> DynamoDBKit:
    return started(PIECES_KIT)


@pytest.fixture
def cp(kit: DynamoDBKit) -> Any:
    with kit.make(namespace=new_namespace()) as checkpointer:
        yield checkpointer


@pytest.fixture
def own_table(kit: DynamoDBKit) -> Any:
    """A table of its own (moto copies the whole table for each transaction: keep large
    states out of the shared one)."""
    table = kit.new_table_name()
    with DynamoDBCheckpointer(table, **kit.connection()) as maker:
        maker.create_table()
        yield table
        maker.delete_table()


def _turn(state: AgentStateSnapshot, n: int) -> AgentStateSnapshot:
    messages = [
        *state.messages,
        AgentMessage(role="User", content=TextContent(value=f"question {n} {noise(300)}")),
        AgentMessage(role="Agent", content=TextContent(value=f"answer {n} {noise(700)}")),
    ]
    return state.model_copy(update={"messages": messages, "scratchpad": {"turn": n}})


def _sent(calls: list[tuple[str, dict[str, Any], str]]) -> tuple[int, int]:
    """Items and body bytes the recorded requests wrote (puts only)."""
    items = size = 0
    for op, params, _ in calls:
        puts: list[dict[str, Any]] = []
        if op == "PutItem":
            puts = [params["Item"]]
        elif op == "BatchWriteItem":
            for requests in params["RequestItems"].values():
                puts += [r["PutRequest"]["Item"] for r in requests if "PutRequest" in r]
        items += len(puts)
        for item in puts:
            for value in item.values():
                size += len(next(iter(value.values()))) if "S" in value or "B" in value else 0
    return items, size


def test_late_saves_write_what_changed(cp: DynamoDBCheckpointer[Any]) -> None:
    state = AgentStateSnapshot(files={f"f{n}.txt": noise(2000) for n in range(20)})
    calls = record_requests(cp)
    written: list[tuple[int, int]] = []
    for n in range(100):
        state = _turn(state, n)
        calls.clear()
        cp.save_state("long", state)
        written.append(_sent(calls))
    size = len(state.model_dump_json())
    assert size > 150_000
    late_items, late_bytes = written[-1]
    assert late_items <= 3  # the head, one transcript segment (the group of small entries)
    assert late_bytes < 6_000
    assert written[0][1] > 40_000
    assert cp.load_state("long") == state


def test_edits_truncations_and_removals_load_as_saved(cp: DynamoDBCheckpointer[Any]) -> None:
    state = AgentStateSnapshot(files={"a": noise(9000), "b": noise(9000), "c": "small"})
    for n in range(5):
        state = _turn(state, n)
        cp.save_state("t", state)
    edited = state.model_copy(deep=True)
    edited.messages[1] = AgentMessage(role="Agent", content=TextContent(value="edited"))
    cp.save_state("t", edited)
    assert cp.load_state("t") == edited
    truncated = edited.model_copy(update={"messages": edited.messages[:3]})
    cp.save_state("t", truncated)
    assert cp.load_state("t") == truncated
    removed = truncated.model_copy(update={"files": {"b": truncated.files["b"]}})
    cp.save_state("t", removed)
    assert cp.load_state("t") == removed
    emptied = removed.model_copy(update={"files": {}, "messages": []})
    cp.save_state("t", emptied)
    assert cp.load_state("t") == emptied


def test_two_checkpointers_alternating_never_read_a_wrong_state(kit: DynamoDBKit) -> None:
    namespace = new_namespace()
    with kit.make(namespace=namespace) as one, kit.make(namespace=namespace) as two:
        state = AgentStateSnapshot(files={"f": noise(20_000)})
        for n in range(8):
            writer, reader = (one, two) if n % 2 else (two, one)
            state = _turn(state, n)
            if n % 3 == 0:
                state.files[f"g{n}"] = noise(1500)
            writer.save_state("shared", state)
            assert reader.load_state("shared") == state
            assert writer.load_state("shared") == state


def test_pieces_live_with_their_head_and_go_with_it(kit: DynamoDBKit) -> None:
    clock = FakeClock()
    namespace = new_namespace()
    with kit.make(namespace=namespace, ttl=60, clock=clock) as cp:
        state = AgentStateSnapshot(files={"f": noise(20_000)})
        for _ in range(6):
            state = _turn(state, len(state.messages))
            cp.save_state("t", state)
            _assert_pieces_outlive_the_head(kit, namespace, "t")
            clock.advance(25)  # past the pieces' first expiry: a save rewrites them
        assert cp.load_state("t") == state
        assert cp.delete_thread("t") is True
        assert kit.partition(namespace, "t") == []

        cp.save_state("gone", state)
        clock.advance(61)
        assert cp.purge_expired() == 1
        assert kit.partition(namespace, "gone") == []


def _assert_pieces_outlive_the_head(kit: DynamoDBKit, namespace: str, thread_id: str) -> None:
    items = kit.client.query(
        TableName=kit.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"{namespace}#{thread_id}"}},
        ConsistentRead=True,
    )["Items"]
    (head,) = [item for item in items if item["sk"]["S"] == "h"]
    head_ttl = int(head["expires_at"]["N"])
    assert all(int(item["expires_at"]["N"]) >= head_ttl for item in items)


def _fail_head_put(cp: DynamoDBCheckpointer[Any]) -> list[str]:
    """Make the next head put (the last step of a large save) fail as a crash would."""
    client = cp._table.connection.connection.client
    seen: list[str] = []

    def crash(params: dict[str, Any], **_: Any) -> None:
        if params["Item"]["sk"]["S"] == "h" and not seen:
            seen.append("crashed")
            raise RuntimeError("the process died here")

    client.meta.events.register("provide-client-params.dynamodb.PutItem", crash)
    return seen


def test_a_crash_between_pieces_and_head_leaves_the_old_version(
    kit: DynamoDBKit, own_table: str
) -> None:
    namespace = new_namespace()
    with kit.make(namespace=namespace, table=own_table, call_timeout=60) as cp:
        old = AgentStateSnapshot(files={"small": "x"}, todos=[TodoItem(content="keep")])
        cp.save_state("t", old)
        before = kit.partition(namespace, "t", own_table)
        big = AgentStateSnapshot(files={"big": noise(5_000_000)})
        crashed = _fail_head_put(cp)
        with pytest.raises(RuntimeError, match="died"):
            cp.save_state("t", big)
        assert crashed == ["crashed"]
        # The new pieces were written, the head was not switched: the old version loads.
        assert len(kit.partition(namespace, "t", own_table)) > len(before)
        checkpoint = cp.load_checkpoint("t")
        assert (checkpoint.state, checkpoint.info.version) == (old, 1)
        with kit.make(namespace=namespace, table=own_table, call_timeout=60) as other:
            assert other.load_state("t") == old
        # The next save works, and removes the pieces the crashed one left.
        assert cp.save_state("t", big).version == 2
        assert cp.load_state("t") == big
        after = kit.partition(namespace, "t", own_table)
        # The head and the chunks of the one piece it names (the big file, over 350 KB each).
        assert after[0] == "h"
        assert len({sk.rpartition("#")[0] for sk in after[1:]}) == 1
        assert len(after) > 5


def test_a_ten_megabyte_state_saves_and_loads(kit: DynamoDBKit, own_table: str) -> None:
    namespace = new_namespace()
    with kit.make(namespace=namespace, table=own_table, call_timeout=120) as cp:
        state = AgentStateSnapshot(
            files={f"f{n}": noise(1_000_000) for n in range(5)},
            messages=[
                AgentMessage(role="User", content=TextContent(value=noise(50_000)))
                for _ in range(100)
            ],
        )
        info = cp.save_state("huge", state)
        assert info.size > 10_000_000
        assert cp.load_state("huge") == state
        assert cp.list_threads().threads[0].size == info.size
        state.messages.append(AgentMessage(role="Agent", content=TextContent(value="done")))
        calls = record_requests(cp)
        cp.save_state("huge", state)
        assert _sent(calls)[1] < 2_000  # a delta: the new message and the head
        assert cp.load_state("huge") == state


def test_a_head_too_large_for_one_item_overflows(cp: DynamoDBCheckpointer[Any]) -> None:
    todos = [TodoItem(content=noise(1000)) for _ in range(500)]  # 500 KB in the head
    state = AgentStateSnapshot(todos=todos)
    cp.save_state("t", state)
    assert cp.load_state("t") == state
    state.todos.append(TodoItem(content="one more"))
    cp.save_state("t", state)
    assert cp.load_state("t") == state


def test_a_missing_piece_is_corrupt_never_a_wrong_state(
    kit: DynamoDBKit, cp: DynamoDBCheckpointer[Any]
) -> None:
    cp.save_state("t", AgentStateSnapshot(files={"f": noise(20_000)}))
    pieces = [sk for sk in kit.partition(cp.namespace, "t") if sk != "h"]
    kit.client.delete_item(
        TableName=kit.table,
        Key={"pk": {"S": f"{cp.namespace}#t"}, "sk": {"S": pieces[0]}},
    )
    with pytest.raises(CorruptStateError, match="missing"):
        cp.load_state("t")


def test_a_head_stored_whole_loads_and_its_next_save_splits_it(
    kit: DynamoDBKit, cp: DynamoDBCheckpointer[Any]
) -> None:
    stamp = "2030-01-01T00:00:00.000000+0000"
    whole = '{"todos":[{"content":"Test todo","status":"pending"}],"files":{"test.txt":"content"}}'
    kit.client.put_item(
        TableName=kit.table,
        Item={
            "pk": {"S": f"{cp.namespace}#rust"},
            "sk": {"S": "h"},
            "list_pk": {"S": cp.namespace},
            "list_sk": {"S": f"{stamp}#rust"},
            "state": {"S": whole},
            "version": {"N": "3"},
            "created_at": {"S": stamp},
            "updated_at": {"S": stamp},
            "size": {"N": str(len(whole))},
        },
    )
    state = cp.load_state("rust")
    assert state is not None
    assert state.files == {"test.txt": "content"}
    state.files["new.txt"] = "more"
    assert cp.save_state("rust", state, expected_version=3).version == 4
    assert cp.load_state("rust") == state


def test_listing_reads_heads_only(kit: DynamoDBKit, cp: DynamoDBCheckpointer[Any]) -> None:
    for n in range(3):
        cp.save_state(f"t{n}", AgentStateSnapshot(files={"f": noise(20_000)}))
    # Looking behind the library: the index holds the heads, never the pieces.
    index = kit.client.query(
        TableName=kit.table,
        IndexName="by_updated",
        KeyConditionExpression="list_pk = :ns",
        ExpressionAttributeValues={":ns": {"S": cp.namespace}},
    )["Items"]
    assert sorted(item["sk"]["S"] for item in index) == ["h", "h", "h"]
    assert [t.thread_id for t in cp.list_threads().threads] == ["t2", "t1", "t0"]


def test_the_default_limit_is_32_mib(cp: DynamoDBCheckpointer[Any]) -> None:
    assert DynamoDBCheckpointer.default_max_state_bytes == 32 * 1024 * 1024
    assert cp.max_state_bytes == 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ([("id", "HASH")], "neither table format"),
        ([("pk", "HASH"), ("sk", "RANGE")], "without the 'by_updated' index"),  # LangGraph's
    ],
)
def test_a_table_of_neither_format_is_refused(
    kit: DynamoDBKit, keys: list[tuple[str, str]], match: str
) -> None:
    from agents_persistence import SchemaNotReadyError

    table = kit.new_table_name()
    kit.client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys],
        AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name, _ in keys],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        with kit.make(namespace="n" + uuid.uuid4().hex[:8], table=table) as cp:
            with pytest.raises(SchemaNotReadyError, match=match):
                cp.load_state("t")
            with pytest.raises(SchemaNotReadyError, match=match):
                cp.save_state("t", AgentStateSnapshot())
    finally:
        kit.client.delete_table(TableName=table)


def test_the_requests_of_saves_loads_and_listings(kit: DynamoDBKit) -> None:
    clock = FakeClock()
    with kit.make(namespace=new_namespace(), ttl=60, clock=clock) as cp:
        calls = record_requests(cp)
        small = AgentStateSnapshot(files={"f": noise(3000)})
        cp.save_state("small", small)
        # The table's format, once; a state below 16 KB is one head, and of a thread this
        # checkpointer knows nothing of, tried as a create: one conditional put.
        assert [op for op, _, _ in calls] == ["DescribeTable", "PutItem"]
        assert "ConditionExpression" in calls[1][1]
        calls.clear()
        state = AgentStateSnapshot(files={"f": noise(20_000)}, todos=[TodoItem(content="a")])
        cp.save_state("t", state)
        cp.save_state("t2", state, expected_version=0)
        # Above 4 KB the partition's keys are read first (one Query), unless it is a create;
        # then the pieces, then the head on condition.
        assert [op for op, _, _ in calls] == [
            "Query",
            "BatchWriteItem",
            "PutItem",
            "BatchWriteItem",
            "PutItem",
        ]
        assert calls[0][1]["ConsistentRead"] is True
        calls.clear()
        state.todos[0].status = "completed"
        cp.save_state("t", state)
        assert [op for op, _, _ in calls] == ["PutItem"]  # only the head changed
        calls.clear()
        assert cp.load_state("t") == state
        (load,) = calls
        assert (load[0], load[1]["ConsistentRead"]) == ("Query", True)
        assert "IndexName" not in load[1]
        calls.clear()
        cp.list_threads()
        clock.advance(61)
        assert cp.purge_expired() == 3
        operations = [op for op, _, _ in calls]
        assert "Scan" not in operations
        index_queries = [params for op, params, _ in calls if "IndexName" in params]
        assert len(index_queries) == 2
        assert all(params["ScanIndexForward"] is False for params in index_queries)
