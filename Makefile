# Tandem: Kubernetes operator (CollabCluster) and tandem-runtime, the
# collaborative editing server. `make help` lists the targets.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Builds must use the Go on the machine; never download another toolchain.
export GOTOOLCHAIN := local

TOOLS := hack/tools.sh
IMG ?= tandem:dev
CONTAINER_TOOL ?= docker
# Extra flags for `go test` in `make test`, e.g. GO_TEST_FLAGS='-run Foo -v'.
GO_TEST_FLAGS ?=
GO_TEST_TIMEOUT ?= 30m
# envtest gives kube-apiserver 20s to start by default, too little on a busy
# two-core CI machine.
export KUBEBUILDER_CONTROLPLANE_START_TIMEOUT ?= 2m
export KUBEBUILDER_CONTROLPLANE_STOP_TIMEOUT ?= 1m

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
		/^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: tools
tools: ## Build every pinned tool (kube-apiserver, etcd, kubectl, helm, kwok, controller-gen, ...) into the tools cache.
	$(TOOLS) install

.PHONY: generate
generate: ## Generate DeepCopy methods for the API types (controller-gen).
	"$$($(TOOLS) bin controller-gen)" object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: ## Generate the CRD and RBAC manifests into config/ (controller-gen).
	"$$($(TOOLS) bin controller-gen)" rbac:roleName=manager-role crd paths=./... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	hack/sync-chart.sh

.PHONY: check-generated
check-generated: generate manifests ## Fail if generate/manifests change any tracked or add any untracked file.
	@changes="$$(git status --porcelain -- api config charts)"; \
	if [ -n "$$changes" ]; then \
		echo "generated files are out of date; run 'make generate manifests' and commit:"; \
		echo "$$changes"; git --no-pager diff --stat -- api config; exit 1; \
	fi

.PHONY: web-deps
web-deps: runtime/web/node_modules/.package-lock.json ## Install the editor's npm packages (npm ci, versions from runtime/web/package-lock.json).

runtime/web/node_modules/.package-lock.json: runtime/web/package.json runtime/web/package-lock.json runtime/web/client/package.json
	cd runtime/web && npm ci --no-audit --no-fund
	@touch $@

.PHONY: web
web: web-deps ## Build the editor page's script runtime/web/static/js/editor.js (esbuild: src/ + client/ + CodeMirror); commit the result.
	cd runtime/web && node build.mjs

.PHONY: check-web
check-web: web ## Fail if the committed editor bundle differs from a fresh build of its sources.
	@changes="$$(git status --porcelain -- runtime/web/static)"; \
	if [ -n "$$changes" ]; then \
		echo "runtime/web/static is out of date with its sources; run 'make web' and commit:"; \
		echo "$$changes"; git --no-pager diff --stat -- runtime/web/static; exit 1; \
	fi

.PHONY: fmt
fmt: ## Format the Go code (gofmt -w).
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: vet ## Check formatting (gofmt -l) and run go vet.
	@unformatted="$$(gofmt -l $$(git ls-files '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "not gofmt-formatted (run make fmt):"; echo "$$unformatted"; exit 1; fi

.PHONY: test
test: web-deps ## Unit, envtest and integration tests with -race (builds the envtest binaries, helm, promtool and prometheus first), plus the JS tests.
	$(TOOLS) install kube-apiserver etcd kubectl helm promtool prometheus
	KUBEBUILDER_ASSETS="$$($(TOOLS) envtest-assets)" go test -race -timeout $(GO_TEST_TIMEOUT) $(GO_TEST_FLAGS) ./...
	@js_tests="$$(find runtime/web -path runtime/web/node_modules -prune -o -name '*.test.mjs' -print 2>/dev/null | sort)"; \
	if [ -n "$$js_tests" ]; then \
		echo "node --test $$js_tests"; node --test $$js_tests; \
	fi

.PHONY: test-e2e
test-e2e: ## End-to-end tests (kwok cluster, helm install, real runtime pods); builds the tools they need.
	$(TOOLS) install
	go test -tags e2e -timeout 40m ./test/e2e/...

.PHONY: test-e2e-real
test-e2e-real: ## End-to-end tests on a real single-node Kubernetes (containerd, the image built from the Dockerfile); root, ~20 min cold, a few warm.
	$(TOOLS) install kubectl helm
	hack/real-cluster/test.sh

.PHONY: real-cluster-up
real-cluster-up: ## Start the real single-node cluster and leave it running (root); prints its KUBECONFIG.
	hack/real-cluster/up.sh

.PHONY: real-cluster-down
real-cluster-down: ## Stop the real cluster and restore the host.
	hack/real-cluster/down.sh

.PHONY: bench
bench: ## Load scenarios S1-S5 on throwaway Redis, PostgreSQL and runtimes, Go micro-benchmarks, benchstat, the operator at scale on kwok; writes docs/benchmarks.md.
	hack/bench.sh

.PHONY: bench-operator
bench-operator: ## Operator at scale on kwok: N managed CollabClusters at once (BENCH_OPERATOR_N, default 100; "100 500" for both); prints the report section.
	@out="$$(mktemp)"; hack/bench-operator.sh "$$out"; cat "$$out"; rm -f "$$out"

##@ Build

.PHONY: build
build: ## Build bin/manager and bin/tandem-runtime (static, CGO_ENABLED=0; same commands as the Dockerfile).
	CGO_ENABLED=0 go build -trimpath -o bin/manager ./cmd/manager
	CGO_ENABLED=0 go build -trimpath -o bin/tandem-runtime ./cmd/tandem-runtime

.PHONY: run
run: ## Run the operator against the cluster of the current kubeconfig.
	go run ./cmd/manager

.PHONY: run-runtime
run-runtime: ## Run tandem-runtime on its embedded defaults (SQLite in ./data); open http://localhost:8080.
	go run ./cmd/tandem-runtime --auth=anonymous --data-dir ./data

.PHONY: docker-build
docker-build: ## Build the container image IMG (default tandem:dev): manager entrypoint, runtime at /tandem-runtime.
	$(CONTAINER_TOOL) build -t $(IMG) .

.PHONY: helm-lint
helm-lint: ## Lint the Helm chart (helm lint --strict).
	"$$($(TOOLS) bin helm)" lint --strict charts/tandem

##@ Demo

.PHONY: demo
demo: ## Local kwok control plane + Helm chart + operator (background, pid in bin/demo) + managed sample, waited Ready.
	hack/e2e/demo.sh up

.PHONY: demo-down
demo-down: ## Stop the operator started by `make demo` and delete its cluster.
	hack/e2e/demo.sh down
