"""Evolving state models on every store, sync and async: payload versions and upcasters.

Three generations of one state model (`tests/test_upcasting.py`): old records load through
upcasters, `refresh_thread` rewrites them at the current version, a record newer than the code
and a missing step are refused with typed errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agents_persistence import ConfigurationError, MissingUpcasterError, PayloadVersionError
from agents_persistence.upcasting import Upcasters

from ..test_upcasting import (
    V1,
    V2,
    V3,
    ConversationV1,
    ConversationV2,
    ConversationV3,
    upcasters_v3,
    v1_to_v2,
)

if TYPE_CHECKING:
    from ..support import Harness


def test_three_generations_load_through_upcasters(harness: Harness) -> None:
    harness.make(state_type=ConversationV1).save_state("g1", V1)
    harness.make(state_type=ConversationV2).save_state("g2", V2)
    current = harness.make(state_type=ConversationV3, upcasters=upcasters_v3())
    current.save_state("g3", V3)
    for thread_id in ("g1", "g2", "g3"):
        assert current.load_state(thread_id) == V3
    assert [current.refresh_thread(t) for t in ("g1", "g2", "g3")] == [
        "rewritten",
        "rewritten",
        "current",
    ]
    # Rewritten at version 3: code without upcasters now reads them.
    bare = harness.make(state_type=ConversationV3)
    assert [bare.load_state(t) for t in ("g1", "g2", "g3")] == [V3, V3, V3]


def test_a_record_newer_than_the_code_or_a_missing_step_is_refused(harness: Harness) -> None:
    harness.make(state_type=ConversationV3).save_state("new", V3)
    harness.make(state_type=ConversationV1).save_state("old", V1)
    older_code = harness.make(state_type=ConversationV2, upcasters=_v2_upcasters())
    with pytest.raises(PayloadVersionError) as newer:
        older_code.load_state("new")
    assert (newer.value.stored, newer.value.current) == (3, 2)
    no_steps = harness.make(state_type=ConversationV3)
    with pytest.raises(MissingUpcasterError) as missing:
        no_steps.load_state("old")
    assert missing.value.step == 1
    assert older_code.load_state("old") == V2


def _v2_upcasters() -> Upcasters:
    upcasters = Upcasters(ConversationV2)
    upcasters.register(1)(v1_to_v2)
    return upcasters


def test_upcasters_must_be_for_the_state_type(harness: Harness) -> None:
    with pytest.raises(ConfigurationError):
        harness.make(state_type=ConversationV2, upcasters=upcasters_v3())
