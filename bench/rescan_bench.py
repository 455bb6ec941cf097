"""Benchmark: how long a new ledger row takes to reach a head while a rescan runs (prints a table).

A rescan (every ``--ban-rescan-interval``, and after a large backlog) streams
the whole ledger and builds the list again. This runs the operator's own
:class:`~blacklist_operator.banlist.sync.mirror.BanListSync` against a real
PostgreSQL holding ``--rows`` ledger rows, with an in-memory API that records
when each head and part is written. While a rescan runs, another connection
inserts ``--rate`` rows a second in batches every 50 ms, as a flood does; the
first row of each batch is a probe. A probe has reached the replicas when a
head lists it, or when a head names a generation whose first part was written
after the probe committed. The figure is the probes' p99 from insert to that
head; the same-run baseline is the same rescan with bridge heads turned off
(every row then waits for the rescan's end and its compaction).

Run: ``.venv/bin/python bench/rescan_bench.py [--rows 1000000 5000000] [--rate 1000]``
(no cluster; PostgreSQL is started from the toolchain's binaries).
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

import psycopg2

from blacklist_devtools.ledger_schema import LEDGER
from blacklist_devtools.postgres import PostgresServer
from blacklist_operator.banlist.sync.mirror import BanListSync
from blacklist_operator.banlist.sync.rescan_bridge import RescanBridge
from blacklist_operator.model.resource import BlacklistService, parse
from blacklist_operator.runtime.state import WrittenBanList
from report import Row, append_json, print_table

SIZES = (1_000_000, 5_000_000)
RATE = 1000
BATCH_SECONDS = 0.05
INSERT = (
    "INSERT INTO denied_access_ledger (event_id, path, ip_address, time) "
    "SELECT 'f-' || %s || '-' || g, '/blacklisted', host(%s::inet + g), now() "
    "FROM generate_series(0, %s - 1) g"
)


class Api:
    """The API server in memory: what the sync needs, with the time of each ban-list write."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        # (monotonic time, generation, lines) of each head write.
        self.heads: list[tuple[float, str, str]] = []
        # The monotonic time of the first part written for each generation.
        self.first_part: dict[str, float] = {}

    def _store(self, manifest: dict[str, Any]) -> dict[str, Any]:
        name = manifest["metadata"]["name"]
        stored = {**manifest, "metadata": {**manifest["metadata"], "uid": f"uid-{name}"}}
        self.objects[name] = stored
        data = manifest.get("data") or {}
        if "snapshot" in data:
            lines = "\n" + str(data.get("addresses", ""))
            self.heads.append((time.monotonic(), str(data["snapshot"]), lines))
        else:
            generation = manifest["metadata"]["annotations"]["blacklist.dev/snapshot"]
            self.first_part.setdefault(str(generation), time.monotonic())
        return stored

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        return self.objects.get(name)

    def apply(self, manifest: dict[str, Any], field_manager: str = "") -> None:
        self._store(manifest)

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self._store(manifest)

    def delete(self, *_: Any, **__: Any) -> None:
        """Parts past the count: nothing to record."""


class UnbridgedSync(BanListSync):
    """The sync with no bridge heads during a rescan (the baseline)."""

    def _rescan_bridge(self, resource: BlacklistService, key: str) -> RescanBridge | None:
        return None


def fill(server: PostgresServer, rows: int) -> None:
    with server.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS denied_access_ledger")
        cursor.execute(LEDGER)
        cursor.execute(INSERT, ("base", "10.0.0.0", rows))
        cursor.execute("ANALYZE denied_access_ledger")


