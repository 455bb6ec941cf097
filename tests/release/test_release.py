"""``make release`` into the test bed's registry, then the published chart installed as users do.

The release of a test version (``0.0.0-test.r<random>``) pushes the images and the
chart to ``localhost:5050``; the tests read back what the registry serves (labels,
layers), the SBOMs, and then ``helm install oci://…`` the chart into a fresh
namespace, the operator watching only that namespace, and check that a
``BlacklistService`` without ``spec.image`` runs the release's service image by
digest. What the release published is deleted from the registry at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from blacklist_devtools import images, registry, stack
from blacklist_devtools.cluster import binary
from blacklist_devtools.kube import Cluster
from blacklist_devtools.release import RELEASES, Released

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.testbed]

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = "https://example.org/blacklist-operator"
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


def run_release(version: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """``make release``'s command, as the Makefile runs it."""
    return subprocess.run(
        [sys.executable, "-m", "blacklist_devtools.release", "--version", version,
         "--source", SOURCE, *arguments],
        capture_output=True, text=True, check=False, cwd=REPO_ROOT,
    )  # fmt: skip


def registry_json(path: str, accept: str = "application/json") -> dict[str, Any]:
    """A document the test bed's registry serves under ``/v2/``."""
    request = urllib.request.Request(
        f"http://{registry.address()}/v2/{path}", headers={"Accept": accept}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        found: dict[str, Any] = json.load(response)
        return found


def image_manifest_and_config(reference: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest and the configuration of ``HOST/NAME[:TAG]@DIGEST``, from the registry."""
    named, _, digest = reference.partition("@")
    repository = named.split("/", 1)[1].rpartition(":")[0]
    manifest = registry_json(f"{repository}/manifests/{digest}", MANIFEST_TYPES)
    config = registry_json(f"{repository}/blobs/{manifest['config']['digest']}")
    return manifest, config


def image_store_env() -> dict[str, str]:
    """The environment under which podman sees hack/images.sh's image store."""
    local = REPO_ROOT / ".local" / "images"
    return {
        "CONTAINERS_CONF": str(local / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(local / "storage.conf"),
    }


@dataclass(frozen=True)
class ReleaseOfTheTests:
    """What the release of the tests published, and what it printed."""

    published: Released
    stdout: str


@pytest.fixture(scope="module")
def test_release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseOfTheTests]:
    """A release of a test version; its artifacts are removed from the registry afterwards."""
    version = f"0.0.0-test.r{uuid.uuid4().hex[:8]}"
    changelog = tmp_path_factory.mktemp("release") / "CHANGELOG.md"
    changelog.write_text(f"# Changelog\n\n## [{version}] - test\n- A release of the tests.\n")
    completed = run_release(version, "--allow-dirty", "--changelog", str(changelog))
    record = RELEASES / version / "release.json"
    try:
        assert completed.returncode == 0, completed.stderr
        yield ReleaseOfTheTests(Released(**json.loads(record.read_text())), completed.stdout)
    finally:
        if record.exists():
            published = Released(**json.loads(record.read_text()))
            for reference in published.images.values():
                named, _, digest = reference.partition("@")
                registry.delete_manifest(named.split("/", 1)[1].rpartition(":")[0], digest)
            registry.delete_manifest("charts/blacklist-operator", published.chart_digest)
        shutil.rmtree(RELEASES / version, ignore_errors=True)


def test_a_version_that_is_not_semantic_or_not_in_the_changelog_is_refused() -> None:
    not_semantic = run_release("1.0")
    assert not_semantic.returncode == 1
    assert "not a semantic version" in not_semantic.stderr
    # The repository's CHANGELOG has no section for a test version: refused before any build.
    missing = run_release("0.0.0-test.unlisted", "--allow-dirty")
    assert missing.returncode == 1
    assert "no `## [0.0.0-test.unlisted]` section" in missing.stderr
    assert "images:" not in missing.stderr


def test_the_images_carry_the_oci_labels_and_the_built_layers(
    test_release: ReleaseOfTheTests,
) -> None:
    released = test_release.published
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    ).stdout.strip()
    committed = datetime.fromtimestamp(
        int(
            subprocess.run(
                ["git", "log", "-1", "--format=%ct"],
                capture_output=True, text=True, check=True, cwd=REPO_ROOT,
            ).stdout
        ),
        UTC,
    )  # fmt: skip
    version, registry_address = released.version, released.registry
    assert released.revision in (head, f"{head}-dirty")
    names = {"service": "flask-blacklist-svc", "operator": "blacklist-operator"}
    for kind, name in names.items():
        reference = released.images[kind]
        assert reference.startswith(f"{registry_address}/{name}:{version}@sha256:")
        # The tag resolves to the recorded digest.
        assert registry.manifest_digest(name, version) == reference.partition("@")[2]
        manifest, config = image_manifest_and_config(reference)
        labels = config["config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == version
        assert labels["org.opencontainers.image.revision"] == released.revision
        assert labels["org.opencontainers.image.source"] == SOURCE
        # The release's environment, which each side's *_build_info metric reports.
        environment = config["config"]["Env"]
        assert f"BLACKLIST_VERSION={version}" in environment
        assert f"BLACKLIST_REVISION={released.revision}" in environment
        # Created at the commit's time: the same commit and version give the same digest.
        assert config["created"].startswith(committed.strftime("%Y-%m-%dT%H:%M:%S"))
        # Labels only: the layers are those of the image `hack/images.sh build` made.
        built = subprocess.run(
            ["podman", "image", "inspect", "--format", "{{json .RootFS.Layers}}",
             released.built[kind]],
            capture_output=True, text=True, check=True, env={**os.environ, **image_store_env()},
        )  # fmt: skip
        assert config["rootfs"]["diff_ids"] == json.loads(built.stdout)
        assert len(manifest["layers"]) == len(config["rootfs"]["diff_ids"])


def test_each_image_has_an_spdx_sbom_of_what_it_holds(test_release: ReleaseOfTheTests) -> None:
    expected = {"service": {"flask", "granian", "sqlalchemy"}, "operator": {"kopf", "kubernetes"}}
    for kind, packages in expected.items():
        sbom = json.loads(Path(test_release.published.sboms[kind]).read_text())
        assert sbom["spdxVersion"] == "SPDX-2.3"
        names = {package["name"].lower() for package in sbom["packages"]}
        assert packages <= names, f"{kind}: {packages - names} missing"
        assert {"python3.11", "libc6"} <= names  # the Debian packages of the base too


def test_the_published_chart_installs_and_runs_the_release_by_digest(
    cluster: Cluster, namespace: str, test_release: ReleaseOfTheTests
) -> None:
    helm = binary("helm")
    released = test_release.published
    version = released.version
    assert released.chart.startswith(
        f"oci://{released.registry}/charts/blacklist-operator:{version}@sha256:"
    )
    assert released.install in test_release.stdout
    release_name = f"release-{uuid.uuid4().hex[:6]}"
    service_image = released.images["service"]
    digest = service_image.partition("@")[2]
    try:
        # As the release prints it (and as `make demo` installs); the operator watches only
        # this namespace, and takes over the cluster-wide CRD as every test install does
        # (crds.keep leaves it afterwards).
        stack.install_published(
            cluster, helm, release_name, namespace, released,
            "--set", f"operator.watchNamespaces={{{namespace}}}",
            "--set", "rbac.persistentVolumes=false",
        )  # fmt: skip
        operator = stack.get_json(
            cluster, "deployment", f"{release_name}-blacklist-operator", "-n", namespace
        )
        operator_image = released.images["operator"]
        tagged, _, operator_digest = operator_image.partition("@")
        assert operator["spec"]["template"]["spec"]["containers"][0]["image"] == (
            f"{tagged.rpartition(':')[0]}@{operator_digest}"
        )
        resource = {
            "apiVersion": "blacklist.dev/v1",
            "kind": "BlacklistService",
            "metadata": {"name": "released", "namespace": namespace},
            "spec": {"replicas": 1, "database": {"image": images.reference("postgres")}},
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(resource))
        ready = stack.wait_ready(cluster, namespace, "released", stack.READY_TIMEOUT)
        assert ready["status"]["image"] == service_image
        assert "image" not in ready["spec"]
        pods = stack.get_json(
            cluster, "pods", "-n", namespace,
            "-l", "app.kubernetes.io/instance=released,app.kubernetes.io/component=service",
        )["items"]  # fmt: skip
        assert pods
        for pod in pods:
            assert pod["spec"]["containers"][0]["image"] == service_image
            assert pod["status"]["containerStatuses"][0]["imageID"].endswith(digest)
    finally:
        cluster.kubectl(
            "delete", "blacklistservice", "released", "-n", namespace, "--ignore-not-found",
            "--wait", "--timeout=120s", check=False,
        )  # fmt: skip
        subprocess.run(
            [helm, "--kubeconfig", str(cluster.kubeconfig), "uninstall", release_name,
             "--namespace", namespace, "--wait", "--timeout", "60s"],
            capture_output=True, check=False,
        )  # fmt: skip
