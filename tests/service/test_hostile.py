"""Hostile input at the HTTP edge: oversized requests and fuzzed headers never crash the service.

Every answer is a 2xx, 403 or another 4xx with the server still serving
afterwards; a 5xx or a dropped connection fails the test.
"""

from __future__ import annotations

import http.client
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blacklist_devtools.http import get
from tests.service.processes import ServiceFactory, ServiceProcess

pytestmark = pytest.mark.slow

HEADER_NAME = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~",
    min_size=1,
    max_size=40,
)
HEADER_VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=200
)


def still_serving(service: ServiceProcess) -> bool:
    return get(f"{service.url}/?n=3", source="127.0.8.200").body == "9.0"


def raw_request(service: ServiceProcess, request: bytes, source: str) -> int:
    """Send raw bytes, return the status code of the answer."""
    with socket.create_connection(
        ("127.0.0.1", service.port), timeout=10, source_address=(source, 0)
    ) as connection:
        connection.sendall(request)
        answer = connection.makefile("rb").readline()
    return int(answer.split()[1])


def request(line: bytes, *headers: bytes) -> bytes:
    """A raw HTTP/1.1 request: the request line, a Host header, then ``headers``."""
    return line + b"\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


MALFORMED = {
    "a 20 kB query string": request(b"GET /?n=" + b"1" * 20_000 + b" HTTP/1.1"),
    "a 100 kB header": request(b"GET /?n=2 HTTP/1.1", b"X-Big: " + b"a" * 100_000),
    "300 headers": request(b"GET /?n=2 HTTP/1.1", *(b"X-%d: 1" % i for i in range(300))),
    "a malformed request line": b"GET\r\n\r\n",
    "an unknown method": request(b"BREW /?n=2 HTTP/1.1"),
    "a header without a colon": request(b"GET /?n=2 HTTP/1.1", b"nonsense"),
    "a 10 kB forwarded-for": request(
        b"GET /?n=2 HTTP/1.1", b"X-Forwarded-For: " + b"1.2.3.4, " * 1000
    ),
}


@pytest.mark.parametrize(("description", "request_bytes"), list(MALFORMED.items()))
def test_oversized_and_malformed_requests_get_a_4xx(
    service_factory: ServiceFactory, description: str, request_bytes: bytes
) -> None:
    service = service_factory()
    status = raw_request(service, request_bytes, source="127.0.8.1")
    assert 400 <= status < 500 or status == 200, f"{description}: {status}"
    assert still_serving(service)


def test_fuzzed_headers_never_crash_the_service(service_factory: ServiceFactory) -> None:
    service = service_factory()

    @settings(
        max_examples=80,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(headers=st.dictionaries(HEADER_NAME, HEADER_VALUE, max_size=8))
    def check(headers: dict[str, str]) -> None:
        connection = http.client.HTTPConnection(
            "127.0.0.1", service.port, timeout=10, source_address=("127.0.8.2", 0)
        )
        try:
            connection.request("GET", "/?n=2", headers=headers)
            answer = connection.getresponse()
            body = answer.read().decode(errors="replace")
        finally:
            connection.close()
        assert answer.status < 500, (headers, answer.status, body)
        if answer.status == 200:
            assert body == "4.0"

    check()
    assert still_serving(service)


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_bans_the_peer(
    service_factory: ServiceFactory,
) -> None:
    service = service_factory()  # no trusted proxies
    attacker, victim = "127.0.8.10", "127.0.8.11"
    answer = get(f"{service.url}/blacklisted", source=attacker, headers={"X-Forwarded-For": victim})
    assert answer.status == 444
    assert get(f"{service.url}/?n=2", source=victim).status == 200
    assert get(f"{service.url}/?n=2", source=attacker).status == 403


@pytest.mark.parametrize("reported", ["6.6.6.6:5678", "unknown", "[2001:db8::6]:443", "junk"])
def test_what_a_trusted_proxy_reports_never_bans_the_proxy(
    service_factory: ServiceFactory, reported: str
) -> None:
    proxy = "127.0.8.20"
    service = service_factory(TRUSTED_PROXIES="127.0.8.20/32")
    hit = get(f"{service.url}/blacklisted", source=proxy, headers={"X-Forwarded-For": reported})
    assert hit.status == 444
    # The proxy itself, and every other client behind it, still pass.
    assert get(f"{service.url}/?n=2", source=proxy).status == 200
    other = {"X-Forwarded-For": "7.7.7.7"}
    assert get(f"{service.url}/?n=2", source=proxy, headers=other).status == 200
    if reported == "6.6.6.6:5678":
        # The client behind the proxy is the one banned, whatever port it came from.
        banned = {"X-Forwarded-For": "6.6.6.6"}
        assert get(f"{service.url}/?n=2", source=proxy, headers=banned).status == 403
