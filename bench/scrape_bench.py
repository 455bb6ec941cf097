"""Metrics scrapes against serving: ``GET /?n=2`` p99 with 50 scrapes a second at 1,000,000 bans.

A scrape used to copy and scan the whole ban store (164 ms at 1M bans), so 50
scrapes a second starved a replica. Now ``/metrics`` is on its own port and O(1)
in the number of bans. One production server (granian, the default) holds
1,000,000 bans; wrk loads ``GET /?n=2`` on it in turns, without scrapes and
while a scraper reads ``/metrics`` 50 times a second on the metrics port (each
scrape a new connection, as Prometheus' would be after a timeout). Each figure
is the median of ``--rounds`` rounds, with their range, beside the same
server's figure without scrapes from the same rounds.

Run: ``.venv/bin/python bench/scrape_bench.py`` (``--seconds`` per wrk run).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from banstore_bench import populate
from blacklist_devtools.http import get
from blacklist_devtools.net import free_port
from report import Row, append_json, format_figure, print_table
from servers import serving
from wrk import Load, run

BANS = 1_000_000
SCRAPES_PER_SECOND = 50
# Few connections: the server is loaded but not saturated, so p99 is the requests' own
# latency rather than a queue behind every other connection's (which swamps any effect).
CONNECTIONS = 4


class Scraper:
    """Reads ``/metrics`` at a steady rate in a thread; what each scrape took."""

    def __init__(self, url: str, rate: float) -> None:
        self._url = url
        self._interval = 1.0 / rate
        self._stop = threading.Event()
        self.seconds: list[float] = []
        self.failures = 0
        self._thread = threading.Thread(target=self._scrape, name="scraper", daemon=True)

    def _scrape(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                answer = get(self._url, timeout=5)
                if answer.status != 200 or "blacklist_" not in answer.body:
                    self.failures += 1
            except OSError:
                self.failures += 1
            self.seconds.append(time.perf_counter() - started)
            due += self._interval
            self._stop.wait(max(0.0, due - time.monotonic()))

    @contextmanager
    def running(self) -> Iterator[Scraper]:
        """Scrape while the block runs."""
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def figures(loads: list[Load], pick: str) -> tuple[float, str]:
    """The median of one figure of the rounds, and their range as text."""
    values = [getattr(load, pick) for load in loads]
    return statistics.median(values), f"{format_figure(min(values))}-{format_figure(max(values))}"


def measure(seconds: int, rounds: int, connections: int) -> list[Row]:
    """Rounds of wrk without and with scrapes against one server holding ``BANS`` bans."""
    metrics_port = free_port()
    quiet: list[Load] = []
    scraped: list[Load] = []
    scrape_seconds: list[float] = []
    rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-scrape-") as work:
        state = Path(work) / "state"
        populate(state, BANS)
        with serving("production", state, METRICS_PORT=str(metrics_port)) as url:
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            if get(metrics_url, timeout=5).status != 200:
                raise RuntimeError("the metrics port does not answer")
            if get(f"{url}/metrics", timeout=5).status != 404:
                raise RuntimeError("/metrics is served on the public port")
            run(f"{url}/?n=2", 1, connections)  # warm-up
            for round_number in range(rounds):
                quiet.append(run(f"{url}/?n=2", seconds, connections))
                scraper = Scraper(metrics_url, SCRAPES_PER_SECOND)
                started = time.monotonic()
                with scraper.running():
                    scraped.append(run(f"{url}/?n=2", seconds, connections))
                elapsed = time.monotonic() - started
                if scraper.failures:
                    raise RuntimeError(f"{scraper.failures} scrapes failed")
                rates.append(len(scraper.seconds) / elapsed)
                scrape_seconds += scraper.seconds
                print(
                    f"  round {round_number + 1}: quiet {quiet[-1]}; scraped {scraped[-1]}; "
                    f"{rates[-1]:.1f} scrapes/s",
                    flush=True,
                )
    if any(load.errors for load in quiet + scraped):
        raise RuntimeError("wrk saw errors")
    section = (
        f"GET /?n=2 at {BANS:,} bans, {connections} connections, "
        f"{SCRAPES_PER_SECOND} scrapes/s (median of {rounds})"
    )
    baseline = "no scrapes, same server"
    rows = []
    for metric, pick, unit, target in (
        ("p99 with scrapes", "p99_ms", "ms", "≤ 1.1x"),
        ("p50 with scrapes", "p50_ms", "ms", ""),
        ("throughput with scrapes", "requests_per_second", "req/s", ""),
    ):
        value, spread = figures(scraped, pick)
        base, _ = figures(quiet, pick)
        rows.append(Row(section, metric, value, unit, baseline, base, target, spread))
    scrape_ms = sorted(seconds * 1000 for seconds in scrape_seconds)
    rows.append(
        Row(section, "one scrape, p99", scrape_ms[int(0.99 * (len(scrape_ms) - 1))], "ms",
            "one scrape, p50", statistics.median(scrape_ms))
    )  # fmt: skip
    rows.append(
        Row(section, "scrapes achieved", statistics.median(rates), "/s", "asked",
            SCRAPES_PER_SECOND, "1x")
    )  # fmt: skip
    return rows


def main() -> None:
    """Measure, print the table, add the rows to ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=7, help="rounds without and with scrapes")
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="wrk connections")
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    rows = measure(arguments.seconds, arguments.rounds, arguments.connections)
    print_table(rows)
    append_json(arguments.json, rows)


if __name__ == "__main__":
    main()
