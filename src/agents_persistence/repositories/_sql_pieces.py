"""The SQL store's pieces: statements on ``<table>_pieces`` and the rows of one read. No I/O.

A state is stored as a head row (the checkpoint table: ``state``, ``manifest``,
``manifest_token``) plus immutable pieces (`agents_persistence._layout`). A save writes the head
and, in the same transaction, removes the pieces the new version dropped (all of the thread's
on a full write) and inserts its new ones. A load reads the head alone (`head_statement`); only
when its manifest names pieces does it read the head and the thread's pieces again, in one
statement (``UNION ALL``, one snapshot), so it never assembles parts of two versions.

PostgreSQL runs each operation as one statement, the piece writes as data-modifying ``WITH``
clauses of the head's write (`with_pieces`): in autocommit that statement is the transaction,
and the pieces change only if the head was written. The other dialects run the piece
statements after the head's, in the operation's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Delete,
    Insert,
    LargeBinary,
    Select,
    String,
    Text,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    null,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects import postgresql

from agents_persistence._core import Record, as_utc
from agents_persistence._layout import Layout, Manifest, assemble, pack, unpack
from agents_persistence.errors import CorruptStateError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sqlalchemy import ColumnElement, CompoundSelect, Table, Update

__all__ = [
    "PieceStatements",
    "head_record",
    "head_statement",
    "head_values",
    "piece_params",
    "piece_statements",
    "read_record",
    "purge_with_pieces",
    "read_statement",
    "remove_with_pieces",
    "with_pieces",
]

_META = ("version", "created_at", "updated_at", "expires_at", "state_bytes")


@dataclass(frozen=True, slots=True, eq=False)
class PieceStatements:
    """Statements on one pieces table (run after the head's, on dialects without `with_pieces`).

    Attributes:
        table: The pieces table.
        delete_all: Every piece of a thread (a full write, a delete).
        delete_some: The pieces named by the expanding ``drop`` (a delta).
        insert: One piece (run as executemany).
        insert_hex: `insert` with the body as hexadecimal text (``body_hex``), for drivers
            that cannot send bytes (aiomysql with PyMySQL 1.2).
        delete_orphans: Pieces of the expanding ``tids`` whose head is gone (a purge batch).
    """

    table: Table
    delete_all: Delete
    delete_some: Delete
    insert: Insert
    insert_hex: Insert
    delete_orphans: Delete


def piece_statements(table: Table, pieces: Table) -> PieceStatements:
    """The statements of ``pieces``, the pieces table of ``table``."""
    p = pieces.c
    thread = and_(p.namespace == bindparam("ns"), p.thread_id == bindparam("tid"))
    head = table.c
    has_head = exists().where(head.namespace == p.namespace, head.thread_id == p.thread_id)
    return PieceStatements(
        table=pieces,
        delete_all=delete(pieces).where(thread),
        delete_some=delete(pieces).where(thread, p.piece.in_(bindparam("drop", expanding=True))),
        insert=insert(pieces).values(
            namespace=bindparam("ns"),
            thread_id=bindparam("tid"),
            piece=bindparam("key"),
            body=bindparam("body", type_=LargeBinary()),
        ),
        insert_hex=insert(pieces).values(
            namespace=bindparam("ns"),
            thread_id=bindparam("tid"),
            piece=bindparam("key"),
            body=func.unhex(bindparam("body_hex", type_=String())),
        ),
        delete_orphans=delete(pieces).where(
            p.namespace == bindparam("ns"),
            p.thread_id.in_(bindparam("tids", expanding=True)),
            ~has_head,
        ),
    )


def with_pieces(head_write: Insert | Update, pieces: Table, *, delta: bool) -> Select[Any]:
    """PostgreSQL: ``head_write`` with the piece writes as ``WITH`` clauses, one statement.

    ``head_write`` returns ``version, created_at`` for the row it wrote (nothing on a conflict
    or, for a delta, when the stored token moved); the pieces change only when it returned a
    row. A delta removes the pieces named by ``drop``, a full write every piece of the thread
    it could see (all committed before the statement began; a concurrent full write's pieces
    may stay behind, unused, until the thread's next full write or delete). Then ``keys`` /
    ``bodies`` (arrays) are inserted.
    """
    p = pieces.c
    head = head_write.cte("head_row")
    written = exists(select(head.c.version))
    thread = and_(p.namespace == bindparam("ns"), p.thread_id == bindparam("tid"))
    removed = delete(pieces).where(thread, written)
    if delta:
        removed = removed.where(p.piece == func.any(bindparam("drop", type_=_TEXTS)))
    new = func.unnest(bindparam("keys", type_=_TEXTS), bindparam("bodies", type_=_BLOBS))
    rows = new.table_valued("piece", "body").render_derived()
    added = insert(pieces).from_select(
        ["namespace", "thread_id", "piece", "body"],
        select(
            bindparam("ns", type_=String()),
            bindparam("tid", type_=String()),
            rows.c.piece,
            rows.c.body,
        ).where(written),
    )
    return select(head.c.version, head.c.created_at).add_cte(
        removed.cte("removed_pieces"), added.cte("added_pieces")
    )


_TEXTS = postgresql.ARRAY(Text())
_BLOBS = postgresql.ARRAY(LargeBinary())


def remove_with_pieces(table: Table, pieces: Table) -> Select[Any]:
    """PostgreSQL: delete a thread's head (live or not) and its pieces; one row, ``live``."""
    c, p = table.c, pieces.c
    gone = (
        delete(table)
        .where(c.namespace == bindparam("ns"), c.thread_id == bindparam("tid"))
        .returning(
            (c.expires_at.is_(None) | (c.expires_at > bindparam("now"))).label("live"),
        )
        .cte("removed_head")
    )
    removed = delete(pieces).where(
        p.namespace == bindparam("ns"),
        p.thread_id == bindparam("tid"),
        exists(select(gone.c.live)),
    )
    return select(gone.c.live).add_cte(removed.cte("removed_pieces"))


def purge_with_pieces(table: Table, pieces: Table, batch: int) -> Select[Any]:
    """PostgreSQL: delete up to ``batch`` expired heads and their pieces; one row, the count.

    The expiry is checked again on the row deleted, so a thread saved again meanwhile (live
    now) stays, with its pieces.
    """
    c, p = table.c, pieces.c
    expired = and_(
        c.namespace == bindparam("ns"),
        c.expires_at.is_not(None),
        c.expires_at <= bindparam("now"),
    )
    chosen = select(c.thread_id).where(expired).limit(batch).scalar_subquery()
    gone = delete(table).where(expired, c.thread_id.in_(chosen)).returning(c.thread_id)
    heads = gone.cte("purged_heads")
    removed = delete(pieces).where(
        p.namespace == bindparam("ns"), p.thread_id.in_(select(heads.c.thread_id))
    )
    return select(func.count()).select_from(heads).add_cte(removed.cte("purged_pieces"))


def head_statement(
    table: Table, live: ColumnElement[bool], state: ColumnElement[Any]
) -> Select[Any]:
    """A thread's live head alone: its metadata, ``state`` (JSON text) and ``manifest``."""
    c = table.c
    return select(*(c[name] for name in _META), state, c.manifest).where(
        c.namespace == bindparam("ns"), c.thread_id == bindparam("tid"), live
    )


def read_statement(
    table: Table, pieces: Table, live: ColumnElement[bool], state: ColumnElement[Any]
) -> CompoundSelect[Any]:
    """A thread's live head and every piece of the thread, in one ``UNION ALL``.

    Columns: ``piece`` (NULL on the head row), the head's metadata, ``state`` (the head as
    JSON text: ``state``), ``manifest``, ``body`` (NULL on the head row). The head row comes
    first, so the column types (and their result processing) are the head's.
    """
    c, p = table.c, pieces.c
    head = select(
        type_coerce(null(), String()).label("piece"),
        *(c[name] for name in _META),
        state,
        c.manifest,
        type_coerce(null(), LargeBinary()).label("body"),
    ).where(c.namespace == bindparam("ns"), c.thread_id == bindparam("tid"), live)
    parts = select(
        p.piece,
        *(null() for _ in _META),
        null(),
        null(),
        p.body,
    ).where(p.namespace == bindparam("ns"), p.thread_id == bindparam("tid"))
    return union_all(head, parts)


def head_values(layout: Layout) -> dict[str, Any]:
    """Bind values of the head of ``layout`` (with `write_params`' names, never a column's)."""
    return {
        "payload": layout.head.decode(),
        "manifest_json": layout.manifest.to_json(),
        "token": layout.manifest.token,
    }


def piece_params(layout: Layout) -> tuple[list[str], list[bytes]]:
    """The keys and packed bodies of the pieces ``layout`` writes."""
    return list(layout.pieces), [pack(body) for body in layout.pieces.values()]


@lru_cache(maxsize=1024)
def _parsed(text: str) -> Manifest:
    return Manifest.from_json("", text)


def _manifest(thread_id: str, text: str) -> Manifest:
    """The stored manifest ``text`` parsed (the recent ones once: loads repeat them)."""
    try:
        return _parsed(text)
    except CorruptStateError:
        return Manifest.from_json(thread_id, text)  # raises, naming the thread


def head_record(thread_id: str, row: Sequence[Any]) -> Record | None:
    """The `Record` of a processed `head_statement` row, or ``None`` if it names pieces.

    A head stored whole (no manifest) or whose manifest names no piece is the whole state:
    one statement read it. Otherwise the caller reads the head and its pieces together
    (`read_statement`).
    """
    *_, manifest_text = row
    if manifest_text is None:
        return _record(thread_id, row, None, row[5])
    manifest = _manifest(thread_id, manifest_text)
    if manifest.keys():
        return None
    return _record(thread_id, row, manifest, assemble(thread_id, row[5], manifest, {}))


def read_record(
    thread_id: str,
    rows: Sequence[Any],
    process: Callable[[Sequence[Any]], list[tuple[Any, ...]]],
) -> Record | None:
    """The `Record` of a `read_statement` result (whole state assembled), or ``None``.

    ``process`` applies the result processors of the head's column types to the head row.
    """
    head: Any = None
    bodies: dict[str, Any] = {}
    for row in rows:
        if row[0] is None:
            head = row
        else:
            bodies[row[0]] = row[-1]
    if head is None:
        return None
    processed = process([head])[0][1:-1]  # the head's columns, as in `head_statement`
    manifest_text = processed[-1]
    if manifest_text is None:
        return _record(thread_id, processed, None, processed[5])
    manifest = _manifest(thread_id, manifest_text)
    needed = manifest.keys()
    found = {key: unpack(thread_id, bytes(body)) for key, body in bodies.items() if key in needed}
    return _record(
        thread_id, processed, manifest, assemble(thread_id, processed[5], manifest, found)
    )


def _record(thread_id: str, head: Sequence[Any], manifest: Manifest | None, payload: Any) -> Record:
    """The `Record` of a head's columns (as `head_statement`'s) and its assembled payload."""
    version, created_at, updated_at, expires_at, size = head[:5]
    try:
        return Record(
            thread_id=thread_id,
            version=version,
            created_at=as_utc(created_at),
            updated_at=as_utc(updated_at),
            expires_at=None if expires_at is None else as_utc(expires_at),
            size=size,
            payload=payload,
            manifest=manifest,
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise CorruptStateError(thread_id, f"unreadable metadata: {exc}") from exc
