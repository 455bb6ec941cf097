"""The typed, validated form of a BlacklistService, parsed once from its raw body.

The CRD schema already rejects most bad input at ``kubectl apply``; this module
turns what reaches the operator into frozen dataclasses, so builders never see a
raw dict, and raises :class:`SpecError` for anything still wrong (for example an
object written before the schema was tightened).
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SQL_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_DURATION = re.compile(r"^([0-9]{1,7}[smhd])+$")
_DURATION_PART = re.compile(r"([0-9]+)([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_BAN_DURATION_SECONDS = 3650 * 86400

DEFAULT_IMAGE = "flask-blacklist-svc:v1"
DEFAULT_DATABASE_IMAGE = "postgres:16"
DEFAULT_DATABASE_NAME = "denied_access"
DEFAULT_DATABASE_USER = "blacklist"
DEFAULT_RECIPIENT = "test@domain.com"
DEFAULT_PORT = 5004
DEFAULT_SERVICE_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "256Mi"},
}
DEFAULT_DATABASE_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}


class SpecError(ValueError):
    """A spec the operator cannot act on; ``field`` names the offending path."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field_path = field_path


@dataclass(frozen=True)
class MailSpec:
    """How the service sends alert mails."""

    recipient: str = DEFAULT_RECIPIENT
    sender: str | None = None
    host: str | None = None
    port: int | None = None
    secret_name: str | None = None
    tls: bool = False
    ssl: bool = False


@dataclass(frozen=True)
class StorageSpec:
    """Where PostgreSQL keeps its data."""

    size: str = "1Gi"
    storage_class_name: str | None = None
    host_path: str | None = None
    retain_on_delete: bool = False


@dataclass(frozen=True)
class DatabaseSpec:
    """The PostgreSQL instance of the ledger."""

    image: str = DEFAULT_DATABASE_IMAGE
    name: str = DEFAULT_DATABASE_NAME
    user: str = DEFAULT_DATABASE_USER
    resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: DEFAULT_DATABASE_RESOURCES
    )
    storage: StorageSpec = field(default_factory=StorageSpec)


@dataclass(frozen=True)
class BlacklistServiceSpec:
    """The desired state of one BlacklistService."""

    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    replicas: int = 1
    port: int = DEFAULT_PORT
    node_port: int | None = None
    resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: DEFAULT_SERVICE_RESOURCES
    )
    trusted_proxies: tuple[IPNetwork, ...] = ()
    allowlist: tuple[IPNetwork, ...] = ()
    # Seconds a ban lasts after the address's latest hit; None: until lifted.
    ban_duration: int | None = None
    # Server worker processes per container; None: derived from the container's limits.
    workers: int | None = None
    mail: MailSpec = field(default_factory=MailSpec)
    database: DatabaseSpec = field(default_factory=DatabaseSpec)


@dataclass(frozen=True)
class BlacklistService:
    """A BlacklistService: its identity (for names and owner references) and its spec."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: BlacklistServiceSpec


def parse(body: Mapping[str, Any]) -> BlacklistService:
    """Parse a raw BlacklistService body; raise :class:`SpecError` on what is still wrong."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    return BlacklistService(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        uid=str(metadata.get("uid", "")),
        generation=int(metadata.get("generation") or 0),
        spec=parse_spec(spec),
    )


def parse_spec(spec: Mapping[str, Any]) -> BlacklistServiceSpec:
    """Parse ``spec`` with the CRD's defaults for anything absent."""
    mail = _mapping(spec, "mail", "spec.mail")
    database = _mapping(spec, "database", "spec.database")
    return BlacklistServiceSpec(
        image=_string(spec, "image", "spec.image", DEFAULT_IMAGE),
        image_pull_policy=_choice(
            spec, "imagePullPolicy", "spec.imagePullPolicy", ("Always", "IfNotPresent", "Never")
        ),
        replicas=_integer(spec, "replicas", "spec.replicas", 1, 0, 1000),
        port=_integer(spec, "port", "spec.port", DEFAULT_PORT, 1, 65535),
        node_port=_optional_integer(spec, "nodePort", "spec.nodePort", 30000, 32767),
        resources=_resources(spec, "spec.resources", DEFAULT_SERVICE_RESOURCES),
        trusted_proxies=_networks(spec, "trustedProxies", "spec.trustedProxies"),
        allowlist=_networks(spec, "allowlist", "spec.allowlist"),
        ban_duration=_duration(spec, "banDuration", "spec.banDuration"),
        workers=_optional_integer(spec, "workers", "spec.workers", 1, 64),
        mail=_parse_mail(mail),
        database=_parse_database(database),
    )


