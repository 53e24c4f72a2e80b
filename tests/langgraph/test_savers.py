"""The SQL savers beyond the conformance suite: storage, errors, serializer, both twins."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from sqlalchemy.ext.asyncio import create_async_engine

from agents_persistence.errors import (
    BackendUnavailableError,
    ConfigurationError,
    CorruptStateError,
    InvalidArgumentError,
    InvalidThreadIdError,
    SchemaNotReadyError,
)
from agents_persistence.langgraph import (
    AsyncSQLCheckpointSaver,
    NoPickleSerializer,
    SQLCheckpointSaver,
    default_serde,
)
from agents_persistence.models.langgraph import langgraph_models

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from langchain_core.runnables import RunnableConfig

BLOBS = langgraph_models().blobs.__table__
WRITES = langgraph_models().writes.__table__


@pytest.fixture
def saver(lg_url: str) -> Iterator[SQLCheckpointSaver]:
    with SQLCheckpointSaver.from_url(lg_url) as made:
        yield made


def _chain(
    saver: SQLCheckpointSaver,
    thread_id: str,
    steps: int,
    *,
    ns: str = "",
    writes: bool = False,
    **metadata: Any,
) -> list[RunnableConfig]:
    """``steps`` checkpoints, each changing channel ``a`` and keeping channel ``b``.

    With ``writes``, each checkpoint gets a pending write right after it is stored.
    """
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


def _count(url: str, table: sa.Table, thread_id: str) -> int:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(table)
            return int(conn.execute(query.where(table.c.thread_id == thread_id)).scalar_one())
    finally:
        engine.dispose()


# --- storage -----------------------------------------------------------------------------


def test_an_unchanged_channel_is_stored_once(saver: SQLCheckpointSaver, lg_url: str) -> None:
    thread_id = str(uuid.uuid4())
    stored = _chain(saver, thread_id, 4)

    assert _count(lg_url, BLOBS, thread_id) == 5, "four versions of a, one of b"
    for step, config in enumerate(stored):
        found = saver.get_tuple(config)
        assert found is not None
        assert found.checkpoint["channel_values"] == {"a": f"a{step}", "b": "unchanged"}


def test_prune_keeps_the_latest_and_collects_unused_blobs(
    saver: SQLCheckpointSaver, lg_url: str
) -> None:
    thread_id = str(uuid.uuid4())
    stored = _chain(saver, thread_id, 4)
    saver.put_writes(stored[0], [("a", "old")], "task-old")
    saver.put_writes(stored[-1], [("a", "new")], "task-new")

    saver.prune([thread_id])

    assert [t.config for t in saver.list(generate_config(thread_id))] == [stored[-1]]
    assert _count(lg_url, BLOBS, thread_id) == 2, "the latest a, and b"
    assert _count(lg_url, WRITES, thread_id) == 1
    latest = saver.get_tuple(generate_config(thread_id))
    assert latest is not None
    assert latest.checkpoint["channel_values"] == {"a": "a3", "b": "unchanged"}
    assert latest.pending_writes == [("task-new", "a", "new")]


def test_delete_for_runs_collects_the_blobs_only_its_checkpoints_used(
    saver: SQLCheckpointSaver, lg_url: str
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
    assert _count(lg_url, BLOBS, thread_id) == 3

    saver.delete_for_runs([run])

    assert [t.config for t in saver.list(generate_config(thread_id))] == kept
    assert _count(lg_url, BLOBS, thread_id) == 2


def test_copy_thread_refuses_a_target_with_checkpoints(saver: SQLCheckpointSaver) -> None:
    source, target = str(uuid.uuid4()), str(uuid.uuid4())
    _chain(saver, source, 2)
    _chain(saver, target, 1)

    with pytest.raises(InvalidArgumentError, match="already has checkpoints"):
        saver.copy_thread(source, target)

    assert len(list(saver.list(generate_config(target)))) == 1


def test_versions_are_strings_that_sort_like_their_counters(saver: SQLCheckpointSaver) -> None:
    versions = [saver.get_next_version(None, None)]
    for _ in range(11):
        versions.append(saver.get_next_version(versions[-1], None))

    assert versions == sorted(versions)
    assert [int(v.split(".")[0]) for v in versions] == list(range(1, 13))
    assert saver.get_next_version(7, None).startswith("0" * 31 + "8.")


# --- retention ---------------------------------------------------------------------------


def test_retention_keeps_the_last_n_per_thread_and_namespace(lg_url: str) -> None:
    thread_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    with SQLCheckpointSaver.from_url(lg_url, keep_last=3) as saver:
        stored = _chain(saver, thread_id, 10, writes=True)
        child = _chain(saver, thread_id, 2, ns="child:1")
        _chain(saver, other, 1)

        newest = [t.config for t in saver.list(generate_config(thread_id))]
        assert newest == stored[:-4:-1]
        assert [
            t.config for t in saver.list(generate_config(thread_id, checkpoint_ns="child:1"))
        ] == (child[::-1])
        latest = saver.get_tuple(generate_config(thread_id))
        assert latest is not None
        assert latest.checkpoint["channel_values"] == {"a": "a9", "b": "unchanged"}
        assert latest.pending_writes == [("task", "a", "w9")]
    # root: a at its last 3 versions and b; child: 2 versions of a and b
    assert _count(lg_url, BLOBS, thread_id) == 4 + 3
    assert _count(lg_url, WRITES, thread_id) == 3
    assert _count(lg_url, BLOBS, other) == 2


@pytest.mark.parametrize("keep_last", [None, 2])
def test_versions_of_any_json_type_load_and_are_collected(
    lg_url: str, keep_last: int | None
) -> None:
    """Versions other savers' counters make (ints, floats) and a version stored with no value.

    A read matches the versions a checkpoint's JSON names with the stored ones; retention
    deletes the values only the checkpoints beyond ``keep_last`` named.
    """
    thread_id = str(uuid.uuid4())
    with SQLCheckpointSaver.from_url(lg_url, keep_last=keep_last) as saver:
        stored: list[RunnableConfig] = []
        for step, version in enumerate([1, 2.5, "3"]):
            checkpoint = generate_checkpoint(
                channel_values={"a": f"a{step}", "b": "kept"},
                channel_versions={"a": version, "b": 1, "c": 7},  # c: no value ever stored
            )
            config = generate_config(thread_id)
            if stored:
                config["configurable"]["checkpoint_id"] = stored[-1]["configurable"][
                    "checkpoint_id"
                ]
            new_versions = {"a": version, "b": 1} if step == 0 else {"a": version}
            stored.append(saver.put(config, checkpoint, generate_metadata(step=step), new_versions))
            saver.put_writes(stored[-1], [("a", f"w{step}")], "task")

        for step, config in list(enumerate(stored))[-2:]:
            found = saver.get_tuple(config)
            assert found is not None
            assert found.checkpoint["channel_values"] == {"a": f"a{step}", "b": "kept"}
            assert found.pending_writes == [("task", "a", f"w{step}")]
    expected = 3 if keep_last else 4  # a at its kept versions, and b
    assert _count(lg_url, BLOBS, thread_id) == expected
    assert _count(lg_url, WRITES, thread_id) == (keep_last or 3)


def test_the_async_twin_applies_retention_too(lg_url: str) -> None:
    thread_id = str(uuid.uuid4())

    async def scenario() -> list[Any]:
        async with AsyncSQLCheckpointSaver.from_url(lg_url, keep_last=2) as saver:
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
        SQLCheckpointSaver(sa.create_engine("sqlite://"), keep_last=keep_last)


# --- listing -----------------------------------------------------------------------------


def test_filter_compares_whole_values_of_any_key(saver: SQLCheckpointSaver) -> None:
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


def test_list_across_threads_pages_through_filtered_rows(saver: SQLCheckpointSaver) -> None:
    marker = str(uuid.uuid4())
    threads = [str(uuid.uuid4()) for _ in range(3)]
    for index in range(150):
        checkpoint = generate_checkpoint()
        wanted = "yes" if index % 3 == 0 else "no"
        saver.put(
            generate_config(threads[index % 3]),
            checkpoint,
            generate_metadata(marker=marker, wanted=wanted),
            {},
        )

    everything = list(saver.list(None, filter={"marker": marker}))
    chosen = list(saver.list(None, filter={"marker": marker, "wanted": "yes"}, limit=30))
    more = list(saver.list(None, filter={"marker": marker, "wanted": "yes"}, limit=80))

    assert len(everything) == 150
    ids = [t.checkpoint["id"] for t in everything]
    assert ids == sorted(ids, reverse=True)
    assert len(chosen) == 30
    assert len(more) == 50
    assert {t.config["configurable"]["thread_id"] for t in more} == {threads[0]}


# --- errors ------------------------------------------------------------------------------


def test_a_database_without_the_tables_is_not_ready_until_setup(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with SQLCheckpointSaver.from_url(url) as fresh:
        with pytest.raises(SchemaNotReadyError, match="agents-persistence db upgrade"):
            fresh.get_tuple(generate_config("t"))
        fresh.setup()
        assert fresh.get_tuple(generate_config("t")) is None
    with SQLCheckpointSaver.from_url(
        f"sqlite:///{tmp_path / 'auto.db'}", auto_migrate=True
    ) as auto:
        assert list(auto.list(None)) == []


def test_invalid_arguments_raise_typed_errors(saver: SQLCheckpointSaver) -> None:
    with pytest.raises(InvalidThreadIdError):
        saver.get_tuple({"configurable": {"thread_id": ""}})
    with pytest.raises(InvalidArgumentError, match="prune strategy"):
        saver.prune(["t"], strategy="keep_some")
    with pytest.raises(InvalidArgumentError, match="checkpoint_id"):
        saver.put_writes(generate_config("t"), [("ch", 1)], "task")
    with pytest.raises(InvalidArgumentError, match="JSON"):
        saver.put(generate_config("t"), generate_checkpoint(), {"when": object()}, {})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ConfigurationError, match="AsyncEngine"):
        SQLCheckpointSaver(create_async_engine("sqlite+aiosqlite://"))  # type: ignore[arg-type]


def test_an_unreachable_server_is_backend_unavailable() -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"
    with (
        SQLCheckpointSaver.from_url(url, connect_timeout=1) as saver,
        pytest.raises(BackendUnavailableError),
    ):
        saver.get_tuple(generate_config("t"))


# --- no pickle ---------------------------------------------------------------------------


class _Opaque:
    """A class msgpack cannot encode: only pickle could."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


