#!/usr/bin/env bash
# Builds the product's container images on this machine and pushes them to the test bed's OCI
# registry (blacklist_devtools.registry, started here when it is not running), from which the
# node's containerd pulls them, as any cluster pulls its images:
#
#   flask-blacklist-svc:v1      Dockerfile.service
#   blacklist-operator:v1       Dockerfile.operator (also tagged with the chart's appVersion,
#                               the tag the chart deploys by default)
#   blacklist-postgres:15       images/postgres/: Debian's PostgreSQL 15 behind our entrypoint
#   pause:3.10                  images/pause/: the pod sandbox image, a static C program
#
# Why build everything: nothing can be pulled here, not even the official base images. So the
# bases are made here too: debian:bookworm-slim with mmdebstrap, and on it images/python/, a
# stand-in for python:3.11-slim-bookworm with Debian's Python 3.11. Both are tagged under
# localhost/, where `buildah bud --pull=never` resolves the Dockerfiles' short names; the
# Dockerfiles themselves stay valid for a Docker build on the official images.
#
# It is idempotent and cheap when nothing changed: every image carries a label with a hash of
# its inputs (Dockerfile, sources, lock file, base image) and is rebuilt only when that hash
# changes; the image store (~/.cache/blacklist-operator/images) survives between runs, so a
# rebuild reuses the unchanged layers, and a push sends only the layers the registry lacks.
# .local/images/images.json records each image as the node pulls it, by digest
# (localhost:5050/flask-blacklist-svc:v1@sha256:...), so a pod runs what was built last
# whatever the node cached. buildah and podman are configured through files under
# .local/images/ (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF); no global configuration is
# changed. pip reaches PyPI during a build through the host's CA bundle, mounted as a build
# secret for the pip install steps only: no image keeps it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/.local/images
# The image store lives outside the repository, like the toolchain: its overlay mounts would
# stop `rm -rf .local`, and it is worth keeping across `make clean` (cached layers, bases).
STORE=${BLACKLIST_IMAGE_STORE:-${XDG_CACHE_HOME:-$HOME/.cache}/blacklist-operator/images}
LABEL=dev.blacklist.inputs
PACKAGES=(buildah podman mmdebstrap runc fuse-overlayfs uidmap gcc libc6-dev)

SERVICE=flask-blacklist-svc:v1
OPERATOR=blacklist-operator:v1
POSTGRES=blacklist-postgres:15
PAUSE=registry.k8s.io/pause:3.10
DEBIAN_BASE=localhost/debian:bookworm-slim
PYTHON_BASE=localhost/python:3.11-slim-bookworm
# The chart deploys blacklist-operator:<its appVersion> unless told otherwise.
OPERATOR_CHART=${OPERATOR%%:*}:$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' \
    "$ROOT/chart/Chart.yaml")

# The Debian sources this machine's apt uses: mmdebstrap reads .list and .sources files.
DEBIAN_SOURCES=()
for source in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    if [ -s "$source" ]; then
        DEBIAN_SOURCES+=("$source")
    fi
done
# A minbase root like the official debian:bookworm-slim: merged /usr without the usrmerge
# package (which would pull in perl), no documentation or translations (kept out of later
# installs too), no recommended packages, no device nodes, no apt lists (mmdebstrap's cleanup).
MMDEBSTRAP_OPTIONS=(
    --variant=minbase --mode=root --format=tar --skip=output/dev
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --aptopt='APT::Install-Recommends "false"'
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/locale/locale.alias'
)

log() { printf 'images: %s\n' "$*" >&2; }

