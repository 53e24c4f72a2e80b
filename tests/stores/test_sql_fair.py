"""Fair waiting on the SQL store: 50 callers on a pool of 2, served first come, first served.

``from_url`` puts a gate sized to the pool in front of it (and, on an SQLite file, one writer
gate per file): every call completes, waiters are let in in their order of arrival, and a wait
past ``pool_timeout`` fails with `BackendUnavailableError` within that bound.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence import (
    AgentStateSnapshot,
    AsyncSQLCheckpointer,
    BackendUnavailableError,
    CallTimeoutError,
    SQLCheckpointer,
)

if TYPE_CHECKING:
    from pathlib import Path

    from agents_persistence.repositories._fair import FairGate

    from ..kits.sql import SQLKit
    from ..support import Portal

CALLERS = 50
ROUNDS = 4
MARGIN = 2.0


@pytest.fixture
def namespace() -> str:
    return "f" + uuid.uuid4().hex[:16]


def _in_arrival_order(gate: FairGate | None) -> list[int]:
    assert gate is not None
    served = list(gate.served)
    assert served, "nobody waited: the test did not contend"
    assert served == sorted(served), "a later arrival was let in before an earlier one"
    assert gate.waiting == 0
    return served


def _state(caller: int, turn: int) -> AgentStateSnapshot:
    return AgentStateSnapshot(scratchpad={"caller": caller, "turn": turn, "pad": "x" * 2000})


def _check(cp: Any, kit: SQLKit) -> None:
    _in_arrival_order(cp._admission.pool)
    if kit.name == "sqlite":
        _in_arrival_order(cp._admission.writer)


def test_fifty_threads_on_a_pool_of_two_are_served_in_arrival_order(
    sql_kit: SQLKit, namespace: str
) -> None:
    cp = SQLCheckpointer.from_url(
        sql_kit.sync_url(), pool_size=2, max_overflow=0, namespace=namespace
    )
    errors: list[BaseException] = []
    start = threading.Barrier(CALLERS)

    def caller(i: int) -> None:
        try:
            start.wait(10)
            for turn in range(ROUNDS):
                cp.save_state(f"c{i}", _state(i, turn), expected_version=turn)
                loaded = cp.load_state(f"c{i}")
                assert loaded is not None
                assert loaded.scratchpad["turn"] == turn
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors[:3]
        assert len(cp.list_threads(limit=100).threads) == CALLERS
        _check(cp, sql_kit)
    finally:
        for i in range(CALLERS):
            cp.delete_thread(f"c{i}")
        cp.close()


def test_fifty_tasks_on_a_pool_of_two_are_served_in_arrival_order(
    sql_kit: SQLKit, namespace: str, portal: Portal
) -> None:
    async def scenario() -> None:
        cp = AsyncSQLCheckpointer.from_url(
            sql_kit.async_url(), pool_size=2, max_overflow=0, namespace=namespace
        )

        async def caller(i: int) -> None:
            for turn in range(ROUNDS):
                await cp.save_state(f"c{i}", _state(i, turn), expected_version=turn)
                loaded = await cp.load_state(f"c{i}")
                assert loaded is not None
                assert loaded.scratchpad["turn"] == turn

        try:
            await asyncio.gather(*(caller(i) for i in range(CALLERS)))
            assert len((await cp.list_threads(limit=100)).threads) == CALLERS
            _check(cp, sql_kit)
        finally:
            for i in range(CALLERS):
                await cp.delete_thread(f"c{i}")
            await cp.close()

    portal.call(scenario)


def test_a_wait_past_pool_timeout_raises_within_the_bound(sql_kit: SQLKit, namespace: str) -> None:
    cp = SQLCheckpointer.from_url(
        sql_kit.sync_url(), pool_size=1, max_overflow=0, pool_timeout=0.5, namespace=namespace
    )
    gate = cp._admission.pool
    assert gate is not None
    try:
        cp.load_state("warm")
        gate.acquire()  # what a call holding the only connection does
        try:
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError, match=r"pool_timeout=0\.5"):
                cp.load_state("t")
            assert time.monotonic() - started < 0.5 + MARGIN
        finally:
            gate.release()
        assert cp.load_state("t") is None  # and the next call goes through
    finally:
        cp.close()


def test_a_wait_cut_by_the_call_budget_is_a_call_timeout(sql_kit: SQLKit, namespace: str) -> None:
    # pool_timeout defaults to call_timeout: the budget is what ends the wait.
    cp = SQLCheckpointer.from_url(
        sql_kit.sync_url(), pool_size=1, max_overflow=0, call_timeout=0.5, namespace=namespace
    )
    gate = cp._admission.pool
    assert gate is not None
    try:
        cp.load_state("warm")
        gate.acquire()
        try:
            started = time.monotonic()
            with pytest.raises(CallTimeoutError, match="call_timeout"):
                cp.load_state("t")
            assert time.monotonic() - started < 0.5 + MARGIN
        finally:
            gate.release()
        assert cp.load_state("t") is None
    finally:
        cp.close()


def test_a_sqlite_writer_waiting_past_busy_timeout_is_a_call_timeout(
    tmp_path: Path, namespace: str
) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    cp = SQLCheckpointer.from_url(url, auto_migrate=True, busy_timeout=0.3, namespace=namespace)
    writer = cp._admission.writer
    assert writer is not None
    try:
        cp.save_state("t", AgentStateSnapshot())
        writer.acquire()  # another writer of this process holds the file's write turn
        try:
            started = time.monotonic()
            with pytest.raises(CallTimeoutError, match="busy_timeout"):
                cp.save_state("t", AgentStateSnapshot())
            assert time.monotonic() - started < 0.3 + MARGIN
            assert cp.load_state("t") is not None  # readers do not wait for writers
        finally:
            writer.release()
        assert cp.save_state("t", AgentStateSnapshot()).version == 2
    finally:
        cp.close()


def test_an_engine_of_the_application_keeps_its_own_pool(sql_kit: SQLKit, namespace: str) -> None:
    cp = SQLCheckpointer(sql_kit.engine, namespace=namespace)
    assert cp._admission.pool is None
    assert cp._admission.writer is None


def test_in_memory_sqlite_has_no_gate(namespace: str) -> None:
    cp = SQLCheckpointer.from_url("sqlite://", auto_migrate=True, namespace=namespace)
    try:
        assert cp._admission.pool is None
        assert cp._admission.writer is None
        cp.save_state("t", AgentStateSnapshot())
    finally:
        cp.close()
