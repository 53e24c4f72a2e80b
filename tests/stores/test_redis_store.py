"""Behaviour of the Redis store that the contract suite does not see, on the shared server.

Key layout and hash fields, physical TTLs of every key, atomicity of failed writes, lazy
removal of index entries Redis left behind, client flavours (decoded, RESP3, pooled), retried
scripts, error translation, URL and option validation.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio
from redis.crc import key_slot

from agents_persistence import (
    AgentStateSnapshot,
    AsyncRedisCheckpointer,
    BackendUnavailableError,
    CheckpointerError,
    CheckpointInfo,
    ConfigurationError,
    ConflictError,
    CorruptStateError,
    RedisCheckpointer,
    open_async_checkpointer,
    open_checkpointer,
)
from agents_persistence._layout import Manifest
from agents_persistence.models.redis import FIELDS
from agents_persistence.repositories._redis_ops import PAGE_DANGLING_BUDGET

from ..conftest import _ready
from ..kits.redis import KITS, RedisKit, free_port, listening, pieces_key, thread_key
from ..support import FakeClock

if TYPE_CHECKING:
    from ..support import Portal

KIT = next(kit for kit in KITS if kit.name == "redis")


@pytest.fixture
def kit() -> RedisKit:
    ready = _ready(KIT)
    assert isinstance(ready, RedisKit)
    return ready


@pytest.fixture
def client(kit: RedisKit) -> Any:
    return kit.client


@pytest.fixture
def ns() -> str:
    return "s" + uuid.uuid4().hex[:16]


def index_keys(namespace: str) -> tuple[str, str]:
    return (
        f"agents_persistence:{{{namespace}}}:updated",
        f"agents_persistence:{{{namespace}}}:expires",
    )


def namespace_keys(client: Any, namespace: str) -> set[str]:
    return {
        key.decode()
        for key in client.scan_iter(match=f"agents_persistence:{{{namespace}}}:*", count=1000)
    }


def state(n: int = 0) -> AgentStateSnapshot:
    return AgentStateSnapshot(scratchpad={"n": n})


def big_state(n: int = 0) -> AgentStateSnapshot:
    """A state large enough to be stored as a head and pieces (small ones are one head)."""
    return AgentStateSnapshot(scratchpad={"n": n}, files={"big.md": "b" * 20_000})


# -- layout -------------------------------------------------------------------------------


def test_key_layout_and_hash_fields(client: Any, ns: str) -> None:
    clock = FakeClock()
    cp = RedisCheckpointer(client, namespace=ns, ttl=60, clock=clock)
    info = cp.save_state("a:b{c}", big_state(1))
    key, pieces = thread_key(ns, "a:b{c}"), pieces_key(ns, "a:b{c}")
    updated, expires = index_keys(ns)
    assert namespace_keys(client, ns) == {key, pieces, updated, expires}
    fields = {name.decode(): value.decode() for name, value in client.hgetall(key).items()}
    assert sorted(fields) == sorted(FIELDS)  # no thread id, no redis-om "pk" beside them
    assert fields["version"] == "1"
    # The head holds every field but the transcript and the maps, whose pieces the manifest names.
    assert fields["state"] == big_state(1).model_dump_json(
        exclude={"files", "scratchpad", "messages"}
    )
    manifest = Manifest.from_json("a:b{c}", fields["manifest"])
    stored = {name.decode(): body for name, body in client.hgetall(pieces).items()}
    assert set(stored) == manifest.keys()
    # The scratchpad's one group piece, and the file's own piece, compressed (a zstd frame).
    assert sorted(stored.values(), key=len)[0] == b'"n":1'
    assert sorted(stored.values(), key=len)[1].startswith(b"\x28\xb5\x2f\xfd")
    assert int(fields["updated_at"]) == int(info.updated_at.timestamp() * 1_000_000)
    assert fields["expires_at"] == str(int(fields["updated_at"]) + 60_000_000)
    assert client.zscore(updated, "a:b{c}") == int(fields["updated_at"])
    assert client.zscore(expires, "a:b{c}") == int(fields["expires_at"])
    # The hash tag is the namespace alone: every key of the namespace shares its slot.
    slots = {key_slot(name.encode()) for name in (key, pieces, updated, expires)}
    assert slots == {key_slot(ns.encode())}


def test_key_prefix_changes_every_key(client: Any, ns: str) -> None:
    cp = RedisCheckpointer(client, namespace=ns, key_prefix="app:agents")
    cp.save_state("t", state())
    assert cp.key_prefix == "app:agents"
    assert client.exists(f"app:agents:{{{ns}}}:thread:t", f"app:agents:{{{ns}}}:updated") == 2
    assert namespace_keys(client, ns) == set()
    other = RedisCheckpointer(client, namespace=ns)
    assert other.load_state("t") is None
    client.delete(f"app:agents:{{{ns}}}:thread:t", f"app:agents:{{{ns}}}:updated")


@pytest.mark.parametrize("prefix", ["", "{x}", "a::b", ":a", "a:", "sp ace", "x" * 65, 5])
def test_bad_key_prefix_is_refused(client: Any, prefix: Any) -> None:
    with pytest.raises(ConfigurationError):
        RedisCheckpointer(client, key_prefix=prefix)


# -- physical TTL ---------------------------------------------------------------------------


def test_every_key_gets_the_ttl_and_each_save_refreshes_it(client: Any, ns: str) -> None:
    clock = FakeClock()
    cp = RedisCheckpointer(client, namespace=ns, ttl=60, clock=clock)
    cp.save_state("t", big_state())
    key, pieces = thread_key(ns, "t"), pieces_key(ns, "t")
    updated, expires = index_keys(ns)
    for name in (key, pieces, updated, expires):
        assert 55_000 < client.pttl(name) <= 60_000
    client.pexpire(key, 5_000)  # as if most of the TTL had passed
    client.pexpire(pieces, 5_000)
    clock.advance(30)
    cp.save_state("t", big_state(2))
    assert 55_000 < client.pttl(key) <= 60_000
    assert 55_000 < client.pttl(pieces) <= 60_000


def test_indexes_outlive_their_longest_lived_member(client: Any, ns: str) -> None:
    short = RedisCheckpointer(client, namespace=ns, ttl=60)
    long = RedisCheckpointer(client, namespace=ns, ttl=3600)
    forever = RedisCheckpointer(client, namespace=ns)
    updated, expires = index_keys(ns)
    long.save_state("long", state())
    short.save_state("short", state())  # a shorter TTL never shortens the indexes'
    assert client.pttl(updated) > 3_500_000
    assert client.pttl(expires) > 3_500_000
    forever.save_state("forever", state())
    assert client.pttl(updated) == client.pttl(expires) == -1
    assert client.zscore(expires, "forever") is None
    short.save_state("short", state())  # and a TTL never comes back while "forever" lives
    assert client.pttl(updated) == -1


def test_saving_without_ttl_removes_the_ttl(client: Any, ns: str) -> None:
    RedisCheckpointer(client, namespace=ns, ttl=60).save_state("t", big_state())
    info = RedisCheckpointer(client, namespace=ns).save_state("t", big_state(2))
    assert info.expires_at is None
    assert client.pttl(thread_key(ns, "t")) == -1
    assert client.pttl(pieces_key(ns, "t")) == -1
    assert client.zscore(index_keys(ns)[1], "t") is None


def test_restore_of_an_expired_checkpoint_stores_nothing(client: Any, ns: str) -> None:
    clock = FakeClock()
    source = RedisCheckpointer(client, namespace=ns + "-src", ttl=5, clock=clock)
    info = source.save_state("t", state())
    clock.advance(10)
    target = RedisCheckpointer(client, namespace=ns, clock=clock)
    target.save_state("t", big_state(1))
    assert client.exists(pieces_key(ns, "t"))
    restored = target.restore_checkpoint("t", state(), info)
    assert restored.expires_at == info.expires_at
    assert target.load_state("t") is None
    assert namespace_keys(client, ns) == set()
    assert target.list_threads().threads == []


def test_restore_of_a_live_checkpoint_gets_the_remaining_ttl(client: Any, ns: str) -> None:
    clock = FakeClock()
    source = RedisCheckpointer(client, namespace=ns + "-src", ttl=100, clock=clock)
    info = source.save_state("t", state())
    clock.advance(40)
    target = RedisCheckpointer(client, namespace=ns, clock=clock)
    target.restore_checkpoint("t", state(), info)
    assert 55_000 < client.pttl(thread_key(ns, "t")) <= 60_000


# -- atomicity ------------------------------------------------------------------------------


def test_conflicting_save_changes_no_key(client: Any, ns: str) -> None:
    cp = RedisCheckpointer(client, namespace=ns, ttl=60)
    cp.save_state("t", big_state(1))
    key, pieces = thread_key(ns, "t"), pieces_key(ns, "t")
    updated, expires = index_keys(ns)

    def stored() -> tuple[Any, ...]:
        return (
            client.hgetall(key),
            client.hgetall(pieces),
            client.zscore(updated, "t"),
            client.zscore(expires, "t"),
        )

    before = stored()
    client.pexpire(key, 30_000)
    with pytest.raises(ConflictError):
        cp.save_state("t", big_state(2), expected_version=7)
    after = stored()
    assert after == before
    assert client.pttl(key) <= 30_000


def test_a_retried_write_is_applied_once(client: Any, ns: str) -> None:
    # redis-py retries a script whose reply it lost; the write id makes the retry a no-op.
    cp = RedisCheckpointer(client, namespace=ns)
    cp.save_state("t", state(1))
    request = cp._core.prepare_write("t", state(2), 1)
    first = cp._run(cp._ops.write(request, "same-id", cp._core.now()))
    again = cp._run(cp._ops.write(request, "same-id", cp._core.now()))
    assert first.version == again.version == 2
    assert cp.load_checkpoint("t").info.version == 2
    assert cp.save_state("t", state(3), expected_version=2).version == 3


def test_concurrent_writers_share_a_small_pool(kit: RedisKit, ns: str) -> None:
    cp = RedisCheckpointer.from_url(kit.url, namespace=ns, max_connections=2)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for _ in range(5):
                cp.save_state(f"t{n}", state(n))
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cp.close()
    assert errors == []
    assert kit.stored_count(ns) == 12


# -- index entries Redis leaves behind --------------------------------------------------------


def test_listing_drops_entries_whose_hash_redis_removed(client: Any, ns: str) -> None:
    clock = FakeClock()
    cp = RedisCheckpointer(client, namespace=ns, ttl=3600, clock=clock)
    total, kept = PAGE_DANGLING_BUDGET * 2 + 50, 30
    for n in range(total):
        clock.advance(0.001)
        cp.save_state(f"t{n:04d}", state(n))
    # Delete most hashes behind the library's back, as key expiry does, newest first so that
    # a listing must cross several budgets of dangling entries before it finds live ones.
    gone = [thread_key(ns, f"t{n:04d}") for n in range(kept, total)]
    client.delete(*gone)
    updated, expires = index_keys(ns)
    assert client.zcard(updated) == total
    page = cp.list_threads(limit=10)
    assert [t.thread_id for t in page.threads] == [f"t{n:04d}" for n in range(kept - 1, 19, -1)]
    assert [t.thread_id for t in cp.iter_threads(page_size=7)] == [
        f"t{n:04d}" for n in range(kept - 1, -1, -1)
    ]
    assert client.zcard(updated) == client.zcard(expires) == kept
    assert cp.purge_expired() == 0


def test_purge_removes_index_entries_of_hashes_redis_removed(client: Any, ns: str) -> None:
    clock = FakeClock()
    cp = RedisCheckpointer(client, namespace=ns, ttl=60, clock=clock)
    for n in range(3):
        cp.save_state(f"t{n}", state(n))
    client.delete(thread_key(ns, "t0"))
    clock.advance(61)
    assert cp.purge_expired() == 3
    assert namespace_keys(client, ns) == set()


def test_purge_works_in_batches(client: Any, ns: str) -> None:
    clock = FakeClock()
    cp = RedisCheckpointer(client, namespace=ns, ttl=60, clock=clock)
    for n in range(450):
        cp.save_state(f"t{n}", big_state(n) if n % 2 else state(n))
    clock.advance(30)
    cp.save_state("young", big_state())
    clock.advance(31)
    assert cp.purge_expired() == 450
    young = {thread_key(ns, "young"), pieces_key(ns, "young")}
    assert namespace_keys(client, ns) == {*young, *index_keys(ns)}


# -- corrupt records --------------------------------------------------------------------------


def test_corrupt_metadata_raises_and_can_be_deleted(client: Any, ns: str) -> None:
    cp = RedisCheckpointer(client, namespace=ns)
    cp.save_state("t", state())
    client.hset(thread_key(ns, "t"), "version", "many")
    with pytest.raises(CorruptStateError, match="version"):
        cp.load_checkpoint("t")
    with pytest.raises(CorruptStateError):
        cp.save_state("t", state())
    with pytest.raises(CorruptStateError):
        cp.list_threads()
    assert cp.delete_thread("t") is True
    assert cp.save_state("t", state(), expected_version=0).version == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("created_at", "yesterday"),
        ("updated_at", "1.5"),
        ("expires_at", "soon"),
        ("size", "\u0663"),  # a non-ASCII digit
        ("size", ""),
        ("version", b"\xff"),
    ],
)
def test_a_mistyped_metadata_field_raises_on_load_and_list(
    client: Any, ns: str, field: str, value: str | bytes
) -> None:
    cp = RedisCheckpointer(client, namespace=ns)
    cp.save_state("t", state())
    client.hset(thread_key(ns, "t"), field, value)
    with pytest.raises(CorruptStateError, match=field) as caught:
        cp.load_checkpoint("t")
    assert caught.value.thread_id == "t"
    with pytest.raises(CorruptStateError, match=field):
        cp.list_threads()
    assert cp.delete_thread("t") is True


@pytest.mark.parametrize("field", ["version", "created_at", "updated_at", "size"])
def test_a_missing_metadata_field_raises(client: Any, ns: str, field: str) -> None:
    cp = RedisCheckpointer(client, namespace=ns)
    cp.save_state("t", state())
    client.hdel(thread_key(ns, "t"), field)
    with pytest.raises(CorruptStateError, match=field):
        cp.load_checkpoint("t")
    with pytest.raises(CorruptStateError, match=field):
        cp.list_threads()


def test_state_that_is_not_utf8_raises(client: Any, ns: str) -> None:
    cp = RedisCheckpointer(client, namespace=ns)
    cp.save_state("t", state())
    client.hset(thread_key(ns, "t"), "state", b"\xff{}")
    with pytest.raises(CorruptStateError, match="state"):
        cp.load_checkpoint("t")
    assert [t.thread_id for t in cp.list_threads().threads] == ["t"]  # listings skip the state


@pytest.mark.parametrize("field", ["created_at", "updated_at", "expires_at"])
def test_a_timestamp_out_of_range_raises(client: Any, ns: str, field: str) -> None:
    cp = RedisCheckpointer(client, namespace=ns, ttl=60)
    cp.save_state("t", state())
    client.hset(thread_key(ns, "t"), field, "9" * 30)
    with pytest.raises(CorruptStateError, match="out of range"):
        cp.load_checkpoint("t")
    with pytest.raises(CorruptStateError, match="out of range"):
        cp.list_threads()


@pytest.mark.parametrize("value", ["yesterday", "9" * 30])
def test_a_save_over_a_bad_created_at_raises_and_keeps_the_record(
    client: Any, ns: str, value: str
) -> None:
    cp = RedisCheckpointer(client, namespace=ns)
    cp.save_state("t", state())
    client.hset(thread_key(ns, "t"), "created_at", value)
    with pytest.raises(CorruptStateError, match="created_at"):
        cp.save_state("t", state(1))
    assert client.hget(thread_key(ns, "t"), "version") == b"1"
    assert cp.delete_thread("t") is True


@pytest.mark.parametrize("value", ["+7", " 7 ", "7.0", "0007"])
def test_integers_in_other_spellings_read_as_the_model_reads_them(
    client: Any, ns: str, value: str
) -> None:
    cp = RedisCheckpointer(client, namespace=ns)
    cp.save_state("t", state())
    client.hset(thread_key(ns, "t"), "version", value)
    assert cp.load_checkpoint("t").info.version == 7
    assert [t.version for t in cp.list_threads().threads] == [7]


def test_a_foreign_value_at_the_pieces_key_fails_the_save_before_it_writes(
    client: Any, ns: str
) -> None:
    cp = RedisCheckpointer(client, namespace=ns)
    cp.save_state("t", state(1))
    before = client.hgetall(thread_key(ns, "t"))
    client.set(pieces_key(ns, "t"), "not a hash")
    with pytest.raises(CheckpointerError, match="WRONGTYPE"):
        cp.save_state("t", big_state(2))
    assert client.hgetall(thread_key(ns, "t")) == before
    with pytest.raises(CheckpointerError, match="WRONGTYPE"):
        cp.load_state("t")
    client.delete(pieces_key(ns, "t"))
    assert cp.load_state("t") == state(1)
    assert cp.save_state("t", big_state(2)).version == 2
    assert cp.load_state("t") == big_state(2)


def test_a_foreign_value_at_an_index_key_is_a_checkpointer_error(client: Any, ns: str) -> None:
    client.set(index_keys(ns)[0], "not a sorted set")
    cp = RedisCheckpointer(client, namespace=ns)
    with pytest.raises(CheckpointerError) as caught:
        cp.save_state("t", state())
    assert not isinstance(caught.value, BackendUnavailableError)
    assert isinstance(caught.value.__cause__, redis.ResponseError)
    assert cp.load_state("t") is None  # the script failed before writing anything
    client.delete(index_keys(ns)[0])


# -- clients ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"decode_responses": True}, {"protocol": 3}, {"protocol": 3, "decode_responses": True}],
)
def test_client_flavours_read_the_same_data(kit: RedisKit, ns: str, options: Any) -> None:
    writer = RedisCheckpointer(kit.client, namespace=ns, ttl=60)
    info = writer.save_state("é/ü", state(1))
    with redis.Redis.from_url(kit.url, **options) as flavoured:
        reader = RedisCheckpointer(flavoured, namespace=ns, ttl=60)
        assert reader.load_checkpoint("é/ü").info == info
        assert reader.load_state("é/ü") == state(1)
        assert [t.thread_id for t in reader.list_threads().threads] == ["é/ü"]
        assert reader.save_state("é/ü", state(2), expected_version=1).version == 2
        assert reader.delete_thread("é/ü") is True


def test_injected_client_stays_open(kit: RedisKit, ns: str) -> None:
    with redis.Redis.from_url(kit.url) as client:
        cp = RedisCheckpointer(client, namespace=ns)
        cp.save_state("t", state())
        cp.close()
        assert client.ping() is True
        with pytest.raises(CheckpointerError):
            cp.load_state("t")


def test_injected_async_client_stays_open(kit: RedisKit, ns: str, portal: Portal) -> None:
    async def scenario() -> bool:
        client = redis.asyncio.Redis.from_url(kit.url)
        try:
            async with AsyncRedisCheckpointer(client, namespace=ns) as cp:
                await cp.save_state("t", state())
                assert await cp.load_state("t") == state()
            return bool(await client.ping())
        finally:
            await client.aclose()

    assert portal.call(scenario) is True


def test_from_url_owns_and_closes_its_pool(kit: RedisKit, ns: str) -> None:
    cp = RedisCheckpointer.from_url(kit.url, namespace=ns, max_connections=3)
    cp.save_state("t", state())
    pool = cp._client.connection_pool
    assert pool.max_connections == 3
    assert len(pool._connections) >= 1
    cp.close()
    assert all(connection._sock is None for connection in pool._connections)


def test_open_checkpointer_picks_the_redis_store(kit: RedisKit, ns: str, portal: Portal) -> None:
    with open_checkpointer(kit.url, namespace=ns, ttl=timedelta(minutes=5)) as cp:
        assert isinstance(cp, RedisCheckpointer)
        cp.save_state("t", state())

    async def scenario() -> Any:
        async with open_async_checkpointer(kit.url, namespace=ns) as acp:
            assert isinstance(acp, AsyncRedisCheckpointer)
            return await acp.load_checkpoint("t")

    loaded = portal.call(scenario)
    assert isinstance(loaded.info, CheckpointInfo)
    assert loaded.info.expires_at is not None


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:6379", "redis+cluster://127.0.0.1:7000/2", "unix:///tmp/redis.sock", 7],
)
def test_bad_urls_are_refused(url: Any) -> None:
    with pytest.raises(ConfigurationError):
        RedisCheckpointer.from_url(url)


@pytest.mark.parametrize("retries", [-1, 1.5, True])
def test_bad_retries_are_refused(retries: Any) -> None:
    with pytest.raises(ConfigurationError):
        RedisCheckpointer.from_url("redis://127.0.0.1:6379/0", retries=retries)


@pytest.mark.timeout(30)
def test_a_server_that_never_answers_times_out(ns: str, portal: Portal) -> None:
    port = free_port()
    options = {"socket_timeout": 0.3, "socket_connect_timeout": 0.3, "retries": 1}
    with listening(port):
        cp = RedisCheckpointer.from_url(f"redis://127.0.0.1:{port}/0", namespace=ns, **options)
        with pytest.raises(BackendUnavailableError) as caught:
            cp.save_state("t", state())
        assert isinstance(caught.value.__cause__, redis.TimeoutError | redis.ConnectionError)
        cp.close()

        async def scenario() -> None:
            acp = AsyncRedisCheckpointer.from_url(
                f"redis://127.0.0.1:{port}/0", namespace=ns, **options
            )
            try:
                await acp.load_state("t")
            finally:
                await acp.close()

        with pytest.raises(BackendUnavailableError):
            portal.call(scenario)
