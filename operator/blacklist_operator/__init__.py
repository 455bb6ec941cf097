"""blacklist-operator: a kopf operator that runs BlacklistService resources.

The package is layered (an import-linter contract in ``.importlinter`` holds it):
``handlers`` (kopf) → ``reconcile`` / ``banlist`` (orchestration) → ``apply``
(the only module that talks to the Kubernetes API) → ``builders`` (pure
manifests) → ``model`` (the typed spec).
"""

GROUP = "blacklist.dev"
VERSION = "v1"
PLURAL = "blacklistservices"
KIND = "BlacklistService"
API_VERSION = f"{GROUP}/{VERSION}"

# Every object we apply is owned by this field manager, so server-side apply
# can tell our fields from those of users and other controllers.
FIELD_MANAGER = "blacklist-operator"
