"""Leader election on a ``coordination.k8s.io/v1`` Lease: one replica serves, the others wait hot.

``__main__`` hands :func:`run` the function that runs kopf. Without
``--leader-election`` it is called at once, as before. With it, this process
first waits as a standby: everything is imported, kopf configured, the metrics
served, its own API client connected and its liveness endpoint answered (by a
small server of ours, so the kubelet neither restarts nor unreadies a standby),
and it watches the Lease (reading it again at every change, and at least every
retry period). It takes the Lease over when the
holder released it or left it unrenewed for the lease duration (``lease``
decides), and only then starts kopf. A thread renews the Lease every retry
period; the fence (``fence``) ends the process at the first sign the Lease may
be someone else's. On a clean stop (SIGTERM) it releases the Lease once kopf has
finished, so a standby takes over within a retry period instead of a lease
duration.

The Lease is written with its resource version (a guarded ``PUT``), so two
replicas that both find it expired cannot both take it: the second gets a
conflict and reads it again.
"""

from __future__ import annotations

import argparse
import http.server
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from blacklist_operator import metrics
from blacklist_operator.controller.lease import (
    LEASE_API_VERSION,
    Action,
    ElectionTiming,
    Observation,
    acquired,
    decide,
    fence_deadline,
    lease_manifest,
    observe,
    parse_lease,
    released,
    renewed,
)
from blacklist_operator.kube.api import KubernetesApi, load_client
from blacklist_operator.kube.fence import FENCE, lost, watch_for_thaw

DEFAULT_LEASE_NAME = "blacklist-operator"
# The API server ends each watch of the Lease after this long; the standby starts another.
WATCH_SECONDS = 60

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaderElection:
    """The election's settings, from the flags."""

    enabled: bool = False
    namespace: str = ""
    lease_name: str = DEFAULT_LEASE_NAME
    identity: str = ""
    timing: ElectionTiming = field(default_factory=ElectionTiming)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--leader-election*`` flags (docs/configuration.md, "The operator")."""
    defaults = ElectionTiming()
    parser.add_argument(
        "--leader-election",
        action="store_true",
        help="run as one of several replicas: serve only while holding the leader Lease, "
        "wait as a hot standby otherwise (default: off, this process serves at once)",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=None,
        metavar="NAMESPACE",
        help="namespace of the Lease (default: --operator-namespace, i.e. env POD_NAMESPACE)",
    )
    parser.add_argument(
        "--leader-election-lease-name",
        default=DEFAULT_LEASE_NAME,
        metavar="NAME",
        help=f"name of the Lease (default {DEFAULT_LEASE_NAME})",
    )
    parser.add_argument(
        "--leader-election-identity",
        default=None,
        metavar="ID",
        help="this replica's name in the Lease, unique among the replicas (default: env "
        "POD_NAME, else HOSTNAME-PID)",
    )
    parser.add_argument(
        "--leader-election-lease-duration",
        type=int,
        default=defaults.lease_duration,
        metavar="SECONDS",
        help="a standby takes over a Lease left unrenewed this long: the takeover time after "
        f"a leader dies (default {defaults.lease_duration})",
    )
    parser.add_argument(
        "--leader-election-renew-deadline",
        type=float,
        default=defaults.renew_deadline,
        metavar="SECONDS",
        help="a leader that could not renew for this long exits before anyone may take over; "
        f"shorter than the lease duration (default {defaults.renew_deadline:g})",
    )
    parser.add_argument(
        "--leader-election-retry-period",
        type=float,
        default=defaults.retry_period,
        metavar="SECONDS",
        help="how often the leader renews and a standby reads the Lease "
        f"(default {defaults.retry_period:g})",
    )


def settings(arguments: argparse.Namespace) -> LeaderElection:
    """The election's settings from parsed flags; ``SystemExit`` when they do not hold together."""
    if not arguments.leader_election:
        return LeaderElection()
    timing = ElectionTiming(
        lease_duration=arguments.leader_election_lease_duration,
        renew_deadline=arguments.leader_election_renew_deadline,
        retry_period=arguments.leader_election_retry_period,
    )
    problems = timing.problems()
    if problems:
        raise SystemExit(f"--leader-election: {'; '.join(problems)}")
    namespace = arguments.leader_election_namespace or arguments.operator_namespace
    if not namespace:
        raise SystemExit(
            "--leader-election needs --leader-election-namespace (or --operator-namespace, "
            "env POD_NAMESPACE) outside the cluster"
        )
    identity = (
        arguments.leader_election_identity
        or os.environ.get("POD_NAME")
        or f"{socket.gethostname()}-{os.getpid()}"
    )
    return LeaderElection(True, namespace, arguments.leader_election_lease_name, identity, timing)


