"""Backup and restore of the ledger on the real node, by the commands of ``docs/backup.md``.

Rows are written through the service, a backup is taken at once from the CronJob,
the resource and its database claim are deleted, a new resource is created and the
dump restored into it: every row is there. The shell blocks of the page's sections
run as they are written, so the documented procedure is the tested one.
"""

from __future__ import annotations

import os
import re
import subprocess
import zlib
from pathlib import Path

import pytest

from blacklist_devtools import network
from blacklist_devtools.kube import Cluster, KubectlError, wait_until
from tests.operator.helpers import (
    REPO_ROOT,
    OperatorProcess,
    apply_manifest,
    blacklist_service,
    condition,
    get_json,
    hit_blacklisted,
    install_crd,
    ledger_addresses,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DOCS = REPO_ROOT / "docs" / "backup.md"
# Never due while the test runs: the backups it takes are the on-demand ones.
BACKUP = {"schedule": "0 0 1 1 *", "retention": 2}
SOURCE, TARGET = "ledger", "ledger-restored"
ROWS = 3


def documented_blocks(section: str) -> list[str]:
    """The ``bash`` blocks of the section of docs/backup.md headed ``## section``."""
    text = DOCS.read_text()
    found = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert found is not None, f"docs/backup.md has no section {section!r}"
    blocks = re.findall(r"^```bash\n(.*?)^```$", found.group(1), re.M | re.S)
    assert blocks, f"section {section!r} of docs/backup.md has no bash block"
    return blocks


def run_documented(
    cluster: Cluster,
    section: str,
    timeout: float,
    variables: dict[str, str],
    cwd: Path | None = None,
) -> str:
    """Run the blocks of ``section`` with bash (``set -e``) and ``variables``; their output."""
    kubectl_directory = str(Path(cluster.kubectl_path).resolve().parent)
    env = {
        **cluster.env,
        "PATH": f"{kubectl_directory}:{os.environ['PATH']}",
        **variables,
    }
    output = []
    for block in documented_blocks(section):
        done = subprocess.run(
            ["bash", "-e", "-u", "-o", "pipefail", "-c", block],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
        )
        assert done.returncode == 0, f"{section}: {block}\n{done.stdout}\n{done.stderr}"
        output.append(done.stdout)
    return "\n".join(output)


def start(operator: OperatorProcess, namespace: str, name: str) -> None:
    """Apply resource ``name`` with a backup; wait until it is Ready, its database mapped."""
    cluster = operator.cluster
    ensure_backup(operator, namespace, name)
    wait_for(
        lambda: get_json(cluster, "service", f"{name}-postgres", "-n", namespace) is not None,
        30,
        f"Service {name}-postgres",
        operator,
    )
    service = get_json(cluster, "service", f"{name}-postgres", "-n", namespace)
    assert service is not None
    operator.map_database(namespace, name, service["spec"]["clusterIP"], 5432)
    wait_for(lambda: ready(cluster, namespace, name), 120, f"{name} Ready", operator)


def ensure_backup(operator: OperatorProcess, namespace: str, name: str) -> None:
    """Apply the CRD and resource ``name`` with its backup; wait for CronJob ``name-backup``.

    The cluster is shared: a test session of an older tree may put back a CRD without
    ``spec.database.backup``, which prunes the field (and the operator then deletes the
    CronJob), or refuses it. Applying both again, as here before each documented step,
    puts it back; up to 5 attempts.
    """
    cluster = operator.cluster
    errors = []
    for _ in range(5):
        try:
            install_crd(cluster)
            manifest = blacklist_service(name, namespace, database={"backup": BACKUP})
            apply_manifest(cluster, manifest)
        except KubectlError as error:
            errors.append(str(error))
            continue
        if wait_until(
            lambda: get_json(cluster, "cronjob", f"{name}-backup", "-n", namespace) is not None,
            timeout=30,
            interval=0.25,
        ):
            return
        errors.append(f"no CronJob {name}-backup within 30 s")
    pytest.fail("\n".join(errors) + f"\n{operator.log()[-3000:]}")


def run_step(
    operator: OperatorProcess, namespace: str, name: str, section: str, job: str, **variables: str
) -> str:
    """Run a documented section with the backup of ``name`` in place; up to 3 attempts.

    Only for the shared CRD (see :func:`ensure_backup`): an attempt whose CronJob was
    pruned away under it is retried, after its Job ``job`` is deleted.
    """
    cluster = operator.cluster
    failures = []
    for _ in range(3):
        ensure_backup(operator, namespace, name)
        try:
            return run_documented(cluster, section, 180, {"NS": namespace, **variables})
        except AssertionError as failure:
            failures.append(str(failure))
            cluster.kubectl("delete", "job", job, "-n", namespace, "--ignore-not-found")
    pytest.fail("\n\n".join(failures))


def ready(cluster: Cluster, namespace: str, name: str) -> bool:
    body = get_json(cluster, "bls", name, "-n", namespace)
    return condition(body, "Ready").get("status") == "True"


def test_a_dump_restored_into_a_new_resource_holds_every_row(
    operator_process: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    cluster = operator_process.cluster
    start(operator_process, namespace, SOURCE)

    offset = zlib.crc32(namespace.encode()) % 20000
    addresses = [network.client_address(offset + index) for index in range(ROWS)]
    for address in addresses:
        wait_for(
            lambda address=address: hit_blacklisted(cluster, namespace, SOURCE, address),
            30,
            f"a 444 for {address}",
        )
    wait_for(
        lambda: sorted(ledger_addresses(cluster, namespace, SOURCE) or []) == sorted(addresses),
        60,
        f"{ROWS} ledger rows",
        operator_process,
    )

    log = run_step(
        operator_process, namespace, SOURCE, "Back up now", f"{SOURCE}-backup-now", FROM=SOURCE
    )
    written = re.search(r"backup: wrote /backup/([0-9]{8}T[0-9]{6}Z\.dump) \([0-9]+ bytes\)", log)
    assert written is not None, log
    cronjob = get_json(cluster, "cronjob", f"{SOURCE}-backup", "-n", namespace)
    assert cronjob is not None
    image = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
    run_documented(
        cluster,
        "Copy a dump out",
        120,
        {"NS": namespace, "FROM": SOURCE, "IMAGE": image, "DUMP": written.group(1)},
        cwd=tmp_path,
    )
    # pg_dump's custom format starts with its magic.
    assert (tmp_path / written.group(1)).read_bytes().startswith(b"PGDMP")

    # The resource is lost, and the claim with its database with it.
    cluster.kubectl("delete", "bls", SOURCE, "-n", namespace, "--wait=true", "--timeout=90s")
    cluster.kubectl("delete", "pvc", f"{SOURCE}-postgres", "-n", namespace, "--wait=true")
    wait_for(
        lambda: get_json(cluster, "deployment", f"{SOURCE}-postgres", "-n", namespace) is None,
        60,
        "the database Deployment collected",
    )
    wait_for(
        lambda: get_json(cluster, "cronjob", f"{SOURCE}-backup", "-n", namespace) is None,
        60,
        "the CronJob collected",
    )
    kept = get_json(cluster, "pvc", f"{SOURCE}-backup", "-n", namespace)
    assert kept is not None, "the backup claim went with its resource"
    assert not kept["metadata"].get("ownerReferences")

    start(operator_process, namespace, TARGET)
    assert not ledger_addresses(cluster, namespace, TARGET)
    log = run_step(
        operator_process,
        namespace,
        TARGET,
        "Restore into a resource",
        f"{TARGET}-restore",
        FROM=SOURCE,
        TO=TARGET,
        DUMP="latest",
    )
    assert "restore: done" in log, log
    wait_for(
        lambda: sorted(ledger_addresses(cluster, namespace, TARGET) or []) == sorted(addresses),
        60,
        "every row in the new resource's ledger",
        operator_process,
    )
    wait_for(lambda: ready(cluster, namespace, TARGET), 120, "Ready after the restore")

    # The restored rows reach the ban list of the new resource.
    def banned() -> bool:
        body = get_json(cluster, "bls", TARGET, "-n", namespace) or {}
        return (body.get("status") or {}).get("bannedCount") == ROWS

    wait_for(banned, 60, f"bannedCount {ROWS} after the restore", operator_process)

    # Backup removed from the spec: the CronJob goes, the claim with the dumps stays.
    apply_manifest(cluster, blacklist_service(TARGET, namespace))
    wait_for(
        lambda: get_json(cluster, "cronjob", f"{TARGET}-backup", "-n", namespace) is None,
        60,
        "the CronJob deleted with spec.database.backup",
        operator_process,
    )
    assert get_json(cluster, "pvc", f"{TARGET}-backup", "-n", namespace) is not None


def test_an_edited_or_deleted_cronjob_is_restored(
    operator_process: OperatorProcess, namespace: str
) -> None:
    cluster = operator_process.cluster
    name = "drifting"
    ensure_backup(operator_process, namespace, name)

    def schedule() -> str | None:
        cronjob = get_json(cluster, "cronjob", f"{name}-backup", "-n", namespace)
        return None if cronjob is None else str(cronjob["spec"]["schedule"])

    def settled() -> bool:
        body = get_json(cluster, "bls", name, "-n", namespace) or {}
        generation = (body.get("metadata") or {}).get("generation")
        return (body.get("status") or {}).get("observedGeneration") == generation

    wait_for(settled, 60, "the resource reconciled", operator_process)
    patch = '{"spec": {"schedule": "@hourly"}}'
    cluster.kubectl("patch", "cronjob", f"{name}-backup", "-n", namespace, "-p", patch)
    wait_for(
        lambda: schedule() == BACKUP["schedule"], 30, "the schedule put back", operator_process
    )
    cluster.kubectl("delete", "cronjob", f"{name}-backup", "-n", namespace, "--wait=true")
    wait_for(
        lambda: schedule() == BACKUP["schedule"], 30, "the CronJob recreated", operator_process
    )
