"""Follows the operator's ban list through the Kubernetes API: one watch on the head.

The operator writes the ban list of ``BlacklistService`` N as a head ConfigMap
``N-banlist`` and snapshot parts ``N-banlist-1`` … (:mod:`blacklist_contract.wire`).
The leading worker of a replica lists the head (a ``metadata.name`` field
selector, which the Role's ``resourceNames`` allows), then watches it from that
list's resourceVersion, and lists again when the watch ends or its version has
expired. A volume mount would refresh only after a minute or more; a watch
delivers each change within milliseconds.

When the head names a snapshot generation other than the one the store holds,
its lines are banned at once (added only: what the new generation drops is
dropped once it is installed), and an installer thread reads the parts by name
(``GET``), in order, each checked to carry the head's generation in its
``blacklist.dev/snapshot`` annotation (else the operator is still writing
them: try again shortly, then read the head again), and streams them into a
new snapshot generation of the store (:meth:`BanStore.install`). Meanwhile the
watch goes on, and the lines of every head that comes are banned the same way,
so a compaction (a second or more at millions of bans) is not in a new ban's
path. Once the parts are in, the latest head's lines go into the store's log
(:mod:`blacklist_service.bans.lines`) whole. The replica holds the whole list
once both are done, and only then is it ready.

A head or part without the operator's labels
(:func:`~blacklist_contract.wire.written_by_operator`: another team's
ConfigMap of that name, which the operator leaves untouched and reports) is
never applied: the replica keeps what it holds and is not ready until the
operator's own list is there.

A replica starting afresh applies no head before its lift follower has read
the lift table once (:data:`LIFTS_WAIT` at most): the head may still list a
ban lifted while the operator was down, and only the lift's record in the
store makes the replica skip that line.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, Protocol

import requests

from blacklist_contract.wire import decode_part, head_name, part_name, written_by_operator
from blacklist_service.bans.lines import Head, head_records, lifts_seen, parse_head, part_generation
from blacklist_service.bans.notices import log_added
from blacklist_service.bans.records import LISTED, Record
from blacklist_service.bans.store import BanStore
from blacklist_service.bans.values import is_active
from blacklist_service.config import Settings

logger = logging.getLogger(__name__)
WATCH_SECONDS = 240  # the server ends a watch after this; we list and watch again
CONNECT_TIMEOUT = 5.0
RETRY_INITIAL = 0.5
RETRY_MAXIMUM = 15.0
# A part not yet at the head's generation: the operator is writing it. Look again
# this often, this many times, then wait for the next change of the head.
PART_RETRY = 0.2
PART_ATTEMPTS = 25
# After PART_ATTEMPTS, the head is listed again this often until its parts match it.
RELIST_SECONDS = 1.0
# How long the first head waits for the lift table's first read; a database that
# does not answer must not keep the replica from ever holding the operator's list.
LIFTS_WAIT = 30.0


class ApiError(RuntimeError):
    """The API server refused or failed a request."""


class PartNotWrittenError(RuntimeError):
    """A snapshot part does not carry the head's generation yet."""


class PartReader(Protocol):
    """What installing a snapshot needs of the API: a ConfigMap by name."""

    def get(self, name: str) -> dict[str, Any] | None:
        """The ConfigMap ``name``, or None if there is none."""


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

    def get(self, name: str) -> dict[str, Any] | None:
        """The ConfigMap ``name``, or None if there is none."""
        with self._session() as session:
            response = session.get(
                f"{self.config_maps_url()}/{name}", timeout=(CONNECT_TIMEOUT, 30)
            )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ApiError(f"getting ConfigMap {name}: HTTP {response.status_code} {response.text}")
        found: dict[str, Any] = response.json()
        return found

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

    def watch_one(self, name: str, version: str, stop: threading.Event) -> Iterator[Any]:
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


def apply_head(bans: BanStore, head: Head, source: str) -> None:
    """Write what the head's lines change into the store.

    A head with ``dropped=[]`` only adds (the lines of a head whose snapshot
    generation is not installed yet).
    """
    # Decided and written holding the store, so a lift applied meanwhile is not undone.
    with bans.locked():
        now = time.time()
        changes = head_records(head, bans.state, bans.listed(), now)
        fresh = [
            prefix
            for kind, prefix, _ in changes
            if kind == LISTED and not is_active(bans.value(prefix), now)
        ]
        written = int(now)
        bans.append(Record(kind, prefix, value, written) for kind, prefix, value in changes)
    log_added(fresh, source)


