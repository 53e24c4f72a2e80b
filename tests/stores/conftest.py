"""Fixtures shared by the store-specific tests.

Private SQL databases for the migration tests (a SQLite file, or a database created on the test
servers, ``AGENTS_PERSISTENCE_TEST_POSTGRES_URL`` / ``_MARIADB_URL``, and dropped after), and the
SQL kits in turn.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from tests.kits.base import IN_CI, tcp_reachable

from ..conftest import _ready
from ..kits.sql import PLAIN_KITS, SQLKit

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

POSTGRES_SERVER = sa.make_url(
    os.environ.get(
        "AGENTS_PERSISTENCE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
)
MARIADB_SERVER = sa.make_url(
    os.environ.get(
        "AGENTS_PERSISTENCE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
    )
)


def run_command(
    args: list[str], cwd: Path, *, url_env: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command with ``AGENTS_PERSISTENCE_URL`` set to ``url_env`` only (unset if ``None``)."""
    env = {k: v for k, v in os.environ.items() if k != "AGENTS_PERSISTENCE_URL"}
    if url_env is not None:
        env["AGENTS_PERSISTENCE_URL"] = url_env
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False
    )


def _require(name: str, server: sa.URL) -> None:
    host, port = server.host or "127.0.0.1", server.port or 0
    if not tcp_reachable(host, port):
        message = f"{name} unreachable at {host}:{port}"
        if IN_CI:
            pytest.fail(message + " (CI=true: an unreachable server fails the run)")
        pytest.skip(message)


def _private_database(server: sa.URL, create: str, drop: str) -> Iterator[str]:
    name = "mig_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(create.format(name))
        yield server.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.exec_driver_sql(drop.format(name))
    finally:
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'migrations.db'}"


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    _require("PostgreSQL", POSTGRES_SERVER)
    yield from _private_database(
        POSTGRES_SERVER, 'CREATE DATABASE "{}"', 'DROP DATABASE IF EXISTS "{}" WITH (FORCE)'
    )


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    _require("MariaDB", MARIADB_SERVER)
    yield from _private_database(
        MARIADB_SERVER, "CREATE DATABASE `{}`", "DROP DATABASE IF EXISTS `{}`"
    )


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture(params=PLAIN_KITS, ids=[k.name for k in PLAIN_KITS])
def sql_kit(request: pytest.FixtureRequest) -> SQLKit:
    """SQLite, PostgreSQL and MariaDB in turn (the kits without listeners)."""
    kit = _ready(request.param)
    assert isinstance(kit, SQLKit)
    return kit
