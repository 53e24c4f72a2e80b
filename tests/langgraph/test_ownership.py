"""Write ownership (``exclusive_writes=True``) on every saver, sync and async.

A ``put`` whose parent is not the thread's latest checkpoint in its namespace raises
`ThreadForkError` (a `ConflictError`) and writes nothing; two processes racing on one thread
leave one linear chain, one winner per step.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence.errors import ConflictError, ThreadForkError
from agents_persistence.migrations import upgrade
from tests.kits.redis import REDIS_URL
from tests.langgraph._ownership_race import child, open_saver, race
from tests.langgraph.conftest import _database
from tests.langgraph.redis_support import delete_prefix

if TYPE_CHECKING:
    from collections.abc import Iterator

    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import CheckpointTuple

STORES = ["sqlite", "postgresql", "mariadb", "redis", "dynamodb"]


@pytest.fixture(scope="module", params=STORES)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(kind, options)`` of a store ready for the savers (`open_saver` takes them)."""
    name = request.param
    if name == "redis":
        prefix = f"lgown-{uuid.uuid4().hex[:12]}"
        yield "redis", {"url": REDIS_URL, "key_prefix": prefix}
        delete_prefix(REDIS_URL, prefix)
    elif name == "dynamodb":
        yield "dynamodb", request.getfixturevalue("dynamodb_options")
    else:
        for url in _database(name, tmp_path_factory.mktemp("ownership")):
            upgrade(url)
            yield "sql", {"url": url}


class Driver:
    """One saver of either twin behind sync calls (the async twin on a loop of its own)."""

    def __init__(self, store: tuple[str, dict[str, Any]], twin: str, **extra: Any) -> None:
        self.twin = twin
        self.loop = asyncio.new_event_loop() if twin == "async" else None
        kind, options = store
        if self.loop is None:
            self.saver = open_saver(kind, options, twin, **extra)
        else:

            async def made() -> Any:
                return open_saver(kind, options, twin, **extra)

            self.saver = self.loop.run_until_complete(made())

    def _run(self, name: str, *args: Any) -> Any:
        if self.loop is None:
            return getattr(self.saver, name)(*args)
        return self.loop.run_until_complete(getattr(self.saver, "a" + name)(*args))

    def put(self, *args: Any) -> RunnableConfig:
        config: RunnableConfig = self._run("put", *args)
        return config

    def latest(self, thread_id: str, ns: str = "") -> CheckpointTuple | None:
        found: CheckpointTuple | None = self._run("get_tuple", _config(thread_id, ns))
        return found

    def chain(self, thread_id: str, ns: str = "") -> list[CheckpointTuple]:
        config = _config(thread_id, ns)
        if self.loop is None:
            return list(self.saver.list(config))

        async def gather() -> list[CheckpointTuple]:
            return [t async for t in self.saver.alist(config)]

        return self.loop.run_until_complete(gather())

    def close(self) -> None:
        if self.loop is None:
            self.saver.close()
        else:
            self.loop.run_until_complete(self.saver.aclose())
            self.loop.close()


