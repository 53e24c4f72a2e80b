"""How the running command was invoked, so that follow-up hints can be pasted as printed.

``make demo`` runs ``.venv/bin/agents-persistence``, which is not on ``PATH``: a hint saying
``agents-persistence threads show demo`` would fail there. The hint repeats what was typed
instead: the bare name only when ``PATH`` finds this very program, else a path that works from
the current directory, or ``python -m agents_persistence`` with this interpreter.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys

__all__ = ["command_prefix"]

_NAME = "agents-persistence"


def _shown(path: str, name: str) -> str:
    """``name`` if ``PATH`` finds ``path`` under it, else ``path`` as typed from here."""
    absolute = os.path.abspath(path)
    found = shutil.which(name)
    # Paths are compared as written, not resolved: a virtualenv's python is a symlink to the
    # system one, yet only the virtualenv's sees the installed packages.
    if found is not None and os.path.abspath(found) == absolute:
        return name
    relative = os.path.relpath(absolute)
    if relative.startswith(os.pardir):
        return shlex.quote(absolute)
    # "./x" rather than "x": a bare name would be looked up on PATH.
    return shlex.quote(relative if os.sep in relative else os.curdir + os.sep + relative)


def command_prefix(argv0: str | None = None) -> str:
    """The command line that runs this program again from the current directory.

    Args:
        argv0: The program as invoked; ``sys.argv[0]`` by default.
    """
    program = sys.argv[0] if argv0 is None else argv0
    if os.path.basename(program).startswith(_NAME):
        return _shown(program, _NAME)
    # python -m agents_persistence, or main() called from another program.
    return f"{_shown(sys.executable, 'python')} -m agents_persistence"
