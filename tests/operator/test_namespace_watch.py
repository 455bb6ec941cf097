"""A namespace created while the operator starts is served (``kopf_compat.namespace_watch``).

kopf lists the namespaces twice when it starts and ignored the second list;
a namespace created between the two was never served. The first tests drive
kopf's own observer code with a listed namespace; the last starts a real
operator while namespaces appear around its start, and checks each is served.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kopf._cogs.structs import references
from kopf._core.reactor import observation
from kubernetes import client

from blacklist_devtools.kube import Cluster, wait_until
from blacklist_operator.kopf_compat import namespace_watch
from tests.conftest import SESSION_PREFIX
from tests.operator.helpers import OperatorProcess, apply_manifest, blacklist_service, get_json


def _listed(name: str, **body: Any) -> dict[str, Any]:
    """A namespace as a list (not a watch event) delivers it: no event type."""
    metadata = {"name": name, **body.pop("metadata", {})}
    return {"type": None, "object": {"metadata": metadata, **body}}


def _revised(*events: dict[str, Any], patterns: tuple[str, ...] = ("team-*",)) -> set[str]:
    insights = references.Insights()

    async def feed() -> None:
        for event in events:
            await observation.process_discovered_namespace_event(
                raw_event=event,  # type: ignore[arg-type]
                namespaces=patterns,
                insights=insights,
            )

    asyncio.run(feed())
    return {str(namespace) for namespace in insights.namespaces}


@pytest.fixture
def installed() -> Iterator[None]:
    """Kopf with the fix in place, as ``python -m blacklist_operator`` runs it."""
    original = observation.process_discovered_namespace_event
    namespace_watch.install()
    yield
    observation.process_discovered_namespace_event = original


def test_kopf_alone_drops_a_listed_namespace() -> None:
    # The behaviour the fix is for. If this fails, kopf serves listed namespaces
    # itself now, and blacklist_operator.kopf_compat.namespace_watch can go.
    assert _revised(_listed("team-a")) == set()


def test_a_listed_namespace_is_served(installed: None) -> None:
    assert _revised(_listed("team-a"), _listed("other")) == {"team-a"}


def test_a_listed_namespace_being_deleted_is_dropped(installed: None) -> None:
    # As the namespace controller leaves it once nothing holds the namespace any more.
    deleting = _listed(
        "team-a",
        metadata={"deletionTimestamp": "2026-01-01T00:00:00Z"},
        status={"conditions": [{"type": "NamespaceContentRemaining", "status": "False"}]},
    )
    assert _revised(_listed("team-a"), deleting) == set()


def test_install_is_idempotent(installed: None) -> None:
    namespace_watch.install()
    assert observation.process_discovered_namespace_event is (
        namespace_watch.process_namespace_event
    )


def test_install_refuses_a_kopf_whose_observer_no_longer_calls_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def observer_of_another_kopf(**_: Any) -> None:
        """Observes namespaces without looking the processor up by name."""

    monkeypatch.setattr(observation, "namespace_observer", observer_of_another_kopf)
    monkeypatch.setattr(
        observation, "process_discovered_namespace_event", namespace_watch._KOPF_PROCESSOR
    )
    with pytest.raises(
        RuntimeError, match=r"review blacklist_operator\.kopf_compat\.namespace_watch"
    ):
        namespace_watch.install()
    assert observation.process_discovered_namespace_event is not (
        namespace_watch.process_namespace_event
    )


@pytest.mark.cluster
@pytest.mark.slow
def test_namespaces_created_while_the_operator_starts_are_served(
    crd: Cluster, tmp_path: Path
) -> None:
    prefix = f"{SESSION_PREFIX}-start{uuid.uuid4().hex[:4]}"
    operator = OperatorProcess(crd, tmp_path, "--namespace", f"{prefix}-*")
    created: list[str] = []

    def create_namespaces() -> None:
        # kopf lists the namespaces twice within ~50 ms of its liveness probe answering
        # (measured here): namespaces created back to back from then on span that gap.
        with crd.api_client() as api_client:
            core = client.CoreV1Api(api_client)
            core.list_namespace(limit=1)  # connected and authenticated before the burst
            wait_until(
                lambda: operator.process is not None and operator._alive(),
                timeout=60,
                interval=0.002,
            )
            for index in range(30):
                name = f"{prefix}-{index:02d}"
                core.create_namespace({"metadata": {"name": name}})
                created.append(name)

    creator = threading.Thread(target=create_namespaces)
    creator.start()
    try:
        operator.start()
        creator.join()
        # A spec the operator refuses costs no pod, yet is answered at once with a status
        # (Ready=False InvalidSpec: no hostPath is allowed), and carries no finalizer.
        refused = {"storage": {"hostPath": "/refused", "retainOnDelete": True}}
        for namespace in created:
            apply_manifest(crd, blacklist_service("demo", namespace, database=refused))

        def unserved() -> list[str]:
            return [
                namespace
                for namespace in created
                if not ((get_json(crd, "bls", "demo", "-n", namespace) or {}).get("status"))
            ]

        assert wait_until(lambda: not unserved(), timeout=60, interval=1), (
            f"never reconciled, in {len(unserved())} of {len(created)} namespaces: {unserved()}"
        )
    finally:
        creator.join()
        operator.stop()
        for namespace in created:
            crd.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
