"""Rewrite every thread of a namespace as the checkpointer writes now: rotation and migration.

`refresh_threads` (and its asyncio twin `arefresh_threads`) walks a namespace page by page and
calls `BaseCheckpointer.refresh_thread` on each thread, which rewrites a thread when it is
stored otherwise than the checkpointer would store it now:

* **Key rotation / encrypting a store.** With ``keys=``, a thread with a value in clear or
  sealed under a key other than the active one is sealed again under the active key
  (``agents-persistence keys rotate``).
* **Schema migration.** A thread written at an older ``schema_version`` of the state model is
  upcast through the checkpointer's ``upcasters`` and written at the current version
  (``agents-persistence migrate-payloads``).

Both are the same loop, and one run does both when both apply. A rewrite keeps the thread's
version and timestamps, so the listing order does not move under the walk, and it is
conditional on the version read: a save by a live writer in between is never overwritten (the
thread is counted as a conflict after one retry; that writer's save is as current as the writer
that made it). Running it again is cheap and safe: threads already current are read, not
written, so an interrupted run is resumed by running it again.

A thread that cannot be read (a key the provider does not hold, tampered bytes, a missing
upcaster) is counted as failed with its id and the error's message, which never quotes state
content, and the walk goes on. Errors of the store itself (unreachable, access denied) end the
run: nothing is half-written, and the next run resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from agents_persistence.errors import (
    CorruptStateError,
    InvalidArgumentError,
    StateTooLargeError,
)

if TYPE_CHECKING:
    from agents_persistence.base import BaseAsyncCheckpointer, BaseCheckpointer, Refresh

__all__ = [
    "Outcome",
    "Progress",
    "RefreshReport",
    "ThreadFailure",
    "arefresh_threads",
    "refresh_threads",
]

Outcome = Literal["rewritten", "current", "conflict", "gone", "failed", "stale"]
"""What happened to one thread.

``rewritten``: stored again as the checkpointer writes now. ``current``: nothing to do.
``conflict``: a save landed between the read and the rewrite, twice. ``gone``: deleted or
expired since it was listed. ``failed``: it cannot be read (see `RefreshReport.failures`).
``stale``: a dry run found it would be rewritten.
"""

Progress = Callable[[str, Outcome], None]
"""Called after each thread with its id and outcome (for a progress bar)."""

_PER_THREAD = (CorruptStateError, StateTooLargeError, InvalidArgumentError)
"""Errors that concern one thread's stored record: counted, and the walk goes on."""


@dataclass(frozen=True, slots=True)
class ThreadFailure:
    """A thread that could not be refreshed.

    Attributes:
        thread_id: The thread.
        error: The error's class name (``UnknownKeyError``, ``MissingUpcasterError``...).
        message: The error's message (names the thread and key ids, never state content).
    """

    thread_id: str
    error: str
    message: str


@dataclass(slots=True)
class RefreshReport:
    """Counts of one `refresh_threads` run, and the threads that failed.

    Attributes:
        rewritten: Threads rewritten.
        current: Threads already stored as the checkpointer writes them.
        conflict: Threads a concurrent save changed between the read and the rewrite (twice).
        gone: Threads deleted or expired since they were listed.
        failed: Threads that could not be read; see ``failures``.
        stale: Threads a dry run would rewrite.
        dry_run: Whether this was a dry run (nothing written).
        failures: Each failed thread, in the order met.
    """

    rewritten: int = 0
    current: int = 0
    conflict: int = 0
    gone: int = 0
    failed: int = 0
    stale: int = 0
    dry_run: bool = False
    failures: list[ThreadFailure] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Threads visited."""
        return self.rewritten + self.current + self.conflict + self.gone + self.failed + self.stale

    @property
    def complete(self) -> bool:
        """Whether every thread visited is now current (nothing failed, conflicted or is stale)."""
        return self.failed == 0 and self.conflict == 0 and self.stale == 0

    def as_dict(self) -> dict[str, Any]:
        """The counts and failures as JSON-ready data."""
        return {
            "dry_run": self.dry_run,
            "rewritten": self.rewritten,
            "current": self.current,
            "conflict": self.conflict,
            "gone": self.gone,
            "failed": self.failed,
            "stale": self.stale,
            "failures": [
                {"thread_id": f.thread_id, "error": f.error, "message": f.message}
                for f in self.failures
            ],
        }

    def _add(self, thread_id: str, outcome: Outcome, progress: Progress | None) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
        if progress is not None:
            progress(thread_id, outcome)

    def _fail(self, thread_id: str, exc: Exception, progress: Progress | None) -> None:
        self.failures.append(ThreadFailure(thread_id, type(exc).__name__, str(exc)))
        self._add(thread_id, "failed", progress)


def _outcome(result: Refresh) -> Outcome:
    return "gone" if result == "absent" else result


def _check(page_size: int, retries: int) -> None:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 1000:
        raise InvalidArgumentError(f"page_size must be an int from 1 to 1000, got {page_size!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidArgumentError(f"conflict_retries must be an int >= 0, got {retries!r}")


def refresh_threads(
    checkpointer: BaseCheckpointer[Any],
    *,
    page_size: int = 100,
    dry_run: bool = False,
    conflict_retries: int = 1,
    progress: Progress | None = None,
) -> RefreshReport:
    """Refresh every live thread of the checkpointer's namespace (see the module docstring).

    Args:
        checkpointer: Opened with the keys and upcasters to rewrite to (its active key, its
            state model's schema version).
        page_size: Threads listed per page (1 to 1000).
        dry_run: Read each thread and count what would be rewritten (``stale``); write nothing.
        conflict_retries: How many times to refresh a thread again after a conflict.
        progress: Called after each thread with its id and outcome.

    Returns:
        The counts, and the threads that failed.
    """
    _check(page_size, conflict_retries)
    report = RefreshReport(dry_run=dry_run)
    for thread in checkpointer.iter_threads(page_size=page_size):
        thread_id = thread.thread_id
        try:
            # A dry run writes nothing, so it never meets a conflict to retry.
            result = checkpointer.refresh_thread(thread_id, dry_run=dry_run)
            for _ in range(conflict_retries):
                if result != "conflict":
                    break
                result = checkpointer.refresh_thread(thread_id)
            outcome = _outcome(result)
        except _PER_THREAD as exc:
            report._fail(thread_id, exc, progress)
        else:
            report._add(thread_id, outcome, progress)
    return report


async def arefresh_threads(
    checkpointer: BaseAsyncCheckpointer[Any],
    *,
    page_size: int = 100,
    dry_run: bool = False,
    conflict_retries: int = 1,
    progress: Progress | None = None,
) -> RefreshReport:
    """The asyncio twin of `refresh_threads`."""
    _check(page_size, conflict_retries)
    report = RefreshReport(dry_run=dry_run)
    async for thread in checkpointer.iter_threads(page_size=page_size):
        thread_id = thread.thread_id
        try:
            # A dry run writes nothing, so it never meets a conflict to retry.
            result = await checkpointer.refresh_thread(thread_id, dry_run=dry_run)
            for _ in range(conflict_retries):
                if result != "conflict":
                    break
                result = await checkpointer.refresh_thread(thread_id)
            outcome = _outcome(result)
        except _PER_THREAD as exc:
            report._fail(thread_id, exc, progress)
        else:
            report._add(thread_id, outcome, progress)
    return report
