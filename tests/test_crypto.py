"""Envelope encryption: the blob format, the keyrings (local and KMS on moto), errors, rotation.

The last tests run a state through the storage layout the way ``Core.encode``/``Core.decode``
are to use these functions (pack then seal each piece and the head; open then unpack), and
check that exceptions never carry state content.
"""

from __future__ import annotations

import logging
import struct
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from agents_persistence import (
    AgentMessage,
    AgentStateSnapshot,
    CorruptStateError,
    DecryptionError,
    UnknownKeyError,
)
from agents_persistence._core import Core, Record
from agents_persistence._layout import Manifest, assemble, pack, unpack
from agents_persistence.encryption import (
    FORMAT_BYTE,
    Envelope,
    KeyProvider,
    KmsKeyProvider,
    LocalKeyring,
    associated_data,
    generate_key,
    is_sealed,
    join_head,
    key_id_of,
    needs_rotation,
    new_data_key,
    open_stored,
    reseal,
    rewrap,
    seal,
    split_head,
    unseal,
)
from agents_persistence.errors import (
    BackendUnavailableError,
    CheckpointerError,
    ConfigurationError,
)

from .kits.base import closed_port
from .support import GuardedState, exception_texts
from .test_extras import _probe

if TYPE_CHECKING:
    from collections.abc import Iterator

SECRET = "sk-live-SECRET-4242"
PLAINTEXT = b'{"files":{"notes.md":"' + SECRET.encode() + b'"}}'
K1, K2 = generate_key(), generate_key()
AAD = associated_data("ns", "thread-1", "a1b2c3d4e5f6")


def keyring(active: str = "k1", **keys: bytes) -> LocalKeyring:
    return LocalKeyring(active=active, keys=keys or {"k1": K1})


def _assert_clean(exc: BaseException, *secrets: bytes | str) -> None:
    for text in exception_texts(exc):
        for secret in secrets:
            if isinstance(secret, bytes):
                assert secret.hex() not in text
                assert repr(secret)[2:-1] not in text
            else:
                assert secret not in text


# --- the format ------------------------------------------------------------------------------


def test_a_sealed_blob_has_the_documented_format_and_opens() -> None:
    keys = keyring()
    blob = seal(keys, PLAINTEXT, AAD)
    assert blob[0] == FORMAT_BYTE == 0xF5
    n = blob[1]
    assert blob[2 : 2 + n] == b"k1"
    (m,) = struct.unpack_from(">H", blob, 2 + n)
    wrapped = blob[4 + n : 4 + n + m]
    assert m == 60  # the local keyring's nonce + wrapped key + tag
    nonce = blob[4 + n + m : 16 + n + m]
    body = blob[16 + n + m :]
    assert len(body) == len(PLAINTEXT) + 16
    assert SECRET.encode() not in blob
    # The documented layout is enough to open it by hand.
    data_key = keys.unwrap("k1", wrapped)
    aad = bytes((FORMAT_BYTE,)) + AAD.encode()
    assert AESGCM(data_key).decrypt(nonce, body, aad) == PLAINTEXT
    assert unseal(keys, blob, AAD) == PLAINTEXT
    assert key_id_of(blob) == "k1"


def test_every_seal_has_a_fresh_data_key_and_nonce() -> None:
    keys = keyring()
    one, two = seal(keys, PLAINTEXT, AAD), seal(keys, PLAINTEXT, AAD)
    assert one[4:64] != two[4:64]  # wrapped data keys
    assert one[64:] != two[64:]
    assert unseal(keys, one, AAD) == unseal(keys, two, AAD) == PLAINTEXT


def test_empty_and_large_values_round_trip() -> None:
    keys = keyring()
    for plaintext in (b"", b"x" * 3_000_000):
        assert unseal(keys, seal(keys, plaintext, AAD), AAD) == plaintext


@pytest.mark.parametrize(
    "stored",
    [
        b"{}",
        b"[1]",
        b'"s"',
        b"12",
        b"-1",
        b"true",
        b"false",
        b"null",
        b" {}",
        b"\n[",
        b"\xef\xbb\xbf{}",
    ],
)
def test_plaintext_json_is_never_taken_for_sealed(stored: bytes) -> None:
    assert not is_sealed(stored)
    assert key_id_of(stored) is None


