# Every target sets itself up: a fresh clone needs only python3, go and make.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
UV_VERSION  := 0.13.8
CACHE       ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/driftguard
UV          := $(CACHE)/uv-$(UV_VERSION)/bin/uv
VENV        := .venv
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.synced

# Two pytest workers, each with its own control plane and operator, a test module each at a
# time: e2e tests mostly wait on the API server, so two halve the time even on 2 cores.
PARALLEL    ?= -n 2 --dist loadfile

export UV_PROJECT_ENVIRONMENT := $(VENV)
export DRIFTGUARD_CACHE := $(CACHE)

.PHONY: help install controlplane tools browser image-build cluster demo demo-clusters test unit e2e lint crds bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(UV):
	@echo "bootstrapping uv $(UV_VERSION) into $(CACHE)"
	$(PYTHON) -m venv $(CACHE)/uv-$(UV_VERSION)
	$(CACHE)/uv-$(UV_VERSION)/bin/pip install --quiet uv==$(UV_VERSION)

# Bytecode is compiled here, as the image's build does: where PYTHONDONTWRITEBYTECODE is set
# nothing caches it otherwise, and every operator start and CLI call would compile its imports
# from source again (1-2 s each, most of a small restart's time to ready).
$(STAMP): $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

# The project's own modules are an editable install, outside what uv compiles; compileall skips
# what is up to date, so this costs a few milliseconds after the first time.
install: $(STAMP) ## create .venv from uv.lock
	@$(BIN)/python -m compileall -q operator

controlplane: ## build (or reuse) etcd, kube-apiserver, kube-controller-manager
	@hack/build-controlplane.sh

tools: ## build (or reuse) helm and promtool, for the chart and metrics tests
	@hack/build-tools.sh

browser: ## install (or find) Chromium and chromium-driver from the Debian archive, for the board's tests
	@hack/install-browser.sh

# The operator image, for tests/e2e/test_image*.py: warm from buildah's layer cache it takes
# seconds. A machine that cannot build images says so loudly; under CI=true that fails.
image-build: install ## build (or reuse) the operator image, its OCI archive and SBOM (root; buildah)
	@hack/build-image.sh --if-possible

cluster: install controlplane ## start a local control plane and print its KUBECONFIG
	$(BIN)/python -m driftguard.controlplane

demo: install controlplane ## the whole story on a local control plane: apply, drift, revert, flag
	$(BIN)/python -m driftguard.cli.demo

demo-clusters: install controlplane ## the database story across three local clusters: a hub and two remotes
	$(BIN)/python -m driftguard.cli.democlusters

lint: install ## ruff, mypy --strict, import contracts, the docs site built strictly
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	@# The docs site: a broken link or anchor fails (the theme's end-of-life banner is not ours to print).
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $(CACHE)/site

unit: install ## the fast tests: no server
	$(BIN)/pytest -q tests/unit

e2e: install controlplane tools browser image-build ## the end-to-end tests on the real control plane
	$(BIN)/pytest -q -rs $(PARALLEL) tests/e2e

test: install controlplane tools browser image-build lint ## every test, unit and end-to-end, the image's too
	$(BIN)/pytest -q -rs $(PARALLEL) --durations=15 tests

crds: install ## regenerate crds/ (CRDs and their admission policies) and the chart's copy from the pydantic models
	$(BIN)/python -m driftguard.core.crd environments > crds/environments.driftguard.io.yaml
	$(BIN)/python -m driftguard.core.crd blueprints > crds/blueprints.driftguard.io.yaml
	$(BIN)/python -m driftguard.core.crd driftexceptions > crds/driftexceptions.driftguard.io.yaml
	$(BIN)/python -m driftguard.core.crd validation > crds/validation.driftguard.io.yaml
	cp crds/*.driftguard.io.yaml charts/driftguard/crds/

bench: install controlplane tools browser ## the performance benchmark; each run recorded in bench/results/ (QUICK=1: small sizes)
	@hack/build-bench-tools.sh
	@# A missed target fails the run, after the other benchmarks have still been measured.
	@missed=0; $(BIN)/python bench/run.py $(if $(QUICK),--quick) || missed=$$?; \
	$(BIN)/python bench/attribution.py && $(BIN)/python bench/board.py \
	&& $(BIN)/python bench/clusters.py && exit $$missed

.PHONY: bench-scale
bench-scale: install controlplane tools ## 3 replicas sharing 50,000 objects; figures in bench/scale.json (QUICK=1: 3,000)
	$(BIN)/python bench/scale.py $(if $(QUICK),--quick)

.PHONY: image
image: install controlplane tools ## build the operator image daemonless (buildah, debootstrap; root) and test it
	hack/build-image.sh
	$(BIN)/pytest -q tests/e2e/test_image.py tests/e2e/test_image_sbom.py

.PHONY: node
node: install controlplane tools ## a real node (containerd + kubelet; root): the chart's operator as a Pod, its Deployments' Pods running
	hack/build-image.sh
	hack/build-node.sh
	DRIFTGUARD_NODE_TESTS=1 $(BIN)/pytest -q tests/e2e/test_node.py

.PHONY: dashboard-image
dashboard-image: install controlplane tools ## docs/dashboard.png: the Grafana dashboard drawn from a 3-minute local run
	$(BIN)/python hack/render-dashboard.py --save-data $(CACHE)/dashboard-data.json

.PHONY: board-images
board-images: install controlplane browser ## docs/board-*.png: the board's views at the end of the demo's story
	$(BIN)/python hack/board-screenshots.py

clean: ## remove the virtual environment (the control-plane cache stays)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
