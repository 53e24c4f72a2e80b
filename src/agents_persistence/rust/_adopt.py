"""Adopt a Rust SDK PostgreSQL checkpoint table in place: no copy, the Rust service keeps writing.

The Rust table ``(thread_id TEXT PRIMARY KEY, state JSONB, created_at, updated_at)`` is altered,
in one transaction, into the library's table as of revision `ADOPTED_REVISION`; the library's
version table is stamped there and its normal upgrade then runs to head, so later revisions
apply as usual. Before the transaction commits, the Rust service's own statements are run
against the result (inside a savepoint that is rolled back); if the upgraded table cannot serve
them, nothing is committed and `AdoptionRefusedError` says why.

What keeps both writers correct on the adopted table:

- The columns the Rust ``INSERT (thread_id, state, created_at, updated_at)`` leaves out have
  server defaults: ``namespace`` (the adopted namespace), ``version`` 1, ``state_bytes`` -1 (a
  marker the trigger replaces), ``expires_at`` NULL.
- The primary key becomes ``(namespace, thread_id)``; a unique index on ``thread_id`` alone
  keeps the Rust ``ON CONFLICT (thread_id)`` working, and a CHECK constraint pins the table to
  the adopted namespace (a save in another namespace is refused by the database).
- A ``BEFORE INSERT OR UPDATE`` trigger recognises the Rust writes (an insert without
  ``state_bytes``; an update that leaves ``version`` as it was and sets ``updated_at`` to the
  transaction's ``now()``, which the library never does: its timestamps are bound values)
  and moves ``version`` by one, sets ``state_bytes`` and clears ``expires_at`` (the Rust table
  has no TTL). So ``expected_version`` sees every Rust write: no lost update.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError

from agents_persistence._core import DEFAULT_NAMESPACE, validate_namespace
from agents_persistence.errors import (
    BackendUnavailableError,
    CheckpointerError,
    ConfigurationError,
)
from agents_persistence.migrations import (
    _connect,
    _translated,
    current_revision,
    head_revision,
    upgrade_connection,
)
from agents_persistence.migrations._app import refuse_nested_run
from agents_persistence.migrations._filters import (
    rust_compatibility_index_names as compatibility_index_names,
)
from agents_persistence.migrations._settings import MigrationTarget, packaged_scripts
from agents_persistence.models.sql import DEFAULT_TABLE_NAME
from agents_persistence.snapshot import (
    AgentMessage,
    AgentStateSnapshot,
    HumanInLoopInterrupt,
    TodoItem,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "ADOPTED_REVISION",
    "AdoptionRefusedError",
    "AdoptionReport",
    "adopt_rust_table",
    "compatibility_index_names",
    "rust_statements",
    "verify_rust_writes",
]

_LOCK_NOT_AVAILABLE = "55P03"

ADOPTED_REVISION = "4c1d2a9e7b30"
"""The library revision whose schema the adoption's ALTERs produce; stamped, then upgraded."""

_RUST_COLUMNS = {
    "thread_id": "text",
    "state": "jsonb",
    "created_at": "timestamp with time zone",
    "updated_at": "timestamp with time zone",
}


class AdoptionRefusedError(CheckpointerError):
    """The table cannot be adopted (or no longer serves the Rust service); the message says why.

    Nothing was changed.
    """


@dataclass(frozen=True, slots=True)
class AdoptionReport:
    """What an adoption did.

    Attributes:
        table: The adopted table (``schema.table`` or ``table``).
        namespace: The namespace every existing and future Rust row belongs to.
        threads: Rows adopted.
        revision: The library revision the table is at now (head).
    """

    table: str
    namespace: str
    threads: int
    revision: str


def _names(target: MigrationTarget) -> dict[str, str]:
    table = target.table_name
    quoted = f'"{table}"' if target.schema is None else f'"{target.schema}"."{table}"'
    prefix = "" if target.schema is None else f'"{target.schema}".'
    return {
        "qualified": quoted,
        "table": table,
        "function": f'{prefix}"{table}_rust_writes"',
        "trigger": f'"{table}_rust_writes"',
        "unique": f'"{compatibility_index_names(table)[1]}"',
        "check": f'"ck_{table}_rust_namespace"',
        "pk": f'"pk_{table}"',
        "ix_updated": f'"ix_{table}_namespace_updated_at_thread_id"',
        "ix_expires": f'"ix_{table}_namespace_expires_at"',
    }


