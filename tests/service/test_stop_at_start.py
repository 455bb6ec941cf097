"""SIGTERM while the server starts: it exits at once, each worker stopping its background work.

A worker used to miss a SIGTERM that came before its server's handler was in
place (granian: while the worker built its app; gunicorn: just after the
fork) and was killed after the 25 s kill timeout (``serving/early_stop.py``).
"""

from __future__ import annotations

import subprocess
import time
from functools import partial
from pathlib import Path

import pytest

from blacklist_devtools.kube import wait_until
from blacklist_service.serving.server import STOPPED_MESSAGE
from tests.service.processes import ServiceFactory

pytestmark = pytest.mark.slow

WORKERS = 2
# Seconds from the moment both workers exist to the SIGTERM: building the app takes a
# worker about half a second, so these fall inside it, and the last one near its end.
OFFSETS = (0.0, 0.1, 0.25, 0.4)
STOP_BOUND = 5.0  # seconds; a worker that misses the signal takes 25


def workers_exist(process: subprocess.Popen[bytes]) -> bool:
    """Whether the server ``process`` forked all its workers (read from ``/proc``)."""
    listing = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    try:
        return len(listing.read_text().split()) == WORKERS
    except OSError:
        return False


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_sigterm_while_the_workers_start_stops_the_server_at_once(
    service_factory: ServiceFactory, server: str
) -> None:
    service = service_factory.unstarted(SERVER=server, WEB_CONCURRENCY=str(WORKERS))
    for offset in OFFSETS:
        logged_before = len(service.log())
        process = service.launch()
        assert wait_until(partial(workers_exist, process), timeout=30, interval=0.01)
        time.sleep(offset)
        started = time.monotonic()
        status = service.stop(timeout=STOP_BOUND)  # SIGTERM; SIGKILL after the bound
        stopped_in = time.monotonic() - started
        log = service.log()[logged_before:]
        assert stopped_in < STOP_BOUND, f"stopped in {stopped_in:.1f} s at offset {offset}:\n{log}"
        assert status == 0, log
        assert f"[{process.pid}] blacklist_service.serving.server: {STOPPED_MESSAGE}" in log
        # Not checked: granian's "Killing worker-N after it refused to gracefully stop". It
        # also comes, at once, when a worker it joined has closed its files but is still
        # tearing down its threads (granian gives that 1 ms); that worker is already done.
        # Every worker that built its app stopped its background work.
        assert log.count(" stopped its background work") == log.count(" serves"), log
        if server == "granian" and offset == 0.0:
            # The signal did come while the workers were building their apps.
            assert "came while it started" in log, log
