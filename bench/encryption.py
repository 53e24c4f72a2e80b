"""What encryption at rest costs per save and load, at 10 KB and 1 MB, on each store.

For each store, two checkpointers of the same store: one in clear, one with a `LocalKeyring`
(``keys=``). Each run saves (a whole write: every save is of a new thread, so nothing is a
delta) and loads the same state through both, interleaved, and reports the p50 of each and
their ratio; the figure is the median over runs. No raw driver is measured here, so the sizes
do not depend on a baseline's item limit (`Target.max_state_bytes`). A store that does not take
``keys=`` is recorded as skipped with the reason.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from bench.common import Runs, Settings, make_state, new_namespace, settle, timed

if TYPE_CHECKING:
    from pathlib import Path

    from bench.stores import Target

SIZES = {"10 KB": 10 * 1024, "1 MB": 1024 * 1024}
KEY = bytes(range(32))


def _keys() -> Any:
    from agents_persistence.encryption import LocalKeyring

    return LocalKeyring(active="bench", keys={"bench": KEY})


def _count(settings: Settings, size: int) -> int:
    base = 40 if settings.quick else 150
    return base if size < 100_000 else max(8, base // 10)


def run(target: Target, settings: Settings) -> list[dict[str, Any]]:
    """Save and load p50, in clear and encrypted, per size (sync)."""
    plain = target.sync(new_namespace("plain"))
    try:
        sealed = target.sync(new_namespace("sealed"), keys=_keys())
    except TypeError as exc:
        plain.close()
        raise RuntimeError(f"{target.name} does not take keys= yet ({exc})") from exc
    rows: list[dict[str, Any]] = []
    ids = itertools.count()
    try:
        for size_name, size in SIZES.items():
            state = make_state(size)
            runs = {(op, kind): Runs() for op in ("save", "load") for kind in ("plain", "sealed")}
            for _ in range(settings.reps):
                samples: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
                for _ in range(_count(settings, size)):
                    for kind, cp in (("plain", plain), ("sealed", sealed)):
                        tid = f"t{next(ids)}"
                        samples["save", kind].append(timed(cp.save_state, tid, state))
                        samples["load", kind].append(timed(cp.load_state, tid))
                for key, values in samples.items():
                    runs[key].add(values)
                settle()
            for op in ("save", "load"):
                clear, enc = runs[op, "plain"], runs[op, "sealed"]
                rows.append(
                    {
                        "store": target.name,
                        "op": op,
                        "size": size_name,
                        "plain_p50_ms": clear.p50,
                        "encrypted_p50_ms": enc.p50,
                        "ratio": enc.p50 / clear.p50 if clear.p50 else float("nan"),
                        "added_ms": enc.p50 - clear.p50,
                    }
                )
    finally:
        plain.close()
        sealed.close()
    return rows


def markdown(results: dict[str, Any]) -> str:
    """``encryption.md``: the table of this run, with the command and date."""
    env = results["env"]
    lines = [
        "# Encryption at rest: cost per save and load",
        "",
        f"`{env['command']}`, {env['date']}, {env['cores']} cores, commit {env['commit']}.",
        "",
        "Each save writes a new thread whole; p50 in ms, median over runs; the same state in clear",
        "and with `keys=LocalKeyring(...)` (AES-256-GCM, a data key per save wrapped by the",
        "keyring), interleaved.",
        "",
        *summary_lines(results),
    ]
    skipped = [s for s in results.get("skipped", []) if s.startswith("encryption")]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped)]
    return "\n".join(lines) + "\n"


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The table (empty when the section did not run)."""
    rows = results.get("encryption", [])
    if not rows:
        return []
    out = [
        "| store | op | size | in clear | encrypted | ratio | added |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        out.append(
            f"| {row['store']} | {row['op']} | {row['size']} | {row['plain_p50_ms']:.3f} |"
            f" {row['encrypted_p50_ms']:.3f} | {row['ratio']:.2f}x | {row['added_ms']:+.3f} |"
        )
    return out


def write(results: dict[str, Any], out_dir: Path) -> None:
    """Write ``encryption.md`` into ``out_dir``."""
    (out_dir / "encryption.md").write_text(markdown(results))
