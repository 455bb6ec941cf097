"""A ban flood against a deployed resource: a base of ledger rows, new rows at a rate, probes.

Shared by the real-node flood test (``tests/e2e/test_flood.py``) and the flood
bench (``bench/flood_bench.py``). Ledger rows are written straight into the
resource's PostgreSQL (``COPY`` for the base, small transactions each followed
by the service's ``NOTIFY`` for the flood), the way replicas' hits arrive, only
faster than a client range could send them. Base and flood addresses come from
11.0.0.0/8 and 12.0.0.0/8: ledger text only, never traffic. Probe clients are
real: they call ``/blacklisted`` from their own addresses of the client range.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2

from blacklist_contract.tables import LEDGER_TABLE
from blacklist_devtools import stack
from blacklist_devtools.http import get
from blacklist_devtools.kube import Cluster
from blacklist_devtools.network import client_address
from blacklist_operator.builders.naming import POSTGRES_PORT

LEDGER = LEDGER_TABLE
BASE_FIRST = 11 << 24
FLOOD_FIRST = 12 << 24
ROWS_PER_TRANSACTION = 10
COPY_CHUNK = 200_000


def connect(found: stack.Instance) -> Any:
    """A connection to the instance's ledger database."""
    return psycopg2.connect(
        host=found.database_address,
        port=POSTGRES_PORT,
        user=found.database_user,
        password=found.database_password,
        dbname=found.database_name,
    )


def address(first: int, index: int) -> str:
    """The ``index``-th IPv4 address from ``first``."""
    return socket.inet_ntoa((first + index).to_bytes(4, "big"))


def load_base(found: stack.Instance, count: int, extra: Iterable[str] = ()) -> None:
    """COPY ``extra`` addresses, then ``count`` rows of distinct base addresses, in chunks."""
    with connect(found) as connection, connection.cursor() as cursor:
        rows = io.StringIO()
        for ip in extra:
            rows.write(f"{uuid.uuid4()}\t/blacklisted\t{ip}\tnow()\n")
        for index in range(count):
            rows.write(f"{uuid.uuid4()}\t/blacklisted\t{address(BASE_FIRST, index)}\tnow()\n")
            if (index + 1) % COPY_CHUNK == 0 or index + 1 == count:
                rows.seek(0)
                cursor.copy_from(rows, LEDGER, columns=("event_id", "path", "ip_address", "time"))
                connection.commit()
                rows = io.StringIO()
        if rows.tell():
            rows.seek(0)
            cursor.copy_from(rows, LEDGER, columns=("event_id", "path", "ip_address", "time"))
        cursor.execute(f"NOTIFY {LEDGER}")
        connection.commit()


def banned_count(deployed: stack.Deployed) -> int:
    """``status.bannedCount`` of the deployed resource."""
    return int((deployed.resource().get("status") or {}).get("bannedCount") or 0)


def wait_banned_count(deployed: stack.Deployed, count: int, timeout: float) -> float:
    """Wait until the resource reports at least ``count`` bans; return the seconds it took."""
    started = time.monotonic()
    while banned_count(deployed) < count:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"bannedCount did not reach {count:,} in {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


def flood(found: stack.Instance, rate: int, seconds: float, stop: threading.Event) -> int:
    """Insert ``rate`` rows a second until ``seconds`` pass; return how many were inserted."""
    inserted = 0
    started = time.monotonic()
    with connect(found) as connection, connection.cursor() as cursor:
        while not stop.is_set() and time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * rate)
            while inserted < due:
                batch = [
                    (str(uuid.uuid4()), "/blacklisted", address(FLOOD_FIRST, inserted + offset))
                    for offset in range(ROWS_PER_TRANSACTION)
                ]
                cursor.executemany(
                    f"INSERT INTO {LEDGER} (event_id, path, ip_address, time)"  # noqa: S608
                    " VALUES (%s, %s, %s, now())",
                    batch,
                )
                cursor.execute(f"NOTIFY {LEDGER}")
                connection.commit()
                inserted += len(batch)
            time.sleep(0.01)
    return inserted


@dataclass
class Probes:
    """What the propagation probe saw: one entry per fresh client banned on replica A."""

    seconds: list[float] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)


def probe_propagation(
    urls: Sequence[str], stop: threading.Event, out: Probes, first_client: int, limit: float = 30.0
) -> None:
    """Once a second: ban a fresh client on ``urls[0]``, time until ``urls[1]`` refuses it.

    A ban not seen within ``limit`` seconds is recorded as ``limit``.
    """
    index = first_client
    while not stop.is_set():
        source = client_address(index)
        index += 1
        started = time.monotonic()
        if get(f"{urls[0]}/blacklisted", source=source).status != 444:
            continue
        out.clients.append(source)
        while time.monotonic() - started < limit:
            if get(f"{urls[1]}/?n=1", source=source).status == 403:
                out.seconds.append(time.monotonic() - started)
                break
            time.sleep(0.01)
        else:
            out.seconds.append(limit)
        stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def restarts(cluster: Cluster, namespaces: Iterable[str]) -> dict[str, int]:
    """Container restarts so far per pod, with ``:OOMKilled`` appended to the pods OOM-killed."""
    found: dict[str, int] = {}
    for namespace in namespaces:
        pods = stack.get_json(cluster, "pods", "-n", namespace)
        for pod in pods.get("items") or []:
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                name = pod["metadata"]["name"]
                terminated = (status.get("lastState") or {}).get("terminated") or {}
                if terminated.get("reason") == "OOMKilled":
                    name += ":OOMKilled"
                found[name] = found.get(name, 0) + int(status.get("restartCount") or 0)
    return found


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank), 0 for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def pod_memory(cluster: Cluster, namespace: str, pod: str) -> dict[str, int]:
    """Memory of a pod's container, read inside it: the main process's RSS and peak.

    ``VmRSS``/``VmHWM`` of PID 1 (the operator, or the service's server
    master), the cgroup's usage and peak (page cache included, as the limit
    counts it; cgroup v2 or v1) and its anonymous memory now (``anon``: what
    cannot be reclaimed short of an OOM kill), in bytes.
    """
    code = (
        "import json, pathlib as p\n"
        "s = {l.split(':')[0]: int(l.split()[1]) * 1024 for l in open('/proc/1/status')"
        " if l.startswith(('VmRSS', 'VmHWM'))}\n"
        "for key, names in (('usage', ('memory.current', 'memory/memory.usage_in_bytes')),"
        " ('peak', ('memory.peak', 'memory/memory.max_usage_in_bytes'))):\n"
        "    for name in names:\n"
        "        f = p.Path('/sys/fs/cgroup') / name\n"
        "        if f.exists():\n"
        "            s[key] = int(f.read_text()); break\n"
        "for name, key in (('memory.stat', 'anon'), ('memory/memory.stat', 'total_rss')):\n"
        "    f = p.Path('/sys/fs/cgroup') / name\n"
        "    if f.exists():\n"
        "        stat = dict(l.split() for l in f.read_text().splitlines())\n"
        "        s['anon'] = int(stat[key]); break\n"
        "print(json.dumps(s))\n"
    )
    output = cluster.kubectl("exec", "-n", namespace, pod, "--", "python", "-c", code)
    found: dict[str, int] = json.loads(output)
    return found
