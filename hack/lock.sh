#!/usr/bin/env bash
# `make lock`: resolve the extras of pyproject.toml into hashed lock files.
#
#   requirements.lock           every extra (service, operator, test, dev, docs): what `make setup` installs
#   requirements-service.lock   the extra `service`: what Dockerfile.service installs
#   requirements-operator.lock  the extra `operator`: what Dockerfile.operator installs
#
# Every pin carries the sha256 of each file PyPI serves for it, so pip refuses a file
# that changed (`--require-hashes`). The two image locks are resolved with the full
# lock's pins as constraints, so a package has one version everywhere. Pins already in
# a lock file are kept; `UPGRADE=1 make lock` moves everything to the newest versions.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.local/lock-venv
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip pip-tools

options=(--quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-find-links
         --no-emit-index-url --no-emit-trusted-host)
if [[ "${UPGRADE:-}" == 1 ]]; then options+=(--upgrade); fi

compile() {  # compile OUTPUT EXTRA... [-- pip-compile arguments]
    local output=$1; shift
    local arguments=()
    while (($#)) && [[ $1 != -- ]]; do arguments+=(--extra "$1"); shift; done
    if (($#)); then shift; arguments+=("$@"); fi
    "$venv/bin/pip-compile" "${options[@]}" "${arguments[@]}" --output-file "$output" pyproject.toml
}

export CUSTOM_COMPILE_COMMAND="make lock"
compile requirements.lock service operator test dev docs
pins=$venv/pins.txt  # a fixed path: the locks' "via" comments name it
grep -E '^[A-Za-z0-9_.-]+==' requirements.lock | sed 's/ .*//' > "$pins"
compile requirements-service.lock service -- --constraint "$pins"
compile requirements-operator.lock operator -- --constraint "$pins"
rm -rf "$venv"
