"""A minimal dynamic volume provisioner for the local cluster's default StorageClass.

kind and minikube ship a hostPath provisioner so that a PersistentVolumeClaim
without a pre-made volume binds; this is the same idea for our local control
plane. Every second it creates a hostPath PersistentVolume for each pending
claim of the ``standard`` class and deletes the released volumes it made
(reclaim policy ``Delete``), with their directories.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

PROVISIONER = "local.blacklist.dev/hostpath"
STORAGE_CLASS = "standard"

logger = logging.getLogger("provisioner")


def volume_for_claim(claim: Any, volumes_dir: Path) -> dict[str, Any]:
    """The PersistentVolume manifest that satisfies ``claim``."""
    meta = claim.metadata
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"pvc-{meta.uid}",
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": claim.spec.resources.requests["storage"]},
            "accessModes": claim.spec.access_modes,
            "storageClassName": STORAGE_CLASS,
            "persistentVolumeReclaimPolicy": "Delete",
            "hostPath": {
                "path": str(volumes_dir / f"{meta.namespace}-{meta.name}-{meta.uid}"),
                "type": "DirectoryOrCreate",
            },
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta.namespace,
                "name": meta.name,
                "uid": meta.uid,
            },
        },
    }


def provision_once(core: client.CoreV1Api, volumes_dir: Path) -> None:
    """Create volumes for pending claims and delete released volumes of ours."""
    volumes = core.list_persistent_volume().items
    claimed = {
        volume.spec.claim_ref.uid
        for volume in volumes
        if volume.spec.claim_ref is not None and volume.spec.claim_ref.uid
    }
    for claim in core.list_persistent_volume_claim_for_all_namespaces().items:
        wanted_class = claim.spec.storage_class_name
        if claim.status.phase != "Pending" or claim.spec.volume_name:
            continue
        if wanted_class != STORAGE_CLASS or claim.metadata.uid in claimed:
            continue
        manifest = volume_for_claim(claim, volumes_dir)
        directory = Path(manifest["spec"]["hostPath"]["path"])
        directory.mkdir(parents=True, exist_ok=True)
        # Any uid the pod runs as may write its volume (hostPath ignores fsGroup), as with
        # the local-path provisioners of kind and minikube.
        directory.chmod(0o777)
        core.create_persistent_volume(manifest)
        logger.info(
            "Provisioned %s for %s/%s",
            manifest["metadata"]["name"],
            claim.metadata.namespace,
            claim.metadata.name,
        )
    for volume in volumes:
        annotations = volume.metadata.annotations or {}
        if annotations.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
            continue
        if volume.status.phase == "Released" and (
            volume.spec.persistent_volume_reclaim_policy == "Delete"
        ):
            core.delete_persistent_volume(volume.metadata.name)
            shutil.rmtree(volume.spec.host_path.path, ignore_errors=True)
            logger.info("Deleted released %s", volume.metadata.name)


def main(argv: list[str] | None = None) -> None:
    """Provision volumes until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--volumes-dir", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config.load_kube_config(config_file=arguments.kubeconfig)
    core = client.CoreV1Api()
    arguments.volumes_dir.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            provision_once(core, arguments.volumes_dir)
        except Exception:
            # The API server may be restarting; the next pass retries.
            logger.exception("Provisioning pass failed")
        time.sleep(arguments.interval)


if __name__ == "__main__":
    main()
