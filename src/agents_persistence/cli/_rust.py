"""``copy --from rust+...``: copy the threads of a Rust Deep Agents SDK store, and its report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents_persistence.cli._common import plural, redact

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from agents_persistence._keys import KeyProvider
    from agents_persistence.cli._common import Run
    from agents_persistence.rust import CopyReport

__all__ = ["copy_rust"]


def _summary(report: CopyReport) -> str:
    return (
        f"{report.copied} copied, {report.skipped} skipped (already in the target),"
        f" {report.expired} skipped (expired or gone), {len(report.failed)} failed"
    )


def copy_rust(
    run: Run,
    source_url: str,
    to: str,
    namespace: str,
    progress: Callable[[Run, str, int | None], AbstractContextManager[Callable[[], None]]],
    *,
    keys: KeyProvider | None = None,
) -> None:
    """Copy every thread of the Rust store ``source_url`` into ``to``'s ``namespace``.

    Each failed thread gets a line on stderr; the command exits 1 if any failed (the others
    are copied), after the summary. With ``keys`` the target is written encrypted.
    """
    from agents_persistence.rust import copy_from_rust, open_rust_source

    source = open_rust_source(source_url)
    try:
        target = run.open(url=to, namespace=namespace, keys=keys)
        with progress(run, f"copying {source.describe()} to {redact(to)}", None) as advance:

            def on_thread(thread_id: str, outcome: str, reason: str | None) -> None:
                if reason is not None:
                    run.err.print(f"failed: {reason}", soft_wrap=True, markup=False)
                advance()

            report = copy_from_rust(source, target, on_thread=on_thread)
    finally:
        source.close()
    total = report.copied + report.skipped + report.expired + len(report.failed)
    if run.as_json:
        run.emit(
            {
                "namespace": namespace,
                "copied": report.copied,
                "skipped": report.skipped,
                "expired": report.expired,
                "failed": [
                    {"thread_id": failure.thread_id, "reason": failure.reason}
                    for failure in report.failed
                ],
            }
        )
    else:
        run.out.print(
            f"read {plural(total, 'thread')} from {source.describe()} into namespace"
            f" {namespace!r}: {_summary(report)}",
            markup=False,
            soft_wrap=True,
        )
    if report.failed:
        run.fail(
            f"{plural(len(report.failed), 'thread')} not copied (listed above); nothing of them"
            " was written. Fix them on the Rust side and run the copy again (threads already"
            " copied are skipped)"
        )
