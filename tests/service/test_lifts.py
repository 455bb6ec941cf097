"""Lifting a ban and ban expiry, with replicas as real processes and a real PostgreSQL.

Each test speaks from its own loopback addresses, so the bans of one never
touch another.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from blacklist_contract.prefixes import Prefix, parse_address, parse_prefix
from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_devtools.net import free_port
from blacklist_devtools.postgres import PostgresServer
from blacklist_operator.banlist.sync.lifts import Lifts
from blacklist_service.bans import store as store_module
from blacklist_service.bans.files import log_path
from blacklist_service.bans.lines import parse_head
from blacklist_service.bans.records import RECORD_SIZE
from blacklist_service.bans.store import BanStore
from blacklist_service.bans.watcher import apply_head
from blacklist_service.delivery import ledger
from blacklist_service.delivery.lifts import LiftFollower
from blacklist_service.delivery.outbox import Hit, Outbox
from blacklist_service.durations import parse_duration
from tests.clock import MovedClock
from tests.service.processes import SERVICE_VARIABLES, ServiceFactory
from tests.service.test_banlines import head as banlist_head

LIFT_BOUND = 5.0  # docs/ban-list.md "Lifting a ban": a lifted or expired ban stops within 5 seconds


@pytest.fixture
def database(postgres: PostgresServer) -> Iterator[Engine]:
    """An engine on the module's PostgreSQL with empty ledger and lift tables."""
    engine = ledger.make_engine(postgres.url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS denied_access_ledger, denied_access_lifts"))
    yield engine
    engine.dispose()


def lift_command(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """``python -m blacklist_service lift ...`` as a user runs it."""
    environment = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    environment["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "blacklist_service", "lift", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def prefix(text: str) -> Prefix:
    found = parse_prefix(text)
    assert found is not None
    return found


def banned(store: BanStore, address: str) -> bool:
    parsed = parse_address(address)
    assert parsed is not None
    return store.banned(*parsed)


def count(engine: Engine, table: str) -> int:
    with engine.connect() as connection:
        exists = connection.execute(text(f"SELECT to_regclass('{table}') IS NOT NULL")).scalar()
        if not exists:
            return 0
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608


def refused_by_every_worker(url: str, source: str) -> bool:
    # Fresh connections spread over both workers.
    return all(get(f"{url}/?n=2", source=source).status == 403 for _ in range(8))


def served(url: str, source: str) -> bool:
    return all(get(f"{url}/?n=2", source=source).status == 200 for _ in range(8))


def seconds_until(predicate: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    assert wait_until(predicate, timeout=timeout, interval=0.05)
    return time.monotonic() - started


@pytest.mark.postgres
@pytest.mark.slow
def test_a_lifted_ban_ends_within_5_s_and_a_later_hit_bans_again(
    database: Engine, postgres: PostgresServer, service_factory: ServiceFactory
) -> None:
    service = service_factory(DATABASE_URL=postgres.url)
    source = "127.0.21.1"
    assert get(f"{service.url}/blacklisted", source=source).status == 444
    assert refused_by_every_worker(service.url, source)

    lifted = lift_command(postgres.url, source, "--reason", "false positive")
    assert lifted.returncode == 0, lifted.stderr
    assert f"Lifted the ban on {source}" in lifted.stdout
    assert seconds_until(lambda: served(service.url, source), LIFT_BOUND) < LIFT_BOUND

    assert get(f"{service.url}/blacklisted", source=source).status == 444
    assert refused_by_every_worker(service.url, source)
    time.sleep(2.5)  # several lift polls, each reading the lift again (the last minute)
    assert refused_by_every_worker(service.url, source)
    # The ledger keeps both hits; the lift has its row and reason.
    assert wait_until(lambda: count(database, "denied_access_ledger") == 2, timeout=15)
    with database.connect() as connection:
        rows = connection.execute(text("SELECT ip_address, reason FROM denied_access_lifts"))
        assert [tuple(row) for row in rows] == [(source, "false positive")]
    assert f"{source} removed from ban list (ban lifted)." in service.log()


@pytest.mark.postgres
@pytest.mark.slow
def test_a_lift_reaches_two_replicas_within_5_s(
    database: Engine, postgres: PostgresServer, service_factory: ServiceFactory
) -> None:
    replicas = [service_factory(DATABASE_URL=postgres.url) for _ in range(2)]
    source = "127.0.21.2"
    for replica in replicas:
        assert get(f"{replica.url}/blacklisted", source=source).status == 444
        assert refused_by_every_worker(replica.url, source)
    # Given as the IPv4-mapped form: the canonical address is lifted.
    assert lift_command(postgres.url, f"::ffff:{source}").returncode == 0
    assert (
        seconds_until(lambda: all(served(replica.url, source) for replica in replicas), LIFT_BOUND)
        < LIFT_BOUND
    )


@pytest.mark.postgres
@pytest.mark.slow
def test_a_ban_expires_after_ban_duration(
    database: Engine, postgres: PostgresServer, service_factory: ServiceFactory
) -> None:
    service = service_factory(DATABASE_URL=postgres.url, BAN_DURATION="3s")
    source = "127.0.21.3"
    hit = time.monotonic()
    assert get(f"{service.url}/blacklisted", source=source).status == 444
    assert refused_by_every_worker(service.url, source)
    assert wait_until(lambda: time.monotonic() - hit >= 2.4, timeout=5)
    assert refused_by_every_worker(service.url, source)
    assert wait_until(lambda: served(service.url, source), timeout=LIFT_BOUND)
    # Banned until the whole second after hit + 3 s: between 3 and 4 s.
    assert 2.5 < time.monotonic() - hit < 4.5
    # A hit after expiry bans again.
    assert get(f"{service.url}/blacklisted", source=source).status == 444
    assert refused_by_every_worker(service.url, source)


def record_hit(engine: Engine, address: str, at: datetime) -> None:
    ledger.insert_hits(engine, [Hit(str(uuid.uuid4()), address, "/blacklisted", at)])


def record_lift(engine: Engine, address: str, at: datetime) -> None:
    with engine.begin() as connection:
        connection.execute(ledger.lifts.insert().values(ip_address=address, time=at))


@pytest.mark.postgres
@pytest.mark.slow
def test_a_fresh_replica_loads_only_bans_neither_expired_nor_lifted(
    database: Engine, postgres: PostgresServer, service_factory: ServiceFactory
) -> None:
    ledger.ensure_schema(database)
    now = datetime.now(UTC)
    expired, banned, lifted, rebanned = (f"127.0.22.{n}" for n in range(1, 5))
    record_hit(database, expired, now - timedelta(hours=1))
    record_hit(database, banned, now - timedelta(minutes=5))
    record_hit(database, lifted, now - timedelta(minutes=5))
    record_lift(database, lifted, now - timedelta(minutes=4))
    record_lift(database, rebanned, now - timedelta(minutes=10))
    record_hit(database, rebanned, now - timedelta(minutes=9))
    record_hit(database, rebanned, now - timedelta(hours=2))

    service = service_factory(DATABASE_URL=postgres.url, BAN_DURATION="30m")
    assert wait_until(lambda: "Loaded the ledger's bans" in service.log(), timeout=15)
    assert refused_by_every_worker(service.url, banned)
    assert refused_by_every_worker(service.url, rebanned)
    assert served(service.url, expired)
    assert served(service.url, lifted)
    metrics = get(service.metrics_url).body
    assert "blacklist_banned_addresses 2.0" in metrics


@pytest.mark.postgres
def test_lift_refuses_a_bad_address_and_writes_nothing(
    database: Engine, postgres: PostgresServer
) -> None:
    for arguments in (["not-an-address"], ["1.2.3.4", "1.2.3.999"], ["1.2.3.4/33"]):
        refused = lift_command(postgres.url, *arguments)
        assert refused.returncode == 2
        assert "not an IP address" in refused.stderr
        assert "nothing was lifted" in refused.stderr
        assert refused.stdout == ""
    assert count(database, "denied_access_lifts") == 0
    assert lift_command(postgres.url).returncode == 2
    assert lift_command(postgres.url, "1.2.3.4", "--reason", "x" * 257).returncode == 2
    assert count(database, "denied_access_lifts") == 0


@pytest.mark.process
def test_a_bad_ban_duration_stops_the_start(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    environment.update(
        PORT=str(free_port()), BIND_ADDRESS="127.0.0.1", STATE_DIR=str(tmp_path), BAN_DURATION="abc"
    )
    started = subprocess.run(
        [sys.executable, "-m", "blacklist_service"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode != 0
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1, started.stderr
    assert "BAN_DURATION" in lines[0]
    assert "'abc'" in lines[0]


def test_ban_durations_are_parsed() -> None:
    assert parse_duration("") is None
    assert parse_duration("86400") == 86400
    assert parse_duration("30m") == 1800
    assert parse_duration("24h") == parse_duration("1d") == 86400
    assert parse_duration("1d12h") == 129600
    assert parse_duration(" 7D ") == 7 * 86400
    for bad in ("abc", "0", "0s", "1.5h", "-5", "5 m", "1w", "h"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_the_lift_follower_keeps_its_cursor_and_spares_later_hits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = ledger.make_engine(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    ledger.ensure_schema(engine)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    bans = BanStore(state_dir / "bans")
    outbox = Outbox(state_dir / "outbox.sqlite3")
    old, pending, delivered, later = (f"10.0.0.{n}" for n in range(1, 5))
    record_lift(engine, old, datetime.now(UTC) - timedelta(hours=1))
    with monkeypatch.context() as earlier:
        # The lifts below come in a later second than these bans (made 1.1 s before them).
        earlier.setattr(store_module, "time", MovedClock(-1.1))
        bans.ban([(prefix(a), 0) for a in (old, pending, delivered, later)])

    follower = LiftFollower(state_dir, outbox, bans, (32, 64))
    assert follower.cursor == 0  # a fresh state directory reads every lift

    ledger.insert_lifts(engine, [pending, delivered, later], "")
    time.sleep(0.01)
    outbox.record(Hit.now(pending, "/blacklisted"))  # a hit after the lift, not yet delivered
    record_hit(engine, delivered, datetime.now(UTC))  # one already in the ledger
    follower.poll(engine)
    assert follower.caught_up.is_set()
    assert not banned(bans, later)
    assert banned(bans, pending)
    assert banned(bans, delivered)
    assert banned(bans, old)  # this replica banned it after that lift
    assert (state_dir / "lifts.cursor").read_text().strip() == "4"

    # A restarted process continues from the cursor; applying twice writes nothing.
    with monkeypatch.context() as earlier:
        earlier.setattr(store_module, "time", MovedClock(-1.1))
        bans.ban([(prefix(later), 0)])
    record_lift(engine, later, datetime.now(UTC))
    restarted = LiftFollower(state_dir, outbox, bans, (32, 64))
    assert restarted.cursor == 4
    log = log_path(bans.directory, bans.generation)
    size = log.stat().st_size
    restarted.poll(engine)
    assert not banned(bans, later)
    assert banned(bans, pending)
    assert banned(bans, delivered)
    assert log.stat().st_size == size + RECORD_SIZE
    restarted.poll(engine)
    assert log.stat().st_size == size + RECORD_SIZE
    engine.dispose()


@pytest.mark.postgres
def test_a_fresh_replica_refuses_a_listed_ban_lifted_before_it_started(
    database: Engine, tmp_path: Path
) -> None:
    """Issue 19, item 5a: the operator was down when X was lifted, long ago.

    Its list still carries X, with a lifts-seen from before the lift. A replica
    started afterwards with a fresh state directory must not ban X from it.
    """
    ledger.ensure_schema(database)
    lifted, other = "10.5.0.1", "10.5.0.2"
    record_hit(database, lifted, datetime.now(UTC) - timedelta(hours=2))
    record_lift(database, lifted, datetime.now(UTC) - timedelta(hours=1))
    bans = BanStore(tmp_path / "bans", carry_own=True)
    follower = LiftFollower(tmp_path, Outbox(tmp_path / "outbox.sqlite3"), bans, (32, 64))
    follower.poll(database)
    assert follower.caught_up.is_set()

    stale = [(prefix(lifted), 0), (prefix(other), 0)]
    apply_head(bans, parse_head(banlist_head(stale, lifts_seen=0)), "test")
    assert not banned(bans, lifted)
    assert banned(bans, other)
    # The operator back: its list drops X and says it has seen the lift.
    apply_head(bans, parse_head(banlist_head([(prefix(other), 0)], lifts_seen=1)), "test")
    assert not banned(bans, lifted)
    # A hit after the lift, listed by an operator that has seen the lift: banned again.
    apply_head(bans, parse_head(banlist_head(stale, lifts_seen=1)), "test")
    assert banned(bans, lifted)


@pytest.mark.postgres
def test_overlapping_lifts_committed_out_of_order_are_all_applied(
    database: Engine, postgres: PostgresServer, tmp_path: Path
) -> None:
    """Issue 19, item 5b: lift 1 begins first and commits after lift 2.

    Neither the replica's cursor nor the operator's lifts-seen may pass lift 1
    while it is open, however long it stays open.
    """
    ledger.ensure_schema(database)
    first, second = "10.6.0.1", "10.6.0.2"
    bans = BanStore(tmp_path / "bans", carry_own=True)
    listed = [(prefix(first), 0), (prefix(second), 0)]
    apply_head(bans, parse_head(banlist_head(listed)), "test")
    follower = LiftFollower(tmp_path, Outbox(tmp_path / "outbox.sqlite3"), bans, (32, 64))
    operator_lifts = Lifts()
    operator_connection = postgres.connect()
    operator_connection.autocommit = True

    long_lift = database.connect()
    transaction = long_lift.begin()
    long_lift.execute(ledger.lifts.insert().values(ip_address=first))  # id 1, time: now
    ledger.insert_lifts(database, [second], "")  # id 2, committed at once
    follower.poll(database)
    operator_lifts.read(operator_connection, (32, 64))
    assert not banned(bans, second)
    assert banned(bans, first)
    assert follower.cursor == 0
    assert operator_lifts.seen == 0  # lift 1 may still commit: not seen
    # The operator's list, written meanwhile, still lists the first address.
    apply_head(bans, parse_head(banlist_head(listed, lifts_seen=operator_lifts.seen)), "test")
    assert not banned(bans, second)

    transaction.commit()
    long_lift.close()
    follower.poll(database)
    operator_lifts.read(operator_connection, (32, 64))
    assert not banned(bans, first)
    assert not banned(bans, second)
    assert follower.cursor == 2
    assert operator_lifts.seen == 2
    # The operator holds lift 1 too, so its next list leaves the first address out.
    assert operator_lifts.time_of(prefix(first)) > 0
    # A list it wrote while lift 1 was open still cannot ban it again.
    apply_head(bans, parse_head(banlist_head(listed, lifts_seen=0)), "test")
    assert not banned(bans, first)
    operator_connection.close()


def test_a_lift_of_an_address_lifts_the_prefix_that_covers_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = ledger.make_engine(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    ledger.ensure_schema(engine)
    bans = BanStore(tmp_path / "bans")
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    with monkeypatch.context() as earlier:
        # Made 1.1 s before the lifts below, which come in a later second.
        earlier.setattr(store_module, "time", MovedClock(-1.1))
        bans.ban([(prefix("2001:db8:1:2::/64"), 0), (prefix("2001:db8:9::/48"), 0)])
        bans.ban([(prefix("198.51.100.0/24"), 0), (prefix("203.0.113.0/24"), 0)])
    follower = LiftFollower(tmp_path, outbox, bans, (24, 64))
    # An address inside each of two bans, and one CIDR lifted exactly.
    ledger.insert_lifts(engine, ["2001:db8:1:2::77", "2001:db8:9::5", "203.0.113.0/24"], "")
    follower.poll(engine)
    assert not banned(bans, "2001:db8:1:2::1")
    assert not banned(bans, "2001:db8:9:ffff::1")
    assert not banned(bans, "203.0.113.9")
    assert banned(bans, "198.51.100.9")
    engine.dispose()


@pytest.mark.postgres
def test_a_role_that_may_not_lock_the_lift_table_still_applies_lifts(
    database: Engine, postgres: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A DBA's tables and a role with SELECT and INSERT only: no SHARE lock, lifts still apply."""
    ledger.ensure_schema(database)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    postgres.create_role(role, "reader")
    with database.begin() as connection:
        connection.execute(
            text(f"GRANT SELECT, INSERT ON denied_access_ledger, denied_access_lifts TO {role}")
        )
    url = postgres.url.replace(f"{postgres.user}:{postgres.password}@", f"{role}:reader@")
    engine = ledger.make_engine(url)
    lifted = "10.7.0.1"
    bans = BanStore(tmp_path / "bans")
    bans.ban([(prefix(lifted), 0)])
    time.sleep(1.1)  # the lift comes in a later second than the ban
    ledger.insert_lifts(database, [lifted], "")
    follower = LiftFollower(tmp_path, Outbox(tmp_path / "outbox.sqlite3"), bans, (32, 64))
    with caplog.at_level("WARNING", logger="blacklist_service.lifts"):
        follower.poll(engine)
        follower.poll(engine)
    assert not banned(bans, lifted)
    assert follower.cursor == 0  # never moved by a read made without the lock
    warnings = [r.getMessage() for r in caplog.records if "grant it UPDATE" in r.getMessage()]
    assert len(warnings) == 1, warnings
    engine.dispose()