def run(election: LeaderElection, liveness: str | None, serve: Callable[[], None]) -> None:
    """Call ``serve`` (kopf) once this process leads: at once without election."""
    if not election.enabled:
        metrics.leading(True)
        serve()
        return
    FENCE.standby()
    metrics.leading(False)
    timing = election.timing
    # Its own connections, so a renewal never queues behind reconciles; and short
    # timeouts, so a hung request cannot outlast the renew deadline by much.
    api = KubernetesApi(
        load_client(pool_size=2),
        fenced=False,
        timeout=(max(1.0, timing.retry_period), timing.renew_deadline / 2),
    )
    elector = Elector(api, election)
    # In its container the operator is PID 1, for which the kernel drops a signal that has
    # no handler: without this a standby would ignore SIGTERM and hold its pod's deletion
    # for the whole grace period. kopf installs its own handlers once this process leads.
    default_handler = signal.signal(signal.SIGTERM, _stop_waiting)
    with standby_health(liveness):
        elector.acquire()
    signal.signal(signal.SIGTERM, default_handler)
    watch_for_thaw()
    metrics.leading(True)
    try:
        serve()
    finally:
        elector.release()


def _stop_waiting(signum: int, frame: object) -> None:
    """SIGTERM while a standby: nothing to hand over, so stop at once (exit status 0)."""
    logger.info("Stopped while waiting as a standby (SIGTERM)")
    raise SystemExit(0)