def rust_statements(
    table_name: str = DEFAULT_TABLE_NAME, schema: str | None = None
) -> dict[str, str]:
    """The statements of the Rust PostgreSQL checkpointer: ``save``, ``load``, ``delete``, ``list``.

    As the Rust source writes them, with ``$1``/``$2`` as ``:thread_id``/``:state``. Used to
    prove an adopted table still serves the Rust service.
    """
    table = MigrationTarget(table_name, schema).qualified_name
    return {
        "save": (
            f"INSERT INTO {table} (thread_id, state, created_at, updated_at)"
            " VALUES (:thread_id, :state, NOW(), NOW())"
            " ON CONFLICT (thread_id) DO UPDATE SET state = :state, updated_at = NOW()"
        ),
        "load": f"SELECT state FROM {table} WHERE thread_id = :thread_id",
        "delete": f"DELETE FROM {table} WHERE thread_id = :thread_id",
        "list": f"SELECT thread_id FROM {table} ORDER BY updated_at DESC",
    }


_TRIGGER_FUNCTION = """
CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- The library always sets state_bytes; the Rust INSERT leaves the -1 default.
        IF NEW.state_bytes < 0 THEN
            NEW.state_bytes := octet_length(NEW.state::text);
        END IF;
    ELSIF NEW.version = OLD.version AND NEW.updated_at = now() THEN
        -- The Rust upsert's DO UPDATE: it sets state and updated_at = NOW() only.
        IF OLD.expires_at IS NOT NULL AND OLD.expires_at <= now() THEN
            NEW.version := 1;  -- the library counts an expired thread as gone
            NEW.created_at := now();
        ELSE
            NEW.version := OLD.version + 1;
        END IF;
        NEW.state_bytes := octet_length(NEW.state::text);
        NEW.expires_at := NULL;
    END IF;
    RETURN NEW;
END
$$
"""


def _refuse(target: MigrationTarget, why: str) -> AdoptionRefusedError:
    return AdoptionRefusedError(f"cannot adopt {target.qualified_name}: {why}; nothing was changed")


def _check_layout(conn: Connection, target: MigrationTarget) -> int:
    """Refuse anything but an unadopted Rust table; return its row count."""
    schema = target.schema
    rows = conn.execute(
        text(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = :table AND table_schema = COALESCE(:schema, current_schema())"
        ),
        {"table": target.table_name, "schema": schema},
    ).all()
    if not rows:
        raise _refuse(target, "no such table")
    columns: dict[str, str] = {str(name): str(kind) for name, kind in rows}
    if current_revision(conn, table_name=target.table_name, schema=schema) is not None:
        raise _refuse(
            target,
            "it is already under the library's migrations (run `agents-persistence db upgrade`"
            " to bring it to head)",
        )
    if columns != _RUST_COLUMNS:
        found = ", ".join(f"{name} {kind}" for name, kind in sorted(columns.items()))
        raise _refuse(
            target,
            f"its columns ({found}) are not the Rust SDK's (thread_id text, state jsonb,"
            " created_at and updated_at timestamptz)",
        )
    bad = (
        conn.execute(
            text(
                f"SELECT thread_id FROM {_names(target)['qualified']}"
                " WHERE length(thread_id) NOT BETWEEN 1 AND 256 OR thread_id ~ '[[:cntrl:]]'"
                " LIMIT 5"
            )
        )
        .scalars()
        .all()
    )
    if bad:
        shown = ", ".join(repr(value[:80]) for value in bad)
        raise _refuse(
            target,
            f"thread ids the library cannot hold (1 to 256 characters, no control characters):"
            f" {shown}; copy the others with `agents-persistence copy --from rust+postgresql://...`"
            " or fix these rows first",
        )
    count: int = conn.execute(
        text(f"SELECT count(*) FROM {_names(target)['qualified']}")
    ).scalar_one()
    return count


