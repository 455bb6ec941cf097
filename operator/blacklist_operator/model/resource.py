"""The typed, validated form of a BlacklistService, parsed once from its raw body.

The CRD schema already rejects most bad input at ``kubectl apply``; this module
turns what reaches the operator into frozen dataclasses, so builders never see a
raw dict, and raises :class:`SpecError` for anything still wrong (for example an
object written before the schema was tightened).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from blacklist_contract.prefixes import DEFAULT_IPV4_LENGTH, DEFAULT_IPV6_LENGTH
from blacklist_operator.model import fields, knobs

# Re-exported: callers know SpecError and IPNetwork as parts of the model.
from blacklist_operator.model.fields import IPNetwork as IPNetwork
from blacklist_operator.model.fields import SpecError as SpecError
from blacklist_operator.model.knobs import (
    AutoscalingSpec,
    BackupSpec,
    DisruptionSpec,
    ExternalDatabaseSpec,
    IngressSpec,
    MetricsSpec,
)

# The operator's built-in image defaults; the chart replaces them with its release's images
# (--default-service-image, --default-database-image).
DEFAULT_IMAGE = "flask-blacklist-svc:v1"
DEFAULT_DATABASE_IMAGE = "postgres:16"
DEFAULT_DATABASE_NAME = "denied_access"
DEFAULT_DATABASE_USER = "blacklist"
DEFAULT_RECIPIENT = "test@domain.com"
DEFAULT_PORT = 5004
# spec.service.type: how Service N exposes the service; the first is the default.
SERVICE_TYPES = ("NodePort", "ClusterIP", "LoadBalancer")
# spec.logFormat, the service's LOG_FORMAT; the first is the default.
LOG_FORMATS = ("text", "json")
# The service serves /metrics on this port of its own (METRICS_PORT), never on spec.port.
METRICS_PORT = 9090
DEFAULT_SERVICE_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "256Mi"},
}
DEFAULT_DATABASE_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}


@dataclass(frozen=True)
class ImageDefaults:
    """The images a resource runs when its spec names none: the operator's, not the CRD's.

    Not written into the resource: a resource without ``spec.image`` follows the
    operator, so upgrading the operator moves it; a pinned ``spec.image`` stays.
    """

    service: str = DEFAULT_IMAGE
    database: str = DEFAULT_DATABASE_IMAGE


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

    # spec.database.image, else the operator's default (ImageDefaults.database).
    image: str = DEFAULT_DATABASE_IMAGE
    name: str = DEFAULT_DATABASE_NAME
    user: str = DEFAULT_DATABASE_USER
    resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: DEFAULT_DATABASE_RESOURCES
    )
    storage: StorageSpec = field(default_factory=StorageSpec)
    # A PostgreSQL run elsewhere; None: the bundled one.
    external: ExternalDatabaseSpec | None = None
    # The scheduled pg_dump of the bundled database; None: no backup.
    backup: BackupSpec | None = None


@dataclass(frozen=True)
class BlacklistServiceSpec:
    """The desired state of one BlacklistService."""

    # spec.image, else the operator's default (ImageDefaults.service).
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    replicas: int = 1
    port: int = DEFAULT_PORT
    node_port: int | None = None
    # Service N's type (spec.service.type): NodePort, ClusterIP or LoadBalancer.
    service_type: str = SERVICE_TYPES[0]
    resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: DEFAULT_SERVICE_RESOURCES
    )
    trusted_proxies: tuple[IPNetwork, ...] = ()
    allowlist: tuple[IPNetwork, ...] = ()
    # Seconds a ban lasts after the address's latest hit; None: until lifted.
    ban_duration: int | None = None
    # A hit bans the covering prefix of the caller's address: (IPv4 bits, IPv6 bits).
    ban_prefix_lengths: tuple[int, int] = (DEFAULT_IPV4_LENGTH, DEFAULT_IPV6_LENGTH)
    # Server worker processes per container; None: derived from the container's limits.
    workers: int | None = None
    # The service's LOG_FORMAT: text or json.
    log_format: str = LOG_FORMATS[0]
    mail: MailSpec = field(default_factory=MailSpec)
    database: DatabaseSpec = field(default_factory=DatabaseSpec)
    disruption: DisruptionSpec = field(default_factory=DisruptionSpec)
    autoscaling: AutoscalingSpec | None = None
    metrics: MetricsSpec = field(default_factory=MetricsSpec)
    ingress: IngressSpec | None = None


@dataclass(frozen=True)
class BlacklistService:
    """A BlacklistService: its identity (for names and owner references) and its spec."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: BlacklistServiceSpec


def parse(body: Mapping[str, Any], images: ImageDefaults | None = None) -> BlacklistService:
    """Parse a raw BlacklistService body; raise :class:`SpecError` on what is still wrong.

    ``images`` are the operator's defaults for an absent ``spec.image`` and
    ``spec.database.image`` (the built-in ones when None).
    """
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    return BlacklistService(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        uid=str(metadata.get("uid", "")),
        generation=int(metadata.get("generation") or 0),
        spec=parse_spec(spec, images),
    )


