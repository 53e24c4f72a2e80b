"""The SQL store's pure layer: Core statements per table and dialect, and row mapping. No I/O.

Both twins (`SQLCheckpointer`, `AsyncSQLCheckpointer`) run exactly these statements through the
operations in `agents_persistence.repositories._sql_ops`. Statements are built once per (table,
schema, dialect) and cached, so SQLAlchemy's compiled cache serves every later execution.

A row holds a state's head; its transcript and large map entries are pieces in the pieces
table (`agents_persistence.repositories._sql_pieces`). With keys, the head is sealed into
``sealed_state`` (``state`` is then ``{}``) and every piece body is sealed; every head write
sets ``sealed_state``, NULL in clear. Two write strategies exist:

* ``upsert`` (PostgreSQL, SQLite): a delta save (the checkpointer knows the stored manifest)
  first tries ``UPDATE ... WHERE manifest_token = :base_token [AND version = :expected]
  RETURNING``; when the stored head moved on (nothing returned), the save is a full write: one
  ``INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING`` for unconditional and create-only
  saves, one ``UPDATE ... WHERE version = :expected RETURNING`` for conditional ones. The
  database serialises writers on the row, so the token and version checks and the increment
  are one atomic step. On PostgreSQL the piece writes are part of each statement (``WITH``
  clauses); on SQLite they follow it in the same transaction.
* ``lock`` (MySQL, MariaDB and any other dialect): one transaction that reads the row with
  ``SELECT ... FOR UPDATE`` (version, expiry and manifest token), checks the version, chooses
  delta or full write, then inserts or updates it and writes the pieces. On MySQL/MariaDB
  that transaction runs at READ COMMITTED: no gap locks, so concurrent first saves of
  different threads never block each other, and two first saves of one thread end in a
  duplicate key for the later one, which is retried and then sees the row. The head is
  written before the pieces, so such a retry starts with no piece written. On MariaDB 10.5+
  (``INSERT ... RETURNING``) an unconditional save is instead one ``INSERT ... ON DUPLICATE
  KEY UPDATE ... RETURNING`` (`Statements.upsert_any`) that writes the head and returns the
  stored manifest's fate: its token when the replaced head carried the save's base (the delta
  then applies), else a marked token, and the same transaction completes a full write
  (`Statements.set_manifest`, all pieces replaced). No version is checked there, and the server
  serialises writers on the row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import (
    CompoundSelect,
    Delete,
    Insert,
    LargeBinary,
    Select,
    String,
    Text,
    Update,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite

from agents_persistence._core import Record, WriteRequest, as_utc
from agents_persistence.errors import CorruptStateError
from agents_persistence.models.sql import checkpoint_table, pieces_table

from ._sql_compiled import Compiled, Statement
from ._sql_pieces import (
    PieceStatements,
    head_statement,
    head_values,
    piece_params,
    piece_statements,
    purge_with_pieces,
    read_statement,
    remove_with_pieces,
    with_pieces,
)

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import ColumnElement, Row, Table
    from sqlalchemy.engine import Dialect

    from agents_persistence._codec import Sealer
    from agents_persistence._layout import Layout

__all__ = [
    "PURGE_BATCH",
    "UNMATCHED",
    "Compiled",
    "Statement",
    "Statements",
    "WriteKind",
    "delta_allowed",
    "whole_params",
    "record_from_row",
    "statements",
    "write_kind",
    "write_params",
    "written_record",
]

PURGE_BATCH = 1000
"""Rows one purge statement deletes at most; each batch is its own short transaction."""

WriteKind = Literal["any", "create", "match"]
"""``any``: expected_version None; ``create``: 0; ``match``: a version n > 0."""

_UPSERT_DIALECTS = ("postgresql", "sqlite")
_MYSQL_DIALECTS = ("mysql", "mariadb")
_META = ("thread_id", "version", "created_at", "updated_at", "expires_at", "state_bytes")


def write_kind(request: WriteRequest) -> WriteKind:
    """Which conditional write ``request`` asks for."""
    if request.expected_version is None:
        return "any"
    return "create" if request.expected_version == 0 else "match"


def delta_allowed(request: WriteRequest) -> bool:
    """Whether ``request`` may be tried as a delta (a base, and nothing restored or created)."""
    return (
        request.layout.base is not None
        and request.version is None
        and request.created_at is None
        and request.expected_version != 0
    )


def write_params(
    namespace: str,
    request: WriteRequest,
    layout: Layout,
    *,
    arrays: bool,
    sealer: Sealer | None = None,
) -> dict[str, Any]:
    """Bind values of a write of ``layout``.

    The row as it is when the thread is new (or at ``expected``), the head and its manifest
    and, with ``arrays`` (PostgreSQL, whose statement writes the pieces too), the pieces as
    ``keys`` / ``bodies`` and ``drop``.

    No name equals a column name: SQLAlchemy would add such parameters to an UPDATE's SET.
    """
    params = _row_params(namespace, request)
    params.update(head_values(request.thread_id, layout, sealer))
    params["base_token"] = None if layout.base is None else layout.base.token
    if arrays:
        params["keys"], params["bodies"] = piece_params(request.thread_id, layout, sealer)
        params["drop"] = list(layout.drop)
    return params


def whole_params(namespace: str, request: WriteRequest, *, arrays: bool) -> dict[str, Any]:
    """`write_params` of a save written whole (`Statements.whole`): no manifest, no pieces."""
    params = _row_params(namespace, request)
    params.update(
        payload=request.payload,
        manifest_json=None,
        token=None,
        base_token=None,
        sealed=None,
        sealed_hex=None,
    )
    if arrays:
        params.update(keys=[], bodies=[], drop=[])
    return params


def _row_params(namespace: str, request: WriteRequest) -> dict[str, Any]:
    """The bind values every write has, whatever it stores: the thread, times and versions."""
    expected = request.expected_version
    return {
        "ns": namespace,
        "tid": request.thread_id,
        "size": request.size,
        # A "match" write only ever replaces version `expected`, so its result is known now.
        "new_version": request.next_version(expected or None),
        "new_created_at": request.created_at or request.now,
        "now": request.now,
        "new_expires_at": request.expires_at,
        "expected": expected,
    }


def written_record(
    request: WriteRequest,
    layout: Layout | None,
    version: int,
    created_at: datetime,
    written: int | None = None,
) -> Record:
    """The record of a completed write (``updated_at`` and expiry come from the request).

    ``layout`` is ``None`` for a save written whole (no manifest), which sent ``written``
    bytes; otherwise ``written`` defaults to what the layout sent.
    """
    if written is None:
        written = 0 if layout is None else layout.written
    return Record(
        thread_id=request.thread_id,
        version=version,
        created_at=as_utc(created_at),
        updated_at=request.now,
        expires_at=request.expires_at,
        size=request.size,
        manifest=None if layout is None else layout.manifest,
        written=written,
    )


def record_from_row(row: Row[Any], *, payload: bool) -> Record:
    """A `Record` from a ``read`` or ``page`` row; unreadable column values are corruption."""
    try:
        return Record(
            thread_id=row.thread_id,
            version=row.version,
            created_at=as_utc(row.created_at),
            updated_at=as_utc(row.updated_at),
            expires_at=None if row.expires_at is None else as_utc(row.expires_at),
            size=row.state_bytes,
            payload=row.state if payload else None,
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise CorruptStateError(str(row.thread_id), f"unreadable metadata: {exc}") from exc


@dataclass(frozen=True, slots=True, eq=False)
class Statements:
    """Every statement the store runs on one table, for one dialect.

    Attributes:
        table: The mapped table.
        dialect_name: The SQLAlchemy dialect name the statements are built for.
        strategy: ``upsert`` or ``lock`` (see the module docstring).
        autocommit: Run each operation in autocommit mode (PostgreSQL). Every operation
            that must be atomic is a single statement there (`combined`), and psycopg would
            otherwise spend two extra round trips per call on ``BEGIN`` and ``COMMIT``.
        combined: The piece writes are ``WITH`` clauses of the head's statements, and a
            delete or purge is one statement (PostgreSQL).
        whole: Saves write the whole state in ``state`` (``manifest`` NULL, no pieces), as
            before the layout: the table is shared with a service that reads ``state`` whole
            (adopted from the Rust SDK, `agents_persistence.rust.adopt_rust_table`).
        pieces: The statements on the pieces table (run after the head's when not
            `combined`).
        head: The live head alone, its state as JSON text (a load's one statement when the
            head's manifest names no pieces).
        read: The live head with its state as JSON text, and the thread's pieces.
        live_version: The live version only (what a conflict reports).
        page_first: The first page of a listing, newest first.
        page_after: A later page, strictly after a keyset position.
        remove_live: Delete the row if it is live.
        remove_expired: Delete the row if it has expired (clears a leftover; a row saved
            again meanwhile is live and stays).
        remove: `combined`: delete the row and its pieces, returning whether it was live.
        purge: `combined`: delete up to `PURGE_BATCH` expired rows of the namespace and
            their pieces, returning how many; otherwise select up to `PURGE_BATCH` expired
            thread ids (locked where the dialect can), then `purge_rows` and
            `PieceStatements.delete_orphans` delete them.
        purge_rows: Delete the rows of the expanding ``tids`` that are still expired.
        lock_isolation: ``lock`` strategy: SQL that sets the isolation of the next transaction
            (MySQL/MariaDB: READ COMMITTED, so that locking a missing row takes no gap lock;
            under REPEATABLE READ, first saves of neighbouring new threads deadlock each other).
        lock_row: ``lock`` strategy: the row's version, timestamps and manifest token, locked.
        insert_row: ``lock`` strategy: insert the row.
        update_row: ``lock`` strategy: overwrite the row.
        upsert_any: ``lock`` strategy on MySQL/MariaDB: an unconditional save (no expected
            version, nothing restored) in one ``INSERT ... ON DUPLICATE KEY UPDATE ...
            RETURNING version, created_at, manifest_token``, for servers with ``INSERT ...
            RETURNING`` (MariaDB 10.5+); ``None`` for other dialects. The token returned is
            the save's own when the row replaced was live and carried ``base_token``, else
            `UNMATCHED` followed by it (a new row included).
        set_manifest: Overwrite the row's manifest, token and sealed head (completes a full
            write after `upsert_any`).
    """

    table: Table
    dialect_name: str
    strategy: Literal["upsert", "lock"]
    autocommit: bool
    combined: bool
    whole: bool
    pieces: PieceStatements
    head: Select[Any]
    read: CompoundSelect[Any]
    live_version: Select[Any]
    page_first: Select[Any]
    page_after: Select[Any]
    remove_live: Delete
    remove_expired: Delete
    remove: Select[Any] | None
    purge: Select[Any]
    purge_rows: Delete | None
    lock_isolation: str | None
    lock_row: Select[Any]
    insert_row: Insert
    update_row: Update
    upsert_any: Insert | None
    set_manifest: Update
    _writes: dict[tuple[Any, ...], Insert | Update | Select[Any]] = field(
        default_factory=dict, repr=False
    )
    _compiled: dict[tuple[Any, ...], Compiled] = field(default_factory=dict, repr=False)

    def compiled(
        self,
        key: object,
        statement: Statement,
        dialect: Dialect,
    ) -> Compiled:
        """``statement`` (cached under ``key``) compiled for ``dialect``'s driver, built once."""
        slot = (key, type(dialect), dialect.name, dialect.paramstyle, dialect.server_version_info)
        found = self._compiled.get(slot)
        if found is None:
            found = self._compiled[slot] = Compiled(statement, dialect)
        return found

    def write(self, request: WriteRequest) -> Insert | Update | Select[Any]:
        """``upsert`` strategy: the statement that writes ``request``'s head as a full write.

        A restore (``request.version`` / ``request.created_at`` set) overrides the computed
        version and creation time; there are a handful of variants, each built once.
        """
        key = (write_kind(request), request.version is not None, request.created_at is not None)
        found = self._writes.get(key)
        if found is None:
            head = _upsert(self, *key)
            found = self._writes[key] = (
                with_pieces(head, self.pieces.table, delta=False) if self.combined else head
            )
        return found

    def delta_combined(self, layout: Layout) -> bool:
        """Whether the delta of ``layout`` writes its pieces in the head's statement.

        Only on a `combined` dialect, and only when the delta adds or removes a piece.
        """
        return self.combined and bool(layout.pieces or layout.drop)

    def delta(self, request: WriteRequest) -> Insert | Update | Select[Any]:
        """``upsert`` strategy: the statement that writes ``request`` as a delta.

        Only over a stored head that still carries ``base_token`` (and ``expected``); it
        returns nothing otherwise. A delta that adds and removes no piece (a small state's
        save) is the head's ``UPDATE`` alone, on every dialect.
        """
        kind = write_kind(request)
        combined = self.delta_combined(request.layout)
        key = ("delta", kind, combined)
        found = self._writes.get(key)
        if found is None:
            head = _delta(self, kind)
            found = self._writes[key] = (
                with_pieces(head, self.pieces.table, delta=True) if combined else head
            )
        return found


