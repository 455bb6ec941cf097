"""Benchmark of the operator's ban list at scale: peak memory and bytes written (prints a table).

Memory: one fresh process per size (0, 1,000,000 and 5,000,000 entries) imports
the whole operator (kopf, the Kubernetes client, psycopg2), then does what the
ban sync does at that size: a full rescan (every ledger address streamed into a
:class:`~blacklist_operator.banlist.core.packed.Builder`; here from a generator, as
psycopg2's server-side cursor yields 20,000 rows at a time), a compaction (every
part encoded, base64'd and serialised as the API client sends it, one at a
time), a sync of 100,000 new bans merged head by head with a compaction each
time the head is full, and an eviction to capacity. It prints the process's peak
RSS (``VmHWM``); the 0-entry run is the same-run baseline.

Writes: :class:`~blacklist_operator.banlist.sync.mirror.BanListSync` itself, on a
virtual clock, writing to a recorder that counts the bytes etcd would store per
ConfigMap (``data`` as text, ``binaryData`` raw, plus metadata), during a flood
of 1,000 new bans a second for 10 minutes on a base of 1,000,000 bans with a
ban duration (lines with expiries: the larger case). Passes run every 50 ms, as
ledger NOTIFYs wake them under load. The figure is compared with the design's
expectation (docs/operator.md, "Ban list writes").

Run: ``.venv/bin/python bench/banlist_bench.py`` (no cluster, no database).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from blacklist_devtools.images import OPERATOR_IMAGE_ENV
from report import Row, append_json, print_table

SIZES = (0, 1_000_000, 5_000_000)
# Share of IPv6 /64 bans among the entries (the rest are IPv4 addresses).
IPV6_SHARE = 0.05
NEW_BANS = 100_000
FLOOD_BASE = 1_000_000
FLOOD_RATE = 1000
FLOOD_SECONDS = 600
PASS_SECONDS = 0.05
DAY = 86_400


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_case(size: int) -> dict[str, float]:
    """Run in a child process: the ban sync's work at ``size`` entries; peak RSS and timings."""
    import blacklist_operator.controller.handlers  # noqa: F401  (the whole operator, as it runs)
    from blacklist_contract.prefixes import IPV4, IPV6, Prefix
    from blacklist_operator.banlist.core.layout import encode_parts
    from blacklist_operator.banlist.core.rebuild import Builder

    generator = random.Random(size)
    now = int(time.time())

    def prefix() -> Prefix:
        if generator.random() < IPV6_SHARE:
            return Prefix(IPV6, generator.getrandbits(64) << 64, 64)
        return Prefix(IPV4, generator.getrandbits(32), 32)

    figures: dict[str, float] = {"baseline_mb": peak_rss_mb()}
    started = time.monotonic()
    builder = Builder(expiring=True)
    for _ in range(size):
        builder.add(prefix(), now + generator.randrange(DAY))
    banlist = builder.finish()
    figures["rescan_s"] = time.monotonic() - started
    figures["rescan_mb"] = peak_rss_mb()

    def compact() -> tuple[int, int]:
        parts = written = 0
        for data in encode_parts(banlist):
            body = json.dumps({"binaryData": {"bans": base64.b64encode(data).decode()}})
            parts, written = parts + 1, written + len(data)
            del body
        return parts, written

    started = time.monotonic()
    parts, written = compact()
    figures["compaction_s"] = time.monotonic() - started
    figures["parts"] = parts
    figures["snapshot_mb"] = written / 1e6
    figures["compaction_mb"] = peak_rss_mb()
    started = time.monotonic()
    for count in range(NEW_BANS):
        banlist.add(prefix(), now + DAY + count)
        if len(banlist.head) >= 10_000:  # a full head of 23-byte lines
            banlist.merge()
            compact()
    figures["sync_s"] = time.monotonic() - started
    figures["sync_mb"] = peak_rss_mb()
    banlist.evict(max(0, len(banlist) - 50_000))
    figures["evict_mb"] = peak_rss_mb()
    return figures


class Clock:
    """A virtual clock for the sync: ``monotonic`` and ``time`` move only when told."""

    def __init__(self) -> None:
        self.now = float(time.time())

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


class Recorder:
    """Stands in for the API server: counts what etcd would store for each write."""

    def __init__(self) -> None:
        self.bytes = 0
        self.head_writes = 0
        self.part_writes = 0

    def apply(self, manifest: dict[str, Any]) -> None:
        size = len(json.dumps(manifest["metadata"]))
        size += sum(len(value.encode()) for value in (manifest.get("data") or {}).values())
        size += sum(len(base64.b64decode(v)) for v in (manifest.get("binaryData") or {}).values())
        self.bytes += size
        if manifest.get("binaryData"):
            self.part_writes += 1
        else:
            self.head_writes += 1

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """The first write of a name: counted as an apply, with the uid the next ones carry."""
        self.apply(manifest)
        return {"metadata": {"uid": f"uid-{manifest['metadata']['name']}"}}

    def delete(self, *_: Any, **__: Any) -> None:
        """Nothing to count: a delete stores a tombstone only."""

    def get(self, *_: Any) -> None:
        return None


