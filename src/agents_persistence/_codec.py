"""What a store writes for a layout and how it reads it back: packed and, with keys, sealed.

Every store goes through one `Codec` (per checkpointer, on its `Core`), so compression,
encryption and the manifest kept in clear are decided in one place:

* **Save.** Once the store has chosen what it writes (``layout.against(stored)``), it takes one
  `Sealer` for the save (``core.codec.sealer()``: one data key, the only key-service request of
  a save) and writes ``sealer.piece(thread_id, key, body)`` for each piece and
  ``sealer.head(thread_id, layout)`` for the head: ``(stored head, stored manifest)``.
  Without keys the head is the head's JSON and the manifest the whole manifest, exactly as
  before encryption existed. With keys the head is a sealed blob (bytes starting with 0xF5,
  never UTF-8 text) holding the whole manifest and the head's JSON, and the manifest stored in
  clear is `Manifest.redacted`: the token, the piece keys and the schema version only.
* **Load.** The store hands what it read to ``core.codec.open(thread_id, head, manifest,
  bodies)`` and gets an `Opened`: the state's JSON, the whole manifest (the next save's base),
  and which keys sealed what was read, which `Opened.apply` copies onto the `Record`.

A store keeps a sealed head in a binary column or attribute, a plaintext head where it always
did (JSONB on PostgreSQL), and tells the two apart with `is_sealed`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from agents_persistence._layout import Layout, Manifest, assemble, pack, unpack
from agents_persistence.encryption import Envelope, join_head, key_id_of, split_head
from agents_persistence.encryption import is_sealed as is_sealed_blob
from agents_persistence.errors import CorruptStateError, DecryptionError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agents_persistence._core import Record
    from agents_persistence._keys import KeyProvider
    from agents_persistence.encryption import DataKey

__all__ = ["Codec", "Opened", "Sealer", "is_sealed"]


def is_sealed(value: object) -> bool:
    """Whether a stored head or piece is a sealed blob (bytes from 0xF5 on: never UTF-8 text)."""
    return isinstance(value, bytes | bytearray | memoryview) and is_sealed_blob(value)


@dataclass(frozen=True, slots=True)
class Opened:
    """A record as read back: the state's JSON, its manifest, and what sealed it.

    Attributes:
        payload: The whole state's JSON (or the stored document of a record kept whole).
        manifest: The version's whole manifest (``None`` for a record stored whole).
        key_ids: Ids of the key-encryption keys that sealed the values read.
        plaintext: Whether any value read (head or piece) was stored in clear.
    """

    payload: str | bytes | Mapping[str, Any]
    manifest: Manifest | None
    key_ids: frozenset[str]
    plaintext: bool

    def apply(self, record: Record) -> Record:
        """``record`` carrying this payload, manifest and key ids."""
        return replace(
            record,
            payload=self.payload,
            manifest=self.manifest,
            key_ids=self.key_ids,
            plaintext=self.plaintext,
        )


class Sealer:
    """Turns one save's head and pieces into what the store writes (one data key per save)."""

    __slots__ = ("_data_key", "_envelope")

    def __init__(self, envelope: Envelope | None) -> None:
        self._envelope = envelope
        self._data_key: DataKey | None = None if envelope is None else envelope.data_key()

    @property
    def seals(self) -> bool:
        """Whether this save's head and pieces are sealed (the head is then bytes, not text)."""
        return self._envelope is not None

    def piece(self, thread_id: str, key: str, body: bytes) -> bytes:
        """A piece body as stored: `pack`-ed, then sealed and bound to its key."""
        packed = pack(body)
        if self._envelope is None or self._data_key is None:
            return packed
        return self._envelope.seal_piece(thread_id, key, packed, self._data_key)

    def head(self, thread_id: str, layout: Layout) -> tuple[bytes, str]:
        """``(stored head, manifest stored in clear)`` of the layout the store writes.

        Without keys: the head's JSON (UTF-8) and the whole manifest. With keys: a sealed blob
        of the whole manifest and the head, bound to the save's token, and the redacted
        manifest.
        """
        manifest = layout.manifest
        if self._envelope is None or self._data_key is None:
            return layout.head, manifest.to_json()
        sealed = self._envelope.seal_head(
            thread_id, manifest.token, join_head(manifest.to_json(), layout.head), self._data_key
        )
        return sealed, manifest.redacted().to_json()