class BanListWatcher:
    """Keeps the replica's ban store in step with the operator's head and snapshot parts."""

    def __init__(
        self,
        settings: Settings,
        bans: BanStore,
        stop: threading.Event,
        on_synced: Callable[[], None],
        lifts_read: threading.Event | None = None,
    ) -> None:
        assert settings.banlist_configmap is not None
        self.resource = settings.banlist_configmap.removesuffix("-banlist")
        self.head = head_name(self.resource)
        self.settings = settings
        self.bans = bans
        self.stop = stop
        self.on_synced = on_synced
        self.lifts_read = lifts_read
        self._thread: threading.Thread | None = None
        self._applied: Head | None = None  # the head applied last, whole
        # The latest head while a snapshot generation is being installed, and its installer.
        self._lock = threading.Lock()
        self._pending: dict[str, Any] | None = None
        # The pending head parsed whole, so the apply right after the switch does not parse.
        self._parsed: tuple[dict[str, Any], Head] | None = None
        self._installer: threading.Thread | None = None

    def start(self) -> None:
        """Follow the head in a thread of its own."""
        self._thread = threading.Thread(
            target=self._follow,
            name="banlist-watch",
            daemon=True,  # a blocked watch read must not delay process exit
        )
        self._thread.start()

    def _install(self, api: PartReader, head: Head) -> None:
        """Stream the head's snapshot parts into a new generation of the store.

        Right after the switch, holding the store, the latest head goes in whole
        if it names this generation (:meth:`_apply_pending`).
        """
        writer = self.bans.new_snapshot()
        seen = head.lifts_seen
        try:
            for index in range(1, head.parts + 1):
                name = part_name(self.resource, index)
                part = api.get(name)
                if part is None or part_generation(part) != head.snapshot:
                    raise PartNotWrittenError(name)
                if not written_by_operator(part, self.resource):
                    raise PartNotWrittenError(f"{name} (not the operator's)")
                seen = max(seen, lifts_seen(part) or 0)
                encoded = (part.get("binaryData") or {}).get("bans") or ""
                for section in decode_part(base64.b64decode(encoded)):
                    writer.add(section)
        except BaseException:
            writer.abandon()
            raise
        self.bans.install(writer, head.snapshot, seen, self._apply_pending)
        logger.info(
            "Ban list snapshot %s: %d entries from %d part(s)",
            head.snapshot,
            writer.count,
            head.parts,
        )

    def _apply(self, api: PartReader, config_map: dict[str, Any]) -> None:
        """Apply a head; for a new generation, ban its lines and install its parts meanwhile.

        A head that is not the operator's is left alone.
        """
        if not written_by_operator(config_map, self.resource):
            logger.warning("ConfigMap %s is not the operator's (no labels of it): not applied",
                           self.head)  # fmt: skip
            return
        with self._lock:
            head = parse_head(config_map, self._applied)
            if head.bad_lines:
                logger.warning("ConfigMap %s: skipped %d line(s) that are not a ban, such as %r",
                               self.head, len(head.bad_lines), head.bad_lines[0])  # fmt: skip
            if self._installer is None and self.bans.operator_generation() == head.snapshot:
                apply_head(self.bans, head, f"ConfigMap {self.head}")
                self._applied = head
                self.on_synced()
                return
            # A generation to install (or one being installed): its lines hold at once.
            self._applied = None
            whole = parse_head(config_map)
            apply_head(self.bans, replace(whole, dropped=[]), f"ConfigMap {self.head}")
            self._parsed = (config_map, whole)
            self._pending = config_map
            if self._installer is None:
                self._installer = threading.Thread(
                    target=self._install_pending, args=(api,), name="banlist-install", daemon=True
                )
                self._installer.start()

    def _install_pending(self, api: PartReader) -> None:
        """Install the pending head's generation, then apply the latest head whole.

        A part not at the head's generation is asked again every ``PART_RETRY``
        (``PART_ATTEMPTS`` times); then the head is read again every
        ``RELIST_SECONDS`` until its parts match it. Whatever ends the thread,
        the next head starts another.
        """
        try:
            self._install_until_done(api)
        except Exception:
            logger.exception("Installing the ban list's snapshot failed: retrying at the next head")
        finally:
            with self._lock:
                if self._installer is threading.current_thread():
                    self._installer = None

    def _install_until_done(self, api: PartReader) -> None:
        attempts = 0
        while not self.stop.is_set():
            with self._lock:
                config_map = self._pending
                assert config_map is not None
                head = self._parse_pending(config_map)
                if self.bans.operator_generation() == head.snapshot:
                    apply_head(self.bans, head, f"ConfigMap {self.head}")
                    self._applied, self._pending, self._installer = head, None, None
                    self._parsed = None
                    self.on_synced()
                    return
            try:
                self._install(api, head)
                attempts = 0
                continue
            except PartNotWrittenError as part:
                attempts += 1
                if attempts < PART_ATTEMPTS:
                    self.stop.wait(PART_RETRY)
                    continue
                logger.info("Part %s is not at snapshot %s yet: reading the head again in %.0f s",
                            part, head.snapshot, RELIST_SECONDS)  # fmt: skip
            except (OSError, ValueError, KeyError, ApiError, requests.RequestException) as error:
                logger.warning("Installing snapshot %s failed (retry in %.0f s): %s",
                               head.snapshot, RELIST_SECONDS, error)  # fmt: skip
            attempts = 0
            if self.stop.wait(RELIST_SECONDS):
                return
            self._reread_head(api, config_map)

    def _apply_pending(self) -> None:
        """Apply the latest head whole if the store holds its generation (holding the store).

        It runs in the installer without the watcher's lock (the watcher may be
        waiting for the store while holding it); the installer then looks again
        under that lock, and applies a head that came meanwhile.
        """
        config_map = self._pending
        if config_map is None:
            return
        head = self._parse_pending(config_map)
        if self.bans.operator_generation() == head.snapshot:
            apply_head(self.bans, head, f"ConfigMap {self.head}")

    def _parse_pending(self, config_map: dict[str, Any]) -> Head:
        """The pending head parsed, from the parse the watch made when it came."""
        parsed = self._parsed
        if parsed is not None and parsed[0] is config_map:
            return parsed[1]
        head = parse_head(config_map)
        self._parsed = (config_map, head)
        return head

    def _reread_head(self, api: PartReader, tried: dict[str, Any]) -> None:
        """Take the head as it is now, unless the watch brought a newer one meanwhile."""
        try:
            current = api.get(self.head)
        except (OSError, ValueError, ApiError, requests.RequestException):
            return
        if current is None or not written_by_operator(current, self.resource):
            return
        with self._lock:
            if self._pending is tried:
                self._pending = current

    def wait_installed(self, timeout: float) -> bool:
        """Wait until no snapshot is being installed; False if one still is after ``timeout``."""
        with self._lock:
            installer = self._installer
        if installer is not None:
            installer.join(timeout)
            return not installer.is_alive()
        return True

    def _wait_for_lifts(self) -> bool:
        """Wait until the lift table was read once (LIFTS_WAIT at most); False on a stop."""
        if self.lifts_read is None:
            return True
        deadline = time.monotonic() + LIFTS_WAIT
        while not self.lifts_read.wait(0.1):
            if self.stop.is_set():
                return False
            if time.monotonic() >= deadline:
                logger.warning("The lift table was not read within %.0f s: following %s anyway",
                               LIFTS_WAIT, self.head)  # fmt: skip
                break
        return True

    def _follow(self) -> None:
        if not self._wait_for_lifts():
            return
        delay = RETRY_INITIAL
        while not self.stop.is_set():
            try:
                api = KubernetesApi(self.settings)
                found, version = api.list_one(self.head)
                if found is not None:
                    self._apply(api, found)
                delay = RETRY_INITIAL
                for event in api.watch_one(self.head, version, self.stop):
                    kind = event.get("type")
                    if kind in {"ADDED", "MODIFIED"}:
                        self._apply(api, event["object"])
                    elif kind == "ERROR":
                        # Usually 410 Gone: our version is too old; list again.
                        logger.info("Watch of %s ended: %s", self.head,
                                    event["object"].get("message"))  # fmt: skip
                        break
            except (OSError, ValueError, KeyError, ApiError, requests.RequestException) as error:
                logger.warning("Following %s failed (retry in %.1f s): %s", self.head, delay, error)
                self.stop.wait(delay)
                delay = min(RETRY_MAXIMUM, delay * 2)
