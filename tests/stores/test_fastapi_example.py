"""The FastAPI example (examples/fastapi_app.py) under TestClient, on every SQL dialect.

One route runs an agent turn in the request's own transaction, next to the app's ``turns``
table: a turn that cannot record its row leaves no state behind, and racing turns of one thread
never both land.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest
from examples import fastapi_app
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from agents_persistence.sql import SQLCheckpointer

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def client(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    with TestClient(fastapi_app.app, raise_server_exceptions=False) as test_client:
        yield test_client


def _turn(client: TestClient, thread_id: str, message: str) -> tuple[int, dict[str, object]]:
    response = client.post(
        f"/threads/{thread_id}/turns", json={"user_id": "u1", "message": message}
    )
    return response.status_code, response.json() if response.status_code < 500 else {}


def test_turns_save_the_state_and_the_app_row_together(client: TestClient) -> None:
    assert _turn(client, "t1", "hello") == (
        200,
        {"reply": "noted (1 open items)", "version": 1, "todos": ["follow up on: hello"]},
    )
    status, body = _turn(client, "t1", "and then?")
    assert (status, body["version"]) == (200, 2)
    shown = client.get("/threads/t1").json()
    assert (shown["version"], shown["turns"]) == (2, 2)
    assert shown["todos"] == ["follow up on: hello", "follow up on: and then?"]


def test_a_turn_whose_app_row_fails_leaves_no_state(client: TestClient, db_url: str) -> None:
    # The app's row for version 1 exists already: the turn saves the state, then its INSERT
    # fails on the primary key, and the request's rollback must take the state with it.
    assert _turn(client, "t2", "first")[0] == 200
    engine = create_engine(db_url)
    try:
        SQLCheckpointer(engine, namespace="support-bot").delete_thread("t2")
        status, _ = _turn(client, "t2", "again")
        assert status == 500
        assert SQLCheckpointer(engine, namespace="support-bot").load_state("t2") is None
    finally:
        engine.dispose()
    assert client.get("/threads/t2").status_code == 404


def test_racing_turns_of_one_thread_never_both_land(client: TestClient, db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite runs one writer at a time: nothing races")
    assert _turn(client, "t3", "start")[0] == 200
    results: list[int] = []
    barrier = threading.Barrier(4)

    def worker(n: int) -> None:
        barrier.wait()
        results.append(_turn(client, "t3", f"racer {n}")[0])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    landed = results.count(200)
    assert landed >= 1
    assert set(results) <= {200, 409}
    shown = client.get("/threads/t3").json()
    assert shown["version"] == 1 + landed
    assert shown["turns"] == 1 + landed
