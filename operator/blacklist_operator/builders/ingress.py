"""The optional Ingress in front of the service's Service."""

from __future__ import annotations

from typing import Any

from blacklist_operator.builders.naming import COMPONENT_SERVICE, metadata, service_name
from blacklist_operator.model.resource import BlacklistService


def build_ingress(resource: BlacklistService) -> dict[str, Any] | None:
    """The Ingress ``N`` to Service ``N``, or None without ``spec.ingress``."""
    ingress = resource.spec.ingress
    if ingress is None:
        return None
    backend = {"service": {"name": service_name(resource), "port": {"number": resource.spec.port}}}
    spec: dict[str, Any] = {
        "rules": [
            {
                "host": ingress.host,
                "http": {
                    "paths": [{"path": ingress.path, "pathType": "Prefix", "backend": backend}]
                },
            }
        ]
    }
    if ingress.class_name is not None:
        spec["ingressClassName"] = ingress.class_name
    if ingress.tls_secret_name is not None:
        spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata(resource, service_name(resource), COMPONENT_SERVICE),
        "spec": spec,
    }
