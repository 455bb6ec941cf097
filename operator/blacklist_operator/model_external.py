"""The Secret of an external PostgreSQL (``spec.database.external``), parsed and checked.

The Secret holds either ``url`` (``postgresql://user:password@host:port/dbname``)
or ``host``, ``port``, ``username``, ``password`` and optionally ``dbname``
(else ``spec.database.name``). :func:`parse_database_secret` turns its raw body
into an :class:`ExternalDatabase`, or raises :class:`DatabaseSecretError` naming
what is missing, which the reconcile reports as ``Ready=False`` with reason
``DatabaseSecretInvalid`` and retries. No I/O here: the caller reads the Secret.

An admin may restrict the hosts an external database may be on
(``--allowed-external-database-hosts``): :func:`check_host_allowed` refuses any
other with :class:`DatabaseHostNotAllowedError`, before the operator connects,
so a tenant cannot have the operator probe hosts and ports it can reach.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from blacklist_operator import model_fields as fields
from blacklist_operator.model_knobs import SSL_MODES, ExternalDatabaseSpec

URL_KEY = "url"
SEPARATE_KEYS = ("host", "port", "username", "password")
# Schemes both the service (SQLAlchemy) and the operator (libpq) understand.
URL_SCHEMES = ("postgresql", "postgresql+psycopg2")
DEFAULT_PORT = 5432
# URL query parameters by which libpq (and so the service) would reach another host.
URL_HOST_PARAMETERS = ("host", "hostaddr")
# A DNS name: letters, digits and inner hyphens per label; the last label starts with a
# letter, so nothing libc would read as an address ("127.1", "0x7f000001") passes as a name.
DNS_NAME = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"
)

# One entry of --allowed-external-database-hosts: a network, or a DNS suffix.
HostRule = ipaddress.IPv4Network | ipaddress.IPv6Network | str


class DatabaseSecretError(Exception):
    """The Secret of the external database is missing or does not say how to connect."""

    # The reason of the Ready=False condition and the Warning Event that report it.
    reason = "DatabaseSecretInvalid"


class DatabaseHostNotAllowedError(DatabaseSecretError):
    """The external database's host is not among those the operator's admin allows."""

    reason = "DatabaseHostNotAllowed"


@dataclass(frozen=True)
class ExternalDatabase:
    """Where the external database is and how to log in, from its Secret.

    ``checksum`` digests the Secret's data: it marks the service's pod template, so
    pods started with an edited Secret's old values are rolled onto the new ones.
    """

    secret_name: str
    # The Secret gives ``url``: the service takes DATABASE_URL from it as is.
    from_url: bool
    host: str
    port: int
    database: str
    sslmode: str
    checksum: str
    user: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    # Hosts the URL's query parameters name besides ``host`` (libpq would try them).
    query_hosts: tuple[str, ...] = ()


def secret_checksum(data: Mapping[str, str]) -> str:
    """A digest of a Secret's ``data`` (base64 values as stored), stable over key order."""
    digest = hashlib.sha256()
    for key in sorted(data):
        digest.update(f"{key}={data[key]}\n".encode())
    return digest.hexdigest()[:32]


