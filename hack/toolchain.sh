#!/usr/bin/env bash
# Builds the Kubernetes toolchain (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok, helm) from Go modules through the Go
# module proxy, caches each component outside the repository under a directory
# keyed by its version, and links the binaries into .local/bin/.
#
# A component is built in a scratch directory and moved into the cache only
# when every binary of it built, so a failed or interrupted build never leaves
# an entry that a later run would trust.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-3.6.14}"
KWOK_VERSION="${KWOK_VERSION:-0.8.0}"
HELM_VERSION="${HELM_VERSION:-3.21.4}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${BLACKLIST_TOOLCHAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blacklist-operator/toolchain}"
LINKS="$ROOT/.local/bin"

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

log() { printf '[toolchain %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'toolchain: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "go is missing: install Go >= 1.26 (https://go.dev/doc/install) and put it on PATH"
GO_MINOR="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
[ "$GO_MINOR" -ge 26 ] || die "Go $(go env GOVERSION) is too old: Kubernetes $K8S_VERSION needs Go >= 1.26"

# build_component NAME VERSION FUNCTION: runs FUNCTION in a scratch dir whose
# bin/ becomes $CACHE/NAME-vVERSION/bin once FUNCTION succeeds.
build_component() {
  local name="$1" version="$2" builder="$3"
  local target="$CACHE/$name-v$version"
  if [ -f "$target/.complete" ]; then
    return 0
  fi
  mkdir -p "$CACHE"
  local scratch
  scratch="$(mktemp -d "$CACHE/.build-$name-XXXXXX")"
  log "building $name v$version (cold builds take minutes; cached in $target)"
  local started=$SECONDS
  if ! (cd "$scratch" && "$builder" "$version"); then
    rm -rf "$scratch"
    die "building $name v$version failed; nothing was cached"
  fi
  rm -rf "$target"
  mkdir -p "$target"
  mv "$scratch/bin" "$target/bin"
  rm -rf "$scratch"
  touch "$target/.complete"
  log "built $name v$version in $((SECONDS - started)) s"
}

build_kubernetes() {
  local version="$1" staging="v0.${1#1.}" minor
  minor="$(echo "$version" | cut -d. -f2)"
  printf 'module local/k8s-build\n\ngo 1.26.0\n' > go.mod
  local gomod modules
  gomod="$(go mod download -json "k8s.io/kubernetes@v$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  # The staging modules are replaced by directories in k8s.io/kubernetes' own
  # go.mod; pin each to its published tag instead.
  modules="$(go mod edit -json "$gomod" | python3 -c '
import json, sys
for replace in json.load(sys.stdin).get("Replace") or []:
    if replace["New"]["Path"].startswith("./staging/"):
        print(replace["Old"]["Path"])')"
  for module in $modules; do
    go mod edit -replace="$module=$module@$staging"
  done
  go mod edit -require="k8s.io/kubernetes@v$version"
  local ldflags="-s -w" package
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $package.gitVersion=v$version -X $package.gitMajor=1 -X $package.gitMinor=$minor"
    ldflags="$ldflags -X $package.gitTreeState=clean -X $package.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p bin
  go build -trimpath -pgo=off -tags selinux,notest -ldflags "$ldflags" -o bin/ \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
}

build_etcd() {
  local version="$1"
  go mod init local/etcd-build >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@v$version"
  mkdir -p bin
  go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v$version" -o bin/etcd go.etcd.io/etcd/server/v3
}

build_kwok() {
  local version="$1"
  GOBIN="$PWD/bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$version"
  # The kwok stages (what kwok does to nodes and pods) ship in its module.
  local moddir
  moddir="$(go list -m -json "sigs.k8s.io/kwok@v$version" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')" || true
  [ -n "$moddir" ] || moddir="$(go env GOMODCACHE)/sigs.k8s.io/kwok@v$version"
  mkdir -p bin/stages
  cp "$moddir/kustomize/stage/node/fast/node-initialize.yaml" \
     "$moddir/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
     "$moddir/kustomize/stage/pod/fast/pod-ready.yaml" \
     "$moddir/kustomize/stage/pod/fast/pod-complete.yaml" \
     "$moddir/kustomize/stage/pod/fast/pod-delete.yaml" bin/stages/
  chmod u+w bin/stages/*
}

build_helm() {
  local version="$1" major="${1%%.*}" minor
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  local module="helm.sh/helm/v$major"
  local ldflags="-s -w -X $module/internal/version.version=v$version -X $module/internal/version.gitTreeState=clean"
  ldflags="$ldflags -X $module/pkg/chartutil.k8sVersionMajor=1 -X $module/pkg/chartutil.k8sVersionMinor=$minor"
  ldflags="$ldflags -X $module/pkg/lint/rules.k8sVersionMajor=1 -X $module/pkg/lint/rules.k8sVersionMinor=$minor"
  GOBIN="$PWD/bin" go install -trimpath -ldflags "$ldflags" "$module/cmd/helm@v$version"
}

build_component kubernetes "$K8S_VERSION" build_kubernetes
build_component etcd "$ETCD_VERSION" build_etcd
build_component kwok "$KWOK_VERSION" build_kwok
build_component helm "$HELM_VERSION" build_helm

mkdir -p "$LINKS"
link() { ln -sfn "$1" "$LINKS/$(basename "$1")"; }
for binary in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  link "$CACHE/kubernetes-v$K8S_VERSION/bin/$binary"
done
link "$CACHE/etcd-v$ETCD_VERSION/bin/etcd"
link "$CACHE/kwok-v$KWOK_VERSION/bin/kwok"
ln -sfn "$CACHE/kwok-v$KWOK_VERSION/bin/stages" "$ROOT/.local/kwok-stages"
link "$CACHE/helm-v$HELM_VERSION/bin/helm"
log "toolchain ready in $LINKS (kubernetes v$K8S_VERSION, etcd v$ETCD_VERSION, kwok v$KWOK_VERSION, helm v$HELM_VERSION)"
