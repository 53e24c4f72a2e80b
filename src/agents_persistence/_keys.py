"""Key-encryption keys: the `KeyProvider` protocol and the local keyring (see `encryption`)."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

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
    "encode_key",
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


def encode_key(key: bytes) -> str:
    """A key as it is written in a keyring file: standard base64 of its 32 bytes."""
    return base64.b64encode(key).decode("ascii")


def _decode_key(key_id: str, text: object) -> bytes:
    if not isinstance(text, str):
        raise ConfigurationError(f"key {key_id!r} must be a base64 string")
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        pass
    # Raised outside the handler, without a context: the text is key material.
    raise ConfigurationError(f"key {key_id!r} is not valid base64")


def read_config(source: str | Path, *, where: str) -> dict[str, Any]:
    """The JSON object of a key configuration: ``source`` is JSON text or a path to a file.

    Args:
        source: A `Path` (read as UTF-8) or the JSON text itself.
        where: How to name the source in errors (a file name, an environment variable).

    Raises:
        ConfigurationError: The file cannot be read or does not hold a JSON object. Messages
            never quote the content (it holds keys).
    """
    if isinstance(source, Path):
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read the key file {where}: {exc.strerror}") from None
    else:
        text = source
    line: object = None
    try:
        data = json.loads(text)
    except ValueError as exc:
        # Raised below, outside the handler: the parser's error holds the whole text.
        line = getattr(exc, "lineno", "?")
    if line is not None:
        raise ConfigurationError(f"{where} is not valid JSON (line {line})")
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where} must hold a JSON object")
    return data


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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "the keyring") -> LocalKeyring:
        """A keyring from its JSON form: ``{"active": ID, "keys": {ID: BASE64, ...}}``.

        Each key is the standard base64 of 32 random bytes (`generate_key`, `encode_key`, or
        ``agents-persistence keys generate``).

        Args:
            data: The parsed JSON object.
            where: How to name its source in errors.

        Raises:
            ConfigurationError: A member is missing, of the wrong type, or a key is not 32
                bytes of base64; the message never quotes a key.
        """
        active, keys = data.get("active"), data.get("keys")
        if not isinstance(active, str):
            raise ConfigurationError(f'{where}: "active" must be the id of the active key')
        if not isinstance(keys, Mapping) or not keys:
            raise ConfigurationError(f'{where}: "keys" must map key ids to base64 keys')
        unknown = set(data) - {"active", "keys"}
        if unknown:
            raise ConfigurationError(f"{where}: unknown members {sorted(unknown)!r}")
        return cls(
            active=active,
            keys={validate_key_id(k): _decode_key(k, v) for k, v in keys.items()},
        )

    @classmethod
    def from_json(cls, text: str, *, where: str = "the keyring") -> LocalKeyring:
        """A keyring from JSON text (see `from_dict`), e.g. an environment variable's value."""
        return cls.from_dict(read_config(text, where=where), where=where)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalKeyring:
        """A keyring from a JSON file (see `from_dict`); keep it readable by its owner only."""
        where = os.fspath(path)
        return cls.from_dict(read_config(Path(where), where=where), where=where)

    def with_key(self, key_id: str, key: bytes) -> LocalKeyring:
        """A new keyring: these keys plus ``key`` as the active one (the others read only).

        Raises:
            ConfigurationError: ``key_id`` is already in this keyring, or the key is invalid.
        """
        if key_id in self._keys:
            raise ConfigurationError(f"the keyring already holds a key {key_id!r}")
        return LocalKeyring(active=key_id, keys={**self._keys, key_id: key})

    def to_dict(self) -> dict[str, Any]:
        """The keyring's JSON form, keys in base64 (`from_dict` reads it back): secret."""
        return {
            "active": self._active,
            "keys": {key_id: encode_key(key) for key_id, key in self._keys.items()},
        }

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
