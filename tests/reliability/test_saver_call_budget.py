"""The LangGraph SQL savers' time budget: a call to a hung PostgreSQL ends within ``call_timeout``.

A private PostgreSQL server frozen with SIGSTOP (the kernel still acknowledges bytes; psycopg
has no socket timeout): reads and writes in flight on a pooled connection, and calls needing a
new connection, end with `CallTimeoutError` within the budget plus a margin, on both twins.
After the server answers again, the same saver works and what was stored is there.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from agents_persistence.langgraph import AsyncSQLCheckpointSaver, SQLCheckpointSaver

from ..servers import PostgresServer
from .conftest import migrate, need
from .test_sql_call_budget import BUDGET, MODES, call

if TYPE_CHECKING:
    from collections.abc import Iterator

    from langchain_core.runnables import RunnableConfig

    from ..support import Portal

pytestmark = pytest.mark.timeout(120)


class _Through:
    """An async saver's calls made from sync code, on the portal's loop."""

    def __init__(self, portal: Portal, saver: AsyncSQLCheckpointSaver) -> None:
        self.portal = portal
        self.saver = saver

    def get_tuple(self, config: RunnableConfig) -> Any:
        return self.portal.call(self.saver.aget_tuple, config)

    def put(self, *args: Any) -> Any:
        return self.portal.call(self.saver.aput, *args)

    def close(self) -> None:
        self.portal.call(self.saver.aclose)


@pytest.fixture(scope="module")
def saver_url(postgres_server: PostgresServer) -> str:
    need(PostgresServer)
    url = postgres_server.create_database("saver_budget")
    migrate(url)
    return url


@pytest.fixture(params=MODES)
def saver(saver_url: str, request: pytest.FixtureRequest, portal: Portal) -> Iterator[Any]:
    if request.param == "sync":
        made: Any = SQLCheckpointSaver.from_url(saver_url, call_timeout=BUDGET)
    else:

        async def make() -> AsyncSQLCheckpointSaver:
            return AsyncSQLCheckpointSaver.from_url(saver_url, call_timeout=BUDGET)

        made = _Through(portal, portal.call(make))
    yield made
    made.close()


def _put(saver: Any, thread_id: str, parent: RunnableConfig | None = None) -> RunnableConfig:
    config = parent or {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    return saver.put(config, empty_checkpoint(), {"source": "loop", "step": 0}, {})  # type: ignore[no-any-return]


def test_a_saver_call_to_a_hung_postgresql_ends_within_the_budget(
    saver: Any, postgres_server: PostgresServer
) -> None:
    first = _put(saver, "t")
    other = _put(saver, "u")
    postgres_server.pause()
    try:
        # On the pooled connection just used: the statements themselves hang.
        call(lambda: saver.get_tuple(first)).timed_out()
        # Its connection was cut: the next call needs a new one from a server that never answers.
        call(lambda: _put(saver, "t", first)).timed_out()
    finally:
        postgres_server.resume()
    time.sleep(0.1)
    # The same saver works again, and what was stored is there.
    found = saver.get_tuple(other)
    assert found is not None
    assert found.config == other
    latest = saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}})
    assert latest is not None
    # The put cut short may or may not have been applied: its outcome is unknown, not lost.
    assert latest.config == first or latest.parent_config == first
