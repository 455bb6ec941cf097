"""Ban enforcement at the WSGI edge: every request from a banned address is refused with 403.

It wraps the Flask app rather than hooking into it, so a refusal costs a ban
store lookup (:meth:`BanStore.banned`) and no request context, and every route
is covered, including 404s.
The probes (``/healthz``, ``/readyz``) pass: the kubelet probes from the
node's address, and a ban must not get a replica restarted. The allowlist wins:
an allowlisted address is served even inside a banned prefix. The client
address is the TCP peer, or what trusted proxies report (``TRUSTED_PROXIES``);
it is left in the WSGI environ for the views. A trusted proxy is never taken for
the client: when the proxies' ``X-Forwarded-For`` runs out on one of them (a
missing, empty or blank header), the client is ``unknown``, recorded and never
banned, as for an entry that is no address; banning the proxy would lock out
everyone behind it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from blacklist_contract.prefixes import parse_address
from blacklist_service.address_keys import address_key, normalise
from blacklist_service.bans.store import BanStore
from blacklist_service.config import Settings
from blacklist_service.http.client_address import proxied_client
from blacklist_service.metrics import REFUSED, StartResponse, WsgiApp

CLIENT_ADDRESS = "blacklist_service.client_address"
EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})
REFUSAL = b"Forbidden: this address is banned.\n"
REFUSAL_HEADERS = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Content-Length", str(len(REFUSAL))),
]


class BanGuard:
    """WSGI middleware that answers 403 to banned clients before the app sees them."""

    def __init__(self, app: WsgiApp, settings: Settings, bans: BanStore) -> None:
        self.app = app
        self.trusted_proxies = settings.trusted_proxies
        self.allowlist = settings.allowlist
        self.bans = bans

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Refuse a banned client; otherwise pass the request on with its client address."""
        peer = environ.get("REMOTE_ADDR") or ""
        if self.trusted_proxies:
            address = proxied_client(
                peer, environ.get("HTTP_X_FORWARDED_FOR"), self.trusted_proxies
            )
        else:  # what proxied_client answers without proxies, for one cached lookup
            address = normalise(peer) or peer
        environ[CLIENT_ADDRESS] = address
        if environ.get("PATH_INFO") not in EXEMPT_PATHS:
            parsed = parse_address(address)
            if (
                parsed is not None
                and self.bans.banned(*parsed)
                and address_key(address) not in self.allowlist
            ):
                REFUSED.inc()
                start_response("403 FORBIDDEN", REFUSAL_HEADERS)
                return [REFUSAL]
        return self.app(environ, start_response)
