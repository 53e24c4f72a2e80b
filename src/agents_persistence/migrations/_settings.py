"""What a migration run works on: the target table, its version table and the database URL.

Shared by the packaged ``env.py``, the revision files and the public API, so that the table
name and schema are validated in one place and never reach SQL unchecked.
"""

from __future__ import annotations

import importlib.resources
import os
import pathlib
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from agents_persistence._core import validate_identifier
from agents_persistence.errors import ConfigurationError
from agents_persistence.models.sql import DEFAULT_TABLE_NAME

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "APP_SCHEMA_OPTION",
    "APP_TABLE_OPTION",
    "MAX_TABLE_NAME_LENGTH",
    "STEP_TARGET",
    "TARGET_OPTION",
    "URL_ENV_VAR",
    "MigrationTarget",
    "app_target",
    "migration_target",
    "packaged_scripts",
    "resolve_target",
    "resolve_url",
    "script_location",
    "sync_url",
    "version_table",
]

URL_ENV_VAR = "AGENTS_PERSISTENCE_URL"
"""Environment variable the Alembic environment reads the database URL from, last."""

TARGET_OPTION = "agents_persistence_target"
"""Key of the `MigrationTarget` in the migration context's options (read by revisions)."""

APP_TABLE_OPTION = "agents_persistence_table"
"""Option of an app's ``alembic.ini`` (``[alembic]`` section) naming the checkpoint table its
``alembic upgrade heads`` creates; ``agent_checkpoints`` when absent."""

APP_SCHEMA_OPTION = "agents_persistence_schema"
"""Option of an app's ``alembic.ini`` naming that table's schema (PostgreSQL) or database."""

STEP_TARGET: ContextVar[MigrationTarget | None] = ContextVar(
    "agents_persistence_step_target", default=None
)
"""The target of the revision step running in an app's environment (set by `migration_step`)."""

_VERSION_SUFFIX = "_alembic_version"
MAX_TABLE_NAME_LENGTH = 63 - len(_VERSION_SUFFIX + "_pkc")
"""Longest table name whose version table's primary key (``<table>_alembic_version_pkc``, named
by Alembic) still fits PostgreSQL's limit of 63 characters (MySQL's is 64)."""

_SYNC_DRIVERS = {
    "sqlite+aiosqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
    "postgresql+asyncpg": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mysql+aiomysql": "mysql+pymysql",
    "mysql+asyncmy": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mariadb+aiomysql": "mariadb+pymysql",
    "mariadb+asyncmy": "mariadb+pymysql",
}


_PACKAGE = "agents_persistence.migrations"


def script_location() -> str:
    """Where Alembic finds the packaged environment: a directory, or a package resource."""
    root = importlib.resources.files(_PACKAGE)
    if isinstance(root, pathlib.Path):
        return str(root)
    # Not a plain directory (a zip import): let Alembic resolve the package resource itself.
    return f"{_PACKAGE.rpartition('.')[0]}:migrations"


@cache
def packaged_scripts() -> ScriptDirectory:
    """The packaged revisions (read once per process)."""
    config = Config()
    config.set_main_option("script_location", script_location())
    config.set_main_option("path_separator", "os")
    return ScriptDirectory.from_config(config)


def version_table(table_name: str) -> str:
    """The name of the library's own Alembic version table for ``table_name``.

    Kept apart from an app's ``alembic_version`` so both histories live in one database.

    Args:
        table_name: The checkpoint table's name (validated).

    Returns:
        ``f"{table_name}_alembic_version"``.

    Raises:
        ConfigurationError: ``table_name`` is not a valid identifier or is longer than
            `MAX_TABLE_NAME_LENGTH` characters.
    """
    validate_identifier(table_name, "table name")
    if len(table_name) > MAX_TABLE_NAME_LENGTH:
        raise ConfigurationError(
            f"table name {table_name!r} is {len(table_name)} characters; migrations need at most"
            f" {MAX_TABLE_NAME_LENGTH}, so that the version table's names fit in 63"
        )
    return table_name + _VERSION_SUFFIX


