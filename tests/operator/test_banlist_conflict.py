"""The ban sync never takes over a ConfigMap of its names that another team made.

Another team's ConfigMap ``bl-banlist`` (or ``bl-banlist-1``) is in the
namespace when BlacklistService ``bl`` is created: the ban sync leaves it
exactly as it is (not read, not written, not deleted; no owner reference, so the
garbage collector never deletes it with the resource), reports
``BanListSynced=False`` with reason ``ChildConflict`` naming it, and posts a
Warning Event. Once its owner removes it, the sync writes its own list, with
the bans the ledger held meanwhile, within the conflict retry.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from blacklist_devtools.postgres import PostgresServer
from blacklist_operator.banlist.sync.step import CONFLICT_RETRY_SECONDS
from tests.operator.helpers import OperatorProcess, apply_manifest, condition, get_json, wait_for
from tests.operator.test_banlist_sync import banned_entries, create_table, deploy, insert

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def ledger(postgres: PostgresServer) -> PostgresServer:
    """A ledger table holding one hit, made afresh for each test."""
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS denied_access_ledger")
    create_table(postgres)
    insert(postgres, ["198.51.100.1"])
    return postgres


def foreign_configmap(namespace: str, name: str) -> dict[str, Any]:
    """Another team's ConfigMap, made with nothing of ours, shaped like a ban list's head."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"team": "web"}},
        # Were it read as a head, 203.0.113.7 would be banned and the cursor skip the ledger.
        "data": {"addresses": "203.0.113.7\n", "snapshot": "0", "parts": "0", "count": "1"},
    }


def synced(operator: OperatorProcess, namespace: str) -> dict[str, Any]:
    return condition(get_json(operator.cluster, "bls", "bl", "-n", namespace), "BanListSynced")


def ours(operator: OperatorProcess, namespace: str, name: str) -> bool:
    body = get_json(operator.cluster, "configmap", name, "-n", namespace) or {}
    references = body.get("metadata", {}).get("ownerReferences") or []
    return any(reference.get("kind") == "BlacklistService" for reference in references)


@pytest.mark.parametrize("taken", ["bl-banlist", "bl-banlist-1"])
def test_someone_elses_banlist_configmap_is_left_untouched_and_reported(
    operator_process: OperatorProcess, ledger: PostgresServer, namespace: str, taken: str
) -> None:
    cluster = operator_process.cluster
    apply_manifest(cluster, foreign_configmap(namespace, taken))
    before = get_json(cluster, "configmap", taken, "-n", namespace)
    assert before is not None

    deploy(operator_process, ledger, namespace)

    wait_for(
        lambda: synced(operator_process, namespace).get("reason") == "ChildConflict",
        60,
        "BanListSynced ChildConflict",
        operator_process,
    )
    reported = synced(operator_process, namespace)
    assert reported["status"] == "False"
    assert (
        f"ConfigMap {taken} exists and was not created by this BlacklistService"
        in (reported["message"])
    )

    def event_posted() -> bool:
        events = cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "reason=ChildConflict", "-o",
            "json",
        )  # fmt: skip
        return f"ConfigMap {taken}" in events

    # kopf posts Events from a queue of its own: shortly after the status.
    wait_for(event_posted, 15, "a ChildConflict Event naming it", operator_process)
    # Passes go on meanwhile (the ledger is connected); none of them touches it.
    time.sleep(5)
    assert get_json(cluster, "configmap", taken, "-n", namespace) == before
    if taken != "bl-banlist":
        # No head names a generation whose part could not be written.
        head = get_json(cluster, "configmap", "bl-banlist", "-n", namespace)
        assert head is None, f"{head}\n{operator_process.log()[-4000:]}"

    # Its owner removes it: the sync writes its own list, the ledger's ban in it.
    cluster.kubectl("delete", "configmap", taken, "-n", namespace)
    wait_for(
        lambda: (
            ours(operator_process, namespace, "bl-banlist")
            and "198.51.100.1" in banned_entries(operator_process, namespace)
        ),
        CONFLICT_RETRY_SECONDS + 30,
        "the operator's own ban list",
        operator_process,
    )
    assert "203.0.113.7" not in banned_entries(operator_process, namespace)
    wait_for(
        lambda: synced(operator_process, namespace).get("reason") == "Synced",
        30,
        "BanListSynced Synced",
        operator_process,
    )
