"""The first come, first served gate (`_fair`): order of admission, bounded waits, hand-over.

No store: threads and asyncio tasks queue at a gate directly. Arrival order is made
deterministic by starting each waiter only once the previous one is queued.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.pool import NullPool, QueuePool, StaticPool

from agents_persistence.errors import BackendUnavailableError, CallTimeoutError
from agents_persistence.repositories._fair import (
    NO_ADMISSION,
    Admission,
    FairGate,
    pool_capacity,
    sqlite_writer_gate,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

MARGIN = 2.0  # seconds a loaded machine may add to a bounded wait


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.001)


def _queue_threads(gate: FairGate, count: int, admitted: list[int]) -> list[threading.Thread]:
    """Start ``count`` threads that wait at ``gate`` one after the other, in index order."""
    threads = []
    for i in range(count):

        def wait(i: int = i) -> None:
            with gate:
                admitted.append(i)

        thread = threading.Thread(target=wait)
        thread.start()
        threads.append(thread)
        _until(lambda i=i: gate.waiting == i + 1, f"thread {i} is queued")
    return threads


def test_an_uncontended_gate_admits_up_to_its_capacity_at_once() -> None:
    gate = FairGate(2, 0.05)
    gate.acquire()
    gate.acquire()
    assert gate.waiting == 0
    with pytest.raises(BackendUnavailableError):
        gate.acquire()
    gate.release()
    gate.acquire()  # a freed slot is free again
    assert not gate.served  # nobody had to wait for one


def test_threads_are_admitted_in_their_order_of_arrival() -> None:
    gate = FairGate(1, 10)
    admitted: list[int] = []
    gate.acquire()
    threads = _queue_threads(gate, 20, admitted)
    gate.release()
    for thread in threads:
        thread.join(10)
    assert admitted == list(range(20))
    assert list(gate.served) == sorted(gate.served)
    assert len(gate.served) == 20
    assert gate.waiting == 0


def test_a_returning_caller_cannot_overtake_a_waiting_one() -> None:
    gate = FairGate(1, 10)
    entered, leave = threading.Event(), threading.Event()

    def waiter() -> None:
        with gate:
            entered.set()
            leave.wait(10)

    gate.acquire()
    thread = threading.Thread(target=waiter)
    thread.start()
    _until(lambda: gate.waiting == 1, "the waiter is queued")
    gate.release()
    # The slot went to the waiter, not back to whoever asks first.
    with pytest.raises(BackendUnavailableError):
        gate.acquire(timeout=0.1)
    assert entered.wait(10)
    leave.set()
    thread.join(10)
    gate.acquire()


def test_a_wait_past_the_pool_timeout_raises_and_leaves_the_queue() -> None:
    gate = FairGate(1, 0.3)
    gate.acquire()
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=r"pool_timeout=0\.3") as caught:
        gate.acquire()
    waited = time.monotonic() - started
    assert not isinstance(caught.value, CallTimeoutError)
    assert 0.3 <= waited < 0.3 + MARGIN
    assert gate.waiting == 0
    gate.release()
    gate.acquire()  # the gate still works


def test_a_wait_cut_by_the_call_budget_raises_call_timeout() -> None:
    gate = FairGate(1, 30, budget=0.3)
    gate.acquire()
    started = time.monotonic()
    with pytest.raises(CallTimeoutError, match="call_timeout"):
        gate.acquire()
    assert time.monotonic() - started < 0.3 + MARGIN


def test_a_pool_timeout_below_the_budget_is_the_bound() -> None:
    gate = FairGate(1, 0.2, budget=30)
    gate.acquire()
    with pytest.raises(BackendUnavailableError) as caught:
        gate.acquire()
    assert not isinstance(caught.value, CallTimeoutError)


def test_tasks_are_admitted_in_their_order_of_arrival() -> None:
    async def scenario() -> list[int]:
        gate = FairGate(1, 10)
        admitted: list[int] = []

        async def wait(i: int) -> None:
            async with gate:
                admitted.append(i)
                await asyncio.sleep(0)  # others run meanwhile; none may get in

        await gate.acquire_async()
        tasks = []
        for i in range(20):
            tasks.append(asyncio.create_task(wait(i)))
            while gate.waiting < i + 1:
                await asyncio.sleep(0)
        gate.release()
        await asyncio.gather(*tasks)
        assert list(gate.served) == sorted(gate.served)
        return admitted

    assert asyncio.run(scenario()) == list(range(20))


def test_a_task_wait_past_the_timeout_raises_and_leaves_the_queue() -> None:
    async def scenario() -> None:
        gate = FairGate(1, 0.3)
        await gate.acquire_async()
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="pool_timeout"):
            await gate.acquire_async()
        assert time.monotonic() - started < 0.3 + MARGIN
        assert gate.waiting == 0
        gate.release()
        await gate.acquire_async()

    asyncio.run(scenario())


def test_a_cancelled_task_gives_up_its_place_and_loses_no_slot() -> None:
    async def scenario() -> None:
        gate = FairGate(1, 10)
        await gate.acquire_async()
        task = asyncio.create_task(gate.acquire_async())
        while gate.waiting < 1:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gate.waiting == 0
        gate.release()
        await asyncio.wait_for(gate.acquire_async(), 1)  # the slot is free, not lost

    asyncio.run(scenario())


def test_a_task_cancelled_as_its_turn_came_passes_the_slot_on() -> None:
    async def scenario() -> None:
        gate = FairGate(1, 10)
        await gate.acquire_async()
        first = asyncio.create_task(gate.acquire_async())
        while gate.waiting < 1:
            await asyncio.sleep(0)
        second = asyncio.create_task(gate.acquire_async())
        while gate.waiting < 2:
            await asyncio.sleep(0)
        gate.release()  # hands the slot to `first`, which is cancelled before it runs
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(second, 1)

    asyncio.run(scenario())


def test_threads_and_tasks_share_one_queue() -> None:
    gate = FairGate(1, 10)
    admitted: list[str] = []
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    try:
        gate.acquire()
        threads = _queue_threads(gate, 1, [])  # index 0: a thread

        async def task() -> None:
            async with gate:
                admitted.append("task")

        done = asyncio.run_coroutine_threadsafe(task(), loop)
        _until(lambda: gate.waiting == 2, "the task is queued")

        def last() -> None:
            with gate:
                admitted.append("thread after the task")

        late = threading.Thread(target=last)
        late.start()
        _until(lambda: gate.waiting == 3, "the last thread is queued")
        gate.release()
        done.result(10)
        for thread in [*threads, late]:
            thread.join(10)
        assert admitted == ["task", "thread after the task"]
        assert list(gate.served) == sorted(gate.served)
        assert len(gate.served) == 3
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()


def test_admission_takes_the_writer_gate_for_writes_only() -> None:
    pool, writer = FairGate(2, 1), FairGate(1, 1)
    admission = Admission(pool, writer)
    with admission.admit("save"):
        assert writer.waiting == 0
        with admission.admit("load"):  # readers pass the pool's gate only
            pass
        with pytest.raises(BackendUnavailableError), admission.admit("delete"):
            pass
    with admission.admit("purge"), admission.admit("listing"):
        pass
    with NO_ADMISSION.admit("save"), NO_ADMISSION.admit("save"):
        pass


def test_a_failed_writer_wait_gives_the_pool_slot_back() -> None:
    pool, writer = FairGate(1, 1), FairGate(1, 0.1)
    admission = Admission(pool, writer)
    writer.acquire()
    with pytest.raises(BackendUnavailableError), admission.admit("save"):
        pass
    with admission.admit("load"):  # the pool's slot was released
        pass


def test_pool_capacity_counts_what_the_pool_can_lend() -> None:
    assert pool_capacity({"pool_size": 5, "max_overflow": 10}) == 15
    assert pool_capacity({"pool_size": 2, "max_overflow": 0, "poolclass": QueuePool}) == 2
    assert pool_capacity({}) == 15  # SQLAlchemy's defaults
    assert pool_capacity({"pool_size": 5, "max_overflow": -1}) is None  # unbounded
    assert pool_capacity({"pool_size": 0, "max_overflow": 3}) is None  # no limit at all
    assert pool_capacity({"poolclass": NullPool}) is None
    assert pool_capacity({"poolclass": StaticPool}) is None


def test_one_writer_gate_per_sqlite_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    first = sqlite_writer_gate(str(tmp_path / "a.db"), 1)
    assert sqlite_writer_gate(str(tmp_path / "sub" / ".." / "a.db"), 5) is first
    assert sqlite_writer_gate(str(tmp_path / "b.db"), 1) is not first
    assert first.capacity == 1


def test_a_gate_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairGate(0, 1)


# --- patience ---------------------------------------------------------------------------------


def test_with_patience_a_running_caller_may_go_before_a_fresh_waiter() -> None:
    gate = FairGate(1, 30, patience=30)
    admitted: list[int] = []
    gate.acquire()
    threads = _queue_threads(gate, 1, admitted)
    gate.release()
    gate.acquire(timeout=5)  # the waiter is younger than its patience: the slot is free to take
    gate.release()
    for thread in threads:
        thread.join(10)
    assert admitted == [0]  # and it still got in, once nobody took the slot
    assert gate.waiting == 0
    assert gate._free == 1


def test_past_its_patience_a_waiter_is_not_overtaken() -> None:
    gate = FairGate(1, 30, patience=0.05)
    entered, leave = threading.Event(), threading.Event()

    def waiter() -> None:
        with gate:
            entered.set()
            leave.wait(10)

    gate.acquire()
    thread = threading.Thread(target=waiter)
    thread.start()
    _until(lambda: gate.waiting == 1, "the waiter is queued")
    time.sleep(0.1)  # longer than its patience
    gate.release()
    with pytest.raises(BackendUnavailableError):
        gate.acquire(timeout=0.1)
    assert entered.wait(10)
    leave.set()
    thread.join(10)


@pytest.mark.parametrize("patience", [0.0, 0.001, 0.05])
def test_many_threads_and_tasks_never_exceed_the_capacity(patience: float) -> None:
    gate = FairGate(3, 30, patience=patience)
    inside, peak, calls = [0], [0], [0]
    lock = threading.Lock()

    def enter() -> None:
        with lock:
            inside[0] += 1
            calls[0] += 1
            peak[0] = max(peak[0], inside[0])

    def leave() -> None:
        with lock:
            inside[0] -= 1

    def thread_worker() -> None:
        for i in range(100):
            with gate:
                enter()
                time.sleep(0.0005 * (i % 3))
                leave()

    def loop_worker() -> None:
        async def one() -> None:
            for i in range(100):
                async with gate:
                    enter()
                    await asyncio.sleep(0.0005 * (i % 2))
                    leave()

        async def main() -> None:
            await asyncio.gather(*(one() for _ in range(5)))

        asyncio.run(main())

    workers = [threading.Thread(target=thread_worker) for _ in range(10)]
    workers += [threading.Thread(target=loop_worker) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert calls[0] == 10 * 100 + 2 * 5 * 100
    assert peak[0] <= 3
    assert gate.waiting == 0
    assert gate._free == 3  # every slot came back
    assert list(gate.served) == sorted(gate.served)  # waiters never overtook each other
