"""The chart's high availability: two replicas, a Lease, a rolling update, spread, a PDB.

``helm template`` only (no cluster); ``tests/operator/test_leader_election.py``
runs the election itself against the real API server.
"""

from __future__ import annotations

import pytest

from tests.chart.helm import CHART, RELEASE, helm, only, render, rules_for

pytestmark = pytest.mark.helm
LEASE_ROLE = "ops-blacklist-operator-leader-election"


def operator_pod(*set_values: str) -> dict[str, object]:
    pod: dict[str, object] = only(render(*set_values), "Deployment")["spec"]["template"]["spec"]
    return pod


def test_two_replicas_elect_a_leader_on_a_lease_named_after_the_release() -> None:
    deployment = only(render(), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--leader-election" in container["args"]
    assert "--leader-election-namespace=blacklist-system" in container["args"]
    assert "--leader-election-lease-name=ops-blacklist-operator" in container["args"]
    env = {variable["name"]: variable for variable in container["env"]}
    # The holder identity is the pod's name, from the downward API.
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_lease_rights_are_the_release_namespaces_and_by_name_where_possible() -> None:
    manifests = render("leaderElection.leaseName=elector")
    role = next(m for m in manifests if m["kind"] == "Role")
    assert role["metadata"] == {**role["metadata"], "name": LEASE_ROLE}
    assert role["metadata"]["namespace"] == "blacklist-system"
    assert rules_for(role, "leases") == {"get", "update", "create"}
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["coordination.k8s.io"]
        # A create is authorized before the object has a name; the rest go by name.
        assert rule.get("resourceNames") == (None if rule["verbs"] == ["create"] else ["elector"])
    binding = next(m for m in manifests if m["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] == LEASE_ROLE
    assert binding["subjects"][0]["name"] == "ops-blacklist-operator"
    args = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-election-lease-name=elector" in args
    # The cluster-wide role grants nothing on leases.
    assert rules_for(only(manifests, "ClusterRole"), "leases") == set()


def test_replicas_prefer_different_nodes_unless_the_affinity_is_given() -> None:
    term = operator_pod()["affinity"]["podAntiAffinity"][  # type: ignore[index]
        "preferredDuringSchedulingIgnoredDuringExecution"
    ][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "blacklist-operator",
        "app.kubernetes.io/instance": RELEASE,
    }
    given = operator_pod("affinity.nodeAffinity.x=y")["affinity"]
    assert given == {"nodeAffinity": {"x": "y"}}
    assert "affinity" not in operator_pod("replicaCount=1")
    spread = operator_pod(
        "topologySpreadConstraints[0].maxSkew=1",
        "topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
        "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
    )["topologySpreadConstraints"]
    assert spread == [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
        }
    ]


def test_a_disruption_budget_keeps_one_replica_through_drains() -> None:
    budget = only(render(), "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "blacklist-operator",
        "app.kubernetes.io/instance": RELEASE,
    }
    for set_values in (["replicaCount=1"], ["podDisruptionBudget.enabled=false"]):
        assert not [m for m in render(*set_values) if m["kind"] == "PodDisruptionBudget"]


def test_without_leader_election_one_replica_is_replaced_with_recreate() -> None:
    manifests = render("leaderElection.enabled=false", "replicaCount=1")
    deployment = only(manifests, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [argument for argument in args if argument.startswith("--leader-election")]
    assert not [m for m in manifests if m["kind"] in {"Role", "RoleBinding"}]


def test_two_replicas_without_leader_election_are_refused() -> None:
    result = helm(
        "template", RELEASE, str(CHART),
        "--set", "leaderElection.enabled=false", "--set", "replicaCount=2",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "/replicaCount" in result.stderr


@pytest.mark.parametrize(
    ("set_values", "message"),
    [
        (["leaderElection.renewDeadlineSeconds=8"], "below leaderElection.leaseDurationSeconds"),
        (["leaderElection.retryPeriodSeconds=3"], "at most half"),
    ],
)
def test_timings_the_operator_would_refuse_are_refused_at_install(
    set_values: list[str], message: str
) -> None:
    arguments = ["template", RELEASE, str(CHART)]
    for value in set_values:
        arguments += ["--set", value]
    result = helm(*arguments, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    # Fractions are fine (from a values file or --set-json; --set makes strings of them).
    rendered = helm(
        "template", RELEASE, str(CHART), "--set-json", "leaderElection.retryPeriodSeconds=0.5"
    ).stdout
    assert "--leader-election-retry-period=0.5" in rendered
