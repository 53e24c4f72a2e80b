"""A Deep Agents run with a scripted chat model: todos, a file, then a tool a human must approve.

`build_agent` makes a ``deepagents.create_deep_agent`` agent whose model is `ScriptedChatModel`
(no network, no key). The script plans with ``write_todos``, writes a file with ``write_file``,
then calls ``send_email``, which ``interrupt_on`` holds for a human's approval: `start` runs the
agent to that interrupt, `resume` answers it with ``Command(resume=...)`` and runs it to the end,
in this process or in another one sharing the checkpoint saver. `transcript` is what two runs
must agree on (files, todos, messages, the checkpoint and interrupt history), without the
timestamps and random ids that differ from run to run.

Importing this module without ``deepagents`` raises `MissingExtraError` naming the extra.
"""

from __future__ import annotations

# First, before any dependency: without the extra this raises MissingExtraError naming it.
from agents_persistence.cli import _deepagents_extra  # noqa: F401

# isort: split

from typing import TYPE_CHECKING, Any

from deepagents import create_deep_agent
from langchain.agents.middleware import TodoListMiddleware
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.types import Command

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from langchain_core.callbacks import CallbackManagerForLLMRun
    from langchain_core.language_models import LanguageModelInput
    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import Runnable, RunnableConfig
    from langchain_core.tools import BaseTool
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph

__all__ = [
    "APPROVAL",
    "GATED_TOOL",
    "REPORT_PATH",
    "REQUEST",
    "ScriptedChatModel",
    "build_agent",
    "config_for",
    "pending_interrupts",
    "resume",
    "script",
    "start",
    "transcript",
]

REQUEST = "Summarise last week's support tickets and email the summary to the team"
"""What the user asks the agent."""

REPORT_PATH = "/notes/tickets.md"
"""The file the agent writes."""

GATED_TOOL = "send_email"
"""The tool ``interrupt_on`` holds until a human approves it."""

APPROVAL: dict[str, Any] = {"decisions": [{"type": "approve"}]}
"""The human's answer: approve the one held call (the HITL middleware's batched format)."""

_PLAN = ["group tickets by product", "write the summary", "email the summary to the team"]
_SUMMARY = (
    "# Support tickets, last week\n\n"
    "- billing: 4 tickets, one refund pending\n"
    "- sync: 2 tickets, both fixed in 1.4.2\n"
)


def _call(name: str, call_id: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def _todos(*statuses: str) -> list[dict[str, str]]:
    return [
        {"content": content, "status": status}
        for content, status in zip(_PLAN, statuses, strict=True)
    ]


def script() -> list[AIMessage]:
    """The model's replies, in order: one per model call of the run."""
    return [
        AIMessage(
            "",
            id="ai-1",
            tool_calls=[
                _call("write_todos", "call-todos-1", todos=_todos("in_progress", *["pending"] * 2))
            ],
        ),
        AIMessage(
            "",
            id="ai-2",
            tool_calls=[_call("write_file", "call-file", file_path=REPORT_PATH, content=_SUMMARY)],
        ),
        AIMessage(
            "",
            id="ai-3",
            tool_calls=[
                _call(
                    GATED_TOOL,
                    "call-email",
                    to="team@example.com",
                    subject="Support tickets, last week",
                    attachment=REPORT_PATH,
                )
            ],
        ),
        AIMessage(
            "",
            id="ai-4",
            tool_calls=[_call("write_todos", "call-todos-2", todos=_todos(*["completed"] * 3))],
        ),
        AIMessage(f"Done: the summary is in {REPORT_PATH} and went to the team.", id="ai-5"),
    ]


class ScriptedChatModel(FakeMessagesListChatModel):
    """A chat model that answers from `script`, with no network and no key.

    Each reply is picked by how many AI messages the conversation already holds, not by a
    counter in the model, so a process that resumes the thread with a fresh model continues
    the script where the interrupted process left it. ``bind_tools`` returns the model itself:
    the script names the tools.
    """

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """The model itself: the scripted replies already carry their tool calls."""
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        turn = sum(isinstance(message, AIMessage) for message in messages)
        reply = self.responses[min(turn, len(self.responses) - 1)]
        return ChatResult(generations=[ChatGeneration(message=reply)])


@tool
def send_email(to: str, subject: str, attachment: str) -> str:
    """Send an email with a file attached (the demo only says it did)."""
    return f"sent {subject!r} to {to} with {attachment}"


def build_agent(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The scripted deep agent, persisting through ``checkpointer``."""
    return create_deep_agent(
        model=ScriptedChatModel(responses=list(script())),
        tools=[send_email],
        # deepagents 0.7 no longer adds the planning tool by default: write_todos comes from
        # LangChain's TodoListMiddleware.
        middleware=[TodoListMiddleware()],
        interrupt_on={GATED_TOOL: True},
        checkpointer=checkpointer,
    )


def config_for(thread_id: str) -> RunnableConfig:
    """The run configuration of ``thread_id``."""
    return {"configurable": {"thread_id": thread_id}}


def start(agent: CompiledStateGraph[Any, Any, Any, Any], thread_id: str) -> list[Any]:
    """Run the agent on a new thread until it stops; return the interrupts it stopped at."""
    output = agent.invoke(
        {"messages": [{"role": "user", "content": REQUEST, "id": "user-1"}]},
        config_for(thread_id),
        version="v2",
    )
    return list(output.interrupts)


def resume(agent: CompiledStateGraph[Any, Any, Any, Any], thread_id: str) -> list[Any]:
    """Approve the held call and run the agent on; return any interrupts it stops at next."""
    output = agent.invoke(Command(resume=APPROVAL), config_for(thread_id), version="v2")
    return list(output.interrupts)


def pending_interrupts(agent: CompiledStateGraph[Any, Any, Any, Any], thread_id: str) -> list[Any]:
    """The interrupts the thread's latest checkpoint waits on (empty for a finished run)."""
    return list(agent.get_state(config_for(thread_id)).interrupts)


def _message(message: BaseMessage) -> dict[str, Any]:
    data = message.model_dump()
    if isinstance(message, ToolMessage):
        # LangGraph gives tool results a random id; everything else about them is scripted.
        data.pop("id")
    return data


def transcript(agent: CompiledStateGraph[Any, Any, Any, Any], thread_id: str) -> dict[str, Any]:
    """What the thread holds, as plain data two runs of the script must agree on.

    Returns:
        ``files`` (path to content and encoding; file timestamps left out), ``todos``,
        ``messages`` (as dicts; tool results without their random ids), ``pending`` (the values
        of the interrupts the latest checkpoint waits on) and ``history``: every checkpoint,
        oldest first, as its step, source, next nodes and the values of the interrupts its
        tasks raised.
    """
    config = config_for(thread_id)
    values = agent.get_state(config).values
    files = values.get("files", {})
    history = [
        {
            "step": snapshot.metadata.get("step") if snapshot.metadata else None,
            "source": snapshot.metadata.get("source") if snapshot.metadata else None,
            "next": list(snapshot.next),
            "interrupts": [
                interrupt.value for task in snapshot.tasks for interrupt in task.interrupts
            ],
        }
        for snapshot in agent.get_state_history(config)
    ]
    history.reverse()
    return {
        "files": {
            path: {"content": data["content"], "encoding": data.get("encoding")}
            for path, data in sorted(files.items())
        },
        "todos": values.get("todos", []),
        "messages": [_message(message) for message in values.get("messages", [])],
        "pending": [interrupt.value for interrupt in pending_interrupts(agent, thread_id)],
        "history": history,
    }
