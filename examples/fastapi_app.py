"""A FastAPI service that runs one agent turn per request, in the request's own transaction.

The lifespan creates the engine and the checkpointer; dependencies inject a `Session` and the
checkpointer; ``POST /threads/{thread_id}/turns`` loads the agent's state, runs one (scripted)
turn, saves the state with ``expected_version`` and records the turn in the app's own ``turns``
table, all in one transaction: both are committed together or not at all.

Run it with ``uvicorn examples.fastapi_app:app`` (``DATABASE_URL`` picks the database, an
SQLite file by default). ``tests/examples/test_fastapi_app.py`` drives it with ``TestClient``.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy import DateTime, Integer, String, Text, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from agents_persistence import AgentMessage, AgentStateSnapshot, ConflictError, TodoItem
from agents_persistence.migrations import upgrade
from agents_persistence.sql import SQLCheckpointer, TransactionAbortedError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


class Base(DeclarativeBase):
    """The app's own tables."""


class Turn(Base):
    """One agent turn, as the app records it: at most one row per (thread, version)."""

    __tablename__ = "turns"
    thread_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the engine and the checkpointer once; dispose the engine at shutdown."""
    engine = create_engine(os.environ.get("DATABASE_URL", "sqlite:///fastapi-app.sqlite3"))
    # Schema: in production both run in the deploy step (your Alembic, which can take the
    # library's revisions too: docs/migrations.md), not at start-up.
    upgrade(engine)
    Base.metadata.create_all(engine)
    app.state.engine = engine
    app.state.checkpointer = SQLCheckpointer(engine, namespace="support-bot")
    yield
    engine.dispose()


app = FastAPI(lifespan=lifespan)


def get_session(request: Request) -> Iterator[Session]:
    """A session per request; the route decides where its transaction begins and ends."""
    with Session(request.app.state.engine) as session:
        yield session


def get_checkpointer(request: Request) -> SQLCheckpointer[AgentStateSnapshot]:
    """The checkpointer the lifespan created."""
    checkpointer: SQLCheckpointer[AgentStateSnapshot] = request.app.state.checkpointer
    return checkpointer


SessionDep = Annotated[Session, Depends(get_session)]
CheckpointerDep = Annotated[SQLCheckpointer[AgentStateSnapshot], Depends(get_checkpointer)]


class TurnIn(BaseModel):
    """What the user says."""

    user_id: str
    message: str


class TurnOut(BaseModel):
    """What the agent answers, and the version of the state it saved."""

    reply: str
    version: int
    todos: list[str]


def agent_step(state: AgentStateSnapshot, message: str) -> str:
    """A scripted agent turn: reads the state, changes it, answers (a model would go here)."""
    state.messages.append(AgentMessage.text("User", message))
    state.todos.append(TodoItem(content=f"follow up on: {message}"))
    reply = f"noted ({len(state.todos)} open items)"
    state.messages.append(AgentMessage.text("Agent", reply))
    return reply


@app.post("/threads/{thread_id}/turns")
def run_turn(
    thread_id: str, body: TurnIn, session: SessionDep, checkpointer: CheckpointerDep
) -> TurnOut:
    """One agent turn: the state and the app's ``turns`` row in one transaction."""
    with session.begin():  # commits at the end of the block, rolls back on any exception
        agent = checkpointer.using(session)
        checkpoint = agent.load_checkpoint(thread_id)
        state = checkpoint.state if checkpoint else AgentStateSnapshot()
        reply = agent_step(state, body.message)
        try:
            info = agent.save_state(
                thread_id, state, expected_version=checkpoint.info.version if checkpoint else 0
            )
        except (ConflictError, TransactionAbortedError) as exc:
            # Another turn of this thread was saved first (or the database chose this
            # transaction as a deadlock victim): nothing is committed, the client may retry.
            raise HTTPException(409, "another turn of this thread was saved first") from exc
        session.add(
            Turn(
                thread_id=thread_id,
                version=info.version,
                user_id=body.user_id,
                message=body.message,
                at=info.updated_at,
            )
        )
    return TurnOut(reply=reply, version=info.version, todos=[t.content for t in state.todos])


@app.get("/threads/{thread_id}")
def show_thread(
    thread_id: str, session: SessionDep, checkpointer: CheckpointerDep
) -> dict[str, object]:
    """The thread's version and open todos, with the app's count of recorded turns."""
    with session.begin():
        checkpoint = checkpointer.using(session).load_checkpoint(thread_id)
        turns = session.scalar(
            select(func.count()).select_from(Turn).where(Turn.thread_id == thread_id)
        )
    if checkpoint is None:
        raise HTTPException(404, f"no thread {thread_id!r}")
    return {
        "version": checkpoint.info.version,
        "todos": [t.content for t in checkpoint.state.todos],
        "turns": turns,
        "checked_at": datetime.now(UTC).isoformat(),
    }
