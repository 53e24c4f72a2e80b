"""A TCP socket that accepts connections and never answers: a hung server, minus the server."""

from __future__ import annotations

import contextlib
import socket
import threading

from ._base import HOST


class Blackhole:
    """A TCP server that accepts every connection and never reads or answers.

    Clients connect at once, then wait on their first reply until their own timeout. Use as
    a context manager; `close` drops every held connection.
    """

    def __init__(self, port: int | None = None) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, port or 0))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="blackhole")
        self._thread.start()

    @property
    def accepted(self) -> int:
        """How many connections were accepted so far."""
        return len(self.held)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)
        for conn in self.held:
            conn.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
