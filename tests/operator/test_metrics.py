"""The operator's ``/metrics`` (``--metrics-address``), scraped from a real operator process.

A BlacklistService whose ledger is a real PostgreSQL: the reconciles are counted,
the per-instance gauges of the ban list and of the service's replicas equal
``status.bannedCount`` and ``status.readyReplicas``, a database
outage counts failures, every operator metric the Grafana dashboard or an alert
queries is exported, and the instance's series leave ``/metrics`` when it is deleted.
"""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from blacklist_contract.build import VERSION
from blacklist_devtools.postgres import PostgresServer
from tests.alerts.rules import rule_metric_names
from tests.operator.helpers import (
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    get_json,
    wait_for,
)
from tests.operator.test_banlist_sync import create_table, deploy, insert, status
from tests.service.test_dashboard import OPERATOR_METRIC, used_metric_names

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def ledger(postgres: PostgresServer) -> PostgresServer:
    """An empty ledger table (dropped first, so this module starts clean)."""
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS denied_access_ledger")
    create_table(postgres)
    return postgres


def scrape(operator: OperatorProcess) -> Samples:
    """Every sample of the operator's ``/metrics``, by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(operator.metrics())
        for sample in family.samples
    }


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    """The sample ``metric`` with exactly ``labels``, or None when it is not exported."""
    return samples.get((metric, frozenset(labels.items())))


def instance_series(samples: Samples, namespace: str, name: str) -> list[str]:
    """The names of the samples labelled with the instance ``namespace/name``."""
    return sorted(
        sample
        for sample, labels in samples
        if ("namespace", namespace) in labels and ("name", name) in labels
    )


def test_metrics_follow_reconciles_bans_outages_and_deletion(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str
) -> None:
    operator = operator_process
    before = scrape(operator)
    ok_before = value(before, "blacklist_operator_reconciles_total", outcome="ok")
    assert ok_before is not None
    invalid_before = value(before, "blacklist_operator_reconciles_total", outcome="invalid_spec")
    assert invalid_before is not None
    instances_before = value(before, "blacklist_operator_instances")
    assert instances_before is not None
    it = {"namespace": namespace, "name": "bl"}

    deploy(operator, ledger, namespace)
    wait_for(
        lambda: condition(status(operator, namespace), "BanListSynced").get("reason") == "Synced",
        30,
        "the first ban sync",
        operator,
    )
    inserted = time.time()
    insert(ledger, ["203.0.113.9", "198.51.100.4"])
    wait_for(
        lambda: status(operator, namespace).get("status", {}).get("bannedCount") == 2,
        10,
        "bannedCount 2",
        operator,
    )

    def gauge_is_status() -> bool:
        count = int(status(operator, namespace)["status"]["bannedCount"])
        return value(scrape(operator), "blacklist_operator_banned_addresses", **it) == count

    wait_for(gauge_is_status, 10, "the banned-addresses gauge equal to bannedCount", operator)

    def replicas_are_status() -> bool:
        ready = int(status(operator, namespace)["status"].get("readyReplicas", 0))
        samples = scrape(operator)
        return (
            value(samples, "blacklist_operator_service_replicas_desired", **it) == 1
            and value(samples, "blacklist_operator_service_replicas_ready", **it) == ready
        )

    # The replica gauges (alert BlacklistReplicasNotReady) follow the resource's status.
    wait_for(replicas_are_status, 30, "the replica gauges equal to the status", operator)
    samples = scrape(operator)
    ok = value(samples, "blacklist_operator_reconciles_total", outcome="ok")
    assert ok is not None
    assert ok > ok_before
    assert (value(samples, "blacklist_operator_reconcile_duration_seconds_count") or 0) >= ok
    assert value(samples, "blacklist_operator_instances") == instances_before + 1
    # Without --leader-election the one operator serves: it counts as the leader.
    assert value(samples, "blacklist_operator_leader") == 1
    # Which release serves: this tree's version (no release set the environment).
    assert value(samples, "blacklist_operator_build_info", version=VERSION, revision="unknown") == 1
    assert value(samples, "blacklist_operator_ledger_rows_behind", **it) == 0
    assert value(samples, "blacklist_operator_ban_sync_failures_total", **it) == 0
    # Passes run every 2 s (--ban-poll-interval of the tests): the last success is recent.
    age = value(samples, "blacklist_operator_ban_sync_age_seconds", **it)
    assert age is not None
    assert 0 <= age < 10
    last = value(samples, "blacklist_operator_ban_sync_last_success_timestamp_seconds", **it)
    assert last is not None
    assert inserted - 1 <= last <= time.time() + 1
    # The two rows reached the ban list in one pass, well within a second here.
    assert value(samples, "blacklist_operator_ban_latency_seconds_count", **it) == 1
    assert (value(samples, "blacklist_operator_ban_latency_seconds_sum", **it) or 99) < 2.5
    assert value(samples, "blacklist_operator_ban_latency_seconds_bucket", le="2.5", **it) == 1

    assert len(instance_series(samples, namespace, "bl")) >= 10
    # Every operator metric the dashboard or an alert queries is exported by this real process.
    queried = used_metric_names() | rule_metric_names()
    wanted = {name for name in queried if OPERATOR_METRIC.match(name)}
    assert wanted
    exported = {name for name, _ in samples}
    assert wanted - exported == set()

    # A spec the operator cannot act on: a hostPath outside the allowed prefixes.
    apply_manifest(
        operator.cluster,
        blacklist_service("bad", namespace, database={"storage": {"hostPath": "/forbidden"}}),
    )

    def counted_invalid() -> bool:
        counted = value(
            scrape(operator), "blacklist_operator_reconciles_total", outcome="invalid_spec"
        )
        return counted is not None and counted > invalid_before

    wait_for(counted_invalid, 30, "a reconcile counted as invalid_spec", operator)

    # The database away: failures are counted, the gauge keeps the last synced list.
    ledger.stop()
    try:

        def failing() -> bool:
            counted = value(scrape(operator), "blacklist_operator_ban_sync_failures_total", **it)
            return (counted or 0) > 0

        wait_for(failing, 30, "a ban-sync failure counted", operator)
        assert value(scrape(operator), "blacklist_operator_banned_addresses", **it) == 2
    finally:
        ledger.start()

    # Deleted: every series of the instance leaves /metrics; the instances gauge follows.
    for name in ("bl", "bad"):
        operator.cluster.kubectl("delete", "bls", name, "-n", namespace, "--wait=true")
    assert get_json(operator.cluster, "bls", "bl", "-n", namespace) is None
    wait_for(
        lambda: instance_series(scrape(operator), namespace, "bl") == [],
        20,
        "the series of the deleted instance gone",
        operator,
    )
    assert value(scrape(operator), "blacklist_operator_instances") == instances_before
