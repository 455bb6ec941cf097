#!/usr/bin/env bash
# Installs the Debian packages the project needs, as root with apt-get, only
# when one is missing (so a second run costs a dpkg query). They are: the
# PostgreSQL server the service tests run, openssl for the cluster's keys, wrk
# for the benchmarks, the image builders (buildah, mmdebstrap; gcc and
# libc6-dev for the static pause program), and what the node runs on (runc,
# the CNI plugins, iptables, conntrack, ipset, iproute2, nftables).
#
# Debian's postgresql package starts a cluster of its own on 5432; the tests
# start their own servers, so that one is stopped.
set -euo pipefail

PACKAGES=(
  postgresql openssl wrk procps
  buildah podman mmdebstrap fuse-overlayfs uidmap gcc libc6-dev
  runc containernetworking-plugins iptables conntrack ipset iproute2 nftables
)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "packages: missing ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "packages: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if command -v pg_lsclusters >/dev/null; then
  pg_lsclusters -h 2>/dev/null | while read -r version name _; do
    pg_ctlcluster "$version" "$name" stop >/dev/null 2>&1 || true
  done
fi
