"""``keys generate``, ``keys rotate`` and ``migrate-payloads``: keys and in-place rewrites.

``keys rotate`` and ``migrate-payloads`` are one loop (`agents_persistence.maintenance`): every
thread of the namespace stored otherwise than the checkpointer writes now (in clear or under an
older key; at an older schema version) is rewritten in place, keeping its version and
timestamps, conditionally on the version read. Both are resumable by running them again.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from agents_persistence.cli._common import (
    DebugOption,
    JsonOption,
    KeysOption,
    KmsKeyOption,
    NamespaceOption,
    Run,
    UrlOption,
    plural,
    progress_bar,
)
from agents_persistence.errors import ConfigurationError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from agents_persistence.maintenance import Outcome, RefreshReport
    from agents_persistence.upcasting import Upcasters

__all__ = ["keys_app", "migrate_payloads"]

keys_app = typer.Typer(
    help="Create keys and re-encrypt a store under its active key.", no_args_is_help=True
)

PageSizeOption = Annotated[
    int,
    typer.Option(
        "--page-size", metavar="N", min=1, max=1000, help="Threads listed and refreshed per page."
    ),
]
DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", help="Read every thread and count what would be rewritten."),
]
StateTypeOption = Annotated[
    str | None,
    typer.Option(
        "--state-type",
        metavar="MODULE:CLASS",
        help=(
            "The app's state model (a pydantic class), imported from the current directory or"
            " the Python path. Default: the upcasters' model, else AgentStateSnapshot."
        ),
        show_default=False,
    ),
]
UpcastersOption = Annotated[
    str | None,
    typer.Option(
        "--upcasters",
        metavar="MODULE:NAME",
        help="The app's Upcasters of the state model (agents_persistence.upcasting).",
        show_default=False,
    ),
]


# --- keys generate ---------------------------------------------------------------------------


@keys_app.command("generate")
def generate(
    key_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            metavar="ID",
            help="Id of the new key. Default: today's date (UTC).",
            show_default=False,
        ),
    ] = None,
    keyring: Annotated[
        Path | None,
        typer.Option(
            "--keyring",
            metavar="FILE",
            help=(
                "Add the key to this keyring file as its active key, keeping the older keys for"
                " reading (created, readable by its owner only, if missing). Without it the new"
                " keyring is printed on standard output."
            ),
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Create a random 256-bit key for a local keyring (see docs/security.md).

    Without --keyring, prints a keyring of the new key alone as JSON: redirect it to a file
    only its owner may read, or into a secret manager. With --keyring FILE, adds it to FILE as
    the active key; then run `keys rotate --keys FILE` to move every thread onto it.
    """
    from agents_persistence.encryption import LocalKeyring, generate_key, validate_key_id

    new_id = key_id or datetime.now(UTC).strftime("%Y-%m-%d")
    try:
        validate_key_id(new_id)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--id") from None
    if keyring is None:
        ring = LocalKeyring(active=new_id, keys={new_id: generate_key()})
        typer.echo(json.dumps(ring.to_dict(), indent=2))
        return
    try:
        if keyring.exists():
            ring = LocalKeyring.from_file(keyring).with_key(new_id, generate_key())
        else:
            ring = LocalKeyring(active=new_id, keys={new_id: generate_key()})
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _write_private(keyring, json.dumps(ring.to_dict(), indent=2) + "\n")
    older = sorted(ring.key_ids - {new_id})
    typer.echo(
        f"added key {new_id!r} to {keyring} as the active key"
        + (f"; older keys kept for reading: {', '.join(older)}" if older else "")
    )


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` atomically, readable and writable by its owner only."""
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.resolve().parent)
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        Path(partial).replace(path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


# --- keys rotate and migrate-payloads --------------------------------------------------------


@keys_app.command("rotate")
def rotate(
    ctx: typer.Context,
    page_size: PageSizeOption = 100,
    dry_run: DryRunOption = False,
    state_type: StateTypeOption = None,
    upcasters: UpcastersOption = None,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    keys: KeysOption = None,
    kms_key_id: KmsKeyOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Re-encrypt every thread of a namespace under the active key; safe to rerun.

    Threads stored in clear or under an older key are rewritten under the active key of
    --keys / --kms-key-id (encrypting an existing plaintext store is the same command), keeping
    their versions and timestamps. Live writers may keep saving: a thread saved meanwhile is
    left to its writer and counted as a conflict. Exits 1 if a thread cannot be read (each is
    named); run it again to finish an interrupted run.
    """
    with Run(ctx, url=url, namespace=namespace, as_json=as_json, debug=debug) as run:
        if run.keys is None:
            run.usage(
                "keys rotate needs the keys to rotate to: --keys FILE or --kms-key-id ID"
                " (or $AGENTS_PERSISTENCE_KEYS_FILE)"
            )
        active = run.keys.active_key_id
        _refresh(run, f"to key {active!r}", state_type, upcasters, page_size, dry_run)


def migrate_payloads(
    ctx: typer.Context,
    upcasters: Annotated[
        str,
        typer.Option(
            "--upcasters",
            metavar="MODULE:NAME",
            help="The app's Upcasters of the state model (agents_persistence.upcasting).",
            show_default=False,
        ),
    ],
    state_type: StateTypeOption = None,
    page_size: PageSizeOption = 100,
    dry_run: DryRunOption = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    keys: KeysOption = None,
    kms_key_id: KmsKeyOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Rewrite threads stored at an older schema version of the state model; safe to rerun.

    Each thread older than the model's schema_version is upcast through --upcasters and
    written at the current version, keeping its version and timestamps. An encrypted store
    needs its keys (--keys / --kms-key-id); with keys, threads in clear or under an older key
    are re-encrypted on the way. Exits 1 if a thread cannot be upcast or read (each is named).
    """
    with Run(ctx, url=url, namespace=namespace, as_json=as_json, debug=debug) as run:
        _refresh(run, "to the current schema", state_type, upcasters, page_size, dry_run)


def _refresh(
    run: Run,
    goal: str,
    state_spec: str | None,
    upcasters_spec: str | None,
    page_size: int,
    dry_run: bool,
) -> None:
    from agents_persistence.maintenance import refresh_threads

    run.notice_default_url()
    model, found = _state_model(run, state_spec, upcasters_spec)
    checkpointer = run.open(state_type=model, upcasters=found)
    verb = "checking" if dry_run else "refreshing"
    with progress_bar(run, f"{verb} namespace {run.namespace!r} {goal}", None) as advance:

        def on_thread(thread_id: str, outcome: Outcome) -> None:
            advance()

        report = refresh_threads(
            checkpointer, page_size=page_size, dry_run=dry_run, progress=on_thread
        )
    _summary(run, goal, report)


def _summary(run: Run, goal: str, report: RefreshReport) -> None:
    if run.as_json:
        run.emit({"namespace": run.namespace, **report.as_dict()})
    else:
        for failure in report.failures:
            run.err.print(
                Text(f"failed: thread {failure.thread_id!r}: {failure.error}: {failure.message}"),
                soft_wrap=True,
            )
        counts = [
            f"{report.rewritten} rewritten",
            f"{report.current} current",
            f"{report.conflict} conflict",
            f"{report.gone} gone",
            f"{report.failed} failed",
        ]
        if report.dry_run:
            counts[0] = f"{report.stale} to rewrite"
        head = "dry run: " if report.dry_run else ""
        run.out.print(
            Text(
                f"{head}{plural(report.total, 'thread')} of namespace {run.namespace!r}"
                f" {goal}: {', '.join(counts)}"
            )
        )
        if report.conflict:
            run.out.print(
                "threads in conflict were saved by a live writer meanwhile;"
                " run the command again once every writer uses the new settings",
                markup=False,
            )
    if report.failed:
        raise typer.Exit(1)


def _state_model(
    run: Run, state_spec: str | None, upcasters_spec: str | None
) -> tuple[type[BaseModel] | None, Upcasters | None]:
    """The state model and upcasters named by --state-type and --upcasters (imported)."""
    from pydantic import BaseModel

    from agents_persistence.upcasting import Upcasters

    model = None if state_spec is None else _import(run, state_spec, "--state-type")
    if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
        run.usage(f"--state-type {state_spec}: not a pydantic model class")
    found = None if upcasters_spec is None else _import(run, upcasters_spec, "--upcasters")
    if found is not None and not isinstance(found, Upcasters):
        run.usage(f"--upcasters {upcasters_spec}: not an agents_persistence Upcasters")
    if found is not None:
        if model is None:
            model = found.state_type
        elif found.state_type is not model:
            run.usage(
                f"--upcasters {upcasters_spec} upgrades {found.state_type.__name__},"
                f" not {model.__name__}"
            )
    return model, found


def _import(run: Run, spec: str, option: str) -> Any:
    """The object ``module:attr`` names; the current directory is importable, as for ``-m``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        run.usage(f"{option} {spec}: expected MODULE:NAME")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        run.usage(f"{option} {spec}: cannot import {module_name} ({exc})")
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            run.usage(f"{option} {spec}: {module_name} has no attribute {attribute}")
    return found
