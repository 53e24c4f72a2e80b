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

How a checkpointer uses this (one `Envelope` per checkpointer: its key provider and namespace):

* Save, before the store's atomic step: ``data_key = envelope.data_key()``, the one key-service
  request of a save (every value of the save shares the data key; each gets its own nonce).
  Sealing cannot happen in ``Core.encode`` itself: ``Layout.full()`` rebuilds plaintext
  pieces when the stored head has moved, so values are sealed once the store has chosen
  ``layout.against(stored)``: each piece as ``envelope.seal_piece(thread_id, key, pack(body),
  data_key)``, the head as ``envelope.seal_head(thread_id, token, join_head(manifest JSON,
  head), data_key)``. Sealing is local and takes microseconds, so it may run inside a
  transaction or between a Lua script's attempts.
* Load: ``cache = {}``; ``split_head(thread_id, envelope.open_head(thread_id, token, stored,
  cache))`` gives the manifest and the head; each piece is ``unpack(thread_id,
  envelope.open_piece(thread_id, key, stored, cache))``; then ``assemble`` as before. Plaintext
  values (``is_sealed`` false) pass through while ``allow_plaintext`` is set.
* In clear, for listing, expiry and rotation without keys: namespace, thread id, version,
  created/updated/expires timestamps, size, the save's token, the piece keys, and each blob's
  key id (`key_id_of`). The manifest's entry names (map keys such as file paths) and digests
  of plaintext pieces travel inside the sealed head.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents_persistence._keys import (
    DATA_KEY_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    KeyProvider,
    LocalKeyring,
    aesgcm,
    encode_key,
    generate_key,
    invalid_tag,
    read_config,
    valid_key_id,
    validate_key_id,
)
from agents_persistence._kms import KmsKeyProvider
from agents_persistence.errors import ConfigurationError, DecryptionError, UnknownKeyError

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping

__all__ = [
    "DATA_KEY_BYTES",
    "FORMAT_BYTE",
    "NONCE_BYTES",
    "AssociatedData",
    "DataKey",
    "EncryptedOnly",
    "Envelope",
    "KeyProvider",
    "KmsKeyProvider",
    "LocalKeyring",
    "associated_data",
    "encode_key",
    "generate_key",
    "is_sealed",
    "join_head",
    "key_id_of",
    "key_provider_from_dict",
    "key_provider_from_file",
    "key_provider_from_json",
    "needs_rotation",
    "new_data_key",
    "open_stored",
    "reseal",
    "rewrap",
    "seal",
    "split_head",
    "unseal",
    "validate_key_id",
]

FORMAT_BYTE = 0xF5
"""The first byte of a sealed blob of format 1 (never the first byte of UTF-8 text)."""

_SEALED_FROM = 0xF5
"""Bytes from here on start a sealed blob (0xF6 to 0xFF: formats this version cannot read)."""

_AAD_PREFIX = b"agents-persistence sealed value\x00"


# --- key configuration ---------------------------------------------------------------------


def key_provider_from_dict(data: Mapping[str, Any], *, where: str = "the key file") -> KeyProvider:
    """The key provider a key file describes: a local keyring or AWS KMS.

    A local keyring is ``{"active": ID, "keys": {ID: BASE64, ...}}`` (`LocalKeyring.from_dict`);
    AWS KMS is ``{"kms": {"key_id": ARN, "previous": [...], "region": R, "endpoint": URL}}``
    (`KmsKeyProvider.from_dict`).

    Raises:
        ConfigurationError: Neither form, or an invalid member (never quoting a key).
    """
    if "kms" in data:
        kms = data["kms"]
        if len(data) != 1 or not isinstance(kms, dict):
            raise ConfigurationError(f'{where}: "kms" must be the only member, an object')
        return KmsKeyProvider.from_dict(kms, where=f"{where} (kms)")
    if "active" in data or "keys" in data:
        return LocalKeyring.from_dict(data, where=where)
    raise ConfigurationError(
        f'{where}: expected {{"active": ID, "keys": {{ID: BASE64}}}}'
        ' or {"kms": {"key_id": ARN}}'
    )


def key_provider_from_json(text: str, *, where: str = "the key configuration") -> KeyProvider:
    """`key_provider_from_dict` of JSON text (an environment variable's value, a secret)."""
    return key_provider_from_dict(read_config(text, where=where), where=where)


def key_provider_from_file(path: str | os.PathLike[str]) -> KeyProvider:
    """`key_provider_from_dict` of a JSON file; keep a keyring file readable by its owner only."""
    where = os.fspath(path)
    return key_provider_from_dict(read_config(Path(where), where=where), where=where)


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
    if not valid_key_id(key_id) or m == 0 or len(blob) < body + NONCE_BYTES + TAG_BYTES:
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
    sealed = aesgcm(dk.key).encrypt(nonce, plaintext, bytes((FORMAT_BYTE,)) + aad.encode())
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
        return aesgcm(key).decrypt(
            nonce, blob[header.body + NONCE_BYTES :], bytes((FORMAT_BYTE,)) + aad.encode()
        )
    except invalid_tag() as exc:
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


