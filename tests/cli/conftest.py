"""Fixtures for the command's tests: a runner, and real stores addressed by URL.

The command opens stores from URLs, so these fixtures hand out URLs (plus a fresh namespace per
test) rather than checkpointers. SQLite gets a new file per test; the server stores share their
default table or key space and are isolated by the namespace.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest
from click.testing import Result
from typer.testing import CliRunner

from agents_persistence import (
    AgentMessage,
    AgentStateSnapshot,
    CheckpointInfo,
    HumanInLoopInterrupt,
    JsonContent,
    TodoItem,
    open_checkpointer,
)
from agents_persistence.cli import app

from ..kits.base import IN_CI, tcp_reachable

if TYPE_CHECKING:
    from pathlib import Path

POSTGRES_URL = os.environ.get(
    "AGENTS_PERSISTENCE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get(
    "AGENTS_PERSISTENCE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
REDIS_URL = os.environ.get("AGENTS_PERSISTENCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

Invoke = Callable[..., Result]


def new_namespace() -> str:
    return "cli" + uuid.uuid4().hex[:16]


def unavailable(reason: str) -> None:
    """Skip (or, with CI=true, fail) a test whose store cannot be used here."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: an unreachable store fails the run)")
    pytest.skip(reason)


def _has_store(module: str) -> bool:
    return importlib.util.find_spec(f"agents_persistence.repositories.{module}") is not None


@dataclass
class Target:
    """One store, addressed the way a user of the command addresses it."""

    name: str
    url: str
    namespace: str = field(default_factory=new_namespace)
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    @property
    def args(self) -> list[str]:
        return ["--url", self.url, "--namespace", self.namespace]

    def open(self, **options: Any) -> Any:
        return open_checkpointer(
            self.url, namespace=options.pop("namespace", self.namespace), **options
        )

    def close(self) -> None:
        for step in reversed(self.cleanup):
            step()


_migrated: set[str] = set()


def _migrate(url: str) -> None:
    if url not in _migrated:
        from agents_persistence import migrations

        migrations.upgrade(url)
        _migrated.add(url)


def _sql_server(name: str, url: str, port: int) -> Target:
    if not _has_store("sql"):
        pytest.skip("the SQL store is not built yet")
    if not tcp_reachable("127.0.0.1", port):
        unavailable(f"{name} is not reachable at 127.0.0.1:{port}")
    _migrate(url)
    target = Target(name, url)
    target.cleanup.append(lambda: _forget(target))
    return target


def _forget(target: Target) -> None:
    """Remove what a test left in a shared store (its namespace only)."""
    with target.open() as checkpointer:
        for thread in list(checkpointer.iter_threads()):
            checkpointer.delete_thread(thread.thread_id)
        checkpointer.purge_expired()


