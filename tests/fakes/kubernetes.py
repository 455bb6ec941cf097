"""An in-memory Kubernetes API with the interface of ``blacklist_operator.apply.KubernetesApi``.

For unit tests of the reconcile, drift and status logic: the same calls the
operator makes (``apply``, ``apply_status``, ``get``, ``create``, ``replace``,
``merge_patch``, ``delete``, ``serves``, ``watch_object``), answered from a dict
in microseconds. Objects are keyed by ``(apiVersion, kind, namespace, name)``.

Server-side apply is modelled as far as our children need it: each field manager
owns the leaf fields it applied (a list is one field, as an atomic list is);
a forced apply sets its fields, takes them from other managers, and removes the
fields it applied before and applies no longer (unless another manager owns them
too). ``resourceVersion`` changes with every write that changes the object,
``generation`` with every change outside ``metadata`` and ``status``; ``status``
is a subresource, written only through :meth:`FakeKubernetesApi.apply_status`
(or :meth:`FakeKubernetesApi.set_status`, as a controller would). Deleting an
object deletes its dependents (the garbage collector's background cascade).

What it does not model: admission, defaulting, validation by the schema, list
merge keys (containers by name), and time: a cluster test proves those.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from blacklist_operator import FIELD_MANAGER
from blacklist_operator.kube.api import ApiError, Applied, KubernetesApi

ObjectKey = tuple[str, str, str, str]  # (apiVersion, kind, namespace or "", name)
FieldPath = tuple[str, ...]
# The part of metadata the API server writes; an apply or a replace never sets it.
SYSTEM_METADATA = frozenset(
    {"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"}
)
CLUSTER_SCOPED = frozenset({"PersistentVolume", "Namespace", "CustomResourceDefinition"})


def leaf_paths(value: Mapping[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    """The paths of the leaves of a manifest (a list or an empty map is one leaf)."""
    paths: set[FieldPath] = set()
    for name, item in value.items():
        path = (*prefix, name)
        if isinstance(item, Mapping) and item:
            paths |= leaf_paths(item, path)
        else:
            paths.add(path)
    return paths


def applied_fields(manifest: Mapping[str, Any], subresource: str = "") -> set[FieldPath]:
    """The fields an apply of ``manifest`` sets: not its identity, not the other resource's part."""
    fields = set()
    for path in leaf_paths(manifest):
        if path[0] in ("apiVersion", "kind") or path[:2] in (
            ("metadata", "name"),
            ("metadata", "namespace"),
        ):
            continue
        if path[:1] == ("metadata",) and len(path) > 1 and path[1] in SYSTEM_METADATA:
            continue
        if (path[0] == "status") != (subresource == "status"):
            continue
        fields.add(path)
    return fields


def read_path(body: Mapping[str, Any], path: FieldPath) -> Any:
    """The value at ``path``, or ``None``."""
    value: Any = body
    for name in path:
        if not isinstance(value, Mapping) or name not in value:
            return None
        value = value[name]
    return value


def write_path(body: dict[str, Any], path: FieldPath, value: Any) -> None:
    """Set ``path`` to (a copy of) ``value``, making the maps on the way."""
    target = body
    for name in path[:-1]:
        if not isinstance(target.get(name), dict):
            target[name] = {}
        target = target[name]
    target[path[-1]] = copy.deepcopy(value)


