"""Pure builders: a parsed BlacklistService in, plain ``dict`` manifests out; no I/O.

Every manifest carries explicit ``apiVersion``/``kind``, deterministic names
derived from the parent and the standard labels, so it can be server-side
applied as is.
"""

from blacklist_operator.builders.banlist import build_banlist_head, build_banlist_part
from blacklist_operator.builders.children import absent_children, build_children, child_key
from blacklist_operator.builders.credentials import build_database_secret
from blacklist_operator.builders.database import (
    build_database_configmap,
    build_database_deployment,
    build_database_network_policy,
    build_database_service,
)
from blacklist_operator.builders.drift import contains
from blacklist_operator.builders.rbac import build_role, build_role_binding, build_service_account
from blacklist_operator.builders.service import build_service, build_service_deployment
from blacklist_operator.builders.status import build_condition, merge_condition
from blacklist_operator.builders.storage import (
    build_persistent_volume,
    build_persistent_volume_claim,
)

__all__ = [
    "absent_children",
    "build_banlist_head",
    "build_banlist_part",
    "build_children",
    "build_condition",
    "build_database_configmap",
    "build_database_deployment",
    "build_database_network_policy",
    "build_database_secret",
    "build_database_service",
    "build_persistent_volume",
    "build_persistent_volume_claim",
    "build_role",
    "build_role_binding",
    "build_service",
    "build_service_account",
    "build_service_deployment",
    "child_key",
    "contains",
    "merge_condition",
]
