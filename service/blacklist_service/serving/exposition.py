"""What ``GET /metrics`` answers: every counter, and gauges of the shared state read at scrape.

The counters are :mod:`blacklist_service.metrics`'; under the production server
they come from every worker's files (prometheus_client's multi-process mode).
The gauges (the ban list's size, the outbox's backlog, the ledger's connection)
are read from the replica's shared state when scraped, which is exact whichever
worker answers. Imported only when a scrape comes (:mod:`.metrics_server`):
the server's main process must not import prometheus_client before it has
set up the multi-process mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from blacklist_contract.build import build_labels
from blacklist_service.bans.store import BanStore
from blacklist_service.delivery.outbox import Outbox


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
