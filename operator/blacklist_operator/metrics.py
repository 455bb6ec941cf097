"""The operator's Prometheus metrics, the small calls that record them, and the ``/metrics`` server.

The reconcile, the ban sync and the startup handler call the functions below;
none of them touches a metric object. Per-instance series carry the labels
``namespace`` and ``name`` (of the BlacklistService) and are removed when the
ban sync forgets a deleted instance (:func:`forget_instance`), so the label set
never outgrows the instances that exist. Gauges of the ban sync are read at
scrape time from what the last pass recorded, so "seconds since the last
successful sync" is exact whenever it is scraped.

``--metrics-address HOST:PORT`` serves them (:func:`serve`) from
prometheus_client's HTTP server on a thread of its own, so a scrape never waits
for kopf's event loop, and a busy loop never makes a scrape time out.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from blacklist_contract.build import build_labels

InstanceKey = tuple[str, str]

# The outcomes of a reconcile: every child applied and status written; something
# could not be applied (or the status not written); the spec cannot be acted on.
OUTCOME_OK = "ok"
OUTCOME_FAILED = "failed"
OUTCOME_INVALID_SPEC = "invalid_spec"
OUTCOMES = (OUTCOME_OK, OUTCOME_FAILED, OUTCOME_INVALID_SPEC)

RECONCILES = Counter(
    "blacklist_operator_reconciles",
    "Full reconciles of a BlacklistService, by outcome (ok, failed, invalid_spec)",
    ["outcome"],
)
RECONCILE_SECONDS = Histogram(
    "blacklist_operator_reconcile_duration_seconds",
    "Time a full reconcile took: children applied, absent ones deleted, status written",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
INSTANCES = Gauge(
    "blacklist_operator_instances", "BlacklistServices the operator manages (watched, not gone)"
)
SYNC_FAILURES = Counter(
    "blacklist_operator_ban_sync_failures",
    "Ban-sync passes that failed (database unreachable, ledger or API error), per instance",
    ["namespace", "name"],
)
DROPPED = Counter(
    "blacklist_operator_banlist_dropped",
    "Bans evicted from the instance's ban list because it held its limit (--max-bans); "
    "the oldest go, never the newest",
    ["namespace", "name"],
)
BAN_LATENCY = Histogram(
    "blacklist_operator_ban_latency_seconds",
    "Ledger row to ban list: per pass, the age of the oldest row it read for the first time, "
    "measured once the ban list it changed was written",
    ["namespace", "name"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
)

LEADER = Gauge(
    "blacklist_operator_leader",
    "1 while this replica leads (holds the leader Lease, or runs without leader election) and "
    "serves the BlacklistServices; 0 while it is a standby",
)

# Set by the leader at every status write of a resource, so they follow the service
# Deployment's watched progress; removed with the resource's other series.
REPLICAS_DESIRED = Gauge(
    "blacklist_operator_service_replicas_desired",
    "Replicas the instance's service Deployment wants (its spec.replicas, an autoscaler's count)",
    ["namespace", "name"],
)
REPLICAS_READY = Gauge(
    "blacklist_operator_service_replicas_ready",
    "Ready replicas of the instance's service Deployment (the resource's status.readyReplicas)",
    ["namespace", "name"],
)

BUILD_INFO = Gauge(
    "blacklist_operator_build_info",
    "Always 1: the release (version) and git revision of this operator",
    ["version", "revision"],
)
BUILD_INFO.labels(*build_labels(os.environ)).set(1)

for _outcome in OUTCOMES:
    RECONCILES.labels(_outcome)  # every outcome shows from the start, at 0


@dataclass
class _BanSync:
    """What the last passes of one instance's ban sync recorded (wall-clock seconds)."""

    taken_up: float
    banned: int | None = None
    rows_behind: int | None = None
    last_success: float | None = None
    capacity: int | None = None