def _alter(conn: Connection, target: MigrationTarget, namespace: str) -> None:
    """Turn the Rust table into the library's table as of `ADOPTED_REVISION`, plus the bridge."""
    n = _names(target)
    table = n["qualified"]
    # The namespace matches [A-Za-z0-9_.:-]{1,64}: no quote can appear in the literal.
    literal = f"'{namespace}'"
    pkey = conn.execute(
        text(
            "SELECT conname FROM pg_constraint WHERE conrelid = CAST(:table AS regclass)"
            " AND contype = 'p'"
        ),
        {"table": table},
    ).scalar_one_or_none()
    statements = [
        f"ALTER TABLE {table}"
        f" ADD COLUMN namespace VARCHAR(64) NOT NULL DEFAULT {literal},"
        " ADD COLUMN state_bytes INTEGER NOT NULL DEFAULT -1,"
        " ADD COLUMN version INTEGER NOT NULL DEFAULT 1,"
        " ADD COLUMN expires_at TIMESTAMP WITH TIME ZONE,"
        " ALTER COLUMN thread_id TYPE VARCHAR(256)",
        f"UPDATE {table} SET state_bytes = octet_length(state::text)",
    ]
    if pkey is not None:
        statements.append(f'ALTER TABLE {table} DROP CONSTRAINT "{pkey}"')
    statements += [
        f"ALTER TABLE {table} ADD CONSTRAINT {n['pk']} PRIMARY KEY (namespace, thread_id)",
        f"CREATE UNIQUE INDEX {n['unique']} ON {table} (thread_id)",
        f"ALTER TABLE {table} ADD CONSTRAINT {n['check']} CHECK (namespace = {literal})",
        f"CREATE INDEX {n['ix_updated']} ON {table} (namespace, updated_at, thread_id)",
        f"CREATE INDEX {n['ix_expires']} ON {table} (namespace, expires_at)",
        _TRIGGER_FUNCTION.format(function=n["function"]),
        f"CREATE TRIGGER {n['trigger']} BEFORE INSERT OR UPDATE ON {table}"
        f" FOR EACH ROW EXECUTE FUNCTION {n['function']}()",
    ]
    for statement in statements:
        conn.execute(text(statement))


_RUST_FIELDS = ("todos", "files", "scratchpad", "pending_interrupts")
"""The fields of the Rust ``AgentStateSnapshot``: what the Rust service reads of a row."""

_PROBE_STATES: tuple[dict[str, Any], ...] = (
    {"todos": [], "files": {}, "scratchpad": {}},
    {"todos": [], "files": {"probe.txt": "second write"}, "scratchpad": {}},
)


def _probe(conn: Connection, target: MigrationTarget, namespace: str | None) -> None:
    """Run the Rust service's statements on the table inside a savepoint, then undo them.

    Raises:
        AdoptionRefusedError: One of them fails, or the row it writes does not carry the
            namespace (``namespace``, or the column default when ``None``), a version that
            moves with each write, a size, and no expiry.
    """
    sql = rust_statements(target.table_name, target.schema)
    probe = f"agents-persistence-adoption-probe-{uuid.uuid4().hex}"
    save = text(sql["save"]).bindparams(bindparam("state", type_=JSONB))
    check = text(
        f"SELECT namespace, version, state_bytes, expires_at FROM {_names(target)['qualified']}"
        " WHERE thread_id = :thread_id"
    )
    where = target.qualified_name
    savepoint = conn.begin_nested()
    try:
        conn.execute(save, {"thread_id": probe, "state": _PROBE_STATES[0]})
        first = conn.execute(check, {"thread_id": probe}).one()
        conn.execute(save, {"thread_id": probe, "state": _PROBE_STATES[1]})
        second = conn.execute(check, {"thread_id": probe}).one()
        loaded = conn.execute(text(sql["load"]), {"thread_id": probe}).scalar_one()
        conn.execute(text(sql["list"])).first()
        deleted = conn.execute(text(sql["delete"]), {"thread_id": probe}).rowcount
    except DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0]
        raise AdoptionRefusedError(
            f"the Rust service's own statements fail on {where} at the library's head revision"
            f" ({detail}): both cannot be served by this version of the library; copy the"
            " threads instead (`agents-persistence copy --from rust+postgresql://...`)"
        ) from exc
    finally:
        savepoint.rollback()
    expected_namespace = first[0] if namespace is None else namespace
    _probe_library_write(conn, target, expected_namespace, probe)
    expected = ((expected_namespace, 1, None), (expected_namespace, 2, None))
    got = ((first[0], first[1], first[3]), (second[0], second[1], second[3]))
    if got != expected or first[2] <= 0 or loaded != _PROBE_STATES[1] or deleted != 1:
        raise AdoptionRefusedError(
            f"a Rust write on {where} no longer keeps the library's columns right at its head"
            f" revision ((namespace, version, expires_at) of two writes: {got}, expected"
            f" {expected}): both cannot be served by this version of the library; copy the"
            " threads instead"
        )


