"""A compaction is not in a new ban's path: the ledger is read between its parts.

At millions of bans a compaction writes megabytes of parts, a second or more
on a loaded machine. A ledger row committed meanwhile must reach the replicas
without waiting for the last part: between parts the sync reads the ledger and
writes a *bridge* head, which names the generation the replicas hold and lists
its bans plus every ban merged away since that generation was written. The
head that names the new generation lists the new row too, and a restart reads
the whole list back.

Real PostgreSQL; the API is the in-memory fake, which records every write in
order. The parts are made small so that a few thousand rows need several.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
import pytest

from blacklist_contract.lines import parse_lines
from blacklist_contract.prefixes import prefix_text
from blacklist_devtools.postgres import PostgresServer
from blacklist_operator import FIELD_MANAGER
from blacklist_operator.banlist.core import layout
from blacklist_operator.banlist.sync import ledger as ledger_module
from blacklist_operator.banlist.sync import mirror
from blacklist_operator.banlist.sync.mirror import BanListSync
from blacklist_operator.builders.banlist import CURSOR_ANNOTATION
from blacklist_operator.kube.api import Applied
from blacklist_operator.model.resource import BlacklistService, parse
from blacklist_operator.runtime.state import WrittenBanList
from tests.fakes.kubernetes import FakeKubernetesApi
from tests.operator.test_banlist_sync import create_table, insert

ROWS = 20_000
LATE = "198.51.100.77"  # committed while the compaction writes its parts


class RecordingApi(FakeKubernetesApi):
    """The fake API, recording each ban-list write and running a hook after each part."""

    def __init__(self) -> None:
        super().__init__()
        self.banlist_writes: list[tuple[str, str, str, str]] = []  # name, generation, lines, cursor
        self.after_part: Callable[[int], None] = lambda generation: None

    def _record(self, manifest: dict[str, Any]) -> None:
        metadata = manifest["metadata"]
        name = str(metadata["name"])
        annotations = metadata.get("annotations") or {}
        data = manifest.get("data") or {}
        if name.endswith("-banlist"):
            generation = str(data.get("snapshot", ""))
        else:
            generation = str(annotations.get("blacklist.dev/snapshot", ""))
        cursor = str(annotations.get(CURSOR_ANNOTATION, ""))
        self.banlist_writes.append((name, generation, str(data.get("addresses", "")), cursor))

    def apply(self, manifest: dict[str, Any], field_manager: str = FIELD_MANAGER) -> Applied:
        applied = super().apply(manifest, field_manager)
        self._after_write(manifest)
        return applied

    def create(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        created = super().create(manifest)
        self._after_write(manifest)
        return created

    def _after_write(self, manifest: dict[str, Any]) -> None:
        self._record(manifest)
        name = str(manifest["metadata"]["name"])
        if not name.endswith("-banlist"):
            self.after_part(int(self.banlist_writes[-1][1]))


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of a few kilobytes, so that ``ROWS`` bans take several."""
    monkeypatch.setattr(layout, "PART_TARGET_BYTES", 8 * 1024)
    monkeypatch.setattr(layout, "PART_MAX_BYTES", 12 * 1024)
    monkeypatch.setattr(layout, "_FIRST_PART_ENTRIES", 2048)
    # The fake writes a part in microseconds, not the tenths of a second the pace is set for.
    monkeypatch.setattr(mirror, "BRIDGE_INTERVAL_SECONDS", 0.0)


@pytest.fixture
def ledger(postgres: PostgresServer) -> Iterator[Any]:
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS denied_access_ledger, denied_access_lifts")
    create_table(postgres)
    connection = psycopg2.connect(postgres.dsn)
    connection.autocommit = True
    yield connection
    connection.close()


def addresses(count: int) -> list[str]:
    rng = random.Random(7)
    picked = {rng.getrandbits(32) | 0x0A000000 for _ in range(count * 2)}
    return [str(ipaddress.IPv4Address(number)) for number in sorted(picked)[:count]]


def listed(lines: str) -> set[str]:
    bans, bad = parse_lines(lines)
    assert not bad
    return {prefix_text(prefix) for prefix, _ in bans}


def the_resource() -> BlacklistService:
    return parse({"metadata": {"name": "bls", "namespace": "team", "uid": "u-1"}})