def remove_path(body: dict[str, Any], path: FieldPath) -> None:
    """Remove ``path`` and the maps it leaves empty."""
    parents: list[tuple[dict[str, Any], str]] = []
    target: Any = body
    for name in path[:-1]:
        if not isinstance(target, dict) or not isinstance(target.get(name), dict):
            return
        parents.append((target, name))
        target = target[name]
    target.pop(path[-1], None)
    for parent, name in reversed(parents):
        if parent[name]:
            break
        del parent[name]


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch of ``target`` in place (``None`` removes a key)."""
    for name, value in patch.items():
        if value is None:
            target.pop(name, None)
        elif isinstance(value, Mapping):
            current = target.get(name)
            if not isinstance(current, dict):
                current = target[name] = {}
            merge_patch(current, value)
        else:
            target[name] = copy.deepcopy(value)


def spec_part(body: Mapping[str, Any]) -> dict[str, Any]:
    """What changes the generation: everything but metadata and status."""
    return {
        name: value
        for name, value in body.items()
        if name not in ("metadata", "status", "apiVersion", "kind")
    }


def matches(labels: Mapping[str, str], selector: str) -> bool:
    """Whether ``labels`` match a label selector (``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``)."""
    for requirement in filter(None, (part.strip() for part in selector.split(","))):
        if "!=" in requirement:
            name, _, value = requirement.partition("!=")
            if labels.get(name.strip()) == value.strip():
                return False
        elif "=" in requirement:
            name, _, value = requirement.replace("==", "=").partition("=")
            if labels.get(name.strip()) != value.strip():
                return False
        elif requirement.startswith("!"):
            if requirement[1:] in labels:
                return False
        elif requirement not in labels:
            return False
    return True


class FakeKubernetesApi(KubernetesApi):
    """The operator's API calls against objects held in memory (see the module's docstring).

    ``unserved``: kinds whose CRD is not installed (``serves`` says False, reads 404,
    writes refused). ``refuse(kind, status)`` makes every write of a kind fail as the
    API server would refuse it, until ``refuse(kind, None)``.
    """

    def __init__(self, unserved: frozenset[str] = frozenset()) -> None:  # no client
        self.objects: dict[ObjectKey, dict[str, Any]] = {}
        # Per object: (manager, operation or subresource) -> the leaf fields it owns.
        self.owners: dict[ObjectKey, dict[tuple[str, str], set[FieldPath]]] = {}
        self.unserved = set(unserved)
        self.refused: dict[str, int] = {}
        # Every write that reached the store, in order: (verb, kind, name).
        self.writes: list[tuple[str, str, str]] = []
        self._versions = itertools.count(1)

    # -- helpers of the tests -------------------------------------------------------------

    def refuse(self, kind: str, status: int | None) -> None:
        """Refuse every write of ``kind`` with HTTP ``status`` (``None``: accept again)."""
        if status is None:
            self.refused.pop(kind, None)
        else:
            self.refused[kind] = status

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str = "",
    ) -> list[dict[str, Any]]:
        """The objects of a kind (in ``namespace``, or all), filtered by a label selector."""
        return [
            copy.deepcopy(body)
            for (version, object_kind, object_namespace, _), body in sorted(self.objects.items())
            if (version, object_kind) == (api_version, kind)
            and (namespace is None or object_namespace == namespace)
            and matches((body.get("metadata") or {}).get("labels") or {}, label_selector)
        ]

    def set_status(
        self, api_version: str, kind: str, namespace: str | None, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace an object's status, as its controller (the Deployment controller) would."""
        key = self._key(api_version, kind, namespace, name)
        body = self._existing(key)
        if body.get("status") != status:
            body["status"] = copy.deepcopy(status)
            self._bump(key, body, generation=False)
        return copy.deepcopy(body)

    def managers(self, api_version: str, kind: str, namespace: str | None, name: str) -> set[str]:
        """The field managers that own some field of an object."""
        owners = self.owners.get(self._key(api_version, kind, namespace, name), {})
        return {manager for (manager, _), fields in owners.items() if fields}

    # -- the interface of KubernetesApi ---------------------------------------------------

    def apply(self, manifest: dict[str, Any], field_manager: str = FIELD_MANAGER) -> Applied:
        """Server-side apply with force: create, or merge the fields ``field_manager`` owns."""
        metadata = manifest["metadata"]
        key = self._key(
            manifest["apiVersion"], manifest["kind"], metadata.get("namespace"), metadata["name"]
        )
        self._check_write(key)
        created = key not in self.objects
        if created:
            self._store_new(key, manifest)
        self._apply_fields(key, manifest, (field_manager, "Apply"), "")
        self.writes.append(("apply", key[1], key[3]))
        return Applied(body=copy.deepcopy(self.objects[key]), created=created)

    def apply_status(
        self, namespace: str, name: str, status: dict[str, Any], field_manager: str
    ) -> None:
        """Server-side apply of the fields ``status`` of a BlacklistService's status."""
        key = self._key("blacklist.dev/v1", "BlacklistService", namespace, name)
        self._check_write(key)
        self._existing(key)
        manifest = {"status": status}
        self._apply_fields(key, manifest, (field_manager, "status"), "status")
        self.writes.append(("apply_status", key[1], key[3]))

    def watch_object(
        self, api_version: str, kind: str, namespace: str, name: str, timeout_seconds: int
    ) -> Iterator[dict[str, Any]]:
        """The object as it is now (one ``ADDED`` event, when it exists); then the watch ends."""
        body = self.objects.get(self._key(api_version, kind, namespace, name))
        if body is not None:
            yield {"type": "ADDED", "object": copy.deepcopy(body)}

    def serves(self, api_version: str, kind: str) -> bool:
        """Whether the kind's API is installed (every kind not ``unserved``)."""
        return kind not in self.unserved

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """A copy of the object, or ``None``."""
        body = self.objects.get(self._key(api_version, kind, namespace, name))
        return copy.deepcopy(body) if body is not None else None

    def create(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create ``manifest``; ``None`` when an object of that name exists."""
        metadata = manifest["metadata"]
        key = self._key(
            manifest["apiVersion"], manifest["kind"], metadata.get("namespace"), metadata["name"]
        )
        self._check_write(key)
        if key in self.objects:
            return None
        self._store_new(key, manifest)
        body = self.objects[key]
        for path in applied_fields(manifest):
            write_path(body, path, read_path(manifest, path))
        if "status" in manifest:
            body["status"] = copy.deepcopy(manifest["status"])
        self.owners[key][(FIELD_MANAGER, "Update")] = applied_fields(manifest)
        self.writes.append(("create", key[1], key[3]))
        return copy.deepcopy(body)

    def replace(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Replace the object; ``None`` when its ``resourceVersion`` is not the current one."""
        metadata = manifest["metadata"]
        key = self._key(
            manifest["apiVersion"], manifest["kind"], metadata.get("namespace"), metadata["name"]
        )
        self._check_write(key)
        body = self._existing(key)
        if metadata.get("resourceVersion") != body["metadata"]["resourceVersion"]:
            return None
        replaced = {
            **copy.deepcopy({k: v for k, v in manifest.items() if k != "status"}),
            "metadata": {
                **{k: v for k, v in copy.deepcopy(metadata).items() if k not in SYSTEM_METADATA},
                **{k: v for k, v in body["metadata"].items() if k in SYSTEM_METADATA},
            },
        }
        if "status" in body:
            replaced["status"] = body["status"]
        self._commit(key, body, replaced)
        self.owners[key][(FIELD_MANAGER, "Update")] = applied_fields(manifest)
        self.writes.append(("replace", key[1], key[3]))
        return copy.deepcopy(self.objects[key])

    def merge_patch(
        self, api_version: str, kind: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch; a ``metadata.resourceVersion`` other than the current one is a 409."""
        key = self._key(api_version, kind, namespace, name)
        self._check_write(key)
        body = self._existing(key)
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != body["metadata"]["resourceVersion"]:
            raise ApiError(409, f"the object {name} has been modified; please apply your changes")
        patched = copy.deepcopy(body)
        merge_patch(patched, {**patch, "metadata": {**(patch.get("metadata") or {})}})
        patched["metadata"].update(
            {k: v for k, v in body["metadata"].items() if k in SYSTEM_METADATA}
        )
        self._commit(key, body, patched)
        self.writes.append(("merge_patch", key[1], key[3]))
        return copy.deepcopy(self.objects[key])

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        uid: str | None = None,
    ) -> bool:
        """Delete the object and its dependents; ``False`` when gone (or another ``uid``)."""
        key = self._key(api_version, kind, namespace, name)
        self._check_write(key)
        body = self.objects.get(key)
        if body is None or (uid is not None and body["metadata"]["uid"] != uid):
            return False
        self._remove(key)
        self.writes.append(("delete", key[1], key[3]))
        return True

    # -- the store ------------------------------------------------------------------------

    def _key(self, api_version: str, kind: str, namespace: str | None, name: str) -> ObjectKey:
        scoped = "" if kind in CLUSTER_SCOPED else (namespace or "")
        return (api_version, kind, scoped, name)

    def _existing(self, key: ObjectKey) -> dict[str, Any]:
        body = self.objects.get(key)
        if body is None:
            raise ApiError(404, f'{key[1].lower()}s "{key[3]}" not found')
        return body

    def _check_write(self, key: ObjectKey) -> None:
        if key[1] in self.unserved:
            raise ApiError(404, "the server could not find the requested resource")
        status = self.refused.get(key[1])
        if status is not None:
            raise ApiError(status, f"{key[1]} {key[3]}: refused (status {status})")

    def _store_new(self, key: ObjectKey, manifest: Mapping[str, Any]) -> None:
        metadata: dict[str, Any] = {"name": key[3]}
        if key[2]:
            metadata["namespace"] = key[2]
        metadata.update(
            uid=str(uuid.uuid4()),
            resourceVersion=str(next(self._versions)),
            generation=1,
            creationTimestamp="2026-01-01T00:00:00Z",
        )
        self.objects[key] = {
            "apiVersion": manifest["apiVersion"],
            "kind": manifest["kind"],
            "metadata": metadata,
        }
        self.owners[key] = {}

    def _apply_fields(
        self,
        key: ObjectKey,
        manifest: Mapping[str, Any],
        manager: tuple[str, str],
        subresource: str,
    ) -> None:
        body = self.objects[key]
        wanted = applied_fields(manifest, subresource)
        owners = self.owners[key]
        previous = owners.get(manager, set())
        changed = copy.deepcopy(body)
        for path in previous - wanted:
            if not any(path in fields for other, fields in owners.items() if other != manager):
                remove_path(changed, path)
        for path in wanted:
            write_path(changed, path, read_path(manifest, path))
        for other, fields in owners.items():
            if other != manager:
                # Forced: what we set is ours alone, and so is anything below or above it.
                fields -= {
                    path
                    for path in fields
                    for mine in wanted
                    if path[: len(mine)] == mine or mine[: len(path)] == path
                }
        owners[manager] = wanted
        self._commit(key, body, changed)

    def _commit(self, key: ObjectKey, body: dict[str, Any], changed: dict[str, Any]) -> None:
        if changed == body:
            return
        # An object being created (no spec yet) starts at generation 1.
        generation = bool(spec_part(body)) and spec_part(changed) != spec_part(body)
        self.objects[key] = changed
        self._bump(key, changed, generation)

    def _bump(self, key: ObjectKey, body: dict[str, Any], generation: bool) -> None:
        metadata = body["metadata"]
        metadata["resourceVersion"] = str(next(self._versions))
        if generation:
            metadata["generation"] = int(metadata.get("generation") or 1) + 1

    def _remove(self, key: ObjectKey) -> None:
        body = self.objects.pop(key)
        self.owners.pop(key, None)
        uid = body["metadata"]["uid"]
        for other, dependent in list(self.objects.items()):
            references = (dependent.get("metadata") or {}).get("ownerReferences") or []
            if other in self.objects and any(ref.get("uid") == uid for ref in references):
                self._remove(other)
