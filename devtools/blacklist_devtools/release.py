"""``make release VERSION=x.y.z``: the images and the chart, published to an OCI registry.

``python -m blacklist_devtools.release --version X.Y.Z [--registry HOST[:PORT]] [--tag-git]``

1. refuses a version that is not semantic, a dirty git tree (``--allow-dirty`` for
   tests), a CHANGELOG without a ``## [X.Y.Z]`` section, and a version whose chart
   the registry already has (a release is never overwritten);
2. builds what changed (``hack/images.sh build``), then gives the service and the
   operator image their OCI labels (``org.opencontainers.image.version``,
   ``.revision``, ``.source``) on a copy made with ``buildah bud`` from a
   two-line Containerfile — labels only, so the layers are the built ones — and
   pushes them as ``REGISTRY/flask-blacklist-svc:X.Y.Z`` and
   ``REGISTRY/blacklist-operator:X.Y.Z``, recording their digests. The labels are
   applied here rather than as build arguments of the Dockerfiles, because a
   revision that changes with every commit would make ``make images`` rebuild
   every time;
3. writes an SPDX SBOM of each pushed image with syft (built from Go modules on
   first use, ``hack/toolchain.sh syft``) into ``.local/release/X.Y.Z/``;
4. packages a copy of ``chart/`` with ``version`` = ``appVersion`` = X.Y.Z, the
   operator image by digest and ``defaults.serviceImage`` the service image by
   digest, and pushes it to ``oci://REGISTRY/charts``;
5. with ``--tag-git``, tags the commit ``vX.Y.Z`` (annotated), and prints the
   ``helm install`` of the published chart.

``.local/release/X.Y.Z/release.json`` records it all. ``make demo`` publishes this
tree the same way as the development version ``APPVERSION-dev`` (:func:`dev_options`:
no CHANGELOG section, uncommitted changes allowed, republished at every run, no
SBOM) and installs it from the registry as users do. A registry on the loopback
(the test bed's, ``localhost:5050``, started here when it is not running) is
spoken to in plain HTTP; any other with TLS, with the credentials of ``helm
registry login`` and ``buildah login``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from blacklist_devtools import registry as local_registry
from blacklist_devtools.cluster import binary
from blacklist_devtools.release_metadata import (
    ReleaseError,
    changelog_has_section,
    check_version,
    install_command,
    labelled_containerfile,
    oci_labels,
    plain_http,
    release_chart_yaml,
    release_values_yaml,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_DIR = REPO_ROOT / ".local"
RELEASES = LOCAL_DIR / "release"
IMAGES_DIR = LOCAL_DIR / "images"
CHART_NAME = "blacklist-operator"
# The published image names, and the kind hack/images.sh prints each image's id under.
IMAGE_NAMES = {"service": "flask-blacklist-svc", "operator": "blacklist-operator"}


@dataclass(frozen=True)
class Options:
    """What ``make release`` was asked to do."""

    version: str
    registry: str
    source: str
    changelog: Path
    allow_dirty: bool = False
    tag_git: bool = False
    sbom: bool = True
    # A development snapshot: no CHANGELOG section needed, and published over the previous one.
    snapshot: bool = False


@dataclass
class Released:
    """What a release published; written to ``.local/release/VERSION/release.json``."""

    version: str
    registry: str
    revision: str
    # The local image each published one was labelled from (hack/images.sh's build).
    built: dict[str, str] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    chart: str = ""
    chart_digest: str = ""
    sboms: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    git_tag: str = ""
    install: str = ""


def log(message: str) -> None:
    """Progress line on stderr."""
    print(f"[release] {message}", file=sys.stderr, flush=True)


def run(
    *command: str, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; raise :class:`ReleaseError` with its stderr when it fails."""
    completed = subprocess.run(
        command, capture_output=True, text=True, check=False, env=env, cwd=cwd
    )
    if completed.returncode != 0:
        tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-20:])
        raise ReleaseError(f"{' '.join(command)} failed:\n{tail}")
    return completed


def git(*arguments: str) -> str:
    """A git command in the repository; its stdout, stripped."""
    return run("git", *arguments).stdout.strip()


def default_source() -> str:
    """The URL of the repository (``origin``), or nothing when there is none."""
    completed = subprocess.run(
        ["git", "remote", "get-url", "origin"],
        capture_output=True, text=True, check=False, cwd=REPO_ROOT,
    )  # fmt: skip
    return completed.stdout.strip() if completed.returncode == 0 else ""


