"""A private database per dialect for the LangGraph saver tests, migrated once per module."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence.migrations import upgrade
from tests.stores.conftest import MARIADB_SERVER, POSTGRES_SERVER, _private_database, _require

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

DIALECTS = ["sqlite", "postgresql", "mariadb"]


def _database(dialect: str, tmp_path: Path) -> Iterator[str]:
    if dialect == "sqlite":
        yield f"sqlite:///{tmp_path / 'langgraph.db'}"
    elif dialect == "postgresql":
        _require("PostgreSQL", POSTGRES_SERVER)
        yield from _private_database(
            POSTGRES_SERVER, 'CREATE DATABASE "{}"', 'DROP DATABASE IF EXISTS "{}" WITH (FORCE)'
        )
    else:
        _require("MariaDB", MARIADB_SERVER)
        yield from _private_database(
            MARIADB_SERVER, "CREATE DATABASE `{}`", "DROP DATABASE IF EXISTS `{}`"
        )


@pytest.fixture(scope="module", params=DIALECTS)
def lg_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database at the library's head revision (LangGraph tables included)."""
    for url in _database(request.param, tmp_path_factory.mktemp("langgraph")):
        upgrade(url)
        yield url


@pytest.fixture(scope="module")
def dynamodb_options() -> Iterator[dict[str, Any]]:
    """Keywords of a DynamoDB saver on a fresh table of a private moto server."""
    pytest.importorskip("moto.server")
    from agents_persistence.langgraph import DynamoDBCheckpointSaver
    from tests.kits.dynamodb import CREDENTIALS, REGION, MotoServer

    server = MotoServer()
    try:
        options: dict[str, Any] = {
            "table_name": f"lg-{uuid.uuid4().hex[:12]}",
            "region": REGION,
            "endpoint_url": server.endpoint,
            **CREDENTIALS,
        }
        with DynamoDBCheckpointSaver(**options) as saver:
            saver.setup()
        yield options
    finally:
        server.stop()
