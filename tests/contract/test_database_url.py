"""The one parse of an external database's URL, and both sides making the same of it.

The operator (``model.external``) and the service (``config``/``ledger``) each call
``blacklist_contract.database.parse_url``; these tests hold the parse itself, and
that a URL the two once read differently (``@decoy/...?host=real``) is refused by
both, in words that say why.
"""

from __future__ import annotations

import base64

import pytest

from blacklist_contract.database import DatabaseUrlError, parse_url
from blacklist_operator.model.external import DatabaseSecretError, parse_database_secret
from blacklist_operator.model.resource import parse
from blacklist_service.config import ConfigError, Settings
from blacklist_service.delivery.ledger import make_engine

DECOY = "postgresql://app:pw@decoy/ledger?host=real"


def operator_reads(url: str, sslmode: str = "prefer") -> tuple[str, int, str, str, str]:
    """Host, port, database, user and sslmode as the operator's ban sync would connect."""
    body = {
        "metadata": {"name": "demo", "namespace": "team", "uid": "u", "generation": 1},
        "spec": {"database": {"external": {"secretRef": {"name": "pg"}, "sslmode": sslmode}}},
    }
    external = parse(body).spec.database.external
    assert external is not None
    secret = {"data": {"url": base64.b64encode(url.encode()).decode()}}
    database = parse_database_secret(external, "denied_access", secret)
    return (database.host, database.port, database.database, database.user, database.sslmode)


def test_a_plain_url_gives_libpq_its_keywords() -> None:
    settings = parse_url("postgresql+psycopg2://app:p%40ss%2F@DB.Example:6432/led%5Fger")
    assert settings.keywords() == {
        "host": "db.example",
        "port": "6432",
        "dbname": "led_ger",
        "user": "app",
        "password": "p@ss/",
    }
    assert "p@ss" not in repr(settings)


def test_the_url_sslmode_wins_and_unset_ones_are_left_to_the_environment() -> None:
    assert parse_url("postgresql://h/db?sslmode=verify-full", "prefer").sslmode == "verify-full"
    assert parse_url("postgresql://h/db", "require").sslmode == "require"
    # The service's composed url: user, password and sslmode come from PGUSER & co.
    bare = parse_url("postgresql+psycopg2://h:5432/db")
    assert bare.keywords() == {"host": "h", "port": "5432", "dbname": "db"}


def test_tls_settings_that_need_no_file_pass_through() -> None:
    settings = parse_url(
        "postgresql://u@h/db?sslmode=verify-full&channel_binding=require"
        "&ssl_min_protocol_version=TLSv1.3"
    )
    assert settings.tls == (("channel_binding", "require"), ("ssl_min_protocol_version", "TLSv1.3"))
    assert settings.keywords()["channel_binding"] == "require"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h:5432/db?host=H&port=5432&dbname=db&user=u",
        "postgresql://u@127.0.0.1/db?hostaddr=127.0.0.1",
        "postgresql://u@[::1]/db?hostaddr=0:0::1",
        "postgresql://u@/db?host=h",
    ],
)
def test_a_query_repeating_the_url_is_the_same_database(url: str) -> None:
    settings = parse_url(url)
    assert (settings.dbname, settings.user) == ("db", "u")
    assert settings.host in ("h", "127.0.0.1", "::1")
    assert set(settings.keywords()) == {"host", "port", "dbname", "user"}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (DECOY, "host differs"),
        ("postgresql://u@decoy/db?hostaddr=10.0.0.9", "hostaddr differs"),
        ("postgresql://u@10.0.0.1/db?hostaddr=10.0.0.9", "hostaddr differs"),
        ("postgresql://u@h/db?port=6543", "port differs"),
        ("postgresql://u@h/db?dbname=other", "dbname differs"),
        ("postgresql://u@h/db?user=postgres", "user differs"),
        ("postgresql://u@h1,h2/db", "not one host"),
        ("postgresql://u@h1:5432,h2:5432/db", "invalid port"),
        ("postgresql://u@decoy%2Creal/db", "not one host"),
        ("postgresql://u@/db?host=%2Fvar%2Frun%2Fpostgresql", "not one host"),
        ("postgresql://u@/db", "lacks a host"),
        ("postgresql://u@h/", "lacks a database name"),
        ("postgresql://u@h/db?sslmode=require&sslmode=disable", "twice"),
        ("postgresql://u@h/db?sslmode=bogus", "unknown sslmode"),
        ("postgresql://u@h/db?sslrootcert=/etc/ssl/ca.pem", "names a file"),
        ("postgresql://u@h/db?sslcert=/c&sslkey=/k", "names a file"),
        ("postgresql://u@h/db?passfile=/root/.pgpass", "names a file"),
        ("postgresql://u@h/db?service=prod", "names a file"),
        ("postgresql://u@h/db?options=-c%20role%3Dpostgres", "not supported"),
        ("postgresql://u@h/db?target_session_attrs=any", "not supported"),
        ("postgresql://u@h/db?channel_binding=maybe", "unknown value"),
        ("postgresql://u@h/db#fragment", "fragment"),
        ("mysql://u@h/db", "must start with"),
        ("postgresql://u@h:0/db", "invalid port"),
    ],
)
def test_a_url_naming_more_than_one_database_or_a_file_is_refused(url: str, says: str) -> None:
    with pytest.raises(DatabaseUrlError, match=says):
        parse_url(url)


def test_no_refusal_repeats_the_password() -> None:
    with pytest.raises(DatabaseUrlError) as refused:
        parse_url("postgresql://u:hunter2@h/db?password=other")
    assert "hunter2" not in str(refused.value)
    assert "other" not in str(refused.value)


def test_the_decoy_url_is_refused_by_the_operator_and_by_the_service() -> None:
    with pytest.raises(DatabaseSecretError, match="host differs from the url's own host"):
        operator_reads(DECOY)
    with pytest.raises(ConfigError, match="DATABASE_URL: url query parameter host differs"):
        Settings.from_config({"DATABASE_URL": DECOY})
    with pytest.raises(DatabaseUrlError, match="host differs"):
        make_engine(DECOY)


def test_both_sides_read_one_accepted_url_alike() -> None:
    url = "postgresql://app:pw@Pg.Example:6432/bans?host=pg.example&sslmode=verify-full"
    settings = parse_url(url)
    # The operator's ExternalDatabase is the contract's parse (its sslmode beats the spec's).
    with pytest.raises(DatabaseSecretError, match="needs the CA"):
        operator_reads(url)
    accepted = url.replace("verify-full", "require")
    assert operator_reads(accepted, sslmode="disable") == (
        "pg.example",
        6432,
        "bans",
        "app",
        "require",
    )
    # The service hands the driver exactly these keywords: nothing of the url besides.
    engine = make_engine(accepted)
    assert engine.url.render_as_string() == "postgresql+psycopg2://"
    assert settings.host == "pg.example"
