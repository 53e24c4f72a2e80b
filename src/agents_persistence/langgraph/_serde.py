"""The savers' serializer: LangGraph's msgpack serializer, never pickle.

`default_serde` is ``JsonPlusSerializer(pickle_fallback=False)`` with an explicit msgpack
allowlist (LangGraph's safe types plus what an agent's state holds: LangChain messages and
documents, LangGraph's ``Send``/``Interrupt``/``Command``). `NoPickleSerializer` wraps any
serializer so that a ``"pickle"`` payload is refused in both directions: a value that only
pickle could encode fails the write, and a stored pickle is never loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.serde.base import SerializerProtocol, maybe_add_typed_methods
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from agents_persistence.errors import ConfigurationError, InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["DEFAULT_ALLOWLIST", "NoPickleSerializer", "default_serde"]

DEFAULT_ALLOWLIST: tuple[tuple[str, ...], ...] = (
    ("langchain_core.messages.ai", "AIMessage"),
    ("langchain_core.messages.ai", "AIMessageChunk"),
    ("langchain_core.messages.human", "HumanMessage"),
    ("langchain_core.messages.human", "HumanMessageChunk"),
    ("langchain_core.messages.system", "SystemMessage"),
    ("langchain_core.messages.system", "SystemMessageChunk"),
    ("langchain_core.messages.tool", "ToolMessage"),
    ("langchain_core.messages.tool", "ToolMessageChunk"),
    ("langchain_core.messages.tool", "ToolCall"),
    ("langchain_core.messages.function", "FunctionMessage"),
    ("langchain_core.messages.chat", "ChatMessage"),
    ("langchain_core.messages.modifier", "RemoveMessage"),
    ("langchain_core.documents.base", "Document"),
    ("langgraph.types", "Send"),
    ("langgraph.types", "Interrupt"),
    ("langgraph.types", "Command"),
)
"""Modules and classes the default serializer revives besides LangGraph's built-in safe types."""

_PICKLE = "pickle"


class NoPickleSerializer(SerializerProtocol):
    """A serializer that refuses pickle payloads, around any LangGraph serializer.

    Args:
        inner: The serializer doing the work (its ``pickle_fallback``, if any, must be off).

    Raises:
        ConfigurationError: ``inner`` is a `JsonPlusSerializer` with ``pickle_fallback=True``.
    """

    def __init__(self, inner: SerializerProtocol) -> None:
        if getattr(inner, "pickle_fallback", False):
            raise ConfigurationError(
                "the LangGraph savers never use pickle: pass a serializer with"
                " pickle_fallback=False (the default of JsonPlusSerializer)"
            )
        self.inner = maybe_add_typed_methods(inner)

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """Encode ``obj``; raise `InvalidArgumentError` if the inner serializer chose pickle."""
        type_, data = self.inner.dumps_typed(obj)
        if type_ == _PICKLE:
            raise InvalidArgumentError(
                f"a value of type {type(obj).__name__} can only be pickled; the LangGraph"
                " savers store msgpack or JSON only"
            )
        return type_, data

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Decode ``data``; a pickle payload raises `InvalidArgumentError` and is not loaded."""
        if data[0] == _PICKLE:
            raise InvalidArgumentError(
                "refusing to load a pickled value: the savers never unpickle"
            )
        return self.inner.loads_typed(data)

    def with_msgpack_allowlist(self, extra: Iterable[tuple[str, ...]]) -> NoPickleSerializer:
        """The same wrapper around the inner serializer with ``extra`` allowed (LangGraph API)."""
        if isinstance(self.inner, JsonPlusSerializer):
            return NoPickleSerializer(self.inner.with_msgpack_allowlist(extra))
        return self


def default_serde(
    allowlist: Iterable[tuple[str, ...]] = DEFAULT_ALLOWLIST,
) -> NoPickleSerializer:
    """LangGraph's msgpack serializer without the pickle fallback, reviving only ``allowlist``.

    Args:
        allowlist: ``(module, class)`` pairs (or ``(module,)`` for a whole module) msgpack may
            revive, on top of LangGraph's built-in safe types.
    """
    return NoPickleSerializer(
        JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=list(allowlist))
    )
