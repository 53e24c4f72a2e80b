"""Encryption at rest on DynamoDB's own paths, on moto: the head item, overflow, races, formats.

The contract suite (``dynamodb+encrypted``) covers what every store does; these tests look
behind the library at what the pieces format stores when a checkpointer has keys: a sealed head
in the head item's binary attribute or in its overflow chunks, a lost race retried as a full
write, the single-item format refused, and threads copied between plaintext and encrypted
checkpointers (what ``agents-persistence copy`` does for each thread).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from agents_persistence import (
    AgentStateSnapshot,
    AsyncDynamoDBCheckpointer,
    ConfigurationError,
    DecryptionError,
    DynamoDBCheckpointer,
    TodoItem,
    open_async_checkpointer,
    open_checkpointer,
)
from agents_persistence._codec import is_sealed
from agents_persistence.cli._exchange import Entry, put
from agents_persistence.encryption import key_id_of
from agents_persistence.models.dynamodb import HEAD_SORT_KEY, ThreadHeadItem

from ..conftest import new_namespace
from ..kits.dynamodb import (
    CREDENTIALS,
    PIECES_KIT,
    REGION,
    SINGLE_ITEM_KIT,
    DynamoDBKit,
    noise,
    record_requests,
    started,
)
from ..kits.encrypted import keyring

if TYPE_CHECKING:
    from collections.abc import Iterator

MARKER = "sealed-marker-4b1d"


@pytest.fixture
def kit() -> DynamoDBKit:
    return started(PIECES_KIT)


@pytest.fixture
def single_item_kit() -> DynamoDBKit:
    return started(SINGLE_ITEM_KIT)


@pytest.fixture
def sealed(kit: DynamoDBKit) -> Iterator[DynamoDBCheckpointer[Any]]:
    with kit.make(namespace=new_namespace(), keys=keyring()) as checkpointer:
        yield checkpointer


def _state(files: int = 3) -> AgentStateSnapshot:
    """A state large enough to be cut into pieces (its files), holding `MARKER` everywhere."""
    return AgentStateSnapshot(
        files={f"/{MARKER}/{n}.md": f"{MARKER} {noise(8000)}" for n in range(files)},
        todos=[TodoItem(content=f"{MARKER} todo")],
    )


def _head_item(kit: DynamoDBKit, namespace: str, thread_id: str) -> dict[str, Any]:
    found = kit.client.get_item(
        TableName=kit.table,
        Key={"pk": {"S": f"{namespace}#{thread_id}"}, "sk": {"S": HEAD_SORT_KEY}},
        ConsistentRead=True,
    )
    item: dict[str, Any] = found["Item"]
    return item


def _assert_sealed(kit: DynamoDBKit, namespace: str, thread_id: str, key_id: str = "k1") -> None:
    values = kit.stored_values(namespace, thread_id)
    assert len(values) > 1
    assert all(is_sealed(value) for value in values)
    assert not any(MARKER.encode() in value for value in values)
    assert {key_id_of(value) for value in values} == {key_id}


def test_a_small_sealed_head_is_binary_in_the_head_item(
    kit: DynamoDBKit, sealed: DynamoDBCheckpointer[Any]
) -> None:
    state = _state()
    sealed.save_state("t", state)
    item = _head_item(kit, sealed.namespace, "t")
    names = ThreadHeadItem.sealed.attr_name, ThreadHeadItem.state.attr_name
    assert is_sealed(item[names[0]]["B"])
    assert names[1] not in item
    # The manifest kept in clear names neither files nor anything else of the state.
    assert MARKER not in item[ThreadHeadItem.manifest.attr_name]["S"]
    assert not any(MARKER in str(value) for value in item.values())
    _assert_sealed(kit, sealed.namespace, "t")
    assert sealed.load_state("t") == state


def test_a_sealed_head_too_large_for_the_head_item_overflows(
    kit: DynamoDBKit, sealed: DynamoDBCheckpointer[Any]
) -> None:
    state = _state()
    state.todos.extend(TodoItem(content=f"{MARKER} {noise(1000)}") for _ in range(400))
    sealed.save_state("t", state)
    item = _head_item(kit, sealed.namespace, "t")
    assert ThreadHeadItem.overflow.attr_name in item
    assert ThreadHeadItem.sealed.attr_name not in item
    assert ThreadHeadItem.state.attr_name not in item
    _assert_sealed(kit, sealed.namespace, "t")
    assert sealed.load_state("t") == state
    state.todos.append(TodoItem(content="one more"))
    sealed.save_state("t", state, expected_version=1)
    _assert_sealed(kit, sealed.namespace, "t")
    assert sealed.load_state("t") == state
    with kit.make(namespace=sealed.namespace) as plain, pytest.raises(DecryptionError):
        plain.load_state("t")


def test_a_delta_that_lost_a_race_is_retried_as_a_sealed_full_write(kit: DynamoDBKit) -> None:
    namespace = new_namespace()
    with (
        kit.make(namespace=namespace, keys=keyring()) as one,
        kit.make(namespace=namespace, keys=keyring()) as two,
    ):
        base = _state()
        one.save_state("t", base)
        assert two.load_state("t") == base  # two's next save is a delta on version 1
        first = base.model_copy(update={"files": {**base.files, "/one": noise(3000)}})
        one.save_state("t", first)
        mine = base.model_copy(update={"files": {**base.files, "/two": noise(3000)}})
        calls = record_requests(two)
        assert two.save_state("t", mine).version == 3  # no expected version: last write wins
        heads = [p for op, p, _ in calls if op == "PutItem" and p["Item"]["sk"]["S"] == "h"]
        assert len(heads) == 2  # the delta's head put lost, the full write's won
        _assert_sealed(kit, namespace, "t")
        assert one.load_state("t") == mine
        # Only what the winning head names is left: the losing attempt's pieces are gone.
        groups = {sk.rpartition("#")[0] for sk in kit.partition(namespace, "t")}
        assert len(kit.stored_values(namespace, "t")) == len(groups)


def test_keys_are_refused_on_a_table_of_the_single_item_format(
    single_item_kit: DynamoDBKit,
) -> None:
    namespace = new_namespace()
    with single_item_kit.make(namespace=namespace, keys=keyring()) as cp:
        with pytest.raises(ConfigurationError) as caught:
            cp.save_state("t", _state())
        message = str(caught.value)
        assert "single-item format" in message
        assert "pieces format" in message
        assert "agents-persistence copy" in message
        with pytest.raises(ConfigurationError, match="pieces format"):
            cp.load_state("t")
    assert single_item_kit.stored_count(namespace) == 0
    with single_item_kit.make(namespace=namespace) as plain:  # without keys it works as ever
        plain.save_state("t", _state())
        assert plain.load_state("t") is not None


def test_creating_a_single_item_table_with_keys_is_refused_before_creating_it(
    kit: DynamoDBKit,
) -> None:
    table = kit.new_table_name()
    with (
        DynamoDBCheckpointer(table, keys=keyring(), **kit.connection()) as cp,
        pytest.raises(ConfigurationError, match="single-item format"),
    ):
        cp.create_table(table_format="single-item")
    assert table not in kit.client.list_tables()["TableNames"]


def _copy(source: DynamoDBCheckpointer[Any], target: DynamoDBCheckpointer[Any]) -> list[str]:
    """What ``agents-persistence copy`` does, thread by thread (the CLI opens no keys)."""
    outcomes = []
    for thread in source.iter_threads(page_size=100):
        checkpoint = source.load_checkpoint(thread.thread_id)
        assert checkpoint is not None
        outcomes.append(put(target, Entry(checkpoint.info, checkpoint.state), datetime.now(UTC)))
    return outcomes


def test_copy_from_a_single_item_table_to_an_encrypted_one_and_back_to_plaintext(
    kit: DynamoDBKit, single_item_kit: DynamoDBKit
) -> None:
    namespace = new_namespace()
    states = {f"t{n}": _state(n + 3) for n in range(3)}
    with single_item_kit.make(namespace=namespace) as old:
        for thread_id, state in states.items():
            old.save_state(thread_id, state)
        old.save_state("t0", states["t0"], expected_version=1)  # version 2 is kept
        with kit.make(namespace=namespace, keys=keyring()) as encrypted:
            assert _copy(old, encrypted) == ["written"] * 3
            assert _copy(old, encrypted) == ["skipped"] * 3  # a rerun copies nothing
            for thread_id, state in states.items():
                _assert_sealed(kit, namespace, thread_id)
                checkpoint, original = (cp.load_checkpoint(thread_id) for cp in (encrypted, old))
                assert checkpoint is not None
                assert original is not None
                assert (checkpoint.state, checkpoint.info) == (state, original.info)
            back = new_namespace()
            with kit.make(namespace=back) as plain:
                assert _copy(encrypted, plain) == ["written"] * 3
                for thread_id, state in states.items():
                    values = kit.stored_values(back, thread_id)
                    assert not any(is_sealed(value) for value in values)
                    assert plain.load_state(thread_id) == state


def test_keys_reach_the_store_through_urls_sync_and_async(kit: DynamoDBKit) -> None:
    url = f"dynamodb://{kit.table}?region={REGION}&endpoint={kit.endpoint}"
    namespace = new_namespace()
    state = _state()
    with open_checkpointer(url, namespace=namespace, keys=keyring(), **CREDENTIALS) as cp:
        assert isinstance(cp, DynamoDBCheckpointer)
        assert cp.encrypts
        cp.save_state("sync", state)

    async def main() -> None:
        async with open_async_checkpointer(
            url, namespace=namespace, keys=keyring(), **CREDENTIALS
        ) as acp:
            assert isinstance(acp, AsyncDynamoDBCheckpointer)
            assert acp.encrypts
            await acp.save_state("async", state)
            assert await acp.load_state("sync") == state

    anyio.run(main)
    for thread_id in ("sync", "async"):
        _assert_sealed(kit, namespace, thread_id)
    plain = DynamoDBCheckpointer.from_url(url, namespace=namespace, **CREDENTIALS)
    with plain, pytest.raises(DecryptionError):
        plain.load_state("async")
