"""Apps made with ``alembic init`` adopt the library's migrations the documented way.

Each test builds an app from Alembic's own templates (generic and async) in a temporary
directory, applies the lines docs/migrations.md gives (read from the document itself), adds an
app revision with an app table, and runs the real ``alembic`` command against a private
SQLite, PostgreSQL or MariaDB database.
"""

from __future__ import annotations

import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from agents_persistence import AgentStateSnapshot, SQLCheckpointer
from agents_persistence.migrations import (
    APP_SCHEMA_OPTION,
    APP_TABLE_OPTION,
    BRANCH_LABEL,
    VERSIONS_RESOURCE,
    check,
    current,
    head_revision,
    upgrade,
    version_table,
    versions_directory,
)
from agents_persistence.migrations._app import is_migration_step
from agents_persistence.migrations._settings import packaged_scripts
from agents_persistence.models.langgraph import langgraph_table_names
from agents_persistence.models.sql import pieces_table_name
from tests.stores.conftest import run_command

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "migrations.md"
BIN = Path(sys.executable).parent
TABLE = "agent_checkpoints"
LG = (pieces_table_name(TABLE), *langgraph_table_names(TABLE))
NO_DIFFERENCE = "No new upgrade operations detected"

APP_MODELS = """
from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()
Table("app_items", metadata, Column("id", Integer, primary_key=True), Column("name", String(50)))
"""

APP_REVISION = '''"""Create the app's table."""

import sqlalchemy as sa
from alembic import op

revision = "app0001"
down_revision = None
branch_labels = ("app",)
depends_on = None


def upgrade():
{nested}    op.create_table(
        "app_items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(50)),
    )


def downgrade():
    op.drop_table("app_items")
'''

NESTED_CALL = """    from agents_persistence.migrations import upgrade_connection

    upgrade_connection(op.get_bind())
"""

NESTED_IN_ENV = """from agents_persistence.migrations import upgrade
upgrade(config.get_main_option("sqlalchemy.url"))
"""

ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mariadb+aiomysql",
}


def _doc_section() -> str:
    text = DOC.read_text()
    start = text.index("## In your app's own Alembic environment")
    return text[start : text.index("\n## ", start + 1)]


def _doc_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _doc_section(), flags=re.DOTALL)


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``alembic init alembic`` and ``alembic init -t async alembic``, run once per session."""
    made = {}
    for name in ("generic", "async"):
        where = tmp_path_factory.mktemp(f"template_{name}")
        _run(where, "alembic", "init", "-t", name, "alembic")
        made[name] = where
    return made


def _run(cwd: Path, program: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_command([str(BIN / program), *args], cwd)
    assert result.returncode == 0, f"{program} {' '.join(args)} failed:\n{result.stderr}"
    return result


def _fails(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    with pytest.raises(AssertionError) as excinfo:
        _run(cwd, "alembic", *args)
    return excinfo.value.args[0]  # type: ignore[no-any-return]


def make_app(
    templates: dict[str, Path],
    tmp_path: Path,
    url: str,
    *,
    template: str = "generic",
    ini_lines: str = "",
    include_name: str | None = None,
    nested_in: str | None = None,
) -> Path:
    """An app from Alembic's template, edited as docs/migrations.md says."""
    app = tmp_path / "app"
    shutil.copytree(templates[template], app)
    (app / "app_models.py").write_text(APP_MODELS)
    nested = NESTED_CALL if nested_in == "revision" else ""
    (app / "alembic" / "versions" / "app0001_create_app_items.py").write_text(
        APP_REVISION.format(nested=nested)
    )

    (ini_block,) = [block for block in _doc_blocks("ini") if "version_locations" in block]
    ini = (app / "alembic.ini").read_text()
    assert "\npath_separator = os\n" in ini
    ini = ini.replace("\npath_separator = os\n", "\n")
    ini = ini.replace("[alembic]\n", "[alembic]\n" + ini_block + ini_lines, 1)
    ini = re.sub(r"(?m)^sqlalchemy\.url = .*$", f"sqlalchemy.url = {url.replace('%', '%%')}", ini)
    (app / "alembic.ini").write_text(ini)

    env_block = next(block for block in _doc_blocks("python") if "include_name=" in block)
    import_line = env_block.splitlines()[0]
    assert import_line == "from agents_persistence.migrations import include_name"
    assert "include_name=include_name," in env_block
    env = (app / "alembic" / "env.py").read_text()
    header = import_line + "\nfrom app_models import metadata\n"
    if include_name is not None:
        header += f"from agents_persistence.migrations import make_include_name\n{include_name}\n"
    if nested_in == "env.py":
        header += NESTED_IN_ENV
    env = env.replace("target_metadata = None\n", "target_metadata = metadata\n")
    env = env.replace("config = context.config\n", "config = context.config\n" + header, 1)
    configured = env.count("target_metadata=target_metadata")
    env = env.replace(
        "target_metadata=target_metadata",
        "target_metadata=target_metadata, include_name=include_name",
    )
    assert configured == 2, "the template's two context.configure() calls"
    (app / "alembic" / "env.py").write_text(env)
    return app


