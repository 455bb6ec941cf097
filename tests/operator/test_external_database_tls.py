"""``sslmode=verify-full`` against a real PostgreSQL serving TLS, from both sides.

A CA and a server certificate for ``127.0.0.1`` are made with openssl; PostgreSQL
serves TLS with them. The operator's ban-sync connection (``connections.connect``,
given the CA's PEM as it reads it from ``caSecretRef``) authenticates the server
with the right CA, and refuses it with another CA or under a name the certificate
does not hold; the service's engine does the same with ``PGSSLROOTCERT`` (the
file its pods mount). Both read the URL through the same contract function.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from blacklist_devtools.pki import create_server_pki
from blacklist_devtools.postgres import PostgresServer
from blacklist_operator.banlist.sync import connections, ledger
from blacklist_operator.model.external import parse_database_secret
from blacklist_operator.model.resource import parse
from blacklist_service.delivery.ledger import make_engine

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The server's CA directory, and another CA's (a man in the middle's) directory."""
    server = tmp_path_factory.mktemp("database-pki")
    create_server_pki(server, "ledger-db", ("IP:127.0.0.1",))
    other = tmp_path_factory.mktemp("other-pki")
    create_server_pki(other, "ledger-db", ("IP:127.0.0.1",))
    return server, other


@pytest.fixture(scope="module")
def tls_postgres(pki: tuple[Path, Path]) -> Iterator[PostgresServer]:
    with PostgresServer(tls_dir=pki[0]) as server:
        yield server


def url(server: PostgresServer, host: str = "127.0.0.1", sslmode: str = "verify-full") -> str:
    return (
        f"postgresql://{server.user}:{server.password}@{host}:{server.port}/"
        f"{server.database}?sslmode={sslmode}"
    )


def operator_address(database_url: str, ca_pem: str) -> ledger.DatabaseAddress:
    """The address the ban sync builds from a Secret with ``url`` and a ``caSecretRef``."""
    body = {
        "metadata": {"name": "demo", "namespace": "team", "uid": "u", "generation": 1},
        "spec": {
            "database": {
                "external": {
                    "secretRef": {"name": "pg"},
                    "caSecretRef": {"name": "pg-ca", "key": "ca.crt"},
                }
            }
        },
    }
    external = parse(body).spec.database.external
    assert external is not None
    secret = {"data": {"url": base64.b64encode(database_url.encode()).decode()}}
    database = parse_database_secret(external, "denied_access", secret)
    return ledger.DatabaseAddress(
        host=database.host,
        port=database.port,
        database=database.database,
        user=database.user,
        password=database.password,
        sslmode=database.sslmode,
        tls=database.tls,
        ca_certificate=ca_pem,
    )


def ca_files() -> set[str]:
    """The CA copies this process holds open (the operator's are anonymous memfds)."""
    descriptors = Path("/proc/self/fd")
    links = {os.readlink(d) for d in descriptors.iterdir() if d.exists()}
    return {link for link in links if "blacklist-database-ca" in link}


def test_the_operator_connects_with_verify_full_and_the_right_ca(
    tls_postgres: PostgresServer, pki: tuple[Path, Path]
) -> None:
    before = ca_files()
    address = operator_address(url(tls_postgres), (pki[0] / "ca.crt").read_text())
    connection = connections.connect(address)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert cursor.fetchone() == (True,)
    finally:
        connection.close()
    # The CA's private copy for libpq lives for the connection attempt only.
    assert ca_files() == before == set()


@pytest.mark.parametrize("wrong", ["another CA", "a name the certificate lacks"])
def test_the_operator_refuses_a_server_it_cannot_authenticate(
    tls_postgres: PostgresServer, pki: tuple[Path, Path], wrong: str
) -> None:
    before = ca_files()
    if wrong == "another CA":
        address = operator_address(url(tls_postgres), (pki[1] / "ca.crt").read_text())
        says = "certificate verify failed"
    else:
        address = operator_address(url(tls_postgres, "localhost"), (pki[0] / "ca.crt").read_text())
        says = "does not match host name"
    with pytest.raises(psycopg2.OperationalError, match=says):
        connections.connect(address)
    assert ca_files() == before


def test_the_service_connects_with_verify_full_and_the_mounted_ca(
    tls_postgres: PostgresServer, pki: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the service's pod has: PGSSLROOTCERT naming the mounted CA.
    monkeypatch.setenv("PGSSLROOTCERT", str(pki[0] / "ca.crt"))
    engine = make_engine(url(tls_postgres))
    try:
        with engine.connect() as connection:
            query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            assert connection.execute(text(query)).scalar() is True
    finally:
        engine.dispose()
    monkeypatch.setenv("PGSSLROOTCERT", str(pki[1] / "ca.crt"))
    engine = make_engine(url(tls_postgres))
    try:
        with pytest.raises(OperationalError, match="certificate verify failed"):
            engine.connect().close()
    finally:
        engine.dispose()