def flood(server: PostgresServer, rate: int, stop: threading.Event) -> dict[str, float]:
    """Insert ``rate`` rows a second until ``stop``; the probe address -> insert time."""
    probes: dict[str, float] = {}
    connection = server.connect()
    connection.autocommit = True
    per_batch = max(1, int(rate * BATCH_SECONDS))
    batch = 0
    # 172.16.0.0/12 holds 2^20 addresses, none of them in the base (10.0.0.0/8).
    with connection.cursor() as cursor:
        while not stop.is_set():
            first = 0xAC100000 + batch * per_batch
            address = f"{first >> 24}.{first >> 16 & 255}.{first >> 8 & 255}.{first & 255}"
            cursor.execute(INSERT, (f"p{batch}", address, per_batch))
            probes[address] = time.monotonic()
            batch += 1
            stop.wait(BATCH_SECONDS)
    connection.close()
    return probes


def reached(api: Api, address: str, inserted: float) -> float | None:
    """Seconds from a probe's insert to the first head that brings it to the replicas."""
    for at, generation, lines in api.heads:
        if at < inserted:
            continue
        # Lines without a duration are the bare address.
        if f"\n{address}\n" in lines or api.first_part.get(generation, 0.0) > inserted:
            return at - inserted
    return None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def run(server: PostgresServer, rows: int, rate: int, bridged: bool) -> dict[str, float]:
    """One rescan of ``rows`` under a flood of ``rate``; its seconds and probe latencies (ms)."""
    fill(server, rows)
    connection = psycopg2.connect(server.dsn)
    connection.autocommit = True
    api = Api()
    resource = parse({"metadata": {"name": "bl", "namespace": "bench", "uid": "u"}})
    sync = (BanListSync if bridged else UnbridgedSync)(api, WrittenBanList(), 10_000_000)  # type: ignore[arg-type]
    sync.load(resource)
    sync.ensure_exists(resource)
    sync.sync(resource, connection)  # the first pass: a rescan and a compaction
    stop = threading.Event()
    probes: dict[str, float] = {}
    flooding = threading.Thread(target=lambda: probes.update(flood(server, rate, stop)))
    flooding.start()
    time.sleep(1.0)
    started = time.monotonic()
    sync.rescan(resource, connection)
    ended = time.monotonic()
    stop.set()
    flooding.join()
    while sync.sync(resource, connection).behind:
        pass
    sync.sync(resource, connection)
    connection.close()
    during = [(a, t) for a, t in probes.items() if started <= t <= ended]
    latencies = [s for a, t in during if (s := reached(api, a, t)) is not None]
    if len(latencies) < len(during):
        raise RuntimeError(f"{len(during) - len(latencies)} probes never reached a head")
    return {
        "rescan_s": ended - started,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "probes": len(latencies),
        "largest_head_kib": max(len(lines) for _, _, lines in api.heads) / 1024,
    }


def main() -> None:
    """Measure, print the table, add the rows to ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rows", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rate", type=int, default=RATE)
    arguments = parser.parse_args()
    server = PostgresServer()
    server.start()
    rows: list[Row] = []
    try:
        for size in arguments.rows:
            without = run(server, size, arguments.rate, bridged=False)
            with_bridges = run(server, size, arguments.rate, bridged=True)
            label = f"{size:,} rows, {arguments.rate:,} new/s"
            probes, seconds = with_bridges["probes"], with_bridges["rescan_s"]
            rows += [
                Row("rescan", f"new row -> head during a rescan, p99 ({label}; "
                    f"{probes:.0f} probes, rescan {seconds:.1f} s)",
                    with_bridges["p99_ms"], "ms", "no bridge heads", without["p99_ms"],
                    "<= 1,000 ms"),
                Row("rescan", f"new row -> head during a rescan, p50 ({label})",
                    with_bridges["p50_ms"], "ms", "no bridge heads", without["p50_ms"]),
                Row("rescan", f"largest head written ({label})", with_bridges["largest_head_kib"],
                    "KiB", "none", 0, "< 1,024 KiB"),
            ]  # fmt: skip
    finally:
        server.destroy()
    print_table(rows)
    if arguments.json:
        append_json(arguments.json, rows)


if __name__ == "__main__":
    main()