def _probe_state() -> AgentStateSnapshot:
    """A state with every part the Rust snapshot has, a large file and a transcript."""
    return AgentStateSnapshot(
        todos=[TodoItem(content="probe", status="in_progress")],
        files={"small.txt": "s", "large.txt": "x" * 50_000},
        scratchpad={"n": 1, "nested": {"a": [1, 2.5, None, True]}},
        pending_interrupts=[
            HumanInLoopInterrupt(
                tool_name="probe",
                tool_args={"a": 1},
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
                call_id="probe-call",
            )
        ],
        messages=[AgentMessage.text("User", "probe")],
    )


def _probe_library_write(
    conn: Connection, target: MigrationTarget, namespace: str, probe: str
) -> None:
    """Save through the library (in a savepoint), read it back with the Rust statement.

    Raises:
        AdoptionRefusedError: The Rust load fails, or the JSON it gets is not the saved state
            as the Rust snapshot knows it (its fields, whole): the library's storage format at
            head is not one the Rust service can read.
    """
    from agents_persistence.repositories.sql import SQLCheckpointer

    where = target.qualified_name
    state = _probe_state()
    rust_view = state.model_dump(mode="json", include=set(_RUST_FIELDS))
    savepoint = conn.begin_nested()
    try:
        checkpointer = SQLCheckpointer(
            conn.engine, table_name=target.table_name, schema=target.schema, namespace=namespace
        )
        try:
            checkpointer.using(conn).save_state(probe, state)
        finally:
            checkpointer.close()
        loaded = conn.execute(
            text(rust_statements(target.table_name, target.schema)["load"]), {"thread_id": probe}
        ).scalar_one()
    except (DBAPIError, CheckpointerError) as exc:
        raise AdoptionRefusedError(
            f"a state saved by the library on {where} at its head revision cannot be read with"
            f" the Rust service's load ({exc}): both cannot be served by this version of the"
            " library; copy the threads instead"
        ) from exc
    finally:
        savepoint.rollback()
    seen = {key: loaded.get(key) for key in _RUST_FIELDS} if isinstance(loaded, dict) else loaded
    if seen != rust_view:
        raise AdoptionRefusedError(
            f"a state saved by the library on {where} at its head revision is not the Rust"
            " snapshot JSON when the Rust service loads it (the library's storage format keeps"
            " parts of it elsewhere): both cannot be served by this version of the library;"
            " copy the threads instead"
        )


