"""Server restarts mid-run: the same checkpointer object recovers, and nothing acknowledged is lost.

A load loop on a background thread increments four threads through one checkpointer while
the test stops the server (gracefully, or kill -9 of its whole process group), keeps it down
for a moment and starts it again on the same data. Errors during the outage must be typed;
after the restart the same object must work again; at the end every acknowledged version
must be stored (or a later one), with ``n == version`` on every thread.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence import ConflictError

from ..servers import RedisServer
from ._results import seconds
from ._workload import Ledger, increment, verify
from .conftest import LONG, Target, need, new_namespace

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..servers import ServerProcess
    from ..support import Portal
    from ._results import Results

THREADS = [f"t{i}" for i in range(4)]
DOWN_SECONDS = 0.5  # how long the server stays down in each cycle
ACKS_PER_CYCLE = 20  # acknowledged saves between two restarts
WAIT = 60.0  # bound on every wait: a hang fails the test instead of blocking it

# (target, how, Redis appendfsync): how = "stop" (graceful) or "kill" (SIGKILL to the group)
CASES = {
    "postgresql-fast": ("postgresql", "stop", None),
    "postgresql-kill9": ("postgresql", "kill", None),
    "mariadb-stop": ("mariadb", "stop", None),
    "mariadb-kill9": ("mariadb", "kill", None),
    "redis-aof-always-kill9": ("redis", "kill", "always"),
    "redis-aof-everysec-stop": ("redis", "stop", "everysec"),
}
QUICK = ["postgresql-fast", "postgresql-kill9", "mariadb-stop", "redis-aof-always-kill9"]


def wait_until(predicate: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {WAIT:.0f} s waiting for {what}")
        time.sleep(0.01)


class LoadLoop:
    """Increments `THREADS` in turn through one checkpointer on a background thread."""

    def __init__(self, cp: Any) -> None:
        self.cp = cp
        self.ledger = Ledger()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="load-loop")

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            thread_id = THREADS[i % len(THREADS)]
            i += 1
            try:
                info = increment(self.cp, thread_id, "load")
            except Exception as exc:  # typed or not: recorded, then the loop goes on
                self.ledger.failure(exc)
                if not isinstance(exc, ConflictError):
                    time.sleep(0.02)
                continue
            self.ledger.ack(info.thread_id, info.version)

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the load loop is stuck in a call"


def params() -> list[Any]:
    """Quick: each QUICK case, sync, one restart. Long: every case, sync and async, five."""
    quick = [pytest.param(name, "sync", id=f"{name}-sync-quick") for name in QUICK]
    long = [
        pytest.param(name, mode, id=f"{name}-{mode}-long", marks=[pytest.mark.reliability_long])
        for name in CASES
        for mode in ("sync", "async")
    ]
    return quick + long


@pytest.fixture
def restart_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The case's store; Redis cases get a server of their own with the case's AOF setting."""
    store, _, appendfsync = CASES[request.param]
    if store != "redis":
        yield request.getfixturevalue(f"{store}_target")
        return
    need(RedisServer)
    server = RedisServer(appendonly=True, appendfsync=appendfsync or "everysec")
    try:
        server.start()
        yield Target(f"redis (appendfsync {appendfsync})", server.url(), {}, server)
    finally:
        server.close()


def run_cycles(server: ServerProcess, how: str, cycles: int, ledger: Ledger) -> list[float]:
    """Restart ``server`` ``cycles`` times under load; the recovery time of each."""
    recoveries = []
    for cycle in range(cycles):
        floor = len(ledger.acks) + ACKS_PER_CYCLE
        wait_until(
            lambda floor=floor: len(ledger.acks) >= floor,
            f"{ACKS_PER_CYCLE} saves before cycle {cycle}",
        )
        if how == "kill":
            server.kill()
        else:
            server.stop()
        time.sleep(DOWN_SECONDS)
        back = server.start()
        first = wait_until(
            lambda back=back: ledger.first_success_after(back),
            f"a successful save after restart {cycle}",
        )
        recoveries.append(first - back)
    return recoveries


@pytest.mark.parametrize(("restart_target", "mode"), params(), indirect=["restart_target"])
@pytest.mark.timeout(900)
def test_restart_mid_run_loses_nothing_acknowledged(
    restart_target: Target,
    mode: str,
    portal: Portal,
    results: Results,
    request: pytest.FixtureRequest,
) -> None:
    long = request.node.get_closest_marker(LONG) is not None
    case = request.node.callspec.params["restart_target"]
    _, how, _ = CASES[case]
    server = restart_target.server
    assert server is not None
    cycles = 5 if long else 1

    cp = restart_target.open_in(mode, new_namespace(), portal)
    try:
        with LoadLoop(cp) as load:
            recoveries = run_cycles(server, how, cycles, load.ledger)
            # The same object keeps working after the last restart, under load.
            floor = len(load.ledger.acks) + ACKS_PER_CYCLE
            wait_until(lambda: len(load.ledger.acks) >= floor, "saves after the last restart")
        ledger = load.ledger
        verdict = verify(cp, ledger.highest(), THREADS)
    finally:
        cp.close()

    if long:
        results.long_run = True
    results.add(
        "Server restarts under load (one checkpointer object throughout)",
        case=case,
        mode=mode,
        restarts=cycles,
        acked=len(ledger.acks),
        lost=len(verdict.lost),
        duplicate_wins=len(ledger.duplicates()),
        inconsistent=len(verdict.inconsistent),
        typed_errors=dict(ledger.errors) or 0,
        untyped=len(ledger.untyped),
        recovery_s_median_max=seconds(recoveries),
    )
    assert ledger.untyped == [], "errors outside the CheckpointerError root"
    assert verdict.unreadable == []
    assert verdict.lost == []
    assert verdict.inconsistent == []
    assert ledger.duplicates() == []
