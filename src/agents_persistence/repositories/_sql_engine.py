"""Engines and errors of the SQL store: URL mapping, engine options, the error boundary.

Pure except for `sqlite_tuning`, which registers engine event hooks (no I/O until a connection
is made). Both twins use everything here.
"""

from __future__ import annotations

import math
import re
import time
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import StaticPool

from agents_persistence.errors import (
    AccessDeniedError,
    AuthenticationError,
    BackendUnavailableError,
    CheckpointerError,
    ConfigurationError,
    CorruptStateError,
    DatabaseNotFoundError,
    InvalidArgumentError,
    SchemaNotReadyError,
)
from agents_persistence.models.sql import DEFAULT_TABLE_NAME

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Engine

__all__ = [
    "driver_code",
    "LOCK_ISOLATION",
    "engine_options",
    "PING_IDLE_AFTER",
    "lock_isolation_preset",
    "ping_when_idle",
    "refusal",
    "schema_not_ready",
    "sqlite_tuning",
    "to_async_url",
    "to_sync_url",
    "translate_errors",
    "WATCHDOG_GRACE",
]

LOCK_ISOLATION = "READ COMMITTED"
"""The isolation level of MySQL/MariaDB locking writes (no gap locks on missing rows)."""

_SYNC_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mysql+aiomysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mariadb+aiomysql": "mariadb+pymysql",
    "sqlite+aiosqlite": "sqlite",
}
_ASYNC_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
    "mysql": "mysql+aiomysql",
    "mysql+pymysql": "mysql+aiomysql",
    "mariadb": "mariadb+aiomysql",
    "mariadb+pymysql": "mariadb+aiomysql",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
}

# Messages (and SQLSTATE / MySQL codes) that mean "the table or a column is not there": the
# schema was never migrated, or is behind the library.
_MISSING_SCHEMA = re.compile(
    r"no such table|no such column|has no column named|relation .* does not exist"
    r"|column .* does not exist|doesn't exist|unknown column",
    re.IGNORECASE,
)
_MISSING_SQLSTATES = frozenset({"42P01", "42703", "3F000"})
_MISSING_MYSQL_CODES = frozenset({1146, 1054})
# MySQL/MariaDB server codes that mean "cannot talk to the server now" (PyMySQL reports every
# unmapped server code, constraint failures included, as OperationalError); client-side codes
# 2000-2999 (refused, lost, gone away) are always that.
_MYSQL_UNAVAILABLE = frozenset(
    {1040, 1053, 1152, 1158, 1159, 1160, 1161, 1203, 1205, 1213, 1226, 1317, 1927, 1969}
    | {3024, 4031}
)
# What no retry can fix, by driver code: refused credentials, missing privileges, a database that
# does not exist. SQLSTATEs (psycopg), server error numbers (PyMySQL/aiomysql: 1045 access denied,
# 1698 no password for a socket-auth user, 1130 host not allowed, 1251 auth plugin unsupported,
# 1820/1862 password must be changed or expired, 3118/4151 account locked; 1044 no access to the
# database, 1142/1143 table/column denied, 1227 needs a privilege, 1370 routine denied; 1049
# unknown database), SQLite primary result codes (14 CANTOPEN, 8 READONLY, 3 PERM, 23 AUTH).
_PG_REFUSALS: dict[str, type[CheckpointerError]] = {
    "28000": AuthenticationError,
    "28P01": AuthenticationError,
    "42501": AccessDeniedError,
    "3D000": DatabaseNotFoundError,
}
_MYSQL_REFUSALS: dict[int, type[CheckpointerError]] = {
    **dict.fromkeys((1045, 1130, 1251, 1698, 1820, 1862, 3118, 4151), AuthenticationError),
    **dict.fromkeys((1044, 1142, 1143, 1227, 1370), AccessDeniedError),
    1049: DatabaseNotFoundError,
}
_SQLITE_REFUSALS: dict[int, type[CheckpointerError]] = {
    14: DatabaseNotFoundError,
    8: AccessDeniedError,
    3: AccessDeniedError,
    23: AccessDeniedError,
}
# libpq reports a refused connection attempt with the server's message and no SQLSTATE, so
# connection failures fall back on the server's (English) text; a server set to another
# language (lc_messages) leaves them BackendUnavailableError.
_PG_CONNECT_REFUSALS: tuple[tuple[re.Pattern[str], type[CheckpointerError]], ...] = (
    (
        re.compile(
            r"authentication failed for user|role \"[^\"]*\" (?:does not exist|is not permitted)"
            r"|no pg_hba\.conf entry|pg_hba\.conf rejects|no password supplied",
        ),
        AuthenticationError,
    ),
    (re.compile(r"permission denied for database"), AccessDeniedError),
    (re.compile(r"database \"[^\"]*\" does not exist"), DatabaseNotFoundError),
)
_UNDECODABLE = re.compile(r"could not decode|codec can't decode|invalid utf-?8", re.IGNORECASE)


