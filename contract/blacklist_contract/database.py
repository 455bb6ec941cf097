"""A PostgreSQL URL turned into libpq's keyword settings, once, for the operator and the service.

The service writes hits to the ledger named by its ``DATABASE_URL``; the operator
reads the same ledger to build the ban list. If the two parsed the URL each in its
own way, ``postgresql://u@decoy/ledger?host=real`` would send the service's writes
to ``real`` while the operator reads ``decoy``. So both call :func:`parse_url`, and
neither hands the URL itself to a driver: each connects with the keywords of the
:class:`ConnectionSettings` it returns (:meth:`ConnectionSettings.keywords`).

What a URL may say is kept to what reaches one database unambiguously:

- one host (no list, no socket directory), one port, one database name;
- a query parameter repeating the host, ``hostaddr``, port, database, user or
  password is accepted only when it says the same as the URL's own part, and
  dropped; one saying something else is refused: there is only one database;
- TLS settings that need no file: ``sslmode``, ``channel_binding``,
  ``ssl_min_protocol_version``, ``ssl_max_protocol_version``, ``sslsni``;
- nothing naming a file (``sslrootcert``, ``sslcert``, ``sslkey``, ``sslcrl``,
  ``passfile``, ``service``...): the service's pod and the operator do not have
  the same files. The CA certificate comes from a Secret key both sides read
  (``spec.database.external.caSecretRef``), passed as ``sslrootcert`` by each.

Anything else is refused with :class:`DatabaseUrlError` naming it. Pure: no
driver is imported, nothing is resolved or opened.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

# Schemes both the service (SQLAlchemy) and the operator (libpq) understand.
URL_SCHEMES = ("postgresql", "postgresql+psycopg2")
DEFAULT_PORT = 5432
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# The modes under which libpq checks the server's certificate against a CA.
VERIFYING_SSL_MODES = ("verify-ca", "verify-full")
# TLS keywords a URL may carry, each with the values libpq accepts.
TLS_PARAMETERS: dict[str, tuple[str, ...]] = {
    "channel_binding": ("disable", "prefer", "require"),
    "ssl_min_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "ssl_max_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "sslsni": ("0", "1"),
}
# Parameters that name a file or a service definition on the machine that connects.
FILE_PARAMETERS = (
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslcrldir",
    "sslpassword",
    "passfile",
    "service",
    "servicefile",
)
# A host name: letters, digits, dots, hyphens and underscores; never a list (","), a
# socket directory ("/") or anything a shell or a connection string would read twice.
HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?")


class DatabaseUrlError(ValueError):
    """The URL does not name exactly one database in a way both sides read alike."""


@dataclass(frozen=True)
class ConnectionSettings:
    """Where and how to connect: one host, port and database, and the TLS settings.

    ``user``, ``password`` and ``sslmode`` are None when the URL does not give them:
    libpq then takes ``PGUSER``, ``PGPASSWORD`` and ``PGSSLMODE`` from the environment
    (the service's pod sets them by reference to a Secret).
    """

    host: str
    port: int
    dbname: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sslmode: str | None = None
    # The other TLS keywords the URL gave (TLS_PARAMETERS), sorted by name.
    tls: tuple[tuple[str, str], ...] = ()

    def keywords(self) -> dict[str, str]:
        """The keywords for libpq (``psycopg2.connect(**keywords)``); unset ones left out."""
        settings = {"host": self.host, "port": str(self.port), "dbname": self.dbname}
        for name, value in (
            ("user", self.user),
            ("password", self.password),
            ("sslmode", self.sslmode),
        ):
            if value is not None:
                settings[name] = value
        settings.update(self.tls)
        return settings


def _host(text: str) -> str:
    if HOST_NAME.fullmatch(text):
        return text.lower()
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise DatabaseUrlError(
            f"url host {text[:100]!r} is not one host name or address "
            "(a list of hosts or a socket directory is not supported)"
        ) from None


def _same_address(first: str, second: str) -> bool:
    try:
        return ipaddress.ip_address(first) == ipaddress.ip_address(second)
    except ValueError:
        return False


def _single_parameters(query: str) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if name in parameters:
            raise DatabaseUrlError(f"url gives the query parameter {name} twice")
        parameters[name] = value
    return parameters


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise DatabaseUrlError("url has an invalid port (1-65535)")
    return int(text)


def _split(url: str) -> tuple[str, int, str, str | None, str | None, dict[str, str]]:
    """Host, port, database, user, password and query parameters, as the URL writes them."""
    try:
        parts = urlsplit(url.strip())
        port_text = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    except ValueError:
        raise DatabaseUrlError("url is not a valid URL") from None
    if parts.scheme not in URL_SCHEMES:
        raise DatabaseUrlError(
            f"url must start with {' or '.join(scheme + '://' for scheme in URL_SCHEMES)}"
        )
    if parts.fragment:
        raise DatabaseUrlError("url must not have a fragment (#...)")
    try:
        parameters = _single_parameters(parts.query)
    except ValueError as error:
        if isinstance(error, DatabaseUrlError):
            raise
        raise DatabaseUrlError("url has a query that is not name=value pairs") from None
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    host = unquote(parts.hostname or "")
    port = _port(port_text) if port_text else DEFAULT_PORT
    return host, port, unquote(parts.path.removeprefix("/")), user, password, parameters


def _agree(name: str, given: str | None, repeated: str) -> str:
    """The value of a part the query repeats: the same, or the repetition is refused."""
    if given is not None and given != repeated:
        raise DatabaseUrlError(
            f"url query parameter {name} differs from the url's own {name}: "
            "the url must name one database"
        )
    return repeated


def parse_url(url: str, default_sslmode: str | None = None) -> ConnectionSettings:
    """The connection settings ``url`` gives (its ``sslmode`` else ``default_sslmode``).

    Raises :class:`DatabaseUrlError` for a URL that names no database, more than one
    host, or a parameter this contract does not pass on (see the module's docstring).
    Its message never holds the password.
    """
    host, port, dbname, user, password, parameters = _split(url)
    if "host" in parameters:
        # Host names are compared as DNS does, without case.
        repeated = _host(parameters.pop("host"))
        host = _agree("host", _host(host) if host else None, repeated)
    if not host:
        raise DatabaseUrlError("url lacks a host")
    host = _host(host)
    if "hostaddr" in parameters:
        address = parameters.pop("hostaddr")
        if not _same_address(address, host):
            raise DatabaseUrlError(
                "url query parameter hostaddr differs from the url's host: "
                "the url must name one database"
            )
    if "port" in parameters:
        port = _port(_agree("port", str(port), parameters.pop("port")))
    if "dbname" in parameters:
        dbname = _agree("dbname", dbname or None, parameters.pop("dbname"))
    if not dbname:
        raise DatabaseUrlError("url lacks a database name")
    if "user" in parameters:
        user = _agree("user", user, parameters.pop("user"))
    if "password" in parameters:
        password = _agree("password", password, parameters.pop("password"))
    sslmode = parameters.pop("sslmode", default_sslmode)
    if sslmode is not None and sslmode not in SSL_MODES:
        raise DatabaseUrlError(f"url has an unknown sslmode {sslmode[:40]!r}")
    tls: list[tuple[str, str]] = []
    for name, value in sorted(parameters.items()):
        if name in FILE_PARAMETERS:
            raise DatabaseUrlError(
                f"url query parameter {name} names a file, which the service's pods and the "
                "operator do not share: give a CA as spec.database.external.caSecretRef"
            )
        if name not in TLS_PARAMETERS:
            raise DatabaseUrlError(f"url query parameter {name[:40]!r} is not supported")
        if value not in TLS_PARAMETERS[name]:
            raise DatabaseUrlError(f"url query parameter {name} has an unknown value")
        tls.append((name, value))
    return ConnectionSettings(
        host=host,
        port=port,
        dbname=dbname,
        user=user,
        password=password,
        sslmode=sslmode,
        tls=tuple(tls),
    )
