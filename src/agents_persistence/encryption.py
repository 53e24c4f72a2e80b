"""Encryption at rest: AES-256-GCM envelope encryption of stored state, with key ids and rotation.

Each sealed value gets a fresh 256-bit **data key**; the value is encrypted with it (AES-256-GCM,
a random 96-bit nonce), and the data key is **wrapped** by a key-encryption key (KEK) held by a
`KeyProvider`: a `LocalKeyring` of 32-byte keys, or AWS KMS (`KmsKeyProvider`). The sealed blob
carries the id of the KEK that wrapped its data key, so a keyring keeps older keys for reading
while new values are sealed under the active one.

Sealed blob format (format 1), all lengths big-endian::

    offset 0        1 byte    0xF5, the format byte (`FORMAT_BYTE`)
    offset 1        1 byte    n, the length of the key id (1 to 255)
    offset 2        n bytes   the key id, ASCII
    offset 2+n      2 bytes   m, the length of the wrapped data key (1 to 65535)
    offset 4+n      m bytes   the wrapped data key (the provider's format)
    offset 4+n+m    12 bytes  the nonce
    offset 16+n+m   rest      the AES-256-GCM ciphertext followed by its 16-byte tag

The bytes 0xF5 to 0xFF never occur in UTF-8 text, so a sealed blob never starts like a JSON
fragment (``{ [ "``, a digit, ``-``, ``t f n`` or whitespace) or a zstd frame (0x28): `is_sealed`
tells the two apart, and a store can hold sealed and plaintext values side by side while it is
being encrypted or rotated. Bytes 0xF6 to 0xFF are reserved for later formats; a blob starting
with one is sealed but not readable by this version (`DecryptionError`).

**Associated data.** The ciphertext is bound to where it is stored: `associated_data` encodes the
namespace, the thread id and a *binding*: the save's token for a head, the piece key for a piece
(``<token>.<n>``, unique to the save that wrote it). A value copied to another namespace, thread
or save fails to open (`DecryptionError`). A head is bound to its save's token rather than to its
version number because several stores assign the version inside their atomic write step (a Lua
script, an ``UPDATE ... SET version = version + 1``), after the value has been sealed; the token
is as unique as the version, known before the write, and kept in clear in the manifest. Pieces
cannot be bound to a version at all: a piece is shared by every later version that keeps it.
The associated data also covers the format byte; the key id and wrapped key are covered by the
wrapping itself (a changed key id or wrapped key does not unwrap), which is what lets `rewrap`
change them without touching the ciphertext.

**Errors.** A value that does not open raises `DecryptionError` (wrong key, tampered bytes,
another namespace, thread or binding, an unknown format), a key id the provider does not hold
raises `UnknownKeyError`; both are `CorruptStateError`. Never data, never ``None``; messages name
the thread and the key id, never plaintext or key material.

**Rotation.** `rewrap` re-wraps a blob's data key under the active KEK without decrypting the
value (retiring an old KEK); `reseal` decrypts and seals again with a fresh data key under the
active KEK (and seals a plaintext value: encrypting an existing store is the same operation).
`needs_rotation` says whether a stored value is plaintext or under a non-active key.

How the stores use this (the integration, store-independent):

* ``Core.encode``: after `agents_persistence._layout.pack`, each new piece body is sealed with
  ``associated_data(namespace, thread_id, piece_key)``; the head (with the manifest's piece
  names and digests, which reveal map keys such as file paths) is sealed with
  ``associated_data(namespace, thread_id, token)``; one `new_data_key` may serve every value of
  one save (each value still gets its own nonce), so a KMS-backed save costs one KMS call.
* ``Core.decode``: each stored body goes through `open_stored` (unseal when `is_sealed`, else
  plaintext as before) and then ``unpack``; one ``cache`` dict per load avoids unwrapping the
  same data key twice.
* In clear, for listing and thread metadata without keys: namespace, thread id, version,
  created/updated/expires timestamps, size, the save's token, the piece keys, and the key id in
  each blob's header (`key_id_of`).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from agents_persistence.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    CheckpointerError,
    ConfigurationError,
    DecryptionError,
    MissingExtraError,
    UnknownKeyError,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DATA_KEY_BYTES",
    "FORMAT_BYTE",
    "NONCE_BYTES",
    "AssociatedData",
    "DataKey",
    "KeyProvider",
    "KmsKeyProvider",
    "LocalKeyring",
    "associated_data",
    "generate_key",
    "is_sealed",
    "key_id_of",
    "needs_rotation",
    "new_data_key",
    "open_stored",
    "reseal",
    "rewrap",
    "seal",
    "unseal",
    "validate_key_id",
]

FORMAT_BYTE = 0xF5
"""The first byte of a sealed blob of format 1 (never the first byte of UTF-8 text)."""

_SEALED_FROM = 0xF5
"""Bytes from here on start a sealed blob (0xF6 to 0xFF: formats this version cannot read)."""

DATA_KEY_BYTES = 32
"""Length of data keys and of `LocalKeyring` keys: AES-256."""

NONCE_BYTES = 12
"""AES-GCM nonce length."""

_TAG_BYTES = 16
_KEY_ID_RE = re.compile(r"[A-Za-z0-9_.:/+=@-]{1,255}")
_AAD_PREFIX = b"agents-persistence sealed value\x00"
_WRAP_PREFIX = b"agents-persistence data key\x00"
_EXTRA = "encryption"


def validate_key_id(key_id: object) -> str:
    """Return ``key_id`` if it is 1 to 255 of ``A-Z a-z 0-9 _ . : / + = @ -``, else raise.

    The set covers local ids (``2026-11``) and KMS key ids, ARNs and aliases. Raises
    `ConfigurationError`.
    """
    if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
        raise ConfigurationError(
            f"invalid key id {key_id!r:.80}: use 1 to 255 of A-Z a-z 0-9 _ . : / + = @ -"
        )
    return key_id


def generate_key() -> bytes:
    """A new random 32-byte key-encryption key for a `LocalKeyring`."""
    return os.urandom(DATA_KEY_BYTES)


def _aesgcm(key: bytes) -> AESGCM:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            f"encryption needs cryptography: pip install 'agents-persistence[{_EXTRA}]'",
            extra=_EXTRA,
            name=exc.name,
        ) from exc
    return AESGCM(key)


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


# --- associated data -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AssociatedData:
    """Where a sealed value belongs: authenticated with it, not stored in it.

    Attributes:
        namespace: The checkpointer's namespace.
        thread_id: The thread.
        binding: The save's token (for a head) or the piece key (for a piece); an ``int`` is
            taken as a version, for stores that know it when they seal.
    """

    namespace: str
    thread_id: str
    binding: str | int

    def encode(self) -> bytes:
        """The bytes authenticated: each part length-prefixed, so no two contexts collide."""
        kind, value = (
            (b"v", str(self.binding)) if isinstance(self.binding, int) else (b"b", self.binding)
        )
        out = bytearray(_AAD_PREFIX)
        for part in (
            self.namespace.encode(),
            self.thread_id.encode("utf-8", "surrogatepass"),
            kind,
            value.encode(),
        ):
            out += struct.pack(">I", len(part))
            out += part
        return bytes(out)


def associated_data(namespace: str, thread_id: str, binding: str | int) -> AssociatedData:
    """The associated data of a value stored for ``thread_id`` in ``namespace``.

    Args:
        namespace: The checkpointer's namespace.
        thread_id: The thread.
        binding: For a head, the token of the save that wrote it (``Manifest.token``); for a
            piece, its key (``<token>.<n>``). An ``int`` binds to a version instead (only for
            a store that knows the version before sealing); a reader must use the same kind.
    """
    if isinstance(binding, bool) or not isinstance(binding, str | int):
        raise ConfigurationError(f"binding must be a str or an int, not {type(binding).__name__}")
    return AssociatedData(namespace, thread_id, binding)


# --- key providers ---------------------------------------------------------------------------


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
            cipher = self._ciphers[key_id] = _aesgcm(key)
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
        if len(wrapped) != NONCE_BYTES + DATA_KEY_BYTES + _TAG_BYTES:
            raise ValueError("wrapped data key has the wrong length")
        try:
            return cipher.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _WRAP_PREFIX + key_id.encode()
            )
        except _invalid_tag() as exc:
            raise ValueError("wrapped data key does not open under this key") from exc


class KmsKeyProvider:
    """Key-encryption keys in AWS KMS: data keys are wrapped by KMS ``Encrypt``/``Decrypt``.

    A blob records the ARN of the KMS key that wrapped its data key (from the ``Encrypt``
    reply), so a key given by alias keeps working after the alias moves. Only the active key and
    the ``previous`` keys are accepted for reading: a blob naming another KMS key, even one this
    principal may use, raises `UnknownKeyError`. Key ids are resolved to ARNs with
    ``DescribeKey`` on first use. Every wrap and unwrap is a KMS request (share one data key per
    save with `new_data_key`, and one ``cache`` per load, to keep them few).

    Args:
        key_id: The active KMS key: key id, ARN, alias (``alias/name``) or alias ARN.
        previous: Older KMS keys, readable only.
        client: A boto3 KMS client to use (not closed here); by default one is created from
            ``region_name`` / ``endpoint_url`` and the usual AWS credential chain.
        region_name: Region of the created client.
        endpoint_url: Endpoint of the created client (a local KMS server).
        encryption_context: KMS encryption context of every wrap (not secret; logged by
            CloudTrail); the default names this library.

    Raises:
        MissingExtraError: boto3 is not installed (extra ``encryption-kms``).
    """

    def __init__(
        self,
        key_id: str,
        *,
        previous: tuple[str, ...] | list[str] = (),
        client: Any = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        encryption_context: Mapping[str, str] | None = None,
    ) -> None:
        self._configured = (validate_key_id(key_id), *(validate_key_id(k) for k in previous))
        if client is None:
            try:
                import boto3  # type: ignore[import-untyped]
            except ModuleNotFoundError as exc:
                raise MissingExtraError(
                    "KmsKeyProvider needs boto3: pip install 'agents-persistence[encryption-kms]'",
                    extra="encryption-kms",
                    name=exc.name,
                ) from exc
            client = boto3.client("kms", region_name=region_name, endpoint_url=endpoint_url)
        self._client = client
        self._context = dict(encryption_context or {"library": "agents-persistence"})
        self._arns: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"KmsKeyProvider({self._configured[0]!r}, previous={list(self._configured[1:])!r})"

    def _resolved(self) -> tuple[str, ...]:
        if self._arns is None:
            arns = []
            for key_id in self._configured:
                reply = self._call("DescribeKey", key_id, KeyId=key_id)
                arns.append(str(reply["KeyMetadata"]["Arn"]))
            self._arns = tuple(arns)
        return self._arns

    @property
    def active_key_id(self) -> str:
        """The ARN of the active KMS key (resolved once with ``DescribeKey``)."""
        return self._resolved()[0]

    @property
    def key_ids(self) -> frozenset[str]:
        """The ARNs of every KMS key accepted for reading."""
        return frozenset(self._resolved())

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """Wrap ``data_key`` with KMS ``Encrypt`` under the active key: ``(key ARN, blob)``."""
        active = self.active_key_id
        reply = self._call(
            "Encrypt", active, KeyId=active, Plaintext=data_key, EncryptionContext=self._context
        )
        return str(reply["KeyId"]), bytes(reply["CiphertextBlob"])

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        """The data key of ``wrapped``, by KMS ``Decrypt``; only accepted keys are used."""
        if key_id not in self._resolved():
            raise LookupError(key_id)
        reply = self._call(
            "Decrypt",
            key_id,
            KeyId=key_id,
            CiphertextBlob=wrapped,
            EncryptionContext=self._context,
        )
        return bytes(reply["Plaintext"])

    def _call(self, operation: str, key_id: str, **kwargs: Any) -> Any:
        """One KMS request, its errors translated (never quoting what was sent)."""
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        method = {"Encrypt": "encrypt", "Decrypt": "decrypt", "DescribeKey": "describe_key"}
        try:
            return getattr(self._client, method[operation])(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            where = f"KMS {operation} with key {key_id!r} failed ({code})"
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                raise ValueError(where) from exc
            if code in ("NotFoundException", "DisabledException", "KMSInvalidStateException"):
                if operation == "Decrypt":
                    raise LookupError(key_id) from exc
                raise ConfigurationError(where) from exc
            if code in ("AccessDeniedException", "UnrecognizedClientException"):
                raise AccessDeniedError(where) from exc
            if code in (
                "ThrottlingException",
                "LimitExceededException",
                "KMSInternalException",
                "DependencyTimeoutException",
            ):
                raise BackendUnavailableError(where) from exc
            raise CheckpointerError(where) from exc
        except BotoCoreError as exc:
            raise BackendUnavailableError(
                f"KMS {operation} with key {key_id!r} failed ({type(exc).__name__})"
            ) from exc


# --- sealing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataKey:
    """A data key with its wrapped form: one per sealed value, or one per save (`new_data_key`).

    Attributes:
        key_id: The key-encryption key that wrapped it.
        wrapped: The wrapped data key, as stored in each blob's header.
        key: The data key itself (never stored, never printed).
    """

    key_id: str
    wrapped: bytes
    key: bytes

    def __repr__(self) -> str:
        return f"DataKey(key_id={self.key_id!r}, wrapped=<{len(self.wrapped)} bytes>)"


def new_data_key(keys: KeyProvider) -> DataKey:
    """A fresh random data key, wrapped under ``keys``' active key."""
    key = os.urandom(DATA_KEY_BYTES)
    key_id, wrapped = keys.wrap(key)
    validate_key_id(key_id)
    if not 1 <= len(wrapped) <= 0xFFFF:
        raise ConfigurationError(f"the key provider wrapped a data key into {len(wrapped)} bytes")
    return DataKey(key_id, wrapped, key)


