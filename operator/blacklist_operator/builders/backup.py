"""The ledger's backup: CronJob ``N-backup`` of ``pg_dump`` and the claim ``N-backup`` it fills.

Only for the bundled database with ``spec.database.backup``. The job runs the
database's own image (so ``pg_dump`` matches the server's version), reaches the
database through Service ``N-postgres`` with the credentials of Secret ``N-db``
(environment from the Secret, never on a command line), writes one custom-format
dump per run and keeps the newest ``retention`` of them. The claim has no owner
reference: a backup that the garbage collector deleted with its resource would
be worthless exactly when it is needed.
"""

from __future__ import annotations

from typing import Any

from blacklist_operator.builders.naming import (
    COMPONENT_BACKUP,
    backup_name,
    database_settings_name,
    labels,
    metadata,
    selector_labels,
)
from blacklist_operator.builders.security import (
    POSTGRES_UID,
    container_security_context,
    pod_security_context,
    resource_requirements,
)
from blacklist_operator.model.resource import BlacklistService

BACKUP_MOUNT = "/backup"
# A job that has not finished after this long is stopped (with concurrencyPolicy
# Forbid, a hung dump would otherwise hold back every later one).
BACKUP_DEADLINE_SECONDS = 6 * 3600
# A run missed by more than this (the controller was down) is skipped, not started late.
STARTING_DEADLINE_SECONDS = 600

# One run: dump to a hidden partial file, rename it when complete (so a dump that
# fails half-way is never taken for a backup), then delete all but the newest
# $RETENTION dumps. Names are UTC timestamps, so their order is their age.
BACKUP_SCRIPT = f"""set -eu
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
partial="{BACKUP_MOUNT}/.$stamp.dump.partial"
trap 'rm -f "$partial"' EXIT
pg_dump --format=custom --no-password --file="$partial"
mv "$partial" "{BACKUP_MOUNT}/$stamp.dump"
echo "backup: wrote {BACKUP_MOUNT}/$stamp.dump ($(wc -c < "{BACKUP_MOUNT}/$stamp.dump") bytes)"
ls -1 {BACKUP_MOUNT} | grep -E '^[0-9]{{8}}T[0-9]{{6}}Z[.]dump$' | sort -r \\
    | tail -n +"$((RETENTION + 1))" | while read -r old; do
    rm -f "{BACKUP_MOUNT}/$old"
    echo "backup: deleted {BACKUP_MOUNT}/$old (keeping the newest $RETENTION)"
done
"""


def _from(source: str, variable: str, name: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {source: {"name": name, "key": key}}}


def build_backup_claim(resource: BlacklistService) -> dict[str, Any] | None:
    """PVC ``N-backup``, never owned by the resource; None without a backup of the bundled one."""
    backup = resource.spec.database.backup
    if backup is None or resource.spec.database.external is not None:
        return None
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": backup.size}},
    }
    if backup.storage_class_name is not None:
        spec["storageClassName"] = backup.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(resource, backup_name(resource), COMPONENT_BACKUP, owned=False),
        "spec": spec,
    }


def build_backup_cronjob(resource: BlacklistService) -> dict[str, Any] | None:
    """CronJob ``N-backup``: ``pg_dump`` on schedule; None without a backup of the bundled one."""
    backup = resource.spec.database.backup
    if backup is None or resource.spec.database.external is not None:
        return None
    settings = database_settings_name(resource)
    container = {
        "name": "backup",
        "image": resource.spec.database.image,
        "imagePullPolicy": resource.spec.image_pull_policy,
        "command": ["sh", "-c", BACKUP_SCRIPT],
        # libpq's own variables: pg_dump reads them, so nothing secret is on its command line.
        "env": [
            _from("configMapKeyRef", "PGHOST", settings, "host"),
            _from("configMapKeyRef", "PGPORT", settings, "port"),
            _from("configMapKeyRef", "PGDATABASE", settings, "database"),
            _from("secretKeyRef", "PGUSER", settings, "username"),
            _from("secretKeyRef", "PGPASSWORD", settings, "password"),
            {"name": "PGCONNECT_TIMEOUT", "value": "30"},
            {"name": "RETENTION", "value": str(backup.retention)},
        ],
        "resources": resource_requirements(backup.resources),
        "securityContext": container_security_context(read_only_root=True),
        "volumeMounts": [
            {"name": "backup", "mountPath": BACKUP_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
        ],
    }
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(POSTGRES_UID),
        "containers": [container],
        "volumes": [
            {"name": "backup", "persistentVolumeClaim": {"claimName": backup_name(resource)}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(resource, backup_name(resource), COMPONENT_BACKUP),
        "spec": {
            "schedule": backup.schedule,
            # Two dumps at once would only load the database and race on the retention.
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": STARTING_DEADLINE_SECONDS,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels(resource, COMPONENT_BACKUP)},
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": BACKUP_DEADLINE_SECONDS,
                    "template": {
                        "metadata": {"labels": selector_labels(resource, COMPONENT_BACKUP)},
                        "spec": pod_spec,
                    },
                },
            },
        },
    }
