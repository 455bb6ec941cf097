"""The ban store at attack scale: lookups at 0 and 5,000,000 entries, build cost, pod memory.

Side by side in one run:

* one lookup (``BanStore.banned``: the ``fstat`` of the log, the log's dict,
  the snapshot's sections) of addresses that are not banned, IPv4 and IPv6,
  with 0 entries and with 5,000,000 (4,000,000 IPv4 /32 and 1,000,000 IPv6
  /64, with expiries), in process;
* one ``GET /?n=88`` through the whole WSGI stack in process (ban check,
  counters, the square), at 0 and 5,000,000 entries;
* streaming 5,000,000 entries into a snapshot: seconds, and the peak RSS of the
  process that builds it (bounded: no list of every ban); and the seconds a
  replica takes to stream the operator's parts (about 300,000 entries each,
  zlib-compressed) into a new generation, the bulk of a new replica's time to
  ready;
* the memory of a real service (``python -m blacklist_service``, 2 workers)
  serving 5,000,000 entries after 20,000 lookups of random addresses, beside
  the same at 0 entries: the process tree's RSS, PSS (shared pages split
  between the processes that map them) and anonymous memory, and the snapshot
  file, which the pod's cgroup charges once as page cache. The default memory
  limit of a service pod is 256 MiB.

Run: ``.venv/bin/python bench/banstore_bench.py`` (``--entries`` to change the size).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import timeit
from array import array
from collections.abc import Callable, Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any

from blacklist_contract.prefixes import IPV4, IPV6
from blacklist_contract.wire import Section, decode_part, encode_part
from blacklist_devtools.http import get
from blacklist_devtools.net import free_port
from blacklist_devtools.processes import stop_process
from blacklist_service.bans.snapshot import CHUNK_ENTRIES
from blacklist_service.bans.store import BanStore
from report import Row, append_json, print_table

MIB = 1024 * 1024
LIMIT_MIB = 256  # DEFAULT_SERVICE_RESOURCES' memory limit
# The clients' proxies: 200 loopback addresses, so 40,000 connections never run out of ports.
PROXIES = [f"127.0.50.{index}" for index in range(1, 201)]


def _ascending(count: int, start: int, gap_mask: int, typecode: str, seed: int) -> array[int]:
    """``count`` distinct ascending keys from ``start``, random gaps up to ``gap_mask``.

    Made in C (no list of every key): random 16-bit gaps, masked, odd so none is 0.
    """
    gaps = array("H", random.Random(seed).randbytes(count * 2))
    keys = array(typecode)
    keys.extend(accumulate((gap & gap_mask | 1 for gap in gaps), initial=start))
    del keys[0]
    return keys


def sections(count: int) -> Iterator[Section]:
    """``count`` entries as sorted pieces: four fifths IPv4 /32, one fifth IPv6 /64."""
    expiry = int(time.time()) + 86400
    ipv6 = count // 5
    runs = (
        # IPv4 keys from 11.0.0.0 up to about 139.0.0.0 at 5,000,000 entries.
        (IPV4, 32, _ascending(count - ipv6, 0x0B000000, 0x3FF, "I", 1)),
        (IPV6, 64, _ascending(ipv6, 0x20010DB8 << 32, 0xFFFF, "Q", 2)),
    )
    for version, length, keys in runs:
        for at in range(0, len(keys), CHUNK_ENTRIES):
            piece = Section.empty(version, length)
            piece.keys = keys[at : at + CHUNK_ENTRIES]
            piece.expiries = array("I", [expiry]) * len(piece.keys)
            yield piece


def populate(state_dir: Path, count: int) -> float:
    """A replica's state dir holding ``count`` entries; return the seconds the build took."""
    store = BanStore(state_dir / "bans")
    started = time.perf_counter()
    writer = store.new_snapshot()
    for piece in sections(count):
        writer.add(piece)
    store.install(writer, "bench", 0)
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


PART_ENTRIES = 300_000  # about what one operator part holds (some 1 MB compressed)


