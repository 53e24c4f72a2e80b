"""The DynamoDB savers beyond the conformance suite: large values, retention, errors, twins."""

from __future__ import annotations

import asyncio
import random
import string
import threading
import uuid
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from langgraph.checkpoint.base import INTERRUPT  # type: ignore[attr-defined]
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)

from agents_persistence.errors import (
    BackendUnavailableError,
    ConfigurationError,
    InvalidArgumentError,
    InvalidThreadIdError,
    SchemaNotReadyError,
)
from agents_persistence.langgraph import AsyncDynamoDBCheckpointSaver, DynamoDBCheckpointSaver
from tests.kits.base import closed_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from langchain_core.runnables import RunnableConfig

ITEM_LIMIT = 400 * 1024


@pytest.fixture
def saver(dynamodb_options: dict[str, Any]) -> Iterator[DynamoDBCheckpointSaver]:
    with DynamoDBCheckpointSaver(**dynamodb_options) as made:
        yield made


def items(options: dict[str, Any], thread_id: str) -> list[dict[str, Any]]:
    """Every stored item of a thread, read behind the saver's back."""
    client = boto3.client(
        "dynamodb",
        region_name=options["region"],
        endpoint_url=options["endpoint_url"],
        aws_access_key_id=options["aws_access_key_id"],
        aws_secret_access_key=options["aws_secret_access_key"],
    )
    pages = client.get_paginator("query").paginate(
        TableName=options["table_name"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": thread_id}},
    )
    return [item for page in pages for item in page["Items"]]


def kinds(options: dict[str, Any], thread_id: str) -> dict[str, int]:
    """How many items of each kind (sort key prefix) a thread has."""
    found: dict[str, int] = {}
    for item in items(options, thread_id):
        kind = item["sk"]["S"][0]
        found[kind] = found.get(kind, 0) + 1
    return found


def _chain(
    saver: DynamoDBCheckpointSaver, thread_id: str, steps: int, *, ns: str = "", **metadata: Any
) -> list[RunnableConfig]:
    """``steps`` checkpoints changing channel ``a``, keeping channel ``b``, a write each."""
    stored: list[RunnableConfig] = []
    version: str | None = None
    for step in range(steps):
        version = saver.get_next_version(version, None)
        checkpoint = generate_checkpoint(
            channel_values={"a": f"a{step}", "b": "unchanged"},
            channel_versions={"a": version, "b": "1"},
        )
        config = generate_config(thread_id, checkpoint_ns=ns)
        if stored:
            config["configurable"]["checkpoint_id"] = stored[-1]["configurable"]["checkpoint_id"]
        new_versions = {"a": version, "b": "1"} if step == 0 else {"a": version}
        stored.append(
            saver.put(config, checkpoint, generate_metadata(step=step, **metadata), new_versions)
        )
        saver.put_writes(stored[-1], [("a", f"w{step}")], "task")
    return stored


def _text(size: int) -> str:
    # Random letters: nothing on the way can shrink them below the item limit.
    return "".join(random.choices(string.ascii_letters, k=size))


# --- values past DynamoDB's item limit ---------------------------------------------------


def test_a_channel_value_over_400_kb_saves_and_loads_back_equal(
    saver: DynamoDBCheckpointSaver, dynamodb_options: dict[str, Any]
) -> None:
    thread_id = str(uuid.uuid4())
    big = {"text": _text(1_200_000), "numbers": list(range(20_000)), "raw": _text(1000).encode()}
    checkpoint = generate_checkpoint(
        channel_values={"big": big, "small": "s"}, channel_versions={"big": "1", "small": "1"}
    )
    stored = saver.put(
        generate_config(thread_id), checkpoint, generate_metadata(), {"big": "1", "small": "1"}
    )
    large_write = _text(900_000)
    saver.put_writes(stored, [("big", large_write)], "task")

    found = saver.get_tuple(generate_config(thread_id))

    assert found is not None
    assert found.checkpoint["channel_values"] == {"big": big, "small": "s"}
    assert found.pending_writes == [("task", "big", large_write)]
    stored_items = items(dynamodb_options, thread_id)
    sizes = [sum(len(k) + len(str(v)) for k, v in item.items()) for item in stored_items]
    assert max(sizes) < ITEM_LIMIT
    assert kinds(dynamodb_options, thread_id)["P"] >= 5, "both payloads were split in parts"


def test_large_metadata_is_split_too_and_filters_still_match(
    saver: DynamoDBCheckpointSaver,
) -> None:
    thread_id = str(uuid.uuid4())
    note = _text(500_000)
    checkpoint = generate_checkpoint()
    saver.put(generate_config(thread_id), checkpoint, generate_metadata(note=note), {})

    listed = list(saver.list(generate_config(thread_id), filter={"note": note}))

    assert [t.checkpoint["id"] for t in listed] == [checkpoint["id"]]
    assert listed[0].metadata["note"] == note


def test_deleting_a_thread_deletes_the_parts_of_its_values(
    saver: DynamoDBCheckpointSaver, dynamodb_options: dict[str, Any]
) -> None:
    thread_id = str(uuid.uuid4())
    checkpoint = generate_checkpoint(
        channel_values={"big": _text(800_000)}, channel_versions={"big": "1"}
    )
    saver.put(generate_config(thread_id), checkpoint, generate_metadata(), {"big": "1"})
    assert kinds(dynamodb_options, thread_id)["P"] >= 2

    saver.delete_thread(thread_id)

    assert items(dynamodb_options, thread_id) == []


# --- storage, retention, maintenance ----------------------------------------------------


def test_an_unchanged_channel_is_stored_once(
    saver: DynamoDBCheckpointSaver, dynamodb_options: dict[str, Any]
) -> None:
    thread_id = str(uuid.uuid4())
    stored = _chain(saver, thread_id, 4)

    assert kinds(dynamodb_options, thread_id) == {"T": 1, "C": 4, "B": 5, "W": 4}
    for step, config in enumerate(stored):
        found = saver.get_tuple(config)
        assert found is not None
        assert found.checkpoint["channel_values"] == {"a": f"a{step}", "b": "unchanged"}


def test_retention_keeps_the_last_n_per_thread_and_namespace(
    dynamodb_options: dict[str, Any],
) -> None:
    thread_id = str(uuid.uuid4())
    with DynamoDBCheckpointSaver(**dynamodb_options, keep_last=2) as saver:
        stored = _chain(saver, thread_id, 5)
        child = _chain(saver, thread_id, 3, ns="child")

        main = list(saver.list(generate_config(thread_id, checkpoint_ns="")))
        assert [t.config for t in main] == stored[:-3:-1]
        assert [t.pending_writes for t in main] == [[("task", "a", "w4")], [("task", "a", "w3")]]
        children = saver.list(generate_config(thread_id, checkpoint_ns="child"))
        assert [t.config for t in children] == child[:-3:-1]
    # Per namespace: 2 checkpoints, their 2 writes; values: the a of each, and b.
    assert kinds(dynamodb_options, thread_id) == {"T": 1, "C": 4, "W": 4, "B": 6}


def test_the_async_twin_applies_retention_too(dynamodb_options: dict[str, Any]) -> None:
    thread_id = str(uuid.uuid4())

    async def scenario() -> int:
        async with AsyncDynamoDBCheckpointSaver(**dynamodb_options, keep_last=1) as saver:
            config = generate_config(thread_id)
            for _ in range(3):
                checkpoint = generate_checkpoint()
                config = await saver.aput(config, checkpoint, generate_metadata(), {})
            return len([t async for t in saver.alist(generate_config(thread_id))])

    assert asyncio.run(scenario()) == 1


@pytest.mark.parametrize("keep_last", [0, -1, 1.5, True])
def test_retention_must_be_a_positive_count(keep_last: Any) -> None:
    with pytest.raises(ConfigurationError):
        DynamoDBCheckpointSaver(keep_last=keep_last, region="us-east-1")


def test_prune_keeps_the_latest_and_collects_unused_values(
    saver: DynamoDBCheckpointSaver, dynamodb_options: dict[str, Any]
) -> None:
    thread_id = str(uuid.uuid4())
    stored = _chain(saver, thread_id, 4)

    saver.prune([thread_id])

    assert [t.config for t in saver.list(generate_config(thread_id))] == [stored[-1]]
    assert kinds(dynamodb_options, thread_id) == {"T": 1, "C": 1, "B": 2, "W": 1}
    latest = saver.get_tuple(generate_config(thread_id))
    assert latest is not None
    assert latest.checkpoint["channel_values"] == {"a": "a3", "b": "unchanged"}
    with pytest.raises(InvalidArgumentError):
        saver.prune([thread_id], strategy="sideways")


def test_delete_for_runs_collects_the_values_only_its_checkpoints_used(
    saver: DynamoDBCheckpointSaver, dynamodb_options: dict[str, Any]
) -> None:
    thread_id = str(uuid.uuid4())
    kept = _chain(saver, thread_id, 2, run_id="run-kept")
    config = dict(kept[-1])
    checkpoint = generate_checkpoint(channel_values={"a": "doomed"}, channel_versions={"a": "9"})
    saver.put(config, checkpoint, generate_metadata(run_id="run-doomed"), {"a": "9"})

    saver.delete_for_runs(["run-doomed"])

    assert [t.config for t in saver.list(generate_config(thread_id))] == kept[::-1]
    assert kinds(dynamodb_options, thread_id) == {"T": 1, "C": 2, "B": 3, "W": 2}


def test_copy_thread_copies_parts_and_refuses_a_target_with_checkpoints(
    saver: DynamoDBCheckpointSaver,
) -> None:
    source, target = str(uuid.uuid4()), str(uuid.uuid4())
    big = _text(700_000)
    checkpoint = generate_checkpoint(channel_values={"big": big}, channel_versions={"big": "1"})
    saver.put(generate_config(source), checkpoint, generate_metadata(), {"big": "1"})

    saver.copy_thread(source, target)
    saver.delete_thread(source)

    copied = saver.get_tuple(generate_config(target))
    assert copied is not None
    assert copied.checkpoint["channel_values"] == {"big": big}
    with pytest.raises(InvalidArgumentError):
        saver.copy_thread(target, target)
    other = str(uuid.uuid4())
    saver.put(generate_config(other), generate_checkpoint(), generate_metadata(), {})
    with pytest.raises(InvalidArgumentError):
        saver.copy_thread(target, other)


def test_namespaces_that_share_a_prefix_stay_apart(saver: DynamoDBCheckpointSaver) -> None:
    thread_id = str(uuid.uuid4())
    for ns in ("a", "a#b", "a%23b"):
        _chain(saver, thread_id, 1, ns=ns)

    for ns in ("a", "a#b", "a%23b"):
        listed = list(saver.list(generate_config(thread_id, checkpoint_ns=ns)))
        assert [t.config["configurable"]["checkpoint_ns"] for t in listed] == [ns]


# --- errors and configuration ------------------------------------------------------------


def test_invalid_arguments_raise_typed_errors(saver: DynamoDBCheckpointSaver) -> None:
    with pytest.raises(InvalidThreadIdError):
        saver.get_tuple({"configurable": {"thread_id": ""}})
    with pytest.raises(InvalidArgumentError):
        saver.put_writes(generate_config("t"), [("a", 1)], "task")
    with pytest.raises(InvalidArgumentError):
        saver.put(
            generate_config("t"),
            generate_checkpoint(channel_values={"a": object()}, channel_versions={"a": "1"}),
            generate_metadata(),
            {"a": "1"},
        )


def test_a_missing_table_is_not_ready_until_setup(dynamodb_options: dict[str, Any]) -> None:
    options = {**dynamodb_options, "table_name": f"lg-missing-{uuid.uuid4().hex[:8]}"}
    with DynamoDBCheckpointSaver(**options) as saver:
        with pytest.raises(SchemaNotReadyError, match=r"setup\(\)"):
            saver.get_tuple(generate_config("t"))
        saver.setup()
        assert saver.create_table() is False, "idempotent"
        assert saver.get_tuple(generate_config("t")) is None
        assert saver.delete_table() is True


def test_an_unreachable_endpoint_is_backend_unavailable() -> None:
    saver = DynamoDBCheckpointSaver(
        region="us-east-1",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        call_timeout=2,
        max_retries=0,
    )
    with saver, pytest.raises(BackendUnavailableError):
        saver.get_tuple(generate_config("t"))


def test_from_url_takes_the_stores_url_options(dynamodb_options: dict[str, Any]) -> None:
    url = (
        f"dynamodb://{dynamodb_options['table_name']}?region=us-east-1"
        f"&endpoint={dynamodb_options['endpoint_url']}&call_timeout=7&ttl=60"
    )
    with DynamoDBCheckpointSaver.from_url(
        url, aws_access_key_id="testing", aws_secret_access_key="testing"
    ) as saver:
        assert saver.table_name == dynamodb_options["table_name"]
        assert saver.get_tuple(generate_config(str(uuid.uuid4()))) is None
    with pytest.raises(ConfigurationError):
        DynamoDBCheckpointSaver.from_url("dynamodb://some-table?namespace=x")


def test_the_twins_read_each_others_items(
    saver: DynamoDBCheckpointSaver, dynamodb_options: dict[str, Any]
) -> None:
    thread_id = str(uuid.uuid4())
    stored = _chain(saver, thread_id, 2)

    async def read() -> Any:
        async with AsyncDynamoDBCheckpointSaver(**dynamodb_options, max_threads=2) as twin:
            return await twin.aget_tuple(generate_config(thread_id))

    found = asyncio.run(read())
    assert found is not None
    assert found.config == stored[-1]
    assert found.pending_writes == [("task", "a", "w1")]


def test_a_key_too_long_for_dynamodb_is_an_invalid_argument(
    saver: DynamoDBCheckpointSaver,
) -> None:
    checkpoint = generate_checkpoint(channel_values={"a": 1}, channel_versions={"a": "1"})
    config = generate_config(str(uuid.uuid4()), checkpoint_ns="n" * 1100)
    with pytest.raises(InvalidArgumentError, match="sort key"):
        saver.put(config, checkpoint, generate_metadata(), {"a": "1"})


def test_retention_orders_numeric_versions_by_their_counters(
    dynamodb_options: dict[str, Any],
) -> None:
    thread_id = str(uuid.uuid4())
    with DynamoDBCheckpointSaver(**dynamodb_options, keep_last=1) as saver:
        config = generate_config(thread_id)
        for version in (9, 10, 11):
            checkpoint = generate_checkpoint(
                channel_values={"a": version}, channel_versions={"a": version}
            )
            config = saver.put(config, checkpoint, generate_metadata(), {"a": version})
        latest = saver.get_tuple(generate_config(thread_id))
    assert latest is not None
    assert latest.checkpoint["channel_values"] == {"a": 11}
    assert kinds(dynamodb_options, thread_id) == {"T": 1, "C": 1, "B": 1}


@pytest.mark.parametrize("ttl", [None, 3600])
def test_concurrent_writers_of_one_thread_all_succeed(
    dynamodb_options: dict[str, Any], ttl: int | None
) -> None:
    thread_id = str(uuid.uuid4())
    errors: list[BaseException] = []

    def writer(saver: DynamoDBCheckpointSaver, ns: str) -> None:
        try:
            _chain(saver, thread_id, 5, ns=ns)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    with DynamoDBCheckpointSaver(**dynamodb_options, ttl=ttl) as saver:
        threads = [threading.Thread(target=writer, args=(saver, f"ns{n}")) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        listed = list(saver.list({"configurable": {"thread_id": thread_id}}))
    assert len(listed) == 20, "every namespace's checkpoints"
    assert kinds(dynamodb_options, thread_id)["T"] == 1


def test_special_writes_to_one_index_keep_the_last(saver: DynamoDBCheckpointSaver) -> None:
    thread_id = str(uuid.uuid4())
    stored = _chain(saver, thread_id, 1)

    saver.put_writes(stored[0], [(INTERRUPT, "first"), (INTERRUPT, "second")], "task-i")
    saver.put_writes(stored[0], [("a", "kept"), ("a", "also")], "task-a")
    saver.put_writes(stored[0], [("a", "ignored")], "task-a")

    found = saver.get_tuple(stored[0])
    assert found is not None
    assert sorted(found.pending_writes) == sorted(
        [
            ("task", "a", "w0"),
            ("task-i", INTERRUPT, "second"),
            ("task-a", "a", "kept"),
            ("task-a", "a", "also"),
        ]
    )
