"""The Redis savers beyond the conformance suite: storage, retention, keys, errors, both twins."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import redis
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from redis.crc import key_slot

from agents_persistence.errors import (
    BackendUnavailableError,
    ConfigurationError,
    CorruptStateError,
    InvalidArgumentError,
    InvalidThreadIdError,
)
from agents_persistence.langgraph import AsyncRedisCheckpointSaver, RedisCheckpointSaver
from agents_persistence.langgraph._redis_plans import ThreadKeys
from tests.conftest import _ready
from tests.kits.base import closed_port
from tests.kits.redis import REDIS_URL, RedisClusterKit
from tests.langgraph.redis_support import CLUSTER_KIT, delete_prefix, redis_prefix, server_url

if TYPE_CHECKING:
    from collections.abc import Iterator

    from langchain_core.runnables import RunnableConfig

__all__ = ["redis_prefix"]  # the fixture, imported for pytest


@pytest.fixture
def client() -> Iterator[redis.Redis[bytes]]:
    with redis.Redis.from_url(REDIS_URL) as made:
        yield made


@pytest.fixture
def saver(redis_prefix: str) -> Iterator[RedisCheckpointSaver]:
    with RedisCheckpointSaver.from_url(REDIS_URL, key_prefix=redis_prefix) as made:
        yield made


def _chain(
    saver: RedisCheckpointSaver,
    thread_id: str,
    steps: int,
    *,
    ns: str = "",
    writes: bool = False,
    **metadata: Any,
) -> list[RunnableConfig]:
    """``steps`` checkpoints, each changing channel ``a`` and keeping channel ``b``."""
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
        if writes:
            saver.put_writes(stored[-1], [("a", f"w{step}")], "task")
    return stored


def _hlen(client: redis.Redis[bytes], prefix: str, thread_id: str, part: str) -> int:
    keys = dict(
        zip(
            ("cp", "ord", "run", "rec", "refs", "blobs", "widx", "writes"),
            ThreadKeys(prefix).of(thread_id),
            strict=True,
        )
    )
    return int(client.hlen(keys[part]))


# --- storage -----------------------------------------------------------------------------


def test_an_unchanged_channel_is_stored_once(
    saver: RedisCheckpointSaver, client: redis.Redis[bytes], redis_prefix: str
) -> None:
    thread_id = str(uuid.uuid4())
    stored = _chain(saver, thread_id, 4)

    assert _hlen(client, redis_prefix, thread_id, "blobs") == 5, "four versions of a, one of b"
    for step, config in enumerate(stored):
        found = saver.get_tuple(config)
        assert found is not None
        assert found.checkpoint["channel_values"] == {"a": f"a{step}", "b": "unchanged"}


def test_prune_keeps_the_latest_and_collects_unused_blobs(
    saver: RedisCheckpointSaver, client: redis.Redis[bytes], redis_prefix: str
) -> None:
    thread_id = str(uuid.uuid4())
    stored = _chain(saver, thread_id, 4)
    saver.put_writes(stored[0], [("a", "old")], "task-old")
    saver.put_writes(stored[-1], [("a", "new")], "task-new")

    saver.prune([thread_id])

    assert [t.config for t in saver.list(generate_config(thread_id))] == [stored[-1]]
    assert _hlen(client, redis_prefix, thread_id, "blobs") == 2, "the latest a, and b"
    assert _hlen(client, redis_prefix, thread_id, "writes") == 1
    latest = saver.get_tuple(generate_config(thread_id))
    assert latest is not None
    assert latest.checkpoint["channel_values"] == {"a": "a3", "b": "unchanged"}
    assert latest.pending_writes == [("task-new", "a", "new")]


def test_delete_for_runs_collects_the_blobs_only_its_checkpoints_used(
    saver: RedisCheckpointSaver, client: redis.Redis[bytes], redis_prefix: str
) -> None:
    thread_id, run = str(uuid.uuid4()), str(uuid.uuid4())
    kept = _chain(saver, thread_id, 1)
    first = saver.get_tuple(kept[0])
    assert first is not None
    version = saver.get_next_version(first.checkpoint["channel_versions"]["a"], None)
    checkpoint = generate_checkpoint(
        channel_values={"a": "by the run", "b": "unchanged"},
        channel_versions={"a": version, "b": "1"},
    )
    saver.put(
        {"configurable": {**kept[0]["configurable"]}},
        checkpoint,
        generate_metadata(run_id=run),
        {"a": version},
    )
    assert _hlen(client, redis_prefix, thread_id, "blobs") == 3

    saver.delete_for_runs([run])

    assert [t.config for t in saver.list(generate_config(thread_id))] == kept
    assert _hlen(client, redis_prefix, thread_id, "blobs") == 2


def test_copy_thread_refuses_a_target_with_checkpoints(saver: RedisCheckpointSaver) -> None:
    source, target = str(uuid.uuid4()), str(uuid.uuid4())
    _chain(saver, source, 2)
    _chain(saver, target, 1)

    with pytest.raises(InvalidArgumentError, match="already has checkpoints"):
        saver.copy_thread(source, target)

    assert len(list(saver.list(generate_config(target)))) == 1


def test_delete_thread_leaves_no_key(saver: RedisCheckpointSaver, redis_prefix: str) -> None:
    thread_id = "braces {and} % in the id"
    _chain(saver, thread_id, 3, ns="child:1", writes=True)
    _chain(saver, "other", 1)

    saver.delete_thread(thread_id)

    assert saver.get_tuple(generate_config(thread_id, checkpoint_ns="child:1")) is None
    client = redis.Redis.from_url(REDIS_URL)
    try:
        left = {key.decode() for key in client.scan_iter(match=f"{redis_prefix}:*")}
    finally:
        client.close()
    assert left
    assert all("{other}" in key for key in left)


def test_every_key_of_a_thread_is_in_one_slot() -> None:
    for thread_id in ("t", "braces {and} % in the id", "}", "{}", "ünïcode"):
        slots = {key_slot(key.encode()) for key in ThreadKeys("ap").of(thread_id)}
        assert len(slots) == 1, thread_id
    assert ThreadKeys("ap").of("}") != ThreadKeys("ap").of("%7D"), "the tag is injective"


# --- retention ---------------------------------------------------------------------------


def test_retention_keeps_the_last_n_per_thread_and_namespace(
    client: redis.Redis[bytes], redis_prefix: str
) -> None:
    thread_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    with RedisCheckpointSaver.from_url(REDIS_URL, key_prefix=redis_prefix, keep_last=3) as saver:
        stored = _chain(saver, thread_id, 10, writes=True)
        child = _chain(saver, thread_id, 2, ns="child:1")
        _chain(saver, other, 1)

        newest = [t.config for t in saver.list(generate_config(thread_id, checkpoint_ns=""))]
        assert newest == stored[:-4:-1]
        assert [
            t.config for t in saver.list(generate_config(thread_id, checkpoint_ns="child:1"))
        ] == (child[::-1])
        every = list(saver.list({"configurable": {"thread_id": thread_id}}))
        assert len(every) == 5, "both namespaces"
        ids = [t.checkpoint["id"] for t in every]
        assert ids == sorted(ids, reverse=True)
        latest = saver.get_tuple(generate_config(thread_id))
        assert latest is not None
        assert latest.checkpoint["channel_values"] == {"a": "a9", "b": "unchanged"}
        assert latest.pending_writes == [("task", "a", "w9")]
    # root: a at its last 3 versions and b; child: 2 versions of a and b
    assert _hlen(client, redis_prefix, thread_id, "blobs") == 4 + 3
    assert _hlen(client, redis_prefix, thread_id, "writes") == 3
    assert _hlen(client, redis_prefix, other, "blobs") == 2


def test_the_async_twin_applies_retention_too(redis_prefix: str) -> None:
    thread_id = str(uuid.uuid4())

    async def scenario() -> list[Any]:
        saver = AsyncRedisCheckpointSaver.from_url(REDIS_URL, key_prefix=redis_prefix, keep_last=2)
        async with saver:
            parent = None
            for step in range(5):
                config = generate_config(thread_id)
                if parent is not None:
                    config["configurable"]["checkpoint_id"] = parent["configurable"][
                        "checkpoint_id"
                    ]
                parent = await saver.aput(
                    config, generate_checkpoint(), generate_metadata(step=step), {}
                )
            return [t.metadata["step"] async for t in saver.alist(generate_config(thread_id))]

    assert asyncio.run(scenario()) == [4, 3]


@pytest.mark.parametrize("keep_last", [0, -1, 1.5, True])
def test_retention_must_be_a_positive_count(keep_last: Any) -> None:
    with pytest.raises(ConfigurationError, match="keep_last"):
        RedisCheckpointSaver(redis.Redis(), keep_last=keep_last)


# --- listing -----------------------------------------------------------------------------


def test_filter_compares_whole_values_of_any_key(saver: RedisCheckpointSaver) -> None:
    thread_id = str(uuid.uuid4())
    config = generate_config(thread_id)
    for tags, quoted in ((["a", "b"], "x"), (["a"], 'say "hi"')):
        checkpoint = generate_checkpoint()
        saver.put(config, checkpoint, generate_metadata(tags=tags, **{'k"q': quoted}), {})

    def found(wanted: dict[str, Any]) -> int:
        return len(list(saver.list(config, filter=wanted)))

    assert found({"tags": ["a"]}) == 1, "equality, not containment"
    assert found({"tags": ["a", "b"]}) == 1
    assert found({'k"q': 'say "hi"'}) == 1
    assert found({"missing": None}) == 2, "a missing key reads as None"
    assert found({"step": 0, "source": "loop"}) == 2
    assert found({"step": "0"}) == 0, "a string is not a number"


@pytest.mark.parametrize("server", ["redis", "redis-cluster"])
def test_list_across_threads_pages_through_filtered_rows(server: str) -> None:
    url, prefix = server_url(server), f"lgtest-{uuid.uuid4().hex[:12]}"
    threads = [str(uuid.uuid4()) for _ in range(3)]
    try:
        with RedisCheckpointSaver.from_url(url, key_prefix=prefix) as saver:
            for index in range(150):
                wanted = "yes" if index % 3 == 0 else "no"
                saver.put(
                    generate_config(threads[index % 3]),
                    generate_checkpoint(),
                    generate_metadata(wanted=wanted),
                    {},
                )
            everything = list(saver.list(None))
            chosen = list(saver.list(None, filter={"wanted": "yes"}, limit=30))
            more = list(saver.list(None, filter={"wanted": "yes"}, limit=80))
            paged = list(saver.list(generate_config(threads[1]), limit=120))
    finally:
        delete_prefix(url, prefix)

    assert len(everything) == 150
    ids = [t.checkpoint["id"] for t in everything]
    assert ids == sorted(ids, reverse=True)
    assert len(chosen) == 30
    assert len(more) == 50
    assert {t.config["configurable"]["thread_id"] for t in more} == {threads[0]}
    assert len(paged) == 50, "a thread's listing goes on past a page"


# --- errors ------------------------------------------------------------------------------


def test_invalid_arguments_raise_typed_errors(saver: RedisCheckpointSaver) -> None:
    with pytest.raises(InvalidThreadIdError):
        saver.get_tuple({"configurable": {"thread_id": ""}})
    with pytest.raises(InvalidArgumentError, match="prune strategy"):
        saver.prune(["t"], strategy="keep_some")
    with pytest.raises(InvalidArgumentError, match="checkpoint_id"):
        saver.put_writes(generate_config("t"), [("ch", 1)], "task")
    with pytest.raises(InvalidArgumentError, match="JSON"):
        saver.put(generate_config("t"), generate_checkpoint(), {"when": object()}, {})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(InvalidArgumentError, match="NUL"):
        saver.put(generate_config("t", checkpoint_ns="a\x00b"), generate_checkpoint(), {}, {})
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisCheckpointSaver(redis.Redis(decode_responses=True))
    with pytest.raises(ConfigurationError, match="key_prefix"):
        RedisCheckpointSaver(redis.Redis(), key_prefix="{tag}")


def test_an_unreachable_server_is_backend_unavailable() -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    with (
        RedisCheckpointSaver.from_url(url, socket_connect_timeout=0.5, retries=1) as saver,
        pytest.raises(BackendUnavailableError),
    ):
        saver.get_tuple(generate_config("t"))


def test_a_foreign_key_type_fails_before_anything_is_written(
    saver: RedisCheckpointSaver, client: redis.Redis[bytes], redis_prefix: str
) -> None:
    thread_id = str(uuid.uuid4())
    client.set(ThreadKeys(redis_prefix).of(thread_id)[5], "not a hash")

    with pytest.raises(Exception, match="WRONGTYPE"):
        _chain(saver, thread_id, 1)

    assert client.exists(*ThreadKeys(redis_prefix).of(thread_id)[:5]) == 0


# --- no pickle ---------------------------------------------------------------------------


class _Opaque:
    """A class msgpack cannot encode: only pickle could."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