def test_a_compressed_piece_is_never_taken_for_sealed() -> None:
    packed = pack(b'{"a":"' + b"x" * 10_000 + b'"}')
    assert packed[:1] == b"\x28"
    assert not is_sealed(packed)
    assert is_sealed(seal(keyring(), packed, AAD))
    assert not is_sealed(b"")


@given(st.text(min_size=1))
def test_no_utf8_text_is_taken_for_sealed(text: str) -> None:
    assert not is_sealed(text.encode("utf-8", "surrogatepass"))


# --- errors ----------------------------------------------------------------------------------


def test_a_wrong_key_with_the_same_id_raises_decryption_error() -> None:
    blob = seal(keyring(), PLAINTEXT, AAD)
    with pytest.raises(DecryptionError) as caught:
        unseal(keyring(k1=K2), blob, AAD)
    assert isinstance(caught.value, CorruptStateError)
    assert caught.value.thread_id == "thread-1"
    _assert_clean(caught.value, SECRET, K1, K2)


def test_a_key_id_missing_from_the_keyring_raises_unknown_key_error() -> None:
    blob = seal(keyring(), PLAINTEXT, AAD)
    with pytest.raises(UnknownKeyError) as caught:
        unseal(keyring("k2", k2=K2), blob, AAD)
    assert isinstance(caught.value, CorruptStateError)
    assert caught.value.key_id == "k1"
    assert "'k1'" in str(caught.value)
    _assert_clean(caught.value, SECRET, K1, K2)


@pytest.mark.parametrize(
    ("namespace", "thread_id", "binding"),
    [
        ("other", "thread-1", "a1b2c3d4e5f6"),
        ("ns", "thread-2", "a1b2c3d4e5f6"),
        ("ns", "thread-1", "a1b2c3d4e5f6.t"),
        ("ns", "thread-1", "ffffffffffff"),
        ("ns", "thread-1", 7),
    ],
)
def test_a_value_copied_elsewhere_does_not_open(
    namespace: str, thread_id: str, binding: str | int
) -> None:
    keys = keyring()
    blob = seal(keys, PLAINTEXT, AAD)
    with pytest.raises(DecryptionError) as caught:
        unseal(keys, blob, associated_data(namespace, thread_id, binding))
    _assert_clean(caught.value, SECRET, K1)


def test_associated_data_parts_cannot_be_shifted_into_each_other() -> None:
    assert associated_data("a", "bc", "d").encode() != associated_data("ab", "c", "d").encode()
    assert associated_data("a", "b", "1").encode() != associated_data("a", "b", 1).encode()
    with pytest.raises(ConfigurationError):
        associated_data("a", "b", True)


def test_every_changed_byte_is_refused() -> None:
    keys = keyring(k1=K1, k2=K2)
    blob = seal(keys, PLAINTEXT, AAD)
    for index in range(len(blob)):
        for flip in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[index] ^= flip
            with pytest.raises(CorruptStateError) as caught:
                unseal(keys, bytes(tampered), AAD)
            assert isinstance(caught.value, DecryptionError | UnknownKeyError), index
            _assert_clean(caught.value, SECRET, K1, K2)


def test_every_truncation_is_refused() -> None:
    keys = keyring()
    blob = seal(keys, PLAINTEXT, AAD)
    for end in range(len(blob)):
        with pytest.raises(DecryptionError):
            unseal(keys, blob[:end], AAD)
    with pytest.raises(DecryptionError):
        unseal(keys, blob + b"\x00", AAD)


def test_a_later_format_is_sealed_but_refused() -> None:
    blob = bytes((0xF6,)) + seal(keyring(), PLAINTEXT, AAD)[1:]
    assert is_sealed(blob)
    with pytest.raises(DecryptionError, match="0xF6"):
        unseal(keyring(), blob, AAD)


