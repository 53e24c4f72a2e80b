"""One half of the Deep Agents resume test, in a process of its own.

``python -m tests.langgraph._deep_agent_run start|resume SAVER URL THREAD`` opens the saver
``SAVER`` (``module:Class``, made with ``Class.from_url(URL)`` and used as a context manager),
builds the scripted deep agent on it, and either starts the thread (``start``: runs to the
interrupt) or answers the interrupt the store holds and runs to the end (``resume``). It prints
one JSON object: the interrupts the thread waited on when the process began, and those the run
stopped at (id and value).
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

from agents_persistence.cli import _deep_agent


def _interrupts(found: list[Any]) -> list[dict[str, Any]]:
    return [{"id": interrupt.id, "value": interrupt.value} for interrupt in found]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=["start", "resume"])
    parser.add_argument("saver")
    parser.add_argument("url")
    parser.add_argument("thread")
    args = parser.parse_args()
    module, _, name = args.saver.partition(":")
    saver_class = getattr(importlib.import_module(module), name)
    with saver_class.from_url(args.url) as saver:
        agent = _deep_agent.build_agent(saver)
        waiting = _deep_agent.pending_interrupts(agent, args.thread)
        if args.phase == "start":
            stopped = _deep_agent.start(agent, args.thread)
        else:
            stopped = _deep_agent.resume(agent, args.thread)
    print(json.dumps({"waiting": _interrupts(waiting), "stopped": _interrupts(stopped)}))


if __name__ == "__main__":
    main()
