"""A server that does not answer raises BackendUnavailableError in bounded time, never hangs."""

from __future__ import annotations

from typing import Any

import pytest

from agents_persistence import AgentStateSnapshot, BackendUnavailableError


@pytest.mark.timeout(60)
def test_closed_port_raises_backend_unavailable(harness: Any) -> None:
    if not harness.kit.has_server:
        pytest.skip(f"{harness.kit.name} has no server")
    cp = harness.make_unreachable()
    with pytest.raises(BackendUnavailableError):
        cp.save_state("t", AgentStateSnapshot())
    with pytest.raises(BackendUnavailableError):
        cp.load_state("t")
    with pytest.raises(ConnectionError):  # also the builtin meaning
        cp.list_threads()