def check(options: Options) -> str:
    """Everything that can refuse the release before anything is built; the revision."""
    check_version(options.version)
    if options.snapshot and not options.allow_dirty:
        raise ReleaseError("a development snapshot is built from the working tree: allow_dirty")
    if not options.source:
        raise ReleaseError(
            "the repository has no `origin` remote: say where its source lives with "
            "SOURCE=https://... (the images' org.opencontainers.image.source)"
        )
    if not options.snapshot and not changelog_has_section(
        options.changelog.read_text(), options.version
    ):
        raise ReleaseError(
            f"{options.changelog.name} has no `## [{options.version}]` section: move the "
            "Unreleased entries under it first"
        )
    revision = git("rev-parse", "HEAD")
    if git("status", "--porcelain"):
        if not options.allow_dirty:
            raise ReleaseError(
                "the git tree has uncommitted changes: a release is built from a commit "
                "(ALLOW_DIRTY=1 to build one anyway, labelled <commit>-dirty)"
            )
        revision += "-dirty"
    if options.tag_git and git("tag", "--list", f"v{options.version}"):
        raise ReleaseError(f"the git tag v{options.version} exists already")
    return revision


def chart_reference(options: Options) -> str:
    """``oci://REGISTRY/charts/blacklist-operator``."""
    return f"oci://{options.registry}/charts/{CHART_NAME}"


def helm_registry_flags(options: Options) -> list[str]:
    """``--plain-http`` for a registry on the loopback."""
    return ["--plain-http"] if plain_http(options.registry) else []


def refuse_existing_release(options: Options, helm: str) -> None:
    """A version is published once: refuse when the registry has its chart already."""
    completed = subprocess.run(
        [helm, "show", "chart", chart_reference(options), "--version", options.version,
         *helm_registry_flags(options)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if completed.returncode == 0:
        raise ReleaseError(
            f"{chart_reference(options)} {options.version} is published already: "
            "a release is never overwritten, choose the next version"
        )


def build_images() -> dict[str, str]:
    """``hack/images.sh build``: the ids of the service and operator images of this tree."""
    completed = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "images.sh"), "build"],
        stdout=subprocess.PIPE, text=True, check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        raise ReleaseError("hack/images.sh build failed (its output is above)")
    ids = dict(line.split(" ", 1) for line in completed.stdout.strip().splitlines())
    if set(ids) != set(IMAGE_NAMES) or not all(len(i) == len("sha256:") + 64 for i in ids.values()):
        raise ReleaseError(f"hack/images.sh build printed no image ids: {completed.stdout!r}")
    return ids


