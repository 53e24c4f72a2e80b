"""``db`` (SQL schema migrations) and ``dynamodb`` (table life cycle): the stores' set-up.

The SQL schema belongs to Alembic and the library's own version table
(``agents_persistence.migrations``); DynamoDB tables are made by the store's ``create_table``.
Neither is ever created implicitly by the other commands (the demo on SQLite excepted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from agents_persistence.cli._common import (
    DebugOption,
    JsonOption,
    NamespaceOption,
    Run,
    UrlOption,
    redact,
    scheme_family,
)

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["db_app", "dynamodb_app"]

db_app = typer.Typer(
    help="SQL stores: apply, revert and check the schema migrations.", no_args_is_help=True
)
dynamodb_app = typer.Typer(
    help="DynamoDB stores: create and delete the table.", no_args_is_help=True
)

TableOption = Annotated[
    str | None,
    typer.Option(
        "--table-name",
        metavar="TABLE",
        help="Checkpoint table. Default: agent_checkpoints.",
        show_default=False,
    ),
]
SchemaOption = Annotated[
    str | None,
    typer.Option(
        "--schema",
        metavar="SCHEMA",
        help="Schema (PostgreSQL) or database (MySQL) of the table.",
        show_default=False,
    ),
]


def _migrations(run: Run) -> ModuleType:
    if scheme_family(run.url) not in ("sqlite", "postgresql", "mysql"):
        run.usage(
            "db commands need a SQL URL (sqlite:///PATH, postgresql+psycopg://...,"
            f" mysql+pymysql://...), not {redact(run.url)}"
        )
    from agents_persistence import migrations

    return migrations


def _target(table_name: str | None, schema: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"schema": schema}
    if table_name is not None:
        options["table_name"] = table_name
    return options


def _table(table_name: str | None, schema: str | None) -> str:
    table = table_name or "agent_checkpoints"
    return table if schema is None else f"{schema}.{table}"


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(metavar="REVISION", help="Target revision.")] = "head",
    table_name: TableOption = None,
    schema: SchemaOption = None,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Create the tables or bring them up to REVISION (default: the newest)."""
    with Run(ctx, url=url, namespace=namespace, as_json=as_json, debug=debug) as run:
        _migrate(run, "upgraded", revision, table_name, schema)


@db_app.command("downgrade")
def db_downgrade(
    ctx: typer.Context,
    revision: Annotated[
        str,
        typer.Argument(
            metavar="REVISION",
            help="Target revision ('base' removes the tables).",
            show_default=False,
        ),
    ],
    table_name: TableOption = None,
    schema: SchemaOption = None,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Revert the tables to REVISION; 'base' drops them with every thread in them."""
    with Run(ctx, url=url, namespace=namespace, as_json=as_json, debug=debug) as run:
        _migrate(run, "downgraded", revision, table_name, schema)


def _migrate(
    run: Run, verb: str, revision: str, table_name: str | None, schema: str | None
) -> None:
    """Run the library's migrations up or down to ``revision`` and say what moved."""
    run.notice_default_url()
    migrations = _migrations(run)
    target = _target(table_name, schema)
    step = migrations.upgrade if verb == "upgraded" else migrations.downgrade
    before = migrations.current(run.url, **target)
    step(run.url, revision, **target)
    after = migrations.current(run.url, **target)
    _moved(run, verb, _table(table_name, schema), before, after)


def _moved(run: Run, verb: str, table: str, before: str | None, after: str | None) -> None:
    if run.as_json:
        run.emit({"table": table, "from": before, "to": after})
        return
    if before == after:
        run.out.print(f"{table}: already at revision {after or 'base (no tables)'}", markup=False)
        return
    run.out.print(
        f"{verb} {table} from revision {before or 'base'} to {after or 'base (no tables)'}",
        markup=False,
    )


@db_app.command("current")
def db_current(
    ctx: typer.Context,
    table_name: TableOption = None,
    schema: SchemaOption = None,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Print the revision the tables are at, and the newest one."""
    with Run(ctx, url=url, namespace=namespace, as_json=as_json, debug=debug) as run:
        run.notice_default_url()
        migrations = _migrations(run)
        current = migrations.current(run.url, **_target(table_name, schema))
        head = migrations.head_revision()
        table = _table(table_name, schema)
        if run.as_json:
            run.emit(
                {"table": table, "current": current, "head": head, "up_to_date": current == head}
            )
            return
        state = "up to date" if current == head else f"behind: the newest revision is {head}"
        run.out.print(f"{table}: revision {current or 'base (no tables)'} ({state})", markup=False)


@db_app.command("check")
def db_check(
    ctx: typer.Context,
    table_name: TableOption = None,
    schema: SchemaOption = None,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Exit 0 if the tables are at the newest revision, else 1 with the command that fixes it."""
    with Run(ctx, url=url, namespace=namespace, as_json=as_json, debug=debug) as run:
        run.notice_default_url()
        migrations = _migrations(run)
        target = _target(table_name, schema)
        migrations.check(run.url, **target)
        head = migrations.head_revision()
        table = _table(table_name, schema)
        if run.as_json:
            run.emit({"table": table, "current": head, "head": head, "up_to_date": True})
            return
        run.out.print(f"{table}: up to date (revision {head})", markup=False)


def _dynamodb(run: Run) -> Any:
    if scheme_family(run.url) != "dynamodb":
        run.usage(
            "dynamodb commands need a dynamodb://TABLE?region=...&endpoint=... URL,"
            f" not {redact(run.url)}"
        )
    return run.open()


@dynamodb_app.command("create-table")
def dynamodb_create_table(
    ctx: typer.Context,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the table is active.")
    ] = True,
    table_format: Annotated[
        str | None,
        typer.Option(
            "--table-format",
            help="pieces (the default for a new table: a head item plus piece items per"
            " thread) or single-item (one item per thread, as earlier versions made).",
        ),
    ] = None,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    debug: DebugOption = False,
) -> None:
    """Create the table, its index and its TTL setting (on-demand billing)."""
    with Run(ctx, url=url, namespace=namespace, as_json=False, debug=debug) as run:
        store = _dynamodb(run)
        table = store.table_name
        if store.create_table(wait=wait, table_format=table_format):
            run.out.print(f"created the DynamoDB table {table!r}", markup=False)
        else:
            run.out.print(f"the DynamoDB table {table!r} already exists (checked)", markup=False)


@dynamodb_app.command("delete-table")
def dynamodb_delete_table(
    ctx: typer.Context,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Confirm: every thread in the table is lost.")
    ] = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    debug: DebugOption = False,
) -> None:
    """Delete the table and every thread of every namespace in it (needs --yes)."""
    with Run(ctx, url=url, namespace=namespace, as_json=False, debug=debug) as run:
        if not yes:
            run.usage("deleting the table loses every thread in it: pass --yes to confirm")
        store = _dynamodb(run)
        table = store.table_name
        if not store.delete_table(wait=True):
            run.fail(f"the DynamoDB table {table!r} does not exist")
        run.out.print(f"deleted the DynamoDB table {table!r}", markup=False)


