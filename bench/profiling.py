"""Section 6: where the time of a save and a load goes, per store (pyinstrument).

Each store runs ``profile_ops`` save+load pairs of a 10 KB snapshot under pyinstrument. The
report keeps, per store: the share of time by layer (our library's own code, SQLAlchemy,
pydantic, the driver, the rest) and the library functions with the most cumulative time; the
full call tree goes to ``results/profile-<store>.txt``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from bench.common import SIZES, make_state, new_namespace

if TYPE_CHECKING:
    from pathlib import Path

    from bench.common import Settings
    from bench.stores import Target

LAYERS = (
    ("I/O wait", ("/psycopg/waiting.py",)),
    ("library", ("/agents_persistence/",)),
    ("sqlalchemy", ("/sqlalchemy/",)),
    ("pydantic", ("/pydantic/", "/pydantic_core/")),
    ("redis-om", ("/redis_om/", "/aredis_om/")),
    ("pynamodb", ("/pynamodb/",)),
    (
        "driver",
        (
            "/psycopg/",
            "/psycopg_binary/",
            "/pymysql/",
            "/aiomysql/",
            "/sqlite3/",
            "/aiosqlite/",
            "/redis/",
            "/botocore/",
            "/boto3/",
            "/urllib3/",
            "/http/client",
            "/socket.py",
            "/ssl.py",
        ),
    ),
    ("asyncio", ("/asyncio/", "/concurrent/", "/threading.py", "/selectors.py")),
    ("bench", ("/bench/",)),
)


def _layer(path: str | None) -> str:
    if not path:
        return "other"
    for name, markers in LAYERS:
        if any(marker in path for marker in markers):
            return name
    return "other"


_WAITS = ("recv", "send", "select", "poll", "sleep", "wait", "acquire")
_DRIVER_CALLS = ("execute", "fetch", "commit", "rollback", "cursor", "close", "step")


def _builtin_layer(function: str, caller: str) -> str:
    """Built-in (C) frames: socket waits are "I/O wait", database C calls the driver's."""
    if any(word in function for word in _WAITS):
        return "I/O wait"
    if caller in ("sqlalchemy", "driver") and any(word in function for word in _DRIVER_CALLS):
        return "driver"
    return caller


def _builtin(frame: Any) -> bool:
    """C functions (and pyinstrument's synthetic [self]/[await] frames) have no Python file."""
    return (frame.file_path or "<built-in>") == "<built-in>"


def _walk(
    frame: Any, layers: dict[str, float], funcs: dict[tuple[str, str], float], stack: bool
) -> None:
    path = frame.file_path or ""
    layer = _layer(path)
    child_time = 0.0
    for child in frame.children:
        child_path = child.file_path or ""
        if child_path.startswith("<") or not child_path:
            layers[_builtin_layer(child.function or "", layer)] += child.time
            child_time += child.time
    own = (
        frame.time
        - child_time
        - sum(
            c.time
            for c in frame.children
            if (c.file_path or "") and not c.file_path.startswith("<")
        )
    )
    layers[layer] += max(own, 0.0)
    in_library = "/agents_persistence/" in path
    for child in frame.children:
        child_in_library = "/agents_persistence/" in (child.file_path or "")
        name = child.function or "?"
        if in_library and not child_in_library and not stack and not name.startswith("["):
            # A call out of the library: where its time goes (SQLAlchemy, pydantic, driver).
            if child.class_name:
                name = f"{child.class_name}.{name}"
            funcs[(name, child.file_path_short or "<built-in>")] += child.time
        if not _builtin(child):
            _walk(child, layers, funcs, stack or (in_library and not child_in_library))


def analyse(profiler: Any, store: str, out_dir: Path) -> dict[str, Any]:
    session = profiler.last_session
    root = session.root_frame()
    layers: dict[str, float] = defaultdict(float)
    funcs: dict[tuple[str, str], float] = defaultdict(float)
    _walk(root, layers, funcs, False)
    total = sum(layers.values()) or 1.0
    text = profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False)
    (out_dir / f"profile-{store}.txt").write_text(text)
    top = sorted(funcs.items(), key=lambda item: -item[1])[:12]
    return {
        "store": store,
        "total_s": total,
        "layers": {name: layers[name] / total for name in sorted(layers, key=lambda n: -layers[n])},
        "top": [{"function": f, "where": w, "share": t / total} for (f, w), t in top],
    }


def run(target: Target, settings: Settings, out_dir: Path) -> list[dict[str, Any]]:
    from pyinstrument import Profiler

    state = make_state(SIZES["10KB"])
    rows = []
    namespace = new_namespace("profile")
    # In-memory operations take microseconds: run more of them so the profile has samples.
    ops = settings.profile_ops * (20 if target.name == "memory" else 1)
    cp = target.sync(namespace)
    try:
        for i in range(20):
            cp.save_state(f"p{i % 8}", state)
            cp.load_state(f"p{i % 8}")
        profiler = Profiler(interval=0.001)
        profiler.start()
        for i in range(ops):
            cp.save_state(f"p{i % 8}", state)
            cp.load_state(f"p{i % 8}")
        profiler.stop()
        rows.append({"mode": "sync", **analyse(profiler, target.name, out_dir)})
    finally:
        cp.close()
        target.cleanup(namespace)
    rows.append({"mode": "async", **asyncio.run(_run_async(target, ops, out_dir, state))})
    return rows


async def _run_async(target: Target, ops: int, out_dir: Path, state: Any) -> dict:
    from pyinstrument import Profiler

    namespace = new_namespace("profile")
    cp = await target.async_(namespace)
    try:
        for i in range(20):
            await cp.save_state(f"p{i % 8}", state)
            await cp.load_state(f"p{i % 8}")
        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
        for i in range(ops):
            await cp.save_state(f"p{i % 8}", state)
            await cp.load_state(f"p{i % 8}")
        profiler.stop()
        return analyse(profiler, f"{target.name}-async", out_dir)
    finally:
        await cp.close()
        target.cleanup(namespace)
