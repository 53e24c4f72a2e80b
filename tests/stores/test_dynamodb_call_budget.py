"""The DynamoDB store's time budget: every call ends within ``call_timeout`` plus a margin.

Against a private ``moto_server`` process frozen with SIGSTOP (a stalled endpoint: the kernel
accepts connections and takes the requests, nothing answers) and a socket that accepts and
never answers: calls on a kept-alive connection and on new ones at the same time, sync and
async (whose worker threads are part of the budget), each raise `CallTimeoutError` in time.
Once the endpoint answers again, the same checkpointer works and every acknowledged save is
there.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence import (
    AgentStateSnapshot,
    AsyncDynamoDBCheckpointer,
    BackendUnavailableError,
    CallTimeoutError,
    ConfigurationError,
    DynamoDBCheckpointer,
)
from agents_persistence.repositories._call_budget import deadline
from agents_persistence.repositories._dynamodb_budget import BudgetHooks, derive_timeouts

from ..kits.base import IN_CI
from ..kits.dynamodb import CREDENTIALS, REGION
from ..servers import Blackhole, MotoServer
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

TABLE = "budget-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    reason = MotoServer.missing()
    if reason is not None:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    with MotoServer() as own:
        with DynamoDBCheckpointer(TABLE, **options(own.endpoint)) as cp:
            cp.create_table()
        yield own


def options(endpoint: str, **more: Any) -> dict[str, Any]:
    return {"region": REGION, "endpoint_url": endpoint, **CREDENTIALS, **more}


def state(n: int) -> AgentStateSnapshot:
    return AgentStateSnapshot(scratchpad={"n": n})


def test_stalled_endpoint_sync(moto: MotoServer) -> None:
    cp: DynamoDBCheckpointer[AgentStateSnapshot] = DynamoDBCheckpointer(
        TABLE, namespace="budget-sync", **options(moto.endpoint, call_timeout=CALL_TIMEOUT)
    )
    try:
        warm(lambda: cp.load_state("t"))  # makes the client, outside the measured calls
        assert cp.save_state("t", state(1)).version == 1  # acknowledged; a kept-alive connection
        moto.pause()
        try:
            # One call reuses the kept-alive connection, the other opens a new one.
            loaded, saved = timed_all(
                [lambda: cp.load_state("t"), lambda: cp.save_state("t", state(2))]
            )
            listed = timed(lambda: cp.list_threads())
        finally:
            moto.resume()
        assert_timed_out(loaded, CallTimeoutError)
        assert_timed_out(saved, CallTimeoutError)
        assert_timed_out(listed, CallTimeoutError)

        # The same object works again; the timed-out save may have been applied (the server
        # handled it after it woke): its outcome is unknown, the acknowledged one is kept.
        found = cp.load_checkpoint("t")
        assert found is not None
        assert (found.info.version, found.state) in ((1, state(1)), (2, state(2)))
        cp.save_state("t", state(3), expected_version=found.info.version)
        assert cp.load_state("t") == state(3)
    finally:
        cp.close()


def test_stalled_endpoint_async_with_one_worker(moto: MotoServer) -> None:
    """The wait for the async twin's single worker thread counts in each call's budget."""

    async def run() -> None:
        cp: AsyncDynamoDBCheckpointer[AgentStateSnapshot] = AsyncDynamoDBCheckpointer(
            TABLE,
            namespace="budget-async",
            max_threads=1,
            **options(moto.endpoint, call_timeout=CALL_TIMEOUT),
        )
        try:
            for attempt in range(3):  # the first call makes the client (see `warm`)
                try:
                    await cp.load_state("t")
                    break
                except CallTimeoutError:
                    if attempt == 2:
                        raise
            assert (await cp.save_state("t", state(1))).version == 1
            moto.pause()
            try:
                started = time.monotonic()
                results = await asyncio.gather(
                    cp.load_state("t"), cp.save_state("t", state(2)), return_exceptions=True
                )
                seconds = time.monotonic() - started
            finally:
                moto.resume()
            assert all(isinstance(result, CallTimeoutError) for result in results), results
            assert seconds <= CALL_TIMEOUT + MARGIN, f"took {seconds:.2f} s"

            found = await cp.load_checkpoint("t")
            assert found is not None
            assert (found.info.version, found.state) in ((1, state(1)), (2, state(2)))
            await cp.save_state("t", state(3), expected_version=found.info.version)
            assert await cp.load_state("t") == state(3)
        finally:
            await cp.close()

    outcome = timed_async(run)
    if outcome.error is not None:
        raise outcome.error


def test_silent_endpoint_sync_and_async() -> None:
    with Blackhole() as hole:
        endpoint = f"http://127.0.0.1:{hole.port}"
        cp: DynamoDBCheckpointer[AgentStateSnapshot] = DynamoDBCheckpointer(
            TABLE, **options(endpoint, call_timeout=CALL_TIMEOUT)
        )
        try:
            assert_timed_out(timed(lambda: cp.save_state("t", state(1))), CallTimeoutError)
            assert_timed_out(timed(lambda: cp.load_state("t")), CallTimeoutError)
        finally:
            cp.close()

        async def load() -> Any:
            acp: AsyncDynamoDBCheckpointer[AgentStateSnapshot] = AsyncDynamoDBCheckpointer(
                TABLE, **options(endpoint, call_timeout=CALL_TIMEOUT)
            )
            try:
                return await acp.load_state("t")
            finally:
                await acp.close()

        assert_timed_out(timed_async(load), CallTimeoutError)
        assert hole.accepted >= 3


def test_call_timeout_from_the_url(moto: MotoServer) -> None:
    url = f"dynamodb://{TABLE}?region={REGION}&endpoint={moto.endpoint}&call_timeout={CALL_TIMEOUT}"
    cp: DynamoDBCheckpointer[AgentStateSnapshot] = DynamoDBCheckpointer.from_url(
        url, namespace="budget-url", **CREDENTIALS
    )
    try:
        assert cp.settings.call_timeout == CALL_TIMEOUT
        warm(lambda: cp.load_state("t"))
        cp.save_state("t", state(1))
        moto.pause()
        try:
            outcome = timed(lambda: cp.load_state("t"))
        finally:
            moto.resume()
        assert_timed_out(outcome, CallTimeoutError)
        assert cp.load_state("t") == state(1)
    finally:
        cp.close()


def test_timeouts_are_shares_of_the_budget() -> None:
    assert derive_timeouts(None, None, None) == (5.0, pytest.approx(1.0), pytest.approx(2.0))
    # A given timeout is kept; the other shares what is left with the room kept for retries.
    budget, connect, read = derive_timeouts(3.0, None, 1.8)
    assert (budget, read) == (3.0, 1.8)
    assert connect == pytest.approx(0.4)
    with pytest.raises(ConfigurationError, match="call_timeout"):
        DynamoDBCheckpointer(TABLE, call_timeout=2.0, read_timeout=2.5, region=REGION)
    with pytest.raises(ConfigurationError, match="call_timeout"):
        DynamoDBCheckpointer.from_url(f"dynamodb://{TABLE}?region={REGION}&call_timeout=-1")


def test_a_retry_that_would_overrun_the_budget_is_not_started() -> None:
    """The ``needs-retry`` hook: botocore decides, unless its retry could not end in time."""
    hooks = BudgetHooks(attempt_seconds=1.0, max_attempts=4)
    throttled = (SimpleNamespace(status_code=400), {"Error": {"Code": "ThrottlingException"}})
    refused = (SimpleNamespace(status_code=400), {"Error": {"Code": "ValidationException"}})
    assert hooks.needs_retry(attempts=1, response=throttled) is None  # outside a call
    with deadline(10.0):
        assert hooks.needs_retry(attempts=1, response=throttled) is None  # 1 s + 1 s fits
    with deadline(1.5):
        assert hooks.needs_retry(attempts=1, response=refused) is None  # never retried anyway
        assert hooks.needs_retry(attempts=4, response=throttled) is None  # botocore gives up
        with pytest.raises(BackendUnavailableError, match="ThrottlingException"):
            hooks.needs_retry(attempts=1, response=throttled)
        lost = ConnectionError("reset")
        with pytest.raises(ConnectionError):
            hooks.needs_retry(attempts=1, caught_exception=lost)
