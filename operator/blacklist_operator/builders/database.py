"""The PostgreSQL child: Deployment (with its init containers), Service, settings and policy.

Its Secret is built in ``credentials``, its volume and claim in ``storage``.
"""

from __future__ import annotations

from typing import Any

from blacklist_operator.builders.naming import (
    COMPONENT_BACKUP,
    COMPONENT_DATABASE,
    COMPONENT_SERVICE,
    OPERATOR_APP_NAME,
    POSTGRES_PORT,
    database_name,
    database_settings_name,
    metadata,
    pod_metadata,
    selector_labels,
)
from blacklist_operator.builders.security import (
    POSTGRES_UID,
    container_security_context,
    pod_security_context,
    resource_requirements,
)
from blacklist_operator.model.external import ExternalDatabase
from blacklist_operator.model.resource import DEFAULT_DATABASE_IMAGE, BlacklistService

DATA_MOUNT = "/var/lib/postgresql/data"
# The own-data init container's image unless the admin names one (the chart: the operator's).
DEFAULT_HOST_PATH_INIT_IMAGE = DEFAULT_DATABASE_IMAGE
# A subfolder, because initdb refuses a mount point that holds lost+found.
PGDATA = f"{DATA_MOUNT}/pgdata"
SOCKET_DIR = "/var/run/postgresql"

# The init container "set-password": before the server takes connections, make the
# role's password the one in Secret N-db. initdb sets it only on a new volume, so
# without this a recreated Secret (deleted by hand, or collected with its owner
# while the volume was retained) would lock everyone out of the existing ledger.
# It starts the server on its socket only (no network), where the official image's
# contract (and ours) trusts local connections, runs ALTER ROLE with the password
# passed as a psql variable (quoted by psql, never on a command line or in a file),
# and stops it. It never fails the pod: when it cannot do its job (a fresh volume,
# an image without pg_ctl, a pg_hba that refuses the socket) it says why and the
# server starts as before; the operator's DatabaseReady condition tells the rest.
ROLE_CREDENTIALS_SCRIPT = """set -u
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "set-password: no database in $PGDATA yet: initdb will set the password"; exit 0
fi
if ! command -v pg_ctl >/dev/null || ! command -v psql >/dev/null; then
    echo "set-password: no pg_ctl/psql in this image: the password is left as it is"; exit 0
fi
chmod 0700 "$PGDATA"
if ! pg_ctl --pgdata="$PGDATA" --wait --silent \
    --options="-c listen_addresses='' -c unix_socket_directories=$SOCKET_DIR" start; then
    echo "set-password: the server did not start: the password is left as it is"; exit 0
fi
if printf '%s\n' 'ALTER ROLE :"role" WITH PASSWORD :'"'"'password'"'"';' \
    | PGPASSWORD="$POSTGRES_PASSWORD" psql --no-psqlrc --quiet --no-password \
        --set ON_ERROR_STOP=1 --host "$SOCKET_DIR" --username "$POSTGRES_USER" \
        --dbname postgres --set role="$POSTGRES_USER" --set password="$POSTGRES_PASSWORD"
then
    echo "set-password: the password of $POSTGRES_USER is the one of its Secret"
else
    echo "set-password: could not set the password of $POSTGRES_USER"
fi
pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop
exit 0
"""


def database_host(resource: BlacklistService) -> str:
    """In-cluster DNS name of the database Service."""
    return f"{database_name(resource)}.{resource.namespace}.svc"


def build_database_configmap(
    resource: BlacklistService, external: ExternalDatabase | None = None
) -> dict[str, Any]:
    """ConfigMap ``N-db``: where the database is, never its credentials.

    With ``external`` (the parsed Secret of ``spec.database.external``) it points at
    that database, and also says its ``sslmode``.
    """
    data = {
        "host": database_host(resource),
        "port": str(POSTGRES_PORT),
        "database": resource.spec.database.name,
    }
    if external is not None:
        data = {
            "host": external.host,
            "port": str(external.port),
            "database": external.database,
            "sslmode": external.sslmode,
        }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(resource, database_settings_name(resource), COMPONENT_DATABASE),
        "data": data,
    }


