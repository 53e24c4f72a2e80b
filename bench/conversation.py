"""Section 7: one long conversation, turn by turn: does a save cost what changed?

One thread per store, ``turns`` turns (1,000; 200 in quick mode). Each turn loads the latest
state, adds 2 messages of 500 characters (a user message and an agent reply), sets the
scratchpad's turn counter and, every 10th turn, rewrites one of 5 files (about 10 KB of files in
all), then saves the whole state (``load_state`` then ``save_state``, no ``expected_version``, as
in the per-turn job). Every turn's load and save are timed; each reported figure is the p50 over
a window of 10 consecutive turns around turn 10, 100 and the last (1,000), so each window holds
one file rewrite.

Bytes written per save come from a second pass on a thread of its own, so the instrumentation
does not touch the timed pass: the library's ``agents_persistence.write.size`` histogram (what
a save sent to the store), read through the OpenTelemetry SDK's ``InMemoryMetricReader`` after
every save. Where the library does not record it, the column says so. The whole state's size
(the ``size`` of each save's ``CheckpointInfo``, which the library also records as
``agents_persistence.payload.size``) is shown beside it, from the timed pass.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents_persistence import AgentMessage, AgentStateSnapshot, telemetry
from agents_persistence.errors import ConfigurationError, StateTooLargeError
from bench.common import _text, median, new_namespace, p50, settle

if TYPE_CHECKING:
    from pathlib import Path

    from bench.common import Settings
    from bench.stores import Target

TURNS = {False: 1000, True: 200}
POINTS = (10, 100, 1000)
WINDOW = 10
FILES = [f"notes/file_{i}.md" for i in range(5)]
FILE_CHARS = 2000
MESSAGE_CHARS = 500
REWRITE_EVERY = 10
SAVE_TARGET = 1.5  # save p50 at the last turn within 1.5x of turn 10 (issue 12)
WRITE_TARGET = 1.5  # bytes written per changed byte: the same tolerance
WRITE_METRIC = "agents_persistence.write.size"
PAYLOAD_METRIC = "agents_persistence.payload.size"


# --- the workload -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    user: str
    agent: str
    file: tuple[str, str] | None  # (path, new text) on a rewrite turn
    changed: int  # JSON bytes this turn adds or replaces (messages and the rewritten file)


def workload(turns: int) -> list[Turn]:
    """Every turn's texts, made before any timing."""
    out = []
    for turn in range(1, turns + 1):
        rng = random.Random(turn)
        user, agent = _text(rng, MESSAGE_CHARS), _text(rng, MESSAGE_CHARS)
        rewrite = None
        if turn % REWRITE_EVERY == 0:
            rewrite = (FILES[(turn // REWRITE_EVERY) % len(FILES)], _text(rng, FILE_CHARS))
        messages = [AgentMessage.text("User", user), AgentMessage.text("Agent", agent)]
        changed = sum(len(message.model_dump_json()) for message in messages)
        if rewrite is not None:
            changed += len(rewrite[0]) + len(rewrite[1]) + 6  # "path":"text",
        out.append(Turn(user, agent, rewrite, changed))
    return out


def initial_state() -> AgentStateSnapshot:
    rng = random.Random(0)
    return AgentStateSnapshot(
        files={name: _text(rng, FILE_CHARS) for name in FILES}, scratchpad={"turn": 0}
    )


def apply_turn(state: AgentStateSnapshot, turn: int, step: Turn) -> None:
    state.messages.append(AgentMessage.text("User", step.user))
    state.messages.append(AgentMessage.text("Agent", step.agent))
    state.scratchpad["turn"] = turn
    if step.file is not None:
        state.files[step.file[0]] = step.file[1]


# --- the passes ---------------------------------------------------------------------------------


@dataclass
class Pass:
    """Per-turn figures of one pass (index 0 is turn 1) and why it stopped early, if it did."""

    load_ms: list[float] = field(default_factory=list)
    save_ms: list[float] = field(default_factory=list)
    state_bytes: list[int] = field(default_factory=list)
    written: list[float] = field(default_factory=list)
    stopped: str | None = None
    total_s: float = 0.0


def _refused(turn: int, exc: StateTooLargeError) -> str:
    return f"StateTooLargeError at turn {turn} ({exc.size:,} B, limit {exc.limit:,} B)"


def timed_pass(cp: Any, thread_id: str, steps: list[Turn]) -> Pass:
    """Load, change, save, turn after turn; each load and save timed."""
    out = Pass()
    settle()
    started = time.perf_counter()
    for turn, step in enumerate(steps, 1):
        t0 = time.perf_counter_ns()
        state = cp.load_state(thread_id)
        t1 = time.perf_counter_ns()
        if state is None:
            state = initial_state()
        apply_turn(state, turn, step)
        t2 = time.perf_counter_ns()
        try:
            info = cp.save_state(thread_id, state)
        except StateTooLargeError as exc:
            out.stopped = _refused(turn, exc)
            break
        t3 = time.perf_counter_ns()
        out.load_ms.append((t1 - t0) / 1e6)
        out.save_ms.append((t3 - t2) / 1e6)
        out.state_bytes.append(int(info.size))
    out.total_s = time.perf_counter() - started
    return out


def _save_sums(reader: Any) -> dict[str, float]:
    """Sum of every histogram of the library's saves so far (cumulative), by metric name."""
    sums: dict[str, float] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name not in (WRITE_METRIC, PAYLOAD_METRIC):
                    continue
                for point in metric.data.data_points:
                    if point.attributes.get("db.operation.name", "save_state") == "save_state":
                        sums[metric.name] = sums.get(metric.name, 0.0) + point.sum
    return sums


def _naming_provider(provider: Any, names: set[str]) -> Any:
    """``provider`` behind a meter provider that notes the name of every instrument created.

    A histogram nobody recorded into is not exported, so this is how the section tells an
    instrument the library lacks from one a store did not record.
    """
    from opentelemetry import metrics

    class Meter:
        def __init__(self, meter: Any) -> None:
            self.meter = meter

        def __getattr__(self, attr: str) -> Any:
            found = getattr(self.meter, attr)
            if not attr.startswith("create_"):
                return found

            def create(name: str, *args: Any, **kwargs: Any) -> Any:
                names.add(name)
                return found(name, *args, **kwargs)

            return create

    class Provider(metrics.MeterProvider):
        def get_meter(
            self,
            name: str,
            version: str | None = None,
            schema_url: str | None = None,
            attributes: Any = None,
        ) -> Any:
            return Meter(provider.get_meter(name, version, schema_url, attributes))

    return Provider()


def measuring_pass(cp: Any, thread_id: str, steps: list[Turn]) -> tuple[list[float], str]:
    """The same turns with the library's metrics on: bytes written by each save, and a status.

    The status is ``measured`` or ``n/a (why)``; without a measurement the list is empty.
    """
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    except ImportError as exc:
        return [], f"n/a (opentelemetry-sdk not installed: {exc})"
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    created: set[str] = set()
    was_enabled = telemetry.is_enabled()
    try:
        telemetry.enable(meter_provider=_naming_provider(provider, created))
    except ConfigurationError as exc:
        return [], f"n/a ({exc})"
    written: list[float] = []
    seen: set[str] = set()
    previous = 0.0
    try:
        for turn, step in enumerate(steps, 1):
            state = cp.load_state(thread_id) or initial_state()
            apply_turn(state, turn, step)
            try:
                cp.save_state(thread_id, state)
            except StateTooLargeError:
                break
            sums = _save_sums(reader)
            seen.update(sums)
            written.append(sums.get(WRITE_METRIC, 0.0) - previous)  # 0: nothing recorded
            previous = sums.get(WRITE_METRIC, 0.0)
    finally:
        if was_enabled:
            telemetry.enable()
        else:
            telemetry.disable()
        provider.shutdown()
    if WRITE_METRIC in seen:
        return written, "measured"
    if WRITE_METRIC in created:
        return [], "n/a (not recorded by this store's saves)"
    if PAYLOAD_METRIC in seen:
        return [], "n/a (instrument missing)"
    return [], "n/a (the library recorded no metrics)"


# --- figures ------------------------------------------------------------------------------------


def points(turns: int) -> list[int]:
    """The turns reported: 10, 100 and the last (1,000 in a full run)."""
    return sorted({p for p in POINTS if p < turns} | {turns})


def window(point: int, turns: int) -> tuple[int, int]:
    """The ``WINDOW`` consecutive turns around ``point`` (from turn 2 on, up to the last)."""
    low = max(2, point - WINDOW // 2)
    high = min(turns, low + WINDOW - 1)
    return max(2, high - WINDOW + 1), high


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def figures(timed: Pass, written: list[float], steps: list[Turn]) -> list[dict[str, Any]]:
    """One entry per reported turn whose whole window the timed pass reached."""
    out = []
    for point in points(len(steps)):
        low, high = window(point, len(steps))
        if high > len(timed.save_ms):
            continue
        span = slice(low - 1, high)
        changed = [float(step.changed) for step in steps[span]]
        entry: dict[str, Any] = {
            "turn": point,
            "window": [low, high],
            "save_p50": p50(timed.save_ms[span]),
            "load_p50": p50(timed.load_ms[span]),
            "state_bytes": median(timed.state_bytes[span]),
            "changed_mean": _mean(changed),
        }
        if high <= len(written):
            entry["written_p50"] = p50(written[span])
            entry["written_mean"] = _mean(written[span])
        out.append(entry)
    return out


def run(target: Target, settings: Settings) -> list[dict[str, Any]]:
    """The timed pass, then the measuring pass, on one store; one row."""
    steps = workload(TURNS[settings.quick])
    namespace = new_namespace("conversation")
    cp = target.sync(namespace)
    try:
        timed = timed_pass(cp, f"conversation-{os.getpid()}", steps)
        written, status = measuring_pass(cp, f"conversation-measured-{os.getpid()}", steps)
    finally:
        cp.close()
        target.cleanup(namespace)
    return [
        {
            "store": target.name,
            "label": target.label,
            "turns": len(steps),
            "reached": len(timed.save_ms),
            "stopped": timed.stopped,
            "total_s": timed.total_s,
            "load_s": sum(timed.load_ms) / 1e3,
            "save_s": sum(timed.save_ms) / 1e3,
            "written": status,
            "points": figures(timed, written, steps),
        }
    ]


# --- report -------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _row_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*out, *("| " + " | ".join(row) + " |" for row in rows), ""]


def _verdicts(row: dict[str, Any]) -> tuple[str, str, str, str]:
    """Save p50 last/first and bytes written per changed byte last/first, with verdicts."""
    pts = row["points"]
    first = pts[0] if pts and pts[0]["turn"] == min(POINTS) else None
    last = pts[-1] if pts and pts[-1]["turn"] == row["turns"] else None
    if first is None or last is None:
        why = row["stopped"] or "window not reached"
        return "-", f"not met ({why})", "-", f"not met ({why})"
    ratio = last["save_p50"] / first["save_p50"]
    save = "met" if ratio <= SAVE_TARGET else "not met"
    if "written_mean" not in last or "written_mean" not in first:
        return f"{ratio:.2f}x", save, "-", f"not judged: {row['written']}"
    per_change = [p["written_mean"] / p["changed_mean"] for p in (first, last)]
    growth = per_change[1] / per_change[0]
    write = "met" if growth <= WRITE_TARGET else "not met"
    return (
        f"{ratio:.2f}x",
        save,
        f"{per_change[0]:.2f} / {per_change[1]:.2f} ({growth:.2f}x)",
        write,
    )


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The targets of issue 12, judged from this run's rows only."""
    rows = results.get("conversation", [])
    if not rows:
        return []
    last = rows[0]["turns"]
    body = [[r["label"], *_verdicts(r)] for r in rows]
    stated = (
        "" if last == max(POINTS) else f"; stated for turn {max(POINTS):,}, judged here at {last}"
    )
    return [
        f"Long conversation ({last} turns, one thread, load then save per turn): save p50 at"
        f" turn {last} against turn 10 (target: within {SAVE_TARGET}x on every store{stated}),"
        " and bytes written per save per byte the turn changed, at turn 10 / at the last turn"
        f" (target: proportional to the change, i.e. not growing by more than {WRITE_TARGET}x):",
        "",
        *_row_table(
            [
                "store",
                f"save p50 @{last} / @10",
                "save target",
                "written per changed byte @10 / @last",
                "bytes target",
            ],
            body,
        ),
    ]


def _bytes(value: float) -> str:
    return f"{value:,.0f}"


def section_lines(results: dict[str, Any]) -> list[str]:
    """The tables of ``latest.md``'s section (and of ``conversation.md``), from this run."""
    rows = results.get("conversation", [])
    if not rows:
        return []
    turns = rows[0]["turns"]
    out = [
        f"## 7. Long conversation ({turns} turns on one thread)",
        "",
        f"Each turn: `load_state`, then 2 messages of {MESSAGE_CHARS} characters, the",
        f"scratchpad's turn counter and every {REWRITE_EVERY}th turn one of {len(FILES)} files",
        f"of {FILE_CHARS} characters rewritten, then `save_state` of the whole state. Figures at",
        f"a turn are over the {WINDOW} turns of the window shown (p50 for times; written bytes:",
        "p50 and mean, the mean including the window's file rewrite). Whole state: the stored",
        "payload's size (`CheckpointInfo.size`). Written: the library's",
        "`agents_persistence.write.size` per save, from a second pass with metrics on. Changed:",
        "the JSON of what the turn added or replaced, mean over the window.",
        "",
    ]
    body = []
    for row in rows:
        for pt in row["points"]:
            low, high = pt["window"]
            written = (
                f"{_bytes(pt['written_p50'])} / {_bytes(pt['written_mean'])}"
                if "written_p50" in pt
                else row["written"]
            )
            body.append(
                [
                    row["label"],
                    f"{pt['turn']} ({low}-{high})",
                    _ms(pt["save_p50"]),
                    _ms(pt["load_p50"]),
                    _bytes(pt["state_bytes"]),
                    written,
                    _bytes(pt["changed_mean"]),
                ]
            )
    out += _row_table(
        [
            "store",
            "turn (window)",
            "save p50 ms",
            "load p50 ms",
            "whole state B",
            "written per save B (p50 / mean)",
            "changed per turn B",
        ],
        body,
    )
    totals = [
        [
            r["label"],
            f"{r['reached']:,} of {r['turns']:,}",
            f"{r['total_s']:.1f}",
            f"{r['load_s']:.1f}",
            f"{r['save_s']:.1f}",
            r["stopped"] or "-",
        ]
        for r in rows
    ]
    out += ["Totals of the timed pass:", ""]
    out += _row_table(["store", "turns saved", "total s", "loads s", "saves s", "stopped"], totals)
    return out


def markdown(results: dict[str, Any]) -> str:
    """``conversation.md``: this section of this run, with the run's own header."""
    env = results["env"]
    mode = "quick" if results["settings"]["quick"] else "full"
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    servers = ", ".join(f"{k}: {v}" for k, v in env["servers"].items())
    lines = [
        "# Long-conversation benchmark",
        "",
        f"Run on {env['date']} with `{env['command']}` ({mode} mode). Library at commit"
        f" {env['commit']}. Machine: {env['cpu']}, {env['cores']} cores, {env['memory']},"
        f" {env['os']}; Python {env['python']}; shared with other work (load average"
        f" {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end of the section), so"
        " compare figures of the same run. One pass per store (no repetition).",
        "",
        f"Versions: {versions}",
        "",
        f"Servers: {servers}",
        "",
    ]
    if results["skipped"]:
        lines += ["Skipped in this run: " + "; ".join(results["skipped"]), ""]
    lines += section_lines(results) + summary_lines(results)
    return "\n".join(lines).rstrip() + "\n"


def write(results: dict[str, Any], out_dir: Path) -> None:
    """Write ``conversation.md`` into ``out_dir``."""
    (out_dir / "conversation.md").write_text(markdown(results))