class EncryptedOnly:
    """A key provider whose checkpointer refuses values stored in clear.

    By default a checkpointer with ``keys=`` also reads threads written in clear (before
    encryption was turned on, or by a checkpointer without keys), so a store can be encrypted
    while it is in use. Once `agents-persistence keys rotate` has sealed every thread, wrap the
    provider in `EncryptedOnly`: a head or piece found in clear then raises `DecryptionError`
    instead of loading, so whoever can write to the database cannot slip an unencrypted state
    in. Everything else (the active key, wrapping, unwrapping) is the wrapped provider's.

    Args:
        keys: The key provider.
    """

    __slots__ = ("keys",)

    allow_plaintext = False
    """Read by the checkpointer: values in clear are refused."""

    def __init__(self, keys: KeyProvider) -> None:
        if not isinstance(keys, KeyProvider):
            raise ConfigurationError(f"keys must be a KeyProvider, not {type(keys).__name__}")
        self.keys = keys

    def __repr__(self) -> str:
        return f"EncryptedOnly({self.keys!r})"

    @property
    def active_key_id(self) -> str:
        """The wrapped provider's active key id."""
        return self.keys.active_key_id

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """See `KeyProvider.wrap`."""
        return self.keys.wrap(data_key)

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        """See `KeyProvider.unwrap`."""
        return self.keys.unwrap(key_id, wrapped)


# --- one checkpointer's values ---------------------------------------------------------------


def join_head(manifest_json: str | bytes, head: bytes) -> bytes:
    """The plaintext of a sealed head: the full manifest, a newline, the head's JSON object.

    The manifest names map entries (file paths, scratchpad keys) and holds digests of the
    plaintext pieces, so under encryption it travels inside the sealed head; the store keeps
    only the save's token (and the piece keys it needs) in clear. Compact JSON has no raw
    newline, so the first newline separates the two.
    """
    manifest = manifest_json.encode() if isinstance(manifest_json, str) else manifest_json
    return manifest + b"\n" + head


def split_head(thread_id: str, plaintext: bytes) -> tuple[bytes, bytes]:
    """``(manifest JSON, head JSON)`` of an opened head (`join_head` undone)."""
    manifest, newline, head = plaintext.partition(b"\n")
    if not newline:
        raise DecryptionError(thread_id, "the opened head has no manifest")
    return manifest, head


class Envelope:
    """Seals and opens the stored values of one checkpointer: its key provider and namespace.

    The call sites, for a save: ``data_key = envelope.data_key()`` once per save, before the
    store's atomic step (the one key-service request of a save); then, once the store knows
    which pieces it writes (``Layout.against``/``Layout.full``), ``seal_piece`` on each
    ``pack``-ed piece body and ``seal_head`` on ``join_head(manifest JSON, head)``. For a
    load: ``cache = {}`` per load, ``open_head`` then ``split_head``, and ``open_piece`` then
    ``unpack`` on each piece.

    Args:
        keys: The key provider.
        namespace: The checkpointer's namespace (part of every value's associated data).
        allow_plaintext: Read plaintext values as they are (a store being encrypted); set
            ``False`` once every value is sealed, so an unencrypted value is refused.
    """

    __slots__ = ("allow_plaintext", "keys", "namespace")

    def __init__(self, keys: KeyProvider, namespace: str, *, allow_plaintext: bool = True) -> None:
        if not isinstance(keys, KeyProvider):
            raise ConfigurationError(f"keys must be a KeyProvider, not {type(keys).__name__}")
        self.keys = keys
        self.namespace = namespace
        self.allow_plaintext = allow_plaintext

    def __repr__(self) -> str:
        return f"Envelope({self.keys!r}, namespace={self.namespace!r})"

    def data_key(self) -> DataKey:
        """A fresh data key for the values of one save."""
        return new_data_key(self.keys)

    def seal_head(self, thread_id: str, token: str, head: bytes, data_key: DataKey) -> bytes:
        """A head's stored bytes, bound to the save's ``token``."""
        aad = associated_data(self.namespace, thread_id, token)
        return seal(self.keys, head, aad, data_key=data_key)

    def seal_piece(self, thread_id: str, key: str, body: bytes, data_key: DataKey) -> bytes:
        """A piece's stored bytes (``body`` already packed), bound to its ``key``."""
        aad = associated_data(self.namespace, thread_id, key)
        return seal(self.keys, body, aad, data_key=data_key)

    def open_head(
        self,
        thread_id: str,
        token: str,
        stored: bytes,
        cache: MutableMapping[tuple[str, bytes], bytes] | None = None,
    ) -> bytes:
        """A stored head's plaintext (plaintext heads as they are, if allowed)."""
        aad = associated_data(self.namespace, thread_id, token)
        return open_stored(
            self.keys, stored, aad, allow_plaintext=self.allow_plaintext, cache=cache
        )

    def open_piece(
        self,
        thread_id: str,
        key: str,
        stored: bytes,
        cache: MutableMapping[tuple[str, bytes], bytes] | None = None,
    ) -> bytes:
        """A stored piece's body as packed (plaintext pieces as they are, if allowed)."""
        aad = associated_data(self.namespace, thread_id, key)
        return open_stored(
            self.keys, stored, aad, allow_plaintext=self.allow_plaintext, cache=cache
        )
