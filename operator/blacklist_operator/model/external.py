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

from blacklist_contract.database import (
    URL_SCHEMES,
    VERIFYING_SSL_MODES,
    DatabaseUrlError,
    parse_url,
)
from blacklist_operator.model import fields
from blacklist_operator.model.knobs import CaReference, ExternalDatabaseSpec

URL_KEY = "url"
SEPARATE_KEYS = ("host", "port", "username", "password")
# What a PEM CA certificate holds; anything else in the key is a mistake worth naming.
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
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
    # The url's other TLS settings (blacklist_contract.database.TLS_PARAMETERS).
    tls: tuple[tuple[str, str], ...] = ()


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
    # The service connects with what the same function makes of the same url.
    try:
        settings = parse_url(url, default_sslmode=spec.sslmode)
    except DatabaseUrlError as error:
        raise DatabaseSecretError(f"Secret {name}: {error}") from None
    if not settings.user:
        raise DatabaseSecretError(f"Secret {name}: url lacks a user name")
    return ExternalDatabase(
        secret_name=name,
        from_url=True,
        host=settings.host,
        port=settings.port,
        database=settings.dbname,
        sslmode=settings.sslmode or spec.sslmode,
        checksum=checksum,
        user=settings.user,
        password=settings.password or "",
        tls=settings.tls,
    )


def _service_host(name: str, host: str, port: int, database: str) -> str:
    """The host as the service reads it, or DatabaseSecretError if it would read another.

    The service's DATABASE_URL is ``postgresql+psycopg2://$(DB_HOST):$(DB_PORT)/$(DB_NAME)``
    (builders.service): a host holding ``/``, ``?`` or ``,`` would change what it names.
    """
    composed = f"{URL_SCHEMES[-1]}://{host}:{port}/{database}"
    try:
        settings = parse_url(composed)
    except DatabaseUrlError:
        settings = None
    if settings is None or (settings.host, settings.port, settings.dbname) != (
        host.lower(),
        port,
        database,
    ):
        raise DatabaseSecretError(
            f"Secret {name}: host must be one host name or IPv4 address "
            "(for an IPv6 address, give a url with the address in brackets)"
        )
    return settings.host


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
        return _checked_tls(spec, _from_url(spec, _decoded(data, URL_KEY, name), checksum))
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
    port = _port(values["port"], name, "port")
    external = ExternalDatabase(
        secret_name=name,
        from_url=False,
        host=_service_host(name, values["host"], port, database),
        port=port,
        database=database,
        sslmode=spec.sslmode,
        checksum=checksum,
        user=values["username"],
        password=values["password"],
    )
    return _checked_tls(spec, external)


def _checked_tls(spec: ExternalDatabaseSpec, database: ExternalDatabase) -> ExternalDatabase:
    """Refuse a verifying sslmode without a CA: libpq would look for a file neither side has."""
    if database.sslmode in VERIFYING_SSL_MODES and spec.ca is None:
        raise DatabaseSecretError(
            f"sslmode {database.sslmode} needs the CA that signed the server's certificate: "
            "set spec.database.external.caSecretRef or caConfigMapRef"
        )
    return database


def ca_certificate(reference: CaReference, body: Mapping[str, Any] | None) -> str:
    """The PEM CA certificate ``reference`` names, from the object's raw ``body`` (None: missing).

    Raises :class:`DatabaseSecretError`, as for the database's own Secret: the resource
    is not ready until the CA is there, and neither side connects without it.
    """
    where = f"{reference.kind} {reference.name} (the external database's CA)"
    if body is None:
        raise DatabaseSecretError(f"{where} not found")
    data = body.get("data") or {}
    binary = body.get("binaryData") or {}
    if reference.key in data:
        text = (
            _decoded(data, reference.key, reference.name)
            if reference.kind == "Secret"
            else str(data[reference.key])
        )
    elif reference.key in binary:
        text = _decoded(binary, reference.key, reference.name)
    else:
        raise DatabaseSecretError(f"{where} has no key {reference.key}")
    if PEM_CERTIFICATE not in text:
        raise DatabaseSecretError(f"{where}: key {reference.key} holds no PEM certificate")
    return text


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
    """Raise :class:`DatabaseHostNotAllowedError` unless ``database``'s host is allowed."""
    # The only host: blacklist_contract.database refuses a url naming a second one.
    if not host_allowed(database.host, rules):
        raise DatabaseHostNotAllowedError(
            f"Secret {database.secret_name}: host {database.host[:100]} is not allowed for an "
            "external database by this operator (--allowed-external-database-hosts)"
        )
