# kvstore-operator: make help lists the targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
GO ?= go
BIN := $(CURDIR)/bin
DIST := $(CURDIR)/dist
KVNODE_IMAGE ?= kvstore.dev/kvnode:dev
# Modules besides the main one: each keeps its own dependencies out of the product.
SUBMODULES := hack/image hack/bench

.DEFAULT_GOAL := help

##@ General
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z0-9_-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development
build: ## Build bin/kvnode (static).
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/kvnode ./cmd/kvnode

run: build ## Start a single kvnode on localhost:8080 with its data in ./data (Ctrl-C stops it).
	@echo "kvnode on http://localhost:8080 - try: curl -X PUT -d 'Hello, key-value store!' http://localhost:8080/v1/key-a"
	$(BIN)/kvnode --listen localhost:8080 --peer-listen 127.0.0.1:8081 --data-dir $(CURDIR)/data --node-id local-0 --bootstrap

test: ## Run all tests (unit, real processes, real clusters under faults) in every module.
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...
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

verify: ## Check formatting, vet, tidy modules and a clean generated tree.
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(GO) mod tidy -diff
	for m in $(SUBMODULES); do (cd $$m && $(GO) mod tidy -diff); done
	git diff --exit-code

##@ Images
image: build ## Pack bin/kvnode into dist/kvnode.tar without Docker (same image as the Dockerfile).
	cd hack/image && $(GO) run . -binary $(BIN)/kvnode -tag $(KVNODE_IMAGE) -out $(DIST)/kvnode.tar

docker-build: ## Build the kvnode image with Docker, for users who have it.
	docker build --target kvnode -t $(KVNODE_IMAGE) .

.PHONY: help build run test soak cluster-local fuzz bench verify image docker-build