class Codec:
    """The stored form of one checkpointer's values: packed, and sealed when it has keys.

    Args:
        namespace: The checkpointer's namespace (bound into every sealed value).
        keys: The key provider, or ``None``: values are written in clear, and a sealed value
            read raises `DecryptionError`.
    """

    __slots__ = ("envelope",)

    def __init__(self, namespace: str, keys: KeyProvider | None) -> None:
        self.envelope: Envelope | None = None
        if keys is not None:
            allow = getattr(keys, "allow_plaintext", True) is not False  # `EncryptedOnly`
            self.envelope = Envelope(keys, namespace, allow_plaintext=allow)

    @property
    def encrypts(self) -> bool:
        """Whether saves are sealed."""
        return self.envelope is not None

    @property
    def active_key_id(self) -> str | None:
        """The id of the key new values are sealed under (``None`` without keys)."""
        return None if self.envelope is None else self.envelope.keys.active_key_id

    def sealer(self) -> Sealer:
        """The `Sealer` of one save."""
        return Sealer(self.envelope)

    def open(
        self,
        thread_id: str,
        head: str | bytes | Mapping[str, Any],
        manifest: str | bytes | Mapping[str, Any] | Manifest | None,
        bodies: Mapping[str, bytes | str],
    ) -> Opened:
        """A stored head, the manifest stored beside it and its pieces' bodies, read back.

        ``bodies`` may hold more pieces than the version names (left by an unfinished save);
        they are ignored. A missing or damaged piece, a sealed value that does not open, or a
        sealed value read without keys raises `CorruptStateError` (`DecryptionError`,
        `UnknownKeyError`): never a partial or silently wrong state.
        """
        cache: dict[tuple[str, bytes], bytes] = {}
        key_ids: set[str] = set()
        if is_sealed(head):
            stored = bytes(head)  # type: ignore[arg-type]
            clear = _manifest(thread_id, manifest)
            if clear is None:
                raise CorruptStateError(thread_id, "an encrypted head is stored without its token")
            envelope = self._required(thread_id)
            key_ids.add(key_id_of(stored, thread_id=thread_id) or "")
            opened = envelope.open_head(thread_id, clear.token, stored, cache)
            manifest_json, head_json = split_head(thread_id, opened)
            full = Manifest.from_json(thread_id, manifest_json)
            if full.token != clear.token or full.keys() != clear.keys():
                raise DecryptionError(thread_id, "the encrypted head does not match its manifest")
            plaintext = False
            head = head_json
            found: Manifest | None = full
        else:
            self._plaintext_allowed(thread_id)
            found = _manifest(thread_id, manifest)
            plaintext = True
        if found is None:
            return Opened(head, None, frozenset(), True)
        if not isinstance(head, str | bytes):
            raise CorruptStateError(thread_id, "a stored head is not JSON text")
        named = found.keys()
        opened_bodies: dict[str, bytes] = {}
        for key, body in bodies.items():
            if key not in named:
                continue
            raw = body.encode() if isinstance(body, str) else bytes(body)
            if is_sealed(raw):
                envelope = self._required(thread_id)
                key_ids.add(key_id_of(raw, thread_id=thread_id) or "")
                raw = envelope.open_piece(thread_id, key, raw, cache)
            else:
                self._plaintext_allowed(thread_id)
                plaintext = True
            opened_bodies[key] = unpack(thread_id, raw)
        payload = assemble(thread_id, head, found, opened_bodies)
        return Opened(payload, found, frozenset(key_ids), plaintext)

    def _plaintext_allowed(self, thread_id: str) -> None:
        if self.envelope is not None and not self.envelope.allow_plaintext:
            raise DecryptionError(
                thread_id, "the stored state is not encrypted, and this checkpointer requires it"
            )

    def _required(self, thread_id: str) -> Envelope:
        if self.envelope is None:
            raise DecryptionError(
                thread_id, "the stored state is encrypted and this checkpointer has no keys"
            )
        return self.envelope


def _manifest(
    thread_id: str, manifest: str | bytes | Mapping[str, Any] | Manifest | None
) -> Manifest | None:
    if manifest is None or isinstance(manifest, Manifest):
        return manifest
    return Manifest.from_json(thread_id, manifest)
