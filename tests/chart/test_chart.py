"""Tests of the Helm chart in ``chart/`` that need no cluster: lint, rendering, values schema.

Those marked ``helm`` run ``helm lint`` and ``helm template`` (the binary that
``make setup`` builds) and assert on the parsed manifests:
the security context docs/security.md documents, least-privilege RBAC in both watch
modes, the BlacklistService that reproduces the original deployment, a values
schema that names the key it rejects, and values.yaml documented key by key.
``test_install.py`` installs the chart into the real cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.chart.helm import CHART, RELEASE, REPO_ROOT, Manifest, helm, only, render, rules_for


@pytest.mark.helm
@pytest.mark.parametrize("set_values", [[], ["blacklistService.enabled=true"]])
def test_chart_lints_clean(set_values: list[str]) -> None:
    arguments = ["lint", str(CHART), "--strict"]
    for value in set_values:
        arguments += ["--set", value]
    result = helm(*arguments)
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout
    assert "[ERROR]" not in result.stdout


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "blacklist-operator"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == "0.1.0"
    assert chart["kubeVersion"].startswith(">=")


def test_crds_dir_is_a_copy_of_the_charts_one_crd() -> None:
    # One source: the chart renders chart/crd/, `make crds` copies it to crds/ (and `make
    # lint` checks the copy). Helm's install-only chart/crds/ is gone: it never upgraded.
    source = CHART / "crd" / "blacklistservices.yaml"
    assert source.read_bytes() == (REPO_ROOT / "crds" / "blacklistservices.yaml").read_bytes()
    assert not (CHART / "crds").exists()


@pytest.mark.helm
def test_the_crd_is_installed_upgraded_and_kept() -> None:
    crd = only(render(), "CustomResourceDefinition")
    source = yaml.safe_load((REPO_ROOT / "crds" / "blacklistservices.yaml").read_text())
    assert crd["metadata"]["name"] == "blacklistservices.blacklist.dev"
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    labels = crd["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "Helm"
    assert labels["app.kubernetes.io/instance"] == RELEASE
    assert labels["app.kubernetes.io/part-of"] == "blacklist-operator"
    unkept = only(render("crds.keep=false"), "CustomResourceDefinition")
    assert "annotations" not in unkept["metadata"]
    assert not [m for m in render("crds.enabled=false") if m["kind"] == "CustomResourceDefinition"]


@pytest.mark.helm
def test_the_charts_resource_waits_for_the_crd_on_a_fresh_cluster() -> None:
    # No cluster serving the CRD yet: a post-install hook, after the CRD, that the next
    # upgrade adopts by Helm's ownership annotations.
    fresh = only(render("blacklistService.enabled=true"), "BlacklistService")
    assert fresh["metadata"]["annotations"] == {
        "helm.sh/hook": "post-install",
        "meta.helm.sh/release-name": RELEASE,
        "meta.helm.sh/release-namespace": "blacklist-system",
    }
    assert fresh["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    # The CRD served (an upgrade): an ordinary object of the release.
    served = only(
        render(
            "blacklistService.enabled=true", api_versions=("blacklist.dev/v1/BlacklistService",)
        ),
        "BlacklistService",
    )
    assert "annotations" not in served["metadata"]
    assert served["spec"] == fresh["spec"]


@pytest.mark.helm
def test_operator_deployment_renders_the_documented_security_context() -> None:
    deployment = only(render(), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in security
    assert pod["serviceAccountName"] == "ops-blacklist-operator"
    # Each instance's PostgreSQL NetworkPolicy admits the operator by this label.
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/name"] == "blacklist-operator"
    assert container["image"] == "blacklist-operator:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    env = {variable["name"]: variable for variable in container["env"]}
    assert env["BLACKLIST_OPERATOR_LOG_LEVEL"]["value"] == "info"
    assert env["BLACKLIST_OPERATOR_LOG_FORMAT"]["value"] == "text"


@pytest.mark.helm
def test_probes_target_the_operators_liveness_endpoint() -> None:
    container = only(render("operator.healthPort=9090"), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert "--liveness=http://0.0.0.0:9090/healthz" in container["args"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": 9090}
    assert container["ports"] == [
        {"name": "health", "containerPort": 9090, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 8081, "protocol": "TCP"},
    ]


@pytest.mark.helm
@pytest.mark.parametrize(
    ("set_values", "namespaces"),
    [
        ([], []),
        (
            ["operator.watchNamespaces={team-a,team-b}", "operator.logLevel=debug"],
            ["team-a", "team-b"],
        ),
    ],
)
def test_operator_accepts_the_arguments_the_chart_passes(
    set_values: list[str], namespaces: list[str]
) -> None:
    from blacklist_operator.__main__ import parse_arguments
    from blacklist_operator.controller import leadership
    from blacklist_operator.controller.lease import ElectionTiming

    container = only(render(*set_values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    arguments = parse_arguments(container["args"])
    election = leadership.settings(arguments)
    assert election.enabled
    assert (election.namespace, election.lease_name) == (
        "blacklist-system",
        "ops-blacklist-operator",
    )
    assert election.timing == ElectionTiming(8, 5.0, 1.0)
    assert arguments.namespace == namespaces
    assert arguments.all_namespaces is not bool(namespaces)
    assert arguments.standalone is True
    assert arguments.liveness == "http://0.0.0.0:8080/healthz"
    assert arguments.metrics_address == ("0.0.0.0", 8081)  # noqa: S104 (the pod's every address)


@pytest.mark.helm
def test_deployment_takes_its_scheduling_and_image_values() -> None:
    deployment = only(
        render(
            "image.repository=registry.example.com/blacklist-operator",
            "image.tag=1.2.3",
            "image.pullPolicy=Always",
            "imagePullSecrets[0].name=regcred",
            "nodeSelector.disktype=ssd",
            "tolerations[0].key=dedicated",
            "tolerations[0].operator=Exists",
            "podAnnotations.team=platform",
            "operator.logLevel=debug",
            "operator.logFormat=json",
        ),
        "Deployment",
    )
    template = deployment["spec"]["template"]
    pod = template["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/blacklist-operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"disktype": "ssd"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert template["metadata"]["annotations"] == {"team": "platform"}
    env = {variable["name"]: variable for variable in container["env"]}
    assert env["BLACKLIST_OPERATOR_LOG_LEVEL"]["value"] == "debug"
    assert env["BLACKLIST_OPERATOR_LOG_FORMAT"]["value"] == "json"
    assert "--verbose" in container["args"]


@pytest.mark.helm
def test_every_object_carries_the_standard_labels() -> None:
    manifests = render(
        "blacklistService.enabled=true", "operator.watchNamespaces={blacklist-system}"
    )
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "blacklist-operator", manifest["kind"]
        assert labels["app.kubernetes.io/instance"] == RELEASE, manifest["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", manifest["kind"]
        assert labels["helm.sh/chart"] == "blacklist-operator-0.1.0", manifest["kind"]
    selector = only(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    assert selector == {
        "app.kubernetes.io/name": "blacklist-operator",
        "app.kubernetes.io/instance": RELEASE,
    }


@pytest.mark.helm
def test_watching_all_namespaces_uses_one_cluster_role() -> None:
    manifests = render()
    # The only namespaced rights: the leader election's, on its Lease.
    assert [
        manifest["metadata"]["name"]
        for manifest in manifests
        if manifest["kind"] in {"Role", "RoleBinding"}
    ] == ["ops-blacklist-operator-leader-election"] * 2
    role = only(manifests, "ClusterRole")
    binding = only(manifests, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": "ops-blacklist-operator",
            "namespace": "blacklist-system",
        }
    ]
    assert rules_for(role, "deployments") == {"get", "list", "watch", "create", "patch"}
    assert rules_for(role, "persistentvolumes") == {"get", "create", "patch", "delete"}
    assert rules_for(role, "pods") == set()
    # Secrets by name only: nothing that enumerates the Secrets of a namespace.
    assert rules_for(role, "secrets") == {"get", "create", "patch"}
    assert (
        "--all-namespaces"
        in only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    )


@pytest.mark.helm
def test_watched_namespaces_get_a_role_each_and_nothing_elsewhere() -> None:
    manifests = render(
        "operator.watchNamespaces={team-a,team-b}",
        "rbac.persistentVolumes=false",
        "leaderElection.enabled=false",
        "replicaCount=1",
    )
    roles = [manifest for manifest in manifests if manifest["kind"] == "Role"]
    bindings = [manifest for manifest in manifests if manifest["kind"] == "RoleBinding"]
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    assert sorted(binding["metadata"]["namespace"] for binding in bindings) == ["team-a", "team-b"]
    for role in roles:
        assert rules_for(role, "secrets") == {"get", "create", "patch"}
        assert rules_for(role, "pods") == set()
    cluster_role = only(manifests, "ClusterRole")
    cluster_resources = {
        resource for rule in cluster_role["rules"] for resource in rule["resources"]
    }
    assert cluster_resources == {"customresourcedefinitions", "namespaces"}
    args = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args
    assert "--namespace=team-b" in args
    assert "--all-namespaces" not in args


@pytest.mark.helm
def test_rbac_holds_only_what_the_operator_calls() -> None:
    manifests = render("operator.watchNamespaces={team-a}") + render()
    for role in (m for m in manifests if m["kind"] in {"Role", "ClusterRole"}):
        assert rules_for(role, "pods") == set()
        assert not {"list", "watch", "delete", "update"} & rules_for(role, "secrets")
        # Children are collected by the garbage collector; only ban-list shards are deleted.
        for resource in ("deployments", "services", "persistentvolumeclaims", "roles"):
            assert not {"delete", "update"} & rules_for(role, resource), resource
        # The optional children are deleted when the spec no longer asks for them.
        namespaced = bool(rules_for(role, "deployments"))
        for resource in (
            "ingresses",
            "poddisruptionbudgets",
            "horizontalpodautoscalers",
            "cronjobs",
        ):
            assert not namespaced or rules_for(role, resource) == {
                "get",
                "list",
                "watch",
                "create",
                "patch",
                "delete",
            }, resource
        # The ServiceMonitor is applied, read and deleted by name, never watched.
        assert not namespaced or rules_for(role, "servicemonitors") == {
            "get",
            "create",
            "patch",
            "delete",
        }


@pytest.mark.helm
def test_no_role_grants_escalation() -> None:
    manifests = render("operator.watchNamespaces={team-a}") + render()
    for role in (m for m in manifests if m["kind"] in {"Role", "ClusterRole"}):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"]
            assert "*" not in rule["resources"]
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            assert not {"pods/exec", "nodes", "clusterroles", "clusterrolebindings"} & set(
                rule["resources"]
            )


@pytest.mark.helm
def test_blacklist_service_is_off_by_default() -> None:
    assert not [manifest for manifest in render() if manifest["kind"] == "BlacklistService"]


@pytest.mark.helm
def test_blacklist_service_reproduces_the_original_deployment() -> None:
    manifests = render("blacklistService.enabled=true", namespace="microservices")
    resource = only(manifests, "BlacklistService")
    assert resource["apiVersion"] == "blacklist.dev/v1"
    assert resource["metadata"]["name"] == "flask-blacklist"
    assert resource["metadata"]["namespace"] == "microservices"
    spec = resource["spec"]
    # No pinned image: it runs the operator's defaults (defaults.serviceImage) and follows it.
    assert "image" not in spec
    assert "image" not in spec["database"]
    assert spec["port"] == 5004
    assert spec["nodePort"] == 30911
    assert spec["replicas"] == 1
    assert spec["database"]["name"] == "denied_access"
    assert spec["mail"]["recipient"] == "test@domain.com"


@pytest.mark.helm
def test_blacklist_service_fields_are_overridable() -> None:
    resource = only(
        render(
            "blacklistService.enabled=true",
            "blacklistService.name=shop",
            "blacklistService.spec.replicas=3",
            "blacklistService.spec.nodePort=null",
            "blacklistService.spec.database.storage.size=5Gi",
        ),
        "BlacklistService",
    )
    assert resource["metadata"]["name"] == "shop"
    assert resource["spec"]["replicas"] == 3
    assert "nodePort" not in resource["spec"]
    assert resource["spec"]["database"] == {"name": "denied_access", "storage": {"size": "5Gi"}}


@pytest.mark.helm
def test_blacklist_service_outside_the_watched_namespaces_is_refused() -> None:
    result = helm(
        "template", RELEASE, str(CHART), "--namespace", "elsewhere",
        "--set", "blacklistService.enabled=true", "--set", "operator.watchNamespaces={team-a}",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "operator.watchNamespaces" in result.stderr


@pytest.mark.helm
def test_default_images_reach_the_operator() -> None:
    def environment(*values: str) -> dict[str, str]:
        (container,) = only(render(*values), "Deployment")["spec"]["template"]["spec"]["containers"]
        return {item["name"]: item.get("value", "") for item in container["env"]}

    built_in = environment()
    assert built_in["BLACKLIST_OPERATOR_DEFAULT_SERVICE_IMAGE"] == "flask-blacklist-svc:v1"
    assert built_in["BLACKLIST_OPERATOR_DEFAULT_DATABASE_IMAGE"] == "postgres:16"
    chosen = environment(
        "defaults.serviceImage=registry.example/svc@sha256:" + "a" * 64,
        "defaults.databaseImage=registry.example/postgres:16.4",
    )
    assert chosen["BLACKLIST_OPERATOR_DEFAULT_SERVICE_IMAGE"].endswith("a" * 64)
    assert chosen["BLACKLIST_OPERATOR_DEFAULT_DATABASE_IMAGE"] == "registry.example/postgres:16.4"


BAD_VALUES = [
    ("crds.enabled=maybe", "/crds/enabled"),
    ("crds.keep=1", "/crds/keep"),
    ("defaults.serviceImage=", "/defaults/serviceImage"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ("image.repository=", "/image/repository"),
    ("replicaCount=-1", "/replicaCount"),
    ("leaderElection.enabled=on", "/leaderElection/enabled"),
    ("leaderElection.leaseDurationSeconds=1", "/leaderElection/leaseDurationSeconds"),
    ("leaderElection.retryPeriodSeconds=0", "/leaderElection/retryPeriodSeconds"),
    ("leaderElection.leaseName=Not_A_Name", "/leaderElection/leaseName"),
    ("podDisruptionBudget.enabled=yes", "/podDisruptionBudget/enabled"),
    ("replicaCount=one", "/replicaCount"),
    ("operator.logLevel=verbose", "/operator/logLevel"),
    ("operator.logFormat=logfmt", "/operator/logFormat"),
    ("operator.healthPort=80", "/operator/healthPort"),
    ("operator.healthPort=70000", "/operator/healthPort"),
    ("operator.watchNamespaces[0]=Not_A_Namespace", "/operator/watchNamespaces/0"),
    ("rbac.persistentVolumes=maybe", "/rbac/persistentVolumes"),
    ("serviceAccount.create=yes", "/serviceAccount/create"),
    ("resources.limits.memory=lots", "/resources/limits/memory"),
    ("livenessProbe.periodSeconds=0", "/livenessProbe/periodSeconds"),
    ("podSecurityContext.runAsUser=-1", "/podSecurityContext/runAsUser"),
    ("blacklistService.enabled=sure", "/blacklistService/enabled"),
    ("blacklistService.name=Flask_Blacklist", "/blacklistService/name"),
    ("blacklistService.spec.nodePort=8080", "/blacklistService/spec/nodePort"),
    ("blacklistService.spec.port=0", "/blacklistService/spec/port"),
    ("blacklistService.spec.replicas=-1", "/blacklistService/spec/replicas"),
    ("unknownKey=1", "unknownKey"),
    ("operator.watchAll=true", "watchAll"),
    ("metrics.port=80", "/metrics/port"),
    ("metrics.enabled=yes", "/metrics/enabled"),
    ("metrics.serviceMonitor.interval=often", "/metrics/serviceMonitor/interval"),
    ("metrics.serviceMonitor.scrapeTimeout=5", "/metrics/serviceMonitor/scrapeTimeout"),
    ("metrics.networkPolicy.enabled=no", "/metrics/networkPolicy/enabled"),
    ("metrics.networkPolicy.from[0].namespace=monitoring", "/metrics/networkPolicy/from/0"),
]


@pytest.mark.helm
@pytest.mark.parametrize(("set_value", "key"), BAD_VALUES)
def test_schema_rejects_bad_values(set_value: str, key: str) -> None:
    result = helm("template", RELEASE, str(CHART), "--set", set_value, check=False)
    assert result.returncode != 0, f"{set_value} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert key in result.stderr


def documented_keys(path: Path) -> Iterator[tuple[str, int]]:
    """Every mapping key of a YAML file as (dotted path, 0-based line), lists not entered."""

    def walk(node: yaml.Node, prefix: str) -> Iterator[tuple[str, int]]:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                dotted = f"{prefix}{key.value}"
                yield dotted, key.start_mark.line
                yield from walk(value, f"{dotted}.")

    root = yaml.compose(path.read_text())
    assert root is not None
    yield from walk(root, "")


def test_every_value_is_documented_by_a_comment_naming_it() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for dotted, line in documented_keys(CHART / "values.yaml"):
        first = line
        while first > 0 and lines[first - 1].lstrip().startswith("#"):
            first -= 1
        if first == line or not lines[first].lstrip().startswith(f"# {dotted} "):
            undocumented.append(dotted)
    assert not undocumented


def test_schema_describes_every_top_level_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == set(schema["properties"]) - {"global"}


@pytest.mark.helm
def test_dashboards_configmap_is_off_by_default_and_carries_the_sidecar_label() -> None:
    assert not [m for m in render() if m["kind"] == "ConfigMap"]
    manifests = render("dashboards.enabled=true", "dashboards.namespace=monitoring")
    config_map = only(manifests, "ConfigMap")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = CHART / "dashboards" / "blacklist.json"
    assert json.loads(config_map["data"]["blacklist.json"]) == json.loads(shipped.read_text())


SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"


def operator_service_monitors(
    *set_values: str, api_versions: tuple[str, ...] = ()
) -> list[Manifest]:
    return [
        manifest
        for manifest in render(*set_values, api_versions=api_versions)
        if manifest["kind"] == "ServiceMonitor"
    ]


@pytest.mark.helm
def test_metrics_port_is_named_metrics_and_served_by_a_service() -> None:
    manifests = render("metrics.port=9102")
    deployment = only(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--metrics-address=0.0.0.0:9102" in container["args"]
    ports = {port["name"]: port for port in container["ports"]}
    assert ports["metrics"] == {"name": "metrics", "containerPort": 9102, "protocol": "TCP"}
    service = only(manifests, "Service")
    assert service["metadata"]["name"] == "ops-blacklist-operator-metrics"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9102, "targetPort": "metrics", "protocol": "TCP"}
    ]
    # It selects the operator's pod, by the labels of the pod template.
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "operator"


@pytest.mark.helm
def test_metrics_can_be_switched_off() -> None:
    manifests = render("metrics.enabled=false")
    (container,) = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert not [argument for argument in container["args"] if "metrics" in argument]
    assert [port["name"] for port in container["ports"]] == ["health"]
    assert not [manifest for manifest in manifests if manifest["kind"] == "Service"]
    assert not operator_service_monitors(
        "metrics.enabled=false", "metrics.serviceMonitor.enabled=true",
        api_versions=(SERVICE_MONITOR_API,),
    )  # fmt: skip


@pytest.mark.helm
def test_operator_service_monitor_needs_the_value_and_the_crd() -> None:
    assert not operator_service_monitors()
    assert not operator_service_monitors(api_versions=(SERVICE_MONITOR_API,))
    # Asked for on a cluster without the Prometheus Operator's CRD: nothing that would fail.
    assert not operator_service_monitors("metrics.serviceMonitor.enabled=true")
    manifests = render(
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=prometheus",
        "metrics.serviceMonitor.interval=15s",
        api_versions=(SERVICE_MONITOR_API,),
    )
    monitor = only(manifests, "ServiceMonitor")
    service = only(manifests, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "blacklist-system"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["blacklist-system"]}
    # It selects the metrics Service, and only it, by labels that Service carries.
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert selector["app.kubernetes.io/component"] == "metrics"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"
    # The per-instance series keep their BlacklistService's namespace label.
    assert endpoint["honorLabels"] is True


def ingress_sources(policy: Manifest, port: int) -> list[list[dict[str, object]] | None]:
    """The ``from`` of each ingress rule that admits ``port`` (None: every source)."""
    return [
        rule.get("from")
        for rule in policy["spec"]["ingress"]
        if any(entry["port"] == port for entry in rule["ports"])
    ]


@pytest.mark.helm
def test_operator_metrics_admit_only_the_chosen_peers_and_liveness_anyone() -> None:
    manifests = render()
    policy = only(manifests, "NetworkPolicy")
    pod_labels = only(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["metadata"]["namespace"] == "blacklist-system"
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "operator"
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress: API server and databases
    # The kubelet probes the liveness port from the node: any source.
    assert ingress_sources(policy, 8080) == [None]
    # /metrics: the release namespace's pods and namespaces labelled for scraping, only.
    assert ingress_sources(policy, 8081) == [
        [
            {"podSelector": {}},
            {
                "namespaceSelector": {
                    "matchLabels": {"blacklist.dev/scrape-operator-metrics": "true"}
                }
            },
        ]
    ]
    assert {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]} == {
        8080,
        8081,
    }


@pytest.mark.helm
def test_operator_network_policy_takes_the_admins_peers_and_ports() -> None:
    policy = only(
        render(
            "metrics.port=9102",
            "operator.healthPort=9000",
            "metrics.networkPolicy.from[0].namespaceSelector.matchLabels.team=observability",
            "metrics.networkPolicy.from[1].ipBlock.cidr=10.9.0.0/16",
        ),
        "NetworkPolicy",
    )
    assert ingress_sources(policy, 9000) == [None]
    assert ingress_sources(policy, 9102) == [
        [
            {"namespaceSelector": {"matchLabels": {"team": "observability"}}},
            {"ipBlock": {"cidr": "10.9.0.0/16"}},
        ]
    ]
    # No peers: no one may scrape (a rule without peers would admit everyone).
    closed = only(render("metrics.networkPolicy.from=null"), "NetworkPolicy")
    assert ingress_sources(closed, 8081) == []
    assert ingress_sources(closed, 8080) == [None]
    # Without metrics only the liveness port is open; the policy can be left out.
    assert only(render("metrics.enabled=false"), "NetworkPolicy")["spec"]["ingress"] == [
        {"ports": [{"port": 8080, "protocol": "TCP"}]}
    ]
    off = render("metrics.networkPolicy.enabled=false")
    assert not [manifest for manifest in off if manifest["kind"] == "NetworkPolicy"]