def _adopt(conn: Connection, target: MigrationTarget, namespace: str, lock_timeout: float) -> int:
    found = conn.execute(
        text("SELECT to_regclass(:table)"), {"table": _names(target)["qualified"]}
    ).scalar()
    if found is None:
        raise _refuse(target, "no such table")
    conn.execute(text(f"SET LOCAL lock_timeout = '{int(lock_timeout * 1000)}ms'"))
    conn.execute(text(f"LOCK TABLE {_names(target)['qualified']} IN ACCESS EXCLUSIVE MODE"))
    count = _check_layout(conn, target)
    _alter(conn, target, namespace)
    MigrationContext.configure(
        conn,
        opts={"version_table": target.version_table, "version_table_schema": target.schema},
    ).stamp(packaged_scripts(), ADOPTED_REVISION)
    upgrade_connection(conn, table_name=target.table_name, schema=target.schema)
    try:
        _probe(conn, target, namespace)
    except AdoptionRefusedError as exc:
        raise _refuse(target, str(exc)) from exc
    return count


def verify_rust_writes(
    engine_or_url: Engine | str,
    *,
    table_name: str = DEFAULT_TABLE_NAME,
    schema: str | None = None,
) -> None:
    """Prove that an adopted table still serves the Rust service; changes nothing.

    Runs the Rust statements (`rust_statements`) on the table in a transaction that is rolled
    back, as the adoption does before it commits. Run it after upgrading the library on a
    database with an adopted table: a new revision could change what the Rust writes need.

    Raises:
        AdoptionRefusedError: A Rust statement fails, or its row lacks what the library needs.
        BackendUnavailableError: The database cannot be reached.
    """
    refuse_nested_run("agents_persistence.rust.verify_rust_writes()")
    target = MigrationTarget(table_name, schema)
    with _connect(engine_or_url) as conn, _translated(f"verifying {target.qualified_name}"):
        try:
            _probe(conn, target, None)
        finally:
            conn.rollback()


def adopt_rust_table(
    engine_or_url: Engine | str,
    *,
    table_name: str = DEFAULT_TABLE_NAME,
    schema: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    lock_timeout: float = 30.0,
) -> AdoptionReport:
    """Bring a Rust SDK PostgreSQL checkpoint table under the library's migrations, in place.

    One transaction: lock the table, alter it to the library's schema as of
    `ADOPTED_REVISION` (see the module docs for the columns, indexes and trigger that keep the
    Rust service writing), stamp the library's version table there, upgrade to head, prove the
    Rust statements still work on the result, commit. Rust writes wait for the lock and go on
    afterwards. Any failure leaves the table exactly as it was.

    Args:
        engine_or_url: A PostgreSQL engine (left open) or URL.
        table_name: The Rust table (the Rust builder's ``table_name``).
        schema: Its schema, if not the default.
        namespace: The library namespace the Rust threads belong to from now on; the table
            then serves this namespace only.
        lock_timeout: Seconds to wait for the table lock (Rust transactions in flight) before
            giving up with nothing changed.

    Returns:
        What was adopted.

    Raises:
        AdoptionRefusedError: Not a Rust table, already adopted, thread ids the library cannot
            hold, or a head revision that would break the Rust writes. Nothing changed.
        ConfigurationError: Not PostgreSQL, invalid names.
        BackendUnavailableError: The database cannot be reached, or the lock was not granted
            in time (retry).
    """
    refuse_nested_run("agents_persistence.rust.adopt_rust_table()")
    target = MigrationTarget(table_name, schema)
    namespace = validate_namespace(namespace)
    if not lock_timeout > 0:
        raise ConfigurationError(f"lock_timeout must be positive, not {lock_timeout!r}")
    with _connect(engine_or_url) as conn:
        if conn.dialect.name != "postgresql":
            raise ConfigurationError(
                f"adopting a Rust table works on PostgreSQL only, not {conn.dialect.name}"
                " (the Rust SDK's SQL checkpointer is PostgreSQL's)"
            )
        with _translated(f"adoption of {target.qualified_name}"):
            try:
                count = _adopt(conn, target, namespace, lock_timeout)
            except DBAPIError as exc:
                conn.rollback()
                if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                    raise BackendUnavailableError(
                        f"cannot adopt {target.qualified_name}: its lock was not granted within"
                        f" {lock_timeout:g}s (long Rust transactions in flight); nothing was"
                        " changed, run it again"
                    ) from exc
                raise
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
    return AdoptionReport(target.qualified_name, namespace, count, head_revision())
