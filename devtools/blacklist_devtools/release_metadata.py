"""What a release writes into its artifacts, as pure functions over text.

``make release`` (:mod:`blacklist_devtools.release`) checks the version and the
CHANGELOG, labels the images, and edits a copy of the chart's ``Chart.yaml``
and ``values.yaml``. The edits are line edits rather than a YAML round trip, so
the released ``values.yaml`` keeps every comment (it is the chart's
documentation); each edit is checked by loading both texts and comparing them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

# Semantic Versioning 2.0.0 (semver.org's own expression), without build metadata: an OCI
# tag cannot hold "+", so a version with it could not name an image.
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?$"
)

# A mapping key in block style, and what follows its colon.
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_./-]+):(?P<rest>.*)$")
# What follows the colon of a key whose value is a block scalar (| or >, with indicators).
_BLOCK_SCALAR = re.compile(r"^\s*[|>][-+0-9]*\s*(#.*)?$")
# Registries on this machine's loopback speak plain HTTP (as the test bed's does).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# Characters a Containerfile LABEL value may not hold here: quoting and variable expansion.
_UNSAFE_LABEL = re.compile(r'[\s"\\$]')


class ReleaseError(Exception):
    """The release cannot go on; the message says why and what to do."""


def check_version(version: str) -> str:
    """``version`` if it is a semantic version an OCI tag can carry; else :class:`ReleaseError`."""
    if "+" in version:
        raise ReleaseError(
            f"VERSION={version}: build metadata (+...) cannot be part of an image tag; leave it out"
        )
    if not SEMVER.match(version):
        raise ReleaseError(
            f"VERSION={version} is not a semantic version (MAJOR.MINOR.PATCH[-PRERELEASE]), "
            "e.g. 0.2.0 or 0.2.0-rc.1"
        )
    return version


def changelog_has_section(changelog: str, version: str) -> bool:
    """Whether the CHANGELOG text has a ``## [VERSION]`` heading (Keep a Changelog)."""
    return re.search(rf"^## \[{re.escape(version)}\]", changelog, re.MULTILINE) is not None


def set_scalar(text: str, path: Sequence[str], value: str) -> str:
    """``text`` (block-style YAML) with the scalar at ``path`` set to the string ``value``.

    Only that line changes; comments and layout stay. Raises :class:`ReleaseError` when the
    key is not found exactly once, holds a map or carries a comment on its line, and checks
    the result by loading both documents.
    """
    lines = text.splitlines(keepends=True)
    stack: list[tuple[int, str]] = []
    found: list[int] = []
    block_indent: int | None = None
    for number, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if block_indent is not None:
            if not stripped or indent > block_indent:
                continue  # a line of a block scalar, whatever it looks like
            block_indent = None
        if not stripped or stripped.startswith("#"):
            continue
        match = _KEY.match(line.rstrip("\n"))
        if match is None:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key, rest = match["key"], match["rest"]
        if [k for _, k in stack] + [key] == list(path):
            found.append(number)
        if _BLOCK_SCALAR.match(rest):
            block_indent = indent
        stack.append((indent, key))
    where = ".".join(path)
    if len(found) != 1:
        raise ReleaseError(f"{where}: expected one such key, found {len(found)}")
    line = lines[found[0]].rstrip("\n")
    match = _KEY.match(line)
    assert match is not None
    rest = match["rest"].strip()
    if not rest or "#" in rest or _BLOCK_SCALAR.match(rest):
        raise ReleaseError(f"{where}: not a plain scalar on one line: {line.strip()!r}")
    newline = lines[found[0]][len(line) :]
    lines[found[0]] = f"{match['indent']}{match['key']}: {json.dumps(value)}{newline}"
    edited = "".join(lines)
    expected = yaml.safe_load(text)
    _assign(expected, path, value)
    if yaml.safe_load(edited) != expected:
        raise ReleaseError(f"{where}: the line edit changed more than that value")
    return edited


def _assign(document: Any, path: Sequence[str], value: str) -> None:
    for key in path[:-1]:
        document = document[key]
    document[path[-1]] = value


def release_chart_yaml(chart_yaml: str, version: str) -> str:
    """``Chart.yaml`` of the release: ``version`` and ``appVersion`` both ``version``."""
    return set_scalar(set_scalar(chart_yaml, ["version"], version), ["appVersion"], version)


def release_values_yaml(
    values_yaml: str, operator_repository: str, operator_digest: str, service_image: str
) -> str:
    """``values.yaml`` of the release: the operator by digest, the service image by digest."""
    edited = set_scalar(values_yaml, ["image", "repository"], operator_repository)
    edited = set_scalar(edited, ["image", "digest"], operator_digest)
    return set_scalar(edited, ["defaults", "serviceImage"], service_image)


def oci_labels(version: str, revision: str, source: str) -> dict[str, str]:
    """The OCI annotations a released image carries as labels."""
    return {
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.source": source,
    }


def labelled_containerfile(base: str, labels: Mapping[str, str]) -> str:
    """A Containerfile that adds ``labels`` to the image ``base`` and nothing else.

    buildah (``--layers``) commits LABEL as an empty layer: the released image has the
    same layers as ``base``, only its configuration differs.
    """
    for key, value in labels.items():
        if _UNSAFE_LABEL.search(value) or _UNSAFE_LABEL.search(key):
            raise ReleaseError(f"label {key}={value!r}: no spaces, quotes, backslashes or $")
    body = " \\\n      ".join(f'{key}="{value}"' for key, value in labels.items())
    return f"FROM {base}\nLABEL {body}\n"


def plain_http(registry: str) -> bool:
    """Whether ``registry`` (``HOST[:PORT][/PATH]``) is on the loopback: plain HTTP, no TLS."""
    authority = registry.split("/", 1)[0]
    host = authority if authority.endswith("]") else authority.rsplit(":", 1)[0]
    return host in LOOPBACK_HOSTS


def install_command(registry: str, version: str, plain_http: bool) -> str:
    """The ``helm install`` of the published chart, as the release prints it."""
    command = (
        f"helm install blacklist-operator oci://{registry}/charts/blacklist-operator "
        f"--version {version} --namespace blacklist-system --create-namespace"
    )
    return command + (" --plain-http" if plain_http else "")
