# kvstore-operator: make help lists the targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
GO ?= go
BIN := $(CURDIR)/bin
DIST := $(CURDIR)/dist
KVNODE_IMAGE ?= kvstore.dev/kvnode:dev
OPERATOR_IMAGE ?= kvstore.dev/operator:dev
CONTROLLER_GEN := $(BIN)/controller-gen
# etcd and kube-apiserver for the controller tests, built from the Go module
# proxy into a cache keyed on the Kubernetes version (hack/k8s-binaries.sh).
ENVTEST_ASSETS = $$(hack/k8s-binaries.sh etcd kube-apiserver | tail -1)
# Modules besides the main one: each keeps its own dependencies out of the product.
SUBMODULES := hack/image hack/bench

.DEFAULT_GOAL := help

##@ General
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z0-9_-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development
build: ## Build bin/kvnode and bin/manager (static).
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/kvnode ./cmd/kvnode
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/manager ./cmd/manager

run: build ## Start a single kvnode on localhost:8080 with its data in ./data (Ctrl-C stops it).
	@echo "kvnode on http://localhost:8080 - try: curl -X PUT -d 'Hello, key-value store!' http://localhost:8080/v1/key-a"
	$(BIN)/kvnode --listen localhost:8080 --peer-listen 127.0.0.1:8081 --data-dir $(CURDIR)/data --node-id local-0 --bootstrap

test: ## Run all tests: unit, real processes, real clusters under faults, controllers on a real API server.
	$(GO) vet ./...
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" $(GO) test -count=1 -timeout 20m ./...
	$(GO) test -count=1 -race ./kvnode/...
	for m in $(SUBMODULES); do (cd $$m && $(GO) vet ./... && $(GO) test -count=1 ./...); done

soak: ## The linearizability test under faults for SOAK (default 10m).
	KV_LIN_DURATION=$${SOAK:-10m} $(GO) test -count=1 -v -timeout 2h -run TestLinearizableUnderFaults ./test/cluster

cluster-local: build ## Start a 3-member kvnode cluster on loopback (HTTPS, mutual-TLS peers) and print how to use it.
	$(GO) run ./hack/cluster-local -n $${N:-3} -kvnode $(BIN)/kvnode

fuzz: ## Fuzz the decoders for FUZZTIME each (default 30s).
	$(GO) test -run '^$$' -fuzz FuzzDecodeRecord -fuzztime $${FUZZTIME:-30s} ./kvnode/txlog
	$(GO) test -run '^$$' -fuzz FuzzUnmarshalEvent -fuzztime $${FUZZTIME:-30s} ./kvnode/core

bench: build ## Benchmarks: the log store against raft-wal and raft-boltdb, HTTP against a bare net/http ceiling.
	cd hack/bench && $(GO) run ./logstore -dir $${BENCH_DIR:-/var/tmp} -entries 4000 -rounds 3
	$(GO) run ./hack/httpbench -kvnode $(BIN)/kvnode -clients 32 -value 128 -duration 5s
	$(GO) run ./hack/clusterbench -kvnode $(BIN)/kvnode -etcd "$$(hack/k8s-binaries.sh etcd | tail -1)/etcd" -clients 32 -value 128 -duration 5s

##@ Code generation
$(CONTROLLER_GEN):
	cd hack/tools/codegen && $(GO) build -o $(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen

generate: $(CONTROLLER_GEN) ## Generate the API's DeepCopy methods.
	$(CONTROLLER_GEN) object paths=./api/...

manifests: $(CONTROLLER_GEN) ## Generate the CRD (config/crd) and the RBAC role (config/rbac) from markers.
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=manager-role paths=./controllers/... output:rbac:artifacts:config=config/rbac

envtest-assets: ## Build etcd and kube-apiserver for the controller tests (cold: minutes; cached after).
	hack/k8s-binaries.sh etcd kube-apiserver

verify: generate manifests ## Check formatting, vet, tidy modules and that generated code is committed.
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(GO) mod tidy -diff
	for m in $(SUBMODULES); do (cd $$m && $(GO) mod tidy -diff); done
	git diff --exit-code

##@ Images
image: build ## Pack bin/kvnode and bin/manager into dist/*.tar without Docker (the Dockerfile's images).
	cd hack/image && $(GO) run . -binary $(BIN)/kvnode -tag $(KVNODE_IMAGE) -out $(DIST)/kvnode.tar
	cd hack/image && $(GO) run . -binary $(BIN)/manager -tag $(OPERATOR_IMAGE) -out $(DIST)/operator.tar -dirs /tmp -env "" -ports 8080/tcp,8081/tcp

docker-build: ## Build the images with Docker, for users who have it.
	docker build --target kvnode -t $(KVNODE_IMAGE) .
	docker build --target manager -t $(OPERATOR_IMAGE) .

.PHONY: help build run test soak cluster-local fuzz bench generate manifests envtest-assets verify image docker-build
