"""``threads list|show|delete`` and ``purge-expired``: look at and tidy one namespace."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from agents_persistence.cli._common import (
    DebugOption,
    JsonOption,
    KeysOption,
    KmsKeyOption,
    NamespaceOption,
    Run,
    UrlOption,
    iso,
    plural,
    stdin_is_terminal,
)

if TYPE_CHECKING:
    from datetime import datetime

    from agents_persistence.contract import CheckpointInfo

__all__ = ["info_dict", "purge_expired", "threads_app", "threads_table"]

threads_app = typer.Typer(
    help="List, show and delete the threads of a namespace.", no_args_is_help=True
)

ThreadIdArgument = Annotated[
    str, typer.Argument(metavar="ID", help="The thread id.", show_default=False)
]


def info_dict(info: CheckpointInfo) -> dict[str, Any]:
    """A thread's metadata as JSON-ready data."""
    return {
        "thread_id": info.thread_id,
        "version": info.version,
        "created_at": iso(info.created_at),
        "updated_at": iso(info.updated_at),
        "expires_at": iso(info.expires_at),
        "size": info.size,
    }


def _short(moment: datetime | None) -> str:
    return "never" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def threads_table(threads: list[CheckpointInfo], title: str | None = None) -> Table:
    """A rich table of threads (id, version, last update, expiry, size)."""
    table = Table(title=title, title_justify="left")
    table.add_column("thread", overflow="fold")
    table.add_column("version", justify="right")
    table.add_column("updated")
    table.add_column("expires")
    table.add_column("size (bytes)", justify="right")
    for info in threads:
        table.add_row(
            Text(info.thread_id),  # ids are data, never rich markup
            str(info.version),
            _short(info.updated_at),
            _short(info.expires_at),
            str(info.size),
        )
    return table


@threads_app.command("list")
def list_threads(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", min=1, max=1000, help="Threads per page.")
    ] = 20,
    everything: Annotated[
        bool, typer.Option("--all", help="Every thread, fetched page by page.")
    ] = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    keys: KeysOption = None,
    kms_key_id: KmsKeyOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """List threads, most recently updated first."""
    with Run(ctx, url=url, namespace=namespace, as_json=as_json, debug=debug) as run:
        run.notice_default_url()
        checkpointer = run.open()
        next_cursor: str | None = None
        if everything:
            threads = list(checkpointer.iter_threads(page_size=limit))
        else:
            page = checkpointer.list_threads(limit=limit)
            threads, next_cursor = page.threads, page.next_cursor
        if run.as_json:
            run.emit(
                {
                    "namespace": run.namespace,
                    "threads": [info_dict(info) for info in threads],
                    "more": next_cursor is not None,
                }
            )
            return
        if not threads:
            run.out.print(f"no threads in namespace {run.namespace!r}")
            return
        run.out.print(threads_table(threads))
        shown = plural(len(threads), "thread")
        more = "; more exist (use --all or a larger --limit)" if next_cursor else ""
        run.out.print(f"{shown} in namespace {run.namespace!r}{more}")


@threads_app.command("show")
def show_thread(
    ctx: typer.Context,
    thread_id: ThreadIdArgument,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    keys: KeysOption = None,
    kms_key_id: KmsKeyOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Show a thread's state, version, timestamps, expiry and size."""
    with Run(ctx, url=url, namespace=namespace, as_json=as_json, debug=debug) as run:
        run.notice_default_url()
        checkpoint = run.open().load_checkpoint(thread_id)
        if checkpoint is None:
            run.fail(f"thread {thread_id!r} not found in namespace {run.namespace!r}")
        state = json.loads(checkpoint.state.model_dump_json())
        if run.as_json:
            run.emit({**info_dict(checkpoint.info), "state": state})
            return
        info = checkpoint.info
        run.out.print(f"thread     {info.thread_id}", markup=False)
        run.out.print(f"namespace  {run.namespace}", markup=False)
        run.out.print(f"version    {info.version}")
        run.out.print(f"created    {iso(info.created_at)}")
        run.out.print(f"updated    {iso(info.updated_at)}")
        run.out.print(f"expires    {iso(info.expires_at) or 'never'}")
        run.out.print(f"size       {info.size} bytes")
        run.out.print(JSON.from_data(state, indent=2))


@threads_app.command("delete")
def delete_thread(
    ctx: typer.Context,
    thread_id: ThreadIdArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    keys: KeysOption = None,
    kms_key_id: KmsKeyOption = None,
    debug: DebugOption = False,
) -> None:
    """Delete a thread (asks first on a terminal unless --yes)."""
    with Run(ctx, url=url, namespace=namespace, as_json=False, debug=debug) as run:
        run.notice_default_url()
        if not yes:
            if not stdin_is_terminal():
                run.usage("refusing to delete without confirmation: pass --yes")
            typer.confirm(
                f"Delete thread {thread_id!r} from namespace {run.namespace!r}?", abort=True
            )
        if not run.open().delete_thread(thread_id):
            run.fail(f"thread {thread_id!r} not found in namespace {run.namespace!r}")
        run.out.print(
            f"deleted thread {thread_id!r} from namespace {run.namespace!r}", markup=False
        )


def purge_expired(
    ctx: typer.Context,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    keys: KeysOption = None,
    kms_key_id: KmsKeyOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Physically remove expired threads a store still keeps (Redis and DynamoDB expire them)."""
    with Run(ctx, url=url, namespace=namespace, as_json=as_json, debug=debug) as run:
        run.notice_default_url()
        removed = run.open().purge_expired()
        if run.as_json:
            run.emit({"namespace": run.namespace, "purged": removed})
            return
        run.out.print(
            f"purged {plural(removed, 'expired thread')} from namespace {run.namespace!r}"
        )