def reloaded_size(api: RecordingApi, resource: BlacklistService) -> int:
    """How many bans a restarted sync reads back from the ConfigMaps."""
    reloaded = BanListSync(api, WrittenBanList(), capacity=1_000_000)
    reloaded.load(resource)
    return len(reloaded.banlist)


@pytest.mark.usefixtures("small_parts")
def test_a_row_committed_during_a_compaction_goes_out_before_its_last_part(
    postgres: PostgresServer, ledger: Any
) -> None:
    api = RecordingApi()
    resource = the_resource()
    sync = BanListSync(api, WrittenBanList(), capacity=1_000_000)
    sync.load(resource)
    sync.ensure_exists(resource)
    first = addresses(ROWS)
    insert(postgres, first[:10])
    sync.sync(resource, ledger)  # the first pass after a start rebuilds (a rescan)
    insert(postgres, first[10:])

    late_inserted: list[int] = []

    def insert_late(generation: int) -> None:
        if generation >= 2 and not late_inserted:
            insert(postgres, [LATE])
            late_inserted.append(len(api.banlist_writes))

    api.after_part = insert_late
    api.banlist_writes.clear()
    sync.sync(resource, ledger)
    assert late_inserted, "no compaction wrote parts: the test does not test a compaction"

    parts = [i for i, write in enumerate(api.banlist_writes) if not write[0].endswith("-banlist")]
    heads = [i for i, write in enumerate(api.banlist_writes) if write[0].endswith("-banlist")]
    assert len(parts) >= 3, f"the compaction wrote {len(parts)} part(s): too few to tell"
    new_generation = api.banlist_writes[parts[-1]][1]
    bridges = [i for i in heads if parts[0] < i < parts[-1]]
    assert bridges, "no head was written between the parts: the new row waited for the last one"
    _, generation, lines, cursor = api.banlist_writes[bridges[0]]
    assert generation != new_generation, "a bridge head named the generation being written"
    assert LATE in listed(lines), "the bridge head does not list the row committed meanwhile"
    assert set(first[10:]) <= listed(lines), "the bridge head lost bans merged away before it"
    assert int(cursor) < ROWS, "the bridge head's cursor ran ahead of what its generation holds"
    assert len([i for i in heads if i < parts[-1]]) <= len(parts) + 1, "more than one a part"

    final = api.banlist_writes[heads[-1]]
    assert heads[-1] > parts[-1]
    assert final[1] == new_generation
    assert LATE in listed(final[2]), "the new generation's head dropped the row read meanwhile"

    # What a restart reads back is the whole list.
    assert reloaded_size(api, resource) == ROWS + 1


def ipv6_addresses(count: int) -> list[str]:
    rng = random.Random(11)
    return [
        str(ipaddress.IPv6Address((0x20010DB8 << 96) | rng.getrandbits(96))) for _ in range(count)
    ]


@pytest.mark.usefixtures("small_parts")
def test_a_burst_during_a_compaction_keeps_every_head_under_a_configmaps_limit(
    postgres: PostgresServer, ledger: Any
) -> None:
    """50,000 long IPv6 lines (2.4 MB) committed after the first part: no head passes 1 MiB."""
    api = RecordingApi()
    body = {
        "metadata": {"name": "bls", "namespace": "team", "uid": "u-1"},
        "spec": {"banPrefixLengths": {"ipv6": 128}, "banDuration": "24h"},
    }
    resource = parse(body)
    sync = BanListSync(api, WrittenBanList(), capacity=1_000_000)
    sync.load(resource)
    sync.ensure_exists(resource)
    first = addresses(ROWS)
    insert(postgres, first[:10])
    sync.sync(resource, ledger)
    insert(postgres, first[10:])
    burst = ipv6_addresses(50_000)
    inserted: list[bool] = []

    def insert_burst(generation: int) -> None:
        if generation >= 2 and not inserted:
            insert(postgres, burst)
            inserted.append(True)

    api.after_part = insert_burst
    api.banlist_writes.clear()
    sync.sync(resource, ledger)
    assert inserted
    api.after_part = lambda generation: None
    while sync.sync(resource, ledger).behind or sync.seen < len(first) + len(burst):
        pass
    heads = [write for write in api.banlist_writes if write[0].endswith("-banlist")]
    largest = max(len(lines.encode()) for _, _, lines, _ in heads)
    assert largest < 900 * 1024, f"a head of {largest} bytes: the API server refuses past 1 MiB"
    assert reloaded_size(api, parse(body)) == len(first) + len(burst)