def test_header_swapped_from_another_value_does_not_open() -> None:
    keys = keyring()
    one, two = seal(keys, PLAINTEXT, AAD), seal(keys, b'{"other":1}', AAD)
    with pytest.raises(DecryptionError):
        unseal(keys, two[:64] + one[64:], AAD)


def test_open_stored_reads_plaintext_during_a_migration_unless_refused() -> None:
    keys = keyring()
    assert open_stored(keys, PLAINTEXT, AAD) == PLAINTEXT
    assert open_stored(keys, seal(keys, PLAINTEXT, AAD), AAD) == PLAINTEXT
    assert open_stored(None, PLAINTEXT, AAD) == PLAINTEXT
    with pytest.raises(DecryptionError, match="not encrypted"):
        open_stored(keys, PLAINTEXT, AAD, allow_plaintext=False)
    with pytest.raises(DecryptionError, match="no key provider"):
        open_stored(None, seal(keys, PLAINTEXT, AAD), AAD)


# --- the local keyring -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("active", "keys"),
    [
        ("k1", {}),
        ("k1", {"k 1": K1}),
        ("k1", {"": K1}),
        ("k1", {"k" * 256: K1}),
        ("k1", {"k1": K1[:16]}),
        ("k1", {"k1": K1.hex()}),
        ("k2", {"k1": K1}),
        ("bad id", {"k1": K1}),
    ],
)
def test_a_bad_keyring_is_refused_without_quoting_keys(active: str, keys: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        LocalKeyring(active=active, keys=keys)
    _assert_clean(caught.value, K1, K1[:16], K1.hex())


def test_the_keyring_shows_ids_only() -> None:
    keys = keyring("k2", k1=K1, k2=K2)
    assert isinstance(keys, KeyProvider)
    assert keys.key_ids == {"k1", "k2"}
    assert "k1" in repr(keys)
    assert K1.hex() not in repr(keys)
    assert repr(K1)[2:-1] not in repr(keys)
    assert K1.hex() not in repr(new_data_key(keys))


# --- rotation --------------------------------------------------------------------------------


def test_rewrap_moves_the_data_key_to_the_active_key_and_keeps_the_ciphertext() -> None:
    old = keyring()
    blob = seal(old, PLAINTEXT, AAD)
    both = keyring("k2", k1=K1, k2=K2)
    assert needs_rotation(both, blob)
    moved = rewrap(both, blob, thread_id="thread-1")
    assert key_id_of(moved) == "k2"
    assert moved[-(len(PLAINTEXT) + 16 + 12) :] == blob[-(len(PLAINTEXT) + 16 + 12) :]
    assert not needs_rotation(both, moved)
    assert unseal(keyring("k2", k2=K2), moved, AAD) == PLAINTEXT
    assert rewrap(both, moved, thread_id="thread-1") is moved
    with pytest.raises(UnknownKeyError):
        unseal(old, moved, AAD)


def test_reseal_encrypts_plaintext_and_renews_sealed_values() -> None:
    both = keyring("k2", k1=K1, k2=K2)
    assert needs_rotation(both, PLAINTEXT)
    sealed = reseal(both, PLAINTEXT, AAD)
    assert key_id_of(sealed) == "k2"
    old = seal(keyring(), PLAINTEXT, AAD)
    renewed = reseal(both, old, AAD)
    assert key_id_of(renewed) == "k2"
    assert renewed[-(len(PLAINTEXT) + 16) :] != old[-(len(PLAINTEXT) + 16) :]
    assert unseal(keyring("k2", k2=K2), renewed, AAD) == PLAINTEXT
    with pytest.raises(DecryptionError):
        reseal(both, old, associated_data("ns", "thread-2", "a1b2c3d4e5f6"))
    with pytest.raises(DecryptionError):
        rewrap(both, PLAINTEXT, thread_id="thread-1")


class CountingKeyring(LocalKeyring):
    __slots__ = ("unwraps", "wraps")

    def __init__(self) -> None:
        super().__init__(active="k1", keys={"k1": K1})
        self.wraps = self.unwraps = 0

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        self.wraps += 1
        return super().wrap(data_key)

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        self.unwraps += 1
        return super().unwrap(key_id, wrapped)


def test_one_data_key_per_save_and_one_unwrap_per_load() -> None:
    keys = CountingKeyring()
    shared = new_data_key(keys)
    aads = [associated_data("ns", "t", f"tok.{n}") for n in range(5)]
    blobs = [seal(keys, PLAINTEXT, aad, data_key=shared) for aad in aads]
    assert keys.wraps == 1
    assert len({blob[-(len(PLAINTEXT) + 28) :] for blob in blobs}) == 5  # own nonces
    cache: dict[tuple[str, bytes], bytes] = {}
    assert [unseal(keys, b, a, cache=cache) for b, a in zip(blobs, aads, strict=True)] == [
        PLAINTEXT
    ] * 5
    assert keys.unwraps == 1
    with pytest.raises(DecryptionError):
        unseal(keys, blobs[0], aads[1], cache=cache)


# --- AWS KMS on moto -------------------------------------------------------------------------


def _kms_client(endpoint: str, **options: Any) -> Any:
    boto3 = pytest.importorskip("boto3")
    return boto3.client(
        "kms",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        **options,
    )


@pytest.fixture(scope="module")
def kms() -> Iterator[Any]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield _kms_client(f"http://{host}:{port}")
    server.stop()


def _kms_key(kms: Any, alias: str | None = None) -> str:
    arn = str(kms.create_key(Description="agents-persistence test")["KeyMetadata"]["Arn"])
    if alias:
        kms.create_alias(AliasName=alias, TargetKeyId=arn)
    return arn


def test_kms_wraps_under_the_key_arn_and_opens(kms: Any) -> None:
    arn = _kms_key(kms, "alias/ap-test-one")
    keys = KmsKeyProvider("alias/ap-test-one", client=kms)
    assert keys.active_key_id == arn
    blob = seal(keys, PLAINTEXT, AAD)
    assert key_id_of(blob) == arn
    assert SECRET.encode() not in blob
    assert unseal(KmsKeyProvider(arn, client=kms), blob, AAD) == PLAINTEXT
    with pytest.raises(DecryptionError):
        unseal(keys, blob, associated_data("ns", "thread-2", "a1b2c3d4e5f6"))


def test_kms_rotation_to_a_new_key_keeps_old_values_readable(kms: Any) -> None:
    old_arn, new_arn = _kms_key(kms), _kms_key(kms)
    blob = seal(KmsKeyProvider(old_arn, client=kms), PLAINTEXT, AAD)
    rotating = KmsKeyProvider(new_arn, previous=[old_arn], client=kms)
    assert unseal(rotating, blob, AAD) == PLAINTEXT
    assert needs_rotation(rotating, blob)
    moved = rewrap(rotating, blob, thread_id="thread-1")
    assert key_id_of(moved) == new_arn
    assert unseal(KmsKeyProvider(new_arn, client=kms), moved, AAD) == PLAINTEXT


def test_kms_refuses_a_key_it_was_not_given(kms: Any) -> None:
    theirs, ours = _kms_key(kms), _kms_key(kms)
    blob = seal(KmsKeyProvider(theirs, client=kms), PLAINTEXT, AAD)
    with pytest.raises(UnknownKeyError) as caught:
        unseal(KmsKeyProvider(ours, client=kms), blob, AAD)
    assert caught.value.key_id == theirs


def test_kms_tampered_wrapped_key_raises_decryption_error(kms: Any) -> None:
    keys = KmsKeyProvider(_kms_key(kms), client=kms)
    blob = bytearray(seal(keys, PLAINTEXT, AAD))
    n = blob[1]
    blob[4 + n + 40] ^= 0x01
    with pytest.raises(DecryptionError) as caught:
        unseal(keys, bytes(blob), AAD)
    _assert_clean(caught.value, SECRET)


def test_kms_unknown_active_key_is_a_configuration_error(kms: Any) -> None:
    keys = KmsKeyProvider("alias/ap-test-missing", client=kms)
    with pytest.raises(ConfigurationError, match="DescribeKey"):
        seal(keys, PLAINTEXT, AAD)


def test_kms_unreachable_is_backend_unavailable() -> None:
    from botocore.config import Config

    client = _kms_client(
        f"http://127.0.0.1:{closed_port()}",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(BackendUnavailableError):
        seal(KmsKeyProvider("alias/anything", client=client), PLAINTEXT, AAD)


def test_kms_without_boto3_names_the_extra() -> None:
    result = _probe(
        "boto3",
        "from agents_persistence.encryption import KmsKeyProvider; KmsKeyProvider('alias/x')",
    )
    assert result is not None
    assert result["type"] == "MissingExtraError"
    assert result["extra"] == "encryption-kms"
    assert result["import"]
    assert result["root"]


def test_sealing_without_cryptography_names_the_extra() -> None:
    result = _probe(
        "cryptography",
        "from agents_persistence.encryption import *\n"
        "keys = LocalKeyring(active='k', keys={'k': bytes(32)})\n"
        "seal(keys, b'{}', associated_data('n', 't', 'b'))",
    )
    assert result is not None
    assert result["type"] == "MissingExtraError"
    assert result["extra"] == "encryption"
    assert "agents-persistence[encryption]" in str(result["message"])


# --- with the storage layout ------------------------------------------------------------------


def _state(turns: int) -> AgentStateSnapshot:
    return AgentStateSnapshot(
        files={"secret.md": SECRET * 1000, "a.txt": "short"},
        scratchpad={"k": "v"},
        messages=[AgentMessage.text("User", f"{SECRET} turn {n}") for n in range(turns)],
    )


def _sealed_save(core: Core[Any], envelope: Envelope, state: Any, base: Manifest | None) -> Any:
    """What a save is to store under encryption: a sealed head (manifest inside) and pieces."""
    layout = core.encode("thread-1", state, base)
    token = layout.manifest.token
    data_key = envelope.data_key()
    head = envelope.seal_head(
        "thread-1", token, join_head(layout.manifest.to_json(), layout.head), data_key
    )
    pieces = {
        key: envelope.seal_piece("thread-1", key, pack(body), data_key)
        for key, body in layout.pieces.items()
    }
    return layout, head, pieces


def _sealed_load(
    core: Core[Any], envelope: Envelope, token: str, head: bytes, pieces: dict[str, bytes]
) -> Any:
    """What a load is to do: open the head, read its manifest, open and unpack the pieces."""
    cache: dict[tuple[str, bytes], bytes] = {}
    manifest_json, head_json = split_head(
        "thread-1", envelope.open_head("thread-1", token, head, cache)
    )
    manifest = Manifest.from_json("thread-1", manifest_json)
    bodies = {
        key: unpack("thread-1", envelope.open_piece("thread-1", key, blob, cache))
        for key, blob in pieces.items()
    }
    payload = assemble("thread-1", head_json, manifest, bodies)
    return core.decode(Record("thread-1", 1, NOW, NOW, None, len(payload), payload))


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_layout_sealed_piece_by_piece_loads_back_and_pieces_are_bound() -> None:
    core: Core[AgentStateSnapshot] = Core(
        namespace="ns", ttl=None, state_type=None, max_state_bytes=10**8, clock=None
    )
    keys = CountingKeyring()
    envelope = Envelope(keys, "ns", allow_plaintext=False)
    first = _state(3)
    layout, head, pieces = _sealed_save(core, envelope, first, None)
    assert keys.wraps == 1
    assert len(pieces) > 2
    assert all(SECRET.encode() not in blob for blob in (head, *pieces.values()))
    assert all(b"secret.md" not in blob for blob in (head, *pieces.values()))
    assert _sealed_load(core, envelope, layout.manifest.token, head, pieces) == first
    assert keys.unwraps == 1
    # A delta save seals only its new pieces; the old ones keep opening under their keys.
    second = _state(4)
    delta, head2, new = _sealed_save(core, envelope, second, layout.manifest)
    assert delta.base is not None
    assert len(new) < len(pieces)
    stored = {k: v for k, v in {**pieces, **new}.items() if k not in delta.drop}
    token = delta.manifest.token
    assert _sealed_load(core, envelope, token, head2, stored) == second
    # A piece moved under another key, or the previous save's head, does not open.
    segment = delta.manifest.segments[-1][0]
    other = next(key for key in stored if key != segment)
    swapped = {**stored, other: stored[segment]}
    with pytest.raises(DecryptionError):
        _sealed_load(core, envelope, token, head2, swapped)
    with pytest.raises(DecryptionError):
        _sealed_load(core, envelope, token, head, stored)
    with pytest.raises(DecryptionError):
        Envelope(keys, "other").open_head("thread-1", token, head2)
    # A plaintext piece slipped in is refused once plaintext is no longer allowed.
    plain = {**stored, segment: pack(delta.pieces[segment])}
    with pytest.raises(DecryptionError, match="not encrypted"):
        _sealed_load(core, envelope, token, head2, plain)
    assert _sealed_load(core, Envelope(keys, "ns"), token, head2, plain) == second


def test_a_small_state_sealed_as_one_head_loads_back() -> None:
    core: Core[AgentStateSnapshot] = Core(
        namespace="ns", ttl=None, state_type=None, max_state_bytes=10**8, clock=None
    )
    envelope = Envelope(keyring(), "ns", allow_plaintext=False)
    small = AgentStateSnapshot(files={"secret.md": SECRET})
    layout, head, pieces = _sealed_save(core, envelope, small, None)
    assert pieces == {}
    assert SECRET.encode() not in head
    assert _sealed_load(core, envelope, layout.manifest.token, head, pieces) == small


def test_an_envelope_needs_a_key_provider_and_a_head_its_manifest() -> None:
    with pytest.raises(ConfigurationError):
        Envelope(object(), "ns")  # type: ignore[arg-type]
    envelope = Envelope(keyring(), "ns")
    assert K1.hex() not in repr(envelope)
    sealed = envelope.seal_head("t", "tok", b'{"todos":[]}', envelope.data_key())
    with pytest.raises(DecryptionError, match="no manifest"):
        split_head("t", envelope.open_head("t", "tok", sealed))
    assert split_head("t", join_head('{"f":1}', b"{}")) == (b'{"f":1}', b"{}")


# --- no state content in exceptions -----------------------------------------------------------


def _decode_error(core: Core[Any], payload: str) -> CorruptStateError:
    with pytest.raises(CorruptStateError) as caught:
        core.decode(Record("thread-1", 1, NOW, NOW, None, len(payload), payload))
    return caught.value


CORE: Core[AgentStateSnapshot] = Core(
    namespace="ns", ttl=None, state_type=None, max_state_bytes=10**6, clock=None
)
BAD_PAYLOADS = [
    '{"todos":[{"content":"x","status":"' + SECRET + '"}]}',
    '{"files":{"a":["' + SECRET + '"]}}',
    '{"files":{"a":"' + SECRET + '"',
]


@pytest.mark.parametrize("payload", BAD_PAYLOADS)
def test_a_decoding_error_message_does_not_quote_the_state(payload: str) -> None:
    error = _decode_error(CORE, payload)
    assert error.thread_id == "thread-1"
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert SECRET not in error.detail


@pytest.mark.parametrize("payload", BAD_PAYLOADS)
def test_a_decoding_error_cause_does_not_quote_the_state(payload: str) -> None:
    _assert_clean(_decode_error(CORE, payload), SECRET)


def test_a_validator_message_is_not_quoted() -> None:
    core: Core[GuardedState] = Core(
        namespace="ns", ttl=None, state_type=GuardedState, max_state_bytes=10**6, clock=None
    )
    error = _decode_error(core, '{"api_key":"' + SECRET + '"}')
    assert SECRET not in str(error)


def test_encryption_errors_are_library_errors() -> None:
    for cls in (DecryptionError, UnknownKeyError):
        assert issubclass(cls, CorruptStateError)
        assert issubclass(cls, CheckpointerError)
