"""The service benchmark: serving throughput, ban-check cost, and ``/blacklisted`` with SMTP down.

Side by side in one run, over loopback, with wrk as the load generator:

* ``GET /?n=88`` on (a) Flask's development server (the original deployment's
  way of serving), (b) the production server (``python -m blacklist_service``,
  gunicorn ``gthread``), (b') the same with gunicorn's ``sync`` workers, and
  (c) a bare WSGI app under the production server's settings (the ceiling);
* the same request with 0, 100,000 and 1,000,000 banned addresses, and the
  in-process cost of one membership check at those sizes;
* ``/blacklisted`` latency with the SMTP server down, each call from a fresh
  loopback address (a banned one would get 403), beside ``/?n=88`` measured
  by the same client.

Run: ``.venv/bin/python bench/service_bench.py`` (``--seconds`` per wrk run).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from blacklist_devtools.http import get
from blacklist_devtools.net import free_port
from blacklist_service.addresses import address_key
from blacklist_service.banstore import BAN_FILE, BanStore
from report import Row, append_json, print_table
from servers import serving
from wrk import Load, run

CONNECTIONS = 16


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def best_loads(urls: dict[str, str], seconds: int, rounds: int) -> dict[str, Load]:
    """Load ``/?n=88`` of each server in turn, ``rounds`` times; return each one's best run.

    The servers run side by side and take turns, so a burst of other work on
    the machine hits every one of them alike; the best run of each is the one
    least disturbed.
    """
    best: dict[str, Load] = {}
    for url in urls.values():
        run(f"{url}/?n=88", 1, CONNECTIONS)  # warm-up: imports, connection pools, caches
    for round_number in range(rounds):
        for name, url in urls.items():
            measured = run(f"{url}/?n=88", seconds, CONNECTIONS)
            print(f"  round {round_number + 1} {name:12} {measured}", flush=True)
            if measured.errors:
                print(f"warning: {measured.errors} errors against {name}", file=sys.stderr)
            if name not in best or measured.requests_per_second > best[name].requests_per_second:
                best[name] = measured
    return best


def serving_rows(seconds: int, rounds: int) -> list[Row]:
    """(a), (b), (b') and (c) under the same load."""
    with ExitStack() as stack:
        urls = {
            "dev": stack.enter_context(serving("dev")),
            "gthread": stack.enter_context(serving("production")),
            "sync": stack.enter_context(serving("production", None, WORKER_CLASS="sync")),
            "bare": stack.enter_context(serving("bare")),
        }
        figures = best_loads(urls, seconds, rounds)
    dev, prod, sync, bare = (figures[k] for k in ("dev", "gthread", "sync", "bare"))
    section = "serving GET /?n=88"
    return [
        Row(section, "(b) production, throughput", prod.requests_per_second, "req/s",
            "(a) Flask dev server", dev.requests_per_second, "≥ 10x"),
        Row(section, "(b) production, throughput", prod.requests_per_second, "req/s",
            "(c) bare WSGI, same server", bare.requests_per_second, "≥ 0.7x"),
        Row(section, "(b') sync workers, throughput", sync.requests_per_second, "req/s",
            "(b) gthread workers", prod.requests_per_second, "choice"),
        Row(section, "(b) production, p50", prod.p50_ms, "ms", "(a) Flask dev server", dev.p50_ms),
        Row(section, "(b) production, p99", prod.p99_ms, "ms", "(a) Flask dev server", dev.p99_ms),
        Row(section, "(c) bare WSGI, p99", bare.p99_ms, "ms", "(b) production", prod.p99_ms),
    ]  # fmt: skip


def populate(state_dir: Path, count: int) -> None:
    """Ban ``count`` random addresses (none of them loopback) in a replica's state dir."""
    state_dir.mkdir(parents=True, exist_ok=True)
    generator = random.Random(count)
    keys = {(0xFFFF << 32) | generator.randrange(0x0B000000, 0xDF000000) for _ in range(count)}
    store = BanStore(state_dir / BAN_FILE)
    store.add(keys)
    store.close()


def check_cost_ns(state_dir: Path) -> float:
    """Nanoseconds of one ban check (refresh + membership) of a not-banned address."""
    store = BanStore(state_dir / BAN_FILE)
    key = address_key("127.0.0.1")
    check: Callable[[], bool] = lambda: key in store  # noqa: E731
    best = min(timeit.repeat(check, number=100_000, repeat=9)) / 100_000
    store.close()
    return best * 1e9


def ban_rows(seconds: int, rounds: int) -> list[Row]:
    """Throughput and check cost with 0, 100,000 and 1,000,000 bans."""
    counts = (0, 100_000, 1_000_000)
    costs: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-bans-") as work, ExitStack() as stack:
        urls: dict[str, str] = {}
        for count in counts:
            state_dir = Path(work) / str(count)
            populate(state_dir, count)
            costs[count] = check_cost_ns(state_dir)
            print(f"  {count:>9} bans: one check {costs[count]:.0f} ns", flush=True)
            urls[str(count)] = stack.enter_context(serving("production", state_dir))
        figures = best_loads(urls, seconds, rounds)
    loads = {count: figures[str(count)] for count in counts}
    section = "ban check"
    rows: list[Row] = []
    for count in (100_000, 1_000_000):
        rows.append(Row(section, f"throughput, {count:,} bans", loads[count].requests_per_second,
                        "req/s", "0 bans", loads[0].requests_per_second, "0.9-1.1x"))  # fmt: skip
        rows.append(Row(section, f"p50, {count:,} bans", loads[count].p50_ms, "ms", "0 bans",
                        loads[0].p50_ms, "0.9-1.1x"))  # fmt: skip
        rows.append(Row(section, f"one check, {count:,} bans", costs[count], "ns", "0 bans",
                        costs[0], "flat"))  # fmt: skip
    return rows


def timed(url: str, source: str) -> tuple[int, float]:
    """Status and seconds of one GET from ``source``."""
    started = time.perf_counter()
    status = get(url, source=source).status
    return status, time.perf_counter() - started


def blacklisted_rows(samples: int) -> list[Row]:
    """Latency of ``/blacklisted`` with nothing listening on the SMTP port."""
    dead_smtp = free_port()
    sources = [f"127.10.{index // 250}.{index % 250 + 1}" for index in range(samples)]
    with (
        serving("production", MAIL_SERVER="127.0.0.1", MAIL_PORT=str(dead_smtp)) as url,
        ThreadPoolExecutor(max_workers=4) as pool,
    ):
        baseline = list(pool.map(lambda s: timed(f"{url}/?n=88", s), sources))
        hits = list(pool.map(lambda s: timed(f"{url}/blacklisted", s), sources))
    if {status for status, _ in hits} != {444} or {status for status, _ in baseline} != {200}:
        raise RuntimeError("unexpected statuses during the /blacklisted benchmark")
    hit_ms = [seconds * 1000 for _, seconds in hits]
    base_ms = [seconds * 1000 for _, seconds in baseline]
    section = "/blacklisted, SMTP down"
    return [
        Row(section, "p50", statistics.median(hit_ms), "ms", "GET /?n=88, same client",
            statistics.median(base_ms)),
        Row(section, "p99", percentile(hit_ms, 0.99), "ms", "GET /?n=88, same client",
            percentile(base_ms, 0.99), "≤ 20 ms"),
    ]  # fmt: skip


def main() -> None:
    """Measure, print the table, add the rows to ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per server")
    parser.add_argument("--samples", type=int, default=500, help="/blacklisted calls")
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    rows = serving_rows(arguments.seconds, arguments.rounds)
    rows += ban_rows(arguments.seconds, arguments.rounds)
    rows += blacklisted_rows(arguments.samples)
    print_table(rows)
    append_json(arguments.json, rows)


if __name__ == "__main__":
    main()
