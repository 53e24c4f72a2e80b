"""``keys rotate`` in a subprocess on Redis, with live writers, killed mid-run and run again.

Writers keep saving while the rotation runs: app instances still writing under the old key and
instances already on the new keyring. The rotation is killed with SIGKILL once it has moved
some threads and not others; every save a writer had acknowledged must still be there, intact.
A second run, with the writers all on the new keyring, finishes the job: every stored value is
then sealed under the new key (read behind the library), and a keyring without the old key
reads every thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence import AgentStateSnapshot, ConflictError
from agents_persistence.encryption import LocalKeyring, is_sealed, key_id_of

from ..kits.encrypted import keyring
from .conftest import Target, make_target
from .test_keys import key_file

if TYPE_CHECKING:
    from collections.abc import Iterator

THREADS = 1000
WRITERS = 4
ROOT = Path(__file__).resolve().parents[2]


def sealed_by(kit: Any, target: Target, thread_id: str) -> set[str | None]:
    """The key of every value stored for the thread, read behind the library."""
    values = kit.stored_values(target.namespace, thread_id)
    return {key_id_of(v) if is_sealed(v) else None for v in values}


class Writer(threading.Thread):
    """Saves its threads in turn (load, change, conditional save) until stopped."""

    def __init__(self, target: Target, keys: LocalKeyring, thread_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.checkpointer = target.open(keys=keys)
        self.thread_ids = thread_ids
        self.acked: dict[str, tuple[int, AgentStateSnapshot]] = {}
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.saves = 0

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for thread_id in self.thread_ids:
                    self.save(thread_id)
        except BaseException as exc:
            self.error = exc

    def save(self, thread_id: str) -> None:
        checkpoint = self.checkpointer.load_checkpoint(thread_id)
        assert checkpoint is not None
        state = AgentStateSnapshot(scratchpad={"writer": thread_id, "save": self.saves})
        try:
            info = self.checkpointer.save_state(
                thread_id, state, expected_version=checkpoint.info.version
            )
        except ConflictError:
            return  # the rotation never conflicts a writer: only another writer could
        self.saves += 1
        self.acked[thread_id] = (info.version, state)

    def finish(self) -> dict[str, tuple[int, AgentStateSnapshot]]:
        self.stop.set()
        self.join(timeout=60)
        self.checkpointer.close()
        assert self.error is None, repr(self.error)
        return self.acked


def start_writers(target: Target, keyrings: list[LocalKeyring]) -> list[Writer]:
    # Writer i owns the threads n with n % 10 == i: spread over the whole listing.
    writers = [
        Writer(target, keyrings[i % len(keyrings)], [f"t{n:03d}" for n in range(i, THREADS, 10)])
        for i in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    return writers


def check_acked(target: Target, writers: list[Writer]) -> int:
    """Every last acknowledged save of the (stopped) writers is stored as acknowledged."""
    acked = {}
    for writer in writers:
        acked.update(writer.finish())
    with target.open(keys=keyring("k2", "k1", "k2")) as reader:
        for thread_id, (version, state) in acked.items():
            checkpoint = reader.load_checkpoint(thread_id)
            assert checkpoint is not None, thread_id
            assert (checkpoint.info.version, checkpoint.state) == (version, state), thread_id
    return len(acked)


def rotate(target: Target, keys: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agents_persistence",
            "keys",
            "rotate",
            "--page-size",
            "5",
            "--json",
            *target.args,
            "--keys",
            str(keys),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(condition: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.fixture
def redis_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    made = make_target("redis", tmp_path, monkeypatch)
    yield made
    made.close()


@pytest.fixture
def behind(redis_target: Target) -> Iterator[Any]:
    """The Redis test kit on the same server: reads stored values behind the library."""
    from ..kits.redis import RedisKit

    kit = RedisKit(redis_target.url)
    yield kit
    kit.stop()


def test_rotation_killed_mid_run_with_live_writers_then_finished(
    redis_target: Target, behind: Any, tmp_path: Path
) -> None:
    target = redis_target
    with target.open(keys=keyring("k1")) as old:
        for n in range(THREADS):
            old.save_state(f"t{n:03d}", AgentStateSnapshot(scratchpad={"n": n}))
    new_keys = key_file(tmp_path, "k2", "k1", "k2")
    # Half the app instances still write under k1 (they read k2), half already under k2.
    writers = start_writers(target, [keyring("k1", "k1", "k2"), keyring("k2", "k1", "k2")])
    wait_until(lambda: all(w.saves > 0 for w in writers), "every writer to save")

    # The walk goes from the most recently updated thread down: t299 (no writer's) comes
    # early, t005 (no writer's, among the oldest) near the end.
    first, last = f"t{THREADS - 1:03d}", "t005"
    process = rotate(target, new_keys)
    wait_until(lambda: sealed_by(behind, target, first) == {"k2"}, "the rotation to start")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert sealed_by(behind, target, last) == {"k1"}, "the rotation finished before it was killed"
    assert check_acked(target, writers) > 0

    # Every instance now on the new keyring; the second run finishes under their saves.
    writers = start_writers(target, [keyring("k2", "k1", "k2")])
    wait_until(lambda: all(w.saves > 0 for w in writers), "every writer to save")
    process = rotate(target, new_keys)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    summary = json.loads(out)
    assert summary["failed"] == 0
    assert summary["rewritten"] > 0
    check_acked(target, writers)

    only_new = keyring("k2")
    with target.open(keys=only_new) as checkpointer:
        listed = [t.thread_id for t in checkpointer.iter_threads()]
        assert len(listed) == THREADS
        for thread_id in listed:
            assert sealed_by(behind, target, thread_id) == {"k2"}, thread_id
            assert checkpointer.refresh_thread(thread_id) == "current"
            assert checkpointer.load_state(thread_id) is not None