def test_a_serializer_with_pickle_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="pickle"):
        RedisCheckpointSaver(redis.Redis(), serde=JsonPlusSerializer(pickle_fallback=True))


def test_a_value_only_pickle_could_store_is_refused(saver: RedisCheckpointSaver) -> None:
    thread_id = str(uuid.uuid4())
    checkpoint = generate_checkpoint(channel_values={"a": _Opaque()}, channel_versions={"a": "1"})

    with pytest.raises(InvalidArgumentError, match="cannot serialize"):
        saver.put(generate_config(thread_id), checkpoint, generate_metadata(), {"a": "1"})

    assert saver.get_tuple(generate_config(thread_id)) is None, "nothing was written"


def test_a_stored_pickle_is_never_loaded(
    saver: RedisCheckpointSaver, client: redis.Redis[bytes], redis_prefix: str
) -> None:
    thread_id = str(uuid.uuid4())
    (stored,) = _chain(saver, thread_id, 1)
    blobs = ThreadKeys(redis_prefix).of(thread_id)[5]
    for field in client.hkeys(blobs):
        client.hset(blobs, field, b"pickle\n\x80\x04K\x01.")

    with pytest.raises(CorruptStateError, match="pickle"):
        saver.get_tuple(stored)


# --- the twins -----------------------------------------------------------------------------


