"""The agent state snapshot, field for field the Rust SDK's ``AgentStateSnapshot``.

The JSON written and read here is the serde format of the Rust crate, so records written by the
Rust checkpointers load, and records written here load there (``messages`` is an extension the
Rust side ignores). Unknown fields are kept on load and written back on save.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, field_validator

__all__ = [
    "AgentInterrupt",
    "AgentMessage",
    "AgentStateSnapshot",
    "CacheControl",
    "HumanInLoopInterrupt",
    "JsonContent",
    "MessageContent",
    "MessageMetadata",
    "MessageRole",
    "TextContent",
    "TodoItem",
    "TodoStatus",
]

TodoStatus = Literal["pending", "in_progress", "completed"]
"""Status of a todo item, serialized in snake case as in the Rust enum."""

MessageRole = Literal["User", "Agent", "Tool", "System"]
"""Author of a message, serialized as the Rust enum's variant name."""


def _is_none(value: object) -> bool:
    return value is None


def _is_empty(value: list[Any]) -> bool:
    return not value


class _Model(BaseModel):
    # Unknown fields survive a load and save, as the Rust side may grow new ones. NaN and
    # infinities have no JSON form: refuse them rather than store them as null.
    # ser_json_inf_nan="constants": a NaN mutated in after validation is written as `NaN`, which
    # the save's load-back check refuses, instead of silently becoming `null`.
    model_config = ConfigDict(
        extra="allow", populate_by_name=True, allow_inf_nan=False, ser_json_inf_nan="constants"
    )


class TodoItem(_Model):
    """One entry of the agent's plan."""

    content: str
    status: TodoStatus = "pending"


class HumanInLoopInterrupt(_Model):
    """A tool call waiting for a human decision (``{"type": "human_in_loop", ...}``)."""

    type: Literal["human_in_loop"] = "human_in_loop"
    tool_name: str
    tool_args: JsonValue = None
    policy_note: str | None = Field(default=None, exclude_if=_is_none)
    created_at: AwareDatetime
    call_id: str

    @field_validator("created_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        # The Rust field is a DateTime<Utc>: offsets are normalised, as chrono does.
        return value.astimezone(UTC)


AgentInterrupt = Annotated[HumanInLoopInterrupt, Field(discriminator="type")]
"""An interrupt awaiting a response; ``human_in_loop`` is the only kind the Rust SDK defines."""


class TextContent(_Model):
    """Plain text message content (``{"type": "Text", "value": "..."}``)."""

    type: Literal["Text"] = "Text"
    value: str


class JsonContent(_Model):
    """Structured message content (``{"type": "Json", "value": ...}``)."""

    type: Literal["Json"] = "Json"
    value: JsonValue = None


MessageContent = Annotated[TextContent | JsonContent, Field(discriminator="type")]
"""The content of a message: text or any JSON value."""


class CacheControl(_Model):
    """Prompt-caching hint attached to a message."""

    type: str = "ephemeral"


class MessageMetadata(_Model):
    """Optional metadata of a message."""

    tool_call_id: str | None = Field(default=None, exclude_if=_is_none)
    cache_control: CacheControl | None = Field(default=None, exclude_if=_is_none)


class AgentMessage(_Model):
    """One message of the transcript (an extension of the Rust snapshot)."""

    role: MessageRole
    content: MessageContent
    metadata: MessageMetadata | None = Field(default=None, exclude_if=_is_none)

    @classmethod
    def text(cls, role: MessageRole, value: str) -> AgentMessage:
        """Build a text message."""
        return cls(role=role, content=TextContent(value=value))


class AgentStateSnapshot(_Model):
    """The state of one agent conversation thread.

    Attributes:
        todos: The agent's plan.
        files: A virtual file system: path to text.
        scratchpad: Free-form JSON values.
        pending_interrupts: Interrupts waiting for a human; omitted from the JSON when empty.
        messages: The transcript; omitted from the JSON when empty.
    """

    todos: list[TodoItem] = Field(default_factory=list)
    files: dict[str, str] = Field(default_factory=dict)
    scratchpad: dict[str, JsonValue] = Field(default_factory=dict)
    pending_interrupts: list[AgentInterrupt] = Field(default_factory=list, exclude_if=_is_empty)
    messages: list[AgentMessage] = Field(default_factory=list, exclude_if=_is_empty)
