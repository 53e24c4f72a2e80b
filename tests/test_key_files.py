"""Key files: the JSON form of a local keyring and of KMS settings, read without quoting keys."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from agents_persistence import ConfigurationError
from agents_persistence.encryption import (
    KmsKeyProvider,
    LocalKeyring,
    associated_data,
    encode_key,
    generate_key,
    key_provider_from_dict,
    key_provider_from_file,
    key_provider_from_json,
    seal,
    unseal,
)

if TYPE_CHECKING:
    from pathlib import Path

WHERE = associated_data("ns", "thread-1", "a1b2c3d4e5f6")


def test_a_keyring_round_trips_through_its_json_form(tmp_path: Path) -> None:
    k1, k2 = generate_key(), generate_key()
    ring = LocalKeyring(active="k2", keys={"k1": k1, "k2": k2})
    data = ring.to_dict()
    assert data == {"active": "k2", "keys": {"k1": encode_key(k1), "k2": encode_key(k2)}}
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(data))
    for loaded in (
        LocalKeyring.from_dict(data),
        LocalKeyring.from_json(json.dumps(data)),
        LocalKeyring.from_file(path),
        key_provider_from_file(path),
        key_provider_from_json(json.dumps(data)),
    ):
        assert isinstance(loaded, LocalKeyring)
        assert (loaded.active_key_id, loaded.key_ids) == ("k2", {"k1", "k2"})
        assert unseal(loaded, seal(ring, b"{}", WHERE), WHERE) == b"{}"


def test_with_key_adds_an_active_key_and_keeps_the_others() -> None:
    ring = LocalKeyring(active="k1", keys={"k1": generate_key()})
    blob = seal(ring, b"{}", WHERE)
    rotated = ring.with_key("k2", generate_key())
    assert (rotated.active_key_id, rotated.key_ids) == ("k2", {"k1", "k2"})
    assert unseal(rotated, blob, WHERE) == b"{}"
    assert ring.key_ids == {"k1"}  # unchanged
    with pytest.raises(ConfigurationError, match="already holds a key 'k1'"):
        rotated.with_key("k1", generate_key())


def test_kms_settings_make_a_kms_provider() -> None:
    pytest.importorskip("boto3")
    provider = key_provider_from_dict(
        {
            "kms": {
                "key_id": "alias/new",
                "previous": ["alias/old"],
                "region": "eu-west-1",
                "endpoint": "http://127.0.0.1:1",
            }
        }
    )
    assert isinstance(provider, KmsKeyProvider)
    assert repr(provider) == "KmsKeyProvider('alias/new', previous=['alias/old'])"


SECRET = encode_key(bytes(range(32)))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "expected"),
        ({"active": "a"}, '"keys" must map'),
        ({"active": 1, "keys": {"a": SECRET}}, '"active" must be'),
        ({"active": "a", "keys": {"a": SECRET}, "extra": 1}, "unknown members ['extra']"),
        ({"active": "a", "keys": {"a": SECRET[:-4]}}, "must be 32 bytes"),
        ({"active": "a", "keys": {"a": 42}}, "must be a base64 string"),
        ({"active": "a", "keys": {"bad id": SECRET}}, "invalid key id"),
        ({"kms": {"key_id": "k", "secret": SECRET}}, "unknown members ['secret']"),
        ({"kms": {"key_id": "k", "previous": "old"}}, '"previous" must be a list'),
        ({"kms": {"key_id": "k", "region": 3}}, "'region' must be a string"),
        ({"kms": {"key_id": "k"}, "active": "a"}, '"kms" must be the only member'),
    ],
)
def test_invalid_key_settings_are_refused_without_quoting_a_key(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        key_provider_from_dict(data)
    assert message in str(caught.value)
    assert SECRET[:20] not in str(caught.value)


def test_unreadable_or_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the key file"):
        key_provider_from_file(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"active": "a", "keys": {"a": "' + SECRET + '"')
    with pytest.raises(ConfigurationError, match="is not valid JSON") as caught:
        key_provider_from_file(broken)
    assert SECRET[:20] not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None  # the parser's error holds the whole file
