"""Copy the threads of a Rust SDK store into any store of this library.

A Rust record has no version: a copied thread is created at version 1 with the Rust record's
timestamps where its layout keeps them (PostgreSQL: both; DynamoDB: ``updated_at``; Redis:
none, so the time of the copy) and its Rust expiry (Redis TTL, DynamoDB ``ttl``). The rule of
``copy`` makes a rerun safe: a thread the target already holds is skipped, whatever its
version, so a rerun finishes an interrupted copy and never overwrites what the target's own
writers saved since. Writes are conditional (``expected_version=0``): a thread created
concurrently on the target is skipped, not clobbered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from agents_persistence._core import utc_now, validate_thread_id
from agents_persistence.contract import CheckpointInfo
from agents_persistence.errors import (
    ConflictError,
    CorruptStateError,
    InvalidArgumentError,
    StateTooLargeError,
)

from ._base import RustRecord, RustSource, decode_record

if TYPE_CHECKING:
    from collections.abc import Callable

    from agents_persistence.contract import Checkpointer

__all__ = ["CopyReport", "Failure", "Outcome", "copy_from_rust"]

Outcome = Literal["copied", "skipped", "expired", "failed"]
"""What happened to one thread: copied, already in the target, expired on the way, failed."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A thread that was not copied, and why (nothing of it was written)."""

    thread_id: str
    reason: str


@dataclass(slots=True)
class CopyReport:
    """The summary of a copy.

    Attributes:
        copied: Threads written to the target (at version 1).
        skipped: Threads the target already held (left as they were).
        expired: Threads listed but gone or expired by the time they were read.
        failed: Threads not copied: undecodable JSON, an id or state the target refuses.
    """

    copied: int = 0
    skipped: int = 0
    expired: int = 0
    failed: list[Failure] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        """The number of threads with ``outcome``."""
        if outcome == "failed":
            return len(self.failed)
        value: int = getattr(self, outcome)
        return value


def _copy_one(target: Checkpointer[Any], record: RustRecord) -> Outcome:
    thread_id = validate_thread_id(record.thread_id)
    state = decode_record(record)
    now = utc_now()
    if record.expires_at is not None and record.expires_at <= now:
        return "expired"
    if target.load_checkpoint(thread_id) is not None:
        return "skipped"
    updated_at = record.updated_at or now
    created_at = min(record.created_at or updated_at, updated_at)
    info = CheckpointInfo(thread_id, 1, created_at, updated_at, record.expires_at, 0)
    try:
        target.restore_checkpoint(thread_id, state, info, expected_version=0)
    except ConflictError:
        return "skipped"  # created on the target since it was read: the target's write wins
    return "copied"


def copy_from_rust(
    source: RustSource,
    target: Checkpointer[Any],
    *,
    page_size: int = 500,
    on_thread: Callable[[str, Outcome, str | None], None] | None = None,
) -> CopyReport:
    """Copy every live thread of ``source`` into ``target``'s namespace; safe to rerun.

    A record whose JSON does not decode, or whose thread id or state the target refuses, is
    reported in `CopyReport.failed` and skipped: nothing of it is written and the copy goes
    on. Errors of the stores themselves (an unreachable server, refused credentials) end the
    copy; run it again to finish.

    Args:
        source: A Rust SDK store (`open_rust_source`).
        target: Any checkpointer; threads go to its namespace, its TTL is not applied (a
            thread keeps its Rust expiry).
        page_size: Thread ids listed per request.
        on_thread: Called after each thread with its id, outcome and, on failure, the reason
            (a progress bar, a log).

    Returns:
        The counts of threads copied, skipped and expired, and the failures.

    Raises:
        BackendUnavailableError: A store could not be reached (nothing half-written).
        CheckpointerError: Another error of either store.
    """
    report = CopyReport()
    for thread_id in source.iter_thread_ids(page_size=page_size):
        reason: str | None = None
        try:
            record = source.load(thread_id)
            outcome: Outcome = "expired" if record is None else _copy_one(target, record)
        except (CorruptStateError, InvalidArgumentError, StateTooLargeError) as exc:
            # InvalidThreadIdError is an InvalidArgumentError: a Rust id this library refuses.
            reason = str(exc)
            report.failed.append(Failure(thread_id, reason))
            outcome = "failed"
        else:
            setattr(report, outcome, report.count(outcome) + 1)
        if on_thread is not None:
            on_thread(thread_id, outcome, reason)
    return report