@db_app.command("adopt-rust")
def db_adopt_rust(
    ctx: typer.Context,
    table_name: Annotated[
        str | None,
        typer.Option(
            "--table",
            "--table-name",
            metavar="TABLE",
            help="The Rust SDK's checkpoint table. Default: agent_checkpoints.",
            show_default=False,
        ),
    ] = None,
    schema: SchemaOption = None,
    lock_timeout: Annotated[
        float,
        typer.Option(
            "--lock-timeout",
            metavar="SECONDS",
            help="How long to wait for the table lock before giving up, changing nothing.",
        ),
    ] = 30.0,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help=(
                "Change nothing: check that an adopted table still serves the Rust service"
                " (run it after upgrading the library)."
            ),
        ),
    ] = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Bring a Rust Deep Agents SDK PostgreSQL table under the migrations, in place.

    The Rust service can keep writing during and after it; the table then serves one
    namespace (--namespace, default 'default'). See docs/from-rust.md.
    """
    with Run(ctx, url=url, namespace=namespace, as_json=as_json, debug=debug) as run:
        if scheme_family(run.url) != "postgresql":
            run.usage(
                "db adopt-rust needs the PostgreSQL URL of the Rust table's database"
                f" (postgresql+psycopg://...), not {redact(run.url)}"
            )
        from agents_persistence.rust import adopt_rust_table, verify_rust_writes

        if verify:
            verify_rust_writes(run.url, table_name=table_name or "agent_checkpoints", schema=schema)
            table = _table(table_name, schema)
            if run.as_json:
                run.emit({"table": table, "rust_writes": "ok"})
            else:
                run.out.print(f"{table}: the Rust service's statements work on it", markup=False)
            return

        report = adopt_rust_table(
            run.url,
            table_name=table_name or "agent_checkpoints",
            schema=schema,
            namespace=run.namespace,
            lock_timeout=lock_timeout,
        )
        if run.as_json:
            run.emit(
                {
                    "table": report.table,
                    "namespace": report.namespace,
                    "threads": report.threads,
                    "revision": report.revision,
                }
            )
            return
        run.out.print(
            f"adopted {report.table}: {report.threads} threads now in namespace"
            f" {report.namespace!r}, at revision {report.revision}; the Rust service can keep"
            " writing to it",
            markup=False,
            soft_wrap=True,
        )
