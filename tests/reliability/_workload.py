"""The workload every reliability test drives: compare-and-set increments of a counter.

One increment loads a thread, adds 1 to ``scratchpad["n"]`` and saves with
``expected_version`` set to the version it loaded (0 when the thread does not exist). So a
stored state always has ``n == version``: any lost update, torn write or stale read that got
through breaks that equality, and two acknowledgements of the same (thread, version) mean
two writers both won the same version.

Used in-process (threads, `Ledger`) and by `tests.reliability._worker` in subprocesses.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents_persistence import AgentStateSnapshot, CheckpointerError, ConflictError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from agents_persistence import CheckpointInfo


def increment(cp: Any, thread_id: str, writer: str, *, limit: int | None = None) -> Any:
    """One load-increment-save; the `CheckpointInfo` of the save, or None at ``limit``.

    Raises:
        ConflictError: another writer saved in between (nothing was written).
        CheckpointerError: any other failure of the store.
    """
    checkpoint = cp.load_checkpoint(thread_id)
    if checkpoint is None:
        n, expected = 0, 0
    else:
        n, expected = int(checkpoint.state.scratchpad["n"]), checkpoint.info.version
    if limit is not None and expected >= limit:
        return None
    state = AgentStateSnapshot(scratchpad={"n": n + 1, "by": writer})
    return cp.save_state(thread_id, state, expected_version=expected)


@dataclass
class Ledger:
    """What callers were told: acknowledged versions, conflicts and errors, thread-safe.

    Attributes:
        acks: Every acknowledged (thread id, version).
        errors: Count of each typed error (a `CheckpointerError` other than a conflict).
        untyped: repr of every exception outside the `CheckpointerError` root.
    """

    acks: list[tuple[str, int]] = field(default_factory=list)
    conflicts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    untyped: list[str] = field(default_factory=list)
    successes_at: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ack(self, thread_id: str, version: int) -> None:
        with self._lock:
            self.acks.append((thread_id, version))
            self.successes_at.append(time.monotonic())

    def success(self) -> None:
        with self._lock:
            self.successes_at.append(time.monotonic())

    def failure(self, exc: BaseException) -> None:
        with self._lock:
            if isinstance(exc, ConflictError):
                self.conflicts += 1
            elif isinstance(exc, CheckpointerError):
                self.errors[type(exc).__name__] += 1
            else:
                self.untyped.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:300])

    def first_success_after(self, moment: float) -> float | None:
        with self._lock:
            return next((t for t in self.successes_at if t >= moment), None)

    def highest(self) -> dict[str, int]:
        """The highest acknowledged version of each thread."""
        top: dict[str, int] = {}
        for thread_id, version in list(self.acks):
            top[thread_id] = max(version, top.get(thread_id, 0))
        return top

    def duplicates(self) -> list[tuple[str, int]]:
        """(thread, version) pairs acknowledged more than once: two winners of one version."""
        return sorted(key for key, count in Counter(self.acks).items() if count > 1)


def cas_loop(
    cp: Any,
    thread_id: str,
    writer: str,
    *,
    limit: int,
    ledger: Ledger,
    on_ack: Callable[[CheckpointInfo], None] | None = None,
    pause_after_error: float = 0.02,
) -> int:
    """Increment ``thread_id`` until its version reaches ``limit``; return this writer's wins.

    Conflicts are retried at once; other typed errors after ``pause_after_error`` seconds.
    An exception outside the `CheckpointerError` root is recorded and re-raised.
    """
    wins = 0
    while True:
        try:
            info = increment(cp, thread_id, writer, limit=limit)
        except CheckpointerError as exc:
            ledger.failure(exc)
            if not isinstance(exc, ConflictError):
                time.sleep(pause_after_error)
            continue
        except Exception as exc:
            ledger.failure(exc)
            raise
        if info is None:
            return wins
        wins += 1
        ledger.ack(info.thread_id, info.version)
        if on_ack is not None:
            on_ack(info)


@dataclass
class Verdict:
    """What survived, read back after the faults: the inputs of every reliability assertion."""

    lost: list[str]
    inconsistent: list[str]
    unreadable: list[str]
    versions: dict[str, int]


def verify(cp: Any, acked: dict[str, int], thread_ids: Iterable[str]) -> Verdict:
    """Load every thread once: acknowledged versions present, ``n == version``, all decodable."""
    lost: list[str] = []
    inconsistent: list[str] = []
    unreadable: list[str] = []
    versions: dict[str, int] = {}
    for thread_id in sorted(set(thread_ids) | set(acked)):
        try:
            checkpoint = cp.load_checkpoint(thread_id)
        except CheckpointerError as exc:
            unreadable.append(f"{thread_id}: {type(exc).__name__}: {exc}"[:300])
            continue
        have = 0 if checkpoint is None else checkpoint.info.version
        versions[thread_id] = have
        if have < acked.get(thread_id, 0):
            lost.append(f"{thread_id}: acknowledged version {acked[thread_id]}, stored {have}")
        if checkpoint is not None and checkpoint.state.scratchpad.get("n") != have:
            n = checkpoint.state.scratchpad.get("n")
            inconsistent.append(f"{thread_id}: version {have} holds n={n}")
    return Verdict(lost, inconsistent, unreadable, versions)
