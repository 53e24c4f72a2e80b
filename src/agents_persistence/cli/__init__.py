"""The ``agents-persistence`` command (installed by the ``cli`` extra).

Importing `agents_persistence` never imports this package; typer and rich load only when the
command runs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["app", "main"]

_CLI_PACKAGES = ("typer", "click", "rich")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line; ``argv`` defaults to ``sys.argv[1:]``.

    Exits with 0 on success, 1 for a failed operation or a missing thread, 2 for bad usage.
    """
    try:
        from agents_persistence.cli._root import app
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _CLI_PACKAGES:
            raise
        print(
            f"agents-persistence: the command needs {exc.name}:"
            " pip install 'agents-persistence[cli]'",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    app(args=None if argv is None else list(argv), prog_name="agents-persistence")


def __getattr__(name: str) -> Any:
    if name == "app":
        from agents_persistence.cli._root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