@cache
def statements(
    table_name: str, schema: str | None, dialect_name: str, whole: bool = False
) -> Statements:
    """The statements of ``schema.table_name`` for ``dialect_name`` (built once, then cached).

    ``whole``: the table is shared with a service that reads ``state`` as the whole state (a
    table adopted from the Rust SDK): saves write whole states there (see `Statements.whole`).
    """
    table = checkpoint_table(table_name, schema)
    pieces = pieces_table(table_name, schema)
    combined = dialect_name == "postgresql"
    c = table.c
    key = and_(c.namespace == bindparam("ns"), c.thread_id == bindparam("tid"))
    live = or_(c.expires_at.is_(None), c.expires_at > bindparam("now"))
    page_first = (
        select(*(c[name] for name in _META))
        .where(c.namespace == bindparam("ns"), live)
        .order_by(c.updated_at.desc(), c.thread_id.desc())
        .limit(bindparam("count"))
    )
    # Keyset "(updated_at, thread_id) < (:at, :tid)", spelled so that every dialect can use
    # the (namespace, updated_at, thread_id) index as a range on updated_at.
    after = and_(
        c.updated_at <= bindparam("after_at"),
        or_(c.updated_at < bindparam("after_at"), c.thread_id < bindparam("after_tid")),
    )
    expired = and_(
        c.namespace == bindparam("ns"),
        c.expires_at.is_not(None),
        c.expires_at <= bindparam("now"),
    )
    purge_rows = None
    if combined:
        purge = purge_with_pieces(table, pieces, PURGE_BATCH)
    else:
        purge = select(c.thread_id).where(expired).limit(PURGE_BATCH).with_for_update()
        purge_rows = delete(table).where(
            expired, c.thread_id.in_(bindparam("tids", expanding=True))
        )
    row = {
        "state": _state_bind(table, dialect_name),
        "state_bytes": bindparam("size"),
        "version": bindparam("new_version"),
        "created_at": bindparam("new_created_at"),
        "updated_at": bindparam("now"),
        "expires_at": bindparam("new_expires_at"),
        **_manifest_binds(dialect_name),
    }
    return Statements(
        table=table,
        dialect_name=dialect_name,
        strategy="upsert" if dialect_name in _UPSERT_DIALECTS else "lock",
        autocommit=dialect_name == "postgresql",
        combined=combined,
        whole=whole,
        pieces=piece_statements(table, pieces),
        head=head_statement(table, live, _payload_column(table, dialect_name)),
        read=read_statement(table, pieces, live, _payload_column(table, dialect_name)),
        live_version=select(c.version).where(key, live),
        page_first=page_first,
        page_after=page_first.where(after),
        remove_live=delete(table).where(key, live),
        remove_expired=delete(table).where(
            key, c.expires_at.is_not(None), c.expires_at <= bindparam("now")
        ),
        remove=remove_with_pieces(table, pieces) if combined else None,
        purge=purge,
        purge_rows=purge_rows,
        lock_isolation="SET TRANSACTION ISOLATION LEVEL READ COMMITTED"
        if dialect_name in _MYSQL_DIALECTS
        else None,
        lock_row=select(c.version, c.created_at, c.expires_at, c.manifest_token)
        .where(key)
        .with_for_update(),
        insert_row=insert(table).values(
            namespace=bindparam("ns"), thread_id=bindparam("tid"), **row
        ),
        update_row=update(table).where(key).values(**row),
        upsert_any=_upsert_any(table) if dialect_name in _MYSQL_DIALECTS else None,
        set_manifest=update(table).where(key).values(**_manifest_binds(dialect_name)),
    )