def make_target(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Target:
    """A ready store (schema migrated or table created) with a fresh namespace."""
    if name == "sqlite":
        if not _has_store("sql"):
            pytest.skip("the SQL store is not built yet")
        from agents_persistence import migrations

        url = f"sqlite:///{tmp_path / f'{uuid.uuid4().hex[:8]}.sqlite3'}"
        migrations.upgrade(url)
        return Target(name, url)
    if name == "postgresql":
        return _sql_server(name, POSTGRES_URL, 5432)
    if name == "mariadb":
        return _sql_server(name, MARIADB_URL, 3306)
    if name == "redis":
        if not _has_store("redis"):
            pytest.skip("the Redis store is not built yet")
        if not tcp_reachable("127.0.0.1", 6379):
            unavailable("Redis is not reachable at 127.0.0.1:6379")
        target = Target(name, REDIS_URL)
        target.cleanup.append(lambda: _forget(target))
        return target
    if name == "dynamodb":
        return _dynamodb_target(monkeypatch)
    raise AssertionError(name)


def _dynamodb_target(monkeypatch: pytest.MonkeyPatch) -> Target:
    if not _has_store("dynamodb"):
        pytest.skip("the DynamoDB store is not built yet")
    kit = dynamodb_kit(monkeypatch)
    target = Target("dynamodb", f"dynamodb://{kit.table}?{dynamodb_query(kit)}")
    target.cleanup.append(lambda: _forget(target))
    return target


def dynamodb_kit(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session's moto server (started on first use); the command finds it by URL."""
    from ..conftest import KITS, _ready

    kit = _ready(next(kit for kit in KITS if kit.name == "dynamodb"))
    # The command reads credentials the standard AWS way; moto accepts any.
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    return kit


def dynamodb_query(kit: Any) -> str:
    return urlencode({"region": "us-east-1", "endpoint": kit.endpoint})


STORES = ["sqlite", "postgresql", "mariadb", "redis", "dynamodb"]
"""Every store the command is tested on (those not built or not reachable are skipped)."""


@pytest.fixture(params=STORES)
def target(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Target]:
    made = make_target(request.param, tmp_path, monkeypatch)
    yield made
    made.close()


@pytest.fixture
def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Target]]:
    """Build targets by name inside a test (for copies between two stores)."""
    made: list[Target] = []

    def build(name: str) -> Target:
        made.append(make_target(name, tmp_path, monkeypatch))
        return made[-1]

    yield build
    for target in reversed(made):
        target.close()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """Run the command in-process; the working directory is the test's temporary directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTS_PERSISTENCE_URL", raising=False)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, catch: bool = False) -> Result:
        return runner.invoke(app, list(args), input=input, catch_exceptions=catch)

    return invoke


def sample_state(n: int) -> AgentStateSnapshot:
    """A state using every part of the snapshot, different for each ``n``."""
    return AgentStateSnapshot(
        todos=[
            TodoItem(content=f"step {n}", status="completed"),
            TodoItem(content=f"étape {n} ✓", status="in_progress"),
        ],
        files={f"notes/{n}.md": f"# note {n}\nline two\n", "data.json": f'{{"n": {n}}}'},
        scratchpad={"n": n, "nested": {"list": [1, 2.5, None, True, "x"]}, "emoji": "🤖"},
        pending_interrupts=[
            HumanInLoopInterrupt(
                tool_name="send_email",
                tool_args={"to": "a@example.com", "n": n},
                policy_note="needs approval",
                created_at=datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
                call_id=f"call-{n}",
            )
        ]
        if n % 2
        else [],
        messages=[
            AgentMessage.text("User", f"hello {n}"),
            AgentMessage(role="Tool", content=JsonContent(value={"ok": True, "n": n})),
        ],
    )


def seed(target: Target, count: int, *, versions: int = 2) -> dict[str, tuple[Any, Any]]:
    """Save ``count`` threads, each ``versions`` times; return thread id -> (state, info)."""
    saved: dict[str, tuple[Any, Any]] = {}
    with target.open() as checkpointer:
        for n in range(count):
            thread_id = f"thread-{n:02d}"
            info = None
            for v in range(versions + n % 2):
                state = sample_state(n * 10 + v)
                info = checkpointer.save_state(thread_id, state)
            saved[thread_id] = (state, info)
    return saved


def put_expired(target: Target, thread_id: str) -> None:
    """Store a thread that expired an hour ago (as a restore of an old export would)."""
    past = datetime.now(UTC) - timedelta(hours=2)
    info = CheckpointInfo(thread_id, 3, past, past, past + timedelta(hours=1), 0)
    with target.open() as checkpointer:
        checkpointer.restore_checkpoint(thread_id, sample_state(99), info)


def snapshot_of(target: Target, namespace: str | None = None) -> dict[str, tuple[Any, ...]]:
    """Every live thread of a namespace: id -> (state, version, created, updated, expires)."""
    with target.open(namespace=namespace or target.namespace) as checkpointer:
        out: dict[str, tuple[Any, ...]] = {}
        for thread in checkpointer.iter_threads():
            checkpoint = checkpointer.load_checkpoint(thread.thread_id)
            info = checkpoint.info
            out[thread.thread_id] = (
                checkpoint.state.model_dump(mode="json"),
                info.version,
                info.created_at,
                info.updated_at,
                info.expires_at,
            )
        return out
