"""First come, first served admission: a gate in front of a connection pool or a database.

SQLAlchemy's ``QueuePool`` hands a returned connection to whichever thread asks next: a thread
that gives its connection back and asks again at once takes it ahead of the threads woken to
wait for it. Under load one caller can lose that race for many seconds. SQLite's busy handler
has the same flaw for writers: a waiting writer sleeps and retries, and another takes the lock
in between. A `FairGate` in front of either admits at most ``capacity`` callers at a time and
lets waiting callers in in their order of arrival: a freed slot goes to the caller that has
waited longest (at once, or once it has waited ``patience``, see `PATIENCE`), so no waiter is
overtaken for long. The worst wait is then about ``patience`` + (callers queued / capacity) x
the time one call holds its slot, and it is bounded: past ``timeout`` the waiting caller gets
`BackendUnavailableError` (`CallTimeoutError` when the call's time budget is the shorter bound)
and leaves the queue.

One gate serves threads (`acquire`) and asyncio tasks on any event loop (`acquire_async`)
alike. An uncontended pass costs one lock round trip; only a caller that waits allocates.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from agents_persistence.errors import BackendUnavailableError, CallTimeoutError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "NO_ADMISSION",
    "PATIENCE",
    "Admission",
    "FairGate",
    "pool_capacity",
    "sqlite_writer_gate",
]

PATIENCE = 0.1
"""Seconds the longest waiting caller lets running callers go first (see `FairGate`).

