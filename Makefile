# kvstore-operator: make help lists the targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
GO ?= go
BIN := $(CURDIR)/bin
DIST := $(CURDIR)/dist
KVNODE_IMAGE ?= kvstore.dev/kvnode:dev
OPERATOR_IMAGE ?= kvstore.dev/operator:dev
CONTROLLER_GEN := $(BIN)/controller-gen
# golangci-lint, pinned in hack/tools/lint/go.mod and built from the Go module proxy.
GOLANGCI_LINT := $(BIN)/golangci-lint
# etcd and kube-apiserver for the controller tests, built from the Go module
# proxy into a cache keyed on the Kubernetes version (hack/k8s-binaries.sh).
ENVTEST_ASSETS = $$(hack/k8s-binaries.sh etcd kube-apiserver | tail -1)
# SeaweedFS's S3 server for the backup tests, built the same way (hack/tool.sh).
WEED = $$(hack/tool.sh weed | tail -1)/weed
# promtool for the alerting rules (config/monitoring) and helm for the
# chart (charts/), built the same way (hack/tool.sh).
PROMTOOL = $$(hack/tool.sh promtool | tail -1)/promtool
HELM = $$(hack/tool.sh helm | tail -1)/helm
# kubectl renders config/default (kubectl kustomize) for the chart's
# equivalence test.
KUBECTL = $$(hack/k8s-binaries.sh kubectl | tail -1)/kubectl
# Modules besides the main one: each keeps its own dependencies out of the product.
SUBMODULES := hack/image hack/bench
# Modules that only pin the tools hack/ builds (Kubernetes, containerd,
# CoreDNS, controller-gen): no packages of their own, so only kept tidy.
TOOL_MODULES := $(wildcard hack/tools/*)

.DEFAULT_GOAL := help

##@ General
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z0-9_-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development
build: ## Build bin/kvnode, bin/kvctl and bin/manager (static).
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/kvnode ./cmd/kvnode
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/kvctl ./cmd/kvctl
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/manager ./cmd/manager

run: build ## Start a single kvnode on localhost:8080 with its data in ./data (Ctrl-C stops it).
	@echo "kvnode on http://localhost:8080 - try: curl -X PUT -d 'Hello, key-value store!' http://localhost:8080/v1/key-a"
	$(BIN)/kvnode --listen localhost:8080 --data-dir $(CURDIR)/data --node-id local-0

test: ## Run all tests: unit, real processes, real clusters under faults, controllers on a real API server.
	$(GO) vet ./...
	KV_WEED="$(WEED)" KV_HELM="$(HELM)" KV_KUBECTL="$(KUBECTL)" KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" $(GO) test -count=1 -timeout 20m ./...
	KV_WEED="$(WEED)" $(GO) test -count=1 -race ./kvnode/...
	for m in $(SUBMODULES); do (cd $$m && $(GO) vet ./... && $(GO) test -count=1 ./...); done
	$(MAKE) test-monitoring lint-chart

test-monitoring: ## Check the alerting rules (config/monitoring) and run their unit tests with promtool.
	promtool="$(PROMTOOL)"; $$promtool check rules config/monitoring/rules.yaml && $$promtool test rules config/monitoring/tests/*.yaml

lint-chart: ## Lint the Helm chart (charts/kvstore-operator), cluster-wide and namespace-scoped.
	helm="$(HELM)"; for v in "" "--set watchNamespace=apps"; do $$helm lint --strict charts/kvstore-operator $$v; done

test-chart: lint-chart ## Render the Helm chart and compare it with config/default (also part of make test).
	KV_HELM="$(HELM)" KV_KUBECTL="$(KUBECTL)" $(GO) test -count=1 ./test/chart

soak: ## The linearizability test under faults for SOAK (default 10m).
	KV_LIN_SEEDS=1 KV_LIN_DURATION=$${SOAK:-10m} $(GO) test -count=1 -v -timeout 2h -run TestLinearizableUnderFaults ./test/cluster

cluster-local: build ## Start a 3-member kvnode cluster on loopback (HTTPS, mutual-TLS peers) and print how to use it.
	$(GO) run ./hack/cluster-local -n $${N:-3} -kvnode $(BIN)/kvnode

fuzz: ## Fuzz the decoders for FUZZTIME each (default 30s).
	$(GO) test -run '^$$' -fuzz FuzzDecodeRecord -fuzztime $${FUZZTIME:-30s} ./kvnode/txlog
	$(GO) test -run '^$$' -fuzz FuzzUnmarshalEvent -fuzztime $${FUZZTIME:-30s} ./kvnode/core
	$(GO) test -run '^$$' -fuzz FuzzTornTail -fuzztime $${FUZZTIME:-30s} ./kvnode/txlog
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime $${FUZZTIME:-30s} ./kvnode/backup

bench: build ## Benchmarks: the log store against raft-wal and raft-boltdb, HTTP against a bare net/http ceiling, writes as the data grows to SCALE_MB (2000; BASELINE=another kvnode binary compares in the same run), the operator's cache against unrelated Secrets.
	cd hack/bench && $(GO) run ./logstore -dir $${BENCH_DIR:-/var/tmp} -entries 4000 -rounds 3
	$(GO) run ./hack/httpbench -kvnode $(BIN)/kvnode -clients 32 -value 128 -duration 5s
	cd hack/bench && $(GO) run ./cluster -kvnode $(BIN)/kvnode -etcd "$$($(CURDIR)/hack/k8s-binaries.sh etcd | tail -1)/etcd" -clients 32 -value 128 -duration 5s
	$(GO) run ./hack/scalebench -kvnode $(BIN)/kvnode $${BASELINE:+-baseline "$$BASELINE"} -dir $${BENCH_DIR:-/var/tmp} -clients 16 -value 1024 -to $${SCALE_MB:-2000}
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" $(GO) run ./hack/cachebench

##@ Code generation
$(CONTROLLER_GEN):
	cd hack/tools/codegen && $(GO) build -o $(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen

PROTOC_GEN_GO := $(BIN)/protoc-gen-go
PROTOC_GEN_GO_GRPC := $(BIN)/protoc-gen-go-grpc
$(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC):
	cd hack/tools/codegen && $(GO) build -o $(BIN)/$(notdir $@) $$($(GO) list -f '{{.ImportPath}}' tool | grep '/$(notdir $@)$$')

generate: $(CONTROLLER_GEN) $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC) ## Generate the API's DeepCopy methods and the gRPC API's Go code (protoc from Debian: hack/deps.sh verify).
	$(CONTROLLER_GEN) object paths=./api/...
	hack/deps.sh verify
	protoc --plugin=protoc-gen-go=$(PROTOC_GEN_GO) --plugin=protoc-gen-go-grpc=$(PROTOC_GEN_GO_GRPC) \
	  --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative \
	  kvnode/grpcapi/pb/keyvalue.proto

manifests: $(CONTROLLER_GEN) ## Generate the CRD (config/crd) and the RBAC role (config/rbac) from markers, and copy them into the Helm chart; wrap the alerting rules into a PrometheusRule.
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=manager-role paths=./controllers/... output:rbac:artifacts:config=config/rbac
	hack/chart-sync.sh
	hack/prometheusrule.sh

$(GOLANGCI_LINT): hack/tools/lint/go.mod
	cd hack/tools/lint && $(GO) build -o $(GOLANGCI_LINT) github.com/golangci/golangci-lint/v2/cmd/golangci-lint

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint (.golangci.yml) over the main module and the submodules.
	$(GOLANGCI_LINT) run ./...
	for m in $(SUBMODULES); do (cd $$m && $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yml ./...); done

envtest-assets: ## Build etcd and kube-apiserver for the controller tests (5–15 minutes on 2 cores (cold); cached after).
	hack/k8s-binaries.sh etcd kube-apiserver

verify: generate manifests ## Check formatting, vet, tidy modules, shell scripts, one Kubernetes version, no tracked build outputs, and that generated code is committed.
	hack/verify-tree.sh
	hack/verify-versions.sh
	hack/deps.sh verify
	hack/shellcheck.sh
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(MAKE) lint
	$(GO) mod tidy -diff
	for m in $(SUBMODULES) $(TOOL_MODULES); do (cd $$m && $(GO) mod tidy -diff); done
	git diff --exit-code

##@ Local cluster (a real single-node Kubernetes in the network namespace kvtest)
CLUSTER_DIR ?= /var/tmp/kvstore-cluster
# The directory hack/k8s-binaries.sh builds into (hack/versions.sh names the version).
K8S_BIN = $$(source $(CURDIR)/hack/versions.sh && echo $$BINDIR)

cluster-up: ## Start the local cluster (installs missing Debian packages; builds the Kubernetes binaries the first time: 15–35 minutes on 2 cores (cold)).
	KV_CLUSTER_DIR=$(CLUSTER_DIR) hack/cluster/up.sh

test-cluster-guards: ## Prove the cluster scripts refuse a wrong network namespace and that teardown leaves nothing behind (root; leaves the host unchanged).
	hack/cluster/test-guards.sh

demo: cluster-up deploy ## The whole product locally: a cluster, the operator, the sample KeyValueStore and a client pod (root).
	KV_CLUSTER_DIR=$(CLUSTER_DIR) hack/kubectl apply -f config/samples/
	KV_CLUSTER_DIR=$(CLUSTER_DIR) hack/kubectl wait --for=condition=Ready kvs/demo --timeout=180s
	KV_CLUSTER_DIR=$(CLUSTER_DIR) hack/kubectl wait --for=condition=Ready pod/demo-client --timeout=120s
	KV_CLUSTER_DIR=$(CLUSTER_DIR) hack/kubectl get kvstores
	@echo
	@echo "The client pod demo-client writes and reads with its certificate (Secret demo-client-app):"
	KV_CLUSTER_DIR=$(CLUSTER_DIR) hack/kubectl exec demo-client -- /kvctl put greeting 'Hello, key-value store!'
	KV_CLUSTER_DIR=$(CLUSTER_DIR) hack/kubectl exec demo-client -- /kvctl get greeting
	@echo
	@echo
	@echo "The store answers on https://demo.default.svc:8080 inside the cluster. Try:"
	@echo "  hack/kubectl get kvs,pods"
	@echo "  hack/kubectl get kvs -w      # watch (Ctrl-C stops watching)"
	@echo "  hack/kubectl exec demo-client -- /kvctl list"
	@echo "  hack/kv-curl -X PUT -d 'Hello, key-value store!' https://demo.default.svc:8080/v1/key-a"
	@echo "  hack/kv-curl https://demo.default.svc:8080/v1/key-a"
	@echo "  make cluster-down      # stop everything; the host is checked to be as before"

cluster-down: ## Stop the local cluster and check that the host is as before.
	KV_CLUSTER_DIR=$(CLUSTER_DIR) hack/cluster/down.sh

cluster-status: ## Show the node, the pods and the KeyValueStores.
	KV_CLUSTER_DIR=$(CLUSTER_DIR) hack/kubectl get nodes,pods,kvs -A -o wide

cluster-load-images: image ## Import the kvnode and operator images into the cluster's containerd.
	for i in kvnode operator; do $(K8S_BIN)/ctr --address $(CLUSTER_DIR)/containerd/containerd.sock -n k8s.io images import $(DIST)/$$i.tar; done
	# The same kvnode under a second tag: what the upgrade test rolls out.
	$(K8S_BIN)/ctr --address $(CLUSTER_DIR)/containerd/containerd.sock -n k8s.io images tag --force $(KVNODE_IMAGE) $(KVNODE_IMAGE)-next

# The image tag stays :dev, so a Deployment that already existed must be
# restarted to run the image just imported; a new one starts with it anyway.
deploy: cluster-load-images ## Install the CRD, RBAC and the operator (config/default) into the local cluster.
	export KV_CLUSTER_DIR=$(CLUSTER_DIR); \
	existed=$$(hack/kubectl -n kvstore-system get deployment/kvstore-controller-manager -o name --ignore-not-found); \
	hack/kubectl apply -k config/default; \
	if [ -n "$$existed" ]; then hack/kubectl -n kvstore-system rollout restart deployment/kvstore-controller-manager; fi; \
	hack/kubectl -n kvstore-system rollout status deployment/kvstore-controller-manager --timeout=120s

# The tests run inside the namespace, built on the host; GOPROXY=off as in
# hack/cluster/lib.sh (in_ns): nothing in there can download.
test-e2e: deploy ## End-to-end tests on the local cluster (make cluster-up first).
	$(GO) test -c -tags e2e -o $(BIN)/e2e.test ./test/e2e
	weed="$(WEED)"; cd test/e2e && nsenter --net=/run/netns/kvtest -- env GOPROXY=off GOFLAGS=-mod=mod KV_WEED="$$weed" KUBECTL=$(K8S_BIN)/kubectl KUBECONFIG=$(CLUSTER_DIR)/admin.kubeconfig KV_CLUSTER_LOGS=$(CLUSTER_DIR)/logs $(BIN)/e2e.test -test.v -test.count=1 -test.timeout 45m

##@ Images
image: build ## Pack bin/kvnode with bin/kvctl, and bin/manager, into dist/*.tar without Docker (the Dockerfile's images).
	hack/build-helpers.sh image-packer
	$(BIN)/image-packer -binary $(BIN)/kvnode,$(BIN)/kvctl -tag $(KVNODE_IMAGE) -out $(DIST)/kvnode.tar
	$(BIN)/image-packer -binary $(BIN)/manager -tag $(OPERATOR_IMAGE) -out $(DIST)/operator.tar -dirs /tmp -env "" -ports 8443/tcp,8081/tcp

docker-build: ## Build the images with Docker, for users who have it.
	docker build --target kvnode -t $(KVNODE_IMAGE) .
	docker build --target manager -t $(OPERATOR_IMAGE) .

.PHONY: test-monitoring lint-chart test-chart demo test-cluster-guards cluster-up cluster-down cluster-status cluster-load-images deploy test-e2e help build run test soak cluster-local fuzz bench generate manifests envtest-assets verify image docker-build