def _parse(url: str | URL) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"invalid database URL: {exc}") from exc


def to_sync_url(url: str | URL) -> URL:
    """The URL with the synchronous driver this library ships for its database."""
    parsed = _parse(url)
    driver = _SYNC_DRIVERS.get(parsed.drivername)
    return parsed if driver is None else parsed.set(drivername=driver)


def to_async_url(url: str | URL) -> URL:
    """The URL with the asyncio driver this library ships for its database."""
    parsed = _parse(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed if driver is None else parsed.set(drivername=driver)


def _is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def engine_options(
    url: URL,
    *,
    pool_size: int,
    max_overflow: int,
    pool_timeout: float,
    connect_timeout: float,
    busy_timeout: float,
    call_timeout: float,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """Keyword arguments for ``create_engine`` / ``create_async_engine`` of ``url``.

    Pool sizing for every database (stale connections are caught by `ping_when_idle`, not
    by ``pool_pre_ping``); the connect timeout each driver understands; SQLite's busy
    timeout; READ COMMITTED on MySQL/MariaDB. ``extra`` (the caller's ``engine_options``) wins.

    The call budget (``call_timeout``, seconds) adds server-side bounds that end a statement
    or a lock wait without losing the connection: PostgreSQL's ``statement_timeout`` (unless
    the URL sets ``options``), MySQL/MariaDB's ``innodb_lock_wait_timeout`` (whole seconds);
    and PyMySQL's ``read_timeout`` / ``write_timeout`` (the budget plus `WATCHDOG_GRACE`).
    """
    backend = url.get_backend_name()
    options: dict[str, Any] = {}
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        connect_args["timeout"] = busy_timeout
        if _is_memory_sqlite(url):
            # One in-memory database exists per connection: share a single one.
            options["poolclass"] = StaticPool
            connect_args["check_same_thread"] = False
        else:
            options.update(pool_size=pool_size, max_overflow=max_overflow)
            options["pool_timeout"] = pool_timeout
    else:
        options.update(pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout)
        if backend == "postgresql":
            # libpq counts whole seconds (and treats 1 as 2).
            connect_args["connect_timeout"] = max(1, round(connect_timeout))
            if "options" not in url.query:
                connect_args["options"] = f"-c statement_timeout={math.ceil(call_timeout * 1000)}"
        elif backend in ("mysql", "mariadb"):
            connect_args["connect_timeout"] = connect_timeout
            # What the URL's query sets is kept (connect_args would override it).
            if "init_command" not in url.query:
                lock_wait = max(1, int(call_timeout))
                connect_args["init_command"] = f"SET SESSION innodb_lock_wait_timeout={lock_wait}"
            if url.get_driver_name() == "pymysql":
                # Per socket operation; the call's own deadline is enforced around it.
                for name in ("read_timeout", "write_timeout"):
                    if name not in url.query:
                        connect_args[name] = call_timeout + WATCHDOG_GRACE
            # Set once per connection, instead of before each locking write (see
            # `lock_isolation_preset`).
            options["isolation_level"] = LOCK_ISOLATION
            if "charset" not in url.query:
                connect_args["charset"] = "utf8mb4"
    extra = dict(extra or {})
    connect_args.update(extra.pop("connect_args", {}))
    options.update(extra)
    options["connect_args"] = connect_args
    return options


def lock_isolation_preset(url: URL, options: dict[str, Any]) -> bool:
    """Whether engines made with ``options`` already run every transaction at READ COMMITTED.

    True for MySQL/MariaDB engines this library creates (unless ``engine_options`` chose
    another level): their locking writes then skip the per-transaction ``SET TRANSACTION``.
    """
    return url.get_backend_name() in ("mysql", "mariadb") and (
        options.get("isolation_level") == LOCK_ISOLATION
    )


WATCHDOG_GRACE = 0.25
"""Seconds past a call's deadline before the client cuts the call's connection."""

PING_IDLE_AFTER = 1.0
"""Default seconds a pooled connection may sit idle before a checkout pings it (`from_url`)."""

_IDLE_SINCE = "agents_persistence.idle_since"


def _unguarded(connection_record: Any) -> AbstractContextManager[None]:
    return nullcontext()


def ping_when_idle(
    engine: Engine,
    idle_after: float,
    guard: Callable[[Any], AbstractContextManager[None]] = _unguarded,
) -> None:
    """Ping a pooled connection at checkout when it sat idle longer than ``idle_after`` seconds.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout (one round trip per call); this pings
    only connections that could have gone stale unnoticed: after a server restart or a dropped
    idle connection, the ping fails, the pool replaces the connection and the call proceeds.
    A connection that fails within ``idle_after`` of its last use fails its call with
    `BackendUnavailableError`, and SQLAlchemy then recycles every older pooled connection.
    Public pool events only: ``checkin`` stamps the entry's ``info``, ``checkout`` pings with
    ``Dialect.do_ping`` and raises ``DisconnectionError`` for the pool to reconnect.
    ``guard(connection_record)`` wraps the ping (the call's time budget bounds it).
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _stamp(dbapi_connection: Any, connection_record: Any) -> None:
        if dbapi_connection is not None:
            connection_record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
        since = connection_record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since <= idle_after:
            return
        try:
            with guard(connection_record):
                alive = dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc
        if not alive:
            raise DisconnectionError("stale pooled connection")


def sqlite_tuning(engine: Engine, *, wal: bool) -> None:
    """Hooks for an SQLite engine this library created: WAL journal for file databases.

    WAL lets readers proceed while a writer commits; writers still take turns, waiting up to the
    busy timeout instead of failing with "database is locked".
    """
    if not wal:
        return

    @event.listens_for(engine, "connect")
    def _wal(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()


def schema_not_ready(problem: str, url: str, table_name: str, schema: str | None) -> str:
    """The `SchemaNotReadyError` message: what is wrong, and every command that fixes it."""
    cli_args = f" --url {url}"
    alembic_args = " -x url=..."
    python_args = ""
    if table_name != DEFAULT_TABLE_NAME:
        cli_args += f" --table-name {table_name}"
        alembic_args += f" -x table={table_name}"
        python_args += f", table_name={table_name!r}"
    if schema is not None:
        cli_args += f" --schema {schema}"
        alembic_args += f" -x schema={schema}"
        python_args += f", schema={schema!r}"
    return (
        f"the agents-persistence schema is not ready: {problem}. Run the library's migrations"
        f" with one of: `agents-persistence db upgrade{cli_args}`,"
        f" `alembic upgrade head` (with the library's alembic.ini and{alembic_args}), or"
        f" `agents_persistence.migrations.upgrade(engine{python_args})`."
        " The checkpointer never changes the schema itself unless created with auto_migrate=True."
    )


def _sqlstate(exc: DBAPIError) -> str | None:
    state = getattr(exc.orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def driver_code(exc: DBAPIError) -> object:
    """The numeric error code of MySQL drivers (first argument), else the first argument."""
    args: tuple[object, ...] = getattr(exc.orig, "args", ())
    return args[0] if args else None


def _refused_state(exc: DBAPIError) -> str | None:
    """Why the database refused a valid JSON state, when that is what happened."""
    if _sqlstate(exc) == "22P05":
        return "PostgreSQL's JSONB cannot hold the NUL character (\\u0000)"
    if driver_code(exc) == 4025:
        return "its JSON check failed (MariaDB accepts at most 32 levels of nesting)"
    return None


def _refusal_kind(exc: DBAPIError) -> type[CheckpointerError] | None:
    orig = exc.orig
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return _SQLITE_REFUSALS.get(sqlite_code & 0xFF)  # the primary of an extended code
    code = driver_code(exc)
    if isinstance(code, int):  # PyMySQL / aiomysql
        return _MYSQL_REFUSALS.get(code)
    state = _sqlstate(exc)
    if state is not None:
        return _PG_REFUSALS.get(state)
    if not isinstance(exc, OperationalError):
        return None
    # psycopg: a failed connection attempt; libpq says whether the server wanted a password
    # none was given for.
    if getattr(getattr(orig, "pgconn", None), "needs_password", False) is True:
        return AuthenticationError
    text = str(orig)
    for pattern, kind in _PG_CONNECT_REFUSALS:
        if pattern.search(text):
            return kind
    return None


def refusal(exc: DBAPIError, context: str) -> CheckpointerError | None:
    """The error for a driver error no retry can fix, or ``None`` if it is not one.

    Args:
        exc: What SQLAlchemy raised.
        context: Where it happened, for the message (``"during load"``,
            ``"connecting to postgresql+psycopg://..."``).

    Returns:
        `AuthenticationError` (credentials refused), `AccessDeniedError` (no privilege, read-only
        SQLite file), `DatabaseNotFoundError` (unknown database, SQLite file that cannot be
        opened), or ``None``.
    """
    kind = _refusal_kind(exc)
    if kind is None:
        return None
    detail = _detail(exc)
    if kind is AuthenticationError:
        return AuthenticationError(f"the database refused the credentials {context}: {detail}")
    if kind is AccessDeniedError:
        return AccessDeniedError(f"the database denied access {context}: {detail}")
    if getattr(exc.orig, "sqlite_errorcode", None) is not None:
        return DatabaseNotFoundError(
            f"SQLite cannot open the database file {context}: {detail} (its directory is"
            " missing, or this process may not create files there)"
        )
    return DatabaseNotFoundError(f"unknown database {context}: {detail}")


def _detail(exc: DBAPIError) -> str:
    text = str(exc.orig).strip()
    return text.splitlines()[0] if text else repr(exc)


def _unavailable(exc: DBAPIError) -> bool:
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    code = driver_code(exc)
    if isinstance(code, int):  # PyMySQL / aiomysql; psycopg and sqlite3 carry messages
        return 2000 <= code < 3000 or code in _MYSQL_UNAVAILABLE
    return True


def _missing_schema(exc: DBAPIError) -> bool:
    if _sqlstate(exc) in _MISSING_SQLSTATES or driver_code(exc) in _MISSING_MYSQL_CODES:
        return True
    return bool(_MISSING_SCHEMA.search(str(exc.orig)))


class translate_errors:
    """The store's one error boundary: driver errors become the library's, chained.

    A context manager (a class: cheaper than a generator on every call).

    Args:
        not_ready: Called with a problem description, returns the `SchemaNotReadyError` text.
        thread_id: The thread concerned, for `CorruptStateError`.
        action: What was being done, for messages.

    Raises:
        AuthenticationError: The server refused the credentials (user, password, role).
        AccessDeniedError: The user lacks a privilege; the SQLite file is read-only.
        DatabaseNotFoundError: The database does not exist; SQLite cannot open its file.
        SchemaNotReadyError: The table or a column is missing.
        BackendUnavailableError: Connection refused or lost, timeouts, pool exhausted.
        CorruptStateError: A stored value the driver cannot decode.
        InvalidArgumentError: The database refused a state it cannot store.
        CheckpointerError: Any other database error.
    """

    __slots__ = ("action", "not_ready", "thread_id")

    def __init__(
        self, not_ready: Any, thread_id: str | None = None, *, action: str = "query"
    ) -> None:
        self.not_ready = not_ready
        self.thread_id = thread_id
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if exc is None or isinstance(exc, CheckpointerError):
            return
        ours = _translated(exc, self.not_ready, self.thread_id, self.action)
        if ours is not None:
            raise ours from exc


def _translated(
    exc: BaseException, not_ready: Any, thread_id: str | None, action: str
) -> CheckpointerError | None:
    """The library's error for ``exc`` (see `translate_errors`), ``None`` to let it pass."""
    if isinstance(exc, DBAPIError):
        fix = refusal(exc, f"during {action}")
        if fix is not None:
            return fix
        detail = _detail(exc)
        if _missing_schema(exc):
            return SchemaNotReadyError(not_ready(detail))
        refused = _refused_state(exc)
        if refused is not None and thread_id is not None and action == "save":
            return InvalidArgumentError(
                f"the database refused the state of thread {thread_id!r}: {refused};"
                " nothing was written"
            )
        if thread_id is not None and _UNDECODABLE.search(detail):
            return CorruptStateError(thread_id, detail)
        if _unavailable(exc):
            return BackendUnavailableError(f"database unavailable during {action}: {detail}")
        return CheckpointerError(f"database error during {action}: {detail}")
    if isinstance(exc, PoolTimeoutError):
        return BackendUnavailableError(f"no database connection available: {exc}")
    if isinstance(exc, SQLAlchemyError):
        return CheckpointerError(f"database error during {action}: {exc}")
    if isinstance(exc, ValueError | TypeError):
        # The driver's or SQLAlchemy's conversion of a stored value failed (a timestamp that
        # is not one, say): the row was changed behind the library's back.
        if thread_id is not None and action == "load":
            return CorruptStateError(thread_id, f"unreadable stored value: {exc}")
        return CheckpointerError(f"unreadable stored value during {action}: {exc}")
    if isinstance(exc, OSError | TimeoutError):
        # Async drivers may surface socket errors and timeouts without a DBAPI wrapper.
        return BackendUnavailableError(f"database unavailable during {action}: {exc}")
    return None
