"""Encryption at rest on every store, sync and async (the ``<store>+encrypted`` kits).

What the store holds is sealed, listing needs no keys, a wrong or missing key fails closed, and
`refresh_thread` rotates keys and encrypts plaintext threads without changing versions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agents_persistence import (
    AgentStateSnapshot,
    DecryptionError,
    UnknownKeyError,
)
from agents_persistence._codec import is_sealed
from agents_persistence.encryption import EncryptedOnly, LocalKeyring, key_id_of

from ..conftest import KITS, _ready
from ..kits.encrypted import EncryptedKit, keyring
from .states import rich_state

if TYPE_CHECKING:
    from ..kits.base import StoreKit
    from ..support import Harness

MARKER = "at-rest-marker-7f3c"


ENCRYPTED = [kit for kit in KITS if isinstance(kit, EncryptedKit)]


@pytest.fixture(params=ENCRYPTED, ids=[k.name for k in ENCRYPTED])
def kit(request: pytest.FixtureRequest) -> StoreKit:
    """Only the encrypted twins (overrides the suite's ``kit``)."""
    return _ready(request.param)


def _encrypted(harness: Harness) -> EncryptedKit:
    assert isinstance(harness.kit, EncryptedKit)
    return harness.kit


def _long_state(turns: int) -> AgentStateSnapshot:
    """A state with pieces (transcript segments and files), holding `MARKER` everywhere."""
    data = rich_state(MARKER).model_dump(mode="json")
    data["messages"] += [_message(f"{MARKER} message {n} " + "x" * 400) for n in range(turns)]
    data["files"].update({f"/notes/{MARKER}-{n}.md": f"{MARKER} " + "y" * 2000 for n in range(6)})
    return AgentStateSnapshot.model_validate(data)


def _message(text: str) -> dict[str, object]:
    return {"role": "User", "content": {"type": "Text", "value": text}}


def _append(state: AgentStateSnapshot, text: str) -> AgentStateSnapshot:
    data = state.model_dump(mode="json")
    data["messages"].append(_message(text))
    return AgentStateSnapshot.model_validate(data)


def _key_ids(values: list[bytes]) -> set[str | None]:
    return {key_id_of(value) for value in values}


def test_what_the_store_holds_is_sealed(harness: Harness) -> None:
    kit = _encrypted(harness)
    cp = harness.make()
    state = _long_state(30)
    cp.save_state("t1", state)
    state = _append(state, f"{MARKER} reply")
    cp.save_state("t1", state, expected_version=1)  # a delta: appended segment, same files
    values = kit.stored_values(harness.namespace, "t1")
    assert len(values) > 2  # a head and pieces
    assert all(is_sealed(value) for value in values)
    assert not any(MARKER.encode() in value for value in values)
    assert _key_ids(values) == {"k1"}
    assert cp.load_state("t1") == state


def test_listing_needs_no_keys_and_loading_without_them_fails_closed(harness: Harness) -> None:
    _encrypted(harness)
    harness.make().save_state("t1", _long_state(3))
    plain = harness.make(keys=None)
    assert [t.thread_id for t in plain.list_threads().threads] == ["t1"]
    with pytest.raises(DecryptionError):
        plain.load_state("t1")


def test_a_wrong_or_missing_key_fails_closed(harness: Harness) -> None:
    _encrypted(harness)
    harness.make().save_state("t1", _long_state(3))
    wrong = LocalKeyring(active="k1", keys={"k1": bytes(32)})
    with pytest.raises(DecryptionError):
        harness.make(keys=wrong).load_checkpoint("t1")
    with pytest.raises(UnknownKeyError) as caught:
        harness.make(keys=keyring("k2")).load_checkpoint("t1")
    assert caught.value.key_id == "k1"


def test_refresh_rotates_to_the_active_key_keeping_the_version(harness: Harness) -> None:
    kit = _encrypted(harness)
    state = _long_state(20)
    before = harness.make().save_state("t1", state)
    rotating = harness.make(keys=keyring("k2", "k1", "k2"))
    assert rotating.refresh_thread("t1", dry_run=True) == "stale"
    assert _key_ids(kit.stored_values(harness.namespace, "t1")) == {"k1"}  # nothing written
    assert rotating.refresh_thread("t1") == "rewritten"
    assert rotating.refresh_thread("t1") == "current"
    assert rotating.refresh_thread("absent") == "absent"
    assert _key_ids(kit.stored_values(harness.namespace, "t1")) == {"k2"}
    after = harness.make(keys=keyring("k2")).load_checkpoint("t1")  # the old key is retired
    assert after.state == state
    assert (after.info.version, after.info.updated_at) == (before.version, before.updated_at)


def test_refresh_encrypts_a_plaintext_thread(harness: Harness) -> None:
    kit = _encrypted(harness)
    state = _long_state(10)
    harness.make(keys=None).save_state("t1", state)
    encrypting = harness.make()
    assert encrypting.load_state("t1") == state  # plaintext is read while a store is encrypted
    assert encrypting.refresh_thread("t1") == "rewritten"
    values = kit.stored_values(harness.namespace, "t1")
    assert all(is_sealed(value) for value in values)
    assert not any(MARKER.encode() in value for value in values)
    assert harness.make().load_state("t1") == state


def test_a_save_after_rotation_is_sealed_under_the_new_key(harness: Harness) -> None:
    kit = _encrypted(harness)
    cp = harness.make()
    state = _long_state(20)
    cp.save_state("t1", state)
    rotated = harness.make(keys=keyring("k2", "k1", "k2"))
    loaded = rotated.load_checkpoint("t1")
    state = _append(loaded.state, "more")
    rotated.save_state("t1", state, expected_version=1)  # a delta over k1 pieces
    assert _key_ids(kit.stored_values(harness.namespace, "t1")) >= {"k2"}
    assert rotated.refresh_thread("t1") == "rewritten"
    assert _key_ids(kit.stored_values(harness.namespace, "t1")) == {"k2"}
    assert harness.make(keys=keyring("k2")).load_state("t1") == state


def test_encrypted_only_refuses_what_is_stored_in_clear(harness: Harness) -> None:
    _encrypted(harness)
    plain = harness.make(keys=None)
    small, large = AgentStateSnapshot(todos=rich_state(MARKER).todos), _long_state(10)
    plain.save_state("small", small)
    plain.save_state("large", large)
    strict = harness.make(keys=EncryptedOnly(keyring()))
    for thread_id in ("small", "large"):
        with pytest.raises(DecryptionError):
            strict.load_state(thread_id)
    # A delta sealed over a thread written in clear keeps its old pieces in clear: refused too.
    encrypting = harness.make()
    encrypting.save_state(
        "large", _append(encrypting.load_state("large"), "more"), expected_version=1
    )
    with pytest.raises(DecryptionError):
        strict.load_state("large")
    assert [encrypting.refresh_thread(t) for t in ("small", "large")] == ["rewritten"] * 2
    assert strict.load_state("small") == small
    assert strict.load_state("large") == _append(large, "more")
    assert strict.refresh_thread("large") == "current"