def _parse_mail(mail: Mapping[str, Any]) -> MailSpec:
    secret_ref = _mapping(mail, "secretRef", "spec.mail.secretRef")
    secret_name = secret_ref.get("name")
    if secret_ref and not (isinstance(secret_name, str) and _DNS_SUBDOMAIN.match(secret_name)):
        raise SpecError("spec.mail.secretRef.name", "must name a Secret")
    parsed = MailSpec(
        recipient=_string(mail, "recipient", "spec.mail.recipient", DEFAULT_RECIPIENT),
        sender=_optional_string(mail, "sender", "spec.mail.sender"),
        host=_optional_string(mail, "host", "spec.mail.host"),
        port=_optional_integer(mail, "port", "spec.mail.port", 1, 65535),
        secret_name=secret_name if secret_ref else None,
        tls=_boolean(mail, "tls", "spec.mail.tls"),
        ssl=_boolean(mail, "ssl", "spec.mail.ssl"),
    )
    if "@" not in parsed.recipient:
        raise SpecError("spec.mail.recipient", "must be an e-mail address")
    if parsed.tls and parsed.ssl:
        raise SpecError("spec.mail.tls", "STARTTLS and spec.mail.ssl are mutually exclusive")
    return parsed


def _parse_database(database: Mapping[str, Any]) -> DatabaseSpec:
    storage = _mapping(database, "storage", "spec.database.storage")
    name = _string(database, "name", "spec.database.name", DEFAULT_DATABASE_NAME)
    user = _string(database, "user", "spec.database.user", DEFAULT_DATABASE_USER)
    for path, identifier in (("spec.database.name", name), ("spec.database.user", user)):
        if not _SQL_IDENTIFIER.match(identifier):
            raise SpecError(path, "must be a PostgreSQL identifier (letters, digits, _)")
    size = _string(storage, "size", "spec.database.storage.size", "1Gi")
    if not _QUANTITY.match(size) or size.endswith("m"):
        raise SpecError("spec.database.storage.size", "must be a quantity such as 1Gi")
    host_path = _optional_string(storage, "hostPath", "spec.database.storage.hostPath")
    if host_path is not None and (not host_path.startswith("/") or ".." in host_path.split("/")):
        raise SpecError("spec.database.storage.hostPath", "must be an absolute path without '..'")
    return DatabaseSpec(
        image=_string(database, "image", "spec.database.image", DEFAULT_DATABASE_IMAGE),
        name=name,
        user=user,
        resources=_resources(database, "spec.database.resources", DEFAULT_DATABASE_RESOURCES),
        storage=StorageSpec(
            size=size,
            storage_class_name=_optional_string(
                storage, "storageClassName", "spec.database.storage.storageClassName"
            ),
            host_path=host_path,
            retain_on_delete=_boolean(
                storage, "retainOnDelete", "spec.database.storage.retainOnDelete"
            ),
        ),
    )


