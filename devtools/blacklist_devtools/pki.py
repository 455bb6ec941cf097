"""Keys and certificates of the local control plane, made with the ``openssl`` command.

A private CA signs the API server's serving certificate, whose names cover
loopback, the node's address and the in-cluster ``kubernetes.default.svc``
names, so clients verify TLS instead of skipping it; the kubelet's serving
certificate (the API server verifies it for logs, exec and port-forward); and
the client certificate the API server presents to the kubelet. A separate RSA
key signs ServiceAccount tokens.

:func:`create_server_pki` makes a CA and one serving certificate for any other
server a test runs with TLS (a PostgreSQL that a client verifies).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from blacklist_devtools.network import NODE_ADDRESS

API_SERVER_NAMES = (
    "IP:127.0.0.1",
    f"IP:{NODE_ADDRESS}",
    "IP:10.96.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


def _openssl(*arguments: str) -> None:
    if shutil.which("openssl") is None:
        raise FileNotFoundError("openssl is missing: install it with `apt-get install -y openssl`")
    subprocess.run(["openssl", *arguments], check=True, capture_output=True)


def _issue(directory: Path, name: str, subject: str, usage: str, names: tuple[str, ...]) -> None:
    """Write ``name``.crt/``name``.key, signed by the CA in ``directory``."""
    key, request = directory / f"{name}.key", directory / f"{name}.csr"
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", subject,
        "-keyout", str(key), "-out", str(request),
    )  # fmt: skip
    extensions = directory / f"{name}.ext"
    lines = [
        "basicConstraints=CA:FALSE",
        "keyUsage=digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if names:
        lines.append(f"subjectAltName={','.join(names)}")
    extensions.write_text("\n".join(lines) + "\n")
    _openssl(
        "x509", "-req", "-sha256", "-days", "3650", "-in", str(request),
        "-CA", str(directory / "ca.crt"), "-CAkey", str(directory / "ca.key"),
        "-CAcreateserial", "-extfile", str(extensions), "-out", str(directory / f"{name}.crt"),
    )  # fmt: skip


def _create_ca(directory: Path, common_name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
        "-subj", f"/CN={common_name}",
        "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.crt"),
    )  # fmt: skip


def create_server_pki(directory: Path, common_name: str, names: tuple[str, ...]) -> None:
    """Write a CA of its own (ca.crt/ca.key) and a serving certificate (server.crt/.key).

    ``names`` are the certificate's subjectAltNames (``IP:127.0.0.1``, ``DNS:db``): a
    client with ``sslmode=verify-full`` checks the host it dialled against them.
    """
    directory.mkdir(parents=True, exist_ok=True)
    _create_ca(directory, f"{common_name}-ca")
    _issue(directory, "server", f"/CN={common_name}", "serverAuth", names)
    for key in directory.glob("*.key"):
        key.chmod(0o600)


def create_pki(directory: Path, node_name: str, node_address: str) -> None:
    """Write the CA, the API server's and kubelet's certificates and the SA keys into ``directory``.

    Files: ca.crt/ca.key, apiserver.crt/.key (serving), kubelet.crt/.key (the
    kubelet's serving certificate for ``node_address``), apiserver-kubelet-client.crt/.key
    (the API server's client identity towards the kubelet) and sa.key/sa.pub.
    """
    directory.mkdir(parents=True, exist_ok=True)
    _create_ca(directory, "blacklist-local")
    _issue(directory, "apiserver", "/CN=kube-apiserver", "serverAuth", API_SERVER_NAMES)
    _issue(
        directory, "kubelet", f"/O=system:nodes/CN=system:node:{node_name}", "serverAuth",
        (f"IP:{node_address}", f"DNS:{node_name}"),
    )  # fmt: skip
    # system:masters: the kubelet's webhook authorizer lets the API server proxy
    # logs, exec and port-forward for any user that RBAC allowed.
    _issue(
        directory, "apiserver-kubelet-client",
        "/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth", (),
    )  # fmt: skip
    _openssl("genrsa", "-out", str(directory / "sa.key"), "2048")
    _openssl("rsa", "-in", str(directory / "sa.key"), "-pubout", "-out", str(directory / "sa.pub"))
    for key in directory.glob("*.key"):
        key.chmod(0o600)
