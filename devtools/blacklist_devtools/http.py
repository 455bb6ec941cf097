"""A tiny HTTP/1.1 client that can choose its source address, for tests and benchmarks.

The service bans by the TCP peer address, so tests speak from many loopback
addresses (127.0.0.5, 127.0.1.1 …): any 127.x address can be bound on Linux.
"""

from __future__ import annotations

import http.client
import urllib.parse
from dataclasses import dataclass


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
    connection = http.client.HTTPConnection(
        parsed.hostname or "127.0.0.1",
        parsed.port or 80,
        timeout=timeout,
        source_address=(source, 0) if source else None,
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
