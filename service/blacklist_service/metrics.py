"""Prometheus counters of the service, and the WSGI middleware that counts every answer.

Under the production server every worker is a process, so counters use
prometheus_client's multi-process mode (``PROMETHEUS_MULTIPROC_DIR``, set by
``python -m blacklist_service`` before any worker starts). Gauges of shared
state (the ban list's size, the outbox's backlog) are read from that state when
scraped instead (:mod:`blacklist_service.serving.exposition`), which is exact
whichever worker answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import Counter

REQUESTS = Counter(
    "blacklist_http_requests",
    "HTTP requests answered (refusals included), by route and status",
    ["route", "status"],
)
# Routes counted by name; any other path is "other", so clients cannot grow the label set.
# (/metrics is served on METRICS_PORT, apart: on PORT it is an unknown path.)
ROUTES = frozenset({"/", "/blacklisted", "/healthz", "/readyz"})
REFUSED = Counter("blacklist_refused_requests", "Requests refused with 403 because of a ban")
HITS = Counter("blacklist_blacklisted_hits", "Requests to /blacklisted recorded in the outbox")
RECORD_FAILURES = Counter(
    "blacklist_outbox_record_failures",
    "Requests to /blacklisted whose hit the outbox could not take (banned all the same)",
)
BAN_FAILURES = Counter(
    "blacklist_ban_store_write_failures",
    "Requests to /blacklisted whose ban the ban store could not write (the hit is still recorded)",
)
SET_ASIDE = Counter(
    "blacklist_outbox_set_aside",
    "Outbox database files found unusable at start, renamed aside and replaced",
)
DELIVERIES = Counter(
    "blacklist_deliveries",
    "Outbox deliveries by channel (ledger, mail) and outcome (delivered, failed)",
    ["channel", "outcome"],
)

LIFTS_APPLIED = Counter(
    "blacklist_lifts_applied", "Lifts of the lift table written into this replica's ban store"
)


# The labelled child of each (route, status line) is bound on its first answer and kept,
# so counting an answer is two dict lookups: no label resolution, slicing or tuple per request.
# Children are not bound ahead: /metrics shows only the pairs that happened.
_request_counters: dict[str, dict[str, Any]] = {route: {} for route in (*ROUTES, "other")}


def count_request(route: str, status_line: str) -> None:
    """Count one answer by its WSGI status line (``"200 OK"``); ``route`` is a counted one."""
    by_line = _request_counters[route]
    counter = by_line.get(status_line)
    if counter is None:
        counter = by_line[status_line] = REQUESTS.labels(route, status_line[:3])
    counter.inc()


StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class RequestCounter:
    """WSGI middleware counting every answer by route and status, refusals included."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Pass the request on; count the status it is answered with."""
        route = environ.get("PATH_INFO") or "/"
        if route not in _request_counters:
            route = "other"

        def counting(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            count_request(route, status)
            return start_response(status, headers, *exc_info)

        return self.app(environ, counting)
