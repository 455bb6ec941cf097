"""``@kopf.index`` against the dict an ``on.event`` handler fills (``Runtime.instances``).

The operator keeps the latest body of every BlacklistService in a dict that an
``@kopf.on.event`` handler fills (``runtime.state.Instances``). kopf offers the
same as ``@kopf.index``. This runs a small kopf operator twice per round
against the local cluster, watching one namespace of ``--count`` ConfigMaps
shaped like a BlacklistService's watch event (a 3 KB body, two field managers):

* ``dict``: an ``on.event`` handler keeps the body without ``managedFields``
  in a dict, as ``Instances.update`` does;
* ``index``: an ``@kopf.index`` function returns the same stripped body, and an
  ``on.event`` handler that only marks that it ran (the operator would still need
  one for its wake-ups: an index function is not called for deletions and runs
  before the handler, so the handler no longer sees the previous value).

Measured per run, from the operator process: the time from its start to the
startup handler, and from there to its first resource handler, until a thread
sees every object and until a handler ran for every object (and the CPU used
meanwhile); RSS once settled
(and with an empty namespace, the baseline); the time from a patch sent to a
worker thread seeing it (p50/p95 of ``--probes``); the operator's CPU time and
the wall time for one change to every object (all sent at once). Last, in this
process: how often ``list()`` of a kopf index, and of ``Instances``, from a
thread fails while the main thread changes it.

Run: ``.venv/bin/python bench/index_bench.py`` (uses the running local cluster;
its namespaces are deleted at the end).
"""

from __future__ import annotations

import time

STARTED = time.monotonic()

