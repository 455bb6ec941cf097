"""A client behind a trusted proxy cannot name its own address with ``X_Forwarded_For``.

granian hands a header ``X_Forwarded_For`` to the app under the same WSGI key as
``X-Forwarded-For`` (``HTTP_X_FORWARDED_FOR``), the later of the two winning.
A proxy that passes headers with underscores on (most do; nginx drops them by
default) then lets the client behind it choose the address the service bans and
refuses: it escapes its own ban and gets anyone banned. Behind trusted proxies
the service therefore serves with gunicorn unless ``SERVER`` says otherwise
(gunicorn drops such headers); the real servers are checked here, raw requests
as a proxy would forward them.
"""

from __future__ import annotations

import socket

import pytest

from blacklist_devtools.http import get
from blacklist_service.serving.server import server_name
from tests.service.processes import ServiceFactory

pytestmark = pytest.mark.slow

PROXY = "127.0.8.30"


def forwarded(port: int, path: str, client: str, smuggled: str) -> str:
    """The status line of a request as the proxy forwards it: its own header, then the client's."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: service\r\nConnection: close\r\n"
        f"X-Forwarded-For: {client}\r\nX_Forwarded_For: {smuggled}\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as connection:
        connection.settimeout(10)
        connection.bind((PROXY, 0))
        connection.connect(("127.0.0.1", port))
        connection.sendall(request.encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0].decode()


def test_behind_trusted_proxies_the_default_server_drops_underscore_headers() -> None:
    assert server_name(None, behind_proxies=True) == "gunicorn"
    assert server_name("granian", behind_proxies=True) == "granian"
    assert server_name(None) == "granian"


def test_a_smuggled_underscore_header_neither_escapes_nor_bans(
    service_factory: ServiceFactory,
) -> None:
    service = service_factory(TRUSTED_PROXIES=f"{PROXY}/32")
    attacker, victim = "6.6.6.6", "7.7.7.7"
    assert " 444" in forwarded(service.port, "/blacklisted", attacker, victim)
    through_proxy = {"X-Forwarded-For": victim}
    assert get(f"{service.url}/?n=2", source=PROXY, headers=through_proxy).status == 200
    through_proxy = {"X-Forwarded-For": attacker}
    assert get(f"{service.url}/?n=2", source=PROXY, headers=through_proxy).status == 403
    # Banned, the attacker cannot pass by naming someone else either.
    assert " 403" in forwarded(service.port, "/?n=2", attacker, victim)