def containers_env() -> dict[str, str]:
    """The environment of buildah: hack/images.sh's configuration and image store."""
    return {
        **os.environ,
        "CONTAINERS_CONF": str(IMAGES_DIR / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(IMAGES_DIR / "storage.conf"),
    }


def publish_image(
    options: Options, image_id: str, name: str, labels: dict[str, str], work: Path
) -> str:
    """Label a copy of the image, push it as ``REGISTRY/NAME:VERSION``; its digest reference.

    The copy's creation time is the commit's (as SOURCE_DATE_EPOCH would make it), so the
    same image, version and commit always give the same digest, a release run again too.
    """
    env = containers_env()
    context = work / f"label-{name}"
    context.mkdir()
    (context / "Containerfile").write_text(
        labelled_containerfile(image_id.removeprefix("sha256:"), labels)
    )
    local = f"localhost/release/{name}:{options.version}"
    target = f"{options.registry}/{name}:{options.version}"
    digest_file = work / f"{name}.digest"
    insecure = plain_http(options.registry)
    run(
        "buildah", "bud", "--quiet", "--pull=never", "--layers", "--tag", local,
        "--timestamp", git("log", "-1", "--format=%ct"),
        "--file", str(context / "Containerfile"), str(context), env=env,
    )  # fmt: skip
    try:
        run(
            "buildah", "push", "--quiet", "--digestfile", str(digest_file),
            # On the loopback, layers go uncompressed, as hack/images.sh pushes them: those the
            # registry has from `make images` are not sent again.
            *(["--tls-verify=false", "--disable-compression"] if insecure else []),
            local, f"docker://{target}", env=env,
        )  # fmt: skip
    finally:
        run("buildah", "rmi", local, env=env)
    return f"{target}@{digest_file.read_text().strip()}"


def write_sbom(options: Options, reference: str, name: str, directory: Path) -> Path:
    """The SPDX JSON SBOM of the pushed image ``reference``, by syft."""
    if not (LOCAL_DIR / "bin" / "syft").exists():
        log("building syft from Go modules (once; about 3 minutes on 2 cores)")
        run("bash", str(REPO_ROOT / "hack" / "toolchain.sh"), "syft")
    path = directory / f"{name}.spdx.json"
    env = {
        **os.environ,
        "SYFT_CHECK_FOR_APP_UPDATE": "false",
        "SYFT_REGISTRY_INSECURE_USE_HTTP": "true" if plain_http(options.registry) else "false",
    }
    run(binary("syft"), "scan", f"registry:{reference}", "--quiet", "-o", f"spdx-json={path}",
        env=env)  # fmt: skip
    return path


def publish_chart(
    options: Options, helm: str, images: dict[str, str], work: Path, directory: Path
) -> str:
    """Package a copy of ``chart/`` for the release and push it; the chart's digest."""
    chart = work / CHART_NAME
    shutil.copytree(REPO_ROOT / "chart", chart)
    chart_yaml = chart / "Chart.yaml"
    chart_yaml.write_text(release_chart_yaml(chart_yaml.read_text(), options.version))
    operator, _, operator_digest = images["operator"].partition("@")
    values = chart / "values.yaml"
    values.write_text(
        release_values_yaml(
            values.read_text(), operator.rpartition(":")[0], operator_digest, images["service"]
        )
    )
    run(helm, "lint", "--strict", str(chart))
    run(helm, "package", str(chart), "--destination", str(directory))
    package = directory / f"{CHART_NAME}-{options.version}.tgz"
    pushed = run(
        helm, "push", str(package), f"oci://{options.registry}/charts",
        *helm_registry_flags(options),
    )  # fmt: skip
    for line in (pushed.stdout + pushed.stderr).splitlines():
        if line.startswith("Digest:"):
            return line.split(":", 1)[1].strip()
    raise ReleaseError(f"helm push printed no digest: {pushed.stderr.strip()}")


def release(options: Options) -> Released:
    """Publish the release; see the module's docstring for the steps."""
    revision = check(options)
    helm = binary("helm")
    if options.registry == local_registry.address():
        local_registry.up()
    if not options.snapshot:
        refuse_existing_release(options, helm)
    released = Released(version=options.version, registry=options.registry, revision=revision)
    directory = RELEASES / options.version
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    ids = released.built = build_images()
    released.seconds["build"] = round(time.monotonic() - started, 1)
    labels = oci_labels(options.version, revision, options.source)
    with tempfile.TemporaryDirectory(prefix="release-") as scratch:
        work = Path(scratch)
        started = time.monotonic()
        for kind, name in IMAGE_NAMES.items():
            released.images[kind] = publish_image(options, ids[kind], name, labels, work)
            log(f"pushed {released.images[kind]}")
        released.seconds["push_images"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        for kind, name in IMAGE_NAMES.items() if options.sbom else ():
            sbom = write_sbom(options, released.images[kind], name, directory)
            released.sboms[kind] = str(sbom)
            log(f"SBOM of {name}: {sbom}")
        released.seconds["sbom"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        released.chart_digest = publish_chart(options, helm, released.images, work, directory)
        released.seconds["chart"] = round(time.monotonic() - started, 1)
    released.chart = f"{chart_reference(options)}:{options.version}@{released.chart_digest}"
    log(f"pushed {released.chart}")
    if options.tag_git:
        released.git_tag = f"v{options.version}"
        git("tag", "--annotate", released.git_tag, "--message",
            f"blacklist-operator {options.version}", revision.removesuffix("-dirty"))  # fmt: skip
        log(f"tagged {released.git_tag}; publish it with git push origin {released.git_tag}")
    released.install = install_command(
        options.registry, options.version, plain_http(options.registry)
    )
    (directory / "release.json").write_text(json.dumps(asdict(released), indent=2) + "\n")
    return released


def dev_options(registry: str) -> Options:
    """The development snapshot of this tree, ``APPVERSION-dev``, as ``make demo`` publishes it."""
    chart = yaml.safe_load((REPO_ROOT / "chart" / "Chart.yaml").read_text())
    return Options(
        version=f"{chart['appVersion']}-dev",
        registry=registry,
        source=default_source() or REPO_ROOT.as_uri(),
        changelog=REPO_ROOT / "CHANGELOG.md",
        allow_dirty=True,
        sbom=False,
        snapshot=True,
    )


def main(argv: list[str] | None = None) -> int:
    """Command line of ``make release``."""
    parser = argparse.ArgumentParser(prog="python -m blacklist_devtools.release")
    parser.add_argument("--version", required=True, help="the release's semantic version")
    parser.add_argument("--registry", default=local_registry.address(),
                        help="HOST[:PORT] to push to (default: the test bed's)")  # fmt: skip
    parser.add_argument("--source", default=default_source(),
                        help="the repository's URL (default: git remote origin)")  # fmt: skip
    parser.add_argument("--changelog", type=Path, default=REPO_ROOT / "CHANGELOG.md",
                        help="the file that must have a `## [VERSION]` section")  # fmt: skip
    parser.add_argument("--allow-dirty", action="store_true",
                        help="release uncommitted changes (labelled <commit>-dirty)")  # fmt: skip
    parser.add_argument("--tag-git", action="store_true", help="tag the commit vVERSION")
    arguments = parser.parse_args(argv)
    options = Options(
        version=arguments.version,
        registry=arguments.registry,
        source=arguments.source,
        changelog=arguments.changelog,
        allow_dirty=arguments.allow_dirty,
        tag_git=arguments.tag_git,
    )
    try:
        released = release(options)
    except ReleaseError as error:
        print(f"release: {error}", file=sys.stderr)
        return 1
    print(
        f"Released blacklist-operator {released.version} (revision {released.revision}):\n"
        f"  service image   {released.images['service']}\n"
        f"  operator image  {released.images['operator']}\n"
        f"  chart           {released.chart}\n"
        f"  SBOMs           {', '.join(released.sboms.values()) or 'none'}\n"
        f"  record          {RELEASES / released.version / 'release.json'}\n\n"
        f"Install it:\n  {released.install}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
