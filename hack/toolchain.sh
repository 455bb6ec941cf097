#!/usr/bin/env bash
# Builds the Kubernetes toolchain from Go modules through the Go module proxy:
# the control plane (kube-apiserver, kube-controller-manager, kube-scheduler,
# etcd), the node (kubelet, kube-proxy, containerd with its runc shim, crictl,
# CoreDNS, the NetworkPolicy engine), kubectl, helm, kwok and promtool, and the
# OCI registry the node pulls the product's images from. It caches
# each component outside the repository under a directory
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
CONTAINERD_VERSION="${CONTAINERD_VERSION:-2.2.9}"
CRICTL_VERSION="${CRICTL_VERSION:-1.37.0}"
COREDNS_VERSION="${COREDNS_VERSION:-1.14.7}"
NETWORK_POLICIES_VERSION="${NETWORK_POLICIES_VERSION:-0.8.0}"
REGISTRY_VERSION="${REGISTRY_VERSION:-3.1.2}"
# Prometheus publishes its Go module as v0.3MM.P for release 3.MM.P.
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-3.16.0}"
# syft writes the SBOM of each released image; only `make release` needs it, so it is built
# on demand (`hack/toolchain.sh syft`), not by `make setup`.
SYFT_VERSION="${SYFT_VERSION:-1.57.2}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${BLACKLIST_TOOLCHAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blacklist-operator/toolchain}"
LINKS="$ROOT/.local/bin"

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

