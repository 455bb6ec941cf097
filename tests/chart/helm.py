"""Running helm against ``chart/`` for the chart tests: render, pick manifests, read rules."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from blacklist_devtools.cluster import binary

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "chart"
EXAMPLES = REPO_ROOT / "examples"
CRD_NAME = "blacklistservices.blacklist.dev"
RELEASE = "ops"

Manifest = dict[str, Any]


def helm(*arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm; raise with its stderr when it fails and ``check``."""
    completed = subprocess.run(
        [binary("helm"), *arguments], capture_output=True, text=True, check=False
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"helm {' '.join(arguments)} failed:\n{completed.stderr}")
    return completed


def render(
    *set_values: str, namespace: str = "blacklist-system", api_versions: tuple[str, ...] = ()
) -> list[Manifest]:
    """``helm template`` of the chart with ``--set`` values, as parsed manifests.

    ``api_versions`` are the ``--api-versions`` the rendering cluster is said to serve
    beyond the built-in ones (``.Capabilities.APIVersions``).
    """
    arguments = ["template", RELEASE, str(CHART), "--namespace", namespace]
    for value in set_values:
        arguments += ["--set", value]
    for api_version in api_versions:
        arguments += ["--api-versions", api_version]
    documents = yaml.safe_load_all(helm(*arguments).stdout)
    return [document for document in documents if document]


def only(manifests: list[Manifest], kind: str) -> Manifest:
    """The single manifest of ``kind``."""
    found = [manifest for manifest in manifests if manifest["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def rules_for(role: Manifest, resource: str) -> set[str]:
    """The verbs a Role or ClusterRole grants on ``resource`` (any API group)."""
    return {
        verb for rule in role["rules"] if resource in rule["resources"] for verb in rule["verbs"]
    }