def _dialect(url: str) -> str:
    return sa.make_url(url).get_backend_name()


def _query(url: str, fn: Callable[[sa.Connection], Any]) -> Any:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return fn(conn)
    finally:
        engine.dispose()


def _tables(url: str, schema: str | None = None) -> set[str]:
    return set(_query(url, lambda conn: sa.inspect(conn).get_table_names(schema=schema)))


def _versions(url: str, table: str = "alembic_version") -> set[str]:
    statement = f"SELECT version_num FROM {table}"
    return set(_query(url, lambda conn: conn.exec_driver_sql(statement).scalars().all()))


def _save_and_load(url: str, thread: str, **options: Any) -> AgentStateSnapshot | None:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        checkpointer = SQLCheckpointer(engine, **options)
        checkpointer.save_state(thread, AgentStateSnapshot(scratchpad={"thread": thread}))
        return checkpointer.load_state(thread)
    finally:
        engine.dispose()


def _load(url: str, thread: str) -> AgentStateSnapshot | None:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        return SQLCheckpointer(engine).load_state(thread)
    finally:
        engine.dispose()


# --- the documented way, end to end --------------------------------------------------------


def test_the_apps_own_alembic_brings_and_keeps_the_library_table(
    templates: dict[str, Path], tmp_path: Path, db_url: str
) -> None:
    app = make_app(templates, tmp_path, db_url)

    _run(app, "alembic", "upgrade", "heads")

    assert _tables(db_url) == {"app_items", "alembic_version", TABLE, version_table(TABLE), *LG}
    assert _versions(db_url) == {"app0001", head_revision()}
    assert current(db_url) == head_revision(), "the library's own record agrees"
    assert _save_and_load(db_url, "t-1") == AgentStateSnapshot(scratchpad={"thread": "t-1"})

    shown = _run(app, "alembic", "current").stdout
    assert "app0001 (head)" in shown
    assert f"{head_revision()} (head)" in shown
    assert NO_DIFFERENCE in _run(app, "alembic", "check").stdout

    # The library's own command afterwards: nothing to do.
    done = _run(ROOT, "agents-persistence", "db", "upgrade", "--url", db_url)
    assert "already at revision" in done.stdout, done.stdout
    upgrade(db_url)
    assert _versions(db_url, version_table(TABLE)) == {head_revision()}
    check(db_url)  # at head, and the table is the one the model declares

    _run(app, "alembic", "downgrade", "app@base")

    assert _tables(db_url) == {"alembic_version", TABLE, version_table(TABLE), *LG}
    assert _versions(db_url) == {head_revision()}
    assert _load(db_url, "t-1") == AgentStateSnapshot(scratchpad={"thread": "t-1"})

    _run(app, "alembic", "downgrade", f"{BRANCH_LABEL}@base")

    assert _tables(db_url) == {"alembic_version", version_table(TABLE)}
    assert _versions(db_url) == set()
    assert current(db_url) is None


def test_history_labels_and_new_app_revisions_extend_the_apps_branch(
    templates: dict[str, Path], tmp_path: Path, sqlite_url: str
) -> None:
    app = make_app(templates, tmp_path, sqlite_url)

    history = _run(app, "alembic", "history").stdout

    revisions = list(packaged_scripts().walk_revisions())
    for script in revisions:
        assert script.revision in history
    base = revisions[-1].revision
    assert f"<base> -> {base} ({BRANCH_LABEL})" in history
    assert "<base> -> app0001 (app)" in history
    assert _tables(sqlite_url) == set(), "history reads no database"

    # As docs/migrations.md says: with two heads, a new revision names the line it extends.
    _run(app, "alembic", "upgrade", "heads")
    _run(app, "alembic", "revision", "--autogenerate", "-m", "next", "--head", "app@head")

    (written,) = (app / "alembic" / "versions").glob("*_next.py")
    source = written.read_text()
    assert "down_revision: Union[str, Sequence[str], None] = 'app0001'" in source
    assert "op." not in source, "autogenerate proposes nothing for the library's tables"


def test_an_async_app_upgrades_with_its_own_alembic(
    templates: dict[str, Path], tmp_path: Path, db_url: str
) -> None:
    async_url = sa.make_url(db_url).set(drivername=ASYNC_DRIVERS[_dialect(db_url)])
    rendered = async_url.render_as_string(hide_password=False)
    app = make_app(templates, tmp_path, rendered, template="async")

    _run(app, "alembic", "upgrade", "heads")

    assert _versions(db_url) == {"app0001", head_revision()}
    assert current(db_url) == head_revision()
    assert NO_DIFFERENCE in _run(app, "alembic", "check").stdout
    assert _save_and_load(db_url, "t-async") is not None


