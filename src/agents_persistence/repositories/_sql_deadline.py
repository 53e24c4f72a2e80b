"""The SQL store's time budget: one deadline per public call, enforced on the driver's socket.

A call starts its budget (``call_timeout`` seconds) before it waits for a pooled connection.
What bounds each phase:

- the pool wait, the connect and SQLite's busy wait: the engine options ``from_url`` derives
  from the budget (`bounded_timeouts`);
- every read and write on a PostgreSQL connection (psycopg has no socket timeout, and a hung
  server's kernel still acknowledges every byte): the `Watchdog`, one daemon thread per process
  holding the deadlines of the calls in flight. When one passes, it shuts the connection's
  socket down (``shutdown(SHUT_RDWR)`` on a duplicate of its descriptor); the blocked read
  returns, the driver raises, SQLAlchemy invalidates the connection and the call raises
  `CallTimeoutError`. Any driver connection with a public ``fileno()`` is watched so;
- MySQL/MariaDB: PyMySQL's own ``read_timeout`` and ``write_timeout`` (sync), an asyncio
  timeout around the whole call (aiomysql has no read timeout; SQLAlchemy invalidates a
  connection whose operation was cancelled, so it never goes back to the pool half-read).

The watchdog fires `WATCHDOG_GRACE` after the deadline, so a server-side statement or lock
timeout set to the budget (on engines ``from_url`` creates) ends a lock wait first without
costing the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from contextvars import ContextVar
from time import monotonic
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from agents_persistence.errors import CallTimeoutError

from ._call_budget import validate_call_timeout
from ._sql_engine import WATCHDOG_GRACE, driver_code

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import ConnectionPoolEntry

    from ._sql_run import Conn

__all__ = [
    "WATCHDOG",
    "WATCHDOG_GRACE",
    "Budget",
    "Call",
    "bounded_timeouts",
    "expired",
    "ping_guard",
]

_TICK = 0.05
"""Most seconds the watchdog sleeps while calls come (its lateness at worst)."""
_IDLE_TICKS = 20
"""Looks without a call before the watchdog sleeps until the next one (about a second)."""

# PostgreSQL: statement_timeout, lock_timeout. MySQL/MariaDB: lock wait timeout,
# max_execution_time (MySQL), max_statement_time (MariaDB). SQLite: SQLITE_BUSY.
_TIMEOUT_SQLSTATES = frozenset({"57014", "55P03"})
_TIMEOUT_MYSQL_CODES = frozenset({1205, 3024, 1969})
_SQLITE_BUSY = 5

_DEADLINE: ContextVar[float | None] = ContextVar("agents_persistence_sql_deadline", default=None)


def bounded_timeouts(
    call_timeout: float,
    pool_timeout: float | None,
    connect_timeout: float | None,
    busy_timeout: float | None,
) -> tuple[float, float, float]:
    """The pool, connect and busy timeouts of ``from_url``: as given, at most ``call_timeout``.

    ``None`` (the default of each) means the budget itself.
    """
    return tuple(  # type: ignore[return-value]
        call_timeout if value is None else min(float(value), call_timeout)
        for value in (pool_timeout, connect_timeout, busy_timeout)
    )


def expired() -> bool:
    """Whether the current call's budget has run out (``False`` outside a budgeted call).

    Retry loops inside an operation stop at the deadline instead of trying again.
    """
    deadline = _DEADLINE.get()
    return deadline is not None and monotonic() >= deadline


class _Entry:
    """One watched connection: its deadline and a duplicate of its socket's descriptor."""

    __slots__ = ("at", "fd")

    def __init__(self, at: float, fd: int) -> None:
        self.at = at
        self.fd = fd