UNMATCHED = "!"
"""Prefix of the token `Statements.upsert_any` returns when the save's base was not stored."""


def _upsert_any(table: Table) -> Insert:
    """MySQL/MariaDB: the unconditional save as one statement (see `Statements.upsert_any`).

    MySQL applies ``ON DUPLICATE KEY UPDATE`` assignments left to right, each seeing the ones
    before: the token is compared first, and ``created_at`` and ``version`` read the stored
    ``expires_at`` (the row counts as absent when it expired at this save's time) before it is
    overwritten last.
    """
    c = table.c
    unmatched = func.concat(UNMATCHED, bindparam("token"))
    new = mysql.insert(table).values(
        namespace=bindparam("ns"),
        thread_id=bindparam("tid"),
        state=bindparam("payload", type_=Text()),
        state_bytes=bindparam("size"),
        version=bindparam("new_version"),
        created_at=bindparam("new_created_at"),
        updated_at=bindparam("now"),
        expires_at=bindparam("new_expires_at"),
        manifest=bindparam("manifest_json"),
        manifest_token=unmatched,
        sealed_state=_sealed_bind("mysql"),
    )
    incoming = new.inserted
    stale = and_(c.expires_at.is_not(None), c.expires_at <= incoming.updated_at)
    carried = and_(c.manifest_token == bindparam("base_token"), ~stale)
    return new.on_duplicate_key_update(
        [
            ("manifest_token", case((carried, bindparam("token")), else_=unmatched)),
            ("created_at", case((stale, incoming.created_at), else_=c.created_at)),
            ("version", case((stale, incoming.version), else_=c.version + 1)),
            ("state", incoming.state),
            ("state_bytes", incoming.state_bytes),
            ("manifest", incoming.manifest),
            ("sealed_state", incoming.sealed_state),
            ("updated_at", incoming.updated_at),
            ("expires_at", incoming.expires_at),
        ]
    ).returning(c.version, c.created_at, c.manifest_token)


