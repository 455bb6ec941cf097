"""The only module that talks to the Kubernetes API: server-side apply and a few reads.

Children are written with server-side apply under our field manager and
``force=True``: the API server merges, we own exactly the fields we set, and a
field that someone else changed is taken back. Calls are blocking (the official
client); callers run them in kopf's executor or in a worker thread.

Under leader election every write first checks the fence (``fence``): a replica
whose lease may have passed to another exits instead of writing. The elector's
own client, which writes only the Lease, is the one left unfenced.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from blacklist_operator import API_VERSION, FIELD_MANAGER, PLURAL
from blacklist_operator.kube.fence import FENCE, ReleasedError

# kind -> (plural, namespaced); only the kinds this operator writes or reads.
_RESOURCES: dict[str, tuple[str, bool]] = {
    "ConfigMap": ("configmaps", True),
    "CronJob": ("cronjobs", True),
    "Deployment": ("deployments", True),
    "HorizontalPodAutoscaler": ("horizontalpodautoscalers", True),
    "Ingress": ("ingresses", True),
    "Lease": ("leases", True),
    "NetworkPolicy": ("networkpolicies", True),
    "PersistentVolume": ("persistentvolumes", False),
    "PersistentVolumeClaim": ("persistentvolumeclaims", True),
    "PodDisruptionBudget": ("poddisruptionbudgets", True),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "Secret": ("secrets", True),
    "Service": ("services", True),
    "ServiceAccount": ("serviceaccounts", True),
    "ServiceMonitor": ("servicemonitors", True),
    "BlacklistService": (PLURAL, True),
}
_TIMEOUT = (5.0, 30.0)
# How long an answer of API discovery is trusted: a CRD installed (or removed) later
# is seen by the first reconcile after this.
DISCOVERY_SECONDS = 60.0


class ApiError(Exception):
    """A request the API server refused; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Applied:
    """The object as stored after an apply, and whether the apply created it."""

    body: dict[str, Any]
    created: bool


def _path(api_version: str, kind: str, namespace: str | None, name: str | None) -> str:
    plural, namespaced = _RESOURCES[kind]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    scope = f"/namespaces/{namespace}" if namespaced else ""
    return f"{prefix}{scope}/{plural}" + (f"/{name}" if name else "")


def _message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body).get("message", error.reason))
    except (TypeError, ValueError):
        return str(error.reason)


