"""State models that evolve: a schema version on the model, upgrade functions on the stored JSON.

A state model declares the version of its JSON shape as a class variable::

    class Conversation(BaseModel):
        schema_version: ClassVar[int] = 3
        ...

(a model without one is version 1). Each record stores the schema version it was written with.
When the model changes shape (a field renamed, restructured, added), bump ``schema_version`` and
register a pure function that turns the JSON of the previous version into the next one::

    upcasters = Upcasters(Conversation)

    @upcasters.register(1)  # 1 -> 2
    def rename_notes(data: dict[str, Any]) -> dict[str, Any]:
        data["scratchpad"] = data.pop("notes", {})
        return data

On load, `Upcasters.upcast` applies every step from the stored version up to the model's, in
order, before the JSON is validated into the model. A record written by a newer model than the
code's raises `PayloadVersionError`; a step with no upcaster raises `MissingUpcasterError`
naming it (``2 -> 3``); both are `CorruptStateError`, and neither message quotes the state.

An upcaster receives the JSON object as parsed from the store (its own copy: it may change it in
place and return it) and returns the object of the next version. It must be pure (no I/O, no
clock, no randomness): the same stored record always loads the same way, in every process.

How the checkpointer uses it (integration, store-independent): the stored head's manifest keeps
the schema version a save was written with (absent: 1); ``Core.encode`` writes the model's
`schema_version`; ``Core.decode`` compares the stored version with the model's and, only when
they differ, parses the assembled JSON into a ``dict``, calls ``upcasters.upcast(data, stored,
thread_id=...)`` and validates the result (the common case, a record of the current version,
keeps validating straight from the JSON text).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from agents_persistence.errors import (
    ConfigurationError,
    MissingUpcasterError,
    PayloadVersionError,
)

__all__ = ["SCHEMA_VERSION_ATTRIBUTE", "Upcaster", "Upcasters", "schema_version"]

SCHEMA_VERSION_ATTRIBUTE = "schema_version"
"""The class variable of a state model that holds its schema version."""

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""A pure function from the JSON object of version ``n`` to that of version ``n + 1``."""

F = TypeVar("F", bound=Upcaster)


def _valid_version(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def schema_version(state_type: type[BaseModel]) -> int:
    """The schema version a state model declares (``schema_version``; 1 when absent).

    Raises:
        ConfigurationError: The declared version is not an int of at least 1.
    """
    version = getattr(state_type, SCHEMA_VERSION_ATTRIBUTE, 1)
    if not _valid_version(version):
        raise ConfigurationError(
            f"{state_type.__name__}.{SCHEMA_VERSION_ATTRIBUTE} must be an int of at least 1,"
            f" got {version!r:.40}"
        )
    return int(version)


class Upcasters:
    """The upgrade functions of one state model, by the schema version each upgrades from.

    Args:
        state_type: The state model (its ``schema_version`` is the version records end at).
    """

    __slots__ = ("_steps", "current", "state_type")

    def __init__(self, state_type: type[BaseModel]) -> None:
        if not (isinstance(state_type, type) and issubclass(state_type, BaseModel)):
            raise ConfigurationError(f"state_type must be a pydantic model, not {state_type!r}")
        self.state_type = state_type
        self.current = schema_version(state_type)
        self._steps: dict[int, Upcaster] = {}

    def __repr__(self) -> str:
        steps = ", ".join(f"{n}->{n + 1}" for n in sorted(self._steps))
        return f"Upcasters({self.state_type.__name__}, current={self.current}, steps=[{steps}])"

    def register(self, from_version: int) -> Callable[[F], F]:
        """Decorator: register the upcaster from ``from_version`` to ``from_version + 1``.

        Raises:
            ConfigurationError: ``from_version`` is not below the model's version, or a step
                from it is already registered.
        """
        if not _valid_version(from_version) or from_version >= self.current:
            raise ConfigurationError(
                f"an upcaster upgrades from a version from 1 to {self.current - 1}"
                f" ({self.state_type.__name__} is at {self.current}), got {from_version!r:.40}"
            )
        if from_version in self._steps:
            raise ConfigurationError(
                f"an upcaster {from_version} -> {from_version + 1} is already registered"
            )

        def decorator(function: F) -> F:
            if not callable(function):
                raise ConfigurationError(f"an upcaster must be callable, not {function!r:.40}")
            self._steps[from_version] = function
            return function

        return decorator

    @property
    def steps(self) -> tuple[int, ...]:
        """The versions registered upcasters upgrade from, in order."""
        return tuple(sorted(self._steps))

    def missing(self, oldest: int = 1) -> tuple[int, ...]:
        """The steps from ``oldest`` up to the model's version that have no upcaster."""
        return tuple(n for n in range(oldest, self.current) if n not in self._steps)

    def upcast(
        self, data: dict[str, Any], stored_version: object, *, thread_id: str = ""
    ) -> dict[str, Any]:
        """``data``, written at ``stored_version``, brought to the model's schema version.

        ``data`` itself is not changed: the upcasters work on a copy (when there is a step to
        apply). A record at the model's version comes back as it is.

        Args:
            data: The stored state's JSON object.
            stored_version: The schema version the record was written with.
            thread_id: The record's thread, for error messages.

        Raises:
            PayloadVersionError: ``stored_version`` is above the model's (a newer writer), not
                an int of at least 1, or an upcaster failed or returned something other than
                a JSON object.
            MissingUpcasterError: A step between the two versions has no upcaster.
        """
        if not _valid_version(stored_version):
            raise PayloadVersionError(
                thread_id,
                stored_version,
                self.current,
                f"its schema version {stored_version!r:.40} is not an int of at least 1",
            )
        stored = int(stored_version)  # type: ignore[call-overload]
        if stored > self.current:
            raise PayloadVersionError(
                thread_id,
                stored,
                self.current,
                f"it was written with schema version {stored} of"
                f" {self.state_type.__name__}, newer than this code's {self.current}",
            )
        if stored == self.current:
            return data
        for step in range(stored, self.current):
            if step not in self._steps:
                raise MissingUpcasterError(thread_id, stored, self.current, step)
        result = copy.deepcopy(data)
        for step in range(stored, self.current):
            upcaster = self._steps[step]
            try:
                result = upcaster(result)
            except Exception as exc:
                # The exception's message may quote the state: only its type is named.
                raise PayloadVersionError(
                    thread_id,
                    stored,
                    self.current,
                    f"upcaster {step} -> {step + 1} ({getattr(upcaster, '__name__', '?')})"
                    f" raised {type(exc).__name__}",
                ) from exc
            if not isinstance(result, dict):
                raise PayloadVersionError(
                    thread_id,
                    stored,
                    self.current,
                    f"upcaster {step} -> {step + 1} returned {type(result).__name__},"
                    " not a JSON object",
                )
        return result
