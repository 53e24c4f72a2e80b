"""A writer process: compare-and-set increments, each acknowledgement reported on stdout.

Run as ``python -m tests.reliability._worker SPEC`` where SPEC is JSON with ``url`` and
``options`` (for `open_checkpointer`), ``threads`` (ids to increment), ``limit`` (stop a
thread at that version), ``writer`` (a name) and ``seed``. Each iteration picks one of the
threads at random and runs one increment. Lines written (flushed one by one, so a parent that
kills this process has every acknowledgement it received before the kill):

- ``ack THREAD VERSION`` after a save returned,
- ``error TYPE`` for a typed error other than a conflict (the writer pauses and goes on),
- ``untyped TEXT`` for an exception outside the error root (the writer then exits 3),
- ``done WINS CONFLICTS`` when every thread reached ``limit``.
"""

from __future__ import annotations

import json
import random
import sys
import time

from agents_persistence import CheckpointerError, ConflictError, open_checkpointer

from ._workload import increment


def main(spec_text: str) -> int:
    spec = json.loads(spec_text)
    rng = random.Random(spec.get("seed"))
    threads = list(spec["threads"])
    limit = int(spec["limit"])
    out = sys.stdout
    wins = conflicts = 0
    with open_checkpointer(spec["url"], **spec.get("options", {})) as cp:
        while threads:
            thread_id = rng.choice(threads)
            try:
                info = increment(cp, thread_id, spec["writer"], limit=limit)
            except ConflictError:
                conflicts += 1
                continue
            except CheckpointerError as exc:
                out.write(f"error {type(exc).__name__}\n")
                out.flush()
                time.sleep(0.02)
                continue
            except Exception as exc:
                text = f"{type(exc).__module__}.{type(exc).__name__}: {exc}".replace("\n", " ")
                out.write(f"untyped {text[:300]}\n")
                out.flush()
                return 3
            if info is None:
                threads.remove(thread_id)
                continue
            wins += 1
            out.write(f"ack {info.thread_id} {info.version}\n")
            out.flush()
    out.write(f"done {wins} {conflicts}\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
