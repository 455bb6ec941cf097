"""The Secret of an external PostgreSQL (``spec.database.external``), parsed and checked.

The Secret holds either ``url`` (``postgresql://user:password@host:port/dbname``)
or ``host``, ``port``, ``username``, ``password`` and optionally ``dbname``
(else ``spec.database.name``). :func:`parse_database_secret` turns its raw body
into an :class:`ExternalDatabase`, or raises :class:`DatabaseSecretError` naming
what is missing, which the reconcile reports as ``Ready=False`` with reason
``DatabaseSecretInvalid`` and retries. No I/O here: the caller reads the Secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
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


class DatabaseSecretError(Exception):
    """The Secret of the external database is missing or does not say how to connect."""


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
