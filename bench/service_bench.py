"""The service benchmark: serving throughput, ban-check cost, and ``/blacklisted`` with SMTP down.

Side by side in one run, over loopback, with wrk as the load generator:

* ``GET /?n=88`` on (a) Flask's development server (the original deployment's
  way of serving), (b) the production server (``python -m blacklist_service``,
  granian, the default) and (b') the same with ``SERVER=gunicorn`` (gthread,
  the server before), each with the same workers and threads, the full app
  (ban check, metrics; access log off), at 0 and 1,000,000 bans; and (c), (c')
  a bare WSGI app under each server's settings (the ceiling). All take turns
  for ``--rounds`` rounds; each figure is the median of the rounds, with their
  range;
* the in-process cost of one ban check with 0, 100,000 and 1,000,000 bans;
* ``/blacklisted`` latency with the SMTP server down, each call from a fresh
  loopback address (a banned one would get 403), beside ``/?n=88`` measured
  by the same client.

Run: ``.venv/bin/python bench/service_bench.py`` (``--seconds`` per wrk run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from banstore_bench import populate
from blacklist_contract.prefixes import parse_address
from blacklist_devtools.http import get
from blacklist_devtools.net import free_port
from blacklist_service.bans.store import BanStore
from report import Row, append_json, format_figure, print_table
from servers import serving
from wrk import Load, run

CONNECTIONS = 16


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class Rounds:
    """Every round's figures of one server."""

    loads: list[Load]

    def median(self, figure: Callable[[Load], float]) -> float:
        """The median of ``figure`` over the rounds."""
        return statistics.median(figure(load) for load in self.loads)

    def spread(self, figure: Callable[[Load], float]) -> str:
        """The lowest and highest ``figure`` of the rounds, as text."""
        values = [figure(load) for load in self.loads]
        return f"{format_figure(min(values))}-{format_figure(max(values))}"


def throughput(load: Load) -> float:
    """Requests per second of one run."""
    return load.requests_per_second


def p50(load: Load) -> float:
    """Median latency of one run, ms."""
    return load.p50_ms


def p99(load: Load) -> float:
    """99th-percentile latency of one run, ms."""
    return load.p99_ms


def load_in_turns(urls: dict[str, str], seconds: int, rounds: int) -> dict[str, Rounds]:
    """Load ``/?n=88`` of each server in turn, ``rounds`` times; every run of each.

    The servers run side by side and take turns, so a burst of other work on
    the machine hits every one of them alike; the median over the rounds and
    their range say how steady each figure was.
    """
    runs: dict[str, list[Load]] = {name: [] for name in urls}
    for url in urls.values():
        run(f"{url}/?n=88", 1, CONNECTIONS)  # warm-up: imports, connection pools, caches
    for round_number in range(rounds):
        for name, url in urls.items():
            measured = run(f"{url}/?n=88", seconds, CONNECTIONS)
            print(f"  round {round_number + 1} {name:16} {measured}", flush=True)
            if measured.errors:
                print(f"warning: {measured.errors} errors against {name}", file=sys.stderr)
            runs[name].append(measured)
    return {name: Rounds(loads) for name, loads in runs.items()}


def compare(
    section: str,
    metric: str,
    measured: Rounds,
    baseline_name: str,
    baseline: Rounds,
    figure: Callable[[Load], float],
    target: str = "",
) -> Row:
    """A row: the median of ``figure`` for ``measured`` beside ``baseline``'s."""
    unit = "req/s" if figure is throughput else "ms"
    return Row(section, metric, measured.median(figure), unit, baseline_name,
               baseline.median(figure), target, measured.spread(figure))  # fmt: skip


