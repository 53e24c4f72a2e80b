"""What a save of a long conversation costs on DynamoDB, early and late, in both table formats.

One thread, ``--turns`` turns of `bench.turns` (two messages appended, the scratchpad's turn
counter, a todo's status, every 5th turn a rewritten 2 KB file). Each turn saves the state; the
requests are recorded from botocore's events, and the figures are medians over a window of
turns around turn 10 and around the last turn: latency, requests, items written and bytes
sent in written items. moto runs as a server in a process of its own
(``python -m moto.server``): latencies are moto's, the counts are what DynamoDB would receive.

    python -m bench.dynamodb_turns --turns 300
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import uuid
from statistics import median
from typing import Any

from agents_persistence import DynamoDBCheckpointer
from bench.turns import apply_turn, initial_state

_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _written(params: dict[str, Any], operation: str) -> tuple[int, int]:
    """Items and bytes of the items a write request puts."""
    items: list[dict[str, Any]] = []
    if operation == "PutItem":
        items = [params["Item"]]
    elif operation == "BatchWriteItem":
        for requests in params["RequestItems"].values():
            items += [r["PutRequest"]["Item"] for r in requests if "PutRequest" in r]
    size = 0
    for item in items:
        for name, value in item.items():
            (raw,) = value.values()
            size += len(name) + (len(raw) if isinstance(raw, bytes) else len(str(raw).encode()))
    return len(items), size


def run_format(endpoint: str, table_format: str, turns: int) -> list[dict[str, float]]:
    table = f"bench-{table_format}-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {
        "region": "us-east-1",
        "endpoint_url": endpoint,
        "call_timeout": 30,
        **_CREDENTIALS,
    }
    if table_format == "single-item":
        options["max_state_bytes"] = 2_000_000
    rows: list[dict[str, float]] = []
    with DynamoDBCheckpointer(table, namespace="bench", **options) as cp:
        cp.create_table(table_format=table_format)
        client = cp._table.connection.connection.client
        calls: list[tuple[str, dict[str, Any]]] = []

        def hook(params: dict[str, Any], model: Any, **_: Any) -> None:
            calls.append((model.name, params))

        client.meta.events.register("provide-client-params.dynamodb.*", hook)
        state = initial_state()
        for turn in range(1, turns + 1):
            apply_turn(state, turn)
            calls.clear()
            started = time.perf_counter()
            try:
                cp.save_state("long", state)
            except Exception as exc:  # the single-item format stops at its item limit
                print(f"{table_format}: turn {turn}: {type(exc).__name__}", file=sys.stderr)
                break
            elapsed = time.perf_counter() - started
            written = [_written(params, op) for op, params in calls]
            rows.append(
                {
                    "turn": turn,
                    "ms": elapsed * 1000,
                    "requests": len(calls),
                    "items": sum(n for n, _ in written),
                    "bytes": sum(b for _, b in written),
                    "state": len(state.model_dump_json()),
                }
            )
        cp.delete_table()
    return rows


def _window(rows: list[dict[str, float]], around: int, width: int = 5) -> dict[str, float]:
    chosen = [r for r in rows if around - width < r["turn"] <= around + width]
    return {key: median(r[key] for r in chosen) for key in ("ms", "requests", "items", "bytes")} | {
        "state": max(r["state"] for r in chosen)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    args = parser.parse_args()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        report = {}
        for table_format in ("pieces", "single-item"):
            rows = run_format(endpoint, table_format, args.turns)
            last = int(rows[-1]["turn"])
            report[table_format] = {
                "turn 10": _window(rows, 10),
                f"turn {last}": _window(rows, last - 5),
            }
        print(json.dumps(report, indent=2))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