class DuringStream:
    """Runs hooks while a rescan streams the ledger, and counts the writes made by its end."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, api: RecordingApi) -> None:
        self.api = api
        self.at_first_read: Callable[[], None] = lambda: None
        self.writes_at_end: list[int] = []
        self.reads = 0
        # A statement PostgreSQL refuses in place of each read's.
        self.refused = False
        real_stream, real_peek = ledger_module.stream_latest_hits, ledger_module.peek_hits

        def stream(connection: Any, between: Any = None) -> Iterator[tuple[int, int]]:
            yield from real_stream(connection, between)
            self.writes_at_end.append(len(api.banlist_writes))

        def peek(connection: Any, cursor_id: int, batch: int) -> ledger_module.TableRead:
            self.reads += 1
            if self.reads == 1:
                self.at_first_read()
            if not self.refused:
                return real_peek(connection, cursor_id, batch)
            real_query = ledger_module._past_query
            ledger_module._past_query = lambda table: "SELECT no_such_column FROM " + table  # noqa: S608 (a constant)
            try:
                return real_peek(connection, cursor_id, batch)
            finally:
                ledger_module._past_query = real_query

        monkeypatch.setattr(ledger_module, "stream_latest_hits", stream)
        monkeypatch.setattr(ledger_module, "peek_hits", peek)
        # Many fetches of a few rows, so that the stream has many gaps.
        monkeypatch.setattr(ledger_module, "STREAM_ROWS", 500)


@dataclass
class RescanCase:
    """``ROWS`` bans compacted into parts, five in the head, about to be rescanned."""

    api: RecordingApi
    resource: BlacklistService
    sync: BanListSync
    first: list[str]
    during: DuringStream


def rescan_case(
    postgres: PostgresServer, ledger: Any, monkeypatch: pytest.MonkeyPatch
) -> RescanCase:
    """The list synced, the stream watched, and the writes so far forgotten."""
    api = RecordingApi()
    resource = the_resource()
    sync = BanListSync(api, WrittenBanList(), capacity=1_000_000)
    sync.load(resource)
    sync.ensure_exists(resource)
    first = addresses(ROWS)
    insert(postgres, first[:10])
    sync.sync(resource, ledger)  # the first pass after a start rebuilds (a rescan)
    insert(postgres, first[10:-5])
    sync.sync(resource, ledger)  # a compaction: the bans are in the parts
    insert(postgres, first[-5:])
    sync.sync(resource, ledger)  # five bans in the head
    assert len(sync.banlist.head) == 5
    during = DuringStream(monkeypatch, api)
    api.banlist_writes.clear()
    return RescanCase(api, resource, sync, first, during)


@pytest.mark.usefixtures("small_parts")
def test_a_row_committed_during_a_rescan_goes_out_before_the_rescan_ends(
    postgres: PostgresServer, ledger: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rescan streams the whole ledger (minutes at 5M rows): new rows go out meanwhile."""
    case = rescan_case(postgres, ledger, monkeypatch)
    api, resource, sync, during = case.api, case.resource, case.sync, case.during
    first = case.first
    held, cursor = sync.store.generation, sync.cursor
    during.at_first_read = lambda: insert(postgres, [LATE])

    sync.rescan(resource, ledger)

    assert during.writes_at_end, "the rescan did not stream the ledger"
    heads = [w for w in api.banlist_writes[: during.writes_at_end[0]] if w[0].endswith("-banlist")]
    assert heads, "no head was written while the rescan streamed: the new row waited for its end"
    _, generation, lines, head_cursor = heads[0]
    assert generation == str(held), "a head written during the rescan named another generation"
    assert LATE in listed(lines), "the head written during the rescan lacks the row committed then"
    assert set(first[-5:]) <= listed(lines), "it dropped the lines the replicas held"
    assert int(head_cursor) == cursor, "its cursor is not the one the held list was written with"
    # The rebuilt list holds the row too, and a restart reads back everything.
    assert LATE in {prefix_text(prefix) for prefix in sync.banlist.head}
    assert reloaded_size(api, resource) == ROWS + 1


