"""Keys and certificates of the local control plane, made with the ``openssl`` command.

A private CA signs the API server's serving certificate, whose names cover
loopback and the in-cluster ``kubernetes.default.svc`` names, so clients verify
TLS instead of skipping it. A separate RSA key signs ServiceAccount tokens.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

API_SERVER_NAMES = (
    "IP:127.0.0.1",
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


def create_pki(directory: Path) -> None:
    """Write ca.crt/ca.key, apiserver.crt/apiserver.key and sa.key/sa.pub into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
        "-subj", "/CN=blacklist-local-ca",
        "-keyout", str(ca_key), "-out", str(ca_cert),
    )  # fmt: skip
    server_key, server_csr = directory / "apiserver.key", directory / "apiserver.csr"
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", "/CN=kube-apiserver",
        "-keyout", str(server_key), "-out", str(server_csr),
    )  # fmt: skip
    extensions = directory / "apiserver.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={','.join(API_SERVER_NAMES)}\n"
    )
    _openssl(
        "x509", "-req", "-sha256", "-days", "3650", "-in", str(server_csr),
        "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-extfile", str(extensions), "-out", str(directory / "apiserver.crt"),
    )  # fmt: skip
    _openssl("genrsa", "-out", str(directory / "sa.key"), "2048")
    _openssl("rsa", "-in", str(directory / "sa.key"), "-pubout", "-out", str(directory / "sa.pub"))
    for key in directory.glob("*.key"):
        key.chmod(0o600)
