"""Copying a Rust SDK store into the library's stores: states, versions, reruns, failures."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from agents_persistence import AgentStateSnapshot, open_checkpointer
from agents_persistence.cli import app
from agents_persistence.rust import copy_from_rust, open_rust_source

from .conftest import CORRUPT_STATE, RUST_STATES

if TYPE_CHECKING:
    from .conftest import Layout, PostgresLayout


def _fill(layout: Layout) -> dict[str, str]:
    threads = {f"{name}-{n}": state for n in range(3) for name, state in RUST_STATES.items()}
    for thread_id, state in threads.items():
        layout.write(thread_id, state)
    return threads


def test_copy_gives_version_one_and_the_same_states(
    layout: Layout, sql_target: tuple[str, str]
) -> None:
    threads = _fill(layout)
    url, namespace = sql_target
    seen: list[tuple[str, str]] = []
    with (
        open_rust_source(layout.url) as source,
        open_checkpointer(url, namespace=namespace) as target,
    ):
        report = copy_from_rust(
            source, target, page_size=4, on_thread=lambda t, outcome, _: seen.append((t, outcome))
        )
        assert (report.copied, report.skipped, report.expired, report.failed) == (9, 0, 0, [])
        assert sorted(seen) == sorted((t, "copied") for t in threads)
        for thread_id, state_json in threads.items():
            checkpoint = target.load_checkpoint(thread_id)
            assert checkpoint is not None
            assert checkpoint.state == AgentStateSnapshot.model_validate_json(state_json)
            assert checkpoint.info.version == 1
        saved = target.load_checkpoint("interrupted-0")
        assert saved is not None
        # Unknown Rust fields are written to the target too.
        assert saved.state.model_extra == {"rust_only_field": {"kept": True, "list": [1, "two"]}}

        # A rerun copies nothing again, and never touches what the target wrote since.
        target.save_state("plain-0", AgentStateSnapshot(files={"python": "wrote this"}))
        again = copy_from_rust(source, target)
        assert (again.copied, again.skipped, again.failed) == (0, 9, [])
        assert target.load_state("plain-0") == AgentStateSnapshot(files={"python": "wrote this"})


def test_postgresql_copy_keeps_rust_timestamps(rust_pg: PostgresLayout) -> None:
    rust_pg.write("t", RUST_STATES["plain"])
    with rust_pg.conn.cursor() as cursor:
        cursor.execute(
            f"UPDATE {rust_pg.table} SET created_at = '2025-01-02T03:04:05Z',"
            " updated_at = '2025-06-07T08:09:10Z'"
        )
    with (
        open_rust_source(rust_pg.url) as source,
        open_checkpointer("memory://", namespace="n") as target,
    ):
        copy_from_rust(source, target)
        info = target.load_checkpoint("t").info  # type: ignore[union-attr]
    assert info.created_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert info.updated_at == datetime(2025, 6, 7, 8, 9, 10, tzinfo=UTC)
    assert info.expires_at is None


@pytest.mark.parametrize("layout", ["redis", "dynamodb"], indirect=True)
def test_copy_carries_the_rust_ttl_and_skips_expired(layout: Layout) -> None:
    layout.write("live", RUST_STATES["plain"], ttl=600)
    layout.write("gone", RUST_STATES["plain"], ttl=600)
    layout.expire("gone")
    with (
        open_rust_source(layout.url) as source,
        open_checkpointer("memory://", namespace="n") as target,
    ):
        report = copy_from_rust(source, target)
        assert (report.copied, report.expired) == (1, 1)
        info = target.load_checkpoint("live").info  # type: ignore[union-attr]
        assert target.load_checkpoint("gone") is None
    assert info.expires_at is not None
    assert timedelta(minutes=9) < info.expires_at - datetime.now(UTC) <= timedelta(minutes=10)


def test_undecodable_records_and_refused_ids_fail_alone(
    layout: Layout, sql_target: tuple[str, str]
) -> None:
    layout.write("good", RUST_STATES["interrupted"])
    layout.write("bad-json", CORRUPT_STATE)
    broken = {"bad-json", "x" * 300}
    if layout.name != "postgresql":  # JSONB cannot hold it; strings can
        layout.write("not json at all", "{oops")
        broken.add("not json at all")
    layout.write("x" * 300, RUST_STATES["plain"])  # longer than the library's 256
    url, namespace = sql_target
    with (
        open_rust_source(layout.url) as source,
        open_checkpointer(url, namespace=namespace) as target,
    ):
        report = copy_from_rust(source, target)
        failed = {failure.thread_id: failure.reason for failure in report.failed}
        assert set(failed) == broken
        assert "bad-json" in failed["bad-json"]
        assert report.copied == 1
        assert target.load_state("bad-json") is None
        assert [t.thread_id for t in target.iter_threads()] == ["good"]


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_cli_copy_from_rust_reports_and_reruns(layout: Layout, sql_target: tuple[str, str]) -> None:
    _fill(layout)
    layout.write("broken", CORRUPT_STATE)
    url, namespace = sql_target
    args = ["copy", "--from", layout.url, "--to", url, "--to-namespace", namespace]
    first = _cli(*args)
    assert first.exit_code == 1, first.output
    assert "9 copied, 0 skipped (already in the target)" in first.stdout
    assert "1 failed" in first.stdout
    assert "'broken'" in first.stderr
    second = _cli(*args, "--json")
    assert second.exit_code == 1
    data = json.loads(second.stdout)
    assert (data["copied"], data["skipped"], data["namespace"]) == (0, 9, namespace)
    assert [failure["thread_id"] for failure in data["failed"]] == ["broken"]


def test_cli_copy_from_an_unreachable_rust_store_fails_cleanly() -> None:
    from ..kits.base import closed_port

    result = _cli(
        "copy",
        "--from",
        f"rust+redis://127.0.0.1:{closed_port()}/0",
        "--to",
        "memory://",
    )
    assert result.exit_code == 1
    assert "BackendUnavailableError" in result.stderr


def test_rust_urls_are_not_checkpointers_and_url_works_like_from(layout: Layout) -> None:
    from agents_persistence.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="read only"):
        open_checkpointer(layout.url)
    layout.write("t", RUST_STATES["plain"])
    result = _cli("copy", "--url", layout.url, "--to", "memory://", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["copied"] == 1
    conflicting = CliRunner().invoke(
        app, ["copy", "--from", layout.url, "--url", "memory://", "--to", "memory://"]
    )
    assert conflicting.exit_code == 2
