"""Service replicas as real processes (``python -m blacklist_service``) for the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from blacklist_devtools.http import get
from blacklist_devtools.net import free_port
from blacklist_devtools.processes import stop_process
from blacklist_service.config import ENVIRONMENT_KEYS

# Settings a developer's shell might hold; each test says what it wants instead.
SERVICE_VARIABLES = (*ENVIRONMENT_KEYS, "PROMETHEUS_MULTIPROC_DIR")


class ServiceProcess:
    """One service replica: the production server as a process, restartable with its state."""

    def __init__(self, directory: Path, environment: dict[str, str]) -> None:
        self.directory = directory
        self.state_dir = directory / "state"
        self.log_path = directory / "service.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Never the default 9090: replicas of parallel tests would collide on it.
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.env = {key: value for key, value in os.environ.items() if key not in SERVICE_VARIABLES}
        self.env.update(
            {
                "PORT": str(self.port),
                "METRICS_PORT": str(self.metrics_port),
                "BIND_ADDRESS": "127.0.0.1",
                "STATE_DIR": str(self.state_dir),
                "WEB_CONCURRENCY": "2",
            }
        )
        self.env.update(environment)
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the server's process and return at once, before it serves."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "blacklist_service"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.process

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers ``/healthz``."""
        self.process = self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited at start:\n{self.log()}")
            try:
                if get(f"{self.url}/healthz", timeout=1).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"service did not answer in {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM the server (a graceful stop) and return its exit status."""
        process = self.process
        if process is None:
            return None
        status = stop_process(process, timeout)
        self.process = None
        return status

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ServiceFactory:
    """Makes service processes for one test and stops them all at its end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.made: list[ServiceProcess] = []

    def __call__(self, **environment: str) -> ServiceProcess:
        """A new, started replica with its own port and state, configured by ``environment``."""
        service = self.unstarted(**environment)
        service.start()
        return service

    def unstarted(self, **environment: str) -> ServiceProcess:
        """A new replica not started yet, so a test can prepare its state directory first."""
        directory = self.base / f"replica-{len(self.made)}"
        directory.mkdir(parents=True)
        service = ServiceProcess(directory, environment)
        self.made.append(service)
        return service

    def stop_all(self) -> None:
        """Stop every replica still running."""
        for service in self.made:
            service.stop()
