"""Follows the operator's ban-list ConfigMaps through the Kubernetes API (watch).

The operator writes the ban list of ``BlacklistService`` N into ``N-banlist``
and, when it outgrows one ConfigMap, ``N-banlist-1`` … ``N-banlist-15``
(docs/CONTRACTS.md). A volume mount would refresh only after a minute or more;
a watch delivers each change within milliseconds. One thread per shard lists
its ConfigMap (a ``metadata.name`` field selector, which the Role's
``resourceNames`` allows), then watches from that list's resourceVersion, and
lists again when the watch ends or its version has expired. Each new or
changed ban goes into the replica's :class:`BanStore`, which every server
worker reads before its next request; what a line may change (a lifted
address, an expiry) is :mod:`blacklist_service.banlines`' to say.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from blacklist_service.banlines import bans_to_write, parse_shard
from blacklist_service.banlog import log_added
from blacklist_service.banstore import BanStore
from blacklist_service.config import Settings

logger = logging.getLogger(__name__)
# The ban list spans at most this many ConfigMaps (docs/CONTRACTS.md, "Ban list ConfigMaps"; the
# operator defines the same limit as builders.naming.MAX_BANLIST_SHARDS).
MAX_SHARDS = 16
WATCH_SECONDS = 240  # the server ends a watch after this; we list and watch again
CONNECT_TIMEOUT = 5.0
RETRY_INITIAL = 0.5
RETRY_MAXIMUM = 15.0


class ApiError(RuntimeError):
    """The API server refused or failed a request."""


def shard_name(base: str, index: int) -> str:
    """Name of shard ``index`` of the ban list whose shard 0 is ``base``."""
    return base if index == 0 else f"{base}-{index}"


class KubernetesApi:
    """Minimal client of the API server with the pod's ServiceAccount token."""

    def __init__(self, settings: Settings) -> None:
        if settings.kubernetes_host is None:
            raise ApiError("KUBERNETES_SERVICE_HOST is not set: cannot watch the ban list")
        host = settings.kubernetes_host
        if ":" in host:
            host = f"[{host}]"
        self.base_url = f"https://{host}:{settings.kubernetes_port}"
        self.account_dir = settings.service_account_dir
        self.namespace = settings.namespace

    def _session(self) -> requests.Session:
        session = requests.Session()
        # The API server is reached directly with the pod's CA; proxy and CA-bundle
        # variables of the environment (REQUESTS_CA_BUNDLE overrides session.verify)
        # must not apply.
        session.trust_env = False
        # Read at each (re)connect: projected tokens are rotated by the kubelet.
        token = (self.account_dir / "token").read_text().strip()
        session.headers["Authorization"] = f"Bearer {token}"
        ca_file = self.account_dir / "ca.crt"
        session.verify = str(ca_file) if ca_file.exists() else True
        return session

    def config_maps_url(self) -> str:
        """Collection URL of the namespace's ConfigMaps."""
        return f"{self.base_url}/api/v1/namespaces/{self.namespace}/configmaps"

    def list_one(self, name: str) -> tuple[dict[str, Any] | None, str]:
        """The ConfigMap ``name`` (or None) and the list's resourceVersion."""
        with self._session() as session:
            response = session.get(
                self.config_maps_url(),
                params={"fieldSelector": f"metadata.name={name}"},
                timeout=(CONNECT_TIMEOUT, 30),
            )
        if response.status_code != 200:
            raise ApiError(f"listing ConfigMap {name}: HTTP {response.status_code} {response.text}")
        body = response.json()
        items = body.get("items") or []
        return (items[0] if items else None), str(body["metadata"]["resourceVersion"])

    def watch_one(self, name: str, version: str, stop: threading.Event) -> Any:
        """Yield the watch events of ConfigMap ``name`` after ``version`` until the watch ends."""
        with self._session() as session:
            response = session.get(
                self.config_maps_url(),
                params={
                    "watch": "true",
                    "fieldSelector": f"metadata.name={name}",
                    "resourceVersion": version,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": str(WATCH_SECONDS),
                },
                stream=True,
                timeout=(CONNECT_TIMEOUT, WATCH_SECONDS + 30),
            )
            with response:
                if response.status_code != 200:
                    raise ApiError(f"watching ConfigMap {name}: HTTP {response.status_code}")
                for line in response.iter_lines():
                    if stop.is_set():
                        return
                    if line:
                        yield json.loads(line)


class BanListWatcher:
    """Keeps the replica's ban list in step with the operator's ConfigMaps."""

    def __init__(
        self,
        settings: Settings,
        bans: BanStore,
        stop: threading.Event,
        on_synced: Callable[[], None],
    ) -> None:
        assert settings.banlist_configmap is not None
        self.base = settings.banlist_configmap
        self.settings = settings
        self.bans = bans
        self.stop = stop
        self.on_synced = on_synced
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start following shard 0; it tells how many more shards to follow."""
        self._ensure_shards(1)

    def _ensure_shards(self, count: int) -> None:
        with self._lock:
            for index in range(min(count, MAX_SHARDS)):
                if index not in self._threads:
                    thread = threading.Thread(
                        target=self._follow,
                        args=(index,),
                        name=f"banlist-watch-{index}",
                        daemon=True,  # a blocked watch read must not delay process exit
                    )
                    self._threads[index] = thread
                    thread.start()

    def _apply(self, index: int, config_map: dict[str, Any]) -> None:
        data = config_map.get("data") or {}
        name = shard_name(self.base, index)
        shard = parse_shard(config_map)
        if shard.bad_lines:
            logger.warning("ConfigMap %s: skipped %d line(s) that are not a ban, such as %r",
                           name, len(shard.bad_lines), shard.bad_lines[0])  # fmt: skip
        # Decided and written holding the store, so a lift applied meanwhile is not undone.
        with self.bans.locked():
            fresh = self.bans.write(bans_to_write(shard, self.bans.state, time.time()))
        log_added(fresh, f"ConfigMap {name}")
        if index == 0:
            try:
                self._ensure_shards(int(str(data.get("shards") or "1")))
            except ValueError:
                logger.warning("ConfigMap %s: bad shards value %r", self.base, data.get("shards"))

    def _follow(self, index: int) -> None:
        name = shard_name(self.base, index)
        delay = RETRY_INITIAL
        while not self.stop.is_set():
            try:
                api = KubernetesApi(self.settings)
                found, version = api.list_one(name)
                if found is not None:
                    self._apply(index, found)
                if index == 0:
                    self.on_synced()
                delay = RETRY_INITIAL
                for event in api.watch_one(name, version, self.stop):
                    kind = event.get("type")
                    if kind in {"ADDED", "MODIFIED"}:
                        self._apply(index, event["object"])
                    elif kind == "ERROR":
                        # Usually 410 Gone: our version is too old; list again.
                        logger.info("Watch of %s ended: %s", name, event["object"].get("message"))
                        break
            except (OSError, ValueError, KeyError, ApiError, requests.RequestException) as error:
                logger.warning("Following %s failed (retry in %.1f s): %s", name, delay, error)
                self.stop.wait(delay)
                delay = min(RETRY_MAXIMUM, delay * 2)
