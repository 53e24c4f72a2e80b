"""Helpers of the time-budget tests: run a call on a worker thread and time it.

A call that is not bounded must fail the test, not hang it: the worker is a daemon thread
joined with a timeout well past the bound under test.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

CALL_TIMEOUT = 1.5
"""The budget the tests configure: small, so that a test of a hung server stays short."""

MARGIN = 2.0
"""What the tests allow past the budget: scheduling slack on a busy machine, not retries."""

GIVE_UP = 30.0
"""How long a test waits for a call before declaring it unbounded (well past every bound)."""


@dataclass
class Outcome:
    """How a call ended: its result or error, and how long it took."""

    seconds: float
    result: Any = None
    error: BaseException | None = None


def timed(function: Callable[[], Any]) -> Outcome:
    """Run ``function`` on a daemon thread; return its outcome, or fail if it never returns."""
    box: dict[str, Any] = {}

    def work() -> None:
        start = time.monotonic()
        try:
            box["result"] = function()
        except BaseException as exc:  # reported to the test
            box["error"] = exc
        box["seconds"] = time.monotonic() - start

    worker = threading.Thread(target=work, daemon=True, name="budget-call")
    worker.start()
    worker.join(GIVE_UP)
    if worker.is_alive():
        raise AssertionError(f"the call was still running after {GIVE_UP} s: it is not bounded")
    return Outcome(box["seconds"], box.get("result"), box.get("error"))


def timed_async(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Outcome:
    """`timed` for a coroutine, run on its own event loop in the worker thread."""
    return timed(lambda: asyncio.run(factory()))


def timed_all(functions: list[Callable[[], Any]]) -> list[Outcome]:
    """Start every function on its own thread at once; their outcomes, in order."""
    outcomes: list[Outcome | None] = [None] * len(functions)
    threads = []
    for index, function in enumerate(functions):

        def run(index: int = index, function: Callable[[], Any] = function) -> None:
            outcomes[index] = timed(function)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(GIVE_UP + 5)
    assert all(outcome is not None for outcome in outcomes), "a call was not bounded"
    return [outcome for outcome in outcomes if outcome is not None]


def warm(function: Callable[[], Any], tries: int = 3) -> Any:
    """Call ``function`` until it succeeds, for set-up calls under a small budget.

    The first call of a checkpointer also makes its client; on a busy machine that alone may
    leave too little of a 1.5 s budget for the request. Only idempotent calls belong here.
    """
    from agents_persistence import CallTimeoutError

    for attempt in range(tries):
        try:
            return function()
        except CallTimeoutError:
            if attempt == tries - 1:
                raise
    return None


def assert_timed_out(outcome: Outcome, expected: type[BaseException]) -> None:
    """The call raised ``expected`` within the budget plus the margin."""
    assert isinstance(outcome.error, expected), (
        f"expected {expected.__name__}, got {outcome.error!r} (result {outcome.result!r})"
    )
    assert outcome.seconds <= CALL_TIMEOUT + MARGIN, (
        f"the call took {outcome.seconds:.2f} s, past call_timeout={CALL_TIMEOUT} s"
        f" plus a margin of {MARGIN} s"
    )
