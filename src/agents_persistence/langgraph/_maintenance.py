"""Deleting, pruning and copying LangGraph checkpoints: the plans that remove or copy rows.

Plans as in `_plans`: generators yielding statements, run by either twin in one transaction.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, exists, select, tuple_

from agents_persistence._core import as_utc, validate_thread_id
from agents_persistence.errors import InvalidArgumentError
from agents_persistence.langgraph import _statements as sql

if TYPE_CHECKING:
    from collections.abc import Generator, Iterable, Mapping, Sequence
    from datetime import timedelta

    from sqlalchemy import ColumnElement, Executable, Insert, Table

    from agents_persistence._core import Clock
    from agents_persistence.models.langgraph import LangGraphModels

__all__ = ["PURGE_BATCH", "Maintenance"]

_CHUNK = 500  # keys per ``IN`` list when deleting by key
PURGE_BATCH = _CHUNK
"""Expired threads one ``purge_expired`` transaction deletes."""
_Step = tuple["Executable", Any]
NEVER = datetime(9999, 12, 31, tzinfo=UTC)
"""The expiry of a thread row written only to lock the thread (a saver without a TTL)."""


class Maintenance:
    """Plans that delete, prune and copy (mixed into `Plans`, which sets the tables)."""

    models: LangGraphModels
    cp: Table
    blobs: Table
    writes: Table
    threads: Table
    ttl: timedelta | None
    keep_last: int | None
    clock: Clock
    _upsert_thread: Insert
    _lock_thread: Insert
    # PostgreSQL and SQLite: the expiry check and the refresh (or lock) in one statement, and
    # retention without reading the checkpoints first; ``None`` on MySQL/MariaDB.
    _claim_refreshing: Executable | None
    _claim_locking: Executable | None
    _retain_all: Executable | None
    _retain_checkpoints: Executable | None
    _retain_values: Executable | None
    # Built once by `Plans` (bound parameters ``thread_id``, ``ns``, ``ids``, ``pairs``...).
    _expiry: Executable
    _newest: Executable
    _delete_writes_of: Executable
    _delete_checkpoints_of: Executable
    _delete_values_of: Executable

    # --- expiry --------------------------------------------------------------------------

    def live(self, now: datetime) -> ColumnElement[bool]:
        """Checkpoint rows of threads that have not expired at ``now``."""
        t = self.threads.c
        expired = exists().where(t.thread_id == self.cp.c.thread_id, t.expires_at <= now)
        return ~expired

    def drop_if_expired(self, thread_id: str, now: datetime) -> Generator[_Step, Any, bool]:
        """Delete thread ``thread_id`` if it has expired at ``now``; whether it had."""
        rows = yield self._expiry, {"thread_id": thread_id}
        if not rows or as_utc(rows[0].expires_at) > now:
            return False
        yield from self.delete_threads([thread_id])
        return True

    def refresh(
        self, thread_id: str, now: datetime, *, lock: bool = False
    ) -> Generator[_Step, Any, None]:
        """Move the thread's expiry to ``now`` plus the TTL (if the saver has one).

        Without a TTL but with retention (or ``lock``), lock the thread's expiry row (made with
        no expiry if missing, an existing one kept): writers of one thread then take turns, so
        each prunes what the others committed and none deadlocks on another's checkpoint rows.
        Either statement locks the row until the transaction ends.
        """
        if self.ttl is not None:
            yield self._upsert_thread, {"thread_id": thread_id, "expires_at": now + self.ttl}
        elif lock or self.keep_last is not None:
            yield self._lock_thread, {"thread_id": thread_id, "expires_at": NEVER}

    def claim(
        self, thread_id: str, now: datetime, *, lock: bool = False, restart: bool = True
    ) -> Generator[_Step, Any, bool]:
        """`drop_if_expired`, then `refresh`; whether the thread had expired.

        An expired thread is deleted; then, with ``restart``, refreshed afresh (a ``put``
        starts it again), without, left deleted (a ``put_writes`` drops its writes). On
        PostgreSQL and SQLite, when the refresh writes the expiry row, the check and the
        refresh are one statement: an upsert that keeps an expired row's expiry as it is and
        returns the expiry it leaves, so an expiry not after ``now`` means the thread had
        expired.
        """
        writes = self.ttl is not None or lock or self.keep_last is not None
        claim = self._claim_refreshing if self.ttl is not None else self._claim_locking
        if not writes or claim is None:
            expired = yield from self.drop_if_expired(thread_id, now)
            if not expired or restart:
                yield from self.refresh(thread_id, now, lock=lock)
            return expired
        expires_at = now + self.ttl if self.ttl is not None else NEVER
        params = {"thread_id": thread_id, "expires_at": expires_at, "now": now}
        rows = yield claim, params
        if as_utc(rows[0].expires_at) > now:
            return False
        yield from self.delete_threads([thread_id])
        if restart:
            yield claim, params
        return True

    def purge_expired(self, now: datetime) -> Generator[_Step, Any, int]:
        """Delete up to one batch of threads expired at ``now``; how many were deleted."""
        rows = yield (
            select(self.threads.c.thread_id)
            .where(self.threads.c.expires_at <= now)
            .order_by(self.threads.c.expires_at)
            .limit(_CHUNK),
            None,
        )
        yield from self.delete_threads(row.thread_id for row in rows)
        return len(rows)

    # --- deleting and copying ------------------------------------------------------------

    def delete_threads(self, thread_ids: Iterable[str]) -> Generator[_Step, Any, None]:
        """Delete every checkpoint, blob and write of ``thread_ids``, and their expiry."""
        ids = sorted({validate_thread_id(thread_id) for thread_id in thread_ids})
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            for table in (self.writes, self.blobs, self.cp, self.threads):
                yield delete(table).where(table.c.thread_id.in_(chunk)), None

    def delete_for_runs(self, run_ids: Sequence[str]) -> Generator[_Step, Any, None]:
        """Delete the checkpoints ``run_ids`` made, their writes, and blobs no longer used."""
        runs = sorted(set(run_ids))
        if not runs:
            return
        doomed: dict[tuple[str, str], list[str]] = defaultdict(list)
        for start in range(0, len(runs), _CHUNK):
            rows = yield (
                select(self.cp.c.thread_id, self.cp.c.checkpoint_ns, self.cp.c.checkpoint_id).where(
                    self.cp.c.run_id.in_(runs[start : start + _CHUNK])
                ),
                None,
            )
            for row in rows:
                doomed[(row.thread_id, row.checkpoint_ns)].append(row.checkpoint_id)
        yield from self._delete_checkpoints(doomed)

    def keep_latest(self, thread_ids: Sequence[str], keep: int) -> Generator[_Step, Any, None]:
        """Keep the newest ``keep`` checkpoints per thread and namespace, delete the others."""
        ids = sorted({validate_thread_id(thread_id) for thread_id in thread_ids})
        doomed: dict[tuple[str, str], list[str]] = defaultdict(list)
        for thread_id in ids:
            rows = yield (
                select(self.cp.c.checkpoint_ns, self.cp.c.checkpoint_id)
                .where(self.cp.c.thread_id == thread_id)
                .order_by(self.cp.c.checkpoint_ns, self.cp.c.checkpoint_id.desc()),
                None,
            )
            seen: dict[str, int] = defaultdict(int)
            for row in rows:
                seen[row.checkpoint_ns] += 1
                if seen[row.checkpoint_ns] > keep:
                    doomed[(thread_id, row.checkpoint_ns)].append(row.checkpoint_id)
        yield from self._delete_checkpoints(doomed)

    def retain(self, thread_id: str, namespace: str, keep: int) -> Generator[_Step, Any, None]:
        """Retention after a put: delete what lies beyond the newest ``keep`` of one namespace.

        What goes: the doomed checkpoints' writes, the checkpoints, and the values only they
        referred to (the versions they name that no kept checkpoint names; every value is
        written with a checkpoint naming it). PostgreSQL: one statement (data-modifying CTEs).
        SQLite: a delete of the checkpoints beyond, returning them; when it found some, a delete
        of their writes and one of their values that no remaining checkpoint names.
        MySQL/MariaDB: one read of the newest checkpoints when nothing is beyond; otherwise
        three deletes more.
        """
        key = {"thread_id": thread_id, "ns": namespace}
        if self._retain_all is not None:  # PostgreSQL: one statement
            yield self._retain_all, {**key, "keep": keep}
            return
        if self._retain_checkpoints is not None and self._retain_values is not None:
            # SQLite: the checkpoints beyond deleted first, returning what they named.
            doomed = yield self._retain_checkpoints, {**key, "keep": keep}
            if doomed:
                ids = [row.checkpoint_id for row in doomed]
                yield self._delete_writes_of, {**key, "ids": ids}
                pairs = sorted(_versions(doomed))
                for start in range(0, len(pairs), _CHUNK):
                    yield self._retain_values, {**key, "pairs": pairs[start : start + _CHUNK]}
            return
        rows = yield self._newest, {**key, "count": keep + _CHUNK}
        if len(rows) <= keep:
            return
        doomed, kept = rows[keep:], rows[:keep]
        ids = [row.checkpoint_id for row in doomed]
        yield self._delete_writes_of, {**key, "ids": ids}
        yield self._delete_checkpoints_of, {**key, "ids": ids}
        if len(rows) == keep + _CHUNK:  # older checkpoints beyond this read may share values
            yield from self._collect_blobs(thread_id, namespace)
            return
        unused = sorted(_versions(doomed) - _versions(kept))
        for start in range(0, len(unused), _CHUNK):
            yield self._delete_values_of, {**key, "pairs": unused[start : start + _CHUNK]}

    def _delete_blobs(
        self, thread_id: str, namespace: str, pairs: Sequence[tuple[str, str]]
    ) -> Executable:
        b = self.blobs.c
        return delete(self.blobs).where(
            b.thread_id == thread_id,
            b.checkpoint_ns == namespace,
            tuple_(b.channel, b.version).in_(pairs),
        )

    def _delete_checkpoints(
        self, doomed: Mapping[tuple[str, str], Sequence[str]]
    ) -> Generator[_Step, Any, None]:
        for (thread_id, namespace), checkpoint_ids in doomed.items():
            for start in range(0, len(checkpoint_ids), _CHUNK):
                chunk = {(thread_id, namespace): checkpoint_ids[start : start + _CHUNK]}
                for table in (self.writes, self.cp):
                    yield delete(table).where(sql.keys_in(table, chunk, "checkpoint_id")), None
            yield from self._collect_blobs(thread_id, namespace)

    def _collect_blobs(self, thread_id: str, namespace: str) -> Generator[_Step, Any, None]:
        """Delete the blobs of one thread and namespace that no checkpoint refers to any more."""
        rows = yield (
            select(self.cp.c.checkpoint).where(
                self.cp.c.thread_id == thread_id, self.cp.c.checkpoint_ns == namespace
            ),
            None,
        )
        used = _versions(rows)
        stored = yield (
            select(self.blobs.c.channel, self.blobs.c.version).where(
                self.blobs.c.thread_id == thread_id, self.blobs.c.checkpoint_ns == namespace
            ),
            None,
        )
        unused = sorted({(row.channel, row.version) for row in stored} - used)
        for start in range(0, len(unused), _CHUNK):
            yield self._delete_blobs(thread_id, namespace, unused[start : start + _CHUNK]), None

    def copy_thread(self, source: str, target: str) -> Generator[_Step, Any, None]:
        """Copy every checkpoint, blob and write of thread ``source`` to thread ``target``.

        An expired source copies nothing; the target's expiry starts afresh with the TTL.

        Raises:
            InvalidArgumentError: ``target`` already has checkpoints (nothing is copied).
        """
        source, target = validate_thread_id(source), validate_thread_id(target)
        if source == target:
            raise InvalidArgumentError("copy_thread needs two different threads")
        now = self.clock()
        if (yield from self.drop_if_expired(source, now)):
            return
        yield from self.drop_if_expired(target, now)
        existing = yield (
            select(self.cp.c.checkpoint_id).where(self.cp.c.thread_id == target).limit(1),
            None,
        )
        if existing:
            raise InvalidArgumentError(
                f"thread {target!r} already has checkpoints: delete it first or copy elsewhere"
            )
        for model in (self.models.blobs, self.models.checkpoints, self.models.writes):
            yield sql.copy_rows(model, source, target), None
        yield from self.refresh(target, now)


def _versions(rows: Iterable[Any]) -> set[tuple[str, str]]:
    """The ``(channel, version)`` pairs the checkpoints of ``rows`` name."""
    return {
        (channel, str(version))
        for row in rows
        for channel, version in (row.checkpoint.get("channel_versions") or {}).items()
    }
