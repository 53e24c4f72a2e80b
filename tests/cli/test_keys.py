"""Keys on the command line: key files, ``keys generate``, ``keys rotate``, ``migrate-payloads``.

The store tests run on every store (SQLite, PostgreSQL, MariaDB, Redis, DynamoDB); the others
need no store at all.
"""

from __future__ import annotations

import base64
import json
import logging
import stat
from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence import DecryptionError
from agents_persistence.encryption import KmsKeyProvider, LocalKeyring, generate_key

from ..kits.encrypted import keyring
from ..test_upcasting import (
    V1,
    V2,
    V3,
    ConversationV1,
    ConversationV2,
    ConversationV3,
)
from .conftest import Invoke, Target, sample_state, seed

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def key_file(directory: Path, active: str, *ids: str, name: str | None = None) -> Path:
    path = directory / (name or f"keys-{active}-{'-'.join(ids) or active}.json")
    path.write_text(json.dumps(keyring(active, *ids).to_dict()), encoding="utf-8")
    return path


def report(result: Any) -> dict[str, Any]:
    assert result.exit_code in (0, 1), result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# --- key files and keys generate (no store) --------------------------------------------------


def test_generate_prints_a_keyring_of_one_new_key(cli: Invoke) -> None:
    result = cli("keys", "generate", "--id", "2026-11")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["active"] == "2026-11"
    assert len(base64.b64decode(data["keys"]["2026-11"])) == 32
    ring = LocalKeyring.from_dict(data)
    assert ring.active_key_id == "2026-11"
    again = json.loads(cli("keys", "generate", "--id", "2026-11").stdout)
    assert again["keys"] != data["keys"]


