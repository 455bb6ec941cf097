"""Pure tests of `--allowed-external-database-hosts`: the hosts an external database may be on."""

from __future__ import annotations

import pytest

from blacklist_operator.__main__ import parse_arguments
from blacklist_operator.model.external import (
    DatabaseHostNotAllowedError,
    DatabaseSecretError,
    check_host_allowed,
    host_allowed,
    parse_allowed_hosts,
)
from tests.operator.test_external_database import KEYS, URL, make, resolve, secret

RULES = parse_allowed_hosts("10.20.0.0/16, 2001:db8::/32,.db.example.com,pg.internal")


@pytest.mark.parametrize(
    "host",
    [
        "10.20.3.4",
        "2001:db8::7",
        "db.example.com",
        "a.db.example.com",
        "PG.Internal.",
        "x.pg.internal",
    ],
)
def test_hosts_in_an_allowed_network_or_below_an_allowed_suffix_pass(host: str) -> None:
    assert host_allowed(host, RULES)


@pytest.mark.parametrize(
    "host",
    [
        "10.21.0.1",
        "127.0.0.1",
        "::1",
        "::ffff:10.20.0.1",
        "evildb.example.com",
        "db.example.com.evil.net",
        "internal",
        # libc reads these as 10.20.0.1: never taken for names.
        "10.20.1",
        "169090561",
        "0x0a140001",
        # Several hosts (libpq tries each), a socket directory, an empty host.
        "db.example.com,127.0.0.1",
        "/var/run/postgresql",
        "",
    ],
)
def test_every_other_host_is_refused(host: str) -> None:
    assert not host_allowed(host, RULES)


def test_no_rule_allows_any_host() -> None:
    assert host_allowed("127.0.0.1", ())
    assert host_allowed("anything.example", parse_allowed_hosts(" , "))


@pytest.mark.parametrize("entry", ["10.20.0.1/16", "db_example.com", "*.example.com", "/data"])
def test_an_entry_that_is_neither_a_network_nor_a_suffix_stops_the_operator(entry: str) -> None:
    with pytest.raises(ValueError, match="neither a CIDR"):
        parse_allowed_hosts(entry)
    with pytest.raises(SystemExit):
        parse_arguments(["--allowed-external-database-hosts", entry])


def test_the_flag_is_parsed_once_into_rules() -> None:
    arguments = parse_arguments(["--allowed-external-database-hosts", "10.0.0.0/8,db.example"])
    assert host_allowed("10.1.2.3", arguments.allowed_external_database_hosts)
    assert not host_allowed("192.168.0.1", arguments.allowed_external_database_hosts)
    assert parse_arguments([]).allowed_external_database_hosts == ()


def test_a_secret_naming_a_host_not_allowed_is_refused_with_its_reason() -> None:
    database = resolve(make(), secret(**{**KEYS, "host": "127.0.0.1"}))
    with pytest.raises(DatabaseHostNotAllowedError) as refused:
        check_host_allowed(database, RULES)
    assert refused.value.reason == "DatabaseHostNotAllowed"
    assert "host 127.0.0.1 is not allowed" in str(refused.value)
    check_host_allowed(resolve(make(), secret(**{**KEYS, "host": "a.pg.internal"})), RULES)


def test_a_url_query_naming_another_host_never_gets_past_the_parse() -> None:
    allowed = parse_allowed_hosts("db.example")
    check_host_allowed(resolve(make(), secret(url=URL)), allowed)
    # The query repeating the url's own host is the one host: checked as such.
    same = resolve(make(), secret(url="postgresql://app:pw@db.example/bans?host=DB.example"))
    check_host_allowed(same, allowed)
    for query in ("host=127.0.0.1", "hostaddr=127.0.0.1", "sslmode=disable&host=db.example,x"):
        with pytest.raises(DatabaseSecretError, match="host"):
            resolve(make(), secret(url=f"postgresql://app:pw@db.example/bans?{query}"))
    # Nor does a list of hosts, however it is spelt.
    for url in ("postgresql://app:pw@db.example,127.0.0.1/bans", "postgresql://app@db%2Cx/bans"):
        with pytest.raises(DatabaseSecretError, match="not one host"):
            resolve(make(), secret(url=url))
