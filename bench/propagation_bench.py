"""Ban propagation across replicas: how long until a ban made on one replica holds on another.

Deploys the whole product on the local cluster (Helm chart, operator, 2
replicas and PostgreSQL, containers on the real node), then, for each of N
fresh client addresses (in the client network namespace), calls
``/blacklisted`` on replica A and polls replica B until it answers 403.
The baseline is the same poll against replica A, where the ban is local.
Run: ``.venv/bin/python bench/propagation_bench.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from blacklist_devtools import cluster as local_cluster
from blacklist_devtools import stack
from blacklist_devtools.http import get
from blacklist_devtools.kube import Cluster
from blacklist_devtools.network import client_address
from report import Row, append_json, print_table


def time_until_refused(url: str, source: str, started: float, limit: float = 10.0) -> float:
    """Seconds from ``started`` until ``url`` refuses ``source`` with 403."""
    while True:
        if get(f"{url}/?n=1", source=source).status == 403:
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            return limit
        time.sleep(0.005)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(deployed: stack.Deployed, samples: int) -> list[Row]:
    """Propagation latencies over ``samples`` addresses."""
    first, second = deployed.instance().service_urls[:2]
    local: list[float] = []
    remote: list[float] = []
    for index in range(samples):
        source = client_address(3000 + index)
        started = time.monotonic()
        assert get(f"{first}/blacklisted", source=source).status == 444
        local.append(time_until_refused(first, source, started))
        remote.append(time_until_refused(second, source, started))
    section = "ban propagation"
    return [
        Row(section, "replica A → B, p50", statistics.median(remote) * 1000, "ms",
            "same replica", statistics.median(local) * 1000, ""),
        Row(section, "replica A → B, p99", percentile(remote, 0.99) * 1000, "ms",
            "same replica", percentile(local, 0.99) * 1000, "≤ 150 ms (was 250)"),
    ]  # fmt: skip


def main() -> None:
    """Deploy, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    state = local_cluster.up()
    handle = Cluster(local_cluster.KUBECONFIG, state.server, local_cluster.binary("kubectl"))
    helm = local_cluster.binary("helm")
    with (
        tempfile.TemporaryDirectory(prefix="bench-propagation-") as work,
        stack.deploy(handle, helm, Path(work), replicas=2) as deployed,
    ):
        rows = measure(deployed, arguments.samples)
    print_table(rows)
    append_json(arguments.json, rows)


if __name__ == "__main__":
    main()
