"""Deep Agents end to end: a run interrupted in one process, resumed in another, on each store.

The scripted deep agent (`agents_persistence.cli._deep_agent`: ``write_todos``, ``write_file``,
then ``send_email`` held by ``interrupt_on``) runs in a first process until the interrupt, and
that process exits. A second, fresh process finds the interrupt in the store, resumes with
``Command(resume=...)`` and finishes. The files, todos, messages and the checkpoint and
interrupt history read back from the store must equal those of the same run on LangGraph's
``InMemorySaver`` in one process, both at the interrupt and at the end.

Each store is one entry of `STORES`: the saver class (``module:Class``, opened in the child
processes with ``Class.from_url(url)`` as a context manager) and a fixture-like function
yielding the URL of a ready, private store. A saver for another store (Redis, DynamoDB) joins
the test with one more entry.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agents_persistence.cli import _deep_agent
from agents_persistence.migrations import upgrade
from tests.kits.redis import REDIS_URL
from tests.langgraph.redis_support import delete_prefix

from .conftest import _database

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
SQL_SAVER = "agents_persistence.langgraph:SQLCheckpointSaver"
REDIS_SAVER = "agents_persistence.langgraph:RedisCheckpointSaver"
DYNAMODB_SAVER = "agents_persistence.langgraph:DynamoDBCheckpointSaver"


def _sql(dialect: str) -> Callable[[Path], Iterator[str]]:
    def database(tmp_path: Path) -> Iterator[str]:
        for url in _database(dialect, tmp_path):
            upgrade(url)
            yield url

    return database


def _redis(tmp_path: Path) -> Iterator[str]:
    # The savers' default key prefix on the test database; the run's keys are deleted after.
    try:
        yield REDIS_URL
    finally:
        delete_prefix(REDIS_URL, "agents_persistence:lg")


def _dynamodb(tmp_path: Path) -> Iterator[str]:
    # A private moto server and a fresh table; the child processes take the test credentials
    # from the environment (credentials never go in URLs).
    from agents_persistence.langgraph import DynamoDBCheckpointSaver
    from tests.kits.dynamodb import CREDENTIALS, REGION, MotoServer

    server = MotoServer()
    names = {
        "aws_access_key_id": "AWS_ACCESS_KEY_ID",
        "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    }
    saved = {env: os.environ.get(env) for env in names.values()}
    try:
        os.environ.update({names[key]: value for key, value in CREDENTIALS.items()})
        table = f"deep-{uuid.uuid4().hex[:12]}"
        url = f"dynamodb://{table}?region={REGION}&endpoint={server.endpoint}"
        with DynamoDBCheckpointSaver.from_url(url) as saver:
            saver.setup()
        yield url
    finally:
        for env, value in saved.items():
            if value is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = value
        server.stop()


@dataclass(frozen=True)
class DeepStore:
    """A store the deep agent runs on: its saver, and how to get a ready, private URL."""

    name: str
    saver: str
    database: Callable[[Path], Iterator[str]]

    def __str__(self) -> str:
        return self.name


STORES = [
    DeepStore("sqlite", SQL_SAVER, _sql("sqlite")),
    DeepStore("postgresql", SQL_SAVER, _sql("postgresql")),
    DeepStore("mariadb", SQL_SAVER, _sql("mariadb")),
    DeepStore("redis", REDIS_SAVER, _redis),
    DeepStore("dynamodb", DYNAMODB_SAVER, _dynamodb),
]
"""Every store the resume test runs on; a new saver is one more entry here."""


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """The run on ``InMemorySaver`` in this process: transcripts at the interrupt and the end."""
    agent = _deep_agent.build_agent(InMemorySaver())
    stopped = _deep_agent.start(agent, "reference")
    at_interrupt = _deep_agent.transcript(agent, "reference")
    assert _deep_agent.resume(agent, "reference") == []
    return {
        "stopped": [interrupt.value for interrupt in stopped],
        "at_interrupt": at_interrupt,
        "final": _deep_agent.transcript(agent, "reference"),
    }


def test_the_reference_run_does_what_the_script_says(reference: dict[str, Any]) -> None:
    at_interrupt, final = reference["at_interrupt"], reference["final"]
    [request] = reference["stopped"]
    assert [action["name"] for action in request["action_requests"]] == ["send_email"]
    assert at_interrupt["pending"] == reference["stopped"]
    assert [todo["status"] for todo in at_interrupt["todos"]] == [
        "in_progress",
        "pending",
        "pending",
    ]
    assert list(at_interrupt["files"]) == [_deep_agent.REPORT_PATH]
    assert final["files"] == at_interrupt["files"]
    assert [todo["status"] for todo in final["todos"]] == ["completed"] * 3
    assert final["pending"] == []
    # user, then 4 tool calls each with its result, then the closing answer
    assert [m["type"] for m in final["messages"]] == ["human", *["ai", "tool"] * 4, "ai"]
    assert final["messages"][6]["name"] == "send_email"
    assert final["messages"][-1]["content"].startswith("Done:")
    raised = [step for step in final["history"] if step["interrupts"]]
    assert [step["interrupts"] for step in raised] == [reference["stopped"]]
    assert final["history"][: len(at_interrupt["history"])] == at_interrupt["history"]


def _child(phase: str, store: DeepStore, url: str, thread: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.langgraph._deep_agent_run", phase, store.saver, url, thread],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@contextmanager
def _agent(store: DeepStore, url: str) -> Iterator[Any]:
    module, _, name = store.saver.partition(":")
    with getattr(importlib.import_module(module), name).from_url(url) as saver:
        yield _deep_agent.build_agent(saver)


def _history_interrupt_ids(agent: Any, thread: str) -> list[str]:
    config = _deep_agent.config_for(thread)
    return [
        interrupt.id
        for snapshot in agent.get_state_history(config)
        for task in snapshot.tasks
        for interrupt in task.interrupts
    ]


@pytest.mark.slow
@pytest.mark.parametrize("store", STORES, ids=str)
def test_interrupted_in_one_process_resumed_in_another(
    store: DeepStore, reference: dict[str, Any], tmp_path: Path
) -> None:
    thread = f"deep-{uuid.uuid4().hex[:8]}"
    for url in store.database(tmp_path):
        first = _child("start", store, url, thread)
        assert first["waiting"] == []
        assert [i["value"] for i in first["stopped"]] == reference["stopped"]
        with _agent(store, url) as agent:
            assert _deep_agent.transcript(agent, thread) == reference["at_interrupt"]

        second = _child("resume", store, url, thread)
        # The fresh process found the interrupt the first one stopped at, by its id.
        assert second["waiting"] == first["stopped"]
        assert second["stopped"] == []
        with _agent(store, url) as agent:
            assert _deep_agent.transcript(agent, thread) == reference["final"]
            assert _history_interrupt_ids(agent, thread) == [first["stopped"][0]["id"]]