def parse_spec(
    spec: Mapping[str, Any], images: ImageDefaults | None = None
) -> BlacklistServiceSpec:
    """Parse ``spec`` with the CRD's defaults, and the operator's images, for anything absent."""
    images = images or ImageDefaults()
    mail = fields.mapping(spec, "mail", "spec.mail")
    database = fields.mapping(spec, "database", "spec.database")
    node_port = fields.optional_integer(spec, "nodePort", "spec.nodePort", 30000, 32767)
    service_type = _parse_service_type(spec)
    if node_port is not None and service_type == "ClusterIP":
        raise SpecError("spec.nodePort", "needs spec.service.type NodePort or LoadBalancer")
    return BlacklistServiceSpec(
        image=fields.string(spec, "image", "spec.image", images.service),
        image_pull_policy=fields.choice(
            spec, "imagePullPolicy", "spec.imagePullPolicy", ("Always", "IfNotPresent", "Never")
        ),
        replicas=fields.integer(spec, "replicas", "spec.replicas", 1, 0, 1000),
        port=_parse_port(spec),
        node_port=node_port,
        service_type=service_type,
        resources=fields.resources(spec, "spec.resources", DEFAULT_SERVICE_RESOURCES),
        trusted_proxies=fields.networks(spec, "trustedProxies", "spec.trustedProxies"),
        allowlist=fields.networks(spec, "allowlist", "spec.allowlist"),
        ban_duration=fields.duration(spec, "banDuration", "spec.banDuration"),
        ban_prefix_lengths=_parse_prefix_lengths(spec),
        workers=fields.optional_integer(spec, "workers", "spec.workers", 1, 64),
        log_format=_parse_log_format(spec),
        mail=_parse_mail(mail),
        database=_parse_database(database, images.database),
        disruption=knobs.parse_disruption(spec),
        autoscaling=knobs.parse_autoscaling(spec),
        metrics=knobs.parse_metrics(spec),
        ingress=knobs.parse_ingress(spec),
    )


def _parse_log_format(spec: Mapping[str, Any]) -> str:
    log_format = spec.get("logFormat", LOG_FORMATS[0])
    if log_format not in LOG_FORMATS:
        raise SpecError("spec.logFormat", f"must be one of {', '.join(LOG_FORMATS)}")
    return str(log_format)


def _parse_service_type(spec: Mapping[str, Any]) -> str:
    service = fields.mapping(spec, "service", "spec.service")
    service_type = service.get("type", SERVICE_TYPES[0])
    if service_type not in SERVICE_TYPES:
        raise SpecError("spec.service.type", f"must be one of {', '.join(SERVICE_TYPES)}")
    return str(service_type)


def _parse_port(spec: Mapping[str, Any]) -> int:
    port = fields.integer(spec, "port", "spec.port", DEFAULT_PORT, 1, 65535)
    if port == METRICS_PORT:
        raise SpecError("spec.port", f"cannot be {METRICS_PORT}, the service's metrics port")
    return port


def _parse_prefix_lengths(spec: Mapping[str, Any]) -> tuple[int, int]:
    lengths = fields.mapping(spec, "banPrefixLengths", "spec.banPrefixLengths")
    return (
        fields.integer(lengths, "ipv4", "spec.banPrefixLengths.ipv4", DEFAULT_IPV4_LENGTH, 1, 32),
        fields.integer(lengths, "ipv6", "spec.banPrefixLengths.ipv6", DEFAULT_IPV6_LENGTH, 1, 128),
    )


def _parse_mail(mail: Mapping[str, Any]) -> MailSpec:
    secret_ref = fields.mapping(mail, "secretRef", "spec.mail.secretRef")
    secret_name = secret_ref.get("name")
    named = isinstance(secret_name, str) and fields.DNS_SUBDOMAIN.match(secret_name)
    if secret_ref and not named:
        raise SpecError("spec.mail.secretRef.name", "must name a Secret")
    parsed = MailSpec(
        recipient=fields.string(mail, "recipient", "spec.mail.recipient", DEFAULT_RECIPIENT),
        sender=fields.optional_string(mail, "sender", "spec.mail.sender"),
        host=fields.optional_string(mail, "host", "spec.mail.host"),
        port=fields.optional_integer(mail, "port", "spec.mail.port", 1, 65535),
        secret_name=secret_name if secret_ref else None,
        tls=fields.boolean(mail, "tls", "spec.mail.tls"),
        ssl=fields.boolean(mail, "ssl", "spec.mail.ssl"),
    )
    if "@" not in parsed.recipient:
        raise SpecError("spec.mail.recipient", "must be an e-mail address")
    if parsed.tls and parsed.ssl:
        raise SpecError("spec.mail.tls", "STARTTLS and spec.mail.ssl are mutually exclusive")
    return parsed


