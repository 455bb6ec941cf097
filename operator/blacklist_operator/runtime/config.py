"""The operator's own settings (command-line flags) and the database address map.

The address map (``--database-address-map``, docs/CONTRACTS.md) tells an
operator running outside the cluster where each instance's PostgreSQL is
reachable, since cluster DNS does not resolve there. It is re-read whenever
the file changes, so tests and developers can add entries while it runs.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from blacklist_operator.model.external import HostRule
from blacklist_operator.model.resource import DEFAULT_DATABASE_IMAGE, ImageDefaults

ADDRESS_MAP_ENV = "BLACKLIST_OPERATOR_DATABASE_ADDRESS_MAP"
MAX_BANS_ENV = "BLACKLIST_OPERATOR_MAX_BANS"
# Entries a resource's ban list holds at most (SPEC: at least 5,000,000 with default resources).
DEFAULT_MAX_BANS = 5_000_000
DEFAULT_SERVICE_IMAGE_ENV = "BLACKLIST_OPERATOR_DEFAULT_SERVICE_IMAGE"
DEFAULT_DATABASE_IMAGE_ENV = "BLACKLIST_OPERATOR_DEFAULT_DATABASE_IMAGE"


@dataclass(frozen=True)
class OperatorConfig:
    """Settings chosen at startup."""

    namespaces: tuple[str, ...] = ()
    # Where the operator's own pods run; None outside the cluster.
    operator_namespace: str | None = None
    database_address_map: Path | None = None
    peering: str | None = None
    liveness: str | None = None
    ban_poll_interval: float = 5.0
    ban_rescan_interval: float = 600.0
    workers: int = 16
    # Entries per resource's ban list; past it the oldest bans are evicted (--max-bans).
    max_bans: int = DEFAULT_MAX_BANS
    # Directories under which spec.database.storage.hostPath may lie; empty: none.
    allowed_host_path_prefixes: tuple[str, ...] = ()
    # The image of the init container that hands a hostPath directory to PostgreSQL's uid
    # (as root): the admin's, never the tenant's spec.database.image.
    host_path_init_image: str = DEFAULT_DATABASE_IMAGE
    # Networks and DNS suffixes an external database may be on; empty: any host.
    allowed_external_database_hosts: tuple[HostRule, ...] = ()
    # The images of a resource whose spec names none (--default-service-image, ...).
    images: ImageDefaults = field(default_factory=ImageDefaults)


@dataclass
class AddressMap:
    """``{"namespace/name": "host:port"}`` from a JSON file, re-read when it changes."""

    path: Path | None
    _entries: dict[str, tuple[str, int]] = field(default_factory=dict)
    _mtime: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def lookup(
        self, namespace: str, name: str, default_host: str, default_port: int
    ) -> tuple[str, int]:
        """Where to reach the database of ``namespace/name``."""
        with self._lock:
            self._reload()
            return self._entries.get(f"{namespace}/{name}", (default_host, default_port))

    def entries(self) -> dict[str, tuple[str, int]]:
        """Every entry, ``"namespace/name"`` → (host, port), as the file holds them now."""
        with self._lock:
            self._reload()
            return dict(self._entries)

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._entries, self._mtime = {}, None
            return
        if mtime == self._mtime:
            return
        raw = json.loads(self.path.read_text() or "{}")
        entries = {}
        for key, address in raw.items():
            host, _, port = str(address).rpartition(":")
            entries[str(key)] = (host.strip("[]"), int(port))
        self._entries, self._mtime = entries, mtime


def address_map_path(flag: str | None) -> Path | None:
    """The address map file from the flag, else from the environment, else none."""
    value = flag or os.environ.get(ADDRESS_MAP_ENV)
    return Path(value) if value else None