log() { printf '[toolchain %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'toolchain: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "go is missing: install Go >= 1.26 (https://go.dev/doc/install) and put it on PATH"
GO_MINOR="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
[ "$GO_MINOR" -ge 26 ] || die "Go $(go env GOVERSION) is too old: Kubernetes $K8S_VERSION needs Go >= 1.26"

# build_component NAME VERSION FUNCTION BINARY...: runs FUNCTION in a scratch
# dir whose bin/ becomes $CACHE/NAME-vVERSION/bin once FUNCTION succeeds. An
# entry that lacks one of the BINARYs (an older layout) is built again.
build_component() {
  local name="$1" version="$2" builder="$3"
  shift 3
  local target="$CACHE/$name-v$version" binary complete=1
  [ -f "$target/.complete" ] || complete=0
  for binary in "$@"; do
    [ -x "$target/bin/$binary" ] || complete=0
  done
  if [ "$complete" = 1 ]; then
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
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
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

build_containerd() {
  local version="$1" module=github.com/containerd/containerd/v2
  go mod init local/containerd-build >/dev/null 2>&1
  go get "$module@v$version"
  local ldflags="-s -w -X $module/version.Version=v$version -X $module/version.Revision=module"
  mkdir -p bin
  # The storage drivers that need cgo or kernel features this node never uses
  # are left out, as upstream's static builds do.
  go build -trimpath -tags no_btrfs,no_devmapper,no_zfs,no_aufs -ldflags "$ldflags" -o bin/ \
    "$module/cmd/containerd" "$module/cmd/containerd-shim-runc-v2" "$module/cmd/ctr"
}

build_crictl() {
  local version="$1"
  GOBIN="$PWD/bin" go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=v$version" \
    "sigs.k8s.io/cri-tools/cmd/crictl@v$version"
}

build_coredns() {
  local version="$1"
  GOBIN="$PWD/bin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@v$version"
}

# promtool checks and unit-tests the chart's alerting rules (tests/alerts/).
build_promtool() {
  local version="$1" major minor patch
  IFS=. read -r major minor patch <<<"$version"
  local module_version="v0.$((major * 100 + minor)).$patch" ldflags="-s -w"
  ldflags="$ldflags -X github.com/prometheus/common/version.Version=$version"
  ldflags="$ldflags -X github.com/prometheus/common/version.Revision=module"
  GOBIN="$PWD/bin" go install -trimpath -tags netgo -ldflags "$ldflags" \
    "github.com/prometheus/prometheus/cmd/promtool@$module_version"
}

# The NetworkPolicy engine sends the first packet of each connection to or from
# a pod that a policy selects to user space through an NFQUEUE, and decides
# there. A copy of its module is patched before the build, in two ways:
# - v0.8.0 emits nftables' native queue expression, which kernels built without
#   CONFIG_NFT_QUEUE (this node's among them) reject with "no such file or
#   directory", leaving every policy unenforced; it emits the xt NFQUEUE target
#   through nft_compat instead, with the same queue number and bypass flag.
# - as upstream's later releases do, it takes --kubeconfig (it only knew the
#   in-cluster configuration) and cleans its nftables table up on SIGTERM too.
build_network_policies() {
  local version="$1" module=sigs.k8s.io/kube-network-policies
  go mod init local/network-policies-build >/dev/null 2>&1
  go get "$module/cmd@v$version"
  local moddir
  moddir="$(go list -m -f '{{.Dir}}' "$module")"
  cp -R "$moddir" src
  chmod -R u+w src
  python3 - src <<'PY'
import re, sys
root = sys.argv[1]

def patch(path, replacements):
    with open(path) as file:
        source = file.read()
    for old, new, count in replacements:
        source, done = re.subn(old, new, source)
        if done != count:
            sys.exit(f"{path}: {old!r} matched {done} times, not {count}: unknown source layout")
    with open(path, "w") as file:
        file.write(source)

patch(f"{root}/pkg/networkpolicy/controller.go", [(
    r"queue := &expr\.Queue\{Num: uint16\(c\.config\.QueueID\)\}\n"
    r"\s*if c\.config\.FailOpen \{\n\s*queue\.Flag = expr\.QueueFlagBypass\n\s*\}",
    "queue := xtQueue(uint16(c.config.QueueID), c.config.FailOpen)", 2,
)])
patch(f"{root}/cmd/main.go", [
    (r'\t"k8s.io/client-go/rest"\n',
     '\t"k8s.io/client-go/rest"\n\t"k8s.io/client-go/tools/clientcmd"\n', 1),
    (r"\tconfig, err := rest\.InClusterConfig\(\)\n",
     "\tvar config *rest.Config\n\tif kubeconfig != \"\" {\n"
     "\t\tconfig, err = clientcmd.BuildConfigFromFlags(\"\", kubeconfig)\n"
     "\t} else {\n\t\tconfig, err = rest.InClusterConfig()\n\t}\n", 1),
    (r"os\.Interrupt, unix\.SIGINT\)", "os.Interrupt, unix.SIGINT, unix.SIGTERM)", 1),
])
PY
  cat > src/pkg/networkpolicy/xtqueue.go <<'GO'
package networkpolicy

import (
	"encoding/binary"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// xtQueue is the xt NFQUEUE target (revision 3) run through nft_compat, in place
// of nftables' native queue expression that some kernels lack.
func xtQueue(num uint16, bypass bool) *expr.Target {
	// struct xt_NFQ_info_v3 { __u16 queuenum, queues_total, flags; }, XT_ALIGNed.
	info := make([]byte, 8)
	binary.NativeEndian.PutUint16(info[0:], num)
	binary.NativeEndian.PutUint16(info[2:], 1)
	if bypass {
		binary.NativeEndian.PutUint16(info[4:], 1) // NFQ_FLAG_BYPASS
	}
	payload := xt.Unknown(info)
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &payload}
}
GO
  cat > src/cmd/kubeconfig.go <<'GO'
package main

import "flag"

var kubeconfig string

func init() {
	flag.StringVar(&kubeconfig, "kubeconfig", "", "absolute path to the kubeconfig file (the in-cluster configuration when empty)")
}
GO
  go mod edit -replace="$module=./src"
  mkdir -p bin
  go build -trimpath -ldflags "-s -w" -o bin/kube-network-policies "$module/cmd"
}

# The CNCF distribution registry, the OCI registry of the local test bed (make images pushes
# to it, the node pulls from it).
build_registry() {
  local version="$1"
  GOBIN="$PWD/bin" go install -trimpath -ldflags "-s -w" \
    "github.com/distribution/distribution/v3/cmd/registry@v$version"
}

# The SBOM generator, with the version stamps of upstream's release builds.
build_syft() {
  local version="$1" ldflags="-s -w"
  ldflags="$ldflags -X main.version=$version -X main.gitCommit=module -X main.buildDate=1970-01-01T00:00:00Z"
  GOBIN="$PWD/bin" go install -trimpath -ldflags "$ldflags" "github.com/anchore/syft/cmd/syft@v$version"
}

mkdir -p "$LINKS"
link() { ln -sfn "$1" "$LINKS/$(basename "$1")"; }

# `hack/toolchain.sh syft`: the release's SBOM tool alone (about 3 minutes cold on 2 cores).
if [ "${1:-}" = syft ]; then
  build_component syft "$SYFT_VERSION" build_syft syft
  link "$CACHE/syft-v$SYFT_VERSION/bin/syft"
  exit 0
fi

build_component kubernetes "$K8S_VERSION" build_kubernetes \
  kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy
build_component etcd "$ETCD_VERSION" build_etcd etcd
build_component kwok "$KWOK_VERSION" build_kwok kwok
build_component helm "$HELM_VERSION" build_helm helm
build_component containerd "$CONTAINERD_VERSION" build_containerd containerd containerd-shim-runc-v2 ctr
build_component crictl "$CRICTL_VERSION" build_crictl crictl
build_component coredns "$COREDNS_VERSION" build_coredns coredns
build_component network-policies "$NETWORK_POLICIES_VERSION" build_network_policies kube-network-policies
build_component registry "$REGISTRY_VERSION" build_registry registry
build_component promtool "$PROMETHEUS_VERSION" build_promtool promtool

for binary in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
  link "$CACHE/kubernetes-v$K8S_VERSION/bin/$binary"
done
for binary in containerd containerd-shim-runc-v2 ctr; do
  link "$CACHE/containerd-v$CONTAINERD_VERSION/bin/$binary"
done
link "$CACHE/crictl-v$CRICTL_VERSION/bin/crictl"
link "$CACHE/coredns-v$COREDNS_VERSION/bin/coredns"
link "$CACHE/network-policies-v$NETWORK_POLICIES_VERSION/bin/kube-network-policies"
link "$CACHE/etcd-v$ETCD_VERSION/bin/etcd"
link "$CACHE/kwok-v$KWOK_VERSION/bin/kwok"
ln -sfn "$CACHE/kwok-v$KWOK_VERSION/bin/stages" "$ROOT/.local/kwok-stages"
link "$CACHE/helm-v$HELM_VERSION/bin/helm"
link "$CACHE/registry-v$REGISTRY_VERSION/bin/registry"
link "$CACHE/promtool-v$PROMETHEUS_VERSION/bin/promtool"
log "toolchain ready in $LINKS (kubernetes v$K8S_VERSION, etcd v$ETCD_VERSION, kwok v$KWOK_VERSION, helm v$HELM_VERSION, containerd v$CONTAINERD_VERSION, crictl v$CRICTL_VERSION, coredns v$COREDNS_VERSION, kube-network-policies v$NETWORK_POLICIES_VERSION, registry v$REGISTRY_VERSION, promtool v$PROMETHEUS_VERSION)"