@dataclass(frozen=True, slots=True)
class MigrationTarget:
    """The checkpoint table a migration run creates or changes.

    Attributes:
        table_name: The checkpoint table (validated identifier).
        schema: Its schema (PostgreSQL) or database (MySQL/MariaDB); ``None`` for the default.
    """

    table_name: str = DEFAULT_TABLE_NAME
    schema: str | None = None

    def __post_init__(self) -> None:
        version_table(self.table_name)
        if self.schema is not None:
            validate_identifier(self.schema, "schema name")

    @property
    def version_table(self) -> str:
        """The library's version table for this checkpoint table."""
        return version_table(self.table_name)

    @property
    def qualified_name(self) -> str:
        """``schema.table`` (or just ``table``), for messages and lock keys."""
        return self.table_name if self.schema is None else f"{self.schema}.{self.table_name}"


def sync_url(url: str | URL) -> URL:
    """Map a database URL to the synchronous driver Alembic runs on.

    ``sqlite+aiosqlite`` becomes ``sqlite``; ``postgresql`` and its async drivers become
    ``postgresql+psycopg``; ``mysql``/``mariadb`` and their async drivers use PyMySQL. Other
    URLs are returned unchanged.

    Raises:
        ConfigurationError: The URL cannot be parsed.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"invalid database URL: {exc}") from exc
    driver = _SYNC_DRIVERS.get(parsed.drivername)
    return parsed if driver is None else parsed.set(drivername=driver)


def resolve_url(config: Config, x_args: Mapping[str, str]) -> URL:
    """The URL of a command-line or programmatic run.

    In order: ``-x url=...``, the config's ``sqlalchemy.url``, then ``AGENTS_PERSISTENCE_URL``.

    Raises:
        ConfigurationError: No URL is given anywhere, or it cannot be parsed.
    """
    url = (
        x_args.get("url") or config.get_main_option("sqlalchemy.url") or os.environ.get(URL_ENV_VAR)
    )
    if not url:
        raise ConfigurationError(
            "no database URL for the agents-persistence migrations: pass -x url=...,"
            f" set sqlalchemy.url, or set {URL_ENV_VAR}"
        )
    return sync_url(url)


def resolve_target(config: Config, x_args: Mapping[str, str]) -> MigrationTarget:
    """The table of a run: ``config.attributes`` first, then ``-x table=... -x schema=...``.

    Raises:
        ConfigurationError: The table or schema name is not a valid identifier.
    """
    attributes = config.attributes
    table_name = attributes.get("table_name") or x_args.get("table") or DEFAULT_TABLE_NAME
    schema = attributes.get("schema") or x_args.get("schema") or None
    return MigrationTarget(table_name, schema)


def app_target(config: Config | None) -> MigrationTarget:
    """The checkpoint table an app's own Alembic environment migrates.

    `APP_TABLE_OPTION` and `APP_SCHEMA_OPTION` of its ``alembic.ini``, else
    ``agent_checkpoints`` in the default schema.

    Raises:
        ConfigurationError: The table or schema name is not a valid identifier.
    """
    if config is None:
        return MigrationTarget()
    table_name = config.get_main_option(APP_TABLE_OPTION) or DEFAULT_TABLE_NAME
    schema = config.get_main_option(APP_SCHEMA_OPTION) or None
    return MigrationTarget(table_name, schema)


def migration_target() -> MigrationTarget:
    """The target of the migration being run; called from inside revision files.

    In the library's own environment it comes from the context's options; in an app's
    environment from the running `migration_step`.

    Raises:
        ConfigurationError: Called outside a run of the migrations, or from a revision that is
            not wrapped in `migration_step` while an app's environment runs it.
    """
    from alembic import op

    target = op.get_context().opts.get(TARGET_OPTION)
    if isinstance(target, MigrationTarget):
        return target
    target = STEP_TARGET.get()
    if target is None:
        raise ConfigurationError(
            "agents-persistence revisions run through their own Alembic environment"
            " (agents_persistence.migrations.alembic_config()) or, in an app's environment,"
            " as functions wrapped in @migration_step"
        )
    return target
