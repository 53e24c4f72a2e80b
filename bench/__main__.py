"""``python -m bench [--quick]``: run every benchmark section and write ``bench/results/``.

Stores whose module or server is missing are skipped with the reason printed and recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import (
    conversation,
    encryption,
    latency,
    optional,
    profiling,
    report,
    savers,
    scale,
    throughput,
    turns,
)
from bench.common import Settings

if TYPE_CHECKING:
    from bench.stores import Target
from bench.targets import FACTORIES

SECTIONS = (
    "latency",
    "throughput",
    "scale",
    "turns",
    "conversation",
    "savers",
    "encryption",
    "telemetry",
    "profile",
)
PACKAGES = (
    "agents-persistence",
    "pydantic",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "pymysql",
    "aiomysql",
    "aiosqlite",
    "redis",
    "redis-om",
    "pynamodb",
    "boto3",
    "moto",
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-sqlite",
    "langgraph-checkpoint-postgres",
)


def _say(message: str) -> None:
    print(message, flush=True)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    return "? RAM"


def _commit() -> str:
    """The library's commit, and whether the measured source differed from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    if not sha:
        return "unknown"
    return f"{sha} (with uncommitted changes in src/)" if changed else sha


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def _env(command: str) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "memory": _memory(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "commit": _commit(),
        "versions": _versions(),
        "servers": {},
    }


def _targets(names: list[str], skipped: list[str]) -> dict[str, Target]:
    ready: dict[str, Target] = {}
    for name in names:
        target = FACTORIES[name]()
        reason = target.unavailable()
        if reason is None:
            try:
                target.start()
            except Exception as exc:
                reason = f"could not start: {type(exc).__name__}: {exc}"
        if reason is not None:
            _say(f"SKIP {name}: {reason}")
            skipped.append(f"{name} ({reason})")
            continue
        ready[name] = target
    return ready


def _skip(results: dict[str, Any], what: str, reason: str) -> None:
    _say(f"SKIP {what}: {reason}")
    results["skipped"].append(f"{what} ({reason})")


def _section(results: dict[str, Any], key: str, name: str, fn: Any, *args: Any) -> None:
    started = time.perf_counter()
    _say(f"  {key} {name} ...")
    try:
        rows = fn(*args)
    except Exception as exc:
        traceback.print_exc()
        results["skipped"].append(f"{key} on {name} failed ({type(exc).__name__}: {exc})")
        return
    results.setdefault(key, []).extend(rows)
    _say(f"  {key} {name} done in {time.perf_counter() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs and threads (minutes)")
    parser.add_argument(
        "--stores", default=",".join(FACTORIES), help=f"comma list of {', '.join(FACTORIES)}"
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).with_name("results")), help="results directory"
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="only rewrite latest.md and the chart from the results directory's latest.json",
    )
    args = parser.parse_args(argv)
    if args.report:
        results = json.loads((Path(args.out) / "latest.json").read_text())
        written = report.write(results, Path(args.out))
        _say("rewrote " + " and ".join(str(path) for path in written))
        return 0
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    settings = Settings.make(args.quick)
    stores = [s for s in args.stores.split(",") if s]
    sections = [s for s in args.sections.split(",") if s]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    started = time.perf_counter()
    results: dict[str, Any] = {
        "env": _env(command.strip()),
        "settings": settings.__dict__,
        "skipped": [],
        "stores": [],
    }
    targets = _targets(stores, results["skipped"])
    results["stores"] = list(targets)
    for name, target in targets.items():
        try:
            results["env"]["servers"][name] = target.server_version() or "in process"
        except Exception as exc:
            results["env"]["servers"][name] = f"? ({exc})"
    try:
        for key in sections:
            _say(f"== {key}")
            needs = optional.SECTION_NEEDS.get(key)
            reason = optional.missing(needs) if needs else None
            if reason is not None:
                _skip(results, f"{key} section", reason)
                continue
            if key in optional.SECTION_PARTS:
                module, part = optional.SECTION_PARTS[key]
                reason = optional.missing(module)
                if reason is not None:
                    _skip(results, f"{key}: {part}", reason)
            if key == "conversation":
                for name, target in targets.items():
                    _section(results, key, name, conversation.run, target, settings)
                conversation.write(results, out_dir)
                continue
            if key == "encryption":
                for name, target in targets.items():
                    _section(results, key, name, encryption.run, target, settings)
                encryption.write(results, out_dir)
                continue
            if key == "turns":
                _section(results, "turns", "LangGraph", _turns, targets, settings, results)
                continue
            if key == "savers":
                _section(results, "savers", "LangGraph", _savers, targets, settings, results)
                continue
            if key == "telemetry":
                _section(results, key, "memory and SQLite", _tracing, settings, out_dir, command)
                continue
            for name, target in targets.items():
                if key == "latency":
                    _section(results, key, name, latency.run, target, settings)
                elif key == "throughput":
                    _section(results, key, name, throughput.run, target, settings)
                elif key == "scale" and name != "memory":
                    _section(results, key, name, scale.run, target, settings, out_dir)
                elif key == "profile":
                    _section(results, key, name, profiling.run, target, settings, out_dir)
    finally:
        for target in targets.values():
            try:
                target.stop()
            except Exception:
                traceback.print_exc()
    results["env"]["duration_s"] = time.perf_counter() - started
    written = report.write(results, out_dir)
    _say("wrote " + " and ".join(str(path) for path in written))
    _say("\n".join(report.summary_lines(results)))
    return 0


def _tracing(settings: Settings, out_dir: Path, command: str) -> list[dict[str, Any]]:
    """Tracing on against off (``bench.telemetry``); also writes ``telemetry.md``."""
    from bench import telemetry as tracing  # needs the OpenTelemetry SDK (checked before)

    figures = tracing.run(settings.quick)
    (out_dir / "telemetry.md").write_text(tracing.markdown(figures, command, settings.quick))
    return [
        {"store": store, "op": op, "mode": mode, "wall_p50_us": wall, "cpu_us": cpu}
        for store, by_op in figures.items()
        for op, by_mode in by_op.items()
        for mode, (wall, cpu) in by_mode.items()
    ]


def _turns(targets: dict[str, Target], settings: Settings, results: dict[str, Any]) -> list:
    rows, skipped = turns.run(targets, settings)
    for reason in skipped:
        _say(f"SKIP {reason}")
    results["skipped"].extend(skipped)
    return rows


def _savers(targets: dict[str, Target], settings: Settings, results: dict[str, Any]) -> list:
    rows, skipped = savers.run(targets, settings)
    results["skipped"].extend(skipped)
    return rows


if __name__ == "__main__":
    sys.exit(main())
