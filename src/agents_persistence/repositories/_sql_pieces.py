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

    from agents_persistence._codec import Codec, Sealer

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

SEALED_STATE = "{}"
"""What ``state`` holds on a row whose head is sealed in ``sealed_state``."""

_META = ("version", "created_at", "updated_at", "expires_at", "state_bytes")


@dataclass(frozen=True, slots=True, eq=False)
class PieceStatements:
    """Statements on one pieces table (run after the head's, on dialects without `with_pieces`).

    Attributes:
        table: The pieces table.
        delete_all: Every piece of a thread (a full write, a delete).
        delete_some: The pieces named by the expanding ``drop`` (a delta).
        delete_one: The piece named ``key`` (run as executemany: a delta on a `Lean`
            connection, which runs compiled statements only).
        insert: One piece (run as executemany).
        insert_hex: `insert` with the body as hexadecimal text (``body_hex``), for drivers
            that cannot send bytes (aiomysql with PyMySQL 1.2).
        delete_orphans: Pieces of the expanding ``tids`` whose head is gone (a purge batch).
    """

    table: Table
    delete_all: Delete
    delete_some: Delete
    delete_one: Delete
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
        delete_one=delete(pieces).where(thread, p.piece == bindparam("key")),
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
    """A thread's live head alone: metadata, ``state`` (JSON), ``manifest``, ``sealed_state``."""
    c = table.c
    return select(*(c[name] for name in _META), state, c.manifest, c.sealed_state).where(
        c.namespace == bindparam("ns"), c.thread_id == bindparam("tid"), live
    )


def read_statement(
    table: Table, pieces: Table, live: ColumnElement[bool], state: ColumnElement[Any]
) -> CompoundSelect[Any]:
    """A thread's live head and every piece of the thread, in one ``UNION ALL``.

    Columns: ``piece`` (NULL on the head row), the head's metadata, ``state`` (the head as
    JSON text: ``state``), ``manifest``, ``body`` (the head row's ``sealed_state``). The head
    row comes first, so the column types (and their result processing) are the head's.
    """
    c, p = table.c, pieces.c
    head = select(
        type_coerce(null(), String()).label("piece"),
        *(c[name] for name in _META),
        state,
        c.manifest,
        type_coerce(c.sealed_state, LargeBinary()).label("body"),
    ).where(c.namespace == bindparam("ns"), c.thread_id == bindparam("tid"), live)
    parts = select(
        p.piece,
        *(null() for _ in _META),
        null(),
        null(),
        p.body,
    ).where(p.namespace == bindparam("ns"), p.thread_id == bindparam("tid"))
    return union_all(head, parts)


def head_values(thread_id: str, layout: Layout, sealer: Sealer | None) -> dict[str, Any]:
    """Bind values of the head of ``layout`` (with `write_params`' names, never a column's).

    With a ``sealer`` (a save with keys) the head is sealed into ``sealed``, ``state`` gets
    ``{}`` and the manifest is the redacted one; otherwise ``sealed`` is NULL. ``sealed_hex``
    is the same as hexadecimal text, for MySQL/MariaDB.
    """
    if sealer is None:
        return {
            "payload": layout.head.decode(),
            "manifest_json": layout.manifest.to_json(),
            "token": layout.manifest.token,
            "sealed": None,
            "sealed_hex": None,
        }
    sealed, manifest_json = sealer.head(thread_id, layout)
    return {
        "payload": SEALED_STATE,
        "manifest_json": manifest_json,
        "token": layout.manifest.token,
        "sealed": sealed,
        "sealed_hex": sealed.hex(),  # MySQL/MariaDB bind it as text (`_sql_statements`)
    }


def piece_params(
    thread_id: str, layout: Layout, sealer: Sealer | None
) -> tuple[list[str], list[bytes]]:
    """The keys and stored bodies (packed; sealed with a ``sealer``) of ``layout``'s pieces."""
    return list(layout.pieces), [
        piece_body(thread_id, key, body, sealer) for key, body in layout.pieces.items()
    ]


def piece_body(thread_id: str, key: str, body: bytes, sealer: Sealer | None) -> bytes:
    """A piece's body as stored: packed, and sealed with a ``sealer``."""
    return pack(body) if sealer is None else sealer.piece(thread_id, key, body)


@lru_cache(maxsize=1024)
def _parsed(text: str) -> Manifest:
    return Manifest.from_json("", text)


def _manifest(thread_id: str, text: str) -> Manifest:
    """The stored manifest ``text`` parsed (the recent ones once: loads repeat them)."""
    try:
        return _parsed(text)
    except CorruptStateError:
        return Manifest.from_json(thread_id, text)  # raises, naming the thread


def head_record(thread_id: str, row: Sequence[Any], codec: Codec) -> Record | None:
    """The `Record` of a processed `head_statement` row, or ``None`` if it names pieces.

    A head stored whole (no manifest) or whose manifest names no piece is the whole state:
    one statement read it. Otherwise the caller reads the head and its pieces together
    (`read_statement`). A sealed head, or any head read with keys, is opened by ``codec``.
    """
    *_, manifest_text, sealed = row
    if sealed is not None or codec.encrypts:
        if manifest_text is not None and _manifest(thread_id, manifest_text).pieced:
            return None
        return _opened(thread_id, row, sealed, {}, codec)
    if manifest_text is None:
        return _record(thread_id, row, None, row[5])
    manifest = _manifest(thread_id, manifest_text)
    if manifest.pieced:
        return None
    if not manifest.transcript and not manifest.maps:  # the head is the whole state's JSON
        return _record(thread_id, row, manifest, row[5])
    return _record(thread_id, row, manifest, assemble(thread_id, row[5], manifest, {}))


def read_record(
    thread_id: str,
    rows: Sequence[Any],
    process: Callable[[Sequence[Any]], list[tuple[Any, ...]]],
    codec: Codec,
) -> Record | None:
    """The `Record` of a `read_statement` result (whole state assembled), or ``None``.

    ``process`` applies the result processors of the head's column types to the head row. A
    sealed head, or any record read with keys, is opened by ``codec``.
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
    full = process([head])[0]
    processed = full[1:-1]  # the head's columns, as in `head_statement` (but sealed_state)
    sealed = full[-1]
    if sealed is not None or codec.encrypts:
        return _opened(thread_id, processed, sealed, bodies, codec)
    manifest_text = processed[-1]
    if manifest_text is None:
        return _record(thread_id, processed, None, processed[5])
    manifest = _manifest(thread_id, manifest_text)
    needed = manifest.keys()
    found = {key: unpack(thread_id, bytes(body)) for key, body in bodies.items() if key in needed}
    return _record(
        thread_id, processed, manifest, assemble(thread_id, processed[5], manifest, found)
    )


def _opened(
    thread_id: str, row: Sequence[Any], sealed: Any, bodies: dict[str, Any], codec: Codec
) -> Record:
    """The `Record` of a head's columns (as `head_statement`'s) and ``bodies``, opened.

    ``codec`` also says which keys sealed what was read (`Record.key_ids`).
    """
    manifest_text = row[6]
    manifest = None if manifest_text is None else _manifest(thread_id, manifest_text)
    head = row[5] if sealed is None else bytes(sealed)
    opened = codec.open(thread_id, head, manifest, bodies)
    return opened.apply(_record(thread_id, row, opened.manifest, opened.payload))


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