ensure_packages() {
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' \
            || missing+=("$package")
    done
    ((${#missing[@]} == 0)) && return
    if ((EUID != 0)); then
        log "missing Debian packages: ${missing[*]}; install them as root (apt-get install)"
        exit 1
    fi
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The lower of a limit and a cap ("unlimited" is no limit).
at_most() {
    if [[ $1 == unlimited ]] || (($1 > $2)); then echo "$2"; else echo "$1"; fi
}

# buildah and podman read their settings from these files only through the environment,
# so the machine's own configuration stays untouched. Processes here may not raise an rlimit
# (setrlimit is refused), so a container's limits must not exceed those its engine has: this
# shell's, except that buildah and podman set their own RLIMIT_NPROC to 32768 as they start.
configure_containers() {
    local nofile nproc
    nofile=$(at_most "$(ulimit -Sn)" 1048576):$(at_most "$(ulimit -Hn)" 1048576)
    nproc=$(at_most "$(ulimit -Su)" 32768):$(at_most "$(ulimit -Hu)" 32768)
    mkdir -p "$OUT/work" "$OUT/logs" "$STORE/storage" "$STORE/run"
    cat >"$OUT/containers.conf" <<EOF
# Written by hack/images.sh for its own buildah and podman; not a global setting.
[containers]
default_ulimits = ["nofile=$nofile", "nproc=$nproc"]

[engine]
# crun refuses this machine's hybrid cgroup layout; there is no systemd to manage cgroups.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    cat >"$OUT/storage.conf" <<EOF
# Written by hack/images.sh: the image store of the local builds, kept between runs.
[storage]
driver = "overlay"
graphroot = "$STORE/storage"
runroot = "$STORE/run"
EOF
    export CONTAINERS_CONF=$OUT/containers.conf
    export CONTAINERS_STORAGE_CONF=$OUT/storage.conf
}

# A hash of the text on stdin and of the contents of the given files and directories.
inputs_hash() {
    {
        cat
        if (($# > 0)); then
            (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
                | LC_ALL=C sort -z | xargs -0 sha256sum)
        fi
    } | sha256sum | cut -d' ' -f1
}

# run LOG COMMAND...: the command's output goes to LOG, and its tail to the terminal if it fails.
run() {
    local log=$1
    shift
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        log "failed: $* (whole output in ${log#"$ROOT"/})"
        return 1
    fi
}

image_field() {
    podman image inspect --format "$2" "$1" 2>/dev/null || true
}

image_id() {
    image_field "$1" '{{.Id}}'
}

up_to_date() {
    [[ $(image_field "$1" "{{index .Labels \"$LABEL\"}}") == "$2" ]]
}

build_debian_base() {
    local hash tarball previous
    hash=$( { printf '%s\n' "${MMDEBSTRAP_OPTIONS[@]}"; cat "${DEBIAN_SOURCES[@]}"; } | inputs_hash)
    if up_to_date "$DEBIAN_BASE" "$hash"; then
        log "$DEBIAN_BASE is up to date"
        return
    fi
    log "making $DEBIAN_BASE with mmdebstrap"
    previous=$(image_id "$DEBIAN_BASE")
    tarball=$OUT/work/debian-bookworm.tar
    run "$OUT/logs/debian-base.log" \
        mmdebstrap "${MMDEBSTRAP_OPTIONS[@]}" bookworm "$tarball" "${DEBIAN_SOURCES[@]}"
    podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        --change "LABEL $LABEL=$hash" \
        "$tarball" "$DEBIAN_BASE" >/dev/null
    rm -f "$tarball"
    [[ -z $previous ]] || podman rmi "$previous" >/dev/null 2>&1 || true
}

# build REFERENCE HASH DOCKERFILE CONTEXT [more buildah bud arguments...]
build() {
    local reference=$1 hash=$2 dockerfile=$3 context=$4 started=$SECONDS previous
    shift 4
    if up_to_date "$reference" "$hash"; then
        log "$reference is up to date"
        return
    fi
    log "building $reference from ${dockerfile#"$ROOT"/}"
    previous=$(image_id "$reference")
    run "$OUT/logs/$(basename "${reference%%:*}").log" \
        buildah bud --pull=never --network host --layers \
        --label "$LABEL=$hash" --file "$dockerfile" --tag "$reference" "$@" "$context"
    # The image this one replaces, and the layers only it used; not while something uses it.
    if [[ -n $previous && $previous != "$(image_id "$reference")" ]]; then
        podman rmi "$previous" >/dev/null 2>&1 || true
    fi
    log "built $reference in $((SECONDS - started)) s"
}

# The CA bundle pip must trust to reach PyPI from here; a build secret, mounted only for the
# pip install steps.
pip_ca_file() {
    local candidate
    for candidate in "${PIP_CERT:-}" "$(pip3 config get global.cert 2>/dev/null || true)" \
        "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}" /etc/ssl/certs/ca-certificates.crt; do
        if [[ -n $candidate && -f $candidate ]]; then
            readlink -f "$candidate"
            return
        fi
    done
}

build_product_images() {
    local ca hash pip_build_args=()
    ca=$(pip_ca_file)
    if [[ -n $ca ]]; then
        pip_build_args=(--secret "id=pip-ca,src=$ca" --build-arg PIP_CERT=/run/secrets/pip-ca)
    fi
    hash=$( (echo "$SERVICE"; image_id "$PYTHON_BASE") | inputs_hash \
        Dockerfile.service .dockerignore service contract requirements-service.lock)
    build "localhost/$SERVICE" "$hash" "$ROOT/Dockerfile.service" "$ROOT" \
        "${pip_build_args[@]}"

    hash=$( (echo "$OPERATOR $OPERATOR_CHART"; image_id "$PYTHON_BASE") | inputs_hash \
        Dockerfile.operator .dockerignore operator contract requirements-operator.lock)
    build "localhost/$OPERATOR" "$hash" "$ROOT/Dockerfile.operator" "$ROOT" \
        --tag "localhost/$OPERATOR_CHART" "${pip_build_args[@]}"

    hash=$( (echo "$POSTGRES"; image_id "$DEBIAN_BASE") | inputs_hash images/postgres)
    build "localhost/$POSTGRES" "$hash" "$ROOT/images/postgres/Dockerfile" "$ROOT/images/postgres"
}

build_pause_image() {
    local hash context=$OUT/work/pause
    hash=$(echo "$PAUSE" | inputs_hash images/pause)
    up_to_date "$PAUSE" "$hash" && { log "$PAUSE is up to date"; return; }
    rm -rf "$context"
    mkdir -p "$context"
    gcc -static -Os -s -Wall -Wextra -Werror -o "$context/pause" "$ROOT/images/pause/pause.c"
    build "$PAUSE" "$hash" "$ROOT/images/pause/Dockerfile" "$context"
    rm -rf "$context"
}

# push_image KIND REFERENCE: pushes the image to the test bed's registry as
# REGISTRY/REFERENCE (the name without its localhost/ or registry.k8s.io/ prefix), layers
# uncompressed (the registry is on this machine: no time goes into gzip, and a layer the
# registry has is never sent again), and records REGISTRY/NAME:TAG@DIGEST. The product's
# images also go to REGISTRY/library/NAME:TAG, where the node's containerd looks for a short
# name such as `flask-blacklist-svc:v1` (docker.io/library/...): the registry is the node's
# mirror of docker.io, as on an air-gapped cluster, so the chart's defaults run as they are.
push_image() {
    local kind=$1 local_ref=$2 name target digest_file
    name=${local_ref#localhost/}
    name=${name#registry.k8s.io/}
    target=$REGISTRY/$name
    digest_file=$OUT/work/$kind.digest
    run "$OUT/logs/push-$kind.log" \
        buildah push --quiet --disable-compression --tls-verify=false \
        --digestfile "$digest_file" "$local_ref" "docker://$target"
    PUSHED[$kind]="$target@$(<"$digest_file")"
    rm -f "$digest_file"
    if [[ $local_ref == localhost/* ]]; then
        run "$OUT/logs/push-$kind.log" \
            buildah push --quiet --disable-compression --tls-verify=false \
            "$local_ref" "docker://$REGISTRY/library/$name"
    fi
}

# images.json: each image as the node pulls it, REGISTRY/NAME:TAG@DIGEST.
write_manifest() {
    local manifest=$OUT/images.json
    cat >"$manifest.partial" <<EOF
{
  "registry": "$REGISTRY",
  "service": "${PUSHED[service]}",
  "operator": "${PUSHED[operator]}",
  "operator_chart": "${PUSHED[operator_chart]}",
  "postgres": "${PUSHED[postgres]}",
  "pause": "${PUSHED[pause]}",
  "ids": {
    "service": "sha256:$(image_id "localhost/$SERVICE")",
    "operator": "sha256:$(image_id "localhost/$OPERATOR")",
    "postgres": "sha256:$(image_id "localhost/$POSTGRES")",
    "pause": "sha256:$(image_id "$PAUSE")"
  }
}
EOF
    mv "$manifest.partial" "$manifest"
}

# `hack/images.sh build` (for `make release`): builds what changed, pushes nothing, leaves
# images.json as it is, and prints the product images' ids, `service sha256:...` and
# `operator sha256:...`, which stay valid whatever later builds tag under the same names.
main() {
    local started=$SECONDS hash mode=${1:-push}
    [[ $mode == push || $mode == build ]] || { log "usage: $0 [build]"; exit 2; }
    ensure_packages
    configure_containers
    # Two runs at once would race for the same tags and archives.
    exec 9>"$OUT/.lock"
    flock 9

    build_debian_base
    hash=$( (echo "$PYTHON_BASE"; image_id "$DEBIAN_BASE") | inputs_hash images/python)
    build "$PYTHON_BASE" "$hash" "$ROOT/images/python/Dockerfile" "$ROOT/images/python"
    build_product_images
    if [[ $mode == build ]]; then
        printf 'service sha256:%s\noperator sha256:%s\n' \
            "$(image_id "localhost/$SERVICE")" "$(image_id "localhost/$OPERATOR")"
        log "images built in $((SECONDS - started)) s (not pushed)"
        return
    fi
    build_pause_image

    REGISTRY=$("$ROOT/.venv/bin/python" -m blacklist_devtools.registry up)
    declare -gA PUSHED=()
    push_image service "localhost/$SERVICE"
    push_image operator "localhost/$OPERATOR"
    push_image operator_chart "localhost/$OPERATOR_CHART"
    push_image postgres "localhost/$POSTGRES"
    push_image pause "$PAUSE"
    write_manifest
    log "images ready in $((SECONDS - started)) s; see ${OUT#"$ROOT"/}/images.json"
}

main "$@"
