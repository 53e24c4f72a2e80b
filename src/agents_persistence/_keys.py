"""Key-encryption keys: the `KeyProvider` protocol and the local keyring (see `encryption`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from agents_persistence.errors import ConfigurationError, MissingExtraError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DATA_KEY_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "KeyProvider",
    "LocalKeyring",
    "aesgcm",
    "generate_key",
    "invalid_tag",
    "valid_key_id",
    "validate_key_id",
]

DATA_KEY_BYTES = 32
"""Length of data keys and of `LocalKeyring` keys: AES-256."""

NONCE_BYTES = 12
"""AES-GCM nonce length."""

TAG_BYTES = 16
"""AES-GCM tag length."""

_KEY_ID_RE = re.compile(r"[A-Za-z0-9_.:/+=@-]{1,255}")
_WRAP_PREFIX = b"agents-persistence data key\x00"
_EXTRA = "encryption"


def valid_key_id(key_id: str) -> bool:
    """Whether ``key_id`` is 1 to 255 of ``A-Z a-z 0-9 _ . : / + = @ -``."""
    return bool(_KEY_ID_RE.fullmatch(key_id))


def validate_key_id(key_id: object) -> str:
    """Return ``key_id`` if it is 1 to 255 of ``A-Z a-z 0-9 _ . : / + = @ -``, else raise.

    The set covers local ids (``2026-11``) and KMS key ids, ARNs and aliases. Raises
    `ConfigurationError`.
    """
    if not isinstance(key_id, str) or not valid_key_id(key_id):
        raise ConfigurationError(
            f"invalid key id {key_id!r:.80}: use 1 to 255 of A-Z a-z 0-9 _ . : / + = @ -"
        )
    return key_id


def generate_key() -> bytes:
    """A new random 32-byte key-encryption key for a `LocalKeyring`."""
    return os.urandom(DATA_KEY_BYTES)


def aesgcm(key: bytes) -> AESGCM:
    """An AES-GCM cipher of ``key``; `MissingExtraError` when cryptography is not installed."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            f"encryption needs cryptography: pip install 'agents-persistence[{_EXTRA}]'",
            extra=_EXTRA,
            name=exc.name,
        ) from exc
    return AESGCM(key)


def invalid_tag() -> type[Exception]:
    """Cryptography's exception for a tag that does not verify."""
    from cryptography.exceptions import InvalidTag

    return InvalidTag


@runtime_checkable
class KeyProvider(Protocol):
    """Holds key-encryption keys: wraps new data keys under the active key, unwraps old ones.

    `unwrap` raises `LookupError` when it does not hold ``key_id`` and `ValueError` when the
    wrapped key does not unwrap (wrong key, tampered bytes); `unseal` turns these into
    `UnknownKeyError` and `DecryptionError`. Other errors (an unreachable key service:
    `BackendUnavailableError`) pass through. Neither method's errors may quote key material.
    """

    @property
    def active_key_id(self) -> str:
        """The id of the key new data keys are wrapped under."""
        ...

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """Wrap ``data_key`` under the active key: ``(key id, wrapped bytes)``."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        """The data key ``wrapped`` under the key ``key_id``."""
        ...


class LocalKeyring:
    """Key-encryption keys held by the application: the active one and older ones for reading.

    Data keys are wrapped with AES-256-GCM under the key (a random nonce, the key id as
    associated data): the wrapped key is 60 bytes.

    Args:
        active: The id of the key new values are sealed under; must be in ``keys``.
        keys: Every key this keyring may read with, by id: 32 random bytes each
            (`generate_key`). Keep a retired key here until `rewrap` or `reseal` has moved
            every value off it.
    """

    __slots__ = ("_active", "_ciphers", "_keys")

    def __init__(self, *, active: str, keys: Mapping[str, bytes]) -> None:
        if not isinstance(keys, Mapping) or not keys:
            raise ConfigurationError("keys must be a non-empty mapping of key id to 32-byte key")
        checked: dict[str, bytes] = {}
        for key_id, key in keys.items():
            validate_key_id(key_id)
            if not isinstance(key, bytes) or len(key) != DATA_KEY_BYTES:
                # The key's value is never quoted: only its type and length.
                length = len(key) if isinstance(key, bytes) else None
                raise ConfigurationError(
                    f"key {key_id!r} must be {DATA_KEY_BYTES} bytes"
                    f" (got {type(key).__name__}{'' if length is None else f' of {length}'})"
                )
            checked[key_id] = key
        validate_key_id(active)
        if active not in checked:
            raise ConfigurationError(f"the active key {active!r} is not among the keys")
        self._active = active
        self._keys = checked
        self._ciphers: dict[str, AESGCM] = {}

    def __repr__(self) -> str:
        return f"LocalKeyring(active={self._active!r}, key_ids={sorted(self._keys)!r})"

    @property
    def active_key_id(self) -> str:
        """The id of the key new data keys are wrapped under."""
        return self._active

    @property
    def key_ids(self) -> frozenset[str]:
        """The ids of every key this keyring reads with."""
        return frozenset(self._keys)

    def _cipher(self, key_id: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            key = self._keys.get(key_id)
            if key is None:
                raise LookupError(key_id)
            cipher = self._ciphers[key_id] = aesgcm(key)
        return cipher

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """Wrap ``data_key`` under the active key: ``(key id, nonce + ciphertext + tag)``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._cipher(self._active).encrypt(
            nonce, data_key, _WRAP_PREFIX + self._active.encode()
        )
        return self._active, nonce + sealed

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        """The data key ``wrapped`` under ``key_id``; `LookupError` or `ValueError` if not."""
        cipher = self._cipher(key_id)
        if len(wrapped) != NONCE_BYTES + DATA_KEY_BYTES + TAG_BYTES:
            raise ValueError("wrapped data key has the wrong length")
        try:
            return cipher.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _WRAP_PREFIX + key_id.encode()
            )
        except invalid_tag() as exc:
            raise ValueError("wrapped data key does not open under this key") from exc
