"""``db upgrade|downgrade|current|check`` on SQL stores, and the admin commands' refusals."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import pytest

from ..kits.base import tcp_reachable
from .conftest import MARIADB_URL, POSTGRES_URL, Invoke, _has_store, unavailable

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.skipif(not _has_store("sql"), reason="the SQL store is not built yet")


class Database:
    def __init__(self, url: str, table: str | None) -> None:
        self.url = url
        self.table = table

    @property
    def args(self) -> list[str]:
        table = [] if self.table is None else ["--table-name", self.table]
        return ["--url", self.url, *table]


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        # A file of its own: the default table, never migrated before.
        yield Database(f"sqlite:///{tmp_path / 'fresh.sqlite3'}", None)
        return
    url, port = {"postgresql": (POSTGRES_URL, 5432), "mariadb": (MARIADB_URL, 3306)}[request.param]
    if not tcp_reachable("127.0.0.1", port):
        unavailable(f"{request.param} is not reachable at 127.0.0.1:{port}")
    # A table of its own, so that migrating it up and down leaves other tests' tables alone.
    table = "cli_" + uuid.uuid4().hex[:12]
    yield Database(url, table)
    from agents_persistence import migrations

    migrations.downgrade(url, "base", table_name=table)


def test_db_commands_walk_the_schema_up_and_down(cli: Invoke, database: Database) -> None:
    from agents_persistence import migrations

    head = migrations.head_revision()
    before = json.loads(cli("db", "current", "--json", *database.args).stdout)
    assert before["current"] is None
    assert before["head"] == head
    assert before["up_to_date"] is False

    check = cli("db", "check", *database.args)
    assert check.exit_code == 1
    assert check.stderr.startswith("error: SchemaNotReadyError:")
    assert "db upgrade" in check.stderr
    assert len(check.stderr.strip().splitlines()) == 1

    upgrade = cli("db", "upgrade", *database.args)
    assert upgrade.exit_code == 0, upgrade.output
    assert f"to {head}" in upgrade.stdout
    current = cli("db", "current", *database.args)
    assert current.exit_code == 0
    assert f"revision {head} (up to date)" in current.stdout
    assert cli("db", "check", *database.args).exit_code == 0
    again = json.loads(cli("db", "upgrade", head, "--json", *database.args).stdout)
    assert again["from"] == again["to"] == head

    downgrade = json.loads(cli("db", "downgrade", "base", "--json", *database.args).stdout)
    assert downgrade == {"table": downgrade["table"], "from": head, "to": None}
    assert json.loads(cli("db", "current", "--json", *database.args).stdout)["current"] is None
    assert cli("db", "check", *database.args).exit_code == 1


def test_store_commands_need_the_schema(cli: Invoke, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    missing = cli("threads", "list", "--url", url)
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: SchemaNotReadyError:")
    assert "agents-persistence db upgrade" in missing.stderr
    assert "Traceback" not in missing.output
    assert cli("db", "upgrade", "--url", url).exit_code == 0
    listed = cli("threads", "list", "--url", url)
    assert listed.exit_code == 0
    assert "no threads" in listed.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["db", "upgrade", "--url", "redis://127.0.0.1:6379/0"],
        ["db", "current", "--url", "memory://"],
        ["db", "check", "--url", "dynamodb://table?region=us-east-1"],
        ["dynamodb", "create-table", "--url", "sqlite:///x.sqlite3"],
        ["dynamodb", "delete-table", "--url", "dynamodb://table?region=us-east-1"],
    ],
)
def test_admin_commands_refuse_the_wrong_store(cli: Invoke, args: list[str]) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
