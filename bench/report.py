"""Writes ``results/latest.md``, ``results/latest.json`` and the PNG chart from one run's rows."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from bench import conversation, encryption, optional

if TYPE_CHECKING:
    from pathlib import Path

TARGET_RATIO = {"sqlite": 1.3, "postgresql": 1.3, "mariadb": 1.3, "redis": 1.3, "dynamodb": 1.2}
FIRST_PAGE_MS = 10.0


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return [*out, ""]


def _verdict(value: float, limit: float) -> str:
    if value <= limit:
        return "met"
    return f"**missed** by {(value / limit - 1) * 100:.0f}%"


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The summary table (also the one the README carries)."""
    lat = {
        (r["store"], r["mode"], r["op"], r["size"]): r
        for r in results.get("latency", [])
        if r.get("floor", "driver") == "driver" and r.get("ours", "as shipped") == "as shipped"
    }
    lines: list[str] = []
    rows = []
    for store in results["stores"]:
        save = lat.get((store, "sync", "save", "10KB"))
        load = lat.get((store, "sync", "load", "10KB"))
        if not save or not load:
            continue
        limit = TARGET_RATIO.get(store)
        rows.append(
            [
                store,
                f"{_ms(save['ours_p50'])} / {_ms(save['raw_p50'])}",
                f"{save['ratio_p50']:.2f}",
                f"{_ms(load['ours_p50'])} / {_ms(load['raw_p50'])}",
                f"{load['ratio_p50']:.2f}",
                "-"
                if limit is None
                else f"<= {limit}: save {_verdict(save['ratio_p50'], limit)}, "
                f"load {_verdict(load['ratio_p50'], limit)}",
            ]
        )
    if rows:
        lines.append("Latency at 10 KB, sync, p50 in ms (ours / raw driver, same run):")
        lines.append("")
        lines += _table(
            ["store", "save ours / raw", "ratio", "load ours / raw", "ratio", "target"], rows
        )
    rows = []
    for row in results.get("scale", []):
        limit = FIRST_PAGE_MS if row["store"] != "dynamodb" else None
        flat = row["peak_kib_100pct"] / max(row["peak_kib_20pct"], 1)
        rows.append(
            [
                row["store"],
                f"{row['threads']:,}",
                f"{_ms(row['first_page_p50'])} ({_ms(row['first_page_cold_p50'])})",
                "-" if limit is None else _verdict(row["first_page_p50"], limit),
                f"{row['iterate_s']:.2f}",
                f"{row['peak_kib_20pct']:.0f} / {row['peak_kib_100pct']:.0f} ({flat:.2f}x)",
                f"{row['purge_s']:.2f} ({row['purged']:,})",
            ]
        )
    if rows:
        lines.append(
            "Scale (sync): first page of `list_threads` (p50 ms, after ANALYZE; in brackets right"
        )
        lines.append("after the bulk load, before the planner's statistics were refreshed), full")
        lines.append("`iter_threads`,")
        lines.append(
            "tracemalloc peak (traced from 10% on) at 20% / 100% of the iteration, `purge_expired`:"
        )
        lines.append("")
        lines += _table(
            [
                "store",
                "threads",
                "first page ms",
                "< 10 ms",
                "iterate s",
                "peak KiB 20% / 100%",
                "purge s (rows)",
            ],
            rows,
        )
    rows = []
    turns = results.get("turns", [])
    for ours in (r for r in turns if r["saver"].startswith("ours")):
        theirs = next(
            r for r in turns if r["family"] == ours["family"] and not r["saver"].startswith("ours")
        )
        rows.append(
            [
                ours["saver"],
                f"{_ms(ours['turn_p50'])} / {_ms(theirs['turn_p50'])}",
                f"{_ms(ours['turn_p99'])} / {_ms(theirs['turn_p99'])}",
                f"{_ms(ours['total_ms'])} / {_ms(theirs['total_ms'])}",
                f"{ours['ratio_turn_p50']:.2f}",
                f"{ours['bytes_stored']:,} / {theirs['bytes_stored']:,}",
                theirs["saver"],
            ]
        )
    if rows:
        lines.append(
            f"Per-turn job ({results['settings']['turns']} turns, load latest + save new), "
            "ours / LangGraph:"
        )
        lines.append("")
        lines += _table(
            [
                "ours",
                "turn p50 ms",
                "turn p99 ms",
                "total ms",
                "p50 ratio",
                "bytes stored",
                "LangGraph saver",
            ],
            rows,
        )
    return lines + conversation.summary_lines(results) + savers_lines(results)


