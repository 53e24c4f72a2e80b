"""Payload versions and upcasters: three generations of one state model, old records load.

Generation 1 kept ``title``, ``notes`` (a map) and ``todo`` (a list of strings). Generation 2
renamed ``notes`` to ``scratchpad`` and turned each to-do into ``{"content", "done"}``.
Generation 3 moved ``title`` into ``meta`` and added ``meta.language``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from agents_persistence import CorruptStateError, MissingUpcasterError, PayloadVersionError
from agents_persistence._core import Core, Record
from agents_persistence.errors import ConfigurationError
from agents_persistence.upcasting import Upcasters, schema_version

SECRET = "sk-live-SECRET-4242"


class ConversationV1(BaseModel):
    """Generation 1 (no ``schema_version``: version 1)."""

    title: str
    notes: dict[str, str] = {}
    todo: list[str] = []


class Todo(BaseModel):
    content: str
    done: bool = False


class ConversationV2(BaseModel):
    schema_version: ClassVar[int] = 2

    title: str
    scratchpad: dict[str, str] = {}
    todos: list[Todo] = []


class Meta(BaseModel):
    title: str
    language: str


class ConversationV3(BaseModel):
    schema_version: ClassVar[int] = 3

    meta: Meta
    scratchpad: dict[str, str] = {}
    todos: list[Todo] = []


def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    data["scratchpad"] = data.pop("notes", {})
    data["todos"] = [{"content": item, "done": False} for item in data.pop("todo", [])]
    return data


def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    data["meta"] = {"title": data.pop("title"), "language": "en"}
    return data


def upcasters_v3() -> Upcasters:
    upcasters = Upcasters(ConversationV3)
    upcasters.register(1)(v1_to_v2)
    upcasters.register(2)(v2_to_v3)
    return upcasters


V1 = ConversationV1(title="Trip", notes={"hotel": "Ritz"}, todo=["book", "pack"])
V2 = ConversationV2(
    title="Trip",
    scratchpad={"hotel": "Ritz"},
    todos=[Todo(content="book"), Todo(content="pack")],
)
V3 = ConversationV3(
    meta=Meta(title="Trip", language="en"),
    scratchpad={"hotel": "Ritz"},
    todos=[Todo(content="book"), Todo(content="pack")],
)


def _stored(state: BaseModel) -> dict[str, Any]:
    """A record's JSON as the generation's code wrote it."""
    loaded: dict[str, Any] = json.loads(state.model_dump_json())
    return loaded


def test_models_declare_their_schema_version() -> None:
    assert schema_version(ConversationV1) == 1
    assert schema_version(ConversationV2) == 2
    assert schema_version(ConversationV3) == 3


@pytest.mark.parametrize(("record", "version"), [(V1, 1), (V2, 2), (V3, 3)])
def test_every_generation_loads_into_the_current_model(record: BaseModel, version: int) -> None:
    upcasters = upcasters_v3()
    stored = _stored(record)
    upgraded = upcasters.upcast(stored, version, thread_id="t")
    assert ConversationV3.model_validate(upgraded) == V3
    assert stored == _stored(record)  # the stored JSON is not changed


def test_an_intermediate_model_loads_generation_one() -> None:
    upcasters = Upcasters(ConversationV2)

    @upcasters.register(1)
    def rename(data: dict[str, Any]) -> dict[str, Any]:
        return v1_to_v2(data)

    assert ConversationV2.model_validate(upcasters.upcast(_stored(V1), 1)) == V2


def test_the_current_version_passes_through_unchanged() -> None:
    stored = _stored(V3)
    assert upcasters_v3().upcast(stored, 3) is stored


def test_the_core_upcasts_a_record_stored_before_schema_versions() -> None:
    core: Core[ConversationV3] = Core(
        namespace="ns",
        ttl=None,
        state_type=ConversationV3,
        max_state_bytes=10**6,
        clock=None,
        upcasters=upcasters_v3(),
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    # A record without a manifest (stored whole) is schema version 1.
    for payload in (V1.model_dump_json(), _stored(V1)):
        assert core.decode(Record("t", 1, now, now, None, 0, payload)) == V3
    with pytest.raises(CorruptStateError):
        core.decode(Record("t", 1, now, now, None, 0, "[1, 2]"))


def test_a_record_newer_than_the_code_raises() -> None:
    with pytest.raises(PayloadVersionError) as caught:
        upcasters_v3().upcast({"meta": {}}, 4, thread_id="thread-9")
    error = caught.value
    assert isinstance(error, CorruptStateError)
    assert not isinstance(error, MissingUpcasterError)
    assert (error.stored, error.current, error.thread_id) == (4, 3, "thread-9")
    assert "schema version 4" in str(error)
    assert "ConversationV3" in str(error)


@pytest.mark.parametrize("stored", [0, -1, "2", None, True, 2.0])
def test_an_invalid_stored_version_raises(stored: object) -> None:
    with pytest.raises(PayloadVersionError):
        upcasters_v3().upcast(_stored(V2), stored)


def test_a_missing_step_raises_naming_it() -> None:
    upcasters = Upcasters(ConversationV3)
    upcasters.register(2)(v2_to_v3)
    assert upcasters.missing() == (1,)
    assert upcasters.upcast(_stored(V2), 2) == _stored(V3)
    with pytest.raises(MissingUpcasterError) as caught:
        upcasters.upcast(_stored(V1), 1, thread_id="t")
    error = caught.value
    assert isinstance(error, PayloadVersionError)
    assert error.step == 1
    assert "1 -> 2" in str(error)


def test_a_missing_later_step_raises_before_any_upcaster_runs() -> None:
    calls: list[int] = []
    upcasters = Upcasters(ConversationV3)

    @upcasters.register(1)
    def first(data: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        return v1_to_v2(data)

    with pytest.raises(MissingUpcasterError, match="2 -> 3"):
        upcasters.upcast(_stored(V1), 1)
    assert calls == []


def test_a_failing_upcaster_raises_without_quoting_the_state() -> None:
    upcasters = Upcasters(ConversationV2)

    @upcasters.register(1)
    def broken(data: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(f"cannot convert {data['title']}")

    with pytest.raises(PayloadVersionError) as caught:
        upcasters.upcast({"title": SECRET}, 1, thread_id="t")
    error = caught.value
    assert "1 -> 2" in str(error)
    assert "broken" in str(error)
    assert "ValueError" in str(error)
    assert SECRET not in str(error)
    assert SECRET not in repr(error)


def test_an_upcaster_must_return_an_object() -> None:
    upcasters = Upcasters(ConversationV2)
    upcasters.register(1)(lambda data: [data])  # type: ignore[arg-type, return-value]
    with pytest.raises(PayloadVersionError, match="returned list"):
        upcasters.upcast(_stored(V1), 1)


@pytest.mark.parametrize("step", [0, 3, 4, True, "1"])
def test_a_step_outside_the_model_versions_is_refused(step: Any) -> None:
    with pytest.raises(ConfigurationError):
        Upcasters(ConversationV3).register(step)


def test_a_step_registered_twice_is_refused() -> None:
    upcasters = upcasters_v3()
    with pytest.raises(ConfigurationError, match="already registered"):
        upcasters.register(1)
    assert upcasters.steps == (1, 2)
    assert "1->2" in repr(upcasters)


@pytest.mark.parametrize("declared", [0, -2, "3", True, 1.5])
def test_an_invalid_declared_version_is_refused(declared: object) -> None:
    model = type("Bad", (BaseModel,), {"__annotations__": {"schema_version": ClassVar[Any]}})
    model.schema_version = declared  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError):
        schema_version(model)
    with pytest.raises(ConfigurationError):
        Upcasters(model)


def test_only_pydantic_models_have_upcasters() -> None:
    with pytest.raises(ConfigurationError):
        Upcasters(dict)  # type: ignore[arg-type]
