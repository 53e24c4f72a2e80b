"""`refresh_threads`: rotation, encrypting a plaintext store, schema migration, in-process.

Against the memory store (one shared `MemoryStore`, read behind the library through its kit):
every thread ends under the active key or at the current schema version, versions and
timestamps are kept, a thread that cannot be read is counted by id and the walk goes on, and
a writer that saves between the read and the rewrite is never overwritten (made deterministic
by a checkpointer whose write lets the writer save first).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence import (
    AgentMessage,
    AgentStateSnapshot,
    AsyncMemoryCheckpointer,
    DecryptionError,
    InvalidArgumentError,
    MemoryCheckpointer,
)
from agents_persistence.encryption import LocalKeyring, generate_key, is_sealed, key_id_of
from agents_persistence.maintenance import arefresh_threads, refresh_threads
from agents_persistence.upcasting import Upcasters

from .kits.encrypted import keyring
from .kits.memory import MemoryKit
from .test_upcasting import (
    SECRET,
    V1,
    V2,
    V3,
    ConversationV1,
    ConversationV2,
    ConversationV3,
    upcasters_v3,
    v2_to_v3,
)

if TYPE_CHECKING:
    from agents_persistence._core import Record, WriteRequest
    from agents_persistence.maintenance import Outcome


def state(n: int) -> AgentStateSnapshot:
    return AgentStateSnapshot(
        scratchpad={"n": n, "secret": SECRET},
        files={f"notes/{n}.md": f"# {n}\n{SECRET}\n"},
        messages=[AgentMessage.text("User", f"hello {n} {SECRET}")],
    )


@pytest.fixture
def kit() -> MemoryKit:
    return MemoryKit()


@pytest.fixture
def namespace() -> str:
    return "mt" + uuid.uuid4().hex[:12]


def key_ids(kit: MemoryKit, namespace: str, thread_id: str) -> set[str | None]:
    """The key of every value stored for the thread (``None`` for a value in clear)."""
    values = kit.store._ns(namespace).pieces.get(thread_id, {}).values()
    head = kit.store._ns(namespace).records[thread_id].payload
    raw = [head if isinstance(head, bytes) else str(head).encode(), *values]
    return {key_id_of(value) if is_sealed(value) else None for value in raw}


def seed(checkpointer: MemoryCheckpointer[Any], count: int) -> dict[str, Any]:
    infos = {}
    for n in range(count):
        checkpointer.save_state(f"t{n:02d}", state(n))
        infos[f"t{n:02d}"] = checkpointer.save_state(f"t{n:02d}", state(n + 100))
    return infos


def listing(checkpointer: MemoryCheckpointer[Any]) -> list[Any]:
    return list(checkpointer.iter_threads(page_size=1000))


# --- rotation and encryption ------------------------------------------------------------------


def test_rotation_moves_every_thread_to_the_active_key_keeping_versions(
    kit: MemoryKit, namespace: str
) -> None:
    old = kit.make(namespace=namespace, keys=keyring("k1"))
    infos = seed(old, 23)
    before = listing(old)
    rotating = kit.make(namespace=namespace, keys=keyring("k2", "k1", "k2"))
    seen: list[tuple[str, Outcome]] = []

    report = refresh_threads(rotating, page_size=5, progress=lambda t, o: seen.append((t, o)))

    assert (report.rewritten, report.current, report.failed, report.conflict) == (23, 0, 0, 0)
    assert report.complete
    assert sorted(seen) == sorted((t, "rewritten") for t in infos)
    assert listing(rotating) == before  # versions, timestamps and order unchanged
    for thread_id in infos:
        assert key_ids(kit, namespace, thread_id) == {"k2"}
    # The old key can go: a keyring of k2 alone reads every thread.
    only_new = kit.make(namespace=namespace, keys=keyring("k2"))
    for n, thread_id in enumerate(sorted(infos)):
        assert only_new.load_state(thread_id) == state(n + 100)
    again = refresh_threads(only_new, page_size=5)
    assert (again.current, again.rewritten) == (23, 0)


def test_encrypting_a_plaintext_store_is_the_same_loop(kit: MemoryKit, namespace: str) -> None:
    infos = seed(kit.make(namespace=namespace), 4)
    for thread_id in infos:
        assert key_ids(kit, namespace, thread_id) == {None}

    report = refresh_threads(kit.make(namespace=namespace, keys=keyring("k1")))

    assert report.rewritten == 4
    for thread_id in infos:
        assert key_ids(kit, namespace, thread_id) == {"k1"}
        stored = b"".join(kit.stored_values(namespace, thread_id))
        assert SECRET.encode() not in stored
    with pytest.raises(DecryptionError):
        kit.make(namespace=namespace).load_state("t00")


def test_a_dry_run_counts_and_writes_nothing(kit: MemoryKit, namespace: str) -> None:
    infos = seed(kit.make(namespace=namespace, keys=keyring("k1")), 3)
    kit.make(namespace=namespace, keys=keyring("k2", "k1", "k2")).save_state("fresh", state(7))
    stored = {t: kit.stored_values(namespace, t) for t in infos}

    report = refresh_threads(
        kit.make(namespace=namespace, keys=keyring("k2", "k1", "k2")), dry_run=True
    )

    assert (report.stale, report.current, report.rewritten) == (3, 1, 0)
    assert not report.complete
    assert {t: kit.stored_values(namespace, t) for t in infos} == stored


def test_a_thread_that_does_not_decrypt_is_counted_and_the_walk_goes_on(
    kit: MemoryKit, namespace: str
) -> None:
    seed(kit.make(namespace=namespace, keys=keyring("k1")), 3)
    lost = LocalKeyring(active="lost", keys={"lost": generate_key()})
    kit.make(namespace=namespace, keys=lost).save_state("t-lost", state(9))

    report = refresh_threads(kit.make(namespace=namespace, keys=keyring("k2", "k1", "k2")))

    assert (report.rewritten, report.failed) == (3, 1)
    assert not report.complete
    [failure] = report.failures
    assert (failure.thread_id, failure.error) == ("t-lost", "UnknownKeyError")
    assert "lost" in failure.message
    assert SECRET not in failure.message
    assert report.as_dict()["failures"][0]["thread_id"] == "t-lost"


def test_a_writer_saving_between_read_and_rewrite_is_never_overwritten(
    kit: MemoryKit, namespace: str
) -> None:
    seed(kit.make(namespace=namespace, keys=keyring("k1")), 3)
    # An app instance that reads k2 but still writes under k1 (mid-rollout).
    writer = kit.make(namespace=namespace, keys=keyring("k1", "k1", "k2"))
    rotating = Interfering(kit, namespace, writer, {"t01": 1, "t02": 2})

    report = refresh_threads(rotating)

    # t01: the writer saved once; the retry rewrote the writer's save. t02: saved before
    # both attempts, left to its writer and counted.
    assert (report.rewritten, report.conflict) == (2, 1)
    assert writer.load_state("t01") == rotating.written["t01"] == state(1001)
    assert writer.load_state("t02") == rotating.written["t02"] == state(2001)
    assert key_ids(kit, namespace, "t01") == {"k2"}
    assert key_ids(kit, namespace, "t02") == {"k1"}
    assert rotating.load_checkpoint("t02").info.version == 4  # two saves landed, none lost
    finish = refresh_threads(kit.make(namespace=namespace, keys=keyring("k2", "k1", "k2")))
    assert (finish.rewritten, finish.current) == (1, 2)


def test_without_retries_a_conflict_is_counted_at_once(kit: MemoryKit, namespace: str) -> None:
    seed(kit.make(namespace=namespace, keys=keyring("k1")), 2)
    writer = kit.make(namespace=namespace, keys=keyring("k1"))
    rotating = Interfering(kit, namespace, writer, {"t00": 1})

    report = refresh_threads(rotating, conflict_retries=0)

    assert (report.rewritten, report.conflict) == (1, 1)
    assert writer.load_state("t00") == rotating.written["t00"]


class Interfering(MemoryCheckpointer[Any]):
    """Rotates to k2; before its rewrite of a listed thread, ``writer`` saves that thread."""

    def __init__(self, kit: MemoryKit, namespace: str, writer: Any, saves: dict[str, int]) -> None:
        super().__init__(kit.store, namespace=namespace, keys=keyring("k2", "k1", "k2"))
        self.writer = writer
        self.saves = dict(saves)
        self.written: dict[str, AgentStateSnapshot] = {}

    def _write(self, request: WriteRequest) -> Record:
        left = self.saves.get(request.thread_id, 0)
        if left:
            self.saves[request.thread_id] = left - 1
            saved = state(int(request.thread_id[1:]) * 1000 + left)
            self.writer.save_state(request.thread_id, saved)
            self.written[request.thread_id] = saved
        return super()._write(request)


# --- schema versions ----------------------------------------------------------------------------


def test_three_generations_are_rewritten_at_the_current_version(
    kit: MemoryKit, namespace: str
) -> None:
    kit.make(namespace=namespace, state_type=ConversationV1).save_state("g1", V1)
    kit.make(namespace=namespace, state_type=ConversationV2).save_state("g2", V2)
    kit.make(namespace=namespace, state_type=ConversationV3).save_state("g3", V3)
    current = kit.make(namespace=namespace, state_type=ConversationV3, upcasters=upcasters_v3())

    dry = refresh_threads(current, dry_run=True)
    report = refresh_threads(current)

    assert (dry.stale, dry.current) == (2, 1)
    assert (report.rewritten, report.current, report.failed) == (2, 1, 0)
    bare = kit.make(namespace=namespace, state_type=ConversationV3)  # no upcasters at all
    assert [bare.load_state(t) for t in ("g1", "g2", "g3")] == [V3, V3, V3]
    assert [c.version for c in (bare.load_checkpoint(t).info for t in ("g1", "g2", "g3"))] == [
        1,
        1,
        1,
    ]


def test_a_missing_upcaster_fails_that_thread_only(kit: MemoryKit, namespace: str) -> None:
    kit.make(namespace=namespace, state_type=ConversationV1).save_state("g1", V1)
    kit.make(namespace=namespace, state_type=ConversationV2).save_state("g2", V2)
    partial = Upcasters(ConversationV3)
    partial.register(2)(v2_to_v3)

    report = refresh_threads(
        kit.make(namespace=namespace, state_type=ConversationV3, upcasters=partial)
    )

    assert (report.rewritten, report.failed) == (1, 1)
    assert [(f.thread_id, f.error) for f in report.failures] == [("g1", "MissingUpcasterError")]


def test_migration_and_encryption_in_one_pass(kit: MemoryKit, namespace: str) -> None:
    kit.make(namespace=namespace, state_type=ConversationV1).save_state("g1", V1)
    keyed = kit.make(
        namespace=namespace, state_type=ConversationV3, upcasters=upcasters_v3(), keys=keyring()
    )
    assert refresh_threads(keyed).rewritten == 1
    assert key_ids(kit, namespace, "g1") == {"k1"}
    assert (
        kit.make(namespace=namespace, state_type=ConversationV3, keys=keyring()).load_state("g1")
        == V3
    )


# --- asyncio twin and arguments -----------------------------------------------------------------


def test_the_async_twin_rotates_and_dry_runs(kit: MemoryKit, namespace: str) -> None:
    seed(kit.make(namespace=namespace, keys=keyring("k1")), 4)
    rotating = AsyncMemoryCheckpointer(
        kit.store, namespace=namespace, keys=keyring("k2", "k1", "k2")
    )

    async def scenario() -> tuple[Any, Any, Any]:
        dry = await arefresh_threads(rotating, dry_run=True, page_size=3)
        report = await arefresh_threads(rotating, page_size=3)
        return dry, report, await arefresh_threads(rotating, dry_run=True)

    dry, report, again = asyncio.run(scenario())
    assert (dry.stale, report.rewritten, again.current) == (4, 4, 4)
    assert key_ids(kit, namespace, "t03") == {"k2"}


@pytest.mark.parametrize(
    "options", [{"page_size": 0}, {"page_size": 1001}, {"conflict_retries": -1}]
)
def test_bad_arguments_raise(kit: MemoryKit, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        refresh_threads(kit.make(namespace="x"), **options)


def test_failures_are_reported_without_state_content(kit: MemoryKit, namespace: str) -> None:
    kit.make(namespace=namespace, keys=keyring("k1")).save_state("t", state(1))
    report = refresh_threads(kit.make(namespace=namespace, keys=keyring("k2")))
    assert report.failed == 1
    assert SECRET not in json.dumps(report.as_dict())
