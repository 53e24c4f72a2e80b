"""Fixtures of the reliability suite: private servers, store targets and the results table.

Every server here is private (`tests.servers`): started for the session on a free port in a
temporary directory, restarted and killed by the tests, and closed by the fixture whatever
happens. Tests marked ``reliability_long`` are left out unless a ``-m`` expression names
that marker (``make reliability`` runs ``-m reliability_long``); only the long run writes
``RESULTS.md``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest

from agents_persistence import open_async_checkpointer, open_checkpointer

from ..kits.base import IN_CI
from ..servers import MariaDBServer, PostgresServer, RedisServer, ServerProcess
from ..support import AsyncAdapter
from ._results import Results

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from ..support import Portal

LONG = "reliability_long"
RESULTS = Results()
_OUTCOMES: dict[str, int] = {"passed": 0, "failed": 0, "skipped": 0}
DATABASE = "reliability"


def new_namespace() -> str:
    return "r" + uuid.uuid4().hex[:16]


@dataclass
class Target:
    """A store the suite drives: a URL and options for `open_checkpointer`, maybe a server.

    ``options`` stay JSON-serialisable: writer subprocesses receive them as they are.
    """

    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    server: ServerProcess | None = None

    def open(self, namespace: str) -> Any:
        return open_checkpointer(self.url, namespace=namespace, **self.options)

    def open_in(self, mode: str, namespace: str, portal: Portal) -> Any:
        """A checkpointer in ``mode`` (``sync``/``async``), both seen through the sync API."""
        if mode == "sync":
            return self.open(namespace)

        async def make() -> Any:
            return open_async_checkpointer(self.url, namespace=namespace, **self.options)

        return AsyncAdapter(portal, portal.call(make))


def need(server_class: type[ServerProcess]) -> None:
    """Skip (fail in CI) when this machine cannot run ``server_class``."""
    reason = server_class.missing()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"{server_class.kind}: {reason} (CI=true)")
        pytest.skip(f"{server_class.kind}: {reason}")


def migrate(url: str) -> None:
    """Bring the library's table to head on ``url`` (what an app's deploy step does)."""
    from sqlalchemy import create_engine

    from agents_persistence.migrations import upgrade

    engine = create_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def started(server: ServerProcess) -> Iterator[ServerProcess]:
    """Start ``server`` for a fixture and close it afterwards, however the tests ended."""
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ServerProcess]:
    need(PostgresServer)
    yield from started(PostgresServer())


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[ServerProcess]:
    need(MariaDBServer)
    yield from started(MariaDBServer())


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ServerProcess]:
    need(RedisServer)
    yield from started(RedisServer(appendonly=True, appendfsync="everysec"))


@pytest.fixture(scope="session")
def postgresql_target(postgres_server: PostgresServer) -> Target:
    url = postgres_server.create_database(DATABASE)
    migrate(url)
    return Target("postgresql", url, {"connect_timeout": 2}, postgres_server)


@pytest.fixture(scope="session")
def mariadb_target(mariadb_server: MariaDBServer) -> Target:
    url = mariadb_server.create_database(DATABASE)
    migrate(url)
    return Target("mariadb", url, {"connect_timeout": 2}, mariadb_server)


@pytest.fixture(scope="session")
def redis_target(redis_server: RedisServer) -> Target:
    return Target("redis", redis_server.url(), {}, redis_server)


@pytest.fixture(scope="session")
def sqlite_target(tmp_path_factory: pytest.TempPathFactory) -> Target:
    path: Path = tmp_path_factory.mktemp("reliability-sqlite") / "checkpoints.db"
    url = f"sqlite:///{path}"
    migrate(url)
    return Target("sqlite", url)


@pytest.fixture(scope="session")
def dynamodb_target() -> Iterator[Target]:
    try:
        from ..kits.dynamodb import CREDENTIALS, REGION, MotoServer
    except ImportError as exc:  # pragma: no cover - moto missing
        pytest.skip(f"moto[server] is not installed ({exc})")
    from agents_persistence import DynamoDBCheckpointer

    server = MotoServer()
    try:
        table = "reliability-" + uuid.uuid4().hex[:8]
        connection = {"region": REGION, "endpoint_url": server.endpoint, **CREDENTIALS}
        with DynamoDBCheckpointer(table, **connection) as cp:
            cp.create_table()
        query = urlencode({"region": REGION, "endpoint": server.endpoint})
        yield Target("dynamodb", f"dynamodb://{table}?{query}", dict(CREDENTIALS))
    finally:
        server.stop()


STORES = ["sqlite", "postgresql", "mariadb", "redis", "dynamodb"]


@pytest.fixture(params=STORES)
def target(request: pytest.FixtureRequest) -> Target:
    """Each store in turn, on its private server (SQLite: a file; DynamoDB: moto)."""
    return request.getfixturevalue(f"{request.param}_target")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def results() -> Results:
    return RESULTS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LONG in (config.getoption("markexpr") or ""):
        return  # the caller asked for the long run by name (``-m reliability_long``)
    long = [item for item in items if item.get_closest_marker(LONG) is not None]
    if long:
        config.hook.pytest_deselected(items=long)
        items[:] = [item for item in items if item.get_closest_marker(LONG) is None]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "/reliability/" not in report.nodeid.replace("\\", "/"):
        return
    if report.when == "call" or report.outcome != "passed":
        _OUTCOMES[report.outcome] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if RESULTS.long_run:
        outcome = ", ".join(f"{count} {name}" for name, count in _OUTCOMES.items() if count)
        RESULTS.outcome = outcome
        path = RESULTS.write("make reliability")
        session.config.stash[_WRITTEN] = str(path)


_WRITTEN = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not RESULTS.sections:
        return
    terminalreporter.section("reliability figures")
    for section, rows in RESULTS.sections.items():
        terminalreporter.write_line(section)
        for row in rows:
            terminalreporter.write_line("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    written = config.stash.get(_WRITTEN, None)
    if written:
        terminalreporter.write_line(f"written to {written}")
