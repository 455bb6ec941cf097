"""Pure translation of a Pod into what a local process needs: env, mounts, command, hosts.

This is the kubelet's part of the local pod runner, kept free of I/O so it can
be unit-tested: given a Pod (as a dict from the API) and lookups for the
ConfigMaps and Secrets it references, it computes the environment (with
``$(VAR)`` expansion as the kubelet does it), the command that stands in for
the container image, and the ``/etc/hosts`` that stands in for cluster DNS.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Lookup = Callable[[str, str], Mapping[str, str] | None]
"""(namespace, name) → the object's data (Secrets already decoded), or None if absent."""

POD_ADDRESS_PREFIX = "127.244"


class PodSpecError(ValueError):
    """The pod cannot start yet (like the kubelet's CreateContainerConfigError)."""


def local_address(pod_ip: str) -> str:
    """The loopback address that stands for a pod IP: 10.244.a.b → 127.244.a.b.

    Every pod gets its own address, so replicas listen on the same port side by
    side and a client's source address is seen as it is.
    """
    address = ipaddress.ip_address(pod_ip)
    if address.version != 4:
        raise PodSpecError(f"pod IP {pod_ip} is not IPv4")
    third, fourth = str(address).split(".")[2:]
    return f"{POD_ADDRESS_PREFIX}.{third}.{fourth}"


@dataclass(frozen=True)
class Program:
    """The local program that plays a container image."""

    kind: str  # "service", "postgres" or "operator"
    argv: tuple[str, ...]
    user: str | None = None  # run as this system user (None: as the runner)


def program_for(image: str, args: Sequence[str]) -> Program | None:
    """Map a container image of this product to the program it runs, or None if unknown."""
    repository = image.rsplit("@", 1)[0]
    name = repository.rsplit("/", 1)[-1].split(":", 1)[0]
    python = sys.executable
    if name in {"flask-blacklist-svc", "blacklist-service", "blacklist-svc"}:
        return Program("service", (python, "-m", "blacklist_service", *args))
    if name == "blacklist-operator":
        return Program("operator", (python, "-m", "blacklist_operator", *args))
    if name == "postgres":
        return Program("postgres", (python, "-m", "blacklist_devtools.postgres_entrypoint", *args))
    return None


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, defined: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` from already defined variables; ``$$`` escapes; unknown stays as is."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return defined.get(name, match.group(0))

    return _REFERENCE.sub(replace, value)


def field_value(pod: Mapping[str, Any], path: str, pod_address: str) -> str:
    """Resolve a downward-API ``fieldRef.fieldPath``."""
    metadata = pod["metadata"]
    values = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": pod_address,
        "status.hostIP": "127.0.0.1",
    }
    if path in values:
        return str(values[path])
    labels = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if labels:
        return str((metadata.get(labels.group(1)) or {}).get(labels.group(2), ""))
    raise PodSpecError(f"unsupported fieldRef {path}")


def _key_from(
    lookup: Lookup, kind: str, namespace: str, reference: Mapping[str, Any]
) -> str | None:
    data = lookup(namespace, reference["name"])
    optional = bool(reference.get("optional", False))
    if data is None:
        if optional:
            return None
        raise PodSpecError(f"{kind} {namespace}/{reference['name']} not found")
    if reference["key"] not in data:
        if optional:
            return None
        raise PodSpecError(f"key {reference['key']} not found in {kind} {reference['name']}")
    return data[reference["key"]]


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    pod_address: str,
    config_maps: Lookup,
    secrets: Lookup,
    service_env: Mapping[str, str],
) -> dict[str, str]:
    """The environment of a container, resolved the way the kubelet resolves it."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = dict(service_env)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, lookup in (("configMapRef", config_maps), ("secretRef", secrets)):
            reference = source.get(kind)
            if reference is None:
                continue
            data = lookup(namespace, reference["name"])
            if data is None:
                if reference.get("optional"):
                    continue
                raise PodSpecError(f"{kind} {namespace}/{reference['name']} not found")
            env.update({f"{prefix}{key}": value for key, value in data.items()})
    for variable in container.get("env") or []:
        name = variable["name"]
        if "value" in variable:
            env[name] = expand(str(variable["value"]), env)
            continue
        source = variable.get("valueFrom") or {}
        resolved: str | None
        if "configMapKeyRef" in source:
            resolved = _key_from(config_maps, "ConfigMap", namespace, source["configMapKeyRef"])
        elif "secretKeyRef" in source:
            resolved = _key_from(secrets, "Secret", namespace, source["secretKeyRef"])
        elif "fieldRef" in source:
            resolved = field_value(pod, source["fieldRef"]["fieldPath"], pod_address)
        elif "resourceFieldRef" in source:
            resolved = "0"
        else:
            resolved = ""
        if resolved is not None:
            env[name] = resolved
    return env


def decode_secret(data: Mapping[str, str] | None) -> dict[str, str]:
    """Decode a Secret's base64 ``data`` map."""
    return {key: base64.b64decode(value).decode() for key, value in (data or {}).items()}


def hosts_file(
    services: Sequence[Mapping[str, Any]],
    addresses: Mapping[tuple[str, str], str],
    own_namespace: str,
    own_name: str,
    own_address: str,
) -> str:
    """An ``/etc/hosts`` that resolves Service names to the address of a pod behind them.

    ``addresses`` maps (namespace, Service name) to a ready backing pod's local
    address; this is the stand-in for cluster DNS plus kube-proxy.
    """
    lines = ["127.0.0.1 localhost", f"{own_address} {own_name}"]
    lines.append("127.0.0.1 kubernetes.default.svc.cluster.local kubernetes.default.svc")
    for service in services:
        namespace = service["metadata"]["namespace"]
        name = service["metadata"]["name"]
        address = addresses.get((namespace, name))
        if address is None:
            continue
        names = [f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}.svc"]
        names.append(f"{name}.{namespace}")
        if namespace == own_namespace:
            names.append(name)
        lines.append(f"{address} {' '.join(names)}")
    return "\n".join(lines) + "\n"


def selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """Tell whether a Service's equality selector selects a pod's labels."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(key) == value for key, value in selector.items())
