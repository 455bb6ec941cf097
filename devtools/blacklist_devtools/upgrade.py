"""An upgrade of the operator as users make one: two releases, ``helm upgrade``, the roll timed.

Shared by ``tests/e2e/test_upgrade.py`` (which checks everything the upgrade must
keep) and ``bench/upgrade_bench.py`` (which reports how long it takes). Two
throwaway releases of this tree, ``0.0.0-up.<hex>.a`` and ``.b``, are published
to the test bed's registry as ``make release`` publishes any release (without
SBOMs): the same layers, but each image carries its release in its labels and in
``BLACKLIST_VERSION``, so the two differ by digest and by what their
``*_build_info`` metrics report. :func:`published_pair` removes them from the
registry afterwards.

:class:`Traffic` is the client that calls a NodePort during the roll from
addresses of the client namespace, one that must be served and some that must
stay refused, and counts what it saw.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blacklist_devtools import images, registry, stack
from blacklist_devtools.http import get
from blacklist_devtools.kube import Cluster
from blacklist_devtools.network import NODE_ADDRESS
from blacklist_devtools.release import (
    CHART_NAME,
    RELEASES,
    REPO_ROOT,
    Options,
    Released,
    default_source,
    release,
)
from blacklist_devtools.release_metadata import plain_http

# The answer the served client expects: GET /?n=7.
SQUARE_QUERY, SQUARE = "/?n=7", "49.0"


def publish(version: str) -> Released:
    """Publish this tree as ``version`` to the test bed's registry, as ``make release`` does.

    The CHANGELOG section the release asks for is a throwaway file's; uncommitted
    changes are allowed (the revision is then ``<commit>-dirty``); no SBOM.
    """
    with tempfile.TemporaryDirectory(prefix="upgrade-release-") as scratch:
        changelog = Path(scratch) / "CHANGELOG.md"
        changelog.write_text(f"# Changelog\n\n## [{version}] - test\n- An upgrade test.\n")
        return release(
            Options(
                version=version,
                registry=registry.address(),
                source=default_source() or REPO_ROOT.as_uri(),
                changelog=changelog,
                allow_dirty=True,
                sbom=False,
            )
        )


def unpublish(version: str) -> None:
    """Delete what the release ``version`` pushed (images and chart) and its local record."""
    record = RELEASES / version / "release.json"
    if record.exists():
        published = Released(**json.loads(record.read_text()))
        for reference in published.images.values():
            named, _, digest = reference.partition("@")
            registry.delete_manifest(named.split("/", 1)[1].rpartition(":")[0], digest)
        if published.chart_digest:
            registry.delete_manifest(f"charts/{CHART_NAME}", published.chart_digest)
    shutil.rmtree(RELEASES / version, ignore_errors=True)


@contextlib.contextmanager
def published_pair() -> Iterator[tuple[Released, Released]]:
    """Releases A and B of this tree (``0.0.0-up.<hex>.a``, ``.b``); unpublished on exit."""
    stem = f"0.0.0-up.{uuid.uuid4().hex[:8]}"
    versions = (f"{stem}.a", f"{stem}.b")
    try:
        yield publish(versions[0]), publish(versions[1])
    finally:
        for version in versions:
            unpublish(version)


def helm_values(namespace: str) -> list[str]:
    """The values both releases are installed with: the operator watches ``namespace`` only.

    The default PostgreSQL image is the test bed's (the node cannot pull ``postgres:16``),
    the same in A and B, so only the service's default image changes between them.
    """
    return [
        "--set", f"operator.watchNamespaces={{{namespace}}}",
        "--set", "rbac.persistentVolumes=false",
        "--set", f"defaults.databaseImage={images.reference('postgres')}",
    ]  # fmt: skip


def helm_upgrade(
    cluster: Cluster, helm_path: str, release_name: str, namespace: str, published: Released
) -> None:
    """``helm upgrade`` the release to ``published``'s chart, with the same values; waits."""
    stack.helm(
        cluster, helm_path, "upgrade", release_name,
        f"oci://{published.registry}/charts/{CHART_NAME}", "--version", published.version,
        *(["--plain-http"] if plain_http(published.registry) else []),
        "--namespace", namespace, "--wait", "--timeout", "180s", stack.TAKE_OWNERSHIP,
        *helm_values(namespace),
    )  # fmt: skip