def _decoded(data: Mapping[str, Any], key: str, secret_name: str) -> str:
    try:
        return base64.b64decode(str(data[key]), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise DatabaseSecretError(
            f"Secret {secret_name}: key {key} is not valid base64 UTF-8"
        ) from None


def _port(text: str, secret_name: str, key: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise DatabaseSecretError(f"Secret {secret_name}: {key} must be a port number (1-65535)")
    return int(text)


def _from_url(spec: ExternalDatabaseSpec, url: str, checksum: str) -> ExternalDatabase:
    name = spec.secret_name
    parts = urlsplit(url)
    if parts.scheme not in URL_SCHEMES:
        raise DatabaseSecretError(
            f"Secret {name}: url must start with {' or '.join(s + '://' for s in URL_SCHEMES)}"
        )
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise DatabaseSecretError(f"Secret {name}: url has an invalid port") from None
    database = unquote(parts.path.lstrip("/"))
    missing = [
        what
        for what, value in (
            ("a host", parts.hostname),
            ("a user name", parts.username),
            ("a database name", database),
        )
        if not value
    ]
    if missing:
        raise DatabaseSecretError(f"Secret {name}: url lacks {', '.join(missing)}")
    # A sslmode in the URL wins in libpq; the operator follows it too.
    sslmode = parse_qs(parts.query).get("sslmode", [spec.sslmode])[-1]
    if sslmode not in SSL_MODES:
        raise DatabaseSecretError(f"Secret {name}: url has an unknown sslmode {sslmode}")
    query = parse_qs(parts.query)
    return ExternalDatabase(
        secret_name=name,
        from_url=True,
        host=str(parts.hostname),
        port=port,
        database=database,
        sslmode=sslmode,
        checksum=checksum,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        query_hosts=tuple(value for key in URL_HOST_PARAMETERS for value in query.get(key, [])),
    )


def parse_database_secret(
    spec: ExternalDatabaseSpec, default_database: str, secret: Mapping[str, Any] | None
) -> ExternalDatabase:
    """The external database the Secret ``secret`` (None: missing) describes."""
    name = spec.secret_name
    if secret is None:
        raise DatabaseSecretError(f"Secret {name} (spec.database.external.secretRef) not found")
    data = secret.get("data") or {}
    checksum = secret_checksum(data)
    if URL_KEY in data:
        return _from_url(spec, _decoded(data, URL_KEY, name), checksum)
    missing = [key for key in SEPARATE_KEYS if key not in data]
    if missing:
        raise DatabaseSecretError(
            f"Secret {name} must hold the key url, or the keys host, port, username and "
            f"password: {', '.join(missing)} missing"
        )
    values = {key: _decoded(data, key, name) for key in SEPARATE_KEYS}
    database = _decoded(data, "dbname", name) if "dbname" in data else default_database
    if not fields.SQL_IDENTIFIER.match(database):
        raise DatabaseSecretError(
            f"Secret {name}: dbname must be a PostgreSQL identifier (letters, digits, _)"
        )
    if not values["host"] or not values["username"]:
        raise DatabaseSecretError(f"Secret {name}: host and username must not be empty")
    return ExternalDatabase(
        secret_name=name,
        from_url=False,
        host=values["host"],
        port=_port(values["port"], name, "port"),
        database=database,
        sslmode=spec.sslmode,
        checksum=checksum,
        user=values["username"],
        password=values["password"],
    )


def parse_allowed_hosts(text: str) -> tuple[HostRule, ...]:
    """``--allowed-external-database-hosts``: comma-separated CIDRs and DNS suffixes.

    ``10.0.0.0/8``, ``2001:db8::/32`` or one address; ``db.example.com`` (with or
    without a leading dot) allows that name and every name below it. Empty: any host.
    Raises ValueError naming an entry that is neither.
    """
    rules: list[HostRule] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            rules.append(ipaddress.ip_network(entry))
            continue
        except ValueError:
            pass
        suffix = entry.lower().removeprefix(".")
        if not DNS_NAME.fullmatch(suffix):
            raise ValueError(f"{entry}: neither a CIDR (with no host bits set) nor a DNS suffix")
        rules.append(suffix)
    return tuple(rules)


def host_allowed(host: str, rules: tuple[HostRule, ...]) -> bool:
    """Whether ``host`` (an address or a DNS name) is allowed by ``rules`` (empty: any)."""
    if not rules:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # Anything but a plain DNS name (a list of hosts, a socket directory, an
        # address libc would parse in a short form) is refused, never guessed at.
        name = host.lower().removesuffix(".")
        if not DNS_NAME.fullmatch(name):
            return False
        return any(
            isinstance(rule, str) and (name == rule or name.endswith(f".{rule}")) for rule in rules
        )
    return any(not isinstance(rule, str) and address in rule for rule in rules)


def check_host_allowed(database: ExternalDatabase, rules: tuple[HostRule, ...]) -> None:
    """Raise :class:`DatabaseHostNotAllowedError` unless each host ``database`` names is allowed."""
    for host in (database.host, *database.query_hosts):
        if not host_allowed(host, rules):
            raise DatabaseHostNotAllowedError(
                f"Secret {database.secret_name}: host {host[:100]} is not allowed for an "
                "external database by this operator (--allowed-external-database-hosts)"
            )