def _parse_database(database: Mapping[str, Any], default_image: str) -> DatabaseSpec:
    storage = fields.mapping(database, "storage", "spec.database.storage")
    name = fields.string(database, "name", "spec.database.name", DEFAULT_DATABASE_NAME)
    user = fields.string(database, "user", "spec.database.user", DEFAULT_DATABASE_USER)
    for path, identifier in (("spec.database.name", name), ("spec.database.user", user)):
        if not fields.SQL_IDENTIFIER.match(identifier):
            raise SpecError(path, "must be a PostgreSQL identifier (letters, digits, _)")
    size = fields.string(storage, "size", "spec.database.storage.size", "1Gi")
    if not fields.QUANTITY.match(size) or size.endswith("m"):
        raise SpecError("spec.database.storage.size", "must be a quantity such as 1Gi")
    host_path = fields.optional_string(storage, "hostPath", "spec.database.storage.hostPath")
    if host_path is not None and (not host_path.startswith("/") or ".." in host_path.split("/")):
        raise SpecError("spec.database.storage.hostPath", "must be an absolute path without '..'")
    return DatabaseSpec(
        image=fields.string(database, "image", "spec.database.image", default_image),
        name=name,
        user=user,
        resources=fields.resources(database, "spec.database.resources", DEFAULT_DATABASE_RESOURCES),
        storage=StorageSpec(
            size=size,
            storage_class_name=fields.optional_string(
                storage, "storageClassName", "spec.database.storage.storageClassName"
            ),
            host_path=host_path,
            retain_on_delete=fields.boolean(
                storage, "retainOnDelete", "spec.database.storage.retainOnDelete"
            ),
        ),
        external=knobs.parse_external(database),
        backup=knobs.parse_backup(database),
    )


def host_path_allowed(path: str, prefixes: Sequence[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or below one, by whole path components.

    ``/data`` allows ``/data`` and ``/data/pg``, never ``/database``; both sides are
    normalised first (``//``, ``.`` and a trailing ``/`` do not matter).
    """
    return _allowed_prefix(path, prefixes) is not None


def check_host_path(resource: BlacklistService, prefixes: Sequence[str]) -> None:
    """Raise :class:`SpecError` when ``spec.database.storage.hostPath`` is not allowed.

    A hostPath volume exposes a node's filesystem to the database pod, and the
    PersistentVolume is created with the operator's cluster-wide rights: only the
    cluster admin decides where (the operator's ``--allowed-host-path-prefix``).
    """
    host_path = resource.spec.database.storage.host_path
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


def _allowed_prefix(path: str, prefixes: Sequence[str]) -> str | None:
    """The allowed prefix (normalised) that ``path`` is or lies below, if any."""
    if not path.startswith("/") or ".." in path.split("/"):
        return None
    normal = posixpath.normpath(path)
    for prefix in prefixes:
        allowed = posixpath.normpath(prefix)
        if not prefix.startswith("/") or ".." in prefix.split("/"):
            continue
        if normal == allowed or normal.startswith(allowed.rstrip("/") + "/"):
            return allowed
    return None


def host_path_directory(resource: BlacklistService, prefixes: Sequence[str]) -> str:
    """The node directory of a hostPath resource, chosen by the operator: ``PREFIX/NS/N``.

    ``spec.database.storage.hostPath`` only picks which allowed prefix (the one it
    lies under); the directory below it is always the resource's own, one level per
    namespace and name, neither of which may hold a ``/``. So no two resources share
    a directory, none is the prefix itself, and none lies inside another's, where
    that tenant's database could have put a symlink to the node's ``/``.
    """
    host_path = resource.spec.database.storage.host_path
    prefix = None if host_path is None else _allowed_prefix(host_path, prefixes)
    if prefix is None:
        check_host_path(resource, prefixes)
        raise SpecError("spec.database.storage.hostPath", "no hostPath is asked for")
    return posixpath.join(prefix, resource.namespace, resource.name)


def place_host_path(
    resource: BlacklistService, prefixes: Sequence[str], kept: str | None = None
) -> BlacklistService:
    """``resource`` with ``storage.host_path`` the directory its volume uses on the node.

    That is :func:`host_path_directory`, or ``kept``: the path of the resource's own
    PersistentVolume made before the operator chose directories (a PV's source is
    immutable). Without a hostPath, ``resource`` itself.
    """
    storage = resource.spec.database.storage
    if storage.host_path is None:
        return resource
    directory = kept or host_path_directory(resource, prefixes)
    database = replace(resource.spec.database, storage=replace(storage, host_path=directory))
    return replace(resource, spec=replace(resource.spec, database=database))


def with_images(
    resource: BlacklistService, service: str | None, database: str | None
) -> BlacklistService:
    """``resource`` running ``service`` and ``database`` images, not its spec's (None: its own).

    For a resource that waits for its turn to roll onto the operator's new default
    images (:mod:`blacklist_operator.runtime.rollout`): it keeps the images it runs.
    """
    spec = resource.spec
    if service is not None:
        spec = replace(spec, image=service)
    if database is not None:
        spec = replace(spec, database=replace(spec.database, image=database))
    return replace(resource, spec=spec)
