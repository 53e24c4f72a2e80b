"""What each saver operation does, as plans both twins run: the savers' logic without I/O.

A plan is a generator that yields ``(statement, parameters)`` and is sent back the result (the
rows of a query, the row count of anything else); its return value is the operation's. The
sync saver runs plans on a `Connection`, the async one on an `AsyncConnection`, each plan in
one transaction, so both twins share every line of logic here.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import timedelta  # noqa: TC003 - an attribute's annotation
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
)
from sqlalchemy import (
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    false,
    func,
    literal_column,
    null,
    or_,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import postgresql

from agents_persistence._core import Clock, as_utc, utc_now, validate_thread_id
from agents_persistence.errors import CorruptStateError, InvalidArgumentError, ThreadForkError
from agents_persistence.langgraph import _statements as sql
from agents_persistence.langgraph._maintenance import NEVER, Maintenance
from agents_persistence.models.langgraph import (
    CHANNEL_LENGTH,
    CHECKPOINT_NS_LENGTH,
    ID_LENGTH,
    RUN_ID_LENGTH,
    LangGraphModels,
)

if TYPE_CHECKING:
    from collections.abc import Generator, Mapping, Sequence

    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
    from langgraph.checkpoint.serde.base import SerializerProtocol
    from sqlalchemy import BindParameter, ColumnElement, Executable

__all__ = ["PAGE_SIZE", "Plans", "Step", "next_version"]

Step = tuple["Executable", Any]
"""A statement and its parameters (a dict, a list of dicts for many rows, or ``None``)."""

PAGE_SIZE = 100
"""Checkpoints a listing reads per query."""

_EMPTY = "empty"  # blob type of a channel that has a version but no value


def next_version(current: str | int | float | None) -> str:
    """The version after ``current``: a zero-padded counter and a random tie-breaker.

    Strings compare in the same order as the counters, and two writers forking the same
    version get different versions.
    """
    if current is None:
        counter = 0
    elif isinstance(current, str):
        counter = int(current.split(".")[0])
    else:
        counter = int(current)
    return f"{counter + 1:032}.{random.random():016}"


def _jsonable(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"the {what} must be JSON: {exc}") from exc


def _length(value: str, limit: int, what: str) -> str:
    if len(value) > limit:
        raise InvalidArgumentError(f"{what} {value[:40]!r}... is longer than {limit} characters")
    return value


class Plans(Maintenance):
    """The operations of one set of LangGraph tables on one dialect, with one serializer."""

    def __init__(
        self,
        models: LangGraphModels,
        dialect: str,
        serde: SerializerProtocol,
        *,
        hex_blobs: bool = False,
        keep_last: int | None = None,
        ttl: timedelta | None = None,
        clock: Clock = utc_now,
        exclusive: bool = False,
    ) -> None:
        self.models = models
        self.keep_last = keep_last
        self.exclusive = exclusive
        self.ttl = ttl
        self.clock = clock
        self.dialect = dialect
        self.serde = serde
        self.hex_blobs = hex_blobs
        self.cp = models.checkpoints.__table__
        self.blobs = models.blobs.__table__
        self.writes = models.writes.__table__
        self.threads = models.threads.__table__
        self._upsert_thread = sql.upsert(dialect, models.threads, ("expires_at",))
        self._lock_thread = sql.upsert_keeping(dialect, models.threads, "expires_at")
        self._insert_blobs = sql.insert_ignoring(dialect, models.blobs, hex_blobs)
        self._insert_writes = sql.insert_ignoring(dialect, models.writes, hex_blobs)
        self._upsert_writes = sql.upsert(
            dialect, models.writes, ("channel", "type", "blob"), hex_blobs
        )
        self._upsert_checkpoint = sql.upsert(
            dialect,
            models.checkpoints,
            ("parent_checkpoint_id", "run_id", "checkpoint", "metadata"),
        )
        self._prebuild()

    def _prebuild(self) -> None:
        """The hot path's statements, built once: bound parameters instead of values.

        SQLAlchemy then neither builds them nor computes their cache keys again per call.
        """
        c, b, w, t = self.cp.c, self.blobs.c, self.writes.c, self.threads.c
        thread: BindParameter[str] = bindparam("thread_id")
        ns: BindParameter[str] = bindparam("ns")
        live = ~exists().where(t.thread_id == c.thread_id, t.expires_at <= bindparam("now"))
        one = self._checkpoint_columns().where(c.thread_id == thread, c.checkpoint_ns == ns, live)
        self._latest = one.order_by(c.checkpoint_id.desc()).limit(1)
        self._by_id = one.where(c.checkpoint_id == bindparam("checkpoint_id"))
        self._values_and_writes = self._values_and_writes_query(
            and_(
                b.thread_id == thread,
                b.checkpoint_ns == ns,
                tuple_(b.channel, b.version).in_(bindparam("pairs", expanding=True)),
            ),
            and_(
                w.thread_id == thread,
                w.checkpoint_ns == ns,
                w.checkpoint_id.in_(bindparam("ids", expanding=True)),
            ),
        )
        self._expiry = select(t.expires_at).where(t.thread_id == thread)
        self._latest_locked = (
            select(c.checkpoint_id, c.parent_checkpoint_id)
            .where(c.thread_id == thread, c.checkpoint_ns == ns)
            .order_by(c.checkpoint_id.desc())
            .limit(1)
            .with_for_update()
        )
        self._newest = (
            select(c.checkpoint_id, c.checkpoint)
            .where(c.thread_id == thread, c.checkpoint_ns == ns)
            .order_by(c.checkpoint_id.desc())
            .limit(bindparam("count", type_=Integer, literal_execute=True))
        )
        ids: BindParameter[list[str]] = bindparam("ids", expanding=True)
        self._delete_writes_of = delete(self.writes).where(
            w.thread_id == thread, w.checkpoint_ns == ns, w.checkpoint_id.in_(ids)
        )
        self._delete_checkpoints_of = delete(self.cp).where(
            c.thread_id == thread, c.checkpoint_ns == ns, c.checkpoint_id.in_(ids)
        )
        self._delete_values_of = delete(self.blobs).where(
            b.thread_id == thread,
            b.checkpoint_ns == ns,
            tuple_(b.channel, b.version).in_(bindparam("pairs", expanding=True)),
        )
        self._writes_claiming: tuple[Any, Any] | None = None
        self._claim_refreshing = self._claim_locking = None
        self._retain_all = self._retain_checkpoints = self._retain_values = None
        self._read_latest = self._read_by_id = None
        if self.dialect in ("postgresql", "sqlite"):
            self._prebuild_joined(one)

    def _versions_of(self, checkpoint: Any) -> Any:
        """``(key, value)`` rows of a checkpoint column's ``channel_versions``, values as text."""
        if self.dialect == "postgresql":
            return func.jsonb_each_text(checkpoint["channel_versions"]).table_valued("key", "value")
        return func.json_each(checkpoint, "$.channel_versions").table_valued("key", "value")

    def _names(self, versions: Any, blobs: Any) -> ColumnElement[bool]:
        """Whether the ``versions`` row names the value row ``blobs``."""
        return and_(
            versions.c.key == blobs.c.channel, cast(versions.c.value, String) == blobs.c.version
        )

    def _prebuild_joined(self, one: Any) -> None:
        """PostgreSQL and SQLite: statements that each do what took several elsewhere.

        The checkpoint, its channel values and its pending writes in one query (the values
        found through the versions its JSON names); the expiry check and the refresh in one
        upsert; retention in one statement (PostgreSQL) or a delete returning what it deleted
        (SQLite).
        """
        c, b, w, t = self.cp.c, self.blobs.c, self.writes.c, self.threads.c
        thread: BindParameter[str] = bindparam("thread_id")
        ns: BindParameter[str] = bindparam("ns")
        # The expiry check and the refresh: an expired row keeps its expiry, which is returned.
        claim: Any = sql.insert_returning(self.dialect, self.models.threads).values(
            thread_id=thread, expires_at=bindparam("expires_at", type_=t.expires_at.type)
        )
        still_live = t.expires_at > bindparam("now", type_=t.expires_at.type)
        self._claim_refreshing = claim.on_conflict_do_update(
            index_elements=[t.thread_id],
            set_={"expires_at": case((still_live, claim.excluded.expires_at), else_=t.expires_at)},
        ).returning(t.expires_at)
        self._claim_locking = claim.on_conflict_do_update(
            index_elements=[t.thread_id], set_={"expires_at": t.expires_at}
        ).returning(t.expires_at)
        # One read: kind 0 is the checkpoint, 1 its channel values, 2 its pending writes.
        self._read_latest = self._one_read(one.order_by(c.checkpoint_id.desc()).limit(1))
        self._read_by_id = self._one_read(one.where(c.checkpoint_id == bindparam("checkpoint_id")))
        # Retention: the checkpoints beyond the newest ``keep``, their writes, and the values
        # no other checkpoint of the namespace names.
        beyond = (
            select(c.checkpoint_id)
            .where(c.thread_id == thread, c.checkpoint_ns == ns)
            .order_by(c.checkpoint_id.desc())
            .offset(bindparam("keep", type_=Integer, literal_execute=True))
        )
        if self.dialect == "postgresql":
            self._writes_claiming = (self._writes_at_once(False), self._writes_at_once(True))
        if self.dialect == "sqlite":
            self._retain_checkpoints = (
                delete(self.cp)
                .where(c.thread_id == thread, c.checkpoint_ns == ns, c.checkpoint_id.in_(beyond))
                .returning(c.checkpoint_id, c.checkpoint)
            )
            named = self._versions_of(c.checkpoint)
            self._retain_values = delete(self.blobs).where(
                b.thread_id == thread,
                b.checkpoint_ns == ns,
                tuple_(b.channel, b.version).in_(bindparam("pairs", expanding=True)),
                ~exists()
                .select_from(self.cp.join(named, true()))
                .where(c.thread_id == b.thread_id, c.checkpoint_ns == b.checkpoint_ns)
                .where(self._names(named, self.blobs)),
            )
            return
        # PostgreSQL: data-modifying CTEs, all on the snapshot the statement starts with.
        doomed = (
            delete(self.cp)
            .where(c.thread_id == thread, c.checkpoint_ns == ns, c.checkpoint_id.in_(beyond))
            .returning(c.checkpoint_id, c.checkpoint)
            .cte("doomed")
        )
        gone_writes = (
            delete(self.writes)
            .where(
                w.thread_id == thread,
                w.checkpoint_ns == ns,
                w.checkpoint_id.in_(select(doomed.c.checkpoint_id)),
            )
            .cte("gone_writes")
        )
        doomed_named = self._versions_of(doomed.c.checkpoint)
        kept = self.cp.alias("kept")
        kept_named = self._versions_of(kept.c.checkpoint)
        self._retain_all = (
            delete(self.blobs)
            .where(
                b.thread_id == thread,
                b.checkpoint_ns == ns,
                exists()
                .select_from(doomed.join(doomed_named, true()))
                .where(self._names(doomed_named, self.blobs)),
                ~exists()
                .select_from(kept.join(kept_named, true()))
                .where(
                    kept.c.thread_id == thread,
                    kept.c.checkpoint_ns == ns,
                    kept.c.checkpoint_id.not_in(select(doomed.c.checkpoint_id)),
                    self._names(kept_named, self.blobs),
                ),
            )
            .add_cte(gone_writes)
        )

    def _writes_at_once(self, overwrite: bool) -> Any:
        """PostgreSQL: `claim` and the insert of a task's writes, as one statement.

        ``claimed`` (a CTE) is the claim's upsert when the saver refreshes or locks the thread,
        else a read of its expiry; the insert (a CTE reading ``claimed``, so running after
        it) adds the rows (arrays ``w_idx``, ``w_channels``, ``w_types``, ``w_blobs``) only if
        no expiry in ``claimed`` has passed; the statement returns ``claimed``'s expiries.
        """
        t, w = self.threads.c, self.writes.c
        now = bindparam("now", type_=t.expires_at.type)
        claimed: Any
        if self.ttl is not None:
            claimed = self._claim_refreshing
        elif self.keep_last is not None:
            claimed = self._claim_locking
        else:
            claimed = select(t.expires_at).where(t.thread_id == bindparam("w_thread_id"))
        claimed_rows = claimed.cte("claimed")
        rows = (
            func.unnest(
                bindparam("w_idx", type_=postgresql.ARRAY(Integer)),
                bindparam("w_channels", type_=postgresql.ARRAY(String)),
                bindparam("w_types", type_=postgresql.ARRAY(String)),
                bindparam("w_blobs", type_=postgresql.ARRAY(postgresql.BYTEA)),
            )
            .table_valued("idx", "channel", "type", "blob")
            .render_derived()
        )
        expired = exists().select_from(claimed_rows).where(claimed_rows.c.expires_at <= now)
        names = ["thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "task_path"]
        insert: Any = postgresql.insert(self.writes).from_select(
            [*names, "idx", "channel", "type", "blob"],
            select(
                *(bindparam(f"w_{name}", type_=String) for name in names),
                rows.c.idx,
                rows.c.channel,
                rows.c.type,
                rows.c.blob,
            ).where(~expired),
        )
        key = [w.thread_id, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.idx]
        if overwrite:
            insert = insert.on_conflict_do_update(
                index_elements=key,
                set_={name: insert.excluded[name] for name in ("channel", "type", "blob")},
            )
        else:
            insert = insert.on_conflict_do_nothing(index_elements=key)
        return select(claimed_rows.c.expires_at).add_cte(insert.cte("new_writes"))

    def _one_read(self, chosen: Any) -> Any:
        """The checkpoint ``chosen`` selects, its channel values and its pending writes."""
        b, w = self.blobs.c, self.writes.c
        picked = chosen.cte("picked")
        p = picked.c
        named = self._versions_of(p.checkpoint)
        blank = {
            "checkpoint": null(),
            "metadata": null(),
            "parent_checkpoint_id": null(),
            "channel": null(),
            "key": null(),
            "task_id": null(),
            "idx": null(),
            "task_path": null(),
            "type": null(),
            "blob": null(),
        }

        def row(kind: int, **columns: Any) -> Any:
            chosen_columns = {**blank, **columns}
            return [
                literal_column(str(kind)).label("kind"),
                p.thread_id.label("thread_id"),
                p.checkpoint_ns.label("checkpoint_ns"),
                p.checkpoint_id.label("checkpoint_id"),
                *(value.label(name) for name, value in chosen_columns.items()),
            ]

        checkpoint = select(
            *row(
                0,
                checkpoint=p.checkpoint,
                metadata=p.metadata,
                parent_checkpoint_id=p.parent_checkpoint_id,
                channel=cast(null(), String),
                key=cast(null(), String),
                task_id=cast(null(), String),
                idx=cast(null(), Integer),
                task_path=cast(null(), String),
                type=cast(null(), String),
                blob=cast(null(), self.blobs.c.blob.type),
            )
        )
        values = select(
            *row(1, channel=b.channel, key=b.version, type=b.type, blob=b.blob)
        ).select_from(
            picked.join(named, true()).join(
                self.blobs,
                and_(
                    b.thread_id == p.thread_id,
                    b.checkpoint_ns == p.checkpoint_ns,
                    self._names(named, self.blobs),
                ),
            )
        )
        writes = select(
            *row(
                2,
                channel=w.channel,
                task_id=w.task_id,
                idx=w.idx,
                task_path=w.task_path,
                type=w.type,
                blob=w.blob,
            )
        ).select_from(
            picked.join(
                self.writes,
                and_(
                    w.thread_id == p.thread_id,
                    w.checkpoint_ns == p.checkpoint_ns,
                    w.checkpoint_id == p.checkpoint_id,
                ),
            )
        )
        return union_all(checkpoint, values, writes).order_by("kind", "task_path", "task_id", "idx")

    # --- configs -------------------------------------------------------------------------

    @staticmethod
    def target(config: RunnableConfig) -> tuple[str, str, str | None]:
        """``(thread_id, checkpoint_ns, checkpoint_id)`` of ``config``, validated."""
        configurable = config.get("configurable") or {}
        thread_id = validate_thread_id(configurable.get("thread_id"))
        namespace = configurable.get("checkpoint_ns") or ""
        if not isinstance(namespace, str):
            raise InvalidArgumentError(f"checkpoint_ns must be a str, not {namespace!r:.40}")
        _length(namespace, CHECKPOINT_NS_LENGTH, "checkpoint_ns")
        checkpoint_id = configurable.get("checkpoint_id") or None
        return thread_id, namespace, checkpoint_id

    # --- writing -------------------------------------------------------------------------

    def _with_blob(self, row: dict[str, Any], blob: bytes | None) -> dict[str, Any]:
        if self.hex_blobs:
            row[sql.HEX_BLOB] = None if blob is None else blob.hex()
        else:
            row["blob"] = blob
        return row

    def _dump(self, value: Any, what: str) -> tuple[str, bytes]:
        try:
            return self.serde.dumps_typed(value)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"cannot serialize {what}: {exc}") from exc

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Generator[Step, Any, RunnableConfig]:
        """Store the blobs of ``new_versions`` and the checkpoint, in one transaction.

        An expired thread is deleted first: a write starts it afresh, it never revives it.
        """
        thread_id, namespace, parent_id = self.target(config)
        now = self.clock()
        body: dict[str, Any] = {k: v for k, v in checkpoint.items() if k != "channel_values"}
        body = _jsonable(body, "checkpoint (without its channel values)")
        stored_metadata = _jsonable(
            get_serializable_checkpoint_metadata(config, metadata), "checkpoint metadata"
        )
        run_id = stored_metadata.get("run_id")
        run_id = _length(run_id, RUN_ID_LENGTH, "run_id") if isinstance(run_id, str) else None
        values = checkpoint["channel_values"]
        blobs = []
        for channel, version in new_versions.items():
            type_, blob = (
                self._dump(values[channel], f"channel {channel!r}")
                if channel in values
                else (_EMPTY, None)
            )
            blobs.append(
                self._with_blob(
                    {
                        "thread_id": thread_id,
                        "checkpoint_ns": namespace,
                        "channel": _length(channel, CHANNEL_LENGTH, "channel name"),
                        "version": _length(str(version), ID_LENGTH, "channel version"),
                        "type": type_,
                    },
                    blob,
                )
            )
        # First: writers of one thread then queue on its expiry row, in one lock order.
        yield from self.claim(thread_id, now, lock=self.exclusive)
        if self.exclusive:
            yield from self.own(thread_id, namespace, parent_id, checkpoint["id"])
        row = {
            "thread_id": thread_id,
            "checkpoint_ns": namespace,
            "checkpoint_id": checkpoint["id"],
            "parent_checkpoint_id": parent_id,
            "run_id": run_id,
            "checkpoint": body,
            "metadata": stored_metadata,
        }
        if blobs:
            yield self._insert_blobs, blobs
        yield self._upsert_checkpoint, row
        if self.keep_last is not None:
            yield from self.retain(thread_id, namespace, self.keep_last)
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": namespace,
                "checkpoint_id": checkpoint["id"],
            }
        }

    def _write_rows(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> tuple[str, list[dict[str, Any]], bool]:
        """The thread, the rows of a task's writes, and whether they overwrite (special ones)."""
        thread_id, namespace, checkpoint_id = self.target(config)
        if checkpoint_id is None:
            raise InvalidArgumentError("put_writes needs a config with a checkpoint_id")
        rows = []
        for index, (channel, value) in enumerate(writes):
            type_, blob = self._dump(value, f"the write to {channel!r}")
            rows.append(
                self._with_blob(
                    {
                        "thread_id": thread_id,
                        "checkpoint_ns": namespace,
                        "checkpoint_id": checkpoint_id,
                        "task_id": _length(task_id, ID_LENGTH, "task_id"),
                        "idx": WRITES_IDX_MAP.get(channel, index),
                        "channel": _length(channel, CHANNEL_LENGTH, "channel name"),
                        "type": type_,
                        "task_path": task_path,
                    },
                    blob,
                )
            )
        special = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        return thread_id, rows, special

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Generator[Step, Any, None]:
        """Store a task's writes; special channels (errors, interrupts) overwrite, others stay.

        Writes to an expired thread are dropped with it (their checkpoint is gone).
        """
        thread_id, rows, special = self._write_rows(config, writes, task_id, task_path)
        now = self.clock()
        if not rows:
            return
        if (yield from self.claim(thread_id, now, restart=False)):
            return
        yield (self._upsert_writes if special else self._insert_writes), rows

    @property
    def writes_at_once(self) -> bool:
        """Whether `put_writes_at_once` can run (PostgreSQL)."""
        return self._writes_claiming is not None

    def put_writes_at_once(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Generator[Step, Any, bool]:
        """`put_writes` in one statement (PostgreSQL); ``False`` if the thread had expired.

        The statement claims the thread as `claim` does (the same lock, the same refresh) and
        inserts the writes only if it has not expired; then nothing is written, and `put_writes`
        in a transaction drops the thread.
        """
        thread_id, rows, special = self._write_rows(config, writes, task_id, task_path)
        now = self.clock()
        if not rows:
            return True
        statements = self._writes_claiming
        assert statements is not None  # callers check writes_at_once
        head = rows[0]
        found = yield (
            statements[special],
            {
                "thread_id": thread_id,
                "expires_at": now + self.ttl if self.ttl is not None else NEVER,
                "now": now,
                "w_thread_id": thread_id,
                "w_checkpoint_ns": head["checkpoint_ns"],
                "w_checkpoint_id": head["checkpoint_id"],
                "w_task_id": head["task_id"],
                "w_task_path": task_path,
                "w_idx": [row["idx"] for row in rows],
                "w_channels": [row["channel"] for row in rows],
                "w_types": [row["type"] for row in rows],
                "w_blobs": [row["blob"] for row in rows],
            },
        )
        return all(as_utc(row.expires_at) > now for row in found)

    def own(
        self, thread_id: str, namespace: str, parent_id: str | None, checkpoint_id: str
    ) -> Generator[Step, Any, None]:
        """Write ownership: `ThreadForkError` unless ``parent_id`` is the namespace's latest.

        Runs after `refresh` has locked the thread's row, so writers of the thread take turns
        between this check and their commit. The latest is read with a locking read (MySQL's
        and MariaDB's repeatable read would otherwise answer from the transaction's snapshot).
        A put of the latest checkpoint again, with the same parent, passes: a retry after a
        lost reply.
        """
        rows = yield self._latest_locked, {"thread_id": thread_id, "ns": namespace}
        latest = rows[0] if rows else None
        if latest is None:
            if parent_id is None:
                return
        elif latest.checkpoint_id == parent_id or (
            latest.checkpoint_id == checkpoint_id and latest.parent_checkpoint_id == parent_id
        ):
            return
        raise ThreadForkError(
            thread_id, namespace, parent_id, None if latest is None else latest.checkpoint_id
        )

    # --- reading -------------------------------------------------------------------------

    def _checkpoint_columns(self) -> Any:
        return select(
            self.cp.c.thread_id,
            self.cp.c.checkpoint_ns,
            self.cp.c.checkpoint_id,
            self.cp.c.parent_checkpoint_id,
            self.cp.c.checkpoint,
            self.cp.c.metadata,
        )

    def get_tuple(self, config: RunnableConfig) -> Generator[Step, Any, CheckpointTuple | None]:
        """The checkpoint ``config`` names, or the thread's latest in its namespace."""
        thread_id, namespace, checkpoint_id = self.target(config)
        params = {"thread_id": thread_id, "ns": namespace, "now": self.clock()}
        if checkpoint_id is not None:
            params["checkpoint_id"] = checkpoint_id
        one_read = self._read_latest if checkpoint_id is None else self._read_by_id
        if one_read is not None:
            rows = yield one_read, params
            if not rows:
                return None
            found = self._from_one_read(rows)
            if found is not None:
                return found
            # A version with no value row, or whose text differs from the JSON's: two reads.
            rows = [row for row in rows if row.kind == 0]
        else:
            rows = yield (self._latest if checkpoint_id is None else self._by_id), params
        if not rows:
            return None
        tuples = yield from self._assemble(rows)
        return tuples[0]

    @property
    def single_read(self) -> bool:
        """Whether `get_tuple` reads in one statement (it may then run outside a transaction)."""
        return self._read_latest is not None

    def _from_one_read(self, rows: Sequence[Any]) -> CheckpointTuple | None:
        """The tuple of a one-statement read, or ``None`` if a named version found no value."""
        head = rows[0]
        versions = head.checkpoint.get("channel_versions") or {}
        values: dict[tuple[str, str, str, str], Any] = {}
        pending: dict[tuple[str, str, str], list[tuple[str, str, Any]]] = defaultdict(list)
        found = 0
        for row in rows[1:]:
            if row.kind == 1:
                found += 1  # one row per channel: its version's, by the primary key
                if row.type != _EMPTY:
                    key = (row.thread_id, row.checkpoint_ns, row.channel, row.key)
                    values[key] = self._load(row)
            else:
                pending[(row.thread_id, row.checkpoint_ns, row.checkpoint_id)].append(
                    (row.task_id, row.channel, self._load(row))
                )
        if found != len(versions):
            return None
        return self._tuple(head, values, pending)

    def list_page(
        self,
        config: RunnableConfig | None,
        wanted: Mapping[str, Any] | None,
        before: RunnableConfig | None,
        after_key: tuple[str, str, str] | None,
        count: int,
    ) -> Generator[Step, Any, tuple[list[CheckpointTuple], tuple[str, str, str] | None]]:
        """Up to ``count`` matching checkpoints newest first after ``after_key``, and the next key.

        The next key is ``None`` when no rows are left; a page may hold fewer than ``count``
        tuples (rows the metadata filter rejects) and still have a next key.
        """
        c = self.cp.c
        query = self._checkpoint_columns().where(self.live(self.clock()))
        if config is not None:
            configurable = config.get("configurable") or {}
            if configurable.get("thread_id") is not None:
                query = query.where(c.thread_id == validate_thread_id(configurable["thread_id"]))
            if configurable.get("checkpoint_ns") is not None:
                query = query.where(c.checkpoint_ns == configurable["checkpoint_ns"])
            if configurable.get("checkpoint_id"):
                query = query.where(c.checkpoint_id == configurable["checkpoint_id"])
        if before is not None:
            before_id = (before.get("configurable") or {}).get("checkpoint_id")
            if before_id:
                query = query.where(c.checkpoint_id < before_id)
        if wanted:
            query = query.where(*sql.metadata_prefilter(self.dialect, c.metadata, wanted))
        if after_key is not None:
            last_id, last_thread, last_ns = after_key
            query = query.where(
                or_(
                    c.checkpoint_id < last_id,
                    and_(
                        c.checkpoint_id == last_id,
                        or_(
                            c.thread_id < last_thread,
                            and_(c.thread_id == last_thread, c.checkpoint_ns < last_ns),
                        ),
                    ),
                )
            )
        query = query.order_by(
            c.checkpoint_id.desc(), c.thread_id.desc(), c.checkpoint_ns.desc()
        ).limit(count)
        rows = yield query, None
        next_key = None
        if len(rows) == count:
            last = rows[-1]
            next_key = (last.checkpoint_id, last.thread_id, last.checkpoint_ns)
        kept = [row for row in rows if sql.matches(row.metadata, wanted)]
        if not kept:
            return [], next_key
        tuples = yield from self._assemble(kept)
        return tuples, next_key

    def _values_and_writes_query(self, values_where: Any, writes_where: Any) -> Any:
        """Values and pending writes in one round trip: rows of kind 0 are values, 1 writes."""
        b, w = self.blobs.c, self.writes.c
        blob_query = select(
            literal_column("0").label("kind"),
            b.thread_id,
            b.checkpoint_ns,
            b.channel,
            b.version.label("key"),
            cast(null(), String).label("task_id"),
            cast(null(), Integer).label("idx"),
            cast(null(), String).label("task_path"),
            b.type,
            b.blob,
        ).where(values_where)
        write_query = select(
            literal_column("1"),
            w.thread_id,
            w.checkpoint_ns,
            w.channel,
            w.checkpoint_id,
            w.task_id,
            w.idx,
            w.task_path,
            w.type,
            w.blob,
        ).where(writes_where)
        return union_all(blob_query, write_query).order_by("kind", "task_path", "task_id", "idx")

    def _assemble(self, rows: Sequence[Any]) -> Generator[Step, Any, list[CheckpointTuple]]:
        """Checkpoint tuples of ``rows``, with their channel values and pending writes."""
        wanted_blobs: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        wanted_writes: dict[tuple[str, str], set[str]] = defaultdict(set)
        for row in rows:
            key = (row.thread_id, row.checkpoint_ns)
            versions = row.checkpoint.get("channel_versions") or {}
            wanted_blobs[key].update((ch, str(v)) for ch, v in versions.items())
            wanted_writes[key].add(row.checkpoint_id)
        values: dict[tuple[str, str, str, str], Any] = {}
        pending: dict[tuple[str, str, str], list[tuple[str, str, Any]]] = defaultdict(list)
        if len(wanted_writes) == 1:  # one thread and namespace: the statement built once
            [(thread_id, namespace)] = wanted_writes
            found = yield (
                self._values_and_writes,
                {
                    "thread_id": thread_id,
                    "ns": namespace,
                    "pairs": sorted(wanted_blobs[(thread_id, namespace)]),
                    "ids": sorted(wanted_writes[(thread_id, namespace)]),
                },
            )
        else:
            b = self.blobs.c
            blob_clauses = [
                and_(
                    b.thread_id == thread_id,
                    b.checkpoint_ns == namespace,
                    tuple_(b.channel, b.version).in_(sorted(pairs)),
                )
                for (thread_id, namespace), pairs in wanted_blobs.items()
                if pairs
            ]
            found = yield (
                self._values_and_writes_query(
                    or_(*blob_clauses) if blob_clauses else false(),
                    sql.keys_in(self.writes, wanted_writes, "checkpoint_id"),
                ),
                None,
            )
        for row in found:
            if row.kind == 0:
                if row.type != _EMPTY:
                    values[(row.thread_id, row.checkpoint_ns, row.channel, row.key)] = self._load(
                        row
                    )
            else:
                pending[(row.thread_id, row.checkpoint_ns, row.key)].append(
                    (row.task_id, row.channel, self._load(row))
                )
        return [self._tuple(row, values, pending) for row in rows]

    def _load(self, row: Any) -> Any:
        """The value of a blob or write row; `CorruptStateError` if it cannot be decoded."""
        try:
            return self.serde.loads_typed((row.type, row.blob))
        except Exception as exc:
            raise CorruptStateError(
                row.thread_id, f"channel {row.channel!r} ({row.type}): {exc}"
            ) from exc

    @staticmethod
    def _tuple(
        row: Any,
        values: Mapping[tuple[str, str, str, str], Any],
        pending: Mapping[tuple[str, str, str], list[tuple[str, str, Any]]],
    ) -> CheckpointTuple:
        thread_id, namespace = row.thread_id, row.checkpoint_ns
        checkpoint = dict(row.checkpoint)
        channel_values = {}
        for channel, version in (checkpoint.get("channel_versions") or {}).items():
            key = (thread_id, namespace, channel, str(version))
            if key in values:
                channel_values[channel] = values[key]
        checkpoint["channel_values"] = channel_values
        parent = None
        if row.parent_checkpoint_id is not None:
            parent = {
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": namespace,
                    "checkpoint_id": row.parent_checkpoint_id,
                }
            }
        return CheckpointTuple(
            config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": namespace,
                    "checkpoint_id": row.checkpoint_id,
                }
            },
            checkpoint=checkpoint,  # type: ignore[arg-type]
            metadata=dict(row.metadata),  # type: ignore[arg-type]
            parent_config=parent,  # type: ignore[arg-type]
            pending_writes=pending.get((thread_id, namespace, row.checkpoint_id), []),
        )