_SAVER_LABELS = {
    "ours": "ours, keep_last=10",
    "ours, exclusive_writes": "ours, keep_last=10, exclusive_writes",
    "ours, no retention": "ours, no retention",
}


def savers_lines(results: dict[str, Any]) -> list[str]:
    """The per-step table of our LangGraph savers against LangGraph's (README carries it)."""
    rows = results.get("savers", [])
    if not rows:
        return []
    theirs_name = {"sqlite": "SqliteSaver", "postgresql": "PostgresSaver"}
    body = []
    for row in rows:
        name = _SAVER_LABELS.get(row["saver"], row["saver"])
        if row["saver"] == "theirs":
            name = theirs_name.get(row["family"], "theirs")
        cells = [row["family"], name]
        for op in ("get_tuple", "put", "put_writes", "step"):
            cells.append(f"{_ms(row[op + '_p50'])} / {_ms(row[op + '_p99'])}")
        cells.append(f"{row['speedup_step_p50']:.2f}x")
        cells.append(f"{row['bytes_stored']:,} ({row['rows_stored']} rows)")
        body.append(cells)
    steps = rows[0]["steps"]
    lines = [
        f"LangGraph savers, per step of a Deep Agents-like run ({steps} steps; p50 / p99 ms;"
        " speed-up = LangGraph's step p50 / this saver's; bytes of the thread's value columns"
        f" after {steps} steps):",
        "",
    ]
    return lines + _table(
        [
            "database",
            "saver",
            "get_tuple",
            "put",
            "put_writes",
            "step",
            "speed-up",
            "bytes stored",
        ],
        body,
    )


def markdown(results: dict[str, Any]) -> str:
    env = results["env"]
    settings = results["settings"]
    out = ["# Benchmarks", ""]
    out.append(
        f"Run on {env['date']} with `{env['command']}` "
        f"({'quick' if settings['quick'] else 'full'} mode, {env['duration_s']:.0f} s)."
    )
    out.append("")
    out.append(
        f"Machine: {env['cpu']}, {env['cores']} cores, {env['memory']}, {env['os']}; "
        f"Python {env['python']}. Library at commit {env['commit']}. "
        "The machine is shared and noisy: compare ratios measured in the same run, not "
        "absolute figures across runs."
    )
    out.append("")
    out.append(
        "Versions: " + ", ".join(f"{name} {version}" for name, version in env["versions"].items())
    )
    out.append("")
    out.append("Servers: " + ", ".join(f"{k}: {v}" for k, v in env["servers"].items()))
    out.append("")
    out.append(
        f"Method: every figure is the median over {settings['reps']} runs "
        "(per-turn job: "
        f"{settings['turn_reps']} runs; throughput: {settings['throughput_reps']}; long "
        "conversation: one pass, p50 over 10-turn windows); "
        "ours and the raw driver alternate operation by operation within a run, and each ratio "
        "is the median of the per-run ratios. Latencies are in milliseconds "
        "(`time.perf_counter_ns` around each call)."
    )
    out.append("")
    if results["skipped"]:
        out.append("Skipped: " + "; ".join(results["skipped"]))
        out.append("")
    out += ["## Summary", ""]
    out += summary_lines(results)
    out += [
        "Every figure in this file comes from the run named at the top. Analysis written by",
        "hand, dated and quoting the runs it examined, is kept apart in `bench/NOTES.md`.",
        "",
    ]
    out += _latency_section(results)
    out += _throughput_section(results)
    out += _scale_section(results)
    out += _turns_section(results)
    out += _savers_section(results)
    out += _telemetry_section(results)
    out += _profile_section(results)
    out += conversation.section_lines(results)
    out += _encryption_section(results)
    return "\n".join(out).rstrip() + "\n"


def _encryption_section(results: dict[str, Any]) -> list[str]:
    table = encryption.summary_lines(results)
    if not table:
        return []
    return [
        "## Encryption at rest",
        "",
        "Save (a new thread, written whole) and load, in clear and with `keys=` (a local",
        "keyring), p50 ms, median over runs (`encryption.md` has the same table).",
        "",
        *table,
        "",
    ]