def operator_parts(count: int) -> list[bytes]:
    """``count`` entries encoded as the operator's snapshot parts, in order."""
    parts: list[bytes] = []
    pending: list[Section] = []
    held = 0
    for piece in sections(count):
        pending.append(piece)
        held += len(piece)
        if held >= PART_ENTRIES:
            parts.append(encode_part(pending))
            pending, held = [], 0
    if pending:
        parts.append(encode_part(pending))
    return parts


def install_seconds(state_dir: Path, parts: list[bytes]) -> float:
    """Seconds a replica takes to stream the operator's parts into a new generation."""
    store = BanStore(state_dir / "bans", carry_own=True)
    started = time.perf_counter()
    writer = store.new_snapshot()
    for part in parts:
        for section in decode_part(part):
            writer.add(section)
    store.install(writer, "bench", 0)
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def build_in_child(state_dir: Path, count: int) -> tuple[float, float]:
    """Build in a fresh process: (seconds, peak RSS MiB of that process)."""
    code = (
        "import resource, sys; sys.path.insert(0, sys.argv[1]);"
        "from pathlib import Path; from banstore_bench import populate;"
        "seconds = populate(Path(sys.argv[2]), int(sys.argv[3]));"
        "print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    bench_dir = str(Path(__file__).resolve().parent)
    output = subprocess.run(
        [sys.executable, "-c", code, bench_dir, str(state_dir), str(count)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(output[0]), float(output[1])


def lookup_ns(directories: list[Path], version: int) -> list[float]:
    """Nanoseconds of one lookup of a not-banned address in each store, rounds interleaved.

    The addresses are random within the banned keys' range (clients are
    anywhere), so each lookup goes through the section's index and bisect.
    Each figure is the best of 9 rounds over 1,000 addresses; the stores take
    turns, so a noisy neighbour slows both alike.
    """
    stores = [BanStore(directory / "bans") for directory in directories]
    generator = random.Random(9)
    if version == IPV4:
        addresses = [generator.randrange(0x0C000000, 0x8A000000) for _ in range(1000)]
    else:
        addresses = [(0x20010DB8 << 96) | generator.getrandbits(96) for _ in range(1000)]
    best = [float("inf")] * len(stores)
    for _ in range(9):
        for index, store in enumerate(stores):
            banned = store.banned
            started = time.perf_counter()
            for _ in range(20):
                for address in addresses:
                    banned(version, address)
            best[index] = min(best[index], time.perf_counter() - started)
    for store in stores:
        store.close()
    return [seconds / (20 * len(addresses)) * 1e9 for seconds in best]


def request_ns(directories: list[Path]) -> tuple[float, float]:
    """Nanoseconds of one ``GET /?n=88`` through the app's whole WSGI stack, in process.

    One app per state directory, rounds interleaved; the best of 7 rounds each.
    """
    from blacklist_service import create_app

    apps = [create_app({"STATE_DIR": str(d), "BACKGROUND": False}) for d in directories]
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "QUERY_STRING": "n=88",
        "REMOTE_ADDR": "203.0.113.9",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "5004",
        "wsgi.url_scheme": "http",
    }

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> Any:
        assert status.startswith("200")

    best = [float("inf")] * len(apps)
    for _ in range(7):
        for index, app in enumerate(apps):
            call: Callable[[], object] = lambda app=app: app.wsgi_app(environ, start_response)  # type: ignore[misc]  # noqa: E731
            best[index] = min(best[index], timeit.timeit(call, number=20_000) / 20_000 * 1e9)
    return best[0], best[1]


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    pids, index = [pid], 0
    while index < len(pids):
        pids.extend(_children(pids[index]))
        index += 1
    return pids


def memory_mib(pids: list[int]) -> dict[str, float]:
    """Summed Rss, Pss and Anonymous of ``pids`` (``/proc/PID/smaps_rollup``), in MiB."""
    totals = {"Rss": 0.0, "Pss": 0.0, "Anonymous": 0.0}
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in totals:
                totals[name] += int(rest.split()[0]) / 1024
    return totals


def served_memory(state_dir: Path) -> dict[str, float]:
    """The memory of a 2-worker service on ``state_dir`` after 20,000 lookups."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BANLIST_CONFIGMAP")}
    env.update(
        PORT=str(port),
        BIND_ADDRESS="127.0.0.1",
        STATE_DIR=str(state_dir),
        WEB_CONCURRENCY="2",
        TRUSTED_PROXIES="127.0.50.0/24",
        # The default server, as a pod runs it (trusted proxies alone would choose gunicorn).
        SERVER="granian",
    )
    log = (state_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "blacklist_service"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if get(f"{url}/readyz", timeout=2).status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        generator = random.Random(5)
        for index in range(20_000):
            if index % 2:
                client = f"2001:db8:{generator.getrandbits(16):x}:{generator.getrandbits(16):x}::1"
            else:
                client = ".".join(str(generator.randrange(11, 223)) for _ in range(4))
            proxy = PROXIES[index % len(PROXIES)]
            get(f"{url}/?n=2", source=proxy, headers={"X-Forwarded-For": client})
        return memory_mib(tree(process.pid))
    finally:
        stop_process(process, 30)
        log.close()


def main() -> None:
    """Measure, print the table, add the rows to ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=5_000_000)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    count = arguments.entries
    label = f"{count:,} entries"
    with tempfile.TemporaryDirectory(prefix="bench-banstore-") as work:
        empty, full = Path(work) / "empty", Path(work) / "full"
        populate(empty, 0)
        build_seconds, build_rss = build_in_child(full, count)
        print(f"  built {label} in {build_seconds:.1f} s, peak RSS {build_rss:.0f} MiB", flush=True)
        parts = operator_parts(count)
        installed = install_seconds(Path(work) / "replica", parts)
        print(f"  installed {label} from {len(parts)} parts in {installed:.1f} s", flush=True)
        del parts
        snapshot_mib = sum(p.stat().st_size for p in (full / "bans").glob("snapshot-*")) / MIB
        figures: dict[str, tuple[float, float]] = {}
        for name, version in (("lookup, IPv4", IPV4), ("lookup, IPv6", IPV6)):
            at_full, at_empty = lookup_ns([full, empty], version)
            figures[name] = (at_full, at_empty)
        figures["GET /?n=88 in process"] = request_ns([full, empty])
        for name, (at_full, at_empty) in figures.items():
            print(f"  {name}: {at_full:.0f} ns vs {at_empty:.0f} ns", flush=True)
        memory_full, memory_empty = served_memory(full), served_memory(empty)
        print(f"  memory: {memory_full} vs {memory_empty}", flush=True)
    worst = memory_full["Anonymous"] + snapshot_mib
    rows = [
        Row("ban store", f"{name}, {label}", value, "ns", "0 entries", baseline, "≤ 1.1x")
        for name, (value, baseline) in figures.items()
    ]
    rows += [
        Row("ban store", f"snapshot build, {label}", build_seconds, "s", "", 0.0),
        Row("ban store", f"snapshot build peak RSS, {label}", build_rss, "MiB", "", 0.0),
        Row("ban store", f"operator parts installed, {label}", installed, "s", "", 0.0, "≤ 10 s"),
        Row("ban store", f"snapshot file, {label}", snapshot_mib, "MiB", "", 0.0),
    ]
    for figure in ("Rss", "Pss", "Anonymous"):
        rows.append(
            Row("service pod, 2 workers", f"{figure}, {label}", memory_full[figure], "MiB",
                "0 entries", memory_empty[figure], f"< {LIMIT_MIB} MiB")
        )  # fmt: skip
    rows.append(
        Row("service pod, 2 workers", f"anonymous + whole snapshot cached, {label}", worst,
            "MiB", "0 entries", memory_empty["Anonymous"], f"< {LIMIT_MIB} MiB")
    )  # fmt: skip
    print_table(rows)
    append_json(arguments.json, rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(the bench process itself peaked at {peak:.0f} MiB)")


if __name__ == "__main__":
    main()