import argparse  # noqa: E402 (the start is timed before the imports)
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator, Mapping  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import IO, Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KUBECONFIG = REPO / ".local" / "kubeconfig"
STAMP = "bench.blacklist.dev/stamp"
LABEL = "bench.blacklist.dev/index"
MODES = ("dict", "index")
# A BlacklistService's spec and status as `kubectl get -o json` shows them, about 3 KB.
PAYLOAD = json.dumps(
    {
        "spec": {
            "image": "registry.example/blacklist-service:v1",
            "replicas": 2,
            "service": {"type": "NodePort", "port": 8080},
            "database": {
                "image": "postgres:16",
                "storage": {"size": "1Gi", "storageClassName": "standard"},
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
            },
            "banPrefixLengths": {"ipv4": 32, "ipv6": 64},
            "banDuration": "24h",
            "allowlist": [f"10.{index}.0.0/16" for index in range(8)],
        },
        "status": {
            "observedGeneration": 1,
            "replicas": 2,
            "readyReplicas": 2,
            "nodePort": 32224,
            "bannedCount": 1234,
            "image": {"service": "registry.example/blacklist-service:v1", "database": "pg:16"},
            "conditions": [
                {
                    "type": kind,
                    "status": "True",
                    "reason": "AsExpected",
                    "message": "x" * 300,
                    "observedGeneration": 1,
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
                for kind in ("Ready", "DatabaseReady", "BanListSynced")
            ],
        },
    }
)


def rss_mb() -> float:
    """This process's resident set, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    """CPU time (user and system) this process used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stripped(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body without ``managedFields``, as ``Instances.update`` keeps it."""
    metadata = body.get("metadata") or {}
    kept = {name: value for name, value in metadata.items() if name != "managedFields"}
    return {**body, "metadata": kept}


# --- the operator side (``--serve MODE``): a subprocess that reports JSON lines ---


def say(**fields: Any) -> None:
    """One report line to the driver, stamped with the time since the process started."""
    print(json.dumps({"at": time.monotonic() - STARTED, **fields}), flush=True)


def serve(mode: str, namespace: str, count: int) -> None:
    """Run kopf over ``namespace`` keeping the bodies as ``mode`` says; answer the driver."""
    import kopf

    bodies: dict[tuple[str, str], dict[str, Any]] = {}
    found: dict[str, Callable[[tuple[str, str]], Mapping[str, Any] | None]] = {}
    # One entry per resource handler call (list.append is atomic: the thread reads its length).
    handled: list[None] = []

    @kopf.on.startup()
    async def configure(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        # The operator's own settings where they touch this path.
        settings.posting.loggers = False
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.execution.executor = ThreadPoolExecutor(4)
        if mode == "index":
            index: kopf.Index[tuple[str, str], dict[str, Any]] = kwargs["bench_bodies"]

            def from_index(key: tuple[str, str]) -> Mapping[str, Any] | None:
                return next(iter(index.get(key, ())), None)

            found["get"] = from_index
            found["count"] = lambda _: {"n": len(index)}
        else:
            found["get"] = bodies.get
            found["count"] = lambda _: {"n": len(bodies)}
        say(event="startup", cpu=cpu_seconds())
        threading.Thread(target=answer, args=(found, handled, count), daemon=True).start()

    if mode == "index":

        @kopf.index("v1", "configmaps", labels={LABEL: "yes"}, id="bench_bodies")
        async def bench_bodies(
            namespace: str | None, name: str | None, body: kopf.Body, **_: Any
        ) -> dict[tuple[str, str], dict[str, Any]]:
            return {(str(namespace), str(name)): stripped(body)}

        @kopf.on.event("v1", "configmaps", labels={LABEL: "yes"})
        async def wake(**_: Any) -> None:
            handled.append(None)

    else:

        @kopf.on.event("v1", "configmaps", labels={LABEL: "yes"})
        async def keep(event: kopf.RawEvent, **_: Any) -> None:
            handled.append(None)
            raw = event.get("object") or {}
            metadata = raw.get("metadata") or {}
            key = (str(metadata.get("namespace")), str(metadata.get("name")))
            if event.get("type") == "DELETED":
                bodies.pop(key, None)
            else:
                bodies[key] = stripped(raw)

    asyncio.run(kopf.operator(standalone=True, namespaces=[namespace], clusterwide=False))


def answer(found: Mapping[str, Callable[[Any], Any]], handled: list[None], count: int) -> None:
    """A worker thread: report the startup, then wait on stdin for the driver's questions."""
    get, total = found["get"], found["count"]
    while count and not handled:
        time.sleep(0.0005)
    say(event="first_handler")
    while total(None)["n"] < count:
        time.sleep(0.0005)
    say(event="all_seen")
    while len(handled) < count:
        time.sleep(0.0005)
    say(event="all_handled", cpu=cpu_seconds())
    for line in sys.stdin:
        question = json.loads(line)
        if question["ask"] == "rss":
            say(event="rss", rss=rss_mb(), cpu=cpu_seconds(), blocks=sys.getallocatedblocks())
        elif question["ask"] == "wait":
            # Wait until every named object shows the stamp, as a worker thread reads it.
            names, stamp = question["names"], question["stamp"]
            waiting = {(question["namespace"], name) for name in names}
            while waiting:
                waiting = {
                    key
                    for key in waiting
                    if ((get(key) or {}).get("metadata") or {}).get("annotations", {}).get(STAMP)
                    != stamp
                }
                if waiting:
                    time.sleep(0.0005)
            say(event="seen", cpu=cpu_seconds())


# --- the driver ---


def kubectl(*arguments: str, stdin: str | None = None) -> str:
    """Run kubectl against the local cluster."""
    return subprocess.run(
        [str(REPO / ".local" / "bin" / "kubectl"), "--kubeconfig", str(KUBECONFIG), *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def configmap(namespace: str, name: str) -> dict[str, Any]:
    """One ConfigMap shaped like a BlacklistService body."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL: "yes"}},
        "data": {"resource.json": PAYLOAD},
    }


@contextmanager
def namespace_of(count: int) -> Iterator[str]:
    """A new namespace with ``count`` ConfigMaps (each written by two field managers)."""
    namespace = f"index-bench-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    try:
        if count:
            items = [configmap(namespace, f"bls-{index:03d}") for index in range(count)]
            document = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
            kubectl("apply", "--server-side", "--field-manager=bench", "-f", "-", stdin=document)
            kubectl(
                "annotate", "configmaps", "--all", "-n", namespace, f"{STAMP}=0",
                "--field-manager=status-writer",
            )  # fmt: skip
        yield namespace
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false")


class Operator:
    """One ``--serve`` subprocess and its report lines."""

    def __init__(self, mode: str, namespace: str, count: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", mode, "--namespace", namespace,
             "--count", str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "KUBECONFIG": str(KUBECONFIG)},
        )  # fmt: skip
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def expect(self, event: str, timeout: float = 120.0) -> dict[str, Any]:
        """The next report line, which must be ``event``."""
        line = self.lines.get(timeout=timeout)
        if line.get("event") != event:
            raise RuntimeError(f"expected {event}, got {line}")
        return line

    def ask(self, **question: Any) -> None:
        """Send one question line."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(question) + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        """End the subprocess (it started nothing else)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def core_api() -> Any:
    """A client of the local cluster's core API."""
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=str(KUBECONFIG)))


def stamp_all(core: Any, namespace: str, names: list[str], stamp: str) -> None:
    """Annotate every named ConfigMap with ``stamp``, eight requests at a time."""
    patch = {"metadata": {"annotations": {STAMP: stamp}}}

    def one(name: str) -> None:
        core.patch_namespaced_config_map(name, namespace, patch)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, names))