def test_the_async_twins_sync_methods_work_from_another_thread(redis_prefix: str) -> None:
    thread_id = str(uuid.uuid4())

    async def scenario() -> tuple[Any, Any]:
        saver = AsyncRedisCheckpointSaver.from_url(REDIS_URL, key_prefix=redis_prefix)
        try:
            checkpoint = generate_checkpoint(channel_values={"a": 1}, channel_versions={"a": "1"})
            await saver.aget_tuple(generate_config(thread_id))  # binds the saver to this loop
            stored = await asyncio.to_thread(
                saver.put, generate_config(thread_id), checkpoint, generate_metadata(), {"a": "1"}
            )
            found = await asyncio.to_thread(saver.get_tuple, stored)
            listed = await asyncio.to_thread(lambda: list(saver.list(generate_config(thread_id))))
            with pytest.raises(ConfigurationError, match="another thread"):
                saver.get_tuple(stored)  # on the loop's own thread it would block the loop
            return found, listed
        finally:
            await saver.aclose()

    found, listed = asyncio.run(scenario())
    assert found.checkpoint["channel_values"] == {"a": 1}
    assert [t.config for t in listed] == [found.config]


def test_the_twins_read_each_others_keys(saver: RedisCheckpointSaver, redis_prefix: str) -> None:
    thread_id = str(uuid.uuid4())
    stored = _chain(saver, thread_id, 3, writes=True)

    async def read() -> tuple[Any, list[Any]]:
        async with AsyncRedisCheckpointSaver.from_url(REDIS_URL, key_prefix=redis_prefix) as twin:
            found = await twin.aget_tuple(generate_config(thread_id))
            listed = [t async for t in twin.alist(generate_config(thread_id), before=stored[-1])]
            return found, listed

    found, listed = asyncio.run(read())
    assert found == saver.get_tuple(generate_config(thread_id))
    assert listed == list(saver.list(generate_config(thread_id), before=stored[-1]))
    assert [t.config for t in listed] == stored[-2::-1]