class Watchdog:
    """One daemon thread cutting the sockets of connections whose call ran out of time.

    The calls in flight are a set: `arm` adds an entry and `disarm` removes it, each one atomic
    step under the GIL, with no lock and no thread switch on that path. While calls come, the
    thread looks at the set every `_TICK` seconds (or sooner, for a deadline due sooner); after
    `_IDLE_TICKS` looks without a call it sleeps until the next `arm` wakes it. It takes an
    entry out of the set before it cuts that socket, under a lock that a `disarm` finding its
    entry gone waits on, so a socket is never cut after its call disarmed it. The duplicate
    descriptor keeps the socket itself alive while watched: a driver closing its own descriptor
    meanwhile never lets the watchdog reach another socket that reused the number.
    """

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._armed: set[_Entry] = set()
        self._arms = 0  # changes at every `arm` (only ever compared, so lost updates are fine)
        self._cutting = threading.Lock()
        self._wake = threading.Event()
        self._sleeping = True
        self._thread: threading.Thread | None = None

    def arm(self, fileno: int, at: float) -> _Entry:
        """Watch the socket ``fileno`` until `disarm`; cut it once ``at`` (monotonic) passes."""
        entry = _Entry(at, os.dup(fileno))
        self._armed.add(entry)
        self._arms += 1
        if self._sleeping:
            self._wake.set()
            if self._thread is None:
                self._start()
        return entry

    def disarm(self, entry: _Entry) -> bool:
        """Stop watching; ``True`` if the watchdog cut the socket (the connection is dead)."""
        try:
            self._armed.remove(entry)
        except KeyError:
            with self._cutting:  # the watchdog took it: wait until the cut is done
                fired = True
        else:
            fired = False
        os.close(entry.fd)
        return fired

    def _start(self) -> None:
        with self._cutting:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="agents-persistence-sql-watchdog", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        armed = self._armed
        while True:
            self._wake.wait()
            self._sleeping = False
            idle, seen = 0, self._arms
            while idle < _IDLE_TICKS:
                soonest = self._scan(armed)
                time.sleep(max(0.0, soonest - monotonic()))
                idle = idle + 1 if not armed and self._arms == seen else 0
                seen = self._arms
            # Going to sleep: an `arm` from here on wakes the thread; one before is seen below.
            self._wake.clear()
            self._sleeping = True
            if armed:
                self._wake.set()

    def _scan(self, armed: set[_Entry]) -> float:
        """Cut every socket past its deadline; return when to look again."""
        now = monotonic()
        soonest = now + _TICK
        for entry in list(armed):
            if entry.at > now:
                soonest = min(soonest, entry.at)
                continue
            with self._cutting:
                try:
                    armed.remove(entry)
                except KeyError:
                    continue  # disarmed meanwhile
                _cut(entry.fd)
        return soonest


def _cut(fd: int) -> None:
    """Shut the socket down both ways: a read blocked on it returns at once."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:  # not a socket (any more): nothing to cut
        return
    try:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.detach()  # the descriptor stays open: `disarm` closes it


WATCHDOG = Watchdog()


def _fileno(driver_connection: Any) -> int | None:
    """The socket of a driver connection with a public ``fileno()`` (psycopg), else ``None``."""
    fileno = getattr(driver_connection, "fileno", None)
    if fileno is None:
        return None
    try:
        value = fileno()
    except Exception:
        return None
    return value if isinstance(value, int) and value >= 0 else None


class Budget:
    """A checkpointer's time budget: ``seconds`` per call, and how its engine enforces it."""

    __slots__ = ("asyncio_limit", "seconds", "watch_sockets")

    def __init__(self, seconds: float, engine: Engine | AsyncEngine, *, asynchronous: bool):
        self.seconds = validate_call_timeout(seconds)
        name = engine.dialect.name
        # Whether driver connections have a socket to watch; learned on the first connection.
        self.watch_sockets: bool | None = None if name != "sqlite" else False
        # aiomysql has no read timeout: the whole call runs under an asyncio timeout.
        self.asyncio_limit = asynchronous and name in ("mysql", "mariadb")

    def call(self, action: str) -> Call:
        """The budget of one call, started now; use as a context manager around the call."""
        return Call(self, action)