def run_once(core: Any, mode: str, namespace: str, count: int, probes: int) -> dict[str, float]:
    """One operator over ``namespace``: startup, RSS, change latency, a change to everything."""
    operator = Operator(mode, namespace, count)
    # New values in every run: a patch that changes nothing sends no event.
    run = uuid.uuid4().hex[:8]
    figures: dict[str, float] = {}
    try:
        # Imports and kopf's own start come first, the same in both modes: count from its end.
        startup = operator.expect("startup")
        figures["startup_s"] = startup["at"]
        figures["first_handler_s"] = operator.expect("first_handler")["at"] - startup["at"]
        figures["all_seen_s"] = operator.expect("all_seen")["at"] - startup["at"]
        handled = operator.expect("all_handled")
        figures["all_handled_s"] = handled["at"] - startup["at"]
        figures["startup_cpu_s"] = handled["cpu"] - startup["cpu"]
        time.sleep(3.0)
        operator.ask(ask="rss")
        figures["rss_mb"] = operator.expect("rss")["rss"]
        if not count:
            return figures
        latencies = []
        for probe in range(probes):
            name = f"bls-{probe * 7 % count:03d}"
            stamp = f"{run}-{probe}"
            operator.ask(ask="wait", namespace=namespace, names=[name], stamp=stamp)
            sent = time.monotonic()
            stamp_all(core, namespace, [name], stamp)
            operator.expect("seen")
            latencies.append((time.monotonic() - sent) * 1000)
        latencies.sort()
        figures["latency_p50_ms"] = statistics.median(latencies)
        figures["latency_p95_ms"] = latencies[int(0.95 * (len(latencies) - 1))]
        names = [f"bls-{index:03d}" for index in range(count)]
        operator.ask(ask="rss")
        before = operator.expect("rss")["cpu"]
        operator.ask(ask="wait", namespace=namespace, names=names, stamp=run)
        sent = time.monotonic()
        stamp_all(core, namespace, names, run)
        seen = operator.expect("seen")
        figures["everything_s"] = time.monotonic() - sent
        figures["everything_cpu_s"] = seen["cpu"] - before
        return figures
    finally:
        operator.stop()


def measure(count: int, rounds: int, probes: int) -> dict[str, dict[str, list[float]]]:
    """Every figure of every mode, a value per round (modes alternate within a round)."""
    results: dict[str, dict[str, list[float]]] = {mode: {} for mode in MODES}
    core = core_api()
    with namespace_of(count) as full, namespace_of(0) as empty:
        for round_number in range(rounds):
            order = MODES if round_number % 2 == 0 else MODES[::-1]
            for mode in order:
                for name, value in run_once(core, mode, full, count, probes).items():
                    results[mode].setdefault(name, []).append(value)
                baseline = run_once(core, mode, empty, 0, probes)["rss_mb"]
                results[mode].setdefault("rss_empty_mb", []).append(baseline)
                print(f"round {round_number + 1} {mode}: done", file=sys.stderr, flush=True)
    return results


