"""The client address of a request: the TCP peer, or what trusted proxies say it is.

``X-Forwarded-For`` is believed only from the proxies in ``TRUSTED_PROXIES``
(docs/configuration.md); the ban guard (:mod:`.guard`) calls
:func:`proxied_client` once per request and leaves the answer in the WSGI
environ for the views and the log lines.
"""

from __future__ import annotations

import re

from blacklist_service.address_keys import NetworkSet, address_key, normalise

# What a trusted proxy reported when it was no address (``unknown``, garbage): a
# client we cannot name, so never banned, and never confused with the proxy itself.
UNKNOWN_CLIENT = "unknown"
_IPV4_WITH_PORT = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$")
_BRACKETED = re.compile(r"^\[([^\]]+)\](?::\d{1,5})?$")


def forwarded_hop(text: str) -> str | None:
    """The address of one ``X-Forwarded-For`` entry, or None if it names none.

    Proxies write ``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``,
    ``[2001:db8::1]:443``, sometimes quoted; the port is not part of the client.
    """
    entry = text.strip().strip('"').strip()
    for pattern in (_IPV4_WITH_PORT, _BRACKETED):
        matched = pattern.match(entry)
        if matched:
            entry = matched.group(1)
            break
    return normalise(entry)


def client_address(peer: str, forwarded_for: str | None, trusted: NetworkSet) -> str:
    """The address a request comes from: the TCP peer, or what trusted proxies say it is.

    ``X-Forwarded-For`` is read right to left, the order in which proxies
    appended to it: each hop is believed only while the hop that reported it
    is a trusted proxy, so a client cannot forge its way past the first
    untrusted hop. An entry a trusted proxy reports that is no address makes
    the client :data:`UNKNOWN_CLIENT`: banning the proxy instead would let the
    real client go and lock out everyone behind that proxy.
    """
    current = normalise(peer) or peer
    if not forwarded_for or not trusted:
        return current
    hops = [hop for hop in forwarded_for.split(",") if hop.strip()]
    while hops:
        current_key = address_key(current)
        if current_key is None or current_key not in trusted:
            return current
        reported = forwarded_hop(hops.pop())
        if reported is None:
            return UNKNOWN_CLIENT
        current = reported
    return current


def proxied_client(peer: str, forwarded_for: str | None, trusted: NetworkSet) -> str:
    """The client behind trusted proxies; :data:`UNKNOWN_CLIENT` when the proxies name none.

    :func:`client_address` walks the header
    while the hop is trusted; when the header ends first (none, empty,
    ``" , "``) the last hop is a trusted proxy, which stands for every client
    behind it and so is no client of its own.
    """
    address = client_address(peer, forwarded_for, trusted)
    key = address_key(address)
    return UNKNOWN_CLIENT if key is not None and key in trusted else address
