"""Prometheus metrics of the service, and the collector of state read at scrape time.

Under the production server every worker is a process, so counters use
prometheus_client's multi-process mode (``PROMETHEUS_MULTIPROC_DIR``, set by
``python -m blacklist_service`` before any worker starts). Gauges of shared
state (the ban list's size, the outbox's backlog) are read from that state when
scraped instead, which is exact whichever worker answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from blacklist_contract.build import build_labels
from blacklist_service.bans.store import BanStore
from blacklist_service.delivery.outbox import Outbox

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


class StateCollector(Collector):
    """Gauges computed from the replica's shared state at scrape time."""

    def __init__(self, bans: BanStore, outbox: Outbox, ledger_marker: Path) -> None:
        self.bans = bans
        self.outbox = outbox
        self.ledger_marker = ledger_marker

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The ban list's size (entries, lifted) and the outbox's backlog per channel.

        Both counts are kept by the ban store as records come in: O(1) whatever
        the size of the list.
        """
        banned, lifted = self.bans.counts()
        yield GaugeMetricFamily(
            "blacklist_banned_addresses",
            "Entries (addresses or prefixes) in this replica's ban list; "
            "an expired one counts until the list is next compacted",
            value=banned,
        )
        yield GaugeMetricFamily(
            "blacklist_lifted_addresses", "Prefixes whose ban was lifted", value=lifted
        )
        yield GaugeMetricFamily(
            "blacklist_own_bans_carried",
            "Bans this replica made that the operator's list does not hold yet",
            value=self.bans.own_carried(),
        )
        yield GaugeMetricFamily(
            "blacklist_own_bans_folded",
            "Own bans folded into the snapshot as plain bans past the carried limit "
            "since the operator's last list (above 0: the operator is behind or down)",
            value=self.bans.own_folded(),
        )
        ledger, mail = self.outbox.counts()
        pending = GaugeMetricFamily(
            "blacklist_outbox_pending", "Hits not yet delivered, by channel", labels=["channel"]
        )
        pending.add_metric(["ledger"], ledger)
        pending.add_metric(["mail"], mail)
        yield pending
        info = GaugeMetricFamily(
            "blacklist_build_info",
            "Always 1: the release (version) and git revision of this service",
            labels=["version", "revision"],
        )
        info.add_metric(list(build_labels(os.environ)), 1.0)
        yield info
        yield GaugeMetricFamily(
            "blacklist_ledger_connected",
            "1 when this replica's last attempt to reach the ledger succeeded",
            value=1.0 if self.ledger_marker.exists() else 0.0,
        )


def exposition(bans: BanStore, outbox: Outbox, ledger_marker: Path) -> bytes:
    """The text format of every metric: this process's (or all workers') and the state gauges."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        counters = CollectorRegistry()
        multiprocess.MultiProcessCollector(counters)  # type: ignore[no-untyped-call]
    else:
        counters = REGISTRY
    state = CollectorRegistry()
    state.register(StateCollector(bans, outbox, ledger_marker))
    return generate_latest(counters) + generate_latest(state)