def is_sealed(blob: bytes | bytearray | memoryview) -> bool:
    """Whether ``blob`` is a sealed value (rather than a plaintext JSON fragment or zstd frame)."""
    return len(blob) > 0 and blob[0] >= _SEALED_FROM


@dataclass(frozen=True, slots=True)
class _Header:
    key_id: str
    wrapped: bytes
    body: int
    """Offset of the nonce."""


def _header(blob: bytes, thread_id: str) -> _Header:
    if not blob or blob[0] != FORMAT_BYTE:
        if is_sealed(blob):
            raise DecryptionError(
                thread_id, f"sealed with format 0x{blob[0]:02X}, newer than this library reads"
            )
        raise DecryptionError(thread_id, "the stored value is not sealed")
    try:
        n = blob[1]
        key_id = blob[2 : 2 + n].decode("ascii")
        (m,) = struct.unpack_from(">H", blob, 2 + n)
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise DecryptionError(thread_id, "the sealed value's header is damaged") from exc
    body = 4 + n + m
    if not _KEY_ID_RE.fullmatch(key_id) or m == 0 or len(blob) < body + NONCE_BYTES + _TAG_BYTES:
        raise DecryptionError(thread_id, "the sealed value's header is damaged")
    return _Header(key_id, bytes(blob[4 + n : body]), body)