def _manifest_binds(dialect_name: str) -> dict[str, Any]:
    # The sealed head goes with the manifest: NULL for a head in clear in ``state``.
    return {
        "manifest": bindparam("manifest_json"),
        "manifest_token": bindparam("token"),
        "sealed_state": _sealed_bind(dialect_name),
    }


def _sealed_bind(dialect_name: str) -> ColumnElement[Any]:
    # MySQL/MariaDB: as hexadecimal text decoded by the server, as the pieces' bodies are for
    # aiomysql (`PieceStatements.insert_hex`); one statement then serves both drivers.
    if dialect_name in _MYSQL_DIALECTS:
        return func.unhex(bindparam("sealed_hex", type_=String()))
    return bindparam("sealed", type_=LargeBinary())


def _delta(stmts: Statements, kind: WriteKind) -> Update:
    """The head of a delta save: only over the stored head whose token is ``base_token``."""
    table = stmts.table
    c = table.c
    live = or_(c.expires_at.is_(None), c.expires_at > bindparam("now"))
    where = [
        c.namespace == bindparam("ns"),
        c.thread_id == bindparam("tid"),
        c.manifest_token == bindparam("base_token"),
        live,
    ]
    if kind == "match":
        where.append(c.version == bindparam("expected"))
    return (
        update(table)
        .where(*where)
        .values(
            state=_state_bind(table, stmts.dialect_name),
            state_bytes=bindparam("size"),
            version=bindparam("new_version") if kind == "match" else c.version + 1,
            updated_at=bindparam("now"),
            expires_at=bindparam("new_expires_at"),
            **_manifest_binds(stmts.dialect_name),
        )
        .returning(c.version, c.created_at)
    )


