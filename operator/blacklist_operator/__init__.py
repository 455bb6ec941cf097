"""blacklist-operator: a kopf operator that runs BlacklistService resources.

The package is a folder per layer (an import-linter contract in ``.importlinter``
holds the order): ``controller`` (the kopf wiring and the loops) → ``reconcile`` |
``banlist.sync`` (a resource's children | its ban list) → ``runtime`` (what the
process shares) → ``kube`` (the only caller of the Kubernetes API) | ``kopf_compat``
→ ``builders`` | ``banlist.core`` (pure) → ``model`` (the typed spec).
docs/operator.md maps every module.
"""

GROUP = "blacklist.dev"
VERSION = "v1"
PLURAL = "blacklistservices"
KIND = "BlacklistService"
API_VERSION = f"{GROUP}/{VERSION}"

# Every object we apply is owned by this field manager, so server-side apply
# can tell our fields from those of users and other controllers.
FIELD_MANAGER = "blacklist-operator"