def test_the_filter_is_what_keeps_the_apps_autogenerate_quiet(
    templates: dict[str, Path], tmp_path: Path, sqlite_url: str
) -> None:
    # The same app, with a filter that lets everything through: autogenerate wants to drop ours.
    app = make_app(
        templates, tmp_path, sqlite_url, include_name="include_name = lambda *args: True"
    )
    _run(app, "alembic", "upgrade", "heads")

    failure = _fails(app, "check")

    assert "remove_table" in failure
    assert TABLE in failure


# --- adopting, other tables, refusals -------------------------------------------------------


def test_a_database_migrated_by_the_library_adopts_the_apps_alembic(
    templates: dict[str, Path], tmp_path: Path, db_url: str
) -> None:
    upgrade(db_url)
    _save_and_load(db_url, "kept")
    app = make_app(templates, tmp_path, db_url)

    _run(app, "alembic", "upgrade", "heads")

    assert _versions(db_url) == {"app0001", head_revision()}
    assert current(db_url) == head_revision()
    assert _load(db_url, "kept") == AgentStateSnapshot(scratchpad={"thread": "kept"})


def test_table_and_schema_come_from_alembic_ini(
    templates: dict[str, Path], tmp_path: Path, postgresql_url: str
) -> None:
    schema = "agents_" + uuid.uuid4().hex[:8]
    _query(
        postgresql_url,
        lambda conn: (conn.exec_driver_sql(f"CREATE SCHEMA {schema}"), conn.commit()),
    )
    (table_block,) = [block for block in _doc_blocks("ini") if APP_TABLE_OPTION in block]
    assert APP_SCHEMA_OPTION in table_block
    lines = table_block.replace("support_bot_checkpoints", "support_cp").replace(
        "= agents", f"= {schema}"
    )
    app = make_app(
        templates,
        tmp_path,
        postgresql_url,
        ini_lines=lines,
        include_name="include_name = make_include_name(['support_cp'])",
    )

    _run(app, "alembic", "upgrade", "heads")

    assert _tables(postgresql_url, schema) == {
        "support_cp",
        version_table("support_cp"),
        pieces_table_name("support_cp"),
        *langgraph_table_names("support_cp"),
    }
    assert TABLE not in _tables(postgresql_url)
    assert current(postgresql_url, table_name="support_cp", schema=schema) == head_revision()
    assert _save_and_load(postgresql_url, "t", table_name="support_cp", schema=schema) is not None
    assert NO_DIFFERENCE in _run(app, "alembic", "check").stdout


@pytest.mark.parametrize("nested_in", ["env.py", "revision"])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_nested_upgrade_is_refused_naming_the_supported_way(
    request: pytest.FixtureRequest,
    templates: dict[str, Path],
    tmp_path: Path,
    backend: str,
    nested_in: str,
) -> None:
    url: str = request.getfixturevalue(f"{backend}_url")
    app = make_app(templates, tmp_path, url, nested_in=nested_in)

    failure = _fails(app, "upgrade", "app@head")

    assert "ConfigurationError" in failure
    assert "cannot run inside another Alembic run" in failure
    assert VERSIONS_RESOURCE in failure
    assert "version_locations" in failure
    assert "KeyError" not in failure
    assert not _tables(url) & {TABLE, version_table(TABLE), "app_items"}, "nothing committed"


def test_offline_sql_of_the_library_revisions_is_refused(
    templates: dict[str, Path], tmp_path: Path, sqlite_url: str
) -> None:
    app = make_app(templates, tmp_path, sqlite_url)

    failure = _fails(app, "upgrade", f"{BRANCH_LABEL}@head", "--sql")

    assert "offline SQL" in failure
    assert "alembic_config(url)" in failure


def test_records_that_disagree_are_refused_before_any_change(
    templates: dict[str, Path], tmp_path: Path, sqlite_url: str
) -> None:
    upgrade(sqlite_url)
    table = version_table(TABLE)
    _query(
        sqlite_url,
        lambda conn: (
            conn.exec_driver_sql(f"UPDATE {table} SET version_num = 'ffffffffffff'"),
            conn.commit(),
        ),
    )
    app = make_app(templates, tmp_path, sqlite_url)

    failure = _fails(app, "upgrade", "heads")

    assert "unknown to this version" in failure
    assert _versions(sqlite_url, table) == {"ffffffffffff"}
    assert head_revision() not in _versions(sqlite_url)


# --- the packaged revisions ------------------------------------------------------------------


def test_every_packaged_revision_runs_as_a_migration_step() -> None:
    scripts = list(packaged_scripts().walk_revisions())
    assert scripts
    for script in scripts:
        assert is_migration_step(script.module.upgrade), script.path
        assert is_migration_step(script.module.downgrade), script.path
    (base,) = [script for script in scripts if script.down_revision is None]
    assert base.branch_labels == {BRANCH_LABEL}
    assert Path(versions_directory()).resolve() == Path(base.path).parent.resolve()
