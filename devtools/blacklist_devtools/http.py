"""A tiny HTTP/1.1 client that can choose its source address, for tests and benchmarks.

The service bans by the TCP peer address, so tests speak from many addresses:
to a service run alone, from loopback addresses (127.0.0.5, 127.0.1.1 …: any
127.x address can be bound on Linux); to the cluster, from the client network
namespace's addresses (``network.CLIENT_ADDRESSES`` and ``client_address(i)``),
whose sockets are made in that namespace so that they arrive as real clients.
"""

from __future__ import annotations

import http.client
import socket
import urllib.parse
from dataclasses import dataclass

from blacklist_devtools.network import is_client_address, socket_in_client_namespace


@dataclass(frozen=True)
class Response:
    """Status, body text and headers of one answer."""

    status: int
    body: str
    headers: dict[str, str]


def get(
    url: str,
    source: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Response:
    """GET ``url`` from the source address ``source`` (any free port)."""
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    connection: http.client.HTTPConnection
    if source is not None and is_client_address(source):
        connection = ClientNamespaceConnection(host, port, source, timeout)
    else:
        connection = http.client.HTTPConnection(
            host, port, timeout=timeout, source_address=(source, 0) if source else None
        )
    try:
        target = parsed.path or "/"
        if parsed.query:
            target = f"{target}?{parsed.query}"
        connection.request("GET", target, headers=headers or {})
        answer = connection.getresponse()
        body = answer.read().decode(errors="replace")
        return Response(answer.status, body, {k.lower(): v for k, v in answer.getheaders()})
    finally:
        connection.close()


def answers(url: str, source: str | None = None, timeout: float = 2.0) -> bool:
    """Tell whether ``url`` answers 200 (from ``source``), treating no connection as no."""
    try:
        return get(url, source=source, timeout=timeout).status == 200
    except OSError:
        return False


class ClientNamespaceConnection(http.client.HTTPConnection):
    """An HTTP connection from ``source``, whose socket is made in the client network namespace."""

    def __init__(self, host: str, port: int, source: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.source = source
        self.connect_timeout = timeout

    def connect(self) -> None:
        """Connect from ``source`` inside the client namespace."""
        connection = socket_in_client_namespace(socket.AF_INET, socket.SOCK_STREAM)
        try:
            connection.settimeout(self.connect_timeout)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.bind((self.source, 0))
            connection.connect((self.host, self.port))
        except BaseException:
            connection.close()
            raise
        self.sock = connection
