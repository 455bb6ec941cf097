"""The optional Ingress in front of the service's Service."""

from __future__ import annotations

from typing import Any

from blacklist_operator.builders.naming import COMPONENT_SERVICE, metadata, service_name
from blacklist_operator.model.resource import BlacklistService


def build_ingress(bls: BlacklistService) -> dict[str, Any] | None:
    """The Ingress ``N`` to Service ``N``, or None without ``spec.ingress``."""
    ingress = bls.spec.ingress
    if ingress is None:
        return None
    backend = {"service": {"name": service_name(bls), "port": {"number": bls.spec.port}}}
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
        "metadata": metadata(bls, service_name(bls), COMPONENT_SERVICE),
        "spec": spec,
    }