@pytest.mark.usefixtures("small_parts")
def test_after_a_rescan_that_changed_the_list_its_compaction_still_bridges(
    postgres: PostgresServer, ledger: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows deleted from the ledger: the rescan compacts, and rows of that time go out at once."""
    case = rescan_case(postgres, ledger, monkeypatch)
    api, resource, sync, during = case.api, case.resource, case.sync, case.during
    first = case.first
    held = sync.store.generation
    deleted = first[100:200]
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DELETE FROM denied_access_ledger WHERE ip_address = ANY(%s)", (deleted,))
    late_two = "198.51.100.78"
    during.at_first_read = lambda: insert(postgres, [LATE])
    inserted: list[int] = []

    def insert_during_parts(generation: int) -> None:
        if generation > held and not inserted:
            insert(postgres, [late_two])
            inserted.append(len(api.banlist_writes))

    api.after_part = insert_during_parts

    sync.rescan(resource, ledger)

    assert inserted, "the rescan did not compact: the test tests nothing"
    parts = [i for i, write in enumerate(api.banlist_writes) if not write[0].endswith("-banlist")]
    bridges = [
        api.banlist_writes[i]
        for i in range(inserted[0], parts[-1])
        if api.banlist_writes[i][0].endswith("-banlist")
    ]
    assert bridges, "no head between the compaction's parts: the rescan left no bridge"
    _, generation, lines, _ = bridges[-1]
    assert generation == str(held)
    assert {LATE, late_two} <= listed(lines), "a bridge head lacks a row committed meanwhile"
    assert set(first[-5:]) <= listed(lines), "a bridge head dropped the lines the replicas held"
    assert not set(deleted) & listed(lines), "a bridge head lists a ban the rescan dropped"
    assert reloaded_size(api, resource) == ROWS - len(deleted) + 2


@pytest.mark.usefixtures("small_parts")
def test_a_read_that_fails_during_a_rescan_leaves_the_rescan_whole(
    postgres: PostgresServer, ledger: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read runs inside the stream's transaction: its error must not abort the stream."""
    case = rescan_case(postgres, ledger, monkeypatch)
    resource, sync, during = case.resource, case.sync, case.during
    during.refused = True

    sync.rescan(resource, ledger)

    assert during.reads == 1, "the failed read was tried again during the same rescan"
    assert during.writes_at_end, "the rescan did not stream the whole ledger"
    assert len(sync.banlist) == ROWS


@pytest.mark.usefixtures("small_parts")
def test_a_row_committed_during_the_rescans_final_sort_goes_out_before_the_rescan_ends(
    postgres: PostgresServer, ledger: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sort that ends the build takes seconds at millions of bans: new rows go out then too."""
    case = rescan_case(postgres, ledger, monkeypatch)
    api, resource, sync, during = case.api, case.resource, case.sync, case.during
    held, cursor = sync.store.generation, sync.cursor
    # One fetch holds the whole ledger: the only reads are those made while it is sorted.
    monkeypatch.setattr(ledger_module, "STREAM_ROWS", 10 * ROWS)
    during.at_first_read = lambda: insert(postgres, [LATE])

    sync.rescan(resource, ledger)

    assert during.reads, "nothing was read while the build was sorted"
    bridged = [
        write
        for write in api.banlist_writes
        if write[0].endswith("-banlist") and write[1] == str(held) and write[3] == str(cursor)
    ]
    assert any(LATE in listed(lines) for _, _, lines, _ in bridged), (
        "no head of the held generation with its cursor listed the row: it waited for the end"
    )


@pytest.mark.usefixtures("small_parts")
def test_heads_written_during_a_rescan_keep_the_pace_of_head_writes(
    postgres: PostgresServer, ledger: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rescan of minutes under a flood must not rewrite a large head five times a second."""
    case = rescan_case(postgres, ledger, monkeypatch)
    resource, sync, during = case.resource, case.sync, case.during
    # A pace at which the last head (a few hundred bytes) allows no write for minutes.
    monkeypatch.setattr(mirror, "HEAD_WRITE_RATE", 1.0)
    during.at_first_read = lambda: insert(postgres, [LATE])

    sync.rescan(resource, ledger)

    assert during.reads > 1, "the rescan read nothing meanwhile: the test tests nothing"
    assert during.writes_at_end == [0], "a head was written during the rescan, against the pace"
    assert LATE in {prefix_text(prefix) for prefix in sync.banlist.head}