def test_the_default_serializer_never_pickles() -> None:
    serde = default_serde()
    assert isinstance(serde.inner, JsonPlusSerializer)
    assert serde.inner.pickle_fallback is False
    with pytest.raises(ConfigurationError, match="pickle"):
        NoPickleSerializer(JsonPlusSerializer(pickle_fallback=True))
    with pytest.raises(ConfigurationError, match="pickle"):
        SQLCheckpointSaver(
            sa.create_engine("sqlite://"), serde=JsonPlusSerializer(pickle_fallback=True)
        )


def test_a_value_only_pickle_could_store_is_refused(saver: SQLCheckpointSaver) -> None:
    thread_id = str(uuid.uuid4())
    checkpoint = generate_checkpoint(channel_values={"a": _Opaque()}, channel_versions={"a": "1"})

    with pytest.raises(InvalidArgumentError, match="cannot serialize"):
        saver.put(generate_config(thread_id), checkpoint, generate_metadata(), {"a": "1"})

    assert saver.get_tuple(generate_config(thread_id)) is None, "nothing was written"


def test_a_stored_pickle_is_never_loaded(saver: SQLCheckpointSaver, lg_url: str) -> None:
    thread_id = str(uuid.uuid4())
    (stored,) = _chain(saver, thread_id, 1)
    engine = sa.create_engine(lg_url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(
                BLOBS.update()
                .where(BLOBS.c.thread_id == thread_id, BLOBS.c.channel == "a")
                .values(type="pickle", blob=b"\x80\x04K\x01.")
            )
    finally:
        engine.dispose()

    with pytest.raises(CorruptStateError, match="pickle"):
        saver.get_tuple(stored)


# --- the async twin's sync methods --------------------------------------------------------


def test_the_async_twins_sync_methods_work_from_another_thread(lg_url: str) -> None:
    thread_id = str(uuid.uuid4())

    async def scenario() -> tuple[Any, Any]:
        saver = AsyncSQLCheckpointSaver.from_url(lg_url)
        try:
            checkpoint = generate_checkpoint(channel_values={"a": 1}, channel_versions={"a": "1"})
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


def test_the_twins_read_each_others_rows(saver: SQLCheckpointSaver, lg_url: str) -> None:
    thread_id = str(uuid.uuid4())
    stored = _chain(saver, thread_id, 3, writes=True)

    async def read() -> tuple[Any, list[Any]]:
        async with AsyncSQLCheckpointSaver.from_url(lg_url) as twin:
            found = await twin.aget_tuple(generate_config(thread_id))
            listed = [t async for t in twin.alist(generate_config(thread_id), before=stored[-1])]
            return found, listed

    found, listed = asyncio.run(read())
    assert found == saver.get_tuple(generate_config(thread_id))
    assert listed == list(saver.list(generate_config(thread_id), before=stored[-1]))
    assert [t.config for t in listed] == stored[-2::-1]


@pytest.mark.parametrize("ttl", [None, 3600], ids=["retention", "retention+ttl"])
def test_concurrent_writers_of_one_thread_all_succeed(lg_url: str, ttl: int | None) -> None:
    """Deadlocks between writers (InnoDB's, under retention) are retried, never surfaced."""
    shared = str(uuid.uuid4())
    failures: list[BaseException] = []

    def writer(saver: SQLCheckpointSaver, index: int) -> None:
        try:
            _chain(saver, shared, 15, writes=True, writer=index)
        except BaseException as exc:  # reported below
            failures.append(exc)

    with SQLCheckpointSaver.from_url(lg_url, keep_last=3, ttl=ttl) as saver:
        workers = [threading.Thread(target=writer, args=(saver, i)) for i in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert failures == []
        # Writers of one thread take turns on its expiry row, so each prunes what the others
        # committed: never more than keep_last remain.
        listed = list(saver.list(generate_config(shared)))
    assert len(listed) == 3
    assert {t.metadata["writer"] for t in listed} <= set(range(6))
