"""The library's revisions inside an app's own Alembic environment, and nested runs refused.

An app adds the packaged ``versions`` directory to its ``version_locations``; its own
``alembic upgrade heads`` then runs our revisions on its connection and records them in its
``alembic_version`` under the ``agents_persistence`` branch label. Every revision is wrapped in
`migration_step`, which also keeps the library's own version table (``<table>_alembic_version``)
in step: the store's readiness check, ``agents-persistence db upgrade`` and `check()` all read
that table, so both ways of migrating agree on one database whichever ran first.

- Upgrading revision R: if the library's table already records R (or a later revision), R's
  DDL is skipped (someone ran the library's own upgrade first); otherwise the DDL runs and the
  library's table moves to R, in the app's transaction.
- Downgrading R: the DDL runs only if the library's table records R; it then moves to R's parent.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from alembic import context, op
from alembic.runtime.migration import MigrationContext

from agents_persistence.errors import ConfigurationError
from agents_persistence.migrations._lock import session_lock, transaction_lock
from agents_persistence.migrations._settings import (
    STEP_TARGET,
    TARGET_OPTION,
    MigrationTarget,
    app_target,
    packaged_scripts,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "BRANCH_LABEL",
    "SUPPORTED_WAY",
    "VERSIONS_RESOURCE",
    "is_migration_step",
    "migration_step",
    "refuse_nested_run",
]

BRANCH_LABEL = "agents_persistence"
"""Branch label of the library's base revision: ``alembic upgrade agents_persistence@head``."""

VERSIONS_RESOURCE = "agents_persistence.migrations:versions"
"""The packaged revisions as an Alembic resource name, for an app's ``version_locations``."""

SUPPORTED_WAY = (
    f"add {VERSIONS_RESOURCE} to the version_locations of your alembic.ini (with"
    " path_separator = newline) and run `alembic upgrade heads`; the library's revisions then run"
    f" in your environment under the branch label {BRANCH_LABEL!r} (see docs/migrations.md)"
)
"""How an app runs the library's migrations from its own Alembic environment."""

_log = logging.getLogger(__name__)
_STEPS: set[Callable[..., None]] = set()


def is_migration_step(function: object) -> bool:
    """Whether ``function`` was made by `migration_step` (every packaged revision's are)."""
    return function in _STEPS


def migration_step(function: Callable[[], None]) -> Callable[..., None]:
    """Wrap a revision's ``upgrade`` or ``downgrade`` so that it also runs in an app's environment.

    In the library's own environment the function just runs. In an app's, the step resolves
    the target table from the app's ``alembic.ini``, takes the migration lock, compares with the
    library's version table (skipping DDL already applied) and records itself there.

    Args:
        function: The revision's ``upgrade`` or ``downgrade``; it reads its table from
            ``migration_target()``.

    Returns:
        The function Alembic calls.

    Raises:
        TypeError: ``function`` is not named ``upgrade``/``downgrade``, or its module's
            ``down_revision`` is not a single revision (the library's history is linear).
    """
    upgrading = {"upgrade": True, "downgrade": False}.get(function.__name__)
    revision = function.__globals__.get("revision")
    parent = function.__globals__.get("down_revision")
    if upgrading is None or not isinstance(revision, str) or not isinstance(parent, str | None):
        raise TypeError(
            "migration_step wraps upgrade() or downgrade() of a revision module whose"
            " down_revision is one revision or None"
        )

    @functools.wraps(function)
    def step(**_: Any) -> None:
        migration = op.get_context()
        if isinstance(migration.opts.get(TARGET_OPTION), MigrationTarget):
            function()  # the library's own environment: Alembic records the revision itself
            return
        target = app_target(migration.config)
        if migration.as_sql:
            raise ConfigurationError(
                "the agents-persistence revisions cannot be written as offline SQL from an app's"
                " environment: run `alembic upgrade <app branch>@head --sql` for yours and"
                " agents_persistence.migrations.alembic_config(url) with"
                " command.upgrade(config, 'head', sql=True) for ours"
            )
        _run_in_app(migration, target, function, upgrading, revision, parent)

    _STEPS.add(step)
    return step


def _run_in_app(
    migration: MigrationContext,
    target: MigrationTarget,
    function: Callable[[], None],
    upgrading: bool,
    revision: str,
    parent: str | None,
) -> None:
    connection = migration.connection
    assert connection is not None  # online: offline runs were refused above
    with session_lock(connection, target):
        transaction_lock(connection, target)
        library = MigrationContext.configure(
            connection,
            opts={"version_table": target.version_table, "version_table_schema": target.schema},
        )
        recorded = library.get_current_revision()
        applied = _applied(recorded, target)
        where = f"{target.qualified_name} (recorded in {target.version_table})"
        if upgrading and revision in applied:
            _log.info("%s is already at %s or later: skipping its DDL", where, revision)
            return
        if not upgrading and revision not in applied:
            _log.info("%s is already below %s: skipping its DDL", where, revision)
            return
        expected = parent if upgrading else revision
        if recorded != expected:
            raise ConfigurationError(
                f"{where} is at revision {recorded or 'base'}, but this step expects"
                f" {expected or 'base'}: the app's alembic_version and the library's version"
                " table disagree; bring the library's table to the same revision with"
                " `agents-persistence db upgrade <revision>` (or downgrade) first"
            )
        token = STEP_TARGET.set(target)
        try:
            function()
        finally:
            STEP_TARGET.reset(token)
        library.stamp(packaged_scripts(), revision if upgrading else (parent or "base"))


def _applied(recorded: str | None, target: MigrationTarget) -> set[str]:
    """The revisions ``recorded`` includes (itself and its ancestors)."""
    if recorded is None:
        return set()
    scripts = packaged_scripts()
    if recorded not in {script.revision for script in scripts.walk_revisions()}:
        raise ConfigurationError(
            f"{target.qualified_name} is at revision {recorded}, unknown to this version of"
            " agents-persistence: install the version that migrated it"
        )
    return {script.revision for script in scripts.iterate_revisions(recorded, "base")}


def refuse_nested_run(what: str) -> None:
    """Refuse to start our Alembic environment inside another one (an app's env.py or revision).

    Alembic keeps the running environment in module globals (``alembic.context``,
    ``alembic.op``); a nested run would replace them and, when it ends, remove them from under
    the outer run, which then fails after our changes were committed.

    Raises:
        ConfigurationError: An Alembic environment is running; the message names the way that
            works.
    """
    if hasattr(context, "config"):
        raise ConfigurationError(
            f"{what} cannot run inside another Alembic run (an app's env.py or one of its"
            f" revisions): {SUPPORTED_WAY}"
        )