def _latency_section(results: dict[str, Any]) -> list[str]:
    rows = results.get("latency", [])
    if not rows:
        return []
    out = [
        "## 1-2. Latency per operation, ours against the raw driver",
        "",
        "The raw floor does the same work by hand: pydantic encode, one atomic upsert that bumps",
        "the version (resets it past expiry) and returns it; one select of the live record and",
        "pydantic decode. See `bench/raw.py` for each driver's statements.",
        "",
    ]
    body = [
        [
            r["store"],
            r["mode"],
            r["op"],
            r["size"],
            r.get("ours", "as shipped"),
            r.get("floor", "driver"),
            _ms(r["ours_p50"]),
            _ms(r["ours_p99"]),
            _ms(r["raw_p50"]),
            _ms(r["raw_p99"]),
            f"{r['ratio_p50']:.2f}",
            f"{r['ratio_p99']:.2f}",
        ]
        for r in rows
    ]
    out += _table(
        [
            "store",
            "mode",
            "op",
            "size",
            "ours",
            "floor",
            "ours p50",
            "ours p99",
            "raw p50",
            "raw p99",
            "ratio p50",
            "ratio p99",
        ],
        body,
    )
    return out


def _telemetry_section(results: dict[str, Any]) -> list[str]:
    rows = results.get("telemetry", [])
    if not rows:
        return []
    cpu = {(r["store"], r["op"], r["mode"]): r["cpu_us"] for r in rows}
    keys = sorted({(r["store"], r["op"]) for r in rows}, key=lambda k: (k[0], k[1] != "save_state"))
    body = []
    for store, op in keys:
        off = cpu[(store, op, "off")]
        cells = [store, op, f"{off:.1f}"]
        for mode in ("api", "sdk", "batch"):
            extra = cpu[(store, op, mode)] - off
            cells.append(f"{extra:+.1f} ({extra / off * 100:+.0f}%)")
        body.append(cells)
    return [
        "## Tracing overhead (10 KB state, CPU µs per call, tracing on against off)",
        "",
        "off: telemetry disabled (the path without opentelemetry installed); api: enabled with",
        "OpenTelemetry's no-op API only; sdk: the SDK sampling every span into a simple",
        "processor whose exporter drops it, metrics aggregated in memory; batch: the same with a",
        "batch span processor. Wall-clock figures: `telemetry.md` beside this file.",
        "",
        *_table(["store", "operation", "off", "api", "sdk", "batch"], body),
    ]


def _throughput_section(results: dict[str, Any]) -> list[str]:
    rows = [r for r in results.get("throughput", []) if "pool" not in r]
    if not rows:
        return _fairness_table(results)
    out = [
        "## 3. Throughput (10 KB, each worker alternates save and load on its own threads)",
        "",
    ]
    body = [
        [
            r["store"],
            r["mode"],
            str(r["workers"]),
            f"{r['ops_s']:.0f}",
            _ms(r["save_p50"]),
            _ms(r["save_p99"]),
            _ms(r["load_p50"]),
            _ms(r["load_p99"]),
        ]
        for r in rows
    ]
    out += _table(
        ["store", "mode", "workers", "ops/s", "save p50", "save p99", "load p50", "load p99"], body
    )
    return out + _fairness_table(results)


def _fairness_table(results: dict[str, Any]) -> list[str]:
    rows = [r for r in results.get("throughput", []) if r.get("pool") == "shipped"]
    if not rows:
        return []
    out = [
        "",
        "### 50 workers on the pool each store ships with (fair waiting)",
        "",
        "Every call of every run (not medians over runs). `wait`: from the call's start to the"
        " SQL pool's checkout (SQL only).",
        "",
    ]

    def cell(r: dict[str, Any], key: str) -> str:
        return _ms(r[key]) if key in r else "-"

    body = [
        [
            r["store"],
            r["mode"],
            f"{r['ops_s']:.0f}",
            *(
                cell(r, f"{op}_{q}")
                for op in ("save", "load", "wait")
                for q in ("p50", "p99", "max")
            ),
            str(r.get("errors", 0)),
        ]
        for r in rows
    ]
    heads = [f"{op} {q}" for op in ("save", "load", "wait") for q in ("p50", "p99", "max")]
    out += _table(["store", "mode", "ops/s", *heads, "errors"], body)
    kinds = [
        f"- {r['store']} {r['mode']}: {count} x {kind}"
        for r in rows
        for kind, count in r.get("error_kinds", {}).items()
    ]
    return out + ([*kinds, ""] if kinds else [])


