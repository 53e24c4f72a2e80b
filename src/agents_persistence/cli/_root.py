"""The command tree: global options on the root, then every command and command group."""

from __future__ import annotations

from typing import Annotated

import typer

from agents_persistence import __version__
from agents_persistence.cli._common import (
    DebugOption,
    JsonOption,
    KeysOption,
    KmsKeyOption,
    NamespaceOption,
    UrlOption,
    root_options,
)
from agents_persistence.cli._keyring import KeySource
from agents_persistence.cli.admin import db_app, dynamodb_app
from agents_persistence.cli.demo import demo
from agents_persistence.cli.maintenance import keys_app, migrate_payloads
from agents_persistence.cli.threads import purge_expired, threads_app
from agents_persistence.cli.transfer import copy_threads, export_threads, import_threads

__all__ = ["app"]

app = typer.Typer(
    name="agents-persistence",
    help=(
        "Persist AI-agent state per conversation thread: run the demo, inspect and delete"
        " threads, migrate SQL schemas, move threads between stores, and rotate encryption keys."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"agents-persistence {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
    keys: KeysOption = None,
    kms_key_id: KmsKeyOption = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Global options given here apply to the command that follows (its own options win)."""
    root_options(ctx, url, namespace, as_json, debug, KeySource(keys, tuple(kms_key_id or ())))


app.command("demo")(demo)
app.add_typer(threads_app, name="threads")
app.command("purge-expired")(purge_expired)
app.add_typer(db_app, name="db")
app.add_typer(dynamodb_app, name="dynamodb")
app.command("export")(export_threads)
app.command("import")(import_threads)
app.command("copy")(copy_threads)
app.add_typer(keys_app, name="keys")
app.command("migrate-payloads")(migrate_payloads)
