"""Alembic environment of the agents-persistence migrations (shipped inside the package).

Run by ``alembic`` with the repository's ``alembic.ini`` or by `agents_persistence.migrations`.
Parameters: the URL (``-x url=``, ``sqlalchemy.url`` or ``AGENTS_PERSISTENCE_URL``; or an open
connection in ``config.attributes["connection"]``) and the target table (``-x table=`` and
``-x schema=``, or ``config.attributes["table_name"]`` and ``["schema"]``).
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import TYPE_CHECKING, Any

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import make_url

from agents_persistence.migrations._filters import own_include_name, own_include_object
from agents_persistence.migrations._lock import session_lock, transaction_lock
from agents_persistence.migrations._settings import TARGET_OPTION, resolve_target, resolve_url
from agents_persistence.models.langgraph import langgraph_models
from agents_persistence.models.sql import checkpoint_table

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

config = context.config
x_args = context.get_x_argument(as_dictionary=True)
target = resolve_target(config, x_args)

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)


def _dialect_name(options: dict[str, Any]) -> str:
    connection = options.get("connection")
    if connection is not None:
        return str(connection.dialect.name)
    return make_url(options["url"]).get_backend_name()


def _configure(**options: Any) -> None:
    # Revisions read the target from the context options (see migration_target()).
    options[TARGET_OPTION] = target
    context.configure(
        target_metadata=[
            checkpoint_table(target.table_name, target.schema).metadata,
            langgraph_models(target.table_name, target.schema).metadata,
        ],
        version_table=target.version_table,
        version_table_schema=target.schema,
        # Compare only our tables: the database usually holds the app's tables too.
        include_schemas=target.schema is not None,
        include_name=own_include_name(target),
        include_object=own_include_object(_dialect_name(options), target),
        compare_type=True,
        render_as_batch=True,
        **options,
    )


def run_migrations_offline() -> None:
    """Write the migration SQL to the output instead of running it (``--sql``)."""
    _configure(
        url=resolve_url(config, x_args),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    with session_lock(connection, target):
        _configure(connection=connection)
        with context.begin_transaction():
            transaction_lock(connection, target)
            context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on a new one to the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(resolve_url(config, x_args), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
