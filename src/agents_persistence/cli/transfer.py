"""``export``, ``import`` and ``copy``: move the threads of a namespace between stores.

Every thread keeps its version and timestamps (``restore_checkpoint``), and every run can be
repeated: a thread the target already holds at the same or a newer version is skipped, so an
interrupted run is finished by running it again.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from agents_persistence.cli._common import (
    DebugOption,
    JsonOption,
    KeysOption,
    KmsKeyOption,
    NamespaceOption,
    Run,
    UrlOption,
    describe_store,
    explain,
    plural,
    progress_bar,
    redact,
)
from agents_persistence.cli._exchange import (
    Entry,
    LineError,
    Outcome,
    encode_header,
    encode_thread,
    parse_header,
    parse_thread,
    put,
)
from agents_persistence.cli._rust import copy_rust
from agents_persistence.errors import (
    CheckpointerError,
    InvalidArgumentError,
    StateTooLargeError,
)
from agents_persistence.snapshot import AgentStateSnapshot

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["copy_threads", "export_threads", "import_threads"]


def _tally(counts: Counter[str]) -> str:
    return (
        f"{counts['written']} written, {counts['skipped']} skipped (already up to date),"
        f" {counts['expired']} skipped (expired)"
    )


def _report(run: Run, verb: str, counts: Counter[str], target: str) -> None:
    if run.as_json:
        run.emit(
            {
                "namespace": target,
                "written": counts["written"],
                "skipped": counts["skipped"],
                "expired": counts["expired"],
            }
        )
        return
    total = sum(counts.values())
    run.out.print(
        f"{verb} {plural(total, 'thread')} into namespace {target!r}: {_tally(counts)}",
        markup=False,
    )


def export_threads(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="File to write (default: standard output).",
            dir_okay=False,
        ),
    ] = None,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    keys: KeysOption = None,
    kms_key_id: KmsKeyOption = None,
    debug: DebugOption = False,
) -> None:
    """Write every thread of a namespace as JSON Lines (a header line, then one thread per line)."""
    with Run(ctx, url=url, namespace=namespace, as_json=False, debug=debug) as run:
        run.notice_default_url()
        source = run.open()
        header = encode_header(run.namespace, describe_store(run.url), datetime.now(UTC))
        if output is None:
            with _utf8_stdout() as stream:
                count = _export(run, source, header, stream)
            run.err.print(
                f"exported {plural(count, 'thread')} from namespace {run.namespace!r}",
                markup=False,
            )
            return
        # Written beside the target and renamed at the end, so a failed export never leaves a
        # file that looks complete.
        try:
            handle, partial = tempfile.mkstemp(
                prefix=f".{output.name}.", suffix=".partial", dir=output.resolve().parent
            )
        except OSError as exc:
            run.usage(f"cannot write {output}: {exc.strerror}")
        try:
            with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
                count = _export(run, source, header, stream)
            Path(partial).replace(output)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        run.out.print(
            f"exported {plural(count, 'thread')} from namespace {run.namespace!r} to {output}",
            markup=False,
        )


@contextlib.contextmanager
def _utf8_stdout() -> Iterator[IO[str]]:
    """Standard output as UTF-8 text whatever the locale says (exports are UTF-8 by definition)."""
    binary = sys.stdout.buffer
    stream = io.TextIOWrapper(binary, encoding="utf-8", newline="\n", write_through=True)
    try:
        yield stream
    finally:
        stream.flush()
        stream.detach()  # leaves standard output open


def _export(run: Run, source: Any, header: str, stream: IO[str]) -> int:
    stream.write(header + "\n")
    count = 0
    with progress_bar(run, "exporting", None) as advance:
        for thread in source.iter_threads(page_size=100):
            checkpoint = source.load_checkpoint(thread.thread_id)
            if checkpoint is None:
                continue  # deleted or expired since it was listed
            stream.write(encode_thread(checkpoint.info, checkpoint.state) + "\n")
            count += 1
            advance()
    stream.flush()
    return count


def import_threads(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE", help="Export file to read ('-' for standard input).", show_default=False
        ),
    ],
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    keys: KeysOption = None,
    kms_key_id: KmsKeyOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Read an export file into a namespace, keeping versions and timestamps; safe to rerun."""
    with Run(ctx, url=url, namespace=namespace, as_json=as_json, debug=debug) as run:
        run.notice_default_url()
        with _open_input(run, file) as (stream, total):
            target = run.open()
            counts: Counter[str] = Counter()
            lines = enumerate(stream, start=1)
            first = next(lines, None)
            if first is None:
                run.fail(f"{file}: empty file (line 1 must be the export header)")
            number = 1
            try:
                parse_header(first[1])
                with progress_bar(run, "importing", total) as advance:
                    for number, raw in lines:
                        if raw.strip():
                            counts[_import_line(target, raw, number)] += 1
                            advance()
            except LineError as exc:
                run.fail(
                    f"{file}: {exc}; nothing of line {exc.number} was written{_before(counts)}."
                    " Fix the line and run the import again (threads already imported are skipped)"
                )
            except CheckpointerError as exc:
                if run.debug:
                    raise
                why = explain(exc, run.url)[0]
                run.fail(
                    f"{file}: line {number}: {why}; nothing of line {number} was"
                    f" written{_before(counts)}. Run the import again to finish"
                    " (threads already imported are skipped)"
                )
        _report(run, "imported", counts, run.namespace)