def _state_bind(table: Table, dialect_name: str) -> ColumnElement[Any]:
    # The payload is already JSON text: bind it as text so the JSON type does not encode it a
    # second time; PostgreSQL casts the text to the column's type (JSONB) server side.
    text = bindparam("payload", type_=Text())
    if dialect_name == "postgresql":
        return cast(text, table.c.state.type)
    return text


def _payload_column(table: Table, dialect_name: str) -> ColumnElement[Any]:
    # Read the JSON text and give it to pydantic's model_validate_json, which beats json.loads
    # followed by model_validate; PostgreSQL renders JSONB as text server side.
    if dialect_name == "postgresql":
        return cast(table.c.state, Text()).label("state")
    return type_coerce(table.c.state, Text()).label("state")


def _upsert(
    stmts: Statements, kind: WriteKind, version_given: bool, created_given: bool
) -> Insert | Update:
    table = stmts.table
    c = table.c
    if kind == "match":
        values: dict[str, Any] = {
            "state": _state_bind(table, stmts.dialect_name),
            "state_bytes": bindparam("size"),
            "version": bindparam("new_version"),
            "updated_at": bindparam("now"),
            "expires_at": bindparam("new_expires_at"),
            **_manifest_binds(stmts.dialect_name),
        }
        if created_given:
            values["created_at"] = bindparam("new_created_at")
        live = or_(c.expires_at.is_(None), c.expires_at > bindparam("now"))
        return (
            update(table)
            .where(
                c.namespace == bindparam("ns"),
                c.thread_id == bindparam("tid"),
                c.version == bindparam("expected"),
                live,
            )
            .values(**values)
            .returning(c.version, c.created_at)
        )
    dialect_insert = postgresql.insert if stmts.dialect_name == "postgresql" else sqlite.insert
    new = dialect_insert(table).values(
        namespace=bindparam("ns"),
        thread_id=bindparam("tid"),
        state=_state_bind(table, stmts.dialect_name),
        state_bytes=bindparam("size"),
        version=bindparam("new_version"),
        created_at=bindparam("new_created_at"),
        updated_at=bindparam("now"),
        expires_at=bindparam("new_expires_at"),
        **_manifest_binds(stmts.dialect_name),
    )
    incoming = new.excluded
    # The stored row counts as absent when it expired at this save's time: start it again.
    stale = and_(c.expires_at.is_not(None), c.expires_at <= incoming.updated_at)
    changes = {
        "state": incoming.state,
        "state_bytes": incoming.state_bytes,
        "version": incoming.version
        if version_given
        else case((stale, incoming.version), else_=c.version + 1),
        "created_at": incoming.created_at
        if created_given
        else case((stale, incoming.created_at), else_=c.created_at),
        "updated_at": incoming.updated_at,
        "expires_at": incoming.expires_at,
        "manifest": incoming.manifest,
        "manifest_token": incoming.manifest_token,
        "sealed_state": incoming.sealed_state,
    }
    return new.on_conflict_do_update(
        index_elements=[c.namespace, c.thread_id],
        set_=changes,
        where=stale if kind == "create" else None,
    ).returning(c.version, c.created_at)