def key_id_of(blob: bytes, *, thread_id: str = "") -> str | None:
    """The id of the key a sealed value's data key is wrapped under (``None`` for plaintext).

    Reads the header only: no key needed. A damaged header raises `DecryptionError`.
    """
    if not is_sealed(blob):
        return None
    return _header(blob, thread_id).key_id


def _pack(data_key: DataKey, nonce: bytes, sealed: bytes) -> bytes:
    key_id = data_key.key_id.encode("ascii")
    return b"".join(
        (
            bytes((FORMAT_BYTE, len(key_id))),
            key_id,
            struct.pack(">H", len(data_key.wrapped)),
            data_key.wrapped,
            nonce,
            sealed,
        )
    )


def seal(
    keys: KeyProvider, plaintext: bytes, aad: AssociatedData, *, data_key: DataKey | None = None
) -> bytes:
    """Encrypt ``plaintext`` for the place ``aad`` describes; returns the sealed blob.

    Args:
        keys: The key provider; its active key wraps the data key.
        plaintext: The bytes to seal (a head's JSON, a packed piece body).
        aad: Where the value is stored (`associated_data`).
        data_key: A data key shared by the values of one save (`new_data_key`); by default a
            fresh one for this value alone.
    """
    dk = new_data_key(keys) if data_key is None else data_key
    nonce = os.urandom(NONCE_BYTES)
    sealed = _aesgcm(dk.key).encrypt(nonce, plaintext, bytes((FORMAT_BYTE,)) + aad.encode())
    return _pack(dk, nonce, sealed)