def flood_case() -> dict[str, float]:
    """The bytes written per new ban during the flood, by the real sync on a virtual clock."""
    from blacklist_contract.prefixes import IPV4, Prefix
    from blacklist_operator.banlist.core.rebuild import Builder
    from blacklist_operator.banlist.sync import mirror as sync_module
    from blacklist_operator.banlist.sync import store as store_module
    from blacklist_operator.model.resource import parse
    from blacklist_operator.runtime.state import WrittenBanList

    clock = Clock()
    # The sync and its store read their clocks through their modules' `time`.
    vars(sync_module)["time"] = vars(store_module)["time"] = clock
    body = {"metadata": {"name": "bl", "namespace": "bench", "uid": "u"}, "spec": {}}
    bls = parse({**body, "spec": {"banDuration": "24h"}})
    recorder = Recorder()
    banlist_sync = sync_module.BanListSync(recorder, WrittenBanList(), 5_000_000)  # type: ignore[arg-type]
    generator = random.Random(1)
    builder = Builder(expiring=True)
    for _ in range(FLOOD_BASE):
        builder.add(Prefix(IPV4, generator.getrandbits(32), 32), int(clock.now) + DAY)
    banlist_sync.banlist = builder.finish()
    banlist_sync.filter_key = banlist_sync._filter(bls)
    banlist_sync.write(bls, force=True)  # the base, compacted once before the flood
    base_bytes, recorder.bytes = recorder.bytes, 0
    recorder.head_writes = recorder.part_writes = 0
    per_pass = int(FLOOD_RATE * PASS_SECONDS)
    passes = int(FLOOD_SECONDS / PASS_SECONDS)
    started = time.monotonic()
    for _ in range(passes):
        clock.now += PASS_SECONDS
        hit_ms = int(clock.now * 1000)
        rows = [(generator.getrandbits(32), hit_ms) for _ in range(per_pass)]
        banlist_sync._add_hits(rows, bls)
        banlist_sync.write(bls)
    clock.now += 5
    banlist_sync.write(bls)
    elapsed = time.monotonic() - started
    bans = per_pass * passes
    return {
        "base_snapshot_bytes": base_bytes,
        "bytes_per_ban": recorder.bytes / bans,
        "head_writes": recorder.head_writes,
        "part_writes": recorder.part_writes,
        "cpu_share": elapsed / FLOOD_SECONDS,
    }


def child(case: str) -> None:
    """Run one case in this process and print its figures as JSON."""
    figures = flood_case() if case == "flood" else memory_case(int(case))
    print(json.dumps(figures))


def run_child(case: str) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", case],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **OPERATOR_IMAGE_ENV},  # the operator image's allocator
    )
    figures: dict[str, float] = json.loads(completed.stdout.splitlines()[-1])
    return figures


def main() -> None:
    """Measure, print the table, add the rows to ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child)
        return
    memory = {size: run_child(str(size)) for size in SIZES}
    # The baseline: the same process with an empty list, rescanned and compacted.
    empty = memory[0]["compaction_mb"]
    rows: list[Row] = []
    for size in SIZES[1:]:
        figures = memory[size]
        label = f"{size:,} entries"
        peak = max(figures[key] for key in ("rescan_mb", "compaction_mb", "sync_mb", "evict_mb"))
        rows += [
            Row("ban list", f"operator peak RSS, {label}", peak, "MB", "an empty list", empty,
                "<= 160 MB"),
            Row("ban list", f"rescan build, {label}", figures["rescan_s"], "s", "none", 0),
            Row("ban list", f"compaction ({figures['parts']:.0f} parts, "
                f"{figures['snapshot_mb']:.1f} MB), {label}", figures["compaction_s"], "s",
                "none", 0),
            Row("ban list", f"sync {NEW_BANS:,} new bans (merge + compaction per head), {label}",
                figures["sync_s"], "s", "none", 0),
        ]  # fmt: skip
    flood = run_child("flood")
    rows.append(
        Row(
            "ban list",
            f"etcd bytes per new ban, {FLOOD_RATE}/s for {FLOOD_SECONDS} s on {FLOOD_BASE:,} "
            f"({flood['head_writes']:.0f} head writes, {flood['part_writes']:.0f} part writes)",
            flood["bytes_per_ban"],
            "B",
            "snapshot of the base",
            flood["base_snapshot_bytes"],
            "<= 4,000 B",
        )
    )
    rows.append(
        Row(
            "ban list",
            "sync CPU during the flood (share of one core)",
            flood["cpu_share"] * 100,
            "%",
            "none",
            0,
        )
    )
    print_table(rows)
    if arguments.json:
        append_json(arguments.json, rows)


if __name__ == "__main__":
    main()
