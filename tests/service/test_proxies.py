"""A trusted proxy is never taken for the client it forwards (issue 19, item 12).

A trusted proxy whose ``X-Forwarded-For`` is missing, empty or only blanks
(``" , "``) names no client; one ``/blacklisted`` through it must not ban the
proxy, and with it everyone behind it. The client is ``unknown``, recorded and
never banned, as for a forwarded entry that is no address.
"""

from __future__ import annotations

import pytest

from blacklist_devtools.http import get
from blacklist_service.address_keys import NetworkSet
from blacklist_service.http.client_address import UNKNOWN_CLIENT, proxied_client
from tests.service.processes import ServiceFactory

PROXIES = NetworkSet.parse("10.0.0.0/24")


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("10.0.0.1", None, UNKNOWN_CLIENT),
        ("10.0.0.1", "", UNKNOWN_CLIENT),
        ("10.0.0.1", " , ", UNKNOWN_CLIENT),
        ("10.0.0.1", ",", UNKNOWN_CLIENT),
        # The header runs out on a second trusted proxy that itself reported nobody.
        ("10.0.0.1", "10.0.0.2", UNKNOWN_CLIENT),
        ("10.0.0.1", " , 10.0.0.2 , ", UNKNOWN_CLIENT),
        ("10.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("10.0.0.1", "203.0.113.9, 10.0.0.2", "203.0.113.9"),
        ("10.0.0.1", "203.0.113.9 , , ", "203.0.113.9"),
        # An untrusted peer is the client, whatever it claims.
        ("192.0.2.1", None, "192.0.2.1"),
        ("192.0.2.1", "", "192.0.2.1"),
        ("192.0.2.1", "10.0.0.2", "192.0.2.1"),
    ],
)
def test_a_trusted_proxy_is_never_the_client(
    peer: str, forwarded: str | None, expected: str
) -> None:
    assert proxied_client(peer, forwarded, PROXIES) == expected


@pytest.mark.slow
@pytest.mark.parametrize("header", [None, "", " , "])
def test_a_hit_through_a_proxy_that_names_no_client_bans_nobody(
    service_factory: ServiceFactory, header: str | None
) -> None:
    proxy, behind = "127.0.7.1", "203.0.113.20"
    service = service_factory(TRUSTED_PROXIES=proxy)
    headers = {} if header is None else {"X-Forwarded-For": header}
    assert get(f"{service.url}/blacklisted", source=proxy, headers=headers).status == 444
    # Neither the proxy nor any client behind it is banned...
    assert get(f"{service.url}/?n=2", source=proxy, headers=headers).status == 200
    assert get(f"{service.url}/?n=2", source=proxy).status == 200
    forwarded = {"X-Forwarded-For": behind}
    assert get(f"{service.url}/?n=2", source=proxy, headers=forwarded).status == 200
    # ...and a client the proxy does name is banned as before.
    assert get(f"{service.url}/blacklisted", source=proxy, headers=forwarded).status == 444
    assert get(f"{service.url}/?n=2", source=proxy, headers=forwarded).status == 403
    assert get(f"{service.url}/?n=2", source=proxy).status == 200
