"""The Redis store's time budget: every call ends within ``call_timeout`` plus a margin.

Against a private ``redis-server`` frozen with SIGSTOP (the kernel still accepts connections
and takes the bytes sent, nothing answers) and a socket that accepts and never answers: a call
on a pooled connection (its request sent, no reply coming), a call that needs a new connection
at the same time, and a call to the silent socket each raise `CallTimeoutError` in time, sync
and async. Once the server answers again, the same checkpointer works and every acknowledged
save is there.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence import (
    AgentStateSnapshot,
    AsyncRedisCheckpointer,
    CallTimeoutError,
    ConfigurationError,
    RedisCheckpointer,
)
from agents_persistence.repositories._redis_client import budget

from ..kits.base import IN_CI
from ..servers import Blackhole, RedisServer
from .budget_support import (
    CALL_TIMEOUT,
    MARGIN,
    assert_timed_out,
    timed,
    timed_all,
    timed_async,
    warm,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    reason = RedisServer.missing()
    if reason is not None:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    with RedisServer() as own:
        yield own


def state(n: int) -> AgentStateSnapshot:
    return AgentStateSnapshot(scratchpad={"n": n})


def test_hung_server_in_flight_and_new_connection_sync(server: RedisServer) -> None:
    cp: RedisCheckpointer[AgentStateSnapshot] = RedisCheckpointer.from_url(
        server.url(), namespace="budget-sync", call_timeout=CALL_TIMEOUT
    )
    try:
        warm(lambda: cp.load_state("t"))
        assert cp.save_state("t", state(1)).version == 1  # acknowledged; a pooled connection
        server.pause()
        try:
            # The first call takes the pooled connection and waits on it; the second finds
            # none free and opens a new one, whose handshake gets no answer either.
            pooled, fresh = timed_all(
                [lambda: cp.load_state("t"), lambda: cp.save_state("t", state(2))]
            )
            alone = timed(lambda: cp.list_threads())
        finally:
            server.resume()
        assert_timed_out(pooled, CallTimeoutError)
        assert_timed_out(fresh, CallTimeoutError)
        assert_timed_out(alone, CallTimeoutError)

        # The same object works again, and the acknowledged save is there. The timed-out save
        # may have been applied (the server read it after it woke): its outcome is unknown.
        found = cp.load_checkpoint("t")
        assert found is not None
        assert (found.info.version, found.state) in ((1, state(1)), (2, state(2)))
        again = cp.save_state("t", state(3), expected_version=found.info.version)
        assert cp.load_state("t") == state(3)
        assert again.version == found.info.version + 1
    finally:
        cp.close()


def test_hung_server_in_flight_and_new_connection_async(server: RedisServer) -> None:
    async def prepare() -> AsyncRedisCheckpointer[AgentStateSnapshot]:
        cp: AsyncRedisCheckpointer[AgentStateSnapshot] = AsyncRedisCheckpointer.from_url(
            server.url(), namespace="budget-async", call_timeout=CALL_TIMEOUT
        )
        assert (await cp.save_state("t", state(1))).version == 1
        return cp

    async def both(cp: AsyncRedisCheckpointer[AgentStateSnapshot]) -> list[Any]:
        # Two calls at once on one loop: one on the pooled connection, one on a new one.
        started = time.monotonic()
        results = await asyncio.gather(
            cp.load_state("t"), cp.save_state("t", state(2)), return_exceptions=True
        )
        return [time.monotonic() - started, *results]

    async def after(cp: AsyncRedisCheckpointer[AgentStateSnapshot]) -> None:
        found = await cp.load_checkpoint("t")
        assert found is not None
        assert (found.info.version, found.state) in ((1, state(1)), (2, state(2)))
        await cp.save_state("t", state(3), expected_version=found.info.version)
        assert await cp.load_state("t") == state(3)

    loop = asyncio.new_event_loop()
    try:
        cp = loop.run_until_complete(prepare())
        server.pause()
        try:
            outcome = timed(lambda: loop.run_until_complete(both(cp)))
        finally:
            server.resume()
        seconds, loaded, saved = outcome.result
        assert isinstance(loaded, CallTimeoutError), loaded
        assert isinstance(saved, CallTimeoutError), saved
        assert seconds <= CALL_TIMEOUT + MARGIN, f"took {seconds:.2f} s"
        loop.run_until_complete(after(cp))
        loop.run_until_complete(cp.close())
    finally:
        loop.close()


def test_silent_socket_sync_and_async() -> None:
    with Blackhole() as hole:
        url = f"redis://127.0.0.1:{hole.port}/0"
        cp: RedisCheckpointer[AgentStateSnapshot] = RedisCheckpointer.from_url(
            url, call_timeout=CALL_TIMEOUT
        )
        try:
            assert_timed_out(timed(lambda: cp.save_state("t", state(1))), CallTimeoutError)
            assert_timed_out(timed(lambda: cp.load_state("t")), CallTimeoutError)
        finally:
            cp.close()

        async def load() -> Any:
            acp: AsyncRedisCheckpointer[AgentStateSnapshot] = AsyncRedisCheckpointer.from_url(
                url, call_timeout=CALL_TIMEOUT
            )
            try:
                return await acp.load_state("t")
            finally:
                await acp.close()

        assert_timed_out(timed_async(load), CallTimeoutError)
        assert hole.accepted >= 3


def test_call_timeout_from_the_url(server: RedisServer) -> None:
    """``?call_timeout=`` bounds the calls of a checkpointer opened from the URL alone."""
    cp: RedisCheckpointer[AgentStateSnapshot] = RedisCheckpointer.from_url(
        f"{server.url()}?call_timeout={CALL_TIMEOUT}", namespace="budget-url"
    )
    try:
        cp.save_state("t", state(1))
        server.pause()
        try:
            outcome = timed(lambda: cp.load_state("t"))
        finally:
            server.resume()
        assert_timed_out(outcome, CallTimeoutError)
        assert cp.load_state("t") == state(1)
    finally:
        cp.close()


def test_timeouts_are_shares_of_the_budget() -> None:
    derived = budget(None, {})
    assert derived.call_timeout == 5.0
    assert (derived.pool_timeout, derived.socket_connect_timeout, derived.socket_timeout) == (
        pytest.approx(2.0),
        pytest.approx(1.0),
        pytest.approx(2.0),
    )
    # Given timeouts are kept; the others share what is left in the same proportions.
    mixed = budget(3.0, {"socket_timeout": 1.5})
    assert mixed.socket_timeout == 1.5
    assert mixed.pool_timeout == pytest.approx(1.0)
    assert mixed.socket_connect_timeout == pytest.approx(0.5)


def test_timeouts_past_the_budget_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="call_timeout"):
        RedisCheckpointer.from_url("redis://127.0.0.1:1/0", call_timeout=1.0, socket_timeout=2.0)
    with pytest.raises(ConfigurationError, match="call_timeout"):
        RedisCheckpointer.from_url("redis://127.0.0.1:1/0?call_timeout=0")
    with pytest.raises(ConfigurationError, match="call_timeout"):
        AsyncRedisCheckpointer.from_url(
            "redis://127.0.0.1:1/0?socket_timeout=4&socket_connect_timeout=2"
        )