def load_client(pool_size: int = 32) -> client.ApiClient:
    """A client from the pod's ServiceAccount in a cluster, else from the kubeconfig."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    # Reconciles of many BlacklistServices run in parallel threads.
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


class KubernetesApi:
    """Blocking access to the objects of a BlacklistService."""

    def __init__(
        self,
        api_client: client.ApiClient,
        fenced: bool = True,
        timeout: tuple[float, float] = _TIMEOUT,
    ) -> None:
        self._client = api_client
        self._fenced = fenced
        self._timeout = timeout
        # (apiVersion, kind) -> (when asked, served): shared by the reconcile threads.
        self._discovered: dict[tuple[str, str], tuple[float, bool]] = {}
        self._discovery_lock = threading.Lock()

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> tuple[dict[str, Any], int]:
        _, url, headers, _, _ = self._client.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        if self._fenced and method != "GET":
            try:
                FENCE.check()  # as late as possible: the last moment before the request leaves
            except ReleasedError as error:
                raise ApiError(0, str(error)) from None
        try:
            response = self._client.call_api(
                method, url, header_params=headers, body=body, _request_timeout=self._timeout
            )
        except ApiException as error:
            raise ApiError(int(error.status or 0), _message(error)) from None
        data = response.read()
        if not 200 <= response.status < 300:
            # Not always a Status object: a group the API lacks answers "404 page not found".
            try:
                message = str(json.loads(data).get("message", response.reason))
            except (AttributeError, ValueError):
                message = str(response.reason)
            raise ApiError(response.status, message)
        parsed: dict[str, Any] = json.loads(data) if data else {}
        return parsed, int(response.status)

    def apply(self, manifest: dict[str, Any], field_manager: str = FIELD_MANAGER) -> Applied:
        """Server-side apply ``manifest`` (force: we take back fields others changed)."""
        metadata = manifest["metadata"]
        path = _path(
            manifest["apiVersion"], manifest["kind"], metadata.get("namespace"), metadata["name"]
        )
        body, status = self._call(
            "PATCH",
            path,
            body=manifest,
            query=[("fieldManager", field_manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        return Applied(body=body, created=status == 201)

    def apply_status(
        self, namespace: str, name: str, status: dict[str, Any], field_manager: str
    ) -> None:
        """Server-side apply the fields ``status`` of a BlacklistService's status."""
        manifest = {
            "apiVersion": API_VERSION,
            "kind": "BlacklistService",
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        }
        path = _path(API_VERSION, "BlacklistService", namespace, name) + "/status"
        self._call(
            "PATCH",
            path,
            body=manifest,
            query=[("fieldManager", field_manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def watch_object(
        self, api_version: str, kind: str, namespace: str, name: str, timeout_seconds: int
    ) -> Iterator[dict[str, Any]]:
        """The watch events of one object (by name) until the server ends it after the timeout.

        The first event is the object as it is now (``ADDED``), when it exists.
        """
        plural, _ = _RESOURCES[kind]
        _, url, headers, _, _ = self._client.param_serialize(
            "GET",
            f"/apis/{api_version}/namespaces/{namespace}/{plural}",
            query_params=[
                ("watch", "true"),
                ("fieldSelector", f"metadata.name={name}"),
                ("timeoutSeconds", str(timeout_seconds)),
            ],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(
                "GET", url, header_params=headers, _request_timeout=(5.0, timeout_seconds + 5.0)
            )
        except ApiException as error:
            raise ApiError(int(error.status or 0), _message(error)) from None
        stream = response.response
        try:
            if response.status != 200:
                raise ApiError(response.status, str(response.reason))
            pending = b""
            for chunk in stream.stream(amt=None, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            # Closed, not only released: a watch left early still has events on the way,
            # which must not be read as the answer to the next request on that connection.
            stream.close()
            stream.release_conn()

    def serves(self, api_version: str, kind: str) -> bool:
        """Whether the API serves ``kind`` in ``api_version`` (discovery, cached briefly).

        For the kinds of CRDs a cluster may lack (the Prometheus Operator's): asked
        again after :data:`DISCOVERY_SECONDS`, so a CRD installed later is picked up.
        """
        key = (api_version, kind)
        now = time.monotonic()
        with self._discovery_lock:
            known = self._discovered.get(key)
        if known is not None and now - known[0] < DISCOVERY_SECONDS:
            return known[1]
        plural, _ = _RESOURCES[kind]
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            body, _ = self._call("GET", prefix)
        except ApiError as error:
            if error.status != 404:
                raise
            body = {}
        served = any(resource.get("name") == plural for resource in body.get("resources") or [])
        with self._discovery_lock:
            self._discovered[key] = (now, served)
        return served

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """The object, or ``None`` when it does not exist."""
        try:
            body, _ = self._call("GET", _path(api_version, kind, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return body

    def create(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create ``manifest``; ``None`` when an object of that name already exists."""
        metadata = manifest["metadata"]
        path = _path(manifest["apiVersion"], manifest["kind"], metadata.get("namespace"), None)
        try:
            body, _ = self._call(
                "POST", path, body=manifest, query=[("fieldManager", FIELD_MANAGER)]
            )
        except ApiError as error:
            if error.status == 409:
                return None
            raise
        return body

    def replace(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Replace the object with ``manifest``, whose resource version guards the write.

        ``None`` when the object changed since that version was read (409 Conflict).
        """
        metadata = manifest["metadata"]
        path = _path(
            manifest["apiVersion"], manifest["kind"], metadata.get("namespace"), metadata["name"]
        )
        try:
            body, _ = self._call(
                "PUT", path, body=manifest, query=[("fieldManager", FIELD_MANAGER)]
            )
        except ApiError as error:
            if error.status == 409:
                return None
            raise
        return body

    def merge_patch(
        self, api_version: str, kind: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch of an object; a ``metadata.resourceVersion`` in it guards a race."""
        body, _ = self._call(
            "PATCH",
            _path(api_version, kind, namespace, name),
            body=patch,
            query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/merge-patch+json",
        )
        return body

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        uid: str | None = None,
    ) -> bool:
        """Delete the object (in the background); ``False`` when it was already gone.

        With ``uid``, only that object: one of the same name made since (409) is left.
        """
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        try:
            self._call("DELETE", _path(api_version, kind, namespace, name), body=body)
        except ApiError as error:
            if error.status == 404 or (uid is not None and error.status == 409):
                return False
            raise
        return True
