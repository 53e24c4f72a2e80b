"""PostgreSQL's JSONB normalises numbers in the head: the exact rule the docs state, checked.

JSONB stores numbers as ``numeric``. pydantic writes floats of magnitude 1e16 and above in
exponent form (``1e+16``); ``numeric`` keeps no exponent and renders them as integers, so they
come back as the ``int`` of the same value. ``-0.0`` comes back as ``0.0``. Every other number
comes back as written. This applies to the fields kept in the ``state`` column (the head: todos,
interrupts, unknown fields, and the whole of a state too small to be split); the transcript,
``files`` and ``scratchpad`` of a split state are pieces, stored as the JSON text written, like
the other stores keep everything.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from agents_persistence import AgentStateSnapshot, SQLCheckpointer
from agents_persistence._layout import SMALL_STATE_BYTES

from ..kits.sql import PostgreSQLKit

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Engine

_KIT = PostgreSQLKit()


@pytest.fixture
def engine() -> Iterator[Engine]:
    reason = _KIT.unavailable_reason()
    if reason is not None:
        from ..kits.base import IN_CI

        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    _KIT.start()
    yield _KIT.engine
    _KIT.stop()


CASES = [
    (1e308, 10**308, int),
    (-1.5e300, -15 * 10**299, int),
    (3.8e16, 38 * 10**15, int),
    (1e16, 10**16, int),
    (1e15, 1e15, float),
    (123456789.0, 123456789.0, float),
    (2.5, 2.5, float),
    (1.0, 1.0, float),
    (1e-7, 1e-7, float),
    (5e-324, 5e-324, float),
    (0.1 + 0.2, 0.30000000000000004, float),
    (-0.0, 0.0, float),
    (2**63 - 1, 2**63 - 1, int),
]


def test_jsonb_numbers_follow_the_documented_rule(engine: Engine) -> None:
    cp = SQLCheckpointer(engine, namespace="n" + uuid.uuid4().hex[:12])
    numbers = {str(i): written for i, (written, _, _) in enumerate(CASES)}
    # "numbers" is an unknown top-level field: kept in the head (JSONB). The large file makes
    # the state large enough to be split: its scratchpad is a piece.
    large = "x" * (SMALL_STATE_BYTES + 100)
    state = AgentStateSnapshot.model_validate(
        {"scratchpad": numbers, "numbers": numbers, "files": {"large": large}}
    )
    cp.save_state("numbers", state)
    loaded = cp.load_state("numbers")
    assert loaded is not None
    in_head = getattr(loaded, "numbers")  # noqa: B009 - an extra field
    for i, (written, expected, kind) in enumerate(CASES):
        value = in_head[str(i)]
        assert type(value) is kind, (written, value)
        assert value == expected, (written, value)
        kept = loaded.scratchpad[str(i)]  # a piece: the JSON text as written
        assert type(kept) is type(written), (written, kept)
        assert kept == written, (written, kept)