@pytest.mark.parametrize("ttl", [None, 3600], ids=["retention", "retention+ttl"])
def test_concurrent_writers_of_one_thread_all_succeed(redis_prefix: str, ttl: int | None) -> None:
    shared = str(uuid.uuid4())
    failures: list[BaseException] = []

    def writer(saver: RedisCheckpointSaver, index: int) -> None:
        try:
            _chain(saver, shared, 15, writes=True, writer=index)
        except BaseException as exc:  # reported below
            failures.append(exc)

    with RedisCheckpointSaver.from_url(
        REDIS_URL, key_prefix=redis_prefix, keep_last=3, ttl=ttl
    ) as saver:
        workers = [threading.Thread(target=writer, args=(saver, i)) for i in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert failures == []
        listed = list(saver.list(generate_config(shared)))
    assert len(listed) == 3
    for found in listed:
        assert found.checkpoint["channel_values"]["b"] == "unchanged", "no value collected early"


def test_on_a_cluster_a_thread_lives_on_one_master(redis_prefix: str) -> None:
    url = server_url("redis-cluster")
    kit = _ready(CLUSTER_KIT)
    assert isinstance(kit, RedisClusterKit)
    assert kit.cluster is not None
    threads = [f"thread-{n}" for n in range(12)]
    try:
        with RedisCheckpointSaver.from_url(url, key_prefix=redis_prefix, keep_last=2) as saver:
            for thread_id in threads:
                _chain(saver, thread_id, 3, writes=True, run_id=f"run-{thread_id}")
                _chain(saver, thread_id, 1, ns="child:1")
        placed: dict[str, set[int]] = {}
        for node in kit.cluster.nodes:
            with node.client() as direct:
                for key in direct.scan_iter(match=f"{redis_prefix}:*", count=1000):
                    thread_id = ThreadKeys(redis_prefix).thread_of(key)
                    placed.setdefault(thread_id, set()).add(node.port)
    finally:
        delete_prefix(url, redis_prefix)

    assert set(placed) == set(threads)
    assert all(len(ports) == 1 for ports in placed.values()), placed
    assert len(set().union(*placed.values())) > 1, "threads spread over the masters"