def helm_rollback(cluster: Cluster, helm_path: str, release_name: str, namespace: str) -> None:
    """``helm rollback`` the release to its first revision; waits."""
    stack.helm(
        cluster, helm_path, "rollback", release_name, "1",
        "--namespace", namespace, "--wait", "--timeout", "180s",
    )  # fmt: skip


def resource(namespace: str, name: str, replicas: int, image: str | None) -> dict[str, Any]:
    """A BlacklistService on the operator's default images, or pinned to the service ``image``.

    ClusterIP would do for the pinned one, but both get a NodePort as users' resources do.
    """
    spec: dict[str, Any] = {"replicas": replicas}
    if image is not None:
        spec["image"] = image
    return {
        "apiVersion": "blacklist.dev/v1",
        "kind": "BlacklistService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def rolled_out_on(deployment: dict[str, Any], image: str) -> bool:
    """The Deployment runs ``image`` with its rollout complete: every replica updated and ready."""
    template = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    status = deployment.get("status") or {}
    wanted = deployment["spec"]["replicas"]
    observed = status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
    counts = {status.get(key, 0) for key in ("updatedReplicas", "readyReplicas", "replicas")}
    return bool(template == image and observed and counts == {wanted})


def wait_rolled_out(
    cluster: Cluster, namespace: str, names: Sequence[str], image: str, timeout: float
) -> None:
    """Wait until the service Deployment of each of ``names`` is rolled out on ``image``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployments = [
            stack.get_json(cluster, "deployment", name, "-n", namespace) for name in names
        ]
        if all(rolled_out_on(deployment, image) for deployment in deployments):
            return
        time.sleep(0.25)
    raise TimeoutError(f"{namespace}/{', '.join(names)} not rolled out on {image} in {timeout} s")


_BUILD_INFO = re.compile(r'^blacklist_build_info\{[^}]*\bversion="([^"]*)"', re.MULTILINE)


def build_info_version(metrics: str) -> str | None:
    """The ``version`` label of ``blacklist_build_info`` in a replica's metrics text."""
    found = _BUILD_INFO.search(metrics)
    return found.group(1) if found else None


def replica_versions(cluster: Cluster, namespace: str, name: str) -> list[str | None]:
    """What ``blacklist_build_info`` says on each live replica of ``name`` (its metrics port)."""
    return [
        build_info_version(get(stack.metrics_url(url), timeout=5).body)
        for url in stack.instance(cluster, namespace, name).service_urls
    ]


@dataclass
class Traffic:
    """A client calling ``url`` (a NodePort) in a loop, from one served and some banned addresses.

    Each round asks ``GET /?n=7`` from ``served`` (expects 200 ``49.0``) and from each of
    ``banned`` (expects 403). An answer that is not the expected one is an error of the
    product; a connection that fails (refused, reset, timed out) is counted apart, as
    what a pod being stopped may cause.
    """

    url: str
    served: str
    banned: Sequence[str]
    requests: int = 0
    answered: int = 0
    connection_errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def call(self, source: str, status: int, body: str | None) -> None:
        """One request from ``source``; counts what it got."""
        self.requests += 1
        try:
            answer = get(f"{self.url}{SQUARE_QUERY}", source=source, timeout=3)
        except OSError as error:
            self.connection_errors.append(f"{source}: {error!r}")
            return
        self.answered += 1
        if answer.status != status or (body is not None and answer.body != body):
            self.unexpected.append(f"{source}: {answer.status} {answer.body[:80]!r}")

    def run(self) -> None:
        """Call until stopped, about ten rounds a second."""
        while not self.stop.is_set():
            self.call(self.served, 200, SQUARE)
            for address in self.banned:
                self.call(address, 403, None)
            time.sleep(0.1)

    def __enter__(self) -> Traffic:
        self.thread = threading.Thread(target=self.run, name="upgrade-traffic", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=15)


@dataclass(frozen=True)
class Roll:
    """How one ``helm upgrade`` (or rollback) went, seen from the client."""

    # From the start of the helm command to every default-image resource rolled out.
    seconds: float
    # The helm command alone (it waits for the operator's own Deployment).
    helm_seconds: float
    requests: int
    connection_errors: int
    unexpected: tuple[str, ...]


def timed_roll(
    traffic: Traffic,
    command: Callable[[], None],
    wait_for_resources: Callable[[], None],
    between: Callable[[], None] | None = None,
) -> Roll:
    """Run ``command`` (the helm upgrade or rollback), then ``wait_for_resources``, under traffic.

    ``between`` runs when the command has returned: the new operator runs and the roll
    of the resources is starting. ``traffic`` has run before and keeps running after;
    only what it saw between the start of the command and the end of the roll counts.
    """
    requests, errors = traffic.requests, len(traffic.connection_errors)
    unexpected = len(traffic.unexpected)
    started = time.monotonic()
    command()
    helm_seconds = time.monotonic() - started
    if between is not None:
        between()
    wait_for_resources()
    seconds = time.monotonic() - started
    return Roll(
        seconds=round(seconds, 1),
        helm_seconds=round(helm_seconds, 1),
        requests=traffic.requests - requests,
        connection_errors=len(traffic.connection_errors) - errors,
        unexpected=tuple(traffic.unexpected[unexpected:]),
    )


# The two resources of the scenario: one on the default images, one pinned to A's service image.
FOLLOWER, PINNED = "follower", "pinned"


@dataclass(frozen=True)
class Scenario:
    """Release A installed in ``namespace`` (the operator watching only it) and two resources."""

    cluster: Cluster
    helm_path: str
    namespace: str
    release_name: str
    a: Released
    b: Released

    def node_url(self, name: str) -> str:
        """``http://NODE:NODEPORT`` of resource ``name``."""
        service = stack.get_json(self.cluster, "service", name, "-n", self.namespace)
        return f"http://{NODE_ADDRESS}:{service['spec']['ports'][0]['nodePort']}"

    def deployment(self, name: str) -> dict[str, Any]:
        """The Deployment ``name`` as the API has it now."""
        return stack.get_json(self.cluster, "deployment", name, "-n", self.namespace)

    def upgrade(
        self, traffic: Traffic, between: Callable[[], None] | None = None, timeout: float = 240.0
    ) -> Roll:
        """``helm upgrade`` to B; timed until the follower runs B's service image everywhere."""
        return timed_roll(
            traffic,
            lambda: helm_upgrade(
                self.cluster, self.helm_path, self.release_name, self.namespace, self.b
            ),
            lambda: wait_rolled_out(
                self.cluster, self.namespace, [FOLLOWER], self.b.images["service"], timeout
            ),
            between,
        )

    def rollback(
        self, traffic: Traffic, between: Callable[[], None] | None = None, timeout: float = 240.0
    ) -> Roll:
        """``helm rollback`` to A (revision 1); timed until the follower runs A's image again."""
        return timed_roll(
            traffic,
            lambda: helm_rollback(self.cluster, self.helm_path, self.release_name, self.namespace),
            lambda: wait_rolled_out(
                self.cluster, self.namespace, [FOLLOWER], self.a.images["service"], timeout
            ),
            between,
        )


@contextlib.contextmanager
def installed(
    cluster: Cluster,
    helm_path: str,
    namespace: str,
    pair: tuple[Released, Released],
    follower_replicas: int = 2,
) -> Iterator[Scenario]:
    """Install A from the registry, create the follower and the pinned resource, wait for both.

    On exit the resources are deleted while the operator still runs (it removes their
    finalizers), then the release is uninstalled; the namespace is the caller's.
    """
    a, b = pair
    scenario = Scenario(cluster, helm_path, namespace, f"up-{uuid.uuid4().hex[:6]}", a, b)
    try:
        stack.install_published(
            cluster, helm_path, scenario.release_name, namespace, a, *helm_values(namespace)
        )
        for manifest in (
            resource(namespace, FOLLOWER, follower_replicas, None),
            resource(namespace, PINNED, 1, a.images["service"]),
        ):
            cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        for name in (FOLLOWER, PINNED):
            stack.wait_ready(cluster, namespace, name, stack.READY_TIMEOUT)
        yield scenario
    except BaseException:
        # What the operator said is the first thing to read when something here fails.
        log = cluster.kubectl(
            "logs", "-n", namespace, "--tail=40", "--prefix",
            "-l", f"app.kubernetes.io/instance={scenario.release_name}", check=False,
        )  # fmt: skip
        print(f"The operator's last lines:\n{log}", file=sys.stderr)
        raise
    finally:
        cluster.kubectl(
            "delete", "blacklistservices", "--all", "-n", namespace, "--ignore-not-found",
            "--wait", "--timeout=120s", check=False,
        )  # fmt: skip
        with contextlib.suppress(RuntimeError):
            stack.helm(
                cluster, helm_path, "uninstall", scenario.release_name,
                "--namespace", namespace, "--wait", "--timeout", "60s",
            )  # fmt: skip