class Elector:
    """Takes the Lease, keeps it renewed from a thread, and gives it up."""

    def __init__(self, api: KubernetesApi, election: LeaderElection) -> None:
        self._api = api
        self._election = election
        self._observation: Observation | None = None
        self._body: dict[str, Any] | None = None  # the Lease as we last wrote or read it
        self._stopped = threading.Event()
        self._renewer: threading.Thread | None = None
        # Set by the standby's watch of the Lease at every change: a renewal is seen in
        # milliseconds, not up to a retry period later, so the expiry counts from the
        # renewal itself and a dead leader is replaced a lease duration after it stopped.
        self._lease_changed = threading.Event()
        self._leading = threading.Event()
        self._logged = ""

    @property
    def _where(self) -> str:
        return f"{self._election.namespace}/{self._election.lease_name}"

    @property
    def _holder(self) -> str:
        record = self._observation.record if self._observation else None
        return record.holder if record else "nobody"

    def acquire(self) -> None:
        """Block until this process holds the Lease; then arm the fence and start renewing."""
        election, timing = self._election, self._election.timing
        waiting_since = time.monotonic()
        threading.Thread(target=self._watch, name="leader-watch", daemon=True).start()
        while True:
            started = time.monotonic()
            try:
                action, wait_seconds = self._look(leading=False)
                if action in (Action.CREATE, Action.ACQUIRE) and self._take(action):
                    break
                if action is Action.WAIT:
                    self._log_once(
                        f"Waiting as a standby for lease {self._where}, held by {self._holder}"
                    )
            except Exception as error:
                # Refused (ApiError) or unreachable (the client's connection errors): a
                # standby keeps waiting rather than crash-looping while the API server is away.
                wait_seconds = timing.retry_period
                self._log_once(f"Cannot read or write lease {self._where}: {error}")
            self._lease_changed.wait(wait_seconds)
            self._lease_changed.clear()
        self._leading.set()
        FENCE.lead(fence_deadline(started, timing))
        logger.info(
            f"Became the leader as {election.identity}: lease {self._where} taken after "
            f"{time.monotonic() - waiting_since:.1f} s; serving"
        )
        self._renewer = threading.Thread(target=self._renew, name="leader-renew", daemon=True)
        self._renewer.start()

    def _watch(self) -> None:
        """Wake the standby's loop at every change of the Lease, until this replica leads."""
        election = self._election
        while not self._leading.is_set():
            try:
                for _ in self._api.watch_object(
                    LEASE_API_VERSION,
                    "Lease",
                    election.namespace,
                    election.lease_name,
                    WATCH_SECONDS,
                ):
                    self._lease_changed.set()
                    if self._leading.is_set():
                        return
            except Exception as error:
                # The watch only makes the loop prompt: the loop reads the Lease itself at
                # least every retry period, so a broken watch costs time, never safety.
                logger.debug(f"The watch of lease {self._where} ended: {error!r}")
                self._leading.wait(election.timing.retry_period)

    def release(self) -> None:
        """Stop renewing and give the Lease up, so a standby takes it at its next look."""
        self._stopped.set()
        if self._renewer is not None:
            self._renewer.join(timeout=self._election.timing.renew_deadline)
        FENCE.close()
        metrics.leading(False)
        body = self._body
        if body is None or parse_lease(body).holder != self._election.identity:
            return
        try:
            if self._api.replace(released(body, datetime.now(UTC))) is not None:
                logger.info(f"Released lease {self._where}")
        except Exception as error:
            # The standby then takes over a lease duration later: slower, never unsafe.
            logger.warning(f"Could not release lease {self._where}: {error}")

    def _look(self, leading: bool) -> tuple[Action, float]:
        """Read the Lease and decide."""
        election = self._election
        body = self._api.get(LEASE_API_VERSION, "Lease", election.namespace, election.lease_name)
        now = time.monotonic()
        self._body = body
        self._observation = observe(
            self._observation, parse_lease(body) if body is not None else None, now
        )
        decision = decide(self._observation, election.identity, leading, now, election.timing)
        return decision.action, decision.wait_seconds

    def _take(self, action: Action) -> bool:
        """Create or take over the Lease; False when another replica wrote it first."""
        election = self._election
        moment = datetime.now(UTC)
        if action is Action.CREATE:
            manifest = lease_manifest(
                election.namespace,
                election.lease_name,
                election.identity,
                election.timing,
                moment,
            )
            written = self._api.create(manifest)
        else:
            assert self._body is not None
            written = self._api.replace(
                acquired(self._body, election.identity, election.timing, moment)
            )
        if written is None:
            return False
        self._body = written
        return True

    def _renew(self) -> None:
        """Every retry period, move the Lease's renew time, and the fence's deadline, forward."""
        timing = self._election.timing
        while not self._stopped.wait(timing.retry_period):
            started = time.monotonic()
            try:
                if self._renew_once():
                    FENCE.extend(fence_deadline(started, timing))
            except Exception as error:
                # Whatever failed, the thread tries again; the fence's watchdog ends the
                # process if no renewal succeeds before the deadline.
                logger.warning(f"Could not renew lease {self._where}: {error}")

    def _renew_once(self) -> bool:
        """One renewal: write from the Lease we hold; read it again only after a conflict."""
        if self._body is not None:
            written = self._api.replace(renewed(self._body, datetime.now(UTC)))
            if written is not None:
                self._body = written
                return True
        action, _ = self._look(leading=True)
        if action is Action.STEP_DOWN:
            lost(f"lease {self._where} is now held by {self._holder}")
        if action is Action.CREATE:
            # Someone deleted the Lease: nobody else holds it, so create it again as ours.
            return self._take(Action.CREATE)
        return False  # ours, but changed meanwhile: the next round writes from what was read

    def _log_once(self, message: str) -> None:
        if message != self._logged:
            logger.info(message)
            self._logged = message


@contextmanager
def standby_health(liveness: str | None) -> Iterator[None]:
    """Answer the liveness endpoint while waiting; free its port for kopf's own afterwards."""
    if not liveness:
        yield
        return
    address = urlsplit(liveness)
    path = address.path or "/"

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path.split("?", 1)[0] == path
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"standby\n" if found else b"not found\n")

        def log_message(self, format: str, *arguments: Any) -> None:
            """Probes every few seconds would fill the log."""

    server = http.server.ThreadingHTTPServer(
        (address.hostname or "0.0.0.0", address.port or 80),  # noqa: S104
        Health,
    )
    thread = threading.Thread(target=server.serve_forever, name="standby-health", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
