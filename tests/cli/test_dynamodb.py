"""``dynamodb create-table|delete-table`` and the demo on a table that does not exist yet."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from .conftest import Invoke, _has_store, dynamodb_kit, dynamodb_query

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.skipif(
    not _has_store("dynamodb"), reason="the DynamoDB store is not built yet"
)


@pytest.fixture
def table_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A dynamodb:// URL naming a table that does not exist yet (dropped afterwards)."""
    kit = dynamodb_kit(monkeypatch)
    table = "cli-" + uuid.uuid4().hex[:12]
    url = f"dynamodb://{table}?{dynamodb_query(kit)}"
    yield url
    from agents_persistence import open_checkpointer

    with open_checkpointer(url) as checkpointer:
        checkpointer.delete_table(wait=True)


def test_table_life_cycle(cli: Invoke, table_url: str) -> None:
    table = table_url.split("://", 1)[1].split("?", 1)[0]
    missing = cli("threads", "list", "--url", table_url)
    assert missing.exit_code == 1
    line = missing.stderr.strip()
    assert line.startswith("error: SchemaNotReadyError: ")
    assert "agents-persistence dynamodb create-table --url" in line

    created = cli("dynamodb", "create-table", "--url", table_url)
    assert created.exit_code == 0, created.output
    assert created.stdout.strip() == f"created the DynamoDB table {table!r}"
    again = cli("dynamodb", "create-table", "--url", table_url)
    assert again.exit_code == 0
    assert "already exists" in again.stdout
    assert cli("threads", "list", "--url", table_url).exit_code == 0

    refused = cli("dynamodb", "delete-table", "--url", table_url)
    assert refused.exit_code == 2
    assert "--yes" in refused.stderr
    assert cli("threads", "list", "--url", table_url).exit_code == 0

    deleted = cli("dynamodb", "delete-table", "--yes", "--url", table_url)
    assert deleted.exit_code == 0, deleted.output
    assert deleted.stdout.strip() == f"deleted the DynamoDB table {table!r}"
    assert cli("threads", "list", "--url", table_url).exit_code == 1
    gone = cli("dynamodb", "delete-table", "--yes", "--url", table_url)
    assert gone.exit_code == 1
    assert "does not exist" in gone.stderr


def test_demo_says_how_to_create_the_table_or_creates_it(cli: Invoke, table_url: str) -> None:
    refused = cli("demo", "--url", table_url)
    assert refused.exit_code == 1
    assert "agents-persistence dynamodb create-table" in refused.stderr
    assert refused.stderr.strip().endswith("or run the demo with --create-table")
    first = cli("demo", "--create-table", "--turns", "2", "--url", table_url)
    assert first.exit_code == 0, first.output
    assert "turn 2: loaded version 1, saved version 2" in first.stdout
    assert "in DynamoDB table " in first.stdout
    second = cli("demo", "--create-table", "--turns", "1", "--url", table_url)
    assert "resuming after turn 2 (version 2)" in second.stdout


def test_copy_moves_threads_from_a_single_item_table_to_the_pieces_format(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents_persistence import (
        AgentMessage,
        AgentStateSnapshot,
        TextContent,
        open_checkpointer,
    )

    kit = dynamodb_kit(monkeypatch)
    query = dynamodb_query(kit)
    old_url = f"dynamodb://cli-old-{uuid.uuid4().hex[:10]}?{query}"
    new_url = f"dynamodb://cli-new-{uuid.uuid4().hex[:10]}?{query}"
    made = cli("dynamodb", "create-table", "--table-format", "single-item", "--url", old_url)
    assert made.exit_code == 0, made.output
    assert cli("dynamodb", "create-table", "--url", new_url).exit_code == 0
    try:
        with open_checkpointer(old_url, namespace="app") as old:
            for n in range(3):
                for turn in range(n + 2):
                    state = AgentStateSnapshot(
                        files={"notes.md": f"thread {n} turn {turn} " + "x" * 2000},
                        messages=[
                            AgentMessage(role="User", content=TextContent(value=f"m{i}"))
                            for i in range(turn + 1)
                        ],
                    )
                    old.save_state(f"t{n}", state)
            before = {t.thread_id: old.load_checkpoint(t.thread_id) for t in old.iter_threads()}
        copied = cli("copy", "--from", old_url, "--namespace", "app", "--to", new_url)
        assert copied.exit_code == 0, copied.output
        assert "copied 3 threads" in copied.stdout
        with open_checkpointer(new_url, namespace="app") as new:
            after = {t.thread_id: new.load_checkpoint(t.thread_id) for t in new.iter_threads()}
            assert {k: (v.state, v.info) for k, v in after.items()} == {
                k: (v.state, v.info) for k, v in before.items()
            }
            # The copy is a table of the new format: its next save writes a delta.
            state = after["t2"].state
            state.messages.append(AgentMessage(role="Agent", content=TextContent(value="on")))
            assert new.save_state("t2", state).version == after["t2"].info.version + 1
            assert new.load_state("t2") == state
        keys = kit.client.describe_table(TableName=new_url.split("://")[1].split("?")[0])
        assert [k["KeyType"] for k in keys["Table"]["KeySchema"]] == ["HASH", "RANGE"]
        # The old table still works for reading and writing.
        with open_checkpointer(old_url, namespace="app") as old:
            assert old.save_state("t0", before["t0"].state).version == before["t0"].info.version + 1
    finally:
        for url in (old_url, new_url):
            with open_checkpointer(url) as checkpointer:
                checkpointer.delete_table(wait=True)
