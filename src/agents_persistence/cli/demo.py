"""``demo``: a scripted agent (no model, no network) that persists its state turn by turn.

Every turn loads the thread, resolves a pending human-in-the-loop interrupt if there is one, adds
a message exchange, a todo, a file and scratchpad entries, now and then raises an interrupt, and
saves with ``expected_version`` so that a concurrent writer is never overwritten silently. The
turn counter lives in the state itself, so running the demo again resumes where it stopped.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agents_persistence.cli._common import (
    DebugOption,
    JsonOption,
    NamespaceOption,
    Run,
    UrlOption,
    describe_store,
    explain,
    scheme_family,
)
from agents_persistence.cli._invocation import command_prefix
from agents_persistence.cli.threads import info_dict, threads_table
from agents_persistence.errors import CheckpointerError, ConflictError, SchemaNotReadyError
from agents_persistence.snapshot import (
    AgentMessage,
    AgentStateSnapshot,
    HumanInLoopInterrupt,
    JsonContent,
    TodoItem,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from agents_persistence.contract import Checkpointer

__all__ = ["INTERRUPT_EVERY", "TURN_KEY", "Turn", "demo", "play_turn"]

TURN_KEY = "demo_turns"
"""Scratchpad key holding the number of turns played so far on the thread."""

INTERRUPT_EVERY = 3
"""Every third turn the agent wants a tool that a human must approve first."""

_SCRIPT: list[tuple[str, str, str]] = [
    # (what the user asks, the task the agent plans, the file it writes)
    ("Summarise last week's support tickets", "group tickets by product", "notes/tickets.md"),
    ("Draft a reply to the billing complaint", "draft the billing reply", "drafts/billing.md"),
    ("Email the summary to the team", "send the summary email", "outbox/summary.eml"),
    ("List the three most urgent bugs", "rank bugs by customer impact", "notes/bugs.md"),
    ("Prepare the standup notes", "collect yesterday's progress", "notes/standup.md"),
    ("Share the standup notes with the team", "post the standup notes", "outbox/standup.eml"),
]


@dataclass(frozen=True, slots=True)
class Turn:
    """What one scripted turn did to the state.

    Attributes:
        number: The turn's number on this thread (1 for the first turn ever played on it).
        request: What the user asked.
        task: The todo the agent added.
        path: The file the agent wrote.
        raised: Call id of the interrupt the turn raised, if any.
        resolved: Call id of the interrupt a human approved at the start of the turn, if any.
    """

    number: int
    request: str
    task: str
    path: str
    raised: str | None
    resolved: str | None


def turns_played(state: AgentStateSnapshot) -> int:
    """How many demo turns the state has seen (0 for a thread the demo never touched)."""
    value = state.scratchpad.get(TURN_KEY)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def counts(state: AgentStateSnapshot) -> dict[str, int]:
    """Sizes of the parts of a state, for reports."""
    return {
        "todos": len(state.todos),
        "completed_todos": sum(todo.status == "completed" for todo in state.todos),
        "files": len(state.files),
        "messages": len(state.messages),
        "pending_interrupts": len(state.pending_interrupts),
    }


def _approve_oldest(state: AgentStateSnapshot) -> str | None:
    """The human answered while the agent was away: approve the oldest waiting call."""
    if not state.pending_interrupts:
        return None
    interrupt = state.pending_interrupts.pop(0)
    state.messages.append(
        AgentMessage(
            role="Tool",
            content=JsonContent(
                value={
                    "call_id": interrupt.call_id,
                    "tool": interrupt.tool_name,
                    "decision": "approved",
                }
            ),
        )
    )
    approved = state.scratchpad.get("approved_calls")
    calls = list(approved) if isinstance(approved, list) else []
    state.scratchpad["approved_calls"] = [*calls, interrupt.call_id]
    return interrupt.call_id


def play_turn(state: AgentStateSnapshot, now: datetime) -> Turn:
    """Advance ``state`` by one scripted turn, in place, and say what the turn did."""
    number = turns_played(state) + 1
    request, task, path = _SCRIPT[(number - 1) % len(_SCRIPT)]
    resolved = _approve_oldest(state)
    for todo in state.todos:
        if todo.status == "in_progress":
            todo.status = "completed"
    state.messages.append(AgentMessage.text("User", f"turn {number}: {request}"))
    state.todos.append(TodoItem(content=f"turn {number}: {task}", status="in_progress"))
    state.files[path] = f"# {request}\n\nWritten on turn {number} while working on: {task}.\n"
    state.scratchpad[TURN_KEY] = number
    state.scratchpad["last_request"] = request
    raised = None
    if number % INTERRUPT_EVERY == 0:
        raised = f"call-{number}"
        state.pending_interrupts.append(
            HumanInLoopInterrupt(
                tool_name="send_email",
                tool_args={"to": "team@example.com", "attachment": path},
                policy_note="outgoing email needs a human's approval",
                created_at=now,
                call_id=raised,
            )
        )
        reply = f"I need your approval to run send_email ({raised}) before I continue."
    else:
        reply = f"Done: {task}; see {path}."
    state.messages.append(AgentMessage.text("Agent", reply))
    return Turn(number, request, task, path, raised, resolved)


@dataclass(frozen=True, slots=True)
class _Saved:
    turn: Turn
    loaded: int
    saved: int
    counts: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "turn": self.turn.number,
            "loaded_version": self.loaded,
            "saved_version": self.saved,
            "request": self.turn.request,
            "task": self.turn.task,
            "file": self.turn.path,
            "raised_interrupt": self.turn.raised,
            "resolved_interrupt": self.turn.resolved,
            **self.counts,
        }

    def lines(self) -> list[str]:
        out = [f"turn {self.turn.number}: loaded version {self.loaded}, saved version {self.saved}"]
        if self.turn.resolved:
            out.append(f"  human  approves {self.turn.resolved}")
        out.append(f"  user   {self.turn.request}")
        if self.turn.raised:
            out.append(f"  agent  asks a human to approve send_email ({self.turn.raised}), waits")
        else:
            out.append(f'  agent  plans "{self.turn.task}", writes {self.turn.path}')
        return out


def _play(checkpointer: Checkpointer[Any], thread_id: str) -> _Saved:
    checkpoint = checkpointer.load_checkpoint(thread_id)
    loaded = 0 if checkpoint is None else checkpoint.info.version
    state = AgentStateSnapshot() if checkpoint is None else checkpoint.state
    turn = play_turn(state, datetime.now(UTC))
    # If another worker saved this thread since it was loaded, this save fails instead of
    # silently overwriting that worker's turn.
    info = checkpointer.save_state(thread_id, state, expected_version=loaded)
    return _Saved(turn, loaded, info.version, counts(state))


def _stale_writer(checkpointer: Checkpointer[Any], thread_id: str, stale: int) -> str:
    """Save with an out-of-date ``expected_version``; return the rejection it must get."""
    state = checkpointer.load_state(thread_id) or AgentStateSnapshot()
    state.scratchpad["written_by"] = "a second worker with an old copy"
    try:
        checkpointer.save_state(thread_id, state, expected_version=stale)
    except ConflictError as exc:
        return str(exc)
    raise CheckpointerError(
        f"the store accepted a save with stale expected_version={stale} on thread {thread_id!r}"
    )


def demo(
    ctx: typer.Context,
    thread: Annotated[
        str, typer.Option("--thread", metavar="ID", help="Thread the agent works on.")
    ] = "demo",
    turns: Annotated[
        int, typer.Option("--turns", metavar="N", min=1, max=1000, help="Turns to play.")
    ] = 4,
    create_table: Annotated[
        bool,
        typer.Option("--create-table", help="DynamoDB: create the table first if it is missing."),
    ] = False,
    langgraph: Annotated[
        bool,
        typer.Option(
            "--langgraph",
            help=(
                "Run a scripted Deep Agents agent on a LangGraph checkpoint saver instead:"
                " it stops at a tool a human must approve; the next run approves and finishes"
                " (SQL URLs; needs the deepagents extra)."
            ),
        ),
    ] = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Run a scripted agent that saves its state every turn; run it again to resume."""
    with Run(ctx, url=url, namespace=namespace, as_json=as_json, debug=debug) as run:
        if langgraph:
            from agents_persistence.cli._langgraph_demo import run_langgraph

            run_langgraph(run, thread)
            return
        run.notice_default_url()
        family = scheme_family(run.url)
        options: dict[str, Any] = {}
        if family == "sqlite":
            # The embedded default must work with nothing set up: create or upgrade the tables.
            options["auto_migrate"] = True
        checkpointer = run.open(**options)
        if family == "dynamodb" and create_table:
            # Idempotent: an existing table is only checked.
            checkpointer.create_table(wait=True)

        def say(text: str = "") -> None:
            if not run.as_json:
                run.out.print(text, markup=False, soft_wrap=True)

        say(f"agent on thread {thread!r} in namespace {run.namespace!r}")
        played: list[_Saved] = []
        for _ in range(turns):
            try:
                played.append(_play(checkpointer, thread))
            except SchemaNotReadyError as exc:
                if family != "dynamodb":
                    raise
                run.fail(f"{explain(exc, run.url)[0]}; or run the demo with --create-table")
            if len(played) == 1 and played[0].loaded:
                say(f"resuming after turn {played[0].turn.number - 1} (version {played[0].loaded})")
            for line in played[-1].lines():
                say(line)
        listing = checkpointer.list_threads(limit=10)
        stale = played[-1].loaded
        rejection = _stale_writer(checkpointer, thread, stale)
        final = checkpointer.load_checkpoint(thread)
        if final is None:
            run.fail(f"thread {thread!r} vanished after the demo saved it")
        if run.as_json:
            run.emit(
                {
                    "thread_id": thread,
                    "namespace": run.namespace,
                    "store": describe_store(run.url),
                    "resumed_from_version": played[0].loaded,
                    "turns": [saved.as_dict() for saved in played],
                    "threads": [info_dict(info) for info in listing.threads],
                    "conflict": {"expected_version": stale, "error": rejection},
                    "final": {**info_dict(final.info), **counts(final.state)},
                }
            )
            return
        say()
        run.out.print(
            threads_table(listing.threads, title=f"threads in namespace {run.namespace!r}")
        )
        say()
        say(f"a second writer still holding version {stale} tries to save: rejected")
        say(f"  ConflictError: {rejection}")
        say()
        _summary(say, run, thread, final.info.version, final.info.size, final.state)
        if family == "memory":
            say(
                "memory:// keeps nothing once the command exits: use a file or server URL to resume"
            )
            return
        say(f"run the demo again to resume at turn {played[-1].turn.number + 1}; inspect with")
        say(f"  {command_prefix()} threads show {shlex.quote(thread)}{run.follow_up}")


def _summary(
    say: Callable[[str], None],
    run: Run,
    thread: str,
    version: int,
    size: int,
    state: AgentStateSnapshot,
) -> None:
    c = counts(state)
    waiting = ", ".join(interrupt.call_id for interrupt in state.pending_interrupts)
    say(f"stored: thread {thread!r}, version {version}, {size} bytes of JSON")
    say(f"  in {describe_store(run.url)}, namespace {run.namespace!r}")
    say(
        f"  {c['todos']} todos ({c['completed_todos']} completed), {c['files']} files,"
        f" {c['messages']} messages, "
        + (f"waiting for approval of {waiting}" if waiting else "no pending interrupt")
    )