def test_generate_adds_the_active_key_to_a_private_keyring_file(
    cli: Invoke, tmp_path: Path
) -> None:
    path = tmp_path / "keyring.json"
    first = cli("keys", "generate", "--id", "k1", "--keyring", str(path))
    assert first.exit_code == 0, first.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    k1 = json.loads(path.read_text())["keys"]["k1"]
    second = cli("keys", "generate", "--id", "k2", "--keyring", str(path))
    assert second.exit_code == 0, second.output
    assert "older keys kept for reading: k1" in second.stdout
    data = json.loads(path.read_text())
    assert data["active"] == "k2"
    assert data["keys"]["k1"] == k1
    assert k1 not in second.stdout + second.stderr
    duplicate = cli("keys", "generate", "--id", "k1", "--keyring", str(path))
    assert duplicate.exit_code == 2
    assert "already holds a key 'k1'" in duplicate.stderr
    assert json.loads(path.read_text()) == data


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not valid JSON"),
        ('{"active": "a", "keys": {"a": "c2VjcmV0LXNob3J0"}}', "must be 32 bytes"),
        ('{"active": "a", "keys": {"a": "not base64 secret!"}}', "is not valid base64"),
        ('{"active": "b", "keys": {"a": "' + "A" * 43 + '="}}', "active key 'b'"),
        ('{"kms": {"key_id": 7}}', '"key_id" must be'),
        ("[]", "must hold a JSON object"),
    ],
)
def test_a_bad_key_file_is_a_usage_error_that_never_quotes_it(
    cli: Invoke, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = cli("keys", "rotate", "--url", "memory://", "--keys", str(path))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    for secret in ("c2VjcmV0LXNob3J0", "not base64 secret", "A" * 20):
        assert secret not in result.stderr


def test_keys_come_from_one_place(cli: Invoke, tmp_path: Path) -> None:
    path = key_file(tmp_path, "k1")
    both = cli("keys", "rotate", "--url", "memory://", "--keys", str(path), "--kms-key-id", "x")
    assert both.exit_code == 2
    assert "--keys FILE or --kms-key-id" in both.stderr
    missing = cli("keys", "rotate", "--url", "memory://")
    assert missing.exit_code == 2
    assert "keys rotate needs the keys to rotate to" in missing.stderr
    unreadable = cli("keys", "rotate", "--url", "memory://", "--keys", str(tmp_path / "nope"))
    assert unreadable.exit_code == 2
    assert "cannot read the key file" in unreadable.stderr


def test_keys_from_the_environment_and_before_the_command(
    cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = key_file(tmp_path, "k1")
    root = cli("--keys", str(path), "keys", "rotate", "--url", "memory://", "--json")
    assert report(root)["rewritten"] == 0
    monkeypatch.setenv("AGENTS_PERSISTENCE_KEYS", path.read_text())
    assert cli("keys", "rotate", "--url", "memory://").exit_code == 0
    monkeypatch.setenv("AGENTS_PERSISTENCE_KEYS", "{broken")
    broken = cli("keys", "rotate", "--url", "memory://")
    assert broken.exit_code == 2
    assert "$AGENTS_PERSISTENCE_KEYS is not valid JSON" in broken.stderr
    monkeypatch.setenv("AGENTS_PERSISTENCE_KEYS_FILE", str(path))  # the file wins
    assert cli("keys", "rotate", "--url", "memory://").exit_code == 0


def test_migrate_payloads_names_a_bad_import(cli: Invoke) -> None:
    for spec, message in [
        ("nomodule_here:x", "cannot import nomodule_here"),
        ("json:nothing", "json has no attribute nothing"),
        ("json", "expected MODULE:NAME"),
        ("json:dumps", "not an agents_persistence Upcasters"),
    ]:
        result = cli("migrate-payloads", "--url", "memory://", "--upcasters", spec)
        assert result.exit_code == 2, (spec, result.output)
        assert message in result.stderr, spec


# --- on every store that encrypts ------------------------------------------------------------


def test_every_command_reads_an_encrypted_store_with_its_keys(
    cli: Invoke, target: Target, tmp_path: Path
) -> None:
    with target.open(keys=keyring("k1")) as checkpointer:
        checkpointer.save_state("t1", sample_state(1))
    keys = ["--keys", str(key_file(tmp_path, "k1"))]

    shown = cli("threads", "show", "t1", "--json", *target.args, *keys)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["state"]["scratchpad"]["n"] == 1
    listed = cli("threads", "list", "--json", *target.args)  # listing needs no keys
    assert [t["thread_id"] for t in json.loads(listed.stdout)["threads"]] == ["t1"]
    refused = cli("threads", "show", "t1", *target.args)
    assert refused.exit_code == 1
    assert "DecryptionError" in refused.stderr
    assert "needs its keys: --keys FILE" in refused.stderr
    assert "threads delete" not in refused.stderr  # never advice to delete an encrypted thread
    assert "étape" not in refused.stderr
    exported = cli("export", "--output", str(tmp_path / "out.jsonl"), *target.args, *keys)
    assert exported.exit_code == 0, exported.output


def test_rotate_moves_every_thread_to_the_new_key(
    cli: Invoke, target: Target, tmp_path: Path
) -> None:
    with target.open(keys=keyring("k1")) as checkpointer:
        for n in range(7):
            checkpointer.save_state(f"t{n}", sample_state(n))
            checkpointer.save_state(f"t{n}", sample_state(n + 10))
    before = snapshot_of_keys(target, keyring("k1"))
    rotating = ["--keys", str(key_file(tmp_path, "k2", "k1", "k2"))]

    dry = report(cli("keys", "rotate", "--dry-run", "--json", *target.args, *rotating))
    assert (dry["stale"], dry["rewritten"]) == (7, 0)
    first = report(cli("keys", "rotate", "--page-size", "3", "--json", *target.args, *rotating))
    assert (first["rewritten"], first["failed"], first["conflict"]) == (7, 0, 0)
    again = report(cli("keys", "rotate", "--json", *target.args, *rotating))
    assert (again["rewritten"], again["current"]) == (0, 7)
    # Without k1 in the keyring, every thread still reads, unchanged.
    assert snapshot_of_keys(target, keyring("k2")) == before
    with target.open(keys=keyring("k2")) as checkpointer:
        assert {checkpointer.refresh_thread(f"t{n}") for n in range(7)} == {"current"}

    text = cli("keys", "rotate", *target.args, *rotating)
    assert text.exit_code == 0, text.output
    assert f"7 threads of namespace '{target.namespace}' to key 'k2': 0 rewritten, 7 current" in (
        text.stdout
    )


def test_rotate_encrypts_a_plaintext_store_and_names_unreadable_threads(
    cli: Invoke, target: Target, tmp_path: Path
) -> None:
    seed(target, 3)
    lost = LocalKeyring(active="lost", keys={"lost": generate_key()})
    with target.open(keys=lost) as checkpointer:
        checkpointer.save_state("t-lost", sample_state(5))
    keys = ["--keys", str(key_file(tmp_path, "k1"))]

    result = cli("keys", "rotate", *target.args, *keys)

    assert result.exit_code == 1, result.output
    assert "3 rewritten, 0 current, 0 conflict, 0 gone, 1 failed" in result.stdout
    assert "failed: thread 't-lost': UnknownKeyError" in result.stderr
    with target.open() as plain, pytest.raises(DecryptionError):
        plain.load_state("thread-00")
    with target.open() as plain:  # listing needs no keys
        listed = {t.thread_id for t in plain.iter_threads()}
    assert listed == {"thread-00", "thread-01", "thread-02", "t-lost"}


def test_copy_encrypts_the_target_and_decrypts_with_to_plaintext(
    cli: Invoke, target: Target, tmp_path: Path
) -> None:
    saved = seed(target, 2)
    keys = ["--keys", str(key_file(tmp_path, "k1"))]
    encrypted_ns, plain_ns = target.namespace + "e", target.namespace + "p"
    try:
        copied = cli(
            "copy", "--to", target.url, "--to-namespace", encrypted_ns, *target.args, *keys
        )
        assert copied.exit_code == 0, copied.output
        with target.open(namespace=encrypted_ns) as plain, pytest.raises(DecryptionError):
            plain.load_state("thread-00")
        back = cli(
            "copy",
            "--to",
            target.url,
            "--to-namespace",
            plain_ns,
            "--to-plaintext",
            "--url",
            target.url,
            "--namespace",
            encrypted_ns,
            *keys,
        )
        assert back.exit_code == 0, back.output
        with target.open(namespace=plain_ns) as plain:
            assert {t: plain.load_state(t) for t in saved} == {t: s for t, (s, _) in saved.items()}
    finally:
        for namespace in (encrypted_ns, plain_ns):
            with target.open(namespace=namespace, keys=keyring("k1")) as checkpointer:
                for thread in list(checkpointer.iter_threads()):
                    checkpointer.delete_thread(thread.thread_id)


@pytest.fixture(scope="module")
def kms_endpoint() -> Iterator[str]:
    """A moto server for KMS (the command finds it through AWS_ENDPOINT_URL_KMS)."""
    pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_rotate_between_kms_keys(
    cli: Invoke,
    target: Target,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kms_endpoint: str,
) -> None:
    import boto3

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_KMS": kms_endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    kms = boto3.client("kms")
    old = kms.create_key(Description="old")["KeyMetadata"]["Arn"]
    new = kms.create_key(Description="new")["KeyMetadata"]["Arn"]
    alias = f"alias/{target.namespace}"
    kms.create_alias(AliasName=alias, TargetKeyId=new)
    with target.open(keys=KmsKeyProvider(old)) as checkpointer:
        for n in range(3):
            checkpointer.save_state(f"t{n}", sample_state(n))

    rotated = cli(
        "keys", "rotate", "--json", *target.args, "--kms-key-id", alias, "--kms-key-id", old
    )
    assert (report(rotated)["rewritten"], report(rotated)["failed"]) == (3, 0)

    # A key file naming the new key alone reads every thread: the old key can be retired.
    settings = tmp_path / "kms.json"
    settings.write_text(json.dumps({"kms": {"key_id": alias, "endpoint": kms_endpoint}}))
    again = cli("keys", "rotate", "--json", *target.args, "--keys", str(settings))
    assert (report(again)["current"], report(again)["rewritten"]) == (3, 0)
    shown = cli("threads", "show", "t2", "--json", *target.args, "--keys", str(settings))
    assert json.loads(shown.stdout)["state"]["scratchpad"]["n"] == 2
    unknown = cli("threads", "show", "t2", *target.args, "--kms-key-id", old)
    assert unknown.exit_code == 1
    assert "UnknownKeyError" in unknown.stderr
    assert "add that key to the keys given" in unknown.stderr


APP_MODULE = """
from tests.test_upcasting import ConversationV3, upcasters_v3

State = ConversationV3
upcasters = upcasters_v3()
"""


def test_migrate_payloads_rewrites_three_generations(
    cli: Invoke, target: Target, tmp_path: Path
) -> None:
    with target.open(state_type=ConversationV1) as old:
        old.save_state("g1", V1)
    with target.open(state_type=ConversationV2) as old:
        old.save_state("g2", V2)
    with target.open(state_type=ConversationV3) as new:
        new.save_state("g3", V3)
    (tmp_path / "app_state_v3.py").write_text(APP_MODULE)  # the command imports from its cwd
    options = ["--state-type", "app_state_v3:State", "--upcasters", "app_state_v3:upcasters"]

    dry = report(cli("migrate-payloads", "--dry-run", "--json", *options, *target.args))
    done = report(cli("migrate-payloads", "--json", *options, *target.args))
    again = report(cli("migrate-payloads", "--json", "--upcasters", options[3], *target.args))

    assert (dry["stale"], dry["current"]) == (2, 1)
    assert (done["rewritten"], done["current"], done["failed"]) == (2, 1, 0)
    assert (again["rewritten"], again["current"]) == (0, 3)
    with target.open(state_type=ConversationV3) as bare:  # no upcasters needed any more
        assert [bare.load_state(t) for t in ("g1", "g2", "g3")] == [V3, V3, V3]


def snapshot_of_keys(target: Target, keys: LocalKeyring) -> dict[str, Any]:
    with target.open(keys=keys) as checkpointer:
        return {
            t.thread_id: (checkpointer.load_state(t.thread_id), t)
            for t in checkpointer.iter_threads()
        }


def test_rotate_shows_progress_on_a_terminal(make: Any, tmp_path: Path) -> None:
    from .test_terminal import on_terminal

    target = make("redis")
    with target.open(keys=keyring("k1")) as checkpointer:
        for n in range(3):
            checkpointer.save_state(f"t{n}", sample_state(n))
    keys = ["--keys", str(key_file(tmp_path, "k2", "k1", "k2"))]
    code, output = on_terminal(["keys", "rotate", *target.args, *keys])
    assert code == 0, output
    assert f"refreshing namespace '{target.namespace}' to key 'k2'" in output
    assert "3 threads" in output
    assert "3 rewritten, 0 current" in output