def _secret_key(variable: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _database_mounts() -> list[dict[str, Any]]:
    return [
        {"name": "data", "mountPath": DATA_MOUNT},
        {"name": "run", "mountPath": SOCKET_DIR},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
    ]


def build_set_password_container(resource: BlacklistService) -> dict[str, Any]:
    """The init container that gives the role the password of Secret ``N-db`` at each start."""
    settings = database_settings_name(resource)
    database = resource.spec.database
    return {
        "name": "set-password",
        "image": database.image,
        "imagePullPolicy": resource.spec.image_pull_policy,
        "command": ["sh", "-c", ROLE_CREDENTIALS_SCRIPT],
        "env": [
            _secret_key("POSTGRES_USER", settings, "username"),
            _secret_key("POSTGRES_PASSWORD", settings, "password"),
            {"name": "PGDATA", "value": PGDATA},
            {"name": "SOCKET_DIR", "value": SOCKET_DIR},
        ],
        "resources": resource_requirements(database.resources),
        "securityContext": container_security_context(read_only_root=True),
        "volumeMounts": _database_mounts(),
    }


# The init container "own-data", only for a hostPath volume: the kubelet creates a
# missing hostPath directory owned by root, and fsGroup does not apply to hostPath,
# so PostgreSQL (uid 999) could not write it. It must run as root for chown, with
# CAP_CHOWN alone (every other capability dropped, no escalation), and touches only
# the mount point itself, never what lies below it. It runs the image the cluster
# admin chose (--host-path-init-image), never the tenant's spec.database.image: a
# root process of the tenant's choosing must not run on a node's directory.
OWN_DATA_SCRIPT = f"""\
set -eu
if [ "$(stat -c %u:%g {DATA_MOUNT})" != "{POSTGRES_UID}:{POSTGRES_UID}" ]; then
    chown {POSTGRES_UID}:{POSTGRES_UID} {DATA_MOUNT}
    echo "own-data: {DATA_MOUNT} now belongs to uid {POSTGRES_UID}"
fi
"""


def build_own_data_container(resource: BlacklistService, image: str) -> dict[str, Any]:
    """The init container, in the admin's ``image``, that hands a hostPath directory to uid 999."""
    return {
        "name": "own-data",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", OWN_DATA_SCRIPT],
        "resources": resource_requirements(resource.spec.database.resources),
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        },
        "volumeMounts": [{"name": "data", "mountPath": DATA_MOUNT}],
    }


def build_database_deployment(
    resource: BlacklistService,
    credentials: str | None = None,
    host_path_init_image: str = DEFAULT_HOST_PATH_INIT_IMAGE,
) -> dict[str, Any]:
    """The PostgreSQL Deployment ``N-postgres``: one replica, recreated rather than rolled.

    ``credentials`` (the uid of Secret ``N-db``) marks the pod template: a recreated
    Secret restarts the database, whose init container then applies its password.
    ``host_path_init_image`` runs ``own-data`` (hostPath storage only).
    """
    settings = database_settings_name(resource)
    database = resource.spec.database
    pg_isready = ["sh", "-c", 'exec pg_isready -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"']
    container = {
        "name": "postgres",
        "image": database.image,
        "imagePullPolicy": resource.spec.image_pull_policy,
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT, "protocol": "TCP"}],
        "env": [
            {
                "name": "POSTGRES_DB",
                "valueFrom": {"configMapKeyRef": {"name": settings, "key": "database"}},
            },
            _secret_key("POSTGRES_USER", settings, "username"),
            _secret_key("POSTGRES_PASSWORD", settings, "password"),
            {"name": "PGDATA", "value": PGDATA},
        ],
        "readinessProbe": {
            "exec": {"command": pg_isready},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "exec": {"command": pg_isready},
            "initialDelaySeconds": 30,
            "periodSeconds": 15,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": resource_requirements(database.resources),
        # PostgreSQL writes only to PGDATA, its socket directory and /tmp: with those
        # on volumes the root filesystem can be read-only.
        "securityContext": container_security_context(read_only_root=True),
        "volumeMounts": _database_mounts(),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(resource, database_name(resource), COMPONENT_DATABASE),
        "spec": {
            "replicas": 1,
            # Two pods must never share one data directory: stop the old one first.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(resource, COMPONENT_DATABASE)},
            "template": {
                "metadata": pod_metadata(resource, COMPONENT_DATABASE, credentials),
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(POSTGRES_UID),
                    "initContainers": [
                        *(
                            [build_own_data_container(resource, host_path_init_image)]
                            if database.storage.host_path is not None
                            else []
                        ),
                        build_set_password_container(resource),
                    ],
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "data",
                            "persistentVolumeClaim": {"claimName": database_name(resource)},
                        },
                        {"name": "run", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def build_database_service(resource: BlacklistService) -> dict[str, Any]:
    """The ClusterIP Service ``N-postgres`` on 5432, not exposed outside the cluster."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(resource, database_name(resource), COMPONENT_DATABASE),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(resource, COMPONENT_DATABASE),
            "ports": [
                {
                    "name": "postgres",
                    "port": POSTGRES_PORT,
                    "targetPort": "postgres",
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_database_network_policy(
    resource: BlacklistService, operator_namespace: str | None = None
) -> dict[str, Any]:
    """Admit only the service's pods, the backup's and the operator's pods to PostgreSQL.

    The operator's pods only from ``operator_namespace``, its own: a label is all
    another team would need to pass for the operator. An operator that runs
    outside the cluster (no namespace) is no pod, so no pod is admitted in its name.
    The pods of CronJob ``N-backup`` only while ``spec.database.backup`` asks for them.
    """
    sources: list[dict[str, Any]] = [
        {"podSelector": {"matchLabels": selector_labels(resource, COMPONENT_SERVICE)}}
    ]
    if resource.spec.database.backup is not None:
        sources.append(
            {"podSelector": {"matchLabels": selector_labels(resource, COMPONENT_BACKUP)}}
        )
    if operator_namespace is not None:
        sources.append(
            {
                # The operator syncs the ban list from the ledger.
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": operator_namespace}
                },
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": OPERATOR_APP_NAME}},
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(resource, database_name(resource), COMPONENT_DATABASE),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(resource, COMPONENT_DATABASE)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": sources,
                    "ports": [{"protocol": "TCP", "port": POSTGRES_PORT}],
                }
            ],
        },
    }
