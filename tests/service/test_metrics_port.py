"""``/metrics`` on ``METRICS_PORT`` only, summed over every worker, under both servers.

The public ``PORT`` (what the NodePort Service exposes) answers ``/metrics``
with the 404 of any unknown path; the probes stay on ``PORT``; a
``METRICS_PORT`` the service cannot use stops it at start with a message
naming the setting.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_devtools.net import free_port
from tests.service.processes import ServiceFactory, ServiceProcess

pytestmark = pytest.mark.slow

SQUARES = 40


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_metrics_are_served_on_their_own_port_for_every_worker(
    service_factory: ServiceFactory, server: str
) -> None:
    service = service_factory(
        SERVER=server, WEB_CONCURRENCY="2", BLACKLIST_VERSION="9.8.7", BLACKLIST_REVISION="abc123"
    )
    public = get(f"{service.url}/metrics")
    unknown = get(f"{service.url}/no-such-page")
    assert public.status == 404
    assert (public.body, public.headers["content-type"]) == (
        unknown.body,
        unknown.headers["content-type"],
    )
    assert "blacklist_" not in public.body
    assert get(f"{service.url}/healthz").status == 200
    assert wait_until(lambda: get(f"{service.url}/readyz").status == 200, timeout=15)

    # Many concurrent requests, spread over the workers by the server.
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: get(f"{service.url}/?n=3").body, range(SQUARES)))
    assert bodies == ["9.0"] * SQUARES
    # Whichever worker answers a scrape, it counts what every worker served.
    expected = f'blacklist_http_requests_total{{route="/",status="200"}} {SQUARES}.0'
    for _ in range(10):
        scrape = get(service.metrics_url)
        assert scrape.status == 200
        assert scrape.headers["content-type"].startswith("text/plain; version=")
        assert expected in scrape.body
        assert "blacklist_banned_addresses 0.0" in scrape.body
        # A released image says which release it is, from its environment.
        assert 'blacklist_build_info{revision="abc123",version="9.8.7"} 1.0' in scrape.body
    # The 404 above is counted as an unknown path on PORT; scrapes are not counted at all.
    assert 'blacklist_http_requests_total{route="other",status="404"} 2.0' in scrape.body
    assert get(service.metrics_url.replace("/metrics", "/other")).status == 404


def _start_failure(service: ServiceProcess) -> str:
    """Run ``service`` expecting it to exit at start; its output."""
    finished = subprocess.run(
        [sys.executable, "-m", "blacklist_service"],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode != 0, finished.stdout + finished.stderr
    return finished.stdout + finished.stderr


@pytest.mark.parametrize("value", ["metrics", "0", "65536", "-1", "same as PORT"])
def test_a_bad_metrics_port_stops_the_service_at_start(
    service_factory: ServiceFactory, value: str
) -> None:
    service = service_factory.unstarted()
    service.env["METRICS_PORT"] = str(service.port) if value == "same as PORT" else value
    output = _start_failure(service)
    assert "bad configuration" in output
    assert "METRICS_PORT" in output


def test_a_metrics_port_in_use_stops_the_service_at_start(service_factory: ServiceFactory) -> None:
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        service = service_factory.unstarted(METRICS_PORT=str(port))
        output = _start_failure(service)
    assert f"METRICS_PORT {port}" in output
    assert "in use" in output
