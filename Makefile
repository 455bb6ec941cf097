# Entry points of blacklist-operator. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOCAL := .local
# The one source of the CRD: the chart renders it, `make crds` copies it to crds/.
CRD_SOURCE := chart/crd/blacklistservices.yaml
BIN := $(LOCAL)/bin
SITE := $(LOCAL)/site
# mkdocs-material prints a banner about its successor at every build; the build is what we want.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup packages venv toolchain images cluster-up cluster-down cluster-status demo demo-down \
        test test-unit test-process test-cluster lint values-table crd-reference docs docs-check crds bench lock release clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: packages venv toolchain ## Install everything the other targets need (idempotent)

packages: ## Install the Debian packages the project needs (as root, only those missing)
	bash hack/packages.sh

$(VENV)/.installed: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "python3 is missing: apt-get install -y python3 python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.lock
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed ## Create .venv/ with the pinned Python packages

toolchain: ## Build the control plane, the node, kubectl, helm, kwok and promtool from Go modules (cached outside the repo)
	bash hack/toolchain.sh

images: setup ## Build the product's images and push them to the test bed's registry (the node pulls them)
	bash hack/images.sh

cluster-up: setup images ## Start the local cluster: control plane and node (reuses a running one); writes .local/kubeconfig
	$(PY) -m blacklist_devtools.cluster up

cluster-down: ## Stop the local control plane and the registry, and remove their state
	@if [ -x $(PY) ]; then $(PY) -m blacklist_devtools.cluster down; $(PY) -m blacklist_devtools.registry down; fi

cluster-status: ## Show the local control plane's processes
	$(PY) -m blacklist_devtools.cluster status

demo: setup images ## Run the main job: cluster, operator, a BlacklistService with 2 replicas
	$(PY) -m blacklist_devtools.demo up

demo-down: ## Stop everything `make demo` started
	@if [ -x $(PY) ]; then $(PY) -m blacklist_devtools.demo down; fi

lint: venv ## ruff, mypy --strict, the import layering contract, the generated tables, the CRD copy, the docs
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m blacklist_devtools.values_table --check
	$(PY) -m blacklist_devtools.crd_reference --check
	@cmp -s $(CRD_SOURCE) crds/blacklistservices.yaml || { echo "crds/blacklistservices.yaml differs from $(CRD_SOURCE): run make crds"; exit 1; }
	$(MAKE) --no-print-directory docs-check

docs-check: venv ## Every relative link of the Markdown pages leads to a file (and heading) that exists; the site builds strictly
	$(PY) -m blacklist_devtools.doclinks
	$(MKDOCS) build --strict --quiet --site-dir $(SITE)

docs: venv ## Build the user guide in docs/ as a site into .local/site (strict: a broken link fails)
	$(MKDOCS) build --strict --site-dir $(SITE)
	@echo "The site is in $(SITE)/index.html"

crds: ## Copy the CRD from the chart (its one source) to crds/ for `kubectl apply -f crds/`
	cp $(CRD_SOURCE) crds/blacklistservices.yaml

values-table: venv ## Regenerate chart/README.md's values table from chart/values.yaml
	$(PY) -m blacklist_devtools.values_table

crd-reference: venv ## Regenerate docs/configuration.md's field reference from the CRD
	$(PY) -m blacklist_devtools.crd_reference

test: setup images ## Run the whole test suite, every tier (starts what it needs)
	$(MAKE) --no-print-directory lint
	$(VENV)/bin/pytest --tier all --durations=30

test-unit: venv ## The unit tier (what plain `pytest` runs): in-process, nothing built or started, seconds
	$(VENV)/bin/pytest --tier unit

test-process: venv ## The process tier: the service, PostgreSQL, SMTP, helm, promtool as real local processes
	$(VENV)/bin/pytest --tier process

test-cluster: $(if $(KUBECONFIG_PATH),venv,setup images) ## The cluster tier (KUBECONFIG_PATH=...: against that cluster, not the local test bed)
	$(VENV)/bin/pytest --tier cluster $(if $(KUBECONFIG_PATH),--kubeconfig "$(KUBECONFIG_PATH)")

bench: setup images ## Run the benchmarks and print their tables
	$(PY) bench/run.py

release: venv ## Publish VERSION=x.y.z: images and chart to REGISTRY (default the test bed's), SBOMs; TAG_GIT=1 tags vVERSION
	@[ -n "$(VERSION)" ] || { echo "usage: make release VERSION=x.y.z [REGISTRY=host:port] [SOURCE=url] [TAG_GIT=1]"; exit 2; }
	$(PY) -m blacklist_devtools.release --version "$(VERSION)" \
		$(if $(REGISTRY),--registry "$(REGISTRY)") $(if $(SOURCE),--source "$(SOURCE)") \
		$(if $(filter 1,$(TAG_GIT)),--tag-git) $(if $(filter 1,$(ALLOW_DIRTY)),--allow-dirty)

lock: ## Re-resolve the extras of pyproject.toml into the hashed lock files (UPGRADE=1: newest versions)
	bash hack/lock.sh

clean: demo-down cluster-down ## Stop everything and remove .venv/ and .local/
	rm -rf $(VENV) $(LOCAL)
