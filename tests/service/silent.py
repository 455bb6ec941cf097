"""A TCP server that accepts connections and never says a word: a hung SMTP or database server."""

from __future__ import annotations

import socket

from blacklist_devtools.lifecycle import Server
from blacklist_devtools.net import free_port


class SilentServer(Server):
    """Listens on a loopback port; the kernel completes every handshake, nobody ever answers."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._socket: socket.socket | None = None

    def start(self) -> None:
        """Listen (never accept: the handshake completes in the backlog)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        self._socket = listener

    def stop(self) -> None:
        """Stop listening; connections waiting in the backlog are reset."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