class Call:
    """One call's deadline: entered around the whole call, it turns a timeout into the error.

    On the way out, an error is a `CallTimeoutError` when the watchdog cut this call's
    connection, when the database ended a statement or lock wait on a timeout, or when the
    connection failed or the pool gave up once the deadline had passed.
    """

    __slots__ = ("action", "budget", "deadline", "fired", "token")

    def __init__(self, budget: Budget, action: str) -> None:
        self.budget = budget
        self.action = action
        self.deadline = monotonic() + budget.seconds
        self.fired = False

    def __enter__(self) -> Call:
        self.token = _DEADLINE.set(self.deadline)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _DEADLINE.reset(self.token)
        if exc is not None and self._timed_out(exc):
            raise CallTimeoutError(
                f"the {self.action} call ran past its time budget of {self.budget.seconds:g} s"
                f" (call_timeout): the database did not answer in time ({_detail(exc)})"
            ) from exc

    def _timed_out(self, exc: BaseException) -> bool:
        if isinstance(exc, CallTimeoutError):
            return False
        if self.fired or isinstance(exc, TimeoutError):
            return True
        if isinstance(exc, DBAPIError):
            if _timeout_code(exc):
                return True
            late = isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated
            return late and monotonic() >= self.deadline
        return isinstance(exc, PoolTimeoutError | OSError) and monotonic() >= self.deadline

    def remaining(self) -> float:
        """Seconds left before the deadline (``0.0`` once it passed)."""
        return max(0.0, self.deadline - monotonic())

    def limit(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """The asyncio bound of the async twin's call (aiomysql), else a no-op."""
        if self.budget.asyncio_limit:
            return asyncio.timeout_at(_loop_time(self.deadline))
        return _NO_LIMIT

    def watching(self, conn: Conn, enabled: bool = True) -> _Watching:
        """Watch ``conn``'s socket until the end of the ``with`` block (before it is released)."""
        budget = self.budget
        if not enabled or budget.watch_sockets is False:
            return _UNWATCHED
        fileno = _fileno(conn.connection.driver_connection)
        if budget.watch_sockets is None:
            budget.watch_sockets = fileno is not None
        if fileno is None:
            return _UNWATCHED
        return _Watching(self, conn, WATCHDOG.arm(fileno, self.deadline + WATCHDOG_GRACE))


class _Watching:
    """A connection watched for one call; `_UNWATCHED` when there is no socket to watch."""

    __slots__ = ("call", "conn", "entry")

    def __init__(self, call: Call | None, conn: Conn | None, entry: _Entry | None) -> None:
        self.call = call
        self.conn = conn
        self.entry = entry

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        if self.entry is not None and WATCHDOG.disarm(self.entry):
            assert self.call is not None
            assert self.conn is not None
            self.call.fired = True
            # Its socket is cut: never hand it back to the pool, even if the call finished.
            self.conn.invalidate()


_UNWATCHED = _Watching(None, None, None)


class _NoLimit(contextlib.AbstractAsyncContextManager[None]):
    async def __aexit__(self, *exc_info: object) -> None:
        return None


_NO_LIMIT = _NoLimit()


def _loop_time(deadline: float) -> float:
    """A `monotonic` deadline on the running loop's clock."""
    return asyncio.get_running_loop().time() + (deadline - monotonic())


def _timeout_code(exc: DBAPIError) -> bool:
    orig = exc.orig
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return sqlite_code & 0xFF == _SQLITE_BUSY
    code = driver_code(exc)
    if isinstance(code, int):
        # PyMySQL's read_timeout: "Lost connection to MySQL server during query (timed out)".
        return code in _TIMEOUT_MYSQL_CODES or (code == 2013 and "timed out" in str(orig))
    return getattr(orig, "sqlstate", None) in _TIMEOUT_SQLSTATES


def _detail(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


@contextlib.contextmanager
def _ping_watch(entry: ConnectionPoolEntry, seconds: float) -> Iterator[None]:
    deadline = _DEADLINE.get()
    if deadline is None:
        deadline = monotonic() + seconds
    fileno = _fileno(entry.driver_connection)
    watched = None if fileno is None else WATCHDOG.arm(fileno, deadline + WATCHDOG_GRACE)
    try:
        yield
    except BaseException as exc:
        fired = watched is not None and WATCHDOG.disarm(watched)
        if isinstance(exc, Exception) and (fired or monotonic() >= deadline):
            # Not a DisconnectionError: the pool would reconnect to a server that does not
            # answer, past the budget.
            raise CallTimeoutError(
                f"the pooled connection's check ran past the call's time budget ({exc})"
            ) from exc
        raise
    if watched is not None and WATCHDOG.disarm(watched):
        raise CallTimeoutError("the pooled connection's check ran past the call's time budget")


def ping_guard(seconds: float) -> Any:
    """What `ping_when_idle` wraps its ping in: the watchdog, on the current call's deadline.

    Outside a budgeted call (the application using the engine directly) the ping gets
    ``seconds`` of its own. When the watchdog cuts the ping, `CallTimeoutError` comes out of
    the checkout (the pool invalidates that connection) instead of a reconnect to a server
    that does not answer.
    """

    def guard(entry: ConnectionPoolEntry) -> contextlib.AbstractContextManager[None]:
        return _ping_watch(entry, seconds)

    return guard