class BanSyncCollector(Collector):
    """The per-instance gauges of the ban sync, computed when scraped."""

    def __init__(self) -> None:
        self._instances: dict[InstanceKey, _BanSync] = {}
        self._lock = threading.Lock()

    def started(self, key: InstanceKey, now: float) -> None:
        """The ban sync took up ``key``: its age counts from now until its first success."""
        with self._lock:
            self._instances.setdefault(key, _BanSync(taken_up=now))

    def record(self, key: InstanceKey, banned: int, rows_behind: int, now: float) -> None:
        """A pass of ``key`` succeeded: the list holds ``banned`` addresses."""
        with self._lock:
            state = self._instances.setdefault(key, _BanSync(taken_up=now))
            state.banned, state.rows_behind, state.last_success = banned, rows_behind, now

    def limit(self, key: InstanceKey, capacity: int, now: float) -> None:
        """The ban list of ``key`` holds at most ``capacity`` entries."""
        with self._lock:
            self._instances.setdefault(key, _BanSync(taken_up=now)).capacity = capacity

    def keep(self, key: InstanceKey, banned: int, now: float) -> None:
        """A pass of ``key`` failed: the last synced list (``banned`` addresses) stays."""
        with self._lock:
            self._instances.setdefault(key, _BanSync(taken_up=now)).banned = banned

    def forget(self, key: InstanceKey) -> None:
        """Drop ``key``'s series."""
        with self._lock:
            self._instances.pop(key, None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges of every instance the ban sync holds."""
        labels = ["namespace", "name"]
        banned = GaugeMetricFamily(
            "blacklist_operator_banned_addresses",
            "Addresses in the instance's synced ban list (its status.bannedCount)",
            labels=labels,
        )
        behind = GaugeMetricFamily(
            "blacklist_operator_ledger_rows_behind",
            "Ledger ids past the instance's exact cursor at its last successful pass",
            labels=labels,
        )
        last = GaugeMetricFamily(
            "blacklist_operator_ban_sync_last_success_timestamp_seconds",
            "Unix time of the instance's last successful ban-sync pass",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "blacklist_operator_ban_sync_age_seconds",
            "Seconds since the instance's last successful ban-sync pass (before the first: "
            "since the ban sync took the instance up)",
            labels=labels,
        )
        capacity = GaugeMetricFamily(
            "blacklist_operator_banlist_capacity",
            "Entries the instance's ban list holds at most (--max-bans); at it, the oldest "
            "bans are evicted",
            labels=labels,
        )
        now = time.time()
        with self._lock:
            instances = list(self._instances.items())
        for (namespace, name), state in instances:
            values = [namespace, name]
            if state.banned is not None:
                banned.add_metric(values, state.banned)
            if state.rows_behind is not None:
                behind.add_metric(values, state.rows_behind)
            if state.last_success is not None:
                last.add_metric(values, state.last_success)
            if state.capacity is not None:
                capacity.add_metric(values, state.capacity)
            age.add_metric(values, max(0.0, now - (state.last_success or state.taken_up)))
        yield from (banned, behind, last, age, capacity)


BAN_SYNC = BanSyncCollector()
REGISTRY.register(BAN_SYNC)


def reconciled(outcome: str, seconds: float) -> None:
    """Count one full reconcile that ended with ``outcome`` after ``seconds``."""
    RECONCILES.labels(outcome).inc()
    RECONCILE_SECONDS.observe(seconds)


def leading(leader: bool) -> None:
    """This replica became the leader (True), or waits as a standby (False)."""
    LEADER.set(1.0 if leader else 0.0)


def service_replicas(key: InstanceKey, desired: int, ready: int) -> None:
    """The service Deployment of ``key`` wants ``desired`` replicas and has ``ready`` ready."""
    REPLICAS_DESIRED.labels(*key).set(desired)
    REPLICAS_READY.labels(*key).set(ready)


def count_instances(source: Callable[[], int]) -> None:
    """Read the number of managed instances from ``source`` at every scrape."""
    INSTANCES.set_function(lambda: float(source()))


def ban_sync_started(key: InstanceKey) -> None:
    """The ban sync took up ``key``: its series appear (failures at 0)."""
    BAN_SYNC.started(key, time.time())
    SYNC_FAILURES.labels(*key)
    DROPPED.labels(*key)


def ban_list_synced(
    key: InstanceKey, banned: int, rows_behind: int, oldest_new_row_ms: int | None
) -> None:
    """A pass of ``key`` read the ledger and wrote the ban list it changed.

    ``oldest_new_row_ms`` is the ``time`` of the oldest ledger row the pass read for
    the first time (Unix ms), or None when it read none: its age is the latency.
    """
    now = time.time()
    BAN_SYNC.record(key, banned, rows_behind, now)
    if oldest_new_row_ms is not None:
        # Clocks of the database's writers and of the operator may differ a little.
        BAN_LATENCY.labels(*key).observe(max(0.0, now - oldest_new_row_ms / 1000))


def ban_list_limited(key: InstanceKey, capacity: int, evicted: int) -> None:
    """The ban list of ``key`` holds at most ``capacity``; a pass evicted ``evicted`` bans."""
    BAN_SYNC.limit(key, capacity, time.time())
    if evicted:
        DROPPED.labels(*key).inc(evicted)


def ban_sync_failed(key: InstanceKey, banned: int) -> None:
    """A pass of ``key`` failed; the ban list keeps its ``banned`` addresses."""
    SYNC_FAILURES.labels(*key).inc()
    BAN_SYNC.keep(key, banned, time.time())


def forget_instance(key: InstanceKey) -> None:
    """Remove every series of ``key`` (a deleted instance)."""
    BAN_SYNC.forget(key)
    SYNC_FAILURES.remove(*key)
    DROPPED.remove(*key)
    BAN_LATENCY.remove(*key)
    REPLICAS_DESIRED.remove(*key)
    REPLICAS_READY.remove(*key)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8081``; ``:8081`` is every interface) as (host, port)."""
    host, separator, port = text.rpartition(":")
    if not separator or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT with a port from 1 to 65535")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port)  # noqa: S104 (':PORT' asks for every interface)


def serve(address: tuple[str, int]) -> None:
    """Serve ``/metrics`` on ``address`` from a daemon thread until the process exits."""
    host, port = address
    start_http_server(port, addr=host)