def host_path_allowed(path: str, prefixes: Sequence[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or below one, by whole path components.

    ``/data`` allows ``/data`` and ``/data/pg``, never ``/database``; both sides are
    normalised first (``//``, ``.`` and a trailing ``/`` do not matter).
    """
    if not path.startswith("/") or ".." in path.split("/"):
        return False
    normal = posixpath.normpath(path)
    for prefix in prefixes:
        allowed = posixpath.normpath(prefix)
        if not prefix.startswith("/") or ".." in prefix.split("/"):
            continue
        if normal == allowed or normal.startswith(allowed.rstrip("/") + "/"):
            return True
    return False


def check_host_path(bls: BlacklistService, prefixes: Sequence[str]) -> None:
    """Raise :class:`SpecError` when ``spec.database.storage.hostPath`` is not allowed.

    A hostPath volume exposes a node's filesystem to the database pod, and the
    PersistentVolume is created with the operator's cluster-wide rights: only the
    cluster admin decides where (the operator's ``--allowed-host-path-prefix``).
    """
    host_path = bls.spec.database.storage.host_path
    if host_path is None or host_path_allowed(host_path, prefixes):
        return
    if not prefixes:
        raise SpecError(
            "spec.database.storage.hostPath",
            f"{host_path} is refused: this operator allows no hostPath volumes (the cluster "
            "admin allows directories with --allowed-host-path-prefix, chart value "
            "storage.allowedHostPathPrefixes); leave hostPath out to use a StorageClass",
        )
    raise SpecError(
        "spec.database.storage.hostPath",
        f"{host_path} is refused: not under an allowed prefix ({', '.join(prefixes)})",
    )


def _mapping(parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, "must be an object")
    return value


def _string(parent: Mapping[str, Any], key: str, path: str, default: str) -> str:
    value = parent.get(key, default)
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise SpecError(path, "must be a non-empty string without spaces")
    return value


def _optional_string(parent: Mapping[str, Any], key: str, path: str) -> str | None:
    if parent.get(key) is None:
        return None
    return _string(parent, key, path, "")


def _choice(parent: Mapping[str, Any], key: str, path: str, choices: tuple[str, ...]) -> str:
    value = parent.get(key, choices[1])
    if value not in choices:
        raise SpecError(path, f"must be one of {', '.join(choices)}")
    return str(value)


def _boolean(parent: Mapping[str, Any], key: str, path: str) -> bool:
    value = parent.get(key, False)
    if not isinstance(value, bool):
        raise SpecError(path, "must be true or false")
    return value


def _integer(
    parent: Mapping[str, Any], key: str, path: str, default: int, low: int, high: int
) -> int:
    value = parent.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(path, f"must be an integer from {low} to {high}")
    return value


def _optional_integer(
    parent: Mapping[str, Any], key: str, path: str, low: int, high: int
) -> int | None:
    if parent.get(key) is None:
        return None
    return _integer(parent, key, path, low, low, high)


def parse_duration(text: str) -> int:
    """Seconds in a duration such as ``30m``, ``24h``, ``7d`` or ``1d12h`` (ValueError if not)."""
    if not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration such as 30m, 24h or 7d")
    return sum(int(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def _duration(parent: Mapping[str, Any], key: str, path: str) -> int | None:
    value = parent.get(key)
    if value is None:
        return None
    try:
        seconds = parse_duration(str(value))
    except ValueError as error:
        raise SpecError(path, str(error)) from None
    if not 1 <= seconds <= MAX_BAN_DURATION_SECONDS:
        raise SpecError(path, "must be from 1s to 3650d")
    return seconds


def _networks(parent: Mapping[str, Any], key: str, path: str) -> tuple[IPNetwork, ...]:
    values = parent.get(key) or []
    if not isinstance(values, list):
        raise SpecError(path, "must be a list of addresses or CIDRs")
    networks: list[IPNetwork] = []
    for index, value in enumerate(values):
        try:
            # strict=False: "10.0.0.1/8" means the network 10.0.0.0/8, as the CEL rule allows.
            networks.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError as error:
            raise SpecError(f"{path}[{index}]", f"is not an address or CIDR: {error}") from None
    return tuple(networks)


def _resources(
    parent: Mapping[str, Any], path: str, default: Mapping[str, Mapping[str, str]]
) -> Mapping[str, Mapping[str, str]]:
    value = parent.get("resources")
    if value is None:
        return default
    if not isinstance(value, Mapping):
        raise SpecError(path, "must be an object")
    parsed: dict[str, dict[str, str]] = {}
    for group in ("requests", "limits"):
        quantities = value.get(group) or {}
        if not isinstance(quantities, Mapping):
            raise SpecError(f"{path}.{group}", "must be an object")
        for resource, quantity in quantities.items():
            if resource not in ("cpu", "memory") or not _QUANTITY.match(str(quantity)):
                raise SpecError(f"{path}.{group}.{resource}", "must be a cpu or memory quantity")
            parsed.setdefault(group, {})[str(resource)] = str(quantity)
    return parsed