def _scale_section(results: dict[str, Any]) -> list[str]:
    rows = results.get("scale", [])
    if not rows:
        return []
    out = [
        "## 4. Scale",
        "",
        "SQL: bulk-inserted behind the library, rows exactly as the store writes them; Redis and",
        "DynamoDB: saved through our own async store, 32 at a time. 10% are expired (SQL:",
        "`expires_at` in the past; Redis and DynamoDB: saved with a clock two days back and a",
        "TTL of one day, so their records are still there). Peak memory is tracemalloc's peak",
        "(Python allocations) during a full `iter_threads(page_size=100)`, traced from 10% of",
        "the threads on and read at 20% and at 100%.",
        "",
    ]
    body = [
        [
            r["store"],
            f"{r['threads']:,}",
            f"{r['seed_s']:.1f}",
            _ms(r["first_page_cold_p50"]),
            _ms(r["first_page_p50"]),
            _ms(r["first_page_p99"]),
            f"{r['iterate_s']:.2f}",
            f"{r['iterated']:,}",
            f"{r['peak_kib_20pct']:.0f}",
            f"{r['peak_kib_100pct']:.0f}",
            f"{r['purge_s']:.2f}",
            f"{r['purged']:,}",
        ]
        for r in rows
    ]
    return out + _table(
        [
            "store",
            "threads",
            "seed s",
            "first page p50 ms, cold stats",
            "first page p50 ms",
            "p99 ms",
            "iterate s",
            "iterated",
            "peak KiB @20%",
            "peak KiB @100%",
            "purge s",
            "purged",
        ],
        body,
    )


def _turns_section(results: dict[str, Any]) -> list[str]:
    rows = results.get("turns", [])
    if not rows:
        return []
    out = [
        "## 5. Per-turn job against LangGraph's savers",
        "",
        "Bytes stored after the run: the thread's stored column sizes (`pg_column_size` on",
        "PostgreSQL, after TOAST compression; `length` on SQLite; serialized bytes in memory).",
        "LangGraph keeps every checkpoint of the thread; our stores keep the latest state.",
        "",
    ]
    body = [
        [
            r["family"],
            r["saver"],
            _ms(r["turn_p50"]),
            _ms(r["turn_p99"]),
            _ms(r["total_ms"]),
            f"{r['bytes_stored']:,}",
            f"{r['ratio_turn_p50']:.2f}" if "ratio_turn_p50" in r else "",
            f"{r['ratio_total_ms']:.2f}" if "ratio_total_ms" in r else "",
        ]
        for r in rows
    ]
    return out + _table(
        [
            "database",
            "saver",
            "turn p50 ms",
            "turn p99 ms",
            "total ms",
            "bytes stored",
            "ours/theirs p50",
            "ours/theirs total",
        ],
        body,
    )


def _savers_section(results: dict[str, Any]) -> list[str]:
    if not results.get("savers"):
        return []
    return [
        "## 6. LangGraph savers, one operation at a time",
        "",
        "Each step of one thread: `get_tuple` (the latest checkpoint), `put` (the next one, with",
        "LangChain messages growing by two a step, todos, deepagents file records), `put_writes`",
        "(the next task's writes). Ours and LangGraph's alternate run by run on the same",
        "database; p50 and p99 are over every measured step of every run. Bytes stored: the",
        "summed sizes of the thread's value columns (checkpoint, metadata, values, writes; keys",
        "left out) after the last run: `pg_column_size` on PostgreSQL (after TOAST",
        "compression), `length` on SQLite. Ours keeps the newest 10 checkpoints",
        "(`keep_last=10`); LangGraph's savers have no retention and keep all of them.",
        "",
        *savers_lines(results),
    ]


