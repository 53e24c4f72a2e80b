"""``demo --langgraph``: the scripted deep agent on a LangGraph checkpoint saver of the library.

The first run starts the thread: the agent plans with ``write_todos``, writes a file, asks to
send an email, and stops there, waiting for a human's approval (a LangGraph interrupt, stored
with the thread's checkpoints). The process exits. The next run finds the interrupt in the
store, approves the call with ``Command(resume=...)`` and lets the agent finish. A run on a
finished thread only reports it.

Needs ``deepagents`` (extra ``deepagents``); without it, `MissingExtraError` names the extra.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from agents_persistence._core import DEFAULT_NAMESPACE
from agents_persistence.cli._common import (
    describe_store,
    plural,
    scheme_family,
)
from agents_persistence.cli._invocation import command_prefix

if TYPE_CHECKING:
    from collections.abc import Callable

    from agents_persistence.cli._common import Run

__all__ = ["run_langgraph"]

_SQL_FAMILIES = ("sqlite", "postgresql", "mysql")


def _lines_of(messages: list[dict[str, Any]]) -> list[str]:
    """The exchange as the demo prints it: one line per message."""
    out = []
    for message in messages:
        if message["type"] == "human":
            out.append(f"  user   {message['content']}")
        elif message["type"] == "ai":
            calls = message.get("tool_calls") or []
            out.extend(f"  agent  calls {_call(call)}" for call in calls)
            if message["content"]:
                out.append(f"  agent  {message['content']}")
        elif message["type"] == "tool":
            out.append(_clip(f"  tool   {message['name']}: {message['content']}"))
    return out


def _clip(line: str, width: int = 100) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def _call(call: dict[str, Any]) -> str:
    args = call["args"]
    if call["name"] == "write_todos":
        return f"write_todos ({len(args['todos'])} todos)"
    if call["name"] == "write_file":
        return f"write_file {args['file_path']}"
    shown = ", ".join(f"{key}={value!r}" for key, value in args.items())
    return f"{call['name']}({shown})"


def run_langgraph(run: Run, thread: str) -> None:
    """Start the deep agent on ``thread`` until its interrupt, or resume it to the end.

    Args:
        run: The invocation (URL, output mode, consoles); the saver it opens is closed here.
        thread: The LangGraph thread id.
    """
    family = scheme_family(run.url)
    if family not in _SQL_FAMILIES:
        run.usage(
            "demo --langgraph runs on SQL URLs (sqlite, postgresql, mysql/mariadb);"
            f" {family or 'this URL'} has no LangGraph saver in this version"
        )
    if run.namespace != DEFAULT_NAMESPACE:
        run.usage("demo --langgraph keys checkpoints by thread only: drop --namespace")
    # Imported here: the plain demo must not need deepagents (MissingExtraError names it).
    from agents_persistence.cli import _deep_agent
    from agents_persistence.langgraph import SQLCheckpointSaver

    run.notice_default_url()

    def say(text: str = "") -> None:
        if not run.as_json:
            run.out.print(text, markup=False, soft_wrap=True)

    # The embedded default must work with nothing set up: create or upgrade the tables.
    with SQLCheckpointSaver.from_url(run.url, auto_migrate=family == "sqlite") as saver:
        agent = _deep_agent.build_agent(saver)
        state = agent.get_state(_deep_agent.config_for(thread))
        seen = len(state.values.get("messages", []))
        waiting = list(state.interrupts)
        acted = True
        if not seen:
            say(f"deep agent on thread {thread!r}: a new run")
            _deep_agent.start(agent, thread)
        elif waiting:
            say(f"deep agent on thread {thread!r}: resuming at the interrupt the last run left")
            say(f"  human  approves {_deep_agent.GATED_TOOL} (interrupt {waiting[0].id})")
            _deep_agent.resume(agent, thread)
        else:
            acted = False
            say(f"deep agent on thread {thread!r}: this run already finished")
        after = _deep_agent.transcript(agent, thread)
    phase = "interrupted" if after["pending"] else "finished" if acted else "already finished"
    shown = after["messages"][seen:]
    report = {
        "thread_id": thread,
        "store": describe_store(run.url),
        "phase": phase,
        "resumed": bool(waiting),
        "pending": after["pending"],
        "todos": after["todos"],
        "files": after["files"],
        "messages": len(after["messages"]),
        "new_messages": shown,
        "checkpoints": len(after["history"]),
        "interrupts_in_history": sum(len(step["interrupts"]) for step in after["history"]),
    }
    if run.as_json:
        run.emit(report)
        return
    _print_report(say, run, thread, report)


def _print_report(
    say: Callable[[str], None], run: Run, thread: str, report: dict[str, Any]
) -> None:
    for line in _lines_of(report["new_messages"]):
        say(line)
    if report["pending"]:
        say(f"  agent  waits for a human to approve {_held_tools(report)}")
    done = sum(todo["status"] == "completed" for todo in report["todos"])
    files = plural(len(report["files"]), "file")
    say("")
    say(f"stored: {report['checkpoints']} LangGraph checkpoints on thread {thread!r}")
    say(f"  in {report['store']} (its LangGraph tables)")
    say(
        f"  {len(report['todos'])} todos ({done} completed), {files},"
        f" {report['messages']} messages,"
        f" {plural(report['interrupts_in_history'], 'interrupt')} in history"
    )
    again = f"{command_prefix()} demo --langgraph"
    if thread != "demo":
        again += f" --thread {shlex.quote(thread)}"
    again += run.follow_up
    if report["pending"]:
        say("run it again to approve the call and let the agent finish:")
        say(f"  {again}")
    elif report["phase"] == "already finished":
        say("start another run with --thread NEW")


def _held_tools(report: dict[str, Any]) -> str:
    requests = [action for value in report["pending"] for action in value["action_requests"]]
    return ", ".join(action["name"] for action in requests)