Handing each freed connection to a sleeping thread leaves it idle until that thread wakes; on
a busy machine enough idle at once that the pool closes overflow connections and reopens them
(50 threads, default pool: five times the connects, half the throughput on MariaDB).
"""

WRITE_ACTIONS = frozenset({"save", "delete", "purge"})
"""The SQL store's actions that take SQLite's write lock."""


class _Waiter:
    """A caller queued at a gate: a thread (a held lock) or a task (a future on its loop).

    ``granted``: a slot was handed to it (it has left the queue). ``woken``: it was woken to
    take a free slot itself, if nobody took it first (it is still at the head of the queue).
    """

    __slots__ = ("future", "granted", "lock", "loop", "since", "ticket", "woken")

    def __init__(self, ticket: int, loop: asyncio.AbstractEventLoop | None) -> None:
        self.ticket = ticket
        self.loop = loop
        self.since = time.monotonic()
        self.granted = False
        self.woken = False
        if loop is None:
            self.lock: threading.Lock | None = threading.Lock()
            self.lock.acquire()
            self.future: asyncio.Future[None] | None = None
        else:
            self.lock = None
            self.future = loop.create_future()

    def wake(self) -> None:
        """Wake the caller (called under the gate's lock)."""
        if self.lock is not None:
            self.lock.release()
            return
        loop = self.loop
        assert loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            _wake(self.future)
        else:
            loop.call_soon_threadsafe(_wake, self.future)


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class FairGate:
    """Admits at most ``capacity`` callers at a time, in their order of arrival.

    Use it as ``with gate:`` (threads) or ``async with gate:`` (asyncio tasks), or call
    `acquire` / `acquire_async` and `release` in pairs.

    Args:
        capacity: How many callers may hold the gate at once (at least 1).
        timeout: Seconds a caller may wait for its turn; ``None`` waits as long as it takes.
        patience: Seconds the longest waiting caller lets others go first. ``0`` (the default)
            hands every freed slot to it at once: strictly first come, first served. Above
            ``0``, a caller that finds a slot free takes it while the longest wait is shorter
            than ``patience``, and the waiting caller is only woken to try; past ``patience``
            freed slots are handed over in order again. This keeps a busy pool's connections
            in use by running callers (no wake-up between two calls) and bounds every wait by
            about ``patience`` plus the queue's share of the pool.
        what: What is waited for, for the error message ("a database connection").
        setting: The setting that bounds the wait, for the error message ("pool_timeout").
        error: The error a wait past ``timeout`` raises (`BackendUnavailableError` or a
            subclass).
        budget: The call's time budget in seconds, when shorter waits are its doing: a wait
            cut short by it raises `CallTimeoutError`.

    Attributes:
        served: The arrival tickets of the last callers that had to wait, in the order they
            were let in (strictly increasing: waiters never overtake each other). Diagnostics.
    """

    __slots__ = (
        "__weakref__",
        "_budget",
        "_budget_bound",
        "_free",
        "_lock",
        "_tickets",
        "_waiters",
        "capacity",
        "error",
        "patience",
        "served",
        "setting",
        "timeout",
        "what",
    )

    def __init__(
        self,
        capacity: int,
        timeout: float | None,
        *,
        patience: float = 0.0,
        what: str = "a database connection",
        setting: str = "pool_timeout",
        error: type[BackendUnavailableError] = BackendUnavailableError,
        budget: float | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"a gate needs a capacity of at least 1, not {capacity}")
        self.capacity = capacity
        self.patience = patience
        self.what = what
        self.setting = setting
        self.error = error
        self._budget = budget
        self._budget_bound = budget is not None and (timeout is None or budget <= timeout)
        self.timeout = budget if self._budget_bound else timeout
        self._free = capacity
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        self._tickets = 0
        self.served: deque[int] = deque(maxlen=4096)

    # --- threads ------------------------------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> None:
        """Wait (blocking this thread) for a slot, after every caller that arrived earlier.

        Args:
            timeout: Seconds to wait at most, instead of the gate's ``timeout``.

        Raises:
            BackendUnavailableError: No slot came within ``timeout``.
            CallTimeoutError: The same, when the call's time budget set the bound.
        """
        with self._lock:
            if self._free and (not self._waiters or self._may_pass()):
                self._free -= 1
                return
            waiter = self._enqueue(None)
        lock = waiter.lock
        assert lock is not None
        limit = self.timeout if timeout is None else timeout
        deadline = None if limit is None else waiter.since + limit
        try:
            while True:
                left = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
                if not lock.acquire(timeout=left):
                    break
                if self._admitted(waiter):
                    return
        except BaseException:  # KeyboardInterrupt and the like, in the middle of the wait
            self._abandon(waiter)
            raise
        self._give_up(waiter, timeout)

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # --- asyncio ------------------------------------------------------------------------------

    async def acquire_async(self, timeout: float | None = None) -> None:
        """`acquire` for an asyncio task: waits without blocking its event loop.

        Args:
            timeout: Seconds to wait at most, instead of the gate's ``timeout``.

        Raises:
            BackendUnavailableError: No slot came within ``timeout``.
            CallTimeoutError: The same, when the call's time budget set the bound.
        """
        with self._lock:
            if self._free and (not self._waiters or self._may_pass()):
                self._free -= 1
                return
            loop = asyncio.get_running_loop()
            waiter = self._enqueue(loop)
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout_at(None if limit is None else loop.time() + limit):
                while True:
                    future = waiter.future
                    assert future is not None
                    await future
                    if self._admitted(waiter):
                        return
        except TimeoutError:
            self._give_up(waiter, timeout)
        except BaseException:  # cancelled
            self._abandon(waiter)
            raise

    async def __aenter__(self) -> None:
        await self.acquire_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # --- both ---------------------------------------------------------------------------------

    def release(self) -> None:
        """Free the caller's slot: the longest waiting caller gets it, else it is free.

        With ``patience``, the slot is only handed over once that caller has waited longer;
        before, it is freed and the caller woken to take it (or to wait again if another
        caller took it first).
        """
        with self._lock:
            while self._waiters:
                head = self._waiters[0]
                if self.patience and not head.woken and self._may_pass():
                    self._free += 1
                    if self._wake(head):
                        head.woken = True
                        return
                    self._free -= 1
                    self._waiters.popleft()
                    continue
                if self.patience and head.woken and self._may_pass():
                    self._free += 1  # already woken to take a free slot: one more is there
                    return
                self._waiters.popleft()
                head.granted = True
                if head.woken or self._wake(head):  # a woken caller finds it granted
                    self.served.append(head.ticket)
                    return
            self._free += 1

    @property
    def waiting(self) -> int:
        """How many callers are queued now."""
        return len(self._waiters)

    def _may_pass(self) -> bool:
        """Whether a caller may take a free slot ahead of the queue (under the lock)."""
        return bool(self.patience) and time.monotonic() - self._waiters[0].since < self.patience

    def _wake(self, waiter: _Waiter) -> bool:
        try:
            waiter.wake()
        except RuntimeError:  # its event loop is closed: nobody is waiting there
            return False
        return True

    def _enqueue(self, loop: asyncio.AbstractEventLoop | None) -> _Waiter:
        self._tickets += 1
        waiter = _Waiter(self._tickets, loop)
        self._waiters.append(waiter)
        return waiter

    def _admitted(self, waiter: _Waiter) -> bool:
        """After a wake-up: in (a slot handed over, or a free one taken), or wait again."""
        with self._lock:
            if waiter.granted:
                return True
            if self._free:
                self._free -= 1
                self._waiters.remove(waiter)
                self.served.append(waiter.ticket)
                self._wake_next()
                return True
            waiter.woken = False  # someone took the free slot first: wait for the next one
            if waiter.loop is not None:
                waiter.future = waiter.loop.create_future()
            return False

    def _wake_next(self) -> None:
        """Wake the new head of the queue if a slot is free for it (under the lock)."""
        while self._free and self._waiters:
            head = self._waiters[0]
            if head.woken:
                return
            if self._wake(head):
                head.woken = True
                return
            self._waiters.popleft()

    def _withdraw(self, waiter: _Waiter) -> bool:
        """Take ``waiter`` out of the queue; ``False`` if a slot was handed to it meanwhile."""
        if waiter.granted:
            return False
        try:
            self._waiters.remove(waiter)
        except ValueError:  # dropped by `release` already
            return True
        self._wake_next()
        return True

    def _abandon(self, waiter: _Waiter) -> None:
        """The wait was interrupted: leave the queue, or pass on a slot handed over meanwhile."""
        with self._lock:
            if self._withdraw(waiter):
                return
        self.release()

    def _give_up(self, waiter: _Waiter, timeout: float | None) -> None:
        with self._lock:
            if not self._withdraw(waiter):
                return  # the slot arrived as the wait ran out: take it
        waited = time.monotonic() - waiter.since
        if timeout is None and self._budget_bound:
            raise CallTimeoutError(
                f"the call's time budget ({self._budget:g} s, call_timeout) ran out after"
                f" {waited:.2f} s waiting for {self.what} ({len(self._waiters)} callers"
                " still queued)"
            )
        bound = self.timeout if timeout is None else timeout
        raise self.error(
            f"no turn for {self.what} within {self.setting}={bound} s"
            f" ({len(self._waiters)} callers still queued, {self.capacity} admitted at once)"
        )


class _Pass:
    """A gate that lets everyone through at once (a pool this library does not size)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Both:
    """Two gates taken in order (the pool's, then the database writer's) and left in reverse."""

    __slots__ = ("first", "second")

    def __init__(self, first: FairGate, second: FairGate) -> None:
        self.first = first
        self.second = second

    def __enter__(self) -> None:
        self.first.acquire()
        try:
            self.second.acquire()
        except BaseException:
            self.first.release()
            raise

    def __exit__(self, *exc: object) -> None:
        self.second.release()
        self.first.release()

    async def __aenter__(self) -> None:
        await self.first.acquire_async()
        try:
            await self.second.acquire_async()
        except BaseException:
            self.first.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.second.release()
        self.first.release()


_PASS = _Pass()


class Admission:
    """The gates a checkpointer's calls pass: its pool's, and for writes its database's.

    Args:
        pool: The gate sized to the checkpointer's pool, or ``None``.
        writer: The gate of the database's single writer (SQLite files), or ``None``.
    """

    __slots__ = ("pool", "read", "write", "writer")

    def __init__(self, pool: FairGate | None = None, writer: FairGate | None = None) -> None:
        self.pool = pool
        self.writer = writer
        self.read: Any = pool if pool is not None else _PASS
        if writer is None:
            self.write: Any = self.read
        elif pool is None:
            self.write = writer
        else:
            self.write = _Both(pool, writer)

    def admit(self, action: str) -> Any:
        """The context manager (sync and async) a call of ``action`` runs in."""
        return self.write if action in WRITE_ACTIONS else self.read


NO_ADMISSION = Admission()
"""Everyone through at once: the pool and database as they are (an engine of the caller's)."""


def pool_capacity(options: dict[str, Any]) -> int | None:
    """How many connections an engine made with ``options`` can lend at once, if bounded.

    ``None`` when the pool is not a SQLAlchemy queue pool sized by ``pool_size`` and
    ``max_overflow`` (another ``poolclass``, or an unbounded overflow): its waiting is then
    the pool's own.
    """
    poolclass = options.get("poolclass")
    if poolclass is not None and poolclass.__name__ not in ("QueuePool", "AsyncAdaptedQueuePool"):
        return None
    size = options.get("pool_size", 5)
    overflow = options.get("max_overflow", 10)
    if not isinstance(size, int) or not isinstance(overflow, int) or overflow < 0:
        return None
    capacity = size + overflow if size > 0 else None
    return capacity if capacity is None or capacity > 0 else None


_WRITERS: weakref.WeakValueDictionary[str, FairGate] = weakref.WeakValueDictionary()
_WRITERS_LOCK = threading.Lock()


def sqlite_writer_gate(path: str, timeout: float | None) -> FairGate:
    """The process's single-writer gate of the SQLite file at ``path``, shared by every engine.

    Writers of this process then take SQLite's write lock in their order of arrival, and its
    busy handler only ever waits for another process. The first checkpointer on a file sets
    ``timeout`` (its ``busy_timeout``); the gate lives while a checkpointer uses it.
    """
    key = os.path.realpath(path)
    with _WRITERS_LOCK:
        gate = _WRITERS.get(key)
        if gate is None:
            gate = FairGate(
                1,
                timeout,
                patience=PATIENCE,
                what="SQLite's write lock",
                setting="busy_timeout",
                error=CallTimeoutError,  # as SQLite's own "database is locked" past busy_timeout
            )
            _WRITERS[key] = gate
        return gate
