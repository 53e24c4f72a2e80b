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


def _walk(frame: Any, layers: dict[str, float], funcs: dict[tuple[str, str], float], stack: set):
    child_time = sum(child.time for child in frame.children)
    own = max(frame.time - child_time, 0.0)
    path = frame.file_path or ""
    # Time in frames without a Python file (C calls, [self], [await]) belongs to the caller's layer.
    layers[_layer(path) if path else "other"] += own
    key = (frame.function, f"{frame.file_path_short}:{frame.line_no}")
    if "/agents_persistence/" in path and key not in stack:
        funcs[key] += frame.time
        stack = stack | {key}
    for child in frame.children:
        if not child.file_path:
            layers[_layer(path)] += child.time
            continue
        _walk(child, layers, funcs, stack)


def _analyse(profiler: Any, store: str, out_dir: Path) -> dict[str, Any]:
    session = profiler.last_session
    root = session.root_frame()
    layers: dict[str, float] = defaultdict(float)
    funcs: dict[tuple[str, str], float] = defaultdict(float)
    _walk(root, layers, funcs, set())
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
    cp = target.sync(namespace)
    try:
        for i in range(20):
            cp.save_state(f"p{i % 8}", state)
            cp.load_state(f"p{i % 8}")
        profiler = Profiler(interval=0.0002)
        profiler.start()
        for i in range(settings.profile_ops):
            cp.save_state(f"p{i % 8}", state)
            cp.load_state(f"p{i % 8}")
        profiler.stop()
        rows.append({"mode": "sync", **_analyse(profiler, target.name, out_dir)})
    finally:
        cp.close()
        target.cleanup(namespace)
    rows.append({"mode": "async", **asyncio.run(_run_async(target, settings, out_dir, state))})
    return rows


async def _run_async(target: Target, settings: Settings, out_dir: Path, state: Any) -> dict:
    from pyinstrument import Profiler

    namespace = new_namespace("profile")
    cp = await target.async_(namespace)
    try:
        for i in range(20):
            await cp.save_state(f"p{i % 8}", state)
            await cp.load_state(f"p{i % 8}")
        profiler = Profiler(interval=0.0002, async_mode="disabled")
        profiler.start()
        for i in range(settings.profile_ops):
            await cp.save_state(f"p{i % 8}", state)
            await cp.load_state(f"p{i % 8}")
        profiler.stop()
        return _analyse(profiler, f"{target.name}-async", out_dir)
    finally:
        await cp.close()
        target.cleanup(namespace)
