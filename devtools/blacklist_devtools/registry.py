"""The test bed's OCI registry: where ``make images`` pushes and the node's containerd pulls.

``python -m blacklist_devtools.registry up|down|status|address`` runs the CNCF
distribution registry (``registry``, built from Go modules by
``hack/toolchain.sh``), the registry most clusters pull from, with its
filesystem store under the cache directory, so pushed layers and manifests
outlive the cluster and a push after ``make cluster-down`` uploads nothing
twice. It listens on loopback only (``localhost:5050``, or
``BLACKLIST_REGISTRY_PORT``): the node's containerd runs on this machine and
reaches it there; nothing outside the machine does. The process is recorded
by PID in ``.local/registry/state.json``; ``up`` is idempotent and ``down``
stops exactly that process.

Images are named ``localhost:5050/REPOSITORY:TAG`` and referred to by digest
(``hack/images.sh`` writes both into ``.local/images/images.json``), so a pod
runs exactly the image ``make images`` last built, whatever the node cached.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from blacklist_devtools import processes
from blacklist_devtools.net import port_is_open
from blacklist_devtools.processes import ProcessRecord

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_DIR = Path(os.environ.get("BLACKLIST_LOCAL_DIR", REPO_ROOT / ".local"))
BIN_DIR = Path(os.environ.get("BLACKLIST_BIN_DIR", REPO_ROOT / ".local" / "bin"))
STATE_DIR = LOCAL_DIR / "registry"
STATE_FILE = STATE_DIR / "state.json"
STORE = Path(
    os.environ.get(
        "BLACKLIST_REGISTRY_STORE",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "blacklist-operator"
        / "registry",
    )
)
HOST = "localhost"
PORT = int(os.environ.get("BLACKLIST_REGISTRY_PORT", "5050"))
READY_TIMEOUT = 30.0


def address() -> str:
    """``host:port`` of the registry, as image references and containerd name it."""
    return f"{HOST}:{PORT}"


def config(store: Path, port: int) -> str:
    """The registry's configuration (YAML; JSON is YAML): filesystem store, loopback only."""
    return json.dumps(
        {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(store)},
                # `make images` re-tags; old manifests may be deleted by hand (garbage-collect).
                "delete": {"enabled": True},
            },
            "http": {"addr": f"127.0.0.1:{port}", "secret": "local-test-bed"},
            "health": {"storagedriver": {"enabled": False}},
        },
        indent=2,
    )


def log(message: str) -> None:
    """One line on stderr, prefixed like the other test-bed tools."""
    print(f"[registry] {message}", file=sys.stderr, flush=True)


def answers(port: int = PORT, timeout: float = 2.0) -> bool:
    """Whether a registry answers the OCI distribution API's base endpoint on ``port``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=timeout) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def load() -> ProcessRecord | None:
    """The recorded registry process, if any."""
    try:
        return ProcessRecord(**{**json.loads(STATE_FILE.read_text()), "argv": ()})
    except (OSError, ValueError, TypeError):
        return None


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def up() -> str:
    """Start the registry unless ours runs; return its address."""
    with _exclusive():
        record = load()
        if record is not None and record.alive() and answers():
            return address()
        if record is not None:
            processes.stop(record)
        if port_is_open("127.0.0.1", PORT):
            raise SystemExit(
                f"port {PORT} is taken by another program: stop it, or choose another port "
                "with BLACKLIST_REGISTRY_PORT"
            )
        binary = BIN_DIR / "registry"
        if not binary.exists():
            raise SystemExit(f"{binary} is missing: run `make setup`")
        STORE.mkdir(parents=True, exist_ok=True)
        config_file = STATE_DIR / "config.yml"
        config_file.write_text(config(STORE, PORT))
        record = processes.spawn(
            "registry",
            [str(binary), "serve", str(config_file)],
            STATE_DIR / "registry.log",
            # No OpenTelemetry collector here: without this it reports every export it failed.
            env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
        )
        STATE_FILE.write_text(json.dumps({**asdict(record), "argv": []}))
        deadline = time.monotonic() + READY_TIMEOUT
        while not answers():
            if not record.alive():
                raise SystemExit(f"the registry exited; see {STATE_DIR / 'registry.log'}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the registry did not answer in {READY_TIMEOUT:.0f} s")
            time.sleep(0.1)
        log(f"serving at {address()} (store: {STORE})")
        return address()


def down() -> None:
    """Stop the recorded registry process; its store stays (a cache of pushed images)."""
    with _exclusive():
        record = load()
        if record is not None:
            processes.stop(record)
            log("stopped")
        STATE_FILE.unlink(missing_ok=True)


def manifest_digest(repository: str, tag: str) -> str | None:
    """The digest the registry serves for ``repository:tag``, or None when it has none."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={
            "Accept": ", ".join(
                (
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                )
            )
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            digest = response.headers.get("Docker-Content-Digest")
            return str(digest) if digest else None
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def delete_manifest(repository: str, digest: str) -> bool:
    """Delete the manifest ``digest`` (and every tag on it); whether the registry had it.

    Its blobs stay until a garbage collection; the tests remove what they published.
    """
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/v2/{repository}/manifests/{digest}", method="DELETE"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status) == 202
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise


def main(argv: list[str] | None = None) -> int:
    """Command line: ``up``, ``down``, ``status`` or ``address``."""
    parser = argparse.ArgumentParser(prog="python -m blacklist_devtools.registry")
    parser.add_argument("command", choices=["up", "down", "status", "address"])
    arguments = parser.parse_args(argv)
    if arguments.command == "up":
        print(up())
    elif arguments.command == "down":
        down()
    elif arguments.command == "address":
        print(address())
    else:
        record = load()
        running = record is not None and record.alive() and answers()
        print(f"registry {address()} {'running' if running else 'STOPPED'} (store: {STORE})")
        return 0 if running else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