def iteration_errors(seconds: float) -> dict[str, tuple[int, int]]:
    """``list()`` of a kopf index and of ``Instances`` in a thread while another changes it.

    For each: (reads, reads that raised ``RuntimeError``). An index is written here
    through kopf's internal indexer: outside kopf nothing else can write one.
    """
    from kopf._core.engines.indexing import OperatorIndexer

    from blacklist_operator.runtime.state import Instances

    indexer = OperatorIndexer()
    instances = Instances()

    def change_index(number: int) -> None:
        # The indexer's key: (namespace, name, uid).
        added: Any = ("ns", f"n{number}", f"u{number}")
        indexer.replace(added, {("ns", f"n{number}"): number})
        if number >= 50:
            removed: Any = ("ns", f"n{number - 50}", f"u{number - 50}")
            indexer.discard(removed)

    def change_instances(number: int) -> None:
        instances.update({"metadata": {"namespace": "ns", "name": f"n{number}"}})
        if number >= 50:
            instances.remove(("ns", f"n{number - 50}"))

    outcome = {}
    for name, read, change in (
        ("index", indexer.index, change_index),
        ("Instances", instances, change_instances),
    ):
        stop = threading.Event()
        counts = [0, 0]

        def reader(
            target: Any = read, tally: list[int] = counts, done: threading.Event = stop
        ) -> None:
            while not done.is_set():
                tally[0] += 1
                try:
                    list(target)
                except RuntimeError:
                    tally[1] += 1

        thread = threading.Thread(target=reader)
        thread.start()
        end, number = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            change(number)
            number += 1
        stop.set()
        thread.join()
        outcome[name] = (counts[0], counts[1])
    return outcome


def rows(results: Mapping[str, Mapping[str, list[float]]], count: int) -> list[Any]:
    """``index`` figures beside the ``dict`` figures of the same rounds."""
    from report import Row

    section = f"@kopf.index vs on.event dict, {count} objects"
    labels = {
        "startup_s": ("start → startup handler", "s"),
        "first_handler_s": ("startup handler → first resource handler", "s"),
        "all_seen_s": ("startup handler → a thread sees every object", "s"),
        "all_handled_s": ("startup handler → a handler ran for every object", "s"),
        "startup_cpu_s": ("operator CPU until then", "s"),
        "rss_mb": ("RSS settled", "MB"),
        "rss_empty_mb": ("RSS, empty namespace", "MB"),
        "latency_p50_ms": ("patch → seen by a thread, p50", "ms"),
        "latency_p95_ms": ("patch → seen by a thread, p95", "ms"),
        "everything_s": ("every object patched → all seen", "s"),
        "everything_cpu_s": ("operator CPU for that", "s"),
    }
    made = []
    for key, (metric, unit) in labels.items():
        values = results["index"].get(key, [])
        bases = results["dict"].get(key, [])
        if not values or not bases:
            continue
        spread = f"{min(values):.3g}-{max(values):.3g}" if len(values) > 1 else ""
        made.append(
            Row(section, metric, statistics.median(values), unit, "on.event dict",
                statistics.median(bases), spread=spread)
        )  # fmt: skip
    return made


def main() -> None:
    """Measure, print the table, add the rows to ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=255, help="objects watched")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode")
    parser.add_argument("--probes", type=int, default=30, help="single patches timed per run")
    parser.add_argument(
        "--iterate-seconds", type=float, default=10.0, help="of list() from a thread, each"
    )
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    if arguments.serve:
        serve(arguments.serve, arguments.namespace, arguments.count)
        return
    from report import append_json, print_table

    results = measure(arguments.count, arguments.rounds, arguments.probes)
    print(json.dumps(results), file=sys.stderr)
    made = rows(results, arguments.count)
    errors = iteration_errors(arguments.iterate_seconds)
    print(f"list() from a thread during changes (reads, RuntimeErrors): {errors}", flush=True)
    print_table(made)
    append_json(arguments.json, made)


if __name__ == "__main__":
    main()