def _data_key(
    keys: KeyProvider,
    header: _Header,
    thread_id: str,
    cache: MutableMapping[tuple[str, bytes], bytes] | None,
) -> bytes:
    memo = (header.key_id, header.wrapped)
    if cache is not None and memo in cache:
        return cache[memo]
    try:
        key = keys.unwrap(header.key_id, header.wrapped)
    except LookupError as exc:
        raise UnknownKeyError(thread_id, header.key_id) from exc
    except ValueError as exc:
        raise DecryptionError(
            thread_id, f"its data key does not unwrap under key {header.key_id!r}"
        ) from exc
    if len(key) != DATA_KEY_BYTES:
        raise DecryptionError(thread_id, f"its data key under {header.key_id!r} is malformed")
    if cache is not None:
        cache[memo] = key
    return key


def unseal(
    keys: KeyProvider,
    blob: bytes,
    aad: AssociatedData,
    *,
    cache: MutableMapping[tuple[str, bytes], bytes] | None = None,
) -> bytes:
    """The plaintext of a sealed blob stored at the place ``aad`` describes.

    Args:
        keys: The key provider holding the blob's key.
        blob: The sealed value.
        aad: Where it was read from; must equal what it was sealed with.
        cache: Unwrapped data keys by (key id, wrapped key), shared by the values of one load so
            a data key shared by a save is unwrapped once. Keep it for one load only.

    Raises:
        UnknownKeyError: The provider does not hold the key the blob names.
        DecryptionError: Wrong key, tampered bytes, another place, or not a sealed blob.
    """
    thread_id = aad.thread_id
    header = _header(blob, thread_id)
    key = _data_key(keys, header, thread_id, cache)
    nonce = blob[header.body : header.body + NONCE_BYTES]
    try:
        return _aesgcm(key).decrypt(
            nonce, blob[header.body + NONCE_BYTES :], bytes((FORMAT_BYTE,)) + aad.encode()
        )
    except _invalid_tag() as exc:
        raise DecryptionError(
            thread_id,
            "the encrypted value does not open: tampered, or stored for another namespace,"
            " thread or save",
        ) from exc


