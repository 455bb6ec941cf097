"""The Prometheus Operator's CRDs for tests: from the Go module proxy, cached outside the repo.

The tests install the real ``servicemonitors.monitoring.coreos.com`` CRD, not a
hand-written stand-in, and the repository holds no copy of it. The module zip of
a pinned release (it carries ``example/prometheus-operator-crd/``) is fetched
once through the Go module proxy, checked against its pinned SHA-256 and its
CRD files unpacked into a cache keyed by version, next to the toolchain's
(``hack/toolchain.sh``): ``~/.cache/blacklist-operator/prometheus-operator-vX``.
``python -m blacklist_devtools.prometheus_crds`` fetches it and prints the path.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import urllib.request
import zipfile
from pathlib import Path

VERSION = "v0.85.0"
MODULE = "github.com/prometheus-operator/prometheus-operator"
# The SHA-256 of the proxy's zip of MODULE at VERSION: a changed download is refused.
ZIP_SHA256 = "0bdb88ed823d0f2e86cf909638439b6ad1da744a228172c7411d9987527dc5d1"
# The plain CRDs (the "-full" directory holds the same with every description kept).
CRD_DIRECTORY = "example/prometheus-operator-crd"
DEFAULT_PROXY = "https://proxy.golang.org"
SERVICE_MONITORS = "servicemonitors"


def cache_directory() -> Path:
    """Where the CRDs of :data:`VERSION` are kept (``BLACKLIST_CRD_CACHE`` overrides the root)."""
    root = os.environ.get("BLACKLIST_CRD_CACHE")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(base) / "blacklist-operator")
    return Path(root) / f"prometheus-operator-{VERSION}"


def _proxy() -> str:
    """The first proxy of ``GOPROXY`` (as ``go`` would use it), else proxy.golang.org."""
    for entry in os.environ.get("GOPROXY", "").replace("|", ",").split(","):
        if entry.startswith(("https://", "http://")):
            return entry.rstrip("/")
    return DEFAULT_PROXY


def _download() -> bytes:
    url = f"{_proxy()}/{MODULE}/@v/{VERSION}.zip"
    with urllib.request.urlopen(url, timeout=120) as response:
        data: bytes = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != ZIP_SHA256:
        raise RuntimeError(f"{url}: SHA-256 {digest}, expected {ZIP_SHA256}")
    return data


def crd_path(plural: str = SERVICE_MONITORS) -> Path:
    """The CRD file of ``plural`` (``monitoring.coreos.com_<plural>.yaml``), fetched if missing.

    The files appear in the cache all at once (a rename of a complete directory),
    so an interrupted fetch leaves nothing a later run would trust.
    """
    target = cache_directory()
    wanted = target / f"monitoring.coreos.com_{plural}.yaml"
    if wanted.exists():
        return wanted
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{MODULE}@{VERSION}/{CRD_DIRECTORY}/"
    with (
        zipfile.ZipFile(io.BytesIO(_download())) as archive,
        tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as scratch,
    ):
        unpacked = Path(scratch) / "crds"
        unpacked.mkdir()
        for name in archive.namelist():
            if name.startswith(prefix) and name.endswith(".yaml"):
                (unpacked / name.removeprefix(prefix)).write_bytes(archive.read(name))
        try:
            unpacked.rename(target)
        except OSError:
            if not wanted.exists():  # Not another process that got there first.
                raise
    if not wanted.exists():
        raise FileNotFoundError(f"{MODULE}@{VERSION} has no CRD {wanted.name}")
    return wanted


if __name__ == "__main__":
    print(crd_path())