def _config(thread_id: str, ns: str = "", checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


@pytest.fixture(params=["sync", "async"])
def twin(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def owner(store: tuple[str, dict[str, Any]], twin: str) -> Iterator[Driver]:
    driver = Driver(store, twin, exclusive_writes=True)
    yield driver
    driver.close()


def _grow(driver: Driver, thread_id: str, steps: int, ns: str = "") -> list[RunnableConfig]:
    stored: list[RunnableConfig] = []
    parent = _config(thread_id, ns)
    for step in range(steps):
        parent = driver.put(*child(driver.saver, parent, step))
        stored.append(parent)
    return stored


def _ids(tuples: list[CheckpointTuple]) -> list[str]:
    return [t.config["configurable"]["checkpoint_id"] for t in tuples]


def test_a_first_put_passes_only_on_a_thread_without_checkpoints(owner: Driver) -> None:
    thread_id = str(uuid.uuid4())
    [first] = _grow(owner, thread_id, 1)

    with pytest.raises(ThreadForkError) as refused:
        owner.put(*child(owner.saver, _config(thread_id), 0))

    assert isinstance(refused.value, ConflictError)
    assert refused.value.thread_id == thread_id
    assert refused.value.expected is None
    assert refused.value.actual == first["configurable"]["checkpoint_id"]
    assert thread_id in str(refused.value)
    assert _ids(owner.chain(thread_id)) == [first["configurable"]["checkpoint_id"]]


def test_a_stale_parent_is_refused_and_nothing_is_written(owner: Driver) -> None:
    thread_id = str(uuid.uuid4())
    stored = _grow(owner, thread_id, 3)
    before = owner.chain(thread_id)

    with pytest.raises(ThreadForkError) as refused:
        owner.put(*child(owner.saver, stored[0], 1))

    assert refused.value.expected == stored[0]["configurable"]["checkpoint_id"]
    assert refused.value.actual == stored[-1]["configurable"]["checkpoint_id"]
    after = owner.chain(thread_id)
    assert _ids(after) == _ids(before)
    latest = owner.latest(thread_id)
    assert latest is not None
    assert latest.config == stored[-1]
    assert latest.checkpoint["channel_values"] == {"messages": ["m0", "m1", "m2"]}
    # The chain is linear: each checkpoint's parent is the one stored before it.
    assert [t.parent_config for t in after] == [*stored[-2::-1], None]


def test_a_put_retried_with_the_same_parent_passes(owner: Driver) -> None:
    thread_id = str(uuid.uuid4())
    first = _grow(owner, thread_id, 1)[0]
    arguments = child(owner.saver, first, 1)

    second = owner.put(*arguments)
    assert owner.put(*arguments) == second, "the reply was lost: the same put again"

    assert _ids(owner.chain(thread_id)) == [
        second["configurable"]["checkpoint_id"],
        first["configurable"]["checkpoint_id"],
    ]


def test_namespaces_are_owned_apart(owner: Driver) -> None:
    thread_id = str(uuid.uuid4())
    root = _grow(owner, thread_id, 2)
    sub = _grow(owner, thread_id, 2, ns="child:1")

    with pytest.raises(ThreadForkError) as refused:
        owner.put(*child(owner.saver, sub[0], 2))
    assert refused.value.checkpoint_ns == "child:1"
    owner.put(*child(owner.saver, root[-1], 2))

    assert len(owner.chain(thread_id, "child:1")) == 2
    assert len(owner.chain(thread_id)) == 3


def test_retention_keeps_ownership(store: tuple[str, dict[str, Any]], twin: str) -> None:
    driver = Driver(store, twin, exclusive_writes=True, keep_last=2)
    try:
        thread_id = str(uuid.uuid4())
        stored = _grow(driver, thread_id, 5)

        for stale in (stored[0], stored[3]):  # pruned, and kept but not the latest
            with pytest.raises(ThreadForkError):
                driver.put(*child(driver.saver, stale, 9))

        assert _ids(driver.chain(thread_id)) == [
            c["configurable"]["checkpoint_id"] for c in stored[:-3:-1]
        ]
        driver.put(*child(driver.saver, stored[-1], 5))
        assert len(driver.chain(thread_id)) == 2
    finally:
        driver.close()


def test_without_the_option_a_stale_parent_forks(
    store: tuple[str, dict[str, Any]], twin: str
) -> None:
    driver = Driver(store, twin)
    try:
        thread_id = str(uuid.uuid4())
        stored = _grow(driver, thread_id, 2)
        forked = driver.put(*child(driver.saver, stored[0], 1))
        chain = driver.chain(thread_id)
        assert len(chain) == 3
        assert {t.parent_config["configurable"]["checkpoint_id"] for t in chain[:2]} == {  # type: ignore[index]
            stored[0]["configurable"]["checkpoint_id"]
        }, f"both {forked} and {stored[1]} are children of the first checkpoint"
    finally:
        driver.close()


def test_two_processes_racing_leave_one_linear_chain(
    store: tuple[str, dict[str, Any]],
) -> None:
    """A sync and an async saver in two processes, each step one winner, one ThreadForkError."""
    kind, options = store
    steps = 8
    thread_id = str(uuid.uuid4())
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    writers = [
        context.Process(target=race, args=(kind, options, twin, thread_id, steps, barrier, results))
        for twin in ("sync", "async")
    ]
    for writer in writers:
        writer.start()
    try:
        outcomes = [results.get(timeout=120)[1] for _ in writers]
    finally:
        for writer in writers:
            writer.join(30)
            if writer.is_alive():
                writer.kill()
    assert [writer.exitcode for writer in writers] == [0, 0]

    for step in range(steps):
        assert sorted(outcome[step] for outcome in outcomes) == ["lost", "won"], step
    reader = Driver(store, "sync")
    try:
        chain = reader.chain(thread_id)
    finally:
        reader.close()
    assert len(chain) == steps
    parents = [t.parent_config["configurable"]["checkpoint_id"] for t in chain[:-1]]  # type: ignore[index]
    assert parents == _ids(chain[1:]), "each checkpoint's parent is the one before it"
    assert chain[-1].parent_config is None
    assert [t.metadata["step"] for t in chain] == list(range(steps - 1, -1, -1))
