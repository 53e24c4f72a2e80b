"""SQL stores: refused credentials, missing privileges and unknown databases need a fix.

They raise `AuthenticationError`, `AccessDeniedError` or `DatabaseNotFoundError`, never the
`BackendUnavailableError` (a `ConnectionError`) a retry loop retries, on every dialect, sync and
async, and from the migration functions too. A wrong password needs a server that asks for
one: a private PostgreSQL cluster with scram-sha-256, and a MariaDB user made for the test.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from agents_persistence import (
    AccessDeniedError,
    AgentStateSnapshot,
    AuthenticationError,
    BackendUnavailableError,
    ConfigurationError,
    DatabaseNotFoundError,
    open_async_checkpointer,
    open_checkpointer,
)
from agents_persistence.migrations import current, upgrade

from ..kits.base import closed_port, tcp_reachable
from ..kits.secured import (
    PASSWORD,
    PostgresServer,
    assert_needs_a_fix,
    failure,
    mariadb_user,
    saves,
    unusable,
)
from ..kits.sql import MariaDBKit, PostgreSQLKit

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from agents_persistence import CheckpointerError

    from ..support import Portal

POSTGRES_URL = PostgreSQLKit.url
MARIADB_URL = MariaDBKit.url
MODES = ["sync", "async"]


def opener(url: str, mode: str) -> Callable[[], Any]:
    """Opens ``url`` with ``open_checkpointer`` (or its async twin, in mode ``"async"``)."""
    open_url = open_checkpointer if mode == "sync" else open_async_checkpointer
    return lambda: open_url(url, connect_timeout=5)


def refused(url: str, mode: str, portal: Portal) -> CheckpointerError:
    """What a load and a save through ``url`` raise."""
    return failure(opener(url, mode), mode, portal)


def _with(url: str, **parts: Any) -> str:
    return make_url(url).set(**parts).render_as_string(hide_password=False)


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def shared_postgres() -> str:
    if not tcp_reachable("127.0.0.1", make_url(POSTGRES_URL).port or 5432):
        unusable("the shared PostgreSQL server is not reachable")
    return POSTGRES_URL


@pytest.fixture(scope="module")
def shared_mariadb() -> str:
    if not tcp_reachable("127.0.0.1", make_url(MARIADB_URL).port or 3306):
        unusable("the shared MariaDB server is not reachable")
    upgrade(MARIADB_URL)
    return MARIADB_URL


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        upgrade(server.url())
        yield server
    finally:
        server.stop()


# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_postgres_unknown_role_is_an_authentication_error(
    shared_postgres: str, mode: str, portal: Portal
) -> None:
    role = _unique("ap_no_role")
    error = refused(_with(shared_postgres, username=role), mode, portal)
    assert_needs_a_fix(error, AuthenticationError)
    assert role in str(error)
    assert isinstance(error.__cause__, DBAPIError)


@pytest.mark.parametrize("mode", MODES)
def test_postgres_unknown_database_is_database_not_found(
    shared_postgres: str, mode: str, portal: Portal
) -> None:
    database = _unique("ap_no_db")
    error = refused(_with(shared_postgres, database=database), mode, portal)
    assert_needs_a_fix(error, DatabaseNotFoundError)
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, ValueError)
    assert database in str(error)


@pytest.mark.parametrize("mode", MODES)
def test_postgres_right_password_works(
    pg_server: PostgresServer, mode: str, portal: Portal
) -> None:
    # The control for the tests below: the private server and its schema work with the password.
    saves(opener(pg_server.url(), mode), mode, portal)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("postgres", "wrong-password"),
        ("postgres", None),  # the server asks for a password and none is given
        ("ap_no_role", PASSWORD),  # scram answers an unknown role like a wrong password
    ],
)
def test_postgres_refused_password_is_an_authentication_error(
    pg_server: PostgresServer, user: str, password: str | None, mode: str, portal: Portal
) -> None:
    error = refused(pg_server.url(user, password), mode, portal)
    assert_needs_a_fix(error, AuthenticationError)
    if password is not None:
        assert "password authentication failed" in str(error)
    assert "wrong-password" not in str(error)


@pytest.mark.parametrize("mode", MODES)
def test_postgres_missing_privilege_is_access_denied(
    pg_server: PostgresServer, mode: str, portal: Portal
) -> None:
    role = _unique("ap_reader")
    admin = create_engine(pg_server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"))
    try:
        error = refused(pg_server.url(role), mode, portal)
        assert_needs_a_fix(error, AccessDeniedError)
        assert not isinstance(error, AuthenticationError)
        assert "permission denied" in str(error)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def test_migrations_tell_credentials_and_databases_from_outages(
    shared_postgres: str, pg_server: PostgresServer
) -> None:
    with pytest.raises(AuthenticationError):
        upgrade(pg_server.url("postgres", "wrong-password"))
    with pytest.raises(AuthenticationError):
        current(_with(shared_postgres, username=_unique("ap_no_role")))
    with pytest.raises(DatabaseNotFoundError):
        upgrade(_with(shared_postgres, database=_unique("ap_no_db")))
    with pytest.raises(BackendUnavailableError):
        current(_with(shared_postgres, port=closed_port()))


# -- MariaDB -----------------------------------------------------------------------------------


@pytest.fixture
def mariadb_account(shared_mariadb: str) -> Iterator[tuple[str, str]]:
    database = make_url(shared_mariadb).database
    with mariadb_user(shared_mariadb, grant_database=database) as account:
        yield account


@pytest.mark.parametrize("mode", MODES)
def test_mariadb_wrong_password_is_an_authentication_error(
    shared_mariadb: str, mariadb_account: tuple[str, str], mode: str, portal: Portal
) -> None:
    user, password = mariadb_account
    # The control: the account works with its password.
    saves(opener(_with(shared_mariadb, username=user, password=password), mode), mode, portal)
    error = refused(_with(shared_mariadb, username=user, password="wrong"), mode, portal)
    assert_needs_a_fix(error, AuthenticationError)
    assert "1045" in str(error)


@pytest.mark.parametrize("mode", MODES)
def test_mariadb_unknown_database_is_database_not_found(
    shared_mariadb: str, mode: str, portal: Portal
) -> None:
    error = refused(_with(shared_mariadb, database=_unique("ap_no_db")), mode, portal)
    assert_needs_a_fix(error, DatabaseNotFoundError)
    assert "1049" in str(error)


@pytest.mark.parametrize("mode", MODES)
def test_mariadb_database_without_grant_is_access_denied(
    shared_mariadb: str, mode: str, portal: Portal
) -> None:
    with mariadb_user(shared_mariadb, grant_database=None) as (user, password):
        url = _with(shared_mariadb, username=user, password=password)
        error = refused(url, mode, portal)
    assert_needs_a_fix(error, AccessDeniedError)
    assert not isinstance(error, AuthenticationError)
    assert "1044" in str(error)


# -- SQLite ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_sqlite_file_in_a_missing_directory_is_database_not_found(
    tmp_path: Path, mode: str, portal: Portal
) -> None:
    missing = tmp_path / "no-such-directory" / "agents.db"
    error = refused(f"sqlite:///{missing}", mode, portal)
    assert_needs_a_fix(error, DatabaseNotFoundError)
    assert "directory" in str(error)
    with pytest.raises(DatabaseNotFoundError):
        upgrade(f"sqlite:///{missing}")
    assert not missing.parent.exists()  # nothing created on the way


@pytest.mark.parametrize("mode", MODES)
def test_read_only_sqlite_file_refuses_writes_as_access_denied(
    tmp_path: Path, mode: str, portal: Portal
) -> None:
    path = tmp_path / "agents.db"
    upgrade(f"sqlite:///{path}")
    with open_checkpointer(f"sqlite:///{path}") as cp:
        cp.save_state("t", AgentStateSnapshot(scratchpad={"n": 1}))
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"

    def sync() -> BaseException:
        with open_checkpointer(read_only) as cp:
            assert cp.load_state("t") == AgentStateSnapshot(scratchpad={"n": 1})
            with pytest.raises(AccessDeniedError) as raised:
                cp.save_state("t", AgentStateSnapshot())
        return raised.value

    async def asynchronous() -> BaseException:
        async with open_async_checkpointer(read_only) as cp:
            assert await cp.load_state("t") == AgentStateSnapshot(scratchpad={"n": 1})
            with pytest.raises(AccessDeniedError) as raised:
                await cp.save_state("t", AgentStateSnapshot())
        return raised.value

    error = sync() if mode == "sync" else portal.call(asynchronous)
    assert_needs_a_fix(error, AccessDeniedError)
    assert "readonly" in str(error)
    with open_checkpointer(f"sqlite:///{path}") as cp:  # nothing was written
        assert cp.load_state("t") == AgentStateSnapshot(scratchpad={"n": 1})