def _profile_section(results: dict[str, Any]) -> list[str]:
    rows = list(results.get("profile", []))
    rows += [r["first_page_profile"] for r in results.get("scale", []) if "first_page_profile" in r]
    if not rows:
        return []
    out = [
        "## 6. Profiles (pyinstrument)",
        "",
        "10 KB save + load pairs (`<store>`, `<store>-async`) and first pages of `list_threads`",
        "at the scale of section 4 (`<store>-list`). Share of sampled time by layer: `library` is",
        "this package's own code, `I/O wait` socket waits, `driver` the database client",
        "including its C calls. Full trees in `bench/results/profile-<name>.txt`.",
        "",
    ]
    layers = [
        "library",
        "sqlalchemy",
        "pydantic",
        "redis-om",
        "pynamodb",
        "driver",
        "I/O wait",
        "asyncio",
    ]
    body = [
        [r["store"]]
        + [f"{r['layers'].get(name, 0) * 100:.0f}%" for name in layers]
        + [f"{sum(v for k, v in r['layers'].items() if k not in layers) * 100:.0f}%"]
        for r in rows
    ]
    out += _table(["store", *layers, "other"], body)
    out.append(
        "Calls out of the library that take the most time (share of the profile, including"
        " everything below them):"
    )
    out.append("")
    for r in rows:
        calls = ", ".join(
            f"`{t['function']}` {t['share'] * 100:.0f}%" for t in r["top"][:6] if t["share"] >= 0.01
        )
        out.append(f"- {r['store']}: {calls}")
    out.append("")
    return out


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    lat = [
        r
        for r in results.get("latency", [])
        if r.get("floor", "driver") == "driver" and r.get("ours", "as shipped") == "as shipped"
    ]
    stores = [s for s in results["stores"] if any(r["store"] == s for r in lat)]

    ax = axes[0][0]
    width = 0.2
    for k, (op, side) in enumerate(
        [("save", "ours"), ("save", "raw"), ("load", "ours"), ("load", "raw")]
    ):
        values = []
        for store in stores:
            row = next(
                (
                    r
                    for r in lat
                    if r["store"] == store
                    and r["mode"] == "sync"
                    and r["op"] == op
                    and r["size"] == "10KB"
                ),
                None,
            )
            values.append(row[f"{side}_p50"] if row else 0)
        ax.bar(
            [i + (k - 1.5) * width for i in range(len(stores))], values, width, label=f"{op} {side}"
        )
    ax.set_xticks(range(len(stores)), stores)
    ax.set_yscale("log")
    ax.set_ylabel("p50 ms (log)")
    ax.set_title("Latency at 10 KB, sync: ours vs raw driver")
    ax.legend(fontsize=8)

    ax = axes[0][1]
    colors = {store: f"C{i}" for i, store in enumerate(results["stores"])}
    for store in stores:
        for op, style in (("save", "-"), ("load", "--")):
            pts = [r for r in lat if r["store"] == store and r["mode"] == "sync" and r["op"] == op]
            if pts:
                ax.plot(
                    [_size_bytes(r["size"]) for r in pts],
                    [r["ratio_p50"] for r in pts],
                    style,
                    marker="o",
                    color=colors[store],
                    label=f"{store} {op}",
                )
    ax.axhline(1.3, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_xticks([1e3, 1e4, 1e5, 1e6], ["1 KB", "10 KB", "100 KB", "1 MB"])
    ax.set_ylabel("ours / raw (p50)")
    ax.set_title("Overhead over the raw driver by snapshot size, sync")
    ax.legend(fontsize=7, ncol=2)

    ax = axes[1][0]
    for row_store in stores:
        for mode, style in (("sync", "-"), ("async", "--")):
            pts = [
                r
                for r in results.get("throughput", [])
                if r["store"] == row_store and r["mode"] == mode and "pool" not in r
            ]
            if pts:
                ax.plot(
                    [r["workers"] for r in pts],
                    [r["ops_s"] for r in pts],
                    style,
                    marker="o",
                    color=colors[row_store],
                    label=f"{row_store} {mode}",
                )
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 4, 16], ["1", "4", "16"])
    ax.set_yscale("log")
    ax.set_xlabel("workers")
    ax.set_ylabel("ops/s (log)")
    ax.set_title("Throughput, 10 KB save+load")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)

    ax = axes[1][1]
    turns = results.get("turns", [])
    labels = [r["saver"] for r in turns]
    ax.barh(
        range(len(turns)),
        [r["turn_p50"] for r in turns],
        color=["tab:blue" if r["saver"].startswith("ours") else "tab:orange" for r in turns],
    )
    ax.set_yticks(range(len(turns)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("per-turn p50 ms")
    ax.set_title("Per-turn job (load latest + save new) vs LangGraph savers")

    env = results["env"]
    fig.suptitle(
        f"agents-persistence benchmarks ({'quick' if results['settings']['quick'] else 'full'}), "
        f"{env['date']}\n{env['cpu']}, {env['cores']} cores, Python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if k in _CHART_VERSIONS),
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _size_bytes(label: str) -> float:
    number = float(label[:-2])
    return number * (1e6 if label.endswith("MB") else 1e3)


_CHART_VERSIONS = ("agents-persistence", "sqlalchemy", "pydantic", "langgraph")


def write(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``latest.json``, ``latest.md`` and, with matplotlib, ``latest.png``; return them.

    Without matplotlib the chart is skipped (and the skip recorded), and a chart left by an
    earlier run is removed, so that nothing in ``out_dir`` named latest describes another run.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    reason = optional.missing("matplotlib")
    results["skipped"] = [s for s in results["skipped"] if not s.startswith("chart (")]
    if reason is not None:
        print(f"SKIP chart: {reason}")
        results["skipped"].append(f"chart ({reason})")
    paths = [out_dir / "latest.json", out_dir / "latest.md", out_dir / "latest.png"]
    paths[0].write_text(json.dumps(results, indent=1, default=str) + "\n")
    paths[1].write_text(markdown(results))
    if reason is not None:
        paths[2].unlink(missing_ok=True)
        return paths[:2]
    chart(results, paths[2])
    return paths