def open_stored(
    keys: KeyProvider | None,
    stored: bytes,
    aad: AssociatedData,
    *,
    allow_plaintext: bool = True,
    cache: MutableMapping[tuple[str, bytes], bytes] | None = None,
) -> bytes:
    """A stored value as written before sealing: unsealed if sealed, else as it is.

    Args:
        keys: The key provider, or ``None`` when the checkpointer has no encryption (then a
            sealed value raises `DecryptionError`: it cannot be read without keys).
        stored: The stored bytes.
        aad: Where they were read from.
        allow_plaintext: Accept plaintext values (a store being encrypted); ``False`` refuses
            them with `DecryptionError`, so nobody can slip an unencrypted state in.
        cache: As for `unseal`.
    """
    if is_sealed(stored):
        if keys is None:
            raise DecryptionError(
                aad.thread_id, "the stored value is encrypted and no key provider is configured"
            )
        return unseal(keys, stored, aad, cache=cache)
    if not allow_plaintext:
        raise DecryptionError(aad.thread_id, "the stored value is not encrypted")
    return stored


def needs_rotation(keys: KeyProvider, stored: bytes, *, thread_id: str = "") -> bool:
    """Whether ``stored`` is plaintext or sealed under a key other than the active one."""
    return key_id_of(stored, thread_id=thread_id) != keys.active_key_id


def rewrap(keys: KeyProvider, blob: bytes, *, thread_id: str) -> bytes:
    """``blob`` with its data key re-wrapped under the active key; the ciphertext is unchanged.

    Retires a key-encryption key without decrypting any value (the data key is unwrapped and
    wrapped again). A blob already under the active key comes back as it is.

    Raises:
        UnknownKeyError: The provider does not hold the blob's key.
        DecryptionError: The blob is not sealed or its data key does not unwrap.
    """
    header = _header(blob, thread_id)
    if header.key_id == keys.active_key_id:
        return blob
    key = _data_key(keys, header, thread_id, None)
    key_id, wrapped = keys.wrap(key)
    validate_key_id(key_id)
    start = header.body
    return _pack(
        DataKey(key_id, wrapped, key),
        blob[start : start + NONCE_BYTES],
        blob[start + NONCE_BYTES :],
    )


def reseal(
    keys: KeyProvider,
    stored: bytes,
    aad: AssociatedData,
    *,
    data_key: DataKey | None = None,
    cache: MutableMapping[tuple[str, bytes], bytes] | None = None,
) -> bytes:
    """``stored`` sealed afresh under the active key: a new data key and nonce.

    A plaintext value is sealed (encrypting an existing store); a sealed one is opened with
    ``aad`` and sealed again.

    Raises:
        UnknownKeyError: The provider does not hold the blob's key.
        DecryptionError: The blob does not open at ``aad``.
    """
    plaintext = open_stored(keys, stored, aad, cache=cache)
    return seal(keys, plaintext, aad, data_key=data_key)