def serving_rows(seconds: int, rounds: int) -> list[Row]:
    """The service under granian and gunicorn, at 0 and 1,000,000 bans, beside the baselines."""
    gunicorn = {"SERVER": "gunicorn"}
    granian = {"SERVER": "granian"}
    with tempfile.TemporaryDirectory(prefix="bench-bans-") as work, ExitStack() as stack:
        million = Path(work) / "million"
        populate(million, 1_000_000)
        urls = {
            "dev": stack.enter_context(serving("dev")),
            "gunicorn": stack.enter_context(serving("production", None, **gunicorn)),
            "granian": stack.enter_context(serving("production", None, **granian)),
            "gunicorn 1M bans": stack.enter_context(serving("production", million, **gunicorn)),
            "granian 1M bans": stack.enter_context(serving("production", million, **granian)),
            "bare gunicorn": stack.enter_context(serving("bare", None, **gunicorn)),
            "bare granian": stack.enter_context(serving("bare", None, **granian)),
        }
        figures = load_in_turns(urls, seconds, rounds)
    dev, old, new = figures["dev"], figures["gunicorn"], figures["granian"]
    old_million, new_million = figures["gunicorn 1M bans"], figures["granian 1M bans"]
    section = f"serving GET /?n=88 (median of {rounds} rounds [range])"
    bans = "ban check, GET /?n=88"
    return [
        compare(section, "(b) granian, throughput", new, "(a) Flask dev server", dev,
                throughput, "≥ 20x (was 10x)"),
        compare(section, "(b) granian, throughput", new, "(b') gunicorn gthread", old,
                throughput, "≥ 4x (was 1.4x)"),
        compare(section, "(b') gunicorn gthread, throughput", old, "(a) Flask dev server", dev,
                throughput),
        compare(section, "(b) granian, p50", new, "(b') gunicorn gthread", old, p50),
        compare(section, "(b) granian, p99", new, "(b') gunicorn gthread", old, p99, "≤ 1x"),
        compare(section, "(b) granian, throughput", new, "(c) bare WSGI on granian",
                figures["bare granian"], throughput, "the app's share"),
        compare(section, "(b') gunicorn, throughput", old, "(c') bare WSGI on gunicorn",
                figures["bare gunicorn"], throughput),
        compare(bans, "granian, 1,000,000 bans, throughput", new_million, "0 bans", new,
                throughput, "0.9-1.1x"),
        compare(bans, "granian, 1,000,000 bans, p50", new_million, "0 bans", new, p50),
        compare(bans, "granian, 1,000,000 bans, p99", new_million, "0 bans", new, p99),
        compare(bans, "gunicorn, 1,000,000 bans, throughput", old_million, "0 bans", old,
                throughput, "0.9-1.1x"),
        compare(bans, "gunicorn, 1,000,000 bans, p99", old_million, "0 bans", old, p99),
    ]  # fmt: skip


def check_cost_ns(state_dir: Path) -> float:
    """Nanoseconds of one ban check (refresh + membership) of a not-banned address."""
    store = BanStore(state_dir / "bans")
    parsed = parse_address("127.0.0.1")
    assert parsed is not None
    version, number = parsed
    check: Callable[[], bool] = lambda: store.banned(version, number)  # noqa: E731
    best = min(timeit.repeat(check, number=100_000, repeat=9)) / 100_000
    store.close()
    return best * 1e9


def check_rows() -> list[Row]:
    """The in-process cost of one ban check with 0, 100,000 and 1,000,000 bans."""
    costs: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-bans-") as work:
        for count in (0, 100_000, 1_000_000):
            state_dir = Path(work) / str(count)
            populate(state_dir, count)
            costs[count] = check_cost_ns(state_dir)
            print(f"  {count:>9} bans: one check {costs[count]:.0f} ns", flush=True)
    return [
        Row("ban check, in process", f"one check, {count:,} bans", costs[count], "ns", "0 bans",
            costs[0], "flat (≤ 1.1x)")
        for count in (100_000, 1_000_000)
    ]  # fmt: skip


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
            percentile(base_ms, 0.99), "≤ 15 ms (was 20)"),
    ]  # fmt: skip


def main() -> None:
    """Measure, print the table, add the rows to ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="wrk runs per server")
    parser.add_argument("--samples", type=int, default=500, help="/blacklisted calls")
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    rows = serving_rows(arguments.seconds, arguments.rounds)
    rows += check_rows()
    rows += blacklisted_rows(arguments.samples)
    print_table(rows)
    append_json(arguments.json, rows)


if __name__ == "__main__":
    main()
