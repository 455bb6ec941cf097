"""The ledger's backup, pure: its spec parsed and refused, CronJob and claim ``N-backup`` built.

The script the CronJob runs is also run here, with a stand-in ``pg_dump``, to
check that it keeps the newest ``retention`` dumps and never leaves a partial one.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from blacklist_operator.builders import absent_children, build_children
from blacklist_operator.builders.backup import (
    BACKUP_SCRIPT,
    build_backup_claim,
    build_backup_cronjob,
)
from blacklist_operator.builders.children import optional_children
from blacklist_operator.builders.database import build_database_network_policy
from blacklist_operator.builders.drift import contains
from blacklist_operator.model.resource import BlacklistService, SpecError, parse

BACKUP = {"schedule": "0 3 * * *"}
EXTERNAL = {"secretRef": {"name": "pg"}}


def make(**database: Any) -> BlacklistService:
    return parse(
        {
            "metadata": {"name": "demo", "namespace": "team", "uid": "uid-1", "generation": 1},
            "spec": {"database": {"image": "registry.local/postgres:15", **database}},
        }
    )


def pod_spec(cronjob: dict[str, Any]) -> dict[str, Any]:
    return dict(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"])


def test_no_backup_by_default() -> None:
    bls = make()
    assert bls.spec.database.backup is None
    assert build_backup_cronjob(bls) is None
    assert build_backup_claim(bls) is None
    names = {(child["kind"], child["metadata"]["name"]) for child in build_children(bls)}
    assert ("CronJob", "demo-backup") not in names
    assert ("PersistentVolumeClaim", "demo-backup") not in names
    assert ("batch/v1", "CronJob", "demo-backup") in absent_children(bls)


def test_the_backup_spec_gets_its_defaults() -> None:
    backup = make(backup=BACKUP).spec.database.backup
    assert backup is not None
    assert (backup.schedule, backup.retention, backup.size) == ("0 3 * * *", 7, "1Gi")
    assert backup.storage_class_name is None
    assert backup.resources["limits"] == {"memory": "256Mi"}


@pytest.mark.parametrize(
    ("backup", "field_path", "message"),
    [
        ({"retention": 3}, "spec.database.backup.schedule", "is required"),
        ({"schedule": "daily"}, "spec.database.backup.schedule", "cron schedule"),
        ({"schedule": "0 3 * *"}, "spec.database.backup.schedule", "cron schedule"),
        ({**BACKUP, "retention": 0}, "spec.database.backup.retention", "from 1 to 365"),
        ({**BACKUP, "retention": 366}, "spec.database.backup.retention", "from 1 to 365"),
        ({**BACKUP, "storage": {"size": "lots"}}, "spec.database.backup.storage.size", "1Gi"),
        (
            {**BACKUP, "storage": {"storageClassName": "Fast_Disks"}},
            "spec.database.backup.storage.storageClassName",
            "StorageClass",
        ),
        ("0 3 * * *", "spec.database.backup", "object"),
    ],
)
def test_a_bad_backup_is_a_spec_error(backup: Any, field_path: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        make(backup=backup)
    assert caught.value.field_path == field_path
    assert message in str(caught.value)


def test_a_backup_of_an_external_database_is_refused() -> None:
    with pytest.raises(SpecError) as caught:
        make(backup=BACKUP, external=EXTERNAL)
    assert caught.value.field_path == "spec.database.backup"
    assert "back up your external database yourself" in str(caught.value)


@pytest.mark.parametrize("schedule", ["@daily", "@hourly", "*/5 * * * *", "0 3 * * 1-5"])
def test_cron_schedules_and_macros_are_accepted(schedule: str) -> None:
    backup = make(backup={"schedule": schedule}).spec.database.backup
    assert backup is not None
    assert backup.schedule == schedule


def test_the_cronjob_dumps_the_ledger_with_the_database_image() -> None:
    cronjob = build_backup_cronjob(make(backup={**BACKUP, "retention": 3}))
    assert cronjob is not None
    assert (cronjob["apiVersion"], cronjob["kind"]) == ("batch/v1", "CronJob")
    assert cronjob["metadata"]["name"] == "demo-backup"
    assert cronjob["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert cronjob["metadata"]["labels"]["app.kubernetes.io/component"] == "backup"
    spec = cronjob["spec"]
    assert spec["schedule"] == "0 3 * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = pod_spec(cronjob)
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["image"] == "registry.local/postgres:15"
    assert "pg_dump --format=custom" in container["command"][-1]
    env = {variable["name"]: variable for variable in container["env"]}
    assert env["RETENTION"]["value"] == "3"
    assert env["PGHOST"]["valueFrom"]["configMapKeyRef"] == {"name": "demo-db", "key": "host"}
    assert env["PGDATABASE"]["valueFrom"]["configMapKeyRef"]["key"] == "database"
    assert env["PGUSER"]["valueFrom"]["secretKeyRef"] == {"name": "demo-db", "key": "username"}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "demo-db", "key": "password"}
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts["backup"] == "/backup"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["backup"]["persistentVolumeClaim"] == {"claimName": "demo-backup"}
    template_labels = spec["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert template_labels == {
        "app.kubernetes.io/name": "blacklist-service",
        "app.kubernetes.io/instance": "demo",
        "app.kubernetes.io/component": "backup",
    }


def test_the_backup_pod_is_unprivileged() -> None:
    cronjob = build_backup_cronjob(make(backup=BACKUP))
    assert cronjob is not None
    pod = pod_spec(cronjob)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 999
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_the_claim_outlives_the_resource() -> None:
    bls = make(backup={**BACKUP, "storage": {"size": "5Gi", "storageClassName": "slow"}})
    claim = build_backup_claim(bls)
    assert claim is not None
    assert claim["metadata"]["name"] == "demo-backup"
    assert "ownerReferences" not in claim["metadata"]
    assert claim["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "blacklist-operator"
    assert claim["spec"]["resources"]["requests"] == {"storage": "5Gi"}
    assert claim["spec"]["storageClassName"] == "slow"
    children = build_children(bls)
    kinds = [(child["kind"], child["metadata"]["name"]) for child in children]
    # The claim before the CronJob whose pods mount it; the claim is never deleted.
    assert kinds.index(("PersistentVolumeClaim", "demo-backup")) < kinds.index(
        ("CronJob", "demo-backup")
    )
    assert ("PersistentVolumeClaim", "demo-backup") in optional_children(bls)
    assert all(kind != "PersistentVolumeClaim" for _, kind, _ in absent_children(make()))


def test_the_database_admits_the_backup_pods_only_with_a_backup() -> None:
    def sources(bls: BlacklistService) -> list[dict[str, Any]]:
        (rule,) = build_database_network_policy(bls, "blacklist-system")["spec"]["ingress"]
        return list(rule["from"])

    backup_pods = {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "blacklist-service",
                "app.kubernetes.io/instance": "demo",
                "app.kubernetes.io/component": "backup",
            }
        }
    }
    assert backup_pods in sources(make(backup=BACKUP))
    assert backup_pods not in sources(make())


def test_a_cronjob_as_the_api_server_stores_it_is_no_drift() -> None:
    cronjob = build_backup_cronjob(make(backup=BACKUP))
    assert cronjob is not None
    stored = {
        **cronjob,
        "metadata": {**cronjob["metadata"], "uid": "x", "resourceVersion": "7"},
        "spec": {**cronjob["spec"], "suspend": False, "timeZone": None},
        "status": {"lastScheduleTime": "2026-12-03T03:00:00Z"},
    }
    assert contains(stored, cronjob)
    edited = {**stored, "spec": {**stored["spec"], "schedule": "@yearly"}}
    assert not contains(edited, cronjob)


def _run_backup(directory: Path, bin_directory: Path, retention: int, fail: bool = False) -> str:
    """Run the CronJob's script with ``/backup`` at ``directory`` and a stand-in pg_dump."""
    fake = bin_directory / "pg_dump"
    fake.write_text(
        "#!/bin/sh\n"
        'for argument; do case "$argument" in --file=*) file="${argument#--file=}";; esac; done\n'
        'printf dump > "$file"\n' + ("exit 3\n" if fail else "")
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    script = BACKUP_SCRIPT.replace("/backup", str(directory))
    done = subprocess.run(
        ["sh", "-c", script],
        env={
            **os.environ,
            "PATH": f"{bin_directory}:{os.environ['PATH']}",
            "RETENTION": str(retention),
        },
        capture_output=True,
        text=True,
        check=not fail,
    )
    return done.stdout


@pytest.mark.process
def test_the_script_keeps_the_newest_dumps_and_no_partial_one(tmp_path: Path) -> None:
    backups, bin_directory = tmp_path / "backup", tmp_path / "bin"
    backups.mkdir()
    bin_directory.mkdir()
    old = [f"2000010{day}T030000Z.dump" for day in range(1, 6)]
    for name in old:
        (backups / name).write_text("old")
    (backups / "notes.txt").write_text("not a dump: never deleted")
    output = _run_backup(backups, bin_directory, retention=3)
    assert "backup: wrote" in output
    kept = sorted(path.name for path in backups.iterdir())
    new = [name for name in kept if name not in old and name.endswith(".dump")]
    assert len(new) == 1
    assert (backups / new[0]).read_text() == "dump"
    assert kept == sorted([*old[-2:], new[0], "notes.txt"])
    _run_backup(backups, bin_directory, retention=3, fail=True)
    assert sorted(path.name for path in backups.iterdir()) == kept
