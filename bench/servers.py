"""Start and stop the servers the service benchmark compares, each as its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from blacklist_devtools.http import get
from blacklist_devtools.net import free_port
from blacklist_devtools.processes import stop_process

BENCH_DIR = Path(__file__).resolve().parent
# The service's settings that must not leak in from the caller's shell.
CLEARED = (
    "DATABASE_URL", "MAIL_SERVER", "BANLIST_CONFIGMAP", "STATE_DIR", "PORT", "SERVER",
    "WORKER_THREADS", "ACCESS_LOG", "METRICS_PORT", "LOG_FORMAT",
)  # fmt: skip


def _environment(port: int, state_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in CLEARED}
    env.update({"PORT": str(port), "BIND_ADDRESS": "127.0.0.1", "STATE_DIR": str(state_dir)})
    # A port of its own, not the default 9090: another service on this machine may hold it.
    env["METRICS_PORT"] = str(free_port())
    env.update(extra)
    return env


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if get(f"{url}/healthz", timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


@contextmanager
def serving(kind: str, state_dir: Path | None = None, **extra: str) -> Iterator[str]:
    """Run one server (``dev``, ``production`` or ``bare``); yield its base URL.

    ``extra`` is added to the server's environment: ``SERVER=gunicorn`` picks
    the production server (default granian) for ``production`` and ``bare``.
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-service-") as scratch:
        state = state_dir or Path(scratch)
        env = _environment(port, state, extra)
        if kind == "dev":
            # The original deployment's way: app.run(), Flask's threaded development server.
            argv = [
                sys.executable, "-m", "flask", "--app", "blacklist_service:create_app",
                "run", "--host", "127.0.0.1", "--port", str(port), "--no-reload",
            ]  # fmt: skip
        elif kind == "production":
            argv = [sys.executable, "-m", "blacklist_service"]
        elif kind == "bare":
            argv = [sys.executable, str(BENCH_DIR / "bare_wsgi.py")]
        else:
            raise ValueError(kind)
        log = (Path(scratch) / "server.log").open("wb")
        process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process)
            yield url
        finally:
            stop_process(process, 30)
            log.close()