def _before(counts: Counter[str]) -> str:
    return f"; before it: {_tally(counts)}" if counts else ""


def _import_line(target: Any, raw: bytes, number: int) -> Outcome:
    entry = parse_thread(raw, number, AgentStateSnapshot)
    try:
        return put(target, entry, datetime.now(UTC))
    except (StateTooLargeError, InvalidArgumentError) as exc:
        # The line's content is what the store refused: the fix is in the file.
        raise LineError(number, f"thread {entry.info.thread_id!r}: {exc}") from exc


@contextlib.contextmanager
def _open_input(run: Run, file: str) -> Iterator[tuple[IO[bytes], int | None]]:
    """The export file as bytes lines, and its number of thread lines when it is a file."""
    if file == "-":
        yield sys.stdin.buffer, None
        return
    path = Path(file)
    try:
        stream = path.open("rb")
    except OSError as exc:
        run.usage(f"cannot read {file}: {exc.strerror}")
    with stream:
        total = None
        if run.err.is_terminal:
            # Counting lines first gives the bar its length; only worth it when a bar is shown.
            total = max(sum(1 for line in stream if line.strip()) - 1, 0)
            stream.seek(0)
        yield stream, total


def copy_threads(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option("--to", metavar="URL", help="URL of the target store.", show_default=False),
    ],
    to_namespace: Annotated[
        str | None,
        typer.Option(
            "--to-namespace",
            metavar="NAME",
            help="Target namespace (default: the source's).",
            show_default=False,
        ),
    ] = None,
    from_url: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="URL",
            help=(
                "Source store (same as --url), or a Rust Deep Agents SDK store:"
                " rust+postgresql://...?table=, rust+redis://...?namespace=,"
                " rust+dynamodb://TABLE?region=&endpoint= (see docs/from-rust.md)."
            ),
            show_default=False,
        ),
    ] = None,
    to_keys: Annotated[
        Path | None,
        typer.Option(
            "--to-keys",
            metavar="FILE",
            help="Key file of the target store (default: the source's keys, if any).",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    to_plaintext: Annotated[
        bool,
        typer.Option(
            "--to-plaintext", help="Write the target in clear (decrypting an encrypted source)."
        ),
    ] = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    keys: KeysOption = None,
    kms_key_id: KmsKeyOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Copy every thread of a namespace to another store, keeping versions; safe to rerun.

    With --from rust+...://, copy a Rust Deep Agents SDK store's threads instead (each at
    version 1; a thread the target already holds is skipped).

    The target is written with the source's keys unless --to-keys names others or
    --to-plaintext writes it in clear: copying a plaintext store with --keys encrypts the copy.
    """
    if to_keys is not None and to_plaintext:
        raise typer.BadParameter(
            "give --to-keys or --to-plaintext, not both", param_hint="--to-keys"
        )
    if from_url is not None and url is not None and from_url != url:
        raise typer.BadParameter("give the source once: --from or --url", param_hint="--from")
    with Run(ctx, url=from_url or url, namespace=namespace, as_json=as_json, debug=debug) as run:
        target_namespace = to_namespace or run.namespace
        target_keys = None if to_plaintext else run.keys_from(to_keys) or run.keys
        if run.url.lower().startswith("rust+"):
            copy_rust(run, run.url, to, target_namespace, progress_bar, keys=target_keys)
            return
        run.notice_default_url()
        if to == run.url and target_namespace == run.namespace:
            run.usage(
                "source and target are the same store and namespace: change --to or --to-namespace"
            )
        source = run.open()
        target = run.open(url=to, namespace=target_namespace, keys=target_keys)
        counts: Counter[str] = Counter()
        with progress_bar(run, f"copying to {redact(to)}", None) as advance:
            for thread in source.iter_threads(page_size=100):
                checkpoint = source.load_checkpoint(thread.thread_id)
                if checkpoint is None:
                    continue  # deleted or expired since it was listed
                entry = Entry(checkpoint.info, checkpoint.state)
                try:
                    counts[put(target, entry, datetime.now(UTC))] += 1
                except CheckpointerError as exc:
                    if run.debug:
                        raise
                    run.fail(
                        f"thread {thread.thread_id!r}: {explain(exc, to)[0]}{_before(counts)};"
                        " run the copy again to finish (threads already copied are skipped)"
                    )
                advance()
        _report(run, "copied", counts, target_namespace)
